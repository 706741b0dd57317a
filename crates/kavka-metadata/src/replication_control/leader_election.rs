//! ElectLeaders (KIP-460) and the automatic preferred-leader rebalance.

use std::collections::HashMap;

use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::{MetadataImage, PartitionImage};
use crate::record::MetadataRecord;

use super::partition_change::{build, Election};
use super::{partition_record, warn_if_unclean, NO_LEADER};

/// The kind of election an ElectLeaders request asks for (Kafka's ElectionType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ElectionType {
    /// Move leadership to the first replica when it is live and in sync.
    Preferred,
    /// Give an offline partition a leader, from outside the ISR if it must (data loss).
    Unclean,
}

impl ElectionType {
    /// The wire value of ElectLeaders' `election_type` (0 preferred, 1 unclean).
    pub fn from_wire(value: i8) -> Option<Self> {
        match value {
            0 => Some(Self::Preferred),
            1 => Some(Self::Unclean),
            _ => None,
        }
    }
}

/// One partition's outcome in [`elect_leaders`].
pub type ElectionResult = ((String, i32), Result<(), ControllerError>);

/// Elects leaders for `partitions` (topic name, index), or for every partition when `None`.
/// Returns the records to commit and one result per requested partition, in request order.
///
/// - Preferred: the first replica leads if it is live and in the ISR; ELECTION_NOT_NEEDED
///   when it already leads; PREFERRED_LEADER_NOT_AVAILABLE otherwise.
/// - Unclean: an offline partition gets the first live in-sync replica, else the first live
///   replica (which becomes the ISR alone); ELECTION_NOT_NEEDED when it has a leader.
/// - Unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION.
///
/// With `None` (ElectLeaders with null partitions, and auto.leader.rebalance.enable), the
/// partitions whose election is not needed are left out of the results, as in Kafka.
/// A partition named twice is elected once; the second result is ELECTION_NOT_NEEDED.
pub fn elect_leaders(
    image: &MetadataImage,
    election: ElectionType,
    partitions: Option<&[(String, i32)]>,
) -> (Vec<MetadataRecord>, Vec<ElectionResult>) {
    let mut elected: HashMap<(Uuid, i32), PartitionImage> = HashMap::new();
    let mut records = Vec::new();
    let mut results = Vec::new();
    let mut elect_one = |topic: &str, index: i32| -> Result<(), ControllerError> {
        let t = image.topic(topic).ok_or_else(|| unknown(topic, index))?;
        let key = (t.topic_id, index);
        let current = match elected.get(&key) {
            Some(p) => p,
            None => t
                .partitions
                .get(&index)
                .ok_or_else(|| unknown(topic, index))?,
        };
        let next = elect(image, current, election, topic)?;
        records.push(partition_record(t.topic_id, &next));
        elected.insert(key, next);
        Ok(())
    };
    match partitions {
        Some(list) => {
            for (topic, index) in list {
                let result = elect_one(topic, *index);
                results.push(((topic.clone(), *index), result));
            }
        }
        None => {
            for t in image.topics.values() {
                for index in t.partitions.keys() {
                    let result = elect_one(&t.name, *index);
                    if !matches!(result, Err(ControllerError::ElectionNotNeeded(_))) {
                        results.push(((t.name.clone(), *index), result));
                    }
                }
            }
        }
    }
    (records, results)
}

fn elect(
    image: &MetadataImage,
    current: &PartitionImage,
    election: ElectionType,
    topic: &str,
) -> Result<PartitionImage, ControllerError> {
    let index = current.partition;
    let live = |r: i32| image.is_live_broker(r);
    let (rule, not_available) = match election {
        ElectionType::Preferred => {
            if current.leader != NO_LEADER && current.replicas.first() == Some(&current.leader) {
                return Err(not_needed(topic, index));
            }
            let preferred_ok = current
                .replicas
                .first()
                .is_some_and(|r| current.isr.contains(r) && live(*r));
            if !preferred_ok {
                return Err(ControllerError::PreferredLeaderNotAvailable(format!(
                    "Failed to elect leader for partition {topic}-{index} under strategy PreferredReplicaPartitionLeaderElectionStrategy"
                )));
            }
            (Election::Preferred, None)
        }
        ElectionType::Unclean => {
            if current.leader != NO_LEADER {
                return Err(not_needed(topic, index));
            }
            // TODO(lead): ELIGIBLE_LEADERS_NOT_AVAILABLE (83) once ControllerError has it.
            let err = ControllerError::PreferredLeaderNotAvailable(format!(
                "Failed to elect leader for partition {topic}-{index} under strategy UncleanPartitionLeaderElectionStrategy"
            ));
            (Election::Any { unclean: true }, Some(err))
        }
    };
    match build(current, &current.isr, rule, &live) {
        Some(change) => {
            warn_if_unclean(topic, &change);
            Ok(change.next)
        }
        None => Err(not_available.unwrap_or_else(|| {
            ControllerError::PreferredLeaderNotAvailable(format!(
                "Failed to elect leader for partition {topic}-{index}"
            ))
        })),
    }
}

fn unknown(topic: &str, index: i32) -> ControllerError {
    ControllerError::UnknownTopicOrPartition(format!("No such partition as {topic}-{index}"))
}

fn not_needed(topic: &str, index: i32) -> ControllerError {
    ControllerError::ElectionNotNeeded(format!(
        "Leader election not needed for topic partition {topic}-{index}"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cluster, partition, set_isr, TOPIC};
    use super::*;

    fn codes(results: &[ElectionResult]) -> Vec<(i32, i16)> {
        results
            .iter()
            .map(|((_, i), r)| (*i, r.as_ref().map_or_else(ControllerError::code, |_| 0)))
            .collect()
    }

    fn named(indexes: &[i32]) -> Vec<(String, i32)> {
        indexes.iter().map(|i| (TOPIC.to_owned(), *i)).collect()
    }

    /// Partition 0 led by 2 (preferred 1 back in sync), 1 led by its preferred replica,
    /// 2 led by 3 with preferred 2 out of sync.
    fn imbalanced() -> MetadataImage {
        let image = cluster(3, &[&[1, 2, 3], &[2, 3, 1], &[2, 3, 1]]);
        let image = set_isr(&image, 0, &[2, 3, 1], 2);
        set_isr(&image, 2, &[3, 1], 3)
    }

    #[test]
    fn preferred_election_per_partition() {
        let image = imbalanced();
        let (records, results) =
            elect_leaders(&image, ElectionType::Preferred, Some(&named(&[0, 1, 2, 9])));
        assert_eq!(codes(&results), vec![(0, 0), (1, 84), (2, 80), (9, 3)]);
        assert_eq!(records.len(), 1);
        let image = image.apply(&records);
        let p = partition(&image, 0);
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch, p.isr),
            (1, 1, 1, vec![2, 3, 1])
        );
    }

    #[test]
    fn all_partitions_leave_out_the_ones_not_needed() {
        let (records, results) = elect_leaders(&imbalanced(), ElectionType::Preferred, None);
        assert_eq!(codes(&results), vec![(0, 0), (2, 80)]);
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn fenced_preferred_replica_is_not_available() {
        let image = imbalanced().apply(&[MetadataRecord::FenceBroker { node_id: 1 }]);
        let (records, results) = elect_leaders(&image, ElectionType::Preferred, Some(&named(&[0])));
        assert_eq!((records.len(), codes(&results)), (0, vec![(0, 80)]));
    }

    #[test]
    fn duplicates_elect_once() {
        let (records, results) = elect_leaders(
            &imbalanced(),
            ElectionType::Preferred,
            Some(&named(&[0, 0])),
        );
        assert_eq!(codes(&results), vec![(0, 0), (0, 84)]);
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn unknown_topic() {
        let list = vec![("nope".to_owned(), 0)];
        let (_, results) = elect_leaders(&imbalanced(), ElectionType::Unclean, Some(&list));
        assert_eq!(codes(&results), vec![(0, 3)]);
    }

    #[test]
    fn unclean_election_brings_an_offline_partition_back() {
        // Partition 0: ISR [1] and 1 fenced, so it is offline; 2 and 3 are live.
        let image = cluster(3, &[&[1, 2, 3], &[2, 3]]);
        let image = set_isr(&image, 0, &[1], NO_LEADER)
            .apply(&[MetadataRecord::FenceBroker { node_id: 1 }]);
        let (records, results) =
            elect_leaders(&image, ElectionType::Unclean, Some(&named(&[0, 1])));
        assert_eq!(codes(&results), vec![(0, 0), (1, 84)]);
        let p = partition(&image.apply(&records), 0);
        assert_eq!((p.leader, p.isr, p.leader_epoch), (2, vec![2], 1));
        // Nobody live: not available.
        let dead = image.apply(&[
            MetadataRecord::FenceBroker { node_id: 2 },
            MetadataRecord::FenceBroker { node_id: 3 },
        ]);
        let (records, results) = elect_leaders(&dead, ElectionType::Unclean, Some(&named(&[0])));
        assert_eq!((records.len(), codes(&results)), (0, vec![(0, 80)]));
    }
}
