//! The records of the metadata log. Each is one change of cluster state; applying them in
//! log order to an empty [`crate::MetadataImage`] rebuilds the cluster state exactly.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The broker resource name Kafka spells `""`: the cluster-wide default broker configs.
pub const CLUSTER_DEFAULT_BROKER: i32 = -1;

/// The owner of a dynamic config.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigResource {
    /// A topic, by name (a topic's configs are removed with it).
    Topic(String),
    /// A broker by node id, or [`CLUSTER_DEFAULT_BROKER`] for the cluster-wide default.
    Broker(i32),
}

/// One change of cluster state, as stored in the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// The cluster id, written once when the cluster is formatted.
    ClusterId { cluster_id: String },
    /// A broker (re-)registered its endpoint; `incarnation` changes on each registration.
    RegisterBroker {
        node_id: i32,
        host: String,
        port: u16,
        rack: Option<String>,
        incarnation: Uuid,
    },
    /// A topic was created. Its partitions and configs follow in the same batch.
    Topic { name: String, topic_id: Uuid },
    /// The full state of one partition (created or changed).
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    /// A dynamic config was set (`Some`) or deleted (`None`).
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// A topic and everything under it (partitions, configs) was deleted.
    RemoveTopic { topic_id: Uuid },
    /// A block of producer ids was handed to `broker_id`, ending (exclusive) at
    /// `next_producer_id` (Kafka's `ProducerIdsRecord`). Ids below it are never handed out
    /// again, so an idempotent producer's id stays unique across restarts.
    ProducerIds {
        broker_id: i32,
        next_producer_id: i64,
    },
    /// The controller fenced a broker whose heartbeats stopped for broker.session.timeout.ms
    /// (KIP-631's FenceBrokerRecord): it leads nothing and joins no ISR until unfenced.
    FenceBroker { node_id: i32 },
    /// A fenced broker heartbeated again and may lead and join ISRs (UnfenceBrokerRecord).
    UnfenceBroker { node_id: i32 },
    /// A reassignment of a partition's replicas to `target` started or changed (`Some`), or
    /// ended (`None`: completed or cancelled) (KIP-455; Kafka keeps this in PartitionRecord's
    /// adding/removing replicas). The replicas before the first `Some` are what a
    /// cancellation returns to, so the Partition record that widens the replica set follows
    /// this record, never precedes it.
    PartitionReassignment {
        topic_id: Uuid,
        partition: i32,
        target: Option<Vec<i32>>,
    },
}
