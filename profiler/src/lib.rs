//! fleetprof's host profiler: where a sample is taken, named, measured and shipped.
//!
//! The data's path through this crate, one module per stage:
//!
//! 1. [`bpf`] loads `profiler-ebpf` into the kernel and attaches it to every CPU's `CPU_CLOCK`;
//!    the kernel walks user stacks with frame pointers or with [`unwind`] tables.
//! 2. [`tracker`] follows processes as the kernel reports them: [`procmaps`] captures their
//!    mappings through their own view of the files, [`unwind`] builds and loads the tables,
//!    [`process`] reads their identity (service, version, container), [`perfmap`] their JIT names.
//! 3. [`sample`] drains the kernel's aggregated counts and stacks into a [`profile::RawProfile`].
//! 4. [`symbolize`] names every frame with blazesym, into a [`profile::SymbolizedProfile`].
//!    [`session`] ties 1–4 together for both `record` and `run`.
//! 5. [`energy`] reads RAPL counters and attributes a window's energy by CPU-sample share.
//! 6. [`output`] writes folded stacks, pprof, SVG flame graphs or JSON (`record`).
//! 7. [`ship`] turns a window's profile into a wire `ProfileBatch` and pushes it to the collector.
//! 8. [`spool`] keeps batches on disk, bounded, until the collector acknowledges them.
//! 9. [`daemon`] runs 1–8 continuously (`run`), configured by [`config`], observed through [`metrics`].
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use fleetprof_profiler::record::{record, RecordOptions};
//! let (profile, _stats) = record(&RecordOptions { duration: Duration::from_secs(5), ..Default::default() }, None)?;
//! println!("{} samples", profile.total_samples());
//! # Ok(()) }
//! ```

pub mod bpf;
pub mod config;
pub mod daemon;
pub mod energy;
pub mod metrics;
pub mod output;
pub mod perfmap;
pub mod process;
pub mod procmaps;
pub mod profile;
pub mod record;
pub mod sample;
pub mod session;
pub mod ship;
pub mod spool;
pub mod symbolize;
pub mod tracker;
pub mod unwind;
