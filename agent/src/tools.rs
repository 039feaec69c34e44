//! The agent's tools: definitions (name, description written for a model, JSON schema) and execution.
//!
//! One [`ToolBox`] serves both the MCP server ([`crate::mcp`]) and the model's tool-calling loop
//! ([`crate::llm::run_tool_loop`]). Arguments are checked against their Rust types; a bad argument is a
//! [`ToolError::BadArguments`] saying what was wrong, never a panic.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::repo::{Repo, RepoError};
use crate::skills::{SkillKind, SkillSet};
use crate::source::{ProfileSource, SourceError, Window};
use crate::sql::{ReadOnlySql, SqlError};

/// What can go wrong calling a tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No tool has this name.
    #[error("unknown tool {0:?}; call one of the listed tools")]
    UnknownTool(String),
    /// The arguments do not fit the tool's schema.
    #[error("bad arguments for {tool}: {message}")]
    BadArguments {
        /// The tool.
        tool: String,
        /// What was wrong.
        message: String,
    },
    /// The profile source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The repository could not answer.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The SQL was rejected or failed.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// A repository tool was called but no repository is configured.
    #[error("no repository is configured (pass --repo PATH)")]
    NoRepo,
    /// SQL was asked for but no ClickHouse is configured.
    #[error("no ClickHouse is configured for SQL (pass --clickhouse-url)")]
    NoSql,
    /// No skill has this name.
    #[error("no skill named {0:?}; list_skills shows the names")]
    NoSuchSkill(String),
}

/// A tool's definition as shown to MCP clients and models.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// The tool's name.
    pub name: &'static str,
    /// What it does, when to use it, what it returns.
    pub description: &'static str,
    /// JSON Schema of its arguments (an object schema).
    pub input_schema: serde_json::Map<String, Value>,
}

fn schema_of<T: JsonSchema>() -> serde_json::Map<String, Value> {
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
    v
}

/// Arguments of `top_functions`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopArgs {
    /// The service name.
    pub service: String,
    /// Window start as a duration ago (`30m`, `2h`, `1d`) or Unix seconds. Default `1h`.
    pub since: Option<String>,
    /// Window end as a duration ago or Unix seconds. Default now.
    pub until: Option<String>,
    /// Maximum functions to return. Default 20, at most 200.
    pub limit: Option<usize>,
}

/// Arguments of `function_history`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    /// The service name.
    pub service: String,
    /// The function's symbol, as shown by top_functions.
    pub function: String,
    /// Window start (duration ago or Unix seconds). Default `7d`.
    pub since: Option<String>,
    /// Window end. Default now.
    pub until: Option<String>,
    /// Bucket size as a duration (`10m`, `1h`). Default `1h`.
    pub step: Option<String>,
}

/// Arguments of `stacks_through`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StacksArgs {
    /// The service name.
    pub service: String,
    /// The function's symbol.
    pub function: String,
    /// Window start. Default `1h`.
    pub since: Option<String>,
    /// Window end. Default now.
    pub until: Option<String>,
    /// Maximum stacks. Default 10, at most 100.
    pub limit: Option<usize>,
}

/// Arguments of `diff_profiles`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffArgs {
    /// The service name.
    pub service: String,
    /// Baseline window start (duration ago or Unix seconds), e.g. `2d`.
    pub baseline_since: String,
    /// Baseline window end, e.g. `1d`.
    pub baseline_until: String,
    /// Compared window start. Default `1h`.
    pub since: Option<String>,
    /// Compared window end. Default now.
    pub until: Option<String>,
    /// Maximum functions. Default 20, at most 200.
    pub limit: Option<usize>,
}

/// Arguments of `list_regressions`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRegressionsArgs {
    /// Only this service, if given.
    pub service: Option<String>,
    /// Maximum regressions. Default 20.
    pub limit: Option<usize>,
}

/// Arguments of `get_regression`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// The regression id.
    pub id: String,
}

/// Arguments of `list_changes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesArgs {
    /// Only commits after this git date (`2 days ago`, `2025-01-31`).
    pub since: Option<String>,
    /// Only commits touching this repository-relative path.
    pub path: Option<String>,
    /// Maximum commits. Default 20, at most 200.
    pub limit: Option<usize>,
}

/// Arguments of `show_change`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowChangeArgs {
    /// Commit id or ref.
    pub commit: String,
}

/// Arguments of `search_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// A regular expression (Rust regex syntax) matched against each line.
    pub pattern: String,
    /// Only files whose repository-relative path contains this text (e.g. `src/` or `.rs`).
    pub path_contains: Option<String>,
    /// Maximum matching lines. Default 50, at most 500.
    pub max_results: Option<usize>,
}

/// Arguments of `read_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// Repository-relative file path.
    pub path: String,
    /// First line, 1-based. Default 1.
    pub start_line: Option<usize>,
    /// Last line, inclusive. Default start_line + 199.
    pub end_line: Option<usize>,
}

/// `search_code` over `repo`: `path:line: text` per matching line, or a sentence saying none
/// matched. Shared by the MCP tools and the fix session's worktree.
pub fn search_code(repo: &Repo, a: &SearchArgs) -> Result<String, RepoError> {
    let max = a.max_results.unwrap_or(50).clamp(1, 500);
    let hits = repo.search(&a.pattern, a.path_contains.as_deref(), max)?;
    if hits.is_empty() {
        return Ok(format!("no lines match /{}/", a.pattern));
    }
    Ok(hits
        .iter()
        .map(|h| format!("{}:{}: {}\n", h.path, h.line, h.text))
        .collect())
}

/// `read_code` over `repo`: a numbered line range of one file.
pub fn read_code(repo: &Repo, a: &ReadArgs) -> Result<String, RepoError> {
    repo.read(&a.path, a.start_line.unwrap_or(1), a.end_line)
}

/// Arguments of `list_skills`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSkillsArgs {
    /// Only skills for `regression` or `opportunity`.
    pub applies_to: Option<SkillKind>,
}

/// Arguments of `get_skill`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetSkillArgs {
    /// The skill's name.
    pub name: String,
}

/// Arguments of `sql`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlArgs {
    /// One read-only ClickHouse statement (SELECT/SHOW/DESCRIBE/EXPLAIN), no `;` inside.
    pub query: String,
}

/// The tools and what they need: a profile source, a repository, skills, read-only SQL.
#[derive(Clone)]
pub struct ToolBox {
    source: Arc<dyn ProfileSource>,
    repo: Option<Repo>,
    skills: SkillSet,
    sql: Option<ReadOnlySql>,
}

impl std::fmt::Debug for ToolBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolBox")
            .field("repo", &self.repo)
            .field("skills", &self.skills.all().len())
            .field("sql", &self.sql.as_ref().map(|s| &s.url))
            .finish()
    }
}

/// Parses `30m`, `2h`, `1d`, `90s`, `1w` (or a bare number of seconds) into seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m, 2h, 1d"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use s, m, h, d, w)"
            ));
        }
    };
    Ok(n * mult)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A point in time: Unix seconds (≥ 10^9) or a duration ago.
fn parse_instant(s: &str, now: i64) -> Result<i64, String> {
    if let Ok(n) = s.trim().parse::<i64>()
        && n >= 1_000_000_000
    {
        return Ok(n);
    }
    Ok(now - parse_duration(s)?)
}

/// A range from optional `since`/`until` strings with a default `since`.
pub fn parse_range(
    since: Option<&str>,
    until: Option<&str>,
    default_since: &str,
) -> Result<Window, String> {
    let now = now();
    let start = parse_instant(since.unwrap_or(default_since), now)?;
    let end = match until {
        Some(u) => parse_instant(u, now)?,
        None => now,
    };
    if start >= end {
        return Err(format!(
            "the window is empty: since ({start}) must be before until ({end})"
        ));
    }
    Ok(Window::clamped(start, end))
}

impl ToolBox {
    /// A tool box over `source`, with `skills`; add a repository and SQL with the `with_*` methods.
    pub fn new(source: Arc<dyn ProfileSource>, skills: SkillSet) -> ToolBox {
        ToolBox {
            source,
            repo: None,
            skills,
            sql: None,
        }
    }

    /// Serves the repository tools from `repo`.
    pub fn with_repo(mut self, repo: Repo) -> ToolBox {
        self.repo = Some(repo);
        self
    }

    /// Serves the `sql` tool through `sql`.
    pub fn with_sql(mut self, sql: ReadOnlySql) -> ToolBox {
        self.sql = Some(sql);
        self
    }

    /// The skills.
    pub fn skills(&self) -> &SkillSet {
        &self.skills
    }

    /// The profile source.
    pub fn source(&self) -> &Arc<dyn ProfileSource> {
        &self.source
    }

    /// The repository, if configured.
    pub fn repo(&self) -> Option<&Repo> {
        self.repo.as_ref()
    }

    /// All tool definitions.
    pub fn definitions(&self) -> Vec<ToolDef> {
        vec![
            ToolDef {
                name: "top_functions",
                description: "The hottest functions of a service in a time window, by share of the \
                    service's CPU samples (total = on the stack anywhere, self = leaf). Start here to see \
                    where a service spends CPU.",
                input_schema: schema_of::<TopArgs>(),
            },
            ToolDef {
                name: "function_history",
                description: "One function's share of a service's CPU over time, in buckets, with the \
                    service version seen in each bucket. Use it to confirm a regression is a lasting \
                    step at a deploy rather than a spike.",
                input_schema: schema_of::<HistoryArgs>(),
            },
            ToolDef {
                name: "stacks_through",
                description: "The heaviest call stacks (root first) that pass through a function, with \
                    sample counts. Use it to see who calls the function and what it calls.",
                input_schema: schema_of::<StacksArgs>(),
            },
            ToolDef {
                name: "diff_profiles",
                description: "Functions whose CPU share changed most between a baseline window and a \
                    later window of the same service. Use it to check whether cost moved between \
                    functions (a cost shift) or grew.",
                input_schema: schema_of::<DiffArgs>(),
            },
            ToolDef {
                name: "list_regressions",
                description: "Detected performance regressions, newest first: id, service, function, \
                    share before and after, and the top root-cause candidate commits.",
                input_schema: schema_of::<ListRegressionsArgs>(),
            },
            ToolDef {
                name: "get_regression",
                description: "One regression by id with all its ranked root-cause candidates (commit, \
                    author, score, evidence).",
                input_schema: schema_of::<IdArgs>(),
            },
            ToolDef {
                name: "list_changes",
                description: "Recent commits of the repository (id, author, time, subject), newest first, \
                    optionally only those touching a path.",
                input_schema: schema_of::<ChangesArgs>(),
            },
            ToolDef {
                name: "show_change",
                description: "A commit's message, changed files and full patch (git show). Use it on a \
                    root-cause candidate to see the added lines.",
                input_schema: schema_of::<ShowChangeArgs>(),
            },
            ToolDef {
                name: "search_code",
                description: "Search the repository's files for lines matching a regular expression; \
                    returns path, line number and text. Use it to find a function's definition \
                    (e.g. pattern `fn checksum\\b`) or its callers.",
                input_schema: schema_of::<SearchArgs>(),
            },
            ToolDef {
                name: "read_code",
                description: "Read a file of the repository, a line range at a time (lines are \
                    numbered). Use it after search_code to read a whole function.",
                input_schema: schema_of::<ReadArgs>(),
            },
            ToolDef {
                name: "list_skills",
                description: "The fix and optimization skills available (name, description, whether it \
                    applies to regressions or opportunities, its deterministic recipe if any).",
                input_schema: schema_of::<ListSkillsArgs>(),
            },
            ToolDef {
                name: "get_skill",
                description: "A skill's full instructions and worked example. Read the skill that fits \
                    before writing a fix.",
                input_schema: schema_of::<GetSkillArgs>(),
            },
            ToolDef {
                name: "sql",
                description: "Run one read-only ClickHouse SQL statement over the profile tables \
                    (SELECT/SHOW/DESCRIBE/EXPLAIN, no `;` inside). Results are tab-separated with a header, \
                    capped in rows and time. Use it when the other tools cannot answer.",
                input_schema: schema_of::<SqlArgs>(),
            },
        ]
    }

    /// Runs the tool `name` with JSON `args` and returns its text output.
    pub async fn call(&self, name: &str, args: Value) -> Result<String, ToolError> {
        let args = if args.is_null() {
            Value::Object(Default::default())
        } else {
            args
        };
        match name {
            "top_functions" => {
                let a: TopArgs = parse(name, args)?;
                let r = range(name, a.since.as_deref(), a.until.as_deref(), "1h")?;
                json(
                    self.source
                        .top_functions(&a.service, r, a.limit.unwrap_or(20).min(200))
                        .await?,
                )
            }
            "function_history" => {
                let a: HistoryArgs = parse(name, args)?;
                let r = range(name, a.since.as_deref(), a.until.as_deref(), "7d")?;
                let step =
                    parse_duration(a.step.as_deref().unwrap_or("1h")).map_err(|m| bad(name, m))?;
                if step <= 0 {
                    return Err(bad(name, "step must be positive".into()));
                }
                json(
                    self.source
                        .function_history(&a.service, &a.function, r, step as u64)
                        .await?,
                )
            }
            "stacks_through" => {
                let a: StacksArgs = parse(name, args)?;
                let r = range(name, a.since.as_deref(), a.until.as_deref(), "1h")?;
                let limit = a.limit.unwrap_or(10).min(100);
                json(
                    self.source
                        .stacks_through(&a.service, &a.function, r, limit)
                        .await?,
                )
            }
            "diff_profiles" => {
                let a: DiffArgs = parse(name, args)?;
                let base = range(name, Some(&a.baseline_since), Some(&a.baseline_until), "")?;
                let r = range(name, a.since.as_deref(), a.until.as_deref(), "1h")?;
                json(
                    self.source
                        .diff(&a.service, base, r, a.limit.unwrap_or(20).min(200))
                        .await?,
                )
            }
            "list_regressions" => {
                let a: ListRegressionsArgs = parse(name, args)?;
                json(
                    self.source
                        .regressions(a.service.as_deref(), a.limit.unwrap_or(20))
                        .await?,
                )
            }
            "get_regression" => {
                let a: IdArgs = parse(name, args)?;
                json(self.source.regression(&a.id).await?)
            }
            "list_changes" => {
                let a: ChangesArgs = parse(name, args)?;
                let repo = self.repo.as_ref().ok_or(ToolError::NoRepo)?;
                json(repo.changes(
                    a.since.as_deref(),
                    a.path.as_deref(),
                    a.limit.unwrap_or(20).min(200),
                )?)
            }
            "show_change" => {
                let a: ShowChangeArgs = parse(name, args)?;
                let repo = self.repo.as_ref().ok_or(ToolError::NoRepo)?;
                Ok(repo.show(&a.commit, 48 * 1024)?)
            }
            "search_code" => {
                let a: SearchArgs = parse(name, args)?;
                let repo = self.repo.as_ref().ok_or(ToolError::NoRepo)?;
                Ok(search_code(repo, &a)?)
            }
            "read_code" => {
                let a: ReadArgs = parse(name, args)?;
                let repo = self.repo.as_ref().ok_or(ToolError::NoRepo)?;
                Ok(read_code(repo, &a)?)
            }
            "list_skills" => {
                let a: ListSkillsArgs = parse(name, args)?;
                let v: Vec<_> = self
                    .skills
                    .all()
                    .iter()
                    .filter(|s| a.applies_to.is_none_or(|k| s.applies_to.contains(&k)))
                    .map(|s| s.summary())
                    .collect();
                json(v)
            }
            "get_skill" => {
                let a: GetSkillArgs = parse(name, args)?;
                let s = self
                    .skills
                    .get(&a.name)
                    .ok_or_else(|| ToolError::NoSuchSkill(a.name.clone()))?;
                Ok(s.render())
            }
            "sql" => {
                let a: SqlArgs = parse(name, args)?;
                // Check first, so a bad query says why even without a configured ClickHouse.
                ReadOnlySql::check(&a.query)?;
                let sql = self.sql.as_ref().ok_or(ToolError::NoSql)?;
                Ok(sql.query(&a.query).await?)
            }
            other => Err(ToolError::UnknownTool(other.to_string())),
        }
    }
}

fn bad(tool: &str, message: String) -> ToolError {
    ToolError::BadArguments {
        tool: tool.to_string(),
        message,
    }
}

fn parse<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, ToolError> {
    serde_json::from_value(args).map_err(|e| bad(tool, e.to_string()))
}

fn range(
    tool: &str,
    since: Option<&str>,
    until: Option<&str>,
    default_since: &str,
) -> Result<Window, ToolError> {
    parse_range(since, until, default_since).map_err(|m| bad(tool, m))
}

fn json<T: serde::Serialize>(v: T) -> Result<String, ToolError> {
    Ok(
        serde_json::to_string_pretty(&v)
            .unwrap_or_else(|e| format!("(unserializable result: {e})")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Regression, StaticSource};
    use serde_json::json;

    fn toolbox() -> ToolBox {
        let src = StaticSource {
            regressions: vec![Regression {
                id: "r1".into(),
                service: "demo".into(),
                function: "demo::checksum".into(),
                baseline_share: 0.1,
                current_share: 0.3,
                detected_at: 0,
                version_before: None,
                version_after: None,
                candidates: vec![],
                members: vec![],
                cost: Default::default(),
            }],
            ..Default::default()
        };
        let skills =
            SkillSet::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills"))
                .unwrap();
        ToolBox::new(Arc::new(src), skills)
    }

    /// Every tool has an object schema and a description; names are unique.
    #[test]
    fn definitions_are_complete() {
        let defs = toolbox().definitions();
        let mut names: Vec<_> = defs.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), defs.len());
        for d in &defs {
            assert_eq!(d.input_schema["type"], "object", "{}", d.name);
            assert!(d.description.len() > 40, "{}", d.name);
        }
        let top = defs.iter().find(|d| d.name == "top_functions").unwrap();
        assert_eq!(top.input_schema["required"], json!(["service"]));
    }

    /// Bad arguments, unknown tools and missing configuration are errors that say what is wrong.
    #[tokio::test]
    async fn bad_calls_are_errors() {
        let tb = toolbox();
        let e = tb
            .call("get_regression", json!({"idd": "x"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::BadArguments { .. }), "{e}");
        let e = tb
            .call(
                "top_functions",
                json!({"service": "s", "since": "5 parsecs"}),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("parsecs"), "{e}");
        assert!(matches!(
            tb.call("nope", json!({})).await,
            Err(ToolError::UnknownTool(_))
        ));
        assert!(matches!(
            tb.call("read_code", json!({"path": "a"})).await,
            Err(ToolError::NoRepo)
        ));
        let e = tb
            .call("sql", json!({"query": "select 1; drop table x"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::Sql(SqlError::Rejected(_))), "{e}");
        assert!(matches!(
            tb.call("sql", json!({"query": "select 1"})).await,
            Err(ToolError::NoSql)
        ));
    }

    /// Regression and skill tools return the data.
    #[tokio::test]
    async fn data_tools() {
        let tb = toolbox();
        let out = tb
            .call("get_regression", json!({"id": "r1"}))
            .await
            .unwrap();
        assert!(out.contains("demo::checksum"));
        let out = tb
            .call("list_skills", json!({"applies_to": "opportunity"}))
            .await
            .unwrap();
        assert!(out.contains("memoize-pure-function"));
        assert!(!out.contains("triage-regression"));
        let out = tb
            .call("get_skill", json!({"name": "logging-in-hot-path"}))
            .await
            .unwrap();
        assert!(out.contains("example before"));
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert!(parse_range(Some("1h"), Some("2h"), "1h").is_err());
    }
}
