//! A migration interrupted part-way runs again: ClickHouse 18.16 has no `ADD COLUMN IF NOT
//! EXISTS` (nor `DROP COLUMN IF EXISTS`), so the migrator skips an `ALTER` whose columns are
//! already there instead of failing on it.
//!
//! One throwaway ClickHouse (`LocalClickHouse`); without `/usr/sbin/clickhouse-server` it FAILS
//! with that reason rather than pass silently.

use fleetprof_collector::store::local_server::LocalClickHouse;
use fleetprof_collector::store::{MIGRATIONS, Store, StoreConfig, split_statements};

#[tokio::test]
async fn an_interrupted_migration_runs_again() {
    let clickhouse =
        LocalClickHouse::start().unwrap_or_else(|e| panic!("cannot run this test: {e}"));
    let store = Store::connect(&StoreConfig::new(clickhouse.url()).with_database("rerun"))
        .await
        .unwrap();
    let last = MIGRATIONS.last().unwrap();
    let before = last.version - 1;
    assert_eq!(
        store.migrate_to(before).await.unwrap().last(),
        Some(&before)
    );
    // The last migration's first statements ran, then the collector died before recording it.
    let statements = split_statements(last.sql);
    let adds_columns = statements
        .iter()
        .position(|s| s.contains("ADD COLUMN"))
        .expect("the last migration adds a column");
    for statement in &statements[..=adds_columns] {
        store.client().query(statement).execute().await.unwrap();
    }
    assert_eq!(store.schema_version().await.unwrap(), before);

    assert_eq!(store.migrate().await.unwrap(), vec![last.version]);
    assert_eq!(store.schema_version().await.unwrap(), last.version);
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "a third run changes nothing"
    );
}
