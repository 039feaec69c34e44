//! The order in which processes are described to the unwinder.
//!
//! Building a table takes time in proportion to the module's code: a second or more for a large
//! C++ binary (ClickHouse, LLVM), nothing for a module whose table is already built. Taken in
//! arrival order, a service started just after such a binary was seen would be walked by frame
//! pointers (cut, for code built without them) until that table is done. So cheap work goes
//! first; work that has waited [`AGING`] goes first in arrival order, so a large table is never
//! starved; and what concerns one process keeps its order (an exec's unload before its new load).

use std::{
    collections::VecDeque,
    sync::{Arc, mpsc::Sender},
    time::{Duration, Instant},
};

use crate::tracker::ProcessSnapshot;

/// How long work may wait before it goes first whatever it costs.
pub(crate) const AGING: Duration = Duration::from_secs(3);

/// Work for the unwind-table thread.
pub(crate) enum TableWork {
    /// Describe the process (again) to the unwinder.
    Load(u32, Arc<ProcessSnapshot>),
    /// Forget it.
    Unload(u32),
    /// Say so once everything before this is done.
    Notify(Sender<()>),
    /// These processes were just sampled (handled as it arrives, never queued).
    Active(Vec<u32>),
    /// The builder thread finished a table (handled as it arrives, never queued).
    Built(super::BuiltTable),
}

impl TableWork {
    fn pid(&self) -> Option<u32> {
        match self {
            Self::Load(pid, _) | Self::Unload(pid) => Some(*pid),
            Self::Notify(_) | Self::Active(_) | Self::Built(_) => None,
        }
    }
}

/// Pending [`TableWork`], cheapest first (see the module documentation).
#[derive(Default)]
pub(crate) struct TableQueue {
    items: VecDeque<(Instant, TableWork)>,
}

impl TableQueue {
    /// Adds work that just arrived. An unload cancels the process's pending loads: they describe
    /// a process that exited or replaced itself (exec), so building their tables would be wasted,
    /// and a flood of short-lived processes (a build's compilers) would keep every process after
    /// them, a service started meanwhile included, walked by frame pointers alone.
    pub(crate) fn push(&mut self, work: TableWork) {
        if let TableWork::Unload(pid) = work {
            self.items
                .retain(|(_, w)| !matches!(w, TableWork::Load(p, _) if *p == pid));
        }
        self.items.push_back((Instant::now(), work));
    }

    /// True when nothing is pending.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes the work to do next; `cost` estimates what describing a process takes (e.g. the
    /// bytes of code whose tables are not built yet).
    pub(crate) fn pop(&mut self, cost: impl Fn(&ProcessSnapshot) -> u64) -> Option<TableWork> {
        // A notification waits for everything before it, and nothing after it is started first.
        let barrier = self
            .items
            .iter()
            .position(|(_, w)| matches!(w, TableWork::Notify(_)))
            .unwrap_or(self.items.len());
        if barrier == 0 {
            return self.items.pop_front().map(|(_, w)| w);
        }
        // Only a process's first pending work may run: its later work must follow it.
        let first_of_its_process = |i: usize| {
            let pid = self.items[i].1.pid();
            !self.items.range(..i).any(|(_, w)| w.pid() == pid)
        };
        let ready: Vec<usize> = (0..barrier).filter(|&i| first_of_its_process(i)).collect();
        // Unloads cost nothing and free rows for what follows.
        let unload = ready
            .iter()
            .copied()
            .find(|&i| matches!(self.items[i].1, TableWork::Unload(_)));
        let next = if let Some(i) = unload {
            i
        } else if self.items[0].0.elapsed() >= AGING {
            0
        } else {
            ready
                .iter()
                .copied()
                .min_by_key(|&i| match &self.items[i].1 {
                    TableWork::Load(_, snapshot) => cost(snapshot),
                    _ => 0,
                })
                .unwrap_or(0)
        };
        self.items.remove(next).map(|(_, w)| w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Process;

    fn snapshot(cost: u64) -> Arc<ProcessSnapshot> {
        Arc::new(ProcessSnapshot {
            info: Process {
                pid: u32::try_from(cost).unwrap_or(0),
                ..Process::default()
            },
            mappings: Vec::new(),
            perf_map: None,
            exited: None,
        })
    }

    fn order(queue: &mut TableQueue) -> Vec<String> {
        let cost = |s: &ProcessSnapshot| u64::from(s.info.pid);
        std::iter::from_fn(|| queue.pop(cost))
            .map(|w| match w {
                TableWork::Load(pid, _) => format!("load {pid}"),
                TableWork::Unload(pid) => format!("unload {pid}"),
                TableWork::Notify(_) => "notify".to_owned(),
                TableWork::Active(pids) => format!("active {pids:?}"),
                TableWork::Built((key, _)) => format!("built {key}"),
            })
            .collect()
    }

    #[test]
    fn cheap_work_first_and_a_process_keeps_its_order() {
        let mut queue = TableQueue::default();
        queue.push(TableWork::Load(1, snapshot(900)));
        queue.push(TableWork::Load(2, snapshot(5)));
        queue.push(TableWork::Unload(3));
        queue.push(TableWork::Load(3, snapshot(1)));
        queue.push(TableWork::Load(4, snapshot(50)));
        assert_eq!(
            order(&mut queue),
            ["unload 3", "load 3", "load 2", "load 4", "load 1"]
        );
    }

    #[test]
    fn a_process_gone_before_its_load_costs_nothing() {
        let mut queue = TableQueue::default();
        queue.push(TableWork::Load(900, snapshot(900)));
        queue.push(TableWork::Load(800, snapshot(800)));
        queue.push(TableWork::Load(5, snapshot(5)));
        // The two big processes exit (or exec) before their tables were built.
        queue.push(TableWork::Unload(900));
        queue.push(TableWork::Unload(800));
        queue.push(TableWork::Load(800, snapshot(800)));
        assert_eq!(
            order(&mut queue),
            ["unload 900", "unload 800", "load 5", "load 800"]
        );
    }

    #[test]
    fn a_notification_waits_for_what_came_before() {
        let mut queue = TableQueue::default();
        let (tx, _rx) = std::sync::mpsc::channel();
        queue.push(TableWork::Load(1, snapshot(900)));
        queue.push(TableWork::Notify(tx));
        queue.push(TableWork::Load(2, snapshot(5)));
        assert_eq!(order(&mut queue), ["load 1", "notify", "load 2"]);
    }

    #[test]
    fn old_work_goes_first() {
        let mut queue = TableQueue::default();
        queue.push(TableWork::Load(1, snapshot(900)));
        queue.items[0].0 -= AGING;
        queue.push(TableWork::Load(2, snapshot(5)));
        assert_eq!(order(&mut queue), ["load 1", "load 2"]);
    }
}
