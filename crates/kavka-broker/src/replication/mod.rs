//! Partition replication (issue 4), Kafka's model: followers fetch from the leader, the leader
//! tracks their positions, the in-sync replica set and the high watermark, and proposes ISR
//! changes to the controller with AlterPartition.
//!
//! - `replica_state`: the leader-side state of one partition as a pure state machine (time and
//!   the leader's log end offset passed in, no I/O), so it can be tested over many seeded
//!   schedules. Not yet wired into `partition`/`replica_manager`.

pub mod fetcher;
pub mod isr;
pub mod leader_client;
pub mod replica_state;
pub mod throttle;

pub use replica_state::{
    AcksAllStatus, AlterPartitionError, AlterPartitionProposal, AlterPartitionResponse,
    AlterPartitionResponseOutcome, FetchOutcome, FollowerState, IsrChange, LeaderAndIsr,
    LeaderState, NotEnoughReplicas, ReplicaStateError, ReplicationConfig,
};
