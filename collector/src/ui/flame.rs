//! Folded stacks to the tree the browser draws, and the top-functions table from the same stacks
//! (so the table always agrees with the graph beside it).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::query::{FoldedStack, TopRow};

/// A frame of a flame graph and everything above it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlameNode {
    /// Function name (`all` at the root).
    #[serde(rename = "n")]
    pub name: String,
    /// Samples with this frame on the stack at this position (in a diff: the comparison's).
    #[serde(rename = "v")]
    pub value: u64,
    /// In a diff: the baseline's samples here, scaled to the comparison's total.
    #[serde(rename = "b", skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// Callees, by name.
    #[serde(rename = "c", skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<FlameNode>,
}

/// Frames holding less than this share of the whole are left out of the tree: invisible at any
/// zoom a person uses, and the bulk of a large service's tree.
const MIN_SHARE: f64 = 1e-4;

#[derive(Default)]
struct Building {
    value: u64,
    baseline: f64,
    children: BTreeMap<String, Building>,
}

impl Building {
    fn add(&mut self, stack: &str, value: u64, baseline: f64) {
        self.value += value;
        self.baseline += baseline;
        let mut node = self;
        for frame in stack.split(';').filter(|f| !f.is_empty()) {
            node = node.children.entry(frame.to_owned()).or_default();
            node.value += value;
            node.baseline += baseline;
        }
    }

    fn finish(self, name: String, min: f64, diff: bool) -> FlameNode {
        FlameNode {
            name,
            value: self.value,
            baseline: diff.then_some(self.baseline),
            children: self
                .children
                .into_iter()
                .filter(|(_, c)| (c.value as f64).max(c.baseline) >= min)
                .map(|(n, c)| c.finish(n, min, diff))
                .collect(),
        }
    }
}

/// The tree of `stacks` (root first), rooted at `all`.
pub(crate) fn tree(stacks: &[FoldedStack]) -> FlameNode {
    let mut root = Building::default();
    for s in stacks {
        root.add(&s.stack, s.samples, 0.0);
    }
    let min = root.value as f64 * MIN_SHARE;
    root.finish("all".into(), min, false)
}

/// The differential tree: the comparison's shape, each frame with the baseline's samples scaled
/// to the comparison's total (so a change of load does not make every frame grow).
pub(crate) fn diff_tree(before: &[FoldedStack], after: &[FoldedStack]) -> FlameNode {
    let total = |s: &[FoldedStack]| s.iter().map(|s| s.samples).sum::<u64>();
    let (b, a) = (total(before), total(after));
    let scale = if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut root = Building::default();
    for s in after {
        root.add(&s.stack, s.samples, 0.0);
    }
    for s in before {
        root.add(&s.stack, 0, s.samples as f64 * scale);
    }
    let min = (root.value as f64).max(root.baseline) * MIN_SHARE;
    root.finish("all".into(), min, true)
}

/// The `limit` functions with the most self samples (`by_total`: total samples) in `stacks`.
pub(crate) fn top(stacks: &[FoldedStack], by_total: bool, limit: usize) -> Vec<TopRow> {
    let mut counts: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut whole = 0u64;
    for s in stacks {
        whole += s.samples;
        let frames: Vec<&str> = s.stack.split(';').filter(|f| !f.is_empty()).collect();
        if let Some(leaf) = frames.last() {
            counts.entry(leaf).or_default().0 += s.samples;
        }
        let distinct: HashSet<&str> = frames.iter().copied().collect();
        for f in distinct {
            counts.entry(f).or_default().1 += s.samples;
        }
    }
    let mut rows: Vec<TopRow> = counts
        .into_iter()
        .map(|(f, (s, t))| TopRow {
            function: f.to_owned(),
            self_samples: s,
            total_samples: t,
            self_share: crate::share::of(s, whole),
            total_share: crate::share::of(t, whole),
        })
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &TopRow| {
            if by_total {
                (r.total_samples, r.self_samples)
            } else {
                (r.self_samples, r.total_samples)
            }
        };
        key(b)
            .cmp(&key(a))
            .then_with(|| a.function.cmp(&b.function))
    });
    rows.retain(|r| {
        if by_total {
            r.total_samples > 0
        } else {
            r.self_samples > 0
        }
    });
    rows.truncate(limit);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(stack: &str, samples: u64) -> FoldedStack {
        FoldedStack {
            stack: stack.into(),
            samples,
        }
    }

    /// Frames nest by stack position and sum their stacks; self and total count a recursive
    /// function once per stack.
    #[test]
    fn builds_tree_and_top() {
        let stacks = [s("main;work;hot", 90), s("main;work", 10), s("main;f;f", 5)];
        let t = tree(&stacks);
        assert_eq!(t.value, 105);
        let main = &t.children[0];
        assert_eq!((main.name.as_str(), main.value), ("main", 105));
        let work = main.children.iter().find(|c| c.name == "work").unwrap();
        assert_eq!(work.value, 100);
        assert_eq!(work.children[0].value, 90);
        let top_self = top(&stacks, false, 10);
        assert_eq!(top_self[0].function, "hot");
        assert!((top_self[0].self_share - 90.0 / 105.0).abs() < 1e-9);
        let top_total = top(&stacks, true, 10);
        assert_eq!(top_total[0].function, "main");
        let f = top_total.iter().find(|r| r.function == "f").unwrap();
        assert_eq!((f.self_samples, f.total_samples), (5, 5));
    }

    /// The diff scales the baseline to the comparison's total: a frame whose share doubled shows
    /// twice its scaled baseline even though the load halved.
    #[test]
    fn diff_scales_baseline() {
        let before = [s("main;hot", 100), s("main;cold", 300)];
        let after = [s("main;hot", 100), s("main;cold", 100)];
        let d = diff_tree(&before, &after);
        let main = &d.children[0];
        let hot = main.children.iter().find(|c| c.name == "hot").unwrap();
        assert_eq!(hot.value, 100);
        assert!((hot.baseline.unwrap() - 50.0).abs() < 1e-9);
    }
}
