//! The agent's MCP server over real data: the demo service profiled with real eBPF into a real
//! ClickHouse through the real collector, its regression stored, then `fleetprof-agent mcp` spoken
//! to over stdio with rmcp's client, through ClickHouse's read-only user. Every tool is called with
//! valid arguments and answers with the data; bad arguments are a tool error. Needs root.
//!
//! Run: `cargo build --bins && cargo test -p fleetprof-tests --test agent_mcp -- --test-threads=1 --nocapture`

use std::path::Path;

use fleetprof_tests::{
    demo_repo::{DemoRepo, Regression},
    fleet::{Fleet, FleetOptions},
    profiled::{demo_service, detect_regression, profile_demo},
    require_root, workspace_bin,
};
use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, CallToolResult},
    service::{RoleClient, RunningService},
    transport::{ConfigureCommandExt, TokioChildProcess},
};
use serde_json::{Value, json};

fn text_of(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Calls `tool` and returns its text, failing the test if the call is a tool error.
async fn call(client: &RunningService<RoleClient, ()>, tool: &'static str, args: Value) -> String {
    let r = client
        .call_tool(
            CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = text_of(&r);
    assert_ne!(r.is_error, Some(true), "{tool} failed: {text}");
    println!(
        "--- {tool} ---\n{}",
        text.chars().take(600).collect::<String>()
    );
    text
}

/// Calls `tool` expecting a tool error, and returns its text.
async fn call_err(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: Value,
) -> String {
    let r = client
        .call_tool(
            CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap()),
        )
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert_eq!(
        r.is_error,
        Some(true),
        "{tool} should have failed: {}",
        text_of(&r)
    );
    text_of(&r)
}

/// Every MCP tool answers from the real profiles, regressions, repository and skills.
#[test]
fn every_mcp_tool_answers_from_real_profiles() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let repo =
        DemoRepo::create(dir.path(), Regression::Logging).expect("creating the demo repository");
    let mut fleet = Fleet::start(&dir.path().join("fleet"), FleetOptions::default())
        .expect("starting the fleet");
    let (v1, v2) = profile_demo(&mut fleet, &repo, 45);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reg = detect_regression(&fleet, &repo, &v1, &v2);
    println!(
        "stored regression {}: {} {:.2}% -> {:.2}%",
        reg.id,
        reg.function,
        reg.before * 100.0,
        reg.after * 100.0
    );

    let skills = Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    let (user, password) = fleet.clickhouse.readonly_credentials();
    let (user, password) = (user.to_string(), password.to_string());
    let url = fleet.clickhouse.url();
    let service = demo_service();
    let service = service.as_str();
    rt.block_on(async {
        let transport = TokioChildProcess::new(
            tokio::process::Command::new(workspace_bin("fleetprof-agent")).configure(|cmd| {
                cmd.arg("mcp")
                    .args(["--clickhouse-url", &url])
                    .args(["--clickhouse-user", &user])
                    .args(["--clickhouse-password", &password])
                    .arg("--repo")
                    .arg(&repo.path)
                    .arg("--skills")
                    .arg(&skills)
                    .env("RUST_LOG", "warn");
            }),
        )
        .unwrap();
        let client = ().serve(transport).await.expect("MCP initialize");
        let info = client.peer_info().expect("server info");
        assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("fleetprof-agent"));

        let tools = client.list_all_tools().await.unwrap();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "diff_profiles", "function_history", "get_regression", "get_skill", "list_changes",
                "list_regressions", "list_skills", "propose_fix", "read_code", "search_code",
                "show_change", "sql", "stacks_through", "top_functions", "validate_patch",
            ]
        );

        // Profiles.
        let top: Value = serde_json::from_str(
            &call(&client, "top_functions", json!({"service": service, "since": "15m"})).await,
        )
        .unwrap();
        let price = top
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == "checkout::price_items")
            .unwrap_or_else(|| panic!("checkout::price_items is not a top function: {top}"));
        assert!(price["share"].as_f64().unwrap() > 0.05, "{price}");
        assert!(price["total_samples"].as_u64().unwrap() > 100, "{price}");

        let history: Value = serde_json::from_str(
            &call(
                &client,
                "function_history",
                json!({"service": service, "function": "checkout::price_items", "since": "15m", "step": "1m"}),
            )
            .await,
        )
        .unwrap();
        let points = history.as_array().unwrap();
        assert!(!points.is_empty(), "{history}");
        assert!(points.iter().any(|p| p["share"].as_f64().unwrap() > 0.05), "{history}");
        assert!(
            points.iter().all(|p| p["version"] == "v1" || p["version"] == "v2"),
            "every bucket names the version that ran: {history}"
        );

        let stacks: Value = serde_json::from_str(
            &call(
                &client,
                "stacks_through",
                json!({"service": service, "function": "checkout::price_items", "since": "15m", "limit": 5}),
            )
            .await,
        )
        .unwrap();
        let stacks = stacks.as_array().unwrap();
        assert!(!stacks.is_empty());
        for s in stacks {
            let frames: Vec<&str> = s["frames"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
            assert!(frames.contains(&"checkout::price_items"), "{frames:?}");
            assert!(frames.contains(&"checkout::handle_request"), "{frames:?}");
        }

        let diff: Value = serde_json::from_str(
            &call(
                &client,
                "diff_profiles",
                json!({
                    "service": service,
                    "baseline_since": v1.start.to_string(), "baseline_until": (v1.end + 1).to_string(),
                    "since": v2.start.to_string(), "until": (v2.end + 1).to_string(), "limit": 200,
                }),
            )
            .await,
        )
        .unwrap();
        let d = diff
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == "checkout::price_items")
            .unwrap_or_else(|| panic!("price_items is not in the diff: {diff}"));
        for k in ["baseline_share", "share"] {
            let v = d[k].as_f64().unwrap();
            assert!(v > 0.0 && v <= 1.0, "{d}");
        }
        // The two windows are told apart to the second (they may share a minute): v2 logs in
        // price_items' loop, so its share grew, as the stored regression says.
        assert!(
            d["share"].as_f64().unwrap() > d["baseline_share"].as_f64().unwrap(),
            "the diff's sides should differ as the regression does ({:.3} -> {:.3}): {d}",
            reg.before,
            reg.after
        );

        // Regressions, with the root cause from the stored candidates.
        let list = call(&client, "list_regressions", json!({"service": service})).await;
        assert!(list.contains(&reg.id) && list.contains("checkout::price_items"), "{list}");
        let got: Value =
            serde_json::from_str(&call(&client, "get_regression", json!({"id": reg.id})).await).unwrap();
        // The report groups price_items with the formatting frames it now calls; the most
        // significant member leads, and price_items is among them.
        assert!(
            got["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["function"] == "checkout::price_items")),
            "{got}"
        );
        assert_eq!(got["candidates"][0]["commit"], repo.v2_commit.as_str());
        assert!(got["candidates"][0]["author"].as_str().unwrap().contains("Dana Developer"), "{got}");
        assert_eq!(got["version_before"], "v1");
        assert_eq!(got["version_after"], "v2");
        let price_items = got["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["function"] == "checkout::price_items"))
            .unwrap();
        assert!((price_items["current_share"].as_f64().unwrap() - reg.after).abs() < 1e-9, "{got}");

        // Repository.
        let changes = call(&client, "list_changes", json!({"limit": 5})).await;
        assert!(changes.contains(&repo.v2_commit[..10]) || changes.contains(&repo.v2_commit), "{changes}");
        assert!(changes.contains("Log each priced line"), "{changes}");
        let show = call(&client, "show_change", json!({"commit": repo.v2_commit})).await;
        assert!(show.contains("+    eprintln!(\"{line}\");"), "{show}");
        let hits = call(&client, "search_code", json!({"pattern": r"fn\s+price_items"})).await;
        assert!(hits.starts_with("src/lib.rs:"), "{hits}");
        let line: usize = hits.split(':').nth(1).unwrap().parse().unwrap();
        let code = call(
            &client,
            "read_code",
            json!({"path": "src/lib.rs", "start_line": line, "end_line": line + 8}),
        )
        .await;
        assert!(code.contains("eprintln!"), "{code}");

        // Skills.
        let skills = call(&client, "list_skills", json!({"applies_to": "regression"})).await;
        assert!(skills.contains("logging-in-hot-path"), "{skills}");
        let skill = call(&client, "get_skill", json!({"name": "logging-in-hot-path"})).await;
        assert!(skill.contains("guard-logging"), "{skill}");

        // Read-only SQL through the readonly user: reads work, the answer is the stored rollup.
        let sql = call(
            &client,
            "sql",
            json!({"query": format!("SELECT function, sum(total_samples) AS t FROM function_minutes \
                   WHERE service = '{service}' AND function LIKE 'checkout::%' GROUP BY function ORDER BY t DESC LIMIT 10")}),
        )
        .await;
        assert!(sql.starts_with("function\tt\n"), "{sql}");
        assert!(sql.contains("checkout::price_items\t"), "{sql}");

        // Errors are tool errors that say what is wrong, and the server keeps serving.
        let e = call_err(&client, "top_functions", json!({"servce": service})).await;
        assert!(e.contains("bad arguments") && e.contains("servce"), "{e}");
        let e = call_err(&client, "get_regression", json!({"id": "no-such-regression"})).await;
        assert!(e.contains("no regression"), "{e}");
        let e = call_err(&client, "sql", json!({"query": "DROP TABLE samples"})).await;
        assert!(e.contains("only read queries"), "{e}");
        call(&client, "list_skills", json!({})).await;

        client.cancel().await.unwrap();
    });
}
