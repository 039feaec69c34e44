//! `cargo xtask fault`: the fault run. Builds the binaries and runs `fleetprof-fault` (in the
//! `tests` crate): the real profiler, collector and ClickHouse on loopback while the collector is
//! SIGKILLed (spool filesystem full) and SIGTERMed, ClickHouse is stopped and hung, a poison
//! batch is pushed and the collector is flooded with connections; it ends with the conservation
//! check (samples acknowledged = samples stored, no batch twice). Needs root. Bounded: every
//! wait inside has a deadline; a run takes a minute or two.

use anyhow::{Result, bail};

use crate::{
    cmd::{self, cargo, is_root},
    setup, workspace,
};

/// Options of `cargo xtask fault`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs `setup`, builds the binaries (debug), then runs `target/debug/fleetprof-fault`.
pub(crate) fn run(_args: &Args) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask fault` loads eBPF programs and mounts a tmpfs; run it as root");
    }
    setup::ensure()?;
    let mut build = cargo([
        "build",
        "--workspace",
        "--bins",
        "--exclude",
        "profiler-ebpf",
    ]);
    build.env_remove("AYA_BUILD_SKIP");
    cmd::run("fault: build fleetprof's binaries", &mut build)?;
    let bin = workspace::target_dir(&workspace::metadata()?)
        .join("debug")
        .join("fleetprof-fault");
    let mut fault = std::process::Command::new(bin);
    fault.env_remove("AYA_BUILD_SKIP");
    cmd::run("fault: run fleetprof-fault", &mut fault)?;
    println!("record the figures above in BENCHMARKS.md (section \"Fault run\")");
    Ok(())
}
