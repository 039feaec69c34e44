//! `fleetprof-profiler run`: sample continuously, finish a batch every interval, ship it.
//!
//! Two halves that never wait for each other:
//!
//! - the **sampling thread** drains the eBPF maps every second, reads the energy counters at each
//!   window's end, and hands each drain to
//! - the **naming thread** (the caller's), which symbolizes the drains while the tracker still holds what their
//!   processes mapped, and every `interval` finishes the window's [`SymbolizedProfile`] (with the
//!   window's energy) and hands it over an unbounded channel. Naming a host full of large C++
//!   binaries can take seconds; on its own thread it never delays a drain, so every sample keeps
//!   the time it was taken. When naming falls [`MAX_PENDING_DRAINS`] behind, the sampling thread
//!   waits for it (the kernel's maps keep counting meanwhile; what they cannot hold is counted);
//! - the **shipping task** (tokio) numbers each profile, converts it ([`crate::ship::to_batch`]),
//!   writes it to the [`Spool`], and pushes the spool's batches oldest first. A failure leaves the
//!   batch in the spool and waits an exponential, jittered backoff; a refused batch goes to
//!   `rejected/`. Network trouble therefore only grows the spool, never stalls sampling.
//!
//! On SIGTERM or SIGINT (or when `stop` is set) sampling stops, the last partial window is
//! finished and shipped, the shipper tries for up to `shutdown_timeout` to empty the spool, and
//! [`run`] returns a [`DaemonSummary`]; what is still unshipped stays in the spool for the next start.
//!
//! ```no_run
//! use std::sync::{Arc, atomic::AtomicBool};
//! use fleetprof_profiler::{config::DaemonConfig, daemon::{run, DaemonOptions}};
//! let config = DaemonConfig { collector: "http://collector:4317".into(), ..Default::default() };
//! let summary = run(DaemonOptions { config, resend_acked_every: None }, Arc::new(AtomicBool::new(false)))?;
//! eprintln!("{summary}");
//! # Ok::<(), fleetprof_profiler::daemon::DaemonError>(())
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use fleetprof_proto::fleetprof::v1 as pb;
use tokio::sync::mpsc;

use crate::{
    bpf::{BpfError, SamplerConfig},
    config::{ConfigError, DaemonConfig},
    energy::{self, EnergyMeter, EnergyReading, EnergyReport},
    metrics::{self, Metrics},
    profile::{ProfileBuilder, RawProfile, SymbolizedProfile},
    session::{Sampling, Session},
    ship::{Backoff, Disposition, HostInfo, ShipError, Shipper, ShipperConfig, classify, to_batch},
    spool::{Spool, SpoolError, batch_samples},
    symbolize::Symbolizer,
};

/// How often the maps are drained and symbolized.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// Drains the naming thread may fall behind before the sampling thread waits for it.
pub const MAX_PENDING_DRAINS: usize = 30;

/// What to run.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The configuration (file and flags merged).
    pub config: DaemonConfig,
    /// For testing: after every Nth acknowledged batch, push it again, as if the ack had been
    /// lost, to check that the collector stores it once. Default: off.
    pub resend_acked_every: Option<u64>,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The sampler could not start or be drained.
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// The host identity or the collector client could not be set up.
    #[error(transparent)]
    Ship(#[from] ShipError),
    /// The spool could not be opened or written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The async runtime or the metrics listener could not start.
    #[error("cannot {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The shipping task panicked or was cancelled.
    #[error("the shipping task failed: {0}")]
    ShipperTask(String),
    /// The sampling thread panicked.
    #[error("the sampling thread panicked")]
    SamplingThread,
}

/// Totals of one daemon run, for the final log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DaemonSummary {
    /// Samples recorded.
    pub samples_recorded: u64,
    /// Samples the collector acknowledged as stored (a duplicate ack of a lost-ack retry counts
    /// the batch's samples; a test re-send of an acknowledged batch does not count again).
    pub samples_acked: u64,
    /// Batches acknowledged.
    pub batches_sent: u64,
    /// Batches left in the spool at exit.
    pub batches_spooled: u64,
    /// Batches dropped from the full spool.
    pub batches_dropped: u64,
    /// Samples in them.
    pub samples_dropped: u64,
    /// Batches refused by the collector (kept in `rejected/`).
    pub batches_rejected: u64,
    /// Test re-sends of acknowledged batches that the collector answered as duplicates.
    pub resends_deduplicated: u64,
    /// Test re-sends the collector stored again (an idempotency bug).
    pub resends_stored_again: u64,
}

impl std::fmt::Display for DaemonSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shipped {} samples in {} batches ({} spooled, {} dropped, {} rejected); recorded {} samples",
            self.samples_acked,
            self.batches_sent,
            self.batches_spooled,
            self.batches_dropped,
            self.batches_rejected,
            self.samples_recorded,
        )?;
        if self.resends_deduplicated + self.resends_stored_again > 0 {
            write!(
                f,
                "; test re-sends: {} deduplicated, {} stored again",
                self.resends_deduplicated, self.resends_stored_again
            )?;
        }
        Ok(())
    }
}

/// Runs the daemon until SIGTERM/SIGINT or until `stop` is set; see the module documentation.
pub fn run(options: DaemonOptions, stop: Arc<AtomicBool>) -> Result<DaemonSummary, DaemonError> {
    let config = options.config;
    config.validate()?;
    let host = HostInfo::detect()?;
    let spool = Spool::open(&config.spool_dir, config.spool_max_bytes, &host.boot_id)?;
    if !spool.is_empty() {
        tracing::info!(
            batches = spool.len(),
            bytes = spool.pending_bytes(),
            "replaying the spool"
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fleetprof-ship")
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Io {
            what: "start the async runtime".into(),
            source,
        })?;
    // tonic's lazy channel spawns its connection task on the runtime it is created in.
    let shipper = {
        let _runtime = runtime.enter();
        Shipper::new(&ShipperConfig {
            url: config.collector.clone(),
            token_file: config.token_file.clone(),
            tls_ca_file: config.tls_ca_file.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
        })?
    };
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = config.metrics_listen {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| DaemonError::Io {
                what: format!("listen for metrics on {addr}"),
                source,
            })?;
        let metrics = metrics.clone();
        runtime.spawn(async move {
            if let Err(e) = metrics::serve(listener, metrics).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    runtime.spawn(stop_on_signals(stop.clone()));

    let session = Session::start(
        &SamplerConfig {
            frequency_hz: config.frequency_hz,
            pids: Vec::new(),
            cgroup: None,
            include_self: config.include_self,
            counts_entries: config.counts_entries,
            stack_entries: config.stack_entries,
            unwind_rows: config.unwind_rows,
            unwind_evict_idle_after: config.unwind_evict_idle_after,
            frame_pointers_only: !config.unwind_tables,
        },
        config.services.clone(),
    )?;
    tracing::info!(
        collector = %config.collector,
        interval = ?config.interval,
        frequency_hz = config.frequency_hz,
        cpus = session.sampler().cpus().len(),
        host_id = %host.host_id,
        boot_id = %host.boot_id,
        "profiling"
    );

    let (tx, rx) = mpsc::unbounded_channel();
    let ship_loop = ShipLoop {
        spool,
        shipper,
        host: host.identity(),
        backoff: Backoff::new(config.retry_initial_backoff, config.retry_max_backoff),
        metrics: metrics.clone(),
        resend_acked_every: options.resend_acked_every.filter(|&n| n > 0),
        acked_batches: 0,
        summary: DaemonSummary::default(),
    };
    let shutdown_timeout = config.shutdown_timeout;
    let shipping = runtime.spawn(ship_loop.run(rx, shutdown_timeout));

    let (mut sampling, symbolizer) = session.split();
    let meter = EnergyMeter::detect_with(config.powercap_dir.as_deref());
    let unavailable = match &meter {
        Ok(_) => None,
        Err(e) => {
            tracing::info!(reason = %e, "energy unavailable on this host");
            Some(EnergyReport::from(e))
        }
    };
    let (drains, pending) = std::sync::mpsc::sync_channel(MAX_PENDING_DRAINS);
    let naming = Naming {
        symbolizer,
        frequency_hz: config.frequency_hz,
        unavailable,
        metrics: metrics.clone(),
        profiles: tx,
    };
    let first_reading = energy_mark(&meter);
    // blazesym's symbolizer stays on the thread that made it (it is not `Send`): the sampling
    // half moves to a thread of its own instead.
    let sampling_thread = {
        let (config, stop, metrics) = (config.clone(), stop.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("fleetprof-sample".into())
            .spawn(move || {
                let sampled = sample_loop(&mut sampling, &config, &stop, &meter, &metrics, &drains);
                // Closing the drains' channel makes the naming loop finish the last window and
                // close the profiles' channel, which tells the shipper to flush and finish.
                drop(drains);
                drop(sampling);
                sampled
            })
            .map_err(|source| DaemonError::Io {
                what: "start the sampling thread".into(),
                source,
            })?
    };
    naming.run(pending, first_reading);
    let sampled = sampling_thread
        .join()
        .unwrap_or_else(|_| Err(DaemonError::SamplingThread));
    let shipped = runtime.block_on(shipping);
    runtime.shutdown_timeout(Duration::from_secs(1));
    let mut summary = match shipped {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(DaemonError::ShipperTask(e.to_string())),
    };
    sampled?;
    summary.samples_recorded = metrics.samples_recorded.load(Ordering::Relaxed);
    Ok(summary)
}

/// Sets `stop` at the first SIGTERM or SIGINT.
async fn stop_on_signals(stop: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing the last window"),
        _ = int.recv() => tracing::info!("SIGINT: finishing the last window"),
    }
    stop.store(true, Ordering::Relaxed);
}

/// One drain on its way from the sampling thread to the naming thread.
struct Drained {
    raw: RawProfile,
    /// On a window's last drain: the energy reading taken right after it, which ends this window
    /// and starts the next.
    closes_window: Option<EnergyMark>,
}

/// An energy reading at a window's edge: `None` where the host has no meter, or why it failed.
type EnergyMark = Option<Result<EnergyReading, String>>;

fn energy_mark(meter: &Result<EnergyMeter, energy::EnergyError>) -> EnergyMark {
    meter
        .as_ref()
        .ok()
        .map(|m| m.read().map_err(|e| energy_reason(&e)))
}

/// The sampling thread: drain every second; mark every interval's last drain with the energy
/// reading that ends it.
fn sample_loop(
    sampling: &mut Sampling,
    config: &DaemonConfig,
    stop: &AtomicBool,
    meter: &Result<EnergyMeter, energy::EnergyError>,
    metrics: &Metrics,
    drains: &std::sync::mpsc::SyncSender<Drained>,
) -> Result<(), DaemonError> {
    let mut next_drain = Instant::now() + DRAIN_EVERY;
    let mut window_end = Instant::now() + config.interval;
    loop {
        sleep_until_or_stopped(next_drain.min(window_end), stop);
        let stopped = stop.load(Ordering::Relaxed);
        next_drain += DRAIN_EVERY;
        let raw = sampling.drain()?;
        metrics.set_tracker(&sampling.tracker_stats());
        let now = Instant::now();
        // Energy is read right at the drain, so a window's energy covers exactly its samples.
        let closes_window = (stopped || now >= window_end).then(|| energy_mark(meter));
        let closing = closes_window.is_some();
        if drains.send(Drained { raw, closes_window }).is_err() {
            tracing::error!("the naming thread has stopped; stopping sampling");
            return Ok(());
        }
        if closing {
            // Fixed cadence; after a long stall (suspend), start afresh rather than catch up.
            window_end += config.interval;
            if window_end <= now {
                window_end = now + config.interval;
            }
        }
        if next_drain <= now {
            next_drain = now + DRAIN_EVERY;
        }
        if stopped {
            tracing::debug!(tracker = ?sampling.tracker_stats(), "sampling stopped");
            return Ok(());
        }
    }
}

/// The naming thread's state.
struct Naming {
    symbolizer: Symbolizer,
    frequency_hz: u32,
    /// Why there is no energy, when the host has no meter.
    unavailable: Option<EnergyReport>,
    metrics: Arc<Metrics>,
    profiles: mpsc::UnboundedSender<SymbolizedProfile>,
}

impl Naming {
    /// Names every drain into its window and hands over each finished window, until the
    /// sampling thread closes the channel.
    fn run(mut self, drains: std::sync::mpsc::Receiver<Drained>, first_reading: EnergyMark) {
        let mut window = Window::open(self.frequency_hz, first_reading);
        for drained in drains {
            self.symbolizer
                .symbolize_into(&drained.raw, &mut window.builder);
            let Some(end) = drained.closes_window else {
                continue;
            };
            let next = Window::open(self.frequency_hz, end.clone());
            let profile = std::mem::replace(&mut window, next).finish(
                self.unavailable.as_ref(),
                &end,
                self.frequency_hz,
            );
            if !self.hand_over(profile) {
                tracing::error!("the shipping task has stopped; naming stops");
                return;
            }
        }
        // The sampling thread stopped without closing the window (a failed drain): keep what it
        // holds.
        let profile = window.finish(self.unavailable.as_ref(), &None, self.frequency_hz);
        if profile.total_samples() > 0 {
            self.hand_over(profile);
        }
        tracing::debug!(symbolizer = ?self.symbolizer.stats(), "naming stopped");
    }

    /// Counts a finished window and passes it to the shipper; false when the shipper is gone.
    fn hand_over(&self, profile: SymbolizedProfile) -> bool {
        self.metrics
            .samples_recorded
            .fetch_add(profile.total_samples(), Ordering::Relaxed);
        self.metrics.add_losses(&profile.losses);
        tracing::debug!(
            samples = profile.total_samples(),
            processes = profile.processes.len(),
            "window finished"
        );
        self.profiles.send(profile).is_ok()
    }
}

/// One interval being accumulated.
struct Window {
    builder: ProfileBuilder,
    /// The energy reading at the window's start, or why it failed.
    energy_start: EnergyMark,
}

impl Window {
    fn open(frequency_hz: u32, energy_start: EnergyMark) -> Self {
        Self {
            builder: ProfileBuilder::new(frequency_hz),
            energy_start,
        }
    }

    /// Finishes the window; `end` is the reading that opened the next window, so consecutive
    /// windows' energy adds up with no gap. `unavailable` says why a host without a meter has none.
    fn finish(
        self,
        unavailable: Option<&EnergyReport>,
        end: &EnergyMark,
        frequency_hz: u32,
    ) -> SymbolizedProfile {
        let report = match (unavailable, &self.energy_start, end) {
            (Some(report), _, _) => report.clone(),
            (None, Some(Ok(start)), Some(Ok(end))) => energy::attribute(
                &end.since(start),
                &self.builder.samples_per_pid(),
                frequency_hz,
            ),
            (None, Some(Err(reason)), _) | (None, _, Some(Err(reason))) => {
                EnergyReport::unavailable(reason.clone())
            }
            (None, _, _) => EnergyReport::unavailable("energy counters were not read"),
        };
        self.builder.finish(report)
    }
}

/// The error and its causes as one sentence, as [`EnergyReport::Unavailable`] words it.
fn energy_reason(e: &energy::EnergyError) -> String {
    match EnergyReport::from(e) {
        EnergyReport::Unavailable { reason } => reason,
        EnergyReport::Measured { .. } => e.to_string(),
    }
}

fn sleep_until_or_stopped(deadline: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// What one push attempt did.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// Nothing to ship.
    Idle,
    /// Acknowledged and removed from the spool.
    Shipped,
    /// Refused for good and moved to `rejected/`.
    Rejected,
    /// Failed; stays in the spool.
    Failed,
}

/// The shipping task's state.
struct ShipLoop {
    spool: Spool,
    shipper: Shipper,
    host: pb::HostIdentity,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    resend_acked_every: Option<u64>,
    acked_batches: u64,
    summary: DaemonSummary,
}

impl ShipLoop {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<SymbolizedProfile>,
        shutdown_timeout: Duration,
    ) -> Result<DaemonSummary, SpoolError> {
        let mut next_attempt = tokio::time::Instant::now();
        loop {
            let pending = !self.spool.is_empty();
            tokio::select! {
                biased;
                profile = rx.recv() => match profile {
                    Some(profile) => self.accept(&profile)?,
                    None => break,
                },
                () = tokio::time::sleep_until(next_attempt), if pending => {
                    next_attempt = match self.ship_oldest().await? {
                        Attempt::Failed => tokio::time::Instant::now() + self.backoff.next_delay(),
                        _ => tokio::time::Instant::now(),
                    };
                }
            }
        }
        // Shutdown: the last window is in the spool; give the collector a bounded chance.
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        while !self.spool.is_empty() {
            match tokio::time::timeout_at(deadline, self.ship_oldest()).await {
                Err(_) => break,
                Ok(attempt) => {
                    if attempt? == Attempt::Failed {
                        let wait = tokio::time::Instant::now() + self.backoff.next_delay();
                        if wait >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(wait).await;
                    }
                }
            }
        }
        let stats = self.spool.stats();
        self.summary.batches_spooled = stats.pending_batches;
        self.summary.batches_dropped = stats.dropped_batches;
        self.summary.samples_dropped = stats.dropped_samples;
        self.summary.batches_rejected = stats.rejected_batches;
        if stats.pending_batches > 0 {
            tracing::warn!(
                batches = stats.pending_batches,
                dir = %self.spool.dir().display(),
                "collector not reachable in time; batches stay in the spool for the next start"
            );
        }
        Ok(self.summary)
    }

    /// Numbers, converts and spools a finished window.
    fn accept(&mut self, profile: &SymbolizedProfile) -> Result<(), SpoolError> {
        let sequence = self.spool.next_sequence()?;
        let mut batch = to_batch(profile, &self.host, sequence);
        self.spool.push(&mut batch)?;
        self.sync_spool_metrics();
        Ok(())
    }

    fn sync_spool_metrics(&self) {
        let stats = self.spool.stats();
        let m = &self.metrics;
        m.spool_batches
            .store(stats.pending_batches, Ordering::Relaxed);
        m.spool_bytes.store(stats.pending_bytes, Ordering::Relaxed);
        m.spool_io_errors.store(stats.io_errors, Ordering::Relaxed);
        m.batches_spooled
            .store(stats.spooled_batches, Ordering::Relaxed);
        m.batches_dropped
            .store(stats.dropped_batches, Ordering::Relaxed);
        m.samples_dropped
            .store(stats.dropped_samples, Ordering::Relaxed);
        m.batches_rejected
            .store(stats.rejected_batches, Ordering::Relaxed);
    }

    /// Pushes the spool's oldest batch once.
    async fn ship_oldest(&mut self) -> Result<Attempt, SpoolError> {
        let Some((key, batch)) = self.spool.oldest()? else {
            return Ok(Attempt::Idle);
        };
        let samples = batch_samples(&batch);
        let attempt = match self.shipper.push(&batch).await {
            Ok(response) => {
                // A duplicate answers a retry whose first ack was lost: those samples are stored.
                let acked = if response.duplicate {
                    samples
                } else {
                    response.samples_stored
                };
                if response.duplicate {
                    self.metrics
                        .batches_duplicate
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.metrics
                    .samples_shipped
                    .fetch_add(samples, Ordering::Relaxed);
                self.metrics
                    .samples_acked
                    .fetch_add(acked, Ordering::Relaxed);
                self.metrics.batches_sent.fetch_add(1, Ordering::Relaxed);
                self.metrics.mark_success();
                self.summary.samples_acked += acked;
                self.summary.batches_sent += 1;
                if self.backoff.failures() > 0 {
                    tracing::info!(
                        failures = self.backoff.failures(),
                        "collector reachable again"
                    );
                }
                self.backoff.reset();
                self.spool.remove(&key)?;
                tracing::debug!(
                    sequence = key.sequence,
                    samples,
                    acked,
                    duplicate = response.duplicate,
                    "batch shipped"
                );
                self.acked_batches += 1;
                if let Some(n) = self.resend_acked_every
                    && self.acked_batches.is_multiple_of(n)
                {
                    self.resend(&batch).await;
                }
                Attempt::Shipped
            }
            Err(ShipError::Status(status)) => match classify(status.code()) {
                Disposition::Reject => {
                    tracing::error!(
                        sequence = key.sequence,
                        code = ?status.code(),
                        collector_says = %status.message(),
                        kept_in = %self.spool.dir().join("rejected").display(),
                        "the collector refused this batch and will not accept it on retry; kept for inspection"
                    );
                    self.spool.reject(&key)?;
                    Attempt::Rejected
                }
                Disposition::Retry => {
                    self.metrics.batches_failed.fetch_add(1, Ordering::Relaxed);
                    let failures = self.backoff.failures() + 1;
                    if status.code() == tonic::Code::Unauthenticated
                        || status.code() == tonic::Code::PermissionDenied
                    {
                        tracing::error!(collector_says = %status.message(), "the collector refused our credentials; check --token-file (batches wait in the spool)");
                    } else if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(code = ?status.code(), message = %status.message(), failures, spooled = self.spool.len(), "push failed; will retry with backoff");
                    } else {
                        tracing::debug!(code = ?status.code(), message = %status.message(), failures, "push failed");
                    }
                    Attempt::Failed
                }
            },
            Err(other) => {
                self.metrics.batches_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %other, "push failed; will retry");
                Attempt::Failed
            }
        };
        self.sync_spool_metrics();
        Ok(attempt)
    }

    /// Test-only: pushes an acknowledged batch again, as after a lost ack.
    async fn resend(&mut self, batch: &pb::ProfileBatch) {
        match self.shipper.push(batch).await {
            Ok(r) if r.duplicate => {
                self.summary.resends_deduplicated += 1;
                tracing::info!(
                    sequence = batch.sequence,
                    "re-sent an acknowledged batch (testing): collector answered duplicate"
                );
            }
            Ok(r) => {
                self.summary.resends_stored_again += 1;
                tracing::error!(
                    sequence = batch.sequence,
                    stored = r.samples_stored,
                    "re-sent an acknowledged batch (testing): the collector stored it AGAIN (not idempotent)"
                );
            }
            Err(e) => {
                tracing::warn!(sequence = batch.sequence, error = %e, "re-send of an acknowledged batch (testing) failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The final line names acked samples, batches, spooled and dropped counts.
    #[test]
    fn summary_line() {
        let s = DaemonSummary {
            samples_acked: 120,
            batches_sent: 4,
            batches_spooled: 1,
            batches_dropped: 2,
            ..Default::default()
        };
        let line = s.to_string();
        assert!(
            line.starts_with("shipped 120 samples in 4 batches (1 spooled, 2 dropped"),
            "{line}"
        );
        assert!(!line.contains("re-sends"));
    }
}
