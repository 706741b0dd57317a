//! The uniform assignor: every partition of a subscribed topic goes to one of its subscribers,
//! members keep their previous partitions where balance allows, and members that could take
//! each other's partitions end up with counts that differ by at most one. Handles members with
//! different subscriptions (heterogeneous) by placing the most constrained partitions first.
//!
//! Three steps: (1) each member keeps the partitions of its previous target that are still
//! valid for it; (2) each remaining partition goes to its least loaded subscriber, fewest
//! subscribers first; (3) while some partition's owner has two more partitions than another
//! subscriber of that partition's topic, the partition moves there. Every move lowers the sum
//! of squared counts, so step 3 ends; when it has, two members subscribed to the same topics
//! differ by at most one partition.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{AssignmentSpec, MemberSpec};
use crate::group::consumer::assignment::{self, Assignment};

pub(super) fn assign(spec: &AssignmentSpec) -> BTreeMap<String, Assignment> {
    let members: Vec<(&String, &MemberSpec)> = spec.members.iter().collect();

    // Subscribers (member indexes, ascending) of every topic that has partitions.
    let mut subscribers: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for (index, (_, member)) in members.iter().enumerate() {
        for topic in &member.subscribed {
            if spec.partitions(*topic) > 0 {
                subscribers.entry(*topic).or_default().push(index);
            }
        }
    }

    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut counts = vec![0usize; members.len()];

    // 1. Stickiness: keep what is still subscribed and still exists.
    for (index, (_, member)) in members.iter().enumerate() {
        for (topic, partition) in assignment::iter(&member.current) {
            if member.subscribed.contains(&topic)
                && (0..spec.partitions(topic)).contains(&partition)
                && !owner.contains_key(&(topic, partition))
            {
                owner.insert((topic, partition), index);
                counts[index] += 1;
            }
        }
    }

    // 2. The rest, most constrained first, each to its least loaded subscriber.
    let mut unassigned: Vec<(usize, Uuid, i32)> = Vec::new();
    for (topic, subs) in &subscribers {
        for partition in 0..spec.partitions(*topic) {
            if !owner.contains_key(&(*topic, partition)) {
                unassigned.push((subs.len(), *topic, partition));
            }
        }
    }
    unassigned.sort_unstable();
    for (_, topic, partition) in unassigned {
        if let Some(target) = least_loaded(subscribers.get(&topic), &counts) {
            owner.insert((topic, partition), target);
            counts[target] += 1;
        }
    }

    // 3. Balance. Each pass either moves a partition (lowering the sum of squared counts) or
    // ends the loop; the bound is a backstop, not the expected exit. A partition whose owner
    // has at most one more than the least loaded subscriber anywhere cannot move, which
    // skips the scan of its topic's subscribers for nearly every partition.
    let candidates: Vec<usize> = {
        let mut c: Vec<usize> = subscribers.values().flatten().copied().collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let floor = |counts: &[usize]| candidates.iter().map(|m| counts[*m]).min().unwrap_or(0);
    let mut lowest = floor(&counts);
    for _ in 0..=owner.len() {
        let mut moved = false;
        for ((topic, _), current) in owner.iter_mut() {
            if counts[*current] <= lowest + 1 {
                continue;
            }
            let Some(target) = least_loaded(subscribers.get(topic), &counts) else {
                continue;
            };
            if counts[*current] > counts[target] + 1 {
                counts[*current] -= 1;
                counts[target] += 1;
                *current = target;
                moved = true;
                lowest = floor(&counts);
            }
        }
        if !moved {
            break;
        }
    }

    let mut result: BTreeMap<String, Assignment> = members
        .iter()
        .map(|(id, _)| ((*id).clone(), Assignment::new()))
        .collect();
    for ((topic, partition), index) in owner {
        if let Some(entry) = members.get(index).and_then(|(id, _)| result.get_mut(*id)) {
            assignment::insert(entry, topic, partition);
        }
    }
    result
}

/// The subscriber with the fewest partitions, the first one on ties.
fn least_loaded(subscribers: Option<&Vec<usize>>, counts: &[usize]) -> Option<usize> {
    subscribers?
        .iter()
        .copied()
        .min_by_key(|m| (counts.get(*m).copied().unwrap_or(usize::MAX), *m))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::test_support::{spec, topic, with_current};
    use super::*;
    use crate::group::consumer::assignment::partition_count;

    fn counts(result: &BTreeMap<String, Assignment>) -> BTreeMap<&str, usize> {
        result
            .iter()
            .map(|(id, a)| (id.as_str(), partition_count(a)))
            .collect()
    }

    fn all(result: &BTreeMap<String, Assignment>) -> BTreeSet<(Uuid, i32)> {
        result.values().flat_map(assignment::iter).collect()
    }

    #[test]
    fn homogeneous_is_balanced_and_complete() {
        let s = spec(
            &[(1, 7), (2, 3)],
            &[("a", &[1, 2]), ("b", &[1, 2]), ("c", &[1, 2])],
        );
        let r = assign(&s);
        let c = counts(&r);
        assert_eq!(c.values().sum::<usize>(), 10);
        assert!(
            c.values().max().unwrap() - c.values().min().unwrap() <= 1,
            "{c:?}"
        );
        assert_eq!(all(&r).len(), 10);
    }

    #[test]
    fn a_joining_member_takes_only_its_share() {
        let s = spec(&[(1, 6)], &[("a", &[1]), ("b", &[1])]);
        let first = assign(&s);
        let mut s2 = spec(&[(1, 6)], &[("a", &[1]), ("b", &[1]), ("c", &[1])]);
        s2 = with_current(s2, &first);
        let second = assign(&s2);
        assert_eq!(
            counts(&second),
            BTreeMap::from([("a", 2), ("b", 2), ("c", 2)])
        );
        // a and b each gave up exactly one partition: what they keep is a subset of before.
        for id in ["a", "b"] {
            let before: BTreeSet<_> = assignment::iter(&first[id]).collect();
            let after: BTreeSet<_> = assignment::iter(&second[id]).collect();
            assert!(after.is_subset(&before), "{id}: {before:?} -> {after:?}");
        }
    }

    #[test]
    fn a_leaving_member_only_moves_its_own_partitions() {
        let s = spec(&[(1, 9)], &[("a", &[1]), ("b", &[1]), ("c", &[1])]);
        let first = assign(&s);
        let s2 = with_current(spec(&[(1, 9)], &[("a", &[1]), ("b", &[1])]), &first);
        let second = assign(&s2);
        for id in ["a", "b"] {
            let before: BTreeSet<_> = assignment::iter(&first[id]).collect();
            let after: BTreeSet<_> = assignment::iter(&second[id]).collect();
            assert!(before.is_subset(&after), "{id} lost partitions");
        }
        assert_eq!(all(&second).len(), 9);
        let c = counts(&second);
        assert!(c.values().max().unwrap() - c.values().min().unwrap() <= 1);
    }

    #[test]
    fn heterogeneous_subscriptions() {
        // a: t1 only; b: t1 and t2; c: t2 only. t1 has 4, t2 has 4.
        let s = spec(
            &[(1, 4), (2, 4)],
            &[("a", &[1]), ("b", &[1, 2]), ("c", &[2])],
        );
        let r = assign(&s);
        assert_eq!(all(&r).len(), 8);
        for t in r["a"].keys() {
            assert_eq!(*t, topic(1));
        }
        for t in r["c"].keys() {
            assert_eq!(*t, topic(2));
        }
        let c = counts(&r);
        assert!(
            c.values().max().unwrap() - c.values().min().unwrap() <= 1,
            "{c:?}"
        );
    }

    #[test]
    fn unsubscribed_and_vanished_partitions_are_not_kept() {
        let mut s = spec(&[(1, 2)], &[("a", &[1])]);
        let gone = topic(9);
        s.members.get_mut("a").unwrap().current = Assignment::from([
            (topic(1), BTreeSet::from([0, 1, 5])),
            (gone, BTreeSet::from([0])),
        ]);
        let r = assign(&s);
        assert_eq!(
            r["a"],
            Assignment::from([(topic(1), BTreeSet::from([0, 1]))])
        );
    }

    #[test]
    fn members_without_subscriptions_get_nothing_and_empty_group_is_fine() {
        let r = assign(&spec(&[(1, 3)], &[("a", &[]), ("b", &[1])]));
        assert!(r["a"].is_empty());
        assert_eq!(partition_count(&r["b"]), 3);
        assert!(assign(&spec(&[(1, 3)], &[])).is_empty());
    }

    #[test]
    fn large_group_is_balanced_after_joins() {
        let ids: Vec<String> = (0..300).map(|i| format!("m{i:03}")).collect();
        let mut members: Vec<(&str, &[u8])> = Vec::new();
        let mut previous = BTreeMap::new();
        for id in &ids {
            members.push((id.as_str(), &[1, 2]));
            if !members.len().is_multiple_of(50) {
                continue;
            }
            let s = with_current(spec(&[(1, 500), (2, 101)], &members), &previous);
            let r = assign(&s);
            let c = counts(&r);
            assert_eq!(c.values().sum::<usize>(), 601);
            assert!(c.values().max().unwrap() - c.values().min().unwrap() <= 1);
            previous = r;
        }
    }

    #[test]
    fn deterministic() {
        let s = spec(
            &[(1, 13), (2, 5), (3, 1)],
            &[("x", &[1, 2]), ("y", &[2, 3]), ("z", &[1, 3])],
        );
        assert_eq!(assign(&s), assign(&s));
    }
}
