//! Errors the controller returns, each mapped to the Kafka error code a client expects.

use kavka_protocol::error::ErrorCode;

/// Why a controller operation was refused. The message is what Kafka would put in the
/// response's `error_message`; [`ControllerError::code`] is the wire error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    TopicAlreadyExists(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("{0}")]
    UnknownTopicId(String),
    #[error("{0}")]
    PolicyViolation(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InconsistentClusterId(String),
    /// The metadata log could not be read or written; nothing was committed.
    #[error("metadata log error: {0}")]
    Storage(String),
}

impl ControllerError {
    /// The Kafka error code for this error.
    pub fn code(&self) -> i16 {
        let code = match self {
            Self::TopicAlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            Self::InvalidTopic(_) => ErrorCode::InvalidTopicException,
            Self::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            Self::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            Self::InvalidReplicaAssignment(_) => ErrorCode::InvalidReplicaAssignment,
            Self::InvalidConfig(_) => ErrorCode::InvalidConfig,
            Self::UnknownTopicOrPartition(_) => ErrorCode::UnknownTopicOrPartition,
            Self::UnknownTopicId(_) => ErrorCode::UnknownTopicId,
            Self::PolicyViolation(_) => ErrorCode::PolicyViolation,
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::InconsistentClusterId(_) => ErrorCode::InconsistentClusterId,
            Self::Storage(_) => ErrorCode::UnknownServerError,
        };
        code.code()
    }

    /// The human-readable message for the response's `error_message` field.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<crate::log::LogError> for ControllerError {
    fn from(e: crate::log::LogError) -> Self {
        Self::Storage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_kafka() {
        let s = String::new;
        assert_eq!(ControllerError::TopicAlreadyExists(s()).code(), 36);
        assert_eq!(ControllerError::InvalidTopic(s()).code(), 17);
        assert_eq!(ControllerError::InvalidPartitions(s()).code(), 37);
        assert_eq!(ControllerError::InvalidReplicationFactor(s()).code(), 38);
        assert_eq!(ControllerError::InvalidReplicaAssignment(s()).code(), 39);
        assert_eq!(ControllerError::InvalidConfig(s()).code(), 40);
        assert_eq!(ControllerError::UnknownTopicOrPartition(s()).code(), 3);
        assert_eq!(ControllerError::UnknownTopicId(s()).code(), 100);
        assert_eq!(ControllerError::PolicyViolation(s()).code(), 44);
        assert_eq!(ControllerError::InvalidRequest(s()).code(), 42);
        assert_eq!(ControllerError::InconsistentClusterId(s()).code(), 104);
        assert_eq!(ControllerError::Storage(s()).code(), -1);
    }
}
