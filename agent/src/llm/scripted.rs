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
