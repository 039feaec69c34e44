//! Query latency over a synthetic day of a fleet: `HOSTS` hosts (default 1,000), each running
//! one of 20 services, one day of one-minute sample rows, in a throwaway local ClickHouse.
//!
//! The day is generated inside ClickHouse (`INSERT ... SELECT FROM numbers()`, hour by hour),
//! with the stacks stored once and the per-minute rollups aggregated as the collector would;
//! generation is reported but not part of any figure. Then each question is asked three times
//! and the median wall time printed: `query top` over 1 h and 24 h, `query flamegraph` over 1 h,
//! `query diff` of two versions over 24 h, and `detect` over every service for 24 h (once).
//!
//! `cargo bench -p fleetprof-collector --bench query` (env `HOSTS`, `ROWS_PER_HOST_MINUTE`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleetprof_collector::detect::{self, DetectorConfig};
use fleetprof_collector::query::{self, By, Side, Window};
use fleetprof_collector::regressions::{self, DetectOptions, SeriesOptions};
use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_collector::store::{Store, StoreConfig};

const SERVICES: u64 = 20;
const STACKS_PER_SERVICE: u64 = 200;
const FUNCTIONS_PER_SERVICE: u64 = 300;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn exec(store: &Store, sql: &str) {
    store
        .client()
        .query(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}\n{e}"));
}

/// Fills `store` with one day from `day` (Unix seconds): stacks, sample rows, rollups.
async fn generate(store: &Store, day: u64, hosts: u64, per_minute: u64) -> u64 {
    exec(
        store,
        &format!(
            "INSERT INTO stacks (stack_id, frame_ids, functions, first_seen) \
             SELECT number, arrayMap(i -> cityHash64(number, i), range(depth)), \
             arrayMap(i -> concat('service_', toString(intDiv(number, {STACKS_PER_SERVICE})), \
               '::module_', toString(i % 7), '::function_', \
               toString(if(i < 3, i, cityHash64(number, i) % {FUNCTIONS_PER_SERVICE}))), range(depth)), \
             toDateTime({day}) \
             FROM (SELECT number, 8 + cityHash64(number) % 24 AS depth \
                   FROM system.numbers LIMIT {})",
            SERVICES * STACKS_PER_SERVICE
        ),
    )
    .await;
    let per_hour = hosts * 60 * per_minute;
    for hour in 0..24u64 {
        let offset = hour * per_hour;
        // Row n: k = n % per_minute, host = n / per_minute % hosts, minute = n / (per_minute × hosts).
        exec(
            store,
            &format!(
                "INSERT INTO samples (time, time_ns, host, host_id, boot_id, sequence, service, version, \
                 pid, tid, comm, thread, container_id, stack_id, count) \
                 SELECT toDateTime(t), toUInt64(t) * 1000000000, concat('host-', toString(h)), \
                 concat('machine-', toString(h)), 'boot', m * {per_minute} + k, \
                 concat('service_', toString(h % {SERVICES})), if(m < 720, '1.0', '1.1'), \
                 toUInt32(1000 + k), toUInt32(1000 + k), 'svc', 'worker', '', \
                 (h % {SERVICES}) * {STACKS_PER_SERVICE} + cityHash64(n) % {STACKS_PER_SERVICE}, \
                 1 + cityHash64(n, 1) % 20 \
                 FROM (SELECT n, k, h, m, {day} + m * 60 + intDiv(k * 60, {per_minute}) AS t FROM \
                   (SELECT number + {offset} AS n, n % {per_minute} AS k, \
                    intDiv(n, {per_minute}) % {hosts} AS h, intDiv(n, {per_minute} * {hosts}) AS m \
                    FROM system.numbers LIMIT {per_hour}))"
            ),
        )
        .await;
        let (from, to) = (day + hour * 3600, day + (hour + 1) * 3600);
        exec(
            store,
            &format!(
                "INSERT INTO service_minutes (service, minute, version, host, samples) \
                 SELECT service, toStartOfMinute(time) AS minute, version, host, sum(count) \
                 FROM samples WHERE time >= toDateTime({from}) AND time < toDateTime({to}) \
                 GROUP BY service, minute, version, host"
            ),
        )
        .await;
        exec(
            store,
            &format!(
                "INSERT INTO function_minutes (service, function, minute, version, self_samples, total_samples) \
                 SELECT service, function, minute, version, \
                 sum(c * (function = functions[-1])), sum(c) FROM \
                 (SELECT service, version, minute, c, functions FROM \
                  (SELECT service, version, toStartOfMinute(time) AS minute, stack_id, sum(count) AS c \
                   FROM samples WHERE time >= toDateTime({from}) AND time < toDateTime({to}) \
                   GROUP BY service, version, minute, stack_id) \
                  ANY INNER JOIN (SELECT stack_id, functions FROM stacks) USING stack_id) \
                 ARRAY JOIN arrayDistinct(functions) AS function \
                 GROUP BY service, function, minute, version"
            ),
        )
        .await;
    }
    store
        .client()
        .query("SELECT count() FROM samples")
        .fetch_one::<u64>()
        .await
        .unwrap()
}

/// The median of three runs of `f`, in seconds; every run must succeed.
async fn median3<F, Fut, T, E>(mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let answer = f().await.expect("the query failed");
        times.push(t.elapsed().as_secs_f64());
        drop(std::hint::black_box(answer));
    }
    times.sort_by(f64::total_cmp);
    times[1]
}

fn main() {
    let hosts = env("HOSTS", 1000);
    let per_minute = env("ROWS_PER_HOST_MINUTE", 10);
    let clickhouse = LocalClickHouse::start().unwrap_or_else(|e| panic!("query bench: {e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = StoreConfig::new(clickhouse.url()).with_database("bench_query");
        config.insert_timeout = Duration::from_secs(600);
        let store = Store::connect(&config).await.unwrap();
        store.migrate().await.unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        // Yesterday, 00:00 UTC to 24:00: a whole day, all of it in the past.
        let day = now / 86_400 * 86_400 - 86_400;
        let t = Instant::now();
        let rows = generate(&store, day, hosts, per_minute).await;
        let samples: u64 = store
            .client()
            .query("SELECT toUInt64(sum(count)) FROM samples")
            .fetch_one()
            .await
            .unwrap();
        println!(
            "query bench: {hosts} hosts x {SERVICES} services, one day: {rows} sample rows ({per_minute} per host-minute), \
             {samples} samples, {} stacks; generated in {:.1} s (not timed below)",
            SERVICES * STACKS_PER_SERVICE,
            t.elapsed().as_secs_f64()
        );
        let day_window = Window {
            from: day as u32,
            to: (day + 86_400) as u32,
        };
        let hour = Window {
            from: (day + 82_800) as u32,
            to: (day + 86_400) as u32,
        };
        let service = "service_7";
        let mark = |secs: f64, target: f64| if secs < target { "MET" } else { "NOT MET" };
        // Each figure is printed as soon as it is measured (detect, last, takes longest).
        let top1 = median3(|| query::top(&store, service, hour, By::Self_, 20)).await;
        println!("  query top, 1 h:                 {top1:>7.3} s   (target < 1 s: {})", mark(top1, 1.0));
        let top24 = median3(|| query::top(&store, service, day_window, By::Self_, 20)).await;
        println!("  query top, 24 h:                {top24:>7.3} s   (target < 5 s: {})", mark(top24, 5.0));
        let flame = median3(|| query::flamegraph(&store, service, hour)).await;
        println!("  query flamegraph, 1 h:          {flame:>7.3} s");
        let flame24 = median3(|| query::flamegraph(&store, service, day_window)).await;
        println!("  query flamegraph, 24 h:         {flame24:>7.3} s");
        let (v1, v2) = (Side::Version("1.0".into()), Side::Version("1.1".into()));
        let diff =
            median3(|| query::diff(&store, service, &v1, &v2, day_window, By::Total, 20)).await;
        println!("  query diff, 1.0 vs 1.1 in 24 h: {diff:>7.3} s");
        // The figures mean something only if the questions had answers.
        assert!(!query::top(&store, service, hour, By::Self_, 20).await.unwrap().is_empty());
        assert!(!query::flamegraph(&store, service, hour).await.unwrap().is_empty());
        let t = Instant::now();
        let run = regressions::run_detection(&store, &[], &DetectOptions::new(day_window))
            .await
            .unwrap();
        let detect = t.elapsed().as_secs_f64();
        println!(
            "  detect, {} services, 24 h:     {detect:>7.3} s   (target < 60 s: {}; {} regressions)",
            run.services.len(),
            mark(detect, 60.0),
            run.regressions.len()
        );
        // Where detect's time goes: reading every service's series, and the detector's maths on
        // them (the rest is ranking and storing the reports found), each timed once more alone.
        let t = Instant::now();
        let names = regressions::services(&store, day_window).await.unwrap();
        let mut all = Vec::new();
        for name in &names {
            let series = regressions::read_series(&store, name, day_window, SeriesOptions::default())
                .await
                .unwrap();
            all.extend(series);
        }
        let read = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for series in &all {
            std::hint::black_box(detect::detect(series, &DetectorConfig::default()).unwrap());
        }
        let maths = t.elapsed().as_secs_f64();
        let functions: usize = all.iter().map(|s| s.functions.len()).sum();
        println!(
            "    of which reading {} series ({functions} functions): {read:.3} s; the detector's maths: {maths:.3} s",
            all.len()
        );
    });
    drop(clickhouse);
}
