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
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            build: None,
            test: None,
            workload: None,
            timeout_secs: 1800,
            tolerance: 0.5,
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

/// The command line a step runs: `sh -c CMD`, inside a fresh network namespace (no network but
/// loopback, which is down) when available.
fn sandboxed(cmd: &str) -> (Command, bool) {
    let isolated = netns_available();
    let mut c = if isolated {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "sh", "-c"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c");
        c
    };
    c.arg(format!("{cmd} 2>&1"));
    (c, isolated)
}

/// Runs `cmd` with `sh -c` in `dir` the way repository code must run: a scrubbed environment
/// ([`ENV_ALLOW`]), its own process group (killed as a whole on timeout, and after it exits, so
/// nothing it started is left behind), output capped at [`OUTPUT_CAP`], and no network (a fresh
/// network namespace) where the host allows it.
pub fn run_command(step: &str, cmd: &str, dir: &Path, timeout: Duration) -> Check {
    use std::os::unix::process::CommandExt as _;
    let started = Instant::now();
    let (mut command, isolated) = sandboxed(cmd);
    command.env_clear();
    for k in ENV_ALLOW {
        if let Some(v) = std::env::var_os(k) {
            command.env(k, v);
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
    let _ = isolated;
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
    }
}

/// Runs build, test and the re-profiling check in `worktree`; stops at the first failure.
///
/// With `before_tree` (a worktree of the code before the root cause), the baseline is also
/// re-profiled, back to back with the fix on this machine under the same workload: profiles taken
/// in production and here differ by more than sampling noise (load, contention, CPU), so the fix
/// is held to `local baseline + tolerance × (regressed − baseline)`, the regression's size coming
/// from production. Without it, the production baseline is the reference.
pub fn validate(
    worktree: &Path,
    cfg: &ValidateConfig,
    reprofiler: Option<&dyn Reprofiler>,
    function: &str,
    shares: Option<(f64, f64)>,
    before_tree: Option<&Path>,
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
        (Some(w), Some(r), Some((baseline, regressed))) => {
            let started = Instant::now();
            // The code before the root cause, built and profiled the same way, when we have it.
            let local_baseline = before_tree.and_then(|dir| {
                let built = cfg
                    .build
                    .as_ref()
                    .is_none_or(|b| run_command("build baseline", b, dir, timeout).passed);
                built.then(|| r.share(dir, w, function).ok()).flatten()
            });
            let reference = local_baseline.unwrap_or(baseline);
            let limit = reference + cfg.tolerance * (regressed - baseline).max(0.0);
            let (passed, detail) = match r.share(worktree, w, function) {
                Ok(s) => (
                    s <= limit,
                    match local_baseline {
                        Some(local) => format!(
                            "{function}: {:.2}% of CPU with the fix, {:.2}% before the root cause (same machine, same load; production: {:.2}% -> {:.2}%), limit {:.2}%",
                            s * 100.0,
                            local * 100.0,
                            baseline * 100.0,
                            regressed * 100.0,
                            limit * 100.0
                        ),
                        None => format!(
                            "{function}: {:.2}% of CPU with the fix (baseline {:.2}%, regressed {:.2}%, limit {:.2}%)",
                            s * 100.0,
                            baseline * 100.0,
                            regressed * 100.0,
                            limit * 100.0
                        ),
                    },
                ),
                Err(e) => (false, format!("re-profiling failed: {e}")),
            };
            checks.push(Check {
                step: "reprofile".into(),
                command: w.clone(),
                passed,
                seconds: started.elapsed().as_secs_f64(),
                detail,
            });
        }
        (Some(w), None, _) => checks.push(Check {
            step: "reprofile".into(),
            command: w.clone(),
            passed: true,
            seconds: 0.0,
            detail: "not re-profiled: no profiler hook was provided".into(),
        }),
        _ => {}
    }
    checks
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
        let c = validate(d.path(), &cfg, None, "f", None, None);
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
                None
            )[0]
            .passed
        );
    }

    /// Shares that depend on which tree is profiled: this machine runs everything hotter.
    struct ByTree {
        before: PathBuf,
    }

    impl Reprofiler for ByTree {
        fn share(&self, dir: &Path, _: &str, _: &str) -> Result<f64, String> {
            Ok(if dir == self.before { 0.18 } else { 0.21 })
        }
    }

    /// With the code before the root cause re-profiled here, the fix is held to that local
    /// baseline plus the tolerated part of the production regression, not to production's level.
    #[test]
    fn local_baseline_is_the_reference() {
        let fixed = tempfile::tempdir().unwrap();
        let before = tempfile::tempdir().unwrap();
        let cfg = ValidateConfig {
            workload: Some("true".into()),
            ..Default::default()
        };
        let r = ByTree {
            before: before.path().to_path_buf(),
        };
        let prod = Some((0.10, 0.30));
        let with_local = validate(fixed.path(), &cfg, Some(&r), "f", prod, Some(before.path()));
        assert!(with_local[0].passed, "{:?}", with_local[0]);
        assert!(
            with_local[0]
                .detail
                .contains("18.00% before the root cause"),
            "{:?}",
            with_local[0]
        );
        assert!(!validate(fixed.path(), &cfg, Some(&r), "f", prod, None)[0].passed);
    }
}
