use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kavka_metadata::{CreateTopicSpec, MetadataImage, TopicDefaults, TopicImage};
use kavka_protocol::error::ErrorCode;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Kafka's "not requested" marker for authorized operations.
const AUTHORIZED_OPS_OMITTED: i32 = i32::MIN;

pub fn topic_response(t: &TopicImage, image: &MetadataImage) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .values()
        .map(|p| {
            let offline: Vec<BrokerId> = p
                .replicas
                .iter()
                .filter(|r| !image.is_live_broker(**r))
                .map(|r| BrokerId(*r))
                .collect();
            // Offline (no live in-sync replica): clients back off and refresh.
            let error = if p.leader < 0 {
                ErrorCode::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                .with_offline_replicas(offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&t.name))))
        .with_topic_id(t.topic_id)
        .with_is_internal(crate::internal_topics::is_internal(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPS_OMITTED)
}

fn error_topic(name: Option<&str>, id: uuid::Uuid, code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name.map(|n| TopicName(str_bytes(n))))
        .with_topic_id(id)
        .with_topic_authorized_operations(AUTHORIZED_OPS_OMITTED)
}

pub fn handle(b: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    let mut image = b.controller.image();
    // v0 had no null: an empty list meant "all topics". v4+ carries the auto-create flag;
    // before that, Metadata always auto-created.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let auto_create =
        b.config.auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    if all {
        topics.extend(image.topics.values().map(|t| topic_response(t, &image)));
    } else {
        let requested = req.topics.unwrap_or_default();
        // Auto-create what is missing first, in one controller call.
        if auto_create {
            let missing: Vec<String> = requested
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                .filter(|n| image.topic(n).is_none())
                .collect();
            if !missing.is_empty() {
                let specs = missing
                    .iter()
                    .map(|n| CreateTopicSpec {
                        name: n.clone(),
                        num_partitions: -1,
                        replication_factor: -1,
                        assignments: Vec::new(),
                        configs: BTreeMap::new(),
                    })
                    .collect();
                let defaults = TopicDefaults {
                    num_partitions: b.config.num_partitions,
                    replication_factor: b.config.default_replication_factor,
                };
                for (name, r) in missing
                    .iter()
                    .zip(b.controller.create_topics(specs, false, &defaults))
                {
                    match r {
                        Ok(_) => tracing::info!(topic = %name, "auto-created topic"),
                        Err(e) => tracing::debug!(topic = %name, "auto-create failed: {e}"),
                    }
                }
                image = b.controller.image();
            }
        }
        for t in &requested {
            let found: Option<&Arc<TopicImage>> = match &t.name {
                Some(n) => image.topic(n),
                None => image.topic_by_id(&t.topic_id),
            };
            topics.push(match (found, &t.name) {
                (Some(topic), _) => topic_response(topic, &image),
                (None, Some(n)) => {
                    let code = if kavka_metadata::validate_topic_name(n).is_err() {
                        ErrorCode::InvalidTopicException
                    } else {
                        ErrorCode::UnknownTopicOrPartition
                    };
                    error_topic(Some(n), t.topic_id, code)
                }
                (None, None) => error_topic(None, t.topic_id, ErrorCode::UnknownTopicId),
            });
        }
    }
    // Fenced brokers lead nothing; clients should not try them.
    let brokers = image
        .live_brokers()
        .map(|br| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(br.node_id))
                .with_host(str_bytes(&br.host))
                .with_port(br.port as i32)
                .with_rack(br.rack.as_deref().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&image.cluster_id)))
        .with_controller_id(BrokerId(b.controller.active_controller_id().unwrap_or(-1)))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPS_OMITTED)
}
