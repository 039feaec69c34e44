//! `fleetprof-collector serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleetprof_collector::ingest::{IngestConfig, RunningCollector, TlsFiles, WriterConfig};
use fleetprof_collector::query::Window;
use fleetprof_collector::regressions;
use fleetprof_collector::store::Store;

use super::ClickHouseArgs;
use super::detect::DetectFlags;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on for gRPC. [default: 0.0.0.0:4317]
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
    /// Batches kept in memory while ClickHouse is unreachable; when full, pushes get
    /// RESOURCE_EXHAUSTED and hosts keep them in their spool. Lost if the collector dies. [default: 10000]
    #[arg(long, default_value_t = 10_000, hide_default_value = true)]
    buffer_max_batches: usize,
    /// Run regression detection in the background this often (e.g. 5m), over the last 24h with
    /// `detect`'s defaults (1-minute buckets, 2h window and persistence); results go to the
    /// `regressions` table. [default: off]
    #[arg(long, value_parser = humantime::parse_duration)]
    detect_every: Option<Duration>,
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
    let config = IngestConfig {
        token,
        tls,
        writer: WriterConfig {
            buffer_max_batches: args.buffer_max_batches,
            ..WriterConfig::default()
        },
        ..IngestConfig::default()
    };
    let detection = args
        .detect_every
        .filter(|d| !d.is_zero())
        .map(|every| spawn_detection(store.clone(), every));
    let symbolizer = args.symbols.spawn(store.clone());
    let mut collector = RunningCollector::start(store, config, args.listen).await?;
    eprintln!(
        "fleetprof-collector listening on {}",
        collector.local_addr()
    );
    tokio::select! {
        r = collector.wait() => r?,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            collector.shutdown().await;
        }
    }
    if let Some(d) = detection {
        d.abort();
    }
    if let Some(s) = symbolizer {
        s.abort();
    }
    if let Some(ui) = ui {
        ui.shutdown().await;
    }
    Ok(())
}
