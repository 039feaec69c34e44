//! Storage at fleet scale (schema v4): the upgrade from schema v1–v3 keeps old rows queryable,
//! new rows land beside them through the collector's own rollups, and retention drops old days.
//!
//! Each test starts its own throwaway ClickHouse (`LocalClickHouse`, about 0.2 s); without
//! `/usr/sbin/clickhouse-server` they FAIL with that reason rather than pass silently.

use std::collections::HashSet;
use std::time::Duration;

use fleetprof_collector::query::{self, By, Window};
use fleetprof_collector::regressions::{self, DetectOptions, SeriesOptions, read_series};
use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_collector::store::{Store, StoreConfig};
use fleetprof_proto::fleetprof::v1 as pb;

mod common;

use common::{now_s, one_u64, write};

const SERVICE: &str = "checkout";

/// A batch of `checkout` 1.1 ending `ago_s` seconds ago: main → handle → hot_loop ×90,
/// main → handle ×10.
fn batch(sequence: u64, ago_s: u64) -> pb::ProfileBatch {
    let end = (now_s() - ago_s) * 1_000_000_000;
    let frame = |name: &str| common::frame("/usr/bin/checkout", name);
    let sample = |stack_index, count| common::sample(0, stack_index, 4243, count);
    pb::ProfileBatch {
        processes: vec![pb::Process {
            pid: 4242,
            comm: "checkout".into(),
            exe: "/usr/bin/checkout".into(),
            service: SERVICE.into(),
            version: "1.1".into(),
            ..Default::default()
        }],
        frames: vec![frame("hot_loop"), frame("handle"), frame("main")],
        stacks: common::stacks(&[&[0, 1, 2], &[1, 2]]),
        samples: vec![sample(0, 90), sample(1, 10)],
        ..common::batch("web-2", "machine-2", sequence, end - 10_000_000_000, end)
    }
}

/// [`batch`], and when `cut`, with 40% of its samples in stacks the profiler could not unwind to
/// their root (`[truncated: …]` where `main` was), drawn like the rest: of the whole stacks and of
/// the cut ones alike, 90% end in `hot_loop`.
fn unwinding_batch(sequence: u64, ago_s: u64, cut: bool) -> pb::ProfileBatch {
    let mut b = batch(sequence, ago_s);
    if cut {
        b.frames.push(pb::Frame {
            function: "[truncated: unreadable stack]".into(),
            module: "[truncated]".into(),
            ..Default::default()
        });
        b.stacks.push(pb::Stack {
            frame_indexes: vec![0, 1, 3],
        });
        b.stacks.push(pb::Stack {
            frame_indexes: vec![1, 3],
        });
        for (sample, count) in b.samples.iter_mut().zip([54, 6]) {
            sample.count = count;
        }
        let mut cut_sample = b.samples[0].clone();
        for (stack_index, count) in [(2, 36), (3, 4)] {
            cut_sample.stack_index = stack_index;
            cut_sample.count = count;
            b.samples.push(cut_sample.clone());
        }
    }
    b
}

/// A database laid out and filled by schema v3 (names in every sample row, rollups filled by
/// materialized views) is upgraded to v4: the column goes, every old row stays queryable
/// through `stacks`, and rows the v4 writer adds (with the collector's rollups) add up with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_v1_keeps_data_queryable() {
    let clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("upgrade"))
        .await
        .unwrap();
    assert_eq!(store.migrate_to(3).await.unwrap(), vec![1, 2, 3]);

    // What a v1–v3 collector stored: stacks once, sample rows with the names, a batch row.
    let t = now_s() - 120;
    for sql in [
        "INSERT INTO stacks (stack_id, frame_ids, functions, first_seen) VALUES \
         (11, [1, 2, 3], ['main', 'handle', 'hot_loop'], now()), (12, [1, 2], ['main', 'handle'], now())"
            .to_owned(),
        format!(
            "INSERT INTO samples (time, host, host_id, boot_id, sequence, service, version, pid, tid, \
             stack_id, functions, count) VALUES \
             ({t}, 'web-1', 'machine-1', 'boot-1', 1, '{SERVICE}', '1.0', 1, 1, 11, ['main', 'handle', 'hot_loop'], 90), \
             ({t}, 'web-1', 'machine-1', 'boot-1', 1, '{SERVICE}', '1.0', 1, 1, 12, ['main', 'handle'], 10)"
        ),
        format!(
            "INSERT INTO batches (host_id, boot_id, sequence, host, time, samples) VALUES \
             ('machine-1', 'boot-1', 1, 'web-1', {t}, 100)"
        ),
    ] {
        store.client().query(&sql).execute().await.unwrap();
    }
    assert_eq!(
        one_u64(
            &store,
            "SELECT toUInt64(sum(total_samples)) FROM function_minutes WHERE function = 'main'"
        )
        .await,
        100,
        "v1's view filled the rollup"
    );

    assert_eq!(store.migrate().await.unwrap(), vec![4, 5]);
    assert_eq!(store.schema_version().await.unwrap(), 5);
    assert_eq!(
        one_u64(
            &store,
            "SELECT count() FROM system.columns WHERE database = 'upgrade' AND table = 'samples' \
             AND name = 'functions'"
        )
        .await,
        0,
        "sample rows no longer carry names"
    );
    assert_eq!(
        one_u64(
            &store,
            "SELECT count() FROM system.tables WHERE database = 'upgrade' AND engine = 'MaterializedView'"
        )
        .await,
        0,
        "no view expands sample rows any more"
    );

    // The old rows, through every reader that needs names.
    let window = Window::last(Duration::from_secs(3600));
    let folded = query::flamegraph(&store, SERVICE, window).await.unwrap();
    assert_eq!(
        query::folded_text(&folded),
        "main;handle 10\nmain;handle;hot_loop 90\n"
    );
    let through = query::stacks_through(&store, SERVICE, "hot_loop", window, 5)
        .await
        .unwrap();
    assert_eq!((through.len(), through[0].samples), (1, 90));
    let raw = read_series(
        &store,
        SERVICE,
        window,
        SeriesOptions {
            bucket_secs: 10,
            ..SeriesOptions::default()
        },
    )
    .await
    .unwrap()
    .expect("old samples in the window");
    let hot = raw
        .functions
        .iter()
        .find(|f| f.function == "hot_loop")
        .unwrap();
    assert_eq!(hot.k_self.iter().map(|&k| u64::from(k)).sum::<u64>(), 90);
    assert_eq!(hot.callers, ["handle"]);

    // New rows through the v4 writer: the collector's rollups add up with the view's.
    write(&store, &[batch(1, 60), batch(2, 50)]).await;
    let folded = query::flamegraph(&store, SERVICE, window).await.unwrap();
    assert_eq!(
        query::folded_text(&folded),
        "main;handle 30\nmain;handle;hot_loop 270\n"
    );
    let top = query::top(&store, SERVICE, window, By::Self_, 10)
        .await
        .unwrap();
    assert_eq!(
        (
            top[0].function.as_str(),
            top[0].self_samples,
            top[0].self_share
        ),
        ("hot_loop", 270, 0.9),
        "{top:?}"
    );
    let total = query::top(&store, SERVICE, window, By::Total, 10)
        .await
        .unwrap();
    assert_eq!(
        (total[0].total_samples, total[0].total_share),
        (300, 1.0),
        "{total:?}"
    );
    let minutes = read_series(&store, SERVICE, window, SeriesOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        minutes.samples.iter().map(|&n| u64::from(n)).sum::<u64>(),
        300
    );
    let (callers, _) = query::callers_callees(&store, SERVICE, "hot_loop", window, 5)
        .await
        .unwrap();
    assert_eq!(callers[0].samples, 270);
    assert_eq!(store.stored_sample_count().await.unwrap(), 300);
    // Stacks are stored once however many batches (and hosts) use them.
    assert_eq!(
        one_u64(&store, "SELECT uniqExact(stack_id) FROM stacks").await,
        4,
        "two v1 stacks and the two of the new batches"
    );
    assert_eq!(
        one_u64(&store, "SELECT count() FROM stacks").await,
        4,
        "the second batch's stacks were not written again"
    );
}

/// Runs `fleetprof-collector retention` against `url`/`database`; returns stdout, failing the
/// test on a non-zero exit.
fn retention(url: &str, database: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetprof-collector"))
        .arg("retention")
        .args(args)
        .args(["--clickhouse-url", url, "--database", database])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running fleetprof-collector retention");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "retention failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `retention --keep 30d` drops the days (and, for `batches` and `batch_attempts`, the months) wholly older than 30
/// days from every large table, says which, and leaves newer rows and every query working;
/// `--dry-run` only lists them; a second pass finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions_of_every_large_table() {
    let clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let url = clickhouse.url();
    let store = Store::connect(&StoreConfig::new(&url).with_database("retention"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    write(&store, &[batch(1, 60)]).await;

    // Rows 40 days old in every day-partitioned table, 20 days old (kept) in samples, and a
    // batch identity 70 days old (its month is wholly older than the cutoff's).
    let old = now_s() - 40 * 86_400;
    let kept = now_s() - 20 * 86_400;
    let very_old = now_s() - 70 * 86_400;
    for sql in [
        format!(
            "INSERT INTO samples (time, service, stack_id, count) VALUES ({old}, '{SERVICE}', 1, 5), ({kept}, '{SERVICE}', 1, 7)"
        ),
        format!(
            "INSERT INTO function_minutes (service, function, minute, version, self_samples, total_samples) VALUES ('{SERVICE}', 'main', {old}, '1.0', 1, 5)"
        ),
        format!(
            "INSERT INTO service_minutes (service, minute, version, host, samples) VALUES ('{SERVICE}', {old}, '1.0', 'web-1', 5)"
        ),
        format!(
            "INSERT INTO processes (time, host, pid, service) VALUES ({old}, 'web-1', 1, '{SERVICE}')"
        ),
        format!("INSERT INTO losses (time, host, sequence) VALUES ({old}, 'web-1', 1)"),
        format!(
            "INSERT INTO energy (time, host, domain, joules) VALUES ({old}, 'web-1', 'package-0', 1.5)"
        ),
        format!(
            "INSERT INTO process_energy (time, host, pid, service, joules) VALUES ({old}, 'web-1', 1, '{SERVICE}', 1.5)"
        ),
        format!(
            "INSERT INTO host_energy (time, host, domain, measured_joules) VALUES ({old}, 'web-1', 'package-0', 1.5)"
        ),
        format!(
            "INSERT INTO batches (host_id, boot_id, sequence, time, samples) VALUES ('machine-1', 'b', 1, {very_old}, 5)"
        ),
        format!(
            "INSERT INTO batch_attempts (host_id, boot_id, sequence, time, attempted) VALUES ('machine-1', 'b', 1, {very_old}, {very_old})"
        ),
    ] {
        store
            .client()
            .query(&sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}\n{e}"));
    }
    let day = |t: u64| format!("SELECT toUInt64(toYYYYMMDD(toDateTime({t})))");
    let old_day = one_u64(&store, &day(old)).await.to_string();
    let kept_day = one_u64(&store, &day(kept)).await.to_string();
    let samples = || one_u64(&store, "SELECT toUInt64(sum(count)) FROM samples");

    let listed = retention(&url, "retention", &["--keep", "30d", "--dry-run"]);
    assert!(
        listed.contains(&format!("would drop samples partition {old_day}: 1 rows")),
        "{listed}"
    );
    assert_eq!(samples().await, 112, "a dry run drops nothing");

    let report = retention(&url, "retention", &["--keep", "30d"]);
    for table in [
        "samples",
        "function_minutes",
        "service_minutes",
        "processes",
        "losses",
        "energy",
        "process_energy",
        "host_energy",
    ] {
        assert!(
            report.contains(&format!("dropped {table} partition {old_day}: 1 rows")),
            "{table}: {report}"
        );
    }
    assert!(report.contains("dropped batches partition "), "{report}");
    assert!(
        report.contains("dropped batch_attempts partition "),
        "{report}"
    );
    assert!(
        report.contains("dropped 10 partitions older than 30days"),
        "{report}"
    );
    assert!(
        !report.contains(&kept_day),
        "the 20-day-old day is kept: {report}"
    );
    assert_eq!(
        samples().await,
        107,
        "the new batch and the 20-day-old row are kept"
    );
    for table in [
        "function_minutes",
        "service_minutes",
        "processes",
        "losses",
        "energy",
    ] {
        let column = match table {
            "function_minutes" | "service_minutes" => "minute",
            _ => "time",
        };
        let sql = format!(
            "SELECT count() FROM {table} WHERE {column} < toDateTime({})",
            now_s() - 35 * 86_400
        );
        assert_eq!(one_u64(&store, &sql).await, 0, "{table}");
    }
    assert_eq!(
        store.stored_sample_count().await.unwrap(),
        100,
        "the new batch's row stays"
    );
    let window = Window::last(Duration::from_secs(3600));
    let top = query::top(&store, SERVICE, window, By::Self_, 1)
        .await
        .unwrap();
    assert_eq!(
        (top[0].function.as_str(), top[0].self_samples),
        ("hot_loop", 90)
    );

    let again = retention(&url, "retention", &["--keep", "30d"]);
    assert!(again.contains("nothing dropped"), "{again}");
}

/// `serve --retention 30d` runs a retention pass as it starts (and hourly): an old day is
/// dropped while the collector serves, and the pass is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_retention_drops_old_days() {
    let clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let url = clickhouse.url();
    let store = Store::connect(&StoreConfig::new(&url).with_database("serve_retention"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let old = now_s() - 40 * 86_400;
    store
        .client()
        .query(&format!(
            "INSERT INTO samples (time, service, stack_id, count) VALUES ({old}, '{SERVICE}', 1, 5)"
        ))
        .execute()
        .await
        .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_fleetprof-collector"))
        .args(["serve", "--listen", "127.0.0.1:0", "--retention", "30d"])
        .args(["--clickhouse-url", &url, "--database", "serve_retention"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("starting fleetprof-collector serve");
    // Waits on the condition (the row gone and the pass logged), up to a generous bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dropped = loop {
        let logged = std::fs::read_to_string(log.path()).unwrap_or_default();
        let left = one_u64(&store, "SELECT count() FROM samples").await;
        if left == 0 && logged.contains("retention: dropped samples partition") {
            break true;
        }
        if std::time::Instant::now() > deadline || serve.try_wait().unwrap().is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        dropped,
        "serve --retention did not drop the 40-day-old day:\n{}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
}

/// A change in unwinding quality alone is no regression: for an hour 40% of the samples' stacks
/// are cut (`[truncated: …]` at the root, `main` lost), then none are. Detection's series leave
/// cut samples out of numerator and denominator, so `main` stays at 100% of the service and
/// `hot_loop` at 90%, and detection reports nothing (with them in, `main` rises from 60% to 100%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_stacks_are_left_out_of_detection() {
    let clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("unwinding"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    // One batch a minute for two hours, the older hour with cut stacks.
    let batches: Vec<_> = (0..120u64)
        .map(|i| unwinding_batch(i + 1, 7200 - 60 * i, i < 60))
        .collect();
    write(&store, &batches).await;
    let now = u32::try_from(now_s()).unwrap();
    let window = Window {
        from: now - 7300,
        to: now + 1,
    };

    let series = read_series(&store, SERVICE, window, SeriesOptions::default())
        .await
        .unwrap()
        .expect("the service has samples");
    let function = |name: &str| {
        series
            .functions
            .iter()
            .find(|f| f.function == name)
            .unwrap_or_else(|| panic!("{name} is not in the series"))
    };
    let (main, hot) = (function("main"), function("hot_loop"));
    assert!(
        series.samples.contains(&60) && series.samples.contains(&100),
        "the cut samples must leave the denominator: {:?}",
        series.samples
    );
    assert_eq!(main.k_total, series.samples, "main is on every whole stack");
    for (i, &n) in series.samples.iter().enumerate() {
        assert_eq!(
            hot.k_self[i] * 10,
            n * 9,
            "hot_loop's self share in bucket {i}"
        );
        assert_eq!(hot.k_total[i], hot.k_self[i]);
    }
    assert!(
        series
            .functions
            .iter()
            .all(|f| !f.function.starts_with('[')),
        "placeholders are never tested"
    );

    let mut options = DetectOptions::new(window);
    options.detector.window_secs = 1800;
    options.detector.persistence_secs = 1800;
    let run = regressions::run_detection(&store, &[SERVICE.to_owned()], &options)
        .await
        .unwrap();
    assert!(run.services[0].functions >= 3, "{:?}", run.services);
    assert!(
        run.regressions.is_empty(),
        "a change in unwinding alone was reported: {:?}",
        run.regressions
            .iter()
            .map(|r| (&r.functions, r.before_share, r.after_share))
            .collect::<Vec<_>>()
    );

    // A service the profiler could not unwind at all (every stack cut) keeps its cut samples:
    // their leaf frames are all the signal there is.
    let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("all_cut"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let batches: Vec<_> = (0..30u64)
        .map(|i| {
            let mut b = unwinding_batch(i + 1, 1800 - 60 * i, true);
            b.samples.retain(|s| s.stack_index >= 2);
            b
        })
        .collect();
    write(&store, &batches).await;
    let series = read_series(&store, SERVICE, window, SeriesOptions::default())
        .await
        .unwrap()
        .expect("the service has samples");
    assert!(
        series.samples.iter().sum::<u32>() == 30 * 40,
        "a service whose stacks are all cut keeps them: {:?}",
        series.samples
    );
}

/// `retention --keep 30d` also trims `stacks` and `frames`, which have no time partitions: once
/// the old days are dropped, a stack no kept sample uses and first stored before the cutoff goes,
/// with the frames only it used; a stack stored recently, or stored long ago and sampled again,
/// stays, with every frame a kept stack uses. `--dry-run` deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_stacks_and_frames_no_kept_sample_uses() {
    let clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let url = clickhouse.url();
    let store = Store::connect(&StoreConfig::new(&url).with_database("trim"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let (old, new) = (now_s() - 40 * 86_400, now_s() - 60);
    // Stack 1: only old samples (goes, with frame 12). Stack 2: new. Stack 3: stored 40 days
    // ago, sampled again today. Frame 11 (`main`) is in all three.
    for sql in [
        format!(
            "INSERT INTO stacks (stack_id, frame_ids, functions, first_seen) VALUES \
             (1, [11, 12], ['main', 'gone'], {old}), (2, [11, 13], ['main', 'fresh'], {new}), \
             (3, [11, 14], ['main', 'again'], {old})"
        ),
        "INSERT INTO frames (frame_id, function) VALUES \
         (11, 'main'), (12, 'gone'), (13, 'fresh'), (14, 'again')"
            .to_owned(),
        format!(
            "INSERT INTO samples (time, service, stack_id, count) VALUES \
             ({old}, '{SERVICE}', 1, 5), ({old}, '{SERVICE}', 3, 5), \
             ({new}, '{SERVICE}', 2, 7), ({new}, '{SERVICE}', 3, 9)"
        ),
    ] {
        store.client().query(&sql).execute().await.unwrap();
    }
    let ids = |table: &'static str, column: &'static str| {
        let store = store.clone();
        async move {
            store
                .client()
                .query(&format!("SELECT {column} FROM {table} ORDER BY {column}"))
                .fetch_all::<u64>()
                .await
                .unwrap()
        }
    };

    let dry = retention(&url, "trim", &["--keep", "30d", "--dry-run"]);
    assert!(dry.contains("would drop samples partition"), "{dry}");
    assert_eq!(ids("stacks", "stack_id").await, vec![1, 2, 3], "{dry}");

    let out = retention(&url, "trim", &["--keep", "30d"]);
    assert!(out.contains("deleted 1 unreferenced stacks rows"), "{out}");
    assert!(out.contains("deleted 1 unreferenced frames rows"), "{out}");
    assert_eq!(ids("stacks", "stack_id").await, vec![2, 3]);
    assert_eq!(ids("frames", "frame_id").await, vec![11, 13, 14]);
    let now = u32::try_from(now_s()).unwrap();
    let window = Window {
        from: now - 3600,
        to: now + 1,
    };
    // Today's samples still have every name (their stacks are joined for them).
    let flame = query::flamegraph(&store, SERVICE, window).await.unwrap();
    let stacks: HashSet<&str> = flame.iter().map(|s| s.stack.as_str()).collect();
    assert_eq!(
        stacks,
        HashSet::from(["main;fresh", "main;again"]),
        "{flame:?}"
    );

    let again = retention(&url, "trim", &["--keep", "30d"]);
    assert!(!again.contains("unreferenced"), "{again}");
}
