//! OffsetForLeaderEpoch (KIP-101, KIP-279, KIP-320): where a leader epoch ended in this
//! leader's log. A follower truncates to it after a leader change; a consumer checks that its
//! position did not fall off a truncated log.

use crate::broker::Broker;
use crate::partition::{LeaderEpochError, PartitionError};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kavka_metadata::MetadataImage;
use kavka_protocol::error::ErrorCode;

/// `replica_id` (v3+) is accepted from consumers (-1, -2) and followers alike: both are
/// answered by the leader only (a follower truncates to the leader's answer), as Kafka's
/// `fetchOnlyFromLeader`.
pub fn handle(
    b: &Broker,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let image = b.controller.image();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| end_offset(b, &image, &t.topic, p))
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn end_offset(
    b: &Broker,
    image: &MetadataImage,
    topic: &str,
    p: &OffsetForLeaderPartition,
) -> EpochEndOffset {
    let r = EpochEndOffset::default().with_partition(p.partition);
    let error = |code: ErrorCode| r.clone().with_error_code(code.code());
    let leader = image
        .topic(topic)
        .and_then(|t| t.partitions.get(&p.partition))
        .map(|pi| pi.leader);
    let Some(leader) = leader else {
        return error(ErrorCode::UnknownTopicOrPartition);
    };
    let Some(part) = b.replicas.get(topic, p.partition) else {
        return error(ErrorCode::NotLeaderOrFollower);
    };
    // Kafka checks the epoch before leadership.
    if let Err(e) = part.check_current_leader_epoch(p.current_leader_epoch) {
        return error(leader_epoch_error_code(&e, topic, p.partition));
    }
    if leader != b.node_id() || !part.is_leader() {
        return error(ErrorCode::NotLeaderOrFollower);
    }
    match part.end_offset_for_leader_epoch(p.current_leader_epoch, p.leader_epoch) {
        Ok(Some((epoch, end_offset))) => r.with_leader_epoch(epoch).with_end_offset(end_offset),
        // Kafka answers an undefined epoch with NONE and -1, -1.
        Ok(None) => r,
        Err(e) => error(leader_epoch_error_code(&e, topic, p.partition)),
    }
}

fn leader_epoch_error_code(e: &LeaderEpochError, topic: &str, partition: i32) -> ErrorCode {
    match e {
        LeaderEpochError::Fenced { .. } => ErrorCode::FencedLeaderEpoch,
        LeaderEpochError::Unknown { .. } => ErrorCode::UnknownLeaderEpoch,
        LeaderEpochError::Partition(PartitionError::NotHosted) => ErrorCode::NotLeaderOrFollower,
        LeaderEpochError::Partition(e) => super::partition_error_code(e, topic, partition),
    }
}
