//! A group's committed offsets, per topic and partition.

use super::record::OffsetValue;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct CommittedOffsets {
    topics: HashMap<String, BTreeMap<i32, OffsetValue>>,
}

impl CommittedOffsets {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.topics.get(topic)?.get(&partition)
    }

    pub fn put(&mut self, topic: &str, partition: i32, value: OffsetValue) {
        self.topics
            .entry(topic.to_string())
            .or_default()
            .insert(partition, value);
    }

    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<OffsetValue> {
        let parts = self.topics.get_mut(topic)?;
        let v = parts.remove(&partition);
        if parts.is_empty() {
            self.topics.remove(topic);
        }
        v
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
            .flat_map(|(t, parts)| parts.iter().map(move |(p, v)| (t.as_str(), *p, v)))
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
        o.put("b", 1, v(10, 100, None));
        o.put("a", 0, v(5, 100, Some(150)));
        o.put("a", 1, v(6, 300, None));
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
}
