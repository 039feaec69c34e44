//! Property tests of how the agent takes a model's patch: the diff is cut out of the answer
//! ([`extract_diff`]), applied with `git apply --recount` (models miscount hunk lines), and refused
//! when it touches what judges it ([`protected_path`]) or leaves the repository
//! ([`Repo::relative`], [`Repo::resolve`]). Real `git`, real files; nothing panics on any input.

use std::path::Path;
use std::process::Command;

use fleetprof_agent::fix::extract_diff;
use fleetprof_agent::fix::validate::protected_path;
use fleetprof_agent::repo::Repo;
use proptest::prelude::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.autocrlf=false", "--no-pager"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => "[a-d ]{0,8}",
        1 => Just(String::new()),
        1 => Just("    let x = 1;".to_string()),
        1 => Just("}".to_string()),
    ]
}

/// An old file (at least one line) and a new one made from it by line edits.
fn edited() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    prop::collection::vec(line(), 1..25)
        .prop_flat_map(|old| {
            let n = old.len();
            let edit = prop_oneof![
                5 => Just(None),
                1 => Just(Some(vec![])),
                1 => prop::collection::vec(line(), 1..3).prop_map(Some),
            ];
            (Just(old), prop::collection::vec(edit, n..=n))
        })
        .prop_map(|(old, edits)| {
            let new = old
                .iter()
                .zip(edits)
                .flat_map(|(l, e)| e.unwrap_or_else(|| vec![l.clone()]))
                .collect();
            (old, new)
        })
}

fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Rewrites every hunk header's line counts (`-a,b +c,d` → `-a,B +c,D`), as a model that
/// miscounted would; the start lines stay right.
fn miscount(diff: &str, wrong: &[u8]) -> String {
    let mut k = 0;
    diff.lines()
        .map(|l| {
            let Some(rest) = l.strip_prefix("@@ -") else {
                return format!("{l}\n");
            };
            let mut it = rest.splitn(3, ' ');
            let (old, new) = (
                it.next().unwrap(),
                it.next().unwrap().trim_start_matches('+'),
            );
            let start = |r: &str| r.split(',').next().unwrap().to_string();
            let mut count = || {
                k += 1;
                wrong.get(k - 1).copied().unwrap_or(1)
            };
            format!(
                "@@ -{},{} +{},{} @@\n",
                start(old),
                count(),
                start(new),
                count()
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A model's answer with a diff whose hunk counts are wrong: extracted, applied the way the
    /// agent applies patches (`git apply --recount`), it yields exactly the edited file.
    #[test]
    fn miscounted_diffs_from_answers_apply_to_the_edited_file(
        (old, new) in edited(),
        wrong in prop::collection::vec(0u8..9, 0..16),
        prose in "[A-Za-z .,\n]{0,40}",
    ) {
        prop_assume!(old != new);
        let repo = tempfile::tempdir().unwrap();
        let dir = repo.path();
        git(dir, &["init", "-q"]);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), text(&old)).unwrap();
        git(dir, &["add", "src/lib.rs"]);
        std::fs::write(dir.join("src/lib.rs"), text(&new)).unwrap();
        let diff = git(dir, &["diff", "-U1", "--", "src/lib.rs"]);
        git(dir, &["checkout", "--", "src/lib.rs"]);
        let answer = format!("{prose}\n```diff\n{}```\n{prose}", miscount(&diff, &wrong));
        let extracted = extract_diff(&answer).expect("the answer has a diff block");
        std::fs::write(dir.join(".fleetprof-fix.diff"), &extracted).unwrap();
        git(dir, &["apply", "--recount", "--whitespace=nowarn", ".fleetprof-fix.diff"]);
        prop_assert_eq!(std::fs::read_to_string(dir.join("src/lib.rs")).unwrap(), text(&new));
    }

    /// A diff block is cut out of any surrounding prose exactly.
    #[test]
    fn diff_blocks_are_extracted_whole(
        before in "[A-Za-z .,`\n]{0,60}",
        body in prop::collection::vec("[+\\- ][a-z ()`;]{0,20}", 1..12),
        after in "[A-Za-z .,`\n]{0,60}",
        lang in prop_oneof![Just("diff"), Just("patch")],
    ) {
        prop_assume!(!before.contains("```"));
        let body: String = body.iter().map(|l| format!("{l}\n")).collect();
        prop_assume!(!body.contains("\n```"));
        let answer = format!("{before}```{lang}\n{body}```{after}");
        prop_assert_eq!(extract_diff(&answer), Some(body));
    }

    /// Any text: extraction answers and never panics (fences cut anywhere, multi-byte text).
    #[test]
    fn extraction_never_panics(s in "(```|diff|patch|\n|diff --git|é|x| ){0,30}") {
        if let Some(d) = extract_diff(&s) {
            prop_assert!(d.ends_with('\n'));
        }
    }

    /// Any path: the refusal rules answer and never panic.
    #[test]
    fn protected_path_never_panics(p in "\\PC{0,60}") {
        let _ = protected_path(&p);
    }

    /// What decides whether a fix is good is refused wherever it sits in the tree: validation
    /// config, build scripts, CI configuration.
    #[test]
    fn judges_are_refused_at_any_depth(
        dirs in prop::collection::vec("[a-z]{1,6}", 0..4),
        name in prop_oneof![
            Just("fleetprof.toml"), Just("build.rs"), Just("Cargo.toml"), Just("Makefile"),
            Just("CMakeLists.txt"), Just("go.mod"), Just("package.json"), Just("pom.xml"),
            Just("setup.py"), Just("rules.mk"), Just("Jenkinsfile"), Just(".gitlab-ci.yml"),
        ],
    ) {
        let p = dirs.iter().map(|d| format!("{d}/")).collect::<String>() + name;
        prop_assert!(protected_path(&p).is_some(), "{} was allowed", p);
    }

    /// Every file under a test directory, at any depth, is refused as "the tests".
    #[test]
    fn tests_are_refused_at_any_depth(
        pre in prop::collection::vec("[a-z]{1,6}", 0..3),
        test_dir in prop_oneof![Just("tests"), Just("test"), Just("testdata"), Just("__tests__"), Just("spec")],
        post in prop::collection::vec("[a-z]{1,6}", 0..3),
        file in "[a-z]{1,8}\\.(rs|c|cc|go|py|java|txt)",
    ) {
        let p = [pre, vec![test_dir.to_string()], post, vec![file]].concat().join("/");
        prop_assert_eq!(protected_path(&p), Some("the tests"), "{}", p);
    }

    /// Plain source files outside test directories are what a fix may change.
    #[test]
    fn sources_are_allowed(
        dirs in prop::collection::vec("(src|lib|pkg|internal|[a-z]{1,5})", 0..4),
        stem in "[a-z]{1,10}",
        ext in prop_oneof![Just("rs"), Just("c"), Just("cc"), Just("go"), Just("py"), Just("java")],
    ) {
        let test_dirs = ["tests", "test", "testdata", "spec"];
        prop_assume!(!dirs.iter().any(|d| test_dirs.contains(&d.as_str())));
        prop_assume!(stem != "setup" && stem != "build");
        let p = dirs.iter().map(|d| format!("{d}/")).collect::<String>() + &format!("{stem}.{ext}");
        prop_assert_eq!(protected_path(&p), None, "{}", p);
    }

    /// A path that is absolute or climbs out with `..` anywhere is refused; a plain relative path
    /// is taken as it is. Any text answers without panicking.
    #[test]
    fn relative_paths_stay_inside(
        parts in prop::collection::vec(prop_oneof![3 => "[a-z.]{1,6}", 1 => Just("..".to_string())], 1..6),
        absolute: bool,
        junk in "\\PC{0,40}",
    ) {
        let repo = Repo::new("/nonexistent-repo");
        let _ = repo.relative(&junk);
        let p = format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"));
        let climbs = parts.iter().any(|x| x == "..");
        match repo.relative(&p) {
            Ok(rel) => {
                prop_assert!(!absolute && !climbs, "{} was accepted", p);
                prop_assert_eq!(rel, Path::new(&p).to_path_buf());
            }
            Err(_) => prop_assert!(absolute || climbs, "{} was refused", p),
        }
    }
}

/// Reads through symlinks stay inside the repository and out of `.git/`: a link out of the tree
/// or into `.git` is refused, a link to a file inside is followed.
#[test]
fn symlinks_cannot_leave_the_repository() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "fn a() {}\n").unwrap();
    let link = |name: &str, to: &Path| std::os::unix::fs::symlink(to, dir.join(name)).unwrap();
    link("src/out", &outside.path().join("secret"));
    link("src/up", Path::new("../../"));
    link("src/git", &dir.join(".git/config"));
    link("src/in", Path::new("lib.rs"));
    let r = Repo::new(dir);
    for refused in [
        "src/out",
        "src/git",
        ".git/config",
        "src/up/etc/passwd",
        "../x",
    ] {
        assert!(r.resolve(refused).is_err(), "{refused} resolved");
    }
    let inside = r.resolve("src/in").unwrap();
    assert_eq!(std::fs::read_to_string(inside).unwrap(), "fn a() {}\n");
}
