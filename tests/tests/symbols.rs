//! Names for stripped binaries, through the whole pipeline: `fleetprof-profiler run` (real
//! eBPF) → `fleetprof-collector serve` → ClickHouse, then the collector's symbol store names
//! the stored `module+0x…` frames — from an uploaded debug file, and from Debian's real
//! `debuginfod` server on loopback — without any batch being re-sent. One ClickHouse, one
//! fleet, two short workloads. Needs root, ClickHouse, gcc/binutils and debuginfod.
//!
//! Run: `cargo build --workspace --bins --exclude profiler-ebpf && cargo test -p fleetprof-tests --test symbols -- --nocapture`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleetprof_tests::fleet::{ChildGuard, Fleet, FleetOptions};
use fleetprof_tests::{free_port, require_root};

/// Builds `tests/fixtures/split_workload.c` with debug info and frame pointers into `dir/name`
/// (extra `defines` rename its functions so two builds differ), splits its debug info into
/// `dir/name.debug` and strips the binary, keeping the build-id. Returns (binary, debug file).
fn build_stripped(dir: &Path, name: &str, defines: &[&str]) -> (PathBuf, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/split_workload.c");
    let bin = dir.join(name);
    let debug = dir.join(format!("{name}.debug"));
    run(Command::new("gcc")
        .args([
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-inline",
            "-Wl,--build-id",
        ])
        .args(defines)
        .arg("-o")
        .arg(&bin)
        .arg(&src));
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&debug));
    run(Command::new("strip").arg("--strip-all").arg(&bin));
    (bin, debug)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The GNU build-id of an ELF file, from `readelf -n`.
fn build_id(file: &Path) -> String {
    let notes = run(Command::new("readelf").arg("-n").arg(file));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build-id:\n{notes}", file.display()))
        .trim()
        .to_owned()
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics with `what` and the last value.
fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last:\n{last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn top(fleet: &Fleet, service: &str) -> String {
    fleet
        .collector_cli(&[
            "query",
            "top",
            "--service",
            service,
            "--since",
            "1h",
            "--limit",
            "20",
        ])
        .expect("query top")
}

/// The status line of `GET path` on 127.0.0.1:`port` (HTTP/1.0, so the server closes).
fn http_status(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    Ok(line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned())
}

/// Debian's debuginfod over `dir`, on a free loopback port, answering once it has indexed
/// `build_id`.
fn start_debuginfod(dir: &Path, db: &Path, log: &Path, build_id: &str) -> (ChildGuard, String) {
    let port = free_port();
    let mut cmd = Command::new("debuginfod");
    cmd.args(["-p", &port.to_string(), "-F", "-d"])
        .arg(db)
        .args(["-t", "1"])
        .arg(dir);
    let guard = ChildGuard::spawn("debuginfod", cmd, log).expect(
        "starting debuginfod (Debian package `debuginfod`; `cargo xtask setup` installs it)",
    );
    let url = format!("http://127.0.0.1:{port}");
    let path = format!("/buildid/{build_id}/debuginfo");
    wait_for(
        "debuginfod to serve the debug file",
        Duration::from_secs(60),
        || {
            let code = http_status(port, &path)?;
            if code == "200" {
                Ok(())
            } else {
                Err(format!("HTTP {code}; log:\n{}", guard.log()))
            }
        },
    );
    (guard, url)
}

/// A stripped workload's hot frames are stored as `module+0x…`; uploading its debug file
/// names them (with file:line) in the same stored window without re-sending batches; a second
/// stripped workload is named from a real debuginfod server by build-id alone; an upload of an
/// unknown build-id is accepted and reported; corrupt files are refused with a clear error.
#[test]
fn stripped_binaries_are_named_from_uploads_and_debuginfod() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (bin_a, debug_a) = build_stripped(work, "sym_a", &[]);
    let (bin_b, debug_b) = build_stripped(work, "sym_b", &["-Dhot_a=hot_c", "-Dhot_b=hot_d"]);
    let id_a = build_id(&bin_a);
    let id_b = build_id(&bin_b);
    assert_ne!(id_a, id_b);
    assert_eq!(id_a, build_id(&debug_a), "objcopy keeps the build-id");

    // debuginfod serves only B's debug file.
    let served = work.join("debuginfod-files");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::copy(&debug_b, served.join("sym_b.debug")).unwrap();
    let (_debuginfod, debuginfod_url) = start_debuginfod(
        &served,
        &work.join("debuginfod.sqlite"),
        &work.join("debuginfod.log"),
        &id_b,
    );

    let symbols_dir = work.join("symbols");
    let symbols_dir_arg = symbols_dir.to_str().unwrap().to_owned();
    let mut fleet = Fleet::start(
        &work.join("fleet"),
        FleetOptions {
            collector_args: vec![
                "--symbols-dir".into(),
                symbols_dir_arg.clone(),
                "--debuginfod-url".into(),
                debuginfod_url.clone(),
                "--resymbolize-every".into(),
                "1s".into(),
            ],
            ..FleetOptions::default()
        },
    )
    .expect("starting ClickHouse, the collector and the profiler");

    let mut a = Command::new(&bin_a);
    a.args(["6", "75"])
        .env("FLEETPROF_SERVICE", "sym-a")
        .env("FLEETPROF_VERSION", "1.0.0");
    let mut a = ChildGuard::spawn("sym_a", a, &work.join("sym_a.log")).unwrap();
    let mut b = Command::new(&bin_b);
    b.args(["6", "75"])
        .env("FLEETPROF_SERVICE", "sym-b")
        .env("FLEETPROF_VERSION", "1.0.0");
    let mut b = ChildGuard::spawn("sym_b", b, &work.join("sym_b.log")).unwrap();
    fleetprof_tests::fleet::wait_exit(&mut a, Duration::from_secs(60)).unwrap();
    fleetprof_tests::fleet::wait_exit(&mut b, Duration::from_secs(60)).unwrap();
    // The daemon flushes its last interval on SIGTERM: everything is shipped before we look.
    fleet.stop_profiler().unwrap();

    // 1. Before any upload: A's hot frames are module+offset (the profiler could not name them).
    let before = wait_for("sym-a's unnamed frames", Duration::from_secs(60), || {
        let t = top(&fleet, "sym-a");
        if t.contains("sym_a+0x") {
            Ok(t)
        } else {
            Err(t)
        }
    });
    println!("--- before upload ---\n{before}");
    assert!(
        !before.contains("hot_a"),
        "stripped, yet named on the host:\n{before}"
    );
    let samples =
        |f: &Fleet| f.sql("SELECT sum(count), count() FROM samples WHERE service = 'sym-a'");
    let stored_before = samples(&fleet);

    // 3. Corrupt files are refused with a clear error; an unknown build-id is accepted.
    let garbage = work.join("garbage.debug");
    std::fs::write(&garbage, b"definitely not an ELF file").unwrap();
    let truncated = work.join("truncated.debug");
    std::fs::write(&truncated, &std::fs::read(&debug_a).unwrap()[..200]).unwrap();
    for bad in [&garbage, &truncated] {
        let out = fleet
            .collector_cli_output(&[
                "symbols",
                "upload",
                "--symbols-dir",
                &symbols_dir_arg,
                bad.to_str().unwrap(),
            ])
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a corrupt file was accepted: {stderr}"
        );
        assert!(
            stderr.contains(bad.to_str().unwrap()) && stderr.contains("refused"),
            "unclear error for {}: {stderr}",
            bad.display()
        );
    }
    let (other, _) = build_stripped(work, "sym_other", &["-Dhot_a=hot_other"]);
    let out = fleet
        .collector_cli(&[
            "symbols",
            "upload",
            "--symbols-dir",
            &symbols_dir_arg,
            other.to_str().unwrap(),
        ])
        .unwrap();
    println!("--- unmatched upload ---\n{out}");
    assert!(
        out.contains(&build_id(&other)) && out.contains("matches no stored frames"),
        "{out}"
    );

    // 1. Upload A's debug file: the same query over the same window names hot_a and hot_b.
    let out = fleet
        .collector_cli(&[
            "symbols",
            "upload",
            "--symbols-dir",
            &symbols_dir_arg,
            debug_a.to_str().unwrap(),
        ])
        .unwrap();
    println!("--- upload ---\n{out}");
    assert!(
        out.contains(&id_a) && out.contains("(dwarf)") && out.contains("matches"),
        "{out}"
    );
    let after = top(&fleet, "sym-a");
    println!("--- after upload ---\n{after}");
    let first = after.lines().nth(1).unwrap_or_default();
    assert!(
        first.contains("hot_a"),
        "hot_a (75%) is not first:\n{after}"
    );
    assert!(after.contains("hot_b"), "{after}");
    assert!(!after.contains("sym_a+0x"), "frames left unnamed:\n{after}");
    assert_eq!(
        samples(&fleet),
        stored_before,
        "no batch was re-sent or lost"
    );
    let where_a = fleet.sql("SELECT file, line FROM frames WHERE function = 'hot_a' LIMIT 1");
    println!("hot_a at {where_a}");
    let (file, line) = where_a.split_once('\t').expect("hot_a has a frame row");
    assert!(file.ends_with("split_workload.c"), "{where_a}");
    let line: u32 = line.parse().unwrap();
    assert!(
        (21..=25).contains(&line),
        "hot_a is on lines 21-25 of split_workload.c: {line}"
    );

    // A worse copy (the stripped binary itself: .dynsym only) does not replace the debug file.
    let out = fleet
        .collector_cli(&[
            "symbols",
            "upload",
            "--symbols-dir",
            &symbols_dir_arg,
            bin_a.to_str().unwrap(),
        ])
        .unwrap();
    assert!(out.contains("not stored"), "{out}");
    assert!(top(&fleet, "sym-a").contains("hot_a"));

    // 2. B was never uploaded: the collector fetched its debug file from debuginfod by build-id.
    let named_b = wait_for(
        "sym-b named through debuginfod",
        Duration::from_secs(60),
        || {
            let t = top(&fleet, "sym-b");
            if t.lines().nth(1).is_some_and(|l| l.contains("hot_c")) && !t.contains("sym_b+0x") {
                Ok(t)
            } else {
                Err(format!("{t}\ncollector log:\n{}", fleet.collector.log()))
            }
        },
    );
    println!("--- sym-b via debuginfod ---\n{named_b}");
    let list = fleet
        .collector_cli(&["symbols", "list", "--symbols-dir", &symbols_dir_arg])
        .unwrap();
    println!("--- symbols list ---\n{list}");
    let row_b = list
        .lines()
        .find(|l| l.starts_with(&id_b))
        .expect("B is stored");
    assert!(
        row_b.contains("dwarf") && row_b.contains("debuginfod:"),
        "{row_b}"
    );
    let where_c = fleet.sql("SELECT file, line FROM frames WHERE function = 'hot_c' LIMIT 1");
    assert!(where_c.contains("split_workload.c"), "{where_c}");
}
