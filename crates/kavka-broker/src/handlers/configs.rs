//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics and brokers.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kavka_metadata::{
    describe_topic_configs, ConfigChange, ConfigEntry, ConfigOp, ConfigResource, ControllerError,
};
use kavka_protocol::error::ErrorCode;
use std::collections::BTreeMap;

/// Kafka's ConfigResource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;

/// Kafka's DescribeConfigs config sources.
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

fn resolve(
    b: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<ConfigResource, (ErrorCode, String)> {
    match resource_type {
        TOPIC => {
            if b.controller.image().topic(name).is_none() {
                return Err((
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                ));
            }
            Ok(ConfigResource::Topic(name.to_string()))
        }
        BROKER => {
            // "" addresses the cluster-wide default; otherwise it must be our node id.
            if name.is_empty() {
                return Ok(ConfigResource::Broker(-1));
            }
            match name.parse::<i32>() {
                Ok(id) if id == b.node_id() => Ok(ConfigResource::Broker(id)),
                _ => Err((
                    ErrorCode::InvalidRequest,
                    format!("unexpected broker id '{name}'"),
                )),
            }
        }
        BROKER_LOGGER => Err((
            ErrorCode::InvalidRequest,
            "broker logger configs are not supported".into(),
        )),
        other => Err((
            ErrorCode::InvalidRequest,
            format!("unknown resource type {other}"),
        )),
    }
}

fn broker_entries(b: &Broker) -> Vec<ConfigEntry> {
    let mut values = b.config.broker_log_props();
    for (k, v) in &b.config.props {
        values.insert(k.clone(), v.clone());
    }
    values
        .into_iter()
        .map(|(name, value)| {
            let source = if b.config.props.contains_key(&name) {
                STATIC_BROKER_CONFIG
            } else {
                DEFAULT_CONFIG
            };
            ConfigEntry::simple(name, Some(value), source)
        })
        .collect()
}

fn to_result(e: ConfigEntry, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(&e.name))
        .with_value(e.value.as_deref().map(str_bytes))
        .with_read_only(e.read_only)
        .with_config_source(e.source as i8)
        .with_is_sensitive(e.is_sensitive)
        .with_config_type(e.config_type)
        .with_documentation(if docs {
            e.documentation.as_deref().map(str_bytes)
        } else {
            None
        })
        .with_synonyms(if synonyms {
            e.synonyms
                .iter()
                .map(|(n, v, s)| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(n))
                        .with_value(v.as_deref().map(str_bytes))
                        .with_source(*s as i8)
                })
                .collect()
        } else {
            Vec::new()
        })
}

pub fn describe(b: &Broker, req: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let docs = version >= 3 && req.include_documentation;
    let results = req
        .resources
        .iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match resolve(b, r.resource_type, &r.resource_name) {
                Err((code, msg)) => {
                    return base
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(&msg)))
                }
                Ok(ConfigResource::Topic(name)) => {
                    let image = b.controller.image();
                    let overrides = image
                        .topic(&name)
                        .map(|t| t.configs.clone())
                        .unwrap_or_default();
                    describe_topic_configs(&overrides, &b.config.broker_log_props())
                }
                Ok(ConfigResource::Broker(_)) => broker_entries(b),
            };
            let wanted: Option<Vec<String>> = r
                .configuration_keys
                .as_ref()
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let configs = entries
                .into_iter()
                .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&e.name)))
                .map(|e| to_result(e, req.include_synonyms, docs))
                .collect();
            base.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn outcome(r: Result<(), ControllerError>) -> (i16, Option<StrBytes>) {
    match r {
        Ok(()) => (0, None),
        Err(e) => (e.code(), Some(str_bytes(&e.to_string()))),
    }
}

pub fn alter(b: &Broker, req: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
    let responses = req
        .resources
        .iter()
        .map(|r| {
            let (code, msg) = match resolve(b, r.resource_type, &r.resource_name) {
                Err((code, msg)) => (code.code(), Some(str_bytes(&msg))),
                Ok(resource) => {
                    let configs: BTreeMap<String, String> = r
                        .configs
                        .iter()
                        .filter_map(|c| {
                            c.value
                                .as_ref()
                                .map(|v| (c.name.to_string(), v.to_string()))
                        })
                        .collect();
                    outcome(
                        b.controller
                            .replace_configs(resource, configs, req.validate_only),
                    )
                }
            };
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(msg)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub fn incremental_alter(
    b: &Broker,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
) -> IncrementalAlterConfigsResponse {
    let responses = req
        .resources
        .iter()
        .map(|r| {
            let (code, msg) = match resolve(b, r.resource_type, &r.resource_name) {
                Err((code, msg)) => (code.code(), Some(str_bytes(&msg))),
                Ok(resource) => {
                    let mut changes = Vec::with_capacity(r.configs.len());
                    let mut bad = None;
                    for c in &r.configs {
                        let value = c.value.as_ref().map(|v| v.to_string());
                        let op = match (c.config_operation, value) {
                            (0, Some(v)) => ConfigOp::Set(v),
                            (1, _) => ConfigOp::Delete,
                            (2, Some(v)) => ConfigOp::Append(v),
                            (3, Some(v)) => ConfigOp::Subtract(v),
                            (op, _) => {
                                bad = Some(format!(
                                    "invalid operation {op} for config '{}'",
                                    c.name.as_str()
                                ));
                                break;
                            }
                        };
                        changes.push(ConfigChange {
                            resource: resource.clone(),
                            name: c.name.to_string(),
                            op,
                        });
                    }
                    match bad {
                        Some(m) => (ErrorCode::InvalidRequest.code(), Some(str_bytes(&m))),
                        None => outcome(b.controller.alter_configs(changes, req.validate_only)),
                    }
                }
            };
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(msg)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
