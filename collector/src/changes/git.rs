//! Reading commits with the `git` CLI: `git log` for the commits, `git show -U0` for the lines
//! each changed, and the files at the commit (and its parent) to map lines to functions.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use super::ChangesError;
use super::functions::{self, Language};

/// One commit as read from a repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitCommit {
    /// Full SHA.
    pub sha: String,
    /// `Name <email>` of the author.
    pub author: String,
    /// Committer time, seconds since the Unix epoch.
    pub time_unix_s: i64,
    /// First line of the message.
    pub title: String,
    /// Paths the commit touched (added, modified or deleted), repository-relative.
    pub files: Vec<String>,
    /// Functions whose definitions the diff touched, qualified (`checkout::discounted_price`)
    /// and bare (`discounted_price`); sorted.
    pub functions: Vec<String>,
}

/// Changed line ranges of one file in a `-U0` diff.
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
}

impl FileDiff {
    /// The path the file has after the commit, or had before it if deleted.
    pub fn path(&self) -> Option<&str> {
        self.new_path.as_deref().or(self.old_path.as_deref())
    }
}

/// Lines a set of hunk ranges touches: every changed line, and for a pure insertion or deletion
/// the lines on both sides of it (a deletion inside a body touches that body).
fn lines(ranges: &[(u32, u32)]) -> impl Iterator<Item = u32> + '_ {
    ranges.iter().flat_map(|&(start, count)| {
        if count == 0 {
            start.max(1)..start + 2
        } else {
            start..start + count
        }
    })
}

fn git(repo: &Path, args: &[&str]) -> Result<String, ChangesError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "core.quotepath=off"])
        .args(args)
        .output()
        .map_err(|source| ChangesError::GitNotRunnable { source })?;
    if !out.status.success() {
        return Err(ChangesError::Git {
            repo: repo.to_owned(),
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A file's text at a commit, or `None` if it does not exist there (or is not text).
fn show_file(repo: &Path, rev: &str, path: &str) -> Option<String> {
    git(repo, &["show", &format!("{rev}:{path}")]).ok()
}

/// Parses `git show --format= -U0` output into per-file changed ranges.
pub fn parse_diff(diff: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            // With --no-renames both sides name one path: `a/P b/P`, so P is half of the rest.
            let mut f = FileDiff::default();
            if !rest.starts_with('"') && rest.len() >= 7 && rest.len() % 2 == 1 {
                let half = (rest.len() - 3) / 2;
                if let Some(p) = rest.get(2..2 + half) {
                    f.old_path = Some(p.to_owned());
                    f.new_path = Some(p.to_owned());
                }
            }
            files.push(f);
            continue;
        }
        let Some(f) = files.last_mut() else { continue };
        if let Some(p) = line.strip_prefix("--- ") {
            f.old_path = unquote(p).strip_prefix("a/").map(str::to_owned);
        } else if let Some(p) = line.strip_prefix("+++ ") {
            f.new_path = unquote(p).strip_prefix("b/").map(str::to_owned);
        } else if line.starts_with("new file mode") {
            f.old_path = None;
        } else if line.starts_with("deleted file mode") {
            f.new_path = None;
        } else if let Some(rest) = line.strip_prefix("@@ ") {
            // `@@ -a[,b] +c[,d] @@ context`
            let mut parts = rest.split_whitespace();
            let (Some(old), Some(new)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(r) = old.strip_prefix('-').and_then(range) {
                f.old_ranges.push(r);
            }
            if let Some(r) = new.strip_prefix('+').and_then(range) {
                f.new_ranges.push(r);
            }
        }
    }
    files
}

fn unquote(p: &str) -> &str {
    p.trim_end_matches('\t').trim_matches('"')
}

/// `a,b` → `(a, b)`; `a` → `(a, 1)`.
fn range(s: &str) -> Option<(u32, u32)> {
    match s.split_once(',') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => Some((s.parse().ok()?, 1)),
    }
}

/// Finds the crate a Rust file belongs to: the nearest `Cargo.toml` with a `[package]` above it.
struct CrateNames<'a> {
    repo: &'a Path,
    manifests: BTreeSet<String>,
    names: HashMap<String, Option<String>>,
}

impl<'a> CrateNames<'a> {
    fn new(repo: &'a Path, rev: &str) -> Self {
        let manifests = git(repo, &["ls-tree", "-r", "--name-only", rev])
            .map(|out| {
                out.lines()
                    .filter(|l| *l == "Cargo.toml" || l.ends_with("/Cargo.toml"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            repo,
            manifests,
            names: HashMap::new(),
        }
    }

    /// The symbol prefix (`crate::module::`) of the Rust file `path` at `rev`, if determinable.
    fn prefix(&mut self, rev: &str, path: &str) -> Option<String> {
        let mut dir = path;
        loop {
            dir = match dir.rfind('/') {
                Some(i) => &dir[..i],
                None => "",
            };
            let manifest = if dir.is_empty() {
                "Cargo.toml".to_owned()
            } else {
                format!("{dir}/Cargo.toml")
            };
            if self.manifests.contains(&manifest) {
                let name = self
                    .names
                    .entry(manifest.clone())
                    .or_insert_with(|| {
                        show_file(self.repo, rev, &manifest)
                            .and_then(|t| functions::cargo_package_name(&t))
                    })
                    .clone();
                if let Some(name) = name {
                    let relative = if dir.is_empty() {
                        path
                    } else {
                        &path[dir.len() + 1..]
                    };
                    let mut parts = vec![name];
                    parts.extend(functions::rust_module_path(relative)?);
                    return Some(format!("{}::", parts.join("::")));
                }
            }
            if dir.is_empty() {
                return None;
            }
        }
    }
}

/// The symbol prefix of a file: `crate::module::` for Rust, `pkg.module.` for Python.
fn prefix(crates: &mut CrateNames<'_>, rev: &str, path: &str, lang: Language) -> String {
    match lang {
        Language::Rust => crates.prefix(rev, path).unwrap_or_default(),
        Language::Python => {
            let module = path.strip_suffix(".py").unwrap_or(path);
            let module = module.strip_suffix("/__init__").unwrap_or(module);
            format!("{}.", module.replace('/', "."))
        }
        Language::C => String::new(),
    }
}

/// Reads the non-merge commits of `repo` (newest first), at most `max_count`, committed at or
/// after `since_unix_s` when given.
pub fn read_commits(
    repo: &Path,
    since_unix_s: Option<i64>,
    max_count: usize,
) -> Result<Vec<GitCommit>, ChangesError> {
    let mut args = vec![
        "log".to_owned(),
        "--no-merges".to_owned(),
        "--no-color".to_owned(),
        format!("--max-count={max_count}"),
        // Unit separators cannot occur in names or titles.
        "--format=%H%x1f%an%x1f%ae%x1f%ct%x1f%s".to_owned(),
    ];
    if let Some(s) = since_unix_s {
        args.push(format!("--since=@{s}"));
    }
    args.push("HEAD".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = git(repo, &args)?;
    let mut commits = Vec::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split('\x1f').collect();
        let [sha, name, email, time, title] = f[..] else {
            continue;
        };
        let time_unix_s: i64 = time.parse().unwrap_or(0);
        if since_unix_s.is_some_and(|s| time_unix_s < s) {
            continue;
        }
        let (files, functions) = touched(repo, sha)?;
        commits.push(GitCommit {
            sha: sha.to_owned(),
            author: format!("{name} <{email}>"),
            time_unix_s,
            title: title.to_owned(),
            files,
            functions,
        });
    }
    Ok(commits)
}

/// The files and functions commit `sha` touched.
pub fn touched(repo: &Path, sha: &str) -> Result<(Vec<String>, Vec<String>), ChangesError> {
    let diff = git(
        repo,
        &[
            "show",
            "--format=",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            sha,
        ],
    )?;
    let parent = format!("{sha}^");
    let has_parent = git(repo, &["rev-parse", "--verify", "--quiet", &parent]).is_ok();
    let mut crates = CrateNames::new(repo, sha);
    let mut parent_crates = CrateNames::new(repo, if has_parent { &parent } else { sha });
    let mut files = BTreeSet::new();
    let mut fns = BTreeSet::new();
    for f in parse_diff(&diff) {
        let Some(path) = f.path() else { continue };
        files.insert(path.to_owned());
        let Some(lang) = Language::of(path) else {
            continue;
        };
        if let Some(new) = &f.new_path
            && let Some(text) = show_file(repo, sha, new)
        {
            let defs = functions::definitions(&text, lang, &prefix(&mut crates, sha, new, lang));
            fns.extend(functions::touched(&defs, lines(&f.new_ranges)));
        }
        // Removed lines name functions as they were, which catches deleted functions too.
        if has_parent
            && let Some(old) = &f.old_path
            && f.old_ranges.iter().any(|&(_, n)| n > 0)
            && let Some(text) = show_file(repo, &parent, old)
        {
            let defs = functions::definitions(
                &text,
                lang,
                &prefix(&mut parent_crates, &parent, old, lang),
            );
            let removed: Vec<(u32, u32)> =
                f.old_ranges.iter().copied().filter(|r| r.1 > 0).collect();
            fns.extend(functions::touched(&defs, lines(&removed)));
        }
    }
    Ok((files.into_iter().collect(), fns.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hunk headers of added, modified and deleted files.
    #[test]
    fn parses_u0_diffs() {
        let diff = "diff --git a/src/lib.rs b/src/lib.rs\nindex 1..2 100644\n--- a/src/lib.rs\n\
                    +++ b/src/lib.rs\n@@ -39,2 +39,2 @@ pub fn discounted_price(item: &Item) -> u64 {\n\
                    -a\n-b\n+c\n+d\n@@ -50 +50,0 @@\n-x\n\
                    diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n\
                    @@ -0,0 +1,3 @@\n+1\n+2\n+3\n\
                    diff --git a/gone.c b/gone.c\ndeleted file mode 100644\n--- a/gone.c\n+++ /dev/null\n\
                    @@ -1,2 +0,0 @@\n-x\n-y\n";
        let files = parse_diff(diff);
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].new_path.as_deref(), Some("src/lib.rs"));
        assert_eq!(files[0].old_ranges, vec![(39, 2), (50, 1)]);
        assert_eq!(files[0].new_ranges, vec![(39, 2), (50, 0)]);
        assert_eq!(files[1].old_path, None);
        assert_eq!(files[1].new_ranges, vec![(1, 3)]);
        assert_eq!(files[2].new_path, None);
        assert_eq!(files[2].path(), Some("gone.c"));
        assert_eq!(
            lines(&[(5, 0), (9, 2)]).collect::<Vec<_>>(),
            vec![5, 6, 9, 10]
        );
    }
}
