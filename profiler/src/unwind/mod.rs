//! Unwinding without frame pointers: compact tables built from each mapped file's `.eh_frame`
//! ([`table`]), loaded into the kernel's row array ([`rows`] allocates it) and described per
//! process, mapping by mapping, for the eBPF unwinder; [`queue`] orders that work, cheapest first.
//!
//! Tables are shared by module (build-id, or device and inode) across processes, built once,
//! and evicted when no process maps them any more. The row array has a fixed capacity
//! (`unwind_rows` in the configuration): a table that does not fit is not loaded, its mappings
//! are walked by frame pointers, and the drop is counted in [`UnwindStats`].

pub(crate) mod queue;
pub mod rows;
pub mod table;

use std::collections::HashMap;

use std::os::fd::{AsFd as _, AsRawFd as _};

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

/// A module's table as loaded.
#[derive(Debug)]
struct LoadedTable {
    start: u32,
    len: u32,
    kind: u32,
    /// Processes mapping the module.
    refs: u32,
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
    /// Per process: mapping count written and the module keys it holds a reference on.
    known: HashMap<u32, (u32, Vec<String>)>,
    stats: UnwindStats,
    frame_pointers_only: bool,
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
        })
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
                    let table = self.table_for(module);
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
        if let Some((old_count, old_keys)) = previous {
            for index in count..old_count {
                let _ = self.mappings.remove(&MappingKey { pid, index });
            }
            self.release(old_keys);
        }
        self.known.insert(pid, (count, keys));
        Ok(())
    }

    /// Forgets `pid` (it exited or exec'd) and evicts the tables no process needs any more.
    pub fn unload_process(&mut self, pid: u32) {
        let Some((count, keys)) = self.known.remove(&pid) else {
            return;
        };
        let _ = self.processes.remove(&pid);
        for index in 0..count {
            let _ = self.mappings.remove(&MappingKey { pid, index });
        }
        self.release(keys);
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

    /// The module's loaded table, building and loading it on first use.
    fn table_for(&mut self, module: &ModuleFile) -> &mut LoadedTable {
        if !self.tables.contains_key(&module.key) {
            let loaded = self.build_and_load(module);
            self.tables.insert(module.key.clone(), loaded);
        }
        self.tables.get_mut(&module.key).expect("inserted above")
    }

    fn build_and_load(&mut self, module: &ModuleFile) -> LoadedTable {
        let frame_pointers = LoadedTable {
            start: 0,
            len: 0,
            kind: mapping_kind::FRAME_POINTER,
            refs: 0,
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
        let Some(start) = self.alloc.allocate(len) else {
            self.stats.tables_dropped += 1;
            tracing::warn!(
                module = %module.path,
                rows = len,
                used = self.alloc.used(),
                capacity = self.alloc.capacity(),
                "unwind row array full: this module is walked by frame pointers (raise unwind_rows)"
            );
            return frame_pointers;
        };
        self.rows.rows_mut()[start as usize..(start + len) as usize].copy_from_slice(&table.rows);
        tracing::debug!(module = %module.path, rows = len, "unwind table loaded");
        LoadedTable {
            start,
            len,
            kind: mapping_kind::TABLE,
            refs: 0,
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
