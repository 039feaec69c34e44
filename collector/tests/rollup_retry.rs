//! The write path is exactly-once under retry at every failure point, the collector's rollups
//! included: a batch whose write failed part-way (a table ClickHouse could not write) is pushed
//! again and every table ends up holding it once, with `function_minutes` and `service_minutes`
//! equal to what `samples` says, row for row.
//!
//! Failures are real answers of a real ClickHouse: the test renames a table away so the server
//! refuses that one INSERT while the others land, renames it back, and pushes the batch again
//! through the collector's writer, as a host whose push was refused does.
//!
//! One throwaway ClickHouse (`LocalClickHouse`) for the whole binary's single test; without
//! `/usr/sbin/clickhouse-server` it FAILS with that reason rather than pass silently.

use std::collections::BTreeMap;

use fleetprof_collector::ingest::{
    Ack, Limits, Submission, WriteError, WriterConfig, WriterHandle, validate,
};
use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_collector::store::{Store, StoreConfig};
use fleetprof_proto::fleetprof::v1 as pb;

mod common;

use common::{execute, now_ns, one_u64};

/// A batch of host `web-<sequence % 2>` with two services, a recursive stack and a truncated
/// one, ending `ago_s` seconds ago.
fn batch(sequence: u64, ago_s: u64) -> pb::ProfileBatch {
    let end = now_ns() - ago_s * 1_000_000_000;
    let frame = |name: &str| common::frame("/usr/bin/shop", name);
    let process = |pid: u32, service: &str, version: &str| pb::Process {
        pid,
        comm: service.into(),
        exe: "/usr/bin/shop".into(),
        service: service.into(),
        version: version.into(),
        ..Default::default()
    };
    let sample =
        |process_index, stack_index, count| common::sample(process_index, stack_index, 7, count);
    let host = format!("web-{}", sequence % 2);
    pb::ProfileBatch {
        processes: vec![process(10, "checkout", "1.0"), process(11, "search", "2.0")],
        // Leaf first, as the profiler sends them.
        frames: vec![
            frame("hot_loop"),
            frame("recurse"),
            frame("main"),
            frame("[truncated: depth limit]"),
        ],
        stacks: common::stacks(&[&[0, 1, 1, 2], &[1, 2], &[0, 3]]),
        samples: vec![
            sample(0, 0, 40 + sequence),
            sample(0, 1, 7),
            sample(1, 0, 11),
            sample(1, 2, 3),
        ],
        losses: Some(pb::LossCounters {
            recorded: 61 + sequence,
            truncated_stacks: 3,
            ..Default::default()
        }),
        ..common::batch(&host, &host, sequence, end - 10_000_000_000, end)
    }
}

fn submission(b: &pb::ProfileBatch) -> Submission {
    Submission {
        batch: validate(b, &Limits::default(), now_ns()).unwrap(),
        wire: b.clone(),
    }
}

async fn rows(store: &Store, sql: &str) -> Vec<(String, String, u32, String, u64, u64)> {
    store
        .client()
        .query(sql)
        .fetch_all::<(String, String, u32, String, u64, u64)>()
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"))
}

async fn break_table(store: &Store, table: &str) {
    let columns = match table {
        "function_minutes" | "service_minutes" => {
            "minute DateTime, rollup_batch String, rollup_batches UInt64"
        }
        // What the look-up reads, without the `attempted` column the writer sends.
        _ => "host_id String, boot_id String, sequence UInt64, time DateTime",
    };
    execute(store, &format!("RENAME TABLE {table} TO {table}_real")).await;
    execute(
        store,
        &format!("CREATE TABLE {table} ({columns}) ENGINE = Memory"),
    )
    .await;
}

/// Puts `table` back.
async fn repair_table(store: &Store, table: &str) {
    execute(store, &format!("DROP TABLE {table}")).await;
    execute(store, &format!("RENAME TABLE {table}_real TO {table}")).await;
}

type RollupRows = BTreeMap<(String, String, u32, String), (u64, u64)>;

/// What `samples` (joined to `stacks`) says the rollups must hold, and what they hold:
/// `function_minutes` as (service, function, minute, version) → (self, total), and
/// `service_minutes` as (service, host, minute, version) → (samples, 0).
async fn expected_and_stored(store: &Store) -> [(RollupRows, RollupRows); 2] {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct StackNames {
        stack_id: u64,
        functions: Vec<String>,
    }
    let stacks: BTreeMap<u64, Vec<String>> = store
        .client()
        .query("SELECT stack_id, any(functions) AS functions FROM stacks GROUP BY stack_id")
        .fetch_all::<StackNames>()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.stack_id, s.functions))
        .collect();
    let samples = store
        .client()
        .query(
            "SELECT service, version, toUInt32(toStartOfMinute(time)), host, stack_id, count \
             FROM samples",
        )
        .fetch_all::<(String, String, u32, String, u64, u64)>()
        .await
        .unwrap();
    let (mut functions, mut services) = (RollupRows::new(), RollupRows::new());
    for (service, version, minute, host, stack_id, count) in samples {
        let names = &stacks[&stack_id];
        let mut seen = std::collections::HashSet::new();
        for f in names {
            if seen.insert(f) {
                let e = functions
                    .entry((service.clone(), f.clone(), minute, version.clone()))
                    .or_default();
                e.1 += count;
                if Some(f) == names.last() {
                    e.0 += count;
                }
            }
        }
        services
            .entry((service, host, minute, version))
            .or_default()
            .0 += count;
    }
    let stored_functions = rows(
        store,
        "SELECT service, function, toUInt32(minute), version, toUInt64(sum(self_samples)), \
         toUInt64(sum(total_samples)) FROM function_minutes \
         GROUP BY service, function, minute, version",
    )
    .await
    .into_iter()
    .map(|(s, f, m, v, a, b)| ((s, f, m, v), (a, b)))
    .collect();
    let stored_services = rows(
        store,
        "SELECT service, host, toUInt32(minute), version, toUInt64(sum(samples)), toUInt64(0) \
         FROM service_minutes GROUP BY service, host, minute, version",
    )
    .await
    .into_iter()
    .map(|(s, h, m, v, a, b)| ((s, h, m, v), (a, b)))
    .collect();
    [(functions, stored_functions), (services, stored_services)]
}

/// Asserts every table holds each of `pushed` batches once and the rollups equal `samples`.
async fn assert_exact(store: &Store, pushed: &[pb::ProfileBatch], when: &str) {
    let n = pushed.len() as u64;
    let per_batch = |table: &str, ident: &str| {
        format!(
            "SELECT toUInt64(max(c)) FROM (SELECT {ident}, count() AS c FROM {table} GROUP BY {ident})"
        )
    };
    let sample_rows: u64 = pushed.iter().map(|b| b.samples.len() as u64).sum();
    let samples: u64 = pushed
        .iter()
        .flat_map(|b| &b.samples)
        .map(|s| s.count)
        .sum();
    assert_eq!(
        one_u64(store, "SELECT count() FROM samples").await,
        sample_rows,
        "{when}: sample rows"
    );
    assert_eq!(
        one_u64(store, "SELECT toUInt64(sum(count)) FROM samples").await,
        samples,
        "{when}: samples"
    );
    assert_eq!(
        one_u64(store, "SELECT count() FROM losses").await,
        n,
        "{when}: losses rows"
    );
    assert_eq!(
        one_u64(store, "SELECT count() FROM batches").await,
        n,
        "{when}: batches rows"
    );
    assert_eq!(
        one_u64(store, &per_batch("processes", "host_id, pid, time")).await,
        1,
        "{when}: each batch's processes once"
    );
    let [(functions, stored_functions), (services, stored_services)] =
        expected_and_stored(store).await;
    assert!(!functions.is_empty() && !services.is_empty());
    assert_eq!(stored_functions, functions, "{when}: function_minutes");
    assert_eq!(stored_services, services, "{when}: service_minutes");
    for table in ["function_minutes", "service_minutes"] {
        let marks = one_u64(
            store,
            &format!("SELECT toUInt64(sum(rollup_batches)) FROM {table} WHERE rollup_batch != ''"),
        )
        .await;
        assert_eq!(marks, n, "{when}: one {table} marker per batch");
    }
}

/// Pushes `b` through a fresh writer (a new collector process: no memory of earlier pushes).
async fn push(store: &Store, b: &pb::ProfileBatch) -> Result<Ack, WriteError> {
    let (writer, task) = WriterHandle::spawn(store.clone(), WriterConfig::default());
    let result = writer.submit(submission(b)).await;
    drop(writer);
    task.await.unwrap();
    result
}

/// For each failure point — a rollup table, `samples`, `losses` or the `batches` commit marker
/// refused by the server while the rest landed — the retry completes the batch and every table holds it once,
/// the rollups equal to `samples` exactly; a batch stored whole whose answer was lost is pushed
/// again and nothing is counted twice; truncated-stack counts are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_a_partial_write_store_every_table_once() {
    let clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("retry"))
        .await
        .unwrap();
    store.migrate().await.unwrap();

    let mut pushed = Vec::new();
    // Everything lands first time.
    let b = batch(1, 10);
    assert!(matches!(push(&store, &b).await, Ok(Ack::Stored { .. })));
    pushed.push(b);
    assert_exact(&store, &pushed, "all written").await;

    // Stored whole, answer lost: the host pushes again.
    assert_eq!(push(&store, &pushed[0]).await, Ok(Ack::Duplicate));
    assert_exact(&store, &pushed, "pushed again after a lost answer").await;

    for (sequence, table) in [
        (7, "batch_attempts"),
        (2, "function_minutes"),
        (3, "service_minutes"),
        (4, "samples"),
        (5, "losses"),
        (6, "batches"),
    ] {
        // Ten seconds apart, as one host's windows are.
        let b = batch(sequence, 10 * sequence);
        break_table(&store, table).await;
        let refused = push(&store, &b).await;
        repair_table(&store, table).await;
        assert!(
            matches!(refused, Err(WriteError::Rejected { .. })),
            "{table} refused: {refused:?}"
        );
        // The failure hit where intended: not committed; the other tables written, except
        // when the attempt record (written before everything) failed.
        assert_eq!(
            one_u64(&store, "SELECT count() FROM batches").await,
            pushed.len() as u64,
            "{table}"
        );
        let written = |t: &str| table != "batch_attempts" && t != table;
        let landed = |t: &str| format!("SELECT count() FROM {t} WHERE sequence = {sequence}");
        assert_eq!(
            one_u64(&store, &landed("samples")).await,
            if written("samples") {
                b.samples.len() as u64
            } else {
                0
            },
            "{table}"
        );
        assert_eq!(
            one_u64(&store, &landed("losses")).await,
            u64::from(written("losses")),
            "{table}"
        );
        let marker = |t: &str| {
            format!("SELECT toUInt64(sum(rollup_batches)) FROM {t} WHERE rollup_batch != ''")
        };
        for t in ["function_minutes", "service_minutes"] {
            let expected = pushed.len() as u64 + u64::from(written(t));
            assert_eq!(one_u64(&store, &marker(t)).await, expected, "{table}: {t}");
        }
        // The retry, as the host sends it.
        let again = push(&store, &b).await;
        assert!(
            matches!(again, Ok(Ack::Stored { .. })),
            "retry after {table} failed: {again:?}"
        );
        pushed.push(b);
        assert_exact(&store, &pushed, &format!("retried after {table} failed")).await;
        // And a second, redundant retry changes nothing.
        assert_eq!(
            push(&store, &pushed[pushed.len() - 1]).await,
            Ok(Ack::Duplicate)
        );
    }
    assert_exact(&store, &pushed, "at the end").await;

    // Merges fold rollup rows and markers; the sums stay exact.
    for table in ["function_minutes", "service_minutes"] {
        store
            .client()
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .unwrap();
    }
    assert_exact(&store, &pushed, "after merges").await;

    // Markers add no service, version, host or function a reader could list.
    for (sql, n) in [
        ("SELECT uniqExact(service) FROM service_minutes", 2),
        ("SELECT uniqExact(service, version) FROM service_minutes", 2),
        ("SELECT uniqExact(host) FROM service_minutes", 2),
        ("SELECT uniqExact(function) FROM function_minutes", 4),
    ] {
        assert_eq!(one_u64(&store, sql).await, n, "{sql}");
    }

    assert_eq!(
        one_u64(&store, "SELECT toUInt64(sum(truncated_stacks)) FROM losses").await,
        3 * pushed.len() as u64,
        "truncated stacks stored"
    );
}
