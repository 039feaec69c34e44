//! The proposal: `PR.md` for the root-cause author, the outbox, and (with `--push`) the branch pushed
//! and a pull request opened through the GitHub REST API. Never pushes to the default branch.
//!
//! Only two GitHub endpoints are used: `POST /repos/{o}/{r}/pulls` and
//! `POST /repos/{o}/{r}/pulls/{n}/requested_reviewers`. The default branch comes from the remote
//! itself (`git ls-remote --symref origin HEAD`), so the token needs no read access beyond them.

use std::collections::BTreeMap;
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
    /// `--github-repo` is not `owner/name`.
    #[error("GitHub repository {0:?} is not of the form owner/name")]
    BadRepo(String),
    /// The remote does not say which branch is its default.
    #[error("cannot tell origin's default branch: `git ls-remote --symref origin HEAD` names none")]
    NoDefaultBranch,
}

/// Where pull requests are opened and who reviews them.
#[derive(Debug, Clone, Default)]
pub struct GitHubOptions {
    /// `owner/name` on GitHub. `None`: taken from `origin`'s URL, which must then be a github.com URL.
    pub repo: Option<String>,
    /// The REST API base. `None`: `https://api.github.com`.
    pub api_url: Option<String>,
    /// Commit author email (lower case) → GitHub login, for authors whose email is not GitHub's
    /// no-reply address.
    pub reviewers: BTreeMap<String, String>,
}

impl GitHubOptions {
    /// The root-cause author's GitHub login, worked out without guessing: the collector's login, a
    /// GitHub no-reply email, or an explicit mapping of the email. `None` when none of them says.
    pub fn reviewer_login(&self, rc: &RootCauseCandidate) -> Option<String> {
        if let Some(l) = rc.author_login.as_ref().filter(|l| valid_login(l)) {
            return Some(l.clone());
        }
        let email = author_email(&rc.author)?;
        noreply_login(&email).or_else(|| self.reviewers.get(&email.to_lowercase()).cloned())
    }
}

/// The email of a `Name <email>` author (or the author itself when it is a bare address).
pub fn author_email(author: &str) -> Option<String> {
    let email = author
        .rsplit_once('<')
        .map_or(author, |(_, e)| e.trim_end_matches('>'))
        .trim();
    email.contains('@').then(|| email.to_string())
}

/// A GitHub login from GitHub's no-reply address (`12345+login@users.noreply.github.com` or
/// `login@users.noreply.github.com`); any other address says nothing about the login.
pub fn noreply_login(email: &str) -> Option<String> {
    let local = email
        .trim()
        .to_lowercase()
        .strip_suffix("@users.noreply.github.com")?
        .to_string();
    let login = local.rsplit_once('+').map_or(local.as_str(), |(_, l)| l);
    valid_login(login).then(|| login.to_string())
}

/// GitHub's login rule: 1–39 ASCII alphanumerics or single inner hyphens.
fn valid_login(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 39
        && !l.starts_with('-')
        && !l.ends_with('-')
        && !l.contains("--")
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
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
    /// The root-cause author's GitHub login, when known (see [`GitHubOptions::reviewer_login`]).
    pub reviewer: Option<String>,
    /// The interleaved re-profiling statistic, when the workload was re-profiled.
    pub statistic: Option<String>,
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
        let who = c
            .reviewer
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
        match &c.reviewer {
            Some(l) => s.push_str(&format!(
                "\nReviewer: @{l}, the author of the root-cause commit.\n"
            )),
            None => s.push_str(&format!(
                "\nReviewer: unknown. The GitHub login of {} is not known (the email is not a GitHub \
                 no-reply address and no `--reviewer-map` entry names it), so no reviewer is requested.\n",
                rc.author
            )),
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
    if let Some(stat) = &c.statistic {
        s.push_str(&format!("\n### Re-profiling statistic\n\n{stat}\n"));
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

/// An opened pull request.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedPr {
    /// Its web URL.
    pub url: String,
    /// Its number.
    pub number: u64,
    /// The reviewer requested, when the request succeeded.
    pub reviewer: Option<String>,
}

/// The branch `origin` calls HEAD, asked of the remote itself.
fn default_branch(repo: &Path) -> Result<String, PrError> {
    let out = git(repo, &["ls-remote", "--symref", "origin", "HEAD"])?;
    out.lines()
        .find_map(|l| l.strip_prefix("ref: refs/heads/"))
        .and_then(|l| l.split('\t').next())
        .map(str::to_string)
        .ok_or(PrError::NoDefaultBranch)
}

/// A failed API call as a sentence: the status and GitHub's own `message` (and `errors`).
async fn api_error(what: &str, resp: reqwest::Response) -> PrError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .map(|v| {
            let mut m = v["message"].as_str().unwrap_or_default().to_string();
            if let Some(errs) = v["errors"].as_array() {
                for e in errs {
                    let e = e["message"]
                        .as_str()
                        .map_or_else(|| e.to_string(), str::to_string);
                    m.push_str(&format!("; {e}"));
                }
            }
            m
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| text.chars().take(300).collect());
    let hint = match status.as_u16() {
        401 => " (is GITHUB_TOKEN valid?)",
        403 | 404 => " (does GITHUB_TOKEN have pull-request write access to this repository?)",
        _ => "",
    };
    PrError::Api(format!("{what}: HTTP {status}: {detail}{hint}"))
}

/// Pushes `branch` to `origin`, opens a PR (a draft when `draft`) against the remote's default
/// branch, and requests `reviewer` on it. A failed reviewer request is logged, not fatal: the PR
/// exists by then. The local branch is kept whatever happens.
pub async fn push_and_open(
    repo: &Path,
    gh: &GitHubOptions,
    branch: &str,
    title: &str,
    body: &str,
    draft: bool,
    reviewer: Option<&str>,
) -> Result<OpenedPr, PrError> {
    let token = std::env::var("GITHUB_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or(PrError::NoToken)?;
    let (owner, name) = match &gh.repo {
        Some(r) => r
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .map(|(o, n)| (o.to_string(), n.to_string()))
            .ok_or_else(|| PrError::BadRepo(r.clone()))?,
        None => {
            let url = git(repo, &["remote", "get-url", "origin"])?;
            github_repo(&url).ok_or_else(|| PrError::NotGitHub(url.trim().to_string()))?
        }
    };
    let api = gh
        .api_url
        .clone()
        .unwrap_or_else(|| "https://api.github.com".into());
    let api = api.trim_end_matches('/');
    let default = default_branch(repo)?;
    if !branch.starts_with("fleetprof/") || branch == default {
        return Err(PrError::ProtectedBranch(branch.to_string()));
    }
    let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
    git(repo, &["push", "--force-with-lease", "origin", &refspec])?;
    let client = reqwest::Client::builder()
        .user_agent("fleetprof-agent")
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| PrError::Api(e.to_string()))?;
    let post = |url: String, body: serde_json::Value| {
        client
            .post(url)
            .bearer_auth(&token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .json(&body)
            .send()
    };
    let resp = post(
        format!("{api}/repos/{owner}/{name}/pulls"),
        json!({"title": title, "head": branch, "base": default, "body": body, "draft": draft}),
    )
    .await
    .map_err(|e| PrError::Api(format!("creating the pull request: {e}")))?;
    if !resp.status().is_success() {
        return Err(api_error("creating the pull request", resp).await);
    }
    let pr: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| PrError::Api(format!("creating the pull request: {e}")))?;
    let (Some(url), Some(number)) = (pr["html_url"].as_str(), pr["number"].as_u64()) else {
        return Err(PrError::Api(format!(
            "creating the pull request: no html_url/number in {pr}"
        )));
    };
    let mut opened = OpenedPr {
        url: url.to_string(),
        number,
        reviewer: None,
    };
    let Some(login) = reviewer else {
        tracing::warn!(pr = %opened.url, "the root-cause author's GitHub login is unknown; no reviewer requested");
        return Ok(opened);
    };
    let req = post(
        format!("{api}/repos/{owner}/{name}/pulls/{number}/requested_reviewers"),
        json!({"reviewers": [login]}),
    )
    .await;
    match req {
        Ok(r) if r.status().is_success() => opened.reviewer = Some(login.to_string()),
        Ok(r) => {
            let e = api_error("requesting a reviewer", r).await;
            tracing::warn!(pr = %opened.url, reviewer = login, "{e}");
        }
        Err(e) => tracing::warn!(pr = %opened.url, reviewer = login, "requesting a reviewer: {e}"),
    }
    Ok(opened)
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

    fn rc(author: &str, login: Option<&str>) -> RootCauseCandidate {
        RootCauseCandidate {
            commit: "abc".into(),
            author: author.into(),
            author_login: login.map(str::to_string),
            summary: "s".into(),
            score: 1.0,
            evidence: vec![],
        }
    }

    /// PR.md names the reviewer (or says the login is unknown) and carries the re-profiling
    /// statistic.
    #[test]
    fn pr_md_names_the_reviewer_and_the_statistic() {
        let cause = rc("Dana <dana@example.com>", None);
        let checks = [Check {
            step: "reprofile".into(),
            command: "./svc".into(),
            passed: true,
            seconds: 1.0,
            detail: "f: 1.00% of CPU with the fix".into(),
            statistic: Some("3 interleaved rounds (before, regressed, fixed)".into()),
        }];
        let mut c = PrContext {
            title: "perf: t".into(),
            kind: "regression",
            service: "svc",
            function: "f",
            shares: (Some(0.1), 0.5),
            cost: None,
            id: "r1",
            root_cause: Some(&cause),
            evidence_lines: vec![],
            evidence: vec![],
            skill: "s",
            produced_by: "recipe x".into(),
            what: "w".into(),
            checks: &checks,
            stat: String::new(),
            draft: false,
            reviewer: Some("dana-gh".into()),
            statistic: checks[0].statistic.clone(),
        };
        let md = render(&c);
        assert!(md.contains("cc @dana-gh"), "{md}");
        assert!(
            md.contains("Reviewer: @dana-gh, the author of the root-cause commit."),
            "{md}"
        );
        assert!(
            md.contains(
                "### Re-profiling statistic\n\n3 interleaved rounds (before, regressed, fixed)"
            ),
            "{md}"
        );
        c.reviewer = None;
        let md = render(&c);
        assert!(md.contains("cc Dana <dana@example.com>"), "{md}");
        assert!(md.contains("Reviewer: unknown."), "{md}");
    }

    /// The login comes from the collector, a no-reply email or the explicit map; otherwise none.
    #[test]
    fn reviewer_logins_are_never_guessed() {
        let mut gh = GitHubOptions::default();
        gh.reviewers
            .insert("dev@example.com".into(), "dev-one".into());
        assert_eq!(
            gh.reviewer_login(&rc("D <1+dana@users.noreply.github.com>", None)),
            Some("dana".into())
        );
        assert_eq!(
            gh.reviewer_login(&rc("D <Dev@Example.com>", None)),
            Some("dev-one".into())
        );
        assert_eq!(gh.reviewer_login(&rc("E <e@example.com>", None)), None);
        assert_eq!(
            gh.reviewer_login(&rc("E <e@example.com>", Some("e"))),
            Some("e".into())
        );
        // Not a login: rejected rather than sent to the API.
        assert_eq!(
            gh.reviewer_login(&rc("x <a b@users.noreply.github.com>", Some("-x"))),
            None
        );
        assert_eq!(gh.reviewer_login(&rc("no email", None)), None);
    }
}
