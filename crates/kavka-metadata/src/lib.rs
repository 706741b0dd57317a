//! kavka-metadata: the single source of truth for cluster state (DESIGN.md principle 3).
//!
//! Every change of brokers, topics, partitions and configs is a [`MetadataRecord`] appended to
//! the metadata log by the [`Controller`] (the only writer) and applied to an immutable
//! [`MetadataImage`] that readers share through an `Arc`. A single node keeps the log in a local
//! file ([`FileMetadataLog`]); a cluster will replicate the same records through Raft behind the
//! same [`MetadataLog`] trait.

pub mod controller;
pub mod error;
mod frame;
pub mod image;
pub mod log;
pub mod raft;
pub mod record;
pub mod replication_control;
pub mod topic_config;
mod topic_name;
mod uuid_string;

pub use controller::{
    ConfigChange, ConfigOp, Controller, ControllerOp, ControllerOptions, ControllerReply,
    CreateTopicSpec, ImageListener, ObserverOptions, QuorumOptions, TopicDefaults, TopicRef,
    MAX_PARTITIONS_PER_BATCH,
};
pub use error::ControllerError;
pub use image::{BrokerInfo, MetadataImage, PartitionImage, TopicImage};
pub use log::{FileMetadataLog, LogError, MetadataLog};
pub use record::{ConfigResource, MetadataRecord, CLUSTER_DEFAULT_BROKER};
pub use replication_control::{AlterPartitionRequest, ElectionType};
pub use topic_config::{
    describe_topic_configs, validate_topic_config, ConfigEntry, ConfigSource, ConfigType,
};
pub use topic_name::validate as validate_topic_name;
pub use uuid_string::uuid_to_kafka_string;
