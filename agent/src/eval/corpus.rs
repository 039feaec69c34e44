//! The seeded regressions: small services in six languages, each a first commit that is fine and a
//! second commit (the known root cause) that adds the cost, with a `fleetprof.toml` whose build and
//! test commands check the service still computes what it did, and a workload to profile.

use super::{Case, Expect, Kind, Lang};

const C_V1: &str = r#"#include <stdio.h>
#include <stdlib.h>

long price_items(const long *v, int n)
{
    long total = 0;
    for (int i = 0; i < n; i++) {
        total += v[i] * 3;
    }
    return total;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    long *v = malloc(sizeof(long) * n);
    for (int i = 0; i < n; i++)
        v[i] = i;
    printf("total %ld\n", price_items(v, n));
    free(v);
    return 0;
}
"#;

const CPP_V1: &str = r#"#include <cstdlib>
#include <iostream>
#include <vector>

long price_items(const std::vector<long> &v)
{
    long total = 0;
    for (size_t i = 0; i < v.size(); i++) {
        total += v[i] * 3;
    }
    return total;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? std::atol(argv[1]) : 1000;
    std::vector<long> v(n);
    for (long i = 0; i < n; i++)
        v[i] = i;
    std::cout << "total " << price_items(v) << "\n";
    return 0;
}
"#;

const GO_V1: &str = r#"package main

import (
	"fmt"
	"os"
	"strconv"
)

func priceItems(items []int) int {
	total := 0
	for _, it := range items {
		total += it * 3
	}
	return total
}

func main() {
	n := 1000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	fmt.Printf("total %d\n", priceItems(items))
}
"#;

const RUST_LIB_V1: &str = r#"//! A pricing service.

/// The total price of the items.
pub fn price_items(items: &[u64]) -> u64 {
    let mut total = 0u64;
    for item in items {
        total = total.wrapping_add(item * 3);
    }
    total
}

#[cfg(test)]
mod tests {
    #[test]
    fn prices() {
        let v: Vec<u64> = (0..10).collect();
        assert_eq!(super::price_items(&v), 135);
    }
}
"#;

const RUST_MAIN: &str = r#"fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let v: Vec<u64> = (0..n).collect();
    println!("total {}", shop::price_items(&v));
}
"#;

const PY_V1: &str = r#""""A pricing service."""
import logging
import sys

log = logging.getLogger(__name__)


def price_items(items):
    total = 0
    for item in items:
        total += item * 3
    return total


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print("total", price_items(range(n)))
"#;

const JAVA_V1: &str = r#"public class Shop {
    static long priceItems(long[] items) {
        long total = 0;
        for (int i = 0; i < items.length; i++) {
            total += items[i] * 3;
        }
        return total;
    }

    public static void main(String[] args) {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 1000;
        long[] items = new long[n];
        for (int i = 0; i < n; i++) {
            items[i] = i;
        }
        System.out.println("total " + priceItems(items));
    }
}
"#;

const GO_RE_V1: &str = r#"package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
)

var apiPath = regexp.MustCompile(`^/api/v[0-9]+/`)

func isAPI(p string) bool {
	return apiPath.MatchString(p)
}

func main() {
	n := 1000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	paths := []string{"/api/v1/items", "/static/app.js", "/api/v2/users"}
	count := 0
	for i := 0; i < n; i++ {
		for _, p := range paths {
			if isAPI(p) {
				count++
			}
		}
	}
	fmt.Printf("api %d\n", count)
}
"#;

const PY_RE_V1: &str = r#""""Routes requests."""
import re
import sys

API = re.compile(r"^/api/v[0-9]+/")


def is_api(path):
    return API.match(path) is not None


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    paths = ["/api/v1/items", "/static/app.js", "/api/v2/users"]
    print("api", sum(1 for _ in range(n) for p in paths if is_api(p)))
"#;

const JAVA_RE_V1: &str = r#"import java.util.regex.Pattern;

public class Router {
    private static final Pattern API = Pattern.compile("^/api/v[0-9]+/");

    static boolean isApi(String p) {
        return API.matcher(p).find();
    }

    public static void main(String[] args) {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 1000;
        String[] paths = {"/api/v1/items", "/static/app.js", "/api/v2/users"};
        int count = 0;
        for (int i = 0; i < n; i++) {
            for (String p : paths) {
                if (isApi(p)) {
                    count++;
                }
            }
        }
        System.out.println("api " + count);
    }
}
"#;

const RUST_IMPURE: &str = r#"//! Scores words.

/// Scores a word, logging every call for the audit trail.
pub fn score(word: &str) -> u64 {
    println!("scoring {word}");
    word.bytes().map(u64::from).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn scores() {
        assert_eq!(super::score("ab"), 195);
    }
}
"#;

const CARGO_TOML: &str =
    "[package]\nname = \"shop\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";

fn config(build: &str, test: &str, workload: &str) -> String {
    format!(
        "[validate]\nbuild = {build:?}\ntest = {test:?}\nworkload = {workload:?}\ntimeout_secs = 300\n"
    )
}

fn with_line(text: &str, after: &str, line: &str) -> String {
    assert!(
        text.contains(after),
        "corpus: {after:?} not in the template"
    );
    text.replacen(after, &format!("{after}{line}"), 1)
}

/// Every case of the corpus.
pub(super) fn cases() -> Vec<Case> {
    let c_cfg = config(
        "gcc -O2 -g -Wall -o svc svc.c",
        "./svc 10 2>/dev/null | grep -qx 'total 135'",
        "./svc 20000000 2>/dev/null",
    );
    let cpp_cfg = config(
        "g++ -O2 -g -Wall -o svc svc.cpp",
        "./svc 10 2>/dev/null | grep -qx 'total 135'",
        "./svc 20000000 2>/dev/null",
    );
    let go_cfg = |expect: &str| {
        config(
            "go build -o svc .",
            &format!("./svc 10 2>/dev/null | grep -qx '{expect}'"),
            "./svc 2000000 2>/dev/null",
        )
    };
    let rust_cfg = config(
        "cargo build --offline --quiet",
        "cargo test --offline --quiet",
        "./target/debug/shop 20000000 >/dev/null",
    );
    let java_cfg = |class: &str, expect: &str| {
        config(
            &format!("javac -d out {class}.java"),
            &format!("java -cp out {class} 10 2>/dev/null | grep -qx '{expect}'"),
            &format!("java -cp out {class} 2000000 2>/dev/null"),
        )
    };
    let py_cfg = |file: &str, module: &str, check: &str| {
        config(
            &format!("python3 -m py_compile {file}"),
            &format!("python3 -c 'import {module}; assert {check}'"),
            &format!("python3 {file} 200000 2>/dev/null"),
        )
    };
    let go_mod = "module svc\n\ngo 1.19\n".to_string();
    vec![
        Case {
            name: "c-logging",
            frames: &["main", "price_items", "fprintf", "__vfprintf_internal"],
            lang: Lang::C,
            kind: Kind::Regression,
            function: "price_items",
            files: vec![
                ("svc.c", C_V1.into()),
                (".gitignore", "svc\n".into()),
                ("fleetprof.toml", c_cfg),
            ],
            regress: vec![(
                "svc.c",
                with_line(
                    C_V1,
                    "        total += v[i] * 3;\n",
                    "        fprintf(stderr, \"debug: item %d -> %ld\\n\", i, total);\n",
                ),
            )],
            summary: "Log every priced item",
            expect: Expect::Fixed,
        },
        Case {
            name: "cpp-logging",
            frames: &["main", "price_items(std::vector<long, std::allocator<long> > const&)", "std::ostream& std::ostream::_M_insert<long>(long)", "std::ostream::flush()"],
            lang: Lang::Cpp,
            kind: Kind::Regression,
            function: "price_items",
            files: vec![
                ("svc.cpp", CPP_V1.into()),
                (".gitignore", "svc\n".into()),
                ("fleetprof.toml", cpp_cfg),
            ],
            regress: vec![(
                "svc.cpp",
                with_line(
                    CPP_V1,
                    "        total += v[i] * 3;\n",
                    "        std::cerr << \"debug: item \" << i << \" -> \" << total << std::endl;\n",
                ),
            )],
            summary: "Trace each item's running total",
            expect: Expect::Fixed,
        },
        Case {
            name: "go-logging",
            frames: &["main.main", "main.priceItems", "log.Printf", "fmt.Sprintf"],
            lang: Lang::Go,
            kind: Kind::Regression,
            function: "priceItems",
            files: vec![
                ("main.go", GO_V1.into()),
                ("go.mod", go_mod.clone()),
                (".gitignore", "svc\n".into()),
                ("fleetprof.toml", go_cfg("total 135")),
            ],
            regress: vec![(
                "main.go",
                with_line(
                    &GO_V1
                        .replace("\t\"fmt\"\n", "\t\"fmt\"\n\t\"log\"\n")
                        .replace("for _, it := range items", "for i, it := range items"),
                    "\t\ttotal += it * 3\n",
                    "\t\tlog.Printf(\"debug: item %d -> %d\", i, total)\n",
                ),
            )],
            summary: "Log every priced item",
            expect: Expect::Fixed,
        },
        Case {
            name: "rust-logging",
            frames: &["shop::main", "shop::price_items", "std::io::stdio::_print", "core::fmt::write"],
            lang: Lang::Rust,
            kind: Kind::Regression,
            function: "shop::price_items",
            files: vec![
                ("Cargo.toml", CARGO_TOML.into()),
                ("src/lib.rs", RUST_LIB_V1.into()),
                ("src/main.rs", RUST_MAIN.into()),
                (".gitignore", "target/\nCargo.lock\n".into()),
                ("fleetprof.toml", rust_cfg),
            ],
            regress: vec![(
                "src/lib.rs",
                with_line(
                    &RUST_LIB_V1.replace("for item in items {", "for (i, item) in items.iter().enumerate() {"),
                    "        total = total.wrapping_add(item * 3);\n",
                    "        println!(\"debug: item {i} -> {total}\");\n",
                ),
            )],
            summary: "Print each item's running total",
            expect: Expect::Fixed,
        },
        Case {
            name: "python-logging",
            frames: &["<module>", "price_items", "logging.Logger.debug", "logging.Logger.isEnabledFor"],
            lang: Lang::Python,
            kind: Kind::Regression,
            function: "price_items",
            files: vec![
                ("svc.py", PY_V1.into()),
                (".gitignore", "__pycache__/\n".into()),
                (
                    "fleetprof.toml",
                    py_cfg("svc.py", "svc", "svc.price_items(range(10)) == 135"),
                ),
            ],
            regress: vec![(
                "svc.py",
                with_line(
                    &PY_V1.replace("for item in items:", "for i, item in enumerate(items):"),
                    "        total += item * 3\n",
                    "        log.debug(\"item %d -> %d\", i, total)\n",
                ),
            )],
            summary: "Debug-log every priced item",
            expect: Expect::Fixed,
        },
        Case {
            name: "java-logging",
            frames: &["Shop.main", "Shop.priceItems", "java.io.PrintStream.println"],
            lang: Lang::Java,
            kind: Kind::Regression,
            function: "priceItems",
            files: vec![
                ("Shop.java", JAVA_V1.into()),
                (".gitignore", "out/\n".into()),
                ("fleetprof.toml", java_cfg("Shop", "total 135")),
            ],
            regress: vec![(
                "Shop.java",
                with_line(
                    JAVA_V1,
                    "            total += items[i] * 3;\n",
                    "            System.err.println(\"debug: item \" + i + \" -> \" + total);\n",
                ),
            )],
            summary: "Print every priced item",
            expect: Expect::Fixed,
        },
        Case {
            name: "go-regex",
            frames: &["main.main", "main.isAPI", "regexp.MustCompile", "regexp/syntax.Parse"],
            lang: Lang::Go,
            kind: Kind::Regression,
            function: "isAPI",
            files: vec![
                ("main.go", GO_RE_V1.into()),
                ("go.mod", go_mod),
                (".gitignore", "svc\n".into()),
                ("fleetprof.toml", go_cfg("api 20")),
            ],
            regress: vec![(
                "main.go",
                GO_RE_V1
                    .replace("var apiPath = regexp.MustCompile(`^/api/v[0-9]+/`)\n\n", "")
                    .replace(
                        "\treturn apiPath.MatchString(p)\n",
                        "\tre := regexp.MustCompile(`^/api/v[0-9]+/`)\n\treturn re.MatchString(p)\n",
                    ),
            )],
            summary: "Inline the API path pattern",
            expect: Expect::Fixed,
        },
        Case {
            name: "python-regex",
            frames: &["<module>", "is_api", "re.compile", "re._compile", "sre_compile.compile"],
            lang: Lang::Python,
            kind: Kind::Regression,
            function: "is_api",
            files: vec![
                ("router.py", PY_RE_V1.into()),
                (".gitignore", "__pycache__/\n".into()),
                (
                    "fleetprof.toml",
                    py_cfg("router.py", "router", "router.is_api(\"/api/v1/x\") and not router.is_api(\"/x\")"),
                ),
            ],
            regress: vec![(
                "router.py",
                PY_RE_V1
                    .replace("API = re.compile(r\"^/api/v[0-9]+/\")\n\n\n", "")
                    .replace(
                        "    return API.match(path) is not None\n",
                        "    pat = re.compile(r\"^/api/v[0-9]+/\")\n    return pat.match(path) is not None\n",
                    ),
            )],
            summary: "Keep the API pattern next to its use",
            expect: Expect::Fixed,
        },
        Case {
            name: "java-regex",
            frames: &["Router.main", "Router.isApi", "java.util.regex.Pattern.compile"],
            lang: Lang::Java,
            kind: Kind::Regression,
            function: "isApi",
            files: vec![
                ("Router.java", JAVA_RE_V1.into()),
                (".gitignore", "out/\n".into()),
                ("fleetprof.toml", java_cfg("Router", "api 20")),
            ],
            regress: vec![(
                "Router.java",
                JAVA_RE_V1
                    .replace(
                        "    private static final Pattern API = Pattern.compile(\"^/api/v[0-9]+/\");\n\n",
                        "",
                    )
                    .replace(
                        "        return API.matcher(p).find();\n",
                        "        Pattern re = Pattern.compile(\"^/api/v[0-9]+/\");\n        return re.matcher(p).find();\n",
                    ),
            )],
            summary: "Compile the API pattern where it is used",
            expect: Expect::Fixed,
        },
        Case {
            name: "rust-memoize-impure",
            frames: &["shop::main", "shop::score"],
            lang: Lang::Rust,
            kind: Kind::Opportunity,
            function: "shop::score",
            files: vec![
                ("Cargo.toml", CARGO_TOML.into()),
                ("src/lib.rs", RUST_IMPURE.into()),
                (".gitignore", "target/\nCargo.lock\n".into()),
                (
                    "fleetprof.toml",
                    config("cargo build --offline --quiet", "cargo test --offline --quiet", "true"),
                ),
            ],
            regress: vec![],
            summary: "",
            expect: Expect::Refused,
        },
    ]
}
