//! fleetprof's wire formats, generated from `proto/` with prost and tonic.
//!
//! - [`fleetprof::v1`]: the `Ingest` service a host profiler pushes `ProfileBatch`es to
//!   (`fleetprof-profiler run`) and the collector serves (`fleetprof-collector serve`).
//! - [`pprof`]: Google's `profile.proto`, which `fleetprof-profiler record --format pprof` writes
//!   gzipped so that `go tool pprof`, Grafana and Pyroscope read it.
//!
//! ```
//! use fleetprof_proto::fleetprof::v1::{ProfileBatch, ProtocolVersion};
//! let batch = ProfileBatch { protocol_version: ProtocolVersion::ProtocolVersion1 as i32, ..Default::default() };
//! assert_eq!(batch.sequence, 0);
//! ```
#![allow(missing_docs, unreachable_pub)] // generated code

/// fleetprof's own protocol.
pub mod fleetprof {
    /// Version 1 of the ingest protocol.
    pub mod v1 {
        tonic::include_proto!("fleetprof.v1");
    }
}

/// pprof's `profile.proto` (package `perftools.profiles`).
pub mod pprof {
    tonic::include_proto!("perftools.profiles");
}

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: fleetprof::v1::ProtocolVersion =
    fleetprof::v1::ProtocolVersion::ProtocolVersion1;

impl fleetprof::v1::LossCounters {
    /// Adds another window's (or batch's) counters to these, field by field, so a profile of
    /// several windows reports what all of them lost.
    ///
    /// ```
    /// use fleetprof_proto::fleetprof::v1::LossCounters;
    /// let mut total = LossCounters { events: 10, counts_map_full: 1, ..Default::default() };
    /// total.add(&LossCounters { events: 5, truncated_stacks: 2, ..Default::default() });
    /// assert_eq!((total.events, total.counts_map_full, total.truncated_stacks), (15, 1, 2));
    /// ```
    pub fn add(&mut self, other: &Self) {
        // Destructured so that a field added to the message cannot be forgotten here.
        let Self {
            events,
            idle,
            filtered,
            recorded,
            user_stack_unavailable,
            kernel_stack_unavailable,
            stack_collisions,
            stack_other_errors,
            counts_map_full,
            unsymbolized_frames,
            spool_dropped_batches,
            spool_dropped_samples,
            truncated_stacks,
        } = other;
        self.events += events;
        self.idle += idle;
        self.filtered += filtered;
        self.recorded += recorded;
        self.user_stack_unavailable += user_stack_unavailable;
        self.kernel_stack_unavailable += kernel_stack_unavailable;
        self.stack_collisions += stack_collisions;
        self.stack_other_errors += stack_other_errors;
        self.counts_map_full += counts_map_full;
        self.unsymbolized_frames += unsymbolized_frames;
        self.spool_dropped_batches += spool_dropped_batches;
        self.spool_dropped_samples += spool_dropped_samples;
        self.truncated_stacks += truncated_stacks;
    }

    /// Samples that were taken but not recorded because the count map was full: the only true
    /// sample loss in a window (every other counter is an expected exclusion or a degraded
    /// stack whose sample is kept). Batches dropped from a full spool are counted apart, in
    /// `spool_dropped_samples`.
    pub fn samples_lost(&self) -> u64 {
        self.counts_map_full
    }
}

#[cfg(test)]
mod tests {
    use super::fleetprof::v1::{LossCounters, Process};

    /// `add` sums every field, the spool's included.
    #[test]
    fn add_sums_every_field() {
        let one = LossCounters {
            events: 1,
            idle: 2,
            filtered: 3,
            recorded: 4,
            user_stack_unavailable: 5,
            kernel_stack_unavailable: 6,
            stack_collisions: 7,
            stack_other_errors: 8,
            counts_map_full: 9,
            unsymbolized_frames: 10,
            spool_dropped_batches: 11,
            spool_dropped_samples: 12,
            truncated_stacks: 13,
        };
        let mut sum = one;
        sum.add(&one);
        let doubled = LossCounters {
            events: 2,
            idle: 4,
            filtered: 6,
            recorded: 8,
            user_stack_unavailable: 10,
            kernel_stack_unavailable: 12,
            stack_collisions: 14,
            stack_other_errors: 16,
            counts_map_full: 18,
            unsymbolized_frames: 20,
            spool_dropped_batches: 22,
            spool_dropped_samples: 24,
            truncated_stacks: 26,
        };
        assert_eq!(sum, doubled);
        assert_eq!(sum.samples_lost(), 18);
    }

    /// The JSON keys are the proto field names (what the agent and the tests read), and a
    /// document missing fields (written before they existed) still reads, with zeros.
    #[test]
    fn serde_uses_the_field_names_and_defaults_missing_fields() {
        let process = Process {
            pid: 7,
            comm: "app".into(),
            service: "svc".into(),
            build_id: "ab12".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&process).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "pid",
            "comm",
            "exe",
            "service",
            "version",
            "container_id",
            "cgroup",
            "build_id",
        ];
        expected.sort_unstable();
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["pid"], 7);
        assert_eq!(serde_json::from_value::<Process>(json).unwrap(), process);

        let losses: LossCounters =
            serde_json::from_str(r#"{"events": 5, "counts_map_full": 1}"#).unwrap();
        assert_eq!(
            losses,
            LossCounters {
                events: 5,
                counts_map_full: 1,
                ..Default::default()
            }
        );
        let json = serde_json::to_value(losses).unwrap();
        assert_eq!(json["spool_dropped_samples"], 0);
        assert_eq!(json.as_object().unwrap().len(), 13);
    }
}
