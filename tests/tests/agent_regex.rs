//! Acceptance: a regex compiled per call, fixed forward by recipe (`--llm none`) end to end.
//!
//! A Go router (tests/templates/regex/go) runs v1 and then v2 — the commit that compiles its path
//! pattern inside `routeRequest` — under the real eBPF profiler into ClickHouse through the
//! collector. The collector's own `changes import-git` and `detect` find the regression and rank
//! that commit first; `fleetprof-agent fix --llm none` locates `routeRequest` from the profile,
//! hoists the pattern into a package variable (skill `regex-built-per-call`, recipe `hoist-regex`)
//! and validates the fix in a worktree: build, tests, and re-profiling with the real profiler.
//!
//! Run: `cargo build --workspace --bins --exclude profiler-ebpf && cargo test -p fleetprof-tests --test agent_regex -- --nocapture`

use std::{path::Path, time::Duration};

use fleetprof_tests::{
    demo_repo::git,
    fleet::{Fleet, FleetOptions},
    polyglot_repo::{Lang, PolyglotRepo, go_env},
    profiled::{detect_stored, fix_by_recipe, regression_caused_by, run_version_at},
    require_root,
};
use serde_json::Value;

/// Requests per second: the regressed router needs about a sixth of a core at this rate.
const RPS: u32 = 10_000;
/// Seconds each version runs.
const SECONDS: u64 = 20;

#[test]
fn a_regex_compiled_per_call_in_go_is_fixed_by_recipe() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let service = format!("router-go-{}", std::process::id());
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/regex/go");
    let repo = PolyglotRepo::create_from(
        dir.path(),
        Lang::Go,
        &templates,
        &service,
        (
            "router: route API paths by version",
            "Keep the API path pattern next to its use",
        ),
    )
    .expect("creating the router's repository");
    let mut fleet = Fleet::start(&dir.path().join("fleet"), FleetOptions::default())
        .expect("starting the fleet");
    // The daemon attaches its eBPF programs before sampling.
    std::thread::sleep(Duration::from_secs(2));
    let v1 = run_version_at(&repo.v1_bin, &service, "v1", SECONDS, RPS);
    let v2 = run_version_at(&repo.v2_bin, &service, "v2", SECONDS, RPS);
    // The daemon flushes its last interval on SIGTERM; this returns once all of it is stored.
    let profiler_log = fleet.stop_profiler().expect("stopping the profiler daemon");

    let (found, json) = detect_stored(
        &fleet,
        &service,
        &repo.path,
        [(&v1, &repo.v1_commit), (&v2, &repo.v2_commit)],
    );
    if found.is_empty() {
        println!("--- profiler log ---\n{profiler_log}");
    }
    let reg = regression_caused_by(&fleet, &service, found, &json, &repo.v2_commit);
    let id = reg["id"].as_str().expect("id").to_string();
    let members: Vec<Value> = reg["report"]["members"]
        .as_array()
        .map(|m| m.iter().map(|m| m["function"].clone()).collect())
        .unwrap_or_default();
    println!(
        "regression {id}: {} members {members:?}",
        reg["report"]["function"]
    );
    assert!(
        members
            .iter()
            .any(|f| f.as_str().is_some_and(|f| f.starts_with("regexp"))),
        "the regex compiler is among the regressed functions: {members:?}"
    );

    let outbox = dir.path().join("outbox");
    let out = fix_by_recipe(&fleet, &id, &repo.path, &outbox, &go_env());
    assert!(out.status.success(), "fix --llm none proposed nothing");
    let branch = format!("fleetprof/fix-{id}");
    let proposal_dir = outbox.join(branch.replace('/', "-"));
    let proposal: Value = serde_json::from_str(
        &std::fs::read_to_string(proposal_dir.join("proposal.json")).expect("proposal.json"),
    )
    .unwrap();
    assert_eq!(proposal["produced_by"], "recipe hoist-regex", "{proposal}");
    assert_eq!(proposal["skill"], "regex-built-per-call", "{proposal}");
    let checks = proposal["checks"].as_array().unwrap();
    for step in ["build", "test", "reprofile"] {
        let c = checks
            .iter()
            .find(|c| c["step"] == step)
            .unwrap_or_else(|| panic!("no {step} check in {proposal}"));
        assert_eq!(c["passed"], true, "{step}: {c}");
        println!("{step}: {}", c["detail"].as_str().unwrap_or(""));
    }
    let pr = std::fs::read_to_string(proposal_dir.join("PR.md")).expect("PR.md");
    assert!(pr.contains(&repo.v2_commit), "PR.md names the root cause");
    assert!(
        pr.contains("Dana Developer"),
        "PR.md names the root-cause author"
    );
    // The pattern is compiled once, in a package variable, and routeRequest uses it.
    let fixed = git(&repo.path, &["show", &format!("{branch}:main.go")]).unwrap();
    assert!(
        fixed.contains(
            "var routeRequestApiPathRe = regexp.MustCompile(`^/api/v([0-9]+)/(\\w+)/([0-9]+)$`)"
        ),
        "the pattern is hoisted:\n{fixed}"
    );
    assert!(
        fixed.contains("\tapiPath := routeRequestApiPathRe\n"),
        "routeRequest uses the hoisted pattern:\n{fixed}"
    );
    let changed = git(
        &repo.path,
        &["diff", "--name-only", &repo.v2_commit, &branch],
    )
    .unwrap();
    assert_eq!(changed, "main.go", "only the source file changed");
}
