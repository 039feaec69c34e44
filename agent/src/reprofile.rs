//! Re-profiling a fix with the real eBPF profiler: the workload runs in the worktree in a cgroup
//! of its own (so the processes it spawns are part of it) while `fleetprof-profiler record
//! --cgroup` samples the processes in that cgroup, following it for the whole round (workers
//! forked during the round included), and the regressed function's share of their samples is
//! read from the JSON profile. Without a writable cgroup v2 hierarchy it falls back to
//! `record --pid` of the workload's own process (its children are then missed, and the check
//! says so in the logs).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::fix::validate::{Measurement, Reprofiler, WorkloadSandbox};

/// The environment variable naming the file a workload may report its progress in: the number of
/// units of work done so far (requests served, items priced), one number per line, appended as it
/// goes; the last complete number counts. Re-profiling then reports CPU per unit of work, which
/// stays comparable when a build is faster or the machine is busier; without it, CPU per second.
pub const WORK_FILE_ENV: &str = "FLEETPROF_WORK_FILE";

/// The last complete number in a work file (a line being written is skipped).
pub fn read_work(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .rfind(|w| w.is_finite() && *w >= 0.0)
}

/// A [`Reprofiler`] that shells out to `fleetprof-profiler record` (it needs root or CAP_BPF +
/// CAP_PERFMON, like the profiler itself).
#[derive(Clone, Debug)]
pub struct ProfilerReprofiler {
    /// The `fleetprof-profiler` binary.
    pub profiler: PathBuf,
    /// How long to record one round of one build. Default: 2 s (validation records
    /// `rounds × 3` of them).
    pub duration: Duration,
    /// Sampling frequency. Default: 499 Hz: four seconds of one busy core give ~2,000 samples, a
    /// share within about one percentage point.
    pub frequency_hz: u32,
    /// Time the workload gets to start before recording. Default: 500 ms.
    pub warmup: Duration,
}

impl ProfilerReprofiler {
    /// Uses `fleetprof-profiler` next to this executable, else the one on `PATH`.
    pub fn discover() -> Self {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("fleetprof-profiler")))
            .filter(|p| p.exists());
        Self {
            profiler: beside.unwrap_or_else(|| PathBuf::from("fleetprof-profiler")),
            duration: Duration::from_secs(2),
            frequency_hz: 499,
            warmup: Duration::from_millis(500),
        }
    }
}

/// The share of a JSON profile's samples whose stack contains `function` (by exact name or a
/// `::function` suffix, so `price_items` finds `checkout::price_items`).
pub fn share_in_json_profile(profile: &serde_json::Value, function: &str) -> Result<f64, String> {
    share_in_json_profile_of(profile, function, None)
}

/// The processes a re-profiled workload consists of: its cgroup, and the pids seen in it while
/// recording (the profiler may not have read a short-lived process's cgroup).
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// The cgroup v2 path (`/name`).
    pub cgroup: String,
    /// Pids seen in the cgroup.
    pub pids: std::collections::HashSet<u64>,
}

/// Like [`share_in_json_profile`], counting only the samples of the workload's processes, when
/// given.
pub fn share_in_json_profile_of(
    profile: &serde_json::Value,
    function: &str,
    cgroup: Option<&Members>,
) -> Result<f64, String> {
    let m = measure_json_profile(profile, function, cgroup)?;
    Ok(m.through as f64 / m.samples as f64)
}

/// The workload's samples in a JSON profile: in all, through `function`, and per other function
/// for the samples not through it (work and seconds are left for the caller).
pub fn measure_json_profile(
    profile: &serde_json::Value,
    function: &str,
    cgroup: Option<&Members>,
) -> Result<Measurement, String> {
    let frames = profile["frames"]
        .as_array()
        .ok_or("profile has no frames")?;
    let samples = profile["samples"]
        .as_array()
        .ok_or("profile has no samples")?;
    let in_cgroup: Vec<bool> = profile["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    cgroup.is_none_or(|m| {
                        p["cgroup"].as_str() == Some(m.cgroup.as_str())
                            || p["pid"].as_u64().is_some_and(|pid| m.pids.contains(&pid))
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let suffix = format!("::{function}");
    let matches: Vec<bool> = frames
        .iter()
        .map(|f| {
            let name = f["function"].as_str().unwrap_or_default();
            name == function || name.ends_with(&suffix) || function.ends_with(&format!("::{name}"))
        })
        .collect();
    let named: Vec<bool> = frames
        .iter()
        .map(|f| {
            f["function"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && !n.starts_with("[unknown]"))
        })
        .collect();
    let (mut total, mut through, mut symbolized) = (0u64, 0u64, 0u64);
    let mut others: std::collections::BTreeMap<String, u64> = Default::default();
    for s in samples {
        if cgroup.is_some() {
            let p = s["process"].as_u64().unwrap_or(u64::MAX) as usize;
            if !in_cgroup.get(p).copied().unwrap_or(false) {
                continue;
            }
        }
        let count = s["count"].as_u64().unwrap_or(0);
        total += count;
        if s["stack"].as_array().is_some_and(|st| {
            st.iter().any(|id| {
                id.as_u64()
                    .and_then(|i| named.get(i as usize))
                    .copied()
                    .unwrap_or(false)
            })
        }) {
            symbolized += count;
        }
        let hit = s["stack"].as_array().is_some_and(|st| {
            st.iter().any(|id| {
                id.as_u64()
                    .and_then(|i| matches.get(i as usize))
                    .copied()
                    .unwrap_or(false)
            })
        });
        if hit {
            through += count;
        } else if let Some(st) = s["stack"].as_array() {
            let mut seen = std::collections::BTreeSet::new();
            for id in st.iter().filter_map(serde_json::Value::as_u64) {
                if named.get(id as usize).copied().unwrap_or(false)
                    && let Some(name) = frames[id as usize]["function"].as_str()
                    && seen.insert(name)
                {
                    *others.entry(name.to_string()).or_insert(0) += count;
                }
            }
        }
    }
    if total == 0 {
        return Err("the workload was not sampled (did it exit at once?)".into());
    }
    // A share of zero must mean "not on the stacks", not "no names": unnamed stacks prove nothing.
    if symbolized == 0 {
        return Err("none of the workload's samples could be symbolized".into());
    }
    Ok(Measurement {
        samples: total,
        through,
        others,
        work: None,
        seconds: 0.0,
    })
}

/// A cgroup v2 directory made for one workload, removed (its processes killed) on drop.
struct WorkloadCgroup {
    dir: PathBuf,
    /// The path processes in it show in `/proc/PID/cgroup` (`0::/name`).
    path: String,
}

impl WorkloadCgroup {
    /// Creates `fleetprof-reprofile-PID-N` under the cgroup v2 hierarchy, if one is writable.
    fn create() -> Option<WorkloadCgroup> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(PathBuf::from)
            .find(|r| r.join("cgroup.procs").exists() && r.join("cgroup.controllers").exists())?;
        // Our own place in the hierarchy: the new group is a sibling of nothing we depend on.
        let name = format!(
            "fleetprof-reprofile-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = root.join(&name);
        std::fs::create_dir(&dir).ok()?;
        Some(WorkloadCgroup {
            dir,
            path: format!("/{name}"),
        })
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Kills every process in the group (`cgroup.kill` where the kernel has it).
    fn kill_all(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_err()
            && let Ok(pids) = std::fs::read_to_string(self.procs())
        {
            for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on a pid read from our own cgroup; no memory is shared.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for WorkloadCgroup {
    fn drop(&mut self) {
        self.kill_all();
        // The group can be removed once its processes are gone (exit is asynchronous).
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(dir = %self.dir.display(), "could not remove the workload's cgroup");
    }
}

impl Reprofiler for ProfilerReprofiler {
    fn share(&self, worktree: &Path, workload: &str, function: &str) -> Result<f64, String> {
        let (profile, members) = self.profile(worktree, workload)?;
        share_in_json_profile_of(&profile, function, members.as_ref())
    }

    fn measure(
        &self,
        worktree: &Path,
        workload: &str,
        function: &str,
    ) -> Result<Measurement, String> {
        let run = self.profile_run(worktree, workload)?;
        let mut m = measure_json_profile(&run.profile, function, run.members.as_ref())?;
        m.work = run.work;
        m.seconds = run.seconds;
        Ok(m)
    }
}

/// One recorded run of a workload.
#[derive(Debug, Clone)]
pub struct ProfileRun {
    /// The JSON profile.
    pub profile: serde_json::Value,
    /// The workload's processes (`None` when only its own pid was recorded).
    pub members: Option<Members>,
    /// Units of work the workload reported while recorded ([`WORK_FILE_ENV`]), if any.
    pub work: Option<f64>,
    /// Seconds recorded.
    pub seconds: f64,
}

impl ProfilerReprofiler {
    /// Runs `workload` in `worktree` (in its own cgroup when possible) under the profiler and
    /// returns the JSON profile of the host and who the workload's processes were (`None` when
    /// only its own pid was recorded).
    pub fn profile(
        &self,
        worktree: &Path,
        workload: &str,
    ) -> Result<(serde_json::Value, Option<Members>), String> {
        self.profile_run(worktree, workload)
            .map(|r| (r.profile, r.members))
    }

    /// Like [`ProfilerReprofiler::profile`], also reading how much work the workload reported
    /// during the recording.
    pub fn profile_run(&self, worktree: &Path, workload: &str) -> Result<ProfileRun, String> {
        let out = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
        // The workload runs as the sandbox user (only the profiler keeps root), with the
        // allow-listed environment.
        let sandbox = WorkloadSandbox::prepare(worktree)
            .map_err(|e| format!("preparing the workload's sandbox: {e}"))?;
        let work_file = sandbox
            .scratch_file("work")
            .map_err(|e| format!("creating the work file: {e}"))?;
        let cgroup = WorkloadCgroup::create();
        if cgroup.is_none() {
            tracing::warn!(
                "no writable cgroup v2 hierarchy: re-profiling only the workload's own process, not its children"
            );
        }
        // The child joins the cgroup before it becomes the workload (`exec`), so every process
        // the workload starts is born inside it.
        let procs = cgroup.as_ref().map(WorkloadCgroup::procs);
        let mut child = sandbox
            .command(
                &format!("exec {workload}"),
                &[(WORK_FILE_ENV, work_file.as_os_str())],
                procs.as_deref(),
            )
            .map_err(|e| format!("preparing the workload `{workload}`: {e}"))?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the workload `{workload}`: {e}"))?;
        std::thread::sleep(self.warmup);
        // Who is in the workload, polled while recording.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = cgroup.as_ref().map(|cg| {
            let procs = cg.procs();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut pids = std::collections::HashSet::new();
                loop {
                    if let Ok(text) = std::fs::read_to_string(&procs) {
                        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u64>().ok()));
                    }
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        return pids;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        let mut record = Command::new(&self.profiler);
        record.args(["record", "--format", "json"]);
        // Record the workload's processes only (recording the whole host under load overflows
        // the kernel's stack tables and blurs the shares): every process in its cgroup, which
        // the profiler follows for the whole round, so a worker forked mid-round counts too.
        record.args(["--pid", &child.id().to_string()]);
        if let Some(cg) = &cgroup {
            record.arg("--cgroup").arg(&cg.dir);
        }
        let work_before = read_work(&work_file);
        let recorded = record
            .arg("--duration")
            .arg(format!("{}ms", self.duration.as_millis()))
            .arg("--frequency")
            .arg(self.frequency_hz.to_string())
            .arg("-o")
            .arg(out.path())
            .stdout(Stdio::null())
            .output();
        let work_after = read_work(&work_file);
        let seconds = self.duration.as_secs_f64();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let members = cgroup.as_ref().map(|cg| Members {
            cgroup: cg.path.clone(),
            pids: poller.and_then(|p| p.join().ok()).unwrap_or_default(),
        });
        if let Some(cg) = &cgroup {
            cg.kill_all();
        }
        let _ = child.kill();
        let _ = child.wait();
        let recorded = recorded.map_err(|e| format!("running {}: {e}", self.profiler.display()))?;
        if !recorded.status.success() {
            return Err(format!(
                "{} record failed: {}",
                self.profiler.display(),
                String::from_utf8_lossy(&recorded.stderr).trim()
            ));
        }
        let text =
            std::fs::read_to_string(out.path()).map_err(|e| format!("reading the profile: {e}"))?;
        let profile: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("parsing the profile: {e}"))?;
        // Work done while recording: both ends must have been reported (a workload that reports
        // too rarely is measured per second instead).
        let work = work_before
            .zip(work_after)
            .map(|(b, a)| a - b)
            .filter(|w| *w > 0.0);
        Ok(ProfileRun {
            profile,
            members,
            work,
            seconds,
        })
    }
}

/// Samples per pid of the workload's processes in a JSON profile.
pub fn samples_per_pid(
    profile: &serde_json::Value,
    members: &Members,
) -> std::collections::BTreeMap<u64, u64> {
    let procs = profile["processes"].as_array().cloned().unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for s in profile["samples"].as_array().into_iter().flatten() {
        let Some(p) = procs.get(s["process"].as_u64().unwrap_or(u64::MAX) as usize) else {
            continue;
        };
        let pid = p["pid"].as_u64().unwrap_or(0);
        if p["cgroup"].as_str() == Some(members.cgroup.as_str()) || members.pids.contains(&pid) {
            *out.entry(pid).or_insert(0) += s["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The share counts samples whose stack contains the function, matched with or without its path.
    #[test]
    fn share_counts_stacks_through_the_function() {
        let profile = serde_json::json!({
            "frames": [{"function": "checkout::price_items"}, {"function": "main"}, {"function": "checkout::compute_tax"}],
            "samples": [
                {"stack": [0, 1], "count": 30},
                {"stack": [2, 1], "count": 60},
                {"stack": [1], "count": 10},
            ]
        });
        assert!(
            (share_in_json_profile(&profile, "checkout::price_items").unwrap() - 0.3).abs() < 1e-9
        );
        assert!((share_in_json_profile(&profile, "price_items").unwrap() - 0.3).abs() < 1e-9);
        assert!(
            share_in_json_profile(&serde_json::json!({"frames": [], "samples": []}), "x").is_err()
        );
    }
}
