//! A bounded on-disk queue of encoded [`ProfileBatch`]es waiting for the collector.
//!
//! Every batch goes through the spool: it is written here before the first push and deleted
//! when the collector acknowledges it, so a crash, a restart or an unreachable collector never
//! loses a batch that was finished. Layout of the spool directory:
//!
//! | path | what |
//! |---|---|
//! | `<sequence, 20 digits>-<boot_id>.batch` | one encoded batch, replayed oldest first |
//! | `*.tmp` | a write that did not finish (crash): ignored and removed at open |
//! | `rejected/` | batches the collector refused as malformed or of an unknown version, kept for a person to look at |
//! | `state.json` | boot id, last sequence used, drops not yet reported |
//!
//! Files are written atomically (temporary file, fsync, rename, fsync of the directory). When the
//! total size would pass the bound, the oldest batches are deleted and counted; the counts travel in
//! the next batch's `LossCounters` (`spool_dropped_batches` / `spool_dropped_samples`) and in the
//! metrics, so a drop is never silent.
//!
//! Disk trouble never stops sampling: when a batch cannot be written (disk full, EIO), it is
//! kept in memory within the same bound and written out on the next push that succeeds; a batch
//! file that disappeared or cannot be read is logged, counted and skipped; every such error is
//! counted in [`SpoolStats::io_errors`]. `rejected/` counts against the bound too: when the spool
//! is full, the oldest rejected batches are deleted (and counted) before pending ones.
//!
//! Sequence numbers are unique per (host, boot): [`Spool::next_sequence`] persists the last one in
//! `state.json` before returning it, so a restarted daemon continues where the last one stopped.
//!
//! ```no_run
//! use fleetprof_profiler::spool::Spool;
//! use fleetprof_proto::fleetprof::v1::ProfileBatch;
//! let mut spool = Spool::open("/var/lib/fleetprof/spool".as_ref(), 256 << 20, "boot-id")?;
//! let mut batch = ProfileBatch { sequence: spool.next_sequence()?, ..Default::default() };
//! spool.push(&mut batch)?;
//! while let Some((key, batch)) = spool.oldest()? {
//!     // push `batch`; on success:
//!     spool.remove(&key)?;
//! }
//! # Ok::<(), fleetprof_profiler::spool::SpoolError>(())
//! ```

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

use fleetprof_proto::fleetprof::v1::{LossCounters, ProfileBatch};
use prost::Message as _;
use serde::{Deserialize, Serialize};

const BATCH_SUFFIX: &str = ".batch";
const TMP_SUFFIX: &str = ".tmp";
const STATE_FILE: &str = "state.json";
const REJECTED_DIR: &str = "rejected";

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or directory could not be read or written.
    #[error("spool: cannot {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `state.json` is not what this module writes.
    #[error("spool: {} is corrupt (delete it to start the sequence afresh)", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
    let path = path.to_owned();
    move |source| SpoolError::Io { what, path, source }
}

/// Identifies a spooled batch; orders batches oldest first (batches of earlier boots, then this
/// boot's by sequence).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpoolKey {
    /// False for batches of an earlier boot, which sort first.
    current_boot: bool,
    /// The batch's sequence.
    pub sequence: u64,
    /// The boot the batch was taken in.
    pub boot_id: String,
}

impl SpoolKey {
    fn file_name(&self) -> String {
        format!("{:020}-{}{BATCH_SUFFIX}", self.sequence, self.boot_id)
    }

    fn parse(name: &str, current_boot: &str) -> Option<Self> {
        let stem = name.strip_suffix(BATCH_SUFFIX)?;
        let (seq, boot_id) = stem.split_once('-')?;
        if seq.len() != 20 || boot_id.is_empty() {
            return None;
        }
        Some(Self {
            current_boot: boot_id == current_boot,
            sequence: seq.parse().ok()?,
            boot_id: boot_id.to_owned(),
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    boot_id: String,
    last_sequence: u64,
    /// Drops not yet carried by a batch; kept across restarts so they are reported once.
    unreported_dropped_batches: u64,
    unreported_dropped_samples: u64,
}

/// Counters for metrics and the final log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Batches waiting.
    pub pending_batches: u64,
    /// Their total size, bytes.
    pub pending_bytes: u64,
    /// Batches dropped from the full spool since this daemon started.
    pub dropped_batches: u64,
    /// Samples in them.
    pub dropped_samples: u64,
    /// Batches moved to `rejected/` since this daemon started.
    pub rejected_batches: u64,
    /// Batches written into the spool since this daemon started.
    pub spooled_batches: u64,
    /// Disk errors survived (a write, read, rename or delete that failed) since this daemon started.
    pub io_errors: u64,
    /// Batches currently held in memory because the disk refused them.
    pub in_memory_batches: u64,
    /// Bytes in `rejected/`.
    pub rejected_bytes: u64,
    /// Rejected batches deleted to keep the spool within its bound.
    pub rejected_deleted: u64,
}

/// The on-disk queue; see the module documentation.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    boot_id: String,
    entries: BTreeMap<SpoolKey, u64>,
    /// Batches the disk refused, encoded, waiting to be written out (also in `entries`).
    memory: BTreeMap<SpoolKey, Vec<u8>>,
    /// Files in `rejected/` (name → bytes), oldest name first.
    rejected: BTreeMap<String, u64>,
    state: State,
    stats: SpoolStats,
}

impl Spool {
    /// Opens (creating) the spool at `dir`, bounded to `max_bytes`, for the boot `boot_id`.
    /// Leftover `.tmp` files of an interrupted write are removed; spooled batches of this and
    /// earlier boots are queued for replay.
    pub fn open(dir: &Path, max_bytes: u64, boot_id: &str) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir.join(REJECTED_DIR))
            .map_err(io_err("create", &dir.join(REJECTED_DIR)))?;
        let state_path = dir.join(STATE_FILE);
        let mut state = match std::fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|source| SpoolError::State {
                    path: state_path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err("read", &state_path)(e)),
        };
        if state.boot_id != boot_id {
            // A new boot starts a new sequence; unreported drops still need reporting.
            state.boot_id = boot_id.to_owned();
            state.last_sequence = 0;
        }
        let mut entries = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX) {
                // An interrupted write: its batch was never acknowledged as spooled.
                tracing::warn!(file = %name, "removing an incomplete spool write");
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(key) = SpoolKey::parse(&name, boot_id) else {
                continue;
            };
            let len = entry
                .metadata()
                .map_err(io_err("stat", &entry.path()))?
                .len();
            if key.current_boot {
                // Never reuse a sequence that is on disk, even if state.json was lost.
                state.last_sequence = state.last_sequence.max(key.sequence);
            }
            entries.insert(key, len);
        }
        let mut rejected = BTreeMap::new();
        let rejected_dir = dir.join(REJECTED_DIR);
        for entry in std::fs::read_dir(&rejected_dir)
            .map_err(io_err("list", &rejected_dir))?
            .flatten()
        {
            let len = entry.metadata().map_or(0, |m| m.len());
            rejected.insert(entry.file_name().to_string_lossy().into_owned(), len);
        }
        let mut spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            boot_id: boot_id.to_owned(),
            entries,
            memory: BTreeMap::new(),
            rejected,
            state,
            stats: SpoolStats::default(),
        };
        spool.save_state()?;
        spool.refresh_pending();
        Ok(spool)
    }

    /// The next batch sequence for this boot, persisted before it is returned (when the disk
    /// refuses even that, the error is logged and counted, and sampling goes on).
    pub fn next_sequence(&mut self) -> Result<u64, SpoolError> {
        self.state.last_sequence += 1;
        self.save_state_or_count();
        Ok(self.state.last_sequence)
    }

    /// Adds `batch` (whose `sequence` came from [`Spool::next_sequence`]), dropping the oldest
    /// batches if needed to stay within the bound. Drops not yet reported are written into the
    /// batch's `losses` first. A batch larger than the whole bound is itself dropped and counted.
    /// Returns the number of batches dropped.
    pub fn push(&mut self, batch: &mut ProfileBatch) -> Result<u64, SpoolError> {
        let size = batch.encoded_len() as u64 + 16;
        let mut dropped = 0;
        if size > self.max_bytes {
            tracing::error!(
                sequence = batch.sequence,
                size,
                max = self.max_bytes,
                "batch larger than the whole spool; dropped (counted in the next batch)"
            );
            self.count_drop(batch);
            self.save_state_or_count();
            self.refresh_pending();
            return Ok(1);
        }
        // Rejected batches give way first: they were kept for a person, pending ones are data.
        while self.pending_bytes() + self.stats.rejected_bytes + size > self.max_bytes {
            let Some((name, _)) = self.rejected.first_key_value() else {
                break;
            };
            let name = name.clone();
            self.delete_rejected(&name);
        }
        while self.pending_bytes() + size > self.max_bytes {
            let Some((oldest, _)) = self.entries.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.drop_entry(&oldest);
            dropped += 1;
        }
        let losses = batch.losses.get_or_insert_with(LossCounters::default);
        losses.spool_dropped_batches += self.state.unreported_dropped_batches;
        losses.spool_dropped_samples += self.state.unreported_dropped_samples;
        let key = SpoolKey {
            current_boot: true,
            sequence: batch.sequence,
            boot_id: self.boot_id.clone(),
        };
        let bytes = batch.encode_to_vec();
        self.entries.insert(key.clone(), bytes.len() as u64);
        self.memory.insert(key, bytes);
        // Whatever the disk refused earlier goes out first, oldest first.
        self.write_out_memory();
        // Written after the batch: a crash in between reports the drops twice, never zero times.
        self.state.unreported_dropped_batches = 0;
        self.state.unreported_dropped_samples = 0;
        self.save_state_or_count();
        self.stats.spooled_batches += 1;
        self.refresh_pending();
        Ok(dropped)
    }

    /// Writes the batches held in memory to disk, oldest first, until the disk refuses one.
    fn write_out_memory(&mut self) {
        while let Some((key, bytes)) = self.memory.first_key_value() {
            let key = key.clone();
            match write_atomically(&self.dir, &key.file_name(), bytes) {
                Ok(()) => {
                    self.memory.remove(&key);
                }
                Err(e) => {
                    self.stats.io_errors += 1;
                    tracing::error!(error = %e, in_memory = self.memory.len(), "spool: cannot write a batch; keeping it in memory (sampling goes on)");
                    break;
                }
            }
        }
    }

    /// Deletes a rejected batch to make room, counting it.
    fn delete_rejected(&mut self, name: &str) {
        let path = self.dir.join(REJECTED_DIR).join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                self.stats.io_errors += 1;
                tracing::error!(file = %path.display(), error = %e, "spool: cannot delete a rejected batch");
            }
        }
        tracing::warn!(file = %name, "spool full: deleted the oldest rejected batch");
        self.rejected.remove(name);
        self.stats.rejected_deleted += 1;
        self.refresh_pending();
    }

    /// The oldest batch, decoded. A file that does not decode is moved to `rejected/` with a
    /// log line and the next one is returned.
    pub fn oldest(&mut self) -> Result<Option<(SpoolKey, ProfileBatch)>, SpoolError> {
        while let Some((key, _)) = self.entries.first_key_value() {
            let key = key.clone();
            let path = self.dir.join(key.file_name());
            let bytes = match self.memory.get(&key) {
                Some(b) => b.clone(),
                None => match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => {
                        // Deleted behind our back, or unreadable (EIO): the batch is lost; say so
                        // and go on with the next one rather than stopping.
                        self.stats.io_errors += 1;
                        self.stats.dropped_batches += 1;
                        self.state.unreported_dropped_batches += 1;
                        tracing::error!(file = %path.display(), error = %e, "spool: cannot read a spooled batch; skipping it (counted as dropped)");
                        self.entries.remove(&key);
                        self.refresh_pending();
                        continue;
                    }
                },
            };
            match ProfileBatch::decode(bytes.as_slice()) {
                Ok(batch) => return Ok(Some((key, batch))),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "spooled batch does not decode; moving it to rejected/");
                    self.reject(&key)?;
                }
            }
        }
        Ok(None)
    }

    /// Deletes an acknowledged batch.
    pub fn remove(&mut self, key: &SpoolKey) -> Result<(), SpoolError> {
        if self.memory.remove(key).is_none() {
            let path = self.dir.join(key.file_name());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Left on disk it would be sent again after a restart: the collector answers
                    // that as a duplicate, so nothing is stored twice.
                    self.stats.io_errors += 1;
                    tracing::error!(file = %path.display(), error = %e, "spool: cannot delete an acknowledged batch");
                }
            }
        }
        self.entries.remove(key);
        self.refresh_pending();
        Ok(())
    }

    /// Moves a batch the collector refused to `rejected/`, where it stays for a person to read.
    pub fn reject(&mut self, key: &SpoolKey) -> Result<(), SpoolError> {
        let name = key.file_name();
        let to = self.dir.join(REJECTED_DIR).join(&name);
        let size = self.entries.get(key).copied().unwrap_or(0);
        let kept = match self.memory.remove(key) {
            Some(bytes) => write_atomically(&self.dir.join(REJECTED_DIR), &name, &bytes),
            None => {
                let from = self.dir.join(&name);
                std::fs::rename(&from, &to).map_err(io_err("move to rejected/", &from))
            }
        };
        match kept {
            Ok(()) => {
                self.rejected.insert(name, size);
            }
            Err(e) => {
                self.stats.io_errors += 1;
                tracing::error!(error = %e, "spool: cannot keep a rejected batch in rejected/; it is logged only");
            }
        }
        self.entries.remove(key);
        self.stats.rejected_batches += 1;
        self.refresh_pending();
        Ok(())
    }

    /// Counters for metrics.
    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total size of the waiting batches, bytes.
    pub fn pending_bytes(&self) -> u64 {
        self.entries.values().sum()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn refresh_pending(&mut self) {
        self.stats.pending_batches = self.entries.len() as u64;
        self.stats.pending_bytes = self.pending_bytes();
        self.stats.in_memory_batches = self.memory.len() as u64;
        self.stats.rejected_bytes = self.rejected.values().sum();
    }

    fn drop_entry(&mut self, key: &SpoolKey) {
        let path = self.dir.join(key.file_name());
        // Decoded to count its samples, and to carry on the drops it was carrying.
        let batch = match self.memory.remove(key) {
            Some(b) => ProfileBatch::decode(b.as_slice()).ok(),
            None => std::fs::read(&path)
                .ok()
                .and_then(|b| ProfileBatch::decode(b.as_slice()).ok()),
        }
        .unwrap_or_default();
        tracing::warn!(
            sequence = key.sequence,
            boot_id = %key.boot_id,
            samples = batch_samples(&batch),
            "spool full: dropping the oldest batch (counted in the next batch's losses)"
        );
        self.count_drop(&batch);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                self.stats.io_errors += 1;
                tracing::error!(file = %path.display(), error = %e, "spool: cannot delete a dropped batch");
            }
        }
        self.entries.remove(key);
    }

    fn count_drop(&mut self, batch: &ProfileBatch) {
        let samples = batch_samples(batch);
        let carried = batch.losses.unwrap_or_default();
        self.state.unreported_dropped_batches += 1 + carried.spool_dropped_batches;
        self.state.unreported_dropped_samples += samples + carried.spool_dropped_samples;
        self.stats.dropped_batches += 1;
        self.stats.dropped_samples += samples;
    }

    /// Saves `state.json`; when the disk refuses a new file (full), overwrites the old one in
    /// place (it fits in the blocks it has); when even that fails, logs and counts the error.
    fn save_state_or_count(&mut self) {
        if let Err(e) = self.save_state() {
            let path = self.dir.join(STATE_FILE);
            let in_place = serde_json::to_vec(&self.state)
                .map_err(std::io::Error::other)
                .and_then(|json| {
                    let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
                    f.write_all(&json)?;
                    f.set_len(json.len() as u64)?;
                    f.sync_all()
                });
            if let Err(e2) = in_place {
                self.stats.io_errors += 1;
                tracing::error!(error = %e, in_place = %e2, "spool: cannot save state.json (sampling goes on)");
            }
        }
    }

    fn save_state(&self) -> Result<(), SpoolError> {
        let json = serde_json::to_vec_pretty(&self.state).map_err(|source| SpoolError::State {
            path: self.dir.join(STATE_FILE),
            source,
        })?;
        write_atomically(&self.dir, STATE_FILE, &json)
    }
}

/// Samples in a batch.
pub fn batch_samples(batch: &ProfileBatch) -> u64 {
    batch.samples.iter().map(|s| s.count).sum()
}

/// Writes `name` in `dir` so that a crash leaves either the old file, the new one, or a `.tmp`.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SpoolError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    file.write_all(bytes).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    // The rename is durable only once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use fleetprof_proto::fleetprof::v1::Sample;

    use super::*;

    fn batch(spool: &mut Spool, samples: u64, padding: usize) -> ProfileBatch {
        ProfileBatch {
            sequence: spool.next_sequence().unwrap(),
            samples: vec![Sample {
                count: samples,
                thread_name: "x".repeat(padding),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn drain(spool: &mut Spool) -> Vec<ProfileBatch> {
        let mut out = Vec::new();
        while let Some((key, b)) = spool.oldest().unwrap() {
            spool.remove(&key).unwrap();
            out.push(b);
        }
        out
    }

    proptest::proptest! {
        /// A spool file name parses back to its key, for any sequence and boot id; names that
        /// are not the spool's own are ignored, never misread.
        #[test]
        fn spool_names_round_trip(seq in proptest::prelude::any::<u64>(), boot in "[a-f0-9-]{1,40}", other in ".{0,60}") {
            let key = SpoolKey { current_boot: true, sequence: seq, boot_id: boot.clone() };
            proptest::prop_assert_eq!(SpoolKey::parse(&key.file_name(), &boot), Some(key.clone()));
            let earlier = SpoolKey::parse(&key.file_name(), "another-boot").unwrap();
            proptest::prop_assert!(!earlier.current_boot && earlier < key);
            if let Some(k) = SpoolKey::parse(&other, &boot) {
                proptest::prop_assert_eq!(k.file_name(), other);
            }
        }
    }

    /// A write the disk refuses keeps the batch in memory (counted); the next push writes it
    /// out; a spool file deleted behind the spool's back is skipped and counted as dropped.
    #[test]
    fn disk_errors_never_stop_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, "boot").unwrap();
        let mut b1 = batch(&mut spool, 5, 10);
        // A directory where the write's temporary file goes: the write fails (EISDIR).
        let blocker = dir.path().join(format!(
            "{:020}-boot{BATCH_SUFFIX}{TMP_SUFFIX}",
            b1.sequence
        ));
        std::fs::create_dir(&blocker).unwrap();
        spool.push(&mut b1).unwrap();
        assert_eq!(spool.stats().io_errors, 1);
        assert_eq!(spool.stats().in_memory_batches, 1);
        assert_eq!(spool.len(), 1);
        std::fs::remove_dir(&blocker).unwrap();
        let mut b2 = batch(&mut spool, 7, 10);
        spool.push(&mut b2).unwrap();
        assert_eq!(
            spool.stats().in_memory_batches,
            0,
            "written out on the next push"
        );
        let b1_file = dir
            .path()
            .join(format!("{:020}-boot{BATCH_SUFFIX}", b1.sequence));
        assert!(b1_file.exists());
        std::fs::remove_file(&b1_file).unwrap();
        let got = drain(&mut spool);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].sequence, b2.sequence);
        assert_eq!(spool.stats().dropped_batches, 1);
        assert_eq!(spool.stats().io_errors, 2);
        // The loss travels in the next batch.
        let mut b3 = batch(&mut spool, 1, 1);
        spool.push(&mut b3).unwrap();
        assert_eq!(b3.losses.unwrap().spool_dropped_batches, 1);
    }

    /// Rejected batches count against the bound and are deleted (counted) before pending ones.
    #[test]
    fn rejected_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 3_000, "boot").unwrap();
        for _ in 0..2 {
            let mut b = batch(&mut spool, 1, 1_000);
            spool.push(&mut b).unwrap();
            let (key, _) = spool.oldest().unwrap().unwrap();
            spool.reject(&key).unwrap();
        }
        assert!(spool.stats().rejected_bytes >= 2_000, "{:?}", spool.stats());
        let mut b = batch(&mut spool, 1, 1_000);
        spool.push(&mut b).unwrap();
        let stats = spool.stats();
        assert!(stats.rejected_deleted >= 1, "{stats:?}");
        assert_eq!(
            (stats.pending_batches, stats.dropped_batches),
            (1, 0),
            "{stats:?}"
        );
        assert!(
            stats.pending_bytes + stats.rejected_bytes <= 3_000,
            "{stats:?}"
        );
        let left = std::fs::read_dir(dir.path().join(REJECTED_DIR))
            .unwrap()
            .count() as u64;
        assert_eq!(left, 2 - stats.rejected_deleted);
    }

    /// Batches come back oldest first, earlier boots before this one, and are gone once removed.
    #[test]
    fn replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut old = Spool::open(dir.path(), 1 << 20, "boot-a").unwrap();
            for _ in 0..2 {
                let mut b = batch(&mut old, 1, 0);
                old.push(&mut b).unwrap();
            }
        }
        let mut spool = Spool::open(dir.path(), 1 << 20, "boot-b").unwrap();
        for _ in 0..12 {
            let mut b = batch(&mut spool, 1, 0);
            spool.push(&mut b).unwrap();
        }
        let keys: Vec<u64> = drain(&mut spool).iter().map(|b| b.sequence).collect();
        // Two of boot-a (1, 2), then boot-b's 1..=12 (a new boot restarts the sequence).
        let mut expected = vec![1, 2];
        expected.extend(1..=12);
        assert_eq!(keys, expected);
        assert!(spool.is_empty());
        assert_eq!(Spool::open(dir.path(), 1 << 20, "boot-b").unwrap().len(), 0);
    }

    /// The spool stays within its bound by dropping the oldest batches, and the drops (batches
    /// and samples) are carried by the next batch, once.
    #[test]
    fn full_spool_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let max = 10_000;
        let mut spool = Spool::open(dir.path(), max, "boot").unwrap();
        for i in 0..10 {
            let mut b = batch(&mut spool, 100 + i, 2_000);
            spool.push(&mut b).unwrap();
            assert!(spool.pending_bytes() <= max, "bound kept");
        }
        let stats = spool.stats();
        assert!(stats.dropped_batches >= 5, "{stats:?}");
        let remaining = drain(&mut spool);
        assert_eq!(remaining.len() as u64, 10 - stats.dropped_batches);
        // The survivors are the newest.
        assert_eq!(remaining.last().unwrap().sequence, 10);
        // Every drop is reported exactly once across the batches, with its samples.
        let reported_batches: u64 = remaining
            .iter()
            .map(|b| b.losses.unwrap_or_default().spool_dropped_batches)
            .sum();
        let reported_samples: u64 = remaining
            .iter()
            .map(|b| b.losses.unwrap_or_default().spool_dropped_samples)
            .sum();
        let dropped_samples: u64 = (0..stats.dropped_batches).map(|i| 100 + i).sum();
        assert_eq!(reported_batches, stats.dropped_batches);
        assert_eq!(reported_samples, dropped_samples);
        assert_eq!(stats.dropped_samples, dropped_samples);
    }

    /// A batch bigger than the whole spool is dropped, counted and reported by the next one.
    #[test]
    fn oversized_batch_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1_000, "boot").unwrap();
        let mut big = batch(&mut spool, 7, 5_000);
        assert_eq!(spool.push(&mut big).unwrap(), 1);
        let mut next = batch(&mut spool, 1, 0);
        spool.push(&mut next).unwrap();
        let losses = drain(&mut spool)[0].losses.unwrap();
        assert_eq!(
            (losses.spool_dropped_batches, losses.spool_dropped_samples),
            (1, 7)
        );
    }

    /// Sequences keep increasing across restarts within one boot, and restart at 1 on a new boot.
    #[test]
    fn restart_keeps_sequence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 1 << 20, "boot").unwrap();
            assert_eq!(spool.next_sequence().unwrap(), 1);
            assert_eq!(spool.next_sequence().unwrap(), 2);
        }
        let mut spool = Spool::open(dir.path(), 1 << 20, "boot").unwrap();
        assert_eq!(spool.next_sequence().unwrap(), 3);
        // Even without state.json, a spooled batch's sequence is never reused.
        let mut b = batch(&mut spool, 1, 0);
        spool.push(&mut b).unwrap();
        drop(spool);
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, "boot").unwrap();
        assert_eq!(spool.next_sequence().unwrap(), 5);
        let mut spool = Spool::open(dir.path(), 1 << 20, "new-boot").unwrap();
        assert_eq!(spool.next_sequence().unwrap(), 1);
    }

    /// A `.tmp` left by a crashed write is ignored (and removed); finished batches are replayed.
    #[test]
    fn tmp_leftover_ignored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 1 << 20, "boot").unwrap();
            let mut b = batch(&mut spool, 3, 0);
            spool.push(&mut b).unwrap();
        }
        let torn = dir.path().join(format!("{:020}-boot.batch.tmp", 2));
        std::fs::write(&torn, b"\xff\xff partial").unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, "boot").unwrap();
        assert_eq!(spool.len(), 1);
        assert!(!torn.exists());
        let batches = drain(&mut spool);
        assert_eq!(batches.len(), 1);
        assert_eq!(batch_samples(&batches[0]), 3);
    }

    /// Rejected batches leave the queue but stay on disk under `rejected/`.
    #[test]
    fn rejected_batches_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20, "boot").unwrap();
        let mut b = batch(&mut spool, 3, 0);
        spool.push(&mut b).unwrap();
        let (key, _) = spool.oldest().unwrap().unwrap();
        spool.reject(&key).unwrap();
        assert!(spool.is_empty());
        assert!(dir.path().join(REJECTED_DIR).join(key.file_name()).exists());
        assert_eq!(spool.stats().rejected_batches, 1);
    }
}
