//! The demo service profiled for the agent's end-to-end tests: its versions run one after the other
//! under a [`Fleet`] (real eBPF profiler, real collector, real ClickHouse); then the regression the
//! demo commit caused is stored in the `regressions` table, its shares measured from the stored
//! profiles and its root-cause candidates ranked by the collector's own [`rank_changes`] over the
//! repository's real commits and the runs' deploy times.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fleetprof_collector::{
    detect::{
        self, ChangeRecord, Deploy, Metric, RankConfig, RegressionReport, State, VersionBoundary,
        rank_changes,
    },
    query::{self, By, Side, Window},
    store::{Store, StoreConfig},
};

use crate::{
    demo_repo::DemoRepo,
    fleet::{Fleet, run_service, wait_exit},
};

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When one version of a service ran.
#[derive(Debug, Clone)]
pub struct Run {
    /// The version label the profiler saw (`FLEETPROF_VERSION`).
    pub version: String,
    /// Start, Unix seconds.
    pub start: i64,
    /// End, Unix seconds.
    pub end: i64,
}

/// A store handle on the fleet's database (ClickHouse's default user).
pub fn store(fleet: &Fleet) -> Store {
    Store::new(&StoreConfig::new(fleet.clickhouse.url())).expect("store config")
}

/// Runs `bin --seconds N` as `service` at `version` until it exits; its output is discarded (the
/// regressed demo logs megabytes a second).
pub fn run_version(bin: &Path, service: &str, version: &str, seconds: u64) -> Run {
    let start = unix_now();
    let mut guard = run_service(bin, service, version, seconds, Path::new("/dev/null"))
        .expect("starting the demo service");
    wait_exit(&mut guard, Duration::from_secs(seconds + 30)).expect("the demo service exits");
    Run {
        version: version.to_string(),
        start,
        end: unix_now(),
    }
}

/// The demo repository profiled for real: v1 for `seconds`, then v2 (the root cause) for `seconds`,
/// under service `checkout`; the daemon is stopped afterwards so every sample is stored.
pub fn profile_demo(fleet: &mut Fleet, repo: &DemoRepo, seconds: u64) -> (Run, Run) {
    // The daemon attaches its eBPF programs before sampling.
    std::thread::sleep(Duration::from_secs(2));
    let v1 = run_version(&repo.v1_bin, "checkout", "v1", seconds);
    let v2 = run_version(&repo.v2_bin, "checkout", "v2", seconds);
    // Let the last interval's batch go out, then stop (the daemon flushes on SIGTERM).
    std::thread::sleep(Duration::from_secs(2));
    fleet.stop_profiler().expect("stopping the profiler daemon");
    (v1, v2)
}

/// A commit of the repository as the root-cause ranking sees it: files and the functions whose
/// bodies its hunks touch (from git's `@@ … @@ fn name(` hunk headers).
fn change_record(repo: &Path, sha: &str, deploy: &Run) -> ChangeRecord {
    let git = |args: &[&str]| crate::demo_repo::git(repo, args).expect("git");
    let author = git(&["show", "-s", "--format=%an <%ae>", sha]);
    let title = git(&["show", "-s", "--format=%s", sha]);
    let time: i64 = git(&["show", "-s", "--format=%ct", sha])
        .parse()
        .expect("commit time");
    let files: Vec<String> = git(&["show", "--format=", "--name-only", sha])
        .lines()
        .map(str::to_string)
        .collect();
    let mut functions: Vec<String> = git(&["show", "--format=", "-U0", sha])
        .lines()
        .filter(|l| l.starts_with("@@"))
        .filter_map(|l| {
            let header = l.splitn(3, "@@").nth(2)?;
            let after = &header[header.find("fn ")? + 3..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    // A change that adds lines inside a function shows it in the hunk header of the first hunk
    // only when the hunk starts inside it; the added lines' own `fn` definitions count too.
    functions.extend(
        git(&["show", "--format=", "-U0", sha])
            .lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .filter_map(|l| {
                let after = &l[l.find("fn ")? + 3..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                (!name.is_empty()).then_some(name)
            }),
    );
    functions.sort();
    functions.dedup();
    ChangeRecord {
        id: sha.to_string(),
        author,
        title,
        time_unix_s: time,
        service: Some("checkout".into()),
        touched_files: files,
        touched_functions: functions,
        deploys: vec![Deploy {
            service: Some("checkout".into()),
            time_unix_s: deploy.start,
            version: Some(deploy.version.clone()),
        }],
    }
}

/// What [`store_regression`] stored.
#[derive(Debug, Clone)]
pub struct StoredRegression {
    /// The regression's id.
    pub id: String,
    /// The regressed function.
    pub function: String,
    /// Its total share in v1, 0..=1 (measured).
    pub before: f64,
    /// Its total share in v2, 0..=1 (measured).
    pub after: f64,
    /// The ranked candidates stored with it.
    pub candidates: Vec<detect::Candidate>,
}

/// Stores the demo's regression: the regressed function's total share in v1 and v2 as the stored
/// profiles give it (`query::diff` by version), a report with the onset at v2's deploy, and the
/// repository's commits ranked by the collector's [`rank_changes`] (with the deploys and the
/// version boundary the runs produced). Also fills the `changes` and `deploys` tables.
pub async fn store_regression(
    store: &Store,
    repo: &DemoRepo,
    v1: &Run,
    v2: &Run,
) -> StoredRegression {
    let function = repo.regression.regressed_function().to_string();
    let window = Window {
        from: u32::try_from(v1.start - 120).expect("time"),
        to: u32::try_from(v2.end + 120).expect("time"),
    };
    let rows = query::diff(
        store,
        "checkout",
        &Side::Version(v1.version.clone()),
        &Side::Version(v2.version.clone()),
        window,
        By::Total,
        1000,
    )
    .await
    .expect("diffing v1 and v2");
    let row = rows
        .iter()
        .find(|r| r.function == function)
        .unwrap_or_else(|| panic!("{function} is not in the stored profiles: {rows:?}"));
    let (before, after) = (
        row.baseline_total_pct / 100.0,
        row.comparison_total_pct / 100.0,
    );
    let (self_before, self_after) = (
        row.baseline_self_pct / 100.0,
        row.comparison_self_pct / 100.0,
    );
    let onset = v2.start;
    let member = detect::Regression {
        function: function.clone(),
        file: Some("src/lib.rs".into()),
        metric: Metric::Total,
        onset_bucket: 0,
        onset_unix_s: onset,
        self_before,
        self_after,
        total_before: before,
        total_after: after,
        cores_before: before,
        cores_after: after,
        watts_before: None,
        watts_after: None,
        z: 0.0,
        p_value: 0.0,
        dispersion: 1.0,
        state: State::Open,
        reverted_unix_s: None,
    };
    let report = RegressionReport {
        service: "checkout".into(),
        onset_unix_s: onset,
        state: State::Open,
        z: 0.0,
        p_value: 0.0,
        delta_cores: after - before,
        delta_watts: None,
        members: vec![member],
    };
    let changes = vec![
        change_record(&repo.path, &repo.v1_commit, v1),
        change_record(&repo.path, &repo.v2_commit, v2),
    ];
    let boundaries = vec![VersionBoundary {
        service: "checkout".into(),
        from_version: v1.version.clone(),
        to_version: v2.version.clone(),
        time_unix_s: onset,
    }];
    let candidates = rank_changes(&report, &changes, &boundaries, &RankConfig::default());
    for c in &changes {
        store
            .client()
            .query("INSERT INTO changes SELECT ?, 'checkout', ?, toDateTime(?), ?, ?, ?")
            .bind(c.id.as_str())
            .bind(c.author.as_str())
            .bind(c.time_unix_s as u32)
            .bind(c.title.as_str())
            .bind(&c.touched_files)
            .bind(&c.touched_functions)
            .execute()
            .await
            .expect("inserting a change");
        let d = &c.deploys[0];
        store
            .client()
            .query("INSERT INTO deploys SELECT 'checkout', ?, toDateTime(?), ?")
            .bind(d.version.as_deref().unwrap_or_default())
            .bind(d.time_unix_s as u32)
            .bind(c.id.as_str())
            .execute()
            .await
            .expect("inserting a deploy");
    }
    let id = format!("checkout-{onset}");
    let now = unix_now() as u32;
    store
        .client()
        .query(
            "INSERT INTO regressions SELECT ?, 'checkout', ?, toDateTime(?), toDateTime(?), toDateTime(?), \
             ?, ?, ?, ?, ?, 'open', ?, ?",
        )
        .bind(id.as_str())
        .bind(vec![function.clone()])
        .bind(onset as u32)
        .bind(now)
        .bind(now)
        .bind(before)
        .bind(after)
        .bind(0.0f64)
        .bind(after - before)
        .bind(0.0f64)
        .bind(serde_json::to_string(&candidates).expect("json").as_str())
        .bind(serde_json::to_string(&report).expect("json").as_str())
        .execute()
        .await
        .expect("inserting the regression");
    StoredRegression {
        id,
        function,
        before,
        after,
        candidates,
    }
}
