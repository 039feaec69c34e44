//! Which version of a service ran when, and where a function's code lives: the readers the
//! agent's tools need beside the shares (so the agent keeps no SQL of its own).

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{QueryError, Window, ch};
use crate::store::Store;

#[derive(Row, Deserialize)]
struct VersionSamples {
    time: u32,
    version: String,
    samples: u64,
}

/// The version with the most samples among `rows` (`time` = `side`), ties to the larger name so
/// the answer does not depend on the order ClickHouse returns rows in; empty versions never win.
fn most_sampled<'a>(rows: impl Iterator<Item = &'a VersionSamples>) -> Option<String> {
    rows.filter(|r| !r.version.is_empty())
        .max_by(|a, b| (a.samples, &a.version).cmp(&(b.samples, &b.version)))
        .map(|r| r.version.clone())
}

/// Per bucket of `bucket_secs` (aligned to the epoch, like [`super::function_history`]'s), the
/// version of `service` with the most samples in it, from the minute rollup; buckets without a
/// named version are left out.
pub async fn versions_per_bucket(
    store: &Store,
    service: &str,
    window: Window,
    bucket_secs: u32,
) -> Result<BTreeMap<u32, String>, QueryError> {
    if bucket_secs == 0 {
        return Err(QueryError::BadArgument(
            "a bucket of 0 s: use at least 1 s".into(),
        ));
    }
    let rows = store
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
        .bind(window.from)
        .bind(window.to)
        .fetch_all::<VersionSamples>()
        .await
        .map_err(ch("reading versions from service_minutes"))?;
    let mut buckets: BTreeMap<u32, Vec<&VersionSamples>> = BTreeMap::new();
    for r in &rows {
        buckets.entry(r.time).or_default().push(r);
    }
    Ok(buckets
        .into_iter()
        .filter_map(|(t, rs)| most_sampled(rs.into_iter()).map(|v| (t, v)))
        .collect())
}

/// The versions of a service that ran most just before and just after a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsAround {
    /// Most sampled version in the span before the moment, if any was named.
    pub before: Option<String>,
    /// Most sampled version in the span from the moment on.
    pub after: Option<String>,
}

/// The versions of `service` that ran most in the `span_secs` before `at` and the `span_secs`
/// from `at` on (Unix seconds), to the second: read from `samples`, not the minute rollup,
/// because a deploy and a regression's onset often fall in the same minute.
pub async fn versions_around(
    store: &Store,
    service: &str,
    at: u32,
    span_secs: u32,
) -> Result<VersionsAround, QueryError> {
    let rows = store
        .client()
        .query(
            // The table is ordered by (service, time), so this reads the two spans only. (Aliased
            // `after`, not `time`: an alias would shadow the column in WHERE; rows are read by
            // position, so the struct's field name does not matter.)
            "SELECT toUInt32(time >= toDateTime(?)) AS after, version, \
             toUInt64(sum(count)) AS samples FROM samples \
             WHERE service = ? AND time >= toDateTime(?) AND time < toDateTime(?) \
             GROUP BY after, version",
        )
        .bind(at)
        .bind(service)
        .bind(at.saturating_sub(span_secs))
        .bind(at.saturating_add(span_secs))
        .fetch_all::<VersionSamples>()
        .await
        .map_err(ch("reading versions from samples"))?;
    Ok(VersionsAround {
        before: most_sampled(rows.iter().filter(|r| r.time == 0)),
        after: most_sampled(rows.iter().filter(|r| r.time == 1)),
    })
}

/// A `file:line` of a function, from the symbolizer's `frames`, with how many distinct frames
/// (addresses) the symbolizer placed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Row)]
pub struct FrameLocation {
    /// Source file, as the debug info names it.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Frames (distinct addresses) at this line.
    pub frames: u64,
}

/// Where `function`'s code is, most frames first (at most `limit`): every `file:line` the
/// symbolizer read from DWARF for a frame of it, over every service. Inlined frames carry the
/// inlined function's own lines, so they locate it as well. Empty without debug info.
pub async fn frame_locations(
    store: &Store,
    function: &str,
    limit: u64,
) -> Result<Vec<FrameLocation>, QueryError> {
    store
        .client()
        .query(
            "SELECT file, line, count() AS frames FROM frames \
             WHERE function = ? AND file != '' AND line > 0 \
             GROUP BY file, line ORDER BY frames DESC, file, line LIMIT ?",
        )
        .bind(function)
        .bind(limit)
        .fetch_all::<FrameLocation>()
        .await
        .map_err(ch("reading frame locations"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most sampled named version wins; ties go to the larger name; empty names never win.
    #[test]
    fn most_sampled_is_deterministic() {
        let row = |version: &str, samples| VersionSamples {
            time: 0,
            version: version.into(),
            samples,
        };
        let rows = [row("1.0", 5), row("", 50), row("1.1", 5), row("0.9", 4)];
        assert_eq!(most_sampled(rows.iter()).as_deref(), Some("1.1"));
        assert_eq!(most_sampled([row("", 3)].iter()), None);
    }
}
