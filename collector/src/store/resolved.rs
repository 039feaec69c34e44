//! Names the symbol store found for frames hosts sent unnamed, where the ingest writer sees them.
//!
//! A host that cannot name a frame sends `module+0xOFFSET` (a stripped binary), and keeps doing
//! so after the collector named it from an uploaded file or debuginfod
//! ([`crate::symbols::resolve_stored`]). Without this table every batch written after such a
//! rename would add its rollup rows (`function_minutes`) under the offset name again, and
//! `query top` and detection would show the offset names back. With it, the writer names those
//! frames itself before writing a batch, so its frames, stacks and rollups carry the name.
//!
//! The lock also orders a rename against the writer: the writer holds it shared from naming a
//! group's batches until their rows are written ([`ResolvedNames::read`]); the resolver holds it
//! exclusively while it publishes new names and re-attributes the stored rollups
//! ([`ResolvedNames::write`]). So every batch is either counted by the resolver's re-attribution
//! (written before) or written under the new names (after), never both and never neither.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::model::{Batch, StoredFrame};

/// What the symbol store says a frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedName {
    /// Function name (the innermost, when inlined).
    pub function: String,
    /// Source file, or empty.
    pub file: String,
    /// Source line, or 0.
    pub line: u32,
}

/// Resolved names by build-id, then file offset.
pub type NameTable = HashMap<String, HashMap<u64, ResolvedName>>;

/// The names shared by a [`super::Store`]'s clones (the writer and the resolver of one `serve`).
#[derive(Debug, Default, Clone)]
pub struct ResolvedNames {
    table: Arc<RwLock<NameTable>>,
}

impl ResolvedNames {
    /// Shared access, held by the writer from [`name_batch`] until the batches' rows are written.
    pub async fn read(&self) -> RwLockReadGuard<'_, NameTable> {
        self.table.read().await
    }

    /// Exclusive access, held by the resolver while it publishes names and re-attributes rollups.
    pub async fn write(&self) -> RwLockWriteGuard<'_, NameTable> {
        self.table.write().await
    }
}

/// Whether `function` is the name ingest gives a frame the host could not name.
fn is_offset_name(function: &str, module_offset: u64) -> bool {
    function
        .strip_suffix(&format!("{module_offset:#x}"))
        .is_some_and(|rest| rest.ends_with('+'))
}

/// The name `names` gives `frame`, if the host sent it unnamed (`module+0x…`) and the store knows it.
fn resolved<'a>(names: &'a NameTable, frame: &StoredFrame) -> Option<&'a ResolvedName> {
    if frame.kernel || frame.build_id.is_empty() || !frame.file.is_empty() {
        return None;
    }
    names
        .get(frame.build_id.as_str())?
        .get(&frame.module_offset)
        .filter(|n| !n.function.is_empty() && is_offset_name(&frame.function, frame.module_offset))
}

/// Whether `batch` has a frame [`name_batch`] would name (a cheap look before copying it).
pub fn needs_names(names: &NameTable, batch: &Batch) -> bool {
    !names.is_empty() && batch.frames.iter().any(|f| resolved(names, f).is_some())
}

/// Names `batch`'s unnamed frames that `names` knows, in its frames and in its stacks' function
/// lists (frame ids stay: they are the ids the host's frames always map to, and the stored
/// frame and stack rows under those ids carry the same names since the resolver's rename).
/// Returns how many frames it named.
pub fn name_batch(names: &NameTable, batch: &mut Batch) -> usize {
    if names.is_empty() {
        return 0;
    }
    let mut renamed: HashMap<u64, Arc<str>> = HashMap::new();
    for frame in &mut batch.frames {
        let Some(name) = resolved(names, frame) else {
            continue;
        };
        frame.function.clone_from(&name.function);
        frame.file.clone_from(&name.file);
        frame.line = name.line;
        renamed.insert(frame.frame_id, Arc::from(name.function.as_str()));
    }
    if !renamed.is_empty() {
        for stack in &mut batch.stacks {
            for (id, function) in stack.frame_ids.iter().zip(stack.functions.iter_mut()) {
                if let Some(name) = renamed.get(id) {
                    *function = Arc::clone(name);
                }
            }
        }
    }
    renamed.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StackInfo, StoredFrame};

    fn frame(id: u64, function: &str, build_id: &str, offset: u64, file: &str) -> StoredFrame {
        StoredFrame {
            frame_id: id,
            function: function.into(),
            module: "/opt/svc/bin".into(),
            build_id: build_id.into(),
            file: file.into(),
            module_offset: offset,
            ..StoredFrame::default()
        }
    }

    /// An offset-named frame the store knows is named in the frame and in every stack through
    /// it; frames the host named, other builds and unknown offsets are left as they are.
    #[test]
    fn known_offsets_are_named_in_frames_and_stacks() {
        let mut names = NameTable::new();
        names.entry("b1".into()).or_default().insert(
            0x11d5,
            ResolvedName {
                function: "hot_c".into(),
                file: "w.c".into(),
                line: 23,
            },
        );
        let mut batch = Batch {
            frames: vec![
                frame(1, "bin+0x11d5", "b1", 0x11d5, ""),
                frame(2, "main", "b1", 0x1000, "w.c"),
                frame(3, "bin+0x11d5", "b2", 0x11d5, ""),
                frame(4, "bin+0x1214", "b1", 0x1214, ""),
            ],
            stacks: vec![StackInfo {
                stack_id: 9,
                frame_ids: vec![2, 1, 4],
                functions: vec!["main".into(), "bin+0x11d5".into(), "bin+0x1214".into()],
            }],
            ..Batch::default()
        };
        assert!(needs_names(&names, &batch));
        assert_eq!(name_batch(&names, &mut batch), 1);
        assert_eq!(
            (
                batch.frames[0].function.as_str(),
                batch.frames[0].file.as_str(),
                batch.frames[0].line
            ),
            ("hot_c", "w.c", 23)
        );
        assert_eq!(batch.frames[2].function, "bin+0x11d5", "another build");
        assert_eq!(
            batch.frames[3].function, "bin+0x1214",
            "an offset not resolved"
        );
        let stack: Vec<&str> = batch.stacks[0].functions.iter().map(|f| &**f).collect();
        assert_eq!(stack, ["main", "hot_c", "bin+0x1214"]);
        assert!(!needs_names(&names, &batch), "named once");
        assert!(!needs_names(&NameTable::new(), &batch));
    }
}
