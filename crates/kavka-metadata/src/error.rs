//! Errors the controller returns, each mapped to the Kafka error code a client expects.

use kavka_protocol::error::ErrorCode;

/// Why a controller operation was refused. The message is what Kafka would put in the
/// response's `error_message`; [`ControllerError::code`] is the wire error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
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
    /// This node is not the active controller and could not reach it; the client retries
    /// (NOT_CONTROLLER).
    #[error("{0}")]
    NotController(String),
    /// AlterPartition from a leader whose leader epoch is stale (FENCED_LEADER_EPOCH).
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// AlterPartition based on a partition epoch that is no longer current
    /// (INVALID_UPDATE_VERSION): the leader waits for the newer state and retries.
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// A proposed ISR member is fenced or not a replica (INELIGIBLE_REPLICA).
    #[error("{0}")]
    IneligibleReplica(String),
    /// The sender does not lead the partition (NOT_LEADER_OR_FOLLOWER).
    #[error("{0}")]
    NotLeaderOrFollower(String),
    /// No in-sync replica is available to lead (ELECTION_NOT_NEEDED / PREFERRED_LEADER_NOT_AVAILABLE).
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    #[error("{0}")]
    ElectionNotNeeded(String),
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
            Self::NotController(_) => ErrorCode::NotController,
            Self::FencedLeaderEpoch(_) => ErrorCode::FencedLeaderEpoch,
            Self::InvalidUpdateVersion(_) => ErrorCode::InvalidUpdateVersion,
            Self::IneligibleReplica(_) => ErrorCode::IneligibleReplica,
            Self::NotLeaderOrFollower(_) => ErrorCode::NotLeaderOrFollower,
            Self::PreferredLeaderNotAvailable(_) => ErrorCode::PreferredLeaderNotAvailable,
            Self::ElectionNotNeeded(_) => ErrorCode::ElectionNotNeeded,
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
