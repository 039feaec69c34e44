//! Query: the questions efficiency engineers (and the agent's tools) ask of the stored profiles,
//! answered as plain data.
//!
//! Every function takes a [`Store`] and returns rows; the CLI prints them as tables and the
//! agent's MCP tools return them as JSON. Shares are percentages of the service's samples in
//! the same window (or version).
//!
//! ```no_run
//! # async fn demo(store: &fleetprof_collector::store::Store) -> Result<(), fleetprof_collector::query::QueryError> {
//! use fleetprof_collector::query::{self, By, Window};
//! let window = Window::last(std::time::Duration::from_secs(3600));
//! for row in query::top(store, "checkout", window, By::Self_, 10).await? {
//!     println!("{:>6.2}% {}", row.self_pct, row.function);
//! }
//! # Ok(()) }
//! ```

mod flame;
mod window;

use std::collections::HashMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

pub use flame::{FoldedStack, differential_flamegraph, folded_text, render_flamegraph};
pub use window::{Side, Window};

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
    /// Self samples as % of the service's samples.
    pub self_pct: f64,
    /// Total samples as % of the service's samples.
    pub total_pct: f64,
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

/// A WHERE clause and its bound values, built piece by piece.
#[derive(Debug, Clone, Default)]
struct Filter {
    sql: Vec<String>,
    values: Vec<Value>,
}

impl Filter {
    fn and(mut self, sql: &str, values: impl IntoIterator<Item = Value>) -> Self {
        self.sql.push(sql.to_owned());
        self.values.extend(values);
        self
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
            q = match v {
                Value::Str(s) => q.bind(s.as_str()),
                Value::U32(n) => q.bind(*n),
                Value::U64(n) => q.bind(*n),
            };
        }
        q
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
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
        .query(
            store,
            "SELECT function, toUInt64(sum(count * (function = functions[-1]))) AS s, \
             toUInt64(sum(count)) AS t FROM samples ARRAY JOIN arrayDistinct(functions) AS function \
             {where} GROUP BY function ORDER BY t DESC, function",
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
            self_pct: pct(r.self_samples, whole),
            total_pct: pct(r.total_samples, whole),
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
        .query(
            store,
            "SELECT arrayStringConcat(arrayMap(f -> replaceAll(f, ';', ':'), functions), ';') AS stack, \
             toUInt64(sum(count)) AS samples FROM samples {where} GROUP BY stack ORDER BY stack",
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
    /// Self share in the baseline, %.
    pub baseline_self_pct: f64,
    /// Self share in the comparison, %.
    pub comparison_self_pct: f64,
    /// Total share in the baseline, %.
    pub baseline_total_pct: f64,
    /// Total share in the comparison, %.
    pub comparison_total_pct: f64,
}

impl DiffRow {
    /// Change of the self share, percentage points.
    pub fn delta_self(&self) -> f64 {
        self.comparison_self_pct - self.baseline_self_pct
    }

    /// Change of the total share, percentage points.
    pub fn delta_total(&self) -> f64 {
        self.comparison_total_pct - self.baseline_total_pct
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
                baseline_self_pct: 0.0,
                comparison_self_pct: 0.0,
                baseline_total_pct: 0.0,
                comparison_total_pct: 0.0,
            });
            if i == 0 {
                row.baseline_self_pct = pct(r.self_samples, whole);
                row.baseline_total_pct = pct(r.total_samples, whole);
            } else {
                row.comparison_self_pct = pct(r.self_samples, whole);
                row.comparison_total_pct = pct(r.total_samples, whole);
            }
        }
    }
    let key = |r: &DiffRow| match by {
        By::Self_ => r.delta_self().abs(),
        By::Total => r.delta_total().abs(),
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Row)]
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
    let mut rows = filter
        .query(
            store,
            "SELECT service, groupUniqArray(version) AS versions, toUInt64(uniqExact(host)) AS hosts, \
             toUInt64(sum(samples)) AS samples, toUInt32(max(minute)) AS last_seen \
             FROM service_minutes {where} GROUP BY service ORDER BY samples DESC, service",
            &[],
        )
        .fetch_all::<ServiceRow>()
        .await
        .map_err(ch("reading service_minutes"))?;
    for r in &mut rows {
        r.versions.sort();
    }
    Ok(rows)
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
    /// Self share, %.
    pub self_pct: f64,
    /// Total share, %.
    pub total_pct: f64,
}

#[derive(Row, Deserialize)]
struct BucketCounts {
    time: u32,
    a: u64,
    b: u64,
}

/// One function's self and total samples and shares over time, in buckets of `bucket_secs`
/// (a multiple of 60; buckets where the service had samples).
pub async fn function_history(
    store: &Store,
    service: &str,
    function: &str,
    window: Window,
    bucket_secs: u32,
) -> Result<Vec<HistoryPoint>, QueryError> {
    if bucket_secs < 60 || !bucket_secs.is_multiple_of(60) {
        return Err(QueryError::BadArgument(format!(
            "bucket of {bucket_secs} s: use a multiple of 60 s"
        )));
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
    Ok(totals
        .into_iter()
        .map(|t| {
            let (s, total) = counts.get(&t.time).copied().unwrap_or((0, 0));
            HistoryPoint {
                time: t.time,
                self_samples: s,
                total_samples: total,
                service_samples: t.a,
                self_pct: pct(s, t.a),
                total_pct: pct(total, t.a),
            }
        })
        .collect())
}

/// A row of [`stacks_through`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackThrough {
    /// Function names, root first.
    pub functions: Vec<String>,
    /// Samples.
    pub samples: u64,
    /// Share of the function's total samples, %.
    pub pct_of_function: f64,
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
        .and("has(functions, ?)", [Value::Str(function.to_owned())]);
    let whole = filter
        .query(
            store,
            "SELECT toUInt64(sum(count)) FROM samples {where}",
            &[],
        )
        .fetch_one::<u64>()
        .await
        .map_err(ch("reading samples"))?;
    let rows = filter
        .query(
            store,
            "SELECT functions, toUInt64(sum(count)) AS samples FROM samples {where} \
             GROUP BY functions ORDER BY samples DESC LIMIT ?",
            &[Value::U64(limit)],
        )
        .fetch_all::<StackCount>()
        .await
        .map_err(ch("reading samples"))?;
    Ok(rows
        .into_iter()
        .map(|r| StackThrough {
            pct_of_function: pct(r.samples, whole),
            functions: r.functions,
            samples: r.samples,
        })
        .collect())
}
