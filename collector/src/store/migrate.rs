//! Schema migrations: versioned SQL files in `collector/schema/`, embedded at build time.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One schema version: a SQL file of `;`-separated, idempotent statements.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number, from the file name (`0001_init.sql` → 1).
    pub version: u32,
    /// File name.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

/// Every migration this collector knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.sql",
        sql: include_str!("../../schema/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "0002_energy_split.sql",
        sql: include_str!("../../schema/0002_energy_split.sql"),
    },
    Migration {
        version: 3,
        name: "0003_symbols.sql",
        sql: include_str!("../../schema/0003_symbols.sql"),
    },
    Migration {
        version: 4,
        name: "0004_scale.sql",
        sql: include_str!("../../schema/0004_scale.sql"),
    },
    Migration {
        version: 5,
        name: "0005_rollup_markers.sql",
        sql: include_str!("../../schema/0005_rollup_markers.sql"),
    },
];

#[derive(Row, Serialize, Deserialize)]
struct MigrationRow {
    version: u32,
    name: String,
    applied: u32,
}

/// Splits a SQL file into statements on `;`, ignoring semicolons in `--` comments and in
/// quoted strings; drops statements that are only comments or whitespace.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut in_comment = false;
    while let Some(c) = chars.next() {
        if in_comment {
            current.push(c);
            if c == '\n' {
                in_comment = false;
            }
            continue;
        }
        if let Some(q) = quote {
            current.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '-' if chars.peek() == Some(&'-') => {
                in_comment = true;
                current.push(c);
            }
            '\'' | '"' | '`' => {
                quote = Some(c);
                current.push(c);
            }
            ';' => statements.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    statements.push(current);
    statements
        .into_iter()
        .filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        })
        .map(|s| s.trim().to_owned())
        .collect()
}

impl Store {
    /// Creates the database and `schema_migrations` if missing, then applies every migration
    /// newer than the database's version. Refuses ([`StoreError::SchemaTooNew`]) to touch a
    /// database migrated by a newer collector. Returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.migrate_to(u32::MAX).await
    }

    /// [`Store::migrate`], stopping after version `target` (to lay out an older schema, e.g. to
    /// test the upgrade from it). Refuses ([`StoreError::ClusterLayout`]) a database laid out by
    /// `migrate --cluster`: applied to one node only, a migration would break the cluster.
    pub async fn migrate_to(&self, target: u32) -> Result<Vec<u32>, StoreError> {
        let current = self
            .prepare_migrations(MIGRATIONS.last().map_or(0, |m| m.version))
            .await?;
        let pending: Vec<&Migration> = MIGRATIONS
            .iter()
            .filter(|m| m.version > current && m.version <= target)
            .collect();
        if !pending.is_empty()
            && let Some(table) = self.distributed_table().await?
        {
            return Err(StoreError::ClusterLayout {
                database: self.database.clone(),
                table,
            });
        }
        let mut applied = Vec::new();
        for migration in pending {
            for statement in split_statements(migration.sql) {
                if self.already_applied(&statement).await? {
                    continue;
                }
                self.execute_migration_statement(migration, &statement)
                    .await?;
            }
            self.record_migration(migration).await?;
            applied.push(migration.version);
        }
        Ok(applied)
    }

    /// Creates the database and `schema_migrations` if missing and returns the database's
    /// schema version; refuses a version newer than `known`, the newest migration at hand.
    pub(super) async fn prepare_migrations(&self, known: u32) -> Result<u32, StoreError> {
        self.server
            .query(&format!("CREATE DATABASE IF NOT EXISTS {}", self.database))
            .execute()
            .await
            .map_err(StoreError::ch("creating the database"))?;
        // Per server, also on a cluster: each node records the version of its own tables.
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version UInt32, name String, applied DateTime) \
                 ENGINE = MergeTree ORDER BY version",
            )
            .execute()
            .await
            .map_err(StoreError::ch("creating schema_migrations"))?;
        let current = self.schema_version().await?;
        if current > known {
            return Err(StoreError::SchemaTooNew {
                database: self.database.clone(),
                found: current,
                known,
            });
        }
        Ok(current)
    }

    /// Runs one statement of `migration`.
    pub(super) async fn execute_migration_statement(
        &self,
        migration: &Migration,
        statement: &str,
    ) -> Result<(), StoreError> {
        self.client
            .query_raw(statement)
            .execute()
            .await
            .map_err(StoreError::ch(format!("applying {}", migration.name)))
    }

    /// Records `migration` as applied in `schema_migrations`.
    pub(super) async fn record_migration(&self, migration: &Migration) -> Result<(), StoreError> {
        let mut insert = self
            .client
            .insert::<MigrationRow>("schema_migrations")
            .await
            .map_err(StoreError::ch("recording a migration"))?;
        insert
            .write(&MigrationRow {
                version: migration.version,
                name: migration.name.to_owned(),
                applied: super::writer::unix_now(),
            })
            .await
            .map_err(StoreError::ch("recording a migration"))?;
        insert
            .end()
            .await
            .map_err(StoreError::ch("recording a migration"))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        Ok(())
    }

    /// The first `Distributed` table of the database, if any (a cluster's layout).
    async fn distributed_table(&self) -> Result<Option<String>, StoreError> {
        let tables: Vec<String> = self
            .client
            .query(
                "SELECT name FROM system.tables WHERE database = ? AND engine = 'Distributed' \
                 ORDER BY name LIMIT 1",
            )
            .bind(self.database.as_str())
            .fetch_all()
            .await
            .map_err(StoreError::ch("reading system.tables"))?;
        Ok(tables.into_iter().next())
    }

    /// Whether `statement` is an `ALTER TABLE` whose columns are already added (or already gone):
    /// 18.16 has no `ADD COLUMN IF NOT EXISTS` or `DROP COLUMN IF EXISTS`, and a migration
    /// interrupted after that statement must still be able to run again. (An `ALTER` applies its
    /// clauses together, so one column tells for all.)
    async fn already_applied(&self, statement: &str) -> Result<bool, StoreError> {
        let Some((table, adds, drops)) = super::cluster::column_changes(statement) else {
            return Ok(false);
        };
        if let Some(added) = adds.first() {
            return self.has_column(&table, added).await;
        }
        match drops.first() {
            Some(dropped) => Ok(!self.has_column(&table, dropped).await?),
            None => Ok(false),
        }
    }

    /// Whether `table` of the database has a column `column`.
    pub(super) async fn has_column(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        let present: u64 = self
            .client
            .query(
                "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
            )
            .bind(self.database.as_str())
            .bind(table)
            .bind(column)
            .fetch_one()
            .await
            .map_err(StoreError::ch("reading system.columns"))?;
        Ok(present > 0)
    }

    /// The database's schema version (0 when `schema_migrations` is empty).
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        self.client
            .query("SELECT toUInt32(max(version)) FROM schema_migrations")
            .fetch_one::<u32>()
            .await
            .map_err(StoreError::ch("reading schema_migrations"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Semicolons in comments and strings do not split; comment-only chunks are dropped.
    #[test]
    fn splits_on_semicolons_outside_comments_and_strings() {
        let sql = "-- a; comment\nCREATE TABLE a (x String DEFAULT ';');\n\n-- only a comment;\n;SELECT 1";
        let statements = split_statements(sql);
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].ends_with("DEFAULT ';')"));
        assert_eq!(statements[1], "SELECT 1");
    }

    /// Every embedded migration splits into statements and versions increase.
    #[test]
    fn migrations_are_ordered_and_non_empty() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last);
            last = m.version;
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            assert!(!split_statements(m.sql).is_empty());
        }
    }
}
