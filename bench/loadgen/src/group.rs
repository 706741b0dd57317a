//! `group`: a large consumer group on the classic protocol, driven member by member over raw
//! connections (librdkafka has no way to run 100 members in one process without its own
//! heartbeat timers dominating what is measured).
//!
//! Each member is a thread with its own connection and behaves like a Java or librdkafka
//! consumer: FindCoordinator, JoinGroup (MEMBER_ID_REQUIRED, then again with the given id), the
//! leader computes a range assignment, SyncGroup, then Heartbeat until the coordinator asks for
//! a rejoin. All members start joining at once (a barrier); the figure is the time from the
//! last member's first JoinGroup to the moment every member holds its partitions from one
//! generation that contains all of them. Then, on the same connections:
//!
//! 1. baseline: ApiVersions round trips as fast as each connection can go (the request path
//!    without the coordinator);
//! 2. commits: every member commits its own partitions with OffsetCommit (generation and
//!    member id, as a consumer does), synchronously, for a fixed time: commits/s and latency.
//!
//! Finally one batched LeaveGroup removes every member.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedPartitions;
use kafka_protocol::messages::consumer_group_heartbeat_response::TopicPartitions as TargetPartitions;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde_json::{json, Map, Value};

use crate::stats::{CpuWindow, Latencies};
use crate::wire::Wire;

// Kafka error codes the members react to.
const NONE: i16 = 0;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_MEMBER_EPOCH: i16 = 110;

// Highest versions this scenario speaks (FindCoordinator v4+ is the batched form).
const FIND_COORDINATOR_MAX: i16 = 3;
const JOIN_GROUP_MAX: i16 = 9;
const SYNC_GROUP_MAX: i16 = 5;
const HEARTBEAT_MAX: i16 = 4;
const OFFSET_COMMIT_MAX: i16 = 8;
/// OffsetCommit v9 carries the member epoch of a consumer-protocol (KIP-848) member.
const OFFSET_COMMIT_CONSUMER_MAX: i16 = 9;
const LEAVE_GROUP_MAX: i16 = 5;
/// v0: the coordinator generates the member id (v1 expects the client to).
const CONSUMER_GROUP_HEARTBEAT_MAX: i16 = 0;
/// Member epoch that asks to leave the group.
const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;

/// Heartbeat interval once the group is stable (during the baseline and commit phases).
const STEADY_HEARTBEAT: Duration = Duration::from_secs(1);

/// Which group protocol the members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup/Heartbeat, client-side range assignment.
    Classic,
    /// KIP-848 ConsumerGroupHeartbeat, server-side assignment and reconciliation.
    Consumer,
}

#[derive(Debug, Clone)]
pub struct GroupArgs {
    pub protocol: GroupProtocol,
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub members: usize,
    pub group: String,
    pub join_timeout_seconds: f64,
    pub baseline_seconds: f64,
    pub commit_seconds: f64,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub join_heartbeat_ms: u64,
    pub broker_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Join = 0,
    Baseline = 1,
    Commit = 2,
    Done = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Join,
            1 => Phase::Baseline,
            2 => Phase::Commit,
            _ => Phase::Done,
        }
    }
}

/// What one member last reported to the main thread.
#[derive(Debug, Clone, Default)]
struct MemberView {
    first_join_sent: Option<Instant>,
    member_id: String,
    generation: i32,
    /// Number of members in the generation, known to the leader only.
    leader_of: Option<usize>,
    partitions: Vec<i32>,
    /// When this member's (generation, partitions) last changed.
    synced_at: Option<Instant>,
}

struct Shared {
    phase: AtomicU8,
    views: Mutex<Vec<MemberView>>,
}

impl Shared {
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut MemberView)) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = views.get_mut(idx) {
            f(v);
        }
    }
}

/// Per-member counters returned when its thread ends.
#[derive(Default)]
struct MemberStats {
    joins_sent: u64,
    syncs: u64,
    rejoins_after_stable: u64,
    baseline_requests: u64,
    baseline_latency: Latencies,
    commits: u64,
    /// Partition offsets in the successful commits.
    offsets_committed: u64,
    commit_latency: Latencies,
    commit_errors: BTreeMap<i16, u64>,
    heartbeats: u64,
}

/// One member's session: its connection, identity and current generation.
struct Member<'a> {
    idx: usize,
    args: &'a GroupArgs,
    wire: Wire,
    member_id: String,
    /// Generation (classic) or member epoch (consumer protocol).
    generation: i32,
    partitions: Vec<i32>,
    /// Consumer protocol: the partitions owned, by topic id, as the coordinator assigned them.
    owned: Vec<TargetPartitions>,
    stats: MemberStats,
}

pub fn run(args: &GroupArgs) -> Result<Value> {
    if args.members == 0 || args.partitions <= 0 {
        bail!("need at least one member and one partition");
    }
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(Phase::Join as u8),
        views: Mutex::new(vec![MemberView::default(); args.members]),
    });
    let barrier = Arc::new(Barrier::new(args.members + 1));
    let mut handles = Vec::with_capacity(args.members);
    for idx in 0..args.members {
        let (args, shared, barrier) = (args.clone(), shared.clone(), barrier.clone());
        let h = thread::Builder::new()
            .name(format!("member-{idx}"))
            .stack_size(256 << 10)
            .spawn(move || member_thread(idx, &args, &shared, &barrier))
            .context("spawning a member thread")?;
        handles.push(h);
    }
    barrier.wait();
    let join_started = Instant::now();
    let join_cpu = CpuWindow::start(args.broker_pid);

    // Wait (bounded) for one generation holding every member, each with its partitions.
    let deadline = join_started + Duration::from_secs_f64(args.join_timeout_seconds);
    let stable = loop {
        if let Some(s) = stable_generation(&shared, args)? {
            break s;
        }
        if Instant::now() >= deadline {
            shared.set_phase(Phase::Done);
            let views = shared
                .views
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let synced = views.iter().filter(|v| v.synced_at.is_some()).count();
            let gens: std::collections::BTreeSet<i32> =
                views.iter().map(|v| v.generation).collect();
            bail!(
                "the group was not stable after {:.0}s: {synced} of {} members synced, generations {gens:?}",
                args.join_timeout_seconds,
                args.members
            );
        }
        thread::sleep(Duration::from_millis(1));
    };
    let join_usage = join_cpu.finish();
    let join_stable_ms = stable
        .stable_at
        .saturating_duration_since(stable.last_join_sent)
        .as_secs_f64()
        * 1000.0;
    let first_join_to_stable_ms = stable
        .stable_at
        .saturating_duration_since(stable.first_join_sent)
        .as_secs_f64()
        * 1000.0;
    eprintln!(
        "group {}: {} members stable in generation {} {:.1} ms after the last JoinGroup ({:.1} ms after the first)",
        args.group, args.members, stable.generation, join_stable_ms, first_join_to_stable_ms
    );

    shared.set_phase(Phase::Baseline);
    let base_cpu = CpuWindow::start(args.broker_pid);
    let base_start = Instant::now();
    thread::sleep(Duration::from_secs_f64(args.baseline_seconds));
    let base_secs = base_start.elapsed().as_secs_f64();
    let base_usage = base_cpu.finish();

    shared.set_phase(Phase::Commit);
    let commit_cpu = CpuWindow::start(args.broker_pid);
    let commit_start = Instant::now();
    thread::sleep(Duration::from_secs_f64(args.commit_seconds));
    shared.set_phase(Phase::Done);
    let commit_secs = commit_start.elapsed().as_secs_f64();
    let commit_usage = commit_cpu.finish();

    let mut total = MemberStats::default();
    let mut failures = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => {
                total.joins_sent += s.joins_sent;
                total.syncs += s.syncs;
                total.rejoins_after_stable += s.rejoins_after_stable;
                total.baseline_requests += s.baseline_requests;
                total.baseline_latency.merge(&s.baseline_latency);
                total.commits += s.commits;
                total.offsets_committed += s.offsets_committed;
                total.commit_latency.merge(&s.commit_latency);
                total.heartbeats += s.heartbeats;
                for (code, n) in s.commit_errors {
                    *total.commit_errors.entry(code).or_default() += n;
                }
            }
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(_) => failures.push("a member thread panicked".to_string()),
        }
    }
    if let Some(first) = failures.first() {
        bail!("{} member(s) failed; first: {first}", failures.len());
    }
    let leave_errors = match args.protocol {
        GroupProtocol::Classic => leave_all(args, &stable.member_ids)?,
        GroupProtocol::Consumer => 0, // each member left with epoch -1
    };

    let baseline_rps = total.baseline_requests as f64 / base_secs.max(1e-9);
    let commits_per_s = total.commits as f64 / commit_secs.max(1e-9);
    let offsets_per_s = total.offsets_committed as f64 / commit_secs.max(1e-9);
    eprintln!(
        "baseline: {} ApiVersions in {base_secs:.1}s = {baseline_rps:.0} req/s (p50 {:.2} ms, p99 {:.2} ms)",
        total.baseline_requests,
        total.baseline_latency.quantile_ms(0.5),
        total.baseline_latency.quantile_ms(0.99)
    );
    eprintln!(
        "commits: {} OffsetCommit in {commit_secs:.1}s = {commits_per_s:.0} commits/s ({:.0} partition offsets/s), p50 {:.2} ms, p99 {:.2} ms, errors {:?}",
        total.commits,
        offsets_per_s,
        total.commit_latency.quantile_ms(0.5),
        total.commit_latency.quantile_ms(0.99),
        total.commit_errors
    );
    let errors: Map<String, Value> = total
        .commit_errors
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "group": args.group,
        "topic": args.topic,
        "members": args.members,
        "partitions": args.partitions,
        "join_stable_ms": join_stable_ms,
        "first_join_to_stable_ms": first_join_to_stable_ms,
        "generation": stable.generation,
        "joins_sent": total.joins_sent,
        "syncs": total.syncs,
        "rejoins_after_stable": total.rejoins_after_stable,
        "join_broker_cores": join_usage.broker_cores,
        "baseline_rps": baseline_rps,
        "baseline_p50_ms": total.baseline_latency.quantile_ms(0.5),
        "baseline_p99_ms": total.baseline_latency.quantile_ms(0.99),
        "baseline_broker_cores": base_usage.broker_cores,
        "commits": total.commits,
        "commits_per_s": commits_per_s,
        "partition_commits_per_s": offsets_per_s,
        "commit_p50_ms": total.commit_latency.quantile_ms(0.5),
        "commit_p99_ms": total.commit_latency.quantile_ms(0.99),
        "commit_p999_ms": total.commit_latency.quantile_ms(0.999),
        "commit_errors": errors,
        "heartbeats": total.heartbeats,
        "leave_errors": leave_errors,
        "broker_cores": commit_usage.broker_cores,
        "broker_rss_mib": commit_usage.broker_rss_mib,
        "client_cores": commit_usage.client_cores,
        "other_cores": commit_usage.other_cores,
    }))
}

struct Stable {
    generation: i32,
    first_join_sent: Instant,
    last_join_sent: Instant,
    stable_at: Instant,
    member_ids: Vec<String>,
}

/// The generation every member synced in, once the leader reports all of them in it; also
/// checks that the assignment covers every partition exactly once.
fn stable_generation(shared: &Shared, args: &GroupArgs) -> Result<Option<Stable>> {
    let views = shared.views.lock().unwrap_or_else(|e| e.into_inner());
    let Some(first) = views.first() else {
        return Ok(None);
    };
    let generation = first.generation;
    let complete = views
        .iter()
        .all(|v| v.synced_at.is_some() && v.generation == generation)
        && (args.protocol == GroupProtocol::Consumer
            || views.iter().any(|v| v.leader_of == Some(args.members)));
    if !complete {
        return Ok(None);
    }
    let mut owned = vec![0u32; usize::try_from(args.partitions).unwrap_or(0)];
    for v in views.iter() {
        for &p in &v.partitions {
            match usize::try_from(p).ok().and_then(|i| owned.get_mut(i)) {
                Some(n) => *n += 1,
                None => bail!(
                    "member {} was assigned partition {p}, which does not exist",
                    v.member_id
                ),
            }
        }
    }
    if let Some(p) = owned.iter().position(|&n| n > 1) {
        bail!(
            "partition {p} is assigned {} times in generation {generation}",
            owned[p]
        );
    }
    if let Some(p) = owned.iter().position(|&n| n == 0) {
        // KIP-848: a member reaches the new epoch before partitions still owned by others are
        // released to it, so a gap only means reconciliation is not over.
        if args.protocol == GroupProtocol::Consumer {
            return Ok(None);
        }
        bail!("partition {p} is not assigned in generation {generation}");
    }
    let joins: Vec<Instant> = views.iter().filter_map(|v| v.first_join_sent).collect();
    let (Some(&first_join), Some(&last_join)) = (joins.iter().min(), joins.iter().max()) else {
        return Ok(None);
    };
    let stable_at = views
        .iter()
        .filter_map(|v| v.synced_at)
        .max()
        .unwrap_or(last_join);
    Ok(Some(Stable {
        generation,
        first_join_sent: first_join,
        last_join_sent: last_join,
        stable_at,
        member_ids: views.iter().map(|v| v.member_id.clone()).collect(),
    }))
}

fn member_thread(
    idx: usize,
    args: &GroupArgs,
    shared: &Shared,
    barrier: &Barrier,
) -> Result<MemberStats> {
    // Connect before the barrier, so that joining is all that is measured; a failure still
    // reaches the barrier, or the main thread would wait forever.
    let connected = connect_to_coordinator(args);
    barrier.wait();
    let wire = connected?;
    let mut m = Member {
        idx,
        args,
        wire,
        member_id: String::new(),
        generation: -1,
        partitions: Vec::new(),
        owned: Vec::new(),
        stats: MemberStats::default(),
    };
    m.run(shared)?;
    if args.protocol == GroupProtocol::Consumer {
        m.leave_consumer()?;
    }
    Ok(m.stats)
}

fn connect_to_coordinator(args: &GroupArgs) -> Result<Wire> {
    let timeout = Duration::from_millis(u64::try_from(args.rebalance_timeout_ms).unwrap_or(0))
        + Duration::from_secs(10);
    let mut wire = Wire::connect(&args.bootstrap, timeout)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(args.group.clone()))
            .with_key_type(0);
        let r = wire.send(&request, FIND_COORDINATOR_MAX)?;
        match r.error_code {
            NONE => {
                let addr = format!("{}:{}", r.host.as_str(), r.port);
                if addr != args.bootstrap {
                    wire = Wire::connect(&addr, timeout)?;
                }
                return Ok(wire);
            }
            COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS | NOT_COORDINATOR
                if Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(50));
            }
            code => bail!("FindCoordinator for {}: error {code}", args.group),
        }
    }
}

impl Member<'_> {
    fn run(&mut self, shared: &Shared) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.join_timeout_seconds);
        self.join(shared, deadline)?;
        let mut next_heartbeat = Instant::now();
        let mut offset: i64 = 0;
        loop {
            let phase = shared.phase();
            if phase == Phase::Done {
                return Ok(());
            }
            let interval = if phase == Phase::Join {
                Duration::from_millis(self.args.join_heartbeat_ms)
            } else {
                STEADY_HEARTBEAT
            };
            if Instant::now() >= next_heartbeat {
                next_heartbeat = Instant::now() + interval;
                if !self.heartbeat(shared)? {
                    if phase != Phase::Join {
                        self.stats.rejoins_after_stable += 1;
                    }
                    let deadline =
                        Instant::now() + Duration::from_secs_f64(self.args.join_timeout_seconds);
                    self.join(shared, deadline)?;
                    continue;
                }
            }
            match phase {
                Phase::Join => thread::sleep(
                    next_heartbeat
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(5)),
                ),
                Phase::Baseline => {
                    let t = Instant::now();
                    self.wire.api_versions()?;
                    self.stats
                        .baseline_latency
                        .record_us(t.elapsed().as_micros() as u64);
                    self.stats.baseline_requests += 1;
                }
                Phase::Commit => {
                    offset += 1;
                    let t = Instant::now();
                    let code = self.commit(offset)?;
                    self.stats
                        .commit_latency
                        .record_us(t.elapsed().as_micros() as u64);
                    if code == NONE {
                        self.stats.commits += 1;
                        self.stats.offsets_committed += self.partitions.len() as u64;
                    } else {
                        *self.stats.commit_errors.entry(code).or_default() += 1;
                    }
                }
                Phase::Done => return Ok(()),
            }
        }
    }

    fn join(&mut self, shared: &Shared, deadline: Instant) -> Result<()> {
        match self.args.protocol {
            GroupProtocol::Classic => self.join_classic(shared, deadline),
            GroupProtocol::Consumer => self.join_consumer(shared, deadline),
        }
    }

    /// False when the coordinator wants this member to rejoin.
    fn heartbeat(&mut self, shared: &Shared) -> Result<bool> {
        match self.args.protocol {
            GroupProtocol::Classic => self.heartbeat_classic(),
            GroupProtocol::Consumer => self.heartbeat_consumer(shared),
        }
    }

    /// JoinGroup (with the MEMBER_ID_REQUIRED round trip) and SyncGroup until this member holds
    /// an assignment; publishes it to the main thread.
    fn join_classic(&mut self, shared: &Shared, deadline: Instant) -> Result<()> {
        loop {
            if Instant::now() >= deadline || shared.phase() == Phase::Done {
                bail!(
                    "member {} could not join {} in time",
                    self.idx,
                    self.args.group
                );
            }
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.args.group.clone())))
                .with_session_timeout_ms(self.args.session_timeout_ms)
                .with_rebalance_timeout_ms(self.args.rebalance_timeout_ms)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(subscription(&self.args.topic)?)]);
            let sent = Instant::now();
            shared.update(self.idx, |v| {
                v.first_join_sent.get_or_insert(sent);
            });
            self.stats.joins_sent += 1;
            let r = self.wire.send(&request, JOIN_GROUP_MAX)?;
            match r.error_code {
                NONE => {}
                MEMBER_ID_REQUIRED => {
                    self.member_id = r.member_id.to_string();
                    continue;
                }
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                REBALANCE_IN_PROGRESS => continue,
                code => bail!("JoinGroup of member {}: error {code}", self.idx),
            }
            self.member_id = r.member_id.to_string();
            self.generation = r.generation_id;
            let leader = r.leader.as_str() == self.member_id.as_str();
            let assignments = if leader && !r.skip_assignment {
                let ids: Vec<&str> = r.members.iter().map(|m| m.member_id.as_str()).collect();
                range_assign(&self.args.topic, self.args.partitions, &ids)?
            } else {
                Vec::new()
            };
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.args.group.clone())))
                .with_generation_id(self.generation)
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(r.protocol_type.clone())
                .with_protocol_name(r.protocol_name.clone())
                .with_assignments(assignments);
            let s = self.wire.send(&sync, SYNC_GROUP_MAX)?;
            self.stats.syncs += 1;
            match s.error_code {
                NONE => {}
                REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => continue,
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    continue;
                }
                code => bail!("SyncGroup of member {}: error {code}", self.idx),
            }
            self.partitions = assigned_partitions(&s.assignment, &self.args.topic)?;
            let (gen, id, parts) = (
                self.generation,
                self.member_id.clone(),
                self.partitions.clone(),
            );
            let leader_of = leader.then_some(r.members.len());
            shared.update(self.idx, |v| {
                v.generation = gen;
                v.member_id = id;
                v.partitions = parts;
                v.leader_of = leader_of;
                v.synced_at = Some(Instant::now());
            });
            return Ok(());
        }
    }

    fn heartbeat_classic(&mut self) -> Result<bool> {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.args.group.clone())))
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()));
        let r = self.wire.send(&request, HEARTBEAT_MAX)?;
        self.stats.heartbeats += 1;
        match r.error_code {
            NONE => Ok(true),
            REBALANCE_IN_PROGRESS | ILLEGAL_GENERATION => Ok(false),
            UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                Ok(false)
            }
            code => bail!("Heartbeat of member {}: error {code}", self.idx),
        }
    }

    /// ConsumerGroupHeartbeat with epoch 0 until the coordinator accepts this member; the
    /// partitions come with this or a later heartbeat (reconciliation).
    fn join_consumer(&mut self, shared: &Shared, deadline: Instant) -> Result<()> {
        self.member_id.clear();
        self.generation = 0;
        self.owned.clear();
        loop {
            if Instant::now() >= deadline || shared.phase() == Phase::Done {
                bail!(
                    "member {} could not join {} in time",
                    self.idx,
                    self.args.group
                );
            }
            let request = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.args.group.clone())))
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(self.args.rebalance_timeout_ms)
                .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_string(
                    self.args.topic.clone(),
                ))]))
                .with_topic_partitions(Some(Vec::new()));
            let sent = Instant::now();
            shared.update(self.idx, |v| {
                v.first_join_sent.get_or_insert(sent);
            });
            self.stats.joins_sent += 1;
            let r = self.wire.send(&request, CONSUMER_GROUP_HEARTBEAT_MAX)?;
            match r.error_code {
                NONE => {}
                COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE => {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                code => bail!(
                    "ConsumerGroupHeartbeat join of member {}: error {code}",
                    self.idx
                ),
            }
            self.member_id = r.member_id.map(|m| m.to_string()).unwrap_or_default();
            if self.member_id.is_empty() {
                bail!(
                    "ConsumerGroupHeartbeat join of member {}: no member id",
                    self.idx
                );
            }
            self.apply_consumer_assignment(
                shared,
                r.member_epoch,
                r.assignment.map(|a| a.topic_partitions),
            );
            return Ok(());
        }
    }

    /// One ConsumerGroupHeartbeat reporting the owned partitions; takes any new assignment.
    fn heartbeat_consumer(&mut self, shared: &Shared) -> Result<bool> {
        let owned = self
            .owned
            .iter()
            .map(|tp| {
                OwnedPartitions::default()
                    .with_topic_id(tp.topic_id)
                    .with_partitions(tp.partitions.clone())
            })
            .collect();
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.args.group.clone())))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(self.generation)
            .with_rebalance_timeout_ms(-1)
            .with_topic_partitions(Some(owned));
        let r = self.wire.send(&request, CONSUMER_GROUP_HEARTBEAT_MAX)?;
        self.stats.heartbeats += 1;
        match r.error_code {
            NONE => {
                self.apply_consumer_assignment(
                    shared,
                    r.member_epoch,
                    r.assignment.map(|a| a.topic_partitions),
                );
                Ok(true)
            }
            FENCED_MEMBER_EPOCH | UNKNOWN_MEMBER_ID => Ok(false),
            code => bail!(
                "ConsumerGroupHeartbeat of member {}: error {code}",
                self.idx
            ),
        }
    }

    /// Takes the epoch (and the assignment, when the response carries one) and publishes a change.
    fn apply_consumer_assignment(
        &mut self,
        shared: &Shared,
        epoch: i32,
        assignment: Option<Vec<TargetPartitions>>,
    ) {
        let changed_epoch = epoch != self.generation;
        self.generation = epoch;
        let mut changed_parts = false;
        if let Some(tps) = assignment {
            let mut parts: Vec<i32> = tps
                .iter()
                .flat_map(|tp| tp.partitions.iter().copied())
                .collect();
            parts.sort_unstable();
            changed_parts = parts != self.partitions;
            self.partitions = parts;
            self.owned = tps;
            self.stats.syncs += 1;
        }
        if changed_epoch || changed_parts {
            let (gen, id, parts) = (
                self.generation,
                self.member_id.clone(),
                self.partitions.clone(),
            );
            shared.update(self.idx, |v| {
                v.generation = gen;
                v.member_id = id;
                v.partitions = parts;
                v.synced_at = Some(Instant::now());
            });
        }
    }

    /// Leaves with member epoch -1 (consumer protocol: there is no batched leave).
    fn leave_consumer(&mut self) -> Result<()> {
        let request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.args.group.clone())))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(LEAVE_GROUP_MEMBER_EPOCH);
        let r = self.wire.send(&request, CONSUMER_GROUP_HEARTBEAT_MAX)?;
        if r.error_code != NONE {
            bail!(
                "member {} could not leave: error {}",
                self.idx,
                r.error_code
            );
        }
        Ok(())
    }

    /// One OffsetCommit of every partition this member owns; the first error code, or NONE.
    fn commit(&mut self, offset: i64) -> Result<i16> {
        let partitions = self
            .partitions
            .iter()
            .map(|&p| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(p)
                    .with_committed_offset(offset)
            })
            .collect();
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.args.group.clone())))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(self.args.topic.clone())))
                .with_partitions(partitions)]);
        let cap = match self.args.protocol {
            GroupProtocol::Classic => OFFSET_COMMIT_MAX,
            GroupProtocol::Consumer => OFFSET_COMMIT_CONSUMER_MAX,
        };
        let r = self.wire.send(&request, cap)?;
        let first_error = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error_code)
            .find(|&c| c != NONE)
            .unwrap_or(NONE);
        Ok(first_error)
    }
}

/// Removes every member with one batched LeaveGroup (v3+); returns the members' error count.
fn leave_all(args: &GroupArgs, member_ids: &[String]) -> Result<u64> {
    let mut wire = connect_to_coordinator(args)?;
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(args.group.clone())))
        .with_members(
            member_ids
                .iter()
                .map(|id| {
                    MemberIdentity::default().with_member_id(StrBytes::from_string(id.clone()))
                })
                .collect(),
        );
    let r = wire.send(&request, LEAVE_GROUP_MAX)?;
    if r.error_code != NONE {
        bail!("LeaveGroup: error {}", r.error_code);
    }
    Ok(r.members.iter().filter(|m| m.error_code != NONE).count() as u64)
}

/// The "consumer" protocol's member metadata: a version prefix, then ConsumerProtocolSubscription.
fn subscription(topic: &str) -> Result<Bytes> {
    let s = ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.to_string())]);
    let mut buf = BytesMut::new();
    buf.put_i16(0);
    s.encode(&mut buf, 0)?;
    Ok(buf.freeze())
}

/// Kafka's range assignor for one topic: members in member-id order, consecutive partitions,
/// the first `partitions % members` members one more.
fn range_assign(
    topic: &str,
    partitions: i32,
    member_ids: &[&str],
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let n = i32::try_from(ids.len()).context("too many members")?.max(1);
    let (each, extra) = (partitions / n, partitions % n);
    let mut out = Vec::with_capacity(ids.len());
    let mut next = 0;
    for (i, id) in (0..).zip(ids) {
        let count = each + i32::from(i < extra);
        let mine: Vec<i32> = (next..next + count).collect();
        next += count;
        let a = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            AssignedPartitions::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(mine),
        ]);
        let mut buf = BytesMut::new();
        buf.put_i16(0);
        a.encode(&mut buf, 0)?;
        out.push(
            SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(id.to_string()))
                .with_assignment(buf.freeze()),
        );
    }
    Ok(out)
}

/// This member's partitions of `topic` from its SyncGroup assignment.
fn assigned_partitions(assignment: &Bytes, topic: &str) -> Result<Vec<i32>> {
    let mut buf = assignment.clone();
    if buf.remaining() < 2 {
        bail!("SyncGroup returned an empty assignment");
    }
    let version = buf.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version)
        .context("decoding the member assignment")?;
    Ok(a.assigned_partitions
        .iter()
        .filter(|tp| tp.topic.0.as_str() == topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_covers_every_partition_once() {
        let ids = ["m-c", "m-a", "m-b"];
        let out = range_assign("t", 8, &ids).unwrap();
        let got: Vec<(String, Vec<i32>)> = out
            .iter()
            .map(|a| {
                (
                    a.member_id.to_string(),
                    assigned_partitions(&a.assignment, "t").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("m-a".to_string(), vec![0, 1, 2]),
                ("m-b".to_string(), vec![3, 4, 5]),
                ("m-c".to_string(), vec![6, 7]),
            ]
        );
    }

    #[test]
    fn empty_assignment_is_an_error() {
        assert!(assigned_partitions(&Bytes::new(), "t").is_err());
    }
}
