//! `fleetprof-collector migrate`.

use anyhow::Context;
use clap::Args;

use super::ClickHouseArgs;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
}

pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<()> {
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
