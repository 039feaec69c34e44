//! `fleetprof-profiler record`: sample for a while, symbolize as we go, return one profile.
//!
//! The maps are drained every [`RecordOptions::drain_every`] rather than once at the end, so
//! short-lived processes are symbolized while they still exist and the maps never fill.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    bpf::{BpfError, SamplerConfig},
    energy::{EnergyMeter, EnergyReport},
    process::ServiceRule,
    profile::{ProfileBuilder, SymbolizedProfile},
    session::Session,
    tracker::TrackerStats,
};

/// What to record.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// How long to sample. Default: 10 s.
    pub duration: Duration,
    /// Sampler settings (frequency, pid filter, map sizes).
    pub sampler: SamplerConfig,
    /// Service naming rules. Default: none (environment, then executable name).
    pub rules: Vec<ServiceRule>,
    /// How often to drain and symbolize. Default: 1 s.
    pub drain_every: Duration,
    /// Set to true once sampling has started (programs loaded, the processes named by `pids`
    /// described to the unwinder, perf events attached), for callers that time a workload.
    pub started: Option<Arc<AtomicBool>>,
    /// Read RAPL counters from this powercap directory instead of detecting them. Default: none.
    pub powercap_dir: Option<std::path::PathBuf>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            sampler: SamplerConfig::default(),
            rules: Vec::new(),
            drain_every: Duration::from_secs(1),
            started: None,
            powercap_dir: None,
        }
    }
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The sampler could not start or be drained.
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// What a recording cost the profiler itself.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RecorderStats {
    /// Peak resident set size of this process, bytes (VmHWM).
    pub peak_rss_bytes: u64,
    /// Number of CPUs sampled.
    pub cpus: usize,
    /// Total run time of the eBPF program (needs `kernel.bpf_stats_enabled=1`), nanoseconds.
    pub bpf_run_time_ns: u64,
    /// Number of eBPF program runs counted by the kernel (same condition).
    pub bpf_run_count: u64,
    /// The process tracker's and unwind tables' figures at the end.
    pub tracker: TrackerStats,
}

/// Records for `options.duration` (or until `stop` is set) and returns the symbolized profile.
pub fn record(
    options: &RecordOptions,
    stop: Option<&AtomicBool>,
) -> Result<(SymbolizedProfile, RecorderStats), RecordError> {
    let mut session = Session::start(&options.sampler, options.rules.clone())?;
    if let Some(started) = &options.started {
        started.store(true, Ordering::Relaxed);
    }
    let mut builder = ProfileBuilder::new(options.sampler.frequency_hz);
    let meter = EnergyMeter::detect_with(options.powercap_dir.as_deref());
    let energy_start = meter.as_ref().ok().map(EnergyMeter::read);

    let started = Instant::now();
    loop {
        let remaining = options.duration.saturating_sub(started.elapsed());
        let stopped = stop.is_some_and(|s| s.load(Ordering::Relaxed));
        if remaining.is_zero() || stopped {
            break;
        }
        sleep_unless_stopped(remaining.min(options.drain_every), stop);
        session.collect_into(&mut builder)?;
    }
    session.collect_into(&mut builder)?;

    let energy_report = match (&meter, energy_start) {
        (Ok(meter), Some(Ok(start))) => meter.finish(
            &start,
            &builder.samples_per_pid(),
            options.sampler.frequency_hz,
        ),
        (Ok(_), Some(Err(err))) => EnergyReport::from(&err),
        (Err(err), _) => EnergyReport::from(err),
        _ => EnergyReport::unavailable("energy counters were not read at the start of the window"),
    };
    let (run_time, run_count) = session.sampler().run_stats();
    let stats = RecorderStats {
        cpus: session.sampler().cpus().len(),
        peak_rss_bytes: peak_rss_bytes(),
        bpf_run_time_ns: run_time.as_nanos() as u64,
        bpf_run_count: run_count,
        tracker: session.tracker_stats(),
    };
    tracing::debug!(?stats, symbolizer = ?session.symbolizer_stats(), "recording finished");
    Ok((builder.finish(energy_report), stats))
}

fn sleep_unless_stopped(total: Duration, stop: Option<&AtomicBool>) {
    let deadline = Instant::now() + total;
    while Instant::now() < deadline {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return;
        }
        std::thread::sleep(
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
}

/// Peak resident set size of this process (VmHWM), bytes; 0 when unreadable.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
