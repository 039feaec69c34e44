//! Re-profiling a fix profiles the workload's whole process tree: a workload that does its work
//! in forked children (tests/templates/forking), or forks workers while a round records, is
//! measured through its cgroup, with the real eBPF profiler. Needs root.
//!
//! Run: `cargo build --workspace --bins --exclude profiler-ebpf && cargo test -p fleetprof-tests --test agent_reprofile`

use std::{path::Path, process::Command, time::Duration};

use fleetprof_agent::reprofile::{ProfilerReprofiler, samples_per_pid};
use fleetprof_tests::{require_root, workspace_bin};

/// Compiles the C file `src` to `out` with frame pointers.
fn gcc(src: &Path, out: &Path) {
    let status = Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-o",
        ])
        .arg(out)
        .arg(src)
        .status()
        .expect("gcc (cargo xtask setup installs it)");
    assert!(status.success());
}

/// A temporary directory the unprivileged sandbox user, which runs the commands and the
/// workload, can reach.
fn sandbox_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    dir
}

/// The real profiler at 499 Hz, recording `seconds` a round after 300 ms of warm-up.
fn reprofiler(seconds: u64) -> ProfilerReprofiler {
    ProfilerReprofiler {
        profiler: workspace_bin("fleetprof-profiler"),
        duration: Duration::from_secs(seconds),
        frequency_hz: 499,
        warmup: Duration::from_millis(300),
    }
}

#[test]
fn a_workload_that_spawns_children_is_profiled_whole() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/forking/forking.c");
    gcc(&src, &dir.path().join("forking"));
    let reprofiler = reprofiler(2);
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

/// A workload that recycles its worker: the parent forks a worker that spins in `worker_work`
/// for 40 ms of CPU time (about 20 samples at 499 Hz however busy the machine) and exits, waits
/// for it, then forks the next, for as long as it runs. Only one worker lives when a round
/// starts; every other worker of the round is born during it.
const RECYCLING_C: &str = r#"
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
__attribute__((noinline)) unsigned long long worker_work(double seconds) {
    unsigned long long x = 1;
    double end = cpu_now() + seconds;
    while (cpu_now() < end)
        for (int i = 0; i < 100000; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}
int main(void) {
    for (;;) {
        if (fork() == 0) return (int)(worker_work(0.04) & 1);
        wait(NULL);
    }
}
"#;

/// The profiler follows the workload's cgroup for the whole round: workers forked while the
/// round records are profiled as the workload (not only the processes present at its start).
#[test]
fn workers_forked_during_a_round_are_profiled() {
    require_root();
    let dir = sandbox_tempdir();
    let src = dir.path().join("recycling.c");
    std::fs::write(&src, RECYCLING_C).unwrap();
    gcc(&src, &dir.path().join("recycling"));
    let reprofiler = reprofiler(2);
    let (profile, members) = reprofiler
        .profile(dir.path(), "./recycling")
        .expect("re-profiling the recycling workload");
    let members = members.expect("a cgroup v2 hierarchy to put the workload in (root)");
    let per_pid = samples_per_pid(&profile, &members);
    println!("workload samples per pid: {per_pid:?}");
    // The parent and one worker live when the round starts: a third process sampled was born
    // during the round.
    let workers = per_pid.values().filter(|n| **n >= 3).count();
    assert!(
        workers >= 3,
        "workers forked during the round are profiled: {workers} sampled, {per_pid:?}"
    );
    let share = fleetprof_agent::reprofile::share_in_json_profile_of(
        &profile,
        "worker_work",
        Some(&members),
    )
    .unwrap();
    assert!(
        share > 0.5,
        "the workers' function is the workload's bulk: {share:.2}"
    );
}

/// A service whose `score` does `200 + EXTRA` rounds per item; `main` reports the items done in
/// `FLEETPROF_WORK_FILE` every 50 ms, so re-profiling measures CPU per item.
const WORK_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "extra.h"
static volatile unsigned long sink;
__attribute__((noinline)) unsigned long score(unsigned long x) {
    unsigned long h = x;
    for (int i = 0; i < 200 + EXTRA; i++) h = h * 6364136223846793005UL + 1442695040888963407UL;
    return h;
}
__attribute__((noinline)) unsigned long other(unsigned long x) {
    unsigned long h = x;
    for (int i = 0; i < 300; i++) { h ^= h << 13; h ^= h >> 7; h ^= h << 17; }
    return h;
}
int main(void) {
    const char *path = getenv("FLEETPROF_WORK_FILE");
    FILE *out = path ? fopen(path, "a") : NULL;
    unsigned long done = 0;
    struct timespec last, now;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (;;) {
        for (int k = 0; k < 100; k++) sink += score(done + k) + other(done + k);
        done += 100;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (out && (now.tv_sec - last.tv_sec) * 1000000000L + (now.tv_nsec - last.tv_nsec) > 50000000L) {
            fprintf(out, "%lu\n", done);
            fflush(out);
            last = now;
        }
    }
}
"#;

/// A tree of the work service with `EXTRA` rounds in `score`.
fn work_tree(root: &Path, name: &str, extra: u32) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("work.c"), WORK_C).unwrap();
    std::fs::write(dir.join("extra.h"), format!("#define EXTRA {extra}\n")).unwrap();
    dir
}

/// Interleaved A/B rounds with the real profiler: a real fix passes with the statistic (means,
/// 95% intervals, Welch's t) reported per unit of work; a no-op "fix" is rejected.
#[test]
fn interleaved_rounds_report_an_interval_and_reject_a_no_op_fix() {
    use fleetprof_agent::fix::validate::{ValidateConfig, validate};
    require_root();
    let dir = sandbox_tempdir();
    let before = work_tree(dir.path(), "before", 0);
    let regressed = work_tree(dir.path(), "regressed", 1200);
    let fixed = work_tree(dir.path(), "fixed", 0);
    let no_op = work_tree(dir.path(), "no-op", 1200);
    let reprofiler = reprofiler(1);
    let cfg = ValidateConfig {
        build: Some("gcc -O2 -g -fno-omit-frame-pointer -o work work.c".into()),
        workload: Some("./work".into()),
        rounds: 3,
        ..Default::default()
    };
    let run = |tree: &Path| {
        let checks = validate(
            tree,
            &cfg,
            Some(&reprofiler),
            "score",
            Some((0.2, 0.7)),
            Some(&before),
            Some(&regressed),
        );
        checks
            .into_iter()
            .find(|c| c.step == "reprofile")
            .expect("a reprofile check")
    };
    let good = run(&fixed);
    let stat = good.statistic.clone().unwrap_or_default();
    println!("fix: {}\n{stat}", good.detail);
    assert!(good.passed, "{}\n{stat}", good.detail);
    assert!(
        stat.contains("3 interleaved rounds (before, regressed, fixed)"),
        "{stat}"
    );
    assert!(
        stat.contains("units as the workload reported them in FLEETPROF_WORK_FILE"),
        "work units are used: {stat}"
    );
    assert!(stat.contains(" ± "), "intervals are reported: {stat}");
    assert!(stat.contains("Welch t"), "{stat}");

    let bad = run(&no_op);
    let stat = bad.statistic.clone().unwrap_or_default();
    println!("no-op: {}\n{stat}", bad.detail);
    assert!(
        !bad.passed,
        "a no-op fix must be rejected: {}\n{stat}",
        bad.detail
    );
    assert!(stat.contains("back to the baseline: NO"), "{stat}");
}
