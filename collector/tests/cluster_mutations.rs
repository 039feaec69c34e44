//! Issue 12, mutations and partition operations on a cluster: ClickHouse 18.16 refuses both on
//! a Distributed table, so against a database laid out by `migrate --cluster` the collector runs
//! them on every node's local tables.
//!
//! Renames: a binary built here (gcc) is recorded as unnamed `module+0x…` frames, pushed over
//! real gRPC to a collector on a two-shard cluster and to one on a single server; after
//! `symbols upload` of its debug file to each, both answer alike and no node keeps an offset
//! name. Retention: `retention --keep` drops the old days of both nodes and keeps the rest.
//!
//! Starts three throwaway ClickHouse servers (about 0.2 s each); without
//! `/usr/sbin/clickhouse-server` or gcc it FAILS with that reason rather than pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetprof_collector::query::{self, By, Window};
use fleetprof_collector::store::cluster::{ClusterOptions, NodeEndpoints, migrate_cluster};
use fleetprof_collector::store::local_server::{LocalClickHouse, LocalCluster};
use fleetprof_collector::store::{Store, StoreConfig};
use fleetprof_proto::fleetprof::v1 as pb;
use object::{Object, ObjectSegment, ObjectSymbol};

mod common;

use common::{collector, one_u64};

const SERVICE: &str = "shop";
const MODULE: &str = "/opt/shop/shop";
/// Functions of the test binary: enough that the frames and stacks sharded by id land on both
/// shards.
const FUNCTIONS: usize = 16;
const HOSTS: u64 = 4;

/// The test binary: its build-id, its debug file, and the file offset of each function.
struct Binary {
    build_id: String,
    debug: PathBuf,
    /// (`fn_0` … `fn_15`, then `main`) with their file offsets.
    offsets: Vec<(String, u64)>,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run this test: {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds a binary of [`FUNCTIONS`] functions called from `main`, and its debug file
/// (`objcopy --only-keep-debug`); reads the functions' file offsets from the unstripped binary,
/// as the profiler would report them for the stripped one.
fn build_binary(dir: &Path) -> Binary {
    let mut source = String::new();
    for i in 0..FUNCTIONS {
        source.push_str(&format!(
            "__attribute__((noinline)) int fn_{i}(int x) {{ return x * {} + 1; }}\n",
            i + 3
        ));
    }
    source.push_str("int main(int argc, char **argv) {\n  (void)argv;\n  int s = 0;\n");
    for i in 0..FUNCTIONS {
        source.push_str(&format!("  s += fn_{i}(argc);\n"));
    }
    source.push_str("  return s & 1;\n}\n");
    let src = dir.join("shop.c");
    std::fs::write(&src, source).unwrap();
    let bin = dir.join("shop");
    let debug = dir.join("shop.debug");
    run(Command::new("gcc")
        .args(["-O1", "-g", "-fno-inline", "-Wl,--build-id", "-o"])
        .arg(&bin)
        .arg(&src));
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&debug));
    let data = std::fs::read(&bin).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let build_id: String = elf
        .build_id()
        .unwrap()
        .expect("gcc -Wl,--build-id gives a build-id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file_offset = |address: u64| {
        elf.segments()
            .find(|s| address >= s.address() && address < s.address() + s.file_range().1)
            .map(|s| address - s.address() + s.file_range().0)
            .unwrap_or_else(|| panic!("{address:#x} is in no segment"))
    };
    let names: Vec<String> = (0..FUNCTIONS)
        .map(|i| format!("fn_{i}"))
        .chain(["main".to_owned()])
        .collect();
    let offsets = names
        .into_iter()
        .map(|name| {
            let symbol = elf
                .symbols()
                .find(|s| s.name() == Ok(name.as_str()))
                .unwrap_or_else(|| panic!("{name} not in the binary"));
            // A few bytes into the function, as a sampled return address would be.
            let offset = file_offset(symbol.address() + 1);
            (name, offset)
        })
        .collect();
    Binary {
        build_id,
        debug,
        offsets,
    }
}

/// Host `host`'s batch: `main → fn_i` for every function, `fn_i` sampled `10 + i + host`
/// times, every frame unnamed (as the profiler sends a stripped binary's frames).
fn batch(binary: &Binary, host: u64, end_s: u64) -> pb::ProfileBatch {
    let end = end_s * 1_000_000_000;
    let frames = binary
        .offsets
        .iter()
        .map(|(_, offset)| pb::Frame {
            module: MODULE.into(),
            build_id: binary.build_id.clone(),
            module_offset: *offset,
            ..Default::default()
        })
        .collect();
    let main = FUNCTIONS as u32;
    pb::ProfileBatch {
        processes: vec![pb::Process {
            pid: 700,
            comm: "shop".into(),
            exe: MODULE.into(),
            service: SERVICE.into(),
            version: "2.0".into(),
            ..Default::default()
        }],
        frames,
        stacks: (0..main)
            .map(|i| pb::Stack {
                frame_indexes: vec![i, main],
            })
            .collect(),
        samples: (0..u64::from(main))
            .map(|i| pb::Sample {
                process_index: 0,
                stack_index: i as u32,
                tid: 701,
                thread_name: "shop".into(),
                count: 10 + i + host,
            })
            .collect(),
        ..common::batch(
            &format!("shop-{host}"),
            &format!("machine-{host}"),
            1,
            end - 60_000_000_000,
            end,
        )
    }
}

async fn push_all(store: &Store, binary: &Binary, end_s: u64) {
    let (running, mut client) = collector(store).await;
    for host in 0..HOSTS {
        let r = client
            .push(batch(binary, host, end_s))
            .await
            .unwrap()
            .into_inner();
        assert!(r.samples_stored > 0 && !r.duplicate, "host {host}: {r:?}");
    }
    running.shutdown().await;
}

/// `fleetprof-collector symbols upload` of the debug file into `symbols_dir` against the
/// server at `url` (`--node-url` for each of `node_urls`); returns success, stdout, stderr.
fn upload(
    binary: &Binary,
    symbols_dir: &Path,
    url: &str,
    node_urls: &[(String, String)],
) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetprof-collector"));
    command
        .args(["symbols", "upload", "--symbols-dir"])
        .arg(symbols_dir)
        .arg(&binary.debug)
        .args(["--clickhouse-url", url])
        .env("RUST_LOG", "warn");
    for (address, node_url) in node_urls {
        command.args(["--node-url", &format!("{address}={node_url}")]);
    }
    let out = command.output().expect("running fleetprof-collector");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!("$ fleetprof-collector symbols upload ({url})\n{stdout}{stderr}");
    (out.status.success(), stdout, stderr)
}

/// Uploading a stripped binary's debug file names its frames on both shards of a cluster:
/// `frames`, `stacks` and `function_minutes` renamed on every node's local tables, the readers
/// through either node answering what one server answers; without the nodes' endpoints the
/// upload says which option is missing and renames nothing. Then `retention --keep` drops an
/// old day held by both nodes from both, and nothing newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_and_retention_run_on_every_node() {
    let cluster =
        LocalCluster::start("fleetprof", 2).unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let single = LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    // The single server's fresh directory doubles as this test's scratch space.
    let scratch = single.dir().join("test");
    std::fs::create_dir_all(&scratch).unwrap();
    let binary = build_binary(&scratch);
    let endpoints = NodeEndpoints {
        http_port: None,
        node_urls: cluster.node_urls().into_iter().collect(),
    };
    let seed = StoreConfig::new(cluster.nodes()[0].url()).with_nodes(endpoints.clone());
    migrate_cluster(
        &seed,
        &ClusterOptions::new(cluster.name()).with_endpoints(&endpoints),
    )
    .await
    .unwrap();
    let through_seed = Store::new(&seed).unwrap();
    let nodes: Vec<Store> = cluster
        .nodes()
        .iter()
        .map(|n| Store::new(&StoreConfig::new(n.url())).unwrap())
        .collect();
    let alone = Store::new(&StoreConfig::new(single.url())).unwrap();
    alone.migrate().await.unwrap();

    // Where the rows live: the single server itself; every node of the cluster, local tables.
    let one = alone.data_nodes().await.unwrap();
    assert_eq!((one.cluster(), one.nodes().len()), (None, 1));
    assert_eq!(one.local_table("stacks").unwrap(), "stacks");
    let both = through_seed.data_nodes().await.unwrap();
    assert_eq!((both.cluster(), both.nodes().len()), (Some("fleetprof"), 2));
    assert_eq!(both.local_table("stacks").unwrap(), "stacks_local");
    assert!(both.local_table("schema_migrations").is_err());
    // Both nodes listen on 127.0.0.1: without their endpoints the second node's URL reaches
    // the first, which is refused rather than mutated twice.
    let err = nodes[0].data_nodes().await.unwrap_err().to_string();
    assert!(
        err.contains("is not in shard 2") && err.contains("--node-url"),
        "{err}"
    );

    let end_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 120;
    push_all(&nodes[1], &binary, end_s).await;
    push_all(&alone, &binary, end_s).await;
    // The frames and stacks (sharded by id) sit on both shards, the service's rollup (sharded
    // by service) on one; all still named by offset.
    let offset_names = [
        ("frames_local", "position(function, '+0x') > 0", true),
        (
            "stacks_local",
            "arrayExists(f -> position(f, '+0x') > 0, functions)",
            true,
        ),
        (
            "function_minutes_local",
            "position(function, '+0x') > 0",
            false,
        ),
    ];
    let local_rows = async |table: &str, filter: &str| {
        let mut rows = Vec::new();
        for node in &nodes {
            rows.push(one_u64(node, &format!("SELECT count() FROM {table} WHERE {filter}")).await);
        }
        rows
    };
    for (table, unnamed, every_node) in offset_names {
        let rows = local_rows(table, "1").await;
        let named = local_rows(table, &format!("NOT ({unnamed})")).await;
        assert!(
            rows.iter().sum::<u64>() > 0 && named == [0, 0],
            "{table}: {rows:?} rows, {named:?} named"
        );
        assert!(
            !every_node || !rows.contains(&0),
            "{table}: {rows:?} rows per node"
        );
    }

    let window = Window::last(Duration::from_secs(3600));
    // A forgotten --node-url: a clear error, nothing renamed.
    let symbols_dir = scratch.join("symbols-cluster");
    let (ok, _, stderr) = upload(&binary, &symbols_dir, &cluster.nodes()[0].url(), &[]);
    assert!(!ok && stderr.contains("--node-url"), "{stderr}");
    assert_eq!(
        one_u64(
            &nodes[0],
            "SELECT count() FROM frames WHERE position(function, '+0x') > 0"
        )
        .await,
        FUNCTIONS as u64 + 1
    );

    let (ok, on_cluster, _) = upload(
        &binary,
        &symbols_dir,
        &cluster.nodes()[0].url(),
        &cluster.node_urls(),
    );
    assert!(ok);
    let (ok, on_single, _) = upload(&binary, &scratch.join("symbols-single"), &single.url(), &[]);
    assert!(ok);
    let named = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("named "))
            .unwrap_or_else(|| panic!("no summary in:\n{out}"))
            .to_owned()
    };
    assert!(named(&on_single).starts_with(&format!("named {} stored frames", FUNCTIONS + 1)));
    assert_eq!(named(&on_cluster), named(&on_single));

    for by in [By::Self_, By::Total] {
        let expected = query::top(&alone, SERVICE, window, by, 50).await.unwrap();
        assert_eq!(expected.len(), FUNCTIONS + 1, "{expected:?}");
        assert!(
            expected.iter().all(|r| !r.function.contains("+0x")),
            "{expected:?}"
        );
        for node in &nodes {
            assert_eq!(
                query::top(node, SERVICE, window, by, 50).await.unwrap(),
                expected
            );
        }
    }
    let flame = query::flamegraph(&alone, SERVICE, window).await.unwrap();
    for node in &nodes {
        assert_eq!(
            query::flamegraph(node, SERVICE, window).await.unwrap(),
            flame
        );
    }
    // Every node's own rows renamed.
    for (table, unnamed, _) in offset_names {
        let rows = local_rows(table, "1").await;
        let left = local_rows(table, unnamed).await;
        assert!(
            rows.iter().sum::<u64>() > 0 && left == [0, 0],
            "{table}: {left:?} of {rows:?} rows still unnamed"
        );
    }

    // Retention: a day 40 days ago on both shards (sharded by host), dropped on both by
    // `retention --keep 30d`; today's rows stay.
    nodes[0]
        .client()
        .query(
            "INSERT INTO samples (time, host, service, count) SELECT now() - 40 * 86400, \
             concat('old-', toString(number)), 'shop', 1 FROM system.numbers LIMIT 8",
        )
        .execute()
        .await
        .unwrap();
    let old_day = one_u64(&nodes[0], "SELECT toUInt64(toYYYYMMDD(now() - 40 * 86400))").await;
    let old = format!("toYYYYMMDD(time) = {old_day}");
    let before = local_rows("samples_local", &old).await;
    assert!(
        !before.contains(&0) && before.iter().sum::<u64>() == 8,
        "{before:?}"
    );
    let recent = local_rows("samples_local", &format!("NOT ({old})")).await;
    let retention = |dry_run: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fleetprof-collector"));
        command
            .args(["retention", "--keep", "30d", "--clickhouse-url"])
            .arg(cluster.nodes()[0].url())
            .env("RUST_LOG", "warn");
        if dry_run {
            command.arg("--dry-run");
        }
        for (address, url) in cluster.node_urls() {
            command.args(["--node-url", &format!("{address}={url}")]);
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!(
            "$ fleetprof-collector retention --keep 30d\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success());
        stdout
    };
    let planned = retention(true);
    assert!(
        planned.contains(&format!("would drop samples partition {old_day}: 8 rows")),
        "{planned}"
    );
    assert_eq!(local_rows("samples_local", &old).await, before);
    let done = retention(false);
    assert!(
        done.contains(&format!("dropped samples partition {old_day}: 8 rows")),
        "{done}"
    );
    assert_eq!(local_rows("samples_local", &old).await, [0, 0]);
    assert_eq!(
        local_rows("samples_local", &format!("NOT ({old})")).await,
        recent
    );
}
