//! `cargo xtask`: fleetprof's developer tasks.
//!
//! The alias in `.cargo/config.toml` makes `cargo xtask <task>` run this binary from anywhere in
//! the workspace. Every task prints each command it runs, so that any step can be repeated by
//! hand, and fails with the step that failed.

mod bench;
mod build_ebpf;
mod cmd;
mod demo;
mod eval;
mod fault;
mod fuzz;
mod setup;
mod test;
mod workspace;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// fleetprof's developer tasks. Start with `cargo xtask demo` or `cargo xtask test` (as root on a
/// Debian 12 machine): both run `cargo xtask setup` first.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    after_help = "Examples:
  cargo xtask setup                    # once per machine, as root; seconds when nothing is missing
  cargo xtask test                     # what CI runs (.ci/run)
  cargo xtask test --skip-lint energy  # only tests whose name contains `energy`, no fmt/clippy
  cargo xtask test energy --nocapture  # the same, with the tests' output shown
  cargo xtask bench ingest             # one benchmark; figures go into BENCHMARKS.md
  cargo xtask fuzz sql_check --seconds 60  # one fuzz target for a minute
  cargo xtask test --repeat 3 --skip-lint  # the end-to-end tests three times in a row"
)]
struct Cli {
    /// The task to run.
    #[command(subcommand)]
    task: Task,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Task {
    /// Install what this machine lacks: Debian packages (clickhouse-server, clickhouse-client,
    /// protobuf-compiler, git, gcc), nightly's rust-src, bpf-linker. Idempotent: a second run
    /// changes nothing and takes seconds. Needs root when anything apt or bpf-linker is missing.
    Setup(setup::Args),
    /// Build the eBPF programs (profiler-ebpf) for bpfel-unknown-none with nightly and print
    /// where the object is. The profiler's build script does this by itself; this is for
    /// inspecting the object.
    BuildEbpf(build_ebpf::Args),
    /// Run every test: setup, fmt, clippy, unit and doc tests, then the end-to-end tests (real
    /// eBPF, real ClickHouse, real gRPC). Needs root.
    Test(test::Args),
    /// Run the collector's benchmarks (release build) and say where to record the figures.
    Bench(bench::Args),
    /// Run setup, then the end-to-end demo (fleetprof-demo). Needs root.
    Demo(demo::Args),
    /// Inject faults into a running fleet (collector killed, ClickHouse stopped and hung, a poison
    /// batch, a full spool filesystem, a connection flood) and check that every acknowledged
    /// sample is stored exactly once. Needs root.
    Fault(fault::Args),
    /// Measure the agent on a corpus of seeded regressions in six languages: fixed / validated /
    /// refused per case (`cargo xtask eval agent --llm openai --model M`).
    Eval(eval::Args),
    /// Run the fuzz targets in fuzz/ (cargo-fuzz, nightly) for a bounded time each: batch
    /// decoding and validation, the diff parser, the SQL checker, perf-map parsing.
    Fuzz(fuzz::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole chain of causes on one line, and no backtrace: what failed
            // is said in words.
            eprintln!("\nerror: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen task.
fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Setup(args) => setup::run(&args),
        Task::BuildEbpf(args) => build_ebpf::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Fault(args) => fault::run(&args),
        Task::Eval(args) => eval::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    /// The command-line definition is consistent (clap's own checks).
    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Everything after `test`'s options reaches the test binaries, flags included.
    #[test]
    fn test_forwards_filter_and_libtest_flags() {
        let cli = Cli::try_parse_from(["xtask", "test", "--skip-lint", "energy", "--nocapture"])
            .expect("parses");
        let Task::Test(args) = cli.task else {
            panic!("not the test task: {:?}", cli.task)
        };
        assert_eq!(
            format!("{args:?}"),
            r#"Args { skip_lint: true, repeat: 1, filter: ["energy", "--nocapture"] }"#
        );
        assert_eq!(args.test_binary_args(), ["energy", "--nocapture"]);

        // Written the way `cargo test` takes it, the `--` is dropped: cargo adds its own.
        let cli =
            Cli::try_parse_from(["xtask", "test", "energy", "--", "--nocapture"]).expect("parses");
        let Task::Test(args) = cli.task else {
            panic!("not the test task: {:?}", cli.task)
        };
        assert_eq!(args.test_binary_args(), ["energy", "--nocapture"]);
    }
}
