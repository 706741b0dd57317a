//! The client's error type: every failure carries enough to print one clear line, and
//! broker-side failures keep their Kafka error code.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use thiserror::Error;

/// Kafka error codes the client reacts to by name.
pub mod codes {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

#[derive(Debug, Error)]
pub enum ClientError {
    /// No TCP connection could be made (or the ApiVersions handshake failed at the socket).
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    /// The connection broke while a request was in flight.
    #[error("connection to {addr} failed: {error}")]
    Io { addr: String, error: std::io::Error },
    /// The broker answered with a Kafka error code.
    #[error("{message} ({name})")]
    Kafka {
        code: i16,
        name: String,
        message: String,
    },
    /// The broker does not implement any version of an API this client can speak.
    #[error("broker {addr} does not support {api:?} in a version this client speaks ({ours}; broker offers {theirs})")]
    UnsupportedVersion {
        addr: String,
        api: ApiKey,
        ours: String,
        theirs: String,
    },
    /// The broker's bytes did not make sense.
    #[error("malformed response from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("request to {addr} timed out after {ms} ms")]
    Timeout { addr: String, ms: u128 },
    /// The caller asked for something impossible (bad partition, bad config...).
    #[error("{0}")]
    InvalidArgument(String),
    /// Produced records that could not be written; `first` is the first failure.
    #[error("{records} record(s) were not delivered: {first}")]
    NotDelivered {
        records: usize,
        first: Box<ClientError>,
    },
    /// Retries ran out; the last error says why.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// A broker error about `subject` (e.g. "topic 'x'", "partition x-0"). `server_message`
    /// is the broker's own text, used where it carries detail our wording would lose.
    pub fn kafka(code: i16, subject: &str, server_message: Option<&str>) -> Self {
        let server_message = server_message.map(str::trim).filter(|m| !m.is_empty());
        let message = match code {
            codes::TOPIC_ALREADY_EXISTS => format!("{subject} already exists"),
            codes::UNKNOWN_TOPIC_OR_PARTITION | codes::UNKNOWN_TOPIC_ID => {
                format!("{subject} does not exist")
            }
            codes::OFFSET_OUT_OF_RANGE => format!("{subject}: offset is out of range"),
            _ => match server_message {
                Some(m) => format!("{subject}: {m}"),
                None => format!("{subject}: request failed"),
            },
        };
        ClientError::Kafka {
            code,
            name: error_name(code),
            message,
        }
    }

    /// The Kafka error code, when the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            ClientError::Kafka { code, .. } => Some(*code),
            ClientError::RetriesExhausted { last, .. } => last.code(),
            ClientError::NotDelivered { first, .. } => first.code(),
            _ => None,
        }
    }

    /// Whether trying again (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Kafka { code, .. } => is_retriable_code(*code),
            // A timeout already waited a full request timeout; retrying would multiply it.
            ClientError::Connect { .. } | ClientError::Io { .. } => true,
            _ => false,
        }
    }

    /// Whether the error means our metadata (leaders, topic list) is stale.
    pub fn is_stale_metadata(&self) -> bool {
        self.code().is_some_and(is_stale_metadata_code)
    }

    pub(crate) fn protocol(addr: &str, reason: impl std::fmt::Display) -> Self {
        ClientError::Protocol {
            addr: addr.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Codes after which a metadata refresh is needed before retrying.
pub fn is_stale_metadata_code(code: i16) -> bool {
    matches!(
        code,
        codes::UNKNOWN_TOPIC_OR_PARTITION
            | codes::LEADER_NOT_AVAILABLE
            | codes::NOT_LEADER_OR_FOLLOWER
            | codes::NOT_CONTROLLER
            | codes::FENCED_LEADER_EPOCH
            | codes::UNKNOWN_LEADER_EPOCH
            | codes::UNKNOWN_TOPIC_ID
    )
}

pub fn is_retriable_code(code: i16) -> bool {
    is_stale_metadata_code(code)
        || ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

/// Kafka's name for an error code, e.g. `TOPIC_ALREADY_EXISTS`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => screaming_snake(&e.to_string()),
    }
}

/// `TopicAlreadyExists` -> `TOPIC_ALREADY_EXISTS`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Turns a response error code into `Ok(())` or a [`ClientError::Kafka`].
pub fn check(code: i16, subject: &str, server_message: Option<&str>) -> Result<(), ClientError> {
    if code == codes::NONE {
        Ok(())
    } else {
        Err(ClientError::kafka(code, subject, server_message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(9999), "UNKNOWN_ERROR_CODE_9999");
    }

    #[test]
    fn messages_are_one_clear_line() {
        let e = ClientError::kafka(36, "topic 'x'", Some("Topic 'x' already exists."));
        assert_eq!(
            e.to_string(),
            "topic 'x' already exists (TOPIC_ALREADY_EXISTS)"
        );
        let e = ClientError::kafka(
            37,
            "topic 'x'",
            Some("Number of partitions must be larger than 0."),
        );
        assert_eq!(
            e.to_string(),
            "topic 'x': Number of partitions must be larger than 0. (INVALID_PARTITIONS)"
        );
        assert_eq!(e.code(), Some(37));
        assert!(!e.is_retriable());
        assert!(ClientError::kafka(6, "partition x-0", None).is_stale_metadata());
    }
}
