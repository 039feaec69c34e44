//! Loading `profiler-ebpf` into the kernel and attaching it to every CPU's `CPU_CLOCK`.
//!
//! [`Sampler::start`] checks privileges, loads the object embedded at build time, sizes the maps,
//! sets the filters and attaches one perf event per online CPU. The returned [`Sampler`] owns the
//! kernel objects: dropping it detaches everything. [`crate::sample`] drains it.

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        PerfEvent, ProgramError, RawTracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use profiler_ebpf::{
    ACTIVE_GENERATION_MAP, COUNTS_MAPS, DEFAULT_COUNTS_ENTRIES, DEFAULT_STACK_ENTRIES,
    DEFAULT_UNWIND_ROWS, EXCLUDED_TGID_GLOBAL, EXEC_PROGRAM_NAME, EXIT_PROGRAM_NAME,
    FILTER_BY_PID_GLOBAL, FOLLOW_CGROUP_ID_GLOBAL, FOLLOW_CGROUP_LEVEL_GLOBAL, MAPPINGS_MAP,
    PID_FILTER_MAP, PROCESS_EVENTS_MAP, PROCESS_INFO_MAP, PROGRAM_NAME, PROGRAMS_MAP,
    RECORD_PROGRAM_INDEX, RECORD_PROGRAM_NAME, STACKS_MAPS, STATS_MAP, UNWIND_PROGRAM_INDEX,
    UNWIND_PROGRAM_NAME, UNWIND_ROWS_MAP,
};

use crate::unwind::TableLoader;

/// The eBPF object built by `build.rs` (aya-build) from `profiler-ebpf`.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fleetprof-profiler-ebpf"));

/// The id the kernel gives the cgroup v2 directory `dir` (its inode number, what
/// `bpf_get_current_cgroup_id` returns) and its depth below the hierarchy's root, or `None` when
/// `dir` is not a directory of a cgroup v2 file system.
pub fn cgroup_v2_identity(dir: &std::path::Path) -> Option<(u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs(2) fills the zeroed struct; the path is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 || fs.f_type != CGROUP2_SUPER_MAGIC {
        return None;
    }
    let dir = std::fs::canonicalize(dir).ok()?;
    let meta = std::fs::metadata(&dir).ok()?;
    // The root is the last ancestor on the same file system.
    let level = dir
        .ancestors()
        .skip(1)
        .take_while(|a| std::fs::metadata(a).is_ok_and(|m| m.dev() == meta.dev()))
        .count();
    Some((meta.ino(), level as u32))
}

/// Default sampling frequency: 19 Hz, as Parca and the OpenTelemetry profiler use, so samples
/// do not run in lockstep with timers firing at round frequencies.
pub const DEFAULT_FREQUENCY_HZ: u32 = 19;

/// How to load and attach the sampler.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// Samples per second per CPU. Default [`DEFAULT_FREQUENCY_HZ`].
    pub frequency_hz: u32,
    /// Only sample these processes; empty means every process. Default: empty.
    pub pids: Vec<u32>,
    /// Also sample every process in this cgroup v2 directory (e.g.
    /// `/sys/fs/cgroup/system.slice/api.service`) or below it, followed while sampling: the
    /// kernel checks each sample's cgroup, so a worker forked into it later is sampled from its
    /// first tick. Default: none.
    pub cgroup: Option<std::path::PathBuf>,
    /// Sample the profiler's own process too. Default: false.
    pub include_self: bool,
    /// Distinct (thread, stacks) keys per generation. Default [`DEFAULT_COUNTS_ENTRIES`].
    pub counts_entries: u32,
    /// Distinct stacks per generation. Default [`DEFAULT_STACK_ENTRIES`].
    pub stack_entries: u32,
    /// Capacity of the unwind-row array shared by every loaded table (8 bytes a row, allocated
    /// up front). Default [`DEFAULT_UNWIND_ROWS`].
    pub unwind_rows: u32,
    /// How long a process goes unsampled before its unwind tables may be evicted to make room for
    /// a sampled process's. Default [`crate::unwind::DEFAULT_EVICT_IDLE_AFTER`] (30 s).
    pub unwind_evict_idle_after: std::time::Duration,
    /// Walk every stack by frame pointers, loading no unwind tables (to compare the two; stacks
    /// of code without frame pointers are cut). Default: false.
    pub frame_pointers_only: bool,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            frequency_hz: DEFAULT_FREQUENCY_HZ,
            pids: Vec::new(),
            cgroup: None,
            include_self: false,
            counts_entries: DEFAULT_COUNTS_ENTRIES,
            stack_entries: DEFAULT_STACK_ENTRIES,
            unwind_rows: DEFAULT_UNWIND_ROWS,
            unwind_evict_idle_after: crate::unwind::DEFAULT_EVICT_IDLE_AFTER,
            frame_pointers_only: false,
        }
    }
}

/// Why the sampler could not start.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The process lacks the privileges to load eBPF programs and open perf events.
    #[error(
        "fleetprof-profiler needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load its eBPF \
         program: run it with sudo, or grant them with `setcap cap_bpf,cap_perfmon+ep <path to fleetprof-profiler>`"
    )]
    MissingPrivileges,
    /// The binary was built with `AYA_BUILD_SKIP` and has no eBPF object.
    #[error(
        "this fleetprof-profiler binary was built without its eBPF object (AYA_BUILD_SKIP was set); \
         rebuild it with `cargo build --release -p fleetprof-profiler` after `cargo xtask setup`"
    )]
    MissingObject,
    /// The configuration is out of range.
    #[error("invalid sampler configuration: {0}")]
    InvalidConfig(String),
    /// The kernel refused the object or a map.
    #[error(
        "loading the eBPF object failed (is BTF at /sys/kernel/btf/vmlinux and eBPF enabled?): {0}"
    )]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("attaching the perf_event program to CPU {cpu} failed: {source}")]
    Attach {
        /// The CPU.
        cpu: u32,
        /// The kernel's answer.
        #[source]
        source: ProgramError,
    },
    /// Loading the program failed (verifier or permissions).
    #[error("loading the perf_event program failed: {0}")]
    Program(#[source] ProgramError),
    /// A map the object should contain is missing or has the wrong type.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// The map.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: MapError,
    },
    /// The process tracker thread could not start.
    #[error("starting the process tracker thread failed: {source}")]
    Tracker {
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The list of online CPUs could not be read.
    #[error("reading the online CPUs from {path} failed: {source}")]
    OnlineCpus {
        /// The file read.
        path: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// True when this process may load eBPF programs and open system-wide perf events: root, or
/// CAP_BPF (39) and CAP_PERFMON (38) in the effective set.
pub fn has_privileges() -> bool {
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    has(CAP_BPF) && has(CAP_PERFMON)
}

/// The loaded, attached sampler. Dropping it detaches the programs and frees the maps.
pub struct Sampler {
    pub(crate) ebpf: Ebpf,
    pub(crate) frequency_hz: u32,
    pub(crate) cpus: Vec<u32>,
    attached: bool,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("frequency_hz", &self.frequency_hz)
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// Loads the eBPF object, ready to [`Sampler::attach`].
    #[tracing::instrument(name = "Sampler.start", skip_all, fields(hz = config.frequency_hz))]
    pub fn start(config: &SamplerConfig) -> Result<Self, BpfError> {
        if !has_privileges() {
            return Err(BpfError::MissingPrivileges);
        }
        if EBPF_OBJECT.is_empty() {
            return Err(BpfError::MissingObject);
        }
        if config.frequency_hz == 0 || config.frequency_hz > 10_000 {
            return Err(BpfError::InvalidConfig(format!(
                "frequency {} Hz is outside 1..=10000",
                config.frequency_hz
            )));
        }
        if config.counts_entries == 0 || config.stack_entries == 0 || config.unwind_rows == 0 {
            return Err(BpfError::InvalidConfig(
                "map sizes must be at least 1".into(),
            ));
        }
        raise_memlock_limit();

        let excluded_tgid: u32 = if config.include_self {
            0
        } else {
            std::process::id()
        };
        let filter_by_pid: u8 = u8::from(!config.pids.is_empty() || config.cgroup.is_some());
        // Without an id (not a cgroup v2 directory) the tracker's polling of `cgroup.procs` alone
        // admits the cgroup's processes.
        let (follow_cgroup_id, follow_cgroup_level) = config
            .cgroup
            .as_deref()
            .and_then(cgroup_v2_identity)
            .unwrap_or((0, 0));
        let mut loader = EbpfLoader::new();
        loader
            .override_global(FILTER_BY_PID_GLOBAL, &filter_by_pid, true)
            .override_global(EXCLUDED_TGID_GLOBAL, &excluded_tgid, true)
            .override_global(FOLLOW_CGROUP_ID_GLOBAL, &follow_cgroup_id, true)
            .override_global(FOLLOW_CGROUP_LEVEL_GLOBAL, &follow_cgroup_level, true);
        for name in COUNTS_MAPS {
            loader.map_max_entries(name, config.counts_entries);
        }
        for name in STACKS_MAPS {
            loader.map_max_entries(name, config.stack_entries);
        }
        loader.map_max_entries(UNWIND_ROWS_MAP, config.unwind_rows);
        let mut ebpf = loader.load(EBPF_OBJECT)?;

        if !config.pids.is_empty() {
            let map = ebpf.map_mut(PID_FILTER_MAP).ok_or(BpfError::Map {
                name: PID_FILTER_MAP,
                source: MapError::InvalidName {
                    name: PID_FILTER_MAP.into(),
                },
            })?;
            let mut filter: HashMap<&mut MapData, u32, u8> =
                HashMap::try_from(map).map_err(|source| BpfError::Map {
                    name: PID_FILTER_MAP,
                    source,
                })?;
            for pid in &config.pids {
                filter.insert(pid, 1, 0).map_err(|source| BpfError::Map {
                    name: PID_FILTER_MAP,
                    source,
                })?;
            }
        }

        // The tail-called programs must be in the program array before the first sample.
        for (name, index) in [
            (UNWIND_PROGRAM_NAME, UNWIND_PROGRAM_INDEX),
            (RECORD_PROGRAM_NAME, RECORD_PROGRAM_INDEX),
        ] {
            let program: &mut PerfEvent = ebpf
                .program_mut(name)
                .ok_or(BpfError::Program(ProgramError::NotLoaded))?
                .try_into()
                .map_err(BpfError::Program)?;
            program.load().map_err(load_error)?;
            let fd = program
                .fd()
                .map_err(BpfError::Program)?
                .try_clone()
                .map_err(|e| BpfError::Program(ProgramError::IOError(e)))?;
            let map = ebpf
                .map_mut(PROGRAMS_MAP)
                .ok_or_else(|| missing_map(PROGRAMS_MAP))?;
            let mut programs: ProgramArray<&mut MapData> =
                ProgramArray::try_from(map).map_err(|source| BpfError::Map {
                    name: PROGRAMS_MAP,
                    source,
                })?;
            programs
                .set(index, &fd, 0)
                .map_err(|source| BpfError::Map {
                    name: PROGRAMS_MAP,
                    source,
                })?;
        }
        for (name, event) in [
            (EXEC_PROGRAM_NAME, "sched_process_exec"),
            (EXIT_PROGRAM_NAME, "sched_process_exit"),
        ] {
            let tracepoint: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(BpfError::Program(ProgramError::NotLoaded))?
                .try_into()
                .map_err(BpfError::Program)?;
            tracepoint.load().map_err(load_error)?;
            tracepoint.attach(event).map_err(BpfError::Program)?;
        }

        let cpus = online_cpus().map_err(|(path, source)| BpfError::OnlineCpus { path, source })?;
        let program: &mut PerfEvent = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(BpfError::Program(ProgramError::NotLoaded))?
            .try_into()
            .map_err(BpfError::Program)?;
        program.load().map_err(load_error)?;
        Ok(Self {
            ebpf,
            frequency_hz: config.frequency_hz,
            cpus,
            attached: false,
        })
    }

    /// Attaches the sampler to every online CPU: sampling starts. Separate from
    /// [`Sampler::start`] so that the unwinder can be told about the processes already running
    /// before their first samples are taken.
    pub fn attach(&mut self) -> Result<(), BpfError> {
        if self.attached {
            return Ok(());
        }
        let program: &mut PerfEvent = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(BpfError::Program(ProgramError::NotLoaded))?
            .try_into()
            .map_err(BpfError::Program)?;
        for &cpu in &self.cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(u64::from(self.frequency_hz)),
                    true,
                )
                .map_err(|source| BpfError::Attach { cpu, source })?;
        }
        self.attached = true;
        tracing::info!(
            cpus = self.cpus.len(),
            hz = self.frequency_hz,
            "sampler attached"
        );
        Ok(())
    }

    /// Sampling frequency, Hz.
    pub fn frequency_hz(&self) -> u32 {
        self.frequency_hz
    }

    /// The CPUs sampled.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus
    }

    pub(crate) fn active_generation(&mut self) -> Result<Array<&mut MapData, u32>, BpfError> {
        let map = self
            .ebpf
            .map_mut(ACTIVE_GENERATION_MAP)
            .ok_or(BpfError::Map {
                name: ACTIVE_GENERATION_MAP,
                source: MapError::InvalidName {
                    name: ACTIVE_GENERATION_MAP.into(),
                },
            })?;
        Array::try_from(map).map_err(|source| BpfError::Map {
            name: ACTIVE_GENERATION_MAP,
            source,
        })
    }

    pub(crate) fn stats(&self) -> Result<PerCpuArray<&MapData, u64>, BpfError> {
        let map = self.ebpf.map(STATS_MAP).ok_or(BpfError::Map {
            name: STATS_MAP,
            source: MapError::InvalidName {
                name: STATS_MAP.into(),
            },
        })?;
        PerCpuArray::try_from(map).map_err(|source| BpfError::Map {
            name: STATS_MAP,
            source,
        })
    }

    /// Ids of the loaded program (for `bpftool prog show id N` and run-time statistics).
    pub fn program_info(&self) -> Option<aya::programs::ProgramInfo> {
        let program: &PerfEvent = self.ebpf.program(PROGRAM_NAME)?.try_into().ok()?;
        program.info().ok()
    }

    /// Run time and run count of the sampling and unwinding programs together (the kernel
    /// counts them when `kernel.bpf_stats_enabled=1`).
    pub fn run_stats(&self) -> (std::time::Duration, u64) {
        [PROGRAM_NAME, UNWIND_PROGRAM_NAME, RECORD_PROGRAM_NAME]
            .into_iter()
            .filter_map(|name| {
                let program: &PerfEvent = self.ebpf.program(name)?.try_into().ok()?;
                program.info().ok()
            })
            .fold((std::time::Duration::ZERO, 0), |(t, n), info| {
                (t + info.run_time(), n + info.run_count())
            })
    }

    /// Takes the map of the processes sampled when filtering by pid, for the tracker to add the
    /// processes that join a followed cgroup.
    pub(crate) fn take_pid_filter(&mut self) -> Result<HashMap<MapData, u32, u8>, BpfError> {
        let map = self
            .ebpf
            .take_map(PID_FILTER_MAP)
            .ok_or_else(|| missing_map(PID_FILTER_MAP))?;
        HashMap::try_from(map).map_err(|source| BpfError::Map {
            name: PID_FILTER_MAP,
            source,
        })
    }

    /// Takes the maps the process tracker drives: the event ring buffer and the unwinding
    /// maps. Returns `None` when they were taken already.
    pub(crate) fn take_tracker_maps(
        &mut self,
    ) -> Result<(RingBuf<MapData>, TableLoader), BpfError> {
        let mut take = |name: &'static str| -> Result<Map, BpfError> {
            self.ebpf.take_map(name).ok_or_else(|| missing_map(name))
        };
        let wrap = |name: &'static str| move |source| BpfError::Map { name, source };
        let events =
            RingBuf::try_from(take(PROCESS_EVENTS_MAP)?).map_err(wrap(PROCESS_EVENTS_MAP))?;
        let rows = Array::try_from(take(UNWIND_ROWS_MAP)?).map_err(wrap(UNWIND_ROWS_MAP))?;
        let processes =
            HashMap::try_from(take(PROCESS_INFO_MAP)?).map_err(wrap(PROCESS_INFO_MAP))?;
        let mappings = HashMap::try_from(take(MAPPINGS_MAP)?).map_err(wrap(MAPPINGS_MAP))?;
        let loader = TableLoader::new(rows, processes, mappings).map_err(|e| BpfError::Map {
            name: e.map,
            source: e.source,
        })?;
        Ok((events, loader))
    }
}

fn missing_map(name: &'static str) -> BpfError {
    BpfError::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    }
}

/// A program load error, with EPERM said as missing privileges.
fn load_error(e: ProgramError) -> BpfError {
    match e {
        ProgramError::LoadError { ref io_error, .. }
            if io_error.raw_os_error() == Some(libc::EPERM) =>
        {
            BpfError::MissingPrivileges
        }
        e => BpfError::Program(e),
    }
}

/// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK; lift it so large maps load there too.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass; failure only matters on old kernels, where the
    // map creation error that follows says what went wrong.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether the tests run as root (those that load the sampler need it).
#[cfg(test)]
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::cgroup_v2_identity;
    use std::path::{Path, PathBuf};

    /// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
    /// on a hybrid host).
    fn cgroup2_mount() -> PathBuf {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        mounts
            .lines()
            .find_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
            })
            .expect("a cgroup v2 hierarchy is mounted on the hosts fleetprof supports")
    }

    #[test]
    fn cgroup_v2_directories_have_an_id_and_a_depth() {
        let root = cgroup2_mount();
        // The root cgroup's id is the kernfs root's inode, 1.
        assert_eq!(cgroup_v2_identity(&root), Some((1, 0)));
        if super::is_root() {
            let child = root.join(format!("fleetprof-unit-{}", std::process::id()));
            std::fs::create_dir(&child).unwrap();
            let identity = cgroup_v2_identity(&child);
            let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&child).unwrap());
            std::fs::remove_dir(&child).unwrap();
            assert_eq!(identity, Some((ino, 1)));
        }
        assert_eq!(cgroup_v2_identity(Path::new("/tmp")), None);
    }
}
