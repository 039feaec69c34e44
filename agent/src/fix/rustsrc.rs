//! Just enough Rust lexing for the recipes: mask comments and literals, find a function and its body.

use regex::Regex;

/// `src` with comments and the insides of string/char literals replaced by spaces (same byte offsets,
/// newlines kept), so braces and keywords can be found without a parser.
pub(crate) fn mask(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |e| i + e);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                let start = i;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                blank(&mut out, start, i);
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let end = src[j + 1..].find(&close).map_or(b.len(), |e| j + 1 + e);
                blank(&mut out, j + 1, end);
                i = end + close.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let end = src[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e);
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                } else if let Some(c) = src[i + 1..].chars().next() {
                    let after = i + 1 + c.len_utf8();
                    if b.get(after) == Some(&b'\'') {
                        blank(&mut out, i + 1, after);
                        i = after + 1;
                    } else {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where a function is in a file (byte offsets into the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FnSpan {
    /// Start of the line holding the `fn` keyword.
    pub(crate) line_start: usize,
    /// Start of the item (visibility/qualifiers/`fn`).
    pub(crate) item_start: usize,
    /// Offset of the `fn` keyword.
    pub(crate) fn_kw: usize,
    /// Offset of the body's `{`.
    pub(crate) open: usize,
    /// Offset of the body's matching `}`.
    pub(crate) close: usize,
}

/// The offset of the bracket closing the one at `open` in masked text.
pub(crate) fn matching_close(masked: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in masked.bytes().enumerate().skip(open) {
        match c {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Finds `fn name` (with a body) in `masked` source.
pub(crate) fn find_fn(masked: &str, name: &str) -> Option<FnSpan> {
    let re = Regex::new(&format!(
        r#"(?m)^[ \t]*((?:pub(?:\([^)]*\))?\s+)?(?:(?:const|async|unsafe|extern(?:\s+"[^"]*")?)\s+)*)fn\s+{}\b"#,
        regex::escape(name)
    ))
    .ok()?;
    for m in re.captures_iter(masked) {
        let whole = m.get(0)?;
        let line_start = whole.start();
        let item_start = m.get(1).map_or(whole.start(), |q| q.start());
        let fn_kw = masked[item_start..whole.end()]
            .find("fn")
            .map(|o| item_start + o)?;
        // The body's `{` is the first one after the parameter list; a `;` first means no body.
        let rest = &masked[whole.end()..];
        let brace = rest.find('{');
        let semi = rest.find(';');
        let Some(brace) = brace else { continue };
        if semi.is_some_and(|s| s < brace) {
            continue;
        }
        let open = whole.end() + brace;
        let close = matching_close(masked, open)?;
        return Some(FnSpan {
            line_start,
            item_start,
            fn_kw,
            open,
            close,
        });
    }
    None
}

/// The header of the block enclosing `offset` (text from the previous item boundary to its `{`), if any.
pub(crate) fn enclosing_block_header(masked: &str, offset: usize) -> Option<String> {
    let b = masked.as_bytes();
    let mut depth = 0i32;
    let mut i = offset;
    while i > 0 {
        i -= 1;
        match b[i] {
            b'}' => depth += 1,
            b'{' if depth == 0 => {
                let head_start = masked[..i].rfind([';', '}', '{']).map_or(0, |p| p + 1);
                return Some(masked[head_start..i].trim().to_string());
            }
            b'{' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The leading whitespace of the line starting at `line_start`.
pub(crate) fn indent_at(src: &str, line_start: usize) -> &str {
    let line = &src[line_start..];
    let n = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Braces inside strings, chars and comments do not confuse the function finder.
    #[test]
    fn finds_fn_past_literals() {
        let src = "// fn work() {\nconst A: char = '{';\nfn other<'a>(s: &'a str) -> &'a str { \"}\" }\n\
                   pub(crate) fn work(x: u32) -> u32 {\n    let s = r#\"}\"#;\n    x + 1\n}\n";
        let m = mask(src);
        assert_eq!(m.len(), src.len());
        let f = find_fn(&m, "work").unwrap();
        assert!(src[f.item_start..].starts_with("pub(crate) fn work"));
        assert!(src[..=f.close].ends_with("x + 1\n}"));
        assert!(enclosing_block_header(&m, f.fn_kw).is_none());
        let imp = "impl Foo {\n    fn bar() -> u8 { 1 }\n}\n";
        let mi = mask(imp);
        let f = find_fn(&mi, "bar").unwrap();
        assert_eq!(
            enclosing_block_header(&mi, f.fn_kw).as_deref(),
            Some("impl Foo")
        );
        assert_eq!(indent_at(imp, f.line_start), "    ");
    }
}
