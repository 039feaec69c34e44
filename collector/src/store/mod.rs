//! Store: the one place that talks to ClickHouse — connection, schema migrations, batched writes.
//!
//! Every ClickHouse request of the collector (ingest, queries, the detector) goes through a
//! [`Store`], which wraps a `clickhouse` 0.15 client set up the way ClickHouse 18.16 and modern
//! servers both accept (see `DESIGN.md`): row validation off (RowBinary), client-side `bind()`,
//! `TCP_NODELAY` on the HTTP connector (or each insert stalls ~30 ms) and a pool idle timeout
//! below the server's 3 s keep-alive.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetprof_collector::store::{Store, StoreConfig};
//! let store = Store::connect(&StoreConfig::new("http://127.0.0.1:8123")).await?;
//! store.migrate().await?; // creates the database and tables, or upgrades them
//! let services: Vec<String> = store.client().query("SELECT DISTINCT service FROM samples").fetch_all().await?;
//! # let _ = services; Ok(()) }
//! ```

pub mod cluster;
pub(crate) mod energy;
pub mod local_server;
mod migrate;
mod model;
mod named;
mod resolved;
mod retention;
mod writer;

use std::time::Duration;

use clickhouse::Client;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use migrate::{MIGRATIONS, Migration, split_statements};
pub use model::{
    Batch, BatchKey, EnergyReading, EnergySplit, LossCounters, Process, SampleInfo, StackInfo,
    StoredFrame, TRUNCATED_ROOT_PREFIX, frame_id, stack_id,
};
pub use named::{CUT_STACK, named_samples, named_samples_of};
pub use resolved::{NameTable, ResolvedName, ResolvedNames, name_batch, needs_names};
pub use retention::{DroppedPartition, Period, RETAINED_TABLES, TrimmedRows};
pub use writer::{KNOWN_IDS_LIMIT, KnownIds, PresentParts, SampleRow, WriteOutcome, rollup_marker};

/// The idle time after which pooled HTTP connections are closed: below ClickHouse's default
/// `keep_alive_timeout` of 3 s, so the client never reuses a connection the server is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_millis(2500);

/// Time allowed to open a TCP connection to ClickHouse.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach ClickHouse.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding fleetprof's tables; created by [`Store::migrate`]. Default `fleetprof`.
    pub database: String,
    /// User; default: ClickHouse's `default`.
    pub user: Option<String>,
    /// Password; default: none.
    pub password: Option<String>,
    /// Time allowed for one insert to be answered. Default 30 s.
    pub insert_timeout: Duration,
    /// How to reach every node's HTTP endpoint when the database is laid out over a cluster
    /// (mutations and partition operations run on each node). Default: each node's host at
    /// this URL's port.
    pub nodes: cluster::NodeEndpoints,
}

impl StoreConfig {
    /// A configuration for `url` with the defaults: database `fleetprof`, user `default`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: "fleetprof".to_owned(),
            user: None,
            password: None,
            insert_timeout: Duration::from_secs(30),
            nodes: cluster::NodeEndpoints::default(),
        }
    }

    /// Sets how to reach a cluster's nodes (default: each node's host at this URL's port).
    pub fn with_nodes(mut self, nodes: cluster::NodeEndpoints) -> Self {
        self.nodes = nodes;
        self
    }

    /// Sets the database (default `fleetprof`).
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    /// Sets user and password (default: ClickHouse's `default` user, no password).
    pub fn with_credentials(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// ClickHouse answered with an error or could not be reached.
    #[error("ClickHouse {what}: {source}")]
    ClickHouse {
        /// What the store was doing.
        what: String,
        /// The client's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// The database has a newer schema than this collector knows; refusing to touch it.
    #[error(
        "database `{database}` has schema version {found}, newer than {known} (the newest this \
         collector knows); upgrade fleetprof-collector"
    )]
    SchemaTooNew {
        /// The database.
        database: String,
        /// The version found in `schema_migrations`.
        found: u32,
        /// The newest version compiled into this collector.
        known: u32,
    },
    /// The database is laid out for a cluster (`migrate --cluster`): a migration applied to this
    /// one server would leave its nodes apart.
    #[error(
        "database `{database}` is laid out for a ClickHouse cluster (`{table}` is a Distributed \
         table); upgrade it with `fleetprof-collector migrate --cluster NAME`"
    )]
    ClusterLayout {
        /// The database.
        database: String,
        /// A Distributed table found in it.
        table: String,
    },
    /// The database name is not a plain identifier.
    #[error("invalid database name {0:?}: use letters, digits and underscores")]
    InvalidDatabase(String),
    /// The nodes of the database's cluster could not be found or reached (for an operation
    /// that runs on each node).
    #[error(transparent)]
    Cluster(Box<cluster::ClusterError>),
    /// ClickHouse accepted work it runs in the background (a mutation) but did not finish it
    /// in time.
    #[error("{0}")]
    Timeout(String),
}

impl From<cluster::ClusterError> for StoreError {
    fn from(e: cluster::ClusterError) -> Self {
        match e {
            cluster::ClusterError::Store(e) => e,
            e => Self::Cluster(Box::new(e)),
        }
    }
}

impl StoreError {
    pub(crate) fn ch(what: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> Self {
        let what = what.into();
        move |source| Self::ClickHouse { what, source }
    }
}

/// A handle on fleetprof's ClickHouse database; cheap to clone (the HTTP pool is shared).
#[derive(Clone)]
pub struct Store {
    client: Client,
    /// Same server, no database selected (to create the database).
    server: Client,
    database: String,
    insert_timeout: Duration,
    /// What it was built from: a cluster's other nodes are reached with the same credentials.
    config: StoreConfig,
    /// Names the symbol store gave unnamed frames, shared by this store's clones.
    resolved: ResolvedNames,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the client. Does not contact the server (so the collector can start while
    /// ClickHouse is down); [`Store::migrate`] and [`Store::ping`] do.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::new(config)
    }

    /// Same as [`Store::connect`], without `async`.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        if config.database.is_empty()
            || !config
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::InvalidDatabase(config.database.clone()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // A server that does not accept must not stall a caller (the ingest writer also bounds
        // every call as a whole).
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        let mut server = Client::with_http_client(http)
            .with_url(config.url.clone())
            .with_validation(false);
        if let Some(user) = &config.user {
            server = server.with_user(user.clone());
        }
        if let Some(password) = &config.password {
            server = server.with_password(password.clone());
        }
        let client = server.clone().with_database(config.database.clone());
        Ok(Self {
            client,
            server,
            database: config.database.clone(),
            insert_timeout: config.insert_timeout,
            config: config.clone(),
            resolved: ResolvedNames::default(),
        })
    }

    /// The underlying client, bound to fleetprof's database, for queries of your own.
    /// Remember 18.16: `.bind()` not `.param()`, and no `IN ?`: match a list with
    /// `col IN (SELECT arrayJoin(?))` (a hash set, built once), not `has(?, col)` (scans the list
    /// for every row: seconds against a few thousand names). Agent code reads through the
    /// collector's readers ([`crate::query`], [`crate::regressions`]) instead.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The names the symbol store gave frames hosts send unnamed: the writer names batches with
    /// them, the resolver publishes them (see [`ResolvedNames`]).
    pub fn resolved_names(&self) -> &ResolvedNames {
        &self.resolved
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Checks that ClickHouse answers (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.server
            .query("SELECT 1")
            .execute()
            .await
            .map_err(StoreError::ch("ping"))
    }
}
