//! Retention: drop whole partitions of the large tables once every row in them is older than
//! the retention period (ClickHouse 18.16 has no TTL; dropping a partition is immediate and
//! rewrites nothing). On a database laid out over a cluster, each node's local tables
//! ([`super::cluster::DataNodes`]).
//!
//! `stacks` and `frames` hold each stack and frame once, not per sample, so they have no time
//! partitions; [`Store::trim_unreferenced`] deletes the stacks no kept sample refers to (and the
//! frames only they used) once the samples' old days are gone.
//!
//! ```no_run
//! # async fn demo(store: &fleetprof_collector::store::Store) -> Result<(), fleetprof_collector::store::StoreError> {
//! let keep = std::time::Duration::from_secs(30 * 86_400);
//! for p in store.drop_older_than(keep, false).await? {
//!     println!("dropped {} partition {} ({} rows)", p.table, p.partition, p.rows);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;

use super::cluster::DataNode;
use super::{Store, StoreError};

/// How a table is partitioned, and so how its partition ids compare with the cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// `toYYYYMMDD(...)`: one partition per day.
    Day,
    /// `toYYYYMM(...)`: one partition per month.
    Month,
}

/// The tables retention trims, with their partitioning: every table that grows with the fleet's
/// samples. Not here: `stacks` and `frames` (each stack or frame once, not per sample; no time
/// partitions: [`Store::trim_unreferenced`] trims them), `symbolized_frames` (each resolved
/// address once, kept so re-symbolization is never repeated), and the small `changes`, `deploys` and
/// `regressions`, which root-cause ranking and the agent read over long spans.
pub const RETAINED_TABLES: &[(&str, Period)] = &[
    ("samples", Period::Day),
    ("function_minutes", Period::Day),
    ("service_minutes", Period::Day),
    ("processes", Period::Day),
    ("losses", Period::Day),
    ("energy", Period::Day),
    ("process_energy", Period::Day),
    ("host_energy", Period::Day),
    // The batches' identities (ingest's dedup key) are kept by month: a host retrying a batch
    // older than the retention period can at worst store it again, to be dropped next pass.
    ("batches", Period::Month),
    // One row per batch the collector started to write: it grows with the fleet like `batches`
    // and is partitioned like it. Dropping an old month loses nothing: a batch that old finished
    // (or was abandoned) long ago, and a retry would write its attempt row again.
    ("batch_attempts", Period::Month),
];

/// A partition [`Store::drop_older_than`] dropped (or would drop, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct DroppedPartition {
    /// The table.
    pub table: String,
    /// The partition id: `YYYYMMDD` for a day, `YYYYMM` for a month.
    pub partition: String,
    /// Rows it held.
    pub rows: u64,
    /// Bytes it took on disk (compressed).
    pub bytes: u64,
}

/// Rows [`Store::trim_unreferenced`] deleted (or would delete, in a dry run) from a table without
/// time partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimmedRows {
    /// The table: `stacks` or `frames`.
    pub table: &'static str,
    /// Rows deleted.
    pub rows: u64,
}

/// How long [`Store::trim_unreferenced`] waits for ClickHouse to apply one of its deletions.
const MUTATION_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Row, Deserialize)]
struct Cutoff {
    day: u32,
    month: u32,
}

impl Store {
    /// Drops the partitions of [`RETAINED_TABLES`] whose every row is older than `keep` (a day
    /// partition before the day `now - keep` falls in, a month partition before its month), in
    /// the server's time zone, which is the one the partition keys were computed in. With
    /// `dry_run` nothing is dropped. Returns what was (or would be) dropped, oldest first per
    /// table.
    pub async fn drop_older_than(
        &self,
        keep: Duration,
        dry_run: bool,
    ) -> Result<Vec<DroppedPartition>, StoreError> {
        let keep_secs = u32::try_from(keep.as_secs()).unwrap_or(u32::MAX);
        let cutoff = self
            .client
            .query(
                "SELECT toUInt32(toYYYYMMDD(now() - ?)) AS day, toUInt32(toYYYYMM(now() - ?)) AS month",
            )
            .bind(keep_secs)
            .bind(keep_secs)
            .fetch_one::<Cutoff>()
            .await
            .map_err(StoreError::ch("computing the retention cutoff"))?;
        // On a cluster every node holds its own part of each table, in its local table, and
        // 18.16 refuses partition operations on the Distributed one.
        let nodes = self.data_nodes().await?;
        let mut dropped = Vec::new();
        for &(table, period) in RETAINED_TABLES {
            let limit = match period {
                Period::Day => cutoff.day,
                Period::Month => cutoff.month,
            };
            let local = nodes.local_table(table)?;
            // Partition id -> the nodes holding it, and its size over all of them.
            let mut old: BTreeMap<String, (Vec<&DataNode>, DroppedPartition)> = BTreeMap::new();
            for node in nodes.nodes() {
                let parts = node
                    .store()
                    .client
                    .query(
                        "SELECT table, partition, toUInt64(sum(rows)) AS rows, \
                         toUInt64(sum(bytes_on_disk)) AS bytes FROM system.parts \
                         WHERE database = ? AND table = ? AND active \
                         AND toUInt32OrZero(partition) > 0 AND toUInt32OrZero(partition) < ? \
                         GROUP BY table, partition ORDER BY partition",
                    )
                    .bind(self.database.as_str())
                    .bind(local.as_str())
                    .bind(limit)
                    .fetch_all::<DroppedPartition>()
                    .await
                    .map_err(StoreError::ch(format!(
                        "listing the partitions of {table} on {}",
                        node.label()
                    )))?;
                for p in parts {
                    let (holders, total) = old.entry(p.partition.clone()).or_insert_with(|| {
                        (
                            Vec::new(),
                            DroppedPartition {
                                table: table.to_owned(),
                                partition: p.partition.clone(),
                                rows: 0,
                                bytes: 0,
                            },
                        )
                    });
                    holders.push(node);
                    total.rows += p.rows;
                    total.bytes += p.bytes;
                }
            }
            for (holders, p) in old.into_values() {
                if !dry_run {
                    for node in holders {
                        // The id comes from system.parts and is all digits (checked above), so
                        // it can stand in the statement as the partition's literal value.
                        node.store()
                            .client
                            .query(&format!(
                                "ALTER TABLE {local} DROP PARTITION {}",
                                p.partition
                            ))
                            .execute()
                            .await
                            .map_err(StoreError::ch(format!(
                                "dropping partition {} of {table} on {}",
                                p.partition,
                                node.label()
                            )))?;
                    }
                    tracing::info!(
                        table,
                        partition = p.partition,
                        rows = p.rows,
                        "retention dropped a partition"
                    );
                }
                dropped.push(p);
            }
        }
        Ok(dropped)
    }

    /// Deletes the stacks that no sample row refers to any more and that were first stored
    /// longer than `keep` ago, and the frames that only those stacks used: what is left of the
    /// days [`Store::drop_older_than`] dropped. Run it after that. With `dry_run` nothing is
    /// deleted. Returns the rows deleted per table (none listed when none were).
    ///
    /// A stack stored within `keep` is never deleted, even before its samples land (the writer
    /// inserts a group's tables concurrently); a stack seen again is written again by the
    /// collector (its known-ids cache forgets within the hour), so deleting an old row is safe.
    /// ClickHouse 18.16 applies `ALTER TABLE … DELETE` in the background: this waits until it
    /// has, so what it returns is done.
    pub async fn trim_unreferenced(
        &self,
        keep: Duration,
        dry_run: bool,
    ) -> Result<Vec<TrimmedRows>, StoreError> {
        let keep_secs = u32::try_from(keep.as_secs()).unwrap_or(u32::MAX);
        let cutoff = self
            .client
            .query("SELECT toUInt32(greatest(toInt64(toUInt32(now())) - ?, 0))")
            .bind(keep_secs)
            .fetch_one::<u32>()
            .await
            .map_err(StoreError::ch("computing the retention cutoff"))?;
        // The cutoff is a number this process computed, so it can stand in the text; every
        // statement below must see the same one.
        let doomed = format!(
            "first_seen < toDateTime({cutoff}) AND stack_id NOT IN (SELECT stack_id FROM samples)"
        );
        let frames_where = format!(
            "frame_id IN (SELECT arrayJoin(frame_ids) FROM stacks WHERE {doomed}) \
             AND frame_id NOT IN (SELECT arrayJoin(frame_ids) FROM stacks WHERE NOT ({doomed}))"
        );
        // Frames first, while the doomed stacks still say which frames they used.
        let mut trimmed = Vec::new();
        for (table, condition) in [("frames", frames_where), ("stacks", doomed.clone())] {
            let rows = self
                .client
                .query(&format!("SELECT count() FROM {table} WHERE {condition}"))
                .fetch_one::<u64>()
                .await
                .map_err(StoreError::ch(format!("counting unreferenced {table}")))?;
            if rows == 0 {
                continue;
            }
            if !dry_run {
                // On a cluster the deletion runs on every node's local table (18.16 refuses
                // mutations of a Distributed table); the condition reads the whole cluster.
                let nodes = self.data_nodes().await?;
                nodes
                    .alter(table, &format!("DELETE WHERE {condition}"), |q| q)
                    .await?;
                if !nodes.wait_for_mutations(MUTATION_TIMEOUT).await? {
                    return Err(StoreError::Timeout(format!(
                        "deleting unreferenced rows from {table}: ClickHouse has not applied it \
                         after {} s (see system.mutations)",
                        MUTATION_TIMEOUT.as_secs()
                    )));
                }
                tracing::info!(table, rows, "retention deleted unreferenced rows");
            }
            trimmed.push(TrimmedRows { table, rows });
        }
        Ok(trimmed)
    }
}
