//! Output formats for a [`SymbolizedProfile`]: what `fleetprof-profiler record --format` writes.
//!
//! - [`Format::Folded`]: Brendan Gregg's collapsed stacks ([`folded`]), for `flamegraph.pl`,
//!   inferno, speedscope.
//! - [`Format::Pprof`]: gzipped `profile.proto` ([`pprof`]), for `go tool pprof`, Grafana, Pyroscope.
//! - [`Format::Svg`]: a flame graph drawn with inferno ([`svg`]).
//! - [`Format::Json`]: the whole profile with totals, loss counters and energy ([`json`]).
//!
//! ```no_run
//! # fn demo(profile: &fleetprof_profiler::profile::SymbolizedProfile) -> Result<(), fleetprof_profiler::output::OutputError> {
//! use fleetprof_profiler::output::{write, Format};
//! let mut out = std::io::stdout().lock();
//! write(profile, Format::Folded, &mut out)?;
//! # Ok(()) }
//! ```

pub mod folded;
pub mod json;
pub mod pprof;
pub mod svg;

use std::io;

use crate::profile::SymbolizedProfile;

/// An output format of `record`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// Collapsed stacks, one `comm;root;...;leaf count` line per distinct stack.
    Folded,
    /// Gzipped pprof `profile.proto`.
    Pprof,
    /// An SVG flame graph.
    Svg,
    /// The profile as pretty-printed JSON, with totals, loss counters and energy.
    Json,
}

impl Format {
    /// The usual file-name extension for this format, without the leading dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Folded => "folded",
            Format::Pprof => "pb.gz",
            Format::Svg => "svg",
            Format::Json => "json",
        }
    }
}

/// Why a profile could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Writing to the destination (or gzip-compressing into it) failed.
    #[error("writing the profile failed")]
    Io(#[from] io::Error),
    /// A sample names a frame that is not in the frame table: the profile was built wrongly.
    #[error("sample {sample} refers to frame {frame}, but the profile has only {frames} frames")]
    DanglingFrame {
        /// Index of the sample.
        sample: usize,
        /// The frame id it refers to.
        frame: u32,
        /// Length of the frame table.
        frames: usize,
    },
    /// A sample names a process that is not in the process table: the profile was built wrongly.
    #[error(
        "sample {sample} refers to process {process}, but the profile has only {processes} processes"
    )]
    DanglingProcess {
        /// Index of the sample.
        sample: usize,
        /// The process id it refers to.
        process: u32,
        /// Length of the process table.
        processes: usize,
    },
    /// A flame graph of nothing cannot be drawn (inferno refuses an empty input).
    #[error("the profile has no samples to draw a flame graph from")]
    NoSamples,
    /// Drawing the flame graph failed.
    #[error("drawing the flame graph failed")]
    FlameGraph(#[source] io::Error),
    /// Serializing to JSON failed.
    #[error("serializing the profile to JSON failed")]
    Json(#[from] serde_json::Error),
    /// The bytes are not a gzipped (or plain) `profile.proto`.
    #[error("decoding the pprof profile failed")]
    PprofDecode(#[from] prost::DecodeError),
}

/// Writes `profile` to `out` in `format`.
///
/// The profile's indices are checked first, so that a malformed profile fails before anything is
/// written rather than leaving half a file behind.
pub fn write(
    profile: &SymbolizedProfile,
    format: Format,
    out: &mut dyn io::Write,
) -> Result<(), OutputError> {
    validate(profile)?;
    match format {
        Format::Folded => folded::write(profile, out),
        Format::Pprof => pprof::write(profile, out),
        Format::Svg => svg::write(profile, out),
        Format::Json => json::write(profile, out),
    }
}

/// Checks that every sample's process and frame ids are in range, so the formats can index freely.
pub(crate) fn validate(profile: &SymbolizedProfile) -> Result<(), OutputError> {
    for (i, sample) in profile.samples.iter().enumerate() {
        if sample.process as usize >= profile.processes.len() {
            return Err(OutputError::DanglingProcess {
                sample: i,
                process: sample.process,
                processes: profile.processes.len(),
            });
        }
        if let Some(&frame) = sample
            .stack
            .iter()
            .find(|&&f| f as usize >= profile.frames.len())
        {
            return Err(OutputError::DanglingFrame {
                sample: i,
                frame,
                frames: profile.frames.len(),
            });
        }
    }
    Ok(())
}

/// A hand-built profile shared by the formats' tests: two processes, kernel and user frames, an
/// inlined pair, an unsymbolized frame.
#[cfg(test)]
pub(crate) mod fixture {
    use std::time::{Duration, SystemTime};

    use crate::energy::EnergyReport;
    use crate::profile::{Frame, LossCounters, Process, Sample, SymbolizedProfile};

    /// Build id of `myworkload` in the fixture.
    pub(crate) const WORKLOAD_BUILD_ID: &str = "aabbccdd";
    /// Build id of libc in the fixture.
    pub(crate) const LIBC_BUILD_ID: &str = "11223344";

    fn user(function: &str, module: &str, build_id: &str, address: u64, inlined: bool) -> Frame {
        Frame {
            function: function.to_owned(),
            module: module.to_owned(),
            build_id: Some(build_id.to_owned()),
            file: Some(format!("src/{function}.rs")),
            line: Some(10),
            inlined,
            address,
            kernel: false,
            symbolized: true,
        }
    }

    fn kernel(function: &str, address: u64) -> Frame {
        Frame {
            function: function.to_owned(),
            module: "[kernel]".to_owned(),
            build_id: None,
            file: None,
            line: None,
            inlined: false,
            address,
            kernel: true,
            symbolized: true,
        }
    }

    /// The fixture profile: 19 Hz, 42 + 8 + 5 samples of `myworkload`, 3 of `other`.
    pub(crate) fn profile() -> SymbolizedProfile {
        let w = "/usr/bin/myworkload";
        let libc = "/usr/lib/libc.so.6";
        let frames = vec![
            user("main", w, WORKLOAD_BUILD_ID, 0x1000, false), // 0
            user("hot_loop", w, WORKLOAD_BUILD_ID, 0x1100, false), // 1
            // compute is inlined into step; both at step's call-site address.
            user("compute", w, WORKLOAD_BUILD_ID, 0x1200, true), // 2
            user("step", w, WORKLOAD_BUILD_ID, 0x1200, false),   // 3
            kernel("entry_SYSCALL_64", 0xffff_ffff_8100_0000),   // 4
            kernel("do_syscall_64", 0xffff_ffff_8100_0100),      // 5
            user("write", libc, LIBC_BUILD_ID, 0x2000, false),   // 6
            Frame {
                function: "/usr/lib/libc.so.6+0x2abc".to_owned(),
                module: libc.to_owned(),
                build_id: Some(LIBC_BUILD_ID.to_owned()),
                file: None,
                line: None,
                inlined: false,
                address: 0x2abc,
                kernel: false,
                symbolized: false,
            }, // 7
            user("other_main", "/usr/bin/other", "55667788", 0x3000, false), // 8
        ];
        let processes = vec![
            Process {
                pid: 100,
                comm: "myworkload".to_owned(),
                exe: w.to_owned(),
                service: "workload-svc".to_owned(),
                version: "1.2.3".to_owned(),
                build_id: WORKLOAD_BUILD_ID.to_owned(),
                ..Default::default()
            },
            Process {
                pid: 200,
                comm: "other".to_owned(),
                exe: "/usr/bin/other".to_owned(),
                ..Default::default()
            },
        ];
        let sample = |process, tid, thread_name: &str, stack: Vec<u32>, count| Sample {
            process,
            tid,
            thread_name: thread_name.to_owned(),
            stack,
            count,
        };
        let samples = vec![
            // Leaf first: compute (inlined into) step, hot_loop, main.
            sample(0, 100, "myworkload", vec![2, 3, 1, 0], 30),
            // Same stack on another thread: aggregated in folded output, kept apart in pprof.
            sample(0, 101, "worker", vec![2, 3, 1, 0], 12),
            // A syscall: kernel frames, then user frames.
            sample(0, 100, "myworkload", vec![5, 4, 6, 1, 0], 8),
            // A frame the symbolizer could not name.
            sample(0, 100, "myworkload", vec![7, 0], 5),
            sample(1, 200, "other", vec![8], 3),
        ];
        SymbolizedProfile {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_secs(5),
            frequency_hz: 19,
            frames,
            processes,
            samples,
            losses: LossCounters {
                events: 60,
                recorded: 58,
                stack_collisions: 1,
                ..Default::default()
            },
            energy: EnergyReport::Unavailable {
                reason: "no RAPL source on this host".to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every format writes the fixture through the single entry point without error.
    #[test]
    fn every_format_writes() {
        let profile = fixture::profile();
        for format in [Format::Folded, Format::Pprof, Format::Svg, Format::Json] {
            let mut out = Vec::new();
            write(&profile, format, &mut out).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert!(!out.is_empty(), "{format:?} wrote nothing");
        }
    }

    /// A sample pointing past the frame table is refused before anything is written.
    #[test]
    fn dangling_frame_is_refused() {
        let mut profile = fixture::profile();
        profile.samples[1].stack.push(99);
        let mut out = Vec::new();
        let err = write(&profile, Format::Folded, &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                OutputError::DanglingFrame {
                    sample: 1,
                    frame: 99,
                    frames: 9
                }
            ),
            "{err:?}"
        );
        assert!(out.is_empty());
    }

    /// A sample pointing past the process table is refused.
    #[test]
    fn dangling_process_is_refused() {
        let mut profile = fixture::profile();
        profile.samples[4].process = 7;
        let err = write(&profile, Format::Json, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                OutputError::DanglingProcess {
                    sample: 4,
                    process: 7,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
