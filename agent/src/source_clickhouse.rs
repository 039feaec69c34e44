//! The profile store as a [`ProfileSource`]: the collector's readers, nothing of its own.
//!
//! This is the adapter [`crate::source`] promises: every tool call becomes one of the collector's
//! readers ([`fleetprof_collector::query`] for shares, stacks, versions and source locations,
//! [`fleetprof_collector::regressions`] for the detector's stored reports). The collector owns the
//! schema and every query over it; this module writes no SQL (the `sql` tool, [`crate::sql`], is
//! the agent's one user-facing way to ask ClickHouse directly, read-only).
//!
//! Both sides speak shares (0..=1) and the same [`Window`]; converting the collector's rows into
//! the agent's is all this module does.
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

use fleetprof_collector::detect::Candidate;
use fleetprof_collector::query::{self, By, QueryError, Side};
use fleetprof_collector::regressions::{self, ListFilter, RegressionsError, StoredRegression};
use fleetprof_collector::store::{Store, StoreConfig, StoreError};

use crate::source::{
    FunctionDelta, FunctionShare, HistoryPoint, ProfileSource, Regression, RegressionMember,
    RootCauseCandidate, SourceError, SourceFuture, SourceLocation, StackCount, Window,
};

/// A [`ProfileSource`] over fleetprof's ClickHouse database.
#[derive(Debug, Clone)]
pub struct ClickHouseSource {
    store: Store,
}

/// How far either side of an onset the versions "before" and "after" are read from.
const VERSION_SPAN_SECS: u32 = 3600;

/// Most source locations returned for a function.
const MAX_LOCATIONS: u64 = 50;

fn query_err(e: QueryError) -> SourceError {
    match e {
        QueryError::BadArgument(m) => SourceError::Invalid(m),
        other => SourceError::Store(other.to_string()),
    }
}

fn regressions_err(e: RegressionsError) -> SourceError {
    match e {
        RegressionsError::BadArgument(m) => SourceError::Invalid(m),
        other => SourceError::Store(other.to_string()),
    }
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

/// The agent's view of a stored regression (versions are filled in by the caller): the report's
/// most significant member gives the function and its *total* shares (what the fix's re-profiling
/// measures); the stored shares (the step's metric) are the fallback.
fn to_regression(r: StoredRegression) -> Result<Regression, SourceError> {
    let mut candidates = r.candidates;
    // Best first, as the trait promises; the detector already sorts.
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let member = r.report.members.first();
    let function = member
        .map(|m| m.function.clone())
        .or_else(|| r.functions.first().cloned())
        .ok_or_else(|| SourceError::Store(format!("regression {} names no function", r.id)))?;
    let (baseline_share, current_share) = match member {
        Some(m) if m.total_after > m.total_before => (m.total_before, m.total_after),
        _ => (r.before_share, r.after_share),
    };
    Ok(Regression {
        cost: crate::source::RegressionCost {
            delta_cores: r.report.delta_cores,
            delta_watts: r.report.delta_watts,
        },
        members: r
            .report
            .members
            .iter()
            .map(|m| RegressionMember {
                function: m.function.clone(),
                baseline_share: m.total_before,
                current_share: m.total_after,
            })
            .collect(),
        id: r.id,
        service: r.service,
        function,
        baseline_share,
        current_share,
        detected_at: i64::from(r.onset),
        version_before: None,
        version_after: None,
        candidates: candidates.into_iter().map(candidate).collect(),
    })
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

    async fn with_versions(&self, mut r: Regression) -> Result<Regression, SourceError> {
        let at = u32::try_from(r.detected_at.max(0)).unwrap_or(u32::MAX);
        let around = query::versions_around(&self.store, &r.service, at, VERSION_SPAN_SECS)
            .await
            .map_err(query_err)?;
        r.version_before = around.before;
        r.version_after = around.after;
        Ok(r)
    }
}

impl ProfileSource for ClickHouseSource {
    fn locations(&self, function: &str) -> SourceFuture<'_, Vec<SourceLocation>> {
        let function = function.to_string();
        Box::pin(async move {
            let rows = query::frame_locations(&self.store, &function, MAX_LOCATIONS)
                .await
                .map_err(query_err)?;
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

    fn services(&self, range: Window) -> SourceFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows = query::services(&self.store, Some(range))
                .await
                .map_err(query_err)?;
            Ok(rows.into_iter().map(|r| r.service).collect())
        })
    }

    fn top_functions(
        &self,
        service: &str,
        range: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<FunctionShare>> {
        let service = service.to_string();
        Box::pin(async move {
            // By total share: the trait ranks by it (a hot caller matters as much as a hot leaf).
            let rows = query::top(&self.store, &service, range, By::Total, limit as u64)
                .await
                .map_err(query_err)?;
            Ok(rows
                .into_iter()
                .map(|r| FunctionShare {
                    function: r.function,
                    self_samples: r.self_samples,
                    total_samples: r.total_samples,
                    share: r.total_share,
                })
                .collect())
        })
    }

    fn function_history(
        &self,
        service: &str,
        function: &str,
        range: Window,
        step_secs: u64,
    ) -> SourceFuture<'_, Vec<HistoryPoint>> {
        let (service, function) = (service.to_string(), function.to_string());
        Box::pin(async move {
            // The rollup is per minute: round the step up to whole minutes rather than refuse it.
            let minutes = step_secs.div_ceil(60).max(1);
            let bucket = u32::try_from(minutes * 60).map_err(|_| {
                SourceError::Invalid(format!("a step of {step_secs} s is too long"))
            })?;
            let points = query::function_history(&self.store, &service, &function, range, bucket)
                .await
                .map_err(query_err)?;
            let versions = query::versions_per_bucket(&self.store, &service, range, bucket)
                .await
                .map_err(query_err)?;
            Ok(points
                .into_iter()
                .map(|p| HistoryPoint {
                    time: i64::from(p.time),
                    share: p.total_share,
                    samples: p.total_samples,
                    version: versions.get(&p.time).cloned(),
                })
                .collect())
        })
    }

    fn stacks_through(
        &self,
        service: &str,
        function: &str,
        range: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<StackCount>> {
        let (service, function) = (service.to_string(), function.to_string());
        Box::pin(async move {
            let rows = query::stacks_through(&self.store, &service, &function, range, limit as u64)
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
        baseline: Window,
        range: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<FunctionDelta>> {
        let service = service.to_string();
        Box::pin(async move {
            let rows = query::diff(
                &self.store,
                &service,
                &Side::Window(baseline),
                &Side::Window(range),
                range,
                By::Total,
                limit,
            )
            .await
            .map_err(query_err)?;
            Ok(rows
                .into_iter()
                .map(|r| FunctionDelta {
                    function: r.function,
                    baseline_share: r.baseline_total_share,
                    share: r.comparison_total_share,
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
            if limit == 0 {
                return Ok(Vec::new());
            }
            let filter = ListFilter {
                service,
                limit: limit as u64,
                ..ListFilter::default()
            };
            let rows = regressions::list(&self.store, &filter)
                .await
                .map_err(regressions_err)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(self.with_versions(to_regression(row)?).await?);
            }
            Ok(out)
        })
    }

    fn regression(&self, id: &str) -> SourceFuture<'_, Regression> {
        let id = id.to_string();
        Box::pin(async move {
            if id.len() < 4 {
                return Err(SourceError::NoSuchRegression(id));
            }
            let row = regressions::get(&self.store, &id)
                .await
                .map_err(regressions_err)?
                // An id the store does not know is a miss, not a malformed request (the store
                // refuses prefixes shorter than 4 digits; the agent asks by whole id).
                .filter(|r| r.id == id)
                .ok_or(SourceError::NoSuchRegression(id))?;
            self.with_versions(to_regression(row)?).await
        })
    }
}

#[cfg(test)]
mod tests {
    use fleetprof_collector::detect::{RegressionReport, State};

    use super::*;

    fn report(members: serde_json::Value) -> RegressionReport {
        serde_json::from_value(serde_json::json!({
            "service": "checkout", "onset_unix_s": 1_700_000_000i64, "state": "open", "z": 9.0,
            "p_value": 0.0, "delta_cores": 0.3, "delta_watts": null, "members": members
        }))
        .unwrap()
    }

    fn stored(candidates: serde_json::Value, report: RegressionReport) -> StoredRegression {
        StoredRegression {
            id: "r-1".into(),
            service: "checkout".into(),
            functions: vec!["checkout::price_items".into()],
            onset: 1_700_000_000,
            detected: 1_700_000_000,
            updated: 1_700_000_000,
            before_share: 0.1,
            after_share: 0.4,
            cost_samples: 0.0,
            cost: 0.3,
            significance: 9.0,
            state: State::Open,
            candidates: serde_json::from_value(candidates).unwrap(),
            report,
        }
    }

    /// Candidates map change id → commit and author → author (with a GitHub login when the address
    /// is GitHub's no-reply form), best first; without a member the stored shares are used.
    #[test]
    fn stored_regression_maps_to_the_agents() {
        let c = serde_json::json!([
            {"change_id": "aaa", "author": "A <a@example.com>", "title": "older", "score": 1.0, "evidence": []},
            {"change_id": "bbb", "author": "Dana Developer <7+dana@users.noreply.github.com>",
             "title": "Log each priced line", "score": 12.5, "evidence": ["deployed as v2 at the onset"]}
        ]);
        let r = to_regression(stored(c, report(serde_json::json!([])))).unwrap();
        assert_eq!(r.function, "checkout::price_items");
        assert_eq!((r.baseline_share, r.current_share), (0.1, 0.4));
        assert_eq!(r.detected_at, 1_700_000_000);
        assert_eq!(r.cost.delta_cores, 0.3);
        assert_eq!(r.candidates[0].commit, "bbb");
        assert_eq!(r.candidates[0].author_login.as_deref(), Some("dana"));
        assert_eq!(r.candidates[0].summary, "Log each priced line");
        assert_eq!(r.candidates[1].author_login, None);
        let mut nameless = stored(serde_json::json!([]), report(serde_json::json!([])));
        nameless.functions.clear();
        assert!(to_regression(nameless).is_err());
    }

    /// The report's most significant member decides the function and the (total) shares.
    #[test]
    fn report_member_gives_total_shares() {
        let members = serde_json::json!([{
            "function": "checkout::price_items", "file": null, "metric": "self_share",
            "onset_bucket": 3, "onset_unix_s": 1_700_000_000i64, "self_before": 0.01, "self_after": 0.05,
            "total_before": 0.2, "total_after": 0.7, "cores_before": 0.0, "cores_after": 0.0,
            "watts_before": null, "watts_after": null, "z": 9.0, "p_value": 0.0, "dispersion": 1.0,
            "state": "open", "reverted_unix_s": null
        }]);
        let r = to_regression(stored(serde_json::json!([]), report(members))).unwrap();
        assert_eq!((r.baseline_share, r.current_share), (0.2, 0.7));
        assert_eq!(r.members.len(), 1);
    }

    /// Windows clamp to what ClickHouse's DateTime holds.
    #[test]
    fn windows_clamp() {
        let w = Window::clamped(-5, i64::MAX);
        assert_eq!((w.from, w.to), (0, u32::MAX));
        assert_eq!(
            github_login("x@users.noreply.github.com").as_deref(),
            Some("x")
        );
        assert_eq!(github_login("Dana <dana@example.com>"), None);
    }
}
