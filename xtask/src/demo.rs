//! `cargo xtask demo`: set the machine up, then run the end-to-end demo binary
//! (`fleetprof-demo` in the `tests` crate), which drives fleetprof's main job from start to end.

use std::process::Command;

use anyhow::{Result, bail};
use cargo_metadata::TargetKind;

use crate::{
    cmd::{self, cargo, is_root},
    setup, workspace,
};

/// The package the demo binary belongs to.
const PACKAGE: &str = "fleetprof-tests";
/// The demo binary.
const BIN: &str = "fleetprof-demo";

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Passed on to the demo: keep what it created (servers' data, repositories) for exploring
    /// afterwards (default: the demo removes it).
    #[arg(long)]
    keep: bool,
}

/// Runs `setup`, builds every binary in release mode, then runs `target/release/fleetprof-demo`.
pub(crate) fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask demo` loads eBPF programs into the kernel and needs root; run it as root"
        );
    }
    setup::ensure()?;

    if !workspace::has_target(&workspace::metadata()?, PACKAGE, &TargetKind::Bin, BIN) {
        bail!(
            "the demo binary `{BIN}` does not exist yet (a `[[bin]]` of {PACKAGE} in tests/Cargo.toml)"
        );
    }
    // The demo runs the profiler, collector and agent binaries beside its own.
    let mut build = cargo([
        "build",
        "--release",
        "--workspace",
        "--bins",
        "--exclude",
        "profiler-ebpf",
    ]);
    build.env_remove("AYA_BUILD_SKIP");
    cmd::run("demo: build fleetprof's binaries (release)", &mut build)?;
    // Run the binary just built: `cargo run -p` would resolve features for one package and
    // rebuild half the dependency tree.
    let bin = workspace::target_dir(&workspace::metadata()?)
        .join("release")
        .join(BIN);
    let mut demo = Command::new(bin);
    if args.keep {
        demo.arg("--keep");
    }
    // The demo profiles with the real eBPF object.
    demo.env_remove("AYA_BUILD_SKIP");
    cmd::run("demo: run fleetprof-demo", &mut demo)?;
    Ok(())
}
