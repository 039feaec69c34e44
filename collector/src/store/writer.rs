//! Batched writes: many batches in one INSERT per table, the `batches` row last as the commit
//! marker, and the dedup look-ups the ingest writer needs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::Row;
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

#[derive(Row, Serialize)]
struct SampleRow<'a> {
    time: u32,
    time_ns: u64,
    host: &'a str,
    host_id: &'a str,
    boot_id: &'a str,
    sequence: u64,
    service: &'a str,
    version: &'a str,
    pid: u32,
    tid: u32,
    comm: &'a str,
    thread: &'a str,
    container_id: &'a str,
    stack_id: u64,
    count: u64,
}

#[derive(Row, Serialize)]
struct StackRow<'a> {
    stack_id: u64,
    frame_ids: &'a [u64],
    functions: &'a [String],
    first_seen: u32,
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
}

/// A `function_minutes` row: one (service, function, minute, version) of an INSERT group.
#[derive(Row, Serialize)]
struct FunctionMinuteRow<'a> {
    service: &'a str,
    function: &'a str,
    minute: u32,
    version: &'a str,
    self_samples: u64,
    total_samples: u64,
}

/// A `service_minutes` row: one (service, minute, version, host) of an INSERT group.
#[derive(Row, Serialize)]
struct ServiceMinuteRow<'a> {
    service: &'a str,
    minute: u32,
    version: &'a str,
    host: &'a str,
    samples: u64,
}

/// At most this many stack (and frame) ids are remembered as written; past it the memory starts
/// afresh, so a long-running collector stays bounded and re-writes a hot stack once in a while
/// (ReplacingMergeTree folds the copy).
pub const KNOWN_IDS_LIMIT: usize = 2_000_000;

/// The per-minute rollups of `samples` for one INSERT group, aggregated here rather than by a
/// materialized view expanding every sample row into one row per function of its stack: sample
/// rows are first summed per (service, version, minute, stack), then each distinct stack is
/// expanded once. A function counts once per stack for `total_samples` even when recursive;
/// `self_samples` is the leaf's.
fn rollups<'a>(
    samples: &[(&'a Batch, &'a SampleInfo)],
) -> (Vec<FunctionMinuteRow<'a>>, Vec<ServiceMinuteRow<'a>>) {
    type StackKey<'a> = (&'a str, &'a str, u32, u64);
    let mut per_stack: HashMap<StackKey<'a>, (u64, &'a super::StackInfo)> = HashMap::new();
    let mut per_host: HashMap<(&'a str, u32, &'a str, &'a str), u64> = HashMap::new();
    for (b, s) in samples {
        let p = &b.processes[s.process as usize];
        let st = &b.stacks[s.stack as usize];
        let minute = b.time() / 60 * 60;
        per_stack
            .entry((p.service.as_str(), p.version.as_str(), minute, st.stack_id))
            .or_insert((0, st))
            .0 += s.count;
        *per_host
            .entry((
                p.service.as_str(),
                minute,
                p.version.as_str(),
                b.hostname.as_str(),
            ))
            .or_default() += s.count;
    }
    let mut per_function: HashMap<(&'a str, &'a str, u32, &'a str), (u64, u64)> = HashMap::new();
    let mut seen: HashSet<&'a str> = HashSet::new();
    for ((service, version, minute, _), (count, stack)) in per_stack {
        seen.clear();
        let leaf = stack.functions.last().map(String::as_str);
        for f in &stack.functions {
            if seen.insert(f.as_str()) {
                let e = per_function
                    .entry((service, f.as_str(), minute, version))
                    .or_default();
                e.1 += count;
                if Some(f.as_str()) == leaf {
                    e.0 += count;
                }
            }
        }
    }
    let functions = per_function
        .into_iter()
        .map(
            |((service, function, minute, version), (s, t))| FunctionMinuteRow {
                service,
                function,
                minute,
                version,
                self_samples: s,
                total_samples: t,
            },
        )
        .collect();
    let services = per_host
        .into_iter()
        .map(|((service, minute, version, host), n)| ServiceMinuteRow {
            service,
            minute,
            version,
            host,
            samples: n,
        })
        .collect();
    (functions, services)
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
}

#[derive(Row, Deserialize)]
struct PartRow {
    host_id: String,
    b: String,
    id: u64,
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
macro_rules! insert_rows {
    ($store:expr, $ty:ty, $table:literal, $items:expr, $map:expr) => {
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
        known_stacks: &mut HashSet<u64>,
        known_frames: &mut HashSet<u64>,
    ) -> Result<WriteOutcome, StoreError> {
        let received = unix_now();
        if known_stacks.len() > KNOWN_IDS_LIMIT {
            known_stacks.clear();
        }
        if known_frames.len() > KNOWN_IDS_LIMIT {
            known_frames.clear();
        }
        let mut new_stacks = HashSet::new();
        let mut new_frames = HashSet::new();
        let stacks = batches
            .iter()
            .flat_map(|b| b.stacks.iter().map(move |s| (b, s)))
            .filter(|(_, s)| !known_stacks.contains(&s.stack_id) && new_stacks.insert(s.stack_id));
        let stack_rows: Vec<StackRow<'_>> = stacks
            .map(|(b, s)| StackRow {
                stack_id: s.stack_id,
                frame_ids: &s.frame_ids,
                functions: &s.functions,
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
        // The rollups go with the sample rows: a batch whose samples are already stored (an
        // earlier attempt) has had its rollups written in the same attempt.
        let (function_minutes, service_minutes) = rollups(&samples);
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
                same
            ),
            insert_rows!(
                self,
                ServiceMinuteRow<'_>,
                "service_minutes",
                service_minutes,
                same
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
    use crate::store::{ProcessInfo, StackInfo};

    fn stack(id: u64, functions: &[&str]) -> StackInfo {
        StackInfo {
            stack_id: id,
            frame_ids: (0..functions.len() as u64).collect(),
            functions: functions.iter().map(|f| (*f).to_owned()).collect(),
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
        let process = |service: &str, version: &str| ProcessInfo {
            service: service.into(),
            version: version.into(),
            ..Default::default()
        };
        let batch = |host: &str, start_s: u64| Batch {
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
        let rows: Vec<(&Batch, &SampleInfo)> = batches
            .iter()
            .flat_map(|b| b.samples.iter().map(move |s| (b, s)))
            .collect();
        let (functions, services) = rollups(&rows);
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
}
