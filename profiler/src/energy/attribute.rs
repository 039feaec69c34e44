//! Splitting a window's measured energy the way Kepler does: only the active part (measured ×
//! the CPUs' busy ratio from `/proc/stat`) is charged to processes, each by its CPU time; the
//! rest is the host's idle energy, reported apart.

use std::collections::BTreeMap;

use super::{DomainEnergy, EnergyInterval, EnergyReport, ProcessEnergy};

/// The name of the split method, stored with every figure it produced.
pub const METHOD: &str = "kepler-cpu-time";

/// Splits `interval`'s energy as Kepler does.
///
/// For each domain of the basis (the platform's `psys` when measured, otherwise each package
/// and each DRAM, kept apart; core and uncore are parts of their package and are not added
/// again): active = measured × busy ratio, idle = measured − active. A process's CPU time is
/// its samples ÷ `frequency_hz`; it is charged active × its CPU time ÷ the host's busy CPU
/// time (or the sampled CPU time, if sampling saw more), so a process alone on one of two CPUs
/// of a fully idle host is charged about half the measured energy times its CPU share, and the
/// processes together never exceed the active energy. Repeated pids add up; pids with no
/// samples are left out.
pub fn attribute(
    interval: &EnergyInterval,
    samples_per_pid: &[(u32, u64)],
    frequency_hz: u32,
) -> EnergyReport {
    let chosen = basis(&interval.domains);
    let ratio = interval.cpu.busy_ratio();
    let hz = f64::from(frequency_hz.max(1));
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for &(pid, count) in samples_per_pid {
        *counts.entry(pid).or_default() += count;
    }
    let sampled_secs = counts.values().sum::<u64>() as f64 / hz;
    let denominator = interval.cpu.busy_secs.max(sampled_secs);

    let domains: Vec<DomainEnergy> = interval
        .domains
        .iter()
        .map(|d| {
            let basis = chosen.contains(&d.domain.as_str());
            DomainEnergy {
                domain: d.domain.clone(),
                joules: d.joules,
                basis,
                active_joules: if basis { d.joules * ratio } else { 0.0 },
                idle_joules: if basis { d.joules * (1.0 - ratio) } else { 0.0 },
            }
        })
        .collect();
    let active: f64 = domains.iter().map(|d| d.active_joules).sum();
    let idle: f64 = domains.iter().map(|d| d.idle_joules).sum();
    let dram_active: f64 = domains
        .iter()
        .filter(|d| d.basis && kind(&d.domain) == Kind::Dram)
        .map(|d| d.active_joules)
        .sum();
    let share = |cpu_secs: f64| {
        if denominator > 0.0 {
            cpu_secs / denominator
        } else {
            0.0
        }
    };
    let processes = counts
        .into_iter()
        .filter(|&(_, count)| count > 0)
        .map(|(pid, count)| {
            let cpu_secs = count as f64 / hz;
            ProcessEnergy {
                pid,
                cpu_secs,
                joules: active * share(cpu_secs),
                dram_joules: dram_active * share(cpu_secs),
            }
        })
        .collect();
    let mut method = format!(
        "{METHOD}: active = measured ({}) × CPU busy ratio from /proc/stat; each process charged \
         active × its CPU time (samples ÷ {frequency_hz} Hz) ÷ the host's busy CPU time; idle reported apart",
        chosen.join(" + ")
    );
    if !interval.stopped.is_empty() {
        method.push_str(&format!(
            "; counters that stopped (left out): {}",
            interval.stopped.join(", ")
        ));
    }
    EnergyReport::Measured {
        source: interval.source.clone(),
        interval_secs: interval.secs,
        domains,
        measured_joules: active + idle,
        attributed_joules: active,
        idle_joules: idle,
        busy_ratio: ratio,
        busy_cpu_secs: interval.cpu.busy_secs,
        total_cpu_secs: interval.cpu.total_secs,
        processes,
        method,
    }
}

/// The joules that `count` of `total` samples stand for: `joules * count / total`, and 0 when
/// there are no samples. Use it to charge a stack or a function its share of a process's or the
/// window's energy.
pub fn joules_for(joules: f64, count: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        joules * (count as f64 / total as f64)
    }
}

/// The domains whose energy is split, by name: `psys` if measured, else packages and DRAM, else
/// whatever partial planes there are (the method names exactly what was used).
fn basis(domains: &[DomainEnergy]) -> Vec<&str> {
    let pick = |kinds: &[Kind]| -> Vec<&str> {
        domains
            .iter()
            .filter(|d| kinds.contains(&kind(&d.domain)))
            .map(|d| d.domain.as_str())
            .collect()
    };
    let mut chosen = pick(&[Kind::Psys]);
    if chosen.is_empty() {
        chosen = pick(&[Kind::Package, Kind::Dram]);
    }
    if chosen.is_empty() {
        chosen = domains.iter().map(|d| d.domain.as_str()).collect();
    }
    chosen
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Psys,
    Package,
    Dram,
    /// Core, uncore and other planes inside a package.
    Part,
}

/// Classifies a domain by the names this module gives them (`package-0`, `package-0/dram`, `psys`).
fn kind(domain: &str) -> Kind {
    let leaf = domain.rsplit('/').next().unwrap_or(domain);
    if leaf.starts_with("psys") {
        Kind::Psys
    } else if leaf.starts_with("dram") {
        Kind::Dram
    } else if leaf.starts_with("package") && !domain.contains('/') {
        Kind::Package
    } else {
        Kind::Part
    }
}

#[cfg(test)]
mod tests {
    use super::super::CpuTime;
    use super::*;

    /// A 10-s window on 2 CPUs (20 CPU-s), `busy` of them busy.
    fn interval(domains: &[(&str, f64)], busy: f64) -> EnergyInterval {
        EnergyInterval {
            source: String::from("test"),
            secs: 10.0,
            domains: domains
                .iter()
                .map(|&(d, j)| DomainEnergy::measured(d, j))
                .collect(),
            cpu: CpuTime {
                busy_secs: busy,
                total_secs: 20.0,
            },
            stopped: Vec::new(),
        }
    }

    fn measured(report: &EnergyReport) -> (&[ProcessEnergy], f64, f64) {
        match report {
            EnergyReport::Measured {
                processes,
                attributed_joules,
                idle_joules,
                ..
            } => (processes, *attributed_joules, *idle_joules),
            EnergyReport::Unavailable { reason } => panic!("unavailable: {reason}"),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// 10% busy: only 10% of the energy is active; a process with half the busy time gets half
    /// of that, i.e. measured × its CPU-s ÷ all CPU-s; idle is the rest.
    #[test]
    fn only_active_energy_is_charged() {
        // 2 busy CPU-s of 20; pid 10 has 100 samples at 100 Hz = 1 CPU-s.
        let report = attribute(
            &interval(&[("package-0", 100.0)], 2.0),
            &[(10, 100), (20, 50)],
            100,
        );
        let (procs, active, idle) = measured(&report);
        assert!(close(active, 10.0) && close(idle, 90.0), "{report:?}");
        assert!(close(
            report.process_joules(10).unwrap(),
            100.0 * 1.0 / 20.0
        ));
        assert!(close(report.process_joules(20).unwrap(), 2.5));
        assert!(procs.iter().map(|p| p.joules).sum::<f64>() <= active);
        assert!(close(procs[0].cpu_secs, 1.0));
    }

    /// When sampling saw more CPU time than /proc/stat (noise), shares are scaled so the
    /// processes never exceed the active energy.
    #[test]
    fn processes_never_exceed_active() {
        let report = attribute(
            &interval(&[("package-0", 100.0)], 1.0),
            &[(1, 300), (2, 100)],
            100,
        );
        let (procs, active, _) = measured(&report);
        let sum: f64 = procs.iter().map(|p| p.joules).sum();
        assert!(close(sum, active), "{sum} vs {active}");
        assert!(close(report.process_joules(1).unwrap(), 3.75));
    }

    /// Package and DRAM are kept apart: each has its own active and idle part, and a process's
    /// DRAM joules are its share of DRAM's active energy. Core is inside the package.
    #[test]
    fn package_and_dram_apart() {
        let report = attribute(
            &interval(
                &[
                    ("package-0", 70.0),
                    ("package-0/core", 50.0),
                    ("package-0/dram", 10.0),
                ],
                10.0,
            ),
            &[(7, 500)],
            100,
        );
        let EnergyReport::Measured {
            domains,
            measured_joules,
            processes,
            method,
            busy_ratio,
            ..
        } = &report
        else {
            panic!()
        };
        assert!(close(*measured_joules, 80.0));
        assert!(close(*busy_ratio, 0.5));
        let dram = domains
            .iter()
            .find(|d| d.domain == "package-0/dram")
            .unwrap();
        assert!(dram.basis && close(dram.active_joules, 5.0) && close(dram.idle_joules, 5.0));
        let core = domains
            .iter()
            .find(|d| d.domain == "package-0/core")
            .unwrap();
        assert!(!core.basis && close(core.active_joules, 0.0));
        // 5 CPU-s of 10 busy: half of 40 active joules, of which DRAM half of 5.
        assert!(close(processes[0].joules, 20.0) && close(processes[0].dram_joules, 2.5));
        assert!(method.starts_with("kepler-cpu-time"), "{method}");
        assert!(method.contains("package-0 + package-0/dram"), "{method}");
    }

    /// psys, when present, is the whole platform and is split alone.
    #[test]
    fn psys_preferred_over_packages() {
        let report = attribute(
            &interval(
                &[("package-0", 40.0), ("package-0/dram", 5.0), ("psys", 60.0)],
                20.0,
            ),
            &[(1, 1)],
            1,
        );
        assert_eq!(report.attributed_joules(), Some(60.0));
    }

    /// Repeated pids add up; zero-sample pids are left out; no samples charge nobody.
    #[test]
    fn repeated_and_missing_pids() {
        let report = attribute(
            &interval(&[("package-0", 20.0)], 4.0),
            &[(7, 1), (8, 0), (7, 1)],
            1,
        );
        assert!(close(report.process_joules(7).unwrap(), 2.0));
        assert_eq!(report.process_joules(8), None);
        let report = attribute(&interval(&[("package-0", 30.0)], 0.0), &[], 19);
        let (procs, active, idle) = measured(&report);
        assert!(procs.is_empty() && close(active, 0.0) && close(idle, 30.0));
    }

    /// The per-stack helper is `joules * count / total`, and 0 with no samples.
    #[test]
    fn joules_for_counts() {
        assert!((joules_for(12.0, 1, 4) - 3.0).abs() < 1e-12);
        assert_eq!(joules_for(12.0, 0, 4), 0.0);
        assert_eq!(joules_for(12.0, 5, 0), 0.0);
    }

    /// Domain names classify as platform, package, DRAM or package part.
    #[test]
    fn domain_kinds() {
        assert!(kind("psys") == Kind::Psys);
        assert!(kind("package-1") == Kind::Package);
        assert!(kind("package-1/dram") == Kind::Dram);
        assert!(kind("dram") == Kind::Dram);
        assert!(kind("package-1/core") == Kind::Part);
        assert!(kind("package-1/uncore") == Kind::Part);
    }
}
