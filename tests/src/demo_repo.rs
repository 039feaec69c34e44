//! The demo service as a real git repository with history, built from `tests/templates/checkout`:
//! a first commit of `v1/` by one author, then a second commit overlaying a `v2-*` variant by
//! another. Both versions are built and their binaries kept outside the work tree.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Who wrote the fast first version.
pub const V1_AUTHOR: (&str, &str) = ("Avery Author", "avery@example.com");
/// Who wrote the commit that made it slower.
pub const V2_AUTHOR: (&str, &str) = ("Dana Developer", "dana@example.com");

/// Which second commit to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regression {
    /// Formatted debug logging in `price_items`'s loop (the demo).
    Logging,
    /// About 25% more work in `discounted_price` (a modest regression).
    SlowerDiscount,
}

impl Regression {
    fn template_dir(self) -> &'static str {
        match self {
            Regression::Logging => "v2-logging",
            Regression::SlowerDiscount => "v2-slower",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Regression::Logging => "Log each priced line at debug level",
            Regression::SlowerDiscount => "Add three loyalty discount tiers",
        }
    }

    /// The function the second commit made slower.
    pub fn regressed_function(self) -> &'static str {
        match self {
            Regression::Logging => "checkout::price_items",
            Regression::SlowerDiscount => "checkout::discounted_price",
        }
    }
}

/// The demo repository and its two built versions.
#[derive(Debug)]
pub struct DemoRepo {
    /// The repository's work tree.
    pub path: PathBuf,
    /// Commit of v1.
    pub v1_commit: String,
    /// Commit of v2 (the root cause).
    pub v2_commit: String,
    /// Built v1 binary (copied out of the work tree).
    pub v1_bin: PathBuf,
    /// Built v2 binary.
    pub v2_bin: PathBuf,
    /// The regression the second commit introduced.
    pub regression: Regression,
}

/// Directory of the checkout templates.
pub fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("templates")
        .join("checkout")
}

/// Copies the files under `from` into `to` (recursively), overwriting files that exist.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying to {}", target.display()))?;
        }
    }
    Ok(())
}

/// Runs git in `repo` and returns its trimmed stdout.
pub fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(repo)
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Commits everything in `repo`'s work tree as `(name, email)` (author and committer) with message
/// `title`; returns the new commit.
pub fn commit_as(repo: &Path, (name, email): (&str, &str), title: &str) -> anyhow::Result<String> {
    git(repo, &["add", "-A"])?;
    let out = Command::new("git")
        .current_dir(repo)
        .args([
            "-c",
            &format!("user.name={name}"),
            "-c",
            &format!("user.email={email}"),
            "commit",
            "-q",
            "-m",
            title,
        ])
        .env("GIT_COMMITTER_NAME", name)
        .env("GIT_COMMITTER_EMAIL", email)
        .output()
        .context("git commit")?;
    if !out.status.success() {
        bail!(
            "git commit failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    git(repo, &["rev-parse", "HEAD"])
}

/// `cargo build --release` of the work tree; returns the binary's path.
fn build(repo: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(repo)
        .args(["build", "--release", "--quiet"])
        // The enclosing cargo's settings must not leak into the service's build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .context("running cargo build for the demo service")?;
    if !out.status.success() {
        bail!(
            "building the demo service failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(repo.join("target/release/checkout"))
}

impl DemoRepo {
    /// Creates the repository under `dir/checkout` (which must not exist) and builds both versions
    /// into `dir/bin`.
    pub fn create(dir: &Path, regression: Regression) -> anyhow::Result<Self> {
        let path = dir.join("checkout");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&path)?;
        std::fs::create_dir_all(&bin)?;
        let templates = templates_dir();
        git(&path, &["init", "-q", "-b", "main"])?;
        copy_tree(&templates.join("v1"), &path)?;
        let v1_commit = commit_as(
            &path,
            V1_AUTHOR,
            "checkout: price carts with volume discounts",
        )?;
        let v1_bin = bin.join("checkout-v1");
        std::fs::copy(build(&path)?, &v1_bin)?;
        copy_tree(&templates.join(regression.template_dir()), &path)?;
        let v2_commit = commit_as(&path, V2_AUTHOR, regression.title())?;
        let v2_bin = bin.join("checkout-v2");
        std::fs::copy(build(&path)?, &v2_bin)?;
        Ok(Self {
            path,
            v1_commit,
            v2_commit,
            v1_bin,
            v2_bin,
            regression,
        })
    }
}
