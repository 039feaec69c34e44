//! Spawns `fleetprof-agent mcp` and speaks MCP to it over stdio with rmcp's client.

use std::path::Path;
use std::process::Command;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::json;

fn text_of(r: &rmcp::model::CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}

/// Initialize, list tools, call the skills and code-search tools, and get a tool error for bad arguments.
#[tokio::test]
async fn mcp_over_stdio() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("src")).unwrap();
    std::fs::write(
        repo.path().join("src/main.rs"),
        "fn main() {\n    hot_loop();\n}\n\nfn hot_loop() {}\n",
    )
    .unwrap();
    let git = |a: &[&str]| {
        assert!(
            Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(a)
                .status()
                .unwrap()
                .success()
        )
    };
    git(&["init", "--quiet"]);
    git(&["add", "-A"]);
    let skills = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetprof-agent")).configure(|cmd| {
            cmd.arg("mcp")
                .arg("--repo")
                .arg(repo.path())
                .arg("--skills")
                .arg(&skills)
                .env("RUST_LOG", "warn");
        }),
    )
    .unwrap();
    let client = ().serve(transport).await.expect("initialize");
    let info = client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("fleetprof-agent")
    );

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for n in [
        "top_functions",
        "function_history",
        "stacks_through",
        "diff_profiles",
        "list_regressions",
        "get_regression",
        "list_changes",
        "show_change",
        "search_code",
        "read_code",
        "list_skills",
        "get_skill",
        "sql",
    ] {
        assert!(names.contains(&n), "missing tool {n}: {names:?}");
    }
    let search = tools.iter().find(|t| t.name == "search_code").unwrap();
    assert!(search.input_schema["properties"]["pattern"].is_object());

    let r = client
        .call_tool(CallToolRequestParams::new("list_skills").with_arguments(args(json!({}))))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true));
    assert!(text_of(&r).contains("logging-in-hot-path"));

    let r = client
        .call_tool(
            CallToolRequestParams::new("search_code")
                .with_arguments(args(json!({"pattern": r"fn\s+hot_loop"}))),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true));
    assert_eq!(text_of(&r).trim(), "src/main.rs:5: fn hot_loop() {}");

    let r = client
        .call_tool(CallToolRequestParams::new("read_code").with_arguments(args(
            json!({"path": "src/main.rs", "start_line": 2, "end_line": 2}),
        )))
        .await
        .unwrap();
    assert!(
        text_of(&r).contains("2      hot_loop();"),
        "{}",
        text_of(&r)
    );

    // Bad arguments: a tool error that says what was wrong, and the server keeps serving.
    let r = client
        .call_tool(
            CallToolRequestParams::new("search_code").with_arguments(args(json!({"patern": "x"}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text_of(&r).contains("bad arguments for search_code"),
        "{}",
        text_of(&r)
    );
    let r = client
        .call_tool(
            CallToolRequestParams::new("read_code")
                .with_arguments(args(json!({"path": "../../etc/passwd"}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    let r = client
        .call_tool(
            CallToolRequestParams::new("top_functions")
                .with_arguments(args(json!({"service": "x"}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text_of(&r).contains("not available"));
    let r = client
        .call_tool(CallToolRequestParams::new("list_skills").with_arguments(args(json!({}))))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true));

    client.cancel().await.unwrap();
}
