//! Running `git` and reading its diffs: one wrapper and one diff parser for the workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What can go wrong running git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` could not be started.
    #[error("running git {args}: {source}")]
    Spawn {
        /// The arguments.
        args: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `git` exited with an error.
    #[error("git {args} failed in {repo}: {stderr}")]
    Failed {
        /// The repository.
        repo: PathBuf,
        /// The arguments.
        args: String,
        /// Its standard error.
        stderr: String,
    },
}

/// Runs `git -C dir ARGS` (paths unquoted, no pager, no colour) and returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.quotepath=off", "--no-pager"])
        .args(args)
        .output()
        .map_err(|source| GitError::Spawn {
            args: args.join(" "),
            source,
        })?;
    if !out.status.success() {
        return Err(GitError::Failed {
            repo: dir.to_path_buf(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A file's text at a revision, or `None` if it does not exist there (or is not text).
pub fn show_file(repo: &Path, rev: &str, path: &str) -> Option<String> {
    git(repo, &["show", &format!("{rev}:{path}")]).ok()
}

/// What a diff changed in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDiff {
    /// Path before (`None` for an added file).
    pub old_path: Option<String>,
    /// Path after (`None` for a deleted file).
    pub new_path: Option<String>,
    /// `(start, count)` of each hunk in the old file (1-based; count 0 = pure insertion).
    pub old_ranges: Vec<(u32, u32)>,
    /// `(start, count)` of each hunk in the new file (count 0 = pure deletion after `start`).
    pub new_ranges: Vec<(u32, u32)>,
    /// `(line in the new file, text)` of every added line.
    pub added: Vec<(u32, String)>,
}

impl FileDiff {
    /// The path the file has after the change, or had before it if deleted.
    pub fn path(&self) -> Option<&str> {
        self.new_path.as_deref().or(self.old_path.as_deref())
    }

    /// Lines of the new file the hunks touch: every changed line, and for a pure deletion the
    /// lines on both sides of it (a deletion inside a body touches that body).
    pub fn new_lines(&self) -> impl Iterator<Item = u32> + '_ {
        touched_lines(&self.new_ranges)
    }

    /// Lines of the old file the hunks touch (see [`FileDiff::new_lines`]).
    pub fn old_lines(&self) -> impl Iterator<Item = u32> + '_ {
        touched_lines(&self.old_ranges)
    }
}

fn touched_lines(ranges: &[(u32, u32)]) -> impl Iterator<Item = u32> + '_ {
    // Saturating: a hand-written or hostile hunk header may say `+4294967295,9`.
    ranges.iter().flat_map(|&(start, count)| {
        if count == 0 {
            start.max(1)..start.saturating_add(2)
        } else {
            start..start.saturating_add(count)
        }
    })
}

/// Parses a unified diff (`git show`/`git diff`, any context, with `--no-renames`) into per-file
/// changed ranges and added lines. Paths may be C-quoted (git's `core.quotePath`, and any name
/// with a quote, backslash or control character); a CRLF file's lines keep their `\r`.
pub fn parse_diff(diff: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    let mut new_line = 0u32;
    let mut in_hunk = false;
    // Split on `\n` only: a line of a CRLF file ends in `\r`, which is part of its text.
    for raw in diff.split_inclusive('\n') {
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        // Headers never end in `\r` (git quotes such a name), so a `\r` there is the patch file's
        // own line ending.
        let header = line.strip_suffix('\r').unwrap_or(line);
        if let Some(rest) = header.strip_prefix("diff --git ") {
            let mut f = FileDiff::default();
            if rest.starts_with('"') {
                // `"a/P" "b/Q"` (or one side quoted): both names are exact.
                if let Some((old, after)) = c_unquote(rest) {
                    let after = after.strip_prefix(' ').unwrap_or_default();
                    let new = if after.starts_with('"') {
                        c_unquote(after).map(|(n, _)| n)
                    } else {
                        Some(after.to_owned())
                    };
                    if let (Some(p), Some(q)) = (
                        old.strip_prefix("a/"),
                        new.as_deref().and_then(|n| n.strip_prefix("b/")),
                    ) && p == q
                    {
                        f.old_path = Some(p.to_owned());
                        f.new_path = Some(p.to_owned());
                    }
                }
            }
            // With --no-renames both sides name one path: `a/P b/P` is 2·|P| + 5 bytes. This is
            // the only name a diff without `---`/`+++` lines has (empty, binary, mode-only files).
            if !rest.starts_with('"') && rest.len() >= 7 && rest.len() % 2 == 1 {
                let len = (rest.len() - 5) / 2;
                let old = rest.get(..2 + len).and_then(|a| a.strip_prefix("a/"));
                let new = rest.get(2 + len..).and_then(|b| b.strip_prefix(" b/"));
                if let (Some(p), Some(q)) = (old, new)
                    && p == q
                {
                    f.old_path = Some(p.to_owned());
                    f.new_path = Some(p.to_owned());
                }
            }
            files.push(f);
            in_hunk = false;
            continue;
        }
        if !in_hunk && let Some(p) = header.strip_prefix("--- ") {
            if files.is_empty() {
                files.push(FileDiff::default());
            }
            let f = files.last_mut().expect("pushed");
            f.old_path = unquote(p).strip_prefix("a/").map(str::to_owned);
            continue;
        }
        let Some(f) = files.last_mut() else { continue };
        if !in_hunk && let Some(p) = header.strip_prefix("+++ ") {
            f.new_path = unquote(p).strip_prefix("b/").map(str::to_owned);
        } else if !in_hunk && header.starts_with("new file mode") {
            f.old_path = None;
        } else if !in_hunk && header.starts_with("deleted file mode") {
            f.new_path = None;
        } else if let Some(rest) = header.strip_prefix("@@ ") {
            // `@@ -a[,b] +c[,d] @@ context`
            in_hunk = true;
            let mut parts = rest.split_whitespace();
            let (Some(old), Some(new)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(r) = old.strip_prefix('-').and_then(range) {
                f.old_ranges.push(r);
            }
            if let Some(r) = new.strip_prefix('+').and_then(range) {
                f.new_ranges.push(r);
                new_line = r.0;
            }
        } else if in_hunk {
            if let Some(added) = line.strip_prefix('+') {
                f.added.push((new_line, added.to_string()));
                new_line = new_line.saturating_add(1);
            } else if line.starts_with(' ') || line.is_empty() {
                new_line = new_line.saturating_add(1);
            }
        }
    }
    files
}

/// A `---`/`+++` name: git ends a name holding a space with a tab, and C-quotes names with
/// special characters.
fn unquote(p: &str) -> String {
    let p = p.trim_end_matches('\t');
    if p.starts_with('"')
        && let Some((name, rest)) = c_unquote(p)
        && rest.trim_end_matches('\t').is_empty()
    {
        return name;
    }
    p.to_owned()
}

/// Reads one C-quoted string at the start of `s` (git's quoting: `\"`, `\\`, `\a\b\t\n\v\f\r`
/// and `\ooo` octal bytes, which together spell UTF-8) and returns it with the text after the
/// closing quote. `None` when `s` is not a well-formed quoted string.
pub fn c_unquote(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let name = String::from_utf8_lossy(&out).into_owned();
                return Some((name, &body[i + 1..]));
            }
            b'\\' => {
                let c = *bytes.get(i + 1)?;
                i += 2;
                out.push(match c {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'"' | b'\\' => c,
                    b'0'..=b'3' => {
                        let d1 = bytes.get(i).filter(|d| (b'0'..=b'7').contains(d))?;
                        let d2 = bytes.get(i + 1).filter(|d| (b'0'..=b'7').contains(d))?;
                        i += 2;
                        ((c - b'0') << 6) | ((d1 - b'0') << 3) | (d2 - b'0')
                    }
                    _ => return None,
                });
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

/// `a,b` → `(a, b)`; `a` → `(a, 1)`.
fn range(s: &str) -> Option<(u32, u32)> {
    match s.split_once(',') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => Some((s.parse().ok()?, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges, added lines with new-file numbers, added and deleted files.
    #[test]
    fn parses_diffs() {
        let diff = "diff --git a/src/a.rs b/src/a.rs\nindex 1..2 100644\n--- a/src/a.rs\n+++ b/src/a.rs\n\
                    @@ -3,0 +4,2 @@ fn x\n+    println!(\"a\");\n+    let y = 1;\n@@ -10 +12 @@\n-old\n+new\n\
                    diff --git a/new.c b/new.c\nnew file mode 100644\n--- /dev/null\n+++ b/new.c\n@@ -0,0 +1 @@\n+int x;\n\
                    diff --git a/gone.py b/gone.py\ndeleted file mode 100644\n--- a/gone.py\n+++ /dev/null\n@@ -1 +0,0 @@\n--- a comment\n";
        let f = parse_diff(diff);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].path(), Some("src/a.rs"));
        assert_eq!(f[0].new_ranges, vec![(4, 2), (12, 1)]);
        assert_eq!(f[0].old_ranges, vec![(3, 0), (10, 1)]);
        assert_eq!(
            f[0].added,
            vec![
                (4, "    println!(\"a\");".to_string()),
                (5, "    let y = 1;".to_string()),
                (12, "new".to_string())
            ]
        );
        assert_eq!(f[1].old_path, None);
        assert_eq!(f[1].added, vec![(1, "int x;".to_string())]);
        assert_eq!(f[2].new_path, None);
        assert_eq!(f[2].path(), Some("gone.py"));
        assert!(f[2].added.is_empty());
        assert_eq!(f[0].new_lines().collect::<Vec<_>>(), vec![4, 5, 12]);
    }

    /// C-quoted names (git's core.quotePath) are read back exactly; a CRLF line keeps its `\r`.
    #[test]
    fn quoted_names_and_crlf_lines() {
        let diff = "diff --git \"a/t\\303\\251st \\\"x\\\".c\" \"b/t\\303\\251st \\\"x\\\".c\"\n\
                    --- \"a/t\\303\\251st \\\"x\\\".c\"\n+++ \"b/t\\303\\251st \\\"x\\\".c\"\n\
                    @@ -1 +1,2 @@\n-a\r\n+b\r\n+c\n";
        let f = parse_diff(diff);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path(), Some("t\u{e9}st \"x\".c"));
        assert_eq!(f[0].old_path.as_deref(), Some("t\u{e9}st \"x\".c"));
        assert_eq!(
            f[0].added,
            vec![(1, "b\r".to_string()), (2, "c".to_string())]
        );
        // Header-only (an empty file added) with a quoted name.
        let f = parse_diff("diff --git \"a/tab\\there\" \"b/tab\\there\"\nnew file mode 100644\n");
        assert_eq!(f[0].new_path.as_deref(), Some("tab\there"));
        assert_eq!(c_unquote("\"x\\q\""), None);
        assert_eq!(c_unquote("\"open"), None);
    }
}
