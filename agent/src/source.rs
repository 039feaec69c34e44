//! Where the agent's profile data comes from: the [`ProfileSource`] trait the tools call.
//!
//! The collector owns the ClickHouse schema, the query functions and the regression detector; the agent
//! only sees them through this trait, so wiring the real store is one adapter. [`UnavailableSource`]
//! answers every call with "not available" (the MCP server still serves skills and code tools), and
//! [`StaticSource`] serves fixed data (tests, demos, a regression given as JSON).

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// What can go wrong asking the profile source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// This source cannot answer this kind of question (e.g. no ClickHouse configured).
    #[error("{0} is not available: no profile store is configured (pass --clickhouse-url)")]
    Unavailable(&'static str),
    /// No regression has this id.
    #[error("no regression with id {0:?}")]
    NoSuchRegression(String),
    /// The question was malformed (bad window, bad SQL, …).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store failed.
    #[error("profile store: {0}")]
    Store(String),
}

/// A boxed future returned by [`ProfileSource`] methods (keeps the trait usable as `dyn`).
pub type SourceFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SourceError>> + Send + 'a>>;

/// The time range every method takes: the store's own [`Window`] (`[from, to)`, Unix seconds),
/// so the agent and the collector mean the same thing by one.
pub use fleetprof_collector::query::Window;

/// A function's share of a service's CPU samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FunctionShare {
    /// Symbolized function name.
    pub function: String,
    /// Samples where the function is the leaf.
    pub self_samples: u64,
    /// Samples where the function is anywhere on the stack.
    pub total_samples: u64,
    /// `total_samples` / all samples of the service, 0..=1.
    pub share: f64,
}

/// One point of a function's share over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HistoryPoint {
    /// Bucket start, Unix seconds.
    pub time: i64,
    /// Share of the service's samples in the bucket, 0..=1.
    pub share: f64,
    /// Samples of the function in the bucket.
    pub samples: u64,
    /// Service version (build) seen most in the bucket, if known.
    pub version: Option<String>,
}

/// A stack through a function with its sample count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StackCount {
    /// Frames, root first.
    pub frames: Vec<String>,
    /// Samples of this stack.
    pub samples: u64,
}

/// How a function's share changed between two windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FunctionDelta {
    /// Function name.
    pub function: String,
    /// Share in the baseline window, 0..=1.
    pub baseline_share: f64,
    /// Share in the compared window, 0..=1.
    pub share: f64,
}

/// A change (commit) that may have caused a regression, as ranked by the collector's root cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RootCauseCandidate {
    /// Commit id (full or abbreviated).
    pub commit: String,
    /// Author as the repository knows it (name and/or email).
    pub author: String,
    /// The author's GitHub login, if known (for `cc @login`).
    pub author_login: Option<String>,
    /// The commit's subject line.
    pub summary: String,
    /// Ranking score, higher is more likely.
    pub score: f64,
    /// Why it was ranked (touches the function's file, deployed at the step, …).
    pub evidence: Vec<String>,
}

/// A detected regression of one function in one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Regression {
    /// Stable id (used in branch names: `fleetprof/fix-<id>`).
    pub id: String,
    /// The service.
    pub service: String,
    /// The regressed function.
    pub function: String,
    /// Share before the change point, 0..=1.
    pub baseline_share: f64,
    /// Share after the change point, 0..=1.
    pub current_share: f64,
    /// The change point, Unix seconds.
    pub detected_at: i64,
    /// Version before, if known.
    pub version_before: Option<String>,
    /// Version after, if known.
    pub version_after: Option<String>,
    /// Root-cause candidates, best first.
    pub candidates: Vec<RootCauseCandidate>,
    /// Every function of the report, most significant first (the first is `function`): a
    /// regression grouped with library or kernel frames (`write`, `core::fmt::…`) is fixed in the
    /// first member the repository defines.
    #[serde(default)]
    pub members: Vec<RegressionMember>,
    /// The cost: extra cores and, where the hosts measured energy (RAPL), extra watts
    /// (Kepler's split of active energy by CPU time); `None` watts on hosts without RAPL.
    #[serde(default)]
    pub cost: RegressionCost,
}

/// What a regression costs the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegressionCost {
    /// Extra cores (the largest member's increase).
    pub delta_cores: f64,
    /// Extra watts, where measured.
    pub delta_watts: Option<f64>,
}

impl std::fmt::Display for RegressionCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:+.3} cores", self.delta_cores)?;
        match self.delta_watts {
            Some(w) => write!(f, " ({w:+.2} W)"),
            None => write!(f, " (energy not measured on its hosts)"),
        }
    }
}

/// One function of a grouped regression, with its own shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegressionMember {
    /// The function.
    pub function: String,
    /// Its total share before the change point, 0..=1.
    pub baseline_share: f64,
    /// Its total share after, 0..=1.
    pub current_share: f64,
}

impl Regression {
    /// The relative increase of the function's share, e.g. 0.5 for +50%.
    pub fn relative_increase(&self) -> f64 {
        if self.baseline_share > 0.0 {
            self.current_share / self.baseline_share - 1.0
        } else {
            f64::INFINITY
        }
    }
}

/// Where a profiled function's code is, as the profile's debug info (DWARF line tables) says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SourceLocation {
    /// The file as the compiler saw it (often an absolute build path).
    pub file: String,
    /// 1-based line inside the function (a sampled instruction's or a call site's line).
    pub line: u32,
    /// How many distinct frames point there (more means more confidence).
    pub frames: u64,
}

/// The profile data the agent's tools need. Implemented over the collector's store by an adapter.
pub trait ProfileSource: Send + Sync {
    /// The services with profiles in `range`.
    fn services(&self, range: Window) -> SourceFuture<'_, Vec<String>>;
    /// The hottest functions of `service` in `range`, by total share, at most `limit`.
    fn top_functions(
        &self,
        service: &str,
        range: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<FunctionShare>>;
    /// `function`'s share of `service` over `range`, in buckets of `step_secs`.
    fn function_history(
        &self,
        service: &str,
        function: &str,
        range: Window,
        step_secs: u64,
    ) -> SourceFuture<'_, Vec<HistoryPoint>>;
    /// The heaviest stacks of `service` passing through `function`, at most `limit`.
    fn stacks_through(
        &self,
        service: &str,
        function: &str,
        range: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<StackCount>>;
    /// Functions whose share changed most between `baseline` and `range`, at most `limit`.
    fn diff(
        &self,
        service: &str,
        baseline: Window,
        range: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<FunctionDelta>>;
    /// Detected regressions, newest first, optionally of one service.
    fn regressions(&self, service: Option<&str>, limit: usize)
    -> SourceFuture<'_, Vec<Regression>>;
    /// One regression with its root-cause candidates.
    fn regression(&self, id: &str) -> SourceFuture<'_, Regression>;
    /// The `file:line`s the profile's frames of `function` carry, most frequent first. Sources
    /// without debug info answer empty (the agent then falls back to a name search and says so).
    fn locations(&self, function: &str) -> SourceFuture<'_, Vec<SourceLocation>> {
        let _ = function;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// A source with no store behind it: every call says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnavailableSource;

fn unavailable<'a, T: Send + 'a>(what: &'static str) -> SourceFuture<'a, T> {
    Box::pin(std::future::ready(Err(SourceError::Unavailable(what))))
}

impl ProfileSource for UnavailableSource {
    fn services(&self, _: Window) -> SourceFuture<'_, Vec<String>> {
        unavailable("services")
    }
    fn top_functions(&self, _: &str, _: Window, _: usize) -> SourceFuture<'_, Vec<FunctionShare>> {
        unavailable("top functions")
    }
    fn function_history(
        &self,
        _: &str,
        _: &str,
        _: Window,
        _: u64,
    ) -> SourceFuture<'_, Vec<HistoryPoint>> {
        unavailable("function history")
    }
    fn stacks_through(
        &self,
        _: &str,
        _: &str,
        _: Window,
        _: usize,
    ) -> SourceFuture<'_, Vec<StackCount>> {
        unavailable("stacks")
    }
    fn diff(
        &self,
        _: &str,
        _: Window,
        _: Window,
        _: usize,
    ) -> SourceFuture<'_, Vec<FunctionDelta>> {
        unavailable("profile diff")
    }
    fn regressions(&self, _: Option<&str>, _: usize) -> SourceFuture<'_, Vec<Regression>> {
        unavailable("regressions")
    }
    fn regression(&self, _: &str) -> SourceFuture<'_, Regression> {
        unavailable("regressions")
    }
}

/// A source serving fixed data: regressions, a top list and stacks per service. For tests and for
/// `fix --regression-file` (a regression exported as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StaticSource {
    /// Regressions.
    #[serde(default)]
    pub regressions: Vec<Regression>,
    /// Top functions per service.
    #[serde(default)]
    pub top: Vec<(String, Vec<FunctionShare>)>,
    /// Stacks per (service, function).
    #[serde(default)]
    pub stacks: Vec<(String, String, Vec<StackCount>)>,
    /// Debug-info locations per function.
    #[serde(default)]
    pub locations: Vec<(String, Vec<SourceLocation>)>,
}

fn ready<'a, T: Send + 'a>(v: Result<T, SourceError>) -> SourceFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl ProfileSource for StaticSource {
    fn services(&self, _: Window) -> SourceFuture<'_, Vec<String>> {
        let mut s: Vec<String> = self.top.iter().map(|(s, _)| s.clone()).collect();
        s.extend(self.regressions.iter().map(|r| r.service.clone()));
        s.sort();
        s.dedup();
        ready(Ok(s))
    }
    fn top_functions(
        &self,
        service: &str,
        _: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<FunctionShare>> {
        let v = self
            .top
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, f)| f.iter().take(limit).cloned().collect())
            .unwrap_or_default();
        ready(Ok(v))
    }
    fn function_history(
        &self,
        _: &str,
        _: &str,
        _: Window,
        _: u64,
    ) -> SourceFuture<'_, Vec<HistoryPoint>> {
        ready(Ok(Vec::new()))
    }
    fn stacks_through(
        &self,
        service: &str,
        function: &str,
        _: Window,
        limit: usize,
    ) -> SourceFuture<'_, Vec<StackCount>> {
        let v = self
            .stacks
            .iter()
            .find(|(s, f, _)| s == service && f == function)
            .map(|(_, _, st)| st.iter().take(limit).cloned().collect())
            .unwrap_or_default();
        ready(Ok(v))
    }
    fn diff(
        &self,
        _: &str,
        _: Window,
        _: Window,
        _: usize,
    ) -> SourceFuture<'_, Vec<FunctionDelta>> {
        ready(Ok(Vec::new()))
    }
    fn regressions(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> SourceFuture<'_, Vec<Regression>> {
        let v = self
            .regressions
            .iter()
            .filter(|r| service.is_none_or(|s| r.service == s))
            .take(limit)
            .cloned()
            .collect();
        ready(Ok(v))
    }
    fn regression(&self, id: &str) -> SourceFuture<'_, Regression> {
        ready(
            self.regressions
                .iter()
                .find(|r| r.id == id)
                .cloned()
                .ok_or_else(|| SourceError::NoSuchRegression(id.to_string())),
        )
    }
    fn locations(&self, function: &str) -> SourceFuture<'_, Vec<SourceLocation>> {
        ready(Ok(self
            .locations
            .iter()
            .find(|(f, _)| f == function)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()))
    }
}
