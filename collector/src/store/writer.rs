//! Batched writes: many batches in one INSERT per table, the `batches` row last as the commit
//! marker, and the dedup look-ups the ingest writer needs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::Row;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::{Batch, BatchKey, SampleInfo, Store, StoreError};

/// Seconds since the epoch, now.
pub(crate) fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// What [`Store::write_batches`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Batches written.
    pub batches: usize,
    /// Rows written into `samples`.
    pub sample_rows: u64,
    /// Sum of the written samples' counts.
    pub samples: u64,
    /// Rows written into `function_minutes` (the collector's per-group rollup).
    pub function_minute_rows: u64,
}

/// A `samples` row as the writer sends it (RowBinary, schema v4 and later): public so a
/// benchmark's direct-insert baseline writes rows of exactly this width.
#[derive(Debug, Row, Serialize)]
pub struct SampleRow<'a> {
    /// Start of the batch's window, seconds.
    pub time: u32,
    /// Start of the batch's window, nanoseconds.
    pub time_ns: u64,
    /// Host name.
    pub host: &'a str,
    /// Host id.
    pub host_id: &'a str,
    /// Boot id.
    pub boot_id: &'a str,
    /// Batch sequence number.
    pub sequence: u64,
    /// Service of the process.
    pub service: &'a str,
    /// Version of the service.
    pub version: &'a str,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process command.
    pub comm: &'a str,
    /// Thread name.
    pub thread: &'a str,
    /// Container id.
    pub container_id: &'a str,
    /// The stack's id (joins `stacks`).
    pub stack_id: u64,
    /// Samples.
    pub count: u64,
}

impl<'a> SampleRow<'a> {
    /// The row of sample `s` of batch `b`.
    pub fn new(b: &'a Batch, s: &'a SampleInfo) -> Self {
        let p = &b.processes[s.process as usize];
        let st = &b.stacks[s.stack as usize];
        SampleRow {
            time: b.time(),
            time_ns: b.start_time_ns,
            host: &b.hostname,
            host_id: &b.key.host_id,
            boot_id: &b.key.boot_id,
            sequence: b.key.sequence,
            service: &p.service,
            version: &p.version,
            pid: p.pid,
            tid: s.tid,
            comm: &p.comm,
            thread: &s.thread,
            container_id: &p.container_id,
            stack_id: st.stack_id,
            count: s.count,
        }
    }
}

#[derive(Row, Serialize)]
struct StackRow<'a> {
    stack_id: u64,
    frame_ids: &'a [u64],
    functions: Names<'a>,
    first_seen: u32,
}

/// A stack's shared function names as an `Array(String)` column.
struct Names<'a>(&'a [Arc<str>]);

impl Serialize for Names<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|name| &**name))
    }
}

#[derive(Row, Serialize)]
struct FrameRow<'a> {
    frame_id: u64,
    function: &'a str,
    module: &'a str,
    build_id: &'a str,
    file: &'a str,
    line: u32,
    inlined: u8,
    kernel: u8,
    module_offset: u64,
}

#[derive(Row, Serialize)]
struct ProcessRow<'a> {
    time: u32,
    host: &'a str,
    host_id: &'a str,
    boot_id: &'a str,
    pid: u32,
    comm: &'a str,
    exe: &'a str,
    service: &'a str,
    version: &'a str,
    container_id: &'a str,
    cgroup: &'a str,
    build_id: &'a str,
}

#[derive(Row, Serialize)]
struct EnergyRow<'a> {
    time: u32,
    time_ns: u64,
    window_ns: u64,
    host: &'a str,
    host_id: &'a str,
    source: &'a str,
    domain: &'a str,
    joules: f64,
}

#[derive(Row, Serialize)]
struct ProcessEnergyRow<'a> {
    time: u32,
    time_ns: u64,
    window_ns: u64,
    host: &'a str,
    host_id: &'a str,
    pid: u32,
    comm: &'a str,
    service: &'a str,
    version: &'a str,
    joules: f64,
    cpu_seconds: f64,
    dram_joules: f64,
    method: &'a str,
}

/// A `batch_attempts` row: the batch's writing has started.
#[derive(Row, Serialize)]
struct AttemptRow<'a> {
    host_id: &'a str,
    boot_id: &'a str,
    sequence: u64,
    time: u32,
    attempted: u32,
}

#[derive(Row, Serialize)]
struct BatchRow<'a> {
    host_id: &'a str,
    boot_id: &'a str,
    sequence: u64,
    host: &'a str,
    time: u32,
    start_time_ns: u64,
    end_time_ns: u64,
    received: u32,
    frequency_hz: u32,
    samples: u64,
    sample_rows: u32,
    processes: u32,
    stacks: u32,
    frames: u32,
    kernel_release: &'a str,
    agent_version: &'a str,
    energy_available: u8,
    energy_unavailable_reason: &'a str,
}

#[derive(Row, Serialize)]
struct LossRow<'a> {
    time: u32,
    host: &'a str,
    host_id: &'a str,
    boot_id: &'a str,
    sequence: u64,
    events: u64,
    idle: u64,
    filtered: u64,
    recorded: u64,
    user_stack_unavailable: u64,
    kernel_stack_unavailable: u64,
    stack_collisions: u64,
    stack_other_errors: u64,
    counts_map_full: u64,
    unsymbolized_frames: u64,
    spool_dropped_batches: u64,
    spool_dropped_samples: u64,
    truncated_stacks: u64,
}

/// A `function_minutes` row: one (service, function, minute, version) of an INSERT group, or a
/// batch's rollup marker (see [`rollup_marker`]).
#[derive(Row, Serialize)]
struct FunctionMinuteRow<'a> {
    service: &'a str,
    function: &'a str,
    minute: u32,
    version: &'a str,
    self_samples: u64,
    total_samples: u64,
    rollup_batch: &'a str,
    rollup_batches: u64,
}

/// A `service_minutes` row: one (service, minute, version, host) of an INSERT group, or a
/// batch's rollup marker (see [`rollup_marker`]).
#[derive(Row, Serialize)]
struct ServiceMinuteRow<'a> {
    service: &'a str,
    minute: u32,
    version: &'a str,
    host: &'a str,
    samples: u64,
    rollup_batch: &'a str,
    rollup_batches: u64,
}

/// At most this many stack (and frame) ids are remembered as written; past it the memory starts
/// afresh, so a long-running collector stays bounded and re-writes a hot stack once in a while
/// (ReplacingMergeTree folds the copy).
pub const KNOWN_IDS_LIMIT: usize = 2_000_000;

/// Stack or frame ids known to be written. The ids are already hashes, so the set hashes them
/// with one multiplication (FxHash) rather than SipHash: it is consulted for every stack and
/// frame of every batch.
pub type KnownIds = rustc_hash::FxHashSet<u64>;

/// The name of a batch's rollup marker (the `rollup_batch` column of `function_minutes` and
/// `service_minutes`): the batch key, length-prefixed so two different keys never give the
/// same name.
///
/// Why markers, and why in the rollup tables themselves: the rollups are INSERTs of their own,
/// separate from `samples`, so any of them can fail (or succeed with its answer lost) while the
/// others land. A retry must then know, per batch and per rollup table, whether that batch's
/// rows are in. A marker kept in another table would be a second INSERT with the same problem
/// one step later ("rows written, marker failed"). So each batch's marker row is part of the
/// same INSERT, and lands in the same partition (its minute's day), as the batch's rollup rows:
/// ClickHouse commits one INSERT block's rows of one partition as one part, so the marker is
/// present exactly when the batch's rows are (the rollup INSERTs are sent as one block,
/// `max_insert_block_size` above their row count, for that reason).
///
/// A marker row repeats the key of one of the batch's own rollup rows (its first sample's
/// service, version, minute, host and a function of its stack) with zero samples, so readers,
/// which sum and group, see nothing new: no extra service, version, host, minute or function.
/// `rollup_batch` (the marker name; `''` on rollup rows) is the last column of the sort key, so
/// merges keep each marker apart, and `rollup_batches = 1` keeps SummingMergeTree from dropping
/// a row whose sums are all zero (a marker summed to 2 would show a batch counted twice).
///
/// Rejected alternative: recomputing the rollups from `samples` per closed minute into a
/// ReplacingMergeTree would make every reader use `FINAL`/`argMax` and re-read `samples`.
pub fn rollup_marker(key: &BatchKey) -> String {
    format!(
        "{}:{}{}:{}:{}",
        key.host_id.len(),
        key.host_id,
        key.boot_id.len(),
        key.boot_id,
        key.sequence
    )
}

/// Where batch `b`'s marker rows go: the service and version of its first sample's process,
/// and a function of that sample's stack, preferring a symbolized name (symbol write-back
/// replaces the rows of `module+0x…` names).
fn marker_key(b: &Batch) -> Option<(&str, &str, &str)> {
    let s = b.samples.first()?;
    let p = &b.processes[s.process as usize];
    let functions = &b.stacks[s.stack as usize].functions;
    let function = functions
        .iter()
        .find(|f| !f.contains("+0x"))
        .or(functions.last())?;
    Some((&p.service, &p.version, &**function))
}

/// The `function_minutes` rows for `batches` (one INSERT group's batches that still need them),
/// aggregated here rather than by a materialized view expanding every sample row into one row
/// per function of its stack; plus one marker row per batch with samples ([`rollup_marker`]).
/// A function counts once per stack for `total_samples` even when recursive; `self_samples` is
/// the leaf's.
///
/// This runs on the writer's path for every group, so it works on small integers: a series
/// (service, version, minute) is looked up once per process of a batch, not per sample; a name
/// is found by its frame's id, so a name is hashed once per group however many stacks pass
/// through it; sample counts are summed per (series, stack) before each stack is expanded, and
/// a series' functions are summed in an array indexed by name rather than a hash map.
fn function_rollup<'a>(
    batches: &[&'a Batch],
    markers: &'a HashMap<BatchKey, String>,
) -> Vec<FunctionMinuteRow<'a>> {
    let mut series: Vec<(&'a str, &'a str, u32)> = Vec::new();
    let mut series_ids: FxHashMap<(&'a str, &'a str, u32), u32> = FxHashMap::default();
    let mut names: Vec<&'a str> = Vec::new();
    let mut name_ids: FxHashMap<&'a str, u32> = FxHashMap::default();
    // Per frame id, its name's id. Within a group a frame id has one name, as a stack id has
    // one list of names: ids hash the frame's content, and the writer names a group's batches
    // under one read of the resolved names (see `super::resolved`).
    let mut frame_names: FxHashMap<u64, u32> = FxHashMap::default();
    // Per distinct stack of the group: its distinct name ids and its leaf's.
    let mut stack_ids: FxHashMap<u64, u32> = FxHashMap::default();
    let mut stack_names: Vec<(Vec<u32>, Option<u32>)> = Vec::new();
    let mut per_stack: FxHashMap<(u32, u32), u64> = FxHashMap::default();
    let index = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
    for b in batches {
        let minute = b.time() / 60 * 60;
        let process_series: Vec<u32> = b
            .processes
            .iter()
            .map(|p| {
                let key = (p.service.as_str(), p.version.as_str(), minute);
                *series_ids.entry(key).or_insert_with(|| {
                    series.push(key);
                    index(series.len() - 1)
                })
            })
            .collect();
        for s in &b.samples {
            if s.count == 0 {
                continue;
            }
            let st = &b.stacks[s.stack as usize];
            let stack = *stack_ids.entry(st.stack_id).or_insert_with(|| {
                let mut ids: Vec<u32> = st
                    .frame_ids
                    .iter()
                    .zip(&st.functions)
                    .map(|(frame, name)| {
                        *frame_names.entry(*frame).or_insert_with(|| {
                            *name_ids.entry(name).or_insert_with(|| {
                                names.push(name);
                                index(names.len() - 1)
                            })
                        })
                    })
                    .collect();
                let leaf = ids.last().copied();
                ids.sort_unstable();
                ids.dedup();
                stack_names.push((ids, leaf));
                index(stack_names.len() - 1)
            });
            *per_stack
                .entry((process_series[s.process as usize], stack))
                .or_default() += s.count;
        }
    }
    let mut per_series: Vec<((u32, u32), u64)> = per_stack.into_iter().collect();
    per_series.sort_unstable_by_key(|&((series_id, _), _)| series_id);
    // (self, total) per name id for the series being summed; `touched` lists the names it set.
    let mut sums = vec![(0u64, 0u64); names.len()];
    let mut touched: Vec<u32> = Vec::new();
    let mut rows: Vec<FunctionMinuteRow<'a>> = Vec::new();
    for one_series in per_series.chunk_by(|a, b| a.0.0 == b.0.0) {
        let (service, version, minute) = series[one_series[0].0.0 as usize];
        for &((_, stack), count) in one_series {
            let (ids, leaf) = &stack_names[stack as usize];
            for &f in ids {
                let sum = &mut sums[f as usize];
                if sum.1 == 0 {
                    touched.push(f);
                }
                sum.1 += count;
            }
            if let Some(leaf) = leaf {
                sums[*leaf as usize].0 += count;
            }
        }
        rows.extend(touched.drain(..).map(|f| {
            let (self_samples, total_samples) = std::mem::take(&mut sums[f as usize]);
            FunctionMinuteRow {
                service,
                function: names[f as usize],
                minute,
                version,
                self_samples,
                total_samples,
                rollup_batch: "",
                rollup_batches: 0,
            }
        }));
    }
    rows.extend(batches.iter().filter_map(|b| {
        let (service, version, function) = marker_key(b)?;
        Some(FunctionMinuteRow {
            service,
            function,
            minute: b.time() / 60 * 60,
            version,
            self_samples: 0,
            total_samples: 0,
            rollup_batch: markers[&b.key].as_str(),
            rollup_batches: 1,
        })
    }));
    rows
}

/// The `service_minutes` rows (samples per service, minute, version and host) for `batches`,
/// plus one marker row per batch with samples ([`rollup_marker`]). Samples are summed per
/// process first (a batch has far fewer processes than sample rows).
fn service_rollup<'a>(
    batches: &[&'a Batch],
    markers: &'a HashMap<BatchKey, String>,
) -> Vec<ServiceMinuteRow<'a>> {
    let mut per_host: FxHashMap<(&'a str, u32, &'a str, &'a str), u64> = FxHashMap::default();
    let mut per_process: Vec<u64> = Vec::new();
    for b in batches {
        let minute = b.time() / 60 * 60;
        per_process.clear();
        per_process.resize(b.processes.len(), 0);
        for s in &b.samples {
            per_process[s.process as usize] += s.count;
        }
        for (p, &n) in b.processes.iter().zip(&per_process) {
            if n > 0 {
                *per_host
                    .entry((
                        p.service.as_str(),
                        minute,
                        p.version.as_str(),
                        b.hostname.as_str(),
                    ))
                    .or_default() += n;
            }
        }
    }
    let mut rows: Vec<ServiceMinuteRow<'a>> = per_host
        .into_iter()
        .map(|((service, minute, version, host), n)| ServiceMinuteRow {
            service,
            minute,
            version,
            host,
            samples: n,
            rollup_batch: "",
            rollup_batches: 0,
        })
        .collect();
    rows.extend(batches.iter().filter_map(|b| {
        let (service, version, _) = marker_key(b)?;
        Some(ServiceMinuteRow {
            service,
            minute: b.time() / 60 * 60,
            version,
            host: &b.hostname,
            samples: 0,
            rollup_batch: markers[&b.key].as_str(),
            rollup_batches: 1,
        })
    }));
    rows
}

/// Which tables already hold rows of a batch (an earlier attempt failed part-way): those tables
/// are skipped when the batch is written again, so every table gets the batch's rows once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresentParts {
    /// `samples` rows.
    pub samples: bool,
    /// `processes` rows.
    pub processes: bool,
    /// `energy` rows.
    pub energy: bool,
    /// `process_energy` rows.
    pub process_energy: bool,
    /// The `losses` row.
    pub losses: bool,
    /// The `function_minutes` rows (the batch's rollup marker is there).
    pub function_minutes: bool,
    /// The `service_minutes` rows (the batch's rollup marker is there).
    pub service_minutes: bool,
}

#[derive(Row, Deserialize)]
struct PartRow {
    host_id: String,
    b: String,
    id: u64,
}

#[derive(Row, Deserialize)]
struct StateRow {
    host_id: String,
    boot_id: String,
    sequence: u64,
    stored: u8,
}

#[derive(Row, Deserialize)]
struct KeyRow {
    host_id: String,
    boot_id: String,
    sequence: u64,
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Runs one INSERT into `$table` of rows of type `$ty`, made by `$map` from each of `$items`
/// (a Vec; a fn item rather than a closure keeps the future `Send`).
/// With `block = N`, the server is told to make one block of up to N rows (one part per
/// partition) of the whole INSERT.
macro_rules! insert_rows {
    ($store:expr, $ty:ty, $table:literal, $items:expr, $map:expr) => {
        insert_rows!($store, $ty, $table, $items, $map, block = None::<String>)
    };
    ($store:expr, $ty:ty, $table:literal, $items:expr, $map:expr, block = $block:expr) => {
        async {
            let items = $items;
            if items.is_empty() {
                return Ok::<u64, StoreError>(0);
            }
            let what = concat!("insert into ", $table);
            let mut insert = $store
                .client
                .insert::<$ty>($table)
                .await
                .map_err(StoreError::ch(what))?
                .with_timeouts(Some($store.insert_timeout), Some($store.insert_timeout));
            if let Some(rows) = $block {
                insert = insert.with_setting("max_insert_block_size", rows);
            }
            let mut n = 0u64;
            for item in items {
                let row: $ty = $map(item);
                insert.write(&row).await.map_err(StoreError::ch(what))?;
                n += 1;
            }
            insert.end().await.map_err(StoreError::ch(what))?;
            Ok(n)
        }
    };
}

fn sample_row<'a>((b, s): (&'a Batch, &'a SampleInfo)) -> SampleRow<'a> {
    SampleRow::new(b, s)
}

fn same<T>(row: T) -> T {
    row
}

impl Store {
    /// Writes `batches` with one INSERT per table. `present` says, per batch, which tables
    /// already hold its rows from an earlier, partly failed attempt (see
    /// [`Store::present_parts`]); those are not written again.
    /// Stacks and frames in `known_stacks` / `known_frames` are not written again; the ids
    /// written are added to them once everything succeeded.
    ///
    /// The `batches` rows are written last, after everything else succeeded: a batch is stored
    /// exactly when its `batches` row exists.
    pub async fn write_batches(
        &self,
        batches: &[&Batch],
        present: &HashMap<BatchKey, PresentParts>,
        known_stacks: &mut KnownIds,
        known_frames: &mut KnownIds,
    ) -> Result<WriteOutcome, StoreError> {
        let received = unix_now();
        // First, before any of their rows: these batches' writing has started. A later attempt
        // finds them in `batch_attempts` and only then looks for part-written tables.
        let attempts = batches
            .iter()
            .filter(|b| !present.contains_key(&b.key))
            .map(|b| AttemptRow {
                host_id: &b.key.host_id,
                boot_id: &b.key.boot_id,
                sequence: b.key.sequence,
                time: b.time(),
                attempted: received,
            })
            .collect::<Vec<_>>();
        insert_rows!(self, AttemptRow<'_>, "batch_attempts", attempts, same).await?;
        if known_stacks.len() > KNOWN_IDS_LIMIT {
            known_stacks.clear();
        }
        if known_frames.len() > KNOWN_IDS_LIMIT {
            known_frames.clear();
        }
        let mut new_stacks = KnownIds::default();
        let mut new_frames = KnownIds::default();
        let stacks = batches
            .iter()
            .flat_map(|b| b.stacks.iter().map(move |s| (b, s)))
            .filter(|(_, s)| !known_stacks.contains(&s.stack_id) && new_stacks.insert(s.stack_id));
        let stack_rows: Vec<StackRow<'_>> = stacks
            .map(|(b, s)| StackRow {
                stack_id: s.stack_id,
                frame_ids: &s.frame_ids,
                functions: Names(&s.functions),
                first_seen: b.time(),
            })
            .collect();
        let frame_rows: Vec<FrameRow<'_>> = batches
            .iter()
            .flat_map(|b| b.frames.iter())
            .filter(|f| !known_frames.contains(&f.frame_id) && new_frames.insert(f.frame_id))
            .map(|f| FrameRow {
                frame_id: f.frame_id,
                function: &f.function,
                module: &f.module,
                build_id: &f.build_id,
                file: &f.file,
                line: f.line,
                inlined: u8::from(f.inlined),
                kernel: u8::from(f.kernel),
                module_offset: f.module_offset,
            })
            .collect();

        let has =
            |b: &Batch, part: fn(&PresentParts) -> bool| present.get(&b.key).is_some_and(part);
        let sample_batches: Vec<&Batch> = batches
            .iter()
            .copied()
            .filter(|b| !has(b, |p| p.samples))
            .collect();
        let mut samples: Vec<(&Batch, &SampleInfo)> = Vec::new();
        for b in &sample_batches {
            for s in &b.samples {
                samples.push((b, s));
            }
        }
        // Each rollup table is checked on its own (its markers): an earlier attempt may have
        // stored a batch's samples and failed on a rollup, or the other way round.
        let markers: HashMap<BatchKey, String> = batches
            .iter()
            .map(|b| (b.key.clone(), rollup_marker(&b.key)))
            .collect();
        let fm_batches: Vec<&Batch> = batches
            .iter()
            .copied()
            .filter(|b| !has(b, |p| p.function_minutes))
            .collect();
        let sm_batches: Vec<&Batch> = batches
            .iter()
            .copied()
            .filter(|b| !has(b, |p| p.service_minutes))
            .collect();
        let function_minutes = function_rollup(&fm_batches, &markers);
        let service_minutes = service_rollup(&sm_batches, &markers);
        let function_minute_block = (function_minutes.len() + 1).max(1 << 20).to_string();
        let service_minute_block = (service_minutes.len() + 1).max(1 << 20).to_string();
        let processes = batches
            .iter()
            .filter(|b| !has(b, |p| p.processes))
            .flat_map(|b| {
                b.processes.iter().map(move |p| ProcessRow {
                    time: b.time(),
                    host: &b.hostname,
                    host_id: &b.key.host_id,
                    boot_id: &b.key.boot_id,
                    pid: p.pid,
                    comm: &p.comm,
                    exe: &p.exe,
                    service: &p.service,
                    version: &p.version,
                    container_id: &p.container_id,
                    cgroup: &p.cgroup,
                    build_id: &p.build_id,
                })
            })
            .collect::<Vec<_>>();
        let energy = batches
            .iter()
            .filter(|b| b.energy.available && !has(b, |p| p.energy))
            .flat_map(|b| {
                b.energy
                    .domains
                    .iter()
                    .map(move |(domain, joules)| EnergyRow {
                        time: b.time(),
                        time_ns: b.start_time_ns,
                        window_ns: b.end_time_ns - b.start_time_ns,
                        host: &b.hostname,
                        host_id: &b.key.host_id,
                        source: &b.energy.source,
                        domain,
                        joules: *joules,
                    })
            })
            .collect::<Vec<_>>();
        let process_energy = batches
            .iter()
            .filter(|b| b.energy.available && !has(b, |p| p.process_energy))
            .flat_map(|b| {
                b.energy
                    .processes
                    .iter()
                    .enumerate()
                    .map(move |(i, (index, joules))| {
                        let p = &b.processes[*index as usize];
                        let (cpu_seconds, dram_joules) =
                            b.energy.split.processes.get(i).copied().unwrap_or_default();
                        ProcessEnergyRow {
                            time: b.time(),
                            time_ns: b.start_time_ns,
                            window_ns: b.end_time_ns - b.start_time_ns,
                            host: &b.hostname,
                            host_id: &b.key.host_id,
                            pid: p.pid,
                            comm: &p.comm,
                            service: &p.service,
                            version: &p.version,
                            joules: *joules,
                            cpu_seconds,
                            dram_joules,
                            method: &b.energy.split.method,
                        }
                    })
            })
            .collect::<Vec<_>>();
        let host_energy = super::energy::host_energy_rows(batches);
        let losses = batches
            .iter()
            .filter(|b| !has(b, |p| p.losses))
            .map(|b| {
                let l = &b.losses;
                LossRow {
                    time: b.time(),
                    host: &b.hostname,
                    host_id: &b.key.host_id,
                    boot_id: &b.key.boot_id,
                    sequence: b.key.sequence,
                    events: l.events,
                    idle: l.idle,
                    filtered: l.filtered,
                    recorded: l.recorded,
                    user_stack_unavailable: l.user_stack_unavailable,
                    kernel_stack_unavailable: l.kernel_stack_unavailable,
                    stack_collisions: l.stack_collisions,
                    stack_other_errors: l.stack_other_errors,
                    counts_map_full: l.counts_map_full,
                    unsymbolized_frames: l.unsymbolized_frames,
                    spool_dropped_batches: l.spool_dropped_batches,
                    spool_dropped_samples: l.spool_dropped_samples,
                    truncated_stacks: l.truncated_stacks,
                }
            })
            .collect::<Vec<_>>();

        // `join!`, not `try_join!`: every INSERT runs to its end before a failure is reported.
        // A sibling cancelled mid-request may still land on the server after the caller has
        // checked which parts are present, and would then be written twice on the retry.
        let (
            samples_r,
            stacks_r,
            frames_r,
            processes_r,
            energy_r,
            process_energy_r,
            losses_r,
            host_energy_r,
            function_minutes_r,
            service_minutes_r,
        ) = futures::join!(
            insert_rows!(self, SampleRow<'_>, "samples", samples, sample_row),
            insert_rows!(self, StackRow<'_>, "stacks", stack_rows, same),
            insert_rows!(self, FrameRow<'_>, "frames", frame_rows, same),
            insert_rows!(self, ProcessRow<'_>, "processes", processes, same),
            insert_rows!(self, EnergyRow<'_>, "energy", energy, same),
            insert_rows!(
                self,
                ProcessEnergyRow<'_>,
                "process_energy",
                process_energy,
                same
            ),
            insert_rows!(self, LossRow<'_>, "losses", losses, same),
            insert_rows!(
                self,
                super::energy::HostEnergyRow<'_>,
                "host_energy",
                host_energy,
                same
            ),
            insert_rows!(
                self,
                FunctionMinuteRow<'_>,
                "function_minutes",
                function_minutes,
                same,
                block = Some(function_minute_block)
            ),
            insert_rows!(
                self,
                ServiceMinuteRow<'_>,
                "service_minutes",
                service_minutes,
                same,
                block = Some(service_minute_block)
            ),
        );
        let sample_rows = samples_r?;
        stacks_r?;
        frames_r?;
        processes_r?;
        energy_r?;
        process_energy_r?;
        losses_r?;
        host_energy_r?;
        let function_minute_rows = function_minutes_r?;
        service_minutes_r?;
        let batch_rows = batches
            .iter()
            .map(|b| BatchRow {
                host_id: &b.key.host_id,
                boot_id: &b.key.boot_id,
                sequence: b.key.sequence,
                host: &b.hostname,
                time: b.time(),
                start_time_ns: b.start_time_ns,
                end_time_ns: b.end_time_ns,
                received,
                frequency_hz: b.frequency_hz,
                samples: b.total_samples(),
                sample_rows: count_u32(b.samples.len()),
                processes: count_u32(b.processes.len()),
                stacks: count_u32(b.stacks.len()),
                frames: count_u32(b.frames.len()),
                kernel_release: &b.kernel_release,
                agent_version: &b.agent_version,
                energy_available: u8::from(b.energy.available),
                energy_unavailable_reason: &b.energy.unavailable_reason,
            })
            .collect::<Vec<_>>();
        insert_rows!(self, BatchRow<'_>, "batches", batch_rows, same).await?;

        known_stacks.extend(new_stacks);
        known_frames.extend(new_frames);
        Ok(WriteOutcome {
            batches: batches.len(),
            sample_rows,
            samples: sample_batches.iter().map(|b| b.total_samples()).sum(),
            function_minute_rows,
        })
    }

    /// Which of `keys` already have a `batches` row (i.e. are stored). One query, using the
    /// table's primary key.
    pub async fn stored_keys(&self, keys: &[&BatchKey]) -> Result<HashSet<BatchKey>, StoreError> {
        let mut found = HashSet::new();
        for chunk in keys.chunks(500) {
            let tuples = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT host_id, boot_id, sequence FROM batches \
                 WHERE (host_id, boot_id, sequence) IN ({tuples})"
            );
            let mut query = self.client.query(&sql);
            for key in chunk {
                query = query
                    .bind(key.host_id.as_str())
                    .bind(key.boot_id.as_str())
                    .bind(key.sequence);
            }
            let rows = query
                .fetch_all::<KeyRow>()
                .await
                .map_err(StoreError::ch("checking stored batches"))?;
            found.extend(rows.into_iter().map(|r| BatchKey {
                host_id: r.host_id,
                boot_id: r.boot_id,
                sequence: r.sequence,
            }));
        }
        Ok(found)
    }

    /// Which of `keys` are stored (have a `batches` row), and which an earlier attempt started
    /// to write (have a `batch_attempts` row; [`Store::write_batches`] writes it first). One
    /// query per 500 keys, on both tables' primary keys.
    pub async fn batch_states(
        &self,
        keys: &[&BatchKey],
    ) -> Result<(HashSet<BatchKey>, HashSet<BatchKey>), StoreError> {
        let (mut stored, mut attempted) = (HashSet::new(), HashSet::new());
        for chunk in keys.chunks(500) {
            let tuples = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT host_id, boot_id, sequence, toUInt8(1) AS stored FROM batches \
                 WHERE (host_id, boot_id, sequence) IN ({tuples}) \
                 UNION ALL \
                 SELECT host_id, boot_id, sequence, toUInt8(0) AS stored FROM batch_attempts \
                 WHERE (host_id, boot_id, sequence) IN ({tuples})"
            );
            let mut query = self.client.query(&sql);
            for _ in 0..2 {
                for key in chunk {
                    query = query
                        .bind(key.host_id.as_str())
                        .bind(key.boot_id.as_str())
                        .bind(key.sequence);
                }
            }
            let rows = query
                .fetch_all::<StateRow>()
                .await
                .map_err(StoreError::ch("checking stored batches"))?;
            for r in rows {
                let key = BatchKey {
                    host_id: r.host_id,
                    boot_id: r.boot_id,
                    sequence: r.sequence,
                };
                if r.stored == 1 {
                    stored.insert(key);
                } else {
                    attempted.insert(key);
                }
            }
        }
        Ok((stored, attempted))
    }

    /// For each of `batches`, which tables already hold its rows (an earlier attempt failed
    /// after some INSERTs succeeded). One query per table, limited to the batches' hosts and
    /// time range; batches with no rows anywhere are left out of the map.
    pub async fn present_parts(
        &self,
        batches: &[&Batch],
    ) -> Result<HashMap<BatchKey, PresentParts>, StoreError> {
        let mut out: HashMap<BatchKey, PresentParts> = HashMap::new();
        let Some(from) = batches.iter().map(|b| b.time()).min() else {
            return Ok(out);
        };
        let to = batches.iter().map(|b| b.time()).max().unwrap_or(from);
        let mut hosts: Vec<&str> = batches.iter().map(|b| b.key.host_id.as_str()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        // (table, boot id column, identifying column; how a batch names the same row).
        type Ident = fn(&Batch) -> (String, u64);
        type Mark = fn(&mut PresentParts);
        let tables: [(&str, &str, &str, Ident, Mark); 5] = [
            (
                "samples",
                "boot_id",
                "sequence",
                |b| (b.key.boot_id.clone(), b.key.sequence),
                |p| p.samples = true,
            ),
            (
                "losses",
                "boot_id",
                "sequence",
                |b| (b.key.boot_id.clone(), b.key.sequence),
                |p| p.losses = true,
            ),
            (
                "processes",
                "boot_id",
                "toUInt64(time)",
                |b| (b.key.boot_id.clone(), u64::from(b.time())),
                |p| p.processes = true,
            ),
            (
                "energy",
                "''",
                "time_ns",
                |b| (String::new(), b.start_time_ns),
                |p| p.energy = true,
            ),
            (
                "process_energy",
                "''",
                "time_ns",
                |b| (String::new(), b.start_time_ns),
                |p| p.process_energy = true,
            ),
        ];
        // The rollups' markers (one row per batch and table, see `rollup_marker`).
        let mut minutes: Vec<u32> = batches.iter().map(|b| b.time() / 60 * 60).collect();
        minutes.sort_unstable();
        let wanted: Vec<String> = batches.iter().map(|b| rollup_marker(&b.key)).collect();
        let markers: [(&str, Mark); 2] = [
            ("function_minutes", |p| p.function_minutes = true),
            ("service_minutes", |p| p.service_minutes = true),
        ];
        for (table, mark) in markers {
            let sql = format!(
                "SELECT DISTINCT rollup_batch FROM {table} \
                 WHERE minute >= toDateTime(?) AND minute <= toDateTime(?) \
                 AND rollup_batches > 0 AND has(?, rollup_batch)"
            );
            let found: HashSet<String> = self
                .client
                .query(&sql)
                .bind(minutes[0])
                .bind(minutes[minutes.len() - 1])
                .bind(&wanted)
                .fetch_all::<String>()
                .await
                .map_err(StoreError::ch(format!(
                    "checking {table} for partly written batches"
                )))?
                .into_iter()
                .collect();
            for (b, name) in batches.iter().zip(&wanted) {
                if found.contains(name) {
                    mark(out.entry(b.key.clone()).or_default());
                }
            }
        }
        for (table, boot, id, ident, mark) in tables {
            let sql = format!(
                "SELECT DISTINCT host_id, {boot} AS b, {id} AS id FROM {table} \
                 WHERE time >= toDateTime(?) AND time <= toDateTime(?) AND has(?, host_id)"
            );
            let rows = self
                .client
                .query(&sql)
                .bind(from)
                .bind(to)
                .bind(&hosts)
                .fetch_all::<PartRow>()
                .await
                .map_err(StoreError::ch(format!(
                    "checking {table} for partly written batches"
                )))?;
            let found: HashSet<(String, String, u64)> =
                rows.into_iter().map(|r| (r.host_id, r.b, r.id)).collect();
            for b in batches {
                let (boot_id, n) = ident(b);
                if found.contains(&(b.key.host_id.clone(), boot_id, n)) {
                    mark(out.entry(b.key.clone()).or_default());
                }
            }
        }
        Ok(out)
    }

    /// Total samples stored (sum of `batches.samples`, each batch counted once).
    pub async fn stored_sample_count(&self) -> Result<u64, StoreError> {
        self.client
            .query(
                "SELECT toUInt64(sum(samples)) FROM \
                 (SELECT host_id, boot_id, sequence, any(samples) AS samples FROM batches \
                  GROUP BY host_id, boot_id, sequence)",
            )
            .fetch_one::<u64>()
            .await
            .map_err(StoreError::ch("counting stored samples"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Process, StackInfo};

    fn stack(id: u64, functions: &[&str]) -> StackInfo {
        StackInfo {
            stack_id: id,
            frame_ids: (0..functions.len() as u64).collect(),
            functions: functions.iter().map(|f| Arc::from(*f)).collect(),
        }
    }

    fn sample(process: u32, stack: u32, count: u64) -> SampleInfo {
        SampleInfo {
            process,
            stack,
            tid: 1,
            thread: String::new(),
            count,
        }
    }

    /// The collector's rollup counts as the v1 view did: self is the leaf's, total counts a
    /// function once per stack even when recursive, per (service, version, minute); the service
    /// rollup is per host.
    #[test]
    fn rollups_count_self_at_the_leaf_and_total_once_per_stack() {
        let process = |service: &str, version: &str| Process {
            service: service.into(),
            version: version.into(),
            ..Default::default()
        };
        let batch = |host: &str, start_s: u64| Batch {
            key: BatchKey {
                host_id: host.into(),
                boot_id: "boot".into(),
                sequence: start_s,
            },
            hostname: host.into(),
            start_time_ns: start_s * 1_000_000_000,
            processes: vec![process("checkout", "1.0"), process("search", "2.0")],
            stacks: vec![
                stack(1, &["main", "recurse", "recurse", "leaf"]),
                stack(2, &["main", "recurse"]),
            ],
            samples: vec![
                sample(0, 0, 5),
                sample(0, 1, 3),
                sample(1, 0, 7),
                sample(0, 0, 1),
            ],
            ..Default::default()
        };
        // Two hosts in the same minute, one batch in the next minute.
        let batches = [batch("a", 600), batch("b", 630), batch("a", 660)];
        let refs: Vec<&Batch> = batches.iter().collect();
        let markers: HashMap<BatchKey, String> = batches
            .iter()
            .map(|b| (b.key.clone(), rollup_marker(&b.key)))
            .collect();
        let mut functions = function_rollup(&refs, &markers);
        let mut services = service_rollup(&refs, &markers);
        let function_markers: Vec<_> = functions
            .iter()
            .filter(|r| r.rollup_batches > 0)
            .map(|r| (r.rollup_batch, r.self_samples + r.total_samples, r.function))
            .collect();
        assert_eq!(function_markers.len(), 3, "one marker per batch");
        assert!(
            function_markers
                .iter()
                .all(|m| !m.0.is_empty() && m.1 == 0 && m.2 == "main")
        );
        let service_markers: Vec<_> = services
            .iter()
            .filter(|r| r.rollup_batches > 0)
            .map(|r| (r.rollup_batch, r.samples, r.service))
            .collect();
        assert_eq!(service_markers.len(), 3);
        assert!(
            service_markers
                .iter()
                .all(|m| !m.0.is_empty() && m.1 == 0 && m.2 == "checkout")
        );
        functions.retain(|r| r.rollup_batches == 0);
        services.retain(|r| r.rollup_batches == 0);
        let f: HashMap<(&str, &str, u32), (u64, u64)> = functions
            .iter()
            .map(|r| {
                (
                    (r.service, r.function, r.minute),
                    (r.self_samples, r.total_samples),
                )
            })
            .collect();
        assert_eq!(f[&("checkout", "main", 600)], (0, 18));
        assert_eq!(f[&("checkout", "recurse", 600)], (6, 18));
        assert_eq!(f[&("checkout", "leaf", 600)], (12, 12));
        assert_eq!(f[&("checkout", "leaf", 660)], (6, 6));
        assert_eq!(f[&("search", "recurse", 660)], (0, 7));
        assert_eq!(
            functions.len(),
            3 * 2 * 2,
            "3 functions x 2 services x 2 minutes"
        );
        let s: HashMap<(&str, u32, &str), u64> = services
            .iter()
            .map(|r| ((r.service, r.minute, r.host), r.samples))
            .collect();
        assert_eq!(s[&("checkout", 600, "a")], 9);
        assert_eq!(s[&("checkout", 600, "b")], 9);
        assert_eq!(s[&("search", 600, "b")], 7);
        assert_eq!(s[&("checkout", 660, "a")], 9);
        assert_eq!(s.len(), 6);
    }

    /// Names are found by frame id: batches of one group holding the same frames in names of
    /// their own (each batch allocates its names) count under one row per name, recursion and
    /// zero counts included.
    #[test]
    fn rollup_names_of_a_group_are_one_per_frame() {
        let batch = |sequence: u64| {
            let frame_names: Vec<Arc<str>> = ["main", "work", "parse"]
                .iter()
                .map(|f| Arc::from(*f))
                .collect();
            let stack = |frames: &[usize]| {
                let frame_ids: Vec<u64> = frames.iter().map(|&i| 10 + i as u64).collect();
                StackInfo {
                    stack_id: super::super::model::stack_id(&frame_ids),
                    frame_ids,
                    functions: frames.iter().map(|&i| frame_names[i].clone()).collect(),
                }
            };
            Batch {
                key: BatchKey {
                    host_id: "h".into(),
                    boot_id: "b".into(),
                    sequence,
                },
                hostname: "h".into(),
                start_time_ns: 600_000_000_000,
                processes: vec![Process {
                    service: "svc".into(),
                    version: "1".into(),
                    ..Default::default()
                }],
                stacks: vec![stack(&[0, 1, 2]), stack(&[0, 2, 1, 2])],
                samples: vec![sample(0, 0, 2), sample(0, 1, 3), sample(0, 1, 0)],
                ..Default::default()
            }
        };
        let batches = [batch(1), batch(2)];
        let refs: Vec<&Batch> = batches.iter().collect();
        let markers: HashMap<BatchKey, String> = batches
            .iter()
            .map(|b| (b.key.clone(), rollup_marker(&b.key)))
            .collect();
        let rows = function_rollup(&refs, &markers);
        let sums: HashMap<&str, (u64, u64)> = rows
            .iter()
            .filter(|r| r.rollup_batches == 0)
            .map(|r| (r.function, (r.self_samples, r.total_samples)))
            .collect();
        assert_eq!(sums["main"], (0, 10));
        assert_eq!(sums["work"], (0, 10));
        assert_eq!(sums["parse"], (10, 10));
        assert_eq!(
            rows.len(),
            3 + 2,
            "one row per name, one marker per batch: {sums:?}"
        );
    }
}
