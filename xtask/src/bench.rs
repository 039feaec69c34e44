//! `cargo xtask bench`: the collector's benchmarks, whose figures go into `BENCHMARKS.md`.
//!
//! Each is a `[[bench]]` target of `fleetprof-collector` with `harness = false` (a plain `main`
//! that measures and prints its own figures).

use anyhow::{Result, bail};
use cargo_metadata::TargetKind;

use crate::{
    cmd::{self, Steps, cargo},
    workspace,
};

/// The package the benchmarks belong to.
const PACKAGE: &str = "fleetprof-collector";

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Which {
    /// Ingest throughput: profile batches into ClickHouse (needs clickhouse-server).
    Ingest,
    /// Regression detection over (service, function) series.
    Detect,
    /// Every benchmark above, one after another.
    All,
}

impl Which {
    /// The bench target names this choice runs.
    fn targets(self) -> &'static [&'static str] {
        match self {
            Self::Ingest => &["ingest"],
            Self::Detect => &["detect"],
            Self::All => &["ingest", "detect"],
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
        .filter(|name| !workspace::has_target(&metadata, PACKAGE, &TargetKind::Bench, name))
        .collect::<Vec<_>>();
    if !missing.is_empty() {
        bail!(
            "{PACKAGE} has no bench target {} yet: each is a `[[bench]] name = \"...\" \
             harness = false` in collector/Cargo.toml with its code in collector/benches/",
            missing
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }

    let mut steps = Steps::new("bench");
    for name in targets {
        steps.step(name, || {
            cmd::run(
                &format!("bench {name}: {PACKAGE}'s `{name}` benchmark (release build)"),
                &mut cargo(["bench", "-p", PACKAGE, "--bench", name]),
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
