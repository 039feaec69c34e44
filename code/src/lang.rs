//! The one language table of the workspace.

/// A source language fleetprof can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    /// `.rs`
    Rust,
    /// `.c`, `.h`
    C,
    /// `.cc`, `.cpp`, `.cxx`, `.hh`, `.hpp`, `.hxx`
    Cpp,
    /// `.go`
    Go,
    /// `.java`
    Java,
    /// `.py`
    Python,
}

impl Language {
    /// Every supported language.
    pub const ALL: [Language; 6] = [
        Language::Rust,
        Language::C,
        Language::Cpp,
        Language::Go,
        Language::Java,
        Language::Python,
    ];

    /// The language of `path`, by its extension; `None` for anything else.
    pub fn of(path: &str) -> Option<Language> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name.rsplit_once('.')?.1;
        Some(match ext {
            "rs" => Language::Rust,
            "c" | "h" => Language::C,
            "cc" | "cpp" | "cxx" | "c++" | "hh" | "hpp" | "hxx" => Language::Cpp,
            "go" => Language::Go,
            "java" => Language::Java,
            "py" => Language::Python,
            _ => return None,
        })
    }

    /// The lower-case name skills use (`rust`, `c`, `cpp`, `go`, `java`, `python`).
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::Go => "go",
            Language::Java => "java",
            Language::Python => "python",
        }
    }

    /// The language called `name` (as [`Language::name`] spells it; `c++` also works).
    pub fn from_name(name: &str) -> Option<Language> {
        let n = name.to_ascii_lowercase();
        Language::ALL
            .into_iter()
            .find(|l| l.name() == n)
            .or((n == "c++").then_some(Language::Cpp))
    }

    /// The tree-sitter grammar.
    pub(crate) fn grammar(self) -> tree_sitter::Language {
        match self {
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
            Language::C => tree_sitter_c::LANGUAGE.into(),
            Language::Cpp => tree_sitter_cpp::LANGUAGE.into(),
            Language::Go => tree_sitter_go::LANGUAGE.into(),
            Language::Java => tree_sitter_java::LANGUAGE.into(),
            Language::Python => tree_sitter_python::LANGUAGE.into(),
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
