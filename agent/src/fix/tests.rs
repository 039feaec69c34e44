//! Pipeline tests over real git repositories with a small Cargo project, built by the tests.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::skills::SkillSet;
use crate::source::RegressionMember;
use crate::source::{Regression, StaticSource};

fn sh(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const LIB_BEFORE: &str = r#"//! A demo service's hot path.

/// Mixes the items into a checksum.
pub fn checksum(items: &[u64]) -> u64 {
    let mut acc = 0u64;
    for (i, item) in items.iter().enumerate() {
        acc = acc.wrapping_mul(31).wrapping_add(*item ^ i as u64);
    }
    acc
}

/// Counts the divisors of `n`.
pub fn divisors(n: u64) -> u64 {
    (1..=n).filter(|d| n % d == 0).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_stable() {
        assert_eq!(checksum(&[1, 2, 3]), 1055);
    }

    #[test]
    fn divisors_of_12() {
        assert_eq!(divisors(12), 6);
        assert_eq!(divisors(12), 6);
        assert_eq!(divisors(7), 2);
    }
}
"#;

/// A temp git repository with a Cargo project, `fleetprof.toml`, and a commit adding logging to the loop.
fn demo_repo(test_cmd: &str) -> (tempfile::TempDir, String) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    // Inside each worktree (ignored by git): repository commands run as the sandbox user, which
    // may write nowhere else.
    let target = std::path::PathBuf::from("target");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"demo\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(root.join("src/lib.rs"), LIB_BEFORE).unwrap();
    std::fs::write(root.join(".gitignore"), "target/\nCargo.lock\n").unwrap();
    std::fs::write(
        root.join("fleetprof.toml"),
        format!(
            "[validate]\nbuild = \"CARGO_TARGET_DIR={t} cargo build --offline --quiet\"\ntest = \"{test_cmd}\"\n",
            t = target.display(),
            test_cmd = test_cmd.replace("@TARGET@", &target.display().to_string())
        ),
    )
    .unwrap();
    sh(root, &["init", "--quiet", "-b", "main"]);
    sh(root, &["config", "user.name", "Dev One"]);
    sh(root, &["config", "user.email", "dev@example.com"]);
    sh(root, &["add", "-A"]);
    sh(root, &["commit", "--quiet", "-m", "initial"]);
    let regressed = LIB_BEFORE.replace(
        "        acc = acc.wrapping_mul(31).wrapping_add(*item ^ i as u64);\n",
        "        acc = acc.wrapping_mul(31).wrapping_add(*item ^ i as u64);\n        let line = format!(\"item {i}: {item} -> {acc}\");\n        println!(\"{line}\");\n",
    );
    std::fs::write(root.join("src/lib.rs"), regressed).unwrap();
    sh(
        root,
        &["commit", "--quiet", "-am", "Trace every checksum step"],
    );
    let commit = sh(root, &["rev-parse", "HEAD"]).trim().to_string();
    (d, commit)
}

fn regression(commit: &str) -> Regression {
    Regression {
        id: "r-42".into(),
        service: "demo".into(),
        function: "demo::checksum::h0123456789abcdef".into(),
        baseline_share: 0.05,
        current_share: 0.40,
        detected_at: 1_700_000_000,
        version_before: Some("1.0".into()),
        version_after: Some("1.1".into()),
        candidates: vec![RootCauseCandidate {
            commit: commit.into(),
            author: "Dev One <dev@example.com>".into(),
            author_login: Some("devone".into()),
            summary: "Trace every checksum step".into(),
            score: 0.9,
            evidence: vec!["touches src/lib.rs, which defines checksum".into()],
        }],
        // The kernel frame the report grouped first is not in the repository; checksum is.
        members: vec![
            RegressionMember {
                function: "write".into(),
                baseline_share: 0.0,
                current_share: 0.2,
            },
            RegressionMember {
                function: "demo::checksum::h0123456789abcdef".into(),
                baseline_share: 0.05,
                current_share: 0.40,
            },
        ],
        cost: crate::source::RegressionCost {
            delta_cores: 0.35,
            delta_watts: Some(4.2),
        },
    }
}

fn fixer(repo: &Path, outbox: &Path, commit: &str) -> Fixer {
    let skills = SkillSet::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills")).unwrap();
    let source = StaticSource {
        regressions: vec![regression(commit)],
        stacks: vec![(
            "demo".into(),
            "demo::checksum::h0123456789abcdef".into(),
            vec![crate::source::StackCount {
                frames: vec![
                    "main".into(),
                    "demo::checksum".into(),
                    "core::fmt::write".into(),
                ],
                samples: 10,
            }],
        )],
        ..Default::default()
    };
    let tools = ToolBox::new(Arc::new(source), skills).with_repo(Repo::new(repo));
    Fixer::new(
        tools,
        FixOptions {
            outbox: outbox.to_path_buf(),
            ..Default::default()
        },
    )
}

/// The logging recipe fixes the regression: validated in a worktree, committed on fleetprof/fix-<id>, PR.md in the outbox.
#[tokio::test]
async fn logging_regression_is_fixed_forward() {
    let (repo, commit) = demo_repo("CARGO_TARGET_DIR=@TARGET@ cargo test --offline --quiet");
    let outbox = tempfile::tempdir().unwrap();
    let head_before = sh(repo.path(), &["rev-parse", "HEAD"]);
    let outcome = fixer(repo.path(), outbox.path(), &commit)
        .fix_regression("r-42")
        .await
        .unwrap();
    let FixOutcome::Proposed(p) = outcome else {
        panic!("not proposed: {outcome:?}")
    };
    assert_eq!(p.branch, "fleetprof/fix-r-42");
    assert_eq!(p.skill, "logging-in-hot-path");
    assert_eq!(p.produced_by, "recipe guard-logging");
    assert_eq!(
        p.checks.iter().map(|c| c.step.as_str()).collect::<Vec<_>>(),
        ["build", "test"]
    );
    assert!(p.checks.iter().all(|c| c.passed));
    // The user's tree and branch are untouched; the worktree is gone.
    assert_eq!(sh(repo.path(), &["rev-parse", "HEAD"]), head_before);
    assert_eq!(sh(repo.path(), &["status", "--porcelain"]), "");
    assert_eq!(sh(repo.path(), &["worktree", "list"]).lines().count(), 1);
    // The branch holds the fix on top of the root cause.
    let fixed = sh(repo.path(), &["show", "fleetprof/fix-r-42:src/lib.rs"]);
    assert!(
        fixed.contains("        if fleetprof_verbose_logging() {\n            let line = format!"),
        "{fixed}"
    );
    assert!(fixed.contains("fn fleetprof_verbose_logging() -> bool"));
    let msg = sh(
        repo.path(),
        &["log", "-1", "--format=%B", "fleetprof/fix-r-42"],
    );
    assert!(msg.contains("Fleetprof-Regression: r-42"), "{msg}");
    assert!(msg.contains(&format!("Root-cause: {commit}")), "{msg}");
    assert_eq!(
        sh(repo.path(), &["rev-parse", "fleetprof/fix-r-42~1"]).trim(),
        commit
    );
    // PR.md for the author.
    let pr = std::fs::read_to_string(p.outbox_dir.join("PR.md")).unwrap();
    assert!(pr.contains("cc @devone"), "{pr}");
    assert!(pr.contains("from 5.00% to 40.00%"), "{pr}");
    assert!(pr.contains("It costs +0.350 cores (+4.20 W)."), "{pr}");
    assert!(pr.contains("println!(\"{line}\");"), "{pr}");
    assert!(pr.contains("**test**"), "{pr}");
    assert!(p.outbox_dir.join("fix.patch").is_file());
    assert!(p.outbox_dir.join("proposal.json").is_file());
}

/// A patch whose tests fail is not proposed, and its branch is deleted.
#[tokio::test]
async fn failing_validation_is_not_proposed() {
    let (repo, commit) = demo_repo("echo the tests fail; exit 1");
    let outbox = tempfile::tempdir().unwrap();
    let outcome = fixer(repo.path(), outbox.path(), &commit)
        .fix_regression("r-42")
        .await
        .unwrap();
    let FixOutcome::NotProposed { attempts, .. } = outcome else {
        panic!("proposed: {outcome:?}")
    };
    assert!(
        attempts.iter().any(|a| a.reason.starts_with("test failed")),
        "{attempts:?}"
    );
    assert!(
        sh(repo.path(), &["branch", "--list", "fleetprof/*"])
            .trim()
            .is_empty()
    );
    assert_eq!(std::fs::read_dir(outbox.path()).unwrap().count(), 0);
}

/// The memoize recipe makes a hot pure function cached; the result builds and its tests pass.
#[tokio::test]
async fn memoize_opportunity_is_proposed() {
    let (repo, commit) = demo_repo("CARGO_TARGET_DIR=@TARGET@ cargo test --offline --quiet");
    let outbox = tempfile::tempdir().unwrap();
    let f = fixer(repo.path(), outbox.path(), &commit);
    let target = Target {
        id: "demo-divisors".into(),
        kind: SkillKind::Opportunity,
        service: "demo".into(),
        function: "demo::divisors".into(),
        shares: (None, 0.3),
        root_cause: None,
        additions: vec![],
        frames: vec![],
        cost: None,
        locations: vec![],
        located: None,
    };
    let outcome = f.propose(&target).await.unwrap();
    let FixOutcome::Proposed(p) = outcome else {
        panic!("not proposed: {outcome:?}")
    };
    assert_eq!(p.skill, "memoize-pure-function");
    assert_eq!(p.branch, "fleetprof/opportunity-demo-divisors");
    let fixed = sh(
        repo.path(),
        &["show", "fleetprof/opportunity-demo-divisors:src/lib.rs"],
    );
    assert!(
        fixed.contains("let value = divisors_uncached(n);"),
        "{fixed}"
    );
    assert!(
        fixed.contains("fn divisors_uncached(n: u64) -> u64 {"),
        "{fixed}"
    );
    let pr = std::fs::read_to_string(p.outbox_dir.join("PR.md")).unwrap();
    assert!(pr.contains("## The opportunity"), "{pr}");
}

/// Diff blocks are extracted from a model's answer.
#[test]
fn diff_extraction() {
    let a = "Here:\n```diff\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n```\nIt guards the log.";
    assert_eq!(
        extract_diff(a).unwrap(),
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    );
    assert!(extract_diff("no diff").is_none());
    assert_eq!(sanitize_id("r/1 2"), "r-1-2");
}

/// A patch that edits the validation commands, the tests or a build script is refused before
/// anything runs, and the commands always come from the base commit's `fleetprof.toml`.
#[tokio::test]
async fn patches_to_what_judges_them_are_refused() {
    let (repo, commit) = demo_repo("echo base-test-command");
    let outbox = tempfile::tempdir().unwrap();
    let f = fixer(repo.path(), outbox.path(), &commit);
    let target = Target {
        id: "r-guard".into(),
        kind: SkillKind::Regression,
        service: "demo".into(),
        function: "demo::checksum".into(),
        shares: (Some(0.05), 0.4),
        root_cause: None,
        additions: vec![],
        frames: vec![],
        cost: None,
        locations: vec![],
        located: None,
    };
    let toml = std::fs::read_to_string(repo.path().join("fleetprof.toml")).unwrap();
    let cases = [
        (
            "fleetprof.toml",
            toml.replace("echo base-test-command", "true"),
            "fleetprof.toml",
        ),
        (
            "tests/it.rs",
            "#[test]\nfn always() {}\n".to_string(),
            "the tests",
        ),
        ("build.rs", "fn main() {}\n".to_string(), "a build script"),
    ];
    for (path, text, why) in cases {
        let patch = Patch::Files(vec![(path.to_string(), text)]);
        let out = f
            .try_patch(&target, &patch, "s", "model test", "what", vec![], &[])
            .await
            .unwrap();
        let Err(attempt) = out else {
            panic!("a patch to {path} was proposed")
        };
        assert!(
            attempt.reason.contains(path) && attempt.reason.contains(why),
            "{path}: {}",
            attempt.reason
        );
        assert!(attempt.checks.is_empty(), "nothing ran for {path}");
    }
    // A source patch runs the base commit's test command (the patched tree's file is not read).
    let lib = std::fs::read_to_string(repo.path().join("src/lib.rs")).unwrap();
    let patch = Patch::Files(vec![(
        "src/lib.rs".into(),
        lib.replace("Mixes", "Mixes (fixed)"),
    )]);
    let Ok(p) = f
        .try_patch(&target, &patch, "s", "model test", "what", vec![], &[])
        .await
        .unwrap()
    else {
        panic!("a source patch was refused")
    };
    let test = p.checks.iter().find(|c| c.step == "test").unwrap();
    assert_eq!(test.command, "echo base-test-command");
    assert!(test.detail.contains("base-test-command"));
    // Only the patch's path was committed (not the build's outputs).
    let files = sh(
        repo.path(),
        &["diff", "--name-only", &format!("{}~1", p.branch), &p.branch],
    );
    assert_eq!(files.trim(), "src/lib.rs");
}

use crate::llm::scripted::{
    openai_answer as model_answer, openai_model, openai_tool_call as model_call,
    skills_without_recipes,
};

/// A pipeline over `repo` whose skills have no recipes (so the model path runs), with a model
/// at `url`.
fn model_fixer(
    repo: &Path,
    outbox: &Path,
    commit: &str,
    url: String,
    limits: LoopLimits,
    skills_dir: &Path,
) -> Fixer {
    skills_without_recipes(skills_dir);
    let f = fixer(repo, outbox, commit);
    let tools = ToolBox::new(
        f.tools.source().clone(),
        SkillSet::load(skills_dir).unwrap(),
    )
    .with_repo(Repo::new(repo));
    Fixer::new(
        tools,
        FixOptions {
            outbox: outbox.to_path_buf(),
            model: openai_model(url),
            limits,
            ..Default::default()
        },
    )
}

const DEBUG_LINES: &str =
    "        let line = format!(\"item {i}: {item} -> {acc}\");\n        println!(\"{line}\");\n";

/// The model path is a coding agent: the scripted model reads the code in its worktree, edits it
/// with a structured edit (an edit to fleetprof.toml is refused), builds and tests it there, and
/// the worktree's diff is validated again and proposed. Everything from the repository and the
/// tools reaches the model fenced as data.
#[tokio::test]
async fn model_reads_edits_builds_and_the_fix_validates() {
    let (repo, commit) = demo_repo("CARGO_TARGET_DIR=@TARGET@ cargo test --offline --quiet");
    let outbox = tempfile::tempdir().unwrap();
    let skills = tempfile::tempdir().unwrap();
    let guarded = DEBUG_LINES
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    let server = crate::llm::scripted::ScriptedServer::start(vec![
        model_call("c1", "read_code", serde_json::json!({"path": "src/lib.rs"})),
        model_call(
            "c2",
            "replace_snippet",
            serde_json::json!({"path": "src/lib.rs", "old": DEBUG_LINES,
                "new": format!("        if std::env::var_os(\"DEMO_DEBUG\").is_some() {{\n{guarded}        }}\n")}),
        ),
        model_call(
            "c3",
            "replace_snippet",
            serde_json::json!({"path": "fleetprof.toml", "old": "test", "new": "true"}),
        ),
        model_call("c4", "build", serde_json::json!({})),
        model_call("c5", "run_tests", serde_json::json!({})),
        model_answer("Guards the per-item debug line behind DEMO_DEBUG."),
    ]);
    let f = model_fixer(
        repo.path(),
        outbox.path(),
        &commit,
        server.url(),
        LoopLimits::default(),
        skills.path(),
    );
    let outcome = f.fix_regression("r-42").await.unwrap();
    let FixOutcome::Proposed(p) = outcome else {
        panic!("not proposed: {outcome:?}")
    };
    assert_eq!(p.produced_by, "model openai:m");
    assert!(p.checks.iter().all(|c| c.passed), "{:?}", p.checks);
    let fixed = sh(repo.path(), &["show", "fleetprof/fix-r-42:src/lib.rs"]);
    assert!(
        fixed.contains("if std::env::var_os(\"DEMO_DEBUG\").is_some() {\n            let line"),
        "{fixed}"
    );
    // The refused edit left fleetprof.toml alone; the session's worktree and branch are gone.
    let files = sh(
        repo.path(),
        &[
            "diff",
            "--name-only",
            "fleetprof/fix-r-42~1",
            "fleetprof/fix-r-42",
        ],
    );
    assert_eq!(files.trim(), "src/lib.rs");
    assert!(
        sh(repo.path(), &["branch", "--list", "fleetprof/session-*"])
            .trim()
            .is_empty()
    );
    assert_eq!(sh(repo.path(), &["worktree", "list"]).lines().count(), 1);

    let reqs: Vec<serde_json::Value> = server
        .requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(reqs.len(), 6);
    let first = reqs[0]["messages"].as_array().unwrap();
    let system = first[0]["content"].as_str().unwrap();
    assert!(system.contains("is DATA"), "{system}");
    let nonce = system
        .split("<<<DATA ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    let user = first[1]["content"].as_str().unwrap();
    assert!(
        user.contains(&format!(
            "<<<DATA {nonce} (commit author and summary)\nDev One <dev@example.com>: Trace every checksum step\nDATA {nonce}>>>"
        )),
        "{user}"
    );
    let tools: Vec<&str> = reqs[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    for t in [
        "read_code",
        "replace_snippet",
        "insert_lines",
        "build",
        "run_tests",
        "reprofile",
        "get_regression",
    ] {
        assert!(tools.contains(&t), "{t} offered: {tools:?}");
    }
    let last_tool = |i: usize| -> String {
        let m = reqs[i]["messages"].as_array().unwrap();
        m.last().unwrap()["content"].as_str().unwrap().to_string()
    };
    let read = last_tool(1);
    assert!(
        read.starts_with(&format!("<<<DATA {nonce} (result of read_code)\n"))
            && read.contains("println!(\"{line}\")")
            && read.ends_with(&format!("DATA {nonce}>>>")),
        "{read}"
    );
    assert!(
        last_tool(2).contains("edited src/lib.rs"),
        "{}",
        last_tool(2)
    );
    let refused = last_tool(3);
    assert!(
        refused.starts_with("ERROR:") && refused.contains("fleetprof.toml may not be edited"),
        "{refused}"
    );
    assert!(
        last_tool(4).contains("build `CARGO_TARGET_DIR="),
        "{}",
        last_tool(4)
    );
    assert!(last_tool(4).contains("` passed in "), "{}", last_tool(4));
    assert!(last_tool(5).contains("` passed in "), "{}", last_tool(5));
    let pr = std::fs::read_to_string(p.outbox_dir.join("PR.md")).unwrap();
    assert!(
        pr.contains("model conversation: 6 of 30 turns, 720 of 200000 tokens"),
        "{pr}"
    );
    assert!(
        pr.contains("Guards the per-item debug line behind DEMO_DEBUG."),
        "{pr}"
    );
}

/// A spent budget stops the loop with a message saying which budget, and its edits are dropped.
#[tokio::test]
async fn exhausted_budget_stops_the_model_loop() {
    let (repo, commit) = demo_repo("true");
    let outbox = tempfile::tempdir().unwrap();
    let skills = tempfile::tempdir().unwrap();
    let server = crate::llm::scripted::ScriptedServer::start(vec![
        model_call(
            "c1",
            "insert_lines",
            serde_json::json!({"path": "src/lib.rs", "line": 1, "text": "// touched"}),
        ),
        model_call("c2", "show_diff", serde_json::json!({})),
        model_call("c3", "show_diff", serde_json::json!({})),
    ]);
    let limits = LoopLimits {
        max_turns: 3,
        ..Default::default()
    };
    let f = model_fixer(
        repo.path(),
        outbox.path(),
        &commit,
        server.url(),
        limits,
        skills.path(),
    );
    let outcome = f.fix_regression("r-42").await.unwrap();
    let FixOutcome::NotProposed { attempts, .. } = outcome else {
        panic!("proposed: {outcome:?}")
    };
    let a = attempts
        .iter()
        .find(|a| a.produced_by == "model openai:m")
        .unwrap();
    assert_eq!(
        a.reason,
        "the model loop stopped: turn budget exhausted: the model did not finish within 3 turns; its 1 edit(s) were not proposed"
    );
    assert_eq!(server.requests().len(), 3);
    assert!(
        sh(repo.path(), &["branch", "--list", "fleetprof/*"])
            .trim()
            .is_empty()
    );
    assert_eq!(sh(repo.path(), &["worktree", "list"]).lines().count(), 1);
}

/// A repository without `fleetprof.toml` gets a draft proposal whose PR.md says nothing was
/// validated (no commands ran).
#[tokio::test]
async fn repository_without_config_gets_a_draft() {
    let (repo, commit) = demo_repo("true");
    sh(repo.path(), &["rm", "--quiet", "fleetprof.toml"]);
    sh(
        repo.path(),
        &["commit", "--quiet", "-m", "drop the fleetprof config"],
    );
    let outbox = tempfile::tempdir().unwrap();
    let outcome = fixer(repo.path(), outbox.path(), &commit)
        .fix_regression("r-42")
        .await
        .unwrap();
    let FixOutcome::Proposed(p) = outcome else {
        panic!("not proposed: {outcome:?}")
    };
    assert!(p.draft);
    assert!(p.checks.is_empty(), "{:?}", p.checks);
    let pr = std::fs::read_to_string(p.outbox_dir.join("PR.md")).unwrap();
    assert!(pr.starts_with("# [draft] perf: "), "{pr}");
    assert!(pr.contains("**Draft: nothing was validated.**"), "{pr}");
    assert!(
        pr.contains("- nothing: the repository has no `fleetprof.toml`"),
        "{pr}"
    );
    let proposal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.outbox_dir.join("proposal.json")).unwrap())
            .unwrap();
    assert_eq!(proposal["draft"], true);
}

/// `git status --porcelain -z` entries name each path once, unquoted; a rename names both sides;
/// a file whose name looks like a rename is one path.
#[test]
fn porcelain_paths_are_read_whole() {
    let status =
        " M src/lib.rs\0?? tests/a -> b.rs\0R  src/new.rs\0fleetprof.toml\0?? say \"hi\".c\0";
    assert_eq!(
        super::porcelain_z_paths(status),
        [
            "src/lib.rs",
            "tests/a -> b.rs",
            "src/new.rs",
            "fleetprof.toml",
            "say \"hi\".c"
        ]
    );
}
