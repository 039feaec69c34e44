//! `fleetprof-profiler run`: sample continuously, finish a batch every interval, ship it.
//!
//! Two halves that never wait for each other:
//!
//! - the **sampling thread** (the caller's) drains and symbolizes the eBPF maps every second, as
//!   [`crate::record`] does, so short-lived processes are named while they live; every
//!   `interval` it finishes the window's [`SymbolizedProfile`] (with the window's energy) and hands
//!   it over an unbounded channel;
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
    profile::{ProfileBuilder, SymbolizedProfile},
    session::Session,
    ship::{Backoff, Disposition, HostInfo, ShipError, Shipper, ShipperConfig, classify, to_batch},
    spool::{Spool, SpoolError, batch_samples},
};

/// How often the maps are drained and symbolized.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

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

    let mut session = Session::start(
        &SamplerConfig {
            frequency_hz: config.frequency_hz,
            pids: Vec::new(),
            include_self: config.include_self,
            counts_entries: config.counts_entries,
            stack_entries: config.stack_entries,
            unwind_rows: config.unwind_rows,
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

    let sampled = sample_loop(&mut session, &config, &stop, &metrics, &tx);
    // Closing the channel tells the shipper to flush and finish.
    drop(tx);
    drop(session);
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

/// The sampling thread: drain + symbolize every second; hand over a profile every interval.
fn sample_loop(
    session: &mut Session,
    config: &DaemonConfig,
    stop: &AtomicBool,
    metrics: &Metrics,
    tx: &mpsc::UnboundedSender<SymbolizedProfile>,
) -> Result<(), DaemonError> {
    let meter = EnergyMeter::detect_with(config.powercap_dir.as_deref());
    if let Err(e) = &meter {
        tracing::info!(reason = %e, "energy unavailable on this host");
    }
    let mut window = Window::open(config.frequency_hz, meter.as_ref().ok());
    let mut next_drain = Instant::now() + DRAIN_EVERY;
    let mut window_end = Instant::now() + config.interval;
    loop {
        sleep_until_or_stopped(next_drain.min(window_end), stop);
        let stopped = stop.load(Ordering::Relaxed);
        next_drain += DRAIN_EVERY;
        let raw = session.drain()?;
        let now = Instant::now();
        // Energy and CPU time are read right at the drain, before symbolizing (which can take
        // seconds), so a window's energy covers exactly the samples drained into it.
        let next = (stopped || now >= window_end)
            .then(|| Window::open(config.frequency_hz, meter.as_ref().ok()));
        session.symbolize_into(&raw, &mut window.builder);
        if let Some(next) = next {
            let end = next.energy_start.clone();
            let profile =
                std::mem::replace(&mut window, next).finish(&meter, &end, config.frequency_hz);
            metrics
                .samples_recorded
                .fetch_add(profile.total_samples(), Ordering::Relaxed);
            metrics.add_losses(&profile.losses);
            tracing::debug!(
                samples = profile.total_samples(),
                processes = profile.processes.len(),
                "window finished"
            );
            if tx.send(profile).is_err() {
                tracing::error!("the shipping task has stopped; stopping sampling");
                return Ok(());
            }
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
            tracing::debug!(
                symbolizer = ?session.symbolizer_stats(),
                tracker = ?session.tracker_stats(),
                "sampling stopped"
            );
            return Ok(());
        }
    }
}

/// One interval being accumulated.
struct Window {
    builder: ProfileBuilder,
    /// The energy reading at the window's start, or why it failed.
    energy_start: Option<Result<EnergyReading, String>>,
}

impl Window {
    fn open(frequency_hz: u32, meter: Option<&EnergyMeter>) -> Self {
        Self {
            builder: ProfileBuilder::new(frequency_hz),
            energy_start: meter.map(|m| m.read().map_err(|e| energy_reason(&e))),
        }
    }

    /// Finishes the window; `end` is the reading that opened the next window, so consecutive
    /// windows' energy adds up with no gap.
    fn finish(
        self,
        meter: &Result<EnergyMeter, energy::EnergyError>,
        end: &Option<Result<EnergyReading, String>>,
        frequency_hz: u32,
    ) -> SymbolizedProfile {
        let report = match (meter, &self.energy_start, end) {
            (Err(e), _, _) => EnergyReport::from(e),
            (Ok(_), Some(Ok(start)), Some(Ok(end))) => energy::attribute(
                &end.since(start),
                &self.builder.samples_per_pid(),
                frequency_hz,
            ),
            (Ok(_), Some(Err(reason)), _) | (Ok(_), _, Some(Err(reason))) => {
                EnergyReport::unavailable(reason.clone())
            }
            (Ok(_), _, _) => EnergyReport::unavailable("energy counters were not read"),
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
