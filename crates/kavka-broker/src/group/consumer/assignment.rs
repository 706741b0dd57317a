//! Sets of partitions keyed by topic id: a member's assigned partitions, its partitions
//! pending revocation, its target. Ordered maps so every iteration (and thus every assignor
//! decision and every response) is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id. Invariant: no topic maps to an empty set.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Number of partitions in `a`.
#[cfg(test)]
pub fn partition_count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// Whether `a` holds `topic`-`partition`.
pub fn contains(a: &Assignment, topic: Uuid, partition: i32) -> bool {
    a.get(&topic).is_some_and(|ps| ps.contains(&partition))
}

/// Adds one partition.
pub fn insert(a: &mut Assignment, topic: Uuid, partition: i32) {
    a.entry(topic).or_default().insert(partition);
}

/// Every (topic, partition) pair, in order.
pub fn iter(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

/// `a` without empty topics (the invariant above), for values built by hand.
#[cfg(test)]
pub fn normalized(mut a: Assignment) -> Assignment {
    a.retain(|_, ps| !ps.is_empty());
    a
}
