//! The partitions this broker hosts, kept in step with the metadata image.
//!
//! It is an [`ImageListener`]: when the controller commits a change (topic created, deleted,
//! partitions added, configs altered) the manager opens, deletes or reconfigures logs before
//! the controller call returns, so a client may produce right after CreateTopics.

use crate::config::BrokerConfig;
use crate::log_config::log_config_for_topic;
use crate::partition::Partition;
use crate::replication::fetcher::{FetcherManager, LeaderEndpoint};
use crate::replication::isr::replication_config_for_topic;
use kavka_metadata::{ImageListener, MetadataImage, PartitionImage, TopicImage};
use kavka_storage::Log;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::runtime::Handle;

/// (topic name, partition index)
pub type TopicPartition = (String, i32);

pub struct ReplicaManager {
    config: Arc<BrokerConfig>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    runtime: Handle,
    /// Copies the partitions this broker follows from their leaders.
    fetchers: Arc<FetcherManager>,
    /// Whether partitions take the roles the image gives them. A cluster broker starts with
    /// this off: its local image may be stale (it was down), so it neither leads nor follows
    /// until its first heartbeat has caught it up with the active controller.
    roles_ready: std::sync::atomic::AtomicBool,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ReplicaManager {
    pub fn new(config: Arc<BrokerConfig>, runtime: Handle) -> Arc<Self> {
        let fetchers = {
            let _entered = runtime.enter();
            FetcherManager::new(config.node_id, config.replication.clone())
        };
        let roles_ready = std::sync::atomic::AtomicBool::new(config.cluster.is_none());
        Arc::new(ReplicaManager {
            config,
            partitions: RwLock::new(HashMap::new()),
            runtime,
            fetchers,
            roles_ready,
        })
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let map = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        map.get(&(topic.to_string(), partition)).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        let map = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// Directory of a partition's log (DescribeLogDirs).
    /// The leader epoch at which this broker coordinates `topic`-`partition` (an internal
    /// topic's shard): the image names this broker leader and the partition has taken the
    /// role here. A broker catching up after a restart holds its partitions roleless
    /// (`roles_ready`) while its image may still name it leader.
    pub fn coordinated_epoch(
        &self,
        image: &MetadataImage,
        topic: &str,
        partition: i32,
    ) -> Option<i32> {
        image
            .topic(topic)?
            .partitions
            .get(&partition)
            .filter(|p| p.leader == self.config.node_id)
            .filter(|_| self.get(topic, partition).is_some_and(|p| p.is_leader()))
            .map(|p| p.leader_epoch)
    }

    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir_for(topic, partition)
    }

    /// Directory of a partition's log: `<log.dir>/<topic>-<partition>`, spread over log.dirs.
    fn dir_for(&self, topic: &str, partition: i32) -> PathBuf {
        let name = format!("{topic}-{partition}");
        // Reuse the directory that already holds it, if any.
        for d in &self.config.log_dirs {
            let p = d.join(&name);
            if p.exists() {
                return p;
            }
        }
        let dirs = &self.config.log_dirs;
        let idx = (fxhash(&name) as usize) % dirs.len().max(1);
        dirs[idx].join(name)
    }

    /// Opens (or creates) the log of every partition in `topic` that this broker hosts.
    /// Logs open in parallel: each open or create fsyncs a few files, and a topic may have
    /// thousands of partitions.
    fn open_topic(&self, topic: &TopicImage) {
        let node = self.config.node_id;
        let missing: Vec<i32> = {
            let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
            topic
                .partitions
                .iter()
                .filter(|(idx, p)| {
                    p.replicas.contains(&node) && !map.contains_key(&(topic.name.clone(), **idx))
                })
                .map(|(idx, _)| *idx)
                .collect()
        };
        let log_config = log_config_for_topic(&self.config, &topic.name, &topic.configs);
        par_for_each(missing, |idx| {
            let dir = self.dir_for(&topic.name, idx);
            if let Err(e) = write_partition_metadata(&dir, topic.topic_id) {
                tracing::error!("cannot prepare {}: {e}", dir.display());
                return;
            }
            match Log::open(&dir, log_config.clone(), now_ms()) {
                Ok(log) => {
                    let part = Partition::new(topic.name.clone(), topic.topic_id, idx, log);
                    self.runtime.spawn(part.clone().run_flusher());
                    self.partitions
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((topic.name.clone(), idx), part);
                }
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = idx, "cannot open log: {e}")
                }
            }
        });
    }

    fn remove_topic(&self, name: &str) {
        let removed: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<_> = map.keys().filter(|(t, _)| t == name).cloned().collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for p in removed {
            self.fetchers.remove_partition(&p.topic, p.index);
            if let Some(log) = p.take_log() {
                if let Err(e) = log.delete() {
                    tracing::warn!(topic = %p.topic, partition = p.index, "deleting log failed: {e}");
                }
            }
        }
    }

    /// Applies an image at startup or after a change.
    pub fn reconcile(&self, old: Option<&MetadataImage>, new: &MetadataImage) {
        // Replication throttles (KIP-73) follow the dynamic configs in the image.
        self.fetchers.quotas().update(new, now_ms());
        if let Some(old) = old {
            for (name, t) in &old.topics {
                match new.topics.get(name) {
                    Some(n) if n.topic_id == t.topic_id => {}
                    _ => self.remove_topic(name),
                }
            }
        }
        let brokers_changed = old.is_none_or(|o| o.brokers != new.brokers);
        for (name, t) in &new.topics {
            let old_topic = old
                .and_then(|o| o.topics.get(name))
                .filter(|o| o.topic_id == t.topic_id);
            let configs_changed = old_topic.is_none_or(|o| o.configs != t.configs);
            self.drop_reassigned_away(t);
            let opened_before: Vec<i32> = self.hosted_indexes(name);
            self.open_topic(t);
            for (index, image) in &t.partitions {
                let Some(p) = self.get(name, *index) else {
                    continue;
                };
                let unchanged = old_topic.and_then(|o| o.partitions.get(index)) == Some(image)
                    && opened_before.contains(index)
                    && !brokers_changed
                    && !configs_changed;
                if !unchanged {
                    self.apply_role(&p, image, t, new);
                }
            }
            let changed = old
                .and_then(|o| o.topics.get(name))
                .map(|o| o.configs != t.configs)
                .unwrap_or(false);
            if changed {
                let cfg = log_config_for_topic(&self.config, name, &t.configs);
                for p in self.all().into_iter().filter(|p| &p.topic == name) {
                    p.update_config(cfg.clone());
                }
            }
        }
    }

    /// Leader or follower, as the image says: a leader takes produce and serves followers; a
    /// follower fetches from its leader (and truncates first when the leader changed).
    fn apply_role(
        &self,
        p: &Arc<Partition>,
        image: &PartitionImage,
        topic: &TopicImage,
        metadata: &MetadataImage,
    ) {
        let node = self.config.node_id;
        if !self.roles_ready.load(std::sync::atomic::Ordering::Acquire) {
            // Neither lead nor follow on a possibly stale image (see `roles_ready`).
            self.fetchers.remove_partition(&p.topic, p.index);
            p.become_follower(&PartitionImage {
                leader: -1,
                ..image.clone()
            });
            return;
        }
        if image.leader == node {
            self.fetchers.remove_partition(&p.topic, p.index);
            let cfg = replication_config_for_topic(&self.config, &topic.configs);
            p.become_leader(image, cfg, now_ms());
            return;
        }
        p.become_follower(image);
        match metadata.brokers.get(&image.leader) {
            Some(leader) if image.leader >= 0 => {
                let endpoint = LeaderEndpoint {
                    node_id: leader.node_id,
                    host: leader.host.clone(),
                    port: leader.port,
                };
                self.fetchers
                    .add_partition(p.clone(), endpoint, image.leader_epoch);
            }
            // No leader (offline) or an unknown one: wait for the next image.
            _ => self.fetchers.remove_partition(&p.topic, p.index),
        }
    }

    /// Lets partitions take their roles from `image` (a cluster broker, once caught up with
    /// the active controller). Blocking.
    pub fn enable_roles(&self, image: &MetadataImage) {
        if self
            .roles_ready
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        for (name, t) in &image.topics {
            for (index, p) in &t.partitions {
                if let Some(part) = self.get(name, *index) {
                    self.apply_role(&part, p, t, image);
                }
            }
        }
    }

    fn hosted_indexes(&self, topic: &str) -> Vec<i32> {
        let map = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        map.keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, i)| *i)
            .collect()
    }

    /// Deletes the local replicas of `topic` this broker is no longer assigned (reassignment).
    fn drop_reassigned_away(&self, topic: &TopicImage) {
        let node = self.config.node_id;
        let removed: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<TopicPartition> = map
                .iter()
                .filter(|((t, i), p)| {
                    t == &topic.name
                        && p.topic_id == topic.topic_id
                        && topic
                            .partitions
                            .get(i)
                            .is_some_and(|img| !img.replicas.contains(&node))
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for p in removed {
            tracing::info!(topic = %p.topic, partition = p.index, "replica moved away: deleting it");
            self.fetchers.remove_partition(&p.topic, p.index);
            if let Some(log) = p.take_log() {
                if let Err(e) = log.delete() {
                    tracing::warn!(topic = %p.topic, partition = p.index, "deleting log failed: {e}");
                }
            }
        }
    }

    /// The follower fetchers (for shutdown and operations).
    pub fn fetchers(&self) -> &Arc<FetcherManager> {
        &self.fetchers
    }

    /// Runs retention, time-based roll and time-based flush for every partition. Blocking.
    pub fn housekeeping(&self) {
        let now = now_ms();
        for p in self.all() {
            match p.housekeeping(now) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(topic = %p.topic, partition = p.index, "retention deleted {n} segment(s)")
                }
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, "housekeeping failed: {e}")
                }
            }
        }
    }

    /// Closes every log cleanly (flush, checkpoints, clean-shutdown marker).
    pub fn shutdown(&self) {
        self.fetchers.shutdown();
        let all: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, p)| p).collect()
        };
        par_for_each(all, |p| {
            if let Some(log) = p.take_log() {
                if let Err(e) = log.close() {
                    tracing::warn!(topic = %p.topic, partition = p.index, "close failed: {e}");
                }
            }
        });
    }
}

impl ImageListener for ReplicaManager {
    fn on_image(&self, old: &MetadataImage, new: &MetadataImage) {
        self.reconcile(Some(old), new);
    }
}

/// Kafka writes `partition.metadata` with the topic id, so a directory left over from a
/// deleted topic is never mistaken for a new topic of the same name.
fn write_partition_metadata(dir: &std::path::Path, topic_id: uuid::Uuid) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("partition.metadata");
    let body = format!(
        "version: 0\ntopic_id: {}\n",
        kavka_metadata::uuid_to_kafka_string(topic_id)
    );
    if std::fs::read_to_string(&path)
        .map(|s| s == body)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let tmp = dir.join("partition.metadata.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, path)
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl ReplicaManager {
    /// Asks the flusher of every partition whose flush.ms has elapsed to fsync.
    pub fn flush_due_partitions(&self) {
        let now = now_ms();
        for p in self.all() {
            p.flush_if_due(now);
        }
    }
}

/// Threads used for per-partition work that is bound by fsync latency, not CPU.
const IO_PARALLELISM: usize = 16;

/// Runs `f` over `items` on up to [`IO_PARALLELISM`] scoped threads.
fn par_for_each<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync) {
    if items.len() <= 1 {
        items.into_iter().for_each(f);
        return;
    }
    let threads = IO_PARALLELISM.min(items.len());
    let mut buckets: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        buckets[i % threads].push(item);
    }
    let f = &f;
    std::thread::scope(|scope| {
        for bucket in buckets {
            scope.spawn(move || bucket.into_iter().for_each(f));
        }
    });
}
