//! Topic and config administration: CreateTopics, DeleteTopics, Metadata, DescribeConfigs,
//! CreatePartitions and IncrementalAlterConfigs.

use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use uuid::Uuid;

use crate::cluster::{ClientConfig, Cluster, PartitionMetadata};
use crate::error::{self, codes, ClientError};
use crate::Result;

/// `ConfigResource.Type.TOPIC`.
pub const RESOURCE_TOPIC: i8 = 2;
/// `ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG`.
pub const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
/// `ConfigEntry.ConfigSource.DEFAULT_CONFIG`.
pub const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// A topic to create. `None` leaves partitions / replication factor to the broker's
/// defaults (`num.partitions`, `default.replication.factor`).
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<i32>,
    pub replication_factor: Option<i16>,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's `ConfigSource` id (1 dynamic topic config ... 5 default).
    pub source: i8,
    pub read_only: bool,
    pub is_sensitive: bool,
}

impl ConfigEntry {
    /// Whether the value is the built-in default (Kafka's `ConfigEntry.isDefault`).
    pub fn is_default(&self) -> bool {
        self.source == SOURCE_DEFAULT_CONFIG
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: Uuid,
    pub is_internal: bool,
    pub partitions: Vec<PartitionMetadata>,
    pub configs: Vec<ConfigEntry>,
}

/// One change of an IncrementalAlterConfigs request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

impl AlterConfigOp {
    fn to_alterable(&self) -> AlterableConfig {
        let (name, op, value) = match self {
            AlterConfigOp::Set(k, v) => (k, 0, Some(v)),
            AlterConfigOp::Delete(k) => (k, 1, None),
            AlterConfigOp::Append(k, v) => (k, 2, Some(v)),
            AlterConfigOp::Subtract(k, v) => (k, 3, Some(v)),
        };
        AlterableConfig::default()
            .with_name(str_bytes(name))
            .with_config_operation(op)
            .with_value(value.map(|v| str_bytes(v)))
    }
}

/// The admin client.
pub struct Admin {
    cluster: Cluster,
    /// Broker-side timeout for topic operations.
    pub operation_timeout: Duration,
}

impl Admin {
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        Ok(Admin::new(Cluster::connect(config).await?))
    }

    pub fn new(cluster: Cluster) -> Self {
        Admin {
            cluster,
            operation_timeout: Duration::from_secs(30),
        }
    }

    pub fn cluster(&mut self) -> &mut Cluster {
        &mut self.cluster
    }

    /// Creates `topics`; one result per topic, in order.
    pub async fn create_topics(&mut self, topics: &[NewTopic]) -> Result<Vec<Result<()>>> {
        let timeout_ms = millis(self.operation_timeout);
        let resp = self
            .controller_request(|_| create_topics_request(topics, timeout_ms))
            .await?;
        Ok(topics
            .iter()
            .map(|t| {
                let subject = format!("topic '{}'", t.name);
                match resp.topics.iter().find(|r| r.name.0.as_str() == t.name) {
                    Some(r) => error::check(r.error_code, &subject, r.error_message.as_deref()),
                    None => Err(ClientError::InvalidArgument(format!(
                        "the broker did not answer for {subject}"
                    ))),
                }
            })
            .collect())
    }

    /// Creates one topic.
    pub async fn create_topic(&mut self, topic: NewTopic) -> Result<()> {
        first(self.create_topics(std::slice::from_ref(&topic)).await?)
    }

    /// Deletes topics by name; one result per topic, in order.
    pub async fn delete_topics(&mut self, names: &[&str]) -> Result<Vec<Result<()>>> {
        let timeout_ms = millis(self.operation_timeout);
        let resp = self
            .controller_request(|version| delete_topics_request(version, names, timeout_ms))
            .await?;
        for n in names {
            self.cluster.invalidate(n);
        }
        Ok(names
            .iter()
            .map(|n| {
                let subject = format!("topic '{n}'");
                match resp
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|x| x.0.as_str() == *n))
                {
                    Some(r) => error::check(r.error_code, &subject, r.error_message.as_deref()),
                    None => Err(ClientError::InvalidArgument(format!(
                        "the broker did not answer for {subject}"
                    ))),
                }
            })
            .collect())
    }

    pub async fn delete_topic(&mut self, name: &str) -> Result<()> {
        first(self.delete_topics(&[name]).await?)
    }

    /// Names of all topics, sorted.
    pub async fn list_topics(&mut self, include_internal: bool) -> Result<Vec<String>> {
        let results = self.cluster.fetch_metadata(None).await?;
        let mut names: Vec<String> = results
            .into_iter()
            .filter(|r| include_internal || !r.metadata.as_ref().is_some_and(|m| m.is_internal))
            .map(|r| r.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Partitions, leaders, replicas, ISR, topic id and configs of each named topic.
    pub async fn describe_topics(&mut self, names: &[&str]) -> Result<Vec<TopicDescription>> {
        let results = self.cluster.fetch_metadata(Some(names)).await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let subject = format!("topic '{name}'");
            let md = match results.iter().find(|r| r.name == *name) {
                Some(r) => match &r.metadata {
                    Some(md) => md.clone(),
                    None => return Err(ClientError::kafka(r.error_code, &subject, None)),
                },
                None => {
                    return Err(ClientError::kafka(
                        codes::UNKNOWN_TOPIC_OR_PARTITION,
                        &subject,
                        None,
                    ))
                }
            };
            let configs = self.describe_topic_configs(name).await?;
            out.push(TopicDescription {
                name: md.name,
                topic_id: md.topic_id,
                is_internal: md.is_internal,
                partitions: md.partitions,
                configs,
            });
        }
        Ok(out)
    }

    /// Every config of `topic` with its source, via DescribeConfigs.
    pub async fn describe_topic_configs(&mut self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let request = describe_configs_request(topic);
        let resp = self.cluster.send_any(&request).await?;
        let subject = format!("topic '{topic}'");
        let result = resp
            .results
            .into_iter()
            .find(|r| r.resource_type == RESOURCE_TOPIC && r.resource_name.as_str() == topic)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!("the broker did not describe {subject}"))
            })?;
        error::check(result.error_code, &subject, result.error_message.as_deref())?;
        let mut configs: Vec<ConfigEntry> = result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: c.config_source,
                read_only: c.read_only,
                is_sensitive: c.is_sensitive,
            })
            .collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(configs)
    }

    /// Grows `topic` to `total_count` partitions.
    pub async fn create_partitions(&mut self, topic: &str, total_count: i32) -> Result<()> {
        let timeout_ms = millis(self.operation_timeout);
        let resp = self
            .controller_request(|_| create_partitions_request(topic, total_count, timeout_ms))
            .await?;
        self.cluster.invalidate(topic);
        let subject = format!("topic '{topic}'");
        match resp.results.iter().find(|r| r.name.0.as_str() == topic) {
            Some(r) => error::check(r.error_code, &subject, r.error_message.as_deref()),
            None => Err(ClientError::InvalidArgument(format!(
                "the broker did not answer for {subject}"
            ))),
        }
    }

    /// Applies `ops` to the configs of `topic`.
    pub async fn incremental_alter_configs(
        &mut self,
        topic: &str,
        ops: &[AlterConfigOp],
    ) -> Result<()> {
        let request = incremental_alter_configs_request(topic, ops);
        let resp = self.cluster.send_any(&request).await?;
        let subject = format!("topic '{topic}'");
        match resp
            .responses
            .iter()
            .find(|r| r.resource_type == RESOURCE_TOPIC && r.resource_name.as_str() == topic)
        {
            Some(r) => error::check(r.error_code, &subject, r.error_message.as_deref()),
            None => Err(ClientError::InvalidArgument(format!(
                "the broker did not answer for {subject}"
            ))),
        }
    }

    /// Sends a controller-bound request, retrying on NOT_CONTROLLER / connection loss.
    async fn controller_request<R, F>(&mut self, build: F) -> Result<R::Response>
    where
        R: Request,
        F: Fn(i16) -> R,
        R::Response: TopLevelError,
    {
        let mut attempt = 0;
        loop {
            let result = async {
                let conn = self.cluster.controller_connection().await?;
                let version = conn.version_for::<R>(None)?;
                let resp = conn
                    .send_version(&build(version), version, Duration::ZERO)
                    .await?;
                if resp.top_level_error() == codes::NOT_CONTROLLER {
                    return Err(ClientError::kafka(
                        codes::NOT_CONTROLLER,
                        "admin request",
                        None,
                    ));
                }
                Ok(resp)
            }
            .await;
            match result {
                Err(e) if e.is_retriable() && attempt < self.cluster.config().retries => {
                    attempt += 1;
                    tokio::time::sleep(self.cluster.config().backoff(attempt)).await;
                    // The controller may have moved.
                    let _ = self.cluster.fetch_metadata(Some(&[][..])).await;
                }
                other => return other,
            }
        }
    }
}

/// NOT_CONTROLLER shows up per topic; this finds it so the request can be re-routed.
pub trait TopLevelError {
    fn top_level_error(&self) -> i16;
}

impl TopLevelError for kafka_protocol::messages::CreateTopicsResponse {
    fn top_level_error(&self) -> i16 {
        any_code(self.topics.iter().map(|t| t.error_code))
    }
}
impl TopLevelError for kafka_protocol::messages::DeleteTopicsResponse {
    fn top_level_error(&self) -> i16 {
        any_code(self.responses.iter().map(|t| t.error_code))
    }
}
impl TopLevelError for kafka_protocol::messages::CreatePartitionsResponse {
    fn top_level_error(&self) -> i16 {
        any_code(self.results.iter().map(|t| t.error_code))
    }
}

fn any_code(mut codes_iter: impl Iterator<Item = i16>) -> i16 {
    if codes_iter.any(|c| c == codes::NOT_CONTROLLER) {
        codes::NOT_CONTROLLER
    } else {
        codes::NONE
    }
}

fn first(results: Vec<Result<()>>) -> Result<()> {
    results.into_iter().next().unwrap_or(Ok(()))
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Partitions / replication factor -1 ask for the broker's defaults (CreateTopics v4+).
pub fn create_topics_request(topics: &[NewTopic], timeout_ms: i32) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(topic_name(&t.name))
                        .with_num_partitions(t.partitions.unwrap_or(-1))
                        .with_replication_factor(t.replication_factor.unwrap_or(-1))
                        .with_configs(
                            t.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default()
                                        .with_name(str_bytes(k))
                                        .with_value(Some(str_bytes(v)))
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

/// DeleteTopics names topics in `topic_names` before v6 and in `topics` from v6 on.
pub fn delete_topics_request(version: i16, names: &[&str], timeout_ms: i32) -> DeleteTopicsRequest {
    let request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
    if version >= 6 {
        request.with_topics(
            names
                .iter()
                .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                .collect(),
        )
    } else {
        request.with_topic_names(names.iter().map(|n| topic_name(n)).collect())
    }
}

pub fn describe_configs_request(topic: &str) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(str_bytes(topic))
        .with_configuration_keys(None)])
}

pub fn create_partitions_request(
    topic: &str,
    count: i32,
    timeout_ms: i32,
) -> CreatePartitionsRequest {
    CreatePartitionsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(topic))
            .with_count(count)
            .with_assignments(None)])
}

pub fn incremental_alter_configs_request(
    topic: &str,
    ops: &[AlterConfigOp],
) -> IncrementalAlterConfigsRequest {
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(str_bytes(topic))
        .with_configs(ops.iter().map(AlterConfigOp::to_alterable).collect())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    /// Every version kavka advertises and the codec knows.
    fn versions<R: Message>(api: ApiKey) -> std::ops::RangeInclusive<i16> {
        let (lo, hi) = kavka_protocol::api_versions::supported_range(api).unwrap();
        lo.max(R::VERSIONS.min)..=hi.min(R::VERSIONS.max)
    }

    fn round_trip<R: Encodable + Decodable>(req: &R, v: i16) -> R {
        let mut buf = BytesMut::new();
        req.encode(&mut buf, v)
            .unwrap_or_else(|e| panic!("v{v}: {e}"));
        R::decode(&mut buf.freeze(), v).unwrap()
    }

    #[test]
    fn create_topics_at_every_version() {
        let topic = NewTopic {
            name: "t".into(),
            partitions: Some(3),
            replication_factor: Some(1),
            configs: vec![("cleanup.policy".into(), "compact".into())],
        };
        for v in versions::<CreateTopicsRequest>(ApiKey::CreateTopics) {
            let back = round_trip(
                &create_topics_request(std::slice::from_ref(&topic), 1000),
                v,
            );
            assert_eq!(back.topics[0].name.0.as_str(), "t");
            assert_eq!(back.topics[0].num_partitions, 3);
            assert_eq!(back.topics[0].configs[0].value.as_deref(), Some("compact"));
        }
    }

    #[test]
    fn delete_topics_at_every_version() {
        for v in versions::<DeleteTopicsRequest>(ApiKey::DeleteTopics) {
            let back = round_trip(&delete_topics_request(v, &["a", "b"], 1000), v);
            let names: Vec<String> = if v >= 6 {
                back.topics
                    .iter()
                    .map(|t| t.name.as_ref().unwrap().0.to_string())
                    .collect()
            } else {
                back.topic_names.iter().map(|t| t.0.to_string()).collect()
            };
            assert_eq!(names, ["a", "b"], "v{v}");
        }
    }

    #[test]
    fn config_requests_at_every_version() {
        for v in versions::<DescribeConfigsRequest>(ApiKey::DescribeConfigs) {
            let back = round_trip(&describe_configs_request("t"), v);
            assert_eq!(back.resources[0].resource_type, RESOURCE_TOPIC);
        }
        let ops = [
            AlterConfigOp::Set("retention.ms".into(), "1000".into()),
            AlterConfigOp::Delete("cleanup.policy".into()),
        ];
        for v in versions::<IncrementalAlterConfigsRequest>(ApiKey::IncrementalAlterConfigs) {
            let back = round_trip(&incremental_alter_configs_request("t", &ops), v);
            let c = &back.resources[0].configs;
            assert_eq!((c[0].config_operation, c[1].config_operation), (0, 1));
            assert_eq!(c[1].value, None);
        }
        for v in versions::<CreatePartitionsRequest>(ApiKey::CreatePartitions) {
            let back = round_trip(&create_partitions_request("t", 5, 1000), v);
            assert_eq!(back.topics[0].count, 5);
        }
    }

    #[test]
    fn responses_decode_at_every_version() {
        use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
        use kafka_protocol::messages::CreateTopicsResponse;
        for v in versions::<CreateTopicsRequest>(ApiKey::CreateTopics) {
            let resp =
                CreateTopicsResponse::default().with_topics(vec![CreatableTopicResult::default()
                    .with_name(topic_name("t"))
                    .with_error_code(36)
                    .with_error_message(Some(str_bytes("exists")))]);
            let back = round_trip(&resp, v);
            assert_eq!(back.topics[0].error_code, 36);
            assert_eq!(back.top_level_error(), codes::NONE);
        }
    }
}
