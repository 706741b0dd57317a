//! Partition reassignment (KIP-455: AlterPartitionReassignments, ListPartitionReassignments).
//!
//! A reassignment of a partition with replicas R to the target T widens the replica set to
//! T followed by the rest of R, and records T as pending. The new replicas start as
//! followers and catch up; their leader adds them to the ISR (AlterPartition). Once every
//! target replica is in sync the reassignment completes: the replicas become T, the ISR
//! shrinks to its members in T, and a replica of T takes the leadership if the leader is
//! being removed. Cancelling goes back to R.
//!
//! The replication throttle (leader/follower.replication.throttled.rate) is not applied:
//! new replicas catch up at full speed.

use std::collections::HashSet;

use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::{MetadataImage, PartitionImage};
use crate::record::MetadataRecord;

use super::{partition_record, NO_LEADER};

/// Why one partition of an AlterPartitionReassignments request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ReassignmentError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// A cancellation of a partition that is not being reassigned
    /// (NO_REASSIGNMENT_IN_PROGRESS).
    #[error("{0}")]
    NoReassignmentInProgress(String),
}

impl ReassignmentError {
    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        match self {
            Self::Controller(e) => e.code(),
            Self::NoReassignmentInProgress(_) => {
                kavka_protocol::error::ErrorCode::NoReassignmentInProgress.code()
            }
        }
    }
}

/// One partition of an AlterPartitionReassignments request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReassignmentRequest {
    pub topic: String,
    pub partition: i32,
    /// The new replicas, or `None` to cancel the pending reassignment.
    pub target: Option<Vec<i32>>,
}

/// One partition being reassigned, as ListPartitionReassignments reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    /// The current (widened) replica set.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// Starts, replaces or cancels the reassignment of each requested partition, in request
/// order (a partition named twice sees the first change). Returns the records to commit and
/// one result per request. A reassignment whose target is already in sync (a reordering,
/// or a removal of replicas) completes in the same records.
///
/// `allow_replication_factor_change: false` (AlterPartitionReassignments v1, KIP-860)
/// refuses a target whose size differs from the original replica count.
pub fn alter_partition_reassignments(
    image: &MetadataImage,
    requests: &[ReassignmentRequest],
    allow_replication_factor_change: bool,
) -> (Vec<MetadataRecord>, Vec<Result<(), ReassignmentError>>) {
    let mut working = image.clone();
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    for req in requests {
        let result = match &req.target {
            Some(target) => start(
                &working,
                &req.topic,
                req.partition,
                target,
                allow_replication_factor_change,
            ),
            None => cancel(&working, &req.topic, req.partition),
        };
        match result {
            Ok(changes) => {
                working = working.apply(&changes);
                records.extend(changes);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (records, results)
}

/// The records that complete every pending reassignment whose target replicas are all in
/// sync (the controller runs this after ISR changes and periodically).
pub fn complete_reassignments(image: &MetadataImage) -> Vec<MetadataRecord> {
    image
        .reassignments
        .keys()
        .flat_map(|(topic_id, index)| complete_reassignment(image, *topic_id, *index))
        .collect()
}

/// The records that complete the reassignment of one partition if its target replicas are
/// all in sync and one of them can lead; empty otherwise.
pub fn complete_reassignment(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
) -> Vec<MetadataRecord> {
    let (Some(pending), Some(current)) = (
        image.reassignment(&topic_id, partition),
        image.partition(&topic_id, partition),
    ) else {
        return Vec::new();
    };
    let target = &pending.target;
    if !target.iter().all(|r| current.isr.contains(r)) {
        return Vec::new();
    }
    let Some(next) = reshape(image, current, target) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(2);
    if next != *current {
        out.push(partition_record(topic_id, &next));
    }
    out.push(MetadataRecord::PartitionReassignment {
        topic_id,
        partition,
        target: None,
    });
    out
}

/// ListPartitionReassignments: the pending reassignments of `partitions` (topic, index), or
/// all of them when `None`. Partitions that are unknown or not being reassigned are left
/// out, as in Kafka. Sorted by topic and partition.
pub fn list_partition_reassignments(
    image: &MetadataImage,
    partitions: Option<&[(String, i32)]>,
) -> Vec<OngoingReassignment> {
    let describe = |topic: &str, topic_id: &Uuid, index: i32| -> Option<OngoingReassignment> {
        let pending = image.reassignment(topic_id, index)?;
        let p = image.partition(topic_id, index)?;
        Some(OngoingReassignment {
            topic: topic.to_owned(),
            partition: index,
            replicas: p.replicas.clone(),
            adding: pending.adding(),
            removing: pending.removing(),
        })
    };
    let mut out: Vec<OngoingReassignment> = match partitions {
        None => image
            .reassignments
            .keys()
            .filter_map(|(id, index)| {
                let topic = image.topic_ids.get(id)?;
                describe(topic, id, *index)
            })
            .collect(),
        Some(list) => {
            let unique: HashSet<&(String, i32)> = list.iter().collect();
            unique
                .into_iter()
                .filter_map(|(topic, index)| {
                    let t = image.topic(topic)?;
                    describe(topic, &t.topic_id, *index)
                })
                .collect()
        }
    };
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    out
}

fn start(
    image: &MetadataImage,
    topic: &str,
    index: i32,
    target: &[i32],
    allow_replication_factor_change: bool,
) -> Result<Vec<MetadataRecord>, ReassignmentError> {
    let (topic_id, current) = lookup(image, topic, index)?;
    validate_target(image, topic, index, target)?;
    let pending = image.reassignment(&topic_id, index);
    let original = pending.map_or(&current.replicas, |p| &p.original);
    if !allow_replication_factor_change && target.len() != original.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "The replication factor of partition {topic}-{index} would change from {} to {}, which the request does not allow.",
            original.len(),
            target.len()
        ))
        .into());
    }
    if pending.is_none() && current.replicas == target {
        return Ok(Vec::new());
    }
    // Target first (its order is the new preference order), then what is being removed.
    let mut replicas = target.to_vec();
    replicas.extend(original.iter().filter(|r| !target.contains(r)));
    let next = reshape(image, current, &replicas).ok_or_else(|| {
        ControllerError::InvalidReplicaAssignment(format!(
            "Reassigning partition {topic}-{index} to {target:?} would leave it without an in-sync replica to lead it."
        ))
    })?;
    let mut records = vec![MetadataRecord::PartitionReassignment {
        topic_id,
        partition: index,
        target: Some(target.to_vec()),
    }];
    if next != *current {
        records.push(partition_record(topic_id, &next));
    }
    let started = image.apply(&records);
    debug_assert_reassigning(&started, topic_id, index);
    records.extend(complete_reassignment(&started, topic_id, index));
    Ok(records)
}

fn cancel(
    image: &MetadataImage,
    topic: &str,
    index: i32,
) -> Result<Vec<MetadataRecord>, ReassignmentError> {
    let (topic_id, current) = lookup(image, topic, index)?;
    let Some(pending) = image.reassignment(&topic_id, index) else {
        return Err(ReassignmentError::NoReassignmentInProgress(format!(
            "There is no ongoing reassignment for partition {topic}-{index}."
        )));
    };
    let next = reshape(image, current, &pending.original).ok_or_else(|| {
        ControllerError::InvalidReplicaAssignment(format!(
            "Cannot cancel the reassignment of partition {topic}-{index}: none of its original replicas {:?} is in sync.",
            pending.original
        ))
    })?;
    let mut records = Vec::with_capacity(2);
    if next != *current {
        records.push(partition_record(topic_id, &next));
    }
    records.push(MetadataRecord::PartitionReassignment {
        topic_id,
        partition: index,
        target: None,
    });
    Ok(records)
}

fn lookup<'a>(
    image: &'a MetadataImage,
    topic: &str,
    index: i32,
) -> Result<(Uuid, &'a PartitionImage), ReassignmentError> {
    image
        .topic(topic)
        .and_then(|t| t.partitions.get(&index).map(|p| (t.topic_id, p)))
        .ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition(format!(
                "Unable to find partition {topic}-{index}."
            ))
            .into()
        })
}

/// A target is non-empty, names each broker once, and only registered brokers.
fn validate_target(
    image: &MetadataImage,
    topic: &str,
    index: i32,
    target: &[i32],
) -> Result<(), ReassignmentError> {
    let invalid = |why: String| -> ReassignmentError {
        ControllerError::InvalidReplicaAssignment(format!(
            "Invalid replica assignment {target:?} for partition {topic}-{index}: {why}"
        ))
        .into()
    };
    if target.is_empty() {
        return Err(invalid("the replica list is empty.".into()));
    }
    // Distinct registered brokers: bounded by the broker count before anything allocates.
    if target.len() > image.brokers.len() {
        return Err(invalid(format!(
            "only {} broker(s) are registered.",
            image.brokers.len()
        )));
    }
    let mut seen = HashSet::with_capacity(target.len());
    for r in target {
        if !seen.insert(*r) {
            return Err(invalid(format!("broker {r} is listed more than once.")));
        }
        if !image.brokers.contains_key(r) {
            return Err(invalid(format!("broker {r} is not registered.")));
        }
    }
    Ok(())
}

/// `current` with the replica set `replicas`: the ISR keeps its members that remain, and
/// the leader stays if it remains in sync and live, else the first live in-sync replica in
/// `replicas` order leads (a new leader epoch). `None` when the partition would lose its
/// last in-sync replica, or would lose its leader with no live in-sync replica to replace
/// it. Any change bumps the partition epoch.
fn reshape(
    image: &MetadataImage,
    current: &PartitionImage,
    replicas: &[i32],
) -> Option<PartitionImage> {
    let isr: Vec<i32> = current
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return None;
    }
    let can_lead = |r: i32| r != NO_LEADER && isr.contains(&r) && image.is_live_broker(r);
    let leader = if can_lead(current.leader) {
        current.leader
    } else {
        replicas
            .iter()
            .copied()
            .find(|r| can_lead(*r))
            .unwrap_or(NO_LEADER)
    };
    if leader == NO_LEADER && current.leader != NO_LEADER {
        return None;
    }
    if leader == current.leader && isr == current.isr && replicas == current.replicas {
        return Some(current.clone());
    }
    let leader_epoch = if leader == current.leader {
        current.leader_epoch
    } else {
        current.leader_epoch.saturating_add(1)
    };
    let next = PartitionImage {
        partition: current.partition,
        replicas: replicas.to_vec(),
        isr,
        leader,
        leader_epoch,
        partition_epoch: current.partition_epoch.saturating_add(1),
    };
    debug_assert!(
        next.leader == NO_LEADER || next.isr.contains(&next.leader),
        "leader not in ISR: {next:?}"
    );
    debug_assert!(
        next.isr.iter().all(|r| next.replicas.contains(r)),
        "ISR not within the replicas: {next:?}"
    );
    Some(next)
}

/// While a reassignment is pending, its target is within the replica set.
fn debug_assert_reassigning(image: &MetadataImage, topic_id: Uuid, index: i32) {
    if let (Some(pending), Some(p)) = (
        image.reassignment(&topic_id, index),
        image.partition(&topic_id, index),
    ) {
        debug_assert!(
            pending.target.iter().all(|r| p.replicas.contains(r)),
            "target {:?} not within the replicas {:?}",
            pending.target,
            p.replicas
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cluster, partition, set_isr, TOPIC};
    use super::*;

    fn req(index: i32, target: Option<&[i32]>) -> ReassignmentRequest {
        ReassignmentRequest {
            topic: TOPIC.into(),
            partition: index,
            target: target.map(<[i32]>::to_vec),
        }
    }

    /// Applies one request; panics on failure.
    fn reassign(image: &MetadataImage, index: i32, target: Option<&[i32]>) -> MetadataImage {
        let (records, results) = alter_partition_reassignments(image, &[req(index, target)], true);
        assert_eq!(results, vec![Ok(())]);
        image.apply(&records)
    }

    fn codes(results: &[Result<(), ReassignmentError>]) -> Vec<i16> {
        results
            .iter()
            .map(|r| r.as_ref().map_or_else(ReassignmentError::code, |_| 0))
            .collect()
    }

    fn topic_id(image: &MetadataImage) -> Uuid {
        image.topic(TOPIC).expect("topic").topic_id
    }

    #[test]
    fn start_widens_the_replicas_and_records_the_target() {
        let image = cluster(4, &[&[1, 2, 3]]);
        let image = reassign(&image, 0, Some(&[4, 2, 3]));
        let p = partition(&image, 0);
        assert_eq!(p.replicas, vec![4, 2, 3, 1]);
        assert_eq!((p.isr.clone(), p.leader), (vec![1, 2, 3], 1));
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 1));
        let listed = list_partition_reassignments(&image, None);
        assert_eq!(
            listed,
            vec![OngoingReassignment {
                topic: TOPIC.into(),
                partition: 0,
                replicas: vec![4, 2, 3, 1],
                adding: vec![4],
                removing: vec![1],
            }]
        );
        // Nothing to complete until 4 is in sync.
        assert!(complete_reassignments(&image).is_empty());
    }

    #[test]
    fn completes_when_the_target_is_in_sync_and_the_leader_moves_off_a_removed_replica() {
        let image = reassign(&cluster(4, &[&[1, 2, 3]]), 0, Some(&[4, 2, 3]));
        let image = set_isr(&image, 0, &[1, 2, 3, 4], 1);
        let records = complete_reassignments(&image);
        let done = image.apply(&records);
        let p = partition(&done, 0);
        assert_eq!(p.replicas, vec![4, 2, 3]);
        assert_eq!(p.isr, vec![2, 3, 4]);
        // The leader 1 is removed: the first target replica in sync leads, a new epoch.
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (4, 1, 2));
        assert!(done.reassignments.is_empty());
        assert!(complete_reassignments(&done).is_empty());
    }

    #[test]
    fn a_leader_in_the_target_keeps_leading() {
        let image = reassign(&cluster(4, &[&[1, 2]]), 0, Some(&[3, 1]));
        let image = set_isr(&image, 0, &[1, 2, 3], 1);
        let p = partition(&image.apply(&complete_reassignments(&image)), 0);
        assert_eq!(
            (p.replicas, p.isr, p.leader, p.leader_epoch),
            (vec![3, 1], vec![1, 3], 1, 0)
        );
    }

    #[test]
    fn a_target_already_in_sync_completes_at_once() {
        let image = cluster(3, &[&[1, 2, 3]]);
        // A reordering: same replicas, new preferred leader.
        let reordered = reassign(&image, 0, Some(&[3, 2, 1]));
        let p = partition(&reordered, 0);
        assert_eq!((p.replicas, p.leader), (vec![3, 2, 1], 1));
        assert!(reordered.reassignments.is_empty());
        // A removal of a replica, the leader included.
        let shrunk = reassign(&image, 0, Some(&[2, 3]));
        let p = partition(&shrunk, 0);
        assert_eq!((p.replicas, p.isr, p.leader), (vec![2, 3], vec![2, 3], 2));
        assert!(shrunk.reassignments.is_empty());
        // The same replicas: nothing at all.
        let (records, results) =
            alter_partition_reassignments(&image, &[req(0, Some(&[1, 2, 3]))], true);
        assert_eq!((records.len(), codes(&results)), (0, vec![0]));
    }

    #[test]
    fn cancel_returns_to_the_original_replicas() {
        let image = cluster(5, &[&[1, 2]]);
        let started = reassign(&image, 0, Some(&[3, 4]));
        assert_eq!(partition(&started, 0).replicas, vec![3, 4, 1, 2]);
        // 3 caught up, 4 did not.
        let started = set_isr(&started, 0, &[1, 2, 3], 1);
        let cancelled = reassign(&started, 0, None);
        let p = partition(&cancelled, 0);
        assert_eq!((p.replicas, p.isr, p.leader), (vec![1, 2], vec![1, 2], 1));
        assert!(cancelled.reassignments.is_empty());
        // Nothing left to cancel.
        let (_, results) = alter_partition_reassignments(&cancelled, &[req(0, None)], true);
        assert_eq!(codes(&results), vec![85]);
    }

    #[test]
    fn a_new_target_replaces_a_pending_one_and_keeps_the_original() {
        let image = reassign(&cluster(5, &[&[1, 2]]), 0, Some(&[3, 4]));
        let image = reassign(&image, 0, Some(&[5, 2]));
        assert_eq!(partition(&image, 0).replicas, vec![5, 2, 1]);
        let listed = list_partition_reassignments(&image, Some(&[(TOPIC.into(), 0)]));
        assert_eq!(
            listed
                .first()
                .map(|o| (o.adding.clone(), o.removing.clone())),
            Some((vec![5], vec![1]))
        );
        let original = &image
            .reassignment(&topic_id(&image), 0)
            .expect("pending")
            .original;
        assert_eq!(original, &vec![1, 2]);
    }

    #[test]
    fn bad_requests() {
        let image = cluster(3, &[&[1, 2]]);
        let requests = [
            req(7, Some(&[1])),
            ReassignmentRequest {
                topic: "nope".into(),
                partition: 0,
                target: None,
            },
            req(0, Some(&[])),
            req(0, Some(&[1, 1])),
            req(0, Some(&[1, 9])),
            req(0, Some(&[1, 2, 3, 4])),
            req(0, None),
        ];
        let (records, results) = alter_partition_reassignments(&image, &requests, true);
        assert!(records.is_empty());
        assert_eq!(codes(&results), vec![3, 3, 39, 39, 39, 39, 85]);
        // KIP-860: a replication factor change only when allowed.
        let (_, results) = alter_partition_reassignments(&image, &[req(0, Some(&[3]))], false);
        assert_eq!(codes(&results), vec![38]);
        let (_, results) = alter_partition_reassignments(&image, &[req(0, Some(&[3, 1]))], false);
        assert_eq!(codes(&results), vec![0]);
    }

    #[test]
    fn deleting_the_topic_drops_its_reassignments() {
        let image = reassign(&cluster(3, &[&[1]]), 0, Some(&[2]));
        let id = topic_id(&image);
        let gone = image.apply(&[MetadataRecord::RemoveTopic { topic_id: id }]);
        assert!(gone.reassignments.is_empty());
        assert!(list_partition_reassignments(&gone, None).is_empty());
    }

    /// SplitMix64, seeded: every schedule is reproducible.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    fn check_invariants(image: &MetadataImage, seed: u64, step: usize) {
        for topic in image.topics.values() {
            for p in topic.partitions.values() {
                let ctx = format!("seed {seed} step {step}: {p:?}");
                assert!(!p.isr.is_empty(), "empty ISR, {ctx}");
                assert!(
                    p.isr.iter().all(|r| p.replicas.contains(r)),
                    "ISR ⊄ replicas, {ctx}"
                );
                assert!(
                    p.leader == NO_LEADER || p.isr.contains(&p.leader),
                    "leader ∉ ISR, {ctx}"
                );
                let mut unique = p.replicas.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), p.replicas.len(), "duplicate replicas, {ctx}");
                if let Some(pending) = image.reassignment(&topic.topic_id, p.partition) {
                    assert!(
                        pending.target.iter().all(|r| p.replicas.contains(r)),
                        "target {:?} ⊄ replicas, {ctx}",
                        pending.target
                    );
                    assert!(
                        pending.original.iter().all(|r| p.replicas.contains(r)),
                        "original {:?} ⊄ replicas, {ctx}",
                        pending.original
                    );
                }
            }
        }
    }

    /// Random reassignments, cancellations, followers catching up (ISR growth), followers
    /// falling behind (ISR shrink) and completions: leader ∈ ISR ⊆ replicas always, target ⊆
    /// replicas while pending, epochs never go back, and a completed reassignment leaves
    /// exactly the target.
    #[test]
    fn seeded_schedules_keep_the_invariants() {
        const BROKERS: i32 = 5;
        let (mut completed, mut cancelled) = (0, 0);
        for seed in 0..300u64 {
            let mut rng = Rng(seed);
            let mut image = cluster(BROKERS, &[&[1, 2, 3], &[2, 3], &[4]]);
            let id = topic_id(&image);
            for step in 0..60 {
                let index = rng.below(3) as i32;
                let before = partition(&image, index);
                let pending_before = image.reassignment(&id, index).cloned();
                let mut requested = None;
                let records = match rng.below(5) {
                    0 | 1 => {
                        // A random target of 1..=4 distinct brokers (sometimes bad).
                        let mut all: Vec<i32> = (1..=BROKERS + 1).collect();
                        let len = 1 + rng.below(4);
                        let mut target = Vec::new();
                        for _ in 0..len {
                            target.push(all.swap_remove(rng.below(all.len())));
                        }
                        let (records, results) = alter_partition_reassignments(
                            &image,
                            &[req(index, Some(&target))],
                            true,
                        );
                        if target.contains(&(BROKERS + 1)) {
                            assert_eq!(codes(&results), vec![39], "seed {seed}");
                        }
                        requested = Some(target);
                        records
                    }
                    2 => {
                        let (records, results) =
                            alter_partition_reassignments(&image, &[req(index, None)], true);
                        let expected = if pending_before.is_some() {
                            [0, 39]
                        } else {
                            [85, 85]
                        };
                        assert!(expected.contains(&codes(&results)[0]), "seed {seed}");
                        records
                    }
                    3 => {
                        // A follower catches up: the leader adds it to the ISR.
                        let outside: Vec<i32> = before
                            .replicas
                            .iter()
                            .copied()
                            .filter(|r| !before.isr.contains(r))
                            .collect();
                        if outside.is_empty() || before.leader == NO_LEADER {
                            continue;
                        }
                        let mut isr = before.isr.clone();
                        isr.push(outside[rng.below(outside.len())]);
                        let mut next = before.clone();
                        next.isr = isr;
                        next.partition_epoch += 1;
                        let mut records = vec![partition_record(id, &next)];
                        records.extend(complete_reassignment(&image.apply(&records), id, index));
                        records
                    }
                    _ => {
                        // A follower falls behind: the leader drops it from the ISR.
                        let followers: Vec<i32> = before
                            .isr
                            .iter()
                            .copied()
                            .filter(|r| *r != before.leader)
                            .collect();
                        if followers.is_empty() {
                            continue;
                        }
                        let drop = followers[rng.below(followers.len())];
                        let mut next = before.clone();
                        next.isr.retain(|r| *r != drop);
                        next.partition_epoch += 1;
                        vec![partition_record(id, &next)]
                    }
                };
                image = image.apply(&records);
                let after = partition(&image, index);
                assert!(
                    after.leader_epoch >= before.leader_epoch,
                    "seed {seed} step {step}"
                );
                assert!(
                    after.partition_epoch >= before.partition_epoch,
                    "seed {seed} step {step}"
                );
                if let (Some(pending), None) = (&pending_before, image.reassignment(&id, index)) {
                    // Ended: completed (the target) or cancelled (the original).
                    if after.replicas == pending.original {
                        cancelled += 1;
                    } else {
                        completed += 1;
                    }
                    // A new target may also complete at once.
                    assert!(
                        after.replicas == pending.target
                            || after.replicas == pending.original
                            || Some(&after.replicas) == requested.as_ref(),
                        "seed {seed} step {step}: {after:?} after {pending:?}"
                    );
                }
                check_invariants(&image, seed, step);
            }
        }
        // The schedules reach both ends, or they test little.
        assert!(
            completed > 100 && cancelled > 100,
            "{completed} completed, {cancelled} cancelled"
        );
    }
}
