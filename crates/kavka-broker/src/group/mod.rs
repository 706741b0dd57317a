//! The group coordinator: consumer groups, their members and committed offsets, kept as
//! records in the compacted internal topic `__consumer_offsets` and rebuilt from it at start.
//!
//! - `classic`: the JoinGroup/SyncGroup state machine (pure, time passed in).
//! - `consumer`: the next-generation (KIP-848) consumer group and its server-side assignors.
//! - `offsets`: a group's committed offsets (and, per producer, its pending transactional
//!   ones until the transaction's marker); `record`: the `__consumer_offsets` record layouts.
//! - `coordinator`: ties them to the log, sharded by `__consumer_offsets` partition; its
//!   `leadership` part moves shards with the partitions' leadership in a cluster.
//! - `append_wait`: what a group write waits for before it is acknowledged.

pub mod append_wait;
pub mod classic;
pub mod config;
pub mod consumer;
pub mod coordinator;
pub mod offsets;
pub mod record;

pub use config::GroupConfig;
pub use coordinator::{CoordinatorNode, GroupCoordinator, LeadershipListener, OFFSETS_TOPIC};
