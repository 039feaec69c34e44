//! Unwinding without frame pointers: compact tables built from each mapped file's `.eh_frame`
//! ([`table`]), loaded into the kernel's row array ([`rows`] allocates it) and described per
//! process, mapping by mapping, for the eBPF unwinder; [`queue`] orders that work, cheapest first.
//!
//! Tables are shared by module (build-id, or device and inode) across processes, built once,
//! and evicted when no process maps them any more. The row array has a fixed capacity
//! (`unwind_rows` in the configuration). When a table does not fit, the processes that have not
//! been sampled for a while ([`TableLoader::evict_idle_after`]) give up their description to make
//! room — most of a host's processes are idle, and they are described again when next sampled.
//! When even that is not enough, the table is not loaded, its mappings are walked by frame
//! pointers, and the drop is counted in [`UnwindStats`]; once the process is sampled and room
//! can be made, its table is loaded after all.

pub(crate) mod queue;
pub mod rows;
pub mod table;

use std::collections::HashMap;
use std::os::fd::{AsFd as _, AsRawFd as _};
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
        })
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
        let mut retry = Vec::new();
        for pid in pids {
            let Some(process) = self.known.get_mut(&pid) else {
                continue;
            };
            process.last_active = now;
            let wanted = process
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
    /// describing the process would take.
    pub fn unbuilt_code_bytes(&self, mappings: &[ExecMapping]) -> u64 {
        let mut counted = std::collections::HashSet::new();
        mappings
            .iter()
            .filter_map(|m| match &m.backing {
                Backing::File(module)
                    if !self.tables.contains_key(&module.key) && counted.insert(&module.key) =>
                {
                    Some(
                        module
                            .segments
                            .iter()
                            .filter(|&&(_, _, _, executable)| executable)
                            .map(|&(_, size, _, _)| size)
                            .sum::<u64>(),
                    )
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
        let mut keys = Vec::new();
        let mut entries: Vec<Mapping> = Vec::new();
        for m in exec_mappings {
            let (kind, start, len, load_bias) = match &m.backing {
                Backing::File(module) => {
                    let load_bias = m.load_bias().unwrap_or(0);
                    let table = self.table_for(module, pid);
                    table.refs += 1;
                    let entry = (table.kind, table.start, table.len, load_bias);
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
        let _ = self.processes.remove(&pid);
        for index in 0..process.mapping_count {
            let _ = self.mappings.remove(&MappingKey { pid, index });
        }
        self.release(process.keys);
    }

    /// The idle processes (oldest activity first) whose eviction frees a range of `rows`
    /// contiguous rows, or `None` when evicting every idle process would not. `loading` is the
    /// process being described, never evicted.
    fn plan_eviction(&self, rows: u32, loading: u32) -> Option<Vec<u32>> {
        let mut idle: Vec<(Instant, u32)> = self
            .known
            .iter()
            .filter(|&(&pid, p)| pid != loading && p.last_active.elapsed() >= self.evict_idle_after)
            .map(|(&pid, p)| (p.last_active, pid))
            .collect();
        idle.sort_unstable();
        let mut alloc = self.alloc.clone();
        let mut refs: HashMap<&str, u32> = HashMap::new();
        let mut chosen = Vec::new();
        for (_, pid) in idle {
            for key in &self.known[&pid].keys {
                let Some(table) = self.tables.get(key) else {
                    continue;
                };
                let left = refs.entry(key).or_insert(table.refs);
                *left = left.saturating_sub(1);
                if *left == 0 && table.kind == mapping_kind::TABLE {
                    alloc.release(table.start, table.len);
                }
            }
            chosen.push(pid);
            if alloc.largest_free() >= rows {
                return Some(chosen);
            }
        }
        None
    }

    /// Rows for a table of `rows`, evicting idle processes when that makes room.
    fn allocate(&mut self, rows: u32, loading: u32) -> Option<u32> {
        if let Some(start) = self.alloc.allocate(rows) {
            return Some(start);
        }
        for pid in self.plan_eviction(rows, loading)? {
            self.unload_process(pid);
            self.evicted.push(pid);
            self.stats.idle_processes_evicted += 1;
        }
        self.alloc.allocate(rows)
    }

    fn release(&mut self, keys: Vec<String>) {
        for key in keys {
            let Some(table) = self.tables.get_mut(&key) else {
                continue;
            };
            table.refs = table.refs.saturating_sub(1);
            if table.refs == 0 {
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
    fn table_for(&mut self, module: &ModuleFile, loading: u32) -> &mut LoadedTable {
        match self.tables.get(&module.key).map(|t| t.unloaded_rows) {
            None => {
                let loaded = self.build_and_load(module, loading);
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
        let frame_pointers = LoadedTable {
            start: 0,
            len: 0,
            kind: mapping_kind::FRAME_POINTER,
            refs: 0,
            unloaded_rows: None,
        };
        if self.frame_pointers_only {
            return frame_pointers;
        }
        let table = match read_table(module) {
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

fn read_table(module: &ModuleFile) -> Result<UnwindTable, Box<dyn std::error::Error>> {
    // SAFETY: read-only private mapping of a file we hold open; see procmaps::read_module.
    let map = unsafe { memmap2::Mmap::map(&module.file)? };
    Ok(table::build(&map)?)
}

fn map_err(map: &'static str, source: MapError) -> UnwindMapError {
    UnwindMapError { map, source }
}
