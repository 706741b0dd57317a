//! One hosted partition: its log, its role in replication, its high watermark, and the
//! waiters parked on them.
//!
//! A partition is the leader (it holds the replication [`LeaderState`] of its leader epoch:
//! followers' positions, the ISR, the HW) or a follower (it appends what the leader sends and
//! takes the leader's HW). Until the replica manager assigns a role it is the sole owner of its
//! log, as a single node has always been: the HW follows the log end offset.
//!
//! Fetches park on `high_watermark` (consumers) or `log_end_offset` (followers) changes;
//! acks=all producers park on `high_watermark` and `state_changes`; producers that need
//! durability park on `durable` (advanced by this partition's flusher task, which fsyncs
//! outside the lock so one fsync covers every batch appended while the previous one ran:
//! group commit).
//!
//! Lock order: `role`, then `log`. An append takes `log` alone and feeds the leader state
//! after releasing it; what it needs of the role (may it append, under which epoch) is in
//! atomics written under the `log` lock.

use crate::replication::{
    AcksAllStatus, AlterPartitionProposal, AlterPartitionResponse, AlterPartitionResponseOutcome,
    LeaderAndIsr, LeaderState, ReplicaStateError, ReplicationConfig,
};
use kavka_metadata::PartitionImage;
use kavka_storage::{
    AppendInfo, CleanableLog, CleanedLog, Log, LogConfig, ReadPlan, StorageError, SwapOutcome,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

#[derive(Debug, Error)]
pub enum PartitionError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The partition is being closed or deleted; clients refresh metadata and retry.
    #[error("partition is no longer hosted here")]
    NotHosted,
    /// This broker is not the partition's leader (or, for follower appends, not a follower).
    #[error("this broker is not the leader of the partition")]
    NotLeaderOrFollower,
    /// acks=all refused before the append: the ISR is below min.insync.replicas.
    #[error("the in-sync replica set is below min.insync.replicas")]
    NotEnoughReplicas,
    /// acks=all appended, but the ISR fell below min.insync.replicas before it was committed.
    #[error("the in-sync replica set fell below min.insync.replicas after the append")]
    NotEnoughReplicasAfterAppend,
    /// acks=all: the high watermark did not reach the batch within the request timeout.
    #[error("the records were not replicated within the request timeout")]
    RequestTimedOut,
}

/// Why [`Partition::end_offset_for_leader_epoch`] gave no answer.
#[derive(Debug, Error)]
pub enum LeaderEpochError {
    /// The requester's current leader epoch is older than ours: Kafka's FENCED_LEADER_EPOCH.
    #[error("current leader epoch {requested} is older than the leader's {ours}")]
    Fenced { requested: i32, ours: i32 },
    /// The requester knows a newer leader epoch than ours: UNKNOWN_LEADER_EPOCH.
    #[error("current leader epoch {requested} is newer than the leader's {ours}")]
    Unknown { requested: i32, ours: i32 },
    #[error(transparent)]
    Partition(#[from] PartitionError),
}

/// Why the leader refused to record a follower's Fetch.
#[derive(Debug, Error)]
pub enum FollowerFetchError {
    #[error("this broker is not the leader of the partition")]
    NotLeader,
    /// The fetching replica is not assigned, or its offset is outside the leader's log.
    #[error(transparent)]
    Refused(#[from] ReplicaStateError),
}

/// An AlterPartition to send to the controller, taken with
/// [`Partition::take_alter_partition`]; its answer goes back through
/// [`Partition::complete_alter_partition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterPartitionTicket {
    /// The leadership the proposal belongs to: an answer for an older one is dropped.
    pub generation: u64,
    pub proposal: AlterPartitionProposal,
}

/// The leader's replication state and the AlterPartition traffic around it.
struct Leadership {
    state: LeaderState,
    /// A proposal the state machine made that is not sent yet.
    unsent: Option<AlterPartitionProposal>,
    /// An AlterPartition is on its way to the controller: at most one at a time.
    in_flight: bool,
    /// After a refusal, nothing is sent before this: a controller that is away (election,
    /// restart) is not flooded by every follower fetch.
    retry_at: Option<std::time::Instant>,
}

impl Leadership {
    /// Whether an AlterPartition may go out now.
    fn sendable(&self) -> bool {
        self.unsent.is_some()
            && !self.in_flight
            && self.retry_at.is_none_or(|t| std::time::Instant::now() >= t)
    }
}

/// The pause after a refused or failed AlterPartition before the next one.
pub const ALTER_PARTITION_RETRY_BACKOFF: Duration = Duration::from_millis(500);

enum Role {
    /// No role assigned yet: the log's sole owner, as a single node (HW = LEO after append).
    Unassigned,
    Leader(Box<Leadership>),
    Follower {
        leader_id: i32,
        leader_epoch: i32,
    },
}

pub struct Partition {
    pub topic: String,
    pub topic_id: Uuid,
    pub index: i32,
    log: Mutex<Option<Log>>,
    role: Mutex<Role>,
    high_watermark: watch::Sender<i64>,
    log_end_offset: watch::Sender<i64>,
    log_start_offset: watch::Sender<i64>,
    /// Every offset below this is fsynced.
    durable: watch::Sender<i64>,
    /// Bumped on every role, leader epoch or ISR change: wakes acks=all waiters.
    state_changes: watch::Sender<u64>,
    flush_wanted: Notify,
    /// The leader epoch this broker appends under (from the metadata image; a single node's
    /// partitions stay at 0).
    leader_epoch: AtomicI32,
    /// The leader named by the latest image given to `become_*`; -1 before any.
    leader_id: AtomicI32,
    /// Whether producer/coordinator appends are accepted (not a follower). Written under the
    /// `log` lock, so an append never lands after the switch to follower.
    accepts_leader_appends: AtomicBool,
    /// Counts leaderships (each `become_leader` with a new leader epoch, or after a follower
    /// spell): tags AlterPartition tickets.
    generation: AtomicU64,
}

impl Partition {
    pub fn new(topic: String, topic_id: Uuid, index: i32, log: Log) -> Arc<Self> {
        let leo = log.log_end_offset();
        let lso = log.log_start_offset();
        // Whatever recovery kept is on disk; treat it as durable.
        Arc::new(Partition {
            topic,
            topic_id,
            index,
            log: Mutex::new(Some(log)),
            role: Mutex::new(Role::Unassigned),
            high_watermark: watch::Sender::new(leo),
            log_end_offset: watch::Sender::new(leo),
            log_start_offset: watch::Sender::new(lso),
            durable: watch::Sender::new(leo),
            state_changes: watch::Sender::new(0),
            flush_wanted: Notify::new(),
            leader_epoch: AtomicI32::new(0),
            leader_id: AtomicI32::new(-1),
            accepts_leader_appends: AtomicBool::new(true),
            generation: AtomicU64::new(0),
        })
    }

    fn role(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Log>> {
        // A panic while holding the lock would be a bug; the log's own state is still
        // consistent at every await-free step, so keep serving.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_log<T>(
        &self,
        f: impl FnOnce(&mut Log) -> Result<T, StorageError>,
    ) -> Result<T, PartitionError> {
        let mut g = self.lock();
        let log = g.as_mut().ok_or(PartitionError::NotHosted)?;
        Ok(f(log)?)
    }

    /// Appends validated batches as the leader (producers, the group coordinator). Blocking
    /// (file write): call from a blocking thread. Returns the append result and whether the
    /// caller must wait for an fsync before acking. A follower refuses.
    pub fn append(
        &self,
        batches: &mut [u8],
        now_ms: i64,
    ) -> Result<(AppendInfo, bool), PartitionError> {
        self.append_with(now_ms, |log, epoch| {
            log.append_as_leader(batches, epoch, now_ms)
        })
    }

    /// Writes a transaction marker as the leader (WriteTxnMarkers). Blocking, like
    /// [`Partition::append`], with the same result.
    pub fn append_txn_marker(
        &self,
        marker: &kavka_protocol::records::TxnMarker,
        now_ms: i64,
    ) -> Result<(AppendInfo, bool), PartitionError> {
        self.append_with(now_ms, |log, epoch| {
            log.append_txn_marker(marker, epoch, now_ms)
        })
    }

    /// One producer's state here, if it has any (KIP-890 verification: whether it has an
    /// ongoing transaction on this partition).
    pub fn producer_entry(
        &self,
        producer_id: i64,
    ) -> Result<Option<kavka_storage::ProducerEntry>, PartitionError> {
        self.with_log(|log| Ok(log.producer_state().producer(producer_id).cloned()))
    }

    /// Before a KIP-890 verification: the producer's entry here and its verification guard
    /// (set now; any later append of the producer, a marker included, clears it).
    pub fn begin_txn_verification(
        &self,
        producer_id: i64,
    ) -> Result<(Option<kavka_storage::ProducerEntry>, u64), PartitionError> {
        self.with_log(|log| {
            let guard = log.begin_txn_verification(producer_id);
            Ok((log.producer_state().producer(producer_id).cloned(), guard))
        })
    }

    /// [`Partition::append`] behind a verification guard (KIP-890), checked under the
    /// partition lock right before the append: the batches go in only while the producer's
    /// transaction is ongoing here (an earlier batch of it started it) or its guard is still
    /// `guard` (nothing of the producer, no marker, was appended since the verification
    /// began); otherwise INVALID_TXN_STATE.
    pub fn append_guarded(
        &self,
        batches: &mut [u8],
        now_ms: i64,
        producer_id: i64,
        guard: u64,
    ) -> Result<(AppendInfo, bool), PartitionError> {
        self.append_with(now_ms, |log, epoch| {
            let state = log.producer_state();
            let ongoing = state
                .producer(producer_id)
                .is_some_and(|e| e.current_txn_first_offset.is_some());
            if !ongoing && state.verification_guard(producer_id) != Some(guard) {
                return Err(kavka_storage::StorageError::Producer(
                    kavka_storage::ProducerStateError::InvalidTxnState { producer_id },
                ));
            }
            log.append_as_leader(batches, epoch, now_ms)
        })
    }

    fn append_with(
        &self,
        now_ms: i64,
        append: impl FnOnce(&mut Log, i32) -> Result<AppendInfo, kavka_storage::StorageError>,
    ) -> Result<(AppendInfo, bool), PartitionError> {
        let (info, flush_due, lso, leo) = {
            let mut g = self.lock();
            let log = g.as_mut().ok_or(PartitionError::NotHosted)?;
            if !self.accepts_leader_appends.load(Ordering::Acquire) {
                return Err(PartitionError::NotLeaderOrFollower);
            }
            let epoch = self.leader_epoch();
            let info = append(log, epoch)?;
            let leo = log.log_end_offset();
            // Published under the lock so the watch never goes back.
            self.log_end_offset.send_replace(leo);
            (info, log.flush_due(now_ms), log.log_start_offset(), leo)
        };
        self.log_start_offset.send_replace(lso);
        // Not `info.last_offset + 1`: a deduplicated retry reports older offsets.
        self.on_local_append(leo, now_ms);
        if flush_due {
            self.flush_wanted.notify_one();
        }
        Ok((info, flush_due))
    }

    /// Moves the HW after a leader append: at once when no role is assigned (single node),
    /// through the leader state otherwise.
    fn on_local_append(&self, leo: i64, now_ms: i64) {
        let mut role = self.role();
        match &mut *role {
            Role::Unassigned => self.raise_high_watermark(leo),
            Role::Leader(l) => {
                if let Some(hw) = l.state.on_leader_append(leo, now_ms) {
                    self.raise_high_watermark(hw);
                }
            }
            // Lost the leadership after the append: the new leader decides.
            Role::Follower { .. } => {}
        }
    }

    /// Publishes a higher HW (never lower: waiters and long polls rely on it). Called with the
    /// role lock held so concurrent raises are ordered.
    fn raise_high_watermark(&self, hw: i64) {
        self.high_watermark.send_if_modified(|cur| {
            let moved = hw > *cur;
            if moved {
                *cur = hw;
            }
            moved
        });
    }

    fn notify_state_change(&self) {
        self.state_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn leader_and_isr(image: &PartitionImage) -> LeaderAndIsr {
        LeaderAndIsr {
            leader_epoch: image.leader_epoch,
            partition_epoch: image.partition_epoch,
            replicas: image.replicas.clone(),
            isr: image.isr.iter().copied().collect(),
        }
    }

    /// Under the role lock, when a replicated partition first becomes a follower: the HW of
    /// its log is not known at open (there is no HW checkpoint; `new` sets it to the log end),
    /// so it restarts from the log start offset, as Kafka does without its checkpoint, and
    /// the leader's fetch responses raise it. Otherwise truncation would keep records nobody
    /// committed as if they were. A partition that first becomes leader keeps the log end:
    /// it was elected from the ISR, so its log is the one every replica will follow.
    fn reset_unknown_high_watermark(&self, role: &Role, image: &PartitionImage) {
        if matches!(role, Role::Unassigned) && image.replicas.len() > 1 {
            let lso = self.log_start_offset();
            self.high_watermark.send_replace(lso);
        }
    }

    /// Becomes (or stays) the leader of `image.leader_epoch`; `image.leader` must be this
    /// broker. A new leader epoch (or a leadership after a follower spell) starts a fresh
    /// [`LeaderState`] from the local LEO and HW; the same epoch applies the image as an ISR /
    /// replica update and `cfg` as a config update.
    pub fn become_leader(&self, image: &PartitionImage, cfg: ReplicationConfig, now_ms: i64) {
        let mut role = self.role();
        self.leader_id.store(image.leader, Ordering::Release);
        if let Role::Leader(l) = &mut *role {
            if l.state.leader_epoch() == image.leader_epoch {
                let moved = match l
                    .state
                    .on_partition_change(Self::leader_and_isr(image), now_ms)
                {
                    Ok(moved) => moved,
                    Err(ReplicaStateError::StalePartitionEpoch { .. }) => None,
                    Err(e) => {
                        tracing::error!(topic = %self.topic, partition = self.index, "ignoring partition update: {e}");
                        None
                    }
                };
                let moved = if l.state.config() != cfg {
                    match l.state.set_config(cfg, now_ms) {
                        Ok(m) => m.or(moved),
                        Err(e) => {
                            tracing::error!(topic = %self.topic, partition = self.index, "ignoring replication config: {e}");
                            moved
                        }
                    }
                } else {
                    moved
                };
                if let Some(hw) = moved {
                    self.raise_high_watermark(hw);
                }
                drop(role);
                self.notify_state_change();
                return;
            }
        }
        let leo = {
            let g = self.lock();
            let Some(log) = g.as_ref() else { return };
            self.leader_epoch
                .fetch_max(image.leader_epoch, Ordering::AcqRel);
            self.accepts_leader_appends.store(true, Ordering::Release);
            let leo = log.log_end_offset();
            self.log_end_offset.send_replace(leo);
            leo
        };
        let hw = self.high_watermark().clamp(0, leo.max(0));
        match LeaderState::new(
            image.leader,
            Self::leader_and_isr(image),
            cfg,
            leo,
            hw,
            now_ms,
        ) {
            Ok(state) => {
                // The leader state starts from the local HW (never past the log end) and
                // only raises it.
                self.high_watermark.send_if_modified(|cur| {
                    let moved = *cur != hw;
                    *cur = hw;
                    moved
                });
                self.raise_high_watermark(state.high_watermark());
                self.generation.fetch_add(1, Ordering::AcqRel);
                *role = Role::Leader(Box::new(Leadership {
                    state,
                    unsent: None,
                    in_flight: false,
                    retry_at: None,
                }));
            }
            Err(e) => {
                // The controller never names a leader outside its ISR; refuse leadership
                // rather than replicate from a state we cannot trust.
                tracing::error!(topic = %self.topic, partition = self.index, "cannot become leader: {e}");
                {
                    let _log = self.lock();
                    self.accepts_leader_appends.store(false, Ordering::Release);
                }
                *role = Role::Follower {
                    leader_id: -1,
                    leader_epoch: image.leader_epoch,
                };
            }
        }
        drop(role);
        self.notify_state_change();
    }

    /// Becomes (or stays) a follower of `image.leader`. Returns true when the leader or the
    /// leader epoch changed: the fetcher must find the truncation point again.
    pub fn become_follower(&self, image: &PartitionImage) -> bool {
        let mut role = self.role();
        self.leader_id.store(image.leader, Ordering::Release);
        if let Role::Follower {
            leader_id,
            leader_epoch,
        } = &*role
        {
            if *leader_id == image.leader && *leader_epoch == image.leader_epoch {
                return false;
            }
        }
        self.reset_unknown_high_watermark(&role, image);
        {
            // Under the log lock: no leader append lands after this.
            let _log = self.lock();
            self.accepts_leader_appends.store(false, Ordering::Release);
            self.leader_epoch
                .fetch_max(image.leader_epoch, Ordering::AcqRel);
        }
        *role = Role::Follower {
            leader_id: image.leader,
            leader_epoch: image.leader_epoch,
        };
        drop(role);
        self.notify_state_change();
        true
    }

    /// Whether this broker takes produce and consumer fetches for the partition (the leader,
    /// or a partition no role was assigned to yet: a single node).
    pub fn is_leader(&self) -> bool {
        !matches!(*self.role(), Role::Follower { .. })
    }

    /// The leader named by the latest image, -1 if none was given.
    pub fn leader_id(&self) -> i32 {
        self.leader_id.load(Ordering::Acquire)
    }

    /// Appends batches a leader sent, keeping their offsets and leader epochs (the fetcher).
    /// Blocking. Refused unless this partition is a follower.
    pub fn append_as_follower(
        &self,
        batches: &mut [u8],
        now_ms: i64,
    ) -> Result<AppendInfo, PartitionError> {
        let mut g = self.lock();
        let log = g.as_mut().ok_or(PartitionError::NotHosted)?;
        if self.accepts_leader_appends.load(Ordering::Acquire) {
            return Err(PartitionError::NotLeaderOrFollower);
        }
        let info = log.append_as_follower(batches, now_ms)?;
        let leo = log.log_end_offset();
        let lso = log.log_start_offset();
        let flush_due = log.flush_due(now_ms);
        self.log_end_offset.send_replace(leo);
        drop(g);
        self.log_start_offset.send_replace(lso);
        if flush_due {
            self.flush_wanted.notify_one();
        }
        Ok(info)
    }

    /// A follower takes the leader's HW, capped at its own log end; it never moves back.
    pub fn update_follower_high_watermark(&self, leader_hw: i64) {
        let role = self.role();
        if !matches!(*role, Role::Follower { .. }) {
            return;
        }
        let hw = leader_hw.min(self.log_end_offset());
        self.raise_high_watermark(hw);
    }

    /// Follower truncation: removes every batch at or past `offset` (the point the leader
    /// gave through OffsetForLeaderEpoch or a diverging epoch). Blocking.
    pub fn truncate_to(&self, offset: i64) -> Result<(), PartitionError> {
        let _role = self.role();
        let mut g = self.lock();
        let log = g.as_mut().ok_or(PartitionError::NotHosted)?;
        if self.accepts_leader_appends.load(Ordering::Acquire) {
            // A leader's log only grows within its epoch.
            return Err(PartitionError::NotLeaderOrFollower);
        }
        log.truncate_to(offset)?;
        let leo = log.log_end_offset();
        self.log_end_offset.send_replace(leo);
        // Truncation below the HW is possible after an unclean election; the HW follows.
        self.high_watermark.send_if_modified(|hw| {
            let moved = *hw > leo;
            if moved {
                *hw = leo;
            }
            moved
        });
        self.durable.send_if_modified(|d| {
            let moved = *d > leo;
            if moved {
                *d = leo;
            }
            moved
        });
        Ok(())
    }

    /// Follower whose log end is below the leader's log start offset: drops the whole log and
    /// starts empty at `offset` (Kafka's `truncateFullyAndStartAt`). Blocking.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), PartitionError> {
        let _role = self.role();
        let mut g = self.lock();
        let log = g.as_mut().ok_or(PartitionError::NotHosted)?;
        if self.accepts_leader_appends.load(Ordering::Acquire) {
            return Err(PartitionError::NotLeaderOrFollower);
        }
        log.truncate_fully_and_start_at(offset)?;
        let leo = log.log_end_offset();
        let lso = log.log_start_offset();
        self.log_end_offset.send_replace(leo);
        self.log_start_offset.send_replace(lso);
        // Everything below the leader's log start is committed: the HW is the new log end.
        self.high_watermark.send_replace(leo);
        self.durable.send_replace(leo);
        Ok(())
    }

    /// The log end offset (the next offset to append).
    pub fn log_end_offset(&self) -> i64 {
        *self.log_end_offset.borrow()
    }

    /// A receiver that wakes whenever the log end offset moves (follower long-poll fetch).
    pub fn watch_log_end_offset(&self) -> watch::Receiver<i64> {
        self.log_end_offset.subscribe()
    }

    /// The newest leader epoch that wrote to the log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.with_log(|log| Ok(log.latest_epoch())).ok().flatten()
    }

    /// acks=all before the append: NOT_ENOUGH_REPLICAS while the ISR is below the effective
    /// min.insync.replicas; a follower answers NOT_LEADER_OR_FOLLOWER.
    pub fn check_enough_replicas(&self) -> Result<(), PartitionError> {
        match &*self.role() {
            Role::Unassigned => Ok(()),
            Role::Leader(l) => l
                .state
                .check_enough_replicas()
                .map_err(|_| PartitionError::NotEnoughReplicas),
            Role::Follower { .. } => Err(PartitionError::NotLeaderOrFollower),
        }
    }

    /// Where an acks=all produce of offsets below `required_offset` stands, for the leadership
    /// of `epoch`.
    fn acks_all_status(
        &self,
        epoch: i32,
        required_offset: i64,
    ) -> Result<AcksAllStatus, PartitionError> {
        let role = self.role();
        if self.lock().is_none() {
            return Err(PartitionError::NotHosted);
        }
        if self.leader_epoch() != epoch {
            // Leadership moved on since the append: the records may be truncated away.
            return Err(PartitionError::NotLeaderOrFollower);
        }
        match &*role {
            Role::Unassigned => Ok(if self.high_watermark() >= required_offset {
                AcksAllStatus::Committed
            } else {
                AcksAllStatus::Pending
            }),
            Role::Leader(l) => {
                let status = l.state.check_enough_replicas_reach_offset(required_offset);
                // The HW does not move while the ISR is below min.insync.replicas (KIP-966):
                // answer now rather than at the timeout.
                if status == AcksAllStatus::Pending && l.state.is_under_min_isr() {
                    return Ok(AcksAllStatus::NotEnoughReplicasAfterAppend);
                }
                Ok(status)
            }
            Role::Follower { .. } => Err(PartitionError::NotLeaderOrFollower),
        }
    }

    /// acks=all after the append: waits (parked on the HW, no thread blocked) until the HW is
    /// past `last_offset`. NotEnoughReplicasAfterAppend when the ISR falls below
    /// min.insync.replicas, NotLeaderOrFollower when the leadership is lost, RequestTimedOut
    /// after `timeout`.
    pub async fn wait_replicated(
        &self,
        last_offset: i64,
        timeout: Duration,
    ) -> Result<(), PartitionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let epoch = self.leader_epoch();
        let required = last_offset.saturating_add(1);
        let mut hw = self.high_watermark.subscribe();
        let mut changes = self.state_changes.subscribe();
        loop {
            // Marked before the check, so a change between the check and the wait wakes us.
            hw.mark_unchanged();
            changes.mark_unchanged();
            match self.acks_all_status(epoch, required)? {
                AcksAllStatus::Committed => return Ok(()),
                AcksAllStatus::NotEnoughReplicasAfterAppend => {
                    return Err(PartitionError::NotEnoughReplicasAfterAppend)
                }
                AcksAllStatus::Pending => {}
            }
            tokio::select! {
                r = hw.changed() => if r.is_err() { return Err(PartitionError::NotHosted) },
                r = changes.changed() => if r.is_err() { return Err(PartitionError::NotHosted) },
                _ = tokio::time::sleep_until(deadline) => return Err(PartitionError::RequestTimedOut),
            }
        }
    }

    /// Leader: records a follower's Fetch at `fetch_offset` (its log end) with its log start
    /// offset. May move the HW (releasing acks=all producers) and queue an ISR expansion;
    /// returns whether an AlterPartition is ready to send ([`Partition::take_alter_partition`]).
    pub fn on_follower_fetch(
        &self,
        replica_id: i32,
        fetch_offset: i64,
        log_start_offset: i64,
        now_ms: i64,
    ) -> Result<bool, FollowerFetchError> {
        let mut role = self.role();
        let Role::Leader(l) = &mut *role else {
            return Err(FollowerFetchError::NotLeader);
        };
        let leo = self.log_end_offset();
        let outcome =
            l.state
                .on_follower_fetch(replica_id, fetch_offset, log_start_offset, now_ms, leo)?;
        if let Some(hw) = outcome.new_high_watermark {
            self.raise_high_watermark(hw);
        }
        if let Some(p) = outcome.alter_partition {
            l.unsent = Some(p);
        }
        Ok(l.sendable())
    }

    /// Leader, from the ISR maintenance task: proposes removing followers that have not
    /// caught up within replica.lag.time.max.ms. Returns whether an AlterPartition is ready
    /// to send.
    pub fn maybe_shrink_isr(&self, now_ms: i64) -> bool {
        let mut role = self.role();
        let Role::Leader(l) = &mut *role else {
            return false;
        };
        if let Some(p) = l.state.maybe_shrink_isr(now_ms) {
            l.unsent = Some(p);
        }
        l.sendable()
    }

    /// Takes the AlterPartition to send, if any and none is in flight; the caller must answer
    /// with [`Partition::complete_alter_partition`].
    pub fn take_alter_partition(&self) -> Option<AlterPartitionTicket> {
        let mut role = self.role();
        let Role::Leader(l) = &mut *role else {
            return None;
        };
        if !l.sendable() {
            return None;
        }
        let proposal = l.unsent.take()?;
        l.in_flight = true;
        Some(AlterPartitionTicket {
            generation: self.generation.load(Ordering::Acquire),
            proposal,
        })
    }

    /// The controller's answer (or a transport failure, as a retriable rejection) to a
    /// ticket. A committed ISR may move the HW; a transient failure queues the proposal
    /// again; an answer for an older leadership is dropped.
    pub fn complete_alter_partition(
        &self,
        generation: u64,
        response: AlterPartitionResponse,
        now_ms: i64,
    ) {
        let mut role = self.role();
        let Role::Leader(l) = &mut *role else {
            return;
        };
        if generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        l.in_flight = false;
        l.retry_at = match response {
            AlterPartitionResponse::Accepted { .. } => None,
            AlterPartitionResponse::Rejected { .. } => {
                Some(std::time::Instant::now() + ALTER_PARTITION_RETRY_BACKOFF)
            }
        };
        match l.state.on_alter_partition_response(response, now_ms) {
            AlterPartitionResponseOutcome::Committed { new_high_watermark }
            | AlterPartitionResponseOutcome::Reverted { new_high_watermark } => {
                if let Some(hw) = new_high_watermark {
                    self.raise_high_watermark(hw);
                }
            }
            AlterPartitionResponseOutcome::Resend(p) => l.unsent = Some(p),
            AlterPartitionResponseOutcome::Ignored
            | AlterPartitionResponseOutcome::AwaitingMetadata => {}
        }
        drop(role);
        self.notify_state_change();
    }

    /// Leader: an AlterPartition is waiting to be sent (none in flight).
    pub fn has_unsent_alter_partition(&self) -> bool {
        match &*self.role() {
            Role::Leader(l) => l.unsent.is_some() && !l.in_flight,
            _ => false,
        }
    }

    /// Leader: how long until a queued AlterPartition may be sent (None when nothing waits or
    /// one is in flight).
    pub fn alter_partition_retry_delay(&self) -> Option<Duration> {
        match &*self.role() {
            Role::Leader(l) if l.unsent.is_some() && !l.in_flight => Some(
                l.retry_at
                    .map(|t| t.saturating_duration_since(std::time::Instant::now()))
                    .unwrap_or(Duration::ZERO),
            ),
            _ => None,
        }
    }

    /// Leader: brokers that are fenced or shutting down (from the image) never join the ISR.
    pub fn set_ineligible_replicas(&self, ineligible: BTreeSet<i32>) {
        if let Role::Leader(l) = &mut *self.role() {
            l.state.set_ineligible_replicas(ineligible);
        }
    }

    /// Leader: the committed ISR, for reporting (None when not the leader).
    pub fn leader_isr(&self) -> Option<Vec<i32>> {
        match &*self.role() {
            Role::Leader(l) => Some(l.state.isr().iter().copied().collect()),
            _ => None,
        }
    }

    /// The current leader epoch, written into every appended batch.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Adopts the leader epoch of a new metadata image (a leader change). Epochs only grow.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Kafka's `checkCurrentLeaderEpoch`: a request's current leader epoch must be ours;
    /// -1 means the requester does not check.
    pub fn check_current_leader_epoch(
        &self,
        current_leader_epoch: i32,
    ) -> Result<(), LeaderEpochError> {
        let ours = self.leader_epoch();
        match current_leader_epoch {
            -1 => Ok(()),
            requested if requested > ours => Err(LeaderEpochError::Unknown { requested, ours }),
            requested if requested < ours => Err(LeaderEpochError::Fenced { requested, ours }),
            _ => Ok(()),
        }
    }

    /// OffsetForLeaderEpoch for this partition (Kafka's `Partition.lastOffsetForLeaderEpoch`):
    /// after [`Partition::check_current_leader_epoch`], the largest epoch at or below
    /// `leader_epoch` and the offset where it ended, or `None` when undefined (answered as
    /// -1, -1).
    pub fn end_offset_for_leader_epoch(
        &self,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<Option<(i32, i64)>, LeaderEpochError> {
        self.check_current_leader_epoch(current_leader_epoch)?;
        Ok(self.with_log(|log| Ok(log.end_offset_for_epoch(leader_epoch)))?)
    }

    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn log_start_offset(&self) -> i64 {
        *self.log_start_offset.borrow()
    }

    /// A receiver that wakes whenever the high watermark moves (long-poll fetch).
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// Waits until every offset up to and including `offset` is fsynced.
    pub async fn wait_durable(&self, offset: i64) -> Result<(), PartitionError> {
        let mut rx = self.durable.subscribe();
        self.flush_wanted.notify_one();
        rx.wait_for(|d| *d > offset)
            .await
            .map(|_| ())
            .map_err(|_| PartitionError::NotHosted)
    }

    /// Plans a read under the lock; the caller executes it (positional reads) outside.
    pub fn read_plan(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadPlan, PartitionError> {
        let hw = self.high_watermark();
        self.with_log(|log| log.read_plan(offset, max_bytes, hw, min_one_batch))
    }

    /// The last stable offset: the HW, or the first offset of the earliest undecided
    /// transaction below it (what read_committed consumers may read up to).
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.with_log(|log| Ok(log.last_stable_offset(hw)))
            .unwrap_or(hw)
    }

    /// Plans a read_committed consumer's read: up to the last stable offset.
    pub fn read_plan_committed(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadPlan, PartitionError> {
        let hw = self.high_watermark();
        self.with_log(|log| {
            let lso = log.last_stable_offset(hw);
            log.read_plan(offset, max_bytes, lso, min_one_batch)
        })
    }

    /// The aborted transactions overlapping `start_offset..upper_bound_offset`.
    pub fn aborted_transactions(
        &self,
        start_offset: i64,
        upper_bound_offset: i64,
    ) -> Result<Vec<kavka_storage::AbortedTxn>, PartitionError> {
        self.with_log(|log| log.aborted_transactions(start_offset, upper_bound_offset))
    }

    /// Every producer this replica keeps state for, by producer id (DescribeProducers):
    /// epoch, last sequence and timestamp, coordinator epoch, open transaction.
    pub fn active_producers(
        &self,
    ) -> Result<Vec<(i64, kavka_storage::ProducerEntry)>, PartitionError> {
        self.with_log(|log| Ok(log.producer_state().clone_entries()))
    }

    /// Plans a follower's read: up to the log end offset, not the HW.
    pub fn read_plan_for_follower(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<ReadPlan, PartitionError> {
        self.with_log(|log| log.read_plan(offset, max_bytes, i64::MAX, min_one_batch))
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, PartitionError> {
        self.with_log(|log| log.offset_for_timestamp(ts))
    }

    pub fn max_timestamp_and_offset(&self) -> Result<Option<(i64, i64)>, PartitionError> {
        self.with_log(|log| Ok(log.max_timestamp_and_offset()))
    }

    /// DeleteRecords. Returns the new log start offset (the low watermark).
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, PartitionError> {
        let lso = self.with_log(|log| log.delete_records_before(offset))?;
        self.log_start_offset.send_replace(lso);
        Ok(lso)
    }

    pub fn update_config(&self, config: LogConfig) {
        let _ = self.with_log(|log| {
            log.update_config(config);
            Ok(())
        });
    }

    /// The log cleaner's snapshot of the cleanable segments below the high watermark
    /// (quick, under the lock).
    pub fn cleanable(&self, now_ms: i64) -> Result<Option<CleanableLog>, PartitionError> {
        let hw = self.high_watermark();
        self.with_log(|log| Ok(log.cleanable(now_ms, hw)))
    }

    /// The log was truncated (or is gone) since the cleaner took `snapshot`.
    pub fn changed_since(&self, snapshot: &CleanableLog) -> bool {
        self.with_log(|log| Ok(log.changed_since(snapshot)))
            .unwrap_or(true)
    }

    /// Swaps in segments the cleaner wrote outside the lock, one cleaned segment per lock
    /// acquisition (a rename and two directory fsyncs each), so produce and fetch wait at
    /// most for one. Blocking.
    pub fn swap_cleaned(&self, mut cleaned: CleanedLog) -> Result<SwapOutcome, PartitionError> {
        loop {
            if let Some(outcome) = self.with_log(|log| log.swap_cleaned_group(&mut cleaned))? {
                return Ok(outcome);
            }
        }
    }

    /// Periodic housekeeping: time-based roll and retention. Blocking.
    pub fn housekeeping(&self, now_ms: i64) -> Result<usize, PartitionError> {
        let (deleted, lso, due) = self.with_log(|log| {
            log.roll_if_due(now_ms)?;
            let deleted = log.apply_retention(now_ms)?;
            // Kafka fsyncs rolled segments in the background so the recovery point keeps
            // moving even when acks do not wait for fsync.
            let due = log.flush_due(now_ms) || log.rolled_segments_unflushed();
            log.checkpoint()?;
            Ok((deleted, log.log_start_offset(), due))
        })?;
        self.log_start_offset.send_replace(lso);
        if due {
            self.flush_wanted.notify_one();
        }
        Ok(deleted)
    }

    /// The flusher: fsyncs outside the lock whenever asked, and publishes how far the log is
    /// durable. Runs until the partition is closed.
    pub async fn run_flusher(self: Arc<Self>) {
        loop {
            self.flush_wanted.notified().await;
            loop {
                // Decide under the lock, so an append racing with this check is either in
                // the job or left for the next round, never marked durable unflushed.
                let job = {
                    let g = self.lock();
                    match g.as_ref() {
                        None => return,
                        Some(log) => log.flush_job().ok_or(log.log_end_offset()),
                    }
                };
                let job = match job {
                    Ok(job) => job,
                    Err(leo) => {
                        self.durable.send_if_modified(|d| {
                            let moved = *d < leo;
                            *d = (*d).max(leo);
                            moved
                        });
                        break;
                    }
                };
                let up_to = job.up_to_offset;
                let res = tokio::task::spawn_blocking(move || job.run()).await;
                match res {
                    Ok(Ok(())) => {
                        let _ = self.with_log(|log| {
                            log.complete_flush(up_to);
                            Ok(())
                        });
                        self.durable.send_if_modified(|d| {
                            let moved = *d < up_to;
                            *d = (*d).max(up_to);
                            moved
                        });
                    }
                    Ok(Err(e)) => {
                        // An fsync failure means the page cache may have dropped our data:
                        // Kafka halts the log dir. We stop acknowledging durable writes.
                        tracing::error!(topic = %self.topic, partition = self.index, "fsync failed: {e}; durable acks stop");
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
    }

    /// Takes the log out (clean close or delete); later calls see `NotHosted`.
    pub fn take_log(&self) -> Option<Log> {
        let log = self.lock().take();
        self.flush_wanted.notify_one();
        self.notify_state_change();
        log
    }
}

impl Partition {
    /// Wakes the flusher when flush.messages / flush.ms say so.
    pub fn flush_if_due(&self, now_ms: i64) {
        let due = self
            .with_log(|log| Ok(log.flush_due(now_ms) || log.rolled_segments_unflushed()))
            .unwrap_or(false);
        if due {
            self.flush_wanted.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::AlterPartitionResponse;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use kavka_protocol::record_batch;

    /// A producer's batch of two records (partition leader epoch -1).
    fn batch() -> BytesMut {
        let records: Vec<Record> = (0..2)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 1_000,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf
    }

    #[test]
    fn appends_under_the_leader_epoch_and_answers_offset_for_leader_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default(), 1_000).unwrap();
        let part = Partition::new("t".into(), Uuid::nil(), 0, log);
        assert_eq!(part.leader_epoch(), 0);
        part.append(&mut batch(), 1_000).unwrap();
        part.set_leader_epoch(3);
        part.set_leader_epoch(2); // never goes back
        assert_eq!(part.leader_epoch(), 3);
        part.append(&mut batch(), 1_000).unwrap();
        let stored = part
            .read_plan(0, usize::MAX, false)
            .unwrap()
            .execute()
            .unwrap();
        let epochs: Vec<i32> = record_batch::batches(&stored)
            .map(|r| r.unwrap().1.partition_leader_epoch)
            .collect();
        assert_eq!(epochs, vec![0, 3]);

        assert_eq!(
            part.end_offset_for_leader_epoch(-1, 0).unwrap(),
            Some((0, 2))
        );
        assert_eq!(
            part.end_offset_for_leader_epoch(3, 2).unwrap(),
            Some((0, 2))
        );
        assert_eq!(
            part.end_offset_for_leader_epoch(3, 3).unwrap(),
            Some((3, 4))
        );
        assert_eq!(part.end_offset_for_leader_epoch(3, 4).unwrap(), None);
        assert!(matches!(
            part.end_offset_for_leader_epoch(2, 0),
            Err(LeaderEpochError::Fenced {
                requested: 2,
                ours: 3
            })
        ));
        assert!(matches!(
            part.end_offset_for_leader_epoch(4, 0),
            Err(LeaderEpochError::Unknown {
                requested: 4,
                ours: 3
            })
        ));
        let log = part.take_log().unwrap();
        assert!(matches!(
            part.end_offset_for_leader_epoch(3, 3),
            Err(LeaderEpochError::Partition(PartitionError::NotHosted))
        ));
        log.close().unwrap();
    }

    fn open(dir: &tempfile::TempDir) -> Arc<Partition> {
        let log = Log::open(dir.path(), LogConfig::default(), 1_000).unwrap();
        Partition::new("t".into(), Uuid::nil(), 0, log)
    }

    fn image(
        replicas: &[i32],
        isr: &[i32],
        leader: i32,
        epoch: i32,
        pepoch: i32,
    ) -> PartitionImage {
        PartitionImage {
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: epoch,
            partition_epoch: pepoch,
        }
    }

    fn cfg(min_insync_replicas: i32) -> ReplicationConfig {
        ReplicationConfig {
            min_insync_replicas,
            replica_lag_time_max_ms: 10_000,
        }
    }

    /// A leader of replicas 1, 2, 3 (this broker is 1) with the given ISR, its log empty.
    fn leader_of_three(dir: &tempfile::TempDir, isr: &[i32], min_isr: i32) -> Arc<Partition> {
        let part = open(dir);
        part.become_leader(&image(&[1, 2, 3], isr, 1, 1, 1), cfg(min_isr), 1_000);
        assert!(part.is_leader());
        part
    }

    const LONG: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn a_single_node_commits_at_once_before_and_after_becoming_leader() {
        let dir = tempfile::tempdir().unwrap();
        let part = open(&dir);
        assert!(part.is_leader(), "no role yet: a single node leads");
        assert_eq!(part.leader_id(), -1);
        part.append(&mut batch(), 1_000).unwrap();
        assert_eq!(part.high_watermark(), 2);
        part.wait_replicated(1, Duration::ZERO).await.unwrap();

        part.become_leader(&image(&[1], &[1], 1, 0, 0), cfg(2), 1_000);
        assert_eq!(part.leader_id(), 1);
        assert_eq!(part.high_watermark(), 2, "a lone replica keeps its HW");
        part.check_enough_replicas().unwrap();
        let (info, _) = part.append(&mut batch(), 1_000).unwrap();
        assert_eq!(part.log_end_offset(), 4);
        assert_eq!(part.high_watermark(), 4, "HW = LEO after append");
        part.wait_replicated(info.last_offset, Duration::ZERO)
            .await
            .unwrap();
        part.take_log().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn a_follower_fetch_advancing_the_hw_releases_a_waiting_producer() {
        let dir = tempfile::tempdir().unwrap();
        let part = leader_of_three(&dir, &[1, 2, 3], 2);
        part.check_enough_replicas().unwrap();
        let (info, _) = part.append(&mut batch(), 1_000).unwrap();
        assert_eq!(info.last_offset, 1);
        assert_eq!(part.high_watermark(), 0, "followers have not fetched it");

        let mut wait = Box::pin(part.wait_replicated(info.last_offset, LONG));
        assert!(futures_util::FutureExt::now_or_never(&mut wait).is_none());
        // One follower is not enough: the HW waits for the whole ISR.
        assert!(!part.on_follower_fetch(2, 2, 0, 1_001).unwrap());
        assert_eq!(part.high_watermark(), 0);
        assert!(futures_util::FutureExt::now_or_never(&mut wait).is_none());
        assert!(!part.on_follower_fetch(3, 2, 0, 1_001).unwrap());
        assert_eq!(part.high_watermark(), 2);
        wait.await.unwrap();
        part.take_log().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn below_min_insync_replicas_acks_all_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let part = leader_of_three(&dir, &[1], 2);
        assert!(matches!(
            part.check_enough_replicas(),
            Err(PartitionError::NotEnoughReplicas)
        ));
        // acks=1 still appends, and the HW stays (KIP-966): an acks=all wait fails at once.
        let (info, _) = part.append(&mut batch(), 1_000).unwrap();
        assert!(matches!(
            part.wait_replicated(info.last_offset, LONG).await,
            Err(PartitionError::NotEnoughReplicasAfterAppend)
        ));
        part.take_log().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn a_batch_not_replicated_in_time_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let part = leader_of_three(&dir, &[1, 2, 3], 2);
        let (info, _) = part.append(&mut batch(), 1_000).unwrap();
        assert!(matches!(
            part.wait_replicated(info.last_offset, Duration::from_millis(20))
                .await,
            Err(PartitionError::RequestTimedOut)
        ));
        part.take_log().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn an_isr_shrinking_below_min_insync_fails_the_waiting_producer() {
        let dir = tempfile::tempdir().unwrap();
        let part = open(&dir);
        let lag0 = ReplicationConfig {
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 0,
        };
        part.become_leader(&image(&[1, 2], &[1, 2], 1, 1, 1), lag0, 1_000);
        let (info, _) = part.append(&mut batch(), 1_000).unwrap();
        let mut wait = Box::pin(part.wait_replicated(info.last_offset, LONG));
        assert!(futures_util::FutureExt::now_or_never(&mut wait).is_none());

        // Follower 2 never fetched: the expiration round proposes dropping it.
        assert!(part.maybe_shrink_isr(1_001));
        let ticket = part.take_alter_partition().unwrap();
        assert_eq!(ticket.proposal.new_isr, BTreeSet::from([1]));
        assert!(part.take_alter_partition().is_none(), "one in flight");
        part.complete_alter_partition(
            ticket.generation,
            AlterPartitionResponse::Accepted {
                proposal_id: ticket.proposal.id,
                leader_epoch: 1,
                partition_epoch: 2,
                isr: BTreeSet::from([1]),
            },
            1_002,
        );
        assert_eq!(part.leader_isr(), Some(vec![1]));
        assert!(matches!(
            wait.await,
            Err(PartitionError::NotEnoughReplicasAfterAppend)
        ));
        part.take_log().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn a_caught_up_follower_is_proposed_back_into_the_isr() {
        let dir = tempfile::tempdir().unwrap();
        let part = leader_of_three(&dir, &[1, 2], 1);
        part.append(&mut batch(), 1_000).unwrap();
        part.on_follower_fetch(2, 2, 0, 1_001).unwrap();
        assert_eq!(part.high_watermark(), 2);
        assert!(part.on_follower_fetch(3, 2, 0, 1_002).unwrap());
        let ticket = part.take_alter_partition().unwrap();
        assert_eq!(ticket.proposal.new_isr, BTreeSet::from([1, 2, 3]));
        // A transient failure queues the same proposal again.
        part.complete_alter_partition(
            ticket.generation,
            AlterPartitionResponse::Rejected {
                proposal_id: ticket.proposal.id,
                error: crate::replication::AlterPartitionError::Retriable,
            },
            1_003,
        );
        assert!(part.has_unsent_alter_partition());
        // ... after a pause: neither follower fetches nor the resend task flood the controller.
        assert!(part.take_alter_partition().is_none());
        assert!(!part.on_follower_fetch(3, 2, 0, 1_003).unwrap());
        assert!(part.alter_partition_retry_delay().unwrap() > Duration::ZERO);
        if let Role::Leader(l) = &mut *part.role() {
            l.retry_at = None; // the pause is over
        }
        assert_eq!(part.alter_partition_retry_delay(), Some(Duration::ZERO));
        let again = part.take_alter_partition().unwrap();
        assert_eq!(again.proposal, ticket.proposal);
        // An answer meant for an older leadership is dropped.
        part.become_follower(&image(&[1, 2, 3], &[2, 3], 2, 2, 2));
        part.become_leader(&image(&[1, 2, 3], &[1, 2], 1, 3, 3), cfg(1), 1_004);
        part.complete_alter_partition(
            again.generation,
            AlterPartitionResponse::Rejected {
                proposal_id: again.proposal.id,
                error: crate::replication::AlterPartitionError::Retriable,
            },
            1_005,
        );
        assert!(!part.has_unsent_alter_partition());
        part.take_log().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn losing_the_leadership_fails_waiting_producers_and_refuses_appends() {
        let dir = tempfile::tempdir().unwrap();
        let part = leader_of_three(&dir, &[1, 2, 3], 2);
        let (info, _) = part.append(&mut batch(), 1_000).unwrap();
        let mut wait = Box::pin(part.wait_replicated(info.last_offset, LONG));
        assert!(futures_util::FutureExt::now_or_never(&mut wait).is_none());

        assert!(part.become_follower(&image(&[1, 2, 3], &[2, 3], 2, 2, 2)));
        assert!(!part.is_leader());
        assert_eq!(part.leader_id(), 2);
        assert_eq!(part.leader_epoch(), 2);
        assert!(matches!(
            wait.await,
            Err(PartitionError::NotLeaderOrFollower)
        ));
        assert!(matches!(
            part.append(&mut batch(), 1_000),
            Err(PartitionError::NotLeaderOrFollower)
        ));
        assert!(matches!(
            part.check_enough_replicas(),
            Err(PartitionError::NotLeaderOrFollower)
        ));
        assert!(matches!(
            part.on_follower_fetch(3, 0, 0, 1_000),
            Err(FollowerFetchError::NotLeader)
        ));
        // The same image again changes nothing; a new epoch or leader does.
        assert!(!part.become_follower(&image(&[1, 2, 3], &[2, 3], 2, 2, 2)));
        assert!(part.become_follower(&image(&[1, 2, 3], &[2, 3], 3, 3, 3)));
        part.take_log().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn a_follower_appends_the_leaders_batches_and_takes_its_hw() {
        let leader_dir = tempfile::tempdir().unwrap();
        let leader = leader_of_three(&leader_dir, &[1, 2, 3], 1);
        leader.append(&mut batch(), 1_000).unwrap();
        leader.append(&mut batch(), 1_000).unwrap();
        let mut fetched = leader
            .read_plan_for_follower(0, usize::MAX, false)
            .unwrap()
            .execute()
            .unwrap()
            .to_vec();
        assert!(
            leader.read_plan(0, usize::MAX, false).unwrap().is_empty(),
            "consumers stop at the HW"
        );

        let dir = tempfile::tempdir().unwrap();
        let part = open(&dir);
        assert!(part.become_follower(&image(&[1, 2, 3], &[1, 2, 3], 1, 1, 1)));
        assert_eq!(
            part.high_watermark(),
            0,
            "a replicated log's HW is unknown at open"
        );
        assert!(matches!(part.check_current_leader_epoch(1), Ok(())));
        let mut leo = part.watch_log_end_offset();
        leo.mark_unchanged();
        let info = part.append_as_follower(&mut fetched, 1_000).unwrap();
        assert_eq!((info.first_offset, info.last_offset), (0, 3));
        assert!(leo.has_changed().unwrap());
        assert_eq!(part.log_end_offset(), 4);
        assert_eq!(part.latest_epoch(), Some(1));

        part.update_follower_high_watermark(9);
        assert_eq!(part.high_watermark(), 4, "capped at the follower's log end");
        part.update_follower_high_watermark(1);
        assert_eq!(part.high_watermark(), 4, "never moves back");

        part.truncate_to(2).unwrap();
        assert_eq!(part.log_end_offset(), 2);
        assert_eq!(part.high_watermark(), 2);

        // As the leader again, it neither truncates nor takes follower appends.
        part.become_leader(&image(&[1, 2, 3], &[2, 3], 2, 2, 2), cfg(1), 1_000);
        assert!(matches!(
            part.truncate_to(0),
            Err(PartitionError::NotLeaderOrFollower)
        ));
        assert!(matches!(
            part.append_as_follower(&mut batch(), 1_000),
            Err(PartitionError::NotLeaderOrFollower)
        ));
        part.take_log().unwrap().close().unwrap();
        leader.take_log().unwrap().close().unwrap();
    }
}
