//! A group's committed offsets, per topic and partition; the same map holds a producer's
//! pending transactional offsets until its transaction ends.

use super::record::OffsetValue;
use std::collections::{BTreeMap, HashMap};

/// One offset and the `__consumer_offsets` log offset of the record that wrote it. When a
/// transaction commits, its pending offset replaces a committed one only if its record is
/// the newer of the two (Kafka's rule): a plain commit written after the transactional one
/// wins, in memory as after a replay, whatever order the marker arrives in.
#[derive(Debug, Clone)]
struct Entry {
    value: OffsetValue,
    record_offset: i64,
}

#[derive(Debug, Default)]
pub struct CommittedOffsets {
    topics: HashMap<String, BTreeMap<i32, Entry>>,
}

impl CommittedOffsets {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.topics.get(topic)?.get(&partition).map(|e| &e.value)
    }

    /// The log offset of the record behind `topic`/`partition`'s offset.
    pub fn record_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.topics
            .get(topic)?
            .get(&partition)
            .map(|e| e.record_offset)
    }

    /// Sets the offset written by the record at `record_offset`.
    pub fn put(&mut self, topic: &str, partition: i32, value: OffsetValue, record_offset: i64) {
        self.topics.entry(topic.to_string()).or_default().insert(
            partition,
            Entry {
                value,
                record_offset,
            },
        );
    }

    /// Takes a committed transaction's offset unless the current one was written later.
    /// Returns whether it was taken.
    pub fn put_if_newer(
        &mut self,
        topic: &str,
        partition: i32,
        value: OffsetValue,
        record_offset: i64,
    ) -> bool {
        if self
            .record_offset(topic, partition)
            .is_some_and(|current| current >= record_offset)
        {
            return false;
        }
        self.put(topic, partition, value, record_offset);
        true
    }

    /// Moves every offset of `other` (a committed transaction's) in with [`Self::put_if_newer`].
    pub fn merge_committed(&mut self, other: CommittedOffsets) {
        for (topic, parts) in other.topics {
            for (partition, e) in parts {
                self.put_if_newer(&topic, partition, e.value, e.record_offset);
            }
        }
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|p| p.contains_key(&partition))
    }

    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<OffsetValue> {
        let parts = self.topics.get_mut(topic)?;
        let v = parts.remove(&partition);
        if parts.is_empty() {
            self.topics.remove(topic);
        }
        v.map(|e| e.value)
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    pub fn len(&self) -> usize {
        self.topics.values().map(BTreeMap::len).sum()
    }

    /// Every committed offset, sorted by topic then partition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, &OffsetValue)> {
        let mut topics: Vec<_> = self.topics.iter().collect();
        topics.sort_by(|a, b| a.0.cmp(b.0));
        topics
            .into_iter()
            .flat_map(|(t, parts)| parts.iter().map(move |(p, e)| (t.as_str(), *p, &e.value)))
    }

    pub fn partitions_of(&self, topic: &str) -> Vec<i32> {
        self.topics
            .get(topic)
            .map(|p| p.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Offsets past their retention: an explicit expiry time, or `retention_ms` after
    /// `base` (when the group emptied, or the commit itself if later).
    pub fn expired(&self, now_ms: i64, retention_ms: i64, base: i64) -> Vec<(String, i32)> {
        self.iter()
            .filter(|(_, _, v)| match v.expire_timestamp {
                Some(at) => at <= now_ms,
                None => base.max(v.commit_timestamp).saturating_add(retention_ms) <= now_ms,
            })
            .map(|(t, p, _)| (t.to_string(), p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(offset: i64, ts: i64, expire: Option<i64>) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: ts,
            expire_timestamp: expire,
        }
    }

    #[test]
    fn put_get_remove_and_expiry() {
        let mut o = CommittedOffsets::default();
        o.put("b", 1, v(10, 100, None), 0);
        o.put("a", 0, v(5, 100, Some(150)), 1);
        o.put("a", 1, v(6, 300, None), 2);
        assert_eq!(o.len(), 3);
        let order: Vec<_> = o.iter().map(|(t, p, _)| (t.to_string(), p)).collect();
        assert_eq!(
            order,
            vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 1)]
        );
        // Base 200, retention 50: b/1 (commit 100 → base 200) expires at 250; a/1 (commit
        // 300) at 350; a/0 at its explicit 150.
        assert_eq!(o.expired(149, 50, 200), vec![]);
        assert_eq!(o.expired(150, 50, 200), vec![("a".into(), 0)]);
        assert_eq!(
            o.expired(250, 50, 200),
            vec![("a".into(), 0), ("b".into(), 1)]
        );
        assert_eq!(o.remove("b", 1).map(|x| x.offset), Some(10));
        assert!(o.get("b", 1).is_none());
        assert_eq!(o.partitions_of("a"), vec![0, 1]);
    }

    #[test]
    fn a_committed_transaction_never_overrides_a_later_record() {
        let mut o = CommittedOffsets::default();
        o.put("t", 0, v(50, 1, None), 20);
        let mut txn = CommittedOffsets::default();
        txn.put("t", 0, v(40, 1, None), 10);
        txn.put("t", 1, v(7, 1, None), 11);
        o.merge_committed(txn);
        assert_eq!(
            o.get("t", 0).map(|v| v.offset),
            Some(50),
            "record 20 is newer"
        );
        assert_eq!(o.get("t", 1).map(|v| v.offset), Some(7));
        assert!(o.put_if_newer("t", 0, v(60, 1, None), 21));
        assert!(!o.put_if_newer("t", 0, v(61, 1, None), 21));
        assert_eq!(o.record_offset("t", 0), Some(21));
        assert!(o.contains("t", 1) && !o.contains("t", 2));
    }
}
