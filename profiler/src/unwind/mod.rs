//! Unwinding without frame pointers: compact tables built from each mapped file's `.eh_frame`
//! ([`table`]), loaded into the kernel's row array ([`rows`] allocates it) and described per
//! process, mapping by mapping, for the eBPF unwinder; the `queue` module orders that work,
//! cheapest first.
//!
//! Tables are shared by module (build-id, or device and inode) across processes, built once,
//! and evicted when no process maps them any more. A large module's table (a compiler, a JVM,
//! a statically linked database: seconds of work) is built on a builder thread of its own
//! ([`TableLoader::build_in_background`]): its processes are described at once with that module
//! walked by frame pointers, and described again when the table arrives
//! ([`TableLoader::table_built`]), so a service started meanwhile waits for nobody's table. The
//! row array has a fixed capacity (`unwind_rows` in the configuration). When a table does not fit, the processes that have not
//! been sampled for a while ([`TableLoader::evict_idle_after`]) give up their description to make
//! room — most of a host's processes are idle, and they are described again when next sampled.
//! When even that is not enough, the table is not loaded, its mappings are walked by frame
//! pointers, and the drop is counted in [`UnwindStats`]; once the process is sampled and room
//! can be made, its table is loaded after all.

pub(crate) mod queue;
pub mod rows;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::{Arc, mpsc::Sender};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap as BpfHashMap, IterableMap as _, MapData, MapError};
use profiler_ebpf::{MAX_MAPPINGS, Mapping, MappingKey, ProcessInfo, UnwindRow, mapping_kind};
use serde::Serialize;

use crate::procmaps::{Backing, ExecMapping, ModuleFile};

use self::{rows::RowAllocator, table::UnwindTable};

/// What the unwinder's tables cost and what they dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnwindStats {
    /// Processes whose mappings the kernel knows.
    pub processes: u64,
    /// Modules with a table loaded.
    pub tables_loaded: u64,
    /// Modules walked by frame pointers because they keep them (no table needed).
    pub frame_pointer_modules: u64,
    /// Rows in use in the kernel's row array.
    pub rows_used: u64,
    /// Capacity of the row array.
    pub rows_capacity: u64,
    /// Tables not loaded because the row array was full (walked by frame pointers instead).
    pub tables_dropped: u64,
    /// Tables evicted because no process mapped them any more.
    pub tables_evicted: u64,
    /// Processes whose description was evicted, after they had not been sampled for a while, to
    /// make room for the table of a process being sampled.
    pub idle_processes_evicted: u64,
    /// Files whose call-frame information could not be read.
    pub table_errors: u64,
    /// Executable mappings left out because a process had more than the unwinder searches.
    pub mappings_dropped: u64,
}

/// Why the kernel's unwinding maps could not be updated.
#[derive(Debug, thiserror::Error)]
#[error("updating eBPF map {map}: {source}")]
pub struct UnwindMapError {
    /// The map.
    pub map: &'static str,
    /// aya's error.
    #[source]
    pub source: MapError,
}

/// How long a process goes unsampled before its tables may make room for a sampled process's.
pub const DEFAULT_EVICT_IDLE_AFTER: Duration = Duration::from_secs(30);

/// A module's table as loaded.
#[derive(Debug)]
struct LoadedTable {
    start: u32,
    len: u32,
    kind: u32,
    /// Processes mapping the module.
    refs: u32,
    /// Rows the table needs, when it was built but did not fit (the module is then walked by
    /// frame pointers until room is made).
    unloaded_rows: Option<u32>,
}

/// What the kernel was told of a process.
#[derive(Debug)]
struct KnownProcess {
    /// Mapping entries written.
    mapping_count: u32,
    /// The module keys it holds a reference on, one per file mapping.
    keys: Vec<String>,
    /// When it was described or last seen in a drain.
    last_active: Instant,
}

/// The kernel's row array, mapped into this process: tables are written with one copy each.
struct RowArray {
    /// Keeps the map alive while it is mapped.
    _map: Array<MapData, UnwindRow>,
    ptr: *mut UnwindRow,
    len: usize,
    mapped_bytes: usize,
}

// SAFETY: the mapping is owned by this struct and only written through `&mut self`.
unsafe impl Send for RowArray {}

impl RowArray {
    fn new(map: Array<MapData, UnwindRow>) -> std::io::Result<Self> {
        let len = map.len() as usize;
        // The kernel lays out an array's elements at multiples of 8 bytes: exactly UnwindRow's size.
        let bytes = len * std::mem::size_of::<UnwindRow>();
        let page = 4096;
        let mapped_bytes = bytes.div_ceil(page) * page;
        let fd = map.map().fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the array's fd (created BPF_F_MMAPABLE), sized to its
        // elements; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            _map: map,
            ptr: ptr.cast(),
            len,
            mapped_bytes,
        })
    }

    fn rows_mut(&mut self) -> &mut [UnwindRow] {
        // SAFETY: `ptr` maps `len` rows for as long as `self` lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for RowArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.mapped_bytes) };
    }
}

/// Modules with more executable code than this have their tables built on the builder thread
/// when there is one: building takes about a second per 50 MB of code, and the table thread must
/// not keep every other process waiting that long.
pub const BUILD_INLINE_MAX_CODE_BYTES: u64 = 4 << 20;

/// A table the builder thread finished: the module's key and the table, or why it has none.
pub type BuiltTable = (String, Result<UnwindTable, String>);

/// The kernel's unwinding maps and the tables in them.
pub struct TableLoader {
    rows: RowArray,
    processes: BpfHashMap<MapData, u32, ProcessInfo>,
    mappings: BpfHashMap<MapData, MappingKey, Mapping>,
    alloc: RowAllocator,
    tables: HashMap<String, LoadedTable>,
    known: HashMap<u32, KnownProcess>,
    stats: UnwindStats,
    frame_pointers_only: bool,
    evict_idle_after: Duration,
    /// Processes evicted for room, since [`TableLoader::take_evicted`] was last called.
    evicted: Vec<u32>,
    /// The eviction plan, once worked out: planning walks every known process, so it is done
    /// once per drain rather than per process and per table that wants room. Dropped whenever
    /// the allocator, the known processes, their activity or the tables' references change.
    eviction: Option<EvictionPlan>,
    /// Where large modules go to have their tables built; `None`: everything is built inline.
    builder: Option<Sender<Arc<ModuleFile>>>,
    /// Modules sent to the builder whose tables have not come back.
    building: HashSet<String>,
    /// Tables built but not loaded yet (by the builder, or when they did not fit).
    built: HashMap<String, UnwindTable>,
}

/// The idle processes in the order they give up their description, oldest activity first, each
/// with the longest free range of rows once it and all before it are evicted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct EvictionPlan {
    steps: Vec<(u32, u32)>,
}

impl EvictionPlan {
    /// Works out the plan over `known`, leaving out `loading` (the process being described).
    fn new(
        known: &HashMap<u32, KnownProcess>,
        tables: &HashMap<String, LoadedTable>,
        alloc: &RowAllocator,
        idle_after: Duration,
        loading: Option<u32>,
    ) -> Self {
        let mut idle: Vec<(Instant, u32)> = known
            .iter()
            .filter(|&(&pid, p)| Some(pid) != loading && p.last_active.elapsed() >= idle_after)
            .map(|(&pid, p)| (p.last_active, pid))
            .collect();
        idle.sort_unstable();
        let mut alloc = alloc.clone();
        let mut refs: HashMap<&str, u32> = HashMap::new();
        let mut steps = Vec::with_capacity(idle.len());
        for (_, pid) in idle {
            for key in &known[&pid].keys {
                let Some(table) = tables.get(key) else {
                    continue;
                };
                let left = refs.entry(key).or_insert(table.refs);
                *left = left.saturating_sub(1);
                if *left == 0 && table.kind == mapping_kind::TABLE {
                    alloc.release(table.start, table.len);
                }
            }
            steps.push((pid, alloc.largest_free()));
        }
        Self { steps }
    }

    /// The fewest processes, from the front, whose eviction frees `rows` contiguous rows; `None`
    /// when evicting all of them would not. Freed ranges only grow, so the first step that
    /// reaches `rows` is the answer.
    fn evictions_for(&self, rows: u32) -> Option<&[(u32, u32)]> {
        let last = self.steps.iter().position(|&(_, free)| free >= rows)?;
        Some(&self.steps[..=last])
    }
}

impl std::fmt::Debug for TableLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLoader")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TableLoader {
    /// A loader over the sampler's maps.
    pub fn new(
        rows: Array<MapData, UnwindRow>,
        processes: BpfHashMap<MapData, u32, ProcessInfo>,
        mappings: BpfHashMap<MapData, MappingKey, Mapping>,
    ) -> Result<Self, UnwindMapError> {
        let capacity = rows.len();
        let rows = RowArray::new(rows).map_err(|e| UnwindMapError {
            map: "UNWIND_ROWS",
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error: e,
            }),
        })?;
        Ok(Self {
            rows,
            processes,
            mappings,
            alloc: RowAllocator::new(capacity),
            tables: HashMap::new(),
            known: HashMap::new(),
            stats: UnwindStats {
                rows_capacity: u64::from(capacity),
                ..Default::default()
            },
            frame_pointers_only: false,
            evict_idle_after: DEFAULT_EVICT_IDLE_AFTER,
            evicted: Vec::new(),
            eviction: None,
            builder: None,
            building: HashSet::new(),
            built: HashMap::new(),
        })
    }

    /// Builds the tables of modules with more than [`BUILD_INLINE_MAX_CODE_BYTES`] of code by
    /// sending them to `builder`, whose thread hands each result back to
    /// [`TableLoader::table_built`]. Meanwhile their processes are described with the module
    /// walked by frame pointers.
    pub fn build_in_background(mut self, builder: Sender<Arc<ModuleFile>>) -> Self {
        self.builder = Some(builder);
        self
    }

    /// True while a table is being built in the background.
    pub fn is_building(&self) -> bool {
        !self.building.is_empty()
    }

    /// Takes a table the builder thread finished. Returns the processes mapping the module:
    /// described again, they get it (room permitting, as for any table).
    pub fn table_built(&mut self, (key, table): BuiltTable) -> Vec<u32> {
        self.building.remove(&key);
        let table = match table {
            Ok(table) => table,
            Err(err) => {
                self.stats.table_errors += 1;
                tracing::debug!(module = %key, %err, "no unwind table; frame pointers");
                return Vec::new();
            }
        };
        // No process maps it any more, or walking by frame pointers is what the table says.
        let Some(loaded) = self.tables.get_mut(&key) else {
            return Vec::new();
        };
        if table.rows.is_empty() || table.keeps_frame_pointers() {
            return Vec::new();
        }
        loaded.unloaded_rows = Some(table.rows.len() as u32);
        self.built.insert(key.clone(), table);
        self.known
            .iter()
            .filter(|(_, p)| p.keys.contains(&key))
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Whether `module`'s table is left to the builder thread: it is large, and there is one.
    fn builds_in_background(&self, module: &ModuleFile) -> bool {
        self.builder.is_some()
            && !self.frame_pointers_only
            && !self.built.contains_key(&module.key)
            && code_bytes(module) > BUILD_INLINE_MAX_CODE_BYTES
    }

    /// Whether `module`'s table is on its way from the builder thread: sent now, or before.
    /// False when it is built here (small, no builder, or the builder is gone).
    fn left_to_builder(&mut self, module: &Arc<ModuleFile>) -> bool {
        if !self.builds_in_background(module) {
            return false;
        }
        if self.building.contains(&module.key) {
            return true;
        }
        let sent = self
            .builder
            .as_ref()
            .is_some_and(|b| b.send(module.clone()).is_ok());
        if sent {
            self.building.insert(module.key.clone());
        } else {
            self.builder = None;
        }
        sent
    }

    /// How long a process goes unsampled before its tables may be evicted to make room for a
    /// sampled process's (default [`DEFAULT_EVICT_IDLE_AFTER`]).
    pub fn evict_idle_after(mut self, after: Duration) -> Self {
        self.evict_idle_after = after;
        self
    }

    /// Notes that `pids` were just sampled. Returns those among them that have a module walked by
    /// frame pointers for lack of room which now fits, counting what idle processes would give
    /// up: describing them again loads it.
    pub fn note_active(&mut self, pids: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let now = Instant::now();
        let mut sampled = Vec::new();
        for pid in pids {
            if let Some(process) = self.known.get_mut(&pid) {
                process.last_active = now;
                sampled.push(pid);
            }
        }
        // Who is idle has changed (and time has passed since the last drain).
        self.eviction = None;
        let mut retry = Vec::new();
        for pid in sampled {
            let wanted = self.known[&pid]
                .keys
                .iter()
                .filter_map(|k| self.tables.get(k).and_then(|t| t.unloaded_rows))
                .max();
            if let Some(rows) = wanted
                && (self.alloc.largest_free() >= rows || self.plan_eviction(rows, pid).is_some())
            {
                retry.push(pid);
            }
        }
        retry
    }

    /// The processes evicted for room since the last call: they must be described again when
    /// they are next sampled.
    pub fn take_evicted(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.evicted)
    }

    /// Loads no tables: every mapping is walked by frame pointers (for comparing the two).
    pub fn frame_pointers_only(mut self, yes: bool) -> Self {
        self.frame_pointers_only = yes;
        self
    }

    /// Current figures.
    pub fn stats(&self) -> UnwindStats {
        UnwindStats {
            processes: self.known.len() as u64,
            rows_used: u64::from(self.alloc.used()),
            tables_loaded: self
                .tables
                .values()
                .filter(|t| t.kind == mapping_kind::TABLE)
                .count() as u64,
            frame_pointer_modules: self
                .tables
                .values()
                .filter(|t| t.kind == mapping_kind::FRAME_POINTER)
                .count() as u64,
            ..self.stats
        }
    }

    /// Bytes of executable code in `mappings` whose modules have no table yet: how much work
    /// describing the process would take (tables left to the builder thread cost nothing here).
    pub fn unbuilt_code_bytes(&self, mappings: &[ExecMapping]) -> u64 {
        let mut counted = HashSet::new();
        mappings
            .iter()
            .filter_map(|m| match &m.backing {
                Backing::File(module)
                    if !self.tables.contains_key(&module.key)
                        && !self.builds_in_background(module)
                        && counted.insert(&module.key) =>
                {
                    Some(code_bytes(module))
                }
                _ => None,
            })
            .sum()
    }

    /// True when the kernel knows `pid`'s mappings.
    pub fn knows(&self, pid: u32) -> bool {
        self.known.contains_key(&pid)
    }

    /// Tells the kernel how to unwind `pid`: its mappings, with tables loaded for their modules.
    pub fn load_process(
        &mut self,
        pid: u32,
        exec_mappings: &[ExecMapping],
    ) -> Result<(), UnwindMapError> {
        let previous = self.known.remove(&pid);
        self.eviction = None;
        let mut keys = Vec::new();
        let mut entries: Vec<Mapping> = Vec::new();
        for m in exec_mappings {
            let (kind, start, len, load_bias) = match &m.backing {
                Backing::File(module) => {
                    let load_bias = m.load_bias().unwrap_or(0);
                    let table = self.table_for(module, pid);
                    table.refs += 1;
                    let entry = (table.kind, table.start, table.len, load_bias);
                    // A table this process now holds is no longer freed by evicting others.
                    self.eviction = None;
                    keys.push(module.key.clone());
                    entry
                }
                Backing::Anonymous { .. } => (mapping_kind::JIT, 0, 0, 0),
            };
            entries.push(Mapping {
                begin: m.begin,
                end: m.end,
                load_bias,
                table_start: start,
                table_len: len,
                kind,
                _pad: 0,
            });
        }
        entries.sort_by_key(|m| m.begin);
        if entries.len() > MAX_MAPPINGS as usize {
            self.stats.mappings_dropped += (entries.len() - MAX_MAPPINGS as usize) as u64;
            entries.truncate(MAX_MAPPINGS as usize);
        }
        for (index, mapping) in entries.iter().enumerate() {
            let key = MappingKey {
                pid,
                index: index as u32,
            };
            self.mappings
                .insert(key, mapping, 0)
                .map_err(|source| map_err("MAPPINGS", source))?;
        }
        let count = entries.len() as u32;
        self.processes
            .insert(
                pid,
                ProcessInfo {
                    mapping_count: count,
                    _pad: 0,
                },
                0,
            )
            .map_err(|source| map_err("PROCESS_INFO", source))?;
        if let Some(old) = previous {
            for index in count..old.mapping_count {
                let _ = self.mappings.remove(&MappingKey { pid, index });
            }
            self.release(old.keys);
        }
        self.eviction = None;
        self.known.insert(
            pid,
            KnownProcess {
                mapping_count: count,
                keys,
                last_active: Instant::now(),
            },
        );
        Ok(())
    }

    /// Forgets `pid` (it exited or exec'd) and evicts the tables no process needs any more.
    pub fn unload_process(&mut self, pid: u32) {
        let Some(process) = self.known.remove(&pid) else {
            return;
        };
        self.eviction = None;
        let _ = self.processes.remove(&pid);
        for index in 0..process.mapping_count {
            let _ = self.mappings.remove(&MappingKey { pid, index });
        }
        self.release(process.keys);
    }

    /// The idle processes (oldest activity first) whose eviction frees a range of `rows`
    /// contiguous rows, or `None` when evicting every idle process would not. `loading` is the
    /// process being described, never evicted. Uses the cached plan; only when `loading` is
    /// among the processes it would evict (every process counts as idle when `evict_idle_after`
    /// is zero) is a plan without it worked out, and not kept.
    fn plan_eviction(&mut self, rows: u32, loading: u32) -> Option<Vec<u32>> {
        let plan = self.eviction.get_or_insert_with(|| {
            EvictionPlan::new(
                &self.known,
                &self.tables,
                &self.alloc,
                self.evict_idle_after,
                None,
            )
        });
        let steps = plan.evictions_for(rows);
        if steps.is_none_or(|steps| steps.iter().all(|&(pid, _)| pid != loading)) {
            return steps.map(|steps| steps.iter().map(|&(pid, _)| pid).collect());
        }
        let plan = EvictionPlan::new(
            &self.known,
            &self.tables,
            &self.alloc,
            self.evict_idle_after,
            Some(loading),
        );
        plan.evictions_for(rows)
            .map(|steps| steps.iter().map(|&(pid, _)| pid).collect())
    }

    /// Rows for a table of `rows`, evicting idle processes when that makes room.
    fn allocate(&mut self, rows: u32, loading: u32) -> Option<u32> {
        if let Some(start) = self.alloc.allocate(rows) {
            self.eviction = None;
            return Some(start);
        }
        for pid in self.plan_eviction(rows, loading)? {
            self.unload_process(pid);
            self.evicted.push(pid);
            self.stats.idle_processes_evicted += 1;
        }
        let start = self.alloc.allocate(rows);
        self.eviction = None;
        start
    }

    fn release(&mut self, keys: Vec<String>) {
        self.eviction = None;
        for key in keys {
            let Some(table) = self.tables.get_mut(&key) else {
                continue;
            };
            table.refs = table.refs.saturating_sub(1);
            if table.refs == 0 {
                self.built.remove(&key);
                let table = self.tables.remove(&key).expect("present");
                if table.kind == mapping_kind::TABLE {
                    self.alloc.release(table.start, table.len);
                    self.stats.tables_evicted += 1;
                }
            }
        }
    }

    /// The module's loaded table, building and loading it on first use, and loading it after
    /// all when it did not fit before and room can be made now.
    fn table_for(&mut self, module: &Arc<ModuleFile>, loading: u32) -> &mut LoadedTable {
        match self.tables.get(&module.key).map(|t| t.unloaded_rows) {
            None => {
                // Frame pointers until the builder's table arrives (`table_built`).
                let loaded = if self.left_to_builder(module) {
                    LoadedTable::frame_pointers()
                } else {
                    self.build_and_load(module, loading)
                };
                self.tables.insert(module.key.clone(), loaded);
            }
            Some(Some(rows))
                if self.alloc.largest_free() >= rows
                    || self.plan_eviction(rows, loading).is_some() =>
            {
                let loaded = self.build_and_load(module, loading);
                let table = self.tables.get_mut(&module.key).expect("present");
                // Processes described before keep their frame-pointer entries until described
                // again (their next sample asks for it); the reference counts carry over.
                table.start = loaded.start;
                table.len = loaded.len;
                table.kind = loaded.kind;
                table.unloaded_rows = loaded.unloaded_rows;
            }
            Some(_) => {}
        }
        self.tables.get_mut(&module.key).expect("inserted above")
    }

    fn build_and_load(&mut self, module: &ModuleFile, loading: u32) -> LoadedTable {
        let frame_pointers = LoadedTable::frame_pointers();
        if self.frame_pointers_only {
            return frame_pointers;
        }
        let built = self.built.remove(&module.key).map(Ok);
        let table = match built.unwrap_or_else(|| build_table(module)) {
            Ok(table) => table,
            Err(err) => {
                self.stats.table_errors += 1;
                tracing::debug!(module = %module.path, %err, "no unwind table; frame pointers");
                return frame_pointers;
            }
        };
        if table.rows.is_empty() || table.keeps_frame_pointers() {
            return frame_pointers;
        }
        let len = table.rows.len() as u32;
        let Some(start) = self.allocate(len, loading) else {
            // Kept for when room is made, rather than built again.
            self.built.insert(module.key.clone(), table);
            self.stats.tables_dropped += 1;
            tracing::warn!(
                module = %module.path,
                rows = len,
                used = self.alloc.used(),
                capacity = self.alloc.capacity(),
                "unwind row array full: this module is walked by frame pointers (raise unwind_rows)"
            );
            return LoadedTable {
                unloaded_rows: Some(len),
                ..frame_pointers
            };
        };
        self.rows.rows_mut()[start as usize..(start + len) as usize].copy_from_slice(&table.rows);
        tracing::debug!(module = %module.path, rows = len, "unwind table loaded");
        LoadedTable {
            start,
            len,
            kind: mapping_kind::TABLE,
            refs: 0,
            unloaded_rows: None,
        }
    }
}

impl LoadedTable {
    /// A module walked by frame pointers (no rows).
    fn frame_pointers() -> Self {
        Self {
            start: 0,
            len: 0,
            kind: mapping_kind::FRAME_POINTER,
            refs: 0,
            unloaded_rows: None,
        }
    }
}

/// Bytes of executable code the module maps.
fn code_bytes(module: &ModuleFile) -> u64 {
    module
        .segments
        .iter()
        .filter(|&&(_, _, _, executable)| executable)
        .map(|&(_, size, _, _)| size)
        .sum()
}

/// Builds `module`'s table from its `.eh_frame` (inline, or on the builder thread).
pub fn build_table(module: &ModuleFile) -> Result<UnwindTable, String> {
    // SAFETY: read-only private mapping of a file we hold open; see procmaps::read_module.
    let map = unsafe { memmap2::Mmap::map(&module.file) }.map_err(|e| e.to_string())?;
    table::build(&map).map_err(|e| e.to_string())
}

fn map_err(map: &'static str, source: MapError) -> UnwindMapError {
    UnwindMapError { map, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(start: u32, len: u32, refs: u32) -> LoadedTable {
        LoadedTable {
            start,
            len,
            kind: mapping_kind::TABLE,
            refs,
            unloaded_rows: None,
        }
    }

    fn process(keys: &[&str], idle_for: Duration) -> KnownProcess {
        KnownProcess {
            mapping_count: keys.len() as u32,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            last_active: Instant::now() - idle_for,
        }
    }

    /// Rows 0..100: `libc` (0..40) shared by the two idle processes, `a` (40..70) held by the
    /// oldest alone, `b` (70..90) by the active one; 10 rows free.
    fn host() -> (
        HashMap<u32, KnownProcess>,
        HashMap<String, LoadedTable>,
        RowAllocator,
    ) {
        let mut alloc = RowAllocator::new(100);
        let mut tables = HashMap::new();
        for (key, len, refs) in [("libc", 40, 3), ("a", 30, 1), ("b", 20, 1)] {
            let start = alloc.allocate(len).unwrap();
            tables.insert(key.to_string(), table(start, len, refs));
        }
        let known = HashMap::from([
            (1, process(&["libc", "a"], Duration::from_secs(90))),
            (2, process(&["libc"], Duration::from_secs(60))),
            (3, process(&["libc", "b"], Duration::ZERO)),
        ]);
        (known, tables, alloc)
    }

    /// The plan evicts the oldest idle processes first, frees a shared table only with its last
    /// idle holder, never counts an active process, and answers every size from one walk.
    #[test]
    fn eviction_plan_frees_the_fewest_oldest_idle_processes() {
        let (known, tables, alloc) = host();
        let plan = EvictionPlan::new(&known, &tables, &alloc, Duration::from_secs(30), None);
        // Evicting 1 frees `a` (40..70, beside nothing free); `libc` is still held by 2 and 3.
        assert_eq!(plan.steps, vec![(1, 30), (2, 30)]);
        assert_eq!(plan.evictions_for(10), Some(&[(1, 30)][..]));
        assert_eq!(plan.evictions_for(30), Some(&[(1, 30)][..]));
        assert_eq!(plan.evictions_for(31), None);
        // With 3 idle too, evicting everyone frees all 100 rows.
        let plan = EvictionPlan::new(&known, &tables, &alloc, Duration::ZERO, None);
        assert_eq!(plan.steps, vec![(1, 30), (2, 30), (3, 100)]);
        assert_eq!(plan.evictions_for(100).map(<[_]>::len), Some(3));
        // The process being described is left out.
        let plan = EvictionPlan::new(&known, &tables, &alloc, Duration::ZERO, Some(3));
        assert_eq!(plan.steps, vec![(1, 30), (2, 30)]);
    }

    /// With a builder thread, a large module's table is left to it: the process is described at
    /// once (its small modules with their tables, the large one by frame pointers), and when the
    /// table comes back the process is the one to describe again, which loads it. Loads the
    /// sampler for its maps, so it needs root.
    #[test]
    fn large_tables_are_built_in_the_background() {
        assert!(
            crate::bpf::is_root(),
            "this test loads the eBPF sampler for its maps: run it as root (cargo xtask test does)"
        );
        let pid = std::process::id();
        let config = crate::bpf::SamplerConfig {
            pids: vec![pid],
            ..Default::default()
        };
        let mut sampler = crate::bpf::Sampler::start(&config).expect("loading the sampler");
        let (_events, loader) = sampler.take_tracker_maps().expect("the tracker's maps");
        let (builder, to_build) = std::sync::mpsc::channel();
        let mut loader = loader.build_in_background(builder);
        // This test binary (unoptimized, tens of MB of code, no frame pointers) is large; libc
        // is not.
        let mappings = crate::procmaps::ModuleCache::default()
            .capture(std::path::Path::new("/proc"), pid)
            .expect("reading our own mappings");
        let large: HashSet<String> = mappings
            .iter()
            .filter_map(|m| match &m.backing {
                Backing::File(module) if code_bytes(module) > BUILD_INLINE_MAX_CODE_BYTES => {
                    Some(module.key.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(large.len(), 1, "the test binary alone is large: {large:?}");

        loader.load_process(pid, &mappings).unwrap();
        assert!(loader.is_building());
        let before = loader.stats();
        assert!(
            before.tables_loaded >= 1,
            "libc's table is loaded at once: {before:?}"
        );
        let module = to_build
            .try_recv()
            .expect("the large module was sent to the builder");
        assert!(large.contains(&module.key));
        assert!(to_build.try_recv().is_err(), "sent once");

        let again = loader.table_built((module.key.clone(), build_table(&module)));
        assert_eq!(again, [pid], "its process is described again");
        assert!(!loader.is_building());
        loader.load_process(pid, &mappings).unwrap();
        let after = loader.stats();
        assert_eq!(after.tables_loaded, before.tables_loaded + 1, "{after:?}");
        assert!(after.rows_used > before.rows_used);
        assert!(to_build.try_recv().is_err(), "nothing built twice");
    }
}
