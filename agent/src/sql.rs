//! Read-only SQL against ClickHouse's HTTP interface, for the `sql` tool.
//!
//! Four layers keep it read-only and bounded:
//! - the configured user should be a ClickHouse user whose profile has `readonly = 1` (no writes,
//!   no setting changes) and its own `max_result_rows`, `max_result_bytes` and
//!   `max_execution_time` (the test helper and the README's example do);
//! - for a user that may still set limits, every request sets `max_result_rows`,
//!   `max_result_bytes`, `max_execution_time` and finally `readonly=1` (a `readonly = 1` user is
//!   refused any setting, and the query is sent again without them: its profile bounds it);
//! - the text is checked here first ([`ReadOnlySql::check`]): one statement that starts with
//!   `SELECT`, `WITH`, `SHOW`, `DESCRIBE`/`DESC`, `EXISTS` or `EXPLAIN`, with no `SETTINGS`,
//!   `FORMAT` or `INTO OUTFILE` clause, no comment, no write or administrative keyword and no
//!   table function that reaches outside the database (`url`, `file`, `remote`, …);
//! - the answer is read with a byte cap, however much the server sends.

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
    /// `max_result_bytes` (default 1 MiB).
    pub max_result_bytes: u64,
    /// Most bytes of the answer read and returned (default 64 KiB); the rest is cut.
    pub max_response_bytes: usize,
    client: reqwest::Client,
}

/// Keywords that write or administer: refused anywhere in the query, outside quoted text.
const WRITES: [&str; 14] = [
    "INSERT", "ALTER", "DROP", "CREATE", "TRUNCATE", "RENAME", "ATTACH", "DETACH", "OPTIMIZE",
    "KILL", "SYSTEM", "GRANT", "SET", "DELETE",
];

/// Table functions that read files, URLs, other servers or programs.
const TABLE_FUNCTIONS: [&str; 15] = [
    "URL",
    "FILE",
    "REMOTE",
    "REMOTESECURE",
    "CLUSTER",
    "CLUSTERALLREPLICAS",
    "MYSQL",
    "POSTGRESQL",
    "JDBC",
    "ODBC",
    "HDFS",
    "S3",
    "INPUT",
    "EXECUTABLE",
    "DICTIONARY",
];

/// The query's words (identifiers and keywords, upper-cased) outside string literals and quoted
/// identifiers, each with whether a `(` follows it (a function call).
fn words_outside_quotes(q: &str) -> Vec<(String, bool)> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' || c == '`' {
            // Skip to the closing quote (a backslash escapes the next character).
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word = chars[start..i]
                .iter()
                .collect::<String>()
                .to_ascii_uppercase();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            out.push((word, chars.get(j) == Some(&'(')));
        } else {
            i += 1;
        }
    }
    out
}

impl ReadOnlySql {
    /// A client for `url` with the default limits (1000 rows, 1 MiB, 10 s; 64 KiB returned).
    pub fn new(url: impl Into<String>) -> ReadOnlySql {
        ReadOnlySql {
            url: url.into(),
            user: None,
            password: None,
            database: None,
            max_rows: 1000,
            max_seconds: 10,
            max_result_bytes: 1 << 20,
            max_response_bytes: 64 << 10,
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
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
        if q.contains("--") || q.contains("/*") || q.contains('#') {
            return Err(SqlError::Rejected(
                "comments are not allowed in the query".into(),
            ));
        }
        let words = words_outside_quotes(q);
        let first = words.first().map_or("", |(w, _)| w.as_str());
        const ALLOWED: [&str; 7] = [
            "SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN",
        ];
        if !ALLOWED.contains(&first) {
            return Err(SqlError::Rejected(format!(
                "only read queries are allowed (SELECT, WITH, SHOW, DESCRIBE, EXISTS, EXPLAIN), not {first}"
            )));
        }
        for (i, (w, call)) in words.iter().enumerate() {
            if w == "INTO" && words.get(i + 1).is_some_and(|(n, _)| n == "OUTFILE") {
                return Err(SqlError::Rejected("INTO OUTFILE is not allowed".into()));
            }
            if w == "SETTINGS" {
                return Err(SqlError::Rejected(
                    "SETTINGS clauses are not allowed: the tool's limits apply".into(),
                ));
            }
            if w == "FORMAT" {
                return Err(SqlError::Rejected(
                    "FORMAT clauses are not allowed: answers are tab-separated with names".into(),
                ));
            }
            if WRITES.contains(&w.as_str()) {
                return Err(SqlError::Rejected(format!(
                    "only read queries are allowed: {w} is not"
                )));
            }
            if *call && TABLE_FUNCTIONS.contains(&w.as_str()) {
                return Err(SqlError::Rejected(format!(
                    "the table function {}() reaches outside the database and is not allowed",
                    w.to_ascii_lowercase()
                )));
            }
        }
        Ok(q)
    }

    /// The URL query parameters that bound the query; `readonly=1` comes last.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("max_result_rows", self.max_rows.to_string()),
            ("max_result_bytes", self.max_result_bytes.to_string()),
            ("result_overflow_mode", "break".to_string()),
            ("max_execution_time", self.max_seconds.to_string()),
            ("readonly", "1".to_string()),
        ]
    }

    /// Runs the query and returns ClickHouse's tab-separated output with a header line, cut at
    /// [`ReadOnlySql::max_response_bytes`].
    pub async fn query(&self, query: &str) -> Result<String, SqlError> {
        let q = format!("{} FORMAT TabSeparatedWithNames", Self::check(query)?);
        let settings = self.settings();
        match self.send(&q, &settings).await {
            // A user whose profile is read-only (`readonly = 1`) may not change any setting, the
            // limits included (ClickHouse refuses, 18.16 and modern alike): its profile carries
            // the limits and forbids writes, so send the query without them.
            Err(SqlError::Server { body, .. }) if refuses_settings(&body) => {
                self.send(&q, &[]).await
            }
            other => other,
        }
    }

    async fn send(&self, q: &str, settings: &[(&'static str, String)]) -> Result<String, SqlError> {
        let mut params: Vec<(&str, String)> = settings.to_vec();
        if let Some(db) = &self.database {
            params.push(("database", db.clone()));
        }
        let mut req = self
            .client
            .post(&self.url)
            .query(&params)
            .body(q.to_string());
        if let Some(u) = &self.user {
            req = req.header("X-ClickHouse-User", u);
        }
        if let Some(p) = &self.password {
            req = req.header("X-ClickHouse-Key", p);
        }
        let mut resp = req.send().await?;
        let status = resp.status();
        // Read at most the cap (plus one byte, to know it was cut), whatever the server sends.
        let cap = self.max_response_bytes;
        let mut bytes = Vec::new();
        let mut cut = false;
        while let Some(chunk) = resp.chunk().await? {
            let room = cap + 1 - bytes.len();
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() > cap {
                cut = true;
                break;
            }
        }
        let mut body = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            return Err(SqlError::Server {
                status: status.as_u16(),
                body: body.trim().to_string(),
            });
        }
        if cut {
            crate::repo::truncate(&mut body, cap);
        }
        Ok(body)
    }
}

/// Whether ClickHouse refused the request because the user is in readonly mode and may not change
/// a setting (code 164, READONLY).
fn refuses_settings(body: &str) -> bool {
    body.contains("Code: 164") && body.contains("readonly mode")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(q: &str) -> String {
        match ReadOnlySql::check(q) {
            Err(SqlError::Rejected(why)) => why,
            other => panic!("{q:?} should be refused, got {other:?}"),
        }
    }

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
        assert!(s.iter().any(|(k, _)| *k == "max_result_bytes"));
        // 18.16's and modern ClickHouse's answers for a readonly-profile user setting limits.
        assert!(refuses_settings(
            "Code: 164, e.displayText() = DB::Exception: Cannot modify 'max_result_rows' setting in readonly mode"
        ));
        assert!(refuses_settings(
            "Code: 164. DB::Exception: Cannot modify 'readonly' setting in readonly mode. (READONLY)"
        ));
        assert!(!refuses_settings(
            "Code: 60. DB::Exception: Table x doesn't exist"
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Whatever the text, the checker answers (never panics), and what it passes is one
        /// read statement with none of the refused words outside quotes.
        #[test]
        fn checker_passes_only_reads(q in "(SELECT|select|WITH|DROP|INSERT|SHOW|SET|\\(| |'|;|--|url\\(|file \\(|SETTINGS|FORMAT|x|1|,|\\)|\"){0,12}") {
            if let Ok(ok) = ReadOnlySql::check(&q) {
                proptest::prop_assert!(!ok.contains(';'));
                let words = words_outside_quotes(ok);
                let first = words.first().map_or("", |(w, _)| w.as_str());
                proptest::prop_assert!(["SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"].contains(&first));
                for (w, call) in &words {
                    proptest::prop_assert!(!WRITES.contains(&w.as_str()) && w != "SETTINGS" && w != "FORMAT");
                    proptest::prop_assert!(!(*call && TABLE_FUNCTIONS.contains(&w.as_str())));
                }
            }
        }

        /// Arbitrary text never panics the checker.
        #[test]
        fn checker_never_panics(q in ".{0,200}") {
            let _ = ReadOnlySql::check(&q);
        }
    }

    /// A SETTINGS clause is refused (it could lift the limits).
    #[test]
    fn refuses_settings_clause() {
        let e = refused("SELECT * FROM samples SETTINGS max_result_rows = 0");
        assert!(e.contains("SETTINGS"), "{e}");
        let e = refused("select 1 settings readonly=0");
        assert!(e.contains("SETTINGS"), "{e}");
    }

    /// Table functions that reach files, URLs or other servers are refused, whatever the case.
    #[test]
    fn refuses_table_functions() {
        for q in [
            "SELECT * FROM url('http://169.254.169.254/', CSV, 'x String')",
            "SELECT * FROM file('/etc/shadow', TSV, 'l String')",
            "SELECT * FROM remote('10.0.0.1', system.one)",
            "SELECT * FROM Remote ('x', system.one)",
            "SELECT count() FROM remoteSecure('x', system.one)",
        ] {
            let e = refused(q);
            assert!(e.contains("table function"), "{q}: {e}");
        }
        // Columns and strings named like one are fine.
        assert!(
            ReadOnlySql::check("SELECT file, module FROM frames WHERE module = 'url(x)'").is_ok()
        );
    }

    /// Writes are refused wherever they hide; quoted text does not count.
    #[test]
    fn refuses_writes() {
        for q in [
            "INSERT INTO samples SELECT * FROM samples",
            "ALTER TABLE samples DELETE WHERE 1",
            "DROP TABLE samples",
            "SELECT 1 INTO OUTFILE '/tmp/x'",
            "WITH (SELECT 1) AS x SELECT x FROM system.one UNION ALL SELECT 1 FROM system.one INTO OUTFILE 'y'",
            "SET readonly = 0",
            "SELECT * FROM samples FORMAT Native",
            "SELECT 1 -- comment",
            "SELECT 1 /* x */",
        ] {
            refused(q);
        }
        assert!(ReadOnlySql::check("SELECT 'drop table x' AS s, \"insert\" FROM t").is_ok());
    }
}
