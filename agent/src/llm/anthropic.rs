//! The Anthropic Messages API with tool use.

use serde_json::{Value, json};

use super::{
    ChatModel, Completion, LlmConfig, LlmError, LlmFuture, Message, Role, ToolCall, ToolSpec, Usage,
};

/// The API version header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A client for `POST {base_url}/v1/messages`.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: String,
    max_tokens: u32,
    retry: super::http::Retry,
}

impl AnthropicClient {
    /// A client from the configuration (`base_url` default `https://api.anthropic.com`); needs a key.
    pub fn new(cfg: &LlmConfig) -> Result<AnthropicClient, LlmError> {
        let base = cfg
            .base_url
            .clone()
            .unwrap_or_else(|| "https://api.anthropic.com".into());
        let api_key = cfg
            .api_key
            .clone()
            .ok_or_else(|| LlmError::Config("ANTHROPIC_API_KEY is not set".into()))?;
        Ok(AnthropicClient {
            http: cfg.http_client()?,
            url: format!("{}/v1/messages", base.trim_end_matches('/')),
            model: cfg.model_name(),
            api_key,
            max_tokens: cfg.max_output_tokens,
            retry: cfg.retry(),
        })
    }

    /// The request body: system messages joined into `system`, tool results as `tool_result` blocks in
    /// one user message per turn.
    pub fn request_body(&self, messages: &[Message], tools: &[ToolSpec]) -> Value {
        let system: Vec<&str> = messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let mut out: Vec<Value> = Vec::new();
        for m in messages.iter().filter(|m| m.role != Role::System) {
            match m.role {
                Role::User => out.push(json!({"role": "user", "content": m.content})),
                Role::Assistant => {
                    let mut blocks = Vec::new();
                    if !m.content.is_empty() {
                        blocks.push(json!({"type": "text", "text": m.content}));
                    }
                    for c in &m.tool_calls {
                        let input = match &c.arguments {
                            Value::Object(_) => c.arguments.clone(),
                            _ => json!({}),
                        };
                        blocks.push(
                            json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                        );
                    }
                    out.push(json!({"role": "assistant", "content": blocks}));
                }
                Role::Tool => {
                    let block = json!({
                        "type": "tool_result",
                        "tool_use_id": m.tool_call_id,
                        "content": m.content,
                        "is_error": m.is_error,
                    });
                    // Consecutive results go into one user message.
                    match out.last_mut() {
                        Some(last)
                            if last["role"] == "user"
                                && last["content"].as_array().is_some_and(|a| {
                                    a.iter().all(|b| b["type"] == "tool_result")
                                }) =>
                        {
                            if let Some(a) = last["content"].as_array_mut() {
                                a.push(block)
                            }
                        }
                        _ => out.push(json!({"role": "user", "content": [block]})),
                    }
                }
                Role::System => {}
            }
        }
        let mut body = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": out,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if !tools.is_empty() {
            body["tools"] = tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect();
        }
        body
    }
}

/// Maps a Messages API response to a [`Completion`].
pub fn parse_response(v: &Value) -> Result<Completion, LlmError> {
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::Response(format!("no content array in {v}")))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| LlmError::Response(format!("tool_use without a name: {b}")))?
                    .to_string(),
                arguments: b.get("input").cloned().unwrap_or_else(|| json!({})),
            }),
            _ => {}
        }
    }
    Ok(Completion {
        text: (!text.is_empty()).then_some(text),
        tool_calls,
        usage: Usage {
            input_tokens: v
                .pointer("/usage/input_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            output_tokens: v
                .pointer("/usage/output_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        },
    })
}

impl ChatModel for AnthropicClient {
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        tools: &'a [ToolSpec],
    ) -> LlmFuture<'a, Completion> {
        Box::pin(async move {
            let body = self.request_body(messages, tools);
            let headers = [
                ("x-api-key", self.api_key.clone()),
                ("anthropic-version", ANTHROPIC_VERSION.to_string()),
            ];
            let v =
                super::http::post_json(&self.http, &self.url, &headers, &body, self.retry).await?;
            parse_response(&v)
        })
    }

    fn describe(&self) -> String {
        format!("anthropic:{}", self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::scripted::ScriptedServer;
    use crate::llm::{Provider, ToolCall};

    /// Requests carry the key, version, system and tool_result blocks; responses map text, tool_use and usage; 429 is retried.
    #[tokio::test]
    async fn anthropic_mapping() {
        let server = ScriptedServer::start(vec![
            (429, r#"{"type":"error","error":{"type":"rate_limit_error"}}"#.into()),
            (
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "tool_use",
                    "content": [{"type": "text", "text": "Let me look."},
                                {"type": "tool_use", "id": "toolu_1", "name": "read_code",
                                 "input": {"path": "src/main.rs"}}],
                    "usage": {"input_tokens": 42, "output_tokens": 7}})
                .to_string(),
            ),
        ]);
        let cfg = LlmConfig {
            provider: Provider::Anthropic,
            base_url: Some(server.url()),
            api_key: Some("ak-test".into()),
            model: Some("claude-test".into()),
            backoff_ms: 1,
            ..Default::default()
        };
        let client = AnthropicClient::new(&cfg).unwrap();
        let messages = vec![
            Message::system("be brief"),
            Message::user("fix"),
            Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![
                    ToolCall {
                        id: "t1".into(),
                        name: "list_skills".into(),
                        arguments: json!({}),
                    },
                    ToolCall {
                        id: "t2".into(),
                        name: "get_skill".into(),
                        arguments: json!({"name": "x"}),
                    },
                ],
                tool_call_id: None,
                is_error: false,
            },
            Message::tool_result("t1", "[]", false),
            Message::tool_result("t2", "no skill", true),
        ];
        let tools = vec![ToolSpec {
            name: "read_code".into(),
            description: "read".into(),
            parameters: json!({"type": "object", "properties": {}}),
        }];
        let c = client.complete(&messages, &tools).await.unwrap();
        assert_eq!(c.text.as_deref(), Some("Let me look."));
        assert_eq!(c.tool_calls.len(), 1);
        assert_eq!(c.tool_calls[0].name, "read_code");
        assert_eq!(c.tool_calls[0].arguments["path"], "src/main.rs");
        assert_eq!(
            c.usage,
            Usage {
                input_tokens: 42,
                output_tokens: 7
            }
        );
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].path, "/v1/messages");
        assert!(reqs[1].headers.contains("x-api-key: ak-test"));
        assert!(reqs[1].headers.contains("anthropic-version: 2023-06-01"));
        let body: Value = serde_json::from_str(&reqs[1].body).unwrap();
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["model"], "claude-test");
        let msgs = body["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(msgs[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(msgs[2]["content"][1]["is_error"], true);
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    }
}
