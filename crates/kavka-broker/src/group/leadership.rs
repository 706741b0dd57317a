//! The coordinator follows `__consumer_offsets` leadership, as Kafka's does (its
//! `onElection` / `onResignation`): this broker coordinates a partition's groups iff the
//! metadata image names it the partition's leader.
//!
//! - Elected: the shard is marked loading (requests hear COORDINATOR_LOAD_IN_PROGRESS) and
//!   replayed from the log on a blocking thread; listeners run under the controller's
//!   publish lock, so nothing is read inline.
//! - Resigned: the shard's groups are dropped (parked joins and syncs hear
//!   NOT_COORDINATOR, as do later requests); the new leader replays them from its replica.
//! - Every election and resignation moves the shard's epoch, so a replay that finishes
//!   after leadership moved on is discarded instead of installing stale groups.
//! - A newer leader epoch naming this broker again means leadership went away and came
//!   back between two images: the shard is resigned and replayed afresh.

use super::*;
use kavka_metadata::{ImageListener, MetadataImage};

/// A resigned shard's groups: parked joins and syncs hear NOT_COORDINATOR.
fn unload(groups: HashMap<String, Group>) {
    for (_, mut group) in groups {
        if let GroupKind::Classic(g) = &mut group.kind {
            g.unload();
        }
    }
}

/// Where FindCoordinator sends a client: the leader of the key's partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorNode {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
}

/// Hands every committed metadata image to the coordinator. Holds it weakly: the
/// controller keeps its listeners for good, the coordinator holds the controller.
pub struct LeadershipListener(Weak<GroupCoordinator>);

impl ImageListener for LeadershipListener {
    fn on_image(&self, _old: &MetadataImage, new: &MetadataImage) {
        if let Some(coordinator) = self.0.upgrade() {
            coordinator.apply_leadership(new);
        }
    }
}

impl GroupCoordinator {
    /// Startup, instead of `init_existing` + `load_all`: subscribes to the controller's
    /// images and adopts the current one, replaying in the background every partition this
    /// broker leads. Subscribe the ReplicaManager first: listeners run in subscription
    /// order, and a replay needs the partition open and leading. Idempotent.
    pub fn follow_leadership(self: &Arc<Self>) {
        if self.me.set(Arc::downgrade(self)).is_err() {
            return;
        }
        self.controller
            .subscribe(Arc::new(LeadershipListener(Arc::downgrade(self))));
        self.apply_leadership(&self.controller.image());
    }

    pub(super) fn follows_leadership(&self) -> bool {
        self.me.get().is_some()
    }

    /// Adopts `image`'s leadership of the `__consumer_offsets` partitions (the image's
    /// leader is this broker and the partition has become leader here). Quick: replays run
    /// elsewhere. An image older than one already applied is ignored; the same image again
    /// is fine (call it after partitions took roles outside an image change, e.g.
    /// `ReplicaManager::enable_roles`).
    pub fn apply_leadership(&self, image: &MetadataImage) {
        if !self.follows_leadership() {
            return;
        }
        let mut applied = self.applied_image.lock().unwrap_or_else(|p| p.into_inner());
        if image.offset < *applied {
            return;
        }
        *applied = image.offset;
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            return;
        };
        let shards = self.init_shards(topic.partitions.len());
        if shards.len() != topic.partitions.len() {
            tracing::warn!(
                shards = shards.len(),
                partitions = topic.partitions.len(),
                "{OFFSETS_TOPIC} changed its partition count; groups stay where they hash"
            );
        }
        for (p, shard) in shards.iter().enumerate() {
            let p = p as i32;
            // Leader epochs move only with the leader: a new epoch naming this broker
            // again means leadership went elsewhere and came back between two images.
            // The partition must have taken the role too: a broker catching up after a
            // restart holds its partitions roleless (ReplicaManager's `roles_ready`) while
            // its image may still name it leader.
            let led_at = self.replicas.coordinated_epoch(image, OFFSETS_TOPIC, p);
            let mut s = lock(shard);
            let moved_meanwhile = led_at.is_some()
                && s.status != ShardStatus::NotCoordinator
                && s.leader_epoch.is_some_and(|e| Some(e) != led_at);
            if led_at.is_none() || moved_meanwhile {
                if s.status != ShardStatus::NotCoordinator {
                    s.epoch += 1;
                    s.status = ShardStatus::NotCoordinator;
                    s.leader_epoch = None;
                    let groups = std::mem::take(&mut s.groups);
                    let n = groups.len();
                    unload(groups);
                    tracing::info!(
                        partition = p,
                        groups = n,
                        "resigned as coordinator of {OFFSETS_TOPIC}-{p}"
                    );
                }
                if led_at.is_none() {
                    continue;
                }
            }
            s.leader_epoch = led_at;
            match s.status {
                ShardStatus::NotCoordinator => {
                    s.epoch += 1;
                    s.status = ShardStatus::Loading { claimed: false };
                    drop(s);
                    tracing::info!(partition = p, "elected coordinator of {OFFSETS_TOPIC}-{p}");
                    self.spawn_load(p);
                }
                // Pending since before leadership was followed (`init_existing`): replay
                // it now. Claiming arbitrates between replays, so a spare one is a no-op.
                ShardStatus::Loading { claimed: false } => {
                    drop(s);
                    self.spawn_load(p);
                }
                ShardStatus::Loading { claimed: true } | ShardStatus::Loaded => {}
            }
        }
    }

    /// Replays shard `p` on the blocking pool (or a thread of its own outside a runtime).
    fn spawn_load(&self, p: i32) {
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let run = move || {
            let started = std::time::Instant::now();
            if let Some(groups) = me.load_shard(p) {
                tracing::info!(
                    partition = p,
                    groups,
                    "loaded {OFFSETS_TOPIC}-{p} in {} ms",
                    started.elapsed().as_millis()
                );
            }
        };
        match &self.runtime {
            Some(rt) => {
                rt.spawn_blocking(run);
            }
            None => {
                std::thread::spawn(run);
            }
        }
    }

    /// FindCoordinator for a group: the leader of its `__consumer_offsets` partition
    /// (creating the topic on first use). Blocking (the creation goes through the
    /// controller). COORDINATOR_NOT_AVAILABLE while the partition has no live leader.
    pub fn coordinator_for(&self, group_id: &str) -> Result<CoordinatorNode, ErrorCode> {
        self.ensure_ready()?;
        coordinator_in(&self.controller.image(), group_id)
    }
}

/// The leader of `group_id`'s `__consumer_offsets` partition in `image`, if it has a
/// live one.
pub(super) fn coordinator_in(
    image: &MetadataImage,
    group_id: &str,
) -> Result<CoordinatorNode, ErrorCode> {
    let topic = image
        .topic(OFFSETS_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let partitions = i32::try_from(topic.partitions.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let leader = topic
        .partitions
        .get(&partition_for(group_id, partitions))
        .map(|p| p.leader)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .map(|b| CoordinatorNode {
            node_id: b.node_id,
            host: b.host.clone(),
            port: b.port,
        })
        .ok_or(ErrorCode::CoordinatorNotAvailable)
}
