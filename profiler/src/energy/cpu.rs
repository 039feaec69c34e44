//! The host's CPU time from `/proc/stat`: how busy the CPUs were over a window, the input that
//! separates a window's active energy from its idle energy.

use std::path::Path;

use super::{EnergyError, powercap::io_error};

/// Cumulative CPU time of all CPUs, in clock ticks (`USER_HZ`), from the `cpu` line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CpuTicks {
    /// user + nice + system + irq + softirq: time spent running something.
    pub(super) busy: u64,
    /// busy + idle + iowait + steal: all the time the CPUs existed (guest time is already in user).
    pub(super) total: u64,
}

/// CPU time over a window, seconds summed over every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    /// Seconds the CPUs spent running anything (user, nice, system, irq, softirq).
    pub busy_secs: f64,
    /// All CPU-seconds of the window (about elapsed × CPUs).
    pub total_secs: f64,
}

impl CpuTime {
    /// `busy_secs / total_secs`, within 0..=1; 0 for an empty window.
    pub fn busy_ratio(&self) -> f64 {
        if self.total_secs > 0.0 {
            (self.busy_secs / self.total_secs).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

impl CpuTicks {
    /// The CPU time between `earlier` and `self`, in seconds.
    pub(super) fn since(&self, earlier: &CpuTicks) -> CpuTime {
        let hz = ticks_per_second();
        CpuTime {
            busy_secs: self.busy.saturating_sub(earlier.busy) as f64 / hz,
            total_secs: self.total.saturating_sub(earlier.total) as f64 / hz,
        }
    }
}

/// Reads the aggregate `cpu` line of a `/proc/stat`-formatted file.
pub(super) fn read(proc_stat: &Path) -> Result<CpuTicks, EnergyError> {
    let text = std::fs::read_to_string(proc_stat).map_err(|e| io_error(proc_stat, e))?;
    parse(&text).ok_or_else(|| EnergyError::Parse {
        path: proc_stat.to_owned(),
        contents: text.lines().next().unwrap_or_default().to_owned(),
    })
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`.
fn parse(text: &str) -> Option<CpuTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    if fields.len() < 4 {
        return None;
    }
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    Some(CpuTicks {
        busy,
        total: busy + at(3) + at(4) + at(7),
    })
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy is user+nice+system+irq+softirq; total adds idle, iowait and steal, not guest.
    #[test]
    fn parses_the_cpu_line() {
        let text = "cpu  100 5 20 800 10 3 2 7 50 0\ncpu0 50 2 10 400 5 1 1 3 25 0\nintr 1\n";
        assert_eq!(
            parse(text),
            Some(CpuTicks {
                busy: 130,
                total: 947
            })
        );
        assert_eq!(parse("intr 1\n"), None);
        assert_eq!(parse("cpu  1 2\n"), None);
        assert_eq!(parse("cpu  1 x 3 4\n"), None);
    }

    /// The busy ratio is busy over total and stays within 0..=1.
    #[test]
    fn busy_ratio() {
        let t = CpuTime {
            busy_secs: 1.0,
            total_secs: 4.0,
        };
        assert!((t.busy_ratio() - 0.25).abs() < 1e-12);
        assert_eq!(CpuTime::default().busy_ratio(), 0.0);
    }

    /// This host's /proc/stat parses and moves forward.
    #[test]
    fn reads_this_host() {
        let a = read(Path::new("/proc/stat")).unwrap();
        assert!(a.total >= a.busy && a.total > 0);
    }
}
