//! Root-cause ranking: which recent change most likely caused a regression.
//!
//! Evidence, strongest first, and what each adds to a candidate's score:
//! - **Version boundary** (up to +10): the samples show the service switching version `A → B` within
//!   [`RankConfig::onset_tolerance_secs`] of the onset, and the change's deploy is version `B`; a deploy
//!   without a version that coincides with such a boundary in time gets up to +5. Both shrink linearly
//!   with the boundary's distance from the onset, so the boundary nearest the onset wins.
//! - **Time proximity** (up to +3): `3·exp(−lag/proximity_scale_secs)` for a deploy `lag` seconds
//!   before the onset. A change whose every deploy to the service came after the onset (beyond the
//!   tolerance) cannot have caused it: score 0.
//! - **Overlap** (+4 for the first regressed function the change touched, +1 per further one; +2 if it
//!   touched a regressed function's source file).
//! - A change recorded for another service, with no deploy to this one, has its score quartered
//!   (shared libraries do cause regressions elsewhere, but rarely).

use serde::{Deserialize, Serialize};

use super::RegressionReport;

/// A code or configuration change that may have caused a regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRecord {
    /// Commit SHA or change id.
    pub id: String,
    /// Who made it; the fix-forward goes to them.
    pub author: String,
    /// Commit or PR title.
    pub title: String,
    /// When it landed, seconds since the Unix epoch; stands in for the deploy time if there is none.
    pub time_unix_s: i64,
    /// The service it belongs to, if it belongs to one.
    #[serde(default)]
    pub service: Option<String>,
    /// Paths it touched.
    #[serde(default)]
    pub touched_files: Vec<String>,
    /// Functions it touched (names as in the profiles, or their last path segments).
    #[serde(default)]
    pub touched_functions: Vec<String>,
    /// Where and when it went live.
    #[serde(default)]
    pub deploys: Vec<Deploy>,
}

/// One deploy of a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// The service deployed to; `None` for every service.
    #[serde(default)]
    pub service: Option<String>,
    /// Seconds since the Unix epoch.
    pub time_unix_s: i64,
    /// The version this deploy introduced, as the samples' metadata names it.
    #[serde(default)]
    pub version: Option<String>,
}

/// A version switch seen in a service's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionBoundary {
    /// The service.
    pub service: String,
    /// The version before.
    pub from_version: String,
    /// The version after.
    pub to_version: String,
    /// When the samples switched, seconds since the Unix epoch.
    pub time_unix_s: i64,
}

/// Tuning of [`rank_changes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankConfig {
    /// How far a version boundary or deploy may be from the detected onset and still count as "at" it
    /// (the onset is only known to a bucket or two). Default: 300 s.
    pub onset_tolerance_secs: i64,
    /// Decay of the proximity score with a deploy's lag before the onset. Default: 3600 s.
    pub proximity_scale_secs: f64,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self {
            onset_tolerance_secs: 300,
            proximity_scale_secs: 3600.0,
        }
    }
}

/// A ranked change, with the evidence behind its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The change's id.
    pub change_id: String,
    /// Its author.
    pub author: String,
    /// Its title.
    pub title: String,
    /// Higher is likelier; 0 means ruled out.
    pub score: f64,
    /// Why, one human-readable line per piece of evidence.
    pub evidence: Vec<String>,
}

/// Ranks `changes` as the cause of `report`, likeliest first (ties: the later deploy first).
///
/// `boundaries` are the version switches seen in the samples, of any service; the scoring is
/// described in the module documentation above.
pub fn rank_changes(
    report: &RegressionReport,
    changes: &[ChangeRecord],
    boundaries: &[VersionBoundary],
    config: &RankConfig,
) -> Vec<Candidate> {
    let onset = report.onset_unix_s;
    let tol = config.onset_tolerance_secs.max(1);
    let near: Vec<&VersionBoundary> = boundaries
        .iter()
        .filter(|b| b.service == report.service && (b.time_unix_s - onset).abs() <= tol)
        .collect();
    let mut ranked: Vec<(Candidate, i64)> = changes
        .iter()
        .map(|c| {
            let (cand, when) = score(report, c, &near, config, tol);
            (cand, when)
        })
        .collect();
    ranked.sort_by(|(a, ta), (b, tb)| b.score.total_cmp(&a.score).then(tb.cmp(ta)));
    ranked.into_iter().map(|(c, _)| c).collect()
}

fn score(
    report: &RegressionReport,
    change: &ChangeRecord,
    near: &[&VersionBoundary],
    config: &RankConfig,
    tol: i64,
) -> (Candidate, i64) {
    let onset = report.onset_unix_s;
    let mut evidence = Vec::new();
    let mut score = 0.0;
    let here: Vec<&Deploy> = change
        .deploys
        .iter()
        .filter(|d| d.service.as_deref().is_none_or(|s| s == report.service))
        .collect();
    let fallback;
    let deploys: Vec<&Deploy> = if here.is_empty() {
        evidence
            .push("no deploy to this service recorded; using the change's landing time".to_owned());
        fallback = Deploy {
            service: None,
            time_unix_s: change.time_unix_s,
            version: None,
        };
        vec![&fallback]
    } else {
        here
    };
    // The deploy that could have caused the onset: the latest one not after it.
    let live = deploys
        .iter()
        .filter(|d| d.time_unix_s <= onset + tol)
        .max_by_key(|d| d.time_unix_s);
    let candidate = |score: f64, evidence: Vec<String>| Candidate {
        change_id: change.id.clone(),
        author: change.author.clone(),
        title: change.title.clone(),
        score,
        evidence,
    };
    let Some(live) = live else {
        let first = deploys
            .iter()
            .map(|d| d.time_unix_s)
            .min()
            .unwrap_or(change.time_unix_s);
        evidence.push(format!(
            "deployed {} after the onset: cannot have caused it",
            span(first - onset)
        ));
        return (candidate(0.0, evidence), first);
    };

    for b in near {
        let closeness = 1.0 - (b.time_unix_s - onset).abs() as f64 / (2 * tol) as f64;
        if live.version.as_deref() == Some(b.to_version.as_str()) {
            score += 10.0 * closeness;
            evidence.push(format!(
                "version boundary {} → {} {} the onset is this change's deploy",
                b.from_version,
                b.to_version,
                relative(b.time_unix_s - onset)
            ));
        } else if live.version.is_none() && (live.time_unix_s - b.time_unix_s).abs() <= tol {
            score += 5.0 * closeness;
            evidence.push(format!(
                "deployed at the version boundary {} → {} {} the onset",
                b.from_version,
                b.to_version,
                relative(b.time_unix_s - onset)
            ));
        }
    }

    let lag = (onset - live.time_unix_s).max(0) as f64;
    score += 3.0 * (-lag / config.proximity_scale_secs.max(1.0)).exp();
    evidence.push(format!(
        "deployed {} the onset",
        relative(live.time_unix_s - onset)
    ));

    let mut hits = 0;
    for m in &report.members {
        if change
            .touched_functions
            .iter()
            .any(|t| same_function(t, &m.function))
        {
            score += if hits == 0 { 4.0 } else { 1.0 };
            hits += 1;
            evidence.push(format!("touches regressed function {}", m.function));
        }
    }
    let file_hit = report
        .members
        .iter()
        .filter_map(|m| m.file.as_deref())
        .find(|file| change.touched_files.iter().any(|t| same_file(t, file)));
    if let Some(file) = file_hit {
        score += 2.0;
        evidence.push(format!(
            "touches {file}, the source of a regressed function"
        ));
    }

    if let Some(s) = &change.service
        && *s != report.service
        && change
            .deploys
            .iter()
            .all(|d| d.service.as_deref() != Some(report.service.as_str()))
    {
        score *= 0.25;
        evidence.push(format!("change belongs to service {s}"));
    }
    (candidate(score, evidence), live.time_unix_s)
}

/// `parse` matches `crate::config::parse`, and generics or hashes after the name do not matter.
fn same_function(touched: &str, symbol: &str) -> bool {
    let strip = |s: &str| -> String {
        let s = s.split('<').next().unwrap_or(s);
        s.trim_end_matches([')', '(']).to_owned()
    };
    let (t, s) = (strip(touched), strip(symbol));
    !t.is_empty() && (t == s || s.ends_with(&format!("::{t}")) || t.ends_with(&format!("::{s}")))
}

/// Paths match when one ends with the other at a `/` (profiles and repositories root paths differently).
fn same_file(touched: &str, file: &str) -> bool {
    let (a, b) = if touched.len() >= file.len() {
        (touched, file)
    } else {
        (file, touched)
    };
    !b.is_empty() && (a == b || a.ends_with(&format!("/{}", b.trim_start_matches('/'))))
}

fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn relative(secs: i64) -> String {
    match secs {
        0 => "exactly at".to_owned(),
        s if s < 0 => format!("{} before", span(s)),
        s => format!("{} after", span(s)),
    }
}
