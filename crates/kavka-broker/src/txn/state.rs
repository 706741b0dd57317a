//! One transactional id's state and its transitions (Kafka's `TransactionMetadata` and
//! `TransactionState`). Pure: time and new producer ids are passed in, nothing is written.
//!
//! A transition is prepared here as a [`Transit`] (Kafka's `TxnTransitMetadata`), written to
//! `__transaction_state` by the coordinator, and only then applied with
//! [`TxnMetadata::complete_transition`]. While the write is in flight the metadata carries
//! it as `pending`, and every other request for the id hears CONCURRENT_TRANSACTIONS; a
//! failed write clears `pending` and leaves the state as it was.

use kavka_protocol::error::ErrorCode;
use std::collections::BTreeSet;

/// Kafka's `RecordBatch.NO_PRODUCER_ID` / `NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// Kafka's `TransactionState`, with its wire ids (the log's `transaction_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    /// In memory only: an Ongoing transaction being aborted because its producer was
    /// fenced (never written to the log; the write is the PrepareAbort that follows).
    PrepareEpochFence,
}

pub const ALL_STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        ALL_STATES.into_iter().find(|s| s.id() == id)
    }

    /// As Kafka prints it (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Kafka's `TransactionState.fromName`: exact names only.
    pub fn from_name(name: &str) -> Option<TxnState> {
        ALL_STATES.into_iter().find(|s| s.name() == name)
    }

    /// Kafka's `validPreviousStates`.
    pub fn valid_previous(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteAbort, CompleteCommit],
            PrepareEpochFence => &[Ongoing],
        }
    }

    pub fn can_transition_to(self, next: TxnState) -> bool {
        next.valid_previous().contains(&self)
    }

    /// Decided and being completed: markers are (to be) written.
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }

    /// No transaction in progress.
    pub fn is_idle(self) -> bool {
        matches!(
            self,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        )
    }
}

/// Why a transactional request is refused; [`TxnError::code`] is what the client hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("this broker is not the coordinator of the transactional id")]
    NotCoordinator,
    #[error("the coordinator is loading the transactional id's partition")]
    LoadInProgress,
    #[error("the coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("the producer id is not the one of the transactional id")]
    InvalidProducerIdMapping,
    #[error("a newer producer with the same transactional id fenced this one")]
    ProducerFenced,
    #[error("another operation on the transaction is in progress")]
    ConcurrentTransactions,
    #[error("the transaction is not in a state allowing the operation")]
    InvalidTxnState,
    #[error("the transaction timeout exceeds transaction.max.timeout.ms or is not positive")]
    InvalidTransactionTimeout,
    #[error("unknown transactional id")]
    TransactionalIdNotFound,
    #[error("invalid request")]
    InvalidRequest,
    #[error("the transaction state could not be written")]
    UnknownServerError,
}

impl TxnError {
    pub fn code(self) -> ErrorCode {
        match self {
            TxnError::NotCoordinator => ErrorCode::NotCoordinator,
            TxnError::LoadInProgress => ErrorCode::CoordinatorLoadInProgress,
            TxnError::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
            TxnError::InvalidProducerIdMapping => ErrorCode::InvalidProducerIdMapping,
            TxnError::ProducerFenced => ErrorCode::ProducerFenced,
            TxnError::ConcurrentTransactions => ErrorCode::ConcurrentTransactions,
            TxnError::InvalidTxnState => ErrorCode::InvalidTxnState,
            TxnError::InvalidTransactionTimeout => ErrorCode::InvalidTransactionTimeout,
            TxnError::TransactionalIdNotFound => ErrorCode::TransactionalIdNotFound,
            TxnError::InvalidRequest => ErrorCode::InvalidRequest,
            TxnError::UnknownServerError => ErrorCode::UnknownServerError,
        }
    }
}

/// A topic partition of a transaction.
pub type TopicPartition = (String, i32);

/// A prepared transition (Kafka's `TxnTransitMetadata`): what is written to the log and,
/// once written, becomes the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transit {
    pub producer_id: i64,
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub start_timestamp: i64,
    pub last_update_timestamp: i64,
    /// An abort that fences the producer (InitProducerId over an Ongoing transaction, or its
    /// timeout): the epoch was bumped for it.
    pub fences: bool,
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last rotation (epoch exhaustion); in memory only.
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, for KIP-360 retries; in memory only.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    /// When the current transaction started (first partition added); -1 when none.
    pub start_timestamp: i64,
    pub last_update_timestamp: i64,
    /// The transition being written, if any.
    pub pending: Option<TxnState>,
    /// Where the timeout clock of an Ongoing transaction starts: its start, or, for one
    /// found while loading the log, its last update (the coordinator was away meanwhile).
    pub timeout_base: i64,
}

/// What InitProducerId decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitPlan {
    /// Write this (state Empty) and answer with its producer id and epoch.
    Init(Transit),
    /// Abort the Ongoing transaction with a bumped epoch (write this PrepareAbort, then its
    /// markers), and answer CONCURRENT_TRANSACTIONS so the client retries.
    FenceAndAbort(Transit),
}

/// What EndTxn decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndPlan {
    /// A retry of an EndTxn that completed already: success, nothing to write.
    AlreadyDone,
    /// Write this PrepareCommit/PrepareAbort, then the markers.
    Prepare(Transit),
}

impl TxnMetadata {
    /// A transactional id seen for the first time: epoch -1 until its first InitProducerId
    /// is written (Kafka keeps it so, and the first bump makes it 0).
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            last_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_timestamp: -1,
            last_update_timestamp: now,
            pending: None,
            timeout_base: -1,
        }
    }

    /// As loaded from the log: what a write of `t` left.
    pub fn from_log(transactional_id: &str, t: &Transit) -> Self {
        let mut m = TxnMetadata::new(transactional_id, t.producer_id, t.timeout_ms, 0);
        m.apply(t);
        m
    }

    /// Kafka's `isProducerEpochExhausted`: the last epochs are kept for fencing bumps.
    pub fn is_epoch_exhausted(&self) -> bool {
        is_epoch_exhausted(self.producer_epoch)
    }

    fn transit(&self, state: TxnState) -> Transit {
        Transit {
            producer_id: self.producer_id,
            last_producer_id: self.last_producer_id,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: self.last_producer_epoch,
            timeout_ms: self.timeout_ms,
            state,
            partitions: self.partitions.clone(),
            start_timestamp: self.start_timestamp,
            last_update_timestamp: self.last_update_timestamp,
            fences: false,
        }
    }

    /// InitProducerId with this transactional id (Kafka's `prepareInitProducerIdTransit`).
    /// `expected` is the KIP-360 producer id and epoch of a re-initialising client;
    /// `new_producer_id` is called only when the epoch is exhausted.
    pub fn prepare_init(
        &self,
        expected: Option<(i64, i16)>,
        timeout_ms: i32,
        now: i64,
        new_producer_id: impl FnOnce() -> Result<i64, TxnError>,
    ) -> Result<InitPlan, TxnError> {
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if let Some((pid, epoch)) = expected {
            // Fenced unless: the metadata is fresh, the id is the current one (the epoch is
            // checked below), or it is the previous one at an exhausted epoch (a retry of
            // the rotation whose answer was lost).
            let valid = self.producer_epoch == NO_PRODUCER_EPOCH
                || pid == self.producer_id
                || (pid == self.last_producer_id && is_epoch_exhausted(epoch));
            if !valid {
                return Err(TxnError::ProducerFenced);
            }
        }
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let expected_epoch = expected.map(|(_, e)| e);
                if self.is_epoch_exhausted()
                    && expected_epoch.is_none_or(|e| e == self.producer_epoch)
                {
                    let pid = new_producer_id()?;
                    let mut t = self.transit(TxnState::Empty);
                    t.last_producer_id = self.producer_id;
                    t.last_producer_epoch = if expected.is_some() {
                        self.producer_epoch
                    } else {
                        NO_PRODUCER_EPOCH
                    };
                    t.producer_id = pid;
                    t.producer_epoch = 0;
                    t.timeout_ms = timeout_ms;
                    t.partitions.clear();
                    t.start_timestamp = -1;
                    t.last_update_timestamp = now;
                    return Ok(InitPlan::Init(t));
                }
                let (epoch, last_epoch) = match expected_epoch {
                    None => (self.bumped_epoch()?, NO_PRODUCER_EPOCH),
                    Some(e)
                        if self.producer_epoch == NO_PRODUCER_EPOCH || e == self.producer_epoch =>
                    {
                        (self.bumped_epoch()?, self.producer_epoch)
                    }
                    // A retry of a bump that succeeded: the same answer again.
                    Some(e) if e == self.last_producer_epoch => {
                        (self.producer_epoch, self.last_producer_epoch)
                    }
                    Some(_) => return Err(TxnError::ProducerFenced),
                };
                let mut t = self.transit(TxnState::Empty);
                t.producer_epoch = epoch;
                t.last_producer_epoch = last_epoch;
                t.timeout_ms = timeout_ms;
                t.partitions.clear();
                t.start_timestamp = -1;
                t.last_update_timestamp = now;
                Ok(InitPlan::Init(t))
            }
            TxnState::Ongoing => Ok(InitPlan::FenceAndAbort(self.prepare_fence_abort(now)?)),
            TxnState::Dead | TxnState::PrepareEpochFence => {
                debug_assert!(false, "{:?} is never a resting state", self.state);
                Err(TxnError::ConcurrentTransactions)
            }
        }
    }

    fn bumped_epoch(&self) -> Result<i16, TxnError> {
        // Exhaustion is handled by rotation before we get here; a request that asked for an
        // older epoch of an exhausted producer is a zombie.
        if self.is_epoch_exhausted() {
            return Err(TxnError::ProducerFenced);
        }
        Ok(self.producer_epoch + 1)
    }

    /// Abort the Ongoing transaction with the epoch bumped, fencing its producer (Kafka's
    /// `prepareFenceProducerEpoch` followed by the PrepareAbort of `endTransaction`): used by
    /// InitProducerId over an Ongoing transaction and by the timeout.
    pub fn prepare_fence_abort(&self, now: i64) -> Result<Transit, TxnError> {
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if self.state != TxnState::Ongoing {
            return Err(TxnError::InvalidTxnState);
        }
        if self.producer_epoch == i16::MAX {
            // Unreachable: exhaustion rotates the producer id two epochs earlier.
            return Err(TxnError::UnknownServerError);
        }
        // The memory keeps the old epoch until the write is acknowledged (unlike Kafka,
        // which bumps it first and remembers a failed fence), so a retry after a failed
        // write bumps from the same epoch to the same value.
        let epoch = self.producer_epoch + 1;
        let mut t = self.transit(TxnState::PrepareAbort);
        t.producer_epoch = epoch;
        t.last_producer_epoch = NO_PRODUCER_EPOCH;
        t.last_update_timestamp = now;
        t.fences = true;
        Ok(t)
    }

    /// The checks every AddPartitionsToTxn / AddOffsetsToTxn / verification starts with.
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if self.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if self.producer_epoch != producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// AddPartitionsToTxn (Kafka's `handleAddPartitionsToTransaction`): `None` when every
    /// partition is in the Ongoing transaction already (nothing to write).
    pub fn prepare_add_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &BTreeSet<TopicPartition>,
        now: i64,
    ) -> Result<Option<Transit>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some() || self.state.is_prepare() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if self.state == TxnState::Ongoing && partitions.is_subset(&self.partitions) {
            return Ok(None);
        }
        if !self.state.can_transition_to(TxnState::Ongoing) {
            return Err(TxnError::InvalidTxnState);
        }
        let mut t = self.transit(TxnState::Ongoing);
        if self.state.is_idle() {
            t.start_timestamp = now;
        }
        t.partitions.extend(partitions.iter().cloned());
        t.last_update_timestamp = now;
        Ok(Some(t))
    }

    /// AddPartitionsToTxn v4+ verify-only (KIP-890): which of `partitions` the Ongoing
    /// transaction has. An error applies to every partition.
    pub fn verify_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Vec<bool>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        if self.pending.is_some() || self.state.is_prepare() {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| self.state == TxnState::Ongoing && self.partitions.contains(p))
            .collect())
    }

    /// EndTxn from the client (Kafka's `endTransaction` with isFromClient).
    pub fn prepare_end(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<EndPlan, TxnError> {
        if self.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let next = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                let mut t = self.transit(next);
                t.last_update_timestamp = now;
                Ok(EndPlan::Prepare(t))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndPlan::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// After the markers: CompleteCommit / CompleteAbort, the partitions cleared (Kafka's
    /// `prepareComplete`).
    pub fn prepare_complete(&self, now: i64) -> Result<Transit, TxnError> {
        let next = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return Err(TxnError::InvalidTxnState),
        };
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let mut t = self.transit(next);
        t.partitions.clear();
        t.last_update_timestamp = now;
        Ok(t)
    }

    /// transactional.id.expiration.ms: an idle id is removed (Kafka's `prepareDead`).
    pub fn prepare_dead(&self, now: i64) -> Result<Transit, TxnError> {
        if self.pending.is_some() {
            return Err(TxnError::ConcurrentTransactions);
        }
        if !self.state.can_transition_to(TxnState::Dead) {
            return Err(TxnError::InvalidTxnState);
        }
        let mut t = self.transit(TxnState::Dead);
        t.partitions.clear();
        t.last_update_timestamp = now;
        Ok(t)
    }

    /// Applies a written transition (Kafka's `completeTransitionTo`). Refuses a transition
    /// the state machine does not allow, leaving the metadata as it was.
    pub fn complete_transition(&mut self, t: &Transit) -> Result<(), TxnError> {
        if !self.state.can_transition_to(t.state) {
            debug_assert!(
                false,
                "illegal transition {:?} -> {:?}",
                self.state, t.state
            );
            return Err(TxnError::InvalidTxnState);
        }
        self.apply(t);
        self.pending = None;
        Ok(())
    }

    /// A write of `t` failed: nothing changes (the retry prepares it afresh).
    pub fn abort_transition(&mut self, t: &Transit) {
        debug_assert_eq!(self.pending, Some(t.state));
        self.pending = None;
    }

    fn apply(&mut self, t: &Transit) {
        if t.state == TxnState::Ongoing && self.state != TxnState::Ongoing {
            self.timeout_base = t.start_timestamp;
        }
        self.producer_id = t.producer_id;
        self.last_producer_id = t.last_producer_id;
        self.producer_epoch = t.producer_epoch;
        self.last_producer_epoch = t.last_producer_epoch;
        self.timeout_ms = t.timeout_ms;
        self.state = t.state;
        self.partitions = t.partitions.clone();
        self.start_timestamp = t.start_timestamp;
        self.last_update_timestamp = t.last_update_timestamp;
        if self.state != TxnState::Ongoing {
            self.timeout_base = -1;
        }
    }

    /// An Ongoing transaction past its timeout (Kafka's `timedOutTransactions`).
    pub fn is_timed_out(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.pending.is_none()
            && self.timeout_base.saturating_add(i64::from(self.timeout_ms)) < now
    }

    /// An idle id past transactional.id.expiration.ms.
    pub fn is_expired(&self, now: i64, expiration_ms: i64) -> bool {
        self.state.is_idle()
            && self.pending.is_none()
            && self.last_update_timestamp.saturating_add(expiration_ms) <= now
    }
}

/// Kafka's `TransactionMetadata.isEpochExhausted`.
pub fn is_epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    fn set(ps: &[TopicPartition]) -> BTreeSet<TopicPartition> {
        ps.iter().cloned().collect()
    }

    fn no_pid() -> Result<i64, TxnError> {
        panic!("no new producer id expected")
    }

    /// A fresh id, initialised once: epoch 0, Empty.
    fn inited() -> TxnMetadata {
        let mut m = TxnMetadata::new("t", 7, 60_000, 0);
        let InitPlan::Init(t) = m.prepare_init(None, 60_000, 1, no_pid).unwrap() else {
            panic!("init expected")
        };
        assert_eq!((t.producer_id, t.producer_epoch), (7, 0));
        m.complete_transition(&t).unwrap();
        m
    }

    fn ongoing() -> TxnMetadata {
        let mut m = inited();
        let t = m
            .prepare_add_partitions(7, 0, &set(&[tp("a", 0)]), 10)
            .unwrap()
            .unwrap();
        m.complete_transition(&t).unwrap();
        m
    }

    #[test]
    fn state_ids_and_names_round_trip() {
        for s in ALL_STATES {
            assert_eq!(TxnState::from_id(s.id()), Some(s));
            assert_eq!(TxnState::from_name(s.name()), Some(s));
        }
        assert_eq!(TxnState::from_id(8), None);
        assert_eq!(TxnState::from_name("ongoing"), None);
        assert_eq!(TxnState::CompleteCommit.name(), "CompleteCommit");
    }

    #[test]
    fn transition_table_matches_kafka() {
        use TxnState::*;
        let legal: &[(TxnState, TxnState)] = &[
            (Empty, Empty),
            (CompleteCommit, Empty),
            (CompleteAbort, Empty),
            (Ongoing, Ongoing),
            (Empty, Ongoing),
            (CompleteCommit, Ongoing),
            (CompleteAbort, Ongoing),
            (Ongoing, PrepareCommit),
            (Ongoing, PrepareAbort),
            (PrepareEpochFence, PrepareAbort),
            (PrepareCommit, CompleteCommit),
            (PrepareAbort, CompleteAbort),
            (Empty, Dead),
            (CompleteAbort, Dead),
            (CompleteCommit, Dead),
            (Ongoing, PrepareEpochFence),
        ];
        for from in ALL_STATES {
            for to in ALL_STATES {
                assert_eq!(
                    from.can_transition_to(to),
                    legal.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
    }

    #[test]
    fn first_init_gets_epoch_zero_then_bumps() {
        let mut m = inited();
        assert_eq!(m.state, TxnState::Empty);
        let InitPlan::Init(t) = m.prepare_init(None, 30_000, 2, no_pid).unwrap() else {
            panic!()
        };
        assert_eq!(
            (t.producer_id, t.producer_epoch, t.timeout_ms),
            (7, 1, 30_000)
        );
        m.complete_transition(&t).unwrap();
        assert_eq!(m.producer_epoch, 1);
    }

    #[test]
    fn kip360_reinit_with_current_epoch_bumps_and_retry_gets_same_answer() {
        let mut m = inited();
        let InitPlan::Init(t) = m.prepare_init(Some((7, 0)), 60_000, 2, no_pid).unwrap() else {
            panic!()
        };
        assert_eq!((t.producer_epoch, t.last_producer_epoch), (1, 0));
        m.complete_transition(&t).unwrap();
        // The answer got lost; the client asks again with epoch 0.
        let InitPlan::Init(t) = m.prepare_init(Some((7, 0)), 60_000, 3, no_pid).unwrap() else {
            panic!()
        };
        assert_eq!(t.producer_epoch, 1);
        // An unrelated epoch is a zombie; an unrelated producer id too.
        assert_eq!(
            m.prepare_init(Some((7, 5)), 60_000, 3, no_pid),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            m.prepare_init(Some((99, 1)), 60_000, 3, no_pid),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn init_over_ongoing_fences_and_aborts() {
        let m = ongoing();
        let InitPlan::FenceAndAbort(t) = m.prepare_init(None, 60_000, 20, no_pid).unwrap() else {
            panic!("fence expected")
        };
        assert_eq!(t.state, TxnState::PrepareAbort);
        assert_eq!(t.producer_epoch, 1);
        assert_eq!(t.partitions, set(&[tp("a", 0)]));
        assert!(t.fences);
        // The old producer is fenced once the write is applied.
        let mut m2 = m.clone();
        m2.complete_transition(&t).unwrap();
        assert_eq!(
            m2.prepare_end(7, 0, true, 21),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            m2.prepare_add_partitions(7, 0, &set(&[tp("b", 0)]), 21),
            Err(TxnError::ProducerFenced)
        );
        // A failed fencing write changes nothing; the retry bumps to the same epoch.
        let mut m3 = m.clone();
        m3.pending = Some(t.state);
        m3.abort_transition(&t);
        assert_eq!(m3.state, TxnState::Ongoing);
        assert_eq!(m3.producer_epoch, 0);
        assert_eq!(m3.prepare_fence_abort(22).unwrap().producer_epoch, 1);
    }

    #[test]
    fn init_while_preparing_is_concurrent() {
        let mut m = ongoing();
        let EndPlan::Prepare(t) = m.prepare_end(7, 0, true, 20).unwrap() else {
            panic!()
        };
        m.complete_transition(&t).unwrap();
        assert_eq!(
            m.prepare_init(None, 60_000, 21, no_pid),
            Err(TxnError::ConcurrentTransactions)
        );
        m.pending = Some(TxnState::CompleteCommit);
        assert_eq!(
            m.prepare_init(None, 60_000, 21, no_pid),
            Err(TxnError::ConcurrentTransactions)
        );
    }

    #[test]
    fn epoch_exhaustion_rotates_producer_id() {
        let mut m = inited();
        m.producer_epoch = i16::MAX - 1;
        assert!(m.is_epoch_exhausted());
        let InitPlan::Init(t) = m.prepare_init(None, 60_000, 5, || Ok(42)).unwrap() else {
            panic!()
        };
        assert_eq!((t.producer_id, t.producer_epoch), (42, 0));
        assert_eq!(t.last_producer_id, 7);
        m.complete_transition(&t).unwrap();
        // A zombie with an old epoch of the rotated-away id is fenced.
        assert_eq!(
            m.prepare_init(Some((7, 3)), 60_000, 6, no_pid),
            Err(TxnError::ProducerFenced)
        );
        // KIP-360 re-init with the exhausted epoch: rotation too.
        let mut m = inited();
        m.producer_epoch = i16::MAX - 1;
        let InitPlan::Init(t) = m
            .prepare_init(Some((7, i16::MAX - 1)), 60_000, 5, || Ok(43))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (t.producer_id, t.producer_epoch, t.last_producer_epoch),
            (43, 0, i16::MAX - 1)
        );
        // An exhausted epoch asked with an older expected epoch: a zombie, no panic.
        let mut m = inited();
        m.producer_epoch = i16::MAX;
        assert_eq!(
            m.prepare_init(Some((7, 3)), 60_000, 6, no_pid),
            Err(TxnError::ProducerFenced)
        );
        // Fencing at the second-to-last epoch still works (uses the last one).
        let mut m = ongoing();
        m.producer_epoch = i16::MAX - 1;
        assert_eq!(m.prepare_fence_abort(9).unwrap().producer_epoch, i16::MAX);
    }

    #[test]
    fn add_partitions_rules() {
        let m = inited();
        assert_eq!(
            m.prepare_add_partitions(8, 0, &set(&[tp("a", 0)]), 5),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            m.prepare_add_partitions(7, 1, &set(&[tp("a", 0)]), 5),
            Err(TxnError::ProducerFenced)
        );
        let t = m
            .prepare_add_partitions(7, 0, &set(&[tp("a", 0)]), 5)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.state, t.start_timestamp, t.last_update_timestamp),
            (TxnState::Ongoing, 5, 5)
        );
        let mut m = m;
        m.complete_transition(&t).unwrap();
        // Already there: nothing to write.
        assert_eq!(
            m.prepare_add_partitions(7, 0, &set(&[tp("a", 0)]), 6),
            Ok(None)
        );
        // More: the start stays.
        let t = m
            .prepare_add_partitions(7, 0, &set(&[tp("b", 1)]), 9)
            .unwrap()
            .unwrap();
        assert_eq!(t.start_timestamp, 5);
        assert_eq!(t.partitions, set(&[tp("a", 0), tp("b", 1)]));
        m.pending = Some(TxnState::Ongoing);
        assert_eq!(
            m.prepare_add_partitions(7, 0, &set(&[tp("c", 0)]), 9),
            Err(TxnError::ConcurrentTransactions)
        );
    }

    #[test]
    fn verify_only_reports_membership() {
        let m = ongoing();
        assert_eq!(
            m.verify_partitions(7, 0, &[tp("a", 0), tp("b", 0)]),
            Ok(vec![true, false])
        );
        assert_eq!(
            m.verify_partitions(7, 1, &[tp("a", 0)]),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            inited().verify_partitions(7, 0, &[tp("a", 0)]),
            Ok(vec![false])
        );
    }

    #[test]
    fn end_txn_commit_path_and_retries() {
        let mut m = ongoing();
        assert_eq!(
            m.prepare_end(8, 0, true, 20),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(m.prepare_end(7, 1, true, 20), Err(TxnError::ProducerFenced));
        let EndPlan::Prepare(t) = m.prepare_end(7, 0, true, 20).unwrap() else {
            panic!()
        };
        assert_eq!(t.state, TxnState::PrepareCommit);
        m.complete_transition(&t).unwrap();
        assert_eq!(
            m.prepare_end(7, 0, true, 21),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            m.prepare_end(7, 0, false, 21),
            Err(TxnError::InvalidTxnState)
        );
        assert_eq!(
            m.prepare_add_partitions(7, 0, &set(&[tp("a", 0)]), 21),
            Err(TxnError::ConcurrentTransactions)
        );
        let t = m.prepare_complete(22).unwrap();
        assert_eq!(t.state, TxnState::CompleteCommit);
        assert!(t.partitions.is_empty());
        m.complete_transition(&t).unwrap();
        assert_eq!(m.prepare_end(7, 0, true, 23), Ok(EndPlan::AlreadyDone));
        assert_eq!(
            m.prepare_end(7, 0, false, 23),
            Err(TxnError::InvalidTxnState)
        );
        // A new transaction starts anew.
        let t = m
            .prepare_add_partitions(7, 0, &set(&[tp("z", 0)]), 30)
            .unwrap()
            .unwrap();
        assert_eq!(t.start_timestamp, 30);
    }

    #[test]
    fn end_txn_abort_and_invalid_states() {
        let m = inited();
        assert_eq!(m.prepare_end(7, 0, true, 5), Err(TxnError::InvalidTxnState));
        assert_eq!(
            m.prepare_end(7, 0, false, 5),
            Err(TxnError::InvalidTxnState)
        );
        let mut m = ongoing();
        let EndPlan::Prepare(t) = m.prepare_end(7, 0, false, 20).unwrap() else {
            panic!()
        };
        m.complete_transition(&t).unwrap();
        assert_eq!(
            m.prepare_end(7, 0, false, 21),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            m.prepare_end(7, 0, true, 21),
            Err(TxnError::InvalidTxnState)
        );
        let t = m.prepare_complete(22).unwrap();
        m.complete_transition(&t).unwrap();
        assert_eq!(m.state, TxnState::CompleteAbort);
        assert_eq!(m.prepare_end(7, 0, false, 23), Ok(EndPlan::AlreadyDone));
        assert_eq!(m.prepare_complete(24), Err(TxnError::InvalidTxnState));
    }

    #[test]
    fn illegal_transition_is_refused() {
        let mut m = inited();
        let mut t = m.transit(TxnState::CompleteCommit);
        t.last_update_timestamp = 3;
        let before = m.clone();
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.complete_transition(&t)));
        // debug builds assert; release builds refuse and keep the state.
        if let Ok(r) = r {
            assert_eq!(r, Err(TxnError::InvalidTxnState));
            assert_eq!(m, before);
        }
    }

    #[test]
    fn timeouts_and_expiry() {
        let m = ongoing();
        assert_eq!(m.timeout_base, 10);
        assert!(!m.is_timed_out(10 + 60_000));
        assert!(m.is_timed_out(10 + 60_001));
        assert!(!inited().is_timed_out(i64::MAX));
        let m = inited();
        assert!(m.is_expired(1 + 100, 100));
        assert!(!m.is_expired(1 + 99, 100));
        assert!(!ongoing().is_expired(i64::MAX / 2, 100));
        let t = m.prepare_dead(200).unwrap();
        assert_eq!(t.state, TxnState::Dead);
        assert_eq!(ongoing().prepare_dead(200), Err(TxnError::InvalidTxnState));
    }
}
