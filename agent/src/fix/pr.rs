//! The proposal: `PR.md` for the root-cause author, the outbox, and (with `--push`) the branch pushed
//! and a pull request opened through the GitHub REST API. Never pushes to the default branch.

use std::path::Path;

use serde_json::json;

use super::validate::Check;
use crate::repo::{RepoError, git};
use crate::source::RootCauseCandidate;

/// What can go wrong publishing.
#[derive(Debug, thiserror::Error)]
pub enum PrError {
    /// `GITHUB_TOKEN` is not set.
    #[error("GITHUB_TOKEN is not set; cannot open a pull request")]
    NoToken,
    /// The remote is not a GitHub repository URL.
    #[error(
        "remote {0:?} is not a GitHub URL (https://github.com/owner/repo or git@github.com:owner/repo)"
    )]
    NotGitHub(String),
    /// Refused to push to the default branch or a branch outside `fleetprof/`.
    #[error("refusing to push branch {0:?}: only fleetprof/ branches, never the default branch")]
    ProtectedBranch(String),
    /// git failed.
    #[error(transparent)]
    Git(#[from] RepoError),
    /// The GitHub API failed.
    #[error("GitHub API: {0}")]
    Api(String),
}

/// What the PR text is made of.
#[derive(Debug, Clone)]
pub struct PrContext<'a> {
    /// PR title.
    pub title: String,
    /// `regression` or `opportunity`.
    pub kind: &'a str,
    /// Service.
    pub service: &'a str,
    /// Function.
    pub function: &'a str,
    /// Share before/after (regression) or current share (opportunity).
    pub shares: (Option<f64>, f64),
    /// A regression's cost in cores and, where measured, watts.
    pub cost: Option<crate::source::RegressionCost>,
    /// The regression id (or opportunity id).
    pub id: &'a str,
    /// The root-cause candidate, for regressions.
    pub root_cause: Option<&'a RootCauseCandidate>,
    /// Added lines of the root-cause commit that the skill matched (evidence).
    pub evidence_lines: Vec<String>,
    /// Other evidence (skill match reasons, candidate evidence, stacks).
    pub evidence: Vec<String>,
    /// The skill used.
    pub skill: &'a str,
    /// How the patch was produced (`recipe guard-logging`, `model openai:gpt-4o`).
    pub produced_by: String,
    /// What the fix does, in a sentence or two.
    pub what: String,
    /// Validation checks.
    pub checks: &'a [Check],
    /// `git diff --stat` of the fix.
    pub stat: String,
    /// Nothing was validated (the repository has no `fleetprof.toml`): a draft.
    pub draft: bool,
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// Renders `PR.md`.
pub fn render(c: &PrContext<'_>) -> String {
    let mut s = format!("# {}{}\n\n", if c.draft { "[draft] " } else { "" }, c.title);
    if c.draft {
        s.push_str(
            "> **Draft: nothing was validated.** This repository has no `fleetprof.toml`, so fleetprof \
             did not build, test or re-profile this patch; it only checked that the patch applies to \
             the base commit and touches no tests, CI or build files. Add a `fleetprof.toml` with a \
             `[validate]` table (build, test, workload) to have fixes validated.\n\n",
        );
    }
    if let Some(rc) = c.root_cause {
        let who = rc
            .author_login
            .as_ref()
            .map_or_else(|| rc.author.clone(), |l| format!("@{l}"));
        s.push_str(&format!("cc {who}\n\n"));
    }
    match (c.kind, c.shares) {
        ("regression", (Some(b), a)) => {
            let rel = if b > 0.0 { format!(" (+{:.0}%)", (a / b - 1.0) * 100.0) } else { String::new() };
            s.push_str(&format!(
                "## What regressed\n\n`{}` in service **{}** went from {} to {} of the service's CPU{}.\n\
                 fleetprof regression `{}`.\n\n",
                c.function, c.service, pct(b), pct(a), rel, c.id
            ));
            if let Some(cost) = c.cost {
                s.push_str(&format!("It costs {cost}.\n\n"));
            }
        }
        (_, (_, a)) => s.push_str(&format!(
            "## The opportunity\n\n`{}` in service **{}** uses {} of the service's CPU and matches the \
             `{}` skill. fleetprof opportunity `{}`.\n\n",
            c.function, c.service, pct(a), c.skill, c.id
        )),
    }
    if let Some(rc) = c.root_cause {
        s.push_str(&format!(
            "## Root cause\n\nCommit `{}` by {}: \"{}\" (score {:.2}).\n",
            rc.commit, rc.author, rc.summary, rc.score
        ));
        for e in &rc.evidence {
            s.push_str(&format!("- {e}\n"));
        }
        s.push('\n');
    }
    s.push_str("## Evidence\n\n");
    for e in &c.evidence {
        s.push_str(&format!("- {e}\n"));
    }
    if !c.evidence_lines.is_empty() {
        s.push_str("\nLines added by the root-cause commit in the hot path:\n\n```\n");
        for l in &c.evidence_lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("```\n");
    }
    s.push_str(&format!(
        "\n## What the fix does\n\n{}\n\nProduced by {} following the `{}` skill.\n\n```\n{}```\n",
        c.what, c.produced_by, c.skill, c.stat
    ));
    s.push_str("\n## How it was validated\n\nIn a separate git worktree:\n\n");
    for ch in c.checks {
        let mark = if ch.passed { "passed" } else { "FAILED" };
        s.push_str(&format!(
            "- **{}** `{}`: {} ({:.1}s)",
            ch.step, ch.command, mark, ch.seconds
        ));
        if ch.step == "reprofile" || ch.step == "apply" {
            s.push_str(&format!(" — {}", ch.detail));
        }
        s.push('\n');
    }
    if c.draft {
        s.push_str(
            "- nothing: the repository has no `fleetprof.toml`; the patch only applies cleanly\n",
        );
    } else if c.checks.is_empty() {
        s.push_str("- the patch applies; the repository declares no build or test command in `fleetprof.toml`\n");
    }
    s.push_str("\nThe fix keeps the intent of the original change and removes only its cost. Please review.\n");
    s
}

/// `(owner, repo)` from a GitHub remote URL.
pub fn github_repo(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("http://github.com/"))
        .or_else(|| url.strip_prefix("git@github.com:"))
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let (owner, repo) = rest.split_once('/')?;
    (!owner.is_empty() && !repo.is_empty() && !repo.contains('/'))
        .then(|| (owner.to_string(), repo.to_string()))
}

/// Pushes `branch` to `origin` and opens a PR (a draft when `draft`) against the default branch;
/// returns its URL.
pub async fn push_and_open(
    repo: &Path,
    branch: &str,
    title: &str,
    body: &str,
    draft: bool,
) -> Result<String, PrError> {
    let token = std::env::var("GITHUB_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or(PrError::NoToken)?;
    let url = git(repo, &["remote", "get-url", "origin"])?;
    let (owner, name) =
        github_repo(&url).ok_or_else(|| PrError::NotGitHub(url.trim().to_string()))?;
    let api = std::env::var("GITHUB_API_URL").unwrap_or_else(|_| "https://api.github.com".into());
    let client = reqwest::Client::builder()
        .user_agent("fleetprof-agent")
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| PrError::Api(e.to_string()))?;
    let info: serde_json::Value = client
        .get(format!("{api}/repos/{owner}/{name}"))
        .bearer_auth(&token)
        .header("accept", "application/vnd.github+json")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| PrError::Api(e.to_string()))?
        .json()
        .await
        .map_err(|e| PrError::Api(e.to_string()))?;
    let default = info["default_branch"]
        .as_str()
        .unwrap_or("main")
        .to_string();
    if !branch.starts_with("fleetprof/") || branch == default {
        return Err(PrError::ProtectedBranch(branch.to_string()));
    }
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    git(repo, &["push", "--force-with-lease", "origin", &refspec])?;
    let resp: serde_json::Value = client
        .post(format!("{api}/repos/{owner}/{name}/pulls"))
        .bearer_auth(&token)
        .header("accept", "application/vnd.github+json")
        .json(
            &json!({"title": title, "head": branch, "base": default, "body": body, "draft": draft}),
        )
        .send()
        .await
        .map_err(|e| PrError::Api(e.to_string()))?
        .json()
        .await
        .map_err(|e| PrError::Api(e.to_string()))?;
    resp["html_url"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| PrError::Api(format!("no html_url in {resp}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub remotes parse in both URL forms; other hosts do not.
    #[test]
    fn remotes() {
        assert_eq!(
            github_repo("https://github.com/a/b.git\n"),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(
            github_repo("git@github.com:a/b.git"),
            Some(("a".into(), "b".into()))
        );
        assert_eq!(github_repo("https://gitlab.com/a/b"), None);
    }
}
