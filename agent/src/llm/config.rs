//! LLM configuration: a TOML file's `[llm]` table, then the environment on top.
//!
//! ```toml
//! [llm]
//! provider = "openai"              # openai | anthropic | none
//! model = "qwen2.5-coder-7b"        # default: gpt-4o / claude-sonnet-4-5
//! base_url = "http://localhost:8080/v1"   # llama.cpp, vLLM, Ollama (…/v1)
//! timeout_secs = 120
//! max_retries = 4
//! token_budget = 200000
//! max_turns = 30
//! wall_time_secs = 1800
//! ```
//!
//! Environment: `FLEETPROF_LLM_PROVIDER`, `FLEETPROF_LLM_MODEL`, `OPENAI_BASE_URL`, `OPENAI_API_KEY`,
//! `ANTHROPIC_BASE_URL`, `ANTHROPIC_API_KEY`. Keys are best kept in the environment, not the file.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{ChatModel, LlmError, LoopLimits};

/// Which API to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// No model: recipes only.
    #[default]
    None,
    /// OpenAI-compatible chat completions (OpenAI, llama.cpp, vLLM, Ollama).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
}

impl std::str::FromStr for Provider {
    type Err = LlmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Provider::None),
            "openai" | "openai-compatible" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            other => Err(LlmError::Config(format!(
                "unknown provider {other:?} (use openai, anthropic or none)"
            ))),
        }
    }
}

/// Model client configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Which API. Default `none`.
    pub provider: Provider,
    /// Model name. Default `gpt-4o` (openai) or `claude-sonnet-4-5` (anthropic).
    pub model: Option<String>,
    /// API base URL. Default `https://api.openai.com/v1` or `https://api.anthropic.com`.
    pub base_url: Option<String>,
    /// API key (prefer the environment). Optional for local OpenAI-compatible servers.
    pub api_key: Option<String>,
    /// Per-request timeout in seconds. Default 120.
    pub timeout_secs: u64,
    /// Retries on 429/5xx/connection errors. Default 4.
    pub max_retries: u32,
    /// First retry backoff in milliseconds, doubling. Default 500.
    pub backoff_ms: u64,
    /// Most tokens one fix may use. Default 200000.
    pub token_budget: u64,
    /// Most model calls one fix may make. Default 30.
    pub max_turns: u32,
    /// `max_tokens` per answer. Default 4096.
    pub max_output_tokens: u32,
    /// Most wall time one fix's conversation may take, tool calls (builds, tests) included, in
    /// seconds. Default 1800.
    pub wall_time_secs: u64,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            provider: Provider::None,
            model: None,
            base_url: None,
            api_key: None,
            timeout_secs: 120,
            max_retries: 4,
            backoff_ms: 500,
            token_budget: 200_000,
            max_turns: 30,
            max_output_tokens: 4096,
            wall_time_secs: 1800,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct FileConfig {
    #[serde(default)]
    llm: Option<LlmConfig>,
}

impl LlmConfig {
    /// Parses the `[llm]` table of a TOML document (a missing table gives the defaults).
    pub fn from_toml(text: &str, path: &Path) -> Result<LlmConfig, LlmError> {
        let f: FileConfig = toml::from_str(text).map_err(|source| LlmError::ConfigToml {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(f.llm.unwrap_or_default())
    }

    /// Loads the file (if given) and applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<LlmConfig, LlmError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| LlmError::ConfigFile {
                    path: p.to_path_buf(),
                    source,
                })?;
                LlmConfig::from_toml(&text, p)?
            }
            None => LlmConfig::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))?;
        Ok(cfg)
    }

    /// Applies environment variables read through `get` (see the module docs for the names).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), LlmError> {
        if let Some(p) = get("FLEETPROF_LLM_PROVIDER") {
            self.provider = p.parse()?;
        }
        if let Some(m) = get("FLEETPROF_LLM_MODEL") {
            self.model = Some(m);
        }
        let (url_var, key_var) = match self.provider {
            Provider::Anthropic => ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
            _ => ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
        };
        if let Some(u) = get(url_var) {
            self.base_url = Some(u);
        }
        if let Some(k) = get(key_var) {
            self.api_key = Some(k);
        }
        Ok(())
    }

    /// The model name, with the provider's default.
    pub fn model_name(&self) -> String {
        self.model.clone().unwrap_or_else(|| {
            match self.provider {
                Provider::Anthropic => "claude-sonnet-4-5",
                _ => "gpt-4o",
            }
            .to_string()
        })
    }

    /// The loop limits from this configuration.
    pub fn limits(&self) -> LoopLimits {
        LoopLimits {
            max_turns: self.max_turns,
            token_budget: self.token_budget,
            wall_time: std::time::Duration::from_secs(self.wall_time_secs),
        }
    }

    /// Builds the client, or `None` for provider `none`.
    pub fn build(&self) -> Result<Option<Arc<dyn ChatModel>>, LlmError> {
        Ok(match self.provider {
            Provider::None => None,
            Provider::OpenAi => Some(Arc::new(super::openai::OpenAiClient::new(self)?)),
            Provider::Anthropic => Some(Arc::new(super::anthropic::AnthropicClient::new(self)?)),
        })
    }

    pub(crate) fn http_client(&self) -> Result<reqwest::Client, LlmError> {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(self.timeout_secs))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| LlmError::Config(format!("HTTP client: {e}")))
    }

    pub(crate) fn retry(&self) -> super::http::Retry {
        super::http::Retry {
            max_retries: self.max_retries,
            backoff: std::time::Duration::from_millis(self.backoff_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file sets values; the environment overrides provider, model, URL and key.
    #[test]
    fn file_then_env() {
        let text = "[llm]\nprovider = \"openai\"\nmodel = \"m1\"\nbase_url = \"http://localhost:8080/v1\"\ntoken_budget = 5000\n";
        let mut cfg = LlmConfig::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(cfg.provider, Provider::OpenAi);
        assert_eq!(cfg.token_budget, 5000);
        assert_eq!(cfg.max_retries, 4);
        cfg.apply_env(|k| match k {
            "FLEETPROF_LLM_PROVIDER" => Some("anthropic".into()),
            "ANTHROPIC_API_KEY" => Some("ak".into()),
            "OPENAI_API_KEY" => Some("ok".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.provider, Provider::Anthropic);
        assert_eq!(cfg.api_key.as_deref(), Some("ak"));
        assert_eq!(cfg.model_name(), "m1");
        assert!(LlmConfig::from_toml("[llm]\nprovder = \"x\"\n", Path::new("x")).is_err());
        assert!("gemini".parse::<Provider>().is_err());
    }
}
