/// Whether the path is an API route.
pub fn is_api(path: &str) -> bool {
    let re = regex::Regex::new(r"^/api/v\d+/").unwrap();
    re.is_match(path)
}
