//! Shipping: a [`SymbolizedProfile`] becomes a wire [`ProfileBatch`](pb::ProfileBatch)
//! ([`to_batch`]) and is pushed to the collector's `Ingest` service by a [`Shipper`] (tonic;
//! bearer token; TLS for `https://`).
//!
//! What a failed push means for the batch is decided by [`classify`]: transient failures
//! (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, and anything unexpected) are retried
//! with exponential backoff and jitter ([`Backoff`]) while the batch waits in the spool;
//! INVALID_ARGUMENT and FAILED_PRECONDITION mean this batch will never be accepted, so it is moved
//! to the spool's `rejected/` folder and the collector's message is logged.
//!
//! ```no_run
//! # async fn demo(profile: fleetprof_profiler::profile::SymbolizedProfile) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use fleetprof_profiler::ship::{HostInfo, Shipper, ShipperConfig, to_batch};
//! let host = HostInfo::detect()?;
//! let batch = to_batch(&profile, &host.identity(), 1);
//! let mut shipper = Shipper::new(&ShipperConfig::new("http://collector:4317"))?;
//! let response = shipper.push(&batch).await?;
//! println!("stored {} samples", response.samples_stored);
//! # Ok(()) }
//! ```

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, UNIX_EPOCH},
};

use fleetprof_proto::fleetprof::v1 as pb;
use tonic::{
    Code, Status,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::{energy::EnergyReport, profile::SymbolizedProfile};

/// The profiler's version, sent as `agent_version`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why shipping could not be set up or a push failed.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// A host identity file could not be read.
    #[error("cannot read {}", path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The collector URL is not a valid endpoint.
    #[error("invalid collector URL {url:?}")]
    Url {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS settings could not be applied.
    #[error("cannot set up TLS to the collector")]
    Tls(#[source] tonic::transport::Error),
    /// The token or CA file could not be read, or the token is not a valid header value.
    #[error("bad credentials file {}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The collector answered with an error status (or could not be reached).
    #[error("push failed: {}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
}

/// The host's identity, read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// uname nodename.
    pub hostname: String,
    /// `/etc/machine-id`.
    pub host_id: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// uname release.
    pub kernel_release: String,
}

impl HostInfo {
    /// Reads the identity of this host. The machine id and boot id are required: without them
    /// the collector cannot deduplicate retried batches.
    pub fn detect() -> Result<Self, ShipError> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|source| ShipError::Identity {
                    path: path.into(),
                    source,
                })
        };
        let (hostname, kernel_release) = uname();
        Ok(Self {
            hostname,
            host_id: read("/etc/machine-id")?,
            boot_id: read("/proc/sys/kernel/random/boot_id")?,
            kernel_release,
        })
    }

    /// The wire form, with this profiler's version.
    pub fn identity(&self) -> pb::HostIdentity {
        pb::HostIdentity {
            hostname: self.hostname.clone(),
            host_id: self.host_id.clone(),
            boot_id: self.boot_id.clone(),
            kernel_release: self.kernel_release.clone(),
            agent_version: AGENT_VERSION.to_owned(),
        }
    }
}

/// (nodename, release) from uname(2); empty strings if it fails.
fn uname() -> (String, String) {
    // SAFETY: utsname is plain old data; uname fills it and NUL-terminates every field.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&uts.nodename), field(&uts.release))
}

/// Converts a window's profile into a batch numbered `sequence`.
///
/// Only frames and processes that samples use are sent; frames are deduplicated by their wire
/// form, stacks by their frame-index list, and samples are summed per (process, stack, thread),
/// so the batch's total count equals the profile's. A sample without frames gets one
/// `[unknown]` frame (the collector refuses empty stacks). Processes and loss counters are the
/// wire's own types and go as they are; the spool adds its drop counters (a profile's are zero).
pub fn to_batch(
    profile: &SymbolizedProfile,
    host: &pb::HostIdentity,
    sequence: u64,
) -> pb::ProfileBatch {
    let mut frames: Vec<pb::Frame> = Vec::new();
    let mut frame_index: HashMap<FrameKey, u32> = HashMap::new();
    let mut frame_map: HashMap<u32, u32> = HashMap::new();
    let mut stacks: Vec<pb::Stack> = Vec::new();
    let mut stack_index: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut processes: Vec<pb::Process> = Vec::new();
    let mut process_map: HashMap<u32, u32> = HashMap::new();
    let mut samples: Vec<pb::Sample> = Vec::new();
    let mut sample_index: HashMap<(u32, u32, u32), usize> = HashMap::new();

    let mut intern_frame = |frame: pb::Frame| -> u32 {
        let next = frames.len() as u32;
        *frame_index.entry(frame_key(&frame)).or_insert_with(|| {
            frames.push(frame);
            next
        })
    };

    for sample in &profile.samples {
        if sample.count == 0 {
            continue;
        }
        let mut indexes = Vec::with_capacity(sample.stack.len().max(1));
        for &id in &sample.stack {
            let index = match frame_map.get(&id) {
                Some(&i) => i,
                None => {
                    let i = intern_frame(wire_frame(&profile.frames[id as usize]));
                    frame_map.insert(id, i);
                    i
                }
            };
            indexes.push(index);
        }
        if indexes.is_empty() {
            indexes.push(intern_frame(pb::Frame {
                function: "[unknown]".to_owned(),
                ..Default::default()
            }));
        }
        let next_stack = stacks.len() as u32;
        let stack = *stack_index.entry(indexes.clone()).or_insert_with(|| {
            stacks.push(pb::Stack {
                frame_indexes: indexes,
            });
            next_stack
        });
        let process = *process_map.entry(sample.process).or_insert_with(|| {
            processes.push(profile.processes[sample.process as usize].clone());
            (processes.len() - 1) as u32
        });
        match sample_index.get(&(process, stack, sample.tid)) {
            Some(&i) => samples[i].count += sample.count,
            None => {
                sample_index.insert((process, stack, sample.tid), samples.len());
                samples.push(pb::Sample {
                    process_index: process,
                    stack_index: stack,
                    tid: sample.tid,
                    thread_name: sample.thread_name.clone(),
                    count: sample.count,
                });
            }
        }
    }

    let start = profile
        .start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let end = start + profile.duration.as_nanos() as u64;
    let energy = wire_energy(&profile.energy, &processes);
    pb::ProfileBatch {
        protocol_version: fleetprof_proto::PROTOCOL_VERSION as i32,
        host: Some(host.clone()),
        sequence,
        start_time_unix_nanos: start,
        // The collector refuses empty windows; a window always lasts at least a nanosecond.
        end_time_unix_nanos: end.max(start + 1),
        frequency_hz: profile.frequency_hz,
        processes,
        frames,
        stacks,
        samples,
        energy: Some(energy),
        losses: Some(profile.losses),
    }
}

/// Everything that tells wire frames apart (prost messages are not `Hash`).
type FrameKey = (String, String, String, String, u32, bool, u64, bool);

fn frame_key(f: &pb::Frame) -> FrameKey {
    (
        f.function.clone(),
        f.module.clone(),
        f.build_id.clone(),
        f.file.clone(),
        f.line,
        f.inlined,
        f.module_offset,
        f.kernel,
    )
}

fn wire_frame(f: &crate::profile::Frame) -> pb::Frame {
    pb::Frame {
        // The wire says "empty when it could not be symbolized"; the collector names it by offset.
        function: if f.symbolized {
            f.function.clone()
        } else {
            String::new()
        },
        module: f.module.clone(),
        build_id: f.build_id.clone().unwrap_or_default(),
        file: f.file.clone().unwrap_or_default(),
        line: f.line.unwrap_or(0),
        inlined: f.inlined,
        module_offset: f.address,
        kernel: f.kernel,
    }
}

fn wire_energy(report: &EnergyReport, processes: &[pb::Process]) -> pb::Energy {
    match report {
        EnergyReport::Unavailable { reason } => pb::Energy {
            available: false,
            unavailable_reason: reason.clone(),
            ..Default::default()
        },
        EnergyReport::Measured {
            source,
            domains,
            processes: per_pid,
            interval_secs,
            method,
            busy_ratio,
            busy_cpu_secs,
            total_cpu_secs,
            ..
        } => pb::Energy {
            method: method.clone(),
            busy_ratio: *busy_ratio,
            busy_cpu_seconds: *busy_cpu_secs,
            total_cpu_seconds: *total_cpu_secs,
            interval_seconds: *interval_secs,
            available: true,
            unavailable_reason: String::new(),
            source: if source == "powercap" {
                source.clone()
            } else {
                "perf-power".to_owned()
            },
            domains: domains
                .iter()
                .map(|d| pb::DomainEnergy {
                    domain: d.domain.clone(),
                    joules: d.joules,
                    basis: d.basis,
                    active_joules: d.active_joules,
                    idle_joules: d.idle_joules,
                })
                .collect(),
            // Energy is per pid; a pid that is in the batch gets it on its first process entry.
            processes: per_pid
                .iter()
                .filter_map(|p| {
                    let index = processes.iter().position(|q| q.pid == p.pid)?;
                    Some(pb::ProcessEnergy {
                        process_index: index as u32,
                        joules: p.joules,
                        cpu_seconds: p.cpu_secs,
                        dram_joules: p.dram_joules,
                    })
                })
                .collect(),
        },
    }
}

/// What to do with a batch after a failed push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Keep it in the spool and try again after a backoff.
    Retry,
    /// The collector will never accept it: move it to `rejected/` and go on with the next.
    Reject,
}

/// Decides what a failed push means for the batch. Only answers that are about the batch itself
/// (malformed, unknown version) reject it; every other failure, including UNAUTHENTICATED (a
/// token that can be fixed), keeps it for a retry, so no data is lost to a misconfiguration.
pub fn classify(code: Code) -> Disposition {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition => Disposition::Reject,
        _ => Disposition::Retry,
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in `[d/2, d]` with
/// `d = min(initial * 2^n, max)`, so many hosts coming back at once do not push in lockstep.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// The wait before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.initial.saturating_mul(1 << exp).min(self.max);
        let half = ceiling / 2;
        let jitter = rand::random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// Forgets past failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// How to reach the collector.
#[derive(Clone, Debug)]
pub struct ShipperConfig {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// File holding the bearer token. Default: none.
    pub token_file: Option<PathBuf>,
    /// PEM CA for a private collector certificate. Default: none (Web PKI roots).
    pub tls_ca_file: Option<PathBuf>,
    /// Connection timeout. Default: 5 s.
    pub connect_timeout: Duration,
    /// Whole-push timeout. Default: 15 s.
    pub request_timeout: Duration,
}

impl ShipperConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token_file: None,
            tls_ca_file: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// A gRPC client of the collector's `Ingest` service. The connection is opened lazily and
/// re-opened by tonic after failures, so a collector that is down at start is not an error.
#[derive(Debug, Clone)]
pub struct Shipper {
    client: pb::ingest_client::IngestClient<Channel>,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Shipper {
    /// Sets up the client (no connection is made yet). Call it inside a tokio runtime (tonic
    /// spawns the lazy channel's worker there).
    pub fn new(config: &ShipperConfig) -> Result<Self, ShipError> {
        let mut endpoint =
            Endpoint::from_shared(config.url.clone()).map_err(|source| ShipError::Url {
                url: config.url.clone(),
                source,
            })?;
        endpoint = endpoint
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .tcp_nodelay(true)
            // Notice a dead collector between pushes rather than at the next push's timeout.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if config.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(ca) = &config.tls_ca_file {
                let pem = std::fs::read(ca).map_err(|e| ShipError::Credentials {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(ShipError::Tls)?;
        }
        let authorization = match &config.token_file {
            None => None,
            Some(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| ShipError::Credentials {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(ShipError::Credentials {
                        path: path.clone(),
                        reason: "the token file is empty".to_owned(),
                    });
                }
                Some(
                    format!("Bearer {token}")
                        .parse()
                        .map_err(|_| ShipError::Credentials {
                            path: path.clone(),
                            reason: "the token holds characters not allowed in an HTTP header"
                                .to_owned(),
                        })?,
                )
            }
        };
        let client = pb::ingest_client::IngestClient::new(endpoint.connect_lazy())
            // Batches of a busy host can pass tonic's 4 MiB default; the collector allows 64 MiB.
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Ok(Self {
            client,
            authorization,
        })
    }

    /// Pushes one batch, once (retries are the caller's, who owns the spool).
    pub async fn push(&mut self, batch: &pb::ProfileBatch) -> Result<pb::PushResponse, ShipError> {
        let mut request = tonic::Request::new(batch.clone());
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        Ok(self.client.push(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::profile::{Frame, LossCounters, Process, ProfileBuilder};

    fn frame(name: &str, address: u64) -> Frame {
        Frame {
            function: name.to_owned(),
            module: "/bin/app".to_owned(),
            build_id: Some("ab".to_owned()),
            file: None,
            line: None,
            inlined: false,
            address,
            kernel: false,
            symbolized: true,
        }
    }

    fn profile() -> SymbolizedProfile {
        let mut b = ProfileBuilder::new(19);
        b.add_window(
            Some(SystemTime::now()),
            Duration::from_secs(10),
            &LossCounters {
                recorded: 60,
                stack_collisions: 2,
                ..Default::default()
            },
        );
        let p1 = b.intern_process(Process {
            pid: 10,
            service: "svc".into(),
            ..Default::default()
        });
        let p2 = b.intern_process(Process {
            pid: 11,
            ..Default::default()
        });
        let main = b.intern_frame(frame("main", 1));
        let hot = b.intern_frame(frame("hot", 2));
        let unknown = b.intern_frame(Frame {
            symbolized: false,
            function: "/bin/app+0x3".into(),
            ..frame("", 3)
        });
        // Same stack in two threads and two processes; the same tid under two thread names.
        b.add_sample(p1, 100, "a", vec![hot, main], 20);
        b.add_sample(p1, 101, "b", vec![hot, main], 10);
        b.add_sample(p1, 100, "renamed", vec![hot, main], 5);
        b.add_sample(p2, 200, "c", vec![hot, main], 7);
        b.add_sample(p2, 200, "c", vec![unknown, main], 3);
        b.add_sample(p2, 200, "c", vec![], 15);
        b.finish(EnergyReport::Measured {
            source: "powercap".into(),
            interval_secs: 10.0,
            domains: vec![crate::energy::DomainEnergy {
                domain: "package-0".into(),
                joules: 50.0,
                basis: true,
                active_joules: 50.0,
                idle_joules: 0.0,
            }],
            measured_joules: 50.0,
            attributed_joules: 50.0,
            idle_joules: 0.0,
            busy_ratio: 1.0,
            busy_cpu_secs: 20.0,
            total_cpu_secs: 20.0,
            processes: vec![
                crate::energy::ProcessEnergy {
                    pid: 10,
                    cpu_secs: 14.0,
                    joules: 35.0,
                    dram_joules: 0.0,
                },
                crate::energy::ProcessEnergy {
                    pid: 11,
                    cpu_secs: 6.0,
                    joules: 15.0,
                    dram_joules: 0.0,
                },
            ],
            method: "share".into(),
        })
    }

    fn host() -> pb::HostIdentity {
        pb::HostIdentity {
            host_id: "h".into(),
            boot_id: "b".into(),
            ..Default::default()
        }
    }

    /// Every index in the batch is in range, and the total count equals the profile's.
    #[test]
    fn indexes_in_range_and_counts_conserved() {
        let profile = profile();
        let batch = to_batch(&profile, &host(), 7);
        assert_eq!(batch.sequence, 7);
        for s in &batch.samples {
            assert!((s.process_index as usize) < batch.processes.len());
            assert!((s.stack_index as usize) < batch.stacks.len());
            assert!(s.count > 0);
        }
        for st in &batch.stacks {
            assert!(!st.frame_indexes.is_empty());
            assert!(
                st.frame_indexes
                    .iter()
                    .all(|&f| (f as usize) < batch.frames.len())
            );
        }
        for p in &batch.energy.as_ref().unwrap().processes {
            assert!((p.process_index as usize) < batch.processes.len());
        }
        let total: u64 = batch.samples.iter().map(|s| s.count).sum();
        assert_eq!(total, profile.total_samples());
        assert_eq!(total, 60);
        assert!(batch.end_time_unix_nanos - batch.start_time_unix_nanos == 10_000_000_000);
        let losses = batch.losses.unwrap();
        assert_eq!((losses.recorded, losses.stack_collisions), (60, 2));
    }

    /// Frames and stacks appear once each; samples merge per (process, stack, tid).
    #[test]
    fn frames_and_stacks_deduplicated() {
        let batch = to_batch(&profile(), &host(), 1);
        // main, hot, the unsymbolized frame, [unknown].
        assert_eq!(batch.frames.len(), 4);
        let unique: std::collections::HashSet<_> = batch.frames.iter().map(frame_key).collect();
        assert_eq!(unique.len(), batch.frames.len());
        // [hot, main], [unknown, main], [[unknown]].
        assert_eq!(batch.stacks.len(), 3);
        let unique: std::collections::HashSet<_> =
            batch.stacks.iter().map(|s| &s.frame_indexes).collect();
        assert_eq!(unique.len(), batch.stacks.len());
        // tid 100's two names merge: (p1,100)=25, (p1,101)=10, (p2,200) x 3 stacks.
        assert_eq!(batch.samples.len(), 5);
        let tid100: u64 = batch
            .samples
            .iter()
            .filter(|s| s.tid == 100)
            .map(|s| s.count)
            .sum();
        assert_eq!(tid100, 25);
        // Unsymbolized frames are sent without a name, with their offset.
        assert!(
            batch
                .frames
                .iter()
                .any(|f| f.function.is_empty() && f.module_offset == 3)
        );
        // Leaf first is kept.
        let hot_main = &batch.stacks[batch.samples[0].stack_index as usize];
        assert_eq!(
            batch.frames[hot_main.frame_indexes[0] as usize].function,
            "hot"
        );
    }

    /// Measured energy keeps its domains and attributes joules to the right process index.
    #[test]
    fn energy_converted() {
        let batch = to_batch(&profile(), &host(), 1);
        let energy = batch.energy.unwrap();
        assert!(energy.available);
        assert_eq!(energy.domains.len(), 1);
        for p in &energy.processes {
            let pid = batch.processes[p.process_index as usize].pid;
            assert_eq!(p.joules, if pid == 10 { 35.0 } else { 15.0 });
        }
        let unavailable = wire_energy(&EnergyReport::unavailable("no RAPL"), &[]);
        assert!(!unavailable.available);
        assert_eq!(unavailable.unavailable_reason, "no RAPL");
    }

    /// Malformed and unknown-version answers reject; transient ones (and auth) retry.
    #[test]
    fn retry_classification() {
        for code in [Code::InvalidArgument, Code::FailedPrecondition] {
            assert_eq!(classify(code), Disposition::Reject, "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Unauthenticated,
            Code::Internal,
            Code::Unknown,
        ] {
            assert_eq!(classify(code), Disposition::Retry, "{code:?}");
        }
    }

    /// Backoff grows, stays within [d/2, d] of its cap, and starts over after a reset.
    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1), "{d:?}");
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_millis(500), "{capped:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    /// The host identity carries this profiler's version and a non-empty kernel release.
    #[test]
    fn host_identity_has_versions() {
        let (_, release) = uname();
        assert!(!release.is_empty());
        let info = HostInfo {
            hostname: "h".into(),
            host_id: "m".into(),
            boot_id: "b".into(),
            kernel_release: release,
        };
        assert_eq!(info.identity().agent_version, AGENT_VERSION);
    }
}
