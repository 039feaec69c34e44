//! Energy per function and per service, from the Kepler-style split the profiler stored.
//!
//! A function's joules in one window of one process are its self samples ÷ the process's
//! samples × the joules charged to that process (`process_energy`, active energy only). Watts
//! are joules ÷ the seconds the hosts measured in the query's window (or bucket), summed over
//! hosts, so a service running on hosts without RAPL is never shown as drawing zero: it has no
//! figure (`None`).

use std::collections::HashMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{Filter, QueryError, Value, Window, ch};
use crate::store::Store;

/// A row of [`top_by_energy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyTopRow {
    /// Function name.
    pub function: String,
    /// Samples with the function as leaf, in windows where energy was measured.
    pub self_samples: u64,
    /// Joules charged to the function (as leaf).
    pub joules: f64,
    /// Mean watts over the measured time of the window.
    pub watts: f64,
    /// Share (0..=1) of the service's attributed joules.
    pub energy_share: f64,
}

#[derive(Row, Deserialize)]
struct FunctionJoules {
    host: String,
    t: u32,
    function: String,
    s: u64,
    j: f64,
}

#[derive(Row, Deserialize)]
struct HostSeconds {
    host: String,
    t: u32,
    secs: f64,
}

/// Per (host, bucket, leaf function) of `service`: self samples and joules. `function` limits
/// it to one function. Only windows whose process energy was measured are included.
async fn function_joules(
    store: &Store,
    service: &str,
    window: Window,
    bucket_secs: u32,
    function: Option<&str>,
) -> Result<Vec<FunctionJoules>, QueryError> {
    let base = Filter::service(service).window("time", window, false);
    let (w_leaf, leaf_values) = match function {
        Some(f) => ("WHERE functions[-1] = ?", vec![Value::Str(f.to_owned())]),
        None => ("", Vec::new()),
    };
    // The leaf's name comes from `stacks`: the sample rows per (host, pid, time, stack) joined
    // with their stacks' names. Four filters, bound in the order they appear.
    let named = crate::store::named_samples("host, pid, time", &base.expr());
    let w_base = base.where_clause();
    let sql = format!(
        "SELECT host, toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, function, toUInt64(sum(leaf)) AS s, \
         sum(leaf * pj / n) AS j FROM ( \
           SELECT host, pid, time, function, leaf, n FROM ( \
             SELECT host, pid, time, functions[-1] AS function, sum(count) AS leaf FROM {named} {w_leaf} \
             GROUP BY host, pid, time, function \
           ) ANY INNER JOIN ( \
             SELECT host, pid, time, sum(count) AS n FROM samples {w_base} GROUP BY host, pid, time \
           ) USING (host, pid, time) \
         ) ANY INNER JOIN ( \
           SELECT host, pid, time, sum(joules) AS pj FROM process_energy {w_base} GROUP BY host, pid, time \
         ) USING (host, pid, time) \
         GROUP BY host, t, function"
    );
    let mut q = store.client().query(&sql);
    let bucket = [Value::U32(bucket_secs), Value::U32(bucket_secs)];
    for v in bucket
        .iter()
        .chain(&base.values)
        .chain(&base.values)
        .chain(&leaf_values)
        .chain(&base.values)
        .chain(&base.values)
    {
        q = match v {
            Value::Str(s) => q.bind(s.as_str()),
            Value::U32(n) => q.bind(*n),
            Value::U64(n) => q.bind(*n),
        };
    }
    q.fetch_all::<FunctionJoules>()
        .await
        .map_err(ch("reading samples and process_energy"))
}

/// Seconds each host measured energy, per bucket, in `window` (each window counted once, by
/// the time between its counter readings).
async fn measured_seconds(
    store: &Store,
    window: Window,
    bucket_secs: u32,
) -> Result<HashMap<(String, u32), f64>, QueryError> {
    let filter = Filter::default().window("time", window, false);
    let rows = filter
        .query_with(
            store,
            "SELECT host, toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, sum(w) AS secs FROM ( \
               SELECT host, time, time_ns, any(interval_seconds) AS w FROM host_energy {where} \
               GROUP BY host, time, time_ns \
             ) GROUP BY host, t",
            &[Value::U32(bucket_secs), Value::U32(bucket_secs)],
            &[],
        )
        .fetch_all::<HostSeconds>()
        .await
        .map_err(ch("reading host_energy"))?;
    Ok(rows.into_iter().map(|r| ((r.host, r.t), r.secs)).collect())
}

/// A figure (joules or seconds) per (host, bucket).
type PerHostBucket = HashMap<(String, u32), f64>;

/// Joules → watts: per host and bucket, joules ÷ the seconds that host measured; summed.
fn watts(joules: &PerHostBucket, secs: &PerHostBucket) -> f64 {
    joules
        .iter()
        .filter_map(|(k, j)| secs.get(k).filter(|s| **s > 0.0).map(|s| j / s))
        .sum()
}

/// A bucket wider than any time, so the whole window is one bucket (key 0).
const ONE_BUCKET: u32 = u32::MAX;

/// The `limit` functions of `service` that drew the most energy in `window` (as leaf), with
/// their joules and mean watts. Empty when no host running the service measured energy.
pub async fn top_by_energy(
    store: &Store,
    service: &str,
    window: Window,
    limit: u64,
) -> Result<Vec<EnergyTopRow>, QueryError> {
    let bucket = ONE_BUCKET;
    let rows = function_joules(store, service, window, bucket, None).await?;
    let secs = measured_seconds(store, window, bucket).await?;
    let mut per_function: HashMap<String, (u64, PerHostBucket)> = HashMap::new();
    let mut whole = 0.0;
    for r in rows {
        whole += r.j;
        let e = per_function.entry(r.function).or_default();
        e.0 += r.s;
        *e.1.entry((r.host, r.t)).or_default() += r.j;
    }
    let mut out: Vec<EnergyTopRow> = per_function
        .into_iter()
        .map(|(function, (s, joules))| {
            let j: f64 = joules.values().sum();
            EnergyTopRow {
                function,
                self_samples: s,
                joules: j,
                watts: watts(&joules, &secs),
                energy_share: if whole > 0.0 { j / whole } else { 0.0 },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.joules
            .total_cmp(&a.joules)
            .then_with(|| a.function.cmp(&b.function))
    });
    out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(out)
}

#[derive(Row, Deserialize)]
struct ServiceJoules {
    service: String,
    host: String,
    t: u32,
    j: f64,
}

/// Mean watts of every service whose hosts measured energy in `window`; services without a
/// figure are absent.
pub async fn service_watts(
    store: &Store,
    window: Window,
) -> Result<HashMap<String, f64>, QueryError> {
    let bucket = ONE_BUCKET;
    let rows = Filter::default()
        .window("time", window, false)
        .query_with(
            store,
            "SELECT service, host, toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, sum(joules) AS j \
             FROM process_energy {where} GROUP BY service, host, t",
            &[Value::U32(bucket), Value::U32(bucket)],
            &[],
        )
        .fetch_all::<ServiceJoules>()
        .await
        .map_err(ch("reading process_energy"))?;
    let secs = measured_seconds(store, window, bucket).await?;
    let mut per_service: HashMap<String, PerHostBucket> = HashMap::new();
    for r in rows {
        *per_service
            .entry(r.service)
            .or_default()
            .entry((r.host, r.t))
            .or_default() += r.j;
    }
    Ok(per_service
        .into_iter()
        .map(|(s, j)| (s, watts(&j, &secs)))
        .collect())
}

/// One function's mean watts (as leaf) per bucket of `bucket_secs`; buckets where no host of
/// the service measured energy are absent.
pub async fn function_watts(
    store: &Store,
    service: &str,
    function: &str,
    window: Window,
    bucket_secs: u32,
) -> Result<HashMap<u32, f64>, QueryError> {
    let rows = function_joules(store, service, window, bucket_secs, Some(function)).await?;
    let secs = measured_seconds(store, window, bucket_secs).await?;
    let mut per_bucket: HashMap<u32, PerHostBucket> = HashMap::new();
    for r in rows {
        *per_bucket
            .entry(r.t)
            .or_default()
            .entry((r.host, r.t))
            .or_default() += r.j;
    }
    Ok(per_bucket
        .into_iter()
        .map(|(t, j)| (t, watts(&j, &secs)))
        .collect())
}
