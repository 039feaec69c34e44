//! The profile as it moves through the host: raw (ids and addresses from the kernel maps) and
//! symbolized (named frames, processes with identity, loss counters and energy).
//!
//! [`RawProfile`] is what [`crate::sample`] drains from the eBPF maps; [`crate::symbolize`] turns it
//! into a [`SymbolizedProfile`], which every output format ([`crate::output`]) and the shipper read.

use std::time::{Duration, SystemTime};

// A process and the loss counters are defined once, by the wire protocol: the JSON profile, the
// shipper and the collector all use the generated messages.
pub use fleetprof_proto::fleetprof::v1::{LossCounters, Process};
use serde::Serialize;

use crate::energy::EnergyReport;

/// One aggregated sample as drained from the kernel: a thread, its two stacks, a count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSample {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread command name.
    pub thread_name: String,
    /// User-space return addresses, leaf first; empty when there was none.
    pub user_stack: Vec<u64>,
    /// Kernel addresses, leaf first; empty when the sample was taken in user mode.
    pub kernel_stack: Vec<u64>,
    /// How the user stack ended: `profiler_ebpf::stack_flags` bits.
    pub stack_flags: u32,
    /// Why the stacks are missing when they should not be, if so.
    pub stack_error: Option<StackError>,
    /// How many times this (thread, stacks) was sampled.
    pub count: u64,
}

/// A stack the kernel could not give us; the sample is still counted under a placeholder frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackError {
    /// The kernel's stack map was full when the stack was taken.
    StackMapFull,
}

/// Everything drained in one window, before symbolization.
#[derive(Clone, Debug, Default)]
pub struct RawProfile {
    /// Start of the window.
    pub start: Option<SystemTime>,
    /// Length of the window.
    pub duration: Duration,
    /// Sampling frequency, Hz.
    pub frequency_hz: u32,
    /// The aggregated samples.
    pub samples: Vec<RawSample>,
    /// The kernel's counters for the window.
    pub losses: LossCounters,
}

/// One named frame. Inlined functions get a frame each, innermost first, all with the same
/// `address`; only the outermost of them has `inlined == false`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    /// Demangled function name; for a frame that could not be symbolized, `module+0xoffset`.
    pub function: String,
    /// ELF path of the module, or `[kernel]`.
    pub module: String,
    /// GNU build-id of the module, hex.
    pub build_id: Option<String>,
    /// Source file, when debug info exists.
    pub file: Option<String>,
    /// Source line, when debug info exists.
    pub line: Option<u32>,
    /// True when this frame was inlined into the next frame of the stack.
    pub inlined: bool,
    /// File offset within the module (user) or the address (kernel).
    pub address: u64,
    /// True for kernel frames.
    pub kernel: bool,
    /// False when the symbolizer found no name for the address.
    pub symbolized: bool,
}

/// Index of a frame in [`SymbolizedProfile::frames`].
pub type FrameId = u32;

/// Index of a process in [`SymbolizedProfile::processes`].
pub type ProcessId = u32;

/// One aggregated, symbolized sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// The process, an index into [`SymbolizedProfile::processes`].
    pub process: ProcessId,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub thread_name: String,
    /// Frames, leaf first: kernel frames (if any), then user frames.
    pub stack: Vec<FrameId>,
    /// Times sampled.
    pub count: u64,
}

/// A window's profile with every frame named: what outputs and the shipper read.
#[derive(Clone, Debug, Serialize)]
pub struct SymbolizedProfile {
    /// Start of the window.
    #[serde(with = "unix_nanos")]
    pub start: SystemTime,
    /// Length of the window.
    #[serde(with = "duration_nanos")]
    pub duration: Duration,
    /// Sampling frequency, Hz.
    pub frequency_hz: u32,
    /// The deduplicated frame table.
    pub frames: Vec<Frame>,
    /// The processes sampled.
    pub processes: Vec<Process>,
    /// The samples.
    pub samples: Vec<Sample>,
    /// Loss counters for the window.
    pub losses: LossCounters,
    /// Energy for the window, or why there is none.
    pub energy: EnergyReport,
}

impl SymbolizedProfile {
    /// Total samples recorded.
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Nanoseconds of CPU time one sample stands for.
    pub fn period_nanos(&self) -> u64 {
        1_000_000_000 / u64::from(self.frequency_hz.max(1))
    }
}

mod unix_nanos {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let nanos = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        s.serialize_u128(nanos)
    }
}

mod duration_nanos {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_nanos())
    }
}

/// Accumulates symbolized samples (from one or more drains) into a [`SymbolizedProfile`],
/// interning frames and processes so each is stored once.
#[derive(Debug)]
pub struct ProfileBuilder {
    start: Option<SystemTime>,
    duration: Duration,
    frequency_hz: u32,
    frames: Vec<Frame>,
    frame_ids: std::collections::HashMap<Frame, FrameId>,
    processes: Vec<Process>,
    process_ids: std::collections::HashMap<Process, ProcessId>,
    samples: std::collections::HashMap<(ProcessId, u32, String, Vec<FrameId>), u64>,
    losses: LossCounters,
}

impl ProfileBuilder {
    /// An empty builder for samples taken at `frequency_hz`.
    pub fn new(frequency_hz: u32) -> Self {
        Self {
            start: None,
            duration: Duration::ZERO,
            frequency_hz,
            frames: Vec::new(),
            frame_ids: Default::default(),
            processes: Vec::new(),
            process_ids: Default::default(),
            samples: Default::default(),
            losses: LossCounters::default(),
        }
    }

    /// Stores `frame` once and returns its id.
    pub fn intern_frame(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.frame_ids.get(&frame) {
            return id;
        }
        let id = FrameId::try_from(self.frames.len()).unwrap_or(FrameId::MAX);
        self.frames.push(frame.clone());
        self.frame_ids.insert(frame, id);
        id
    }

    /// Stores `process` once and returns its id.
    pub fn intern_process(&mut self, process: Process) -> ProcessId {
        if let Some(&id) = self.process_ids.get(&process) {
            return id;
        }
        let id = ProcessId::try_from(self.processes.len()).unwrap_or(ProcessId::MAX);
        self.processes.push(process.clone());
        self.process_ids.insert(process, id);
        id
    }

    /// Adds `count` samples of a thread with a stack (frame ids, leaf first).
    pub fn add_sample(
        &mut self,
        process: ProcessId,
        tid: u32,
        thread_name: &str,
        stack: Vec<FrameId>,
        count: u64,
    ) {
        *self
            .samples
            .entry((process, tid, thread_name.to_string(), stack))
            .or_insert(0) += count;
    }

    /// Extends the profile's window by a drained window and adds its counters.
    pub fn add_window(
        &mut self,
        start: Option<SystemTime>,
        duration: Duration,
        losses: &LossCounters,
    ) {
        if self.start.is_none() {
            self.start = start;
        }
        self.duration += duration;
        self.losses.add(losses);
    }

    /// Samples added so far.
    pub fn total_samples(&self) -> u64 {
        self.samples.values().sum()
    }

    /// Per-process sample counts so far (by pid), for energy attribution.
    pub fn samples_per_pid(&self) -> Vec<(u32, u64)> {
        let mut per_pid: std::collections::BTreeMap<u32, u64> = Default::default();
        for ((process, ..), count) in &self.samples {
            *per_pid
                .entry(self.processes[*process as usize].pid)
                .or_insert(0) += count;
        }
        per_pid.into_iter().collect()
    }

    /// The finished profile, samples sorted by count (highest first) for stable output.
    pub fn finish(self, energy: EnergyReport) -> SymbolizedProfile {
        let mut samples: Vec<Sample> = self
            .samples
            .into_iter()
            .map(|((process, tid, thread_name, stack), count)| Sample {
                process,
                tid,
                thread_name,
                stack,
                count,
            })
            .collect();
        samples.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.stack.cmp(&b.stack))
                .then(a.tid.cmp(&b.tid))
        });
        SymbolizedProfile {
            start: self.start.unwrap_or_else(SystemTime::now),
            duration: self.duration,
            frequency_hz: self.frequency_hz,
            frames: self.frames,
            processes: self.processes,
            samples,
            losses: self.losses,
            energy,
        }
    }
}
