//! The MCP server (`fleetprof-agent mcp`): the [`ToolBox`] over stdio with `rmcp`.
//!
//! A thin edge: `tools/list` returns the tool box's definitions and `tools/call` delegates to
//! [`ToolBox::call`]. A tool failure (bad arguments included) is a tool result with `isError: true` and a
//! message saying what was wrong, so the model can correct itself; only an unroutable request is a
//! protocol error.
//!
//! With a [`Fixer`] ([`FleetprofMcp::with_fixer`]) the server also offers `validate_patch` and
//! `propose_fix`, so an MCP client (Claude Code, any coding agent) can drive the fix loop itself:
//! read with the code tools, write a diff, validate it in a throwaway worktree with the base
//! commit's commands, and propose it as a branch and `PR.md` — the same validation a fix by
//! recipe or by the agent's own model gets.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};

use schemars::JsonSchema;
use serde::Deserialize;

use crate::fix::Fixer;
use crate::tools::ToolBox;

/// The largest diff the fix tools accept, bytes.
pub const MAX_DIFF_BYTES: usize = 256 * 1024;

/// Arguments of `validate_patch`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidatePatchArgs {
    /// A unified diff against the repository's HEAD (paths relative to the root, a/ and b/ prefixes).
    pub diff: String,
}

/// Arguments of `propose_fix`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeFixArgs {
    /// The regression id (from list_regressions).
    pub regression_id: String,
    /// Your fix as a unified diff against HEAD. Without it, fleetprof's own pipeline runs (skill
    /// recipes, then its configured model).
    pub diff: Option<String>,
    /// One short paragraph saying what the fix does (goes into PR.md).
    pub explanation: Option<String>,
}

/// What can go wrong serving MCP.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The transport could not be set up or the session failed to initialize.
    #[error("MCP session: {0}")]
    Session(String),
    /// The server task failed.
    #[error("MCP server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The fleetprof MCP server.
#[derive(Debug, Clone)]
pub struct FleetprofMcp {
    tools: Arc<ToolBox>,
    fixer: Option<Arc<Fixer>>,
}

impl FleetprofMcp {
    /// A server exposing `tools`.
    pub fn new(tools: ToolBox) -> FleetprofMcp {
        FleetprofMcp {
            tools: Arc::new(tools),
            fixer: None,
        }
    }

    /// Also offers `validate_patch` and `propose_fix`, run by `fixer` (which needs a repository).
    pub fn with_fixer(mut self, fixer: Fixer) -> FleetprofMcp {
        self.fixer = Some(Arc::new(fixer));
        self
    }

    fn fix_tools() -> Vec<Tool> {
        let schema = |s: schemars::Schema| match serde_json::to_value(s) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.remove("$schema");
                m.remove("title");
                m
            }
            _ => serde_json::Map::new(),
        };
        vec![
            Tool::new(
                "validate_patch",
                "Validate a fix before proposing it: apply a unified diff to HEAD in a throwaway git \
                 worktree, refuse it if it touches fleetprof.toml, CI, build scripts or tests, and run \
                 the repository's build and test commands (from the base commit's fleetprof.toml) in a \
                 sandbox. Returns whether it passed and each check's output. Keeps nothing.",
                schema(schemars::schema_for!(ValidatePatchArgs)),
            ),
            Tool::new(
                "propose_fix",
                "Fix a regression forward. With `diff`, your patch is validated like validate_patch \
                 (plus re-profiling when the repository declares a workload) and, if it passes, \
                 committed on branch fleetprof/fix-<id> with a PR.md for the root-cause author. \
                 Without `diff`, fleetprof's own pipeline (skill recipes, then its configured model) \
                 produces the patch. Returns the proposal or why nothing was proposed.",
                schema(schemars::schema_for!(ProposeFixArgs)),
            ),
        ]
    }

    async fn call_fix_tool(
        &self,
        fixer: &Fixer,
        name: &str,
        args: serde_json::Value,
    ) -> Result<String, String> {
        let too_big = |d: &str| {
            (d.len() > MAX_DIFF_BYTES).then(|| {
                format!(
                    "the diff is {} bytes, more than the {MAX_DIFF_BYTES} accepted",
                    d.len()
                )
            })
        };
        match name {
            "validate_patch" => {
                let a: ValidatePatchArgs = serde_json::from_value(args)
                    .map_err(|e| format!("bad arguments for validate_patch: {e}"))?;
                if let Some(e) = too_big(&a.diff) {
                    return Err(e);
                }
                let v = fixer
                    .validate_patch(&a.diff)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(to_json(&v))
            }
            _ => {
                let a: ProposeFixArgs = serde_json::from_value(args)
                    .map_err(|e| format!("bad arguments for propose_fix: {e}"))?;
                let outcome = match &a.diff {
                    Some(d) => {
                        if let Some(e) = too_big(d) {
                            return Err(e);
                        }
                        fixer
                            .propose_patch(
                                &a.regression_id,
                                d,
                                a.explanation.as_deref().unwrap_or(""),
                                "via MCP",
                            )
                            .await
                    }
                    None => fixer.fix_regression(&a.regression_id).await,
                }
                .map_err(|e| e.to_string())?;
                Ok(to_json(&outcome))
            }
        }
    }

    /// The MCP tool list.
    pub fn mcp_tools(&self) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self
            .tools
            .definitions()
            .into_iter()
            .map(|d| {
                let mut ann = ToolAnnotations::default();
                ann.read_only_hint = Some(true);
                Tool::new(d.name, d.description, d.input_schema).with_annotations(ann)
            })
            .collect();
        if self.fixer.is_some() {
            tools.extend(Self::fix_tools());
        }
        tools
    }

    /// Serves on stdin/stdout until the client disconnects.
    pub async fn serve_stdio(self) -> Result<(), McpError> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| McpError::Session(e.to_string()))?;
        running.waiting().await?;
        Ok(())
    }
}

impl ServerHandler for FleetprofMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("fleetprof-agent", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "fleetprof: fleet-wide CPU profiles, detected regressions with root-cause commits, the \
                 service's repository, and fix skills. Start with list_regressions or top_functions; read \
                 the root-cause commit with show_change; pick a skill with list_skills/get_skill.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.mcp_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request
            .arguments
            .map(serde_json::Value::Object)
            .unwrap_or(serde_json::Value::Null);
        tracing::debug!(tool = %request.name, "FleetprofMcp.call_tool");
        let out = match (&self.fixer, request.name.as_ref()) {
            (Some(f), n @ ("validate_patch" | "propose_fix")) => {
                self.call_fix_tool(f, n, args).await
            }
            (_, n) => self.tools.call(n, args).await.map_err(|e| e.to_string()),
        };
        let result = match out {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(e) => {
                tracing::info!(tool = %request.name, error = %e, "tool error");
                CallToolResult::error(vec![ContentBlock::text(e)])
            }
        };
        Ok(result.into())
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("(unserializable result: {e})"))
}
