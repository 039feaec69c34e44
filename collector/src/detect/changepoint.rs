//! The change-point test: a local step against binomial (quasi-binomial) noise, with a trend nuisance.
//!
//! At a split `t`, the buckets of `[t − w, t)` and `[t, t + w)` are fitted by weighted least squares
//! (weights `n_i`, the service's samples, so that each bucket counts by how many samples stand behind
//! its share) with two levels and one common slope: `y_i = a_L + b·(i − t)` before and `a_R + b·(i − t)`
//! after. The step is `δ = a_R − a_L`. Under the binomial model `Var(y_i) = p(1 − p)/n_i`, so
//! `Var(δ) = φ·p(1 − p)·(1/N_L + 1/N_R + (x̄_R − x̄_L)²/D)` with `p` the pooled share, `N` the samples
//! on each side, `x̄` their mean centred position and `D` the pooled within-side Σn(x − x̄)².
//! `φ ≥ 1` is the quasi-binomial dispersion factor: the weighted residual sum of squares over its
//! expectation `(m − 3)·p(1 − p)`, so extra-binomial noise widens the test instead of raising alarms.
//! `z = δ/√Var(δ)`.
//!
//! The common slope is what keeps daily seasonality quiet: a smooth cycle is locally a line, which the
//! slope absorbs, while a deploy's step is not. (Residual-based dispersion alone does not do it: a
//! seasonal cycle's residuals are strongly autocorrelated, so φ understates the variance of a
//! half-day mean.) It costs power: for equal windows of `m` buckets the standard error is `√(8/m)`
//! instead of `√(2/m)` bucket-σ, still a z of about 19 for a 5σ step with `m = 120`.

use super::series::{BaseSums, CountSums};

/// One fitted step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepFit {
    /// Split bucket: the first bucket after the step.
    pub(crate) t: usize,
    /// The test statistic; positive for an increase.
    pub(crate) z: f64,
    /// Mean share over the left window.
    pub(crate) before: f64,
    /// Mean share over the right window.
    pub(crate) after: f64,
    /// The quasi-binomial dispersion factor φ of this window (≥ 1).
    pub(crate) dispersion: f64,
}

/// Fits the step at `t` with left window `[l, t)` and right window `[t, r)`.
///
/// `None` where the window has no samples, a degenerate share (0 or 1) or too few buckets to fit.
pub(crate) fn step_at(
    base: &BaseSums,
    c: &CountSums,
    l: usize,
    t: usize,
    r: usize,
) -> Option<StepFit> {
    fit(base, c, l, t, r, false)
}

/// The inner computation, shared by [`step_at`] and the scan; `increases_only` skips the residual
/// work for splits whose step is not an increase.
#[inline]
fn fit(
    base: &BaseSums,
    c: &CountSums,
    l: usize,
    t: usize,
    r: usize,
    increases_only: bool,
) -> Option<StepFit> {
    let tf = t as f64;
    let nl = base.n[t] - base.n[l];
    let nr = base.n[r] - base.n[t];
    if nl <= 0.0 || nr <= 0.0 {
        return None;
    }
    let kl = c.k[t] - c.k[l];
    let kr = c.k[r] - c.k[t];
    let before = kl / nl;
    let after = kr / nr;
    let nxl = base.nx[t] - base.nx[l];
    let nxr = base.nx[r] - base.nx[t];
    let sxl = nxl - tf * nl;
    let sxr = nxr - tf * nr;
    let sxxl = (base.nxx[t] - base.nxx[l]) - 2.0 * tf * nxl + tf * tf * nl;
    let sxxr = (base.nxx[r] - base.nxx[t]) - 2.0 * tf * nxr + tf * tf * nr;
    let (xl, xr) = (sxl / nl, sxr / nr);
    let d = sxxl - sxl * xl + sxxr - sxr * xr;
    if d <= 1e-9 * (nl + nr) {
        return None;
    }
    let kx = (c.kx[r] - c.kx[l]) - tf * (kl + kr);
    let slope = (kx - kl * xl - kr * xr) / d;
    let al = before - slope * xl;
    let ar = after - slope * xr;
    let delta = ar - al;
    if increases_only && delta <= 0.0 {
        return None;
    }
    let p = (kl + kr) / (nl + nr);
    let pq = p * (1.0 - p);
    if pq <= 0.0 {
        return None;
    }
    let m = base.m[r] - base.m[l];
    let dispersion = if m > 3.0 {
        let rss = (c.kkn[r] - c.kkn[l]) - (al * kl + ar * kr + slope * kx);
        (rss / ((m - 3.0) * pq)).max(1.0)
    } else {
        1.0
    };
    let dx = xr - xl;
    let var = dispersion * pq * (1.0 / nl + 1.0 / nr + dx * dx / d);
    Some(StepFit {
        t,
        z: delta / var.sqrt(),
        before,
        after,
        dispersion,
    })
}

/// Window geometry for the scans, in buckets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    /// Buckets on each side of a split.
    pub(crate) half: usize,
    /// Fewest buckets a side may have (near the ends of the series).
    pub(crate) min_side: usize,
}

/// z of an increase at every split in `[lo, hi]` into `out` (indexed by split; `−∞` where untestable).
pub(crate) fn scan_increases(
    base: &BaseSums,
    c: &CountSums,
    win: Windows,
    lo: usize,
    hi: usize,
    out: &mut Vec<f64>,
) {
    let len = base.len();
    out.clear();
    out.resize(len + 1, f64::NEG_INFINITY);
    let (first, last) = (
        lo.max(win.min_side),
        hi.min(len.saturating_sub(win.min_side)),
    );
    for (t, slot) in out.iter_mut().enumerate().take(last + 1).skip(first) {
        let l = t.saturating_sub(win.half);
        let r = (t + win.half).min(len);
        if let Some(f) = fit(base, c, l, t, r, true) {
            *slot = f.z;
        }
    }
}

/// The best splits with `z ≥ threshold`, strongest first, at least `sep` buckets apart.
///
/// Splits farther apart than one window half do not see each other's step, so each peak is a
/// separate event rather than the flank of a stronger one.
pub(crate) fn peaks(z: &[f64], threshold: f64, sep: usize, max: usize) -> Vec<usize> {
    let mut found: Vec<usize> = Vec::new();
    let mut order: Vec<usize> = (0..z.len()).filter(|&t| z[t] >= threshold).collect();
    order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    for t in order {
        if found.len() >= max {
            break;
        }
        if found.iter().all(|&f| f.abs_diff(t) > sep) {
            found.push(t);
        }
    }
    found
}

/// The strongest significant decrease after `onset` that brings the share back to `level` or below.
///
/// Windows never reach back before `onset`, so the step being tested cannot mask its own reversal.
pub(crate) fn find_revert(
    base: &BaseSums,
    c: &CountSums,
    win: Windows,
    onset: usize,
    threshold: f64,
    level: f64,
) -> Option<usize> {
    let len = base.len();
    let mut best: Option<(usize, f64)> = None;
    // Three buckets of the raised level are enough to pin a short blip's end.
    let first = onset + 3;
    let last = len.saturating_sub(win.min_side);
    for t2 in first..=last {
        let l = t2.saturating_sub(win.half).max(onset);
        let r = (t2 + win.half).min(len);
        let Some(f) = fit(base, c, l, t2, r, false) else {
            continue;
        };
        if f.z <= -threshold && f.after <= level && best.is_none_or(|(_, z)| f.z < z) {
            best = Some((t2, f.z));
        }
    }
    best.map(|(t, _)| t)
}

/// Standard normal upper tail `P(Z > z)`.
pub(crate) fn normal_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7, which
/// is plenty for reporting p-values and for deriving thresholds).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The `z` whose upper tail is `p` (bisection on [`normal_tail`]; only run once per detection).
pub(crate) fn normal_quantile_upper(p: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if normal_tail(mid) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The normal tail and its inverse agree with textbook values.
    #[test]
    fn normal_tail_matches_table() {
        assert!((normal_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((normal_quantile_upper(2.866_515_7e-7) - 5.0).abs() < 1e-3);
    }

    /// A noiseless step of known size is fitted exactly, with the trend absorbed.
    #[test]
    fn step_fit_recovers_step_on_a_trend() {
        let samples = vec![1000_u32; 100];
        let k: Vec<f64> = (0..100)
            .map(|i| 100.0 + i as f64 + if i >= 50 { 50.0 } else { 0.0 })
            .collect();
        let base = BaseSums::new(&samples);
        let c = CountSums::new(k.iter().copied(), &samples);
        let f = step_at(&base, &c, 20, 50, 80).expect("fit");
        let delta_share = 50.0 / 1000.0;
        // Without noise the dispersion is floored at 1, so z is δ over the binomial standard error.
        assert!(f.z > 0.0);
        let p = c.k[80] - c.k[20];
        let p = p / 60_000.0;
        let se =
            (p * (1.0 - p) * (1.0 / 30_000.0 + 1.0 / 30_000.0 + 900.0 / (2.0 * 1000.0 * 2247.5)))
                .sqrt();
        assert!(
            (f.z - delta_share / se).abs() / f.z < 1e-6,
            "z {} vs {}",
            f.z,
            delta_share / se
        );
    }
}
