//! Request handlers: each takes a decoded request plus the broker context and returns the
//! response. They know nothing of sockets; errors become Kafka error codes here, at the edge.

pub mod api_versions;
pub mod configs;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod fetch;
pub mod init_producer_id;
pub mod legacy;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use kafka_protocol::protocol::StrBytes;

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}
