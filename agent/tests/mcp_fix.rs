//! The fix tools over MCP: an MCP client (this test, in place of Claude Code) drives the loop with
//! `validate_patch` and `propose_fix` against `fleetprof-agent mcp` over stdio, on a real git
//! repository of a small C service built with gcc.

use std::path::Path;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

mod common;

use common::{LOG_LINE, git};

/// A C service whose second commit (the root cause) logs a line per item in `price_items`'s loop.
fn c_repo(root: &Path) -> String {
    common::c_repo(root, &common::c_logging_v1(), None)
}

/// `git diff` of `edit` applied to the work tree, which is then restored.
fn diff_of(root: &Path, file: &str, edit: impl Fn(&str) -> String) -> String {
    let path = root.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
    let d = git(root, &["diff"]);
    git(root, &["checkout", "--", file]);
    d
}

fn text_of(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: Value,
) -> (bool, String) {
    let r = client
        .call_tool(
            CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap()),
        )
        .await
        .unwrap();
    (r.is_error == Some(true), text_of(&r))
}

/// validate_patch refuses a patch to fleetprof.toml, reports a failing build, passes a good fix
/// and keeps nothing; propose_fix validates the client's fix and commits it with PR.md.
#[tokio::test]
async fn mcp_client_validates_and_proposes_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let commit = c_repo(&repo);
    let regressions = common::regressions_file(
        dir.path(),
        "price_items",
        &commit,
        "Dev One <dev@example.com>",
        Some("devone"),
    );
    let outbox = dir.path().join("outbox");
    let skills = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetprof-agent")).configure(|cmd| {
            cmd.arg("mcp")
                .arg("--repo")
                .arg(&repo)
                .arg("--regressions-file")
                .arg(&regressions)
                .arg("--outbox")
                .arg(&outbox)
                .arg("--llm")
                .arg("none")
                .arg("--skills")
                .arg(&skills)
                .env("RUST_LOG", "warn");
        }),
    )
    .unwrap();
    let client = ().serve(transport).await.expect("initialize");
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"validate_patch") && names.contains(&"propose_fix"),
        "{names:?}"
    );

    let guarded = diff_of(&repo, "svc.c", |t| {
        t.replace(
            LOG_LINE,
            &format!("        if (getenv(\"SVC_DEBUG\"))\n    {LOG_LINE}"),
        )
    });
    let broken = diff_of(&repo, "svc.c", |t| {
        t.replace("total += v[i] * 3;", "total += v[i] * 3")
    });
    let config = diff_of(&repo, "fleetprof.toml", |t| {
        t.replace("grep -qx", "true ||")
    });

    let (err, out) = call(&client, "validate_patch", json!({"diff": config})).await;
    assert!(!err, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"], false);
    assert!(
        v["refused"].as_str().unwrap().contains("fleetprof.toml"),
        "{v}"
    );
    assert!(v["checks"].as_array().unwrap().is_empty());

    let (_, out) = call(&client, "validate_patch", json!({"diff": broken})).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"], false, "{v}");
    assert_eq!(v["checks"][0]["step"], "build");
    assert_eq!(v["checks"][0]["passed"], false);
    assert!(
        v["checks"][0]["detail"].as_str().unwrap().contains("error"),
        "{v}"
    );

    let (_, out) = call(&client, "validate_patch", json!({"diff": guarded})).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["changed"], json!(["svc.c"]));
    let steps: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["build", "test"]);
    // validate_patch keeps nothing.
    assert!(
        git(&repo, &["branch", "--list", "fleetprof/*"])
            .trim()
            .is_empty()
    );
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1);

    let (err, out) = call(&client, "propose_fix", json!({"regression": "r-c"})).await;
    assert!(
        err && out.contains("bad arguments for propose_fix"),
        "{out}"
    );

    let (err, out) = call(
        &client,
        "propose_fix",
        json!({"regression_id": "r-c", "diff": guarded,
               "explanation": "Logs the per-item line only when SVC_DEBUG is set."}),
    )
    .await;
    assert!(!err, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let p = &v["Proposed"];
    assert_eq!(p["branch"], "fleetprof/fix-r-c", "{v}");
    assert_eq!(p["produced_by"], "MCP client via MCP");
    let fixed = git(&repo, &["show", "fleetprof/fix-r-c:svc.c"]);
    assert!(fixed.contains("if (getenv(\"SVC_DEBUG\"))"), "{fixed}");
    let pr = std::fs::read_to_string(Path::new(p["outbox_dir"].as_str().unwrap()).join("PR.md"))
        .unwrap();
    assert!(
        pr.contains("Logs the per-item line only when SVC_DEBUG is set."),
        "{pr}"
    );
    assert!(pr.contains("cc @devone"), "{pr}");
    client.cancel().await.unwrap();
}
