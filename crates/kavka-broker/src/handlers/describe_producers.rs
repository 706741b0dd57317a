//! DescribeProducers (v0): the producer state a replica keeps for each asked partition (Kafka's
//! `Partition.activeProducerState`): producer id and epoch, last sequence and timestamp, the
//! epoch of the coordinator that wrote its last marker, and where its open transaction
//! started (-1 when none). Like Kafka, any replica hosting the partition answers (the admin
//! client asks the leader unless told a broker); one not hosted here is
//! NOT_LEADER_OR_FOLLOWER when the cluster has it, UNKNOWN_TOPIC_OR_PARTITION otherwise.

use crate::broker::Broker;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use kavka_protocol::error::ErrorCode;

pub fn handle(
    b: &Broker,
    req: DescribeProducersRequest,
    _version: i16,
) -> DescribeProducersResponse {
    let image = b.controller.image();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let resp = PartitionResponse::default().with_partition_index(index);
                    let Some(part) = b.replicas.get(&t.name, index) else {
                        let known = image
                            .topic(&t.name)
                            .is_some_and(|ti| ti.partitions.contains_key(&index));
                        let code = if known {
                            ErrorCode::NotLeaderOrFollower
                        } else {
                            ErrorCode::UnknownTopicOrPartition
                        };
                        return resp.with_error_code(code.code());
                    };
                    match part.active_producers() {
                        Ok(producers) => resp.with_active_producers(
                            producers
                                .into_iter()
                                .map(|(id, e)| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(id))
                                        .with_producer_epoch(i32::from(e.epoch))
                                        .with_last_sequence(e.last_sequence())
                                        .with_last_timestamp(e.last_timestamp)
                                        .with_coordinator_epoch(e.coordinator_epoch)
                                        .with_current_txn_start_offset(
                                            e.current_txn_first_offset.unwrap_or(-1),
                                        )
                                })
                                .collect(),
                        ),
                        Err(e) => resp.with_error_code(
                            super::partition_error_code(&e, &t.name, index).code(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
