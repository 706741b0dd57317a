//! The range assignor: for each topic, its subscribers sorted by member id get contiguous
//! ranges of partitions, the first `partitions % subscribers` one partition more. Members with
//! the same subscriptions thus get the same partition numbers of co-partitioned topics.

use std::collections::BTreeMap;

use super::AssignmentSpec;
use crate::group::consumer::assignment::{self, Assignment};

pub(super) fn assign(spec: &AssignmentSpec) -> BTreeMap<String, Assignment> {
    let mut result: BTreeMap<String, Assignment> = spec
        .members
        .keys()
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    for (topic, partitions) in &spec.topics {
        // `spec.members` is a BTreeMap: its keys come sorted by member id.
        let subscribers: Vec<&String> = spec
            .members
            .iter()
            .filter(|(_, m)| m.subscribed.contains(topic))
            .map(|(id, _)| id)
            .collect();
        let count = usize::try_from(*partitions).unwrap_or(0);
        if subscribers.is_empty() || count == 0 {
            continue;
        }
        let share = count / subscribers.len();
        let extra = count % subscribers.len();
        for (index, id) in subscribers.into_iter().enumerate() {
            let start = index * share + index.min(extra);
            let len = share + usize::from(index < extra);
            let Some(entry) = result.get_mut(id) else {
                continue;
            };
            for partition in start..start + len {
                // `partition < count <= i32::MAX`.
                if let Ok(partition) = i32::try_from(partition) {
                    assignment::insert(entry, *topic, partition);
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::test_support::{spec, topic};
    use super::*;

    fn parts(a: &Assignment, t: u8) -> Vec<i32> {
        a.get(&topic(t))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn contiguous_ranges_by_member_id() {
        let r = assign(&spec(
            &[(1, 7), (2, 7)],
            &[("c", &[1, 2]), ("a", &[1, 2]), ("b", &[1, 2])],
        ));
        assert_eq!(parts(&r["a"], 1), vec![0, 1, 2]);
        assert_eq!(parts(&r["b"], 1), vec![3, 4]);
        assert_eq!(parts(&r["c"], 1), vec![5, 6]);
        // Co-partitioning: same layout for the second topic.
        for id in ["a", "b", "c"] {
            assert_eq!(parts(&r[id], 1), parts(&r[id], 2));
        }
    }

    #[test]
    fn only_subscribers_share_a_topic() {
        let r = assign(&spec(
            &[(1, 4), (2, 2)],
            &[("a", &[1]), ("b", &[1, 2]), ("c", &[])],
        ));
        assert_eq!(parts(&r["a"], 1), vec![0, 1]);
        assert_eq!(parts(&r["b"], 1), vec![2, 3]);
        assert_eq!(parts(&r["b"], 2), vec![0, 1]);
        assert!(r["c"].is_empty());
    }

    #[test]
    fn more_members_than_partitions() {
        let r = assign(&spec(&[(1, 2)], &[("a", &[1]), ("b", &[1]), ("c", &[1])]));
        assert_eq!(parts(&r["a"], 1), vec![0]);
        assert_eq!(parts(&r["b"], 1), vec![1]);
        assert!(r["c"].is_empty());
        let all: BTreeSet<_> = r.values().flat_map(assignment::iter).collect();
        assert_eq!(all.len(), 2);
    }
}
