/// Whether the path is an API route.
pub fn is_api(path: &str) -> bool {
    static RE_RE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^/api/v\d+/").unwrap());
    let re = &*RE_RE;
    re.is_match(path)
}
