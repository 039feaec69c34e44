//! Re-profiling a fix profiles the workload's whole process tree: a workload that does its work
//! in forked children (tests/templates/forking) is measured through its cgroup, with the real
//! eBPF profiler. Needs root.
//!
//! Run: `cargo build --workspace --bins --exclude profiler-ebpf && cargo test -p fleetprof-tests --test agent_reprofile`

use std::{path::Path, process::Command, time::Duration};

use fleetprof_agent::reprofile::{ProfilerReprofiler, samples_per_pid};
use fleetprof_tests::{require_root, workspace_bin};

#[test]
fn a_workload_that_spawns_children_is_profiled_whole() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/forking/forking.c");
    let status = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-o",
        ])
        .arg(dir.path().join("forking"))
        .arg(&src)
        .status()
        .expect("gcc (cargo xtask setup installs it)");
    assert!(status.success());
    let reprofiler = ProfilerReprofiler {
        profiler: workspace_bin("fleetprof-profiler"),
        duration: Duration::from_secs(2),
        frequency_hz: 499,
        warmup: Duration::from_millis(300),
    };
    // The parent only waits: the workload's CPU is its two children's. Both must be in the
    // re-profiled workload (a `--pid` of the parent would see next to nothing).
    let (profile, members) = reprofiler
        .profile(dir.path(), "./forking 5")
        .expect("re-profiling the forking workload");
    let members = members.expect("a cgroup v2 hierarchy to put the workload in (root)");
    let per_pid = samples_per_pid(&profile, &members);
    println!(
        "workload samples per pid: {per_pid:?} (members {:?})",
        members.pids
    );
    let busy: Vec<_> = per_pid.iter().filter(|(_, n)| **n >= 20).collect();
    assert!(
        busy.len() >= 2,
        "both forked workers are profiled as the workload: {per_pid:?}"
    );
    let parent_pid = members.pids.iter().min().copied().unwrap_or(0);
    let children: u64 = per_pid
        .iter()
        .filter(|(p, _)| **p != parent_pid)
        .map(|(_, n)| n)
        .sum();
    let total: u64 = per_pid.values().sum();
    assert!(
        children * 10 >= total * 9,
        "the children's samples are the workload's bulk: {children} of {total}"
    );
    // Nothing of the workload outlives the measurement.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("cmdline")).ok())
        .filter(|c| c.starts_with("./forking"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
