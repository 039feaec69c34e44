//! Builds `profiler-ebpf` for the bpf target with aya-build, so `cargo build` of the profiler
//! yields a binary with its eBPF object embedded. `AYA_BUILD_SKIP=1` skips it (for `cargo check`
//! without the nightly toolchain); the object is then empty and loading fails with a clear error.
//!
//! `FLEETPROF_EBPF_OBJECT=/abs/path` embeds an object built beforehand (`cargo xtask build-ebpf`)
//! instead: `cargo xtask test` builds it once, so that none of its cargo invocations (each with
//! its own feature set, hence its own run of this script) builds `core` for BPF again.

use anyhow::{Context as _, anyhow};

/// An eBPF object built beforehand, to embed as it is.
const PREBUILT_OBJECT: &str = "FLEETPROF_EBPF_OBJECT";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed={PREBUILT_OBJECT}");
    if let Some(prebuilt) = std::env::var_os(PREBUILT_OBJECT).filter(|p| !p.is_empty()) {
        let prebuilt = std::path::PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
        std::fs::copy(&prebuilt, out.join("fleetprof-profiler-ebpf")).with_context(|| {
            format!(
                "{PREBUILT_OBJECT}={}: cannot copy the prebuilt eBPF object (build it with \
                 `cargo xtask build-ebpf`, or unset {PREBUILT_OBJECT} to build it here)",
                prebuilt.display()
            )
        })?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "profiler-ebpf")
        .ok_or_else(|| anyhow!("package profiler-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent directory for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    let skip = std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v != "0" && !v.is_empty());
    if skip {
        // aya-build returns early without writing the object; leave an empty one so
        // `include_bytes!` compiles and the loader can say the object is missing.
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
        let obj = out.join("fleetprof-profiler-ebpf");
        if !obj.exists() {
            std::fs::write(&obj, []).context("write empty eBPF object")?;
        }
    }
    // aya-build forwards the inner cargo's stderr as build-script warnings; keep its progress
    // lines ("Compiling ...") out of every build's output and let only real diagnostics through.
    // SAFETY: build scripts are single-threaded; the inner cargo inherits the variable.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
