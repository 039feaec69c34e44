//! A whole fleetprof on one machine, for the end-to-end tests and the demo: a throwaway
//! ClickHouse, the collector serving gRPC on loopback, and the profiler daemon shipping to it.
//! Every process is stopped when the [`Fleet`] is dropped (SIGTERM, then SIGKILL).

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fleetprof_collector::store::local_server::LocalClickHouse;

use crate::{clickhouse_query_in, free_port, workspace_bin};

/// A child process stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The log file's contents so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> anyhow::Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(true);
        };
        // SAFETY: kill(2) on a pid we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within 20 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lets the process outlive this guard; returns its pid.
    pub fn detach(&mut self) -> u32 {
        self.child.take().map_or(0, |c| c.id())
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on a pid we own.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for_port(port: u16, timeout: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within {timeout:?}")
}

/// How the fleet's profiler samples and ships.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Batch interval of the daemon. Default: 2 s.
    pub interval: Duration,
    /// Sampling frequency. Default: 999 Hz: far above the 19 Hz production default, so that the
    /// tests' and the demo's half-minute runs carry as many samples as hours at 19 Hz would. At
    /// 499 Hz the demo's service (0.4 cores for 25 s a version) gave its regression a z of about
    /// 4.4 against a threshold of 4.3: found in some runs only.
    pub frequency_hz: u32,
    /// Extra arguments of `fleetprof-collector serve` (e.g. `--ui-listen ADDR`). Default: none.
    pub collector_args: Vec<String>,
    /// `--powercap-dir` for the daemon (a fixture RAPL tree). Default: none (detect).
    pub powercap_dir: Option<PathBuf>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            frequency_hz: 999,
            collector_args: Vec::new(),
            powercap_dir: None,
        }
    }
}

/// ClickHouse, the collector and the profiler daemon, running.
#[derive(Debug)]
pub struct Fleet {
    /// The ClickHouse server.
    pub clickhouse: LocalClickHouse,
    /// The collector process.
    pub collector: ChildGuard,
    /// The collector's gRPC port on 127.0.0.1.
    pub collector_port: u16,
    /// The profiler daemon, until stopped.
    pub profiler: Option<ChildGuard>,
    /// Where logs and the spool live.
    pub dir: PathBuf,
    options: FleetOptions,
}

impl Fleet {
    /// Starts ClickHouse (in a temporary directory), the collector and the profiler daemon, with
    /// logs and the spool under `dir`.
    pub fn start(dir: &Path, options: FleetOptions) -> anyhow::Result<Self> {
        let clickhouse = LocalClickHouse::start().context("starting ClickHouse")?;
        Self::start_with(dir, clickhouse, options)
    }

    /// Like [`Fleet::start`], with ClickHouse's data under `dir` too.
    pub fn start_in(dir: &Path, options: FleetOptions) -> anyhow::Result<Self> {
        let clickhouse = LocalClickHouse::start_in(dir).context("starting ClickHouse")?;
        Self::start_with(dir, clickhouse, options)
    }

    fn start_with(
        dir: &Path,
        clickhouse: LocalClickHouse,
        options: FleetOptions,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let collector_port = free_port();
        let collector = Self::spawn_collector(
            dir,
            &clickhouse.url(),
            collector_port,
            &options.collector_args,
        )?;
        let mut fleet = Self {
            clickhouse,
            collector,
            collector_port,
            profiler: None,
            dir: dir.to_path_buf(),
            options,
        };
        fleet.start_profiler()?;
        Ok(fleet)
    }

    fn spawn_collector(
        dir: &Path,
        clickhouse_url: &str,
        port: u16,
        extra: &[String],
    ) -> anyhow::Result<ChildGuard> {
        let mut cmd = Command::new(workspace_bin("fleetprof-collector"));
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--clickhouse-url",
            clickhouse_url,
        ])
        .args(extra);
        let guard = ChildGuard::spawn("collector", cmd, &dir.join("collector.log"))?;
        wait_for_port(port, Duration::from_secs(30), "the collector")?;
        Ok(guard)
    }

    /// Starts (or restarts) the profiler daemon.
    pub fn start_profiler(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(workspace_bin("fleetprof-profiler"));
        cmd.args(["run", "--collector", &self.collector_url()])
            .arg("--interval")
            .arg(format!("{}ms", self.options.interval.as_millis()))
            .arg("--frequency")
            .arg(self.options.frequency_hz.to_string())
            .arg("--spool-dir")
            .arg(self.dir.join("spool"))
            // The readiness line below is logged at info.
            .env("RUST_LOG", "info");
        if let Some(dir) = &self.options.powercap_dir {
            cmd.arg("--powercap-dir").arg(dir);
        }
        let log = self.dir.join("profiler.log");
        let already = std::fs::read_to_string(&log).map_or(0, |l| l.len());
        let mut guard = ChildGuard::spawn("profiler", cmd, &log)?;
        // Ready once its eBPF programs are attached: the daemon logs "profiling" right after.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = guard.log();
            if text.get(already..).is_some_and(|l| {
                l.lines()
                    .any(|l| l.contains(" profiling ") && l.contains("frequency_hz"))
            }) {
                break;
            }
            if !guard.is_running() {
                bail!("the profiler daemon exited before profiling:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("the profiler daemon did not start profiling within 60 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.profiler = Some(guard);
        Ok(())
    }

    /// Stops the daemon with SIGTERM (it flushes its last interval), waits until every sample
    /// the collector acknowledged is visible in ClickHouse, and returns the daemon's log.
    pub fn stop_profiler(&mut self) -> anyhow::Result<String> {
        let Some(mut profiler) = self.profiler.take() else {
            return Ok(String::new());
        };
        let ok = profiler.terminate()?;
        let log = profiler.log();
        if !ok {
            bail!("the profiler daemon failed:\n{log}");
        }
        // The collector acknowledges a batch before its writer has inserted it.
        let acked: u64 = log
            .lines()
            .filter(|l| l.contains("shipped ") && l.contains(" batches ("))
            .filter_map(|l| crate::number_before(l, "samples"))
            .sum();
        self.wait_stored(acked)?;
        Ok(log)
    }

    /// Waits (up to 60 s) until ClickHouse holds at least `samples` samples.
    pub fn wait_stored(&self, samples: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stored: u64 = self
                .sql("SELECT toUInt64(sum(count)) FROM samples")
                .parse()
                .unwrap_or(0);
            if stored >= samples {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {stored} of {samples} acknowledged samples are stored after 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts the collector on the same port.
    pub fn restart_collector(&mut self) -> anyhow::Result<()> {
        self.collector.terminate()?;
        self.collector = Self::spawn_collector(
            &self.dir,
            &self.clickhouse.url(),
            self.collector_port,
            &self.options.collector_args,
        )?;
        Ok(())
    }

    /// Stops the profiler and leaves ClickHouse and the collector running after this value is
    /// gone; returns the collector's pid and ClickHouse's pid and directory.
    pub fn detach(mut self) -> (u32, (u32, PathBuf)) {
        let _ = self.stop_profiler();
        let collector = self.collector.detach();
        (collector, self.clickhouse.detach())
    }

    /// The collector's gRPC URL.
    pub fn collector_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.collector_port)
    }

    /// Runs `fleetprof-collector <args> --clickhouse-url <this fleet's>` and returns its output;
    /// fails with its stderr when it fails.
    pub fn collector_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.collector_cli_output(args)?;
        if !out.status.success() {
            bail!(
                "fleetprof-collector {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`Fleet::collector_cli`] but returns the raw output whatever the exit status.
    pub fn collector_cli_output(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(workspace_bin("fleetprof-collector"))
            .args(args)
            .args(["--clickhouse-url", &self.clickhouse.url()])
            .output()
            .context("running fleetprof-collector")
    }

    /// Runs SQL in the `fleetprof` database and returns the trimmed TabSeparated answer.
    pub fn sql(&self, query: &str) -> String {
        clickhouse_query_in(self.clickhouse.http_port(), "fleetprof", query)
            .trim()
            .to_string()
    }
}

/// Requests per second the demo service serves in the demo and the agent's tests: a steady load
/// (about half a core for v1), so a slower function makes the service use more CPU, as in
/// production, instead of serving fewer requests.
pub const STEADY_RPS: u32 = 50_000;

/// Runs a service binary under a fleetprof service and version name until the guard drops;
/// `rps` passes `--rps` (a steady load) to services that take it.
pub fn run_service(
    bin: &Path,
    service: &str,
    version: &str,
    seconds: u64,
    rps: Option<u32>,
    log: &Path,
) -> anyhow::Result<ChildGuard> {
    let mut cmd = Command::new(bin);
    cmd.args(["--seconds", &seconds.to_string()]);
    if let Some(rps) = rps {
        cmd.args(["--rps", &rps.to_string()]);
    }
    cmd.env("FLEETPROF_SERVICE", service)
        .env("FLEETPROF_VERSION", version)
        .env_remove("RUST_LOG");
    ChildGuard::spawn(service, cmd, log)
}

/// Waits for a service process to exit, up to `timeout`.
pub fn wait_exit(guard: &mut ChildGuard, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while guard.is_running() {
        if Instant::now() > deadline {
            bail!("{} still running after {timeout:?}", guard.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
