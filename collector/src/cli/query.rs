//! `fleetprof-collector query ...`: the query commands, printed as aligned tables.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use fleetprof_collector::query::{self, By, Side, Window};
use fleetprof_collector::share::{percent, points};

use super::{ClickHouseArgs, table};

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(subcommand)]
    command: QueryCommand,
}

/// A time window: `--since`, or `--from` (and `--to`).
#[derive(Debug, Args)]
struct WindowArgs {
    /// Look back this far, e.g. 15m, 1h, 7d. [default: 1h]
    #[arg(long, conflicts_with = "from")]
    since: Option<String>,
    /// Window start, RFC 3339 (2025-06-01T12:00:00Z). [default: --since 1h]
    #[arg(long)]
    from: Option<String>,
    /// Window end, RFC 3339. [default: now]
    #[arg(long, requires = "from")]
    to: Option<String>,
}

impl WindowArgs {
    fn window(&self, default: Duration) -> anyhow::Result<Window> {
        Ok(Window::parse(
            self.since.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
            default,
        )?)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ByArg {
    /// Samples with the function on CPU.
    #[value(name = "self")]
    Self_,
    /// Samples with the function anywhere on the stack.
    Total,
    /// Energy charged to the function (as leaf): its share of each process's samples × the
    /// joules the profiler charged that process (`query top` only; needs hosts with RAPL).
    Energy,
}

impl ByArg {
    /// The sample ranking, or an error for `energy` where only samples can be compared.
    fn samples(self, command: &str) -> anyhow::Result<By> {
        match self {
            ByArg::Self_ => Ok(By::Self_),
            ByArg::Total => Ok(By::Total),
            ByArg::Energy => {
                anyhow::bail!("{command} ranks by self or total; --by energy is for `query top`")
            }
        }
    }
}

fn watts(w: Option<f64>) -> String {
    w.map_or_else(|| "-".to_owned(), |w| format!("{w:.2} W"))
}

#[derive(Debug, Subcommand)]
enum QueryCommand {
    /// Hottest functions of a service: self and total samples and shares.
    Top {
        /// Service name (see `query services`).
        #[arg(long)]
        service: String,
        #[command(flatten)]
        window: WindowArgs,
        /// Rank by self or total samples, or by energy (joules and watts, where measured). [default: self]
        #[arg(long, value_enum, default_value = "self", hide_default_value = true)]
        by: ByArg,
        /// Rows to print. [default: 20]
        #[arg(long, default_value_t = 20, hide_default_value = true)]
        limit: u64,
    },
    /// Flame graph of a service as SVG (or folded stacks with --folded).
    Flamegraph {
        /// Service name.
        #[arg(long)]
        service: String,
        #[command(flatten)]
        window: WindowArgs,
        /// Output file. [default: <service>.svg]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print folded stacks (`root;...;leaf count`) to stdout instead of drawing. [default: off]
        #[arg(long)]
        folded: bool,
    },
    /// Compare a service between two versions or two windows: functions whose share changed
    /// most, and a differential flame graph with -o.
    Diff {
        /// Service name.
        #[arg(long)]
        service: String,
        /// Baseline: a version (1.4.0), or a window FROM..TO in RFC 3339 or durations ago (2h..1h).
        #[arg(long)]
        baseline: String,
        /// Comparison: same forms as --baseline.
        #[arg(long)]
        comparison: String,
        /// For version sides: the window searched for samples. [default: --since 7d]
        #[command(flatten)]
        window: WindowArgs,
        /// Rank by change of self or total share. [default: total]
        #[arg(long, value_enum, default_value = "total", hide_default_value = true)]
        by: ByArg,
        /// Rows to print. [default: 20]
        #[arg(long, default_value_t = 20, hide_default_value = true)]
        limit: usize,
        /// Write a differential flame graph (red: grew, blue: shrank) here. [default: none]
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Services with samples: versions, hosts, samples, last seen.
    Services {
        /// Only this recent window, e.g. 1h. [default: all time]
        #[arg(long)]
        since: Option<String>,
    },
    /// One function's self and total share of a service over time.
    History {
        /// Service name.
        #[arg(long)]
        service: String,
        /// Function name (exactly as in `query top`).
        #[arg(long)]
        function: String,
        #[command(flatten)]
        window: WindowArgs,
        /// Bucket size, a multiple of 1m. [default: 1h with --since over a day, else 5m]
        #[arg(long)]
        bucket: Option<String>,
    },
    /// Hottest stacks passing through a function.
    Stacks {
        /// Service name.
        #[arg(long)]
        service: String,
        /// Function name.
        #[arg(long)]
        function: String,
        #[command(flatten)]
        window: WindowArgs,
        /// Stacks to print. [default: 10]
        #[arg(long, default_value_t = 10, hide_default_value = true)]
        limit: u64,
    },
}

fn time(secs: u32) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(u64::from(secs))).to_string()
}

const HOUR: Duration = Duration::from_secs(3600);

pub(crate) async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    match args.command {
        QueryCommand::Top {
            service,
            window,
            by,
            limit,
        } => {
            let window = window.window(HOUR)?;
            if matches!(by, ByArg::Energy) {
                return top_by_energy(&store, &service, window, limit).await;
            }
            let rows = query::top(&store, &service, window, by.samples("top")?, limit).await?;
            anyhow::ensure!(
                !rows.is_empty(),
                "no samples of service {service:?} in {window}"
            );
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| {
                    vec![
                        percent(r.self_share),
                        percent(r.total_share),
                        r.self_samples.to_string(),
                        r.total_samples.to_string(),
                        r.function,
                    ]
                })
                .collect();
            table::print(
                &["SELF%", "TOTAL%", "SELF", "TOTAL", "FUNCTION"],
                &rows,
                &[0, 1, 2, 3],
            )?;
        }
        QueryCommand::Flamegraph {
            service,
            window,
            output,
            folded,
        } => {
            let window = window.window(HOUR)?;
            let stacks = query::flamegraph(&store, &service, window).await?;
            anyhow::ensure!(
                !stacks.is_empty(),
                "no samples of service {service:?} in {window}"
            );
            if folded {
                print!("{}", query::folded_text(&stacks));
            } else {
                let svg = query::render_flamegraph(&stacks, &format!("{service} {window}"))?;
                let path = output.unwrap_or_else(|| PathBuf::from(format!("{service}.svg")));
                std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {} ({} stacks)", path.display(), stacks.len());
            }
        }
        QueryCommand::Diff {
            service,
            baseline,
            comparison,
            window,
            by,
            limit,
            output,
        } => {
            let versions_window = window.window(7 * 24 * HOUR)?;
            let baseline = Side::parse(&baseline)?;
            let comparison = Side::parse(&comparison)?;
            let rows = query::diff(
                &store,
                &service,
                &baseline,
                &comparison,
                versions_window,
                by.samples("diff")?,
                limit,
            )
            .await?;
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| {
                    vec![
                        points(r.delta_total_share()),
                        percent(r.baseline_total_share),
                        percent(r.comparison_total_share),
                        points(r.delta_self_share()),
                        percent(r.baseline_self_share),
                        percent(r.comparison_self_share),
                        r.function,
                    ]
                })
                .collect();
            println!(
                "{service}: {baseline} -> {comparison} (shares of all samples; deltas in percentage points)"
            );
            table::print(
                &[
                    "ΔTOTAL",
                    "TOTAL%",
                    "→TOTAL%",
                    "ΔSELF",
                    "SELF%",
                    "→SELF%",
                    "FUNCTION",
                ],
                &rows,
                &[0, 1, 2, 3, 4, 5],
            )?;
            if let Some(path) = output {
                let (before, after) =
                    query::diff_folded(&store, &service, &baseline, &comparison, versions_window)
                        .await?;
                let svg = query::differential_flamegraph(
                    &before,
                    &after,
                    &format!("{service}: {baseline} -> {comparison}"),
                )?;
                std::fs::write(&path, svg)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        QueryCommand::Services { since } => {
            let window = since
                .map(|s| Window::parse(Some(&s), None, None, HOUR))
                .transpose()?;
            let rows = query::services(&store, window).await?;
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| {
                    vec![
                        r.service,
                        r.versions.join(","),
                        r.hosts.to_string(),
                        r.samples.to_string(),
                        watts(r.watts),
                        time(r.last_seen),
                    ]
                })
                .collect();
            table::print(
                &[
                    "SERVICE",
                    "VERSIONS",
                    "HOSTS",
                    "SAMPLES",
                    "WATTS",
                    "LAST SEEN",
                ],
                &rows,
                &[2, 3, 4],
            )?;
        }
        QueryCommand::History {
            service,
            function,
            window,
            bucket,
        } => {
            let w = window.window(24 * HOUR)?;
            let bucket = match bucket {
                Some(b) => {
                    humantime::parse_duration(&b).with_context(|| format!("--bucket {b:?}"))?
                }
                None if w.to - w.from > 86_400 => HOUR,
                None => Duration::from_secs(300),
            };
            let bucket = u32::try_from(bucket.as_secs()).context("--bucket is too large")?;
            let points = query::function_history(&store, &service, &function, w, bucket).await?;
            let rows: Vec<Vec<String>> = points
                .into_iter()
                .map(|p| {
                    vec![
                        time(p.time),
                        percent(p.self_share),
                        percent(p.total_share),
                        p.self_samples.to_string(),
                        p.total_samples.to_string(),
                        p.service_samples.to_string(),
                        watts(p.watts),
                    ]
                })
                .collect();
            table::print(
                &[
                    "TIME", "SELF%", "TOTAL%", "SELF", "TOTAL", "SERVICE", "WATTS",
                ],
                &rows,
                &[1, 2, 3, 4, 5, 6],
            )?;
        }
        QueryCommand::Stacks {
            service,
            function,
            window,
            limit,
        } => {
            let w = window.window(HOUR)?;
            for s in query::stacks_through(&store, &service, &function, w, limit).await? {
                println!(
                    "{} samples ({}) of {function}:",
                    s.samples,
                    percent(s.share_of_function)
                );
                for f in s.functions.iter().rev() {
                    println!("    {f}");
                }
                println!();
            }
        }
    }
    Ok(())
}

/// `query top --by energy`: functions by joules charged, with mean watts.
async fn top_by_energy(
    store: &fleetprof_collector::store::Store,
    service: &str,
    window: Window,
    limit: u64,
) -> anyhow::Result<()> {
    let rows = query::top_by_energy(store, service, window, limit).await?;
    anyhow::ensure!(
        !rows.is_empty(),
        "no energy measured for service {service:?} in {window}: its hosts report energy as \
         unavailable (no RAPL, e.g. virtual machines) or it had no samples; `query top --by self` \
         still ranks by CPU"
    );
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            vec![
                format!("{:.3}", r.watts),
                format!("{:.2}", r.joules),
                percent(r.energy_share),
                r.self_samples.to_string(),
                r.function,
            ]
        })
        .collect();
    table::print(
        &["WATTS", "JOULES", "ENERGY%", "SELF", "FUNCTION"],
        &rows,
        &[0, 1, 2, 3],
    )?;
    Ok(())
}
