//! Validation: a wire `ProfileBatch` becomes a [`Batch`] only when every field is sane;
//! otherwise the whole batch is refused with a message saying what was wrong.

use std::collections::HashMap;
use std::sync::Arc;

use fleetprof_proto::fleetprof::v1 as pb;
use prost::Message;

use crate::store::{
    Batch, BatchKey, EnergyReading, SampleInfo, StackInfo, StoredFrame, frame_id, stack_id,
};

/// Size and time limits a batch must respect.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most samples in one batch. Default 1,000,000.
    pub max_samples: usize,
    /// Most stacks. Default 500,000.
    pub max_stacks: usize,
    /// Most frames. Default 1,000,000.
    pub max_frames: usize,
    /// Most processes. Default 100,000.
    pub max_processes: usize,
    /// Deepest stack. Default 1,024 frames.
    pub max_stack_depth: usize,
    /// Largest encoded batch. Default 64 MiB.
    pub max_bytes: usize,
    /// Longest window (end - start). Default 1 h.
    pub max_window_ns: u64,
    /// Oldest window start accepted, relative to now. Default 30 days.
    pub max_age_ns: u64,
    /// Furthest a window may end in the future (clock skew). Default 10 min.
    pub max_future_ns: u64,
    /// Longest string (a function name, path, service, thread name, …), in bytes. Default 16 KiB.
    pub max_string_bytes: usize,
    /// Most bytes the batch may expand to once decoded: each stack's function names, and each
    /// sample row's stack as stored (frames × stacks × rows). Default 256 MiB.
    pub max_expanded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_samples: 1_000_000,
            max_stacks: 500_000,
            max_frames: 1_000_000,
            max_processes: 100_000,
            max_stack_depth: 1024,
            max_bytes: 64 << 20,
            max_window_ns: 3_600 * 1_000_000_000,
            max_age_ns: 30 * 86_400 * 1_000_000_000,
            max_future_ns: 600 * 1_000_000_000,
            max_string_bytes: 16 << 10,
            max_expanded_bytes: 256 << 20,
        }
    }
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// `protocol_version` is not one this collector speaks.
    #[error(
        "unsupported protocol_version {0} (this collector speaks {known}); upgrade the collector \
         or downgrade the profiler",
        known = pb::ProtocolVersion::ProtocolVersion1 as i32
    )]
    UnknownVersion(i32),
    /// Anything else: the message names the field.
    #[error("invalid batch: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ValidationError {
    ValidationError::Invalid(msg.into())
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), ValidationError> {
    if len > max {
        return Err(invalid(format!(
            "{len} {what}, more than the limit of {max}"
        )));
    }
    Ok(())
}

/// A frame's function name, or `module+0xoffset` when it was not symbolized.
fn function_name(frame: &pb::Frame) -> String {
    if !frame.function.is_empty() {
        return frame.function.clone();
    }
    let module = frame.module.rsplit('/').next().unwrap_or("");
    let module = if module.is_empty() {
        "[unknown]"
    } else {
        module
    };
    format!("{module}+0x{:x}", frame.module_offset)
}

/// Every string of the batch is at most `max` bytes.
fn check_strings(batch: &pb::ProfileBatch, max: usize) -> Result<(), ValidationError> {
    let check = |what: &dyn Fn() -> String, s: &str| {
        if s.len() > max {
            Err(invalid(format!(
                "{} is {} bytes, more than the limit of {max}",
                what(),
                s.len()
            )))
        } else {
            Ok(())
        }
    };
    if let Some(h) = &batch.host {
        for (name, v) in [
            ("hostname", &h.hostname),
            ("host_id", &h.host_id),
            ("boot_id", &h.boot_id),
            ("kernel_release", &h.kernel_release),
            ("agent_version", &h.agent_version),
        ] {
            check(&|| format!("host.{name}"), v)?;
        }
    }
    for (i, p) in batch.processes.iter().enumerate() {
        for (name, v) in [
            ("comm", &p.comm),
            ("exe", &p.exe),
            ("service", &p.service),
            ("version", &p.version),
            ("container_id", &p.container_id),
            ("cgroup", &p.cgroup),
            ("build_id", &p.build_id),
        ] {
            check(&|| format!("processes[{i}].{name}"), v)?;
        }
    }
    for (i, f) in batch.frames.iter().enumerate() {
        for (name, v) in [
            ("function", &f.function),
            ("module", &f.module),
            ("build_id", &f.build_id),
            ("file", &f.file),
        ] {
            check(&|| format!("frames[{i}].{name}"), v)?;
        }
    }
    for (i, smp) in batch.samples.iter().enumerate() {
        check(&|| format!("samples[{i}].thread_name"), &smp.thread_name)?;
    }
    if let Some(e) = &batch.energy {
        check(&|| "energy.source".into(), &e.source)?;
        check(
            &|| "energy.unavailable_reason".into(),
            &e.unavailable_reason,
        )?;
        for (i, d) in e.domains.iter().enumerate() {
            check(&|| format!("energy.domains[{i}].domain"), &d.domain)?;
        }
    }
    Ok(())
}

/// The stored function name's length of `frame` (see [`function_name`]).
fn function_name_len(frame: &pb::Frame) -> usize {
    if frame.function.is_empty() {
        frame.module.rsplit('/').next().map_or(0, str::len).max(9) + 19
    } else {
        frame.function.len()
    }
}

/// The batch's size once decoded and expanded, computed from lengths and indexes before anything
/// is built, so an amplifying batch is refused without the memory it would take.
fn check_expansion(batch: &pb::ProfileBatch, limits: &Limits) -> Result<(), ValidationError> {
    const PER_FRAME: usize = 8 + std::mem::size_of::<String>();
    const PER_ROW: usize = 128;
    let name_len: Vec<usize> = batch.frames.iter().map(function_name_len).collect();
    let mut stack_bytes = Vec::with_capacity(batch.stacks.len());
    let mut total: usize = 0;
    for stack in &batch.stacks {
        let bytes = stack
            .frame_indexes
            .iter()
            .map(|&i| name_len.get(i as usize).copied().unwrap_or(0) + PER_FRAME)
            .fold(0usize, usize::saturating_add);
        stack_bytes.push(bytes);
        total = total.saturating_add(bytes);
    }
    for s in &batch.samples {
        let stack = stack_bytes
            .get(s.stack_index as usize)
            .copied()
            .unwrap_or(0);
        total = total
            .saturating_add(stack)
            .saturating_add(s.thread_name.len() + PER_ROW);
    }
    if total > limits.max_expanded_bytes {
        return Err(invalid(format!(
            "the batch expands to {total} bytes once decoded (function names × stack frames × \
             sample rows), more than the limit of {}; send smaller batches",
            limits.max_expanded_bytes
        )));
    }
    Ok(())
}

/// Checks `batch` against `limits` and the clock (`now_ns`), and converts it.
pub fn validate(
    batch: &pb::ProfileBatch,
    limits: &Limits,
    now_ns: u64,
) -> Result<Batch, ValidationError> {
    if batch.protocol_version != pb::ProtocolVersion::ProtocolVersion1 as i32 {
        return Err(ValidationError::UnknownVersion(batch.protocol_version));
    }
    check_len("bytes", batch.encoded_len(), limits.max_bytes)?;
    let host = batch
        .host
        .as_ref()
        .ok_or_else(|| invalid("host is missing"))?;
    if host.host_id.trim().is_empty() {
        return Err(invalid("host.host_id is empty"));
    }
    if host.boot_id.trim().is_empty() {
        return Err(invalid("host.boot_id is empty"));
    }
    if batch.sequence < 1 {
        return Err(invalid("sequence is 0; sequences start at 1"));
    }
    let (start, end) = (batch.start_time_unix_nanos, batch.end_time_unix_nanos);
    if start == 0 || end < start {
        return Err(invalid(format!(
            "time window [{start}, {end}] ns is empty or reversed (start_time_unix_nanos must be > 0 and <= end)"
        )));
    }
    if end - start > limits.max_window_ns {
        return Err(invalid(format!(
            "time window of {} s is longer than the limit of {} s",
            (end - start) / 1_000_000_000,
            limits.max_window_ns / 1_000_000_000
        )));
    }
    if end > now_ns.saturating_add(limits.max_future_ns) {
        return Err(invalid(format!(
            "time window ends {} s in the future; check the host's clock",
            (end - now_ns) / 1_000_000_000
        )));
    }
    if start < now_ns.saturating_sub(limits.max_age_ns) {
        return Err(invalid(format!(
            "time window starts {} days ago, older than the limit of {} days",
            (now_ns - start) / 86_400_000_000_000,
            limits.max_age_ns / 86_400_000_000_000
        )));
    }
    if u32::try_from(end / 1_000_000_000).is_err() {
        return Err(invalid("time window ends after 2106 (DateTime range)"));
    }
    check_len("processes", batch.processes.len(), limits.max_processes)?;
    check_len("frames", batch.frames.len(), limits.max_frames)?;
    check_len("stacks", batch.stacks.len(), limits.max_stacks)?;
    check_len("samples", batch.samples.len(), limits.max_samples)?;
    check_strings(batch, limits.max_string_bytes)?;
    check_expansion(batch, limits)?;

    let frames: Vec<StoredFrame> = batch
        .frames
        .iter()
        .map(|f| {
            let mut frame = StoredFrame {
                frame_id: 0,
                function: function_name(f),
                module: f.module.clone(),
                build_id: f.build_id.clone(),
                file: f.file.clone(),
                line: f.line,
                inlined: f.inlined,
                kernel: f.kernel,
                module_offset: f.module_offset,
            };
            frame.frame_id = frame_id(&frame);
            frame
        })
        .collect();

    // Each frame's name once, shared by every stack through it (a batch's stacks hold tens of
    // times more frames than the batch has).
    let names: Vec<Arc<str>> = frames
        .iter()
        .map(|f| Arc::from(f.function.as_str()))
        .collect();
    let mut stacks = Vec::with_capacity(batch.stacks.len());
    for (i, stack) in batch.stacks.iter().enumerate() {
        if stack.frame_indexes.is_empty() {
            return Err(invalid(format!("stacks[{i}] has no frames")));
        }
        if stack.frame_indexes.len() > limits.max_stack_depth {
            return Err(invalid(format!(
                "stacks[{i}] has {} frames, more than the limit of {}",
                stack.frame_indexes.len(),
                limits.max_stack_depth
            )));
        }
        let mut frame_ids = Vec::with_capacity(stack.frame_indexes.len());
        let mut functions = Vec::with_capacity(stack.frame_indexes.len());
        // The wire order is leaf first; stored root first.
        for &index in stack.frame_indexes.iter().rev() {
            let frame = frames.get(index as usize).ok_or_else(|| {
                invalid(format!(
                    "stacks[{i}] references frame {index}, but the batch has {} frames",
                    frames.len()
                ))
            })?;
            frame_ids.push(frame.frame_id);
            functions.push(names[index as usize].clone());
        }
        stacks.push(StackInfo {
            stack_id: stack_id(&frame_ids),
            frame_ids,
            functions,
        });
    }

    let processes: Vec<pb::Process> = batch
        .processes
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if p.service.is_empty() {
                p.service.clone_from(&p.comm);
            }
            p
        })
        .collect();

    let mut samples = Vec::with_capacity(batch.samples.len());
    for (i, s) in batch.samples.iter().enumerate() {
        if s.process_index as usize >= processes.len() {
            return Err(invalid(format!(
                "samples[{i}].process_index {} is out of range (the batch has {} processes)",
                s.process_index,
                processes.len()
            )));
        }
        if s.stack_index as usize >= stacks.len() {
            return Err(invalid(format!(
                "samples[{i}].stack_index {} is out of range (the batch has {} stacks)",
                s.stack_index,
                stacks.len()
            )));
        }
        if s.count == 0 {
            return Err(invalid(format!("samples[{i}].count is 0")));
        }
        samples.push(SampleInfo {
            process: s.process_index,
            stack: s.stack_index,
            tid: s.tid,
            thread: s.thread_name.clone(),
            count: s.count,
        });
    }
    // A sum that overflows u64 is not a real profile.
    samples
        .iter()
        .try_fold(0u64, |acc, s| acc.checked_add(s.count))
        .ok_or_else(|| invalid("sample counts overflow u64"))?;

    let energy = match &batch.energy {
        None => EnergyReading {
            available: false,
            unavailable_reason: "the profiler sent no energy section".to_owned(),
            ..EnergyReading::default()
        },
        Some(e) => {
            let mut domains = Vec::with_capacity(e.domains.len());
            for (i, d) in e.domains.iter().enumerate() {
                if d.domain.is_empty() || !d.joules.is_finite() || d.joules < 0.0 {
                    return Err(invalid(format!(
                        "energy.domains[{i}] needs a name and finite, non-negative joules (got {:?}, {})",
                        d.domain, d.joules
                    )));
                }
                domains.push((d.domain.clone(), d.joules));
            }
            let mut per_process = Vec::with_capacity(e.processes.len());
            for (i, p) in e.processes.iter().enumerate() {
                if p.process_index as usize >= processes.len() {
                    return Err(invalid(format!(
                        "energy.processes[{i}].process_index {} is out of range (the batch has {} processes)",
                        p.process_index,
                        processes.len()
                    )));
                }
                if !p.joules.is_finite() || p.joules < 0.0 {
                    return Err(invalid(format!(
                        "energy.processes[{i}].joules {} is not a finite, non-negative number",
                        p.joules
                    )));
                }
                per_process.push((p.process_index, p.joules));
            }
            let split = crate::store::energy::split_from_wire(e).map_err(invalid)?;
            if !e.available && (!domains.is_empty() || !per_process.is_empty()) {
                return Err(invalid(
                    "energy.available is false but energy readings are present",
                ));
            }
            EnergyReading {
                available: e.available,
                unavailable_reason: e.unavailable_reason.clone(),
                source: e.source.clone(),
                domains,
                processes: per_process,
                split,
            }
        }
    };

    let losses = batch.losses.unwrap_or_default();

    // Frames are deduplicated by id (two wire frames may hash alike, e.g. differing only in offset).
    let mut seen: HashMap<u64, ()> = HashMap::with_capacity(frames.len());
    let frames = frames
        .into_iter()
        .filter(|f| seen.insert(f.frame_id, ()).is_none())
        .collect();

    Ok(Batch {
        key: BatchKey {
            host_id: host.host_id.clone(),
            boot_id: host.boot_id.clone(),
            sequence: batch.sequence,
        },
        hostname: if host.hostname.is_empty() {
            host.host_id.clone()
        } else {
            host.hostname.clone()
        },
        kernel_release: host.kernel_release.clone(),
        agent_version: host.agent_version.clone(),
        start_time_ns: start,
        end_time_ns: end,
        frequency_hz: batch.frequency_hz,
        processes,
        frames,
        stacks,
        samples,
        energy,
        losses,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000_000_000_000;

    /// A small valid batch: `main -> work -> hot` 90 samples, `main -> work` 10 samples.
    pub(crate) fn sample_batch() -> pb::ProfileBatch {
        let frame = |name: &str| pb::Frame {
            function: name.into(),
            module: "/usr/bin/app".into(),
            ..Default::default()
        };
        pb::ProfileBatch {
            protocol_version: pb::ProtocolVersion::ProtocolVersion1 as i32,
            host: Some(pb::HostIdentity {
                hostname: "web-1".into(),
                host_id: "machine-1".into(),
                boot_id: "boot-1".into(),
                ..Default::default()
            }),
            sequence: 1,
            start_time_unix_nanos: NOW - 10_000_000_000,
            end_time_unix_nanos: NOW,
            frequency_hz: 19,
            processes: vec![pb::Process {
                pid: 42,
                comm: "app".into(),
                service: "checkout".into(),
                version: "1.0".into(),
                ..Default::default()
            }],
            frames: vec![frame("hot"), frame("work"), frame("main")],
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
                    tid: 42,
                    thread_name: "app".into(),
                    count: 90,
                },
                pb::Sample {
                    process_index: 0,
                    stack_index: 1,
                    tid: 42,
                    thread_name: "app".into(),
                    count: 10,
                },
            ],
            energy: Some(pb::Energy {
                available: false,
                unavailable_reason: "no RAPL".into(),
                ..Default::default()
            }),
            losses: None,
        }
    }

    fn err(batch: &pb::ProfileBatch) -> String {
        validate(batch, &Limits::default(), NOW)
            .unwrap_err()
            .to_string()
    }

    /// A valid batch converts: stacks root first, counts summed.
    #[test]
    fn valid_batch_converts_root_first() {
        let batch = validate(&sample_batch(), &Limits::default(), NOW).unwrap();
        let functions: Vec<&str> = batch.stacks[0].functions.iter().map(|f| &**f).collect();
        assert_eq!(functions, ["main", "work", "hot"]);
        assert_eq!(batch.total_samples(), 100);
        assert_eq!(batch.key.sequence, 1);
        assert!(!batch.energy.available);
    }

    /// Processes and loss counters are stored as sent (the wire's own types), except that a
    /// process without a service is stored under its comm; a batch without counters stores zeros.
    #[test]
    fn processes_and_losses_pass_through() {
        let mut b = sample_batch();
        let named = pb::Process {
            pid: 7,
            comm: "worker".into(),
            exe: "/usr/bin/worker".into(),
            service: "jobs".into(),
            version: "2.1".into(),
            container_id: "c0ffee".into(),
            cgroup: "/system.slice/jobs.service".into(),
            build_id: "ab12".into(),
        };
        let unnamed = pb::Process {
            pid: 8,
            comm: "helper".into(),
            ..Default::default()
        };
        b.processes = vec![named.clone(), unnamed];
        let losses = pb::LossCounters {
            events: 120,
            recorded: 100,
            counts_map_full: 3,
            spool_dropped_batches: 2,
            spool_dropped_samples: 40,
            truncated_stacks: 5,
            ..Default::default()
        };
        b.losses = Some(losses);
        let stored = validate(&b, &Limits::default(), NOW).unwrap();
        assert_eq!(stored.processes[0], named);
        assert_eq!(stored.processes[1].service, "helper");
        assert_eq!(stored.processes[1].pid, 8);
        assert_eq!(stored.losses, losses);

        let stored = validate(&sample_batch(), &Limits::default(), NOW).unwrap();
        assert_eq!(stored.losses, pb::LossCounters::default());
    }

    /// Unknown protocol versions are refused with a message naming the version.
    #[test]
    fn unknown_version_is_named() {
        let mut b = sample_batch();
        b.protocol_version = 7;
        assert_eq!(
            validate(&b, &Limits::default(), NOW).unwrap_err(),
            ValidationError::UnknownVersion(7)
        );
        assert!(err(&b).contains("protocol_version 7"));
    }

    /// Missing host, empty ids and sequence 0 are refused.
    #[test]
    fn identity_is_required() {
        let mut b = sample_batch();
        b.host = None;
        assert!(err(&b).contains("host is missing"));
        let mut b = sample_batch();
        b.host.as_mut().unwrap().host_id.clear();
        assert!(err(&b).contains("host_id"));
        let mut b = sample_batch();
        b.host.as_mut().unwrap().boot_id = " ".into();
        assert!(err(&b).contains("boot_id"));
        let mut b = sample_batch();
        b.sequence = 0;
        assert!(err(&b).contains("sequence"));
    }

    /// Every index is range-checked and the message names the field.
    #[test]
    fn indexes_are_checked() {
        let mut b = sample_batch();
        b.stacks[1].frame_indexes.push(9);
        assert!(err(&b).contains("stacks[1] references frame 9"));
        let mut b = sample_batch();
        b.samples[1].stack_index = 2;
        assert!(err(&b).contains("samples[1].stack_index 2"));
        let mut b = sample_batch();
        b.samples[0].process_index = 1;
        assert!(err(&b).contains("samples[0].process_index"));
        let mut b = sample_batch();
        b.energy = Some(pb::Energy {
            available: true,
            processes: vec![pb::ProcessEnergy {
                process_index: 3,
                joules: 1.0,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(err(&b).contains("energy.processes[0].process_index"));
    }

    /// Windows must be ordered, short, not in the future and not ancient.
    #[test]
    fn time_window_is_sane() {
        let mut b = sample_batch();
        b.end_time_unix_nanos = b.start_time_unix_nanos - 1;
        assert!(err(&b).contains("reversed"));
        let mut b = sample_batch();
        b.start_time_unix_nanos = NOW - 2 * 3_600_000_000_000;
        assert!(err(&b).contains("longer than"));
        let mut b = sample_batch();
        b.start_time_unix_nanos = NOW + 3_600_000_000_000;
        b.end_time_unix_nanos = b.start_time_unix_nanos + 1;
        assert!(err(&b).contains("future"));
        let mut b = sample_batch();
        b.start_time_unix_nanos = NOW - 40 * 86_400_000_000_000;
        b.end_time_unix_nanos = b.start_time_unix_nanos + 1;
        assert!(err(&b).contains("days ago"));
    }

    /// Size limits apply.
    #[test]
    fn sizes_are_limited() {
        let limits = Limits {
            max_samples: 1,
            ..Limits::default()
        };
        let e = validate(&sample_batch(), &limits, NOW)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 samples, more than the limit of 1"), "{e}");
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(
            validate(&sample_batch(), &limits, NOW)
                .unwrap_err()
                .to_string()
                .contains("bytes")
        );
        let limits = Limits {
            max_stack_depth: 2,
            ..Limits::default()
        };
        assert!(
            validate(&sample_batch(), &limits, NOW)
                .unwrap_err()
                .to_string()
                .contains("stacks[0] has 3 frames")
        );
    }

    /// A string past the byte limit is refused, naming the field.
    #[test]
    fn long_strings_are_refused() {
        let mut b = sample_batch();
        b.frames[1].function = "x".repeat(20 << 10);
        let e = err(&b);
        assert!(e.contains("frames[1].function is 20480 bytes"), "{e}");
        let mut b = sample_batch();
        b.samples[0].thread_name = "t".repeat(17 << 10);
        assert!(err(&b).contains("samples[0].thread_name"));
    }

    /// A small batch whose stacks and rows repeat long names expands past the limit and is
    /// refused before it is expanded.
    #[test]
    fn amplifying_batch_is_refused() {
        let mut b = sample_batch();
        b.frames[0].function = "f".repeat(16 << 10);
        b.stacks[0].frame_indexes = vec![0; 1024];
        let one = b.samples[0].clone();
        b.samples = vec![one; 20_000];
        let wire = b.encoded_len();
        let e = err(&b);
        assert!(
            e.contains("expands to") && e.contains("send smaller batches"),
            "{e}"
        );
        assert!(wire < 2 << 20, "the wire batch is small: {wire} bytes");
    }

    /// Zero counts, empty stacks and bad joules are refused.
    #[test]
    fn values_are_checked() {
        let mut b = sample_batch();
        b.samples[0].count = 0;
        assert!(err(&b).contains("count is 0"));
        let mut b = sample_batch();
        b.stacks[0].frame_indexes.clear();
        assert!(err(&b).contains("no frames"));
        let mut b = sample_batch();
        b.energy = Some(pb::Energy {
            available: true,
            domains: vec![pb::DomainEnergy {
                domain: "package-0".into(),
                joules: f64::NAN,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(err(&b).contains("energy.domains[0]"));
    }

    /// Unsymbolized frames get a `module+0xoffset` name; ids are stable.
    #[test]
    fn unsymbolized_frames_are_named_by_offset() {
        let mut b = sample_batch();
        b.frames[0] = pb::Frame {
            module: "/lib/libfoo.so".into(),
            module_offset: 0x1234,
            ..Default::default()
        };
        let batch = validate(&b, &Limits::default(), NOW).unwrap();
        assert_eq!(&*batch.stacks[0].functions[2], "libfoo.so+0x1234");
        let again = validate(&b, &Limits::default(), NOW).unwrap();
        assert_eq!(batch.stacks[0].stack_id, again.stacks[0].stack_id);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::tests::sample_batch;
    use super::*;

    const NOW: u64 = 1_750_000_000_000_000_000;

    fn frames() -> impl Strategy<Value = Vec<pb::Frame>> {
        prop::collection::vec(
            ("[a-z:<>]{0,40}", "[a-z/]{0,20}", any::<u64>()).prop_map(|(function, module, off)| {
                pb::Frame {
                    function,
                    module,
                    module_offset: off,
                    ..Default::default()
                }
            }),
            0..8,
        )
    }

    fn stacks() -> impl Strategy<Value = Vec<pb::Stack>> {
        prop::collection::vec(
            prop::collection::vec(0u32..10, 0..6)
                .prop_map(|frame_indexes| pb::Stack { frame_indexes }),
            0..6,
        )
    }

    fn samples() -> impl Strategy<Value = Vec<pb::Sample>> {
        prop::collection::vec(
            (0u32..3, 0u32..8, 0u64..5, "[a-z]{0,8}").prop_map(|(p, s, count, thread_name)| {
                pb::Sample {
                    process_index: p,
                    stack_index: s,
                    count,
                    thread_name,
                    ..Default::default()
                }
            }),
            0..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever indexes, counts and strings a batch carries, validation answers (never
        /// panics), and what it accepts is consistent: every index resolves, counts add up.
        #[test]
        fn validation_never_panics_and_accepts_only_consistent_batches(
            frames in frames(), stacks in stacks(), samples in samples(),
            max_string in 1usize..64, max_expanded in 1usize..100_000,
        ) {
            let mut b = sample_batch();
            b.frames = frames;
            b.stacks = stacks;
            b.samples = samples;
            let limits = Limits { max_string_bytes: max_string, max_expanded_bytes: max_expanded, ..Limits::default() };
            if let Ok(v) = validate(&b, &limits, NOW) {
                prop_assert_eq!(v.total_samples(), b.samples.iter().map(|s| s.count).sum::<u64>());
                for st in &v.stacks {
                    prop_assert_eq!(st.frame_ids.len(), st.functions.len());
                    prop_assert!(!st.functions.is_empty());
                    prop_assert!(st.functions.iter().all(|f| f.len() <= max_string.max(60)));
                }
                for s in &v.samples {
                    prop_assert!((s.stack as usize) < v.stacks.len());
                    prop_assert!((s.process as usize) < v.processes.len());
                    prop_assert!(s.count > 0);
                }
                prop_assert!(v.approx_bytes() > 0);
            }
        }
    }
}
