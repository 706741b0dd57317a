//! The state of a cluster as an operator asks for it: its id, its nodes, the active
//! controller (DescribeCluster, KIP-700), and the partitions that are short of replicas or
//! have no leader (Metadata for every topic, internal ones included).
//!
//! A broker that predates DescribeCluster is described from Metadata alone, which carries
//! the same id, controller and live brokers.

use std::collections::BTreeSet;

use kafka_protocol::messages::{ApiKey, DescribeClusterRequest, DescribeClusterResponse};

use crate::cluster::{BrokerMetadata, Cluster, TopicMetadata};
use crate::error;
use crate::Result;

/// DescribeCluster's `EndpointType.BROKER` (KIP-919): the field's default, so it also
/// encodes at v0, which has no such field.
const ENDPOINT_BROKERS: i8 = 1;

/// One node of [`ClusterDescription::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDescription {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Only brokers answering DescribeCluster v2+ report fenced nodes; older ones list live
    /// brokers alone, so `false` there means "not known to be fenced".
    pub fenced: bool,
}

impl NodeDescription {
    pub fn addr(&self) -> String {
        BrokerMetadata {
            node_id: self.node_id,
            host: self.host.clone(),
            port: self.port,
            rack: None,
        }
        .addr()
    }
}

/// A partition whose ISR is smaller than its replica set, or that has no leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionHealth {
    pub topic: String,
    pub partition: i32,
    /// -1 when the partition has no leader (offline).
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas the broker reports offline (Metadata v5+), plus replicas on no listed node.
    pub offline_replicas: Vec<i32>,
}

impl PartitionHealth {
    /// Under-replicated as kafka-topics.sh --under-replicated-partitions counts it.
    pub fn is_under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }

    /// Offline as kafka-topics.sh --unavailable-partitions counts it: no leader.
    pub fn is_offline(&self) -> bool {
        self.leader < 0
    }
}

/// What `describe_cluster` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: Option<String>,
    /// The active controller as the answering broker knows it; -1 when none is known.
    pub controller_id: i32,
    /// Sorted by node id.
    pub nodes: Vec<NodeDescription>,
    /// Partitions with a short ISR or no leader, sorted by topic and partition.
    pub unhealthy_partitions: Vec<PartitionHealth>,
    /// Topics and partitions looked at (to say "0 of N").
    pub topic_count: usize,
    pub partition_count: usize,
}

impl ClusterDescription {
    pub fn under_replicated(&self) -> impl Iterator<Item = &PartitionHealth> {
        self.unhealthy_partitions
            .iter()
            .filter(|p| p.is_under_replicated())
    }

    pub fn offline(&self) -> impl Iterator<Item = &PartitionHealth> {
        self.unhealthy_partitions.iter().filter(|p| p.is_offline())
    }

    pub fn node(&self, node_id: i32) -> Option<&NodeDescription> {
        self.nodes.iter().find(|n| n.node_id == node_id)
    }
}

/// Describes the cluster `cluster` is connected to: DescribeCluster where the broker has it,
/// then Metadata for every topic.
pub async fn describe_cluster(cluster: &mut Cluster) -> Result<ClusterDescription> {
    let topics = cluster.fetch_metadata(None).await?;
    let mut description = ClusterDescription {
        cluster_id: cluster
            .cluster_id()
            .filter(|id| !id.is_empty())
            .map(str::to_string),
        controller_id: cluster.controller_id(),
        nodes: cluster
            .brokers()
            .map(|b| NodeDescription {
                node_id: b.node_id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                fenced: false,
            })
            .collect(),
        unhealthy_partitions: Vec::new(),
        topic_count: 0,
        partition_count: 0,
    };
    if let Some(resp) = send_describe_cluster(cluster).await? {
        apply_describe_cluster(&mut description, resp);
    }
    description.nodes.sort_by_key(|n| n.node_id);
    let live: BTreeSet<i32> = description
        .nodes
        .iter()
        .filter(|n| !n.fenced)
        .map(|n| n.node_id)
        .collect();
    let mut found: Vec<&TopicMetadata> =
        topics.iter().filter_map(|t| t.metadata.as_ref()).collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    description.topic_count = found.len();
    for topic in found {
        description.partition_count += topic.partitions.len();
        for p in &topic.partitions {
            let health = partition_health(&topic.name, p, &live);
            if health.is_under_replicated() || health.is_offline() {
                description.unhealthy_partitions.push(health);
            }
        }
    }
    Ok(description)
}

/// DescribeCluster at the highest common version, `None` when the broker does not have it.
async fn send_describe_cluster(cluster: &mut Cluster) -> Result<Option<DescribeClusterResponse>> {
    let conn = cluster.any_connection().await?;
    if conn.broker_versions(ApiKey::DescribeCluster).is_none() {
        return Ok(None);
    }
    let version = conn.version_for::<DescribeClusterRequest>(None)?;
    let request = DescribeClusterRequest::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_include_fenced_brokers(version >= 2);
    let resp = conn
        .send_version(&request, version, std::time::Duration::ZERO)
        .await?;
    error::check(
        resp.error_code,
        "describe cluster",
        resp.error_message.as_deref(),
    )?;
    Ok(Some(resp))
}

/// DescribeCluster's answer wins over Metadata's: it is the API made for this, and from v2
/// it also names fenced brokers.
fn apply_describe_cluster(description: &mut ClusterDescription, resp: DescribeClusterResponse) {
    if !resp.cluster_id.is_empty() {
        description.cluster_id = Some(resp.cluster_id.to_string());
    }
    description.controller_id = resp.controller_id.0;
    if !resp.brokers.is_empty() {
        description.nodes = resp
            .brokers
            .into_iter()
            .map(|b| NodeDescription {
                node_id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
                fenced: b.is_fenced,
            })
            .collect();
    }
}

fn partition_health(
    topic: &str,
    p: &crate::cluster::PartitionMetadata,
    live: &BTreeSet<i32>,
) -> PartitionHealth {
    let mut offline: BTreeSet<i32> = p.offline_replicas.iter().copied().collect();
    offline.extend(p.replicas.iter().filter(|r| !live.contains(r)));
    PartitionHealth {
        topic: topic.to_string(),
        partition: p.partition,
        leader: p.leader,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        offline_replicas: offline.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PartitionMetadata;
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::StrBytes;

    fn partition(leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionMetadata {
        PartitionMetadata {
            partition: 0,
            error_code: 0,
            leader,
            leader_epoch: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            offline_replicas: vec![],
        }
    }

    #[test]
    fn health_follows_kafka_topics_definitions() {
        let live: BTreeSet<i32> = [1, 2, 3].into();
        let full = partition_health("t", &partition(1, &[1, 2, 3], &[1, 2, 3]), &live);
        assert!(!full.is_under_replicated() && !full.is_offline());
        let short = partition_health("t", &partition(1, &[1, 2, 3], &[1, 2]), &live);
        assert!(short.is_under_replicated() && !short.is_offline());
        let leaderless = partition_health("t", &partition(-1, &[1], &[1]), &live);
        assert!(leaderless.is_offline() && !leaderless.is_under_replicated());
    }

    #[test]
    fn replicas_on_missing_nodes_count_as_offline() {
        let live: BTreeSet<i32> = [1, 3].into();
        let mut p = partition(1, &[1, 2, 3], &[1, 3]);
        p.offline_replicas = vec![3];
        let h = partition_health("t", &p, &live);
        assert_eq!(h.offline_replicas, vec![2, 3]);
    }

    #[test]
    fn describe_cluster_answer_replaces_metadata_view() {
        let mut d = ClusterDescription {
            cluster_id: Some("from-metadata".into()),
            controller_id: 1,
            nodes: vec![],
            unhealthy_partitions: vec![],
            topic_count: 0,
            partition_count: 0,
        };
        let resp = DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_static_str("abc"))
            .with_controller_id(BrokerId(2))
            .with_brokers(vec![DescribeClusterBroker::default()
                .with_broker_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("::1"))
                .with_port(9092)
                .with_is_fenced(true)]);
        apply_describe_cluster(&mut d, resp);
        assert_eq!(d.cluster_id.as_deref(), Some("abc"));
        assert_eq!(d.controller_id, 2);
        assert!(d.node(2).is_some_and(|n| n.fenced));
        assert_eq!(
            d.node(2).map(NodeDescription::addr).as_deref(),
            Some("[::1]:9092")
        );
    }
}
