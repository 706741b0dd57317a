//! The leader-side replication state of one partition (Kafka's `Partition` + `Replica` as seen
//! by the leader): each follower's fetch position and caught-up time, the committed ISR and the
//! AlterPartition change in flight, and the high watermark.
//!
//! Pure and deterministic: the caller passes the time and the leader's log end offset in, and
//! sends the returned [`AlterPartitionProposal`]s to the controller. One value lives for one
//! leader epoch; a new leader epoch builds a new `LeaderState`.
//!
//! Kafka semantics kept here:
//! - the HW is the smallest LEO over the *maximal* ISR (committed ISR plus a pending expansion,
//!   KIP-497) and over followers that are caught up and eligible (about to join), and it does
//!   not move while the committed ISR is below the effective `min.insync.replicas` (KIP-966);
//! - a follower joins the ISR when its LEO reached both the HW and the start of this leader
//!   epoch, and only if it is neither fenced nor shutting down (KIP-841);
//! - a follower leaves when it has not caught up within `replica.lag.time.max.ms`;
//! - at most one AlterPartition is in flight; its answer is matched to the proposal, and a
//!   refusal either resets to the committed state or waits for newer metadata, by error code.

use std::collections::{BTreeMap, BTreeSet};

use kavka_protocol::error::ErrorCode;

/// The replication settings of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `min.insync.replicas`: acks=all produces need at least this many replicas in the ISR.
    pub min_insync_replicas: i32,
    /// `replica.lag.time.max.ms`: a follower not caught up for longer leaves the ISR.
    pub replica_lag_time_max_ms: i64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

/// The partition as the controller committed it: what the leader starts from and what a
/// metadata update for the same leader epoch carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The assigned replicas, in preference order.
    pub replicas: Vec<i32>,
    pub isr: BTreeSet<i32>,
}

/// What the leader knows of one follower, from its last Fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FollowerState {
    /// The follower's log end offset (its last fetch offset); unknown until it fetches in this
    /// leader epoch.
    pub log_end_offset: Option<i64>,
    pub log_start_offset: Option<i64>,
    pub last_fetch_time_ms: Option<i64>,
    /// The leader's LEO when the follower last fetched: reaching it counts as caught up as of
    /// that fetch.
    pub last_fetch_leader_log_end_offset: Option<i64>,
    /// The last time the follower had everything the leader had.
    pub last_caught_up_time_ms: Option<i64>,
}

impl FollowerState {
    /// Kafka's `Replica.updateFetchState`: a fetch at or past the leader's current LEO makes
    /// the follower caught up now; one at or past the leader's LEO of the previous fetch makes
    /// it caught up as of that previous fetch.
    fn update_fetch_state(
        &mut self,
        fetch_offset: i64,
        log_start_offset: i64,
        now_ms: i64,
        leader_leo: i64,
    ) {
        let caught_up_at = if fetch_offset >= leader_leo {
            Some(now_ms)
        } else if self
            .last_fetch_leader_log_end_offset
            .is_some_and(|prev| fetch_offset >= prev)
        {
            self.last_fetch_time_ms
        } else {
            None
        };
        if let Some(t) = caught_up_at {
            self.last_caught_up_time_ms = Some(self.last_caught_up_time_ms.map_or(t, |c| c.max(t)));
        }
        self.log_end_offset = Some(fetch_offset);
        self.log_start_offset = Some(log_start_offset);
        self.last_fetch_leader_log_end_offset = Some(
            self.last_fetch_leader_log_end_offset
                .map_or(leader_leo, |p| p.max(leader_leo)),
        );
        self.last_fetch_time_ms = Some(self.last_fetch_time_ms.map_or(now_ms, |t| t.max(now_ms)));
    }

    /// Kafka's `isCaughtUp`: at the leader's LEO, or caught up within the lag time.
    fn is_caught_up(&self, leader_leo: i64, now_ms: i64, max_lag_ms: i64) -> bool {
        self.log_end_offset == Some(leader_leo)
            || self
                .last_caught_up_time_ms
                .is_some_and(|t| now_ms.saturating_sub(t) <= max_lag_ms)
    }
}

/// The ISR change an AlterPartition proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChange {
    /// Add one caught-up follower (Kafka's `PendingExpandIsr`).
    Expand(i32),
    /// Remove followers that fell behind (Kafka's `PendingShrinkIsr`).
    Shrink(BTreeSet<i32>),
}

/// An AlterPartition request for this partition, to send to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionProposal {
    /// Matches the controller's answer to this proposal (Kafka compares the pending state
    /// object the callback captured); increases with each proposal of this leader.
    pub id: u64,
    pub leader_id: i32,
    pub leader_epoch: i32,
    /// The partition epoch the proposal is based on; the controller refuses any other.
    pub partition_epoch: i32,
    pub new_isr: BTreeSet<i32>,
    pub change: IsrChange,
}

/// Why the controller refused an AlterPartition, in the terms that decide what the leader does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterPartitionError {
    /// OPERATION_NOT_ATTEMPTED: not applied, partition epoch right; reset to committed state.
    OperationNotAttempted,
    /// INELIGIBLE_REPLICA: the new ISR holds a fenced or shutting-down broker; not applied.
    IneligibleReplica,
    /// INVALID_UPDATE_VERSION: our partition epoch is stale; newer metadata is on its way.
    InvalidUpdateVersion,
    /// FENCED_LEADER_EPOCH: our leader epoch is stale; newer metadata is on its way.
    FencedLeaderEpoch,
    /// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID: the controller does not know it (yet).
    UnknownTopicOrPartition,
    /// INVALID_REQUEST: wait for metadata rather than resend the same thing.
    InvalidRequest,
    /// NEW_LEADER_ELECTED: applied, but this replica was removed by a reassignment.
    NewLeaderElected,
    /// Anything else (timeout, NOT_CONTROLLER, ...): resend the same proposal.
    Retriable,
}

impl AlterPartitionError {
    /// Classifies a partition-level error code of an AlterPartition response.
    pub fn from_code(code: i16) -> Self {
        match ErrorCode::try_from_code(code) {
            Some(ErrorCode::OperationNotAttempted) => Self::OperationNotAttempted,
            Some(ErrorCode::IneligibleReplica) => Self::IneligibleReplica,
            Some(ErrorCode::InvalidUpdateVersion) => Self::InvalidUpdateVersion,
            Some(ErrorCode::FencedLeaderEpoch) => Self::FencedLeaderEpoch,
            Some(ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownTopicId) => {
                Self::UnknownTopicOrPartition
            }
            Some(ErrorCode::InvalidRequest) => Self::InvalidRequest,
            Some(ErrorCode::NewLeaderElected) => Self::NewLeaderElected,
            _ => Self::Retriable,
        }
    }
}

/// The controller's answer to one proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterPartitionResponse {
    /// The controller committed (or already had) this state.
    Accepted {
        proposal_id: u64,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: BTreeSet<i32>,
    },
    Rejected {
        proposal_id: u64,
        error: AlterPartitionError,
    },
}

/// What an AlterPartition answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterPartitionResponseOutcome {
    /// Not the answer to the proposal in flight (a late answer, or the state moved on through
    /// metadata): nothing changed.
    Ignored,
    /// The new ISR is committed; the HW may have moved.
    Committed { new_high_watermark: Option<i64> },
    /// Refused without being applied: back to the committed ISR, free to propose again.
    Reverted { new_high_watermark: Option<i64> },
    /// Refused because our view is stale: the change stays pending (blocking new proposals and
    /// keeping the maximal ISR for the HW) until a metadata update arrives.
    AwaitingMetadata,
    /// A transient failure: send this same proposal again.
    Resend(AlterPartitionProposal),
}

/// What a follower's Fetch did to the partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchOutcome {
    /// The new HW when it moved (delayed acks=all produces and fetches may complete).
    pub new_high_watermark: Option<i64>,
    /// An ISR expansion to send to the controller.
    pub alter_partition: Option<AlterPartitionProposal>,
}

/// Where an acks=all produce stands (Kafka's `checkEnoughReplicasReachOffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcksAllStatus {
    /// The HW has not reached the offset yet.
    Pending,
    /// Committed with enough replicas in the ISR.
    Committed,
    /// Committed, but the ISR shrank below `min.insync.replicas` after the append.
    NotEnoughReplicasAfterAppend,
}

impl AcksAllStatus {
    /// The produce response's error code once the wait is over.
    pub fn error_code(self) -> i16 {
        match self {
            AcksAllStatus::Pending | AcksAllStatus::Committed => 0,
            AcksAllStatus::NotEnoughReplicasAfterAppend => {
                ErrorCode::NotEnoughReplicasAfterAppend.code()
            }
        }
    }
}

/// An acks=all produce refused before the append (NOT_ENOUGH_REPLICAS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the size of the current ISR {isr_size} is insufficient to satisfy the min.isr requirement of {min_isr}")]
pub struct NotEnoughReplicas {
    pub isr_size: usize,
    pub min_isr: usize,
}

impl NotEnoughReplicas {
    pub fn code(&self) -> i16 {
        ErrorCode::NotEnoughReplicas.code()
    }
}

/// Input the state machine refuses; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaStateError {
    #[error("invalid partition state: {0}")]
    InvalidPartitionState(String),
    #[error("invalid replication config: {0}")]
    InvalidConfig(String),
    #[error("replica {0} is not a follower of this partition")]
    UnknownReplica(i32),
    #[error(
        "fetch offset {fetch_offset} is outside the leader's log (log end offset {log_end_offset})"
    )]
    OffsetOutOfRange {
        fetch_offset: i64,
        log_end_offset: i64,
    },
    #[error("leader epoch {received} is not this leader's epoch {current}")]
    LeaderEpochMismatch { current: i32, received: i32 },
    #[error("partition epoch {received} is older than the current {current}")]
    StalePartitionEpoch { current: i32, received: i32 },
}

impl ReplicaStateError {
    /// The Kafka error code for a Fetch from a follower refused with this error.
    pub fn code(&self) -> i16 {
        match self {
            ReplicaStateError::UnknownReplica(_) => ErrorCode::UnknownLeaderEpoch.code(),
            ReplicaStateError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange.code(),
            ReplicaStateError::LeaderEpochMismatch { .. } => ErrorCode::FencedLeaderEpoch.code(),
            ReplicaStateError::StalePartitionEpoch { .. } => ErrorCode::InvalidUpdateVersion.code(),
            ReplicaStateError::InvalidPartitionState(_) | ReplicaStateError::InvalidConfig(_) => {
                ErrorCode::InvalidRequest.code()
            }
        }
    }
}

/// The AlterPartition in flight, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingChange {
    proposal: AlterPartitionProposal,
}

/// The leader's replication state of one partition for one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderState {
    leader_id: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    /// The ISR as last committed by the controller.
    isr: BTreeSet<i32>,
    pending: Option<PendingChange>,
    /// One entry per assigned replica other than the leader.
    followers: BTreeMap<i32, FollowerState>,
    /// Fenced or controlled-shutdown brokers (from the metadata image): never added to the ISR.
    ineligible: BTreeSet<i32>,
    high_watermark: i64,
    log_end_offset: i64,
    /// The leader's LEO when this epoch began: a follower must reach it to join the ISR, or
    /// records between the HW and it could be lost if that follower became leader.
    leader_epoch_start_offset: i64,
    config: ReplicationConfig,
    next_proposal_id: u64,
}

fn validate(
    leader_id: i32,
    replicas: &[i32],
    isr: &BTreeSet<i32>,
) -> Result<(), ReplicaStateError> {
    let assigned: BTreeSet<i32> = replicas.iter().copied().collect();
    if assigned.len() != replicas.len() {
        return Err(ReplicaStateError::InvalidPartitionState(format!(
            "duplicate replica in {replicas:?}"
        )));
    }
    if !assigned.contains(&leader_id) {
        return Err(ReplicaStateError::InvalidPartitionState(format!(
            "leader {leader_id} is not among the replicas {replicas:?}"
        )));
    }
    if !isr.contains(&leader_id) {
        return Err(ReplicaStateError::InvalidPartitionState(format!(
            "leader {leader_id} is not in the ISR {isr:?}"
        )));
    }
    if !isr.is_subset(&assigned) {
        return Err(ReplicaStateError::InvalidPartitionState(format!(
            "ISR {isr:?} is not a subset of the replicas {replicas:?}"
        )));
    }
    Ok(())
}

fn check_config(config: &ReplicationConfig) -> Result<(), ReplicaStateError> {
    if config.min_insync_replicas < 1 {
        return Err(ReplicaStateError::InvalidConfig(format!(
            "min.insync.replicas must be at least 1, not {}",
            config.min_insync_replicas
        )));
    }
    if config.replica_lag_time_max_ms < 0 {
        return Err(ReplicaStateError::InvalidConfig(format!(
            "replica.lag.time.max.ms must not be negative, not {}",
            config.replica_lag_time_max_ms
        )));
    }
    Ok(())
}

impl LeaderState {
    /// Becomes leader for `state.leader_epoch` with the local log's end offset and high
    /// watermark. Followers in the ISR count as caught up now, the others as never (Kafka's
    /// `resetReplicaState`), and their positions are unknown until they fetch.
    pub fn new(
        leader_id: i32,
        state: LeaderAndIsr,
        config: ReplicationConfig,
        log_end_offset: i64,
        high_watermark: i64,
        now_ms: i64,
    ) -> Result<Self, ReplicaStateError> {
        validate(leader_id, &state.replicas, &state.isr)?;
        check_config(&config)?;
        if log_end_offset < 0 || high_watermark < 0 || high_watermark > log_end_offset {
            return Err(ReplicaStateError::InvalidPartitionState(format!(
                "high watermark {high_watermark} and log end offset {log_end_offset} are inconsistent"
            )));
        }
        let followers = state
            .replicas
            .iter()
            .filter(|&&r| r != leader_id)
            .map(|&r| {
                let caught_up = state.isr.contains(&r).then_some(now_ms);
                (
                    r,
                    FollowerState {
                        last_caught_up_time_ms: caught_up,
                        ..FollowerState::default()
                    },
                )
            })
            .collect();
        let mut leader = LeaderState {
            leader_id,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            replicas: state.replicas,
            isr: state.isr,
            pending: None,
            followers,
            ineligible: BTreeSet::new(),
            high_watermark,
            log_end_offset,
            leader_epoch_start_offset: log_end_offset,
            config,
            next_proposal_id: 1,
        };
        // The ISR may be the leader alone.
        leader.maybe_increment_high_watermark(now_ms);
        leader.debug_check();
        Ok(leader)
    }

    pub fn leader_id(&self) -> i32 {
        self.leader_id
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[i32] {
        &self.replicas
    }

    /// The ISR as committed by the controller.
    pub fn isr(&self) -> &BTreeSet<i32> {
        &self.isr
    }

    /// The ISR the HW waits for: the committed ISR plus a pending expansion (KIP-497).
    pub fn maximal_isr(&self) -> BTreeSet<i32> {
        let mut isr = self.isr.clone();
        if let Some(PendingChange {
            proposal:
                AlterPartitionProposal {
                    change: IsrChange::Expand(r),
                    ..
                },
        }) = &self.pending
        {
            isr.insert(*r);
        }
        isr
    }

    /// The AlterPartition in flight, if any.
    pub fn pending_alter_partition(&self) -> Option<&AlterPartitionProposal> {
        self.pending.as_ref().map(|p| &p.proposal)
    }

    pub fn follower(&self, replica: i32) -> Option<&FollowerState> {
        self.followers.get(&replica)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    pub fn leader_epoch_start_offset(&self) -> i64 {
        self.leader_epoch_start_offset
    }

    pub fn config(&self) -> ReplicationConfig {
        self.config
    }

    /// A topic config change (min.insync.replicas, replica.lag.time.max.ms) within the leader
    /// epoch: followers' positions are kept. A lower min.insync.replicas may free the HW.
    pub fn set_config(
        &mut self,
        config: ReplicationConfig,
        now_ms: i64,
    ) -> Result<Option<i64>, ReplicaStateError> {
        check_config(&config)?;
        self.config = config;
        let moved = self.maybe_increment_high_watermark(now_ms);
        self.debug_check();
        Ok(moved)
    }

    /// `min.insync.replicas` capped at the replication factor, as Kafka does.
    pub fn effective_min_isr(&self) -> usize {
        let min = usize::try_from(self.config.min_insync_replicas).unwrap_or(1);
        min.clamp(1, self.replicas.len().max(1))
    }

    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }

    pub fn is_under_min_isr(&self) -> bool {
        self.isr.len() < self.effective_min_isr()
    }

    /// Fenced and shutting-down brokers, from the metadata image (KIP-841): they are neither
    /// added to the ISR nor waited for by the HW unless already in the ISR.
    pub fn set_ineligible_replicas(&mut self, ineligible: BTreeSet<i32>) {
        self.ineligible = ineligible;
    }

    fn is_isr_eligible(&self, replica: i32) -> bool {
        self.followers.contains_key(&replica) && !self.ineligible.contains(&replica)
    }

    /// A follower's Fetch at `fetch_offset` (its LEO) with its log start offset, answered from
    /// a leader log whose end offset is `leader_leo`. Records the position, may propose adding
    /// the follower to the ISR, and may move the HW.
    pub fn on_follower_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        log_start_offset: i64,
        now_ms: i64,
        leader_leo: i64,
    ) -> Result<FetchOutcome, ReplicaStateError> {
        if !self.followers.contains_key(&replica) {
            return Err(ReplicaStateError::UnknownReplica(replica));
        }
        self.observe_log_end_offset(leader_leo);
        if fetch_offset < 0 || fetch_offset > self.log_end_offset {
            return Err(ReplicaStateError::OffsetOutOfRange {
                fetch_offset,
                log_end_offset: self.log_end_offset,
            });
        }
        let leader_leo = self.log_end_offset;
        let Some(follower) = self.followers.get_mut(&replica) else {
            return Err(ReplicaStateError::UnknownReplica(replica));
        };
        let previous = follower.log_end_offset;
        follower.update_fetch_state(fetch_offset, log_start_offset, now_ms, leader_leo);

        let alter_partition = self.maybe_expand_isr(replica);
        // As Kafka: only a moved follower can move the HW (an expansion only adds a constraint).
        let new_high_watermark = if previous != Some(fetch_offset) {
            self.maybe_increment_high_watermark(now_ms)
        } else {
            None
        };
        self.debug_check();
        Ok(FetchOutcome {
            new_high_watermark,
            alter_partition,
        })
    }

    /// The leader appended to its log (now ending at `leader_leo`): with a lone-leader ISR the
    /// HW follows at once.
    pub fn on_leader_append(&mut self, leader_leo: i64, now_ms: i64) -> Option<i64> {
        self.observe_log_end_offset(leader_leo);
        let moved = self.maybe_increment_high_watermark(now_ms);
        self.debug_check();
        moved
    }

    /// The ISR expiration timer: proposes removing every ISR follower that has not caught up
    /// within `replica.lag.time.max.ms`. Nothing while a change is in flight.
    pub fn maybe_shrink_isr(&mut self, now_ms: i64) -> Option<AlterPartitionProposal> {
        if self.pending.is_some() {
            return None;
        }
        let out_of_sync: BTreeSet<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&r| r != self.leader_id)
            .filter(|r| {
                self.followers.get(r).is_none_or(|f| {
                    !f.is_caught_up(
                        self.log_end_offset,
                        now_ms,
                        self.config.replica_lag_time_max_ms,
                    )
                })
            })
            .collect();
        if out_of_sync.is_empty() {
            return None;
        }
        let new_isr = self.isr.difference(&out_of_sync).copied().collect();
        let proposal = self.propose(new_isr, IsrChange::Shrink(out_of_sync));
        self.debug_check();
        Some(proposal)
    }

    /// The controller's answer to the proposal in flight (Kafka's `handleAlterPartitionUpdate`
    /// and `handleAlterPartitionError`).
    pub fn on_alter_partition_response(
        &mut self,
        response: AlterPartitionResponse,
        now_ms: i64,
    ) -> AlterPartitionResponseOutcome {
        let proposal_id = match &response {
            AlterPartitionResponse::Accepted { proposal_id, .. }
            | AlterPartitionResponse::Rejected { proposal_id, .. } => *proposal_id,
        };
        let Some(pending) = &self.pending else {
            return AlterPartitionResponseOutcome::Ignored;
        };
        if pending.proposal.id != proposal_id {
            return AlterPartitionResponseOutcome::Ignored;
        }
        let outcome = match response {
            AlterPartitionResponse::Accepted {
                leader_epoch,
                partition_epoch,
                isr,
                ..
            } => {
                if leader_epoch != self.leader_epoch
                    || partition_epoch < self.partition_epoch
                    || validate(self.leader_id, &self.replicas, &isr).is_err()
                {
                    // A stale or inconsistent answer: Kafka stays pending until metadata.
                    AlterPartitionResponseOutcome::AwaitingMetadata
                } else {
                    self.isr = isr;
                    self.partition_epoch = partition_epoch;
                    self.pending = None;
                    AlterPartitionResponseOutcome::Committed {
                        new_high_watermark: self.maybe_increment_high_watermark(now_ms),
                    }
                }
            }
            AlterPartitionResponse::Rejected { error, .. } => match error {
                AlterPartitionError::OperationNotAttempted
                | AlterPartitionError::IneligibleReplica => {
                    // The controller says it did not apply it and our epoch is right: safe to
                    // return to the committed state.
                    self.pending = None;
                    AlterPartitionResponseOutcome::Reverted {
                        new_high_watermark: self.maybe_increment_high_watermark(now_ms),
                    }
                }
                AlterPartitionError::InvalidUpdateVersion
                | AlterPartitionError::FencedLeaderEpoch
                | AlterPartitionError::UnknownTopicOrPartition
                | AlterPartitionError::InvalidRequest
                | AlterPartitionError::NewLeaderElected => {
                    AlterPartitionResponseOutcome::AwaitingMetadata
                }
                AlterPartitionError::Retriable => {
                    AlterPartitionResponseOutcome::Resend(pending.proposal.clone())
                }
            },
        };
        self.debug_check();
        outcome
    }

    /// A metadata update for this partition within the same leader epoch (the controller
    /// applied our AlterPartition, fenced a broker out of the ISR, or changed the replicas).
    /// It replaces the committed state, like Kafka's `makeLeader` without a new leader epoch,
    /// and ends a pending change when the partition epoch is newer. Returns the new HW if it
    /// moved.
    pub fn on_partition_change(
        &mut self,
        state: LeaderAndIsr,
        now_ms: i64,
    ) -> Result<Option<i64>, ReplicaStateError> {
        if state.leader_epoch != self.leader_epoch {
            return Err(ReplicaStateError::LeaderEpochMismatch {
                current: self.leader_epoch,
                received: state.leader_epoch,
            });
        }
        if state.partition_epoch < self.partition_epoch {
            return Err(ReplicaStateError::StalePartitionEpoch {
                current: self.partition_epoch,
                received: state.partition_epoch,
            });
        }
        validate(self.leader_id, &state.replicas, &state.isr)?;
        let followers = std::mem::take(&mut self.followers);
        self.followers = state
            .replicas
            .iter()
            .filter(|&&r| r != self.leader_id)
            .map(|&r| (r, followers.get(&r).copied().unwrap_or_default()))
            .collect();
        // A change in flight survives an update at the same partition epoch (our own commit
        // echoed back): the controller may still apply it, so the HW must keep its maximal ISR.
        if state.partition_epoch > self.partition_epoch {
            self.pending = None;
        }
        self.replicas = state.replicas;
        self.isr = state.isr;
        self.partition_epoch = state.partition_epoch;
        if let Some(p) = &self.pending {
            let assigned: BTreeSet<i32> = self.replicas.iter().copied().collect();
            if !p.proposal.new_isr.is_subset(&assigned) {
                self.pending = None;
            }
        }
        let moved = self.maybe_increment_high_watermark(now_ms);
        self.debug_check();
        Ok(moved)
    }

    /// acks=all before the append: refused with NOT_ENOUGH_REPLICAS when the committed ISR is
    /// below the effective `min.insync.replicas`.
    pub fn check_enough_replicas(&self) -> Result<(), NotEnoughReplicas> {
        let min_isr = self.effective_min_isr();
        if self.isr.len() < min_isr {
            return Err(NotEnoughReplicas {
                isr_size: self.isr.len(),
                min_isr,
            });
        }
        Ok(())
    }

    /// acks=all after the append: is everything below `required_offset` (the batch's last
    /// offset + 1) committed, and with enough replicas?
    pub fn check_enough_replicas_reach_offset(&self, required_offset: i64) -> AcksAllStatus {
        if self.high_watermark < required_offset {
            AcksAllStatus::Pending
        } else if self.maximal_isr().len() < self.effective_min_isr() {
            AcksAllStatus::NotEnoughReplicasAfterAppend
        } else {
            AcksAllStatus::Committed
        }
    }

    /// The leader's log only grows within an epoch; an older LEO is ignored.
    fn observe_log_end_offset(&mut self, leader_leo: i64) {
        if leader_leo > self.log_end_offset {
            self.log_end_offset = leader_leo;
        }
    }

    /// Kafka's `maybeExpandIsr`: one caught-up, eligible follower at a time.
    fn maybe_expand_isr(&mut self, replica: i32) -> Option<AlterPartitionProposal> {
        if self.pending.is_some() || self.isr.contains(&replica) || !self.is_isr_eligible(replica) {
            return None;
        }
        let leo = self.followers.get(&replica)?.log_end_offset?;
        if leo < self.high_watermark || leo < self.leader_epoch_start_offset {
            return None;
        }
        let mut new_isr = self.isr.clone();
        new_isr.insert(replica);
        Some(self.propose(new_isr, IsrChange::Expand(replica)))
    }

    fn propose(&mut self, new_isr: BTreeSet<i32>, change: IsrChange) -> AlterPartitionProposal {
        debug_assert!(
            self.pending.is_none(),
            "one AlterPartition in flight at most"
        );
        let proposal = AlterPartitionProposal {
            id: self.next_proposal_id,
            leader_id: self.leader_id,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr,
            change,
        };
        self.next_proposal_id = self.next_proposal_id.saturating_add(1);
        self.pending = Some(PendingChange {
            proposal: proposal.clone(),
        });
        proposal
    }

    /// Kafka's `maybeIncrementLeaderHW`: the smallest LEO over the leader, the maximal ISR and
    /// the followers caught up and eligible to join. A member whose position is unknown holds
    /// the HW where it is.
    fn maybe_increment_high_watermark(&mut self, now_ms: i64) -> Option<i64> {
        if self.is_under_min_isr() {
            return None;
        }
        let maximal = self.maximal_isr();
        let mut candidate = self.log_end_offset;
        for (&id, follower) in &self.followers {
            let waits = maximal.contains(&id)
                || (follower.is_caught_up(
                    self.log_end_offset,
                    now_ms,
                    self.config.replica_lag_time_max_ms,
                ) && self.is_isr_eligible(id));
            if !waits {
                continue;
            }
            match follower.log_end_offset {
                Some(leo) => candidate = candidate.min(leo),
                None => return None,
            }
        }
        if candidate <= self.high_watermark {
            return None;
        }
        debug_assert!(candidate <= self.log_end_offset);
        self.high_watermark = candidate;
        Some(candidate)
    }

    /// The invariants every method keeps whatever its input: see `invariant_violation`.
    fn debug_check(&self) {
        debug_assert!(
            self.invariant_violation().is_none(),
            "{:?}",
            self.invariant_violation()
        );
    }

    /// Structural invariants: the leader is in the (maximal) ISR, the maximal ISR is a subset
    /// of the replicas, the HW is within the leader's log, a pending change is based on the
    /// current partition epoch and an expansion's replica met the HW when proposed. (That the
    /// HW is at most every maximal-ISR member's LEO holds while followers do not go back, which
    /// an uncleanly restarted follower may do; the tests check it for well-behaved followers.)
    pub fn invariant_violation(&self) -> Option<String> {
        let assigned: BTreeSet<i32> = self.replicas.iter().copied().collect();
        let maximal = self.maximal_isr();
        if !self.isr.contains(&self.leader_id) {
            return Some(format!(
                "leader {} not in ISR {:?}",
                self.leader_id, self.isr
            ));
        }
        if !maximal.is_subset(&assigned) {
            return Some(format!(
                "maximal ISR {maximal:?} not within replicas {:?}",
                self.replicas
            ));
        }
        if self.high_watermark < 0 || self.high_watermark > self.log_end_offset {
            return Some(format!(
                "HW {} outside [0, LEO {}]",
                self.high_watermark, self.log_end_offset
            ));
        }
        if let Some(p) = &self.pending {
            if p.proposal.partition_epoch != self.partition_epoch {
                return Some(format!(
                    "pending proposal on partition epoch {} but state at {}",
                    p.proposal.partition_epoch, self.partition_epoch
                ));
            }
            if !p.proposal.new_isr.contains(&self.leader_id) {
                return Some(format!("proposal {:?} drops the leader", p.proposal));
            }
        }
        None
    }
}

#[cfg(test)]
#[path = "replica_state_tests.rs"]
mod tests;
