//! Read-only SQL against ClickHouse's HTTP interface, for the `sql` tool.
//!
//! Three layers keep it read-only and bounded: the configured user should be a ClickHouse readonly user
//! (profile `readonly = 2`, so it may still set limits), every request sets `max_result_rows`,
//! `result_overflow_mode=break`, `max_execution_time` and finally `readonly=1`, and the text is checked
//! here first: one statement only (no `;` inside), and it must start with `SELECT`, `WITH`, `SHOW`,
//! `DESCRIBE`/`DESC`, `EXISTS` or `EXPLAIN`.

use std::time::Duration;

/// What can go wrong running a query.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query was rejected before sending.
    #[error("rejected query: {0}")]
    Rejected(String),
    /// The HTTP request failed.
    #[error("ClickHouse request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// ClickHouse answered with an error.
    #[error("ClickHouse error (HTTP {status}): {body}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error text.
        body: String,
    },
}

/// Connection and limits for read-only SQL.
#[derive(Debug, Clone)]
pub struct ReadOnlySql {
    /// ClickHouse HTTP URL, e.g. `http://localhost:8123`.
    pub url: String,
    /// User (should be a readonly user).
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Database to use, if not the user's default.
    pub database: Option<String>,
    /// `max_result_rows` (default 1000).
    pub max_rows: u64,
    /// `max_execution_time` in seconds (default 10).
    pub max_seconds: u64,
    client: reqwest::Client,
}

impl ReadOnlySql {
    /// A client for `url` with the default limits (1000 rows, 10 s).
    pub fn new(url: impl Into<String>) -> ReadOnlySql {
        ReadOnlySql {
            url: url.into(),
            user: None,
            password: None,
            database: None,
            max_rows: 1000,
            max_seconds: 10,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Checks the query and returns it without a trailing `;`.
    pub fn check(query: &str) -> Result<&str, SqlError> {
        let q = query.trim();
        let q = q.strip_suffix(';').unwrap_or(q).trim_end();
        if q.is_empty() {
            return Err(SqlError::Rejected("the query is empty".into()));
        }
        if q.contains(';') {
            return Err(SqlError::Rejected(
                "only one statement is allowed: remove the ';' inside the query".into(),
            ));
        }
        let first = q
            .split(|c: char| c.is_whitespace() || c == '(')
            .find(|w| !w.is_empty())
            .unwrap_or("")
            .to_ascii_uppercase();
        const ALLOWED: [&str; 7] = [
            "SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN",
        ];
        if !ALLOWED.contains(&first.as_str()) {
            return Err(SqlError::Rejected(format!(
                "only read queries are allowed (SELECT, WITH, SHOW, DESCRIBE, EXISTS, EXPLAIN), not {first}"
            )));
        }
        if q.to_ascii_uppercase().contains(" INTO OUTFILE") {
            return Err(SqlError::Rejected("INTO OUTFILE is not allowed".into()));
        }
        Ok(q)
    }

    /// The URL query parameters that bound the query; `readonly=1` comes last.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("max_result_rows", self.max_rows.to_string()),
            ("result_overflow_mode", "break".to_string()),
            ("max_execution_time", self.max_seconds.to_string()),
            ("default_format", "TabSeparatedWithNames".to_string()),
        ];
        if let Some(db) = &self.database {
            v.push(("database", db.clone()));
        }
        v.push(("readonly", "1".to_string()));
        v
    }

    /// Runs the query and returns ClickHouse's tab-separated output with a header line.
    pub async fn query(&self, query: &str) -> Result<String, SqlError> {
        let q = Self::check(query)?;
        let settings = self.settings();
        match self.send(q, &settings).await {
            // A user whose profile is already read-only may not set `readonly` at all (ClickHouse
            // refuses any change of it in readonly mode, 18.16 and modern alike): the server has just
            // said the user cannot write, so the request-level flag is redundant; send without it.
            Err(SqlError::Server { body, .. }) if refuses_readonly_setting(&body) => {
                let without: Vec<_> = settings
                    .into_iter()
                    .filter(|(k, _)| *k != "readonly")
                    .collect();
                self.send(q, &without).await
            }
            other => other,
        }
    }

    async fn send(&self, q: &str, settings: &[(&'static str, String)]) -> Result<String, SqlError> {
        let mut req = self
            .client
            .post(&self.url)
            .query(settings)
            .body(q.to_string());
        if let Some(u) = &self.user {
            req = req.header("X-ClickHouse-User", u);
        }
        if let Some(p) = &self.password {
            req = req.header("X-ClickHouse-Key", p);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let mut body = resp.text().await?;
        if !status.is_success() {
            return Err(SqlError::Server {
                status: status.as_u16(),
                body: body.trim().to_string(),
            });
        }
        crate::repo::truncate(&mut body, 64 * 1024);
        Ok(body)
    }
}

/// Whether ClickHouse refused the request because the user is in readonly mode and may not change
/// the `readonly` setting (code 164, READONLY; the message names the setting).
fn refuses_readonly_setting(body: &str) -> bool {
    body.contains("Code: 164") && body.contains("'readonly'")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes, multiple statements and empty queries are rejected; a trailing `;` is fine.
    #[test]
    fn check_rejects() {
        assert_eq!(ReadOnlySql::check(" select 1; ").unwrap(), "select 1");
        assert!(ReadOnlySql::check("SELECT 1; DROP TABLE x").is_err());
        assert!(ReadOnlySql::check("SELECT ';'").is_err());
        assert!(ReadOnlySql::check("INSERT INTO t VALUES (1)").is_err());
        assert!(ReadOnlySql::check("drop table t").is_err());
        assert!(ReadOnlySql::check("   ").is_err());
        assert!(ReadOnlySql::check("(SELECT 1)").is_ok());
        let s = ReadOnlySql::new("http://x").settings();
        assert_eq!(s.last().unwrap(), &("readonly", "1".to_string()));
        assert!(
            s.iter()
                .any(|(k, v)| *k == "max_result_rows" && v == "1000")
        );
        // 18.16's and modern ClickHouse's answers for a readonly-profile user setting `readonly`.
        assert!(refuses_readonly_setting(
            "Code: 164, e.displayText() = DB::Exception: Setting 'readonly' cannot be overrided in readonly mode"
        ));
        assert!(refuses_readonly_setting(
            "Code: 164. DB::Exception: Cannot modify 'readonly' setting in readonly mode. (READONLY)"
        ));
        assert!(!refuses_readonly_setting(
            "Code: 164. DB::Exception: Cannot modify 'max_result_rows' setting in readonly mode. (READONLY)"
        ));
    }
}
