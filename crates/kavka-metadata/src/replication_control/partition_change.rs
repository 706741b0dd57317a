//! One partition's next state (Kafka's PartitionChangeBuilder): given a target ISR and an
//! election rule, who leads, which ISR is stored, and which epochs move.

use crate::image::PartitionImage;

use super::NO_LEADER;

/// How a leader is chosen when the change needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Election {
    /// The first replica when it may lead; otherwise keep a valid current leader, otherwise
    /// any in-sync replica.
    Preferred,
    /// Keep a valid current leader, otherwise the first in-sync replica in replica order;
    /// with `unclean`, a live out-of-sync replica as a last resort (it becomes the ISR alone,
    /// and records only it held are all that survive).
    Any { unclean: bool },
}

/// The result of [`build`] when something changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub next: PartitionImage,
    /// The leader came from outside the ISR.
    pub unclean: bool,
}

/// The next state of `current` with `target_isr` and `election`, or `None` when nothing
/// changes. `acceptable_leader` says which brokers may lead (live, and not the one being
/// fenced). An empty target ISR keeps the current one: the last in-sync replica stays in the
/// ISR even when it is gone, so that it alone can lead again.
///
/// A changed leader bumps the leader epoch; any change bumps the partition epoch.
pub(crate) fn build(
    current: &PartitionImage,
    target_isr: &[i32],
    election: Election,
    acceptable_leader: &dyn Fn(i32) -> bool,
) -> Option<Change> {
    let target_isr: &[i32] = if target_isr.is_empty() {
        &current.isr
    } else {
        target_isr
    };
    let valid = |r: i32| r != NO_LEADER && target_isr.contains(&r) && acceptable_leader(r);
    let (leader, unclean) = elect(current, election, &valid, acceptable_leader);
    let isr = if unclean {
        vec![leader]
    } else {
        target_isr.to_vec()
    };
    if leader == current.leader && isr == current.isr {
        return None;
    }
    let leader_epoch = if leader == current.leader {
        current.leader_epoch
    } else {
        current.leader_epoch.saturating_add(1)
    };
    let next = PartitionImage {
        partition: current.partition,
        replicas: current.replicas.clone(),
        isr,
        leader,
        leader_epoch,
        partition_epoch: current.partition_epoch.saturating_add(1),
    };
    debug_assert_valid_change(current, &next, unclean, acceptable_leader);
    Some(Change { next, unclean })
}

fn elect(
    current: &PartitionImage,
    election: Election,
    valid: &dyn Fn(i32) -> bool,
    acceptable_leader: &dyn Fn(i32) -> bool,
) -> (i32, bool) {
    let replicas = &current.replicas;
    if election == Election::Preferred {
        if let Some(&preferred) = replicas.first() {
            if valid(preferred) {
                return (preferred, false);
            }
        }
    }
    if valid(current.leader) {
        return (current.leader, false);
    }
    if let Some(&r) = replicas.iter().find(|r| valid(**r)) {
        return (r, false);
    }
    if election == (Election::Any { unclean: true }) {
        if let Some(&r) = replicas.iter().find(|r| acceptable_leader(**r)) {
            return (r, true);
        }
    }
    (NO_LEADER, false)
}

/// The safety rules of a change, checked in debug builds.
fn debug_assert_valid_change(
    old: &PartitionImage,
    new: &PartitionImage,
    unclean: bool,
    acceptable_leader: &dyn Fn(i32) -> bool,
) {
    debug_assert!(
        new.leader_epoch >= old.leader_epoch,
        "leader epoch went back"
    );
    debug_assert!(
        new.partition_epoch > old.partition_epoch,
        "partition epoch did not grow"
    );
    debug_assert!(
        new.leader == old.leader || new.leader_epoch > old.leader_epoch,
        "a new leader needs a new leader epoch"
    );
    if new.leader != NO_LEADER {
        debug_assert!(new.isr.contains(&new.leader), "leader not in ISR: {new:?}");
        debug_assert!(acceptable_leader(new.leader), "leader not live: {new:?}");
        debug_assert!(
            unclean || new.leader == old.leader || old.isr.contains(&new.leader),
            "clean election chose a replica outside the old ISR: {old:?} -> {new:?}"
        );
    }
    if old.isr.iter().all(|r| old.replicas.contains(r)) {
        debug_assert!(
            new.isr.iter().all(|r| new.replicas.contains(r)),
            "ISR not within the replicas: {new:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionImage {
        PartitionImage {
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 7,
        }
    }

    const CLEAN: Election = Election::Any { unclean: false };

    #[test]
    fn no_change_is_none() {
        let all = |_| true;
        assert_eq!(build(&p(&[1, 2], &[1, 2], 1), &[1, 2], CLEAN, &all), None);
    }

    #[test]
    fn isr_change_keeps_leader_epoch() {
        let all = |_| true;
        let c = build(&p(&[1, 2, 3], &[1, 2, 3], 1), &[1, 3], CLEAN, &all).expect("change");
        assert_eq!(
            (
                c.next.leader,
                c.next.isr,
                c.next.leader_epoch,
                c.next.partition_epoch
            ),
            (1, vec![1, 3], 5, 8)
        );
        assert!(!c.unclean);
    }

    #[test]
    fn leader_gone_elects_first_isr_member_in_replica_order() {
        let live = |r| r != 1;
        let c = build(&p(&[1, 2, 3], &[3, 2, 1], 1), &[3, 2], CLEAN, &live).expect("change");
        assert_eq!((c.next.leader, c.next.leader_epoch), (2, 6));
    }

    #[test]
    fn empty_target_isr_keeps_the_last_member() {
        let live = |r| r != 1;
        let c = build(&p(&[1, 2], &[1], 1), &[], CLEAN, &live).expect("change");
        assert_eq!(
            (c.next.leader, c.next.isr.as_slice()),
            (NO_LEADER, &[1][..])
        );
        assert_eq!((c.next.leader_epoch, c.next.partition_epoch), (6, 8));
    }

    #[test]
    fn unclean_takes_a_live_replica_outside_the_isr_as_the_isr_alone() {
        let live = |r| r == 3;
        let c = build(
            &p(&[1, 2, 3], &[1], 1),
            &[],
            Election::Any { unclean: true },
            &live,
        )
        .expect("change");
        assert_eq!((c.next.leader, c.next.isr.as_slice()), (3, &[3][..]));
        assert!(c.unclean);
    }

    #[test]
    fn preferred_moves_leadership_back() {
        let all = |_| true;
        let c = build(&p(&[1, 2], &[2, 1], 2), &[2, 1], Election::Preferred, &all).expect("change");
        assert_eq!((c.next.leader, c.next.leader_epoch), (1, 6));
        // Not in the ISR: the current leader stays.
        assert_eq!(
            build(&p(&[1, 2], &[2], 2), &[2], Election::Preferred, &all),
            None
        );
    }
}
