//! POST JSON with timeouts and retries: 429 and 5xx (and connection errors) are retried with exponential
//! backoff, honouring a short `Retry-After`.

use std::time::Duration;

use serde_json::Value;

use super::LlmError;

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// Retries after the first attempt.
    pub(crate) max_retries: u32,
    /// First backoff; doubles each retry.
    pub(crate) backoff: Duration,
}

/// POSTs `body` to `url` with `headers` and returns the JSON answer.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: &Value,
    retry: Retry,
) -> Result<Value, LlmError> {
    let mut attempt = 0;
    loop {
        let mut req = client.post(url).json(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let wait = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    let text = resp.text().await.map_err(|source| LlmError::Http {
                        url: url.to_string(),
                        source,
                    })?;
                    return serde_json::from_str(&text)
                        .map_err(|e| LlmError::Response(format!("{e}: {}", snippet(&text))));
                }
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(60)));
                let text = resp.text().await.unwrap_or_default();
                let retryable = status.as_u16() == 429 || status.is_server_error();
                if !retryable || attempt >= retry.max_retries {
                    return Err(LlmError::Status {
                        url: url.to_string(),
                        status: status.as_u16(),
                        body: snippet(&text),
                    });
                }
                tracing::warn!(%url, status = status.as_u16(), attempt, "model API busy, retrying");
                retry_after.unwrap_or(retry.backoff * 2u32.pow(attempt))
            }
            Err(source) => {
                let retryable = source.is_timeout() || source.is_connect() || source.is_request();
                if !retryable || attempt >= retry.max_retries {
                    return Err(LlmError::Http {
                        url: url.to_string(),
                        source,
                    });
                }
                tracing::warn!(%url, error = %source, attempt, "model API request failed, retrying");
                retry.backoff * 2u32.pow(attempt)
            }
        };
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

fn snippet(s: &str) -> String {
    let mut s = s.to_string();
    crate::repo::truncate(&mut s, 2000);
    s
}
