//! Energy: RAPL counters read from powercap sysfs or the perf `power` PMU, and attribution of a
//! window's energy to processes the way Kepler does it.
//!
//! A window opens with [`EnergyMeter::read`] and closes with another read; [`EnergyReading::since`]
//! turns the pair into joules per RAPL domain (wrap-around at `max_energy_range_uj` handled; a
//! zone that disappeared is left out and named) plus the CPUs' busy and total time from
//! `/proc/stat`, and [`attribute`] charges processes only the active part (measured × busy
//! ratio), each by its CPU time, and reports the idle rest apart. The report names that method
//! and keeps its inputs, because the split is an estimate and not a measurement.
//!
//! Hosts without RAPL are normal (virtual machines hide it): [`EnergyMeter::detect`] then fails with
//! an [`EnergyError`] saying what was looked for, and `EnergyReport::from(&error)` is
//! [`EnergyReport::Unavailable`] with that reason. Zeros are never reported as if measured.
//!
//! ```no_run
//! use std::time::Duration;
//! use fleetprof_profiler::energy::{EnergyMeter, EnergyReport};
//!
//! let report = match EnergyMeter::detect() {
//!     Err(why) => EnergyReport::from(&why),
//!     Ok(meter) => match meter.read() {
//!         Err(why) => EnergyReport::from(&why),
//!         Ok(start) => {
//!             std::thread::sleep(Duration::from_secs(10)); // sample the window here
//!             let samples_per_pid = [(1234, 900), (5678, 100)];
//!             meter.finish(&start, &samples_per_pid, 19)
//!         }
//!     },
//! };
//! match &report {
//!     EnergyReport::Measured { .. } => println!("{:.1} W", report.watts().unwrap_or(0.0)),
//!     EnergyReport::Unavailable { reason } => println!("energy unavailable: {reason}"),
//! }
//! ```

mod attribute;
mod cpu;
mod perf_power;
mod powercap;

use std::error::Error as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use attribute::{METHOD, attribute, joules_for};
pub use cpu::CpuTime;

/// A window's energy, or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EnergyReport {
    /// The host has no usable RAPL source; the reason says what was looked for.
    Unavailable {
        /// Why, in words a person can act on.
        reason: String,
    },
    /// Energy measured by RAPL over the window and attributed to processes.
    Measured {
        /// Where the counters came from: `powercap` or `perf power PMU`.
        source: String,
        /// Length of the measured interval, seconds.
        interval_secs: f64,
        /// Joules per RAPL domain (`package-0`, `package-0/core`, `package-0/dram`, `psys`, ...).
        /// Domains nest (core is part of its package), so do not add them all up: the `basis`
        /// ones are what was split.
        domains: Vec<DomainEnergy>,
        /// The basis domains' joules: `psys` if measured, else packages plus DRAM.
        measured_joules: f64,
        /// The active part of `measured_joules` (× busy ratio): what is split among processes.
        attributed_joules: f64,
        /// The idle part of `measured_joules`, the host's, charged to no process.
        idle_joules: f64,
        /// Busy CPU time ÷ all CPU time over the window, from `/proc/stat`.
        busy_ratio: f64,
        /// Busy CPU-seconds (all CPUs) over the window, from `/proc/stat`.
        busy_cpu_secs: f64,
        /// All CPU-seconds (about interval × CPUs) over the window, from `/proc/stat`.
        total_cpu_secs: f64,
        /// Each sampled process's share of `attributed_joules`, by pid.
        processes: Vec<ProcessEnergy>,
        /// How `processes` was derived, naming the domains summed (see [`METHOD`]).
        method: String,
    },
}

impl EnergyReport {
    /// A report that says energy is unavailable, and why.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
        }
    }

    /// The joules split among processes, if measured.
    pub fn attributed_joules(&self) -> Option<f64> {
        match self {
            Self::Measured {
                attributed_joules, ..
            } => Some(*attributed_joules),
            Self::Unavailable { .. } => None,
        }
    }

    /// Mean power over the interval of the attributed joules, if measured and the interval is
    /// not empty.
    pub fn watts(&self) -> Option<f64> {
        match self {
            Self::Measured {
                attributed_joules,
                interval_secs,
                ..
            } if *interval_secs > 0.0 => Some(attributed_joules / interval_secs),
            _ => None,
        }
    }

    /// The joules charged to `pid`, if measured and the process was sampled.
    pub fn process_joules(&self, pid: u32) -> Option<f64> {
        match self {
            Self::Measured { processes, .. } => {
                processes.iter().find(|p| p.pid == pid).map(|p| p.joules)
            }
            Self::Unavailable { .. } => None,
        }
    }
}

impl From<&EnergyError> for EnergyReport {
    /// The error and its causes, as one sentence, become the reason.
    fn from(error: &EnergyError) -> Self {
        let mut reason = error.to_string();
        let mut cause = error.source();
        while let Some(e) = cause {
            reason.push_str(": ");
            reason.push_str(&e.to_string());
            cause = e.source();
        }
        Self::Unavailable { reason }
    }
}

/// Energy of one RAPL domain over an interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainEnergy {
    /// Domain name: `package-N`, `package-N/core`, `package-N/uncore`, `package-N/dram`, `psys`.
    pub domain: String,
    /// Joules over the interval.
    pub joules: f64,
    /// Whether this domain is part of what was split (core and uncore, inside their package,
    /// are not).
    pub basis: bool,
    /// The active part (joules × busy ratio) when `basis`, else 0.
    pub active_joules: f64,
    /// The idle part when `basis`, else 0.
    pub idle_joules: f64,
}

impl DomainEnergy {
    /// A domain's measured joules, not yet split into active and idle.
    pub fn measured(domain: impl Into<String>, joules: f64) -> Self {
        Self {
            domain: domain.into(),
            joules,
            basis: false,
            active_joules: 0.0,
            idle_joules: 0.0,
        }
    }
}

/// Energy charged to one process over an interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessEnergy {
    /// Process id.
    pub pid: u32,
    /// The process's CPU time in the window: its samples ÷ the sampling frequency.
    pub cpu_secs: f64,
    /// Joules charged, by the report's method (all basis domains).
    pub joules: f64,
    /// The part of `joules` that is DRAM energy (0 where DRAM is not measured apart).
    pub dram_joules: f64,
}

/// Why energy cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EnergyError {
    /// The host has neither powercap RAPL zones nor the perf `power` PMU.
    #[error(
        "no RAPL source: {} has no intel-rapl or amd-rapl zones and the perf 'power' PMU ({}) is absent \
         (virtual machines usually hide RAPL; energy can be measured on bare metal)",
        powercap_dir.display(),
        pmu_dir.display()
    )]
    NoSource {
        /// The powercap directory looked in.
        powercap_dir: PathBuf,
        /// The PMU directory looked for.
        pmu_dir: PathBuf,
    },
    /// RAPL zones or the PMU exist, but none has a counter this module can use.
    #[error(
        "{} exists but has no usable energy counter (energy_uj with max_energy_range_uj, \
         or a perf energy event in Joules)",
        dir.display()
    )]
    NoCounters {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A counter exists but this process may not read it.
    #[error(
        "cannot read {}: permission denied (RAPL energy counters are root-only since CVE-2020-8694; \
         run the profiler as root or make energy_uj readable)",
        path.display()
    )]
    PermissionDenied {
        /// The file that could not be read.
        path: PathBuf,
    },
    /// A sysfs file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A sysfs file did not hold what the kernel documents.
    #[error("unexpected contents in {}: {contents:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held, trimmed.
        contents: String,
    },
    /// A powercap directory was given explicitly (`--powercap-dir`) but holds no RAPL zones.
    #[error(
        "{} has no intel-rapl or amd-rapl zones (check --powercap-dir / powercap_dir)",
        dir.display()
    )]
    NoZones {
        /// The directory given.
        dir: PathBuf,
    },
    /// Every counter the meter found has disappeared (zones removed, e.g. a driver unloaded).
    #[error("every RAPL counter stopped: {}", domains.join(", "))]
    AllStopped {
        /// The domains whose counters are gone.
        domains: Vec<String>,
    },
    /// The perf `power` PMU exists but an event could not be opened.
    #[error(
        "cannot open perf event power/{event}/ on CPU {cpu} (system-wide power events need root, \
         or CAP_PERFMON with kernel.perf_event_paranoid <= 0)"
    )]
    PerfOpen {
        /// The event, e.g. `energy-pkg`.
        event: String,
        /// The CPU it was opened on.
        cpu: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An open perf counter could not be read.
    #[error("cannot read the perf counter of RAPL domain {domain}")]
    PerfRead {
        /// The domain.
        domain: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What a counter measures and how to turn its raw values into joules.
#[derive(Debug)]
struct DomainInfo {
    name: String,
    joules_per_unit: f64,
    /// The raw value at which the counter wraps to zero; `None` for 64-bit counters.
    wrap_at: Option<u64>,
}

#[derive(Debug)]
enum Counters {
    Powercap(Vec<powercap::Zone>),
    Perf(Vec<perf_power::Counter>),
}

/// Reads the host's RAPL energy counters (and the CPU time that splits them).
#[derive(Debug)]
pub struct EnergyMeter {
    counters: Counters,
    domains: Arc<[DomainInfo]>,
    proc_stat: PathBuf,
}

/// Where the CPU time comes from unless told otherwise.
const PROC_STAT: &str = "/proc/stat";

impl EnergyMeter {
    /// Finds the host's RAPL source under `/sys`; see [`EnergyMeter::detect_at`].
    pub fn detect() -> Result<Self, EnergyError> {
        Self::detect_at(Path::new("/sys"))
    }

    /// With `powercap_dir` (`--powercap-dir`, `powercap_dir` in the config): only the powercap
    /// zones there (for tests with a fixture tree, and hosts that mount sysfs elsewhere);
    /// without it, [`EnergyMeter::detect`].
    pub fn detect_with(powercap_dir: Option<&Path>) -> Result<Self, EnergyError> {
        let Some(dir) = powercap_dir else {
            return Self::detect();
        };
        match powercap::detect(dir)? {
            Some(zones) => {
                let domains = zones.iter().map(|z| clone_info(&z.info)).collect();
                Self::new(Counters::Powercap(zones), domains)
            }
            None => Err(EnergyError::NoZones {
                dir: dir.to_owned(),
            }),
        }
    }

    /// Reads CPU time from `path` (a `/proc/stat`-formatted file) instead of `/proc/stat`.
    pub fn with_proc_stat(mut self, path: impl Into<PathBuf>) -> Self {
        self.proc_stat = path.into();
        self
    }

    /// Finds a RAPL source under `sysfs_root`: powercap zones (`class/powercap`) first, else the
    /// perf `power` PMU (`bus/event_source/devices/power`), opened on one CPU per package.
    ///
    /// Every counter is read once, so a counter this process may not read fails here rather
    /// than at the first window. If powercap fails and the PMU is absent, powercap's error is
    /// returned, being the more specific.
    pub fn detect_at(sysfs_root: &Path) -> Result<Self, EnergyError> {
        let powercap_dir = sysfs_root.join("class/powercap");
        let powercap_error = match powercap::detect(&powercap_dir) {
            Ok(Some(zones)) => {
                let domains = zones.iter().map(|z| clone_info(&z.info)).collect();
                return Self::new(Counters::Powercap(zones), domains);
            }
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let perf = perf_power::describe(sysfs_root)
            .and_then(|pmu| pmu.map(|pmu| perf_power::open(&pmu)).transpose());
        match (perf, powercap_error) {
            (Ok(Some(counters)), _) => {
                let domains = counters.iter().map(|c| clone_info(&c.info)).collect();
                Self::new(Counters::Perf(counters), domains)
            }
            (Ok(None), Some(e)) => Err(e),
            (Ok(None), None) => Err(EnergyError::NoSource {
                powercap_dir,
                pmu_dir: sysfs_root.join("bus/event_source/devices/power"),
            }),
            (Err(perf), powercap_error) => Err(powercap_error.unwrap_or(perf)),
        }
    }

    fn new(counters: Counters, domains: Vec<DomainInfo>) -> Result<Self, EnergyError> {
        let meter = Self {
            counters,
            domains: domains.into(),
            proc_stat: PathBuf::from(PROC_STAT),
        };
        meter.read()?;
        Ok(meter)
    }

    /// Where the counters come from: `powercap` or `perf power PMU`.
    pub fn source(&self) -> &'static str {
        match self.counters {
            Counters::Powercap(_) => "powercap",
            Counters::Perf(_) => "perf power PMU",
        }
    }

    /// The domains measured, in reading order.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(|d| d.name.as_str())
    }

    /// Reads every counter and the CPU time now. A powercap zone whose `energy_uj` has gone
    /// (zone removed) reads as missing, and windows leave it out; when every one has gone the
    /// read fails with [`EnergyError::AllStopped`].
    pub fn read(&self) -> Result<EnergyReading, EnergyError> {
        let raw: Vec<Option<u64>> = match &self.counters {
            Counters::Powercap(zones) => zones
                .iter()
                .map(powercap::read_if_present)
                .collect::<Result<_, _>>()?,
            Counters::Perf(counters) => counters
                .iter()
                .map(|c| perf_power::read_counter(c).map(Some))
                .collect::<Result<_, _>>()?,
        };
        if raw.iter().all(Option::is_none) {
            return Err(EnergyError::AllStopped {
                domains: self.domains.iter().map(|d| d.name.clone()).collect(),
            });
        }
        Ok(EnergyReading {
            at: Instant::now(),
            source: self.source(),
            domains: Arc::clone(&self.domains),
            raw,
            cpu: cpu::read(&self.proc_stat)?,
        })
    }

    /// Closes a window opened with `start`: reads the counters and attributes the energy since
    /// `start` by `samples_per_pid`, taken at `frequency_hz` (see [`attribute`]). A failed read
    /// is reported as [`EnergyReport::Unavailable`], so the caller can carry on.
    pub fn finish(
        &self,
        start: &EnergyReading,
        samples_per_pid: &[(u32, u64)],
        frequency_hz: u32,
    ) -> EnergyReport {
        match self.read() {
            Ok(end) => attribute(&end.since(start), samples_per_pid, frequency_hz),
            Err(e) => EnergyReport::from(&e),
        }
    }
}

fn clone_info(info: &DomainInfo) -> DomainInfo {
    DomainInfo {
        name: info.name.clone(),
        joules_per_unit: info.joules_per_unit,
        wrap_at: info.wrap_at,
    }
}

/// The counters' values at one instant, from [`EnergyMeter::read`].
#[derive(Clone, Debug)]
pub struct EnergyReading {
    at: Instant,
    source: &'static str,
    domains: Arc<[DomainInfo]>,
    /// One value per domain; `None` where the counter had disappeared.
    raw: Vec<Option<u64>>,
    cpu: cpu::CpuTicks,
}

impl EnergyReading {
    /// Joules per domain and CPU time between `earlier` and this reading, which must come from
    /// the same meter.
    ///
    /// A counter that went backwards wrapped once: its delta is `max - earlier + now`. Windows
    /// must be shorter than one wrap period (tens of minutes at hundreds of watts for powercap).
    /// A counter missing at either end stopped (its zone went away): it is left out of the
    /// domains and named in `stopped`, never counted as zero.
    pub fn since(&self, earlier: &EnergyReading) -> EnergyInterval {
        debug_assert!(
            Arc::ptr_eq(&self.domains, &earlier.domains),
            "readings from different meters"
        );
        let mut domains = Vec::new();
        let mut stopped = Vec::new();
        for (info, (before, now)) in self.domains.iter().zip(earlier.raw.iter().zip(&self.raw)) {
            match (before, now) {
                (Some(before), Some(now)) => domains.push(DomainEnergy::measured(
                    info.name.clone(),
                    delta(*before, *now, info.wrap_at) as f64 * info.joules_per_unit,
                )),
                _ => stopped.push(info.name.clone()),
            }
        }
        EnergyInterval {
            source: self.source.to_owned(),
            secs: self.at.saturating_duration_since(earlier.at).as_secs_f64(),
            domains,
            cpu: self.cpu.since(&earlier.cpu),
            stopped,
        }
    }
}

/// The raw increase of a counter from `before` to `now`.
fn delta(before: u64, now: u64, wrap_at: Option<u64>) -> u64 {
    match wrap_at {
        _ if now >= before => now - before,
        Some(max) => max.saturating_sub(before).saturating_add(now),
        None => now.wrapping_sub(before),
    }
}

/// Energy per domain over an interval, before attribution.
#[derive(Clone, Debug, PartialEq)]
pub struct EnergyInterval {
    /// Where the counters came from.
    pub source: String,
    /// Length of the interval, seconds.
    pub secs: f64,
    /// Joules per domain (not yet split: `basis`, `active_joules`, `idle_joules` unset).
    pub domains: Vec<DomainEnergy>,
    /// The CPUs' busy and total time over the interval.
    pub cpu: CpuTime,
    /// Domains whose counters stopped (zone removed) during the interval, left out of `domains`.
    pub stopped: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Lays out one powercap zone as `/sys/class/powercap/<dir>` does.
    fn zone(root: &Path, dir: &str, name: &str, energy_uj: Option<u64>, max: Option<u64>) {
        let d = root.join("class/powercap").join(dir);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("name"), format!("{name}\n")).unwrap();
        if let Some(e) = energy_uj {
            fs::write(d.join("energy_uj"), format!("{e}\n")).unwrap();
        }
        if let Some(m) = max {
            fs::write(d.join("max_energy_range_uj"), format!("{m}\n")).unwrap();
        }
    }

    fn set_energy(root: &Path, dir: &str, energy_uj: u64) {
        fs::write(
            root.join("class/powercap").join(dir).join("energy_uj"),
            format!("{energy_uj}\n"),
        )
        .unwrap();
    }

    const MAX: u64 = 262_143_328_850;

    /// Writes `root/stat` as `/proc/stat` would with `busy` and `idle` ticks (USER_HZ, 100 here
    /// and almost everywhere) on the aggregate line.
    fn cpu_stat(root: &Path, busy: u64, idle: u64) {
        fs::write(
            root.join("stat"),
            format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
        )
        .unwrap();
    }

    /// A meter on the fixture tree under `root`, its CPU time read from `root/stat` (which
    /// starts at zero).
    fn fixture_meter(root: &Path) -> EnergyMeter {
        cpu_stat(root, 0, 0);
        EnergyMeter::detect_at(root)
            .unwrap()
            .with_proc_stat(root.join("stat"))
    }

    fn ticks_per_second() -> u64 {
        // SAFETY: sysconf has no preconditions.
        u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap()
    }

    /// Looks up a domain's joules in an interval.
    fn joules(interval: &EnergyInterval, domain: &str) -> f64 {
        interval
            .domains
            .iter()
            .find(|d| d.domain == domain)
            .unwrap_or_else(|| panic!("no {domain}"))
            .joules
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// A single package with core, uncore, DRAM and psys is found, named and measured in joules.
    #[test]
    fn powercap_one_package_all_domains() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        // The control-type directory and the mmio duplicate must both be ignored.
        fs::create_dir_all(root.join("class/powercap/intel-rapl")).unwrap();
        zone(root, "intel-rapl-mmio:0", "package-0", Some(1), Some(MAX));
        zone(
            root,
            "intel-rapl:0",
            "package-0",
            Some(1_000_000),
            Some(MAX),
        );
        zone(root, "intel-rapl:0:0", "core", Some(2_000_000), Some(MAX));
        zone(root, "intel-rapl:0:1", "uncore", Some(3_000_000), Some(MAX));
        zone(root, "intel-rapl:0:2", "dram", Some(4_000_000), Some(MAX));
        zone(root, "intel-rapl:1", "psys", Some(5_000_000), Some(MAX));

        let meter = fixture_meter(root);
        assert_eq!(meter.source(), "powercap");
        assert_eq!(
            meter.domains().collect::<Vec<_>>(),
            [
                "package-0",
                "package-0/core",
                "package-0/uncore",
                "package-0/dram",
                "psys"
            ]
        );
        let start = meter.read().unwrap();
        set_energy(root, "intel-rapl:0", 11_000_000);
        set_energy(root, "intel-rapl:0:0", 8_000_000);
        set_energy(root, "intel-rapl:0:1", 3_500_000);
        set_energy(root, "intel-rapl:0:2", 6_000_000);
        set_energy(root, "intel-rapl:1", 20_000_000);
        let hz = ticks_per_second();
        // 4 busy CPU-s of 8.
        cpu_stat(root, 4 * hz, 4 * hz);
        let end = meter.read().unwrap();
        let interval = end.since(&start);
        assert!(close(interval.cpu.busy_secs, 4.0) && close(interval.cpu.total_secs, 8.0));
        assert!(close(joules(&interval, "package-0"), 10.0));
        assert!(close(joules(&interval, "package-0/core"), 6.0));
        assert!(close(joules(&interval, "package-0/uncore"), 0.5));
        assert!(close(joules(&interval, "package-0/dram"), 2.0));
        assert!(close(joules(&interval, "psys"), 15.0));
        assert!(interval.secs >= 0.0);

        // 3 and 1 samples at 1 Hz: 3 and 1 CPU-s of the 4 busy.
        let report = meter.finish(&start, &[(1, 3), (2, 1)], 1);
        let EnergyReport::Measured {
            source,
            measured_joules,
            attributed_joules,
            idle_joules,
            method,
            ..
        } = &report
        else {
            panic!("{report:?}")
        };
        assert_eq!(source, "powercap");
        assert!(close(*measured_joules, 15.0), "psys is the whole platform");
        assert!(close(*attributed_joules, 7.5) && close(*idle_joules, 7.5));
        assert!(method.starts_with("kepler-cpu-time"), "{method}");
        assert!(close(report.process_joules(1).unwrap(), 5.625));
    }

    /// Two packages: subzones are named after their own package, and both packages are split.
    #[test]
    fn powercap_two_packages() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "intel-rapl:0", "package-0", Some(0), Some(MAX));
        zone(root, "intel-rapl:0:0", "dram", Some(0), Some(MAX));
        zone(root, "intel-rapl:1", "package-1", Some(0), Some(MAX));
        zone(root, "intel-rapl:1:0", "dram", Some(0), Some(MAX));
        let meter = fixture_meter(root);
        assert_eq!(
            meter.domains().collect::<Vec<_>>(),
            ["package-0", "package-0/dram", "package-1", "package-1/dram"]
        );
        let start = meter.read().unwrap();
        set_energy(root, "intel-rapl:0", 30_000_000);
        set_energy(root, "intel-rapl:0:0", 3_000_000);
        set_energy(root, "intel-rapl:1", 20_000_000);
        set_energy(root, "intel-rapl:1:0", 7_000_000);
        let hz = ticks_per_second();
        cpu_stat(root, hz, 3 * hz);
        // 10 samples at 10 Hz: the 1 busy CPU-s of 4; active is a quarter of 60 J.
        let report = meter.finish(&start, &[(42, 10)], 10);
        assert!(close(report.attributed_joules().unwrap(), 15.0));
        assert!(close(report.process_joules(42).unwrap(), 15.0));
        let EnergyReport::Measured { processes, .. } = &report else {
            panic!()
        };
        assert!(close(processes[0].dram_joules, 2.5), "{processes:?}");
    }

    /// A counter that passed max_energy_range_uj wraps: delta = max - before + now.
    #[test]
    fn powercap_wraparound() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(
            root,
            "intel-rapl:0",
            "package-0",
            Some(MAX - 1_000_000),
            Some(MAX),
        );
        let meter = EnergyMeter::detect_at(root).unwrap();
        let start = meter.read().unwrap();
        set_energy(root, "intel-rapl:0", 2_500_000);
        let interval = meter.read().unwrap().since(&start);
        assert!(close(joules(&interval, "package-0"), 3.5), "{interval:?}");
    }

    /// The delta arithmetic: forward, wrapped at a range, and wrapped as a 64-bit perf count.
    #[test]
    fn delta_arithmetic() {
        assert_eq!(delta(10, 25, Some(100)), 15);
        assert_eq!(delta(90, 5, Some(100)), 15);
        assert_eq!(delta(u64::MAX - 4, 10, None), 15);
        assert_eq!(delta(7, 7, Some(100)), 0);
    }

    /// Missing domains: no DRAM zone, a zone without energy_uj and one without a range are skipped.
    #[test]
    fn powercap_missing_domains() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "intel-rapl:0", "package-0", Some(0), Some(MAX));
        zone(root, "intel-rapl:0:0", "core", None, Some(MAX));
        zone(root, "intel-rapl:0:1", "uncore", Some(0), None);
        let meter = fixture_meter(root);
        assert_eq!(meter.domains().collect::<Vec<_>>(), ["package-0"]);
        let start = meter.read().unwrap();
        set_energy(root, "intel-rapl:0", 9_000_000);
        cpu_stat(root, 10, 0);
        let report = meter.finish(&start, &[(5, 1)], 1);
        let EnergyReport::Measured {
            domains, method, ..
        } = &report
        else {
            panic!("{report:?}")
        };
        assert_eq!(domains.len(), 1);
        assert!(method.contains("(package-0)"), "{method}");
        assert!(close(report.attributed_joules().unwrap(), 9.0));
    }

    /// Zones present but none with a counter: an error naming the directory, not zeros.
    #[test]
    fn powercap_zones_without_counters() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "intel-rapl:0", "package-0", None, Some(MAX));
        let err = EnergyMeter::detect_at(root).unwrap_err();
        assert!(matches!(err, EnergyError::NoCounters { .. }), "{err:?}");
        let EnergyReport::Unavailable { reason } = EnergyReport::from(&err) else {
            panic!()
        };
        assert!(
            reason.contains("class/powercap exists but has no usable energy counter"),
            "{reason}"
        );
    }

    /// An energy_uj the process may not read (root-only on newer kernels) says so and how to fix it.
    #[test]
    fn powercap_unreadable_counter() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "intel-rapl:0", "package-0", None, Some(MAX));
        // A write-only sysctl refuses reads with EACCES even to root, which a chmod would not.
        let energy = root.join("class/powercap/intel-rapl:0/energy_uj");
        std::os::unix::fs::symlink("/proc/sys/vm/drop_caches", &energy).unwrap();
        let err = EnergyMeter::detect_at(root).unwrap_err();
        assert!(
            matches!(&err, EnergyError::PermissionDenied { path } if *path == energy),
            "{err:?}"
        );
        let EnergyReport::Unavailable { reason } = EnergyReport::from(&err) else {
            panic!()
        };
        assert!(
            reason.contains("permission denied") && reason.contains("root"),
            "{reason}"
        );
    }

    /// A counter that turns to garbage after detection makes that window Unavailable.
    #[test]
    fn powercap_counter_garbage_later() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "intel-rapl:0", "package-0", Some(5), Some(MAX));
        let meter = EnergyMeter::detect_at(root).unwrap();
        let start = meter.read().unwrap();
        fs::write(root.join("class/powercap/intel-rapl:0/energy_uj"), "oops\n").unwrap();
        let report = meter.finish(&start, &[(1, 1)], 19);
        let EnergyReport::Unavailable { reason } = &report else {
            panic!("{report:?}")
        };
        assert!(
            reason.contains("unexpected contents") && reason.contains("oops"),
            "{reason}"
        );
        assert_eq!(report.watts(), None);
    }

    /// The amd-rapl naming is read like intel-rapl.
    #[test]
    fn powercap_amd_naming() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "amd-rapl:0", "package-0", Some(0), Some(MAX));
        zone(root, "amd-rapl:0:0", "core", Some(0), Some(MAX));
        let meter = EnergyMeter::detect_at(root).unwrap();
        assert_eq!(
            meter.domains().collect::<Vec<_>>(),
            ["package-0", "package-0/core"]
        );
    }

    /// An empty /sys (a VM): Unavailable, with a reason naming both sources and the VM hint.
    #[test]
    fn unavailable_on_empty_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let err = EnergyMeter::detect_at(sys.path()).unwrap_err();
        assert!(matches!(err, EnergyError::NoSource { .. }), "{err:?}");
        let report = EnergyReport::from(&err);
        let EnergyReport::Unavailable { reason } = &report else {
            panic!()
        };
        assert!(reason.starts_with("no RAPL source:"), "{reason}");
        assert!(
            reason.contains("class/powercap") && reason.contains("'power' PMU"),
            "{reason}"
        );
        assert!(reason.contains("virtual machines"), "{reason}");
        assert_eq!(report.attributed_joules(), None);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["status"], "unavailable");
    }

    /// An existing but empty powercap directory is the same as none.
    #[test]
    fn unavailable_on_empty_powercap() {
        let sys = tempfile::tempdir().unwrap();
        fs::create_dir_all(sys.path().join("class/powercap/intel-rapl")).unwrap();
        let err = EnergyMeter::detect_at(sys.path()).unwrap_err();
        assert!(matches!(err, EnergyError::NoSource { .. }), "{err:?}");
    }

    /// On any host, detect() either measures or says why not; never a silent zero.
    #[test]
    fn detect_on_this_host() {
        match EnergyMeter::detect() {
            Ok(meter) => assert!(meter.domains().count() > 0 && meter.read().is_ok()),
            Err(e) => {
                let EnergyReport::Unavailable { reason } = EnergyReport::from(&e) else {
                    panic!()
                };
                assert!(!reason.is_empty());
            }
        }
    }

    /// Lays out a perf `power` PMU as `/sys/bus/event_source/devices/power` does.
    fn pmu(root: &Path, cpumask: &str, events: &[(&str, &str, &str, &str)]) {
        let dir = root.join("bus/event_source/devices/power");
        fs::create_dir_all(dir.join("events")).unwrap();
        // No real PMU has this type, so opening fails with ENOENT.
        fs::write(dir.join("type"), "999999\n").unwrap();
        fs::write(dir.join("cpumask"), format!("{cpumask}\n")).unwrap();
        for (name, code, scale, unit) in events {
            fs::write(dir.join("events").join(name), format!("{code}\n")).unwrap();
            fs::write(
                dir.join("events").join(format!("{name}.scale")),
                format!("{scale}\n"),
            )
            .unwrap();
            fs::write(
                dir.join("events").join(format!("{name}.unit")),
                format!("{unit}\n"),
            )
            .unwrap();
        }
    }

    const SCALE: &str = "2.3283064365386962890625e-10";

    /// The PMU's type, packages, event codes, scales and units are parsed; non-Joules events are skipped.
    #[test]
    fn perf_pmu_description() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        pmu(
            root,
            "0,2",
            &[
                ("energy-pkg", "event=0x02", SCALE, "Joules"),
                ("energy-ram", "event=0x03", SCALE, "Joules"),
                ("energy-cores", "event=0x01", SCALE, "Joules"),
                ("energy-psys", "event=0x05", SCALE, "Joules"),
                ("energy-odd", "event=0x09", "1", "Watts"),
            ],
        );
        let topo = root.join("devices/system/cpu/cpu2/topology");
        fs::create_dir_all(&topo).unwrap();
        fs::write(topo.join("physical_package_id"), "1\n").unwrap();
        let described = perf_power::describe(root).unwrap().unwrap();
        assert_eq!(described.pmu_type, 999_999);
        assert_eq!(described.packages, [(0, 0), (2, 1)]);
        let events: Vec<(&str, u64)> = described
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.config))
            .collect();
        assert_eq!(events, [("cores", 1), ("pkg", 2), ("psys", 5), ("ram", 3)]);
        assert!(
            described
                .events
                .iter()
                .all(|e| (e.scale - 2.3283064365386963e-10).abs() < 1e-24)
        );
    }

    /// A PMU whose event file or scale is malformed is a parse error naming the file.
    #[test]
    fn perf_pmu_malformed() {
        let sys = tempfile::tempdir().unwrap();
        pmu(
            sys.path(),
            "0",
            &[("energy-pkg", "event=0x02", "not-a-number", "Joules")],
        );
        let err = perf_power::describe(sys.path()).unwrap_err();
        assert!(
            matches!(&err, EnergyError::Parse { path, .. } if path.ends_with("energy-pkg.scale")),
            "{err:?}"
        );
    }

    /// A PMU with no energy events in Joules is reported as having no usable counter.
    #[test]
    fn perf_pmu_without_energy_events() {
        let sys = tempfile::tempdir().unwrap();
        pmu(
            sys.path(),
            "0",
            &[("energy-pkg", "event=0x02", SCALE, "Watts")],
        );
        let err = EnergyMeter::detect_at(sys.path()).unwrap_err();
        assert!(matches!(err, EnergyError::NoCounters { .. }), "{err:?}");
    }

    /// A described PMU that cannot be opened (none here) fails with the event, CPU and cause.
    #[test]
    fn perf_pmu_open_fails_here() {
        let sys = tempfile::tempdir().unwrap();
        pmu(
            sys.path(),
            "0",
            &[("energy-pkg", "event=0x02", SCALE, "Joules")],
        );
        let err = EnergyMeter::detect_at(sys.path()).unwrap_err();
        assert!(
            matches!(&err, EnergyError::PerfOpen { event, cpu: 0, .. } if event == "energy-pkg"),
            "{err:?}"
        );
        let EnergyReport::Unavailable { reason } = EnergyReport::from(&err) else {
            panic!()
        };
        assert!(
            reason.contains("power/energy-pkg/") && reason.contains("CPU 0"),
            "{reason}"
        );
    }

    /// powercap is preferred when both sources exist, and the PMU is never opened then.
    #[test]
    fn powercap_preferred_over_pmu() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        pmu(root, "0", &[("energy-pkg", "event=0x02", SCALE, "Joules")]);
        zone(root, "intel-rapl:0", "package-0", Some(0), Some(MAX));
        assert_eq!(EnergyMeter::detect_at(root).unwrap().source(), "powercap");
    }

    /// When powercap is root-only and the PMU cannot be opened either, the powercap reason wins.
    #[test]
    fn powercap_error_preferred_when_both_fail() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        pmu(root, "0", &[("energy-pkg", "event=0x02", SCALE, "Joules")]);
        zone(root, "intel-rapl:0", "package-0", None, Some(MAX));
        std::os::unix::fs::symlink(
            "/proc/sys/vm/drop_caches",
            root.join("class/powercap/intel-rapl:0/energy_uj"),
        )
        .unwrap();
        let err = EnergyMeter::detect_at(root).unwrap_err();
        assert!(
            matches!(err, EnergyError::PermissionDenied { .. }),
            "{err:?}"
        );
    }

    /// A measured report serializes with status "measured" and its fields.
    #[test]
    fn measured_serializes() {
        let interval = EnergyInterval {
            source: String::from("powercap"),
            secs: 2.0,
            domains: vec![DomainEnergy::measured("package-0", 4.0)],
            cpu: CpuTime {
                busy_secs: 1.0,
                total_secs: 4.0,
            },
            stopped: Vec::new(),
        };
        let json = serde_json::to_value(attribute(&interval, &[(3, 1)], 1)).unwrap();
        assert_eq!(json["status"], "measured");
        assert_eq!(json["processes"][0]["pid"], 3);
        assert_eq!(json["processes"][0]["joules"], 1.0);
        assert_eq!(json["processes"][0]["cpu_secs"], 1.0);
        assert_eq!(json["idle_joules"], 3.0);
        assert_eq!(json["busy_ratio"], 0.25);
        assert_eq!(json["interval_secs"], 2.0);
    }

    /// A zone that disappears mid-run is left out of the window and named, never read as zero;
    /// when every zone has gone the window is unavailable, saying so.
    #[test]
    fn powercap_zone_removed() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "intel-rapl:0", "package-0", Some(0), Some(MAX));
        zone(root, "intel-rapl:1", "package-1", Some(0), Some(MAX));
        let meter = fixture_meter(root);
        let start = meter.read().unwrap();
        set_energy(root, "intel-rapl:0", 8_000_000);
        fs::remove_dir_all(root.join("class/powercap/intel-rapl:1")).unwrap();
        let hz = ticks_per_second();
        cpu_stat(root, hz, hz);
        let interval = meter.read().unwrap().since(&start);
        assert_eq!(interval.stopped, ["package-1"]);
        assert_eq!(interval.domains.len(), 1);
        let report = meter.finish(&start, &[(9, 1)], 1);
        let EnergyReport::Measured {
            measured_joules,
            method,
            ..
        } = &report
        else {
            panic!("{report:?}")
        };
        assert!(close(*measured_joules, 8.0), "{report:?}");
        assert!(method.contains("stopped (left out): package-1"), "{method}");
        assert!(close(report.process_joules(9).unwrap(), 4.0));

        fs::remove_dir_all(root.join("class/powercap/intel-rapl:0")).unwrap();
        assert!(matches!(meter.read(), Err(EnergyError::AllStopped { .. })));
        let report = meter.finish(&start, &[(9, 1)], 1);
        let EnergyReport::Unavailable { reason } = &report else {
            panic!("{report:?}")
        };
        assert!(reason.contains("every RAPL counter stopped"), "{reason}");
        assert_eq!(report.attributed_joules(), None);
    }

    /// Wrap-around in a whole window: a counter advanced at a constant 50 W past
    /// max_energy_range_uj still yields 50 W × the elapsed time.
    #[test]
    fn powercap_wraparound_window() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        let max = 100_000_000; // 100 J: wraps every 2 s at 50 W.
        zone(
            root,
            "intel-rapl:0",
            "package-0",
            Some(90_000_000),
            Some(max),
        );
        let meter = fixture_meter(root);
        let start = meter.read().unwrap();
        // 1.5 s at 50 W = 75 J: 90 + 75 = 165 J, past the 100 J range, so the file reads 65 J.
        set_energy(root, "intel-rapl:0", (90_000_000 + 75_000_000) % max);
        cpu_stat(root, 100, 100);
        let report = meter.finish(&start, &[], 1);
        let EnergyReport::Measured {
            measured_joules, ..
        } = &report
        else {
            panic!("{report:?}")
        };
        assert!(close(*measured_joules, 75.0), "{report:?}");
    }

    /// `--powercap-dir` reads that directory only; one without zones is an error naming it.
    #[test]
    fn explicit_powercap_dir() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path();
        zone(root, "intel-rapl:0", "package-0", Some(0), Some(MAX));
        let dir = root.join("class/powercap");
        let meter = EnergyMeter::detect_with(Some(&dir)).unwrap();
        assert_eq!(meter.domains().collect::<Vec<_>>(), ["package-0"]);
        let empty = tempfile::tempdir().unwrap();
        let err = EnergyMeter::detect_with(Some(empty.path())).unwrap_err();
        assert!(matches!(err, EnergyError::NoZones { .. }), "{err:?}");
        assert!(err.to_string().contains("--powercap-dir"), "{err}");
    }
}
