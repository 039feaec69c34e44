//! `hoist-regex` for Go, Java and Python: a pattern compiled from a literal on every call becomes
//! one compiled once — a package-level `var` (Go), a `private static final Pattern` field (Java),
//! a module-level constant (Python) — and the function uses it.

use fleetprof_code::Language;
use regex::Regex;

use super::recipes::{RecipeError, RecipeInput};
use super::span::{find_fn, indent_at};

const R: &str = "hoist-regex";

fn na(reason: impl Into<String>) -> RecipeError {
    RecipeError::NotApplicable {
        recipe: R.to_string(),
        reason: reason.into(),
    }
}

/// The compile statement, per language: (indent, variable, arguments) are groups 1–3.
fn statement(lang: Language) -> Regex {
    let p = match lang {
        Language::Go => {
            r#"(?m)^([ \t]*)(\w+)\s*:=\s*regexp\.MustCompile\(\s*(`[^`]*`|"(?:[^"\\\n]|\\.)*")\s*\)[ \t]*$"#
        }
        Language::Java => {
            r#"(?m)^([ \t]*)(?:final\s+)?Pattern\s+(\w+)\s*=\s*Pattern\.compile\(\s*("(?:[^"\\\n]|\\.)*"(?:\s*,\s*Pattern\.\w+(?:\s*\|\s*Pattern\.\w+)*)?)\s*\)\s*;[ \t]*$"#
        }
        _ => {
            r#"(?m)^([ \t]*)(\w+)\s*=\s*re\.compile\(\s*([rbu]*"(?:[^"\\\n]|\\.)*"|[rbu]*'(?:[^'\\\n]|\\.)*')(\s*,\s*re\.\w+(?:\s*\|\s*re\.\w+)*)?\s*\)[ \t]*$"#
        }
    };
    Regex::new(p).expect("static regex")
}

/// A compile call anywhere (literal or not), to say why a non-literal one is left alone.
fn any_compile(lang: Language) -> Regex {
    Regex::new(match lang {
        Language::Go => r"regexp\.(?:MustCompile|Compile)\(",
        Language::Java => r"Pattern\.compile\(",
        _ => r"re\.compile\(",
    })
    .expect("static regex")
}

fn upper_camel(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// Applies `hoist-regex` to a Go, Java or Python function.
pub(crate) fn hoist(input: RecipeInput<'_>) -> Result<String, RecipeError> {
    let lang = input.language;
    let src = input.source;
    let f = find_fn(src, lang, input.function)
        .ok_or_else(|| na(format!("function {} not found in the file", input.function)))?;
    let (start, end) = (f.open, f.close + 1);
    let region = &src[start..end];
    let re = statement(lang);
    if !re.is_match(region) {
        return Err(na(if any_compile(lang).is_match(region) {
            format!(
                "the pattern compiled in {} is not a literal (it depends on the call), so it cannot be compiled once",
                input.function
            )
        } else {
            format!("no pattern compiled from a literal in {}", input.function)
        }));
    }
    let mut hoisted = Vec::new();
    let new_region = re.replace_all(region, |c: &regex::Captures<'_>| {
        let (ind, var, args) = (&c[1], &c[2], &c[3]);
        let flags = c.get(4).map_or("", |m| m.as_str());
        match lang {
            Language::Go => {
                let name = format!("{}{}Re", input.function, upper_camel(var));
                hoisted.push(format!(
                    "// {name} is compiled once (fleetprof, skill {}): compiling per call dominated {}.\nvar {name} = regexp.MustCompile({args})\n",
                    input.skill, input.function
                ));
                format!("{ind}{var} := {name}")
            }
            Language::Java => {
                let name = format!(
                    "{}_{}",
                    to_screaming(input.function),
                    to_screaming(var)
                );
                let fi = indent_at(src, f.line_start);
                hoisted.push(format!(
                    "{fi}// Compiled once (fleetprof, skill {}): compiling per call dominated {}.\n{fi}private static final java.util.regex.Pattern {name} = java.util.regex.Pattern.compile({args});\n",
                    input.skill, input.function
                ));
                format!("{ind}Pattern {var} = {name};")
            }
            _ => {
                let name = format!(
                    "_{}_{}",
                    to_screaming(input.function),
                    to_screaming(var)
                );
                hoisted.push(format!(
                    "# Compiled once (fleetprof, skill {}): compiling per call dominated {}.\n{name} = re.compile({args}{flags})\n",
                    input.skill, input.function
                ));
                format!("{ind}{var} = {name}")
            }
        }
    });
    let body = format!("{}{}{}", &src[..start], new_region, &src[end..]);
    // Where the constants go: above the function (Go, Java: inside its class), or above the
    // top-level statement holding it (Python: a method's class).
    let at = match lang {
        Language::Python => top_level_start(src, f.line_start),
        _ => above_comments(src, f.line_start),
    };
    let block: String = hoisted.concat() + "\n";
    Ok(format!("{}{block}{}", &body[..at], &body[at..]))
}

fn to_screaming(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 && !out.ends_with('_') {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Start of the comments, directives and annotations attached above `line_start`.
fn above_comments(src: &str, line_start: usize) -> usize {
    let mut at = line_start;
    while at > 0 {
        let prev = src[..at - 1].rfind('\n').map_or(0, |p| p + 1);
        let t = src[prev..at].trim();
        if !(t.starts_with("//") || t.starts_with("/*") || t.starts_with('*') || t.starts_with('@'))
        {
            break;
        }
        at = prev;
    }
    at
}

/// Start of the top-level (unindented) `def`/`class` (with its decorators) holding `line_start`.
fn top_level_start(src: &str, line_start: usize) -> usize {
    let mut at = line_start;
    loop {
        let line = &src[at..src[at..].find('\n').map_or(src.len(), |e| at + e)];
        let top = !line.starts_with([' ', '\t']) && !line.trim().is_empty();
        if top
            && (line.starts_with("def ")
                || line.starts_with("async def ")
                || line.starts_with("class "))
        {
            break;
        }
        if at == 0 {
            return line_start;
        }
        at = src[..at - 1].rfind('\n').map_or(0, |p| p + 1);
    }
    while at > 0 {
        let prev = src[..at - 1].rfind('\n').map_or(0, |p| p + 1);
        if !src[prev..at].starts_with('@') {
            break;
        }
        at = prev;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(lang: Language, src: &str, function: &str) -> Result<String, RecipeError> {
        hoist(RecipeInput {
            source: src,
            function,
            language: lang,
            added_lines: &[],
            skill: "regex-built-per-call",
        })
    }

    /// Go: MustCompile of a literal becomes a package variable above the function's comments.
    #[test]
    fn go_hoists_must_compile() {
        let src = "package main\n\nimport \"regexp\"\n\n// isAPI says.\nfunc isAPI(p string) bool {\n\tre := regexp.MustCompile(`^/api/v[0-9]+/`)\n\treturn re.MatchString(p)\n}\n";
        let out = run(Language::Go, src, "isAPI").unwrap();
        assert!(
            out.contains(
                "var isAPIReRe = regexp.MustCompile(`^/api/v[0-9]+/`)\n\n// isAPI says.\nfunc isAPI"
            ),
            "{out}"
        );
        assert!(
            out.contains("\tre := isAPIReRe\n\treturn re.MatchString(p)"),
            "{out}"
        );
        let dynamic = "package main\n\nfunc m(p, pat string) bool {\n\tre := regexp.MustCompile(pat)\n\treturn re.MatchString(p)\n}\n";
        let err = run(Language::Go, dynamic, "m").unwrap_err().to_string();
        assert!(err.contains("not a literal"), "{err}");
    }

    /// Java: Pattern.compile (with flags) becomes a static final field in the class.
    #[test]
    fn java_hoists_pattern() {
        let src = "import java.util.regex.Pattern;\nclass Router {\n    static boolean isApi(String p) {\n        Pattern re = Pattern.compile(\"^/api/v[0-9]+/\", Pattern.CASE_INSENSITIVE);\n        return re.matcher(p).find();\n    }\n}\n";
        let out = run(Language::Java, src, "isApi").unwrap();
        assert!(out.contains("    private static final java.util.regex.Pattern IS_API_RE = java.util.regex.Pattern.compile(\"^/api/v[0-9]+/\", Pattern.CASE_INSENSITIVE);\n\n    static boolean isApi"), "{out}");
        assert!(out.contains("        Pattern re = IS_API_RE;\n"), "{out}");
    }

    /// Python: re.compile in a method becomes a module constant above the class.
    #[test]
    fn python_hoists_compile() {
        let src = "import re\n\n\nclass Router:\n    def is_api(self, p):\n        pat = re.compile(r\"^/api/v[0-9]+/\", re.I)\n        return pat.match(p) is not None\n";
        let out = run(Language::Python, src, "is_api").unwrap();
        assert!(
            out.contains("_IS_API_PAT = re.compile(r\"^/api/v[0-9]+/\", re.I)\n\nclass Router:"),
            "{out}"
        );
        assert!(out.contains("        pat = _IS_API_PAT\n"), "{out}");
    }
}
