//! The immutable view of cluster state that handlers read. A change never mutates an image:
//! [`MetadataImage::apply`] builds a new one, sharing every unchanged topic through its `Arc`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tracing::warn;
use uuid::Uuid;

use crate::record::{ConfigResource, MetadataRecord};

/// A registered broker's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Fenced brokers (heartbeats stopped) lead no partition and join no ISR; clients are
    /// not told about them. A broker is unfenced when it registers.
    pub fenced: bool,
    /// Changes every time the broker process starts: a new one means the broker restarted
    /// (and may have lost unflushed data), so the controller fences it before it leads again.
    pub incarnation: Uuid,
}

/// One partition's replica set and leadership.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// One topic: its id, partitions and dynamic (topic-level) config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
    pub configs: BTreeMap<String, String>,
}

/// A partition reassignment in progress (KIP-455): the partition's replicas are `target`
/// followed by the `original` replicas not in it, until every target replica is in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReassignment {
    /// The replicas asked for, in the requested order (the first is the preferred leader).
    pub target: Vec<i32>,
    /// The replicas when the reassignment started: what a cancellation returns to.
    pub original: Vec<i32>,
}

impl PendingReassignment {
    /// Replicas being added: in the target, not in the original set.
    pub fn adding(&self) -> Vec<i32> {
        self.target
            .iter()
            .copied()
            .filter(|r| !self.original.contains(r))
            .collect()
    }

    /// Replicas being removed: in the original set, not in the target.
    pub fn removing(&self) -> Vec<i32> {
        self.original
            .iter()
            .copied()
            .filter(|r| !self.target.contains(r))
            .collect()
    }
}

/// The cluster state after applying every record up to and including `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// Offset of the last record applied; -1 for the empty image.
    pub offset: i64,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_ids: HashMap<Uuid, String>,
    /// Dynamic broker configs by node id ([`crate::CLUSTER_DEFAULT_BROKER`] = cluster default).
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// The first producer id not yet allocated to any broker.
    pub next_producer_id: i64,
    /// Partition reassignments in progress, by (topic id, partition). Kept beside the
    /// partitions rather than in [`PartitionImage`], whose serialized form is fixed.
    pub reassignments: BTreeMap<(Uuid, i32), PendingReassignment>,
}

impl Default for MetadataImage {
    fn default() -> Self {
        Self::empty()
    }
}

impl MetadataImage {
    /// The image before any record.
    pub fn empty() -> Self {
        Self {
            cluster_id: String::new(),
            offset: -1,
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            topic_ids: HashMap::new(),
            broker_configs: BTreeMap::new(),
            next_producer_id: 0,
            reassignments: BTreeMap::new(),
        }
    }

    /// A new image with `records` applied in order; `self` is untouched. The offset advances
    /// by one per record (the metadata log numbers records consecutively).
    ///
    /// Records that refer to something absent (a partition of an unknown topic id) cannot be
    /// produced by the controller; if a damaged log holds one it is skipped with a warning
    /// rather than aborting startup.
    pub fn apply(&self, records: &[MetadataRecord]) -> MetadataImage {
        let mut next = self.clone();
        for record in records {
            next.apply_one(record);
        }
        next.offset = self.offset.saturating_add(records.len() as i64);
        next
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    /// The topic whose id is `id`.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicImage>> {
        self.topic_ids
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    /// One partition by topic id and index.
    pub fn partition(&self, topic_id: &Uuid, partition: i32) -> Option<&PartitionImage> {
        self.topic_by_id(topic_id)
            .and_then(|t| t.partitions.get(&partition))
    }

    /// Whether `node_id` is registered and not fenced: it may lead and join ISRs.
    pub fn is_live_broker(&self, node_id: i32) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// The registered, unfenced brokers (what Metadata responses list).
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The dynamic configs of `resource` (empty when none or unknown).
    pub fn configs(&self, resource: &ConfigResource) -> BTreeMap<String, String> {
        match resource {
            ConfigResource::Topic(name) => self
                .topics
                .get(name)
                .map(|t| t.configs.clone())
                .unwrap_or_default(),
            ConfigResource::Broker(id) => self.broker_configs.get(id).cloned().unwrap_or_default(),
        }
    }

    /// The reassignment in progress of one partition, if any.
    pub fn reassignment(&self, topic_id: &Uuid, partition: i32) -> Option<&PendingReassignment> {
        self.reassignments.get(&(*topic_id, partition))
    }

    /// The records that rebuild this image from empty (what a snapshot stores).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        if !self.cluster_id.is_empty() {
            out.push(MetadataRecord::ClusterId {
                cluster_id: self.cluster_id.clone(),
            });
        }
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBroker {
                node_id: b.node_id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                incarnation: b.incarnation,
            });
            if b.fenced {
                out.push(MetadataRecord::FenceBroker { node_id: b.node_id });
            }
        }
        for (node_id, configs) in &self.broker_configs {
            for (name, value) in configs {
                out.push(MetadataRecord::Config {
                    resource: ConfigResource::Broker(*node_id),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        for topic in self.topics.values() {
            out.extend(topic_records(topic));
        }
        out.extend(self.reassignment_records());
        if self.next_producer_id > 0 {
            out.push(MetadataRecord::ProducerIds {
                broker_id: -1,
                next_producer_id: self.next_producer_id,
            });
        }
        out
    }

    /// Rebuilds each pending reassignment in log order: the partition with its original
    /// replicas, the reassignment (which captures them), then the partition as it is.
    fn reassignment_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::with_capacity(3 * self.reassignments.len());
        for ((topic_id, index), pending) in &self.reassignments {
            let Some(p) = self.partition(topic_id, *index) else {
                continue;
            };
            let record = |replicas: &[i32]| MetadataRecord::Partition {
                topic_id: *topic_id,
                partition: p.partition,
                replicas: replicas.to_vec(),
                isr: p.isr.clone(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
            };
            out.push(record(&pending.original));
            out.push(MetadataRecord::PartitionReassignment {
                topic_id: *topic_id,
                partition: *index,
                target: Some(pending.target.clone()),
            });
            out.push(record(&p.replicas));
        }
        out
    }

    fn apply_one(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::ClusterId { cluster_id } => self.cluster_id = cluster_id.clone(),
            MetadataRecord::RegisterBroker {
                node_id,
                host,
                port,
                rack,
                incarnation,
            } => {
                self.brokers.insert(
                    *node_id,
                    BrokerInfo {
                        node_id: *node_id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        fenced: false,
                        incarnation: *incarnation,
                    },
                );
            }
            MetadataRecord::FenceBroker { node_id } => match self.brokers.get_mut(node_id) {
                Some(b) => b.fenced = true,
                None => warn!(node_id, "metadata: FenceBroker of an unknown broker"),
            },
            MetadataRecord::UnfenceBroker { node_id } => match self.brokers.get_mut(node_id) {
                Some(b) => b.fenced = false,
                None => warn!(node_id, "metadata: UnfenceBroker of an unknown broker"),
            },
            MetadataRecord::Topic { name, topic_id } => {
                if let Some(old) = self.topics.get(name) {
                    warn!(topic = %name, "metadata: Topic record replaces an existing topic");
                    let old_id = old.topic_id;
                    self.topic_ids.remove(&old_id);
                    self.reassignments.retain(|(id, _), _| *id != old_id);
                }
                if let Some(old_name) = self.topic_ids.remove(topic_id) {
                    self.topics.remove(&old_name);
                }
                self.reassignments.retain(|(id, _), _| id != topic_id);
                self.topic_ids.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    Arc::new(TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    }),
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => {
                let Some(topic) = self
                    .topic_ids
                    .get(topic_id)
                    .and_then(|name| self.topics.get_mut(name))
                else {
                    warn!(%topic_id, partition, "metadata: Partition record for an unknown topic id, skipped");
                    return;
                };
                Arc::make_mut(topic).partitions.insert(
                    *partition,
                    PartitionImage {
                        partition: *partition,
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                    },
                );
            }
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => match resource {
                ConfigResource::Topic(topic_name) => {
                    let Some(topic) = self.topics.get_mut(topic_name) else {
                        warn!(topic = %topic_name, config = %name, "metadata: Config record for an unknown topic, skipped");
                        return;
                    };
                    let configs = &mut Arc::make_mut(topic).configs;
                    set_or_remove(configs, name, value);
                }
                ConfigResource::Broker(node_id) => {
                    let configs = self.broker_configs.entry(*node_id).or_default();
                    set_or_remove(configs, name, value);
                    if configs.is_empty() {
                        self.broker_configs.remove(node_id);
                    }
                }
            },
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                // Never move backwards, whatever a damaged log says.
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::PartitionReassignment {
                topic_id,
                partition,
                target,
            } => {
                let key = (*topic_id, *partition);
                let Some(target) = target else {
                    self.reassignments.remove(&key);
                    return;
                };
                let Some(current) = self.partition(topic_id, *partition) else {
                    warn!(%topic_id, partition, "metadata: PartitionReassignment for an unknown partition, skipped");
                    return;
                };
                // A reassignment that replaces a pending one keeps the first original set.
                let original = match self.reassignments.get(&key) {
                    Some(pending) => pending.original.clone(),
                    None => current.replicas.clone(),
                };
                self.reassignments.insert(
                    key,
                    PendingReassignment {
                        target: target.clone(),
                        original,
                    },
                );
            }
            MetadataRecord::RemoveTopic { topic_id } => match self.topic_ids.remove(topic_id) {
                Some(name) => {
                    self.topics.remove(&name);
                    self.reassignments.retain(|(id, _), _| id != topic_id);
                }
                None => {
                    warn!(%topic_id, "metadata: RemoveTopic for an unknown topic id, skipped");
                }
            },
        }
    }
}

fn set_or_remove(configs: &mut BTreeMap<String, String>, name: &str, value: &Option<String>) {
    match value {
        Some(v) => {
            configs.insert(name.to_owned(), v.clone());
        }
        None => {
            configs.remove(name);
        }
    }
}

/// The records that create `topic` as it is: Topic, then its configs, then its partitions.
pub(crate) fn topic_records(topic: &TopicImage) -> Vec<MetadataRecord> {
    let mut out = Vec::with_capacity(1 + topic.configs.len() + topic.partitions.len());
    out.push(MetadataRecord::Topic {
        name: topic.name.clone(),
        topic_id: topic.topic_id,
    });
    for (name, value) in &topic.configs {
        out.push(MetadataRecord::Config {
            resource: ConfigResource::Topic(topic.name.clone()),
            name: name.clone(),
            value: Some(value.clone()),
        });
    }
    for p in topic.partitions.values() {
        out.push(MetadataRecord::Partition {
            topic_id: topic.topic_id,
            partition: p.partition,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(topic_id: Uuid, partition: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    fn topic_config(topic: &str, name: &str, value: Option<&str>) -> MetadataRecord {
        MetadataRecord::Config {
            resource: ConfigResource::Topic(topic.into()),
            name: name.into(),
            value: value.map(str::to_owned),
        }
    }

    #[test]
    fn create_topic_with_partitions_and_configs() {
        let id = Uuid::new_v4();
        let empty = MetadataImage::empty();
        let img = empty.apply(&[
            MetadataRecord::ClusterId {
                cluster_id: "c1".into(),
            },
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            topic_config("t", "retention.ms", Some("1000")),
            partition(id, 0),
            partition(id, 1),
        ]);
        assert_eq!(
            empty,
            MetadataImage::empty(),
            "apply must not mutate its input"
        );
        assert_eq!(img.offset, 4);
        assert_eq!(img.cluster_id, "c1");
        let t = img.topic("t").expect("topic");
        assert_eq!(t.topic_id, id);
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(
            t.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(img.topic_by_id(&id).map(|t| t.name.as_str()), Some("t"));
    }

    #[test]
    fn add_partitions_delete_config_and_topic() {
        let id = Uuid::new_v4();
        let a = MetadataImage::empty().apply(&[
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            topic_config("t", "cleanup.policy", Some("compact")),
            partition(id, 0),
        ]);
        let b = a.apply(&[partition(id, 1), topic_config("t", "cleanup.policy", None)]);
        assert_eq!(a.topic("t").map(|t| t.partitions.len()), Some(1));
        assert_eq!(b.topic("t").map(|t| t.partitions.len()), Some(2));
        assert!(b.topic("t").is_some_and(|t| t.configs.is_empty()));
        let c = b.apply(&[MetadataRecord::RemoveTopic { topic_id: id }]);
        assert!(c.topic("t").is_none());
        assert!(c.topic_by_id(&id).is_none());
        assert!(c.topic_ids.is_empty());
    }

    #[test]
    fn unchanged_topics_are_shared() {
        let (a_id, b_id) = (Uuid::new_v4(), Uuid::new_v4());
        let img = MetadataImage::empty().apply(&[
            MetadataRecord::Topic {
                name: "a".into(),
                topic_id: a_id,
            },
            MetadataRecord::Topic {
                name: "b".into(),
                topic_id: b_id,
            },
        ]);
        let next = img.apply(&[partition(b_id, 0)]);
        let (Some(a0), Some(a1)) = (img.topic("a"), next.topic("a")) else {
            panic!("topic a missing");
        };
        assert!(Arc::ptr_eq(a0, a1));
        assert!(!Arc::ptr_eq(&img.topics["b"], &next.topics["b"]));
    }

    #[test]
    fn broker_configs_and_registration() {
        let img = MetadataImage::empty().apply(&[
            MetadataRecord::RegisterBroker {
                node_id: 1,
                host: "h".into(),
                port: 9092,
                rack: None,
                incarnation: Uuid::new_v4(),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Broker(1),
                name: "log.retention.ms".into(),
                value: Some("5".into()),
            },
        ]);
        assert_eq!(img.brokers.get(&1).map(|b| b.port), Some(9092));
        assert_eq!(img.configs(&ConfigResource::Broker(1)).len(), 1);
        let img = img.apply(&[MetadataRecord::Config {
            resource: ConfigResource::Broker(1),
            name: "log.retention.ms".into(),
            value: None,
        }]);
        assert!(img.broker_configs.is_empty());
    }

    #[test]
    fn dangling_records_are_skipped() {
        let img = MetadataImage::empty().apply(&[
            partition(Uuid::new_v4(), 0),
            topic_config("nope", "x", Some("y")),
            MetadataRecord::RemoveTopic {
                topic_id: Uuid::new_v4(),
            },
        ]);
        assert!(img.topics.is_empty());
        assert_eq!(img.offset, 2);
    }

    fn reassign(topic_id: Uuid, target: Option<Vec<i32>>) -> MetadataRecord {
        MetadataRecord::PartitionReassignment {
            topic_id,
            partition: 0,
            target,
        }
    }

    fn widened(topic_id: Uuid, replicas: Vec<i32>) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition: 0,
            replicas,
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 1,
        }
    }

    #[test]
    fn reassignment_keeps_the_first_original_replicas_until_it_ends() {
        let id = Uuid::new_v4();
        let img = MetadataImage::empty().apply(&[
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            partition(id, 0),
            reassign(id, Some(vec![2])),
            widened(id, vec![2, 1]),
        ]);
        let pending = img.reassignment(&id, 0).expect("pending");
        assert_eq!(
            (pending.target.clone(), pending.original.clone()),
            (vec![2], vec![1])
        );
        assert_eq!((pending.adding(), pending.removing()), (vec![2], vec![1]));
        // Replaced by another target: the original stays [1].
        let img = img.apply(&[reassign(id, Some(vec![3])), widened(id, vec![3, 1])]);
        let pending = img.reassignment(&id, 0).expect("pending");
        assert_eq!(
            (pending.target.clone(), pending.original.clone()),
            (vec![3], vec![1])
        );
        assert!(img.apply(&[reassign(id, None)]).reassignments.is_empty());
        assert!(img
            .apply(&[MetadataRecord::RemoveTopic { topic_id: id }])
            .reassignments
            .is_empty());
        // Of an unknown partition: skipped.
        let other = img.apply(&[MetadataRecord::PartitionReassignment {
            topic_id: id,
            partition: 9,
            target: Some(vec![1]),
        }]);
        assert_eq!(other.reassignments.len(), 1);
    }

    #[test]
    fn to_records_rebuilds_pending_reassignments() {
        let id = Uuid::new_v4();
        let img = MetadataImage::empty().apply(&[
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            partition(id, 0),
            reassign(id, Some(vec![3, 2])),
            widened(id, vec![3, 2, 1]),
        ]);
        let mut rebuilt = MetadataImage::empty().apply(&img.to_records());
        rebuilt.offset = img.offset;
        assert_eq!(rebuilt, img);
    }

    #[test]
    fn to_records_rebuilds_the_image() {
        let id = Uuid::new_v4();
        let img = MetadataImage::empty().apply(&[
            MetadataRecord::ClusterId {
                cluster_id: "c".into(),
            },
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            partition(id, 0),
            topic_config("t", "retention.ms", Some("1")),
            MetadataRecord::Config {
                resource: ConfigResource::Broker(-1),
                name: "log.retention.ms".into(),
                value: Some("5".into()),
            },
        ]);
        let mut rebuilt = MetadataImage::empty().apply(&img.to_records());
        rebuilt.offset = img.offset;
        assert_eq!(rebuilt, img);
    }
}
