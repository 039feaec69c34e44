//! Issue 12, a ClickHouse cluster as code: `fleetprof-collector migrate --cluster` lays the schema
//! out over two real ClickHouse servers on loopback (a two-shard cluster), two collectors pointed
//! at different nodes store the same recorded batches over real gRPC, and `query` and `detect`
//! through the cluster answer what one server answers on the same batches.
//!
//! Starts three throwaway servers (two for the cluster, one alone; about 0.2 s each); without
//! `/usr/sbin/clickhouse-server` it FAILS with that reason rather than pass silently.

use std::collections::BTreeSet;

use std::process::Command;
use std::time::Duration;

use fleetprof_collector::changes;
use fleetprof_collector::query::{self, By, Side, Window};
use fleetprof_collector::regressions::{self, DetectOptions, ListFilter};
use fleetprof_collector::store::cluster::{ClusterOptions, LOCAL_SUFFIX, migrate_cluster_with};
use fleetprof_collector::store::local_server::{LocalClickHouse, LocalCluster};
use fleetprof_collector::store::{MIGRATIONS, Migration, Store, StoreConfig, StoreError};
use fleetprof_proto::fleetprof::v1 as pb;
use futures::StreamExt;

mod common;

use common::{collector, now_s, one_u64};

const SERVICE: &str = "checkout";
const HOSTS: u64 = 4;
const MINUTES: u64 = 60;
/// The minute `checkout` 1.1 (with a slower `hot_loop`) replaces 1.0.
const STEP: u64 = 30;

/// Host `host`'s one-minute batch of minute `minute` (of [`MINUTES`], ending at `end_s`):
/// main → handle → hot_loop, main → handle → cold_path and main → idle_work, with small
/// deterministic noise; from minute [`STEP`] on, version 1.1 spends half again as long in
/// `hot_loop` (a regression, not a cost shift: `cold_path` stays).
fn batch(host: u64, minute: u64, end_s: u64) -> pb::ProfileBatch {
    let end = (end_s - (MINUTES - 1 - minute) * 60) * 1_000_000_000;
    let frame = |name: &str| common::frame("/usr/bin/checkout", name);
    let noise = (minute * 7 + host * 13) % 11;
    let (version, hot, cold) = if minute < STEP {
        ("1.0", 300 + noise, 600)
    } else {
        ("1.1", 450 + noise, 600)
    };
    let sample = |stack_index, count| common::sample(0, stack_index, 4243, count);
    pb::ProfileBatch {
        processes: vec![pb::Process {
            pid: 4242,
            comm: "checkout".into(),
            exe: "/usr/bin/checkout".into(),
            service: SERVICE.into(),
            version: version.into(),
            ..Default::default()
        }],
        frames: vec![
            frame("hot_loop"),
            frame("handle"),
            frame("main"),
            frame("cold_path"),
            frame("idle_work"),
        ],
        stacks: common::stacks(&[&[0, 1, 2], &[3, 1, 2], &[4, 2]]),
        samples: vec![sample(0, hot), sample(1, cold), sample(2, 100 + noise)],
        ..common::batch(
            &format!("web-{host}"),
            &format!("machine-{host}"),
            minute + 1,
            end - 60_000_000_000,
            end,
        )
    }
}

/// Runs `fleetprof-collector migrate --cluster` against the first node, giving every node's
/// HTTP endpoint when `node_urls`; returns whether it succeeded, its stdout and stderr.
fn migrate_cluster_cli(cluster: &LocalCluster, node_urls: bool) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetprof-collector"));
    command
        .args(["migrate", "--cluster", cluster.name()])
        .args(["--clickhouse-url", &cluster.nodes()[0].url()])
        .env("RUST_LOG", "warn");
    if node_urls {
        for (address, url) in cluster.node_urls() {
            command.args(["--node-url", &format!("{address}={url}")]);
        }
    }
    let out = command.output().expect("running fleetprof-collector");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!(
        "$ fleetprof-collector migrate --cluster {}\n{stdout}{stderr}",
        cluster.name()
    );
    (out.status.success(), stdout, stderr)
}

/// The rows of every ```sql block of QUERIES.md and of the README's "Queries" section, sorted (a Distributed table returns
/// unordered rows in another order than one server); of a query showing when batches were
/// received, each row's first column.
async fn documented_queries(store: &Store) -> Vec<Vec<String>> {
    let readme = include_str!("../../README.md");
    let readme = &readme[readme
        .find("### Queries")
        .expect("README has a \"Queries\" section")..];
    let readme = &readme[..readme[4..].find("\n### ").map_or(readme.len(), |i| i + 4)];
    let doc = format!("{}\n{readme}", include_str!("../schema/QUERIES.md"));
    let mut results = Vec::new();
    for block in doc.split("```sql").skip(1) {
        let sql = block.split("```").next().unwrap().trim();
        let bytes = store
            .client()
            .query_raw(sql)
            .fetch_bytes("TSV")
            .unwrap_or_else(|e| panic!("{sql}\n{e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("QUERIES.md query failed:\n{sql}\n{e}"));
        // When each batch arrived differs between the servers (wall-clock receive times): keep
        // the rows' keys of such queries.
        let arrival = sql.contains("received");
        let mut rows: Vec<String> = String::from_utf8_lossy(&bytes)
            .lines()
            .map(|row| {
                if arrival {
                    row.split('\t').next().unwrap_or_default().to_owned()
                } else {
                    row.to_owned()
                }
            })
            .collect();
        rows.sort();
        results.push(rows);
    }
    results
}

/// The two-shard cluster, end to end: layout and idempotent migration, two collectors keeping
/// one copy of a batch pushed to both, rows on both shards, and every reader and the detector
/// answering through the cluster what one server answers on the same batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shard_cluster_answers_like_one_server() {
    let cluster =
        LocalCluster::start("fleetprof", 2).unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let single = LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let latest = MIGRATIONS.last().unwrap().version;

    // Both nodes listen on 127.0.0.1, at different HTTP ports: without --node-url the second
    // node's URL reaches the first, which is refused before either node is touched.
    let (ok, _, stderr) = migrate_cluster_cli(&cluster, false);
    assert!(!ok && stderr.contains("is not in shard 2"), "{stderr}");
    let first_node =
        Store::new(&StoreConfig::new(cluster.nodes()[0].url()).with_database("default")).unwrap();
    assert_eq!(
        one_u64(
            &first_node,
            "SELECT count() FROM system.tables WHERE database = 'fleetprof'"
        )
        .await,
        0
    );

    // Laid out on both nodes from the migration files; a second run changes nothing.
    let (ok, first, _) = migrate_cluster_cli(&cluster, true);
    assert!(ok);
    assert_eq!(first.matches("applied [1, 2, 3, 4").count(), 2, "{first}");
    assert!(!first.contains("warning"), "{first}");
    let (ok, second, _) = migrate_cluster_cli(&cluster, true);
    assert!(ok);
    assert_eq!(
        second
            .matches(&format!("at schema version {latest}; nothing to do"))
            .count(),
        2,
        "{second}"
    );
    let nodes: Vec<Store> = cluster
        .nodes()
        .iter()
        .map(|n| Store::new(&StoreConfig::new(n.url())).unwrap())
        .collect();
    for node in &nodes {
        assert_eq!(node.schema_version().await.unwrap(), latest);
        for (table, engine) in [
            ("samples", "Distributed"),
            ("samples_local", "MergeTree"),
            ("stacks_local", "ReplacingMergeTree"),
            ("regressions", "Distributed"),
            ("regressions_local", "ReplacingMergeTree"),
            ("schema_migrations", "MergeTree"),
        ] {
            let found: String = node
                .client()
                .query("SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = ?")
                .bind(table)
                .fetch_one()
                .await
                .unwrap_or_else(|e| panic!("{table}: {e}"));
            assert_eq!(found, engine, "{table}");
        }
        // Per-host tables by host, stacks and frames by id, the small tables on every node.
        for (table, key) in [
            (
                "samples",
                "'fleetprof', fleetprof, samples_local, cityHash64(host))",
            ),
            (
                "batches",
                "'fleetprof', fleetprof, batches_local, cityHash64(host))",
            ),
            (
                "stacks",
                "'fleetprof', fleetprof, stacks_local, cityHash64(stack_id))",
            ),
            (
                "frames",
                "'fleetprof', fleetprof, frames_local, cityHash64(frame_id))",
            ),
            (
                "function_minutes",
                "'fleetprof', fleetprof, function_minutes_local, cityHash64(service))",
            ),
            (
                "regressions",
                "'fleetprof_shared', fleetprof, regressions_local, rand())",
            ),
        ] {
            let engine: String = node
                .client()
                .query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = ?")
                .bind(table)
                .fetch_one()
                .await
                .unwrap();
            assert!(engine.contains(key), "{table}: {engine}");
        }
        // Schema v4 dropped the names from samples, on both tables of the pair.
        for table in ["samples", "samples_local"] {
            let n = one_u64(
                node,
                &format!(
                    "SELECT count() FROM system.columns WHERE database = currentDatabase() \
                     AND table = '{table}' AND name = 'functions'"
                ),
            )
            .await;
            assert_eq!(n, 0, "{table} still has `functions`");
        }
        // The single-server path sees a current database and leaves it alone.
        assert_eq!(node.migrate().await.unwrap(), Vec::<u32>::new());
    }
    let alone = Store::new(&StoreConfig::new(single.url())).unwrap();
    alone.migrate().await.unwrap();

    // Two collectors on different nodes take the batches in turn; one server takes them all.
    let (collector_a, mut client_a) = collector(&nodes[0]).await;
    let (collector_b, mut client_b) = collector(&nodes[1]).await;
    let (collector_single, client_single) = collector(&alone).await;
    let started = std::time::Instant::now();
    let end_s = now_s() - 60;
    let batches: Vec<pb::ProfileBatch> = (0..MINUTES)
        .flat_map(|minute| (0..HOSTS).map(move |host| batch(host, minute, end_s)))
        .collect();
    let sent: u64 = batches
        .iter()
        .flat_map(|b| &b.samples)
        .map(|s| s.count)
        .sum();
    // Many pushes in flight, as from a fleet: the writers group them into few INSERTs.
    let pushes = batches.iter().enumerate().flat_map(|(i, b)| {
        let to_cluster = if i % 2 == 0 { &client_a } else { &client_b };
        [to_cluster.clone(), client_single.clone()].map(|mut client| {
            let b = b.clone();
            async move { client.push(b).await.unwrap().into_inner() }
        })
    });
    let answers: Vec<pb::PushResponse> = futures::stream::iter(pushes)
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(answers.iter().all(|r| !r.duplicate));
    println!("pushed in {:.1?}", started.elapsed());
    // The same batch at both collectors: the second sees the first's copy and stores nothing.
    for (host, client) in [(0, &mut client_b), (1, &mut client_a)] {
        let r = client
            .push(batch(host, 0, end_s))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.duplicate, r.samples_stored), (true, 0), "host {host}");
    }
    let both = one_u64(&nodes[1], "SELECT toUInt64(sum(count)) FROM samples").await;
    assert_eq!(both, sent, "samples stored once through the cluster");
    assert_eq!(
        one_u64(&nodes[0], "SELECT count() FROM batches").await,
        HOSTS * MINUTES
    );
    assert_eq!(
        one_u64(&alone, "SELECT toUInt64(sum(count)) FROM samples").await,
        sent
    );
    // Sharded by host: each shard holds some hosts' rows, the two hold all of them once.
    let mut local = Vec::new();
    for node in &nodes {
        let hosts = one_u64(node, "SELECT uniqExact(host) FROM samples_local").await;
        let samples = one_u64(node, "SELECT toUInt64(sum(count)) FROM samples_local").await;
        assert!(hosts > 0 && hosts < HOSTS, "{hosts} hosts on one shard");
        local.push(samples);
    }
    assert_eq!(local.iter().sum::<u64>(), sent);

    println!("stored and checked in {:.1?}", started.elapsed());
    // Every reader answers through either node what one server answers.
    let window = Window::last(Duration::from_secs(3 * 3600));
    for by in [By::Self_, By::Total] {
        let expected = query::top(&alone, SERVICE, window, by, 10).await.unwrap();
        assert_eq!(
            expected[0].function,
            if by == By::Self_ { "cold_path" } else { "main" }
        );
        for node in &nodes {
            assert_eq!(
                query::top(node, SERVICE, window, by, 10).await.unwrap(),
                expected
            );
        }
    }
    let (v1, v2) = (Side::Version("1.0".into()), Side::Version("1.1".into()));
    let expected_flame = query::flamegraph(&alone, SERVICE, window).await.unwrap();
    let expected_diff = query::diff(&alone, SERVICE, &v1, &v2, window, By::Self_, 10)
        .await
        .unwrap();
    let expected_services = query::services(&alone, Some(window)).await.unwrap();
    let expected_neighbours = query::callers_callees(&alone, SERVICE, "handle", window, 10)
        .await
        .unwrap();
    let expected_history = query::function_history(&alone, SERVICE, "hot_loop", window, 600)
        .await
        .unwrap();
    let expected_docs = documented_queries(&alone).await;
    let other_readers = |store: Store| async move {
        (
            query::hot_lines(&store, SERVICE, "hot_loop", window, 10)
                .await
                .unwrap(),
            query::stacks_through(&store, SERVICE, "handle", window, 10)
                .await
                .unwrap(),
            query::service_usage(&store, window).await.unwrap(),
            query::top_by_energy(&store, SERVICE, window, 10)
                .await
                .unwrap(),
            query::service_watts(&store, window)
                .await
                .unwrap()
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
    };
    let expected_others = other_readers(alone.clone()).await;
    for node in &nodes {
        assert_eq!(
            query::flamegraph(node, SERVICE, window).await.unwrap(),
            expected_flame
        );
        assert_eq!(
            query::diff(node, SERVICE, &v1, &v2, window, By::Self_, 10)
                .await
                .unwrap(),
            expected_diff
        );
        assert_eq!(
            query::services(node, Some(window)).await.unwrap(),
            expected_services
        );
        assert_eq!(
            query::callers_callees(node, SERVICE, "handle", window, 10)
                .await
                .unwrap(),
            expected_neighbours
        );
        assert_eq!(
            query::function_history(node, SERVICE, "hot_loop", window, 600)
                .await
                .unwrap(),
            expected_history
        );
        // The documented queries read the last hour up to now(), and the oldest minute of the
        // batches sits at that edge: compare a node's answers with the single server's read
        // before and after them, once both reads agree (rows only ever leave the hour, so
        // nothing changed in between).
        loop {
            let before = documented_queries(&alone).await;
            let on_node = documented_queries(node).await;
            if documented_queries(&alone).await == before {
                assert_eq!(on_node, before);
                break;
            }
        }
        assert_eq!(other_readers(node.clone()).await, expected_others);
        assert!(
            expected_docs.len() >= 12,
            "{} documented queries",
            expected_docs.len()
        );
    }

    println!("readers compared in {:.1?}", started.elapsed());
    // A deploy recorded through node B is read through node A, as on one server.
    let step_s = i64::try_from(end_s - (MINUTES - 1 - STEP) * 60).unwrap();
    changes::record_deploy(&alone, SERVICE, "1.1", step_s, Some("c0ffee"))
        .await
        .unwrap();
    changes::record_deploy(&nodes[1], SERVICE, "1.1", step_s, Some("c0ffee"))
        .await
        .unwrap();
    let expected_deploys = changes::deploys(&alone, SERVICE, 10).await.unwrap();
    assert_eq!(expected_deploys.len(), 1);
    let expected_changes = changes::change_records(&alone, SERVICE, step_s - 3600)
        .await
        .unwrap();
    for node in &nodes {
        assert_eq!(
            changes::deploys(node, SERVICE, 10).await.unwrap(),
            expected_deploys
        );
        assert_eq!(
            changes::change_records(node, SERVICE, step_s - 3600)
                .await
                .unwrap(),
            expected_changes
        );
    }

    // Detection through node A finds what it finds on one server, and node B reads its rows.
    let mut options = DetectOptions::new(window);
    options.detector.window_secs = 1800;
    options.detector.persistence_secs = 1200;
    let expected = regressions::run_detection(&alone, &[], &options)
        .await
        .unwrap();
    assert!(
        expected.regressions.iter().any(|r| r
            .report
            .members
            .iter()
            .any(|m| m.function == "hot_loop")),
        "one server finds hot_loop's regression: {expected:?}"
    );
    let found = regressions::run_detection(&nodes[0], &[], &options)
        .await
        .unwrap();
    // Everything but the wall-clock time each was detected at.
    let detected_at_zero = |run: &regressions::DetectionRun| -> Vec<regressions::StoredRegression> {
        run.regressions
            .iter()
            .cloned()
            .map(|mut r| {
                (r.detected, r.updated) = (0, 0);
                r
            })
            .collect()
    };
    assert_eq!(detected_at_zero(&found), detected_at_zero(&expected));
    println!("detection compared in {:.1?}", started.elapsed());
    let listed = regressions::list(&nodes[1], &ListFilter::default())
        .await
        .unwrap();
    let listed: BTreeSet<String> = listed.into_iter().map(|r| r.id).collect();
    let stored: BTreeSet<String> = found.regressions.iter().map(|r| r.id.clone()).collect();
    assert_eq!(listed, stored, "node B reads the regressions node A stored");
    // Small tables: every node holds every row.
    for node in &nodes {
        assert_eq!(
            one_u64(
                node,
                &format!("SELECT uniqExact(id) FROM regressions{LOCAL_SUFFIX}")
            )
            .await,
            stored.len() as u64
        );
    }

    future_migration_reaches_every_node(&cluster, &nodes).await;

    collector_a.shutdown().await;
    collector_b.shutdown().await;
    collector_single.shutdown().await;
}

/// A migration of the kind the next schema version brings (a column added to a large table, a
/// new per-batch table), laid out by the generic cluster path: both tables of the pair get the
/// column, the new table is sharded by its key, rows written on one node are read on the other,
/// and a second run changes nothing.
async fn future_migration_reaches_every_node(cluster: &LocalCluster, nodes: &[Store]) {
    let next = Migration {
        version: MIGRATIONS.last().unwrap().version + 1,
        name: "next_cluster_test.sql",
        sql: "ALTER TABLE losses ADD COLUMN truncated_stacks UInt64 DEFAULT 0;\n\
              CREATE TABLE IF NOT EXISTS batch_marks (host_id String, boot_id String, \
              sequence UInt64, time DateTime) ENGINE = ReplacingMergeTree \
              PARTITION BY toYYYYMM(time) ORDER BY (host_id, boot_id, sequence)",
    };
    let migrations: Vec<Migration> = MIGRATIONS.iter().copied().chain([next]).collect();
    let seed = StoreConfig::new(cluster.nodes()[0].url());
    let mut options = ClusterOptions::new(cluster.name());
    options.node_urls = cluster.node_urls().into_iter().collect();
    for run in 0..2 {
        let done = migrate_cluster_with(&seed, &options, &migrations)
            .await
            .unwrap();
        let applied: Vec<Vec<u32>> = done.iter().map(|n| n.applied.clone()).collect();
        let expected = if run == 0 { vec![next.version] } else { vec![] };
        assert_eq!(applied, [expected.clone(), expected], "run {run}");
    }
    for node in nodes {
        assert_eq!(node.schema_version().await.unwrap(), next.version);
        for table in ["losses", "losses_local"] {
            let n = one_u64(
                node,
                &format!(
                    "SELECT count() FROM system.columns WHERE database = currentDatabase() \
                     AND table = '{table}' AND name = 'truncated_stacks'"
                ),
            )
            .await;
            assert_eq!(n, 1, "{table} lacks the new column");
        }
        let engine: String = node
            .client()
            .query(
                "SELECT engine_full FROM system.tables WHERE database = currentDatabase() \
                 AND name = 'batch_marks'",
            )
            .fetch_one()
            .await
            .unwrap();
        assert!(engine.contains("cityHash64(host_id)"), "{engine}");
    }
    // A node of a cluster left behind is upgraded by `migrate --cluster` only: the single-server
    // path, as `serve` runs it, refuses.
    let older = StoreConfig::new(cluster.nodes()[1].url()).with_database("older");
    migrate_cluster_with(&older, &options, &MIGRATIONS[..3])
        .await
        .unwrap();
    let refused = Store::new(&older).unwrap().migrate().await.unwrap_err();
    assert!(
        matches!(refused, StoreError::ClusterLayout { .. }),
        "{refused}"
    );
    nodes[0]
        .client()
        .query(
            "INSERT INTO batch_marks SELECT concat('machine-', toString(number)), 'boot-1', 1, \
             now() FROM system.numbers LIMIT 8",
        )
        .execute()
        .await
        .unwrap();
    assert_eq!(
        one_u64(&nodes[1], "SELECT count() FROM batch_marks").await,
        8
    );
    assert_eq!(
        one_u64(&nodes[1], "SELECT sum(truncated_stacks) FROM losses").await,
        0
    );
}
