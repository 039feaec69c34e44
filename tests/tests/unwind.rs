//! Whole, correctly named stacks from software built without frame pointers: the eBPF
//! unwinder with `.eh_frame` tables, JIT perf maps, binaries named from the process's own mount
//! namespace, short-lived processes, and nothing lost silently. Needs root.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use fleetprof_profiler::{
    bpf::SamplerConfig,
    profile::{Frame, SymbolizedProfile},
    record::{RecordOptions, RecorderStats, record},
};
use fleetprof_tests::{
    build_c_fixture_without_frame_pointers, number_before, process_cpu_seconds, require_root,
    workspace_bin,
};

/// Kills the child when dropped, so a failed assertion leaves no busy process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Running {
    let child = Command::new(program.as_ref())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", program.as_ref()));
    Running(child)
}

/// Waits until `pid` has used some CPU: it is running its workload, not starting up.
fn wait_until_busy(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cpu = process_cpu_seconds(pid).unwrap_or_else(|| panic!("process {pid} is gone"));
        if cpu >= 0.1 {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} never got busy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Records `pids` at 99 Hz until each has used `cpu_seconds` more CPU (about 99 samples per
/// CPU-second, however loaded the machine is), or a minute has passed.
fn record_pids(pids: Vec<u32>, cpu_seconds: f64) -> SymbolizedProfile {
    record_pids_with(pids.clone(), &pids, cpu_seconds, SamplerConfig::default()).0
}

/// Records `pids` until each of `busy` has used `cpu_seconds` more CPU, with these sampler
/// settings (frequency and pids are set here); the profile and the recorder's figures.
fn record_pids_with(
    pids: Vec<u32>,
    busy: &[u32],
    cpu_seconds: f64,
    sampler: SamplerConfig,
) -> (SymbolizedProfile, RecorderStats) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let started = started.clone();
        let pids = busy.to_vec();
        std::thread::spawn(move || {
            // Count CPU from the moment sampling starts (loading the tables of a large binary
            // comes first).
            while !started.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let start: Vec<Option<f64>> = pids.iter().map(|&p| process_cpu_seconds(p)).collect();
            while !stop.load(Ordering::Relaxed) {
                let done = pids.iter().zip(&start).all(|(&pid, start)| {
                    match (process_cpu_seconds(pid), start) {
                        (Some(now), Some(start)) => now - start >= cpu_seconds,
                        // Gone: nothing more to wait for.
                        _ => true,
                    }
                });
                if done {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let options = RecordOptions {
        duration: Duration::from_secs(60),
        sampler: SamplerConfig {
            frequency_hz: 99,
            pids,
            ..sampler
        },
        started: Some(started),
        ..Default::default()
    };
    let recorded = record(&options, Some(&stop)).expect("record");
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    recorded
}

/// Rows of the unwind-row array that describing `pids` takes (their modules' tables, each once).
fn rows_used_by(pids: Vec<u32>) -> u64 {
    let options = RecordOptions {
        duration: Duration::from_millis(200),
        sampler: SamplerConfig {
            pids,
            ..Default::default()
        },
        ..Default::default()
    };
    record(&options, None)
        .expect("record")
        .1
        .tracker
        .unwind
        .rows_used
}

/// Each sample of `pid` as (frames root first, count).
fn stacks_of(profile: &SymbolizedProfile, pid: u32) -> Vec<(Vec<&Frame>, u64)> {
    profile
        .samples
        .iter()
        .filter(|s| profile.processes[s.process as usize].pid == pid)
        .map(|s| {
            let frames = s
                .stack
                .iter()
                .rev()
                .map(|&f| &profile.frames[f as usize])
                .collect();
            (frames, s.count)
        })
        .collect()
}

/// Share of `pid`'s samples for which `pred` holds, and the sample count.
fn share(profile: &SymbolizedProfile, pid: u32, pred: impl Fn(&[&Frame]) -> bool) -> (f64, u64) {
    let stacks = stacks_of(profile, pid);
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let hits: u64 = stacks
        .iter()
        .filter(|(frames, _)| pred(frames))
        .map(|(_, c)| c)
        .sum();
    (hits as f64 / total.max(1) as f64, total)
}

/// The stack reaches the process entry or a thread's start.
fn reaches_entry(frames: &[&Frame]) -> bool {
    frames.iter().take(3).any(|f| {
        f.function == "_start"
            || f.function.starts_with("__libc_start")
            || f.function.starts_with("start_thread")
            || f.function.starts_with("clone")
    })
}

/// `names` appear in this order (not necessarily adjacent), root first; `"<libc>"` matches any
/// frame of libc.
fn has_chain(frames: &[&Frame], names: &[&str]) -> bool {
    let mut at = 0;
    for name in names {
        let found = frames[at..].iter().position(|f| {
            if *name == "<libc>" {
                !f.kernel
                    && Path::new(&f.module)
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("libc"))
            } else {
                f.function == *name
            }
        });
        match found {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
    true
}

fn print_top(profile: &SymbolizedProfile, pid: u32, n: usize) {
    let mut stacks = stacks_of(profile, pid);
    stacks.sort_by_key(|s| std::cmp::Reverse(s.1));
    for (frames, count) in stacks.iter().take(n) {
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        eprintln!("  {count:>4} {}", names.join(";"));
    }
}

/// `tests/fixtures/unwind_workload.c`, built without frame pointers into `dir`.
fn unwind_workload(dir: &Path) -> PathBuf {
    build_c_fixture_without_frame_pointers("unwind_workload", dir, "unwind_workload", &[])
}

/// Acceptance 1: a workload of our own built without frame pointers, whose hot path goes from
/// `main` through libc's `qsort` back into a comparator: nearly every sample carries the whole
/// chain, from `_start` to the leaf, by name.
#[test]
fn own_code_without_frame_pointers_has_whole_stacks() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let exe = unwind_workload(dir.path());
    let workload = spawn(&exe, &["qsort", "60"]);
    let pid = workload.0.id();
    wait_until_busy(pid);
    let profile = record_pids(vec![pid], 2.0);
    drop(workload);

    let chain = [
        "main",
        "run_batches",
        "sort_batch",
        "<libc>",
        "compare_items",
        "leaf_work_plain",
    ];
    let (whole, total) = share(&profile, pid, |frames| {
        reaches_entry(frames) && has_chain(frames, &chain)
    });
    eprintln!(
        "{total} samples, {:.1}% with the whole chain; losses {:?}",
        whole * 100.0,
        profile.losses
    );
    print_top(&profile, pid, 5);
    assert!(total >= 50, "too few samples to judge: {total}");
    assert!(
        whole >= 0.9,
        "{:.1}% of samples carry _start..main..qsort..compare_items..leaf_work_plain, need 90%",
        whole * 100.0
    );
    assert_eq!(profile.losses.stack_collisions, 0);
}

/// Acceptance 2: the distribution's own binaries, stripped and without frame pointers, are
/// unwound to their entry point.
#[test]
fn distribution_binaries_reach_their_entry() {
    require_root();
    let python = Path::new("/usr/bin/python3.11");
    assert!(
        python.exists(),
        "Debian's python3.11 is missing; `cargo xtask setup` installs it"
    );
    let workloads = [
        (
            "python3.11",
            spawn(
                python,
                &[
                    "-c",
                    "import time\nend=time.time()+60\nwhile time.time()<end: sum(i*i for i in range(10000))",
                ],
            ),
        ),
        (
            "perl",
            spawn(
                "perl",
                &[
                    "-e",
                    "my $x = 0; my $end = time + 60; while (time < $end) { $x += sqrt($_) for 1..10000 }",
                ],
            ),
        ),
        (
            "xz",
            spawn(
                "sh",
                &["-c", "exec xz -9 -T1 -c < /dev/urandom > /dev/null"],
            ),
        ),
        (
            "gzip",
            spawn("sh", &["-c", "exec gzip -9 -c < /dev/urandom > /dev/null"]),
        ),
    ];
    for (_, w) in &workloads {
        wait_until_busy(w.0.id());
    }
    let pids = workloads.iter().map(|(_, w)| w.0.id()).collect();
    let profile = record_pids(pids, 1.0);
    let mut failures = Vec::new();
    for (name, w) in &workloads {
        let pid = w.0.id();
        let (reached, total) = share(&profile, pid, reaches_entry);
        eprintln!(
            "{name}: {total} samples, {:.1}% reach the entry",
            reached * 100.0
        );
        print_top(&profile, pid, 3);
        if total < 20 || reached < 0.9 {
            failures.push(format!("{name}: {:.1}% of {total}", reached * 100.0));
        }
    }
    assert!(
        failures.is_empty(),
        "need >= 20 samples and >= 90% reaching _start/__libc_start_main: {failures:?}"
    );
}

/// Acceptance 3: `node --perf-basic-prof` names its hot JavaScript function.
#[test]
fn node_jit_functions_are_named_from_perf_maps() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hot.js");
    std::fs::write(
        &script,
        "function hotFunctionForProfiling(n) { let x = 0; for (let i = 0; i < n; i++) { x = (x * 31 + i) % 1000003; } return x; }\n\
         let s = 0; const end = Date.now() + 60000;\n\
         while (Date.now() < end) { s += hotFunctionForProfiling(100000); }\n\
         console.log(s);\n",
    )
    .unwrap();
    let node = spawn("node", &["--perf-basic-prof", script.to_str().unwrap()]);
    let pid = node.0.id();
    let perf_map = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&perf_map).is_ok_and(|m| m.contains("hotFunctionForProfiling")) {
        assert!(
            Instant::now() < deadline,
            "node never wrote {}",
            perf_map.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until_busy(pid);
    let profile = record_pids(vec![pid], 1.5);
    drop(node);
    let _ = std::fs::remove_file(&perf_map);

    let (named, total) = share(&profile, pid, |frames| {
        frames
            .iter()
            .any(|f| f.function.contains("hotFunctionForProfiling"))
    });
    eprintln!(
        "node: {total} samples, {:.1}% name the hot function",
        named * 100.0
    );
    print_top(&profile, pid, 3);
    assert!(total >= 50, "too few samples: {total}");
    assert!(
        named > 0.5,
        "the JS function is named in {:.1}% of samples, need a majority",
        named * 100.0
    );
}

/// Acceptance 4a: a process in its own mount namespace, running a binary whose path exists on
/// the host with other contents, is named from its own binary.
#[test]
fn container_binary_is_named_from_its_own_file() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let host = build_c_fixture_without_frame_pointers(
        "unwind_workload",
        dir.path(),
        "service",
        &["-DVARIANT=host"],
    );
    let inside = build_c_fixture_without_frame_pointers(
        "unwind_workload",
        dir.path(),
        "service_in_container",
        &["-DVARIANT=container"],
    );
    // The host's file stays at its path; only the new mount namespace sees the other binary there.
    let script = format!(
        "mount --bind {inside} {host} && exec {host} qsort 60",
        inside = inside.display(),
        host = host.display()
    );
    let contained = spawn(
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let pid = contained.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "service")
    {
        assert!(
            Instant::now() < deadline,
            "the contained process never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until_busy(pid);
    let profile = record_pids(vec![pid], 1.5);
    drop(contained);

    let (own, total) = share(&profile, pid, |frames| {
        frames.iter().any(|f| f.function == "leaf_work_container")
    });
    let (hosts, _) = share(&profile, pid, |frames| {
        frames.iter().any(|f| f.function == "leaf_work_host")
    });
    print_top(&profile, pid, 3);
    assert!(total >= 50, "too few samples: {total}");
    assert!(
        own >= 0.9 && hosts == 0.0,
        "named from its own binary in {:.1}% of samples, from the host's in {:.1}%",
        own * 100.0,
        hosts * 100.0
    );
    let info = profile.processes.iter().find(|p| p.pid == pid).unwrap();
    let inside_id = blazesym::helper::read_elf_build_id(&inside)
        .unwrap()
        .map(|id| id.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .unwrap();
    assert_eq!(
        info.build_id, inside_id,
        "the process's own executable's build-id"
    );
}

/// Acceptance 4b: a burst of processes that each live ~200 ms, all gone before the profile is
/// symbolized at the end, are still identified and named.
#[test]
fn short_lived_processes_are_named() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c_fixture_without_frame_pointers("unwind_workload", dir.path(), "burst", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        let exe = exe.clone();
        std::thread::spawn(move || {
            // Let the recording start first; its tracker captures processes as they appear.
            std::thread::sleep(Duration::from_millis(500));
            let mut pids = Vec::new();
            for _ in 0..12 {
                let mut child = Command::new(&exe).args(["burst", "200"]).spawn().unwrap();
                pids.push(child.id());
                child.wait().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            pids
        })
    };
    let options = RecordOptions {
        duration: Duration::from_secs(30),
        sampler: SamplerConfig {
            frequency_hz: 99,
            ..Default::default()
        },
        ..Default::default()
    };
    let (profile, _) = record(&options, Some(&stop)).expect("record");
    let pids = spawner.join().unwrap();

    let mut sampled = 0;
    let mut identified = 0;
    let mut samples = 0u64;
    let mut named = 0u64;
    for &pid in &pids {
        let stacks = stacks_of(&profile, pid);
        if stacks.is_empty() {
            continue;
        }
        sampled += 1;
        let info = profile.processes.iter().find(|p| p.pid == pid).unwrap();
        if !info.build_id.is_empty() && info.exe.ends_with("/burst") {
            identified += 1;
        } else {
            eprintln!("not identified: {info:?}");
        }
        for (frames, count) in stacks {
            samples += count;
            // Named: the sample's user leaf (the function on CPU; the vDSO's trampoline aside)
            // has its name, read from the file the process mapped, though the process is gone.
            let leaf = frames
                .iter()
                .rev()
                .find(|f| !f.kernel && f.module != "[vdso]");
            if leaf.is_some_and(|f| f.symbolized) {
                named += count;
            } else {
                let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
                eprintln!("  not named: {count} {}", names.join(";"));
            }
        }
    }
    eprintln!(
        "{sampled} of {} processes sampled, {identified} identified, {named} of {samples} samples named",
        pids.len()
    );
    assert!(sampled >= 10, "only {sampled} of 12 processes were sampled");
    assert_eq!(
        identified, sampled,
        "every sampled process keeps its executable and build-id"
    );
    assert!(
        named as f64 >= 0.9 * samples as f64,
        "{named} of {samples} samples name the workload's function"
    );
}

/// Acceptance 5: no stack is lost to collisions; a stack deeper than the unwinder walks is
/// marked truncated and counted in `record`'s summary line; a table that does not fit is counted.
#[test]
fn truncation_and_dropped_tables_are_counted() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let exe =
        build_c_fixture_without_frame_pointers("unwind_workload", dir.path(), "deep_workload", &[]);
    let workload = spawn(&exe, &["deep", "60"]);
    let pid = workload.0.id();
    wait_until_busy(pid);
    let folded = dir.path().join("deep.folded");
    let run = |extra: &[&str]| {
        let out = Command::new(workspace_bin("fleetprof-profiler"))
            .args(["record", "--duration", "2s", "--frequency", "99", "--pid"])
            .arg(pid.to_string())
            .args(extra)
            .arg("-o")
            .arg(&folded)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "record failed: {stderr}");
        eprintln!("{stderr}");
        stderr
    };

    let summary = run(&[]);
    let line = summary.lines().find(|l| l.starts_with("recorded")).unwrap();
    let recorded = number_before(line, "samples").unwrap();
    let truncated = line
        .split("truncated stacks: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap();
    assert!(line.contains("0 collisions"), "{line}");
    assert!(recorded >= 20, "{line}");
    assert!(
        truncated as f64 >= 0.9 * recorded as f64,
        "a 300-deep recursion is cut at the depth limit: {line}"
    );
    let folded_text = std::fs::read_to_string(&folded).unwrap();
    assert!(
        folded_text.contains("[truncated: depth limit]"),
        "the cut stacks carry a marker frame"
    );

    // Room for 1,000 rows: libc's table does not fit, and the summary says so.
    let summary = run(&["--unwind-rows", "1000"]);
    let line = summary.lines().find(|l| l.starts_with("recorded")).unwrap();
    let dropped = line
        .split("MiB, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(dropped >= 1, "tables that did not fit are counted: {line}");
    drop(workload);
}

/// A full row array makes room for a sampled process: the tables of a process that has not been
/// sampled for a while (an idle Python interpreter) are evicted so that a busy workload's fit,
/// and the workload's stacks are whole instead of cut by frame-pointer walks.
#[test]
fn idle_processes_make_room_for_sampled_ones() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let exe = unwind_workload(dir.path());
    let idle = spawn("/usr/bin/python3", &["-c", "import time; time.sleep(600)"]);
    // The interpreter is idle once it sleeps: wait for that (its state in /proc says so).
    let idle_pid = idle.0.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(format!("/proc/{idle_pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('S'))
    }) {
        assert!(Instant::now() < deadline, "python3 never went to sleep");
        std::thread::sleep(Duration::from_millis(20));
    }
    // How many rows the interpreter's tables take, and the workload's on top of them.
    let probe = spawn(&exe, &["qsort", "60"]);
    let rows_idle = rows_used_by(vec![idle_pid]);
    let rows_both = rows_used_by(vec![idle_pid, probe.0.id()]);
    drop(probe);
    assert!(
        rows_both > rows_idle,
        "the workload has tables of its own: {rows_idle} -> {rows_both} rows"
    );
    // One row short of holding both: the workload's table fits only if the interpreter's goes.
    // The workload starts after the interpreter was described (it execs two seconds in).
    let script = format!("sleep 2; exec {} qsort 60", exe.display());
    let workload = spawn("/bin/sh", &["-c", &script]);
    let pid = workload.0.id();
    let (profile, stats) = record_pids_with(
        vec![idle_pid, pid],
        &[pid],
        8.0,
        SamplerConfig {
            unwind_rows: u32::try_from(rows_both - 1).unwrap(),
            unwind_evict_idle_after: Duration::from_secs(1),
            ..Default::default()
        },
    );
    drop(workload);
    drop(idle);
    let unwind = stats.tracker.unwind;
    let (whole, total) = share(&profile, pid, reaches_entry);
    eprintln!(
        "rows: interpreter {rows_idle}, both {rows_both}; {total} samples of the workload, \
         {:.1}% whole; {unwind:?}",
        whole * 100.0
    );
    print_top(&profile, pid, 5);
    assert!(
        unwind.idle_processes_evicted >= 1,
        "the idle interpreter gave up its tables: {unwind:?}"
    );
    assert!(total >= 100, "too few samples to judge: {total}");
    // Until the interpreter has been idle for a second (and a drain has passed) the workload's
    // code may be walked by frame pointers, cut: two seconds at most of its eight.
    assert!(
        whole >= 0.6,
        "{:.1}% of the workload's samples reach its entry point, need 60%",
        whole * 100.0
    );
}
