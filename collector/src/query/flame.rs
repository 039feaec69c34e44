//! Flame graphs: folded stacks to SVG with inferno, plain and differential.

use std::io::Write;

use super::QueryError;

/// One folded stack: frames root first joined by `;`, and its samples.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FoldedStack {
    /// `root;caller;leaf`.
    pub stack: String,
    /// Samples.
    pub samples: u64,
}

/// The folded text (`stack count` per line), as Brendan Gregg's and inferno's tools read it.
pub fn folded_text(stacks: &[FoldedStack]) -> String {
    let mut out = String::new();
    for s in stacks {
        out.push_str(&s.stack);
        out.push(' ');
        out.push_str(&s.samples.to_string());
        out.push('\n');
    }
    out
}

/// Renders `stacks` as an SVG flame graph titled `title`.
pub fn render_flamegraph(stacks: &[FoldedStack], title: &str) -> Result<Vec<u8>, QueryError> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = "samples".to_owned();
    let text = folded_text(stacks);
    let mut svg = Vec::new();
    if text.is_empty() {
        return Err(QueryError::BadArgument("no samples to draw".into()));
    }
    inferno::flamegraph::from_lines(&mut options, text.lines(), &mut svg)
        .map_err(QueryError::Render)?;
    Ok(svg)
}

/// Renders a differential flame graph: the shape of `after`, red where a stack grew relative
/// to `before` and blue where it shrank. `before` is scaled to `after`'s total so a change of
/// load does not paint everything one colour.
pub fn differential_flamegraph(
    before: &[FoldedStack],
    after: &[FoldedStack],
    title: &str,
) -> Result<Vec<u8>, QueryError> {
    let mut diff = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options {
            normalize: true,
            strip_hex: false,
        },
        folded_text(before).as_bytes(),
        folded_text(after).as_bytes(),
        &mut diff,
    )
    .map_err(QueryError::Render)?;
    if diff.is_empty() {
        return Err(QueryError::BadArgument("no samples to draw".into()));
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = "samples".to_owned();
    let mut svg = Vec::new();
    inferno::flamegraph::from_reader(&mut options, diff.as_slice(), &mut svg)
        .map_err(QueryError::Render)?;
    svg.flush().map_err(QueryError::Render)?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stacks(hot: u64) -> Vec<FoldedStack> {
        vec![
            FoldedStack {
                stack: "main;work;hot".into(),
                samples: hot,
            },
            FoldedStack {
                stack: "main;work".into(),
                samples: 10,
            },
        ]
    }

    /// Plain and differential flame graphs are SVG naming the frames.
    #[test]
    fn renders_svg() {
        let svg = String::from_utf8(render_flamegraph(&stacks(90), "t").unwrap()).unwrap();
        assert!(svg.contains("<svg") && svg.contains("hot"));
        let svg =
            String::from_utf8(differential_flamegraph(&stacks(10), &stacks(90), "d").unwrap())
                .unwrap();
        assert!(svg.contains("<svg") && svg.contains("hot"));
        assert!(render_flamegraph(&[], "t").is_err());
    }
}
