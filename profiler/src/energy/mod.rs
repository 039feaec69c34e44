//! Energy: RAPL counters read from powercap sysfs or the perf `power` PMU, and attribution of a
//! window's energy to processes by their share of CPU samples.
//!
//! A window opens with [`EnergyMeter::read`] and closes with another read; [`EnergyReading::since`]
//! turns the pair into joules per RAPL domain (wrap-around handled), and [`attribute`] splits them
//! among processes in proportion to their CPU samples, the method Kepler and Scaphandre use. The
//! report names that method, because the split is an estimate and not a measurement.
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
//!             meter.finish(&start, &samples_per_pid)
//!         }
//!     },
//! };
//! match &report {
//!     EnergyReport::Measured { .. } => println!("{:.1} W", report.watts().unwrap_or(0.0)),
//!     EnergyReport::Unavailable { reason } => println!("energy unavailable: {reason}"),
//! }
//! ```

mod attribute;
mod perf_power;
mod powercap;

use std::error::Error as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use attribute::{attribute, joules_for};

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
        /// Domains nest (core is part of its package), so do not add them all up.
        domains: Vec<DomainEnergy>,
        /// The joules split among processes: `psys` if measured, else packages plus DRAM.
        attributed_joules: f64,
        /// Each sampled process's share of `attributed_joules`, by pid.
        processes: Vec<ProcessEnergy>,
        /// How `processes` was derived, naming the domains summed.
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
}

/// Energy charged to one process over an interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessEnergy {
    /// Process id.
    pub pid: u32,
    /// Joules charged, by the report's method.
    pub joules: f64,
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

/// Reads the host's RAPL energy counters.
#[derive(Debug)]
pub struct EnergyMeter {
    counters: Counters,
    domains: Arc<[DomainInfo]>,
}

impl EnergyMeter {
    /// Finds the host's RAPL source under `/sys`; see [`EnergyMeter::detect_at`].
    pub fn detect() -> Result<Self, EnergyError> {
        Self::detect_at(Path::new("/sys"))
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

    /// Reads every counter now.
    pub fn read(&self) -> Result<EnergyReading, EnergyError> {
        let raw = match &self.counters {
            Counters::Powercap(zones) => {
                zones.iter().map(powercap::read).collect::<Result<_, _>>()?
            }
            Counters::Perf(counters) => counters
                .iter()
                .map(perf_power::read_counter)
                .collect::<Result<_, _>>()?,
        };
        Ok(EnergyReading {
            at: Instant::now(),
            source: self.source(),
            domains: Arc::clone(&self.domains),
            raw,
        })
    }

    /// Closes a window opened with `start`: reads the counters and attributes the energy since
    /// `start` by `samples_per_pid` (see [`attribute`]). A failed read is reported as
    /// [`EnergyReport::Unavailable`], so the caller can carry on.
    pub fn finish(&self, start: &EnergyReading, samples_per_pid: &[(u32, u64)]) -> EnergyReport {
        match self.read() {
            Ok(end) => attribute(&end.since(start), samples_per_pid),
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
    raw: Vec<u64>,
}

impl EnergyReading {
    /// Joules per domain between `earlier` and this reading, which must come from the same meter.
    ///
    /// A counter that went backwards wrapped once: its delta is `max - earlier + now`. Windows
    /// must be shorter than one wrap period (tens of minutes at hundreds of watts for powercap).
    pub fn since(&self, earlier: &EnergyReading) -> EnergyInterval {
        debug_assert!(
            Arc::ptr_eq(&self.domains, &earlier.domains),
            "readings from different meters"
        );
        let domains = self
            .domains
            .iter()
            .zip(earlier.raw.iter().zip(&self.raw))
            .map(|(info, (&before, &now))| DomainEnergy {
                domain: info.name.clone(),
                joules: delta(before, now, info.wrap_at) as f64 * info.joules_per_unit,
            })
            .collect();
        EnergyInterval {
            source: self.source.to_owned(),
            secs: self.at.saturating_duration_since(earlier.at).as_secs_f64(),
            domains,
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
    /// Joules per domain.
    pub domains: Vec<DomainEnergy>,
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

        let meter = EnergyMeter::detect_at(root).unwrap();
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
        let end = meter.read().unwrap();
        let interval = end.since(&start);
        assert!(close(joules(&interval, "package-0"), 10.0));
        assert!(close(joules(&interval, "package-0/core"), 6.0));
        assert!(close(joules(&interval, "package-0/uncore"), 0.5));
        assert!(close(joules(&interval, "package-0/dram"), 2.0));
        assert!(close(joules(&interval, "psys"), 15.0));
        assert!(interval.secs >= 0.0);

        let report = meter.finish(&start, &[(1, 3), (2, 1)]);
        let EnergyReport::Measured {
            source,
            attributed_joules,
            method,
            ..
        } = &report
        else {
            panic!("{report:?}")
        };
        assert_eq!(source, "powercap");
        assert!(
            close(*attributed_joules, 15.0),
            "psys is the whole platform"
        );
        assert!(method.contains("attributed by share of CPU samples"));
        assert!(close(report.process_joules(1).unwrap(), 11.25));
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
        let meter = EnergyMeter::detect_at(root).unwrap();
        assert_eq!(
            meter.domains().collect::<Vec<_>>(),
            ["package-0", "package-0/dram", "package-1", "package-1/dram"]
        );
        let start = meter.read().unwrap();
        set_energy(root, "intel-rapl:0", 30_000_000);
        set_energy(root, "intel-rapl:0:0", 3_000_000);
        set_energy(root, "intel-rapl:1", 20_000_000);
        set_energy(root, "intel-rapl:1:0", 7_000_000);
        let report = meter.finish(&start, &[(42, 10)]);
        assert!(close(report.attributed_joules().unwrap(), 60.0));
        assert!(close(report.process_joules(42).unwrap(), 60.0));
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
        let meter = EnergyMeter::detect_at(root).unwrap();
        assert_eq!(meter.domains().collect::<Vec<_>>(), ["package-0"]);
        let start = meter.read().unwrap();
        set_energy(root, "intel-rapl:0", 9_000_000);
        let report = meter.finish(&start, &[(5, 1)]);
        let EnergyReport::Measured {
            domains, method, ..
        } = &report
        else {
            panic!("{report:?}")
        };
        assert_eq!(domains.len(), 1);
        assert!(method.starts_with("package-0 energy"), "{method}");
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
        let report = meter.finish(&start, &[(1, 1)]);
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
            domains: vec![DomainEnergy {
                domain: String::from("package-0"),
                joules: 4.0,
            }],
        };
        let json = serde_json::to_value(attribute(&interval, &[(3, 1)])).unwrap();
        assert_eq!(json["status"], "measured");
        assert_eq!(json["processes"][0]["pid"], 3);
        assert_eq!(json["processes"][0]["joules"], 4.0);
        assert_eq!(json["interval_secs"], 2.0);
    }
}
