//! Hardening, end to end, against one ClickHouse: per-host tokens stop a host from writing as
//! another (PERMISSION_DENIED, nothing stored); the collector's and the profiler's
//! `--metrics-listen` answer Prometheus text with the counters operators page on (stored,
//! dead-lettered, refused, spooled, acknowledged…); a batch built to expand past the limits is
//! refused with a clear error while the collector's memory stays put, and the next batch lands.
//!
//! One test function, so the binary starts one ClickHouse: each step waits on a condition (rows
//! visible, a port listening, a counter reached), never on time.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_proto::fleetprof::v1 as pb;
use fleetprof_tests::{
    build_c_fixture, clickhouse_query_in, fleet::ChildGuard, free_port, require_root, workspace_bin,
};
use tonic::{Code, Request, metadata::MetadataValue};

const WAIT: Duration = Duration::from_secs(120);

/// Waits until `done` holds, failing with `what` after [`WAIT`].
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_listening(port: u16, what: &str, guard: &mut ChildGuard) {
    wait_for(&format!("{what} to listen on {port}"), || {
        assert!(guard.is_running(), "{what} exited:\n{}", guard.log());
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// `GET /metrics` on `port`: the response's body.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.contains(" 200 "), "metrics answered {head}");
    body.to_owned()
}

/// The value of the sample line `name` (no labels) in a Prometheus exposition, checking that
/// its `# TYPE` line is there too.
fn metric(text: &str, name: &str) -> u64 {
    assert!(
        text.contains(&format!("# TYPE {name} ")),
        "no TYPE line for {name} in:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} sample in:\n{text}"))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A small valid batch of `host_id`/`boot_id` whose one frame is `function`.
fn batch(host_id: &str, boot_id: &str, sequence: u64, function: &str) -> pb::ProfileBatch {
    let now = now_ns();
    pb::ProfileBatch {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        host: Some(pb::HostIdentity {
            hostname: host_id.into(),
            host_id: host_id.into(),
            boot_id: boot_id.into(),
            ..Default::default()
        }),
        sequence,
        start_time_unix_nanos: now - 1_000_000_000,
        end_time_unix_nanos: now,
        frequency_hz: 99,
        processes: vec![pb::Process {
            pid: 1,
            comm: "hardening".into(),
            service: "hardening".into(),
            ..Default::default()
        }],
        frames: vec![pb::Frame {
            function: function.into(),
            ..Default::default()
        }],
        stacks: vec![pb::Stack {
            frame_indexes: vec![0],
        }],
        samples: vec![pb::Sample {
            process_index: 0,
            stack_index: 0,
            count: 7,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Peak and current resident set of `pid`, bytes (`VmHWM`, `VmRSS`).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    (kib("VmHWM:") << 10, kib("VmRSS:") << 10)
}

struct Pusher {
    rt: tokio::runtime::Runtime,
    url: String,
}

impl Pusher {
    /// Pushes `b` with `token` (`None`: no authorization header); the status code, or Ok.
    fn push(&self, b: pb::ProfileBatch, token: Option<&str>) -> Result<(), tonic::Status> {
        self.rt.block_on(async {
            let mut client = pb::ingest_client::IngestClient::connect(self.url.clone())
                .await
                .expect("connecting to the collector")
                .max_encoding_message_size(usize::MAX);
            let mut req = Request::new(b);
            if let Some(t) = token {
                let v: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
                req.metadata_mut().insert("authorization", v);
            }
            client.push(req).await.map(drop)
        })
    }
}

#[test]
fn tokens_metrics_and_amplification_hold_end_to_end() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let clickhouse = LocalClickHouse::start_in(dir).expect("starting ClickHouse");
    let sql = |q: &str| -> u64 {
        clickhouse_query_in(clickhouse.http_port(), "fleetprof", q)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let machine = std::fs::read_to_string("/etc/machine-id")
        .unwrap()
        .trim()
        .to_owned();
    let tokens = dir.join("host-tokens");
    std::fs::write(
        &tokens,
        format!(
            "# host_id token\n{machine} tok-daemon-0123456789\nother-host tok-other-0123456789\n"
        ),
    )
    .unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let budget: u64 = 512 << 20;
    let mut cmd = Command::new(workspace_bin("fleetprof-collector"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--clickhouse-url", &clickhouse.url()])
        .arg("--host-tokens-file")
        .arg(&tokens)
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .args(["--memory-budget", "512MiB"])
        .arg("--dead-letter-dir")
        .arg(dir.join("dead-letter"))
        .env("RUST_LOG", "info");
    let mut collector = ChildGuard::spawn("collector", cmd, &dir.join("collector.log")).unwrap();
    wait_listening(port, "the collector", &mut collector);
    wait_listening(metrics_port, "the collector's metrics", &mut collector);
    let pusher = Pusher {
        rt: tokio::runtime::Runtime::new().unwrap(),
        url: format!("http://127.0.0.1:{port}"),
    };
    let stored_batches = |boot: &str| {
        sql(&format!(
            "SELECT count() FROM batches WHERE boot_id = '{boot}'"
        ))
    };

    // 1. Per-host tokens. other-host, with its own token, writing as this machine: refused.
    let forged = batch(&machine, "forged-boot", 1, "forged_fn");
    let e = pusher
        .push(forged.clone(), Some("tok-other-0123456789"))
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("other-host"), "{}", e.message());
    // No token, or a token nobody has: unauthenticated.
    for token in [None, Some("tok-nobody-0123456789")] {
        let e = pusher.push(forged.clone(), token).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
    }
    // other-host writing as itself lands, so the pipeline was up while the forgery was refused.
    pusher
        .push(
            batch("other-host", "other-boot", 1, "honest_fn"),
            Some("tok-other-0123456789"),
        )
        .unwrap();
    wait_for("other-host's batch stored", || {
        stored_batches("other-boot") == 1
    });
    assert_eq!(
        stored_batches("forged-boot"),
        0,
        "the forged batch was stored"
    );
    assert_eq!(
        sql("SELECT count() FROM frames WHERE function = 'forged_fn'"),
        0
    );
    assert_eq!(
        sql(&format!(
            "SELECT count() FROM samples WHERE host_id = '{machine}'"
        )),
        0
    );

    // 2. A batch ClickHouse rejects is dead-lettered and counted.
    clickhouse_query_in(
        clickhouse.http_port(),
        "fleetprof",
        "CREATE MATERIALIZED VIEW hardening_poison_mv ENGINE = Memory AS \
         SELECT throwIf(function = 'hardening_poison') AS x FROM frames",
    );
    let e = pusher
        .push(
            batch("other-host", "other-boot", 2, "hardening_poison"),
            Some("tok-other-0123456789"),
        )
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    clickhouse_query_in(
        clickhouse.http_port(),
        "fleetprof",
        "DROP TABLE hardening_poison_mv",
    );

    // 3. A batch that expands past the limit once decoded (one 16 KiB name × 1,024 frames ×
    // 20 rows ≈ 336 MB, from ~25 KB on the wire) is refused before it is built.
    let (peak_before, _) = rss(collector.pid());
    let mut bomb = batch("other-host", "other-boot", 3, "");
    bomb.frames[0].function = "x".repeat(16 << 10);
    bomb.stacks[0].frame_indexes = vec![0; 1024];
    bomb.samples = (0..20)
        .map(|i| pb::Sample {
            process_index: 0,
            stack_index: 0,
            count: 1,
            tid: i,
            ..Default::default()
        })
        .collect();
    let e = pusher.push(bomb, Some("tok-other-0123456789")).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("expands to"),
        "unclear refusal: {}",
        e.message()
    );
    let (peak_after, _) = rss(collector.pid());
    assert!(
        peak_after < peak_before + (32 << 20) && peak_after < budget,
        "the refused batch still took memory: peak RSS {peak_before} -> {peak_after} bytes"
    );
    // The next normal batch lands.
    pusher
        .push(
            batch("other-host", "other-boot", 4, "after_bomb"),
            Some("tok-other-0123456789"),
        )
        .unwrap();
    wait_for("the batch after the bomb stored", || {
        stored_batches("other-boot") == 2
    });

    let text = scrape(metrics_port);
    assert!(
        metric(&text, "fleetprof_collector_batches_stored_total") >= 2,
        "{text}"
    );
    assert_eq!(
        metric(&text, "fleetprof_collector_dead_lettered_total"),
        1,
        "{text}"
    );
    assert_eq!(
        metric(&text, "fleetprof_collector_refused_busy_total"),
        0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "fleetprof_collector_unavailable_total"),
        0,
        "{text}"
    );
    let dead = std::fs::read_dir(dir.join("dead-letter")).unwrap().count();
    assert!(dead >= 1, "nothing in the dead-letter directory");

    // 4. Maximal batches (48 MiB on the wire, 3,000 frames of 16 KiB names) pushed at once: the
    // collector takes what its budget allows, answers the rest RESOURCE_EXHAUSTED (hosts retry
    // from their spool), and what they cost it stays under the budget.
    let (_, resident_before) = rss(collector.pid());
    let names: Vec<String> = (0..3000)
        .map(|i| format!("{i:05}{}", "m".repeat((16 << 10) - 5)))
        .collect();
    let big = |sequence: u64| {
        let mut b = batch("other-host", "big-boot", sequence, "");
        b.frames = names
            .iter()
            .map(|n| pb::Frame {
                function: n.clone(),
                ..Default::default()
            })
            .collect();
        b.stacks = (0..3000)
            .map(|i| pb::Stack {
                frame_indexes: vec![i],
            })
            .collect();
        b.samples = (0..3000)
            .map(|i| pb::Sample {
                process_index: 0,
                stack_index: i,
                count: 1,
                ..Default::default()
            })
            .collect();
        b
    };
    const AT_ONCE: u64 = 6;
    let wire = prost::Message::encoded_len(&big(1)) as u64;
    let answers: Vec<Result<(), tonic::Status>> = pusher.rt.block_on(async {
        let pushes: Vec<_> = (1..=AT_ONCE)
            .map(|seq| {
                let (url, b) = (pusher.url.clone(), big(seq));
                tokio::spawn(async move {
                    let mut client = pb::ingest_client::IngestClient::connect(url).await.unwrap();
                    let mut req = Request::new(b);
                    req.metadata_mut().insert(
                        "authorization",
                        "Bearer tok-other-0123456789".parse().unwrap(),
                    );
                    client.push(req).await.map(drop)
                })
            })
            .collect();
        let mut out = Vec::new();
        for p in pushes {
            out.push(p.await.expect("a push task"));
        }
        out
    });
    let landed = answers.iter().filter(|a| a.is_ok()).count() as u64;
    for a in &answers {
        if let Err(e) = a {
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        }
    }
    assert!(landed >= 1, "no maximal batch landed: {answers:?}");
    wait_for("the maximal batches stored", || {
        stored_batches("big-boot") == landed
    });
    let (peak, now) = rss(collector.pid());
    // `--memory-budget` bounds what hosts' pushes cost, on top of what the process held before.
    println!(
        "collector memory: {AT_ONCE} pushes of {} MiB at once, {landed} landed: resident {} MiB \
         before, peak {} MiB, now {} MiB; budget {} MiB",
        wire >> 20,
        resident_before >> 20,
        peak >> 20,
        now >> 20,
        budget >> 20,
    );
    assert!(
        peak <= resident_before + budget,
        "peak RSS {peak} bytes is over the {budget}-byte budget on top of the {resident_before} \
         bytes resident before the pushes"
    );

    // 5. The profiler daemon with its own token and --metrics-listen: it ships as this machine,
    // and its counters say so.
    let token_file = dir.join("daemon-token");
    std::fs::write(&token_file, "tok-daemon-0123456789\n").unwrap();
    let workload = build_c_fixture("split_workload", dir);
    let mut work = Command::new(&workload);
    work.args(["600", "75"])
        .env("FLEETPROF_SERVICE", "hardening-workload");
    let _work = ChildGuard::spawn("workload", work, &dir.join("workload.log")).unwrap();
    let daemon_metrics = free_port();
    let mut daemon_cmd = Command::new(workspace_bin("fleetprof-profiler"));
    daemon_cmd
        .args(["run", "--collector", &pusher.url])
        .args(["--interval", "1s", "--frequency", "99"])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["--metrics-listen", &format!("127.0.0.1:{daemon_metrics}")])
        .env("RUST_LOG", "info");
    let mut daemon = ChildGuard::spawn("profiler", daemon_cmd, &dir.join("profiler.log")).unwrap();
    wait_listening(daemon_metrics, "the profiler's metrics", &mut daemon);
    wait_for("the daemon's batches acknowledged", || {
        assert!(daemon.is_running(), "the daemon exited:\n{}", daemon.log());
        metric(
            &scrape(daemon_metrics),
            "fleetprof_profiler_samples_acked_total",
        ) > 0
    });
    let text = scrape(daemon_metrics);
    for name in [
        "fleetprof_profiler_batches_sent_total",
        "fleetprof_profiler_samples_recorded_total",
    ] {
        assert!(metric(&text, name) > 0, "{name} is 0:\n{text}");
    }
    // Present (a push may fail and be spooled while the collector is busy with the big batches).
    for name in [
        "fleetprof_profiler_batches_failed_total",
        "fleetprof_profiler_batches_spooled_total",
        "fleetprof_profiler_spool_batches",
        "fleetprof_profiler_spool_bytes",
    ] {
        let _ = metric(&text, name);
    }
    for name in [
        "fleetprof_profiler_batches_dropped_total",
        "fleetprof_profiler_batches_rejected_total",
        "fleetprof_profiler_spool_io_errors_total",
    ] {
        assert_eq!(metric(&text, name), 0, "{name} on a healthy run:\n{text}");
    }
    assert!(
        metric(&text, "fleetprof_profiler_peak_rss_bytes") > 0,
        "{text}"
    );
    let acked = metric(&text, "fleetprof_profiler_samples_acked_total");
    // Acknowledged means stored: the samples it counted are in ClickHouse, under its host.
    wait_for("the daemon's acknowledged samples visible", || {
        sql(&format!(
            "SELECT toUInt64(sum(count)) FROM samples WHERE host_id = '{machine}'"
        )) >= acked
    });
    assert!(
        daemon.terminate().unwrap(),
        "the daemon failed:\n{}",
        daemon.log()
    );
    let text = scrape(metrics_port);
    assert!(metric(&text, "fleetprof_collector_samples_stored_total") >= acked + 7);
    assert!(
        collector.terminate().unwrap(),
        "the collector failed:\n{}",
        collector.log()
    );
    drop(clickhouse);
}
