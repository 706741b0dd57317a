//! Log compaction (Kafka's `Cleaner`): keep only the latest record of every key.
//!
//! A round works on a [`CleanableLog`], a snapshot of the sealed segments taken under the
//! log lock ([`crate::Log::cleanable`]), and runs without any lock:
//! 1. build the key → latest offset map ([`OffsetMap`]) over the dirty section, from the
//!    first dirty offset (the cleaner checkpoint) to the first uncleanable offset, stopping
//!    early when the map is full;
//! 2. rewrite every segment below where the map stopped, grouped up to `segment.bytes`, into
//!    `.cleaned` files, keeping a record when no later record has its key, and a tombstone
//!    until `delete.retention.ms` after its batch was first cleaned (KIP-534's delete
//!    horizon in the batch header).
//!
//! The result, a [`CleanedLog`], is swapped in by [`crate::Log::swap_cleaned`] under the
//! lock, which aborts when the log changed meanwhile. Offsets never change: the log just has
//! gaps. Dropped cleaned files are removed when a `CleanedLog` is dropped unswapped.
//!
//! Batches that lose no record are copied byte for byte; rebuilt ones keep their codec.
//! A batch that loses every record is dropped, except the last batch of an idempotent
//! producer still known to the producer state, which stays as an empty batch so the
//! producer's sequence survives a rebuild of that state from the log (as Kafka does).
//! Records without a key are dropped.
//!
//! Transactions (Kafka's `CleanedTransactionMetadata`), with the aborted transactions of
//! the range taken from the transaction indexes under the lock:
//! - nothing at or above the last stable offset is cleanable ([`crate::Log::cleanable`]
//!   bounds the range by it), so every transaction the cleaner sees is decided;
//! - control batches (markers) never enter the offset map: their keys are not user keys;
//! - records of aborted transactions never enter the offset map (an aborted value must not
//!   shadow a committed one) and are removed; committed transactional records compact like
//!   any others;
//! - a marker stays while any batch of its transaction is still in the log (else a rebuild
//!   of the producer state would see a transaction that never ends, and read_committed
//!   readers could not tell aborted records). Once the pass reads no batch of it, the marker
//!   gets a delete horizon (`delete.retention.ms`, as a tombstone) and a pass after that
//!   removes it, unless it is the last record of a producer that wrote only markers;
//! - an abort marker that stays keeps its aborted-transaction entry, which goes into the
//!   cleaned segment's transaction index ([`CleanedGroup::aborted_txns`]).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use kavka_protocol::record_batch::{self, BatchHeader, BATCH_HEADER_LEN};
use kavka_protocol::records::{decode_control_key, ControlType};
use thiserror::Error;

use crate::offset_map::{OffsetMap, SLOT_BYTES};
use crate::record_filter::{self, RecordView};
use crate::segment::{LogSegment, LOG_SUFFIX};
use crate::segment_swap;
use crate::txn_index::{self, TXN_INDEX_SUFFIX};
use crate::{AbortedTxn, LogConfig, ProducerEntry};

/// Largest batch the cleaner will load; a larger length on disk is treated as corruption.
const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;
/// Cap on the inflated records of one batch.
const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

/// Settings of the cleaner itself (broker-wide, Kafka's `log.cleaner.*`).
#[derive(Clone, Debug)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: memory of the key → offset map.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.buffer.size`: read-ahead and write buffer.
    pub io_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            dedupe_buffer_bytes: 16 * 1024 * 1024,
            io_buffer_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Error)]
pub enum CleanerError {
    #[error("I/O error while cleaning: {0}")]
    Io(#[from] io::Error),
    #[error("corrupt batch in segment {segment} at position {position}: {reason}")]
    Corrupt {
        segment: i64,
        position: u64,
        reason: String,
    },
    #[error("the offset map ({capacity} keys) cannot hold the batch at offset {offset}")]
    MapTooSmall { capacity: usize, offset: i64 },
}

/// A sealed segment as the snapshot saw it.
#[derive(Clone, Debug)]
pub(crate) struct SourceSegment {
    pub base_offset: i64,
    /// The next segment's base offset.
    pub end_offset: i64,
    pub file: Arc<File>,
    pub size: u64,
}

/// The cleanable part of a compacted log, as seen under the log lock: every sealed segment
/// below the first uncleanable offset, with open handles so the files stay readable.
#[derive(Debug)]
pub struct CleanableLog {
    pub(crate) dir: PathBuf,
    pub(crate) segments: Vec<SourceSegment>,
    pub(crate) first_dirty_offset: i64,
    pub(crate) first_uncleanable_offset: i64,
    pub(crate) generation: u64,
    pub(crate) config: LogConfig,
    /// What keeps each producer known to the producer state alive in the log.
    pub(crate) producers: HashMap<i64, LastRecord>,
    /// The aborted transactions overlapping the cleanable range (from the log start to the
    /// first uncleanable offset), from the segments' transaction indexes.
    pub(crate) aborted_txns: Vec<AbortedTxn>,
    pub(crate) clean_bytes: u64,
    pub(crate) dirty_bytes: u64,
    pub(crate) max_lag_exceeded: bool,
    /// A kept tombstone's delete horizon has passed: a round would remove it.
    pub(crate) tombstones_due: bool,
}

/// The record that keeps a producer's state in the log (Kafka's `LastRecord`): its last
/// data batch, or, for a producer that wrote only transaction markers, a marker of its
/// current epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LastRecord {
    /// Last offset of the producer's last data batch.
    pub last_data_offset: Option<i64>,
    pub epoch: i16,
}

/// The [`LastRecord`] of every producer the producer state knows (taken under the log lock).
pub(crate) fn last_records(entries: Vec<(i64, ProducerEntry)>) -> HashMap<i64, LastRecord> {
    entries
        .into_iter()
        .map(|(pid, e)| {
            let last = LastRecord {
                last_data_offset: e.batches.back().map(|b| b.last_offset),
                epoch: e.epoch,
            };
            (pid, last)
        })
        .collect()
}

impl LastRecord {
    /// `h` is the batch that must stay (possibly emptied) for its producer to stay known.
    fn is_kept_by(&self, h: &BatchHeader) -> bool {
        match self.last_data_offset {
            Some(offset) => !h.is_control() && h.last_offset() == offset,
            None => h.is_control() && h.producer_epoch == self.epoch,
        }
    }
}

impl CleanableLog {
    /// Dirty bytes over all cleanable bytes.
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    pub fn first_dirty_offset(&self) -> i64 {
        self.first_dirty_offset
    }

    pub fn first_uncleanable_offset(&self) -> i64 {
        self.first_uncleanable_offset
    }

    /// `min.cleanable.dirty.ratio` is reached, or `max.compaction.lag.ms` forces a round.
    pub fn is_due(&self) -> bool {
        self.tombstones_due
            || (self.dirty_bytes > 0
                && (self.dirty_ratio() >= self.config.min_cleanable_dirty_ratio
                    || self.max_lag_exceeded))
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanerStats {
    pub segments_read: usize,
    pub segments_written: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_retained: u64,
    pub tombstones_removed: u64,
    /// Records of aborted transactions removed.
    pub aborted_records_removed: u64,
    /// Transaction markers removed (their transaction's data was gone and their delete
    /// horizon passed).
    pub markers_removed: u64,
    /// Keys in the offset map.
    pub keys: usize,
    /// Earliest delete horizon of the tombstones kept: a round after it removes them.
    pub earliest_delete_horizon: Option<i64>,
}

/// One cleaned segment replacing the sources `[base_offset, end_offset)`.
pub(crate) struct CleanedGroup {
    pub dir: PathBuf,
    pub base_offset: i64,
    pub end_offset: i64,
    /// (base offset, log file) of each replaced segment, to detect a changed log.
    pub sources: Vec<(i64, Arc<File>)>,
    /// The cleaned segment; taken when swapped in.
    pub segment: Option<LogSegment>,
    /// The `.cleaned` files are still ours: dropping the group removes them.
    pub files_pending: bool,
    /// The aborted-transaction entries of the abort markers kept in the cleaned segment (the
    /// segment's transaction index after the swap), in marker order.
    pub aborted_txns: Vec<AbortedTxn>,
}

impl Drop for CleanedGroup {
    fn drop(&mut self) {
        if self.files_pending {
            segment_swap::discard(&self.dir, self.base_offset);
        }
    }
}

/// Cleaned segments ready to be swapped in.
pub struct CleanedLog {
    pub(crate) generation: u64,
    /// Not yet swapped in, in offset order (the next one first).
    pub(crate) groups: std::collections::VecDeque<CleanedGroup>,
    /// Old segments replaced and cleaned segments swapped in so far.
    pub(crate) replaced: usize,
    pub(crate) written: usize,
    /// The new cleaner checkpoint once swapped in.
    pub(crate) first_dirty_offset: i64,
    pub stats: CleanerStats,
}

impl std::fmt::Debug for CleanedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanedLog")
            .field("groups", &self.groups.len())
            .field("first_dirty_offset", &self.first_dirty_offset)
            .field("stats", &self.stats)
            .finish()
    }
}

impl CleanedLog {
    pub(crate) fn next_group(&mut self) -> Option<CleanedGroup> {
        self.groups.pop_front()
    }

    /// Where the next round's dirty section starts.
    pub fn first_dirty_offset(&self) -> i64 {
        self.first_dirty_offset
    }
}

/// What happened to a batch.
enum Filtered {
    Verbatim,
    Rewritten,
    Dropped,
}

/// What a control batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    /// Emptied by an earlier pass (kept only for its producer's state).
    Empty,
    Txn(ControlType),
    /// A control record type this broker does not know (Kafka keeps those).
    Unknown,
}

/// What a control batch is, from its records (`records` of the section `data`).
fn marker_in(data: &[u8], records: &[RecordView]) -> Marker {
    let Some(first) = records.first() else {
        return Marker::Empty;
    };
    first
        .key
        .as_ref()
        .and_then(|k| data.get(k.clone()))
        .and_then(decode_control_key)
        .map_or(Marker::Unknown, Marker::Txn)
}

/// What the control batch `batch` is.
fn marker_of(batch: &[u8], h: &BatchHeader) -> Result<Marker, String> {
    let data = record_filter::records_section(batch, h, MAX_DECOMPRESSED_BYTES)?;
    let records = record_filter::parse_records(&data, h)?;
    Ok(marker_in(&data, &records))
}

/// Whether a marker can go (Kafka's `onControlBatchRead` result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MarkerFate {
    /// A batch of its transaction was read in this pass: it stays. An abort marker brings
    /// its aborted-transaction entry along.
    Keep(Option<AbortedTxn>),
    /// No data of its transaction is left: it may go once its delete horizon has passed.
    Discardable,
}

/// The transaction state of one cleaning pass over the log, in offset order (Kafka's
/// `CleanedTransactionMetadata`): which data batches belong to aborted transactions, and
/// whether a marker still has data of its transaction before it.
#[derive(Debug, Default)]
struct TxnTracker {
    /// Aborted transactions not reached yet, by descending first offset (next one last).
    pending: Vec<AbortedTxn>,
    /// Per producer: the aborted transaction the pass is inside, and whether a batch of it
    /// was read.
    aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers with a batch of a not-aborted transaction read since their last marker.
    committed: HashSet<i64>,
}

impl TxnTracker {
    /// The tracker of a pass reading the log from `from`: only aborted transactions whose
    /// marker is at or past it matter (one ended before would otherwise never see its
    /// marker and pass its producer's next transactions off as aborted).
    fn new(aborted: &[AbortedTxn], from: i64) -> Self {
        let mut pending: Vec<AbortedTxn> = aborted
            .iter()
            .filter(|t| t.last_offset >= from)
            .copied()
            .collect();
        pending.sort_unstable_by_key(|t| std::cmp::Reverse(t.first_offset));
        pending.dedup();
        TxnTracker {
            pending,
            ..TxnTracker::default()
        }
    }

    /// Enters every aborted transaction starting at or before `offset`.
    fn reach(&mut self, offset: i64) {
        while self
            .pending
            .last()
            .is_some_and(|t| t.first_offset <= offset)
        {
            if let Some(t) = self.pending.pop() {
                self.aborted.insert(t.producer_id, (t, false));
            }
        }
    }

    /// A data batch was read; true when it belongs to an aborted transaction.
    fn on_data_batch(&mut self, h: &BatchHeader) -> bool {
        self.reach(h.last_offset());
        if !h.is_transactional() {
            return false;
        }
        match self.aborted.get_mut(&h.producer_id) {
            Some((_, seen)) => {
                *seen = true;
                true
            }
            None => {
                self.committed.insert(h.producer_id);
                false
            }
        }
    }

    /// A control batch was read: it ends its producer's transaction.
    fn on_marker(&mut self, h: &BatchHeader, marker: Marker) -> MarkerFate {
        self.reach(h.last_offset());
        match marker {
            Marker::Empty => MarkerFate::Discardable,
            Marker::Unknown => MarkerFate::Keep(None),
            Marker::Txn(ControlType::Commit) => {
                if self.committed.remove(&h.producer_id) {
                    MarkerFate::Keep(None)
                } else {
                    MarkerFate::Discardable
                }
            }
            Marker::Txn(ControlType::Abort) => match self.aborted.remove(&h.producer_id) {
                Some((txn, true)) => MarkerFate::Keep(Some(txn)),
                // The index missed this transaction, so its data were kept as if committed:
                // the marker must stay with them (Kafka would drop it).
                _ if self.committed.remove(&h.producer_id) => MarkerFate::Keep(None),
                _ => MarkerFate::Discardable,
            },
        }
    }
}

/// One pass over a log: the snapshot, the clock, the transaction state carried from group
/// to group, and the statistics.
struct Pass<'a> {
    log: &'a CleanableLog,
    now_ms: i64,
    txns: TxnTracker,
    stats: CleanerStats,
}

impl Pass<'_> {
    /// The producer state needs `h` (emptied if need be) to stay in the log.
    fn keeps_producer(&self, h: &BatchHeader) -> bool {
        h.producer_id >= 0
            && self
                .log
                .producers
                .get(&h.producer_id)
                .is_some_and(|last| last.is_kept_by(h))
    }

    /// A kept tombstone or marker goes at `horizon`: the log is due for a round then.
    fn note_horizon(&mut self, horizon: Option<i64>) {
        let earliest = self.stats.earliest_delete_horizon;
        self.stats.earliest_delete_horizon = match (earliest, horizon) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The cleaner of one thread; its offset map is reused from round to round.
pub struct Cleaner {
    config: CleanerConfig,
    map: OffsetMap,
}

impl Cleaner {
    pub fn new(config: CleanerConfig) -> Self {
        let map = OffsetMap::with_buffer_bytes(config.dedupe_buffer_bytes.max(SLOT_BYTES));
        Cleaner { config, map }
    }

    /// Distinct keys one round can deduplicate.
    pub fn map_capacity(&self) -> usize {
        self.map.capacity()
    }

    /// Cleans `log` into new segment files (blocking I/O; no log lock needed).
    pub fn clean(&mut self, log: &CleanableLog, now_ms: i64) -> Result<CleanedLog, CleanerError> {
        let mut pass = Pass {
            log,
            now_ms,
            txns: TxnTracker::new(&log.aborted_txns, i64::MIN),
            stats: CleanerStats::default(),
        };
        let end = self.build_offset_map(log, &mut pass.stats)?;
        pass.stats.keys = self.map.len();
        let to_clean: Vec<&SourceSegment> = log
            .segments
            .iter()
            .filter(|s| s.base_offset < end)
            .collect();
        let mut groups = std::collections::VecDeque::new();
        for group in group_by_size(&to_clean, log.config.effective_segment_bytes()) {
            if let Some(g) = self.clean_group(&mut pass, &group)? {
                groups.push_back(g);
            }
        }
        Ok(CleanedLog {
            generation: log.generation,
            groups,
            replaced: 0,
            written: 0,
            first_dirty_offset: end,
            stats: pass.stats,
        })
    }

    /// Fills the map from the dirty section; returns the offset it covers up to. Control
    /// batches and batches of aborted transactions are left out.
    fn build_offset_map(
        &mut self,
        log: &CleanableLog,
        stats: &mut CleanerStats,
    ) -> Result<i64, CleanerError> {
        self.map.clear();
        let first_dirty = log.first_dirty_offset;
        let dirty = || log.segments.iter().filter(|s| s.end_offset > first_dirty);
        let from = dirty().next().map_or(first_dirty, |s| s.base_offset);
        let mut txns = TxnTracker::new(&log.aborted_txns, from);
        for seg in dirty() {
            let mut reader = SegmentReader::new(seg, self.config.io_buffer_bytes);
            let mut pos = 0u64;
            while pos < seg.size {
                let (h, range) = reader.batch_at(pos)?;
                let at = pos;
                pos += h.total_len() as u64;
                let batch = &reader.buf[range];
                let corrupt = |reason: String| CleanerError::Corrupt {
                    segment: seg.base_offset,
                    position: at,
                    reason,
                };
                if h.is_control() {
                    // Only its producer's transaction state matters here.
                    txns.on_marker(&h, marker_of(batch, &h).map_err(corrupt)?);
                    continue;
                }
                if txns.on_data_batch(&h) || h.last_offset() < first_dirty {
                    continue;
                }
                let data = record_filter::records_section(batch, &h, MAX_DECOMPRESSED_BYTES)
                    .map_err(corrupt)?;
                let records = record_filter::parse_records(&data, &h).map_err(corrupt)?;
                let dirty = |r: &&RecordView| r.key.is_some() && r.offset >= first_dirty;
                if records.iter().filter(dirty).count() > self.map.free() {
                    if self.map.len() == 0 {
                        return Err(CleanerError::MapTooSmall {
                            capacity: self.map.capacity(),
                            offset: h.base_offset,
                        });
                    }
                    return Ok(h.base_offset.max(first_dirty));
                }
                for r in records.iter().filter(dirty) {
                    if let Some(k) = &r.key {
                        let fits = self.map.put(&data[k.clone()], r.offset);
                        debug_assert!(fits, "room was checked above");
                    }
                }
            }
            stats.segments_read += 1;
        }
        Ok(log.first_uncleanable_offset)
    }

    /// Writes the cleaned form of `group`; `None` when it would be identical to its single
    /// source segment.
    fn clean_group(
        &self,
        pass: &mut Pass<'_>,
        group: &[&SourceSegment],
    ) -> Result<Option<CleanedGroup>, CleanerError> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(None);
        };
        let log = pass.log;
        let base = first.base_offset;
        let path = segment_swap::cleaned_path(&log.dir, base, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // From here on the group owns the `.cleaned` files: any early return removes them.
        let mut cleaned = CleanedGroup {
            dir: log.dir.clone(),
            base_offset: base,
            end_offset: last.end_offset,
            sources: group
                .iter()
                .map(|s| (s.base_offset, s.file.clone()))
                .collect(),
            segment: None,
            files_pending: true,
            aborted_txns: Vec::new(),
        };

        let mut changed = group.len() > 1;
        let mut out: Vec<u8> = Vec::with_capacity(self.config.io_buffer_bytes);
        let mut written = 0u64;
        for seg in group {
            let mut reader = SegmentReader::new(seg, self.config.io_buffer_bytes);
            let mut pos = 0u64;
            while pos < seg.size {
                let (h, range) = reader.batch_at(pos)?;
                let batch = &reader.buf[range];
                pass.stats.bytes_read += batch.len() as u64;
                let before = out.len();
                let filtered = if h.is_control() {
                    self.filter_marker(pass, &h, batch, &mut out, &mut cleaned.aborted_txns)
                } else {
                    self.filter_batch(pass, &h, batch, &mut out)
                };
                match filtered {
                    Ok(Filtered::Verbatim) => out.extend_from_slice(batch),
                    Ok(Filtered::Rewritten | Filtered::Dropped) => changed = true,
                    Err(reason) => {
                        return Err(CleanerError::Corrupt {
                            segment: seg.base_offset,
                            position: pos,
                            reason,
                        })
                    }
                }
                debug_assert!(out.len() >= before);
                pos += h.total_len() as u64;
                if out.len() >= self.config.io_buffer_bytes {
                    file.write_all_at(&out, written)?;
                    written += out.len() as u64;
                    out.clear();
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        file.write_all_at(&out, written)?;
        written += out.len() as u64;
        file.sync_all()?;
        // The kept abort markers' entries: the cleaned segment's transaction index (no file
        // when there are none), renamed into place by the swap with the log file.
        txn_index::write_file(
            &segment_swap::cleaned_path(&log.dir, base, TXN_INDEX_SUFFIX),
            &cleaned.aborted_txns,
            true,
        )?;
        pass.stats.bytes_written += written;
        pass.stats.segments_written += 1;
        let segment = LogSegment::from_cleaned(
            &log.dir,
            base,
            Arc::new(file),
            last.end_offset,
            log.config.index_interval_bytes,
        )?;
        cleaned.segment = Some(segment);
        Ok(Some(cleaned))
    }

    /// Decides what survives of one data batch; rebuilt batches are appended to `out` here,
    /// verbatim ones by the caller.
    fn filter_batch(
        &self,
        pass: &mut Pass<'_>,
        h: &BatchHeader,
        batch: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Filtered, String> {
        let aborted = pass.txns.on_data_batch(h);
        let data = record_filter::records_section(batch, h, MAX_DECOMPRESSED_BYTES)?;
        let records = record_filter::parse_records(&data, h)?;
        let now_ms = pass.now_ms;
        let stats = &mut pass.stats;
        stats.records_read += records.len() as u64;
        let horizon = record_filter::delete_horizon(h);
        let tombstones_expired = horizon.is_some_and(|t| t <= now_ms);
        let mut kept: Vec<&RecordView> = Vec::with_capacity(records.len());
        let mut has_tombstone = false;
        if aborted {
            stats.aborted_records_removed += records.len() as u64;
        }
        for r in records.iter().filter(|_| !aborted) {
            // A keyless record has no place in a compacted log (Kafka drops it too).
            let Some(key) = &r.key else { continue };
            if self
                .map
                .get(&data[key.clone()])
                .is_some_and(|latest| latest > r.offset)
            {
                continue;
            }
            if r.null_value {
                if tombstones_expired {
                    stats.tombstones_removed += 1;
                    continue;
                }
                has_tombstone = true;
            }
            kept.push(r);
        }
        stats.records_retained += kept.len() as u64;
        let new_horizon = (has_tombstone && horizon.is_none())
            .then(|| now_ms.saturating_add(pass.log.config.delete_retention_ms.max(0)));
        if kept.is_empty() {
            if !pass.keeps_producer(h) {
                return Ok(Filtered::Dropped);
            }
            if records.is_empty() {
                return Ok(Filtered::Verbatim);
            }
            record_filter::write_batch(out, h, &data, &[], None)?;
            return Ok(Filtered::Rewritten);
        }
        let horizon = new_horizon.or(horizon);
        if has_tombstone {
            pass.note_horizon(horizon);
        }
        if kept.len() == records.len() && new_horizon.is_none() {
            return Ok(Filtered::Verbatim);
        }
        record_filter::write_batch(out, h, &data, &kept, horizon)?;
        Ok(Filtered::Rewritten)
    }

    /// Decides what happens to a transaction marker (Kafka's `checkBatchRetention` for
    /// control batches): kept while its transaction has data in the log; then given a
    /// delete horizon; removed (or emptied, if its producer needs it) once that has passed.
    /// A kept abort marker's aborted-transaction entry is added to `index`.
    fn filter_marker(
        &self,
        pass: &mut Pass<'_>,
        h: &BatchHeader,
        batch: &[u8],
        out: &mut Vec<u8>,
        index: &mut Vec<AbortedTxn>,
    ) -> Result<Filtered, String> {
        let data = record_filter::records_section(batch, h, MAX_DECOMPRESSED_BYTES)?;
        let records = record_filter::parse_records(&data, h)?;
        pass.stats.records_read += records.len() as u64;
        match pass.txns.on_marker(h, marker_in(&data, &records)) {
            MarkerFate::Keep(entry) => {
                index.extend(entry);
                pass.stats.records_retained += records.len() as u64;
                return Ok(Filtered::Verbatim);
            }
            MarkerFate::Discardable => {}
        }
        let horizon = record_filter::delete_horizon(h);
        if horizon.is_some_and(|t| t <= pass.now_ms) {
            if !pass.keeps_producer(h) {
                pass.stats.markers_removed += records.len() as u64;
                return Ok(Filtered::Dropped);
            }
            if records.is_empty() {
                return Ok(Filtered::Verbatim);
            }
            record_filter::write_batch(out, h, &data, &[], None)?;
            pass.stats.markers_removed += records.len() as u64;
            return Ok(Filtered::Rewritten);
        }
        pass.stats.records_retained += records.len() as u64;
        if horizon.is_some() {
            pass.note_horizon(horizon);
            return Ok(Filtered::Verbatim);
        }
        // Its transaction's data are gone: it may go after `delete.retention.ms`, so that
        // a reader already past the data still sees the transaction end.
        let horizon = pass
            .now_ms
            .saturating_add(pass.log.config.delete_retention_ms.max(0));
        let all: Vec<&RecordView> = records.iter().collect();
        record_filter::write_batch(out, h, &data, &all, Some(horizon))?;
        pass.note_horizon(Some(horizon));
        Ok(Filtered::Rewritten)
    }
}

/// Consecutive segments merged while their total size fits `max_bytes` and their offsets fit
/// one segment's 32-bit relative index (Kafka's `groupSegmentsBySize`).
fn group_by_size<'a>(
    segments: &[&'a SourceSegment],
    max_bytes: u64,
) -> Vec<Vec<&'a SourceSegment>> {
    let mut groups: Vec<Vec<&SourceSegment>> = Vec::new();
    let mut size = 0u64;
    for seg in segments {
        if let Some(g) = groups.last_mut() {
            let fits_offsets = g
                .first()
                .is_some_and(|f| seg.end_offset - f.base_offset <= i64::from(i32::MAX));
            if size + seg.size <= max_bytes && fits_offsets {
                g.push(seg);
                size += seg.size;
                continue;
            }
        }
        groups.push(vec![seg]);
        size = seg.size;
    }
    groups
}

/// Sequential reads of whole, CRC-checked batches from a sealed segment through a
/// read-ahead buffer.
struct SegmentReader<'a> {
    seg: &'a SourceSegment,
    cap: usize,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> SegmentReader<'a> {
    fn new(seg: &'a SourceSegment, cap: usize) -> Self {
        SegmentReader {
            seg,
            cap: cap.max(BATCH_HEADER_LEN),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Range in `buf` of the `len` bytes at `pos`, reading ahead when they are not there.
    fn window(&mut self, pos: u64, len: usize) -> io::Result<Range<usize>> {
        let end = pos + len as u64;
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want = (len.max(self.cap) as u64).min(self.seg.size - pos) as usize;
            self.buf.resize(want, 0);
            self.seg.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(from..from + len)
    }

    /// The batch at `pos` (which must be below the segment size): header and its bytes.
    fn batch_at(&mut self, pos: u64) -> Result<(BatchHeader, Range<usize>), CleanerError> {
        let corrupt = |reason: String| CleanerError::Corrupt {
            segment: self.seg.base_offset,
            position: pos,
            reason,
        };
        let remaining = self.seg.size - pos;
        let head = self.window(pos, (BATCH_HEADER_LEN as u64).min(remaining) as usize)?;
        let h = record_batch::peek_header(&self.buf[head]).map_err(|e| corrupt(e.to_string()))?;
        let total = h.total_len();
        if total as u64 > remaining || total > MAX_BATCH_BYTES {
            return Err(corrupt(format!(
                "batch of {total} bytes with {remaining} bytes left in the segment"
            )));
        }
        let range = self.window(pos, total)?;
        record_batch::validate(&self.buf[range.clone()]).map_err(|e| corrupt(e.to_string()))?;
        Ok((h, range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, end: i64, size: u64) -> SourceSegment {
        SourceSegment {
            base_offset: base,
            end_offset: end,
            file: Arc::new(tempfile::tempfile().unwrap()),
            size,
        }
    }

    #[test]
    fn groups_fit_segment_bytes_and_index_range() {
        let segs = [
            seg(0, 10, 400),
            seg(10, 20, 400),
            seg(20, 30, 400),
            seg(30, 40, 900),
        ];
        let refs: Vec<&SourceSegment> = segs.iter().collect();
        let g = group_by_size(&refs, 1000);
        let bases: Vec<Vec<i64>> = g
            .iter()
            .map(|g| g.iter().map(|s| s.base_offset).collect())
            .collect();
        assert_eq!(bases, vec![vec![0, 10], vec![20], vec![30]]);
        let wide = [seg(0, 10, 1), seg(10, i64::from(i32::MAX) + 1, 1)];
        let refs: Vec<&SourceSegment> = wide.iter().collect();
        assert_eq!(group_by_size(&refs, 1000).len(), 2);
    }

    fn header(pid: i64, base: i64, last_delta: i32, attributes: i16) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta: last_delta,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            records_count: last_delta + 1,
        }
    }

    const TXN: i16 = record_batch::TRANSACTIONAL_FLAG;
    const MARKER: i16 = record_batch::TRANSACTIONAL_FLAG | record_batch::CONTROL_FLAG;

    fn aborted(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: first,
        }
    }

    #[test]
    fn tracker_tells_aborted_batches_and_marker_fates() {
        // pid 1: aborted txn 0..=5 (data 0..=1 and 3..=4, abort at 5), then a committed
        // txn 6..=8; pid 2: committed txn 2..=9 (data at 2, commit at 9); pid 3: an aborted
        // txn whose data an earlier pass removed (only its abort marker at 10 is left).
        let list = [aborted(1, 0, 5), aborted(3, 7, 10), aborted(1, 0, 5)];
        let mut t = TxnTracker::new(&list, 0);
        assert_eq!(
            t.pending.len(),
            2,
            "duplicates from overlapping lookups are merged"
        );
        assert!(t.on_data_batch(&header(1, 0, 1, TXN)));
        assert!(!t.on_data_batch(&header(2, 2, 0, TXN)));
        assert!(!t.on_data_batch(&header(9, 2, 0, 0)), "not transactional");
        assert!(t.on_data_batch(&header(1, 3, 1, TXN)));
        let abort = Marker::Txn(ControlType::Abort);
        let commit = Marker::Txn(ControlType::Commit);
        assert_eq!(
            t.on_marker(&header(1, 5, 0, MARKER), abort),
            MarkerFate::Keep(Some(aborted(1, 0, 5)))
        );
        assert!(
            !t.on_data_batch(&header(1, 6, 0, TXN)),
            "the next transaction of the producer is not aborted"
        );
        assert_eq!(
            t.on_marker(&header(1, 8, 0, MARKER), commit),
            MarkerFate::Keep(None)
        );
        assert_eq!(
            t.on_marker(&header(2, 9, 0, MARKER), commit),
            MarkerFate::Keep(None)
        );
        assert_eq!(
            t.on_marker(&header(3, 10, 0, MARKER), abort),
            MarkerFate::Discardable,
            "no data of its transaction is left"
        );
        // A commit whose data are all gone, an emptied marker, an unknown control type.
        assert_eq!(
            t.on_marker(&header(2, 11, 0, MARKER), commit),
            MarkerFate::Discardable
        );
        assert_eq!(
            t.on_marker(&header(2, 12, 0, MARKER), Marker::Empty),
            MarkerFate::Discardable
        );
        assert_eq!(
            t.on_marker(&header(2, 13, 0, MARKER), Marker::Unknown),
            MarkerFate::Keep(None)
        );
        // An abort marker the index missed keeps the data it could not tell apart.
        assert!(!t.on_data_batch(&header(4, 14, 0, TXN)));
        assert_eq!(
            t.on_marker(&header(4, 15, 0, MARKER), abort),
            MarkerFate::Keep(None)
        );
    }

    #[test]
    fn a_pass_starting_past_an_aborted_transaction_ignores_it() {
        // pid 1 aborted 0..=5, then committed a transaction at 12..=15; the offset map is
        // built from 10 on.
        let mut t = TxnTracker::new(&[aborted(1, 0, 5)], 10);
        assert!(!t.on_data_batch(&header(1, 12, 1, TXN)));
        assert_eq!(
            t.on_marker(&header(1, 15, 0, MARKER), Marker::Txn(ControlType::Commit)),
            MarkerFate::Keep(None)
        );
        // From 5 on, its marker is read and ends it.
        let mut t = TxnTracker::new(&[aborted(1, 0, 5)], 5);
        let abort = Marker::Txn(ControlType::Abort);
        assert_eq!(
            t.on_marker(&header(1, 5, 0, MARKER), abort),
            MarkerFate::Discardable
        );
        assert!(!t.on_data_batch(&header(1, 12, 1, TXN)));
    }

    #[test]
    fn last_record_of_a_producer() {
        let data = LastRecord {
            last_data_offset: Some(5),
            epoch: 0,
        };
        assert!(data.is_kept_by(&header(1, 4, 1, TXN)));
        assert!(!data.is_kept_by(&header(1, 5, 0, MARKER)));
        assert!(!data.is_kept_by(&header(1, 2, 1, 0)));
        let markers_only = LastRecord {
            last_data_offset: None,
            epoch: 0,
        };
        assert!(markers_only.is_kept_by(&header(1, 9, 0, MARKER)));
        assert!(!markers_only.is_kept_by(&header(1, 9, 0, TXN)));
        let mut older = header(1, 9, 0, MARKER);
        older.producer_epoch = -1;
        assert!(!markers_only.is_kept_by(&older));
    }
}
