//! Helpers shared by the consumer group tests: a topic table and request builders.

use std::collections::BTreeMap;

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::assignment::Assignment;
use super::topics::{TopicInfo, TopicResolver};

/// An in-memory metadata image.
#[derive(Debug, Clone, Default)]
pub struct Topics(pub BTreeMap<String, TopicInfo>, u128);

impl Topics {
    pub fn new(list: &[(&str, i32)]) -> Self {
        let mut t = Self::default();
        for (name, partitions) in list {
            t.create(name, *partitions);
        }
        t
    }

    /// Creates (or recreates, with a new id) a topic.
    pub fn create(&mut self, name: &str, partitions: i32) {
        self.1 += 1;
        let id = Uuid::from_u128(self.1);
        self.0.insert(
            name.to_string(),
            TopicInfo {
                name: name.to_string(),
                id,
                partitions,
            },
        );
    }

    pub fn set_partitions(&mut self, name: &str, partitions: i32) {
        if let Some(t) = self.0.get_mut(name) {
            t.partitions = partitions;
        }
    }

    pub fn delete(&mut self, name: &str) {
        self.0.remove(name);
    }

    pub fn id(&self, name: &str) -> Uuid {
        self.0[name].id
    }
}

impl TopicResolver for Topics {
    fn by_name(&self, name: &str) -> Option<TopicInfo> {
        self.0.get(name).cloned()
    }
    fn by_id(&self, id: Uuid) -> Option<TopicInfo> {
        self.0.values().find(|t| t.id == id).cloned()
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A full joining heartbeat (epoch 0).
pub fn join(member_id: &str, topics: &[&str]) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(s("g").into())
        .with_member_id(s(member_id))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(topics.iter().map(|t| TopicName(s(t))).collect()))
        .with_topic_partitions(Some(vec![]))
}

/// A heartbeat that leaves every optional field null except the owned partitions.
pub fn beat(
    member_id: &str,
    epoch: i32,
    owned: Option<&Assignment>,
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(s("g").into())
        .with_member_id(s(member_id))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
        .with_topic_partitions(owned.map(owned_list))
}

pub fn owned_list(a: &Assignment) -> Vec<TopicPartitions> {
    a.iter()
        .map(|(t, ps)| {
            TopicPartitions::default()
                .with_topic_id(*t)
                .with_partitions(ps.iter().copied().collect())
        })
        .collect()
}

/// The assignment carried by a heartbeat response.
pub fn response_assignment(
    resp: &kafka_protocol::messages::ConsumerGroupHeartbeatResponse,
) -> Option<Assignment> {
    resp.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .filter(|tp| !tp.partitions.is_empty())
            .map(|tp| (tp.topic_id, tp.partitions.iter().copied().collect()))
            .collect()
    })
}
