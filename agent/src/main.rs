//! `fleetprof-agent`.
fn main() {}
