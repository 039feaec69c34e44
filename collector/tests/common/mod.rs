//! What the collector's ClickHouse tests share: the clock, the skeleton of a recorded batch,
//! storing batches through the store's writer or a collector over real gRPC, and reading
//! figures back.

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use fleetprof_collector::ingest::{IngestConfig, Limits, RunningCollector, validate};
use fleetprof_collector::store::{KnownIds, Store};
use fleetprof_proto::fleetprof::v1 as pb;
use pb::ingest_client::IngestClient;

/// Nanoseconds since the epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Seconds since the epoch.
pub(crate) fn now_s() -> u64 {
    now_ns() / 1_000_000_000
}

/// A frame of `function` in `module` (build-id `abc123`).
pub(crate) fn frame(module: &str, function: &str) -> pb::Frame {
    pb::Frame {
        function: function.into(),
        module: module.into(),
        build_id: "abc123".into(),
        ..Default::default()
    }
}

/// Stacks of frame indexes, leaf first.
pub(crate) fn stacks(frame_indexes: &[&[u32]]) -> Vec<pb::Stack> {
    frame_indexes
        .iter()
        .map(|f| pb::Stack {
            frame_indexes: f.to_vec(),
        })
        .collect()
}

/// `count` samples of thread `tid` ("worker") of process `process_index` in stack `stack_index`.
pub(crate) fn sample(process_index: u32, stack_index: u32, tid: u32, count: u64) -> pb::Sample {
    pb::Sample {
        process_index,
        stack_index,
        tid,
        thread_name: "worker".into(),
        count,
    }
}

/// A batch of host `hostname` (machine `host_id`, boot `boot-1`) at 19 Hz from `start_ns` to
/// `end_ns`, without energy figures or losses, and with no processes, frames, stacks or samples
/// yet: the test fills them in (`ProfileBatch { samples, ..batch(…) }`).
pub(crate) fn batch(
    hostname: &str,
    host_id: &str,
    sequence: u64,
    start_ns: u64,
    end_ns: u64,
) -> pb::ProfileBatch {
    pb::ProfileBatch {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        host: Some(pb::HostIdentity {
            hostname: hostname.into(),
            host_id: host_id.into(),
            boot_id: "boot-1".into(),
            ..Default::default()
        }),
        sequence,
        start_time_unix_nanos: start_ns,
        end_time_unix_nanos: end_ns,
        frequency_hz: 19,
        processes: Vec::new(),
        frames: Vec::new(),
        stacks: Vec::new(),
        samples: Vec::new(),
        energy: Some(pb::Energy {
            available: false,
            unavailable_reason: "test".into(),
            ..Default::default()
        }),
        losses: Some(pb::LossCounters::default()),
    }
}

/// Stores `batches` through the store's writer, as the collector does.
pub(crate) async fn write(store: &Store, batches: &[pb::ProfileBatch]) {
    let now = now_ns();
    let validated: Vec<_> = batches
        .iter()
        .map(|b| validate(b, &Limits::default(), now).unwrap())
        .collect();
    let refs: Vec<_> = validated.iter().collect();
    let (mut stacks, mut frames) = (KnownIds::default(), KnownIds::default());
    store
        .write_batches(&refs, &HashMap::new(), &mut stacks, &mut frames)
        .await
        .unwrap();
}

/// A collector over `store` on a free loopback port, and a gRPC client of it.
pub(crate) async fn collector(
    store: &Store,
) -> (RunningCollector, IngestClient<tonic::transport::Channel>) {
    let running = RunningCollector::start(
        store.clone(),
        IngestConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client = IngestClient::connect(format!("http://{}", running.local_addr()))
        .await
        .unwrap();
    (running, client)
}

/// The one number `sql` answers.
pub(crate) async fn one_u64(store: &Store, sql: &str) -> u64 {
    store
        .client()
        .query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"))
}

/// Runs `sql`, failing the test with ClickHouse's message when it fails.
pub(crate) async fn execute(store: &Store, sql: &str) {
    store
        .client()
        .query(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
}
