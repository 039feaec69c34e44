//! fleetprof's agent: the last stage of fleetprof's data path.
//!
//! Profiles flow host → collector (ClickHouse) → regression detector → **agent**. The agent exposes the
//! profile data, the service's repository and the skills as tools (an MCP server, [`mcp`], and the same
//! [`tools`] for its own model loop, [`llm`]), and turns a regression (defense, [`fix`]) or a hot function
//! that matches an opportunity skill (offense, [`opportunities`]) into a patch that is validated in a
//! separate `git worktree` before it becomes a branch, a `PR.md` and optionally a GitHub pull request.
//! The profile data comes through [`source::ProfileSource`]; [`source_clickhouse`] implements it over
//! the collector's ClickHouse store and regressions table.
//!
//! ```no_run
//! use std::sync::Arc;
//! use fleetprof_agent::{skills::SkillSet, source::UnavailableSource, tools::ToolBox, repo::Repo};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let skills = SkillSet::load("skills")?;
//! let tools = ToolBox::new(Arc::new(UnavailableSource), skills).with_repo(Repo::new("."));
//! let hits = tools.call("search_code", serde_json::json!({"pattern": "fn main"})).await?;
//! println!("{hits}");
//! # Ok(()) }
//! ```

pub mod eval;
pub mod fix;
pub mod llm;
pub mod mcp;
pub mod opportunities;
pub mod repo;
pub mod reprofile;
pub mod skills;
pub mod source;
pub mod source_clickhouse;
pub mod sql;
pub mod tools;
