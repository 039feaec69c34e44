//! Energy on its way into the store: the split's method and inputs checked from the wire, and
//! the `host_energy` rows (per host, window and RAPL basis domain: measured, active, idle).
//!
//! Hosts without RAPL write no rows here, so a sum over `host_energy` or `process_energy`
//! never counts them as zero energy.

use clickhouse::Row;
use fleetprof_proto::fleetprof::v1 as pb;
use serde::Serialize;

use super::{Batch, model::EnergySplit};

/// A number that must be finite and not negative, or a message naming the field.
fn non_negative(what: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{what} {v} is not a finite, non-negative number"))
    }
}

/// The split's method and inputs from a batch's energy section, checked: ratios within 0..=1,
/// times and joules finite and non-negative, a domain's active + idle not above its measured
/// joules (beyond rounding). Older profilers send none of it: an empty method, all zeros.
pub(crate) fn split_from_wire(e: &pb::Energy) -> Result<EnergySplit, String> {
    if !(0.0..=1.0).contains(&e.busy_ratio) {
        return Err(format!(
            "energy.busy_ratio {} is outside 0..=1",
            e.busy_ratio
        ));
    }
    let mut domains = Vec::new();
    for (i, d) in e.domains.iter().enumerate().filter(|(_, d)| d.basis) {
        let active = non_negative(
            &format!("energy.domains[{i}].active_joules"),
            d.active_joules,
        )?;
        let idle = non_negative(&format!("energy.domains[{i}].idle_joules"), d.idle_joules)?;
        if active + idle > d.joules * (1.0 + 1e-9) + 1e-9 {
            return Err(format!(
                "energy.domains[{i}]: active {active} + idle {idle} joules exceed the {} measured",
                d.joules
            ));
        }
        domains.push((d.domain.clone(), d.joules, active, idle));
    }
    let mut processes = Vec::with_capacity(e.processes.len());
    for (i, p) in e.processes.iter().enumerate() {
        processes.push((
            non_negative(&format!("energy.processes[{i}].cpu_seconds"), p.cpu_seconds)?,
            non_negative(&format!("energy.processes[{i}].dram_joules"), p.dram_joules)?,
        ));
    }
    Ok(EnergySplit {
        method: e.method.clone(),
        busy_ratio: e.busy_ratio,
        busy_cpu_seconds: non_negative("energy.busy_cpu_seconds", e.busy_cpu_seconds)?,
        total_cpu_seconds: non_negative("energy.total_cpu_seconds", e.total_cpu_seconds)?,
        interval_seconds: non_negative("energy.interval_seconds", e.interval_seconds)?,
        domains,
        processes,
    })
}

/// One row of `host_energy`.
#[derive(Row, Serialize)]
pub(super) struct HostEnergyRow<'a> {
    time: u32,
    time_ns: u64,
    window_ns: u64,
    host: &'a str,
    host_id: &'a str,
    source: &'a str,
    domain: &'a str,
    measured_joules: f64,
    active_joules: f64,
    idle_joules: f64,
    busy_ratio: f64,
    busy_cpu_seconds: f64,
    total_cpu_seconds: f64,
    interval_seconds: f64,
    method: &'a str,
}

/// The `host_energy` rows of `batches`: one per measured window and basis domain.
pub(super) fn host_energy_rows<'a>(batches: &[&'a Batch]) -> Vec<HostEnergyRow<'a>> {
    batches
        .iter()
        .filter(|b| b.energy.available)
        .flat_map(|b| {
            let s = &b.energy.split;
            s.domains
                .iter()
                .map(move |(domain, measured, active, idle)| HostEnergyRow {
                    time: b.time(),
                    time_ns: b.start_time_ns,
                    window_ns: b.end_time_ns - b.start_time_ns,
                    host: &b.hostname,
                    host_id: &b.key.host_id,
                    source: &b.energy.source,
                    domain,
                    measured_joules: *measured,
                    active_joules: *active,
                    idle_joules: *idle,
                    busy_ratio: s.busy_ratio,
                    busy_cpu_seconds: s.busy_cpu_seconds,
                    total_cpu_seconds: s.total_cpu_seconds,
                    interval_seconds: s.interval_seconds,
                    method: &s.method,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> pb::Energy {
        pb::Energy {
            available: true,
            source: "powercap".into(),
            domains: vec![
                pb::DomainEnergy {
                    domain: "package-0".into(),
                    joules: 10.0,
                    basis: true,
                    active_joules: 2.5,
                    idle_joules: 7.5,
                },
                pb::DomainEnergy {
                    domain: "package-0/core".into(),
                    joules: 6.0,
                    ..Default::default()
                },
            ],
            processes: vec![pb::ProcessEnergy {
                process_index: 0,
                joules: 1.0,
                cpu_seconds: 0.4,
                dram_joules: 0.0,
            }],
            method: "kepler-cpu-time: ...".into(),
            busy_ratio: 0.25,
            busy_cpu_seconds: 1.0,
            total_cpu_seconds: 4.0,
            ..Default::default()
        }
    }

    /// Basis domains and the inputs are kept; parts of a package are not basis.
    #[test]
    fn keeps_basis_and_inputs() {
        let s = split_from_wire(&wire()).unwrap();
        assert_eq!(s.domains, [("package-0".to_owned(), 10.0, 2.5, 7.5)]);
        assert_eq!(s.processes, [(0.4, 0.0)]);
        assert_eq!(s.busy_ratio, 0.25);
        assert!(s.method.starts_with("kepler-cpu-time"));
    }

    /// Impossible inputs are refused with the field named.
    #[test]
    fn refuses_bad_inputs() {
        let mut e = wire();
        e.busy_ratio = 1.5;
        assert!(split_from_wire(&e).unwrap_err().contains("busy_ratio"));
        let mut e = wire();
        e.domains[0].idle_joules = 9.0;
        assert!(split_from_wire(&e).unwrap_err().contains("exceed"));
        let mut e = wire();
        e.processes[0].cpu_seconds = f64::NAN;
        assert!(
            split_from_wire(&e)
                .unwrap_err()
                .contains("processes[0].cpu_seconds")
        );
    }
}
