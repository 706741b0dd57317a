//! The transaction coordinator (Kafka's `TransactionCoordinator` and
//! `TransactionStateManager`): owns every transactional id whose `__transaction_state`
//! partition this broker leads.
//!
//! State is sharded by `__transaction_state` partition, and a shard lives where its
//! partition's leader is ([`super::leadership`]). A change is validated and appended under
//! the shard lock, so the log's order is the memory's order; the request then waits, outside
//! the lock, for the ISR to have the write, and only then is the change applied in memory and
//! answered or acted on. Meanwhile the id carries it as `pending` and other requests for it
//! hear CONCURRENT_TRANSACTIONS; a failed write leaves the state as it was.
//!
//! A decided transaction (PrepareCommit/PrepareAbort written) is completed in the
//! background: its markers are written to every partition by the [`MarkerWriter`], then
//! CompleteCommit/CompleteAbort is written. A coordinator that takes over a partition finds
//! the Prepare* transactions in the log and completes them the same way.

use super::config::TxnConfig;
use super::markers::{MarkerError, MarkerRequest};
use super::record::{self, TxnLogValue};
use super::state::{EndPlan, InitPlan, TopicPartition, Transit, TxnError, TxnMetadata, TxnState};
use crate::group::coordinator::partition_for;
use crate::group::CoordinatorNode;
use crate::partition::Partition;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::{now_ms, ReplicaManager};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use kavka_metadata::{Controller, CreateTopicSpec, MetadataImage, TopicDefaults};
use kavka_protocol::error::ErrorCode;
use kavka_protocol::records::ControlType;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// The internal topic holding transactional ids' states.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Longest transactional id accepted (the log's key is an int16-prefixed string).
pub const MAX_TRANSACTIONAL_ID_LEN: usize = 16 * 1024;

/// Asked by the marker writer before each attempt: is this broker still the coordinator
/// that decided the transaction?
pub type StillCoordinator = Arc<dyn Fn() -> bool + Send + Sync>;

/// Writes a decided transaction's markers to its partitions' leaders (Kafka's
/// `TransactionMarkerChannelManager`); the broker's is [`super::markers::TxnMarkerChannel`].
/// Resolves once every marker is written, or with why it stopped.
pub trait MarkerWriter: Send + Sync {
    fn write_markers(
        self: Arc<Self>,
        req: MarkerRequest,
        still_coordinator: StillCoordinator,
    ) -> BoxFuture<'static, Result<(), MarkerError>>;
}

/// Where a shard stands on this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShardStatus {
    /// Another broker leads the partition: requests hear NOT_COORDINATOR.
    NotCoordinator,
    /// This broker leads it; the replay is pending (`claimed: false`) or running.
    Loading {
        claimed: bool,
    },
    Loaded,
}

pub(super) struct Shard {
    pub(super) status: ShardStatus,
    /// Moves at every election and resignation: work started under an older epoch (a
    /// replay, a write, a completion) finds it changed and stops.
    pub(super) epoch: u64,
    /// The partition's leader epoch this broker was elected in: the coordinator epoch
    /// written into markers.
    pub(super) leader_epoch: Option<i32>,
    pub(super) txns: HashMap<String, TxnMetadata>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            status: ShardStatus::NotCoordinator,
            epoch: 0,
            leader_epoch: None,
            txns: HashMap::new(),
        }
    }
}

pub(super) fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A write appended to the log and not yet acknowledged by the ISR.
struct PendingWrite {
    partition: i32,
    shard_epoch: u64,
    coordinator_epoch: i32,
    transactional_id: String,
    transit: Transit,
    wait: Option<ReplicationWait>,
}

struct ReplicationWait {
    partition: Arc<Partition>,
    last_offset: i64,
    fsync: bool,
    timeout: Duration,
}

impl ReplicationWait {
    async fn wait(self) -> Result<(), TxnError> {
        self.partition
            .wait_replicated(self.last_offset, self.timeout)
            .await
            .map_err(|e| {
                let code = crate::handlers::partition_error_code(
                    &e,
                    &self.partition.topic,
                    self.partition.index,
                );
                tracing::warn!(
                    partition = self.partition.index,
                    offset = self.last_offset,
                    "{TXN_TOPIC} write not replicated: {e}"
                );
                store_error(code)
            })?;
        if self.fsync {
            self.partition
                .wait_durable(self.last_offset)
                .await
                .map_err(|_| TxnError::NotCoordinator)?;
        }
        Ok(())
    }
}

/// Kafka's TransactionStateManager mapping of a failed `__transaction_state` append (or its
/// replication): leadership lost sends the client to look the coordinator up again; a
/// shortfall of replicas or a timeout makes it retry.
fn store_error(code: ErrorCode) -> TxnError {
    match code {
        ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge => TxnError::UnknownServerError,
        ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => TxnError::NotCoordinator,
        _ => TxnError::CoordinatorNotAvailable,
    }
}

/// A decided transaction to complete: markers, then Complete*.
#[derive(Debug, Clone)]
struct Completion {
    partition: i32,
    shard_epoch: u64,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    request: MarkerRequest,
}

/// One transaction as ListTransactions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTxn {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

pub struct TransactionCoordinator {
    pub(super) config: TxnConfig,
    pub(super) replicas: Arc<ReplicaManager>,
    pub(super) controller: Arc<Controller>,
    producer_ids: Arc<ProducerIdManager>,
    markers: OnceLock<Arc<dyn MarkerWriter>>,
    pub(super) shards: OnceLock<Vec<Mutex<Shard>>>,
    /// Serialises the lazy creation of `__transaction_state`.
    creating: Mutex<()>,
    /// Where replays and completions run (listeners are called on whichever thread
    /// committed the metadata change).
    pub(super) runtime: Option<tokio::runtime::Handle>,
    pub(super) me: OnceLock<Weak<TransactionCoordinator>>,
    /// The offset of the last metadata image whose leadership was applied.
    pub(super) applied_image: Mutex<i64>,
}

fn valid_transactional_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_TRANSACTIONAL_ID_LEN
}

impl TransactionCoordinator {
    /// Call [`Self::follow_leadership`] once the replica manager follows the metadata, and
    /// [`Self::set_marker_writer`] before transactions complete.
    pub fn new(
        config: TxnConfig,
        replicas: Arc<ReplicaManager>,
        controller: Arc<Controller>,
        producer_ids: Arc<ProducerIdManager>,
    ) -> Self {
        TransactionCoordinator {
            config,
            replicas,
            controller,
            producer_ids,
            markers: OnceLock::new(),
            shards: OnceLock::new(),
            creating: Mutex::new(()),
            runtime: tokio::runtime::Handle::try_current().ok(),
            me: OnceLock::new(),
            applied_image: Mutex::new(i64::MIN),
        }
    }

    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// The writer of transaction markers (set once; later calls are ignored).
    pub fn set_marker_writer(&self, writer: Arc<dyn MarkerWriter>) {
        let _ = self.markers.set(writer);
    }

    fn me(&self) -> Option<Arc<TransactionCoordinator>> {
        self.me.get().and_then(Weak::upgrade)
    }

    // ---------------------------------------------------------------- topic and shards

    /// FindCoordinator: makes sure `__transaction_state` exists (Kafka creates it on first
    /// use). Blocking (the metadata log fsyncs).
    pub fn ensure_ready(&self) -> Result<(), ErrorCode> {
        if self.shards.get().is_some() {
            return Ok(());
        }
        let _g = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        if self.shards.get().is_some() {
            return Ok(());
        }
        self.create_topic()?;
        // The creation's image reached the listener already; applying it again is harmless
        // and covers a topic another broker created first.
        self.apply_leadership(&self.controller.image());
        Ok(())
    }

    fn create_topic(&self) -> Result<(), ErrorCode> {
        let image = self.controller.image();
        if image.topic(TXN_TOPIC).is_some() {
            return Ok(());
        }
        let live = i16::try_from(image.live_brokers().count()).unwrap_or(i16::MAX);
        let replication_factor = self.config.log_replication_factor.min(live).max(1);
        let min_isr = self
            .config
            .log_min_isr
            .min(i32::from(replication_factor))
            .max(1);
        let mut configs = BTreeMap::new();
        configs.insert("cleanup.policy".to_string(), "compact".to_string());
        configs.insert(
            "segment.bytes".to_string(),
            self.config.log_segment_bytes.to_string(),
        );
        configs.insert("min.insync.replicas".to_string(), min_isr.to_string());
        let spec = CreateTopicSpec {
            name: TXN_TOPIC.to_string(),
            num_partitions: self.config.log_num_partitions,
            replication_factor,
            assignments: Vec::new(),
            configs,
        };
        let defaults = TopicDefaults {
            num_partitions: self.config.log_num_partitions,
            replication_factor,
        };
        let result = self.controller.create_topics(vec![spec], false, &defaults);
        if let Some(Err(e)) = result.into_iter().next() {
            if self.controller.image().topic(TXN_TOPIC).is_none() {
                tracing::error!("cannot create {TXN_TOPIC}: {e}");
                return Err(ErrorCode::CoordinatorNotAvailable);
            }
        }
        tracing::info!(replication_factor, min_isr, "created {TXN_TOPIC}");
        Ok(())
    }

    pub(super) fn init_shards(&self, partitions: usize) -> &[Mutex<Shard>] {
        self.shards
            .get_or_init(|| (0..partitions).map(|_| Mutex::new(Shard::new())).collect())
    }

    /// The partition of `__transaction_state` holding `transactional_id`.
    pub fn partition_of(&self, transactional_id: &str) -> Option<i32> {
        let n = i32::try_from(self.shards.get()?.len()).ok()?;
        (n > 0).then(|| partition_for(transactional_id, n))
    }

    fn shard(&self, partition: i32) -> Option<&Mutex<Shard>> {
        self.shards.get()?.get(usize::try_from(partition).ok()?)
    }

    /// FindCoordinator for a transactional id: the leader of its partition (creating the
    /// topic on first use). Blocking.
    pub fn coordinator_for(&self, transactional_id: &str) -> Result<CoordinatorNode, ErrorCode> {
        self.ensure_ready()?;
        coordinator_in(&self.controller.image(), transactional_id)
    }

    /// Runs `f` on the loaded shard of `transactional_id`.
    fn with_shard<R>(
        &self,
        transactional_id: &str,
        f: impl FnOnce(i32, &mut Shard) -> Result<R, TxnError>,
    ) -> Result<R, TxnError> {
        if !valid_transactional_id(transactional_id) {
            return Err(TxnError::InvalidRequest);
        }
        // No topic yet: the client looks the coordinator up, which creates it.
        let p = self
            .partition_of(transactional_id)
            .ok_or(TxnError::NotCoordinator)?;
        let shard = self.shard(p).ok_or(TxnError::NotCoordinator)?;
        let mut s = lock(shard);
        match s.status {
            ShardStatus::Loaded => f(p, &mut s),
            ShardStatus::Loading { .. } => Err(TxnError::LoadInProgress),
            ShardStatus::NotCoordinator => Err(TxnError::NotCoordinator),
        }
    }

    /// Whether shard `partition` is still the one of `shard_epoch`, loaded here.
    fn still_coordinator(&self, partition: i32, shard_epoch: u64) -> bool {
        self.shard(partition).is_some_and(|s| {
            let s = lock(s);
            s.status == ShardStatus::Loaded && s.epoch == shard_epoch
        })
    }

    // ---------------------------------------------------------------- writes

    /// Validates and appends a change of `transactional_id` under its shard lock. `plan`
    /// sees the shard's ids (it may add a new one) and returns the transition to write, or
    /// `None` when there is nothing to write. Blocking (file append, producer id blocks).
    fn begin(
        &self,
        transactional_id: &str,
        plan: impl FnOnce(&mut HashMap<String, TxnMetadata>, i64) -> Result<Option<Transit>, TxnError>,
    ) -> Result<Option<PendingWrite>, TxnError> {
        let now = now_ms();
        self.with_shard(transactional_id, |p, shard| {
            let Some(transit) = plan(&mut shard.txns, now)? else {
                return Ok(None);
            };
            let meta = shard
                .txns
                .get_mut(transactional_id)
                .ok_or(TxnError::TransactionalIdNotFound)?;
            debug_assert!(meta.pending.is_none(), "plans refuse a pending id");
            if meta.pending.is_some() {
                return Err(TxnError::ConcurrentTransactions);
            }
            let value = (transit.state != TxnState::Dead)
                .then(|| record::encode_value(&TxnLogValue::from_transit(&transit)));
            let wait = self.append(p, record::encode_key(transactional_id), value, now)?;
            meta.pending = Some(transit.state);
            Ok(Some(PendingWrite {
                partition: p,
                shard_epoch: shard.epoch,
                coordinator_epoch: shard.leader_epoch.unwrap_or(0),
                transactional_id: transactional_id.to_string(),
                transit,
                wait,
            }))
        })
    }

    /// Waits for the ISR to have `w`, then applies it (or, if it failed, drops it).
    async fn finish(&self, w: PendingWrite) -> Result<Transit, TxnError> {
        let replicated = match w.wait {
            Some(wait) => wait.wait().await,
            None => Ok(()),
        };
        let shard = self.shard(w.partition).ok_or(TxnError::NotCoordinator)?;
        let mut s = lock(shard);
        if s.epoch != w.shard_epoch || s.status != ShardStatus::Loaded {
            // Leadership moved meanwhile; the new coordinator replays what was replicated.
            return Err(TxnError::NotCoordinator);
        }
        let Some(meta) = s.txns.get_mut(&w.transactional_id) else {
            return Err(TxnError::NotCoordinator);
        };
        debug_assert_eq!(meta.pending, Some(w.transit.state));
        match replicated {
            Ok(()) => {
                if let Err(e) = meta.complete_transition(&w.transit) {
                    // Unreachable (plans only prepare legal transitions); never leave the
                    // id pending forever.
                    meta.abort_transition(&w.transit);
                    return Err(e);
                }
                if w.transit.state == TxnState::Dead {
                    s.txns.remove(&w.transactional_id);
                }
                Ok(w.transit)
            }
            Err(e) => {
                meta.abort_transition(&w.transit);
                Err(e)
            }
        }
    }

    /// `begin` on the blocking pool (or inline outside a runtime), then `finish`.
    async fn write<F>(
        self: &Arc<Self>,
        transactional_id: &str,
        plan: F,
    ) -> Result<Option<(Transit, i32, u64, i32)>, TxnError>
    where
        F: FnOnce(&mut HashMap<String, TxnMetadata>, i64) -> Result<Option<Transit>, TxnError>
            + Send
            + 'static,
    {
        let me = self.clone();
        let id = transactional_id.to_string();
        let begun = tokio::task::spawn_blocking(move || me.begin(&id, plan))
            .await
            .map_err(|_| TxnError::UnknownServerError)??;
        let Some(w) = begun else {
            return Ok(None);
        };
        let (p, epoch, coordinator_epoch) = (w.partition, w.shard_epoch, w.coordinator_epoch);
        let t = self.finish(w).await?;
        Ok(Some((t, p, epoch, coordinator_epoch)))
    }

    /// Appends one record to a `__transaction_state` partition. Called with the shard locked.
    fn append(
        &self,
        partition: i32,
        key: Bytes,
        value: Option<Bytes>,
        now: i64,
    ) -> Result<Option<ReplicationWait>, TxnError> {
        let part = self
            .replicas
            .get(TXN_TOPIC, partition)
            .ok_or(TxnError::NotCoordinator)?;
        let rec = kavka_protocol::records::plain_record(0, now, Some(key), value);
        let encoded = kavka_protocol::records::encode_batch(
            &[rec],
            kafka_protocol::records::Compression::None,
        )
        .map_err(|e| {
            tracing::error!("cannot encode a {TXN_TOPIC} record: {e}");
            TxnError::UnknownServerError
        })?;
        let mut buf = encoded
            .try_into_mut()
            .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
        match part.append(&mut buf, now) {
            Ok((info, fsync)) => Ok(Some(ReplicationWait {
                partition: part,
                last_offset: info.last_offset,
                fsync,
                timeout: Duration::from_millis(self.config.write_timeout_ms),
            })),
            Err(e) => {
                let code = crate::handlers::partition_error_code(&e, TXN_TOPIC, partition);
                tracing::warn!(partition, "cannot append to {TXN_TOPIC}: {e}");
                Err(store_error(code))
            }
        }
    }

    // ---------------------------------------------------------------- requests

    /// InitProducerId with a transactional id. `expected` is the KIP-360 producer id and
    /// epoch of a client re-initialising after an error. Returns the producer id and epoch;
    /// CONCURRENT_TRANSACTIONS when an Ongoing transaction had to be aborted first (its
    /// producer is fenced; the client retries and gets the next epoch).
    pub async fn init_producer_id(
        self: &Arc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        if !valid_transactional_id(transactional_id) {
            return Err(TxnError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        // A producer id is allocated outside the shard lock: allocating may commit a block
        // to the metadata log, whose listeners (this coordinator's leadership among them)
        // take shard locks. The plan asks for one when it needs it, and is run again.
        let mut spare: Option<i64> = None;
        let mut attempts = 0;
        let written = loop {
            attempts += 1;
            let wanted = Arc::new(AtomicBool::new(false));
            let (id, want) = (transactional_id.to_string(), wanted.clone());
            let mut offered = spare.take();
            let r = self
                .write(transactional_id, move |txns, now| {
                    let mut generate = || {
                        offered.take().ok_or_else(|| {
                            want.store(true, Ordering::Relaxed);
                            TxnError::CoordinatorNotAvailable
                        })
                    };
                    if !txns.contains_key(&id) {
                        let pid = generate()?;
                        txns.insert(id.clone(), TxnMetadata::new(&id, pid, timeout_ms, now));
                    }
                    let meta = txns.get(&id).ok_or(TxnError::TransactionalIdNotFound)?;
                    match meta.prepare_init(expected, timeout_ms, now, generate)? {
                        InitPlan::Init(t) | InitPlan::FenceAndAbort(t) => Ok(Some(t)),
                    }
                })
                .await;
            if !wanted.load(Ordering::Relaxed) || attempts > 3 {
                break r?;
            }
            let me = self.clone();
            let pid = tokio::task::spawn_blocking(move || me.producer_ids.generate(&me.controller))
                .await
                .map_err(|_| TxnError::UnknownServerError)?
                .map_err(|e| {
                    tracing::error!("cannot allocate producer ids: {e}");
                    TxnError::CoordinatorNotAvailable
                })?;
            spare = Some(pid);
        };
        let Some((t, p, shard_epoch, coordinator_epoch)) = written else {
            debug_assert!(false, "InitProducerId always writes");
            return Err(TxnError::UnknownServerError);
        };
        if t.fences {
            tracing::info!(
                transactional_id,
                producer_id = t.producer_id,
                epoch = t.producer_epoch,
                "fenced the producer of an ongoing transaction: aborting it"
            );
            self.spawn_completion(completion(
                p,
                shard_epoch,
                coordinator_epoch,
                transactional_id,
                &t,
            ));
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok((t.producer_id, t.producer_epoch))
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's offsets partition).
    pub async fn add_partitions(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: BTreeSet<TopicPartition>,
    ) -> Result<(), TxnError> {
        let id = transactional_id.to_string();
        self.write(transactional_id, move |txns, now| {
            let meta = txns.get(&id).ok_or(TxnError::InvalidProducerIdMapping)?;
            meta.prepare_add_partitions(producer_id, producer_epoch, &partitions, now)
        })
        .await
        .map(|_| ())
    }

    /// AddPartitionsToTxn v4+ verify-only: for each partition, whether the producer's
    /// Ongoing transaction has it. Writes nothing.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<Vec<bool>, TxnError> {
        self.with_shard(transactional_id, |_, s| {
            s.txns
                .get(transactional_id)
                .ok_or(TxnError::InvalidProducerIdMapping)?
                .verify_partitions(producer_id, producer_epoch, partitions)
        })
    }

    /// EndTxn: answers once PrepareCommit/PrepareAbort is written; the markers and the
    /// Complete state follow in the background.
    pub async fn end_txn(
        self: &Arc<Self>,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        let id = transactional_id.to_string();
        let written = self
            .write(transactional_id, move |txns, now| {
                let meta = txns.get(&id).ok_or(TxnError::InvalidProducerIdMapping)?;
                match meta.prepare_end(producer_id, producer_epoch, commit, now)? {
                    EndPlan::AlreadyDone => Ok(None),
                    EndPlan::Prepare(t) => Ok(Some(t)),
                }
            })
            .await?;
        if let Some((t, p, shard_epoch, coordinator_epoch)) = written {
            self.spawn_completion(completion(
                p,
                shard_epoch,
                coordinator_epoch,
                transactional_id,
                &t,
            ));
        }
        Ok(())
    }

    /// DescribeTransactions for one id.
    pub fn describe(&self, transactional_id: &str) -> Result<TxnMetadata, TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::TransactionalIdNotFound);
        }
        self.with_shard(transactional_id, |_, s| {
            s.txns
                .get(transactional_id)
                .filter(|m| m.state != TxnState::Dead)
                .cloned()
                .ok_or(TxnError::TransactionalIdNotFound)
        })
    }

    /// ListTransactions over the partitions this broker coordinates. Empty filters match
    /// everything; `min_duration_ms` (v1, -1 = none) keeps transactions running longer
    /// (measured from their start timestamp, -1 for an id without one, as Kafka does).
    pub fn list(
        &self,
        states: &[TxnState],
        producer_ids: &[i64],
        min_duration_ms: i64,
    ) -> Result<Vec<ListedTxn>, TxnError> {
        let Some(shards) = self.shards.get() else {
            return Ok(Vec::new());
        };
        let now = now_ms();
        let mut out = Vec::new();
        for shard in shards {
            let s = lock(shard);
            match s.status {
                ShardStatus::Loaded => {}
                ShardStatus::Loading { .. } => return Err(TxnError::LoadInProgress),
                ShardStatus::NotCoordinator => continue,
            }
            for (id, m) in &s.txns {
                if m.state == TxnState::Dead
                    || (!states.is_empty() && !states.contains(&m.state))
                    || (!producer_ids.is_empty() && !producer_ids.contains(&m.producer_id))
                    || (min_duration_ms >= 0
                        && now.saturating_sub(m.start_timestamp) <= min_duration_ms)
                {
                    continue;
                }
                out.push(ListedTxn {
                    transactional_id: id.clone(),
                    producer_id: m.producer_id,
                    state: m.state,
                });
            }
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    // ---------------------------------------------------------------- timers

    /// Aborts every Ongoing transaction past its timeout, bumping its producer's epoch so
    /// the producer hears PRODUCER_FENCED (Kafka's `abortTimedOutTransactions`). Returns how
    /// many were aborted.
    pub async fn abort_timed_out(self: &Arc<Self>) -> usize {
        let now = now_ms();
        let mut due = Vec::new();
        if let Some(shards) = self.shards.get() {
            for shard in shards {
                let s = lock(shard);
                if s.status != ShardStatus::Loaded {
                    continue;
                }
                due.extend(
                    s.txns
                        .values()
                        .filter(|m| m.is_timed_out(now))
                        .map(|m| m.transactional_id.clone()),
                );
            }
        }
        let mut aborted = 0;
        for id in due {
            let plan_id = id.clone();
            let r = self
                .write(&id, move |txns, now| {
                    let meta = txns
                        .get(&plan_id)
                        .ok_or(TxnError::TransactionalIdNotFound)?;
                    if !meta.is_timed_out(now) {
                        return Ok(None);
                    }
                    meta.prepare_fence_abort(now).map(Some)
                })
                .await;
            match r {
                Ok(Some((t, p, shard_epoch, coordinator_epoch))) => {
                    tracing::info!(
                        transactional_id = %id,
                        producer_id = t.producer_id,
                        "aborting a transaction past its timeout of {} ms",
                        t.timeout_ms
                    );
                    aborted += 1;
                    self.spawn_completion(completion(p, shard_epoch, coordinator_epoch, &id, &t));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(transactional_id = %id, "cannot abort a timed-out transaction: {e}")
                }
            }
        }
        aborted
    }

    /// transactional.id.expiration.ms: removes ids idle that long (a tombstone in the log).
    /// Returns how many were removed.
    pub async fn remove_expired(self: &Arc<Self>) -> usize {
        let now = now_ms();
        let expiration = self.config.id_expiration_ms;
        let mut due = Vec::new();
        if let Some(shards) = self.shards.get() {
            for shard in shards {
                let s = lock(shard);
                if s.status != ShardStatus::Loaded {
                    continue;
                }
                due.extend(
                    s.txns
                        .values()
                        .filter(|m| m.is_expired(now, expiration))
                        .map(|m| m.transactional_id.clone()),
                );
            }
        }
        let mut removed = 0;
        for id in due {
            let plan_id = id.clone();
            let r = self
                .write(&id, move |txns, now| {
                    let meta = txns
                        .get(&plan_id)
                        .ok_or(TxnError::TransactionalIdNotFound)?;
                    if !meta.is_expired(now, expiration) {
                        return Ok(None);
                    }
                    meta.prepare_dead(now).map(Some)
                })
                .await;
            match r {
                Ok(Some(_)) => {
                    tracing::info!(transactional_id = %id, "expired an idle transactional id");
                    removed += 1;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(transactional_id = %id, "cannot expire: {e}"),
            }
        }
        removed
    }

    // ---------------------------------------------------------------- completion

    fn spawn_completion(&self, job: Completion) {
        let Some(me) = self.me() else {
            tracing::error!("transaction coordinator does not follow leadership: cannot complete");
            return;
        };
        match &self.runtime {
            Some(rt) => {
                rt.spawn(async move { me.complete(job).await });
            }
            None => {
                tracing::error!(
                    "no runtime: cannot complete transaction {}",
                    job.transactional_id
                );
            }
        }
    }

    /// Completions for the decided transactions a replay found (called once loaded).
    pub(super) fn resume_completions(&self, partition: i32) {
        let Some(shard) = self.shard(partition) else {
            return;
        };
        let jobs: Vec<Completion> = {
            let s = lock(shard);
            if s.status != ShardStatus::Loaded {
                return;
            }
            let coordinator_epoch = s.leader_epoch.unwrap_or(0);
            s.txns
                .values()
                .filter(|m| m.state.is_prepare())
                .map(|m| {
                    let t = Transit {
                        producer_id: m.producer_id,
                        last_producer_id: m.last_producer_id,
                        producer_epoch: m.producer_epoch,
                        last_producer_epoch: m.last_producer_epoch,
                        timeout_ms: m.timeout_ms,
                        state: m.state,
                        partitions: m.partitions.clone(),
                        start_timestamp: m.start_timestamp,
                        last_update_timestamp: m.last_update_timestamp,
                        fences: false,
                    };
                    completion(
                        partition,
                        s.epoch,
                        coordinator_epoch,
                        &m.transactional_id,
                        &t,
                    )
                })
                .collect()
        };
        for job in jobs {
            tracing::info!(
                transactional_id = %job.transactional_id,
                "resuming the completion of a decided transaction"
            );
            self.spawn_completion(job);
        }
    }

    /// Writes the markers of a decided transaction, then its Complete state; retried with
    /// a backoff until done or this broker stops coordinating it.
    async fn complete(self: Arc<Self>, job: Completion) {
        let mut backoff = Duration::from_millis(50);
        let max_backoff = Duration::from_secs(2);
        let still: StillCoordinator = {
            let me = Arc::downgrade(&self);
            let (p, e) = (job.partition, job.shard_epoch);
            Arc::new(move || me.upgrade().is_some_and(|c| c.still_coordinator(p, e)))
        };
        if !job.request.partitions.is_empty() {
            loop {
                if !still() {
                    return;
                }
                let Some(writer) = self.markers.get().cloned() else {
                    tracing::warn!("no transaction marker writer yet; retrying");
                    tokio::time::sleep(max_backoff).await;
                    continue;
                };
                match writer
                    .write_markers(job.request.clone(), still.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(MarkerError::NotCoordinator) => return,
                    // Kafka's `removeMarkersForTxn`: a partition refusing the marker's
                    // producer or coordinator epoch says this coordinator's view is stale
                    // (a newer one took over); retrying cannot succeed.
                    Err(e @ MarkerError::Fenced { .. }) => {
                        tracing::error!(
                            transactional_id = %job.transactional_id,
                            "transaction markers refused, giving the transaction up to the newer coordinator: {e}"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(
                            transactional_id = %job.transactional_id,
                            "transaction markers not written, retrying: {e}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max_backoff);
                    }
                }
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            if !still() {
                return;
            }
            let (pid, epoch, id) = (
                job.producer_id,
                job.producer_epoch,
                job.transactional_id.clone(),
            );
            let r = self
                .write(&job.transactional_id, move |txns, now| {
                    let meta = txns.get(&id).ok_or(TxnError::TransactionalIdNotFound)?;
                    if meta.producer_id != pid
                        || meta.producer_epoch != epoch
                        || !meta.state.is_prepare()
                    {
                        // Someone else completed it (never expected: only this task does).
                        return Ok(None);
                    }
                    meta.prepare_complete(now).map(Some)
                })
                .await;
            match r {
                Ok(_) => return,
                Err(TxnError::NotCoordinator)
                | Err(TxnError::LoadInProgress)
                | Err(TxnError::TransactionalIdNotFound) => return,
                Err(e) => {
                    tracing::warn!(
                        transactional_id = %job.transactional_id,
                        "cannot write the completed transaction, retrying: {e}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }
}

fn completion(
    partition: i32,
    shard_epoch: u64,
    coordinator_epoch: i32,
    transactional_id: &str,
    t: &Transit,
) -> Completion {
    debug_assert!(t.state.is_prepare());
    Completion {
        partition,
        shard_epoch,
        transactional_id: transactional_id.to_string(),
        producer_id: t.producer_id,
        producer_epoch: t.producer_epoch,
        request: MarkerRequest {
            transactional_id: transactional_id.to_string(),
            producer_id: t.producer_id,
            producer_epoch: t.producer_epoch,
            coordinator_epoch,
            control: if t.state == TxnState::PrepareCommit {
                ControlType::Commit
            } else {
                ControlType::Abort
            },
            partitions: t.partitions.iter().cloned().collect(),
        },
    }
}

/// The leader of `transactional_id`'s `__transaction_state` partition in `image`, if it has
/// a live one.
pub(super) fn coordinator_in(
    image: &MetadataImage,
    transactional_id: &str,
) -> Result<CoordinatorNode, ErrorCode> {
    let topic = image
        .topic(TXN_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let partitions = i32::try_from(topic.partitions.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let leader = topic
        .partitions
        .get(&partition_for(transactional_id, partitions))
        .map(|p| p.leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .map(|b| CoordinatorNode {
            node_id: b.node_id,
            host: b.host.clone(),
            port: b.port,
        })
        .ok_or(ErrorCode::CoordinatorNotAvailable)
}

impl MarkerWriter for super::markers::TxnMarkerChannel {
    fn write_markers(
        self: Arc<Self>,
        req: MarkerRequest,
        still_coordinator: StillCoordinator,
    ) -> BoxFuture<'static, Result<(), MarkerError>> {
        Box::pin(async move {
            super::markers::TxnMarkerChannel::write_markers(&self, req, move || still_coordinator())
                .await
        })
    }
}
