//! Partition reassignment (KIP-455) and leader election (KIP-460), the admin calls behind
//! `kavka reassign-partitions` and `kavka leader-election`. Requests go to the controller
//! as the client knows it (any KRaft broker forwards them); a request refused as a whole
//! with a retriable error (NOT_CONTROLLER during an election) is retried with backoff.

use std::time::Duration;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::cluster::Cluster;
use crate::error::{self, is_retriable_code, ClientError};
use crate::Result;

/// Attempts of a request refused as a whole with a retriable error.
const ATTEMPTS: u32 = 6;
/// How long the broker may take (AlterPartitionReassignments / ElectLeaders `timeout_ms`).
const TIMEOUT_MS: i32 = 30_000;

/// One partition's new replicas, or `None` to cancel its reassignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentTarget {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// A reassignment in progress (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// Kafka's ElectionType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    Preferred,
    Unclean,
}

impl ElectionType {
    pub fn wire(self) -> i8 {
        match self {
            Self::Preferred => 0,
            Self::Unclean => 1,
        }
    }
}

/// One partition's outcome: (topic, partition, result).
pub type PartitionOutcome = (String, i32, Result<()>);

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// `(topic, partitions)` in order of first appearance.
fn group<T: Clone>(items: impl IntoIterator<Item = (String, T)>) -> Vec<(String, Vec<T>)> {
    let mut out: Vec<(String, Vec<T>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for (topic, item) in items {
        match index.get(&topic).and_then(|i: &usize| out.get_mut(*i)) {
            Some((_, v)) => v.push(item),
            None => {
                index.insert(topic.clone(), out.len());
                out.push((topic, vec![item]));
            }
        }
    }
    out
}

/// Sends `request` to the controller; retries while it is refused whole with a retriable
/// code (read by `top_error`).
async fn send_to_controller<R: Request>(
    cluster: &mut Cluster,
    request: &R,
    top_error: impl Fn(&R::Response) -> (i16, Option<String>),
    what: &str,
) -> Result<R::Response> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let conn = cluster.controller_connection().await?;
            let version = conn.version_for::<R>(None)?;
            conn.send_version(request, version, Duration::ZERO).await
        }
        .await;
        let retriable = match &result {
            Ok(resp) => {
                let (code, message) = top_error(resp);
                if code == 0 {
                    return result;
                }
                if !is_retriable_code(code) || attempt >= ATTEMPTS {
                    return Err(ClientError::kafka(code, what, message.as_deref()));
                }
                true
            }
            Err(e) => e.is_retriable() && attempt < ATTEMPTS,
        };
        if !retriable {
            return result;
        }
        tokio::time::sleep(cluster.config().backoff(attempt)).await;
        // The controller may have moved: learn where.
        cluster.invalidate_all();
        let _ = cluster.fetch_metadata(Some(&[])).await;
    }
}

/// AlterPartitionReassignments: one outcome per target, in the order the broker answers
/// (grouped by topic).
pub async fn alter_partition_reassignments(
    cluster: &mut Cluster,
    targets: &[ReassignmentTarget],
) -> Result<Vec<PartitionOutcome>> {
    let topics = group(targets.iter().map(|t| {
        (
            t.topic.clone(),
            ReassignablePartition::default()
                .with_partition_index(t.partition)
                .with_replicas(
                    t.replicas
                        .as_ref()
                        .map(|r| r.iter().map(|id| BrokerId(*id)).collect()),
                ),
        )
    }));
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(TIMEOUT_MS)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    ReassignableTopic::default()
                        .with_name(topic_name(&name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let resp = send_to_controller(
        cluster,
        &request,
        |r| {
            (
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            )
        },
        "partition reassignment",
    )
    .await?;
    Ok(resp
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let subject = format!("partition {}-{}", t.name.as_str(), p.partition_index);
                (
                    t.name.to_string(),
                    p.partition_index,
                    error::check(p.error_code, &subject, p.error_message.as_deref()),
                )
            })
        })
        .collect())
}

/// ListPartitionReassignments for `partitions` (topic, index), or all when `None`.
pub async fn list_partition_reassignments(
    cluster: &mut Cluster,
    partitions: Option<&[(String, i32)]>,
) -> Result<Vec<OngoingReassignment>> {
    let topics = partitions.map(|list| {
        group(list.iter().cloned())
            .into_iter()
            .map(|(name, indexes)| {
                ListPartitionReassignmentsTopics::default()
                    .with_name(topic_name(&name))
                    .with_partition_indexes(indexes)
            })
            .collect()
    });
    let request = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(TIMEOUT_MS)
        .with_topics(topics);
    let resp = send_to_controller(
        cluster,
        &request,
        |r| {
            (
                r.error_code,
                r.error_message.as_ref().map(|m| m.to_string()),
            )
        },
        "listing partition reassignments",
    )
    .await?;
    let ids = |v: &[BrokerId]| v.iter().map(|id| id.0).collect::<Vec<i32>>();
    let mut out: Vec<OngoingReassignment> = resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| OngoingReassignment {
                topic: t.name.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// ElectLeaders for `partitions`, or every partition when `None` (the broker then reports
/// only the partitions it tried).
pub async fn elect_leaders(
    cluster: &mut Cluster,
    election: ElectionType,
    partitions: Option<&[(String, i32)]>,
) -> Result<Vec<PartitionOutcome>> {
    let topic_partitions = partitions.map(|list| {
        group(list.iter().cloned())
            .into_iter()
            .map(|(name, indexes)| {
                TopicPartitions::default()
                    .with_topic(topic_name(&name))
                    .with_partitions(indexes)
            })
            .collect()
    });
    let request = ElectLeadersRequest::default()
        .with_election_type(election.wire())
        .with_topic_partitions(topic_partitions)
        .with_timeout_ms(TIMEOUT_MS);
    if election == ElectionType::Unclean {
        // v0 has no election type: it would run a preferred election instead.
        let conn = cluster.controller_connection().await?;
        if conn.version_for::<ElectLeadersRequest>(None)? < 1 {
            return Err(ClientError::InvalidArgument(
                "the broker supports only preferred leader election (ElectLeaders v0)".into(),
            ));
        }
    }
    let resp = send_to_controller(
        cluster,
        &request,
        |r| (r.error_code, None),
        "leader election",
    )
    .await?;
    Ok(resp
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| {
                let subject = format!("partition {}-{}", t.topic.as_str(), p.partition_id);
                (
                    t.topic.to_string(),
                    p.partition_id,
                    error::check(p.error_code, &subject, p.error_message.as_deref()),
                )
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keeps_first_appearance_order() {
        let grouped = group(vec![
            ("b".to_string(), 1),
            ("a".to_string(), 0),
            ("b".to_string(), 0),
        ]);
        assert_eq!(
            grouped,
            vec![("b".to_string(), vec![1, 0]), ("a".to_string(), vec![0])]
        );
    }

    #[test]
    fn election_type_wire_values() {
        assert_eq!(ElectionType::Preferred.wire(), 0);
        assert_eq!(ElectionType::Unclean.wire(), 1);
    }
}
