//! The partition log (Kafka's `UnifiedLog` over `LocalLog`): an ordered run of segments, the
//! log start offset, the log end offset and the recovery point (everything below it is
//! fsynced). Methods are quick enough to call under the broker's per-partition mutex; fsyncs
//! (`FlushJob`) and bulk reads (`ReadPlan`) run outside it.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use kavka_protocol::record_batch::{self, BatchError};
use tracing::{info, warn};

use crate::checkpoint::{self, Checkpoint};
use crate::cleaner::{CleanableLog, CleanedLog, SourceSegment};
use crate::cleaner_checkpoint;
use crate::flush::FlushJob;
use crate::leader_epoch::{self, LeaderEpochCache, StoredCheckpoint};
use crate::producer_state::{
    self, BatchKind, Check, MarkerInfo, ProducerBatch, ProducerStateManager,
    MAX_CONTROL_BATCH_BYTES,
};
use crate::read_plan::ReadPlan;
use crate::recovery;
use crate::retention::{self, SegmentStat};
use crate::segment::{LogSegment, PendingBatch};
use crate::segment_swap;
use crate::{AbortedTxn, LogConfig, StorageError, TimestampType};

/// Write the recovery point checkpoint after this many appended bytes became durable
/// (in addition to on close, truncation and log start offset changes): bounds the work of
/// crash recovery without an fsync'd rename per flush.
const CHECKPOINT_EVERY_BYTES: u64 = 64 * 1024 * 1024;
/// Producer-state snapshots kept; older ones go when a new one is written.
const SNAPSHOTS_RETAINED: usize = 3;
/// Cap on a batch inflated to check its keys on append to a compacted log.
const DECOMPRESS_LIMIT: usize = 256 * 1024 * 1024;

/// What an append did, for the Produce response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    /// The broker time written into the batches, -1 with CreateTime.
    pub log_append_time: i64,
    pub log_start_offset: i64,
    pub batches: usize,
    pub records: usize,
    pub bytes: usize,
    /// The batch was a retry of one already in the log (idempotent producer): nothing was
    /// appended and the offsets are those of the original.
    pub duplicate: bool,
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Never empty; the last one is the active segment.
    segments: VecDeque<LogSegment>,
    log_start_offset: i64,
    recovery_point: i64,
    size_bytes: u64,
    checkpointed: Option<Checkpoint>,
    durable_bytes_since_checkpoint: u64,
    unflushed_bytes: u64,
    /// When the oldest unflushed data was appended (for `flush.ms`).
    first_unflushed_ms: Option<i64>,
    last_append_ms: i64,
    /// Latest clock value seen, to schedule file deletions from calls that get no clock.
    now_hint_ms: i64,
    /// Renamed `.deleted` files and when to remove them (`file.delete.delay.ms`).
    pending_deletes: Vec<(PathBuf, i64)>,
    /// Idempotent producers' epochs and last batches, derived from the log.
    producer_state: ProducerStateManager,
    /// The cleaner checkpoint: below it the log was compacted (`cleaner-offset.checkpoint`).
    first_dirty_offset: i64,
    /// Bumped by every truncation, so a cleaner round started before one is not swapped in.
    generation: u64,
    /// Earliest delete horizon of the tombstones the cleaner kept (in the cleaner checkpoint).
    delete_horizon: Option<i64>,
    /// First offset of each leader epoch (`leader-epoch-checkpoint`), derived from the log.
    epoch_cache: LeaderEpochCache,
    /// The largest high watermark passed to [`Log::last_stable_offset`]: completed
    /// transactions whose markers are below it no longer bound the last stable offset and
    /// are dropped on the next change to the log (the query itself only reads).
    high_watermark_hint: AtomicI64,
}

/// What [`Log::swap_cleaned`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The cleaned segments replaced `segments_replaced` old ones.
    Swapped {
        segments_replaced: usize,
        segments_written: usize,
    },
    /// The log changed while the cleaner worked (retention, truncation, DeleteRecords);
    /// nothing was replaced and the cleaned files were removed.
    Aborted(&'static str),
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset())
            .field("recovery_point", &self.recovery_point)
            .finish()
    }
}

impl Log {
    /// Opens or creates the log in `dir` (e.g. `<log.dir>/<topic>-<partition>`), recovering
    /// after a crash.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log, StorageError> {
        let loaded = recovery::load(dir, &config, now_ms)?;
        // From here on appends may happen: a crash must not find the marker again.
        checkpoint::remove_clean_shutdown_marker(dir)?;
        let size_bytes = loaded.segments.iter().map(|s| s.size()).sum();
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments: loaded.segments,
            log_start_offset: loaded.log_start_offset,
            recovery_point: loaded.recovery_point,
            size_bytes,
            checkpointed: loaded.checkpoint_on_disk,
            durable_bytes_since_checkpoint: 0,
            unflushed_bytes: 0,
            first_unflushed_ms: None,
            last_append_ms: now_ms,
            now_hint_ms: now_ms,
            pending_deletes: Vec::new(),
            producer_state: ProducerStateManager::new(),
            first_dirty_offset: 0,
            generation: 0,
            delete_horizon: None,
            epoch_cache: LeaderEpochCache::default(),
            high_watermark_hint: AtomicI64::new(i64::MIN),
        };
        log.load_epoch_cache(loaded.clean, loaded.recovery_point)?;
        let log_end = log.log_end_offset();
        let cleaner_cp = cleaner_checkpoint::read(dir)?;
        log.first_dirty_offset = match cleaner_cp {
            // A checkpoint past the log end belongs to data that is gone: clean it all.
            Some(cp) if cp.first_dirty_offset <= log_end => {
                cp.first_dirty_offset.max(log.log_start_offset)
            }
            _ => log.log_start_offset,
        };
        log.delete_horizon = cleaner_cp.and_then(|cp| cp.delete_horizon);
        if loaded.clean && producer_state::list_snapshots(dir)?.is_empty() {
            // Kafka's shortcut: a cleanly closed log without any snapshot predates producer
            // state (every clean close writes one), so it holds no idempotent batches worth
            // replaying. Record that instead of reading the whole log.
            let leo = log.log_end_offset();
            log.take_producer_snapshot(leo, true)?;
        }
        // After a crash, segments past the recovery point were recovered from their batches
        // and their transaction indexes may have lost entries the log kept: the replay
        // starts no later than there and rewrites the index entries of the markers past it.
        let unsure_from = if loaded.clean {
            log.log_end_offset()
        } else {
            loaded.recovery_point
        };
        log.load_producer_state(unsure_from)?;
        if log.recovery_point < log.log_end_offset() {
            log.first_unflushed_ms = Some(now_ms);
        }
        log.write_checkpoint()?;
        Ok(log)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Offsets below this are fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    fn active(&self) -> &LogSegment {
        debug_assert!(!self.segments.is_empty());
        // The constructor and every deletion path keep at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Base offset of the segment after `i`, or `None` for the active segment.
    fn next_base(&self, i: usize) -> Option<i64> {
        self.segments.get(i + 1).map(|s| s.base_offset())
    }

    /// First offset past segment `i` (the next base offset, or the log end).
    fn segment_end(&self, i: usize) -> i64 {
        self.next_base(i).unwrap_or_else(|| self.log_end_offset())
    }

    fn note_time(&mut self, now_ms: i64) {
        self.now_hint_ms = self.now_hint_ms.max(now_ms);
    }

    /// Appends producer batches (already validated by the caller; checked again here):
    /// assigns offsets from the log end offset, applies LogAppendTime, rolls when due and
    /// writes to the OS without fsync. Nothing is appended when any batch is rejected.
    /// The batches keep the partition leader epoch they carry (negative ones are not
    /// recorded in the leader-epoch cache); see [`Log::append_as_leader`].
    pub fn append(&mut self, batches: &mut [u8], now_ms: i64) -> Result<AppendInfo, StorageError> {
        self.append_with_epoch(batches, None, None, now_ms)
    }

    /// [`Log::append`] as the partition leader: every batch's partition leader epoch is
    /// overwritten with `leader_epoch` (outside the CRC), as Kafka's `appendAsLeader` does,
    /// and a new epoch starts a leader-epoch cache entry.
    pub fn append_as_leader(
        &mut self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_with_epoch(batches, Some(leader_epoch), None, now_ms)
    }

    /// The leader append. `marker` is set only for the one control batch written by
    /// [`Log::append_txn_marker`]; clients cannot write control batches (Kafka's
    /// `LogValidator` refuses them from any origin but the coordinator).
    fn append_with_epoch(
        &mut self,
        batches: &mut [u8],
        leader_epoch: Option<i32>,
        marker: Option<MarkerInfo>,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.note_time(now_ms);
        self.prune_replicated_txns();
        if batches.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        let max_batch = self.config.max_message_bytes;
        let segment_bytes = self.config.effective_segment_bytes();
        let mut pending = Vec::new();
        let mut producer_batches = Vec::new();
        let mut pos = 0usize;
        let mut records = 0usize;
        while pos < batches.len() {
            let rest = batches.get(pos..).unwrap_or_default();
            let h = record_batch::validate(rest)?;
            let len = h.total_len();
            if len > max_batch {
                return Err(StorageError::RecordTooLarge {
                    size: len,
                    max: max_batch,
                });
            }
            if len as u64 > segment_bytes {
                return Err(StorageError::RecordTooLarge {
                    size: len,
                    max: segment_bytes as usize,
                });
            }
            if h.records_count < 1 || h.records_count != h.last_offset_delta.saturating_add(1) {
                return Err(StorageError::CorruptBatch(BatchError::InvalidRecordCount {
                    count: h.records_count,
                    last_offset_delta: h.last_offset_delta,
                }));
            }
            if h.is_control() != marker.is_some() {
                return Err(StorageError::InvalidRecord(if h.is_control() {
                    "control batches are written by the transaction coordinator only".into()
                } else {
                    "a transaction marker must be a control batch".into()
                }));
            }
            if h.is_control() && h.producer_id < 0 {
                return Err(StorageError::InvalidRecord(
                    "a transaction marker needs a producer id".into(),
                ));
            }
            if self.config.compact && !h.is_control() {
                check_keys(rest.get(..len).unwrap_or_default(), &h)?;
            }
            records += h.records_count as usize;
            producer_batches.push(ProducerBatch::of(&h).map(|mut pb| {
                if let Some(m) = marker {
                    pb.kind = BatchKind::Marker(m);
                }
                pb
            }));
            pending.push(PendingBatch {
                position: pos,
                len,
                base_offset: 0,
                last_offset: i64::from(h.last_offset_delta),
                max_timestamp: h.max_timestamp,
            });
            pos += len;
        }

        let log_end = self.log_end_offset();
        let mut next = log_end;
        for p in &mut pending {
            let delta = p.last_offset;
            let last = next.checked_add(delta).filter(|l| *l < i64::MAX).ok_or(
                StorageError::OffsetOverflow {
                    log_end,
                    records: records as i64,
                },
            )?;
            p.base_offset = next;
            p.last_offset = last;
            next = last + 1;
        }
        // Kafka's `analyzeAndValidateProducerState`: a retried batch is acknowledged with its
        // original offsets and nothing is written; a zombie or a gap refuses the request.
        let mut staged = std::collections::HashMap::new();
        for (p, pb) in pending.iter().zip(&producer_batches) {
            let Some(pb) = pb else { continue };
            if matches!(pb.kind, BatchKind::Marker(_)) {
                // Checked here, applied once written (it may complete a transaction).
                self.producer_state.check(&staged, pb)?;
                continue;
            }
            match self.producer_state.check(&staged, pb)? {
                Check::Duplicate(orig) => {
                    return Ok(AppendInfo {
                        first_offset: orig.first_offset,
                        last_offset: orig.last_offset,
                        log_append_time: -1,
                        log_start_offset: self.log_start_offset,
                        batches: 0,
                        records: 0,
                        bytes: 0,
                        duplicate: true,
                    });
                }
                Check::Append => {
                    // Expiry counts from the timestamp the log will hold (LogAppendTime).
                    let mut pb = *pb;
                    if self.config.message_timestamp_type == TimestampType::LogAppendTime {
                        pb.max_timestamp = now_ms;
                    }
                    self.producer_state
                        .stage(&mut staged, &pb, p.base_offset, p.last_offset)
                }
            }
        }
        let append_time = match self.config.message_timestamp_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => -1,
        };
        for p in &mut pending {
            let Some(batch) = batches.get_mut(p.position..p.position + p.len) else {
                return Err(StorageError::CorruptBatch(BatchError::Truncated {
                    needed: p.len,
                    available: 0,
                }));
            };
            record_batch::set_base_offset(batch, p.base_offset);
            if let Some(epoch) = leader_epoch {
                record_batch::set_partition_leader_epoch(batch, epoch);
            }
            if append_time >= 0 {
                record_batch::set_log_append_time(batch, append_time);
                p.max_timestamp = append_time;
            }
        }

        let last_offset = next - 1;
        self.maybe_roll(batches.len(), last_offset, now_ms)?;
        let interval = self.config.index_interval_bytes;
        self.active_mut()
            .append(batches, &pending, interval, now_ms)?;
        debug_assert_eq!(self.log_end_offset(), next);
        self.producer_state.commit(staged);
        for (p, pb) in pending.iter().zip(&producer_batches) {
            if let Some(pb) = pb.filter(|pb| matches!(pb.kind, BatchKind::Marker(_))) {
                let mut pb = pb;
                pb.max_timestamp = p.max_timestamp;
                self.complete_txn(&pb, p.base_offset, p.last_offset)?;
            }
        }
        let mut new_epoch = false;
        for p in &pending {
            // Stamped above when appending as leader; read back rather than kept per batch.
            let epoch = match leader_epoch {
                Some(epoch) => epoch,
                None => batches
                    .get(p.position..)
                    .and_then(|b| record_batch::peek_header(b).ok())
                    .map_or(leader_epoch::UNDEFINED_EPOCH, |h| h.partition_leader_epoch),
            };
            new_epoch |= self.epoch_cache.assign(epoch, p.base_offset);
        }
        if new_epoch {
            // Rare (a leader change): checkpoint now, fsync included, under the partition
            // lock as Kafka's `assign` does (KAFKA-16541 kept that fsync; only truncations
            // went asynchronous). The batches are written; a failure leaves the cache dirty
            // for the next checkpoint, and recovery rebuilds it.
            if let Err(e) = self.epoch_cache.flush(&self.dir) {
                warn!(dir = %self.dir.display(), error = %e, "cannot write leader epoch checkpoint");
            }
        }

        self.size_bytes += batches.len() as u64;
        self.unflushed_bytes += batches.len() as u64;
        self.last_append_ms = now_ms;
        if self.first_unflushed_ms.is_none() {
            self.first_unflushed_ms = Some(now_ms);
        }
        Ok(AppendInfo {
            first_offset: log_end,
            last_offset,
            log_append_time: append_time,
            log_start_offset: self.log_start_offset,
            batches: pending.len(),
            records,
            bytes: batches.len(),
            duplicate: false,
        })
    }

    /// Writes a transaction marker (COMMIT or ABORT control batch) for `marker.producer_id`
    /// as the partition leader, ending its ongoing transaction on this partition (Kafka's
    /// `appendAsLeader` with origin Coordinator). An abort adds an aborted-transaction index
    /// entry.
    pub fn append_txn_marker(
        &mut self,
        marker: &kavka_protocol::records::TxnMarker,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let bytes = kavka_protocol::records::encode_txn_marker(marker, now_ms)
            .map_err(|e| StorageError::InvalidRecord(e.to_string()))?;
        let mut buf = bytes.to_vec();
        let info = MarkerInfo {
            control: marker.control,
            coordinator_epoch: marker.coordinator_epoch,
        };
        self.append_with_epoch(&mut buf, Some(leader_epoch), Some(info), now_ms)
    }

    /// Applies a batch just written at `first..=last` (in the active segment) to the
    /// producer state; an abort marker that ended a transaction gets its
    /// aborted-transaction index entry (Kafka's `LogSegment.updateTxnIndex`).
    fn complete_txn(
        &mut self,
        pb: &ProducerBatch,
        first: i64,
        last: i64,
    ) -> Result<(), StorageError> {
        let Some((txn, stable)) = self.producer_state.replay(pb, first, last) else {
            return Ok(());
        };
        let offset = txn.last_offset;
        if txn.is_aborted {
            let entry = AbortedTxn {
                producer_id: txn.producer_id,
                first_offset: txn.first_offset,
                last_offset: txn.last_offset,
                last_stable_offset: stable,
            };
            if let Err(e) = self.active_mut().txn_index_mut().append(entry) {
                // The marker is in the log; the entry comes back when the state is next
                // rebuilt from a snapshot before it (a crash, a truncation).
                warn!(dir = %self.dir.display(), offset, error = %e, "cannot write aborted transaction index entry");
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// After a truncation the high watermark may restart lower (an unclean leader
    /// election): markers appended from now on must not count as replicated because of a
    /// high watermark the old log had.
    fn lower_high_watermark_hint(&self, log_end: i64) {
        self.high_watermark_hint
            .fetch_min(log_end, Ordering::Relaxed);
    }

    /// Drops completed transactions whose markers are below the largest high watermark
    /// seen: they no longer bound the last stable offset.
    fn prune_replicated_txns(&mut self) {
        let hw = self.high_watermark_hint.load(Ordering::Relaxed);
        if hw > i64::MIN {
            self.producer_state.on_high_watermark(hw);
        }
    }

    /// The last stable offset given the partition's high watermark: below it every
    /// transaction is decided (Kafka's `UnifiedLog.lastStableOffset`), so read_committed
    /// consumers read up to it and no further. It is the high watermark, lowered to the
    /// first offset of the earliest transaction that is still open or whose marker is not
    /// yet below the high watermark (a marker not replicated may still be lost, and the
    /// transaction reopened). A transaction whose first batches went below the log start
    /// offset (retention, DeleteRecords) bounds it at the log start offset instead, as
    /// Kafka's `maybeIncrementFirstUnstableOffset` does.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.high_watermark_hint
            .fetch_max(high_watermark, Ordering::Relaxed);
        match self.producer_state.first_unstable_offset(high_watermark) {
            Some(first) => first.max(self.log_start_offset).min(high_watermark),
            None => high_watermark,
        }
    }

    /// The aborted transactions whose records overlap `start_offset..upper_bound_offset`
    /// (last offset >= start, first offset < upper; Kafka's `collectAbortedTransactions`),
    /// for a read_committed Fetch response, in marker order. An entry lives in the segment
    /// of its marker, which may lie far past `upper_bound_offset` when the transaction was
    /// long, so segments are scanned from the one holding `start_offset` until an entry
    /// shows that every transaction begun below the bound had ended (its recorded last
    /// stable offset reaches the bound), or to the log end. Entries are held in memory once
    /// a segment's index was read.
    pub fn aborted_transactions(
        &self,
        start_offset: i64,
        upper_bound_offset: i64,
    ) -> Result<Vec<AbortedTxn>, StorageError> {
        let first = self
            .segments
            .partition_point(|s| s.base_offset() <= start_offset)
            .saturating_sub(1);
        let mut out = Vec::new();
        for seg in self.segments.iter().skip(first) {
            if seg
                .txn_index()
                .collect(start_offset, upper_bound_offset, &mut out)?
            {
                break;
            }
        }
        Ok(out)
    }

    /// Appends batches fetched from the partition leader (Kafka's `appendAsFollower`): they
    /// keep the leader's offsets, partition leader epochs and timestamps, and a batch whose
    /// epoch is newer than the cache's latest starts a leader-epoch entry. Every batch is
    /// CRC-checked; offsets must start at or above the log end offset and increase. Forward
    /// gaps are accepted: a compacted leader log has them (the cleaner drops whole batches),
    /// and refusing them would stall the follower for good. `max.message.bytes` and the key
    /// check of compacted topics are the leader's business (Kafka skips them too: the
    /// follower's topic config may lag), but a batch must fit in a segment. The idempotent
    /// producer state is replayed from the batches, so this replica can become leader and
    /// still recognise retries.
    ///
    /// One exception to "at or above the log end": when the log is empty and its start
    /// offset falls inside the first batch (the leader's log start moved there with
    /// DeleteRecords and this replica was restarted at it), the log restarts at the batch's
    /// base offset and keeps its log start offset.
    pub fn append_as_follower(
        &mut self,
        batches: &mut [u8],
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.note_time(now_ms);
        if batches.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        self.prune_replicated_txns();
        let segment_bytes = self.config.effective_segment_bytes();
        let log_end = self.log_end_offset();
        let mut restart_at = None;
        let mut min_offset = log_end;
        let mut pending: Vec<PendingBatch> = Vec::new();
        let mut headers = Vec::new();
        let mut pos = 0usize;
        let mut records = 0usize;
        while pos < batches.len() {
            let rest = batches.get(pos..).unwrap_or_default();
            let h = record_batch::validate(rest)?;
            let len = h.total_len();
            if len as u64 > segment_bytes {
                return Err(StorageError::RecordTooLarge {
                    size: len,
                    max: segment_bytes as usize,
                });
            }
            let last = h
                .base_offset
                .checked_add(i64::from(h.last_offset_delta))
                .filter(|l| *l < i64::MAX)
                .ok_or(StorageError::OffsetOverflow {
                    log_end,
                    records: i64::from(h.last_offset_delta).saturating_add(1),
                })?;
            if h.base_offset < min_offset {
                let restartable = pending.is_empty()
                    && h.base_offset >= 0
                    && last >= log_end
                    && log_end == self.log_start_offset;
                if !restartable {
                    return Err(StorageError::OffsetsOutOfOrder {
                        first_offset: h.base_offset,
                        last_offset: last,
                        min_offset,
                    });
                }
                restart_at = Some(h.base_offset);
            }
            records += usize::try_from(h.records_count).unwrap_or(0);
            pending.push(PendingBatch {
                position: pos,
                len,
                base_offset: h.base_offset,
                last_offset: last,
                max_timestamp: h.max_timestamp,
            });
            let control = h.is_control().then(|| rest.get(..len)).flatten();
            headers.push((
                ProducerBatch::of_batch(&h, control),
                h.partition_leader_epoch,
            ));
            min_offset = last + 1;
            pos += len;
        }
        if let Some(base) = restart_at {
            let log_start = self.log_start_offset;
            info!(dir = %self.dir.display(), base, log_start, "follower log restarts at the base offset of the batch holding its log start offset");
            self.truncate_fully_and_start_at(base)?;
            self.log_start_offset = log_start;
            self.write_checkpoint()?;
        }
        let first_offset = pending.first().map_or(log_end, |p| p.base_offset);
        let mut start = 0;
        let mut new_epoch = false;
        while start < pending.len() {
            let end = follower_run_end(&pending, start, segment_bytes);
            new_epoch |= self.append_follower_run(
                batches,
                pending.get(start..end).unwrap_or_default(),
                headers.get(start..end).unwrap_or_default(),
                now_ms,
            )?;
            start = end;
        }
        if new_epoch {
            // As on the leader: a rare event, checkpointed (with fsync) right away.
            if let Err(e) = self.epoch_cache.flush(&self.dir) {
                warn!(dir = %self.dir.display(), error = %e, "cannot write leader epoch checkpoint");
            }
        }
        Ok(AppendInfo {
            first_offset,
            last_offset: min_offset - 1,
            log_append_time: -1,
            log_start_offset: self.log_start_offset,
            batches: pending.len(),
            records,
            bytes: batches.len(),
            duplicate: false,
        })
    }

    /// Writes one run of follower batches (contiguous in `batches`, fitting one segment) and
    /// replays their producer state and leader epochs. Returns whether an epoch was added.
    fn append_follower_run(
        &mut self,
        batches: &[u8],
        run: &[PendingBatch],
        headers: &[(Option<ProducerBatch>, i32)],
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(false);
        };
        let from = first.position;
        let to = last.position + last.len;
        let Some(buf) = batches.get(from..to) else {
            return Err(StorageError::CorruptBatch(BatchError::Truncated {
                needed: to,
                available: batches.len(),
            }));
        };
        self.maybe_roll(buf.len(), last.last_offset, now_ms)?;
        self.place_empty_active_at(first.base_offset, last.last_offset, now_ms)?;
        let shifted: Vec<PendingBatch> = run
            .iter()
            .map(|p| PendingBatch {
                position: p.position - from,
                ..*p
            })
            .collect();
        let interval = self.config.index_interval_bytes;
        self.active_mut().append(buf, &shifted, interval, now_ms)?;
        debug_assert_eq!(self.log_end_offset(), last.last_offset + 1);
        let mut new_epoch = false;
        for (p, (pb, epoch)) in run.iter().zip(headers) {
            if let Some(pb) = pb {
                // Markers too: this replica may become the leader with the same open
                // transactions and aborted-transaction index as the leader's.
                self.complete_txn(pb, p.base_offset, p.last_offset)?;
            }
            new_epoch |= self.epoch_cache.assign_if_newer(*epoch, p.base_offset);
        }
        self.size_bytes += buf.len() as u64;
        self.unflushed_bytes += buf.len() as u64;
        self.last_append_ms = now_ms;
        if self.first_unflushed_ms.is_none() {
            self.first_unflushed_ms = Some(now_ms);
        }
        Ok(new_epoch)
    }

    /// A follower run after a gap too wide for the empty active segment's offset index (the
    /// leader's compacted log skipped more than `i32::MAX` offsets): the empty segment is
    /// replaced by one based at the run's first offset.
    fn place_empty_active_at(
        &mut self,
        base_offset: i64,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let active = self.active();
        if active.size() > 0 || last_offset - active.base_offset() <= i64::from(i32::MAX) {
            return Ok(());
        }
        debug_assert!(base_offset >= active.base_offset());
        let seg = LogSegment::create(&self.dir, base_offset, now_ms)?;
        if let Some(old) = self.segments.pop_back() {
            self.schedule_delete(&old);
        }
        self.segments.push_back(seg);
        Ok(())
    }

    /// Drops every segment and starts an empty log at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log end is below the leader's log start
    /// offset cannot fetch what it misses, so it starts over where the leader's log begins.
    /// Leader epochs and producer state go with the data.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        let offset = offset.max(0);
        self.replace_with_empty_segment_at(offset)?;
        self.size_bytes = self.segments.iter().map(|s| s.size()).sum();
        self.log_start_offset = offset;
        self.recovery_point = offset;
        self.unflushed_bytes = 0;
        self.first_unflushed_ms = None;
        self.epoch_cache.clear();
        self.producer_state.clear();
        self.lower_high_watermark_hint(offset);
        for snapshot in producer_state::list_snapshots(&self.dir)? {
            producer_state::delete_snapshot(&self.dir, snapshot)?;
        }
        // The renames and the new segment are durable before the checkpoint says so.
        checkpoint::sync_dir(&self.dir)?;
        self.write_checkpoint()?;
        self.generation += 1;
        self.first_dirty_offset = offset;
        self.delete_horizon = None;
        self.write_cleaner_checkpoint()?;
        info!(dir = %self.dir.display(), offset, "log truncated fully; it now starts at offset {offset}");
        Ok(())
    }

    /// Replaces the segments with one empty segment at `offset`. A segment already named
    /// after `offset` is emptied in place; otherwise the new one is created before the old
    /// ones go, so the log is never without a segment.
    fn replace_with_empty_segment_at(&mut self, offset: i64) -> Result<(), StorageError> {
        let keep = self.segments.iter().position(|s| s.base_offset() == offset);
        let created = match keep {
            Some(_) => None,
            None => Some(LogSegment::create(&self.dir, offset, self.now_hint_ms)?),
        };
        for (i, seg) in std::mem::take(&mut self.segments).into_iter().enumerate() {
            if Some(i) == keep {
                self.segments.push_back(seg);
            } else {
                self.schedule_delete(&seg);
            }
        }
        self.segments.extend(created);
        let interval = self.config.index_interval_bytes;
        self.active_mut().truncate_to(offset, interval)?;
        Ok(())
    }

    /// Kafka's `shouldRoll`: size, age, full index, or offsets past what the index can hold.
    fn maybe_roll(
        &mut self,
        incoming: usize,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let seg = self.active();
        if seg.size() == 0 {
            return Ok(());
        }
        let too_big = seg.size() + incoming as u64 > self.config.effective_segment_bytes();
        let too_old = now_ms.saturating_sub(seg.rolling_based_ms()) > self.config.segment_ms;
        let index_full = seg.offset_index_entries() >= self.config.max_offset_index_entries()
            || seg.time_index_entries() >= self.config.max_time_index_entries();
        let offsets_overflow = last_offset - seg.base_offset() > i64::from(i32::MAX);
        if too_big || too_old || index_full || offsets_overflow {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Rolls when `segment.ms` says the active segment is old enough (called periodically,
    /// so an idle partition's segment still rolls and can expire).
    pub fn roll_if_due(&mut self, now_ms: i64) -> Result<(), StorageError> {
        self.note_time(now_ms);
        self.purge_deleted_files(now_ms);
        let seg = self.active();
        if seg.size() > 0 && now_ms.saturating_sub(seg.rolling_based_ms()) > self.config.segment_ms
        {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end offset.
    fn roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let log_end = self.log_end_offset();
        if self.active().size() == 0 && self.active().base_offset() == log_end {
            return Ok(());
        }
        self.active_mut().seal()?;
        // Kafka's `<offset>.snapshot` at roll: a restart replays only the newer segments.
        // Not fsynced under the partition lock; a torn one is detected and skipped.
        self.take_producer_snapshot(log_end, false)?;
        let seg = LogSegment::create(&self.dir, log_end, now_ms)?;
        self.segments.push_back(seg);
        info!(dir = %self.dir.display(), base_offset = log_end, "rolled new log segment");
        Ok(())
    }

    /// Plans a read of whole batches from the batch holding `offset`, at most `max_bytes`
    /// (but a whole first batch when `min_one_batch`), never reaching `max_offset` (the high
    /// watermark, exclusive). May span segments.
    pub fn read_plan(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<ReadPlan, StorageError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        let mut plan = ReadPlan::default();
        let max_offset = max_offset.min(log_end);
        if offset >= max_offset {
            return Ok(plan);
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        let mut target = offset;
        for i in first..self.segments.len() {
            let seg = &self.segments[i];
            let upper = self.next_base(i);
            if target >= self.segment_end(i) {
                continue;
            }
            let Some((start, header)) = seg.translate_offset(target, upper)? else {
                target = self.segment_end(i);
                continue;
            };
            if header.last_offset() >= max_offset {
                break;
            }
            // Where batches at or past the high watermark begin in this segment.
            let end = if self.segment_end(i) <= max_offset {
                seg.size()
            } else {
                match seg.translate_offset(max_offset, upper)? {
                    Some((pos, _)) => pos,
                    None => seg.size(),
                }
            };
            let remaining = max_bytes.saturating_sub(plan.len());
            let first_len = header.total_len() as u64;
            let cut = if plan.is_empty() && min_one_batch && first_len > remaining as u64 {
                (start + first_len).min(end)
            } else {
                let limit = start.saturating_add(remaining as u64).min(end);
                seg.boundary_at_or_below(start, limit, upper)?.min(end)
            };
            if cut > start {
                plan.push(seg.log_file().clone(), start, (cut - start) as usize);
            }
            if cut < seg.size() || plan.len() >= max_bytes {
                break;
            }
            target = self.segment_end(i);
        }
        Ok(plan)
    }

    /// `read_plan` + `ReadPlan::execute`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<Bytes, StorageError> {
        Ok(self
            .read_plan(offset, max_bytes, max_offset, min_one_batch)?
            .execute()?)
    }

    /// The files and offset range not yet fsynced, or `None` when everything is durable.
    pub fn flush_job(&self) -> Option<FlushJob> {
        let log_end = self.log_end_offset();
        if self.recovery_point >= log_end {
            return None;
        }
        let mut files = Vec::new();
        let mut dir = None;
        for (i, seg) in self.segments.iter().enumerate() {
            if self.segment_end(i) <= self.recovery_point && seg.index_files().is_none() {
                continue;
            }
            files.push(seg.log_file().clone());
            if let Some(ix) = seg.index_files() {
                files.push(ix.offset.clone());
                files.push(ix.time.clone());
            }
            files.extend(seg.txn_index().unflushed_file().cloned());
            if seg.base_offset() >= self.recovery_point {
                dir = Some(self.dir.clone());
            }
        }
        Some(FlushJob {
            files,
            dir,
            up_to_offset: log_end,
        })
    }

    /// Records that a `FlushJob` completed: advances the recovery point (checkpointed every
    /// so often, and always on close).
    pub fn complete_flush(&mut self, flushed_up_to: i64) {
        let log_end = self.log_end_offset();
        let up_to = flushed_up_to.min(log_end);
        if up_to <= self.recovery_point {
            return;
        }
        self.recovery_point = up_to;
        for i in 0..self.segments.len().saturating_sub(1) {
            if self.segment_end(i) <= up_to {
                self.segments[i].release_index_files();
            }
        }
        self.durable_bytes_since_checkpoint += std::mem::take(&mut self.unflushed_bytes);
        if up_to >= log_end {
            self.first_unflushed_ms = None;
        } else {
            self.first_unflushed_ms = Some(self.last_append_ms);
        }
        if self.durable_bytes_since_checkpoint >= CHECKPOINT_EVERY_BYTES {
            if let Err(e) = self.write_checkpoint() {
                warn!(dir = %self.dir.display(), error = %e, "cannot write partition checkpoint");
            }
        }
    }

    /// True when `flush.messages` or `flush.ms` say it is time to fsync.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        let unflushed = self.log_end_offset() - self.recovery_point;
        if unflushed <= 0 {
            return false;
        }
        unflushed as u64 >= self.config.flush_interval_messages
            || self
                .first_unflushed_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= self.config.flush_interval_ms)
    }

    /// True when a rolled (sealed) segment still has unflushed data. Kafka flushes a segment
    /// in the background when it rolls, so the recovery point — and the work of crash
    /// recovery — follows the rolls; the broker should run a `FlushJob` then, without making
    /// acks wait for it (unlike `flush_due`).
    pub fn rolled_segments_unflushed(&self) -> bool {
        let n = self.segments.len();
        n > 1 && self.segment_end(n - 2) > self.recovery_point
    }

    /// Writes the checkpoint now if it changed (the broker may call this periodically).
    pub fn checkpoint(&mut self) -> Result<(), StorageError> {
        Ok(self.write_checkpoint()?)
    }

    fn write_checkpoint(&mut self) -> io::Result<()> {
        let cp = Checkpoint {
            log_start_offset: self.log_start_offset,
            recovery_point: self.recovery_point,
        };
        // Epochs first: a recovery point must not become durable past an epoch start the
        // epoch checkpoint lacks, since recovery only rebuilds epochs above it.
        self.epoch_cache.flush(&self.dir)?;
        if self.checkpointed != Some(cp) {
            checkpoint::write(&self.dir, cp)?;
            self.checkpointed = Some(cp);
        }
        self.durable_bytes_since_checkpoint = 0;
        Ok(())
    }

    /// Offset of the first record whose timestamp is >= `timestamp`, with that record's
    /// timestamp (ListOffsets by timestamp). Records below the log start offset are skipped.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, StorageError> {
        for (i, seg) in self.segments.iter().enumerate() {
            if self.segment_end(i) <= self.log_start_offset
                || seg.max_timestamp() < timestamp
                || seg.size() == 0
            {
                continue;
            }
            let upper = self.next_base(i);
            if let Some(found) =
                seg.find_offset_by_timestamp(timestamp, self.log_start_offset, upper)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// `(timestamp, offset)` — in the order of the name — of the first record with the
    /// largest timestamp (ListOffsets `MAX_TIMESTAMP`), or `None` for an empty log.
    pub fn max_timestamp_and_offset(&self) -> Option<(i64, i64)> {
        let mut best: Option<(usize, i64)> = None;
        for (i, seg) in self.segments.iter().enumerate() {
            if self.segment_end(i) <= self.log_start_offset
                || seg.size() == 0
                || seg.max_timestamp() < 0
            {
                continue;
            }
            if best.is_none_or(|(_, ts)| seg.max_timestamp() > ts) {
                best = Some((i, seg.max_timestamp()));
            }
        }
        let (i, ts) = best?;
        match self.segments[i].find_offset_by_timestamp(
            ts,
            self.log_start_offset,
            self.next_base(i),
        ) {
            Ok(found) => found.map(|(offset, timestamp)| (timestamp, offset)),
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "max timestamp lookup failed");
                None
            }
        }
    }

    /// DeleteRecords: advances the log start offset to `offset` (checkpointed) and deletes the
    /// segments wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, StorageError> {
        let log_end = self.log_end_offset();
        if offset > log_end || offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.log_start_offset = offset;
        let below = (0..self.segments.len().saturating_sub(1))
            .take_while(|i| self.next_base(*i).is_some_and(|n| n <= offset))
            .count();
        self.delete_prefix(below);
        self.write_checkpoint()?;
        Ok(self.log_start_offset)
    }

    /// Retention by time and size plus segments below the log start offset; returns the number
    /// of segments deleted. When every segment expired, an empty segment is rolled at the log
    /// end so the log start offset can move up to it.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        self.note_time(now_ms);
        self.purge_deleted_files(now_ms);
        let stats: Vec<SegmentStat> = self
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentStat {
                size: s.size(),
                largest_timestamp: if s.max_timestamp() >= 0 {
                    s.max_timestamp()
                } else {
                    file_mtime_ms(s).unwrap_or(now_ms)
                },
                next_base_offset: self.next_base(i),
            })
            .collect();
        self.prune_replicated_txns();
        self.producer_state
            .remove_expired(now_ms, self.config.producer_id_expiration_ms);
        let (count, breach) =
            retention::segments_to_delete(&stats, &self.config, now_ms, self.log_start_offset);
        if count == 0 {
            return Ok(0);
        }
        if count >= self.segments.len() {
            self.roll(now_ms)?;
        }
        info!(dir = %self.dir.display(), segments = count, ?breach, "deleting old log segments");
        self.delete_prefix(count);
        self.write_checkpoint()?;
        Ok(count)
    }

    /// Removes the first `count` segments (never the last one) and moves the log start offset
    /// up to the new first segment.
    fn delete_prefix(&mut self, count: usize) {
        let count = count.min(self.segments.len().saturating_sub(1));
        for _ in 0..count {
            if let Some(seg) = self.segments.pop_front() {
                self.size_bytes = self.size_bytes.saturating_sub(seg.size());
                self.schedule_delete(&seg);
            }
        }
        if let Some(first) = self.segments.front() {
            self.log_start_offset = self.log_start_offset.max(first.base_offset());
        }
        self.producer_state
            .on_log_start_offset(self.log_start_offset);
        self.epoch_cache.truncate_from_start(self.log_start_offset);
    }

    fn schedule_delete(&mut self, seg: &LogSegment) {
        let due = self
            .now_hint_ms
            .saturating_add(self.config.file_delete_delay_ms.max(0));
        for path in seg.rename_for_deletion() {
            if self.config.file_delete_delay_ms <= 0 {
                remove_file_logged(&path);
            } else {
                self.pending_deletes.push((path, due));
            }
        }
    }

    fn purge_deleted_files(&mut self, now_ms: i64) {
        self.pending_deletes.retain(|(path, due)| {
            if *due <= now_ms {
                remove_file_logged(path);
                false
            } else {
                true
            }
        });
    }

    /// Removes every batch holding an offset >= `offset` (replication: follower truncation).
    /// A batch straddling `offset` goes entirely, so the new log end may be below `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), StorageError> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let offset = offset.max(0);
        let first_base = self.segments.front().map_or(0, |s| s.base_offset());
        if offset <= first_base || offset < self.log_start_offset {
            // Nothing is left: an empty log starting at `offset`.
            self.replace_with_empty_segment_at(offset)?;
            self.log_start_offset = offset;
            self.epoch_cache.clear();
        } else {
            while self.segments.len() > 1
                && self
                    .segments
                    .back()
                    .is_some_and(|s| s.base_offset() >= offset)
            {
                if let Some(seg) = self.segments.pop_back() {
                    self.schedule_delete(&seg);
                }
            }
            let interval = self.config.index_interval_bytes;
            self.active_mut().truncate_to(offset, interval)?;
        }
        self.size_bytes = self.segments.iter().map(|s| s.size()).sum();
        let log_end = self.log_end_offset();
        self.epoch_cache.truncate_from_end(log_end);
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        self.unflushed_bytes = 0;
        self.first_unflushed_ms =
            (self.recovery_point < self.log_end_offset()).then_some(self.last_append_ms);
        // A lowered recovery point must be durable before anything is appended again.
        self.write_checkpoint()?;
        self.generation += 1;
        let log_end = self.log_end_offset();
        if self.first_dirty_offset > log_end {
            self.first_dirty_offset = log_end;
            self.write_cleaner_checkpoint()?;
        }
        // Producer state past the truncation point is void: rebuild it from what is left.
        let log_end = self.log_end_offset();
        self.load_producer_state(log_end)?;
        self.lower_high_watermark_hint(log_end);
        Ok(())
    }

    /// The cleaner checkpoint: the first offset not yet compacted.
    pub fn first_dirty_offset(&self) -> i64 {
        self.first_dirty_offset.max(self.log_start_offset)
    }

    /// Snapshot of the cleanable part of a compacted log (cheap; call under the lock):
    /// the sealed segments below the first uncleanable offset, which is the active
    /// segment's base or, with `min.compaction.lag.ms`, the first dirty segment holding a
    /// record younger than the lag, and never past the segment holding `high_watermark` (a
    /// follower may still truncate above it) or the last stable offset (an open
    /// transaction may still abort). `None` when the log is not compacted or nothing is
    /// dirty.
    pub fn cleanable(&self, now_ms: i64, high_watermark: i64) -> Option<CleanableLog> {
        if !self.config.compact || self.segments.len() < 2 {
            return None;
        }
        // Undecided transactions are never cleaned (as Kafka): nothing at or above the LSO.
        let high_watermark = self.last_stable_offset(high_watermark);
        let sealed = self.segments.len() - 1;
        let first_dirty = self.first_dirty_offset();
        let min_lag = self.config.min_compaction_lag_ms.max(0);
        let max_lag = self.config.max_compaction_lag_ms;
        let mut uncleanable = self.active().base_offset();
        let mut max_lag_exceeded = false;
        let mut seen_dirty = false;
        for i in 0..sealed {
            if self.segment_end(i) > high_watermark {
                uncleanable = uncleanable.min(self.segments[i].base_offset());
                break;
            }
            if self.segment_end(i) <= first_dirty {
                continue;
            }
            let seg = &self.segments[i];
            if !seen_dirty {
                seen_dirty = true;
                if max_lag > 0 && max_lag < i64::MAX {
                    // Kafka's rule: the first dirty segment's first batch timestamp.
                    if let Ok(Some(ts)) = seg.first_batch_timestamp() {
                        max_lag_exceeded = ts < now_ms.saturating_sub(max_lag);
                    }
                }
            }
            if min_lag > 0 && seg.max_timestamp() > now_ms.saturating_sub(min_lag) {
                uncleanable = seg.base_offset();
                break;
            }
        }
        let mut segments = Vec::new();
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        for i in 0..sealed {
            let end = self.segment_end(i);
            if end > uncleanable {
                break;
            }
            let seg = &self.segments[i];
            if end <= first_dirty {
                clean_bytes += seg.size();
            } else {
                dirty_bytes += seg.size();
            }
            segments.push(SourceSegment {
                base_offset: seg.base_offset(),
                end_offset: end,
                file: seg.log_file().clone(),
                size: seg.size(),
            });
        }
        let tombstones_due = self.delete_horizon.is_some_and(|t| t <= now_ms);
        if dirty_bytes == 0 && !tombstones_due {
            return None;
        }
        // The cleaner removes aborted records and needs the list for the whole pass.
        let pass_start = segments.first().map_or(first_dirty, |s| s.base_offset);
        let aborted_txns = match self.aborted_transactions(pass_start, uncleanable) {
            Ok(txns) => txns,
            Err(e) => {
                warn!(dir = %self.dir.display(), error = %e, "cannot read aborted transactions; not cleaning");
                return None;
            }
        };
        Some(CleanableLog {
            dir: self.dir.clone(),
            segments,
            first_dirty_offset: first_dirty,
            first_uncleanable_offset: uncleanable,
            generation: self.generation,
            config: self.config.clone(),
            producers: crate::cleaner::last_records(self.producer_state.clone_entries()),
            aborted_txns,
            clean_bytes,
            dirty_bytes,
            max_lag_exceeded,
            tombstones_due,
        })
    }

    /// The log was truncated since `snapshot` was taken: a failure while reading it may be
    /// that race rather than bad data.
    pub fn changed_since(&self, snapshot: &CleanableLog) -> bool {
        snapshot.generation != self.generation
    }

    /// Swaps every cleaned segment in at once (see [`Log::swap_cleaned_group`], which lets
    /// the caller release the lock between groups).
    pub fn swap_cleaned(&mut self, mut cleaned: CleanedLog) -> Result<SwapOutcome, StorageError> {
        loop {
            if let Some(outcome) = self.swap_cleaned_group(&mut cleaned)? {
                return Ok(outcome);
            }
        }
    }

    /// Swaps the next cleaned segment in: a commit rename and two directory fsyncs under the
    /// lock. Returns `None` while groups remain, then the outcome; the last call advances the
    /// cleaner checkpoint. Aborts, removing the remaining cleaned files, when a segment the
    /// cleaner read was deleted, replaced or truncated meanwhile. Groups go in offset order,
    /// each committed on its own: a crash or an abort never leaves a later group swapped (its
    /// tombstones gone) with an earlier group's older values still in place.
    pub fn swap_cleaned_group(
        &mut self,
        cleaned: &mut CleanedLog,
    ) -> Result<Option<SwapOutcome>, StorageError> {
        let dir = self.dir.clone();
        if cleaned.generation != self.generation {
            cleaned.groups.clear();
            return Ok(Some(SwapOutcome::Aborted("the log was truncated")));
        }
        if let Some(mut g) = cleaned.next_group() {
            let (Some(i), Some(seg)) = (self.cleaned_group_position(&g), g.segment.take()) else {
                cleaned.groups.clear();
                return Ok(Some(SwapOutcome::Aborted(
                    "a segment being cleaned changed",
                )));
            };
            segment_swap::commit(&dir, g.base_offset, g.end_offset)?;
            g.files_pending = false;
            let n = g.sources.len();
            let old: Vec<LogSegment> = self.segments.drain(i..i + n).collect();
            for o in &old {
                self.size_bytes = self.size_bytes.saturating_sub(o.size());
                self.schedule_delete(o);
            }
            self.size_bytes += seg.size();
            self.segments.insert(i, seg);
            // The old files' renames are durable before the final names appear; those need
            // no fsync of their own (a lost one is redone by recovery from the swap file).
            checkpoint::sync_dir(&dir)?;
            segment_swap::finish(&dir, g.base_offset, g.end_offset)?;
            cleaned.replaced += n;
            cleaned.written += 1;
            if !cleaned.groups.is_empty() {
                return Ok(None);
            }
            checkpoint::sync_dir(&dir)?;
        }
        let next = cleaned.first_dirty_offset.min(self.active().base_offset());
        let horizon = cleaned.stats.earliest_delete_horizon;
        if next > self.first_dirty_offset || horizon != self.delete_horizon {
            self.first_dirty_offset = self.first_dirty_offset.max(next);
            self.delete_horizon = horizon;
            self.write_cleaner_checkpoint()?;
        }
        info!(dir = %dir.display(), segments_replaced = cleaned.replaced, segments_written = cleaned.written, first_dirty_offset = next, "swapped in cleaned segments");
        Ok(Some(SwapOutcome::Swapped {
            segments_replaced: cleaned.replaced,
            segments_written: cleaned.written,
        }))
    }

    fn write_cleaner_checkpoint(&self) -> io::Result<()> {
        cleaner_checkpoint::write(
            &self.dir,
            cleaner_checkpoint::CleanerCheckpoint {
                first_dirty_offset: self.first_dirty_offset,
                delete_horizon: self.delete_horizon,
            },
        )
    }

    /// Index of the first segment a cleaned group replaces, if those segments are still
    /// exactly the ones the cleaner read and none of them is the active one.
    fn cleaned_group_position(&self, g: &crate::cleaner::CleanedGroup) -> Option<usize> {
        let i = self
            .segments
            .iter()
            .position(|s| s.base_offset() == g.base_offset)?;
        let n = g.sources.len();
        let same = n > 0
            && g.sources.iter().enumerate().all(|(k, (base, file))| {
                self.segments
                    .get(i + k)
                    .is_some_and(|s| s.base_offset() == *base && Arc::ptr_eq(s.log_file(), file))
            });
        (same && self.next_base(i + n - 1) == Some(g.end_offset)).then_some(i)
    }

    /// The leader-epoch cache (read-only).
    pub fn leader_epoch_cache(&self) -> &LeaderEpochCache {
        &self.epoch_cache
    }

    /// The newest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epoch_cache.latest_epoch()
    }

    /// OffsetForLeaderEpoch (Kafka's `UnifiedLog.endOffsetForEpoch`): the largest epoch at or
    /// below `leader_epoch` and the offset where it ended, or `None` when that is undefined
    /// (the epoch is newer than any in the log, or the log holds no epochs).
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> Option<(i32, i64)> {
        let (epoch, offset) = self
            .epoch_cache
            .end_offset_for(leader_epoch, self.log_end_offset());
        (offset != leader_epoch::UNDEFINED_EPOCH_OFFSET).then_some((epoch, offset))
    }

    /// Loads the leader-epoch checkpoint and brings it in line with the log: epochs of
    /// batches past the recovery point (written after the checkpoint, if the shutdown was
    /// not clean) are added from the batch headers, or every batch's when the checkpoint is
    /// missing or damaged; entries past the log end or below the log start are cut.
    fn load_epoch_cache(&mut self, clean: bool, recovery_point: i64) -> Result<(), StorageError> {
        let scan_from = match leader_epoch::read_checkpoint(&self.dir)? {
            StoredCheckpoint::Entries(entries) => {
                self.epoch_cache = LeaderEpochCache::from_entries(entries);
                (!clean).then_some(recovery_point.max(self.log_start_offset))
            }
            StoredCheckpoint::Missing => {
                self.epoch_cache = LeaderEpochCache::default();
                // Write it even if no batch has an epoch, so the next open need not scan.
                if self.log_end_offset() > self.log_start_offset {
                    self.epoch_cache.mark_dirty();
                }
                Some(self.log_start_offset)
            }
            StoredCheckpoint::Corrupt => {
                self.epoch_cache = LeaderEpochCache::default();
                self.epoch_cache.mark_dirty();
                Some(self.log_start_offset)
            }
        };
        if let Some(from) = scan_from {
            let mut cache = std::mem::take(&mut self.epoch_cache);
            for i in 0..self.segments.len() {
                if self.segment_end(i) <= from {
                    continue;
                }
                let upper = self.next_base(i);
                self.segments[i].for_each_header(from, upper, |h| {
                    cache.assign_if_newer(h.partition_leader_epoch, h.base_offset);
                })?;
            }
            self.epoch_cache = cache;
        }
        // Unlike Kafka's loader, an epoch that began exactly at the log end is kept (it is
        // how a log emptied by DeleteRecords or retention remembers its epoch), so a restart
        // answers OffsetForLeaderEpoch as before it.
        let log_end = self.log_end_offset();
        self.epoch_cache
            .truncate_from_end(log_end.saturating_add(1));
        self.epoch_cache.truncate_from_start(self.log_start_offset);
        // Written by the `write_checkpoint` that ends `open`, if anything changed.
        Ok(())
    }

    /// The idempotent producer state (read-only; tests and diagnostics).
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producer_state
    }

    /// Sets (or returns) the producer's KIP-890 verification guard: see
    /// [`ProducerStateManager::begin_verification`].
    pub fn begin_txn_verification(&mut self, producer_id: i64) -> u64 {
        self.producer_state.begin_verification(producer_id)
    }

    /// Writes the producer-state snapshot for `offset` (the state of every batch below it)
    /// and prunes old snapshots.
    fn take_producer_snapshot(&mut self, offset: i64, sync: bool) -> Result<(), StorageError> {
        debug_assert_eq!(offset, self.log_end_offset());
        producer_state::write_snapshot(&self.dir, offset, &self.producer_state, sync)?;
        let snaps = producer_state::list_snapshots(&self.dir)?;
        let excess = snaps.len().saturating_sub(SNAPSHOTS_RETAINED);
        for old in snaps.into_iter().take(excess) {
            producer_state::delete_snapshot(&self.dir, old)?;
        }
        Ok(())
    }

    /// Rebuilds the producer state: the newest usable snapshot at or below `unsure_from`
    /// (and the log end), then the batches from there on: headers, and the one record of
    /// each control batch (never decompressing data). Snapshots beyond the log end (the log
    /// was truncated after they were taken) are deleted. The aborted-transaction index
    /// entries of markers at or past `unsure_from` (segments recovered after a crash, whose
    /// index files were not fsynced) are rewritten, as Kafka rebuilds the transaction index
    /// of the segments it recovers; those below it are trusted: the cleaner may have
    /// removed the first batches of an aborted transaction, and its entry keeps the
    /// original first offset. Truncation cuts the entries past the new log end itself.
    fn load_producer_state(&mut self, unsure_from: i64) -> Result<(), StorageError> {
        let snapshot_limit = unsure_from;
        let log_end = self.log_end_offset();
        let mut state = None;
        let mut from = self.log_start_offset;
        for offset in producer_state::list_snapshots(&self.dir)?.into_iter().rev() {
            if offset > log_end {
                producer_state::delete_snapshot(&self.dir, offset)?;
                continue;
            }
            if state.is_some() || offset > snapshot_limit {
                continue;
            }
            match producer_state::read_snapshot(&self.dir, offset)? {
                Some(s) => {
                    state = Some(s);
                    from = offset.max(self.log_start_offset);
                }
                None => {
                    warn!(dir = %self.dir.display(), offset, "damaged producer state snapshot; ignoring it");
                    producer_state::delete_snapshot(&self.dir, offset)?;
                }
            }
        }
        let mut state: ProducerStateManager = state.unwrap_or_default();
        let rewrite_from = unsure_from.max(from);
        let last = self.segments.len() - 1;
        for i in 0..self.segments.len() {
            if self.segment_end(i) <= from && i != last {
                continue;
            }
            let upper = self.next_base(i);
            let rewrite = self.segment_end(i) > rewrite_from || i == last;
            let seg = &mut self.segments[i];
            if rewrite {
                seg.txn_index_mut().truncate_from(rewrite_from)?;
            }
            let mut aborted = Vec::new();
            seg.for_each_batch_with_control(from, upper, MAX_CONTROL_BATCH_BYTES, |h, bytes| {
                let Some(pb) = ProducerBatch::of_batch(h, bytes) else {
                    return;
                };
                if let Some((txn, stable)) = state.replay(&pb, h.base_offset, h.last_offset()) {
                    if txn.is_aborted && txn.last_offset >= rewrite_from {
                        aborted.push(AbortedTxn {
                            producer_id: txn.producer_id,
                            first_offset: txn.first_offset,
                            last_offset: txn.last_offset,
                            last_stable_offset: stable,
                        });
                    }
                }
            })?;
            let rewritten = !aborted.is_empty();
            for entry in aborted {
                seg.txn_index_mut().append(entry)?;
            }
            if rewritten && i != last && seg.index_files().is_none() {
                // A sealed segment no flush job will visit again.
                seg.txn_index_mut().sync_and_release()?;
            }
        }
        state.carry_unreplicated(&self.producer_state, from);
        state.on_log_start_offset(self.log_start_offset);
        self.producer_state = state;
        Ok(())
    }

    /// Flushes, writes checkpoints and the clean-shutdown marker, so the next open skips
    /// recovery.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.active_mut().seal()?;
        let seg = self.active();
        seg.log_file().sync_data()?;
        if let Some(ix) = seg.index_files() {
            ix.offset.sync_data()?;
            ix.time.sync_data()?;
        }
        if let Some(f) = seg.txn_index().unflushed_file() {
            f.sync_data()?;
        }
        if let Some(job) = self.flush_job() {
            job.run()?;
            self.complete_flush(job.up_to_offset);
        }
        let log_end = self.log_end_offset();
        self.take_producer_snapshot(log_end, true)?;
        checkpoint::sync_dir(&self.dir)?;
        self.recovery_point = log_end;
        self.write_checkpoint()?;
        checkpoint::write_clean_shutdown_marker(&self.dir)?;
        Ok(())
    }

    /// Removes the log's directory (topic deletion). In-flight reads keep their files open.
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// A compacted topic refuses records without a key (Kafka's `LogValidator`); this inflates
/// the batch, which Kafka also does for compacted topics.
fn check_keys(batch: &[u8], h: &record_batch::BatchHeader) -> Result<(), StorageError> {
    const KEYLESS: &str = "compacted topic cannot accept a record without a key";
    let data = crate::record_filter::records_section(batch, h, DECOMPRESS_LIMIT)
        .map_err(StorageError::InvalidRecord)?;
    crate::record_filter::for_each_record(&data, h, |r| match r.key {
        Some(_) => Ok(()),
        None => Err(KEYLESS.into()),
    })
    .map_err(StorageError::InvalidRecord)
}

/// End (exclusive) of the run of follower batches from `start` that one segment append can
/// take: at most `segment_bytes` (a single batch always fits, as checked) and offsets within
/// `i32::MAX` of the run's first.
fn follower_run_end(pending: &[PendingBatch], start: usize, segment_bytes: u64) -> usize {
    let Some(first) = pending.get(start) else {
        return start;
    };
    let mut bytes = 0u64;
    let mut end = start;
    for p in pending.iter().skip(start) {
        let fits = bytes + p.len as u64 <= segment_bytes
            && p.last_offset - first.base_offset <= i64::from(i32::MAX);
        if end > start && !fits {
            break;
        }
        bytes += p.len as u64;
        end += 1;
    }
    end
}

fn remove_file_logged(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(file = %path.display(), error = %e, "cannot remove deleted segment file");
        }
    }
}

fn file_mtime_ms(seg: &LogSegment) -> Option<i64> {
    let modified = seg.log_file().metadata().ok()?.modified().ok()?;
    i64::try_from(modified.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}
