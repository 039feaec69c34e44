//! The agent's proposals, read from its outbox directories: `<outbox>/<dir>/proposal.json`
//! (what `fleetprof-agent fix` and `opportunities` write), with `PR.md` and `fix.patch` beside it.
//! Read on every request, so a proposal written while the UI runs shows up at once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One validation step of a proposal (`apply`, `build`, `test`, `reprofile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixCheck {
    /// The step.
    pub step: String,
    /// The command run, or a description.
    #[serde(default)]
    pub command: String,
    /// Whether it passed.
    pub passed: bool,
    /// Seconds it took.
    #[serde(default)]
    pub seconds: f64,
    /// Its output's tail or the figures it measured.
    #[serde(default)]
    pub detail: String,
}

impl FixCheck {
    /// The line of the detail worth showing: a test summary with tests in it, else the last line
    /// (the re-profiling check's figures are one line).
    pub fn summary(&self) -> &str {
        let mut lines = self.detail.lines().map(str::trim).filter(|l| !l.is_empty());
        lines
            .clone()
            .find(|l| l.starts_with("test result:") && !l.contains(" 0 passed"))
            .or_else(|| lines.next_back())
            .unwrap_or_default()
    }
}

/// A validated fix-forward (or opportunity) proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    /// The regression id (or opportunity id, `<service>-<function>`) it answers.
    pub id: String,
    /// The branch holding its commit.
    pub branch: String,
    /// The commit.
    #[serde(default)]
    pub commit: String,
    /// The skill followed.
    #[serde(default)]
    pub skill: String,
    /// `recipe NAME` or `model PROVIDER:MODEL`.
    #[serde(default)]
    pub produced_by: String,
    /// The validation checks.
    #[serde(default)]
    pub checks: Vec<FixCheck>,
    /// The pull request's URL, when it was pushed.
    #[serde(default)]
    pub pr_url: Option<String>,
    /// The outbox directory's name: the fix's page is `/fixes/<slug>`.
    #[serde(default)]
    pub slug: String,
    /// Where it lies.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Fix {
    /// `PR.md`, if readable.
    pub fn pr_text(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("PR.md")).ok()
    }

    /// `fix.patch`, if readable.
    pub fn patch(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("fix.patch")).ok()
    }

    /// Whether every check passed.
    pub fn validated(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

fn read_one(dir: &Path) -> Option<Fix> {
    let text = std::fs::read_to_string(dir.join("proposal.json")).ok()?;
    match serde_json::from_str::<Fix>(&text) {
        Ok(mut fix) => {
            fix.slug = dir.file_name()?.to_string_lossy().into_owned();
            fix.dir = dir.to_path_buf();
            Some(fix)
        }
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "unreadable proposal.json; skipped");
            None
        }
    }
}

/// Every proposal in `outboxes`, by directory name.
pub(crate) fn all(outboxes: &[PathBuf]) -> Vec<Fix> {
    let mut fixes = Vec::new();
    for outbox in outboxes {
        let Ok(entries) = std::fs::read_dir(outbox) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Some(fix) = read_one(&entry.path()) {
                fixes.push(fix);
            }
        }
    }
    fixes.sort_by(|a, b| a.slug.cmp(&b.slug));
    fixes
}

/// The proposal answering `id`, if any (the validated one first).
pub(crate) fn for_id(outboxes: &[PathBuf], id: &str) -> Option<Fix> {
    let mut found: Vec<Fix> = all(outboxes).into_iter().filter(|f| f.id == id).collect();
    found.sort_by_key(|f| !f.validated());
    found.into_iter().next()
}

/// The proposal in directory `slug` of one of `outboxes`.
pub(crate) fn by_slug(outboxes: &[PathBuf], slug: &str) -> Option<Fix> {
    if slug.is_empty() || slug.contains('/') || slug.contains("..") {
        return None;
    }
    outboxes.iter().find_map(|o| read_one(&o.join(slug)))
}

/// The id the agent gives an opportunity on `function` of `service` (its `sanitize_id` of
/// `<service>-<last path segment>`).
pub(crate) fn opportunity_id(service: &str, function: &str) -> String {
    let name = function.rsplit("::").next().unwrap_or(function);
    format!("{service}-{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proposal directory is read with its slug; a broken one is skipped, not fatal.
    #[test]
    fn reads_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fleetprof-fix-abc");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("proposal.json"),
            r#"{"id":"abcd1234","branch":"fleetprof/fix-abc","commit":"c0ffee","skill":"s",
               "produced_by":"recipe r","outbox_dir":"/x","checks":[{"step":"test","command":"cargo test",
               "passed":true,"seconds":1.5,"detail":"running\ntest result: ok. 3 passed\n"}],"pr_url":null}"#,
        )
        .unwrap();
        let bad = dir.path().join("broken");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("proposal.json"), "{").unwrap();
        let outboxes = [dir.path().to_path_buf()];
        let fix = for_id(&outboxes, "abcd1234").unwrap();
        assert_eq!(fix.slug, "fleetprof-fix-abc");
        assert!(fix.validated());
        assert_eq!(fix.checks[0].summary(), "test result: ok. 3 passed");
        assert!(by_slug(&outboxes, "../etc").is_none());
        assert_eq!(all(&outboxes).len(), 1);
        assert_eq!(
            opportunity_id("catalog", "catalog::price<T>"),
            "catalog-price-T-"
        );
    }
}
