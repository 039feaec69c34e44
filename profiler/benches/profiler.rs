//! `cargo xtask bench profiler`: what whole-host profiling costs, on a busy host running software
//! this project did not build (Debian's python3.11, perl, xz, gzip, node, sh; no frame pointers).
//!
//! For 19 Hz and 99 Hz, with unwind tables and with frame pointers only, it profiles the whole
//! host for `SECONDS` (default 10) through the same session `record` and `run` use, and prints
//! per-sample BPF cost (the kernel's `bpf_stats`), the profiler's CPU as a share of one CPU, its
//! RSS, the memory of its BPF maps, and the share of samples whose stack reached the entry point.
//! Needs root.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fleetprof_profiler::{bpf::SamplerConfig, profile::ProfileBuilder, session::Session};

/// One configuration's figures.
struct Figures {
    samples: u64,
    reached_entry: f64,
    ns_per_sample: f64,
    cpu_share: f64,
    rss_mib: f64,
    map_mib: f64,
    tables: u64,
    table_mib: f64,
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "bench profiler loads eBPF programs: run it as root (cargo xtask bench profiler)"
        );
        std::process::exit(1);
    }
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let workloads = start_workloads();
    eprintln!(
        "{} processes of distribution software running; profiling the whole host for {seconds} s per configuration",
        workloads.len()
    );
    let stats_sysctl = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_sysctl).unwrap_or_default();
    let _ = std::fs::write(stats_sysctl, "1");

    println!(
        "{:>6} {:>14} {:>9} {:>10} {:>12} {:>9} {:>9} {:>9} {:>15}",
        "Hz",
        "stacks",
        "samples",
        "entry %",
        "ns/sample",
        "CPU %",
        "RSS MiB",
        "maps MiB",
        "tables (MiB)"
    );
    for hz in [19, 99] {
        for frame_pointers_only in [true, false] {
            let f = measure(hz, frame_pointers_only, Duration::from_secs(seconds));
            println!(
                "{:>6} {:>14} {:>9} {:>9.1}% {:>12.0} {:>8.2}% {:>9.1} {:>9.1} {:>6} ({:>5.1})",
                hz,
                if frame_pointers_only {
                    "frame pointers"
                } else {
                    "unwind tables"
                },
                f.samples,
                f.reached_entry * 100.0,
                f.ns_per_sample,
                f.cpu_share * 100.0,
                f.rss_mib,
                f.map_mib,
                f.tables,
                f.table_mib,
            );
        }
    }
    let _ = std::fs::write(stats_sysctl, stats_before.trim());
    drop(workloads);
    println!(
        "\nCPU % is the profiler's own CPU time (all threads) over wall time, as a share of one CPU; \
         maps MiB is the kernel memory of its BPF maps (fdinfo memlock)."
    );
}

/// Kills the processes when dropped.
struct Workloads(Vec<Child>);

impl Workloads {
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_workloads() -> Workloads {
    let python = "import time\nwhile True: sum(i*i for i in range(20000)); time.sleep(0.001)";
    let perl =
        "while (1) { my $x = 0; $x += sqrt($_) for 1..20000; select(undef, undef, undef, 0.001) }";
    let node = "setInterval(() => { let x = 0; for (let i = 0; i < 200000; i++) x = (x * 31 + i) % 1000003; }, 5);";
    let mut commands: Vec<Vec<&str>> = Vec::new();
    for _ in 0..5 {
        commands.push(vec!["/usr/bin/python3.11", "-c", python]);
        commands.push(vec!["perl", "-e", perl]);
    }
    for _ in 0..3 {
        commands.push(vec![
            "sh",
            "-c",
            "exec xz -6 -T1 -c < /dev/urandom > /dev/null",
        ]);
        commands.push(vec![
            "sh",
            "-c",
            "exec gzip -6 -c < /dev/urandom > /dev/null",
        ]);
    }
    for _ in 0..3 {
        commands.push(vec!["node", "-e", node]);
    }
    commands.push(vec!["sh", "-c", "while :; do :; done"]);
    let children = commands
        .iter()
        .filter_map(|argv| {
            Command::new(argv[0])
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| eprintln!("not started: {argv:?}: {e}"))
                .ok()
        })
        .collect();
    // Let them get past start-up.
    std::thread::sleep(Duration::from_secs(1));
    Workloads(children)
}

fn measure(hz: u32, frame_pointers_only: bool, duration: Duration) -> Figures {
    let config = SamplerConfig {
        frequency_hz: hz,
        frame_pointers_only,
        ..Default::default()
    };
    let cpu_before = own_cpu_seconds();
    let started = Instant::now();
    let mut session = Session::start(&config, Vec::new()).expect("session");
    let mut builder = ProfileBuilder::new(hz);
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        session.collect_into(&mut builder).expect("drain");
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu_before;
    let (run_time, _runs) = session.sampler().run_stats();
    let map_mib = bpf_map_bytes() as f64 / (1024.0 * 1024.0);
    let rss_mib = rss_bytes() as f64 / (1024.0 * 1024.0);
    let tracker = session.tracker_stats();
    let profile = builder.finish(fleetprof_profiler::energy::EnergyReport::Unavailable {
        reason: "not measured".into(),
    });
    let events = profile.losses.events.max(1);
    let mut user_samples = 0u64;
    let mut reached = 0u64;
    for s in &profile.samples {
        let user: Vec<&str> = s
            .stack
            .iter()
            .map(|&f| &profile.frames[f as usize])
            .filter(|f| !f.kernel)
            .map(|f| f.function.as_str())
            .collect();
        if user.is_empty() {
            continue;
        }
        user_samples += s.count;
        let root = &user[user.len().saturating_sub(3)..];
        if root.iter().any(|n| {
            *n == "_start"
                || n.starts_with("__libc_start")
                || n.starts_with("start_thread")
                || n.starts_with("clone")
        }) {
            reached += s.count;
        }
    }
    drop(session);
    Figures {
        samples: profile.total_samples(),
        reached_entry: reached as f64 / user_samples.max(1) as f64,
        ns_per_sample: run_time.as_nanos() as f64 / events as f64,
        cpu_share: cpu / wall,
        rss_mib,
        map_mib,
        tables: tracker.unwind.tables_loaded,
        table_mib: tracker.unwind.rows_used as f64
            * std::mem::size_of::<profiler_ebpf::UnwindRow>() as f64
            / (1024.0 * 1024.0),
    }
}

fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Kernel memory charged to this process's BPF maps: the `memlock` of every map fd.
fn bpf_map_bytes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.contains("map_type:"))
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}
