//! The leader-epoch cache (Kafka's `LeaderEpochFileCache`, KIP-101/KIP-279): for each leader
//! epoch that wrote to this partition, the first offset written under it. It is how a
//! follower (OffsetForLeaderEpoch) or a KIP-320 consumer finds where its log diverges from
//! the leader's after a leader change.
//!
//! Persisted as `leader-epoch-checkpoint` in the partition directory, in Kafka's text format
//! (version line `0`, entry count, then `epoch startOffset` lines), written atomically: temp
//! file, fsync, rename, fsync the directory. An unreadable file is not trusted: the log
//! rebuilds the cache from its batch headers.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use tracing::warn;

const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const CHECKPOINT_TMP: &str = "leader-epoch-checkpoint.tmp";
const VERSION: &str = "0";
/// A checkpoint larger than this is not one we wrote (an entry is a few dozen bytes; a
/// partition sees far fewer than 100 k leader changes).
const MAX_CHECKPOINT_BYTES: u64 = 4 * 1024 * 1024;

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The first offset written under a leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Epoch entries in increasing epoch and start offset order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
    /// Changed since last written to the checkpoint file.
    dirty: bool,
}

impl LeaderEpochCache {
    /// A cache holding `entries`, which must already be ordered (as `read_checkpoint` checks).
    pub(crate) fn from_entries(entries: Vec<EpochEntry>) -> Self {
        debug_assert!(is_ordered(&entries));
        LeaderEpochCache {
            entries,
            dirty: false,
        }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    pub fn earliest_entry(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    #[cfg(test)]
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Records that `epoch` wrote first at `start_offset` (Kafka's `assign`). A new epoch, or
    /// the latest one starting earlier, replaces every entry whose epoch or start offset is
    /// not below it, so the entries stay monotonic. Negative epochs or offsets (batches from
    /// producers that never saw a leader epoch) are ignored. Returns whether it changed.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        let needed = self
            .entries
            .last()
            .is_none_or(|l| l.epoch != epoch || start_offset < l.start_offset);
        if !needed {
            return false;
        }
        let before = self.entries.len();
        while self
            .entries
            .last()
            .is_some_and(|l| l.epoch >= epoch || l.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        if self.entries.len() + 1 < before {
            warn!(
                epoch,
                start_offset,
                removed = before - self.entries.len(),
                "leader epoch cache: a new entry replaced several non-monotonic ones"
            );
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.dirty = true;
        debug_assert!(is_ordered(&self.entries));
        true
    }

    /// Like `assign`, but only for an epoch newer than the latest (Kafka's rule when
    /// rebuilding from batch headers on recovery).
    pub(crate) fn assign_if_newer(&mut self, epoch: i32, start_offset: i64) -> bool {
        if self.latest_epoch().is_some_and(|l| epoch <= l) {
            return false;
        }
        self.assign(epoch, start_offset)
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` and the offset where
    /// it ended (the start of the next higher epoch, or `log_end` for the latest epoch).
    /// `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)` when `requested` is undefined or above
    /// every known epoch. An epoch below the earliest known yields `requested` with the
    /// earliest entry's start offset: the data before it is gone, and a follower should
    /// truncate to where the leader's log begins.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end);
        }
        // First entry with an epoch above `requested`.
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested, next.start_offset),
        }
    }

    /// The log was truncated to `end_offset`: entries starting at or after it go
    /// (Kafka's `truncateFromEnd`). Returns whether it changed.
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        if end_offset < 0 {
            return false;
        }
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if keep == self.entries.len() {
            return false;
        }
        self.entries.truncate(keep);
        self.dirty = true;
        true
    }

    /// The log start moved to `start_offset`: entries starting at or below it go except the
    /// latest of them, which now starts at `start_offset` (Kafka's `truncateFromStart`).
    /// Returns whether it changed.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let at_or_below = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last) = at_or_below.checked_sub(1) else {
            return false;
        };
        let Some(kept) = self.entries.get(last).copied() else {
            return false;
        };
        if last == 0 && kept.start_offset == start_offset {
            return false;
        }
        self.entries.drain(..last);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = start_offset;
        }
        self.dirty = true;
        debug_assert!(is_ordered(&self.entries));
        true
    }

    /// Forgets every entry (the log was emptied).
    pub(crate) fn clear(&mut self) {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.dirty = true;
        }
    }

    /// Writes the checkpoint if the cache changed since the last write.
    pub(crate) fn flush(&mut self, dir: &Path) -> io::Result<()> {
        if self.dirty {
            write_checkpoint(dir, &self.entries)?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Epochs strictly increasing, start offsets non-decreasing, none negative.
fn is_ordered(entries: &[EpochEntry]) -> bool {
    entries.iter().all(|e| e.epoch >= 0 && e.start_offset >= 0)
        && entries
            .windows(2)
            .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset <= w[1].start_offset)
}

/// What `leader-epoch-checkpoint` held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StoredCheckpoint {
    Missing,
    /// Present but not a checkpoint we could have written: rebuild from the log.
    Corrupt,
    Entries(Vec<EpochEntry>),
}

/// Reads `leader-epoch-checkpoint`; only I/O failures are errors.
pub(crate) fn read_checkpoint(dir: &Path) -> io::Result<StoredCheckpoint> {
    let file = match File::open(dir.join(CHECKPOINT_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StoredCheckpoint::Missing),
        Err(e) => return Err(e),
    };
    // Bounded by what is read, not by a length looked up before: one byte past the limit
    // is enough to know the file is not ours.
    let mut bytes = Vec::new();
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
        warn!(dir = %dir.display(), "leader epoch checkpoint is too large; rebuilding it from the log");
        return Ok(StoredCheckpoint::Corrupt);
    }
    let parsed = std::str::from_utf8(&bytes).ok().and_then(parse);
    Ok(match parsed {
        Some(entries) => StoredCheckpoint::Entries(entries),
        None => {
            warn!(dir = %dir.display(), "unreadable leader epoch checkpoint; rebuilding it from the log");
            StoredCheckpoint::Corrupt
        }
    })
}

fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    // Every entry takes at least 4 bytes ("0 0\n"): bound the count before allocating.
    if count > text.len() / 4 {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let epoch: i32 = fields.next()?.parse().ok()?;
        let start_offset: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    if lines.any(|l| !l.trim().is_empty()) || !is_ordered(&entries) {
        return None;
    }
    Some(entries)
}

fn write_checkpoint(dir: &Path, entries: &[EpochEntry]) -> io::Result<()> {
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    for e in entries {
        text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    crate::checkpoint::write_atomic(dir, CHECKPOINT_TMP, CHECKPOINT_FILE, text.as_bytes())
}

/// Leftovers of an interrupted checkpoint write.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name == CHECKPOINT_TMP
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entry(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    /// Epochs 1@0, 3@10, 6@25 (as after leader changes 1 → 3 → 6).
    fn cache() -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        assert!(c.assign(1, 0));
        assert!(c.assign(3, 10));
        assert!(c.assign(6, 25));
        c
    }

    #[test]
    fn assign_keeps_first_offset_of_each_epoch() {
        let mut c = cache();
        assert!(!c.assign(6, 30), "same epoch later: nothing to record");
        assert!(!c.assign(-1, 40), "undefined epoch is ignored");
        assert!(!c.assign(7, -1));
        assert_eq!(c.entries(), &[entry(1, 0), entry(3, 10), entry(6, 25)]);
        assert_eq!(c.latest_epoch(), Some(6));
        assert_eq!(c.earliest_entry(), Some(entry(1, 0)));
        assert!(c.is_dirty());
    }

    #[test]
    fn assign_removes_non_monotonic_entries() {
        let mut c = cache();
        // The latest epoch starting earlier replaces its entry.
        assert!(c.assign(6, 20));
        assert_eq!(c.entries().last(), Some(&entry(6, 20)));
        // A lower epoch at a higher offset replaces every entry with epoch >= it.
        assert!(c.assign(2, 30));
        assert_eq!(c.entries(), &[entry(1, 0), entry(2, 30)]);
        // A higher epoch at a lower offset removes entries starting at or after it.
        assert!(c.assign(9, 5));
        assert_eq!(c.entries(), &[entry(1, 0), entry(9, 5)]);
    }

    #[test]
    fn assign_if_newer_ignores_older_epochs() {
        let mut c = cache();
        assert!(!c.assign_if_newer(3, 40));
        assert!(!c.assign_if_newer(6, 20));
        assert!(c.assign_if_newer(8, 40));
        assert_eq!(c.latest_epoch(), Some(8));
    }

    #[test]
    fn end_offset_for_at_every_boundary() {
        let c = cache();
        let leo = 42;
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, leo), (-1, -1));
        // Below the earliest epoch: the requested epoch and the earliest start offset.
        assert_eq!(c.end_offset_for(0, leo), (0, 0));
        assert_eq!(c.end_offset_for(1, leo), (1, 10));
        assert_eq!(c.end_offset_for(2, leo), (1, 10));
        assert_eq!(c.end_offset_for(3, leo), (3, 25));
        assert_eq!(c.end_offset_for(4, leo), (3, 25));
        assert_eq!(c.end_offset_for(5, leo), (3, 25));
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(6, leo), (6, 42));
        // Above every known epoch: undefined.
        assert_eq!(c.end_offset_for(7, leo), (-1, -1));
        assert_eq!(c.end_offset_for(i32::MAX, leo), (-1, -1));
        assert_eq!(c.end_offset_for(i32::MIN, leo), (i32::MIN, 0));
        let empty = LeaderEpochCache::default();
        assert_eq!(empty.end_offset_for(0, leo), (-1, -1));
    }

    #[test]
    fn truncate_from_end() {
        let mut c = cache();
        assert!(!c.truncate_from_end(26), "no entry starts at or after 26");
        assert!(!c.truncate_from_end(-1));
        assert!(c.truncate_from_end(25));
        assert_eq!(c.entries(), &[entry(1, 0), entry(3, 10)]);
        assert!(c.truncate_from_end(5));
        assert_eq!(c.entries(), &[entry(1, 0)]);
        assert!(c.truncate_from_end(0));
        assert!(c.entries().is_empty());
    }

    #[test]
    fn truncate_from_start() {
        let mut c = cache();
        assert!(!c.truncate_from_start(0), "already starts there");
        assert!(c.truncate_from_start(4));
        assert_eq!(c.entries(), &[entry(1, 4), entry(3, 10), entry(6, 25)]);
        // Exactly at an entry: the entries below it go, it stays as it is.
        assert!(c.truncate_from_start(10));
        assert_eq!(c.entries(), &[entry(3, 10), entry(6, 25)]);
        assert!(c.truncate_from_start(30));
        assert_eq!(c.entries(), &[entry(6, 30)]);
        assert_eq!(c.end_offset_for(3, 50), (3, 30));
        let mut empty = LeaderEpochCache::default();
        assert!(!empty.truncate_from_start(10));
        let mut later = LeaderEpochCache::from_entries(vec![entry(2, 100)]);
        assert!(
            !later.truncate_from_start(50),
            "the first entry starts above"
        );
    }

    #[test]
    fn clear() {
        let mut c = LeaderEpochCache::from_entries(vec![entry(2, 100)]);
        assert!(!c.is_dirty());
        c.clear();
        assert!(c.entries().is_empty());
        assert!(c.is_dirty());
    }

    #[test]
    fn checkpoint_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_checkpoint(dir.path()).unwrap(),
            StoredCheckpoint::Missing
        );
        let mut c = cache();
        c.flush(dir.path()).unwrap();
        assert!(!c.is_dirty());
        let text = fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n3\n1 0\n3 10\n6 25\n");
        let StoredCheckpoint::Entries(back) = read_checkpoint(dir.path()).unwrap() else {
            panic!("checkpoint not read back");
        };
        assert_eq!(LeaderEpochCache::from_entries(back).entries(), c.entries());
        assert!(!dir.path().join(CHECKPOINT_TMP).exists());
        // Empty cache round trips too.
        let mut empty = LeaderEpochCache::default();
        empty.mark_dirty();
        empty.flush(dir.path()).unwrap();
        assert_eq!(
            read_checkpoint(dir.path()).unwrap(),
            StoredCheckpoint::Entries(vec![])
        );
    }

    #[test]
    fn corrupt_checkpoints_are_rejected() {
        for text in [
            "",
            "1\n0\n",
            "0\n",
            "0\nx\n",
            "0\n2\n1 0\n",
            "0\n1\n1 0\n2 5\n",
            "0\n1\n1 0 9\n",
            "0\n1\n-1 0\n",
            "0\n1\n1 -5\n",
            "0\n2\n3 0\n2 5\n",
            "0\n2\n2 10\n3 5\n",
            "0\n2\n2 0\n2 5\n",
            "0\n99999999999999999999\n",
            "0\n1000000\n1 0\n",
            "0\n1\n1 99999999999999999999\n",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
        assert_eq!(
            parse("0\n2\n1 0\n2 0\n"),
            Some(vec![entry(1, 0), entry(2, 0)])
        );
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CHECKPOINT_FILE), b"\xff\xfe\x00junk").unwrap();
        assert_eq!(
            read_checkpoint(dir.path()).unwrap(),
            StoredCheckpoint::Corrupt
        );
        // A valid start followed by far more than we ever write is not read in full.
        let f = File::create(dir.path().join(CHECKPOINT_FILE)).unwrap();
        f.set_len(MAX_CHECKPOINT_BYTES + 1).unwrap();
        drop(f);
        assert_eq!(
            read_checkpoint(dir.path()).unwrap(),
            StoredCheckpoint::Corrupt
        );
        assert!(is_temp_file(CHECKPOINT_TMP));
        assert!(!is_temp_file(CHECKPOINT_FILE));
    }
}
