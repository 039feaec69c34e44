//! Names for stripped binaries: a symbol store keyed by GNU build-id, debuginfod, and the
//! resolver that writes names back into stored profiles.
//!
//! Hosts name what they can; a frame they cannot name (a stripped binary) travels and is
//! stored as `module+0xOFFSET` with its module's build-id and the file offset. Debug files
//! (`objcopy --only-keep-debug` output, or unstripped binaries) are added to a [`SymbolStore`]
//! with `fleetprof-collector symbols upload`, or fetched by build-id from debuginfod servers
//! ([`Debuginfod`]). [`resolve_stored`] then names the stored frames once per (build-id,
//! offset) with blazesym (ELF symbols, DWARF file:line, inlined functions) and rewrites the
//! stored names, so every query sees them. A worse file (`.dynsym` only, or `.symtab` without
//! DWARF) never replaces a better one of the same build-id.
//!
//! ```no_run
//! # async fn demo(store: &fleetprof_collector::store::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use fleetprof_collector::symbols::{SymbolStore, inspect, resolve_stored};
//! let symbols = SymbolStore::new("/var/lib/fleetprof/symbols");
//! let data = std::fs::read("app.debug")?;
//! let info = inspect(&data, "app.debug")?;
//! symbols.add(&info, &data, "app.debug")?;
//! let report = resolve_stored(store, &symbols, None).await?;
//! println!("{} frames named", report.frames_renamed);
//! # Ok(()) }
//! ```

mod debuginfod;
mod resolve;
mod store;

use std::path::Path;

pub use debuginfod::{DEFAULT_NEGATIVE_TTL, Debuginfod};
pub use resolve::{ResolveReport, resolve_stored, wait_for_mutations};
pub use store::{AddOutcome, ElfInfo, Quality, StoredFile, SymbolStore, inspect};

/// Errors of the symbol store and resolver.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    /// The file is not an ELF file with a build-id.
    #[error("{file}: {reason}")]
    InvalidFile {
        /// The file.
        file: String,
        /// Why it was refused.
        reason: String,
    },
    /// Reading or writing the store failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// blazesym could not read a stored file.
    #[error("symbolizing with {file}: {reason}")]
    Symbolize {
        /// The stored file.
        file: String,
        /// blazesym's error.
        reason: String,
    },
    /// ClickHouse has not finished earlier renames; the next pass retries.
    #[error("ClickHouse is still applying earlier renames (system.mutations); try again later")]
    MutationsPending,
    /// A rename could not run on a node of the database's cluster (or its nodes not be found).
    #[error(transparent)]
    Cluster(#[from] crate::store::cluster::ClusterError),
    /// ClickHouse answered with an error or could not be reached.
    #[error("ClickHouse {what}: {source}")]
    ClickHouse {
        /// What the resolver was doing.
        what: String,
        /// The client's error.
        #[source]
        source: clickhouse::error::Error,
    },
}

impl SymbolsError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn ch(what: &str) -> impl FnOnce(clickhouse::error::Error) -> Self + '_ {
        move |source| Self::ClickHouse {
            what: what.to_owned(),
            source,
        }
    }
}
