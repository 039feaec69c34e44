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
