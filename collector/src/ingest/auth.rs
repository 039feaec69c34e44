//! Bearer-token authentication as a tonic interceptor, compared in constant time: one token
//! every host may use, and/or per-host tokens (a file of `host_id token` lines, see
//! [`parse_host_tokens`]) that tie a connection to the host it may write as.

use std::collections::HashMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` when a token is configured; lets everything through
/// otherwise.
#[derive(Clone, Default)]
pub struct BearerAuth {
    token: Option<Arc<[u8]>>,
    host_tokens: Option<Arc<HashMap<String, String>>>,
}

/// Put into a request's extensions when it carried a per-host token: the `host_id` it may
/// push batches of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedHost(pub String);

/// Errors reading a per-host token file.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct HostTokensError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses `host_id token` lines (blank lines and `#` comments skipped). Each host appears once;
/// tokens are at least 16 bytes and unique, so one host's token never names another.
pub fn parse_host_tokens(text: &str) -> Result<HashMap<String, String>, HostTokensError> {
    let mut out = HashMap::new();
    let mut tokens = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| HostTokensError {
            line: i + 1,
            message,
        };
        let mut fields = line.split_whitespace();
        let (Some(host), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(err("expected `host_id token`".into()));
        };
        if token.len() < 16 {
            return Err(err(format!("the token of {host} is shorter than 16 bytes")));
        }
        if !tokens.insert(token.to_owned()) {
            return Err(err(format!("the token of {host} is also another host's")));
        }
        if out.insert(host.to_owned(), token.to_owned()).is_some() {
            return Err(err(format!("host {host} appears twice")));
        }
    }
    Ok(out)
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("enabled", &self.token.is_some())
            .finish()
    }
}

impl BearerAuth {
    /// Requires `token` (`None`: no authentication).
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.into_bytes())),
            host_tokens: None,
        }
    }

    /// Also accepts per-host tokens (`host_id` → token).
    pub fn with_host_tokens(mut self, host_tokens: Option<Arc<HashMap<String, String>>>) -> Self {
        self.host_tokens = host_tokens;
        self
    }

    /// Whether `request` carries an accepted token: `Ok(None)` for the shared token (or no
    /// authentication), `Ok(Some(host))` for the per-host token of `host`.
    pub fn check<T>(&self, request: &Request<T>) -> Result<Option<AuthenticatedHost>, Status> {
        if self.token.is_none() && self.host_tokens.is_none() {
            return Ok(None);
        }
        let Some(value) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata",
            ));
        };
        let presented = value.as_bytes().strip_prefix(b"Bearer ").unwrap_or(b"");
        if let Some(expected) = &self.token
            && bool::from(presented.ct_eq(expected))
        {
            return Ok(None);
        }
        // Every entry is compared, so the time taken does not tell which host matched.
        let mut found = None;
        for (host, token) in self.host_tokens.iter().flat_map(|m| m.iter()) {
            if bool::from(presented.ct_eq(token.as_bytes())) {
                found = Some(AuthenticatedHost(host.clone()));
            }
        }
        found
            .map(Some)
            .ok_or_else(|| Status::unauthenticated("invalid bearer token"))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(host) = self.check(&request)? {
            request.extensions_mut().insert(host);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        r
    }

    /// Right token passes; wrong, missing or malformed ones are UNAUTHENTICATED.
    #[test]
    fn checks_bearer_token() {
        let auth = BearerAuth::new(Some("s3cret".into()));
        assert!(auth.check(&with_header("Bearer s3cret")).is_ok());
        for bad in ["Bearer s3cre", "Bearer s3cret2", "s3cret", "Basic s3cret"] {
            assert_eq!(
                auth.check(&with_header(bad)).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
        assert_eq!(
            auth.check(&Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(BearerAuth::new(None).check(&Request::new(())).is_ok());
    }

    /// A per-host token names its host; an unknown one is refused.
    #[test]
    fn per_host_tokens_name_the_host() {
        let tokens =
            parse_host_tokens("# hosts\nweb-1 aaaaaaaaaaaaaaaa1\n\nweb-2 bbbbbbbbbbbbbbbb2\n")
                .unwrap();
        let auth = BearerAuth::new(None).with_host_tokens(Some(Arc::new(tokens)));
        assert_eq!(
            auth.check(&with_header("Bearer bbbbbbbbbbbbbbbb2"))
                .unwrap(),
            Some(AuthenticatedHost("web-2".into()))
        );
        assert_eq!(
            auth.check(&with_header("Bearer cccccccccccccccc3"))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }

    /// Malformed token files are refused with the line at fault.
    #[test]
    fn host_token_files_are_checked() {
        for (text, line) in [
            ("web-1\n", 1),
            ("web-1 short\n", 1),
            ("web-1 aaaaaaaaaaaaaaaa1\nweb-2 aaaaaaaaaaaaaaaa1\n", 2),
            ("web-1 aaaaaaaaaaaaaaaa1\nweb-1 bbbbbbbbbbbbbbbb2\n", 2),
            ("web-1 aaaaaaaaaaaaaaaa1 extra\n", 1),
        ] {
            assert_eq!(parse_host_tokens(text).unwrap_err().line, line, "{text}");
        }
    }
}
