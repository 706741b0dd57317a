//! The client's view of a cluster: bootstrap, a metadata cache, one connection per broker,
//! and leader lookup with bounded retries when the cache turns out stale.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use uuid::Uuid;

use crate::connection::{Connection, ConnectionOptions};
use crate::error::{self, codes, ClientError};
use crate::Result;

/// How to reach the cluster and how patient to be.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` list; the first reachable one is used to discover the rest.
    pub bootstrap_servers: Vec<String>,
    pub connection: ConnectionOptions,
    /// Attempts for an operation that fails with a retriable error (stale leader etc.).
    pub retries: u32,
    /// First backoff between attempts; doubles up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    /// Whether Metadata requests for named topics may auto-create them (producers).
    pub allow_auto_topic_creation: bool,
}

impl ClientConfig {
    /// Parses a Kafka-style comma-separated `--bootstrap-server` list.
    pub fn new(bootstrap_servers: &str) -> Result<Self> {
        let servers: Vec<String> = bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no bootstrap server given".into(),
            ));
        }
        for s in &servers {
            match s.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => {
                    return Err(ClientError::InvalidArgument(format!(
                        "invalid bootstrap server '{s}': expected host:port"
                    )))
                }
            }
        }
        Ok(ClientConfig {
            bootstrap_servers: servers,
            connection: ConnectionOptions::default(),
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            max_retry_backoff: Duration::from_secs(1),
            allow_auto_topic_creation: false,
        })
    }

    /// The pause before attempt `attempt` (1-based retries).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(16).saturating_sub(1);
        (self.retry_backoff * factor).min(self.max_retry_backoff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerMetadata {
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    pub error_code: i16,
    /// -1 when there is no leader.
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// Nil when the broker predates topic IDs (Metadata < v10).
    pub topic_id: Uuid,
    pub is_internal: bool,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        self.partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }
}

/// Bootstrap connection, broker table, metadata cache and per-broker connections.
pub struct Cluster {
    config: ClientConfig,
    brokers: HashMap<i32, BrokerMetadata>,
    controller_id: i32,
    cluster_id: Option<String>,
    topics: HashMap<String, TopicMetadata>,
    connections: HashMap<i32, Connection>,
    /// The connection used before (or besides) knowing node ids.
    bootstrap: Option<Connection>,
}

impl Cluster {
    /// Connects to the first reachable bootstrap server and learns the brokers.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let mut cluster = Cluster {
            config,
            brokers: HashMap::new(),
            controller_id: -1,
            cluster_id: None,
            topics: HashMap::new(),
            connections: HashMap::new(),
            bootstrap: None,
        };
        cluster.bootstrap_connection().await?;
        cluster.fetch_metadata(Some(&[][..])).await?;
        Ok(cluster)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerMetadata> {
        self.brokers.values()
    }

    pub fn controller_id(&self) -> i32 {
        self.controller_id
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    async fn bootstrap_connection(&mut self) -> Result<&mut Connection> {
        if self.bootstrap.as_ref().is_some_and(|c| c.is_broken()) {
            self.bootstrap = None;
        }
        if self.bootstrap.is_none() {
            let mut last = None;
            for addr in &self.config.bootstrap_servers {
                match Connection::connect(addr, &self.config.connection).await {
                    Ok(c) => {
                        self.bootstrap = Some(c);
                        break;
                    }
                    Err(e) => {
                        tracing::debug!("bootstrap server {addr}: {e}");
                        last = Some(e);
                    }
                }
            }
            if self.bootstrap.is_none() {
                return Err(last.unwrap_or_else(|| {
                    ClientError::InvalidArgument("no bootstrap server given".into())
                }));
            }
        }
        self.bootstrap
            .as_mut()
            .ok_or_else(|| ClientError::InvalidArgument("unreachable".into()))
    }

    /// The connection to `node_id`, opened on first use.
    pub async fn connection(&mut self, node_id: i32) -> Result<&mut Connection> {
        if self
            .connections
            .get(&node_id)
            .is_some_and(|c| c.is_broken())
        {
            self.connections.remove(&node_id);
        }
        if !self.connections.contains_key(&node_id) {
            let broker = self.brokers.get(&node_id).ok_or_else(|| {
                ClientError::InvalidArgument(format!("broker {node_id} is not in the metadata"))
            })?;
            let conn = Connection::connect(&broker.addr(), &self.config.connection).await?;
            self.connections.insert(node_id, conn);
        }
        self.connections
            .get_mut(&node_id)
            .ok_or_else(|| ClientError::InvalidArgument("unreachable".into()))
    }

    /// Any live connection: a broker we already talk to, else the bootstrap server.
    pub async fn any_connection(&mut self) -> Result<&mut Connection> {
        self.connections.retain(|_, c| !c.is_broken());
        if let Some(id) = self.connections.keys().next().copied() {
            return self.connection(id).await;
        }
        self.bootstrap_connection().await
    }

    /// Sends `request` to `node_id` at the highest common version.
    pub async fn send_to<R: Request>(&mut self, node_id: i32, request: &R) -> Result<R::Response> {
        self.connection(node_id).await?.send(request).await
    }

    /// Sends `request` to any broker.
    pub async fn send_any<R: Request>(&mut self, request: &R) -> Result<R::Response> {
        self.any_connection().await?.send(request).await
    }

    /// The broker that must receive controller-bound admin requests. With KRaft any broker
    /// forwards them, but a ZooKeeper-era Kafka wants the controller itself.
    pub async fn controller_connection(&mut self) -> Result<&mut Connection> {
        let id = self.controller_id;
        if id >= 0 && self.brokers.contains_key(&id) {
            match self.connection(id).await {
                Ok(_) => return self.connection(id).await,
                Err(e) => tracing::debug!("controller {id}: {e}"),
            }
        }
        self.any_connection().await
    }

    /// Fetches metadata for `topics` (`None`: every topic) and updates the cache. Returns
    /// the topics of the response, errors included, for the caller to judge.
    pub async fn fetch_metadata(&mut self, topics: Option<&[&str]>) -> Result<Vec<TopicResult>> {
        let allow_auto = self.config.allow_auto_topic_creation;
        let mut attempt = 0;
        loop {
            let result = async {
                let conn = self.any_connection().await?;
                let version = conn.version_for::<MetadataRequest>(None)?;
                let request = metadata_request(version, topics, allow_auto);
                let resp = conn.send_version(&request, version, Duration::ZERO).await?;
                Ok::<_, ClientError>((conn.addr().to_string(), resp))
            }
            .await;
            match result {
                Ok((addr, resp)) => return self.apply_metadata(&addr, resp, topics.is_none()),
                Err(e) if e.is_retriable() && attempt < self.config.retries => {
                    attempt += 1;
                    tracing::debug!("metadata: {e}; retrying");
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn apply_metadata(
        &mut self,
        addr: &str,
        resp: MetadataResponse,
        all_topics: bool,
    ) -> Result<Vec<TopicResult>> {
        error::check(resp.error_code, "metadata", None)?;
        let mut brokers = HashMap::new();
        for b in resp.brokers {
            let broker = BrokerMetadata {
                node_id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
            };
            brokers.insert(broker.node_id, broker);
        }
        if brokers.is_empty() {
            return Err(ClientError::protocol(addr, "metadata lists no brokers"));
        }
        // A broker whose address changed needs a new connection.
        self.connections
            .retain(|id, _| self.brokers.get(id) == brokers.get(id));
        self.brokers = brokers;
        // The bootstrap connection doubles as the node's own when the addresses agree.
        if let Some(node) = self.bootstrap.as_ref().and_then(|b| {
            self.brokers
                .values()
                .find(|m| m.addr() == b.addr())
                .map(|m| m.node_id)
        }) {
            if !self.connections.contains_key(&node) {
                if let Some(conn) = self.bootstrap.take() {
                    self.connections.insert(node, conn);
                }
            }
        }
        self.controller_id = resp.controller_id.0;
        self.cluster_id = resp.cluster_id.map(|c| c.to_string());
        if all_topics {
            self.topics.clear();
        }
        let mut results = Vec::with_capacity(resp.topics.len());
        for t in resp.topics {
            let Some(name) = t.name.map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code != codes::NONE {
                self.topics.remove(&name);
                results.push(TopicResult {
                    name,
                    error_code: t.error_code,
                    metadata: None,
                });
                continue;
            }
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .into_iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    error_code: p.error_code,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.into_iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.into_iter().map(|b| b.0).collect(),
                    offline_replicas: p.offline_replicas.into_iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let md = TopicMetadata {
                name: name.clone(),
                topic_id: t.topic_id,
                is_internal: t.is_internal,
                partitions,
            };
            self.topics.insert(name.clone(), md.clone());
            results.push(TopicResult {
                name,
                error_code: codes::NONE,
                metadata: Some(md),
            });
        }
        Ok(results)
    }

    /// Cached metadata of `topic`, fetched on a miss. Waits out LEADER_NOT_AVAILABLE (a
    /// freshly created topic) within the retry budget.
    pub async fn topic(&mut self, topic: &str) -> Result<TopicMetadata> {
        if let Some(t) = self.topics.get(topic) {
            return Ok(t.clone());
        }
        let mut attempt = 0;
        loop {
            let results = self.fetch_metadata(Some(&[topic])).await?;
            let r = results.into_iter().find(|r| r.name == topic);
            let err = match r {
                Some(TopicResult {
                    metadata: Some(md), ..
                }) => return Ok(md),
                Some(TopicResult { error_code, .. }) => {
                    ClientError::kafka(error_code, &format!("topic '{topic}'"), None)
                }
                None => ClientError::kafka(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    &format!("topic '{topic}'"),
                    None,
                ),
            };
            // Unknown topics are final unless auto-creation may be under way.
            let retriable = err.code() == Some(codes::LEADER_NOT_AVAILABLE)
                || (self.config.allow_auto_topic_creation && err.is_retriable());
            if !retriable || attempt >= self.config.retries {
                return Err(err);
            }
            attempt += 1;
            tokio::time::sleep(self.config.backoff(attempt)).await;
        }
    }

    /// Partition count of `topic`, fetching metadata on a miss (cheaper than [`Cluster::topic`]
    /// on the hot path: no clone).
    pub async fn partition_count(&mut self, topic: &str) -> Result<i32> {
        if let Some(t) = self.topics.get(topic) {
            return Ok(t.partition_count());
        }
        Ok(self.topic(topic).await?.partition_count())
    }

    /// The leader of `topic`-`partition`, refreshing metadata while it is unknown.
    pub async fn leader_for(&mut self, topic: &str, partition: i32) -> Result<i32> {
        let mut attempt = 0;
        loop {
            let md = self.topic(topic).await?;
            let Some(p) = md.partition(partition) else {
                return Err(ClientError::kafka(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    &format!("partition {topic}-{partition}"),
                    None,
                ));
            };
            if p.leader >= 0 && self.brokers.contains_key(&p.leader) {
                return Ok(p.leader);
            }
            if attempt >= self.config.retries {
                return Err(ClientError::kafka(
                    codes::LEADER_NOT_AVAILABLE,
                    &format!("partition {topic}-{partition}"),
                    Some("no leader"),
                ));
            }
            attempt += 1;
            self.invalidate(topic);
            tokio::time::sleep(self.config.backoff(attempt)).await;
        }
    }

    /// Groups `items` by the leader of the partition each is bound for. Items whose leader
    /// cannot be found come back apart with the error, for the caller to retry or fail.
    pub(crate) async fn group_by_leader<T: ForPartition>(
        &mut self,
        items: impl IntoIterator<Item = T>,
    ) -> (BTreeMap<i32, Vec<T>>, Vec<(T, ClientError)>) {
        let mut by_leader: BTreeMap<i32, Vec<T>> = BTreeMap::new();
        let mut failed = Vec::new();
        for item in items {
            let (topic, partition) = item.topic_partition();
            match self.leader_for(topic, partition).await {
                Ok(leader) => by_leader.entry(leader).or_default().push(item),
                Err(e) => failed.push((item, e)),
            }
        }
        (by_leader, failed)
    }

    /// The topic id of each of `topics`; nil where the metadata has none or cannot be had
    /// (the request then names topics, see [`crate::topic_id::version_cap`]).
    pub async fn topic_ids<'a>(
        &mut self,
        topics: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Uuid> {
        let mut ids = HashMap::new();
        for t in topics {
            if !ids.contains_key(t) {
                let id = self.topic(t).await.map(|m| m.topic_id).unwrap_or_default();
                ids.insert(t.to_string(), id);
            }
        }
        ids
    }

    /// Forgets cached metadata of `topic` (after NOT_LEADER_OR_FOLLOWER and friends).
    pub fn invalidate(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    /// Forgets every cached topic.
    pub fn invalidate_all(&mut self) {
        self.topics.clear();
    }
}

/// Work bound for one partition, as [`Cluster::group_by_leader`] groups it.
pub(crate) trait ForPartition {
    fn topic_partition(&self) -> (&str, i32);
}

impl ForPartition for (&str, i32) {
    fn topic_partition(&self) -> (&str, i32) {
        *self
    }
}

impl ForPartition for (String, i32) {
    fn topic_partition(&self) -> (&str, i32) {
        (&self.0, self.1)
    }
}

/// A partition's payload, such as a producer batch.
impl<T> ForPartition for ((String, i32), T) {
    fn topic_partition(&self) -> (&str, i32) {
        self.0.topic_partition()
    }
}

/// One topic of a Metadata response.
#[derive(Debug, Clone)]
pub struct TopicResult {
    pub name: String,
    pub error_code: i16,
    pub metadata: Option<TopicMetadata>,
}

/// A Metadata request for `topics` (`None`: all) valid at `version`.
pub fn metadata_request(
    version: i16,
    topics: Option<&[&str]>,
    allow_auto: bool,
) -> MetadataRequest {
    let topics = match topics {
        // v0 has no null array: an empty list means "all topics".
        None if version == 0 => Some(Vec::new()),
        None => None,
        Some(names) => Some(
            names
                .iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                })
                .collect(),
        ),
    };
    MetadataRequest::default()
        .with_topics(topics)
        // Before v4 brokers always auto-create; the field must stay at its default there.
        .with_allow_auto_topic_creation(allow_auto || version < 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    #[test]
    fn parses_bootstrap_lists() {
        let c = ClientConfig::new("a:1, b:2").unwrap();
        assert_eq!(c.bootstrap_servers, vec!["a:1", "b:2"]);
        assert!(ClientConfig::new("").is_err());
        assert!(ClientConfig::new("nohost").is_err());
        assert!(ClientConfig::new("h:notaport").is_err());
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(3), Duration::from_millis(400));
        assert_eq!(c.backoff(30), Duration::from_secs(1));
    }

    #[test]
    fn metadata_request_encodes_at_every_negotiable_version() {
        let (lo, hi) = kavka_protocol::api_versions::supported_range(
            kafka_protocol::messages::ApiKey::Metadata,
        )
        .unwrap();
        for v in lo.max(MetadataRequest::VERSIONS.min)..=hi.min(MetadataRequest::VERSIONS.max) {
            for topics in [None, Some(&["a", "b"][..])] {
                for auto in [false, true] {
                    let req = metadata_request(v, topics, auto);
                    let mut buf = bytes::BytesMut::new();
                    req.encode(&mut buf, v)
                        .unwrap_or_else(|e| panic!("v{v}: {e}"));
                    let back = MetadataRequest::decode(&mut buf.freeze(), v).unwrap();
                    let n = back.topics.as_ref().map_or(0, |t| t.len());
                    assert_eq!(n, topics.map_or(0, |t| t.len()), "v{v}");
                }
            }
        }
    }

    #[test]
    fn partition_lookup_is_by_index() {
        let p = |i| PartitionMetadata {
            partition: i,
            error_code: 0,
            leader: 1,
            leader_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
            offline_replicas: vec![],
        };
        let t = TopicMetadata {
            name: "t".into(),
            topic_id: Uuid::nil(),
            is_internal: false,
            partitions: vec![p(0), p(1), p(2)],
        };
        assert_eq!(t.partition(2).map(|p| p.partition), Some(2));
        assert!(t.partition(3).is_none());
        assert_eq!(t.partition_count(), 3);
    }
}
