//! ListPartitionReassignments (KIP-455): the reassignments in progress, with the current
//! replica set and the replicas being added and removed. Partitions that are unknown or not
//! being reassigned are left out, as in Kafka.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

pub fn handle(
    b: &Broker,
    req: ListPartitionReassignmentsRequest,
    _version: i16,
) -> ListPartitionReassignmentsResponse {
    let partitions: Option<Vec<(String, i32)>> = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let name = t.name.to_string();
                t.partition_indexes.iter().map(move |i| (name.clone(), *i))
            })
            .collect()
    });
    let ongoing = b
        .controller
        .list_partition_reassignments(partitions.as_deref());
    // Sorted by topic, so each topic's partitions are adjacent.
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for o in ongoing {
        let ids = |v: &[i32]| v.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
        let partition = OngoingPartitionReassignment::default()
            .with_partition_index(o.partition)
            .with_replicas(ids(&o.replicas))
            .with_adding_replicas(ids(&o.adding))
            .with_removing_replicas(ids(&o.removing));
        match topics.last_mut() {
            Some(t) if t.name.as_str() == o.topic => t.partitions.push(partition),
            _ => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(&o.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_topics(topics)
}
