//! Names for JIT-compiled code from perf maps: `/tmp/perf-PID.map`, written by
//! `node --perf-basic-prof`, JVMs with a perf-map agent and `python3.12 -X perf`. One line per
//! code object: `START SIZE name` (hex start and size).
//!
//! The file is opened through the process's own root and under the pid the process knows
//! itself by (its innermost pid namespace), and kept open: it can be read again as the JIT adds
//! code, and after the process has exited.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    sync::Mutex,
};

/// Largest perf map read; a runaway file is read up to here and no further.
const MAX_PERF_MAP_BYTES: u64 = 256 << 20;

/// An open perf map, parsed incrementally as it grows.
#[derive(Debug)]
pub struct PerfMapFile {
    file: File,
    state: Mutex<Parsed>,
}

#[derive(Debug, Default)]
struct Parsed {
    /// Bytes consumed so far (whole lines only).
    read_to: u64,
    /// Code objects by start: (end, name). A later line for the same start replaces the earlier.
    entries: BTreeMap<u64, (u64, String)>,
}

impl PerfMapFile {
    /// Opens `pid`'s perf map under `proc_root`, if it writes one.
    pub fn open(proc_root: &Path, pid: u32) -> Option<Self> {
        let dir = proc_root.join(pid.to_string());
        let ns_pid = std::fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| innermost_pid(&s))
            .unwrap_or(pid);
        let path = dir.join(format!("root/tmp/perf-{ns_pid}.map"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
            .ok()?;
        if !file.metadata().ok()?.file_type().is_file() {
            return None;
        }
        Some(Self::from_file(file))
    }

    /// A perf map read from an open file.
    pub fn from_file(file: File) -> Self {
        Self {
            file,
            state: Mutex::default(),
        }
    }

    /// The name of the code object holding `addr`, reading what the JIT appended since last time.
    pub fn lookup(&self, addr: u64) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = find(&state.entries, addr) {
            return Some(hit);
        }
        self.read_more(&mut state);
        find(&state.entries, addr)
    }

    fn read_more(&self, state: &mut Parsed) {
        let Ok(len) = self.file.metadata().map(|m| m.len()) else {
            return;
        };
        let end = len.min(MAX_PERF_MAP_BYTES);
        if end <= state.read_to {
            return;
        }
        let mut file = &self.file;
        if file.seek(SeekFrom::Start(state.read_to)).is_err() {
            return;
        }
        let mut buf = Vec::with_capacity((end - state.read_to) as usize);
        if file
            .take(end - state.read_to)
            .read_to_end(&mut buf)
            .is_err()
        {
            return;
        }
        // Only whole lines: the JIT may be writing the last one now.
        let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in String::from_utf8_lossy(&buf[..whole]).lines() {
            if let Some((start, size, name)) = parse_line(line) {
                state
                    .entries
                    .insert(start, (start.saturating_add(size), name.to_string()));
            }
        }
        state.read_to += whole as u64;
    }
}

fn find(entries: &BTreeMap<u64, (u64, String)>, addr: u64) -> Option<String> {
    let (_, (end, name)) = entries.range(..=addr).next_back()?;
    (addr < *end).then(|| name.clone())
}

/// One perf-map line: `START SIZE name with spaces`.
fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let mut parts = line.splitn(3, ' ');
    let start = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
    let size = u64::from_str_radix(parts.next()?.trim_start_matches("0x"), 16).ok()?;
    let name = parts.next()?.trim();
    (!name.is_empty()).then_some((start, size, name))
}

/// The last pid of `NSpid:` in `/proc/PID/status`: the pid inside the innermost namespace.
fn innermost_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// Lines are found by address, appended lines are read on a miss, a half-written last line
    /// waits for its newline, and a later entry at the same start wins.
    #[test]
    fn reads_and_follows_a_growing_map() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        write!(tmp, "1000 100 LazyCompile:*hot /app.js:1\n2000 10 Fun").unwrap();
        tmp.flush().unwrap();
        let map = PerfMapFile::from_file(tmp.reopen().unwrap());
        assert_eq!(
            map.lookup(0x1050).as_deref(),
            Some("LazyCompile:*hot /app.js:1")
        );
        assert_eq!(map.lookup(0x2005), None);
        writeln!(tmp, "ction:cold\n1000 80 LazyCompile:*hot2 /app.js:9").unwrap();
        tmp.flush().unwrap();
        assert_eq!(map.lookup(0x2005).as_deref(), Some("Function:cold"));
        // Read on the miss above: the later entry at 0x1000 replaced the earlier one.
        assert_eq!(
            map.lookup(0x1010).as_deref(),
            Some("LazyCompile:*hot2 /app.js:9")
        );
        assert_eq!(map.lookup(0x1090), None);
    }

    /// The innermost pid of a process in a pid namespace.
    #[test]
    fn innermost_pid_from_status() {
        assert_eq!(innermost_pid("Name:\tnode\nNSpid:\t4242\t7\n"), Some(7));
        assert_eq!(innermost_pid("NSpid:\t99\n"), Some(99));
        assert_eq!(innermost_pid("Name: x\n"), None);
    }
}
