//! The fix pipeline: gather context → choose skills → produce a patch (a skill's recipe, or a model
//! with tool calls) → validate it in a separate `git worktree` → branch, commit, `PR.md` in the outbox
//! (→ with `push`, a GitHub pull request). A patch that fails validation is never proposed.
//!
//! Defense ([`Fixer::fix_regression`]) and offense ([`crate::opportunities`]) share [`Fixer::propose`].

mod hoist;
mod logging;
pub mod pr;
pub mod recipes;
pub mod session;
mod span;
pub mod stats;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::llm::{ChatModel, Fence, LoopLimits, run_tool_loop};
use crate::repo::{FileAdditions, Located, LocatedBy, Repo, RepoError, git, symbol_segments};
use crate::skills::{MatchInput, RecipeSpec, SkillKind, language_of};
use crate::source::{RootCauseCandidate, SourceError};
use crate::tools::ToolBox;
use fleetprof_code::functions;
use validate::{Check, Reprofiler, ValidateConfig, ValidateError, Worktree};

/// What can go wrong in the pipeline (a patch failing validation is not an error: it is an
/// [`FixOutcome::NotProposed`] attempt).
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// The profile source failed (e.g. no such regression).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The repository could not be read.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Validation could not be set up.
    #[error(transparent)]
    Validate(#[from] ValidateError),
    /// No repository was given.
    #[error("no repository configured (pass --repo PATH)")]
    NoRepo,
    /// Writing the outbox failed.
    #[error("writing {path}: {source}")]
    Outbox {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Pushing or opening the PR failed (the proposal is still in the outbox).
    #[error("{source} (the fix is kept on local branch {branch} and in {})", .outbox.display())]
    Pr {
        /// The branch holding the fix.
        branch: String,
        /// The proposal's outbox directory.
        outbox: PathBuf,
        /// What failed.
        #[source]
        source: pr::PrError,
    },
}

/// How the pipeline runs.
#[derive(Clone, Default)]
pub struct FixOptions {
    /// Where proposals are written (`<outbox>/<branch name>/PR.md`, `fix.patch`, `proposal.json`).
    pub outbox: PathBuf,
    /// Push the branch and open a PR (needs `GITHUB_TOKEN`).
    pub push: bool,
    /// A model for when no recipe fits or works; `None` means recipes only.
    pub model: Option<Arc<dyn ChatModel>>,
    /// The model loop's limits.
    pub limits: LoopLimits,
    /// The re-profiling hook, used when the repository declares a workload.
    pub reprofiler: Option<Arc<dyn Reprofiler>>,
    /// Where pull requests are opened and how the root-cause author's login is found.
    pub github: pr::GitHubOptions,
}

impl std::fmt::Debug for FixOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixOptions")
            .field("outbox", &self.outbox)
            .field("push", &self.push)
            .field("model", &self.model.as_ref().map(|m| m.describe()))
            .field("reprofiler", &self.reprofiler.is_some())
            .field("github", &self.github)
            .finish()
    }
}

/// What to fix or improve.
#[derive(Debug, Clone)]
pub struct Target {
    /// Regression id or opportunity id.
    pub id: String,
    /// Regression or opportunity.
    pub kind: SkillKind,
    /// Service.
    pub service: String,
    /// The function's symbol.
    pub function: String,
    /// Baseline share (regressions) and current share.
    pub shares: (Option<f64>, f64),
    /// The root-cause candidate (regressions).
    pub root_cause: Option<RootCauseCandidate>,
    /// Lines the root-cause commit added, per file.
    pub additions: Vec<FileAdditions>,
    /// Frames of the function's heaviest stacks (for skill signs).
    pub frames: Vec<String>,
    /// What the regression costs (cores, and watts where measured); `None` for opportunities.
    pub cost: Option<crate::source::RegressionCost>,
    /// The profile's debug-info locations of the function (`file`, `line`), most frequent first.
    pub locations: Vec<(String, u32)>,
    /// Where the function is in the repository, when already known.
    pub located: Option<Located>,
}

/// A validated, committed proposal.
#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    /// The id fixed.
    pub id: String,
    /// The branch holding the commit.
    pub branch: String,
    /// The commit.
    pub commit: String,
    /// The skill followed.
    pub skill: String,
    /// `recipe NAME` or `model PROVIDER:MODEL`.
    pub produced_by: String,
    /// The outbox directory of this proposal.
    pub outbox_dir: PathBuf,
    /// The validation checks (all passed).
    pub checks: Vec<Check>,
    /// The PR's URL, when pushed.
    pub pr_url: Option<String>,
    /// A draft: the repository has no `fleetprof.toml`, so nothing was validated (`PR.md` says so
    /// and a pushed PR is opened as a draft).
    #[serde(default)]
    pub draft: bool,
    /// The GitHub login requested as reviewer on the pushed PR (the root-cause author), when the
    /// login was known and the request succeeded.
    #[serde(default)]
    pub reviewer: Option<String>,
}

/// How a patch fared in [`Fixer::validate_patch`].
#[derive(Debug, Clone, Serialize)]
pub struct PatchValidation {
    /// Whether it applied, was allowed, and every check passed.
    pub passed: bool,
    /// Why it was refused before anything ran (does not apply, changes nothing, touches what
    /// judges it).
    pub refused: Option<String>,
    /// The paths it changes.
    pub changed: Vec<String>,
    /// The build and test checks that ran.
    pub checks: Vec<Check>,
}

/// A patch that was tried and not proposed.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// The skill.
    pub skill: String,
    /// `recipe NAME` or `model …`.
    pub produced_by: String,
    /// Why it was not proposed.
    pub reason: String,
    /// The checks that ran.
    pub checks: Vec<Check>,
}

/// The pipeline's result.
#[derive(Debug, Clone, Serialize)]
pub enum FixOutcome {
    /// A validated proposal.
    Proposed(Proposal),
    /// Nothing passed validation (or nothing applied); the attempts say why.
    NotProposed {
        /// The id.
        id: String,
        /// What was tried.
        attempts: Vec<Attempt>,
    },
}

/// A candidate change.
#[derive(Debug, Clone)]
enum Patch {
    /// Whole new contents of files.
    Files(Vec<(String, String)>),
    /// A unified diff.
    Diff(String),
}

/// Runs the pipeline over a tool box (profile source, repository, skills).
#[derive(Debug, Clone)]
pub struct Fixer {
    tools: ToolBox,
    opts: FixOptions,
}

/// Ids become branch names: keep `[A-Za-z0-9._-]`.
pub fn sanitize_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Fixer {
    /// A pipeline over `tools` (which must have a repository).
    pub fn new(tools: ToolBox, opts: FixOptions) -> Fixer {
        Fixer { tools, opts }
    }

    fn repo(&self) -> Result<&Repo, FixError> {
        self.tools.repo().ok_or(FixError::NoRepo)
    }

    /// Defense: fixes forward regression `id`.
    pub async fn fix_regression(&self, id: &str) -> Result<FixOutcome, FixError> {
        let target = self.regression_target(id).await?;
        self.propose(&target).await
    }

    /// What regression `id` is about, as a fix target: its root cause in this repository and
    /// where the code is, found from the profile's debug info first.
    pub async fn regression_target(&self, id: &str) -> Result<Target, FixError> {
        let reg = self.tools.source().regression(id).await?;
        let repo = self.repo()?;
        // The best candidate that exists in this repository.
        let mut root = None;
        for c in &reg.candidates {
            if let Ok(adds) = repo.additions(&c.commit) {
                root = Some((c.clone(), adds));
                break;
            }
        }
        let frames = match self
            .tools
            .source()
            .stacks_through(
                &reg.service,
                &reg.function,
                crate::source::Window::clamped(reg.detected_at, i64::MAX),
                5,
            )
            .await
        {
            Ok(stacks) => stacks.into_iter().flat_map(|s| s.frames).collect(),
            Err(_) => Vec::new(),
        };
        let (root_cause, additions) = match root {
            Some((c, a)) => (Some(c), a),
            None => (None, Vec::new()),
        };
        // Fix the most significant member this repository defines: a report often groups the
        // service's function with the library or kernel frames it now calls. Each member is
        // located from the profile's own debug info first (DWARF file:line → repository file →
        // the parser's span), by name only without line information.
        let mut members: Vec<(String, f64, f64)> = reg
            .members
            .iter()
            .map(|m| (m.function.clone(), m.baseline_share, m.current_share))
            .collect();
        if members.is_empty() {
            members.push((reg.function.clone(), reg.baseline_share, reg.current_share));
        }
        let mut chosen = None;
        for (function, b, c) in &members {
            let locations: Vec<(String, u32)> = self
                .tools
                .source()
                .locations(function)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l.file, l.line))
                .collect();
            if let Some(located) = repo.locate(function, &locations)? {
                chosen = Some((function.clone(), *b, *c, locations, Some(located)));
                break;
            }
        }
        let (function, baseline, current, locations, mut located) = chosen.unwrap_or((
            reg.function.clone(),
            reg.baseline_share,
            reg.current_share,
            Vec::new(),
            None,
        ));
        // No member is the repository's (the report names only library or kernel frames, e.g.
        // libc's printf whose callers a frame-pointer unwinder cannot see): the new cost comes
        // from what the root-cause commit changed, so fix there and keep measuring the member.
        if located.is_none()
            && let Some((path, def)) = changed_functions(repo, &additions).into_iter().next()
        {
            tracing::info!(function = %def.name, member = %function, "no member is defined in the repository; fixing the function the root cause changed");
            located = Some(Located {
                language: fleetprof_code::Language::of(&path)
                    .unwrap_or(fleetprof_code::Language::C),
                path,
                def,
                by: LocatedBy::Diff,
            });
        }
        // The root-cause commit's changes may sit one call below the located function: a call into
        // a library without frame pointers (libc's printf) hides its direct caller from the
        // stack. A function the commit changed that the located one calls (or that is on the
        // stacks) is where the new cost is.
        if let Some(l) = &located {
            let changed = changed_functions(repo, &additions);
            let already = changed
                .iter()
                .any(|(p, d)| *p == l.path && d.name == l.def.name);
            if !already {
                let body = std::fs::read_to_string(repo.root().join(&l.path))
                    .ok()
                    .map(|t| {
                        t[l.def.item_start.min(t.len())..l.def.item_end.min(t.len())].to_string()
                    })
                    .unwrap_or_default();
                let callee = changed.into_iter().find(|(_, d)| {
                    frames.iter().any(|f| functions::last_segment(f) == d.name)
                        || regex::Regex::new(&format!(r"\b{}\s*\(", regex::escape(&d.name)))
                            .is_ok_and(|re| re.is_match(&body))
                });
                if let Some((path, def)) = callee {
                    tracing::info!(from = %l.def.name, to = %def.name, "the root cause changed a function the regressed one calls");
                    located = Some(Located {
                        language: fleetprof_code::Language::of(&path).unwrap_or(l.language),
                        path,
                        def,
                        by: LocatedBy::Diff,
                    });
                }
            }
        }
        let target = Target {
            id: reg.id.clone(),
            kind: SkillKind::Regression,
            service: reg.service.clone(),
            function,
            shares: (Some(baseline), current),
            root_cause,
            additions,
            frames,
            cost: Some(reg.cost),
            locations,
            located,
        };
        Ok(target)
    }

    /// Validates a patch (a unified diff against the repository's HEAD) the way a fix is
    /// validated — in a throwaway worktree, refused when it touches what judges it, with the
    /// base commit's build and test commands — and keeps nothing. For MCP clients driving the loop.
    pub async fn validate_patch(&self, diff: &str) -> Result<PatchValidation, FixError> {
        let repo = self.repo()?.clone();
        let base = repo.git(&["rev-parse", "HEAD"])?.trim().to_string();
        let branch = format!("fleetprof/validate-{}", &Fence::new().nonce()[..8]);
        let (wt, changed) =
            match self.apply_patch(&repo, &branch, &base, &Patch::Diff(diff.to_string()))? {
                Ok(x) => x,
                Err(reason) => {
                    return Ok(PatchValidation {
                        passed: false,
                        refused: Some(reason),
                        changed: vec![],
                        checks: vec![],
                    });
                }
            };
        let cfg = ValidateConfig::load_at(repo.root(), &base)?;
        let dir = wt.path();
        let checks = tokio::task::spawn_blocking(move || {
            validate::validate(&dir, &cfg, None, "", None, None, None)
        })
        .await
        .unwrap_or_default();
        wt.discard();
        Ok(PatchValidation {
            passed: checks.iter().all(|c| c.passed),
            refused: None,
            changed,
            checks,
        })
    }

    /// Proposes a patch written elsewhere (an MCP client) for regression `id`: validated like any
    /// fix and, if it passes, committed on `fleetprof/fix-<id>` with `PR.md` in the outbox.
    pub async fn propose_patch(
        &self,
        id: &str,
        diff: &str,
        explanation: &str,
        author: &str,
    ) -> Result<FixOutcome, FixError> {
        let t = self.regression_target(id).await?;
        let file = t.located.as_ref().map(|l| l.path.clone());
        let added: Vec<String> = t
            .additions
            .iter()
            .filter(|a| file.as_deref() == Some(a.path.as_str()))
            .flat_map(|a| a.lines.iter().map(|(_, l)| l.clone()))
            .collect();
        let produced_by = format!("MCP client {author}");
        let what = if explanation.trim().is_empty() {
            "See the diff.".to_string()
        } else {
            explanation.trim().to_string()
        };
        let skill = "triage-regression";
        Ok(
            match self
                .try_patch(
                    &t,
                    &Patch::Diff(diff.to_string()),
                    skill,
                    &produced_by,
                    &what,
                    vec![],
                    &added,
                )
                .await?
            {
                Ok(p) => FixOutcome::Proposed(p),
                Err(a) => FixOutcome::NotProposed {
                    id: id.to_string(),
                    attempts: vec![a],
                },
            },
        )
    }

    /// Chooses skills, produces patches, validates, and publishes the first that passes.
    pub async fn propose(&self, t: &Target) -> Result<FixOutcome, FixError> {
        let repo = self.repo()?.clone();
        let segments = symbol_segments(&t.function);
        let name = segments
            .last()
            .cloned()
            .unwrap_or_else(|| t.function.clone());
        // The file holding the function: where the profile's debug info points, else one the
        // root cause touched that defines it, else a name search (said in the evidence).
        let mut located = t.located.clone();
        if located.is_none() {
            located = t.additions.iter().find_map(|a| {
                repo.definition_in(&a.path, &t.function)
                    .map(|(language, def)| Located {
                        path: a.path.clone(),
                        language,
                        def,
                        by: LocatedBy::Diff,
                    })
            });
        }
        if located.is_none() {
            located = repo.locate(&t.function, &t.locations)?;
        }
        let file = located.as_ref().map(|l| l.path.clone());
        let how_located = match &located {
            Some(l) => match l.by {
                LocatedBy::DebugInfo => format!(
                    "located `{}` from the profile's debug info: {}:{}-{}",
                    l.def.name, l.path, l.def.start, l.def.end
                ),
                LocatedBy::Diff => format!(
                    "located `{}` in the root-cause commit's changes: {}:{}-{}",
                    l.def.name, l.path, l.def.start, l.def.end
                ),
                LocatedBy::NameSearch => format!(
                    "the profile has no line information for `{}`: located by a name search at {}:{}",
                    t.function, l.path, l.def.start
                ),
            },
            None => format!(
                "`{}` is not defined in the repository ({})",
                t.function,
                if t.locations.is_empty() {
                    "the profile has no line information for it, and a name search found nothing"
                } else {
                    "its debug-info files map to no repository file, and a name search found nothing"
                }
            ),
        };
        tracing::info!(id = %t.id, "{how_located}");
        let added_in = |path: &str| -> Vec<String> {
            t.additions
                .iter()
                .filter(|a| a.path == path)
                .flat_map(|a| a.lines.iter().map(|(_, l)| l.clone()))
                .collect()
        };
        let mut code_lines: Vec<String> = t
            .additions
            .iter()
            .flat_map(|a| a.lines.iter().map(|(_, l)| l.clone()))
            .collect();
        let file_text = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(repo.root().join(f)).ok());
        if t.kind == SkillKind::Opportunity
            && let (Some(text), Some(l)) = (&file_text, &located)
        {
            code_lines = text
                .get(l.def.item_start..l.def.item_end)
                .unwrap_or("")
                .lines()
                .map(str::to_string)
                .collect();
        }
        let mut languages: Vec<String> = t
            .additions
            .iter()
            .map(|a| a.path.as_str())
            .chain(file.as_deref())
            .filter_map(|p| language_of(Path::new(p)).map(str::to_string))
            .collect();
        languages.sort();
        languages.dedup();
        let mut functions = vec![t.function.clone()];
        functions.extend(t.frames.iter().cloned());
        let input = MatchInput {
            kind: t.kind,
            functions,
            code_lines,
            languages,
        };
        let matches = self.tools.skills().matching(&input);
        tracing::info!(id = %t.id, file = ?file, skills = ?matches.iter().map(|m| &m.skill.name).collect::<Vec<_>>(), "Fixer.propose");
        let mut attempts = Vec::new();
        // 1. Recipes, best-matching skill first.
        for m in matches.iter().filter(|m| m.score > 0) {
            let Some(spec) = &m.skill.recipe else {
                continue;
            };
            let (Some(path), Some(text), Some(loc)) = (&file, &file_text, &located) else {
                attempts.push(attempt(&m.skill.name, spec, how_located.clone(), vec![]));
                continue;
            };
            let added = added_in(path);
            let out = recipes::apply(
                spec,
                recipes::RecipeInput {
                    source: text,
                    function: &loc.def.name,
                    language: loc.language,
                    added_lines: &added,
                    skill: &m.skill.name,
                },
            );
            let new_text = match out {
                Ok(s) => s,
                Err(e) => {
                    attempts.push(attempt(&m.skill.name, spec, e.to_string(), vec![]));
                    continue;
                }
            };
            let produced_by = format!("recipe {}", recipe_name(spec));
            let what = recipe_what(spec, &name);
            let mut evidence = m.reasons.clone();
            evidence.push(how_located.clone());
            if let Some(rc) = &t.root_cause {
                evidence.push(format!(
                    "root-cause candidate {} ranked first that exists in the repository",
                    short(&rc.commit)
                ));
            }
            let patch = Patch::Files(vec![(path.clone(), new_text)]);
            match self
                .try_patch(
                    t,
                    &patch,
                    &m.skill.name,
                    &produced_by,
                    &what,
                    evidence,
                    &added,
                )
                .await?
            {
                Ok(p) => return Ok(FixOutcome::Proposed(p)),
                Err(a) => attempts.push(a),
            }
        }
        // 2. The model, as a coding agent in its own worktree, with the matched skills' instructions.
        if let Some(model) = &self.opts.model {
            let skill = matches
                .first()
                .map_or("triage-regression", |m| m.skill.name.as_str())
                .to_string();
            let added = file.as_deref().map(added_in).unwrap_or_default();
            match self
                .model_patch(model.as_ref(), t, file.as_deref(), &matches)
                .await?
            {
                Err(reason) => attempts.push(Attempt {
                    skill: skill.clone(),
                    produced_by: format!("model {}", model.describe()),
                    reason,
                    checks: vec![],
                }),
                Ok((patch, what, spent)) => {
                    let produced_by = format!("model {}", model.describe());
                    let evidence =
                        vec![how_located.clone(), format!("model conversation: {spent}")];
                    match self
                        .try_patch(t, &patch, &skill, &produced_by, &what, evidence, &added)
                        .await?
                    {
                        Ok(p) => return Ok(FixOutcome::Proposed(p)),
                        Err(a) => attempts.push(a),
                    }
                }
            }
        } else if attempts.is_empty() {
            attempts.push(Attempt {
                skill: matches.first().map_or("-", |m| m.skill.name.as_str()).to_string(),
                produced_by: "-".into(),
                reason: "no matching skill has a recipe and no model is configured (--llm openai|anthropic)".into(),
                checks: vec![],
            });
        }
        Ok(FixOutcome::NotProposed {
            id: t.id.clone(),
            attempts,
        })
    }

    /// Runs one coding conversation for `t` in a private worktree; returns the patch it produced
    /// (the worktree's diff, or a diff in the final answer when the model made no edits), what it
    /// says the fix does, and what the conversation spent — or why there is no patch.
    async fn model_patch(
        &self,
        model: &dyn ChatModel,
        t: &Target,
        file: Option<&str>,
        matches: &[crate::skills::SkillMatch<'_>],
    ) -> Result<Result<(Patch, String, String), String>, FixError> {
        let repo = self.repo()?.clone();
        let limits = self.opts.limits;
        let base = repo.git(&["rev-parse", "HEAD"])?.trim().to_string();
        let session = session::FixSession::open(
            self.tools.clone(),
            session::SessionSpec {
                repo: repo.root().to_path_buf(),
                base,
                id: t.id.clone(),
                function: t.function.clone(),
                shares: t.shares.0.map(|b| (b, t.shares.1)),
                reprofiler: self.opts.reprofiler.clone(),
                deadline: std::time::Instant::now() + limits.wall_time,
            },
        )?;
        let fence = Fence::new();
        let (system, user) = self.prompt(t, file, matches, &fence);
        let out = run_tool_loop(model, &session, &system, &user, limits, &fence).await;
        let diff = session.diff();
        let edits = session.edits();
        session.close();
        let out = match out {
            Ok(o) => o,
            Err(e) if e.is_budget() => {
                tracing::warn!(id = %t.id, error = %e, "the model loop stopped on a budget");
                return Ok(Err(format!(
                    "the model loop stopped: {e}; its {edits} edit(s) were not proposed"
                )));
            }
            Err(e) => return Ok(Err(format!("the model failed: {e}"))),
        };
        let spent = out.spent(&limits);
        tracing::info!(id = %t.id, %spent, edits, "model conversation finished");
        let patch = if !diff.trim().is_empty() {
            Patch::Diff(diff)
        } else if let Some(d) = extract_diff(&out.answer) {
            Patch::Diff(d)
        } else {
            return Ok(Err(format!(
                "the model made no edits and its answer had no ```diff block ({spent})"
            )));
        };
        // The model's own words go into PR.md, outside any code fence it wrote.
        let what = out
            .answer
            .split("```")
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        let what = if what.is_empty() {
            "See the diff.".to_string()
        } else {
            what
        };
        Ok(Ok((patch, what, spent)))
    }

    fn prompt(
        &self,
        t: &Target,
        file: Option<&str>,
        matches: &[crate::skills::SkillMatch<'_>],
        fence: &Fence,
    ) -> (String, String) {
        let mut system = String::from(
            "You are fleetprof's fix-forward agent, working in a private git worktree of the \
             repository. A production CPU profile shows a function got more expensive (or is an \
             efficiency opportunity). Use the tools to read the evidence and the code, make the \
             smallest change that removes the cost while keeping the intent of the code, with \
             replace_snippet and insert_lines (small structured edits, never whole files), then \
             check it with build and run_tests (and reprofile when offered). Source files only: \
             fleetprof.toml, CI, build scripts and tests may not be changed. When done, answer \
             without calling a tool, in one short paragraph saying what the fix does; your \
             worktree's diff is the patch, and it is validated again from scratch.\n\n",
        );
        system.push_str(&fence.rule());
        system.push_str("\n\n");
        for m in matches.iter().take(3) {
            system.push_str(&m.skill.render());
            system.push('\n');
        }
        let mut user = format!(
            "{} `{}`: function `{}` in service `{}`.\n",
            t.kind, t.id, t.function, t.service
        );
        if let (Some(b), a) = t.shares {
            user.push_str(&format!(
                "Its CPU share went from {:.2}% to {:.2}%.\n",
                b * 100.0,
                a * 100.0
            ));
        }
        if let Some(rc) = &t.root_cause {
            // The author and summary are repository text: data, fenced.
            user.push_str(&format!(
                "Root-cause candidate: commit {} (read it with show_change); its author and summary:\n{}\n",
                rc.commit,
                fence.wrap(
                    "commit author and summary",
                    &format!("{}: {}", rc.author, rc.summary)
                )
            ));
        }
        if let Some(f) = file {
            user.push_str(&format!(
                "The function is defined in:\n{}\n",
                fence.wrap("path", f)
            ));
        }
        (system, user)
    }

    /// Applies `patch` to `base` in a new worktree on `branch`; returns the worktree and the changed
    /// paths, or why the patch is refused (does not apply, changes nothing, touches what judges it;
    /// the worktree and branch are then removed).
    fn apply_patch(
        &self,
        repo: &Repo,
        branch: &str,
        base: &str,
        patch: &Patch,
    ) -> Result<Result<(Worktree, Vec<String>), String>, FixError> {
        let wt = Worktree::create(repo.root(), branch, base)?;
        let wt_path = wt.path();
        // Apply.
        let applied = match patch {
            Patch::Files(files) => files.iter().try_for_each(|(p, text)| {
                let rel = repo.relative(p).map_err(|e| e.to_string())?;
                let full = wt_path.join(rel);
                if let Some(dir) = full.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                std::fs::write(full, text).map_err(|e| e.to_string())
            }),
            Patch::Diff(diff) => {
                let f = wt_path.join(".fleetprof-fix.diff");
                std::fs::write(&f, diff)
                    .map_err(|e| e.to_string())
                    .and_then(|_| {
                        // Models miscount hunk lines and drop trailing blank context lines;
                        // `--recount` trusts the lines themselves, not the headers' counts.
                        let r = git(
                            &wt_path,
                            &[
                                "apply",
                                "--recount",
                                "--whitespace=nowarn",
                                ".fleetprof-fix.diff",
                            ],
                        )
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                        let _ = std::fs::remove_file(&f);
                        r
                    })
            }
        };
        if let Err(e) = applied {
            wt.discard();
            return Ok(Err(format!("the patch does not apply: {e}")));
        }
        let status = git(
            &wt_path,
            &["status", "--porcelain", "-z", "--untracked-files=all"],
        )?;
        if status.trim().is_empty() {
            wt.discard();
            return Ok(Err("the patch changes nothing".into()));
        }
        // Only source changes are judged: a patch that edits what judges it proves nothing.
        let changed = porcelain_z_paths(&status);
        if let Some((p, why)) = changed
            .iter()
            .find_map(|p| validate::protected_path(p).map(|why| (p, why)))
        {
            wt.discard();
            return Ok(Err(format!(
                "the patch touches {p}, {why}; fixes may change source code only"
            )));
        }
        Ok(Ok((wt, changed)))
    }

    /// Applies, validates and (if it passes) commits and publishes one patch.
    #[allow(clippy::too_many_arguments)]
    async fn try_patch(
        &self,
        t: &Target,
        patch: &Patch,
        skill: &str,
        produced_by: &str,
        what: &str,
        evidence: Vec<String>,
        added: &[String],
    ) -> Result<Result<Proposal, Attempt>, FixError> {
        let repo = self.repo()?.clone();
        let fail = |reason: String, checks: Vec<Check>| Attempt {
            skill: skill.to_string(),
            produced_by: produced_by.to_string(),
            reason,
            checks,
        };
        let prefix = if t.kind == SkillKind::Regression {
            "fix"
        } else {
            "opportunity"
        };
        let branch = format!("fleetprof/{prefix}-{}", sanitize_id(&t.id));
        let base = repo.git(&["rev-parse", "HEAD"])?.trim().to_string();
        let (wt, changed) = match self.apply_patch(&repo, &branch, &base, patch)? {
            Ok(x) => x,
            Err(reason) => return Ok(Err(fail(reason, vec![]))),
        };
        let wt_path = wt.path();
        // Build, test, re-profile: the commands as the base commit declares them. Without a
        // `fleetprof.toml` there is nothing to run: the proposal is a draft that says so.
        let cfg = ValidateConfig::load_at(repo.root(), &base)?;
        let draft = git(
            repo.root(),
            &["cat-file", "-e", &format!("{base}:fleetprof.toml")],
        )
        .is_err();
        let reprofiler = self.opts.reprofiler.clone();
        let function = t.function.clone();
        // A regression must come back near its baseline; an opportunity must shed most of its
        // current share (as if its baseline were zero). An unknown share cannot be compared.
        let shares = match t.shares {
            (Some(b), a) => Some((b, a)),
            (None, a) if t.kind == SkillKind::Opportunity && a > 0.0 => Some((0.0, a)),
            (None, _) => None,
        };
        // For a regression, the code before its root cause, to re-profile beside the fix.
        let before = match (&t.kind, &t.root_cause, &cfg.workload) {
            (SkillKind::Regression, Some(rc), Some(_)) => Worktree::create(
                repo.root(),
                &format!("fleetprof/baseline-{}", sanitize_id(&t.id)),
                &format!("{}^", rc.commit),
            )
            .ok(),
            _ => None,
        };
        // The regressed code (the base the patch applies to), re-profiled in the same rounds.
        let regressed = match (&shares, &cfg.workload, &reprofiler) {
            (Some(_), Some(_), Some(_)) => Worktree::create(
                repo.root(),
                &format!("fleetprof/regressed-{}", sanitize_id(&t.id)),
                &base,
            )
            .ok(),
            _ => None,
        };
        let dir = wt_path.clone();
        let before_dir = before.as_ref().map(Worktree::path);
        let regressed_dir = regressed.as_ref().map(Worktree::path);
        let checks = tokio::task::spawn_blocking(move || {
            validate::validate(
                &dir,
                &cfg,
                reprofiler.as_deref(),
                &function,
                shares,
                before_dir.as_deref(),
                regressed_dir.as_deref(),
            )
        })
        .await
        .unwrap_or_default();
        if let Some(before) = before {
            before.discard();
        }
        if let Some(regressed) = regressed {
            regressed.discard();
        }
        if let Some(bad) = checks.iter().find(|c| !c.passed) {
            let reason = format!(
                "{} failed: {}",
                bad.step,
                bad.detail.lines().last().unwrap_or("")
            );
            wt.discard();
            return Ok(Err(fail(reason, checks)));
        }
        // Commit.
        let short_fn = symbol_segments(&t.function)
            .last()
            .cloned()
            .unwrap_or_else(|| t.function.clone());
        let title = match &t.root_cause {
            Some(rc) => format!(
                "perf: fix-forward {} regression in {} from {}",
                short_fn,
                t.service,
                short(&rc.commit)
            ),
            None => format!("perf: {} in {} ({})", short_fn, t.service, skill),
        };
        let mut msg = format!("{title}\n\n{what}\n\n");
        if let (Some(b), a) = t.shares {
            msg.push_str(&format!(
                "{} went from {:.2}% to {:.2}% of {}'s CPU.\n",
                t.function,
                b * 100.0,
                a * 100.0,
                t.service
            ));
        }
        msg.push_str(&format!(
            "\nFleetprof-{}: {}\n",
            if t.kind == SkillKind::Regression {
                "Regression"
            } else {
                "Opportunity"
            },
            t.id
        ));
        if let Some(rc) = &t.root_cause {
            msg.push_str(&format!("Root-cause: {} ({})\n", rc.commit, rc.summary));
        }
        msg.push_str(&format!("Skill: {skill}\nProduced-by: {produced_by}\n"));
        // Only the patch's own paths: build outputs and whatever the commands wrote stay out.
        let mut add: Vec<&str> = vec!["add", "-A", "--"];
        add.extend(changed.iter().map(String::as_str));
        git(&wt_path, &add)?;
        let has_identity = git(&wt_path, &["config", "user.email"]).is_ok();
        let mut args: Vec<&str> = Vec::new();
        if !has_identity {
            args.extend([
                "-c",
                "user.name=fleetprof-agent",
                "-c",
                "user.email=fleetprof-agent@users.noreply.github.com",
            ]);
        }
        args.extend(["commit", "--quiet", "--no-verify", "-m", &msg]);
        git(&wt_path, &args)?;
        let commit = git(&wt_path, &["rev-parse", "HEAD"])?.trim().to_string();
        let patch_text = git(&wt_path, &["format-patch", "-1", "--stdout", "HEAD"])?;
        let stat = git(&wt_path, &["diff", "--stat", "HEAD~1", "HEAD"])?;
        drop(wt); // removes the worktree, keeps the branch
        // PR.md and the outbox.
        let evidence_lines: Vec<String> = added
            .iter()
            .filter(|l| !l.trim().is_empty())
            .take(20)
            .cloned()
            .collect();
        let reviewer = t
            .root_cause
            .as_ref()
            .and_then(|rc| self.opts.github.reviewer_login(rc));
        let statistic = checks
            .iter()
            .find(|c| c.step == "reprofile")
            .and_then(|c| c.statistic.clone());
        let ctx = pr::PrContext {
            title: title.clone(),
            kind: if t.kind == SkillKind::Regression {
                "regression"
            } else {
                "opportunity"
            },
            service: &t.service,
            function: &t.function,
            shares: t.shares,
            cost: t.cost,
            id: &t.id,
            root_cause: t.root_cause.as_ref(),
            evidence_lines,
            evidence,
            skill,
            produced_by: produced_by.to_string(),
            what: what.to_string(),
            checks: &checks,
            stat,
            draft,
            reviewer: reviewer.clone(),
            statistic,
        };
        let body = pr::render(&ctx);
        let dir = self.opts.outbox.join(branch.replace('/', "-"));
        let write = |p: PathBuf, text: &str| {
            std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(&p, text))
                .map_err(|source| FixError::Outbox { path: p, source })
        };
        write(dir.join("PR.md"), &body)?;
        write(dir.join("fix.patch"), &patch_text)?;
        let mut proposal = Proposal {
            id: t.id.clone(),
            branch: branch.clone(),
            commit,
            skill: skill.to_string(),
            produced_by: produced_by.to_string(),
            outbox_dir: dir.clone(),
            checks,
            pr_url: None,
            draft,
            reviewer: None,
        };
        if self.opts.push {
            let opened = pr::push_and_open(
                repo.root(),
                &self.opts.github,
                &branch,
                &title,
                &body,
                draft,
                reviewer.as_deref(),
            )
            .await
            .map_err(|source| FixError::Pr {
                branch: branch.clone(),
                outbox: dir.clone(),
                source,
            })?;
            proposal.pr_url = Some(opened.url);
            proposal.reviewer = opened.reviewer;
        }
        write(
            dir.join("proposal.json"),
            &serde_json::to_string_pretty(&proposal).unwrap_or_default(),
        )?;
        Ok(Ok(proposal))
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

fn recipe_name(spec: &RecipeSpec) -> String {
    match spec {
        RecipeSpec::Builtin(n) => n.clone(),
        RecipeSpec::Rewrite { .. } => "rewrite".into(),
    }
}

fn recipe_what(spec: &RecipeSpec, name: &str) -> String {
    match spec {
        RecipeSpec::Builtin(n) if n == "guard-logging" => format!(
            "Wraps the logging added to `{name}` (and the formatting that only feeds it) in a level check, so \
             the hot path does no formatting or I/O unless verbose logging is enabled. The log lines are kept."
        ),
        RecipeSpec::Builtin(n) if n == "memoize" => format!(
            "Caches `{name}`'s result per thread in a map keyed by its arguments (bounded at 4096 entries), \
             so repeated calls with the same arguments are a lookup; the original body is `{name}_uncached`."
        ),
        RecipeSpec::Builtin(n) if n == "hoist-regex" => format!(
            "Compiles the regex literal(s) in `{name}` once, in a `static LazyLock`, instead of on every call."
        ),
        _ => format!("Applies the skill's rewrite rules to `{name}`."),
    }
}

fn attempt(skill: &str, spec: &RecipeSpec, reason: String, checks: Vec<Check>) -> Attempt {
    Attempt {
        skill: skill.to_string(),
        produced_by: format!("recipe {}", recipe_name(spec)),
        reason,
        checks,
    }
}

/// The functions (as the parser sees them) that the root-cause commit's added lines fall in,
/// read from the repository's current files.
fn changed_functions(
    repo: &Repo,
    additions: &[FileAdditions],
) -> Vec<(String, functions::FunctionDef)> {
    let mut out: Vec<(String, functions::FunctionDef)> = Vec::new();
    for a in additions {
        let Some(language) = fleetprof_code::Language::of(&a.path) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(repo.root().join(&a.path)) else {
            continue;
        };
        let defs = functions::definitions(&text, language, "");
        for (line, _) in &a.lines {
            if let Some(d) = functions::innermost_at(&defs, *line as u32)
                && !out
                    .iter()
                    .any(|(p, o)| *p == a.path && o.item_start == d.item_start)
            {
                out.push((a.path.clone(), d.clone()));
            }
        }
    }
    out
}

/// The first ```diff (or ```patch) block of a model's answer.
pub fn extract_diff(answer: &str) -> Option<String> {
    for fence in ["```diff\n", "```patch\n", "```\ndiff --git"] {
        if let Some(start) = answer.find(fence) {
            let body_start = if fence.ends_with("diff --git") {
                start + 4
            } else {
                start + fence.len()
            };
            let rest = &answer[body_start..];
            let end = rest.find("\n```").map_or(rest.len(), |e| e + 1);
            let mut d = rest[..end].to_string();
            if !d.ends_with('\n') {
                d.push('\n');
            }
            return Some(d);
        }
    }
    None
}

/// Every path `git status --porcelain -z` names: each entry's path and, for a rename or copy, the
/// path it came from too (moving a protected file away touches it). NUL-separated and unquoted,
/// so no file name (`tests/a -> b.rs`, one with quotes) can pass for another.
fn porcelain_z_paths(status: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut entries = status.split('\0').filter(|e| !e.is_empty());
    while let Some(entry) = entries.next() {
        let (Some(code), Some(path)) = (entry.get(..2), entry.get(3..)) else {
            continue;
        };
        paths.push(path.to_owned());
        if code.contains(['R', 'C'])
            && let Some(from) = entries.next()
        {
            paths.push(from.to_owned());
        }
    }
    paths
}

#[cfg(test)]
mod tests;
