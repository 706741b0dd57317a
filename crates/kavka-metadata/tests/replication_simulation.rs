//! Seeded randomized simulation of the controller's replication decisions on a 3-5 broker
//! cluster: brokers are fenced and unfenced, leaders shrink and expand ISRs (sometimes from a
//! stale view), admins elect leaders and reassign partitions, and a tiny data model (each replica's log end offset,
//! the high watermark) checks that no committed record is lost when leadership moves.
//!
//! Every schedule is reproducible from its seed: a failure prints it, and
//! `KAVKA_SIM_SEED=<seed> cargo test -p kavka-metadata --test replication_simulation`
//! replays that one schedule (`KAVKA_SIM_SEEDS=<n>` runs seeds 0..n, for a longer soak).

use std::collections::BTreeMap;

use kavka_metadata::replication_control::{
    alter_partition, alter_partition_reassignments, complete_reassignment, complete_reassignments,
    elect_leaders, fence_broker, place_replicas, unfence_broker, AlterPartitionRequest,
    ElectionType, ReassignmentRequest, NO_LEADER,
};
use kavka_metadata::{MetadataImage, MetadataRecord, PartitionImage};
use uuid::Uuid;

const SEEDS: u64 = 400;
const STEPS: usize = 150;

/// SplitMix64: small, seedable, good enough to pick events.
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

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len())])
        }
    }
}

type Key = (Uuid, i32);

/// The data side the controller never sees: each replica's log end offset and the committed
/// offset (the highest high watermark ever reached) per partition.
#[derive(Default)]
struct Data {
    leo: BTreeMap<(Key, i32), i64>,
    committed: BTreeMap<Key, i64>,
}

impl Data {
    fn leo(&self, key: Key, broker: i32) -> i64 {
        self.leo.get(&(key, broker)).copied().unwrap_or(0)
    }

    /// The high watermark: the smallest log end offset in the ISR (only with a leader).
    fn advance_hw(&mut self, key: Key, p: &PartitionImage) {
        if p.leader == NO_LEADER {
            return;
        }
        let hw = p.isr.iter().map(|r| self.leo(key, *r)).min().unwrap_or(0);
        let c = self.committed.entry(key).or_insert(0);
        *c = (*c).max(hw);
    }
}

struct Sim {
    rng: Rng,
    unclean: bool,
    image: MetadataImage,
    /// An older image: leaders acting on a stale view.
    stale: MetadataImage,
    data: Data,
    log: Vec<String>,
    /// The partition whose ISR this step's AlterPartition changed.
    altered: Option<Key>,
    /// The reassignment target this step's request asked for.
    requested: Option<(Key, Vec<i32>)>,
}

fn keys(image: &MetadataImage) -> Vec<Key> {
    image
        .topics
        .values()
        .flat_map(|t| t.partitions.keys().map(move |i| (t.topic_id, *i)))
        .collect()
}

fn part(image: &MetadataImage, key: Key) -> Result<&PartitionImage, String> {
    image
        .partition(&key.0, key.1)
        .ok_or_else(|| format!("partition {key:?} vanished"))
}

impl Sim {
    fn new(seed: u64) -> Result<Sim, String> {
        let mut rng = Rng(seed);
        let brokers = 3 + rng.below(3) as i32;
        let unclean = rng.chance(50);
        let mut records: Vec<MetadataRecord> = (1..=brokers)
            .map(|node_id| MetadataRecord::RegisterBroker {
                node_id,
                host: "127.0.0.1".into(),
                port: 9000,
                rack: rng.chance(50).then(|| format!("r{}", node_id % 2)),
                incarnation: Uuid::nil(),
            })
            .collect();
        let mut image = MetadataImage::empty().apply(&records);
        records.clear();
        for t in 0..2u128 {
            let topic_id = Uuid::from_u128(seed as u128 * 16 + t + 1);
            let rf = 1 + rng.below(3.min(brokers as usize));
            let count = 1 + rng.below(4);
            let lists = place_replicas(&image, topic_id, 0, count, rf)
                .map_err(|e| format!("placement failed: {e}"))?;
            records.push(MetadataRecord::Topic {
                name: format!("t{t}"),
                topic_id,
            });
            for (i, replicas) in lists.into_iter().enumerate() {
                records.push(MetadataRecord::Partition {
                    topic_id,
                    partition: i as i32,
                    leader: replicas[0],
                    isr: replicas.clone(),
                    replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                });
            }
        }
        image = image.apply(&records);
        Ok(Sim {
            rng,
            unclean,
            stale: image.clone(),
            image,
            data: Data::default(),
            log: vec![format!("{brokers} brokers, unclean={unclean}")],
            altered: None,
            requested: None,
        })
    }

    fn step(&mut self) -> Result<(), String> {
        if self.rng.chance(10) {
            self.stale = self.image.clone();
        }
        let before = self.image.clone();
        let records = match self.rng.below(100) {
            0..=9 => self.fence(),
            10..=19 => self.unfence(),
            20..=49 => self.alter()?,
            50..=59 => self.elect()?,
            60..=65 => self.reassign()?,
            66..=68 => {
                let records = complete_reassignments(&self.image);
                self.log
                    .push(format!("complete reassignments: {} records", records.len()));
                records
            }
            _ => {
                self.replicate()?;
                Vec::new()
            }
        };
        self.commit(&before, &records)?;
        // As the controller does right after an AlterPartition commit (a second commit).
        if let Some(key) = self.altered.take() {
            let before = self.image.clone();
            let records = complete_reassignment(&self.image, key.0, key.1);
            self.commit(&before, &records)?;
        }
        self.requested = None;
        Ok(())
    }

    /// Applies one committed batch and checks the invariants across it.
    fn commit(&mut self, before: &MetadataImage, records: &[MetadataRecord]) -> Result<(), String> {
        self.image = self.image.apply(records);
        self.on_new_image(before)?;
        check(before, &self.image, self.unclean, self.requested.as_ref())
    }

    fn fence(&mut self) -> Vec<MetadataRecord> {
        let live: Vec<i32> = self.image.live_brokers().map(|b| b.node_id).collect();
        let Some(b) = self.rng.pick(&live) else {
            return Vec::new();
        };
        self.log.push(format!("fence {b}"));
        fence_broker(&self.image, b, self.unclean)
    }

    fn unfence(&mut self) -> Vec<MetadataRecord> {
        let fenced: Vec<i32> = self
            .image
            .brokers
            .values()
            .filter(|b| b.fenced)
            .map(|b| b.node_id)
            .collect();
        let Some(b) = self.rng.pick(&fenced) else {
            return Vec::new();
        };
        self.log.push(format!("unfence {b}"));
        unfence_broker(&self.image, b, self.unclean)
    }

    /// A leader (of the current or a stale view) proposes an ISR shrink or expansion.
    fn alter(&mut self) -> Result<Vec<MetadataRecord>, String> {
        let use_stale = self.rng.chance(25);
        let view = if use_stale { &self.stale } else { &self.image };
        let all = keys(view);
        let Some(key) = self.rng.pick(&all) else {
            return Ok(Vec::new());
        };
        let seen = part(view, key)?.clone();
        if seen.leader == NO_LEADER {
            return Ok(Vec::new());
        }
        let mut new_isr = seen.isr.clone();
        let hw = self.data.committed.get(&key).copied().unwrap_or(0);
        if self.rng.chance(50) {
            // Shrink: drop a follower (it fell behind or its fetches stopped).
            let followers: Vec<i32> = new_isr
                .iter()
                .copied()
                .filter(|r| *r != seen.leader)
                .collect();
            if let Some(f) = self.rng.pick(&followers) {
                new_isr.retain(|r| *r != f);
            }
        } else {
            // Expand: add a replica that caught up to the high watermark (a leader only
            // sees followers that fetch, so live ones; a stale view may be wrong).
            let candidates: Vec<i32> = seen
                .replicas
                .iter()
                .copied()
                .filter(|r| !new_isr.contains(r) && self.data.leo(key, *r) >= hw)
                .filter(|r| use_stale || self.image.is_live_broker(*r))
                .collect();
            if let Some(c) = self.rng.pick(&candidates) {
                new_isr.push(c);
            }
        }
        // Now and then a follower that wrongly believes it leads.
        let sender = match self.rng.chance(10) {
            true => self.rng.pick(&seen.replicas).unwrap_or(seen.leader),
            false => seen.leader,
        };
        let req = AlterPartitionRequest {
            broker_id: sender,
            topic_id: key.0,
            partition: key.1,
            leader_epoch: seen.leader_epoch,
            partition_epoch: seen.partition_epoch,
            new_isr: new_isr.clone(),
        };
        let current = part(&self.image, key)?.clone();
        let result = alter_partition(&self.image, &req);
        self.log.push(format!(
            "alter {key:?} by {sender} isr {new_isr:?} (stale={use_stale}) -> {:?}",
            result.as_ref().map(|(r, _)| r.len())
        ));
        let fresh = seen == current && sender == current.leader;
        let all_live = new_isr.iter().all(|r| self.image.is_live_broker(*r));
        match result {
            Ok((records, state)) => {
                if !fresh {
                    return Err(format!(
                        "stale request accepted from {sender}: saw {seen:?}, now {current:?}"
                    ));
                }
                if state.isr != new_isr || state.leader != current.leader {
                    return Err(format!("accepted ISR not applied: {state:?}"));
                }
                if records.is_empty() != (new_isr == current.isr) {
                    return Err("records present iff the ISR changed".into());
                }
                self.altered = Some(key);
                Ok(records)
            }
            Err(e) if fresh && all_live => Err(format!("fresh valid request refused: {e}")),
            Err(_) => Ok(Vec::new()),
        }
    }

    fn elect(&mut self) -> Result<Vec<MetadataRecord>, String> {
        let election = if self.unclean && self.rng.chance(30) {
            ElectionType::Unclean
        } else {
            ElectionType::Preferred
        };
        let (records, results) = if self.rng.chance(50) {
            elect_leaders(&self.image, election, None)
        } else {
            let names: Vec<(String, i32)> = self
                .image
                .topics
                .values()
                .flat_map(|t| t.partitions.keys().map(|i| (t.name.clone(), *i)))
                .filter(|_| self.rng.chance(50))
                .collect();
            elect_leaders(&self.image, election, Some(&names))
        };
        let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
        self.log.push(format!("elect {election:?}: {ok} elected"));
        if ok != records.len() {
            return Err(format!("{ok} elected but {} records", records.len()));
        }
        Ok(records)
    }

    /// An admin starts, replaces or cancels a reassignment (sometimes changing the
    /// replication factor).
    fn reassign(&mut self) -> Result<Vec<MetadataRecord>, String> {
        let all = keys(&self.image);
        let Some(key) = self.rng.pick(&all) else {
            return Ok(Vec::new());
        };
        let topic = self
            .image
            .topic_by_id(&key.0)
            .map(|t| t.name.clone())
            .ok_or("topic vanished")?;
        let current = part(&self.image, key)?.clone();
        let mut brokers: Vec<i32> = self.image.brokers.keys().copied().collect();
        let allow_rf_change = self.rng.chance(20);
        let target = if self.rng.chance(25) {
            None
        } else {
            // Fisher-Yates, then the first rf brokers.
            for i in (1..brokers.len()).rev() {
                let j = self.rng.below(i + 1);
                brokers.swap(i, j);
            }
            let mut rf = current.replicas.len();
            if allow_rf_change {
                rf = 1 + self.rng.below(brokers.len());
            }
            brokers.truncate(rf);
            Some(brokers)
        };
        let request = ReassignmentRequest {
            topic,
            partition: key.1,
            target: target.clone(),
        };
        let (records, results) =
            alter_partition_reassignments(&self.image, &[request], allow_rf_change);
        self.log.push(format!(
            "reassign {key:?} {:?} -> {target:?}: {:?}",
            current.replicas,
            results
                .iter()
                .map(|r| r.as_ref().map_err(|e| e.code()))
                .collect::<Vec<_>>()
        ));
        match results.as_slice() {
            [Ok(())] => {
                self.requested = target.map(|t| (key, t));
                Ok(records)
            }
            [Err(_)] if records.is_empty() => Ok(Vec::new()),
            _ => Err(format!(
                "one request, results {results:?}, {} records",
                records.len()
            )),
        }
    }

    /// Producers write to a leader; live followers fetch from it.
    fn replicate(&mut self) -> Result<(), String> {
        let all = keys(&self.image);
        let Some(key) = self.rng.pick(&all) else {
            return Ok(());
        };
        let p = part(&self.image, key)?.clone();
        if p.leader == NO_LEADER {
            return Ok(());
        }
        let leader_leo = self.data.leo(key, p.leader);
        if self.rng.chance(50) {
            let n = 1 + self.rng.below(5) as i64;
            self.data.leo.insert((key, p.leader), leader_leo + n);
        } else {
            let followers: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| *r != p.leader && self.image.is_live_broker(*r))
                .collect();
            if let Some(f) = self.rng.pick(&followers) {
                // A fetch truncates a diverged follower and brings it up to the leader.
                self.data.leo.insert((key, f), leader_leo);
            }
        }
        self.data.advance_hw(key, &p);
        Ok(())
    }

    /// Data consequences of a metadata change: a new leader's log is the truth; others
    /// truncate to it when they next fetch (modelled at once).
    fn on_new_image(&mut self, before: &MetadataImage) -> Result<(), String> {
        for key in keys(&self.image) {
            let new = part(&self.image, key)?.clone();
            let old = part(before, key)?;
            if new.leader != old.leader && new.leader != NO_LEADER {
                let committed = self.data.committed.get(&key).copied().unwrap_or(0);
                let leo = self.data.leo(key, new.leader);
                if !self.unclean && leo < committed {
                    return Err(format!(
                        "committed data lost: new leader {} of {key:?} has {leo} < committed {committed}",
                        new.leader
                    ));
                }
                if self.unclean && leo < committed {
                    // Unclean election: the log restarts from what the new leader has.
                    self.data.committed.insert(key, leo);
                }
                for r in &new.replicas {
                    let l = self.data.leo(key, *r);
                    self.data.leo.insert((key, *r), l.min(leo));
                }
            }
            self.data.advance_hw(key, &new);
        }
        Ok(())
    }
}

/// The invariants after every step.
fn check(
    before: &MetadataImage,
    after: &MetadataImage,
    unclean: bool,
    requested: Option<&(Key, Vec<i32>)>,
) -> Result<(), String> {
    for key in keys(after) {
        let new = part(after, key)?;
        let old = part(before, key)?;
        if new.isr.is_empty() {
            return Err(format!("empty ISR: {new:?}"));
        }
        if !new.isr.iter().all(|r| new.replicas.contains(r)) {
            return Err(format!("ISR not within replicas: {new:?}"));
        }
        let mut sorted = new.isr.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != new.isr.len() {
            return Err(format!("duplicate ISR member: {new:?}"));
        }
        if new.isr.len() > 1 && !new.isr.iter().all(|r| after.is_live_broker(*r)) {
            return Err(format!("a fenced broker stays in a shared ISR: {new:?}"));
        }
        if new.leader != NO_LEADER {
            if !new.isr.contains(&new.leader) {
                return Err(format!("leader outside the ISR: {new:?}"));
            }
            if !after.is_live_broker(new.leader) {
                return Err(format!("fenced leader: {new:?}"));
            }
        } else if new.isr.iter().any(|r| after.is_live_broker(*r)) {
            return Err(format!("offline with a live ISR member: {new:?}"));
        }
        if new.leader_epoch < old.leader_epoch || new.partition_epoch < old.partition_epoch {
            return Err(format!("epoch went back: {old:?} -> {new:?}"));
        }
        if new != old && new.partition_epoch == old.partition_epoch {
            return Err(format!(
                "change without a partition epoch bump: {old:?} -> {new:?}"
            ));
        }
        if let Some(pending) = after.reassignment(&key.0, key.1) {
            if !pending.target.iter().all(|r| new.replicas.contains(r)) {
                return Err(format!("reassignment target {pending:?} outside {new:?}"));
            }
        } else if let Some(pending) = before.reassignment(&key.0, key.1) {
            let replaced = requested.is_some_and(|(k, t)| *k == key && *t == new.replicas);
            if new.replicas != pending.target && new.replicas != pending.original && !replaced {
                return Err(format!("reassignment {pending:?} ended with {new:?}"));
            }
            let completed = new.replicas != pending.original;
            if completed && !new.replicas.iter().all(|r| new.isr.contains(r)) {
                return Err(format!(
                    "reassignment {pending:?} completed out of sync: {new:?}"
                ));
            }
        }
        if new.leader != old.leader {
            if new.leader_epoch == old.leader_epoch {
                return Err(format!("new leader, same epoch: {old:?} -> {new:?}"));
            }
            if !unclean && new.leader != NO_LEADER && !old.isr.contains(&new.leader) {
                return Err(format!(
                    "clean election outside the ISR: {old:?} -> {new:?}"
                ));
            }
        }
    }
    Ok(())
}

fn run(seed: u64) -> Result<(), String> {
    let mut sim = Sim::new(seed)?;
    for step in 0..STEPS {
        if let Err(e) = sim.step() {
            let tail = sim.log.len().saturating_sub(12);
            return Err(format!(
                "seed {seed}, step {step}: {e}\nlast events:\n  {}",
                sim.log[tail..].join("\n  ")
            ));
        }
    }
    Ok(())
}

#[test]
fn random_schedules_keep_the_replication_invariants() {
    let number = |var: &str| {
        std::env::var(var).ok().map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{var} must be a number"))
        })
    };
    let seeds: Vec<u64> = match (number("KAVKA_SIM_SEED"), number("KAVKA_SIM_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, count) => (0..count.unwrap_or(SEEDS)).collect(),
    };
    let failures: Vec<String> = seeds
        .into_iter()
        .filter_map(|s| run(s).err())
        .take(3)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn schedules_are_reproducible() {
    let trace = |seed| {
        let mut sim = Sim::new(seed).expect("sim");
        for _ in 0..50 {
            sim.step().expect("step");
        }
        (sim.image, sim.log)
    };
    assert_eq!(trace(7), trace(7));
}
