//! A process's executable mappings, read from `/proc/PID/maps`, with each mapped file opened
//! through the process's own view of it (`/proc/PID/map_files/…`), never by its path on the host:
//! a container's binary is read from the container, a deleted or replaced binary from the
//! mapping itself.
//!
//! Opened files are shared by (device, inode) across processes ([`ModuleCache`]) and kept open
//! while any process maps them, so a process that exits before its samples are symbolized is
//! still named from the very file it ran.

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    sync::{Arc, Weak},
};

use crate::process::hex;

/// A mapped ELF file, opened once for every process that maps it.
#[derive(Debug)]
pub struct ModuleFile {
    /// The path as the process sees it (for display; never opened by the host).
    pub path: String,
    /// GNU build-id, hex, when the file has one.
    pub build_id: Option<String>,
    /// Build-id, or device and inode when there is none: the key tables and symbols are cached by.
    pub key: String,
    /// The open file.
    pub file: File,
    /// Its PT_LOAD segments: (file offset, file size, virtual address, executable).
    pub segments: Vec<(u64, u64, u64, bool)>,
}

impl ModuleFile {
    /// A path this process can open the same file by, for libraries that take paths.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// The ELF virtual address a file offset is loaded at, by the segment that holds it.
    /// Segments are mapped from page boundaries, so an executable mapping's offset may lie a
    /// little before its segment's (inside the page of the previous one): executable segments are
    /// tried first, with their page-aligned start.
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        const PAGE: u64 = 4096;
        let holds = |&&(off, size, _, _): &&(u64, u64, u64, bool)| {
            offset >= off & !(PAGE - 1) && offset < off + size.max(1)
        };
        self.segments
            .iter()
            .filter(|s| s.3)
            .find(holds)
            .or_else(|| self.segments.iter().find(holds))
            .map(|&(off, _, vaddr, _)| vaddr.wrapping_add(offset).wrapping_sub(off))
    }
}

/// What backs an executable mapping.
#[derive(Clone, Debug)]
pub enum Backing {
    /// An ELF file.
    File(Arc<ModuleFile>),
    /// Anonymous memory or a non-ELF file: JIT code, named by perf maps.
    Anonymous {
        /// The name `/proc/PID/maps` gives it (`[anon:…]`, `//anon`, empty, a memfd path).
        name: String,
    },
}

/// One executable mapping of a process.
#[derive(Clone, Debug)]
pub struct ExecMapping {
    /// First address.
    pub begin: u64,
    /// One past the last address.
    pub end: u64,
    /// File offset of `begin`.
    pub offset: u64,
    /// What is mapped.
    pub backing: Backing,
}

impl ExecMapping {
    /// Runtime address minus ELF virtual address, for a file mapping.
    pub fn load_bias(&self) -> Option<u64> {
        let Backing::File(module) = &self.backing else {
            return None;
        };
        let vaddr = module.vaddr_of_offset(self.offset)?;
        Some(self.begin.wrapping_sub(vaddr))
    }

    /// The file offset of a runtime address in this mapping.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.begin + self.offset
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine {
    /// First address.
    pub begin: u64,
    /// One past the last address.
    pub end: u64,
    /// `r-xp` style permissions.
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// Device, `major:minor` in hex.
    pub dev: String,
    /// Inode; 0 for anonymous memory.
    pub inode: u64,
    /// Path or pseudo-name; may be empty.
    pub name: String,
}

/// Parses `/proc/PID/maps` text; malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapsLine> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let (range, perms, offset, dev, inode) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            let name = fields.next().unwrap_or("").trim_start().to_string();
            let (begin, end) = range.split_once('-')?;
            Some(MapsLine {
                begin: u64::from_str_radix(begin, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms: perms.to_string(),
                offset: u64::from_str_radix(offset, 16).ok()?,
                dev: dev.to_string(),
                inode: inode.parse().ok()?,
                name,
            })
        })
        .collect()
}

/// Opened module files by (device, inode), shared across processes. Entries go when the last
/// process mapping them is forgotten.
#[derive(Debug, Default)]
pub struct ModuleCache {
    files: HashMap<(String, u64), Weak<ModuleFile>>,
    /// Files that could not be opened or parsed, by reason: never fatal, always counted.
    pub open_failures: u64,
}

impl ModuleCache {
    /// The executable mappings of `pid`, with their files opened through `proc_root/PID`.
    pub fn capture(&mut self, proc_root: &Path, pid: u32) -> io::Result<Vec<ExecMapping>> {
        let dir = proc_root.join(pid.to_string());
        let text = std::fs::read_to_string(dir.join("maps"))?;
        let mut out = Vec::new();
        for line in parse_maps(&text) {
            if !line.perms.contains('x') {
                continue;
            }
            let pseudo = line.inode == 0 || line.name.is_empty() || line.name.starts_with('[');
            // The vDSO is walked by frame pointers like JIT code; it is tiny and rarely sampled.
            let backing = if pseudo {
                Backing::Anonymous { name: line.name }
            } else {
                match self.open(&dir, &line) {
                    Ok(module) => Backing::File(module),
                    Err(err) => {
                        self.open_failures += 1;
                        tracing::debug!(pid, path = %line.name, %err, "mapped file not opened");
                        Backing::Anonymous { name: line.name }
                    }
                }
            };
            out.push(ExecMapping {
                begin: line.begin,
                end: line.end,
                offset: line.offset,
                backing,
            });
        }
        self.files.retain(|_, weak| weak.strong_count() > 0);
        Ok(out)
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.files
            .values()
            .filter(|weak| weak.strong_count() > 0)
            .count()
    }

    fn open(&mut self, proc_dir: &Path, line: &MapsLine) -> io::Result<Arc<ModuleFile>> {
        let key = (line.dev.clone(), line.inode);
        if let Some(module) = self.files.get(&key).and_then(Weak::upgrade) {
            return Ok(module);
        }
        let file = open_mapped_file(proc_dir, line)?;
        let module = Arc::new(read_module(file, line)?);
        self.files.insert(key, Arc::downgrade(&module));
        Ok(module)
    }
}

/// Opens the file behind a mapping: by `map_files` (exactly what is mapped, whatever the mount
/// namespace), else by the path under the process's root. Only regular files with the mapping's
/// inode are accepted; opening never blocks (FIFOs, devices).
fn open_mapped_file(proc_dir: &Path, line: &MapsLine) -> io::Result<File> {
    let by_map_files = proc_dir
        .join("map_files")
        .join(format!("{:x}-{:x}", line.begin, line.end));
    let by_root = proc_dir.join("root").join(
        line.name
            .trim_end_matches(" (deleted)")
            .trim_start_matches('/'),
    );
    let mut last_err = io::Error::other("no way to open the mapped file");
    for path in [by_map_files, by_root] {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path);
        match opened {
            Ok(file) => {
                let meta = file.metadata()?;
                if !meta.file_type().is_file() {
                    last_err =
                        io::Error::other(format!("{} is not a regular file", path.display()));
                    continue;
                }
                if meta.ino() != line.inode || !same_device(meta.dev(), &line.dev) {
                    last_err = io::Error::other(format!(
                        "{} is not the mapped file (device and inode {:x}:{} != {}:{})",
                        path.display(),
                        meta.dev(),
                        meta.ino(),
                        line.dev,
                        line.inode
                    ));
                    continue;
                }
                return Ok(file);
            }
            Err(err) => last_err = err,
        }
    }
    Err(last_err)
}

/// True when `dev` (from `stat`) is the `major:minor` (hex) device `/proc/PID/maps` names.
fn same_device(dev: u64, maps_dev: &str) -> bool {
    let Some((major, minor)) = maps_dev.split_once(':') else {
        return false;
    };
    let (Ok(major), Ok(minor)) = (
        u32::from_str_radix(major, 16),
        u32::from_str_radix(minor, 16),
    ) else {
        return false;
    };
    libc::major(dev) == major && libc::minor(dev) == minor
}

fn read_module(file: File, line: &MapsLine) -> io::Result<ModuleFile> {
    use object::{Object as _, ObjectSegment as _};
    // SAFETY: the mapping is read-only and private; a file truncated under us can fault, which
    // is the same risk every symbolizer that maps ELF files takes (blazesym included).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let elf = object::File::parse(&*map).map_err(|e| io::Error::other(e.to_string()))?;
    let build_id = elf.build_id().ok().flatten().map(hex);
    let segments = elf
        .segments()
        .map(|s| {
            let (off, size) = s.file_range();
            const PF_X: u32 = 1;
            let exec =
                matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0);
            (off, size, s.address(), exec)
        })
        .collect();
    let key = build_id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", line.dev, line.inode));
    Ok(ModuleFile {
        path: line.name.trim_end_matches(" (deleted)").to_string(),
        build_id,
        key,
        file,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat device number matches the maps line's `major:minor`, and only that.
    #[test]
    fn devices_compare_by_major_and_minor() {
        let dev = libc::makedev(0xfd, 0x01);
        assert!(same_device(dev, "fd:01"));
        assert!(!same_device(dev, "fd:02"));
        assert!(!same_device(dev, "garbage"));
    }

    /// Lines with and without names, with spaces in the name, and garbage.
    #[test]
    fn parses_maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a21000 r-xp 00002000 fd:01 1234 /usr/bin/my prog
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                  [vdso]
garbage
";
        let lines = parse_maps(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].name, "/usr/bin/my prog");
        assert_eq!(
            (lines[0].begin, lines[0].offset, lines[0].inode),
            (0x55d0c0a00000, 0x2000, 1234)
        );
        assert_eq!(lines[1].name, "");
        assert_eq!(lines[2].name, "[vdso]");
    }

    /// This process's own executable mapping is captured, opened, and its load bias maps the
    /// address of a function here to that function's ELF address.
    #[test]
    fn captures_own_mappings() {
        let mut cache = ModuleCache::default();
        let maps = cache
            .capture(Path::new("/proc"), std::process::id())
            .unwrap();
        let here = captures_own_mappings as fn() as usize as u64;
        let m = maps
            .iter()
            .find(|m| m.begin <= here && here < m.end)
            .expect("mapping of this function");
        let Backing::File(module) = &m.backing else {
            panic!("not a file mapping: {m:?}")
        };
        assert!(module.build_id.is_some() || module.key.contains(':'));
        let bias = m.load_bias().unwrap();
        let vaddr = here - bias;
        // The function's ELF address, from the file's own symbol table. The test's closure (the
        // harness's wrapper) carries the same name in its symbol, so look for the one at `vaddr`.
        let data = std::fs::read("/proc/self/exe").unwrap();
        let elf = object::File::parse(&*data).unwrap();
        use object::{Object as _, ObjectSymbol as _};
        let named: Vec<u64> = elf
            .symbols()
            .filter(|s| s.name().is_ok_and(|n| n.contains("captures_own_mappings")))
            .map(|s| s.address())
            .collect();
        assert!(
            named.contains(&vaddr),
            "{vaddr:#x} is none of the symbols named after this test: {named:x?}"
        );
        assert!(cache.open_files() >= 1);
    }
}
