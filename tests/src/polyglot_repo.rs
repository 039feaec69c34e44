//! Services in other languages as real git repositories, built from `tests/templates/polyglot/<lang>`:
//! a first commit of `v1/` by one author, then a second commit overlaying `v2/` (a debug line per
//! priced item in `price_items`'s loop) by another. Both versions are built with the language's
//! Debian toolchain (with frame pointers) and their binaries kept outside the work tree.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::demo_repo::{V1_AUTHOR, V2_AUTHOR, commit_as, copy_tree, git};

/// A language the polyglot fixtures are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// C, built by gcc.
    C,
    /// C++, built by g++.
    Cpp,
    /// Go, built by the go tool.
    Go,
}

impl Lang {
    /// The template folder's name.
    pub fn dir(self) -> &'static str {
        match self {
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::Go => "go",
        }
    }

    /// The service name the fixture runs as.
    pub fn service(self) -> String {
        format!("svc-{}", self.dir())
    }

    /// The build command (also the one in the template's `fleetprof.toml`).
    fn build(self) -> &'static str {
        match self {
            Lang::C => {
                "gcc -O2 -g -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -o svc svc.c"
            }
            Lang::Cpp => {
                "g++ -O2 -g -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -o svc svc.cpp"
            }
            Lang::Go => "go build -o svc .",
        }
    }

    /// The file the regression is in.
    pub fn source_file(self) -> &'static str {
        match self {
            Lang::C => "svc.c",
            Lang::Cpp => "svc.cpp",
            Lang::Go => "main.go",
        }
    }
}

/// A polyglot repository and its two built versions.
#[derive(Debug)]
pub struct PolyglotRepo {
    /// The language.
    pub lang: Lang,
    /// The repository's work tree.
    pub path: PathBuf,
    /// Commit of v1.
    pub v1_commit: String,
    /// Commit of v2 (the root cause).
    pub v2_commit: String,
    /// Built v1 binary.
    pub v1_bin: PathBuf,
    /// Built v2 binary.
    pub v2_bin: PathBuf,
}

/// The environment the Go tool needs when run by a test (a writable build cache).
pub fn go_env() -> Vec<(&'static str, String)> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    vec![
        ("HOME", home.clone()),
        ("GOCACHE", format!("{home}/.cache/go-build")),
        ("GOFLAGS", "-mod=mod".into()),
        ("GOTOOLCHAIN", "local".into()),
    ]
}

fn build(lang: Lang, repo: &Path) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(lang.build()).current_dir(repo);
    if lang == Lang::Go {
        cmd.envs(go_env());
    }
    let out = cmd.output().with_context(|| {
        format!(
            "running `{}` (is the toolchain installed? `cargo xtask setup`)",
            lang.build()
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            lang.build(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(repo.join("svc"))
}

impl PolyglotRepo {
    /// Creates the repository under `dir/<service>` and builds both versions into `dir/bin`.
    pub fn create(dir: &Path, lang: Lang) -> anyhow::Result<Self> {
        let templates = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("templates/polyglot")
            .join(lang.dir());
        Self::create_from(
            dir,
            lang,
            &templates,
            &lang.service(),
            (
                "svc: price carts with volume discounts",
                "Log each priced item at debug level",
            ),
        )
    }

    /// Like [`PolyglotRepo::create`], from another template folder (its `v1/` and `v2/`, with the
    /// language's layout and build), as `service`, the commits titled `subjects`.
    pub fn create_from(
        dir: &Path,
        lang: Lang,
        templates: &Path,
        service: &str,
        subjects: (&str, &str),
    ) -> anyhow::Result<Self> {
        let path = dir.join(service);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&path)?;
        std::fs::create_dir_all(&bin)?;
        git(&path, &["init", "-q", "-b", "main"])?;
        copy_tree(&templates.join("v1"), &path)?;
        let v1_commit = commit_as(&path, V1_AUTHOR, subjects.0)?;
        // Named after the service, so a profiler that falls back to the executable's name (it
        // missed the environment) still files the samples under the service.
        std::fs::create_dir_all(bin.join("v1"))?;
        std::fs::create_dir_all(bin.join("v2"))?;
        let v1_bin = bin.join("v1").join(service);
        std::fs::copy(build(lang, &path)?, &v1_bin)?;
        copy_tree(&templates.join("v2"), &path)?;
        let v2_commit = commit_as(&path, V2_AUTHOR, subjects.1)?;
        let v2_bin = bin.join("v2").join(service);
        std::fs::copy(build(lang, &path)?, &v2_bin)?;
        Ok(Self {
            lang,
            path,
            v1_commit,
            v2_commit,
            v1_bin,
            v2_bin,
        })
    }
}
