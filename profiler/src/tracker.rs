//! Following processes as the kernel reports them: the first sample of an unknown process, new
//! code in a known one, exec and exit. For each, the tracker (its own thread) captures what will
//! be needed later — the executable mappings with their files opened, the process's identity,
//! its JIT perf map — and tells the eBPF unwinder how to walk it.
//!
//! Snapshots outlive their processes by [`EXITED_RETENTION`], so a process that lived less than
//! a drain interval is still named and filed under its service. Building and loading unwind
//! tables, which can take a second for a large binary, happens on a second thread, so it never
//! delays capturing the next process.

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

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use profiler_ebpf::{ProcessEvent, event_kind};

use crate::{
    perfmap::PerfMapFile,
    process::ProcessInspector,
    procmaps::{Backing, ExecMapping, ModuleCache},
    profile::Process,
    unwind::{
        TableLoader, UnwindStats,
        queue::{TableQueue, TableWork},
    },
};

/// How long a snapshot is kept after its process exited: longer than any drain interval.
pub const EXITED_RETENTION: Duration = Duration::from_secs(15);

/// Least time between two captures of one process prompted by unknown code: short, because a
/// process that just started maps its libraries within milliseconds of its exec, and its samples
/// are walked by frame pointers only until the unwinder knows them.
const RECAPTURE_EVERY: Duration = Duration::from_millis(20);

/// The longest wait between captures prompted by unknown code. Each capture that finds the
/// mappings unchanged doubles the wait up to this: a frame-pointer walk through code built
/// without them yields addresses in no mapping on every sample, and re-reading such a process's
/// `/proc/PID/maps` every 20 ms cost a third of a CPU on a host running a build.
const RECAPTURE_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// When a process was last captured, how long to wait before the next capture, and the layout
/// of code (begin, end, file offset of each executable mapping) last described to the unwinder.
#[derive(Debug, Clone)]
struct Recapture {
    at: Instant,
    wait: Duration,
    layout: Vec<(u64, u64, u64)>,
}

/// How long the tracker waits for events before looking at its stop flag.
const POLL_TIMEOUT_MS: i32 = 50;

/// Processes running at start captured between two rounds of events.
const INITIAL_BATCH: usize = 1;

/// What was captured of a process while it lived.
#[derive(Debug)]
pub struct ProcessSnapshot {
    /// Identity: executable, service, version, container.
    pub info: Process,
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
    /// Captures prompted by unknown code that found the process's code where it was: nothing was
    /// described again, and the process's next capture waits twice as long.
    pub unchanged_captures: u64,
    /// Mapped files that could not be opened.
    pub open_failures: u64,
    /// The unwind tables' figures.
    pub unwind: UnwindStats,
}

/// The tracker threads and what they share.
#[derive(Debug)]
pub struct ProcessTracker {
    initial_capture: std::sync::mpsc::Receiver<()>,
    table: ProcessTable,
    stats: Arc<Mutex<TrackerStats>>,
    stop: Arc<AtomicBool>,
    /// Work for the table thread; dropped at stop so that thread ends.
    tables: Option<std::sync::mpsc::Sender<TableWork>>,
    handle: Option<JoinHandle<()>>,
    tables_handle: Option<JoinHandle<()>>,
}

/// The table thread's record of what it described: the last snapshot of each process, so a
/// process evicted for room, or short of a table, can be described again without a new capture.
#[derive(Default)]
struct Described {
    snapshots: HashMap<u32, Arc<ProcessSnapshot>>,
    evicted: HashSet<u32>,
    /// Notifications waiting for the tables being built in the background.
    parked: Vec<std::sync::mpsc::Sender<()>>,
}

impl Described {
    /// Queues `work`, or handles it at once when it is news of sampled processes or a table the
    /// builder thread finished.
    fn accept(&mut self, work: TableWork, queue: &mut TableQueue, loader: &mut TableLoader) {
        let pids = match work {
            TableWork::Active(pids) => pids,
            TableWork::Built(built) => {
                // The processes mapping the module are described again, with its table.
                for pid in loader.table_built(built) {
                    if let Some(snapshot) = self.snapshots.get(&pid) {
                        queue.push(TableWork::Load(pid, snapshot.clone()));
                    }
                }
                if !loader.is_building() {
                    for done in self.parked.drain(..) {
                        queue.push(TableWork::Notify(done));
                    }
                }
                return;
            }
            work => {
                queue.push(work);
                return;
            }
        };
        let evicted: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|pid| self.evicted.remove(pid))
            .collect();
        for pid in evicted.into_iter().chain(loader.note_active(pids)) {
            if let Some(snapshot) = self.snapshots.get(&pid) {
                queue.push(TableWork::Load(pid, snapshot.clone()));
            }
        }
    }

    fn loaded(&mut self, pid: u32, snapshot: Arc<ProcessSnapshot>, loader: &mut TableLoader) {
        self.evicted.remove(&pid);
        self.snapshots.insert(pid, snapshot);
        self.evicted.extend(loader.take_evicted());
    }

    fn unloaded(&mut self, pid: u32) {
        self.snapshots.remove(&pid);
        self.evicted.remove(&pid);
    }
}

/// How often a followed cgroup's members are read again. The kernel samples a worker forked into
/// a cgroup v2 from its birth; reading the members captures its tables before its first sample,
/// and admits members where the kernel cannot check the cgroup.
pub const FOLLOW_CGROUP_EVERY: Duration = Duration::from_millis(50);

/// A cgroup followed while sampling: the processes that join it are added to the kernel's pid
/// filter (which only a fixed list of pids would otherwise pass) and captured like named ones.
pub struct FollowCgroup {
    /// Its `cgroup.procs` file.
    pub procs: PathBuf,
    /// The kernel's filter of the processes sampled.
    pub filter: BpfHashMap<MapData, u32, u8>,
}

/// The pids listed in a `cgroup.procs` file.
pub fn cgroup_members(procs: &std::path::Path) -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(procs)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// What the tracker needs to start.
pub struct TrackerParts {
    /// The kernel's event ring buffer.
    pub events: RingBuf<MapData>,
    /// The kernel's unwinding maps.
    pub loader: TableLoader,
    /// Names processes.
    pub inspector: ProcessInspector,
    /// Only these processes (empty: all, unless a cgroup is followed).
    pub pids: Vec<u32>,
    /// A cgroup whose members are sampled, those that join it while sampling included.
    pub follow: Option<FollowCgroup>,
    /// A process never tracked (the profiler itself).
    pub excluded: Option<u32>,
    /// Where procfs is.
    pub proc_root: PathBuf,
}

impl ProcessTracker {
    /// Starts the tracker threads; the processes named in `parts.pids` are captured first, so
    /// their first samples are whole.
    pub fn start(parts: TrackerParts) -> std::io::Result<Self> {
        let table: ProcessTable = Arc::default();
        let stats: Arc<Mutex<TrackerStats>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (initial_done, initial_capture) = std::sync::mpsc::channel();
        let (tables, table_work) = std::sync::mpsc::channel::<TableWork>();
        // Large modules' tables are built on a thread of their own, so that describing every
        // other process does not wait for them.
        let (modules, to_build) = std::sync::mpsc::channel::<Arc<crate::procmaps::ModuleFile>>();
        let built = tables.clone();
        std::thread::Builder::new()
            .name("fleetprof-table-builder".into())
            .spawn(move || {
                // Ends when the loader (in the table thread) is dropped.
                for module in to_build {
                    // A file that crashes the parser loses its table, not the profiler's tables.
                    let table = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        crate::unwind::build_table(&module)
                    }))
                    .unwrap_or_else(|_| Err("the table builder panicked on this file".to_owned()));
                    if built
                        .send(TableWork::Built((module.key.clone(), table)))
                        .is_err()
                    {
                        break;
                    }
                }
            })?;
        let mut loader = parts.loader.build_in_background(modules);
        let table_stats = stats.clone();
        let table_stop = stop.clone();
        let tables_handle = std::thread::Builder::new()
            .name("fleetprof-tables".into())
            .spawn(move || {
                // Ends at stop (the queue is dropped), woken by a last message.
                let mut queue = TableQueue::default();
                let mut described = Described::default();
                loop {
                    if queue.is_empty() {
                        match table_work.recv() {
                            Ok(work) => described.accept(work, &mut queue, &mut loader),
                            Err(_) => break,
                        }
                    }
                    while let Ok(work) = table_work.try_recv() {
                        described.accept(work, &mut queue, &mut loader);
                    }
                    if table_stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Some(work) = queue.pop(|s| loader.unbuilt_code_bytes(&s.mappings)) else {
                        continue;
                    };
                    match work {
                        TableWork::Load(pid, snapshot) => {
                            if let Err(err) = loader.load_process(pid, &snapshot.mappings) {
                                tracing::warn!(pid, %err, "could not describe the process to the unwinder");
                            }
                            described.loaded(pid, snapshot, &mut loader);
                        }
                        TableWork::Unload(pid) => {
                            loader.unload_process(pid);
                            described.unloaded(pid);
                        }
                        // Processes described before are not whole until their tables are in.
                        TableWork::Notify(done) if loader.is_building() => {
                            described.parked.push(done);
                        }
                        TableWork::Notify(done) => {
                            let _ = done.send(());
                        }
                        TableWork::Active(_) | TableWork::Built(_) => {}
                    }
                    table_stats.lock().unwrap_or_else(|e| e.into_inner()).unwind = loader.stats();
                }
            })?;
        let parts = WorkerParts {
            events: parts.events,
            inspector: parts.inspector,
            pids: parts.pids,
            follow: parts.follow,
            excluded: parts.excluded,
            proc_root: parts.proc_root,
        };
        let mut worker = Worker {
            tables: tables.clone(),
            initial_done: Some(initial_done),
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
            initial_capture,
            table,
            stats,
            stop,
            tables: Some(tables),
            handle: Some(handle),
            tables_handle: Some(tables_handle),
        })
    }

    /// Tells the unwinder's table thread which processes were just sampled: tables of processes
    /// idle for long may make room for theirs (see [`crate::unwind`]).
    pub fn note_active(&self, pids: Vec<u32>) {
        if let Some(tables) = &self.tables {
            let _ = tables.send(TableWork::Active(pids));
        }
    }

    /// Blocks until the processes running at start have been captured and their unwind tables
    /// loaded.
    pub fn wait_for_initial_capture(&self) {
        // An error means the thread is gone: nothing more to wait for.
        let _ = self.initial_capture.recv();
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
        // The builder thread holds a sender too: a last message wakes the table thread, which
        // sees the stop and ends (dropping the loader ends the builder thread in turn).
        if let Some(tables) = self.tables.take() {
            let _ = tables.send(TableWork::Active(Vec::new()));
        }
        if let Some(handle) = self.tables_handle.take() {
            let _ = handle.join();
        }
    }
}

/// What the tracker thread itself needs of [`TrackerParts`].
struct WorkerParts {
    events: RingBuf<MapData>,
    inspector: ProcessInspector,
    pids: Vec<u32>,
    follow: Option<FollowCgroup>,
    excluded: Option<u32>,
    proc_root: PathBuf,
}

struct Worker {
    tables: std::sync::mpsc::Sender<TableWork>,
    initial_done: Option<std::sync::mpsc::Sender<()>>,
    parts: WorkerParts,
    modules: ModuleCache,
    table: ProcessTable,
    stats: Arc<Mutex<TrackerStats>>,
    last_capture: HashMap<u32, Recapture>,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        // The processes running at start are captured a few at a time between rounds of events:
        // on a busy host that takes seconds, and a process that appears meanwhile (and may live
        // only a moment) must not wait for it.
        let mut backlog: std::collections::VecDeque<u32> = self.initial_pids().into();
        // A followed cgroup's members at the start are among the initial pids: they pass the
        // kernel's filter from the first sample.
        let initial = self.parts.pids.clone();
        self.admit(&initial);
        let mut followed_at = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if self.parts.follow.is_some() && followed_at.elapsed() >= FOLLOW_CGROUP_EVERY {
                followed_at = Instant::now();
                self.follow_cgroup();
            }
            if backlog.is_empty() {
                if let Some(done) = self.initial_done.take() {
                    let _ = self.tables.send(TableWork::Notify(done));
                }
            } else {
                let batch: Vec<u32> = backlog.drain(..backlog.len().min(INITIAL_BATCH)).collect();
                self.capture_all(&batch);
                self.publish_stats();
            }
            let mut pollfd = libc::pollfd {
                fd: self.parts.events.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let timeout = if backlog.is_empty() {
                POLL_TIMEOUT_MS
            } else {
                0
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pollfd, 1, timeout) };
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
            let mut to_capture = Vec::new();
            for (kind, pid) in wanted {
                if self.admitted_by_kernel(kind, pid) {
                    self.parts.pids.push(pid);
                    self.admit(&[pid]);
                }
                if !self.tracks(pid) {
                    continue;
                }
                match kind {
                    event_kind::EXIT => {
                        to_capture.retain(|&p| p != pid);
                        self.exited(pid);
                    }
                    event_kind::EXEC => {
                        let _ = self.tables.send(TableWork::Unload(pid));
                        self.parts.inspector.forget(pid);
                        self.last_capture.remove(&pid);
                        if seen.insert(pid) {
                            to_capture.push(pid);
                        }
                    }
                    _ => {
                        let recent = self
                            .last_capture
                            .get(&pid)
                            .is_some_and(|r| r.at.elapsed() < r.wait);
                        if !recent && seen.insert(pid) {
                            to_capture.push(pid);
                        }
                    }
                }
            }
            self.capture_all(&to_capture);
            self.purge_exited();
            self.publish_stats();
        }
    }

    /// Adds the processes that joined the followed cgroup since it was last read: sampled from
    /// now on, and captured at once (a forked worker maps what its parent did).
    fn follow_cgroup(&mut self) {
        let Some(follow) = &self.parts.follow else {
            return;
        };
        let Ok(members) = cgroup_members(&follow.procs) else {
            // The group is gone (its workload ended): nothing more will join it.
            return;
        };
        let joined: Vec<u32> = members
            .into_iter()
            .filter(|pid| !self.parts.pids.contains(pid) && Some(*pid) != self.parts.excluded)
            .collect();
        if joined.is_empty() {
            return;
        }
        self.parts.pids.extend(&joined);
        self.admit(&joined);
        self.capture_all(&joined);
    }

    /// Lets `pids` through the kernel's filter, when a cgroup is followed (named pids are put
    /// there when the sampler is loaded).
    fn admit(&mut self, pids: &[u32]) {
        let Some(follow) = &mut self.parts.follow else {
            return;
        };
        for pid in pids {
            if let Err(err) = follow.filter.insert(pid, 1, 0) {
                tracing::warn!(pid, %err, "cannot add a process of the followed cgroup to the pid filter");
            }
        }
    }

    /// Whether `pid` is a process of the followed cgroup the tracker has not seen join it yet,
    /// announced by its first samples: the kernel's filter, which checks the cgroup itself, let
    /// them through (exec and exit events come from every process, and prove nothing).
    fn admitted_by_kernel(&self, kind: u32, pid: u32) -> bool {
        self.parts.follow.is_some()
            && matches!(
                kind,
                event_kind::UNKNOWN_PROCESS | event_kind::UNKNOWN_MAPPING
            )
            && Some(pid) != self.parts.excluded
            && !self.parts.pids.contains(&pid)
    }

    fn tracks(&self, pid: u32) -> bool {
        Some(pid) != self.parts.excluded
            && ((self.parts.pids.is_empty() && self.parts.follow.is_none())
                || self.parts.pids.contains(&pid))
    }

    /// The processes captured before any sample: those named on the command line. On a whole
    /// host, processes are captured when first sampled instead: most of a host's processes are
    /// idle, and loading every one's tables up front would delay the busy ones by seconds.
    fn initial_pids(&self) -> Vec<u32> {
        self.parts.pids.clone()
    }

    /// Captures each process, then describes them all to the unwinder: naming a process only
    /// needs the fast first half, so a slow table never delays it.
    fn capture_all(&mut self, pids: &[u32]) {
        let captured: Vec<(u32, Arc<ProcessSnapshot>)> = pids
            .iter()
            .filter_map(|&pid| Some((pid, self.snapshot(pid)?)))
            .collect();
        for (pid, snapshot) in captured {
            let _ = self.tables.send(TableWork::Load(pid, snapshot));
        }
    }

    /// Reads and keeps what naming `pid` later needs: its mappings (files opened), identity and
    /// perf map.
    ///
    /// `None` when the process is gone, is a kernel thread, or maps exactly what its last capture
    /// found (then nothing new needs describing, and the next capture waits longer).
    fn snapshot(&mut self, pid: u32) -> Option<Arc<ProcessSnapshot>> {
        let (wait, layout) = self
            .last_capture
            .remove(&pid)
            .map_or((RECAPTURE_EVERY, Vec::new()), |r| (r.wait, r.layout));
        self.last_capture.insert(
            pid,
            Recapture {
                at: Instant::now(),
                wait,
                layout,
            },
        );
        let mappings = match self.modules.capture(&self.parts.proc_root, pid) {
            Ok(m) => m,
            Err(err) => {
                tracing::debug!(pid, %err, "process gone before it was captured");
                self.stats_mut().capture_failures += 1;
                return None;
            }
        };
        // Kernel threads have no mappings and nothing to unwind.
        if mappings.is_empty() {
            return None;
        }
        let layout: Vec<(u64, u64, u64)> = mappings
            .iter()
            .map(|m| (m.begin, m.end, m.offset))
            .collect();
        if let Some(r) = self.last_capture.get_mut(&pid) {
            if r.layout == layout {
                r.wait = (r.wait * 2).min(RECAPTURE_AT_MOST_EVERY);
                self.stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .unchanged_captures += 1;
                return None;
            }
            r.layout = layout;
        }
        let comm = std::fs::read_to_string(self.parts.proc_root.join(format!("{pid}/comm")))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        let info = self.parts.inspector.inspect(pid, &comm);
        let previous = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .cloned();
        let perf_map = PerfMapFile::open(&self.parts.proc_root, pid)
            .map(Arc::new)
            .or_else(|| previous.as_ref().and_then(|p| p.perf_map.clone()));
        if !mappings
            .iter()
            .any(|m| matches!(m.backing, Backing::File(_)))
        {
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
            .insert(pid, snapshot.clone());
        self.stats_mut().captures += 1;
        Some(snapshot)
    }

    fn exited(&mut self, pid: u32) {
        let _ = self.tables.send(TableWork::Unload(pid));
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
        let open_failures = self.modules.open_failures;
        self.stats_mut().open_failures = open_failures;
    }
}
