//! Keys and values of the records in `__consumer_offsets`, in Apache Kafka's own layouts
//! (OffsetCommitKey v1, OffsetCommitValue v1/v3, GroupMetadataKey v2, GroupMetadataValue v3),
//! so Kafka's tools can read our topic and the format is one somebody already versioned.
//!
//! The key's leading int16 says what the record is: 0 and 1 are committed offsets, 2 is group
//! metadata. Kafka's own KIP-848 record types (3 and up) are not used: a consumer (KIP-848)
//! group is stored whole, as one kavka snapshot record under key version 1000. A record with
//! a null value is a tombstone: the offset or group was deleted.
//! Everything read back is checked: a corrupt record is an error, never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unknown {what} version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Where a committed offset lives: group, topic, partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when the client did not say.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Set only by OffsetCommit v2-4 with an explicit retention time.
    pub expire_timestamp: Option<i64>,
}

/// One member of a classic group as stored (GroupMetadataValue's MemberMetadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<StoredMember>,
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset(OffsetKey, Option<OffsetValue>),
    Group(String, Option<GroupValue>),
    /// A KIP-848 consumer group's snapshot (`ConsumerGroup::to_snapshot`).
    ConsumerGroup(String, Option<Bytes>),
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;
/// kavka's own: far above Kafka's record types so the two never meet.
const CONSUMER_GROUP_KEY_VERSION: i16 = 1000;

pub fn consumer_group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(CONSUMER_GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
    b.put_i16(OFFSET_KEY_VERSION);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + v.metadata.len());
    match v.expire_timestamp {
        // v1 is the only layout that carries an explicit expiry.
        Some(expire) => {
            b.put_i16(1);
            b.put_i64(v.offset);
            put_str(&mut b, &v.metadata);
            b.put_i64(v.commit_timestamp);
            b.put_i64(expire);
        }
        None => {
            b.put_i16(3);
            b.put_i64(v.offset);
            b.put_i32(v.leader_epoch);
            put_str(&mut b, &v.metadata);
            b.put_i64(v.commit_timestamp);
        }
    }
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

pub fn group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::with_capacity(
        64 + v
            .members
            .iter()
            .map(|m| 64 + m.member_id.len() + m.subscription.len() + m.assignment.len())
            .sum::<usize>(),
    );
    b.put_i16(GROUP_VALUE_VERSION);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_str(&mut b, v.protocol.as_deref());
    put_nullable_str(&mut b, v.leader.as_deref());
    b.put_i64(v.current_state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.group_instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Decodes one record. `Ok(None)` for a key version this coordinator does not own (Kafka's
/// KIP-848 record types, written by a newer broker): skipped, as Kafka skips unknown types.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<GroupRecord>, RecordError> {
    let mut k = Reader(key);
    let version = k.i16("key version")?;
    match version {
        0 | 1 => {
            let key = OffsetKey {
                group: k.string("group")?,
                topic: k.string("topic")?,
                partition: k.i32("partition")?,
            };
            let value = value.map(decode_offset_value).transpose()?;
            Ok(Some(GroupRecord::Offset(key, value)))
        }
        2 => {
            let group = k.string("group")?;
            let value = value.map(decode_group_value).transpose()?;
            Ok(Some(GroupRecord::Group(group, value)))
        }
        CONSUMER_GROUP_KEY_VERSION => {
            let group = k.string("group")?;
            Ok(Some(GroupRecord::ConsumerGroup(
                group,
                value.map(Bytes::copy_from_slice),
            )))
        }
        _ => Ok(None),
    }
}

fn decode_offset_value(bytes: &[u8]) -> Result<OffsetValue, RecordError> {
    let mut r = Reader(bytes);
    let version = r.i16("offset value version")?;
    let offset = r.i64("offset")?;
    let (leader_epoch, metadata, commit_timestamp, expire_timestamp) = match version {
        0 | 2 => {
            let metadata = r.string("metadata")?;
            (-1, metadata, r.i64("commit timestamp")?, None)
        }
        1 => {
            let metadata = r.string("metadata")?;
            let commit = r.i64("commit timestamp")?;
            let expire = r.i64("expire timestamp")?;
            (-1, metadata, commit, (expire >= 0).then_some(expire))
        }
        3 => {
            let epoch = r.i32("leader epoch")?;
            let metadata = r.string("metadata")?;
            (epoch, metadata, r.i64("commit timestamp")?, None)
        }
        v => {
            return Err(RecordError::UnknownVersion {
                what: "offset value",
                version: v,
            })
        }
    };
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        expire_timestamp,
    })
}

fn decode_group_value(bytes: &[u8]) -> Result<GroupValue, RecordError> {
    let mut r = Reader(bytes);
    let version = r.i16("group value version")?;
    if !(0..=3).contains(&version) {
        return Err(RecordError::UnknownVersion {
            what: "group value",
            version,
        });
    }
    let protocol_type = r.string("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string("protocol")?;
    let leader = r.nullable_string("leader")?;
    let current_state_timestamp = if version >= 2 {
        r.i64("state timestamp")?
    } else {
        -1
    };
    let count = r.i32("member count")?;
    if count < 0 {
        return Err(RecordError::Invalid("member count"));
    }
    // Each member takes at least 20 bytes: the count cannot claim more than the bytes left.
    let mut members = Vec::with_capacity((count as usize).min(r.0.len() / 20));
    for _ in 0..count {
        let member_id = r.string("member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_string("group instance id")?
        } else {
            None
        };
        let client_id = r.string("client id")?;
        let client_host = r.string("client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            r.i32("rebalance timeout")?
        } else {
            -1
        };
        let session_timeout_ms = r.i32("session timeout")?;
        let subscription = Bytes::copy_from_slice(r.bytes("subscription")?);
        let assignment = Bytes::copy_from_slice(r.bytes("assignment")?);
        members.push(StoredMember {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

fn put_str(b: &mut BytesMut, s: &str) {
    // Callers bound every string well below i16::MAX (group and topic names, member ids).
    debug_assert!(s.len() <= i16::MAX as usize);
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(s.len() as i16);
    b.put_slice(s);
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

/// A bounds-checked big-endian reader.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, RecordError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, RecordError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4, what)?);
        Ok(i32::from_be_bytes(a))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_be_bytes(a))
    }

    fn nullable_string(&mut self, what: &'static str) -> Result<Option<String>, RecordError> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.take(len as usize, what)?;
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| RecordError::Invalid(what))
    }

    fn string(&mut self, what: &'static str) -> Result<String, RecordError> {
        self.nullable_string(what)?
            .ok_or(RecordError::Invalid(what))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], RecordError> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(&[]);
        }
        self.take(len as usize, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_round_trips_in_both_layouts() {
        let key = offset_key("g", "t", 3);
        for expire in [None, Some(99)] {
            let v = OffsetValue {
                offset: 42,
                leader_epoch: if expire.is_some() { -1 } else { 7 },
                metadata: "m".into(),
                commit_timestamp: 1000,
                expire_timestamp: expire,
            };
            let got = decode(&key, Some(&offset_value(&v))).unwrap();
            assert_eq!(
                got,
                Some(GroupRecord::Offset(
                    OffsetKey {
                        group: "g".into(),
                        topic: "t".into(),
                        partition: 3
                    },
                    Some(v)
                ))
            );
        }
    }

    #[test]
    fn group_round_trips_and_tombstones_decode() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp: 123,
            members: vec![StoredMember {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300000,
                session_timeout_ms: 45000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let key = group_key("grp");
        assert_eq!(
            decode(&key, Some(&group_value(&v))).unwrap(),
            Some(GroupRecord::Group("grp".into(), Some(v)))
        );
        assert_eq!(
            decode(&key, None).unwrap(),
            Some(GroupRecord::Group("grp".into(), None))
        );
        assert_eq!(
            decode(&consumer_group_key("cg"), Some(b"snap")).unwrap(),
            Some(GroupRecord::ConsumerGroup(
                "cg".into(),
                Some(Bytes::from_static(b"snap"))
            ))
        );
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            current_state_timestamp: 0,
            members: vec![],
        };
        let full = group_value(&v);
        for cut in 0..full.len() {
            let _ = decode(&group_key("g"), Some(&full[..cut]));
        }
        let mut huge = BytesMut::from(&full[..]);
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode(&group_key("g"), Some(&huge)).is_err());
        assert!(decode(&[0], None).is_err());
        assert_eq!(decode(&[0, 9], None), Ok(None));
    }
}
