//! `fleetprof-demo`, the main job, run end to end as `cargo xtask demo` runs it: the right
//! function regressed, the right commit ranked first, a validated fix, and the files it names.

use std::process::Command;

use fleetprof_tests::{require_root, workspace_bin};

/// The demo finds `checkout::price_items`, blames Dana's logging commit, and writes a fix that
/// builds, passes its tests and brings the function's share back; its SVGs and PR.md exist.
#[test]
fn demo_catches_root_causes_and_fixes_the_logging_regression() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_bin("fleetprof-demo"))
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .args(["--seconds", "40"])
        .output()
        .expect("running fleetprof-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    let summary = stdout
        .split("fleetprof demo: summary")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let line = |prefix: &str| {
        summary
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{summary}"))
            .to_string()
    };
    assert!(
        line("regression").ends_with("checkout::price_items"),
        "{summary}"
    );
    assert!(
        line("root cause").contains("by Dana Developer"),
        "{summary}"
    );
    assert!(line("fix").contains("fleetprof/fix-"), "{summary}");
    for step in ["build", "test", "reprofile"] {
        assert!(
            summary
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("ok   {step}:"))),
            "{step} did not pass:\n{summary}"
        );
    }
    for l in summary
        .lines()
        .filter(|l| l.starts_with("flame graph") || l.starts_with("fix"))
    {
        let path = l.split_whitespace().last().unwrap();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        if path.ends_with(".svg") {
            assert!(
                String::from_utf8_lossy(&bytes).contains("<svg"),
                "{path} is not an SVG"
            );
        } else {
            assert!(
                String::from_utf8_lossy(&bytes).contains("cc Dana Developer"),
                "{path}"
            );
        }
    }
}
