//! Deterministic recipes: source-to-source changes a skill can make without a model.
//!
//! Built-in recipes: `guard-logging` (wrap logging added to a hot function in a level check),
//! `memoize` (cache a pure function's result keyed by its arguments), `hoist-regex` (compile a literal
//! regex once in a `LazyLock`). A skill may instead carry regex `rewrite` rules. Every recipe either
//! returns the new file text or says why it does not apply; the result is only proposed after it
//! builds and passes the tests in a worktree.

use std::collections::HashSet;

use regex::Regex;

use fleetprof_code::Language;

use super::span::{FnSpan, enclosing_block_header, find_fn, indent_at, mask};
use crate::skills::RecipeSpec;

/// What can go wrong applying a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe does not fit this code (the reason says why).
    #[error("recipe {recipe} does not apply: {reason}")]
    NotApplicable {
        /// The recipe.
        recipe: String,
        /// Why.
        reason: String,
    },
    /// No built-in recipe has this name.
    #[error("unknown built-in recipe {0:?} (known: guard-logging, memoize, hoist-regex)")]
    Unknown(String),
    /// A rewrite rule's regex is invalid.
    #[error("rewrite rule {find:?}: {source}")]
    BadRule {
        /// The rule's pattern.
        find: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
}

/// What a recipe works on.
#[derive(Debug, Clone, Copy)]
pub struct RecipeInput<'a> {
    /// The file's text.
    pub source: &'a str,
    /// The function's name (last path segment), to restrict the change to its body.
    pub function: &'a str,
    /// The file's language.
    pub language: Language,
    /// The root-cause diff's added lines in this file (for `guard-logging`); empty when unknown.
    pub added_lines: &'a [String],
    /// The skill applying it (named in comments).
    pub skill: &'a str,
}

/// Applies `spec` and returns the new file text.
pub fn apply(spec: &RecipeSpec, input: RecipeInput<'_>) -> Result<String, RecipeError> {
    match spec {
        RecipeSpec::Builtin(name) => match name.as_str() {
            "guard-logging" => guard_logging(input),
            "memoize" => memoize(input),
            "hoist-regex" => hoist_regex(input),
            other => Err(RecipeError::Unknown(other.to_string())),
        },
        RecipeSpec::Rewrite { rewrite } => {
            let (start, end) = body_range(input.source, input.language, input.function);
            let mut region = input.source[start..end].to_string();
            for rule in rewrite {
                let re = Regex::new(&format!("(?m){}", rule.find)).map_err(|source| {
                    RecipeError::BadRule {
                        find: rule.find.clone(),
                        source,
                    }
                })?;
                region = re.replace_all(&region, rule.replace.as_str()).into_owned();
            }
            if region == input.source[start..end] {
                return Err(na("rewrite", "no rule matched"));
            }
            Ok(format!(
                "{}{}{}",
                &input.source[..start],
                region,
                &input.source[end..]
            ))
        }
    }
}

fn name_of<'a>(input: &RecipeInput<'a>) -> &'a str {
    input.function
}

fn na(recipe: &str, reason: impl Into<String>) -> RecipeError {
    RecipeError::NotApplicable {
        recipe: recipe.to_string(),
        reason: reason.into(),
    }
}

/// The function's body range, or the whole file when it is not found.
fn body_range(src: &str, language: Language, function: &str) -> (usize, usize) {
    match find_fn(src, language, function) {
        Some(f) => (f.open, f.close + 1),
        None => (0, src.len()),
    }
}

/// Lines of `src[start..end]` as `(offset, line without newline)`.
fn lines_in(src: &str, start: usize, end: usize) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut off = src[..start].rfind('\n').map_or(0, |p| p + 1);
    for line in src[off..end].split_inclusive('\n') {
        out.push((off, line.trim_end_matches(['\n', '\r'])));
        off += line.len();
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum LogKind {
    /// println!/eprintln!/print!/eprint!/dbg!: no level.
    Plain,
    /// log crate macro at a level.
    Log(&'static str),
    /// tracing macro at a level.
    Tracing(&'static str),
}

#[derive(Debug)]
enum Stmt {
    Log(LogKind),
    FormatLet(String),
}

struct Found {
    first_line: usize,
    last_line: usize,
    stmt: Stmt,
}

fn level_of(m: &str) -> &'static str {
    match m {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        _ => "error",
    }
}

fn severity(level: &str) -> u8 {
    match level {
        "trace" => 0,
        "debug" => 1,
        "info" => 2,
        "warn" => 3,
        _ => 4,
    }
}

/// `guard-logging`: wraps logging statements (and `let x = format!(..)` feeding them) that the
/// root-cause commit added to the function in a level check.
pub fn guard_logging(input: RecipeInput<'_>) -> Result<String, RecipeError> {
    const R: &str = "guard-logging";
    let src = input.source;
    if input.language != Language::Rust {
        return super::logging::guard(input);
    }
    let masked = mask(src, input.language);
    let (start, end) = match find_fn(src, input.language, input.function) {
        Some(f) => (f.open + 1, f.close),
        None => {
            return Err(na(
                R,
                format!("fn {} not found in the file", input.function),
            ));
        }
    };
    let added: HashSet<&str> = input
        .added_lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let log_re = Regex::new(
        r"^(?:(log|tracing)::)?(println|eprintln|print|eprint|dbg|trace|debug|info|warn|error)!\s*[(\[{]",
    )
    .expect("static regex");
    let let_re = Regex::new(r"^let\s+(\w+)\s*(?::\s*String\s*)?=\s*(?:format!|std::format!)")
        .expect("static regex");
    let uses_tracing = src.contains("tracing::") || src.contains("use tracing");
    let lines = lines_in(src, start, end);
    let mlines = lines_in(&masked, start, end);
    let mut found: Vec<Found> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].1.trim();
        let is_added = added.is_empty() || added.contains(t);
        let stmt = if !is_added {
            None
        } else if let Some(c) = log_re.captures(t) {
            let mac = c.get(2).map_or("", |m| m.as_str());
            Some(Stmt::Log(match (c.get(1).map(|m| m.as_str()), mac) {
                (_, "println" | "eprintln" | "print" | "eprint" | "dbg") => LogKind::Plain,
                (Some("tracing"), m) => LogKind::Tracing(level_of(m)),
                (Some(_), m) => LogKind::Log(level_of(m)),
                (None, m) if uses_tracing => LogKind::Tracing(level_of(m)),
                (None, m) => LogKind::Log(level_of(m)),
            }))
        } else {
            let_re
                .captures(t)
                .map(|c| Stmt::FormatLet(c[1].to_string()))
        };
        let Some(stmt) = stmt else {
            i += 1;
            continue;
        };
        // The statement ends at the first line where brackets balance and the line ends with `;`.
        let mut depth = 0i32;
        let mut j = i;
        let mut ok = false;
        while j < lines.len() {
            for c in mlines[j].1.bytes() {
                match c {
                    b'(' | b'[' | b'{' => depth += 1,
                    b')' | b']' | b'}' => depth -= 1,
                    _ => {}
                }
            }
            if depth < 0 {
                break;
            }
            if depth == 0 {
                ok = mlines[j].1.trim_end().ends_with(';');
                break;
            }
            j += 1;
        }
        if ok {
            found.push(Found {
                first_line: i,
                last_line: j,
                stmt,
            });
            i = j + 1;
        } else {
            i += 1;
        }
    }
    // Group adjacent statements (blank lines allowed between) into runs.
    let mut runs: Vec<Vec<&Found>> = Vec::new();
    for f in &found {
        let adjacent = runs.last().and_then(|r| r.last()).is_some_and(|prev| {
            (prev.last_line + 1..f.first_line).all(|k| lines[k].1.trim().is_empty())
        });
        if adjacent {
            runs.last_mut().expect("non-empty").push(f);
        } else {
            runs.push(vec![f]);
        }
    }
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut need_helper = false;
    for run in runs {
        if !run.iter().any(|f| matches!(f.stmt, Stmt::Log(_))) {
            continue;
        }
        let run_end = lines[run.last().expect("non-empty").last_line];
        let after = &masked[run_end.0 + run_end.1.len()..end];
        let mut outside = Vec::new();
        let mut inside = Vec::new();
        for f in &run {
            match &f.stmt {
                Stmt::FormatLet(name)
                    if Regex::new(&format!(r"\b{}\b", regex::escape(name)))
                        .expect("escaped")
                        .is_match(after) =>
                {
                    outside.push(*f)
                }
                _ => inside.push(*f),
            }
        }
        let kinds: Vec<&LogKind> = inside
            .iter()
            .filter_map(|f| match &f.stmt {
                Stmt::Log(k) => Some(k),
                Stmt::FormatLet(_) => None,
            })
            .collect();
        let cond = if kinds.iter().any(|k| **k == LogKind::Plain)
            || (kinds.iter().any(|k| matches!(k, LogKind::Log(_)))
                && kinds.iter().any(|k| matches!(k, LogKind::Tracing(_))))
        {
            need_helper = true;
            "fleetprof_verbose_logging()".to_string()
        } else {
            let level = kinds
                .iter()
                .map(|k| match k {
                    LogKind::Log(l) | LogKind::Tracing(l) => *l,
                    LogKind::Plain => "error",
                })
                .max_by_key(|l| severity(l))
                .unwrap_or("debug");
            if matches!(kinds[0], LogKind::Tracing(_)) {
                format!(
                    "tracing::enabled!(tracing::Level::{})",
                    level.to_uppercase()
                )
            } else {
                let mut l = level.to_string();
                l[..1].make_ascii_uppercase();
                format!("log::log_enabled!(log::Level::{l})")
            }
        };
        let first = lines[run[0].first_line];
        let indent = indent_at(src, first.0).to_string();
        let mut text = String::new();
        let stmt_text =
            |f: &Found| -> Vec<&str> { (f.first_line..=f.last_line).map(|k| lines[k].1).collect() };
        for f in &outside {
            for l in stmt_text(f) {
                text.push_str(l);
                text.push('\n');
            }
        }
        text.push_str(&format!("{indent}if {cond} {{\n"));
        for f in &inside {
            for l in stmt_text(f) {
                if l.trim().is_empty() {
                    text.push('\n');
                } else {
                    text.push_str(&format!("    {l}\n"));
                }
            }
        }
        text.push_str(&format!("{indent}}}\n"));
        let from = first.0;
        let to = run_end.0
            + run_end.1.len()
            + usize::from(src[run_end.0 + run_end.1.len()..].starts_with('\n'));
        edits.push((from, to, text));
    }
    if edits.is_empty() {
        return Err(na(
            R,
            format!(
                "no logging statement added by the root-cause commit found in fn {}",
                input.function
            ),
        ));
    }
    let mut out = src.to_string();
    for (from, to, text) in edits.into_iter().rev() {
        out.replace_range(from..to, &text);
    }
    if need_helper && !out.contains("fn fleetprof_verbose_logging()") {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!(
            "\n/// Added by fleetprof (skill {}): verbose output in hot paths is printed only when\n\
             /// `RUST_LOG` asks for debug or trace; the environment is read once.\n\
             fn fleetprof_verbose_logging() -> bool {{\n    \
                 static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();\n    \
                 *ENABLED.get_or_init(|| {{\n        \
                     std::env::var(\"RUST_LOG\").is_ok_and(|v| v.contains(\"debug\") || v.contains(\"trace\"))\n    \
                 }})\n}}\n",
            input.skill
        ));
    }
    Ok(out)
}

const COPY_TYPES: [&str; 15] = [
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "bool",
    "char", "()",
];

/// Splits at top-level commas.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut last = 0;
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[last..i]);
                last = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[last..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// `memoize`: renames the body to `NAME_uncached` and makes `NAME` consult a per-thread cache keyed by
/// the arguments first.
pub fn memoize(input: RecipeInput<'_>) -> Result<String, RecipeError> {
    const R: &str = "memoize";
    let src = input.source;
    if input.language != Language::Rust {
        return Err(na(
            R,
            format!(
                "the recipe writes Rust; {} is {}",
                name_of(&input),
                input.language
            ),
        ));
    }
    let masked = mask(src, input.language);
    let name = input.function;
    let f: FnSpan = find_fn(src, input.language, name)
        .ok_or_else(|| na(R, format!("fn {name} not found in the file")))?;
    if let Some(why) = impurity(src, &masked, name, 0) {
        return Err(na(
            R,
            format!(
                "fn {name} is not shown to be pure: {why}; caching it could change what it does"
            ),
        ));
    }
    let quals = &src[f.item_start..f.fn_kw];
    if ["const", "async", "unsafe", "extern"]
        .iter()
        .any(|q| quals.contains(q))
    {
        return Err(na(R, format!("fn {name} is {}", quals.trim())));
    }
    let sig = &src[f.fn_kw..f.open];
    let sig_re = Regex::new(&format!(
        r"^fn\s+{}\s*\((?s)(?P<params>.*)\)\s*->\s*(?P<ret>[^{{]+?)\s*$",
        regex::escape(name)
    ))
    .expect("escaped");
    let caps = sig_re.captures(sig.trim_end()).ok_or_else(|| {
        na(
            R,
            format!("fn {name} must be non-generic, without a where clause, and return a value"),
        )
    })?;
    let ret = caps["ret"].trim().to_string();
    if ret.contains('&')
        || ret.contains('\'')
        || ret.contains("impl ")
        || ret.contains("Self")
        || ret == "()"
    {
        return Err(na(
            R,
            format!("return type {ret} cannot be cached by value"),
        ));
    }
    let mut key_types = Vec::new();
    let mut key_exprs = Vec::new();
    let mut wrapper_params = Vec::new();
    let mut call_args = Vec::new();
    for p in split_top(&caps["params"]) {
        let (pat, ty) = p
            .split_once(':')
            .ok_or_else(|| na(R, format!("parameter {:?} is not `name: Type`", p.trim())))?;
        let pat = pat.trim();
        let ident = pat.strip_prefix("mut ").unwrap_or(pat).trim();
        if ident.contains("self") || !ident.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(na(
                R,
                format!("parameter {pat:?} is not a plain name (methods are not memoized)"),
            ));
        }
        let ty = ty.trim();
        let (kty, kexpr) = if COPY_TYPES.contains(&ty) {
            (ty.to_string(), ident.to_string())
        } else if ty == "String" {
            ("String".to_string(), format!("{ident}.clone()"))
        } else if ty == "&str" {
            ("String".to_string(), format!("{ident}.to_owned()"))
        } else {
            return Err(na(
                R,
                format!("parameter type {ty} is not a hashable key type the recipe knows"),
            ));
        };
        key_types.push(kty);
        key_exprs.push(kexpr);
        wrapper_params.push(format!("{ident}: {ty}"));
        call_args.push(ident.to_string());
    }
    if key_types.is_empty() {
        return Err(na(
            R,
            format!("fn {name} takes no arguments; a constant is better than a cache"),
        ));
    }
    let (key_ty, key_expr) = if key_types.len() == 1 {
        (key_types[0].clone(), key_exprs[0].clone())
    } else {
        (
            format!("({})", key_types.join(", ")),
            format!("({})", key_exprs.join(", ")),
        )
    };
    let callee = match enclosing_block_header(&masked, f.fn_kw) {
        Some(h) if h.starts_with("impl") || h.contains(" impl ") => {
            format!("Self::{name}_uncached")
        }
        Some(h) if h.starts_with("trait") || h.contains(" trait ") => {
            return Err(na(R, "trait methods are not memoized"));
        }
        _ => format!("{name}_uncached"),
    };
    let store = if COPY_TYPES.contains(&ret.as_str()) {
        "value"
    } else {
        "value.clone()"
    };
    let ind = indent_at(src, f.line_start).to_string();
    let vis = &src[f.item_start..f.fn_kw];
    let body = &src[f.open..=f.close];
    let wrapper = format!(
        "{vis}fn {name}({params}) -> {ret} {{\n\
         {ind}    // Added by fleetprof (skill {skill}): results cached per thread, keyed by the arguments.\n\
         {ind}    thread_local! {{\n\
         {ind}        static FLEETPROF_MEMO: std::cell::RefCell<std::collections::HashMap<{key_ty}, {ret}>> =\n\
         {ind}            std::cell::RefCell::new(std::collections::HashMap::new());\n\
         {ind}    }}\n\
         {ind}    let key = {key_expr};\n\
         {ind}    if let Some(hit) = FLEETPROF_MEMO.with(|m| m.borrow().get(&key).cloned()) {{\n\
         {ind}        return hit;\n\
         {ind}    }}\n\
         {ind}    let value = {callee}({args});\n\
         {ind}    FLEETPROF_MEMO.with(|m| {{\n\
         {ind}        let mut m = m.borrow_mut();\n\
         {ind}        if m.len() >= 4096 {{\n\
         {ind}            m.clear();\n\
         {ind}        }}\n\
         {ind}        m.insert(key, {store});\n\
         {ind}    }});\n\
         {ind}    value\n\
         {ind}}}\n\
         \n\
         {ind}/// The uncached body of `{name}` (memoized by fleetprof).\n\
         {ind}fn {name}_uncached({orig_params}) -> {ret} {body}",
        params = wrapper_params.join(", "),
        skill = input.skill,
        args = call_args.join(", "),
        orig_params = caps["params"].trim(),
    );
    Ok(format!(
        "{}{}{}",
        &src[..f.item_start],
        wrapper,
        &src[f.close + 1..]
    ))
}

/// Macros a pure function may use: they format, build or assert, without I/O.
const PURE_MACROS: &[&str] = &[
    "vec",
    "format",
    "assert",
    "assert_eq",
    "assert_ne",
    "debug_assert",
    "debug_assert_eq",
    "debug_assert_ne",
    "matches",
    "unreachable",
    "panic",
    "concat",
    "stringify",
    "todo",
];

/// Names whose presence means state or effects beyond the arguments.
const IMPURE_NAMES: &[(&str, &str)] = &[
    ("static", "declares or reads a static"),
    ("unsafe", "uses unsafe code"),
    ("thread_local", "uses thread-local state"),
    ("Cell", "uses interior mutability (Cell)"),
    ("RefCell", "uses interior mutability (RefCell)"),
    ("UnsafeCell", "uses interior mutability (UnsafeCell)"),
    ("Mutex", "uses shared mutable state (Mutex)"),
    ("RwLock", "uses shared mutable state (RwLock)"),
    ("OnceLock", "uses global state (OnceLock)"),
    ("LazyLock", "uses global state (LazyLock)"),
    ("SystemTime", "reads the clock"),
    ("Instant", "reads the clock"),
    ("thread_rng", "uses randomness"),
    ("rand", "uses randomness"),
    ("env", "reads the environment"),
    ("io", "does I/O"),
    ("fs", "does file I/O"),
    ("net", "does network I/O"),
    ("process", "runs processes"),
    ("File", "does file I/O"),
];

/// Types whose associated functions (`Type::f(..)`) are pure constructors or conversions.
const PURE_TYPES: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32",
    "f64", "bool", "char", "str", "String", "Vec", "VecDeque", "HashMap", "HashSet", "BTreeMap",
    "BTreeSet", "Option", "Some", "Box", "Self", "cmp", "mem", "iter", "Ok", "Err",
];

/// Why fn `name` (in `src`, `masked` its masked text) may not be pure, if it may not be: I/O,
/// globals, interior mutability, clocks, randomness, or a call to a function whose purity cannot
/// be seen (functions of the same file are checked in turn).
fn impurity(src: &str, masked: &str, name: &str, depth: usize) -> Option<String> {
    let f = find_fn(src, Language::Rust, name)?;
    let body = &masked[f.open..=f.close];
    if depth > 4 {
        return Some(format!("its calls through {name} go too deep to check"));
    }
    let word = Regex::new(r"\b[A-Za-z_][A-Za-z0-9_]*\b").expect("static regex");
    for m in word.find_iter(body) {
        if let Some((_, why)) = IMPURE_NAMES.iter().find(|(n, _)| *n == m.as_str()) {
            return Some(format!("it {why} (`{}`)", m.as_str()));
        }
    }
    let mac = Regex::new(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*!\s*[(\[{]").expect("static regex");
    for c in mac.captures_iter(body) {
        if !PURE_MACROS.contains(&&c[1]) {
            return Some(format!(
                "it calls the macro `{}!` (output or side effects)",
                &c[1]
            ));
        }
    }
    // Statics of the file read by name.
    let statics =
        Regex::new(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?static\s+(?:mut\s+)?([A-Z_][A-Z0-9_]*)")
            .expect("static regex");
    for c in statics.captures_iter(masked) {
        if Regex::new(&format!(r"\b{}\b", regex::escape(&c[1])))
            .expect("escaped")
            .is_match(body)
        {
            return Some(format!("it reads the global static `{}`", &c[1]));
        }
    }
    // Calls: free functions must be this file's (and pure themselves); `Type::f` must be a
    // known-pure type's; methods are on values derived from the arguments.
    let call = Regex::new(r"(\.|::)?\s*\b([A-Za-z_][A-Za-z0-9_]*)\s*(?:::<[^>]*>)?\s*\(")
        .expect("static regex");
    let path = Regex::new(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*::\s*[A-Za-z_][A-Za-z0-9_]*\s*\(")
        .expect("static regex");
    for c in path.captures_iter(body) {
        if !PURE_TYPES.contains(&&c[1]) {
            return Some(format!(
                "it calls `{}::…`, whose purity fleetprof cannot see",
                &c[1]
            ));
        }
    }
    const KEYWORDS: &[&str] = &[
        "if", "while", "for", "match", "return", "loop", "in", "as", "move", "Some", "Ok", "Err",
        "fn",
    ];
    for c in call.captures_iter(body) {
        if c.get(1).is_some() || KEYWORDS.contains(&&c[2]) || &c[2] == name {
            continue;
        }
        let callee = &c[2];
        // A closure bound in the body is the function's own code.
        if Regex::new(&format!(
            r"let\s+(?:mut\s+)?{}\s*=\s*(?:move\s*)?\|",
            regex::escape(callee)
        ))
        .expect("escaped")
        .is_match(body)
        {
            continue;
        }
        if find_fn(src, Language::Rust, callee).is_some() {
            if let Some(why) = impurity(src, masked, callee, depth + 1) {
                return Some(format!("it calls `{callee}`, and {why}"));
            }
        } else if callee.chars().next().is_some_and(char::is_uppercase) {
            // A tuple struct or enum variant constructor.
            continue;
        } else {
            return Some(format!(
                "it calls `{callee}`, whose purity fleetprof cannot see"
            ));
        }
    }
    None
}

/// `hoist-regex`: `let re = Regex::new(LITERAL).unwrap();` in the function becomes a block-local
/// `static RE_RE: LazyLock<Regex>` and `let re = &*RE_RE;`.
pub fn hoist_regex(input: RecipeInput<'_>) -> Result<String, RecipeError> {
    if matches!(
        input.language,
        Language::Go | Language::Java | Language::Python
    ) {
        return super::hoist::hoist(input);
    }
    if input.language != Language::Rust {
        return Err(na(
            "hoist-regex",
            format!("no regex idiom known for {}", input.language),
        ));
    }
    let re = Regex::new(
        r##"(?m)^([ \t]*)let\s+(?:mut\s+)?(\w+)\s*(?::\s*[\w:]+\s*)?=\s*((?:regex::)?Regex)::new\(\s*(r#*"[^\n]*?"#*|"(?:[^"\\\n]|\\.)*")\s*\)\s*(\.unwrap\(\)|\.expect\([^;\n]*\))\s*;[ \t]*$"##,
    )
    .expect("static regex");
    let (start, end) = body_range(input.source, input.language, input.function);
    let region = &input.source[start..end];
    if !re.is_match(region) {
        return Err(na(
            "hoist-regex",
            "no `let x = Regex::new(\"literal\").unwrap();` in the function",
        ));
    }
    let new = re.replace_all(region, |c: &regex::Captures<'_>| {
        let (ind, name, ty, lit, unwrap) = (&c[1], &c[2], &c[3], &c[4], &c[5]);
        let stat = format!("{}_RE", name.to_uppercase());
        let ty = if ty == "Regex" { "Regex".to_string() } else { "regex::Regex".to_string() };
        format!(
            "{ind}static {stat}: std::sync::LazyLock<{ty}> =\n{ind}    std::sync::LazyLock::new(|| {ty}::new({lit}){unwrap});\n{ind}let {name} = &*{stat};"
        )
    });
    Ok(format!(
        "{}{}{}",
        &input.source[..start],
        new,
        &input.source[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn skill_example(skill: &str) -> (String, String) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../skills")
            .join(skill)
            .join("example");
        (
            std::fs::read_to_string(dir.join("before.rs")).unwrap(),
            std::fs::read_to_string(dir.join("after.rs")).unwrap(),
        )
    }

    /// The logging recipe turns the skill's example "before" into exactly its "after".
    #[test]
    fn guard_logging_matches_example() {
        let (before, after) = skill_example("logging-in-hot-path");
        let added = vec![
            "        let msg = format!(\"step {i}: item={item} acc={acc}\");".to_string(),
            "        println!(\"{msg}\");".to_string(),
        ];
        let out = guard_logging(RecipeInput {
            source: &before,
            function: "checksum",
            language: Language::Rust,
            added_lines: &added,
            skill: "logging-in-hot-path",
        })
        .unwrap();
        assert_eq!(out, after);
    }

    /// A format binding used after the logging stays outside the guard; log macros get a level check.
    #[test]
    fn guard_logging_keeps_used_bindings_and_levels() {
        let src = "use log::debug;\nfn work(v: &[u32]) -> String {\n    let mut last = String::new();\n    for x in v {\n        let s = format!(\"{x}\");\n        debug!(\n            \"x = {}\",\n            s\n        );\n        last = s;\n    }\n    last\n}\n";
        let out = guard_logging(RecipeInput {
            source: src,
            function: "work",
            language: Language::Rust,
            added_lines: &[],
            skill: "s",
        })
        .unwrap();
        assert!(out.contains("        let s = format!(\"{x}\");\n        if log::log_enabled!(log::Level::Debug) {\n            debug!(\n"), "{out}");
        assert!(
            out.contains("            );\n        }\n        last = s;"),
            "{out}"
        );
        assert!(!out.contains("fleetprof_verbose_logging"));
        let none = guard_logging(RecipeInput {
            source: src,
            function: "work",
            language: Language::Rust,
            added_lines: &["x".into()],
            skill: "s",
        });
        assert!(matches!(none, Err(RecipeError::NotApplicable { .. })));
    }

    /// The memoize recipe turns the skill's example "before" into exactly its "after".
    #[test]
    fn memoize_matches_example() {
        let (before, after) = skill_example("memoize-pure-function");
        let out = memoize(RecipeInput {
            source: &before,
            function: "primes_below",
            language: Language::Rust,
            added_lines: &[],
            skill: "memoize-pure-function",
        })
        .unwrap();
        assert_eq!(out, after);
    }

    /// Memoize refuses methods, generic functions and unhashable arguments; uses Self:: in impls.
    #[test]
    fn memoize_limits() {
        let refuse = |src: &str, f: &str| {
            matches!(
                memoize(RecipeInput {
                    source: src,
                    function: f,
                    language: Language::Rust,
                    added_lines: &[],
                    skill: "s"
                }),
                Err(RecipeError::NotApplicable { .. })
            )
        };
        assert!(refuse("impl A { fn f(&self, x: u32) -> u32 { x } }", "f"));
        assert!(refuse("fn f<T>(x: T) -> u32 { 1 }", "f"));
        assert!(refuse("fn f(x: f64) -> f64 { x }", "f"));
        assert!(refuse("async fn f(x: u32) -> u32 { x }", "f"));
        // Not pure: I/O, globals, interior mutability, clocks, unknown callees — with the reason.
        let why = |src: &str| match memoize(RecipeInput {
            language: Language::Rust,
            source: src,
            function: "f",
            added_lines: &[],
            skill: "s",
        }) {
            Err(RecipeError::NotApplicable { reason, .. }) => reason,
            other => panic!("memoized: {other:?}"),
        };
        assert!(
            why("fn f(x: u32) -> u32 {\n    println!(\"{x}\");\n    x\n}\n").contains("`println!`")
        );
        assert!(why("static LIMIT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);\nfn f(x: u32) -> u32 {\n    x.min(LIMIT.load(std::sync::atomic::Ordering::Relaxed))\n}\n").contains("LIMIT"));
        assert!(why("fn f(x: u64) -> u64 {\n    let t = std::time::Instant::now();\n    x + t.elapsed().as_secs()\n}\n").contains("clock"));
        assert!(why("fn f(x: u64) -> u64 {\n    helper(x) + 1\n}\nfn helper(x: u64) -> u64 {\n    let c = std::cell::Cell::new(x);\n    c.get()\n}\n").contains("calls `helper`, and it uses interior mutability"));
        assert!(
            why("fn f(x: u64) -> u64 {\n    lookup(x)\n}\n").contains("`lookup`, whose purity")
        );
        let out = memoize(RecipeInput { language: Language::Rust, source: "impl A {\n    pub fn f(s: &str, n: usize) -> Vec<String> {\n        vec![s.repeat(n)]\n    }\n}\n", function: "f", added_lines: &[], skill: "s" }).unwrap();
        assert!(out.contains("let value = Self::f_uncached(s, n);"), "{out}");
        assert!(
            out.contains("HashMap<(String, usize), Vec<String>>"),
            "{out}"
        );
        assert!(out.contains("m.insert(key, value.clone());"));
        assert!(out.contains("    fn f_uncached(s: &str, n: usize) -> Vec<String> {\n        vec![s.repeat(n)]\n    }\n}\n"), "{out}");
    }

    /// The regex recipe turns the skill's example "before" into exactly its "after"; rewrites apply in order.
    #[test]
    fn hoist_regex_and_rewrite() {
        let (before, after) = skill_example("regex-built-per-call");
        let out = hoist_regex(RecipeInput {
            source: &before,
            function: "is_api",
            language: Language::Rust,
            added_lines: &[],
            skill: "s",
        })
        .unwrap();
        assert_eq!(out, after);
        let spec = RecipeSpec::Rewrite {
            rewrite: vec![crate::skills::RewriteRule {
                find: r"\.to_vec\(\)\.len\(\)".into(),
                replace: ".len()".into(),
            }],
        };
        let src = "fn g(v: &[u8]) -> usize { v.to_vec().len() }\nfn h(v: &[u8]) -> usize { v.to_vec().len() }\n";
        let out = apply(
            &spec,
            RecipeInput {
                source: src,
                function: "h",
                language: Language::Rust,
                added_lines: &[],
                skill: "s",
            },
        )
        .unwrap();
        assert_eq!(
            out,
            "fn g(v: &[u8]) -> usize { v.to_vec().len() }\nfn h(v: &[u8]) -> usize { v.len() }\n"
        );
        assert!(matches!(
            apply(
                &RecipeSpec::Builtin("nope".into()),
                RecipeInput {
                    source: src,
                    function: "h",
                    language: Language::Rust,
                    added_lines: &[],
                    skill: "s"
                }
            ),
            Err(RecipeError::Unknown(_))
        ));
    }
}
