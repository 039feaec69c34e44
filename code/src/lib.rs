//! fleetprof's code intelligence, shared by the collector (`changes import-git`: which functions a
//! commit touched) and the agent (where a profiled function lives, what a fix may change).
//!
//! - [`Language`]: the languages fleets run (Rust, C, C++, Go, Java, Python), by file extension.
//! - [`functions`]: function definitions with their spans, from tree-sitter grammars (a real parser,
//!   so braces in strings, nested items and C++/Java/Go methods are handled).
//! - [`paths`]: a profile's DWARF `file:line` mapped to a repository path (build prefixes stripped).
//! - [`git`]: running `git` and parsing its diffs (changed ranges and added lines per file).
//!
//! ```
//! use fleetprof_code::{Language, functions};
//! let src = "int helper(int x) { return x + 1; }\nint main(void) {\n  return helper(1);\n}\n";
//! let defs = functions::definitions(src, Language::C, "");
//! assert_eq!(functions::innermost_at(&defs, 3).unwrap().name, "main");
//! ```

pub mod functions;
pub mod git;
mod lang;
pub mod paths;

pub use lang::Language;
