//! The daemon's own health: counters in [`Metrics`], served in the Prometheus text format on
//! `--metrics-listen` (`/metrics`) with a liveness probe (`/healthz`).
//!
//! The exposition format is a few lines of text, so it is written here rather than pulled in
//! with a crate; the HTTP side is a minimal HTTP/1.0-style responder on a tokio listener (one
//! request per connection), which is all Prometheus and a health checker need.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fleetprof_profiler::metrics::{Metrics, serve};
//! let metrics = Arc::new(Metrics::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
//! tokio::spawn(serve(listener, metrics.clone()));
//! # Ok(()) }
//! ```

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{profile::LossCounters, record::peak_rss_bytes, tracker::TrackerStats};

/// Why the metrics endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listener failed to accept.
    #[error("metrics listener failed")]
    Accept(#[source] std::io::Error),
}

/// Counters shared by the sampling thread, the shipper and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Samples recorded by the sampler.
    pub samples_recorded: AtomicU64,
    /// Samples in batches pushed (each push counted once, retries included).
    pub samples_shipped: AtomicU64,
    /// Samples the collector acknowledged as stored (including duplicates of stored batches).
    pub samples_acked: AtomicU64,
    /// Batches acknowledged.
    pub batches_sent: AtomicU64,
    /// Pushes that failed (each failed attempt).
    pub batches_failed: AtomicU64,
    /// Batches written to the spool.
    pub batches_spooled: AtomicU64,
    /// Batches dropped from the full spool.
    pub batches_dropped: AtomicU64,
    /// Samples in the dropped batches.
    pub samples_dropped: AtomicU64,
    /// Batches the collector refused (moved to `rejected/`).
    pub batches_rejected: AtomicU64,
    /// Acks that said the batch had already been stored.
    pub batches_duplicate: AtomicU64,
    /// Batches waiting in the spool.
    pub spool_batches: AtomicU64,
    /// Bytes waiting in the spool.
    pub spool_bytes: AtomicU64,
    /// Disk errors the spool survived (a failed write, read or delete).
    pub spool_io_errors: AtomicU64,
    /// Unix seconds of the last acknowledged push; 0 before the first.
    pub last_success_unix_seconds: AtomicU64,
    losses: [AtomicU64; LOSS_FIELDS.len()],
    /// The tracker's and unwinder's figures, in [`TRACKER_FIELDS`] order.
    tracker: [AtomicU64; TRACKER_FIELDS.len()],
}

/// The tracker's and unwinder's figures: (name, type, help), in [`tracker_values`] order.
const TRACKER_FIELDS: [(&str, &str, &str); 10] = [
    (
        "processes_captured_total",
        "counter",
        "Processes captured (first sample, exec or new code).",
    ),
    (
        "process_capture_failures_total",
        "counter",
        "Captures that failed (the process exited first).",
    ),
    (
        "unwind_processes",
        "gauge",
        "Processes whose mappings the eBPF unwinder knows.",
    ),
    (
        "unwind_tables",
        "gauge",
        "Modules with an unwind table loaded.",
    ),
    (
        "unwind_rows_used",
        "gauge",
        "Rows in use in the unwinder's row array.",
    ),
    (
        "unwind_rows_capacity",
        "gauge",
        "Capacity of the row array (unwind_rows).",
    ),
    (
        "unwind_tables_dropped_total",
        "counter",
        "Tables not loaded because the row array was full (walked by frame pointers; raise unwind_rows).",
    ),
    (
        "unwind_tables_evicted_total",
        "counter",
        "Tables evicted because no process mapped them any more.",
    ),
    (
        "unwind_idle_processes_evicted_total",
        "counter",
        "Processes not sampled for unwind_evict_idle_after whose tables made room for a sampled process's.",
    ),
    (
        "unwind_table_errors_total",
        "counter",
        "Files whose call-frame information could not be read.",
    ),
];

fn tracker_values(t: &TrackerStats) -> [u64; TRACKER_FIELDS.len()] {
    [
        t.captures,
        t.capture_failures,
        t.unwind.processes,
        t.unwind.tables_loaded,
        t.unwind.rows_used,
        t.unwind.rows_capacity,
        t.unwind.tables_dropped,
        t.unwind.tables_evicted,
        t.unwind.idle_processes_evicted,
        t.unwind.table_errors,
    ]
}

/// Names of the loss counters, in [`loss_values`] order.
const LOSS_FIELDS: [&str; 11] = [
    "events",
    "idle",
    "filtered",
    "recorded",
    "user_stack_unavailable",
    "kernel_stack_unavailable",
    "stack_collisions",
    "stack_other_errors",
    "counts_map_full",
    "unsymbolized_frames",
    "truncated_stacks",
];

fn loss_values(l: &LossCounters) -> [u64; LOSS_FIELDS.len()] {
    [
        l.events,
        l.idle,
        l.filtered,
        l.recorded,
        l.user_stack_unavailable,
        l.kernel_stack_unavailable,
        l.stack_collisions,
        l.stack_other_errors,
        l.counts_map_full,
        l.unsymbolized_frames,
        l.truncated_stacks,
    ]
}

impl Metrics {
    /// Adds a drained window's loss counters.
    pub fn add_losses(&self, losses: &LossCounters) {
        for (counter, value) in self.losses.iter().zip(loss_values(losses)) {
            counter.fetch_add(value, Ordering::Relaxed);
        }
    }

    /// Replaces the tracker's and unwinder's figures with the latest.
    pub fn set_tracker(&self, stats: &TrackerStats) {
        for (gauge, value) in self.tracker.iter().zip(tracker_values(stats)) {
            gauge.store(value, Ordering::Relaxed);
        }
    }

    /// Records an acknowledged push now.
    pub fn mark_success(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.last_success_unix_seconds.store(now, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP fleetprof_profiler_{name} {help}");
            let _ = writeln!(out, "# TYPE fleetprof_profiler_{name} {kind}");
            let _ = writeln!(out, "fleetprof_profiler_{name} {value}");
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "samples_recorded_total",
            "counter",
            "Samples recorded by the eBPF sampler.",
            get(&self.samples_recorded),
        );
        metric(
            "samples_shipped_total",
            "counter",
            "Samples in pushed batches, one count per push attempt that reached the collector.",
            get(&self.samples_shipped),
        );
        metric(
            "samples_acked_total",
            "counter",
            "Samples the collector acknowledged as stored.",
            get(&self.samples_acked),
        );
        metric(
            "batches_sent_total",
            "counter",
            "Batches acknowledged by the collector.",
            get(&self.batches_sent),
        );
        metric(
            "batches_failed_total",
            "counter",
            "Push attempts that failed (retried later).",
            get(&self.batches_failed),
        );
        metric(
            "batches_spooled_total",
            "counter",
            "Batches written to the on-disk spool.",
            get(&self.batches_spooled),
        );
        metric(
            "batches_dropped_total",
            "counter",
            "Batches dropped because the spool was full.",
            get(&self.batches_dropped),
        );
        metric(
            "samples_dropped_total",
            "counter",
            "Samples in batches dropped because the spool was full.",
            get(&self.samples_dropped),
        );
        metric(
            "batches_rejected_total",
            "counter",
            "Batches the collector refused as malformed or of an unknown version (kept in rejected/).",
            get(&self.batches_rejected),
        );
        metric(
            "batches_duplicate_total",
            "counter",
            "Acks saying the batch had already been stored.",
            get(&self.batches_duplicate),
        );
        metric(
            "spool_batches",
            "gauge",
            "Batches waiting in the spool.",
            get(&self.spool_batches),
        );
        metric(
            "spool_bytes",
            "gauge",
            "Bytes waiting in the spool.",
            get(&self.spool_bytes),
        );
        metric(
            "spool_io_errors_total",
            "counter",
            "Disk errors the spool survived (write, read or delete failed; sampling went on).",
            get(&self.spool_io_errors),
        );
        metric(
            "peak_rss_bytes",
            "gauge",
            "Peak resident set size of the daemon (VmHWM).",
            peak_rss_bytes(),
        );
        metric(
            "last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last acknowledged push (0: none yet).",
            get(&self.last_success_unix_seconds),
        );
        for ((name, kind, help), value) in TRACKER_FIELDS.iter().zip(&self.tracker) {
            metric(name, kind, help, get(value));
        }
        let _ = writeln!(
            out,
            "# HELP fleetprof_profiler_losses_total Sampler loss and accounting counters, by kind."
        );
        let _ = writeln!(out, "# TYPE fleetprof_profiler_losses_total counter");
        for (name, counter) in LOSS_FIELDS.iter().zip(&self.losses) {
            let _ = writeln!(
                out,
                "fleetprof_profiler_losses_total{{kind=\"{name}\"}} {}",
                get(counter)
            );
        }
        out
    }
}

/// Connections served at once, at most; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped. At most
/// [`MAX_CONNECTIONS`] are handled at once, each for at most 5 s; an accept error (e.g. out of
/// file descriptors) is logged and the loop goes on after a short pause.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> Result<(), MetricsError> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %MetricsError::Accept(e), "metrics endpoint: accept failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Read up to the end of the request head (or a small limit); the body is not used.
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /healthz\n".to_owned(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            // A client that does not read must not hold its slot for ever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters appear in the exposition with their values and types.
    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.samples_acked.store(42, Ordering::Relaxed);
        m.add_losses(&LossCounters {
            counts_map_full: 3,
            ..Default::default()
        });
        let mut tracker = TrackerStats::default();
        tracker.unwind.tables_dropped = 7;
        m.set_tracker(&tracker);
        let text = m.render();
        assert!(
            text.contains("fleetprof_profiler_samples_acked_total 42\n"),
            "{text}"
        );
        assert!(
            text.contains("fleetprof_profiler_unwind_tables_dropped_total 7\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE fleetprof_profiler_spool_bytes gauge"));
        assert!(text.contains("fleetprof_profiler_losses_total{kind=\"counts_map_full\"} 3\n"));
    }

    /// `/metrics` and `/healthz` answer over HTTP; other paths are 404.
    #[tokio::test]
    async fn serves_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.batches_sent.store(5, Ordering::Relaxed);
        let server = tokio::spawn(serve(listener, metrics));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("fleetprof_profiler_batches_sent_total 5"));
        assert!(get("/healthz").await.ends_with("ok\n"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }

    /// A flood of silent connections holds at most [`MAX_CONNECTIONS`] slots, each for a bounded
    /// time: a real request is still answered.
    #[tokio::test]
    async fn survives_a_flood_of_idle_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::default())));
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS * 2 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.ends_with("ok\n"), "{out}");
        drop(idle);
        server.abort();
    }
}
