use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kavka_metadata::{describe_topic_configs, CreateTopicSpec, TopicDefaults};
use std::collections::{BTreeMap, HashSet};

pub fn handle(b: &Broker, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let defaults = TopicDefaults {
        num_partitions: b.config.num_partitions,
        replication_factor: b.config.default_replication_factor,
    };
    // Kafka rejects a topic named twice in one request with INVALID_REQUEST for each copy.
    let mut seen = HashSet::new();
    let dups: HashSet<String> = req
        .topics
        .iter()
        .map(|t| t.name.to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let mut results = Vec::with_capacity(req.topics.len());
    let mut specs = Vec::new();
    let mut spec_slots = Vec::new();
    for t in &req.topics {
        let name = t.name.to_string();
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if dups.contains(&name) {
            results.push(
                result
                    .with_error_code(kavka_protocol::error::ErrorCode::InvalidRequest.code())
                    .with_error_message(Some(str_bytes("duplicate topic name in request"))),
            );
            continue;
        }
        let mut configs = BTreeMap::new();
        for c in &t.configs {
            if let Some(v) = &c.value {
                configs.insert(c.name.to_string(), v.to_string());
            }
        }
        specs.push(CreateTopicSpec {
            name,
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|id| id.0).collect(),
                    )
                })
                .collect(),
            configs,
        });
        spec_slots.push(results.len());
        results.push(result);
    }
    let outcomes = b
        .controller
        .create_topics(specs, req.validate_only, &defaults);
    let broker_props = b.config.broker_log_props();
    for (slot, outcome) in spec_slots.into_iter().zip(outcomes) {
        let r = &mut results[slot];
        match outcome {
            Ok(topic) => {
                r.topic_id = topic.topic_id;
                r.num_partitions = topic.partitions.len() as i32;
                r.replication_factor = topic
                    .partitions
                    .values()
                    .next()
                    .map(|p| p.replicas.len() as i16)
                    .unwrap_or(-1);
                if version >= 5 {
                    let configs = describe_topic_configs(&topic.configs, &broker_props)
                        .into_iter()
                        .map(|e| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(&e.name))
                                .with_value(e.value.as_deref().map(str_bytes))
                                .with_read_only(e.read_only)
                                .with_config_source(e.source as i8)
                                .with_is_sensitive(e.is_sensitive)
                        })
                        .collect();
                    r.configs = Some(configs);
                }
            }
            Err(e) => {
                r.error_code = e.code();
                r.error_message = Some(str_bytes(&e.to_string()));
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}
