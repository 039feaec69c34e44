//! `fleetprof-collector ui`, and the `--ui-*` flags `serve` shares.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use fleetprof_collector::store::Store;
use fleetprof_collector::ui::{RunningUi, UiConfig};

use super::ClickHouseArgs;

/// Where the web UI finds the agent's fixes and the skills (shared by `ui` and `serve`).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct UiSources {
    /// The agent's outbox directory (`fleetprof-agent fix --outbox DIR`): its proposals are shown
    /// as the fixes of regressions and opportunities. Repeat for several. [default: none]
    #[arg(long = "ui-outbox", value_name = "DIR")]
    outboxes: Vec<PathBuf>,
    /// The skills directory (the repository's `skills/`) hot functions are matched against on
    /// the opportunities page. [default: none]
    #[arg(long = "ui-skills", value_name = "DIR")]
    skills: Option<PathBuf>,
}

impl UiSources {
    /// The UI's configuration with `token` (the ingest token, if any).
    pub(crate) fn config(&self, token: Option<String>) -> UiConfig {
        UiConfig {
            token,
            outboxes: self.outboxes.clone(),
            skills: self.skills.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct UiArgs {
    /// Address to serve the web UI on (http). [default: 127.0.0.1:8080]
    #[arg(long, default_value = "127.0.0.1:8080", hide_default_value = true)]
    listen: SocketAddr,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// File holding the token every request must carry (as `Authorization: Bearer <token>` or
    /// through the sign-in page); use the ingest token. [default: none, no authentication]
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    sources: UiSources,
}

/// Reads a token file: trimmed, not empty.
pub(crate) fn read_token(path: &PathBuf) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token)
}

/// Starts the UI on `addr` and prints where it is.
pub(crate) async fn start(
    store: Store,
    config: UiConfig,
    addr: SocketAddr,
) -> anyhow::Result<RunningUi> {
    let ui = RunningUi::start(store, config, addr).await?;
    eprintln!("fleetprof-collector web UI on http://{}/", ui.local_addr());
    Ok(ui)
}

pub(crate) async fn run(args: UiArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    let token = args.token_file.as_ref().map(read_token).transpose()?;
    // An empty database gets the schema, so the UI can say how to get data in; a read-only user
    // cannot create it, and then the tables must already exist.
    if let Err(e) = store.migrate().await {
        tracing::warn!(error = %e, "could not create or upgrade the schema; reading it as it is");
    }
    let mut ui = start(store, args.sources.config(token), args.listen).await?;
    tokio::select! {
        r = ui.wait() => r?,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("shutting down");
            ui.shutdown().await;
        }
    }
    Ok(())
}
