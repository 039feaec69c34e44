//! `fleetprof-collector changes ...`: record commits and deploys for root-cause ranking.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use fleetprof_collector::changes;

use super::regressions::time;
use super::{ClickHouseArgs, OutputFormat, table};

#[derive(Debug, Args)]
pub(crate) struct ChangesArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(subcommand)]
    command: ChangesCommand,
}

#[derive(Debug, Subcommand)]
enum ChangesCommand {
    /// Read a git repository's commits (author, time, title, files and functions touched) into
    /// the `changes` table. Re-importing skips commits already stored.
    ImportGit {
        /// The repository (its work tree or .git directory).
        #[arg(long)]
        repo: PathBuf,
        /// The service the repository builds.
        #[arg(long)]
        service: String,
        /// Only commits since then: a duration ago (30d) or an RFC 3339 time.
        /// [default: the whole history, newest 5000 commits]
        #[arg(long)]
        since: Option<String>,
    },
    /// Record that a version of a service went out (the ranking matches it to the version
    /// switch seen in the samples).
    Deploy {
        /// The service.
        #[arg(long)]
        service: String,
        /// The version, as the profiler reports it (FLEETPROF_VERSION or the configured one).
        #[arg(long)]
        version: String,
        /// When: `now`, an RFC 3339 time, or a duration ago (10m). [default: now]
        #[arg(long, default_value = "now", hide_default_value = true)]
        at: String,
        /// The commit deployed (its SHA, as imported with `changes import-git`). [default: none]
        #[arg(long)]
        commit: Option<String>,
    },
    /// A service's recorded commits and deploys, newest first.
    List {
        /// The service.
        #[arg(long)]
        service: String,
        /// Rows of each kind to print. [default: 20]
        #[arg(long, default_value_t = 20, hide_default_value = true)]
        limit: u64,
        /// table, or json (`{"changes": [...], "deploys": [...]}`). [default: table]
        #[arg(long, value_enum, default_value = "table", hide_default_value = true)]
        format: OutputFormat,
    },
}

/// `now`, an RFC 3339 time, or a duration ago, as Unix seconds.
pub(crate) fn parse_time(s: &str) -> anyhow::Result<i64> {
    let now = SystemTime::now();
    let t = if s == "now" {
        now
    } else if let Ok(ago) = humantime::parse_duration(s) {
        now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    } else {
        humantime::parse_rfc3339_weak(s).with_context(|| {
            format!("{s:?} is not `now`, a duration ago (10m) or an RFC 3339 time (2025-06-01T12:00:00Z)")
        })?
    };
    Ok(i64::try_from(
        t.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
    )?)
}

pub(crate) async fn run(args: ChangesArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    match args.command {
        ChangesCommand::ImportGit {
            repo,
            service,
            since,
        } => {
            let since = since.as_deref().map(parse_time).transpose()?;
            let outcome = changes::import_git(&store, &repo, &service, since)
                .await
                .with_context(|| format!("importing {}", repo.display()))?;
            println!(
                "read {} commits of {} for service {service}: {} new, {} already stored",
                outcome.commits,
                repo.display(),
                outcome.inserted,
                outcome.commits - outcome.inserted
            );
        }
        ChangesCommand::Deploy {
            service,
            version,
            at,
            commit,
        } => {
            let at = parse_time(&at)?;
            changes::record_deploy(&store, &service, &version, at, commit.as_deref()).await?;
            println!(
                "recorded: {service} {version} deployed at {}{}",
                time(at),
                commit.map(|c| format!(" from {c}")).unwrap_or_default()
            );
        }
        ChangesCommand::List {
            service,
            limit,
            format,
        } => {
            let list = changes::list(&store, &service, limit).await?;
            let deploys = changes::deploys(&store, &service, limit).await?;
            match format {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "changes": list, "deploys": deploys })
                    )?
                ),
                OutputFormat::Table => {
                    println!("commits of {service}:");
                    let rows: Vec<Vec<String>> = list
                        .into_iter()
                        .map(|c| {
                            let fns: Vec<&str> = c
                                .functions
                                .iter()
                                .map(String::as_str)
                                .filter(|f| f.contains("::") || f.contains('.'))
                                .collect();
                            let fns = if fns.is_empty() {
                                c.functions.join(",")
                            } else {
                                fns.join(",")
                            };
                            vec![
                                c.sha.get(..10).unwrap_or(&c.sha).to_owned(),
                                time(i64::from(c.time)),
                                c.author,
                                c.files.len().to_string(),
                                c.title,
                                fns,
                            ]
                        })
                        .collect();
                    table::print(
                        &["SHA", "TIME", "AUTHOR", "FILES", "TITLE", "FUNCTIONS"],
                        &rows,
                        &[3],
                    )?;
                    println!("\ndeploys of {service}:");
                    let rows: Vec<Vec<String>> = deploys
                        .into_iter()
                        .map(|d| vec![time(i64::from(d.at)), d.version, d.commit])
                        .collect();
                    table::print(&["AT", "VERSION", "COMMIT"], &rows, &[])?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `now`, RFC 3339 and durations ago; nonsense is refused.
    #[test]
    fn parses_times() {
        let now = parse_time("now").unwrap();
        assert!(now > 1_700_000_000);
        assert_eq!(parse_time("2025-06-01T12:00:00Z").unwrap(), 1_748_779_200);
        let ago = parse_time("10m").unwrap();
        assert!((now - ago - 600).abs() <= 2);
        assert!(parse_time("yesterday-ish").is_err());
    }
}
