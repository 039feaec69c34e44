//! The model path as a coding agent: one conversation per fix, with tools scoped to a private
//! `git worktree` of the base commit.
//!
//! The model reads and searches the worktree, edits it with structured edits (replace one exact
//! snippet, insert lines at a line number — never a whole-file rewrite), and runs the repository's
//! own build, tests and re-profiling there, with the commands of the **base** commit's
//! `fleetprof.toml` and the same sandbox as validation ([`validate::run_command`]). The profile and
//! history tools of the [`ToolBox`] are offered beside them. When the conversation ends, the
//! worktree's diff is the candidate patch; the pipeline then validates it again from scratch in a
//! fresh worktree, so nothing the model did in its own worktree is trusted.
//!
//! Arguments are validated before anything runs: paths are repository-relative and stay inside the
//! worktree, edits to what judges a fix ([`validate::protected_path`]) are refused, edit sizes are
//! capped, and a snippet to replace must occur exactly once.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::validate::{self, Reprofiler, ValidateConfig, ValidateError, Worktree};
use crate::llm::{ToolExecutor, ToolSpec};
use crate::repo::{Repo, git};
use crate::tools::{self, ReadArgs, SearchArgs, ToolBox};

/// The largest text one edit may insert, bytes: a fix is small; a larger edit is a rewrite.
pub const MAX_EDIT_BYTES: usize = 16 * 1024;

/// Arguments of `replace_snippet`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceArgs {
    /// Repository-relative file path.
    pub path: String,
    /// The exact text to replace (whitespace included); it must occur exactly once in the file.
    pub old: String,
    /// The text to put in its place.
    pub new: String,
}

/// Arguments of `insert_lines`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InsertArgs {
    /// Repository-relative file path.
    pub path: String,
    /// The 1-based line the text is inserted before (the file's line count + 1 appends).
    pub line: usize,
    /// The lines to insert.
    pub text: String,
}

/// Arguments of tools that take none.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// What a session needs besides the tool box.
#[derive(Clone)]
pub struct SessionSpec {
    /// The repository the fix is for.
    pub repo: PathBuf,
    /// The base commit the worktree starts at (and whose `fleetprof.toml` gives the commands).
    pub base: String,
    /// A name for the session's branch (`fleetprof/session-<id>`), removed at the end.
    pub id: String,
    /// The function the fix is about (for re-profiling).
    pub function: String,
    /// Baseline and regressed shares, when known (for re-profiling).
    pub shares: Option<(f64, f64)>,
    /// The re-profiling hook, if any.
    pub reprofiler: Option<Arc<dyn Reprofiler>>,
    /// When the conversation's wall-time budget ends: commands are cut off there.
    pub deadline: Instant,
}

/// A fix conversation's worktree and tools.
pub struct FixSession {
    tools: ToolBox,
    wt: Worktree,
    tree: Repo,
    cfg: ValidateConfig,
    spec: SessionSpec,
    edits: Mutex<usize>,
}

impl std::fmt::Debug for FixSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixSession")
            .field("worktree", &self.wt.path())
            .field("base", &self.spec.base)
            .finish()
    }
}

/// The [`ToolBox`] tools a session offers unchanged: profiles, regressions, history, skills.
const PROFILE_TOOLS: &[&str] = &[
    "top_functions",
    "function_history",
    "stacks_through",
    "diff_profiles",
    "list_regressions",
    "get_regression",
    "list_changes",
    "show_change",
    "list_skills",
    "get_skill",
    "sql",
];

fn spec<T: JsonSchema>(name: &str, description: &str) -> ToolSpec {
    let schema = schemars::schema_for!(T);
    let mut v = match serde_json::to_value(schema) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    v.remove("$schema");
    v.remove("title");
    v.entry("type")
        .or_insert_with(|| Value::String("object".into()));
    v.entry("properties")
        .or_insert_with(|| Value::Object(Default::default()));
    ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters: Value::Object(v),
    }
}

fn parse<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, String> {
    let args = if args.is_null() {
        Value::Object(Default::default())
    } else {
        args
    };
    serde_json::from_value(args).map_err(|e| format!("bad arguments for {tool}: {e}"))
}

impl FixSession {
    /// Opens a session: a worktree of `spec.base` on branch `fleetprof/session-<id>`, and the base
    /// commit's validation commands.
    pub fn open(tools: ToolBox, spec: SessionSpec) -> Result<FixSession, ValidateError> {
        let cfg = ValidateConfig::load_at(&spec.repo, &spec.base)?;
        let branch = format!("fleetprof/session-{}", super::sanitize_id(&spec.id));
        let wt = Worktree::create(&spec.repo, &branch, &spec.base)?;
        let tree = Repo::new(wt.path());
        Ok(FixSession {
            tools,
            wt,
            tree,
            cfg,
            spec,
            edits: Mutex::new(0),
        })
    }

    /// The worktree's directory.
    pub fn path(&self) -> PathBuf {
        self.wt.path()
    }

    /// How many edits the model made.
    pub fn edits(&self) -> usize {
        *self.edits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worktree's changes against the base, as a unified diff (empty when nothing changed).
    pub fn diff(&self) -> String {
        git(&self.wt.path(), &["diff", "--no-color", "--no-ext-diff"]).unwrap_or_default()
    }

    /// Removes the worktree and its branch.
    pub fn close(self) {
        self.wt.discard();
    }

    fn remaining(&self) -> Duration {
        self.spec.deadline.saturating_duration_since(Instant::now())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs).min(self.remaining())
    }

    /// An editable file: relative, inside the worktree, tracked or at least existing, and not
    /// something that judges a fix.
    fn editable(&self, path: &str) -> Result<PathBuf, String> {
        if let Some(why) = validate::protected_path(path.trim_start_matches("./")) {
            return Err(format!(
                "{path} may not be edited: it is {why}; fixes may change source code only"
            ));
        }
        self.tree.resolve(path).map_err(|e| e.to_string())
    }

    fn edited(&self, path: &str) -> String {
        *self.edits.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let d = git(
            &self.wt.path(),
            &["diff", "--no-color", "--stat", "--", path],
        )
        .unwrap_or_default();
        format!("edited {path}: {}", d.trim())
    }

    fn replace(&self, a: ReplaceArgs) -> Result<String, String> {
        let full = self.editable(&a.path)?;
        if a.old.is_empty() {
            return Err("`old` is empty; use insert_lines to add text".into());
        }
        if a.new.len() > MAX_EDIT_BYTES {
            return Err(format!(
                "`new` is {} bytes, more than the {MAX_EDIT_BYTES} one edit may insert; make smaller edits",
                a.new.len()
            ));
        }
        let text = std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", a.path))?;
        match text.matches(&a.old).count() {
            0 => Err(format!(
                "`old` does not occur in {}; read_code the exact lines (whitespace included) first",
                a.path
            )),
            1 => {
                std::fs::write(&full, text.replacen(&a.old, &a.new, 1))
                    .map_err(|e| format!("{}: {e}", a.path))?;
                Ok(self.edited(&a.path))
            }
            n => Err(format!(
                "`old` occurs {n} times in {}; include more surrounding lines so it is unique",
                a.path
            )),
        }
    }

    fn insert(&self, a: InsertArgs) -> Result<String, String> {
        let full = self.editable(&a.path)?;
        if a.text.len() > MAX_EDIT_BYTES {
            return Err(format!(
                "`text` is {} bytes, more than the {MAX_EDIT_BYTES} one edit may insert",
                a.text.len()
            ));
        }
        let text = std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", a.path))?;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        if a.line == 0 || a.line > lines.len() + 1 {
            return Err(format!(
                "line {} is outside {} (1..={})",
                a.line,
                a.path,
                lines.len() + 1
            ));
        }
        let mut ins = a.text.clone();
        if !ins.ends_with('\n') {
            ins.push('\n');
        }
        let mut out = String::with_capacity(text.len() + ins.len());
        for (i, l) in lines.iter().enumerate() {
            if i + 1 == a.line {
                out.push_str(&ins);
            }
            out.push_str(l);
        }
        if a.line == lines.len() + 1 {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&ins);
        }
        std::fs::write(&full, out).map_err(|e| format!("{}: {e}", a.path))?;
        Ok(self.edited(&a.path))
    }

    async fn command(&self, step: &'static str) -> Result<String, String> {
        let cmd = match step {
            "build" => self.cfg.build.clone(),
            _ => self.cfg.test.clone(),
        };
        let Some(cmd) = cmd else {
            return Ok(format!(
                "the repository's fleetprof.toml declares no {step} command; nothing ran"
            ));
        };
        let timeout = self.timeout();
        if timeout.is_zero() {
            return Err("the wall-time budget is spent".into());
        }
        let dir = self.wt.path();
        let c =
            tokio::task::spawn_blocking(move || validate::run_command(step, &cmd, &dir, timeout))
                .await
                .map_err(|e| format!("{step} did not finish: {e}"))?;
        let mut detail = c.detail;
        crate::repo::truncate(&mut detail, 8000);
        Ok(format!(
            "{step} `{}` {} in {:.1}s\n{detail}",
            c.command,
            if c.passed { "passed" } else { "FAILED" },
            c.seconds
        ))
    }

    async fn reprofile(&self) -> Result<String, String> {
        let (Some(workload), Some(r)) = (self.cfg.workload.clone(), self.spec.reprofiler.clone())
        else {
            return Ok("re-profiling is not available here (no workload in fleetprof.toml or no profiler hook); the pipeline re-profiles when it can".into());
        };
        let build = self.command("build").await?;
        if build.contains(" FAILED in ") {
            return Ok(format!("not re-profiled, the build failed:\n{build}"));
        }
        let dir = self.wt.path();
        let function = self.spec.function.clone();
        let share = tokio::task::spawn_blocking(move || r.share(&dir, &workload, &function))
            .await
            .map_err(|e| format!("re-profiling did not finish: {e}"))??;
        Ok(match self.spec.shares {
            Some((b, a)) => format!(
                "{}: {:.2}% of the workload's CPU with your change (production: {:.2}% before the regression, {:.2}% after)",
                self.spec.function,
                share * 100.0,
                b * 100.0,
                a * 100.0
            ),
            None => format!(
                "{}: {:.2}% of the workload's CPU with your change",
                self.spec.function,
                share * 100.0
            ),
        })
    }
}

impl ToolExecutor for FixSession {
    fn specs(&self) -> Vec<ToolSpec> {
        let mut v = vec![
            spec::<ReadArgs>(
                "read_code",
                "Read a file of your worktree (the base commit plus your edits), a line range at a \
                 time; lines are numbered.",
            ),
            spec::<SearchArgs>(
                "search_code",
                "Search your worktree's files for lines matching a regular expression; returns \
                 path, line number and text.",
            ),
            spec::<ReplaceArgs>(
                "replace_snippet",
                "Edit a file: replace one exact snippet (it must occur exactly once; whitespace \
                 counts) with new text. Source files only: fleetprof.toml, CI, build scripts and \
                 tests may not be edited.",
            ),
            spec::<InsertArgs>(
                "insert_lines",
                "Edit a file: insert lines before a 1-based line number (line count + 1 appends).",
            ),
            spec::<NoArgs>(
                "show_diff",
                "Your changes so far, as a unified diff against the base commit.",
            ),
            spec::<NoArgs>(
                "build",
                "Run the repository's build command (from the base commit's fleetprof.toml) in \
                 your worktree; returns pass/fail and the output's tail.",
            ),
            spec::<NoArgs>(
                "run_tests",
                "Run the repository's test command in your worktree; returns pass/fail and the \
                 output's tail.",
            ),
            spec::<NoArgs>(
                "reprofile",
                "Build and run the repository's workload under the profiler and report the \
                 function's share of CPU with your change.",
            ),
        ];
        v.extend(
            crate::llm::tool_specs(&self.tools)
                .into_iter()
                .filter(|s| PROFILE_TOOLS.contains(&s.name.as_str())),
        );
        v
    }

    fn execute<'a>(
        &'a self,
        name: &'a str,
        args: Value,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            tracing::debug!(tool = name, "FixSession.execute");
            match name {
                "read_code" => {
                    let a: ReadArgs = parse(name, args)?;
                    tools::read_code(&self.tree, &a).map_err(|e| e.to_string())
                }
                "search_code" => {
                    let a: SearchArgs = parse(name, args)?;
                    tools::search_code(&self.tree, &a).map_err(|e| e.to_string())
                }
                "replace_snippet" => self.replace(parse(name, args)?),
                "insert_lines" => self.insert(parse(name, args)?),
                "show_diff" => {
                    let _: NoArgs = parse(name, args)?;
                    let d = self.diff();
                    Ok(if d.is_empty() {
                        "no changes yet".into()
                    } else {
                        d
                    })
                }
                "build" => {
                    let _: NoArgs = parse(name, args)?;
                    self.command("build").await
                }
                "run_tests" => {
                    let _: NoArgs = parse(name, args)?;
                    self.command("test").await
                }
                "reprofile" => {
                    let _: NoArgs = parse(name, args)?;
                    self.reprofile().await
                }
                n if PROFILE_TOOLS.contains(&n) => {
                    self.tools.call(n, args).await.map_err(|e| e.to_string())
                }
                other => Err(format!(
                    "unknown tool {other:?}; call one of the listed tools"
                )),
            }
        })
    }
}
