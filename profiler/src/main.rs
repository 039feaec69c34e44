//! `fleetprof-profiler`: the host profiler's command line.
//!
//! Exit codes: 0 success, 1 any error (the message says what and how to fix it), 2 bad usage.

use std::{
    io::Write as _,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fleetprof_profiler::{
    bpf::{BpfError, DEFAULT_FREQUENCY_HZ, SamplerConfig},
    config::{DaemonConfig, Overrides},
    daemon::{self, DaemonOptions},
    output::{self, Format},
    record::{RecordError, RecordOptions, record},
};
use profiler_ebpf::{DEFAULT_COUNTS_ENTRIES, DEFAULT_STACK_ENTRIES, DEFAULT_UNWIND_ROWS};

/// fleetprof's host profiler: samples on-CPU stacks of every process with eBPF.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record a profile of this host for a while and write it to a file or stdout.
    ///
    /// Example: `fleetprof-profiler record --duration 10s --format svg -o flame.svg`
    Record(RecordArgs),
    /// Run as a daemon: sample continuously and ship a batch to the collector every interval.
    ///
    /// Batches wait in an on-disk spool while the collector is unreachable. SIGTERM/SIGINT ships
    /// the last partial interval and exits 0.
    ///
    /// Example: `fleetprof-profiler run --collector https://collector:4317 --token-file /etc/fleetprof/token`
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The collector's gRPC URL (https:// for TLS). Required here or in --config.
    #[arg(long)]
    collector: Option<String>,
    /// How often a batch is shipped (humantime: 10s, 1m). [default: 10s]
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// File holding the collector's bearer token. [default: none]
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where batches wait for the collector. [default: /var/lib/fleetprof/spool]
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Largest total size of the spool, bytes; the oldest batches are dropped (and counted)
    /// beyond it. [default: 268435456 (256 MiB)]
    #[arg(long)]
    spool_max_bytes: Option<u64>,
    /// TOML configuration file (see fleetprof-profiler.example.toml); flags override it. [default: none]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Samples per second per CPU. [default: 19]
    #[arg(long)]
    frequency: Option<u32>,
    /// Serve Prometheus /metrics and /healthz on this address. [default: off]
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Read RAPL energy counters from this directory, laid out like /sys/class/powercap.
    /// [default: detect (/sys/class/powercap, then the perf power PMU)]
    #[arg(long)]
    powercap_dir: Option<PathBuf>,
    /// For testing: re-send every Nth batch after its ack, simulating a lost ack, to check the
    /// collector's idempotency. [default: off]
    #[arg(long, hide = true)]
    resend_acked_every: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    /// How long to record (humantime: 500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Only record this process (repeatable). Default: every process.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Also record every process in this cgroup v2 directory or below it, e.g.
    /// /sys/fs/cgroup/system.slice/api.service: the kernel checks each sample's cgroup, so
    /// processes that join it later (workers forked after the start) are recorded from their
    /// first tick.
    #[arg(long, value_name = "DIR")]
    cgroup: Option<PathBuf>,
    /// Samples per second per CPU.
    #[arg(long, default_value_t = DEFAULT_FREQUENCY_HZ)]
    frequency: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Folded)]
    format: Format,
    /// Output file. Default: stdout.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Also record the profiler's own samples.
    #[arg(long)]
    include_self: bool,
    /// Distinct (thread, stack) keys the kernel keeps between drains.
    #[arg(long, default_value_t = DEFAULT_COUNTS_ENTRIES)]
    counts_entries: u32,
    /// Distinct stacks the kernel keeps between drains.
    #[arg(long, default_value_t = DEFAULT_STACK_ENTRIES)]
    stack_entries: u32,
    /// Rows of unwind tables (for code without frame pointers) the kernel can hold, 8 bytes
    /// each; tables that do not fit are counted and walked by frame pointers.
    #[arg(long, default_value_t = DEFAULT_UNWIND_ROWS)]
    unwind_rows: u32,
    /// When a table does not fit, processes not sampled for this long give up theirs to make
    /// room (described again when next sampled), e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    unwind_evict_idle_after: std::time::Duration,
    /// Read RAPL energy counters from this directory, laid out like /sys/class/powercap.
    /// [default: detect (/sys/class/powercap, then the perf power PMU)]
    #[arg(long)]
    powercap_dir: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    // A daemon's log is its record of what it shipped and why it could not; `record` stays quiet.
    let default_level = match cli.command {
        Command::Run(_) => "info",
        Command::Record(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // journald and log files get plain text; a terminal gets colours.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Record(args) => run_record(args),
        Command::Run(args) => run_daemon(args),
    };
    if let Err(err) = result {
        // One line a person can act on; the chain adds the cause.
        eprintln!("fleetprof-profiler: {err:#}");
        std::process::exit(1);
    }
}

fn run_record(args: RecordArgs) -> anyhow::Result<()> {
    let options = RecordOptions {
        duration: args.duration,
        sampler: SamplerConfig {
            frequency_hz: args.frequency,
            pids: args.pids,
            cgroup: args.cgroup,
            include_self: args.include_self,
            counts_entries: args.counts_entries,
            stack_entries: args.stack_entries,
            unwind_rows: args.unwind_rows,
            unwind_evict_idle_after: args.unwind_evict_idle_after,
            frame_pointers_only: false,
        },
        powercap_dir: args.powercap_dir,
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C ends the recording early and still writes what was recorded.
        let _ = ctrlc_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed));
    }
    let (profile, stats) = match record(&options, Some(&stop)) {
        Ok(r) => r,
        Err(RecordError::Bpf(err @ BpfError::MissingPrivileges)) => anyhow::bail!(err),
        Err(err) => return Err(err).context("recording failed"),
    };
    let mut out: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    output::write(&profile, args.format, &mut out).context("writing the profile")?;
    out.flush().context("writing the profile")?;

    let l = &profile.losses;
    let cpu_seconds = profile.total_samples() as f64 / f64::from(profile.frequency_hz.max(1));
    eprintln!(
        "recorded {} samples ({:.1} CPU-s) from {} processes on {} CPUs at {} Hz; lost: {} (full map), \
         stacks lost: {} collisions, {} full stack map; truncated stacks: {}; unsymbolized frames: {}; \
         unwind tables: {} ({:.1} MiB, {} dropped); peak RSS {:.1} MiB",
        profile.total_samples(),
        cpu_seconds,
        profile.processes.len(),
        stats.cpus,
        profile.frequency_hz,
        l.counts_map_full,
        l.stack_collisions,
        l.stack_other_errors,
        l.truncated_stacks,
        l.unsymbolized_frames,
        stats.tracker.unwind.tables_loaded,
        stats.tracker.unwind.rows_used as f64
            * std::mem::size_of::<profiler_ebpf::UnwindRow>() as f64
            / (1024.0 * 1024.0),
        stats.tracker.unwind.tables_dropped,
        stats.peak_rss_bytes as f64 / (1024.0 * 1024.0),
    );
    match &profile.energy {
        fleetprof_profiler::energy::EnergyReport::Unavailable { reason } => {
            eprintln!("energy: unavailable ({reason})");
        }
        other => eprintln!(
            "energy: {}",
            serde_json::to_string(other).unwrap_or_default()
        ),
    }
    Ok(())
}

fn run_daemon(args: RunArgs) -> anyhow::Result<()> {
    let mut config = DaemonConfig::load(args.config.as_deref())?;
    config.apply(Overrides {
        collector: args.collector,
        interval: args.interval,
        token_file: args.token_file,
        spool_dir: args.spool_dir,
        spool_max_bytes: args.spool_max_bytes,
        frequency_hz: args.frequency,
        metrics_listen: args.metrics_listen,
        powercap_dir: args.powercap_dir,
    });
    let options = DaemonOptions {
        config,
        resend_acked_every: args.resend_acked_every,
    };
    // The daemon installs its own SIGTERM/SIGINT handling, which sets this flag.
    let stop = Arc::new(AtomicBool::new(false));
    let summary = daemon::run(options, stop).context("the profiler daemon failed")?;
    eprintln!("fleetprof-profiler: {summary}");
    Ok(())
}

/// Runs `f` on SIGINT/SIGTERM from a small background thread (no async runtime needed here).
fn ctrlc_handler(f: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        f();
    });
    Ok(())
}
