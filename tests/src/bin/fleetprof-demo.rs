//! `fleetprof-demo` (run by `cargo xtask demo`): fleetprof's main job end to end on this machine.
//!
//! A real ClickHouse, the collector and the eBPF profiler daemon start; a demo service (a real git
//! repository) runs as v1, then as v2, whose commit adds formatted debug logging to a hot loop; the
//! detector finds the regression and ranks v2's commit first; the agent writes a validated
//! fix-forward PR for the commit's author. Everything lives under `target/demo/`, and every
//! process started is stopped at the end or on Ctrl-C (unless `--keep`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use fleetprof_tests::{
    demo_repo::{DemoRepo, Regression, V2_AUTHOR},
    fleet::{Fleet, FleetOptions, STEADY_RPS, run_service},
    free_port, require_root, workspace_bin, workspace_root,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Runs fleetprof's main job on this machine: profile a service, catch the regression a commit
/// introduced, root-cause it to the commit, and write a validated fix-forward PR.
#[derive(Debug, Parser)]
#[command(name = "fleetprof-demo", version)]
struct Args {
    /// Leave ClickHouse and the collector running afterwards and print how to query them.
    #[arg(long)]
    keep: bool,
    /// Seconds each version of the service runs. [default: 30]
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Where the demo keeps its state (wiped at the start). [default: <workspace>/target/demo]
    #[arg(long)]
    dir: Option<PathBuf>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: stopping everything the demo started");
    }
    Ok(())
}

/// Sleeps while showing a progress bar; returns early with an error on Ctrl-C.
fn wait_with_progress(seconds: u64, message: &str) -> anyhow::Result<()> {
    let bar = ProgressBar::new(seconds * 10);
    bar.set_style(
        ProgressStyle::with_template("  {spinner} {msg} [{bar:30}] {elapsed}/{duration}")
            .expect("static template"),
    );
    bar.set_message(message.to_string());
    for _ in 0..seconds * 10 {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bar.abandon();
            return check_interrupt();
        }
        std::thread::sleep(Duration::from_millis(100));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

struct Steps {
    started: Instant,
    n: usize,
}

impl Steps {
    fn step(&mut self, what: &str) -> anyhow::Result<()> {
        check_interrupt()?;
        self.n += 1;
        println!(
            "[{:>5.1}s] {}. {what}",
            self.started.elapsed().as_secs_f64(),
            self.n
        );
        Ok(())
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn main() {
    let args = Args::parse();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    match run(&args) {
        Ok(()) => {}
        Err(err) => {
            eprintln!("fleetprof-demo: {err:#}");
            std::process::exit(if INTERRUPTED.load(Ordering::SeqCst) {
                130
            } else {
                1
            });
        }
    }
}

/// What the demo found and made, for the summary.
struct Outcome {
    function: String,
    before_share: f64,
    after_share: f64,
    delta_cores: f64,
    regression_id: String,
    commit: String,
    author: String,
    title: String,
    branch: String,
    pr_md: PathBuf,
    validation: Vec<String>,
    svgs: Vec<(&'static str, PathBuf)>,
}

fn run(args: &Args) -> anyhow::Result<()> {
    require_root();
    let mut steps = Steps {
        started: Instant::now(),
        n: 0,
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("target").join("demo"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;

    steps
        .step("creating the demo service `checkout` as a git repository and building v1 and v2")?;
    let repo = DemoRepo::create(&dir, Regression::Logging)?;
    println!(
        "         v1 {} by Avery Author, v2 {} by {}",
        &repo.v1_commit[..10],
        &repo.v2_commit[..10],
        V2_AUTHOR.0
    );

    steps.step(
        "starting ClickHouse, the collector and the eBPF profiler daemon (999 Hz, 2 s batches)",
    )?;
    // The collector serves the web UI too, showing the agent's proposals from the outbox.
    let ui = format!("http://127.0.0.1:{}", free_port());
    let outbox = dir.join("outbox");
    let options = FleetOptions {
        collector_args: vec![
            "--ui-listen".into(),
            ui.trim_start_matches("http://").into(),
            "--ui-outbox".into(),
            outbox.to_string_lossy().into_owned(),
            "--ui-skills".into(),
            workspace_root()
                .join("skills")
                .to_string_lossy()
                .into_owned(),
        ],
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start_in(&dir, options)?;
    println!(
        "         ClickHouse {}, collector {}, web UI {ui}/, logs in {}",
        fleet.clickhouse.url(),
        fleet.collector_url(),
        dir.display()
    );

    let outcome = main_job(args, &mut steps, &dir, &repo, &mut fleet);
    if args.keep {
        // Kept also when the job failed, so that what went wrong can be queried.
        let collector_url = fleet.collector_url();
        let clickhouse_url = fleet.clickhouse.url();
        let (collector_pid, (ch_pid, ch_dir)) = fleet.detach();
        println!(
            "\n--keep: ClickHouse (pid {ch_pid}, data in {}) and the collector keep running:",
            ch_dir.display()
        );
        println!(
            "  fleetprof-collector query top --service checkout --since 1h --clickhouse-url {clickhouse_url}"
        );
        println!(
            "  clickhouse-client --port <tcp port in {}/config.xml> --database fleetprof",
            ch_dir.display()
        );
        println!(
            "  collector gRPC: {collector_url}; stop them with `kill {ch_pid} {collector_pid}`"
        );
        println!("  web UI: {ui}/ (collector pid {collector_pid}, ClickHouse pid {ch_pid})");
    }
    let outcome = outcome?;
    print_summary(&outcome, steps.started.elapsed());
    println!(
        "web UI      {ui}/regressions/{}{}",
        outcome.regression_id,
        if args.keep {
            ""
        } else {
            "  (stopped; run with --keep to browse it)"
        }
    );
    Ok(())
}

/// Runs v1 and v2, detects, fixes and draws: everything between starting the fleet and the
/// summary.
fn main_job(
    args: &Args,
    steps: &mut Steps,
    dir: &Path,
    repo: &DemoRepo,
    fleet: &mut Fleet,
) -> anyhow::Result<Outcome> {
    steps.step("deploying v1 and serving a steady 50,000 requests per second")?;
    let v1_start = SystemTime::now();
    fleet.collector_cli(&[
        "changes",
        "deploy",
        "--service",
        "checkout",
        "--version",
        "v1",
        "--at",
        &rfc3339(v1_start),
        "--commit",
        &repo.v1_commit,
    ])?;
    let mut service = run_service(
        &repo.v1_bin,
        "checkout",
        "v1",
        args.seconds,
        Some(STEADY_RPS),
        // The v2 service writes a debug line per request; keep it off the disk.
        Path::new("/dev/null"),
    )?;
    wait_with_progress(args.seconds, "checkout v1")?;
    drop(service.terminate());
    let v1_end = SystemTime::now();

    steps.step("deploying v2 (the commit that adds debug logging) and serving the same load")?;
    let v2_start = SystemTime::now();
    fleet.collector_cli(&[
        "changes",
        "deploy",
        "--service",
        "checkout",
        "--version",
        "v2",
        "--at",
        &rfc3339(v2_start),
        "--commit",
        &repo.v2_commit,
    ])?;
    service = run_service(
        &repo.v2_bin,
        "checkout",
        "v2",
        args.seconds,
        Some(STEADY_RPS),
        // The v2 service writes a debug line per request; keep it off the disk.
        Path::new("/dev/null"),
    )?;
    wait_with_progress(args.seconds, "checkout v2")?;
    drop(service.terminate());
    let v2_end = SystemTime::now();

    steps.step("flushing the profiler's last batch and importing the repository's commits")?;
    fleet.stop_profiler()?;
    let repo_path = repo.path.to_string_lossy().into_owned();
    fleet.collector_cli(&[
        "changes",
        "import-git",
        "--repo",
        &repo_path,
        "--service",
        "checkout",
    ])?;

    steps.step("detecting regressions and ranking their root causes")?;
    // Each side of the change gets as much of its version's run as it has (less 5 s of start-up):
    // the detector's z grows with the samples in its window.
    let window = format!("{}s", args.seconds.saturating_sub(5).max(20));
    let detected = fleet.collector_cli(&[
        "detect",
        "--service",
        "checkout",
        "--since",
        "15m",
        "--bucket",
        "2s",
        "--window",
        &window,
        "--persistence",
        "10s",
        "--format",
        "json",
    ])?;
    let (regression_id, found) = pick_regression(&detected, repo.regression.regressed_function())?;
    print!(
        "{}",
        fleet.collector_cli(&["regressions", "show", &regression_id])?
    );

    steps
        .step("writing the fix-forward PR with the agent (recipe, validated in a git worktree)")?;
    let outbox = dir.join("outbox");
    let agent = Command::new(workspace_bin("fleetprof-agent"))
        .args(["--skills"])
        .arg(workspace_root().join("skills"))
        .args([
            "fix",
            "--regression",
            &regression_id,
            "--repo",
            &repo_path,
            "--llm",
            "none",
            "--clickhouse-url",
            &fleet.clickhouse.url(),
            "--outbox",
        ])
        .arg(&outbox)
        .output()
        .context("running fleetprof-agent")?;
    let agent_out = String::from_utf8_lossy(&agent.stdout).into_owned();
    if !agent.status.success() {
        bail!(
            "the agent proposed no validated fix:\n{agent_out}\n{}",
            String::from_utf8_lossy(&agent.stderr)
        );
    }
    let proposal = find_proposal(&outbox)?;

    steps.step("drawing flame graphs of v1, v2 and their difference")?;
    let svg = |name: &str| dir.join(name);
    for (name, from, to) in [
        ("flame-v1.svg", v1_start, v1_end),
        ("flame-v2.svg", v2_start, v2_end),
    ] {
        let path = svg(name);
        fleet.collector_cli(&[
            "query",
            "flamegraph",
            "--service",
            "checkout",
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "-o",
            &path.to_string_lossy(),
        ])?;
    }
    let diff_path = svg("flame-diff-v1-v2.svg");
    fleet.collector_cli(&[
        "query",
        "diff",
        "--service",
        "checkout",
        "--baseline",
        "v1",
        "--comparison",
        "v2",
        "-o",
        &diff_path.to_string_lossy(),
    ])?;

    let outcome = Outcome {
        function: found.function,
        before_share: found.before,
        after_share: found.after,
        delta_cores: found.delta_cores,
        regression_id,
        commit: found.commit,
        author: found.author,
        title: found.title,
        branch: proposal.branch,
        pr_md: proposal.pr_md,
        validation: proposal.validation,
        svgs: vec![
            ("v1", svg("flame-v1.svg")),
            ("v2", svg("flame-v2.svg")),
            ("v1 → v2", diff_path),
        ],
    };
    Ok(outcome)
}

/// The regression the demo expects, read from `detect --format json`.
struct Found {
    function: String,
    before: f64,
    after: f64,
    delta_cores: f64,
    commit: String,
    author: String,
    title: String,
}

fn pick_regression(json: &str, function: &str) -> anyhow::Result<(String, Found)> {
    let value: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("parsing detect's JSON output:\n{json}"))?;
    let items = value
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![value.clone()]);
    for item in items {
        let report = &item["report"];
        let Some(members) = report["members"].as_array() else {
            continue;
        };
        let Some(member) = members.iter().find(|m| m["function"] == function) else {
            continue;
        };
        let top = &item["candidates"][0];
        let id = item["id"]
            .as_str()
            .context("a stored regression has an id")?
            .to_string();
        return Ok((
            id,
            Found {
                function: function.to_string(),
                before: member["total_before"].as_f64().unwrap_or(0.0),
                after: member["total_after"].as_f64().unwrap_or(0.0),
                delta_cores: report["delta_cores"].as_f64().unwrap_or(0.0),
                commit: top["change_id"].as_str().unwrap_or_default().to_string(),
                author: top["author"].as_str().unwrap_or_default().to_string(),
                title: top["title"].as_str().unwrap_or_default().to_string(),
            },
        ));
    }
    bail!("the detector did not report a regression in {function}; it printed:\n{json}")
}

/// The agent's validated proposal, read from its outbox.
struct ProposalFiles {
    branch: String,
    pr_md: PathBuf,
    validation: Vec<String>,
}

fn find_proposal(outbox: &Path) -> anyhow::Result<ProposalFiles> {
    for entry in
        std::fs::read_dir(outbox).with_context(|| format!("reading {}", outbox.display()))?
    {
        let dir = entry?.path();
        let proposal = dir.join("proposal.json");
        if !proposal.exists() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&proposal)?)?;
        let validation = value["checks"]
            .as_array()
            .map(|checks| {
                checks
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}: {}",
                            if c["passed"].as_bool() == Some(true) {
                                "ok  "
                            } else {
                                "FAIL"
                            },
                            c["step"].as_str().unwrap_or_default(),
                            summary_line(c["detail"].as_str().unwrap_or_default())
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Ok(ProposalFiles {
            branch: value["branch"].as_str().unwrap_or_default().to_string(),
            pr_md: dir.join("PR.md"),
            validation,
        });
    }
    bail!("no proposal.json in {}", outbox.display())
}

/// The line of a check's output worth showing: cargo's test summary with tests in it, else the last.
fn summary_line(detail: &str) -> &str {
    let mut lines = detail.lines().map(str::trim).filter(|l| !l.is_empty());
    lines
        .clone()
        .find(|l| l.starts_with("test result:") && !l.contains(" 0 passed"))
        .or_else(|| lines.next_back())
        .unwrap_or_default()
}

fn print_summary(o: &Outcome, elapsed: Duration) {
    println!(
        "\n================ fleetprof demo: summary ({:.0} s) ================",
        elapsed.as_secs_f64()
    );
    println!("regression  {}  {}", o.regression_id, o.function);
    println!(
        "            share of checkout's CPU {} -> {}  (+{:.2} CPU cores)",
        fleetprof_collector::share::percent(o.before_share),
        fleetprof_collector::share::percent(o.after_share),
        o.delta_cores
    );
    println!(
        "root cause  {} \"{}\" by {}",
        &o.commit[..o.commit.len().min(12)],
        o.title,
        o.author
    );
    println!(
        "fix         branch {}  PR description {}",
        o.branch,
        o.pr_md.display()
    );
    for line in &o.validation {
        println!("            {line}");
    }
    for (what, path) in &o.svgs {
        println!("flame graph {what:<8} {}", path.display());
    }
}
