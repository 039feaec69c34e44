//! The MCP server (`fleetprof-agent mcp`): the [`ToolBox`] over stdio with `rmcp`.
//!
//! A thin edge: `tools/list` returns the tool box's definitions and `tools/call` delegates to
//! [`ToolBox::call`]. A tool failure (bad arguments included) is a tool result with `isError: true` and a
//! message saying what was wrong, so the model can correct itself; only an unroutable request is a
//! protocol error.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};

use crate::tools::ToolBox;

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
}

impl FleetprofMcp {
    /// A server exposing `tools`.
    pub fn new(tools: ToolBox) -> FleetprofMcp {
        FleetprofMcp {
            tools: Arc::new(tools),
        }
    }

    /// The MCP tool list.
    pub fn mcp_tools(&self) -> Vec<Tool> {
        self.tools
            .definitions()
            .into_iter()
            .map(|d| {
                let mut ann = ToolAnnotations::default();
                ann.read_only_hint = Some(true);
                Tool::new(d.name, d.description, d.input_schema).with_annotations(ann)
            })
            .collect()
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
        let result = match self.tools.call(&request.name, args).await {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(e) => {
                tracing::info!(tool = %request.name, error = %e, "tool error");
                CallToolResult::error(vec![ContentBlock::text(e.to_string())])
            }
        };
        Ok(result.into())
    }
}
