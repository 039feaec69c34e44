//! The command line: one module per command group (`serve`, `migrate`, `query`, `detect`,
//! `changes`, `regressions`); add new groups as a module and a [`Command`] variant.

mod changes;
mod detect;
mod migrate;
mod query;
mod regressions;
mod retention;
mod serve;
mod symbols;
mod table;
mod ui;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetprof_collector::store::cluster::NodeEndpoints;
use fleetprof_collector::store::{Store, StoreConfig};

/// fleetprof's collector: receives profiles from every host over gRPC, stores them in
/// ClickHouse, and answers questions about them.
///
/// Quick start:
///   fleetprof-collector serve --listen 0.0.0.0:4317 --clickhouse-url http://127.0.0.1:8123
///   fleetprof-collector query services
///   fleetprof-collector query top --service checkout --since 1h
///   fleetprof-collector query flamegraph --service checkout --since 1h -o checkout.svg
///   fleetprof-collector query diff --service checkout --baseline 1.4.0 --comparison 1.5.0 -o diff.svg
///
/// Retention (drops whole days; `serve --retention 30d` does it hourly):
///   fleetprof-collector retention --keep 30d
///
/// Regressions and their root cause:
///   fleetprof-collector changes import-git --repo ~/src/checkout --service checkout
///   fleetprof-collector changes deploy --service checkout --version 1.5.0 --commit 3f2a9c1
///   fleetprof-collector detect --since 24h
///   fleetprof-collector regressions list --state open
///   fleetprof-collector regressions show <ID>
///
/// In a browser:
///   fleetprof-collector ui --listen 127.0.0.1:8080 --ui-outbox ./fleetprof-outbox --ui-skills ./skills
///   (or `serve ... --ui-listen 127.0.0.1:8080`)
///
/// Names for stripped binaries (frames shown as `module+0x…`):
///   fleetprof-collector symbols upload --symbols-dir /var/lib/fleetprof/symbols app.debug
///   fleetprof-collector serve ... --symbols-dir /var/lib/fleetprof/symbols --debuginfod-url https://debuginfod.debian.net
#[derive(Debug, Parser)]
#[command(name = "fleetprof-collector", version, verbatim_doc_comment)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC ingest endpoint hosts push profiles to (creates or upgrades the schema first).
    Serve(Box<serve::ServeArgs>),
    /// Create or upgrade the ClickHouse schema (one server, or every node of a cluster with --cluster), then exit.
    Migrate(migrate::MigrateArgs),
    /// Drop the days (partitions) of every large table older than --keep, and say what went.
    Retention(retention::RetentionArgs),
    /// Ask questions of the stored profiles.
    Query(query::QueryArgs),
    /// Find regressions in the stored profiles once: test every function's CPU share for lasting
    /// step increases, rank recorded changes as root cause, store and print what was found.
    Detect(detect::DetectArgs),
    /// Record commits (from git) and deploys, the candidates root-cause ranking weighs.
    Changes(changes::ChangesArgs),
    /// Show the regressions detection stored.
    Regressions(regressions::RegressionsArgs),
    /// Serve the web UI (services, flame graphs, compare, functions, regressions, fixes,
    /// opportunities; JSON under /api/) without the ingest endpoint.
    Ui(ui::UiArgs),
    /// Names for stripped binaries: upload debug files keyed by build-id, list them, and name
    /// the stored frames they cover (`serve` also does this periodically, and asks debuginfod).
    Symbols(symbols::SymbolsArgs),
}

/// How a command prints its answer.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Aligned tables and text for people.
    Table,
    /// JSON for programs.
    Json,
}

/// How to reach ClickHouse (shared by every command).
#[derive(Debug, Args, Clone)]
pub(crate) struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint. [default: http://127.0.0.1:8123]
    #[arg(
        long,
        global = true,
        env = "FLEETPROF_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123",
        hide_default_value = true
    )]
    clickhouse_url: String,
    /// Database holding fleetprof's tables. [default: fleetprof]
    #[arg(
        long,
        global = true,
        env = "FLEETPROF_DATABASE",
        default_value = "fleetprof",
        hide_default_value = true
    )]
    database: String,
    /// ClickHouse user. [default: ClickHouse's `default` user]
    #[arg(long, global = true, env = "FLEETPROF_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    /// ClickHouse password (prefer the environment variable). [default: none]
    #[arg(
        long,
        global = true,
        env = "FLEETPROF_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    clickhouse_password: Option<String>,
    /// When the database is laid out over a cluster (`migrate --cluster`): the HTTP port of
    /// every node, whose hosts come from `system.clusters`. Renames and retention run on each
    /// node. [default: the port of --clickhouse-url]
    #[arg(long, global = true, value_name = "PORT")]
    node_http_port: Option<u16>,
    /// When the database is laid out over a cluster: the HTTP endpoint of one node, by the
    /// `host:port` (native port) `system.clusters` lists, e.g. `ch2:9000=http://10.0.0.2:8123`;
    /// repeat per node. [default: http://HOST:--node-http-port]
    #[arg(long, global = true, value_name = "HOST:PORT=URL", value_parser = parse_node_url)]
    node_url: Vec<(String, String)>,
}

/// One `--node-url HOST:PORT=URL`.
fn parse_node_url(value: &str) -> Result<(String, String), String> {
    let (node, url) = value.split_once('=').ok_or_else(|| {
        format!("expected HOST:PORT=URL, e.g. ch2:9000=http://ch2:8123, not {value:?}")
    })?;
    Ok((node.trim().to_owned(), url.trim().to_owned()))
}

impl ClickHouseArgs {
    pub(crate) fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::new(&self.config())?)
    }

    /// The store's configuration from these flags.
    pub(crate) fn config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(&self.clickhouse_url)
            .with_database(&self.database)
            .with_nodes(NodeEndpoints {
                http_port: self.node_http_port,
                node_urls: self.node_url.iter().cloned().collect(),
            });
        if let Some(user) = &self.clickhouse_user {
            config =
                config.with_credentials(user, self.clickhouse_password.clone().unwrap_or_default());
        } else if let Some(password) = &self.clickhouse_password {
            config = config.with_credentials("default", password);
        }
        config
    }
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Retention(args) => retention::run(args).await,
        Command::Query(args) => query::run(args).await,
        Command::Detect(args) => detect::run(args).await,
        Command::Changes(args) => changes::run(args).await,
        Command::Regressions(args) => regressions::run(args).await,
        Command::Ui(args) => ui::run(args).await,
        Command::Symbols(args) => symbols::run(args).await,
    }
}
