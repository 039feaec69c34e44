//! `fleetprof-agent eval --llm none` on a subset of the corpus: real repositories, real builds
//! (gcc, go, python3), the recipes fix the seeded regressions and the memoize recipe refuses an
//! impure function.

use std::path::Path;
use std::process::Command;

/// Each chosen case ends as expected, and the table says fixed / validated / refused per case.
#[test]
fn eval_recipes_on_a_subset() {
    let keep = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetprof-agent"))
        .args(["eval", "--llm", "none"])
        .args([
            "--case",
            "c-logging",
            "--case",
            "go-regex",
            "--case",
            "python-regex",
        ])
        .args(["--case", "rust-memoize-impure"])
        .arg("--skills")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills"))
        .arg("--keep")
        .arg(keep.path())
        .env("RUST_LOG", "warn")
        .env_remove("FLEETPROF_LLM_PROVIDER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // case lang expected fixed validated refused ok seconds by...
    for (name, lang, recipe) in [
        ("c-logging", "c", "guard-logging"),
        ("go-regex", "go", "hoist-regex"),
        ("python-regex", "python", "hoist-regex"),
    ] {
        let r = row(name);
        assert_eq!(
            &r[1..7],
            [lang, "fixed", "yes", "yes", "no", "yes"],
            "{stdout}"
        );
        assert_eq!(&r[8..10], ["recipe", recipe], "{stdout}");
    }
    let r = row("rust-memoize-impure");
    assert_eq!(
        &r[1..7],
        ["rust", "refused", "no", "no", "yes", "yes"],
        "{stdout}"
    );
    assert!(stdout.contains("is not shown to be pure"), "{stdout}");
    assert!(
        stdout.contains("4 cases: 3 fixed, 3 validated, 1 refused; 4 as expected"),
        "{stdout}"
    );
    // The fixes are on their branches in the kept repositories.
    let fixed = Command::new("git")
        .arg("-C")
        .arg(keep.path().join("python-regex"))
        .args(["show", "fleetprof/fix-eval-python-regex:router.py"])
        .output()
        .unwrap();
    let fixed = String::from_utf8_lossy(&fixed.stdout);
    assert!(fixed.contains("re.compile(r\"^/api/v[0-9]+/\")"), "{fixed}");
    assert!(!fixed.contains("    pat = re.compile"), "{fixed}");
}
