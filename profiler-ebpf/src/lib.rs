//! The types fleetprof's eBPF programs share with the userspace profiler.
//!
//! The kernel side (`src/main.rs`, built for the bpf target by `profiler/build.rs`) aggregates
//! on-CPU samples into two generations of maps; the daemon flips [`ACTIVE_GENERATION_MAP`] and
//! drains the generation the programs no longer write. Every layout here is `#[repr(C)]` and
//! must stay identical on both sides.
#![no_std]

/// Length of a task's command name, including the trailing NUL (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Deepest stack a `StackTrace` map entry holds (`PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;

/// Default number of distinct (thread, stacks) keys per generation.
pub const DEFAULT_COUNTS_ENTRIES: u32 = 10_240;

/// Default number of distinct stacks per generation and per `StackTrace` map.
pub const DEFAULT_STACK_ENTRIES: u32 = 16_384;

/// Number of map generations the programs alternate between.
pub const GENERATIONS: u32 = 2;

/// Name of the sample-count maps, indexed by generation.
pub const COUNTS_MAPS: [&str; GENERATIONS as usize] = ["COUNTS_0", "COUNTS_1"];

/// Name of the stack-trace maps, indexed by generation.
pub const STACKS_MAPS: [&str; GENERATIONS as usize] = ["STACKS_0", "STACKS_1"];

/// Name of the one-element array holding the generation the programs write to.
pub const ACTIVE_GENERATION_MAP: &str = "ACTIVE";

/// Name of the per-CPU array of [`Stat`] counters.
pub const STATS_MAP: &str = "STATS";

/// Name of the hash set of process ids to sample when [`FILTER_BY_PID_GLOBAL`] is set.
pub const PID_FILTER_MAP: &str = "PID_FILTER";

/// Name of the global (`u8`) that restricts sampling to the processes in [`PID_FILTER_MAP`].
pub const FILTER_BY_PID_GLOBAL: &str = "FILTER_BY_PID";

/// Name of the global (`u32`) holding a process id whose samples are dropped (the profiler's own).
pub const EXCLUDED_TGID_GLOBAL: &str = "EXCLUDED_TGID";

/// Name of the perf_event program.
pub const PROGRAM_NAME: &str = "sample_on_cpu";

/// What one aggregated sample is keyed by: the thread, its process and its two stacks.
///
/// A stack id below zero is the negated errno `bpf_get_stackid` returned (for example `-EFAULT`
/// for the kernel stack of a sample taken in user mode); the sample is still counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// Thread id (the kernel's pid).
    pub pid: u32,
    /// Id of the user stack in the generation's `StackTrace` map, or a negated errno.
    pub user_stack_id: i32,
    /// Id of the kernel stack in the generation's `StackTrace` map, or a negated errno.
    pub kernel_stack_id: i32,
    /// The thread's command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Counters the programs keep per CPU; the daemon sums them across CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Every time the program ran.
    Events = 0,
    /// Samples of the idle task (pid 0), not recorded: they are not on-CPU work.
    Idle = 1,
    /// Samples of processes left out by the pid filter or the self-exclusion.
    Filtered = 2,
    /// Samples added to a count map.
    Recorded = 3,
    /// User stack unavailable (`-EFAULT`): kernel threads, or no user context.
    UserStackUnavailable = 4,
    /// Kernel stack unavailable (`-EFAULT`): the sample was taken in user mode.
    KernelStackUnavailable = 5,
    /// A stack lost to a `StackTrace` hash collision (`-EEXIST`).
    StackCollision = 6,
    /// A stack lost to any other `bpf_get_stackid` error (for example a full map).
    StackOtherError = 7,
    /// Samples dropped because the count map was full.
    CountsMapFull = 8,
}

impl Stat {
    /// Number of counters.
    pub const COUNT: u32 = 9;

    /// Every counter, in index order.
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Events,
        Stat::Idle,
        Stat::Filtered,
        Stat::Recorded,
        Stat::UserStackUnavailable,
        Stat::KernelStackUnavailable,
        Stat::StackCollision,
        Stat::StackOtherError,
        Stat::CountsMapFull,
    ];
}

#[cfg(all(feature = "user", not(target_arch = "bpf")))]
mod user {
    // SAFETY: `SampleKey` is `#[repr(C)]`, `Copy`, has no padding (4 + 4 + 4 + 4 + 16 bytes) and
    // every bit pattern is valid.
    unsafe impl aya::Pod for super::SampleKey {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// The key has no padding, so the kernel and userspace hash the same bytes.
    #[test]
    fn sample_key_has_no_padding() {
        assert_eq!(core::mem::size_of::<SampleKey>(), 32);
    }

    /// `Stat::ALL` lists every counter at its own index.
    #[test]
    fn stats_are_indexed_in_order() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
