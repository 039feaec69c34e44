//! Any text through the agent's read-only SQL checker: it answers, and what it passes is one
//! statement that passes again unchanged.
#![no_main]

use fleetprof_agent::sql::ReadOnlySql;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = ReadOnlySql::check(text) {
        assert!(!q.contains(';'), "passed a second statement: {q:?}");
        assert_eq!(ReadOnlySql::check(q).ok(), Some(q), "not idempotent");
    }
});
