//! OpenAI-compatible chat completions with tool calling (OpenAI, llama.cpp, vLLM, Ollama).

use serde_json::{Value, json};

use super::{
    ChatModel, Completion, LlmConfig, LlmError, LlmFuture, Message, Role, ToolCall, ToolSpec, Usage,
};

/// A client for `POST {base_url}/chat/completions`.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    max_tokens: u32,
    retry: super::http::Retry,
}

impl OpenAiClient {
    /// A client from the configuration (`base_url` default `https://api.openai.com/v1`).
    pub fn new(cfg: &LlmConfig) -> Result<OpenAiClient, LlmError> {
        let base = cfg
            .base_url
            .clone()
            .unwrap_or_else(|| "https://api.openai.com/v1".into());
        if base.contains("api.openai.com") && cfg.api_key.is_none() {
            return Err(LlmError::Config("OPENAI_API_KEY is not set".into()));
        }
        Ok(OpenAiClient {
            http: cfg.http_client()?,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            model: cfg.model_name(),
            api_key: cfg.api_key.clone(),
            max_tokens: cfg.max_output_tokens,
            retry: cfg.retry(),
        })
    }

    /// The request body for a conversation.
    pub fn request_body(&self, messages: &[Message], tools: &[ToolSpec]) -> Value {
        let msgs: Vec<Value> = messages.iter().map(message_json).collect();
        let mut body = json!({
            "model": self.model,
            "messages": msgs,
            "max_tokens": self.max_tokens,
        });
        if !tools.is_empty() {
            body["tools"] = tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect();
            body["tool_choice"] = json!("auto");
        }
        body
    }
}

fn message_json(m: &Message) -> Value {
    match m.role {
        Role::System => json!({"role": "system", "content": m.content}),
        Role::User => json!({"role": "user", "content": m.content}),
        Role::Assistant if m.tool_calls.is_empty() => {
            json!({"role": "assistant", "content": m.content})
        }
        Role::Assistant => json!({
            "role": "assistant",
            "content": if m.content.is_empty() { Value::Null } else { Value::String(m.content.clone()) },
            "tool_calls": m.tool_calls.iter().map(|c| json!({
                "id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": match &c.arguments {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                }}
            })).collect::<Vec<_>>(),
        }),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": m.tool_call_id,
            "content": if m.is_error { format!("ERROR: {}", m.content) } else { m.content.clone() },
        }),
    }
}

/// Maps a chat-completions response to a [`Completion`].
pub fn parse_response(v: &Value) -> Result<Completion, LlmError> {
    let msg = v
        .pointer("/choices/0/message")
        .ok_or_else(|| LlmError::Response(format!("no choices[0].message in {v}")))?;
    let text = msg
        .get("content")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut tool_calls = Vec::new();
    for (i, c) in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| LlmError::Response(format!("tool call without a function name: {c}")))?;
        let raw = c.pointer("/function/arguments");
        let arguments = match raw {
            Some(Value::String(s)) if s.trim().is_empty() => json!({}),
            Some(Value::String(s)) => {
                serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
            }
            Some(v @ Value::Object(_)) => v.clone(),
            _ => json!({}),
        };
        let id = c
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("call_{i}"));
        tool_calls.push(ToolCall {
            id,
            name: name.to_string(),
            arguments,
        });
    }
    let usage = Usage {
        input_tokens: v
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        output_tokens: v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    };
    Ok(Completion {
        text,
        tool_calls,
        usage,
    })
}

impl ChatModel for OpenAiClient {
    fn complete<'a>(
        &'a self,
        messages: &'a [Message],
        tools: &'a [ToolSpec],
    ) -> LlmFuture<'a, Completion> {
        Box::pin(async move {
            let body = self.request_body(messages, tools);
            let mut headers = Vec::new();
            if let Some(k) = &self.api_key {
                headers.push(("authorization", format!("Bearer {k}")));
            }
            let v =
                super::http::post_json(&self.http, &self.url, &headers, &body, self.retry).await?;
            parse_response(&v)
        })
    }

    fn describe(&self) -> String {
        format!("openai:{}", self.model)
    }
}
