//! What a group write waits for before its answer goes out: the ISR having it (Kafka
//! appends to `__consumer_offsets` with acks=-1) and, when the log asks for it, its fsync.
//!
//! The coordinator appends and applies in memory under a shard lock, which is never held
//! across an await; the handler awaits the returned [`AppendWait`] afterwards.

use crate::partition::{Partition, PartitionError};
use kavka_protocol::error::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// One appended batch of group records, not yet acknowledged. Clones wait for the same
/// batch (a classic group's store releases its parked SyncGroups and answers the
/// LeaveGroup that caused it).
#[derive(Clone)]
pub struct AppendWait {
    partition: Arc<Partition>,
    last_offset: i64,
    fsync: bool,
    timeout: Duration,
}

impl std::fmt::Debug for AppendWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendWait")
            .field("topic", &self.partition.topic)
            .field("partition", &self.partition.index)
            .field("last_offset", &self.last_offset)
            .field("fsync", &self.fsync)
            .finish()
    }
}

impl AppendWait {
    pub(super) fn new(
        partition: Arc<Partition>,
        last_offset: i64,
        fsync: bool,
        timeout: Duration,
    ) -> Self {
        AppendWait {
            partition,
            last_offset,
            fsync,
            timeout,
        }
    }

    /// The offset the high watermark must pass.
    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }

    /// The high watermark already covers the batch (a single node, an ISR of one): the
    /// answer need not park.
    pub fn is_replicated(&self) -> bool {
        self.partition.high_watermark() > self.last_offset
    }

    /// Resolves once the ISR has the batch, or with the error the group request answers.
    pub async fn replicated(&self) -> Result<(), ErrorCode> {
        self.partition
            .wait_replicated(self.last_offset, self.timeout)
            .await
            .map_err(|e| self.store_error(&e))
    }

    /// For a handler run on the blocking pool: returns at once when the ISR has the batch
    /// already (a single node, so no runtime is needed), else parks this thread on the
    /// runtime until [`Self::replicated`] resolves. Never call it from async code.
    pub fn replicated_blocking(&self) -> Result<(), ErrorCode> {
        if self.is_replicated() {
            return Ok(());
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt.block_on(self.replicated()),
            Err(_) => {
                tracing::warn!(
                    partition = self.partition.index,
                    offset = self.last_offset,
                    "group write cannot wait for its replication outside a runtime"
                );
                Err(ErrorCode::CoordinatorNotAvailable)
            }
        }
    }

    /// Resolves once the batch is replicated (and fsynced when required), or with the
    /// error the group request answers.
    pub async fn wait(self) -> Result<(), ErrorCode> {
        self.replicated().await?;
        if self.fsync {
            self.partition
                .wait_durable(self.last_offset)
                .await
                .map_err(|_| ErrorCode::NotCoordinator)?;
        }
        Ok(())
    }

    fn store_error(&self, e: &PartitionError) -> ErrorCode {
        let code =
            crate::handlers::partition_error_code(e, &self.partition.topic, self.partition.index);
        tracing::warn!(
            partition = self.partition.index,
            offset = self.last_offset,
            "group write not replicated: {e}"
        );
        store_error(code)
    }
}

/// Kafka's GroupMetadataManager mapping of a failed `__consumer_offsets` append (or its
/// replication) to the error a group request answers: a leadership change sends the
/// client to look the coordinator up again, a shortfall of replicas or a timeout makes
/// it retry.
pub(super) fn store_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::MessageTooLarge
        | ErrorCode::RecordListTooLarge
        | ErrorCode::InvalidFetchSize => ErrorCode::UnknownServerError,
        ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
        // NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND, REQUEST_TIMED_OUT, ...
        _ => ErrorCode::CoordinatorNotAvailable,
    }
}
