//! Function definitions and their spans, from tree-sitter grammars.
//!
//! A definition carries its name as profiles show it (best effort: `crate::module::Type::name` for
//! Rust with a prefix, `Class::method` for C++, `Type.Method` for Go, `Class.method` for Java,
//! `module.Class.name` for Python, the bare name for C), its line range and its byte spans, so the
//! collector can tell which functions a diff touched and the agent can cut out a function to fix.

use std::collections::BTreeSet;

use tree_sitter::{Node, Parser, Tree};

use crate::Language;

/// A function definition found in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDef {
    /// The name qualified by its enclosing items (and the caller's prefix).
    pub qualified: String,
    /// The bare name.
    pub name: String,
    /// First line (1-based): the line of the definition's name.
    pub start: u32,
    /// Last line (1-based, inclusive).
    pub end: u32,
    /// Byte offset where the item starts (visibility, qualifiers, return type; not attributes).
    pub item_start: usize,
    /// Byte offset just past the item.
    pub item_end: usize,
    /// Byte range of the body (for brace languages from `{` to just past `}`; for Python the
    /// indented block), if the definition has one.
    pub body: Option<(usize, usize)>,
}

impl FunctionDef {
    /// Whether `name` (a profile symbol or a bare name) names this function: equal to the
    /// qualified or bare name, or a symbol ending in `::name` / `.name`.
    pub fn is_named(&self, symbol: &str) -> bool {
        let s = symbol.trim();
        s == self.name
            || s == self.qualified
            || s.ends_with(&format!("::{}", self.qualified))
            || s.ends_with(&format!(".{}", self.qualified))
            || last_segment(s) == self.name
    }
}

/// The last path segment of a symbol: `a::b::c` → `c`, `main.(*T).Run` → `Run`, `f(int)` → `f`,
/// `a::b::h0123456789abcdef` (a Rust legacy hash) → `b`, `<T as Tr>::f` → `f`.
pub fn last_segment(symbol: &str) -> &str {
    let mut s = symbol.trim();
    // A trailing parameter list (C++ demangled names): cut at its matching `(`.
    if s.ends_with(')') {
        let mut depth = 0;
        for (i, c) in s.char_indices().rev() {
            match c {
                ')' => depth += 1,
                '(' => {
                    depth -= 1;
                    if depth == 0 {
                        s = &s[..i];
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let is_hash = |seg: &str| {
        seg.len() == 17 && seg.starts_with('h') && seg[1..].chars().all(|c| c.is_ascii_hexdigit())
    };
    s.split("::")
        .flat_map(|p| p.rsplit('.').next())
        .filter(|seg| !seg.is_empty() && !is_hash(seg) && !seg.starts_with('{'))
        .map(|seg| seg.trim_end_matches('>'))
        .last()
        .unwrap_or(s)
        .trim()
}

/// Parses `text` as `language`; `None` only if the parser refuses the grammar (never for the
/// built-in ones) — syntax errors still give a tree with error nodes.
pub fn parse(text: &str, language: Language) -> Option<Tree> {
    let mut parser = Parser::new();
    parser.set_language(&language.grammar()).ok()?;
    parser.parse(text, None)
}

/// The function definitions of `text` (a file in `language`), in source order of their ends;
/// `prefix` is prepended to qualified names (`checkout::` for a Rust crate, `pkg.module.` for
/// Python, `main.` for a Go package).
pub fn definitions(text: &str, language: Language, prefix: &str) -> Vec<FunctionDef> {
    let Some(tree) = parse(text, language) else {
        return Vec::new();
    };
    let mut defs = Vec::new();
    let mut scopes = Vec::new();
    walk(
        tree.root_node(),
        text,
        language,
        prefix,
        &mut scopes,
        &mut defs,
    );
    defs
}

fn text_of<'a>(n: Node<'_>, src: &'a str) -> &'a str {
    src.get(n.byte_range()).unwrap_or("")
}

/// The name a scope (impl, class, namespace, module) gives the functions inside it.
fn scope_name(n: Node<'_>, src: &str, lang: Language) -> Option<String> {
    let field = |f: &str| {
        n.child_by_field_name(f)
            .map(|c| text_of(c, src).to_string())
    };
    match (lang, n.kind()) {
        (Language::Rust, "impl_item") => {
            let ty = n.child_by_field_name("type")?;
            // `Cart<T>` → `Cart`: symbols carry the type's path, not its parameters.
            let ty = match ty.kind() {
                "generic_type" => ty.child_by_field_name("type").unwrap_or(ty),
                _ => ty,
            };
            Some(last_segment(text_of(ty, src)).to_string())
        }
        (Language::Rust, "trait_item" | "mod_item") => field("name"),
        (Language::Cpp, "namespace_definition" | "class_specifier" | "struct_specifier") => {
            field("name")
        }
        (
            Language::Java,
            "class_declaration"
            | "interface_declaration"
            | "enum_declaration"
            | "record_declaration",
        ) => field("name"),
        (Language::Python, "class_definition") => field("name"),
        _ => None,
    }
}

/// `(bare name, qualified suffix)` of a function node, if `n` is one with a name.
fn function_name(n: Node<'_>, src: &str, lang: Language) -> Option<(String, String)> {
    let name_field = || {
        n.child_by_field_name("name")
            .map(|c| text_of(c, src).to_string())
    };
    match (lang, n.kind()) {
        (Language::Rust, "function_item") | (Language::Python, "function_definition") => {
            let name = name_field()?;
            Some((name.clone(), name))
        }
        (Language::Java, "method_declaration" | "constructor_declaration") => {
            let name = name_field()?;
            Some((name.clone(), name))
        }
        (Language::Go, "function_declaration") => {
            let name = name_field()?;
            Some((name.clone(), name))
        }
        (Language::Go, "method_declaration") => {
            let name = name_field()?;
            // The receiver's type: `(s *Server)` → `Server`.
            let recv = n
                .child_by_field_name("receiver")
                .map(|r| text_of(r, src))
                .unwrap_or("");
            let ty = recv
                .trim_matches(|c| c == '(' || c == ')')
                .split_whitespace()
                .last()
                .unwrap_or("")
                .trim_start_matches('*');
            let ty = ty.split('[').next().unwrap_or(ty);
            let q = if ty.is_empty() {
                name.clone()
            } else {
                format!("{ty}.{name}")
            };
            Some((name, q))
        }
        (Language::C | Language::Cpp, "function_definition") => {
            // Follow declarators (pointer, function, reference) to the name.
            let mut d = n.child_by_field_name("declarator")?;
            while let Some(inner) = d.child_by_field_name("declarator") {
                d = inner;
            }
            let full = text_of(d, src).trim().to_string();
            let bare = last_segment(&full).to_string();
            Some((bare, full))
        }
        _ => None,
    }
}

fn walk(
    n: Node<'_>,
    src: &str,
    lang: Language,
    prefix: &str,
    scopes: &mut Vec<String>,
    out: &mut Vec<FunctionDef>,
) {
    let func = function_name(n, src, lang);
    let scope = if func.is_none() {
        scope_name(n, src, lang)
    } else {
        None
    };
    let pushed = match (&func, &scope) {
        (Some((bare, _)), _) => {
            scopes.push(bare.clone());
            true
        }
        (None, Some(s)) => {
            scopes.push(s.clone());
            true
        }
        _ => false,
    };
    let mut cursor = n.walk();
    for child in n.children(&mut cursor) {
        walk(child, src, lang, prefix, scopes, out);
    }
    if pushed {
        scopes.pop();
    }
    if let Some((name, q)) = func {
        let sep = match lang {
            Language::Rust | Language::Cpp => "::",
            Language::C => "",
            Language::Go | Language::Java | Language::Python => ".",
        };
        let mut parts: Vec<&str> = scopes.iter().map(String::as_str).collect();
        // A C++ out-of-class definition (`Foo::bar`) already names its class.
        if lang == Language::Cpp && q.contains("::") {
            parts.clear();
        }
        parts.push(&q);
        let qualified = if sep.is_empty() {
            q.clone()
        } else {
            format!("{prefix}{}", parts.join(sep))
        };
        let name_line = n
            .child_by_field_name("name")
            .or_else(|| n.child_by_field_name("declarator"))
            .unwrap_or(n)
            .start_position()
            .row as u32
            + 1;
        let body = n
            .child_by_field_name("body")
            .map(|b| (b.start_byte(), b.end_byte()));
        out.push(FunctionDef {
            qualified,
            name,
            start: name_line.min(n.start_position().row as u32 + 1).max(1),
            end: n.end_position().row as u32 + 1,
            item_start: n.start_byte(),
            item_end: n.end_byte(),
            body,
        });
    }
}

/// The functions (qualified and bare names) of `defs` containing any of `lines`, innermost
/// definition per line.
pub fn touched(defs: &[FunctionDef], lines: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in lines {
        if let Some(d) = innermost_at(defs, line) {
            out.insert(d.qualified.clone());
            out.insert(d.name.clone());
        }
    }
    out
}

/// The innermost definition containing `line` (1-based).
pub fn innermost_at(defs: &[FunctionDef], line: u32) -> Option<&FunctionDef> {
    defs.iter()
        .filter(|d| d.start <= line && line <= d.end)
        .min_by_key(|d| d.end - d.start)
}

/// The definition a profile symbol names: the one whose qualified name the symbol ends with,
/// else the first with the same bare name.
pub fn named<'a>(defs: &'a [FunctionDef], symbol: &str) -> Option<&'a FunctionDef> {
    let bare = last_segment(symbol);
    let mut same: Vec<&FunctionDef> = defs.iter().filter(|d| d.name == bare).collect();
    same.sort_by_key(|d| std::cmp::Reverse(d.qualified.len()));
    same.iter()
        .find(|d| d.is_named(symbol) && symbol.contains(&d.qualified))
        .or_else(|| same.first())
        .copied()
}

/// `text` with comments and the insides of string and character literals replaced by spaces
/// (same byte offsets, newlines kept), so brackets and statement ends can be counted.
pub fn mask(text: &str, language: Language) -> String {
    let mut out = text.as_bytes().to_vec();
    if let Some(tree) = parse(text, language) {
        mask_node(tree.root_node(), &mut out);
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn mask_node(n: Node<'_>, out: &mut [u8]) {
    let kind = n.kind();
    let blank = |out: &mut [u8], from: usize, to: usize| {
        let to = to.min(out.len());
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    if kind.contains("comment") {
        blank(out, n.start_byte(), n.end_byte());
        return;
    }
    let literal = matches!(
        kind,
        "string_literal"
            | "raw_string_literal"
            | "char_literal"
            | "character_literal"
            | "interpreted_string_literal"
            | "rune_literal"
            | "string"
            | "concatenated_string"
            | "text_block"
    );
    if literal && n.end_byte() > n.start_byte() + 1 {
        // Keep the delimiters, so the literal still reads as one token.
        blank(out, n.start_byte() + 1, n.end_byte() - 1);
        return;
    }
    let mut cursor = n.walk();
    for child in n.children(&mut cursor) {
        mask_node(child, out);
    }
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
mod tests;
