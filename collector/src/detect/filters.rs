//! The filters between a significant step and a report: persistence (went-away) and cost shift.

use super::changepoint::{self, Windows};
use super::series::{BaseSums, CountSums, FnSums, FunctionSeries, ServiceSeries};
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

/// The largest step at any split within `tol` of `t` (or smallest when `want_decrease`).
pub(crate) fn step_near(
    base: &BaseSums,
    c: &CountSums,
    win: Windows,
    t: usize,
    tol: usize,
    want_decrease: bool,
) -> Option<changepoint::StepFit> {
    let len = base.len();
    let mut best: Option<changepoint::StepFit> = None;
    for s in t.saturating_sub(tol)..=(t + tol).min(len.saturating_sub(1)) {
        let l = s.saturating_sub(win.half);
        let r = (s + win.half).min(len);
        if s <= l || r <= s {
            continue;
        }
        let Some(f) = changepoint::step_at(base, c, l, s, r) else {
            continue;
        };
        let better = match best {
            None => true,
            Some(b) => (want_decrease && f.z < b.z) || (!want_decrease && f.z > b.z),
        };
        if better {
            best = Some(f);
        }
    }
    best
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

/// Whether the increase `delta` of `f`'s `metric` at `onset` is cost moving along its call path.
///
/// It is when a related function (caller, callee or sibling) lost a comparable amount of the same
/// metric at the same onset (± `tol`) and the path's combined cost did not rise: the total share of
/// the pair's caller where the input has it, else the sum of the pair's own series.
#[allow(clippy::too_many_arguments)]
pub(crate) fn is_cost_shift(
    base: &BaseSums,
    sums: &[FnSums],
    series: &ServiceSeries,
    rel: &Relations,
    win: Windows,
    f: usize,
    metric: Metric,
    onset: usize,
    delta: f64,
    params: ShiftParams,
) -> bool {
    for g in rel.related(f) {
        let Some(dec) = step_near(base, sums[g].get(metric), win, onset, params.tol, true) else {
            continue;
        };
        if dec.z > -params.confirm_z || dec.before - dec.after < params.shift_ratio * delta {
            continue;
        }
        let path_fit = match rel.path_root(f, g) {
            Some(root) => step_near(base, &sums[root].total, win, onset, params.tol, false),
            None => {
                let (a, b) = (&series.functions[f], &series.functions[g]);
                let pick = |x: &FunctionSeries, i: usize| match metric {
                    Metric::Total => f64::from(x.k_total[i]),
                    Metric::SelfShare => f64::from(x.k_self[i]),
                };
                let combined = CountSums::new(
                    (0..base.len()).map(|i| pick(a, i) + pick(b, i)),
                    &series.samples,
                );
                step_near(base, &combined, win, onset, params.tol, false)
            }
        };
        let rose = path_fit.is_some_and(|p| {
            p.z >= params.confirm_z && p.after - p.before > params.residual * delta
        });
        if !rose {
            return true;
        }
    }
    false
}
