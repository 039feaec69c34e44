//! Fix-forward end to end: the demo service (whose latest commit, by Dana Developer, logs in the hot
//! loop of `checkout::price_items`) profiled with real eBPF into ClickHouse through the collector,
//! the regression and its ranked root cause stored, then `fleetprof-agent fix` over that store:
//! once with the skill's deterministic recipe (`--llm none`), once through an OpenAI-compatible
//! server scripted by the test (`--llm openai`, the skill's recipe removed so the model path runs).
//! Both proposals are validated in a worktree: build, tests, and re-profiling the workload with the
//! real profiler. Needs root.
//!
//! Run: `cargo build --bins && cargo test -p fleetprof-tests --test agent_fix -- --test-threads=1 --nocapture`

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use fleetprof_tests::{
    demo_repo::{DemoRepo, Regression, git},
    fleet::{Fleet, FleetOptions},
    profiled::{StoredRegression, detect_regression, profile_demo},
    require_root, workspace_bin,
};
use serde_json::{Value, json};

/// Runs `fleetprof-agent fix` for `reg` on `repo` against the fleet's ClickHouse.
fn agent_fix(
    fleet: &Fleet,
    reg: &StoredRegression,
    repo: &Path,
    skills: &Path,
    outbox: &Path,
    llm: &str,
    env: &[(&str, String)],
) -> Output {
    let mut cmd = Command::new(workspace_bin("fleetprof-agent"));
    cmd.args(["fix", "--regression", &reg.id, "--llm", llm])
        .args(["--clickhouse-url", &fleet.clickhouse.url()])
        .arg("--repo")
        .arg(repo)
        .arg("--skills")
        .arg(skills)
        .arg("--outbox")
        .arg(outbox)
        // The workload inherits the agent's environment: keep the demo's debug logging off.
        .env("RUST_LOG", "info")
        .env_remove("FLEETPROF_LLM_PROVIDER");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running fleetprof-agent fix");
    println!(
        "--- fleetprof-agent fix --llm {llm}: {} ---\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The re-profiled share of the function with the fix, from a reprofile check's detail
/// (`checkout::price_items: 12.34% of CPU with the fix (baseline …`), as a fraction.
fn reprofiled_share(detail: &str) -> f64 {
    let pct = detail
        .split(": ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no share in {detail:?}"));
    pct / 100.0
}

/// The share of the function in the code before the root cause, re-profiled by the agent, from a
/// reprofile check's detail (`…, 10.00% before the root cause (same machine, …`), as a fraction.
fn before_root_cause_share(detail: &str) -> f64 {
    let pct = detail
        .split(" before the root cause")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.trim().strip_suffix('%'))
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no before-the-root-cause share in {detail:?}"));
    pct / 100.0
}

/// Checks a proposal in the outbox: the branch, `PR.md` (regression, root-cause commit, cc Dana),
/// and that build, tests and re-profiling passed with the share back near the baseline. Returns
/// the proposal.
fn check_proposal(repo: &Path, outbox: &Path, reg: &StoredRegression, root_cause: &str) -> Value {
    let branch = format!("fleetprof/fix-{}", reg.id);
    let tip = git(repo, &["rev-parse", "--verify", &branch]).expect("the fix branch exists");
    let dir = outbox.join(branch.replace('/', "-"));
    let pr = std::fs::read_to_string(dir.join("PR.md")).expect("PR.md");
    println!("--- PR.md ---\n{pr}");
    assert!(pr.contains(&reg.id), "PR.md names the regression");
    assert!(pr.contains(root_cause), "PR.md names the root-cause commit");
    assert!(
        pr.contains("cc Dana Developer"),
        "PR.md copies the root-cause author"
    );
    assert!(pr.contains("checkout::price_items"));
    let proposal: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("proposal.json")).expect("proposal.json"),
    )
    .unwrap();
    assert_eq!(proposal["branch"], branch.as_str());
    assert_eq!(proposal["commit"], tip.as_str());
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
    let share = reprofiled_share(detail);
    println!(
        "price_items: baseline {:.2}%, regressed {:.2}%, with the fix {:.2}% ({detail})",
        reg.before * 100.0,
        reg.after * 100.0,
        share * 100.0
    );
    // Compared with the code before the root cause re-profiled on this machine under the same
    // load (production's v1 share ran under other load, minutes earlier): most of the regression
    // is gone. Half of it is the agent's own limit, which a few seconds of profile tell reliably.
    let local = before_root_cause_share(detail);
    assert!(share <= local + 0.5 * (reg.after - reg.before), "{detail}");
    // The fix is the branch's one commit on top of the root cause.
    assert_eq!(
        git(repo, &["rev-parse", &format!("{branch}~1")]).unwrap(),
        root_cause
    );
    proposal
}

/// A canned OpenAI-compatible chat-completions server: the first request gets a tool call
/// (`get_regression`), every later one the final answer. Records every request body.
struct ScriptedModel {
    port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

impl ScriptedModel {
    fn start(regression_id: String, final_answer: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let Some(body) = read_request(&mut stream) else {
                    continue;
                };
                let n = {
                    let mut r = seen.lock().unwrap();
                    r.push(body);
                    r.len()
                };
                let message = if n == 1 {
                    json!({"role": "assistant", "content": null, "tool_calls": [{
                        "id": "call_1", "type": "function",
                        "function": {"name": "get_regression",
                                     "arguments": json!({"id": regression_id}).to_string()}
                    }]})
                } else {
                    json!({"role": "assistant", "content": final_answer})
                };
                let response = json!({
                    "id": format!("chatcmpl-{n}"), "object": "chat.completion", "model": "scripted",
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": if n == 1 { "tool_calls" } else { "stop" }}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{response}",
                    response.len()
                );
            }
        });
        Self { port, requests }
    }
}

/// The fix a model would write: the debug line in `price_items` (its `format!` and `eprintln!`)
/// guarded by an environment variable, as a unified diff against `repo`'s HEAD.
fn guarded_logging_diff(repo: &Path) -> String {
    let file = repo.join("src/lib.rs");
    let text = std::fs::read_to_string(&file).unwrap();
    // The debug line the root-cause commit added: the `format!` and the `eprintln!` it feeds.
    let start = text
        .find("    let line = format!(")
        .expect("the demo's debug format!");
    let end = start
        + text[start..]
            .find("eprintln!(\"{line}\");\n")
            .expect("the demo's eprintln")
        + "eprintln!(\"{line}\");\n".len();
    let logging: String = text[start..end]
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    let fixed = format!(
        "{}    if std::env::var_os(\"CHECKOUT_DEBUG\").is_some() {{\n{logging}    }}\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&file, fixed).unwrap();
    let diff = git(repo, &["diff"]).unwrap();
    git(repo, &["checkout", "--", "src/lib.rs"]).unwrap();
    format!("{diff}\n")
}

/// A copy of the workspace's skills whose `logging-in-hot-path` has no recipe, so only a model
/// can produce the fix.
fn skills_without_recipe(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let dst = dir.join("skills");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(status.success());
    let skill = dst.join("logging-in-hot-path/SKILL.md");
    let text = std::fs::read_to_string(&skill).unwrap();
    assert!(text.contains("\nrecipe: guard-logging\n"));
    std::fs::write(&skill, text.replace("\nrecipe: guard-logging\n", "\n")).unwrap();
    dst
}

/// Acceptance 2 and 3: a regression profiled for real is fixed forward by the recipe and by a
/// (scripted) model; both fixes build, pass the tests and bring `price_items` back to its baseline.
#[test]
fn fix_forward_real_regression_by_recipe_and_by_model() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let repo =
        DemoRepo::create(dir.path(), Regression::Logging).expect("creating the demo repository");
    let mut fleet = Fleet::start(&dir.path().join("fleet"), FleetOptions::default())
        .expect("starting the fleet");
    let (v1, v2) = profile_demo(&mut fleet, &repo, 45);
    let reg = detect_regression(&fleet, &repo, &v1, &v2);
    println!(
        "regression {}: {} {:.2}% (v1) -> {:.2}% (v2); candidates: {:?}",
        reg.id,
        reg.function,
        reg.before * 100.0,
        reg.after * 100.0,
        reg.candidates
            .iter()
            .map(|c| (&c.change_id[..10], &c.author, c.score))
            .collect::<Vec<_>>()
    );
    assert!(
        reg.after > reg.before * 1.2,
        "the logging commit should regress price_items clearly"
    );
    assert_eq!(
        reg.candidates[0].change_id, repo.v2_commit,
        "root cause ranked first"
    );

    // 2. The skill's recipe.
    let skills = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let outbox = dir.path().join("outbox");
    let out = agent_fix(&fleet, &reg, &repo.path, &skills, &outbox, "none", &[]);
    assert!(out.status.success(), "fix --llm none proposed nothing");
    let proposal = check_proposal(&repo.path, &outbox, &reg, &repo.v2_commit);
    assert_eq!(proposal["produced_by"], "recipe guard-logging");
    assert_eq!(proposal["skill"], "logging-in-hot-path");

    // 3. A model through the OpenAI-compatible API, on a clone (its own branches and worktrees).
    let clone = dir.path().join("checkout-model");
    let status = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(&repo.path)
        .arg(&clone)
        .status()
        .unwrap();
    assert!(status.success());
    let diff = guarded_logging_diff(&clone);
    let answer = format!(
        "The root-cause commit formats and writes a debug line for every priced item.\n\n```diff\n{diff}```\n\
         Guards the debug line behind CHECKOUT_DEBUG so the hot loop does no formatting or I/O by default."
    );
    let model = ScriptedModel::start(reg.id.clone(), answer);
    let outbox = dir.path().join("outbox-model");
    let out = agent_fix(
        &fleet,
        &reg,
        &clone,
        &skills_without_recipe(dir.path()),
        &outbox,
        "openai",
        &[
            (
                "OPENAI_BASE_URL",
                format!("http://127.0.0.1:{}/v1", model.port),
            ),
            ("OPENAI_API_KEY", "test".into()),
            ("FLEETPROF_LLM_MODEL", "scripted".into()),
        ],
    );
    assert!(out.status.success(), "fix --llm openai proposed nothing");
    let proposal = check_proposal(&clone, &outbox, &reg, &repo.v2_commit);
    assert_eq!(proposal["produced_by"], "model openai:scripted");

    let requests = model.requests.lock().unwrap();
    assert!(
        requests.len() >= 2,
        "the tool loop made {} requests",
        requests.len()
    );
    assert_eq!(requests[0]["model"], "scripted");
    assert!(
        requests[0]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "get_regression")),
        "the model is offered the tools"
    );
    let tool_result = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool result in the second request: {}", requests[1]));
    assert_eq!(tool_result["tool_call_id"], "call_1");
    let content = tool_result["content"].as_str().unwrap();
    assert!(
        content.contains(&reg.id) && content.contains(&repo.v2_commit),
        "the tool result is the stored regression with its root cause: {content}"
    );
    let fixed = git(
        &clone,
        &["show", &format!("fleetprof/fix-{}:src/lib.rs", reg.id)],
    )
    .unwrap();
    assert!(
        fixed.contains("CHECKOUT_DEBUG"),
        "the model's diff is what was committed"
    );
}
