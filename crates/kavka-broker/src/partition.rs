//! One hosted partition: its log, its high watermark, and the waiters parked on them.
//!
//! On a single node the replica set is just this broker, so the high watermark is the log
//! end offset. Fetches park on `high_watermark` changes; producers that need durability park
//! on `durable` (advanced by this partition's flusher task, which fsyncs outside the lock so
//! one fsync covers every batch appended while the previous one ran: group commit).

use kavka_storage::{
    AppendInfo, CleanableLog, CleanedLog, Log, LogConfig, ReadPlan, StorageError, SwapOutcome,
};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum PartitionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The partition is being closed or deleted; clients refresh metadata and retry.
    #[error("partition is no longer hosted here")]
    NotHosted,
}

/// Why [`Partition::end_offset_for_leader_epoch`] gave no answer.
#[derive(Debug, Error)]
pub enum LeaderEpochError {
    /// The requester's current leader epoch is older than ours: Kafka's FENCED_LEADER_EPOCH.
    #[error("current leader epoch {requested} is older than the leader's {ours}")]
    Fenced { requested: i32, ours: i32 },
    /// The requester knows a newer leader epoch than ours: UNKNOWN_LEADER_EPOCH.
    #[error("current leader epoch {requested} is newer than the leader's {ours}")]
    Unknown { requested: i32, ours: i32 },
    #[error(transparent)]
    Partition(#[from] PartitionError),
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    log: Mutex<Option<Log>>,
    high_watermark: watch::Sender<i64>,
    log_start_offset: watch::Sender<i64>,
    /// Every offset below this is fsynced.
    durable: watch::Sender<i64>,
    flush_wanted: Notify,
    /// The leader epoch this broker appends under (from the metadata image; a single node's
    /// partitions stay at 0).
    leader_epoch: AtomicI32,
}

impl Partition {
    pub fn new(topic: String, topic_id: Uuid, index: i32, log: Log) -> Arc<Self> {
        let leo = log.log_end_offset();
        let lso = log.log_start_offset();
        // Whatever recovery kept is on disk; treat it as durable.
        Arc::new(Partition {
            topic,
            topic_id,
            index,
            log: Mutex::new(Some(log)),
            high_watermark: watch::Sender::new(leo),
            log_start_offset: watch::Sender::new(lso),
            durable: watch::Sender::new(leo),
            flush_wanted: Notify::new(),
            leader_epoch: AtomicI32::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Log>> {
        // A panic while holding the lock would be a bug; the log's own state is still
        // consistent at every await-free step, so keep serving.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_log<T>(
        &self,
        f: impl FnOnce(&mut Log) -> Result<T, StorageError>,
    ) -> Result<T, PartitionError> {
        let mut g = self.lock();
        let log = g.as_mut().ok_or(PartitionError::NotHosted)?;
        Ok(f(log)?)
    }

    /// Appends validated batches. Blocking (file write): call from a blocking thread.
    /// Returns the append result and whether the caller must wait for an fsync before acking.
    pub fn append(
        &self,
        batches: &mut [u8],
        now_ms: i64,
    ) -> Result<(AppendInfo, bool), PartitionError> {
        let epoch = self.leader_epoch();
        let (info, flush_due, lso, leo) = self.with_log(|log| {
            let info = log.append_as_leader(batches, epoch, now_ms)?;
            Ok((
                info,
                log.flush_due(now_ms),
                log.log_start_offset(),
                log.log_end_offset(),
            ))
        })?;
        // Not `info.last_offset + 1`: a deduplicated retry reports older offsets.
        self.high_watermark.send_replace(leo);
        self.log_start_offset.send_replace(lso);
        if flush_due {
            self.flush_wanted.notify_one();
        }
        Ok((info, flush_due))
    }

    /// The current leader epoch, written into every appended batch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Adopts the leader epoch of a new metadata image (a leader change). Epochs only grow.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Kafka's `checkCurrentLeaderEpoch`: a request's current leader epoch must be ours;
    /// -1 means the requester does not check.
    pub fn check_current_leader_epoch(
        &self,
        current_leader_epoch: i32,
    ) -> Result<(), LeaderEpochError> {
        let ours = self.leader_epoch();
        match current_leader_epoch {
            -1 => Ok(()),
            requested if requested > ours => Err(LeaderEpochError::Unknown { requested, ours }),
            requested if requested < ours => Err(LeaderEpochError::Fenced { requested, ours }),
            _ => Ok(()),
        }
    }

    /// OffsetForLeaderEpoch for this partition (Kafka's `Partition.lastOffsetForLeaderEpoch`):
    /// after [`Partition::check_current_leader_epoch`], the largest epoch at or below
    /// `leader_epoch` and the offset where it ended, or `None` when undefined (answered as
    /// -1, -1).
    pub fn end_offset_for_leader_epoch(
        &self,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<Option<(i32, i64)>, LeaderEpochError> {
        self.check_current_leader_epoch(current_leader_epoch)?;
        Ok(self.with_log(|log| Ok(log.end_offset_for_epoch(leader_epoch)))?)
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> i64 {
        *self.log_start_offset.borrow()
    }

    /// A receiver that wakes whenever the high watermark moves (long-poll fetch).
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Waits until every offset up to and including `offset` is fsynced.
    pub async fn wait_durable(&self, offset: i64) -> Result<(), PartitionError> {
        let mut rx = self.durable.subscribe();
        self.flush_wanted.notify_one();
        rx.wait_for(|d| *d > offset)
            .await
            .map(|_| ())
            .map_err(|_| PartitionError::NotHosted)
    }

    /// Plans a read under the lock; the caller executes it (positional reads) outside.
    pub fn read_plan(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadPlan, PartitionError> {
        let hw = self.high_watermark();
        self.with_log(|log| log.read_plan(offset, max_bytes, hw, min_one_batch))
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, PartitionError> {
        self.with_log(|log| log.offset_for_timestamp(ts))
    }

    pub fn max_timestamp_and_offset(&self) -> Result<Option<(i64, i64)>, PartitionError> {
        self.with_log(|log| Ok(log.max_timestamp_and_offset()))
    }

    /// DeleteRecords. Returns the new log start offset (the low watermark).
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, PartitionError> {
        let lso = self.with_log(|log| log.delete_records_before(offset))?;
        self.log_start_offset.send_replace(lso);
        Ok(lso)
    }

    pub fn update_config(&self, config: LogConfig) {
        let _ = self.with_log(|log| {
            log.update_config(config);
            Ok(())
        });
    }

    /// The log cleaner's snapshot of the cleanable segments below the high watermark
    /// (quick, under the lock).
    pub fn cleanable(&self, now_ms: i64) -> Result<Option<CleanableLog>, PartitionError> {
        let hw = self.high_watermark();
        self.with_log(|log| Ok(log.cleanable(now_ms, hw)))
    }

    /// The log was truncated (or is gone) since the cleaner took `snapshot`.
    pub fn changed_since(&self, snapshot: &CleanableLog) -> bool {
        self.with_log(|log| Ok(log.changed_since(snapshot)))
            .unwrap_or(true)
    }

    /// Swaps in segments the cleaner wrote outside the lock, one cleaned segment per lock
    /// acquisition (a rename and two directory fsyncs each), so produce and fetch wait at
    /// most for one. Blocking.
    pub fn swap_cleaned(&self, mut cleaned: CleanedLog) -> Result<SwapOutcome, PartitionError> {
        loop {
            if let Some(outcome) = self.with_log(|log| log.swap_cleaned_group(&mut cleaned))? {
                return Ok(outcome);
            }
        }
    }

    /// Periodic housekeeping: time-based roll and retention. Blocking.
    pub fn housekeeping(&self, now_ms: i64) -> Result<usize, PartitionError> {
        let (deleted, lso, due) = self.with_log(|log| {
            log.roll_if_due(now_ms)?;
            let deleted = log.apply_retention(now_ms)?;
            // Kafka fsyncs rolled segments in the background so the recovery point keeps
            // moving even when acks do not wait for fsync.
            let due = log.flush_due(now_ms) || log.rolled_segments_unflushed();
            log.checkpoint()?;
            Ok((deleted, log.log_start_offset(), due))
        })?;
        self.log_start_offset.send_replace(lso);
        if due {
            self.flush_wanted.notify_one();
        }
        Ok(deleted)
    }

    /// The flusher: fsyncs outside the lock whenever asked, and publishes how far the log is
    /// durable. Runs until the partition is closed.
    pub async fn run_flusher(self: Arc<Self>) {
        loop {
            self.flush_wanted.notified().await;
            loop {
                // Decide under the lock, so an append racing with this check is either in
                // the job or left for the next round, never marked durable unflushed.
                let job = {
                    let g = self.lock();
                    match g.as_ref() {
                        None => return,
                        Some(log) => log.flush_job().ok_or(log.log_end_offset()),
                    }
                };
                let job = match job {
                    Ok(job) => job,
                    Err(leo) => {
                        self.durable.send_if_modified(|d| {
                            let moved = *d < leo;
                            *d = (*d).max(leo);
                            moved
                        });
                        break;
                    }
                };
                let up_to = job.up_to_offset;
                let res = tokio::task::spawn_blocking(move || job.run()).await;
                match res {
                    Ok(Ok(())) => {
                        let _ = self.with_log(|log| {
                            log.complete_flush(up_to);
                            Ok(())
                        });
                        self.durable.send_if_modified(|d| {
                            let moved = *d < up_to;
                            *d = (*d).max(up_to);
                            moved
                        });
                    }
                    Ok(Err(e)) => {
                        // An fsync failure means the page cache may have dropped our data:
                        // Kafka halts the log dir. We stop acknowledging durable writes.
                        tracing::error!(topic = %self.topic, partition = self.index, "fsync failed: {e}; durable acks stop");
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }

    /// Takes the log out (clean close or delete); later calls see `NotHosted`.
    pub fn take_log(&self) -> Option<Log> {
        let log = self.lock().take();
        self.flush_wanted.notify_one();
        log
    }
}

impl Partition {
    /// Wakes the flusher when flush.messages / flush.ms say so.
    pub fn flush_if_due(&self, now_ms: i64) {
        let due = self
            .with_log(|log| Ok(log.flush_due(now_ms) || log.rolled_segments_unflushed()))
            .unwrap_or(false);
        if due {
            self.flush_wanted.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use kavka_protocol::record_batch;

    /// A producer's batch of two records (partition leader epoch -1).
    fn batch() -> BytesMut {
        let records: Vec<Record> = (0..2)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 1_000,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf
    }

    #[test]
    fn appends_under_the_leader_epoch_and_answers_offset_for_leader_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default(), 1_000).unwrap();
        let part = Partition::new("t".into(), Uuid::nil(), 0, log);
        assert_eq!(part.leader_epoch(), 0);
        part.append(&mut batch(), 1_000).unwrap();
        part.set_leader_epoch(3);
        part.set_leader_epoch(2); // never goes back
        assert_eq!(part.leader_epoch(), 3);
        part.append(&mut batch(), 1_000).unwrap();
        let stored = part
            .read_plan(0, usize::MAX, false)
            .unwrap()
            .execute()
            .unwrap();
        let epochs: Vec<i32> = record_batch::batches(&stored)
            .map(|r| r.unwrap().1.partition_leader_epoch)
            .collect();
        assert_eq!(epochs, vec![0, 3]);

        assert_eq!(
            part.end_offset_for_leader_epoch(-1, 0).unwrap(),
            Some((0, 2))
        );
        assert_eq!(
            part.end_offset_for_leader_epoch(3, 2).unwrap(),
            Some((0, 2))
        );
        assert_eq!(
            part.end_offset_for_leader_epoch(3, 3).unwrap(),
            Some((3, 4))
        );
        assert_eq!(part.end_offset_for_leader_epoch(3, 4).unwrap(), None);
        assert!(matches!(
            part.end_offset_for_leader_epoch(2, 0),
            Err(LeaderEpochError::Fenced {
                requested: 2,
                ours: 3
            })
        ));
        assert!(matches!(
            part.end_offset_for_leader_epoch(4, 0),
            Err(LeaderEpochError::Unknown {
                requested: 4,
                ours: 3
            })
        ));
        let log = part.take_log().unwrap();
        assert!(matches!(
            part.end_offset_for_leader_epoch(3, 3),
            Err(LeaderEpochError::Partition(PartitionError::NotHosted))
        ));
        log.close().unwrap();
    }
}
