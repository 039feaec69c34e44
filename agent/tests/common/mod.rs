//! What the agent's integration tests share: real git repositories of the eval corpus's small C
//! service, with the root-cause commit that logs a line per item in its hot loop.

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The debug line the root-cause commit adds to the service's loop.
pub(crate) const LOG_LINE: &str =
    "        fprintf(stderr, \"debug: item %d -> %ld\\n\", i, total);\n";

/// The C service of the eval corpus's `c-logging` case, before its root-cause commit.
pub(crate) fn c_logging_v1() -> String {
    let case = fleetprof_agent::eval::corpus()
        .into_iter()
        .find(|c| c.name == "c-logging")
        .expect("the corpus has c-logging");
    case.files
        .into_iter()
        .find(|(path, _)| *path == "svc.c")
        .map(|(_, text)| text)
        .expect("c-logging has svc.c")
}

/// Runs `git -C dir args…`, failing the test with git's message when it fails; returns stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
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

/// A git repository at `root` (created if missing) of the C service `v1` with its
/// `fleetprof.toml`, and a second commit, the root cause (by `author` when given, else the
/// repository's own user), that logs a line per item in the hot loop. Returns that commit.
pub(crate) fn c_repo(root: &Path, v1: &str, author: Option<(&str, &str)>) -> String {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("svc.c"), v1).unwrap();
    std::fs::write(root.join(".gitignore"), "svc\n").unwrap();
    std::fs::write(
        root.join("fleetprof.toml"),
        "[validate]\nbuild = \"gcc -O2 -Wall -Werror -o svc svc.c\"\n\
         test = \"./svc 10 2>/dev/null | grep -qx 'total 135'\"\n",
    )
    .unwrap();
    git(root, &["init", "--quiet", "-b", "main"]);
    git(root, &["config", "user.name", "Dev One"]);
    git(root, &["config", "user.email", "dev@example.com"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "--quiet", "-m", "price items"]);
    let v2 = v1.replace(
        "        total += v[i] * 3;\n",
        &format!("        total += v[i] * 3;\n{LOG_LINE}"),
    );
    assert_ne!(v2, v1, "the service's loop has the line the log goes after");
    std::fs::write(root.join("svc.c"), v2).unwrap();
    let who = author.map(|(name, email)| format!("{name} <{email}>"));
    let mut commit = vec!["commit", "--quiet", "-am", "Log every priced item"];
    if let Some(who) = &who {
        commit.extend(["--author", who]);
    }
    git(root, &commit);
    git(root, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Writes `regressions.json` in `dir`: regression `r-c` of service `svc-c`, `function` from 10%
/// to 60%, whose one candidate root cause is `commit` by `author` (`Name <email>`, with a GitHub
/// `login` when known). Returns the file.
pub(crate) fn regressions_file(
    dir: &Path,
    function: &str,
    commit: &str,
    author: &str,
    login: Option<&str>,
) -> std::path::PathBuf {
    let path = dir.join("regressions.json");
    let regression = serde_json::json!({
        "id": "r-c", "service": "svc-c", "function": function,
        "baseline_share": 0.1, "current_share": 0.6, "detected_at": 1_700_000_000,
        "version_before": null, "version_after": null,
        "candidates": [{"commit": commit, "author": author,
            "author_login": login, "summary": "Log every priced item", "score": 0.9,
            "evidence": []}]
    });
    std::fs::write(&path, regression.to_string()).unwrap();
    path
}
