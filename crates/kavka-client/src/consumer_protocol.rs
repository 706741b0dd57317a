//! The "consumer" embedded protocol of classic groups: the subscription a member sends in
//! JoinGroup, the assignment the leader hands out in SyncGroup (each an i16 version
//! followed by the message at that version), and the range assignor.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

use crate::error::ClientError;
use crate::Result;

/// The protocol type of consumer groups.
pub const PROTOCOL_TYPE: &str = "consumer";
/// The name of the range assignor, as every Kafka client spells it.
pub const RANGE_ASSIGNOR: &str = "range";
/// Upper bound on partitions taken from one decoded assignment, so a hostile blob cannot
/// make us allocate beyond what a real cluster could assign.
const MAX_ASSIGNED_PARTITIONS: usize = 1 << 20;

/// Topic -> sorted partitions.
pub type Assignment = BTreeMap<String, Vec<i32>>;

/// `[i16 version][message at that version]`. Newer versions than the codec knows are
/// read at the newest it knows: the format only ever appends fields.
fn decode_versioned<M: Decodable + Message>(bytes: &[u8]) -> Result<M> {
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.remaining() < 2 {
        return Err(ClientError::InvalidArgument(
            "embedded consumer protocol message is shorter than its version".into(),
        ));
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(ClientError::InvalidArgument(format!(
            "embedded consumer protocol version {version} is negative"
        )));
    }
    M::decode(&mut buf, version.min(M::VERSIONS.max)).map_err(|e| {
        ClientError::InvalidArgument(format!("malformed consumer protocol message: {e:#}"))
    })
}

fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message
        .encode(&mut buf, version)
        .map_err(|e| ClientError::InvalidArgument(format!("cannot encode: {e:#}")))?;
    Ok(buf.freeze())
}

/// A member's assignment from its SyncGroup / DescribeGroups bytes. Empty bytes (a member
/// that has not been assigned yet) are an empty assignment.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment> {
    if bytes.is_empty() {
        return Ok(Assignment::new());
    }
    let a: ConsumerProtocolAssignment = decode_versioned(bytes)?;
    let mut out = Assignment::new();
    let mut total = 0usize;
    for t in a.assigned_partitions {
        total = total.saturating_add(t.partitions.len());
        if total > MAX_ASSIGNED_PARTITIONS {
            return Err(ClientError::InvalidArgument(
                "assignment lists too many partitions".into(),
            ));
        }
        out.entry(t.topic.0.to_string())
            .or_default()
            .extend(t.partitions);
    }
    for parts in out.values_mut() {
        parts.sort_unstable();
        parts.dedup();
    }
    Ok(out)
}

/// SyncGroup bytes of `assignment` (version 0: every client reads it).
pub fn encode_assignment(assignment: &Assignment) -> Result<Bytes> {
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(
        assignment
            .iter()
            .map(|(topic, parts)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(parts.clone())
            })
            .collect(),
    );
    encode_versioned(&message, 0)
}

/// JoinGroup metadata subscribing to `topics` (version 0: topics only, which is all the
/// range assignor needs).
pub fn encode_subscription(topics: &[String]) -> Result<Bytes> {
    let message = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    encode_versioned(&message, 0)
}

/// The topics a member subscribed to, from its JoinGroup metadata.
pub fn decode_subscription(bytes: &[u8]) -> Result<Vec<String>> {
    let s: ConsumerProtocolSubscription = decode_versioned(bytes)?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

/// A member as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<String>,
}

impl Subscriber {
    /// Kafka's `MemberInfo` order: static members first by instance id (stable across
    /// their restarts), then dynamic members by member id.
    fn order_key(&self) -> (bool, &str, &str) {
        match &self.group_instance_id {
            Some(i) => (false, i.as_str(), self.member_id.as_str()),
            None => (true, "", self.member_id.as_str()),
        }
    }
}

/// Kafka's RangeAssignor: per topic, the members subscribed to it (in Kafka's member
/// order) each get a contiguous range of partitions; the first `partitions % members` get
/// one extra. `partition_counts` has the partition count of every topic that exists
/// (topics missing from it are skipped). Every member gets an entry, possibly empty.
pub fn range_assign(
    members: &[Subscriber],
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut ordered: Vec<&Subscriber> = members.iter().collect();
    ordered.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.clone(), Assignment::new()))
        .collect();
    for (topic, count) in partition_counts {
        let subscribers: Vec<&String> = ordered
            .iter()
            .filter(|m| m.topics.contains(topic))
            .map(|m| &m.member_id)
            .collect();
        if subscribers.is_empty() || *count <= 0 {
            continue;
        }
        let n = subscribers.len() as i64;
        let per_member = i64::from(*count) / n;
        let extra = i64::from(*count) % n;
        for (i, member) in subscribers.iter().enumerate() {
            let i = i as i64;
            let start = per_member * i + i.min(extra);
            let len = per_member + i64::from(i < extra);
            if len == 0 {
                continue;
            }
            let parts: Vec<i32> = (start..start + len)
                .filter_map(|p| i32::try_from(p).ok())
                .collect();
            if let Some(a) = out.get_mut(*member) {
                a.insert(topic.clone(), parts);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(spec: &[(&str, &[&str])]) -> Vec<Subscriber> {
        spec.iter()
            .map(|(m, ts)| Subscriber {
                member_id: m.to_string(),
                group_instance_id: None,
                topics: ts.iter().map(|t| t.to_string()).collect(),
            })
            .collect()
    }

    fn counts(spec: &[(&str, i32)]) -> BTreeMap<String, i32> {
        spec.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn range_assigns_like_kafka() {
        // Kafka's javadoc example: two consumers, two topics of three partitions.
        let a = range_assign(
            &members(&[("c0", &["t0", "t1"]), ("c1", &["t0", "t1"])]),
            &counts(&[("t0", 3), ("t1", 3)]),
        );
        assert_eq!(a["c0"]["t0"], [0, 1]);
        assert_eq!(a["c0"]["t1"], [0, 1]);
        assert_eq!(a["c1"]["t0"], [2]);
        assert_eq!(a["c1"]["t1"], [2]);

        // More members than partitions: the last ones get nothing, but an entry.
        let a = range_assign(
            &members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]),
            &counts(&[("t", 2)]),
        );
        assert_eq!(a["a"]["t"], [0]);
        assert_eq!(a["b"]["t"], [1]);
        assert!(a["c"].is_empty());

        // Only subscribers of a topic share it; unknown topics are skipped.
        let a = range_assign(
            &members(&[("a", &["x", "gone"]), ("b", &["y"])]),
            &counts(&[("x", 6), ("y", 1)]),
        );
        assert_eq!(a["a"]["x"], [0, 1, 2, 3, 4, 5]);
        assert_eq!(a["b"]["y"], [0]);
        assert!(!a["a"].contains_key("gone"));
    }

    #[test]
    fn static_members_come_first_by_instance_id() {
        let mut m = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        m[1].group_instance_id = Some("z".into());
        m[2].group_instance_id = Some("y".into());
        let a = range_assign(&m, &counts(&[("t", 3)]));
        assert_eq!(a["c"]["t"], [0], "instance y");
        assert_eq!(a["b"]["t"], [1], "instance z");
        assert_eq!(a["a"]["t"], [2], "dynamic members last");
    }

    #[test]
    fn every_partition_exactly_once() {
        for m in 1..8 {
            for n in 0..20 {
                let spec: Vec<Subscriber> = (0..m)
                    .map(|i| Subscriber {
                        member_id: format!("m{i}"),
                        group_instance_id: (i % 2 == 0).then(|| format!("i{i}")),
                        topics: vec!["t".to_string()],
                    })
                    .collect();
                let a = range_assign(&spec, &counts(&[("t", n)]));
                let mut all: Vec<i32> = a
                    .values()
                    .flat_map(|x| x.get("t").cloned().unwrap_or_default())
                    .collect();
                all.sort_unstable();
                assert_eq!(
                    all,
                    (0..n).collect::<Vec<_>>(),
                    "{m} members, {n} partitions"
                );
            }
        }
    }

    #[test]
    fn embedded_messages_round_trip() {
        let mut a = Assignment::new();
        a.insert("t".into(), vec![0, 2]);
        a.insert("u".into(), vec![1]);
        let bytes = encode_assignment(&a).unwrap();
        assert_eq!(&bytes[..2], &[0, 0], "version 0 first");
        assert_eq!(decode_assignment(&bytes).unwrap(), a);
        assert!(decode_assignment(&[]).unwrap().is_empty());

        let topics = vec!["t".to_string(), "u".to_string()];
        let bytes = encode_subscription(&topics).unwrap();
        assert_eq!(decode_subscription(&bytes).unwrap(), topics);
    }

    #[test]
    fn newer_and_hostile_versions() {
        // A v3 assignment (what Java sends) read back; a future v9 is read as v3.
        let message = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            AssignedTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![3, 1]),
        ]);
        let mut bytes = encode_versioned(&message, 3).unwrap().to_vec();
        assert_eq!(decode_assignment(&bytes).unwrap()["t"], [1, 3]);
        bytes[1] = 9;
        assert_eq!(decode_assignment(&bytes).unwrap()["t"], [1, 3]);
        // Truncated, negative version, or a huge array length: errors, no panic.
        assert!(decode_assignment(&[0]).is_err());
        assert!(decode_assignment(&[0xff, 0xff, 0, 0, 0, 0]).is_err());
        assert!(decode_assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_subscription(&bytes[..5]).is_err());
    }
}
