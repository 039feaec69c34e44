//! A scripted HTTP server for tests: answers each connection with the next canned response and records
//! the requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A recorded request.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// The request path.
    pub(crate) path: String,
    /// The headers, lower-cased, one per line.
    pub(crate) headers: String,
    /// The body.
    pub(crate) body: String,
}

/// The server; it stops after the last scripted response.
pub(crate) struct ScriptedServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl ScriptedServer {
    /// Starts a server that answers with `responses` (status, JSON body) in order.
    pub(crate) fn start(responses: Vec<(u16, String)>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rec = requests.clone();
        std::thread::spawn(move || {
            for (status, body) in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = String::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    let h = h.trim().to_lowercase();
                    if let Some(v) = h.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    headers.push_str(&h);
                    headers.push('\n');
                }
                let mut buf = vec![0; len];
                reader.read_exact(&mut buf).unwrap();
                rec.lock().unwrap().push(Recorded {
                    path,
                    headers,
                    body: String::from_utf8_lossy(&buf).into_owned(),
                });
                let mut stream = reader.into_inner();
                let reason = if status == 200 { "OK" } else { "Error" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.flush();
            }
        });
        ScriptedServer { addr, requests }
    }

    /// The base URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// An OpenAI-compatible reply calling one tool, as [`ScriptedServer::start`] takes it.
pub(crate) fn openai_tool_call(id: &str, name: &str, args: serde_json::Value) -> (u16, String) {
    let body = serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}
        ]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20}
    });
    (200, body.to_string())
}

/// An OpenAI-compatible final answer, as [`ScriptedServer::start`] takes it.
pub(crate) fn openai_answer(text: &str) -> (u16, String) {
    let body = serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20}
    });
    (200, body.to_string())
}

/// The model `m` of an OpenAI-compatible endpoint at `url` (a [`ScriptedServer`]), retrying at
/// once.
pub(crate) fn openai_model(url: String) -> Option<Arc<dyn crate::llm::ChatModel>> {
    crate::llm::LlmConfig {
        provider: crate::llm::Provider::OpenAi,
        base_url: Some(url),
        model: Some("m".into()),
        backoff_ms: 1,
        ..Default::default()
    }
    .build()
    .unwrap()
}

/// Copies the repository's skills into `dir` without their `recipe:` lines, so that fixing falls
/// to the model path.
pub(crate) fn skills_without_recipes(dir: &std::path::Path) {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../skills");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_dir() {
            continue;
        }
        let dst = dir.join(e.file_name());
        std::fs::create_dir_all(&dst).unwrap();
        let text = std::fs::read_to_string(e.path().join("SKILL.md")).unwrap();
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("recipe:"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dst.join("SKILL.md"), text).unwrap();
    }
}
