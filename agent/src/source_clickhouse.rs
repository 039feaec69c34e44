//! The profile store as a [`ProfileSource`]: the collector's query API and its `regressions` table.
//!
//! This is the adapter [`crate::source`] promises: every tool call becomes one of the collector's
//! queries ([`fleetprof_collector::query`]), and regressions are read from the table the detector
//! writes (one row per id, `ReplacingMergeTree(updated)`, so read with `FINAL`), whose `candidates`
//! and `report` columns hold the detector's JSON ([`Candidate`], [`RegressionReport`]).
//!
//! The collector speaks percentages and `u32` windows; the agent speaks shares (0..=1) and `i64`
//! Unix seconds. Converting between them is all this module does besides reading the table.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetprof_agent::source::ProfileSource;
//! use fleetprof_agent::source_clickhouse::ClickHouseSource;
//! use fleetprof_collector::store::StoreConfig;
//! let source = ClickHouseSource::connect(&StoreConfig::new("http://127.0.0.1:8123")).await?;
//! for r in source.regressions(Some("checkout"), 10).await? {
//!     println!("{} {} {:.1}% -> {:.1}%", r.id, r.function, r.baseline_share * 100.0, r.current_share * 100.0);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use clickhouse::Row;
use fleetprof_collector::detect::{Candidate, RegressionReport};
use fleetprof_collector::query::{self, By, QueryError, Side, Window};
use fleetprof_collector::store::{Store, StoreConfig, StoreError};
use serde::Deserialize;

use crate::source::{
    FunctionDelta, FunctionShare, HistoryPoint, ProfileSource, Regression, RegressionMember,
    RootCauseCandidate, SourceError, SourceFuture, SourceLocation, StackCount, TimeRange,
};

/// A [`ProfileSource`] over fleetprof's ClickHouse database.
#[derive(Debug, Clone)]
pub struct ClickHouseSource {
    store: Store,
}

/// The columns of the `regressions` table the agent needs.
#[derive(Debug, Row, Deserialize)]
struct RegressionRow {
    id: String,
    service: String,
    functions: Vec<String>,
    onset: u32,
    before_share: f64,
    after_share: f64,
    candidates: String,
    report: String,
}

/// Samples of one version of a service in one bucket.
#[derive(Debug, Row, Deserialize)]
struct VersionSamples {
    time: u32,
    version: String,
    samples: u64,
}

/// The regressions table's columns, in [`RegressionRow`]'s order. `FINAL` keeps only each id's newest
/// row (the detector rewrites a row when its state changes).
const REGRESSION_COLUMNS: &str = "SELECT id, service, functions, toUInt32(onset) AS onset, \
    before_share, after_share, candidates, report FROM regressions FINAL";

/// How far either side of an onset the versions "before" and "after" are read from.
const VERSION_SPAN_SECS: u32 = 3600;

fn window(range: TimeRange) -> Window {
    let clamp = |t: i64| u32::try_from(t.max(0)).unwrap_or(u32::MAX);
    Window {
        from: clamp(range.start),
        to: clamp(range.end),
    }
}

fn query_err(e: QueryError) -> SourceError {
    match e {
        QueryError::BadArgument(m) => SourceError::Invalid(m),
        other => SourceError::Store(other.to_string()),
    }
}

fn store_err(what: &str) -> impl FnOnce(clickhouse::error::Error) -> SourceError + '_ {
    move |e| SourceError::Store(format!("{what}: {e}"))
}

/// A GitHub login from a commit author, when the address is GitHub's no-reply form
/// (`12345+login@users.noreply.github.com` or `login@users.noreply.github.com`), so the PR can `cc @login`.
fn github_login(author: &str) -> Option<String> {
    crate::fix::pr::noreply_login(&crate::fix::pr::author_email(author)?)
}

/// The agent's view of a detector candidate: the change id is the commit.
fn candidate(c: Candidate) -> RootCauseCandidate {
    RootCauseCandidate {
        author_login: github_login(&c.author),
        commit: c.change_id,
        author: c.author,
        summary: c.title,
        score: c.score,
        evidence: c.evidence,
    }
}

impl RegressionRow {
    /// Maps the row to the agent's regression (versions are filled in by the caller).
    fn into_regression(self) -> Result<Regression, SourceError> {
        let mut candidates: Vec<Candidate> = if self.candidates.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&self.candidates).map_err(|e| {
                SourceError::Store(format!(
                    "regression {}: candidates are not the detector's JSON: {e}",
                    self.id
                ))
            })?
        };
        // Best first, as the trait promises; the detector already sorts, but rows may be hand-written.
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        // The report's most significant member gives the function and its *total* shares (what the
        // fix's re-profiling measures); the columns are the fallback when the report is absent.
        let report: Option<RegressionReport> = serde_json::from_str(&self.report).ok();
        let member = report.as_ref().and_then(|r| r.members.first());
        let function = member
            .map(|m| m.function.clone())
            .or_else(|| self.functions.first().cloned())
            .ok_or_else(|| {
                SourceError::Store(format!("regression {} names no function", self.id))
            })?;
        let (baseline_share, current_share) = match member {
            Some(m) if m.total_after > m.total_before => (m.total_before, m.total_after),
            _ => (self.before_share, self.after_share),
        };
        let cost = report
            .as_ref()
            .map(|r| crate::source::RegressionCost {
                delta_cores: r.delta_cores,
                delta_watts: r.delta_watts,
            })
            .unwrap_or_default();
        Ok(Regression {
            cost,
            id: self.id,
            service: self.service,
            function,
            baseline_share,
            current_share,
            detected_at: i64::from(self.onset),
            version_before: None,
            version_after: None,
            candidates: candidates.into_iter().map(candidate).collect(),
            members: report
                .iter()
                .flat_map(|r| &r.members)
                .map(|m| RegressionMember {
                    function: m.function.clone(),
                    baseline_share: m.total_before,
                    current_share: m.total_after,
                })
                .collect(),
        })
    }
}

impl ClickHouseSource {
    /// A source over the store at `config` (does not contact the server yet).
    pub async fn connect(config: &StoreConfig) -> Result<ClickHouseSource, SourceError> {
        Store::connect(config)
            .await
            .map(ClickHouseSource::new)
            .map_err(|e: StoreError| SourceError::Store(e.to_string()))
    }

    /// A source over an existing store handle.
    pub fn new(store: Store) -> ClickHouseSource {
        ClickHouseSource { store }
    }

    /// Per bucket of `bucket_secs` starting at a multiple of it, the version with the most samples.
    async fn versions(
        &self,
        service: &str,
        w: Window,
        bucket_secs: u32,
    ) -> Result<HashMap<u32, String>, SourceError> {
        let rows = self
            .store
            .client()
            .query(
                "SELECT toUInt32(intDiv(toUInt32(minute), ?) * ?) AS time, version, \
                 toUInt64(sum(samples)) AS samples FROM service_minutes \
                 WHERE service = ? AND minute >= toStartOfMinute(toDateTime(?)) AND minute < toDateTime(?) \
                 GROUP BY time, version",
            )
            .bind(bucket_secs)
            .bind(bucket_secs)
            .bind(service)
            .bind(w.from)
            .bind(w.to)
            .fetch_all::<VersionSamples>()
            .await
            .map_err(store_err("reading versions from service_minutes"))?;
        let mut best: HashMap<u32, (u64, String)> = HashMap::new();
        for r in rows {
            let e = best.entry(r.time).or_insert((0, String::new()));
            // Ties go to the larger name, so the answer does not depend on row order.
            if (r.samples, &r.version) > (e.0, &e.1) {
                *e = (r.samples, r.version);
            }
        }
        Ok(best.into_iter().map(|(t, (_, v))| (t, v)).collect())
    }

    /// The versions that ran most in the hour before and the hour after `onset` (to the batch, not the
    /// minute).
    async fn versions_around(
        &self,
        service: &str,
        onset: i64,
    ) -> Result<(Option<String>, Option<String>), SourceError> {
        let onset = u32::try_from(onset.max(0)).unwrap_or(u32::MAX);
        let w = Window {
            from: onset.saturating_sub(VERSION_SPAN_SECS),
            to: onset.saturating_add(VERSION_SPAN_SECS),
        };
        let rows = self
            .store
            .client()
            .query(
                // The raw samples, not the minute rollup: a deploy and the onset are often in the
                // same minute. The table is ordered by (service, time), so this reads two hours.
                // (Aliased `after`, not `time`: an alias would shadow the column in WHERE. Rows are
                // read by position, so the struct's field name does not matter.)
                "SELECT toUInt32(time >= toDateTime(?)) AS after, version, \
                 toUInt64(sum(count)) AS samples FROM samples \
                 WHERE service = ? AND time >= toDateTime(?) AND time < toDateTime(?) \
                 GROUP BY time, version",
            )
            .bind(onset)
            .bind(service)
            .bind(w.from)
            .bind(w.to)
            .fetch_all::<VersionSamples>()
            .await
            .map_err(store_err("reading versions from service_minutes"))?;
        let top = |side: u32| {
            rows.iter()
                .filter(|r| r.time == side && !r.version.is_empty())
                .max_by(|a, b| (a.samples, &a.version).cmp(&(b.samples, &b.version)))
                .map(|r| r.version.clone())
        };
        Ok((top(0), top(1)))
    }

    async fn with_versions(&self, mut r: Regression) -> Result<Regression, SourceError> {
        let (before, after) = self.versions_around(&r.service, r.detected_at).await?;
        r.version_before = before;
        r.version_after = after;
        Ok(r)
    }
}

/// One `file:line` of a function's frames.
#[derive(Debug, Row, Deserialize)]
struct LocationRow {
    file: String,
    line: u32,
    frames: u64,
}

impl ProfileSource for ClickHouseSource {
    fn locations(&self, function: &str) -> SourceFuture<'_, Vec<SourceLocation>> {
        let function = function.to_string();
        Box::pin(async move {
            // `frames` holds what the symbolizer read from DWARF for every frame it saw; inlined
            // frames carry the inlined function's own lines, so they locate it as well.
            let rows = self
                .store
                .client()
                .query(
                    "SELECT file, line, count() AS frames FROM frames \
                     WHERE function = ? AND file != '' AND line > 0 \
                     GROUP BY file, line ORDER BY frames DESC, file, line LIMIT 50",
                )
                .bind(&function)
                .fetch_all::<LocationRow>()
                .await
                .map_err(store_err("reading frame locations"))?;
            Ok(rows
                .into_iter()
                .map(|r| SourceLocation {
                    file: r.file,
                    line: r.line,
                    frames: r.frames,
                })
                .collect())
        })
    }

    fn services(&self, range: TimeRange) -> SourceFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows = query::services(&self.store, Some(window(range)))
                .await
                .map_err(query_err)?;
            Ok(rows.into_iter().map(|r| r.service).collect())
        })
    }

    fn top_functions(
        &self,
        service: &str,
        range: TimeRange,
        limit: usize,
    ) -> SourceFuture<'_, Vec<FunctionShare>> {
        let service = service.to_string();
        Box::pin(async move {
            // By total share: the trait ranks by it (a hot caller matters as much as a hot leaf).
            let rows = query::top(
                &self.store,
                &service,
                window(range),
                By::Total,
                limit as u64,
            )
            .await
            .map_err(query_err)?;
            Ok(rows
                .into_iter()
                .map(|r| FunctionShare {
                    function: r.function,
                    self_samples: r.self_samples,
                    total_samples: r.total_samples,
                    share: r.total_pct / 100.0,
                })
                .collect())
        })
    }

    fn function_history(
        &self,
        service: &str,
        function: &str,
        range: TimeRange,
        step_secs: u64,
    ) -> SourceFuture<'_, Vec<HistoryPoint>> {
        let (service, function) = (service.to_string(), function.to_string());
        Box::pin(async move {
            // The rollup is per minute: round the step up to whole minutes rather than refuse it.
            let minutes = step_secs.div_ceil(60).max(1);
            let bucket = u32::try_from(minutes * 60).map_err(|_| {
                SourceError::Invalid(format!("a step of {step_secs} s is too long"))
            })?;
            let w = window(range);
            let points = query::function_history(&self.store, &service, &function, w, bucket)
                .await
                .map_err(query_err)?;
            let versions = self.versions(&service, w, bucket).await?;
            Ok(points
                .into_iter()
                .map(|p| HistoryPoint {
                    time: i64::from(p.time),
                    share: p.total_pct / 100.0,
                    samples: p.total_samples,
                    version: versions.get(&p.time).filter(|v| !v.is_empty()).cloned(),
                })
                .collect())
        })
    }

    fn stacks_through(
        &self,
        service: &str,
        function: &str,
        range: TimeRange,
        limit: usize,
    ) -> SourceFuture<'_, Vec<StackCount>> {
        let (service, function) = (service.to_string(), function.to_string());
        Box::pin(async move {
            let rows = query::stacks_through(
                &self.store,
                &service,
                &function,
                window(range),
                limit as u64,
            )
            .await
            .map_err(query_err)?;
            Ok(rows
                .into_iter()
                .map(|r| StackCount {
                    frames: r.functions,
                    samples: r.samples,
                })
                .collect())
        })
    }

    fn diff(
        &self,
        service: &str,
        baseline: TimeRange,
        range: TimeRange,
        limit: usize,
    ) -> SourceFuture<'_, Vec<FunctionDelta>> {
        let service = service.to_string();
        Box::pin(async move {
            let (b, c) = (window(baseline), window(range));
            let rows = query::diff(
                &self.store,
                &service,
                &Side::Window(b),
                &Side::Window(c),
                c,
                By::Total,
                limit,
            )
            .await
            .map_err(query_err)?;
            Ok(rows
                .into_iter()
                .map(|r| FunctionDelta {
                    function: r.function,
                    baseline_share: r.baseline_total_pct / 100.0,
                    share: r.comparison_total_pct / 100.0,
                })
                .collect())
        })
    }

    fn regressions(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> SourceFuture<'_, Vec<Regression>> {
        let service = service.map(str::to_string);
        Box::pin(async move {
            let sql = format!(
                "{REGRESSION_COLUMNS} WHERE (? = '' OR service = ?) ORDER BY onset DESC, id LIMIT ?"
            );
            let s = service.unwrap_or_default();
            let rows = self
                .store
                .client()
                .query(&sql)
                .bind(s.as_str())
                .bind(s.as_str())
                .bind(limit as u64)
                .fetch_all::<RegressionRow>()
                .await
                .map_err(store_err("reading regressions"))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(self.with_versions(row.into_regression()?).await?);
            }
            Ok(out)
        })
    }

    fn regression(&self, id: &str) -> SourceFuture<'_, Regression> {
        let id = id.to_string();
        Box::pin(async move {
            let sql = format!("{REGRESSION_COLUMNS} WHERE id = ? LIMIT 1");
            let row = self
                .store
                .client()
                .query(&sql)
                .bind(id.as_str())
                .fetch_optional::<RegressionRow>()
                .await
                .map_err(store_err("reading regressions"))?
                .ok_or(SourceError::NoSuchRegression(id))?;
            self.with_versions(row.into_regression()?).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(candidates: &str, report: &str) -> RegressionRow {
        RegressionRow {
            id: "r-1".into(),
            service: "checkout".into(),
            functions: vec!["checkout::price_items".into()],
            onset: 1_700_000_000,
            before_share: 0.1,
            after_share: 0.4,
            candidates: candidates.into(),
            report: report.into(),
        }
    }

    /// Candidates map change id → commit and author → author (with a GitHub login when the address
    /// is GitHub's no-reply form), best first; without a report the columns give the shares.
    #[test]
    fn row_maps_to_the_agents_regression() {
        let c = serde_json::json!([
            {"change_id": "aaa", "author": "A <a@example.com>", "title": "older", "score": 1.0, "evidence": []},
            {"change_id": "bbb", "author": "Dana Developer <7+dana@users.noreply.github.com>",
             "title": "Log each priced line", "score": 12.5, "evidence": ["deployed as v2 at the onset"]}
        ]);
        let r = row(&c.to_string(), "").into_regression().unwrap();
        assert_eq!(r.function, "checkout::price_items");
        assert_eq!((r.baseline_share, r.current_share), (0.1, 0.4));
        assert_eq!(r.detected_at, 1_700_000_000);
        assert_eq!(r.candidates[0].commit, "bbb");
        assert_eq!(r.candidates[0].author_login.as_deref(), Some("dana"));
        assert_eq!(r.candidates[0].summary, "Log each priced line");
        assert_eq!(r.candidates[1].author_login, None);
        assert!(row("not json", "").into_regression().is_err());
        assert!(row("", "").into_regression().unwrap().candidates.is_empty());
    }

    /// The report's most significant member decides the function and the (total) shares.
    #[test]
    fn report_member_gives_total_shares() {
        let report = serde_json::json!({
            "service": "checkout", "onset_unix_s": 1_700_000_000i64, "state": "open", "z": 9.0,
            "p_value": 0.0, "delta_cores": 0.3, "delta_watts": null,
            "members": [{
                "function": "checkout::price_items", "file": null, "metric": "self_share",
                "onset_bucket": 3, "onset_unix_s": 1_700_000_000i64, "self_before": 0.01, "self_after": 0.05,
                "total_before": 0.2, "total_after": 0.7, "cores_before": 0.0, "cores_after": 0.0,
                "watts_before": null, "watts_after": null, "z": 9.0, "p_value": 0.0, "dispersion": 1.0,
                "state": "open", "reverted_unix_s": null
            }]
        });
        let r = row("[]", &report.to_string()).into_regression().unwrap();
        assert_eq!((r.baseline_share, r.current_share), (0.2, 0.7));
    }

    /// Windows clamp to what ClickHouse's DateTime holds.
    #[test]
    fn windows_clamp() {
        let w = window(TimeRange {
            start: -5,
            end: i64::MAX,
        });
        assert_eq!((w.from, w.to), (0, u32::MAX));
        assert_eq!(
            github_login("x@users.noreply.github.com").as_deref(),
            Some("x")
        );
        assert_eq!(github_login("Dana <dana@example.com>"), None);
    }
}
