//! Reading commits with the `git` CLI: `git log` for the commits, `git show -U0` for the lines
//! each changed, and the files at the commit (and its parent) to map lines to functions.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use fleetprof_code::Language;
use fleetprof_code::functions;
pub use fleetprof_code::git::{FileDiff, parse_diff};
use fleetprof_code::git::{GitError, show_file};

use super::ChangesError;

fn git(repo: &Path, args: &[&str]) -> Result<String, ChangesError> {
    fleetprof_code::git::git(repo, args).map_err(|e| match e {
        GitError::Spawn { source, .. } => ChangesError::GitNotRunnable { source },
        GitError::Failed { repo, args, stderr } => ChangesError::Git {
            repo,
            command: args,
            stderr,
        },
    })
}

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

/// The symbol prefix of a file as profiles show it: `crate::module::` for Rust, `pkg.module.`
/// for Python, the package for Go (`main.` is what Go binaries' symbols carry for package main).
fn prefix(crates: &mut CrateNames<'_>, rev: &str, path: &str, lang: Language) -> String {
    match lang {
        Language::Rust => crates.prefix(rev, path).unwrap_or_default(),
        Language::Python => {
            let module = path.strip_suffix(".py").unwrap_or(path);
            let module = module.strip_suffix("/__init__").unwrap_or(module);
            format!("{}.", module.replace('/', "."))
        }
        Language::C | Language::Cpp | Language::Go | Language::Java => String::new(),
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
            fns.extend(functions::touched(&defs, f.new_lines()));
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
            let removed = FileDiff {
                old_ranges: f.old_ranges.iter().copied().filter(|r| r.1 > 0).collect(),
                ..FileDiff::default()
            };
            fns.extend(functions::touched(&defs, removed.old_lines()));
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
        let f = FileDiff {
            new_ranges: vec![(5, 0), (9, 2)],
            ..FileDiff::default()
        };
        assert_eq!(f.new_lines().collect::<Vec<_>>(), vec![5, 6, 9, 10]);
    }
}
