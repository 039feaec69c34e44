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
    output::{self, Format},
    record::{RecordError, RecordOptions, record},
};
use profiler_ebpf::{DEFAULT_COUNTS_ENTRIES, DEFAULT_STACK_ENTRIES};

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
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    /// How long to record (humantime: 500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Only record this process (repeatable). Default: every process.
    #[arg(long = "pid")]
    pids: Vec<u32>,
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
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => run_record(args),
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
            include_self: args.include_self,
            counts_entries: args.counts_entries,
            stack_entries: args.stack_entries,
        },
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
         stacks lost: {} collisions, {} other errors; unsymbolized frames: {}; peak RSS {:.1} MiB",
        profile.total_samples(),
        cpu_seconds,
        profile.processes.len(),
        stats.cpus,
        profile.frequency_hz,
        l.counts_map_full,
        l.stack_collisions,
        l.stack_other_errors,
        l.unsymbolized_frames,
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
