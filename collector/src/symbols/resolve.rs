//! Naming stored frames from the symbol store, and writing the names back.
//!
//! A frame the host could not name is stored as `module+0xOFFSET` with its build-id and file
//! offset. [`resolve_stored`] finds such frames whose build-id has a stored debug file (fetching
//! it from debuginfod when configured), resolves each (build-id, offset) once per file quality
//! with blazesym, records the answer in `symbolized_frames`, and rewrites the names in place
//! with mutations (`ALTER TABLE ... UPDATE`, which ClickHouse 18.16 has): `frames` by frame id,
//! `stacks` by frame id position, `samples` by name within the affected stacks. Every existing
//! query (top, flame graphs, detection, the agent, the UI) reads `samples.functions`, so they
//! all see the names without a change, and no batch is re-sent. On a database laid out over a
//! cluster the mutations run on every node's local tables ([`DataNodes`]).
//!
//! Lists are matched with `col IN (SELECT arrayJoin(CAST(? AS Array(T))))`, not `has(?, col)`:
//! 18.16 evaluates `has` with a constant array by scanning the array for every row, while `IN`
//! builds a hash set once (see [`crate::regressions`]' reader). The `CAST` gives the set the
//! column's type — the client writes `[1, 2]`, which 18.16 types `Array(UInt8)` and then refuses
//! to compare with a `UInt64` column (in a mutation, failing in the background forever) — and
//! keeps an empty list valid.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::SymbolsError;
use super::debuginfod::Debuginfod;
use super::store::{Quality, SymbolStore};
use crate::store::cluster::DataNodes;
use crate::store::{ResolvedName, Store};

/// Frames renamed per mutation: keeps each `ALTER` well under ClickHouse's 256 KiB query size.
const FRAMES_PER_MUTATION: usize = 500;
/// Stack ids per `samples` mutation, for the same reason.
const STACKS_PER_MUTATION: usize = 4000;
/// How long a pass waits for ClickHouse to apply its renames before giving up.
const MUTATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// What one [`resolve_stored`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResolveReport {
    /// Build-ids of unnamed frames that had a debug file.
    pub build_ids_with_symbols: usize,
    /// Build-ids of unnamed frames without one (not stored, not found on debuginfod).
    pub build_ids_without_symbols: usize,
    /// (build-id, offset) pairs resolved with blazesym in this pass.
    pub addresses_resolved: usize,
    /// Of those, how many no symbol covered.
    pub addresses_unknown: usize,
    /// Stored frames renamed.
    pub frames_renamed: usize,
    /// Sample rows renamed (including rows of batches that arrived after their frame was named).
    pub sample_rows_renamed: u64,
}

#[derive(Row, Deserialize)]
struct CandidateRow {
    frame_id: u64,
    function: String,
    module: String,
    build_id: String,
    module_offset: u64,
    file: String,
    line: u32,
}

#[derive(Row, Serialize, Deserialize, Clone)]
struct SymbolizedRow {
    build_id: String,
    module_offset: u64,
    quality: u8,
    function: String,
    file: String,
    line: u32,
    inlined: Vec<String>,
    resolved: u32,
}

fn is_offset_name(row: &CandidateRow) -> bool {
    row.file.is_empty()
        && row
            .function
            .ends_with(&format!("+{:#x}", row.module_offset))
}

/// Names stored frames from the symbol store (and debuginfod, when given), as described in the
/// module documentation. Safe to run repeatedly and concurrently with ingest: what is already
/// resolved at the stored file's quality is not resolved again, and frames the host named are
/// never touched.
pub async fn resolve_stored(
    store: &Store,
    symbols: &SymbolStore,
    debuginfod: Option<&Debuginfod>,
) -> Result<ResolveReport, SymbolsError> {
    let mut report = ResolveReport::default();
    if debuginfod.is_none() && !symbols.dir().exists() {
        // Nothing uploaded and nowhere to fetch from: nothing to name.
        return Ok(report);
    }
    // One pass at a time per store (`serve` and `symbols upload` may both run one): two passes
    // renaming the same rows would count them twice in `function_minutes`.
    let _lock = symbols.lock().await?;
    // On a cluster the renames run on every node's local tables (18.16 refuses mutations on a
    // Distributed table); reads and inserts below go through the Distributed tables.
    let nodes = store.data_nodes().await?;
    if !nodes.wait_for_mutations(MUTATION_TIMEOUT).await? {
        return Err(SymbolsError::MutationsPending);
    }
    // Frames still named by offset, and frames this resolver renamed before (which a better
    // file may rename again). `GLOBAL`: on a cluster 18.16 makes an `IN` over a one-shard
    // Distributed table (`symbolized_frames`) global only when told, and each shard would look
    // the subquery's table up in its `default` database.
    let rows: Vec<CandidateRow> = store
        .client()
        .query(
            "SELECT DISTINCT frame_id, function, module, build_id, module_offset, file, line FROM frames \
             WHERE kernel = 0 AND build_id != '' AND ((file = '' AND position(function, '+0x') > 0) \
             OR (build_id, module_offset) GLOBAL IN (SELECT build_id, module_offset FROM symbolized_frames))",
        )
        .fetch_all()
        .await
        .map_err(SymbolsError::ch("reading unnamed frames"))?;
    if rows.is_empty() {
        return Ok(report);
    }
    let build_ids: Vec<String> = rows
        .iter()
        .map(|r| r.build_id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let known: Vec<SymbolizedRow> = store
        .client()
        .query(
            "SELECT build_id, module_offset, toUInt8(max(quality)) AS best_quality, \
             argMax(function, quality) AS function, argMax(file, quality) AS file, \
             argMax(line, quality) AS line, argMax(inlined, quality) AS inlined, \
             toUInt32(max(resolved)) AS last_resolved \
             FROM symbolized_frames WHERE build_id IN (SELECT arrayJoin(CAST(? AS Array(String)))) GROUP BY build_id, module_offset",
        )
        .bind(&build_ids)
        .fetch_all()
        .await
        .map_err(SymbolsError::ch("reading symbolized_frames"))?;
    let mut known: HashMap<(String, u64), SymbolizedRow> = known
        .into_iter()
        .map(|r| ((r.build_id.clone(), r.module_offset), r))
        .collect();

    let mut by_build: HashMap<&str, Vec<&CandidateRow>> = HashMap::new();
    for row in &rows {
        if is_offset_name(row) || known.contains_key(&(row.build_id.clone(), row.module_offset)) {
            by_build.entry(&row.build_id).or_default().push(row);
        }
    }
    let mut fresh: Vec<SymbolizedRow> = Vec::new();
    for (build_id, frames) in &by_build {
        let mut file = symbols.get(build_id)?;
        if file.is_none()
            && let Some(d) = debuginfod
        {
            file = d.fetch(symbols, build_id).await?;
        }
        let Some(file) = file else {
            report.build_ids_without_symbols += 1;
            continue;
        };
        report.build_ids_with_symbols += 1;
        let quality = file.quality;
        let mut offsets: Vec<u64> = frames
            .iter()
            .map(|f| f.module_offset)
            .filter(|&o| {
                known
                    .get(&(build_id.to_string(), o))
                    .is_none_or(|k| k.quality < quality as u8)
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if offsets.is_empty() {
            continue;
        }
        offsets.sort_unstable();
        let path = file.path.clone();
        let build = build_id.to_string();
        let resolved =
            tokio::task::spawn_blocking(move || symbolize(&path, &build, &offsets, quality))
                .await
                .map_err(|e| SymbolsError::Symbolize {
                    file: file.path.display().to_string(),
                    reason: e.to_string(),
                })??;
        for row in resolved {
            report.addresses_resolved += 1;
            if row.function.is_empty() {
                report.addresses_unknown += 1;
            }
            known.insert((row.build_id.clone(), row.module_offset), row.clone());
            fresh.push(row);
        }
    }
    if !fresh.is_empty() {
        let mut insert = store
            .client()
            .insert::<SymbolizedRow>("symbolized_frames")
            .await
            .map_err(SymbolsError::ch("recording resolved frames"))?;
        for row in &fresh {
            insert
                .write(row)
                .await
                .map_err(SymbolsError::ch("recording resolved frames"))?;
        }
        insert
            .end()
            .await
            .map_err(SymbolsError::ch("recording resolved frames"))?;
    }

    // Re-attribute what the writer stored under the old names and publish the new ones to it in
    // one step, with the writer held off (see `ResolvedNames`); nothing is published on error.
    let mut names = store.resolved_names().write().await;
    let mut finish = Vec::new();
    for (build_id, frames) in &by_build {
        let renames: Vec<Rename> = frames
            .iter()
            .filter_map(|row| {
                let k = known.get(&(row.build_id.clone(), row.module_offset))?;
                if k.function.is_empty() {
                    return None;
                }
                // Samples of batches ingested after an earlier rename still carry the name the
                // host sent (the frame and stack rows are written once, the samples each time).
                let mut olds = vec![offset_name(&row.module, row.module_offset)];
                if row.function != k.function && !olds.contains(&row.function) {
                    olds.push(row.function.clone());
                }
                Some(Rename {
                    frame_id: row.frame_id,
                    olds,
                    frame_changed: k.function != row.function
                        || k.file != row.file
                        || k.line != row.line,
                    function: k.function.clone(),
                    file: k.file.clone(),
                    line: k.line,
                })
            })
            .collect();
        report.frames_renamed += renames.iter().filter(|r| r.frame_changed).count();
        for chunk in renames.chunks(FRAMES_PER_MUTATION) {
            let (rows, olds) = write_back_start(store, &nodes, chunk).await?;
            report.sample_rows_renamed += rows;
            if rows > 0 {
                finish.push((build_id, olds));
            }
        }
    }
    for row in by_build.values().flatten() {
        if let Some(k) = known.get(&(row.build_id.clone(), row.module_offset))
            && !k.function.is_empty()
        {
            names.entry(row.build_id.clone()).or_default().insert(
                row.module_offset,
                ResolvedName {
                    function: k.function.clone(),
                    file: k.file.clone(),
                    line: k.line,
                },
            );
        }
    }
    // From here on the writer names these frames itself; what it wrote before is counted above.
    drop(names);
    for (build_id, olds) in finish {
        write_back_finish(store, &nodes, build_id, &olds).await?;
    }
    Ok(report)
}

/// The name ingest gives a frame the host could not name (see `ingest::validate`).
fn offset_name(module: &str, offset: u64) -> String {
    let base = module.rsplit('/').next().unwrap_or("");
    let base = if base.is_empty() { "[unknown]" } else { base };
    format!("{base}+{offset:#x}")
}

struct Rename {
    frame_id: u64,
    /// Names the frame may carry in `samples`: the host's `module+0x…`, and an earlier,
    /// worse name.
    olds: Vec<String>,
    /// The `frames` row itself needs the new name.
    frame_changed: bool,
    function: String,
    file: String,
    line: u32,
}

/// Resolves `offsets` (file offsets, sorted) of `build_id` from the debug file at `path`.
fn symbolize(
    path: &PathBuf,
    build_id: &str,
    offsets: &[u64],
    quality: Quality,
) -> Result<Vec<SymbolizedRow>, SymbolsError> {
    let symbolizer = Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build();
    let data = std::fs::read(path).map_err(SymbolsError::io(path))?;
    let layout = load_layout(&data).map_err(|reason| SymbolsError::Symbolize {
        file: path.display().to_string(),
        reason,
    })?;
    // Offsets outside every segment get an address no symbol covers (reported as unknown).
    let virt: Vec<u64> = offsets
        .iter()
        .map(|&o| file_offset_to_virt(&layout, o).unwrap_or(u64::MAX))
        .collect();
    let src = Source::Elf(Elf::new(path));
    let syms = symbolizer
        .symbolize(&src, Input::VirtOffset(&virt))
        .map_err(|e| SymbolsError::Symbolize {
            file: path.display().to_string(),
            reason: format!("{e:#}"),
        })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    Ok(offsets
        .iter()
        .zip(syms.iter())
        .map(|(&offset, sym)| {
            let mut row = SymbolizedRow {
                build_id: build_id.to_owned(),
                module_offset: offset,
                quality: quality as u8,
                function: String::new(),
                file: String::new(),
                line: 0,
                inlined: Vec::new(),
                resolved: now,
            };
            if let Symbolized::Sym(sym) = sym {
                // One stored frame per address: it carries the innermost function (the code
                // that was running), with the outer chain kept in `inlined`.
                row.inlined = sym.inlined.iter().map(|i| i.name.to_string()).collect();
                let (name, code) = match sym.inlined.last() {
                    Some(inner) => (inner.name.to_string(), inner.code_info.as_ref()),
                    None => (sym.name.to_string(), sym.code_info.as_deref()),
                };
                row.function = name;
                if let Some(code) = code {
                    row.file = code.to_path().to_string_lossy().into_owned();
                    row.line = code.line.unwrap_or(0);
                }
            }
            row
        })
        .collect())
}

/// A loadable segment as laid out in the original binary: (file offset, virtual address, size).
type Segment = (u64, u64, u64);

/// The loadable segments of an ELF file as the original binary laid them out.
///
/// Frames carry file offsets in the binary the host ran. In an unstripped binary the program
/// headers say where each segment was in the file. A debug file (`objcopy --only-keep-debug`)
/// keeps the program headers' addresses, sizes and alignment but zeroes the file sizes and
/// rewrites the offsets, so the offsets are reconstructed the way linkers lay segments out:
/// one after another, each at the first offset past the previous one that is congruent to its
/// address modulo its alignment (which the ELF specification requires). That is exact for
/// binaries linked by GNU ld, gold and lld, whose segments have no gaps beyond that alignment.
fn load_layout(data: &[u8]) -> Result<Vec<Segment>, String> {
    use object::{Object, ObjectSegment};
    let file = object::File::parse(data).map_err(|e| format!("not an ELF file ({e})"))?;
    let segments: Vec<_> = file.segments().collect();
    let stripped_contents = segments
        .iter()
        .any(|s| s.size() > 0 && s.file_range().1 == 0);
    let mut layout = Vec::new();
    let mut end = 0u64;
    for s in &segments {
        let (offset, size) = if stripped_contents {
            let align = s.align().max(1);
            let want = s.address() % align;
            let mut offset = end - end % align + want;
            if offset < end {
                offset += align;
            }
            (offset, s.size())
        } else {
            let (offset, filesz) = s.file_range();
            (offset, filesz)
        };
        end = offset + size;
        layout.push((offset, s.address(), size));
    }
    Ok(layout)
}

fn file_offset_to_virt(layout: &[Segment], offset: u64) -> Option<u64> {
    layout
        .iter()
        .find(|&&(start, _, size)| offset >= start && offset < start + size)
        .map(|&(start, addr, _)| offset - start + addr)
}

#[derive(Row, Deserialize)]
struct StackIdRow {
    stack_id: u64,
}

#[derive(Row, Deserialize)]
struct CountRow {
    n: u64,
}

/// Rewrites the names of `renames` in `frames` and `stacks` (the mutations on every server of
/// `nodes`) and adds their stored samples to `function_minutes` under the new names; returns the
/// sample rows renamed and the old names, whose `function_minutes` rows
/// [`write_back_finish`] drops once the mutations are applied. Run while holding the
/// [`crate::store::ResolvedNames`] lock exclusively (see there why).
async fn write_back_start(
    store: &Store,
    nodes: &DataNodes,
    renames: &[Rename],
) -> Result<(u64, Vec<String>), SymbolsError> {
    let client = store.client();
    let changed: Vec<&Rename> = renames.iter().filter(|r| r.frame_changed).collect();
    if !changed.is_empty() {
        let ids: Vec<u64> = changed.iter().map(|r| r.frame_id).collect();
        let functions: Vec<&str> = changed.iter().map(|r| r.function.as_str()).collect();
        let files: Vec<&str> = changed.iter().map(|r| r.file.as_str()).collect();
        let lines: Vec<u32> = changed.iter().map(|r| r.line).collect();
        nodes
            .alter(
                "frames",
                "UPDATE function = transform(frame_id, ?, ?, function), \
                 file = transform(frame_id, ?, ?, file), \
                 line = toUInt32(if(has(?, frame_id), arrayElement(?, indexOf(?, frame_id)), line)) \
                 WHERE frame_id IN (SELECT arrayJoin(CAST(? AS Array(UInt64))))",
                |q| {
                    q.bind(&ids)
                        .bind(&functions)
                        .bind(&ids)
                        .bind(&files)
                        .bind(&ids)
                        .bind(&lines)
                        .bind(&ids)
                        .bind(&ids)
                },
            )
            .await?;
    }
    let ids: Vec<u64> = renames.iter().map(|r| r.frame_id).collect();
    let functions: Vec<&str> = renames.iter().map(|r| r.function.as_str()).collect();
    // Old name -> new name; unambiguous within one build-id.
    let mut olds: Vec<&str> = Vec::new();
    let mut news: Vec<&str> = Vec::new();
    for r in renames {
        for old in &r.olds {
            olds.push(old);
            news.push(&r.function);
        }
    }
    let stacks: Vec<StackIdRow> = client
        .query("SELECT DISTINCT stack_id FROM stacks WHERE hasAny(frame_ids, ?)")
        .bind(&ids)
        .fetch_all()
        .await
        .map_err(SymbolsError::ch("reading the stacks of renamed frames"))?;
    let stacks: Vec<u64> = stacks.into_iter().map(|s| s.stack_id).collect();
    let mut renamed_rows = 0;
    for chunk in stacks.chunks(STACKS_PER_MUTATION) {
        // Only the stacks through these very frames (frame ids include the build-id): another
        // build of a binary with the same file name has the same `name+0x…` names.
        let pending: Vec<StackIdRow> = client
            .query("SELECT DISTINCT stack_id FROM stacks WHERE stack_id IN (SELECT arrayJoin(CAST(? AS Array(UInt64)))) AND hasAny(functions, ?)")
            .bind(chunk)
            .bind(&olds)
            .fetch_all()
            .await
            .map_err(SymbolsError::ch("finding stacks to rename"))?;
        if pending.is_empty() {
            continue;
        }
        let pending: Vec<u64> = pending.into_iter().map(|s| s.stack_id).collect();
        let rows: CountRow = client
            .query("SELECT count() AS n FROM samples WHERE stack_id IN (SELECT arrayJoin(CAST(? AS Array(UInt64))))")
            .bind(&pending)
            .fetch_one()
            .await
            .map_err(SymbolsError::ch("counting samples to rename"))?;
        renamed_rows += rows.n;
        if rows.n > 0 {
            // `function_minutes` (a SummingMergeTree that `query top` and detection read) has
            // the name in its key, which a mutation cannot change: add the renamed stacks'
            // counts under the new names, computed while `stacks` still carries the old names,
            // then drop the old names' rows below. (Sample rows carry only the stack id since
            // schema v4, so renaming `stacks` renames them.)
            let sql = format!(
                "INSERT INTO function_minutes (service, function, minute, version, self_samples, total_samples) \
                 SELECT service, function, minute, version, self_samples, total_samples FROM ( \
                 SELECT service, function, toStartOfMinute(time) AS minute, version, \
                 sum(count * (function = renamed[-1])) AS self_samples, sum(count) AS total_samples \
                 FROM (SELECT service, time, version, count, \
                 arrayMap(f -> transform(f, ?, ?, f), functions) AS renamed FROM {}) \
                 ARRAY JOIN arrayDistinct(renamed) AS function \
                 GROUP BY service, function, minute, version) WHERE function IN (SELECT arrayJoin(CAST(? AS Array(String))))",
                crate::store::named_samples(
                    "service, time, version",
                    "stack_id IN (SELECT arrayJoin(CAST(? AS Array(UInt64))))"
                )
            );
            client
                .query(&sql)
                .bind(&olds)
                .bind(&news)
                .bind(&pending)
                .bind(&pending)
                .bind(&news)
                .execute()
                .await
                .map_err(SymbolsError::ch(
                    "adding renamed frames to function_minutes",
                ))?;
        }
        // In `stacks` the frame ids say exactly which position to rename.
        nodes
            .alter(
                "stacks",
                "UPDATE functions = \
                 arrayMap((f, id) -> transform(id, ?, ?, f), functions, frame_ids) \
                 WHERE stack_id IN (SELECT arrayJoin(CAST(? AS Array(UInt64)))) AND hasAny(functions, ?)",
                |q| q.bind(&ids).bind(&functions).bind(&pending).bind(&olds),
            )
            .await?;
    }
    let olds = olds.into_iter().map(str::to_owned).collect();
    Ok((renamed_rows, olds))
}

/// Drops the `function_minutes` rows under `olds` (the old names of frames of `build_id`) once
/// [`write_back_start`]'s mutations are applied, and counts again other builds' samples that
/// still carry those names.
async fn write_back_finish(
    store: &Store,
    nodes: &DataNodes,
    build_id: &str,
    olds: &[String],
) -> Result<(), SymbolsError> {
    let client = store.client();
    {
        // The next pass (and the recount below) must see these rows renamed.
        if !nodes.wait_for_mutations(MUTATION_TIMEOUT).await? {
            return Err(SymbolsError::MutationsPending);
        }
        nodes
            .alter(
                "function_minutes",
                "DELETE WHERE function IN (SELECT arrayJoin(CAST(? AS Array(String))))",
                |q| q.bind(olds),
            )
            .await?;
        if !nodes.wait_for_mutations(MUTATION_TIMEOUT).await? {
            return Err(SymbolsError::MutationsPending);
        }
        // Another build with the same file name may have samples under the same old names:
        // count those again.
        let others: CountRow = client
            .query("SELECT count() AS n FROM frames WHERE function IN (SELECT arrayJoin(CAST(? AS Array(String)))) AND build_id != ?")
            .bind(olds)
            .bind(build_id)
            .fetch_one()
            .await
            .map_err(SymbolsError::ch("checking other builds' names"))?;
        if others.n > 0 {
            let sql = format!(
                "INSERT INTO function_minutes (service, function, minute, version, self_samples, total_samples) \
                 SELECT service, function, toStartOfMinute(time) AS minute, version, \
                 sum(count * (function = functions[-1])) AS self_samples, sum(count) AS total_samples \
                 FROM {} ARRAY JOIN arrayDistinct(functions) AS function \
                 WHERE function IN (SELECT arrayJoin(CAST(? AS Array(String)))) GROUP BY service, function, minute, version",
                crate::store::named_samples(
                    "service, time, version",
                    "stack_id IN (SELECT stack_id FROM stacks WHERE hasAny(functions, ?))"
                )
            );
            client
                .query(&sql)
                .bind(olds)
                .bind(olds)
                .bind(olds)
                .execute()
                .await
                .map_err(SymbolsError::ch("recounting other builds' names"))?;
        }
    }
    Ok(())
}

/// Waits until ClickHouse has applied every mutation of the database (so a query right after
/// `symbols upload` sees the names), up to `timeout`, on every node when the database is laid
/// out over a cluster; returns whether they all finished.
pub async fn wait_for_mutations(
    store: &Store,
    timeout: std::time::Duration,
) -> Result<bool, SymbolsError> {
    Ok(store
        .data_nodes()
        .await?
        .wait_for_mutations(timeout)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolver recognises exactly the names ingest gives frames the host could not name.
    #[test]
    fn offset_names_match_ingest() {
        assert_eq!(offset_name("/usr/bin/app", 0x11d5), "app+0x11d5");
        assert_eq!(offset_name("", 0x10), "[unknown]+0x10");
        let row = CandidateRow {
            frame_id: 1,
            function: "app+0x11d5".into(),
            module: "/usr/bin/app".into(),
            build_id: "ab".into(),
            module_offset: 0x11d5,
            file: String::new(),
            line: 0,
        };
        assert!(is_offset_name(&row));
        assert!(!is_offset_name(&CandidateRow {
            function: "main".into(),
            ..row
        }));
    }

    /// Offsets map to addresses through the segment holding them; others map to nothing.
    #[test]
    fn file_offsets_map_through_segments() {
        let layout = vec![
            (0, 0, 0x720),
            (0x1000, 0x1000, 0x375),
            (0x2dd0, 0x3dd0, 0x278),
        ];
        assert_eq!(file_offset_to_virt(&layout, 0x11d5), Some(0x11d5));
        assert_eq!(file_offset_to_virt(&layout, 0x2de0), Some(0x3de0));
        assert_eq!(file_offset_to_virt(&layout, 0x1800), None);
    }
}
