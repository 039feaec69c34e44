//! Regressions: detection and root cause over the stored profiles, and the `regressions` table.
//!
//! [`run_detection`] reads each service's per-bucket series out of ClickHouse, runs the pure
//! detector ([`crate::detect::detect`]) on it, ranks the recorded changes and deploys as root
//! causes ([`crate::detect::rank_changes`], top [`DetectOptions::max_candidates`]), and stores
//! every report in `regressions`. [`list`] and [`get`] read them back for the CLI and the agent.
//!
//! # What is tested
//!
//! For every function of a service with at least [`SeriesOptions::min_share`] (0.2%) of the
//! window's samples (the hottest [`SeriesOptions::max_functions`], 2000; not the profiler's
//! `[unknown]` placeholder for frames it could not unwind), two series per bucket:
//! its **total share** `k_total/n` (samples whose stack contains it) and its **self share**
//! `k_self/n` (samples where it is the leaf). Buckets are [`SeriesOptions::bucket_secs`] long
//! (default 60 s, read from the `function_minutes`/`service_minutes` rollups; other sizes are
//! computed from `samples`) and aligned to the epoch, so re-runs bucket identically.
//!
//! **Cut stacks are left out of both.** Samples whose stack the profiler could not unwind to its
//! root (root frame `[truncated: …]`, or a `[stack lost: …]` stack; [`crate::store::CUT_STACK`])
//! count in neither `k` nor `n`: the shares are those of the fully unwound samples. Otherwise a
//! change in unwinding quality alone — a daemon restart, unwind tables dropped for capacity, a
//! stack map filling up — would move every root function's share (`main` is on every whole stack
//! and on none of the cut ones) and look like a fleet-wide regression. The exception: when most
//! of a service's samples over the range are cut (the profiler had no unwind tables for its
//! code), they stay, since their leaf frames are then all the signal there is.
//!
//! # Method (from [`crate::detect`])
//!
//! At every split point `t` the detector fits, by weighted least squares on `[t − w, t)` and
//! `[t, t + w)` (`w` = `--window`, default 2 h), a level per side and a common slope, with the
//! binomial variance `p(1 − p)/n` per bucket inflated by the quasi-binomial dispersion estimated
//! from the window's own residuals. The slope absorbs daily seasonality, the dispersion absorbs
//! extra-binomial noise. Only increases count.
//!
//! **Threshold.** A step is significant when `z ≥ z* = Φ⁻¹(1 − α / (2·T))`: Bonferroni over the `T`
//! split points and the two shares, with `α` = 10⁻³ expected false reports per series and window
//! (`z* ≈ 4.97` for a day of one-minute buckets). A significant step is reported only if it is
//! - **large enough**: the share rose by at least 0.01 percentage points and by at least 2% of its
//!   level before;
//! - **persistent**: it held for `--persistence` (default 2 h) after the onset — steps that fell
//!   back within it *went away* and are dropped; steps younger than it are not reported yet;
//!   steps that fell back later are reported as `fixed`;
//! - **not a cost shift**: no related function (caller, callee or sibling, from the stacks) lost
//!   at least half of the increase at the same onset while the call path's combined cost stayed
//!   flat (renames, inlining, work moved between caller and callee).
//!
//! Callers come from adjacent frames of the stacks, counting only pairs that carry at least
//! [`MIN_CALLER_SHARE`] (1%) of the callee's samples: frame-pointer unwinding that skips a
//! leaf's caller invents rare edges, which would make unrelated functions siblings.
//!
//! Regressions with onsets within 2 minutes whose functions lie on one call path become one
//! report. A report's cost is its largest member's increase in CPU cores (`share × samples /
//! (frequency × bucket)`) and, where RAPL energy was measured, in watts.
//!
//! # Root cause
//!
//! Each report's candidates are the changes in `changes` of the service (committed since the
//! window's start minus [`DetectOptions::change_lookback_secs`]) and the commits deployed to it
//! (`deploys`), scored by (see [`crate::detect::rank_changes`]): a version switch in the samples
//! at the onset to the version the change was deployed as (+10), deploy time just before the onset
//! (+3, decaying over an hour; a change deployed only after the onset scores 0), touching a
//! regressed function (+4, +1 per further one) or its source file (+2).
//!
//! # The `regressions` table
//!
//! One row per report and run, `ReplacingMergeTree(updated)`, read with `FINAL`:
//! - `id`: 16 hex digits of SHA-256 over the service, the sorted member functions and the onset
//!   (floored to the bucket) — stable across re-runs; a re-run that finds a report of the same
//!   service with a common member within [`crate::detect::DetectorConfig::group_tolerance_secs`]
//!   (at least two buckets) of a stored onset keeps that row's `id` and `detected`, so re-running
//!   detection updates rows instead of duplicating them;
//! - `functions`: the members, most significant first; `onset`, `detected` (first found),
//!   `updated` (this run);
//! - `before_share`, `after_share`: the most significant member's share (0..1) in the metric the
//!   step was found in (total or self) before and after the onset;
//! - `cost`: the increase in CPU cores (`report.delta_cores`); `cost_samples`: the same in samples
//!   per second (`cost × frequency`);
//! - `significance`: z; `state`: `open`, `fixed` or `went_away`;
//! - `report`: JSON of [`crate::detect::RegressionReport`]; `candidates`: JSON of
//!   `Vec<`[`crate::detect::Candidate`]`>`, likeliest first. The agent reads these two.
//!
//! ```no_run
//! # async fn demo(store: &fleetprof_collector::store::Store) -> Result<(), fleetprof_collector::regressions::RegressionsError> {
//! use fleetprof_collector::{query::Window, regressions::{self, DetectOptions}};
//! let options = DetectOptions::new(Window::last(std::time::Duration::from_secs(86_400)));
//! let run = regressions::run_detection(store, &[], &options).await?;
//! for r in &run.regressions {
//!     println!("{} {} {:?} Δ{:.2} cores", r.id, r.service, r.functions, r.report.delta_cores);
//! }
//! # Ok(()) }
//! ```

mod read;

use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use read::{
    DEFAULT_FREQUENCY_HZ, MIN_CALLER_SHARE, SeriesOptions, read_series, services,
    version_boundaries,
};

use crate::changes::{self, ChangesError};
use crate::detect::{
    self, Candidate, DetectError, DetectorConfig, Metric, RankConfig, RegressionReport, State,
};
use crate::query::Window;
use crate::store::{Store, StoreError};

/// Errors detecting, storing or reading regressions.
#[derive(Debug, thiserror::Error)]
pub enum RegressionsError {
    /// ClickHouse failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the changes to rank failed.
    #[error(transparent)]
    Changes(#[from] ChangesError),
    /// The detector rejected a service's series or the configuration.
    #[error("detecting regressions of {service}: {source}")]
    Detect {
        /// The service.
        service: String,
        /// The detector's error.
        #[source]
        source: DetectError,
    },
    /// A stored row's JSON could not be read (or a report could not be written as JSON).
    #[error("regression {id}: {source}")]
    Json {
        /// The regression's id.
        id: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An option is out of range.
    #[error("{0}")]
    BadArgument(String),
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> RegressionsError {
    move |e| RegressionsError::Store(StoreError::ch(what)(e))
}

/// What [`run_detection`] looks at and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    /// The window of samples to scan.
    pub window: Window,
    /// Buckets and function selection. Default: [`SeriesOptions::default`].
    pub series: SeriesOptions,
    /// The detector's tuning. Default: [`DetectorConfig::default`] (2 h window and persistence).
    pub detector: DetectorConfig,
    /// The ranking's tuning. Default: [`RankConfig::default`].
    pub rank: RankConfig,
    /// Candidates kept per report. Default: 5.
    pub max_candidates: usize,
    /// Changes committed this long before the window's start are still candidates. Default: 7 days.
    pub change_lookback_secs: i64,
}

impl DetectOptions {
    /// The defaults over `window`.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            series: SeriesOptions::default(),
            detector: DetectorConfig::default(),
            rank: RankConfig::default(),
            max_candidates: 5,
            change_lookback_secs: 7 * 86_400,
        }
    }
}

/// A detected regression as stored: the `regressions` row with its JSON decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRegression {
    /// Stable id (see the module documentation).
    pub id: String,
    /// The service.
    pub service: String,
    /// Member functions, most significant first.
    pub functions: Vec<String>,
    /// Onset, Unix seconds.
    pub onset: u32,
    /// When first detected, Unix seconds.
    pub detected: u32,
    /// When last updated, Unix seconds.
    pub updated: u32,
    /// The top member's share before the onset (0..1), in the metric of its step.
    pub before_share: f64,
    /// Its share after.
    pub after_share: f64,
    /// Extra samples per second.
    pub cost_samples: f64,
    /// Extra CPU cores.
    pub cost: f64,
    /// z of the step.
    pub significance: f64,
    /// Open, fixed or went away.
    pub state: State,
    /// Root-cause candidates, likeliest first.
    pub candidates: Vec<Candidate>,
    /// The detector's report.
    pub report: RegressionReport,
}

/// One service scanned by [`run_detection`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceScan {
    /// The service.
    pub service: String,
    /// Buckets with data (from its first to its last sample in the window).
    pub buckets: usize,
    /// Functions tested.
    pub functions: usize,
    /// Reports found.
    pub regressions: usize,
}

/// What [`run_detection`] did and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRun {
    /// The window scanned.
    pub window: Window,
    /// Every service scanned.
    pub services: Vec<ServiceScan>,
    /// The regressions found (and stored), by service, most significant first.
    pub regressions: Vec<StoredRegression>,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct RegressionRow {
    id: String,
    service: String,
    functions: Vec<String>,
    onset: u32,
    detected: u32,
    updated: u32,
    before_share: f64,
    after_share: f64,
    cost_samples: f64,
    cost: f64,
    significance: f64,
    state: String,
    candidates: String,
    report: String,
}

const SELECT: &str = "SELECT id, service, functions, toUInt32(onset) AS onset, \
    toUInt32(detected) AS detected, toUInt32(updated) AS updated, before_share, after_share, \
    cost_samples, cost, significance, state, candidates, report FROM regressions FINAL";

fn now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// `State` as stored: `open`, `went_away`, `fixed`.
pub fn state_name(state: State) -> &'static str {
    match state {
        State::Open => "open",
        State::WentAway => "went_away",
        State::Fixed => "fixed",
    }
}

fn parse_state(s: &str) -> Option<State> {
    [State::Open, State::WentAway, State::Fixed]
        .into_iter()
        .find(|st| state_name(*st) == s)
}

/// The stable id of a report: hex SHA-256 (first 16 digits) of the service, its member functions
/// sorted, and its onset floored to the bucket.
pub fn regression_id(
    service: &str,
    functions: &[String],
    onset_unix_s: i64,
    bucket_secs: u32,
) -> String {
    let mut members: Vec<&str> = functions.iter().map(String::as_str).collect();
    members.sort_unstable();
    members.dedup();
    let bucket = i64::from(bucket_secs.max(1));
    let onset = onset_unix_s.div_euclid(bucket) * bucket;
    let mut h = Sha256::new();
    h.update(service.as_bytes());
    h.update([0]);
    for m in members {
        h.update(m.as_bytes());
        h.update([0]);
    }
    h.update(onset.to_le_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Scans `services` (every service with samples in the window if empty), stores each report
/// found in `regressions` with its top candidates, and returns them.
pub async fn run_detection(
    store: &Store,
    services: &[String],
    options: &DetectOptions,
) -> Result<DetectionRun, RegressionsError> {
    let names = if services.is_empty() {
        read::services(store, options.window).await?
    } else {
        services.to_vec()
    };
    let mut run = DetectionRun {
        window: options.window,
        services: Vec::new(),
        regressions: Vec::new(),
    };
    for service in names {
        let Some(series) = read_series(store, &service, options.window, options.series).await?
        else {
            run.services.push(ServiceScan {
                service,
                buckets: 0,
                functions: 0,
                regressions: 0,
            });
            continue;
        };
        let reports = detect::detect(&series, &options.detector).map_err(|source| {
            RegressionsError::Detect {
                service: service.clone(),
                source,
            }
        })?;
        run.services.push(ServiceScan {
            service: service.clone(),
            buckets: series.samples.len(),
            functions: series.functions.len(),
            regressions: reports.len(),
        });
        if reports.is_empty() {
            continue;
        }
        let boundaries = version_boundaries(store, &service, options.window).await?;
        let since = i64::from(options.window.from) - options.change_lookback_secs;
        let changes = changes::change_records(store, &service, since).await?;
        let tolerance = i64::from(
            options
                .detector
                .group_tolerance_secs
                .max(2 * series.bucket_secs),
        );
        let existing = stored_near(store, &service, &reports, tolerance).await?;
        let mut rows = Vec::new();
        for report in reports {
            let mut candidates =
                detect::rank_changes(&report, &changes, &boundaries, &options.rank);
            candidates.truncate(options.max_candidates);
            let stored = to_stored(
                report,
                candidates,
                series.bucket_secs,
                series.frequency_hz,
                &existing,
                tolerance,
            );
            rows.push(to_row(&stored)?);
            run.regressions.push(stored);
        }
        insert(store, &rows).await?;
    }
    Ok(run)
}

/// Stored reports of `service` with onsets near those of `reports`.
async fn stored_near(
    store: &Store,
    service: &str,
    reports: &[RegressionReport],
    tolerance: i64,
) -> Result<Vec<StoredRegression>, RegressionsError> {
    let lo = reports.iter().map(|r| r.onset_unix_s).min().unwrap_or(0) - tolerance;
    let hi = reports.iter().map(|r| r.onset_unix_s).max().unwrap_or(0) + tolerance;
    let rows = store
        .client()
        .query(&format!(
            "{SELECT} WHERE service = ? AND onset >= toDateTime(?) AND onset <= toDateTime(?)"
        ))
        .bind(service)
        .bind(u32::try_from(lo.max(0)).unwrap_or(0))
        .bind(u32::try_from(hi.max(0)).unwrap_or(u32::MAX))
        .fetch_all::<RegressionRow>()
        .await
        .map_err(ch("reading stored regressions"))?;
    rows.into_iter().map(from_row).collect()
}

fn to_stored(
    report: RegressionReport,
    candidates: Vec<Candidate>,
    bucket_secs: u32,
    frequency_hz: f64,
    existing: &[StoredRegression],
    tolerance: i64,
) -> StoredRegression {
    let functions: Vec<String> = report.members.iter().map(|m| m.function.clone()).collect();
    let same = existing.iter().find(|e| {
        (i64::from(e.onset) - report.onset_unix_s).abs() <= tolerance
            && e.functions.iter().any(|f| functions.contains(f))
    });
    let now = now();
    let (id, detected) = match same {
        Some(e) => (e.id.clone(), e.detected),
        None => (
            regression_id(
                &report.service,
                &functions,
                report.onset_unix_s,
                bucket_secs,
            ),
            now,
        ),
    };
    let (before, after) = report
        .members
        .first()
        .map_or((0.0, 0.0), |m| match m.metric {
            Metric::Total => (m.total_before, m.total_after),
            Metric::SelfShare => (m.self_before, m.self_after),
        });
    StoredRegression {
        id,
        service: report.service.clone(),
        functions,
        onset: u32::try_from(report.onset_unix_s.max(0)).unwrap_or(u32::MAX),
        detected,
        updated: now,
        before_share: before,
        after_share: after,
        cost_samples: report.delta_cores * frequency_hz,
        cost: report.delta_cores,
        significance: report.z,
        state: report.state,
        candidates,
        report,
    }
}

fn to_row(r: &StoredRegression) -> Result<RegressionRow, RegressionsError> {
    let json = |source| RegressionsError::Json {
        id: r.id.clone(),
        source,
    };
    Ok(RegressionRow {
        id: r.id.clone(),
        service: r.service.clone(),
        functions: r.functions.clone(),
        onset: r.onset,
        detected: r.detected,
        updated: r.updated,
        before_share: r.before_share,
        after_share: r.after_share,
        cost_samples: r.cost_samples,
        cost: r.cost,
        significance: r.significance,
        state: state_name(r.state).to_owned(),
        candidates: serde_json::to_string(&r.candidates).map_err(json)?,
        report: serde_json::to_string(&r.report).map_err(json)?,
    })
}

fn from_row(r: RegressionRow) -> Result<StoredRegression, RegressionsError> {
    let json = |source| RegressionsError::Json {
        id: r.id.clone(),
        source,
    };
    let report: RegressionReport = serde_json::from_str(&r.report).map_err(json)?;
    let candidates: Vec<Candidate> = serde_json::from_str(&r.candidates).map_err(json)?;
    Ok(StoredRegression {
        state: parse_state(&r.state).unwrap_or(report.state),
        id: r.id,
        service: r.service,
        functions: r.functions,
        onset: r.onset,
        detected: r.detected,
        updated: r.updated,
        before_share: r.before_share,
        after_share: r.after_share,
        cost_samples: r.cost_samples,
        cost: r.cost,
        significance: r.significance,
        candidates,
        report,
    })
}

async fn insert(store: &Store, rows: &[RegressionRow]) -> Result<(), RegressionsError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = store
        .client()
        .insert::<RegressionRow>("regressions")
        .await
        .map_err(ch("storing regressions"))?;
    for row in rows {
        insert.write(row).await.map_err(ch("storing regressions"))?;
    }
    insert.end().await.map_err(ch("storing regressions"))
}

/// Which stored regressions [`list`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only this service. Default: all.
    pub service: Option<String>,
    /// Only this state. Default: all.
    pub state: Option<State>,
    /// Only onsets at or after this time (Unix seconds). Default: all.
    pub since: Option<u32>,
    /// At most this many. Default (0): 100.
    pub limit: u64,
}

/// Stored regressions matching `filter`, newest onset first.
pub async fn list(
    store: &Store,
    filter: &ListFilter,
) -> Result<Vec<StoredRegression>, RegressionsError> {
    let mut clauses = Vec::new();
    if filter.service.is_some() {
        clauses.push("service = ?");
    }
    if filter.state.is_some() {
        clauses.push("state = ?");
    }
    if filter.since.is_some() {
        clauses.push("onset >= toDateTime(?)");
    }
    let where_ = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let mut q = store.client().query(&format!(
        "{SELECT}{where_} ORDER BY onset DESC, service, id LIMIT ?"
    ));
    if let Some(s) = &filter.service {
        q = q.bind(s.as_str());
    }
    if let Some(s) = filter.state {
        q = q.bind(state_name(s));
    }
    if let Some(s) = filter.since {
        q = q.bind(s);
    }
    let limit = if filter.limit == 0 { 100 } else { filter.limit };
    let rows = q
        .bind(limit)
        .fetch_all::<RegressionRow>()
        .await
        .map_err(ch("reading regressions"))?;
    rows.into_iter().map(from_row).collect()
}

/// The stored regression `id` (a unique prefix of at least 4 digits works too), if any.
pub async fn get(store: &Store, id: &str) -> Result<Option<StoredRegression>, RegressionsError> {
    if id.len() < 4 {
        return Err(RegressionsError::BadArgument(format!(
            "regression id {id:?} is too short: give at least 4 digits"
        )));
    }
    let rows = store
        .client()
        .query(&format!(
            "{SELECT} WHERE startsWith(id, ?) ORDER BY updated DESC LIMIT 2"
        ))
        .bind(id)
        .fetch_all::<RegressionRow>()
        .await
        .map_err(ch("reading regressions"))?;
    let mut rows = rows.into_iter();
    match (rows.next(), rows.next()) {
        (Some(r), None) => Ok(Some(from_row(r)?)),
        (Some(r), Some(_)) if r.id == id => Ok(Some(from_row(r)?)),
        (Some(_), Some(_)) => Err(RegressionsError::BadArgument(format!(
            "regression id {id:?} is ambiguous: give more digits"
        ))),
        (None, _) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id ignores member order and where in its bucket the onset fell, and changes with the
    /// service, the members and the onset bucket.
    #[test]
    fn ids_are_stable() {
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let a = regression_id("checkout", &f(&["b", "a"]), 1_699_999_990, 60);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            a,
            regression_id("checkout", &f(&["a", "b"]), 1_700_000_030, 60)
        );
        assert_ne!(
            a,
            regression_id("checkout", &f(&["a", "b"]), 1_700_000_100, 60)
        );
        assert_ne!(
            a,
            regression_id("control", &f(&["a", "b"]), 1_699_999_990, 60)
        );
        assert_ne!(a, regression_id("checkout", &f(&["a"]), 1_699_999_990, 60));
    }

    fn report(onset: i64, functions: &[&str]) -> RegressionReport {
        let member = |f: &str| detect::Regression {
            function: f.to_owned(),
            file: None,
            metric: Metric::SelfShare,
            onset_bucket: 3,
            onset_unix_s: onset,
            self_before: 0.1,
            self_after: 0.125,
            total_before: 0.2,
            total_after: 0.225,
            cores_before: 0.1,
            cores_after: 0.125,
            watts_before: None,
            watts_after: None,
            z: 8.0,
            p_value: 1e-9,
            dispersion: 1.0,
            state: State::Open,
            reverted_unix_s: None,
        };
        RegressionReport {
            service: "checkout".into(),
            onset_unix_s: onset,
            state: State::Open,
            z: 8.0,
            p_value: 1e-9,
            delta_cores: 0.025,
            delta_watts: None,
            members: functions.iter().map(|f| member(f)).collect(),
        }
    }

    /// A re-run that finds the same step a bucket later, with another member, keeps the stored
    /// id and first-detection time; the shares stored are the step's metric's; rows round-trip.
    #[test]
    fn reruns_keep_the_stored_id() {
        let first = to_stored(report(1000, &["f"]), Vec::new(), 5, 99.0, &[], 10);
        assert_eq!(first.id, regression_id("checkout", &["f".into()], 1000, 5));
        assert_eq!((first.before_share, first.after_share), (0.1, 0.125));
        assert!((first.cost_samples - 0.025 * 99.0).abs() < 1e-9);
        let mut old = first.clone();
        old.detected = 42;
        let again = to_stored(report(1005, &["g", "f"]), Vec::new(), 5, 99.0, &[old], 10);
        assert_eq!(again.id, first.id);
        assert_eq!(again.detected, 42);
        let far = to_stored(
            report(1100, &["f"]),
            Vec::new(),
            5,
            99.0,
            std::slice::from_ref(&first),
            10,
        );
        assert_ne!(far.id, first.id);
        let back = from_row(to_row(&first).unwrap()).unwrap();
        assert_eq!(back, first);
        assert_eq!(parse_state("went_away"), Some(State::WentAway));
    }
}
