//! The metadata log: an ordered, durable sequence of [`MetadataRecord`]s.
//!
//! [`MetadataLog`] is the seam the controller writes through; a single node uses
//! [`FileMetadataLog`], a cluster will put a Raft quorum behind the same trait.
//!
//! On disk, in `<dir>/__cluster_metadata-0/`:
//! - `<base offset, 20 digits>.log`: segments of frames `[len u32 BE][crc32c u32 BE][payload]`,
//!   each payload one JSON batch (`base_offset` + records). One append is one frame, written
//!   and fsynced at once, so a batch (e.g. all records of a new topic) commits atomically: a
//!   torn frame fails its length or CRC check and recovery drops it.
//! - `<end offset, 20 digits>.checkpoint`: a snapshot of the image holding every record below
//!   the end offset, written to a temp file and renamed, so the log stays bounded.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::frame::{self, FrameRead};
use crate::record::MetadataRecord;

/// Name of the metadata log's directory, as in Kafka's KRaft mode.
pub const LOG_DIR_NAME: &str = "__cluster_metadata-0";
/// Upper bound of one frame's payload, checked before any allocation when reading.
pub const MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;
/// Records per snapshot frame, which keeps every frame far below [`MAX_FRAME_BYTES`].
const SNAPSHOT_CHUNK_RECORDS: usize = 1000;
const SEGMENT_SUFFIX: &str = ".log";
const SNAPSHOT_SUFFIX: &str = ".checkpoint";
const TMP_SUFFIX: &str = ".tmp";

/// Failures of the metadata log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("a metadata batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: u32 },
    #[error("cannot encode metadata records: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("corrupt metadata file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("metadata log is missing offsets {from}..{to} (no snapshot covers them)")]
    Gap { from: i64, to: i64 },
    #[error("the metadata log failed a write it could not roll back; restart to recover")]
    Failed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The durable, ordered record log the controller appends to.
pub trait MetadataLog: Send {
    /// Appends `records` as one atomic batch and returns the offset of its last record.
    /// Returns only once the batch is durable.
    fn append(&mut self, records: &[MetadataRecord]) -> Result<i64, LogError>;
    /// Every committed record from the beginning (the latest snapshot's records, then the
    /// log after it), in order.
    fn replay(&self) -> Result<Vec<MetadataRecord>, LogError>;
    /// The offset the next record will get.
    fn end_offset(&self) -> i64;
    /// Records appended since the latest snapshot (drives compaction).
    fn records_since_snapshot(&self) -> u64;
    /// Replaces everything below [`Self::end_offset`] with `image_records`, the records that
    /// rebuild the current image.
    fn snapshot(&mut self, image_records: &[MetadataRecord]) -> Result<(), LogError>;
}

/// A local file-backed [`MetadataLog`] for a single node.
#[derive(Debug)]
pub struct FileMetadataLog {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_base: i64,
    /// Length of the valid prefix of the active segment: where the next frame goes.
    position: u64,
    end_offset: i64,
    snapshot_end: i64,
    /// Set when a failed append could not be rolled back; all writes are refused after.
    failed: bool,
}

#[derive(Serialize)]
struct LogBatchRef<'a> {
    base_offset: i64,
    records: &'a [MetadataRecord],
}

#[derive(Deserialize)]
struct LogBatch {
    base_offset: i64,
    records: Vec<MetadataRecord>,
}

#[derive(Serialize, Deserialize)]
enum SnapshotFrame {
    Header { end_offset: i64, record_count: u64 },
    Records(Vec<MetadataRecord>),
}

#[derive(Serialize)]
enum SnapshotFrameRef<'a> {
    Header { end_offset: i64, record_count: u64 },
    Records(&'a [MetadataRecord]),
}

impl FileMetadataLog {
    /// Opens (creating if needed) the metadata log under `dir` and returns it with every
    /// committed record. A torn or corrupt tail of the last segment is truncated with a
    /// warning; a gap that no snapshot covers is an error.
    pub fn open(dir: &Path) -> Result<(FileMetadataLog, Vec<MetadataRecord>), LogError> {
        let log_dir = dir.join(LOG_DIR_NAME);
        fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;
        sync_dir(dir)?;
        remove_temp_files(&log_dir)?;
        let state = load(&log_dir)?;
        let snapshot_end = state.snapshot_end;

        // Pick the segment to append to; roll a fresh one when the snapshot covers the last.
        let (active_base, position) = match state.segments.last() {
            Some(last) if last.end_offset > snapshot_end || last.base == snapshot_end => {
                (last.base, last.valid_len)
            }
            _ => (snapshot_end, 0),
        };
        let active_path = segment_path(&log_dir, active_base);
        let mut active = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&active_path)
            .map_err(io_err(&active_path))?;
        let file_len = active.metadata().map_err(io_err(&active_path))?.len();
        if file_len > position {
            warn!(
                path = %active_path.display(),
                valid_bytes = position,
                dropped_bytes = file_len - position,
                "metadata log: truncating a torn or corrupt tail"
            );
            active.set_len(position).map_err(io_err(&active_path))?;
        }
        active.sync_all().map_err(io_err(&active_path))?;
        sync_dir(&log_dir)?;
        active
            .seek(SeekFrom::Start(position))
            .map_err(io_err(&active_path))?;

        let mut log = FileMetadataLog {
            dir: log_dir,
            active,
            active_path,
            active_base,
            position,
            end_offset: state.end_offset,
            snapshot_end,
            failed: false,
        };
        log.delete_covered_files()?;
        info!(
            end_offset = log.end_offset,
            snapshot_end,
            records = state.records.len(),
            "metadata log opened"
        );
        Ok((log, state.records))
    }

    /// The directory holding the segments and snapshots.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes segments whose records all lie below the snapshot, and older snapshots.
    fn delete_covered_files(&mut self) -> Result<(), LogError> {
        let (snapshots, segments) = list_files(&self.dir)?;
        let mut deleted = false;
        for end in snapshots.into_iter().filter(|e| *e != self.snapshot_end) {
            let path = snapshot_path(&self.dir, end);
            if end > self.snapshot_end {
                warn!(path = %path.display(), "metadata log: removing an unreadable snapshot");
            }
            fs::remove_file(&path).map_err(io_err(&path))?;
            deleted = true;
        }
        // A segment is covered when the next one starts at or below the snapshot end.
        let mut bases: Vec<i64> = segments;
        bases.sort_unstable();
        for (i, base) in bases.iter().enumerate() {
            if *base >= self.active_base {
                continue;
            }
            let next_base = bases.get(i + 1).copied().unwrap_or(self.active_base);
            if next_base <= self.snapshot_end {
                let path = segment_path(&self.dir, *base);
                fs::remove_file(&path).map_err(io_err(&path))?;
                deleted = true;
            }
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.active.seek(SeekFrom::Start(self.position))?;
        self.active.write_all(frame)?;
        self.active.sync_data()
    }
}

impl MetadataLog for FileMetadataLog {
    fn append(&mut self, records: &[MetadataRecord]) -> Result<i64, LogError> {
        if self.failed {
            return Err(LogError::Failed);
        }
        if records.is_empty() {
            return Ok(self.end_offset - 1);
        }
        let payload = serde_json::to_vec(&LogBatchRef {
            base_offset: self.end_offset,
            records,
        })?;
        let frame = encode_frame(&payload)?;
        if let Err(source) = self.write_frame(&frame) {
            // Leave no partial frame behind: a later append must not follow garbage.
            let rollback = self
                .active
                .set_len(self.position)
                .and_then(|()| self.active.sync_all());
            if let Err(e) = rollback {
                error!(error = %e, "metadata log: cannot roll back a failed append");
                self.failed = true;
            }
            return Err(LogError::Io {
                path: self.active_path.clone(),
                source,
            });
        }
        self.position += frame.len() as u64;
        self.end_offset += records.len() as i64;
        Ok(self.end_offset - 1)
    }

    fn replay(&self) -> Result<Vec<MetadataRecord>, LogError> {
        Ok(load(&self.dir)?.records)
    }

    fn end_offset(&self) -> i64 {
        self.end_offset
    }

    fn records_since_snapshot(&self) -> u64 {
        u64::try_from(self.end_offset - self.snapshot_end).unwrap_or(0)
    }

    fn snapshot(&mut self, image_records: &[MetadataRecord]) -> Result<(), LogError> {
        if self.failed {
            return Err(LogError::Failed);
        }
        let end = self.end_offset;
        if end == self.snapshot_end {
            return Ok(());
        }
        write_snapshot(&self.dir, end, image_records)?;
        self.snapshot_end = end;
        if self.active_base != end {
            let path = segment_path(&self.dir, end);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
            self.active = file;
            self.active_path = path;
            self.active_base = end;
            self.position = 0;
        }
        self.delete_covered_files()?;
        info!(
            end_offset = end,
            records = image_records.len(),
            "metadata log: snapshot written"
        );
        Ok(())
    }
}

/// Frames `payload` in the shared layout ([`crate::frame`]).
fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, LogError> {
    frame::encode(payload, MAX_FRAME_BYTES).ok_or(LogError::BatchTooLarge {
        size: payload.len(),
        max: MAX_FRAME_BYTES,
    })
}

/// Reads the frame at the reader's position; `remaining` is the number of bytes left in the
/// file, which bounds the length before anything is allocated.
fn read_frame<R: Read>(reader: &mut R, remaining: u64) -> io::Result<FrameRead> {
    frame::read(reader, remaining, MAX_FRAME_BYTES)
}

struct SegmentScan {
    base: i64,
    batches: Vec<(i64, Vec<MetadataRecord>)>,
    valid_len: u64,
    end_offset: i64,
    invalid: Option<&'static str>,
}

fn scan_segment(path: &Path, base: i64) -> Result<SegmentScan, LogError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::new(file);
    let mut scan = SegmentScan {
        base,
        batches: Vec::new(),
        valid_len: 0,
        end_offset: base,
        invalid: None,
    };
    loop {
        let remaining = file_len - scan.valid_len;
        let payload = match read_frame(&mut reader, remaining).map_err(io_err(path))? {
            FrameRead::End => break,
            FrameRead::Invalid(reason) => {
                scan.invalid = Some(reason);
                break;
            }
            FrameRead::Frame(payload) => payload,
        };
        let batch = match serde_json::from_slice::<LogBatch>(&payload) {
            Ok(b) if b.base_offset == scan.end_offset && !b.records.is_empty() => b,
            Ok(_) => {
                scan.invalid = Some("batch offset out of sequence");
                break;
            }
            Err(_) => {
                scan.invalid = Some("undecodable batch");
                break;
            }
        };
        scan.valid_len += frame::framed_len(payload.len());
        scan.end_offset += batch.records.len() as i64;
        scan.batches.push((batch.base_offset, batch.records));
    }
    Ok(scan)
}

struct SegmentInfo {
    base: i64,
    end_offset: i64,
    valid_len: u64,
}

struct LoadedState {
    records: Vec<MetadataRecord>,
    snapshot_end: i64,
    end_offset: i64,
    segments: Vec<SegmentInfo>,
}

/// Reads the newest valid snapshot and the segments after it, without changing any file.
fn load(log_dir: &Path) -> Result<LoadedState, LogError> {
    let (mut snapshots, mut segments) = list_files(log_dir)?;
    snapshots.sort_unstable_by(|a, b| b.cmp(a));
    segments.sort_unstable();

    let mut snapshot_end = 0;
    let mut records = Vec::new();
    for end in snapshots {
        let path = snapshot_path(log_dir, end);
        match read_snapshot(&path, end) {
            Ok(r) => {
                snapshot_end = end;
                records = r;
                break;
            }
            Err(LogError::Corrupt { reason, .. }) => {
                warn!(path = %path.display(), %reason, "metadata log: skipping an unreadable snapshot");
            }
            Err(e) => return Err(e),
        }
    }

    let mut next = snapshot_end;
    let mut infos = Vec::new();
    let count = segments.len();
    for (i, base) in segments.iter().copied().enumerate() {
        let is_last = i + 1 == count;
        if segments.get(i + 1).is_some_and(|n| *n <= snapshot_end) {
            continue; // Entirely below the snapshot.
        }
        if base > next {
            return Err(LogError::Gap {
                from: next,
                to: base,
            });
        }
        let path = segment_path(log_dir, base);
        let scan = scan_segment(&path, base)?;
        if let Some(reason) = scan.invalid {
            if !is_last {
                return Err(LogError::Corrupt {
                    path,
                    reason: reason.to_owned(),
                });
            }
            warn!(path = %path.display(), reason, valid_bytes = scan.valid_len, "metadata log: ignoring a torn or corrupt tail");
        }
        for (batch_base, batch) in scan.batches {
            let batch_end = batch_base + batch.len() as i64;
            if batch_end <= next {
                continue;
            }
            let skip = usize::try_from(next - batch_base).unwrap_or(0);
            records.extend(batch.into_iter().skip(skip));
            next = batch_end;
        }
        infos.push(SegmentInfo {
            base: scan.base,
            end_offset: scan.end_offset,
            valid_len: scan.valid_len,
        });
    }
    Ok(LoadedState {
        records,
        snapshot_end,
        end_offset: next,
        segments: infos,
    })
}

fn read_snapshot(path: &Path, expected_end: i64) -> Result<Vec<MetadataRecord>, LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::new(file);
    let mut pos = 0u64;
    let mut expected_count = None;
    let mut records = Vec::new();
    loop {
        let payload = match read_frame(&mut reader, file_len - pos).map_err(io_err(path))? {
            FrameRead::End => break,
            FrameRead::Invalid(reason) => return Err(corrupt(reason)),
            FrameRead::Frame(p) => p,
        };
        pos += frame::framed_len(payload.len());
        match serde_json::from_slice::<SnapshotFrame>(&payload) {
            Ok(SnapshotFrame::Header {
                end_offset,
                record_count,
            }) if expected_count.is_none() => {
                if end_offset != expected_end {
                    return Err(corrupt("end offset does not match the file name"));
                }
                expected_count = Some(record_count);
            }
            Ok(SnapshotFrame::Records(batch)) if expected_count.is_some() => {
                records.extend(batch);
            }
            Ok(_) => return Err(corrupt("frames out of order")),
            Err(_) => return Err(corrupt("undecodable frame")),
        }
    }
    match expected_count {
        Some(n) if n == records.len() as u64 => Ok(records),
        Some(_) => Err(corrupt("record count mismatch")),
        None => Err(corrupt("missing header")),
    }
}

fn write_snapshot(log_dir: &Path, end: i64, records: &[MetadataRecord]) -> Result<(), LogError> {
    let path = snapshot_path(log_dir, end);
    let tmp = path.with_extension(format!("checkpoint{TMP_SUFFIX}"));
    let mut out = Vec::new();
    let header = serde_json::to_vec(&SnapshotFrameRef::Header {
        end_offset: end,
        record_count: records.len() as u64,
    })?;
    out.extend(encode_frame(&header)?);
    for chunk in records.chunks(SNAPSHOT_CHUNK_RECORDS) {
        out.extend(encode_frame(&serde_json::to_vec(
            &SnapshotFrameRef::Records(chunk),
        )?)?);
    }
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&out).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(log_dir)
}

/// Snapshot end offsets and segment base offsets found in `log_dir`.
fn list_files(log_dir: &Path) -> Result<(Vec<i64>, Vec<i64>), LogError> {
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in fs::read_dir(log_dir).map_err(io_err(log_dir))? {
        let entry = entry.map_err(io_err(log_dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(offset) = parse_name(name, SEGMENT_SUFFIX) {
            segments.push(offset);
        } else if let Some(offset) = parse_name(name, SNAPSHOT_SUFFIX) {
            snapshots.push(offset);
        }
    }
    Ok((snapshots, segments))
}

fn parse_name(name: &str, suffix: &str) -> Option<i64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn remove_temp_files(log_dir: &Path) -> Result<(), LogError> {
    for entry in fs::read_dir(log_dir).map_err(io_err(log_dir))? {
        let entry = entry.map_err(io_err(log_dir))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(TMP_SUFFIX))
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn segment_path(log_dir: &Path, base: i64) -> PathBuf {
    log_dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

fn snapshot_path(log_dir: &Path, end: i64) -> PathBuf {
    log_dir.join(format!("{end:020}{SNAPSHOT_SUFFIX}"))
}

/// Makes entries created, renamed or removed in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ConfigResource;
    use uuid::Uuid;

    fn rec(i: usize) -> MetadataRecord {
        MetadataRecord::Config {
            resource: ConfigResource::Broker(1),
            name: format!("k{i}"),
            value: Some(format!("v{i}")),
        }
    }

    fn segment0(dir: &Path) -> PathBuf {
        dir.join(LOG_DIR_NAME).join("00000000000000000000.log")
    }

    #[test]
    fn record_json_round_trip() {
        let records = vec![
            MetadataRecord::ClusterId {
                cluster_id: "abc".into(),
            },
            MetadataRecord::RegisterBroker {
                node_id: 1,
                host: "localhost".into(),
                port: 9092,
                rack: Some("r1".into()),
                incarnation: Uuid::new_v4(),
            },
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: Uuid::new_v4(),
            },
            MetadataRecord::Partition {
                topic_id: Uuid::new_v4(),
                partition: 3,
                replicas: vec![1, 2],
                isr: vec![1],
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 5,
            },
            MetadataRecord::Config {
                resource: ConfigResource::Topic("t".into()),
                name: "retention.ms".into(),
                value: None,
            },
            MetadataRecord::RemoveTopic {
                topic_id: Uuid::new_v4(),
            },
        ];
        let json = serde_json::to_vec(&records).expect("encode");
        let back: Vec<MetadataRecord> = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, records);
    }

    #[test]
    fn append_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, records) = FileMetadataLog::open(dir.path()).expect("open");
        assert!(records.is_empty());
        assert_eq!(log.append(&[rec(0), rec(1)]).expect("append"), 1);
        assert_eq!(log.append(&[rec(2)]).expect("append"), 2);
        assert_eq!(log.replay().expect("replay"), vec![rec(0), rec(1), rec(2)]);
        drop(log);
        let (log, records) = FileMetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(records, vec![rec(0), rec(1), rec(2)]);
        assert_eq!(log.end_offset(), 3);
        assert!(segment0(dir.path()).exists());
    }

    /// Every truncation point inside the last frame keeps exactly the earlier batches, and
    /// the log accepts appends afterwards.
    #[test]
    fn torn_tail_is_truncated_at_every_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = FileMetadataLog::open(dir.path()).expect("open");
        log.append(&[rec(0)]).expect("append");
        log.append(&[rec(1), rec(2)]).expect("append");
        drop(log);
        let path = segment0(dir.path());
        let full = fs::read(&path).expect("read");
        let first_len = 8 + u32::from_be_bytes([full[0], full[1], full[2], full[3]]) as usize;
        for cut in first_len..full.len() {
            fs::write(&path, &full[..cut]).expect("write");
            let (mut log, records) = FileMetadataLog::open(dir.path()).expect("reopen");
            assert_eq!(records, vec![rec(0)], "cut at {cut}");
            assert_eq!(fs::metadata(&path).expect("meta").len(), first_len as u64);
            assert_eq!(log.append(&[rec(9)]).expect("append"), 1);
            drop(log);
            let (_, records) = FileMetadataLog::open(dir.path()).expect("reopen");
            assert_eq!(records, vec![rec(0), rec(9)]);
        }
    }

    #[test]
    fn flipped_byte_keeps_the_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = FileMetadataLog::open(dir.path()).expect("open");
        for i in 0..3 {
            log.append(&[rec(i)]).expect("append");
        }
        drop(log);
        let path = segment0(dir.path());
        let full = fs::read(&path).expect("read");
        let frame_len = |at: usize| {
            8 + u32::from_be_bytes([full[at], full[at + 1], full[at + 2], full[at + 3]]) as usize
        };
        let second = frame_len(0);
        let third = second + frame_len(second);
        // Flip each byte of the second frame in turn: the first batch always survives.
        for i in second..third {
            let mut bytes = full.clone();
            bytes[i] ^= 0x40;
            fs::write(&path, &bytes).expect("write");
            let (_, records) = FileMetadataLog::open(dir.path()).expect("reopen");
            assert_eq!(records, vec![rec(0)], "flip at {i}");
        }
    }

    #[test]
    fn absurd_length_is_treated_as_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = FileMetadataLog::open(dir.path()).expect("open");
        log.append(&[rec(0)]).expect("append");
        drop(log);
        let path = segment0(dir.path());
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3])
            .expect("write");
        drop(f);
        let (_, records) = FileMetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(records, vec![rec(0)]);
    }

    #[test]
    fn snapshot_compacts_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = FileMetadataLog::open(dir.path()).expect("open");
        for i in 0..5 {
            log.append(&[rec(i)]).expect("append");
        }
        assert_eq!(log.records_since_snapshot(), 5);
        // The "image" after 5 records is summarized by two records.
        let summary = vec![rec(100), rec(101)];
        log.snapshot(&summary).expect("snapshot");
        assert_eq!(log.records_since_snapshot(), 0);
        assert_eq!(log.end_offset(), 5);
        assert!(!segment0(dir.path()).exists(), "old segment deleted");
        assert_eq!(log.append(&[rec(5)]).expect("append"), 5);
        let expected = vec![rec(100), rec(101), rec(5)];
        assert_eq!(log.replay().expect("replay"), expected);
        drop(log);
        let (log, records) = FileMetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(records, expected);
        assert_eq!(log.end_offset(), 6);
        let names: Vec<String> = fs::read_dir(log.dir())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn crash_after_snapshot_before_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = FileMetadataLog::open(dir.path()).expect("open");
        for i in 0..3 {
            log.append(&[rec(i)]).expect("append");
        }
        let log_dir = log.dir().to_owned();
        // Simulate a crash right after the snapshot rename: old segment still there.
        write_snapshot(&log_dir, 3, &[rec(50)]).expect("snapshot");
        fs::write(log_dir.join("00000000000000000009.checkpoint.tmp"), b"junk").expect("tmp");
        drop(log);
        let (mut log, records) = FileMetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(records, vec![rec(50)]);
        assert_eq!(log.append(&[rec(3)]).expect("append"), 3);
        drop(log);
        let (_, records) = FileMetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(records, vec![rec(50), rec(3)]);
        assert!(!segment0(dir.path()).exists());
    }

    #[test]
    fn corrupt_snapshot_without_log_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = FileMetadataLog::open(dir.path()).expect("open");
        log.append(&[rec(0), rec(1)]).expect("append");
        log.snapshot(&[rec(7)]).expect("snapshot");
        let snap = snapshot_path(log.dir(), 2);
        drop(log);
        let mut bytes = fs::read(&snap).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        fs::write(&snap, &bytes).expect("write");
        assert!(matches!(
            FileMetadataLog::open(dir.path()),
            Err(LogError::Gap { from: 0, to: 2 })
        ));
    }

    /// Deterministic xorshift so the crash test is reproducible without extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound.max(1)
        }
    }

    fn newest_segment(log_dir: &Path) -> PathBuf {
        let (_, mut segments) = list_files(log_dir).expect("list");
        segments.sort_unstable();
        segment_path(log_dir, *segments.last().expect("a segment"))
    }

    /// Random appends and snapshots, then a crash that cuts or corrupts the active segment at
    /// a random byte: reopening yields exactly a state that was committed after the last
    /// snapshot, and the log keeps working.
    #[test]
    fn random_crash_points_recover_a_committed_state() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..40 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (mut log, _) = FileMetadataLog::open(dir.path()).expect("open");
            let mut model: Vec<MetadataRecord> = Vec::new();
            let mut states = vec![model.clone()];
            let mut next = 0;
            for _ in 0..=rng.next(15) {
                if rng.next(5) == 0 {
                    log.snapshot(&model).expect("snapshot");
                    states = vec![model.clone()];
                } else {
                    let batch: Vec<MetadataRecord> = (0..=rng.next(3))
                        .map(|_| {
                            next += 1;
                            rec(next)
                        })
                        .collect();
                    log.append(&batch).expect("append");
                    model.extend(batch);
                    states.push(model.clone());
                }
            }
            let log_dir = log.dir().to_owned();
            drop(log);
            let path = newest_segment(&log_dir);
            let mut bytes = fs::read(&path).expect("read");
            if !bytes.is_empty() && rng.next(2) == 0 {
                let at = rng.next(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.next(8);
            } else {
                bytes.truncate(rng.next(bytes.len() as u64 + 1) as usize);
            }
            fs::write(&path, &bytes).expect("write");

            let (mut log, records) = FileMetadataLog::open(dir.path()).expect("reopen");
            assert!(
                states.contains(&records),
                "round {round}: not a committed state"
            );
            assert_eq!(log.append(&[rec(0)]).expect("append"), log.end_offset() - 1);
            drop(log);
            let (_, again) = FileMetadataLog::open(dir.path()).expect("reopen");
            let mut expected = records;
            expected.push(rec(0));
            assert_eq!(again, expected, "round {round}");
        }
    }
}
