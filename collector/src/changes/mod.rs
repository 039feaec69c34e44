//! Changes: the commits and deploys that root-cause ranking weighs against a regression.
//!
//! [`import_git`] walks a repository's history with the `git` CLI and stores each commit in the
//! `changes` table: SHA, author, commit time, title, the files it touched, and the functions whose
//! definitions its diff touched (from `git show -U0` hunks mapped onto the function definitions of
//! the file after — and, for removed lines, before — the commit, parsed by [`fleetprof_code`]'s
//! tree-sitter grammars for Rust, C, C++, Go, Java and Python). Rust functions are recorded as
//! profiles name them, `crate::module::Type::name`, plus the bare name. [`record_deploy`] stores
//! in `deploys` when a version of a service went out and from which commit. [`change_records`]
//! reads both back as the ranking's [`ChangeRecord`]s.
//!
//! ```no_run
//! # async fn demo(store: &fleetprof_collector::store::Store) -> Result<(), fleetprof_collector::changes::ChangesError> {
//! use fleetprof_collector::changes;
//! let outcome = changes::import_git(store, "/src/checkout".as_ref(), "checkout", None).await?;
//! println!("{} commits, {} new", outcome.commits, outcome.inserted);
//! changes::record_deploy(store, "checkout", "1.5.0", 1_750_000_000, Some("3f2a9c1")).await?;
//! # Ok(()) }
//! ```

mod git;

/// Function definitions and spans: the workspace's one code-intelligence module.
pub use fleetprof_code::functions;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use clickhouse::Row;
use serde::{Deserialize, Serialize};

pub use git::{FileDiff, GitCommit, parse_diff, read_commits, touched};

use crate::detect::{ChangeRecord, Deploy};
use crate::store::{Store, StoreError};

/// Commits [`import_git`] reads at most per run (newest first).
pub const MAX_COMMITS: usize = 5000;

/// Errors reading repositories or storing changes.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    /// The `git` binary could not be run.
    #[error("running git (is it installed?): {source}")]
    GitNotRunnable {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("git {command} in {}: {stderr}", repo.display())]
    Git {
        /// The repository.
        repo: PathBuf,
        /// The command's arguments.
        command: String,
        /// What git said.
        stderr: String,
    },
    /// ClickHouse failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn ch(what: &'static str) -> impl FnOnce(clickhouse::error::Error) -> ChangesError {
    move |e| ChangesError::Store(StoreError::ch(what)(e))
}

/// A row of the `changes` table.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct StoredChange {
    /// Commit SHA.
    pub sha: String,
    /// The service whose repository it is in.
    pub service: String,
    /// `Name <email>`.
    pub author: String,
    /// Commit time, Unix seconds.
    pub time: u32,
    /// First line of the message.
    pub title: String,
    /// Paths touched.
    pub files: Vec<String>,
    /// Functions touched (qualified and bare names).
    pub functions: Vec<String>,
}

/// A row of the `deploys` table.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct StoredDeploy {
    /// The service.
    pub service: String,
    /// The version that went out, as the profiler's metadata names it.
    pub version: String,
    /// When, Unix seconds.
    pub at: u32,
    /// The commit deployed, or empty.
    pub commit: String,
}

/// What [`import_git`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// Commits read from the repository.
    pub commits: usize,
    /// Of which new (not yet in `changes` for this service) and stored.
    pub inserted: usize,
}

fn unix_u32(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// Reads the commits of the repository at `repo` (since `since_unix_s`, at most
/// [`MAX_COMMITS`]) and stores the ones not yet stored for `service`. Idempotent: re-importing
/// skips known SHAs (and `changes` is a ReplacingMergeTree, so a race stores one row).
pub async fn import_git(
    store: &Store,
    repo: &Path,
    service: &str,
    since_unix_s: Option<i64>,
) -> Result<ImportOutcome, ChangesError> {
    let repo = repo.to_owned();
    // git runs synchronously (many short processes): keep it off the async workers.
    let commits =
        tokio::task::spawn_blocking(move || read_commits(&repo, since_unix_s, MAX_COMMITS))
            .await
            .map_err(|e| ChangesError::GitNotRunnable {
                source: std::io::Error::other(e),
            })??;
    let known: HashSet<String> = store
        .client()
        .query("SELECT DISTINCT sha FROM changes WHERE service = ?")
        .bind(service)
        .fetch_all::<String>()
        .await
        .map_err(ch("reading changes"))?
        .into_iter()
        .collect();
    let new: Vec<StoredChange> = commits
        .iter()
        .filter(|c| !known.contains(&c.sha))
        .map(|c| StoredChange {
            sha: c.sha.clone(),
            service: service.to_owned(),
            author: c.author.clone(),
            time: unix_u32(c.time_unix_s),
            title: c.title.clone(),
            files: c.files.clone(),
            functions: c.functions.clone(),
        })
        .collect();
    insert(store, "changes", &new).await?;
    Ok(ImportOutcome {
        commits: commits.len(),
        inserted: new.len(),
    })
}

async fn insert<T>(store: &Store, table: &'static str, rows: &[T]) -> Result<(), ChangesError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = store
        .client()
        .insert::<T>(table)
        .await
        .map_err(ch("inserting changes"))?;
    for row in rows {
        insert.write(row).await.map_err(ch("inserting changes"))?;
    }
    insert.end().await.map_err(ch("inserting changes"))
}

/// Records that `version` of `service` went out at `at_unix_s`, built from `commit` if known.
pub async fn record_deploy(
    store: &Store,
    service: &str,
    version: &str,
    at_unix_s: i64,
    commit: Option<&str>,
) -> Result<(), ChangesError> {
    let row = StoredDeploy {
        service: service.to_owned(),
        version: version.to_owned(),
        at: unix_u32(at_unix_s),
        commit: commit.unwrap_or_default().to_owned(),
    };
    insert(store, "deploys", &[row]).await
}

/// The stored changes of `service`, newest first, at most `limit`.
pub async fn list(
    store: &Store,
    service: &str,
    limit: u64,
) -> Result<Vec<StoredChange>, ChangesError> {
    store
        .client()
        .query(
            "SELECT sha, service, author, toUInt32(time) AS time, title, files, functions \
             FROM changes FINAL WHERE service = ? ORDER BY time DESC, sha LIMIT ?",
        )
        .bind(service)
        .bind(limit)
        .fetch_all::<StoredChange>()
        .await
        .map_err(ch("reading changes"))
}

/// The stored deploys of `service`, newest first, at most `limit`.
pub async fn deploys(
    store: &Store,
    service: &str,
    limit: u64,
) -> Result<Vec<StoredDeploy>, ChangesError> {
    store
        .client()
        .query(
            "SELECT service, version, toUInt32(at) AS at, commit FROM deploys FINAL \
             WHERE service = ? ORDER BY at DESC, version LIMIT ?",
        )
        .bind(service)
        .bind(limit)
        .fetch_all::<StoredDeploy>()
        .await
        .map_err(ch("reading deploys"))
}

/// The changes that may explain a regression of `service` detected after `since_unix_s`: the
/// service's commits since then, and every commit deployed to it since then (however old), each
/// with all its recorded deploys (any service), for [`crate::detect::rank_changes`].
pub async fn change_records(
    store: &Store,
    service: &str,
    since_unix_s: i64,
) -> Result<Vec<ChangeRecord>, ChangesError> {
    let since = unix_u32(since_unix_s);
    let changes = store
        .client()
        .query(
            "SELECT sha, service, author, toUInt32(time) AS time, title, files, functions \
             FROM changes FINAL \
             WHERE (service = ? AND time >= toDateTime(?)) \
                OR sha IN (SELECT commit FROM deploys WHERE service = ? AND at >= toDateTime(?)) \
             ORDER BY time DESC LIMIT 2000",
        )
        .bind(service)
        .bind(since)
        .bind(service)
        .bind(since)
        .fetch_all::<StoredChange>()
        .await
        .map_err(ch("reading changes"))?;
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let shas: Vec<&str> = changes.iter().map(|c| c.sha.as_str()).collect();
    let deploys = store
        .client()
        .query(
            "SELECT service, version, toUInt32(at) AS at, commit FROM deploys FINAL \
             WHERE has(?, commit) ORDER BY at",
        )
        .bind(shas)
        .fetch_all::<StoredDeploy>()
        .await
        .map_err(ch("reading deploys"))?;
    let mut by_commit: HashMap<String, Vec<Deploy>> = HashMap::new();
    for d in deploys {
        by_commit.entry(d.commit).or_default().push(Deploy {
            service: Some(d.service),
            time_unix_s: i64::from(d.at),
            version: (!d.version.is_empty()).then_some(d.version),
        });
    }
    // One record per SHA: a commit stored under two services keeps the first (this service's,
    // as the query returns them in time order and the SHA's time is the same).
    let mut seen = HashSet::new();
    Ok(changes
        .into_iter()
        .filter(|c| seen.insert(c.sha.clone()))
        .map(|c| ChangeRecord {
            deploys: by_commit.remove(&c.sha).unwrap_or_default(),
            id: c.sha,
            author: c.author,
            title: c.title,
            time_unix_s: i64::from(c.time),
            service: Some(c.service),
            touched_files: c.files,
            touched_functions: c.functions,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=Test Author",
                "-c",
                "user.email=t@example.com",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A two-commit Rust crate: the second commit edits one function's body and deletes another;
    /// both are touched, with crate paths, and the untouched one is not.
    #[test]
    fn git_commits_name_the_functions_they_touch() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(d.join("src/pricing")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            "[package]\nname = \"check-out\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let v1 = "pub fn keep() -> u32 {\n    1\n}\n\npub fn slow(x: u32) -> u32 {\n    x + 1\n}\n\n\
                  pub fn gone() {}\n";
        std::fs::write(d.join("src/lib.rs"), "pub mod pricing;\n").unwrap();
        std::fs::write(d.join("src/pricing/mod.rs"), v1).unwrap();
        std::fs::write(d.join("README.md"), "hi\n").unwrap();
        git(d, &["add", "-A"]);
        git(d, &["commit", "-q", "-m", "first"]);
        let v2 = "pub fn keep() -> u32 {\n    1\n}\n\npub fn slow(x: u32) -> u32 {\n    (0..x).sum()\n}\n";
        std::fs::write(d.join("src/pricing/mod.rs"), v2).unwrap();
        git(d, &["commit", "-q", "-am", "Make slow slower"]);

        let commits = read_commits(d, None, 10).unwrap();
        assert_eq!(commits.len(), 2);
        let c = &commits[0];
        assert_eq!(c.title, "Make slow slower");
        assert_eq!(c.author, "Test Author <t@example.com>");
        assert_eq!(c.files, vec!["src/pricing/mod.rs".to_owned()]);
        assert_eq!(
            c.functions,
            vec![
                "check_out::pricing::gone".to_owned(),
                "check_out::pricing::slow".to_owned(),
                "gone".to_owned(),
                "slow".to_owned(),
            ]
        );
        // The root commit adds everything.
        let first = &commits[1];
        assert!(
            first
                .functions
                .contains(&"check_out::pricing::keep".to_owned())
        );
        assert!(first.files.contains(&"README.md".to_owned()));
        // Nothing since the future.
        assert!(
            read_commits(d, Some(i64::from(u32::MAX)), 10)
                .unwrap()
                .is_empty()
        );
    }
}
