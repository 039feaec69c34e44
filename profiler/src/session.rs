//! One profiling session, shared by `record` and `run`: the eBPF sampler and unwinder, the
//! process tracker that feeds the unwinder and keeps what is needed to name short-lived
//! processes, and the drain → symbolize step that turns the kernel's maps into named samples.
//!
//! `record` collects windows into one profile for a file, draining and naming on one thread with
//! [`Session::collect_into`]. The daemon [`Session::split`]s the session: it drains every second on
//! one thread and names on another, so each drain keeps its time however long naming takes.

use std::path::PathBuf;

use crate::{
    bpf::{BpfError, Sampler, SamplerConfig},
    process::{ProcessInspector, ServiceRule},
    profile::{ProfileBuilder, RawProfile},
    sample::Drainer,
    symbolize::{Symbolizer, SymbolizerStats, kernel_symbols_readable},
    tracker::{FollowCgroup, ProcessTracker, TrackerParts, TrackerStats},
};

/// A running profiling session. Dropping it detaches the programs and stops the tracker.
#[derive(Debug)]
pub struct Session {
    sampling: Sampling,
    symbolizer: Symbolizer,
}

/// The sampling half of a [`Session`]: the programs, the tracker and the drain. A daemon keeps it
/// on the thread that drains every second, and names the drains on another thread with the
/// session's [`Symbolizer`] (see [`Session::split`]), so that slow naming never delays a drain.
#[derive(Debug)]
pub struct Sampling {
    // Field order is drop order: stop the tracker before the programs go.
    tracker: ProcessTracker,
    drainer: Drainer,
    sampler: Sampler,
}

impl Sampling {
    /// Drains what was sampled since the last call.
    pub fn drain(&mut self) -> Result<RawProfile, BpfError> {
        let raw = self.drainer.drain(&mut self.sampler)?;
        let mut active: Vec<u32> = raw.samples.iter().map(|s| s.pid).collect();
        active.sort_unstable();
        active.dedup();
        self.tracker.note_active(active);
        Ok(raw)
    }

    /// The sampler (CPUs, frequency, program statistics).
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// The tracker's and unwind tables' figures.
    pub fn tracker_stats(&self) -> TrackerStats {
        self.tracker.stats()
    }
}

impl Session {
    /// Loads and attaches the sampler and starts following processes.
    pub fn start(config: &SamplerConfig, rules: Vec<ServiceRule>) -> Result<Self, BpfError> {
        let mut sampler = Sampler::start(config)?;
        if !kernel_symbols_readable() {
            let restrict = std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            tracing::warn!(
                kptr_restrict = %restrict,
                "/proc/kallsyms shows no addresses: kernel frames will stay unnamed; grant \
                 CAP_SYSLOG (kptr_restrict=1) or set kernel.kptr_restrict=0"
            );
        }
        let (events, loader) = sampler.take_tracker_maps()?;
        // A followed cgroup's members are captured first like named processes, and the tracker
        // adds those that join it to the kernel's filter.
        let mut pids = config.pids.clone();
        let follow = match &config.cgroup {
            Some(dir) => {
                let procs = dir.join("cgroup.procs");
                let members = crate::tracker::cgroup_members(&procs).map_err(|e| {
                    BpfError::InvalidConfig(format!(
                        "cannot read the cgroup's processes in {}: {e}",
                        procs.display()
                    ))
                })?;
                pids.extend(members);
                pids.sort_unstable();
                pids.dedup();
                Some(FollowCgroup {
                    procs,
                    filter: sampler.take_pid_filter()?,
                })
            }
            None => None,
        };
        let loader = loader
            .frame_pointers_only(config.frame_pointers_only)
            .evict_idle_after(config.unwind_evict_idle_after);
        let tracker = ProcessTracker::start(TrackerParts {
            events,
            loader,
            inspector: ProcessInspector::new(rules.clone()),
            pids: pids.clone(),
            follow,
            excluded: (!config.include_self).then(std::process::id),
            proc_root: PathBuf::from("/proc"),
        })
        .map_err(|source| BpfError::Tracker { source })?;
        // Processes named on the command line are described to the unwinder before their first
        // sample; on a whole host the tracker catches up in the background.
        if !pids.is_empty() {
            tracker.wait_for_initial_capture();
        }
        sampler.attach()?;
        let symbolizer =
            Symbolizer::new(ProcessInspector::new(rules)).with_process_table(tracker.table());
        Ok(Self {
            sampling: Sampling {
                tracker,
                drainer: Drainer::new(),
                sampler,
            },
            symbolizer,
        })
    }

    /// The sampling half and the naming half, for callers that drain on one thread and name on
    /// another. The symbolizer keeps naming exited processes from the tracker's snapshots for as
    /// long as the sampling half runs.
    pub fn split(self) -> (Sampling, Symbolizer) {
        (self.sampling, self.symbolizer)
    }

    /// Drains what was sampled since the last call and adds it, named, to `builder`.
    pub fn collect_into(&mut self, builder: &mut ProfileBuilder) -> Result<(), BpfError> {
        let raw = self.drain()?;
        self.symbolize_into(&raw, builder);
        Ok(())
    }

    /// Drains what was sampled since the last call (the first half of
    /// [`Session::collect_into`], for callers that read other counters at the same instant).
    pub fn drain(&mut self) -> Result<RawProfile, BpfError> {
        self.sampling.drain()
    }

    /// Names a drained window into `builder` (the second half of [`Session::collect_into`]).
    pub fn symbolize_into(&mut self, raw: &RawProfile, builder: &mut ProfileBuilder) {
        self.symbolizer.symbolize_into(raw, builder);
    }

    /// The sampler (CPUs, frequency, program statistics).
    pub fn sampler(&self) -> &Sampler {
        self.sampling.sampler()
    }

    /// The symbolizer's cache figures.
    pub fn symbolizer_stats(&self) -> SymbolizerStats {
        self.symbolizer.stats()
    }

    /// The tracker's and unwind tables' figures.
    pub fn tracker_stats(&self) -> TrackerStats {
        self.sampling.tracker_stats()
    }
}
