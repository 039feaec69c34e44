//! Any text as a unified diff: the parser returns, and walking the touched lines does too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for f in fleetprof_code::git::parse_diff(&text) {
        let _ = f.path();
        // Hostile headers can name ranges of 2^32 lines: walk a bounded prefix.
        let _ = f.new_lines().take(256).count();
        let _ = f.old_lines().take(256).count();
    }
    let _ = fleetprof_agent::repo::parse_additions(&text);
});
