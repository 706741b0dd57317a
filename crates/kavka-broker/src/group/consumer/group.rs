//! A KIP-848 consumer group: its members, the group epoch, the target assignment computed by
//! the server-side assignor at that epoch, and who holds which partition right now.
//!
//! Epochs: the group epoch moves on whenever membership, a subscription, the subscribed
//! topics' metadata or the group's assignor changes, and the target assignment is recomputed
//! at once at the new epoch (so `assignment_epoch == group_epoch` between calls). Each member
//! then reconciles towards its target one heartbeat at a time (see `reconcile`).
//!
//! Pure state machine: no I/O, no clock (time comes in as `now_ms`). The only randomness is the
//! member id generated for a v0 client that joins without one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedTopic;
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as hb};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::assignment::{self, Assignment};
use super::assignor::{AssignmentSpec, MemberSpec, ServerAssignor};
use super::error::ConsumerGroupError;
use super::member::{ConsumerGroupMember, MemberState};
use super::reconcile::{self, Target};
use super::topic_regex::TopicRegex;
use super::topics::{TopicInfo, TopicResolver};

/// `member_epoch` of a heartbeat that leaves the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// `member_epoch` of a heartbeat by which a static member leaves for now, keeping its
/// partitions until its session times out or its instance id rejoins.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// Longest member id, instance id and rack id accepted (bytes).
pub const MAX_ID_LEN: usize = 255;
/// Longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// How often a heartbeat re-reads the subscribed topics' metadata, in case the coordinator
/// missed an `on_metadata_change`.
const METADATA_REFRESH_INTERVAL_MS: i64 = 10_000;

/// Broker settings for consumer groups (`group.consumer.*` in server.properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`: a member without heartbeat for this long is removed.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: told to members in every response.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`: members beyond this are refused with GROUP_MAX_SIZE_REACHED.
    pub max_size: usize,
    /// `group.consumer.assignors`: the first one is the default.
    pub assignors: Vec<ServerAssignor>,
    /// Most topic names one member may subscribe to (kavka's bound; Kafka has none).
    pub max_subscribed_topics: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX as usize,
            assignors: vec![ServerAssignor::Uniform, ServerAssignor::Range],
            max_subscribed_topics: 10_000,
        }
    }
}

/// Kafka's consumer group states, as ListGroups and ConsumerGroupDescribe name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    /// The group epoch moved on and the target assignment is not yet computed. Not seen
    /// between calls here, since the target is recomputed right away.
    Assigning,
    /// Some member has not reached the target assignment yet.
    Reconciling,
    Stable,
    /// The group was deleted (the coordinator's business; a `ConsumerGroup` never reports it).
    Dead,
}

impl ConsumerGroupState {
    /// Kafka's name: "Empty", "Assigning", "Reconciling", "Stable", "Dead".
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Assigning => "Assigning",
            Self::Reconciling => "Reconciling",
            Self::Stable => "Stable",
            Self::Dead => "Dead",
        }
    }
}

/// A member's regular expression and the topic names it matched at the last look.
#[derive(Debug, Clone)]
pub(super) struct ResolvedRegex {
    pub(super) regex: TopicRegex,
    pub(super) topics: BTreeSet<String>,
}

/// Who the heartbeat speaks for, decided before anything changes.
enum Joiner {
    Existing,
    New,
    /// A static member rejoins under a new member id and takes over the old member's place.
    ReplacesStatic(String),
}

/// A consumer group using the consumer (KIP-848) protocol. The fields are visible to the
/// `consumer` module so that `snapshot` can write a group out and rebuild it.
#[derive(Debug, Clone)]
pub struct ConsumerGroup {
    pub(super) group_id: String,
    pub(super) config: ConsumerGroupConfig,
    pub(super) group_epoch: i32,
    /// Epoch at which `target` was computed.
    pub(super) assignment_epoch: i32,
    pub(super) members: BTreeMap<String, ConsumerGroupMember>,
    /// Instance id → member id of static members.
    pub(super) static_members: BTreeMap<String, String>,
    /// Target assignment per member id.
    pub(super) target: BTreeMap<String, Assignment>,
    /// Partition → member that holds it (assigned or pending revocation). Each partition has
    /// at most one holder: this map is what keeps two members from owning one partition.
    pub(super) holders: HashMap<(Uuid, i32), String>,
    /// The members' regular expressions, with the topic names each matched at the last look
    /// at the metadata.
    pub(super) regexes: BTreeMap<String, ResolvedRegex>,
    /// The existing topics the members subscribe to (by name or regex), as of the last look
    /// at the metadata.
    pub(super) subscribed_topics: BTreeMap<String, TopicInfo>,
    /// The assignor that computed `target`.
    pub(super) assignor: ServerAssignor,
    pub(super) metadata_refresh_deadline_ms: i64,
    /// Something a snapshot holds changed since the last `take_dirty`.
    pub(super) dirty: bool,
}

impl ConsumerGroup {
    pub fn new(group_id: String, config: ConsumerGroupConfig) -> Self {
        let assignor = config
            .assignors
            .first()
            .copied()
            .unwrap_or(ServerAssignor::Uniform);
        Self {
            group_id,
            config,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            holders: HashMap::new(),
            regexes: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            assignor,
            metadata_refresh_deadline_ms: i64::MIN,
            dirty: false,
        }
    }

    /// True when something a snapshot holds changed since the last call (membership, member
    /// epochs and states, subscriptions, assignors, assigned and pending partitions, the target
    /// assignment, the epochs). Session deadlines alone do not count: they restart at load.
    /// Clears the flag, so the coordinator writes one snapshot per change.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members_len(&self) -> usize {
        self.members.len()
    }

    /// The existing topics the members subscribe to (OffsetDelete refuses to drop their
    /// offsets while the group is active).
    pub fn subscribed_topic_names(&self) -> std::collections::HashSet<String> {
        self.subscribed_topics.keys().cloned().collect()
    }

    /// The member with this id, for the coordinator's inspection and tests.
    pub fn member(&self, member_id: &str) -> Option<&ConsumerGroupMember> {
        self.members.get(member_id)
    }

    /// The member's partitions in the current target assignment.
    pub fn target_assignment(&self, member_id: &str) -> Option<&Assignment> {
        self.target.get(member_id)
    }

    /// The assignor the group uses now: the one most members ask for, else the default.
    pub fn assignor(&self) -> ServerAssignor {
        self.assignor
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.is_reconciled_to(self.assignment_epoch))
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// One ConsumerGroupHeartbeat: joins (epoch 0), leaves (-1, or -2 for a static member that
    /// will come back), or moves the member one step towards its target assignment. The
    /// response carries the member id and epoch, the heartbeat interval, and the member's
    /// assigned partitions when they changed or the request was a full one. On error nothing
    /// has changed.
    pub fn heartbeat(
        &mut self,
        req: &ConsumerGroupHeartbeatRequest,
        client_id: &str,
        client_host: &str,
        topics: &dyn TopicResolver,
        now_ms: i64,
    ) -> Result<ConsumerGroupHeartbeatResponse, ConsumerGroupError> {
        self.validate(req)?;
        if req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
            || req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
        {
            return self.leave(req, topics, now_ms);
        }

        let joining = req.member_epoch == 0;
        let member_id = if req.member_id.is_empty() {
            // Only v0 clients join without an id of their own.
            Uuid::new_v4().to_string()
        } else {
            req.member_id.to_string()
        };
        let owned = req.topic_partitions.as_deref();
        let joiner = self.joiner(req, &member_id, joining, owned)?;

        // Nothing has changed so far; from here on nothing fails.
        let before = match &joiner {
            Joiner::Existing => self.members.get(&member_id).cloned(),
            Joiner::New => None,
            Joiner::ReplacesStatic(old_id) => {
                self.replace_static_member(old_id, &member_id);
                self.members.get(&member_id).cloned()
            }
        };
        let mut member = before
            .clone()
            .unwrap_or_else(|| ConsumerGroupMember::new(member_id.clone()));

        if let Some(instance_id) = req.instance_id.as_deref() {
            if let Some(previous) = member.instance_id.as_deref() {
                if previous != instance_id && self.static_members.get(previous) == Some(&member_id)
                {
                    self.static_members.remove(previous);
                }
            }
            member.instance_id = Some(instance_id.to_string());
            self.static_members
                .insert(instance_id.to_string(), member_id.clone());
        }
        if let Some(rack_id) = req.rack_id.as_deref() {
            member.rack_id = Some(rack_id.to_string());
        }
        if req.rebalance_timeout_ms != -1 {
            member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(name) = req.server_assignor.as_deref() {
            member.server_assignor = ServerAssignor::from_name(name);
        }
        if let Some(names) = &req.subscribed_topic_names {
            member.subscribed_topic_names = names.iter().map(|n| n.0.to_string()).collect();
        }
        if let Some(regex) = req.subscribed_topic_regex.as_deref() {
            // An empty regex means none (Kafka's convention).
            member.subscribed_topic_regex = (!regex.is_empty()).then(|| regex.to_string());
        }
        member.client_id = client_id.to_string();
        member.client_host = client_host.to_string();
        member.session_deadline_ms =
            now_ms.saturating_add(i64::from(self.config.session_timeout_ms));

        let subscription_changed = before.as_ref().is_none_or(|b| {
            b.subscribed_topic_names != member.subscribed_topic_names
                || b.subscribed_topic_regex != member.subscribed_topic_regex
        });
        self.members.insert(member_id.clone(), member);
        if subscription_changed {
            self.sync_regexes(topics);
        }

        // Group epoch and target assignment.
        let mut bump = self.group_epoch == 0 || subscription_changed;
        if bump || now_ms >= self.metadata_refresh_deadline_ms {
            if now_ms >= self.metadata_refresh_deadline_ms {
                bump |= self.resolve_regexes(topics);
            }
            bump |= self.refresh_subscribed_topics(topics);
            self.metadata_refresh_deadline_ms = now_ms.saturating_add(METADATA_REFRESH_INTERVAL_MS);
        }
        bump |= self.preferred_assignor() != self.assignor;
        if bump {
            self.bump_and_assign();
        }

        // Reconciliation.
        let member = self.reconcile_member(&member_id, owned, now_ms);

        let full_request = joining
            || (req.rebalance_timeout_ms != -1
                && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
                && owned.is_some());
        let assignment_changed = before
            .as_ref()
            .is_none_or(|b| b.assigned != member.assigned);
        let assignment = (full_request || assignment_changed).then(|| {
            hb::Assignment::default().with_topic_partitions(
                member
                    .assigned
                    .iter()
                    .map(|(topic, partitions)| {
                        hb::TopicPartitions::default()
                            .with_topic_id(*topic)
                            .with_partitions(partitions.iter().copied().collect())
                    })
                    .collect(),
            )
        });
        if before
            .as_ref()
            .is_none_or(|b| !b.same_durable_state(&member))
        {
            self.dirty = true;
        }
        debug_assert!(self.holders_are_consistent());
        Ok(ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(member.member_id.clone())))
            .with_member_epoch(member.member_epoch)
            .with_heartbeat_interval_ms(self.config.heartbeat_interval_ms)
            .with_assignment(assignment))
    }

    /// Removes members whose session expired, and members still revoking past their rebalance
    /// timeout; returns their ids. The group epoch moves on once if any was removed.
    pub fn expire(&mut self, now_ms: i64, topics: &dyn TopicResolver) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now_ms >= m.session_deadline_ms
                    || m.revocation_deadline_ms
                        .is_some_and(|deadline| now_ms >= deadline)
            })
            .map(|m| m.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for member_id in &expired {
                self.remove_member(member_id);
            }
            self.sync_regexes(topics);
            self.refresh_subscribed_topics(topics);
            self.bump_and_assign();
        }
        expired
    }

    /// The metadata changed (topics created or deleted, partitions added): moves the group
    /// epoch on and recomputes the target assignment if a subscribed topic is affected.
    pub fn on_metadata_change(&mut self, topics: &dyn TopicResolver) {
        let regex_matches_changed = self.resolve_regexes(topics);
        if self.refresh_subscribed_topics(topics) || regex_matches_changed {
            self.bump_and_assign();
        }
    }

    /// Earliest time at which `expire` could remove a member.
    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| std::iter::once(m.session_deadline_ms).chain(m.revocation_deadline_ms))
            .min()
    }

    /// An OffsetCommit from a member of this group: its epoch must be the member's current one.
    /// A commit with a negative epoch (admin client, manual assignment) is allowed while the
    /// group has no members. The coordinator checks the OffsetCommit version (>= 9) itself.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), ConsumerGroupError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        self.validate_member_epoch(member_id, member_epoch)
    }

    /// An OffsetFetch that names a member (v9+): its epoch must be the member's current one. A
    /// fetch without member (empty id and negative epoch) is always allowed.
    pub fn validate_offset_fetch(
        &self,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), ConsumerGroupError> {
        if member_id.is_empty() && member_epoch < 0 {
            return Ok(());
        }
        self.validate_member_epoch(member_id, member_epoch)
    }

    /// The group as ConsumerGroupDescribe shows it (`authorized_operations` left to the caller).
    pub fn describe(&self, topics: &dyn TopicResolver) -> DescribedGroup {
        let describe_assignment = |a: &Assignment| {
            describe::Assignment::default().with_topic_partitions(
                a.iter()
                    .filter_map(|(topic, partitions)| {
                        let info = topics.by_id(*topic)?;
                        Some(
                            describe::TopicPartitions::default()
                                .with_topic_id(*topic)
                                .with_topic_name(TopicName(StrBytes::from_string(info.name)))
                                .with_partitions(partitions.iter().copied().collect()),
                        )
                    })
                    .collect(),
            )
        };
        let empty = Assignment::new();
        let members = self
            .members
            .values()
            .map(|m| {
                describe::Member::default()
                    .with_member_id(StrBytes::from_string(m.member_id.clone()))
                    .with_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                    .with_rack_id(m.rack_id.clone().map(StrBytes::from_string))
                    .with_member_epoch(m.member_epoch)
                    .with_client_id(StrBytes::from_string(m.client_id.clone()))
                    .with_client_host(StrBytes::from_string(m.client_host.clone()))
                    .with_subscribed_topic_names(
                        m.subscribed_topic_names
                            .iter()
                            .map(|n| TopicName(StrBytes::from_string(n.clone())))
                            .collect(),
                    )
                    .with_subscribed_topic_regex(
                        m.subscribed_topic_regex.clone().map(StrBytes::from_string),
                    )
                    .with_assignment(describe_assignment(&m.assigned))
                    .with_target_assignment(describe_assignment(
                        self.target.get(&m.member_id).unwrap_or(&empty),
                    ))
                    // 1: a member of the consumer protocol (v1 field; -1 unknown, 0 classic).
                    .with_member_type(1)
            })
            .collect();
        DescribedGroup::default()
            .with_group_id(StrBytes::from_string(self.group_id.clone()).into())
            .with_group_state(StrBytes::from_static_str(self.state().name()))
            .with_group_epoch(self.group_epoch)
            .with_assignment_epoch(self.assignment_epoch)
            .with_assignor_name(StrBytes::from_static_str(self.assignor.name()))
            .with_members(members)
    }

    // ---- validation -------------------------------------------------------------------

    /// Request checks that need no member (Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`).
    fn validate(&self, req: &ConsumerGroupHeartbeatRequest) -> Result<(), ConsumerGroupError> {
        let invalid = |why: &str| Err(ConsumerGroupError::InvalidRequest(why.to_string()));
        if req.group_id.is_empty() {
            return invalid("GroupId can't be empty.");
        }
        if req.member_epoch != 0 && req.member_id.is_empty() {
            return invalid("MemberId can't be empty.");
        }
        if req.member_id.len() > MAX_ID_LEN {
            return invalid("MemberId is too long.");
        }
        match req.instance_id.as_deref() {
            Some("") => return invalid("InstanceId can't be empty."),
            Some(id) if id.len() > MAX_ID_LEN => return invalid("InstanceId is too long."),
            _ => {}
        }
        match req.rack_id.as_deref() {
            Some("") => return invalid("RackId can't be empty."),
            Some(id) if id.len() > MAX_ID_LEN => return invalid("RackId is too long."),
            _ => {}
        }
        if req.rebalance_timeout_ms < -1 {
            return invalid("RebalanceTimeoutMs can't be negative.");
        }
        match req.member_epoch {
            0 => {
                if req.rebalance_timeout_ms == -1 {
                    return invalid("RebalanceTimeoutMs must be provided in first request.");
                }
                if req
                    .topic_partitions
                    .as_ref()
                    .is_none_or(|tps| !tps.is_empty())
                {
                    return invalid("TopicPartitions must be empty when (re-)joining.");
                }
                if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                    return invalid(
                        "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
                    );
                }
            }
            LEAVE_GROUP_STATIC_MEMBER_EPOCH if req.instance_id.is_none() => {
                return invalid("InstanceId can't be null.");
            }
            epoch if epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH => {
                return invalid("MemberEpoch is invalid.")
            }
            _ => {}
        }
        if let Some(names) = &req.subscribed_topic_names {
            if names.len() > self.config.max_subscribed_topics {
                return Err(ConsumerGroupError::InvalidRequest(format!(
                    "SubscribedTopicNames has {} topics; at most {} are allowed.",
                    names.len(),
                    self.config.max_subscribed_topics
                )));
            }
            if names
                .iter()
                .any(|n| n.is_empty() || n.len() > MAX_TOPIC_NAME_LEN)
            {
                return invalid("SubscribedTopicNames holds an invalid topic name.");
            }
        }
        if let Some(regex) = req
            .subscribed_topic_regex
            .as_deref()
            .filter(|re| !re.is_empty())
        {
            if let Err(e) = TopicRegex::new(regex) {
                return Err(ConsumerGroupError::InvalidRegularExpression(format!(
                    "SubscribedTopicRegex `{regex}` is not a valid regular expression: {e}."
                )));
            }
        }
        if let Some(name) = req.server_assignor.as_deref() {
            let supported =
                ServerAssignor::from_name(name).is_some_and(|a| self.config.assignors.contains(&a));
            if !supported {
                let names: Vec<&str> = self.config.assignors.iter().map(|a| a.name()).collect();
                return Err(ConsumerGroupError::UnsupportedAssignor(format!(
                    "ServerAssignor {name} is not supported. Supported assignors: {}.",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Decides whom a (non-leaving) heartbeat speaks for, or why it may not.
    fn joiner(
        &self,
        req: &ConsumerGroupHeartbeatRequest,
        member_id: &str,
        joining: bool,
        owned: Option<&[OwnedTopic]>,
    ) -> Result<Joiner, ConsumerGroupError> {
        let exists = self.members.contains_key(member_id);
        let check_capacity = || {
            if self.members.len() >= self.config.max_size {
                Err(ConsumerGroupError::GroupMaxSizeReached(format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    self.config.max_size
                )))
            } else {
                Ok(Joiner::New)
            }
        };
        if let Some(instance_id) = req.instance_id.as_deref() {
            let holder = self.static_members.get(instance_id);
            if joining {
                return match holder {
                    Some(holder) if holder == member_id => Ok(Joiner::Existing),
                    Some(holder) => {
                        let away = self
                            .members
                            .get(holder)
                            .is_none_or(|m| m.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH);
                        if !away {
                            return Err(ConsumerGroupError::UnreleasedInstanceId(format!(
                                "Static member {member_id} with instance id {instance_id} cannot join the group because the instance id is owned by {holder} member."
                            )));
                        }
                        if exists {
                            // The new member id is already another member: refuse rather
                            // than merge two members.
                            return Err(ConsumerGroupError::InvalidRequest(format!(
                                "MemberId {member_id} is already used by another member."
                            )));
                        }
                        Ok(Joiner::ReplacesStatic(holder.clone()))
                    }
                    None if exists => Ok(Joiner::Existing),
                    None => check_capacity(),
                };
            }
            let Some(holder) = holder else {
                return Err(ConsumerGroupError::UnknownMemberId(format!(
                    "Instance id {instance_id} is unknown."
                )));
            };
            if holder != member_id {
                return Err(ConsumerGroupError::FencedInstanceId(format!(
                    "Static member {member_id} with instance id {instance_id} was fenced by member {holder}."
                )));
            }
        }
        match self.members.get(member_id) {
            Some(_) if joining => Ok(Joiner::Existing),
            Some(member) => {
                check_member_epoch(member, req.member_epoch, owned)?;
                Ok(Joiner::Existing)
            }
            None if joining => check_capacity(),
            None => Err(ConsumerGroupError::UnknownMemberId(format!(
                "Member {member_id} is not a member of group {}.",
                self.group_id
            ))),
        }
    }

    fn validate_member_epoch(
        &self,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), ConsumerGroupError> {
        let Some(member) = self.members.get(member_id) else {
            return Err(ConsumerGroupError::UnknownMemberId(format!(
                "Member {member_id} is not a member of group {}.",
                self.group_id
            )));
        };
        if member.member_epoch != member_epoch {
            return Err(ConsumerGroupError::StaleMemberEpoch(format!(
                "The member epoch {member_epoch} of member {member_id} is stale: the current one is {}.",
                member.member_epoch
            )));
        }
        Ok(())
    }

    // ---- leaving ----------------------------------------------------------------------

    fn leave(
        &mut self,
        req: &ConsumerGroupHeartbeatRequest,
        topics: &dyn TopicResolver,
        now_ms: i64,
    ) -> Result<ConsumerGroupHeartbeatResponse, ConsumerGroupError> {
        let member_id = req.member_id.to_string();
        match req.instance_id.as_deref() {
            Some(instance_id) => {
                let Some(holder) = self.static_members.get(instance_id) else {
                    return Err(ConsumerGroupError::UnknownMemberId(format!(
                        "Instance id {instance_id} is unknown."
                    )));
                };
                if *holder != member_id {
                    return Err(ConsumerGroupError::FencedInstanceId(format!(
                        "Static member {member_id} with instance id {instance_id} was fenced by member {holder}."
                    )));
                }
            }
            None if !self.members.contains_key(&member_id) => {
                return Err(ConsumerGroupError::UnknownMemberId(format!(
                    "Member {member_id} is not a member of group {}.",
                    self.group_id
                )));
            }
            None => {}
        }
        if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            // Away for now: keep the assignment for a whole session timeout so the same
            // instance id can take it back; what was being revoked is released.
            let before = self.members.get(&member_id).cloned();
            self.release(&member_id, |m| std::mem::take(&mut m.pending_revocation));
            if let Some(m) = self.members.get_mut(&member_id) {
                if m.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                    m.previous_member_epoch = m.member_epoch;
                }
                m.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
                m.revocation_deadline_ms = None;
                m.session_deadline_ms =
                    now_ms.saturating_add(i64::from(self.config.session_timeout_ms));
                if m.state == MemberState::UnrevokedPartitions {
                    m.state = MemberState::Stable;
                }
                if before.is_none_or(|b| !b.same_durable_state(m)) {
                    self.dirty = true;
                }
            }
        } else {
            self.remove_member(&member_id);
            self.sync_regexes(topics);
            self.refresh_subscribed_topics(topics);
            self.bump_and_assign();
        }
        debug_assert!(self.holders_are_consistent());
        Ok(ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(member_id)))
            .with_member_epoch(req.member_epoch))
    }

    // ---- membership bookkeeping -------------------------------------------------------

    /// Takes a member out: its partitions become free and its target entry goes. The caller
    /// moves the group epoch on.
    fn remove_member(&mut self, member_id: &str) {
        let Some(member) = self.members.remove(member_id) else {
            return;
        };
        self.dirty = true;
        for (topic, partition) in
            assignment::iter(&member.assigned).chain(assignment::iter(&member.pending_revocation))
        {
            if self
                .holders
                .get(&(topic, partition))
                .is_some_and(|h| h == member_id)
            {
                self.holders.remove(&(topic, partition));
            }
        }
        self.target.remove(member_id);
        if let Some(instance_id) = &member.instance_id {
            if self
                .static_members
                .get(instance_id)
                .is_some_and(|h| h == member_id)
            {
                self.static_members.remove(instance_id);
            }
        }
    }

    /// A static member rejoins as `new_id`: the old member's state, partitions and target
    /// carry over to the new id, at member epoch 0.
    fn replace_static_member(&mut self, old_id: &str, new_id: &str) {
        let Some(mut member) = self.members.remove(old_id) else {
            return;
        };
        self.dirty = true;
        for (topic, partition) in
            assignment::iter(&member.assigned).chain(assignment::iter(&member.pending_revocation))
        {
            if let Some(holder) = self.holders.get_mut(&(topic, partition)) {
                *holder = new_id.to_string();
            }
        }
        if let Some(target) = self.target.remove(old_id) {
            self.target.insert(new_id.to_string(), target);
        }
        if let Some(instance_id) = &member.instance_id {
            self.static_members
                .insert(instance_id.clone(), new_id.to_string());
        }
        member.member_id = new_id.to_string();
        member.member_epoch = 0;
        member.previous_member_epoch = 0;
        member.revocation_deadline_ms = None;
        self.members.insert(new_id.to_string(), member);
    }

    /// Frees the partitions `take` removes from the member.
    fn release(
        &mut self,
        member_id: &str,
        take: impl FnOnce(&mut ConsumerGroupMember) -> Assignment,
    ) {
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        let taken = take(member);
        for (topic, partition) in assignment::iter(&taken) {
            if self
                .holders
                .get(&(topic, partition))
                .is_some_and(|h| h == member_id)
            {
                self.holders.remove(&(topic, partition));
            }
        }
    }

    // ---- assignment -------------------------------------------------------------------

    /// Keeps `regexes` to the patterns members use, resolving new ones.
    fn sync_regexes(&mut self, topics: &dyn TopicResolver) {
        let used: BTreeSet<&String> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_topic_regex.as_ref())
            .collect();
        self.regexes.retain(|pattern, _| used.contains(pattern));
        let new: Vec<String> = used
            .into_iter()
            .filter(|p| !self.regexes.contains_key(*p))
            .cloned()
            .collect();
        if new.is_empty() {
            return;
        }
        let names = topics.names();
        for pattern in new {
            // Validated when the member sent it.
            if let Ok(regex) = TopicRegex::new(&pattern) {
                let matched = names.iter().filter(|n| regex.matches(n)).cloned().collect();
                self.regexes.insert(
                    pattern,
                    ResolvedRegex {
                        regex,
                        topics: matched,
                    },
                );
            }
        }
    }

    /// Matches every regex against the current topic names; true if any result changed.
    fn resolve_regexes(&mut self, topics: &dyn TopicResolver) -> bool {
        if self.regexes.is_empty() {
            return false;
        }
        let names = topics.names();
        let mut changed = false;
        for resolved in self.regexes.values_mut() {
            let matched: BTreeSet<String> = names
                .iter()
                .filter(|n| resolved.regex.matches(n))
                .cloned()
                .collect();
            if matched != resolved.topics {
                resolved.topics = matched;
                changed = true;
            }
        }
        changed
    }

    /// Topic names `member` subscribes to: by name and through its regex.
    fn member_topic_names<'a>(
        &'a self,
        member: &'a ConsumerGroupMember,
    ) -> impl Iterator<Item = &'a String> + 'a {
        let by_regex = member
            .subscribed_topic_regex
            .as_ref()
            .and_then(|p| self.regexes.get(p))
            .into_iter()
            .flat_map(|r| r.topics.iter());
        member.subscribed_topic_names.iter().chain(by_regex)
    }

    /// Re-reads the metadata of the subscribed topics; true if it changed.
    fn refresh_subscribed_topics(&mut self, topics: &dyn TopicResolver) -> bool {
        let names: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(|m| self.member_topic_names(m))
            .collect();
        let fresh: BTreeMap<String, TopicInfo> = names
            .into_iter()
            .filter_map(|name| topics.by_name(name).map(|info| (name.clone(), info)))
            .filter(|(name, info)| info.name == *name)
            .collect();
        if fresh == self.subscribed_topics {
            return false;
        }
        self.subscribed_topics = fresh;
        true
    }

    /// The assignor most members name (ties: the one listed first in the config), else the
    /// default.
    fn preferred_assignor(&self) -> ServerAssignor {
        let default = self
            .config
            .assignors
            .first()
            .copied()
            .unwrap_or(ServerAssignor::Uniform);
        let mut votes: BTreeMap<ServerAssignor, usize> = BTreeMap::new();
        for assignor in self.members.values().filter_map(|m| m.server_assignor) {
            *votes.entry(assignor).or_default() += 1;
        }
        let rank = |a: &ServerAssignor| {
            self.config
                .assignors
                .iter()
                .position(|c| c == a)
                .unwrap_or(usize::MAX)
        };
        votes
            .into_iter()
            .max_by(|(a, x), (b, y)| x.cmp(y).then_with(|| rank(b).cmp(&rank(a))))
            .map_or(default, |(a, _)| a)
    }

    /// Moves the group epoch on and computes the target assignment at it.
    fn bump_and_assign(&mut self) {
        self.dirty = true;
        self.group_epoch = self.group_epoch.saturating_add(1);
        self.assignor = self.preferred_assignor();
        let spec = AssignmentSpec {
            members: self
                .members
                .values()
                .map(|m| {
                    let spec = MemberSpec {
                        subscribed: self.subscribed_ids(m),
                        current: self.target.get(&m.member_id).cloned().unwrap_or_default(),
                    };
                    (m.member_id.clone(), spec)
                })
                .collect(),
            topics: self
                .subscribed_topics
                .values()
                .map(|t| (t.id, t.partitions))
                .collect(),
        };
        self.target = self.assignor.assign(&spec);
        self.assignment_epoch = self.group_epoch;
    }

    /// Ids of the existing topics `member` subscribes to.
    fn subscribed_ids(&self, member: &ConsumerGroupMember) -> BTreeSet<Uuid> {
        self.member_topic_names(member)
            .filter_map(|name| self.subscribed_topics.get(name).map(|t| t.id))
            .collect()
    }

    /// One reconciliation step for the member, keeping `holders` in step.
    fn reconcile_member(
        &mut self,
        member_id: &str,
        owned: Option<&[OwnedTopic]>,
        now_ms: i64,
    ) -> ConsumerGroupMember {
        let Some(current) = self.members.get(member_id) else {
            return ConsumerGroupMember::new(member_id.to_string());
        };
        if current.is_reconciled_to(self.assignment_epoch) {
            return current.clone();
        }
        let empty = Assignment::new();
        let subscribed = self.subscribed_ids(current);
        let target = Target {
            epoch: self.assignment_epoch,
            partitions: self.target.get(member_id).unwrap_or(&empty),
            subscribed: &subscribed,
        };
        let holders = &self.holders;
        let mut next = reconcile::reconcile(current, &target, owned, |topic, partition| {
            holders
                .get(&(topic, partition))
                .is_some_and(|h| h != member_id)
        });

        // Keep the revocation deadline while the same revocation is pending.
        next.revocation_deadline_ms = match next.state {
            MemberState::UnrevokedPartitions
                if current.state == MemberState::UnrevokedPartitions
                    && current.pending_revocation == next.pending_revocation =>
            {
                current.revocation_deadline_ms
            }
            MemberState::UnrevokedPartitions => {
                Some(now_ms.saturating_add(i64::from(next.rebalance_timeout_ms)))
            }
            _ => None,
        };

        let before: BTreeSet<(Uuid, i32)> = assignment::iter(&current.assigned)
            .chain(assignment::iter(&current.pending_revocation))
            .collect();
        let after: BTreeSet<(Uuid, i32)> = assignment::iter(&next.assigned)
            .chain(assignment::iter(&next.pending_revocation))
            .collect();
        for tp in before.difference(&after) {
            if self.holders.get(tp).is_some_and(|h| h == member_id) {
                self.holders.remove(tp);
            }
        }
        for tp in after.difference(&before) {
            let previous = self.holders.insert(*tp, member_id.to_string());
            debug_assert!(
                previous.is_none(),
                "partition {tp:?} given to {member_id} while held by {previous:?}"
            );
        }
        self.members.insert(member_id.to_string(), next.clone());
        next
    }

    /// `holders` is exactly the union of the members' assigned and pending partitions.
    pub(super) fn holders_are_consistent(&self) -> bool {
        let mut count = 0;
        for m in self.members.values() {
            for tp in assignment::iter(&m.assigned).chain(assignment::iter(&m.pending_revocation)) {
                if self.holders.get(&tp) != Some(&m.member_id) {
                    return false;
                }
                count += 1;
            }
        }
        count == self.holders.len()
    }
}

/// Kafka's member epoch check: the current epoch, or the previous one when the member owns
/// nothing beyond what it is assigned (the response that moved it on was lost).
fn check_member_epoch(
    member: &ConsumerGroupMember,
    received: i32,
    owned: Option<&[OwnedTopic]>,
) -> Result<(), ConsumerGroupError> {
    let fenced = |relation: &str| {
        Err(ConsumerGroupError::FencedMemberEpoch(format!(
            "The consumer group member has a {relation} member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
            member.member_epoch
        )))
    };
    if received > member.member_epoch {
        return fenced("greater");
    }
    if received < member.member_epoch
        && (received != member.previous_member_epoch
            || !reconcile::owned_is_subset(owned, &member.assigned))
    {
        return fenced("smaller");
    }
    Ok(())
}
