//! `fleetprof-collector regressions ...`: what detection stored, as tables, text or JSON; and the
//! text rendering `detect` shares.

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use fleetprof_collector::detect::{Metric, State};
use fleetprof_collector::regressions::{self, ListFilter, StoredRegression, state_name};
use fleetprof_collector::share::percent;

use super::{ClickHouseArgs, OutputFormat, table};

#[derive(Debug, Args)]
pub(crate) struct RegressionsArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(subcommand)]
    command: RegressionsCommand,
}

/// A regression's state, as a flag value.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    /// Still raised.
    Open,
    /// Held past the persistence period, then fell back.
    Fixed,
    /// Fell back within the persistence period (stored only with --include-went-away).
    WentAway,
}

impl From<StateArg> for State {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Open => State::Open,
            StateArg::Fixed => State::Fixed,
            StateArg::WentAway => State::WentAway,
        }
    }
}

#[derive(Debug, Subcommand)]
enum RegressionsCommand {
    /// Stored regressions, newest onset first.
    List {
        /// Only this service. [default: all services]
        #[arg(long)]
        service: Option<String>,
        /// Only regressions in this state. [default: any state]
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only onsets within this recent window, e.g. 7d. [default: all time]
        #[arg(long)]
        since: Option<String>,
        /// Rows to print. [default: 50]
        #[arg(long, default_value_t = 50, hide_default_value = true)]
        limit: u64,
        /// table, or json (the stored rows with `report` and `candidates` decoded). [default: table]
        #[arg(long, value_enum, default_value = "table", hide_default_value = true)]
        format: OutputFormat,
    },
    /// One regression in full: every member's shares, cost, significance, and the ranked
    /// root-cause candidates with their evidence.
    Show {
        /// The regression's id (as `regressions list` prints it; a unique prefix of 4+ digits works).
        id: String,
        /// table (readable text), or json. [default: table]
        #[arg(long, value_enum, default_value = "table", hide_default_value = true)]
        format: OutputFormat,
    },
}

pub(crate) async fn run(args: RegressionsArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    match args.command {
        RegressionsCommand::List {
            service,
            state,
            since,
            limit,
            format,
        } => {
            let since = since
                .map(|s| {
                    fleetprof_collector::query::Window::parse(Some(&s), None, None, Duration::ZERO)
                })
                .transpose()?
                .map(|w| w.from);
            let filter = ListFilter {
                service,
                state: state.map(Into::into),
                since,
                limit,
            };
            let rows = regressions::list(&store, &filter).await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Table => {
                    if rows.is_empty() {
                        println!("no regressions stored (run `fleetprof-collector detect`)");
                    } else {
                        print_table(&rows)?;
                    }
                }
            }
        }
        RegressionsCommand::Show { id, format } => {
            let Some(r) = regressions::get(&store, &id).await? else {
                anyhow::bail!(
                    "no regression with id {id:?} (see `fleetprof-collector regressions list`)"
                );
            };
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                OutputFormat::Table => print_detail(&r),
            }
        }
    }
    Ok(())
}

pub(super) fn time(secs: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs.max(0).unsigned_abs()))
        .to_string()
}

fn metric(m: Metric) -> &'static str {
    match m {
        Metric::Total => "total",
        Metric::SelfShare => "self",
    }
}

fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

fn cores(r: &StoredRegression) -> String {
    match r.report.delta_watts {
        Some(w) => format!("{:+.3} cores ({w:+.1} W)", r.report.delta_cores),
        None => format!("{:+.3} cores", r.report.delta_cores),
    }
}

/// One line per regression.
pub(super) fn print_table(rows: &[StoredRegression]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let more = r.functions.len().saturating_sub(1);
            let function = match (r.functions.first(), more) {
                (Some(f), 0) => f.clone(),
                (Some(f), n) => format!("{f} (+{n})"),
                (None, _) => String::new(),
            };
            let cause = r.candidates.first().map_or_else(
                || "-".to_owned(),
                |c| format!("{} {}", short(&c.change_id), c.author),
            );
            vec![
                r.id.clone(),
                r.service.clone(),
                state_name(r.state).to_owned(),
                time(i64::from(r.onset)),
                format!("{} → {}", percent(r.before_share), percent(r.after_share)),
                format!("{:+.3}", r.cost),
                format!("{:.1}", r.significance),
                function,
                cause,
            ]
        })
        .collect();
    table::print(
        &[
            "ID",
            "SERVICE",
            "STATE",
            "ONSET",
            "SHARE",
            "ΔCORES",
            "Z",
            "FUNCTION",
            "LIKELY CAUSE",
        ],
        &rows,
        &[5, 6],
    )
}

/// A short block per regression: what `detect` prints.
pub(super) fn print_summary(r: &StoredRegression) {
    println!(
        "{}: regression {} ({}), onset {}",
        r.service,
        r.id,
        state_name(r.state),
        time(r.report.onset_unix_s)
    );
    for m in &r.report.members {
        println!(
            "  {}  self {} → {}, total {} → {}  ({} share rose, z {:.1})",
            m.function,
            percent(m.self_before),
            percent(m.self_after),
            percent(m.total_before),
            percent(m.total_after),
            metric(m.metric),
            m.z
        );
    }
    println!(
        "  cost {}{}, z {:.2}, p {:.2e}",
        cores(r),
        if r.report.delta_watts.is_none() {
            " (energy not measured)"
        } else {
            ""
        },
        r.report.z,
        r.report.p_value
    );
    match r.candidates.first() {
        Some(c) => println!(
            "  likely cause: {} \"{}\" by {} (score {:.1})",
            short(&c.change_id),
            c.title,
            c.author,
            c.score
        ),
        None => println!("  likely cause: no changes recorded (see `fleetprof-collector changes`)"),
    }
}

/// Everything about one regression.
pub(super) fn print_detail(r: &StoredRegression) {
    let rep = &r.report;
    println!("regression {}", r.id);
    println!("  service       {}", r.service);
    println!("  state         {}", state_name(r.state));
    println!("  onset         {}", time(rep.onset_unix_s));
    println!("  detected      {}", time(i64::from(r.detected)));
    println!("  updated       {}", time(i64::from(r.updated)));
    println!(
        "  share         {} → {} (most significant member, the share its step was found in)",
        percent(r.before_share),
        percent(r.after_share)
    );
    println!(
        "  cost          {} ({:+.1} samples/s)",
        cores(r),
        r.cost_samples
    );
    println!(
        "  significance  z {:.2}, p {:.2e} (Bonferroni-adjusted)",
        rep.z, rep.p_value
    );
    println!("  members:");
    for m in &rep.members {
        println!("    {}", m.function);
        if let Some(file) = &m.file {
            println!("      file        {file}");
        }
        println!(
            "      self        {} → {}",
            percent(m.self_before),
            percent(m.self_after)
        );
        println!(
            "      total       {} → {}",
            percent(m.total_before),
            percent(m.total_after)
        );
        let watts = match (m.watts_before, m.watts_after) {
            (Some(a), Some(b)) => format!(", {a:.2} → {b:.2} W"),
            _ => String::new(),
        };
        println!(
            "      cost        {:.3} → {:.3} cores{watts} ({} share)",
            m.cores_before,
            m.cores_after,
            metric(m.metric)
        );
        println!(
            "      step        onset {}, z {:.2}, p {:.2e}, dispersion {:.2}, {}{}",
            time(m.onset_unix_s),
            m.z,
            m.p_value,
            m.dispersion,
            state_name(m.state),
            m.reverted_unix_s
                .map(|t| format!(" (fell back {})", time(t)))
                .unwrap_or_default()
        );
    }
    if r.candidates.is_empty() {
        println!("  candidates: none (no changes recorded; see `fleetprof-collector changes`)");
    } else {
        println!("  candidates (likeliest first):");
        for (i, c) in r.candidates.iter().enumerate() {
            println!(
                "    {}. {} score {:.1}  \"{}\" by {}",
                i + 1,
                c.change_id,
                c.score,
                c.title,
                c.author
            );
            for e in &c.evidence {
                println!("         - {e}");
            }
        }
    }
}
