//! Request handlers: each takes a decoded request plus the broker context and returns the
//! response. They know nothing of sockets; errors become Kafka error codes here, at the edge.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_partition_reassignments;
pub mod api_versions;
pub mod configs;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod legacy;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use kafka_protocol::protocol::StrBytes;

/// The authorized-operations bitfield of a group (DescribeGroups, ConsumerGroupDescribe):
/// READ, DELETE and DESCRIBE, everything, as there are no ACLs yet.
pub(crate) const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The Kafka error code for a partition-level failure. Storage failures that are not the
/// client's fault (I/O) are logged here, once, as the broker's problem.
pub(crate) fn partition_error_code(
    e: &crate::partition::PartitionError,
    topic: &str,
    partition: i32,
) -> kavka_protocol::error::ErrorCode {
    use crate::partition::PartitionError;
    use kavka_protocol::error::ErrorCode;
    use kavka_storage::{ProducerStateError, StorageError};
    match e {
        PartitionError::NotHosted | PartitionError::NotLeaderOrFollower => {
            ErrorCode::NotLeaderOrFollower
        }
        PartitionError::NotEnoughReplicas => ErrorCode::NotEnoughReplicas,
        PartitionError::NotEnoughReplicasAfterAppend => ErrorCode::NotEnoughReplicasAfterAppend,
        PartitionError::RequestTimedOut => ErrorCode::RequestTimedOut,
        PartitionError::Storage(StorageError::RecordTooLarge { .. }) => ErrorCode::MessageTooLarge,
        PartitionError::Storage(StorageError::CorruptBatch(_)) => ErrorCode::CorruptMessage,
        PartitionError::Storage(StorageError::InvalidRecord(_)) => ErrorCode::InvalidRecord,
        PartitionError::Storage(StorageError::OffsetOutOfRange { .. }) => {
            ErrorCode::OffsetOutOfRange
        }
        // Kafka 3.x answers a zombie epoch on Produce with INVALID_PRODUCER_EPOCH (KIP-588),
        // not PRODUCER_FENCED, and a gap with OUT_OF_ORDER_SEQUENCE_NUMBER.
        PartitionError::Storage(StorageError::Producer(
            ProducerStateError::InvalidProducerEpoch { .. },
        )) => ErrorCode::InvalidProducerEpoch,
        PartitionError::Storage(StorageError::Producer(
            ProducerStateError::OutOfOrderSequence { .. },
        )) => ErrorCode::OutOfOrderSequenceNumber,
        PartitionError::Storage(StorageError::Producer(ProducerStateError::InvalidTxnState {
            ..
        })) => ErrorCode::InvalidTxnState,
        PartitionError::Storage(StorageError::Producer(
            ProducerStateError::TransactionCoordinatorFenced { .. },
        )) => ErrorCode::TransactionCoordinatorFenced,
        PartitionError::Storage(other) => {
            tracing::error!(topic, partition, "storage failure: {other}");
            ErrorCode::KafkaStorageError
        }
    }
}
