//! The controller's write operations as data, so a cluster member that is not the active
//! controller can forward them to the one that is (Kafka's brokers forward to the controller
//! too; kavka carries them on the quorum transport rather than in Kafka's Envelope API).
//!
//! Each public write method of [`Controller`] runs here when this node may write (a single
//! node, or the active controller) and is forwarded otherwise. Validation-only calls never
//! commit and always run locally.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ConfigChange, Controller, CreateTopicSpec, TopicDefaults, TopicRef};
use crate::error::ControllerError;
use crate::image::{PartitionImage, TopicImage};
use crate::raft::network::BoxFuture;
use crate::raft::tcp::ForwardedOpHandler;
use crate::record::ConfigResource;
use crate::replication_control::{AlterPartitionRequest, ElectionType};

/// A controller write, as forwarded to the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerOp {
    BrokerHeartbeat {
        node_id: i32,
        host: String,
        port: u16,
        rack: Option<String>,
        incarnation: Option<Uuid>,
    },
    ControlledShutdown {
        node_id: i32,
    },
    AllocateProducerIds {
        broker_id: i32,
        block_size: i64,
    },
    CreateTopics {
        specs: Vec<CreateTopicSpec>,
        defaults: TopicDefaults,
    },
    DeleteTopics {
        refs: Vec<TopicRef>,
    },
    CreatePartitions {
        topic: String,
        new_total: i32,
        assignments: Option<Vec<Vec<i32>>>,
    },
    AlterConfigs {
        changes: Vec<ConfigChange>,
    },
    ReplaceConfigs {
        resource: ConfigResource,
        configs: BTreeMap<String, String>,
    },
    AlterPartition(AlterPartitionRequest),
    ElectLeaders {
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    },
    AlterPartitionReassignments {
        requests: Vec<crate::replication_control::ReassignmentRequest>,
        allow_replication_factor_change: bool,
    },
    /// A broker-only node's image poll: answered when the image is past `known_offset`.
    FetchImage {
        known_offset: i64,
    },
}

/// One partition's election outcome.
pub type ElectionResult = ((String, i32), Result<(), ControllerError>);

/// The outcome of a [`ControllerOp`], with the metadata offset the requester must have
/// applied before it answers its client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerReply {
    Done {
        offset: i64,
        result: Result<(), ControllerError>,
    },
    ProducerIds {
        offset: i64,
        result: Result<(i64, i64), ControllerError>,
    },
    CreateTopics {
        offset: i64,
        results: Vec<Result<String, ControllerError>>,
    },
    DeleteTopics {
        offset: i64,
        results: Vec<Result<(String, Uuid), ControllerError>>,
    },
    AlterPartition {
        offset: i64,
        result: Result<PartitionImage, ControllerError>,
    },
    ElectLeaders {
        offset: i64,
        results: Vec<ElectionResult>,
    },
    AlterPartitionReassignments {
        offset: i64,
        results: Vec<Result<(), crate::replication_control::ReassignmentError>>,
    },
    /// The committed image as the records that rebuild it (`None`: nothing newer than the
    /// poll's known offset), and its offset.
    Image {
        offset: i64,
        records: Option<Vec<crate::record::MetadataRecord>>,
    },
}

impl ControllerReply {
    pub fn offset(&self) -> i64 {
        match self {
            Self::Done { offset, .. }
            | Self::ProducerIds { offset, .. }
            | Self::CreateTopics { offset, .. }
            | Self::DeleteTopics { offset, .. }
            | Self::AlterPartition { offset, .. }
            | Self::ElectLeaders { offset, .. }
            | Self::AlterPartitionReassignments { offset, .. }
            | Self::Image { offset, .. } => *offset,
        }
    }
}

fn mismatch() -> ControllerError {
    ControllerError::Storage("the active controller answered another operation".into())
}

impl Controller {
    /// Runs `op` on this node, which must be allowed to write (NOT_CONTROLLER otherwise).
    pub fn execute(&self, op: ControllerOp) -> ControllerReply {
        let reply = match op {
            ControllerOp::BrokerHeartbeat {
                node_id,
                host,
                port,
                rack,
                incarnation,
            } => ControllerReply::Done {
                offset: 0,
                result: self.broker_heartbeat_here(node_id, host, port, rack, incarnation),
            },
            ControllerOp::ControlledShutdown { node_id } => ControllerReply::Done {
                offset: 0,
                result: self.fence_broker_here(node_id),
            },
            ControllerOp::AllocateProducerIds {
                broker_id,
                block_size,
            } => ControllerReply::ProducerIds {
                offset: 0,
                result: self
                    .allocate_producer_ids_here(broker_id, block_size)
                    .map(|r| (r.start, r.end)),
            },
            ControllerOp::CreateTopics { specs, defaults } => ControllerReply::CreateTopics {
                offset: 0,
                results: self
                    .create_topics_here(specs, false, &defaults)
                    .into_iter()
                    .map(|r| r.map(|t| t.name.clone()))
                    .collect(),
            },
            ControllerOp::DeleteTopics { refs } => ControllerReply::DeleteTopics {
                offset: 0,
                results: self.delete_topics_here(refs),
            },
            ControllerOp::CreatePartitions {
                topic,
                new_total,
                assignments,
            } => ControllerReply::Done {
                offset: 0,
                result: self.create_partitions_here(&topic, new_total, assignments, false),
            },
            ControllerOp::AlterConfigs { changes } => ControllerReply::Done {
                offset: 0,
                result: self.alter_configs_here(changes, false),
            },
            ControllerOp::ReplaceConfigs { resource, configs } => ControllerReply::Done {
                offset: 0,
                result: self.replace_configs_here(resource, configs, false),
            },
            ControllerOp::AlterPartition(req) => ControllerReply::AlterPartition {
                offset: 0,
                result: self.alter_partition_here(&req),
            },
            ControllerOp::ElectLeaders {
                election,
                partitions,
            } => ControllerReply::ElectLeaders {
                offset: 0,
                results: self.elect_leaders_here(election, partitions.as_deref()),
            },
            ControllerOp::AlterPartitionReassignments {
                requests,
                allow_replication_factor_change,
            } => ControllerReply::AlterPartitionReassignments {
                offset: 0,
                results: self
                    .alter_partition_reassignments_here(&requests, allow_replication_factor_change),
            },
            ControllerOp::FetchImage { known_offset } => {
                let image = self.image();
                return ControllerReply::Image {
                    offset: image.offset,
                    records: (image.offset > known_offset).then(|| image.to_records()),
                };
            }
        };
        // Everything committed for the operation is in the image by now.
        let offset = self.image().offset;
        match reply {
            ControllerReply::Done { result, .. } => ControllerReply::Done { offset, result },
            ControllerReply::ProducerIds { result, .. } => {
                ControllerReply::ProducerIds { offset, result }
            }
            ControllerReply::CreateTopics { results, .. } => {
                ControllerReply::CreateTopics { offset, results }
            }
            ControllerReply::DeleteTopics { results, .. } => {
                ControllerReply::DeleteTopics { offset, results }
            }
            ControllerReply::AlterPartition { result, .. } => {
                ControllerReply::AlterPartition { offset, result }
            }
            ControllerReply::ElectLeaders { results, .. } => {
                ControllerReply::ElectLeaders { offset, results }
            }
            ControllerReply::AlterPartitionReassignments { results, .. } => {
                ControllerReply::AlterPartitionReassignments { offset, results }
            }
            image @ ControllerReply::Image { .. } => image,
        }
    }

    /// Runs `op` on the active controller when this node is not it (a quorum member that
    /// does not lead, or a broker-only node).
    pub(super) fn forwarded(
        &self,
        op: ControllerOp,
    ) -> Option<Result<ControllerReply, ControllerError>> {
        if let Some(o) = self.observer() {
            return Some(o.forward(&op));
        }
        self.remote_quorum().map(|q| q.forward(&op))
    }

    /// Whether writes go to another node.
    fn forwards_writes(&self) -> bool {
        self.observer().is_some() || self.remote_quorum().is_some()
    }

    /// A broker's periodic heartbeat (KIP-631 BrokerRegistration and BrokerHeartbeat in one):
    /// registers or updates its endpoint, unfences it, and keeps its session alive.
    /// `incarnation` is the broker process's id: a new one on a live broker fences it first
    /// (it restarted). Single node: registers only.
    pub fn broker_heartbeat(
        &self,
        node_id: i32,
        host: impl Into<String>,
        port: u16,
        rack: Option<String>,
        incarnation: Option<Uuid>,
    ) -> Result<(), ControllerError> {
        let host = host.into();
        let op = ControllerOp::BrokerHeartbeat {
            node_id,
            host: host.clone(),
            port,
            rack: rack.clone(),
            incarnation,
        };
        match self.forwarded(op) {
            Some(Ok(ControllerReply::Done { result, .. })) => result,
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None => self.broker_heartbeat_here(node_id, host, port, rack, incarnation),
        }
    }

    /// Records a broker's endpoint; a no-op when it is already registered as given.
    pub fn register_broker(
        &self,
        node_id: i32,
        host: impl Into<String>,
        port: u16,
        rack: Option<String>,
    ) -> Result<(), ControllerError> {
        self.broker_heartbeat(node_id, host, port, rack, None)
    }

    /// A broker going down cleanly asks to be fenced first, so its partitions get new
    /// leaders before it stops answering (Kafka's controlled shutdown).
    pub fn controlled_shutdown(&self, node_id: i32) -> Result<(), ControllerError> {
        match self.forwarded(ControllerOp::ControlledShutdown { node_id }) {
            Some(Ok(ControllerReply::Done { result, .. })) => result,
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None if self.is_clustered() => self.fence_broker_here(node_id),
            None => Ok(()),
        }
    }

    /// Allocates `block_size` producer ids to `broker_id` (Kafka's AllocateProducerIds): the
    /// block is committed to the metadata log before it is returned, so no id is ever handed
    /// out twice, even across restarts.
    pub fn allocate_producer_ids(
        &self,
        broker_id: i32,
        block_size: i64,
    ) -> Result<std::ops::Range<i64>, ControllerError> {
        let op = ControllerOp::AllocateProducerIds {
            broker_id,
            block_size,
        };
        match self.forwarded(op) {
            Some(Ok(ControllerReply::ProducerIds { result, .. })) => result.map(|(a, b)| a..b),
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None => self.allocate_producer_ids_here(broker_id, block_size),
        }
    }

    /// CreateTopics: one result per spec, in order. Each topic commits on its own (one
    /// atomic append); `validate_only` checks and returns the would-be topic. A request for
    /// more than [`super::MAX_PARTITIONS_PER_BATCH`] partitions in total fails whole with
    /// POLICY_VIOLATION, as in Kafka.
    pub fn create_topics(
        &self,
        specs: Vec<CreateTopicSpec>,
        validate_only: bool,
        defaults: &TopicDefaults,
    ) -> Vec<Result<Arc<TopicImage>, ControllerError>> {
        if validate_only || !self.forwards_writes() {
            return self.create_topics_here(specs, validate_only, defaults);
        }
        let count = specs.len();
        let op = ControllerOp::CreateTopics {
            specs,
            defaults: *defaults,
        };
        match self.forwarded(op) {
            Some(Ok(ControllerReply::CreateTopics { results, .. })) => {
                let image = self.image();
                results
                    .into_iter()
                    .map(|r| {
                        r.and_then(|name| {
                            image.topic(&name).cloned().ok_or_else(|| {
                                ControllerError::NotController(
                                    "The topic was created but is not visible here yet.".into(),
                                )
                            })
                        })
                    })
                    .collect()
            }
            Some(Ok(_)) => (0..count).map(|_| Err(mismatch())).collect(),
            Some(Err(e)) => (0..count).map(|_| Err(e.clone())).collect(),
            None => Vec::new(),
        }
    }

    /// DeleteTopics: one result per reference, in order, with the deleted topic's name and id.
    pub fn delete_topics(
        &self,
        names_or_ids: Vec<TopicRef>,
    ) -> Vec<Result<(String, Uuid), ControllerError>> {
        let count = names_or_ids.len();
        match self.forwarded(ControllerOp::DeleteTopics {
            refs: names_or_ids.clone(),
        }) {
            Some(Ok(ControllerReply::DeleteTopics { results, .. })) => results,
            Some(Ok(_)) => (0..count).map(|_| Err(mismatch())).collect(),
            Some(Err(e)) => (0..count).map(|_| Err(e.clone())).collect(),
            None => self.delete_topics_here(names_or_ids),
        }
    }

    /// CreatePartitions: grows `topic` to `new_total` partitions.
    pub fn create_partitions(
        &self,
        topic: &str,
        new_total: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        if validate_only {
            return self.create_partitions_here(topic, new_total, assignments, true);
        }
        let op = ControllerOp::CreatePartitions {
            topic: topic.to_owned(),
            new_total,
            assignments: assignments.clone(),
        };
        match self.forwarded(op) {
            Some(Ok(ControllerReply::Done { result, .. })) => result,
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None => self.create_partitions_here(topic, new_total, assignments, false),
        }
    }

    /// IncrementalAlterConfigs: applies every change or none.
    pub fn alter_configs(
        &self,
        changes: Vec<ConfigChange>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        if validate_only {
            return self.alter_configs_here(changes, true);
        }
        match self.forwarded(ControllerOp::AlterConfigs {
            changes: changes.clone(),
        }) {
            Some(Ok(ControllerReply::Done { result, .. })) => result,
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None => self.alter_configs_here(changes, false),
        }
    }

    /// AlterConfigs: replaces the whole set of dynamic configs of `resource` by `configs`.
    pub fn replace_configs(
        &self,
        resource: ConfigResource,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ControllerError> {
        if validate_only {
            return self.replace_configs_here(resource, configs, true);
        }
        let op = ControllerOp::ReplaceConfigs {
            resource: resource.clone(),
            configs: configs.clone(),
        };
        match self.forwarded(op) {
            Some(Ok(ControllerReply::Done { result, .. })) => result,
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None => self.replace_configs_here(resource, configs, false),
        }
    }

    /// AlterPartition from a partition leader: a new ISR, applied if the leader's view is
    /// current. Returns the partition as committed (or as it stands, when unchanged).
    pub fn alter_partition(
        &self,
        req: AlterPartitionRequest,
    ) -> Result<PartitionImage, ControllerError> {
        match self.forwarded(ControllerOp::AlterPartition(req.clone())) {
            Some(Ok(ControllerReply::AlterPartition { result, .. })) => result,
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None => self.alter_partition_here(&req),
        }
    }

    /// ElectLeaders (KIP-460): `partitions: None` means every partition.
    pub fn elect_leaders(
        &self,
        election: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<ElectionResult>, ControllerError> {
        let op = ControllerOp::ElectLeaders {
            election,
            partitions: partitions.clone(),
        };
        match self.forwarded(op) {
            Some(Ok(ControllerReply::ElectLeaders { results, .. })) => Ok(results),
            Some(Ok(_)) => Err(mismatch()),
            Some(Err(e)) => Err(e),
            None => Ok(self.elect_leaders_here(election, partitions.as_deref())),
        }
    }
}

/// Answers operations other members forward to this one.
pub(super) struct ForwardHandler {
    controller: Weak<Controller>,
}

impl ForwardHandler {
    pub(super) fn new(controller: &Arc<Controller>) -> ForwardHandler {
        ForwardHandler {
            controller: Arc::downgrade(controller),
        }
    }
}

impl ForwardedOpHandler for ForwardHandler {
    fn handle(&self, op: String) -> BoxFuture<Result<String, String>> {
        let controller = self.controller.upgrade();
        Box::pin(async move {
            let controller = controller.ok_or("the controller stopped")?;
            let op: ControllerOp =
                serde_json::from_str(&op).map_err(|e| format!("malformed operation: {e}"))?;
            if controller.forwards_writes() {
                return Err("not the active controller".into());
            }
            if let ControllerOp::FetchImage { known_offset } = op {
                let updates = controller
                    .quorum()
                    .map(|q| q.updates())
                    .ok_or("not a quorum member")?;
                let reply = super::observer::answer_image_poll(updates, known_offset).await;
                return serde_json::to_string(&reply).map_err(|e| e.to_string());
            }
            let reply = tokio::task::spawn_blocking(move || controller.execute(op))
                .await
                .map_err(|e| e.to_string())?;
            serde_json::to_string(&reply).map_err(|e| e.to_string())
        })
    }
}
