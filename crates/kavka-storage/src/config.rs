//! Per-topic log configuration, with Apache Kafka's names and defaults.

/// `message.timestamp.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    #[default]
    CreateTime,
    /// Overwrite the batch max timestamp with the broker's clock on append.
    LogAppendTime,
}

/// Kafka's topic-level log settings. Values are taken as given; the effective limits
/// (e.g. `segment.bytes` capped to what a 32-bit index position can address) are derived by
/// the helper methods so a silly value never breaks the on-disk format.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed it.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is older.
    pub segment_ms: i64,
    /// `retention.bytes`, -1 = unlimited.
    pub retention_bytes: i64,
    /// `retention.ms`, -1 = unlimited.
    pub retention_ms: i64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    /// `index.interval.bytes`: bytes between two offset index entries.
    pub index_interval_bytes: usize,
    /// `segment.index.bytes`: roll when the offset or time index is full.
    pub segment_index_bytes: usize,
    /// `flush.messages`: fsync after this many unflushed messages (1 = before every ack).
    pub flush_interval_messages: u64,
    /// `flush.ms`: fsync when data has been unflushed this long.
    pub flush_interval_ms: i64,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `file.delete.delay.ms`: how long deleted segment files linger (renamed `.deleted`).
    pub file_delete_delay_ms: i64,
    /// `producer.id.expiration.ms` (a broker setting): forget an idle producer's state.
    pub producer_id_expiration_ms: i64,
    /// `cleanup.policy` contains `compact`: the log cleaner keeps the latest value per key.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: clean when dirty bytes / cleanable bytes reach this.
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms`: how long a tombstone stays after its batch was first cleaned.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: segments with newer records are not cleaned yet.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty record is older is cleaned whatever
    /// its dirty ratio.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            flush_interval_messages: u64::MAX,
            flush_interval_ms: i64::MAX,
            message_timestamp_type: TimestampType::CreateTime,
            file_delete_delay_ms: 60_000,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

impl LogConfig {
    /// `segment.bytes` as used: Kafka's setting is an `int`, and index positions are u32.
    pub(crate) fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes.clamp(1, i32::MAX as u64)
    }

    /// Entries the offset index may hold before the segment must roll.
    pub(crate) fn max_offset_index_entries(&self) -> usize {
        (self.segment_index_bytes / crate::offset_index::ENTRY_SIZE).max(1)
    }

    /// Entries the time index may hold before the segment must roll.
    pub(crate) fn max_time_index_entries(&self) -> usize {
        (self.segment_index_bytes / crate::time_index::ENTRY_SIZE).max(1)
    }
}
