//! Next-generation consumer groups (KIP-848): the broker assigns partitions and members
//! reconcile towards the target assignment one heartbeat at a time.
//!
//! `ConsumerGroup` is the whole state machine of one group, driven by the coordinator:
//! `heartbeat` for each ConsumerGroupHeartbeat, `expire` when `next_deadline` passes,
//! `on_metadata_change` when topics change, `describe` for ConsumerGroupDescribe, and
//! `validate_offset_commit` / `validate_offset_fetch` for offset requests of its members.
//! Topics are seen through `TopicResolver`. No I/O, no clock. Subscriptions by name and by
//! regular expression (`topic_regex`, an RE2 subset); server assignors `uniform` (default)
//! and `range`. `take_dirty` says when the group changed and `to_snapshot` / `from_snapshot`
//! (`snapshot`) turn it into the value the coordinator keeps in `__consumer_offsets`, so
//! members keep their ids, epochs and partitions across a coordinator restart.

mod assignment;
pub mod assignor;
mod error;
mod group;
#[cfg(test)]
mod group_tests;
mod member;
mod reconcile;
#[cfg(test)]
mod simulation;
mod snapshot;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod test_support;
mod topic_regex;
mod topics;

pub use assignment::Assignment;
pub use assignor::ServerAssignor;
pub use error::ConsumerGroupError;
pub use group::{
    ConsumerGroup, ConsumerGroupConfig, ConsumerGroupState, LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};
pub use member::{ConsumerGroupMember, MemberState};
pub use snapshot::{SnapshotError, SNAPSHOT_VERSION};
pub use topics::{TopicInfo, TopicResolver};
