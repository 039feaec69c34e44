//! The demo service profiled for the agent's end-to-end tests: its versions run one after the other
//! under a [`Fleet`] (real eBPF profiler, real collector, real ClickHouse); then the collector's
//! own `changes` and `detect` commands find the regression the demo commit caused and rank the
//! repository's real commits as its root cause.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fleetprof_collector::detect;

use crate::{
    demo_repo::DemoRepo,
    fleet::{Fleet, STEADY_RPS, run_service, wait_exit},
};

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When one version of a service ran.
#[derive(Debug, Clone)]
pub struct Run {
    /// The version label the profiler saw (`FLEETPROF_VERSION`).
    pub version: String,
    /// Start, Unix seconds.
    pub start: i64,
    /// End, Unix seconds.
    pub end: i64,
}

/// The service name the demo runs under in this test process: unique, because the profiler
/// samples the whole host, where another run of the demo (another test binary, a person's demo)
/// may be going on at the same time under its own name.
pub fn demo_service() -> String {
    format!("checkout-{}", std::process::id())
}

/// Runs `bin --seconds N` as `service` at `version` until it exits; its output is discarded (the
/// regressed demo logs megabytes a second).
pub fn run_version(bin: &Path, service: &str, version: &str, seconds: u64) -> Run {
    run_version_at(bin, service, version, seconds, STEADY_RPS)
}

/// Like [`run_version`], at `rps` requests per second.
pub fn run_version_at(bin: &Path, service: &str, version: &str, seconds: u64, rps: u32) -> Run {
    let start = unix_now();
    let mut guard = run_service(
        bin,
        service,
        version,
        seconds,
        Some(rps),
        Path::new("/dev/null"),
    )
    .expect("starting the service");
    wait_exit(&mut guard, Duration::from_secs(seconds + 30)).expect("the service exits");
    Run {
        version: version.to_string(),
        start,
        end: unix_now(),
    }
}

/// The demo repository profiled for real: v1 for `seconds`, then v2 (the root cause) for `seconds`,
/// under service [`demo_service`]; the daemon is stopped afterwards so every sample is stored.
///
/// Tests give each version 40–45 s and detection a window of the run less 5 s: with a 20-s
/// window, `checkout::price_items` (33% → 43% of the service) stood at z ≈ 5 against the
/// detector's ~4.3, and below it when the machine was busy.
pub fn profile_demo(fleet: &mut Fleet, repo: &DemoRepo, seconds: u64) -> (Run, Run) {
    // `Fleet::start` returned once the daemon was profiling.
    let service = demo_service();
    let v1 = run_version(&repo.v1_bin, &service, "v1", seconds);
    let v2 = run_version(&repo.v2_bin, &service, "v2", seconds);
    // The daemon flushes its last interval on SIGTERM; this returns once all of it is stored.
    fleet.stop_profiler().expect("stopping the profiler daemon");
    (v1, v2)
}

/// What [`detect_regression`] found.
#[derive(Debug, Clone)]
pub struct StoredRegression {
    /// The regression's id.
    pub id: String,
    /// The regressed function.
    pub function: String,
    /// Its total share in v1, 0..=1 (measured).
    pub before: f64,
    /// Its total share in v2, 0..=1 (measured).
    pub after: f64,
    /// The ranked candidates stored with it.
    pub candidates: Vec<detect::Candidate>,
}

/// Finds the demo's regression the way an operator would: records the two deploys and the
/// repository's commits, runs `fleetprof-collector detect` over the stored profiles, and returns
/// the stored regression whose members include the function the second commit slowed down.
pub fn detect_regression(fleet: &Fleet, repo: &DemoRepo, v1: &Run, v2: &Run) -> StoredRegression {
    let service = demo_service();
    let (found, json) = detect_stored(
        fleet,
        &service,
        &repo.path,
        [(v1, &repo.v1_commit), (v2, &repo.v2_commit)],
    );
    let function = repo.regression.regressed_function().to_string();
    let item = found
        .iter()
        .find(|r| {
            r["report"]["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["function"] == function.as_str()))
        })
        .unwrap_or_else(|| panic!("detect did not report {function}:\n{json}"));
    let member = item["report"]["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["function"] == function.as_str()))
        .expect("the member");
    StoredRegression {
        id: item["id"].as_str().expect("id").to_string(),
        function,
        before: member["total_before"].as_f64().expect("total_before"),
        after: member["total_after"].as_f64().expect("total_after"),
        candidates: serde_json::from_value(item["candidates"].clone()).expect("candidates"),
    }
}

/// What an operator runs to find `service`'s regressions: records its two deploys (`deploys`: the
/// run of each version and its commit), imports the repository's commits, and runs
/// `fleetprof-collector detect --format json` over the stored profiles. Returns the regressions
/// it reported and its raw output (for failure messages).
pub fn detect_stored(
    fleet: &Fleet,
    service: &str,
    repo: &Path,
    deploys: [(&Run, &str); 2],
) -> (Vec<serde_json::Value>, String) {
    let at = |t: i64| {
        let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(t).expect("time after 1970"));
        humantime::format_rfc3339_seconds(time).to_string()
    };
    for (run, commit) in deploys {
        fleet
            .collector_cli(&[
                "changes",
                "deploy",
                "--service",
                service,
                "--version",
                &run.version,
                "--at",
                &at(run.start),
                "--commit",
                commit,
            ])
            .expect("recording a deploy");
    }
    fleet
        .collector_cli(&[
            "changes",
            "import-git",
            "--repo",
            &repo.to_string_lossy(),
            "--service",
            service,
        ])
        .expect("importing the repository's commits");
    // Each side of the change gets as much of its version's run as it has (less 5 s of start-up):
    // the detector's z grows with the samples in its window.
    let shortest = deploys.iter().map(|(run, _)| run.end - run.start).min();
    let window = format!("{}s", shortest.unwrap_or(0).saturating_sub(5).max(20));
    let json = fleet
        .collector_cli(&[
            "detect",
            "--service",
            service,
            "--since",
            "15m",
            "--bucket",
            "2s",
            "--window",
            &window,
            "--persistence",
            "8s",
            "--format",
            "json",
        ])
        .expect("running detect");
    let found = serde_json::from_str(&json).expect("detect --format json");
    (found, json)
}

/// Of `detect_stored`'s regressions, the one whose best root-cause candidate is `commit`; panics
/// with what `query diff` says changed between `v1` and `v2` of `service` when there is none.
pub fn regression_caused_by(
    fleet: &Fleet,
    service: &str,
    found: Vec<serde_json::Value>,
    json: &str,
    commit: &str,
) -> serde_json::Value {
    found
        .into_iter()
        .find(|r| r["candidates"][0]["change_id"] == commit)
        .unwrap_or_else(|| {
            // Say what the profile holds: the functions whose share changed between versions.
            let diff = fleet
                .collector_cli(&[
                    "query",
                    "diff",
                    "--service",
                    service,
                    "--baseline",
                    "v1",
                    "--comparison",
                    "v2",
                    "--since",
                    "15m",
                ])
                .unwrap_or_else(|e| e.to_string());
            panic!("detect found no regression of {service} caused by {commit}:\n{json}\n{diff}")
        })
}

/// `fleetprof-agent fix --regression ID --llm none` (the skills' recipes only) on `repo`, against
/// the fleet's ClickHouse, writing the proposal to `outbox`; `env` is added to its environment
/// (the Go tool's cache, say). Its output is printed.
pub fn fix_by_recipe(
    fleet: &Fleet,
    id: &str,
    repo: &Path,
    outbox: &Path,
    env: &[(&str, String)],
) -> std::process::Output {
    let skills = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let out = std::process::Command::new(crate::workspace_bin("fleetprof-agent"))
        .args(["fix", "--regression", id, "--llm", "none"])
        .args(["--clickhouse-url", &fleet.clickhouse.url()])
        .arg("--repo")
        .arg(repo)
        .arg("--skills")
        .arg(&skills)
        .arg("--outbox")
        .arg(outbox)
        .env_remove("LOG_LEVEL")
        .env_remove("FLEETPROF_LLM_PROVIDER")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .expect("running fleetprof-agent fix");
    println!(
        "--- fleetprof-agent fix {id}: {} ---\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
