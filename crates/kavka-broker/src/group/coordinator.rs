//! The group coordinator: owns every group whose `__consumer_offsets` partition this broker
//! leads (on a single node: all of them).
//!
//! State is sharded by `__consumer_offsets` partition. A shard's lock is held while a change
//! is validated, appended to its partition and applied in memory, so the log's order is the
//! memory's order and a replay rebuilds exactly what clients were told. Appends are small
//! page-cache writes; waiting for fsync (when the log asks for it) happens after the lock is
//! released; waiting for the ISR to have the write (Kafka's acks=-1) likewise.
//!
//! In a cluster a shard lives where its partition's leader is: [`leadership`] follows the
//! metadata image, replays a shard when this broker becomes its leader and drops it when
//! leadership moves away.

pub use super::append_wait::AppendWait;
use super::classic::{
    ClassicGroup, ClassicLimits, ClassicState, JoinRequest, JoinResult, MemberSummary, Outcome,
    SyncRequest, SyncResult,
};
use super::config::GroupConfig;
use super::consumer::{ConsumerGroup, ConsumerGroupConfig, TopicInfo, TopicResolver};
use super::offsets::CommittedOffsets;
use super::record::{self, GroupRecord, OffsetValue};
use crate::replica_manager::{now_ms, ReplicaManager};
use bytes::Bytes;
use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup as DescribedConsumerGroup;
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::records::Record;
use kavka_metadata::{Controller, CreateTopicSpec, TopicDefaults};
use kavka_protocol::error::ErrorCode;
use kavka_protocol::records::{ControlType, TxnMarker};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// The internal topic holding groups and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Kafka's group → partition mapping: `abs(groupId.hashCode) % partitions`, with Java's
/// String.hashCode over UTF-16 code units, so a group lands where Kafka would put it.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The kind of group behind an id: classic (JoinGroup/SyncGroup) or consumer (KIP-848).
/// An empty group of one kind turns into the other when a member of the other protocol
/// arrives, as in Kafka.
#[allow(clippy::large_enum_variant)] // Classic groups are the common case: kept inline.
pub enum GroupKind {
    Classic(ClassicGroup),
    Consumer(Box<ConsumerGroup>),
}

pub struct Group {
    pub kind: GroupKind,
    pub offsets: CommittedOffsets,
    /// TxnOffsetCommit offsets per producer id, written to the log but not committed: the
    /// producer's transaction marker moves them into `offsets` (COMMIT, each only if its
    /// record is newer than the committed one) or drops them (ABORT). Never fetched.
    pub pending: BTreeMap<i64, CommittedOffsets>,
}

impl Group {
    fn classic(id: &str, now: i64) -> Self {
        Group::new(GroupKind::Classic(ClassicGroup::new(id.to_string(), now)))
    }

    fn new(kind: GroupKind) -> Self {
        Group {
            kind,
            offsets: CommittedOffsets::default(),
            pending: BTreeMap::new(),
        }
    }

    /// Whether an open transaction holds an offset for `topic`/`partition` (OffsetFetch
    /// with require_stable answers UNSTABLE_OFFSET_COMMIT for it, expiry keeps it).
    pub fn has_pending(&self, topic: &str, partition: i32) -> bool {
        self.pending.values().any(|o| o.contains(topic, partition))
    }

    /// Applies an offset tombstone: the committed offset and every pending transactional
    /// one of `topic`/`partition` go, as the tombstone's replay does.
    fn remove_offset(&mut self, topic: &str, partition: i32) {
        self.offsets.remove(topic, partition);
        for o in self.pending.values_mut() {
            o.remove(topic, partition);
        }
        self.pending.retain(|_, o| !o.is_empty());
    }

    /// Partitions with a pending transactional offset and no committed one, sorted.
    fn pending_only(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = self
            .pending
            .values()
            .flat_map(|o| o.iter())
            .filter(|(t, p, _)| !self.offsets.contains(t, *p))
            .map(|(t, p, _)| (t.to_string(), p))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Ends `producer_id`'s transaction for this group. Returns whether it had offsets.
    fn end_txn(&mut self, producer_id: i64, control: ControlType) -> bool {
        let Some(done) = self.pending.remove(&producer_id) else {
            return false;
        };
        if control == ControlType::Commit {
            self.offsets.merge_committed(done);
        }
        true
    }

    pub fn state_name(&self) -> &'static str {
        match &self.kind {
            GroupKind::Classic(g) => g.state().name(),
            GroupKind::Consumer(g) => g.state().name(),
        }
    }

    pub fn protocol_type(&self) -> &str {
        match &self.kind {
            GroupKind::Classic(g) => g.protocol_type().unwrap_or(""),
            GroupKind::Consumer(_) => "consumer",
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            GroupKind::Classic(_) => "classic",
            GroupKind::Consumer(_) => "consumer",
        }
    }

    /// No members (offsets may remain).
    pub fn is_empty(&self) -> bool {
        match &self.kind {
            GroupKind::Classic(g) => g.is_empty(),
            GroupKind::Consumer(g) => g.is_empty(),
        }
    }
}

/// A group's last stored form, while replaying.
enum StoredGroup {
    Classic(record::GroupValue),
    Consumer(Bytes),
}

/// Where a shard stands on this broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardStatus {
    /// Another broker leads the partition: requests hear NOT_COORDINATOR.
    NotCoordinator,
    /// This broker leads it; the replay is pending (`claimed: false`) or running.
    /// Requests hear COORDINATOR_LOAD_IN_PROGRESS.
    Loading {
        claimed: bool,
    },
    Loaded,
}

struct Shard {
    status: ShardStatus,
    /// Moves at every election and resignation: a replay started under an older epoch
    /// finished too late and is discarded.
    epoch: u64,
    /// The partition's leader epoch this broker was elected in (unknown before
    /// leadership is followed).
    leader_epoch: Option<i32>,
    groups: HashMap<String, Group>,
}

impl Shard {
    fn new(status: ShardStatus) -> Self {
        Shard {
            status,
            epoch: 0,
            leader_epoch: None,
            groups: HashMap::new(),
        }
    }

    fn is_loaded(&self) -> bool {
        self.status == ShardStatus::Loaded
    }
}

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Who commits: a group member (generation or member epoch), or an admin/simple consumer
/// (generation -1, no member id).
#[derive(Debug, Clone)]
pub struct Committer {
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// OffsetCommit v2-4: -1 means the broker's offsets.retention.minutes.
    pub retention_time_ms: i64,
}

pub struct GroupDescription {
    pub group_id: String,
    pub error: Option<ErrorCode>,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
    /// False for an unknown group (reported as Dead, or GROUP_ID_NOT_FOUND from v6).
    pub found: bool,
}

pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    pub group_type: String,
}

/// A classic group's stored record, awaiting its replication.
struct StoreAt {
    partition: i32,
    /// The shard's epoch when stored.
    epoch: u64,
    group_id: String,
    last_offset: i64,
}

/// LeaveGroup: per member, in the request's order.
pub type MemberCodes = Vec<Result<(), ErrorCode>>;

/// Per topic, per partition: `None` for success or the error.
pub type PartitionCodes = Vec<(String, Vec<(i32, Option<ErrorCode>)>)>;

/// A fetched committed offset; `None` when the group has none for the partition.
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<OffsetValue>)>)>;

/// One partition of an OffsetFetch that may ask for stable offsets: the committed offset
/// (`None`: there is none), or UNSTABLE_OFFSET_COMMIT while a transaction holds a pending
/// offset for it.
pub type FetchedOffset = Result<Option<OffsetValue>, ErrorCode>;

/// [`FetchedOffsets`] with per-partition errors.
pub type StableFetchedOffsets = Vec<(String, Vec<(i32, FetchedOffset)>)>;

/// Who commits transactional offsets (TxnOffsetCommit): the transaction's producer and,
/// from v3, the group member it consumes as. Before v3 (and for producers that consume
/// outside group management) the member id is empty and the generation -1.
#[derive(Debug, Clone)]
pub struct TxnCommitter {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// What [`GroupCoordinator::offset_records`] gives: per-partition codes, the records to
/// append, and the accepted partitions.
type OffsetRecords<'a> = (
    Vec<Option<ErrorCode>>,
    Vec<(Bytes, Option<Bytes>)>,
    Vec<(usize, &'a CommitPartition, OffsetValue)>,
);

/// A failed append fails every partition it carried.
fn fail_accepted(
    codes: &mut [Option<ErrorCode>],
    accepted: &[(usize, &CommitPartition, OffsetValue)],
    e: ErrorCode,
) {
    for (i, _, _) in accepted {
        if let Some(c) = codes.get_mut(*i) {
            *c = Some(e);
        }
    }
}

pub struct GroupCoordinator {
    config: GroupConfig,
    replicas: Arc<ReplicaManager>,
    controller: Arc<Controller>,
    shards: OnceLock<Vec<Mutex<Shard>>>,
    /// Serialises the lazy creation of `__consumer_offsets`.
    creating: Mutex<()>,
    /// Replication factor `__consumer_offsets` is created with (capped at the live brokers).
    offsets_topic_replication_factor: i16,
    /// Where replays run when leadership arrives (listeners are called synchronously, on
    /// whichever thread committed the metadata change).
    runtime: Option<tokio::runtime::Handle>,
    /// Set by [`GroupCoordinator::follow_leadership`]: shards follow partition leadership.
    /// Unset (single node, until startup switches), every shard is this broker's.
    me: OnceLock<Weak<GroupCoordinator>>,
    /// The offset of the last metadata image whose leadership was applied; serialises
    /// applications so an older image never undoes a newer one.
    applied_image: Mutex<i64>,
    /// The metadata image offset KIP-848 groups last saw (topic changes move targets).
    seen_metadata_offset: std::sync::atomic::AtomicI64,
}

/// The metadata image as KIP-848 groups see topics.
struct ImageTopics<'a>(&'a kavka_metadata::MetadataImage);

impl TopicResolver for ImageTopics<'_> {
    fn by_name(&self, name: &str) -> Option<TopicInfo> {
        self.0.topic(name).map(|t| TopicInfo {
            name: t.name.clone(),
            id: t.topic_id,
            partitions: t.partitions.len() as i32,
        })
    }

    fn by_id(&self, id: uuid::Uuid) -> Option<TopicInfo> {
        self.0.topic_by_id(&id).map(|t| TopicInfo {
            name: t.name.clone(),
            id: t.topic_id,
            partitions: t.partitions.len() as i32,
        })
    }

    fn names(&self) -> Vec<String> {
        self.0.topics.keys().cloned().collect()
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Longest group id, member id, instance id, client id or protocol name kept. Flexible
/// request versions carry strings longer than the int16-prefixed strings of the
/// `__consumer_offsets` records; refusing them here keeps what is stored what was asked.
pub const MAX_NAME_LEN: usize = 1024;

/// Most protocols one JoinGroup may offer (clients send one to three).
pub const MAX_JOIN_PROTOCOLS: usize = 64;

fn valid_group_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_NAME_LEN
}

impl GroupCoordinator {
    pub fn new(
        config: GroupConfig,
        replicas: Arc<ReplicaManager>,
        controller: Arc<Controller>,
    ) -> Self {
        GroupCoordinator {
            config,
            replicas,
            controller,
            shards: OnceLock::new(),
            creating: Mutex::new(()),
            offsets_topic_replication_factor: 3,
            runtime: tokio::runtime::Handle::try_current().ok(),
            me: OnceLock::new(),
            applied_image: Mutex::new(i64::MIN),
            seen_metadata_offset: std::sync::atomic::AtomicI64::new(-1),
        }
    }

    /// offsets.topic.replication.factor (default 3, Kafka's); the topic is created with
    /// at most as many replicas as there are live brokers, and at least one.
    pub fn with_offsets_topic_replication_factor(mut self, replication_factor: i16) -> Self {
        self.offsets_topic_replication_factor = replication_factor.max(1);
        self
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn limits(&self) -> ClassicLimits {
        ClassicLimits {
            initial_rebalance_delay_ms: self.config.initial_rebalance_delay_ms,
            max_size: self.config.max_size,
        }
    }

    /// At start: if `__consumer_offsets` exists, replays it. Blocking (reads the logs).
    pub fn load_existing(&self) {
        if self.init_existing() {
            self.load_all();
        }
    }

    /// At start, before the broker listens: sets up one unloaded shard per partition of an
    /// existing `__consumer_offsets` (requests for them get COORDINATOR_LOAD_IN_PROGRESS
    /// until [`Self::load_all`] has replayed them, as in Kafka). Returns whether it exists.
    pub fn init_existing(&self) -> bool {
        match self.controller.image().topic(OFFSETS_TOPIC) {
            Some(t) => {
                self.init_shards(t.partitions.len());
                true
            }
            None => false,
        }
    }

    /// One shard per partition. Single node: each awaits its replay. Following
    /// leadership: none is ours until the image says so.
    fn init_shards(&self, partitions: usize) -> &[Mutex<Shard>] {
        let status = if self.follows_leadership() {
            ShardStatus::NotCoordinator
        } else {
            ShardStatus::Loading { claimed: false }
        };
        self.shards.get_or_init(|| {
            (0..partitions)
                .map(|_| Mutex::new(Shard::new(status)))
                .collect()
        })
    }

    fn init_and_load(&self, partitions: usize) {
        self.init_shards(partitions);
        self.load_all();
    }

    /// Replays every shard awaiting its replay. Blocking (reads the logs). A shard is
    /// claimed before it is read, so two loaders never replay the same one.
    pub fn load_all(&self) {
        let Some(shards) = self.shards.get() else {
            return;
        };
        let started = std::time::Instant::now();
        let mut groups = 0;
        for p in 0..shards.len() {
            groups += self.load_shard(p as i32).unwrap_or(0);
        }
        tracing::info!(
            partitions = shards.len(),
            groups,
            "group coordinator loaded {OFFSETS_TOPIC} in {} ms",
            started.elapsed().as_millis()
        );
    }

    /// Replays one shard if it awaits its replay; returns how many groups it loaded, or
    /// `None` when there was nothing to do or the replay turned stale. Blocking.
    fn load_shard(&self, p: i32) -> Option<usize> {
        let epoch = self.claim_load(p)?;
        let loaded = self.load_partition(p);
        let n = loaded.len();
        self.finish_load(p, epoch, loaded).then_some(n)
    }

    /// Marks a pending replay as running; returns the epoch it runs under.
    fn claim_load(&self, p: i32) -> Option<u64> {
        let shard = self.shards.get()?.get(usize::try_from(p).ok()?)?;
        let mut s = lock(shard);
        if s.status != (ShardStatus::Loading { claimed: false }) {
            return None;
        }
        s.status = ShardStatus::Loading { claimed: true };
        Some(s.epoch)
    }

    /// Installs a replay's groups, unless leadership moved since it was claimed (then it
    /// is dropped: another replay, or none, is the right one). Returns whether installed.
    fn finish_load(&self, p: i32, epoch: u64, loaded: HashMap<String, Group>) -> bool {
        let Some(shard) = self
            .shards
            .get()
            .and_then(|s| s.get(usize::try_from(p).ok()?))
        else {
            return false;
        };
        let mut s = lock(shard);
        if s.epoch != epoch || s.status != (ShardStatus::Loading { claimed: true }) {
            tracing::info!(
                partition = p,
                "discarding a stale {OFFSETS_TOPIC} replay (leadership moved meanwhile)"
            );
            return false;
        }
        debug_assert!(
            s.groups.is_empty(),
            "requests never touch an unloaded shard"
        );
        s.groups = loaded;
        // Topics deleted while the broker was down take their offsets with them.
        self.drop_offsets_of_deleted_topics(p, &mut s, &self.controller.image(), now_ms());
        s.status = ShardStatus::Loaded;
        true
    }

    /// Replays one partition: the last record per key wins, tombstones delete.
    fn load_partition(&self, p: i32) -> HashMap<String, Group> {
        let mut groups: HashMap<String, Group> = HashMap::new();
        let Some(part) = self.replicas.get(OFFSETS_TOPIC, p) else {
            tracing::error!(
                partition = p,
                "{OFFSETS_TOPIC} partition is not hosted here"
            );
            return groups;
        };
        let now = now_ms();
        let mut metadata: HashMap<String, Option<StoredGroup>> = HashMap::new();
        let mut offsets: HashMap<String, CommittedOffsets> = HashMap::new();
        // Transactional offsets awaiting their producer's marker: producer id → group →
        // offsets (Kafka's pendingTransactionalOffsets).
        let mut pending: HashMap<i64, HashMap<String, CommittedOffsets>> = HashMap::new();
        let mut pos = part.log_start_offset();
        loop {
            // To the log end, not the high watermark (Kafka's LOG_END isolation): a new
            // leader's HW trails its log until the followers catch up, and everything in its
            // log is what it will replicate.
            let bytes = match part
                .read_plan_for_follower(pos, 1 << 20, true)
                .map(|plan| plan.execute())
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::error!(partition = p, "cannot read {OFFSETS_TOPIC}: {e}");
                    break;
                }
                Err(e) => {
                    tracing::error!(partition = p, "cannot read {OFFSETS_TOPIC}: {e}");
                    break;
                }
            };
            if bytes.is_empty() {
                break;
            }
            let batches = match kavka_protocol::records::decode_batches_detailed(&bytes, 256 << 20)
            {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(
                        partition = p,
                        offset = pos,
                        "corrupt {OFFSETS_TOPIC} batch: {e}"
                    );
                    break;
                }
            };
            for batch in batches {
                pos = pos.max(batch.header.next_offset());
                let producer_id = batch.header.producer_id;
                if batch.header.is_control() {
                    // A transaction marker: its producer's pending offsets are committed
                    // (each unless a later plain commit's record is newer) or dropped.
                    let control = batch
                        .records
                        .first()
                        .and_then(|r| r.key.as_deref())
                        .and_then(kavka_protocol::records::decode_control_key);
                    let (Some(control), Some(done)) = (control, pending.remove(&producer_id))
                    else {
                        continue;
                    };
                    if control == ControlType::Commit {
                        for (g, o) in done {
                            offsets.entry(g).or_default().merge_committed(o);
                        }
                    }
                    continue;
                }
                let txn =
                    (batch.header.is_transactional() && producer_id >= 0).then_some(producer_id);
                for r in batch.records {
                    let Some(key) = r.key else { continue };
                    match record::decode(&key, r.value.as_deref()) {
                        Ok(Some(GroupRecord::Offset(k, Some(v)))) => {
                            let o = match txn {
                                Some(pid) => {
                                    pending.entry(pid).or_default().entry(k.group).or_default()
                                }
                                None => offsets.entry(k.group).or_default(),
                            };
                            o.put(&k.topic, k.partition, v, r.offset);
                        }
                        // A tombstone clears the committed offset and any pending one.
                        Ok(Some(GroupRecord::Offset(k, None))) => {
                            if let Some(o) = offsets.get_mut(&k.group) {
                                o.remove(&k.topic, k.partition);
                            }
                            for groups in pending.values_mut() {
                                if let Some(o) = groups.get_mut(&k.group) {
                                    o.remove(&k.topic, k.partition);
                                }
                            }
                        }
                        // The group's last stored form wins, whichever protocol wrote it; a
                        // tombstone clears only its own kind.
                        Ok(Some(GroupRecord::Group(g, v))) => match v {
                            Some(v) => {
                                metadata.insert(g, Some(StoredGroup::Classic(v)));
                            }
                            None => {
                                if let Some(e) = metadata.get_mut(&g) {
                                    if matches!(e, Some(StoredGroup::Classic(_))) {
                                        *e = None;
                                    }
                                }
                            }
                        },
                        Ok(Some(GroupRecord::ConsumerGroup(g, v))) => match v {
                            Some(v) => {
                                metadata.insert(g, Some(StoredGroup::Consumer(v)));
                            }
                            None => {
                                if let Some(e) = metadata.get_mut(&g) {
                                    if matches!(e, Some(StoredGroup::Consumer(_))) {
                                        *e = None;
                                    }
                                }
                            }
                        },
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(
                                partition = p,
                                offset = r.offset,
                                "skipping bad record: {e}"
                            )
                        }
                    }
                }
            }
        }
        for (id, v) in metadata {
            let kind = match v {
                None => continue,
                Some(StoredGroup::Classic(v)) => {
                    GroupKind::Classic(ClassicGroup::from_stored(id.clone(), v, now))
                }
                Some(StoredGroup::Consumer(bytes)) => {
                    match self.consumer_from_snapshot(&id, &bytes, now) {
                        Some(g) => GroupKind::Consumer(Box::new(g)),
                        None => continue,
                    }
                }
            };
            groups.insert(id, Group::new(kind));
        }
        for (id, o) in offsets {
            if o.is_empty() {
                continue;
            }
            groups
                .entry(id.clone())
                .or_insert_with(|| Group::classic(&id, now))
                .offsets = o;
        }
        // Transactions still open at the log end stay pending: the transaction coordinator
        // writes their markers later (WriteTxnMarkers).
        for (pid, by_group) in pending {
            for (id, o) in by_group {
                if o.is_empty() {
                    continue;
                }
                groups
                    .entry(id.clone())
                    .or_insert_with(|| Group::classic(&id, now))
                    .pending
                    .insert(pid, o);
            }
        }
        groups
    }

    /// A consumer group from its snapshot record; a bad snapshot loses the membership (the
    /// members rejoin), never the offsets.
    fn consumer_from_snapshot(&self, id: &str, bytes: &[u8], now: i64) -> Option<ConsumerGroup> {
        match ConsumerGroup::from_snapshot(id.to_string(), self.consumer_config(), bytes, now) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::error!(group = %id, "bad consumer group snapshot, members must rejoin: {e}");
                None
            }
        }
    }

    /// After any change to a consumer group: store its snapshot if it changed. Returns
    /// what to wait for before the change is acknowledged (`None`: nothing was written).
    fn store_consumer(
        &self,
        partition: i32,
        g: &mut ConsumerGroup,
        now: i64,
    ) -> Result<Option<AppendWait>, ErrorCode> {
        if !g.take_dirty() {
            return Ok(None);
        }
        let record = (
            record::consumer_group_key(g.group_id()),
            Some(g.to_snapshot()),
        );
        self.append(partition, vec![record], now)
    }

    /// FindCoordinator: makes sure `__consumer_offsets` exists (Kafka creates it on first
    /// use) and, on a single node, is loaded. Blocking (the metadata log fsyncs).
    pub fn ensure_ready(&self) -> Result<(), ErrorCode> {
        if self.shards.get().is_some() {
            return Ok(());
        }
        let _g = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        if self.shards.get().is_some() {
            return Ok(());
        }
        self.create_offsets_topic()?;
        let image = self.controller.image();
        if self.follows_leadership() {
            // The creation's image reached the listener already; applying it again is
            // harmless and covers a topic another broker created first.
            self.apply_leadership(&image);
            return Ok(());
        }
        let partitions = image
            .topic(OFFSETS_TOPIC)
            .map(|t| t.partitions.len())
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        self.init_and_load(partitions);
        Ok(())
    }

    /// Creates `__consumer_offsets` unless it exists, with offsets.topic.replication.factor
    /// replicas capped at the live brokers. Blocking.
    fn create_offsets_topic(&self) -> Result<(), ErrorCode> {
        let image = self.controller.image();
        if image.topic(OFFSETS_TOPIC).is_none() {
            let live = i16::try_from(image.live_brokers().count()).unwrap_or(i16::MAX);
            let replication_factor = self.offsets_topic_replication_factor.min(live).max(1);
            let mut configs = BTreeMap::new();
            configs.insert("cleanup.policy".to_string(), "compact".to_string());
            configs.insert(
                "segment.bytes".to_string(),
                self.config.offsets_topic_segment_bytes.to_string(),
            );
            let spec = CreateTopicSpec {
                name: OFFSETS_TOPIC.to_string(),
                num_partitions: self.config.offsets_topic_num_partitions,
                replication_factor,
                assignments: Vec::new(),
                configs,
            };
            let defaults = TopicDefaults {
                num_partitions: self.config.offsets_topic_num_partitions,
                replication_factor,
            };
            let result = self.controller.create_topics(vec![spec], false, &defaults);
            if let Some(Err(e)) = result.into_iter().next() {
                if self.controller.image().topic(OFFSETS_TOPIC).is_none() {
                    tracing::error!("cannot create {OFFSETS_TOPIC}: {e}");
                    return Err(ErrorCode::CoordinatorNotAvailable);
                }
            }
            tracing::info!(replication_factor, "created {OFFSETS_TOPIC}");
        }
        Ok(())
    }

    fn shard_of(&self, group_id: &str) -> Result<(i32, &Mutex<Shard>), ErrorCode> {
        let shards = self
            .shards
            .get()
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let p = partition_for(group_id, shards.len() as i32);
        let shard = shards
            .get(p as usize)
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        Ok((p, shard))
    }

    /// Runs `f` on the shard holding `group_id`, once it is loaded.
    fn with_shard<R>(
        &self,
        group_id: &str,
        f: impl FnOnce(i32, &mut Shard) -> R,
    ) -> Result<R, ErrorCode> {
        if !valid_group_id(group_id) {
            return Err(ErrorCode::InvalidGroupId);
        }
        let (p, shard) = self.shard_of(group_id)?;
        let mut s = lock(shard);
        match s.status {
            ShardStatus::Loaded => Ok(f(p, &mut s)),
            ShardStatus::Loading { .. } => Err(ErrorCode::CoordinatorLoadInProgress),
            ShardStatus::NotCoordinator => Err(ErrorCode::NotCoordinator),
        }
    }

    /// Appends records to a `__consumer_offsets` partition. Called with the shard locked.
    /// The write is acknowledged once the returned wait resolves (replicated, and fsynced
    /// when the log asks for it).
    fn append(
        &self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
        now: i64,
    ) -> Result<Option<AppendWait>, ErrorCode> {
        self.append_batch(partition, records, now, None)
    }

    /// [`Self::append`], as one batch. With `txn` (a producer id and epoch) the batch is
    /// transactional, as Kafka's coordinator writes a TxnOffsetCommit: that producer's
    /// ongoing transaction on the partition, ended by its marker; no sequence (-1), the
    /// coordinator's writes are not deduplicated. The i-th record lands at
    /// `wait.last_offset() - (n - 1) + i` (see [`record_offsets`]).
    fn append_batch(
        &self,
        partition: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
        now: i64,
        txn: Option<(i64, i16)>,
    ) -> Result<Option<AppendWait>, ErrorCode> {
        if records.is_empty() {
            return Ok(None);
        }
        let part = self
            .replicas
            .get(OFFSETS_TOPIC, partition)
            .ok_or(ErrorCode::NotCoordinator)?;
        let records: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(i, (key, value))| {
                let mut r = kavka_protocol::records::plain_record(i as i64, now, Some(key), value);
                if let Some((producer_id, producer_epoch)) = txn {
                    r.transactional = true;
                    r.producer_id = producer_id;
                    r.producer_epoch = producer_epoch;
                }
                r
            })
            .collect();
        // A big group's metadata (every member's subscription and assignment) is
        // compressed so it stays under the topic's max.message.bytes for longer.
        let raw_len: usize = records
            .iter()
            .map(|r| r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len))
            .sum();
        let compression = if raw_len > 64 * 1024 {
            kafka_protocol::records::Compression::Lz4
        } else {
            kafka_protocol::records::Compression::None
        };
        let encoded =
            kavka_protocol::records::encode_batch(&records, compression).map_err(|e| {
                tracing::error!("cannot encode group records: {e}");
                ErrorCode::UnknownServerError
            })?;
        // Freshly encoded, so uniquely owned: no copy to get it mutable.
        let mut buf = encoded
            .try_into_mut()
            .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
        match part.append(&mut buf, now) {
            Ok((info, _)) if info.duplicate => {
                // The log took the batch for a retry of an earlier one and wrote nothing;
                // the coordinator never retries, so its memory would not match the log.
                tracing::error!(
                    partition,
                    "{OFFSETS_TOPIC} refused a coordinator write as a duplicate batch"
                );
                Err(ErrorCode::UnknownServerError)
            }
            Ok((info, fsync)) => Ok(Some(AppendWait::new(
                part,
                info.last_offset,
                fsync,
                Duration::from_millis(self.config.offsets_commit_timeout_ms),
            ))),
            Err(e) => {
                let code = crate::handlers::partition_error_code(&e, OFFSETS_TOPIC, partition);
                tracing::warn!(partition, "cannot append to {OFFSETS_TOPIC}: {e}");
                if txn.is_some() && is_producer_fencing(code) {
                    // TxnOffsetCommit tells the producer it is fenced, as Kafka does.
                    return Err(code);
                }
                Err(super::append_wait::store_error(code))
            }
        }
    }

    /// After any change to a classic group: store its metadata if it changed, then release
    /// or fail the SyncGroups parked on that store once the ISR has it (at once when it
    /// already does: a single node). `epoch` is the shard's, checked when a late
    /// replication completes. Returns what a request that changed the group (LeaveGroup)
    /// waits for before it is answered; `None` when nothing was stored.
    fn store_classic(
        &self,
        partition: i32,
        epoch: u64,
        g: &mut ClassicGroup,
        now: i64,
    ) -> Option<AppendWait> {
        if !g.take_needs_store() {
            return None;
        }
        let value = record::group_value(&g.to_stored());
        match self.append(
            partition,
            vec![(record::group_key(&g.group_id), Some(value))],
            now,
        ) {
            Ok(Some(wait)) if !wait.is_replicated() => {
                let at = StoreAt {
                    partition,
                    epoch,
                    group_id: g.group_id.clone(),
                    last_offset: wait.last_offset(),
                };
                g.store_in_flight(at.last_offset);
                let acked = wait.clone();
                if let Err(wait) = self.complete_store_later(at, wait) {
                    // Not following leadership (a single node) or outside a runtime:
                    // nothing else will replicate it, the local append is what we have.
                    drop(wait);
                    g.on_stored();
                    return None;
                }
                Some(acked)
            }
            Ok(wait) => {
                g.on_stored();
                wait
            }
            Err(code) => {
                g.on_store_failed(code, self.limits(), now);
                None
            }
        }
    }

    /// Waits for a classic group's record to be replicated off the shard lock, then
    /// answers its parked SyncGroups (or fails them and rebalances, as Kafka's store
    /// callback does). Gives the wait back when there is nowhere to run it.
    fn complete_store_later(&self, at: StoreAt, wait: AppendWait) -> Result<(), AppendWait> {
        let (Some(me), Some(rt)) = (self.me.get().and_then(Weak::upgrade), &self.runtime) else {
            return Err(wait);
        };
        rt.spawn(async move {
            let result = wait.replicated().await;
            me.finish_store(&at, result);
        });
        Ok(())
    }

    /// The replication of a classic group's record ended. Ignored when the shard changed
    /// hands since (its waiters were answered NOT_COORDINATOR) or a later store of the
    /// group superseded this one (that one answers them).
    fn finish_store(&self, at: &StoreAt, result: Result<(), ErrorCode>) {
        let Some(shard) = self
            .shards
            .get()
            .and_then(|s| s.get(usize::try_from(at.partition).ok()?))
        else {
            return;
        };
        let mut s = lock(shard);
        if s.epoch != at.epoch || !s.is_loaded() {
            return;
        }
        let Some(Group {
            kind: GroupKind::Classic(g),
            ..
        }) = s.groups.get_mut(&at.group_id)
        else {
            return;
        };
        if !g.is_store_in_flight(at.last_offset) {
            return;
        }
        match result {
            Ok(()) => g.on_stored(),
            Err(code) => g.on_store_failed(code, self.limits(), now_ms()),
        }
        self.store_classic(at.partition, at.epoch, g, now_ms());
    }

    fn new_member_id(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    /// JoinGroup. Request-level checks (timeouts, sizes) come first, then the state machine.
    pub fn join_group(&self, group_id: &str, req: JoinRequest) -> Outcome<JoinResult> {
        let member_id = req.member_id.clone();
        let fail = |e: ErrorCode| Outcome::Done(JoinResult::error(e, &member_id));
        if !valid_group_id(group_id) {
            return fail(ErrorCode::InvalidGroupId);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(ErrorCode::InvalidSessionTimeout);
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        // The leader receives every member's metadata and the group record stores it: one
        // member's offer is bounded as a whole, not per protocol.
        let metadata_bytes: usize = req.protocols.iter().map(|(_, m)| m.len()).sum();
        let long_name = req.protocol_type.len() > MAX_NAME_LEN
            || req.member_id.len() > MAX_NAME_LEN
            || req
                .group_instance_id
                .as_ref()
                .is_some_and(|i| i.len() > MAX_NAME_LEN)
            || req.protocols.iter().any(|(n, _)| n.len() > MAX_NAME_LEN);
        if metadata_bytes > self.config.member_metadata_max_bytes
            || req.protocols.len() > MAX_JOIN_PROTOCOLS
            || long_name
        {
            return fail(ErrorCode::InvalidRequest);
        }
        let now = now_ms();
        let limits = self.limits();
        // Member ids are `<instance or client id>-<uuid>`; a long client id (the header
        // allows 32 KiB) is cut so the id stays within MAX_NAME_LEN.
        let mut prefix = req
            .group_instance_id
            .clone()
            .unwrap_or_else(|| req.client_id.clone());
        let mut cut = prefix.len().min(MAX_NAME_LEN - 40);
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
        let r = self.with_shard(group_id, |p, shard| {
            let epoch = shard.epoch;
            if !shard.groups.contains_key(group_id) {
                if !req.member_id.is_empty() {
                    return Outcome::Done(JoinResult::error(
                        ErrorCode::UnknownMemberId,
                        &req.member_id,
                    ));
                }
                shard
                    .groups
                    .insert(group_id.to_string(), Group::classic(group_id, now));
            }
            let Some(group) = shard.groups.get_mut(group_id) else {
                return Outcome::Done(JoinResult::error(ErrorCode::UnknownServerError, ""));
            };
            if let GroupKind::Consumer(c) = &group.kind {
                if !c.is_empty() {
                    return Outcome::Done(JoinResult::error(
                        ErrorCode::InconsistentGroupProtocol,
                        &req.member_id,
                    ));
                }
                group.kind = GroupKind::Classic(ClassicGroup::new(group_id.to_string(), now));
            }
            let GroupKind::Classic(g) = &mut group.kind else {
                return Outcome::Done(JoinResult::error(ErrorCode::UnknownServerError, ""));
            };
            let out = g.join(req, Self::new_member_id(&prefix), limits, now);
            self.store_classic(p, epoch, g, now);
            out
        });
        r.unwrap_or_else(fail)
    }

    pub fn sync_group(&self, group_id: &str, req: SyncRequest) -> Outcome<SyncResult> {
        let now = now_ms();
        let r = self.with_shard(group_id, |p, shard| {
            let epoch = shard.epoch;
            let Some(group) = shard.groups.get_mut(group_id) else {
                return Outcome::Done(SyncResult::error(ErrorCode::UnknownMemberId));
            };
            let GroupKind::Classic(g) = &mut group.kind else {
                return Outcome::Done(SyncResult::error(ErrorCode::UnknownMemberId));
            };
            let out = g.sync(req, now);
            self.store_classic(p, epoch, g, now);
            out
        });
        r.unwrap_or_else(|e| Outcome::Done(SyncResult::error(e)))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ErrorCode> {
        let now = now_ms();
        self.with_shard(group_id, |_, shard| match shard.groups.get_mut(group_id) {
            None => Err(ErrorCode::UnknownMemberId),
            Some(group) => match &mut group.kind {
                GroupKind::Classic(g) => g.heartbeat(member_id, instance_id, generation_id, now),
                GroupKind::Consumer(_) => Err(ErrorCode::UnknownMemberId),
            },
        })?
    }

    /// LeaveGroup: one error per member, or a group-level error, and what to wait for
    /// before answering when the group's record was stored.
    pub fn leave_group(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<(MemberCodes, Option<AppendWait>), ErrorCode> {
        let now = now_ms();
        let limits = self.limits();
        self.with_shard(group_id, |p, shard| {
            let epoch = shard.epoch;
            match shard.groups.get_mut(group_id) {
                None => (vec![Err(ErrorCode::UnknownMemberId); members.len()], None),
                Some(Group {
                    kind: GroupKind::Consumer(_),
                    ..
                }) => (vec![Err(ErrorCode::UnknownMemberId); members.len()], None),
                Some(group) => {
                    let GroupKind::Classic(g) = &mut group.kind else {
                        return (Vec::new(), None);
                    };
                    let codes = members
                        .iter()
                        .map(|(m, i)| g.leave(m, i.as_deref(), limits, now))
                        .collect();
                    let wait = self.store_classic(p, epoch, g, now);
                    (codes, wait)
                }
            }
        })
    }

    /// OffsetCommit. Returns one code per partition (the group-level error, if any, applies
    /// to all) and what to wait for before answering.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        who: &Committer,
        parts: &[CommitPartition],
    ) -> (Vec<Option<ErrorCode>>, Option<AppendWait>) {
        let now = now_ms();
        let image = self.controller.image();
        let all = |e: ErrorCode| (vec![Some(e); parts.len()], None);
        let r = self.with_shard(group_id, |p, shard| {
            let exists = shard.groups.contains_key(group_id);
            if !exists {
                if who.generation_id >= 0 {
                    return all(ErrorCode::IllegalGeneration);
                }
                if !who.member_id.is_empty() {
                    return all(ErrorCode::UnknownMemberId);
                }
            }
            let group = shard
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::classic(group_id, now));
            if let Err(e) = validate_commit(group, who) {
                return all(e);
            }
            let expire =
                (who.retention_time_ms >= 0).then(|| now.saturating_add(who.retention_time_ms));
            let (mut codes, records, accepted) =
                self.offset_records(&image, group_id, parts, now, expire);
            let n = records.len();
            match self.append(p, records, now) {
                Ok(wait) => {
                    let at = record_offsets(wait.as_ref(), n);
                    for ((_, c, v), at) in accepted.into_iter().zip(at) {
                        group.offsets.put(&c.topic, c.partition, v, at);
                    }
                    (codes, wait)
                }
                Err(e) => {
                    fail_accepted(&mut codes, &accepted, e);
                    (codes, None)
                }
            }
        });
        r.unwrap_or_else(all)
    }

    /// OffsetFetch for one group. `topics: None` means every committed offset.
    /// `member` is OffsetFetch v9's member id and epoch, checked against KIP-848 groups.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        member: Option<(&str, i32)>,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<FetchedOffsets, ErrorCode> {
        let fetched = self.fetch_offsets_stable(group_id, member, topics, false)?;
        Ok(fetched
            .into_iter()
            .map(|(t, parts)| {
                let parts = parts
                    .into_iter()
                    .map(|(p, v)| {
                        debug_assert!(v.is_ok(), "only require_stable fails a partition");
                        (p, v.ok().flatten())
                    })
                    .collect();
                (t, parts)
            })
            .collect())
    }

    /// [`Self::fetch_offsets`] with OffsetFetch v7's `require_stable`: a partition with a
    /// pending transactional offset in the group answers UNSTABLE_OFFSET_COMMIT (the
    /// consumer retries until the transaction ends) instead of the committed offset.
    /// Pending offsets never show otherwise.
    pub fn fetch_offsets_stable(
        &self,
        group_id: &str,
        member: Option<(&str, i32)>,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> Result<StableFetchedOffsets, ErrorCode> {
        self.with_shard(group_id, |_, shard| {
            let group = shard.groups.get(group_id);
            if let (
                Some((member_id, epoch)),
                Some(Group {
                    kind: GroupKind::Consumer(c),
                    ..
                }),
            ) = (member, group)
            {
                c.validate_offset_fetch(member_id, epoch)
                    .map_err(|e| e.code())?;
            }
            let fetch = |t: &str, p: i32| -> FetchedOffset {
                let Some(g) = group else { return Ok(None) };
                if require_stable && g.has_pending(t, p) {
                    return Err(ErrorCode::UnstableOffsetCommit);
                }
                Ok(g.offsets.get(t, p).cloned())
            };
            Ok(match topics {
                Some(topics) => topics
                    .into_iter()
                    .map(|(t, parts)| {
                        let got = parts.into_iter().map(|p| (p, fetch(&t, p))).collect();
                        (t, got)
                    })
                    .collect(),
                None => {
                    let mut out: StableFetchedOffsets = Vec::new();
                    if let Some(g) = group {
                        for (t, p, _) in g.offsets.iter() {
                            let v = fetch(t, p);
                            match out.last_mut() {
                                Some((last, parts)) if last == t => parts.push((p, v)),
                                _ => out.push((t.to_string(), vec![(p, v)])),
                            }
                        }
                    }
                    out
                }
            })
        })?
    }

    /// TxnOffsetCommit: validates the group like OffsetCommit (an anonymous producer, empty
    /// member id and generation -1, is always accepted: TxnOffsetCommit v0-2 carry no
    /// member), then appends the offsets as one transactional batch of the producer. They
    /// stay pending, invisible to OffsetFetch, until the producer's marker reaches this
    /// partition ([`Self::write_txn_marker`]). Returns one code per partition and what to
    /// wait for before answering.
    pub fn commit_txn_offsets(
        &self,
        group_id: &str,
        who: &TxnCommitter,
        parts: &[CommitPartition],
    ) -> (Vec<Option<ErrorCode>>, Option<AppendWait>) {
        let now = now_ms();
        let image = self.controller.image();
        let all = |e: ErrorCode| (vec![Some(e); parts.len()], None);
        if who.producer_id < 0 || who.producer_epoch < 0 {
            return all(ErrorCode::InvalidProducerIdMapping);
        }
        if who.member_id.len() > MAX_NAME_LEN
            || who
                .group_instance_id
                .as_ref()
                .is_some_and(|i| i.len() > MAX_NAME_LEN)
        {
            return all(ErrorCode::InvalidRequest);
        }
        let r = self.with_shard(group_id, |p, shard| {
            match shard.groups.get(group_id) {
                Some(group) => {
                    if let Err(e) = validate_txn_commit(group, who) {
                        return all(e);
                    }
                }
                // Kafka creates a "simple" group for a commit from outside group
                // management; a generation means the member's group is gone.
                None if who.generation_id >= 0 => return all(ErrorCode::IllegalGeneration),
                None => {}
            }
            let (mut codes, records, accepted) =
                self.offset_records(&image, group_id, parts, now, None);
            if records.is_empty() {
                return (codes, None);
            }
            let n = records.len();
            match self.append_batch(p, records, now, Some((who.producer_id, who.producer_epoch))) {
                Ok(wait) => {
                    let group = shard
                        .groups
                        .entry(group_id.to_string())
                        .or_insert_with(|| Group::classic(group_id, now));
                    let pending = group.pending.entry(who.producer_id).or_default();
                    let at = record_offsets(wait.as_ref(), n);
                    for ((_, c, v), at) in accepted.into_iter().zip(at) {
                        pending.put(&c.topic, c.partition, v, at);
                    }
                    (codes, wait)
                }
                Err(e) => {
                    fail_accepted(&mut codes, &accepted, e);
                    (codes, None)
                }
            }
        });
        r.unwrap_or_else(all)
    }

    /// The offset records of an (OffsetCommit or TxnOffsetCommit) commit: per partition
    /// UNKNOWN_TOPIC_OR_PARTITION, OFFSET_METADATA_TOO_LARGE or accepted, with the records to
    /// append and the accepted partitions (index into the codes, request entry, value).
    fn offset_records<'a>(
        &self,
        image: &kavka_metadata::MetadataImage,
        group_id: &str,
        parts: &'a [CommitPartition],
        now: i64,
        expire_timestamp: Option<i64>,
    ) -> OffsetRecords<'a> {
        let mut codes = Vec::with_capacity(parts.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for c in parts {
            let known = image
                .topic(&c.topic)
                .is_some_and(|t| t.partitions.contains_key(&c.partition));
            let code = if !known {
                Some(ErrorCode::UnknownTopicOrPartition)
            } else if c
                .metadata
                .as_ref()
                .is_some_and(|m| m.len() > self.config.offset_metadata_max_bytes)
            {
                Some(ErrorCode::OffsetMetadataTooLarge)
            } else {
                let value = OffsetValue {
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone().unwrap_or_default(),
                    commit_timestamp: now,
                    expire_timestamp,
                };
                records.push((
                    record::offset_key(group_id, &c.topic, c.partition),
                    Some(record::offset_value(&value)),
                ));
                accepted.push((codes.len(), c, value));
                None
            };
            codes.push(code);
        }
        (codes, records, accepted)
    }

    fn consumer_config(&self) -> ConsumerGroupConfig {
        ConsumerGroupConfig {
            session_timeout_ms: self.config.consumer_session_timeout_ms,
            heartbeat_interval_ms: self.config.consumer_heartbeat_interval_ms,
            max_size: self.config.consumer_max_size,
            ..ConsumerGroupConfig::default()
        }
    }

    /// ConsumerGroupHeartbeat (KIP-848). An empty classic group of the same id becomes a
    /// consumer group (its offsets stay); a classic group with members is not ours to take.
    /// A successful answer comes with what to wait for before it goes out when the
    /// heartbeat changed the group and its snapshot was written.
    pub fn consumer_group_heartbeat(
        &self,
        req: &ConsumerGroupHeartbeatRequest,
        client: &crate::router::ClientInfo,
    ) -> Result<(ConsumerGroupHeartbeatResponse, Option<AppendWait>), (ErrorCode, String)> {
        if !self.config.consumer_protocol_enabled {
            return Err((
                ErrorCode::UnsupportedVersion,
                "the consumer group protocol is disabled (group.coordinator.rebalance.protocols)"
                    .into(),
            ));
        }
        let now = now_ms();
        let image = self.controller.image();
        let topics = ImageTopics(&image);
        let group_id = req.group_id.as_str();
        let r = self.with_shard(group_id, |p, shard| {
            let created = !shard.groups.contains_key(group_id);
            let group = shard.groups.entry(group_id.to_string()).or_insert_with(|| {
                Group::new(GroupKind::Consumer(Box::new(ConsumerGroup::new(
                    group_id.to_string(),
                    self.consumer_config(),
                ))))
            });
            if let GroupKind::Classic(c) = &group.kind {
                if !c.is_empty() {
                    return Err((
                        ErrorCode::GroupIdNotFound,
                        format!("group {group_id} is not a consumer group"),
                    ));
                }
                group.kind = GroupKind::Consumer(Box::new(ConsumerGroup::new(
                    group_id.to_string(),
                    self.consumer_config(),
                )));
            }
            let GroupKind::Consumer(c) = &mut group.kind else {
                return Err((ErrorCode::UnknownServerError, String::new()));
            };
            let r = c
                .heartbeat(req, &client.client_id, &client.client_host, &topics, now)
                .map_err(|e| (e.code(), e.message()));
            if r.is_err() && created && c.is_empty() {
                shard.groups.remove(group_id);
                return r.map(|resp| (resp, None));
            }
            // The answer goes out only once the group's new state is stored (and, by the
            // caller, replicated).
            let wait = self
                .store_consumer(p, c, now)
                .map_err(|e| (e, "cannot store the group's state".to_string()))?;
            r.map(|resp| (resp, wait))
        });
        r.map_err(|e| (e, String::new()))?
    }

    /// ConsumerGroupDescribe for one group.
    pub fn consumer_group_describe(
        &self,
        group_id: &str,
    ) -> Result<DescribedConsumerGroup, (ErrorCode, String)> {
        let image = self.controller.image();
        let topics = ImageTopics(&image);
        self.with_shard(group_id, |_, shard| match shard.groups.get(group_id) {
            Some(Group {
                kind: GroupKind::Consumer(c),
                ..
            }) => Ok(c.describe(&topics)),
            Some(_) => Err((
                ErrorCode::GroupIdNotFound,
                format!("group {group_id} is not a consumer group"),
            )),
            None => Err((
                ErrorCode::GroupIdNotFound,
                format!("group {group_id} not found"),
            )),
        })
        .map_err(|e| (e, String::new()))?
    }

    /// OffsetDelete: refused for topics the group's members are subscribed to. Returns
    /// what to wait for before answering when tombstones were written.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<(PartitionCodes, Option<AppendWait>), ErrorCode> {
        let now = now_ms();
        self.with_shard(group_id, |p, shard| {
            let Some(group) = shard.groups.get_mut(group_id) else {
                return Err(ErrorCode::GroupIdNotFound);
            };
            let subscribed = match &group.kind {
                GroupKind::Classic(g) => {
                    if g.is_empty() {
                        None
                    } else if g.protocol_type() == Some("consumer") {
                        g.subscribed_topics()
                    } else {
                        return Err(ErrorCode::NonEmptyGroup);
                    }
                }
                GroupKind::Consumer(c) if c.is_empty() => None,
                GroupKind::Consumer(c) => Some(c.subscribed_topic_names()),
            };
            let mut records = Vec::new();
            let mut out = Vec::new();
            for (t, parts) in topics {
                let busy = subscribed.as_ref().is_some_and(|s| s.contains(t));
                let mut codes = Vec::new();
                for &part in parts {
                    if busy {
                        codes.push((part, Some(ErrorCode::GroupSubscribedToTopic)));
                    } else {
                        if group.offsets.get(t, part).is_some() {
                            records.push((record::offset_key(group_id, t, part), None));
                        }
                        codes.push((part, None));
                    }
                }
                out.push((t.clone(), codes));
            }
            let wait = self.append(p, records, now)?;
            for (t, codes) in &out {
                for (part, code) in codes {
                    if code.is_none() && group.offsets.contains(t, *part) {
                        group.remove_offset(t, *part);
                    }
                }
            }
            Ok((out, wait))
        })?
    }

    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let mut d = GroupDescription {
            group_id: group_id.to_string(),
            error: None,
            state: "Dead".into(),
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
            found: false,
        };
        let r = self.with_shard(group_id, |_, shard| {
            if let Some(group) = shard.groups.get(group_id) {
                d.found = true;
                match &group.kind {
                    // DescribeGroups knows classic groups only (KIP-848 groups answer
                    // ConsumerGroupDescribe).
                    GroupKind::Consumer(_) => d.found = false,
                    GroupKind::Classic(g) => {
                        let (protocol, members) = g.describe();
                        d.state = g.state().name().into();
                        d.protocol_type = g.protocol_type().unwrap_or("").into();
                        d.protocol = protocol;
                        d.members = members;
                    }
                }
            }
        });
        if let Err(e) = r {
            d.error = Some(e);
        }
        d
    }

    /// ListGroups over every loaded shard, filtered by state and type (case-insensitive).
    pub fn list_groups(
        &self,
        states: &[String],
        types: &[String],
    ) -> Result<Vec<ListedGroup>, ErrorCode> {
        let Some(shards) = self.shards.get() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for shard in shards {
            let s = lock(shard);
            match s.status {
                ShardStatus::Loaded => {}
                ShardStatus::Loading { .. } => return Err(ErrorCode::CoordinatorLoadInProgress),
                // Another broker lists that partition's groups.
                ShardStatus::NotCoordinator => continue,
            }
            for (id, g) in &s.groups {
                let state = g.state_name();
                if !states.is_empty() && !states.iter().any(|x| x.eq_ignore_ascii_case(state)) {
                    continue;
                }
                if !types.is_empty() && !types.iter().any(|x| x.eq_ignore_ascii_case(g.type_name()))
                {
                    continue;
                }
                out.push(ListedGroup {
                    group_id: id.clone(),
                    protocol_type: g.protocol_type().to_string(),
                    state: state.to_string(),
                    group_type: g.type_name().to_string(),
                });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// WriteTxnMarkers on `__consumer_offsets` partition `partition`: writes `marker` under
    /// the shard lock (so the log's order stays the memory's order) and ends the producer's
    /// transaction in every group of the shard: its pending offsets become committed
    /// (COMMIT; each only if its record is newer than the committed offset's, Kafka's rule)
    /// or are dropped (ABORT). Errors: NOT_COORDINATOR when this broker does not lead the
    /// partition, COORDINATOR_LOAD_IN_PROGRESS while the shard replays (the caller retries),
    /// the producer-fencing codes of the log as they are, otherwise what a failed group
    /// write answers. The wait resolves once the marker is replicated.
    pub fn write_txn_marker(
        &self,
        partition: i32,
        marker: &TxnMarker,
    ) -> Result<Option<AppendWait>, ErrorCode> {
        let shard = self
            .shards
            .get()
            .and_then(|s| s.get(usize::try_from(partition).ok()?))
            .ok_or(ErrorCode::NotCoordinator)?;
        let mut s = lock(shard);
        match s.status {
            ShardStatus::Loaded => {}
            ShardStatus::Loading { .. } => return Err(ErrorCode::CoordinatorLoadInProgress),
            ShardStatus::NotCoordinator => return Err(ErrorCode::NotCoordinator),
        }
        let part = self
            .replicas
            .get(OFFSETS_TOPIC, partition)
            .ok_or(ErrorCode::NotCoordinator)?;
        let now = now_ms();
        let (info, fsync) = part.append_txn_marker(marker, now).map_err(|e| {
            let code = crate::handlers::partition_error_code(&e, OFFSETS_TOPIC, partition);
            tracing::warn!(
                partition,
                producer_id = marker.producer_id,
                "cannot write a transaction marker to {OFFSETS_TOPIC}: {e}"
            );
            if is_producer_fencing(code) {
                code
            } else {
                super::append_wait::store_error(code)
            }
        })?;
        // Every group of the shard: a transaction's offsets are few groups' at most, and a
        // marker is written once per transaction and partition.
        let mut ended = 0;
        for group in s.groups.values_mut() {
            if group.end_txn(marker.producer_id, marker.control) {
                ended += 1;
            }
        }
        tracing::debug!(
            partition,
            producer_id = marker.producer_id,
            control = ?marker.control,
            groups = ended,
            "transaction ended in {OFFSETS_TOPIC}"
        );
        Ok(Some(AppendWait::new(
            part,
            info.last_offset,
            fsync,
            Duration::from_millis(self.config.offsets_commit_timeout_ms),
        )))
    }

    /// DeleteGroups for one group: only an empty group can go; its offsets go with it,
    /// pending transactional ones included (tombstones, as Kafka's coordinator writes).
    /// Returns what to wait for before answering.
    pub fn delete_group(&self, group_id: &str) -> Result<Option<AppendWait>, ErrorCode> {
        let now = now_ms();
        self.with_shard(group_id, |p, shard| {
            let Some(group) = shard.groups.get_mut(group_id) else {
                return Err(ErrorCode::GroupIdNotFound);
            };
            if !group.is_empty() {
                return Err(ErrorCode::NonEmptyGroup);
            }
            let wait = self.append(p, tombstones(group_id, group), now)?;
            if let Some(Group {
                kind: GroupKind::Classic(mut c),
                ..
            }) = shard.groups.remove(group_id)
            {
                c.mark_dead(now);
            }
            Ok(wait)
        })?
    }

    /// Timer: session and rebalance deadlines of every group.
    pub fn tick(&self) {
        let Some(shards) = self.shards.get() else {
            return;
        };
        let now = now_ms();
        let limits = self.limits();
        let image = self.controller.image();
        let topics = ImageTopics(&image);
        let metadata_changed = self
            .seen_metadata_offset
            .swap(image.offset, std::sync::atomic::Ordering::Relaxed)
            != image.offset;
        for (p, shard) in shards.iter().enumerate() {
            let mut s = lock(shard);
            if !s.is_loaded() {
                continue;
            }
            if metadata_changed {
                self.drop_offsets_of_deleted_topics(p as i32, &mut s, &image, now);
            }
            let epoch = s.epoch;
            for group in s.groups.values_mut() {
                match &mut group.kind {
                    GroupKind::Classic(g) => {
                        if g.is_empty() && g.state() == ClassicState::Empty {
                            continue;
                        }
                        g.tick(limits, now);
                        self.store_classic(p as i32, epoch, g, now);
                    }
                    GroupKind::Consumer(g) => {
                        if metadata_changed {
                            g.on_metadata_change(&topics);
                        }
                        if g.next_deadline().is_some_and(|d| d <= now) {
                            for id in g.expire(now, &topics) {
                                tracing::info!(group = %g.group_id(), member = %id, "consumer group member expired");
                            }
                        }
                        // A failed store is logged; the group's next change stores it whole.
                        if let Err(e) = self.store_consumer(p as i32, g, now) {
                            tracing::warn!(group = %g.group_id(), "cannot store consumer group: {e:?}");
                        }
                    }
                }
            }
        }
    }

    /// A deleted topic's committed offsets go with it (as in Kafka), so a new topic of the
    /// same name does not inherit them.
    fn drop_offsets_of_deleted_topics(
        &self,
        partition: i32,
        shard: &mut Shard,
        image: &kavka_metadata::MetadataImage,
        now: i64,
    ) {
        for (id, group) in shard.groups.iter_mut() {
            let mut gone: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(t, _, _)| image.topic(t).is_none())
                .map(|(t, p, _)| (t.to_string(), p))
                .collect();
            gone.extend(
                group
                    .pending_only()
                    .into_iter()
                    .filter(|(t, _)| image.topic(t).is_none()),
            );
            if gone.is_empty() {
                continue;
            }
            let records = gone
                .iter()
                .map(|(t, p)| (record::offset_key(id, t, *p), None))
                .collect();
            if self.append(partition, records, now).is_ok() {
                for (t, p) in &gone {
                    group.remove_offset(t, *p);
                }
                tracing::info!(group = %id, offsets = gone.len(), "dropped offsets of deleted topics");
            }
        }
    }

    /// offsets.retention.minutes: drops expired offsets of empty groups, then groups left
    /// with neither members nor offsets.
    pub fn expire_offsets(&self) -> usize {
        let Some(shards) = self.shards.get() else {
            return 0;
        };
        let now = now_ms();
        let retention = self.config.offsets_retention_ms;
        let mut expired_total = 0;
        for (p, shard) in shards.iter().enumerate() {
            let mut s = lock(shard);
            if !s.is_loaded() {
                continue;
            }
            let mut dead = Vec::new();
            let ids: Vec<String> = s.groups.keys().cloned().collect();
            for id in ids {
                let Some(group) = s.groups.get_mut(&id) else {
                    continue;
                };
                // An empty group's offsets age from when it emptied (or their commit). An
                // active group keeps the offsets of the topics it subscribes to; those of
                // topics it dropped age from their commit (Kafka's KIP-211 rules).
                let (base, subscribed) = match &group.kind {
                    GroupKind::Classic(g) if g.state() == ClassicState::Empty => {
                        let base = if g.protocol_type().is_some() {
                            g.state_timestamp()
                        } else {
                            i64::MIN
                        };
                        (base, None)
                    }
                    GroupKind::Classic(g) if g.state() == ClassicState::Stable => {
                        match g.subscribed_topics() {
                            Some(topics) => (i64::MIN, Some(topics)),
                            None => continue,
                        }
                    }
                    GroupKind::Classic(_) => continue,
                    GroupKind::Consumer(c) if c.is_empty() => (i64::MIN, None),
                    GroupKind::Consumer(c) => (i64::MIN, Some(c.subscribed_topic_names())),
                };
                let mut expired = group.offsets.expired(now, retention, base);
                if let Some(keep) = &subscribed {
                    expired.retain(|(t, _)| !keep.contains(t));
                }
                // An offset an open transaction is about to replace is not expired, and a
                // group with open transactions stays (Kafka's cleanupExpiredOffsets).
                expired.retain(|(t, part)| !group.has_pending(t, *part));
                let empties = group.is_empty()
                    && group.offsets.len() == expired.len()
                    && group.pending.is_empty();
                if expired.is_empty() && !empties {
                    continue;
                }
                let mut records: Vec<(Bytes, Option<Bytes>)> = expired
                    .iter()
                    .map(|(t, part)| (record::offset_key(&id, t, *part), None))
                    .collect();
                if empties {
                    records.push((record::group_key(&id), None));
                    records.push((record::consumer_group_key(&id), None));
                }
                if self.append(p as i32, records, now).is_err() {
                    continue;
                }
                for (t, part) in &expired {
                    group.remove_offset(t, *part);
                }
                expired_total += expired.len();
                if empties {
                    dead.push(id);
                }
            }
            for id in dead {
                tracing::info!(group = %id, "group removed: empty and no offsets left");
                s.groups.remove(&id);
            }
        }
        expired_total
    }
}

/// The log offsets of the `n` records of one appended batch, in order.
fn record_offsets(wait: Option<&AppendWait>, n: usize) -> impl Iterator<Item = i64> {
    let last = wait.map_or(-1, AppendWait::last_offset);
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    debug_assert!(wait.is_some() || n == 0, "records were appended");
    (0..n).map(move |i| last - (n - 1) + i)
}

/// Append errors a transactional write reports as they are: the producer is a zombie, or
/// its transaction or coordinator is no longer current.
fn is_producer_fencing(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidProducerEpoch
            | ErrorCode::ProducerFenced
            | ErrorCode::InvalidTxnState
            | ErrorCode::TransactionCoordinatorFenced
    )
}

/// Tombstones for a group's metadata and every offset it committed or has pending.
fn tombstones(group_id: &str, group: &Group) -> Vec<(Bytes, Option<Bytes>)> {
    let mut v: Vec<(Bytes, Option<Bytes>)> = group
        .offsets
        .iter()
        .map(|(t, p, _)| (record::offset_key(group_id, t, p), None))
        .collect();
    v.extend(
        group
            .pending_only()
            .iter()
            .map(|(t, p)| (record::offset_key(group_id, t, *p), None)),
    );
    v.push((record::group_key(group_id), None));
    v.push((record::consumer_group_key(group_id), None));
    v
}

/// Kafka's OffsetCommit checks for a classic group.
fn validate_commit(group: &Group, who: &Committer) -> Result<(), ErrorCode> {
    match &group.kind {
        GroupKind::Classic(g) => {
            if who.generation_id < 0 && who.member_id.is_empty() {
                // Admin tools and consumers without group management.
                return if g.state() == ClassicState::Empty || g.is_empty() {
                    Ok(())
                } else {
                    Err(ErrorCode::UnknownMemberId)
                };
            }
            match g.state() {
                ClassicState::Dead => return Err(ErrorCode::CoordinatorNotAvailable),
                ClassicState::Empty => return Err(ErrorCode::UnknownMemberId),
                _ => {}
            }
            // A fenced static member hears FENCED_INSTANCE_ID, as on Heartbeat.
            g.check_member(&who.member_id, who.group_instance_id.as_deref())?;
            if who.generation_id != g.generation() {
                return Err(ErrorCode::IllegalGeneration);
            }
            if g.state() == ClassicState::CompletingRebalance {
                return Err(ErrorCode::RebalanceInProgress);
            }
            Ok(())
        }
        GroupKind::Consumer(c) => c
            .validate_offset_commit(&who.member_id, who.generation_id)
            .map_err(|e| e.code()),
    }
}

/// Kafka's TxnOffsetCommit checks (`validateOffsetCommit` with `isTransactional`): like
/// OffsetCommit's, but a producer naming no member (v0-2, or no group management) is
/// accepted whatever the group's state, and a rebalance does not refuse the commit.
fn validate_txn_commit(group: &Group, who: &TxnCommitter) -> Result<(), ErrorCode> {
    let anonymous =
        who.generation_id < 0 && who.member_id.is_empty() && who.group_instance_id.is_none();
    match &group.kind {
        GroupKind::Classic(g) => {
            if g.state() == ClassicState::Dead {
                return Err(ErrorCode::CoordinatorNotAvailable);
            }
            if anonymous || (who.generation_id < 0 && g.is_empty()) {
                return Ok(());
            }
            g.check_member(&who.member_id, who.group_instance_id.as_deref())?;
            if who.generation_id != g.generation() {
                return Err(ErrorCode::IllegalGeneration);
            }
            Ok(())
        }
        GroupKind::Consumer(c) => {
            if anonymous {
                return Ok(());
            }
            c.validate_offset_commit(&who.member_id, who.generation_id)
                .map_err(|e| match e.code() {
                    ErrorCode::StaleMemberEpoch => ErrorCode::IllegalGeneration,
                    code => code,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_partition_matches_kafka() {
        // Java: "hello".hashCode() == 99162322; "polygenelubricants".hashCode() is
        // Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
        assert_eq!(partition_for("hello", 50), 99162322 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 50), 0);
        for p in [1, 7, 50] {
            assert!((0..p).contains(&partition_for("some group ☃", p)));
        }
    }
}

#[path = "leadership.rs"]
mod leadership;
pub use leadership::{CoordinatorNode, LeadershipListener};

#[cfg(test)]
#[path = "coordinator_tests.rs"]
mod coordinator_tests;
