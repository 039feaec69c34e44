//! `fleetprof-agent eval --llm none --reprofile` on two corpus cases (C logging, Go regex): each
//! case's workload runs for a set time and reports its items through `FLEETPROF_WORK_FILE`, so the
//! fast builds (before the root cause, and the fix) are sampled for the whole round like the slow
//! one, and the recipe's fix is validated by the real eBPF profiler per unit of work. Needs root.
//!
//! Run: `cargo build --workspace --bins --exclude profiler-ebpf && cargo test -p fleetprof-tests --test agent_eval -- --nocapture`

use std::{path::Path, process::Command};

use fleetprof_tests::{polyglot_repo::go_env, require_root, workspace_bin};
use serde_json::Value;

#[test]
fn eval_reprofiles_c_and_go_cases_per_unit_of_work() {
    require_root();
    let skills = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let out = Command::new(workspace_bin("fleetprof-agent"))
        .args(["eval", "--llm", "none", "--reprofile", "--json"])
        .args(["--case", "c-logging", "--case", "go-regex"])
        .arg("--skills")
        .arg(&skills)
        .env_remove("FLEETPROF_LLM_PROVIDER")
        .envs(go_env())
        .output()
        .expect("running fleetprof-agent eval");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "--- eval: {} ---\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_str(&stdout).expect("eval --json");
    assert_eq!(results.len(), 2, "{stdout}");
    for r in &results {
        let name = &r["name"];
        assert_eq!(r["validated"], true, "{name}: {r}");
        assert!(
            r["produced_by"]
                .as_str()
                .is_some_and(|p| p.starts_with("recipe ")),
            "{name}: {r}"
        );
        let verdict = r["reprofile"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} was not re-profiled: {r}"));
        assert!(
            verdict.contains("per") && verdict.contains("units of work")
                || verdict.contains("unit of work"),
            "{name}: judged per unit of work: {verdict}"
        );
    }
    assert!(out.status.success(), "every case as expected");
}
