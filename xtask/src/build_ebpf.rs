//! `cargo xtask build-ebpf`: build the eBPF programs on their own and say where the object is.
//!
//! The profiler does not need this: `profiler/build.rs` builds and embeds the same object through
//! aya-build. This task is for looking at the object (`readelf -S`, `bpftool prog load`) or for
//! iterating on `profiler-ebpf/src/main.rs` with the compiler's messages on their own.
//! `cargo xtask test` builds the object here once and hands it to every later build through
//! [`PREBUILT_OBJECT`].

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::{
    cmd::{self, cargo, probe},
    workspace,
};

/// The eBPF crate.
const PACKAGE: &str = "profiler-ebpf";
/// Its binary target, the eBPF object.
const BIN: &str = "fleetprof-profiler-ebpf";
/// The little-endian BPF target (every host fleetprof runs on is little-endian).
const TARGET: &str = "bpfel-unknown-none";

/// Tells `profiler/build.rs` to embed this object instead of building one itself.
pub(crate) const PREBUILT_OBJECT: &str = "FLEETPROF_EBPF_OBJECT";

/// Options of `cargo xtask build-ebpf` (none yet).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Builds `profiler-ebpf` for `bpfel-unknown-none` with nightly and prints the object's path.
pub(crate) fn run(_args: &Args) -> Result<()> {
    let object = build_object()?;
    let size = fs::metadata(&object)
        .map(|m| format!("{} KiB", m.len().div_ceil(1024)))
        .unwrap_or_else(|err| format!("not found: {err}"));
    println!();
    println!("eBPF object: {} ({size})", object.display());
    println!("  inspect it with: readelf -S {}", object.display());
    Ok(())
}

/// Builds the eBPF object (incrementally) and returns its path.
pub(crate) fn build_object() -> Result<PathBuf> {
    if probe(Command::new("bpf-linker").arg("--version")).is_none() {
        bail!("bpf-linker does not run; install it with `cargo xtask setup` (as root)");
    }

    let mut build = cargo([
        "+nightly",
        "build",
        "-p",
        PACKAGE,
        "--bins",
        "--release",
        "--target",
        TARGET,
        "-Z",
        "build-std=core",
    ]);
    // The flags aya-build passes (profiler/build.rs), so that this object is the one the
    // profiler embeds: BTF for the loader, debug info for the verifier's messages.
    build
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
                "-Cdebuginfo=2".to_owned(),
                "-Clink-arg=--btf".to_owned(),
            ]
            .join("\x1f"),
        )
        // Let `+nightly` choose the compiler, not what `cargo xtask` itself runs under.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd::run(
        &format!("build-ebpf: build {PACKAGE} for {TARGET} with nightly"),
        &mut build,
    )?;

    let object = workspace::target_dir(&workspace::metadata()?)
        .join(TARGET)
        .join("release")
        .join(BIN);
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but left no object at {}",
            object.display()
        );
    }
    Ok(object)
}
