//! Grouping: regressions with one root cause become one report.

use super::filters::Relations;
use super::{Regression, RegressionReport, State};

/// Merges regressions whose onsets lie within `tol` buckets of each other and whose functions lie on
/// one call path (see [`Relations::same_path`]), transitively, into reports, strongest first.
pub(crate) fn group(
    service: &str,
    found: Vec<(usize, Regression)>,
    rel: &Relations,
    tol: usize,
) -> Vec<RegressionReport> {
    let mut parent: Vec<usize> = (0..found.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..found.len() {
        for j in i + 1..found.len() {
            let (fi, ri) = &found[i];
            let (fj, rj) = &found[j];
            if ri.onset_bucket.abs_diff(rj.onset_bucket) <= tol && rel.same_path(*fi, *fj) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a] = b;
            }
        }
    }
    let mut groups: Vec<Vec<Regression>> = Vec::new();
    let mut slot: Vec<Option<usize>> = vec![None; found.len()];
    let roots: Vec<usize> = (0..found.len()).map(|i| root(&mut parent, i)).collect();
    for ((_, r), g) in found.into_iter().zip(roots) {
        let s = *slot[g].get_or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[s].push(r);
    }
    let mut reports: Vec<RegressionReport> =
        groups.into_iter().map(|m| report(service, m)).collect();
    reports.sort_by(|a, b| {
        b.z.total_cmp(&a.z)
            .then(a.onset_unix_s.cmp(&b.onset_unix_s))
    });
    reports
}

fn report(service: &str, mut members: Vec<Regression>) -> RegressionReport {
    members.sort_by(|a, b| {
        b.z.total_cmp(&a.z)
            .then_with(|| a.function.cmp(&b.function))
    });
    let lead = &members[0];
    let state = if members.iter().any(|m| m.state == State::Open) {
        State::Open
    } else if members.iter().any(|m| m.state == State::Fixed) {
        State::Fixed
    } else {
        State::WentAway
    };
    // Members on one path overlap (a caller's total contains its callee's), so the report's cost is
    // its largest member's, never the sum.
    let delta_cores = members
        .iter()
        .map(|m| m.cores_after - m.cores_before)
        .fold(0.0, f64::max);
    let delta_watts = members
        .iter()
        .filter_map(|m| Some(m.watts_after? - m.watts_before?))
        .reduce(f64::max);
    RegressionReport {
        service: service.to_owned(),
        onset_unix_s: lead.onset_unix_s,
        state,
        z: lead.z,
        p_value: lead.p_value,
        delta_cores,
        delta_watts,
        members,
    }
}
