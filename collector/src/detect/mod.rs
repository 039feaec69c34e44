//! Regression detection: finds lasting step increases in functions' CPU shares, FBDetect-style.
//!
//! Pure computation, no database: the caller reads a [`ServiceSeries`] per service (per time bucket
//! the service's samples `n`, and per function `k_total` — samples whose stack contains it — and
//! `k_self` — samples where it is the leaf) and stores the [`RegressionReport`]s that [`detect`]
//! returns; [`rank_changes`] then orders candidate changes as their root cause. Everything is
//! `serde`, so inputs and reports can be kept as JSON.
//!
//! # Method
//!
//! For every function and both shares (`k_total/n`, `k_self/n`) the detector scans every split point
//! with a local two-segment test that knows the data are sampled counts (see
//! [`DetectorConfig::window_secs`] and the `changepoint` module): weighted least squares on
//! `[t − w, t)` and `[t, t + w)` with a level per side and a common slope, a binomial variance
//! `p(1 − p)/n` per bucket, inflated by the quasi-binomial dispersion estimated from the window's own
//! residuals. The common slope absorbs smooth daily seasonality; the dispersion absorbs
//! extra-binomial noise. Only increases are regressions.
//!
//! **Threshold.** A step is significant when `z ≥ z*` with
//! `z* = Φ⁻¹(1 − α / (2·T))`: a Bonferroni bound over the `T` split points of the window and the two
//! shares, with `α` = [`DetectorConfig::false_reports_per_series`] (default 10⁻³), so that pure noise
//! yields at most about one false report per 1,000 series-windows. Over many series the expected
//! number of false reports is `α` times their number, which is the multiple-comparison budget a
//! fleet operator actually pays. For a one-day window of one-minute buckets `z* ≈ 4.97`. Adjacent
//! splits share most of their data, so the bound is conservative.
//!
//! A significant step is then reported only if it is also
//! - **large enough**: `after − before ≥ min_absolute_increase` and
//!   `≥ min_relative_increase · before` (shares, over the windows either side);
//! - **persistent**: it held for [`DetectorConfig::persistence_secs`] after the onset. A step that
//!   falls back within that period (a significant decrease to below `before + revert_fraction·step`,
//!   or a second half of the period no longer raised) *went away* and is dropped (kept with
//!   [`State::WentAway`] if [`DetectorConfig::include_went_away`]); one that fell back later is
//!   [`State::Fixed`]. Steps younger than the persistence period are not reported yet;
//! - **not a cost shift**: cost that moved between functions of one call path (rename, inlining,
//!   caller → callee) is not a regression. An increase of `f` is suppressed when a related function
//!   (caller, callee, or sibling under a common caller, from [`FunctionSeries::callers`]) lost at
//!   least `shift_ratio` of it at the same onset (± `group_tolerance_secs`, significant at
//!   `confirm_z`) and beyond what the rest of the service lost around `f` (in a CPU-bound
//!   service a slower function squeezes all the others in proportion), and the path's combined cost — the pair's (common) caller's total where the
//!   input has it, otherwise the pair's summed series — did not rise significantly by more than
//!   `shift_residual` of the increase. This test is on absolute cost (samples per bucket), not on
//!   shares: shares always sum to the service, so a slower function's siblings lose share even
//!   when their own cost is unchanged, and a caller that holds all of the service's time keeps a
//!   100% share while the service burns more CPU.
//!
//! Regressions with onsets within `group_tolerance_secs` whose functions lie on one call path
//! (one calls the other, transitively, or they share a direct caller) become one report.
//!
//! # Example
//!
//! ```
//! use fleetprof_collector::detect::{detect, DetectorConfig, FunctionSeries, ServiceSeries, State};
//!
//! // A day of one-minute buckets, 1,000 samples each; `parse` goes from 5% to 8% at 12:00.
//! let buckets = 1440;
//! let k: Vec<u32> = (0..buckets).map(|i| if i < 720 { 50 + (i % 3) as u32 } else { 80 + (i % 3) as u32 }).collect();
//! let series = ServiceSeries {
//!     service: "checkout".into(),
//!     start_unix_s: 1_700_000_000,
//!     bucket_secs: 60,
//!     frequency_hz: 19.0,
//!     samples: vec![1000; buckets],
//!     energy_joules: Vec::new(),
//!     functions: vec![FunctionSeries {
//!         function: "parse".into(),
//!         file: Some("src/parse.rs".into()),
//!         callers: vec![],
//!         k_total: k.clone(),
//!         k_self: k,
//!     }],
//! };
//! let reports = detect(&series, &DetectorConfig::default())?;
//! assert_eq!(reports.len(), 1);
//! let r = &reports[0];
//! assert_eq!(r.onset_unix_s, 1_700_000_000 + 720 * 60);
//! assert_eq!(r.state, State::Open);
//! assert!((r.members[0].total_before - 0.051).abs() < 1e-3);
//! # Ok::<(), fleetprof_collector::detect::DetectError>(())
//! ```

mod changepoint;
mod filters;
mod group;
mod rootcause;
mod series;

use serde::{Deserialize, Serialize};

pub use rootcause::{Candidate, ChangeRecord, Deploy, RankConfig, VersionBoundary, rank_changes};
pub use series::{FunctionSeries, ServiceSeries};

use changepoint::Windows;
use filters::{Relations, ShiftParams};
use series::{BaseSums, FnSums};

/// Why detection could not run on an input.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A per-bucket vector's length differs from the service's `samples`.
    #[error("series {series} has {found} buckets, expected {expected}")]
    LengthMismatch {
        /// Which vector.
        series: String,
        /// The service's bucket count.
        expected: usize,
        /// This vector's.
        found: usize,
    },
    /// A function has more samples than its service (or more self than total samples) in a bucket.
    #[error("function {function} counts more samples than possible in bucket {bucket}")]
    CountExceedsTotal {
        /// The function.
        function: String,
        /// The bucket's index.
        bucket: usize,
    },
    /// A configuration or series parameter is out of range.
    #[error("invalid parameter: {what}")]
    InvalidParameter {
        /// What is wrong.
        what: &'static str,
    },
}

/// Tuning of [`detect`]; every default is stated on its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Length of each side of the local step test. Longer finds smaller steps but bends more of a
    /// seasonal cycle into the "step". Default: 7200 s (120 one-minute buckets).
    pub window_secs: u32,
    /// Expected false reports per series per window from pure binomial noise, `α` of the threshold.
    /// Default: 0.001.
    pub false_reports_per_series: f64,
    /// Fixed `z*` instead of the one derived from `false_reports_per_series`. Default: `None`.
    pub z_threshold: Option<f64>,
    /// z that a related decrease or a path's increase must reach at an already known onset (the
    /// cost-shift filter; no search over split points, so no multiple-comparison penalty). Default: 3.
    pub confirm_z: f64,
    /// Smallest reportable increase of a share, absolute. Default: 0.0001 (0.01% of the service).
    pub min_absolute_increase: f64,
    /// Smallest reportable increase of a share, relative to its level before. Default: 0.02.
    pub min_relative_increase: f64,
    /// How long a step must hold to be reported. Default: 7200 s.
    pub persistence_secs: u32,
    /// A step has reverted once the share is back below `before + revert_fraction · step`.
    /// Default: 0.5.
    pub revert_fraction: f64,
    /// A related function's decrease must be at least this fraction of an increase to make it a cost
    /// shift (beyond what a CPU-bound service's squeeze explains, see `filters::lost_ground`: a
    /// true move loses all of it). Default: 0.75 — at 0.5, siblings whose costs moved 1–2 points
    /// between two builds of the same code (layout) explained a real 25% slowdown away.
    pub shift_ratio: f64,
    /// A cost shift's path may still rise by this fraction of the increase. Default: 0.25.
    pub shift_residual: f64,
    /// Onsets this close are "the same" for grouping and cost shifts. Default: 120 s.
    pub group_tolerance_secs: u32,
    /// Separate steps tested per function and share, strongest first. Default: 3.
    pub max_steps_per_series: usize,
    /// Return went-away steps too (state [`State::WentAway`]), e.g. for an audit table. Default: false.
    pub include_went_away: bool,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            window_secs: 7200,
            false_reports_per_series: 1e-3,
            z_threshold: None,
            confirm_z: 3.0,
            min_absolute_increase: 1e-4,
            min_relative_increase: 0.02,
            persistence_secs: 7200,
            revert_fraction: 0.5,
            shift_ratio: 0.75,
            shift_residual: 0.25,
            group_tolerance_secs: 120,
            max_steps_per_series: 3,
            include_went_away: false,
        }
    }
}

impl DetectorConfig {
    /// The `z*` used for a series of `buckets` buckets (see the module documentation).
    pub fn threshold_for(&self, buckets: usize) -> f64 {
        self.z_threshold.unwrap_or_else(|| {
            let tests = 2.0 * buckets.max(1) as f64;
            changepoint::normal_quantile_upper(self.false_reports_per_series / tests)
        })
    }

    fn validate(&self) -> Result<(), DetectError> {
        let bad = |what| Err(DetectError::InvalidParameter { what });
        if self.window_secs == 0 {
            return bad("window_secs must be positive");
        }
        if !(self.false_reports_per_series > 0.0 && self.false_reports_per_series < 1.0) {
            return bad("false_reports_per_series must be in (0, 1)");
        }
        if !(0.0..=1.0).contains(&self.revert_fraction) || !(0.0..=1.0).contains(&self.shift_ratio)
        {
            return bad("revert_fraction and shift_ratio must be in [0, 1]");
        }
        Ok(())
    }
}

/// Which share a regression was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `k_total / n`: the function and everything it calls.
    Total,
    /// `k_self / n`: the function's own code.
    SelfShare,
}

/// Where a regression stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Still raised at the end of the series.
    Open,
    /// Fell back within the persistence period: not a regression.
    WentAway,
    /// Held longer than the persistence period, then fell back.
    Fixed,
}

/// One function's regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// The function.
    pub function: String,
    /// Its source file, if known.
    pub file: Option<String>,
    /// The share the step was found in (the more significant one if both rose).
    pub metric: Metric,
    /// Index of the first bucket after the step.
    pub onset_bucket: usize,
    /// Start of that bucket, seconds since the Unix epoch.
    pub onset_unix_s: i64,
    /// Mean self share over the window before the onset.
    pub self_before: f64,
    /// Mean self share after the onset (until it reverted, if it did).
    pub self_after: f64,
    /// Mean total share before the onset.
    pub total_before: f64,
    /// Mean total share after the onset.
    pub total_after: f64,
    /// CPU cores the function used before, in `metric`: share × service samples per bucket /
    /// (frequency × bucket seconds).
    pub cores_before: f64,
    /// CPU cores after, in `metric`.
    pub cores_after: f64,
    /// Watts before (share × the service's measured power), where energy was measured.
    pub watts_before: Option<f64>,
    /// Watts after, where energy was measured.
    pub watts_after: Option<f64>,
    /// The step's test statistic.
    pub z: f64,
    /// Its p-value, Bonferroni-adjusted over split points and both shares (capped at 1).
    pub p_value: f64,
    /// Extra-binomial dispersion factor φ estimated around the step (1 = pure binomial noise).
    pub dispersion: f64,
    /// Open, went-away or fixed.
    pub state: State,
    /// When the share fell back, if it did and the bucket is known.
    pub reverted_unix_s: Option<i64>,
}

/// Regressions with one root cause: same service, onset and call path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// The service.
    pub service: String,
    /// Onset of the most significant member, seconds since the Unix epoch.
    pub onset_unix_s: i64,
    /// Open if any member is; else fixed if any is; else went-away.
    pub state: State,
    /// The most significant member's z.
    pub z: f64,
    /// The most significant member's adjusted p-value.
    pub p_value: f64,
    /// The largest member's increase in CPU cores (members on one path overlap, so not their sum).
    pub delta_cores: f64,
    /// The largest member's increase in watts, where energy was measured.
    pub delta_watts: Option<f64>,
    /// The functions, most significant first.
    pub members: Vec<Regression>,
}

/// A step that passed the significance, effect and persistence tests.
struct Step {
    function: usize,
    metric: Metric,
    t: usize,
    z: f64,
    dispersion: f64,
    fate: filters::Fate,
}

/// Finds the regressions in one service's series. Sequential: run services in parallel for a fleet.
pub fn detect(
    series: &ServiceSeries,
    config: &DetectorConfig,
) -> Result<Vec<RegressionReport>, DetectError> {
    series.validate()?;
    config.validate()?;
    let len = series.samples.len();
    let bucket = series.bucket_secs;
    let half = (config.window_secs.div_ceil(bucket) as usize).max(8);
    let win = Windows {
        half,
        min_side: (half / 12).max(4),
    };
    let persist = config.persistence_secs.div_ceil(bucket) as usize;
    let tol = (config.group_tolerance_secs / bucket) as usize;
    if len < persist + 2 * win.min_side {
        return Ok(Vec::new());
    }
    let threshold = config.threshold_for(len);
    let base = BaseSums::new(&series.samples);
    let sums: Vec<FnSums> = series
        .functions
        .iter()
        .map(|f| FnSums::new(f, &series.samples))
        .collect();

    let mut steps: Vec<Step> = Vec::new();
    let mut z = Vec::new();
    for (fi, s) in sums.iter().enumerate() {
        let metrics: &[Metric] = if s.self_.is_some() {
            &[Metric::Total, Metric::SelfShare]
        } else {
            &[Metric::Total]
        };
        let mut found: Vec<Step> = Vec::new();
        for &metric in metrics {
            let c = s.get(metric);
            changepoint::scan_increases(&base, c, win, 0, len - persist, &mut z);
            for t in changepoint::peaks(&z, threshold, half, config.max_steps_per_series) {
                let l = t.saturating_sub(half);
                let Some(fit) = changepoint::step_at(&base, c, l, t, (t + half).min(len)) else {
                    continue;
                };
                let rise = fit.after - fit.before;
                if rise < config.min_absolute_increase
                    || rise < config.min_relative_increase * fit.before
                {
                    continue;
                }
                let fate = filters::fate(
                    &base,
                    c,
                    win,
                    t,
                    fit.before,
                    fit.after,
                    persist,
                    config.revert_fraction,
                    threshold,
                );
                if fate.state == State::WentAway && !config.include_went_away {
                    continue;
                }
                // The same step seen in both shares is one regression: keep the more significant.
                if let Some(other) = found.iter_mut().find(|o| o.t.abs_diff(t) <= tol) {
                    if fit.z > other.z {
                        *other = Step {
                            function: fi,
                            metric,
                            t,
                            z: fit.z,
                            dispersion: fit.dispersion,
                            fate,
                        };
                    }
                    continue;
                }
                found.push(Step {
                    function: fi,
                    metric,
                    t,
                    z: fit.z,
                    dispersion: fit.dispersion,
                    fate,
                });
            }
        }
        steps.extend(found);
    }
    if steps.is_empty() {
        return Ok(Vec::new());
    }

    let rel = Relations::new(&series.functions);
    let shift = ShiftParams {
        confirm_z: config.confirm_z,
        shift_ratio: config.shift_ratio,
        residual: config.shift_residual,
        tol: tol.max(1),
    };
    let tests = 2.0 * len as f64;
    let found: Vec<(usize, Regression)> = steps
        .into_iter()
        .filter(|s| {
            !filters::is_cost_shift(&base, series, &rel, win, s.function, s.metric, s.t, shift)
        })
        .map(|s| (s.function, regression(series, &base, &sums, win, &s, tests)))
        .collect();
    Ok(group::group(&series.service, found, &rel, tol))
}

/// Builds the reported figures of one step.
fn regression(
    series: &ServiceSeries,
    base: &BaseSums,
    sums: &[FnSums],
    win: Windows,
    s: &Step,
    tests: f64,
) -> Regression {
    let f = &series.functions[s.function];
    let len = base.len();
    let (b0, t, b1) = (
        s.t.saturating_sub(win.half),
        s.t,
        s.fate.reverted_at.unwrap_or(len).min(s.t + win.half),
    );
    let share = |c: &series::CountSums, a: usize, b: usize| {
        let n = base.n[b] - base.n[a];
        if n > 0.0 { (c.k[b] - c.k[a]) / n } else { 0.0 }
    };
    let fs = &sums[s.function];
    let per_core = f64::from(series.bucket_secs) * series.frequency_hz;
    let cores = |a: usize, b: usize| (base.n[b] - base.n[a]) / ((b - a).max(1) as f64 * per_core);
    let watts = |a: usize, b: usize| {
        let e: Vec<f64> = series
            .energy_joules
            .get(a..b)?
            .iter()
            .flatten()
            .copied()
            .collect();
        (!e.is_empty())
            .then(|| e.iter().sum::<f64>() / (e.len() as f64 * f64::from(series.bucket_secs)))
    };
    let (before, after) = (
        share(fs.get(s.metric), b0, t),
        share(fs.get(s.metric), t, b1),
    );
    let (wb, wa) = (watts(b0, t), watts(t, b1));
    let bucket_time = |i: usize| series.start_unix_s + i as i64 * i64::from(series.bucket_secs);
    Regression {
        function: f.function.clone(),
        file: f.file.clone(),
        metric: s.metric,
        onset_bucket: s.t,
        onset_unix_s: bucket_time(s.t),
        self_before: share(fs.get(Metric::SelfShare), b0, t),
        self_after: share(fs.get(Metric::SelfShare), t, b1),
        total_before: share(&fs.total, b0, t),
        total_after: share(&fs.total, t, b1),
        cores_before: before * cores(b0, t),
        cores_after: after * cores(t, b1),
        watts_before: wb.map(|w| w * before),
        watts_after: wa.map(|w| w * after),
        z: s.z,
        p_value: (changepoint::normal_tail(s.z) * tests).min(1.0),
        dispersion: s.dispersion,
        state: s.fate.state,
        reverted_unix_s: s.fate.reverted_at.map(bucket_time),
    }
}

#[cfg(test)]
mod tests;
