//! The filters between a significant step and a report: persistence (went-away) and cost shift.

use super::changepoint::{self, Windows};
use super::series::{BaseSums, CountSums, FunctionSeries, ServiceSeries};
use super::{Metric, State};

/// What became of a step after its onset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fate {
    pub(crate) state: State,
    /// Bucket where the share went back down, where a reversal was found.
    pub(crate) reverted_at: Option<usize>,
}

/// Classifies a step at `onset` from `before` to `after` as open, went-away or fixed.
///
/// Went-away: the share fell back (to within `revert_fraction` of the step above the old level) less
/// than `persist` buckets after the onset, either through a significant decrease or because the
/// second half of the persistence period is no longer raised. Fixed: it fell back later.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fate(
    base: &BaseSums,
    c: &CountSums,
    win: Windows,
    onset: usize,
    before: f64,
    after: f64,
    persist: usize,
    revert_fraction: f64,
    threshold: f64,
) -> Fate {
    let level = before + revert_fraction * (after - before);
    if let Some(t2) = changepoint::find_revert(base, c, win, onset, threshold, level) {
        let state = if t2 - onset < persist {
            State::WentAway
        } else {
            State::Fixed
        };
        return Fate {
            state,
            reverted_at: Some(t2),
        };
    }
    let (a, b) = (
        (onset + persist / 2).min(base.len()),
        (onset + persist).min(base.len()),
    );
    let n = base.n[b] - base.n[a];
    if b > a && n > 0.0 && (c.k[b] - c.k[a]) / n < level {
        return Fate {
            state: State::WentAway,
            reverted_at: None,
        };
    }
    Fate {
        state: State::Open,
        reverted_at: None,
    }
}

/// Names the relation of two functions on a call path.
pub(crate) struct Relations {
    /// Direct callers of each function, as indexes.
    pub(crate) callers: Vec<Vec<usize>>,
    /// Direct callees of each function, as indexes.
    pub(crate) callees: Vec<Vec<usize>>,
}

impl Relations {
    pub(crate) fn new(functions: &[FunctionSeries]) -> Self {
        let index: std::collections::HashMap<&str, usize> = functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.function.as_str(), i))
            .collect();
        let mut callers = vec![Vec::new(); functions.len()];
        let mut callees = vec![Vec::new(); functions.len()];
        for (i, f) in functions.iter().enumerate() {
            for c in &f.callers {
                if let Some(&j) = index.get(c.as_str())
                    && j != i
                    && !callers[i].contains(&j)
                {
                    callers[i].push(j);
                    callees[j].push(i);
                }
            }
        }
        Self { callers, callees }
    }

    /// Callers, callees and siblings (functions sharing a direct caller) of `f`.
    pub(crate) fn related(&self, f: usize) -> Vec<usize> {
        let mut out: Vec<usize> = self.callers[f]
            .iter()
            .chain(&self.callees[f])
            .copied()
            .collect();
        for &c in &self.callers[f] {
            out.extend(self.callees[c].iter().copied().filter(|&g| g != f));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `a` is a transitive caller of `b`.
    pub(crate) fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut seen = vec![false; self.callers.len()];
        let mut stack = vec![b];
        while let Some(x) = stack.pop() {
            for &c in &self.callers[x] {
                if c == a {
                    return true;
                }
                if !seen[c] {
                    seen[c] = true;
                    stack.push(c);
                }
            }
        }
        false
    }

    /// Whether `a` and `b` lie on one call path: one calls the other (transitively) or they share a
    /// direct caller.
    pub(crate) fn same_path(&self, a: usize, b: usize) -> bool {
        a == b
            || self.is_ancestor(a, b)
            || self.is_ancestor(b, a)
            || self.callers[a].iter().any(|c| self.callers[b].contains(c))
    }

    /// The series that holds the combined cost of `f` and `g` on their shared path, as a function
    /// whose `k_total` to test: the caller of the pair, or a common direct caller.
    pub(crate) fn path_root(&self, f: usize, g: usize) -> Option<usize> {
        if self.callers[f].contains(&g) {
            return Some(g);
        }
        if self.callers[g].contains(&f) {
            return Some(f);
        }
        self.callers[f]
            .iter()
            .copied()
            .find(|c| self.callers[g].contains(c))
    }
}

/// Thresholds of the cost-shift test.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShiftParams {
    /// z a decrease (or increase) at an already known onset must reach to count.
    pub(crate) confirm_z: f64,
    /// A related decrease must be at least this fraction of the increase.
    pub(crate) shift_ratio: f64,
    /// The path's combined cost may rise by at most this fraction of the increase.
    pub(crate) residual: f64,
    /// Onset tolerance, buckets.
    pub(crate) tol: usize,
}

/// Mean per-bucket count before and after `onset` (up to `half` buckets each side) and the z of
/// their difference; `None` when either side has fewer than two buckets. The variance is the
/// larger of Poisson's and the one observed on each side: absolute counts carry more than
/// sampling noise (load varies, and batches of a few seconds fall unevenly into buckets).
fn absolute_step(
    count: impl Fn(usize) -> f64,
    len: usize,
    onset: usize,
    half: usize,
) -> Option<(f64, f64, f64)> {
    let (l, r) = (onset.saturating_sub(half), (onset + half).min(len));
    if onset < l + 2 || r < onset + 2 {
        return None;
    }
    let side = |range: std::ops::Range<usize>| {
        let m = range.len() as f64;
        let values: Vec<f64> = range.map(&count).collect();
        let mean = values.iter().sum::<f64>() / m;
        let observed = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m - 1.0);
        (mean, observed.max(mean) / m)
    };
    let (before, var_before) = side(l..onset);
    let (after, var_after) = side(onset..r);
    Some((
        before,
        after,
        (after - before) / (var_before + var_after).max(1e-9).sqrt(),
    ))
}

/// Whether `g`'s fall is more than the whole rest of the service shrinking around `f`; `rest` is
/// what the service without `f` spent per bucket before and after the onset.
///
/// A service that is CPU-bound cannot spend more: when `f` gets slower, everything else loses
/// absolute cost in proportion (fewer requests get through), so a sibling that is a large part of
/// the rest falls by a large part of `f`'s rise without any cost having moved. Code that moved from
/// `g` to `f` shows as `g` losing ground against that rest: its expected cost after the onset is its
/// cost before scaled by how the rest (the service without `f`) changed, and the fall beyond that
/// must reach `needed` (`shift_ratio` of `f`'s rise) times what a move leaves of it, `1 − g/rest`. When `g`
/// is nearly all of the rest the two cannot be told apart; the floor on that factor then keeps the
/// step reported (a regression shown rather than one explained away).
fn lost_ground(rest: Option<(f64, f64)>, (g_before, g_after): (f64, f64), needed: f64) -> bool {
    let Some((rest_before, rest_after)) = rest else {
        return true;
    };
    if rest_before <= 0.0 {
        return true;
    }
    let expected = g_before * (rest_after / rest_before);
    let unexplained = expected - g_after;
    let part = (g_before / rest_before).clamp(0.0, 1.0);
    unexplained >= needed * (1.0 - part).max(0.25)
}

/// Whether the increase of `f`'s `metric` at `onset` is cost moving along its call path.
///
/// It is when a related function (caller, callee or sibling) lost a comparable amount of the same
/// metric at the same onset and the path's combined cost did not rise: the total of the pair's
/// caller where the input has it, else the sum of the pair's own series. The test is on absolute
/// cost (samples per bucket, i.e. CPU), not on shares: shares always sum to the service, so when
/// one function of a service that spends all its time under one caller gets slower, its siblings'
/// *shares* fall and the caller's share stays at 100% even though the service now burns more CPU.
/// Only absolute cost tells a regression (the path costs more) from a shift (it does not).
#[allow(clippy::too_many_arguments)]
pub(crate) fn is_cost_shift(
    base: &BaseSums,
    series: &ServiceSeries,
    rel: &Relations,
    win: Windows,
    f: usize,
    metric: Metric,
    onset: usize,
    params: ShiftParams,
) -> bool {
    let len = base.len();
    let pick = |x: &FunctionSeries, i: usize| match metric {
        Metric::Total => f64::from(x.k_total[i]),
        Metric::SelfShare => f64::from(x.k_self[i]),
    };
    let fs = &series.functions[f];
    let Some((f_before, f_after, _)) = absolute_step(|i| pick(fs, i), len, onset, win.half) else {
        return false;
    };
    let total = absolute_step(|i| f64::from(series.samples[i]), len, onset, win.half);
    // The rise a related function's loss must match: `f`'s own, or what its larger share of the
    // service comes to at the service's cost after the onset, whichever is larger. A share that
    // rose while the function's own cost did not is cost leaving its neighbours, and the
    // related-decrease test below decides whether it left along the call path; but when the
    // whole service's cost fell (fewer requests, a busy machine) the function's own cost falls
    // too, and a rise of zero would let any related dip — noise included — explain the step.
    let share_rise = total.map_or(0.0, |(n_before, n_after, _)| {
        if n_before > 0.0 {
            f_after - f_before * (n_after / n_before)
        } else {
            0.0
        }
    });
    let delta = (f_after - f_before).max(share_rise).max(0.0);
    let rest = total.map(|(n_before, n_after, _)| (n_before - f_before, n_after - f_after));
    for g in rel.related(f) {
        let gs = &series.functions[g];
        // The related drop may be found a bucket or two off the increase's onset.
        let near =
            onset.saturating_sub(params.tol)..=(onset + params.tol).min(len.saturating_sub(1));
        let Some((g_before, g_after, g_z)) = near
            .clone()
            .filter_map(|t| absolute_step(|i| pick(gs, i), len, t, win.half))
            .min_by(|a, b| a.2.total_cmp(&b.2))
        else {
            continue;
        };
        if g_z > -params.confirm_z || g_before - g_after < params.shift_ratio * delta {
            continue;
        }
        if !lost_ground(rest, (g_before, g_after), params.shift_ratio * delta) {
            continue;
        }
        let path_cost = |i: usize| match rel.path_root(f, g) {
            Some(root) => f64::from(series.functions[root].k_total[i]),
            None => pick(fs, i) + pick(gs, i),
        };
        let path = near
            .filter_map(|t| absolute_step(path_cost, len, t, win.half))
            .max_by(|a, b| a.2.total_cmp(&b.2));
        let rose = path.is_some_and(|(before, after, z)| {
            z >= params.confirm_z && after - before > params.residual * delta
        });
        if !rose {
            return true;
        }
    }
    false
}
