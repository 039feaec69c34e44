//! Property tests of the diff parser ([`fleetprof_code::git::parse_diff`]) against real `git`:
//! a generated file and edits are diffed by git, parsed, and the parse must rebuild the edited
//! file; and no input, however malformed, panics the parser.

use std::path::Path;
use std::process::Command;

use fleetprof_code::git::{FileDiff, parse_diff};
use proptest::prelude::*;

/// One edit of one line of the old file.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Delete,
    Replace(Vec<String>),
    InsertAfter(Vec<String>),
}

/// Line texts that look like diff syntax once prefixed (`--- a/x` as a removed `-- a/x`, an added
/// `++ b/y`, hunk headers, file headers), so the parser must go by position, not by looks.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-c ]{0,6}",
        1 => "[a-c ]{0,4}\r",
        1 => Just(String::new()),
        1 => Just("-- a/src/x.rs".to_string()),
        1 => Just("++ b/src/x.rs".to_string()),
        1 => Just("@@ -1 +1 @@".to_string()),
        1 => Just("diff --git a/x b/x".to_string()),
        1 => Just("new file mode 100644".to_string()),
        1 => "[+\\- @\t\\\\é]{1,4}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => Just(Edit::Keep),
        1 => Just(Edit::Delete),
        1 => prop::collection::vec(line(), 1..4).prop_map(Edit::Replace),
        1 => prop::collection::vec(line(), 1..4).prop_map(Edit::InsertAfter),
    ]
}

/// An old file, a new file made from it by edits, and whether each ends with a newline.
#[derive(Debug, Clone)]
struct Case {
    old: Vec<String>,
    new: Vec<String>,
    old_eol: bool,
    new_eol: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(line(), 0..30),
        prop::collection::vec(line(), 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(old, head, old_eol, new_eol)| {
            let n = old.len();
            (
                Just(old),
                Just(head),
                prop::collection::vec(edit(), n..=n),
                Just(old_eol),
                Just(new_eol),
            )
        })
        .prop_map(|(old, head, edits, old_eol, new_eol)| {
            let mut new = head;
            for (l, e) in old.iter().zip(edits) {
                match e {
                    Edit::Keep => new.push(l.clone()),
                    Edit::Delete => {}
                    Edit::Replace(with) => new.extend(with),
                    Edit::InsertAfter(more) => {
                        new.push(l.clone());
                        new.extend(more);
                    }
                }
            }
            Case {
                old,
                new,
                old_eol,
                new_eol,
            }
        })
}

fn text(lines: &[String], eol: bool) -> String {
    let mut t = lines.join("\n");
    if eol && !lines.is_empty() {
        t.push('\n');
    }
    t
}

/// `text` split the way a diff counts lines.
fn lines_of(text: &str) -> Vec<String> {
    text.split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l).to_string())
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "core.quotepath=off",
            "-c",
            "core.autocrlf=false",
            "--no-pager",
        ])
        .args(args)
        .output()
        .expect("git runs")
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "git {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 diff")
}

/// A scratch repository for one test function (git init once; every case reuses it).
fn repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("temp dir");
    ok(git(d.path(), &["init", "-q"]), "init");
    d
}

/// `git diff -U<context>` of `path` from `old` to `new` (`None` = the file does not exist).
fn diff_of(repo: &Path, path: &str, old: Option<&str>, new: Option<&str>, context: u32) -> String {
    let full = repo.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    let _ = git(
        repo,
        &["rm", "-q", "--cached", "--ignore-unmatch", "--", path],
    );
    match old {
        Some(o) => {
            std::fs::write(&full, o).unwrap();
            ok(git(repo, &["add", "--", path]), "add");
        }
        None => {
            let _ = std::fs::remove_file(&full);
        }
    }
    match new {
        Some(n) => {
            std::fs::write(&full, n).unwrap();
            if old.is_none() {
                ok(git(repo, &["add", "-N", "--", path]), "add -N");
            }
        }
        None => {
            let _ = std::fs::remove_file(&full);
        }
    }
    ok(
        git(
            repo,
            &["diff", "--no-renames", &format!("-U{context}"), "--", path],
        ),
        "diff",
    )
}

/// The new file rebuilt from the old one and a zero-context parse: each hunk's old lines are
/// replaced by the added lines that fall in its new range.
fn rebuild(old: &[String], f: &FileDiff) -> Vec<String> {
    assert_eq!(
        f.old_ranges.len(),
        f.new_ranges.len(),
        "one old and one new range per hunk"
    );
    let mut out = Vec::new();
    let mut next = 0usize; // index of the next old line not yet copied
    for (&(os, oc), &(ns, nc)) in f.old_ranges.iter().zip(&f.new_ranges) {
        // `-s,0` inserts after old line s; `-s,c` replaces lines s..s+c.
        let upto = if oc == 0 {
            os as usize
        } else {
            os as usize - 1
        };
        out.extend_from_slice(&old[next..upto]);
        next = upto + oc as usize;
        out.extend(
            f.added
                .iter()
                .filter(|(n, _)| *n >= ns && *n < ns + nc)
                .map(|(_, t)| t.clone()),
        );
    }
    out.extend_from_slice(&old[next..]);
    out
}

/// Lines outside every range, in order: what the diff says did not change.
fn outside(lines: &[String], ranges: &[(u32, u32)]) -> Vec<String> {
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let n = *i as u32 + 1;
            !ranges.iter().any(|&(s, c)| n >= s && n < s + c)
        })
        .map(|(_, l)| l.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Round trip: edits -> `git diff -U0` -> parse -> rebuilt file == the edited file; the added
    /// lines carry their new-file line numbers; the path is read from the headers.
    #[test]
    fn zero_context_diffs_rebuild_the_edited_file(c in case(), dir in "[a-z]{1,3}( [a-z]{1,2})?/é?") {
        let repo = repo();
        let path = format!("{dir}f.rs");
        let (old, new) = (text(&c.old, c.old_eol), text(&c.new, c.new_eol));
        let diff = diff_of(repo.path(), &path, Some(&old), Some(&new), 0);
        let files = parse_diff(&diff);
        if old == new {
            prop_assert!(files.is_empty(), "no change, yet {files:?}");
            return Ok(());
        }
        prop_assert_eq!(files.len(), 1, "{}", diff);
        let f = &files[0];
        prop_assert_eq!(f.path(), Some(path.as_str()));
        prop_assert_eq!(f.old_path.as_deref(), Some(path.as_str()));
        let new_lines = lines_of(&new);
        prop_assert_eq!(rebuild(&lines_of(&old), f), new_lines.clone(), "{}", diff);
        for (n, t) in &f.added {
            prop_assert_eq!(&new_lines[*n as usize - 1], t);
        }
        // Every line the parse says the change touched is inside the new file (or just past it,
        // for a deletion at its end).
        prop_assert!(f.new_lines().all(|n| n as usize <= new_lines.len() + 1));
    }

    /// With context lines, added lines still carry their new-file numbers, and outside the hunks
    /// the old and new files agree line for line.
    #[test]
    fn context_diffs_locate_added_lines(c in case(), context in 1u32..5) {
        let repo = repo();
        let (old, new) = (text(&c.old, c.old_eol), text(&c.new, c.new_eol));
        let diff = diff_of(repo.path(), "src/lib.rs", Some(&old), Some(&new), context);
        let files = parse_diff(&diff);
        prop_assert_eq!(files.len(), usize::from(old != new));
        if let Some(f) = files.first() {
            let (old_lines, new_lines) = (lines_of(&old), lines_of(&new));
            for (n, t) in &f.added {
                prop_assert_eq!(&new_lines[*n as usize - 1], t, "{}", diff);
            }
            let plus = diff
                .lines()
                .skip_while(|l| !l.starts_with("@@ "))
                .filter(|l| l.starts_with('+'))
                .count();
            prop_assert_eq!(f.added.len(), plus);
            prop_assert_eq!(outside(&old_lines, &f.old_ranges), outside(&new_lines, &f.new_ranges), "{}", diff);
        }
    }

    /// Added and deleted files: one side's path is `None`, an added file's lines are all added.
    #[test]
    fn added_and_deleted_files(lines in prop::collection::vec(line(), 1..20), eol: bool, added: bool) {
        let repo = repo();
        let body = text(&lines, eol);
        let diff = if added {
            diff_of(repo.path(), "new/file.c", None, Some(&body), 3)
        } else {
            diff_of(repo.path(), "new/file.c", Some(&body), None, 3)
        };
        let files = parse_diff(&diff);
        prop_assert_eq!(files.len(), 1, "{}", diff);
        let f = &files[0];
        prop_assert_eq!(f.path(), Some("new/file.c"));
        if added {
            prop_assert_eq!(f.old_path.as_deref(), None);
            let want: Vec<(u32, String)> = lines_of(&body).into_iter().zip(1..).map(|(l, n)| (n, l)).collect();
            prop_assert_eq!(&f.added, &want);
        } else {
            prop_assert_eq!(f.new_path.as_deref(), None);
            prop_assert!(f.added.is_empty());
        }
    }

    /// Several files in one diff come back in order, each with its own changes.
    #[test]
    fn multi_file_diffs_split_per_file(a in case(), b in case()) {
        let repo = repo();
        let (ao, an) = (text(&a.old, a.old_eol), text(&a.new, a.new_eol));
        let (bo, bn) = (text(&b.old, b.old_eol), text(&b.new, b.new_eol));
        let one = diff_of(repo.path(), "a.rs", Some(&ao), Some(&an), 0);
        let two = diff_of(repo.path(), "b/b.rs", Some(&bo), Some(&bn), 0);
        let files = parse_diff(&format!("{one}{two}"));
        let want: Vec<&str> = [("a.rs", ao != an), ("b/b.rs", bo != bn)]
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(p, _)| *p)
            .collect();
        prop_assert_eq!(files.iter().map(|f| f.path().unwrap()).collect::<Vec<_>>(), want);
        for f in &files {
            let (o, n) = if f.path() == Some("a.rs") { (&ao, &an) } else { (&bo, &bn) };
            prop_assert_eq!(rebuild(&lines_of(o), f), lines_of(n));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Names git C-quotes (quotes, backslashes, tabs, and with core.quotePath non-ASCII) are read
    /// back exactly from both the `diff --git` line and the `---`/`+++` lines, and the parse still
    /// rebuilds the edited file (CRLF lines included).
    #[test]
    fn quoted_paths_are_read_exactly(
        name in "[a-c\"\\\\\t é]{1,6}",
        quote_path: bool,
        c in case(),
    ) {
        let repo = repo();
        let path = format!("d{name}/f{name}.c");
        let (old, new) = (text(&c.old, c.old_eol), text(&c.new, c.new_eol));
        let mut diff = diff_of(repo.path(), &path, Some(&old), Some(&new), 0);
        if quote_path {
            diff = ok(
                git(repo.path(), &["-c", "core.quotepath=on", "diff", "--no-renames", "-U0", "--", &path]),
                "diff quoted",
            );
        }
        let files = parse_diff(&diff);
        if old == new {
            prop_assert!(files.is_empty());
            return Ok(());
        }
        prop_assert_eq!(files.len(), 1, "{}", diff);
        prop_assert_eq!(files[0].old_path.as_deref(), Some(path.as_str()), "{}", diff);
        prop_assert_eq!(files[0].new_path.as_deref(), Some(path.as_str()), "{}", diff);
        prop_assert_eq!(rebuild(&lines_of(&old), &files[0]), lines_of(&new), "{}", diff);
        // The `diff --git` line alone names it too (what a header-only diff relies on).
        let header = diff.lines().next().unwrap_or_default();
        let only = parse_diff(&format!("{header}\nnew file mode 100644\n"));
        prop_assert_eq!(only[0].new_path.as_deref(), Some(path.as_str()), "{}", header);
    }
}

/// Lines a malformed diff is made of: headers in the wrong places, hunk headers with huge, zero
/// or missing numbers, and plain text.
fn diff_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("diff --git a/x b/x".to_string()),
        Just("diff --git \"a/q\" \"b/q\"".to_string()),
        Just("diff --git ".to_string()),
        Just("--- a/x".to_string()),
        Just("+++ b/x".to_string()),
        Just("--- /dev/null".to_string()),
        Just("new file mode 100644".to_string()),
        Just("deleted file mode 100644".to_string()),
        Just("\\ No newline at end of file".to_string()),
        "@@ -[0-9]{0,11}(,[0-9]{0,11})? \\+[0-9]{0,11}(,[0-9]{0,11})? @@.{0,5}",
        Just("@@ -4294967295,4294967295 +4294967295,4294967295 @@".to_string()),
        Just("@@ -1 +4294967295 @@".to_string()),
        Just("@@ ".to_string()),
        "[+\\- ].{0,10}",
        ".{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Whatever the text, the parser returns (never panics), and so do the touched-line walks.
    #[test]
    fn parser_never_panics(lines in prop::collection::vec(diff_line(), 0..24)) {
        for f in parse_diff(&lines.join("\n")) {
            let _ = f.path();
            // Bounded walks: huge ranges must not panic, and are not worth iterating.
            let _ = f.new_lines().take(64).count();
            let _ = f.old_lines().take(64).count();
        }
    }

    /// Arbitrary bytes (as lossy text) never panic the parser.
    #[test]
    fn parser_takes_any_text(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_diff(&String::from_utf8_lossy(&bytes));
    }
}

/// Regression (found by `added_and_deleted_files`): a diff without `---`/`+++` lines (an empty
/// file added or deleted) named its file from the `diff --git` line with a trailing space.
#[test]
fn header_only_diffs_name_the_file() {
    let f = parse_diff(
        "diff --git a/new/file.c b/new/file.c\ndeleted file mode 100644\nindex e69de29..0000000\n",
    );
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].old_path.as_deref(), Some("new/file.c"));
    assert_eq!(f[0].new_path, None);
    let f = parse_diff("diff --git a/x y b/x y\nnew file mode 100644\n");
    assert_eq!(f[0].new_path.as_deref(), Some("x y"));
    // Two different names (a rename) are not guessed at.
    assert_eq!(parse_diff("diff --git a/ab b/cd\n")[0].path(), None);
}

/// Regression (found by `parser_never_panics`): hunk headers at `u32::MAX` overflowed the line
/// counters (a panic in debug builds, wrapped line numbers in release).
#[test]
fn huge_hunk_numbers_do_not_overflow() {
    let f = parse_diff(
        "--- /dev/null\n@@ -4294967295,4294967295 +4294967295,4294967295 @@\n+a\n+b\n \n",
    );
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].added,
        vec![(u32::MAX, "a".to_string()), (u32::MAX, "b".to_string())]
    );
    assert_eq!(f[0].new_lines().take(3).count(), 0);
    assert_eq!(f[0].old_lines().take(3).count(), 0);
}
