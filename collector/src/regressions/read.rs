//! Reading a service's [`ServiceSeries`] and version boundaries out of ClickHouse.
//!
//! Buckets are aligned to the epoch (`intDiv(toUInt32(time), B) * B`), so re-running detection
//! over a shifted window puts the same samples in the same buckets and finds the same onsets.

use std::collections::{BTreeSet, HashMap};

use clickhouse::Row;
use serde::Deserialize;

use super::RegressionsError;
use crate::detect::{FunctionSeries, ServiceSeries, VersionBoundary};
use crate::query::Window;
use crate::store::{CUT_STACK, Store, StoreError, named_samples_of};

/// Sampling frequency assumed when the `batches` table does not say (the profiler's default).
pub const DEFAULT_FREQUENCY_HZ: f64 = 19.0;

/// Which functions of a service to read, and at which resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesOptions {
    /// Bucket length in seconds. Multiples of 60 read the minute rollups (`function_minutes`,
    /// `service_minutes`); anything else reads `samples` directly. Default: 60.
    pub bucket_secs: u32,
    /// Smallest share of the window's samples (total time) a function needs to be tested.
    /// Default: 0.002 (0.2%).
    pub min_share: f64,
    /// Most functions tested per service, hottest first. Default: 2000.
    pub max_functions: usize,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        Self {
            bucket_secs: 60,
            min_share: 0.002,
            max_functions: 2000,
        }
    }
}

/// Binds the three `?`s of a service-and-window condition
/// (`service = ? AND time >= toDateTime(?) AND time < toDateTime(?)`), which almost every
/// reader here repeats, in that order.
trait BindScope {
    fn bind_scope(self, service: &str, from: u32, to: u32) -> Self;
}

impl BindScope for clickhouse::query::Query {
    fn bind_scope(self, service: &str, from: u32, to: u32) -> Self {
        self.bind(service).bind(from).bind(to)
    }
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> RegressionsError {
    move |e| RegressionsError::Store(StoreError::ch(what)(e))
}

#[derive(Row, Deserialize)]
struct BucketTotal {
    t: u32,
    n: u64,
}

#[derive(Row, Deserialize)]
struct FunctionTotal {
    function: String,
    k: u64,
}

#[derive(Row, Deserialize)]
struct FunctionBucket {
    function: String,
    t: u32,
    s: u64,
    k: u64,
}

#[derive(Row, Deserialize)]
struct Pair {
    caller: String,
    callee: String,
    n: u64,
}

/// Share of a function's samples an adjacent (caller, callee) pair must carry to make a caller.
///
/// Frame-pointer unwinding skips a leaf's caller when the sample lands in its prologue (before
/// `push rbp`), inventing rare edges such as `handle_request → discounted_price` past
/// `price_items`. Those would make unrelated functions siblings, and the cost-shift filter would
/// then take a regression for cost moved between them.
pub const MIN_CALLER_SHARE: f64 = 0.01;

#[derive(Row, Deserialize)]
struct FunctionFile {
    function: String,
    file: String,
}

#[derive(Row, Deserialize)]
struct BucketJoules {
    t: u32,
    j: f64,
}

#[derive(Row, Deserialize)]
struct VersionFirst {
    version: String,
    first: u32,
}

/// The SQL pieces of one source: the rollups or the raw samples.
struct Source {
    /// `FROM ... WHERE` for the service's totals per bucket (binds: B, B, service, from, to).
    totals: &'static str,
    /// Total samples per function over the window (binds: service, from, to, min, limit).
    select: String,
    /// Self and total samples per function and bucket (binds: B, B, service, from, to, twice,
    /// then names); `None` for the rollups, which [`function_minutes`] reads.
    buckets: Option<String>,
    /// `select` and `buckets` take (service, from, to) twice in a row (the sample rows joined
    /// with their stacks' names, [`crate::store::named_samples`]).
    twice: bool,
}

/// The window condition of the raw samples (binds: service, from, to).
///
/// Lists of names are matched with `col IN (SELECT arrayJoin(?))`, not `has(?, col)`: 18.16
/// evaluates `has` with a constant array by scanning the array for every row (10.9 s for a day of
/// one service's 1,657 functions in the query bench), while `IN` builds a hash set once (1.1 s).
const SAMPLE_WHERE: &str = "service = ? AND time >= toDateTime(?) AND time < toDateTime(?)";

fn rollups() -> Source {
    Source {
        totals: "SELECT toUInt32(intDiv(toUInt32(minute), ?) * ?) AS t, toUInt64(sum(samples)) AS n \
             FROM service_minutes WHERE service = ? AND minute >= toDateTime(?) \
             AND minute < toDateTime(?) GROUP BY t ORDER BY t",
        select: "SELECT function, toUInt64(sum(total_samples)) AS k FROM function_minutes \
             WHERE service = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
             GROUP BY function HAVING k >= ? ORDER BY k DESC, function LIMIT ?"
            .to_owned(),
        buckets: None,
        twice: false,
    }
}

fn raw_samples() -> Source {
    Source {
        totals: "SELECT toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, toUInt64(sum(count)) AS n \
             FROM samples WHERE service = ? AND time >= toDateTime(?) AND time < toDateTime(?) \
             GROUP BY t ORDER BY t",
        select: format!(
            "SELECT function, toUInt64(sum(count)) AS k FROM {} \
         ARRAY JOIN arrayDistinct(functions) AS function \
         GROUP BY function HAVING k >= ? ORDER BY k DESC, function LIMIT ?",
            crate::store::named_samples("", SAMPLE_WHERE)
        ),
        buckets: Some(format!(
            "SELECT function, toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, \
         toUInt64(sum(count * (function = functions[-1]))) AS s, toUInt64(sum(count)) AS k \
         FROM {} ARRAY JOIN arrayDistinct(functions) AS function \
         WHERE function IN (SELECT arrayJoin(?)) GROUP BY function, t",
            crate::store::named_samples("time", SAMPLE_WHERE)
        )),
        twice: true,
    }
}

/// The window's start floored to a bucket boundary.
pub(crate) fn aligned_start(window: Window, bucket_secs: u32) -> u32 {
    window.from / bucket_secs * bucket_secs
}

/// Reads `service`'s series over `window`: per bucket its samples and, for every function with
/// at least `min_share` of the window's samples (hottest `max_functions`), self and total samples,
/// callers, source file; the sampling frequency and, where measured, energy. Leading and trailing
/// buckets without samples are dropped. `None` if the service has no samples in the window.
pub async fn read_series(
    store: &Store,
    service: &str,
    window: Window,
    options: SeriesOptions,
) -> Result<Option<ServiceSeries>, RegressionsError> {
    let b = options.bucket_secs;
    if b == 0 {
        return Err(RegressionsError::BadArgument(
            "the bucket must be at least 1 s".into(),
        ));
    }
    let source = if b.is_multiple_of(60) {
        rollups()
    } else {
        raw_samples()
    };
    let start = aligned_start(window, b);
    let to = window.to;
    let totals = store
        .client()
        .query(source.totals)
        .bind(b)
        .bind(b)
        .bind_scope(service, start, to)
        .fetch_all::<BucketTotal>()
        .await
        .map_err(ch("reading the service's samples per bucket"))?;
    let (Some(first), Some(last)) = (
        totals.iter().find(|r| r.n > 0),
        totals.iter().rev().find(|r| r.n > 0),
    ) else {
        return Ok(None);
    };
    let (first, last) = (first.t, last.t);
    let len = ((last - first) / b + 1) as usize;
    let index = |t: u32| (t >= first && t <= last).then(|| ((t - first) / b) as usize);
    // Samples of cut stacks (root `[truncated: …]` / `[stack lost: …]`) leave the denominator here
    // and every function's numerator below: a change in unwinding quality alone (a daemon restart,
    // unwind tables dropped for capacity) would otherwise move every root function's share.
    let cut_totals = store
        .client()
        .query(&format!(
            "SELECT toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, toUInt64(sum(count)) AS n \
             FROM {} GROUP BY t",
            named_samples_of("time", SAMPLE_WHERE, CUT_STACK)
        ))
        .bind(b)
        .bind(b)
        .bind_scope(service, start, to)
        .bind_scope(service, start, to)
        .fetch_all::<BucketTotal>()
        .await
        .map_err(ch("reading the service's cut stacks per bucket"))?;
    let mut cut = vec![0u32; len];
    for r in &cut_totals {
        if let Some(i) = index(r.t) {
            cut[i] = u32::try_from(r.n).unwrap_or(u32::MAX);
        }
    }
    // When most of the service's stacks are cut in (nearly) every bucket, the profiler could not
    // unwind it at all (no tables for its code): the cut stacks' leaf frames are then all the
    // signal there is, so they stay. Not when the cut fraction changes over the window (tables
    // loaded late on a busy host, dropped for capacity, a daemon restart): kept then, the cut
    // stacks would move every root function's share from 0 to 1 at the change.
    let mut by_bucket = vec![0u64; len];
    for r in &totals {
        if let Some(i) = index(r.t) {
            by_bucket[i] += r.n;
        }
    }
    if stably_cut(&by_bucket, &cut) {
        tracing::debug!(
            service,
            "most stacks are cut in every bucket: detection keeps them"
        );
        cut.iter_mut().for_each(|c| *c = 0);
    }
    let mut samples = vec![0u32; len];
    let mut whole = 0u64;
    for r in &totals {
        if let Some(i) = index(r.t) {
            // The rollup and `samples` are separate INSERTs; saturate rather than wrap.
            samples[i] = u32::try_from(r.n)
                .unwrap_or(u32::MAX)
                .saturating_sub(cut[i]);
            whole += u64::from(samples[i]);
        }
    }

    let min = (whole as f64 * options.min_share).ceil().max(1.0) as u64;
    let mut query = store.client().query(&source.select);
    for _ in 0..if source.twice { 2 } else { 1 } {
        query = query.bind_scope(service, start, to);
    }
    let selected = query
        .bind(min)
        .bind(options.max_functions as u64)
        .fetch_all::<FunctionTotal>()
        .await
        .map_err(ch("selecting the service's functions"))?;
    let names: Vec<String> = selected
        .into_iter()
        .filter(|f| f.k > 0 && !is_placeholder_frame(&f.function))
        .map(|f| f.function)
        .collect();
    let mut functions: Vec<FunctionSeries> = names
        .iter()
        .map(|name| FunctionSeries {
            function: name.clone(),
            file: None,
            callers: Vec::new(),
            k_total: vec![0; len],
            k_self: vec![0; len],
        })
        .collect();
    let position: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    if !names.is_empty() {
        let rows = if let Some(sql) = &source.buckets {
            let mut query = store.client().query(sql).bind(b).bind(b);
            for _ in 0..2 {
                query = query.bind_scope(service, start, to);
            }
            query
                .bind(&names)
                .fetch_all::<FunctionBucket>()
                .await
                .map_err(ch("reading the functions' samples per bucket"))?
        } else {
            function_minutes(store, service, start, to, b, &names).await?
        };
        for r in rows {
            let (Some(&f), Some(i)) = (position.get(r.function.as_str()), index(r.t)) else {
                continue;
            };
            let series = &mut functions[f];
            let add = |a: u32, v: u64| a.saturating_add(u32::try_from(v).unwrap_or(u32::MAX));
            series.k_total[i] = add(series.k_total[i], r.k);
            series.k_self[i] = add(series.k_self[i], r.s);
        }
        // The two rollups are separate INSERTs; clamp so one landing before the other cannot
        // make a function count more samples than its service (cut stacks still in both here;
        // they leave both below).
        for f in &mut functions {
            for (i, k) in f.k_total.iter_mut().enumerate() {
                *k = (*k).min(samples[i].saturating_add(cut[i]));
            }
            for (s, &k) in f.k_self.iter_mut().zip(&f.k_total) {
                *s = (*s).min(k);
            }
        }
        if cut.iter().any(|&c| c > 0) {
            remove_cut_stacks(
                store,
                service,
                start,
                to,
                b,
                &names,
                &position,
                &index,
                &mut functions,
            )
            .await?;
            for f in &mut functions {
                for (k, &n) in f.k_total.iter_mut().zip(&samples) {
                    *k = (*k).min(n);
                }
                for (s, &k) in f.k_self.iter_mut().zip(&f.k_total) {
                    *s = (*s).min(k);
                }
            }
        }
        add_callers(store, service, start, to, &names, &position, &mut functions).await?;
        add_files(store, &names, &position, &mut functions).await?;
    }

    Ok(Some(ServiceSeries {
        service: service.to_owned(),
        start_unix_s: i64::from(first),
        bucket_secs: b,
        frequency_hz: frequency(store, service, start, to).await?,
        samples,
        energy_joules: energy(store, service, start, to, b, len, index).await?,
        functions,
    }))
}

#[derive(Row, Deserialize)]
struct FunctionMinutes {
    function: String,
    minutes: Vec<u32>,
    s: Vec<u64>,
    k: Vec<u64>,
}

/// The selected functions' self and total samples per bucket from `function_minutes`, one row
/// per function and bucket (a bucket's rows are to be summed: versions, unmerged parts).
///
/// One row per function with its minutes as arrays, bucketed here: grouping by (function,
/// bucket) in ClickHouse hashes a string key per minute and sends the name with every bucket
/// (2.1 s and 48 MB for a day of one service's 1,657 functions in the query bench), where
/// grouping by function alone takes 0.45 s and 18 MB.
async fn function_minutes(
    store: &Store,
    service: &str,
    from: u32,
    to: u32,
    b: u32,
    names: &[String],
) -> Result<Vec<FunctionBucket>, RegressionsError> {
    let rows = store
        .client()
        .query(
            "SELECT function, groupArray(toUInt32(minute)) AS minutes, \
             groupArray(self_samples) AS s, groupArray(total_samples) AS k FROM function_minutes \
             WHERE service = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
             AND function IN (SELECT arrayJoin(?)) GROUP BY function",
        )
        .bind_scope(service, from, to)
        .bind(names)
        .fetch_all::<FunctionMinutes>()
        .await
        .map_err(ch("reading the functions' samples per minute"))?;
    Ok(rows
        .into_iter()
        .flat_map(|r| {
            let function = r.function;
            r.minutes
                .into_iter()
                .zip(r.s.into_iter().zip(r.k))
                .map(move |(m, (s, k))| FunctionBucket {
                    function: function.clone(),
                    t: m / b * b,
                    s,
                    k,
                })
        })
        .collect())
}

/// Whether most of a service's samples are cut stacks in at least 90% of its buckets with
/// samples (`samples[i]` all samples of bucket `i`, `cut[i]` those of cut stacks): a service the
/// profiler cannot unwind, rather than one whose unwinding changed during the window.
fn stably_cut(samples: &[u64], cut: &[u32]) -> bool {
    let (mut buckets, mut mostly_cut) = (0usize, 0usize);
    for (&n, &c) in samples.iter().zip(cut) {
        if n > 0 {
            buckets += 1;
            if u64::from(c).saturating_mul(2) > n {
                mostly_cut += 1;
            }
        }
    }
    buckets > 0 && mostly_cut * 10 >= buckets * 9
}

/// Takes the samples of cut stacks ([`CUT_STACK`]) out of every selected function's self and
/// total counts, per bucket, as [`read_series`] took them out of the service's.
#[allow(clippy::too_many_arguments)] // the pieces of read_series' state it adjusts
async fn remove_cut_stacks(
    store: &Store,
    service: &str,
    from: u32,
    to: u32,
    b: u32,
    names: &[String],
    position: &HashMap<&str, usize>,
    index: &impl Fn(u32) -> Option<usize>,
    functions: &mut [FunctionSeries],
) -> Result<(), RegressionsError> {
    let rows = store
        .client()
        .query(&format!(
            "SELECT function, toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, \
             toUInt64(sum(count * (function = functions[-1]))) AS s, toUInt64(sum(count)) AS k \
             FROM {} ARRAY JOIN arrayDistinct(functions) AS function \
             WHERE function IN (SELECT arrayJoin(?)) GROUP BY function, t",
            named_samples_of("time", SAMPLE_WHERE, CUT_STACK)
        ))
        .bind(b)
        .bind(b)
        .bind_scope(service, from, to)
        .bind_scope(service, from, to)
        .bind(names)
        .fetch_all::<FunctionBucket>()
        .await
        .map_err(ch("reading the functions' cut stacks per bucket"))?;
    for r in rows {
        let (Some(&f), Some(i)) = (position.get(r.function.as_str()), index(r.t)) else {
            continue;
        };
        let series = &mut functions[f];
        series.k_total[i] =
            series.k_total[i].saturating_sub(u32::try_from(r.k).unwrap_or(u32::MAX));
        series.k_self[i] = series.k_self[i]
            .saturating_sub(u32::try_from(r.s).unwrap_or(u32::MAX))
            .min(series.k_total[i]);
    }
    Ok(())
}

/// Whether `function` is one of the profiler's placeholder frames rather than code: `[unknown]`
/// (a frame it could not place in any module), `[truncated: …]` (the root of a cut stack) and
/// `[stack lost: …]`. Their shares measure unwinding, not code, and name nothing to fix; and as
/// "callers" they would make every function whose stack was cut a sibling of every other, which
/// lets the cost-shift filter explain a real regression away as cost moving between them.
fn is_placeholder_frame(function: &str) -> bool {
    ["[unknown]", "[truncated:", "[stack lost:"]
        .iter()
        .any(|p| function.starts_with(p))
}

/// Direct callers, from adjacent pairs of the stacks (root first, so `functions[i]` calls
/// `functions[i + 1]`), among the selected functions; pairs carrying less than
/// [`MIN_CALLER_SHARE`] of the callee's samples are left out.
async fn add_callers(
    store: &Store,
    service: &str,
    from: u32,
    to: u32,
    names: &[String],
    position: &HashMap<&str, usize>,
    functions: &mut [FunctionSeries],
) -> Result<(), RegressionsError> {
    let sql = format!(
        "SELECT caller, callee, toUInt64(sum(count)) AS n FROM ( \
           SELECT tupleElement(pair, 1) AS caller, tupleElement(pair, 2) AS callee, count \
           FROM {} ARRAY JOIN arrayMap((a, b) -> (a, b), \
             arraySlice(functions, 1, length(functions) - 1), arraySlice(functions, 2)) AS pair) \
         WHERE caller != callee AND caller IN (SELECT arrayJoin(?)) AND callee IN (SELECT arrayJoin(?)) \
         GROUP BY caller, callee ORDER BY callee, caller",
        crate::store::named_samples("", SAMPLE_WHERE)
    );
    let pairs = store
        .client()
        .query(&sql)
        .bind_scope(service, from, to)
        .bind_scope(service, from, to)
        .bind(names)
        .bind(names)
        .fetch_all::<Pair>()
        .await
        .map_err(ch("reading callers"))?;
    for p in pairs {
        if let Some(&i) = position.get(p.callee.as_str()) {
            let total: u64 = functions[i].k_total.iter().map(|&k| u64::from(k)).sum();
            if p.n as f64 >= MIN_CALLER_SHARE * total as f64 {
                functions[i].callers.push(p.caller);
            }
        }
    }
    Ok(())
}

/// Source files of the selected functions, from the symbolizer's `frames`.
async fn add_files(
    store: &Store,
    names: &[String],
    position: &HashMap<&str, usize>,
    functions: &mut [FunctionSeries],
) -> Result<(), RegressionsError> {
    let files = store
        .client()
        .query(
            "SELECT function, any(file) AS source_file FROM frames \
             WHERE file != '' AND function IN (SELECT arrayJoin(?)) GROUP BY function",
        )
        .bind(names)
        .fetch_all::<FunctionFile>()
        .await
        .map_err(ch("reading source files"))?;
    for f in files {
        if let Some(&i) = position.get(f.function.as_str()) {
            functions[i].file = Some(f.file);
        }
    }
    Ok(())
}

/// The mean sampling frequency of the batches of the hosts that sampled the service.
async fn frequency(
    store: &Store,
    service: &str,
    from: u32,
    to: u32,
) -> Result<f64, RegressionsError> {
    let hz = store
        .client()
        .query(
            "SELECT toFloat64(avg(frequency_hz)) FROM batches \
             WHERE time >= toDateTime(?) AND time < toDateTime(?) AND frequency_hz > 0 \
             AND host_id IN (SELECT DISTINCT host_id FROM samples \
               WHERE service = ? AND time >= toDateTime(?) AND time < toDateTime(?))",
        )
        .bind(from)
        .bind(to)
        .bind_scope(service, from, to)
        .fetch_one::<f64>()
        .await
        .map_err(ch("reading the sampling frequency"))?;
    Ok(if hz.is_finite() && hz > 0.0 {
        hz
    } else {
        DEFAULT_FREQUENCY_HZ
    })
}

/// Joules attributed to the service per bucket; empty where energy was never measured (never
/// zeros for "unknown").
async fn energy(
    store: &Store,
    service: &str,
    from: u32,
    to: u32,
    b: u32,
    len: usize,
    index: impl Fn(u32) -> Option<usize>,
) -> Result<Vec<Option<f64>>, RegressionsError> {
    let rows = store
        .client()
        .query(
            "SELECT toUInt32(intDiv(toUInt32(time), ?) * ?) AS t, sum(joules) AS j \
             FROM process_energy WHERE service = ? AND time >= toDateTime(?) \
             AND time < toDateTime(?) GROUP BY t",
        )
        .bind(b)
        .bind(b)
        .bind_scope(service, from, to)
        .fetch_all::<BucketJoules>()
        .await
        .map_err(ch("reading energy"))?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![None; len];
    for r in rows {
        if let Some(i) = index(r.t) {
            out[i] = Some(r.j);
        }
    }
    Ok(out)
}

/// The version switches of `service` in `window`: its versions ordered by their first sample,
/// each one a boundary from the one before.
pub async fn version_boundaries(
    store: &Store,
    service: &str,
    window: Window,
) -> Result<Vec<VersionBoundary>, RegressionsError> {
    let versions = store
        .client()
        .query(
            "SELECT version, toUInt32(min(time)) AS first FROM samples \
             WHERE service = ? AND time >= toDateTime(?) AND time < toDateTime(?) \
             GROUP BY version ORDER BY first, version",
        )
        .bind_scope(service, window.from, window.to)
        .fetch_all::<VersionFirst>()
        .await
        .map_err(ch("reading the service's versions"))?;
    Ok(versions
        .windows(2)
        .map(|w| VersionBoundary {
            service: service.to_owned(),
            from_version: w[0].version.clone(),
            to_version: w[1].version.clone(),
            time_unix_s: i64::from(w[1].first),
        })
        .collect())
}

/// The services with samples in `window`, by name.
pub async fn services(store: &Store, window: Window) -> Result<Vec<String>, RegressionsError> {
    let names = store
        .client()
        .query(
            "SELECT DISTINCT service FROM service_minutes \
             WHERE minute >= toDateTime(?) AND minute < toDateTime(?) ORDER BY service",
        )
        .bind(aligned_start(window, 60))
        .bind(window.to)
        .fetch_all::<String>()
        .await
        .map_err(ch("listing services"))?;
    Ok(names
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{is_placeholder_frame, stably_cut};

    /// A service the profiler never unwinds keeps its cut stacks; one whose stacks were cut
    /// only until its tables loaded (the first buckets) does not.
    #[test]
    fn cut_stacks_stay_only_when_cut_throughout() {
        assert!(stably_cut(&[100, 100, 0, 100], &[90, 80, 0, 100]));
        assert!(!stably_cut(&[100, 100, 100, 100], &[100, 100, 10, 0]));
        assert!(!stably_cut(&[100, 100], &[10, 0]));
        assert!(!stably_cut(&[0, 0], &[0, 0]));
    }

    #[test]
    fn placeholders_are_told_from_code() {
        for name in [
            "[unknown]",
            "[unknown]+0x10",
            "[truncated: unreadable stack]",
            "[stack lost: stack map full]",
        ] {
            assert!(is_placeholder_frame(name), "{name}");
        }
        for name in ["checkout::mix", "[vdso]+0x9c0", "<[T]>::sort"] {
            assert!(!is_placeholder_frame(name), "{name}");
        }
    }
}
