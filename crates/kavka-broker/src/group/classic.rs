//! The classic group protocol's state machine (JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup), as in Apache Kafka's ClassicGroup:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                ▲        │                                    │ leader's SyncGroup
//!     └─ last member ──┘        └──────── member change ◀── Stable ◀─┘ (stored)
//! ```
//!
//! Pure and deterministic: time comes in as `now_ms`, the coordinator's timer calls
//! [`ClassicGroup::tick`]. Parked JoinGroup and SyncGroup requests are oneshot senders kept on
//! their member; whoever completes a phase answers them. Whenever the group's stored form
//! changed, `needs_store` is set and the coordinator appends a GroupMetadata record before it
//! answers the parked SyncGroups ([`ClassicGroup::on_stored`]).

use super::record::{GroupValue, StoredMember};
use bytes::Bytes;
use kavka_protocol::error::ErrorCode;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl ClassicState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
            ClassicState::Dead => "Dead",
        }
    }
}

/// Settings the state machine needs (from the broker's group.* configs).
#[derive(Debug, Clone, Copy)]
pub struct ClassicLimits {
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
}

/// A JoinGroup request, version differences already resolved by the handler.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// What a JoinGroup is answered with.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: Option<ErrorCode>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (with their metadata for the chosen protocol).
    pub members: Vec<JoinMember>,
    /// v9: a static leader that rejoined an unchanged group must not recompute assignments.
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: ErrorCode, member_id: &str) -> Self {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone)]
pub struct SyncResult {
    pub error: Option<ErrorCode>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ErrorCode) -> Self {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Either an answer now, or a parked request answered when the phase completes.
pub enum Outcome<T> {
    Done(T),
    Wait(oneshot::Receiver<T>),
}

#[derive(Debug)]
pub struct ClassicMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Supported protocols in the member's order of preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    session_deadline: i64,
}

impl ClassicMember {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }
}

/// Member summary for DescribeGroups.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug)]
pub struct ClassicGroup {
    pub group_id: String,
    state: ClassicState,
    /// When the group entered its current state (offset expiry counts from when it emptied).
    state_timestamp: i64,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, ClassicMember>,
    /// group.instance.id → member id of the static members.
    static_members: HashMap<String, String>,
    /// Members told MEMBER_ID_REQUIRED, with the deadline by which they must join again.
    pending_members: HashMap<String, i64>,
    /// PreparingRebalance: when the join phase ends even if members are missing.
    join_deadline: Option<i64>,
    /// PreparingRebalance out of Empty: group.initial.rebalance.delay.ms, extended while
    /// members keep arriving, but never past the rebalance timeout.
    initial_delay: Option<InitialDelay>,
    /// CompletingRebalance: members yet to send SyncGroup, and the deadline to do so.
    pending_sync: HashSet<String>,
    sync_deadline: Option<i64>,
    needs_store: bool,
    /// The last offset of the GroupMetadata record being replicated, when the parked
    /// SyncGroups wait for it (in a cluster). Only the latest store answers them.
    store_in_flight: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    deadline: i64,
    delay_ms: i64,
    remaining_ms: i64,
    member_joined: bool,
}

impl ClassicGroup {
    pub fn new(group_id: String, now_ms: i64) -> Self {
        ClassicGroup {
            group_id,
            state: ClassicState::Empty,
            state_timestamp: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            join_deadline: None,
            initial_delay: None,
            pending_sync: HashSet::new(),
            sync_deadline: None,
            needs_store: false,
            store_in_flight: None,
        }
    }

    /// Rebuilds a group from its last GroupMetadata record. Members come back as they were
    /// (a restart of the coordinator does not force a rebalance); their sessions restart now.
    pub fn from_stored(group_id: String, v: GroupValue, now_ms: i64) -> Self {
        let mut g = ClassicGroup::new(group_id, now_ms);
        g.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        g.generation = v.generation;
        g.state_timestamp = if v.current_state_timestamp > 0 {
            v.current_state_timestamp
        } else {
            now_ms
        };
        if v.members.is_empty() {
            return g;
        }
        g.protocol_name = v.protocol.clone();
        let protocol = v.protocol.unwrap_or_default();
        for m in v.members {
            if let Some(i) = &m.group_instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(
                m.member_id.clone(),
                ClassicMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    session_deadline: now_ms.saturating_add(i64::from(m.session_timeout_ms)),
                },
            );
        }
        g.leader = v
            .leader
            .filter(|l| g.members.contains_key(l))
            .or_else(|| g.members.keys().next().cloned());
        g.state = ClassicState::Stable;
        g
    }

    /// The stored form (GroupMetadataValue).
    pub fn to_stored(&self) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: self.state_timestamp,
            members: if self.state == ClassicState::Empty {
                Vec::new()
            } else {
                self.members
                    .values()
                    .map(|m| StoredMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        session_timeout_ms: m.session_timeout_ms,
                        subscription: m.metadata_for(&protocol),
                        assignment: m.assignment.clone(),
                    })
                    .collect()
            },
        }
    }

    pub fn state(&self) -> ClassicState {
        self.state
    }

    pub fn state_timestamp(&self) -> i64 {
        self.state_timestamp
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty()
    }

    pub fn members_len(&self) -> usize {
        self.members.len()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Takes the "append a GroupMetadata record" flag.
    pub fn take_needs_store(&mut self) -> bool {
        std::mem::take(&mut self.needs_store)
    }

    /// The group is gone (DeleteGroups, or expired with no offsets left).
    pub fn mark_dead(&mut self, now_ms: i64) {
        debug_assert!(self.members.is_empty());
        self.transition(ClassicState::Dead, now_ms);
    }

    /// This broker no longer coordinates the group: every parked JoinGroup and SyncGroup
    /// hears NOT_COORDINATOR and its client looks the coordinator up again (Kafka's
    /// `onGroupUnloaded`). The group itself is dropped by the caller.
    pub fn unload(&mut self) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult::error(ErrorCode::NotCoordinator, &m.member_id));
            }
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(ErrorCode::NotCoordinator));
            }
        }
    }

    /// Members and their assignments, as DescribeGroups shows them: metadata and assignment
    /// only once the group is Stable, as Kafka does.
    pub fn describe(&self) -> (String, Vec<MemberSummary>) {
        let stable = self.state == ClassicState::Stable;
        let protocol = if stable {
            self.protocol_name.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let members = self
            .members
            .values()
            .map(|m| MemberSummary {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable {
                    m.metadata_for(&protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        (protocol, members)
    }

    /// The topics the members subscribed to, decoded from "consumer" protocol metadata
    /// (OffsetDelete refuses to drop offsets of a subscribed topic).
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") || self.members.is_empty() {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = HashSet::new();
        for m in self.members.values() {
            let mut buf = m.metadata_for(&protocol);
            if buf.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([buf[0], buf[1]]);
            let _ = bytes::Buf::get_i16(&mut buf);
            let sub = ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)).ok()?;
            topics.extend(sub.topics.into_iter().map(|t| t.to_string()));
        }
        Some(topics)
    }

    fn transition(&mut self, to: ClassicState, now_ms: i64) {
        debug_assert!(
            valid_transition(self.state, to),
            "{:?} -> {:?}",
            self.state,
            to
        );
        self.state = to;
        self.state_timestamp = now_ms;
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// Protocols every member supports (all protocols when there are no members yet).
    fn candidate_protocols(&self) -> Option<HashSet<&str>> {
        let mut it = self.members.values();
        let first = it.next()?;
        let mut set: HashSet<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
        for m in it {
            let theirs: HashSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            set.retain(|p| theirs.contains(p));
        }
        Some(set)
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        match self.candidate_protocols() {
            Some(c) => protocols.iter().any(|(n, _)| c.contains(n.as_str())),
            None => true,
        }
    }

    /// Kafka's vote: each member votes for its most preferred protocol among those all
    /// members support; the most voted wins (ties go to the first member's preference).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols()?;
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let order: Vec<&str> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| candidates.contains(n))
            .collect();
        let best = votes.values().copied().max()?;
        order
            .into_iter()
            .find(|n| votes.get(n) == Some(&best))
            .map(str::to_string)
    }

    fn current_join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResult {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: is_leader && skip_assignment,
        }
    }

    /// JoinGroup. `new_member_id` is the id to hand out if this is a new member (the
    /// coordinator makes it: client id or instance id, a dash and a UUID).
    pub fn join(
        &mut self,
        req: JoinRequest,
        new_member_id: String,
        limits: ClassicLimits,
        now_ms: i64,
    ) -> Outcome<JoinResult> {
        if self.state == ClassicState::Dead {
            return Outcome::Done(JoinResult::error(
                ErrorCode::CoordinatorNotAvailable,
                &req.member_id,
            ));
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return Outcome::Done(JoinResult::error(
                ErrorCode::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if req.member_id.is_empty() {
            self.join_unknown(req, new_member_id, limits, now_ms)
        } else {
            self.join_known(req, limits, now_ms)
        }
    }

    fn join_unknown(
        &mut self,
        req: JoinRequest,
        new_member_id: String,
        limits: ClassicLimits,
        now_ms: i64,
    ) -> Outcome<JoinResult> {
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(req, &old_id, new_member_id, limits, now_ms);
            }
        }
        if self.members.len() + self.pending_members.len() >= limits.max_size {
            return Outcome::Done(JoinResult::error(ErrorCode::GroupMaxSizeReached, ""));
        }
        if req.group_instance_id.is_none() && req.require_known_member_id {
            // The client learns its id first, so a lost response cannot leave an orphan
            // member behind (KIP-394). It has one session timeout to come back.
            self.pending_members.insert(
                new_member_id.clone(),
                now_ms.saturating_add(i64::from(req.session_timeout_ms)),
            );
            return Outcome::Done(JoinResult::error(
                ErrorCode::MemberIdRequired,
                &new_member_id,
            ));
        }
        self.add_member_and_rebalance(req, new_member_id, limits, now_ms)
    }

    fn join_known(
        &mut self,
        req: JoinRequest,
        limits: ClassicLimits,
        now_ms: i64,
    ) -> Outcome<JoinResult> {
        let member_id = req.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            if self.members.len() >= limits.max_size {
                self.maybe_complete_join(now_ms);
                return Outcome::Done(JoinResult::error(
                    ErrorCode::GroupMaxSizeReached,
                    &member_id,
                ));
            }
            return self.add_member_and_rebalance(req, member_id, limits, now_ms);
        }
        if let Err(e) = self.check_member(&member_id, req.group_instance_id.as_deref()) {
            return Outcome::Done(JoinResult::error(e, &member_id));
        }
        let (tx, rx) = oneshot::channel();
        let Some(member) = self.members.get_mut(&member_id) else {
            return Outcome::Done(JoinResult::error(ErrorCode::UnknownMemberId, &member_id));
        };
        let unchanged = member.protocols == req.protocols;
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.state {
            ClassicState::PreparingRebalance => {
                update_member(member, &req, now_ms);
                member.join_waiter = Some(tx);
                self.maybe_complete_join(now_ms);
                Outcome::Wait(rx)
            }
            ClassicState::CompletingRebalance if unchanged => {
                // A retried JoinGroup whose response was lost: same answer again.
                member.session_deadline = session_deadline(now_ms, &req);
                Outcome::Done(self.current_join_result(&member_id, false))
            }
            ClassicState::Stable if unchanged && !is_leader => {
                member.session_deadline = session_deadline(now_ms, &req);
                Outcome::Done(self.current_join_result(&member_id, false))
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                // Changed metadata, or the leader asking for a new assignment.
                update_member(member, &req, now_ms);
                member.join_waiter = Some(tx);
                self.prepare_rebalance(now_ms, limits);
                self.maybe_complete_join(now_ms);
                Outcome::Wait(rx)
            }
            ClassicState::Empty | ClassicState::Dead => {
                Outcome::Done(JoinResult::error(ErrorCode::UnknownMemberId, &member_id))
            }
        }
    }

    /// A static member came back with no member id: it takes over its old identity under a
    /// new member id, and the old one is fenced. A Stable group with unchanged protocols does
    /// not rebalance (KIP-345).
    fn replace_static_member(
        &mut self,
        req: JoinRequest,
        old_id: &str,
        new_id: String,
        limits: ClassicLimits,
        now_ms: i64,
    ) -> Outcome<JoinResult> {
        let Some(mut member) = self.members.remove(old_id) else {
            return Outcome::Done(JoinResult::error(ErrorCode::UnknownMemberId, ""));
        };
        if let Some(w) = member.join_waiter.take() {
            let _ = w.send(JoinResult::error(ErrorCode::FencedInstanceId, old_id));
        }
        if let Some(w) = member.sync_waiter.take() {
            let _ = w.send(SyncResult::error(ErrorCode::FencedInstanceId));
        }
        let unchanged = member.protocols == req.protocols;
        member.member_id = new_id.clone();
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.session_deadline = session_deadline(now_ms, &req);
        if let Some(i) = &req.group_instance_id {
            self.static_members.insert(i.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance if unchanged => {
                self.members.insert(new_id.clone(), member);
                if self.state == ClassicState::Stable {
                    self.needs_store = true;
                }
                Outcome::Done(self.current_join_result(&new_id, true))
            }
            _ => {
                member.protocols = req.protocols;
                let (tx, rx) = oneshot::channel();
                member.join_waiter = Some(tx);
                self.members.insert(new_id, member);
                self.prepare_rebalance(now_ms, limits);
                self.maybe_complete_join(now_ms);
                Outcome::Wait(rx)
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        req: JoinRequest,
        member_id: String,
        limits: ClassicLimits,
        now_ms: i64,
    ) -> Outcome<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(i) = &req.group_instance_id {
            self.static_members.insert(i.clone(), member_id.clone());
        }
        let (tx, rx) = oneshot::channel();
        let member = ClassicMember {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            session_deadline: session_deadline(now_ms, &req),
        };
        self.members.insert(member_id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(member_id);
        }
        if let Some(d) = self.initial_delay.as_mut() {
            d.member_joined = true;
        }
        self.prepare_rebalance(now_ms, limits);
        self.maybe_complete_join(now_ms);
        Outcome::Wait(rx)
    }

    /// Moves to PreparingRebalance (from Empty, Stable or CompletingRebalance).
    fn prepare_rebalance(&mut self, now_ms: i64, limits: ClassicLimits) {
        match self.state {
            ClassicState::PreparingRebalance | ClassicState::Dead => return,
            ClassicState::CompletingRebalance => {
                // The leader's assignment will never come for this generation.
                for m in self.members.values_mut() {
                    m.assignment = Bytes::new();
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(SyncResult::error(ErrorCode::RebalanceInProgress));
                    }
                }
                self.pending_sync.clear();
                self.sync_deadline = None;
            }
            ClassicState::Empty | ClassicState::Stable => {}
        }
        let rebalance_timeout = self.max_rebalance_timeout();
        if self.state == ClassicState::Empty && limits.initial_rebalance_delay_ms > 0 {
            let delay = limits
                .initial_rebalance_delay_ms
                .min(rebalance_timeout.max(1));
            self.initial_delay = Some(InitialDelay {
                deadline: now_ms.saturating_add(delay),
                delay_ms: delay,
                remaining_ms: (rebalance_timeout - delay).max(0),
                member_joined: false,
            });
            self.join_deadline = None;
        } else {
            self.initial_delay = None;
            self.join_deadline = Some(now_ms.saturating_add(rebalance_timeout));
        }
        self.transition(ClassicState::PreparingRebalance, now_ms);
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join())
    }

    fn maybe_complete_join(&mut self, now_ms: i64) {
        if self.state == ClassicState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.all_members_joined()
        {
            self.complete_join(now_ms);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, the generation moves
    /// on, and every parked JoinGroup is answered (the leader with the members' metadata).
    fn complete_join(&mut self, now_ms: i64) {
        debug_assert_eq!(self.state, ClassicState::PreparingRebalance);
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join())
            .map(|m| m.member_id.clone())
            .collect();
        for id in missing {
            self.drop_member(&id, ErrorCode::UnknownMemberId);
        }
        self.join_deadline = None;
        self.initial_delay = None;
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.transition(ClassicState::Empty, now_ms);
            self.needs_store = true;
            return;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.transition(ClassicState::CompletingRebalance, now_ms);
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now_ms.saturating_add(self.max_rebalance_timeout()));
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.current_join_result(&id, false);
            if let Some(m) = self.members.get_mut(&id) {
                m.session_deadline = now_ms.saturating_add(i64::from(m.session_timeout_ms));
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(result);
                }
            }
        }
    }

    /// Validates a member id (and instance id) against the group.
    pub fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if let Some(i) = instance_id {
            match self.static_members.get(i) {
                Some(id) if id != member_id => return Err(ErrorCode::FencedInstanceId),
                // Kafka's order: a known instance with another id is fenced; otherwise the
                // member id decides.
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(())
    }

    pub fn sync(&mut self, req: SyncRequest, now_ms: i64) -> Outcome<SyncResult> {
        if self.state == ClassicState::Dead {
            return Outcome::Done(SyncResult::error(ErrorCode::CoordinatorNotAvailable));
        }
        if let Err(e) = self.check_member(&req.member_id, req.group_instance_id.as_deref()) {
            return Outcome::Done(SyncResult::error(e));
        }
        if req.generation_id != self.generation {
            return Outcome::Done(SyncResult::error(ErrorCode::IllegalGeneration));
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol_name.as_ref());
        if type_mismatch || name_mismatch {
            return Outcome::Done(SyncResult::error(ErrorCode::InconsistentGroupProtocol));
        }
        match self.state {
            ClassicState::Empty | ClassicState::Dead => {
                Outcome::Done(SyncResult::error(ErrorCode::UnknownMemberId))
            }
            ClassicState::PreparingRebalance => {
                Outcome::Done(SyncResult::error(ErrorCode::RebalanceInProgress))
            }
            ClassicState::Stable => {
                let result = self.sync_result(&req.member_id);
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.session_deadline = now_ms.saturating_add(i64::from(m.session_timeout_ms));
                }
                Outcome::Done(result)
            }
            ClassicState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.session_deadline = now_ms.saturating_add(i64::from(m.session_timeout_ms));
                    m.sync_waiter = Some(tx);
                }
                self.pending_sync.remove(&req.member_id);
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let mut given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.sync_deadline = None;
                    self.pending_sync.clear();
                    self.transition(ClassicState::Stable, now_ms);
                    // Parked SyncGroups are answered once the record is stored.
                    self.needs_store = true;
                }
                Outcome::Wait(rx)
            }
        }
    }

    fn sync_result(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// The GroupMetadata record ending at `last_offset` was appended; the parked SyncGroups
    /// are answered when its replication completes ([`Self::on_stored`]).
    pub fn store_in_flight(&mut self, last_offset: i64) {
        self.store_in_flight = Some(last_offset);
    }

    /// Whether the record ending at `last_offset` is the latest store in flight: an older
    /// one finishing answers nobody.
    pub fn is_store_in_flight(&self, last_offset: i64) -> bool {
        self.store_in_flight == Some(last_offset)
    }

    /// The GroupMetadata record was appended (and replicated): answer the parked SyncGroups.
    pub fn on_stored(&mut self) {
        self.store_in_flight = None;
        if self.state != ClassicState::Stable {
            return;
        }
        let ids: Vec<String> = self
            .members
            .values()
            .filter(|m| m.sync_waiter.is_some())
            .map(|m| m.member_id.clone())
            .collect();
        for id in ids {
            let result = self.sync_result(&id);
            if let Some(w) = self.members.get_mut(&id).and_then(|m| m.sync_waiter.take()) {
                let _ = w.send(result);
            }
        }
    }

    /// The GroupMetadata record could not be appended: the assignment is not durable, so
    /// parked SyncGroups fail and the group rebalances.
    pub fn on_store_failed(&mut self, error: ErrorCode, limits: ClassicLimits, now_ms: i64) {
        self.store_in_flight = None;
        if self.state != ClassicState::Stable {
            return;
        }
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(SyncResult::error(error));
            }
        }
        self.prepare_rebalance(now_ms, limits);
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), ErrorCode> {
        match self.state {
            ClassicState::Dead => return Err(ErrorCode::CoordinatorNotAvailable),
            ClassicState::Empty => return Err(ErrorCode::UnknownMemberId),
            _ => {}
        }
        self.check_member(member_id, instance_id)?;
        if generation_id != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline = now_ms.saturating_add(i64::from(m.session_timeout_ms));
        }
        match self.state {
            ClassicState::PreparingRebalance => Err(ErrorCode::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for one member (by member id, instance id, or both).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        limits: ClassicLimits,
        now_ms: i64,
    ) -> Result<(), ErrorCode> {
        if self.state == ClassicState::Dead {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        let id = match instance_id {
            Some(i) => match self.static_members.get(i) {
                None => return Err(ErrorCode::UnknownMemberId),
                Some(id) if !member_id.is_empty() && id != member_id => {
                    return Err(ErrorCode::FencedInstanceId)
                }
                Some(id) => id.clone(),
            },
            None => {
                if self.pending_members.remove(member_id).is_some() {
                    self.maybe_complete_join(now_ms);
                    return Ok(());
                }
                if !self.members.contains_key(member_id) {
                    return Err(ErrorCode::UnknownMemberId);
                }
                member_id.to_string()
            }
        };
        self.remove_member(&id, limits, now_ms);
        Ok(())
    }

    /// Drops a member without touching the group state (its parked requests get `error`).
    fn drop_member(&mut self, member_id: &str, error: ErrorCode) {
        let Some(mut m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(i) = &m.group_instance_id {
            if self.static_members.get(i).map(String::as_str) == Some(member_id) {
                self.static_members.remove(i);
            }
        }
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(error, member_id));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(SyncResult::error(error));
        }
        self.pending_sync.remove(member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self
                .members
                .values()
                .find(|m| m.awaiting_join())
                .or_else(|| self.members.values().next())
                .map(|m| m.member_id.clone());
        }
    }

    /// Removes a member (left, expired, fenced) and rebalances the rest.
    fn remove_member(&mut self, member_id: &str, limits: ClassicLimits, now_ms: i64) {
        self.drop_member(member_id, ErrorCode::UnknownMemberId);
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, limits);
                self.maybe_complete_join(now_ms);
            }
            ClassicState::PreparingRebalance => self.maybe_complete_join(now_ms),
            ClassicState::Empty | ClassicState::Dead => {}
        }
    }

    /// Timers: expired sessions, the join-phase deadline and initial delay, members that
    /// never sent SyncGroup. Returns the ids of members removed.
    pub fn tick(&mut self, limits: ClassicLimits, now_ms: i64) -> Vec<String> {
        let mut removed = Vec::new();
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, d)| **d <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_pending {
            self.pending_members.remove(&id);
            self.maybe_complete_join(now_ms);
        }
        // A parked request whose connection closed holds nobody: forget it, so the member's
        // session can expire (a client killed mid-rebalance must not hold the group until
        // the rebalance timeout).
        for m in self.members.values_mut() {
            if m.join_waiter.as_ref().is_some_and(|w| w.is_closed()) {
                m.join_waiter = None;
            }
            if m.sync_waiter.as_ref().is_some_and(|w| w.is_closed()) {
                m.sync_waiter = None;
            }
        }
        // Members parked in JoinGroup or SyncGroup are alive: the coordinator holds them.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none() && m.sync_waiter.is_none() && m.session_deadline <= now_ms
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.group_id, member = %id, "member session expired");
            self.remove_member(&id, limits, now_ms);
            removed.push(id);
        }
        if self.state == ClassicState::PreparingRebalance {
            if let Some(d) = self.initial_delay {
                if d.deadline <= now_ms {
                    if d.member_joined && d.remaining_ms > 0 {
                        let next = d.delay_ms.min(d.remaining_ms);
                        self.initial_delay = Some(InitialDelay {
                            deadline: now_ms.saturating_add(next),
                            delay_ms: d.delay_ms,
                            remaining_ms: d.remaining_ms - next,
                            member_joined: false,
                        });
                    } else {
                        self.initial_delay = None;
                        self.complete_join(now_ms);
                    }
                }
            } else if self.join_deadline.is_some_and(|d| d <= now_ms) {
                self.complete_join(now_ms);
            }
        }
        if self.state == ClassicState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| d <= now_ms)
        {
            let laggards: Vec<String> = self.pending_sync.iter().cloned().collect();
            for id in laggards {
                tracing::info!(group = %self.group_id, member = %id, "member did not sync in time");
                self.drop_member(&id, ErrorCode::UnknownMemberId);
                removed.push(id);
            }
            self.sync_deadline = None;
            self.prepare_rebalance(now_ms, limits);
            self.maybe_complete_join(now_ms);
        }
        removed
    }
}

fn update_member(member: &mut ClassicMember, req: &JoinRequest, now_ms: i64) {
    member.protocols = req.protocols.clone();
    member.client_id = req.client_id.clone();
    member.client_host = req.client_host.clone();
    member.session_timeout_ms = req.session_timeout_ms;
    member.rebalance_timeout_ms = req.rebalance_timeout_ms;
    member.session_deadline = session_deadline(now_ms, req);
}

fn session_deadline(now_ms: i64, req: &JoinRequest) -> i64 {
    now_ms.saturating_add(i64::from(req.session_timeout_ms))
}

fn valid_transition(from: ClassicState, to: ClassicState) -> bool {
    use ClassicState::*;
    match to {
        Empty => from == PreparingRebalance,
        PreparingRebalance => matches!(from, Empty | Stable | CompletingRebalance),
        CompletingRebalance => from == PreparingRebalance,
        Stable => from == CompletingRebalance,
        Dead => true,
    }
}

#[cfg(test)]
#[path = "classic_tests.rs"]
mod tests;
