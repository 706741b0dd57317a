//! Errors of the partition log.

use kavka_protocol::record_batch::BatchError;
use thiserror::Error;

/// Why a log operation failed. The broker maps these to Kafka error codes
/// (`OFFSET_OUT_OF_RANGE`, `MESSAGE_TOO_LARGE`, `CORRUPT_MESSAGE`, `KAFKA_STORAGE_ERROR`).
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("record batch of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("corrupt record batch: {0}")]
    CorruptBatch(#[from] BatchError),
    #[error("offset overflow: appending {records} offsets after {log_end}")]
    OffsetOverflow { log_end: i64, records: i64 },
    #[error("empty append: no record batch in the request")]
    EmptyAppend,
    /// A record the topic does not accept (a record without a key in a compacted topic):
    /// Kafka's `INVALID_RECORD`.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A follower append whose offsets do not continue the log: a batch starting below the
    /// log end offset, or batches not in increasing offset order (Kafka's
    /// `UnexpectedAppendOffsetException` / `OffsetsOutOfOrderException`).
    #[error("follower append of offsets {first_offset}..={last_offset} starts below offset {min_offset}")]
    OffsetsOutOfOrder {
        first_offset: i64,
        last_offset: i64,
        /// The lowest offset the batch could have started at.
        min_offset: i64,
    },
    /// An idempotent batch was refused (zombie epoch or sequence gap).
    #[error(transparent)]
    Producer(#[from] crate::producer_state::ProducerStateError),
}
