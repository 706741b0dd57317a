//! kavka-client: a small async Kafka client used by the `kavka` CLI tools and tests.
//!
//! It speaks the Kafka protocol to any Kafka-compatible broker (kavka or Apache Kafka):
//! every connection starts with ApiVersions and each request then uses the highest version
//! both sides support. Message structs come from `kafka_protocol::messages`.
//!
//! - [`Connection`]: one TCP connection, framing and correlation ids.
//! - [`Cluster`]: bootstrap, metadata cache, per-broker connections, leader lookup.
//! - [`Admin`]: topics and configs; consumer groups and their offsets (`group_admin`).
//! - [`Producer`]: batches records per partition and sends them to the leaders.
//! - [`Consumer`]: assigned partitions, offset resolution and the fetch loop.
//! - [`GroupConsumer`]: a member of a classic consumer group (join, heartbeat, commit).
//! - `transactions_admin`: ListTransactions, DescribeTransactions, DescribeProducers on [`Admin`].

pub mod admin;
pub mod alter_configs;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod consumer_protocol;
pub mod coordinator;
pub mod describe_cluster;
pub mod error;
#[cfg(test)]
mod fake_coordinator;
pub mod group_admin;
pub mod group_consumer;
pub mod partitioner;
pub mod producer;
pub mod reassignment;
pub mod topic_id;
pub mod transactions_admin;

pub use admin::{Admin, AlterConfigOp, ConfigEntry, NewTopic, TopicDescription};
pub use cluster::{BrokerMetadata, ClientConfig, Cluster, PartitionMetadata, TopicMetadata};
pub use connection::Connection;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetSpec};
pub use error::ClientError;
pub use group_admin::{
    GroupDescription, GroupListing, MemberDescription, OffsetAndMetadata, TopicPartition,
};
pub use group_consumer::{GroupConfig, GroupConsumer};
pub use kafka_protocol::records::Compression;
pub use producer::{Acks, ProduceAck, Producer, ProducerConfig, ProducerRecord};
pub use transactions_admin::{
    ListTransactionsFilter, ProducerStateDescription, TransactionDescription, TransactionListing,
};

/// Result type of every client operation.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
