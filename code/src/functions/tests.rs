use super::*;

fn names(defs: &[FunctionDef]) -> Vec<(&str, u32, u32)> {
    let mut v: Vec<_> = defs
        .iter()
        .map(|d| (d.qualified.as_str(), d.start, d.end))
        .collect();
    v.sort_by_key(|x| x.1);
    v
}

/// Free functions, methods of inherent and trait impls, nested modules, lifetimes and braces
/// in strings.
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
    let parse = named(&defs, "checkout::parse::h0123456789abcdef").unwrap();
    let (open, close) = parse.body.unwrap();
    assert!(src[open..close].starts_with('{') && src[open..close].ends_with('}'));
    assert!(src[parse.item_start..].starts_with("pub fn parse"));
}

/// Definitions at the top level, with the brace on the next line; not prototypes,
/// initializers or calls; pointer-returning functions.
#[test]
fn c_functions() {
    let src = "#include <stdio.h>\nstatic int helper(int x);\nint table[] = { 1, 2 };\n\
               static int helper(int x)\n{\n    if (x) { return 1; }\n    return 0;\n}\n\
               int main(void) {\n    /* } */\n    return helper(2);\n}\nchar *name_of(int k) { return \"}\"; }\n";
    let defs = definitions(src, Language::C, "");
    assert_eq!(
        names(&defs),
        vec![("helper", 4, 8), ("main", 9, 12), ("name_of", 13, 13)]
    );
    assert_eq!(innermost_at(&defs, 11).unwrap().name, "main");
}

/// C++: in-class methods, out-of-class `Class::method`, namespaces.
#[test]
fn cpp_functions() {
    let src = "#include <iostream>\nnamespace shop {\nclass Cart {\n public:\n  int total() const {\n    return 1;\n  }\n};\n\
               int Cart::count(int k) {\n  std::cout << k << std::endl;\n  return k;\n}\n}\nint main() { return 0; }\n";
    let defs = definitions(src, Language::Cpp, "");
    assert_eq!(
        names(&defs),
        vec![
            ("shop::Cart::total", 5, 7),
            ("Cart::count", 9, 12),
            ("main", 14, 14)
        ]
    );
    assert_eq!(named(&defs, "shop::Cart::count(int)").unwrap().start, 9);
}

/// Go functions and methods (qualified by receiver type).
#[test]
fn go_functions() {
    let src = "package main\n\nimport \"fmt\"\n\nfunc work(n int) int {\n\ts := \"}\"\n\tfmt.Println(s)\n\treturn n\n}\n\n\
               type Server struct{}\n\nfunc (s *Server) Handle(x int) {\n\t_ = x\n}\n";
    let defs = definitions(src, Language::Go, "main.");
    assert_eq!(
        names(&defs),
        vec![("main.work", 5, 9), ("main.Server.Handle", 13, 15)]
    );
    assert_eq!(
        named(&defs, "main.(*Server).Handle").unwrap().name,
        "Handle"
    );
    assert_eq!(named(&defs, "main.work").unwrap().start, 5);
}

/// Java methods and constructors, qualified by class.
#[test]
fn java_functions() {
    let src = "package a;\npublic class Shop {\n  public Shop() {}\n  static int price(int k) {\n    return k;\n  }\n}\n";
    let defs = definitions(src, Language::Java, "");
    assert_eq!(
        names(&defs),
        vec![("Shop.Shop", 3, 3), ("Shop.price", 4, 6)]
    );
}

/// `def` blocks, methods qualified by class.
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

/// Masking blanks comments and literal contents and keeps offsets.
#[test]
fn masks_comments_and_literals() {
    let src = "int f(void) {\n  /* { */ printf(\"%d}\\n\", 1); // }\n  return '}';\n}\n";
    let m = mask(src, Language::C);
    assert_eq!(m.len(), src.len());
    assert_eq!(m.matches('{').count(), 1);
    assert_eq!(m.matches('}').count(), 1);
    assert!(m.contains("printf(\""));
}

/// Module paths of Rust files and package names of manifests.
#[test]
fn rust_paths() {
    assert_eq!(rust_module_path("src/lib.rs"), Some(vec![]));
    assert_eq!(
        rust_module_path("src/store/writer.rs"),
        Some(vec!["store".to_owned(), "writer".to_owned()])
    );
    assert_eq!(rust_module_path("tests/it.rs"), None);
    assert_eq!(
        cargo_package_name("[workspace]\n[package]\nname = \"fleet-prof\"\n"),
        Some("fleet_prof".to_owned())
    );
    assert_eq!(last_segment("main.(*Server).Handle"), "Handle");
    assert_eq!(last_segment("shop::Cart::count(int)"), "count");
}
