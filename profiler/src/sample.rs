//! Draining the kernel's aggregated samples into a [`RawProfile`].
//!
//! The eBPF programs write into one of two map generations. [`Drainer::drain`] flips the active
//! generation, waits for programs already running on the old one to finish, then reads every
//! (thread, stack) count and the stacks they reference (keyed by the stack's own 64-bit hash),
//! and clears the old generation. The kernel's counters are cumulative; the drainer reports the
//! difference since its last drain.

use std::{
    collections::HashMap as StdHashMap,
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{HashMap, MapData, MapError};
use profiler_ebpf::{COUNTS_MAPS, GENERATIONS, STACKS_MAPS, SampleKey, Stack, Stat};

use crate::{
    bpf::{BpfError, Sampler},
    profile::{LossCounters, RawProfile, RawSample, StackError},
};

/// How long to wait after flipping generations: a perf_event program runs for microseconds, so
/// this outlasts any run that read the old generation before the flip.
const GENERATION_GRACE: Duration = Duration::from_millis(5);

/// Drains a [`Sampler`] window by window.
#[derive(Debug)]
pub struct Drainer {
    last_stats: [u64; Stat::COUNT as usize],
    window_start: SystemTime,
    window_started: Instant,
}

impl Drainer {
    /// A drainer whose first window starts now.
    pub fn new() -> Self {
        Self {
            last_stats: [0; Stat::COUNT as usize],
            window_start: SystemTime::now(),
            window_started: Instant::now(),
        }
    }

    /// Takes everything sampled since the last drain.
    #[tracing::instrument(name = "Drainer.drain", skip_all)]
    pub fn drain(&mut self, sampler: &mut Sampler) -> Result<RawProfile, BpfError> {
        let drained_generation = {
            let mut active = sampler.active_generation()?;
            let current = active
                .get(&0, 0)
                .map_err(|source| map_err("ACTIVE", source))?;
            active
                .set(0, (current + 1) % GENERATIONS, 0)
                .map_err(|source| map_err("ACTIVE", source))?;
            current % GENERATIONS
        };
        std::thread::sleep(GENERATION_GRACE);

        let now = SystemTime::now();
        let duration = self.window_started.elapsed();
        let start = std::mem::replace(&mut self.window_start, now);
        self.window_started = Instant::now();

        let counts_name = COUNTS_MAPS[drained_generation as usize];
        let stacks_name = STACKS_MAPS[drained_generation as usize];
        let [counts_map, stacks_map] = sampler.ebpf.maps_disjoint_mut([counts_name, stacks_name]);
        let counts_map = counts_map.ok_or_else(|| missing(counts_name))?;
        let stacks_map = stacks_map.ok_or_else(|| missing(stacks_name))?;
        let mut counts: HashMap<&mut MapData, SampleKey, u64> =
            HashMap::try_from(counts_map).map_err(|source| map_err(counts_name, source))?;
        let mut stacks: HashMap<&mut MapData, u64, Stack> =
            HashMap::try_from(stacks_map).map_err(|source| map_err(stacks_name, source))?;

        let mut entries: Vec<(SampleKey, u64)> = Vec::new();
        for item in counts.iter() {
            match item {
                Ok(entry) => entries.push(entry),
                // The key vanished between next_key and lookup: nothing to read.
                Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(map_err(counts_name, source)),
            }
        }
        let mut stack_table: StdHashMap<u64, Stack> = StdHashMap::new();
        for item in stacks.iter() {
            match item {
                Ok((hash, stack)) => {
                    stack_table.insert(hash, stack);
                }
                Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(map_err(stacks_name, source)),
            }
        }

        let mut samples = Vec::with_capacity(entries.len());
        for (key, count) in &entries {
            let sample = match stack_table.get(&key.stack_hash) {
                Some(stack) => RawSample {
                    pid: key.tgid,
                    tid: key.pid,
                    thread_name: comm_to_string(&key.comm),
                    user_stack: stack.user[..(stack.user_len as usize).min(stack.user.len())]
                        .to_vec(),
                    kernel_stack: stack.kernel
                        [..(stack.kernel_len as usize).min(stack.kernel.len())]
                        .to_vec(),
                    stack_flags: stack.flags,
                    stack_error: None,
                    count: *count,
                },
                // The stack map was full when this stack was taken: the sample still counts.
                None => RawSample {
                    pid: key.tgid,
                    tid: key.pid,
                    thread_name: comm_to_string(&key.comm),
                    user_stack: Vec::new(),
                    kernel_stack: Vec::new(),
                    stack_flags: 0,
                    stack_error: Some(StackError::StackMapFull),
                    count: *count,
                },
            };
            samples.push(sample);
        }

        for (key, _) in &entries {
            if let Err(err) = counts.remove(key) {
                tracing::debug!(%err, "count entry already gone");
            }
        }
        for hash in stack_table.keys() {
            let _ = stacks.remove(hash);
        }

        let losses = self.stats_delta(sampler)?;
        Ok(RawProfile {
            start: Some(start),
            duration,
            frequency_hz: sampler.frequency_hz,
            samples,
            losses,
        })
    }

    fn stats_delta(&mut self, sampler: &Sampler) -> Result<LossCounters, BpfError> {
        let stats = sampler.stats()?;
        let mut now = [0u64; Stat::COUNT as usize];
        for stat in Stat::ALL {
            let per_cpu = stats
                .get(&(stat as u32), 0)
                .map_err(|source| map_err("STATS", source))?;
            now[stat as usize] = per_cpu.iter().sum();
        }
        let delta = |s: Stat| now[s as usize].saturating_sub(self.last_stats[s as usize]);
        let losses = LossCounters {
            events: delta(Stat::Events),
            idle: delta(Stat::Idle),
            filtered: delta(Stat::Filtered),
            recorded: delta(Stat::Recorded),
            user_stack_unavailable: delta(Stat::UserStackUnavailable),
            kernel_stack_unavailable: delta(Stat::KernelStackUnavailable),
            stack_collisions: delta(Stat::StackCollision),
            stack_other_errors: delta(Stat::StackOtherError),
            counts_map_full: delta(Stat::CountsMapFull),
            truncated_stacks: delta(Stat::TruncatedStacks),
            // Not the kernel's: the symbolizer and the spool fill these in.
            unsymbolized_frames: 0,
            spool_dropped_batches: 0,
            spool_dropped_samples: 0,
        };
        self.last_stats = now;
        Ok(losses)
    }
}

impl Default for Drainer {
    fn default() -> Self {
        Self::new()
    }
}

fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn map_err(name: &'static str, source: MapError) -> BpfError {
    BpfError::Map { name, source }
}

fn missing(name: &'static str) -> BpfError {
    BpfError::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NUL-padded comm becomes the name before the first NUL.
    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"work");
        assert_eq!(comm_to_string(&comm), "work");
        assert_eq!(comm_to_string(b"exactly16chars!!"), "exactly16chars!!");
    }
}
