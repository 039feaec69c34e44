//! Acceptance: logging regressions in C, C++ and Go services fixed forward by recipe (`--llm none`).
//!
//! Each service (tests/templates/polyglot) runs v1 and then v2 — the commit that logs a formatted
//! line per priced item in `price_items`'s loop — under the real eBPF profiler into ClickHouse
//! through the collector (one fleet for all three). The collector's own `changes import-git` and
//! `detect` find each regression and rank the logging commit first; `fleetprof-agent fix --llm none`
//! locates the code from the profile (DWARF file:line → repository file → tree-sitter span), guards
//! the logging with the language's idiom, and validates the fix in a worktree: build, tests, and
//! re-profiling the workload with the real profiler. (Rust is the demo's own test, agent_fix.rs.)
//!
//! Run: `cargo build --workspace --bins --exclude profiler-ebpf && cargo test -p fleetprof-tests --test agent_languages -- --nocapture`

use std::{path::Path, time::Duration};

use fleetprof_tests::{
    fleet::{Fleet, FleetOptions, run_service, wait_exit},
    polyglot_repo::{Lang, PolyglotRepo, go_env},
    profiled::{Run, detect_stored, fix_by_recipe, regression_caused_by, unix_now},
    require_root,
};
use serde_json::Value;

/// Requests per second each service serves: a steady load well under one core, so three services
/// share the machine's two cores without starving one another.
const RPS: &str = "20000";
/// Seconds each version runs.
const SECONDS: u64 = 20;

/// Runs every repository's `v1` (or `v2`) binary at once, each under its own service name.
fn run_all(repos: &[PolyglotRepo], version: &str) -> Vec<Run> {
    let start = unix_now();
    let mut guards: Vec<_> = repos
        .iter()
        .map(|r| {
            let bin = if version == "v1" {
                &r.v1_bin
            } else {
                &r.v2_bin
            };
            run_service(
                bin,
                &r.lang.service(),
                version,
                SECONDS,
                Some(RPS.parse().unwrap()),
                Path::new("/dev/null"),
            )
            .expect("starting a service")
        })
        .collect();
    for g in &mut guards {
        wait_exit(g, Duration::from_secs(SECONDS + 30)).expect("the service exits");
    }
    let end = unix_now();
    repos
        .iter()
        .map(|_| Run {
            version: version.to_string(),
            start,
            end,
        })
        .collect()
}

/// The regression `detect` stores for `repo`'s service whose best candidate is the v2 commit.
fn detect(fleet: &Fleet, repo: &PolyglotRepo, v1: &Run, v2: &Run) -> Value {
    let service = repo.lang.service();
    let (found, json) = detect_stored(
        fleet,
        &service,
        &repo.path,
        [(v1, &repo.v1_commit), (v2, &repo.v2_commit)],
    );
    regression_caused_by(fleet, &service, found, &json, &repo.v2_commit)
}

/// `fleetprof-agent fix --llm none` for regression `id` of `repo`.
fn agent_fix(fleet: &Fleet, id: &str, repo: &PolyglotRepo, outbox: &Path) -> std::process::Output {
    let env = if repo.lang == Lang::Go {
        go_env()
    } else {
        vec![]
    };
    fix_by_recipe(fleet, id, &repo.path, outbox, &env)
}

#[test]
fn logging_regressions_in_c_cpp_and_go_are_fixed_by_recipe() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let repos: Vec<PolyglotRepo> = [Lang::C, Lang::Cpp, Lang::Go]
        .into_iter()
        .map(|l| PolyglotRepo::create(dir.path(), l).expect("creating a polyglot repository"))
        .collect();
    let mut fleet = Fleet::start(&dir.path().join("fleet"), FleetOptions::default())
        .expect("starting the fleet");
    // The daemon attaches its eBPF programs before sampling.
    std::thread::sleep(Duration::from_secs(2));
    let v1 = run_all(&repos, "v1");
    let v2 = run_all(&repos, "v2");
    // Let the last interval's batch go out, then stop (the daemon flushes on SIGTERM).
    std::thread::sleep(Duration::from_secs(2));
    let profiler_log = fleet.stop_profiler().expect("stopping the profiler daemon");
    println!(
        "samples per service and version:\n{}",
        fleet.sql("SELECT service, version, sum(count) FROM samples GROUP BY service, version ORDER BY service, version")
    );

    // Each language is checked whatever happened to the others, so one run shows them all.
    let mut failures = Vec::new();
    for (i, repo) in repos.iter().enumerate() {
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_language(&fleet, repo, &v1[i], &v2[i], dir.path())
        }));
        if checked.is_err() {
            failures.push(repo.lang.service());
        }
    }
    if !failures.is_empty() {
        println!("--- profiler log ---\n{profiler_log}");
    }
    assert!(failures.is_empty(), "not fixed: {failures:?} (see above)");
}

/// Detects `repo`'s regression, fixes it with `--llm none`, and checks the proposal.
fn check_language(fleet: &Fleet, repo: &PolyglotRepo, v1: &Run, v2: &Run, dir: &Path) {
    let service = repo.lang.service();
    let reg = detect(fleet, repo, v1, v2);
    let id = reg["id"].as_str().expect("id").to_string();
    println!(
        "{service}: regression {id}: {} members {:?}",
        reg["report"]["function"],
        reg["report"]["members"]
            .as_array()
            .map(|m| m.iter().map(|m| m["function"].clone()).collect::<Vec<_>>())
    );
    let outbox = dir.join(format!("outbox-{service}"));
    let out = agent_fix(fleet, &id, repo, &outbox);
    assert!(
        out.status.success(),
        "{service}: fix --llm none proposed nothing"
    );
    let branch = format!("fleetprof/fix-{id}");
    let dir = outbox.join(branch.replace('/', "-"));
    let proposal: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("proposal.json")).expect("proposal.json"),
    )
    .unwrap();
    assert_eq!(proposal["produced_by"], "recipe guard-logging", "{service}");
    assert_eq!(proposal["skill"], "logging-in-hot-path", "{service}");
    let checks = proposal["checks"].as_array().unwrap();
    for step in ["build", "test", "reprofile"] {
        let c = checks
            .iter()
            .find(|c| c["step"] == step)
            .unwrap_or_else(|| panic!("{service}: no {step} check in {proposal}"));
        assert_eq!(c["passed"], true, "{service} {step}: {c}");
        println!(
            "{service} {step}: {}",
            c["detail"]
                .as_str()
                .unwrap_or("")
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let pr = std::fs::read_to_string(dir.join("PR.md")).expect("PR.md");
    assert!(
        pr.contains(&repo.v2_commit),
        "{service}: PR.md names the root cause"
    );
    assert!(
        pr.contains("Dana Developer"),
        "{service}: PR.md names the root-cause author"
    );
    // The commit guards the logging line in price_items, in the language's idiom.
    let fixed = fleetprof_tests::demo_repo::git(
        &repo.path,
        &["show", &format!("{branch}:{}", repo.lang.source_file())],
    )
    .unwrap();
    let guard = match repo.lang {
        Lang::C | Lang::Cpp => "if (fleetprof_verbose_logging()) {",
        Lang::Go => "if fleetprofVerboseLogging {",
    };
    assert!(
        fixed.contains(guard),
        "{service}: the logging is guarded:\n{fixed}"
    );
    let changed = fleetprof_tests::demo_repo::git(
        &repo.path,
        &["diff", "--name-only", &repo.v2_commit, &branch],
    )
    .unwrap();
    assert_eq!(
        changed,
        repo.lang.source_file(),
        "{service}: only the source file changed"
    );
}
