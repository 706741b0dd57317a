//! One member of a KIP-848 consumer group as the coordinator sees it: what it asked for
//! (subscription, assignor, timeouts) and where it stands in its reconciliation.

use std::collections::BTreeSet;

use super::assignment::Assignment;
use super::assignor::ServerAssignor;

/// Where a member is on its way to the target assignment (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// The member owns exactly its assigned partitions, at its epoch.
    Stable,
    /// The member must first give up `pending_revocation`; its epoch stays where it was.
    UnrevokedPartitions,
    /// The member is at the target epoch but some target partitions are still held by others.
    UnreleasedPartitions,
}

impl MemberState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stable => "STABLE",
            Self::UnrevokedPartitions => "UNREVOKED_PARTITIONS",
            Self::UnreleasedPartitions => "UNRELEASED_PARTITIONS",
        }
    }
}

/// A member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMember {
    pub member_id: String,
    /// Static membership (KIP-345): survives restarts of the client under new member ids.
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// How long the member may take to revoke partitions before it is removed.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: BTreeSet<String>,
    /// A regular expression (RE2 syntax, whole-name match) adding the topics it matches.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<ServerAssignor>,
    pub state: MemberState,
    /// 0 before the first reconciliation; -2 while a static member is temporarily away.
    pub member_epoch: i32,
    /// The epoch before the last change of `member_epoch`: a heartbeat carrying it is still
    /// accepted (the response that moved the member on may have been lost).
    pub previous_member_epoch: i32,
    /// Partitions the member may own now, reported in heartbeat responses.
    pub assigned: Assignment,
    /// Partitions the member was told to give up and has not yet reported as released.
    pub pending_revocation: Assignment,
    /// The member is removed when no heartbeat arrived by then.
    pub session_deadline_ms: i64,
    /// Set while the member is revoking: it is removed if still revoking by then.
    pub revocation_deadline_ms: Option<i64>,
}

impl ConsumerGroupMember {
    /// A member that has just sent its first heartbeat, before any field is applied.
    pub fn new(member_id: String) -> Self {
        Self {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_topic_names: BTreeSet::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            state: MemberState::Stable,
            member_epoch: 0,
            previous_member_epoch: 0,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
        }
    }

    /// Whether the two differ only in their deadlines, which a snapshot does not keep (they
    /// restart when the group is loaded).
    pub fn same_durable_state(&self, other: &Self) -> bool {
        let undated = |m: &Self| Self {
            session_deadline_ms: 0,
            revocation_deadline_ms: None,
            ..m.clone()
        };
        undated(self) == undated(other)
    }

    /// Whether the member has fully reached the target assignment of `epoch`.
    pub fn is_reconciled_to(&self, epoch: i32) -> bool {
        self.member_epoch == epoch && self.state == MemberState::Stable
    }
}
