//! `cargo xtask setup`: install what a fresh Debian 12 machine lacks to build and test fleetprof.
//!
//! Every step is checked before it acts, so a second run changes nothing and takes a second or so.
//! What it may do, in order:
//!
//! 1. `apt-get install` the Debian packages in [`APT_PACKAGES`] (with `apt-get update` first),
//!    without starting any service they ship: tests start their own ClickHouse servers.
//! 2. `rustup component add rust-src --toolchain nightly` (the eBPF crate builds `core` itself).
//! 3. Build `bpf-linker` against the nightly toolchain's own libLLVM, through a persistent prefix
//!    [`LLVM_PREFIX`] (bpf-linker keeps an rpath to it).
//!
//! 4. `cargo install cargo-fuzz` (the fuzz targets in `fuzz/`, run by `cargo xtask fuzz`).
//!
//! It never installs or switches Rust toolchains: stable 1.95 and `nightly` are expected to be
//! there already, as they are on the machines fleetprof is developed and tested on.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, fmt_duration, is_root, probe};

/// Debian packages fleetprof's build and tests need, and what for.
pub(crate) const APT_PACKAGES: [(&str, &str); 17] = [
    (
        "clickhouse-server",
        "the ClickHouse the tests and the demo start",
    ),
    ("clickhouse-client", "querying ClickHouse by hand"),
    (
        "protobuf-compiler",
        "protoc, for the wire protocol's generated code",
    ),
    ("git", "the demo's and tests' repositories"),
    ("gcc", "the C linker and the tests' C workloads"),
    (
        "python3.11",
        "a distribution interpreter without frame pointers, for the unwinder's tests",
    ),
    (
        "xz-utils",
        "xz, a stripped distribution binary for the unwinder's tests",
    ),
    (
        "perl",
        "a distribution interpreter for the unwinder's tests",
    ),
    (
        "nodejs",
        "node --perf-basic-prof, JIT code for the perf-map tests",
    ),
    (
        "util-linux",
        "unshare and mount, for the mount-namespace test",
    ),
    ("chromium", "the headless browser the web UI's tests drive"),
    ("chromium-driver", "chromedriver, WebDriver for those tests"),
    ("g++", "the agent tests' C++ services"),
    ("golang-go", "the agent tests' Go services"),
    (
        "openjdk-17-jdk-headless",
        "javac, for the agent eval's Java services",
    ),
    ("python3", "the agent eval's Python services"),
    (
        "debuginfod",
        "a real debuginfod server for the symbol store's tests",
    ),
];

/// Where the links to nightly's libLLVM live. Not under /tmp: bpf-linker is linked with an rpath
/// to `<prefix>/lib` and must keep finding libLLVM there after a reboot.
pub(crate) const LLVM_PREFIX: &str = "/usr/local/lib/fleetprof-llvm";

/// Debian's hook that `invoke-rc.d` and `deb-systemd-invoke` ask before starting a service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Options of `cargo xtask setup`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only report what is missing and exit non-zero if anything is; change nothing
    /// (default: install what is missing).
    #[arg(long)]
    check: bool,
}

/// One thing this machine lacks.
#[derive(Debug)]
enum Missing {
    /// Debian packages that are not installed.
    AptPackages(Vec<&'static str>),
    /// The nightly toolchain's `rust-src` component.
    RustSrc,
    /// A working `bpf-linker` on `PATH`.
    BpfLinker,
    /// `cargo fuzz` (cargo-fuzz), for `cargo xtask fuzz`.
    CargoFuzz,
    /// The unprivileged system user the agent runs repository commands as.
    SandboxUser,
}

/// The system user `fleetprof-agent` runs repository build/test/workload commands as (kept in step
/// with `fleetprof_agent::fix::validate::SANDBOX_USER`).
const SANDBOX_USER: &str = "fleetprof-sandbox";

/// Installs whatever is missing (or, with `--check`, only reports it).
pub(crate) fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    cmd::header("setup: checking what this machine lacks", None);
    let missing = survey()?;

    if missing.is_empty() {
        println!(
            "<== setup: nothing to do, everything is installed ({})",
            fmt_duration(start.elapsed())
        );
        return Ok(());
    }
    if args.check {
        bail!(
            "setup --check: this machine lacks {}; run `cargo xtask setup` as root to install it",
            missing.iter().map(describe).collect::<Vec<_>>().join(", ")
        );
    }
    if !is_root() && missing.iter().any(needs_root) {
        bail!(
            "setup needs root to install {}.\nRun it as root:\n    sudo -E \"$(command -v cargo)\" xtask setup\n\
             or do it by hand:\n{}",
            missing
                .iter()
                .filter(|m| needs_root(m))
                .map(describe)
                .collect::<Vec<_>>()
                .join(" and "),
            manual_steps(&missing)
        );
    }

    let mut done = Vec::new();
    // apt first: building bpf-linker needs gcc as its linker.
    for item in &missing {
        if let Missing::AptPackages(packages) = item {
            install_apt_packages(packages)?;
            done.push(format!("installed {}", packages.join(", ")));
        }
    }
    for item in &missing {
        match item {
            Missing::AptPackages(_) => {}
            Missing::RustSrc => {
                cmd::run(
                    "rustup: add the nightly toolchain's rust-src (the eBPF build compiles core)",
                    Command::new("rustup").args([
                        "component",
                        "add",
                        "rust-src",
                        "--toolchain",
                        "nightly",
                    ]),
                )?;
                done.push("added rust-src to nightly".to_owned());
            }
            Missing::BpfLinker => {
                let version = install_bpf_linker()?;
                done.push(format!("built {version}"));
            }
            Missing::CargoFuzz => {
                cmd::run_with_spinner(
                    "cargo-fuzz: build from crates.io (a minute or two)",
                    // Outside the workspace, so that its .cargo/config.toml does not apply.
                    Command::new("cargo")
                        .args(["install", "--locked", "cargo-fuzz"])
                        .current_dir(std::env::temp_dir()),
                )?;
                done.push("installed cargo-fuzz".to_owned());
            }
            Missing::SandboxUser => {
                cmd::run(
                    "useradd: the agent's unprivileged user for repository commands",
                    Command::new("useradd").args([
                        "--system",
                        "--user-group",
                        "--no-create-home",
                        "--home-dir",
                        "/nonexistent",
                        "--shell",
                        "/usr/sbin/nologin",
                        SANDBOX_USER,
                    ]),
                )?;
                done.push(format!("created user {SANDBOX_USER}"));
            }
        }
    }

    println!(
        "<== setup: {} ({})",
        done.join("; "),
        fmt_duration(start.elapsed())
    );
    Ok(())
}

/// Runs setup as a first step of another task.
pub(crate) fn ensure() -> Result<()> {
    run(&Args { check: false })
}

/// Checks each step, printing one line per item, and returns what is missing.
fn survey() -> Result<Vec<Missing>> {
    let mut missing = Vec::new();

    if probe(Command::new("dpkg-query").arg("--version")).is_none() {
        bail!(
            "dpkg-query does not run: setup supports Debian-like systems only. \
             Install these yourself: {}",
            APT_PACKAGES.map(|(name, _)| name).join(", ")
        );
    }
    let mut packages = Vec::new();
    for (package, what_for) in APT_PACKAGES {
        let status = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]));
        let installed = status.as_deref() == Some("install ok installed");
        report(installed, &format!("{package} ({what_for})"));
        if !installed {
            packages.push(package);
        }
    }
    if !packages.is_empty() {
        missing.push(Missing::AptPackages(packages));
    }

    let components = probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "`rustup component list --toolchain nightly --installed` failed: the nightly toolchain \
         is expected to be preinstalled and setup does not install toolchains",
    )?;
    let has_rust_src = components
        .lines()
        .any(|line| line == "rust-src" || line.starts_with("rust-src-"));
    report(has_rust_src, "rust-src for nightly (building core for bpf)");
    if !has_rust_src {
        missing.push(Missing::RustSrc);
    }

    let linker = probe(Command::new("bpf-linker").arg("--version"));
    report(
        linker.is_some(),
        &format!(
            "{} (links the eBPF object)",
            linker.as_deref().unwrap_or("bpf-linker")
        ),
    );
    if linker.is_none() {
        missing.push(Missing::BpfLinker);
    }

    let fuzz = probe(Command::new("cargo").args(["fuzz", "--version"]));
    report(
        fuzz.is_some(),
        &format!(
            "{} (runs the fuzz targets)",
            fuzz.as_deref().unwrap_or("cargo-fuzz")
        ),
    );
    if fuzz.is_none() {
        missing.push(Missing::CargoFuzz);
    }

    let user = probe(Command::new("id").args(["-u", SANDBOX_USER]));
    report(
        user.is_some(),
        &format!("user {SANDBOX_USER} (the agent runs repository commands as it)"),
    );
    if user.is_none() {
        missing.push(Missing::SandboxUser);
    }

    Ok(missing)
}

/// Prints one line of the survey.
fn report(present: bool, what: &str) {
    let status = if present { "ok     " } else { "missing" };
    println!("    {status}  {what}");
}

/// A short name for a missing item.
fn describe(item: &Missing) -> String {
    match item {
        Missing::AptPackages(packages) => format!("Debian packages {}", packages.join(", ")),
        Missing::RustSrc => "nightly's rust-src".to_owned(),
        Missing::BpfLinker => "bpf-linker".to_owned(),
        Missing::CargoFuzz => "cargo-fuzz".to_owned(),
        Missing::SandboxUser => format!("user {SANDBOX_USER}"),
    }
}

/// Whether installing `item` needs root: apt does, and so does the prefix under /usr/local.
fn needs_root(item: &Missing) -> bool {
    matches!(
        item,
        Missing::AptPackages(_) | Missing::BpfLinker | Missing::SandboxUser
    )
}

/// The commands a person would run to install what is missing without `cargo xtask setup`.
fn manual_steps(missing: &[Missing]) -> String {
    let mut steps = Vec::new();
    for item in missing {
        match item {
            Missing::AptPackages(packages) => steps.push(format!(
                "    sudo apt-get update && sudo apt-get install -y {}",
                packages.join(" ")
            )),
            Missing::RustSrc => {
                steps.push("    rustup component add rust-src --toolchain nightly".to_owned());
            }
            Missing::BpfLinker => steps.push(format!(
                "    # link {LLVM_PREFIX}/lib/libLLVM.so and lib/libLLVM.so.<ver>-rust-<ver>-nightly to\n\
                 \x20   # the file of that name in $(rustc +nightly --print sysroot)/lib, then:\n\
                 \x20   LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --no-default-features --features llvm-<major>"
            )),
            Missing::CargoFuzz => steps.push("    cargo install --locked cargo-fuzz".to_owned()),
            Missing::SandboxUser => steps.push(format!(
                "    sudo useradd --system --user-group --no-create-home --home-dir /nonexistent \
                 --shell /usr/sbin/nologin {SANDBOX_USER}"
            )),
        }
    }
    steps.join("\n")
}

/// `apt-get update` and `apt-get install` the given packages, non-interactively, with service
/// starts denied for the duration.
fn install_apt_packages(packages: &[&str]) -> Result<()> {
    let _deny = DenyServiceStarts::install()?;
    cmd::run(
        "apt-get update: refresh the package lists",
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    cmd::run(
        &format!("apt-get install: {}", packages.join(", ")),
        Command::new("apt-get")
            .args(["install", "-y", "-o", "Dpkg::Options::=--force-confold"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

/// A temporary `/usr/sbin/policy-rc.d` that denies every service start (exit 101), so that
/// installing clickhouse-server does not start a server. Removed on drop; an existing policy is
/// left untouched.
struct DenyServiceStarts {
    /// The file this guard created, if it created one.
    created: Option<PathBuf>,
}

impl DenyServiceStarts {
    /// Writes the policy unless one already exists.
    fn install() -> Result<Self> {
        let path = Path::new(POLICY_RC_D);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(path);
        match file {
            Ok(mut file) => {
                file.write_all(
                    b"#!/bin/sh\n# Written by `cargo xtask setup` while it runs apt-get: \
                      start no services.\nexit 101\n",
                )
                .with_context(|| format!("could not write {POLICY_RC_D}"))?;
                println!("    wrote {POLICY_RC_D} (deny service starts while installing)");
                Ok(Self {
                    created: Some(path.to_path_buf()),
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                println!("    {POLICY_RC_D} exists; leaving it as it is");
                Ok(Self { created: None })
            }
            Err(err) => Err(err).with_context(|| format!("could not create {POLICY_RC_D}")),
        }
    }
}

impl Drop for DenyServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            match fs::remove_file(path) {
                Ok(()) => println!("    removed {}", path.display()),
                Err(err) => eprintln!(
                    "warning: could not remove {}: {err}; remove it by hand",
                    path.display()
                ),
            }
        }
    }
}

/// Builds and installs bpf-linker against nightly's libLLVM; returns `bpf-linker --version`.
fn install_bpf_linker() -> Result<String> {
    let sysroot = probe(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed: is the nightly toolchain installed?")?;
    let nightly_lib = Path::new(&sysroot).join("lib");
    let names = fs::read_dir(&nightly_lib)
        .with_context(|| format!("could not list {}", nightly_lib.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect::<Vec<_>>();
    let Some(libllvm) = find_libllvm(&names) else {
        bail!(
            "no libLLVM.so.<version>-rust-<version>-nightly in {} (it holds: {})",
            nightly_lib.display(),
            names.join(", ")
        );
    };
    let Some(major) = llvm_major(&libllvm) else {
        bail!("could not read an LLVM major version from {libllvm}");
    };
    let target = nightly_lib.join(&libllvm);

    let prefix_lib = Path::new(LLVM_PREFIX).join("lib");
    cmd::header(
        &format!("bpf-linker: link {LLVM_PREFIX} to nightly's LLVM {major}"),
        None,
    );
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("could not create {}", prefix_lib.display()))?;
    for link_name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(link_name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link)
                .with_context(|| format!("could not replace {}", link.display()))?;
        }
        symlink(&target, &link).with_context(|| {
            format!("could not link {} -> {}", link.display(), target.display())
        })?;
        println!("    {} -> {}", link.display(), target.display());
    }

    cmd::run_with_spinner(
        &format!("bpf-linker: build from crates.io against LLVM {major} (a few minutes)"),
        // --force: a bpf-linker that no longer runs (say its libLLVM link is gone) is still
        // "installed" to cargo, which would otherwise skip it. Run outside the workspace so that
        // its .cargo/config.toml does not apply.
        Command::new("cargo")
            .args([
                "install",
                "--force",
                "bpf-linker",
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .current_dir(LLVM_PREFIX),
    )?;

    probe(Command::new("bpf-linker").arg("--version")).context(
        "bpf-linker was installed but `bpf-linker --version` does not run: \
         is cargo's bin directory (~/.cargo/bin) on PATH?",
    )
}

/// The nightly libLLVM file among `names`: `libLLVM.so.<version>-rust-<rustc version>-nightly`.
fn find_libllvm(names: &[String]) -> Option<String> {
    let mut candidates = names
        .iter()
        .filter(|name| {
            name.starts_with("libLLVM.so.") && name.contains("-rust-") && name.ends_with("-nightly")
        })
        .collect::<Vec<_>>();
    candidates.sort();
    candidates.last().map(|name| (*name).clone())
}

/// The LLVM major version in a libLLVM file name: 22 in `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn llvm_major(file_name: &str) -> Option<u32> {
    let version = file_name.strip_prefix("libLLVM.so.")?;
    let end = version
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(version.len());
    version[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The versioned library is picked out of a real nightly sysroot's `lib/` listing.
    #[test]
    fn finds_nightly_libllvm_among_sysroot_files() {
        let names = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
            "rustlib",
        ]
        .map(String::from);
        assert_eq!(
            find_libllvm(&names).as_deref(),
            Some("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        assert_eq!(find_libllvm(&names[2..]), None);
    }

    /// The major version is read from the name, whatever its width.
    #[test]
    fn reads_llvm_major_from_file_name() {
        assert_eq!(llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"), Some(22));
        assert_eq!(llvm_major("libLLVM.so.9-rust-1.40.0-nightly"), Some(9));
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
    }
}
