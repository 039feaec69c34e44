//! The writer overlaps INSERT groups (`WriterConfig::max_groups_in_flight`) and still stores
//! every batch exactly once: pushes of one key racing each other — in one group, or in two
//! groups in flight at once — give one `Stored` and the rest `Duplicate`, and every table holds
//! the batch once.
//!
//! One throwaway ClickHouse (`LocalClickHouse`); without `/usr/sbin/clickhouse-server` it FAILS
//! with that reason rather than pass silently.

mod common;

use common::{frame, now_ns, sample, stacks};
use fleetprof_collector::ingest::{Ack, Limits, Submission, WriterConfig, WriterHandle, validate};
use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_collector::store::{Store, StoreConfig};
use fleetprof_proto::fleetprof::v1 as pb;

/// Batch `sequence` of host `h-<sequence % 3>`: two stacks over three frames, three samples.
fn batch(sequence: u64) -> pb::ProfileBatch {
    let end = now_ns();
    let host = format!("h-{}", sequence % 3);
    pb::ProfileBatch {
        processes: vec![pb::Process {
            pid: 10,
            comm: "shop".into(),
            service: "shop".into(),
            version: "1.0".into(),
            ..Default::default()
        }],
        frames: ["hot", "work", "main"]
            .map(|f| frame("/usr/bin/shop", f))
            .to_vec(),
        stacks: stacks(&[&[0, 1, 2], &[1, 2]]),
        samples: vec![
            sample(0, 0, 7, 10 + sequence),
            sample(0, 1, 7, 5),
            sample(0, 0, 7, 1),
        ],
        ..common::batch(&host, &host, sequence, end - 10_000_000_000, end)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_pushes_are_stored_once_with_groups_in_flight() {
    let clickhouse = LocalClickHouse::start().unwrap_or_else(|e| panic!("writer_overlap: {e}"));
    let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("overlap"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (writer, task) = WriterHandle::spawn(
        store.clone(),
        WriterConfig {
            max_groups_in_flight: 2,
            // A group closes at one batch's rows, so racing copies land in different groups.
            max_group_rows: 3,
            ..WriterConfig::default()
        },
    );

    const BATCHES: u64 = 24;
    const COPIES: usize = 3;
    let wire: Vec<pb::ProfileBatch> = (1..=BATCHES).map(batch).collect();
    let mut pushes = Vec::new();
    for round in 0..COPIES {
        for b in &wire {
            let writer = writer.clone();
            let submission = Submission {
                batch: validate(b, &Limits::default(), now_ns()).unwrap(),
                wire: b.clone(),
            };
            let sequence = b.sequence;
            pushes.push(tokio::spawn(async move {
                (sequence, round, writer.submit(submission).await)
            }));
        }
    }
    let mut stored = vec![0usize; BATCHES as usize + 1];
    for p in pushes {
        let (sequence, round, result) = p.await.unwrap();
        match result {
            Ok(Ack::Stored { .. }) => stored[sequence as usize] += 1,
            Ok(Ack::Duplicate) => {}
            Err(e) => panic!("push {round} of batch {sequence}: {e}"),
        }
    }
    for (sequence, &n) in stored.iter().enumerate().skip(1) {
        assert_eq!(n, 1, "batch {sequence} answered Stored {n} times");
    }

    let samples: u64 = wire.iter().flat_map(|b| &b.samples).map(|s| s.count).sum();
    assert_eq!(store.stored_sample_count().await.unwrap(), samples);
    let count = |sql: &'static str| {
        let store = store.clone();
        async move { store.client().query(sql).fetch_one::<u64>().await.unwrap() }
    };
    assert_eq!(count("SELECT count() FROM batches").await, BATCHES);
    assert_eq!(count("SELECT count() FROM samples").await, BATCHES * 3);
    assert_eq!(count("SELECT count() FROM losses").await, BATCHES);
    assert_eq!(
        count("SELECT toUInt64(sum(samples)) FROM service_minutes").await,
        samples
    );
    assert_eq!(
        count("SELECT toUInt64(sum(self_samples)) FROM function_minutes").await,
        samples
    );
    assert_eq!(
        count("SELECT toUInt64(sum(rollup_batches)) FROM function_minutes").await,
        BATCHES
    );
    drop(writer);
    task.await.unwrap();
}
