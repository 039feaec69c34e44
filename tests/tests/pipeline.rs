//! The whole pipeline: `fleetprof-profiler run` (real eBPF) → `fleetprof-collector serve` (real
//! gRPC) → ClickHouse, with the collector and ClickHouse each restarted once during the run and
//! every third acknowledged batch re-sent (a lost ack). Each step waits on a condition (rows
//! stored, a failure or recovery in the daemon's log), never on time. Needs root and ClickHouse.
//!
//! Run: `cargo build --bins && cargo test -p fleetprof-tests --test pipeline -- --test-threads=1 --nocapture`

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_tests::{
    build_c_fixture, clickhouse_query, free_port, number_before, require_root, workspace_bin,
};

/// A running `fleetprof-collector serve`, logging to a file.
struct Collector {
    child: Child,
    port: u16,
    clickhouse_url: String,
    log: PathBuf,
}

impl Collector {
    fn start(port: u16, clickhouse_url: &str, log: &Path) -> Self {
        let mut collector = Self {
            child: spawn_collector(port, clickhouse_url, log),
            port,
            clickhouse_url: clickhouse_url.to_owned(),
            log: log.to_owned(),
        };
        collector.wait_listening();
        collector
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the collector exited ({status}) before listening; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Graceful stop (SIGINT: the collector finishes the pushes in progress), then, once
    /// `down_until` holds, a new process on the same port.
    fn restart(&mut self, down_until: impl Fn() -> bool) {
        self.stop();
        wait_for("the collector's downtime to be noticed", down_until);
        self.child = spawn_collector(self.port, &self.clickhouse_url, &self.log);
        self.wait_listening();
    }

    fn stop(&mut self) {
        signal(&self.child, libc::SIGINT);
        let status = wait_timeout(&mut self.child, Duration::from_secs(30))
            .expect("the collector did not exit within 30 s of SIGINT");
        assert!(status.success(), "the collector exited with {status}");
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_collector(port: u16, clickhouse_url: &str, log: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("collector log");
    Command::new(workspace_bin("fleetprof-collector"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--clickhouse-url", clickhouse_url])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting fleetprof-collector")
}

/// Polls `done` until it holds, failing the test after two minutes.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of `log` containing `text`.
fn lines_with(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a plain syscall on the pid of our own, not yet reaped child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Samples acknowledged by the collector equal the samples stored in ClickHouse for this host,
/// through a collector restart, a ClickHouse restart and re-sent (duplicate) batches; and the
/// stored profile names the workload's hot function first at its 75% share.
#[test]
fn samples_acked_equal_samples_stored_through_restarts() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut clickhouse = LocalClickHouse::start().expect("starting a local ClickHouse");
    let port = free_port();
    let collector_log = dir.path().join("collector.log");
    let mut collector = Collector::start(port, &clickhouse.url(), &collector_log);

    let workload = build_c_fixture("split_workload", dir.path());
    let mut work = Command::new(&workload)
        .args(["40", "75"])
        .env("FLEETPROF_SERVICE", "e2e-service")
        .env("FLEETPROF_VERSION", "1.0.0")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let daemon_log = dir.path().join("profiler.log");
    let mut daemon = Command::new(workspace_bin("fleetprof-profiler"))
        .args(["run", "--collector", &format!("http://127.0.0.1:{port}")])
        .args([
            "--interval",
            "2s",
            "--resend-acked-every",
            "3",
            "--frequency",
            "49",
        ])
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&daemon_log).unwrap())
        .spawn()
        .unwrap();

    // Every step below waits on what it needs (rows visible, a failure or a recovery logged),
    // never on time.
    let host_id = std::fs::read_to_string("/etc/machine-id")
        .unwrap()
        .trim()
        .to_owned();
    let http_port = clickhouse.http_port();
    let stored = |table: &str, column: &str| -> u64 {
        clickhouse_query(
            http_port,
            &format!("SELECT sum({column}) FROM fleetprof.{table} WHERE host_id = '{host_id}'"),
        )
        .trim()
        .parse()
        .unwrap_or(0)
    };
    let stored_batches = || -> u64 {
        clickhouse_query(
            http_port,
            &format!(
                "SELECT uniqExact(boot_id, sequence) FROM fleetprof.batches WHERE host_id = '{host_id}'"
            ),
        )
        .trim()
        .parse()
        .unwrap_or(0)
    };
    wait_for("the first batches to be stored", || stored_batches() >= 2);
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon exited early: {}",
        std::fs::read_to_string(&daemon_log).unwrap()
    );
    // The collector is down until a push has failed, so batches wait in the spool and are
    // replayed.
    let failed = lines_with(&daemon_log, "push failed");
    collector.restart(|| lines_with(&daemon_log, "push failed") > failed);
    wait_for("the daemon to reach the new collector", || {
        lines_with(&daemon_log, "collector reachable again") >= 1
    });
    // ClickHouse down: pushes are answered UNAVAILABLE until it is back.
    let failed = lines_with(&daemon_log, "push failed");
    clickhouse.stop().expect("stopping ClickHouse");
    wait_for("a push to fail while ClickHouse is down", || {
        lines_with(&daemon_log, "push failed") > failed
    });
    clickhouse.restart().expect("restarting ClickHouse");
    wait_for(
        "the daemon to store through the restarted ClickHouse",
        || lines_with(&daemon_log, "collector reachable again") >= 2,
    );
    let so_far = stored_batches();
    wait_for("three more batches after the restarts", || {
        stored_batches() >= so_far + 3
    });

    signal(&daemon, libc::SIGTERM);
    let status =
        wait_timeout(&mut daemon, Duration::from_secs(60)).expect("daemon exits after SIGTERM");
    let _ = work.kill();
    let _ = work.wait();
    let log = std::fs::read_to_string(&daemon_log).unwrap();
    println!("--- profiler log ---\n{log}");
    assert!(status.success(), "the daemon exited with {status}");

    assert!(
        log.contains("push failed"),
        "the collector's downtime should have made pushes fail and batches wait in the spool"
    );
    let summary = log
        .lines()
        .find(|l| l.contains("shipped ") && l.contains(" batches ("))
        .unwrap_or_else(|| panic!("no final summary line in the daemon's log"));
    let acked = number_before(summary, "samples").unwrap();
    let batches = number_before(summary, "batches").unwrap();
    assert_eq!(number_before(summary, "spooled"), Some(0), "{summary}");
    assert_eq!(number_before(summary, "dropped"), Some(0), "{summary}");
    assert_eq!(number_before(summary, "rejected"), Some(0), "{summary}");
    assert!(
        batches >= 5,
        "only {batches} batches acknowledged: {summary}"
    );
    assert!(acked > 0, "{summary}");
    let deduplicated = number_before(summary, "deduplicated").unwrap_or(0);
    assert!(
        deduplicated >= 1,
        "no re-sent batch was answered as duplicate: {summary}"
    );
    assert_eq!(
        number_before(summary, "stored"),
        Some(0),
        "a re-sent batch was stored twice: {summary}"
    );

    // The collector acknowledges only what it stored: everything acked is visible now.
    let in_samples = stored("samples", "count");
    let in_batches = stored("batches", "samples");
    let batch_rows = stored_batches();
    println!(
        "daemon acked {acked} samples in {batches} batches ({deduplicated} re-sends deduplicated); \
         ClickHouse: {in_samples} samples, {in_batches} in the batches table, {batch_rows} batches"
    );
    assert_eq!(
        in_samples, acked,
        "samples acked by the collector vs stored in ClickHouse"
    );
    assert_eq!(in_batches, acked, "samples per the batches table vs acked");
    assert_eq!(
        batch_rows, batches,
        "distinct stored batches vs batches acknowledged"
    );

    let top = Command::new(workspace_bin("fleetprof-collector"))
        .args(["query", "top", "--service", "e2e-service", "--since", "1h"])
        .args(["--clickhouse-url", &clickhouse.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    println!(
        "--- query top ---\n{text}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    assert!(top.status.success());
    let first = text
        .lines()
        .find(|l| l.contains("hot_") || l.contains("run_workload") || l.contains("main"))
        .expect("query top lists the workload's functions");
    assert!(
        first.contains("hot_a"),
        "hot_a is not the hottest function: {first}"
    );
    let share: f64 = first
        .split_whitespace()
        .find_map(|w| w.strip_suffix('%').and_then(|p| p.parse().ok()))
        .expect("a percentage in the first row");
    assert!(
        (65.0..=85.0).contains(&share),
        "hot_a's share is {share}%, expected about 75%: {first}"
    );

    collector.stop();
    let _ = clickhouse.stop();
}
