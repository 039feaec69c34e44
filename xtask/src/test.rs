//! `cargo xtask test`: every test fleetprof has, in the order that fails fastest.
//!
//! 1. `setup` (installs what is missing; a no-op on a prepared machine),
//! 2. the eBPF object, built once with nightly (`cargo xtask build-ebpf`) and embedded by every
//!    later build (`FLEETPROF_EBPF_OBJECT`), so no step builds `core` for BPF again,
//! 3. `cargo fmt --all --check` and `cargo clippy --workspace --all-targets -- -D warnings`,
//! 4. unit and doc tests of every crate (`cargo test --workspace`; root only for the profiler's
//!    table-loader test, which loads the eBPF sampler for its maps),
//! 5. the end-to-end tests in `tests/` (`fleetprof-tests`): real eBPF programs in this kernel,
//!    real ClickHouse servers, real gRPC; one at a time, as root.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use crate::{
    build_ebpf::{self, PREBUILT_OBJECT},
    cmd::{self, Steps, cargo, is_root},
    setup,
};

/// Set, it makes `profiler/build.rs` skip building the eBPF object; never wanted here.
const AYA_BUILD_SKIP: &str = "AYA_BUILD_SKIP";

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Skip `cargo fmt --check` and `cargo clippy` (default: run them first).
    #[arg(long)]
    skip_lint: bool,

    /// Run the end-to-end tests N times in a row, stopping at the first failing run (default: 1).
    /// A test that fails one run in N is flaky, and a flaky test is a defect.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,

    /// Passed to the test binaries: a test-name filter, and libtest flags such as
    /// `--nocapture`, with or without a `--` before them (default: none, run every test).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FILTER"
    )]
    filter: Vec<String>,
}

impl Args {
    /// What goes after `cargo test ... --`: the filter and flags, minus any `--` written the way
    /// `cargo test` takes it (cargo's own `--` is added by [`run_cargo`]).
    pub(crate) fn test_binary_args(&self) -> Vec<String> {
        self.filter
            .iter()
            .filter(|arg| *arg != "--")
            .cloned()
            .collect()
    }
}

/// Runs every step, stopping at the first that fails, and prints a summary.
pub(crate) fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask test` loads eBPF programs into the kernel and needs root; run it as root \
             (the unit tests alone, `cargo test`, need root only for the profiler's table-loader test)"
        );
    }
    if std::env::var_os(AYA_BUILD_SKIP).is_some() {
        println!("note: ignoring {AYA_BUILD_SKIP}: the tests need the real eBPF object");
    }

    let test_args = args.test_binary_args();
    let mut steps = Steps::new("test");
    steps.step("setup", setup::ensure)?;
    let mut object = PathBuf::new();
    steps.step("eBPF object", || {
        object = build_ebpf::build_object()?;
        Ok(())
    })?;
    let object = &object;

    if args.skip_lint {
        println!("\nnote: --skip-lint: not running cargo fmt and cargo clippy");
    } else {
        steps.step("fmt", || {
            run_cargo(
                "fmt: check formatting of every crate",
                ["fmt", "--all", "--check"],
                &[],
                object,
            )
        })?;
        steps.step("clippy", || {
            run_cargo(
                "clippy: lint every crate and target, warnings are errors",
                [
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ],
                &[],
                object,
            )
        })?;
    }

    steps.step("unit and doc tests", || {
        run_cargo(
            "unit and doc tests of every crate",
            [
                "test",
                "--workspace",
                "--exclude",
                "profiler-ebpf",
                "--exclude",
                "fleetprof-tests",
            ],
            &test_args,
            object,
        )
    })?;

    steps.step("binaries", || {
        run_cargo(
            "build the binaries the end-to-end tests run (profiler, collector, agent)",
            [
                "build",
                "--workspace",
                "--bins",
                "--exclude",
                "profiler-ebpf",
            ],
            &[],
            object,
        )
    })?;

    for run in 1..=args.repeat {
        let (name, title) = if args.repeat == 1 {
            ("end-to-end tests".to_owned(), String::new())
        } else {
            (
                format!("end-to-end tests, run {run}/{}", args.repeat),
                format!(" (run {run} of {})", args.repeat),
            )
        };
        steps.step(&name, || {
            run_cargo(
                &format!(
                    "end-to-end tests: real eBPF, real ClickHouse, real gRPC (root, one at a \
                     time){title}"
                ),
                ["test", "-p", "fleetprof-tests", "--no-fail-fast"],
                &[&["--test-threads=1".to_owned()], test_args.as_slice()].concat(),
                object,
            )
        })?;
    }

    steps.finish();
    Ok(())
}

/// Runs `cargo <args> [-- <test_args>]` in the workspace root, without `AYA_BUILD_SKIP`, with
/// the profiler embedding the eBPF `object` built by the first step.
fn run_cargo<const N: usize>(
    title: &str,
    args: [&str; N],
    test_args: &[String],
    object: &Path,
) -> Result<()> {
    let mut cmd: Command = cargo(args);
    if !test_args.is_empty() {
        cmd.arg("--").args(test_args);
    }
    cmd.env_remove(AYA_BUILD_SKIP).env(PREBUILT_OBJECT, object);
    cmd::run(title, &mut cmd).map(drop)
}
