//! Which functions a diff touched: function definitions of a source file with their line ranges,
//! for Rust, C/C++ and Python, found by a small tokenizer (no parser: best effort by design).
//!
//! A function is touched when a changed line lies within its definition, from the line of its
//! name to its closing brace (Python: to the last line of its indented body). The innermost
//! function wins, so a change inside a nested function or an `impl` method names that one.

use std::collections::BTreeSet;

/// A function definition found in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDef {
    /// The name as profiles show it, best effort: `crate::module::Type::name` for Rust,
    /// `module.Class.name` for Python, the bare name for C.
    pub qualified: String,
    /// The bare name.
    pub name: String,
    /// First line (1-based), the line with the name.
    pub start: u32,
    /// Last line (1-based, inclusive).
    pub end: u32,
}

/// Source languages whose function definitions are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `.rs`
    Rust,
    /// `.c`, `.h`, `.cc`, `.cpp`, `.cxx`, `.hh`, `.hpp`
    C,
    /// `.py`
    Python,
}

impl Language {
    /// The language of `path`, by its extension; `None` for anything else.
    pub fn of(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1;
        match ext {
            "rs" => Some(Self::Rust),
            "c" | "h" | "cc" | "cpp" | "cxx" | "hh" | "hpp" => Some(Self::C),
            "py" => Some(Self::Python),
            _ => None,
        }
    }
}

/// The function definitions of `text` (a file in `language`); `prefix` is prepended to Rust
/// (`checkout::`) and Python (`pkg.module.`) qualified names.
pub fn definitions(text: &str, language: Language, prefix: &str) -> Vec<FunctionDef> {
    match language {
        Language::Rust => rust_definitions(text, prefix),
        Language::C => c_definitions(text),
        Language::Python => python_definitions(text, prefix),
    }
}

/// The functions (qualified and bare names) of `defs` containing any of `lines`, innermost
/// definition per line.
pub fn touched(defs: &[FunctionDef], lines: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in lines {
        let inner = defs
            .iter()
            .filter(|d| d.start <= line && line <= d.end)
            .min_by_key(|d| d.end - d.start);
        if let Some(d) = inner {
            out.insert(d.qualified.clone());
            out.insert(d.name.clone());
        }
    }
    out
}

/// A token of C-like source: identifiers and the punctuation that delimits items.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Punct(char),
}

/// Tokenizes C-like source (Rust, C), skipping comments, strings and character literals;
/// returns each token with its 1-based line.
fn tokenize(text: &str, rust: bool) -> Vec<(u32, Tok)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
            }
            '"' => {
                // Rust raw strings (r"..", r#".."#) are rare in function bodies that matter here;
                // a plain scan with escapes is enough to keep braces in strings from counting.
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'\n') {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                // A char literal ('a', '\n', '{') or, in Rust, a lifetime ('a).
                if next == Some('\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' && chars[i] != '\n' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else if rust {
                    i += 1;
                } else {
                    i += 1;
                    while i < chars.len() && chars[i] != '\'' && chars[i] != '\n' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push((line, Tok::Ident(chars[start..i].iter().collect())));
            }
            '-' | '=' if next == Some('>') => i += 2,
            '{' | '}' | '(' | ')' | ';' | '<' | '>' | '=' | ':' => {
                out.push((line, Tok::Punct(c)));
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// What an open brace belongs to.
#[derive(Debug)]
enum Scope {
    /// A function body: its name and the line of `fn`.
    Fn(String, u32),
    /// `impl`, `trait` or `mod` body: a path segment.
    Named(String),
    /// Anything else.
    Block,
}

/// The item whose body the next `{` opens.
#[derive(Debug)]
enum Pending {
    None,
    Fn(String, u32),
    Named(String),
    /// In an `impl` header: the last type name seen (after `for`, if any).
    Impl(Option<String>, u32),
}

fn rust_definitions(text: &str, prefix: &str) -> Vec<FunctionDef> {
    let toks = tokenize(text, true);
    let mut scopes: Vec<Scope> = Vec::new();
    let mut pending = Pending::None;
    let mut defs = Vec::new();
    let ident = |i: usize| match toks.get(i) {
        Some((_, Tok::Ident(s))) => Some(s.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < toks.len() {
        let (line, tok) = &toks[i];
        match tok {
            Tok::Ident(word) => match word.as_str() {
                "fn" => {
                    if let Some(name) = ident(i + 1) {
                        pending = Pending::Fn(name.to_owned(), *line);
                        i += 1;
                    }
                }
                "mod" | "trait" if matches!(pending, Pending::None) => {
                    if let Some(name) = ident(i + 1) {
                        pending = Pending::Named(name.to_owned());
                        i += 1;
                    }
                }
                "impl" if matches!(pending, Pending::None) => pending = Pending::Impl(None, 0),
                "for" => {
                    if let Pending::Impl(ty, _) = &mut pending {
                        *ty = None;
                    }
                }
                "where" => {
                    // The type is known; bounds after `where` must not replace it.
                    if let Pending::Impl(_, depth) = &mut pending {
                        *depth = u32::MAX;
                    }
                }
                other => {
                    if let Pending::Impl(ty, depth) = &mut pending
                        && *depth == 0
                        && !matches!(other, "dyn" | "unsafe" | "const" | "mut")
                    {
                        *ty = Some(other.to_owned());
                    }
                }
            },
            Tok::Punct('<') => {
                if let Pending::Impl(_, depth) = &mut pending
                    && *depth != u32::MAX
                {
                    *depth += 1;
                }
            }
            Tok::Punct('>') => {
                if let Pending::Impl(_, depth) = &mut pending
                    && *depth != u32::MAX
                {
                    *depth = depth.saturating_sub(1);
                }
            }
            Tok::Punct(';') => {
                // `fn f();` in a trait, `mod m;`: no body.
                if !matches!(pending, Pending::Impl(..)) {
                    pending = Pending::None;
                }
            }
            Tok::Punct('{') => {
                let scope = match std::mem::replace(&mut pending, Pending::None) {
                    Pending::Fn(name, l) => Scope::Fn(name, l),
                    Pending::Named(name) => Scope::Named(name),
                    Pending::Impl(Some(ty), _) => Scope::Named(ty),
                    Pending::Impl(None, _) | Pending::None => Scope::Block,
                };
                scopes.push(scope);
            }
            Tok::Punct('}') => {
                if let Some(Scope::Fn(name, start)) = scopes.pop() {
                    let mut path: Vec<&str> = scopes
                        .iter()
                        .filter_map(|s| match s {
                            Scope::Fn(n, _) | Scope::Named(n) => Some(n.as_str()),
                            Scope::Block => None,
                        })
                        .collect();
                    path.push(&name);
                    defs.push(FunctionDef {
                        qualified: format!("{prefix}{}", path.join("::")),
                        name,
                        start,
                        end: *line,
                    });
                }
            }
            Tok::Punct(_) => {}
        }
        i += 1;
    }
    defs
}

const C_KEYWORDS: &[&str] = &[
    "if", "while", "for", "switch", "return", "sizeof", "do", "else", "case",
];

fn c_definitions(text: &str) -> Vec<FunctionDef> {
    let toks = tokenize(text, false);
    let mut defs = Vec::new();
    // Open braces: Some((name, line)) for a function body.
    let mut stack: Vec<Option<(String, u32)>> = Vec::new();
    // At brace depth 0: the identifier before the last top-level `(`, and whether `)` came last.
    let mut candidate: Option<(String, u32)> = None;
    let mut paren = 0u32;
    let mut after_paren = false;
    for (i, (line, tok)) in toks.iter().enumerate() {
        let top = stack.is_empty();
        match tok {
            Tok::Punct('(') => {
                if top && paren == 0 {
                    candidate = match i.checked_sub(1).and_then(|j| toks.get(j)) {
                        Some((l, Tok::Ident(name))) if !C_KEYWORDS.contains(&name.as_str()) => {
                            Some((name.clone(), *l))
                        }
                        _ => None,
                    };
                }
                paren += 1;
                after_paren = false;
            }
            Tok::Punct(')') => {
                paren = paren.saturating_sub(1);
                after_paren = paren == 0;
            }
            Tok::Punct('{') => {
                let def = (top && after_paren).then(|| candidate.take()).flatten();
                stack.push(def);
                after_paren = false;
            }
            Tok::Punct('}') => {
                if let Some(Some((name, start))) = stack.pop() {
                    defs.push(FunctionDef {
                        qualified: name.clone(),
                        name,
                        start,
                        end: *line,
                    });
                }
                after_paren = false;
            }
            Tok::Punct(';') | Tok::Punct('=') => {
                if top {
                    candidate = None;
                }
                after_paren = false;
            }
            // `int f(void) const {` and K&R parameter declarations are rare; anything else
            // between `)` and `{` means this is not a definition.
            _ => after_paren = false,
        }
    }
    defs
}

fn python_definitions(text: &str, prefix: &str) -> Vec<FunctionDef> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let significant = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    };
    // Open `def`/`class` blocks: (indent, name, is_def, start line).
    let mut open: Vec<(usize, String, bool, u32)> = Vec::new();
    let mut defs = Vec::new();
    let mut last_significant = 0u32;
    let close = |open: &mut Vec<(usize, String, bool, u32)>,
                 defs: &mut Vec<FunctionDef>,
                 upto: usize,
                 end: u32| {
        while open.last().is_some_and(|o| o.0 >= upto) {
            let (_, name, is_def, start) = open.pop().expect("checked");
            if is_def {
                let mut path: Vec<&str> = open.iter().map(|o| o.1.as_str()).collect();
                path.push(&name);
                defs.push(FunctionDef {
                    qualified: format!("{prefix}{}", path.join(".")),
                    name,
                    start,
                    end,
                });
            }
        }
    };
    for (n, l) in lines.iter().enumerate() {
        let line = n as u32 + 1;
        if !significant(l) {
            continue;
        }
        let ind = indent(l);
        close(&mut open, &mut defs, ind, last_significant);
        let t = l.trim_start();
        let t = t.strip_prefix("async ").unwrap_or(t);
        for (kw, is_def) in [("def ", true), ("class ", false)] {
            if let Some(rest) = t.strip_prefix(kw) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    open.push((ind, name, is_def, line));
                }
            }
        }
        last_significant = line;
    }
    close(&mut open, &mut defs, 0, last_significant);
    defs
}

/// The Rust module path of `path` relative to its crate's directory (`src/lib.rs` → `[]`,
/// `src/store/mod.rs` → `["store"]`, `src/store/writer.rs` → `["store", "writer"]`); `None`
/// outside `src/` (tests, examples, build scripts have no stable symbol prefix).
pub fn rust_module_path(relative: &str) -> Option<Vec<String>> {
    let rest = relative.strip_prefix("src/")?;
    let rest = rest.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rest.split('/').map(str::to_owned).collect();
    if let Some("lib" | "main" | "mod") = parts.last().map(String::as_str) {
        parts.pop();
    }
    if parts.first().map(String::as_str) == Some("bin") {
        // A binary target's symbols are prefixed by its own crate name; unknown here.
        return None;
    }
    Some(parts)
}

/// `name = "..."` of a `Cargo.toml`'s `[package]` table, with `-` turned into `_` as in symbols.
pub fn cargo_package_name(cargo_toml: &str) -> Option<String> {
    let mut in_package = false;
    for line in cargo_toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_package = t == "[package]";
            continue;
        }
        if in_package && let Some(rest) = t.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            let value = value.trim_matches('"').trim_matches('\'');
            return Some(value.replace('-', "_"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(defs: &[FunctionDef]) -> Vec<(&str, u32, u32)> {
        defs.iter()
            .map(|d| (d.qualified.as_str(), d.start, d.end))
            .collect()
    }

    /// Free functions, methods of inherent and trait impls, nested modules, lifetimes and
    /// braces in strings.
    #[test]
    fn rust_functions_with_paths_and_ranges() {
        let src = r#"use std::fmt;
/// Doc.
pub fn parse<'a>(s: &'a str) -> &'a str {
    let brace = "{";
    let c = '}';
    s
}

impl<T: Clone> Cart<T> where T: fmt::Debug {
    pub(crate) fn total(&self) -> u64 {
        0
    }
}

impl fmt::Display for Cart<u8> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "}}")
    }
}

trait Price { fn price(&self) -> u64; fn twice(&self) -> u64 { 2 * self.price() } }

mod tests {
    fn helper() {}
}
"#;
        let defs = definitions(src, Language::Rust, "checkout::");
        assert_eq!(
            names(&defs),
            vec![
                ("checkout::parse", 3, 7),
                ("checkout::Cart::total", 10, 12),
                ("checkout::Cart::fmt", 16, 18),
                ("checkout::Price::twice", 21, 21),
                ("checkout::tests::helper", 24, 24),
            ]
        );
        let t = touched(&defs, [4, 11]);
        assert!(t.contains("checkout::parse") && t.contains("parse"));
        assert!(t.contains("checkout::Cart::total") && t.contains("total"));
        assert_eq!(t.len(), 4);
        assert!(touched(&defs, [1, 2, 8]).is_empty());
    }

    /// Definitions at the top level, with the brace on the next line; not prototypes,
    /// initializers or calls.
    #[test]
    fn c_functions() {
        let src = "#include <stdio.h>\nstatic int helper(int x);\nint table[] = { 1, 2 };\n\
                   static int helper(int x)\n{\n    if (x) { return 1; }\n    return 0;\n}\n\
                   int main(void) {\n    /* } */\n    return helper(2);\n}\n";
        let defs = definitions(src, Language::C, "");
        assert_eq!(names(&defs), vec![("helper", 4, 8), ("main", 9, 12)]);
    }

    /// `def` blocks end at the next line indented no deeper; methods are qualified by class.
    #[test]
    fn python_functions() {
        let src = "import os\n\ndef top(a):\n    x = 1\n\n    return x\n\nclass Cart:\n    \
                   def total(self):\n        return 0\n    # comment\n\nasync def later():\n    pass\n";
        let defs = definitions(src, Language::Python, "shop.");
        assert_eq!(
            names(&defs),
            vec![
                ("shop.top", 3, 6),
                ("shop.Cart.total", 9, 10),
                ("shop.later", 13, 14)
            ]
        );
    }

    /// Module paths of Rust files and package names of manifests.
    #[test]
    fn rust_paths() {
        assert_eq!(rust_module_path("src/lib.rs"), Some(vec![]));
        assert_eq!(
            rust_module_path("src/store/writer.rs"),
            Some(vec!["store".to_owned(), "writer".to_owned()])
        );
        assert_eq!(
            rust_module_path("src/store/mod.rs"),
            Some(vec!["store".to_owned()])
        );
        assert_eq!(rust_module_path("tests/it.rs"), None);
        assert_eq!(
            cargo_package_name("[workspace]\n[package]\nname = \"fleet-prof\"\n"),
            Some("fleet_prof".to_owned())
        );
    }
}
