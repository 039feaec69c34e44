//! Following processes as the kernel reports them: the first sample of an unknown process, new
//! code in a known one, exec and exit. For each, the tracker (its own thread) captures what will
//! be needed later — the executable mappings with their files opened, the process's identity,
//! its JIT perf map — and tells the eBPF unwinder how to walk it.
//!
//! Snapshots outlive their processes by [`EXITED_RETENTION`], so a process that lived less than
//! a drain interval is still named and filed under its service.

use std::{
    collections::{HashMap, HashSet},
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use profiler_ebpf::{ProcessEvent, event_kind};

use crate::{
    perfmap::PerfMapFile,
    process::ProcessInspector,
    procmaps::{Backing, ExecMapping, ModuleCache},
    profile::ProcessInfo,
    unwind::{TableLoader, UnwindStats},
};

/// How long a snapshot is kept after its process exited: longer than any drain interval.
pub const EXITED_RETENTION: Duration = Duration::from_secs(15);

/// Least time between two captures of one process prompted by unknown code.
const RECAPTURE_EVERY: Duration = Duration::from_millis(200);

/// How long the tracker waits for events before looking at its stop flag.
const POLL_TIMEOUT_MS: i32 = 50;

/// What was captured of a process while it lived.
#[derive(Debug)]
pub struct ProcessSnapshot {
    /// Identity: executable, service, version, container.
    pub info: ProcessInfo,
    /// Executable mappings, sorted by address.
    pub mappings: Vec<ExecMapping>,
    /// Its JIT perf map, when it writes one.
    pub perf_map: Option<Arc<PerfMapFile>>,
    /// When it exited, if it did.
    pub exited: Option<Instant>,
}

impl ProcessSnapshot {
    /// The mapping holding `addr`.
    pub fn mapping_of(&self, addr: u64) -> Option<&ExecMapping> {
        let i = self.mappings.partition_point(|m| m.begin <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }
}

/// Snapshots by pid, shared between the tracker and the symbolizer.
pub type ProcessTable = Arc<Mutex<HashMap<u32, Arc<ProcessSnapshot>>>>;

/// Counters of the tracker's work, shared for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackerStats {
    /// Processes captured (first sight, exec or new code).
    pub captures: u64,
    /// Captures that failed (the process exited first, or /proc was unreadable).
    pub capture_failures: u64,
    /// Mapped files that could not be opened.
    pub open_failures: u64,
    /// The unwind tables' figures.
    pub unwind: UnwindStats,
}

/// The tracker thread and what it shares.
#[derive(Debug)]
pub struct ProcessTracker {
    table: ProcessTable,
    stats: Arc<Mutex<TrackerStats>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// What the tracker needs to start.
pub struct TrackerParts {
    /// The kernel's event ring buffer.
    pub events: RingBuf<MapData>,
    /// The kernel's unwinding maps.
    pub loader: TableLoader,
    /// Names processes.
    pub inspector: ProcessInspector,
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
    /// A process never tracked (the profiler itself).
    pub excluded: Option<u32>,
    /// Where procfs is.
    pub proc_root: PathBuf,
}

impl ProcessTracker {
    /// Starts the tracker thread; it first captures every running process it may profile, so
    /// their first samples are whole.
    pub fn start(parts: TrackerParts) -> std::io::Result<Self> {
        let table: ProcessTable = Arc::default();
        let stats: Arc<Mutex<TrackerStats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            parts,
            modules: ModuleCache::default(),
            table: table.clone(),
            stats: stats.clone(),
            last_capture: HashMap::new(),
        };
        let stop_flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("fleetprof-tracker".into())
            .spawn(move || worker.run(&stop_flag))?;
        Ok(Self {
            table,
            stats,
            stop,
            handle: Some(handle),
        })
    }

    /// The shared snapshots.
    pub fn table(&self) -> ProcessTable {
        self.table.clone()
    }

    /// Current figures.
    pub fn stats(&self) -> TrackerStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ProcessTracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

struct Worker {
    parts: TrackerParts,
    modules: ModuleCache,
    table: ProcessTable,
    stats: Arc<Mutex<TrackerStats>>,
    last_capture: HashMap<u32, Instant>,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        for pid in self.initial_pids() {
            self.capture(pid);
        }
        self.publish_stats();
        while !stop.load(Ordering::Relaxed) {
            let mut pollfd = libc::pollfd {
                fd: self.parts.events.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pollfd, 1, POLL_TIMEOUT_MS) };
            let mut wanted: Vec<(u32, u32)> = Vec::new();
            while let Some(item) = self.parts.events.next() {
                if item.len() >= std::mem::size_of::<ProcessEvent>() {
                    // SAFETY: the kernel wrote a whole ProcessEvent; read unaligned.
                    let event: ProcessEvent =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    wanted.push((event.kind, event.pid));
                }
            }
            let mut seen = HashSet::new();
            for (kind, pid) in wanted {
                if !self.tracks(pid) {
                    continue;
                }
                match kind {
                    event_kind::EXIT => self.exited(pid),
                    event_kind::EXEC => {
                        self.parts.loader.unload_process(pid);
                        self.last_capture.remove(&pid);
                        if seen.insert(pid) {
                            self.capture(pid);
                        }
                    }
                    _ => {
                        let recent = self
                            .last_capture
                            .get(&pid)
                            .is_some_and(|t| t.elapsed() < RECAPTURE_EVERY);
                        if !recent && seen.insert(pid) {
                            self.capture(pid);
                        }
                    }
                }
            }
            self.purge_exited();
            self.publish_stats();
        }
    }

    fn tracks(&self, pid: u32) -> bool {
        Some(pid) != self.parts.excluded
            && (self.parts.pids.is_empty() || self.parts.pids.contains(&pid))
    }

    fn initial_pids(&self) -> Vec<u32> {
        if !self.parts.pids.is_empty() {
            return self.parts.pids.clone();
        }
        std::fs::read_dir(&self.parts.proc_root)
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .filter(|&pid| self.tracks(pid))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn capture(&mut self, pid: u32) {
        self.last_capture.insert(pid, Instant::now());
        let mappings = match self.modules.capture(&self.parts.proc_root, pid) {
            Ok(m) => m,
            Err(err) => {
                tracing::debug!(pid, %err, "process gone before it was captured");
                self.stats_mut().capture_failures += 1;
                return;
            }
        };
        // Kernel threads have no mappings and nothing to unwind.
        if mappings.is_empty() {
            return;
        }
        let comm = std::fs::read_to_string(self.parts.proc_root.join(format!("{pid}/comm")))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let info = self.parts.inspector.inspect(pid, &comm);
        let previous = self.table.lock().unwrap_or_else(|e| e.into_inner()).get(&pid).cloned();
        let perf_map = PerfMapFile::open(&self.parts.proc_root, pid)
            .map(Arc::new)
            .or_else(|| previous.as_ref().and_then(|p| p.perf_map.clone()));
        if let Err(err) = self.parts.loader.load_process(pid, &mappings) {
            tracing::warn!(pid, %err, "could not describe the process to the unwinder");
        }
        let has_files = mappings.iter().any(|m| matches!(m.backing, Backing::File(_)));
        if !has_files {
            tracing::debug!(pid, "no mapped files could be opened");
        }
        let snapshot = Arc::new(ProcessSnapshot {
            info,
            mappings,
            perf_map,
            exited: None,
        });
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, snapshot);
        let mut stats = self.stats_mut();
        stats.captures += 1;
    }

    fn exited(&mut self, pid: u32) {
        self.parts.loader.unload_process(pid);
        self.last_capture.remove(&pid);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = table.get(&pid) {
            let exited = Arc::new(ProcessSnapshot {
                info: snapshot.info.clone(),
                mappings: snapshot.mappings.clone(),
                perf_map: snapshot.perf_map.clone(),
                exited: Some(Instant::now()),
            });
            table.insert(pid, exited);
        }
    }

    fn purge_exited(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| s.exited.is_none_or(|t| t.elapsed() < EXITED_RETENTION));
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, TrackerStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_stats(&self) {
        let unwind = self.parts.loader.stats();
        let open_failures = self.modules.open_failures;
        let mut stats = self.stats_mut();
        stats.unwind = unwind;
        stats.open_failures = open_failures;
    }
}
