//! fleetprof's agent.
