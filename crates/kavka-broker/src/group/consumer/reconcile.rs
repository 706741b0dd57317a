//! Member-side reconciliation (Kafka's `CurrentAssignmentBuilder`): one step of a member
//! towards its target assignment, taken on each of its heartbeats.
//!
//! A partition moves between members in two halves. First the old owner is told to drop it
//! (its assignment no longer lists it; the member stays at its epoch in UNREVOKED_PARTITIONS)
//! until a heartbeat's owned partitions show it is gone. Only then is it free, and the new
//! owner, which moved to the target epoch already, receives it (UNRELEASED_PARTITIONS until
//! every target partition is free). So a partition is never given to two members at once.

use std::collections::BTreeSet;

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use uuid::Uuid;

use super::assignment::{self, Assignment};
use super::member::{ConsumerGroupMember, MemberState};

/// What a member is reconciled against.
pub struct Target<'a> {
    /// The epoch of the target assignment.
    pub epoch: i32,
    /// The member's partitions in the target assignment.
    pub partitions: &'a Assignment,
    /// Topic ids the member subscribes to: partitions of other topics are revoked even if the
    /// target (computed before a subscription change) still lists them.
    pub subscribed: &'a BTreeSet<Uuid>,
}

/// The member's next state. `owned` is the heartbeat's `topic_partitions` (`None` when the
/// member did not send it, which counts as still owning everything); `held_by_other(t, p)`
/// says whether another member still holds partition `p` of topic `t`.
pub fn reconcile(
    member: &ConsumerGroupMember,
    target: &Target<'_>,
    owned: Option<&[TopicPartitions]>,
    held_by_other: impl Fn(Uuid, i32) -> bool,
) -> ConsumerGroupMember {
    match member.state {
        MemberState::Stable if member.member_epoch == target.epoch => member.clone(),
        MemberState::UnrevokedPartitions if owns_any(owned, &member.pending_revocation) => {
            member.clone()
        }
        _ => next_assignment(member, target, owned, held_by_other),
    }
}

fn next_assignment(
    member: &ConsumerGroupMember,
    target: &Target<'_>,
    owned: Option<&[TopicPartitions]>,
    held_by_other: impl Fn(Uuid, i32) -> bool,
) -> ConsumerGroupMember {
    let empty = BTreeSet::new();
    let mut assigned = Assignment::new();
    let mut revoke = Assignment::new();
    let mut to_assign = Assignment::new();
    let mut unreleased = false;

    let topics: BTreeSet<Uuid> = target
        .partitions
        .keys()
        .chain(member.assigned.keys())
        .copied()
        .collect();
    for topic in topics {
        let wanted = match target.partitions.get(&topic) {
            Some(ps) if target.subscribed.contains(&topic) => ps,
            _ => &empty,
        };
        let current = member.assigned.get(&topic).unwrap_or(&empty);
        let keep: BTreeSet<i32> = current.intersection(wanted).copied().collect();
        let drop: BTreeSet<i32> = current.difference(&keep).copied().collect();
        let mut add = BTreeSet::new();
        for p in wanted.difference(&keep) {
            if held_by_other(topic, *p) {
                unreleased = true;
            } else {
                add.insert(*p);
            }
        }
        for (set, into) in [
            (keep, &mut assigned),
            (drop, &mut revoke),
            (add, &mut to_assign),
        ] {
            if !set.is_empty() {
                into.insert(topic, set);
            }
        }
    }

    let mut next = member.clone();
    if !revoke.is_empty() && owns_any(owned, &revoke) {
        // Revoke first, at the current epoch; nothing new until the member has let go.
        next.state = MemberState::UnrevokedPartitions;
        next.assigned = assigned;
        next.pending_revocation = revoke;
        return next;
    }
    for (topic, partitions) in to_assign {
        assigned.entry(topic).or_default().extend(partitions);
    }
    next.state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    if next.member_epoch != target.epoch {
        next.previous_member_epoch = next.member_epoch;
        next.member_epoch = target.epoch;
    }
    next.assigned = assigned;
    next.pending_revocation = Assignment::new();
    next
}

/// Whether the heartbeat's owned partitions include any of `partitions`; an absent list
/// means "unchanged", so the member may still own them.
pub fn owns_any(owned: Option<&[TopicPartitions]>, partitions: &Assignment) -> bool {
    let Some(owned) = owned else {
        return true;
    };
    owned.iter().any(|tp| {
        tp.partitions
            .iter()
            .any(|p| assignment::contains(partitions, tp.topic_id, *p))
    })
}

/// Whether every owned partition is in `partitions` (`false` for an absent list).
pub fn owned_is_subset(owned: Option<&[TopicPartitions]>, partitions: &Assignment) -> bool {
    owned.is_some_and(|owned| {
        owned.iter().all(|tp| {
            tp.partitions
                .iter()
                .all(|p| assignment::contains(partitions, tp.topic_id, *p))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn a(parts: &[(u8, &[i32])]) -> Assignment {
        parts
            .iter()
            .map(|(topic, ps)| (t(*topic), ps.iter().copied().collect()))
            .collect()
    }

    fn owned(parts: &[(u8, &[i32])]) -> Vec<TopicPartitions> {
        parts
            .iter()
            .map(|(topic, ps)| {
                TopicPartitions::default()
                    .with_topic_id(t(*topic))
                    .with_partitions(ps.to_vec())
            })
            .collect()
    }

    fn member(epoch: i32, state: MemberState, assigned: Assignment) -> ConsumerGroupMember {
        let mut m = ConsumerGroupMember::new("m".into());
        m.member_epoch = epoch;
        m.state = state;
        m.assigned = assigned;
        m
    }

    #[test]
    fn revokes_before_moving_to_the_new_epoch() {
        let m = member(1, MemberState::Stable, a(&[(1, &[0, 1, 2])]));
        let target = a(&[(1, &[0, 3])]);
        let subscribed = BTreeSet::from([t(1)]);
        let tgt = Target {
            epoch: 2,
            partitions: &target,
            subscribed: &subscribed,
        };
        let still_owns = owned(&[(1, &[0, 1, 2])]);

        let next = reconcile(&m, &tgt, Some(&still_owns), |_, _| false);
        assert_eq!(next.state, MemberState::UnrevokedPartitions);
        assert_eq!(next.member_epoch, 1);
        assert_eq!(next.assigned, a(&[(1, &[0])]));
        assert_eq!(next.pending_revocation, a(&[(1, &[1, 2])]));

        // Still holding partition 2: no progress; absent owned list: no progress.
        let partly = owned(&[(1, &[0, 2])]);
        assert_eq!(reconcile(&next, &tgt, Some(&partly), |_, _| false), next);
        assert_eq!(reconcile(&next, &tgt, None, |_, _| false), next);

        // Released: epoch 2, partition 3 added.
        let released = owned(&[(1, &[0])]);
        let done = reconcile(&next, &tgt, Some(&released), |_, _| false);
        assert_eq!(done.state, MemberState::Stable);
        assert_eq!(done.member_epoch, 2);
        assert_eq!(done.previous_member_epoch, 1);
        assert_eq!(done.assigned, a(&[(1, &[0, 3])]));
        assert!(done.pending_revocation.is_empty());
    }

    #[test]
    fn waits_for_partitions_held_by_others() {
        let m = member(0, MemberState::Stable, Assignment::new());
        let target = a(&[(1, &[0, 1])]);
        let subscribed = BTreeSet::from([t(1)]);
        let tgt = Target {
            epoch: 3,
            partitions: &target,
            subscribed: &subscribed,
        };
        let next = reconcile(&m, &tgt, Some(&[]), |_, p| p == 1);
        assert_eq!(next.state, MemberState::UnreleasedPartitions);
        assert_eq!(next.member_epoch, 3);
        assert_eq!(next.assigned, a(&[(1, &[0])]));
        let done = reconcile(&next, &tgt, None, |_, _| false);
        assert_eq!(done.state, MemberState::Stable);
        assert_eq!(done.assigned, a(&[(1, &[0, 1])]));
    }

    #[test]
    fn already_released_partitions_are_dropped_without_waiting() {
        let m = member(1, MemberState::Stable, a(&[(1, &[0, 1])]));
        let target = a(&[(1, &[0])]);
        let subscribed = BTreeSet::from([t(1)]);
        let tgt = Target {
            epoch: 2,
            partitions: &target,
            subscribed: &subscribed,
        };
        let next = reconcile(&m, &tgt, Some(&owned(&[(1, &[0])])), |_, _| false);
        assert_eq!(next.state, MemberState::Stable);
        assert_eq!(next.member_epoch, 2);
        assert_eq!(next.assigned, a(&[(1, &[0])]));
    }

    #[test]
    fn unsubscribed_topics_are_revoked_even_if_targeted() {
        let m = member(1, MemberState::Stable, a(&[(1, &[0]), (2, &[0])]));
        let target = a(&[(1, &[0]), (2, &[0])]);
        let subscribed = BTreeSet::from([t(1)]);
        let tgt = Target {
            epoch: 2,
            partitions: &target,
            subscribed: &subscribed,
        };
        let next = reconcile(&m, &tgt, None, |_, _| false);
        assert_eq!(next.state, MemberState::UnrevokedPartitions);
        assert_eq!(next.pending_revocation, a(&[(2, &[0])]));
    }

    #[test]
    fn subset_and_owns_any() {
        let set = a(&[(1, &[0, 1])]);
        assert!(owned_is_subset(Some(&owned(&[(1, &[1])])), &set));
        assert!(!owned_is_subset(Some(&owned(&[(1, &[2])])), &set));
        assert!(!owned_is_subset(None, &set));
        assert!(owns_any(None, &set));
        assert!(!owns_any(Some(&owned(&[(2, &[0])])), &set));
    }
}
