//! Shared helpers for fleetprof's end-to-end tests: privilege checks, workloads built from
//! source with frame pointers, and the paths of the workspace's binaries.
//!
//! Every test here needs root (eBPF) and some need ClickHouse; a missing requirement fails the
//! test with a message saying what is missing, never a silent pass.

pub mod catalog_repo;
pub mod demo_repo;
pub mod fleet;
pub mod polyglot_repo;
pub mod profiled;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Panics with a clear message unless this process may load eBPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test loads eBPF programs and needs root (euid is {euid}); run it through `sudo cargo xtask test`"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); fleetprof needs CONFIG_DEBUG_INFO_BTF"
    );
}

/// The directory holding this workspace's built binaries (`target/debug` or `target/release`):
/// test binaries live in `target/<profile>/deps`, the demo binary in `target/<profile>`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("an executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
            .expect("target/<profile>/deps has a parent")
            .to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The workspace's root directory (where `skills/` and `target/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Path of a workspace binary, failing loudly when it was not built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; `cargo xtask test` builds it (or run `cargo build --bins` first)",
        path.display()
    );
    path
}

/// Compiles a C fixture from `tests/fixtures` with frame pointers and debug info into `out_dir`.
pub fn build_c_fixture(name: &str, out_dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{name}.c"));
    let out = out_dir.join(name);
    let status = Command::new("gcc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-fno-inline", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc is needed to build test workloads; `cargo xtask setup` installs it");
    assert!(status.success(), "gcc failed to build {}", src.display());
    out
}

/// Compiles a C fixture from `tests/fixtures` the way distributions and release builds do:
/// optimized, without frame pointers (`-fomit-frame-pointer`), with debug info, plus `extra`
/// flags, into `out_dir/out_name`.
pub fn build_c_fixture_without_frame_pointers(
    name: &str,
    out_dir: &Path,
    out_name: &str,
    extra: &[&str],
) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("{name}.c"));
    let out = out_dir.join(out_name);
    let status = Command::new("gcc")
        .args(["-O2", "-g", "-fomit-frame-pointer"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc is needed to build test workloads; `cargo xtask setup` installs it");
    assert!(status.success(), "gcc failed to build {}", src.display());
    out
}

/// CPU time (user + system) a process has used so far, in seconds, from `/proc/<pid>/stat`.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// The number before `word` in `line`, e.g. `number_before("shipped 12 samples", "samples")`:
/// reads the figures the daemon prints in its final summary line.
pub fn number_before(line: &str, word: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == word)?;
    words
        .get(at.checked_sub(1)?)?
        .trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}

/// Runs `sql` on the ClickHouse HTTP interface at `127.0.0.1:http_port` and returns the body
/// (TabSeparated), panicking with the server's message on an error status.
pub fn clickhouse_query(http_port: u16, sql: &str) -> String {
    clickhouse_query_in(http_port, "default", sql)
}

/// Like [`clickhouse_query`], with unqualified table names resolved in `database`.
pub fn clickhouse_query_in(http_port: u16, database: &str, sql: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("connecting to ClickHouse");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("set_read_timeout");
    let request = format!(
        "POST /?database={database} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
        sql.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("sending the query");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the answer");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "ClickHouse refused {sql:?}: {body}"
    );
    body.to_owned()
}
