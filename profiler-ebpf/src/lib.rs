//! The types fleetprof's eBPF programs share with the userspace profiler.
//!
//! The kernel side (`src/main.rs`, built for the bpf target by `profiler/build.rs`) walks each
//! sampled thread's user stack itself — with the compact unwind tables userspace builds from
//! every executable mapping's `.eh_frame`, or by frame pointers where a mapping has no table —
//! stores each distinct stack once under its own 64-bit hash, and counts samples per
//! (thread, stack) in two generations of maps; the daemon flips [`ACTIVE_GENERATION_MAP`] and
//! drains the generation the programs no longer write. Every layout here is `#[repr(C)]` and
//! must stay identical on both sides.
#![no_std]

/// Length of a task's command name, including the trailing NUL (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Deepest user stack the unwinder walks; deeper stacks are marked [`stack_flags::TRUNCATED_DEPTH`].
pub const MAX_USER_FRAMES: usize = 127;

/// Deepest kernel stack kept (`PERF_MAX_STACK_DEPTH`).
pub const MAX_KERNEL_FRAMES: usize = 127;

/// Frames the unwinder walks per program run before it tail-calls itself; keeps every run small
/// enough for the verifier.
pub const FRAMES_PER_RUN: u32 = 8;

/// Runs of the unwinder per sample (the first included): `FRAMES_PER_RUN * UNWIND_RUNS` covers
/// [`MAX_USER_FRAMES`].
pub const UNWIND_RUNS: u32 = 16;

/// Most executable mappings of one process the unwinder can tell apart (its binary search is
/// this deep: 2^9); userspace keeps the ones with the largest tables and counts the rest.
pub const MAX_MAPPINGS: u32 = 512;

/// Default number of distinct (thread, stack) keys per generation.
pub const DEFAULT_COUNTS_ENTRIES: u32 = 10_240;

/// Default number of distinct stacks per generation.
pub const DEFAULT_STACK_ENTRIES: u32 = 16_384;

/// Default capacity of the unwind-row array shared by every table (8 bytes a row).
pub const DEFAULT_UNWIND_ROWS: u32 = 4_000_000;

/// Default number of processes whose mappings the unwinder knows at once.
pub const DEFAULT_PROCESS_ENTRIES: u32 = 8_192;

/// Default number of (process, mapping) entries across all processes.
pub const DEFAULT_MAPPING_ENTRIES: u32 = 262_144;

/// Number of map generations the programs alternate between.
pub const GENERATIONS: u32 = 2;

/// Name of the sample-count maps, indexed by generation.
pub const COUNTS_MAPS: [&str; GENERATIONS as usize] = ["COUNTS_0", "COUNTS_1"];

/// Name of the stack maps (hash → [`Stack`]), indexed by generation.
pub const STACKS_MAPS: [&str; GENERATIONS as usize] = ["STACKS_0", "STACKS_1"];

/// Name of the one-element array holding the generation the programs write to.
pub const ACTIVE_GENERATION_MAP: &str = "ACTIVE";

/// Name of the per-CPU array of [`Stat`] counters.
pub const STATS_MAP: &str = "STATS";

/// Name of the hash set of process ids to sample when [`FILTER_BY_PID_GLOBAL`] is set.
pub const PID_FILTER_MAP: &str = "PID_FILTER";

/// Name of the array of [`UnwindRow`]s every loaded table lives in.
pub const UNWIND_ROWS_MAP: &str = "UNWIND_ROWS";

/// Name of the hash map from process id to its [`ProcessInfo`].
pub const PROCESS_INFO_MAP: &str = "PROCESS_INFO";

/// Name of the hash map from [`MappingKey`] to [`Mapping`].
pub const MAPPINGS_MAP: &str = "MAPPINGS";

/// Name of the ring buffer of [`ProcessEvent`]s the programs send to userspace.
pub const PROCESS_EVENTS_MAP: &str = "PROCESS_EVENTS";

/// Name of the program array the sampler tail-calls the unwinder through.
pub const PROGRAMS_MAP: &str = "PROGRAMS";

/// Index of the unwinder in [`PROGRAMS_MAP`].
pub const UNWIND_PROGRAM_INDEX: u32 = 0;

/// Index of the program that stores a finished stack and counts its sample in [`PROGRAMS_MAP`].
pub const RECORD_PROGRAM_INDEX: u32 = 1;

/// Slots in [`PROGRAMS_MAP`].
pub const PROGRAM_SLOTS: u32 = 2;

/// Name of the global (`u8`) that restricts sampling to the processes in [`PID_FILTER_MAP`].
pub const FILTER_BY_PID_GLOBAL: &str = "FILTER_BY_PID";

/// Name of the global (`u32`) holding a process id whose samples are dropped (the profiler's own).
pub const EXCLUDED_TGID_GLOBAL: &str = "EXCLUDED_TGID";

/// Name of the global (`u64`) holding the id of a cgroup v2 (its directory's inode number) whose
/// processes, and its descendants' processes, pass the pid filter too; 0: none. Checked in the
/// kernel, so a worker forked into the cgroup is sampled from its first tick.
pub const FOLLOW_CGROUP_ID_GLOBAL: &str = "FOLLOW_CGROUP_ID";

/// Name of the global (`u32`) holding that cgroup's depth below the cgroup v2 root.
pub const FOLLOW_CGROUP_LEVEL_GLOBAL: &str = "FOLLOW_CGROUP_LEVEL";

/// Name of the perf_event program attached to every CPU.
pub const PROGRAM_NAME: &str = "sample_on_cpu";

/// Name of the perf_event program that walks user stacks (tail-called, never attached).
pub const UNWIND_PROGRAM_NAME: &str = "unwind_user_stack";

/// Name of the perf_event program that stores a finished stack (tail-called, never attached).
pub const RECORD_PROGRAM_NAME: &str = "record_stack";

/// Name of the tracepoint program reporting exec (`sched:sched_process_exec`).
pub const EXEC_PROGRAM_NAME: &str = "on_process_exec";

/// Name of the tracepoint program reporting process exit (`sched:sched_process_exit`).
pub const EXIT_PROGRAM_NAME: &str = "on_process_exit";

/// What one aggregated sample is keyed by: the thread, its process and its stack's hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// Process id (the kernel's tgid).
    pub tgid: u32,
    /// Thread id (the kernel's pid).
    pub pid: u32,
    /// Key of the stack in the generation's stack map.
    pub stack_hash: u64,
    /// The thread's command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Why a stack ended, and whether it is whole: bits of [`Stack::flags`].
pub mod stack_flags {
    /// The user stack reached its root (an undefined return address in the CFI, as `_start` and
    /// thread entry points declare, or a zero frame pointer / return address).
    pub const COMPLETE: u32 = 1;
    /// Cut at [`super::MAX_USER_FRAMES`].
    pub const TRUNCATED_DEPTH: u32 = 1 << 1;
    /// Cut at a frame with no unwind entry (no FDE covers it, or its CFA rule is unsupported).
    pub const TRUNCATED_NO_UNWIND_INFO: u32 = 1 << 2;
    /// Cut because user memory could not be read (paged out, or a corrupt frame).
    pub const TRUNCATED_READ_ERROR: u32 = 1 << 3;
    /// The process was not known yet: walked by frame pointers only.
    pub const UNKNOWN_PROCESS: u32 = 1 << 4;
    /// A program counter outside every known mapping (stale mappings): walked on by frame pointers.
    pub const UNKNOWN_MAPPING: u32 = 1 << 5;
    /// The sample had no user context (a kernel thread, or no user registers).
    pub const NO_USER_STACK: u32 = 1 << 6;
    /// The tail call to the unwinder failed.
    pub const TRUNCATED_TAIL_CALL: u32 = 1 << 7;

    /// Every bit that means "the user stack is not whole".
    pub const TRUNCATED: u32 =
        TRUNCATED_DEPTH | TRUNCATED_NO_UNWIND_INFO | TRUNCATED_READ_ERROR | TRUNCATED_TAIL_CALL;
}

/// One stack as the programs store it: user frames (leaf first, the leaf's exact pc then return
/// addresses) and kernel frames (leaf first).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stack {
    /// User frames used in [`Stack::user`].
    pub user_len: u32,
    /// Kernel frames used in [`Stack::kernel`].
    pub kernel_len: u32,
    /// [`stack_flags`] bits.
    pub flags: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// User addresses.
    pub user: [u64; MAX_USER_FRAMES],
    /// Kernel addresses.
    pub kernel: [u64; MAX_KERNEL_FRAMES],
}

/// How a row computes the canonical frame address (CFA): [`UnwindRow::cfa_kind`].
pub mod cfa_kind {
    /// No unwind information covers this address (a gap between FDEs).
    pub const NO_INFO: u8 = 0;
    /// CFA = rsp + offset.
    pub const RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const RBP: u8 = 2;
    /// The return address is undefined: the outermost frame of a stack.
    pub const END_OF_STACK: u8 = 3;
    /// A DWARF expression the unwinder does not evaluate.
    pub const UNSUPPORTED: u8 = 4;
    /// The PLT stubs' expression: CFA = rsp + 8 + (((rip & 15) >= 11) ? 8 : 0).
    pub const PLT: u8 = 5;
}

/// Where a row finds the caller's rbp: [`UnwindRow::rbp_kind`].
pub mod rbp_kind {
    /// rbp is unchanged in this frame.
    pub const UNCHANGED: u8 = 0;
    /// Saved at CFA + [`super::UnwindRow::rbp_offset`].
    pub const CFA_OFFSET: u8 = 1;
    /// A rule the unwinder does not follow; the walk stops after this frame.
    pub const UNSUPPORTED: u8 = 2;
}

/// One row of a compact unwind table: from `pc` (an ELF virtual address) up to the next row, how
/// to find the caller's frame. x86-64 only: the return address is always at CFA - 8. Eight bytes,
/// so a large table stays small in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// First ELF virtual address the row covers.
    pub pc: u32,
    /// Offset added to the CFA register.
    pub cfa_offset: i16,
    /// Offset from the CFA where rbp is saved, in 8-byte words, when the rbp rule says so.
    pub rbp_offset_words: i8,
    /// The [`cfa_kind`] (low four bits) and [`rbp_kind`] (high four bits).
    pub kinds: u8,
}

impl UnwindRow {
    /// A row; an rbp offset that is not a multiple of 8 within ±1 KiB makes the rbp rule
    /// [`rbp_kind::UNSUPPORTED`].
    pub const fn new(
        pc: u32,
        cfa_kind: u8,
        cfa_offset: i16,
        rbp_kind: u8,
        rbp_offset: i16,
    ) -> Self {
        let fits = rbp_offset % 8 == 0
            && rbp_offset / 8 >= i8::MIN as i16
            && rbp_offset / 8 <= i8::MAX as i16;
        let (rbp_kind, words) = if rbp_kind == rbp_kind::CFA_OFFSET && !fits {
            (rbp_kind::UNSUPPORTED, 0)
        } else {
            (rbp_kind, (rbp_offset / 8) as i8)
        };
        Self {
            pc,
            cfa_offset,
            rbp_offset_words: words,
            kinds: (cfa_kind & 0x0f) | (rbp_kind << 4),
        }
    }

    /// How the CFA is computed: a [`cfa_kind`] value.
    pub const fn cfa_kind(&self) -> u8 {
        self.kinds & 0x0f
    }

    /// Where rbp was saved: a [`rbp_kind`] value.
    pub const fn rbp_kind(&self) -> u8 {
        self.kinds >> 4
    }

    /// Offset from the CFA where rbp was saved, bytes.
    pub const fn rbp_offset(&self) -> i64 {
        self.rbp_offset_words as i64 * 8
    }
}

/// How the unwinder walks through one mapping: [`Mapping::kind`].
pub mod mapping_kind {
    /// Frame pointers (no table loaded, or the module keeps frame pointers).
    pub const FRAME_POINTER: u32 = 0;
    /// The module's unwind table, rows `table_start..table_start + table_len`.
    pub const TABLE: u32 = 1;
    /// Anonymous executable memory (JIT code): frame pointers.
    pub const JIT: u32 = 2;
}

/// One executable mapping of a process, as the unwinder sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub begin: u64,
    /// One past the last address.
    pub end: u64,
    /// Runtime address minus ELF virtual address.
    pub load_bias: u64,
    /// First row of the module's table in the row array.
    pub table_start: u32,
    /// Rows in the module's table.
    pub table_len: u32,
    /// A [`mapping_kind`] value.
    pub kind: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// What the unwinder knows of a process: how many executable mappings it has. The mappings
/// themselves are in [`MAPPINGS_MAP`] under `(pid, 0..mapping_count)`, sorted by address, none
/// overlapping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Mappings stored for the process.
    pub mapping_count: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// Key of one mapping of one process in [`MAPPINGS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MappingKey {
    /// Process id.
    pub pid: u32,
    /// Index of the mapping in address order.
    pub index: u32,
}

/// What a [`ProcessEvent`] reports: [`ProcessEvent::kind`].
pub mod event_kind {
    /// A sample of a process whose mappings the unwinder does not know.
    pub const UNKNOWN_PROCESS: u32 = 1;
    /// A program counter outside every known mapping of a known process (it mapped new code).
    pub const UNKNOWN_MAPPING: u32 = 2;
    /// The process called exec: its mappings changed completely.
    pub const EXEC: u32 = 3;
    /// The process exited.
    pub const EXIT: u32 = 4;
}

/// A message from the programs to userspace about a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessEvent {
    /// An [`event_kind`] value.
    pub kind: u32,
    /// Process id (tgid).
    pub pid: u32,
}

/// State the unwinder carries across its tail calls, in a per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindState {
    /// Instruction pointer of the frame being unwound.
    pub ip: u64,
    /// Its stack pointer.
    pub sp: u64,
    /// Its frame pointer (rbp).
    pub bp: u64,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// Runs of the unwinder so far for this sample.
    pub runs: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// The thread's command name.
    pub comm: [u8; COMM_LEN],
    /// The stack being built.
    pub stack: Stack,
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
    /// Samples without a user stack: kernel threads, or no user context.
    UserStackUnavailable = 4,
    /// Samples without a kernel stack: taken in user mode.
    KernelStackUnavailable = 5,
    /// Stacks whose 64-bit hash matched a different stored stack. Always 0 by construction: kept
    /// so the wire format keeps its meaning.
    StackCollision = 6,
    /// Stacks lost because the stack map was full; the samples are kept under a placeholder.
    StackOtherError = 7,
    /// Samples dropped because the count map was full.
    CountsMapFull = 8,
    /// Samples whose user stack was cut (depth, no unwind info, unreadable memory).
    TruncatedStacks = 9,
    /// Samples of processes whose mappings were not known yet (walked by frame pointers).
    UnknownProcess = 10,
    /// Process events lost because the ring buffer was full.
    EventsLost = 11,
}

impl Stat {
    /// Number of counters.
    pub const COUNT: u32 = 12;

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
        Stat::TruncatedStacks,
        Stat::UnknownProcess,
        Stat::EventsLost,
    ];
}

/// The stack's key: a 64-bit mix of its frames, lengths and flags. The same function runs in
/// the kernel (which stores by it) and in tests.
#[inline(always)]
pub fn mix64(mut h: u64, word: u64) -> u64 {
    // One round of a multiply-xorshift mixer (as in wyhash/murmur finalizers): every input bit
    // reaches every output bit, so distinct stacks collide with probability ~2^-64.
    h ^= word;
    h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h
}

#[cfg(all(feature = "user", not(target_arch = "bpf")))]
mod user {
    // SAFETY (all below): `#[repr(C)]`, `Copy`, no implicit padding (explicit `_pad` fields make
    // every byte initialized) and every bit pattern is valid.
    unsafe impl aya::Pod for super::SampleKey {}
    unsafe impl aya::Pod for super::Stack {}
    unsafe impl aya::Pod for super::UnwindRow {}
    unsafe impl aya::Pod for super::Mapping {}
    unsafe impl aya::Pod for super::ProcessInfo {}
    unsafe impl aya::Pod for super::MappingKey {}
    unsafe impl aya::Pod for super::ProcessEvent {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// No implicit padding, so the kernel and userspace hash and compare the same bytes.
    #[test]
    fn shared_types_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<SampleKey>(), 32);
        assert_eq!(size_of::<UnwindRow>(), 8);
        assert_eq!(size_of::<Mapping>(), 40);
        assert_eq!(
            size_of::<Stack>(),
            16 + 8 * (MAX_USER_FRAMES + MAX_KERNEL_FRAMES)
        );
        assert_eq!(size_of::<ProcessInfo>(), 8);
        assert_eq!(size_of::<MappingKey>(), 8);
        assert_eq!(size_of::<ProcessEvent>(), 8);
    }

    /// `Stat::ALL` lists every counter at its own index.
    #[test]
    fn stats_are_indexed_in_order() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    /// Enough runs to walk the deepest stack kept.
    #[test]
    fn runs_cover_the_depth() {
        assert!((FRAMES_PER_RUN * UNWIND_RUNS) as usize >= MAX_USER_FRAMES);
    }

    /// Packed rows keep their rules; an rbp offset that does not fit is refused, not truncated.
    #[test]
    fn rows_pack_and_unpack() {
        let r = UnwindRow::new(0x1234, cfa_kind::RSP, 16, rbp_kind::CFA_OFFSET, -16);
        assert_eq!(
            (r.cfa_kind(), r.rbp_kind(), r.rbp_offset(), r.cfa_offset),
            (cfa_kind::RSP, rbp_kind::CFA_OFFSET, -16, 16)
        );
        let odd = UnwindRow::new(0, cfa_kind::RBP, 16, rbp_kind::CFA_OFFSET, -12);
        assert_eq!(odd.rbp_kind(), rbp_kind::UNSUPPORTED);
        let far = UnwindRow::new(0, cfa_kind::RBP, 16, rbp_kind::CFA_OFFSET, -2048);
        assert_eq!(far.rbp_kind(), rbp_kind::UNSUPPORTED);
    }

    /// The mixer tells apart stacks that differ in one frame or in order.
    #[test]
    fn mix_distinguishes_order_and_values() {
        let h = |words: &[u64]| words.iter().fold(0u64, |h, &w| mix64(h, w));
        assert_ne!(h(&[1, 2, 3]), h(&[3, 2, 1]));
        assert_ne!(h(&[1, 2, 3]), h(&[1, 2, 4]));
        assert_eq!(h(&[1, 2, 3]), h(&[1, 2, 3]));
    }
}
