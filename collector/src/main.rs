//! `fleetprof-collector`.
fn main() {}
