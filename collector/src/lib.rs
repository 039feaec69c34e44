//! fleetprof's collector.
