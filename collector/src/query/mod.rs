//! Query: the questions efficiency engineers (and the agent's tools) ask of the stored profiles,
//! answered as plain data.
//!
//! Every function takes a [`Store`] and returns rows; the CLI prints them as tables and the
//! agent's MCP tools return them as JSON. Shares are fractions (0..=1) of the service's samples in
//! the same window (or version); [`crate::share::percent`] renders one for people.
//!
//! ```no_run
//! # async fn demo(store: &fleetprof_collector::store::Store) -> Result<(), fleetprof_collector::query::QueryError> {
//! use fleetprof_collector::query::{self, By, Window};
//! let window = Window::last(std::time::Duration::from_secs(3600));
//! for row in query::top(store, "checkout", window, By::Self_, 10).await? {
//!     println!("{:>8} {}", fleetprof_collector::share::percent(row.self_share), row.function);
//! }
//! # Ok(()) }
//! ```

mod energy;
mod flame;
mod versions;
mod window;

use std::collections::HashMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

pub use energy::{EnergyTopRow, function_watts, service_watts, top_by_energy};
pub use flame::{FoldedStack, differential_flamegraph, folded_text, render_flamegraph};
pub use versions::{
    FrameLocation, VersionsAround, frame_locations, versions_around, versions_per_bucket,
};
pub use window::{Side, Window};

use crate::share;
use crate::store::{Store, StoreError};

/// Errors from queries.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// ClickHouse failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A window or side could not be understood.
    #[error("{0}")]
    BadArgument(String),
    /// Rendering a flame graph failed.
    #[error("rendering the flame graph: {0}")]
    Render(#[source] std::io::Error),
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> QueryError {
    move |e| QueryError::Store(StoreError::ch(what)(e))
}

/// What to rank functions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Samples with the function on CPU (the leaf).
    #[serde(rename = "self")]
    Self_,
    /// Samples with the function anywhere on the stack.
    Total,
}

/// A row of [`top`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// Function name.
    pub function: String,
    /// Samples with the function as leaf.
    pub self_samples: u64,
    /// Samples with the function on the stack.
    pub total_samples: u64,
    /// Self samples as a share (0..=1) of the service's samples.
    pub self_share: f64,
    /// Total samples as a share (0..=1) of the service's samples.
    pub total_share: f64,
}

#[derive(Row, Deserialize)]
struct FunctionCounts {
    function: String,
    self_samples: u64,
    total_samples: u64,
}

/// A bound value for a `?` placeholder.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    U32(u32),
    U64(u64),
}

/// A WHERE clause and its bound values, built piece by piece: conditions on the sample rows'
/// own columns, and conditions on their stacks' `functions` (applied after the join with
/// `stacks`, see [`Filter::query_named`]).
#[derive(Debug, Clone, Default)]
struct Filter {
    sql: Vec<String>,
    values: Vec<Value>,
    stack_sql: Vec<String>,
    stack_values: Vec<Value>,
}

impl Filter {
    fn and(mut self, sql: &str, values: impl IntoIterator<Item = Value>) -> Self {
        self.sql.push(sql.to_owned());
        self.values.extend(values);
        self
    }

    /// A condition on the stack's `functions` (root first).
    fn on_stack(mut self, sql: &str, values: impl IntoIterator<Item = Value>) -> Self {
        self.stack_sql.push(sql.to_owned());
        self.stack_values.extend(values);
        self
    }

    /// The sample conditions as one boolean expression (`1` without any).
    fn expr(&self) -> String {
        if self.sql.is_empty() {
            "1".to_owned()
        } else {
            self.sql.join(" AND ")
        }
    }

    /// `sql` with `{samples}` replaced by the filtered sample rows summed per `columns` and
    /// stack, with the stack's `functions` ([`crate::store::named_samples`]), and `{fwhere}` by
    /// the stack conditions; `leading` values, the filter's values (twice: the derived table
    /// uses them twice), the stack conditions' values, then `extra` are bound in that order.
    fn query_named(
        &self,
        store: &Store,
        sql: &str,
        columns: &str,
        leading: &[Value],
        extra: &[Value],
    ) -> clickhouse::query::Query {
        let fwhere = if self.stack_sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.stack_sql.join(" AND "))
        };
        let sql = sql
            .replace(
                "{samples}",
                &crate::store::named_samples(columns, &self.expr()),
            )
            .replace("{fwhere}", &fwhere);
        let mut q = store.client().query(&sql);
        for v in leading
            .iter()
            .chain(&self.values)
            .chain(&self.values)
            .chain(&self.stack_values)
            .chain(extra)
        {
            q = bind(q, v);
        }
        q
    }

    fn service(service: &str) -> Self {
        Self::default().and("service = ?", [Value::Str(service.to_owned())])
    }

    /// `column` within `window`; for the minute rollups the start is floored to the minute.
    fn window(self, column: &str, window: Window, minutes: bool) -> Self {
        let start = if minutes {
            format!("{column} >= toStartOfMinute(toDateTime(?))")
        } else {
            format!("{column} >= toDateTime(?)")
        };
        self.and(&start, [Value::U32(window.from)]).and(
            &format!("{column} < toDateTime(?)"),
            [Value::U32(window.to)],
        )
    }

    fn side(self, column: &str, side: &Side, default_window: Window, minutes: bool) -> Self {
        match side {
            Side::Version(v) => self
                .window(column, default_window, minutes)
                .and("version = ?", [Value::Str(v.clone())]),
            Side::Window(w) => self.window(column, *w, minutes),
        }
    }

    fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }

    /// `sql` with `{where}` replaced, the filter's values bound in order, then `extra` values.
    fn query(&self, store: &Store, sql: &str, extra: &[Value]) -> clickhouse::query::Query {
        self.query_with(store, sql, &[], extra)
    }

    /// Like [`Filter::query`], with `leading` values for `?` before the WHERE clause.
    fn query_with(
        &self,
        store: &Store,
        sql: &str,
        leading: &[Value],
        extra: &[Value],
    ) -> clickhouse::query::Query {
        let sql = sql.replace("{where}", &self.where_clause());
        let mut q = store.client().query(&sql);
        for v in leading.iter().chain(&self.values).chain(extra) {
            q = bind(q, v);
        }
        q
    }
}

fn bind(q: clickhouse::query::Query, v: &Value) -> clickhouse::query::Query {
    match v {
        Value::Str(s) => q.bind(s.as_str()),
        Value::U32(n) => q.bind(*n),
        Value::U64(n) => q.bind(*n),
    }
}

async fn service_samples(store: &Store, filter: &Filter) -> Result<u64, QueryError> {
    filter
        .query(
            store,
            "SELECT toUInt64(sum(samples)) FROM service_minutes {where}",
            &[],
        )
        .fetch_one::<u64>()
        .await
        .map_err(ch("counting the service's samples"))
}

async fn function_counts(
    store: &Store,
    filter: &Filter,
    order: &str,
    limit: Option<u64>,
) -> Result<Vec<FunctionCounts>, QueryError> {
    let limit_sql = if limit.is_some() { "LIMIT ?" } else { "" };
    let sql = format!(
        "SELECT function, toUInt64(sum(self_samples)) AS s, toUInt64(sum(total_samples)) AS t \
         FROM function_minutes {{where}} GROUP BY function ORDER BY {order} DESC, function {limit_sql}"
    );
    let extra: Vec<Value> = limit.map(Value::U64).into_iter().collect();
    filter
        .query(store, &sql, &extra)
        .fetch_all::<FunctionCounts>()
        .await
        .map_err(ch("reading function_minutes"))
}

/// The service's samples and per-function counts from the `samples` table itself (exact to the
/// second, unlike the minute rollups), counted as `function_minutes_mv` counts them.
async fn exact_counts(
    store: &Store,
    filter: &Filter,
) -> Result<(u64, Vec<FunctionCounts>), QueryError> {
    let whole = filter
        .query(
            store,
            "SELECT toUInt64(sum(count)) FROM samples {where}",
            &[],
        )
        .fetch_one::<u64>()
        .await
        .map_err(ch("counting the service's samples"))?;
    let counts = filter
        .query_named(
            store,
            "SELECT function, toUInt64(sum(count * (function = functions[-1]))) AS s, \
             toUInt64(sum(count)) AS t FROM {samples} ARRAY JOIN arrayDistinct(functions) AS function \
             {fwhere} GROUP BY function ORDER BY t DESC, function",
            "",
            &[],
            &[],
        )
        .fetch_all::<FunctionCounts>()
        .await
        .map_err(ch("reading samples"))?;
    Ok((whole, counts))
}

/// The `limit` functions of `service` with the most self (or total) samples in `window`.
pub async fn top(
    store: &Store,
    service: &str,
    window: Window,
    by: By,
    limit: u64,
) -> Result<Vec<TopRow>, QueryError> {
    let filter = Filter::service(service).window("minute", window, true);
    let whole = service_samples(store, &filter).await?;
    let order = match by {
        By::Self_ => "s",
        By::Total => "t",
    };
    let rows = function_counts(store, &filter, order, Some(limit)).await?;
    Ok(rows
        .into_iter()
        .map(|r| TopRow {
            self_share: share::of(r.self_samples, whole),
            total_share: share::of(r.total_samples, whole),
            function: r.function,
            self_samples: r.self_samples,
            total_samples: r.total_samples,
        })
        .collect())
}

#[derive(Row, Deserialize)]
struct FoldedRow {
    stack: String,
    samples: u64,
}

async fn folded(store: &Store, filter: &Filter) -> Result<Vec<FoldedStack>, QueryError> {
    // `;` separates frames in the folded format; a name containing one (e.g. `[u8; 4]`) gets `:`.
    let rows = filter
        .query_named(
            store,
            "SELECT arrayStringConcat(arrayMap(f -> replaceAll(f, ';', ':'), functions), ';') AS stack, \
             toUInt64(sum(count)) AS samples FROM {samples} {fwhere} GROUP BY stack ORDER BY stack",
            "",
            &[],
            &[],
        )
        .fetch_all::<FoldedRow>()
        .await
        .map_err(ch("reading samples"))?;
    Ok(rows
        .into_iter()
        .map(|r| FoldedStack {
            stack: r.stack,
            samples: r.samples,
        })
        .collect())
}

/// The folded stacks (root first, `;`-separated, with sample counts) of `service` in `window`:
/// the input of a flame graph (see [`render_flamegraph`]).
pub async fn flamegraph(
    store: &Store,
    service: &str,
    window: Window,
) -> Result<Vec<FoldedStack>, QueryError> {
    folded(
        store,
        &Filter::service(service).window("time", window, false),
    )
    .await
}

/// A row of [`diff`]: how a function's share of the service changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffRow {
    /// Function name.
    pub function: String,
    /// Self share in the baseline, 0..=1.
    pub baseline_self_share: f64,
    /// Self share in the comparison, 0..=1.
    pub comparison_self_share: f64,
    /// Total share in the baseline, 0..=1.
    pub baseline_total_share: f64,
    /// Total share in the comparison, 0..=1.
    pub comparison_total_share: f64,
}

impl DiffRow {
    /// Change of the self share (a difference of shares; ×100 for percentage points).
    pub fn delta_self_share(&self) -> f64 {
        self.comparison_self_share - self.baseline_self_share
    }

    /// Change of the total share (a difference of shares; ×100 for percentage points).
    pub fn delta_total_share(&self) -> f64 {
        self.comparison_total_share - self.baseline_total_share
    }
}

/// Compares `service` between two sides (each a version within `versions_window`, or a time
/// window): the `limit` functions whose self (or total) share changed most, largest change first.
pub async fn diff(
    store: &Store,
    service: &str,
    baseline: &Side,
    comparison: &Side,
    versions_window: Window,
    by: By,
    limit: usize,
) -> Result<Vec<DiffRow>, QueryError> {
    let mut shares: HashMap<String, DiffRow> = HashMap::new();
    for (i, side) in [baseline, comparison].into_iter().enumerate() {
        // A version side reads the minute rollups (the version tells the sides apart). A time
        // window reads the samples themselves: two windows within one minute would otherwise
        // read the same rollup rows and come back identical.
        let (whole, counts) = match side {
            Side::Version(_) => {
                let filter = Filter::service(service).side("minute", side, versions_window, true);
                (
                    service_samples(store, &filter).await?,
                    function_counts(store, &filter, "t", None).await?,
                )
            }
            Side::Window(_) => {
                let filter = Filter::service(service).side("time", side, versions_window, false);
                exact_counts(store, &filter).await?
            }
        };
        if whole == 0 {
            return Err(QueryError::BadArgument(format!(
                "no samples of service {service:?} for {side}"
            )));
        }
        for r in counts {
            let row = shares.entry(r.function.clone()).or_insert_with(|| DiffRow {
                function: r.function.clone(),
                baseline_self_share: 0.0,
                comparison_self_share: 0.0,
                baseline_total_share: 0.0,
                comparison_total_share: 0.0,
            });
            if i == 0 {
                row.baseline_self_share = share::of(r.self_samples, whole);
                row.baseline_total_share = share::of(r.total_samples, whole);
            } else {
                row.comparison_self_share = share::of(r.self_samples, whole);
                row.comparison_total_share = share::of(r.total_samples, whole);
            }
        }
    }
    let key = |r: &DiffRow| match by {
        By::Self_ => r.delta_self_share().abs(),
        By::Total => r.delta_total_share().abs(),
    };
    let mut rows: Vec<DiffRow> = shares.into_values().collect();
    rows.sort_by(|a, b| {
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.function.cmp(&b.function))
    });
    rows.truncate(limit);
    Ok(rows)
}

/// The folded stacks of both sides of a diff, for [`differential_flamegraph`].
pub async fn diff_folded(
    store: &Store,
    service: &str,
    baseline: &Side,
    comparison: &Side,
    versions_window: Window,
) -> Result<(Vec<FoldedStack>, Vec<FoldedStack>), QueryError> {
    let before = folded(
        store,
        &Filter::service(service).side("time", baseline, versions_window, false),
    )
    .await?;
    let after = folded(
        store,
        &Filter::service(service).side("time", comparison, versions_window, false),
    )
    .await?;
    Ok((before, after))
}

/// A row of [`services`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// Service name.
    pub service: String,
    /// Versions seen, sorted.
    pub versions: Vec<String>,
    /// Distinct hosts.
    pub hosts: u64,
    /// Samples.
    pub samples: u64,
    /// Start of the last minute with samples (Unix seconds).
    pub last_seen: u32,
    /// Mean watts charged to the service (active energy, Kepler's split) over the time its
    /// hosts measured energy in the window; `None` where no host measured it.
    pub watts: Option<f64>,
}

#[derive(Row, Deserialize)]
struct ServiceCounts {
    service: String,
    versions: Vec<String>,
    hosts: u64,
    samples: u64,
    last_seen: u32,
}

/// Every service with samples (in `window`, or ever): versions, hosts, samples, last seen;
/// most samples first.
pub async fn services(
    store: &Store,
    window: Option<Window>,
) -> Result<Vec<ServiceRow>, QueryError> {
    let filter = match window {
        Some(w) => Filter::default().window("minute", w, true),
        None => Filter::default(),
    };
    let rows = filter
        .query(
            store,
            "SELECT service, groupUniqArray(version) AS versions, toUInt64(uniqExact(host)) AS hosts, \
             toUInt64(sum(samples)) AS samples, toUInt32(max(minute)) AS last_seen \
             FROM service_minutes {where} GROUP BY service ORDER BY samples DESC, service",
            &[],
        )
        .fetch_all::<ServiceCounts>()
        .await
        .map_err(ch("reading service_minutes"))?;
    let watts = service_watts(
        store,
        window.unwrap_or(Window {
            from: 0,
            to: u32::MAX,
        }),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut versions = r.versions;
            versions.sort();
            ServiceRow {
                watts: watts.get(&r.service).copied(),
                service: r.service,
                versions,
                hosts: r.hosts,
                samples: r.samples,
                last_seen: r.last_seen,
            }
        })
        .collect())
}

/// A row of [`service_usage`]: how much CPU (and energy) a service used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceUsage {
    /// Service name.
    pub service: String,
    /// Samples in the window.
    pub samples: u64,
    /// Minutes of the window with samples.
    pub active_minutes: u64,
    /// Mean CPU cores over those minutes: samples / (frequency × seconds).
    pub cores: f64,
    /// Mean watts attributed over those minutes, where RAPL energy was measured (never 0 for
    /// "unknown").
    pub watts: Option<f64>,
}

#[derive(Row, Deserialize)]
struct UsageRow {
    service: String,
    samples: u64,
    minutes: u64,
}

#[derive(Row, Deserialize)]
struct JoulesRow {
    service: String,
    joules: f64,
}

/// CPU cores and watts of every service in `window`, averaged over the minutes it had samples;
/// the sampling frequency is the mean of the window's batches (19 Hz if none says).
pub async fn service_usage(store: &Store, window: Window) -> Result<Vec<ServiceUsage>, QueryError> {
    let rows = Filter::default()
        .window("minute", window, true)
        .query(
            store,
            "SELECT service, toUInt64(sum(samples)) AS samples, toUInt64(uniqExact(minute)) AS minutes \
             FROM service_minutes {where} GROUP BY service ORDER BY service",
            &[],
        )
        .fetch_all::<UsageRow>()
        .await
        .map_err(ch("reading service_minutes"))?;
    let hz = Filter::default()
        .window("time", window, false)
        .and("frequency_hz > 0", std::iter::empty())
        .query(
            store,
            "SELECT toFloat64(avg(frequency_hz)) FROM batches {where}",
            &[],
        )
        .fetch_one::<f64>()
        .await
        .map_err(ch("reading batches"))?;
    let hz = if hz.is_finite() && hz > 0.0 { hz } else { 19.0 };
    let joules: HashMap<String, f64> = Filter::default()
        .window("time", window, false)
        .query(
            store,
            "SELECT service, sum(joules) AS joules FROM process_energy {where} GROUP BY service",
            &[],
        )
        .fetch_all::<JoulesRow>()
        .await
        .map_err(ch("reading process_energy"))?
        .into_iter()
        .map(|r| (r.service, r.joules))
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let secs = (r.minutes.max(1) * 60) as f64;
            ServiceUsage {
                cores: r.samples as f64 / (hz * secs),
                watts: joules.get(&r.service).map(|j| j / secs),
                service: r.service,
                samples: r.samples,
                active_minutes: r.minutes,
            }
        })
        .collect())
}

/// A point of [`function_history`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Bucket start (Unix seconds).
    pub time: u32,
    /// Self samples of the function.
    pub self_samples: u64,
    /// Total samples of the function.
    pub total_samples: u64,
    /// All samples of the service.
    pub service_samples: u64,
    /// Self share, 0..=1.
    pub self_share: f64,
    /// Total share, 0..=1.
    pub total_share: f64,
    /// Mean watts charged to the function (as leaf) in the bucket; `None` where not measured.
    pub watts: Option<f64>,
}

#[derive(Row, Deserialize)]
struct BucketCounts {
    time: u32,
    a: u64,
    b: u64,
}

/// One function's self and total samples and shares over time, in buckets of `bucket_secs`
/// (buckets where the service had samples). Multiples of 60 s read the minute rollups; shorter
/// buckets (for short windows) read `samples`.
pub async fn function_history(
    store: &Store,
    service: &str,
    function: &str,
    window: Window,
    bucket_secs: u32,
) -> Result<Vec<HistoryPoint>, QueryError> {
    if bucket_secs == 0 {
        return Err(QueryError::BadArgument(
            "a bucket of 0 s: use at least 1 s".into(),
        ));
    }
    if !bucket_secs.is_multiple_of(60) {
        return fine_history(store, service, function, window, bucket_secs).await;
    }
    let bucket = [Value::U32(bucket_secs), Value::U32(bucket_secs)];
    let base = Filter::service(service).window("minute", window, true);
    let totals = base
        .query_with(
            store,
            "SELECT toUInt32(intDiv(toUInt32(minute), ?) * ?) AS time, toUInt64(sum(samples)) AS a, \
             toUInt64(0) AS b FROM service_minutes {where} GROUP BY time ORDER BY time",
            &bucket,
            &[],
        )
        .fetch_all::<BucketCounts>()
        .await
        .map_err(ch("reading service_minutes"))?;
    let counts = base
        .and("function = ?", [Value::Str(function.to_owned())])
        .query_with(
            store,
            "SELECT toUInt32(intDiv(toUInt32(minute), ?) * ?) AS time, toUInt64(sum(self_samples)) AS a, \
             toUInt64(sum(total_samples)) AS b FROM function_minutes {where} GROUP BY time ORDER BY time",
            &bucket,
            &[],
        )
        .fetch_all::<BucketCounts>()
        .await
        .map_err(ch("reading function_minutes"))?;
    let counts: HashMap<u32, (u64, u64)> =
        counts.into_iter().map(|c| (c.time, (c.a, c.b))).collect();
    let watts = function_watts(store, service, function, window, bucket_secs).await?;
    Ok(totals
        .into_iter()
        .map(|t| {
            let (s, total) = counts.get(&t.time).copied().unwrap_or((0, 0));
            HistoryPoint {
                time: t.time,
                self_samples: s,
                total_samples: total,
                service_samples: t.a,
                self_share: share::of(s, t.a),
                total_share: share::of(total, t.a),
                watts: watts.get(&t.time).copied(),
            }
        })
        .collect())
}

/// [`function_history`] for buckets that are not whole minutes, from `samples`.
async fn fine_history(
    store: &Store,
    service: &str,
    function: &str,
    window: Window,
    bucket_secs: u32,
) -> Result<Vec<HistoryPoint>, QueryError> {
    let rows = Filter::service(service)
        .window("time", window, false)
        .query_named(
            store,
            "SELECT toUInt32(intDiv(toUInt32(time), ?) * ?) AS time, toUInt64(sum(count)) AS n, \
             toUInt64(sum(count * (functions[-1] = ?))) AS s, toUInt64(sum(count * has(functions, ?))) AS t \
             FROM {samples} {fwhere} GROUP BY time ORDER BY time",
            "time",
            &[
                Value::U32(bucket_secs),
                Value::U32(bucket_secs),
                Value::Str(function.to_owned()),
                Value::Str(function.to_owned()),
            ],
            &[],
        )
        .fetch_all::<FineBucket>()
        .await
        .map_err(ch("reading samples"))?;
    Ok(rows
        .into_iter()
        .map(|r| HistoryPoint {
            time: r.time,
            self_samples: r.s,
            total_samples: r.t,
            service_samples: r.n,
            self_share: share::of(r.s, r.n),
            total_share: share::of(r.t, r.n),
            // Energy is attributed per minute; finer buckets carry no watts.
            watts: None,
        })
        .collect())
}

#[derive(Row, Deserialize)]
struct FineBucket {
    time: u32,
    n: u64,
    s: u64,
    t: u64,
}

/// The folded stacks of `service` on one side (a version within `versions_window`, or a time
/// window): a flame graph of one version.
pub async fn flamegraph_side(
    store: &Store,
    service: &str,
    side: &Side,
    versions_window: Window,
) -> Result<Vec<FoldedStack>, QueryError> {
    folded(
        store,
        &Filter::service(service).side("time", side, versions_window, false),
    )
    .await
}

#[derive(Row, Deserialize)]
struct Extent {
    first: u32,
    last: u32,
    n: u64,
}

/// The minutes of `window` in which `service` has samples, as a window from the start of the
/// first to the end of the last; `None` without samples. Lets views pick a resolution that fits
/// the data rather than the window asked for.
pub async fn service_extent(
    store: &Store,
    service: &str,
    window: Window,
) -> Result<Option<Window>, QueryError> {
    let e = Filter::service(service)
        .window("minute", window, true)
        .query(
            store,
            "SELECT toUInt32(min(minute)) AS first, toUInt32(max(minute)) AS last, \
             toUInt64(sum(samples)) AS n FROM service_minutes {where}",
            &[],
        )
        .fetch_one::<Extent>()
        .await
        .map_err(ch("reading service_minutes"))?;
    Ok((e.n > 0).then(|| Window {
        from: e.first.max(window.from),
        to: (e.last + 60).min(window.to),
    }))
}

/// A caller or callee of a function, from adjacent frames of its stacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The caller's or callee's name.
    pub function: String,
    /// Samples with the pair adjacent on the stack.
    pub samples: u64,
    /// Share (0..=1) of the function's total samples.
    pub share_of_function: f64,
}

#[derive(Row, Deserialize)]
struct PairCount {
    caller: String,
    callee: String,
    n: u64,
}

/// The direct callers and callees of `function` in `service` over `window` (at most `limit`
/// each, most samples first), from adjacent frames of the stacks through it.
pub async fn callers_callees(
    store: &Store,
    service: &str,
    function: &str,
    window: Window,
    limit: usize,
) -> Result<(Vec<Neighbour>, Vec<Neighbour>), QueryError> {
    let filter = Filter::service(service)
        .window("time", window, false)
        .on_stack("has(functions, ?)", [Value::Str(function.to_owned())]);
    let whole = filter
        .query_named(
            store,
            "SELECT toUInt64(sum(count)) FROM {samples} {fwhere}",
            "",
            &[],
            &[],
        )
        .fetch_one::<u64>()
        .await
        .map_err(ch("reading samples"))?;
    let f = Value::Str(function.to_owned());
    let pairs = filter
        .query_named(
            store,
            "SELECT caller, callee, toUInt64(sum(count)) AS n FROM ( \
               SELECT tupleElement(pair, 1) AS caller, tupleElement(pair, 2) AS callee, count \
               FROM {samples} ARRAY JOIN arrayMap((a, b) -> (a, b), \
                 arraySlice(functions, 1, length(functions) - 1), arraySlice(functions, 2)) AS pair \
               {fwhere}) \
             WHERE caller != callee AND (caller = ? OR callee = ?) \
             GROUP BY caller, callee ORDER BY n DESC, caller, callee",
            "",
            &[],
            &[f.clone(), f],
        )
        .fetch_all::<PairCount>()
        .await
        .map_err(ch("reading callers and callees"))?;
    let (mut callers, mut callees) = (Vec::new(), Vec::new());
    for p in pairs {
        let (list, name) = if p.callee == function {
            (&mut callers, p.caller)
        } else {
            (&mut callees, p.callee)
        };
        if list.len() < limit {
            list.push(Neighbour {
                function: name,
                samples: p.n,
                share_of_function: share::of(p.n, whole),
            });
        }
    }
    Ok((callers, callees))
}

/// A source line of [`hot_lines`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineRow {
    /// Source file.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Samples on CPU at this line of the function.
    pub self_samples: u64,
    /// Samples with the function at this line anywhere on the stack (for a caller, the call).
    pub total_samples: u64,
}

#[derive(Row, Deserialize)]
struct StackSamples {
    stack_id: u64,
    n: u64,
    leaf: u8,
}

#[derive(Row, Deserialize)]
struct StackFrame {
    stack_id: u64,
    frame_id: u64,
}

#[derive(Row, Deserialize)]
struct FrameLine {
    frame_id: u64,
    file: String,
    line: u32,
}

/// The hottest source lines of `function` in `service` over `window` (at most `limit`, by total
/// samples), where the symbolizer had line info: from the function's frame in each stack through
/// it. Empty without debug info.
pub async fn hot_lines(
    store: &Store,
    service: &str,
    function: &str,
    window: Window,
    limit: usize,
) -> Result<Vec<LineRow>, QueryError> {
    let stacks = Filter::service(service)
        .window("time", window, false)
        .on_stack("has(functions, ?)", [Value::Str(function.to_owned())])
        .query_named(
            store,
            "SELECT stack_id, toUInt64(sum(count)) AS n, toUInt8(functions[-1] = ?) AS leaf \
             FROM {samples} {fwhere} GROUP BY stack_id, leaf ORDER BY n DESC LIMIT 5000",
            "",
            &[Value::Str(function.to_owned())],
            &[],
        )
        .fetch_all::<StackSamples>()
        .await
        .map_err(ch("reading samples"))?;
    if stacks.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<u64> = stacks.iter().map(|s| s.stack_id).collect();
    let frames = store
        .client()
        .query(
            "SELECT stack_id, any(frame_ids[indexOf(functions, ?)]) AS frame_id FROM stacks \
             WHERE stack_id IN (SELECT arrayJoin(?)) GROUP BY stack_id",
        )
        .bind(function)
        .bind(&ids)
        .fetch_all::<StackFrame>()
        .await
        .map_err(ch("reading stacks"))?;
    let frame_of: HashMap<u64, u64> = frames.iter().map(|f| (f.stack_id, f.frame_id)).collect();
    let frame_ids: Vec<u64> = frame_of.values().copied().collect();
    let lines = store
        .client()
        .query(
            "SELECT frame_id, any(file) AS source_file, any(line) AS source_line FROM frames \
             WHERE frame_id IN (SELECT arrayJoin(?)) AND file != '' GROUP BY frame_id",
        )
        .bind(&frame_ids)
        .fetch_all::<FrameLine>()
        .await
        .map_err(ch("reading frames"))?;
    let line_of: HashMap<u64, (String, u32)> = lines
        .into_iter()
        .map(|l| (l.frame_id, (l.file, l.line)))
        .collect();
    let mut by_line: HashMap<(String, u32), (u64, u64)> = HashMap::new();
    for s in &stacks {
        let Some(at) = frame_of.get(&s.stack_id).and_then(|f| line_of.get(f)) else {
            continue;
        };
        let e = by_line.entry(at.clone()).or_default();
        e.1 += s.n;
        if s.leaf == 1 {
            e.0 += s.n;
        }
    }
    let mut rows: Vec<LineRow> = by_line
        .into_iter()
        .map(|((file, line), (s, t))| LineRow {
            file,
            line,
            self_samples: s,
            total_samples: t,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.total_samples
            .cmp(&a.total_samples)
            .then_with(|| a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
    });
    rows.truncate(limit);
    Ok(rows)
}

/// A row of [`stacks_through`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackThrough {
    /// Function names, root first.
    pub functions: Vec<String>,
    /// Samples.
    pub samples: u64,
    /// Share (0..=1) of the function's total samples.
    pub share_of_function: f64,
}

#[derive(Row, Deserialize)]
struct StackCount {
    functions: Vec<String>,
    samples: u64,
}

/// The `limit` hottest stacks of `service` in `window` that pass through `function`.
pub async fn stacks_through(
    store: &Store,
    service: &str,
    function: &str,
    window: Window,
    limit: u64,
) -> Result<Vec<StackThrough>, QueryError> {
    let filter = Filter::service(service)
        .window("time", window, false)
        .on_stack("has(functions, ?)", [Value::Str(function.to_owned())]);
    let whole = filter
        .query_named(
            store,
            "SELECT toUInt64(sum(count)) FROM {samples} {fwhere}",
            "",
            &[],
            &[],
        )
        .fetch_one::<u64>()
        .await
        .map_err(ch("reading samples"))?;
    let rows = filter
        .query_named(
            store,
            "SELECT functions, toUInt64(sum(count)) AS samples FROM {samples} {fwhere} \
             GROUP BY functions ORDER BY samples DESC LIMIT ?",
            "",
            &[],
            &[Value::U64(limit)],
        )
        .fetch_all::<StackCount>()
        .await
        .map_err(ch("reading samples"))?;
    Ok(rows
        .into_iter()
        .map(|r| StackThrough {
            share_of_function: share::of(r.samples, whole),
            functions: r.functions,
            samples: r.samples,
        })
        .collect())
}
