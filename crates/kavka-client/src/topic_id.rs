//! Requests that name a topic by name up to v12 and by topic id from v13 (Fetch, Produce):
//! choosing the version, grouping partitions per topic, and matching the answer back.

use std::collections::HashMap;

use indexmap::IndexMap;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

/// The highest request version usable with `topic_ids`: v13+ name topics by id only, so a
/// topic without a known id (nil) keeps the request at v12.
pub fn version_cap(topic_ids: &HashMap<String, Uuid>) -> Option<i16> {
    topic_ids.values().any(Uuid::is_nil).then_some(12)
}

/// Groups per-partition entries by topic, in first-seen order, and builds each topic's entry
/// with `topic(name, id, partitions)`; the id is nil where `topic_ids` has none.
pub fn group_by_topic<'a, P, T>(
    parts: impl IntoIterator<Item = (&'a str, P)>,
    topic_ids: &HashMap<String, Uuid>,
    topic: impl Fn(TopicName, Uuid, Vec<P>) -> T,
) -> Vec<T> {
    let mut topics: IndexMap<&str, Vec<P>> = IndexMap::new();
    for (t, p) in parts {
        topics.entry(t).or_default().push(p);
    }
    topics
        .into_iter()
        .map(|(t, partitions)| {
            let id = topic_ids.get(t).copied().unwrap_or_default();
            topic(
                TopicName(StrBytes::from_string(t.to_string())),
                id,
                partitions,
            )
        })
        .collect()
}

/// Whether a response's topic entry (`name`, `id`) answers for `topic`: by name before v13,
/// by id from v13 (where the name is empty). A nil id matches nothing.
pub fn answers_for(name: &TopicName, id: Uuid, topic: &str, topic_id: Uuid) -> bool {
    (!name.0.is_empty() && name.0.as_str() == topic) || (!topic_id.is_nil() && id == topic_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_at_v12_without_every_id() {
        let mut ids: HashMap<String, Uuid> = [("a".to_string(), Uuid::from_u128(1))].into();
        assert_eq!(version_cap(&ids), None);
        ids.insert("b".into(), Uuid::nil());
        assert_eq!(version_cap(&ids), Some(12));
    }

    #[test]
    fn groups_in_first_seen_order() {
        let ids: HashMap<String, Uuid> = [("b".to_string(), Uuid::from_u128(2))].into();
        let grouped = group_by_topic([("b", 0), ("a", 1), ("b", 2)], &ids, |n, id, ps| {
            (n.0.to_string(), id, ps)
        });
        assert_eq!(
            grouped,
            [
                ("b".to_string(), Uuid::from_u128(2), vec![0, 2]),
                ("a".to_string(), Uuid::nil(), vec![1]),
            ]
        );
    }

    #[test]
    fn matches_by_name_or_id_never_nil() {
        let named = TopicName(StrBytes::from_static_str("t"));
        let unnamed = TopicName::default();
        let id = Uuid::from_u128(7);
        assert!(answers_for(&named, Uuid::nil(), "t", id));
        assert!(answers_for(&unnamed, id, "t", id));
        assert!(!answers_for(&unnamed, Uuid::nil(), "t", Uuid::nil()));
        assert!(!answers_for(&named, Uuid::nil(), "u", id));
    }
}
