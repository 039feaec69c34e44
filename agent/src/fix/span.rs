//! Where a function is in a file, for the recipes: spans from [`fleetprof_code`]'s parsers, plus
//! the text helpers recipes need on masked source (comments and literals blanked).

use fleetprof_code::Language;
use fleetprof_code::functions;

/// Where a function is in a file (byte offsets into the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FnSpan {
    /// Start of the line holding the item's first token.
    pub(crate) line_start: usize,
    /// Start of the item (visibility/qualifiers/return type/`fn`/`def`).
    pub(crate) item_start: usize,
    /// Offset of the `fn` keyword (Rust); the item start elsewhere.
    pub(crate) fn_kw: usize,
    /// Offset of the body's start (`{`, or a Python block's first statement).
    pub(crate) open: usize,
    /// Offset of the body's last byte (the matching `}` for brace languages).
    pub(crate) close: usize,
}

/// `src` with comments and the insides of literals replaced by spaces (same offsets).
pub(crate) fn mask(src: &str, language: Language) -> String {
    functions::mask(src, language)
}

/// The first definition of `name` with a body in `src`, as the language's parser sees it.
pub(crate) fn find_fn(src: &str, language: Language, name: &str) -> Option<FnSpan> {
    let defs = functions::definitions(src, language, "");
    let d = defs
        .iter()
        .filter(|d| d.name == name && d.body.is_some())
        .min_by_key(|d| d.item_start)?;
    let (open, end) = d.body?;
    let fn_kw = if language == Language::Rust {
        let masked = mask(&src[d.item_start..open], language);
        find_word(&masked, "fn").map_or(d.item_start, |o| d.item_start + o)
    } else {
        d.item_start
    };
    Some(FnSpan {
        line_start: src[..d.item_start].rfind('\n').map_or(0, |p| p + 1),
        item_start: d.item_start,
        fn_kw,
        open,
        close: end.saturating_sub(1).max(open),
    })
}

/// The offset of `word` as a whole word in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let b = text.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        (i == 0 || !is_ident(b[i - 1])) && b.get(i + word.len()).is_none_or(|c| !is_ident(*c))
    })
}

/// The header of the block enclosing `offset` in masked text (from the previous item boundary
/// to its `{`), if any.
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
        let m = mask(src, Language::Rust);
        assert_eq!(m.len(), src.len());
        let f = find_fn(src, Language::Rust, "work").unwrap();
        assert!(src[f.item_start..].starts_with("pub(crate) fn work"));
        assert!(src[f.fn_kw..].starts_with("fn work"));
        assert!(src[..=f.close].ends_with("x + 1\n}"));
        assert!(enclosing_block_header(&m, f.fn_kw).is_none());
        let imp = "impl Foo {\n    fn bar() -> u8 { 1 }\n}\n";
        let mi = mask(imp, Language::Rust);
        let f = find_fn(imp, Language::Rust, "bar").unwrap();
        assert_eq!(
            enclosing_block_header(&mi, f.fn_kw).as_deref(),
            Some("impl Foo")
        );
        assert_eq!(indent_at(imp, f.line_start), "    ");
        let c = "static int f(void)\n{\n  return 1;\n}\n";
        let f = find_fn(c, Language::C, "f").unwrap();
        assert_eq!(&c[f.open..=f.close], "{\n  return 1;\n}");
    }
}
