//! Offense end to end: the catalog service (whose `shipping_rate` recomputes a pure result for every
//! request from a dozen distinct arguments) profiled with real eBPF into ClickHouse through the
//! collector, then `fleetprof-agent opportunities` over that store. The `memoize-pure-function`
//! skill's recipe caches the function; the change is validated in a worktree (build, tests, and
//! re-profiling the workload with the real profiler) and proposed on a `fleetprof/opportunity-…`
//! branch, leaving the user's work tree alone. Needs root.
//!
//! Run: `cargo build --bins && cargo test -p fleetprof-tests --test agent_opportunities -- --test-threads=1 --nocapture`

use std::{process::Command, time::Duration};

use fleetprof_tests::{
    catalog_repo::{CatalogRepo, HOT_PURE_FUNCTION},
    demo_repo::git,
    fleet::{Fleet, FleetOptions, run_service, wait_exit},
    require_root, workspace_bin, workspace_root,
};
use serde_json::Value;

/// How long the service runs under the fleet's profiler.
const PROFILED_SECONDS: u64 = 15;

/// The share the agent reports for `function` from the stored profile, from its summary line
/// (`catalog::shipping_rate (71.23%):`), as a fraction.
fn reported_share(stdout: &str, function: &str) -> f64 {
    let prefix = format!("{function} (");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the agent did not report {function}:\n{stdout}"));
    let pct: f64 = line[prefix.len()..]
        .split('%')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no share in {line:?}"));
    pct / 100.0
}

/// The re-profiled share from a reprofile check's detail
/// (`catalog::shipping_rate: 0.12% of CPU with the fix (baseline …`), as a fraction.
fn reprofiled_share(detail: &str) -> f64 {
    let pct = detail
        .split(": ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no share in {detail:?}"));
    pct / 100.0
}

/// Acceptance 4: a hot pure function, profiled for real, becomes a validated memoization PR.
#[test]
fn opportunity_memoizes_hot_pure_function() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let repo = CatalogRepo::create(dir.path()).expect("creating the catalog repository");
    let mut fleet = Fleet::start(&dir.path().join("fleet"), FleetOptions::default())
        .expect("starting the fleet");

    // Production: the service under the daemon, its profile shipped to ClickHouse.
    let mut service = run_service(
        &repo.bin,
        "catalog",
        "v1",
        PROFILED_SECONDS,
        None,
        &dir.path().join("catalog.log"),
    )
    .expect("starting the catalog service");
    wait_exit(&mut service, Duration::from_secs(PROFILED_SECONDS + 30))
        .expect("the catalog service exits");
    println!("{}", service.log().trim());
    fleet.stop_profiler().expect("stopping the profiler");
    let stored = fleet.sql("SELECT sum(count) FROM samples WHERE service = 'catalog'");
    println!("stored samples of catalog: {stored}");

    // The user's work tree, before.
    let status_before = git(&repo.path, &["status", "--porcelain"]).unwrap();
    assert!(
        status_before.is_empty(),
        "the built repository is clean: {status_before}"
    );

    // Offense.
    let outbox = dir.path().join("outbox");
    let out = Command::new(workspace_bin("fleetprof-agent"))
        .arg("--skills")
        .arg(workspace_root().join("skills"))
        .args(["opportunities", "--service", "catalog", "--llm", "none"])
        .args(["--window", "1h", "--limit", "10"])
        .arg("--repo")
        .arg(&repo.path)
        .args(["--clickhouse-url", &fleet.clickhouse.url()])
        .arg("--outbox")
        .arg(&outbox)
        .env("RUST_LOG", "info")
        .env_remove("FLEETPROF_LLM_PROVIDER")
        .output()
        .expect("running fleetprof-agent opportunities");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "--- fleetprof-agent opportunities: {} ---\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "opportunities proposed nothing");
    let stored_share = reported_share(&stdout, HOT_PURE_FUNCTION);
    assert!(
        stored_share > 0.4,
        "{HOT_PURE_FUNCTION} should dominate the stored profile, has {:.2}%",
        stored_share * 100.0
    );

    // The branch.
    let branches = git(
        &repo.path,
        &[
            "branch",
            "--list",
            "fleetprof/opportunity-*",
            "--format=%(refname:short)",
        ],
    )
    .unwrap();
    let branch = branches
        .lines()
        .find(|b| b.contains("shipping_rate"))
        .unwrap_or_else(|| panic!("no opportunity branch for shipping_rate in {branches:?}"))
        .to_string();
    assert_eq!(
        git(&repo.path, &["rev-parse", &format!("{branch}~1")]).unwrap(),
        repo.head,
        "the improvement is one commit on top of HEAD"
    );
    let fixed = git(&repo.path, &["show", &format!("{branch}:src/lib.rs")]).unwrap();
    assert!(
        fixed.contains("fn shipping_rate_uncached(zone: u32, weight_class: u32) -> u64"),
        "the memoize recipe's change is what was committed"
    );

    // The outbox.
    let proposal_dir = outbox.join(branch.replace('/', "-"));
    let pr = std::fs::read_to_string(proposal_dir.join("PR.md")).expect("PR.md");
    println!("--- PR.md ---\n{pr}");
    assert!(pr.contains(HOT_PURE_FUNCTION), "PR.md names the function");
    assert!(
        pr.contains("memoize-pure-function"),
        "PR.md names the skill"
    );
    let proposal: Value = serde_json::from_str(
        &std::fs::read_to_string(proposal_dir.join("proposal.json")).expect("proposal.json"),
    )
    .unwrap();
    assert_eq!(proposal["branch"], branch.as_str());
    assert_eq!(proposal["skill"], "memoize-pure-function");
    assert_eq!(proposal["produced_by"], "recipe memoize");
    let checks = proposal["checks"].as_array().unwrap();
    for step in ["build", "test", "reprofile"] {
        let c = checks
            .iter()
            .find(|c| c["step"] == step)
            .unwrap_or_else(|| panic!("no {step} check in {proposal}"));
        assert_eq!(c["passed"], true, "{step}: {c}");
    }
    let detail = checks.iter().find(|c| c["step"] == "reprofile").unwrap()["detail"]
        .as_str()
        .unwrap();
    let reprofiled = reprofiled_share(detail);
    println!(
        "{HOT_PURE_FUNCTION}: {:.2}% of catalog's CPU in the stored profile, {:.2}% re-profiled with the cache ({detail})",
        stored_share * 100.0,
        reprofiled * 100.0
    );
    assert!(
        reprofiled < stored_share / 4.0,
        "the cache should remove most of the function's cost: {detail}"
    );

    // The user's work tree is untouched.
    assert_eq!(git(&repo.path, &["rev-parse", "HEAD"]).unwrap(), repo.head);
    assert_eq!(
        git(&repo.path, &["status", "--porcelain"]).unwrap(),
        status_before
    );
    assert_eq!(
        git(&repo.path, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap(),
        "main"
    );
}
