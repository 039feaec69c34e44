//! The single writer task: owns dedup state and the bounded in-memory buffer, groups concurrent
//! pushes into large INSERTs, and retries while ClickHouse is unreachable.
//!
//! Durability: a push is acknowledged once its batch is in ClickHouse, or — while ClickHouse is
//! unreachable — once it sits in this process's bounded buffer. **A collector crash or kill
//! loses the buffer**: those batches were acknowledged, so the hosts will not resend them. The
//! buffer only fills while ClickHouse is down; when it is full, pushes are refused with
//! RESOURCE_EXHAUSTED and the hosts keep the batches in their own spool (back-pressure, never
//! a silent drop).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::store::{Batch, BatchKey, Store};

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Batches the in-memory buffer holds while ClickHouse is unreachable. Default 10,000.
    pub buffer_max_batches: usize,
    /// Sample rows one INSERT gathers from concurrent pushes, at most. Default 500,000.
    pub max_group_rows: usize,
    /// First retry delay after a failed write; doubles up to `max_retry_delay`. Default 500 ms.
    pub retry_delay: Duration,
    /// Longest retry delay. Default 10 s.
    pub max_retry_delay: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            buffer_max_batches: 10_000,
            max_group_rows: 500_000,
            retry_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(10),
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
    /// Kept in the in-memory buffer; written when ClickHouse is back.
    Buffered {
        /// Samples in the batch.
        samples: u64,
    },
    /// Already stored (or buffered); nothing stored again.
    Duplicate,
}

/// Why a batch was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// ClickHouse is unreachable and the buffer is full.
    #[error("collector buffer full; ClickHouse unreachable: {reason}; retry later")]
    BufferFull {
        /// The last ClickHouse error.
        reason: String,
    },
    /// The writer task has stopped (the collector is shutting down).
    #[error("collector is shutting down")]
    Stopped,
}

/// Counters of the writer, for logs, tests and benches.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches written to ClickHouse.
    pub batches_stored: AtomicU64,
    /// Samples written to ClickHouse.
    pub samples_stored: AtomicU64,
    /// Duplicate pushes answered.
    pub duplicates: AtomicU64,
    /// Batches currently in the buffer.
    pub buffered: AtomicUsize,
    /// Pushes refused because the buffer was full.
    pub refused: AtomicU64,
    /// INSERT groups written.
    pub groups: AtomicU64,
}

type Reply = oneshot::Sender<Result<Ack, WriteError>>;

struct Request {
    batch: Batch,
    reply: Reply,
}

/// A cheap handle to submit batches to the writer task.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
    stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(store: Store, config: WriterConfig) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let stats = Arc::new(WriterStats::default());
        let writer = Writer {
            store,
            config: config.clone(),
            stats: stats.clone(),
            recent: RecentKeys::default(),
            known_stacks: HashSet::new(),
            known_frames: HashSet::new(),
            buffer: VecDeque::new(),
            buffered_keys: HashMap::new(),
            last_error: String::new(),
            next_retry: Instant::now(),
            delay: config.retry_delay,
        };
        let task = tokio::spawn(writer.run(rx));
        (Self { tx, stats }, task)
    }

    /// Submits a validated batch and waits until it is stored, buffered, or refused.
    pub async fn submit(&self, batch: Batch) -> Result<Ack, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { batch, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        rx.await.map_err(|_| WriteError::Stopped)?
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
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

/// A batch waiting in the buffer.
struct Buffered {
    batch: Batch,
    /// A write including it failed, so some of its rows may have landed.
    attempted: bool,
}

/// A batch of the current group and the pushes waiting on it (a retry may arrive while the
/// first attempt is still in the group).
struct Pending {
    batch: Batch,
    replies: Vec<Reply>,
}

struct Writer {
    store: Store,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    recent: RecentKeys,
    known_stacks: HashSet<u64>,
    known_frames: HashSet<u64>,
    buffer: VecDeque<Buffered>,
    /// Keys in `buffer` (value unused; a map for `entry`).
    buffered_keys: HashMap<BatchKey, ()>,
    last_error: String,
    next_retry: Instant,
    delay: Duration,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        loop {
            let retry_at = self.next_retry;
            tokio::select! {
                request = rx.recv() => {
                    let Some(first) = request else { break };
                    let mut group = vec![first];
                    let mut rows = group[0].batch.samples.len();
                    while rows < self.config.max_group_rows {
                        match rx.try_recv() {
                            Ok(r) => { rows += r.batch.samples.len(); group.push(r); }
                            Err(_) => break,
                        }
                    }
                    self.handle_group(group).await;
                }
                () = tokio::time::sleep_until(retry_at), if !self.buffer.is_empty() => {
                    self.flush_buffer().await;
                }
            }
        }
        // Shutting down: one last try to write what is buffered.
        if !self.buffer.is_empty() {
            self.flush_buffer().await;
            if !self.buffer.is_empty() {
                tracing::error!(
                    batches = self.buffer.len(),
                    error = %self.last_error,
                    "collector stopping with batches still buffered; they are lost"
                );
            }
        }
    }

    fn is_duplicate(&self, key: &BatchKey) -> bool {
        self.recent.contains(key) || self.buffered_keys.contains_key(key)
    }

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

    fn failed(&mut self, error: String) {
        tracing::warn!(%error, retry_in = ?self.delay, "ClickHouse write failed; buffering");
        self.last_error = error;
        self.next_retry = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(self.config.max_retry_delay);
    }

    fn succeeded(&mut self) {
        self.delay = self.config.retry_delay;
    }

    /// Puts a batch into the buffer (acked as Buffered) or refuses it when full.
    fn buffer_or_refuse(&mut self, pending: Pending, attempted: bool) {
        let result = if self.buffer.len() < self.config.buffer_max_batches {
            let samples = pending.batch.total_samples();
            self.buffered_keys.insert(pending.batch.key.clone(), ());
            self.buffer.push_back(Buffered {
                batch: pending.batch,
                attempted,
            });
            self.stats
                .buffered
                .store(self.buffer.len(), Ordering::Relaxed);
            Ok(Ack::Buffered { samples })
        } else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            Err(WriteError::BufferFull {
                reason: self.last_error.clone(),
            })
        };
        Self::reply_all(pending.replies, &result);
    }

    async fn handle_group(&mut self, group: Vec<Request>) {
        // Collapse retries within the group; answer known duplicates at once.
        let mut pending: Vec<Pending> = Vec::with_capacity(group.len());
        let mut index: HashMap<BatchKey, usize> = HashMap::new();
        for Request { batch, reply } in group {
            if self.is_duplicate(&batch.key) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Ok(Ack::Duplicate));
            } else if let Some(&i) = index.get(&batch.key) {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                pending[i].replies.push(reply);
            } else {
                index.insert(batch.key.clone(), pending.len());
                pending.push(Pending {
                    batch,
                    replies: vec![reply],
                });
            }
        }
        if pending.is_empty() {
            return;
        }
        // While batches wait in the buffer, ClickHouse was down at the last try: flush first
        // (when due), so batches are written in arrival order and nothing overtakes the buffer.
        if !self.buffer.is_empty() {
            if Instant::now() >= self.next_retry {
                self.flush_buffer().await;
            }
            if !self.buffer.is_empty() {
                for p in pending {
                    self.buffer_or_refuse(p, false);
                }
                return;
            }
        }
        let keys: Vec<&BatchKey> = pending.iter().map(|p| &p.batch.key).collect();
        let stored = match self.store.stored_keys(&keys).await {
            Ok(stored) => stored,
            Err(e) => {
                self.failed(e.to_string());
                for p in pending {
                    self.buffer_or_refuse(p, false);
                }
                return;
            }
        };
        let (dups, fresh): (Vec<Pending>, Vec<Pending>) = pending
            .into_iter()
            .partition(|p| stored.contains(&p.batch.key));
        for p in dups {
            self.stats
                .duplicates
                .fetch_add(p.replies.len() as u64, Ordering::Relaxed);
            self.recent.insert(p.batch.key.clone());
            Self::reply_all(p.replies, &Ok(Ack::Duplicate));
        }
        if fresh.is_empty() {
            return;
        }
        let batches: Vec<&Batch> = fresh.iter().map(|p| &p.batch).collect();
        let result = self
            .store
            .write_batches(
                &batches,
                &HashSet::new(),
                &mut self.known_stacks,
                &mut self.known_frames,
            )
            .await;
        match result {
            Ok(outcome) => {
                self.succeeded();
                self.stats.groups.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .batches_stored
                    .fetch_add(outcome.batches as u64, Ordering::Relaxed);
                self.stats
                    .samples_stored
                    .fetch_add(outcome.samples, Ordering::Relaxed);
                for p in fresh {
                    let samples = p.batch.total_samples();
                    self.recent.insert(p.batch.key);
                    Self::reply_all(p.replies, &Ok(Ack::Stored { samples }));
                }
            }
            Err(e) => {
                self.failed(e.to_string());
                for p in fresh {
                    self.buffer_or_refuse(p, true);
                }
            }
        }
    }

    /// Writes the buffer in groups, oldest first, until it is empty or a write fails.
    async fn flush_buffer(&mut self) {
        while !self.buffer.is_empty() {
            let mut rows = 0;
            let mut n = 0;
            while n < self.buffer.len() && (n == 0 || rows < self.config.max_group_rows) {
                rows += self.buffer[n].batch.samples.len();
                n += 1;
            }
            let keys: Vec<&BatchKey> = self.buffer.iter().take(n).map(|b| &b.batch.key).collect();
            let stored = match self.store.stored_keys(&keys).await {
                Ok(s) => s,
                Err(e) => return self.failed(e.to_string()),
            };
            let mut skip_samples = HashSet::new();
            let mut error = None;
            for b in self
                .buffer
                .iter()
                .take(n)
                .filter(|b| b.attempted && !stored.contains(&b.batch.key))
            {
                match self.store.samples_present(&b.batch).await {
                    Ok(true) => {
                        skip_samples.insert(b.batch.key.clone());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(e) = error {
                return self.failed(e);
            }
            let batches: Vec<&Batch> = self
                .buffer
                .iter()
                .take(n)
                .map(|b| &b.batch)
                .filter(|b| !stored.contains(&b.key))
                .collect();
            if !batches.is_empty() {
                let result = self
                    .store
                    .write_batches(
                        &batches,
                        &skip_samples,
                        &mut self.known_stacks,
                        &mut self.known_frames,
                    )
                    .await;
                match result {
                    Ok(outcome) => {
                        self.stats.groups.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .batches_stored
                            .fetch_add(outcome.batches as u64, Ordering::Relaxed);
                        self.stats
                            .samples_stored
                            .fetch_add(outcome.samples, Ordering::Relaxed);
                    }
                    Err(e) => {
                        for b in self.buffer.iter_mut().take(n) {
                            b.attempted = true;
                        }
                        return self.failed(e.to_string());
                    }
                }
            }
            for _ in 0..n {
                if let Some(b) = self.buffer.pop_front() {
                    self.buffered_keys.remove(&b.batch.key);
                    self.recent.insert(b.batch.key);
                }
            }
            self.stats
                .buffered
                .store(self.buffer.len(), Ordering::Relaxed);
            self.succeeded();
            tracing::info!(
                batches = n,
                left = self.buffer.len(),
                "flushed buffered batches to ClickHouse"
            );
        }
    }
}
