//! Where new partitions' replicas go: striped over the live brokers, rack-aware (Kafka's
//! rack-alternated assignment, deterministic per topic).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::error::ControllerError;
use crate::image::MetadataImage;

/// Replica lists for partitions `first_partition .. first_partition + count` of `topic_id`,
/// each `rf` distinct live (unfenced) brokers long; the first replica is the preferred
/// leader.
///
/// Brokers are arranged rack by rack in turn (racks sorted, brokers without a rack form one
/// group), so consecutive brokers of the arrangement sit on different racks. Partition `p`'s
/// leader is the arrangement's broker `(p + start) % n`, which spreads leaders evenly; its
/// followers are taken at a shift that changes every `n` partitions, skipping a broker whose
/// rack already holds a replica while some rack holds none. `start` comes from the topic id,
/// so topics begin on different brokers, and the same inputs always give the same lists.
///
/// INVALID_REPLICATION_FACTOR when `rf` is 0 or more than the live brokers.
pub fn place_replicas(
    image: &MetadataImage,
    topic_id: Uuid,
    first_partition: i32,
    count: usize,
    rf: usize,
) -> Result<Vec<Vec<i32>>, ControllerError> {
    let (brokers, racks) = rack_alternated_brokers(image);
    let n = brokers.len();
    if rf == 0 {
        return Err(ControllerError::InvalidReplicationFactor(
            "Replication factor must be larger than 0.".into(),
        ));
    }
    if rf > n {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {n} broker(s) are registered."
        )));
    }
    let num_racks = distinct(&racks);
    let start = (topic_id.as_u128() % n as u128) as usize;
    let first = usize::try_from(first_partition).unwrap_or(0);
    let lists = (first..first.saturating_add(count))
        .map(|p| {
            let first_index = (p % n + start) % n;
            let shift = start + p / n;
            partition_replicas(&brokers, &racks, num_racks, first_index, shift, rf)
        })
        .collect();
    Ok(lists)
}

/// One partition's replicas (Kafka's assignReplicasToBrokersRackAware inner loop).
fn partition_replicas(
    brokers: &[i32],
    racks: &[Option<&str>],
    num_racks: usize,
    first_index: usize,
    shift: usize,
    rf: usize,
) -> Vec<i32> {
    let n = brokers.len();
    let mut replicas = Vec::with_capacity(rf);
    let mut used_racks = Vec::with_capacity(rf);
    replicas.push(brokers[first_index]);
    used_racks.push(racks[first_index]);
    if rf == 1 {
        return replicas;
    }
    // n >= rf >= 2 here, so the modulus below is positive.
    let m = n - 1;
    let rack_shift = (shift % m) * (num_racks % m) % m;
    // Each follower is found within n - 1 candidates; the bound only guards the proof.
    let mut k = 0usize;
    while replicas.len() < rf && k < rf.saturating_mul(n) {
        let index = (first_index + 1 + (rack_shift + k) % m) % n;
        let (broker, rack) = (brokers[index], racks[index]);
        let rack_ok = !used_racks.contains(&rack) || distinct(&used_racks) == num_racks;
        if rack_ok && !replicas.contains(&broker) {
            replicas.push(broker);
            used_racks.push(rack);
        }
        k += 1;
    }
    debug_assert_eq!(replicas.len(), rf, "placement did not converge");
    replicas
}

fn distinct(racks: &[Option<&str>]) -> usize {
    racks.iter().collect::<BTreeSet<_>>().len()
}

/// The live brokers arranged rack by rack in turn, with each one's rack.
fn rack_alternated_brokers(image: &MetadataImage) -> (Vec<i32>, Vec<Option<&str>>) {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in image.live_brokers() {
        by_rack
            .entry(b.rack.as_deref())
            .or_default()
            .push(b.node_id);
    }
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut brokers = Vec::new();
    let mut racks = Vec::new();
    for i in 0..longest {
        for (rack, ids) in &by_rack {
            if let Some(id) = ids.get(i) {
                brokers.push(*id);
                racks.push(*rack);
            }
        }
    }
    (brokers, racks)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::record::MetadataRecord;

    fn brokers(racks: &[(i32, Option<&str>)]) -> MetadataImage {
        let records: Vec<MetadataRecord> = racks
            .iter()
            .map(|(id, rack)| MetadataRecord::RegisterBroker {
                node_id: *id,
                host: "h".into(),
                port: 1,
                rack: rack.map(str::to_owned),
                incarnation: Uuid::nil(),
            })
            .collect();
        MetadataImage::empty().apply(&records)
    }

    fn code(r: Result<Vec<Vec<i32>>, ControllerError>) -> i16 {
        r.map_or_else(|e| e.code(), |_| 0)
    }

    #[test]
    fn single_broker_matches_the_single_node_placement() {
        let image = brokers(&[(1, None)]);
        for id in [0u128, 1, 7, u128::MAX] {
            let lists = place_replicas(&image, Uuid::from_u128(id), 0, 3, 1).expect("placed");
            assert_eq!(lists, vec![vec![1], vec![1], vec![1]]);
        }
        assert_eq!(
            place_replicas(&image, Uuid::from_u128(3), 5, 2, 1).expect("placed"),
            vec![vec![1], vec![1]]
        );
    }

    #[test]
    fn rf_1_without_racks_is_round_robin_from_the_topic_start() {
        let image = brokers(&[(1, None), (2, None), (3, None)]);
        // start = 4 % 3 = 1: the old placer's brokers[(start + first + p) % n].
        let lists = place_replicas(&image, Uuid::from_u128(4), 2, 4, 1).expect("placed");
        assert_eq!(lists, vec![vec![1], vec![2], vec![3], vec![1]]);
    }

    #[test]
    fn too_few_live_brokers_is_an_invalid_replication_factor() {
        let image = brokers(&[(1, None), (2, None), (3, None)]);
        let image = image.apply(&[MetadataRecord::FenceBroker { node_id: 3 }]);
        assert_eq!(code(place_replicas(&image, Uuid::nil(), 0, 1, 3)), 38);
        assert_eq!(code(place_replicas(&image, Uuid::nil(), 0, 1, 0)), 38);
        assert_eq!(
            code(place_replicas(
                &MetadataImage::empty(),
                Uuid::nil(),
                0,
                1,
                1
            )),
            38
        );
        let Err(e) = place_replicas(&image, Uuid::nil(), 0, 1, 3) else {
            panic!("placed on a fenced broker");
        };
        assert!(e.to_string().contains("only 2 broker(s)"), "{e}");
        let lists = place_replicas(&image, Uuid::nil(), 0, 6, 2).expect("placed");
        assert!(lists.iter().flatten().all(|b| *b != 3), "{lists:?}");
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread_evenly() {
        let image = brokers(&[(1, None), (2, None), (3, None), (4, None), (5, None)]);
        for rf in 1..=5 {
            let lists = place_replicas(&image, Uuid::from_u128(11), 0, 50, rf).expect("placed");
            let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
            let mut replicas: BTreeMap<i32, usize> = BTreeMap::new();
            for l in &lists {
                assert_eq!(l.iter().collect::<HashSet<_>>().len(), rf, "{l:?}");
                *leaders.entry(l[0]).or_default() += 1;
                for b in l {
                    *replicas.entry(*b).or_default() += 1;
                }
            }
            assert!(leaders.values().all(|c| *c == 10), "rf {rf}: {leaders:?}");
            let (min, max) = (replicas.values().min(), replicas.values().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 5),
                "rf {rf}: {replicas:?}"
            );
        }
    }

    #[test]
    fn replicas_of_a_partition_span_racks() {
        let image = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let rack = |b: i32| image.brokers[&b].rack.clone();
        let lists = place_replicas(&image, Uuid::from_u128(5), 0, 60, 3).expect("placed");
        for l in &lists {
            let racks: HashSet<_> = l.iter().map(|b| rack(*b)).collect();
            assert_eq!(racks.len(), 3, "{l:?}");
        }
        // With two racks and rf 3, both racks hold a replica and no broker twice.
        let two = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
        ]);
        for l in place_replicas(&two, Uuid::from_u128(1), 0, 20, 3).expect("placed") {
            assert_eq!(l.iter().collect::<HashSet<_>>().len(), 3, "{l:?}");
            let racks: HashSet<_> = l.iter().map(|b| two.brokers[b].rack.clone()).collect();
            assert_eq!(racks.len(), 2, "{l:?}");
        }
    }

    /// Kafka's AdminRackAwareTest known answer (start index 0: a topic id divisible by 6).
    #[test]
    fn matches_kafkas_rack_aware_assignment() {
        let image = brokers(&[
            (0, Some("rack1")),
            (1, Some("rack3")),
            (2, Some("rack3")),
            (3, Some("rack2")),
            (4, Some("rack2")),
            (5, Some("rack1")),
        ]);
        assert_eq!(rack_alternated_brokers(&image).0, vec![0, 3, 1, 5, 4, 2]);
        let lists = place_replicas(&image, Uuid::from_u128(6), 0, 7, 3).expect("placed");
        let expected = [
            [0, 3, 1],
            [3, 1, 5],
            [1, 5, 4],
            [5, 4, 2],
            [4, 2, 0],
            [2, 0, 3],
            [0, 4, 2],
        ];
        assert_eq!(lists, expected.map(|l| l.to_vec()));
    }

    #[test]
    fn rack_alternated_arrangement() {
        let image = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, None),
            (5, Some("b")),
        ]);
        let (ids, _) = rack_alternated_brokers(&image);
        // Racks in order None, "a", "b"; one of each in turn.
        assert_eq!(ids, vec![4, 1, 3, 2, 5]);
    }

    #[test]
    fn same_inputs_same_lists_and_continuation_matches() {
        let image = brokers(&[(1, None), (2, None), (3, None), (4, None)]);
        let id = Uuid::from_u128(9);
        let all = place_replicas(&image, id, 0, 12, 3).expect("placed");
        assert_eq!(all, place_replicas(&image, id, 0, 12, 3).expect("placed"));
        // CreatePartitions continues exactly where creation would have gone.
        let tail = place_replicas(&image, id, 5, 7, 3).expect("placed");
        assert_eq!(&all[5..], tail.as_slice());
    }
}
