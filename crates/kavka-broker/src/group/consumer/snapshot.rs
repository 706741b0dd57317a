//! A whole KIP-848 consumer group as one binary value, so the coordinator can write it to
//! `__consumer_offsets` when the group changes and rebuild the group at start: members keep
//! their ids, epochs and partitions across a broker restart, and nobody rebalances.
//!
//! Layout (big-endian): `i16 version (0) | u32 crc32c of the body | body`. The body holds the
//! epochs, the assignor, the subscribed topics' metadata and the regexes' matches as of the
//! last look (so the first heartbeat after a load sees no change unless the metadata really
//! moved on), the members, the static members and the target assignment. Strings and
//! collections are prefixed with a u32 length; topic ids are 16 raw bytes. Deadlines are not
//! stored: they restart at load.
//!
//! The log may be corrupt: every read is bounded, every count is checked against the bytes
//! left before anything is allocated, and every invariant of `ConsumerGroup` is checked again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use super::assignment::{self, Assignment};
use super::assignor::ServerAssignor;
use super::group::{
    ConsumerGroup, ConsumerGroupConfig, ResolvedRegex, LEAVE_GROUP_STATIC_MEMBER_EPOCH, MAX_ID_LEN,
    MAX_TOPIC_NAME_LEN,
};
use super::member::{ConsumerGroupMember, MemberState};
use super::topic_regex::TopicRegex;
use super::topics::TopicInfo;

/// The layout `to_snapshot` writes.
pub const SNAPSHOT_VERSION: i16 = 0;
/// Version and checksum.
const HEADER_LEN: usize = 6;
/// The fewest bytes a member takes: the lengths of its member id, client id and host; the
/// presence flags of instance id, rack id, regex and assignor; its state; its rebalance
/// timeout, two epochs and the counts of its topic names and of its two assignments.
const MIN_MEMBER_LEN: usize = 3 * 4 + 4 + 1 + 3 * 4 + 3 * 4;

/// Why a snapshot could not be turned back into a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("consumer group snapshot truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown consumer group snapshot version {0}")]
    UnknownVersion(i16),
    #[error("consumer group snapshot checksum mismatch")]
    Checksum,
    /// A field does not decode to a legal value.
    #[error("invalid {0} in consumer group snapshot")]
    Invalid(&'static str),
    /// The fields decode but break an invariant of the group.
    #[error("inconsistent consumer group snapshot: {0}")]
    Inconsistent(String),
    #[error("{0} bytes left over after the consumer group snapshot")]
    TrailingBytes(usize),
}

impl ConsumerGroup {
    /// The whole group, in the layout described in the module documentation.
    pub fn to_snapshot(&self) -> Bytes {
        let mut w = Writer(BytesMut::new());
        w.i32(self.group_epoch);
        w.i32(self.assignment_epoch);
        w.string(self.assignor.name());

        w.len(self.subscribed_topics.len());
        for (name, info) in &self.subscribed_topics {
            w.string(name);
            w.uuid(info.id);
            w.i32(info.partitions);
        }
        w.len(self.regexes.len());
        for (pattern, resolved) in &self.regexes {
            w.string(pattern);
            w.len(resolved.topics.len());
            for name in &resolved.topics {
                w.string(name);
            }
        }
        w.len(self.members.len());
        for member in self.members.values() {
            w.member(member);
        }
        w.len(self.static_members.len());
        for (instance_id, member_id) in &self.static_members {
            w.string(instance_id);
            w.string(member_id);
        }
        w.len(self.target.len());
        for (member_id, target) in &self.target {
            w.string(member_id);
            w.assignment(target);
        }

        let body = w.0.freeze();
        let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
        out.put_i16(SNAPSHOT_VERSION);
        out.put_u32(crc32c(&body));
        out.put_slice(&body);
        out.freeze()
    }

    /// Rebuilds a group from `to_snapshot` output. Session deadlines restart at
    /// `now_ms` + the session timeout and revocation deadlines at `now_ms` + the member's
    /// rebalance timeout; the metadata is looked at again on the next heartbeat (or
    /// `on_metadata_change`), which moves the group epoch on only if it changed meanwhile.
    pub fn from_snapshot(
        group_id: String,
        config: ConsumerGroupConfig,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<ConsumerGroup, SnapshotError> {
        let mut r = Reader(bytes);
        let version = r.i16("version")?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion(version));
        }
        let crc = r.u32("checksum")?;
        if crc32c(r.0) != crc {
            return Err(SnapshotError::Checksum);
        }
        decode_body(group_id, config, r.0, now_ms)
    }
}

/// The body after version and checksum: decoded, then checked as a whole.
fn decode_body(
    group_id: String,
    config: ConsumerGroupConfig,
    body: &[u8],
    now_ms: i64,
) -> Result<ConsumerGroup, SnapshotError> {
    let mut r = Reader(body);
    let group_epoch = r.i32("group epoch")?;
    let assignment_epoch = r.i32("assignment epoch")?;
    let assignor = r.assignor("group assignor")?;

    let mut subscribed_topics = BTreeMap::new();
    // Name, id, partition count.
    for _ in 0..r.count(4 + 16 + 4, "subscribed topics")? {
        let name = r.topic_name("subscribed topic name")?;
        let id = r.uuid("subscribed topic id")?;
        let partitions = r.i32("subscribed topic partitions")?;
        if partitions < 0 {
            return Err(SnapshotError::Invalid("subscribed topic partitions"));
        }
        let info = TopicInfo {
            name: name.clone(),
            id,
            partitions,
        };
        if subscribed_topics.insert(name, info).is_some() {
            return Err(SnapshotError::Invalid("duplicate subscribed topic"));
        }
    }

    let mut regexes = BTreeMap::new();
    for _ in 0..r.count(4 + 4, "regexes")? {
        let pattern = r.string("regex")?;
        let regex =
            TopicRegex::new(&pattern).map_err(|_| SnapshotError::Invalid("regular expression"))?;
        let mut topics = BTreeSet::new();
        for _ in 0..r.count(4, "regex topics")? {
            if !topics.insert(r.topic_name("regex topic")?) {
                return Err(SnapshotError::Invalid("duplicate regex topic"));
            }
        }
        if regexes
            .insert(pattern, ResolvedRegex { regex, topics })
            .is_some()
        {
            return Err(SnapshotError::Invalid("duplicate regex"));
        }
    }

    let session_deadline_ms = now_ms.saturating_add(i64::from(config.session_timeout_ms));
    let mut members = BTreeMap::new();
    for _ in 0..r.count(MIN_MEMBER_LEN, "members")? {
        let mut member = r.member()?;
        member.session_deadline_ms = session_deadline_ms;
        member.revocation_deadline_ms = (member.state == MemberState::UnrevokedPartitions)
            .then(|| now_ms.saturating_add(i64::from(member.rebalance_timeout_ms)));
        let id = member.member_id.clone();
        if members.insert(id, member).is_some() {
            return Err(SnapshotError::Invalid("duplicate member id"));
        }
    }

    let mut static_members = BTreeMap::new();
    for _ in 0..r.count(4 + 4, "static members")? {
        let instance_id = r.id("static member instance id")?;
        let member_id = r.id("static member id")?;
        if static_members.insert(instance_id, member_id).is_some() {
            return Err(SnapshotError::Invalid("duplicate static member"));
        }
    }

    let mut target = BTreeMap::new();
    for _ in 0..r.count(4 + 4, "target assignment")? {
        let member_id = r.id("target member id")?;
        let partitions = r.assignment("target assignment")?;
        if target.insert(member_id, partitions).is_some() {
            return Err(SnapshotError::Invalid("duplicate target member"));
        }
    }
    if !r.0.is_empty() {
        return Err(SnapshotError::TrailingBytes(r.0.len()));
    }

    let mut group = ConsumerGroup::new(group_id, config);
    group.group_epoch = group_epoch;
    group.assignment_epoch = assignment_epoch;
    group.assignor = assignor;
    group.subscribed_topics = subscribed_topics;
    group.regexes = regexes;
    group.members = members;
    group.static_members = static_members;
    group.target = target;
    group.holders = holders(&group.members)?;
    check(&group)?;
    debug_assert!(group.holders_are_consistent());
    Ok(group)
}

/// Who holds each partition, refusing a partition held twice.
fn holders(
    members: &BTreeMap<String, ConsumerGroupMember>,
) -> Result<HashMap<(Uuid, i32), String>, SnapshotError> {
    let mut holders = HashMap::new();
    for m in members.values() {
        for tp in assignment::iter(&m.assigned).chain(assignment::iter(&m.pending_revocation)) {
            if let Some(other) = holders.insert(tp, m.member_id.clone()) {
                return Err(SnapshotError::Inconsistent(format!(
                    "partition {}-{} held by both {other} and {}",
                    tp.0, tp.1, m.member_id
                )));
            }
        }
    }
    Ok(holders)
}

/// The invariants `ConsumerGroup` keeps between calls.
fn check(g: &ConsumerGroup) -> Result<(), SnapshotError> {
    let inconsistent = |why: String| Err(SnapshotError::Inconsistent(why));
    if g.group_epoch < 0 || g.assignment_epoch != g.group_epoch {
        return inconsistent(format!(
            "assignment epoch {} at group epoch {}",
            g.assignment_epoch, g.group_epoch
        ));
    }
    for m in g.members.values() {
        let epoch_ok =
            |e: i32| e == LEAVE_GROUP_STATIC_MEMBER_EPOCH || (0..=g.group_epoch).contains(&e);
        if !epoch_ok(m.member_epoch) || !epoch_ok(m.previous_member_epoch) {
            return inconsistent(format!(
                "member {} at epochs {}/{} in group epoch {}",
                m.member_id, m.member_epoch, m.previous_member_epoch, g.group_epoch
            ));
        }
        if (m.state == MemberState::UnrevokedPartitions) == m.pending_revocation.is_empty() {
            return inconsistent(format!(
                "member {} is {} with {} topics pending revocation",
                m.member_id,
                m.state.name(),
                m.pending_revocation.len()
            ));
        }
        if let Some(instance_id) = &m.instance_id {
            if g.static_members.get(instance_id) != Some(&m.member_id) {
                return inconsistent(format!(
                    "static member {} not registered under instance id {instance_id}",
                    m.member_id
                ));
            }
        }
    }
    for (instance_id, member_id) in &g.static_members {
        let registered = g
            .members
            .get(member_id)
            .is_some_and(|m| m.instance_id.as_ref() == Some(instance_id));
        if !registered {
            return inconsistent(format!(
                "instance id {instance_id} points at {member_id}, which does not hold it"
            ));
        }
    }
    let mut targeted: HashMap<(Uuid, i32), &str> = HashMap::new();
    for (member_id, partitions) in &g.target {
        if !g.members.contains_key(member_id) {
            return inconsistent(format!("target assignment for unknown member {member_id}"));
        }
        for tp in assignment::iter(partitions) {
            if let Some(other) = targeted.insert(tp, member_id) {
                return inconsistent(format!(
                    "partition {}-{} targeted at both {other} and {member_id}",
                    tp.0, tp.1
                ));
            }
        }
    }
    let used: BTreeSet<&String> = g
        .members
        .values()
        .filter_map(|m| m.subscribed_topic_regex.as_ref())
        .collect();
    if !g.regexes.keys().eq(used.iter().copied()) {
        return inconsistent("regexes differ from the members' subscriptions".to_string());
    }
    Ok(())
}

// ---- encoding ---------------------------------------------------------------------------

/// Big-endian writer for the snapshot body.
struct Writer(BytesMut);

impl Writer {
    fn i32(&mut self, v: i32) {
        self.0.put_i32(v);
    }

    /// A length or count. No collection of a group comes near 4 GiB; a longer one would be
    /// written short and refused at load rather than wrap around.
    fn len(&mut self, n: usize) {
        self.0.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn string(&mut self, s: &str) {
        self.len(s.len());
        self.0.put_slice(s.as_bytes());
    }

    fn optional_string(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.0.put_u8(1);
                self.string(s);
            }
            None => self.0.put_u8(0),
        }
    }

    fn uuid(&mut self, id: Uuid) {
        self.0.put_slice(id.as_bytes());
    }

    fn assignment(&mut self, a: &Assignment) {
        self.len(a.len());
        for (topic, partitions) in a {
            self.uuid(*topic);
            self.len(partitions.len());
            for p in partitions {
                self.i32(*p);
            }
        }
    }

    fn member(&mut self, m: &ConsumerGroupMember) {
        self.string(&m.member_id);
        self.optional_string(m.instance_id.as_deref());
        self.optional_string(m.rack_id.as_deref());
        self.string(&m.client_id);
        self.string(&m.client_host);
        self.i32(m.rebalance_timeout_ms);
        self.len(m.subscribed_topic_names.len());
        for name in &m.subscribed_topic_names {
            self.string(name);
        }
        self.optional_string(m.subscribed_topic_regex.as_deref());
        self.optional_string(m.server_assignor.map(ServerAssignor::name));
        self.0.put_u8(match m.state {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        });
        self.i32(m.member_epoch);
        self.i32(m.previous_member_epoch);
        self.assignment(&m.assigned);
        self.assignment(&m.pending_revocation);
    }
}

// ---- decoding ---------------------------------------------------------------------------

/// Bounds-checked big-endian reader over the snapshot.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SnapshotError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn uuid(&mut self, what: &'static str) -> Result<Uuid, SnapshotError> {
        Ok(Uuid::from_bytes(self.array(what)?))
    }

    /// A count of elements each at least `min_size` bytes long: more than the bytes left can
    /// hold is corruption, caught before anything is allocated or looped over.
    fn count(&mut self, min_size: usize, what: &'static str) -> Result<usize, SnapshotError> {
        let n = usize::try_from(self.u32(what)?).map_err(|_| SnapshotError::Truncated(what))?;
        if n.saturating_mul(min_size.max(1)) > self.0.len() {
            return Err(SnapshotError::Truncated(what));
        }
        Ok(n)
    }

    fn string(&mut self, what: &'static str) -> Result<String, SnapshotError> {
        let len = self.count(1, what)?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| SnapshotError::Invalid(what))
    }

    fn optional_string(&mut self, what: &'static str) -> Result<Option<String>, SnapshotError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.string(what).map(Some),
            _ => Err(SnapshotError::Invalid(what)),
        }
    }

    /// A member, instance or rack id: non-empty and at most `MAX_ID_LEN` bytes, as the
    /// heartbeat accepts them.
    fn id(&mut self, what: &'static str) -> Result<String, SnapshotError> {
        let id = self.string(what)?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(SnapshotError::Invalid(what));
        }
        Ok(id)
    }

    fn optional_id(&mut self, what: &'static str) -> Result<Option<String>, SnapshotError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.id(what).map(Some),
            _ => Err(SnapshotError::Invalid(what)),
        }
    }

    fn topic_name(&mut self, what: &'static str) -> Result<String, SnapshotError> {
        let name = self.string(what)?;
        if name.is_empty() || name.len() > MAX_TOPIC_NAME_LEN {
            return Err(SnapshotError::Invalid(what));
        }
        Ok(name)
    }

    fn assignor(&mut self, what: &'static str) -> Result<ServerAssignor, SnapshotError> {
        let name = self.string(what)?;
        ServerAssignor::from_name(&name).ok_or(SnapshotError::Invalid(what))
    }

    /// Partitions by topic: no topic twice, no empty topic, no partition twice or negative.
    fn assignment(&mut self, what: &'static str) -> Result<Assignment, SnapshotError> {
        let mut a = Assignment::new();
        // Topic id and partition count.
        for _ in 0..self.count(16 + 4, what)? {
            let topic = self.uuid(what)?;
            let mut partitions = BTreeSet::new();
            let n = self.count(4, what)?;
            if n == 0 {
                return Err(SnapshotError::Invalid(what));
            }
            for _ in 0..n {
                let p = self.i32(what)?;
                if p < 0 || !partitions.insert(p) {
                    return Err(SnapshotError::Invalid(what));
                }
            }
            if a.insert(topic, partitions).is_some() {
                return Err(SnapshotError::Invalid(what));
            }
        }
        Ok(a)
    }

    fn member(&mut self) -> Result<ConsumerGroupMember, SnapshotError> {
        let mut m = ConsumerGroupMember::new(self.id("member id")?);
        m.instance_id = self.optional_id("instance id")?;
        m.rack_id = self.optional_id("rack id")?;
        m.client_id = self.string("client id")?;
        m.client_host = self.string("client host")?;
        m.rebalance_timeout_ms = self.i32("rebalance timeout")?;
        if m.rebalance_timeout_ms < 0 {
            return Err(SnapshotError::Invalid("rebalance timeout"));
        }
        for _ in 0..self.count(4, "subscribed topic names")? {
            if !m
                .subscribed_topic_names
                .insert(self.topic_name("subscribed topic name")?)
            {
                return Err(SnapshotError::Invalid("duplicate subscribed topic name"));
            }
        }
        m.subscribed_topic_regex = self.optional_string("member regex")?;
        if m.subscribed_topic_regex.as_deref() == Some("") {
            return Err(SnapshotError::Invalid("member regex"));
        }
        m.server_assignor = match self.u8("member assignor")? {
            0 => None,
            1 => Some(self.assignor("member assignor")?),
            _ => return Err(SnapshotError::Invalid("member assignor")),
        };
        m.state = match self.u8("member state")? {
            0 => MemberState::Stable,
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => return Err(SnapshotError::Invalid("member state")),
        };
        m.member_epoch = self.i32("member epoch")?;
        m.previous_member_epoch = self.i32("previous member epoch")?;
        m.assigned = self.assignment("assigned partitions")?;
        m.pending_revocation = self.assignment("partitions pending revocation")?;
        Ok(m)
    }
}

// ---- checksum -----------------------------------------------------------------------------

/// CRC-32C (Castagnoli), as Kafka's record batches use; table-driven, one byte at a time
/// (a snapshot is written once per group change, so speed hardly matters).
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
pub(super) fn decode_unchecked(
    group_id: String,
    config: ConsumerGroupConfig,
    body: &[u8],
    now_ms: i64,
) -> Result<ConsumerGroup, SnapshotError> {
    decode_body(group_id, config, body, now_ms)
}

#[cfg(test)]
pub(super) fn checksum(data: &[u8]) -> u32 {
    crc32c(data)
}
