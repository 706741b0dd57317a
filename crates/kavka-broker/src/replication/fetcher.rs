//! The follower side of replication (Kafka's `ReplicaFetcherManager` and
//! `ReplicaFetcherThread`): one task per leader broker fetches, in one Fetch request, every
//! partition this broker follows from that leader, and appends what arrives with the
//! leader's offsets.
//!
//! A partition added (or whose leader or leader epoch changed) first finds where its log
//! diverges from the new leader's (KIP-101/KIP-279): it asks OffsetForLeaderEpoch for its
//! latest epoch and truncates to the smaller of the two end offsets; a follower without any
//! epoch truncates to its high watermark, as Kafka does. Then it fetches from its log end.
//! Partition errors (the leader moved, epochs disagree, the topic is gone) back the
//! partition off for `replica.fetch.backoff.ms` until the metadata catches up and
//! [`FetcherManager::add_partition`] names a new leader or epoch; a connection failure backs
//! the whole leader off. Every wait also ends on shutdown.
//!
//! Replication throttle (KIP-73): partitions whose follower replica here is listed in the
//! topic's `follower.replication.throttled.replicas` are left out of a fetch while the
//! broker's follower rate is used up, and the bytes fetched for them drain it; the others
//! are never held back.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kavka_protocol::error::ErrorCode;
use kavka_protocol::record_batch;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::leader_client::{
    LeaderClient, LeaderClientConfig, LeaderClientError, FETCH_VERSION, LIST_OFFSETS_VERSION,
    OFFSET_FOR_LEADER_EPOCH_VERSION,
};
use super::throttle::ReplicationQuotas;
use crate::config::ReplicationSettings;
use crate::partition::Partition;
use crate::replica_manager::now_ms;

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
const UNDEFINED_EPOCH: i32 = -1;
const UNDEFINED_EPOCH_OFFSET: i64 = -1;
/// ListOffsets' timestamp asking for the log start offset.
const EARLIEST_TIMESTAMP: i64 = -2;
/// The sessionless full Fetch (KIP-227 `FINAL_EPOCH`): kavka keeps no fetch sessions.
const SESSIONLESS_EPOCH: i32 = -1;

/// Where a partition's leader listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaderEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

impl LeaderEndpoint {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

type PartitionKey = (String, i32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Find the divergence point with the leader (OffsetForLeaderEpoch) and truncate.
    Truncating,
    Fetching,
}

struct FollowedPartition {
    partition: Arc<Partition>,
    leader_epoch: i32,
    phase: Phase,
    /// Backed off until then after an error.
    delayed_until: Option<Instant>,
    /// Set by each (re)add: the answer to a request sent for an older state is dropped.
    version: u64,
}

/// A partition as one request round sees it.
#[derive(Clone)]
struct Work {
    key: PartitionKey,
    partition: Arc<Partition>,
    leader_epoch: i32,
    version: u64,
}

/// The partitions one leader's fetcher works on, shared with the manager.
#[derive(Default)]
struct FetcherState {
    partitions: Mutex<HashMap<PartitionKey, FollowedPartition>>,
    /// A partition was added or changed: an idle fetcher looks again.
    wake: Notify,
}

/// One round's work: what to truncate, what to fetch, and when a backed-off partition is due.
#[derive(Default)]
struct Round {
    truncating: Vec<Work>,
    fetching: Vec<Work>,
    next_due: Option<Instant>,
}

impl FetcherState {
    fn lock(&self) -> MutexGuard<'_, HashMap<PartitionKey, FollowedPartition>> {
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn round(&self, now: Instant) -> Round {
        let mut round = Round::default();
        for (key, p) in self.lock().iter_mut() {
            if let Some(until) = p.delayed_until {
                if until > now {
                    round.next_due = Some(round.next_due.map_or(until, |d| d.min(until)));
                    continue;
                }
                p.delayed_until = None;
            }
            let w = Work {
                key: key.clone(),
                partition: p.partition.clone(),
                leader_epoch: p.leader_epoch,
                version: p.version,
            };
            match p.phase {
                Phase::Truncating => round.truncating.push(w),
                Phase::Fetching => round.fetching.push(w),
            }
        }
        round
    }

    /// Whether `w` still describes the partition's state (not removed or re-added since).
    fn is_current(&self, w: &Work) -> bool {
        self.lock()
            .get(&w.key)
            .is_some_and(|p| p.version == w.version)
    }

    /// Moves `w` to `phase` and optionally backs it off, if it is still current.
    fn update(&self, w: &Work, phase: Phase, delay: Option<Duration>) {
        if let Some(p) = self.lock().get_mut(&w.key) {
            if p.version == w.version {
                p.phase = phase;
                if let Some(d) = delay {
                    p.delayed_until = Some(Instant::now() + d);
                }
            }
        }
    }

    fn delay(&self, w: &Work, delay: Duration) {
        if let Some(p) = self.lock().get_mut(&w.key) {
            if p.version == w.version {
                p.delayed_until = Some(Instant::now() + delay);
            }
        }
    }
}

struct FetcherHandle {
    endpoint: LeaderEndpoint,
    state: Arc<FetcherState>,
    stop: watch::Sender<bool>,
}

impl FetcherHandle {
    fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

struct ManagerInner {
    /// By leader node id.
    fetchers: HashMap<i32, FetcherHandle>,
    /// The leader node each followed partition fetches from.
    leaders: HashMap<PartitionKey, i32>,
    next_version: u64,
    shut_down: bool,
}

/// Starts and stops the per-leader fetcher tasks as partitions are followed and dropped.
pub struct FetcherManager {
    node_id: i32,
    settings: ReplicationSettings,
    /// Where fetcher tasks run; `add_partition` may be called from blocking threads.
    runtime: Option<tokio::runtime::Handle>,
    /// The replication throttle of this broker, both sides (the leader side is read by the
    /// Fetch handler); kept in step with the image by the replica manager.
    quotas: Arc<ReplicationQuotas>,
    inner: Mutex<ManagerInner>,
}

impl std::fmt::Debug for FetcherManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetcherManager")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl FetcherManager {
    /// A manager for broker `node_id`. Fetcher tasks run on the current tokio runtime (the
    /// one this is called in, or the one `add_partition` is called in).
    pub fn new(node_id: i32, settings: ReplicationSettings) -> Arc<Self> {
        Arc::new(FetcherManager {
            node_id,
            settings,
            runtime: tokio::runtime::Handle::try_current().ok(),
            quotas: Arc::new(ReplicationQuotas::new(node_id)),
            inner: Mutex::new(ManagerInner {
                fetchers: HashMap::new(),
                leaders: HashMap::new(),
                next_version: 0,
                shut_down: false,
            }),
        })
    }

    /// This broker's replication throttle (KIP-73); call its `update` on every image change.
    pub fn quotas(&self) -> &Arc<ReplicationQuotas> {
        &self.quotas
    }

    fn lock(&self) -> MutexGuard<'_, ManagerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `partition` from `leader` under `leader_epoch`; called again when either
    /// changes, which makes the partition truncate again before it fetches. A call with the
    /// same leader, epoch and partition changes nothing.
    pub fn add_partition(
        &self,
        partition: Arc<Partition>,
        leader: LeaderEndpoint,
        leader_epoch: i32,
    ) {
        let key = (partition.topic.clone(), partition.index);
        let mut inner = self.lock();
        if inner.shut_down {
            return;
        }
        if let Some(old) = inner.leaders.get(&key).copied() {
            if old != leader.node_id {
                Self::detach(&mut inner, &key, old);
            }
        }
        if inner
            .fetchers
            .get(&leader.node_id)
            .is_some_and(|f| f.endpoint != leader)
        {
            // The leader's address changed: restart its fetcher with the same partitions.
            if let Some(old) = inner.fetchers.remove(&leader.node_id) {
                old.stop();
                let moved = std::mem::take(&mut *old.state.lock());
                match self.spawn_fetcher(leader.clone()) {
                    Some(handle) => {
                        handle.state.lock().extend(moved);
                        inner.fetchers.insert(leader.node_id, handle);
                    }
                    None => inner.leaders.retain(|_, id| *id != leader.node_id),
                }
            }
        }
        let version = inner.next_version;
        inner.next_version += 1;
        let state = match inner.fetchers.entry(leader.node_id) {
            Entry::Occupied(f) => f.get().state.clone(),
            Entry::Vacant(slot) => match self.spawn_fetcher(leader.clone()) {
                Some(handle) => slot.insert(handle).state.clone(),
                None => return,
            },
        };
        {
            let mut parts = state.lock();
            let unchanged = parts.get(&key).is_some_and(|p| {
                p.leader_epoch == leader_epoch && Arc::ptr_eq(&p.partition, &partition)
            });
            if !unchanged {
                info!(topic = %key.0, partition = key.1, leader = leader.node_id, leader_epoch, "following partition");
                parts.insert(
                    key.clone(),
                    FollowedPartition {
                        partition,
                        leader_epoch,
                        phase: Phase::Truncating,
                        delayed_until: None,
                        version,
                    },
                );
            }
        }
        inner.leaders.insert(key, leader.node_id);
        state.wake.notify_one();
    }

    /// Stops following a partition (it became leader, or was deleted or reassigned away).
    pub fn remove_partition(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        let mut inner = self.lock();
        if let Some(leader) = inner.leaders.get(&key).copied() {
            Self::detach(&mut inner, &key, leader);
        }
    }

    /// The partitions followed, with their leader node (diagnostics and tests).
    pub fn followed(&self) -> Vec<(String, i32, i32)> {
        let inner = self.lock();
        let mut v: Vec<_> = inner
            .leaders
            .iter()
            .map(|((t, p), l)| (t.clone(), *p, *l))
            .collect();
        v.sort();
        v
    }

    /// Stops every fetcher task; later `add_partition` calls are ignored.
    pub fn shutdown(&self) {
        let mut inner = self.lock();
        inner.shut_down = true;
        for (_, f) in inner.fetchers.drain() {
            f.stop();
        }
        inner.leaders.clear();
    }

    /// Removes `key` from `leader`'s fetcher, stopping the fetcher when it has nothing left.
    fn detach(inner: &mut ManagerInner, key: &PartitionKey, leader: i32) {
        inner.leaders.remove(key);
        let empty = inner.fetchers.get(&leader).is_some_and(|f| {
            let mut parts = f.state.lock();
            parts.remove(key);
            parts.is_empty()
        });
        if empty {
            if let Some(f) = inner.fetchers.remove(&leader) {
                debug!(
                    leader,
                    "no partition left to fetch from this leader; stopping its fetcher"
                );
                f.stop();
            }
        }
    }

    fn spawn_fetcher(&self, endpoint: LeaderEndpoint) -> Option<FetcherHandle> {
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.clone());
        let Some(runtime) = runtime else {
            warn!(
                leader = endpoint.node_id,
                "no tokio runtime to run a replica fetcher on"
            );
            return None;
        };
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(FetcherState::default());
        let client = LeaderClient::new(LeaderClientConfig {
            addr: endpoint.addr(),
            client_id: format!("broker-{}-fetcher-{}", self.node_id, endpoint.node_id),
            socket_timeout: Duration::from_millis(self.settings.replica_socket_timeout_ms.max(1)),
        });
        let fetcher = Fetcher {
            node_id: self.node_id,
            leader_id: endpoint.node_id,
            settings: self.settings.clone(),
            quotas: self.quotas.clone(),
            state: state.clone(),
            client,
            stop: stop_rx,
        };
        runtime.spawn(fetcher.run());
        Some(FetcherHandle {
            endpoint,
            state,
            stop,
        })
    }
}

/// Where a follower truncates, from the leader's answer for an epoch (Kafka's
/// `getOffsetTruncationState`). Not `complete` when the follower lacks the leader's epoch:
/// it truncates to the end of its own largest epoch below and asks again for that one, so
/// each round asks an older epoch and the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Truncation {
    offset: i64,
    complete: bool,
}

fn truncation_point(partition: &Partition, leader_epoch: i32, leader_end: i64) -> Truncation {
    let leo = partition.log_end_offset();
    let t = if leader_end == UNDEFINED_EPOCH_OFFSET {
        // The leader knows no epoch at or below ours: keep what is committed.
        Truncation {
            offset: partition.high_watermark(),
            complete: true,
        }
    } else if leader_epoch == UNDEFINED_EPOCH {
        Truncation {
            offset: leader_end,
            complete: true,
        }
    } else {
        match partition.end_offset_for_leader_epoch(UNDEFINED_EPOCH, leader_epoch) {
            Ok(Some((ours, our_end))) if ours != leader_epoch => Truncation {
                offset: our_end,
                complete: false,
            },
            Ok(Some((_, our_end))) => Truncation {
                offset: leader_end.min(our_end),
                complete: true,
            },
            Ok(None) | Err(_) => Truncation {
                offset: leader_end,
                complete: true,
            },
        }
    };
    let offset = t.offset.min(leo);
    Truncation {
        offset,
        // Nothing to cut means the next question would be the same one.
        complete: t.complete || offset >= leo,
    }
}

/// Leaves out of `parts` the partitions whose follower replica is throttled while the
/// follower rate is used up; returns how many were left out. Unthrottled partitions stay.
fn hold_back_throttled(parts: &mut Vec<Work>, quotas: &ReplicationQuotas, now_ms: i64) -> usize {
    if !quotas.is_follower_exhausted(now_ms) {
        return 0;
    }
    let before = parts.len();
    parts.retain(|w| !quotas.is_follower_throttled(&w.key.0, w.key.1));
    before - parts.len()
}

/// Length of the whole v2 batches at the start of `records`: a fetch response may end with
/// a partial batch, which the next fetch brings whole.
fn whole_batches_len(records: &[u8]) -> usize {
    let mut pos = 0usize;
    while let Some(rest) = records.get(pos..).filter(|r| !r.is_empty()) {
        match record_batch::peek_header(rest) {
            Ok(h) if h.total_len() <= rest.len() => pos += h.total_len(),
            _ => break,
        }
    }
    pos
}

/// The task fetching every partition followed from one leader.
struct Fetcher {
    node_id: i32,
    leader_id: i32,
    settings: ReplicationSettings,
    quotas: Arc<ReplicationQuotas>,
    state: Arc<FetcherState>,
    client: LeaderClient,
    stop: watch::Receiver<bool>,
}

impl Fetcher {
    fn backoff(&self) -> Duration {
        Duration::from_millis(self.settings.replica_fetch_backoff_ms.max(1))
    }

    async fn run(mut self) {
        info!(
            leader = self.leader_id,
            addr = self.client.addr(),
            "replica fetcher started"
        );
        while !self.stopped() {
            let round = self.state.round(Instant::now());
            let result = if !round.truncating.is_empty() {
                self.truncate(round.truncating).await
            } else if !round.fetching.is_empty() {
                self.fetch(round.fetching).await
            } else {
                // Idle until a partition is added, a backoff ends, or shutdown.
                let until = round
                    .next_due
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                tokio::select! {
                    _ = self.state.wake.notified() => {}
                    _ = tokio::time::sleep_until(until) => {}
                    _ = self.stop.changed() => break,
                }
                continue;
            };
            if let Err(e) = result {
                warn!(leader = self.leader_id, error = %e, "replica fetch failed; backing off");
                self.client.disconnect();
                if !self.pause(self.backoff()).await {
                    break;
                }
            }
        }
        info!(leader = self.leader_id, "replica fetcher stopped");
    }

    /// Stop was asked, or the manager holding the other end is gone.
    fn stopped(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// Sleeps `d` unless stopped (returns false then).
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.changed() => false,
        }
    }

    /// OffsetForLeaderEpoch for the partitions that must find their divergence point, then
    /// truncation. A follower without epochs truncates to its high watermark unasked.
    async fn truncate(&mut self, parts: Vec<Work>) -> Result<(), LeaderClientError> {
        let mut ask = Vec::new();
        for w in parts {
            match w.partition.latest_epoch() {
                Some(epoch) => ask.push((w, epoch)),
                None => {
                    let t = Truncation {
                        offset: w.partition.high_watermark(),
                        complete: true,
                    };
                    self.apply_truncation(&w, t).await;
                }
            }
        }
        if ask.is_empty() {
            return Ok(());
        }
        let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
        for (w, epoch) in &ask {
            let part = OffsetForLeaderPartition::default()
                .with_partition(w.key.1)
                .with_current_leader_epoch(w.leader_epoch)
                .with_leader_epoch(*epoch);
            match topics.iter_mut().find(|t| t.topic.0.as_str() == w.key.0) {
                Some(t) => t.partitions.push(part),
                None => topics.push(
                    OffsetForLeaderTopic::default()
                        .with_topic(topic_name(&w.key.0))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(self.node_id.into())
            .with_topics(topics);
        let response = tokio::select! {
            r = self.client.offset_for_leader_epoch(&request, OFFSET_FOR_LEADER_EPOCH_VERSION) => r?,
            _ = self.stop.changed() => return Ok(()),
        };
        let mut answers = HashMap::new();
        for t in response.topics {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                answers.insert((topic.clone(), p.partition), p);
            }
        }
        for (w, _) in ask {
            if !self.state.is_current(&w) {
                continue;
            }
            let Some(answer) = answers.get(&w.key) else {
                debug!(topic = %w.key.0, partition = w.key.1, "leader left the partition out of its OffsetForLeaderEpoch answer");
                self.state.delay(&w, self.backoff());
                continue;
            };
            if answer.error_code != 0 {
                self.partition_error(&w, answer.error_code, "OffsetForLeaderEpoch");
                continue;
            }
            let t = truncation_point(&w.partition, answer.leader_epoch, answer.end_offset);
            self.apply_truncation(&w, t).await;
        }
        Ok(())
    }

    /// Truncates (blocking file work, off the reactor) and moves on to fetching when the
    /// truncation point is final.
    async fn apply_truncation(&self, w: &Work, t: Truncation) -> bool {
        if !self.state.is_current(w) {
            return false;
        }
        let leo = w.partition.log_end_offset();
        if t.offset < leo {
            info!(topic = %w.key.0, partition = w.key.1, log_end_offset = leo, offset = t.offset, "truncating follower log to the leader's");
        }
        let p = w.partition.clone();
        let offset = t.offset;
        match tokio::task::spawn_blocking(move || p.truncate_to(offset)).await {
            Ok(Ok(())) => {
                let next = if t.complete {
                    Phase::Fetching
                } else {
                    Phase::Truncating
                };
                self.state.update(w, next, None);
                true
            }
            Ok(Err(e)) => {
                warn!(topic = %w.key.0, partition = w.key.1, error = %e, "follower truncation failed");
                self.state.delay(w, self.backoff());
                false
            }
            Err(e) => {
                warn!(topic = %w.key.0, partition = w.key.1, error = %e, "follower truncation task failed");
                self.state.delay(w, self.backoff());
                false
            }
        }
    }

    /// One Fetch for every partition ready to fetch (less the throttled ones while the
    /// follower rate is used up), and its answer applied.
    async fn fetch(&mut self, mut parts: Vec<Work>) -> Result<(), LeaderClientError> {
        let max_wait_ms = self.settings.replica_fetch_wait_max_ms.max(0);
        let held = hold_back_throttled(&mut parts, &self.quotas, now_ms());
        if parts.is_empty() {
            // Only throttled partitions, and no rate left: wait until the bucket refills (at
            // most one max wait), unless a partition is added meanwhile or we stop.
            debug_assert!(held > 0);
            let ms = self
                .quotas
                .follower_ms_until_available(now_ms())
                .clamp(1, max_wait_ms.max(1) as u64);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = self.state.wake.notified() => {}
                _ = self.stop.changed() => {}
            }
            return Ok(());
        }
        let mut topics: Vec<FetchTopic> = Vec::new();
        let mut sent: HashMap<PartitionKey, (Work, i64)> = HashMap::new();
        for w in parts {
            let fetch_offset = w.partition.log_end_offset();
            let part = FetchPartition::default()
                .with_partition(w.key.1)
                .with_current_leader_epoch(w.leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_last_fetched_epoch(w.partition.latest_epoch().unwrap_or(UNDEFINED_EPOCH))
                .with_log_start_offset(w.partition.log_start_offset())
                .with_partition_max_bytes(self.settings.replica_fetch_max_bytes);
            match topics.iter_mut().find(|t| t.topic.0.as_str() == w.key.0) {
                Some(t) => t.partitions.push(part),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(topic_name(&w.key.0))
                        .with_topic_id(w.partition.topic_id)
                        .with_partitions(vec![part]),
                ),
            }
            sent.insert(w.key.clone(), (w, fetch_offset));
        }
        let request = FetchRequest::default()
            .with_replica_id(self.node_id.into())
            .with_replica_state(ReplicaState::default().with_replica_id(self.node_id.into()))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(self.settings.replica_fetch_min_bytes)
            .with_max_bytes(self.settings.replica_fetch_response_max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(SESSIONLESS_EPOCH)
            .with_topics(topics);
        let started = Instant::now();
        let response = tokio::select! {
            r = self.client.fetch(&request, FETCH_VERSION) => r?,
            _ = self.stop.changed() => return Ok(()),
        };
        if response.error_code != 0 {
            warn!(
                leader = self.leader_id,
                error_code = response.error_code,
                "leader refused the fetch"
            );
            for (w, _) in sent.values() {
                self.state.delay(w, self.backoff());
            }
            return Ok(());
        }
        let mut progressed = false;
        for topic in response.responses {
            let name = topic.topic.0.to_string();
            for data in topic.partitions {
                let Some((w, fetch_offset)) = sent.get(&(name.clone(), data.partition_index))
                else {
                    continue;
                };
                if self.quotas.is_follower_throttled(&w.key.0, w.key.1) {
                    let bytes = data.records.as_ref().map_or(0, |r| r.len());
                    self.quotas.record_follower(bytes as u64, now_ms());
                }
                if self.state.is_current(w) {
                    progressed |= self.process_partition(w, *fetch_offset, data).await;
                }
            }
        }
        if !progressed {
            // A leader that answers at once without data must not make us spin: no more than
            // one empty fetch per max wait, unless a partition is added meanwhile.
            let until = started + Duration::from_millis(max_wait_ms as u64);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.state.wake.notified() => {}
                _ = self.stop.changed() => {}
            }
        }
        Ok(())
    }

    /// Applies one partition's fetch answer. Returns whether the log changed (records
    /// appended, or a truncation the leader pointed at), so the next fetch goes at once.
    async fn process_partition(
        &mut self,
        w: &Work,
        fetch_offset: i64,
        data: PartitionData,
    ) -> bool {
        if data.error_code != 0 {
            if data.error_code == ErrorCode::OffsetOutOfRange.code() {
                return self.offset_out_of_range(w, data.log_start_offset).await;
            }
            self.partition_error(w, data.error_code, "Fetch");
            return false;
        }
        let diverging = &data.diverging_epoch;
        if diverging.epoch >= 0 && diverging.end_offset >= 0 {
            // The leader saw our last fetched epoch end earlier in its log (KIP-320).
            let t = truncation_point(&w.partition, diverging.epoch, diverging.end_offset);
            return self.apply_truncation(w, t).await;
        }
        let mut appended = false;
        let records = data.records.unwrap_or_default();
        let whole = whole_batches_len(&records);
        if whole > 0 {
            if w.partition.log_end_offset() != fetch_offset {
                // The log moved meanwhile (a truncation): the next round fetches afresh.
                return false;
            }
            appended = self.append(w, records.slice(..whole)).await;
        } else if !records.is_empty() {
            // Not even one whole v2 batch: a batch larger than the partition's fetch size that
            // the leader cut, or data we cannot read. Refetching at once would get the same.
            warn!(topic = %w.key.0, partition = w.key.1, fetch_offset, bytes = records.len(), "fetched records hold no whole v2 batch; is replica.fetch.max.bytes below the leader's largest batch?");
            self.state.delay(w, self.backoff());
        }
        w.partition
            .update_follower_high_watermark(data.high_watermark);
        self.follow_log_start_offset(w, data.log_start_offset).await;
        appended
    }

    async fn append(&self, w: &Work, records: Bytes) -> bool {
        let p = w.partition.clone();
        let mut buf = records.to_vec();
        let result =
            crate::offload::run_io(buf.len(), move || p.append_as_follower(&mut buf, now_ms()))
                .await;
        match result {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                // Offsets that do not continue our log mean we diverged: find out again.
                warn!(topic = %w.key.0, partition = w.key.1, error = %e, "follower append failed");
                self.state
                    .update(w, Phase::Truncating, Some(self.backoff()));
                false
            }
            Err(e) => {
                warn!(topic = %w.key.0, partition = w.key.1, error = %e, "follower append task failed");
                self.state.delay(w, self.backoff());
                false
            }
        }
    }

    /// The leader's log start moved up (retention, DeleteRecords): ours follows, within what
    /// we know to be committed (Kafka's `maybeIncrementLogStartOffset`).
    async fn follow_log_start_offset(&self, w: &Work, leader_log_start: i64) {
        let p = &w.partition;
        if leader_log_start <= p.log_start_offset() || leader_log_start > p.high_watermark() {
            return;
        }
        let p = p.clone();
        match tokio::task::spawn_blocking(move || p.delete_records_before(leader_log_start)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                warn!(topic = %w.key.0, partition = w.key.1, error = %e, "cannot advance the follower's log start offset")
            }
            Err(e) => {
                warn!(topic = %w.key.0, partition = w.key.1, error = %e, "log start offset task failed")
            }
        }
    }

    /// OFFSET_OUT_OF_RANGE (Kafka's `handleOutOfRangeError`): behind the leader's log start,
    /// the follower starts over there; otherwise (ahead of the leader's end) it truncates
    /// to where OffsetForLeaderEpoch says. The leader's log start comes with the error, or
    /// else from ListOffsets. Returns whether the log was restarted.
    async fn offset_out_of_range(&mut self, w: &Work, leader_log_start: i64) -> bool {
        let leader_log_start = if leader_log_start >= 0 {
            leader_log_start
        } else {
            match self.leader_log_start_offset(w).await {
                Ok(Some(offset)) => offset,
                Ok(None) => {
                    self.state.delay(w, self.backoff());
                    return false;
                }
                Err(e) => {
                    warn!(topic = %w.key.0, partition = w.key.1, error = %e, "cannot ask the leader for its log start offset");
                    self.client.disconnect();
                    self.state.delay(w, self.backoff());
                    return false;
                }
            }
        };
        let leo = w.partition.log_end_offset();
        if leader_log_start > leo {
            info!(topic = %w.key.0, partition = w.key.1, log_end_offset = leo, leader_log_start, "follower is behind the leader's log start; starting over there");
            let p = w.partition.clone();
            let result = tokio::task::spawn_blocking(move || {
                p.truncate_fully_and_start_at(leader_log_start)
            })
            .await;
            match result {
                Ok(Ok(())) => {
                    self.state.update(w, Phase::Fetching, None);
                    return true;
                }
                Ok(Err(e)) => {
                    warn!(topic = %w.key.0, partition = w.key.1, error = %e, "cannot restart the follower log");
                }
                Err(e) => {
                    warn!(topic = %w.key.0, partition = w.key.1, error = %e, "follower restart task failed");
                }
            }
            self.state.delay(w, self.backoff());
        } else {
            self.state
                .update(w, Phase::Truncating, Some(self.backoff()));
        }
        false
    }

    /// The leader's log start offset (ListOffsets EARLIEST as a replica), `None` when the
    /// leader answers with an error.
    async fn leader_log_start_offset(
        &mut self,
        w: &Work,
    ) -> Result<Option<i64>, LeaderClientError> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(self.node_id.into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(&w.key.0))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(w.key.1)
                    .with_current_leader_epoch(w.leader_epoch)
                    .with_timestamp(EARLIEST_TIMESTAMP)])]);
        let response = self
            .client
            .list_offsets(&request, LIST_OFFSETS_VERSION)
            .await?;
        let answer = response
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == w.key.0)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == w.key.1);
        Ok(match answer {
            Some(p) if p.error_code == 0 && p.offset >= 0 => Some(p.offset),
            Some(p) => {
                self.partition_error(w, p.error_code, "ListOffsets");
                None
            }
            None => None,
        })
    }

    /// A partition-level error: the leader moved or the epochs disagree (metadata will
    /// catch up and re-add the partition), or a failure on the leader. Retried after the
    /// backoff.
    fn partition_error(&self, w: &Work, code: i16, api: &str) {
        let error = ErrorCode::try_from_code(code)
            .map_or_else(|| format!("error code {code}"), |e| format!("{e:?}"));
        let expected = [
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::UnknownLeaderEpoch,
            ErrorCode::UnknownTopicOrPartition,
        ]
        .iter()
        .any(|e| e.code() == code);
        if expected {
            debug!(topic = %w.key.0, partition = w.key.1, leader_epoch = w.leader_epoch, api, error, "partition parked until the metadata catches up");
        } else {
            warn!(topic = %w.key.0, partition = w.key.1, api, error, "leader answered with an error");
        }
        self.state.delay(w, self.backoff());
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_batches_stop_at_a_partial_one() {
        use bytes::Bytes;
        use kafka_protocol::records::Compression;
        use kavka_protocol::records::{encode_batch, plain_record};
        let b = encode_batch(
            &[plain_record(0, 1, None, Some(Bytes::from_static(b"v")))],
            Compression::None,
        )
        .unwrap()
        .to_vec();
        let two = [b.clone(), b.clone()].concat();
        assert_eq!(whole_batches_len(&two), two.len());
        assert_eq!(whole_batches_len(&two[..two.len() - 1]), b.len());
        assert_eq!(whole_batches_len(&two[..10]), 0);
        assert_eq!(whole_batches_len(&[]), 0);
    }

    /// A follower partition of `t`-0 led by node 1 under epoch 0, over an empty log.
    fn follower(dir: &std::path::Path) -> Arc<Partition> {
        let log = kavka_storage::Log::open(dir, kavka_storage::LogConfig::default(), 0).unwrap();
        let p = Partition::new("t".into(), uuid::Uuid::nil(), 0, log);
        p.become_follower(&kavka_metadata::PartitionImage {
            partition: 0,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        });
        p
    }

    /// The fetcher's first request to a silent fake leader, then shutdown (or dropping the
    /// manager) must end the task, which closes its connection.
    #[tokio::test]
    async fn shutdown_or_drop_ends_the_fetcher_task() {
        use kafka_protocol::messages::ApiKey;
        use kafka_protocol::protocol::Decodable;
        use tokio::io::AsyncReadExt;
        use tokio::net::TcpListener;
        let limit = Duration::from_secs(10);
        for drop_manager in [false, true] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let dir = tempfile::tempdir().unwrap();
            let settings = crate::config::BrokerConfig::from_properties("", &[])
                .unwrap()
                .0
                .replication;
            let manager = FetcherManager::new(2, settings.clone());
            let endpoint = LeaderEndpoint {
                node_id: 1,
                host: "127.0.0.1".into(),
                port,
            };
            manager.add_partition(follower(dir.path()), endpoint, 0);
            assert_eq!(manager.followed(), vec![("t".to_string(), 0, 1)]);

            let (mut leader, _) = tokio::time::timeout(limit, listener.accept())
                .await
                .unwrap()
                .unwrap();
            // No epochs yet: no OffsetForLeaderEpoch, straight to a Fetch from offset 0.
            let mut prefix = [0u8; 4];
            leader.read_exact(&mut prefix).await.unwrap();
            let len = kavka_protocol::frame::frame_len(prefix, 1 << 20).unwrap();
            let mut body = vec![0u8; len];
            leader.read_exact(&mut body).await.unwrap();
            let (api, header, mut rest) =
                kavka_protocol::frame::decode_request_header(Bytes::from(body)).unwrap();
            assert_eq!(api, ApiKey::Fetch);
            let req = FetchRequest::decode(&mut rest, header.request_api_version).unwrap();
            assert_eq!(req.replica_id.0, 2);
            assert_eq!(req.max_wait_ms, settings.replica_fetch_wait_max_ms);
            assert_eq!(req.max_bytes, settings.replica_fetch_response_max_bytes);
            let part = &req.topics[0].partitions[0];
            assert_eq!((part.fetch_offset, part.current_leader_epoch), (0, 0));
            assert_eq!(part.partition_max_bytes, settings.replica_fetch_max_bytes);

            if drop_manager {
                drop(manager);
            } else {
                manager.shutdown();
                assert!(manager.followed().is_empty());
            }
            let mut byte = [0u8; 1];
            let n = tokio::time::timeout(limit, leader.read(&mut byte))
                .await
                .expect("the fetcher kept its connection open")
                .unwrap_or(0);
            assert_eq!(n, 0, "drop_manager={drop_manager}");
            // And it does not come back (a task still running would reconnect at once).
            let again = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
            assert!(
                again.is_err(),
                "drop_manager={drop_manager}: the fetcher reconnected"
            );
        }
    }

    /// With the follower rate used up, the throttled partition is left out of the fetch and
    /// the unthrottled one stays; with tokens left (or no rate) nothing is left out.
    #[test]
    fn throttled_partitions_are_left_out_while_the_bucket_is_empty() {
        use super::super::throttle::ThrottledReplicas;
        let dir = tempfile::tempdir().unwrap();
        let p = follower(dir.path());
        let work = |partition: i32| Work {
            key: ("t".to_string(), partition),
            partition: p.clone(),
            leader_epoch: 0,
            version: 0,
        };
        let keys = |parts: &[Work]| parts.iter().map(|w| w.key.1).collect::<Vec<_>>();
        let quotas = ReplicationQuotas::new(2);
        let mut parts = vec![work(0), work(1)];
        // No rate configured: nothing held, however much was fetched.
        quotas.record_follower(1 << 30, 0);
        assert_eq!(hold_back_throttled(&mut parts, &quotas, 0), 0);
        quotas.set_follower(
            Some(1000),
            std::collections::HashMap::from([("t".to_string(), ThrottledReplicas::parse("0:2"))]),
            0,
        );
        assert_eq!(hold_back_throttled(&mut parts, &quotas, 0), 0);
        assert_eq!(keys(&parts), vec![0, 1]);
        // A fetch of 1500 throttled bytes puts the bucket 500 bytes in debt.
        quotas.record_follower(1500, 0);
        assert_eq!(hold_back_throttled(&mut parts, &quotas, 100), 1);
        assert_eq!(keys(&parts), vec![1]);
        // Half a second later at 1000 bytes/s the debt is paid and a byte is back.
        let mut parts = vec![work(0), work(1)];
        assert_eq!(hold_back_throttled(&mut parts, &quotas, 501), 0);
        assert_eq!(keys(&parts), vec![0, 1]);
        // The replica listed for another broker is not throttled here.
        quotas.set_follower(
            Some(1),
            std::collections::HashMap::from([("t".to_string(), ThrottledReplicas::parse("0:3"))]),
            0,
        );
        quotas.record_follower(10, 0);
        assert_eq!(hold_back_throttled(&mut parts, &quotas, 0), 0);
    }

    #[test]
    fn endpoint_address_brackets_ipv6() {
        let e = |host: &str| LeaderEndpoint {
            node_id: 1,
            host: host.into(),
            port: 9092,
        };
        assert_eq!(e("127.0.0.1").addr(), "127.0.0.1:9092");
        assert_eq!(e("::1").addr(), "[::1]:9092");
    }
}
