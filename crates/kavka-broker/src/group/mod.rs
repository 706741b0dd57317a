//! The group coordinator: consumer groups, their members and committed offsets, kept as
//! records in the compacted internal topic `__consumer_offsets` and rebuilt from it at start.
//!
//! `consumer` holds the next-generation (KIP-848) consumer group state machine and its
//! server-side assignors.

pub mod consumer;
