//! A ClickHouse cluster as code: `fleetprof-collector migrate --cluster NAME` lays fleetprof's
//! schema out over every node of a cluster defined in the nodes' `<remote_servers>`.
//!
//! ClickHouse 18.16 runs `ON CLUSTER` DDL only through ZooKeeper, which these machines lack, so
//! [`migrate_cluster`] reads the nodes from `system.clusters` of one node and connects to every
//! node itself. It applies the same migration files as the single-server path
//! ([`MIGRATIONS`]), statement by statement, rewritten for the cluster:
//!
//! - every table a migration creates is created as `<name>_local` on each node, with a
//!   `Distributed` table under the collector's name in front of it;
//! - the large tables are sharded over the cluster `NAME` (one shard per node or per group of
//!   replicas): by `cityHash64(host)` when they have a `host` column (a host's samples, batches
//!   and losses sit on one shard), else by the hash of their first sorting-key column
//!   (`stacks` by `stack_id`, `frames` by `frame_id`), so a Replacing/SummingMergeTree sees every
//!   copy of a key on one shard;
//! - the small tables ([`SHARED_TABLES`]) are written to every node and read from any one, through
//!   a second cluster (default `NAME_shared`) that lists every node as a replica of one shard with
//!   `internal_replication` false: a Distributed insert then writes each replica itself, so any
//!   collector or agent on any node reads the same rows, without ZooKeeper;
//! - a materialized view reads and fills the local tables; `ALTER … ADD/DROP/MODIFY COLUMN`
//!   reaches the local and the Distributed table; other `ALTER`s (mutations, partitions) the
//!   local one; `DROP TABLE` both.
//!
//! `schema_migrations` stays a plain table on each node: every node records its own version,
//! and a second run finds every node current and changes nothing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetprof_collector::store::StoreConfig;
//! use fleetprof_collector::store::cluster::{ClusterOptions, migrate_cluster};
//! let seed = StoreConfig::new("http://ch1:8123");
//! for node in migrate_cluster(&seed, &ClusterOptions::new("fleetprof")).await? {
//!     println!("{}: now at version {}", node.node.url, node.version);
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use serde::Deserialize;

use super::{MIGRATIONS, Migration, Store, StoreConfig, StoreError, split_statements};

/// The small tables every collector and agent must see identically: written to every node
/// through the shared cluster, read from any. Every other table a migration creates is sharded.
pub const SHARED_TABLES: &[&str] = &["changes", "deploys", "regressions", "symbolized_frames"];

/// The suffix of each node's local table behind a Distributed table (`samples_local`).
pub const LOCAL_SUFFIX: &str = "_local";

/// The settings the collector's and agent's ClickHouse profile needs on a cluster, with the
/// values needed: readers join and `IN` two Distributed tables (refused by default), and a
/// Distributed insert must be on its shard when acknowledged (or a second collector's
/// duplicate check misses it).
pub const REQUIRED_SETTINGS: &[(&str, &str)] = &[
    ("distributed_product_mode", "global"),
    ("insert_distributed_sync", "1"),
];

/// What [`migrate_cluster`] lays out and where it finds the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The cluster (in `<remote_servers>`) the large tables are sharded over.
    pub cluster: String,
    /// The cluster holding the small tables: one shard, every node a replica,
    /// `internal_replication` false. Default: `<cluster>_shared`.
    pub shared_cluster: String,
    /// Each node's HTTP port, when not given in `node_urls`. Default: the seed URL's port.
    pub http_port: Option<u16>,
    /// HTTP endpoints of nodes, by `host:port` as `system.clusters` names them (the native port),
    /// for nodes not reachable at `http://host:<http_port>`.
    pub node_urls: BTreeMap<String, String>,
}

impl ClusterOptions {
    /// Options for `cluster`, with the defaults.
    pub fn new(cluster: impl Into<String>) -> Self {
        let cluster = cluster.into();
        Self {
            shared_cluster: format!("{cluster}_shared"),
            cluster,
            http_port: None,
            node_urls: BTreeMap::new(),
        }
    }

    /// Takes each node's HTTP endpoint from `endpoints` (`--node-http-port`, `--node-url`).
    pub fn with_endpoints(mut self, endpoints: &NodeEndpoints) -> Self {
        self.http_port = endpoints.http_port;
        self.node_urls.clone_from(&endpoints.node_urls);
        self
    }
}

/// How to reach each node of a cluster over HTTP, when `system.clusters` names it by host and
/// native port only (what `--node-http-port` and `--node-url` give every command).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeEndpoints {
    /// Each node's HTTP port, when not in `node_urls`. Default: the port of the URL used.
    pub http_port: Option<u16>,
    /// HTTP endpoints by `host:port` as `system.clusters` names the node (its native port).
    pub node_urls: BTreeMap<String, String>,
}

/// A node of the cluster, as `system.clusters` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its shard in the cluster (from 1).
    pub shard: u32,
    /// Its replica number in the shard (from 1).
    pub replica: u32,
    /// Host name in `<remote_servers>`.
    pub host: String,
    /// Native (TCP) port in `<remote_servers>`.
    pub port: u16,
    /// The HTTP endpoint this migration used.
    pub url: String,
}

impl ClusterNode {
    /// `host:port`, as `--node-url` names a node.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// What [`migrate_cluster`] did on one node.
#[derive(Debug, Clone)]
pub struct NodeMigration {
    /// The node.
    pub node: ClusterNode,
    /// Migrations applied now (empty: it was current).
    pub applied: Vec<u32>,
    /// Its schema version afterwards.
    pub version: u32,
    /// Settings of the migrating user that the collector needs otherwise (see
    /// [`REQUIRED_SETTINGS`]), as `name = value (needs X)`.
    pub settings_to_fix: Vec<String>,
}

/// Errors of a cluster migration.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Reading the cluster from the seed node failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A node answered with an error.
    #[error("node {node} ({url}): {source}")]
    Node {
        /// The node's `host:port`.
        node: String,
        /// Its HTTP endpoint.
        url: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// The cluster is not in the seed node's `<remote_servers>`.
    #[error(
        "cluster `{cluster}` is not defined in <remote_servers> of the server at {url} (it \
         defines: {known}); see the README's section \"ClickHouse, a cluster\""
    )]
    UnknownCluster {
        /// The cluster asked for.
        cluster: String,
        /// The seed node.
        url: String,
        /// The clusters it defines.
        known: String,
    },
    /// The shared cluster does not list the same nodes as one shard.
    #[error(
        "cluster `{shared}` (for the small tables) must be one shard listing every node of \
         `{cluster}` as a replica, with internal_replication false: {reason}"
    )]
    SharedLayout {
        /// The sharded cluster.
        cluster: String,
        /// The shared cluster.
        shared: String,
        /// What differs.
        reason: String,
    },
    /// The server reached at a node's URL is not that node.
    #[error(
        "node {node}: the server at {url} is not in shard {shard} of `{cluster}`; give its \
         HTTP endpoint with --node-url {node}=URL"
    )]
    WrongNode {
        /// The node's `host:port`.
        node: String,
        /// The URL used.
        url: String,
        /// Its shard.
        shard: u32,
        /// The cluster.
        cluster: String,
    },
    /// A node holds a table laid out for one server where the cluster needs a Distributed one.
    #[error(
        "node {node}: table `{table}` is a {engine} table, not Distributed: database \
         `{database}` was laid out for a single server; migrate the cluster into a new database \
         (--database) and copy the rows over"
    )]
    SingleServerLayout {
        /// The node's `host:port`.
        node: String,
        /// The database.
        database: String,
        /// The table.
        table: String,
        /// Its engine.
        engine: String,
    },
    /// A migration statement this module cannot lay out over a cluster.
    #[error(
        "{migration}: a cluster migration knows CREATE TABLE/VIEW, DROP TABLE and ALTER TABLE, \
         not: {statement}"
    )]
    Unsupported {
        /// The migration file.
        migration: &'static str,
        /// The statement.
        statement: String,
    },
    /// A data operation named a table the cluster's layout does not have.
    #[error(
        "table `{table}` of database `{database}` is not a Distributed table, so it has no \
         local table on the nodes of its cluster"
    )]
    NotDistributed {
        /// The database.
        database: String,
        /// The table.
        table: String,
    },
    /// A cluster or host name that cannot be used in DDL or a URL.
    #[error("invalid {what} {name:?}: use letters, digits, `_`, `-` and `.`")]
    InvalidName {
        /// What it names.
        what: &'static str,
        /// The name.
        name: String,
    },
}

/// One step of a statement laid out over the cluster, run on each node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Run as written.
    Sql(String),
    /// Create the Distributed table `table` in front of `table_local`.
    Distributed {
        /// The collector's name of the table.
        table: String,
        /// Small table: over the shared cluster.
        shared: bool,
    },
    /// An `ALTER TABLE table` changing columns; skipped when every column it adds is there
    /// already, or every column it drops is gone (18.16 has no `IF [NOT] EXISTS` there).
    AlterColumns {
        /// The table altered.
        table: String,
        /// The statement.
        sql: String,
        /// Columns it adds.
        adds: Vec<String>,
        /// Columns it drops.
        drops: Vec<String>,
    },
}

/// A word of a statement: an identifier, keyword or number (with its byte offset), or one
/// punctuation character. Strings and comments are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token<'a> {
    at: usize,
    text: &'a str,
}

fn tokens(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if b == b'\'' || b == b'"' || b == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != b {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if word(b) {
            let start = i;
            while i < bytes.len() && word(bytes[i]) {
                i += 1;
            }
            out.push(Token {
                at: start,
                text: &sql[start..i],
            });
        } else {
            if !b.is_ascii_whitespace() && b.is_ascii() {
                out.push(Token {
                    at: i,
                    text: &sql[i..=i],
                });
            }
            i += 1;
        }
    }
    out
}

fn is(token: Option<&Token<'_>>, keyword: &str) -> bool {
    token.is_some_and(|t| t.text.eq_ignore_ascii_case(keyword))
}

/// The index of the object name after `CREATE TABLE`, `DROP TABLE`, … (skipping `IF [NOT] EXISTS`).
fn name_index(tokens: &[Token<'_>], after: usize) -> usize {
    let mut i = after;
    if is(tokens.get(i), "IF") {
        i += 1;
        if is(tokens.get(i), "NOT") {
            i += 1;
        }
        i += 1; // EXISTS
    }
    i
}

/// `sql` with the tokens at `indexes` given the `_local` suffix.
fn localize(sql: &str, tokens: &[Token<'_>], indexes: &[usize]) -> String {
    let mut out = sql.to_owned();
    // From the end, so earlier offsets stay valid.
    let mut sorted = indexes.to_vec();
    sorted.sort_unstable();
    for &i in sorted.iter().rev() {
        let t = tokens[i];
        out.insert_str(t.at + t.text.len(), LOCAL_SUFFIX);
    }
    out
}

/// The tables `migrations` create (what a cluster lays out as local + Distributed).
fn migration_tables(migrations: &[Migration]) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    for migration in migrations {
        for statement in split_statements(migration.sql) {
            let t = tokens(&statement);
            if is(t.first(), "CREATE")
                && is(t.get(1), "TABLE")
                && let Some(name) = t.get(name_index(&t, 2))
            {
                tables.insert(name.text.to_owned());
            }
        }
    }
    tables
}

/// What the clauses of an `ALTER TABLE t …` do.
#[derive(Debug, Default)]
struct AlterClauses {
    /// Columns added.
    adds: Vec<String>,
    /// Columns dropped.
    drops: Vec<String>,
    /// The text of each clause that changes columns (`ADD COLUMN …`, `MODIFY COLUMN …`).
    column_texts: Vec<String>,
    /// Clauses changing the local table's sorting key (`MODIFY ORDER BY …`): a Distributed table
    /// has none, and 18.16 takes a new sort-key column only in the statement that adds it, so
    /// they may sit beside column clauses.
    sort_key: usize,
    /// Any other clause: mutations and partition operations, which act on the data.
    other: usize,
}

/// Splits an `ALTER`'s clauses (the tokens after the table name) by what they do.
fn alter_clauses(statement: &str, clauses: &[Token<'_>]) -> AlterClauses {
    let mut out = AlterClauses::default();
    let mut depth = 0usize;
    // (first token index, byte offset) of the clause being read.
    let mut clause: Option<(usize, usize)> = None;
    let finish = |out: &mut AlterClauses, first: usize, from: usize, to: usize| {
        let verb = clauses[first].text.to_ascii_uppercase();
        if is(clauses.get(first + 1), "COLUMN")
            && matches!(verb.as_str(), "ADD" | "DROP" | "MODIFY" | "COMMENT")
        {
            if let Some(n) = clauses.get(name_index(clauses, first + 2)) {
                match verb.as_str() {
                    "ADD" => out.adds.push(n.text.to_owned()),
                    "DROP" => out.drops.push(n.text.to_owned()),
                    _ => {}
                }
            }
            out.column_texts.push(statement[from..to].trim().to_owned());
        } else if verb == "MODIFY" && is(clauses.get(first + 1), "ORDER") {
            out.sort_key += 1;
        } else {
            out.other += 1;
        }
    };
    for (i, token) in clauses.iter().enumerate() {
        if clause.is_none() {
            clause = Some((i, token.at));
        }
        match token.text {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            "," if depth == 0 => {
                if let Some((first, from)) = clause.take() {
                    finish(&mut out, first, from, token.at);
                }
            }
            _ => {}
        }
    }
    if let Some((first, from)) = clause {
        finish(
            &mut out,
            first,
            from,
            statement.trim_end().trim_end_matches(';').len(),
        );
    }
    out
}

/// For an `ALTER TABLE t …` that changes columns: `t`, the columns it adds and those it drops
/// (what a migration run again after an interruption must not repeat; 18.16 has no
/// `IF [NOT] EXISTS` there). `None` for any other statement.
pub(super) fn column_changes(statement: &str) -> Option<(String, Vec<String>, Vec<String>)> {
    let t = tokens(statement);
    if !(is(t.first(), "ALTER") && is(t.get(1), "TABLE")) {
        return None;
    }
    let table = t.get(2)?;
    let clauses = alter_clauses(statement, &t[3..]);
    (!clauses.column_texts.is_empty()).then(|| (table.text.to_owned(), clauses.adds, clauses.drops))
}

/// Lays one migration statement out over the cluster: the steps each node runs.
fn plan(
    migration: &'static str,
    statement: &str,
    tables: &BTreeSet<String>,
) -> Result<Vec<Step>, ClusterError> {
    let unsupported = || ClusterError::Unsupported {
        migration,
        statement: statement.to_owned(),
    };
    let t = tokens(statement);
    let first = |kw| is(t.first(), kw);
    let known = |i: usize| t.get(i).is_some_and(|n| tables.contains(n.text));
    if first("CREATE") && is(t.get(1), "DATABASE") || first("CREATE") && is(t.get(1), "VIEW") {
        // A plain view reads through the Distributed tables like any query.
        return Ok(vec![Step::Sql(statement.to_owned())]);
    }
    if first("CREATE") && is(t.get(1), "TABLE") {
        let name = name_index(&t, 2);
        let Some(table) = t.get(name).filter(|n| !n.text.contains('.')) else {
            return Err(unsupported());
        };
        return Ok(vec![
            Step::Sql(localize(statement, &t, &[name])),
            Step::Distributed {
                table: table.text.to_owned(),
                shared: SHARED_TABLES.contains(&table.text),
            },
        ]);
    }
    if first("CREATE") && is(t.get(1), "MATERIALIZED") && is(t.get(2), "VIEW") {
        // Each node's view reads its local rows and fills its local target.
        let renamed: Vec<usize> = (1..t.len())
            .filter(|&i| ["TO", "FROM", "JOIN"].iter().any(|kw| is(t.get(i - 1), kw)) && known(i))
            .collect();
        if !t.iter().any(|x| x.text.eq_ignore_ascii_case("TO")) {
            return Err(unsupported());
        }
        return Ok(vec![Step::Sql(localize(statement, &t, &renamed))]);
    }
    if first("DROP") && is(t.get(1), "TABLE") {
        let name = name_index(&t, 2);
        let mut steps = vec![Step::Sql(statement.to_owned())];
        if known(name) {
            steps.push(Step::Sql(localize(statement, &t, &[name])));
        }
        return Ok(steps);
    }
    if first("ALTER") && is(t.get(1), "TABLE") {
        let name = 2;
        let Some(table) = t.get(name) else {
            return Err(unsupported());
        };
        if !known(name) {
            return Ok(vec![Step::Sql(statement.to_owned())]);
        }
        let AlterClauses {
            adds,
            drops,
            column_texts,
            other,
            ..
        } = alter_clauses(statement, &t[name + 1..]);
        let local = Step::AlterColumns {
            table: format!("{}{LOCAL_SUFFIX}", table.text),
            sql: localize(statement, &t, &[name]),
            adds: adds.clone(),
            drops: drops.clone(),
        };
        if column_texts.is_empty() {
            // Mutations and partition operations act on the data, and a sorting key belongs to
            // the data's table: only local tables have either.
            return Ok(vec![local]);
        }
        if other > 0 {
            return Err(unsupported());
        }
        // The Distributed table takes the column clauses alone (it has no sorting key).
        let distributed = Step::AlterColumns {
            table: table.text.to_owned(),
            sql: format!("ALTER TABLE {} {}", table.text, column_texts.join(", ")),
            adds,
            drops: drops.clone(),
        };
        // Queries must never see a Distributed column its local tables lack.
        return Ok(if drops.is_empty() {
            vec![local, distributed]
        } else {
            vec![distributed, local]
        });
    }
    Err(unsupported())
}

fn check_name(what: &'static str, name: &str) -> Result<(), ClusterError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(ClusterError::InvalidName {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[derive(Row, Deserialize)]
struct ClusterRow {
    shard: u32,
    replica: u32,
    host: String,
    port: u16,
}

async fn cluster_rows(seed: &Store, cluster: &str) -> Result<Vec<ClusterRow>, StoreError> {
    seed.server
        .query(
            "SELECT toUInt32(shard_num) AS shard, toUInt32(replica_num) AS replica, host_name AS \
             host, toUInt16(port) AS port FROM system.clusters WHERE cluster = ? \
             ORDER BY shard, replica",
        )
        .bind(cluster)
        .fetch_all()
        .await
        .map_err(StoreError::ch("reading system.clusters"))
}

fn port_of(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, rest)| rest.trim_end_matches('/').parse().ok())
        .unwrap_or(8123)
}

/// The nodes of `options.cluster` as the seed node's `system.clusters` lists them, each with
/// the HTTP endpoint to reach it; checks that the shared cluster lists the same nodes as one
/// shard.
pub async fn cluster_nodes(
    seed: &StoreConfig,
    options: &ClusterOptions,
) -> Result<Vec<ClusterNode>, ClusterError> {
    check_name("cluster name", &options.cluster)?;
    check_name("cluster name", &options.shared_cluster)?;
    let store = Store::new(seed)?;
    let rows = cluster_rows(&store, &options.cluster).await?;
    let shared = cluster_rows(&store, &options.shared_cluster).await?;
    for (name, rows) in [
        (&options.cluster, &rows),
        (&options.shared_cluster, &shared),
    ] {
        if rows.is_empty() {
            let known: Vec<String> = store
                .server
                .query("SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster")
                .fetch_all()
                .await
                .map_err(StoreError::ch("reading system.clusters"))?;
            return Err(ClusterError::UnknownCluster {
                cluster: name.clone(),
                url: seed.url.clone(),
                known: known.join(", "),
            });
        }
    }
    let addresses = |rows: &[ClusterRow]| -> BTreeSet<(String, u16)> {
        rows.iter().map(|r| (r.host.clone(), r.port)).collect()
    };
    let layout_error = |reason: String| ClusterError::SharedLayout {
        cluster: options.cluster.clone(),
        shared: options.shared_cluster.clone(),
        reason,
    };
    if shared.iter().any(|r| r.shard != 1) {
        return Err(layout_error("it has more than one shard".to_owned()));
    }
    if addresses(&shared) != addresses(&rows) {
        return Err(layout_error(format!(
            "its nodes {:?} differ from {:?}",
            addresses(&shared),
            addresses(&rows)
        )));
    }
    let http_port = options.http_port.unwrap_or_else(|| port_of(&seed.url));
    let mut nodes = Vec::new();
    for row in rows {
        check_name("host name", &row.host)?;
        let address = format!("{}:{}", row.host, row.port);
        let url = options.node_urls.get(&address).cloned().unwrap_or_else(|| {
            if row.host.contains(':') {
                format!("http://[{}]:{http_port}", row.host)
            } else {
                format!("http://{}:{http_port}", row.host)
            }
        });
        nodes.push(ClusterNode {
            shard: row.shard,
            replica: row.replica,
            host: row.host,
            port: row.port,
            url,
        });
    }
    Ok(nodes)
}

/// Lays fleetprof's schema out over every node of `options.cluster` (see the module
/// documentation), or upgrades it; a second run changes nothing. Every statement of every
/// migration is planned before any node is touched, so a statement this cannot lay out fails
/// before anything changes.
pub async fn migrate_cluster(
    seed: &StoreConfig,
    options: &ClusterOptions,
) -> Result<Vec<NodeMigration>, ClusterError> {
    migrate_cluster_with(seed, options, MIGRATIONS).await
}

/// [`migrate_cluster`] with `migrations` (oldest first, versions increasing) instead of the
/// collector's own: to test how a future migration is laid out over a cluster.
pub async fn migrate_cluster_with(
    seed: &StoreConfig,
    options: &ClusterOptions,
    migrations: &[Migration],
) -> Result<Vec<NodeMigration>, ClusterError> {
    let tables = migration_tables(migrations);
    let mut plans: Vec<(&Migration, Vec<Step>)> = Vec::new();
    for migration in migrations {
        let mut steps = Vec::new();
        for statement in split_statements(migration.sql) {
            steps.extend(plan(migration.name, &statement, &tables)?);
        }
        plans.push((migration, steps));
    }
    let nodes = cluster_nodes(seed, options).await?;
    // Every node is checked before any is changed: a wrong URL must not leave half a cluster.
    let mut stores = Vec::new();
    for node in &nodes {
        let store = Store::new(&StoreConfig {
            url: node.url.clone(),
            ..seed.clone()
        })?;
        check_node(&store, node, options).await?;
        check_not_single_server(&store, node, &tables).await?;
        stores.push(store);
    }
    let mut done = Vec::new();
    for (node, store) in nodes.into_iter().zip(stores) {
        let at_node = |source: StoreError| ClusterError::Node {
            node: node.address(),
            url: node.url.clone(),
            source,
        };
        let known = migrations.last().map_or(0, |m| m.version);
        let current = store.prepare_migrations(known).await.map_err(at_node)?;
        let pending: Vec<&(&Migration, Vec<Step>)> =
            plans.iter().filter(|(m, _)| m.version > current).collect();
        let mut applied = Vec::new();
        for (migration, steps) in pending {
            for step in steps {
                run_step(&store, migration, step, options)
                    .await
                    .map_err(at_node)?;
            }
            store.record_migration(migration).await.map_err(at_node)?;
            applied.push(migration.version);
        }
        let version = store.schema_version().await.map_err(at_node)?;
        let settings_to_fix = settings_to_fix(&store).await.map_err(at_node)?;
        tracing::info!(node = %node.address(), ?applied, version, "cluster node migrated");
        done.push(NodeMigration {
            node,
            applied,
            version,
            settings_to_fix,
        });
    }
    Ok(done)
}

/// Checks that the server reached at the node's URL is in the node's shard.
async fn check_node(
    store: &Store,
    node: &ClusterNode,
    options: &ClusterOptions,
) -> Result<(), ClusterError> {
    // 18.16's is_local says whether the shard has a replica on this server.
    let local: Vec<u8> = store
        .server
        .query(
            "SELECT toUInt8(is_local) FROM system.clusters WHERE cluster = ? AND shard_num = ? \
             AND replica_num = ?",
        )
        .bind(options.cluster.as_str())
        .bind(node.shard)
        .bind(node.replica)
        .fetch_all()
        .await
        .map_err(|e| ClusterError::Node {
            node: node.address(),
            url: node.url.clone(),
            source: StoreError::ch("reading system.clusters")(e),
        })?;
    if local != [1] {
        return Err(ClusterError::WrongNode {
            node: node.address(),
            url: node.url.clone(),
            shard: node.shard,
            cluster: options.cluster.clone(),
        });
    }
    Ok(())
}

#[derive(Row, Deserialize)]
struct TableEngine {
    name: String,
    engine: String,
}

/// Refuses a node whose database holds fleetprof's tables laid out for one server.
async fn check_not_single_server(
    store: &Store,
    node: &ClusterNode,
    tables: &BTreeSet<String>,
) -> Result<(), ClusterError> {
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    // The server-level client: the database may not exist yet.
    let found: Vec<TableEngine> = store
        .server
        .query(
            "SELECT name, engine FROM system.tables WHERE database = ? AND has(?, name) \
             AND engine != 'Distributed' ORDER BY name LIMIT 1",
        )
        .bind(store.database.as_str())
        .bind(names)
        .fetch_all()
        .await
        .map_err(|e| ClusterError::Node {
            node: node.address(),
            url: node.url.clone(),
            source: StoreError::ch("reading system.tables")(e),
        })?;
    if let Some(t) = found.into_iter().next() {
        return Err(ClusterError::SingleServerLayout {
            node: node.address(),
            database: store.database.clone(),
            table: t.name,
            engine: t.engine,
        });
    }
    Ok(())
}

async fn run_step(
    store: &Store,
    migration: &Migration,
    step: &Step,
    options: &ClusterOptions,
) -> Result<(), StoreError> {
    match step {
        Step::Sql(sql) => store.execute_migration_statement(migration, sql).await,
        Step::AlterColumns {
            table,
            sql,
            adds,
            drops,
        } => {
            let mut present = Vec::new();
            for column in adds.iter().chain(drops) {
                present.push(store.has_column(table, column).await?);
            }
            let (added, dropped) = present.split_at(adds.len());
            let done = (!adds.is_empty() && added.iter().all(|p| *p))
                || (!drops.is_empty() && dropped.iter().all(|p| !*p));
            if done {
                return Ok(());
            }
            store.execute_migration_statement(migration, sql).await
        }
        Step::Distributed { table, shared } => {
            let local = format!("{table}{LOCAL_SUFFIX}");
            let (cluster, key) = if *shared {
                // Every replica gets every row, so the key does not matter.
                (options.shared_cluster.as_str(), "rand()".to_owned())
            } else {
                (options.cluster.as_str(), shard_key(store, &local).await?)
            };
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {table} AS {local} \
                 ENGINE = Distributed('{cluster}', {}, {local}, {key})",
                store.database
            );
            store.execute_migration_statement(migration, &sql).await
        }
    }
}

/// The sharding key of a large table: its host's hash when it has a `host` column, else the
/// hash of the first column of its sorting key (so one key's rows share a shard), else `rand()`.
async fn shard_key(store: &Store, local: &str) -> Result<String, StoreError> {
    if store.has_column(local, "host").await? {
        return Ok("cityHash64(host)".to_owned());
    }
    let keys: Vec<String> = store
        .client
        .query("SELECT sorting_key FROM system.tables WHERE database = ? AND name = ?")
        .bind(store.database.as_str())
        .bind(local)
        .fetch_all()
        .await
        .map_err(StoreError::ch("reading system.tables"))?;
    let first = keys
        .first()
        .and_then(|k| k.split(',').next())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    Ok(first.map_or_else(|| "rand()".to_owned(), |k| format!("cityHash64({k})")))
}

#[derive(Row, Deserialize)]
struct Setting {
    name: String,
    value: String,
}

async fn settings_to_fix(store: &Store) -> Result<Vec<String>, StoreError> {
    let names: Vec<&str> = REQUIRED_SETTINGS.iter().map(|(n, _)| *n).collect();
    let settings: Vec<Setting> = store
        .server
        .query("SELECT name, value FROM system.settings WHERE has(?, name) ORDER BY name")
        .bind(names)
        .fetch_all()
        .await
        .map_err(StoreError::ch("reading system.settings"))?;
    Ok(REQUIRED_SETTINGS
        .iter()
        .filter_map(|(name, wanted)| {
            let value = settings
                .iter()
                .find(|s| s.name == *name)
                .map_or("(unknown)", |s| s.value.as_str());
            (value != *wanted).then(|| format!("{name} = {value} (needs {wanted})"))
        })
        .collect())
}

/// The servers holding a database's rows, for the statements ClickHouse runs on one server's
/// own tables only: mutations (`ALTER TABLE … UPDATE/DELETE`) and partition operations
/// (`ALTER TABLE … DROP PARTITION`), which 18.16 refuses on a Distributed table.
///
/// On a single server that is the server itself and its tables. On a database laid out by
/// [`migrate_cluster`] (its tables are Distributed), it is every node of the tables' cluster,
/// each reached at its HTTP endpoint ([`StoreConfig::nodes`]) and checked to be that node,
/// with each Distributed table's local table (`stacks` → `stacks_local`). Reads and inserts
/// keep going through the Distributed tables.
///
/// ```no_run
/// # async fn demo(store: &fleetprof_collector::store::Store) -> Result<(), fleetprof_collector::store::cluster::ClusterError> {
/// let nodes = store.data_nodes().await?;
/// nodes.alter("stacks", "DELETE WHERE stack_id = ?", |q| q.bind(42u64)).await?;
/// assert!(nodes.wait_for_mutations(std::time::Duration::from_secs(60)).await?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DataNodes {
    /// The cluster the large tables are sharded over; `None` on a single server.
    cluster: Option<String>,
    /// Each Distributed table's local table (empty on a single server).
    locals: BTreeMap<String, String>,
    database: String,
    nodes: Vec<DataNode>,
}

/// One server of [`DataNodes`].
#[derive(Debug, Clone)]
pub struct DataNode {
    /// The node as its cluster lists it; `None` for a single server.
    pub node: Option<ClusterNode>,
    store: Store,
}

impl DataNode {
    /// A store on this server (on a cluster node, its local tables are `<table>_local`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The node's `host:port`, or `the server` for a single server (for messages).
    pub fn label(&self) -> String {
        self.node
            .as_ref()
            .map_or_else(|| "the server".to_owned(), ClusterNode::address)
    }

    /// `source`, said to have happened on this node.
    fn error(&self, source: StoreError) -> ClusterError {
        match &self.node {
            Some(node) => ClusterError::Node {
                node: node.address(),
                url: node.url.clone(),
                source,
            },
            None => ClusterError::Store(source),
        }
    }
}

#[derive(Row, Deserialize)]
struct DistributedTable {
    name: String,
    engine_full: String,
}

/// The cluster, database and local table of a Distributed table's `engine_full`
/// (`Distributed('c', db, t_local, key)`, quoted or not).
fn distributed_args(engine_full: &str) -> Option<(String, String, String)> {
    let args = engine_full.trim().strip_prefix("Distributed(")?;
    let mut parts = Vec::new();
    let (mut depth, mut start, mut quote) = (0usize, 0usize, None);
    for (i, c) in args.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '`' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') if depth == 0 => {
                parts.push(&args[start..i]);
                break;
            }
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    let unquote = |s: &str| s.trim().trim_matches(['\'', '`', '"']).to_owned();
    match parts.as_slice() {
        [cluster, database, table, ..] => {
            Some((unquote(cluster), unquote(database), unquote(table)))
        }
        _ => None,
    }
}

impl Store {
    /// The servers holding this database's rows (see [`DataNodes`]): this server alone, or,
    /// when its tables are Distributed, every node of their cluster.
    pub async fn data_nodes(&self) -> Result<DataNodes, ClusterError> {
        let tables: Vec<DistributedTable> = self
            .client
            .query(
                "SELECT name, engine_full FROM system.tables WHERE database = ? \
                 AND engine = 'Distributed' ORDER BY name",
            )
            .bind(self.database.as_str())
            .fetch_all()
            .await
            .map_err(StoreError::ch("reading system.tables"))?;
        let mut locals = BTreeMap::new();
        let (mut cluster, mut shared) = (None, None);
        for t in tables {
            let Some((on, database, local)) = distributed_args(&t.engine_full) else {
                continue;
            };
            if database != self.database {
                continue;
            }
            if SHARED_TABLES.contains(&t.name.as_str()) {
                shared.get_or_insert(on);
            } else {
                cluster.get_or_insert(on);
            }
            locals.insert(t.name, local);
        }
        let Some(cluster) = cluster.or_else(|| shared.clone()) else {
            return Ok(DataNodes {
                cluster: None,
                locals,
                database: self.database.clone(),
                nodes: vec![DataNode {
                    node: None,
                    store: self.clone(),
                }],
            });
        };
        let mut options = ClusterOptions::new(&cluster).with_endpoints(&self.config.nodes);
        if let Some(shared) = shared {
            options.shared_cluster = shared;
        }
        let mut nodes = Vec::new();
        for node in cluster_nodes(&self.config, &options).await? {
            let store = Store::new(&StoreConfig {
                url: node.url.clone(),
                ..self.config.clone()
            })?;
            // A mutation sent twice to one node and never to another must not pass unnoticed.
            check_node(&store, &node, &options).await?;
            nodes.push(DataNode {
                node: Some(node),
                store,
            });
        }
        Ok(DataNodes {
            cluster: Some(cluster),
            locals,
            database: self.database.clone(),
            nodes,
        })
    }
}

impl DataNodes {
    /// The cluster the large tables are sharded over; `None` on a single server.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// The servers: one on a single server, every node of the cluster otherwise.
    pub fn nodes(&self) -> &[DataNode] {
        &self.nodes
    }

    /// The table holding `table`'s rows on each server: `table` itself on a single server,
    /// its local table (`stacks_local`) on a cluster.
    pub fn local_table(&self, table: &str) -> Result<String, ClusterError> {
        if self.cluster.is_none() {
            return Ok(table.to_owned());
        }
        self.locals
            .get(table)
            .cloned()
            .ok_or_else(|| ClusterError::NotDistributed {
                database: self.database.clone(),
                table: table.to_owned(),
            })
    }

    /// Runs `ALTER TABLE <local table of table> <operation>` on every server, `bind` filling
    /// the operation's `?`s (the same values on each). Stops at the first server that refuses
    /// it, saying which. Mutations run in the background: see
    /// [`DataNodes::wait_for_mutations`].
    pub async fn alter(
        &self,
        table: &str,
        operation: &str,
        bind: impl Fn(clickhouse::query::Query) -> clickhouse::query::Query,
    ) -> Result<(), ClusterError> {
        let local = self.local_table(table)?;
        let sql = format!("ALTER TABLE {local} {operation}");
        let verb = operation.split_whitespace().next().unwrap_or_default();
        for node in &self.nodes {
            bind(node.store.client.query(&sql))
                .execute()
                .await
                .map_err(|e| {
                    node.error(StoreError::ch(format!("ALTER TABLE {local} {verb}"))(e))
                })?;
        }
        Ok(())
    }

    /// Mutations of the database not yet applied, over every server.
    pub async fn mutations_pending(&self) -> Result<u64, ClusterError> {
        let mut pending = 0;
        for node in &self.nodes {
            let n: u64 = node
                .store
                .client
                .query("SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0")
                .bind(self.database.as_str())
                .fetch_one()
                .await
                .map_err(|e| node.error(StoreError::ch("reading system.mutations")(e)))?;
            pending += n;
        }
        Ok(pending)
    }

    /// Waits until every server has applied every mutation of the database, up to `timeout`;
    /// returns whether they all finished.
    pub async fn wait_for_mutations(
        &self,
        timeout: std::time::Duration,
    ) -> Result<bool, ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.mutations_pending().await? == 0 {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> BTreeSet<String> {
        migration_tables(MIGRATIONS)
    }

    fn sql(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Sql(s) | Step::AlterColumns { sql: s, .. } => s.clone(),
                Step::Distributed { table, shared } => format!("distributed {table} {shared}"),
            })
            .collect()
    }

    /// Every table of the migrations is known, the small ones among them.
    #[test]
    fn migration_tables_include_large_and_shared_ones() {
        let t = tables();
        for name in ["samples", "stacks", "frames", "batches", "function_minutes"] {
            assert!(t.contains(name), "{name} missing from {t:?}");
        }
        for name in SHARED_TABLES {
            assert!(t.contains(*name), "{name} missing from {t:?}");
        }
        assert!(!t.contains("function_minutes_mv"));
    }

    /// A CREATE TABLE becomes the local table and a Distributed one in front.
    #[test]
    fn create_table_becomes_local_and_distributed() {
        let steps = plan(
            "x",
            "CREATE TABLE IF NOT EXISTS samples\n(\n time DateTime\n) ENGINE = MergeTree ORDER BY time",
            &tables(),
        )
        .unwrap();
        assert_eq!(
            sql(&steps),
            [
                "CREATE TABLE IF NOT EXISTS samples_local\n(\n time DateTime\n) ENGINE = MergeTree ORDER BY time",
                "distributed samples false"
            ]
        );
        let steps = plan(
            "x",
            "CREATE TABLE deploys (at DateTime) ENGINE = Log",
            &tables(),
        )
        .unwrap();
        assert_eq!(sql(&steps)[1], "distributed deploys true");
    }

    /// A materialized view reads and fills local tables; a column named like a table stays.
    #[test]
    fn materialized_view_uses_local_tables() {
        let statement = "CREATE MATERIALIZED VIEW IF NOT EXISTS service_minutes_mv TO service_minutes AS \
                         SELECT service, sum(count) AS samples FROM samples GROUP BY service";
        let steps = plan("x", statement, &tables()).unwrap();
        assert_eq!(
            sql(&steps),
            [
                "CREATE MATERIALIZED VIEW IF NOT EXISTS service_minutes_mv TO service_minutes_local AS \
              SELECT service, sum(count) AS samples FROM samples_local GROUP BY service"
            ]
        );
    }

    /// Column ALTERs reach both tables (drops the Distributed one first); mutations the local one.
    #[test]
    fn alters_reach_the_right_tables() {
        let steps = plan(
            "x",
            "ALTER TABLE process_energy\n    ADD COLUMN cpu_seconds Float64 DEFAULT 0,\n    ADD COLUMN method String DEFAULT ''",
            &tables(),
        )
        .unwrap();
        let Step::AlterColumns { table, adds, .. } = &steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(table, "process_energy_local");
        assert_eq!(adds, &["cpu_seconds", "method"]);
        assert!(matches!(&steps[1], Step::AlterColumns { table, .. } if table == "process_energy"));

        let steps = plan("x", "ALTER TABLE samples DROP COLUMN functions", &tables()).unwrap();
        assert_eq!(
            sql(&steps),
            [
                "ALTER TABLE samples DROP COLUMN functions",
                "ALTER TABLE samples_local DROP COLUMN functions"
            ]
        );

        let steps = plan(
            "x",
            "ALTER TABLE stacks DELETE WHERE stack_id = 0",
            &tables(),
        )
        .unwrap();
        assert_eq!(
            sql(&steps),
            ["ALTER TABLE stacks_local DELETE WHERE stack_id = 0"]
        );

        assert!(
            plan(
                "x",
                "ALTER TABLE stacks DELETE WHERE 1, ADD COLUMN x UInt8",
                &tables()
            )
            .is_err()
        );

        // A new sort-key column: the local table takes the whole statement (18.16 wants the
        // column and the key in one), the Distributed table the column alone.
        let steps = plan(
            "x",
            "ALTER TABLE function_minutes ADD COLUMN b String, ADD COLUMN n UInt64,\n    MODIFY ORDER BY (service, function, minute, version, b)",
            &tables(),
        )
        .unwrap();
        assert_eq!(
            sql(&steps),
            [
                "ALTER TABLE function_minutes_local ADD COLUMN b String, ADD COLUMN n UInt64,\n    MODIFY ORDER BY (service, function, minute, version, b)",
                "ALTER TABLE function_minutes ADD COLUMN b String, ADD COLUMN n UInt64",
            ]
        );
        let steps = plan(
            "x",
            "ALTER TABLE function_minutes MODIFY ORDER BY (service, function)",
            &tables(),
        )
        .unwrap();
        assert_eq!(
            sql(&steps),
            ["ALTER TABLE function_minutes_local MODIFY ORDER BY (service, function)"]
        );
    }

    /// DROP TABLE of a table drops both; of a view, the view; unknown statements are refused.
    #[test]
    fn drops_and_unsupported_statements() {
        let steps = plan("x", "DROP TABLE IF EXISTS frames", &tables()).unwrap();
        assert_eq!(
            sql(&steps),
            [
                "DROP TABLE IF EXISTS frames",
                "DROP TABLE IF EXISTS frames_local"
            ]
        );
        let steps = plan("x", "DROP TABLE IF EXISTS function_minutes_mv", &tables()).unwrap();
        assert_eq!(sql(&steps), ["DROP TABLE IF EXISTS function_minutes_mv"]);
        let err = plan("x", "INSERT INTO deploys SELECT * FROM deploys", &tables()).unwrap_err();
        assert!(err.to_string().contains("INSERT INTO deploys"), "{err}");
    }

    /// A Distributed table's cluster, database and local table, however 18.16 quotes them.
    #[test]
    fn distributed_engine_arguments() {
        assert_eq!(
            distributed_args(
                "Distributed('fleetprof', fleetprof, stacks_local, cityHash64(stack_id))"
            ),
            Some((
                "fleetprof".into(),
                "fleetprof".into(),
                "stacks_local".into()
            ))
        );
        assert_eq!(
            distributed_args("Distributed(c, 'db', `t_local`)"),
            Some(("c".into(), "db".into(), "t_local".into()))
        );
        assert_eq!(distributed_args("MergeTree ORDER BY x"), None);
        assert_eq!(distributed_args("Distributed(c, db)"), None);
    }

    /// Every statement of every embedded migration can be laid out over a cluster.
    #[test]
    fn every_migration_plans() {
        let t = tables();
        for m in MIGRATIONS {
            for s in split_statements(m.sql) {
                plan(m.name, &s, &t).unwrap();
            }
        }
    }
}
