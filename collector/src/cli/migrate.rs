//! `fleetprof-collector migrate [--cluster NAME]`.

use anyhow::Context;
use clap::Args;
use fleetprof_collector::store::cluster::{ClusterOptions, REQUIRED_SETTINGS, migrate_cluster};

use super::ClickHouseArgs;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Lay the schema out over every node of this cluster (a name in the nodes'
    /// `<remote_servers>`): local tables and Distributed tables on each node, the large tables
    /// sharded, the small ones written to every node (see the README, "ClickHouse, a cluster").
    /// --clickhouse-url names any one node; the others are read from its `system.clusters`.
    /// [default: one server, the one at --clickhouse-url]
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// With --cluster: the cluster for the small tables (`changes`, `deploys`, `regressions`,
    /// `symbolized_frames`): one shard listing every node as a replica, internal_replication
    /// false. [default: NAME_shared]
    #[arg(long, value_name = "NAME", requires = "cluster")]
    shared_cluster: Option<String>,
}

pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    match &args.cluster {
        Some(cluster) => run_cluster(&args, cluster).await,
        None => run_single(&args).await,
    }
}

async fn run_single(args: &MigrateArgs) -> anyhow::Result<()> {
    let store = args.clickhouse.store()?;
    let applied = store.migrate().await.context("migrating the schema")?;
    let version = store.schema_version().await?;
    if applied.is_empty() {
        println!(
            "database `{}` is at schema version {version}; nothing to do",
            store.database()
        );
    } else {
        println!(
            "database `{}`: applied {applied:?}; now at schema version {version}",
            store.database()
        );
    }
    Ok(())
}

async fn run_cluster(args: &MigrateArgs, cluster: &str) -> anyhow::Result<()> {
    let seed = args.clickhouse.config();
    let mut options = ClusterOptions::new(cluster).with_endpoints(&seed.nodes);
    if let Some(shared) = &args.shared_cluster {
        options.shared_cluster.clone_from(shared);
    }
    let nodes = migrate_cluster(&seed, &options)
        .await
        .with_context(|| format!("migrating cluster `{cluster}`"))?;
    let mut to_fix = false;
    for node in &nodes {
        let what = if node.applied.is_empty() {
            "nothing to do".to_owned()
        } else {
            format!("applied {:?}", node.applied)
        };
        println!(
            "shard {} replica {} {} ({}): database `{}` at schema version {}; {what}",
            node.node.shard,
            node.node.replica,
            node.node.address(),
            node.node.url,
            seed.database,
            node.version,
        );
        for setting in &node.settings_to_fix {
            to_fix = true;
            println!("  warning: this user's profile has {setting}");
        }
    }
    if to_fix {
        let wanted: Vec<String> = REQUIRED_SETTINGS
            .iter()
            .map(|(name, value)| format!("<{name}>{value}</{name}>"))
            .collect();
        println!(
            "the collector's and agent's ClickHouse users need {} in their profile on every node \
             (see the README, \"ClickHouse, a cluster\")",
            wanted.join(" ")
        );
    }
    Ok(())
}
