//! HTML building blocks: escaping, links that carry a view's state, the page frame, numbers.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::data::Params;

/// `s` escaped for HTML text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded for a URL's query value or path segment.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `path?k=v&...` from the pairs whose value is set.
pub(crate) fn url(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// The window parameters of `p` (`since`, `from`, `to`), to carry into links.
pub(crate) fn window_pairs(p: &Params) -> [(&'static str, Option<&str>); 3] {
    [
        ("since", p.get("since")),
        ("from", p.get("from")),
        ("to", p.get("to")),
    ]
}

/// A link to a function's page.
pub(crate) fn function_link(p: &Params, service: &str, function: &str) -> String {
    let [a, b, c] = window_pairs(p);
    format!(
        "<a class=\"fn\" href=\"{}\">{}</a>",
        esc(&url(
            "/function",
            &[
                ("service", Some(service)),
                ("function", Some(function)),
                a,
                b,
                c
            ]
        )),
        esc(function)
    )
}

/// RFC 3339 seconds of a Unix time.
pub(crate) fn time(unix: u32) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(u64::from(unix))).to_string()
}

/// The form that picks the window (and keeps the other state in hidden fields).
pub(crate) fn window_form(action: &str, p: &Params, keep: &[&str]) -> String {
    let mut hidden = String::new();
    for k in keep {
        if let Some(v) = p.get(k) {
            let _ = write!(
                hidden,
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                esc(v)
            );
        }
    }
    format!(
        "<form class=\"window\" method=\"get\" action=\"{action}\">{hidden}\
         <label>since <input name=\"since\" size=\"5\" placeholder=\"24h\" value=\"{}\"></label> \
         <label>or from <input name=\"from\" size=\"20\" placeholder=\"2025-06-01T12:00:00Z\" value=\"{}\"></label> \
         <label>to <input name=\"to\" size=\"20\" value=\"{}\"></label> <button>Show</button></form>",
        esc(p.get("since").unwrap_or_default()),
        esc(p.get("from").unwrap_or_default()),
        esc(p.get("to").unwrap_or_default()),
    )
}

/// A whole page: title, navigation, body.
pub(crate) fn page(title: &str, nav: &str, body: &str) -> String {
    let item = |href: &str, label: &str, key: &str| {
        let class = if key == nav { " class=\"here\"" } else { "" };
        format!("<a href=\"{href}\"{class}>{label}</a>")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · fleetprof</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body><header><a class=\"brand\" href=\"/\">fleetprof</a><nav>{}{}{}</nav></header>\
         <main>{body}</main><script src=\"/assets/app.js\"></script></body></html>\n",
        esc(title),
        item("/", "Services", "services"),
        item("/regressions", "Regressions", "regressions"),
        item("/opportunities", "Opportunities", "opportunities"),
    )
}

/// An error as a page body.
pub(crate) fn error_box(message: &str) -> String {
    format!("<p class=\"error\">{}</p>", esc(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Escaping and encoding leave nothing that could break out of text, attributes or URLs.
    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(enc("a b;c::d/é"), "a%20b%3Bc%3A%3Ad%2F%C3%A9");
        assert_eq!(
            url("/flame", &[("service", Some("a&b")), ("since", None)]),
            "/flame?service=a%26b"
        );
    }
}
