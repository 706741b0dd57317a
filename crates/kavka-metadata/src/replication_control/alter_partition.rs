//! AlterPartition (KIP-497): a partition leader asks the controller to change the ISR.

use std::collections::HashSet;

use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::{MetadataImage, PartitionImage};
use crate::record::MetadataRecord;

use super::partition_change::{build, Election};
use super::partition_record;

/// One partition of an AlterPartition request: the leader's proposed ISR, based on the
/// leader and partition epochs it last saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlterPartitionRequest {
    /// The sender; it must lead the partition.
    pub broker_id: i32,
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// Validates `req` against `image` as Kafka's controller does and returns the records to
/// commit with the partition's resulting state. An ISR equal to the current one commits
/// nothing and returns the current state (the leader's retry after a lost response).
///
/// Errors, checked in Kafka's order:
/// - unknown topic id or partition: UNKNOWN_TOPIC_OR_PARTITION;
/// - epochs newer than the image's: NOT_CONTROLLER (this controller is behind; the leader
///   looks for the active one);
/// - a stale leader epoch: FENCED_LEADER_EPOCH;
/// - the sender does not lead: NOT_LEADER_OR_FOLLOWER;
/// - a stale partition epoch: INVALID_UPDATE_VERSION (the leader waits for the newer state);
/// - an ISR with duplicates, a non-replica, or without the leader: INVALID_REQUEST;
/// - an ISR member not registered or fenced: INELIGIBLE_REPLICA.
pub fn alter_partition(
    image: &MetadataImage,
    req: &AlterPartitionRequest,
) -> Result<(Vec<MetadataRecord>, PartitionImage), ControllerError> {
    let current = image
        .partition(&req.topic_id, req.partition)
        .ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition(format!(
                "Partition {} of topic id {} does not exist.",
                req.partition, req.topic_id
            ))
        })?;
    validate(image, current, req)?;
    let unchanged_leader = |r: i32| r == current.leader;
    match build(
        current,
        &req.new_isr,
        Election::Any { unclean: false },
        &unchanged_leader,
    ) {
        None => Ok((Vec::new(), current.clone())),
        Some(change) => {
            debug_assert_eq!(change.next.leader, current.leader);
            debug_assert_eq!(change.next.leader_epoch, current.leader_epoch);
            Ok((
                vec![partition_record(req.topic_id, &change.next)],
                change.next,
            ))
        }
    }
}

fn validate(
    image: &MetadataImage,
    current: &PartitionImage,
    req: &AlterPartitionRequest,
) -> Result<(), ControllerError> {
    let (topic_id, partition, broker) = (req.topic_id, req.partition, req.broker_id);
    if req.leader_epoch > current.leader_epoch || req.partition_epoch > current.partition_epoch {
        return Err(ControllerError::NotController(format!(
            "The epochs of partition {partition} of topic id {topic_id} in the request (leader epoch {}, partition epoch {}) are newer than this controller's ({}, {}).",
            req.leader_epoch, req.partition_epoch, current.leader_epoch, current.partition_epoch
        )));
    }
    if req.leader_epoch < current.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch(format!(
            "The leader epoch of partition {partition} of topic id {topic_id} is {}, not {}.",
            current.leader_epoch, req.leader_epoch
        )));
    }
    if broker != current.leader {
        return Err(ControllerError::NotLeaderOrFollower(format!(
            "Broker {broker} does not lead partition {partition} of topic id {topic_id}; the leader is {}.",
            current.leader
        )));
    }
    if req.partition_epoch < current.partition_epoch {
        return Err(ControllerError::InvalidUpdateVersion(format!(
            "The partition epoch of partition {partition} of topic id {topic_id} is {}, not {}.",
            current.partition_epoch, req.partition_epoch
        )));
    }
    let invalid_isr = || {
        ControllerError::InvalidRequest(format!(
            "Invalid ISR {:?} for partition {partition} of topic id {topic_id} with replicas {:?} and leader {}.",
            req.new_isr, current.replicas, current.leader
        ))
    };
    // Bounded by the replica count before anything is allocated for it.
    if req.new_isr.len() > current.replicas.len() || !req.new_isr.contains(&current.leader) {
        return Err(invalid_isr());
    }
    let mut seen = HashSet::with_capacity(req.new_isr.len());
    for r in &req.new_isr {
        if !seen.insert(*r) || !current.replicas.contains(r) {
            return Err(invalid_isr());
        }
    }
    let ineligible: Vec<i32> = req
        .new_isr
        .iter()
        .copied()
        .filter(|r| !image.is_live_broker(*r))
        .collect();
    if !ineligible.is_empty() {
        return Err(ControllerError::IneligibleReplica(format!(
            "The new ISR {:?} of partition {partition} of topic id {topic_id} includes brokers that are fenced or not registered: {ineligible:?}.",
            req.new_isr
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cluster, set_isr, set_partition, TOPIC};
    use super::*;

    fn request(image: &MetadataImage, broker_id: i32, new_isr: &[i32]) -> AlterPartitionRequest {
        let topic_id = image.topic(TOPIC).expect("topic").topic_id;
        let p = image.partition(&topic_id, 0).expect("partition");
        AlterPartitionRequest {
            broker_id,
            topic_id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: new_isr.to_vec(),
        }
    }

    fn code(r: Result<(Vec<MetadataRecord>, PartitionImage), ControllerError>) -> i16 {
        r.map_or_else(|e| e.code(), |_| 0)
    }

    #[test]
    fn shrink_and_expand_bump_only_the_partition_epoch() {
        let image = cluster(3, &[&[1, 2, 3]]);
        let (records, p) = alter_partition(&image, &request(&image, 1, &[1, 3])).expect("shrink");
        assert_eq!(records.len(), 1);
        assert_eq!(
            (
                p.isr.as_slice(),
                p.leader,
                p.leader_epoch,
                p.partition_epoch
            ),
            (&[1, 3][..], 1, 0, 1)
        );
        let image = image.apply(&records);
        assert_eq!(image.partition(&p_topic(&image), 0), Some(&p));
        let (records, p) =
            alter_partition(&image, &request(&image, 1, &[1, 3, 2])).expect("expand");
        assert_eq!(
            (records.len(), p.isr.as_slice(), p.partition_epoch),
            (1, &[1, 3, 2][..], 2)
        );
    }

    fn p_topic(image: &MetadataImage) -> Uuid {
        image.topic(TOPIC).expect("topic").topic_id
    }

    #[test]
    fn unchanged_isr_commits_nothing() {
        let image = cluster(3, &[&[1, 2, 3]]);
        let (records, p) = alter_partition(&image, &request(&image, 1, &[1, 2, 3])).expect("ok");
        assert!(records.is_empty());
        assert_eq!(Some(&p), image.partition(&p_topic(&image), 0));
    }

    #[test]
    fn unknown_topic_or_partition() {
        let image = cluster(3, &[&[1, 2, 3]]);
        let mut req = request(&image, 1, &[1]);
        req.partition = 1;
        assert_eq!(code(alter_partition(&image, &req)), 3);
        req.partition = 0;
        req.topic_id = Uuid::from_u128(42);
        assert_eq!(code(alter_partition(&image, &req)), 3);
    }

    #[test]
    fn only_the_leader_may_alter() {
        let image = cluster(3, &[&[1, 2, 3]]);
        assert_eq!(
            code(alter_partition(&image, &request(&image, 2, &[1, 2]))),
            6
        );
    }

    #[test]
    fn epochs_are_checked() {
        let image = set_partition(&cluster(3, &[&[1, 2, 3]]), 0, &[1, 2, 3], 1, 4, 9);
        let base = request(&image, 1, &[1, 2]);
        let stale_leader = AlterPartitionRequest {
            leader_epoch: 3,
            ..base.clone()
        };
        assert_eq!(
            code(alter_partition(&image, &stale_leader)),
            74,
            "FENCED_LEADER_EPOCH"
        );
        let stale_partition = AlterPartitionRequest {
            partition_epoch: 8,
            ..base.clone()
        };
        assert_eq!(
            code(alter_partition(&image, &stale_partition)),
            95,
            "INVALID_UPDATE_VERSION"
        );
        let newer = AlterPartitionRequest {
            leader_epoch: 5,
            ..base.clone()
        };
        assert_eq!(code(alter_partition(&image, &newer)), 41, "NOT_CONTROLLER");
        let newer = AlterPartitionRequest {
            partition_epoch: 10,
            ..base.clone()
        };
        assert_eq!(code(alter_partition(&image, &newer)), 41, "NOT_CONTROLLER");
        // A stale leader epoch is fenced even when the sender no longer leads (Kafka's order).
        let old_leader = AlterPartitionRequest {
            broker_id: 2,
            leader_epoch: 3,
            ..base
        };
        assert_eq!(code(alter_partition(&image, &old_leader)), 74);
    }

    #[test]
    fn malformed_isr_is_an_invalid_request() {
        let image = cluster(4, &[&[1, 2, 3]]);
        for isr in [&[][..], &[2, 3], &[1, 1], &[1, 4], &[1, 2, 3, 3]] {
            assert_eq!(
                code(alter_partition(&image, &request(&image, 1, isr))),
                42,
                "{isr:?}"
            );
        }
    }

    #[test]
    fn fenced_or_unregistered_members_are_ineligible() {
        let image = cluster(3, &[&[1, 2, 3]]);
        let image = set_partition(&image, 0, &[1, 2, 3], 1, 0, 0);
        let image = set_isr(&image, 0, &[1], 1);
        let fenced = image.apply(&[MetadataRecord::FenceBroker { node_id: 2 }]);
        assert_eq!(
            code(alter_partition(&fenced, &request(&fenced, 1, &[1, 2]))),
            107
        );
        let unregistered = set_partition(&cluster(2, &[]), 0, &[1, 2, 9], 1, 0, 0);
        let unregistered = set_isr(&unregistered, 0, &[1], 1);
        assert_eq!(
            code(alter_partition(
                &unregistered,
                &request(&unregistered, 1, &[1, 9])
            )),
            107
        );
    }
}
