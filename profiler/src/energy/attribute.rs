//! Splitting a window's measured energy among processes by their share of CPU samples.

use std::collections::BTreeMap;

use super::{DomainEnergy, EnergyInterval, EnergyReport, ProcessEnergy};

/// Splits `interval`'s energy among processes in proportion to their CPU samples.
///
/// This is the method Kepler and Scaphandre use: a process that took 30% of the window's samples
/// is charged 30% of the energy, idle and shared (uncore, DRAM) energy included. It is an
/// estimate, and the report's `method` says so. The energy split is the platform's (`psys`) when
/// the host measures it, otherwise the packages' plus DRAM; core and uncore are parts of their
/// package and are not added again. Samples of the same pid listed twice are added together; if
/// the idle task (pid 0) is listed, it gets its share like any other.
pub fn attribute(interval: &EnergyInterval, samples_per_pid: &[(u32, u64)]) -> EnergyReport {
    let (basis, joules) = basis(&interval.domains);
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for &(pid, count) in samples_per_pid {
        *counts.entry(pid).or_default() += count;
    }
    let total: u64 = counts.values().sum();
    let processes = counts
        .into_iter()
        .filter(|&(_, count)| count > 0)
        .map(|(pid, count)| ProcessEnergy {
            pid,
            joules: joules_for(joules, count, total),
        })
        .collect();
    EnergyReport::Measured {
        source: interval.source.clone(),
        interval_secs: interval.secs,
        domains: interval.domains.clone(),
        attributed_joules: joules,
        processes,
        method: format!(
            "{basis} energy attributed by share of CPU samples (estimate; idle and shared energy included)"
        ),
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

/// Which domains are summed for attribution, by name, and their total.
fn basis(domains: &[DomainEnergy]) -> (String, f64) {
    let pick = |kinds: &[Kind]| -> Vec<&DomainEnergy> {
        domains
            .iter()
            .filter(|d| kinds.contains(&kind(&d.domain)))
            .collect()
    };
    let mut chosen = pick(&[Kind::Psys]);
    if chosen.is_empty() {
        chosen = pick(&[Kind::Package, Kind::Dram]);
    }
    if chosen.is_empty() {
        // Only partial planes (say, cores alone): better their sum than nothing, and the
        // method string names exactly what was summed.
        chosen = domains.iter().collect();
    }
    let names: Vec<&str> = chosen.iter().map(|d| d.domain.as_str()).collect();
    (names.join(" + "), chosen.iter().map(|d| d.joules).sum())
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
    use super::*;

    fn interval(domains: &[(&str, f64)]) -> EnergyInterval {
        EnergyInterval {
            source: String::from("test"),
            secs: 10.0,
            domains: domains
                .iter()
                .map(|&(d, j)| DomainEnergy {
                    domain: d.to_owned(),
                    joules: j,
                })
                .collect(),
        }
    }

    fn processes(report: &EnergyReport) -> &[ProcessEnergy] {
        match report {
            EnergyReport::Measured { processes, .. } => processes,
            EnergyReport::Unavailable { reason } => panic!("unavailable: {reason}"),
        }
    }

    /// Per-process joules sum to the attributed total and follow the sample shares.
    #[test]
    fn shares_sum_to_total_and_follow_samples() {
        let report = attribute(
            &interval(&[
                ("package-0", 70.0),
                ("package-0/core", 50.0),
                ("package-0/dram", 10.0),
            ]),
            &[(10, 600), (20, 300), (30, 100)],
        );
        // core is inside package-0; only package + dram are split.
        assert_eq!(report.attributed_joules(), Some(80.0));
        let procs = processes(&report);
        let sum: f64 = procs.iter().map(|p| p.joules).sum();
        assert!((sum - 80.0).abs() < 1e-9, "sum {sum}");
        assert_eq!(procs.len(), 3);
        assert!((report.process_joules(10).unwrap() - 48.0).abs() < 1e-9);
        assert!((report.process_joules(20).unwrap() - 24.0).abs() < 1e-9);
        assert!((report.process_joules(30).unwrap() - 8.0).abs() < 1e-9);
        assert_eq!(report.watts(), Some(8.0));
    }

    /// psys, when present, is the whole platform and is split alone.
    #[test]
    fn psys_preferred_over_packages() {
        let report = attribute(
            &interval(&[("package-0", 40.0), ("package-0/dram", 5.0), ("psys", 60.0)]),
            &[(1, 1)],
        );
        assert_eq!(report.attributed_joules(), Some(60.0));
        let EnergyReport::Measured { method, .. } = &report else {
            panic!()
        };
        assert!(
            method.starts_with("psys energy attributed by share of CPU samples"),
            "{method}"
        );
    }

    /// Two packages and their DRAM are all summed; repeated pids add up; zero-sample pids are left out.
    #[test]
    fn two_packages_and_repeated_pids() {
        let report = attribute(
            &interval(&[
                ("package-0", 30.0),
                ("package-1", 20.0),
                ("package-0/dram", 4.0),
                ("package-1/dram", 6.0),
            ]),
            &[(7, 1), (8, 0), (7, 2), (9, 1)],
        );
        assert_eq!(report.attributed_joules(), Some(60.0));
        assert!((report.process_joules(7).unwrap() - 45.0).abs() < 1e-9);
        assert!((report.process_joules(9).unwrap() - 15.0).abs() < 1e-9);
        assert_eq!(report.process_joules(8), None);
    }

    /// No samples: the energy is still reported, charged to nobody.
    #[test]
    fn no_samples() {
        let report = attribute(&interval(&[("package-0", 30.0)]), &[]);
        assert!(processes(&report).is_empty());
        assert_eq!(report.attributed_joules(), Some(30.0));
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
