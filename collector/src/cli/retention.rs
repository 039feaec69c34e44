//! `fleetprof-collector retention`: drop old partitions of the large tables, then the stacks and
//! frames no kept sample refers to.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleetprof_collector::store::{DroppedPartition, RETAINED_TABLES, Store, TrimmedRows};

use super::ClickHouseArgs;

#[derive(Debug, Args)]
pub(crate) struct RetentionArgs {
    /// How much history to keep, e.g. 30d or 720h: a day (partition) of a large table is
    /// dropped once all of it is older than this, then the stacks (and their frames) that no
    /// kept sample uses and that were first stored before it. Required.
    #[arg(long, value_parser = humantime::parse_duration)]
    keep: Duration,
    /// List what would be dropped, and drop nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

/// One line per dropped partition, then a total.
pub(crate) fn describe(dropped: &[DroppedPartition], keep: Duration, dry_run: bool) -> String {
    let keep = humantime::format_duration(keep);
    let verb = if dry_run { "would drop" } else { "dropped" };
    if dropped.is_empty() {
        let tables: Vec<&str> = RETAINED_TABLES.iter().map(|(t, _)| *t).collect();
        return format!(
            "nothing older than {keep} in {}: nothing dropped\n",
            tables.join(", ")
        );
    }
    let mut out = String::new();
    for p in dropped {
        out.push_str(&format!(
            "{verb} {} partition {}: {} rows, {:.1} MiB\n",
            p.table,
            p.partition,
            p.rows,
            p.bytes as f64 / (1 << 20) as f64
        ));
    }
    out.push_str(&format!(
        "{verb} {} partitions older than {keep}: {} rows, {:.1} MiB\n",
        dropped.len(),
        dropped.iter().map(|p| p.rows).sum::<u64>(),
        dropped.iter().map(|p| p.bytes).sum::<u64>() as f64 / (1 << 20) as f64
    ));
    out
}

/// One line per table trimmed of unreferenced rows; nothing when none were.
pub(crate) fn describe_trimmed(trimmed: &[TrimmedRows], dry_run: bool) -> String {
    let verb = if dry_run { "would delete" } else { "deleted" };
    trimmed
        .iter()
        .map(|t| {
            format!(
                "{verb} {} unreferenced {} rows (no kept sample uses them)\n",
                t.rows, t.table
            )
        })
        .collect()
}

/// Runs one retention pass and prints what it dropped and deleted. (In a dry run the old days
/// are still there, so the stacks only they use are not counted as unreferenced yet.)
pub(crate) async fn pass(store: &Store, keep: Duration, dry_run: bool) -> anyhow::Result<String> {
    let dropped = store
        .drop_older_than(keep, dry_run)
        .await
        .context("dropping old partitions")?;
    let trimmed = store
        .trim_unreferenced(keep, dry_run)
        .await
        .context("deleting unreferenced stacks and frames")?;
    Ok(describe(&dropped, keep, dry_run) + &describe_trimmed(&trimmed, dry_run))
}

pub(crate) async fn run(args: RetentionArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    print!("{}", pass(&store, args.keep, args.dry_run).await?);
    Ok(())
}
