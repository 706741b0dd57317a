//! The controller's replication decisions (Kafka's ReplicationControlManager,
//! PartitionChangeBuilder and StripedReplicaPlacer, KIP-631).
//!
//! Every function here is pure: it reads a [`MetadataImage`] and returns the records that
//! would make the decision real. The controller commits them (through Raft in a cluster) and
//! every node applies them, so a decision is taken once, by the active controller, and never
//! re-derived from local state.
//!
//! The safety rules they keep, checked with `debug_assert!` on every partition they change:
//! the leader is in the ISR, the ISR is a subset of the replicas, the leader is a live
//! (registered, unfenced) broker, and leader and partition epochs only grow. A partition is
//! offline (leader -1) only when no ISR member is live; its ISR then keeps the last member so
//! that, with unclean election off, only a replica holding every committed record may lead it
//! again.

mod alter_partition;
mod broker_fencing;
mod leader_election;
mod partition_change;
mod reassignment;
mod replica_placement;
#[cfg(test)]
mod test_support;

pub use alter_partition::{alter_partition, AlterPartitionRequest};
pub use broker_fencing::{fence_broker, unfence_broker};
pub use leader_election::{elect_leaders, ElectionType};
pub use reassignment::{
    alter_partition_reassignments, complete_reassignment, complete_reassignments,
    list_partition_reassignments, OngoingReassignment, ReassignmentError, ReassignmentRequest,
};
pub use replica_placement::place_replicas;

use uuid::Uuid;

use crate::image::{PartitionImage, TopicImage};
use crate::record::MetadataRecord;

/// The leader id of a partition that has none (offline).
pub const NO_LEADER: i32 = -1;

/// The topic config that lets an out-of-sync replica lead when no in-sync one is live.
pub const UNCLEAN_LEADER_ELECTION_CONFIG: &str = "unclean.leader.election.enable";

/// Whether `topic` allows unclean leader election: its own `unclean.leader.election.enable`
/// when set (Kafka parses booleans case-insensitively), else the broker-wide `default`.
pub fn unclean_election_enabled(topic: &TopicImage, default: bool) -> bool {
    match topic.configs.get(UNCLEAN_LEADER_ELECTION_CONFIG) {
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        _ => default,
    }
}

/// Logs an unclean election: the operator must know that records may have been lost.
pub(crate) fn warn_if_unclean(topic: &str, change: &partition_change::Change) {
    if change.unclean {
        tracing::warn!(
            topic,
            partition = change.next.partition,
            leader = change.next.leader,
            leader_epoch = change.next.leader_epoch,
            "unclean leader election: a replica outside the ISR leads; records it lacks are lost"
        );
    }
}

/// The record that stores `p` as the new state of partition `p.partition` of `topic_id`.
pub(crate) fn partition_record(topic_id: Uuid, p: &PartitionImage) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition: p.partition,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
    }
}
