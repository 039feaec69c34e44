//! The profile as pretty-printed JSON: every field of [`SymbolizedProfile`] (frame table,
//! processes, samples with leaf-first frame ids, loss counters, energy) plus the totals a reader
//! would otherwise compute.
//!
//! Times are integers in nanoseconds: `start` since the Unix epoch, `duration`, `period_nanos`.
//! The profile's own fields are flattened in, so a field added to the model appears here too.

use std::io;

use serde::Serialize;

use super::OutputError;
use crate::profile::SymbolizedProfile;

/// The JSON document: computed totals, then the profile's own fields.
#[derive(Serialize)]
struct Document<'a> {
    /// Sum of the samples' counts.
    total_samples: u64,
    /// CPU nanoseconds one sample stands for.
    period_nanos: u64,
    /// `total_samples` × `period_nanos`.
    cpu_nanos: u64,
    /// Samples taken but not recorded.
    samples_lost: u64,
    #[serde(flatten)]
    profile: &'a SymbolizedProfile,
}

/// Writes `profile` to `out` as pretty-printed JSON, ending with a newline.
pub(super) fn write(
    profile: &SymbolizedProfile,
    out: &mut dyn io::Write,
) -> Result<(), OutputError> {
    let total_samples = profile.total_samples();
    let period_nanos = profile.period_nanos();
    let document = Document {
        total_samples,
        period_nanos,
        cpu_nanos: total_samples.saturating_mul(period_nanos),
        samples_lost: profile.losses.samples_lost(),
        profile,
    };
    let mut out = io::BufWriter::new(out);
    serde_json::to_writer_pretty(&mut out, &document)?;
    io::Write::write_all(&mut out, b"\n")?;
    io::Write::flush(&mut out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::output::fixture;

    fn parsed() -> (String, Value) {
        let mut out = Vec::new();
        write(&fixture::profile(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let value = serde_json::from_str(&text).unwrap();
        (text, value)
    }

    /// The JSON parses and carries the totals, times and sampling frequency.
    #[test]
    fn has_totals() {
        let (text, v) = parsed();
        assert!(text.contains("\n  \"total_samples\""), "not pretty-printed");
        assert_eq!(v["total_samples"], 58);
        assert_eq!(v["period_nanos"], 1_000_000_000u64 / 19);
        assert_eq!(v["cpu_nanos"], 58 * (1_000_000_000u64 / 19));
        assert_eq!(v["samples_lost"], 0);
        assert_eq!(v["frequency_hz"], 19);
        assert_eq!(v["start"], 1_700_000_000u64 * 1_000_000_000);
        assert_eq!(v["duration"], 5_000_000_000u64);
    }

    /// Loss counters and the energy report (with its reason) are included.
    #[test]
    fn has_losses_and_energy() {
        let (_, v) = parsed();
        assert_eq!(v["losses"]["stack_collisions"], 1);
        assert_eq!(v["losses"]["recorded"], 58);
        assert_eq!(v["energy"]["status"], "unavailable");
        assert_eq!(v["energy"]["reason"], "no RAPL source on this host");
    }

    /// Processes, frames and samples come through with their ids intact.
    #[test]
    fn has_processes_frames_samples() {
        let (_, v) = parsed();
        assert_eq!(v["processes"][1]["comm"], "other");
        assert_eq!(v["frames"].as_array().unwrap().len(), 9);
        assert_eq!(v["frames"][2]["function"], "compute");
        assert_eq!(v["frames"][2]["inlined"], true);
        assert_eq!(v["frames"][4]["kernel"], true);
        assert_eq!(v["samples"][0]["stack"], serde_json::json!([2, 3, 1, 0]));
        assert_eq!(v["samples"][1]["thread_name"], "worker");
    }

    /// The keys of a process and of the loss counters are the ones the agent and the end-to-end
    /// tests read (the wire's field names): renaming a field in the proto must fail here.
    #[test]
    fn process_and_loss_keys_are_stable() {
        let (_, v) = parsed();
        let keys = |value: &Value| {
            let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            keys.sort_unstable();
            keys
        };
        let sorted = |names: &[&str]| {
            let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            names.sort_unstable();
            names
        };
        assert_eq!(
            keys(&v["processes"][0]),
            sorted(&[
                "pid",
                "comm",
                "exe",
                "service",
                "version",
                "container_id",
                "cgroup",
                "build_id",
            ])
        );
        assert_eq!(v["processes"][0]["pid"], 100);
        assert_eq!(v["processes"][0]["service"], "workload-svc");
        assert_eq!(
            keys(&v["losses"]),
            sorted(&[
                "events",
                "idle",
                "filtered",
                "recorded",
                "user_stack_unavailable",
                "kernel_stack_unavailable",
                "stack_collisions",
                "stack_other_errors",
                "counts_map_full",
                "unsymbolized_frames",
                "truncated_stacks",
                "spool_dropped_batches",
                "spool_dropped_samples",
            ])
        );
    }
}
