//! `fleetprof-collector detect`: one detection run over the stored profiles.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleetprof_collector::query::Window;
use fleetprof_collector::regressions::{self, DetectOptions};

use super::regressions::{print_summary, time};
use super::{ClickHouseArgs, OutputFormat};

/// Parses a humantime duration ("90s", "2h") into whole seconds.
pub(crate) fn seconds(s: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; e.g. 30s, 5m, 2h"))?;
    let secs = u32::try_from(d.as_secs()).map_err(|_| "too long".to_owned())?;
    if secs == 0 {
        return Err("must be at least 1s".to_owned());
    }
    Ok(secs)
}

/// The detector's knobs a person may need to turn (the rest keep `DetectorConfig`'s defaults).
#[derive(Debug, Args, Clone)]
pub(crate) struct DetectFlags {
    /// Time bucket of the series. A multiple of 1m reads the minute rollups; shorter buckets
    /// (e.g. 5s, for short tests) are computed from the raw samples. [default: 60s]
    #[arg(long, default_value = "60s", value_parser = seconds, hide_default_value = true)]
    bucket: u32,
    /// Length of each side of the step test: longer finds smaller steps. [default: 2h]
    #[arg(long, default_value = "2h", value_parser = seconds, hide_default_value = true)]
    window: u32,
    /// How long a step must hold after its onset to be reported; younger steps wait. [default: 2h]
    #[arg(long, default_value = "2h", value_parser = seconds, hide_default_value = true)]
    persistence: u32,
    /// Expected false reports per (function, share) series and window from pure noise: the α of
    /// the Bonferroni threshold. [default: 0.001]
    #[arg(long, default_value_t = 1e-3, hide_default_value = true)]
    false_reports: f64,
    /// Smallest reported rise of a share, in percent of its level before (e.g. 10: a 30% share
    /// must reach 33%). Raise it where samples are so many that tiny drifts are significant. [default: 2]
    #[arg(long, default_value_t = 2.0, hide_default_value = true)]
    min_increase_pct: f64,
    /// Functions with less than this percentage of the window's samples are not tested. [default: 0.2]
    #[arg(long, default_value_t = 0.2, hide_default_value = true)]
    min_share_pct: f64,
    /// Also store and print steps that fell back within the persistence period. [default: off]
    #[arg(long)]
    include_went_away: bool,
}

impl Default for DetectFlags {
    fn default() -> Self {
        Self {
            bucket: 60,
            window: 7200,
            persistence: 7200,
            false_reports: 1e-3,
            min_increase_pct: 2.0,
            min_share_pct: 0.2,
            include_went_away: false,
        }
    }
}

impl DetectFlags {
    pub(crate) fn options(&self, window: Window) -> anyhow::Result<DetectOptions> {
        anyhow::ensure!(
            self.false_reports > 0.0 && self.false_reports < 1.0,
            "--false-reports must be between 0 and 1"
        );
        anyhow::ensure!(
            (0.0..100.0).contains(&self.min_share_pct),
            "--min-share-pct must be between 0 and 100"
        );
        anyhow::ensure!(
            self.min_increase_pct >= 0.0,
            "--min-increase-pct must not be negative"
        );
        let mut o = DetectOptions::new(window);
        o.series.bucket_secs = self.bucket;
        o.series.min_share = self.min_share_pct / 100.0;
        o.detector.window_secs = self.window;
        o.detector.persistence_secs = self.persistence;
        o.detector.false_reports_per_series = self.false_reports;
        o.detector.min_relative_increase = self.min_increase_pct / 100.0;
        o.detector.include_went_away = self.include_went_away;
        Ok(o)
    }
}

#[derive(Debug, Args)]
pub(crate) struct DetectArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Only this service (repeatable). [default: every service with samples in the window]
    #[arg(long)]
    service: Vec<String>,
    /// Scan this far back, e.g. 24h, 7d; should cover --window before and after a step plus
    /// --persistence. [default: 24h]
    #[arg(long, conflicts_with = "from")]
    since: Option<String>,
    /// Scan from this time, RFC 3339 (2025-06-01T12:00:00Z). [default: --since 24h]
    #[arg(long)]
    from: Option<String>,
    /// Scan up to this time, RFC 3339. [default: now]
    #[arg(long, requires = "from")]
    to: Option<String>,
    #[command(flatten)]
    flags: DetectFlags,
    /// table (readable text), or json (the stored regressions with report and candidates). [default: table]
    #[arg(long, value_enum, default_value = "table", hide_default_value = true)]
    format: OutputFormat,
}

/// The default scan: the last day.
pub(crate) const DEFAULT_SINCE: Duration = Duration::from_secs(86_400);

pub(crate) async fn run(args: DetectArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    let window = Window::parse(
        args.since.as_deref(),
        args.from.as_deref(),
        args.to.as_deref(),
        DEFAULT_SINCE,
    )?;
    let options = args.flags.options(window)?;
    let run = regressions::run_detection(&store, &args.service, &options)
        .await
        .with_context(|| format!("detecting regressions in {window}"))?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&run.regressions)?),
        OutputFormat::Table => {
            for r in &run.regressions {
                print_summary(r);
                println!();
            }
            let scanned: Vec<String> = run
                .services
                .iter()
                .map(|s| {
                    format!(
                        "{} ({} buckets, {} functions)",
                        s.service, s.buckets, s.functions
                    )
                })
                .collect();
            println!(
                "{} regression(s) in {} service(s) from {} to {}, {}-s buckets: {}",
                run.regressions.len(),
                run.services.len(),
                time(i64::from(window.from)),
                time(i64::from(window.to)),
                options.series.bucket_secs,
                if scanned.is_empty() {
                    "no services with samples".to_owned()
                } else {
                    scanned.join(", ")
                }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DetectArgs,
    }

    /// Defaults match the detector's (1-minute buckets over a day, 2 h window and persistence),
    /// and the short-test overrides parse.
    #[test]
    fn parses_detect_flags() {
        let cli = Cli::try_parse_from(["detect"]).unwrap();
        let o = cli.args.flags.options(Window { from: 0, to: 1 }).unwrap();
        assert_eq!(o.series.bucket_secs, 60);
        assert_eq!(
            o.detector,
            fleetprof_collector::detect::DetectorConfig::default()
        );
        assert!(cli.args.since.is_none() && cli.args.service.is_empty());

        let cli = Cli::try_parse_from([
            "detect",
            "--service",
            "checkout",
            "--service",
            "control",
            "--since",
            "10m",
            "--bucket",
            "5s",
            "--window",
            "30s",
            "--persistence",
            "20s",
            "--format",
            "json",
        ])
        .unwrap();
        let o = cli.args.flags.options(Window { from: 0, to: 1 }).unwrap();
        assert_eq!(cli.args.service, vec!["checkout", "control"]);
        assert_eq!(o.series.bucket_secs, 5);
        assert_eq!(o.detector.window_secs, 30);
        assert_eq!(o.detector.persistence_secs, 20);
        assert!(matches!(cli.args.format, OutputFormat::Json));

        assert!(Cli::try_parse_from(["detect", "--bucket", "0s"]).is_err());
        assert!(
            Cli::try_parse_from(["detect", "--since", "1h", "--from", "2025-01-01T00:00:00Z"])
                .is_err()
        );
    }
}
