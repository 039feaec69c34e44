//! Time windows (`--since 1h`, `--from T --to T`) and diff sides (a version or a window).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::QueryError;

/// A half-open time window `[from, to)` in Unix seconds: the one time-range type of fleetprof
/// (the store's readers, the CLI, the UI and the agent's profile source all take it). `u32`
/// because that is ClickHouse's `DateTime`; [`Window::clamped`] takes wider Unix times.
///
/// With the `schemars` feature it also derives `schemars::JsonSchema`, for tools that describe
/// it in a JSON schema (the agent's MCP tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Window {
    /// Start, Unix seconds, inclusive.
    pub from: u32,
    /// End, Unix seconds, exclusive.
    pub to: u32,
}

fn unix(t: SystemTime) -> u32 {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl Window {
    /// The last `duration`, up to now (plus one second, so this second's rows count).
    pub fn last(duration: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            from: unix(now.checked_sub(duration).unwrap_or(UNIX_EPOCH)),
            to: unix(now) + 1,
        }
    }

    /// `[start, end)` from signed Unix seconds, clamped into what a `DateTime` holds (before
    /// 1970 is 1970; after 2106, or `i64::MAX` for "no end", is the last second of 2106).
    pub fn clamped(start: i64, end: i64) -> Self {
        let clamp = |t: i64| u32::try_from(t.max(0)).unwrap_or(u32::MAX);
        Self {
            from: clamp(start),
            to: clamp(end),
        }
    }

    /// `[from, to)`.
    pub fn between(from: SystemTime, to: SystemTime) -> Self {
        Self {
            from: unix(from),
            to: unix(to),
        }
    }

    /// From CLI-style arguments: `since` ("1h", "30m", "7d") or `from` and `to` (RFC 3339, e.g.
    /// `2025-06-01T12:00:00Z`); `to` defaults to now; with none, the last `default`.
    pub fn parse(
        since: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        default: Duration,
    ) -> Result<Self, QueryError> {
        let time = |s: &str| {
            humantime::parse_rfc3339_weak(s).map_err(|e| {
                QueryError::BadArgument(format!(
                    "{s:?} is not an RFC 3339 time ({e}); e.g. 2025-06-01T12:00:00Z"
                ))
            })
        };
        match (since, from) {
            (Some(_), Some(_)) => Err(QueryError::BadArgument(
                "give either --since or --from/--to, not both".into(),
            )),
            (Some(s), None) => {
                if to.is_some() {
                    return Err(QueryError::BadArgument(
                        "--to needs --from, not --since".into(),
                    ));
                }
                let d = humantime::parse_duration(s).map_err(|e| {
                    QueryError::BadArgument(format!("--since {s:?}: {e}; e.g. 1h, 30m, 7d"))
                })?;
                Ok(Self::last(d))
            }
            (None, Some(f)) => {
                let w = Self::between(
                    time(f)?,
                    match to {
                        Some(t) => time(t)?,
                        None => SystemTime::now() + Duration::from_secs(1),
                    },
                );
                if w.to <= w.from {
                    return Err(QueryError::BadArgument(format!(
                        "--to must be after --from ({f})"
                    )));
                }
                Ok(w)
            }
            (None, None) => {
                if to.is_some() {
                    return Err(QueryError::BadArgument("--to needs --from".into()));
                }
                Ok(Self::last(default))
            }
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |s: u32| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(u64::from(s)))
        };
        write!(f, "{}..{}", t(self.from), t(self.to))
    }
}

/// One side of a diff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// A service version (within the diff's overall window).
    Version(String),
    /// A time window.
    Window(Window),
}

impl Side {
    /// Parses `FROM..TO` (RFC 3339 times, or durations ago such as `2h..1h`) as a window and
    /// anything else as a version.
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        let Some((from, to)) = s.split_once("..") else {
            return Ok(Self::Version(s.to_owned()));
        };
        let point = |p: &str| -> Result<SystemTime, QueryError> {
            if let Ok(ago) = humantime::parse_duration(p) {
                return Ok(SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH));
            }
            humantime::parse_rfc3339_weak(p).map_err(|e| {
                QueryError::BadArgument(format!(
                    "{p:?} in {s:?} is neither a duration ago (2h) nor an RFC 3339 time ({e})"
                ))
            })
        };
        let w = Window::between(point(from)?, point(to)?);
        if w.to <= w.from {
            return Err(QueryError::BadArgument(format!(
                "window {s:?} is empty: the end must be after the start"
            )));
        }
        Ok(Self::Window(w))
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "version {v}"),
            Self::Window(w) => write!(f, "window {w}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--since`, `--from/--to` and their misuse.
    #[test]
    fn parses_windows() {
        let w = Window::parse(Some("1h"), None, None, Duration::from_secs(60)).unwrap();
        assert!((3600..=3602).contains(&(w.to - w.from)));
        let w = Window::parse(
            None,
            Some("2025-06-01T12:00:00Z"),
            Some("2025-06-01T13:00:00Z"),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(w.to - w.from, 3600);
        assert!(
            Window::parse(
                Some("1h"),
                Some("2025-06-01T12:00:00Z"),
                None,
                Duration::ZERO
            )
            .is_err()
        );
        assert!(Window::parse(Some("soon"), None, None, Duration::ZERO).is_err());
        assert!(
            Window::parse(
                None,
                Some("2025-06-01T13:00:00Z"),
                Some("2025-06-01T12:00:00Z"),
                Duration::ZERO
            )
            .is_err()
        );
    }

    /// Versions, absolute and relative windows.
    #[test]
    fn parses_sides() {
        assert_eq!(Side::parse("1.2.3").unwrap(), Side::Version("1.2.3".into()));
        let Side::Window(w) = Side::parse("2025-06-01T12:00:00Z..2025-06-01T12:30:00Z").unwrap()
        else {
            panic!()
        };
        assert_eq!(w.to - w.from, 1800);
        let Side::Window(w) = Side::parse("2h..1h").unwrap() else {
            panic!()
        };
        assert!((3599..=3601).contains(&(w.to - w.from)));
        assert!(Side::parse("1h..2h").is_err());
    }
}
