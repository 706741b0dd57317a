//! OffsetDelete: drops committed offsets of topics the group no longer consumes, answered
//! once the tombstones are replicated (a failed replication is a group-level error).

use crate::broker::Broker;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};

pub fn handle(b: &Broker, req: OffsetDeleteRequest, _version: i16) -> OffsetDeleteResponse {
    let topics: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let result =
        b.groups
            .delete_offsets(&req.group_id, &topics)
            .and_then(|(codes, wait)| match wait {
                Some(w) => w.replicated_blocking().map(|()| codes),
                None => Ok(codes),
            });
    match result {
        Err(e) => OffsetDeleteResponse::default().with_error_code(e.code()),
        Ok(result) => OffsetDeleteResponse::default().with_topics(
            result
                .into_iter()
                .map(|(t, parts)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(super::str_bytes(&t)))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, e)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(e.map_or(0, |e| e.code()))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}
