//! The on-disk symbol store: one directory per GNU build-id holding the best debug file seen
//! for it (`debug`) and what is known about it (`meta.json`).
//!
//! The directory layout is the index: `<dir>/<build-id>/{debug,meta.json}`. Both files are
//! written to a temporary name and renamed into place, so a reader (the resolver in `serve`)
//! never sees half a file, and no lock is needed between `symbols upload` and `serve`.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};
use serde::{Deserialize, Serialize};

use super::SymbolsError;

/// How much a file can name, worst first: a better file replaces a worse one, never the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Quality {
    /// Only `.dynsym`: exported functions, no file:line.
    DynsymOnly = 1,
    /// A `.symtab`: every function's name, no file:line.
    Symtab = 2,
    /// DWARF (`.debug_info`): names, file:line and inlined functions.
    Dwarf = 3,
}

impl Quality {
    /// The name `symbols list` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::DynsymOnly => "dynsym-only",
            Self::Symtab => "symtab",
            Self::Dwarf => "dwarf",
        }
    }
}

/// What an ELF file offers, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// GNU build-id, lowercase hex.
    pub build_id: String,
    /// What the file can name.
    pub quality: Quality,
}

/// Reads the build-id and quality of an ELF file's bytes; refuses anything else with a clear
/// error (`what` names the file in it).
pub fn inspect(data: &[u8], what: &str) -> Result<ElfInfo, SymbolsError> {
    let invalid = |reason: String| SymbolsError::InvalidFile {
        file: what.to_owned(),
        reason,
    };
    let file = object::File::parse(data).map_err(|e| invalid(format!("not an ELF file ({e})")))?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(invalid(format!(
            "a {:?} file, not ELF; upload ELF binaries or debug files",
            file.format()
        )));
    }
    let build_id = file
        .build_id()
        .map_err(|e| invalid(format!("unreadable build-id note ({e})")))?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            invalid("no GNU build-id note (.note.gnu.build-id); link with --build-id".to_owned())
        })?;
    let has = |name: &str| {
        file.section_by_name(name).is_some_and(|s| {
            s.size() > 0
                && s.kind() != object::SectionKind::UninitializedData
                && s.file_range().is_some_and(|(_, len)| len > 0)
        })
    };
    let quality = if has(".debug_info") {
        Quality::Dwarf
    } else if has(".symtab") {
        Quality::Symtab
    } else {
        Quality::DynsymOnly
    };
    Ok(ElfInfo {
        build_id: hex(build_id),
        quality,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One stored debug file, as `symbols list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// GNU build-id, lowercase hex.
    pub build_id: String,
    /// What the file can name.
    pub quality: Quality,
    /// Where it came from: the uploaded path, or `debuginfod:<url>`.
    pub source: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was stored, seconds since the epoch.
    pub stored: u64,
    /// The stored copy (filled in when read; not part of `meta.json`).
    #[serde(skip)]
    pub path: PathBuf,
}

/// What [`SymbolStore::add`] did with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    /// Stored: the build-id was new.
    Added,
    /// Stored, replacing a worse file of that build-id.
    Upgraded(Quality),
    /// Not stored: a file at least as good is already there.
    KeptExisting(Quality),
}

/// A symbol store rooted at a directory.
#[derive(Debug, Clone)]
pub struct SymbolStore {
    dir: PathBuf,
}

fn valid_build_id(id: &str) -> bool {
    (2..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl SymbolStore {
    /// A store in `dir` (created when the first file is added).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, build_id: &str) -> PathBuf {
        self.dir.join(build_id.to_ascii_lowercase())
    }

    /// Stores `data` (an ELF file described by `info`, from `source`) unless a file at least as
    /// good is stored for its build-id already.
    pub fn add(
        &self,
        info: &ElfInfo,
        data: &[u8],
        source: &str,
    ) -> Result<AddOutcome, SymbolsError> {
        let existing = self.get(&info.build_id)?;
        if let Some(old) = &existing
            && old.quality >= info.quality
        {
            return Ok(AddOutcome::KeptExisting(old.quality));
        }
        let entry = self.entry(&info.build_id);
        std::fs::create_dir_all(&entry).map_err(SymbolsError::io(&entry))?;
        let meta = StoredFile {
            build_id: info.build_id.clone(),
            quality: info.quality,
            source: source.to_owned(),
            size: data.len() as u64,
            stored: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            path: PathBuf::new(),
        };
        let json = serde_json::to_vec_pretty(&meta).expect("plain data serializes");
        // The debug file first, then the metadata: readers trust `meta.json`, so a crash
        // in between leaves the old quality recorded for a file at least as good.
        write_atomic(&entry.join("debug"), data)?;
        write_atomic(&entry.join("meta.json"), &json)?;
        Ok(match existing {
            Some(old) => AddOutcome::Upgraded(old.quality),
            None => AddOutcome::Added,
        })
    }

    /// The stored file of `build_id`, if any.
    pub fn get(&self, build_id: &str) -> Result<Option<StoredFile>, SymbolsError> {
        if !valid_build_id(build_id) {
            return Ok(None);
        }
        let entry = self.entry(build_id);
        let meta = entry.join("meta.json");
        let bytes = match std::fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SymbolsError::io(&meta)(e)),
        };
        let mut file: StoredFile =
            serde_json::from_slice(&bytes).map_err(|e| SymbolsError::InvalidFile {
                file: meta.display().to_string(),
                reason: format!("corrupt store metadata ({e})"),
            })?;
        file.path = entry.join("debug");
        Ok(Some(file))
    }

    /// Takes the store's resolver lock (`<dir>/.resolve.lock`, an advisory `flock`), waiting
    /// for another process's pass to end. Released when the returned file is dropped.
    pub async fn lock(&self) -> Result<std::fs::File, SymbolsError> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(&self.dir).map_err(SymbolsError::io(&self.dir))?;
        let path = self.dir.join(".resolve.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(SymbolsError::io(&path))?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(file);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(SymbolsError::io(&path)(err));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Every stored file, by build-id.
    pub fn list(&self) -> Result<Vec<StoredFile>, SymbolsError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SymbolsError::io(&self.dir)(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(SymbolsError::io(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(file) = self.get(&name)? {
                files.push(file);
            }
        }
        files.sort_by(|a, b| a.build_id.cmp(&b.build_id));
        Ok(files)
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SymbolsError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(SymbolsError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(SymbolsError::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Garbage and non-ELF input is refused with a reason naming the file.
    #[test]
    fn refuses_non_elf() {
        let err = inspect(b"this is not an ELF file at all", "junk.bin").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("junk.bin") && msg.contains("not an ELF"),
            "{msg}"
        );
    }

    /// The running test binary is ELF with a build-id; storing it twice keeps the first, and
    /// a worse copy never replaces a better one.
    #[test]
    fn worse_never_replaces_better() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let info = inspect(&exe, "self").unwrap();
        assert!(valid_build_id(&info.build_id));
        let dir = tempfile::tempdir().unwrap();
        let store = SymbolStore::new(dir.path());
        let better = ElfInfo {
            quality: Quality::Dwarf,
            ..info.clone()
        };
        let worse = ElfInfo {
            quality: Quality::DynsymOnly,
            ..info.clone()
        };
        assert_eq!(store.add(&worse, &exe, "a").unwrap(), AddOutcome::Added);
        assert_eq!(
            store.add(&better, &exe, "b").unwrap(),
            AddOutcome::Upgraded(Quality::DynsymOnly)
        );
        assert_eq!(
            store.add(&worse, &exe, "c").unwrap(),
            AddOutcome::KeptExisting(Quality::Dwarf)
        );
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].quality, Quality::Dwarf);
        assert_eq!(listed[0].source, "b");
    }
}
