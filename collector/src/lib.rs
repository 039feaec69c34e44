//! fleetprof's collector: the central half of the data's path.
//!
//! ```text
//! host profiler ──gRPC ProfileBatch──> ingest ──> store (ClickHouse) ──> query / detect ──> CLI, agent
//! ```
//!
//! Every host's `fleetprof-profiler` pushes a batch of symbolized stack samples, process
//! metadata, energy and loss counters every few seconds. The collector validates each batch,
//! stores it exactly once (batches are keyed by host, boot and sequence) in large INSERTs into
//! ClickHouse, and answers the questions efficiency engineers ask: which functions are hot,
//! what a flame graph looks like, what changed between two versions or windows.
//!
//! Modules, in the order data flows through them:
//! - [`ingest`]: the tonic `Ingest` service — auth, validation, the single writer with its
//!   bounded retry buffer.
//! - [`store`]: the one ClickHouse client — schema migrations (`collector/schema/*.sql`),
//!   batched writes, [`store::cluster`] (the schema laid out over a ClickHouse cluster), and
//!   [`store::local_server`], throwaway servers (one, or a cluster) for tests and demos.
//! - [`query`]: top functions, flame graphs, diffs, services, a function's history, stacks
//!   through a function — as plain data.
//! - [`detect`]: regression detection on per-(service, function, bucket) series and root-cause
//!   ranking of changes — pure computation, no database.
//! - [`changes`]: commits (read with `git`) and deploys, stored for root-cause ranking.
//! - [`regressions`]: detection over the stored profiles — reads the series, runs [`detect`],
//!   ranks [`changes`], stores reports in the `regressions` table; the method and the
//!   threshold are summarised there.
//! - [`symbols`]: the symbol store keyed by build-id, debuginfod, and the resolver that names
//!   frames hosts could not name (stripped binaries) in the stored profiles.
//! - [`share`]: shares (0..=1) of a service's samples, and the one place they become percentages.
//! - [`ui`]: the web UI and its JSON API (`fleetprof-collector ui`, `serve --ui-listen`), read
//!   through the modules above.
//!
//! The tables are documented in `collector/schema/0001_init.sql`; hand-written SQL examples are
//! in `collector/schema/QUERIES.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleetprof_collector::{query, store::{Store, StoreConfig}};
//! let store = Store::connect(&StoreConfig::new("http://127.0.0.1:8123")).await?;
//! store.migrate().await?;
//! let window = query::Window::last(std::time::Duration::from_secs(3600));
//! for row in query::top(&store, "checkout", window, query::By::Self_, 10).await? {
//!     println!("{:>8}  {}", fleetprof_collector::share::percent(row.self_share), row.function);
//! }
//! # Ok(()) }
//! ```

pub mod changes;
pub mod detect;
pub mod ingest;
pub mod query;
pub mod regressions;
pub mod share;
pub mod store;
pub mod symbols;
pub mod ui;
