//! Every view of the UI as plain data, read through the collector's readers ([`crate::query`],
//! [`crate::regressions`], [`crate::changes`]); the pages render it and `/api/` returns it as JSON.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::fixes::{self, Fix};
use super::flame::{self, FlameNode};
use super::skills;
use super::{Ctx, UiError};
use crate::changes::{self, StoredDeploy};
use crate::detect::State;
use crate::query::{
    self, DiffRow, HistoryPoint, LineRow, Neighbour, Side, StackThrough, TopRow, Window,
};
use crate::regressions::{self, ListFilter, StoredRegression};

/// The window every view shows unless its URL says otherwise.
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A view's state, as its URL's query string carries it (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Params {
    pub(crate) service: Option<String>,
    /// Duration back from now (`1h`, `7d`).
    pub(crate) since: Option<String>,
    /// RFC 3339 start (with `to`).
    pub(crate) from: Option<String>,
    /// RFC 3339 end.
    pub(crate) to: Option<String>,
    /// One version of the service instead of all in the window.
    pub(crate) version: Option<String>,
    pub(crate) baseline: Option<String>,
    pub(crate) comparison: Option<String>,
    pub(crate) function: Option<String>,
    /// The zoomed frame: its path of names from the root, `;`-separated (flame graphs).
    pub(crate) focus: Option<String>,
    pub(crate) search: Option<String>,
    /// `icicle` draws the root on top.
    pub(crate) mode: Option<String>,
    pub(crate) state: Option<String>,
    /// `total` ranks by total share instead of self.
    pub(crate) by: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Params {
    pub(crate) fn window(&self) -> Result<Window, UiError> {
        Ok(Window::parse(
            non_empty(&self.since),
            non_empty(&self.from),
            non_empty(&self.to),
            DEFAULT_WINDOW,
        )?)
    }

    pub(crate) fn service(&self) -> Result<&str, UiError> {
        non_empty(&self.service).ok_or_else(|| UiError::BadRequest("give ?service=NAME".into()))
    }

    pub(crate) fn function(&self) -> Result<&str, UiError> {
        non_empty(&self.function).ok_or_else(|| UiError::BadRequest("give ?function=NAME".into()))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        match key {
            "service" => non_empty(&self.service),
            "since" => non_empty(&self.since),
            "from" => non_empty(&self.from),
            "to" => non_empty(&self.to),
            "version" => non_empty(&self.version),
            "baseline" => non_empty(&self.baseline),
            "comparison" => non_empty(&self.comparison),
            "function" => non_empty(&self.function),
            "focus" => non_empty(&self.focus),
            "search" => non_empty(&self.search),
            "mode" => non_empty(&self.mode),
            "state" => non_empty(&self.state),
            "by" => non_empty(&self.by),
            _ => None,
        }
    }
}

/// One service on the services page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSummary {
    /// Its name.
    pub service: String,
    /// Versions seen in the window.
    pub versions: Vec<String>,
    /// Distinct hosts.
    pub hosts: u64,
    /// Samples in the window.
    pub samples: u64,
    /// Mean CPU cores over the minutes it ran.
    pub cores: f64,
    /// Mean watts, where energy was measured.
    pub watts: Option<f64>,
    /// Last minute with samples (Unix seconds).
    pub last_seen: u32,
    /// Open regressions.
    pub open_regressions: usize,
}

/// The services page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicesView {
    /// The window shown.
    pub window: Window,
    /// Services with samples in it, most samples first.
    pub services: Vec<ServiceSummary>,
    /// Whether the database holds no samples at all (the page then says how to get data in).
    pub empty_database: bool,
}

pub(crate) async fn services(ctx: &Ctx, p: &Params) -> Result<ServicesView, UiError> {
    let window = p.window()?;
    let rows = query::services(&ctx.store, Some(window)).await?;
    let usage: HashMap<String, query::ServiceUsage> = query::service_usage(&ctx.store, window)
        .await?
        .into_iter()
        .map(|u| (u.service.clone(), u))
        .collect();
    let open = regressions::list(
        &ctx.store,
        &ListFilter {
            state: Some(State::Open),
            limit: 10_000,
            ..ListFilter::default()
        },
    )
    .await?;
    let empty_database = rows.is_empty() && query::services(&ctx.store, None).await?.is_empty();
    Ok(ServicesView {
        window,
        empty_database,
        services: rows
            .into_iter()
            .map(|r| {
                let u = usage.get(&r.service);
                ServiceSummary {
                    open_regressions: open.iter().filter(|o| o.service == r.service).count(),
                    cores: u.map_or(0.0, |u| u.cores),
                    watts: u.and_then(|u| u.watts),
                    service: r.service,
                    versions: r.versions,
                    hosts: r.hosts,
                    samples: r.samples,
                    last_seen: r.last_seen,
                }
            })
            .collect(),
    })
}

/// A flame graph of a service over a window or of one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlameView {
    /// The service.
    pub service: String,
    /// The window.
    pub window: Window,
    /// The version shown, if one was asked for.
    pub version: Option<String>,
    /// Versions seen in the window.
    pub versions: Vec<String>,
    /// Samples drawn.
    pub total: u64,
    /// The frames.
    pub tree: FlameNode,
    /// Functions by self samples.
    pub top_self: Vec<TopRow>,
    /// Functions by total samples.
    pub top_total: Vec<TopRow>,
}

async fn versions_of(ctx: &Ctx, service: &str, window: Window) -> Result<Vec<String>, UiError> {
    Ok(query::services(&ctx.store, Some(window))
        .await?
        .into_iter()
        .find(|s| s.service == service)
        .map(|s| s.versions)
        .unwrap_or_default())
}

pub(crate) async fn flame(ctx: &Ctx, p: &Params) -> Result<FlameView, UiError> {
    let service = p.service()?;
    let window = p.window()?;
    let version = p.get("version").map(str::to_owned);
    let stacks = match &version {
        Some(v) => {
            query::flamegraph_side(&ctx.store, service, &Side::Version(v.clone()), window).await?
        }
        None => query::flamegraph(&ctx.store, service, window).await?,
    };
    Ok(FlameView {
        service: service.to_owned(),
        window,
        versions: versions_of(ctx, service, window).await?,
        version,
        total: stacks.iter().map(|s| s.samples).sum(),
        tree: flame::tree(&stacks),
        top_self: flame::top(&stacks, false, 25),
        top_total: flame::top(&stacks, true, 25),
    })
}

/// Two versions or windows of a service compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareView {
    /// The service.
    pub service: String,
    /// The window versions are looked for in.
    pub window: Window,
    /// The baseline side as given (a version, or `FROM..TO`).
    pub baseline: String,
    /// The comparison side.
    pub comparison: String,
    /// Versions seen in the window.
    pub versions: Vec<String>,
    /// Functions whose share changed most (by total share unless `by=self`).
    pub rows: Vec<DiffRow>,
    /// The differential tree: the comparison's frames with the baseline's samples scaled.
    pub tree: FlameNode,
}

pub(crate) async fn compare(ctx: &Ctx, p: &Params) -> Result<CompareView, UiError> {
    let service = p.service()?;
    let window = p.window()?;
    let (baseline, comparison) = match (p.get("baseline"), p.get("comparison")) {
        (Some(b), Some(c)) => (b.to_owned(), c.to_owned()),
        _ => {
            // The latest version switch, when none is named.
            let switches = regressions::version_boundaries(&ctx.store, service, window).await?;
            let last = switches.last().ok_or_else(|| {
                UiError::BadRequest(format!(
                    "{service} ran one version in this window: give ?baseline= and ?comparison= \
                     (versions, or windows such as 2h..1h)"
                ))
            })?;
            (last.from_version.clone(), last.to_version.clone())
        }
    };
    let (b, c) = (Side::parse(&baseline)?, Side::parse(&comparison)?);
    let by = if p.get("by") == Some("self") {
        query::By::Self_
    } else {
        query::By::Total
    };
    let rows = query::diff(&ctx.store, service, &b, &c, window, by, 30).await?;
    let (before, after) = query::diff_folded(&ctx.store, service, &b, &c, window).await?;
    Ok(CompareView {
        service: service.to_owned(),
        window,
        versions: versions_of(ctx, service, window).await?,
        baseline,
        comparison,
        rows,
        tree: flame::diff_tree(&before, &after),
    })
}

/// A detected change point of a function: a stored regression it is a member of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangePoint {
    /// Onset, Unix seconds.
    pub time: u32,
    /// The regression's id.
    pub id: String,
    /// Its state (`open`, `fixed`, `went_away`).
    pub state: String,
    /// The function's share (0..=1) before, in the metric the step was found in.
    pub before_share: f64,
    /// After, 0..=1.
    pub after_share: f64,
}

/// One function of a service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionView {
    /// The service.
    pub service: String,
    /// The function.
    pub function: String,
    /// The window asked for.
    pub window: Window,
    /// Bucket length of `history`, seconds (fitted to the span of the service's data).
    pub bucket_secs: u32,
    /// Self and total share per bucket.
    pub history: Vec<HistoryPoint>,
    /// Detected change points (regressions with this function as a member).
    pub change_points: Vec<ChangePoint>,
    /// Deploys of the service in the window.
    pub deploys: Vec<StoredDeploy>,
    /// Hottest stacks through the function.
    pub stacks: Vec<StackThrough>,
    /// Direct callers.
    pub callers: Vec<Neighbour>,
    /// Direct callees.
    pub callees: Vec<Neighbour>,
    /// Hottest source lines, where line info exists.
    pub lines: Vec<LineRow>,
}

/// A bucket giving about 100 points over `span` seconds, from a list of round lengths.
fn bucket_for(span: u32) -> u32 {
    const NICE: [u32; 14] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 86_400,
    ];
    NICE.into_iter().find(|b| span / b <= 120).unwrap_or(86_400)
}

pub(crate) async fn function(ctx: &Ctx, p: &Params) -> Result<FunctionView, UiError> {
    let service = p.service()?;
    let function = p.function()?;
    let window = p.window()?;
    let span = query::service_extent(&ctx.store, service, window)
        .await?
        .unwrap_or(window);
    let bucket_secs = bucket_for(span.to.saturating_sub(span.from));
    let history = query::function_history(&ctx.store, service, function, span, bucket_secs).await?;
    let change_points = regressions::list(
        &ctx.store,
        &ListFilter {
            service: Some(service.to_owned()),
            since: Some(window.from),
            limit: 1000,
            ..ListFilter::default()
        },
    )
    .await?
    .into_iter()
    .filter_map(|r| {
        let m = r.report.members.iter().find(|m| m.function == function)?;
        let (before, after) = match m.metric {
            crate::detect::Metric::Total => (m.total_before, m.total_after),
            crate::detect::Metric::SelfShare => (m.self_before, m.self_after),
        };
        Some(ChangePoint {
            time: u32::try_from(m.onset_unix_s.max(0)).unwrap_or(u32::MAX),
            id: r.id,
            state: regressions::state_name(r.state).to_owned(),
            before_share: before,
            after_share: after,
        })
    })
    .collect();
    let deploys = changes::deploys(&ctx.store, service, 1000)
        .await?
        .into_iter()
        .filter(|d| d.at >= window.from && d.at < window.to)
        .collect();
    let (callers, callees) =
        query::callers_callees(&ctx.store, service, function, window, 20).await?;
    Ok(FunctionView {
        service: service.to_owned(),
        function: function.to_owned(),
        window,
        bucket_secs,
        history,
        change_points,
        deploys,
        stacks: query::stacks_through(&ctx.store, service, function, window, 10).await?,
        callers,
        callees,
        lines: query::hot_lines(&ctx.store, service, function, window, 20).await?,
    })
}

/// A regression in the list, with the slug of its fix if the agent proposed one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionRow {
    /// The stored regression.
    #[serde(flatten)]
    pub regression: StoredRegression,
    /// `/fixes/<slug>` of its proposal.
    pub fix: Option<String>,
}

pub(crate) async fn regression_list(ctx: &Ctx, p: &Params) -> Result<Vec<RegressionRow>, UiError> {
    let state = match p.get("state") {
        None | Some("all") => None,
        Some(s) => Some(
            [State::Open, State::Fixed, State::WentAway]
                .into_iter()
                .find(|st| regressions::state_name(*st) == s)
                .ok_or_else(|| {
                    UiError::BadRequest(format!("state {s:?}: use open, fixed, went_away or all"))
                })?,
        ),
    };
    let list = regressions::list(
        &ctx.store,
        &ListFilter {
            service: p.get("service").map(str::to_owned),
            state,
            since: None,
            limit: 500,
        },
    )
    .await?;
    let fixes = fixes::all(&ctx.config.outboxes);
    Ok(list
        .into_iter()
        .map(|r| RegressionRow {
            fix: fixes
                .iter()
                .filter(|f| f.id == r.id)
                .max_by_key(|f| f.validated())
                .map(|f| f.slug.clone()),
            regression: r,
        })
        .collect())
}

/// One regression with its fix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionView {
    /// The stored regression: evidence (members, shares, z), ranked candidates.
    pub regression: StoredRegression,
    /// The agent's proposal for it, if any.
    pub fix: Option<Fix>,
}

pub(crate) async fn regression(ctx: &Ctx, id: &str) -> Result<RegressionView, UiError> {
    let regression = regressions::get(&ctx.store, id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("no regression {id}")))?;
    let fix = fixes::for_id(&ctx.config.outboxes, &regression.id);
    Ok(RegressionView { regression, fix })
}

/// A hot function that shows an opportunity skill's signs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Opportunity {
    /// The service.
    pub service: String,
    /// The function.
    pub function: String,
    /// Its self share, 0..=1.
    pub self_share: f64,
    /// Its total share, 0..=1.
    pub total_share: f64,
    /// Skills whose profile signs it (or a direct callee) shows.
    pub skills: Vec<String>,
    /// The agent's proposal for it, if any.
    pub fix: Option<Fix>,
}

/// The opportunities page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpportunitiesView {
    /// The window.
    pub window: Window,
    /// The opportunity skills loaded (name, description); empty without `--skills`.
    pub skills: Vec<(String, String)>,
    /// Whether a skills directory was configured.
    pub skills_configured: bool,
    /// The matches, hottest first.
    pub rows: Vec<Opportunity>,
}

/// Functions looked at per service: the hottest by self time, and by total time below this share
/// (frames on nearly every stack, such as `main`, are the runtime, not an opportunity).
const OPPORTUNITY_CANDIDATES: usize = 15;
const RUNTIME_TOTAL_SHARE: f64 = 0.9;
/// Services looked at without `?service=`: the busiest (every process on a host is a service
/// when nothing names it, and the page must stay fast).
const OPPORTUNITY_SERVICES: usize = 8;

pub(crate) async fn opportunities(ctx: &Ctx, p: &Params) -> Result<OpportunitiesView, UiError> {
    let window = p.window()?;
    let skills = ctx
        .config
        .skills
        .as_deref()
        .map(skills::opportunity_skills)
        .unwrap_or_default();
    let fixes = fixes::all(&ctx.config.outboxes);
    let services: Vec<String> = match p.get("service") {
        Some(s) => vec![s.to_owned()],
        None => query::services(&ctx.store, Some(window))
            .await?
            .into_iter()
            .take(OPPORTUNITY_SERVICES)
            .map(|s| s.service)
            .collect(),
    };
    let mut rows = Vec::new();
    for service in services {
        let stacks = query::flamegraph(&ctx.store, &service, window).await?;
        let mut callees: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for s in &stacks {
            let frames: Vec<&str> = s.stack.split(';').collect();
            for w in frames.windows(2) {
                callees.entry(w[0]).or_default().insert(w[1]);
            }
        }
        let mut candidates = flame::top(&stacks, false, OPPORTUNITY_CANDIDATES);
        for r in flame::top(&stacks, true, 3 * OPPORTUNITY_CANDIDATES) {
            if r.total_share < RUNTIME_TOTAL_SHARE
                && !candidates.iter().any(|c| c.function == r.function)
            {
                candidates.push(r);
            }
        }
        for c in candidates {
            if c.function.starts_with('[') || c.function.contains("+0x") {
                continue;
            }
            let below = callees.get(c.function.as_str());
            let matched: Vec<String> = skills
                .iter()
                .filter(|s| s.matches(&c.function, below.into_iter().flatten().copied()))
                .map(|s| s.name.clone())
                .collect();
            let id = fixes::opportunity_id(&service, &c.function);
            let fix = fixes
                .iter()
                .find(|f| f.id == id && f.branch.contains("opportunity"))
                .cloned();
            if matched.is_empty() && fix.is_none() {
                continue;
            }
            rows.push(Opportunity {
                service: service.clone(),
                function: c.function,
                self_share: c.self_share,
                total_share: c.total_share,
                skills: matched,
                fix,
            });
        }
    }
    rows.sort_by(|a, b| {
        b.fix
            .is_some()
            .cmp(&a.fix.is_some())
            .then(b.self_share.total_cmp(&a.self_share))
    });
    Ok(OpportunitiesView {
        window,
        skills_configured: ctx.config.skills.is_some(),
        skills: skills
            .into_iter()
            .map(|s| (s.name, s.description))
            .collect(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets give at most 120 points and are round.
    #[test]
    fn buckets_fit_the_span() {
        assert_eq!(bucket_for(60), 1);
        assert_eq!(bucket_for(200), 2);
        assert_eq!(bucket_for(3600), 30);
        assert_eq!(bucket_for(86_400), 900);
    }
}
