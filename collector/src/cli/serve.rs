//! `fleetprof-collector serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleetprof_collector::ingest::{
    IngestConfig, Limits, RunningCollector, TlsFiles, WriterConfig, WriterStats, parse_host_tokens,
};
use fleetprof_collector::query::Window;
use fleetprof_collector::regressions;
use fleetprof_collector::store::Store;

use super::ClickHouseArgs;
use super::detect::DetectFlags;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on for gRPC. A non-loopback address needs TLS and a token (or
    /// --insecure). [default: 0.0.0.0:4317]
    #[arg(long, default_value = "0.0.0.0:4317", hide_default_value = true)]
    listen: SocketAddr,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// File holding the bearer token hosts must send; without it, no authentication. [default: none]
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key enables TLS. [default: plaintext]
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). [default: none]
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File of per-host tokens, one `host_id token` line per host: a host must send its own
    /// token and may push only batches of its own host_id. May be combined with --token-file.
    /// [default: none]
    #[arg(long)]
    host_tokens_file: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS and a token. Without this flag, `serve`
    /// refuses to, since anyone on the network could then write profiles.
    #[arg(long)]
    insecure: bool,
    /// Directory where batches ClickHouse rejects are kept (the wire batch and the reason);
    /// the host is answered INVALID_ARGUMENT and the rest of the fleet carries on.
    /// [default: none: rejected batches are only logged and counted]
    #[arg(long)]
    dead_letter_dir: Option<PathBuf>,
    /// Memory for what hosts send, e.g. 512MiB: half for pushes being received and decoded
    /// (each charged four copies of its size), half for batches waiting to be written. Pushes
    /// beyond it get RESOURCE_EXHAUSTED and hosts retry from their spool; a batch that could
    /// never fit is refused INVALID_ARGUMENT. The process itself needs ~100 MiB besides; batch
    /// expansion limits are lowered to fit. [default: 512MiB]
    #[arg(long, default_value = "512MiB", hide_default_value = true, value_parser = parse_bytes)]
    memory_budget: usize,
    /// Time allowed for each ClickHouse call; past it ClickHouse counts as unreachable and
    /// pushes get UNAVAILABLE (hosts keep their batches). [default: 30s]
    #[arg(long, default_value = "30s", hide_default_value = true, value_parser = humantime::parse_duration)]
    clickhouse_timeout: Duration,
    /// Serve the collector's counters (stored, duplicates, unavailable, dead-lettered, busy) in
    /// Prometheus text format on this address, e.g. 127.0.0.1:9465. [default: off]
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Run regression detection in the background this often (e.g. 5m), over the last 24h with
    /// `detect`'s defaults (1-minute buckets, 2h window and persistence); results go to the
    /// `regressions` table. [default: off]
    #[arg(long, value_parser = humantime::parse_duration)]
    detect_every: Option<Duration>,
    /// Keep this much history (e.g. 30d): once an hour (and at start), drop the days of every
    /// large table older than this, as `fleetprof-collector retention --keep` does, and log what
    /// was dropped. [default: off, keep everything]
    #[arg(long, value_name = "KEEP", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// Also serve the web UI on this address (http; same token as ingest). [default: off]
    #[arg(long, value_name = "ADDR")]
    ui_listen: Option<SocketAddr>,
    #[command(flatten)]
    ui_sources: super::ui::UiSources,
    #[command(flatten)]
    symbols: super::symbols::ServeSymbolsArgs,
}

/// Runs detection every `every` until the process ends; failures are logged, not fatal (the
/// next run tries again).
fn spawn_detection(store: Store, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let window = Window::last(super::detect::DEFAULT_SINCE);
            let options = match DetectFlags::default().options(window) {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, "detection options");
                    return;
                }
            };
            match regressions::run_detection(&store, &[], &options).await {
                Ok(run) => tracing::info!(
                    services = run.services.len(),
                    regressions = run.regressions.len(),
                    "detection run"
                ),
                Err(e) => tracing::warn!(error = %e, "detection run failed; retrying next period"),
            }
        }
    })
}

/// How often `serve --retention` looks for old partitions.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Drops partitions older than `keep` every [`RETENTION_EVERY`] until the process ends;
/// failures are logged, not fatal (the next pass tries again).
fn spawn_retention(store: Store, keep: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match super::retention::pass(&store, keep, false).await {
                Ok(report) => {
                    for line in report.lines() {
                        tracing::info!("retention: {line}");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying next period"),
            }
        }
    })
}

/// `512MiB`, `64KiB`, `1GiB` or a plain number of bytes.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 512MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?}; use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Serves `stats` as Prometheus text to whoever connects, one connection at a time, each
/// bounded in time; accept errors (e.g. out of file descriptors) are logged and survived.
fn spawn_metrics(listener: tokio::net::TcpListener, stats: std::sync::Arc<WriterStats>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tokio::spawn(async move {
        loop {
            let mut stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let body = stats.render();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            })
            .await;
        }
    });
}

/// Refuses a listen address anyone on the network could reach, unless hosts must present a
/// token over TLS or `--insecure` says so.
fn check_exposure(listen: SocketAddr, tls: bool, auth: bool, insecure: bool) -> anyhow::Result<()> {
    if listen.ip().is_loopback() || (tls && auth) || insecure {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {listen} without {}: anyone who can reach it could write \
         profiles. Give --tls-cert/--tls-key and --token-file or --host-tokens-file, listen on \
         127.0.0.1, or pass --insecure",
        match (tls, auth) {
            (false, false) => "TLS and a token",
            (false, true) => "TLS",
            _ => "a token",
        }
    )
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    let token = match &args.token_file {
        Some(path) => {
            let token = String::from_utf8(read(path, "token file")?)
                .context("the token file is not UTF-8")?;
            let token = token.trim().to_owned();
            anyhow::ensure!(
                !token.is_empty(),
                "the token file {} is empty",
                path.display()
            );
            Some(token)
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert_pem: read(cert, "TLS certificate")?,
            key_pem: read(key, "TLS key")?,
        }),
        _ => None,
    };
    let host_tokens = match &args.host_tokens_file {
        Some(path) => {
            let text = String::from_utf8(read(path, "host tokens file")?)
                .context("the host tokens file is not UTF-8")?;
            let tokens = parse_host_tokens(&text)
                .with_context(|| format!("reading the host tokens file {}", path.display()))?;
            anyhow::ensure!(
                !tokens.is_empty(),
                "the host tokens file {} names no host",
                path.display()
            );
            Some(std::sync::Arc::new(tokens))
        }
        None => None,
    };
    check_exposure(
        args.listen,
        tls.is_some(),
        token.is_some() || host_tokens.is_some(),
        args.insecure,
    )?;
    let applied = store.migrate().await.with_context(|| {
        format!(
            "creating or upgrading the schema at {}",
            args.clickhouse.clickhouse_url
        )
    })?;
    if !applied.is_empty() {
        tracing::info!(?applied, "schema migrated");
    }
    let ui = match args.ui_listen {
        Some(addr) => Some(
            super::ui::start(store.clone(), args.ui_sources.config(token.clone()), addr).await?,
        ),
        None => None,
    };
    let writer = WriterConfig {
        max_pending_bytes: args.memory_budget / 2,
        clickhouse_timeout: args.clickhouse_timeout,
        dead_letter_dir: args.dead_letter_dir.clone(),
        ..WriterConfig::default()
    };
    // A batch may not expand past what the writer's half of the budget can hold.
    let defaults = Limits::default();
    let limits = Limits {
        max_expanded_bytes: defaults.max_expanded_bytes.min(writer.max_pending_bytes),
        ..defaults
    };
    let config = IngestConfig {
        token,
        tls,
        host_tokens,
        limits,
        writer,
        max_inflight_bytes: args.memory_budget / 2,
        ..IngestConfig::default()
    };
    let detection = args
        .detect_every
        .filter(|d| !d.is_zero())
        .map(|every| spawn_detection(store.clone(), every));
    let retention = args
        .retention
        .filter(|d| !d.is_zero())
        .map(|keep| spawn_retention(store.clone(), keep));
    let symbolizer = args.symbols.spawn(store.clone());
    let mut collector = RunningCollector::start(store, config, args.listen).await?;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        spawn_metrics(listener, collector.stats_arc());
    }
    eprintln!(
        "fleetprof-collector listening on {}",
        collector.local_addr()
    );
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let drain =
        |name: &str| tracing::info!("{name}: finishing the pushes in progress, then exiting");
    tokio::select! {
        r = collector.wait() => r?,
        _ = term.recv() => {
            drain("SIGTERM");
            collector.shutdown().await;
        }
        _ = int.recv() => {
            drain("SIGINT");
            collector.shutdown().await;
        }
    }
    if let Some(d) = detection {
        d.abort();
    }
    if let Some(r) = retention {
        r.abort();
    }
    if let Some(s) = symbolizer {
        s.abort();
    }
    if let Some(ui) = ui {
        ui.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is always allowed; elsewhere TLS and a token are needed, or --insecure.
    #[test]
    fn exposure_needs_tls_and_a_token() {
        let public: SocketAddr = "0.0.0.0:4317".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:4317".parse().unwrap();
        assert!(check_exposure(local, false, false, false).is_ok());
        assert!(check_exposure(public, true, true, false).is_ok());
        assert!(check_exposure(public, false, false, true).is_ok());
        for (tls, auth) in [(false, false), (true, false), (false, true)] {
            let e = check_exposure(public, tls, auth, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains("refusing to listen on 0.0.0.0:4317"), "{e}");
        }
    }

    /// Sizes parse with binary units; nonsense is refused.
    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("MiB").is_err());
    }
}
