//! Naming frames with blazesym: user addresses are turned into (module, file offset) with the
//! mappings the [`crate::tracker`] captured while the process lived (or, for a process it has not
//! seen, by blazesym's normalizer), then symbolized from the very file the process mapped, opened
//! through its own view (function, file:line, inlined functions). JIT code is named from the
//! process's perf map; kernel addresses through kallsyms.
//!
//! Results are cached by (build-id or path, offset), so a frame seen again costs a hash lookup.
//! An address that cannot be named keeps its module and offset (`libfoo.so+0x1a2b`); it is never
//! dropped, and it is counted in [`LossCounters::unsymbolized_frames`].

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use blazesym::{
    Pid,
    normalize::{NormalizeOpts, Normalizer, UserMeta},
    symbolize::{
        CodeInfo, Input, Symbolized, Symbolizer as BlazeSymbolizer,
        source::{Elf, Kernel, Source},
    },
};

use profiler_ebpf::stack_flags;

use crate::{
    perfmap::PerfMapFile,
    process::{ProcessInspector, hex},
    procmaps::{Backing, ModuleFile},
    profile::{Frame, FrameId, LossCounters, ProfileBuilder, RawProfile, StackError},
    tracker::{ProcessSnapshot, ProcessTable},
};

/// Module name used for kernel frames.
pub const KERNEL_MODULE: &str = "[kernel]";

/// Module name used for frames named from a JIT's perf map.
pub const JIT_MODULE: &str = "[jit]";

/// Module name of the marker frame at the root of a cut stack.
pub const TRUNCATED_MODULE: &str = "[truncated]";

/// Entries kept in each frame cache before it is cleared, bounding the daemon's memory.
const MAX_CACHED_ADDRESSES: usize = 500_000;

/// Windows after which blazesym's own caches (parsed ELF and DWARF of every module seen) are
/// dropped: modules of exited processes would otherwise stay mapped for the daemon's lifetime.
const WINDOWS_BETWEEN_RESETS: u32 = 600;

/// Where a user address lives once normalized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ModuleKey {
    /// Build-id (hex) when the module has one, else its path: the cache key.
    key: String,
    path: String,
    build_id: Option<String>,
}

/// Counters describing the symbolizer's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    /// Addresses answered from the cache.
    pub cache_hits: u64,
    /// Addresses symbolized by blazesym.
    pub cache_misses: u64,
}

/// Turns [`RawProfile`]s into symbolized samples in a [`ProfileBuilder`], keeping its caches
/// across windows.
pub struct Symbolizer {
    blaze: BlazeSymbolizer,
    normalizer: Normalizer,
    inspector: ProcessInspector,
    processes: Option<ProcessTable>,
    user_cache: HashMap<(Arc<ModuleKey>, u64), Arc<[Frame]>>,
    kernel_cache: HashMap<u64, Arc<[Frame]>>,
    stats: SymbolizerStats,
    windows_since_reset: u32,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// A symbolizer that names processes with `inspector`.
    pub fn new(inspector: ProcessInspector) -> Self {
        Self {
            blaze: new_blazesym(),
            normalizer: new_normalizer(),
            inspector,
            processes: None,
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
            stats: SymbolizerStats::default(),
            windows_since_reset: 0,
        }
    }

    /// Names processes from the snapshots a [`crate::tracker::ProcessTracker`] keeps, so that
    /// processes that exited before the drain are still named from what they mapped.
    pub fn with_process_table(mut self, processes: ProcessTable) -> Self {
        self.processes = Some(processes);
        self
    }

    /// Cache statistics so far.
    pub fn stats(&self) -> SymbolizerStats {
        self.stats
    }

    /// Symbolizes a drained window into `builder`. Call it soon after the drain, while the
    /// sampled processes are still alive.
    #[tracing::instrument(name = "Symbolizer.symbolize_into", skip_all, fields(samples = raw.samples.len()))]
    pub fn symbolize_into(&mut self, raw: &RawProfile, builder: &mut ProfileBuilder) {
        self.windows_since_reset += 1;
        if self.windows_since_reset >= WINDOWS_BETWEEN_RESETS {
            self.blaze = new_blazesym();
            self.normalizer = new_normalizer();
            self.windows_since_reset = 0;
        }
        if self.user_cache.len() > MAX_CACHED_ADDRESSES {
            self.user_cache.clear();
        }
        if self.kernel_cache.len() > MAX_CACHED_ADDRESSES {
            self.kernel_cache.clear();
        }
        self.inspector.forget_exited();

        // Return addresses point after the call; look up the call instruction itself.
        let lookup_addrs = |stack: &[u64]| -> Vec<u64> {
            stack
                .iter()
                .enumerate()
                .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
                .collect()
        };

        let mut user_addrs: HashMap<u32, HashSet<u64>> = HashMap::new();
        let mut kernel_addrs: HashSet<u64> = HashSet::new();
        for s in &raw.samples {
            user_addrs
                .entry(s.pid)
                .or_default()
                .extend(lookup_addrs(&s.user_stack));
            kernel_addrs.extend(lookup_addrs(&s.kernel_stack));
        }

        let mut unsymbolized: HashSet<FrameId> = HashSet::new();
        let kernel_frames = self.symbolize_kernel(kernel_addrs);
        let mut user_frames: HashMap<(u32, u64), Arc<[Frame]>> = HashMap::new();
        let mut snapshots: HashMap<u32, Arc<ProcessSnapshot>> = HashMap::new();
        for (pid, addrs) in user_addrs {
            let addrs: Vec<u64> = addrs.into_iter().collect();
            let snapshot = self.snapshot(pid);
            let frames = match &snapshot {
                Some(snapshot) => self.symbolize_snapshot(pid, snapshot, &addrs),
                None => self.symbolize_user(pid, &addrs),
            };
            if let Some(snapshot) = snapshot {
                snapshots.insert(pid, snapshot);
            }
            for (addr, frames) in addrs.iter().zip(frames) {
                user_frames.insert((pid, *addr), frames);
            }
        }

        for s in &raw.samples {
            let process = match snapshots.get(&s.pid).or(self.snapshot(s.pid).as_ref()) {
                Some(snapshot) => snapshot.info.clone(),
                None => self.inspector.inspect(s.pid, &s.thread_name),
            };
            let process = builder.intern_process(process);
            let mut stack: Vec<FrameId> = Vec::new();
            for addr in lookup_addrs(&s.kernel_stack) {
                for frame in kernel_frames
                    .get(&addr)
                    .map(|f| f.to_vec())
                    .unwrap_or_default()
                {
                    let symbolized = frame.symbolized;
                    let id = builder.intern_frame(frame);
                    if !symbolized {
                        unsymbolized.insert(id);
                    }
                    stack.push(id);
                }
            }
            for addr in lookup_addrs(&s.user_stack) {
                for frame in user_frames
                    .get(&(s.pid, addr))
                    .map(|f| f.to_vec())
                    .unwrap_or_default()
                {
                    let symbolized = frame.symbolized;
                    let id = builder.intern_frame(frame);
                    if !symbolized {
                        unsymbolized.insert(id);
                    }
                    stack.push(id);
                }
            }
            if let Some(err) = s.stack_error {
                stack.push(builder.intern_frame(lost_stack_frame(err)));
            }
            if let Some(marker) = truncation_frame(s.stack_flags) {
                stack.push(builder.intern_frame(marker));
            }
            builder.add_sample(process, s.tid, &s.thread_name, stack, s.count);
        }
        let losses = LossCounters {
            unsymbolized_frames: unsymbolized.len() as u64,
            ..raw.losses
        };
        builder.add_window(raw.start, raw.duration, &losses);
    }

    fn snapshot(&self, pid: u32) -> Option<Arc<ProcessSnapshot>> {
        let table = self.processes.as_ref()?;
        let table = table.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&pid).cloned()
    }

    /// Names addresses with the mappings captured while the process lived.
    fn symbolize_snapshot(
        &mut self,
        pid: u32,
        snapshot: &ProcessSnapshot,
        addrs: &[u64],
    ) -> Vec<Arc<[Frame]>> {
        let mut result: Vec<Option<Arc<[Frame]>>> = vec![None; addrs.len()];
        let mut modules: HashMap<*const ModuleFile, (Arc<ModuleFile>, Arc<ModuleKey>)> =
            HashMap::new();
        let mut misses: HashMap<*const ModuleFile, Vec<(usize, u64)>> = HashMap::new();
        let mut perf_map: Option<Option<Arc<PerfMapFile>>> = None;
        for (i, &addr) in addrs.iter().enumerate() {
            let Some(mapping) = snapshot.mapping_of(addr) else {
                result[i] = Some(vec![unknown_frame("[unknown]", None, addr, false)].into());
                continue;
            };
            match &mapping.backing {
                Backing::File(module) => {
                    let ptr = Arc::as_ptr(module);
                    let (_, key) = modules.entry(ptr).or_insert_with(|| {
                        (
                            module.clone(),
                            Arc::new(ModuleKey {
                                key: module.key.clone(),
                                path: module.path.clone(),
                                build_id: module.build_id.clone(),
                            }),
                        )
                    });
                    let offset = mapping.file_offset(addr);
                    match self.user_cache.get(&(key.clone(), offset)) {
                        Some(frames) => {
                            self.stats.cache_hits += 1;
                            result[i] = Some(frames.clone());
                        }
                        None => misses.entry(ptr).or_default().push((i, offset)),
                    }
                }
                Backing::Anonymous { name } => {
                    let jit = perf_map
                        .get_or_insert_with(|| {
                            snapshot.perf_map.clone().or_else(|| {
                                PerfMapFile::open(Path::new("/proc"), pid).map(Arc::new)
                            })
                        })
                        .as_ref()
                        .and_then(|m| m.lookup(addr));
                    let frame = match jit {
                        Some(function) => Frame {
                            function,
                            module: JIT_MODULE.to_string(),
                            build_id: None,
                            file: None,
                            line: None,
                            inlined: false,
                            address: addr,
                            kernel: false,
                            symbolized: true,
                        },
                        None => {
                            let module = if name.is_empty() { "[anon]" } else { name };
                            unknown_frame(module, None, addr - mapping.begin, false)
                        }
                    };
                    result[i] = Some(vec![frame].into());
                }
            }
        }
        for (ptr, wanted) in misses {
            let (module, key) = &modules[&ptr];
            let path = module.fd_path();
            self.resolve_offsets(key, path, &wanted, &mut result);
        }
        result
            .into_iter()
            .zip(addrs)
            .map(|(f, &a)| {
                f.unwrap_or_else(|| vec![unknown_frame("[unknown]", None, a, false)].into())
            })
            .collect()
    }

    fn symbolize_kernel(&mut self, addrs: HashSet<u64>) -> HashMap<u64, Arc<[Frame]>> {
        let mut out = HashMap::new();
        let mut misses = Vec::new();
        for addr in addrs {
            match self.kernel_cache.get(&addr) {
                Some(frames) => {
                    self.stats.cache_hits += 1;
                    out.insert(addr, frames.clone());
                }
                None => misses.push(addr),
            }
        }
        if !misses.is_empty() {
            self.stats.cache_misses += misses.len() as u64;
            let src = Source::Kernel(Kernel::default());
            let results = self
                .blaze
                .symbolize(&src, Input::AbsAddr(&misses))
                .unwrap_or_else(|err| {
                    tracing::warn!(%err, "kernel symbolization failed; keeping addresses");
                    Vec::new()
                });
            for (i, &addr) in misses.iter().enumerate() {
                let frames: Arc<[Frame]> = match results.get(i) {
                    Some(Symbolized::Sym(sym)) => {
                        frames_of(sym, KERNEL_MODULE, None, addr, true).into()
                    }
                    _ => vec![unknown_frame(KERNEL_MODULE, None, addr, true)].into(),
                };
                self.kernel_cache.insert(addr, frames.clone());
                out.insert(addr, frames);
            }
        }
        out
    }

    fn symbolize_user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Arc<[Frame]>> {
        let opts = NormalizeOpts {
            sorted_addrs: false,
            map_files: false,
            ..Default::default()
        };
        let normalized =
            match self
                .normalizer
                .normalize_user_addrs_opts(Pid::from(pid), addrs, &opts)
            {
                Ok(n) => n,
                Err(err) => {
                    tracing::debug!(
                        pid,
                        ?err,
                        "process exited before its addresses were normalized"
                    );
                    return addrs
                        .iter()
                        .map(|&a| Arc::from(vec![unknown_frame("[unknown]", None, a, false)]))
                        .collect();
                }
            };
        let metas: Vec<Option<Arc<ModuleKey>>> = normalized
            .meta
            .iter()
            .map(|m| match m {
                UserMeta::Elf(elf) => {
                    let path = elf.path.to_string_lossy().into_owned();
                    let build_id = elf.build_id.as_ref().map(|b| hex(b));
                    Some(Arc::new(ModuleKey {
                        key: build_id.clone().unwrap_or_else(|| path.clone()),
                        path,
                        build_id,
                    }))
                }
                _ => None,
            })
            .collect();

        let mut result: Vec<Option<Arc<[Frame]>>> = vec![None; addrs.len()];
        let mut misses: HashMap<Arc<ModuleKey>, Vec<(usize, u64)>> = HashMap::new();
        for (i, &(offset, meta_idx)) in normalized.outputs.iter().enumerate() {
            match metas.get(meta_idx).cloned().flatten() {
                Some(module) => match self.user_cache.get(&(module.clone(), offset)) {
                    Some(frames) => {
                        self.stats.cache_hits += 1;
                        result[i] = Some(frames.clone());
                    }
                    None => misses.entry(module).or_default().push((i, offset)),
                },
                None => {
                    tracing::debug!(pid, addr = addrs[i], meta = ?normalized.meta.get(meta_idx), "address not in a known module");
                    result[i] =
                        Some(vec![unknown_frame("[unknown]", None, addrs[i], false)].into());
                }
            }
        }
        for (module, wanted) in misses {
            let path = readable_path(pid, &module.path);
            self.resolve_offsets(&module, path, &wanted, &mut result);
        }
        result
            .into_iter()
            .zip(addrs)
            .map(|(f, &a)| {
                f.unwrap_or_else(|| vec![unknown_frame("[unknown]", None, a, false)].into())
            })
            .collect()
    }

    /// Names the file offsets `wanted` ((result index, offset)) of one module from the ELF at
    /// `path`, caching each answer; an offset blazesym cannot name keeps module + offset.
    fn resolve_offsets(
        &mut self,
        module: &Arc<ModuleKey>,
        path: PathBuf,
        wanted: &[(usize, u64)],
        result: &mut [Option<Arc<[Frame]>>],
    ) {
        self.stats.cache_misses += wanted.len() as u64;
        let offsets: Vec<u64> = wanted.iter().map(|&(_, o)| o).collect();
        let src = Source::Elf(Elf::new(path));
        let symbols = self
            .blaze
            .symbolize(&src, Input::FileOffset(&offsets))
            .unwrap_or_else(|err| {
                tracing::debug!(module = %module.path, %err, "module could not be read; keeping offsets");
                Vec::new()
            });
        for (j, &(i, offset)) in wanted.iter().enumerate() {
            let frames: Arc<[Frame]> = match symbols.get(j) {
                Some(Symbolized::Sym(sym)) => {
                    frames_of(sym, &module.path, module.build_id.clone(), offset, false).into()
                }
                _ => vec![unknown_frame(
                    &module.path,
                    module.build_id.clone(),
                    offset,
                    false,
                )]
                .into(),
            };
            self.user_cache
                .insert((module.clone(), offset), frames.clone());
            result[i] = Some(frames);
        }
    }
}

/// True when `/proc/kallsyms` shows real addresses to this process: with `kernel.kptr_restrict`
/// at 1 that needs CAP_SYSLOG, at 2 nobody gets them, and kernel frames stay unnamed.
pub fn kernel_symbols_readable() -> bool {
    use std::io::BufRead as _;
    let Ok(file) = std::fs::File::open("/proc/kallsyms") else {
        return false;
    };
    std::io::BufReader::new(file)
        .lines()
        .take(16)
        .map_while(Result::ok)
        .any(|line| {
            line.split_whitespace()
                .next()
                .and_then(|addr| u64::from_str_radix(addr, 16).ok())
                .is_some_and(|addr| addr != 0)
        })
}

fn new_blazesym() -> BlazeSymbolizer {
    BlazeSymbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

fn new_normalizer() -> Normalizer {
    Normalizer::builder()
        .enable_build_ids(true)
        .enable_build_id_caching(true)
        .build()
}

/// A module path as this process can open it: through the target's mount namespace when the
/// path does not exist in ours (containers).
fn readable_path(pid: u32, path: &str) -> PathBuf {
    let direct = Path::new(path);
    if direct.exists() {
        return direct.to_path_buf();
    }
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// The frames of one symbolized address, innermost (inlined) first.
fn frames_of(
    sym: &blazesym::symbolize::Sym<'_>,
    module: &str,
    build_id: Option<String>,
    address: u64,
    kernel: bool,
) -> Vec<Frame> {
    let (file, line) = code_location(sym.code_info.as_deref());
    let outer = Frame {
        function: sym.name.to_string(),
        module: module.to_string(),
        build_id: build_id.clone(),
        file,
        line,
        inlined: false,
        address,
        kernel,
        symbolized: true,
    };
    // blazesym lists inlined calls outermost first (f inlines g inlines h: [g, h]); the address
    // is in the innermost, so a leaf-first stack reads h, g, f.
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inl| {
            let (file, line) = code_location(inl.code_info.as_ref());
            Frame {
                function: inl.name.to_string(),
                module: module.to_string(),
                build_id: build_id.clone(),
                file,
                line,
                inlined: true,
                address,
                kernel,
                symbolized: true,
            }
        })
        .collect();
    frames.push(outer);
    frames
}

fn code_location(info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(info) => (
            Some(info.to_path().to_string_lossy().into_owned()),
            info.line,
        ),
        None => (None, None),
    }
}

fn unknown_frame(module: &str, build_id: Option<String>, address: u64, kernel: bool) -> Frame {
    let base = Path::new(module)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| module.to_string());
    Frame {
        function: format!("{base}+{address:#x}"),
        module: module.to_string(),
        build_id,
        file: None,
        line: None,
        inlined: false,
        address,
        kernel,
        symbolized: false,
    }
}

/// The marker frame at the root of a cut stack, saying where the walk stopped.
fn truncation_frame(flags: u32) -> Option<Frame> {
    let why = if flags & stack_flags::TRUNCATED_DEPTH != 0 {
        "depth limit"
    } else if flags & stack_flags::TRUNCATED_NO_UNWIND_INFO != 0 {
        "no unwind info"
    } else if flags & stack_flags::TRUNCATED_READ_ERROR != 0 {
        "unreadable stack"
    } else if flags & stack_flags::TRUNCATED_TAIL_CALL != 0 {
        "unwinder limit"
    } else {
        return None;
    };
    Some(Frame {
        function: format!("[truncated: {why}]"),
        module: TRUNCATED_MODULE.to_string(),
        build_id: None,
        file: None,
        line: None,
        inlined: false,
        address: 0,
        kernel: false,
        // A name of our own, not an address to resolve: the collector keeps it as it is.
        symbolized: true,
    })
}

fn lost_stack_frame(err: StackError) -> Frame {
    let function = match err {
        StackError::StackMapFull => "[stack lost: stack map full]",
    };
    Frame {
        function: function.to_string(),
        module: "[unknown]".to_string(),
        build_id: None,
        file: None,
        line: None,
        inlined: false,
        address: 0,
        kernel: false,
        symbolized: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RawSample;

    #[inline(never)]
    fn a_known_function() -> u64 {
        std::hint::black_box(42)
    }

    /// An address inside this test binary is named, and the second lookup hits the cache.
    #[test]
    fn names_own_function_and_caches() {
        let addr = a_known_function as fn() -> u64 as usize as u64;
        let raw = RawProfile {
            samples: vec![RawSample {
                pid: std::process::id(),
                tid: 1,
                thread_name: "t".into(),
                user_stack: vec![addr + 1],
                kernel_stack: vec![],
                stack_flags: 0,
                stack_error: None,
                count: 3,
            }],
            ..Default::default()
        };
        let mut symbolizer = Symbolizer::new(ProcessInspector::new(vec![]));
        let mut builder = ProfileBuilder::new(99);
        symbolizer.symbolize_into(&raw, &mut builder);
        symbolizer.symbolize_into(&raw, &mut builder);
        let profile = builder.finish(crate::energy::EnergyReport::Unavailable {
            reason: "test".into(),
        });
        assert_eq!(profile.total_samples(), 6);
        let leaf = &profile.frames[profile.samples[0].stack[0] as usize];
        assert!(leaf.function.contains("a_known_function"), "{leaf:?}");
        assert!(
            leaf.build_id.is_some(),
            "test binaries have a build-id: {leaf:?}"
        );
        assert_eq!(symbolizer.stats().cache_misses, 1);
        assert_eq!(symbolizer.stats().cache_hits, 1);
    }

    /// A lost stack becomes a placeholder frame; the sample is kept.
    #[test]
    fn lost_stack_keeps_the_sample() {
        let raw = RawProfile {
            samples: vec![RawSample {
                pid: u32::MAX - 1,
                tid: 1,
                thread_name: "gone".into(),
                user_stack: vec![],
                kernel_stack: vec![],
                stack_flags: 0,
                stack_error: Some(StackError::StackMapFull),
                count: 2,
            }],
            ..Default::default()
        };
        let mut symbolizer = Symbolizer::new(ProcessInspector::new(vec![]));
        let mut builder = ProfileBuilder::new(99);
        symbolizer.symbolize_into(&raw, &mut builder);
        let profile = builder.finish(crate::energy::EnergyReport::Unavailable {
            reason: "test".into(),
        });
        assert_eq!(profile.total_samples(), 2);
        assert!(profile.frames[0].function.contains("stack map full"));
    }
}
