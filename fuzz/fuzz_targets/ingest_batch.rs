//! A pushed batch's bytes, decoded and validated as the collector's ingest does: any bytes either
//! fail to decode, are refused with an error, or become a batch within the limits.
#![no_main]

use fleetprof_collector::ingest::{Limits, validate};
use fleetprof_proto::fleetprof::v1::ProfileBatch;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

/// A fixed "now" (2026-01-01), so a run is reproducible from its input alone.
const NOW_NS: u64 = 1_767_225_600 * 1_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = ProfileBatch::decode(data) else {
        return;
    };
    // Small limits too, so every refusal path is reachable with small inputs.
    let small = Limits {
        max_samples: 8,
        max_stacks: 8,
        max_frames: 16,
        max_processes: 4,
        max_stack_depth: 8,
        max_bytes: 4096,
        max_string_bytes: 64,
        max_expanded_bytes: 2048,
        ..Limits::default()
    };
    for limits in [Limits::default(), small] {
        if let Ok(valid) = validate(&batch, &limits, NOW_NS) {
            // What passes is within the limits it was checked against.
            let _ = format!("{valid:?}");
            assert!(batch.encoded_len() <= limits.max_bytes);
        }
    }
});
