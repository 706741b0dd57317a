//! What fencing and unfencing a broker does to the partitions (KIP-631): a fenced broker
//! leaves every ISR it can leave and every leadership; an unfenced one takes back the
//! partitions that were waiting for it.

use crate::image::{MetadataImage, PartitionImage};
use crate::record::MetadataRecord;

use super::partition_change::{build, Election};
use super::{partition_record, unclean_election_enabled, warn_if_unclean, NO_LEADER};

/// The records that fence `node_id`: `FenceBroker` first, then one `Partition` record per
/// partition that changes. The broker leaves every ISR it is in, except where it is the last
/// member (the partition then goes offline but remembers who may lead it cleanly). Where it
/// led, the first replica in replica order that is in the remaining ISR and live leads;
/// if none, the partition goes offline (leader -1), unless unclean election is enabled for
/// the topic (`unclean.leader.election.enable`, else `unclean`), in which case the first
/// live replica leads with an ISR of itself alone.
///
/// An unregistered `node_id` yields no records.
pub fn fence_broker(image: &MetadataImage, node_id: i32, unclean: bool) -> Vec<MetadataRecord> {
    if !image.brokers.contains_key(&node_id) {
        return Vec::new();
    }
    let acceptable = |r: i32| r != node_id && image.is_live_broker(r);
    let mut records = vec![MetadataRecord::FenceBroker { node_id }];
    for topic in image.topics.values() {
        let election = Election::Any {
            unclean: unclean_election_enabled(topic, unclean),
        };
        for p in topic.partitions.values() {
            if p.leader != node_id && !p.isr.contains(&node_id) {
                continue;
            }
            let target_isr = isr_without(p, node_id);
            if let Some(change) = build(p, &target_isr, election, &acceptable) {
                warn_if_unclean(&topic.name, &change);
                records.push(partition_record(topic.topic_id, &change.next));
            }
        }
    }
    records
}

/// The records that unfence `node_id`: `UnfenceBroker` first, then a new leader for every
/// offline partition that may now have one: `node_id` when it is in the ISR, or, with unclean
/// election enabled for the topic, the first live replica. The ISR does not grow here: the
/// broker rejoins ISRs when their leaders see it caught up (AlterPartition).
///
/// Also useful after a re-registration of a broker that was never fenced (it repairs offline
/// partitions). An unregistered `node_id` yields no records.
pub fn unfence_broker(image: &MetadataImage, node_id: i32, unclean: bool) -> Vec<MetadataRecord> {
    if !image.brokers.contains_key(&node_id) {
        return Vec::new();
    }
    // The image still shows the broker fenced until these records are applied.
    let acceptable = |r: i32| r == node_id || image.is_live_broker(r);
    let mut records = vec![MetadataRecord::UnfenceBroker { node_id }];
    for topic in image.topics.values() {
        let election = Election::Any {
            unclean: unclean_election_enabled(topic, unclean),
        };
        for p in topic.partitions.values() {
            if p.leader != NO_LEADER {
                continue;
            }
            if let Some(change) = build(p, &p.isr, election, &acceptable) {
                warn_if_unclean(&topic.name, &change);
                records.push(partition_record(topic.topic_id, &change.next));
            }
        }
    }
    records
}

fn isr_without(p: &PartitionImage, node_id: i32) -> Vec<i32> {
    p.isr.iter().copied().filter(|r| *r != node_id).collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cluster, partition, set_isr, set_topic_config};
    use super::*;

    fn fence(image: &MetadataImage, node_id: i32, unclean: bool) -> MetadataImage {
        image.apply(&fence_broker(image, node_id, unclean))
    }

    fn unfence(image: &MetadataImage, node_id: i32, unclean: bool) -> MetadataImage {
        image.apply(&unfence_broker(image, node_id, unclean))
    }

    fn state(p: &PartitionImage) -> (i32, Vec<i32>, i32, i32) {
        (p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch)
    }

    #[test]
    fn fencing_the_leader_elects_the_next_isr_member_in_replica_order() {
        let image = cluster(3, &[&[1, 2, 3]]);
        let image = set_isr(&image, 0, &[1, 3, 2], 1);
        let records = fence_broker(&image, 1, false);
        assert_eq!(
            records.first(),
            Some(&MetadataRecord::FenceBroker { node_id: 1 })
        );
        assert_eq!(records.len(), 2);
        let image = image.apply(&records);
        assert!(!image.is_live_broker(1));
        assert_eq!(state(&partition(&image, 0)), (2, vec![3, 2], 1, 1));
    }

    #[test]
    fn fencing_a_follower_shrinks_the_isr_only() {
        let image = fence(&cluster(3, &[&[1, 2, 3], &[3, 1]]), 2, false);
        assert_eq!(state(&partition(&image, 0)), (1, vec![1, 3], 0, 1));
        assert_eq!(
            state(&partition(&image, 1)),
            (3, vec![3, 1], 0, 0),
            "untouched"
        );
    }

    #[test]
    fn fencing_the_last_isr_member_takes_the_partition_offline_keeping_the_isr() {
        let image = set_isr(&cluster(2, &[&[1, 2]]), 0, &[1], 1);
        let image = fence(&image, 1, false);
        assert_eq!(state(&partition(&image, 0)), (NO_LEADER, vec![1], 1, 1));
        // Broker 2 is live but out of sync: it may not lead with unclean election off.
        assert_eq!(fence_broker(&image, 1, false).len(), 1, "idempotent");
        let image = unfence(&image, 2, false);
        assert_eq!(partition(&image, 0).leader, NO_LEADER);
        // The last in-sync replica comes back: it leads again.
        let image = unfence(&image, 1, false);
        assert_eq!(state(&partition(&image, 0)), (1, vec![1], 2, 2));
    }

    #[test]
    fn fenced_follower_is_not_elected_and_single_isr_loss_is_offline() {
        let image = cluster(3, &[&[1, 2, 3]]);
        let image = fence(&image, 3, false);
        let image = fence(&image, 2, false);
        assert_eq!(state(&partition(&image, 0)), (1, vec![1], 0, 2));
        let image = fence(&image, 1, false);
        assert_eq!(state(&partition(&image, 0)), (NO_LEADER, vec![1], 1, 3));
        // Unfencing a replica outside the ISR does not bring it online.
        let image = unfence(&image, 3, false);
        assert_eq!(partition(&image, 0).leader, NO_LEADER);
    }

    #[test]
    fn unclean_fencing_elects_a_live_out_of_sync_replica_alone() {
        let image = set_isr(&cluster(3, &[&[1, 2, 3]]), 0, &[1], 1);
        let image = fence(&image, 1, true);
        assert_eq!(state(&partition(&image, 0)), (2, vec![2], 1, 1));
    }

    #[test]
    fn topic_config_overrides_the_unclean_default() {
        let image = set_isr(&cluster(3, &[&[1, 2, 3]]), 0, &[1], 1);
        let on = set_topic_config(&image, "unclean.leader.election.enable", "TRUE");
        assert_eq!(partition(&fence(&on, 1, false), 0).leader, 2);
        let off = set_topic_config(&image, "unclean.leader.election.enable", "false");
        assert_eq!(partition(&fence(&off, 1, true), 0).leader, NO_LEADER);
    }

    #[test]
    fn unclean_unfencing_elects_a_returning_out_of_sync_replica() {
        let image = set_isr(&cluster(2, &[&[1, 2]]), 0, &[1], 1);
        let image = fence(&fence(&image, 2, true), 1, true);
        assert_eq!(partition(&image, 0).leader, NO_LEADER);
        let image = unfence(&image, 2, true);
        assert_eq!(state(&partition(&image, 0)), (2, vec![2], 2, 2));
    }

    #[test]
    fn unknown_broker_yields_nothing() {
        let image = cluster(1, &[&[1]]);
        assert!(fence_broker(&image, 7, false).is_empty());
        assert!(unfence_broker(&image, 7, false).is_empty());
    }

    #[test]
    fn unfencing_a_live_broker_changes_no_partition() {
        let image = cluster(3, &[&[1, 2, 3]]);
        assert_eq!(
            unfence_broker(&image, 2, false),
            vec![MetadataRecord::UnfenceBroker { node_id: 2 }]
        );
    }
}
