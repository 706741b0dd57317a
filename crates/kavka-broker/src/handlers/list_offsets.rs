use crate::broker::Broker;
use crate::partition::PartitionError;
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

pub fn handle(b: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
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
                    let Some(part) = b.replicas.get(&t.name, p.partition_index) else {
                        return resp
                            .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                            .with_timestamp(-1)
                            .with_offset(-1);
                    };
                    // Without transactions the last stable offset equals the high watermark.
                    let found: Result<(i64, i64), PartitionError> = match p.timestamp {
                        LATEST => Ok((-1, part.high_watermark())),
                        EARLIEST | EARLIEST_LOCAL => Ok((-1, part.log_start_offset())),
                        LATEST_TIERED => Ok((-1, -1)),
                        MAX_TIMESTAMP => part.max_timestamp_and_offset().map(|o| match o {
                            Some((ts, off)) => (ts, off),
                            None => (-1, -1),
                        }),
                        ts if ts < 0 => {
                            return resp.with_error_code(ErrorCode::InvalidRequest.code())
                        }
                        ts => part.offset_for_timestamp(ts).map(|o| match o {
                            Some((off, ts)) => (ts, off),
                            None => (-1, -1),
                        }),
                    };
                    match found {
                        // The leader epoch field exists from v4 on.
                        Ok((ts, off)) => resp
                            .with_timestamp(ts)
                            .with_offset(off)
                            .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
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
