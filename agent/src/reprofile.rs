//! Re-profiling a fix with the real eBPF profiler: the workload runs in the worktree while
//! `fleetprof-profiler record --pid` samples it, and the regressed function's share of the
//! workload's samples is read from the JSON profile.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::fix::validate::Reprofiler;

/// A [`Reprofiler`] that shells out to `fleetprof-profiler record` (it needs root or CAP_BPF +
/// CAP_PERFMON, like the profiler itself).
#[derive(Clone, Debug)]
pub struct ProfilerReprofiler {
    /// The `fleetprof-profiler` binary.
    pub profiler: PathBuf,
    /// How long to record. Default: 4 s.
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
            duration: Duration::from_secs(4),
            frequency_hz: 499,
            warmup: Duration::from_millis(500),
        }
    }
}

/// The share of a JSON profile's samples whose stack contains `function` (by exact name or a
/// `::function` suffix, so `price_items` finds `checkout::price_items`).
pub fn share_in_json_profile(profile: &serde_json::Value, function: &str) -> Result<f64, String> {
    let frames = profile["frames"]
        .as_array()
        .ok_or("profile has no frames")?;
    let samples = profile["samples"]
        .as_array()
        .ok_or("profile has no samples")?;
    let suffix = format!("::{function}");
    let matches: Vec<bool> = frames
        .iter()
        .map(|f| {
            let name = f["function"].as_str().unwrap_or_default();
            name == function || name.ends_with(&suffix) || function.ends_with(&format!("::{name}"))
        })
        .collect();
    let (mut total, mut through) = (0u64, 0u64);
    for s in samples {
        let count = s["count"].as_u64().unwrap_or(0);
        total += count;
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
        }
    }
    if total == 0 {
        return Err("the workload was not sampled (did it exit at once?)".into());
    }
    Ok(through as f64 / total as f64)
}

impl Reprofiler for ProfilerReprofiler {
    fn share(&self, worktree: &Path, workload: &str, function: &str) -> Result<f64, String> {
        let out = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
        // `exec` so the pid we filter on is the workload's, not the shell's.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {workload}"))
            .current_dir(worktree)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the workload `{workload}`: {e}"))?;
        std::thread::sleep(self.warmup);
        let recorded = Command::new(&self.profiler)
            .args([
                "record",
                "--format",
                "json",
                "--pid",
                &child.id().to_string(),
            ])
            .arg("--duration")
            .arg(format!("{}ms", self.duration.as_millis()))
            .arg("--frequency")
            .arg(self.frequency_hz.to_string())
            .arg("-o")
            .arg(out.path())
            .stdout(Stdio::null())
            .output();
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
        share_in_json_profile(&profile, function)
    }
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
