//! The daemon's configuration: the one loader for `fleetprof-profiler run`.
//!
//! Values come from, lowest precedence first: [`DaemonConfig::default`], a TOML file
//! (`--config`, see `profiler/dist/fleetprof-profiler.example.toml`), then command-line flags
//! ([`Overrides`]). Unknown keys in the file are an error, so a typo is never silently ignored.
//!
//! ```
//! use fleetprof_profiler::config::{DaemonConfig, Overrides};
//! let mut config: DaemonConfig = toml::from_str(r#"
//!     collector = "http://collector:4317"
//!     interval = "10s"
//!     [[service]]
//!     cgroup = '^/system\.slice/nginx\.service$'
//!     service = "nginx"
//! "#)?;
//! config.apply(Overrides { frequency_hz: Some(49), ..Default::default() });
//! config.validate()?;
//! assert_eq!(config.frequency_hz, 49);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{bpf::DEFAULT_FREQUENCY_HZ, process::ServiceRule};

/// Default spool directory (systemd's `StateDirectory=fleetprof` creates `/var/lib/fleetprof`).
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/fleetprof/spool";
/// Default spool bound: 256 MiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;

/// Everything `fleetprof-profiler run` needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The collector's gRPC URL, `http://host:4317` or `https://host:4317` (TLS). Required.
    pub collector: String,
    /// How often a batch is finished and shipped. Default: 10 s.
    #[serde(with = "human_duration")]
    pub interval: Duration,
    /// File holding the bearer token the collector expects. Default: none (no authentication).
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the collector's certificate, for private CAs.
    /// Default: none (the Web PKI roots are trusted).
    pub tls_ca_file: Option<PathBuf>,
    /// Where batches wait for the collector. Default: `/var/lib/fleetprof/spool`.
    pub spool_dir: PathBuf,
    /// Largest total size of spooled batches; the oldest are dropped (and counted) beyond it.
    /// Default: 256 MiB.
    pub spool_max_bytes: u64,
    /// Samples per second per CPU. Default: 19 Hz.
    pub frequency_hz: u32,
    /// Address for Prometheus `/metrics` and `/healthz`. Default: none (off).
    pub metrics_listen: Option<SocketAddr>,
    /// Time allowed to open a connection to the collector. Default: 5 s.
    #[serde(with = "human_duration")]
    pub connect_timeout: Duration,
    /// Time allowed for one push, including the collector's answer. Default: 15 s.
    #[serde(with = "human_duration")]
    pub request_timeout: Duration,
    /// First wait after a failed push; doubled (with jitter) after each further failure. Default: 1 s.
    #[serde(with = "human_duration")]
    pub retry_initial_backoff: Duration,
    /// Longest wait between pushes while the collector is failing. Default: 60 s.
    #[serde(with = "human_duration")]
    pub retry_max_backoff: Duration,
    /// At SIGTERM, how long to keep trying to ship before leaving the rest in the spool. Default: 10 s.
    #[serde(with = "human_duration")]
    pub shutdown_timeout: Duration,
    /// Also sample the profiler itself. Default: false.
    pub include_self: bool,
    /// Distinct (thread, stack) keys the kernel keeps between drains. Default: the sampler's.
    pub counts_entries: u32,
    /// Distinct stacks the kernel keeps between drains. Default: the sampler's.
    pub stack_entries: u32,
    /// Rows of unwind tables the kernel holds for every process's frame-pointer-less code
    /// (8 bytes each, allocated at start; tables beyond it are counted and walked by frame
    /// pointers). Default: 4,000,000 (32 MB).
    pub unwind_rows: u32,
    /// When a table does not fit in `unwind_rows`, processes not sampled for this long give up
    /// theirs to make room (they are described again when next sampled). Default: 30s.
    #[serde(with = "human_duration")]
    pub unwind_evict_idle_after: Duration,
    /// Walk stacks with `.eh_frame` unwind tables where a module has no frame pointers (whole
    /// stacks for distribution and release binaries); false walks frame pointers only.
    /// Default: true. `record` always uses the tables.
    pub unwind_tables: bool,
    /// Service naming rules, first match wins (`[[service]]` tables: `cgroup` and/or `exe`
    /// regexes, `service`, optional `version`). Default: none (the environment, then the
    /// executable's name).
    #[serde(rename = "service")]
    pub services: Vec<ServiceRule>,
    /// Read RAPL energy counters from this powercap directory (laid out like
    /// `/sys/class/powercap`) instead of detecting them. Default: none (powercap under /sys,
    /// then the perf `power` PMU).
    pub powercap_dir: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            collector: String::new(),
            interval: Duration::from_secs(10),
            token_file: None,
            tls_ca_file: None,
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            frequency_hz: DEFAULT_FREQUENCY_HZ,
            metrics_listen: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            retry_initial_backoff: Duration::from_secs(1),
            retry_max_backoff: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            include_self: false,
            counts_entries: profiler_ebpf::DEFAULT_COUNTS_ENTRIES,
            stack_entries: profiler_ebpf::DEFAULT_STACK_ENTRIES,
            unwind_rows: profiler_ebpf::DEFAULT_UNWIND_ROWS,
            unwind_evict_idle_after: crate::unwind::DEFAULT_EVICT_IDLE_AFTER,
            unwind_tables: true,
            services: Vec::new(),
            powercap_dir: None,
        }
    }
}

/// Command-line values that, when given, replace the file's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--collector`.
    pub collector: Option<String>,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--spool-dir`.
    pub spool_dir: Option<PathBuf>,
    /// `--spool-max-bytes`.
    pub spool_max_bytes: Option<u64>,
    /// `--frequency`.
    pub frequency_hz: Option<u32>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--powercap-dir`.
    pub powercap_dir: Option<PathBuf>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the key and line).
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or missing.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl DaemonConfig {
    /// Reads a TOML file on top of the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The defaults, or the file's values when `path` is given.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::default()), Self::from_file)
    }

    /// Replaces values with the flags that were given.
    pub fn apply(&mut self, o: Overrides) {
        if let Some(v) = o.collector {
            self.collector = v;
        }
        if let Some(v) = o.interval {
            self.interval = v;
        }
        if let Some(v) = o.token_file {
            self.token_file = Some(v);
        }
        if let Some(v) = o.spool_dir {
            self.spool_dir = v;
        }
        if let Some(v) = o.spool_max_bytes {
            self.spool_max_bytes = v;
        }
        if let Some(v) = o.frequency_hz {
            self.frequency_hz = v;
        }
        if let Some(v) = o.metrics_listen {
            self.metrics_listen = Some(v);
        }
        if let Some(v) = o.powercap_dir {
            self.powercap_dir = Some(v);
        }
    }

    /// Checks what serde cannot: required values and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.collector.is_empty() {
            return invalid(
                "no collector URL: pass --collector URL or set `collector` in the file",
            );
        }
        if !(self.collector.starts_with("http://") || self.collector.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "collector URL {:?} must start with http:// or https://",
                self.collector
            )));
        }
        if self.interval < Duration::from_secs(1) {
            return invalid("interval must be at least 1s (the maps are drained every second)");
        }
        // The collector refuses windows longer than an hour.
        if self.interval > Duration::from_secs(3600) {
            return invalid("interval must be at most 1h");
        }
        if self.frequency_hz == 0 || self.frequency_hz > 10_000 {
            return invalid("frequency must be between 1 and 10000 Hz");
        }
        if self.spool_max_bytes < 1 << 20 {
            return invalid("spool_max_bytes must be at least 1 MiB");
        }
        if self.retry_initial_backoff.is_zero()
            || self.retry_max_backoff < self.retry_initial_backoff
        {
            return invalid(
                "retry_initial_backoff must be > 0 and no longer than retry_max_backoff",
            );
        }
        Ok(())
    }
}

/// Durations as humantime strings (`"10s"`, `"500ms"`, `"2m"`).
mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../dist/fleetprof-profiler.example.toml");

    /// The shipped example config parses, validates and sets every documented value.
    #[test]
    fn example_config_parses() {
        let config: DaemonConfig = toml::from_str(EXAMPLE).expect("example parses");
        config.validate().expect("example is valid");
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.spool_max_bytes, 256 << 20);
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.services[0].service, "nginx");
        assert!(config.services[0].cgroup.is_some());
    }

    /// A misspelled key is an error naming the key, not silently ignored.
    #[test]
    fn unknown_field_rejected() {
        let err = toml::from_str::<DaemonConfig>("collector = 'http://x:1'\nintervall = '5s'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall"), "{err}");
        let err = toml::from_str::<DaemonConfig>("[[service]]\nservice = 'a'\nexe_path = 'x'")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exe_path"), "{err}");
    }

    /// Flags replace file values; values not given on the command line keep the file's.
    #[test]
    fn flags_override_file() {
        let mut config: DaemonConfig =
            toml::from_str("collector = 'http://a:1'\ninterval = '30s'\nfrequency_hz = 99")
                .unwrap();
        config.apply(Overrides {
            interval: Some(Duration::from_secs(2)),
            ..Default::default()
        });
        assert_eq!(config.interval, Duration::from_secs(2));
        assert_eq!(config.frequency_hz, 99);
        assert_eq!(config.collector, "http://a:1");
    }

    /// A missing collector URL and a bad interval are reported.
    #[test]
    fn validation_catches_missing_and_out_of_range() {
        assert!(DaemonConfig::default().validate().is_err());
        let mut config = DaemonConfig {
            collector: "http://a:1".into(),
            ..Default::default()
        };
        config.validate().unwrap();
        config.interval = Duration::from_millis(200);
        assert!(config.validate().is_err());
        config.interval = Duration::from_secs(10);
        config.collector = "a:1".into();
        assert!(config.validate().is_err());
    }
}
