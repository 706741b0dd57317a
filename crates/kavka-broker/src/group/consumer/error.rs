//! Why a ConsumerGroupHeartbeat (or a KIP-848 member's offset request) was refused, in Kafka's
//! error codes. Each variant carries the message sent back in the response's `error_message`.

use kavka_protocol::error::ErrorCode;

/// A refused request. `code()` is the Kafka error code, `Display` the response's error message.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ConsumerGroupError {
    /// A field is missing, empty, out of range or inconsistent with the member epoch.
    #[error("{0}")]
    InvalidRequest(String),
    /// The member id (or static instance id) is not known to the group.
    #[error("{0}")]
    UnknownMemberId(String),
    /// The heartbeat's epoch is neither the member's current one nor an acceptable previous one:
    /// the member must drop its partitions and rejoin with epoch 0.
    #[error("{0}")]
    FencedMemberEpoch(String),
    /// An offset commit or fetch carried an epoch other than the member's current one.
    #[error("{0}")]
    StaleMemberEpoch(String),
    /// The requested server-side assignor is not configured.
    #[error("{0}")]
    UnsupportedAssignor(String),
    /// The group already has `group.consumer.max.size` members.
    #[error("{0}")]
    GroupMaxSizeReached(String),
    /// A static member's instance id is still held by a member that has not left with epoch -2.
    #[error("{0}")]
    UnreleasedInstanceId(String),
    /// The instance id belongs to another member id.
    #[error("{0}")]
    FencedInstanceId(String),
    /// The subscribed topic regular expression cannot be compiled.
    #[error("{0}")]
    InvalidRegularExpression(String),
}

impl ConsumerGroupError {
    /// The Kafka error code for the response's `error_code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Self::UnknownMemberId(_) => ErrorCode::UnknownMemberId,
            Self::FencedMemberEpoch(_) => ErrorCode::FencedMemberEpoch,
            Self::StaleMemberEpoch(_) => ErrorCode::StaleMemberEpoch,
            Self::UnsupportedAssignor(_) => ErrorCode::UnsupportedAssignor,
            Self::GroupMaxSizeReached(_) => ErrorCode::GroupMaxSizeReached,
            Self::UnreleasedInstanceId(_) => ErrorCode::UnreleasedInstanceId,
            Self::FencedInstanceId(_) => ErrorCode::FencedInstanceId,
            Self::InvalidRegularExpression(_) => ErrorCode::InvalidRegularExpression,
        }
    }

    /// The text for the response's `error_message`.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kafkas() {
        let cases = [
            (ConsumerGroupError::InvalidRequest(String::new()), 42),
            (ConsumerGroupError::UnknownMemberId(String::new()), 25),
            (ConsumerGroupError::FencedMemberEpoch(String::new()), 110),
            (ConsumerGroupError::UnreleasedInstanceId(String::new()), 111),
            (ConsumerGroupError::UnsupportedAssignor(String::new()), 112),
            (ConsumerGroupError::StaleMemberEpoch(String::new()), 113),
            (ConsumerGroupError::GroupMaxSizeReached(String::new()), 81),
            (ConsumerGroupError::FencedInstanceId(String::new()), 82),
            (
                ConsumerGroupError::InvalidRegularExpression(String::new()),
                128,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code().code(), code, "{error:?}");
        }
        assert_eq!(
            ConsumerGroupError::InvalidRequest("why".into()).message(),
            "why"
        );
    }
}
