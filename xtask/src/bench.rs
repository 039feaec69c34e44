//! `cargo xtask bench`: fleetprof's benchmarks, whose figures go into `BENCHMARKS.md`.
//!
//! Each is a `[[bench]]` target with `harness = false` (a plain `main` that measures and prints
//! its own figures): the collector's `ingest` and `detect`, the profiler's `profiler`.

use anyhow::{Result, bail};
use cargo_metadata::TargetKind;

use crate::{
    cmd::{self, Steps, cargo},
    workspace,
};

/// The package the collector's benchmarks belong to.
const COLLECTOR: &str = "fleetprof-collector";

/// The package the profiler's benchmark belongs to.
const PROFILER: &str = "fleetprof-profiler";

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Which {
    /// Ingest throughput: profile batches into ClickHouse (needs clickhouse-server).
    Ingest,
    /// Regression detection over (service, function) series.
    Detect,
    /// Query latency over a synthetic day of 1,000 hosts x 20 services (needs clickhouse-server).
    Query,
    /// The profiler's cost on a busy host (root): per-sample BPF time, CPU, RSS, map memory,
    /// at 19 and 99 Hz, frame pointers against unwind tables.
    Profiler,
    /// Every benchmark above, one after another.
    All,
}

impl Which {
    /// The (package, bench target) pairs this choice runs.
    fn targets(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Ingest => &[(COLLECTOR, "ingest")],
            Self::Detect => &[(COLLECTOR, "detect")],
            Self::Query => &[(COLLECTOR, "query")],
            Self::Profiler => &[(PROFILER, "profiler")],
            Self::All => &[
                (COLLECTOR, "ingest"),
                (COLLECTOR, "detect"),
                (COLLECTOR, "query"),
                (PROFILER, "profiler"),
            ],
        }
    }
}

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The benchmark to run.
    #[arg(value_enum, default_value_t = Which::All)]
    which: Which,
}

/// Runs the chosen benchmarks in release mode, after checking that their targets exist.
pub(crate) fn run(args: &Args) -> Result<()> {
    let targets = args.which.targets();
    let metadata = workspace::metadata()?;
    let missing = targets
        .iter()
        .filter(|(package, name)| {
            !workspace::has_target(&metadata, package, &TargetKind::Bench, name)
        })
        .collect::<Vec<_>>();
    if !missing.is_empty() {
        bail!(
            "no bench target {} yet: each is a `[[bench]] name = \"...\" harness = false` in \
             its crate's Cargo.toml with its code in benches/",
            missing
                .iter()
                .map(|(package, name)| format!("`{package}/{name}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }

    let mut steps = Steps::new("bench");
    for (package, name) in targets {
        steps.step(name, || {
            cmd::run(
                &format!("bench {name}: {package}'s `{name}` benchmark (release build)"),
                &mut cargo(["bench", "-p", package, "--bench", name]),
            )
            .map(drop)
        })?;
    }
    steps.finish();
    println!(
        "\nRecord the figures in BENCHMARKS.md (with the date, the commit and the machine: \
         cores, memory, ClickHouse version)."
    );
    Ok(())
}
