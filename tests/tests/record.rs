//! `record`: real eBPF sampling of a workload with a known CPU split, and the output formats
//! read back. Needs root.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use fleetprof_profiler::{
    bpf::SamplerConfig,
    output::{self, Format},
    profile::SymbolizedProfile,
    record::{RecordOptions, record},
};
use fleetprof_tests::{build_c_fixture, process_cpu_seconds, require_root, workspace_bin};

/// Samples whose stack contains `function`, for process `pid`.
fn samples_through(profile: &SymbolizedProfile, pid: u32, function: &str) -> u64 {
    profile
        .samples
        .iter()
        .filter(|s| profile.processes[s.process as usize].pid == pid)
        .filter(|s| {
            s.stack
                .iter()
                .any(|&f| profile.frames[f as usize].function == function)
        })
        .map(|s| s.count)
        .sum()
}

fn samples_of(profile: &SymbolizedProfile, pid: u32) -> u64 {
    profile
        .samples
        .iter()
        .filter(|s| profile.processes[s.process as usize].pid == pid)
        .map(|s| s.count)
        .sum()
}

/// The split workload's 75/25 CPU split between hot_a and hot_b is recovered by name at 99 Hz,
/// and the samples recorded match frequency x CPU-seconds; pprof, SVG and JSON carry the same.
#[test]
fn records_known_split_by_function_name() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let workload = build_c_fixture("split_workload", dir.path());
    let mut child = Command::new(&workload)
        .args(["30", "75"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(200));

    // Count the program's run time for the closing figures; restored below.
    let stats_sysctl = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_sysctl).unwrap_or_default();
    let _ = std::fs::write(stats_sysctl, "1");
    let cpu_before = process_cpu_seconds(pid).unwrap();
    let options = RecordOptions {
        duration: Duration::from_secs(3),
        sampler: SamplerConfig {
            frequency_hz: 99,
            pids: vec![pid],
            ..Default::default()
        },
        ..Default::default()
    };
    let (profile, stats) = record(&options, None).expect("record");
    let cpu_during = process_cpu_seconds(pid).unwrap() - cpu_before;
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::write(stats_sysctl, stats_before.trim());

    let total = samples_of(&profile, pid);
    let expected = 99.0 * cpu_during;
    let a = samples_through(&profile, pid, "hot_a");
    let b = samples_through(&profile, pid, "hot_b");
    let share_a = a as f64 / (a + b).max(1) as f64;
    eprintln!(
        "samples: {total} recorded vs {expected:.0} expected (99 Hz x {cpu_during:.2} CPU-s); hot_a {a}, hot_b {b}, \
         share {share_a:.3}; losses {:?}; peak RSS {} KiB; bpf run time {} ns over {} runs ({:.0} ns per run)",
        profile.losses,
        stats.peak_rss_bytes / 1024,
        stats.bpf_run_time_ns,
        stats.bpf_run_count,
        stats.bpf_run_time_ns as f64 / stats.bpf_run_count.max(1) as f64
    );
    // Sampling is per CPU on a timer, so the count tracks CPU time; allow 15% for the timer's
    // slack and the grace period around generation flips.
    assert!(
        (total as f64 - expected).abs() <= 0.15 * expected,
        "recorded {total} samples, expected about {expected:.0}"
    );
    // Binomial noise on ~300 samples at p=0.75 is sigma = 0.025; 0.07 is almost 3 sigma.
    assert!(
        (share_a - 0.75).abs() < 0.07,
        "hot_a share {share_a:.3}, expected 0.75 +- 0.07"
    );
    assert!(
        a + b >= total * 9 / 10,
        "90% of samples go through hot_a or hot_b: {a}+{b} of {total}"
    );
    assert_eq!(
        profile.losses.counts_map_full, 0,
        "no sample lost to full maps"
    );
    let process = profile.processes.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(process.comm, "split_workload");
    assert!(!process.build_id.is_empty(), "gcc emits a build-id");
    let hot_a = profile
        .frames
        .iter()
        .find(|f| f.function == "hot_a")
        .unwrap();
    assert!(
        hot_a
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("split_workload.c")),
        "{hot_a:?}"
    );
    assert!(hot_a.line.is_some(), "debug info gives a line: {hot_a:?}");
    assert_eq!(hot_a.build_id.as_deref(), Some(process.build_id.as_str()));

    // pprof: decodes and names the same functions with the same weights.
    let mut pprof = Vec::new();
    output::write(&profile, Format::Pprof, &mut pprof).unwrap();
    let decoded = output::pprof::decode(&pprof).unwrap();
    let name_of = |id: u64| {
        let f = decoded.function.iter().find(|f| f.id == id).unwrap();
        decoded.string_table[f.name as usize].clone()
    };
    let mut pprof_counts: HashMap<String, i64> = HashMap::new();
    for sample in &decoded.sample {
        let mut names: Vec<String> = sample
            .location_id
            .iter()
            .flat_map(|id| {
                decoded
                    .location
                    .iter()
                    .find(|l| l.id == *id)
                    .unwrap()
                    .line
                    .iter()
                    .map(|l| name_of(l.function_id))
            })
            .collect();
        names.dedup();
        for name in names {
            *pprof_counts.entry(name).or_default() += sample.value[0];
        }
    }
    assert_eq!(pprof_counts.get("hot_a").copied(), Some(a as i64));
    assert_eq!(pprof_counts.get("hot_b").copied(), Some(b as i64));

    // SVG: a flame graph naming both functions.
    let mut svg = Vec::new();
    output::write(&profile, Format::Svg, &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("hot_a") && svg.contains("hot_b"));

    // JSON: structured, with the loss counters.
    let mut json = Vec::new();
    output::write(&profile, Format::Json, &mut json).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(json["losses"]["counts_map_full"].is_u64(), "{json}");
}

/// Without a pid filter every process is sampled except the profiler's own.
#[test]
fn excludes_own_samples_but_records_others() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let workload = build_c_fixture("split_workload", dir.path());
    let mut child = Command::new(&workload)
        .args(["30", "50"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stop = AtomicBool::new(false);
    let profile = std::thread::scope(|scope| {
        // Burn CPU in this (the profiler's) process while recording.
        scope.spawn(|| {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        });
        let options = RecordOptions {
            duration: Duration::from_secs(2),
            ..Default::default()
        };
        let (profile, _) = record(&options, None).expect("record");
        stop.store(true, Ordering::Relaxed);
        profile
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        samples_of(&profile, child.id()) > 0,
        "the workload was sampled"
    );
    assert_eq!(
        samples_of(&profile, std::process::id()),
        0,
        "the profiler's own samples are excluded"
    );
    assert!(
        profile.losses.filtered > 0,
        "the excluded samples are counted as filtered"
    );
}

/// The CLI writes pprof and SVG files, and without privileges says so in one line and fails.
#[test]
fn cli_writes_files_and_explains_missing_privileges() {
    require_root();
    let bin = workspace_bin("fleetprof-profiler");
    let dir = tempfile::tempdir().unwrap();
    let workload = build_c_fixture("split_workload", dir.path());
    let mut child = Command::new(&workload)
        .args(["60", "75"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    for (format, file) in [("pprof", "out.pb.gz"), ("svg", "out.svg")] {
        let out = dir.path().join(file);
        let status = Command::new(&bin)
            .args([
                "record",
                "--duration",
                "1s",
                "--frequency",
                "99",
                "--pid",
                &pid,
                "--format",
                format,
                "-o",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "record --format {format} failed");
        let bytes = std::fs::read(&out).unwrap();
        if format == "pprof" {
            let profile = output::pprof::decode(&bytes).unwrap();
            assert!(profile.string_table.iter().any(|s| s == "hot_a"));
        } else {
            assert!(String::from_utf8_lossy(&bytes).contains("hot_a"));
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // An unprivileged user (nobody) gets one clear line and a non-zero exit.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(["record", "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux) runs the CLI as nobody");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("needs root") && stderr.contains("CAP_BPF"),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}
