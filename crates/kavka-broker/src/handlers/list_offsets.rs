//! ListOffsets: the offsets at the log start, the high watermark (the last stable offset for
//! read_committed consumers), or a timestamp, answered by the partition leader.

use crate::broker::Broker;
use crate::partition::{LeaderEpochError, PartitionError};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kavka_protocol::error::ErrorCode;

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// The replica id of Kafka's debugging tools: may read from any replica.
const DEBUGGING_REPLICA_ID: i32 = -2;
/// The replica id of consumers: the only requester the isolation level applies to.
const CONSUMER_REPLICA_ID: i32 = -1;

pub fn handle(b: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = b.controller.image();
    let replica_id = req.replica_id.0;
    // isolation_level exists from v2 on; older requests read uncommitted.
    let read_committed = version >= 2 && req.isolation_level == 1;
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let resp = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let refuse = |code: ErrorCode| {
                        resp.clone()
                            .with_error_code(code.code())
                            .with_timestamp(-1)
                            .with_offset(-1)
                    };
                    let Some(part) = b.replicas.get(&t.name, p.partition_index) else {
                        return refuse(
                            match super::fetch::image_leader(&image, &t.name, p.partition_index) {
                                Some(_) => ErrorCode::NotLeaderOrFollower,
                                None => ErrorCode::UnknownTopicOrPartition,
                            },
                        );
                    };
                    // Kafka checks the epoch (v4+) before the leadership.
                    let current_leader_epoch = if version >= 4 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    if let Err(e) = part.check_current_leader_epoch(current_leader_epoch) {
                        return refuse(match e {
                            LeaderEpochError::Fenced { .. } => ErrorCode::FencedLeaderEpoch,
                            LeaderEpochError::Unknown { .. } => ErrorCode::UnknownLeaderEpoch,
                            LeaderEpochError::Partition(_) => ErrorCode::NotLeaderOrFollower,
                        });
                    }
                    if replica_id != DEBUGGING_REPLICA_ID && !part.is_leader() {
                        return refuse(ErrorCode::NotLeaderOrFollower);
                    }
                    // Kafka's `fetchOffsetForTimestamp`: a consumer reads up to the last
                    // stable offset (read_committed) or the high watermark; a replica or a
                    // debugging tool up to the log end.
                    let last_fetchable = if replica_id != CONSUMER_REPLICA_ID {
                        part.log_end_offset()
                    } else if read_committed {
                        part.last_stable_offset()
                    } else {
                        part.high_watermark()
                    };
                    // A timestamp lookup answers only an offset the requester could fetch.
                    let fetchable = |o: Option<(i64, i64)>| match o {
                        Some((ts, off)) if off < last_fetchable => (ts, off),
                        _ => (-1, -1),
                    };
                    let found: Result<(i64, i64), PartitionError> = match p.timestamp {
                        LATEST => Ok((-1, last_fetchable)),
                        EARLIEST | EARLIEST_LOCAL => Ok((-1, part.log_start_offset())),
                        LATEST_TIERED => Ok((-1, -1)),
                        MAX_TIMESTAMP => part.max_timestamp_and_offset().map(fetchable),
                        ts if ts < 0 => {
                            return resp.with_error_code(ErrorCode::InvalidRequest.code())
                        }
                        ts => part
                            .offset_for_timestamp(ts)
                            .map(|o| fetchable(o.map(|(off, ts)| (ts, off)))),
                    };
                    match found {
                        // The leader epoch field exists from v4 on. The current one is safe
                        // for a consumer's later validation: its end offset is the log end.
                        Ok((ts, off)) => resp
                            .with_timestamp(ts)
                            .with_offset(off)
                            .with_leader_epoch(if version >= 4 {
                                part.leader_epoch()
                            } else {
                                -1
                            }),
                        Err(e) => resp.with_error_code(
                            super::partition_error_code(&e, &t.name, p.partition_index).code(),
                        ),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
