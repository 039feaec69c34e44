use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};

use super::*;

const DAY: usize = 1440;
const START: i64 = 1_700_000_000;

/// Binomial counts with share `p(i)` out of `n` per bucket.
fn counts(rng: &mut StdRng, n: u32, p: impl Fn(usize) -> f64) -> Vec<u32> {
    (0..DAY)
        .map(|i| {
            Binomial::new(u64::from(n), p(i))
                .expect("valid p")
                .sample(rng) as u32
        })
        .collect()
}

fn function(name: &str, callers: &[&str], k: Vec<u32>) -> FunctionSeries {
    FunctionSeries {
        function: name.to_owned(),
        file: Some(format!("src/{name}.rs")),
        callers: callers.iter().map(|&c| c.to_owned()).collect(),
        k_total: k.clone(),
        k_self: k,
    }
}

fn service(n: u32, functions: Vec<FunctionSeries>) -> ServiceSeries {
    ServiceSeries {
        service: "svc".to_owned(),
        start_unix_s: START,
        bucket_secs: 60,
        frequency_hz: 19.0,
        samples: vec![n; DAY],
        energy_joules: Vec::new(),
        functions,
    }
}

fn step(at: usize, until: usize, lo: f64, hi: f64) -> impl Fn(usize) -> f64 {
    move |i| if (at..until).contains(&i) { hi } else { lo }
}

/// Detects over a service that spends every sample under `handle_request` (which has no self
/// time) in `callees` (name, counts per bucket); returns the reports and their members' names.
fn detect_under_one_handler(
    callees: Vec<(&str, Vec<u32>)>,
) -> (Vec<RegressionReport>, Vec<String>) {
    let samples: Vec<u32> = (0..DAY)
        .map(|i| callees.iter().map(|(_, k)| k[i]).sum())
        .collect();
    let handler = FunctionSeries {
        function: "handle_request".to_owned(),
        file: None,
        callers: vec![],
        k_total: samples.clone(),
        k_self: vec![0; DAY],
    };
    let mut functions = vec![handler];
    functions.extend(
        callees
            .into_iter()
            .map(|(name, k)| function(name, &["handle_request"], k)),
    );
    let mut s = service(0, functions);
    s.samples = samples;
    let reports = detect(&s, &DetectorConfig::default()).expect("valid");
    let names = reports
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.function.clone()))
        .collect();
    (reports, names)
}

/// A 5σ step in noisy counts is reported once, at its onset (± 2 buckets), with its shares and cost.
#[test]
fn clear_step_found_at_onset() {
    let mut rng = StdRng::seed_from_u64(1);
    let (n, p) = (1000, 0.05);
    let sigma = (p * (1.0 - p) / f64::from(n)).sqrt();
    let k = counts(&mut rng, n, step(600, DAY, p, p + 5.0 * sigma));
    let mut s = service(n, vec![function("hot", &[], k)]);
    s.energy_joules = vec![Some(6000.0); DAY];
    let reports = detect(&s, &DetectorConfig::default()).expect("valid");
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    let m = &r.members[0];
    assert!(
        m.onset_bucket.abs_diff(600) <= 2,
        "onset {}",
        m.onset_bucket
    );
    assert_eq!(r.state, State::Open);
    assert!(
        (m.total_before - p).abs() < 2.0 * sigma,
        "before {}",
        m.total_before
    );
    assert!(
        (m.total_after - (p + 5.0 * sigma)).abs() < 2.0 * sigma,
        "after {}",
        m.total_after
    );
    // 1000 samples per minute at 19 Hz is 0.877 cores; the function gained 5σ of it.
    let cores = 1000.0 / (60.0 * 19.0);
    assert!(
        (r.delta_cores - 5.0 * sigma * cores).abs() < 2.0 * sigma * cores,
        "{}",
        r.delta_cores
    );
    // 6000 J per minute is 100 W.
    assert!((r.delta_watts.expect("energy known") - 500.0 * sigma).abs() < 200.0 * sigma);
    assert!(r.p_value < 1e-6 && r.z > 5.0);
}

/// Pure binomial noise, over many series and share levels, yields no report.
#[test]
fn pure_noise_reports_nothing() {
    let mut rng = StdRng::seed_from_u64(2);
    for (j, &(n, p)) in [(200, 0.01), (1000, 0.05), (5000, 0.2), (200, 0.5)]
        .iter()
        .enumerate()
    {
        let fns = (0..25)
            .map(|i| function(&format!("f{j}_{i}"), &[], counts(&mut rng, n, |_| p)))
            .collect();
        let reports = detect(&service(n, fns), &DetectorConfig::default()).expect("valid");
        assert!(reports.is_empty(), "n={n} p={p}: {reports:#?}");
    }
}

/// Daily seasonality of ±30% in a function's share is not a step.
#[test]
fn seasonality_reports_nothing() {
    let mut rng = StdRng::seed_from_u64(3);
    let season =
        |i: usize| 0.1 * (1.0 + 0.3 * (i as f64 * std::f64::consts::TAU / DAY as f64).sin());
    let fns = (0..10)
        .map(|i| function(&format!("f{i}"), &[], counts(&mut rng, 5000, season)))
        .collect();
    let reports = detect(&service(5000, fns), &DetectorConfig::default()).expect("valid");
    assert!(reports.is_empty(), "{reports:#?}");
}

/// A step that reverts after 40 minutes is not reported, and is marked went-away when asked for.
#[test]
fn went_away_step_not_reported() {
    let mut rng = StdRng::seed_from_u64(4);
    let k = counts(&mut rng, 1000, step(600, 640, 0.05, 0.08));
    let s = service(1000, vec![function("blip", &[], k)]);
    assert!(
        detect(&s, &DetectorConfig::default())
            .expect("valid")
            .is_empty()
    );
    let config = DetectorConfig {
        include_went_away: true,
        ..DetectorConfig::default()
    };
    let reports = detect(&s, &config).expect("valid");
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0].state, State::WentAway);
    let reverted = reports[0].members[0].reverted_unix_s.expect("revert found");
    assert!(
        (reverted - (START + 640 * 60)).abs() <= 120,
        "reverted at {reverted}"
    );
}

/// A step that held for five hours and then reverted is reported as fixed.
#[test]
fn long_step_then_revert_is_fixed() {
    let mut rng = StdRng::seed_from_u64(5);
    let k = counts(&mut rng, 1000, step(400, 700, 0.05, 0.08));
    let reports = detect(
        &service(1000, vec![function("slow", &[], k)]),
        &DetectorConfig::default(),
    )
    .expect("ok");
    assert_eq!(reports.len(), 1, "{reports:#?}");
    assert_eq!(reports[0].state, State::Fixed);
    assert!(reports[0].members[0].onset_bucket.abs_diff(400) <= 2);
}

/// Cost moving from one callee to its sibling (same caller, caller's total flat) is suppressed;
/// the same rise without the matching fall is reported.
#[test]
fn cost_shift_suppressed() {
    let mut rng = StdRng::seed_from_u64(6);
    let n = 2000;
    let a = counts(&mut rng, n, step(700, DAY, 0.10, 0.06));
    let b = counts(&mut rng, n, step(700, DAY, 0.05, 0.09));
    let rest = counts(&mut rng, n, |_| 0.05);
    let caller_total: Vec<u32> = (0..DAY).map(|i| a[i] + b[i] + rest[i]).collect();
    let caller = FunctionSeries {
        function: "handler".to_owned(),
        file: None,
        callers: vec![],
        k_total: caller_total,
        k_self: rest,
    };
    let s = service(
        n,
        vec![
            caller.clone(),
            function("old_path", &["handler"], a),
            function("new_path", &["handler"], b.clone()),
        ],
    );
    let reports = detect(&s, &DetectorConfig::default()).expect("valid");
    assert!(reports.is_empty(), "{reports:#?}");

    // Without the decrease the caller's total rises with the callee: a real regression.
    let flat = counts(&mut rng, n, |_| 0.10);
    let total: Vec<u32> = (0..DAY)
        .map(|i| flat[i] + b[i] + caller.k_self[i])
        .collect();
    let caller = FunctionSeries {
        k_total: total,
        ..caller
    };
    let s = service(
        n,
        vec![
            caller,
            function("old_path", &["handler"], flat),
            function("new_path", &["handler"], b),
        ],
    );
    let reports = detect(&s, &DetectorConfig::default()).expect("valid");
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let names: Vec<&str> = reports[0]
        .members
        .iter()
        .map(|m| m.function.as_str())
        .collect();
    assert!(names.contains(&"new_path"), "{names:?}");
}

/// A service that spends all its time under one handler, at a steady request rate: one callee
/// gets slower, so the service's samples grow, its siblings' shares fall while their cost stays
/// the same, and the handler keeps a 100% share. That is a regression, not a cost shift.
#[test]
fn slower_callee_of_a_dominant_caller_is_reported() {
    let mut rng = StdRng::seed_from_u64(8);
    // Siblings keep 600 samples per bucket; the slow callee goes from 400 to 600.
    let slow = |i: usize| if i < 700 { 400.0 } else { 600.0 };
    let draw = |rng: &mut StdRng, mean: f64| {
        rand_distr::Poisson::new(mean).expect("mean").sample(rng) as u32
    };
    let siblings: Vec<u32> = (0..DAY).map(|_| draw(&mut rng, 600.0)).collect();
    let callee: Vec<u32> = (0..DAY).map(|i| draw(&mut rng, slow(i))).collect();
    let (reports, names) =
        detect_under_one_handler(vec![("price_items", callee), ("render_receipt", siblings)]);
    assert!(names.iter().any(|n| n == "price_items"), "{reports:#?}");
    assert!(!names.iter().any(|n| n == "render_receipt"), "{names:?}");
}

/// A CPU-bound service (a fixed number of samples per bucket) under one handler: one callee gets
/// slower, so fewer requests get through and its siblings lose absolute cost in proportion, the
/// largest of them by more than half the callee's rise. Nothing moved between them: a regression.
#[test]
fn slower_callee_of_a_cpu_bound_service_is_reported() {
    let mut rng = StdRng::seed_from_u64(9);
    let n = 1000;
    // Per request: 33 units in the callee, 37 + 19 + 11 in its siblings; then the callee takes 50.
    let per_request = |i: usize| if i < 700 { 33.0 } else { 50.0 };
    let share = move |i: usize, units: f64| units / (per_request(i) + 67.0);
    let callee = counts(&mut rng, n, move |i| share(i, per_request(i)));
    let render = counts(&mut rng, n, move |i| share(i, 37.0));
    let parse = counts(&mut rng, n, move |i| share(i, 19.0));
    // Independent draws may sum past the bucket; the remainder of a CPU-bound bucket is tax.
    let tax: Vec<u32> = (0..DAY)
        .map(|i| n.saturating_sub(callee[i] + render[i] + parse[i]))
        .collect();
    let (reports, names) = detect_under_one_handler(vec![
        ("price_items", callee),
        ("render_receipt", render),
        ("parse_request", parse),
        ("compute_tax", tax),
    ]);
    assert!(names.iter().any(|n| n == "price_items"), "{reports:#?}");
}

/// The same slower callee while the service gets 40% fewer samples from the onset on (a busy
/// machine, or fewer requests): every function's own cost falls, the callee's less than the
/// rest. Its larger share is still the regression, not cost moved from its largest sibling
/// (session 6's failing end-to-end run: `discounted_price` +4.7 points while `mix`, 60% of the
/// service, fell with everything else).
#[test]
fn slower_callee_of_a_service_losing_cpu_is_reported() {
    let mut rng = StdRng::seed_from_u64(10);
    let onset = 700;
    let n = |i: usize| if i < onset { 1000u32 } else { 600 };
    // Per request: 33 units in the callee, 61 in its dominant sibling, 6 in a small one.
    let per_request = |i: usize| if i < onset { 33.0 } else { 45.0 };
    let share = move |i: usize, units: f64| units / (per_request(i) + 67.0);
    let mut draw = |p: &dyn Fn(usize) -> f64| -> Vec<u32> {
        (0..DAY)
            .map(|i| {
                Binomial::new(u64::from(n(i)), p(i))
                    .expect("valid p")
                    .sample(&mut rng) as u32
            })
            .collect()
    };
    let callee = draw(&|i| share(i, per_request(i)));
    let mix = draw(&|i| share(i, 61.0));
    let parse: Vec<u32> = (0..DAY)
        .map(|i| n(i).saturating_sub(callee[i] + mix[i]))
        .collect();
    let (reports, names) = detect_under_one_handler(vec![
        ("discounted_price", callee),
        ("mix", mix),
        ("parse_request", parse),
    ]);
    assert!(
        names.iter().any(|n| n == "discounted_price"),
        "{reports:#?}"
    );
}

/// A callee's rise and its caller's total rise at the same onset become one report with two
/// members; an unrelated function rising at the same time stays a separate report.
#[test]
fn grouping_merges_same_onset_members() {
    let mut rng = StdRng::seed_from_u64(7);
    let n = 2000;
    let callee = counts(&mut rng, n, step(500, DAY, 0.05, 0.08));
    let own = counts(&mut rng, n, |_| 0.05);
    let caller = FunctionSeries {
        function: "outer".to_owned(),
        file: None,
        callers: vec![],
        k_total: (0..DAY).map(|i| callee[i] + own[i]).collect(),
        k_self: own,
    };
    let other = counts(&mut rng, n, step(501, DAY, 0.05, 0.08));
    let s = service(
        n,
        vec![
            caller,
            function("inner", &["outer"], callee),
            function("elsewhere", &[], other),
        ],
    );
    let reports = detect(&s, &DetectorConfig::default()).expect("valid");
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let mut sizes: Vec<usize> = reports.iter().map(|r| r.members.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1, 2]);
    let pair = reports
        .iter()
        .find(|r| r.members.len() == 2)
        .expect("merged");
    let mut names: Vec<&str> = pair.members.iter().map(|m| m.function.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["inner", "outer"]);
}

/// Mismatched vector lengths are an error, not a panic.
#[test]
fn length_mismatch_is_error() {
    let mut s = service(100, vec![function("f", &[], vec![1; DAY])]);
    s.functions[0].k_self.pop();
    assert!(matches!(
        detect(&s, &DetectorConfig::default()),
        Err(DetectError::LengthMismatch { .. })
    ));
}

fn change(id: &str, deploy_at: i64, version: &str, functions: &[&str]) -> ChangeRecord {
    ChangeRecord {
        id: id.to_owned(),
        author: format!("{id}@example.com"),
        title: format!("change {id}"),
        time_unix_s: deploy_at - 3600,
        service: Some("svc".to_owned()),
        touched_files: vec![],
        touched_functions: functions.iter().map(|&f| f.to_owned()).collect(),
        deploys: vec![Deploy {
            service: Some("svc".to_owned()),
            time_unix_s: deploy_at,
            version: Some(version.to_owned()),
        }],
    }
}

fn report_at(onset: i64, function: &str) -> RegressionReport {
    let m = Regression {
        function: function.to_owned(),
        file: Some("src/parse.rs".to_owned()),
        metric: Metric::Total,
        onset_bucket: 0,
        onset_unix_s: onset,
        self_before: 0.05,
        self_after: 0.08,
        total_before: 0.05,
        total_after: 0.08,
        cores_before: 1.0,
        cores_after: 1.6,
        watts_before: None,
        watts_after: None,
        z: 20.0,
        p_value: 1e-20,
        dispersion: 1.0,
        state: State::Open,
        reverted_unix_s: None,
    };
    RegressionReport {
        service: "svc".to_owned(),
        onset_unix_s: onset,
        state: State::Open,
        z: 20.0,
        p_value: 1e-20,
        delta_cores: 0.6,
        delta_watts: None,
        members: vec![m],
    }
}

/// The change whose deploy is the version boundary at the onset ranks first, above a change that
/// touched the regressed function but deployed an hour earlier; one deployed after the onset scores 0.
#[test]
fn root_cause_ranks_version_boundary_first() {
    let onset = START + 600 * 60;
    let report = report_at(onset, "app::parse");
    let changes = vec![
        change("early", onset - 3600, "v1", &["parse"]),
        change("boundary", onset - 60, "v2", &[]),
        change("late", onset + 1800, "v3", &["parse"]),
    ];
    let boundaries = vec![
        VersionBoundary {
            service: "svc".into(),
            from_version: "v0".into(),
            to_version: "v1".into(),
            time_unix_s: onset - 3600,
        },
        VersionBoundary {
            service: "svc".into(),
            from_version: "v1".into(),
            to_version: "v2".into(),
            time_unix_s: onset - 60,
        },
    ];
    let ranked = rank_changes(&report, &changes, &boundaries, &RankConfig::default());
    let ids: Vec<&str> = ranked.iter().map(|c| c.change_id.as_str()).collect();
    assert_eq!(ids, vec!["boundary", "early", "late"], "{ranked:#?}");
    assert!(
        ranked[0]
            .evidence
            .iter()
            .any(|e| e.contains("version boundary v1 → v2")),
        "{:?}",
        ranked[0].evidence
    );
    assert!(
        ranked[1]
            .evidence
            .iter()
            .any(|e| e.contains("touches regressed function app::parse"))
    );
    assert_eq!(ranked[2].score, 0.0);
}

/// Reports and inputs survive a JSON round trip (they are stored as JSON).
#[test]
fn types_round_trip_json() {
    let r = report_at(START, "f");
    let back: RegressionReport =
        serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
    assert_eq!(back, r);
    let config: DetectorConfig =
        serde_json::from_str(r#"{"window_secs": 3600}"#).expect("partial config");
    assert_eq!(config.window_secs, 3600);
    assert_eq!(
        config.persistence_secs,
        DetectorConfig::default().persistence_secs
    );
}
