//! Ingest throughput: 50 simulated hosts push realistic batches concurrently over loopback gRPC
//! into an in-process collector writing to a throwaway local ClickHouse.
//!
//! Prints samples/s stored, this process's CPU time per million samples (the hosts' gRPC
//! clients and the collector together: both run in this process), and two baselines in the same
//! run: the same batches written by the store directly (no gRPC), and ClickHouse inserting rows
//! of the same width (a `samples` row each, nothing else) straight from this process in
//! 100,000-row INSERTs: what the engine takes, the target ratio. Then the CPU of this
//! process and of ClickHouse (from `/proc`) per million samples in each of the three phases.
//!
//! Fairness: what simulates the hosts is done before timing (generating the batches, encoding
//! them, connecting), and each phase starts once ClickHouse has finished merging the previous
//! phase's parts.
//!
//! `cargo bench -p fleetprof-collector --bench ingest` (env `HOSTS`, `BATCHES_PER_HOST` override;
//! `STACK_REUSE` (default 0.95) is the share of each batch's stacks that recur from a fleet-wide
//! pool of `STACK_POOL` (default 20,000) stacks, the rest new: `STACK_REUSE=0` is the worst case;
//! `GROUPS_IN_FLIGHT` (default: the collector's, 2) is how many INSERT groups the writer overlaps).
//! The server's directory is made under `TMPDIR`: on a file system where creating files is slow
//! (ClickHouse writes two files per column of every part), `TMPDIR=/dev/shm` measures the
//! pipeline rather than the disk; BENCHMARKS.md shows both.
//!
//! Also prints where the collector's own CPU goes, measured outside the timed run on the same
//! batches: protobuf decoding, validation (with the stack and frame ids), and the ids alone with
//! XXH3-64 (what the collector uses) against SHA-256 (what it used before) over the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetprof_collector::ingest::{IngestConfig, Limits, RunningCollector, WriterConfig, validate};
use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_collector::store::{Batch, SampleRow, Store, StoreConfig};
use fleetprof_proto::fleetprof::v1 as pb;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use sha2::Digest as _;

/// A client codec that sends a batch already encoded (the host's work, done before timing like
/// generating it) and decodes the collector's answer: the timed run measures the wire, the
/// collector and ClickHouse, not the simulated hosts' protobuf encoding on the same two cores.
struct PreEncoded;

/// [`PreEncoded`]'s encoder: the bytes as they are.
struct RawBatch;

/// [`PreEncoded`]'s decoder: a `PushResponse`.
struct PushAnswer;

impl tonic::codec::Codec for PreEncoded {
    type Encode = Vec<u8>;
    type Decode = pb::PushResponse;
    type Encoder = RawBatch;
    type Decoder = PushAnswer;

    fn encoder(&mut self) -> RawBatch {
        RawBatch
    }

    fn decoder(&mut self) -> PushAnswer {
        PushAnswer
    }
}

impl tonic::codec::Encoder for RawBatch {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for PushAnswer {
    type Item = pb::PushResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<pb::PushResponse>, tonic::Status> {
        pb::PushResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// Pushes one encoded batch over `channel`, as `IngestClient::push` would send it.
async fn push_encoded(channel: tonic::transport::Channel, batch: Vec<u8>) -> pb::PushResponse {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/fleetprof.v1.Ingest/Push");
    grpc.unary(tonic::Request::new(batch), path, PreEncoded)
        .await
        .unwrap()
        .into_inner()
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes into the struct we pass.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system CPU time of process `pid` (ClickHouse), from `/proc/<pid>/stat`.
fn process_cpu_time(pid: Option<u32>) -> Duration {
    let Some(stat) = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
    else {
        return Duration::ZERO;
    };
    // Fields after the command (which may hold spaces) end at its closing parenthesis; utime and
    // stime are fields 14 and 15, i.e. the 12th and 13th after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Waits until ClickHouse has had no merge running for a second (at most a minute), so each
/// timed phase starts on a server that is not still merging the previous phase's parts.
async fn quiesce(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let merges: u64 = store
            .client()
            .query("SELECT toUInt64(count()) FROM system.merges")
            .fetch_one()
            .await
            .unwrap();
        if merges > 0 {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  (ClickHouse was still merging after a minute; the next phase starts anyway)");
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A random stack 8–40 frames deep over the batch's 600 frames.
fn random_stack(rng: &mut rand::rngs::StdRng) -> pb::Stack {
    let depth = rng.random_range(8..40);
    pb::Stack {
        frame_indexes: (0..depth).map(|_| rng.random_range(0..600)).collect(),
    }
}

/// A 10 s batch like a busy host sends at 19 Hz × 2 CPUs plus many threads: 40 processes,
/// 600 frames, 1,500 stacks 8–40 deep, 2,000 sample rows with Zipf-distributed stacks.
///
/// Each stack is, with probability `reuse`, one of the fleet's recurring stacks (`pool`: every
/// host runs the same builds, so a host's stacks mostly recur batch to batch and across hosts),
/// otherwise a new random one. `reuse = 0` is session 3's workload (every stack new).
fn realistic_batch(
    host: usize,
    sequence: u64,
    rng: &mut rand::rngs::StdRng,
    pool: &[pb::Stack],
    reuse: f64,
) -> pb::ProfileBatch {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let services = [
        "checkout", "search", "cart", "auth", "payments", "ads", "feed", "api",
    ];
    let processes: Vec<pb::Process> = (0..40)
        .map(|i| pb::Process {
            pid: 1000 + i,
            comm: format!("svc{i}"),
            exe: format!("/usr/bin/{}", services[i as usize % services.len()]),
            service: services[i as usize % services.len()].into(),
            version: format!("1.{}", i % 3),
            container_id: format!("{:016x}", i * 7919),
            cgroup: format!("/kubepods/pod{i}"),
            build_id: format!("{:040x}", i),
        })
        .collect();
    let frames: Vec<pb::Frame> = (0..600u64)
        .map(|i| pb::Frame {
            function: format!(
                "crate_{}::module_{}::function_with_a_realistic_name_{i}",
                i % 13,
                i % 37
            ),
            module: format!("/usr/bin/{}", services[(i % 8) as usize]),
            build_id: format!("{:040x}", i % 8),
            file: format!("src/module_{}.rs", i % 37),
            line: (i * 17 % 900) as u32,
            module_offset: i * 64,
            ..Default::default()
        })
        .collect();
    let stacks: Vec<pb::Stack> = (0..1500)
        .map(|_| {
            if !pool.is_empty() && rng.random_bool(reuse) {
                pool[rng.random_range(0..pool.len())].clone()
            } else {
                random_stack(rng)
            }
        })
        .collect();
    let zipf = Zipf::new(1500.0, 1.1).unwrap();
    let samples: Vec<pb::Sample> = (0..2000)
        .map(|_| {
            let p = rng.random_range(0..40u32);
            pb::Sample {
                process_index: p,
                stack_index: zipf.sample(rng) as u32 - 1,
                tid: 1000 + p * 10 + rng.random_range(0..8),
                thread_name: "worker".into(),
                count: rng.random_range(1..20),
            }
        })
        .collect();
    pb::ProfileBatch {
        protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
        host: Some(pb::HostIdentity {
            hostname: format!("host-{host:03}"),
            host_id: format!("machine-{host:03}"),
            boot_id: "boot".into(),
            ..Default::default()
        }),
        sequence,
        start_time_unix_nanos: end - 10_000_000_000,
        end_time_unix_nanos: end,
        frequency_hz: 19,
        processes,
        frames,
        stacks,
        samples,
        energy: Some(pb::Energy {
            available: false,
            unavailable_reason: "bench".into(),
            ..Default::default()
        }),
        losses: Some(pb::LossCounters::default()),
    }
}

/// CPU seconds `f` takes.
fn cpu_of<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let c = cpu_time();
    let out = f();
    (out, (cpu_time() - c).as_secs_f64())
}

/// The collector's per-batch CPU outside gRPC and the writer, on the same batches: protobuf
/// decoding, validation, and the id hashes (XXH3-64 as stored, SHA-256 as before).
fn cpu_split(batches: &[pb::ProfileBatch], m: f64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let encoded: Vec<Vec<u8>> = batches.iter().map(|b| b.encode_to_vec()).collect();
    let (decoded, decode) = cpu_of(|| {
        encoded
            .iter()
            .map(|e| pb::ProfileBatch::decode(e.as_slice()).unwrap())
            .collect::<Vec<_>>()
    });
    let (validated, validate_cpu) = cpu_of(|| {
        decoded
            .iter()
            .map(|b| validate(b, &Limits::default(), now).unwrap())
            .collect::<Vec<_>>()
    });
    // The bytes each id hashes (see `frame_id` and `stack_id`), then both hashes over them.
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for b in &validated {
        for f in &b.frames {
            let mut bytes = Vec::new();
            for part in [&f.function, &f.module, &f.build_id, &f.file] {
                bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
                bytes.extend_from_slice(part.as_bytes());
            }
            bytes.extend_from_slice(&f.line.to_le_bytes());
            bytes.extend_from_slice(&[u8::from(f.inlined), u8::from(f.kernel)]);
            inputs.push(bytes);
        }
        for s in &b.stacks {
            inputs.push(s.frame_ids.iter().flat_map(|id| id.to_le_bytes()).collect());
        }
    }
    let (x, xxh3) = cpu_of(|| {
        inputs
            .iter()
            .fold(0u64, |a, i| a ^ twox_hash::XxHash3_64::oneshot(i))
    });
    let (y, sha) = cpu_of(|| {
        inputs.iter().fold(0u64, |a, i| {
            let d = sha2::Sha256::digest(i);
            a ^ u64::from_le_bytes(d[..8].try_into().unwrap())
        })
    });
    std::hint::black_box((x, y));
    println!(
        "  collector CPU outside the writer, per million samples: decode {:.3} s, validate {:.3} s (ids included)",
        decode / m,
        validate_cpu / m
    );
    println!(
        "  ids alone ({} frame and stack ids): XXH3-64 {:.3} s, SHA-256 {:.3} s per million samples",
        inputs.len(),
        xxh3 / m,
        sha / m
    );
}

fn main() {
    let hosts = env("HOSTS", 50);
    let in_flight = env(
        "GROUPS_IN_FLIGHT",
        WriterConfig::default().max_groups_in_flight,
    );
    let per_host = env("BATCHES_PER_HOST", 20);
    let reuse = env_f64("STACK_REUSE", 0.95).clamp(0.0, 1.0);
    let pool_size = env("STACK_POOL", 20_000);
    let clickhouse = LocalClickHouse::start().unwrap_or_else(|e| panic!("ingest bench: {e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        // Prepared before timing: generating batches is the hosts' work, not the collector's.
        let pool: Vec<pb::Stack> = (0..pool_size).map(|_| random_stack(&mut rng)).collect();
        let batches: Vec<Vec<pb::ProfileBatch>> = (0..hosts)
            .map(|h| {
                (1..=per_host as u64)
                    .map(|s| realistic_batch(h, s, &mut rng, &pool, reuse))
                    .collect()
            })
            .collect();
        let distinct_stacks = {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            let mut ids = std::collections::HashSet::new();
            for b in batches.iter().flatten() {
                let v = validate(b, &Limits::default(), now).unwrap();
                ids.extend(v.stacks.iter().map(|s| s.stack_id));
            }
            ids.len()
        };
        let rows: usize = batches.iter().flatten().map(|b| b.samples.len()).sum();
        let samples: u64 = batches.iter().flatten().flat_map(|b| &b.samples).map(|s| s.count).sum();

        let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("bench")).await.unwrap();
        store.migrate().await.unwrap();
        let config = IngestConfig {
            writer: WriterConfig { max_groups_in_flight: in_flight, ..WriterConfig::default() },
            ..IngestConfig::default()
        };
        let collector = RunningCollector::start(store.clone(), config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = collector.local_addr();

        // Each host's connection is made and its batches encoded before timing (the hosts' work).
        let mut hosts_ready = Vec::new();
        for host_batches in &batches {
            let channel = tonic::transport::Endpoint::new(format!("http://{addr}")).unwrap().connect().await.unwrap();
            let encoded: Vec<Vec<u8>> = host_batches.iter().map(|b| b.encode_to_vec()).collect();
            hosts_ready.push((channel, encoded));
        }
        let server = clickhouse.pid();
        quiesce(&store).await;
        let (cpu0, ch0, t0) = (cpu_time(), process_cpu_time(server), Instant::now());
        let mut tasks = Vec::new();
        for (channel, encoded) in hosts_ready {
            tasks.push(tokio::spawn(async move {
                for b in encoded {
                    let r = push_encoded(channel.clone(), b).await;
                    assert!(!r.duplicate);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (grpc_wall, grpc_cpu) = (t0.elapsed(), cpu_time() - cpu0);
        let grpc_ch = process_cpu_time(server) - ch0;
        let stored = store.stored_sample_count().await.unwrap();
        assert_eq!(stored, samples, "every sample stored once");
        let groups = collector.stats().groups.load(std::sync::atomic::Ordering::Relaxed);
        collector.shutdown().await;

        // Baseline: the same batches, already validated, written by the store directly into a
        // fresh database (no gRPC, no dedup look-up), in groups of the same size.
        let base = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("bench_baseline")).await.unwrap();
        base.migrate().await.unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        let validated: Vec<Batch> =
            batches.iter().flatten().map(|b| validate(b, &Limits::default(), now).unwrap()).collect();
        let group = (validated.len() / groups.max(1) as usize).max(1);
        quiesce(&base).await;
        let (cpu1, ch1, t1) = (cpu_time(), process_cpu_time(server), Instant::now());
        let (mut known_stacks, mut known_frames) = Default::default();
        let mut rollup_rows = 0;
        for chunk in validated.chunks(group) {
            let refs: Vec<&Batch> = chunk.iter().collect();
            let outcome = base.write_batches(&refs, &Default::default(), &mut known_stacks, &mut known_frames).await.unwrap();
            rollup_rows += outcome.function_minute_rows;
        }
        let (base_wall, base_cpu) = (t1.elapsed(), cpu_time() - cpu1);
        let base_ch = process_cpu_time(server) - ch1;
        let base_samples = base.stored_sample_count().await.unwrap();
        assert_eq!(base_samples, samples);

        // Baseline 2: rows of the same width straight into a fresh `samples`, 100k per INSERT.
        let direct = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("bench_direct")).await.unwrap();
        direct.migrate().await.unwrap();
        let rows_direct: Vec<SampleRow<'_>> = validated
            .iter()
            .flat_map(|b| b.samples.iter().map(move |s| SampleRow::new(b, s)))
            .collect();
        quiesce(&direct).await;
        let (cpu2, ch2, t2) = (cpu_time(), process_cpu_time(server), Instant::now());
        for chunk in rows_direct.chunks(100_000) {
            let mut insert = direct.client().insert::<SampleRow<'_>>("samples").await.unwrap();
            for r in chunk {
                insert.write(r).await.unwrap();
            }
            insert.end().await.unwrap();
        }
        let (direct_wall, direct_cpu) = (t2.elapsed(), cpu_time() - cpu2);
        let direct_ch = process_cpu_time(server) - ch2;
        let direct_rows: u64 = direct.client().query("SELECT count() FROM samples").fetch_one().await.unwrap();
        assert_eq!(direct_rows as usize, rows);

        let m = samples as f64 / 1e6;
        println!("ingest bench: {hosts} hosts x {per_host} batches = {} batches, {rows} sample rows, {samples} samples", hosts * per_host);
        println!(
            "  stacks: 1500 per batch, {:.0}% drawn from a fleet pool of {pool_size} (STACK_REUSE, STACK_POOL); {distinct_stacks} distinct stacks in the run",
            reuse * 100.0
        );
        println!(
            "  gRPC -> collector -> ClickHouse: {:.2} s, {:.0} sample rows/s, {:.0} samples/s stored, {} INSERT groups, up to {in_flight} at once (GROUPS_IN_FLIGHT)",
            grpc_wall.as_secs_f64(),
            rows as f64 / grpc_wall.as_secs_f64(),
            samples as f64 / grpc_wall.as_secs_f64(),
            groups
        );
        println!(
            "  CPU (this process: the gRPC clients sending pre-encoded batches + collector; ClickHouse not counted): {:.2} s = {:.3} CPU-s per million samples",
            grpc_cpu.as_secs_f64(),
            grpc_cpu.as_secs_f64() / m
        );
        println!(
            "  baseline, store.write_batches directly (no gRPC, no validation, no dedup): {:.2} s, {:.0} sample rows/s, {:.3} CPU-s per million samples",
            base_wall.as_secs_f64(),
            rows as f64 / base_wall.as_secs_f64(),
            base_cpu.as_secs_f64() / m
        );
        println!(
            "  rows the store wrote besides `samples` in that baseline: {rollup_rows} into function_minutes (in {} groups), {} into processes, stacks as above",
            validated.len().div_ceil(group),
            validated.iter().map(|b| b.processes.len()).sum::<usize>()
        );
        println!(
            "  ratio collector / baseline: wall {:.2}x, CPU {:.2}x",
            grpc_wall.as_secs_f64() / base_wall.as_secs_f64(),
            grpc_cpu.as_secs_f64() / base_cpu.as_secs_f64()
        );
        println!(
            "  direct baseline, the same {rows} rows of `samples` width straight into ClickHouse (100k-row INSERTs): {:.2} s, {:.0} rows/s",
            direct_wall.as_secs_f64(),
            rows as f64 / direct_wall.as_secs_f64()
        );
        println!(
            "  ratio end to end / direct baseline: {:.2}x the time (target within 2x)",
            grpc_wall.as_secs_f64() / direct_wall.as_secs_f64()
        );
        println!(
            "  CPU-s per million samples, this process + ClickHouse (merges under way included): end to end {:.3} + {:.3}, store directly {:.3} + {:.3}, direct baseline {:.3} + {:.3}",
            grpc_cpu.as_secs_f64() / m,
            grpc_ch.as_secs_f64() / m,
            base_cpu.as_secs_f64() / m,
            base_ch.as_secs_f64() / m,
            direct_cpu.as_secs_f64() / m,
            direct_ch.as_secs_f64() / m
        );
        cpu_split(&batches.iter().flatten().cloned().collect::<Vec<_>>(), m);
        let _ = Arc::new(());
    });
    drop(clickhouse);
}
