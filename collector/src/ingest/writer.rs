//! The single writer task: owns dedup state, groups concurrent pushes into large INSERTs, and
//! answers each push only once its batch is in ClickHouse.
//!
//! Durability: **a push is acknowledged only after its batch is stored** (its `batches` row, the
//! commit marker, is written last). While ClickHouse is unreachable (connection refused, a
//! timeout), pushes are answered `UNAVAILABLE` and the hosts keep the batches in their spool, so
//! a collector crash or kill loses nothing acknowledged: the collector holds no buffer of its own.
//!
//! A group of batches ClickHouse *rejects* (it answered with an error) is split: each batch is
//! written on its own, the good ones are stored, and a batch ClickHouse rejects alone is moved to
//! the dead-letter directory (its wire bytes and the reason) and answered `INVALID_ARGUMENT`, so
//! one poison batch never stops the fleet.
//!
//! Partial writes are idempotent: every table, the collector's rollups included, gets a batch's
//! rows exactly once whichever INSERTs of an earlier attempt failed (in this process or a killed
//! one). A batch's attempt is recorded (`batch_attempts`) before any of its rows; for a batch an
//! earlier attempt started and did not commit, the writer asks which tables already hold its
//! rows (the rollup tables through their per-batch markers, see
//! [`crate::store::rollup_marker`]) and skips those tables for that batch.
//!
//! Overlap: up to [`WriterConfig::max_groups_in_flight`] groups are written at once (each group's
//! round trips — the look-up, the attempt rows, the tables, the commit rows — overlap another
//! group's), but a batch key is only ever in one group at a time: a push of a key whose group is
//! still being written waits for that group's outcome (then it is a duplicate, or written anew).
//! Stack and frame ids written by a group count as known once that group succeeded.
//!
//! Memory: what waits for the writer is bounded in bytes ([`WriterConfig::max_pending_bytes`]);
//! beyond it, pushes get `RESOURCE_EXHAUSTED` and the hosts retry later.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetprof_proto::fleetprof::v1 as pb;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::store::{
    Batch, BatchKey, KNOWN_IDS_LIMIT, KnownIds, PresentParts, Store, StoreError, name_batch,
    needs_names,
};

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Sample rows one INSERT gathers from concurrent pushes, at most. Default 500,000.
    pub max_group_rows: usize,
    /// Bytes of batches (as held in memory) waiting for or being written, at most; a push that
    /// does not fit is refused with `RESOURCE_EXHAUSTED`. Default 512 MiB.
    pub max_pending_bytes: usize,
    /// Time allowed for each ClickHouse call (look-ups and each group's INSERTs); past it,
    /// ClickHouse counts as unreachable. Default 30 s.
    pub clickhouse_timeout: Duration,
    /// Where batches ClickHouse rejects are kept (`<host_id>-<boot_id>-<sequence>.pb` with the
    /// wire batch and `.reason` with ClickHouse's answer). Default: none (logged and counted).
    pub dead_letter_dir: Option<PathBuf>,
    /// INSERT groups written at the same time, at least 1. Default 2: while one group waits on
    /// ClickHouse, the next one's round trips are already under way. A further group starts
    /// only once as many batches wait as the last group took, so overlapping never makes the
    /// groups smaller (each group writes its own rollup rows).
    pub max_groups_in_flight: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_groups_in_flight: 2,
            max_group_rows: 500_000,
            max_pending_bytes: 512 << 20,
            clickhouse_timeout: Duration::from_secs(30),
            dead_letter_dir: None,
        }
    }
}

/// How a batch was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Written to ClickHouse.
    Stored {
        /// Samples in the batch.
        samples: u64,
    },
    /// Already stored; nothing stored again.
    Duplicate,
}

/// Why a batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// ClickHouse could not be reached (refused, reset, timed out): retry later.
    #[error("ClickHouse unreachable: {reason}; nothing stored, retry later")]
    Unavailable {
        /// The ClickHouse error.
        reason: String,
    },
    /// ClickHouse answered this batch, written on its own, with an error.
    #[error("ClickHouse rejected this batch: {reason}{}", kept.as_ref().map(|p| format!(" (kept in {})", p.display())).unwrap_or_default())]
    Rejected {
        /// ClickHouse's answer.
        reason: String,
        /// The dead-letter file, when one was written.
        kept: Option<PathBuf>,
    },
    /// More bytes are waiting for the writer than the memory budget allows.
    #[error("collector busy: {pending} bytes of batches waiting, budget {budget}; retry later")]
    Busy {
        /// Bytes this batch needs.
        pending: usize,
        /// The budget.
        budget: usize,
    },
    /// The writer task has stopped (the collector is shutting down).
    #[error("collector is shutting down")]
    Stopped,
}

/// Counters of the writer, for logs, metrics, tests and benches.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches written to ClickHouse.
    pub batches_stored: AtomicU64,
    /// Samples written to ClickHouse.
    pub samples_stored: AtomicU64,
    /// Duplicate pushes answered.
    pub duplicates: AtomicU64,
    /// Pushes answered UNAVAILABLE because ClickHouse was unreachable.
    pub unavailable: AtomicU64,
    /// Batches ClickHouse rejected (moved to the dead-letter directory).
    pub dead_lettered: AtomicU64,
    /// Pushes refused because the memory budget was used up.
    pub refused_busy: AtomicU64,
    /// Bytes of batches currently waiting for or being written.
    pub pending_bytes: AtomicU64,
    /// INSERT groups written.
    pub groups: AtomicU64,
}

impl WriterStats {
    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, kind, v) in [
            (
                "fleetprof_collector_batches_stored_total",
                "Batches written to ClickHouse.",
                "counter",
                &self.batches_stored,
            ),
            (
                "fleetprof_collector_samples_stored_total",
                "Samples written to ClickHouse.",
                "counter",
                &self.samples_stored,
            ),
            (
                "fleetprof_collector_duplicates_total",
                "Pushes of batches already stored.",
                "counter",
                &self.duplicates,
            ),
            (
                "fleetprof_collector_unavailable_total",
                "Pushes answered UNAVAILABLE while ClickHouse was unreachable.",
                "counter",
                &self.unavailable,
            ),
            (
                "fleetprof_collector_dead_lettered_total",
                "Batches ClickHouse rejected, kept in the dead-letter directory.",
                "counter",
                &self.dead_lettered,
            ),
            (
                "fleetprof_collector_refused_busy_total",
                "Pushes refused because the memory budget was used up.",
                "counter",
                &self.refused_busy,
            ),
            (
                "fleetprof_collector_pending_bytes",
                "Bytes of batches waiting for or being written.",
                "gauge",
                &self.pending_bytes,
            ),
            (
                "fleetprof_collector_insert_groups_total",
                "INSERT groups written.",
                "counter",
                &self.groups,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

type Reply = oneshot::Sender<Result<Ack, WriteError>>;

/// A batch handed to the writer.
#[derive(Debug)]
pub struct Submission {
    /// The validated batch.
    pub batch: Batch,
    /// The batch as it came over the wire, kept decoded for the dead-letter directory: it is
    /// encoded again only for a batch ClickHouse rejects, not for every push.
    pub wire: pb::ProfileBatch,
}

/// Bytes a decoded wire batch holds, an upper estimate: its encoded size bounds the strings'
/// contents; stack frame indexes take 4 bytes each decoded (fewer as varints); the element
/// structs (string and vector headers) and an allocator's overhead per string come on top.
pub(crate) fn decoded_bytes(wire: &pb::ProfileBatch) -> usize {
    use std::mem::size_of;
    const PER_ALLOCATION: usize = 16;
    let strings = wire.processes.len() * 8 + wire.frames.len() * 5 + wire.samples.len();
    wire.encoded_len()
        + wire
            .stacks
            .iter()
            .map(|s| s.frame_indexes.len() * 4)
            .sum::<usize>()
        + wire.processes.len() * size_of::<pb::Process>()
        + wire.frames.len() * size_of::<pb::Frame>()
        + wire.stacks.len() * (size_of::<pb::Stack>() + PER_ALLOCATION)
        + wire.samples.len() * size_of::<pb::Sample>()
        + strings * PER_ALLOCATION
}

struct Request {
    batch: Batch,
    wire: pb::ProfileBatch,
    reply: Reply,
    _permit: OwnedSemaphorePermit,
}

/// A cheap handle to submit batches to the writer task.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
    stats: Arc<WriterStats>,
    budget: Arc<Semaphore>,
    max_pending_bytes: usize,
}

/// The budget's unit: semaphore permits count KiB so any `usize` budget fits in `u32` permits.
const UNIT: usize = 1024;

impl WriterHandle {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(store: Store, config: WriterConfig) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let stats = Arc::new(WriterStats::default());
        let permits = (config.max_pending_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        let writer = Writer {
            groups: GroupWriter {
                store,
                config: config.clone(),
                stats: stats.clone(),
            },
            recent: RecentKeys::default(),
            known_stacks: KnownIds::default(),
            known_frames: KnownIds::default(),
            known_since: std::time::Instant::now(),
            in_flight: HashSet::new(),
            held: Vec::new(),
        };
        let task = tokio::spawn(writer.run(rx));
        (
            Self {
                tx,
                stats,
                budget: Arc::new(Semaphore::new(permits)),
                max_pending_bytes: config.max_pending_bytes,
            },
            task,
        )
    }

    /// Submits a validated batch and waits until it is stored or refused.
    pub async fn submit(&self, submission: Submission) -> Result<Ack, WriteError> {
        let bytes = submission.batch.approx_bytes() + decoded_bytes(&submission.wire);
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let Ok(permit) = self.budget.clone().try_acquire_many_owned(units) else {
            self.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(WriteError::Busy {
                pending: bytes,
                budget: self.max_pending_bytes,
            });
        };
        self.stats
            .pending_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let sent = self
            .tx
            .send(Request {
                batch: submission.batch,
                wire: submission.wire,
                reply,
                _permit: permit,
            })
            .await;
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(WriteError::Stopped)),
            Err(_) => Err(WriteError::Stopped),
        };
        self.stats
            .pending_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
        result
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// A shared handle on the counters (for a metrics endpoint).
    pub fn stats_arc(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }
}

/// Keys stored recently, in two generations so memory stays bounded.
#[derive(Default)]
struct RecentKeys {
    current: HashSet<BatchKey>,
    previous: HashSet<BatchKey>,
}

impl RecentKeys {
    const GENERATION: usize = 1 << 20;

    fn contains(&self, key: &BatchKey) -> bool {
        self.current.contains(key) || self.previous.contains(key)
    }

    fn insert(&mut self, key: BatchKey) {
        if self.current.len() >= Self::GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key);
    }
}

/// A batch of the current group and the pushes waiting on it (a retry may arrive while the
/// first attempt is still in the group).
struct Pending {
    batch: Batch,
    wire: pb::ProfileBatch,
    replies: Vec<Reply>,
    /// The batch's share of the memory budget, held until it is answered.
    _permit: OwnedSemaphorePermit,
}

/// Whether a ClickHouse error means "unreachable" (retry the same INSERT later) rather than "the
/// server answered and refused" (the data is at fault).
fn is_outage(e: &StoreError) -> bool {
    match e {
        StoreError::ClickHouse { source, .. } => !matches!(
            source,
            clickhouse::error::Error::BadResponse(_)
                | clickhouse::error::Error::SchemaMismatch(_)
                | clickhouse::error::Error::InvalidParams(_)
        ),
        _ => false,
    }
}

/// Why a group failed.
enum Failure {
    Outage(String),
    Rejected(String),
}

/// Runs a store call under `timeout`; a timeout is an outage (a hung server must not stall the
/// writer).
async fn timed<T>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if is_outage(&e) => Err(Failure::Outage(e.to_string())),
        Ok(Err(e)) => Err(Failure::Rejected(e.to_string())),
        Err(_) => Err(Failure::Outage(format!(
            "{what}: no answer within {timeout:?}"
        ))),
    }
}

/// What writes one group: cheap to clone, one clone per group in flight.
#[derive(Clone)]
struct GroupWriter {
    store: Store,
    config: WriterConfig,
    stats: Arc<WriterStats>,
}

/// What a finished group tells the writer loop.
struct GroupDone {
    /// Every key the group held (no longer in flight).
    keys: Vec<BatchKey>,
    /// Keys now stored (written by this group or found stored).
    stored: Vec<BatchKey>,
    /// Stack and frame ids this group wrote.
    stacks: KnownIds,
    frames: KnownIds,
}

type GroupFuture = Pin<Box<dyn Future<Output = GroupDone> + Send>>;

/// The loop: owns dedup state (recent keys, known ids, keys in flight) and starts groups.
struct Writer {
    groups: GroupWriter,
    recent: RecentKeys,
    known_stacks: KnownIds,
    known_frames: KnownIds,
    /// When the known-ids sets were last emptied (see [`KNOWN_IDS_MAX_AGE`]).
    known_since: std::time::Instant,
    /// Keys of the batches in the groups being written.
    in_flight: HashSet<BatchKey>,
    /// Pushes of keys that were in flight when they arrived, oldest first.
    held: Vec<Request>,
}

/// How long a stack or frame id stays "known" (not written again). Retention deletes stacks no
/// kept sample uses (`Store::trim_unreferenced`); forgetting ids hourly means a stack seen again
/// after that is written again rather than referred to and missing.
const KNOWN_IDS_MAX_AGE: Duration = Duration::from_secs(3600);

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let max = self.groups.config.max_groups_in_flight.max(1);
        let mut running: FuturesUnordered<GroupFuture> = FuturesUnordered::new();
        let mut queue: VecDeque<Request> = VecDeque::new();
        let mut open = true;
        let mut last_group = 0;
        // Ends when every handle is gone, the channel is drained and every group is done:
        // shutdown answers every accepted push (stored, or UNAVAILABLE) before the task ends.
        loop {
            while let Ok(r) = rx.try_recv() {
                queue.push_back(r);
            }
            while running.len() < max && self.ready(&queue, running.len(), last_group) {
                let group = self.gather(&mut queue);
                last_group = group.len();
                if let Some(f) = self.start(group) {
                    running.push(f);
                }
            }
            if !open && running.is_empty() && queue.is_empty() {
                break;
            }
            tokio::select! {
                // Finishing first frees keys and known ids for the groups started next.
                biased;
                Some(done) = running.next(), if !running.is_empty() => {
                    self.finish(done);
                    // Pushes held back for these keys go first into the next group.
                    for r in std::mem::take(&mut self.held).into_iter().rev() {
                        queue.push_front(r);
                    }
                }
                r = rx.recv(), if open => match r {
                    Some(r) => queue.push_back(r),
                    None => open = false,
                },
                else => break,
            }
        }
        // Nothing is in flight any more: whatever is left (nothing, normally) is answered.
        for r in std::mem::take(&mut self.held).into_iter().chain(queue) {
            let _ = r.reply.send(Err(WriteError::Stopped));
        }
    }

    /// Whether to start a group now: whenever none is being written and pushes wait; besides
    /// running ones, only once as many batches wait as the last group took (or a full group's
    /// rows). A group started early would be small, and each group writes its own rollup rows
    /// (a function's row per series and group), so many small groups cost ClickHouse more rows
    /// per sample than the overlap saves.
    fn ready(&self, queue: &VecDeque<Request>, running: usize, last_group: usize) -> bool {
        if queue.is_empty() {
            return false;
        }
        running == 0
            || queue.len() >= last_group.max(1)
            || queue.iter().map(|r| r.batch.samples.len()).sum::<usize>()
                >= self.groups.config.max_group_rows
    }

    /// The next group: the oldest waiting pushes, up to [`WriterConfig::max_group_rows`] sample
    /// rows (at least one push).
    fn gather(&mut self, queue: &mut VecDeque<Request>) -> Vec<Request> {
        let mut group = Vec::new();
        let mut rows = 0;
        while let Some(r) = queue.pop_front() {
            rows += r.batch.samples.len();
            group.push(r);
            if rows >= self.groups.config.max_group_rows {
                break;
            }
        }
        group
    }

    /// Answers known duplicates, holds pushes whose key is in flight, collapses retries within
    /// the group, and returns the group's write, or `None` when nothing is left to write.
    fn start(&mut self, group: Vec<Request>) -> Option<GroupFuture> {
        let mut pending: Vec<Pending> = Vec::with_capacity(group.len());
        let mut index: HashMap<BatchKey, usize> = HashMap::new();
        for r in group {
            if self.recent.contains(&r.batch.key) {
                self.groups.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                let _ = r.reply.send(Ok(Ack::Duplicate));
            } else if self.in_flight.contains(&r.batch.key) {
                self.held.push(r);
            } else if let Some(&i) = index.get(&r.batch.key) {
                self.groups.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                pending[i].replies.push(r.reply);
            } else {
                index.insert(r.batch.key.clone(), pending.len());
                pending.push(Pending {
                    batch: r.batch,
                    wire: r.wire,
                    replies: vec![r.reply],
                    _permit: r._permit,
                });
            }
        }
        if pending.is_empty() {
            return None;
        }
        if self.known_since.elapsed() > KNOWN_IDS_MAX_AGE
            || self.known_stacks.len() > KNOWN_IDS_LIMIT
            || self.known_frames.len() > KNOWN_IDS_LIMIT
        {
            self.known_stacks.clear();
            self.known_frames.clear();
            self.known_since = std::time::Instant::now();
        }
        // The group gets the known ids it can meet, not the whole sets, so groups in flight
        // share nothing mutable; a stack new to two groups at once is written by both
        // (ReplacingMergeTree folds the copy).
        let mut stacks = KnownIds::default();
        let mut frames = KnownIds::default();
        for p in &pending {
            self.in_flight.insert(p.batch.key.clone());
            stacks.extend(
                p.batch
                    .stacks
                    .iter()
                    .map(|s| s.stack_id)
                    .filter(|id| self.known_stacks.contains(id)),
            );
            frames.extend(
                p.batch
                    .frames
                    .iter()
                    .map(|f| f.frame_id)
                    .filter(|id| self.known_frames.contains(id)),
            );
        }
        let groups = self.groups.clone();
        Some(Box::pin(groups.handle_group(pending, stacks, frames)))
    }

    fn finish(&mut self, done: GroupDone) {
        for key in &done.keys {
            self.in_flight.remove(key);
        }
        for key in done.stored {
            self.recent.insert(key);
        }
        self.known_stacks.extend(done.stacks);
        self.known_frames.extend(done.frames);
    }
}

impl GroupWriter {
    fn reply_all(replies: Vec<Reply>, result: &Result<Ack, WriteError>) {
        for (i, reply) in replies.into_iter().enumerate() {
            let r = if i == 0 {
                result.clone()
            } else {
                result.clone().map(|_| Ack::Duplicate)
            };
            let _ = reply.send(r);
        }
    }

    fn unavailable(&self, pending: Vec<Pending>, reason: &str) {
        tracing::warn!(%reason, batches = pending.len(), "ClickHouse unreachable; answering UNAVAILABLE (hosts keep the batches)");
        for p in pending {
            self.stats
                .unavailable
                .fetch_add(p.replies.len() as u64, Ordering::Relaxed);
            Self::reply_all(
                p.replies,
                &Err(WriteError::Unavailable {
                    reason: reason.to_owned(),
                }),
            );
        }
    }

    /// Writes one group (split on rejection), answers its pushes, and reports what is stored.
    async fn handle_group(
        self,
        pending: Vec<Pending>,
        mut stacks: KnownIds,
        mut frames: KnownIds,
    ) -> GroupDone {
        let keys: Vec<BatchKey> = pending.iter().map(|p| p.batch.key.clone()).collect();
        // Only what this group writes goes back as known: an id given to it may have been
        // forgotten meanwhile (KNOWN_IDS_MAX_AGE), and must not be remembered for longer.
        let (given_stacks, given_frames) = (stacks.clone(), frames.clone());
        let mut stored = Vec::new();
        let (s, f) = (&mut stacks, &mut frames);
        match self.write(&pending, s, f).await {
            Ok(already) => self.answer_stored(pending, &already, &mut stored),
            Err(Failure::Outage(reason)) => self.unavailable(pending, &reason),
            Err(Failure::Rejected(reason)) if pending.len() == 1 => {
                self.dead_letter(pending, &reason)
            }
            Err(Failure::Rejected(reason)) => {
                tracing::warn!(%reason, batches = pending.len(), "ClickHouse rejected a group; writing its batches one by one");
                let mut rest = pending.into_iter();
                while let Some(p) = rest.next() {
                    let one = vec![p];
                    match self.write(&one, s, f).await {
                        Ok(already) => self.answer_stored(one, &already, &mut stored),
                        Err(Failure::Rejected(reason)) => self.dead_letter(one, &reason),
                        Err(Failure::Outage(reason)) => {
                            let mut left = one;
                            left.extend(rest.by_ref());
                            self.unavailable(left, &reason);
                        }
                    }
                }
            }
        }
        stacks.retain(|id| !given_stacks.contains(id));
        frames.retain(|id| !given_frames.contains(id));
        GroupDone {
            keys,
            stored,
            stacks,
            frames,
        }
    }

    /// Writes the batches of `pending` not stored yet; returns the keys that were already stored.
    /// `known_stacks`/`known_frames`: ids not to write again; the ids written are added.
    async fn write(
        &self,
        pending: &[Pending],
        known_stacks: &mut KnownIds,
        known_frames: &mut KnownIds,
    ) -> Result<HashSet<BatchKey>, Failure> {
        let keys: Vec<&BatchKey> = pending.iter().map(|p| &p.batch.key).collect();
        let t = self.config.clickhouse_timeout;
        let (stored, attempted) =
            timed(t, "checking stored batches", self.store.batch_states(&keys)).await?;
        // Frames the symbol store has named since the host sent them unnamed get their names
        // here, so the batch's stacks and rollups carry them; the lock is held until the rows
        // are written (see `ResolvedNames`).
        let names = self.store.resolved_names().read().await;
        let named: Vec<Option<Batch>> = pending
            .iter()
            .map(|p| {
                needs_names(&names, &p.batch).then(|| {
                    let mut batch = p.batch.clone();
                    name_batch(&names, &mut batch);
                    batch
                })
            })
            .collect();
        let fresh: Vec<&Batch> = pending
            .iter()
            .zip(&named)
            .map(|(p, named)| named.as_ref().unwrap_or(&p.batch))
            .filter(|b| !stored.contains(&b.key))
            .collect();
        if fresh.is_empty() {
            return Ok(stored);
        }
        // An earlier attempt (here, or in a collector that was killed) may have written some
        // tables of a batch before failing: skip those tables for it. Only batches an attempt
        // started can have any (their attempt row is written before their other rows).
        let retried: Vec<&Batch> = fresh
            .iter()
            .copied()
            .filter(|b| attempted.contains(&b.key))
            .collect();
        let present: HashMap<BatchKey, PresentParts> = if retried.is_empty() {
            HashMap::new()
        } else {
            timed(
                t,
                "checking partly written batches",
                self.store.present_parts(&retried),
            )
            .await?
        };
        let outcome = timed(
            t,
            "inserting",
            self.store
                .write_batches(&fresh, &present, known_stacks, known_frames),
        )
        .await?;
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats
            .batches_stored
            .fetch_add(outcome.batches as u64, Ordering::Relaxed);
        self.stats
            .samples_stored
            .fetch_add(outcome.samples, Ordering::Relaxed);
        Ok(stored)
    }

    fn answer_stored(
        &self,
        pending: Vec<Pending>,
        already: &HashSet<BatchKey>,
        stored: &mut Vec<BatchKey>,
    ) {
        for p in pending {
            let result = if already.contains(&p.batch.key) {
                self.stats
                    .duplicates
                    .fetch_add(p.replies.len() as u64, Ordering::Relaxed);
                Ok(Ack::Duplicate)
            } else {
                Ok(Ack::Stored {
                    samples: p.batch.total_samples(),
                })
            };
            stored.push(p.batch.key);
            Self::reply_all(p.replies, &result);
        }
    }

    fn dead_letter(&self, pending: Vec<Pending>, reason: &str) {
        for p in pending {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            let kept = self.config.dead_letter_dir.as_deref().and_then(|dir| {
                match keep(dir, &p.batch.key, &p.wire, reason) {
                    Ok(path) => Some(path),
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "could not write the dead-letter file");
                        None
                    }
                }
            });
            tracing::error!(key = %p.batch.key, %reason, kept = ?kept, "ClickHouse rejected a batch; dead-lettered");
            Self::reply_all(
                p.replies,
                &Err(WriteError::Rejected {
                    reason: reason.to_owned(),
                    kept,
                }),
            );
        }
    }
}

/// A file name for `key`: its fields with anything but `[A-Za-z0-9_.-]` replaced, so a host id
/// cannot name a path outside the directory.
pub fn dead_letter_name(key: &BatchKey) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .take(128)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}-{}-{}",
        clean(&key.host_id),
        clean(&key.boot_id),
        key.sequence
    )
}

/// Writes the wire batch (protobuf) and the reason into `dir`, synced to disk; returns the
/// batch's path.
fn keep(
    dir: &Path,
    key: &BatchKey,
    wire: &pb::ProfileBatch,
    reason: &str,
) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let name = dead_letter_name(key);
    let path = dir.join(format!("{name}.pb"));
    let mut f = std::fs::File::create(&path)?;
    f.write_all(&wire.encode_to_vec())?;
    f.sync_all()?;
    let mut r = std::fs::File::create(dir.join(format!("{name}.reason")))?;
    writeln!(r, "{key}: {reason}")?;
    r.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever ids a host sends, the dead-letter name is one plain file name.
        #[test]
        fn dead_letter_names_are_plain(host in ".{0,200}", boot in ".{0,200}", seq in proptest::prelude::any::<u64>()) {
            let name = dead_letter_name(&BatchKey { host_id: host, boot_id: boot, sequence: seq });
            proptest::prop_assert!(!name.is_empty() && name.len() <= 300);
            proptest::prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            let suffix = format!("-{seq}");
            proptest::prop_assert!(name.ends_with(&suffix));
        }
    }

    /// Dead-letter names never leave the directory, whatever the host sends.
    #[test]
    fn dead_letter_names_stay_in_the_directory() {
        let key = BatchKey {
            host_id: "../../etc/passwd".into(),
            boot_id: "a/b\0c".into(),
            sequence: 7,
        };
        let name = dead_letter_name(&key);
        assert_eq!(name, "______etc_passwd-a_b_c-7");
        assert!(!name.contains('/'));
    }
}
