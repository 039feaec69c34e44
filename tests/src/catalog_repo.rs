//! The catalog service (`tests/templates/catalog`) as a real git repository: one commit of the
//! template, built in release mode, its binary copied outside the work tree. The offense tests
//! profile it and let the agent propose improvements to it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::demo_repo::{commit_as, copy_tree, git};

/// Who wrote the catalog service.
pub const AUTHOR: (&str, &str) = ("Casey Catalog", "casey@example.com");

/// The function that recomputes a pure result per request (memoizable).
pub const HOT_PURE_FUNCTION: &str = "catalog::shipping_rate";

/// The catalog repository and its built binary.
#[derive(Debug)]
pub struct CatalogRepo {
    /// The repository's work tree.
    pub path: PathBuf,
    /// Its one commit (HEAD of `main`).
    pub head: String,
    /// The built binary (copied out of the work tree).
    pub bin: PathBuf,
}

/// Directory of the catalog template.
pub fn template_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("templates")
        .join("catalog")
}

/// `cargo build --release` of a template service's work tree; returns the path of binary `name`.
pub fn build_release(repo: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(repo)
        .args(["build", "--release", "--quiet"])
        // The enclosing cargo's settings must not leak into the service's build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .with_context(|| format!("running cargo build for {name}"))?;
    if !out.status.success() {
        bail!(
            "building {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(repo.join("target/release").join(name))
}

impl CatalogRepo {
    /// Creates the repository under `dir/catalog` (which must not exist), commits the template and
    /// builds it into `dir/bin/catalog`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("catalog");
        let bin_dir = dir.join("bin");
        std::fs::create_dir_all(&path)?;
        std::fs::create_dir_all(&bin_dir)?;
        git(&path, &["init", "-q", "-b", "main"])?;
        copy_tree(&template_dir(), &path)?;
        let head = commit_as(&path, AUTHOR, "catalog: product pages with shipping quotes")?;
        let bin = bin_dir.join("catalog");
        std::fs::copy(build_release(&path, "catalog")?, &bin)?;
        Ok(Self { path, head, bin })
    }
}
