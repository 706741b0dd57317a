//! The metadata log replicated by a Raft quorum (KRaft's role, built on openraft).
//!
//! Each Raft entry carries one [`MetadataBatch`]: the records the controller would have appended
//! to the local [`crate::FileMetadataLog`] in one call. Committed batches are applied in log order
//! to a [`crate::MetadataImage`], so metadata offsets number records exactly as the single-node
//! log does (Raft's own blank and membership entries take no offset).
//!
//! - [`log_store`]: the Raft log and vote on disk (framed, checksummed, fsynced).
//! - [`state_machine`]: committed batches → image; snapshots are the image's records.
//! - [`network`]: the object-safe [`MetadataTransport`] and an in-process transport for tests.
//! - [`tcp`]: [`TcpTransport`] and its server, the transport between processes.
//! - [`node`]: [`RaftMetadataLog`], the handle the controller will propose through.
//!
//! Not yet wired into the broker: see DESIGN.md (issue 4).

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod tcp;

use serde::{Deserialize, Serialize};

use crate::record::MetadataRecord;

pub use log_store::RaftLogStore;
pub use network::{InProcessNetwork, MetadataTransport};
pub use node::{RaftMetadataError, RaftMetadataLog, RaftMetadataOptions};
pub use state_machine::MetadataStateMachine;
pub use tcp::TcpTransport;

/// A Raft node id; the broker will use its `node.id` (non-negative `i32`).
pub type RaftNodeId = u64;

/// One proposal: records committed atomically, as one Raft entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

/// The outcome of applying one entry: the metadata offset of the last record applied so far
/// (-1 before any record), which is the batch's last offset for a non-empty batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataCommit {
    pub offset: i64,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata quorum.
    pub MetadataRaftConfig:
        D = MetadataBatch,
        R = MetadataCommit,
        NodeId = RaftNodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<MetadataRaftConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft's `Raft` handle for the metadata quorum.
pub type MetadataRaft = openraft::Raft<MetadataRaftConfig>;
