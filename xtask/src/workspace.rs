//! What the workspace contains, from `cargo metadata`: which bench and bin targets exist yet,
//! and where build output goes.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use cargo_metadata::{Metadata, MetadataCommand, TargetKind};

use crate::cmd::workspace_root;

/// The workspace's own packages (no dependency resolution, so this is quick and offline).
pub(crate) fn metadata() -> Result<Metadata> {
    MetadataCommand::new()
        .no_deps()
        .current_dir(workspace_root())
        .exec()
        .context("`cargo metadata` failed")
}

/// Whether `package` has a target called `name` of the given kind (`Bench`, `Bin`, ...).
pub(crate) fn has_target(
    metadata: &Metadata,
    package: &str,
    kind: &TargetKind,
    name: &str,
) -> bool {
    metadata
        .workspace_packages()
        .into_iter()
        .filter(|p| p.name.as_str() == package)
        .flat_map(|p| &p.targets)
        .any(|t| t.name == name && t.kind.contains(kind))
}

/// The directory cargo builds into (honours `CARGO_TARGET_DIR` and `.cargo/config.toml`).
pub(crate) fn target_dir(metadata: &Metadata) -> PathBuf {
    metadata.target_directory.clone().into_std_path_buf()
}
