//! The fix pipeline: gather context → choose skills → produce a patch (a skill's recipe, or a model
//! with tool calls) → validate it in a separate `git worktree` → branch, commit, `PR.md` in the outbox
//! (→ with `push`, a GitHub pull request). A patch that fails validation is never proposed.
//!
//! Defense ([`Fixer::fix_regression`]) and offense ([`crate::opportunities`]) share [`Fixer::propose`].

mod hoist;
mod logging;
pub mod pr;
pub mod recipes;
mod span;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::llm::{ChatModel, LlmError, LoopLimits, run_tool_loop};
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
    #[error(transparent)]
    Pr(#[from] pr::PrError),
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
}

impl std::fmt::Debug for FixOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixOptions")
            .field("outbox", &self.outbox)
            .field("push", &self.push)
            .field("model", &self.model.as_ref().map(|m| m.describe()))
            .field("reprofiler", &self.reprofiler.is_some())
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
                crate::source::TimeRange {
                    start: reg.detected_at,
                    end: i64::MAX,
                },
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
        self.propose(&target).await
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
        // 2. The model, with the tools and the matched skills' instructions.
        if let Some(model) = &self.opts.model {
            let skill = matches
                .first()
                .map_or("triage-regression", |m| m.skill.name.as_str())
                .to_string();
            let mut feedback = String::new();
            for _ in 0..2 {
                let (system, user) = self.prompt(t, file.as_deref(), &matches, &feedback);
                let produced_by = format!("model {}", model.describe());
                let out = match run_tool_loop(
                    model.as_ref(),
                    &self.tools,
                    &system,
                    &user,
                    self.opts.limits,
                )
                .await
                {
                    Ok(o) => o,
                    Err(e @ (LlmError::BudgetExhausted { .. } | LlmError::TooManyTurns(_))) => {
                        attempts.push(Attempt {
                            skill: skill.clone(),
                            produced_by,
                            reason: e.to_string(),
                            checks: vec![],
                        });
                        break;
                    }
                    Err(e) => {
                        attempts.push(Attempt {
                            skill: skill.clone(),
                            produced_by,
                            reason: e.to_string(),
                            checks: vec![],
                        });
                        break;
                    }
                };
                let Some(diff) = extract_diff(&out.answer) else {
                    attempts.push(Attempt {
                        skill: skill.clone(),
                        produced_by,
                        reason: "the model's answer had no ```diff block".into(),
                        checks: vec![],
                    });
                    feedback = "Your answer had no ```diff block. Answer with the fix as a unified diff in a ```diff block.".into();
                    continue;
                };
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
                let added = file.as_deref().map(added_in).unwrap_or_default();
                match self
                    .try_patch(
                        t,
                        &Patch::Diff(diff),
                        &skill,
                        &produced_by,
                        &what,
                        vec![],
                        &added,
                    )
                    .await?
                {
                    Ok(p) => return Ok(FixOutcome::Proposed(p)),
                    Err(a) => {
                        feedback = format!(
                            "Your previous patch was rejected: {}\n{}",
                            a.reason,
                            a.checks
                                .iter()
                                .filter(|c| !c.passed)
                                .map(|c| c.detail.clone())
                                .collect::<Vec<_>>()
                                .join("\n")
                        );
                        attempts.push(a);
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

    fn prompt(
        &self,
        t: &Target,
        file: Option<&str>,
        matches: &[crate::skills::SkillMatch<'_>],
        feedback: &str,
    ) -> (String, String) {
        let mut system = String::from(
            "You are fleetprof's fix-forward agent. A production CPU profile shows a function got more \
             expensive (or is an efficiency opportunity). Use the tools to read the evidence and the code, \
             then write the smallest change that removes the cost while keeping the intent of the code. \
             Your final answer must contain exactly one unified diff (paths relative to the repository \
             root, with a/ and b/ prefixes) in a ```diff block, followed by one short paragraph saying \
             what the fix does. The diff is applied with `git apply` and must build and pass the tests.\n\n",
        );
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
            user.push_str(&format!(
                "Root-cause candidate: commit {} by {}: {} (read it with show_change).\n",
                rc.commit, rc.author, rc.summary
            ));
        }
        if let Some(f) = file {
            user.push_str(&format!("The function is defined in `{f}`.\n"));
        }
        if !feedback.is_empty() {
            user.push_str(&format!("\n{feedback}\n"));
        }
        (system, user)
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
        let wt = Worktree::create(repo.root(), &branch, &base)?;
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
            return Ok(Err(fail(format!("the patch does not apply: {e}"), vec![])));
        }
        let status = git(
            &wt_path,
            &["status", "--porcelain", "--untracked-files=all"],
        )?;
        if status.trim().is_empty() {
            wt.discard();
            return Ok(Err(fail("the patch changes nothing".into(), vec![])));
        }
        // Only source changes are judged: a patch that edits what judges it proves nothing.
        let changed: Vec<String> = status
            .lines()
            .filter_map(|l| l.get(3..))
            .map(|p| {
                p.rsplit(" -> ")
                    .next()
                    .unwrap_or(p)
                    .trim_matches('"')
                    .to_string()
            })
            .collect();
        if let Some((p, why)) = changed
            .iter()
            .find_map(|p| validate::protected_path(p).map(|why| (p, why)))
        {
            wt.discard();
            return Ok(Err(fail(
                format!("the patch touches {p}, {why}; fixes may change source code only"),
                vec![],
            )));
        }
        // Build, test, re-profile: the commands as the base commit declares them.
        let cfg = ValidateConfig::load_at(repo.root(), &base)?;
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
        let dir = wt_path.clone();
        let before_dir = before.as_ref().map(Worktree::path);
        let checks = tokio::task::spawn_blocking(move || {
            validate::validate(
                &dir,
                &cfg,
                reprofiler.as_deref(),
                &function,
                shares,
                before_dir.as_deref(),
            )
        })
        .await
        .unwrap_or_default();
        if let Some(before) = before {
            before.discard();
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
        };
        if self.opts.push {
            proposal.pr_url = Some(pr::push_and_open(repo.root(), &branch, &title, &body).await?);
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

#[cfg(test)]
mod tests;
