//! The seeded regressions: small services in six languages, each a first commit that is fine and a
//! second commit (the known root cause) that adds the cost, with a `fleetprof.toml` whose build and
//! test commands check the service still computes what it did, and a workload to profile.

use super::{Case, Expect, Kind, Lang};

const C_V1: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) long price_items(const long *v, int n)
{
    long total = 0;
    for (int i = 0; i < n; i++) {
        total += v[i] * 3;
    }
    return total;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* `svc N` prices N items once; `svc N SECONDS` keeps pricing them for that long, appending the
   items priced so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of work). */
int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    double seconds = argc > 2 ? atof(argv[2]) : 0;
    long *v = malloc(sizeof(long) * n);
    for (int i = 0; i < n; i++)
        v[i] = i;
    long total = price_items(v, n);
    const char *path = getenv("FLEETPROF_WORK_FILE");
    FILE *work = path && seconds > 0 ? fopen(path, "a") : NULL;
    double start = now(), reported = start;
    unsigned long done = n;
    while (now() - start < seconds) {
        v[0] = (long)done; /* new input each batch, so the call is not hoisted */
        total = price_items(v, n);
        done += n;
        if (work && now() - reported >= 0.1) {
            fprintf(work, "%lu\n", done);
            fflush(work);
            reported = now();
        }
    }
    printf("total %ld\n", total);
    free(v);
    return 0;
}
"#;

const CPP_V1: &str = r#"#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <vector>

__attribute__((noinline)) long price_items(const std::vector<long> &v)
{
    long total = 0;
    for (size_t i = 0; i < v.size(); i++) {
        total += v[i] * 3;
    }
    return total;
}

// `svc N` prices N items once; `svc N SECONDS` keeps pricing them for that long, appending the
// items priced so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of work).
int main(int argc, char **argv)
{
    using clock = std::chrono::steady_clock;
    long n = argc > 1 ? std::atol(argv[1]) : 1000;
    double seconds = argc > 2 ? std::atof(argv[2]) : 0;
    std::vector<long> v(n);
    for (long i = 0; i < n; i++)
        v[i] = i;
    long total = price_items(v);
    const char *path = std::getenv("FLEETPROF_WORK_FILE");
    std::ofstream work;
    if (path && seconds > 0)
        work.open(path, std::ios::app);
    auto start = clock::now(), reported = start;
    unsigned long done = n;
    while (std::chrono::duration<double>(clock::now() - start).count() < seconds) {
        v[0] = static_cast<long>(done); // new input each batch, so the call is not hoisted
        total = price_items(v);
        done += n;
        if (work.is_open() && clock::now() - reported >= std::chrono::milliseconds(100)) {
            work << done << std::endl;
            reported = clock::now();
        }
    }
    std::cout << "total " << total << "\n";
    return 0;
}
"#;

const GO_V1: &str = r#"package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func priceItems(items []int) int {
	total := 0
	for _, it := range items {
		total += it * 3
	}
	return total
}

// `svc N` prices N items once; `svc N SECONDS` keeps pricing them for that long, appending the
// items priced so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of work).
func main() {
	n := 1000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	seconds := 0.0
	if len(os.Args) > 2 {
		seconds, _ = strconv.ParseFloat(os.Args[2], 64)
	}
	var work *os.File
	if path := os.Getenv("FLEETPROF_WORK_FILE"); path != "" && seconds > 0 {
		work, _ = os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	}
	start := time.Now()
	reported := start
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	total := priceItems(items)
	done := n
	for time.Since(start).Seconds() < seconds {
		items[0] = done
		total = priceItems(items)
		done += n
		if work != nil && time.Since(reported) >= 100*time.Millisecond {
			fmt.Fprintln(work, done)
			reported = time.Now()
		}
	}
	fmt.Printf("total %d\n", total)
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

const RUST_MAIN: &str = r#"use std::io::Write;
use std::time::{Duration, Instant};

/// `shop N` prices N items once; `shop N SECONDS` keeps pricing them for that long, appending the
/// items priced so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of work).
fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0.0);
    let mut v: Vec<u64> = (0..n).collect();
    let mut total = shop::price_items(&v);
    let mut work = std::env::var_os("FLEETPROF_WORK_FILE")
        .filter(|_| seconds > 0.0)
        .and_then(|p| std::fs::OpenOptions::new().append(true).create(true).open(p).ok());
    let start = Instant::now();
    let mut reported = start;
    let mut done = n;
    while start.elapsed().as_secs_f64() < seconds {
        v[0] = done;
        total = shop::price_items(&v);
        done += n;
        if reported.elapsed() >= Duration::from_millis(100) {
            if let Some(w) = work.as_mut() {
                let _ = writeln!(w, "{done}");
            }
            reported = Instant::now();
        }
    }
    println!("total {total}");
}
"#;

const PY_V1: &str = r#""""A pricing service.

`svc.py N` prices N items once; `svc.py N SECONDS` keeps pricing them for that long, appending the
items priced so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of work).
"""
import logging
import os
import sys
import time

log = logging.getLogger(__name__)


def price_items(items):
    total = 0
    for item in items:
        total += item * 3
    return total


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    total = price_items(range(n))
    path = os.environ.get("FLEETPROF_WORK_FILE") if seconds > 0 else None
    work = open(path, "a") if path else None
    start = reported = time.monotonic()
    done = n
    while time.monotonic() - start < seconds:
        total = price_items(range(n))
        done += n
        if work and time.monotonic() - reported >= 0.1:
            work.write(f"{done}\n")
            work.flush()
            reported = time.monotonic()
    print("total", total)


if __name__ == "__main__":
    main()
"#;

const JAVA_V1: &str = r#"/** `Shop N` prices N items once; `Shop N SECONDS` keeps pricing them for that long, appending the
 *  items priced so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of work). */
public class Shop {
    static long priceItems(long[] items) {
        long total = 0;
        for (int i = 0; i < items.length; i++) {
            total += items[i] * 3;
        }
        return total;
    }

    public static void main(String[] args) throws java.io.IOException {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 1000;
        double seconds = args.length > 1 ? Double.parseDouble(args[1]) : 0;
        String path = System.getenv("FLEETPROF_WORK_FILE");
        java.io.FileWriter work = path != null && seconds > 0 ? new java.io.FileWriter(path, true) : null;
        long start = System.nanoTime(), reported = start;
        long[] items = new long[n];
        for (int i = 0; i < n; i++) {
            items[i] = i;
        }
        long total = priceItems(items);
        long done = n;
        while (System.nanoTime() - start < seconds * 1e9) {
            items[0] = done;
            total = priceItems(items);
            done += n;
            if (work != null && System.nanoTime() - reported >= 100_000_000L) {
                work.write(done + "\n");
                work.flush();
                reported = System.nanoTime();
            }
        }
        System.out.println("total " + total);
    }
}
"#;

const GO_RE_V1: &str = r#"package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"
)

var apiPath = regexp.MustCompile(`^/api/v[0-9]+/`)

//go:noinline
func isAPI(p string) bool {
	return apiPath.MatchString(p)
}

// `svc N` routes N rounds of paths once; `svc N SECONDS` keeps routing them for that long,
// appending the rounds done so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of
// work).
func main() {
	n := 1000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	seconds := 0.0
	if len(os.Args) > 2 {
		seconds, _ = strconv.ParseFloat(os.Args[2], 64)
	}
	var work *os.File
	if path := os.Getenv("FLEETPROF_WORK_FILE"); path != "" && seconds > 0 {
		work, _ = os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	}
	start := time.Now()
	reported := start
	paths := []string{"/api/v1/items", "/static/app.js", "/api/v2/users"}
	count, done := 0, 0
	for {
		for i := 0; i < n; i++ {
			for _, p := range paths {
				if isAPI(p) {
					count++
				}
			}
		}
		done += n
		if time.Since(start).Seconds() >= seconds {
			break
		}
		if work != nil && time.Since(reported) >= 100*time.Millisecond {
			fmt.Fprintln(work, done)
			reported = time.Now()
		}
	}
	fmt.Printf("api %d\n", count)
}
"#;

const PY_RE_V1: &str = r#""""Routes requests.

`router.py N` routes N rounds of paths once; `router.py N SECONDS` keeps routing them for that long,
appending the rounds done so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of work).
"""
import os
import re
import sys
import time

API = re.compile(r"^/api/v[0-9]+/")


def is_api(path):
    return API.match(path) is not None


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    paths = ["/api/v1/items", "/static/app.js", "/api/v2/users"]
    path = os.environ.get("FLEETPROF_WORK_FILE") if seconds > 0 else None
    work = open(path, "a") if path else None
    start = reported = time.monotonic()
    count = done = 0
    while True:
        count += sum(1 for _ in range(n) for p in paths if is_api(p))
        done += n
        if time.monotonic() - start >= seconds:
            break
        if work and time.monotonic() - reported >= 0.1:
            work.write(f"{done}\n")
            work.flush()
            reported = time.monotonic()
    print("api", count)


if __name__ == "__main__":
    main()
"#;

const JAVA_RE_V1: &str = r#"import java.util.regex.Pattern;

/** `Router N` routes N rounds of paths once; `Router N SECONDS` keeps routing them for that long,
 *  appending the rounds done so far to $FLEETPROF_WORK_FILE every 100 ms (the profiler's unit of
 *  work). */
public class Router {
    private static final Pattern API = Pattern.compile("^/api/v[0-9]+/");

    static boolean isApi(String p) {
        return API.matcher(p).find();
    }

    public static void main(String[] args) throws java.io.IOException {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 1000;
        double seconds = args.length > 1 ? Double.parseDouble(args[1]) : 0;
        String path = System.getenv("FLEETPROF_WORK_FILE");
        java.io.FileWriter work = path != null && seconds > 0 ? new java.io.FileWriter(path, true) : null;
        long start = System.nanoTime(), reported = start;
        String[] paths = {"/api/v1/items", "/static/app.js", "/api/v2/users"};
        int count = 0;
        long done = 0;
        while (true) {
            for (int i = 0; i < n; i++) {
                for (String p : paths) {
                    if (isApi(p)) {
                        count++;
                    }
                }
            }
            done += n;
            if (System.nanoTime() - start >= seconds * 1e9) {
                break;
            }
            if (work != null && System.nanoTime() - reported >= 100_000_000L) {
                work.write(done + "\n");
                work.flush();
                reported = System.nanoTime();
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
        "./svc 100000 60 2>/dev/null",
    );
    let cpp_cfg = config(
        "g++ -O2 -g -Wall -o svc svc.cpp",
        "./svc 10 2>/dev/null | grep -qx 'total 135'",
        "./svc 10000 60 2>/dev/null",
    );
    let go_cfg = |expect: &str, batch: &str| {
        config(
            "go build -o svc .",
            &format!("./svc 10 2>/dev/null | grep -qx '{expect}'"),
            &format!("./svc {batch} 60 2>/dev/null"),
        )
    };
    let rust_cfg = config(
        "cargo build --offline --quiet",
        "cargo test --offline --quiet",
        "./target/debug/shop 100000 60 >/dev/null",
    );
    let java_cfg = |class: &str, expect: &str| {
        config(
            &format!("javac -d out {class}.java"),
            &format!("java -cp out {class} 10 2>/dev/null | grep -qx '{expect}'"),
            &format!("java -cp out {class} 100000 60 2>/dev/null"),
        )
    };
    let py_cfg = |file: &str, module: &str, check: &str| {
        config(
            &format!("python3 -m py_compile {file}"),
            &format!("python3 -c 'import {module}; assert {check}'"),
            &format!("python3 {file} 10000 60 2>/dev/null"),
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
            function: "price_items(std::vector<long, std::allocator<long> > const&)",
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
            function: "main.priceItems",
            files: vec![
                ("main.go", GO_V1.into()),
                ("go.mod", go_mod.clone()),
                (".gitignore", "svc\n".into()),
                ("fleetprof.toml", go_cfg("total 135", "10000")),
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
            function: "main.isAPI",
            files: vec![
                ("main.go", GO_RE_V1.into()),
                ("go.mod", go_mod),
                (".gitignore", "svc\n".into()),
                ("fleetprof.toml", go_cfg("api 20", "1000")),
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
