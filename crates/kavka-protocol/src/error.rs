//! Kafka error codes. The enum itself comes from `kafka-protocol`; this module names it in
//! kavka's vocabulary so handlers write `ErrorCode::UnknownTopicOrPartition.code()`.

pub use kafka_protocol::error::ResponseError as ErrorCode;

/// The "no error" code.
pub const NONE: i16 = 0;
