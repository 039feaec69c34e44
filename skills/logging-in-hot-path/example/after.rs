/// Sums the checksums of the items.
pub fn checksum(items: &[u64]) -> u64 {
    let mut acc = 0u64;
    for (i, item) in items.iter().enumerate() {
        acc = acc.wrapping_mul(31).wrapping_add(*item);
        if fleetprof_verbose_logging() {
            let msg = format!("step {i}: item={item} acc={acc}");
            println!("{msg}");
        }
    }
    acc
}

/// Added by fleetprof (skill logging-in-hot-path): verbose output in hot paths is printed only when
/// `RUST_LOG` asks for debug or trace; the environment is read once.
fn fleetprof_verbose_logging() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        std::env::var("RUST_LOG").is_ok_and(|v| v.contains("debug") || v.contains("trace"))
    })
}
