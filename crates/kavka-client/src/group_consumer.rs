//! A consumer that joins a classic consumer group: JoinGroup / SyncGroup with the
//! "consumer" protocol and the range assignor run here when this member leads, Heartbeat
//! on its own connection in the background, offsets committed on an interval and at
//! close, LeaveGroup at close. Rebalances are eager: everything is committed and revoked
//! before rejoining.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    SyncGroupRequest,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{BrokerMetadata, ClientConfig, Cluster};
use crate::connection::{Connection, ConnectionOptions};
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetSpec};
use crate::consumer_protocol::{self, Assignment, Subscriber, PROTOCOL_TYPE, RANGE_ASSIGNOR};
use crate::coordinator::{self, group_codes::*, group_error};
use crate::error::{codes, ClientError};
use crate::group_admin::{self, str_bytes, OffsetAndMetadata, TopicPartition};
use crate::Result;

/// Rounds of JoinGroup + SyncGroup tried before giving up on joining.
const JOIN_ATTEMPTS: u32 = 10;
/// The heartbeat task's verdict while all is well.
const HEARTBEAT_OK: i16 = codes::NONE;
/// The heartbeat task could not reach the coordinator for a whole session timeout.
const HEARTBEAT_LOST: i16 = -100;

/// Group settings, named after the Java consumer's configs.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id` (static membership).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms`: the rebalance timeout sent in JoinGroup.
    pub rebalance_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `auto.commit.interval.ms`; `None` when `enable.auto.commit=false` (commits happen
    /// only on [`GroupConsumer::commit`], before a rebalance and at close).
    pub auto_commit_interval: Option<Duration>,
    /// `auto.offset.reset`: where a partition without a committed offset (or with one
    /// outside the log) starts, [`OffsetSpec::Earliest`] or [`OffsetSpec::Latest`].
    pub auto_offset_reset: OffsetSpec,
}

impl GroupConfig {
    pub fn new(group_id: impl Into<String>) -> Self {
        GroupConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(3),
            auto_commit_interval: Some(Duration::from_secs(5)),
            auto_offset_reset: OffsetSpec::Latest,
        }
    }
}

/// This member's place in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    member_id: String,
    /// -1 until the first successful join.
    generation_id: i32,
    protocol_name: Option<String>,
    coordinator: Option<BrokerMetadata>,
}

struct Heartbeat {
    task: JoinHandle<()>,
    /// HEARTBEAT_OK, a Kafka error code, or HEARTBEAT_LOST.
    status: Arc<AtomicI16>,
}

pub struct GroupConsumer {
    client: ClientConfig,
    consumer_config: ConsumerConfig,
    config: GroupConfig,
    topics: Vec<String>,
    /// For group requests; fetches go through `consumer`'s own cluster.
    cluster: Cluster,
    /// Reads the current assignment; `None` while nothing is assigned.
    consumer: Option<Consumer>,
    membership: Membership,
    assignment: Assignment,
    /// Next offset to commit per partition: one past the last record consumed.
    consumed: BTreeMap<TopicPartition, i64>,
    committed: BTreeMap<TopicPartition, i64>,
    heartbeat: Option<Heartbeat>,
    last_commit: Instant,
    needs_join: bool,
}

impl GroupConsumer {
    /// Connects; the group is joined on the first [`GroupConsumer::poll`].
    pub async fn connect(
        client: ClientConfig,
        consumer_config: ConsumerConfig,
        config: GroupConfig,
        topics: Vec<String>,
    ) -> Result<Self> {
        if config.group_id.is_empty() {
            return Err(ClientError::InvalidArgument("the group id is empty".into()));
        }
        if topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group consumer needs at least one topic".into(),
            ));
        }
        let mut cluster = Cluster::connect(client.clone()).await?;
        // The leader assigns only topics that exist, and nothing triggers a rebalance when
        // one appears later: a typo should be an error, not a silent wait.
        for t in &topics {
            cluster.topic(t).await?;
        }
        Ok(GroupConsumer {
            client,
            consumer_config,
            config,
            topics,
            cluster,
            consumer: None,
            membership: Membership {
                member_id: String::new(),
                generation_id: -1,
                protocol_name: None,
                coordinator: None,
            },
            assignment: Assignment::new(),
            consumed: BTreeMap::new(),
            committed: BTreeMap::new(),
            heartbeat: None,
            last_commit: Instant::now(),
            needs_join: true,
        })
    }

    pub fn member_id(&self) -> &str {
        &self.membership.member_id
    }

    pub fn generation_id(&self) -> i32 {
        self.membership.generation_id
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    /// Joins (or rejoins) when needed, commits when the interval is up, and fetches from
    /// the assigned partitions. Returns no records while nothing is assigned.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        self.check_heartbeat();
        if self.needs_join {
            self.join().await?;
        }
        if let Some(interval) = self.config.auto_commit_interval {
            if self.last_commit.elapsed() >= interval {
                self.commit_quietly().await;
            }
        }
        let Some(consumer) = self.consumer.as_mut() else {
            // Nothing assigned (more members than partitions): wait as a fetch would.
            tokio::time::sleep(self.consumer_config.max_wait).await;
            return Ok(Vec::new());
        };
        match consumer.poll().await {
            Ok(records) => Ok(records),
            Err(e) if e.code() == Some(codes::OFFSET_OUT_OF_RANGE) => {
                tracing::info!("{e}; resetting positions outside the log");
                self.reset_out_of_range().await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Records that `record` was processed: its offset + 1 is committed next time.
    pub fn mark_consumed(&mut self, record: &ConsumerRecord) {
        let tp = (record.topic.clone(), record.partition);
        if self
            .assignment
            .get(&record.topic)
            .is_some_and(|ps| ps.contains(&record.partition))
        {
            let next = record.offset.saturating_add(1);
            let entry = self.consumed.entry(tp).or_insert(next);
            *entry = (*entry).max(next);
        }
    }

    /// Commits what was consumed since the last commit, with this member's generation.
    pub async fn commit(&mut self) -> Result<()> {
        self.last_commit = Instant::now();
        let pending: BTreeMap<TopicPartition, OffsetAndMetadata> = self
            .consumed
            .iter()
            .filter(|(tp, o)| self.committed.get(*tp) != Some(*o))
            .map(|(tp, o)| (tp.clone(), OffsetAndMetadata::new(*o)))
            .collect();
        if pending.is_empty() || self.membership.generation_id < 0 {
            return Ok(());
        }
        let group = self.config.group_id.clone();
        let generation = self.membership.generation_id;
        let member_id = self.membership.member_id.clone();
        let instance = self.config.group_instance_id.clone();
        let (_, resp) =
            coordinator::coordinator_request(&mut self.cluster, &group, Duration::ZERO, |v| {
                Ok(group_admin::offset_commit_request(
                    v,
                    &group,
                    generation,
                    &member_id,
                    instance.as_deref(),
                    &pending,
                ))
            })
            .await?;
        let results =
            group_admin::parse_offset_commit(&group, pending.keys().cloned().collect(), &resp);
        let mut first_error = None;
        for (tp, result) in results {
            match result {
                Ok(()) => {
                    if let Some(o) = pending.get(&tp) {
                        self.committed.insert(tp, o.offset);
                    }
                }
                Err(e) => {
                    if matches!(
                        e.code(),
                        Some(REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION | UNKNOWN_MEMBER_ID)
                    ) {
                        self.needs_join = true;
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Commits, stops heartbeating and leaves the group (a static member stays, so its
    /// restart within the session timeout causes no rebalance).
    pub async fn close(mut self) -> Result<()> {
        self.stop_heartbeat();
        if self.membership.generation_id < 0 {
            return Ok(());
        }
        // A poll cancelled by the caller (an idle timeout, a signal) may have left a group
        // request's answer unread on our connections: close on fresh ones.
        self.cluster = Cluster::connect(self.client.clone()).await?;
        let committed = self.commit().await;
        if self.config.group_instance_id.is_none() {
            if let Err(e) = self.leave().await {
                tracing::debug!("leave group: {e}");
            }
        }
        committed
    }

    async fn commit_quietly(&mut self) {
        if let Err(e) = self.commit().await {
            tracing::warn!("offset commit failed: {e}");
        }
    }

    fn check_heartbeat(&mut self) {
        let Some(hb) = &self.heartbeat else {
            return;
        };
        match hb.status.load(Ordering::Relaxed) {
            HEARTBEAT_OK => {}
            code => {
                tracing::info!("heartbeat: {}; rejoining", heartbeat_reason(code));
                if matches!(code, UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID) {
                    self.membership.member_id.clear();
                    self.membership.generation_id = -1;
                }
                self.needs_join = true;
                self.stop_heartbeat();
            }
        }
    }

    fn stop_heartbeat(&mut self) {
        if let Some(hb) = self.heartbeat.take() {
            hb.task.abort();
        }
    }

    /// Eager rebalance: commit and give up everything, then JoinGroup + SyncGroup until a
    /// generation is reached, then resume each assigned partition from its committed
    /// offset (or `auto.offset.reset`).
    async fn join(&mut self) -> Result<()> {
        self.stop_heartbeat();
        if !self.consumed.is_empty() {
            self.commit_quietly().await;
        }
        self.consumer = None;
        self.assignment.clear();
        self.consumed.clear();
        self.committed.clear();

        let mut last = None;
        for attempt in 0..JOIN_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.client.backoff(attempt)).await;
            }
            match self.join_once().await {
                Ok(assignment) => {
                    self.assignment = assignment;
                    self.needs_join = false;
                    self.start_heartbeat();
                    return self.resume_assigned().await;
                }
                Err(e) => {
                    let code = e.code();
                    if matches!(code, Some(UNKNOWN_MEMBER_ID) | Some(FENCED_INSTANCE_ID)) {
                        self.membership.member_id.clear();
                    }
                    let again = matches!(
                        code,
                        Some(
                            MEMBER_ID_REQUIRED
                                | UNKNOWN_MEMBER_ID
                                | REBALANCE_IN_PROGRESS
                                | ILLEGAL_GENERATION
                        )
                    );
                    if !again {
                        return Err(e);
                    }
                    tracing::debug!("join group '{}': {e}", self.config.group_id);
                    last = Some(e);
                }
            }
        }
        Err(ClientError::RetriesExhausted {
            attempts: JOIN_ATTEMPTS,
            last: Box::new(last.unwrap_or_else(|| {
                ClientError::InvalidArgument("could not join the group".into())
            })),
        })
    }

    /// One JoinGroup + SyncGroup round; returns this member's assignment.
    async fn join_once(&mut self) -> Result<Assignment> {
        let group = self.config.group_id.clone();
        let subscription = consumer_protocol::encode_subscription(&self.topics)?;
        let member_id = self.membership.member_id.clone();
        let instance = self.config.group_instance_id.clone();
        let session_ms = millis(self.config.session_timeout);
        let rebalance_ms = millis(self.config.rebalance_timeout);
        // The broker holds JoinGroup until every member has rejoined.
        let wait = self.config.rebalance_timeout;
        let (coordinator, join) =
            coordinator::coordinator_request(&mut self.cluster, &group, wait, |v| {
                Ok(join_group_request(
                    v,
                    &group,
                    &member_id,
                    instance.as_deref(),
                    session_ms,
                    rebalance_ms,
                    subscription.clone(),
                ))
            })
            .await?;
        if join.error_code == MEMBER_ID_REQUIRED {
            // KIP-394: the broker hands out the id and expects us back with it.
            self.membership.member_id = join.member_id.to_string();
        }
        if join.error_code != codes::NONE {
            return Err(group_error(join.error_code, &group, None));
        }
        self.membership.member_id = join.member_id.to_string();
        self.membership.generation_id = join.generation_id;
        self.membership.protocol_name = join.protocol_name.as_ref().map(|p| p.to_string());
        self.membership.coordinator = Some(coordinator);

        let assignments = if join.leader == join.member_id {
            self.lead(&join).await?
        } else {
            Vec::new()
        };
        let generation = join.generation_id;
        let member_id = self.membership.member_id.clone();
        let protocol = self.membership.protocol_name.clone();
        let (_, sync) = coordinator::coordinator_request(&mut self.cluster, &group, wait, |v| {
            sync_group_request(
                v,
                &group,
                generation,
                &member_id,
                instance.as_deref(),
                protocol.as_deref(),
                &assignments,
            )
        })
        .await?;
        if sync.error_code != codes::NONE {
            return Err(group_error(sync.error_code, &group, None));
        }
        let assignment = consumer_protocol::decode_assignment(&sync.assignment)?;
        tracing::info!(
            "joined group '{group}' generation {generation} as {member_id}: {assignment:?}"
        );
        Ok(assignment)
    }

    /// The leader's job: the range assignment of every member's subscription.
    async fn lead(&mut self, join: &JoinGroupResponse) -> Result<Vec<(String, Assignment)>> {
        if join
            .protocol_name
            .as_ref()
            .is_some_and(|p| p.as_str() != RANGE_ASSIGNOR)
        {
            return Err(ClientError::InvalidArgument(format!(
                "the group chose assignor {:?}, which this client does not implement",
                join.protocol_name
            )));
        }
        let mut members = Vec::with_capacity(join.members.len());
        for m in &join.members {
            let topics = consumer_protocol::decode_subscription(&m.metadata).unwrap_or_else(|e| {
                tracing::warn!("member {}: unreadable subscription: {e}", m.member_id);
                Vec::new()
            });
            members.push(Subscriber {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                topics,
            });
        }
        let mut counts = BTreeMap::new();
        let mut wanted: Vec<&String> = members.iter().flat_map(|m| &m.topics).collect();
        wanted.sort();
        wanted.dedup();
        for topic in wanted {
            match self.cluster.partition_count(topic).await {
                Ok(n) => {
                    counts.insert(topic.clone(), n);
                }
                Err(e) => tracing::warn!("topic '{topic}' is not assigned: {e}"),
            }
        }
        Ok(consumer_protocol::range_assign(&members, &counts)
            .into_iter()
            .collect())
    }

    fn start_heartbeat(&mut self) {
        let Some(coordinator) = self.membership.coordinator.clone() else {
            return;
        };
        let status = Arc::new(AtomicI16::new(HEARTBEAT_OK));
        let beat = HeartbeatLoop {
            addr: coordinator.addr(),
            options: self.client.connection.clone(),
            group_id: self.config.group_id.clone(),
            generation_id: self.membership.generation_id,
            member_id: self.membership.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
            interval: self.config.heartbeat_interval,
            session_timeout: self.config.session_timeout,
            status: status.clone(),
        };
        let task = tokio::spawn(beat.run());
        self.heartbeat = Some(Heartbeat { task, status });
    }

    /// Positions for the new assignment: committed offsets where there are any.
    async fn resume_assigned(&mut self) -> Result<()> {
        if self.assignment.values().all(|ps| ps.is_empty()) {
            return Ok(());
        }
        let group = self.config.group_id.clone();
        let (_, resp) =
            coordinator::coordinator_request(&mut self.cluster, &group, Duration::ZERO, |v| {
                group_admin::offset_fetch_request(v, &group)
            })
            .await?;
        let committed = group_admin::parse_offset_fetch(&group, resp)?;
        let mut consumer =
            Consumer::connect(self.client.clone(), self.consumer_config.clone()).await?;
        for (topic, partitions) in &self.assignment {
            let (with, without): (Vec<i32>, Vec<i32>) = partitions
                .iter()
                .partition(|p| committed.contains_key(&(topic.clone(), **p)));
            if !without.is_empty() {
                consumer
                    .assign(topic, &without, self.config.auto_offset_reset)
                    .await?;
            }
            for p in with {
                let tp = (topic.clone(), p);
                if let Some(o) = committed.get(&tp) {
                    consumer
                        .assign(topic, &[p], OffsetSpec::Offset(o.offset))
                        .await?;
                    self.committed.insert(tp, o.offset);
                }
            }
        }
        self.consumer = Some(consumer);
        Ok(())
    }

    /// After OFFSET_OUT_OF_RANGE: moves each position outside its log by
    /// `auto.offset.reset`.
    async fn reset_out_of_range(&mut self) -> Result<()> {
        let reset = self.config.auto_offset_reset;
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(());
        };
        for (topic, partitions) in &self.assignment {
            let starts: BTreeMap<i32, i64> = consumer
                .list_offsets(topic, partitions, OffsetSpec::Earliest)
                .await?
                .into_iter()
                .collect();
            let ends: BTreeMap<i32, i64> = consumer
                .list_offsets(topic, partitions, OffsetSpec::Latest)
                .await?
                .into_iter()
                .collect();
            for p in partitions {
                let (Some(pos), Some(start), Some(end)) = (
                    consumer.position(topic, *p),
                    starts.get(p).copied(),
                    ends.get(p).copied(),
                ) else {
                    continue;
                };
                if pos < start || pos > end {
                    let to = if reset == OffsetSpec::Earliest {
                        start
                    } else {
                        end
                    };
                    tracing::info!(
                        "{topic}-{p}: offset {pos} is outside [{start}, {end}]; resetting to {to}"
                    );
                    consumer.seek(topic, *p, to);
                }
            }
        }
        Ok(())
    }

    async fn leave(&mut self) -> Result<()> {
        let group = self.config.group_id.clone();
        let member_id = self.membership.member_id.clone();
        let (_, resp) =
            coordinator::coordinator_request(&mut self.cluster, &group, Duration::ZERO, |v| {
                Ok(leave_group_request(v, &group, &member_id))
            })
            .await?;
        let code = if resp.error_code != codes::NONE {
            resp.error_code
        } else {
            resp.members
                .iter()
                .map(|m| m.error_code)
                .find(|c| *c != codes::NONE)
                .unwrap_or(codes::NONE)
        };
        match code {
            codes::NONE => Ok(()),
            code => Err(group_error(code, &group, None)),
        }
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

fn heartbeat_reason(code: i16) -> String {
    if code == HEARTBEAT_LOST {
        "coordinator unreachable for a session timeout".to_string()
    } else {
        crate::error::error_name(code)
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// Heartbeats on a connection of its own, so they never wait behind a long fetch, until
/// the coordinator answers an error (rebalance, fenced...) or stays unreachable for a
/// session timeout; the verdict goes to `status`.
struct HeartbeatLoop {
    addr: String,
    options: ConnectionOptions,
    group_id: String,
    generation_id: i32,
    member_id: String,
    group_instance_id: Option<String>,
    interval: Duration,
    session_timeout: Duration,
    status: Arc<AtomicI16>,
}

impl HeartbeatLoop {
    async fn beat(&self, conn: &mut Connection) -> Result<i16> {
        let version = conn.version_for::<HeartbeatRequest>(None)?;
        let request = heartbeat_request(
            version,
            &self.group_id,
            self.generation_id,
            &self.member_id,
            self.group_instance_id.as_deref(),
        );
        let resp = conn.send_version(&request, version, Duration::ZERO).await?;
        Ok(resp.error_code)
    }

    async fn run(self) {
        let mut conn: Option<Connection> = None;
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.interval).await;
            if conn.as_ref().is_none_or(|c| c.is_broken()) {
                conn = Connection::connect(&self.addr, &self.options).await.ok();
            }
            let answer = match conn.as_mut() {
                Some(c) => self.beat(c).await.ok(),
                None => None,
            };
            match answer {
                Some(codes::NONE) => last_ok = Instant::now(),
                Some(code) if coordinator::is_coordinator_error(code) => {}
                Some(code) => {
                    self.status.store(code, Ordering::Relaxed);
                    return;
                }
                None => {}
            }
            if last_ok.elapsed() >= self.session_timeout {
                self.status.store(HEARTBEAT_LOST, Ordering::Relaxed);
                return;
            }
        }
    }
}

pub fn join_group_request(
    version: i16,
    group: &str,
    member_id: &str,
    group_instance_id: Option<&str>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    subscription: bytes::Bytes,
) -> JoinGroupRequest {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_session_timeout_ms(session_timeout_ms)
        .with_member_id(str_bytes(member_id))
        .with_protocol_type(str_bytes(PROTOCOL_TYPE))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(str_bytes(RANGE_ASSIGNOR))
            .with_metadata(subscription)]);
    let request = if version >= 1 {
        request.with_rebalance_timeout_ms(rebalance_timeout_ms)
    } else {
        request
    };
    if version >= 5 {
        request.with_group_instance_id(group_instance_id.map(str_bytes))
    } else {
        request
    }
}

pub fn sync_group_request(
    version: i16,
    group: &str,
    generation_id: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
    protocol_name: Option<&str>,
    assignments: &[(String, Assignment)],
) -> Result<SyncGroupRequest> {
    let mut encoded = Vec::with_capacity(assignments.len());
    for (member, assignment) in assignments {
        encoded.push(
            SyncGroupRequestAssignment::default()
                .with_member_id(str_bytes(member))
                .with_assignment(consumer_protocol::encode_assignment(assignment)?),
        );
    }
    let mut request = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id(generation_id)
        .with_member_id(str_bytes(member_id))
        .with_assignments(encoded);
    if version >= 3 {
        request = request.with_group_instance_id(group_instance_id.map(str_bytes));
    }
    if version >= 5 {
        request = request
            .with_protocol_type(Some(str_bytes(PROTOCOL_TYPE)))
            .with_protocol_name(protocol_name.map(str_bytes));
    }
    Ok(request)
}

pub fn heartbeat_request(
    version: i16,
    group: &str,
    generation_id: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> HeartbeatRequest {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id(generation_id)
        .with_member_id(str_bytes(member_id));
    if version >= 3 {
        request.with_group_instance_id(group_instance_id.map(str_bytes))
    } else {
        request
    }
}

/// LeaveGroup: one member by id before v3, the batched `members` form from v3 on.
pub fn leave_group_request(version: i16, group: &str, member_id: &str) -> LeaveGroupRequest {
    let request = LeaveGroupRequest::default().with_group_id(GroupId(str_bytes(group)));
    if version >= 3 {
        request.with_members(vec![MemberIdentity::default()
            .with_member_id(str_bytes(member_id))
            .with_reason(
                (version >= 5).then(|| str_bytes("the consumer is being closed")),
            )])
    } else {
        request.with_member_id(str_bytes(member_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    fn round_trip<M: Encodable + Decodable>(m: &M, v: i16) -> M {
        let mut buf = BytesMut::new();
        m.encode(&mut buf, v)
            .unwrap_or_else(|e| panic!("v{v}: {e}"));
        M::decode(&mut buf.freeze(), v).unwrap()
    }

    #[test]
    fn join_and_sync_at_every_version() {
        let sub = consumer_protocol::encode_subscription(&["t".to_string()]).unwrap();
        for v in JoinGroupRequest::VERSIONS.min..=JoinGroupRequest::VERSIONS.max {
            let back = round_trip(
                &join_group_request(v, "g", "m", Some("i"), 45_000, 300_000, sub.clone()),
                v,
            );
            assert_eq!(back.protocol_type.as_str(), "consumer");
            assert_eq!(back.protocols[0].name.as_str(), "range");
            let topics = consumer_protocol::decode_subscription(&back.protocols[0].metadata);
            assert_eq!(topics.unwrap(), ["t"], "v{v}");
            assert_eq!(back.group_instance_id.is_some(), v >= 5);
            assert_eq!(back.rebalance_timeout_ms, if v >= 1 { 300_000 } else { -1 });
        }
        let mut a = Assignment::new();
        a.insert("t".into(), vec![0, 1]);
        for v in SyncGroupRequest::VERSIONS.min..=SyncGroupRequest::VERSIONS.max {
            let req = sync_group_request(
                v,
                "g",
                3,
                "m",
                Some("i"),
                Some("range"),
                &[("m".into(), a.clone())],
            )
            .unwrap();
            let back = round_trip(&req, v);
            assert_eq!(back.generation_id, 3);
            let got = consumer_protocol::decode_assignment(&back.assignments[0].assignment);
            assert_eq!(got.unwrap(), a, "v{v}");
        }
    }

    #[test]
    fn heartbeat_and_leave_at_every_version() {
        for v in HeartbeatRequest::VERSIONS.min..=HeartbeatRequest::VERSIONS.max {
            let back = round_trip(&heartbeat_request(v, "g", 7, "m", Some("i")), v);
            assert_eq!(back.group_instance_id.is_some(), v >= 3);
            assert_eq!((back.generation_id, back.member_id.as_str()), (7, "m"));
        }
        for v in LeaveGroupRequest::VERSIONS.min..=LeaveGroupRequest::VERSIONS.max {
            let back = round_trip(&leave_group_request(v, "g", "m"), v);
            if v >= 3 {
                assert_eq!(back.members[0].member_id.as_str(), "m");
            } else {
                assert_eq!(back.member_id.as_str(), "m");
            }
        }
    }

    fn record(topic: &str, partition: i32, offset: i64) -> ConsumerRecord {
        ConsumerRecord {
            topic: topic.into(),
            partition,
            offset,
            timestamp: 0,
            log_append_time: false,
            key: None,
            value: None,
            headers: vec![],
        }
    }

    #[tokio::test]
    async fn joins_commits_rejoins_and_leaves() {
        use crate::fake_coordinator::{FakeCoordinator, LOG_START};
        let fake = FakeCoordinator::start().await;
        fake.state().committed.insert(("t".into(), 1), 4);
        fake.state().coordinator_unavailable = 1;
        let mut client = ClientConfig::new(&fake.addr).unwrap();
        client.retry_backoff = Duration::from_millis(1);
        let mut config = GroupConfig::new("g");
        config.heartbeat_interval = Duration::from_millis(10);
        config.auto_commit_interval = None;
        config.auto_offset_reset = OffsetSpec::Earliest;
        let consumer_config = ConsumerConfig {
            max_wait: Duration::from_millis(10),
            ..ConsumerConfig::default()
        };
        let mut gc = GroupConsumer::connect(client, consumer_config, config, vec!["t".into()])
            .await
            .unwrap();
        assert!(gc.poll().await.unwrap().is_empty());
        // Told its id by MEMBER_ID_REQUIRED, then joined as the leader of generation 1.
        assert_eq!((gc.member_id(), gc.generation_id()), ("member-1", 1));
        assert_eq!(gc.assignment()["t"], [0, 1]);
        let position = |gc: &GroupConsumer, p| gc.consumer.as_ref().unwrap().position("t", p);
        assert_eq!(
            position(&gc, 0),
            Some(LOG_START),
            "no commit: auto.offset.reset"
        );
        assert_eq!(position(&gc, 1), Some(4), "the committed offset");

        gc.mark_consumed(&record("t", 0, 6));
        gc.mark_consumed(&record("t", 0, 5));
        gc.mark_consumed(&record("other", 0, 1));
        gc.commit().await.unwrap();
        assert_eq!(fake.state().committed[&("t".to_string(), 0)], 7);
        assert!(!fake
            .state()
            .committed
            .contains_key(&("other".to_string(), 0)));

        // The coordinator starts a rebalance: the heartbeat notices, the member rejoins and
        // resumes from what it committed.
        fake.state().rebalance = true;
        for _ in 0..1000 {
            if gc.generation_id() == 2 {
                break;
            }
            gc.poll().await.unwrap();
        }
        assert_eq!(gc.generation_id(), 2);
        assert_eq!(fake.state().joins, 2);
        assert_eq!(position(&gc, 0), Some(7));

        gc.mark_consumed(&record("t", 1, 8));
        gc.close().await.unwrap();
        let st = fake.state();
        assert_eq!(st.committed[&("t".to_string(), 1)], 9, "committed at close");
        assert_eq!(st.leaves, 1);
    }
}
