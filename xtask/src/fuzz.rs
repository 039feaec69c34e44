//! `cargo xtask fuzz`: runs the libFuzzer targets in `fuzz/` (cargo-fuzz, nightly, AddressSanitizer)
//! for a bounded time each and prints what each did: executions, coverage, and any crash with the
//! input that caused it (saved under `fuzz/artifacts/TARGET/`).
//!
//! Each run grows its corpus in `fuzz/corpus/TARGET/` (kept between runs, not committed), seeded
//! from the committed `fuzz/seeds/TARGET/`.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, workspace_root},
    setup,
};

/// The fuzz targets, in `fuzz/fuzz_targets/`, and what each feeds.
pub(crate) const TARGETS: [(&str, &str); 4] = [
    (
        "ingest_batch",
        "a pushed batch's bytes: protobuf decode + the collector's validation",
    ),
    (
        "diff_parse",
        "unified diffs: the diff parser (fleetprof-code) and the agent's added-line reader",
    ),
    ("sql_check", "the agent's read-only SQL checker"),
    ("perfmap", "a JIT's perf map, read as it grows"),
];

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The target to run (default: every target, one after another). One of: ingest_batch,
    /// diff_parse, sql_check, perfmap.
    target: Option<String>,

    /// How long to fuzz each target, in seconds (default: 60).
    #[arg(long, default_value_t = 60, value_name = "N")]
    seconds: u64,
}

/// What one target's run did, from libFuzzer's closing lines.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    /// Inputs executed.
    runs: Option<u64>,
    /// Coverage points reached (`cov:`).
    coverage: Option<u64>,
}

/// Builds the targets once, then runs each for `--seconds`.
pub(crate) fn run(args: &Args) -> Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) => {
            if !TARGETS.iter().any(|(name, _)| name == t) {
                bail!(
                    "no fuzz target {t:?}; the targets are: {}",
                    TARGETS.map(|(name, _)| name).join(", ")
                );
            }
            vec![t.as_str()]
        }
        None => TARGETS.iter().map(|(name, _)| *name).collect(),
    };
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    setup::ensure()?;
    let dir = workspace_root().join("fuzz");
    cmd::run(
        "fuzz: build the targets (nightly, AddressSanitizer, unoptimized: a build of the whole \
         workspace in release mode takes too long on 2 cores for a minute of fuzzing)",
        &mut fuzz_cargo(&dir, &["build", "--dev"]),
    )?;
    let mut report = Vec::new();
    for target in targets {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("could not create {}", corpus.display()))?;
        let seeds = dir.join("seeds").join(target);
        let mut run = fuzz_cargo(&dir, &["run", "--dev", target]);
        run.arg(&corpus);
        if seeds.is_dir() {
            run.arg(&seeds);
        }
        run.args([
            "--",
            &format!("-max_total_time={}", args.seconds),
            // One slow input is a finding too (a quadratic parse), not a hang of the run.
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]);
        cmd::header(
            &format!("fuzz: {target} for {} s", args.seconds),
            Some(&run),
        );
        let out = run
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start `{}`", cmd::display(&run)))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            for line in tail.iter().rev() {
                eprintln!("    {line}");
            }
            bail!(
                "fuzz target {target} failed ({}): the crashing input is saved under {} \
                 (replay it with `cargo +nightly fuzz run --dev {target} <file>` in fuzz/)",
                out.status,
                dir.join("artifacts").join(target).display()
            );
        }
        let outcome = parse_outcome(&log);
        println!(
            "<== {target}: {} runs, coverage {}, no crash",
            outcome.runs.map_or("?".into(), |r| r.to_string()),
            outcome.coverage.map_or("?".into(), |c| c.to_string())
        );
        report.push((target, outcome));
    }
    println!("\n==> fuzz summary ({} s per target)", args.seconds);
    for (target, o) in &report {
        println!(
            "    {target:<14} {:>10} runs  cov {:>6}  no crash",
            o.runs.map_or("?".into(), |r| r.to_string()),
            o.coverage.map_or("?".into(), |c| c.to_string())
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz ARGS` in `dir`. The perf-map target links the profiler library, whose
/// build script would build the eBPF object: not needed to fuzz a parser.
fn fuzz_cargo(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(dir)
        .env("AYA_BUILD_SKIP", "1");
    c
}

/// Executions and coverage from libFuzzer's output: the last `cov:` figure, and
/// `Done N runs in S second(s)` (or the `stat::number_of_executed_units` line).
fn parse_outcome(log: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("Done ") {
            o.runs = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
            o.runs = o.runs.or_else(|| rest.trim().parse().ok());
        }
        if let Some(at) = line.find(" cov: ") {
            o.coverage = line[at + 6..]
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .or(o.coverage);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs and coverage are read from libFuzzer's closing lines.
    #[test]
    fn reads_libfuzzer_figures() {
        let log = "#2\tINITED cov: 12 ft: 13 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #8192\tpulse  cov: 345 ft: 900 corp: 40/2Kb lim: 80 exec/s: 4096 rss: 60Mb\n\
                   Done 123456 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 123456\n";
        assert_eq!(
            parse_outcome(log),
            Outcome {
                runs: Some(123_456),
                coverage: Some(345)
            }
        );
        assert_eq!(parse_outcome("garbage"), Outcome::default());
    }
}
