//! kavka's view of the Kafka wire protocol.
//!
//! Message codecs come from the `kafka-protocol` crate (generated from Apache Kafka's JSON
//! specs). This crate owns what that crate does not: framing, request-header parsing with
//! bounds, the table of API versions kavka advertises, the zero-copy `RecordBatch` view,
//! and the legacy (magic 0/1, pre-v3 Produce/Fetch) formats the generated codecs dropped.

pub mod api_versions;
pub mod compression;
pub mod error;
pub mod frame;
pub mod legacy_api;
pub mod legacy_message_set;
pub mod record_batch;
pub mod records;

pub use kafka_protocol;
