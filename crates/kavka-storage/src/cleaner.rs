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
//! Control batches are copied unchanged; records without a key are dropped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use kavka_protocol::record_batch::{self, BatchHeader, BATCH_HEADER_LEN};
use thiserror::Error;

use crate::offset_map::{OffsetMap, SLOT_BYTES};
use crate::record_filter::{self, RecordView};
use crate::segment::{LogSegment, LOG_SUFFIX};
use crate::segment_swap;
use crate::LogConfig;

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
    /// Last offset of each idempotent producer's last batch.
    pub(crate) producer_last_offsets: HashMap<i64, i64>,
    pub(crate) clean_bytes: u64,
    pub(crate) dirty_bytes: u64,
    pub(crate) max_lag_exceeded: bool,
    /// A kept tombstone's delete horizon has passed: a round would remove it.
    pub(crate) tombstones_due: bool,
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
        let mut stats = CleanerStats::default();
        let end = self.build_offset_map(log, &mut stats)?;
        stats.keys = self.map.len();
        let to_clean: Vec<&SourceSegment> = log
            .segments
            .iter()
            .filter(|s| s.base_offset < end)
            .collect();
        let mut groups = std::collections::VecDeque::new();
        for group in group_by_size(&to_clean, log.config.effective_segment_bytes()) {
            if let Some(g) = self.clean_group(log, &group, now_ms, &mut stats)? {
                groups.push_back(g);
            }
        }
        Ok(CleanedLog {
            generation: log.generation,
            groups,
            replaced: 0,
            written: 0,
            first_dirty_offset: end,
            stats,
        })
    }

    /// Fills the map from the dirty section; returns the offset it covers up to.
    fn build_offset_map(
        &mut self,
        log: &CleanableLog,
        stats: &mut CleanerStats,
    ) -> Result<i64, CleanerError> {
        self.map.clear();
        let first_dirty = log.first_dirty_offset;
        for seg in log.segments.iter().filter(|s| s.end_offset > first_dirty) {
            let mut reader = SegmentReader::new(seg, self.config.io_buffer_bytes);
            let mut pos = 0u64;
            while pos < seg.size {
                let (h, range) = reader.batch_at(pos)?;
                let at = pos;
                pos += h.total_len() as u64;
                if h.last_offset() < first_dirty || h.is_control() {
                    continue;
                }
                let batch = &reader.buf[range];
                let corrupt = |reason: String| CleanerError::Corrupt {
                    segment: seg.base_offset,
                    position: at,
                    reason,
                };
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
        log: &CleanableLog,
        group: &[&SourceSegment],
        now_ms: i64,
        stats: &mut CleanerStats,
    ) -> Result<Option<CleanedGroup>, CleanerError> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(None);
        };
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
                stats.bytes_read += batch.len() as u64;
                let before = out.len();
                match self.filter_batch(log, &h, batch, now_ms, &mut out, stats) {
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
        stats.bytes_written += written;
        stats.segments_written += 1;
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

    /// Decides what survives of one batch; rebuilt batches are appended to `out` here,
    /// verbatim ones by the caller.
    fn filter_batch(
        &self,
        log: &CleanableLog,
        h: &BatchHeader,
        batch: &[u8],
        now_ms: i64,
        out: &mut Vec<u8>,
        stats: &mut CleanerStats,
    ) -> Result<Filtered, String> {
        if h.is_control() {
            return Ok(Filtered::Verbatim);
        }
        let data = record_filter::records_section(batch, h, MAX_DECOMPRESSED_BYTES)?;
        let records = record_filter::parse_records(&data, h)?;
        stats.records_read += records.len() as u64;
        let horizon = record_filter::delete_horizon(h);
        let tombstones_expired = horizon.is_some_and(|t| t <= now_ms);
        let mut kept: Vec<&RecordView> = Vec::with_capacity(records.len());
        let mut has_tombstone = false;
        for r in &records {
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
            .then(|| now_ms.saturating_add(log.config.delete_retention_ms.max(0)));
        let last_for_producer = h.producer_id >= 0
            && log.producer_last_offsets.get(&h.producer_id) == Some(&h.last_offset());
        if kept.is_empty() {
            if !last_for_producer {
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
            stats.earliest_delete_horizon = stats.earliest_delete_horizon.min(horizon).or(horizon);
        }
        if kept.len() == records.len() && new_horizon.is_none() {
            return Ok(Filtered::Verbatim);
        }
        record_filter::write_batch(out, h, &data, &kept, horizon)?;
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
}
