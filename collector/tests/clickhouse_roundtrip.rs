//! End to end through a real ClickHouse: migrations, gRPC push, queries, idempotency,
//! validation, auth, and the buffer while ClickHouse is down.
//!
//! Needs `/usr/sbin/clickhouse-server` (`cargo xtask setup` installs it); without it this test
//! FAILS with that reason rather than passing silently.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetprof_collector::ingest::{IngestConfig, Limits, RunningCollector, WriterConfig};
use fleetprof_collector::query::{self, By, Side, Window};
use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_collector::store::{BatchKey, Store, StoreConfig, rollup_marker};
use fleetprof_proto::fleetprof::v1 as pb;
use pb::ingest_client::IngestClient;
use tonic::transport::Channel;

const TOKEN: &str = "t0ken-for-tests";
const SERVICE: &str = "checkout";

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A batch of `checkout` (`version`): main → handle → hot_loop ×90, main → handle ×10.
fn batch(sequence: u64, version: &str, with_energy: bool) -> pb::ProfileBatch {
    let end = now_ns();
    let frame = |name: &str| pb::Frame {
        function: name.into(),
        module: "/usr/bin/checkout".into(),
        build_id: "abc123".into(),
        ..Default::default()
    };
    let energy = if with_energy {
        pb::Energy {
            available: true,
            source: "powercap".into(),
            domains: vec![pb::DomainEnergy {
                domain: "package-0".into(),
                joules: 120.0,
                ..Default::default()
            }],
            processes: vec![pb::ProcessEnergy {
                process_index: 0,
                joules: 80.0,
                ..Default::default()
            }],
            ..Default::default()
        }
    } else {
        pb::Energy {
            available: false,
            unavailable_reason: "no RAPL source on this host".into(),
            ..Default::default()
        }
    };
    pb::ProfileBatch {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        host: Some(pb::HostIdentity {
            hostname: "web-1".into(),
            host_id: "machine-1".into(),
            boot_id: "boot-1".into(),
            kernel_release: "6.18.0".into(),
            agent_version: "0.1.0".into(),
        }),
        sequence,
        start_time_unix_nanos: end - 10_000_000_000,
        end_time_unix_nanos: end,
        frequency_hz: 19,
        processes: vec![pb::Process {
            pid: 4242,
            comm: "checkout".into(),
            exe: "/usr/bin/checkout".into(),
            service: SERVICE.into(),
            version: version.into(),
            container_id: "c0ffee".into(),
            cgroup: "/system.slice/checkout.service".into(),
            build_id: "abc123".into(),
        }],
        frames: vec![frame("hot_loop"), frame("handle"), frame("main")],
        stacks: vec![
            pb::Stack {
                frame_indexes: vec![0, 1, 2],
            },
            pb::Stack {
                frame_indexes: vec![1, 2],
            },
        ],
        samples: vec![
            pb::Sample {
                process_index: 0,
                stack_index: 0,
                tid: 4243,
                thread_name: "worker".into(),
                count: 90,
            },
            pb::Sample {
                process_index: 0,
                stack_index: 1,
                tid: 4243,
                thread_name: "worker".into(),
                count: 10,
            },
        ],
        energy: Some(energy),
        losses: Some(pb::LossCounters {
            recorded: 100,
            events: 100,
            ..Default::default()
        }),
    }
}

async fn count(store: &Store, sql: &str) -> u64 {
    store.client().query(sql).fetch_one::<u64>().await.unwrap()
}

/// (batches rows, sum of samples.count) as stored for host `machine-1` (a dead-lettered batch of
/// another host may have left rows of its own).
async fn stored(store: &Store) -> (u64, u64) {
    (
        count(
            store,
            "SELECT count() FROM batches FINAL WHERE host_id = 'machine-1'",
        )
        .await,
        count(
            store,
            "SELECT toUInt64(sum(count)) FROM samples WHERE host_id = 'machine-1'",
        )
        .await,
    )
}

/// Runs every ```sql block of QUERIES.md, and of the README's "Queries" section,
/// against the server; each must return rows.
async fn check_documented_queries(store: &Store) {
    let readme = include_str!("../../README.md");
    let readme = &readme[readme
        .find("### Queries")
        .expect("README has a \"Queries\" section")..];
    let readme = &readme[..readme[4..].find("\n### ").map_or(readme.len(), |i| i + 4)];
    assert!(
        readme.matches("```sql").count() >= 5,
        "the README's query examples were found"
    );
    let doc = format!("{}\n{readme}", include_str!("../schema/QUERIES.md"));
    let mut n = 0;
    for block in doc.split("```sql").skip(1) {
        let sql = block.split("```").next().unwrap().trim();
        let mut cursor = store
            .client()
            .query_raw(sql)
            .fetch_bytes("TSV")
            .unwrap_or_else(|e| panic!("{sql}\n{e}"));
        let bytes = cursor
            .collect()
            .await
            .unwrap_or_else(|e| panic!("QUERIES.md query failed on ClickHouse:\n{sql}\n{e}"));
        assert!(
            !bytes.is_empty(),
            "QUERIES.md query returned no rows:\n{sql}"
        );
        n += 1;
    }
    assert!(n >= 12, "QUERIES.md and the README have {n} queries");
}

/// The whole round trip, in one test because it shares one ClickHouse server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_roundtrip() {
    let mut clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("fleetprof_test"))
        .await
        .unwrap();
    assert_eq!(
        store.migrate().await.unwrap(),
        fleetprof_collector::store::MIGRATIONS
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>()
    );
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "migrations are applied once"
    );

    let dead_letters = tempfile::tempdir().unwrap();
    let config = IngestConfig {
        token: Some(TOKEN.into()),
        // Small enough that the oversized batch below is refused by count, not by gRPC's size cap.
        limits: Limits {
            max_samples: 500,
            ..Limits::default()
        },
        writer: WriterConfig {
            clickhouse_timeout: Duration::from_secs(10),
            dead_letter_dir: Some(dead_letters.path().to_path_buf()),
            ..WriterConfig::default()
        },
        ..IngestConfig::default()
    };
    let collector = RunningCollector::start(store.clone(), config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", collector.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        IngestClient::with_interceptor(channel.clone(), |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            Ok(req)
        });

    // Stored, then queryable: the hot function comes first.
    let r = client
        .push(batch(1, "1.0", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.duplicate, r.samples_stored), (false, 100));
    let window = Window::last(Duration::from_secs(3600));
    let top = query::top(&store, SERVICE, window, By::Self_, 10)
        .await
        .unwrap();
    assert_eq!(top[0].function, "hot_loop", "{top:?}");
    assert_eq!((top[0].self_samples, top[0].self_share), (90, 0.9));
    let total = query::top(&store, SERVICE, window, By::Total, 10)
        .await
        .unwrap();
    assert_eq!(
        (total[0].function.as_str(), total[0].total_samples),
        ("handle", 100),
        "{total:?}"
    );

    // The same batch again: acknowledged as a duplicate, stored once.
    let r = client
        .push(batch(1, "1.0", false))
        .await
        .unwrap()
        .into_inner();
    assert!(r.duplicate);
    assert_eq!(stored(&store).await, (1, 100));

    // Malformed and unauthenticated batches are refused and store nothing.
    let mut bad = batch(2, "1.0", false);
    bad.samples[0].stack_index = 7;
    let e = client.push(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("samples[0].stack_index 7"),
        "{}",
        e.message()
    );
    let mut bad = batch(2, "1.0", false);
    bad.protocol_version = 9;
    let e = client.push(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("protocol_version 9"),
        "{}",
        e.message()
    );
    let mut bad = batch(2, "1.0", false);
    bad.host = None;
    let e = client.push(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("host"), "{}", e.message());
    let mut oversized = batch(2, "1.0", false);
    let one = oversized.samples[0].clone();
    oversized.samples.resize(501, one);
    let e = client.push(oversized).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("more than the limit of 500"),
        "{}",
        e.message()
    );
    // A small batch built to expand past the budget (one 16-KiB name × 1024 frames × 400 rows,
    // some 6.7 GB once expanded) is refused before anything is expanded; the next batch lands.
    let mut amplifying = batch(2, "1.0", false);
    amplifying.frames[0].function = "f".repeat(16 << 10);
    amplifying.stacks[0].frame_indexes = vec![0; 1024];
    let one = amplifying.samples[0].clone();
    amplifying.samples.resize(400, one);
    let e = client.push(amplifying).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("expands to") && e.message().contains("send smaller batches"),
        "{}",
        e.message()
    );
    let e = IngestClient::new(channel.clone())
        .push(batch(2, "1.0", false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        stored(&store).await,
        (1, 100),
        "refused batches stored nothing"
    );

    // A second version, with energy, so every query has something to show.
    let r = client
        .push(batch(2, "1.1", true))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.duplicate);
    let services = query::services(&store, None).await.unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(
        (
            services[0].versions.clone(),
            services[0].samples,
            services[0].hosts
        ),
        (vec!["1.0".to_owned(), "1.1".to_owned()], 200, 1)
    );
    let folded = query::flamegraph(&store, SERVICE, window).await.unwrap();
    assert_eq!(
        query::folded_text(&folded),
        "main;handle 20\nmain;handle;hot_loop 180\n"
    );
    assert!(
        query::render_flamegraph(&folded, "t")
            .unwrap()
            .starts_with(b"<?xml")
    );
    let (v1, v2) = (Side::Version("1.0".into()), Side::Version("1.1".into()));
    let diff = query::diff(&store, SERVICE, &v1, &v2, window, By::Total, 10)
        .await
        .unwrap();
    assert_eq!(diff.len(), 3);
    assert!(
        diff.iter().all(|d| d.delta_total_share().abs() < 1e-9),
        "{diff:?}"
    );
    let (before, after) = query::diff_folded(&store, SERVICE, &v1, &v2, window)
        .await
        .unwrap();
    assert!(
        !query::differential_flamegraph(&before, &after, "d")
            .unwrap()
            .is_empty()
    );
    let history = query::function_history(&store, SERVICE, "hot_loop", window, 300)
        .await
        .unwrap();
    assert_eq!(history.iter().map(|p| p.self_samples).sum::<u64>(), 180);
    let stacks = query::stacks_through(&store, SERVICE, "hot_loop", window, 5)
        .await
        .unwrap();
    assert_eq!((stacks.len(), stacks[0].samples), (1, 180));
    // The web UI's readers: neighbours from adjacent frames, short buckets from `samples`, the
    // span of the data, CPU cores at the batches' frequency; no line info in these frames.
    let (callers, callees) = query::callers_callees(&store, SERVICE, "handle", window, 5)
        .await
        .unwrap();
    let names = |v: &[query::Neighbour]| {
        v.iter()
            .map(|n| (n.function.clone(), n.samples))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&callers), [("main".to_owned(), 200)]);
    assert_eq!(names(&callees), [("hot_loop".to_owned(), 180)]);
    let fine = query::function_history(&store, SERVICE, "hot_loop", window, 5)
        .await
        .unwrap();
    assert_eq!(fine.iter().map(|p| p.self_samples).sum::<u64>(), 180);
    assert_eq!(fine.iter().map(|p| p.service_samples).sum::<u64>(), 200);
    let extent = query::service_extent(&store, SERVICE, window)
        .await
        .unwrap()
        .expect("samples in the window");
    assert!(extent.from >= window.from && extent.from < extent.to && extent.to <= window.to);
    let usage = query::service_usage(&store, window).await.unwrap();
    let u = usage.iter().find(|u| u.service == SERVICE).unwrap();
    assert_eq!(u.samples, 200);
    let expected = 200.0 / (19.0 * 60.0 * u.active_minutes as f64);
    assert!((u.cores - expected).abs() < 1e-9, "{u:?}");
    assert!(
        query::hot_lines(&store, SERVICE, "hot_loop", window, 5)
            .await
            .unwrap()
            .is_empty()
    );
    check_documented_queries(&store).await;

    // The read-only user (readonly = 1, as the agent's `sql` tool uses): the client's reads work,
    // writes and setting changes are refused by the server.
    let (user, password) = clickhouse.readonly_credentials();
    let ro = Store::connect(
        &StoreConfig::new(clickhouse.url())
            .with_database("fleetprof_test")
            .with_credentials(user, password),
    )
    .await
    .unwrap();
    assert_eq!(
        count(
            &ro,
            "SELECT count() FROM batches FINAL WHERE host_id = 'machine-1'"
        )
        .await,
        2
    );
    let e = ro
        .client()
        .query("DROP TABLE samples")
        .execute()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("readonly"), "{e}");
    let e = ro
        .client()
        .clone()
        .with_setting("max_result_rows", "0")
        .query("SELECT 1")
        .fetch_one::<u8>()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("readonly mode"), "{e}");

    // A poison batch: ClickHouse rejects every INSERT holding its frame `poison_fn` (a
    // materialized view that throws). Pushed together with good batches, the group is split:
    // the good ones are stored, the poison one is dead-lettered and answered INVALID_ARGUMENT.
    store
        .client()
        .query(
            "CREATE MATERIALIZED VIEW poison_mv ENGINE = Memory AS \
             SELECT throwIf(function = 'poison_fn') AS x FROM frames",
        )
        .execute()
        .await
        .unwrap();
    let mut poison = batch(1, "1.1", false);
    poison.host.as_mut().unwrap().host_id = "poison".into();
    poison.frames[0].function = "poison_fn".into();
    poison.processes[0].service = "poison-service".into();
    let (mut c1, mut c2, mut c3) = (client.clone(), client.clone(), client.clone());
    let (a, b, c) = futures::join!(
        c1.push(batch(3, "1.1", false)),
        c2.push(poison),
        c3.push(batch(4, "1.1", false)),
    );
    assert!(!a.unwrap().into_inner().duplicate);
    assert!(!c.unwrap().into_inner().duplicate);
    let e = b.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("ClickHouse rejected this batch"),
        "{}",
        e.message()
    );
    assert!(dead_letters.path().join("poison-boot-1-1.pb").exists());
    let reason =
        std::fs::read_to_string(dead_letters.path().join("poison-boot-1-1.reason")).unwrap();
    assert!(
        reason.contains("throwIf") || reason.contains("non-zero"),
        "{reason}"
    );
    let ordering = std::sync::atomic::Ordering::Relaxed;
    assert_eq!(collector.stats().dead_lettered.load(ordering), 1);
    assert_eq!(
        stored(&store).await,
        (4, 400),
        "the good batches of the group are stored"
    );
    store
        .client()
        .query("DROP TABLE poison_mv")
        .execute()
        .await
        .unwrap();

    // Batch 5's samples (and the rollups written beside them) landed in an earlier attempt that
    // failed before its other tables (as a killed collector leaves it): its push later completes
    // it without writing samples twice. (A schema v5 collector records the attempt first, and
    // marks each batch's rollup rows.)
    let (b5, b6) = (batch(5, "1.1", false), batch(6, "1.1", false));
    let t5 = b5.start_time_unix_nanos / 1_000_000_000;
    let marker = rollup_marker(&BatchKey {
        host_id: "machine-1".into(),
        boot_id: "boot-1".into(),
        sequence: 5,
    });
    store
        .client()
        .query(&format!(
            "INSERT INTO batch_attempts (host_id, boot_id, sequence, time, attempted) \
             VALUES ('machine-1', 'boot-1', 5, {t5}, now())"
        ))
        .execute()
        .await
        .unwrap();
    let stack = |functions: &str| {
        format!("(SELECT any(stack_id) FROM stacks WHERE functions = {functions})")
    };
    for (functions, n) in [
        ("['main','handle','hot_loop']", 90),
        ("['main','handle']", 10),
    ] {
        store
            .client()
            .query(&format!(
                "INSERT INTO samples (time, host, host_id, boot_id, sequence, service, version, stack_id, count) \
                 SELECT toDateTime({t5}), 'web-1', 'machine-1', 'boot-1', 5, '{SERVICE}', '1.1', {}, {n}",
                stack(functions)
            ))
            .execute()
            .await
            .unwrap();
    }
    store
        .client()
        .query(&format!(
            "INSERT INTO function_minutes (service, function, minute, version, self_samples, total_samples, \
             rollup_batch, rollup_batches) \
             VALUES ('{SERVICE}', 'main', toStartOfMinute(toDateTime({t5})), '1.1', 0, 100, '', 0), \
             ('{SERVICE}', 'handle', toStartOfMinute(toDateTime({t5})), '1.1', 10, 100, '', 0), \
             ('{SERVICE}', 'hot_loop', toStartOfMinute(toDateTime({t5})), '1.1', 90, 90, '', 0), \
             ('{SERVICE}', 'main', toStartOfMinute(toDateTime({t5})), '1.1', 0, 0, '{marker}', 1)"
        ))
        .execute()
        .await
        .unwrap();
    store
        .client()
        .query(&format!(
            "INSERT INTO service_minutes (service, minute, version, host, samples, rollup_batch, \
             rollup_batches) VALUES ('{SERVICE}', toStartOfMinute(toDateTime({t5})), '1.1', 'web-1', 100, '', 0), \
             ('{SERVICE}', toStartOfMinute(toDateTime({t5})), '1.1', 'web-1', 0, '{marker}', 1)"
        ))
        .execute()
        .await
        .unwrap();

    // ClickHouse goes away: pushes are answered UNAVAILABLE (nothing acknowledged that is not
    // stored; hosts keep the batches), and the retries land once it is back.
    clickhouse.stop().unwrap();
    for b in [&b5, &b6] {
        let e = client.push(b.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(
            e.message().contains("ClickHouse unreachable"),
            "{}",
            e.message()
        );
    }
    assert!(collector.stats().unavailable.load(ordering) >= 2);
    clickhouse.restart().unwrap();
    for b in [&b5, &b6] {
        let r = client.push(b.clone()).await.unwrap().into_inner();
        assert_eq!(
            (r.duplicate, r.samples_stored),
            (false, 100),
            "batch {}",
            b.sequence
        );
    }
    assert!(
        client
            .push(b6.clone())
            .await
            .unwrap()
            .into_inner()
            .duplicate
    );
    assert_eq!(
        stored(&store).await,
        (6, 600),
        "batch 5's samples are stored once"
    );
    assert_eq!(store.stored_sample_count().await.unwrap(), 600);
    assert_eq!(
        count(
            &store,
            "SELECT toUInt64(count()) FROM losses WHERE sequence = 5 AND host_id = 'machine-1'"
        )
        .await,
        1,
        "every table holds a batch once"
    );
    assert_eq!(
        count(
            &store,
            "SELECT toUInt64(sum(total_samples)) FROM function_minutes WHERE function = 'main' \
             AND service = 'checkout'"
        )
        .await,
        600
    );
    assert_eq!(
        count(
            &store,
            "SELECT toUInt64(sum(samples)) FROM service_minutes WHERE service = 'checkout'"
        )
        .await,
        600,
        "the collector's rollups hold every batch once"
    );

    collector.shutdown().await;
    clickhouse.stop().unwrap();
}
