//! One log segment: a `.log` file of whole v2 batches plus its sparse `.index` and
//! `.timeindex`, all named by the segment's base offset (Kafka's `LogSegment`).
//!
//! The log file is shared as `Arc<File>` so a read plan or flush job keeps working after the
//! segment is rolled, truncated away or deleted (unlink while open is fine on Unix). Indexes
//! are kept in memory; those of sealed segments are loaded only when first needed, so idle
//! partitions with many segments cost one file descriptor and a few words per segment.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use kavka_protocol::record_batch::BatchHeader;
use tracing::warn;

use crate::batch_reader::{FileWindow, HEADER_WINDOW, SCAN_WINDOW};
use crate::offset_index::{self, OffsetIndex};
use crate::time_index::{self, TimeIndex};
use crate::txn_index::{TxnIndex, TXN_INDEX_SUFFIX};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// Largest batch the timestamp lookup will load to find a record inside it.
const MAX_DECODE_BYTES: usize = 256 * 1024 * 1024;
/// Index files larger than this are treated as corrupt and rebuilt instead of read.
const MAX_INDEX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Index density used when a sealed segment's index is rebuilt lazily (no config at hand).
const REBUILD_INDEX_INTERVAL: usize = 4096;

/// `<dir>/<base offset, 20 digits>.<suffix>`, Kafka's file naming.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A batch about to be written, as located in the append buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingBatch {
    pub position: usize,
    pub len: usize,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// The running state that decides where index entries go. Shared by append and by index
/// rebuilds so a rebuilt index is exactly the one appends would have produced.
#[derive(Clone, Copy, Debug)]
struct Tracker {
    next_offset: i64,
    max_timestamp: i64,
    last_batch_base: i64,
    bytes_since_last_index_entry: usize,
}

impl Tracker {
    fn new(base_offset: i64) -> Self {
        Tracker {
            next_offset: base_offset,
            max_timestamp: -1,
            last_batch_base: -1,
            bytes_since_last_index_entry: 0,
        }
    }

    /// Accounts for one batch at `position`, adding index entries when the interval is up.
    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        offset_index: &mut OffsetIndex,
        time_index: &mut TimeIndex,
        files: Option<&IndexFiles>,
        interval: usize,
        position: u64,
        batch: &PendingBatch,
    ) -> io::Result<()> {
        self.max_timestamp = self.max_timestamp.max(batch.max_timestamp);
        if self.bytes_since_last_index_entry > interval {
            offset_index.append(batch.base_offset, position, files.map(|f| &*f.offset))?;
            time_index.maybe_append(
                self.max_timestamp,
                batch.base_offset,
                files.map(|f| &*f.time),
            )?;
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += batch.len;
        self.last_batch_base = batch.base_offset;
        self.next_offset = batch.last_offset + 1;
        Ok(())
    }
}

/// Writable handles of the index files, held while the segment is active or not yet fsynced.
#[derive(Clone, Debug)]
pub(crate) struct IndexFiles {
    pub offset: Arc<File>,
    pub time: Arc<File>,
}

/// Result of a scan over a whole segment.
pub(crate) struct ScanOutcome {
    /// Bytes of valid batches from the start of the file.
    pub valid_size: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

#[derive(Debug)]
pub(crate) struct LogSegment {
    dir: PathBuf,
    base_offset: i64,
    log: Arc<File>,
    size: u64,
    offset_index: OnceLock<OffsetIndex>,
    time_index: OnceLock<TimeIndex>,
    index_files: Option<IndexFiles>,
    /// Largest batch max timestamp in the segment, -1 if none.
    max_timestamp: i64,
    /// Exact while the segment is active; for sealed segments opened without a scan it is
    /// the next segment's base offset (an upper bound), which is all the log needs.
    next_offset: i64,
    last_batch_base: i64,
    bytes_since_last_index_entry: usize,
    /// Time the age-based roll counts from (`segment.ms`).
    rolling_based_ms: i64,
    /// Aborted transactions whose markers are in this segment (`<base>.txnindex`).
    txn_index: TxnIndex,
}

fn open_rw(path: &Path, create: bool, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(truncate)
        .open(path)
}

fn read_small_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(f) => {
            let len = f.metadata()?.len();
            if len > MAX_INDEX_FILE_BYTES {
                return Ok(None);
            }
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, 0)?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl LogSegment {
    /// Creates an empty segment (replacing stale files of the same name).
    pub(crate) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> io::Result<LogSegment> {
        let log = open_rw(&segment_path(dir, base_offset, LOG_SUFFIX), true, true)?;
        let offset = open_rw(&segment_path(dir, base_offset, INDEX_SUFFIX), true, true)?;
        let time = open_rw(
            &segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
            true,
            true,
        )?;
        let seg = LogSegment {
            dir: dir.to_path_buf(),
            base_offset,
            log: Arc::new(log),
            size: 0,
            offset_index: OnceLock::from(OffsetIndex::new(base_offset)),
            time_index: OnceLock::from(TimeIndex::new(base_offset)),
            index_files: Some(IndexFiles {
                offset: Arc::new(offset),
                time: Arc::new(time),
            }),
            max_timestamp: -1,
            next_offset: base_offset,
            last_batch_base: -1,
            bytes_since_last_index_entry: 0,
            rolling_based_ms: now_ms,
            txn_index: TxnIndex::create(dir, base_offset)?,
        };
        Ok(seg)
    }

    /// Opens an existing segment that recovery will validate and index from scratch.
    pub(crate) fn open_unchecked(dir: &Path, base_offset: i64) -> io::Result<LogSegment> {
        let log = open_rw(&segment_path(dir, base_offset, LOG_SUFFIX), false, false)?;
        let size = log.metadata()?.len();
        Ok(LogSegment {
            dir: dir.to_path_buf(),
            base_offset,
            log: Arc::new(log),
            size,
            offset_index: OnceLock::new(),
            time_index: OnceLock::new(),
            index_files: None,
            max_timestamp: -1,
            next_offset: base_offset,
            last_batch_base: -1,
            bytes_since_last_index_entry: 0,
            rolling_based_ms: 0,
            txn_index: TxnIndex::lazy(dir, base_offset),
        })
    }

    /// Opens an existing segment whose contents are trusted (below the recovery point or after
    /// a clean shutdown). Indexes stay on disk until needed; the max timestamp comes from the
    /// last time index entry, or from a rebuild when that file is unusable.
    pub(crate) fn open_existing(
        dir: &Path,
        base_offset: i64,
        next_upper: i64,
    ) -> io::Result<LogSegment> {
        let log = open_rw(&segment_path(dir, base_offset, LOG_SUFFIX), false, false)?;
        let size = log.metadata()?.len();
        let mut seg = LogSegment {
            dir: dir.to_path_buf(),
            base_offset,
            log: Arc::new(log),
            size,
            offset_index: OnceLock::new(),
            time_index: OnceLock::new(),
            index_files: None,
            max_timestamp: -1,
            next_offset: next_upper,
            last_batch_base: -1,
            bytes_since_last_index_entry: 0,
            rolling_based_ms: 0,
            txn_index: TxnIndex::lazy(dir, base_offset),
        };
        if size > 0 {
            // The last time entry covers every batch up to the last offset index entry; the
            // batches after it are walked. This does not depend on the final entry written
            // when the segment was sealed having reached the disk.
            let indexed = seg.read_last_time_entry(next_upper)?;
            let known = match seg.tail_max_timestamp(next_upper)? {
                Some((tail, true)) => Some(tail),
                Some((tail, false)) => indexed.map(|ts| ts.max(tail)),
                None => None,
            };
            match known {
                Some(ts) => seg.max_timestamp = ts,
                None => {
                    let (_, ti) = seg.indexes(Some(next_upper))?;
                    seg.max_timestamp = ti.last().map_or(-1, |(ts, _)| ts);
                }
            }
        }
        Ok(seg)
    }

    /// Wraps a segment the cleaner wrote as `<base>.log.cleaned` (fsynced): indexes it from
    /// its batch headers and writes the indexes as `.index.cleaned` / `.timeindex.cleaned`,
    /// fsynced, so the swap under the log lock is only renames. `next_upper` is the first
    /// offset past the segments it replaces.
    pub(crate) fn from_cleaned(
        dir: &Path,
        base_offset: i64,
        log: Arc<File>,
        next_upper: i64,
        interval: usize,
    ) -> io::Result<LogSegment> {
        let size = log.metadata()?.len();
        let mut seg = LogSegment {
            dir: dir.to_path_buf(),
            base_offset,
            log,
            size,
            offset_index: OnceLock::new(),
            time_index: OnceLock::new(),
            index_files: None,
            max_timestamp: -1,
            next_offset: next_upper,
            last_batch_base: -1,
            bytes_since_last_index_entry: 0,
            rolling_based_ms: 0,
            txn_index: TxnIndex::lazy(dir, base_offset),
        };
        let mut oi = OffsetIndex::new(base_offset);
        let mut ti = TimeIndex::new(base_offset);
        let (tracker, outcome) = seg.scan(false, interval, &mut oi, &mut ti)?;
        if let Some(why) = outcome.stopped {
            return Err(corrupt(format!("cleaned segment {base_offset}: {why}")));
        }
        if tracker.next_offset > next_upper {
            return Err(corrupt(format!(
                "cleaned segment {base_offset} runs to {} past {next_upper}",
                tracker.next_offset
            )));
        }
        for (suffix, bytes) in [
            (INDEX_SUFFIX, oi.to_bytes()),
            (TIME_INDEX_SUFFIX, ti.to_bytes()),
        ] {
            let path = crate::segment_swap::cleaned_path(dir, base_offset, suffix);
            let f = open_rw(&path, true, true)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_all()?;
        }
        seg.max_timestamp = tracker.max_timestamp;
        seg.last_batch_base = tracker.last_batch_base;
        seg.offset_index = OnceLock::from(oi);
        seg.time_index = OnceLock::from(ti);
        Ok(seg)
    }

    /// Max timestamp of the batches from the last offset index entry to the end of the log,
    /// and whether that is the whole segment; `None` when the index does not fit the log.
    fn tail_max_timestamp(&self, next_upper: i64) -> io::Result<Option<(i64, bool)>> {
        let path = segment_path(&self.dir, self.base_offset, INDEX_SUFFIX);
        let (offset, mut pos) = match File::open(&path) {
            Ok(f) => {
                let entries = f.metadata()?.len() / offset_index::ENTRY_SIZE as u64;
                if entries == 0 {
                    (None, 0)
                } else {
                    let mut buf = [0u8; offset_index::ENTRY_SIZE];
                    f.read_exact_at(&mut buf, (entries - 1) * offset_index::ENTRY_SIZE as u64)?;
                    let idx = OffsetIndex::parse(self.base_offset, &buf);
                    if idx.sanity_check(self.size, Some(next_upper)).is_err() {
                        return Ok(None);
                    }
                    let (offset, pos) = idx.last();
                    (Some(offset), pos)
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, 0),
            Err(e) => return Err(e),
        };
        let whole = offset.is_none();
        let mut expected = offset.unwrap_or(self.base_offset);
        let mut max = -1;
        let mut w = FileWindow::new(&self.log, self.size, HEADER_WINDOW);
        while pos < self.size {
            let Ok(h) = w.header_at(pos)? else {
                return Ok(None);
            };
            let total = h.total_len() as u64;
            let misplaced = offset.is_some_and(|o| expected == o && h.base_offset != o);
            if misplaced
                || h.last_offset() >= next_upper
                || self
                    .check_batch(&h, pos, total, expected, self.size)
                    .is_err()
            {
                return Ok(None);
            }
            max = max.max(h.max_timestamp);
            expected = h.next_offset();
            pos += total;
        }
        Ok(Some((max, whole)))
    }

    /// Last entry of the `.timeindex` file, if it exists and is plausible.
    fn read_last_time_entry(&self, next_upper: i64) -> io::Result<Option<i64>> {
        let path = segment_path(&self.dir, self.base_offset, TIME_INDEX_SUFFIX);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let entries = len / time_index::ENTRY_SIZE as u64;
        if entries == 0 {
            return Ok(None);
        }
        let mut buf = [0u8; time_index::ENTRY_SIZE];
        f.read_exact_at(&mut buf, (entries - 1) * time_index::ENTRY_SIZE as u64)?;
        let e = time_index::decode(&buf);
        let offset = self.base_offset + i64::from(e.relative_offset);
        Ok((e.timestamp >= 0 && offset < next_upper).then_some(e.timestamp))
    }

    /// Makes an opened segment the active one: loads and checks its indexes, opens them for
    /// appending and finds the log end by walking headers from the last index entry. Returns
    /// an error message when the tail does not parse (the caller then recovers the segment).
    pub(crate) fn activate(&mut self, now_ms: i64) -> io::Result<Result<(), String>> {
        self.indexes(None)?;
        let (indexed, (last_offset, last_pos)) = self
            .offset_index
            .get()
            .map_or((false, (self.base_offset, 0)), |oi| {
                (oi.len() > 0, oi.last())
            });
        let mut w = FileWindow::new(&self.log, self.size, SCAN_WINDOW);
        let mut tracker = Tracker::new(self.base_offset);
        tracker.next_offset = last_offset;
        tracker.max_timestamp = self
            .time_index
            .get()
            .and_then(|t| t.last())
            .map_or(-1, |(ts, _)| ts);
        // Append resets the counter on each indexed batch, so it is the bytes from there on.
        tracker.bytes_since_last_index_entry = (self.size - last_pos) as usize;
        let mut pos = last_pos;
        while pos < self.size {
            let h = match w.header_at(pos)? {
                Ok(h) => h,
                Err(e) => return Ok(Err(format!("batch at {pos}: {e}"))),
            };
            let total = h.total_len() as u64;
            let misplaced = pos == last_pos && indexed && h.base_offset != last_offset;
            if misplaced
                || self
                    .check_batch(&h, pos, total, tracker.next_offset, self.size)
                    .is_err()
            {
                return Ok(Err(format!("batch at {pos} is torn or out of order")));
            }
            tracker.max_timestamp = tracker.max_timestamp.max(h.max_timestamp);
            tracker.last_batch_base = h.base_offset;
            tracker.next_offset = h.next_offset();
            pos += total;
        }
        self.apply_tracker(&tracker);
        self.rolling_based_ms = self.first_batch_timestamp()?.unwrap_or(now_ms);
        self.open_index_files()?;
        Ok(Ok(()))
    }

    fn apply_tracker(&mut self, t: &Tracker) {
        self.next_offset = t.next_offset;
        self.max_timestamp = self.max_timestamp.max(t.max_timestamp);
        self.last_batch_base = t.last_batch_base;
        self.bytes_since_last_index_entry = t.bytes_since_last_index_entry;
    }

    pub(crate) fn first_batch_timestamp(&self) -> io::Result<Option<i64>> {
        if self.size == 0 {
            return Ok(None);
        }
        let mut w = FileWindow::new(&self.log, self.size, HEADER_WINDOW);
        Ok(w.header_at(0)?
            .ok()
            .map(|h| h.max_timestamp)
            .filter(|ts| *ts >= 0))
    }

    /// Opens the index files for appending, trimming them to the entries held in memory.
    fn open_index_files(&mut self) -> io::Result<()> {
        let offset = open_rw(
            &segment_path(&self.dir, self.base_offset, INDEX_SUFFIX),
            true,
            false,
        )?;
        let time = open_rw(
            &segment_path(&self.dir, self.base_offset, TIME_INDEX_SUFFIX),
            true,
            false,
        )?;
        let files = IndexFiles {
            offset: Arc::new(offset),
            time: Arc::new(time),
        };
        if let Some(oi) = self.offset_index.get_mut() {
            oi.truncate_entries(oi.len(), Some(&files.offset))?;
        }
        if let Some(ti) = self.time_index.get_mut() {
            ti.truncate_entries(ti.len(), Some(&files.time))?;
        }
        self.index_files = Some(files);
        Ok(())
    }

    /// Validates every batch (CRC included), truncates the file after the last good one,
    /// rebuilds both indexes and leaves the segment ready to be the active one.
    pub(crate) fn recover(&mut self, interval: usize, now_ms: i64) -> io::Result<ScanOutcome> {
        let outcome = self.rebuild(true, interval)?;
        if outcome.valid_size < self.size {
            self.log.set_len(outcome.valid_size)?;
            self.size = outcome.valid_size;
        }
        self.rolling_based_ms = self.first_batch_timestamp()?.unwrap_or(now_ms);
        self.open_index_files()?;
        Ok(outcome)
    }

    /// Scans the whole segment, replacing the in-memory indexes and the index files.
    fn rebuild(&mut self, validate: bool, interval: usize) -> io::Result<ScanOutcome> {
        let mut oi = OffsetIndex::new(self.base_offset);
        let mut ti = TimeIndex::new(self.base_offset);
        let (tracker, outcome) = self.scan(validate, interval, &mut oi, &mut ti)?;
        self.write_index_files(&oi, &ti)?;
        self.offset_index = OnceLock::from(oi);
        self.time_index = OnceLock::from(ti);
        self.max_timestamp = tracker.max_timestamp;
        self.apply_tracker(&tracker);
        Ok(outcome)
    }

    fn scan(
        &self,
        validate: bool,
        interval: usize,
        oi: &mut OffsetIndex,
        ti: &mut TimeIndex,
    ) -> io::Result<(Tracker, ScanOutcome)> {
        let mut w = FileWindow::new(&self.log, self.size, SCAN_WINDOW);
        let mut tracker = Tracker::new(self.base_offset);
        let mut pos = 0u64;
        let mut stopped = None;
        while pos < self.size {
            let header = if validate {
                w.validate_at(pos)?
            } else {
                w.header_at(pos)?
            };
            let h = match header {
                Ok(h) => h,
                Err(e) => {
                    stopped = Some(format!("batch at position {pos}: {e}"));
                    break;
                }
            };
            let total = h.total_len() as u64;
            if let Err(why) = self.check_batch(&h, pos, total, tracker.next_offset, w.file_len()) {
                stopped = Some(why);
                break;
            }
            let batch = PendingBatch {
                position: 0,
                len: h.total_len(),
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp,
            };
            tracker.track(oi, ti, None, interval, pos, &batch)?;
            pos += total;
        }
        // Seal-style final entry so the time index's last entry is the segment maximum.
        if tracker.last_batch_base >= 0 {
            ti.maybe_append(tracker.max_timestamp, tracker.last_batch_base, None)?;
        }
        Ok((
            tracker,
            ScanOutcome {
                valid_size: pos,
                stopped,
            },
        ))
    }

    /// Structural checks on a batch found on disk: whole, in offset order, addressable.
    fn check_batch(
        &self,
        h: &BatchHeader,
        pos: u64,
        total: u64,
        expected_min: i64,
        file_len: u64,
    ) -> Result<(), String> {
        if pos + total > file_len {
            return Err(format!("batch at position {pos} is torn"));
        }
        if h.base_offset < expected_min {
            return Err(format!(
                "batch at position {pos} has offset {} below {expected_min}",
                h.base_offset
            ));
        }
        if h.last_offset() - self.base_offset > i64::from(i32::MAX) || pos > u64::from(u32::MAX) {
            return Err(format!(
                "batch at position {pos} does not fit the segment's index"
            ));
        }
        Ok(())
    }

    fn write_index_files(&self, oi: &OffsetIndex, ti: &TimeIndex) -> io::Result<()> {
        for (suffix, bytes) in [
            (INDEX_SUFFIX, oi.to_bytes()),
            (TIME_INDEX_SUFFIX, ti.to_bytes()),
        ] {
            let f = open_rw(
                &segment_path(&self.dir, self.base_offset, suffix),
                true,
                true,
            )?;
            f.write_all_at(&bytes, 0)?;
        }
        Ok(())
    }

    /// Both indexes, loading them from disk (and rebuilding them if they are missing or do
    /// not fit the log) on first use.
    pub(crate) fn indexes(
        &self,
        next_upper: Option<i64>,
    ) -> io::Result<(&OffsetIndex, &TimeIndex)> {
        if let (Some(oi), Some(ti)) = (self.offset_index.get(), self.time_index.get()) {
            return Ok((oi, ti));
        }
        let oi_bytes = read_small_file(&segment_path(&self.dir, self.base_offset, INDEX_SUFFIX))?;
        let ti_bytes = read_small_file(&segment_path(
            &self.dir,
            self.base_offset,
            TIME_INDEX_SUFFIX,
        ))?;
        let loaded = match (oi_bytes, ti_bytes) {
            (Some(ob), Some(tb)) => {
                let oi = OffsetIndex::parse(self.base_offset, &ob);
                let ti = TimeIndex::parse(self.base_offset, &tb);
                match oi
                    .sanity_check(self.size, next_upper)
                    .and_then(|_| ti.sanity_check(next_upper))
                {
                    Ok(()) if self.size == 0 || ti.len() > 0 || next_upper.is_none() => {
                        Some((oi, ti))
                    }
                    Ok(()) => None,
                    Err(why) => {
                        warn!(segment = %self.log_path().display(), %why, "index inconsistent with the log; rebuilding");
                        None
                    }
                }
            }
            _ => None,
        };
        let (oi, ti) = match loaded {
            Some(pair) => pair,
            None => {
                let mut oi = OffsetIndex::new(self.base_offset);
                let mut ti = TimeIndex::new(self.base_offset);
                let (_, outcome) = self.scan(false, REBUILD_INDEX_INTERVAL, &mut oi, &mut ti)?;
                if let Some(why) = outcome.stopped {
                    return Err(corrupt(format!(
                        "segment {}: {why}",
                        self.log_path().display()
                    )));
                }
                self.write_index_files(&oi, &ti)?;
                (oi, ti)
            }
        };
        let oi = self.offset_index.get_or_init(|| oi);
        let ti = self.time_index.get_or_init(|| ti);
        Ok((oi, ti))
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        segment_path(&self.dir, self.base_offset, LOG_SUFFIX)
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub(crate) fn rolling_based_ms(&self) -> i64 {
        self.rolling_based_ms
    }
    pub(crate) fn log_file(&self) -> &Arc<File> {
        &self.log
    }
    pub(crate) fn index_files(&self) -> Option<&IndexFiles> {
        self.index_files.as_ref()
    }
    /// Releases the index file handles once everything in them is durable.
    pub(crate) fn release_index_files(&mut self) {
        self.index_files = None;
        self.txn_index.release_writer();
    }
    pub(crate) fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }
    pub(crate) fn txn_index_mut(&mut self) -> &mut TxnIndex {
        &mut self.txn_index
    }

    pub(crate) fn offset_index_entries(&self) -> usize {
        self.offset_index.get().map_or(0, |i| i.len())
    }
    pub(crate) fn time_index_entries(&self) -> usize {
        self.time_index.get().map_or(0, |i| i.len())
    }

    /// Appends already-assigned batches (the whole of `buf`) at the end of the segment.
    /// On failure nothing is left behind: log and index files are cut back.
    pub(crate) fn append(
        &mut self,
        buf: &[u8],
        batches: &[PendingBatch],
        interval: usize,
        now_ms: i64,
    ) -> io::Result<()> {
        let start = self.size;
        if start == 0 {
            // segment.ms counts from the first append, not from when an idle segment was made.
            self.rolling_based_ms = now_ms;
        }
        let (oi_len, ti_len) = (self.offset_index_entries(), self.time_index_entries());
        let before = Tracker {
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            last_batch_base: self.last_batch_base,
            bytes_since_last_index_entry: self.bytes_since_last_index_entry,
        };
        let result = self.append_inner(buf, batches, interval, start);
        if result.is_err() {
            let files = self.index_files.clone();
            let _ = self.log.set_len(start);
            if let Some(oi) = self.offset_index.get_mut() {
                let _ = oi.truncate_entries(oi_len, files.as_ref().map(|f| &*f.offset));
            }
            if let Some(ti) = self.time_index.get_mut() {
                let _ = ti.truncate_entries(ti_len, files.as_ref().map(|f| &*f.time));
            }
            self.size = start;
            self.max_timestamp = before.max_timestamp;
            self.apply_tracker(&before);
        }
        result
    }

    fn append_inner(
        &mut self,
        buf: &[u8],
        batches: &[PendingBatch],
        interval: usize,
        start: u64,
    ) -> io::Result<()> {
        self.log.write_all_at(buf, start)?;
        let files = self.index_files.clone();
        let mut tracker = Tracker {
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            last_batch_base: self.last_batch_base,
            bytes_since_last_index_entry: self.bytes_since_last_index_entry,
        };
        let (Some(oi), Some(ti)) = (self.offset_index.get_mut(), self.time_index.get_mut()) else {
            return Err(io::Error::other(
                "append to a segment whose indexes are not loaded",
            ));
        };
        for b in batches {
            debug_assert!(b.base_offset >= tracker.next_offset);
            tracker.track(
                oi,
                ti,
                files.as_ref(),
                interval,
                start + b.position as u64,
                b,
            )?;
        }
        self.size = start + buf.len() as u64;
        self.apply_tracker(&tracker);
        Ok(())
    }

    /// Marks the segment as no longer active: records its max timestamp as the last time
    /// index entry and trims spare index capacity.
    pub(crate) fn seal(&mut self) -> io::Result<()> {
        let files = self.index_files.clone();
        if let Some(ti) = self.time_index.get_mut() {
            if self.last_batch_base >= 0 {
                ti.maybe_append(
                    self.max_timestamp,
                    self.last_batch_base,
                    files.as_ref().map(|f| &*f.time),
                )?;
            }
            ti.shrink_to_fit();
        }
        if let Some(oi) = self.offset_index.get_mut() {
            oi.shrink_to_fit();
        }
        Ok(())
    }

    /// Position and header of the first batch holding an offset >= `offset`, if any.
    pub(crate) fn translate_offset(
        &self,
        offset: i64,
        next_upper: Option<i64>,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let (oi, _) = self.indexes(next_upper)?;
        let (_, mut pos) = oi.lookup(offset);
        let mut w = FileWindow::new(&self.log, self.size, HEADER_WINDOW);
        while pos < self.size {
            let h = w
                .header_at(pos)?
                .map_err(|e| corrupt(format!("{}: {e}", self.log_path().display())))?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Calls `f` with the header of every batch holding an offset >= `from_offset`, in log
    /// order. Headers only: nothing is decompressed or CRC-checked.
    pub(crate) fn for_each_header(
        &self,
        from_offset: i64,
        next_upper: Option<i64>,
        mut f: impl FnMut(&BatchHeader),
    ) -> io::Result<()> {
        let Some((mut pos, _)) = self.translate_offset(from_offset, next_upper)? else {
            return Ok(());
        };
        let mut w = FileWindow::new(&self.log, self.size, SCAN_WINDOW);
        while pos < self.size {
            let h = w
                .header_at(pos)?
                .map_err(|e| corrupt(format!("{}: {e}", self.log_path().display())))?;
            f(&h);
            pos += h.total_len() as u64;
        }
        Ok(())
    }

    /// [`LogSegment::for_each_header`] that also hands over the bytes of each control batch
    /// (whole, when at most `max_control_bytes`; `None` otherwise), whose one record says
    /// which transaction marker it is.
    pub(crate) fn for_each_batch_with_control(
        &self,
        from_offset: i64,
        next_upper: Option<i64>,
        max_control_bytes: usize,
        mut f: impl FnMut(&BatchHeader, Option<&[u8]>),
    ) -> io::Result<()> {
        let Some((mut pos, _)) = self.translate_offset(from_offset, next_upper)? else {
            return Ok(());
        };
        let mut w = FileWindow::new(&self.log, self.size, SCAN_WINDOW);
        let mut control = Vec::new();
        while pos < self.size {
            let h = w
                .header_at(pos)?
                .map_err(|e| corrupt(format!("{}: {e}", self.log_path().display())))?;
            let total = h.total_len();
            if h.is_control() && total <= max_control_bytes && pos + total as u64 <= self.size {
                control.resize(total, 0);
                self.log.read_exact_at(&mut control, pos)?;
                f(&h, Some(&control));
            } else {
                f(&h, None);
            }
            pos += total as u64;
        }
        Ok(())
    }

    /// The largest batch boundary in `[start, limit]`, `start` being a boundary itself.
    pub(crate) fn boundary_at_or_below(
        &self,
        start: u64,
        limit: u64,
        next_upper: Option<i64>,
    ) -> io::Result<u64> {
        if limit >= self.size {
            return Ok(self.size);
        }
        let (oi, _) = self.indexes(next_upper)?;
        let (_, indexed) = oi.lookup_position(limit);
        let mut pos = indexed.max(start);
        let mut w = FileWindow::new(&self.log, self.size, HEADER_WINDOW);
        loop {
            let h = w
                .header_at(pos)?
                .map_err(|e| corrupt(format!("{}: {e}", self.log_path().display())))?;
            let next = pos + h.total_len() as u64;
            if next > limit {
                return Ok(pos);
            }
            pos = next;
        }
    }

    /// The first record at or after `min_offset` whose timestamp is >= `timestamp`, as
    /// (offset, timestamp).
    pub(crate) fn find_offset_by_timestamp(
        &self,
        timestamp: i64,
        min_offset: i64,
        next_upper: Option<i64>,
    ) -> io::Result<Option<(i64, i64)>> {
        let (oi, ti) = self.indexes(next_upper)?;
        let from_time = ti
            .lookup_below(timestamp)
            .map_or(0, |(_, off)| oi.lookup(off).1);
        let from_offset = oi.lookup(min_offset).1;
        let mut pos = from_time.max(from_offset);
        let mut w = FileWindow::new(&self.log, self.size, HEADER_WINDOW);
        while pos < self.size {
            let h = w
                .header_at(pos)?
                .map_err(|e| corrupt(format!("{}: {e}", self.log_path().display())))?;
            if h.max_timestamp >= timestamp && h.last_offset() >= min_offset {
                if let Some(found) = self.find_in_batch(pos, &h, timestamp, min_offset)? {
                    return Ok(Some(found));
                }
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Looks inside one batch for the first record matching; decodes (and decompresses) it
    /// unless the batch uses LogAppendTime, where every record carries the batch timestamp.
    fn find_in_batch(
        &self,
        pos: u64,
        h: &BatchHeader,
        timestamp: i64,
        min_offset: i64,
    ) -> io::Result<Option<(i64, i64)>> {
        let shallow = Some((h.base_offset.max(min_offset), h.max_timestamp));
        let total = h.total_len();
        if h.is_log_append_time() || total > MAX_DECODE_BYTES || pos + total as u64 > self.size {
            return Ok(shallow);
        }
        let mut buf = vec![0u8; total];
        self.log.read_exact_at(&mut buf, pos)?;
        let mut bytes = Bytes::from(buf);
        match RecordBatchDecoder::decode(&mut bytes) {
            Ok(set) => Ok(set
                .records
                .iter()
                .find(|r| r.offset >= min_offset && r.timestamp >= timestamp)
                .map(|r| (r.offset, r.timestamp))),
            Err(e) => {
                warn!(segment = %self.log_path().display(), position = pos, error = %e, "cannot decode batch for timestamp lookup");
                Ok(shallow)
            }
        }
    }

    /// Removes batches holding offsets >= `offset`; the cut is at a batch boundary, so a batch
    /// straddling `offset` goes entirely. Rebuilds the in-memory state from the remaining log.
    pub(crate) fn truncate_to(&mut self, offset: i64, interval: usize) -> io::Result<()> {
        if let Some((cut, _)) = self.translate_offset(offset, None)? {
            self.log.set_len(cut)?;
            self.size = cut;
        }
        // The segment becomes the active one: its end and index state must be exact.
        self.max_timestamp = -1;
        self.txn_index.truncate_from(offset)?;
        self.rebuild(false, interval)?;
        self.open_index_files()
    }

    /// Renames the files to `<name>.deleted`, returning the new paths. The open handles keep
    /// the data readable by in-flight reads.
    pub(crate) fn rename_for_deletion(&self) -> Vec<PathBuf> {
        let mut renamed = Vec::new();
        for suffix in [
            LOG_SUFFIX,
            INDEX_SUFFIX,
            TIME_INDEX_SUFFIX,
            TXN_INDEX_SUFFIX,
        ] {
            let from = segment_path(&self.dir, self.base_offset, suffix);
            let to = PathBuf::from(format!("{}.deleted", from.display()));
            match fs::rename(&from, &to) {
                Ok(()) => renamed.push(to),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(file = %from.display(), error = %e, "cannot rename segment file for deletion; removing it now");
                    let _ = fs::remove_file(&from);
                }
            }
        }
        renamed
    }
}
