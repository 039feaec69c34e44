//! Issue 15, acceptance 1 and 2: energy attributed the way Kepler does it, end to end.
//!
//! A fixture powercap tree (package 20 W, DRAM 5 W, counters wrapping at a 200 J range) is
//! advanced by a thread that writes, every 20 ms, the energy a constant power has delivered
//! since the start: so the measured power is known exactly, whatever the timing. The profiler
//! daemon (real eBPF) reads it through `--powercap-dir` and ships to the collector (real gRPC)
//! into a throwaway ClickHouse, while the demo service runs v1, then v2 (whose commit adds
//! formatted logging to `price_items`), its CPU time read from `/proc/<pid>/schedstat`. Then:
//!
//! 1. each version's attributed power equals measured power × its CPU-seconds ÷ (elapsed × CPUs)
//!    within 20%; per window, the processes together never exceed the active energy; idle is
//!    stored apart; package and DRAM stay apart; the method and its inputs are stored;
//! 2. `query top --by energy` ranks the service's hottest function first with plausible watts,
//!    `query services` and `query history` show watts, and the regression `detect` finds
//!    carries its cost in watts.
//!
//! Run: `cargo build --bins && cargo test -p fleetprof-tests --test energy -- --nocapture`

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use fleetprof_tests::{
    demo_repo::{DemoRepo, Regression},
    fleet::{Fleet, FleetOptions, STEADY_RPS, run_service},
    require_root,
};

/// The package's constant power, watts.
const PACKAGE_W: f64 = 20.0;
/// DRAM's constant power, watts.
const DRAM_W: f64 = 5.0;
/// `max_energy_range_uj`: 600 J, so the package counter wraps every 30 s (once or twice in the
/// test) while a window, even one a busy machine stretches to 10 s or more, stays shorter than
/// one wrap period.
const MAX_RANGE_UJ: u64 = 600_000_000;
/// How long each version runs, seconds (as the agent tests: enough for `detect`).
const RUN_SECS: u64 = 20;

/// A powercap tree whose counters a thread advances at constant power until dropped.
struct PowercapFixture {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl PowercapFixture {
    /// Lays out `intel-rapl:0` (package-0) and `intel-rapl:0:0` (dram) under `dir` and starts
    /// the writer thread.
    fn start(dir: &Path) -> Self {
        let zones = [
            (dir.join("intel-rapl:0"), "package-0", PACKAGE_W),
            (dir.join("intel-rapl:0:0"), "dram", DRAM_W),
        ];
        for (zone, name, _) in &zones {
            std::fs::create_dir_all(zone).unwrap();
            std::fs::write(zone.join("name"), format!("{name}\n")).unwrap();
            std::fs::write(
                zone.join("max_energy_range_uj"),
                format!("{MAX_RANGE_UJ}\n"),
            )
            .unwrap();
            write_counter(zone, 0);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let secs = started.elapsed().as_secs_f64();
                    for (zone, _, watts) in &zones {
                        // Energy delivered so far at constant power, wrapped like the hardware's.
                        let uj = (watts * secs * 1e6) as u64 % MAX_RANGE_UJ;
                        write_counter(zone, uj);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Self {
            dir: dir.to_path_buf(),
            stop,
            writer: Some(writer),
        }
    }
}

impl Drop for PowercapFixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Replaces `energy_uj` atomically (write, then rename), so a reader never sees half a number.
fn write_counter(zone: &Path, uj: u64) {
    let tmp = zone.join(".energy_uj.tmp");
    std::fs::write(&tmp, format!("{uj}\n")).unwrap();
    std::fs::rename(&tmp, zone.join("energy_uj")).unwrap();
}

/// One version's run: its pid, wall time and CPU time.
struct Measured {
    pid: u32,
    version: &'static str,
    elapsed_secs: f64,
    cpu_secs: f64,
}

/// A process's CPU time so far, seconds: the scheduler's own nanosecond count
/// (`/proc/<pid>/schedstat`), not the tick-sampled utime + stime.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// Runs `bin` as `service`/`version` for [`RUN_SECS`] at the steady load, reading its CPU time
/// every 50 ms until it exits (the last reading is at most 50 ms short).
fn run_measured(bin: &Path, service: &str, version: &'static str) -> Measured {
    let started = Instant::now();
    let mut guard = run_service(
        bin,
        service,
        version,
        RUN_SECS,
        Some(STEADY_RPS),
        Path::new("/dev/null"),
    )
    .expect("starting the demo service");
    let pid = guard.pid();
    let mut cpu_secs = 0.0;
    let deadline = Instant::now() + Duration::from_secs(RUN_SECS + 30);
    while guard.is_running() {
        if let Some(c) = cpu_seconds(pid) {
            cpu_secs = c;
        }
        assert!(
            Instant::now() < deadline,
            "{service} {version} did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Measured {
        pid,
        version,
        elapsed_secs: started.elapsed().as_secs_f64(),
        cpu_secs,
    }
}

fn number(text: &str) -> f64 {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

fn cpus() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }) as f64
}

/// Energy attributed as Kepler does, checked from the fixture's known power down to the
/// function ranking and a regression's cost in watts.
#[test]
fn kepler_attribution_end_to_end() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let repo =
        DemoRepo::create(&dir.path().join("repo"), Regression::Logging).expect("demo repository");
    let powercap = PowercapFixture::start(&dir.path().join("powercap"));
    let mut fleet = Fleet::start(
        &dir.path().join("fleet"),
        FleetOptions {
            powercap_dir: Some(powercap.dir.clone()),
            ..FleetOptions::default()
        },
    )
    .expect("starting the fleet");
    // The daemon is sampling once its first measured window is stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.sql("SELECT count() FROM host_energy") == "0" {
        assert!(
            Instant::now() < deadline,
            "no measured window stored; profiler log:\n{}",
            fleet.profiler.as_ref().map(|p| p.log()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Other tests on this host may run the demo service too: this run's has a name of its own,
    // which is also its executables' name (under 16 bytes, a whole comm), so that it is the
    // same whether the profiler reads the environment or falls back to the name.
    let service = format!("energy{}", std::process::id() % 10_000_000);
    let bins: Vec<PathBuf> = [("v1", &repo.v1_bin), ("v2", &repo.v2_bin)]
        .iter()
        .map(|(v, bin)| {
            let to = dir.path().join(v).join(&service);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(bin, &to).unwrap();
            to
        })
        .collect();
    let runs = [
        run_measured(&bins[0], &service, "v1"),
        run_measured(&bins[1], &service, "v2"),
    ];
    // SIGTERM ships the last partial window; then every window is stored.
    let log = fleet.stop_profiler().expect("stopping the profiler");
    println!("{}", log.lines().last().unwrap_or_default());
    drop(powercap);

    // Acceptance 1: the measured power is the fixture's, split into active and idle.
    let measured_w = number(&fleet.sql(
        // One row per window and domain: the window's length counted once.
        "SELECT sum(measured_joules) / sumIf(interval_seconds, domain = 'package-0') FROM host_energy",
    ));
    println!(
        "measured power {measured_w:.2} W (fixture: {} W)",
        PACKAGE_W + DRAM_W
    );
    assert!(
        (measured_w / (PACKAGE_W + DRAM_W) - 1.0).abs() < 0.05,
        "measured {measured_w} W"
    );
    let dram_share = number(&fleet.sql(
        "SELECT sumIf(measured_joules, domain = 'package-0/dram') / sum(measured_joules) FROM host_energy",
    ));
    assert!(
        (dram_share / (DRAM_W / (PACKAGE_W + DRAM_W)) - 1.0).abs() < 0.05,
        "package and DRAM kept apart: DRAM share {dram_share}"
    );
    let split = fleet.sql(
        "SELECT sum(active_joules), sum(idle_joules), sum(measured_joules), min(busy_ratio), \
         max(busy_ratio), countIf(method NOT LIKE 'kepler-cpu-time:%') FROM host_energy",
    );
    println!("active, idle, measured J, busy ratio min..max, other methods: {split}");
    let f: Vec<f64> = split.split('\t').map(number).collect();
    assert!(
        f[0] > 0.0 && f[1] > 0.0,
        "active and idle both reported: {split}"
    );
    assert!(
        (f[0] + f[1] - f[2]).abs() < 1e-6 * f[2],
        "active + idle = measured: {split}"
    );
    assert!(f[3] >= 0.0 && f[4] <= 1.0 && f[5] == 0.0, "{split}");

    // Per window, the processes never exceed the active energy.
    let windows = fleet.sql(
        "SELECT count(), countIf(p > a * (1 + 1e-9) + 1e-9) FROM ( \
           SELECT host, time, sum(joules) AS p FROM process_energy GROUP BY host, time \
         ) ANY INNER JOIN ( \
           SELECT host, time, sum(active_joules) AS a FROM host_energy GROUP BY host, time \
         ) USING (host, time)",
    );
    println!("windows, windows over active: {windows}");
    let w: Vec<f64> = windows.split('\t').map(number).collect();
    assert!(w[0] >= 2.0 && w[1] == 0.0, "{windows}");

    println!(
        "per window (start, sampled CPU-s of all processes, busy CPU-s, all CPU-s):\n{}",
        fleet.sql(
            "SELECT time, p, b, t FROM ( \
               SELECT host, time, sum(cpu_seconds) AS p FROM process_energy GROUP BY host, time \
             ) ANY INNER JOIN ( \
               SELECT host, time, any(busy_cpu_seconds) AS b, any(total_cpu_seconds) AS t \
               FROM host_energy GROUP BY host, time \
             ) USING (host, time) ORDER BY time"
        )
    );
    // The workload's power: measured power × its CPU-seconds ÷ (elapsed × CPUs), over both
    // versions (each alone is printed; together they carry twice the samples).
    let mut attributed_j = 0.0;
    let mut expected_j = 0.0;
    for run in &runs {
        // By pid: the split is per process.
        let of_run = format!("pid = {} AND comm = '{service}'", run.pid);
        let joules = number(&fleet.sql(&format!(
            "SELECT sum(joules) FROM process_energy WHERE {of_run}"
        )));
        let dram = number(&fleet.sql(&format!(
            "SELECT sum(dram_joules) / sum(joules) FROM process_energy WHERE {of_run}"
        )));
        let sampled = number(&fleet.sql(&format!(
            "SELECT sum(cpu_seconds) FROM process_energy WHERE {of_run}"
        )));
        println!("{} sampled CPU-s: {sampled:.2}", run.version);
        let attributed_w = joules / run.elapsed_secs;
        let expected_w = measured_w * run.cpu_secs / (run.elapsed_secs * cpus());
        println!(
            "{} {}: {:.2} CPU-s in {:.1} s on {} CPUs: attributed {attributed_w:.3} W, expected {expected_w:.3} W, DRAM part {dram:.3}",
            service,
            run.version,
            run.cpu_secs,
            run.elapsed_secs,
            cpus()
        );
        assert!(
            run.cpu_secs > 1.0,
            "the workload ran: {} CPU-s",
            run.cpu_secs
        );
        assert!(
            (dram / (DRAM_W / (PACKAGE_W + DRAM_W)) - 1.0).abs() < 0.05,
            "the DRAM part of the process's joules: {dram}"
        );
        attributed_j += joules;
        expected_j += expected_w * run.elapsed_secs;
    }
    let elapsed: f64 = runs.iter().map(|r| r.elapsed_secs).sum();
    let (attributed_w, expected_w) = (attributed_j / elapsed, expected_j / elapsed);
    let ratio = attributed_w / expected_w;
    println!(
        "workload: attributed {attributed_w:.3} W, expected {expected_w:.3} W, ratio {ratio:.3}"
    );
    assert!(
        (0.8..=1.2).contains(&ratio),
        "attributed {attributed_w} W vs expected {expected_w} W (ratio {ratio:.3})"
    );

    // Acceptance 2: energy per function. The workload's hot function is the one it spends
    // most CPU in (the demo's hash rounds), as `query top` ranks it by self samples.
    let by_cpu = fleet
        .collector_cli(&[
            "query",
            "top",
            "--service",
            &service,
            "--since",
            "15m",
            "--limit",
            "1",
        ])
        .expect("query top");
    let hot = by_cpu
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().last())
        .expect("a function")
        .to_owned();
    assert!(hot.starts_with("checkout::"), "{by_cpu}");
    let top = fleet
        .collector_cli(&[
            "query",
            "top",
            "--service",
            &service,
            "--by",
            "energy",
            "--since",
            "15m",
            "--limit",
            "5",
        ])
        .expect("query top --by energy");
    println!("$ query top --by energy\n{top}");
    let first: Vec<&str> = top
        .lines()
        .nth(1)
        .expect("a ranked row")
        .split_whitespace()
        .collect();
    assert_eq!(first.last(), Some(&hot.as_str()), "{top}");
    let hot_w = number(first[0]);
    let service_joules = number(&fleet.sql(&format!(
        "SELECT sum(joules) FROM process_energy WHERE service = '{service}'"
    )));
    // Plausible: a part of what the whole service drew while it ran, and never above it.
    let service_w = service_joules / runs.iter().map(|r| r.elapsed_secs).sum::<f64>();
    assert!(
        hot_w > 0.1 * service_w && hot_w < service_w,
        "{hot}: {hot_w} W of the service's {service_w} W"
    );

    let services = fleet
        .collector_cli(&["query", "services", "--since", "15m"])
        .expect("query services");
    println!("$ query services\n{services}");
    let row = services
        .lines()
        .find(|l| l.starts_with(&service))
        .expect("the service is listed");
    assert!(row.contains(" W "), "watts shown: {row}");
    let history = fleet
        .collector_cli(&[
            "query",
            "history",
            "--service",
            &service,
            "--function",
            &hot,
            "--since",
            "15m",
            "--bucket",
            "1m",
        ])
        .expect("query history");
    println!("$ query history\n{history}");
    assert!(
        history.lines().skip(1).any(|l| l.ends_with(" W")),
        "{history}"
    );

    // The regression carries its cost in watts.
    let json = fleet
        .collector_cli(&[
            "detect",
            "--service",
            &service,
            "--since",
            "15m",
            "--bucket",
            "2s",
            "--window",
            "20s",
            "--persistence",
            "8s",
            "--format",
            "json",
        ])
        .expect("detect");
    let found: Vec<serde_json::Value> = serde_json::from_str(&json).expect("detect --format json");
    // v2's only change is the commit's logging: the most significant regression of the service
    // is its cost (its functions are the formatting and writing it added).
    let regression = found
        .iter()
        .filter(|r| r["service"] == service.as_str())
        .max_by(|a, b| {
            let z = |r: &serde_json::Value| r["report"]["z"].as_f64().unwrap_or(0.0);
            z(a).total_cmp(&z(b))
        })
        .unwrap_or_else(|| panic!("detect did not report the logging regression:\n{json}"));
    println!(
        "regression {}: {} functions, cost {} cores, {} W",
        regression["id"],
        regression["functions"].as_array().map_or(0, Vec::len),
        regression["report"]["delta_cores"],
        regression["report"]["delta_watts"]
    );
    let delta_watts = regression["report"]["delta_watts"]
        .as_f64()
        .unwrap_or_else(|| panic!("no cost in watts: {regression}"));
    assert!(delta_watts > 0.0, "{regression}");
    let id = regression["id"].as_str().expect("id");
    let shown = fleet
        .collector_cli(&["regressions", "show", id])
        .expect("regressions show");
    println!("$ regressions show {id}\n{shown}");
    assert!(
        shown.contains(" W)") && !shown.contains("energy not measured"),
        "{shown}"
    );
}
