//! Profile paths to repository paths.
//!
//! DWARF line tables name files as the compiler saw them: absolute build paths (`/build/app/src/x.c`,
//! `/home/ci/work/svc/main.go`), relative ones (`./src/x.c`), and files that are not the
//! repository's at all (`/rustc/<hash>/library/…`, `$HOME/.cargo/registry/src/…`, `/usr/include/…`,
//! Go's `GOROOT`). [`to_repo_path`] strips what can be stripped and keeps the longest tail of the
//! path that is a file of the repository.

/// Path fragments of files that belong to toolchains or dependencies, never to the repository.
const FOREIGN: &[&str] = &[
    "/rustc/",
    "/.cargo/registry/",
    "/.cargo/git/",
    "/.rustup/toolchains/",
    "/usr/include/",
    "/usr/lib/go",
    "/usr/local/go/",
    "/go/pkg/mod/",
    "/usr/lib/gcc/",
    "/usr/src/",
];

/// Whether `path` is a toolchain's or a dependency's file (standard library, registry crate,
/// system header, Go module cache).
pub fn is_foreign(path: &str) -> bool {
    FOREIGN.iter().any(|f| path.contains(f)) || path.starts_with("<")
}

/// The repository file `profile_path` (a DWARF file name) refers to: the longest tail of its
/// components that is one of `repo_files` (repository-relative, `/`-separated). `None` for
/// toolchain and dependency files and for paths no file matches.
pub fn to_repo_path<'a>(profile_path: &str, repo_files: &'a [String]) -> Option<&'a str> {
    if profile_path.is_empty() || is_foreign(profile_path) {
        return None;
    }
    let parts: Vec<&str> = profile_path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for i in 0..parts.len() {
        if parts[i..].contains(&"..") {
            continue;
        }
        let tail = parts[i..].join("/");
        if let Some(f) = repo_files.iter().find(|f| **f == tail) {
            return Some(f.as_str());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build prefixes are stripped, the longest matching tail wins, foreign files are refused.
    #[test]
    fn maps_profile_paths() {
        let files: Vec<String> = ["src/main.c", "lib/util.c", "main.c", "svc/handler.go"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            to_repo_path("/build/app-1.2/src/main.c", &files),
            Some("src/main.c")
        );
        assert_eq!(to_repo_path("./src/main.c", &files), Some("src/main.c"));
        assert_eq!(to_repo_path("/tmp/x/main.c", &files), Some("main.c"));
        assert_eq!(
            to_repo_path("/home/ci/go/src/example.com/svc/handler.go", &files),
            Some("svc/handler.go")
        );
        assert_eq!(
            to_repo_path("/rustc/90b35a6/library/core/src/fmt/mod.rs", &files),
            None
        );
        assert_eq!(
            to_repo_path(
                "/root/.cargo/registry/src/index.crates.io-1/log-0.4/src/main.c",
                &files
            ),
            None
        );
        assert_eq!(to_repo_path("/usr/include/stdio.h", &files), None);
        assert_eq!(to_repo_path("/build/other.c", &files), None);
        assert_eq!(to_repo_path("", &files), None);
    }
}
