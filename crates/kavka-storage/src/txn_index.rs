//! The aborted-transaction index of a segment (Kafka's `TransactionIndex`, `<base>.txnindex`):
//! one entry per transaction aborted by a marker in that segment, so a read_committed fetch
//! can tell the consumer which producers' records to drop without the broker filtering them.
//!
//! The file format is Kafka's: 34-byte entries of i16 version (0), i64 producer id, i64 first
//! offset, i64 last offset (the abort marker) and i64 last stable offset, big-endian. Entries
//! are in marker order. The file is created on the first abort in the segment, and it is only
//! a derived cache of the log: a torn tail is dropped on load, and the entries of every
//! marker past the producer-state snapshot used on open are rewritten by the replay that
//! rebuilds the producer state.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tracing::warn;

use crate::segment::segment_path;

pub(crate) const TXN_INDEX_SUFFIX: &str = "txnindex";
/// Bytes of one on-disk entry.
pub(crate) const ENTRY_SIZE: usize = 2 + 8 + 8 + 8 + 8;
const VERSION: i16 = 0;
/// A larger file is treated as damaged (never allocated): 2^21 aborted transactions in one
/// segment.
const MAX_FILE_BYTES: u64 = ENTRY_SIZE as u64 * (1 << 21);

/// One aborted transaction: `producer_id`'s records in `first_offset..=last_offset` (the
/// abort marker is at `last_offset`) are not to be shown to read_committed consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The last stable offset when the abort marker was written.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.to_be_bytes());
    }

    fn decode(c: &[u8; ENTRY_SIZE]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&c[at..at + 8]);
            i64::from_be_bytes(b)
        };
        if i16::from_be_bytes([c[0], c[1]]) != VERSION {
            return None;
        }
        let e = AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        };
        (e.first_offset >= 0 && e.first_offset <= e.last_offset).then_some(e)
    }
}

/// Serialises entries in Kafka's format.
pub(crate) fn encode(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_SIZE);
    for e in entries {
        e.encode_into(&mut out);
    }
    out
}

/// Parses a file's bytes, keeping the longest prefix of well-formed entries in marker order
/// (a torn or damaged tail is dropped). The flag is true when something was dropped.
pub(crate) fn decode(bytes: &[u8]) -> (Vec<AbortedTxn>, bool) {
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_SIZE);
    let mut chunks = bytes.chunks_exact(ENTRY_SIZE);
    let mut damaged = !chunks.remainder().is_empty();
    for c in &mut chunks {
        let Some(arr) = <&[u8; ENTRY_SIZE]>::try_from(c).ok() else {
            damaged = true;
            break;
        };
        match AbortedTxn::decode(arr) {
            Some(e)
                if out
                    .last()
                    .is_none_or(|p: &AbortedTxn| p.last_offset < e.last_offset) =>
            {
                out.push(e)
            }
            _ => {
                damaged = true;
                break;
            }
        }
    }
    (out, damaged)
}

/// `<dir>/<base>.txnindex`.
pub(crate) fn txn_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    segment_path(dir, base_offset, TXN_INDEX_SUFFIX)
}

/// Reads the entries of a `.txnindex` file (empty when it does not exist). A damaged file
/// gives its valid prefix. For the cleaner: the entries of a source segment.
pub(crate) fn read_entries(path: &Path) -> io::Result<Vec<AbortedTxn>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len().min(MAX_FILE_BYTES);
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0)?;
    let (entries, damaged) = decode(&buf);
    if damaged {
        warn!(file = %path.display(), kept = entries.len(), "damaged transaction index; keeping its valid entries");
    }
    Ok(entries)
}

/// Writes a whole `.txnindex` file (replacing it), fsynced when `sync`. With no entries the
/// file is removed instead, as Kafka only creates it for the first abort. For the cleaner:
/// `write_file(&segment_swap::cleaned_path(dir, base, TXN_INDEX_SUFFIX), entries, true)`
/// writes the index of a cleaned segment, which the swap renames with the log file.
pub(crate) fn write_file(path: &Path, entries: &[AbortedTxn], sync: bool) -> io::Result<()> {
    if entries.is_empty() {
        return remove_if_exists(path);
    }
    debug_assert!(entries
        .windows(2)
        .all(|w| w[0].last_offset < w[1].last_offset));
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all_at(&encode(entries), 0)?;
    if sync {
        f.sync_all()?;
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The transaction index of one segment: entries loaded on first use and kept in memory
/// (reads for every read_committed fetch must not touch the disk), a write handle while the
/// segment has unflushed aborts.
#[derive(Debug)]
pub(crate) struct TxnIndex {
    path: PathBuf,
    entries: OnceLock<Vec<AbortedTxn>>,
    /// Open while entries were appended that are not yet fsynced (the flush job syncs it).
    writer: Option<Arc<File>>,
}

impl TxnIndex {
    /// The index of an existing segment, read from disk when first needed.
    pub(crate) fn lazy(dir: &Path, base_offset: i64) -> TxnIndex {
        TxnIndex {
            path: txn_index_path(dir, base_offset),
            entries: OnceLock::new(),
            writer: None,
        }
    }

    /// The index of a new segment: any stale file of the same name is removed.
    pub(crate) fn create(dir: &Path, base_offset: i64) -> io::Result<TxnIndex> {
        let path = txn_index_path(dir, base_offset);
        remove_if_exists(&path)?;
        Ok(TxnIndex {
            path,
            entries: OnceLock::from(Vec::new()),
            writer: None,
        })
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry, in marker order.
    pub(crate) fn entries(&self) -> io::Result<&[AbortedTxn]> {
        if let Some(e) = self.entries.get() {
            return Ok(e);
        }
        let loaded = read_entries(&self.path)?;
        Ok(self.entries.get_or_init(|| loaded))
    }

    fn entries_mut(&mut self) -> io::Result<&mut Vec<AbortedTxn>> {
        self.entries()?;
        self.entries
            .get_mut()
            .ok_or_else(|| io::Error::other("transaction index not loaded"))
    }

    /// Appends an entry (its marker must come after every indexed one). A torn tail left by
    /// a crash is cut first, so the new entry is aligned.
    pub(crate) fn append(&mut self, entry: AbortedTxn) -> io::Result<()> {
        let count = {
            let entries = self.entries_mut()?;
            if let Some(last) = entries.last() {
                if last.last_offset >= entry.last_offset {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "aborted transaction at {} is not after the last indexed one at {}",
                            entry.last_offset, last.last_offset
                        ),
                    ));
                }
            }
            entries.len()
        };
        let f = match &self.writer {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&self.path)?,
                );
                self.writer = Some(f.clone());
                f
            }
        };
        let at = (count * ENTRY_SIZE) as u64;
        if f.metadata()?.len() != at {
            // A damaged tail dropped on load, or a partial write: the file holds exactly the
            // entries in memory before the new one goes after them.
            f.set_len(at)?;
        }
        let mut buf = Vec::with_capacity(ENTRY_SIZE);
        entry.encode_into(&mut buf);
        f.write_all_at(&buf, at)?;
        self.entries_mut()?.push(entry);
        Ok(())
    }

    /// Drops the entries whose marker is at or above `offset` (Kafka's `truncateTo`).
    pub(crate) fn truncate_from(&mut self, offset: i64) -> io::Result<()> {
        let entries = self.entries_mut()?;
        let keep = entries.partition_point(|e| e.last_offset < offset);
        if keep == entries.len() {
            return Ok(());
        }
        entries.truncate(keep);
        if keep == 0 {
            self.writer = None;
            return remove_if_exists(&self.path);
        }
        let f = OpenOptions::new().write(true).open(&self.path)?;
        f.set_len((keep * ENTRY_SIZE) as u64)
    }

    /// The write handle to fsync, if entries were appended since the last flush.
    pub(crate) fn unflushed_file(&self) -> Option<&Arc<File>> {
        self.writer.as_ref()
    }

    /// fsyncs entries appended since the last flush and forgets the write handle.
    pub(crate) fn sync_and_release(&mut self) -> io::Result<()> {
        if let Some(f) = self.writer.take() {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Forgets the write handle once its entries are durable.
    pub(crate) fn release_writer(&mut self) {
        self.writer = None;
    }

    /// Kafka's `collectAbortedTxns`: entries whose transaction overlaps
    /// `start..upper` (last offset >= start, first offset < upper), appended to `out`.
    /// Returns true when no later segment can hold more: an entry whose last stable offset
    /// is at or past `upper` was written when no transaction starting below `upper` was
    /// still open, so every such transaction's marker came before it.
    pub(crate) fn collect(
        &self,
        start: i64,
        upper: i64,
        out: &mut Vec<AbortedTxn>,
    ) -> io::Result<bool> {
        for e in self.entries()? {
            if e.last_offset >= start && e.first_offset < upper {
                out.push(*e);
            }
            if e.last_stable_offset >= upper {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let entries = vec![e(1, 0, 5), e(2, 3, 9), e(1, 10, 12)];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), 3 * ENTRY_SIZE);
        assert_eq!(decode(&bytes), (entries.clone(), false));
        for cut in [1, ENTRY_SIZE - 1, ENTRY_SIZE + 7, bytes.len() - 1] {
            let (got, damaged) = decode(&bytes[..cut]);
            assert!(damaged);
            assert_eq!(got, entries[..cut / ENTRY_SIZE].to_vec());
        }
        let mut bad = bytes.clone();
        bad[ENTRY_SIZE] = 9; // version of the second entry
        assert_eq!(decode(&bad), (entries[..1].to_vec(), true));
    }

    #[test]
    fn file_append_truncate_and_repair() {
        let dir = tempfile::tempdir().unwrap();
        let mut ix = TxnIndex::create(dir.path(), 0).unwrap();
        assert!(!ix.path().exists(), "created lazily");
        ix.append(e(1, 0, 5)).unwrap();
        ix.append(e(2, 1, 7)).unwrap();
        assert!(ix.append(e(3, 2, 7)).is_err(), "markers must increase");
        // A torn tail on disk: a fresh handle drops it and appends aligned.
        OpenOptions::new()
            .append(true)
            .open(ix.path())
            .unwrap()
            .write_all_at(&[0, 0, 1], 2 * ENTRY_SIZE as u64)
            .unwrap();
        let mut again = TxnIndex::lazy(dir.path(), 0);
        assert_eq!(again.entries().unwrap(), &[e(1, 0, 5), e(2, 1, 7)]);
        again.append(e(1, 8, 9)).unwrap();
        assert_eq!(
            read_entries(again.path()).unwrap(),
            vec![e(1, 0, 5), e(2, 1, 7), e(1, 8, 9)]
        );
        again.truncate_from(7).unwrap();
        assert_eq!(read_entries(again.path()).unwrap(), vec![e(1, 0, 5)]);
        let mut out = Vec::new();
        // Its last stable offset (6) reaches the bound: later segments need no look.
        assert!(again.collect(0, 3, &mut out).unwrap());
        assert_eq!(out, vec![e(1, 0, 5)]);
        out.clear();
        assert!(!again.collect(6, 100, &mut out).unwrap());
        assert!(out.is_empty());
        again.truncate_from(0).unwrap();
        assert!(!again.path().exists());
        write_file(again.path(), &[e(4, 1, 2)], true).unwrap();
        assert_eq!(read_entries(again.path()).unwrap(), vec![e(4, 1, 2)]);
    }
}
