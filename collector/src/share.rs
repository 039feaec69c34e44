//! Shares: every "how much of the service" figure in fleetprof is a fraction 0..=1 of the
//! samples in the same window (or version) — in types, JSON, the `regressions` table and the
//! agent. Only the display edge (CLI tables, UI text) turns one into a percentage, through
//! [`percent`] and [`points`], so every screen rounds the same way.

/// `part` as a share of `whole`; 0 when `whole` is 0 (an empty window has no shares, and a
/// NaN would poison sorting and JSON).
pub fn of(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// A share (0..=1) shown as a percentage with two decimals: `0.1234` → `12.34%`.
pub fn percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// A change of a share shown in signed percentage points: `0.015` → `+1.50 pp`.
pub fn points(delta: f64) -> String {
    format!("{:+.2} pp", delta * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_render_as_percentages_only_here() {
        assert_eq!(of(1, 4), 0.25);
        assert_eq!(of(3, 0), 0.0);
        assert_eq!(percent(0.1234), "12.34%");
        assert_eq!(percent(1.0), "100.00%");
        assert_eq!(points(0.015), "+1.50 pp");
        assert_eq!(points(-0.002), "-0.20 pp");
    }
}
