//! fleetprof's eBPF programs: on-CPU stack sampling with in-kernel unwinding and aggregation.
//!
//! - `sample_on_cpu` runs on every software `CPU_CLOCK` tick of every CPU. It takes the kernel
//!   stack (`bpf_get_stack`, no shared stack-id map), reads the thread's user registers and
//!   tail-calls the unwinder.
//! - `unwind_user_stack` walks the user stack [`FRAMES_PER_RUN`] frames per run, tail-calling
//!   itself: through a mapping with an unwind table (built by userspace from `.eh_frame`) it
//!   follows the table's CFA and rbp rules; through other mappings (frame-pointer code, JIT code)
//!   it follows rbp. It then stores the stack once under its own 64-bit hash and counts the
//!   (thread, stack) sample.
//! - `on_process_exec` / `on_process_exit` (raw tracepoints) tell userspace when a process's mappings change or go.
//!
//! Nothing is dropped silently: every outcome increments a [`Stat`] counter, and a cut stack
//! carries the reason in its flags.
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
        bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_NOEXIST, pt_regs},
        helpers::{
            bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
            generated::{
                bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_get_stack,
                bpf_task_pt_regs,
            },
        },
        macros::{map, perf_event, raw_tracepoint},
        maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf},
        programs::{PerfEventContext, RawTracePointContext},
    };
    use profiler_ebpf::{
        DEFAULT_COUNTS_ENTRIES, DEFAULT_MAPPING_ENTRIES, DEFAULT_PROCESS_ENTRIES,
        DEFAULT_STACK_ENTRIES, DEFAULT_UNWIND_ROWS, FRAMES_PER_RUN, MAX_KERNEL_FRAMES,
        MAX_MAPPINGS, MAX_USER_FRAMES, Mapping, MappingKey, PROGRAM_SLOTS, ProcessEvent,
        ProcessInfo, RECORD_PROGRAM_INDEX, SampleKey, Stack, Stat, UNWIND_PROGRAM_INDEX,
        UNWIND_RUNS, UnwindRow, UnwindState, cfa_kind, event_kind, mapping_kind, mix64, rbp_kind,
        stack_flags,
    };

    const EEXIST: i32 = 17;

    /// Depth of the binary search over one table's rows: tables up to 2^24 rows.
    const ROW_SEARCH_STEPS: u32 = 24;

    /// Depth of the binary search over a process's mappings: counts below 2 * [`MAX_MAPPINGS`].
    const MAPPING_SEARCH_STEPS: u32 = 10;

    #[unsafe(no_mangle)]
    static FILTER_BY_PID: Global<u8> = Global::new(0);

    #[unsafe(no_mangle)]
    static EXCLUDED_TGID: Global<u32> = Global::new(0);

    #[unsafe(no_mangle)]
    static FOLLOW_CGROUP_ID: Global<u64> = Global::new(0);

    #[unsafe(no_mangle)]
    static FOLLOW_CGROUP_LEVEL: Global<u32> = Global::new(0);

    #[map]
    static COUNTS_0: HashMap<SampleKey, u64> = HashMap::with_max_entries(DEFAULT_COUNTS_ENTRIES, 0);
    #[map]
    static COUNTS_1: HashMap<SampleKey, u64> = HashMap::with_max_entries(DEFAULT_COUNTS_ENTRIES, 0);
    // Not preallocated: a stack is 2 KiB and most windows hold few distinct stacks.
    #[map]
    static STACKS_0: HashMap<u64, Stack> =
        HashMap::with_max_entries(DEFAULT_STACK_ENTRIES, BPF_F_NO_PREALLOC);
    #[map]
    static STACKS_1: HashMap<u64, Stack> =
        HashMap::with_max_entries(DEFAULT_STACK_ENTRIES, BPF_F_NO_PREALLOC);
    #[map]
    static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
    #[map]
    static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);
    #[map]
    static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);
    #[map]
    // Memory-mappable: userspace writes whole tables into it with one copy.
    static UNWIND_ROWS: Array<UnwindRow> =
        Array::with_max_entries(DEFAULT_UNWIND_ROWS, BPF_F_MMAPABLE);
    #[map]
    static PROCESS_INFO: HashMap<u32, ProcessInfo> =
        HashMap::with_max_entries(DEFAULT_PROCESS_ENTRIES, BPF_F_NO_PREALLOC);
    #[map]
    static MAPPINGS: HashMap<MappingKey, Mapping> =
        HashMap::with_max_entries(DEFAULT_MAPPING_ENTRIES, BPF_F_NO_PREALLOC);
    #[map]
    static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
    #[map]
    static PROGRAMS: ProgramArray = ProgramArray::with_max_entries(PROGRAM_SLOTS, 0);
    #[map]
    static STATE: PerCpuArray<UnwindState> = PerCpuArray::with_max_entries(1, 0);

    #[inline(always)]
    fn bump(stat: Stat) {
        if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
            // Per-CPU slot: no other CPU writes it, and perf_event programs do not nest on a CPU.
            unsafe { *counter += 1 };
        }
    }

    #[inline(always)]
    fn send_event(kind: u32, pid: u32) {
        if PROCESS_EVENTS
            .output::<ProcessEvent>(ProcessEvent { kind, pid }, 0)
            .is_err()
        {
            bump(Stat::EventsLost);
        }
    }

    /// The user-mode registers of the current thread, or `None` for a kernel thread.
    #[inline(always)]
    fn user_registers(ctx: &PerfEventContext) -> Option<(u64, u64, u64)> {
        // SAFETY: the context points at the kernel's `bpf_perf_event_data`.
        let regs: &pt_regs = unsafe { &(*ctx.ctx).regs };
        if regs.cs & 3 == 3 {
            return Some((regs.rip, regs.rsp, regs.rbp));
        }
        // Sampled in the kernel: the user registers were saved at the top of the kernel stack.
        let task = unsafe { bpf_get_current_task_btf() };
        let user = unsafe { bpf_task_pt_regs(task) } as *const pt_regs;
        let user: pt_regs = unsafe { bpf_probe_read_kernel(user) }.ok()?;
        if user.cs & 3 != 3 || user.rip == 0 {
            return None;
        }
        Some((user.rip, user.rsp, user.rbp))
    }

    /// Whether the filter lets `tgid` through: a listed process, or one in the followed cgroup
    /// (or below it), which passes before userspace has even seen it join.
    #[inline(always)]
    fn admitted(tgid: u32) -> bool {
        if unsafe { PID_FILTER.get(&tgid) }.is_some() {
            return true;
        }
        let cgroup = FOLLOW_CGROUP_ID.load();
        cgroup != 0
            && unsafe { bpf_get_current_ancestor_cgroup_id(FOLLOW_CGROUP_LEVEL.load() as i32) }
                == cgroup
    }

    #[perf_event]
    pub fn sample_on_cpu(ctx: PerfEventContext) -> u32 {
        bump(Stat::Events);
        let tgid = ctx.tgid();
        if tgid == 0 {
            bump(Stat::Idle);
            return 0;
        }
        if tgid == EXCLUDED_TGID.load() || (FILTER_BY_PID.load() != 0 && !admitted(tgid)) {
            bump(Stat::Filtered);
            return 0;
        }
        let Some(state) = STATE.get_ptr_mut(0) else {
            return 0;
        };
        // SAFETY: a per-CPU slot; perf_event programs do not nest on a CPU.
        let state = unsafe { &mut *state };
        state.tgid = tgid;
        state.pid = ctx.pid();
        state.runs = 0;
        state.comm = ctx.command().unwrap_or([0; 16]);
        state.stack.user_len = 0;
        state.stack.kernel_len = 0;
        state.stack.flags = 0;
        state.stack._pad = 0;

        let size = (MAX_KERNEL_FRAMES * 8) as u32;
        let got = unsafe {
            bpf_get_stack(
                ctx.as_ptr(),
                state.stack.kernel.as_mut_ptr().cast(),
                size,
                0,
            )
        };
        if got > 0 {
            state.stack.kernel_len = (got as u32) / 8;
        } else {
            bump(Stat::KernelStackUnavailable);
        }

        match user_registers(&ctx) {
            Some((ip, sp, bp)) => {
                state.ip = ip;
                state.sp = sp;
                state.bp = bp;
                // SAFETY: on success this does not return; the unwinder finishes the sample.
                unsafe { PROGRAMS.tail_call(&ctx, UNWIND_PROGRAM_INDEX) };
                state.stack.flags |= stack_flags::TRUNCATED_TAIL_CALL;
            }
            None => {
                bump(Stat::UserStackUnavailable);
                state.stack.flags |= stack_flags::NO_USER_STACK;
            }
        }
        finish(&ctx);
        0
    }

    /// Hands the finished stack in the per-CPU state to `record_stack`.
    #[inline(always)]
    fn finish(ctx: &PerfEventContext) {
        // SAFETY: on success this does not return.
        unsafe { PROGRAMS.tail_call(ctx, RECORD_PROGRAM_INDEX) };
        // Only a missing program gets here: the sample is lost, and counted.
        bump(Stat::StackOtherError);
    }

    #[perf_event]
    pub fn record_stack(_ctx: PerfEventContext) -> u32 {
        if let Some(state) = STATE.get_ptr_mut(0) {
            // SAFETY: as in `sample_on_cpu`; tail calls stay on the CPU.
            record(unsafe { &mut *state });
        }
        0
    }

    /// What one unwinding step concluded.
    enum Step {
        /// Go on from the new registers.
        Continue,
        /// The stack ended (at its root, or cut: the flags say which).
        Done,
    }

    #[perf_event]
    pub fn unwind_user_stack(ctx: PerfEventContext) -> u32 {
        let Some(state) = STATE.get_ptr_mut(0) else {
            return 0;
        };
        // SAFETY: as in `sample_on_cpu`; the tail call keeps us on the same CPU.
        let state = unsafe { &mut *state };
        let process = unsafe { PROCESS_INFO.get(&state.tgid) }.copied();
        if process.is_none() && state.runs == 0 {
            bump(Stat::UnknownProcess);
            state.stack.flags |= stack_flags::UNKNOWN_PROCESS;
            send_event(event_kind::UNKNOWN_PROCESS, state.tgid);
        }
        // Userspace writes at most MAX_MAPPINGS; the mask (not a clamp to a constant) keeps the
        // count unknown to the verifier, so it does not walk the search once per possible value.
        let mapping_count = process.map_or(0, |p| p.mapping_count & (2 * MAX_MAPPINGS - 1));
        for _ in 0..FRAMES_PER_RUN {
            let len = state.stack.user_len as usize;
            if len >= MAX_USER_FRAMES {
                state.stack.flags |= stack_flags::TRUNCATED_DEPTH;
                finish(&ctx);
                return 0;
            }
            state.stack.user[len] = state.ip;
            state.stack.user_len += 1;
            if let Step::Done = step(state, mapping_count, process.is_some()) {
                finish(&ctx);
                return 0;
            }
        }
        state.runs += 1;
        if state.runs < UNWIND_RUNS {
            // SAFETY: on success this does not return.
            unsafe { PROGRAMS.tail_call(&ctx, UNWIND_PROGRAM_INDEX) };
            state.stack.flags |= stack_flags::TRUNCATED_TAIL_CALL;
        } else {
            state.stack.flags |= stack_flags::TRUNCATED_DEPTH;
        }
        finish(&ctx);
        0
    }

    /// Unwinds one frame: from `state`'s registers to its caller's.
    #[inline(always)]
    fn step(state: &mut UnwindState, mapping_count: u32, known: bool) -> Step {
        // A return address points after its call; the call itself may be the function's last
        // instruction, so look up the byte before it. The leaf's pc is exact.
        let lookup_pc = if state.stack.user_len > 1 {
            state.ip.wrapping_sub(1)
        } else {
            state.ip
        };
        let mapping = if known {
            match find_mapping(state.tgid, mapping_count, lookup_pc) {
                Some(m) => Some(m),
                None => {
                    if state.stack.flags & stack_flags::UNKNOWN_MAPPING == 0 {
                        state.stack.flags |= stack_flags::UNKNOWN_MAPPING;
                        send_event(event_kind::UNKNOWN_MAPPING, state.tgid);
                    }
                    None
                }
            }
        } else {
            None
        };
        match mapping {
            Some(m) if m.kind == mapping_kind::TABLE => table_step(state, &m, lookup_pc),
            _ => frame_pointer_step(state),
        }
    }

    /// The mapping holding `pc`, by binary search over the process's sorted mappings.
    #[inline(always)]
    fn find_mapping(pid: u32, count: u32, pc: u64) -> Option<Mapping> {
        let mut lo = 0u32;
        let mut hi = count;
        // Find the last mapping whose begin <= pc.
        for _ in 0..MAPPING_SEARCH_STEPS {
            if lo >= hi {
                break;
            }
            let mid = lo + (hi - lo) / 2;
            let key = MappingKey { pid, index: mid };
            let begin = match unsafe { MAPPINGS.get(&key) } {
                Some(m) => m.begin,
                None => return None,
            };
            if begin <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return None;
        }
        let key = MappingKey { pid, index: lo - 1 };
        let m = unsafe { MAPPINGS.get(&key) }.copied()?;
        (pc < m.end).then_some(m)
    }

    /// The row covering ELF virtual address `vaddr` in a table, by binary search.
    #[inline(always)]
    fn find_row(start: u32, len: u32, vaddr: u32) -> Option<UnwindRow> {
        let mut lo = 0u32;
        let mut hi = len;
        for _ in 0..ROW_SEARCH_STEPS {
            if lo >= hi {
                break;
            }
            let mid = lo + (hi - lo) / 2;
            let pc = UNWIND_ROWS.get(start.wrapping_add(mid))?.pc;
            if pc <= vaddr {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return None;
        }
        UNWIND_ROWS.get(start.wrapping_add(lo - 1)).copied()
    }

    #[inline(always)]
    fn read_user_u64(addr: u64) -> Option<u64> {
        unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
    }

    /// One step by the mapping's unwind table.
    #[inline(always)]
    fn table_step(state: &mut UnwindState, m: &Mapping, pc: u64) -> Step {
        let vaddr = pc.wrapping_sub(m.load_bias);
        if vaddr > u64::from(u32::MAX) {
            state.stack.flags |= stack_flags::TRUNCATED_NO_UNWIND_INFO;
            return Step::Done;
        }
        let Some(row) = find_row(m.table_start, m.table_len, vaddr as u32) else {
            return no_info_step(state);
        };
        let cfa = match row.cfa_kind() {
            cfa_kind::RSP => state.sp.wrapping_add(row.cfa_offset as i64 as u64),
            cfa_kind::RBP => state.bp.wrapping_add(row.cfa_offset as i64 as u64),
            cfa_kind::PLT => {
                let extra = if state.ip & 15 >= 11 { 8 } else { 0 };
                state.sp.wrapping_add(8 + extra)
            }
            cfa_kind::END_OF_STACK => {
                state.stack.flags |= stack_flags::COMPLETE;
                return Step::Done;
            }
            cfa_kind::NO_INFO => return no_info_step(state),
            _ => {
                state.stack.flags |= stack_flags::TRUNCATED_NO_UNWIND_INFO;
                return Step::Done;
            }
        };
        let Some(ra) = read_user_u64(cfa.wrapping_sub(8)) else {
            state.stack.flags |= stack_flags::TRUNCATED_READ_ERROR;
            return Step::Done;
        };
        match row.rbp_kind() {
            rbp_kind::UNCHANGED => {}
            rbp_kind::CFA_OFFSET => {
                match read_user_u64(cfa.wrapping_add(row.rbp_offset() as u64)) {
                    Some(bp) => state.bp = bp,
                    None => {
                        state.stack.flags |= stack_flags::TRUNCATED_READ_ERROR;
                        return Step::Done;
                    }
                }
            }
            _ => {
                state.stack.flags |= stack_flags::TRUNCATED_NO_UNWIND_INFO;
                return Step::Done;
            }
        }
        state.sp = cfa;
        state.ip = ra;
        if ra == 0 {
            state.stack.flags |= stack_flags::COMPLETE;
            return Step::Done;
        }
        Step::Continue
    }

    /// Code no FDE covers (a JIT's builtins embedded in its binary, hand-written assembly):
    /// follow the frame pointer when it plausibly points into this stack, else stop and say why.
    #[inline(always)]
    fn no_info_step(state: &mut UnwindState) -> Step {
        if state.bp > state.sp && state.bp - state.sp < (8 << 20) {
            return frame_pointer_step(state);
        }
        state.stack.flags |= stack_flags::TRUNCATED_NO_UNWIND_INFO;
        Step::Done
    }

    /// One step by frame pointers: the caller's rbp is at [rbp], its return address at [rbp+8].
    #[inline(always)]
    fn frame_pointer_step(state: &mut UnwindState) -> Step {
        let bp = state.bp;
        if bp == 0 {
            // The outermost frame clears rbp (`_start`, thread entry points).
            state.stack.flags |= stack_flags::COMPLETE;
            return Step::Done;
        }
        let (Some(next_bp), Some(ra)) = (read_user_u64(bp), read_user_u64(bp.wrapping_add(8)))
        else {
            state.stack.flags |= stack_flags::TRUNCATED_READ_ERROR;
            return Step::Done;
        };
        if ra == 0 {
            state.stack.flags |= stack_flags::COMPLETE;
            return Step::Done;
        }
        // Frames live at increasing addresses; anything else is not a frame chain.
        if next_bp != 0 && next_bp <= bp {
            state.stack.flags |= stack_flags::TRUNCATED_READ_ERROR;
            return Step::Done;
        }
        state.ip = ra;
        state.sp = bp.wrapping_add(16);
        state.bp = next_bp;
        Step::Continue
    }

    /// Stores the finished stack under its hash and counts the sample.
    #[inline(always)]
    fn record(state: &mut UnwindState) {
        if state.stack.flags & stack_flags::TRUNCATED != 0 {
            bump(Stat::TruncatedStacks);
        }
        let user_len = state.stack.user_len;
        let kernel_len = state.stack.kernel_len;
        let mut h = mix64(0x243F_6A88_85A3_08D3, u64::from(user_len));
        h = mix64(
            h,
            u64::from(kernel_len) << 32 | u64::from(state.stack.flags),
        );
        for i in 0..MAX_USER_FRAMES {
            if i as u32 >= user_len {
                break;
            }
            h = mix64(h, state.stack.user[i]);
        }
        for i in 0..MAX_KERNEL_FRAMES {
            if i as u32 >= kernel_len {
                break;
            }
            h = mix64(h, state.stack.kernel[i]);
        }
        // Slots past the lengths keep whatever an earlier sample left: they are not part of the
        // key, and userspace reads only up to the lengths.

        let generation = ACTIVE.get(0).copied().unwrap_or(0);
        let (counts, stacks) = if generation == 0 {
            (&COUNTS_0, &STACKS_0)
        } else {
            (&COUNTS_1, &STACKS_1)
        };
        match stacks.insert(&h, &state.stack, BPF_NOEXIST as u64) {
            Ok(()) => {}
            Err(err) if err == -EEXIST => {}
            Err(_) => bump(Stat::StackOtherError),
        }
        let key = SampleKey {
            tgid: state.tgid,
            pid: state.pid,
            stack_hash: h,
            comm: state.comm,
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
            return;
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
    }

    // Raw tracepoints attach by name through the bpf syscall: no tracefs mount needed.
    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    pub fn on_process_exec(_ctx: RawTracePointContext) -> i32 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        send_event(event_kind::EXEC, tgid);
        0
    }

    #[raw_tracepoint(tracepoint = "sched_process_exit")]
    pub fn on_process_exit(_ctx: RawTracePointContext) -> i32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
        // Threads exit too; the process is gone when its leader is.
        if tgid == pid {
            send_event(event_kind::EXIT, tgid);
        }
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
