//! kavka-storage: the partition log.
//!
//! One [`Log`] per partition directory, modelled on Apache Kafka's `UnifiedLog` /
//! `LocalLog` / `LogSegment` split: segments of whole v2 record batches named by base offset,
//! a sparse offset index and a time index per segment, crash recovery that truncates a torn
//! tail, retention by time and size, DeleteRecords, compaction (the [`Cleaner`]) and
//! transactions (open transactions per producer, the last stable offset, and an
//! aborted-transaction index per segment for read_committed consumers).
//! Batches are stored exactly as the producer sent them, with only the base offset (and LogAppendTime) rewritten.
//!
//! The broker wraps each `Log` in a mutex. Nothing slow happens under it: appends write to
//! the OS page cache, reads return a [`ReadPlan`] executed with positional reads after the
//! lock is released, and fsyncs are a [`FlushJob`] run elsewhere.

mod batch_reader;
mod checkpoint;
mod cleaner;
mod cleaner_checkpoint;
mod config;
mod error;
mod flush;
mod index_entries;
mod leader_epoch;
mod log;
mod offset_index;
mod offset_map;
mod producer_state;
mod read_plan;
mod record_filter;
mod recovery;
mod retention;
mod segment;
mod segment_swap;
mod time_index;
mod txn_index;

pub use cleaner::{CleanableLog, CleanedLog, Cleaner, CleanerConfig, CleanerError, CleanerStats};
pub use config::{LogConfig, TimestampType};
pub use error::StorageError;
pub use flush::FlushJob;
pub use leader_epoch::{EpochEntry, LeaderEpochCache, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use log::{AppendInfo, Log, SwapOutcome};
pub use producer_state::{
    increment_sequence, BatchMetadata, ProducerEntry, ProducerStateError, ProducerStateManager,
    NUM_BATCHES_TO_RETAIN,
};
pub use read_plan::{ReadChunk, ReadPlan};
pub use txn_index::AbortedTxn;

#[cfg(test)]
mod cleaner_tests;
#[cfg(test)]
mod follower_tests;
#[cfg(test)]
mod leader_epoch_tests;
#[cfg(test)]
mod producer_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;
