//! `fleetprof-collector symbols`: the symbol store (upload, list, resolve) and the options
//! `serve` uses to name frames of stripped binaries.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use fleetprof_collector::store::Store;
use fleetprof_collector::symbols::{
    AddOutcome, DEFAULT_NEGATIVE_TTL, Debuginfod, SymbolStore, inspect, resolve_stored,
    wait_for_mutations,
};

use super::ClickHouseArgs;

/// Where the symbol store lives (shared by `symbols` and `serve`).
#[derive(Debug, Args, Clone)]
pub(crate) struct SymbolsDirArgs {
    /// Directory of the symbol store: one subdirectory per build-id with the best debug file
    /// seen for it. `symbols upload` and `serve` must use the same one. [default: /var/lib/fleetprof/symbols]
    #[arg(
        long,
        env = "FLEETPROF_SYMBOLS_DIR",
        default_value = "/var/lib/fleetprof/symbols",
        hide_default_value = true
    )]
    symbols_dir: PathBuf,
}

impl SymbolsDirArgs {
    fn store(&self) -> SymbolStore {
        SymbolStore::new(&self.symbols_dir)
    }
}

/// debuginfod servers to fetch missing debug files from (shared by `symbols resolve` and `serve`).
#[derive(Debug, Args, Clone)]
pub(crate) struct DebuginfodArgs {
    /// debuginfod server to ask for build-ids the store lacks (repeatable; tried in order;
    /// fetched files are kept in the symbol store, misses remembered for 10 minutes).
    /// [default: the space-separated list in DEBUGINFOD_URLS, or none]
    #[arg(
        long = "debuginfod-url",
        value_name = "URL",
        env = "DEBUGINFOD_URLS",
        value_delimiter = ' '
    )]
    urls: Vec<String>,
}

impl DebuginfodArgs {
    fn client(&self) -> Option<Debuginfod> {
        Debuginfod::new(&self.urls, DEFAULT_NEGATIVE_TTL)
    }
}

/// `serve`'s options for naming frames of stripped binaries.
#[derive(Debug, Args, Clone)]
pub(crate) struct ServeSymbolsArgs {
    #[command(flatten)]
    dir: SymbolsDirArgs,
    #[command(flatten)]
    debuginfod: DebuginfodArgs,
    /// How often to name stored frames from the symbol store (and debuginfod): frames of
    /// new batches, and frames stored before their symbols arrived. 0 turns it off. [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s", hide_default_value = true)]
    resymbolize_every: Duration,
}

impl ServeSymbolsArgs {
    /// Starts the background resolver, unless turned off.
    pub(crate) fn spawn(&self, store: Store) -> Option<tokio::task::JoinHandle<()>> {
        if self.resymbolize_every.is_zero() {
            return None;
        }
        let symbols = self.dir.store();
        let debuginfod = self.debuginfod.client();
        let every = self.resymbolize_every;
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match resolve_stored(&store, &symbols, debuginfod.as_ref()).await {
                    Ok(r) if r.frames_renamed > 0 || r.addresses_resolved > 0 => {
                        tracing::info!(?r, "named stored frames from the symbol store")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "symbolization pass failed; retrying next period")
                    }
                }
            }
        }))
    }
}

#[derive(Debug, Args)]
pub(crate) struct SymbolsArgs {
    #[command(subcommand)]
    command: SymbolsCommand,
}

#[derive(Debug, Subcommand)]
enum SymbolsCommand {
    /// Add debug files (`objcopy --only-keep-debug` output) or unstripped binaries to the
    /// store, keyed by their GNU build-id, then name the stored frames they cover. A file no
    /// better than the one stored for its build-id is not stored (DWARF > .symtab > .dynsym).
    ///
    /// Example: fleetprof-collector symbols upload --symbols-dir /var/lib/fleetprof/symbols build/app.debug
    Upload {
        /// ELF files to add.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        dir: SymbolsDirArgs,
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    },
    /// List the stored debug files: build-id, quality, size, where each came from, and how
    /// many stored frames have that build-id (`?` when ClickHouse cannot be asked).
    List {
        #[command(flatten)]
        dir: SymbolsDirArgs,
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    },
    /// Name stored frames from the store now (and from debuginfod), as `serve` does periodically.
    Resolve {
        #[command(flatten)]
        dir: SymbolsDirArgs,
        #[command(flatten)]
        debuginfod: DebuginfodArgs,
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    },
}

/// Names stored frames and waits until ClickHouse has rewritten them, then prints what happened.
async fn resolve_and_report(
    clickhouse: &ClickHouseArgs,
    symbols: &SymbolStore,
    debuginfod: Option<&Debuginfod>,
) -> anyhow::Result<()> {
    let store = clickhouse.store()?;
    store.migrate().await.with_context(|| {
        format!(
            "creating or upgrading the schema at {}",
            clickhouse.clickhouse_url
        )
    })?;
    let report = resolve_stored(&store, symbols, debuginfod)
        .await
        .context("naming stored frames (the files are stored; `serve` will retry)")?;
    let done = wait_for_mutations(&store, Duration::from_secs(120)).await?;
    println!(
        "named {} stored frames and {} sample rows ({} addresses resolved, {} without a symbol; build-ids with symbols: {}, without: {}){}",
        report.frames_renamed,
        report.sample_rows_renamed,
        report.addresses_resolved,
        report.addresses_unknown,
        report.build_ids_with_symbols,
        report.build_ids_without_symbols,
        if done {
            ""
        } else {
            "; ClickHouse is still rewriting them"
        }
    );
    Ok(())
}

pub(crate) async fn run(args: SymbolsArgs) -> anyhow::Result<()> {
    match args.command {
        SymbolsCommand::Upload {
            files,
            dir,
            clickhouse,
        } => {
            let symbols = dir.store();
            let store = clickhouse.store()?;
            let mut refused = 0;
            let mut accepted = 0;
            for file in &files {
                let name = file.display().to_string();
                let data = match std::fs::read(file) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("refused {name}: cannot read it: {e}");
                        refused += 1;
                        continue;
                    }
                };
                let info = match inspect(&data, &name) {
                    Ok(i) => i,
                    Err(e) => {
                        eprintln!("refused {e}");
                        refused += 1;
                        continue;
                    }
                };
                accepted += 1;
                let outcome = symbols.add(&info, &data, &name)?;
                let what = match outcome {
                    AddOutcome::Added => "stored".to_owned(),
                    AddOutcome::Upgraded(old) => format!("stored, replacing a {} file", old.name()),
                    AddOutcome::KeptExisting(old) => {
                        format!(
                            "not stored: the stored {} file is at least as good",
                            old.name()
                        )
                    }
                };
                let frames: u64 = store
                    .client()
                    .query("SELECT count() FROM frames WHERE build_id = ?")
                    .bind(&info.build_id)
                    .fetch_one()
                    .await
                    .with_context(|| {
                        format!("{name} is stored; checking its build-id against the stored frames")
                    })?;
                let matches = if frames == 0 {
                    "matches no stored frames (kept for profiles to come)".to_owned()
                } else {
                    format!("matches {frames} stored frames")
                };
                println!(
                    "{name}: build-id {} ({}): {what}; {matches}",
                    info.build_id,
                    info.quality.name()
                );
            }
            if accepted > 0 {
                resolve_and_report(&clickhouse, &symbols, None).await?;
            }
            anyhow::ensure!(
                refused == 0,
                "{refused} of {} files refused (see above); the others were stored",
                files.len()
            );
            Ok(())
        }
        SymbolsCommand::List { dir, clickhouse } => {
            let files = dir.store().list()?;
            if files.is_empty() {
                println!("no debug files in {}", dir.symbols_dir.display());
                return Ok(());
            }
            let store = clickhouse.store()?;
            let mut rows: Vec<Vec<String>> = Vec::new();
            for f in &files {
                let frames = store
                    .client()
                    .query("SELECT count() FROM frames WHERE build_id = ?")
                    .bind(&f.build_id)
                    .fetch_one::<u64>()
                    .await
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string());
                rows.push(vec![
                    f.build_id.clone(),
                    f.quality.name().to_owned(),
                    f.size.to_string(),
                    frames,
                    f.source.clone(),
                ]);
            }
            super::table::print(
                &["BUILD-ID", "QUALITY", "BYTES", "FRAMES", "SOURCE"],
                &rows,
                &[2, 3],
            )?;
            Ok(())
        }
        SymbolsCommand::Resolve {
            dir,
            debuginfod,
            clickhouse,
        } => resolve_and_report(&clickhouse, &dir.store(), debuginfod.client().as_ref()).await,
    }
}
