//! The controller: the only writer of the metadata log (Kafka's QuorumController with its
//! ReplicationControlManager and ConfigurationControlManager, for a single node).
//!
//! Each operation validates against the current image, turns the change into records,
//! appends them as one atomic batch (durable before it returns), swaps in the new image and
//! tells the listeners, all before the method returns: a client that created a topic can
//! produce to it at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

mod forward;
mod observer;
mod quorum;
mod reassignment;

pub use forward::{ControllerOp, ControllerReply};
pub use observer::ObserverOptions;
pub use quorum::QuorumOptions;

use crate::error::ControllerError;
use crate::image::{MetadataImage, TopicImage};
use crate::log::{FileMetadataLog, MetadataLog};
use crate::record::{ConfigResource, MetadataRecord, CLUSTER_DEFAULT_BROKER};
use crate::topic_config::{
    is_list_config, split_list, topic_config_def, validate_dynamic_broker_config,
    validate_topic_configs,
};
use crate::topic_name;
use crate::uuid_string::{random_uuid, uuid_to_kafka_string};

/// Kafka's bound on the partitions one request may create (ReplicationControlManager's
/// MAX_PARTITIONS_PER_BATCH); it also keeps one log batch far inside the frame limit.
pub const MAX_PARTITIONS_PER_BATCH: usize = 10_000;

/// Notified of every committed change.
///
/// Called synchronously on the committing thread, in commit order, while the controller's
/// write lock is held: a listener may read [`Controller::image`] but must not call a
/// controller method that writes (that would deadlock). Listeners are not replayed the
/// existing state on [`Controller::subscribe`]; read [`Controller::image`] after subscribing.
pub trait ImageListener: Send + Sync {
    fn on_image(&self, old: &MetadataImage, new: &MetadataImage);
}

/// Tuning knobs of the controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Write a snapshot (and drop the log before it) once this many records follow the last.
    pub snapshot_after_records: u64,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            snapshot_after_records: 10_000,
        }
    }
}

/// One topic of a CreateTopics request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTopicSpec {
    pub name: String,
    /// -1 = the broker default (num.partitions).
    pub num_partitions: i32,
    /// -1 = the broker default (default.replication.factor).
    pub replication_factor: i16,
    /// Manual assignment `(partition index, replica broker ids)`; when given, both counts
    /// above must be -1.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: BTreeMap<String, String>,
}

/// Broker defaults for topics created without explicit counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
}

/// A topic named by a DeleteTopics request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// An IncrementalAlterConfigs operation (AlterConfigs is [`Controller::replace_configs`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigOp {
    Set(String),
    Delete,
    /// Add list items not present yet (LIST configs only).
    Append(String),
    /// Remove list items (LIST configs only).
    Subtract(String),
}

/// One config change of an IncrementalAlterConfigs request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub resource: ConfigResource,
    pub name: String,
    pub op: ConfigOp,
}

/// The controller: over a local file log on a single node, or as a member of the Raft
/// metadata quorum in a cluster. Cheap to share behind an `Arc`.
pub struct Controller {
    node_id: i32,
    options: ControllerOptions,
    backend: Backend,
    image: RwLock<Arc<MetadataImage>>,
    listeners: RwLock<Vec<Arc<dyn ImageListener>>>,
    /// Orders image publication (a commit here, or the quorum's applied entries) with
    /// subscriptions, so every listener sees every image change once and in order.
    publish_lock: Mutex<()>,
}

/// Where committed records go.
enum Backend {
    /// The single-node file log; its lock serializes writers from validation through
    /// listener notification.
    Local(Mutex<Box<dyn MetadataLog>>),
    /// A member of the Raft metadata quorum (cluster mode).
    Quorum(Box<quorum::Quorum>),
    /// A broker-only node: pulls the image, forwards every write.
    Observer(Box<observer::Observer>),
}

/// Held by a writer from validation to commit.
enum WriteGuard<'a> {
    Local(MutexGuard<'a, Box<dyn MetadataLog>>),
    /// Held, never read: it keeps other writers out.
    Quorum {
        _held: MutexGuard<'a, ()>,
    },
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let image = self.image();
        f.debug_struct("Controller")
            .field("node_id", &self.node_id)
            .field("cluster_id", &image.cluster_id)
            .field("offset", &image.offset)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Opens the file-backed metadata log under `dir` and restores the image from it. A new
    /// log gets a cluster id: `cluster_id_hint` if given, else a fresh random one. An existing
    /// log whose cluster id differs from the hint is refused (INCONSISTENT_CLUSTER_ID).
    pub fn open(
        dir: &Path,
        node_id: i32,
        cluster_id_hint: Option<String>,
    ) -> Result<Controller, ControllerError> {
        Self::open_with_options(dir, node_id, cluster_id_hint, ControllerOptions::default())
    }

    /// [`Controller::open`] with explicit options.
    pub fn open_with_options(
        dir: &Path,
        node_id: i32,
        cluster_id_hint: Option<String>,
        options: ControllerOptions,
    ) -> Result<Controller, ControllerError> {
        let (log, records) = FileMetadataLog::open(dir)?;
        Self::from_log(Box::new(log), &records, node_id, cluster_id_hint, options)
    }

    /// A controller over any [`MetadataLog`] whose committed `records` were already replayed.
    pub fn from_log(
        log: Box<dyn MetadataLog>,
        records: &[MetadataRecord],
        node_id: i32,
        cluster_id_hint: Option<String>,
        options: ControllerOptions,
    ) -> Result<Controller, ControllerError> {
        let mut image = MetadataImage::empty().apply(records);
        image.offset = log.end_offset() - 1;
        let controller = Controller {
            node_id,
            options,
            backend: Backend::Local(Mutex::new(log)),
            image: RwLock::new(Arc::new(image)),
            listeners: RwLock::new(Vec::new()),
            publish_lock: Mutex::new(()),
        };
        let stored = controller.image().cluster_id.clone();
        match cluster_id_hint.filter(|h| !h.is_empty()) {
            Some(hint) if !stored.is_empty() && hint != stored => {
                return Err(ControllerError::InconsistentClusterId(format!(
                    "The metadata log belongs to cluster {stored}, not {hint}"
                )));
            }
            hint if stored.is_empty() => {
                let cluster_id = hint.unwrap_or_else(|| uuid_to_kafka_string(random_uuid()));
                info!(%cluster_id, "formatting a new cluster");
                let mut log = controller.lock_log()?;
                controller.commit(&mut log, vec![MetadataRecord::ClusterId { cluster_id }])?;
            }
            _ => {}
        }
        Ok(controller)
    }

    /// This node's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The current image. Cheap: a read lock and an `Arc` clone.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The cluster id (Kafka-style 22-character base64url).
    pub fn cluster_id(&self) -> String {
        self.image().cluster_id.clone()
    }

    /// Adds a listener called after every later committed change.
    pub fn subscribe(&self, listener: Arc<dyn ImageListener>) {
        // The publish lock orders the subscription with respect to image changes.
        let _published = self
            .publish_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    /// Registers (or re-registers) a broker's endpoint and unfences it; notes the heartbeat
    /// for session expiry. Writes nothing when the broker is registered as given and live.
    ///
    /// `incarnation` identifies the broker process; a new one on a live broker means it
    /// restarted, and it is fenced (leaderships moved, out of the ISRs it can leave) before it
    /// is registered again, so a replica that may have lost its unflushed tail never leads on
    /// its old epoch. `None` (tests, a single node) skips that check.
    fn broker_heartbeat_here(
        &self,
        node_id: i32,
        host: String,
        port: u16,
        rack: Option<String>,
        incarnation: Option<Uuid>,
    ) -> Result<(), ControllerError> {
        if node_id < 0 {
            return Err(ControllerError::InvalidRequest(format!(
                "Invalid broker id {node_id}"
            )));
        }
        if let Some(q) = self.quorum() {
            q.heartbeat(node_id);
        }
        let registered_as_given = |image: &MetadataImage| {
            image.brokers.get(&node_id).is_some_and(|b| {
                b.host == host
                    && b.port == port
                    && b.rack == rack
                    && !b.fenced
                    && incarnation.is_none_or(|i| i == b.incarnation)
            })
        };
        // Most heartbeats change nothing: answer them without taking the writers' lock.
        if registered_as_given(&self.image()) {
            return Ok(());
        }
        let mut log = self.lock_log()?;
        let image = self.image();
        if registered_as_given(&image) {
            return Ok(());
        }
        let mut records = Vec::new();
        let known = image.brokers.get(&node_id);
        let restarted = known.is_some_and(|b| incarnation.is_some_and(|i| i != b.incarnation));
        if restarted && image.is_live_broker(node_id) {
            info!(
                node_id,
                "broker restarted: fencing its previous incarnation"
            );
            records.extend(crate::replication_control::fence_broker(
                &image,
                node_id,
                self.unclean_default(),
            ));
        }
        if restarted || known.is_none_or(|b| b.host != host || b.port != port || b.rack != rack) {
            info!(node_id, %host, port, "registering broker");
            records.push(MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
                incarnation: incarnation.unwrap_or_else(random_uuid),
            });
        }
        // A registration unfences; the broker is elected where it is the only way back.
        let registered = image.apply(&records);
        if known.is_some_and(|b| b.fenced) {
            info!(node_id, "unfencing broker");
        }
        records.extend(crate::replication_control::unfence_broker(
            &registered,
            node_id,
            self.unclean_default(),
        ));
        self.commit(&mut log, records)?;
        Ok(())
    }

    fn unclean_default(&self) -> bool {
        self.quorum().is_some_and(|q| q.unclean_leader_election())
    }

    /// Fences `node_id`: it leaves every ISR it can leave, and its partitions get new leaders.
    fn fence_broker_here(&self, node_id: i32) -> Result<(), ControllerError> {
        let mut log = self.lock_log()?;
        let image = self.image();
        if !image.is_live_broker(node_id) {
            return Ok(());
        }
        let records =
            crate::replication_control::fence_broker(&image, node_id, self.unclean_default());
        self.commit(&mut log, records)?;
        Ok(())
    }

    fn alter_partition_here(
        &self,
        req: &crate::replication_control::AlterPartitionRequest,
    ) -> Result<crate::image::PartitionImage, ControllerError> {
        let mut log = self.lock_log()?;
        let image = self.image();
        let (records, partition) = crate::replication_control::alter_partition(&image, req)?;
        self.commit(&mut log, records)?;
        self.complete_reassignment_here(&mut log, req.topic_id, req.partition);
        Ok(partition)
    }

    fn elect_leaders_here(
        &self,
        election: crate::replication_control::ElectionType,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<forward::ElectionResult> {
        let all = |e: ControllerError| -> Vec<forward::ElectionResult> {
            partitions
                .unwrap_or_default()
                .iter()
                .map(|p| (p.clone(), Err(e.clone())))
                .collect()
        };
        let mut log = match self.lock_log() {
            Ok(log) => log,
            Err(e) => return all(e),
        };
        let image = self.image();
        let (records, results) =
            crate::replication_control::elect_leaders(&image, election, partitions);
        match self.commit(&mut log, records) {
            Ok(_) => results,
            Err(e) => all(e),
        }
    }

    /// auto.leader.rebalance.enable: moves leadership back to preferred replicas.
    fn rebalance_leaders_here(&self) -> Result<(), ControllerError> {
        let results =
            self.elect_leaders_here(crate::replication_control::ElectionType::Preferred, None);
        let moved = results.iter().filter(|(_, r)| r.is_ok()).count();
        if moved > 0 {
            info!(
                moved,
                "moved partition leadership back to preferred replicas"
            );
        }
        Ok(())
    }

    fn allocate_producer_ids_here(
        &self,
        broker_id: i32,
        block_size: i64,
    ) -> Result<std::ops::Range<i64>, ControllerError> {
        if block_size <= 0 {
            return Err(ControllerError::InvalidRequest(format!(
                "Invalid producer id block size {block_size}"
            )));
        }
        let mut log = self.lock_log()?;
        let first = self.image().next_producer_id;
        // Kafka refuses once ids would pass i64::MAX; a producer id must stay non-negative.
        let next = first
            .checked_add(block_size)
            .ok_or_else(|| ControllerError::InvalidRequest("producer ids exhausted".into()))?;
        self.commit(
            &mut log,
            vec![MetadataRecord::ProducerIds {
                broker_id,
                next_producer_id: next,
            }],
        )?;
        Ok(first..next)
    }

    fn create_topics_here(
        &self,
        specs: Vec<CreateTopicSpec>,
        validate_only: bool,
        defaults: &TopicDefaults,
    ) -> Vec<Result<Arc<TopicImage>, ControllerError>> {
        if requested_partitions(&specs, defaults) > MAX_PARTITIONS_PER_BATCH {
            return specs.iter().map(|_| Err(too_many_partitions())).collect();
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for spec in &specs {
            *seen.entry(spec.name.clone()).or_default() += 1;
        }
        let mut log = match self.lock_log() {
            Ok(log) => log,
            Err(e) => return specs.iter().map(|_| Err(e.clone())).collect(),
        };
        specs
            .into_iter()
            .map(|spec| {
                if seen.get(&spec.name).is_some_and(|n| *n > 1) {
                    return Err(ControllerError::InvalidRequest(
                        "Duplicate topic name.".into(),
                    ));
                }
                let image = self.image();
                let records = plan_topic(&image, &spec, defaults)?;
                let new_image = if validate_only {
                    Arc::new(image.apply(&records))
                } else {
                    self.commit(&mut log, records)?
                };
                new_image.topic(&spec.name).cloned().ok_or_else(|| {
                    ControllerError::Storage("created topic missing from the image".into())
                })
            })
            .collect()
    }

    fn delete_topics_here(
        &self,
        names_or_ids: Vec<TopicRef>,
    ) -> Vec<Result<(String, Uuid), ControllerError>> {
        let mut seen: HashMap<TopicRef, usize> = HashMap::new();
        for r in &names_or_ids {
            *seen.entry(r.clone()).or_default() += 1;
        }
        let mut log = match self.lock_log() {
            Ok(log) => log,
            Err(e) => return names_or_ids.iter().map(|_| Err(e.clone())).collect(),
        };
        names_or_ids
            .into_iter()
            .map(|r| {
                if seen.get(&r).is_some_and(|n| *n > 1) {
                    return Err(ControllerError::InvalidRequest(match r {
                        TopicRef::Name(_) => "Duplicate topic name.".into(),
                        TopicRef::Id(_) => "Duplicate topic id.".into(),
                    }));
                }
                let image = self.image();
                let topic = match &r {
                    TopicRef::Name(name) => image.topic(name).ok_or_else(|| {
                        ControllerError::UnknownTopicOrPartition(
                            "This server does not host this topic-partition.".into(),
                        )
                    })?,
                    TopicRef::Id(id) => image.topic_by_id(id).ok_or_else(|| {
                        ControllerError::UnknownTopicId(
                            "This server does not host this topic ID.".into(),
                        )
                    })?,
                };
                let done = (topic.name.clone(), topic.topic_id);
                self.commit(
                    &mut log,
                    vec![MetadataRecord::RemoveTopic {
                        topic_id: topic.topic_id,
                    }],
                )?;
                info!(topic = %done.0, topic_id = %done.1, "deleted topic");
                Ok(done)
            })
            .collect()
    }

    fn create_partitions_here(
        &self,
        topic: &str,
        new_total: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let mut log = self.lock_log()?;
        let image = self.image();
        let t = image.topic(topic).ok_or_else(|| {
            ControllerError::UnknownTopicOrPartition(format!("Topic {topic} does not exist."))
        })?;
        let current = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
        debug_assert!(t.partitions.keys().copied().eq(0..current));
        if new_total < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "The topic {topic} currently has {current} partition(s); {new_total} would not be an increase."
            )));
        }
        if new_total == current {
            return Err(ControllerError::InvalidPartitions(format!(
                "Topic already has {current} partition(s)."
            )));
        }
        let add = usize::try_from(new_total - current).unwrap_or(usize::MAX);
        if add > MAX_PARTITIONS_PER_BATCH {
            return Err(too_many_partitions());
        }
        let rf = t.partitions.values().next().map_or(1, |p| p.replicas.len());
        let replica_lists = match assignments {
            Some(lists) => {
                if lists.len() != add {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "Attempted to add {add} additional partition(s), but only {} assignment(s) were specified.",
                        lists.len()
                    )));
                }
                for replicas in &lists {
                    validate_replicas(&image, replicas, Some(rf))?;
                }
                lists
            }
            None => {
                crate::replication_control::place_replicas(&image, t.topic_id, current, add, rf)?
            }
        };
        let records = replica_lists
            .into_iter()
            .zip(current..)
            .map(|(replicas, partition)| partition_record(t.topic_id, partition, replicas))
            .collect();
        if !validate_only {
            self.commit(&mut log, records)?;
        }
        Ok(())
    }

    fn alter_configs_here(
        &self,
        changes: Vec<ConfigChange>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let mut log = self.lock_log()?;
        let image = self.image();
        let mut by_resource: BTreeMap<ConfigResource, Vec<ConfigChange>> = BTreeMap::new();
        for change in changes {
            by_resource
                .entry(change.resource.clone())
                .or_default()
                .push(change);
        }
        let mut records = Vec::new();
        for (resource, changes) in by_resource {
            let mut names = HashSet::new();
            if !changes.iter().all(|c| names.insert(c.name.as_str())) {
                return Err(ControllerError::InvalidRequest(
                    "Error due to duplicate config keys".into(),
                ));
            }
            let current = self.current_configs(&image, &resource)?;
            let mut next = current.clone();
            for change in &changes {
                apply_op(&resource, &mut next, &change.name, &change.op)?;
            }
            self.validate_configs(&resource, &current, &next)?;
            records.extend(config_diff(&resource, &current, &next));
        }
        if !validate_only {
            self.commit(&mut log, records)?;
        }
        Ok(())
    }

    fn replace_configs_here(
        &self,
        resource: ConfigResource,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        let mut log = self.lock_log()?;
        let image = self.image();
        let current = self.current_configs(&image, &resource)?;
        self.validate_configs(&resource, &current, &configs)?;
        let records = config_diff(&resource, &current, &configs);
        if !validate_only {
            self.commit(&mut log, records)?;
        }
        Ok(())
    }

    fn current_configs(
        &self,
        image: &MetadataImage,
        resource: &ConfigResource,
    ) -> Result<BTreeMap<String, String>, ControllerError> {
        match resource {
            ConfigResource::Topic(name) => {
                image.topic(name).map(|t| t.configs.clone()).ok_or_else(|| {
                    ControllerError::UnknownTopicOrPartition(format!(
                        "The topic '{name}' does not exist."
                    ))
                })
            }
            ConfigResource::Broker(id) => {
                if *id != CLUSTER_DEFAULT_BROKER
                    && *id != self.node_id
                    && !image.brokers.contains_key(id)
                {
                    return Err(ControllerError::InvalidRequest(format!(
                        "Unknown broker id {id}"
                    )));
                }
                Ok(image.broker_configs.get(id).cloned().unwrap_or_default())
            }
        }
    }

    fn validate_configs(
        &self,
        resource: &ConfigResource,
        current: &BTreeMap<String, String>,
        next: &BTreeMap<String, String>,
    ) -> Result<(), ControllerError> {
        match resource {
            ConfigResource::Topic(_) => validate_topic_configs(next),
            ConfigResource::Broker(_) => {
                for (name, value) in next {
                    if current.get(name) != Some(value) {
                        validate_dynamic_broker_config(name, value)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Starts a write: takes the writers' lock and, in a cluster, confirms this node is the
    /// active controller with a current image (NOT_CONTROLLER otherwise).
    fn lock_log(&self) -> Result<WriteGuard<'_>, ControllerError> {
        match &self.backend {
            Backend::Local(log) => Ok(WriteGuard::Local(
                log.lock().unwrap_or_else(PoisonError::into_inner),
            )),
            Backend::Quorum(q) => {
                let guard = q.write_lock();
                q.ensure_current()?;
                // Everything applied before the check is published before validation reads it.
                self.publish(q.applied_image());
                Ok(WriteGuard::Quorum { _held: guard })
            }
            Backend::Observer(o) => Err(ControllerError::NotController(format!(
                "A broker-only node does not write metadata (the active controller is {:?}).",
                o.leader_id()
            ))),
        }
    }

    /// Commits `records` as one atomic batch (durably: fsynced locally, or by a quorum
    /// majority), publishes the new image and notifies listeners. The caller holds the
    /// writers' lock.
    fn commit(
        &self,
        guard: &mut WriteGuard<'_>,
        records: Vec<MetadataRecord>,
    ) -> Result<Arc<MetadataImage>, ControllerError> {
        if records.is_empty() {
            return Ok(self.image());
        }
        match (guard, &self.backend) {
            (WriteGuard::Local(log), _) => {
                let old = self.image();
                let last_offset = log.append(&records)?;
                let new = Arc::new(old.apply(&records));
                debug_assert_eq!(new.offset, last_offset, "image and log offsets diverged");
                if log.records_since_snapshot() >= self.options.snapshot_after_records {
                    if let Err(e) = log.snapshot(&new.to_records()) {
                        warn!(error = %e, "metadata log: snapshot failed; the log keeps growing until one succeeds");
                    }
                }
                self.publish(Arc::clone(&new));
                Ok(new)
            }
            (WriteGuard::Quorum { .. }, Backend::Quorum(q)) => {
                let offset = q.propose(records)?;
                let new = q.applied_image();
                debug_assert!(new.offset >= offset, "a committed batch was not applied");
                self.publish(Arc::clone(&new));
                Ok(new)
            }
            (WriteGuard::Quorum { .. }, Backend::Local(_) | Backend::Observer(_)) => Err(
                ControllerError::Storage("a quorum write on a local controller".into()),
            ),
        }
    }

    /// Makes `new` the current image and tells the listeners, unless an image at or past
    /// its offset is already published.
    fn publish(&self, new: Arc<MetadataImage>) {
        let _published = self
            .publish_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.image();
        if new.offset <= old.offset {
            return;
        }
        *self.image.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&new);
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for listener in listeners {
            listener.on_image(&old, &new);
        }
    }
}

fn too_many_partitions() -> ControllerError {
    ControllerError::PolicyViolation("Excessively large number of partitions per request.".into())
}

/// Upper bound of the partitions a CreateTopics request asks for, counted as Kafka does
/// (before any other validation, so a huge request fails fast and whole).
fn requested_partitions(specs: &[CreateTopicSpec], defaults: &TopicDefaults) -> usize {
    specs
        .iter()
        .map(|s| {
            if !s.assignments.is_empty() {
                s.assignments.len()
            } else if s.num_partitions == -1 {
                usize::try_from(defaults.num_partitions).unwrap_or(0)
            } else {
                usize::try_from(s.num_partitions).unwrap_or(0)
            }
        })
        .fold(0usize, usize::saturating_add)
}

/// Validates one CreateTopics entry against `image` and returns the records that create it.
fn plan_topic(
    image: &MetadataImage,
    spec: &CreateTopicSpec,
    defaults: &TopicDefaults,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let name = spec.name.as_str();
    topic_name::validate(name)?;
    if image.topic(name).is_some() {
        return Err(ControllerError::TopicAlreadyExists(format!(
            "Topic '{name}' already exists."
        )));
    }
    if topic_name::has_collision_chars(name) {
        let unified = topic_name::unify_collision_chars(name);
        if let Some(other) = image
            .topics
            .keys()
            .find(|t| topic_name::unify_collision_chars(t) == unified)
        {
            return Err(ControllerError::InvalidTopic(format!(
                "Topic '{name}' collides with existing topic: {other}"
            )));
        }
    }
    let topic_id = loop {
        let id = random_uuid();
        if !image.topic_ids.contains_key(&id) {
            break id;
        }
    };
    let replica_lists = if spec.assignments.is_empty() {
        let partitions = match spec.num_partitions {
            -1 => defaults.num_partitions,
            n => n,
        };
        let rf = match spec.replication_factor {
            -1 => defaults.replication_factor,
            n => n,
        };
        if partitions <= 0 {
            return Err(ControllerError::InvalidPartitions(
                "Number of partitions was set to an invalid non-positive value.".into(),
            ));
        }
        if rf <= 0 {
            return Err(ControllerError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        let partitions = usize::try_from(partitions).unwrap_or(usize::MAX);
        if partitions > MAX_PARTITIONS_PER_BATCH {
            return Err(too_many_partitions());
        }
        let rf = usize::try_from(rf).unwrap_or(usize::MAX);
        crate::replication_control::place_replicas(image, topic_id, 0, partitions, rf)?
    } else {
        if spec.num_partitions != -1 {
            return Err(ControllerError::InvalidRequest(
                "A manual partition assignment was specified, but numPartitions was not set to -1."
                    .into(),
            ));
        }
        if spec.replication_factor != -1 {
            return Err(ControllerError::InvalidRequest(
                "A manual partition assignment was specified, but replicationFactor was not set to -1."
                    .into(),
            ));
        }
        if spec.assignments.len() > MAX_PARTITIONS_PER_BATCH {
            return Err(too_many_partitions());
        }
        let mut sorted: Vec<&(i32, Vec<i32>)> = spec.assignments.iter().collect();
        sorted.sort_by_key(|(index, _)| *index);
        if !sorted.iter().map(|(i, _)| *i).eq(0..sorted.len() as i32) {
            return Err(ControllerError::InvalidReplicaAssignment(
                "Partitions should be a consecutive 0-based integer sequence.".into(),
            ));
        }
        let rf = sorted.first().map(|(_, r)| r.len());
        let mut lists = Vec::with_capacity(sorted.len());
        for (_, replicas) in sorted {
            validate_replicas(image, replicas, rf)?;
            lists.push(replicas.clone());
        }
        lists
    };
    validate_topic_configs(&spec.configs)?;

    let mut records = Vec::with_capacity(1 + spec.configs.len() + replica_lists.len());
    records.push(MetadataRecord::Topic {
        name: name.to_owned(),
        topic_id,
    });
    for (key, value) in &spec.configs {
        records.push(MetadataRecord::Config {
            resource: ConfigResource::Topic(name.to_owned()),
            name: key.clone(),
            value: Some(value.clone()),
        });
    }
    records.extend(
        replica_lists
            .into_iter()
            .zip(0..)
            .map(|(replicas, partition)| partition_record(topic_id, partition, replicas)),
    );
    Ok(records)
}

/// A new partition led by its first replica with every replica in sync.
fn partition_record(topic_id: Uuid, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
    let leader = replicas.first().copied().unwrap_or(-1);
    MetadataRecord::Partition {
        topic_id,
        partition,
        isr: replicas.clone(),
        replicas,
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

/// Checks a manually assigned replica list.
fn validate_replicas(
    image: &MetadataImage,
    replicas: &[i32],
    expected_rf: Option<usize>,
) -> Result<(), ControllerError> {
    let invalid = ControllerError::InvalidReplicaAssignment;
    if replicas.is_empty() {
        return Err(invalid(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    let mut seen = HashSet::new();
    for broker in replicas {
        if !seen.insert(*broker) {
            return Err(invalid(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            )));
        }
        if !image.brokers.contains_key(broker) {
            return Err(invalid(format!(
                "The manual partition assignment includes broker {broker}, but no such broker is registered."
            )));
        }
    }
    if let Some(rf) = expected_rf {
        if replicas.len() != rf {
            return Err(invalid(format!(
                "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
                replicas.len()
            )));
        }
    }
    Ok(())
}

fn apply_op(
    resource: &ConfigResource,
    configs: &mut BTreeMap<String, String>,
    name: &str,
    op: &ConfigOp,
) -> Result<(), ControllerError> {
    match op {
        ConfigOp::Set(value) => {
            configs.insert(name.to_owned(), value.clone());
        }
        ConfigOp::Delete => {
            configs.remove(name);
        }
        ConfigOp::Append(value) | ConfigOp::Subtract(value) => {
            let (is_list, default) = match resource {
                ConfigResource::Topic(_) => (
                    is_list_config(name),
                    topic_config_def(name).map(|d| d.default),
                ),
                // The only LIST-typed dynamic broker config kavka accepts.
                ConfigResource::Broker(_) => (
                    name == "log.cleanup.policy",
                    topic_config_def("cleanup.policy").map(|d| d.default),
                ),
            };
            if !is_list {
                let verb = if matches!(op, ConfigOp::Append(_)) {
                    "append"
                } else {
                    "subtract"
                };
                return Err(ControllerError::InvalidConfig(format!(
                    "Config value {verb} is not allowed for config key: {name}"
                )));
            }
            let base = configs
                .get(name)
                .map(String::as_str)
                .or(default)
                .unwrap_or("");
            let mut items = split_list(base);
            for item in split_list(value) {
                if matches!(op, ConfigOp::Append(_)) {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                } else {
                    items.retain(|i| *i != item);
                }
            }
            configs.insert(name.to_owned(), items.join(","));
        }
    }
    Ok(())
}

/// The Config records that turn `current` into `next`.
fn config_diff(
    resource: &ConfigResource,
    current: &BTreeMap<String, String>,
    next: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let removed = current
        .keys()
        .filter(|k| !next.contains_key(*k))
        .map(|k| (k, None));
    let changed = next
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k, Some(v.clone())));
    removed
        .chain(changed)
        .map(|(name, value)| MetadataRecord::Config {
            resource: resource.clone(),
            name: name.clone(),
            value,
        })
        .collect()
}
