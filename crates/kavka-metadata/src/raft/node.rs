//! [`RaftMetadataLog`]: one member of the metadata quorum, the handle the controller proposes
//! through and the brokers read the committed image from.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::sync::watch;

use super::log_store::{LogStoreError, RaftLogStore};
use super::network::{MetadataTransport, TransportNetwork};
use super::state_machine::MetadataStateMachine;
use super::{MetadataBatch, MetadataRaft, RaftNodeId};
use crate::image::MetadataImage;
use crate::record::MetadataRecord;

/// Timing and compaction settings of a quorum member (Kafka's `controller.quorum.*`).
#[derive(Debug, Clone)]
pub struct RaftMetadataOptions {
    /// Identifies the quorum; members of different clusters refuse each other's messages.
    pub cluster_name: String,
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept below the latest snapshot, so a slightly lagging follower is caught up
    /// from the log rather than by a full snapshot.
    pub entries_kept_after_snapshot: u64,
}

impl Default for RaftMetadataOptions {
    fn default() -> Self {
        Self {
            cluster_name: "kavka".to_owned(),
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_after_entries: 5000,
            entries_kept_after_snapshot: 1000,
        }
    }
}

/// Failures of the replicated metadata log.
#[derive(Debug, thiserror::Error)]
pub enum RaftMetadataError {
    #[error(transparent)]
    Storage(#[from] LogStoreError),
    #[error("invalid metadata quorum configuration: {0}")]
    Config(String),
    /// Only the leader accepts proposals (Kafka's NOT_CONTROLLER).
    #[error("this node is not the metadata quorum leader (leader: {leader_id:?})")]
    NotLeader { leader_id: Option<RaftNodeId> },
    #[error("the quorum refused to bootstrap: {0}")]
    Bootstrap(String),
    /// The Raft core stopped (shut down, or a storage failure it cannot survive).
    #[error("the metadata quorum member stopped: {0}")]
    Stopped(String),
}

/// One member of the metadata quorum.
pub struct RaftMetadataLog {
    node_id: RaftNodeId,
    raft: MetadataRaft,
    state_machine: MetadataStateMachine,
}

impl RaftMetadataLog {
    /// Opens the member's log store and state machine under `dir` and starts its Raft core.
    /// A member that has state on disk resumes from it; a new one waits for [`Self::bootstrap`]
    /// (on one member) or for a leader to contact it.
    pub async fn start(
        node_id: RaftNodeId,
        dir: &Path,
        options: &RaftMetadataOptions,
        transport: Arc<dyn MetadataTransport>,
    ) -> Result<RaftMetadataLog, RaftMetadataError> {
        let config = Config {
            cluster_name: options.cluster_name.clone(),
            heartbeat_interval: options.heartbeat_interval_ms,
            election_timeout_min: options.election_timeout_min_ms,
            election_timeout_max: options.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_after_entries),
            max_in_snapshot_log_to_keep: options.entries_kept_after_snapshot,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()
        .map_err(|e| RaftMetadataError::Config(e.to_string()))?;
        let log_store = RaftLogStore::open(&dir.join("log"))?;
        let state_machine = MetadataStateMachine::open(&dir.join("state"))?;
        let network = TransportNetwork {
            from: node_id,
            transport,
        };
        let raft = Raft::new(
            node_id,
            Arc::new(config),
            network,
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|e| RaftMetadataError::Stopped(e.to_string()))?;
        Ok(RaftMetadataLog {
            node_id,
            raft,
            state_machine,
        })
    }

    /// Forms a new quorum of `voters` (id → address). Call it on one member of a new cluster;
    /// on a member that already has a membership it does nothing.
    pub async fn bootstrap(
        &self,
        voters: &BTreeMap<RaftNodeId, String>,
    ) -> Result<(), RaftMetadataError> {
        let members: BTreeMap<RaftNodeId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e)) => Err(RaftMetadataError::Bootstrap(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(RaftMetadataError::Stopped(e.to_string())),
        }
    }

    /// Commits `records` as one atomic batch through the quorum and returns the metadata offset
    /// of its last record, once a majority has it and this node has applied it. Only the
    /// leader accepts proposals. An empty batch commits nothing and returns the local offset.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<i64, RaftMetadataError> {
        if records.is_empty() {
            return Ok(self.image().offset);
        }
        match self.raft.client_write(MetadataBatch { records }).await {
            Ok(response) => Ok(response.data.offset),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(RaftMetadataError::NotLeader {
                    leader_id: f.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(RaftMetadataError::Stopped(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(RaftMetadataError::Stopped(e.to_string())),
        }
    }

    /// Confirms with a majority that this member still leads and waits until it has applied
    /// everything committed before the call: what it validates against afterwards is current
    /// (a new leader may not have applied its predecessor's last entries yet).
    pub async fn ensure_linearizable(&self) -> Result<(), RaftMetadataError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(RaftMetadataError::NotLeader {
                    leader_id: f.leader_id,
                })
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(RaftMetadataError::NotLeader { leader_id: None })
            }
            Err(RaftError::Fatal(e)) => Err(RaftMetadataError::Stopped(e.to_string())),
        }
    }

    /// The committed image as applied on this member (a follower may lag the leader).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.state_machine.image()
    }

    /// A receiver of every committed image this member applies.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.state_machine.subscribe()
    }

    /// The leader as this member last heard of it.
    pub fn leader_id(&self) -> Option<RaftNodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Whether this member believes it leads. A deposed leader may believe so briefly; a
    /// proposal it accepts then fails rather than commit.
    pub fn is_leader(&self) -> bool {
        self.leader_id() == Some(self.node_id)
    }

    pub fn node_id(&self) -> RaftNodeId {
        self.node_id
    }

    /// openraft's handle (metrics, triggers), for operations and tests.
    pub fn raft(&self) -> &MetadataRaft {
        &self.raft
    }

    /// Stops the Raft core; the on-disk state stays for a restart.
    pub async fn shutdown(&self) -> Result<(), RaftMetadataError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| RaftMetadataError::Stopped(e.to_string()))
    }
}
