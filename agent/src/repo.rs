//! The target repository: changes (`git log`/`git show`), code search and code reading, and the
//! added lines of a diff. Everything goes through the `git` CLI and never writes to the user's tree.

use std::path::{Component, Path, PathBuf};

use fleetprof_code::Language;
use fleetprof_code::functions::{self, FunctionDef};
use fleetprof_code::git::GitError;
use serde::Serialize;

/// What can go wrong reading the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// `git` could not be run.
    #[error("running git {args}: {source}")]
    Spawn {
        /// The arguments.
        args: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `git` failed.
    #[error("git {args} failed: {stderr}")]
    Git {
        /// The arguments.
        args: String,
        /// Its standard error.
        stderr: String,
    },
    /// A path argument escapes the repository or is absolute.
    #[error("path {0:?} must be relative to the repository root and stay inside it")]
    BadPath(String),
    /// A path resolves (through symlinks) outside the repository or into `.git/`, or the file
    /// is too large to read whole.
    #[error("path {path:?} is refused: {why}")]
    Refused {
        /// The path asked for.
        path: String,
        /// Why.
        why: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The search pattern is not a valid regex.
    #[error("invalid regex: {0}")]
    Regex(#[from] regex::Error),
    /// A commit argument is not a plausible revision.
    #[error("{0:?} is not a commit id or ref")]
    BadRev(String),
    /// The requested line range is empty or past the end of the file.
    #[error("line range {start}..={end} is outside the file ({len} lines)")]
    BadRange {
        /// First line asked.
        start: usize,
        /// Last line asked.
        end: usize,
        /// Lines in the file.
        len: usize,
    },
}

/// A repository on disk (a work tree, or a worktree of it).
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

/// One commit in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Change {
    /// Full commit id.
    pub commit: String,
    /// Author name.
    pub author: String,
    /// Author email.
    pub email: String,
    /// Commit time, Unix seconds.
    pub time: i64,
    /// Subject line.
    pub summary: String,
}

/// One line found by [`Repo::search`].
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CodeHit {
    /// Path relative to the repository root.
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// The line's text.
    pub text: String,
}

/// The lines a diff adds to one file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileAdditions {
    /// Path in the new version, relative to the repository root.
    pub path: String,
    /// `(line number in the new file, text)` of every added line.
    pub lines: Vec<(usize, String)>,
}

/// Runs git in `dir` and returns its stdout (through the workspace's one git wrapper).
pub fn git(dir: &Path, args: &[&str]) -> Result<String, RepoError> {
    fleetprof_code::git::git(dir, args).map_err(|e| match e {
        GitError::Spawn { args, source } => RepoError::Spawn { args, source },
        GitError::Failed { args, stderr, .. } => RepoError::Git { args, stderr },
    })
}

/// How a function was located in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocatedBy {
    /// The profile's DWARF `file:line` mapped to a repository file, the span from its parser.
    DebugInfo,
    /// The root-cause commit's changed lines, the span from the parser.
    Diff,
    /// A search of the repository for a definition of that name (no line information).
    NameSearch,
}

/// A function found in the repository.
#[derive(Debug, Clone)]
pub struct Located {
    /// Repository-relative path.
    pub path: String,
    /// Its language.
    pub language: Language,
    /// The definition (name, lines, byte spans).
    pub def: FunctionDef,
    /// How it was found.
    pub by: LocatedBy,
}

fn check_rev(rev: &str) -> Result<(), RepoError> {
    let ok = !rev.is_empty()
        && !rev.starts_with('-')
        && rev.len() <= 200
        && rev
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-~^@{}".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RepoError::BadRev(rev.to_string()))
    }
}

impl Repo {
    /// A repository rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Repo {
        Repo { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs git in the repository.
    pub fn git(&self, args: &[&str]) -> Result<String, RepoError> {
        git(&self.root, args)
    }

    /// Recent commits, newest first, optionally only those touching `path` or after `since` (a git date).
    pub fn changes(
        &self,
        since: Option<&str>,
        path: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Change>, RepoError> {
        let n = format!("-n{}", limit.max(1));
        let mut args = vec![
            "log",
            "--no-color",
            &n,
            "--format=%H%x1f%an%x1f%ae%x1f%at%x1f%s",
        ];
        let since_arg;
        if let Some(s) = since {
            since_arg = format!("--since={s}");
            args.push(&since_arg);
        }
        let p;
        if let Some(path) = path {
            p = self.relative(path)?;
            args.push("--");
            args.push(p.to_str().unwrap_or_default());
        }
        let out = self.git(&args)?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\x1f').collect();
                (f.len() == 5).then(|| Change {
                    commit: f[0].into(),
                    author: f[1].into(),
                    email: f[2].into(),
                    time: f[3].parse().unwrap_or(0),
                    summary: f[4].into(),
                })
            })
            .collect())
    }

    /// One commit: metadata and patch (`git show`), truncated to `max_bytes`.
    pub fn show(&self, commit: &str, max_bytes: usize) -> Result<String, RepoError> {
        check_rev(commit)?;
        let mut out = self.git(&["show", "--no-color", "--stat", "--patch", commit, "--"])?;
        truncate(&mut out, max_bytes);
        Ok(out)
    }

    /// The commit's metadata.
    pub fn change(&self, commit: &str) -> Result<Change, RepoError> {
        check_rev(commit)?;
        let out = self.git(&[
            "show",
            "-s",
            "--format=%H%x1f%an%x1f%ae%x1f%at%x1f%s",
            commit,
            "--",
        ])?;
        let f: Vec<&str> = out.trim_end().split('\x1f').collect();
        if f.len() != 5 {
            return Err(RepoError::BadRev(commit.to_string()));
        }
        Ok(Change {
            commit: f[0].into(),
            author: f[1].into(),
            email: f[2].into(),
            time: f[3].parse().unwrap_or(0),
            summary: f[4].into(),
        })
    }

    /// The lines `commit` added, per file.
    pub fn additions(&self, commit: &str) -> Result<Vec<FileAdditions>, RepoError> {
        check_rev(commit)?;
        let diff = self.git(&[
            "show",
            "--no-color",
            "--format=",
            "--unified=0",
            commit,
            "--",
        ])?;
        Ok(parse_additions(&diff))
    }

    /// A repository-relative path, rejected when absolute or escaping the root.
    pub fn relative(&self, path: &str) -> Result<PathBuf, RepoError> {
        let p = Path::new(path);
        if p.is_absolute()
            || p.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::Prefix(_) | Component::RootDir
                )
            })
        {
            return Err(RepoError::BadPath(path.to_string()));
        }
        Ok(p.to_path_buf())
    }

    /// The largest file the file tools read, bytes.
    pub const MAX_READ_BYTES: u64 = 2 << 20;

    /// `path` resolved for reading: relative, not under `.git/`, and — symlinks followed — still
    /// inside the repository and not under its `.git/`; a regular file of at most
    /// [`Repo::MAX_READ_BYTES`].
    pub fn resolve(&self, path: &str) -> Result<PathBuf, RepoError> {
        let rel = self.relative(path)?;
        let refuse = |why: &str| RepoError::Refused {
            path: path.to_string(),
            why: why.to_string(),
        };
        if rel
            .components()
            .next()
            .is_some_and(|c| c.as_os_str() == ".git")
        {
            return Err(refuse("the repository's .git directory is not readable"));
        }
        let root = self
            .root
            .canonicalize()
            .map_err(|_| refuse("the repository root does not resolve"))?;
        let full = root
            .join(&rel)
            .canonicalize()
            .map_err(|e| RepoError::Read {
                path: rel.clone(),
                source: e,
            })?;
        if !full.starts_with(&root) {
            return Err(refuse(
                "it resolves (through a symlink) outside the repository",
            ));
        }
        if full.starts_with(root.join(".git")) {
            return Err(refuse("it resolves into the repository's .git directory"));
        }
        let meta = std::fs::metadata(&full).map_err(|e| RepoError::Read {
            path: rel.clone(),
            source: e,
        })?;
        if !meta.is_file() {
            return Err(refuse("not a regular file"));
        }
        if meta.len() > Self::MAX_READ_BYTES {
            return Err(refuse(&format!(
                "{} bytes, more than the {} the file tools read",
                meta.len(),
                Self::MAX_READ_BYTES
            )));
        }
        Ok(full)
    }

    /// The files of the repository (tracked and untracked-but-not-ignored), relative paths.
    pub fn files(&self) -> Result<Vec<String>, RepoError> {
        let out = self.git(&["ls-files", "--cached", "--others", "--exclude-standard"])?;
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Lines matching the regex `pattern`, in files whose path contains `path_filter` (if given).
    pub fn search(
        &self,
        pattern: &str,
        path_filter: Option<&str>,
        max_results: usize,
    ) -> Result<Vec<CodeHit>, RepoError> {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()?;
        let mut hits = Vec::new();
        for f in self.files()? {
            if path_filter.is_some_and(|p| !f.contains(p)) {
                continue;
            }
            // Symlinks out of the repository, `.git/` and large files are skipped.
            let Ok(full) = self.resolve(&f) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(&full) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                if re.is_match(line) {
                    let mut text = line.to_string();
                    truncate(&mut text, 300);
                    hits.push(CodeHit {
                        path: f.clone(),
                        line: i + 1,
                        text,
                    });
                    if hits.len() >= max_results {
                        return Ok(hits);
                    }
                }
            }
        }
        Ok(hits)
    }

    /// Lines `start..=end` (1-based) of `path`, each prefixed with its number.
    pub fn read(&self, path: &str, start: usize, end: Option<usize>) -> Result<String, RepoError> {
        let rel = self.relative(path)?;
        let full = self.resolve(path)?;
        let text = std::fs::read_to_string(&full).map_err(|source| RepoError::Read {
            path: rel.clone(),
            source,
        })?;
        let lines: Vec<&str> = text.lines().collect();
        let start = start.max(1);
        let end = end.unwrap_or(start + 199).min(lines.len());
        if start > end {
            return Err(RepoError::BadRange {
                start,
                end,
                len: lines.len(),
            });
        }
        let mut out = String::new();
        for (i, l) in lines[start - 1..end].iter().enumerate() {
            out.push_str(&format!("{:>5}  {l}\n", start + i));
        }
        Ok(out)
    }

    /// Where `function` (a symbol like `crate::module::name`, `Class::method`, `main.work`) is
    /// defined: `(path, line)`, by a name search over the parsed files (see [`Repo::locate`]).
    pub fn find_function(&self, function: &str) -> Result<Option<(String, usize)>, RepoError> {
        Ok(self
            .locate(function, &[])?
            .map(|l| (l.path, l.def.start as usize)))
    }

    /// The definition of `function` in the file `path` (repository-relative), if the file parses
    /// and defines it.
    pub fn definition_in(&self, path: &str, function: &str) -> Option<(Language, FunctionDef)> {
        let language = Language::of(path)?;
        let text = std::fs::read_to_string(self.root.join(self.relative(path).ok()?)).ok()?;
        let defs = functions::definitions(&text, language, "");
        functions::named(&defs, function).map(|d| (language, d.clone()))
    }

    /// Finds `function` in the repository. First from `locations` (the profile's DWARF
    /// `file:line`s): each file is mapped to a repository path (build prefixes stripped) and the
    /// innermost function around the line, as the file's parser sees it, is taken when its name
    /// fits the symbol. Without line information (or none that maps), a search for a definition of
    /// that name in the repository's parsed files, preferring paths that mention the symbol's other
    /// segments; [`Located::by`] says which.
    pub fn locate(
        &self,
        function: &str,
        locations: &[(String, u32)],
    ) -> Result<Option<Located>, RepoError> {
        let files = self.files()?;
        let bare = functions::last_segment(function).to_string();
        if bare.is_empty() {
            return Ok(None);
        }
        for (file, line) in locations {
            let Some(path) = fleetprof_code::paths::to_repo_path(file, &files) else {
                continue;
            };
            let Some(language) = Language::of(path) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(self.root.join(path)) else {
                continue;
            };
            let defs = functions::definitions(&text, language, "");
            if let Some(def) = functions::innermost_at(&defs, *line)
                && def.name == bare
            {
                return Ok(Some(Located {
                    path: path.to_string(),
                    language,
                    def: def.clone(),
                    by: LocatedBy::DebugInfo,
                }));
            }
        }
        let segments = symbol_segments(function);
        let mut best: Option<(usize, Located)> = None;
        for f in files {
            let Some(language) = Language::of(&f) else {
                continue;
            };
            let full = self.root.join(&f);
            if std::fs::metadata(&full).map_or(true, |m| !m.is_file() || m.len() > 2 << 20) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&full) else {
                continue;
            };
            // Parse only files that mention the name at all.
            if !text.contains(bare.as_str()) {
                continue;
            }
            let defs = functions::definitions(&text, language, "");
            let Some(def) = functions::named(&defs, function) else {
                continue;
            };
            let score = segments
                .iter()
                .filter(|s| f.contains(s.as_str()) || def.qualified.contains(s.as_str()))
                .count();
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((
                    score,
                    Located {
                        path: f.clone(),
                        language,
                        def: def.clone(),
                        by: LocatedBy::NameSearch,
                    },
                ));
            }
        }
        Ok(best.map(|(_, l)| l))
    }
}

/// The path segments of a symbol, without generics, closures and hashes:
/// `demo::work::checksum::h1234` → `[demo, work, checksum]`.
pub fn symbol_segments(function: &str) -> Vec<String> {
    let mut s = String::new();
    let mut depth = 0;
    for c in function.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ if depth == 0 => s.push(c),
            _ => {}
        }
    }
    let s = s.split(['(', ' ']).next().unwrap_or("");
    s.split("::")
        .filter(|seg| {
            let hash = seg.len() == 17
                && seg.starts_with('h')
                && seg[1..].chars().all(|c| c.is_ascii_hexdigit());
            !(seg.is_empty() || seg.starts_with('{') || hash)
        })
        .map(str::to_string)
        .collect()
}

/// Parses a unified diff (with `--unified=0` or any context) into the added lines per file.
pub fn parse_additions(diff: &str) -> Vec<FileAdditions> {
    fleetprof_code::git::parse_diff(diff)
        .into_iter()
        .filter_map(|f| {
            Some(FileAdditions {
                path: f.new_path?,
                lines: f.added.into_iter().map(|(n, l)| (n as usize, l)).collect(),
            })
        })
        .collect()
}

/// Cuts `s` to at most `max` bytes on a char boundary, noting the cut.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("\n… [truncated]\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Added lines are attributed to the right file and new-file line numbers.
    #[test]
    fn additions_parse() {
        let diff = "diff --git a/src/a.rs b/src/a.rs\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -3,0 +4,2 @@ fn x\n+    println!(\"a\");\n+    let y = 1;\n@@ -10 +12 @@\n-old\n+new\n";
        let f = parse_additions(diff);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].path, "src/a.rs");
        assert_eq!(
            f[0].lines,
            vec![
                (4, "    println!(\"a\");".to_string()),
                (5, "    let y = 1;".to_string()),
                (12, "new".to_string())
            ]
        );
    }

    /// Symbols lose generics and hashes; paths that escape are rejected.
    #[test]
    fn symbols_and_paths() {
        assert_eq!(
            symbol_segments("<demo::Work as core::Iter>::next::h0123456789abcdef"),
            vec!["next"]
        );
        assert_eq!(
            symbol_segments("demo::work::checksum"),
            vec!["demo", "work", "checksum"]
        );
        let r = Repo::new("/tmp");
        assert!(r.relative("../etc/passwd").is_err());
        assert!(r.relative("/etc/passwd").is_err());
        assert!(r.relative("src/main.rs").is_ok());
        assert!(check_rev("--output=/x").is_err());
        assert!(check_rev("HEAD~1").is_ok());
    }

    /// Symlinks out of the repository, `.git/` (directly or through a symlink) and files past the
    /// size cap are refused; ordinary files read.
    #[test]
    fn file_tools_stay_inside_the_repository() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s3cret\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), "[core]\n").unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "fn a() {}\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("src/leak")).unwrap();
        std::os::unix::fs::symlink(root.join(".git/config"), root.join("src/gitcfg")).unwrap();
        let big = std::fs::File::create(root.join("big.bin")).unwrap();
        big.set_len(Repo::MAX_READ_BYTES + 1).unwrap();
        let r = Repo::new(root);
        assert!(r.read("src/lib.rs", 1, None).unwrap().contains("fn a()"));
        for (path, why) in [
            ("src/leak", "outside the repository"),
            ("src/gitcfg", ".git"),
            (".git/config", ".git"),
            ("big.bin", "bytes, more than"),
        ] {
            let e = r.read(path, 1, None).unwrap_err().to_string();
            assert!(e.contains(why), "{path}: {e}");
        }
    }
}
