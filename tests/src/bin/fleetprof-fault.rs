//! `fleetprof-fault`: the fault run behind `cargo xtask fault`. The real profiler daemon (real
//! eBPF), the real collector and a real ClickHouse, all on loopback, while each fault is injected
//! in turn; every step waits on a condition (rows stored, a failure or a recovery logged), never on
//! time. It ends with the conservation check: the samples the daemon counted as acknowledged are
//! exactly the samples stored, and no batch is stored twice. Needs root (eBPF, tmpfs).
//!
//! Faults: the collector SIGKILLed while the spool's filesystem (a tiny tmpfs) is full; the
//! collector SIGTERMed (it drains); ClickHouse stopped; ClickHouse hung (SIGSTOP: it accepts and
//! never answers); a poison batch ClickHouse rejects; a flood of connections.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_proto::fleetprof::v1 as pb;
use fleetprof_tests::{
    build_c_fixture, clickhouse_query_in, fleet::ChildGuard, free_port, number_before,
    require_root, workspace_bin,
};

/// How long a single wait may take before the run fails.
const WAIT: Duration = Duration::from_secs(120);

fn wait_for(what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn lines_with(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

struct Run {
    dir: PathBuf,
    clickhouse: LocalClickHouse,
    port: u16,
    collector: ChildGuard,
    daemon_log: PathBuf,
    host_id: String,
}

impl Run {
    fn spawn_collector(dir: &Path, url: &str, port: u16) -> anyhow::Result<ChildGuard> {
        let mut cmd = Command::new(workspace_bin("fleetprof-collector"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--clickhouse-url", url, "--clickhouse-timeout", "3s"])
            .arg("--dead-letter-dir")
            .arg(dir.join("dead-letter"))
            .env("RUST_LOG", "info");
        let guard = ChildGuard::spawn("collector", cmd, &dir.join("collector.log"))?;
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "the collector did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(guard)
    }

    fn sql(&self, q: &str) -> u64 {
        clickhouse_query_in(self.clickhouse.http_port(), "fleetprof", q)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    fn stored_batches(&self) -> u64 {
        self.sql(&format!(
            "SELECT uniqExact(boot_id, sequence) FROM batches WHERE host_id = '{}'",
            self.host_id
        ))
    }

    /// Waits until `n` more batches of this host are stored.
    fn wait_more_batches(&self, n: u64) -> anyhow::Result<()> {
        let base = self.stored_batches();
        wait_for(&format!("{n} more batches stored"), || {
            self.stored_batches() >= base + n
        })
    }

    fn failed(&self) -> usize {
        lines_with(&self.daemon_log, "push failed")
    }

    fn recovered(&self) -> usize {
        lines_with(&self.daemon_log, "collector reachable again")
    }

    /// Stops the collector with `signal`, waits for a failed push (and `also`), starts it again
    /// and waits for the daemon to get through.
    fn collector_down(&mut self, signal: i32, also: impl Fn() -> bool) -> anyhow::Result<()> {
        let (failed, recovered) = (self.failed(), self.recovered());
        let pid = i32::try_from(self.collector.pid())?;
        // SAFETY: kill(2) on the collector we started.
        unsafe { libc::kill(pid, signal) };
        if signal == libc::SIGTERM {
            ensure!(
                self.collector.terminate()?,
                "the collector did not exit cleanly on SIGTERM"
            );
        } else {
            self.collector.terminate().ok();
        }
        wait_for("a failed push while the collector is down", || {
            self.failed() > failed && also()
        })?;
        self.collector = Self::spawn_collector(&self.dir, &self.clickhouse.url(), self.port)?;
        wait_for("the daemon to reach the collector again", || {
            self.recovered() > recovered
        })
    }
}

/// A batch ClickHouse will reject: its frame `fleetprof_poison` trips a materialized view.
fn poison_batch() -> pb::ProfileBatch {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    pb::ProfileBatch {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        host: Some(pb::HostIdentity {
            hostname: "poison".into(),
            host_id: "poison-host".into(),
            boot_id: "poison-boot".into(),
            ..Default::default()
        }),
        sequence: 1,
        start_time_unix_nanos: now - 1_000_000_000,
        end_time_unix_nanos: now,
        frequency_hz: 99,
        processes: vec![pb::Process {
            pid: 1,
            comm: "poison".into(),
            service: "poison".into(),
            ..Default::default()
        }],
        frames: vec![pb::Frame {
            function: "fleetprof_poison".into(),
            ..Default::default()
        }],
        stacks: vec![pb::Stack {
            frame_indexes: vec![0],
        }],
        samples: vec![pb::Sample {
            process_index: 0,
            stack_index: 0,
            count: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn main() -> anyhow::Result<()> {
    require_root();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let clickhouse = LocalClickHouse::start_in(&dir).context("starting ClickHouse")?;
    let port = free_port();
    let collector = Run::spawn_collector(&dir, &clickhouse.url(), port)?;
    let host_id = std::fs::read_to_string("/etc/machine-id")?
        .trim()
        .to_owned();

    // The spool on a tiny filesystem, so it fills while the collector is away.
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool)?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48k", "fleetprof-fault-spool"])
        .arg(&spool)
        .status()?;
    ensure!(mounted.success(), "mounting a tmpfs for the spool failed");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());

    let workload = build_c_fixture("split_workload", &dir);
    let mut work = Command::new(&workload);
    work.args(["600", "75"])
        .env("FLEETPROF_SERVICE", format!("fault-{}", std::process::id()));
    let _work = ChildGuard::spawn("workload", work, &dir.join("workload.log"))?;

    let daemon_log = dir.join("profiler.log");
    let mut daemon_cmd = Command::new(workspace_bin("fleetprof-profiler"));
    daemon_cmd
        .args(["run", "--collector", &format!("http://127.0.0.1:{port}")])
        .args(["--interval", "1s", "--frequency", "99"])
        .arg("--spool-dir")
        .arg(&spool)
        .env("RUST_LOG", "info");
    let mut daemon = ChildGuard::spawn("profiler", daemon_cmd, &daemon_log)?;

    let mut run = Run {
        dir: dir.clone(),
        clickhouse,
        port,
        collector,
        daemon_log: daemon_log.clone(),
        host_id,
    };
    run.wait_more_batches(2)?;
    let mut survived = Vec::new();

    // 1. SIGKILL of the collector, down until the spool's filesystem is full.
    run.collector_down(libc::SIGKILL, || {
        lines_with(&daemon_log, "cannot write a batch") > 0
    })?;
    run.wait_more_batches(2)?;
    survived.push("collector SIGKILL with the spool filesystem full");

    // 2. SIGTERM of the collector: it finishes what is in progress and exits cleanly.
    run.collector_down(libc::SIGTERM, || true)?;
    run.wait_more_batches(2)?;
    survived.push("collector SIGTERM (drain)");

    // 3. ClickHouse stopped.
    let (failed, recovered) = (run.failed(), run.recovered());
    run.clickhouse.stop()?;
    wait_for("a push refused while ClickHouse is down", || {
        run.failed() > failed
    })?;
    run.clickhouse.restart()?;
    wait_for("recovery after ClickHouse restarts", || {
        run.recovered() > recovered
    })?;
    run.wait_more_batches(2)?;
    survived.push("ClickHouse stopped");

    // 4. ClickHouse hung: it accepts connections and never answers (SIGSTOP).
    let (failed, recovered) = (run.failed(), run.recovered());
    let ch_pid = i32::try_from(run.clickhouse.pid().context("ClickHouse pid")?)?;
    // SAFETY: signals to the ClickHouse server this run started.
    unsafe { libc::kill(ch_pid, libc::SIGSTOP) };
    let hung = wait_for("a push answered UNAVAILABLE while ClickHouse hangs", || {
        run.failed() > failed
    });
    // SAFETY: as above.
    unsafe { libc::kill(ch_pid, libc::SIGCONT) };
    hung?;
    wait_for("recovery after ClickHouse answers again", || {
        run.recovered() > recovered
    })?;
    run.wait_more_batches(2)?;
    survived.push("ClickHouse hung");

    // 5. A poison batch: ClickHouse rejects it; it is dead-lettered, the fleet carries on.
    clickhouse_query_in(
        run.clickhouse.http_port(),
        "fleetprof",
        "CREATE MATERIALIZED VIEW fault_poison_mv ENGINE = Memory AS \
         SELECT throwIf(function = 'fleetprof_poison') AS x FROM frames",
    );
    let rt = tokio::runtime::Runtime::new()?;
    let answer = rt.block_on(async {
        let mut client =
            pb::ingest_client::IngestClient::connect(format!("http://127.0.0.1:{port}")).await?;
        anyhow::Ok(client.push(poison_batch()).await)
    })?;
    let status = answer.err().context("the poison batch was accepted")?;
    ensure!(
        status.code() == tonic::Code::InvalidArgument,
        "poison batch answered {status:?}"
    );
    let dead = std::fs::read_dir(dir.join("dead-letter"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pb"))
        .count();
    ensure!(dead == 1, "{dead} dead-lettered batches, expected 1");
    clickhouse_query_in(
        run.clickhouse.http_port(),
        "fleetprof",
        "DROP TABLE fault_poison_mv",
    );
    run.wait_more_batches(2)?;
    survived.push("poison batch (dead-lettered)");

    // 6. A flood of connections that send nothing; pushes still land.
    let flood: Vec<TcpStream> = (0..500)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    run.wait_more_batches(2)?;
    drop(flood);
    survived.push("flood of 500 idle connections");

    // Conservation: stop the daemon (it ships its last window), then compare.
    ensure!(daemon.terminate()?, "the daemon failed:\n{}", daemon.log());
    let log = std::fs::read_to_string(&daemon_log)?;
    let summary = log
        .lines()
        .find(|l| l.contains("shipped ") && l.contains(" batches ("))
        .context("no summary line in the daemon's log")?;
    let acked = number_before(summary, "samples").context("acked samples")?;
    let batches = number_before(summary, "batches").context("batches")?;
    let dropped = number_before(summary, "dropped").unwrap_or(0);
    let spooled = number_before(summary, "spooled").unwrap_or(0);
    let h = run.host_id.clone();
    let stored = run.sql(&format!(
        "SELECT toUInt64(sum(count)) FROM samples WHERE host_id = '{h}'"
    ));
    let stored_batches = run.stored_batches();
    let by_batches = run.sql(&format!(
        "SELECT toUInt64(sum(s)) FROM (SELECT boot_id, sequence, any(samples) AS s FROM batches \
         WHERE host_id = '{h}' GROUP BY boot_id, sequence)"
    ));
    let io_errors = lines_with(&daemon_log, "spool: cannot");
    println!("fleetprof fault run: {} faults survived", survived.len());
    for f in &survived {
        println!("  survived: {f}");
    }
    println!(
        "  daemon: {acked} samples acknowledged in {batches} batches; {spooled} left in the spool, \
         {dropped} dropped; {io_errors} spool disk errors survived"
    );
    println!(
        "  ClickHouse: {stored} samples stored in {stored_batches} batches ({by_batches} per the batches table)"
    );
    println!("  dead-lettered batches: {dead}");
    let lost = acked.abs_diff(stored);
    println!("  samples lost: {lost}");
    ensure!(
        stored == acked,
        "conservation FAILED: {acked} acknowledged, {stored} stored"
    );
    ensure!(
        by_batches == acked && stored_batches == batches,
        "a batch stored twice or missing: {stored_batches} batches stored, {batches} acknowledged"
    );
    println!("conservation check passed: acknowledged = stored, no batch twice");
    Ok(())
}
