//! Naming frames with blazesym: user addresses are normalized to (module, file offset) while the
//! process lives, then symbolized from the module's ELF and DWARF (function, file:line, inlined
//! functions); kernel addresses through kallsyms.
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

use crate::{
    process::{ProcessInspector, hex},
    profile::{Frame, FrameId, LossCounters, ProfileBuilder, RawProfile, StackError},
};

/// Module name used for kernel frames.
pub const KERNEL_MODULE: &str = "[kernel]";

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
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
            stats: SymbolizerStats::default(),
            windows_since_reset: 0,
        }
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
        for (pid, addrs) in user_addrs {
            let addrs: Vec<u64> = addrs.into_iter().collect();
            for (addr, frames) in addrs.iter().zip(self.symbolize_user(pid, &addrs)) {
                user_frames.insert((pid, *addr), frames);
            }
        }

        for s in &raw.samples {
            let process = self.inspector.inspect(s.pid, &s.thread_name);
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
            builder.add_sample(process, s.tid, &s.thread_name, stack, s.count);
        }
        let losses = LossCounters {
            unsymbolized_frames: unsymbolized.len() as u64,
            ..raw.losses
        };
        builder.add_window(raw.start, raw.duration, &losses);
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
            self.stats.cache_misses += wanted.len() as u64;
            let offsets: Vec<u64> = wanted.iter().map(|&(_, o)| o).collect();
            let elf_path = readable_path(pid, &module.path);
            let src = Source::Elf(Elf::new(elf_path));
            let symbols = self.blaze.symbolize(&src, Input::FileOffset(&offsets)).unwrap_or_else(|err| {
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
        result
            .into_iter()
            .zip(addrs)
            .map(|(f, &a)| {
                f.unwrap_or_else(|| vec![unknown_frame("[unknown]", None, a, false)].into())
            })
            .collect()
    }
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

fn lost_stack_frame(err: StackError) -> Frame {
    let function = match err {
        StackError::Collision => "[stack lost: StackTrace map collision]",
        StackError::Other => "[stack lost: bpf_get_stackid error]",
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
                stack_error: Some(StackError::Collision),
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
        assert!(profile.frames[0].function.contains("collision"));
    }
}
