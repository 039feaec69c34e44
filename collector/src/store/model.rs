//! The validated batch the store writes: the wire batch with frames hashed into ids and stacks
//! turned root first. Built by `ingest::validate`, never from unchecked input.

use std::sync::Arc;

// A process and the loss counters are stored as the wire carries them (one definition, in the
// proto crate); validation only fills in defaults.
pub use fleetprof_proto::fleetprof::v1::{LossCounters, Process};
use twox_hash::XxHash3_64;

/// A batch's identity: retries of one batch carry the same key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchKey {
    /// `/etc/machine-id` of the host.
    pub host_id: String,
    /// The host's boot id.
    pub boot_id: String,
    /// Per (host_id, boot_id), from 1.
    pub sequence: u64,
}

impl std::fmt::Display for BatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.host_id, self.boot_id, self.sequence)
    }
}

/// A frame with its stable id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredFrame {
    /// [`frame_id`] of the frame.
    pub frame_id: u64,
    /// Function name, or `module+0xoffset` when it could not be symbolized.
    pub function: String,
    /// Module path or `[kernel]`.
    pub module: String,
    /// Module build-id.
    pub build_id: String,
    /// Source file, or empty.
    pub file: String,
    /// Source line, or 0.
    pub line: u32,
    /// Inlined into its caller.
    pub inlined: bool,
    /// A kernel frame.
    pub kernel: bool,
    /// Offset within the module.
    pub module_offset: u64,
}

/// A stack, root first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackInfo {
    /// [`stack_id`] of `frame_ids`.
    pub stack_id: u64,
    /// Frame ids, root first.
    pub frame_ids: Vec<u64>,
    /// Function names, root first (the leaf last). Shared: a batch holds each frame's name once,
    /// however many of its stacks pass through the frame (no copy per stack and frame).
    pub functions: Vec<Arc<str>>,
}

/// One sample row: a thread of a process on a stack, `count` times.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleInfo {
    /// Index into [`Batch::processes`].
    pub process: u32,
    /// Index into [`Batch::stacks`].
    pub stack: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub thread: String,
    /// Samples.
    pub count: u64,
}

/// Energy of the window: per RAPL domain and per process, or why there is none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergyReading {
    /// The host had a RAPL source.
    pub available: bool,
    /// Why not, when not.
    pub unavailable_reason: String,
    /// `powercap` or `perf-power`.
    pub source: String,
    /// (domain, joules).
    pub domains: Vec<(String, f64)>,
    /// (index into [`Batch::processes`], joules).
    pub processes: Vec<(u32, f64)>,
    /// How the energy was split (and its inputs), per host and window.
    pub split: EnergySplit,
}

/// How a window's energy was split between its processes and the host's idle, with the
/// inputs: stored beside the figures (`host_energy`, `process_energy`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnergySplit {
    /// The method, e.g. `kepler-cpu-time: ...`; empty from profilers that predate it.
    pub method: String,
    /// Busy ÷ all CPU time over the window.
    pub busy_ratio: f64,
    /// Busy CPU-seconds (all CPUs).
    pub busy_cpu_seconds: f64,
    /// All CPU-seconds (about window × CPUs).
    pub total_cpu_seconds: f64,
    /// Seconds between the counter readings that bound the energy.
    pub interval_seconds: f64,
    /// The basis domains: (domain, measured, active, idle joules).
    pub domains: Vec<(String, f64, f64, f64)>,
    /// Per entry of [`EnergyReading::processes`], in the same order: (CPU-seconds, DRAM joules).
    pub processes: Vec<(f64, f64)>,
}

/// How the root frame of a truncated stack's function name starts (the profiler names it
/// `[truncated: <why>]`): such samples are told apart by `stacks.functions[1]`, and counted in
/// [`LossCounters::truncated_stacks`].
pub const TRUNCATED_ROOT_PREFIX: &str = "[truncated:";

/// A validated batch, ready to store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Identity.
    pub key: BatchKey,
    /// Host name.
    pub hostname: String,
    /// Kernel release.
    pub kernel_release: String,
    /// Profiler version.
    pub agent_version: String,
    /// Window start, ns since the epoch.
    pub start_time_ns: u64,
    /// Window end, ns since the epoch.
    pub end_time_ns: u64,
    /// Sampling frequency.
    pub frequency_hz: u32,
    /// Processes.
    pub processes: Vec<Process>,
    /// Frames (deduplicated by id).
    pub frames: Vec<StoredFrame>,
    /// Stacks.
    pub stacks: Vec<StackInfo>,
    /// Samples.
    pub samples: Vec<SampleInfo>,
    /// Energy.
    pub energy: EnergyReading,
    /// Losses.
    pub losses: LossCounters,
}

impl Batch {
    /// Bytes the batch holds in memory, roughly (strings and vectors; what the ingest memory
    /// budget counts).
    pub fn approx_bytes(&self) -> usize {
        const STRING: usize = std::mem::size_of::<String>();
        let strs = |v: &[&String]| v.iter().map(|s| s.len() + STRING).sum::<usize>();
        let processes: usize = self
            .processes
            .iter()
            .map(|p| {
                std::mem::size_of::<Process>()
                    + strs(&[
                        &p.comm,
                        &p.exe,
                        &p.service,
                        &p.version,
                        &p.container_id,
                        &p.cgroup,
                        &p.build_id,
                    ])
            })
            .sum();
        let frames: usize = self
            .frames
            .iter()
            .map(|f| {
                // The name twice: the frame's own and the copy its stacks share.
                std::mem::size_of::<StoredFrame>()
                    + f.function.len()
                    + strs(&[&f.function, &f.module, &f.build_id, &f.file])
            })
            .sum();
        let stacks: usize = self
            .stacks
            .iter()
            .map(|s| {
                std::mem::size_of::<StackInfo>()
                    + s.frame_ids.len() * 8
                    + s.functions.len() * std::mem::size_of::<Arc<str>>()
            })
            .sum();
        let samples: usize = self
            .samples
            .iter()
            .map(|s| std::mem::size_of::<SampleInfo>() + s.thread.len())
            .sum();
        std::mem::size_of::<Self>() + processes + frames + stacks + samples
    }

    /// Sum of the samples' counts.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Window start in whole seconds (the `time` column).
    pub fn time(&self) -> u32 {
        u32::try_from(self.start_time_ns / 1_000_000_000).unwrap_or(u32::MAX)
    }
}

/// The stable id of a frame: a hash of what identifies it (the offset only matters when the
/// frame has no function name). Same frame on any host, any day → same id.
///
/// The id is XXH3-64 (seed 0) of this byte string, fixed across versions, machines and
/// endianness: for each of `function`, `module`, `build_id` and `file` in that order, its UTF-8
/// length as a little-endian u64 then its bytes; then `line` as a little-endian u32; then one
/// byte `inlined` (0 or 1) and one byte `kernel` (0 or 1). Collectors before 2026-11-30 (schema v5) hashed
/// the same bytes with SHA-256 (first 8 bytes of the digest, little-endian): see
/// `collector/schema/QUERIES.md` ("Stack and frame ids") for what that means for stored rows.
pub fn frame_id(frame: &StoredFrame) -> u64 {
    let parts = [&frame.function, &frame.module, &frame.build_id, &frame.file];
    let len = parts.iter().map(|p| 8 + p.len()).sum::<usize>() + 6;
    let mut bytes = Vec::with_capacity(len);
    for part in parts {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes.extend_from_slice(&frame.line.to_le_bytes());
    bytes.extend_from_slice(&[u8::from(frame.inlined), u8::from(frame.kernel)]);
    XxHash3_64::oneshot(&bytes)
}

/// The stable id of a stack: XXH3-64 (seed 0) of its frame ids, root first, each as a
/// little-endian u64 (see [`frame_id`] for the stability rules).
pub fn stack_id(frame_ids: &[u64]) -> u64 {
    let mut bytes = Vec::with_capacity(frame_ids.len() * 8);
    for id in frame_ids {
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    XxHash3_64::oneshot(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently of this crate, with xxHash's own command-line tool over the
    // documented bytes (`xxhsum -H3`, xxHash 0.8.1); the empty input's is the XXH3-64 reference
    // value from the xxHash specification.
    const PINNED_FRAME: u64 = 0xdd24_c096_af57_1e54;
    const PINNED_STACK: u64 = 0x9b1f_1c88_74d6_62c6;
    const PINNED_EMPTY_STACK: u64 = 0x2d06_8005_38d3_94c2;

    fn frame() -> StoredFrame {
        StoredFrame {
            frame_id: 0,
            function: "checkout::price_items".into(),
            module: "/usr/bin/checkout".into(),
            build_id: "ab12".into(),
            file: "src/price.rs".into(),
            line: 42,
            inlined: true,
            kernel: false,
            module_offset: 0x1234,
        }
    }

    /// The ids are part of the stored data: these values must never change. (If this test
    /// fails, stored stacks and frames would get new ids after an upgrade: don't.)
    #[test]
    fn ids_are_pinned() {
        assert_eq!(frame_id(&frame()), PINNED_FRAME);
        assert_eq!(stack_id(&[1, 2, 0xdead_beef]), PINNED_STACK);
        assert_eq!(stack_id(&[]), PINNED_EMPTY_STACK);
    }

    /// The documented encoding, spelled out byte by byte, hashes to the same ids: the id is
    /// XXH3-64 of exactly these bytes, whatever the machine's endianness.
    #[test]
    fn ids_hash_the_documented_bytes() {
        let mut bytes = Vec::new();
        for part in [
            "checkout::price_items",
            "/usr/bin/checkout",
            "ab12",
            "src/price.rs",
        ] {
            bytes.extend_from_slice(&[part.len() as u8, 0, 0, 0, 0, 0, 0, 0]);
            bytes.extend_from_slice(part.as_bytes());
        }
        bytes.extend_from_slice(&[42, 0, 0, 0, 1, 0]);
        assert_eq!(frame_id(&frame()), XxHash3_64::oneshot(&bytes));
        let stack = [
            1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0,
        ];
        assert_eq!(stack_id(&[1, 2, 0xdead_beef]), XxHash3_64::oneshot(&stack));
    }

    /// What identifies a frame changes its id; the offset (kept for unsymbolized frames, whose
    /// name already carries it) does not.
    #[test]
    fn ids_follow_identity() {
        let base = frame_id(&frame());
        let mut f = frame();
        f.module_offset = 1;
        assert_eq!(frame_id(&f), base);
        for change in [
            (|f: &mut StoredFrame| f.line = 43) as fn(&mut StoredFrame),
            |f| f.kernel = true,
            |f| f.inlined = false,
            |f| f.file.clear(),
            // Length prefixes: moving a byte between two fields is another frame.
            |f| {
                f.function.push('/');
                f.module.remove(0);
            },
        ] {
            let mut f = frame();
            change(&mut f);
            assert_ne!(frame_id(&f), base);
        }
        assert_ne!(stack_id(&[1, 2]), stack_id(&[2, 1]));
    }
}
