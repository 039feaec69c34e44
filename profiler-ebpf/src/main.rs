//! fleetprof's eBPF program: on-CPU stack sampling with in-kernel aggregation.
//!
//! `sample_on_cpu` runs on every software `CPU_CLOCK` tick of every CPU. It records the
//! current thread's user and kernel stacks into the active generation's `StackTrace` map and adds
//! one to the (thread, stacks) count in the same generation's hash map. Nothing is dropped
//! silently: every outcome increments a [`Stat`] counter.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{
        EbpfContext, Global,
        bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
        macros::{map, perf_event},
        maps::{Array, HashMap, PerCpuArray, StackTrace},
        programs::{PerfEventContext, tracing::StackIdContext},
    };
    use profiler_ebpf::{DEFAULT_COUNTS_ENTRIES, DEFAULT_STACK_ENTRIES, SampleKey, Stat};

    const EFAULT: i32 = 14;
    const EEXIST: i32 = 17;

    #[unsafe(no_mangle)]
    static FILTER_BY_PID: Global<u8> = Global::new(0);

    #[unsafe(no_mangle)]
    static EXCLUDED_TGID: Global<u32> = Global::new(0);

    #[map]
    static COUNTS_0: HashMap<SampleKey, u64> = HashMap::with_max_entries(DEFAULT_COUNTS_ENTRIES, 0);
    #[map]
    static COUNTS_1: HashMap<SampleKey, u64> = HashMap::with_max_entries(DEFAULT_COUNTS_ENTRIES, 0);
    #[map]
    static STACKS_0: StackTrace = StackTrace::with_max_entries(DEFAULT_STACK_ENTRIES, 0);
    #[map]
    static STACKS_1: StackTrace = StackTrace::with_max_entries(DEFAULT_STACK_ENTRIES, 0);
    #[map]
    static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
    #[map]
    static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);
    #[map]
    static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

    #[inline(always)]
    fn bump(stat: Stat) {
        if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
            // Per-CPU slot: no other CPU writes it, and perf_event programs do not nest on a CPU.
            unsafe { *counter += 1 };
        }
    }

    /// Classifies a stack-id error; `-EFAULT` means "no such stack" and is not a loss.
    #[inline(always)]
    fn note_stack_error(err: i32, unavailable: Stat) {
        if err == -EFAULT {
            bump(unavailable);
        } else if err == -EEXIST {
            bump(Stat::StackCollision);
        } else {
            bump(Stat::StackOtherError);
        }
    }

    #[perf_event]
    pub fn sample_on_cpu(ctx: PerfEventContext) -> u32 {
        bump(Stat::Events);
        let tgid = ctx.tgid();
        if tgid == 0 {
            bump(Stat::Idle);
            return 0;
        }
        if tgid == EXCLUDED_TGID.load()
            || (FILTER_BY_PID.load() != 0 && unsafe { PID_FILTER.get(&tgid) }.is_none())
        {
            bump(Stat::Filtered);
            return 0;
        }
        let generation = ACTIVE.get(0).copied().unwrap_or(0);
        let (counts, stacks) = if generation == 0 {
            (&COUNTS_0, &STACKS_0)
        } else {
            (&COUNTS_1, &STACKS_1)
        };
        let user_stack_id = match ctx.get_stackid(stacks, BPF_F_USER_STACK as u64) {
            Ok(id) => id as i32,
            Err(err) => {
                note_stack_error(err, Stat::UserStackUnavailable);
                err
            }
        };
        let kernel_stack_id = match ctx.get_stackid(stacks, 0) {
            Ok(id) => id as i32,
            Err(err) => {
                note_stack_error(err, Stat::KernelStackUnavailable);
                err
            }
        };
        let key = SampleKey {
            tgid,
            pid: ctx.pid(),
            user_stack_id,
            kernel_stack_id,
            comm: ctx.command().unwrap_or([0; 16]),
        };
        if let Some(count) = counts.get_ptr_mut(&key) {
            unsafe {
                core::intrinsics::atomic_xadd::<
                    u64,
                    u64,
                    { core::intrinsics::AtomicOrdering::Relaxed },
                >(count, 1)
            };
            bump(Stat::Recorded);
            return 0;
        }
        match counts.insert(&key, &1, BPF_NOEXIST as u64) {
            Ok(()) => bump(Stat::Recorded),
            // Another CPU inserted the same key between our lookup and insert.
            Err(err) if err == -EEXIST => match counts.get_ptr_mut(&key) {
                Some(count) => {
                    unsafe {
                        core::intrinsics::atomic_xadd::<
                            u64,
                            u64,
                            { core::intrinsics::AtomicOrdering::Relaxed },
                        >(count, 1)
                    };
                    bump(Stat::Recorded);
                }
                None => bump(Stat::CountsMapFull),
            },
            Err(_) => bump(Stat::CountsMapFull),
        }
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
