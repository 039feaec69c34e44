//! Any bytes as a JIT's perf map (`/tmp/perf-PID.map`), read in two appends as a running JIT
//! writes it: lookups answer, and a name found is never empty.
#![no_main]

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{FromRawFd as _, OwnedFd};

use fleetprof_profiler::perfmap::PerfMapFile;
use libfuzzer_sys::fuzz_target;

/// An anonymous in-memory file (no disk traffic per input).
fn memfd() -> File {
    // SAFETY: a static C string; the returned descriptor is checked and owned once.
    let fd = unsafe { libc::memfd_create(c"perfmap-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose an address to look up; the rest is the map, written in two parts.
    let (addr, map) = match data.split_first_chunk::<8>() {
        Some((a, rest)) => (u64::from_le_bytes(*a), rest),
        None => (0, data),
    };
    let mut file = memfd();
    let half = map.len() / 2;
    file.write_all(&map[..half]).unwrap();
    let reader = PerfMapFile::from_file(file.try_clone().unwrap());
    for a in [addr, 0, u64::MAX] {
        if let Some(name) = reader.lookup(a) {
            assert!(!name.trim().is_empty());
        }
    }
    file.write_all(&map[half..]).unwrap();
    for a in [addr, addr.wrapping_add(1), 0x1000, u64::MAX] {
        if let Some(name) = reader.lookup(a) {
            assert!(!name.trim().is_empty());
        }
    }
});
