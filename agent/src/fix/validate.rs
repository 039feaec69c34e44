//! Validation in a separate `git worktree`: the patch applies, the repository's build and test
//! commands pass, and (with a workload and a re-profiling hook) the function's share is back near its
//! baseline. The user's work tree is never touched.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::repo::{RepoError, git};

/// The `[validate]` table of a target repository's `fleetprof.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateConfig {
    /// Build command, run with `sh -c` in the worktree. Default none.
    pub build: Option<String>,
    /// Test command. Default none.
    pub test: Option<String>,
    /// Workload command the re-profiling hook runs and profiles. Default none.
    pub workload: Option<String>,
    /// Per-command timeout in seconds. Default 1800.
    pub timeout_secs: u64,
    /// How much of the regression may remain: the fix passes when the re-profiled share is at most
    /// `baseline + tolerance × (regressed − baseline)`. Default 0.5: a few seconds of re-profiling
    /// carry a point or two of noise, so "at least half of the regression gone" is what a short
    /// run can tell reliably.
    pub tolerance: f64,
    /// Interleaved re-profiling rounds: each round profiles the code before the root cause, the
    /// regressed code and the fix, in that order. Default 5 (at least 2, for an interval): with 3,
    /// a Go service's round-to-round spread left a 10-point saving short of significance.
    pub rounds: u32,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            build: None,
            test: None,
            workload: None,
            timeout_secs: 1800,
            tolerance: 0.5,
            rounds: 5,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RepoConfigFile {
    #[serde(default)]
    validate: ValidateConfig,
}

/// What can go wrong validating.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// `fleetprof.toml` is not valid.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A git operation failed.
    #[error(transparent)]
    Git(#[from] RepoError),
    /// A file could not be written or a command not started.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ValidateConfig {
    /// Reads `fleetprof.toml` at the repository root; a missing file gives the defaults.
    pub fn load(repo: &Path) -> Result<ValidateConfig, ValidateError> {
        let path = repo.join("fleetprof.toml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(ValidateConfig::default());
        };
        let f: RepoConfigFile = toml::from_str(&text).map_err(|source| ValidateError::Config {
            path,
            source: Box::new(source),
        })?;
        Ok(f.validate)
    }
}

impl ValidateConfig {
    /// Reads `fleetprof.toml` as committed at `rev` (the base the patch applies to), never from a
    /// patched tree: a patch cannot change the commands that judge it. A missing file gives the
    /// defaults.
    pub fn load_at(repo: &Path, rev: &str) -> Result<ValidateConfig, ValidateError> {
        let Ok(text) = git(repo, &["show", &format!("{rev}:fleetprof.toml")]) else {
            return Ok(ValidateConfig::default());
        };
        let f: RepoConfigFile = toml::from_str(&text).map_err(|source| ValidateError::Config {
            path: PathBuf::from(format!("{rev}:fleetprof.toml")),
            source: Box::new(source),
        })?;
        Ok(f.validate)
    }
}

/// Why a patch may not touch `path` (repository-relative), if it may not: the validation config,
/// CI workflows, build scripts and tests decide whether a fix is good, so a fix that changes them
/// proves nothing.
pub fn protected_path(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let dirs: Vec<&str> = path.split('/').collect();
    let in_dir = |d: &[&str]| {
        dirs[..dirs.len().saturating_sub(1)]
            .iter()
            .any(|x| d.contains(x))
    };
    if name == "fleetprof.toml" {
        Some("the validation commands (fleetprof.toml)")
    } else if path.starts_with(".github/")
        || path.starts_with(".gitlab")
        || path.starts_with(".circleci/")
        || name == ".gitlab-ci.yml"
        || name == "Jenkinsfile"
        || name == ".travis.yml"
    {
        Some("CI configuration")
    } else if matches!(
        name,
        "build.rs"
            | "Makefile"
            | "makefile"
            | "GNUmakefile"
            | "CMakeLists.txt"
            | "configure"
            | "meson.build"
            | "build.gradle"
            | "build.gradle.kts"
            | "pom.xml"
            | "setup.py"
            | "Cargo.toml"
            | "go.mod"
            | "package.json"
    ) || name.ends_with(".mk")
        || name.ends_with(".cmake")
    {
        Some("a build script")
    } else if in_dir(&["tests", "test", "testdata", "__tests__", "spec"])
        || name.ends_with("_test.go")
        || name.ends_with("_test.py")
        || (name.starts_with("test_") && name.ends_with(".py"))
        || name.ends_with("Test.java")
        || name.ends_with("_test.c")
        || name.ends_with("_test.cc")
        || name.ends_with("_test.cpp")
    {
        Some("the tests")
    } else {
        None
    }
}

/// Re-profiles a workload in a worktree and returns the function's share of its CPU (0..=1).
///
/// The caller provides it (the CLI wires it to the real profiler); validation calls it only when the
/// repository declares a workload.
pub trait Reprofiler: Send + Sync {
    /// Runs `workload` in `worktree` under the profiler and returns `function`'s share.
    fn share(&self, worktree: &Path, workload: &str, function: &str) -> Result<f64, String>;

    /// Runs `workload` in `worktree` under the profiler and returns what one round measured. The
    /// default, for hooks that only know shares, holds the rest of the workload at 10,000 samples
    /// a second and derives the function's samples from its share (so such a hook cannot show an
    /// absorbed cost).
    fn measure(
        &self,
        worktree: &Path,
        workload: &str,
        function: &str,
    ) -> Result<Measurement, String> {
        let share = self.share(worktree, workload, function)?.clamp(0.0, 0.99);
        let rest = 10_000u64;
        let through = (share / (1.0 - share) * rest as f64).round() as u64;
        Ok(Measurement {
            samples: through + rest,
            through,
            others: Default::default(),
            work: None,
            seconds: 1.0,
        })
    }
}

/// What one re-profiling round of one build measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurement {
    /// The workload's CPU samples (all its processes).
    pub samples: u64,
    /// Samples whose stack passes through the regressed function.
    pub through: u64,
    /// Samples not through the regressed function, per other function on their stacks (each
    /// function counted once per sample): where an absorbed cost would show.
    pub others: std::collections::BTreeMap<String, u64>,
    /// Units of work the workload reported while it was recorded (see `FLEETPROF_WORK_FILE` in
    /// the README), if it reports any.
    pub work: Option<f64>,
    /// Seconds recorded.
    pub seconds: f64,
}

/// One step of validation and how it went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `apply`, `build`, `test`, `reprofile`.
    pub step: String,
    /// The command or a description.
    pub command: String,
    /// Whether it passed.
    pub passed: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// Output tail or a note.
    pub detail: String,
    /// For `reprofile`: the interleaved rounds' statistic (means, confidence intervals), for PR.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
}

/// A worktree on a fresh branch, removed on drop (the branch stays unless [`Worktree::discard`]).
#[derive(Debug)]
pub struct Worktree {
    repo: PathBuf,
    dir: tempfile::TempDir,
    branch: String,
    removed: bool,
}

impl Worktree {
    /// Creates branch `branch` at `base` in a new worktree outside the repository (resets the branch if
    /// it exists from an earlier attempt).
    pub fn create(repo: &Path, branch: &str, base: &str) -> Result<Worktree, ValidateError> {
        let dir = tempfile::Builder::new()
            .prefix("fleetprof-fix-")
            .tempdir()
            .map_err(|source| ValidateError::Io {
                what: "creating a temporary directory".into(),
                source,
            })?;
        // The sandbox user runs the commands in the worktree, so it must be able to reach it (not
        // to list its neighbours).
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).map_err(
                |source| ValidateError::Io {
                    what: "opening the worktree's directory to the sandbox user".into(),
                    source,
                },
            )?;
        }
        let path = dir.path().join("wt");
        git(
            repo,
            &[
                "worktree",
                "add",
                "--quiet",
                "-B",
                branch,
                path.to_str().unwrap_or_default(),
                base,
            ],
        )?;
        Ok(Worktree {
            repo: repo.to_path_buf(),
            dir,
            branch: branch.to_string(),
            removed: false,
        })
    }

    /// The worktree's directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("wt")
    }

    /// The branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Removes the worktree and deletes its branch (a rejected patch leaves nothing behind).
    pub fn discard(mut self) {
        self.remove();
        let _ = git(&self.repo, &["branch", "-D", &self.branch]);
    }

    fn remove(&mut self) {
        if !self.removed {
            let p = self.path();
            let _ = git(
                &self.repo,
                &[
                    "worktree",
                    "remove",
                    "--force",
                    p.to_str().unwrap_or_default(),
                ],
            );
            let _ = git(&self.repo, &["worktree", "prune"]);
            self.removed = true;
        }
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Environment variables a repository's commands may see: what toolchains need to find
/// themselves and a writable cache. Everything else — tokens, model keys, cloud credentials — is
/// dropped.
pub const ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TERM",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CC",
    "CXX",
    "GOCACHE",
    "GOPATH",
    "GOFLAGS",
    "GOTOOLCHAIN",
    "GOPROXY",
    "JAVA_HOME",
];

/// How much of a command's output is kept (its tail is reported); the rest is read and dropped.
pub const OUTPUT_CAP: usize = 1 << 20;

/// Whether commands can get a fresh network namespace here (root, and `unshare` works).
fn netns_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("unshare")
            .args(["--net", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The system user repository commands run as when the agent runs as root (`cargo xtask setup`
/// creates it). Without it, `nobody:nogroup` (65534:65534).
pub const SANDBOX_USER: &str = "fleetprof-sandbox";

/// The uid and gid repository commands run as, when the agent is root; `None` otherwise (an
/// unprivileged agent cannot switch users, and its commands already run unprivileged).
pub fn sandbox_ids() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    static IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    Some(*IDS.get_or_init(|| {
        let name = std::ffi::CString::new(SANDBOX_USER).unwrap_or_default();
        // SAFETY: getpwnam returns null or a pointer to a static passwd entry, read at once; the
        // OnceLock makes this the only call from this code.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            tracing::warn!(
                "user {SANDBOX_USER} does not exist (run `cargo xtask setup`); repository commands run as 65534:65534"
            );
            (65534, 65534)
        } else {
            // SAFETY: pw is non-null and points to a valid passwd entry.
            unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
        }
    }))
}

/// Changes the owner of `path` and everything under it (symlinks themselves, never their
/// targets), so that the sandbox user can write a worktree and root can use git on it afterwards.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The private area of one command run as the sandbox user: its HOME, TMPDIR, CARGO_HOME,
/// GOCACHE and GOPATH, and mount points where the toolchains under root's home are bound read-only
/// (the sandbox user cannot traverse `/root`). Removed on drop.
struct Private {
    dir: tempfile::TempDir,
    /// `(source, target)` read-only bind mounts made in the command's mount namespace.
    binds: Vec<(std::ffi::CString, std::ffi::CString)>,
    env: Vec<(String, std::ffi::OsString)>,
}

impl Private {
    fn create(uid: u32, gid: u32) -> std::io::Result<Private> {
        let dir = tempfile::Builder::new()
            .prefix("fleetprof-sandbox-")
            .tempdir()?;
        let p = dir.path();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let from_env_or_home = |var: &str, sub: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(sub)))
                .filter(|d| d.is_dir())
        };
        let mut binds = Vec::new();
        let mut env: Vec<(String, std::ffi::OsString)> = Vec::new();
        for sub in ["home", "tmp", "cargo", "gocache", "gopath"] {
            std::fs::create_dir(p.join(sub))?;
        }
        let cstr = |x: &Path| {
            std::ffi::CString::new(x.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)
        };
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(rustup) = from_env_or_home("RUSTUP_HOME", ".rustup") {
            std::fs::create_dir(p.join("rustup"))?;
            binds.push((cstr(&rustup)?, cstr(&p.join("rustup"))?));
            env.push(("RUSTUP_HOME".into(), p.join("rustup").into()));
        }
        if let Some(cargo_bin) = from_env_or_home("CARGO_HOME", ".cargo").map(|c| c.join("bin"))
            && cargo_bin.is_dir()
        {
            std::fs::create_dir(p.join("cargo-bin"))?;
            binds.push((cstr(&cargo_bin)?, cstr(&p.join("cargo-bin"))?));
            let dirs: Vec<PathBuf> = std::env::split_paths(&path)
                .map(|d| {
                    if d == cargo_bin {
                        p.join("cargo-bin")
                    } else {
                        d
                    }
                })
                .collect();
            path = std::env::join_paths(dirs).map_err(std::io::Error::other)?;
        }
        let mut goflags = std::env::var_os("GOFLAGS").unwrap_or_default();
        // The worktree's git metadata lives in the (unreadable) main repository, so go's VCS
        // stamping would fail the build.
        if !goflags.is_empty() {
            goflags.push(" ");
        }
        goflags.push("-buildvcs=false");
        env.extend([
            ("PATH".into(), path),
            ("HOME".into(), p.join("home").into()),
            ("TMPDIR".into(), p.join("tmp").into()),
            ("CARGO_HOME".into(), p.join("cargo").into()),
            ("GOCACHE".into(), p.join("gocache").into()),
            ("GOPATH".into(), p.join("gopath").into()),
            ("GOFLAGS".into(), goflags),
            ("USER".into(), SANDBOX_USER.into()),
            ("LOGNAME".into(), SANDBOX_USER.into()),
        ]);
        chown_tree(p, uid, gid)?;
        Ok(Private { dir, binds, env })
    }
}

/// Runs `cmd` with `sh -c` in `dir` the way repository code must run: a scrubbed environment
/// ([`ENV_ALLOW`]), its own process group (killed as a whole on timeout, and after it exits, so
/// nothing it started is left behind), output capped at [`OUTPUT_CAP`], and no network (a fresh
/// network namespace) where the host allows it. When the agent is root the command runs as the
/// unprivileged [`SANDBOX_USER`] with its own HOME and caches; `dir` is handed to that user for
/// the run and back to root after it.
pub fn run_command(step: &str, cmd: &str, dir: &Path, timeout: Duration) -> Check {
    let fail = |detail: String| Check {
        step: step.into(),
        command: cmd.into(),
        passed: false,
        seconds: 0.0,
        detail,
        statistic: None,
    };
    let Some((uid, gid)) = sandbox_ids() else {
        return run_sandboxed(step, cmd, dir, timeout, None);
    };
    let private = match Private::create(uid, gid) {
        Ok(p) => p,
        Err(e) => return fail(format!("could not prepare the sandbox user's home: {e}")),
    };
    // SAFETY: geteuid/getegid have no preconditions.
    let (ruid, rgid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if let Err(e) = chown_tree(dir, uid, gid) {
        let _ = chown_tree(dir, ruid, rgid);
        return fail(format!(
            "could not hand {} to the sandbox user: {e}",
            dir.display()
        ));
    }
    let mut c = run_sandboxed(step, cmd, dir, timeout, Some((uid, gid, &private)));
    // Back to the agent: git refuses a repository owned by someone else, and nothing the command
    // left must stay writable by the sandbox user.
    if let Err(e) = chown_tree(dir, ruid, rgid) {
        c.passed = false;
        c.detail.push_str(&format!(
            "\ncould not take {} back from the sandbox user: {e}",
            dir.display()
        ));
    }
    drop(private.dir);
    c
}

/// A re-profiled workload's sandbox: the same user, private area and scrubbed environment as
/// [`run_command`], but the network of the host (a workload may serve and load itself over
/// loopback) and, optionally, a cgroup joined before the workload starts. Only the profiler keeps
/// root. Dropping it takes the worktree back.
pub struct WorkloadSandbox {
    dir: PathBuf,
    private: Option<Private>,
    ids: Option<(u32, u32)>,
    owner: (u32, u32),
    scratch: tempfile::TempDir,
}

impl WorkloadSandbox {
    /// Hands `dir` to the sandbox user (when the agent is root).
    pub fn prepare(dir: &Path) -> std::io::Result<WorkloadSandbox> {
        let ids = sandbox_ids();
        // SAFETY: geteuid/getegid have no preconditions.
        let owner = unsafe { (libc::geteuid(), libc::getegid()) };
        let private = ids.map(|(u, g)| Private::create(u, g)).transpose()?;
        let scratch = tempfile::Builder::new()
            .prefix("fleetprof-workload-")
            .tempdir()?;
        if let Some((u, g)) = ids {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o711))?;
            chown_tree(dir, u, g)?;
        }
        Ok(WorkloadSandbox {
            dir: dir.to_path_buf(),
            private,
            ids,
            owner,
            scratch,
        })
    }

    /// An empty file the workload may write (its `FLEETPROF_WORK_FILE`).
    pub fn scratch_file(&self, name: &str) -> std::io::Result<PathBuf> {
        let p = self.scratch.path().join(name);
        std::fs::write(&p, "")?;
        if let Some((u, g)) = self.ids {
            std::os::unix::fs::lchown(&p, Some(u), Some(g))?;
        }
        Ok(p)
    }

    /// `sh -c SCRIPT` in the directory, as the sandbox user, with `env` added to the allow-listed
    /// environment, joining the cgroup whose `cgroup.procs` is given before it runs anything.
    pub fn command(
        &self,
        script: &str,
        env: &[(&str, &std::ffi::OsStr)],
        cgroup_procs: Option<&Path>,
    ) -> std::io::Result<Command> {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .env_clear();
        for k in ENV_ALLOW {
            if let Some(v) = std::env::var_os(k) {
                command.env(k, v);
            }
        }
        if let Some(p) = &self.private {
            for (k, v) in &p.env {
                command.env(k, v);
            }
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let binds = self
            .private
            .as_ref()
            .map(|p| p.binds.clone())
            .unwrap_or_default();
        let procs = cgroup_procs
            .map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()))
            .transpose()
            .map_err(std::io::Error::other)?;
        let ids = self.ids;
        // SAFETY: as in `run_sandboxed`: only async-signal-safe system calls on data prepared
        // before the fork.
        unsafe {
            command.pre_exec(move || enter_sandbox(false, &binds, ids, procs.as_deref()));
        }
        Ok(command)
    }
}

impl Drop for WorkloadSandbox {
    fn drop(&mut self) {
        if self.ids.is_some()
            && let Err(e) = chown_tree(&self.dir, self.owner.0, self.owner.1)
        {
            tracing::warn!(dir = %self.dir.display(), "could not take the worktree back from the sandbox user: {e}");
        }
    }
}

fn run_sandboxed(
    step: &str,
    cmd: &str,
    dir: &Path,
    timeout: Duration,
    user: Option<(u32, u32, &Private)>,
) -> Check {
    use std::os::unix::process::CommandExt as _;
    let started = Instant::now();
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("{cmd} 2>&1"));
    command.env_clear();
    for k in ENV_ALLOW {
        if let Some(v) = std::env::var_os(k) {
            command.env(k, v);
        }
    }
    let netns = netns_available();
    let binds = user.map(|(_, _, p)| p.binds.clone()).unwrap_or_default();
    let ids = user.map(|(u, g, _)| (u, g));
    if let Some((_, _, p)) = user {
        for (k, v) in &p.env {
            command.env(k, v);
        }
    }
    if netns || ids.is_some() {
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe system calls (unshare, mount, setgroups, setgid, setuid) on data
        // prepared before the fork.
        unsafe {
            command.pre_exec(move || enter_sandbox(netns, &binds, ids, None));
        }
    }
    let child = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Check {
                step: step.into(),
                command: cmd.into(),
                passed: false,
                seconds: 0.0,
                detail: format!("could not start: {e}"),
                statistic: None,
            };
        }
    };
    let pgid = child.id() as i32;
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        if let Some(out) = stdout.as_mut() {
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        kept.extend_from_slice(&buf[..n]);
                        // Keep the tail: the end of a build log says what failed.
                        if kept.len() > OUTPUT_CAP {
                            kept.drain(..kept.len() - OUTPUT_CAP);
                        }
                    }
                }
            }
        }
        kept
    });
    let kill_group = || {
        // SAFETY: kill(2) with a negative pid signals the process group we created; no memory is
        // shared.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    };
    // Wait for the leader to exit without reaping it (WNOWAIT), so its pid — the group's id —
    // cannot be reused before the rest of the group is killed.
    let exited = loop {
        // SAFETY: waitid writes only into `info`, a zeroed siginfo_t we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pgid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid to read for SIGCHLD-style siginfo filled by waitid.
        if r == 0 && unsafe { info.si_pid() } != 0 {
            break true;
        }
        if r != 0 {
            break false;
        }
        if started.elapsed() > timeout {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the command started goes with it (also after a normal exit: a daemonized child
    // must not outlive validation, nor hold the output pipe open).
    kill_group();
    let status = child.wait().ok().filter(|_| exited);
    let out = reader.join().unwrap_or_default();
    let out = String::from_utf8_lossy(&out);
    let tail: String = {
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let (passed, detail) = match status {
        Some(s) if s.success() => (true, tail),
        Some(s) => (false, format!("exit {s}\n{tail}")),
        None => (
            false,
            format!("timed out after {}s\n{tail}", timeout.as_secs()),
        ),
    };
    Check {
        step: step.into(),
        command: cmd.into(),
        passed,
        seconds: started.elapsed().as_secs_f64(),
        detail,
        statistic: None,
    }
}

/// In the forked child: a fresh network namespace (no network), a private mount namespace with the
/// toolchains bound read-only into the private area, then the sandbox user's identity, dropping
/// root's supplementary groups. Order matters: namespaces and mounts need root, so the identity
/// changes last.
fn enter_sandbox(
    netns: bool,
    binds: &[(std::ffi::CString, std::ffi::CString)],
    ids: Option<(u32, u32)>,
    cgroup_procs: Option<&std::ffi::CStr>,
) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let mut flags = 0;
    if netns {
        flags |= libc::CLONE_NEWNET;
    }
    if !binds.is_empty() {
        flags |= libc::CLONE_NEWNS;
    }
    // SAFETY: plain system calls on C strings that outlive them.
    unsafe {
        if flags != 0 {
            check(libc::unshare(flags))?;
        }
        if !binds.is_empty() {
            // Mounts made here must not propagate back to the host.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst) in binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    std::ptr::null(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
        }
        if let Some(procs) = cgroup_procs {
            // Writing 0 moves the writer itself: everything it starts is born in the group.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some((uid, gid)) = ids {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
        }
    }
    Ok(())
}

/// Runs build, test and the re-profiling check in `worktree`; stops at the first failure.
///
/// Re-profiling runs [`ValidateConfig::rounds`] interleaved rounds, each profiling the code before
/// the root cause (`before_tree`, when known), the regressed code (`regressed_tree`, the base the
/// patch applies to) and the fix, in that order, so drifts of the machine's load hit every build
/// alike. Each round gives CPU samples per unit of work (or per second); from the rounds come
/// means and 95% intervals. The fix passes when
/// - the regressed function's cost is back: the fix's mean is within the before-code's interval
///   (widened to `before + tolerance × (regressed − before)`), or without the before-code, its
///   share is at most production's `baseline + tolerance × (regressed − baseline)`;
/// - with confidence: the function's cost with the fix is below the regressed code's by Welch's
///   t-test at one-sided 5%;
/// - and nothing absorbed it: the rest of the workload's cost did not rise (significantly) by more
///   than half of what the function saved.
pub fn validate(
    worktree: &Path,
    cfg: &ValidateConfig,
    reprofiler: Option<&dyn Reprofiler>,
    function: &str,
    shares: Option<(f64, f64)>,
    before_tree: Option<&Path>,
    regressed_tree: Option<&Path>,
) -> Vec<Check> {
    let timeout = Duration::from_secs(cfg.timeout_secs);
    let mut checks = Vec::new();
    for (step, cmd) in [("build", &cfg.build), ("test", &cfg.test)] {
        if let Some(cmd) = cmd {
            let c = run_command(step, cmd, worktree, timeout);
            let ok = c.passed;
            checks.push(c);
            if !ok {
                return checks;
            }
        }
    }
    match (&cfg.workload, reprofiler, shares) {
        (Some(w), Some(r), Some(shares)) => {
            let started = Instant::now();
            // The other builds, built the same way; one that does not build is left out (and
            // said so).
            let mut notes = Vec::new();
            let mut arms: Vec<(&str, &Path)> = Vec::new();
            for (name, tree) in [("before", before_tree), ("regressed", regressed_tree)] {
                let Some(dir) = tree else { continue };
                let built = cfg
                    .build
                    .as_ref()
                    .is_none_or(|b| run_command(&format!("build {name}"), b, dir, timeout).passed);
                if built {
                    arms.push((name, dir));
                } else {
                    notes.push(format!(
                        "the {name} code did not build and was not re-profiled"
                    ));
                }
            }
            arms.push(("fixed", worktree));
            let rounds = cfg.rounds.max(2);
            let mut data: Vec<(&str, Vec<Measurement>)> =
                arms.iter().map(|(n, _)| (*n, Vec::new())).collect();
            let mut failed = None;
            'rounds: for round in 1..=rounds {
                for (i, (name, dir)) in arms.iter().enumerate() {
                    match r.measure(dir, w, function) {
                        Ok(m) => data[i].1.push(m),
                        Err(e) => {
                            failed = Some(format!(
                                "re-profiling the {name} code (round {round}) failed: {e}"
                            ));
                            break 'rounds;
                        }
                    }
                }
            }
            let (passed, detail, statistic) = match failed {
                Some(e) => (false, e, None),
                None => {
                    let v = judge(&data, function, shares, cfg.tolerance);
                    let mut detail = v.detail;
                    for n in notes {
                        detail.push_str(&format!("; {n}"));
                    }
                    (v.passed, detail, Some(v.table))
                }
            };
            checks.push(Check {
                step: "reprofile".into(),
                command: w.clone(),
                passed,
                seconds: started.elapsed().as_secs_f64(),
                detail,
                statistic,
            });
        }
        (Some(w), None, _) => checks.push(Check {
            step: "reprofile".into(),
            command: w.clone(),
            passed: true,
            seconds: 0.0,
            detail: "not re-profiled: no profiler hook was provided".into(),
            statistic: None,
        }),
        _ => {}
    }
    checks
}

/// `1000000` → `1,000,000`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The verdict on interleaved rounds.
struct Verdict {
    passed: bool,
    /// One line for the check.
    detail: String,
    /// The table and tests, for PR.md.
    table: String,
}

/// Judges the rounds (`data`: `before`?, `regressed`?, `fixed`, each a list of rounds).
///
/// The figure judged is the function's CPU per unit of work when the workload reports work in
/// every round; otherwise its share of the workload's CPU, because CPU per second of a workload
/// paced by its own load generator measures the load (and the machine's contention), not the
/// code's cost. Absorption can only be seen per unit of work.
fn judge(
    data: &[(&str, Vec<Measurement>)],
    function: &str,
    (baseline, regressed): (f64, f64),
    tolerance: f64,
) -> Verdict {
    use super::stats::{summarize, welch_greater};
    let per_work = data
        .iter()
        .flat_map(|(_, ms)| ms)
        .all(|m| m.work.is_some_and(|w| w > 0.0));
    // Per unit of work, a cost is a small fraction of a sample: count per 10^k units so that
    // the figures read in the hundreds.
    let scale = if per_work {
        let most = data
            .iter()
            .flat_map(|(_, ms)| ms)
            .map(|m| m.samples as f64 / m.work.unwrap_or(1.0))
            .fold(0.0f64, f64::max);
        if most > 0.0 {
            10f64.powi((3.0 - most.log10()).floor().clamp(0.0, 12.0) as i32)
        } else {
            1.0
        }
    } else {
        1.0
    };
    let unit_text = if !per_work {
        "second".to_string()
    } else if scale == 1.0 {
        "unit of work".to_string()
    } else {
        format!("{} units of work", group_thousands(scale as u64))
    };
    let unit = unit_text.as_str();
    let denom = |m: &Measurement| {
        if per_work {
            m.work.unwrap_or(1.0) / scale
        } else {
            m.seconds.max(1e-9)
        }
    };
    let fn_cost = |ms: &[Measurement]| -> Vec<f64> {
        ms.iter().map(|m| m.through as f64 / denom(m)).collect()
    };
    let rest_cost = |ms: &[Measurement]| -> Vec<f64> {
        ms.iter()
            .map(|m| m.samples.saturating_sub(m.through) as f64 / denom(m))
            .collect()
    };
    let share = |ms: &[Measurement]| -> Vec<f64> {
        ms.iter()
            .map(|m| m.through as f64 / m.samples.max(1) as f64)
            .collect()
    };
    // The judged figure, and how to print it.
    let figure = |ms: &[Measurement]| if per_work { fn_cost(ms) } else { share(ms) };
    let show = |x: f64| {
        if per_work {
            format!("{x:.3} per {unit}")
        } else {
            format!("{:.2}% of the workload's CPU", x * 100.0)
        }
    };
    let num = |x: f64| {
        if per_work {
            format!("{x:.3}")
        } else {
            format!("{:.2}%", x * 100.0)
        }
    };
    let get = |name: &str| {
        data.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| m.as_slice())
    };
    let fixed = get("fixed").unwrap_or_default();
    let before = get("before");
    let reg = get("regressed");
    let n = fixed.len();
    let mut table = format!(
        "{n} interleaved rounds ({}), CPU samples of the workload's processes per {unit}{}; \
         mean ± 95% interval (Student's t):\n\n| build | `{function}` per {unit} | rest of the \
         workload per {unit} | `{function}`'s share |\n|---|---|---|---|\n",
        data.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        if per_work {
            " (units as the workload reported them in FLEETPROF_WORK_FILE)"
        } else {
            " (the workload reports no units of work in FLEETPROF_WORK_FILE, so the share is judged)"
        }
    );
    let fmt = |xs: &[f64]| {
        let s = summarize(xs);
        format!("{:.3} ± {:.3}", s.mean, s.half_width())
    };
    for (name, ms) in data {
        let sh = summarize(&share(ms));
        table.push_str(&format!(
            "| {name} | {} | {} | {:.2}% ± {:.2} |\n",
            fmt(&fn_cost(ms)),
            fmt(&rest_cost(ms)),
            sh.mean * 100.0,
            sh.half_width() * 100.0
        ));
    }
    table.push('\n');
    let f = summarize(&figure(fixed));
    // A function on no stack of any build cannot be judged: a cost of zero everywhere means the
    // name matched nothing (renamed, inlined in every build, not symbolized), not a fix.
    let seen = data.iter().flat_map(|(_, ms)| ms).any(|m| m.through > 0);
    // 1. Back to the before-code's level.
    let (back, back_text) = match before {
        _ if !seen => (
            false,
            format!(
                "`{function}` was not seen: no sample of any build's workload went through it,                  so whether the regression is gone cannot be told"
            ),
        ),
        Some(b) => {
            let sb = summarize(&figure(b));
            let sr = reg.map(|r| summarize(&figure(r)));
            let limit = sb
                .hi
                .max(sb.mean + tolerance * sr.map_or(0.0, |r| (r.mean - sb.mean).max(0.0)));
            (
                f.mean <= limit,
                format!(
                    "`{function}` with the fix: {}, before the root cause {} (95% interval up to \
                     {}; limit {})",
                    show(f.mean),
                    show(sb.mean),
                    num(sb.hi),
                    num(limit)
                ),
            )
        }
        None => {
            let fs = summarize(&share(fixed));
            let limit = baseline + tolerance * (regressed - baseline).max(0.0);
            (
                fs.mean <= limit,
                format!(
                    "`{function}` with the fix: {:.2}% of the workload's CPU (production baseline \
                     {:.2}%, regressed {:.2}%, limit {:.2}%)",
                    fs.mean * 100.0,
                    baseline * 100.0,
                    regressed * 100.0,
                    limit * 100.0
                ),
            )
        }
    };
    table.push_str(&format!(
        "- back to the baseline: {} — {back_text}\n",
        if !seen {
            "not seen"
        } else if back {
            "yes"
        } else {
            "NO"
        }
    ));
    // 2. With confidence below the regressed code, and 3. not absorbed elsewhere.
    let (mut confident, mut absorbed) = (true, false);
    if let Some(r) = reg {
        let w = welch_greater(&figure(r), &figure(fixed));
        confident = w.significant;
        let sr = summarize(&figure(r));
        table.push_str(&format!(
            "- below the regressed code with confidence: {} — {} → {} ({:+.0}%), Welch t = {:.2}, \
             df = {:.1}, one-sided 5%\n",
            if confident { "yes" } else { "NO" },
            show(sr.mean),
            show(f.mean),
            if sr.mean > 0.0 {
                (f.mean / sr.mean - 1.0) * 100.0
            } else {
                0.0
            },
            w.t,
            w.df
        ));
        if per_work {
            let saved = sr.mean - f.mean;
            let (rr, rf) = (rest_cost(r), rest_cost(fixed));
            let rise = summarize(&rf).mean - summarize(&rr).mean;
            absorbed = saved > 0.0 && rise > saved / 2.0 && welch_greater(&rf, &rr).significant;
            // Which other function rose most, to name it.
            let mut top: Option<(String, f64)> = None;
            let names: std::collections::BTreeSet<&String> = r
                .iter()
                .chain(fixed)
                .flat_map(|m| m.others.keys())
                .collect();
            for g in names {
                let mean = |ms: &[Measurement]| {
                    ms.iter()
                        .map(|m| m.others.get(g).copied().unwrap_or(0) as f64 / denom(m))
                        .sum::<f64>()
                        / ms.len().max(1) as f64
                };
                let d = mean(fixed) - mean(r);
                if top.as_ref().is_none_or(|(_, t)| d > *t) {
                    top = Some((g.clone(), d));
                }
            }
            table.push_str(&format!(
                "- not absorbed elsewhere: {} — the rest of the workload changed by {rise:+.3} per \
                 {unit} (limit: half the saving, {:.3}){}\n",
                if absorbed { "NO" } else { "yes" },
                (saved / 2.0).max(0.0),
                top.filter(|(_, d)| *d > 0.0)
                    .map(|(g, d)| format!("; largest rise: `{g}` {d:+.3}"))
                    .unwrap_or_default()
            ));
        } else {
            table.push_str(
                "- not absorbed elsewhere: not checked — absorption shows only per unit of work, \
                 which this workload does not report\n",
            );
        }
    }
    let passed = seen && back && confident && !absorbed;
    let why = if !seen {
        "not seen in any build's profile, so not judged"
    } else if !confident {
        "not reliably below the regressed code"
    } else if absorbed {
        "the saving reappears elsewhere in the workload"
    } else if !back {
        "not back to the baseline"
    } else {
        "regression gone"
    };
    // The detail keeps the share first (`f: 12.34% of CPU with the fix, …`), as before rounds,
    // then the figure that was judged when that was not the share.
    let mean_share = |ms: &[Measurement]| summarize(&share(ms)).mean * 100.0;
    let mut detail = format!("{function}: {:.2}% of CPU with the fix", mean_share(fixed));
    if let Some(b) = before {
        detail.push_str(&format!(", {:.2}% before the root cause", mean_share(b)));
    }
    if let Some(r) = reg {
        detail.push_str(&format!(", {:.2}% regressed", mean_share(r)));
    }
    if per_work {
        let mean = |ms: &[Measurement]| num(summarize(&figure(ms)).mean);
        detail.push_str(&format!(
            "; judged per {unit}: {} with the fix",
            mean(fixed)
        ));
        if let Some(b) = before {
            detail.push_str(&format!(", {} before the root cause", mean(b)));
        }
        if let Some(r) = reg {
            detail.push_str(&format!(", {} regressed", mean(r)));
        }
    }
    detail.push_str(&format!(
        " (means of {n} interleaved rounds on this machine; production: {:.2}% -> {:.2}%): {why}",
        baseline * 100.0,
        regressed * 100.0
    ));
    Verdict {
        passed,
        detail,
        table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fleetprof.toml` parses; unknown keys are rejected; a missing file gives defaults.
    #[test]
    fn config_parses() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            ValidateConfig::load(d.path()).unwrap(),
            ValidateConfig::default()
        );
        std::fs::write(
            d.path().join("fleetprof.toml"),
            "[validate]\nbuild = \"cargo build\"\ntest = \"cargo test\"\nworkload = \"./bench\"\n",
        )
        .unwrap();
        let c = ValidateConfig::load(d.path()).unwrap();
        assert_eq!(c.build.as_deref(), Some("cargo build"));
        assert_eq!(c.workload.as_deref(), Some("./bench"));
        std::fs::write(
            d.path().join("fleetprof.toml"),
            "[validate]\nbiuld = \"x\"\n",
        )
        .unwrap();
        assert!(ValidateConfig::load(d.path()).is_err());
    }

    struct Fixed(f64);
    impl Reprofiler for Fixed {
        fn share(&self, _: &Path, _: &str, _: &str) -> Result<f64, String> {
            Ok(self.0)
        }
    }

    /// Failing commands stop validation; the re-profiling check compares against the baseline.
    #[test]
    fn checks_run_in_order() {
        let d = tempfile::tempdir().unwrap();
        let cfg = ValidateConfig {
            build: Some("echo built".into()),
            test: Some("echo failing; exit 3".into()),
            ..Default::default()
        };
        let c = validate(d.path(), &cfg, None, "f", None, None, None);
        assert_eq!(c.len(), 2);
        assert!(c[0].passed && c[0].detail.contains("built"));
        assert!(!c[1].passed && c[1].detail.contains("exit") && c[1].detail.contains("failing"));
        let cfg = ValidateConfig {
            workload: Some("true".into()),
            ..Default::default()
        };
        assert!(
            validate(
                d.path(),
                &cfg,
                Some(&Fixed(0.12)),
                "f",
                Some((0.10, 0.30)),
                None,
                None
            )[0]
            .passed
        );
        assert!(
            !validate(
                d.path(),
                &cfg,
                Some(&Fixed(0.21)),
                "f",
                Some((0.10, 0.30)),
                None,
                None
            )[0]
            .passed
        );
    }

    /// Shares that depend on which tree is profiled: this machine runs everything hotter.
    struct ByTree {
        before: PathBuf,
        regressed: PathBuf,
        fixed: f64,
    }

    impl Reprofiler for ByTree {
        fn share(&self, dir: &Path, _: &str, _: &str) -> Result<f64, String> {
            Ok(if dir == self.before {
                0.18
            } else if dir == self.regressed {
                0.36
            } else {
                self.fixed
            })
        }
    }

    /// With the code before the root cause and the regressed code re-profiled here in
    /// interleaved rounds, the fix is held to the local baseline (not production's level), must be
    /// below the regressed code, and the statistic is reported; a no-op fix is rejected.
    #[test]
    fn local_rounds_are_the_reference() {
        let fixed = tempfile::tempdir().unwrap();
        let before = tempfile::tempdir().unwrap();
        let regressed = tempfile::tempdir().unwrap();
        let cfg = ValidateConfig {
            workload: Some("true".into()),
            rounds: 3,
            ..Default::default()
        };
        let mut r = ByTree {
            before: before.path().to_path_buf(),
            regressed: regressed.path().to_path_buf(),
            fixed: 0.21,
        };
        let prod = Some((0.10, 0.30));
        let trees = (Some(before.path()), Some(regressed.path()));
        let c = &validate(fixed.path(), &cfg, Some(&r), "f", prod, trees.0, trees.1)[0];
        assert!(c.passed, "{c:?}");
        assert!(
            c.detail
                .starts_with("f: 21.00% of CPU with the fix, 18.00% before the root cause"),
            "{c:?}"
        );
        let stat = c.statistic.as_deref().unwrap();
        assert!(
            stat.contains("3 interleaved rounds (before, regressed, fixed)"),
            "{stat}"
        );
        assert!(stat.contains("Welch t"), "{stat}");
        // Production's baseline alone would reject 21%.
        assert!(!validate(fixed.path(), &cfg, Some(&r), "f", prod, None, None)[0].passed);
        // A no-op fix measures like the regressed code.
        r.fixed = 0.36;
        let c = &validate(fixed.path(), &cfg, Some(&r), "f", prod, trees.0, trees.1)[0];
        assert!(!c.passed, "{c:?}");
        assert!(
            c.detail.contains("not reliably below the regressed code"),
            "{c:?}"
        );
    }

    fn m(through: u64, rest: u64, work: f64, other: u64) -> Measurement {
        Measurement {
            samples: through + rest,
            through,
            others: [("g".to_string(), other)].into_iter().collect(),
            work: Some(work),
            seconds: 1.0,
        }
    }

    /// A fix whose saving reappears in another function of the workload is rejected, naming it;
    /// costs are per unit of work when the workload reports it.
    #[test]
    fn absorbed_cost_is_rejected() {
        let regressed = vec![
            m(500, 500, 100.0, 100),
            m(520, 490, 100.0, 95),
            m(510, 505, 100.0, 98),
        ];
        let before = vec![
            m(100, 500, 100.0, 100),
            m(110, 495, 100.0, 99),
            m(105, 505, 100.0, 101),
        ];
        // The function is cheap again, but `g` now does the same work.
        let moved = vec![
            m(100, 900, 100.0, 500),
            m(105, 910, 100.0, 505),
            m(110, 905, 100.0, 498),
        ];
        let data = vec![
            ("before", before.clone()),
            ("regressed", regressed.clone()),
            ("fixed", moved),
        ];
        let v = judge(&data, "f", (0.1, 0.5), 0.5);
        assert!(!v.passed, "{}", v.table);
        assert!(v.detail.contains("reappears elsewhere"), "{}", v.detail);
        assert!(v.table.contains("largest rise: `g`"), "{}", v.table);
        assert!(v.table.contains("per 10 units of work"), "{}", v.table);
        // The same saving without the move passes; twice the work in a round halves its cost.
        let good = vec![
            m(100, 500, 100.0, 100),
            m(210, 1000, 200.0, 200),
            m(104, 498, 100.0, 99),
        ];
        let data = vec![
            ("before", before),
            ("regressed", regressed),
            ("fixed", good),
        ];
        let v = judge(&data, "f", (0.1, 0.5), 0.5);
        assert!(v.passed, "{}", v.table);
        // The detail shows the figure judged (per 10 units of work), after the shares.
        assert!(
            v.detail.contains(
                "; judged per 10 units of work: 10.300 with the fix, 10.500 before the root \
                 cause, 51.000 regressed"
            ),
            "{}",
            v.detail
        );
    }

    /// A function on no stack of any build is said to be not seen, and the fix is not passed
    /// as "back to the baseline".
    #[test]
    fn unseen_function_is_not_judged() {
        let none = || {
            vec![
                m(0, 600, 100.0, 100),
                m(0, 610, 100.0, 99),
                m(0, 590, 100.0, 98),
            ]
        };
        let data = vec![("before", none()), ("regressed", none()), ("fixed", none())];
        let v = judge(&data, "f", (0.1, 0.5), 0.5);
        assert!(!v.passed, "{}", v.table);
        assert!(
            v.table
                .contains("- back to the baseline: not seen — `f` was not seen"),
            "{}",
            v.table
        );
        assert!(
            v.detail.contains("not seen in any build's profile"),
            "{}",
            v.detail
        );
        // Seen in the regressed code only (the fix removed it from the stacks): judged, passes.
        let data = vec![
            ("before", none()),
            (
                "regressed",
                vec![
                    m(400, 600, 100.0, 100),
                    m(410, 610, 100.0, 99),
                    m(390, 590, 100.0, 98),
                ],
            ),
            ("fixed", none()),
        ];
        let v = judge(&data, "f", (0.1, 0.5), 0.5);
        assert!(v.passed, "{}", v.table);
        assert!(
            v.table.contains("- back to the baseline: yes"),
            "{}",
            v.table
        );
    }
}
