//! Measures the fix pipeline (recipes, or a model) on a corpus of seeded regressions.
//!
//! Each [`Case`] is a small service in one of six languages, built into a fresh git repository: a
//! first commit that is fine, then the known root cause (logging in a hot loop, a regex compiled
//! per call) by another author; one case is an impure function the memoize skill must refuse. The
//! pipeline runs on each as `fleetprof-agent fix` would, with the regression served from memory
//! (the profile and root cause are known by construction), and the result is classified:
//! **fixed** (a patch was produced), **validated** (it built, passed the tests and, with a
//! re-profiler, removed the cost), or **refused** (no patch: the skill or model declined, saying
//! why).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetprof_agent::{eval, fix::FixOptions, skills::SkillSet};
//! let skills = SkillSet::load("skills")?;
//! let dir = tempfile::tempdir()?;
//! let results = eval::run(&eval::corpus(), &skills, &FixOptions::default(), dir.path()).await;
//! print!("{}", eval::table(&results));
//! # Ok(()) }
//! ```

mod corpus;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::fix::{FixOptions, FixOutcome, Fixer, Target};
use crate::repo::Repo;
use crate::skills::{SkillKind, SkillSet};
use crate::source::{Regression, RootCauseCandidate, StaticSource};
use crate::tools::ToolBox;

/// A case's language (the toolchain its build needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// C (gcc).
    C,
    /// C++ (g++).
    Cpp,
    /// Go (the go tool).
    Go,
    /// Rust (cargo, offline, no dependencies).
    Rust,
    /// Java (javac).
    Java,
    /// Python 3.
    Python,
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::Go => "go",
            Lang::Rust => "rust",
            Lang::Java => "java",
            Lang::Python => "python",
        })
    }
}

/// What the case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regression whose root cause is the second commit.
    Regression,
    /// An opportunity on the first commit's code.
    Opportunity,
}

/// What a good pipeline does with the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Produces a patch that validates.
    Fixed,
    /// Produces no patch and says why.
    Refused,
}

/// One seeded regression.
#[derive(Debug, Clone)]
pub struct Case {
    /// A short unique name (`c-logging`).
    pub name: &'static str,
    /// Its language.
    pub lang: Lang,
    /// Regression or opportunity.
    pub kind: Kind,
    /// The function the profile blames.
    pub function: &'static str,
    /// The heaviest stack a profile of the regressed version shows through the function (root
    /// first): what the skills' signs are matched against.
    pub frames: &'static [&'static str],
    /// The first commit's files.
    pub files: Vec<(&'static str, String)>,
    /// The root-cause commit's files (whole new contents); empty for an opportunity.
    pub regress: Vec<(&'static str, String)>,
    /// The root-cause commit's subject.
    pub summary: &'static str,
    /// The right outcome.
    pub expect: Expect,
}

/// The whole corpus.
pub fn corpus() -> Vec<Case> {
    corpus::cases()
}

/// The skills with their recipes set aside, so a model does the fixing (what an eval of a model
/// measures).
pub fn without_recipes(skills: &SkillSet) -> SkillSet {
    SkillSet::from_skills(
        skills
            .all()
            .iter()
            .cloned()
            .map(|mut s| {
                s.recipe = None;
                s
            })
            .collect(),
    )
}

/// How one case went.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The case.
    pub name: String,
    /// Its language.
    pub lang: Lang,
    /// The right outcome.
    pub expect: Expect,
    /// A patch was produced.
    pub fixed: bool,
    /// The patch passed validation and was proposed.
    pub validated: bool,
    /// No patch was produced.
    pub refused: bool,
    /// `recipe NAME`, `model P:M`, or `-`.
    pub produced_by: String,
    /// Why it was not proposed (the last attempt's reason), or the proposal's checks.
    pub note: String,
    /// Seconds the pipeline took.
    pub seconds: f64,
    /// The re-profiling check's verdict (its figures per unit of work, or why it failed), when
    /// the case was re-profiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reprofile: Option<String>,
}

impl CaseResult {
    /// Whether the outcome is the expected one.
    pub fn as_expected(&self) -> bool {
        match self.expect {
            Expect::Fixed => self.validated,
            Expect::Refused => self.refused,
        }
    }
}

const AUTHOR_1: (&str, &str) = ("Ada Original", "ada@example.com");
const AUTHOR_2: (&str, &str) = ("Rex Regressor", "rex@example.com");

fn git(dir: &Path, author: (&str, &str), args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", &format!("user.name={}", author.0)])
        .args(["-c", &format!("user.email={}", author.1)])
        .args(args)
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn write_files(root: &Path, files: &[(&str, String)]) -> Result<(), String> {
    for (p, text) in files {
        let full = root.join(p);
        if let Some(d) = full.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::write(&full, text).map_err(|e| format!("{}: {e}", full.display()))?;
    }
    Ok(())
}

/// Builds the case's repository in `root`; returns the root-cause commit (the last commit).
pub fn build_repo(case: &Case, root: &Path) -> Result<String, String> {
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    write_files(root, &case.files)?;
    git(root, AUTHOR_1, &["init", "--quiet", "-b", "main"])?;
    git(root, AUTHOR_1, &["add", "-A"])?;
    git(
        root,
        AUTHOR_1,
        &["commit", "--quiet", "-m", "First version"],
    )?;
    if !case.regress.is_empty() {
        write_files(root, &case.regress)?;
        git(root, AUTHOR_2, &["commit", "--quiet", "-am", case.summary])?;
    }
    git(root, AUTHOR_1, &["rev-parse", "HEAD"])
}

fn target_of(case: &Case) -> Target {
    Target {
        id: format!("eval-{}", case.name),
        kind: SkillKind::Opportunity,
        service: format!("eval-{}", case.lang),
        function: case.function.to_string(),
        shares: (None, 0.4),
        root_cause: None,
        additions: vec![],
        frames: case.frames.iter().map(|f| f.to_string()).collect(),
        cost: None,
        locations: vec![],
        located: None,
    }
}

/// Runs one case in `dir` (its repository and outbox go there).
pub async fn run_case(case: &Case, skills: &SkillSet, opts: &FixOptions, dir: &Path) -> CaseResult {
    let started = Instant::now();
    let mut result = CaseResult {
        name: case.name.to_string(),
        lang: case.lang,
        expect: case.expect,
        fixed: false,
        validated: false,
        refused: false,
        produced_by: "-".into(),
        note: String::new(),
        seconds: 0.0,
        reprofile: None,
    };
    let repo_dir = dir.join(case.name);
    let commit = match build_repo(case, &repo_dir) {
        Ok(c) => c,
        Err(e) => {
            result.note = format!("could not build the case's repository: {e}");
            return result;
        }
    };
    let id = format!("eval-{}", case.name);
    let source = StaticSource {
        regressions: vec![Regression {
            id: id.clone(),
            service: format!("eval-{}", case.lang),
            function: case.function.to_string(),
            baseline_share: 0.05,
            current_share: 0.40,
            detected_at: 0,
            version_before: None,
            version_after: None,
            candidates: vec![RootCauseCandidate {
                commit: commit.clone(),
                author: format!("{} <{}>", AUTHOR_2.0, AUTHOR_2.1),
                author_login: None,
                summary: case.summary.to_string(),
                score: 1.0,
                evidence: vec!["the seeded root cause".into()],
            }],
            members: vec![],
            cost: Default::default(),
        }],
        stacks: vec![(
            format!("eval-{}", case.lang),
            case.function.to_string(),
            vec![crate::source::StackCount {
                frames: case.frames.iter().map(|f| f.to_string()).collect(),
                samples: 100,
            }],
        )],
        ..Default::default()
    };
    let tools = ToolBox::new(Arc::new(source), skills.clone()).with_repo(Repo::new(&repo_dir));
    let mut opts = opts.clone();
    opts.outbox = dir.join(format!("{}-outbox", case.name));
    opts.push = false;
    let fixer = Fixer::new(tools, opts);
    let outcome = match case.kind {
        Kind::Regression => fixer.fix_regression(&id).await,
        Kind::Opportunity => fixer.propose(&target_of(case)).await,
    };
    result.seconds = started.elapsed().as_secs_f64();
    // The statistic's verdict lines carry the figures per unit of work; the detail only shares.
    let reprofiled = |checks: &[crate::fix::validate::Check]| {
        checks
            .iter()
            .find(|c| c.step == "reprofile" && !c.detail.starts_with("not re-profiled"))
            .map(|c| {
                let verdicts: Vec<&str> = c
                    .statistic
                    .as_deref()
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.strip_prefix("- "))
                    .collect();
                if verdicts.is_empty() {
                    c.detail.clone()
                } else {
                    verdicts.join("; ")
                }
            })
    };
    match outcome {
        Ok(FixOutcome::Proposed(p)) => {
            result.fixed = true;
            result.validated = !p.draft;
            result.reprofile = reprofiled(&p.checks);
            result.produced_by = p.produced_by;
            result.note = p
                .checks
                .iter()
                .map(|c| {
                    if c.step == "reprofile" && c.detail.starts_with("not re-profiled") {
                        "not re-profiled".to_string()
                    } else {
                        format!("{} ok", c.step)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
        }
        Ok(FixOutcome::NotProposed { attempts, .. }) => {
            // A patch that reached the checks was produced and failed them; otherwise the
            // pipeline produced nothing (a refusal, with the reason).
            let tried = attempts.iter().find(|a| !a.checks.is_empty());
            result.fixed = tried.is_some();
            result.refused = tried.is_none();
            let a = tried.or(attempts.last());
            if let Some(a) = a {
                result.reprofile = reprofiled(&a.checks);
                result.produced_by = a.produced_by.clone();
                result.note = a.reason.clone();
            }
        }
        Err(e) => result.note = format!("error: {e}"),
    }
    result
}

/// Runs every case, one after another, each in its own directory under `dir`.
pub async fn run(
    cases: &[Case],
    skills: &SkillSet,
    opts: &FixOptions,
    dir: &Path,
) -> Vec<CaseResult> {
    let mut out = Vec::new();
    for c in cases {
        tracing::info!(case = c.name, "eval.case");
        out.push(run_case(c, skills, opts, dir).await);
    }
    out
}

/// The results as a table, one line per case, then a summary line.
pub fn table(results: &[CaseResult]) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    let mut s = format!(
        "{:<22} {:<7} {:<9} {:<6} {:<10} {:<8} {:<6} {:>7}  {:<26} {}\n",
        "case", "lang", "expected", "fixed", "validated", "refused", "ok", "seconds", "by", "note"
    );
    for r in results {
        let mut note = r.note.replace('\n', " ");
        crate::repo::truncate(&mut note, 160);
        s.push_str(&format!(
            "{:<22} {:<7} {:<9} {:<6} {:<10} {:<8} {:<6} {:>7.1}  {:<26} {}\n",
            r.name,
            r.lang.to_string(),
            match r.expect {
                Expect::Fixed => "fixed",
                Expect::Refused => "refused",
            },
            yn(r.fixed),
            yn(r.validated),
            yn(r.refused),
            yn(r.as_expected()),
            r.seconds,
            r.produced_by,
            note
        ));
    }
    // The re-profiling verdicts are long (figures per unit of work): one line each, below.
    for r in results {
        if let Some(v) = &r.reprofile {
            s.push_str(&format!(
                "  {} re-profiled: {}\n",
                r.name,
                v.replace('\n', " ")
            ));
        }
    }
    let count = |f: fn(&CaseResult) -> bool| results.iter().filter(|r| f(r)).count();
    s.push_str(&format!(
        "{} cases: {} fixed, {} validated, {} refused; {} as expected\n",
        results.len(),
        count(|r| r.fixed),
        count(|r| r.validated),
        count(|r| r.refused),
        count(CaseResult::as_expected)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The corpus has at least 8 cases in at least 4 languages, unique names, and every
    /// regression's root cause changes something.
    #[test]
    fn corpus_shape() {
        let cases = corpus();
        assert!(cases.len() >= 8);
        let mut langs: Vec<String> = cases.iter().map(|c| c.lang.to_string()).collect();
        langs.sort();
        langs.dedup();
        assert!(langs.len() >= 4, "{langs:?}");
        let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        for c in &cases {
            assert!(
                c.files.iter().any(|(p, _)| *p == "fleetprof.toml"),
                "{}",
                c.name
            );
            for (p, text) in &c.regress {
                let before = &c.files.iter().find(|(q, _)| q == p).unwrap().1;
                assert_ne!(before, text, "{}: {p} unchanged", c.name);
            }
            assert_eq!(
                c.regress.is_empty(),
                c.kind == Kind::Opportunity,
                "{}",
                c.name
            );
        }
    }

    /// `eval` with a scripted OpenAI-compatible model (the skills' recipes removed, so the model
    /// path runs): the model edits the C case with a structured edit and builds, and the case ends
    /// fixed and validated, produced by the model; a model that stops without editing leaves the
    /// case unfixed.
    #[tokio::test]
    async fn scripted_model_runs_an_eval_case() {
        use crate::llm::scripted::{
            ScriptedServer, openai_answer as answer, openai_model, openai_tool_call as call,
            skills_without_recipes,
        };
        let dir = tempfile::tempdir().unwrap();
        let skills_dir = dir.path().join("skills");
        skills_without_recipes(&skills_dir);
        let skills = SkillSet::load(&skills_dir).unwrap();
        let case = corpus()
            .into_iter()
            .find(|c| c.name == "c-logging")
            .unwrap();
        let log_line = "        fprintf(stderr, \"debug: item %d -> %ld\\n\", i, total);\n";
        let opts = |url: String| FixOptions {
            model: openai_model(url),
            ..Default::default()
        };

        let server = ScriptedServer::start(vec![
            call("c1", "read_code", serde_json::json!({"path": "svc.c"})),
            call(
                "c2",
                "replace_snippet",
                serde_json::json!({"path": "svc.c", "old": log_line,
                    "new": format!("        if (getenv(\"SVC_DEBUG\"))\n    {log_line}")}),
            ),
            call("c3", "build", serde_json::json!({})),
            answer("Guards the per-item debug line behind SVC_DEBUG."),
        ]);
        let r = run_case(&case, &skills, &opts(server.url()), dir.path()).await;
        assert!(r.fixed && r.validated && !r.refused, "{r:?}");
        assert_eq!(r.produced_by, "model openai:m", "{r:?}");
        assert!(r.as_expected(), "{r:?}");
        assert_eq!(server.requests().len(), 4);

        // A model that answers without editing produces nothing for the case.
        let lazy = ScriptedServer::start(vec![answer("Nothing to change.")]);
        let dir2 = tempfile::tempdir().unwrap();
        let r = run_case(&case, &skills, &opts(lazy.url()), dir2.path()).await;
        assert!(!r.fixed && !r.validated, "{r:?}");
        assert!(!r.as_expected(), "{r:?}");
    }
}
