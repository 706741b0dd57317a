//! Consumer group administration on [`Admin`]: FindCoordinator, ListGroups, DescribeGroups
//! (and ConsumerGroupDescribe for KIP-848 groups), OffsetFetch, OffsetCommit (resetting a
//! group's offsets), DeleteGroups and OffsetDelete. Group requests go to the group's
//! coordinator (see [`crate::coordinator`]).

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DeleteGroupsRequest,
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::Admin;
use crate::cluster::BrokerMetadata;
use crate::consumer_protocol::{self, Assignment};
use crate::coordinator::{self, group_codes::*, group_error, CoordinatorError};
use crate::error::{self, codes, ClientError};
use crate::Result;

/// A topic partition, `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// Kafka's group state names, in the case Kafka prints them.
pub const GROUP_STATES: &[&str] = &[
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
    "Empty",
    "Assigning",
    "Reconciling",
];

/// Kafka's spelling of `state`, matched without regard to case (KIP-848's
/// ConsumerGroupDescribe answers in lower case); unknown states are kept as given.
pub fn canonical_state(state: &str) -> String {
    GROUP_STATES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(state))
        .map_or_else(|| state.to_string(), |s| s.to_string())
}

/// One row of ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// "consumer" for consumer groups; empty for groups that only hold offsets.
    pub protocol_type: String,
    /// Known from ListGroups v4 on.
    pub state: Option<String>,
    /// "classic" or "consumer", known from ListGroups v5 on.
    pub group_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    /// As the broker reports it, e.g. `/127.0.0.1`.
    pub host: String,
    /// What the member currently owns (empty before its first assignment, or when the
    /// group does not use the consumer protocol).
    pub assignment: Assignment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Kafka's state name: Empty, Stable, PreparingRebalance, ..., Dead.
    pub state: String,
    pub protocol_type: String,
    /// The assignor the group settled on (`protocol_data`), e.g. "range".
    pub assignor: String,
    pub members: Vec<MemberDescription>,
    pub coordinator: BrokerMetadata,
    /// False for a KIP-848 group described with ConsumerGroupDescribe.
    pub is_classic: bool,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    pub offset: i64,
    pub leader_epoch: Option<i32>,
    pub metadata: Option<String>,
}

impl OffsetAndMetadata {
    pub fn new(offset: i64) -> Self {
        OffsetAndMetadata {
            offset,
            leader_epoch: None,
            metadata: None,
        }
    }
}

/// Per-partition outcome of an operation on several partitions.
pub type PartitionResults = Vec<(TopicPartition, Result<()>)>;

impl Admin {
    /// The broker coordinating `group`.
    pub async fn find_coordinator(&mut self, group: &str) -> Result<BrokerMetadata> {
        coordinator::find_coordinator(self.cluster(), group).await
    }

    /// Every group on every broker, optionally only those in `states` (Kafka's names,
    /// any case; needs ListGroups v4) and of `types` ("classic", "consumer"; needs v5).
    /// Sorted by group id.
    pub async fn list_groups(
        &mut self,
        states: &[&str],
        types: &[&str],
    ) -> Result<Vec<GroupListing>> {
        let states: Vec<String> = states.iter().map(|s| canonical_state(s)).collect();
        let nodes: Vec<i32> = self.cluster().brokers().map(|b| b.node_id).collect();
        let mut out = Vec::new();
        for node in nodes {
            let mut attempt = 0;
            let (version, resp) = loop {
                let conn = self.cluster().connection(node).await?;
                let version = conn.version_for::<ListGroupsRequest>(None)?;
                let request = list_groups_request(version, &states, types)?;
                let resp = conn.send_version(&request, version, Duration::ZERO).await?;
                // A coordinator still loading its groups would list only some of them.
                if resp.coordinator_error() == codes::NONE
                    || attempt + 1 >= coordinator::COORDINATOR_ATTEMPTS
                {
                    break (version, resp);
                }
                attempt += 1;
                tokio::time::sleep(self.cluster().config().backoff(attempt)).await;
            };
            error::check(
                resp.error_code,
                &format!("ListGroups on broker {node}"),
                None,
            )?;
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: (version >= 4).then(|| canonical_state(&g.group_state)),
                group_type: (version >= 5).then(|| g.group_type.to_string()),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// Describes each of `groups` at its coordinator: one result per group, in order. An
    /// unknown group is either `Ok` in state Dead (classic coordinators) or
    /// GROUP_ID_NOT_FOUND (newer ones).
    pub async fn describe_groups(
        &mut self,
        groups: &[&str],
    ) -> Result<Vec<Result<GroupDescription>>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            out.push(self.describe_group(group).await);
        }
        Ok(out)
    }

    /// Describes one group (see [`Admin::describe_groups`]).
    pub async fn describe_group(&mut self, group: &str) -> Result<GroupDescription> {
        let (coordinator, resp) =
            coordinator::coordinator_request(self.cluster(), group, Duration::ZERO, |_| {
                Ok(describe_groups_request(&[group]))
            })
            .await?;
        let classic = parse_describe_groups(group, &coordinator, resp);
        match classic {
            // The classic API does not describe a KIP-848 group: newer coordinators answer
            // GROUP_ID_NOT_FOUND, older ones Dead. Ask the new API when the broker has it.
            Ok(d) if d.state == "Dead" => match self.describe_consumer_group(group).await {
                Ok(Some(d)) => Ok(d),
                _ => Ok(d),
            },
            Err(e) if e.code() == Some(GROUP_ID_NOT_FOUND) => {
                match self.describe_consumer_group(group).await {
                    Ok(Some(d)) => Ok(d),
                    Ok(None) => Err(e),
                    Err(other) => {
                        tracing::debug!("ConsumerGroupDescribe of '{group}': {other}");
                        Err(e)
                    }
                }
            }
            other => other,
        }
    }

    /// ConsumerGroupDescribe (KIP-848) of `group`; `None` when the broker does not
    /// implement it or does not know the group as a consumer group.
    async fn describe_consumer_group(&mut self, group: &str) -> Result<Option<GroupDescription>> {
        let coordinator = self.find_coordinator(group).await?;
        let supported = self
            .cluster()
            .connection(coordinator.node_id)
            .await?
            .broker_versions(ApiKey::ConsumerGroupDescribe)
            .is_some();
        if !supported {
            return Ok(None);
        }
        let (coordinator, resp) =
            coordinator::coordinator_request(self.cluster(), group, Duration::ZERO, |_| {
                Ok(consumer_group_describe_request(group))
            })
            .await?;
        match parse_consumer_group_describe(group, &coordinator, resp) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code() == Some(GROUP_ID_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every committed offset of `group` (partitions without a commit are left out).
    pub async fn list_group_offsets(
        &mut self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
        let (_, resp) =
            coordinator::coordinator_request(self.cluster(), group, Duration::ZERO, |v| {
                offset_fetch_request(v, group)
            })
            .await?;
        parse_offset_fetch(group, resp)
    }

    /// Commits `offsets` for `group` as an admin (generation -1, no member id), which a
    /// coordinator accepts only while the group has no members. One result per partition.
    pub async fn alter_group_offsets(
        &mut self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
    ) -> Result<PartitionResults> {
        let (_, resp) =
            coordinator::coordinator_request(self.cluster(), group, Duration::ZERO, |v| {
                Ok(offset_commit_request(v, group, -1, "", None, offsets))
            })
            .await?;
        Ok(parse_offset_commit(
            group,
            offsets.keys().cloned().collect(),
            &resp,
        ))
    }

    /// Deletes each of `groups` (with its offsets); one result per group, in order.
    pub async fn delete_groups(&mut self, groups: &[&str]) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let result =
                coordinator::coordinator_request(self.cluster(), group, Duration::ZERO, |_| {
                    Ok(DeleteGroupsRequest::default()
                        .with_groups_names(vec![GroupId(str_bytes(group))]))
                })
                .await
                .and_then(|(_, resp)| {
                    group_result(resp.results, group, |r| {
                        (r.group_id.0.as_str(), r.error_code, None)
                    })
                    .map(drop)
                });
            out.push(result);
        }
        Ok(out)
    }

    /// Deletes the committed offsets of `partitions` in `group` (OffsetDelete). A
    /// group-level failure (unknown group, group not empty...) is the `Err`; otherwise one
    /// result per partition.
    pub async fn delete_group_offsets(
        &mut self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<PartitionResults> {
        let (_, resp) =
            coordinator::coordinator_request(self.cluster(), group, Duration::ZERO, |_| {
                Ok(offset_delete_request(group, partitions))
            })
            .await?;
        parse_offset_delete(group, partitions, &resp)
    }
}

/// The entry for `group` among a response's per-group results, or the group's error.
/// `key` names an entry's group id, error code and error message.
fn group_result<G>(
    results: Vec<G>,
    group: &str,
    key: fn(&G) -> (&str, i16, Option<&str>),
) -> Result<G> {
    let g = results
        .into_iter()
        .find(|g| key(g).0 == group)
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!("the broker did not answer for group '{group}'"))
        })?;
    match key(&g) {
        (_, codes::NONE, _) => Ok(g),
        (_, code, message) => Err(group_error(code, group, message)),
    }
}

/// The error code answered for `topic`-`partition` among `answers` (topic, partition,
/// code), or an error when the broker left the partition out.
fn partition_code<'a>(
    mut answers: impl Iterator<Item = (&'a str, i32, i16)>,
    topic: &str,
    partition: i32,
) -> Result<i16> {
    answers
        .find(|(t, p, _)| *t == topic && *p == partition)
        .map(|(_, _, code)| code)
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "the broker did not answer for {topic}-{partition}"
            ))
        })
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// ListGroups with filters; filters need v4 (states) and v5 (types).
pub fn list_groups_request(
    version: i16,
    states: &[String],
    types: &[&str],
) -> Result<ListGroupsRequest> {
    if !states.is_empty() && version < 4 {
        return Err(ClientError::InvalidArgument(format!(
            "the broker's ListGroups v{version} cannot filter by state (needs v4)"
        )));
    }
    if !types.is_empty() && version < 5 {
        return Err(ClientError::InvalidArgument(format!(
            "the broker's ListGroups v{version} cannot filter by type (needs v5)"
        )));
    }
    Ok(ListGroupsRequest::default()
        .with_states_filter(states.iter().map(|s| str_bytes(s)).collect())
        .with_types_filter(types.iter().map(|t| str_bytes(t)).collect()))
}

pub fn describe_groups_request(groups: &[&str]) -> DescribeGroupsRequest {
    DescribeGroupsRequest::default()
        .with_groups(groups.iter().map(|g| GroupId(str_bytes(g))).collect())
}

pub fn consumer_group_describe_request(group: &str) -> ConsumerGroupDescribeRequest {
    ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(str_bytes(group))])
}

/// The description of `group` in a DescribeGroups response.
pub fn parse_describe_groups(
    group: &str,
    coordinator: &BrokerMetadata,
    resp: DescribeGroupsResponse,
) -> Result<GroupDescription> {
    let g = group_result(resp.groups, group, |g| {
        (
            g.group_id.0.as_str(),
            g.error_code,
            g.error_message.as_deref(),
        )
    })?;
    let is_consumer = g.protocol_type.as_str() == consumer_protocol::PROTOCOL_TYPE;
    let members = g
        .members
        .into_iter()
        .map(|m| {
            let assignment = if is_consumer {
                consumer_protocol::decode_assignment(&m.member_assignment).unwrap_or_else(|e| {
                    // A custom assignor's bytes: show the member without partitions.
                    tracing::warn!("member {} of group '{group}': {e}", m.member_id);
                    Assignment::new()
                })
            } else {
                Assignment::new()
            };
            MemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment,
            }
        })
        .collect();
    Ok(GroupDescription {
        group_id: group.to_string(),
        state: canonical_state(&g.group_state),
        protocol_type: g.protocol_type.to_string(),
        assignor: g.protocol_data.to_string(),
        members,
        coordinator: coordinator.clone(),
        is_classic: true,
    })
}

/// The description of `group` in a ConsumerGroupDescribe (KIP-848) response.
pub fn parse_consumer_group_describe(
    group: &str,
    coordinator: &BrokerMetadata,
    resp: ConsumerGroupDescribeResponse,
) -> Result<GroupDescription> {
    let g = group_result(resp.groups, group, |g| {
        (
            g.group_id.0.as_str(),
            g.error_code,
            g.error_message.as_deref(),
        )
    })?;
    let members = g
        .members
        .into_iter()
        .map(|m| {
            let mut assignment = Assignment::new();
            for t in m.assignment.topic_partitions {
                let parts: &mut Vec<i32> =
                    assignment.entry(t.topic_name.0.to_string()).or_default();
                parts.extend(t.partitions);
                parts.sort_unstable();
                parts.dedup();
            }
            MemberDescription {
                member_id: m.member_id.to_string(),
                group_instance_id: m.instance_id.map(|s| s.to_string()),
                client_id: m.client_id.to_string(),
                host: m.client_host.to_string(),
                assignment,
            }
        })
        .collect();
    Ok(GroupDescription {
        group_id: group.to_string(),
        state: canonical_state(&g.group_state),
        protocol_type: consumer_protocol::PROTOCOL_TYPE.to_string(),
        assignor: g.assignor_name.to_string(),
        members,
        coordinator: coordinator.clone(),
        is_classic: false,
    })
}

/// OffsetFetch of every committed offset of `group`: the `groups` form from v8 on, the
/// single-group form with null topics (v2-7) before.
pub fn offset_fetch_request(version: i16, group: &str) -> Result<OffsetFetchRequest> {
    if version < 2 {
        return Err(ClientError::InvalidArgument(format!(
            "the broker's OffsetFetch v{version} cannot list all of a group's offsets (needs v2)"
        )));
    }
    let request = OffsetFetchRequest::default().with_require_stable(false);
    Ok(if version >= 8 {
        request.with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(None)])
    } else {
        request
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(None)
    })
}

/// Committed offsets of `group` from an OffsetFetch response of either form. Offset -1
/// means "no commit" and is left out.
pub fn parse_offset_fetch(
    group: &str,
    resp: OffsetFetchResponse,
) -> Result<BTreeMap<TopicPartition, OffsetAndMetadata>> {
    // Both forms' topics, whose types differ but whose fields are named alike, as
    // (topic, partition, offset, epoch, metadata, error) rows.
    macro_rules! rows {
        ($topics:expr) => {
            $topics
                .into_iter()
                .flat_map(|t| {
                    let topic = t.name.0.to_string();
                    t.partitions.into_iter().map(move |p| {
                        (
                            topic.clone(),
                            p.partition_index,
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.metadata,
                            p.error_code,
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
    }
    let (code, rows) = match resp
        .groups
        .into_iter()
        .find(|g| g.group_id.0.as_str() == group)
    {
        Some(g) => (g.error_code, rows!(g.topics)),
        None => (resp.error_code, rows!(resp.topics)),
    };
    if code != codes::NONE {
        return Err(group_error(code, group, None));
    }
    let mut out = BTreeMap::new();
    for (topic, partition, offset, epoch, metadata, code) in rows {
        match code {
            codes::NONE => {}
            // A partition that no longer exists has nothing to show.
            codes::UNKNOWN_TOPIC_OR_PARTITION => continue,
            code => {
                return Err(ClientError::kafka(
                    code,
                    &format!("offset of group '{group}' for {topic}-{partition}"),
                    None,
                ))
            }
        }
        if offset < 0 {
            continue;
        }
        out.insert(
            (topic, partition),
            OffsetAndMetadata {
                offset,
                leader_epoch: (epoch >= 0).then_some(epoch),
                metadata: metadata.map(|m| m.to_string()),
            },
        );
    }
    Ok(out)
}

/// OffsetCommit of `offsets` for `group`. Members commit with their generation and id; an
/// admin commits with generation -1 and an empty member id.
pub fn offset_commit_request(
    version: i16,
    group: &str,
    generation_id: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for ((topic, partition), o) in offsets {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(o.offset)
            .with_committed_leader_epoch(o.leader_epoch.unwrap_or(-1))
            .with_committed_metadata(Some(str_bytes(o.metadata.as_deref().unwrap_or(""))));
        // BTreeMap order: one topic's partitions are adjacent.
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partitions.push(p),
            _ => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(str_bytes(member_id))
        .with_topics(topics);
    let request = if version >= 7 {
        request.with_group_instance_id(group_instance_id.map(str_bytes))
    } else {
        request
    };
    if (2..=4).contains(&version) {
        // -1: the broker's offsets.retention.minutes.
        request.with_retention_time_ms(-1)
    } else {
        request
    }
}

/// One result per requested partition of an OffsetCommit.
pub fn parse_offset_commit(
    group: &str,
    requested: Vec<TopicPartition>,
    resp: &OffsetCommitResponse,
) -> PartitionResults {
    requested
        .into_iter()
        .map(|(topic, partition)| {
            let answers = resp.topics.iter().flat_map(|t| {
                let name = t.name.0.as_str();
                t.partitions
                    .iter()
                    .map(move |p| (name, p.partition_index, p.error_code))
            });
            let result = match partition_code(answers, &topic, partition) {
                Ok(codes::NONE) => Ok(()),
                Ok(code) => Err(commit_error(code, group, &topic, partition)),
                Err(e) => Err(e),
            };
            ((topic, partition), result)
        })
        .collect()
}

fn commit_error(code: i16, group: &str, topic: &str, partition: i32) -> ClientError {
    match code {
        UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS | FENCED_INSTANCE_ID => {
            group_error(code, group, None)
        }
        _ => ClientError::kafka(code, &format!("partition {topic}-{partition}"), None),
    }
}

pub fn offset_delete_request(group: &str, partitions: &[TopicPartition]) -> OffsetDeleteRequest {
    let mut topics: Vec<OffsetDeleteRequestTopic> = Vec::new();
    for (topic, partition) in partitions {
        let p = OffsetDeleteRequestPartition::default().with_partition_index(*partition);
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetDeleteRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![p]),
            ),
        }
    }
    OffsetDeleteRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_topics(topics)
}

pub fn parse_offset_delete(
    group: &str,
    partitions: &[TopicPartition],
    resp: &OffsetDeleteResponse,
) -> Result<PartitionResults> {
    if resp.error_code != codes::NONE {
        return Err(group_error(resp.error_code, group, None));
    }
    Ok(partitions
        .iter()
        .map(|(topic, partition)| {
            let answers = resp.topics.iter().flat_map(|t| {
                let name = t.name.0.as_str();
                t.partitions
                    .iter()
                    .map(move |p| (name, p.partition_index, p.error_code))
            });
            let result = match partition_code(answers, topic, *partition) {
                Ok(codes::NONE) => Ok(()),
                Ok(GROUP_SUBSCRIBED_TO_TOPIC) => Err(ClientError::Kafka {
                    code: GROUP_SUBSCRIBED_TO_TOPIC,
                    name: error::error_name(GROUP_SUBSCRIBED_TO_TOPIC),
                    message: format!("group '{group}' is subscribed to topic '{topic}'"),
                }),
                Ok(code) => Err(ClientError::kafka(
                    code,
                    &format!("partition {topic}-{partition}"),
                    None,
                )),
                Err(e) => Err(e),
            };
            ((topic.clone(), *partition), result)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };
    use kafka_protocol::messages::{ConsumerGroupDescribeResponse, ListGroupsResponse};
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    fn round_trip<M: Encodable + Decodable>(m: &M, v: i16) -> M {
        let mut buf = BytesMut::new();
        m.encode(&mut buf, v)
            .unwrap_or_else(|e| panic!("v{v}: {e}"));
        M::decode(&mut buf.freeze(), v).unwrap()
    }

    fn all<M: Message>() -> std::ops::RangeInclusive<i16> {
        M::VERSIONS.min..=M::VERSIONS.max
    }

    fn coordinator() -> BrokerMetadata {
        BrokerMetadata {
            node_id: 1,
            host: "h".into(),
            port: 9092,
            rack: None,
        }
    }

    #[test]
    fn states_are_spelled_like_kafka() {
        assert_eq!(canonical_state("stable"), "Stable");
        assert_eq!(canonical_state("PREPARINGREBALANCE"), "PreparingRebalance");
        assert_eq!(canonical_state("Weird"), "Weird");
    }

    #[test]
    fn list_groups_filters_need_new_versions() {
        for v in all::<ListGroupsRequest>() {
            let states = vec!["Stable".to_string()];
            match list_groups_request(v, &states, &[]) {
                Ok(r) => {
                    assert!(v >= 4);
                    assert_eq!(round_trip(&r, v).states_filter[0].as_str(), "Stable");
                }
                Err(_) => assert!(v < 4),
            }
            assert_eq!(list_groups_request(v, &[], &["classic"]).is_ok(), v >= 5);
            round_trip(&list_groups_request(v, &[], &[]).unwrap(), v);
            let resp = ListGroupsResponse::default().with_error_code(14);
            assert_eq!(round_trip(&resp, v).coordinator_error(), 14);
        }
    }

    #[test]
    fn describe_groups_decodes_consumer_assignments() {
        let mut a = Assignment::new();
        a.insert("t".into(), vec![0, 1]);
        let assignment = consumer_protocol::encode_assignment(&a).unwrap();
        for v in all::<DescribeGroupsRequest>() {
            let back = round_trip(&describe_groups_request(&["g"]), v);
            assert_eq!(back.groups[0].0.as_str(), "g");
            let resp = DescribeGroupsResponse::default().with_groups(vec![
                DescribedGroup::default()
                    .with_group_id(GroupId(str_bytes("other")))
                    .with_group_state(str_bytes("Empty")),
                DescribedGroup::default()
                    .with_group_id(GroupId(str_bytes("g")))
                    .with_group_state(str_bytes("Stable"))
                    .with_protocol_type(str_bytes("consumer"))
                    .with_protocol_data(str_bytes("range"))
                    .with_members(vec![DescribedGroupMember::default()
                        .with_member_id(str_bytes("m1"))
                        .with_client_id(str_bytes("c"))
                        .with_client_host(str_bytes("/127.0.0.1"))
                        .with_member_assignment(assignment.clone())]),
            ]);
            let d = parse_describe_groups("g", &coordinator(), round_trip(&resp, v)).unwrap();
            assert_eq!((d.state.as_str(), d.assignor.as_str()), ("Stable", "range"));
            assert_eq!(d.members.len(), 1, "v{v}");
            assert_eq!(d.members[0].assignment, a, "v{v}");
            assert_eq!(d.members[0].host, "/127.0.0.1");
        }
        // An unknown group at a new coordinator, and undecodable member bytes.
        let resp = DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_error_code(GROUP_ID_NOT_FOUND)]);
        let e = parse_describe_groups("g", &coordinator(), resp).unwrap_err();
        assert_eq!(e.code(), Some(GROUP_ID_NOT_FOUND));
        let resp = DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_protocol_type(str_bytes("consumer"))
            .with_members(vec![DescribedGroupMember::default()
                .with_member_assignment(bytes::Bytes::from_static(&[0, 0, 0x7f]))])]);
        let d = parse_describe_groups("g", &coordinator(), resp).unwrap();
        assert!(d.members[0].assignment.is_empty());
    }

    #[test]
    fn consumer_group_describe_at_every_version() {
        use kafka_protocol::messages::consumer_group_describe_response::{
            Assignment as Cga, DescribedGroup, Member, TopicPartitions,
        };
        for v in all::<ConsumerGroupDescribeRequest>() {
            round_trip(&consumer_group_describe_request("g"), v);
            let resp = ConsumerGroupDescribeResponse::default().with_groups(vec![
                DescribedGroup::default()
                    .with_group_id(GroupId(str_bytes("g")))
                    .with_group_state(str_bytes("stable"))
                    .with_assignor_name(str_bytes("uniform"))
                    .with_members(vec![Member::default()
                        .with_member_id(str_bytes("m"))
                        .with_assignment(Cga::default().with_topic_partitions(vec![
                            TopicPartitions::default()
                                .with_topic_name(topic_name("t"))
                                .with_partitions(vec![2, 0]),
                        ]))]),
            ]);
            let d =
                parse_consumer_group_describe("g", &coordinator(), round_trip(&resp, v)).unwrap();
            assert_eq!(d.state, "Stable");
            assert!(!d.is_classic);
            assert_eq!(d.members[0].assignment["t"], [0, 2]);
        }
    }

    #[test]
    fn offset_fetch_in_both_forms() {
        for v in all::<OffsetFetchRequest>() {
            let r = offset_fetch_request(v, "g");
            if v < 2 {
                assert!(r.is_err());
                continue;
            }
            let back = round_trip(&r.unwrap(), v);
            if v >= 8 {
                assert_eq!(back.groups[0].group_id.0.as_str(), "g");
                assert!(back.groups[0].topics.is_none());
            } else {
                assert_eq!(back.group_id.0.as_str(), "g");
                assert!(back.topics.is_none());
            }
            let resp = if v >= 8 {
                OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default(
                )
                .with_group_id(GroupId(str_bytes("g")))
                .with_topics(vec![OffsetFetchResponseTopics::default()
                    .with_name(topic_name("t"))
                    .with_partitions(vec![
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(0)
                            .with_committed_offset(5),
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(1)
                            .with_committed_offset(-1),
                    ])])])
            } else {
                OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default(
                )
                .with_name(topic_name("t"))
                .with_partitions(vec![
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5),
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(1)
                        .with_committed_offset(-1),
                ])])
            };
            let offsets = parse_offset_fetch("g", round_trip(&resp, v)).unwrap();
            assert_eq!(offsets.len(), 1, "v{v}: no commit on partition 1");
            assert_eq!(offsets[&("t".to_string(), 0)].offset, 5);
        }
        // Group-level errors in either form; coordinator errors found for the retry.
        let resp =
            OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(str_bytes("g")))
                .with_error_code(NOT_COORDINATOR)]);
        assert_eq!(resp.coordinator_error(), NOT_COORDINATOR);
        assert!(parse_offset_fetch("g", resp).is_err());
        let resp = OffsetFetchResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED);
        assert!(parse_offset_fetch("g", resp).is_err());
    }

    #[test]
    fn offset_commit_at_every_version() {
        let mut offsets = BTreeMap::new();
        offsets.insert(("a".to_string(), 1), OffsetAndMetadata::new(10));
        offsets.insert(("a".to_string(), 0), OffsetAndMetadata::new(7));
        offsets.insert(("b".to_string(), 0), OffsetAndMetadata::new(3));
        for v in all::<OffsetCommitRequest>() {
            let back = round_trip(
                &offset_commit_request(v, "g", -1, "", Some("i"), &offsets),
                v,
            );
            assert_eq!(back.generation_id_or_member_epoch, -1);
            assert_eq!(back.topics.len(), 2, "v{v}");
            assert_eq!(back.topics[0].partitions[0].committed_offset, 7);
            assert_eq!(back.topics[0].partitions[1].committed_offset, 10);
            assert_eq!(back.group_instance_id.is_some(), v >= 7);
        }
        let resp =
            OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
                .with_name(topic_name("a"))
                .with_partitions(vec![
                    OffsetCommitResponsePartition::default().with_partition_index(0),
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(1)
                        .with_error_code(UNKNOWN_MEMBER_ID),
                ])]);
        let results = parse_offset_commit("g", offsets.keys().cloned().collect(), &resp);
        assert!(results[0].1.is_ok());
        assert_eq!(
            results[1].1.as_ref().unwrap_err().code(),
            Some(UNKNOWN_MEMBER_ID)
        );
        assert!(results[2].1.is_err(), "no answer for b-0");
    }

    #[test]
    fn offset_delete_results() {
        let parts = vec![
            ("t".to_string(), 0),
            ("t".to_string(), 1),
            ("u".to_string(), 0),
        ];
        let back = round_trip(&offset_delete_request("g", &parts), 0);
        assert_eq!(back.topics.len(), 2);
        assert_eq!(back.topics[0].partitions.len(), 2);
        let resp =
            OffsetDeleteResponse::default().with_topics(vec![OffsetDeleteResponseTopic::default()
                .with_name(topic_name("t"))
                .with_partitions(vec![
                    OffsetDeleteResponsePartition::default().with_partition_index(0),
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(1)
                        .with_error_code(GROUP_SUBSCRIBED_TO_TOPIC),
                ])]);
        let results = parse_offset_delete("g", &parts, &round_trip(&resp, 0)).unwrap();
        assert!(results[0].1.is_ok());
        let e = results[1].1.as_ref().unwrap_err();
        assert!(e.to_string().contains("subscribed"), "{e}");
        assert!(results[2].1.is_err());
        let resp = OffsetDeleteResponse::default().with_error_code(NON_EMPTY_GROUP);
        let e = parse_offset_delete("g", &parts, &resp).unwrap_err();
        assert_eq!(
            e.to_string(),
            "consumer group 'g' is not empty (NON_EMPTY_GROUP)"
        );
    }

    #[tokio::test]
    async fn admin_flow_against_a_fake_coordinator() {
        use crate::cluster::ClientConfig;
        use crate::fake_coordinator::FakeCoordinator;
        let fake = FakeCoordinator::start().await;
        fake.state().coordinator_unavailable = 2;
        fake.state().loading = 1;
        let mut config = ClientConfig::new(&fake.addr).unwrap();
        config.retry_backoff = Duration::from_millis(1);
        let mut admin = Admin::connect(config).await.unwrap();

        assert_eq!(admin.find_coordinator("g").await.unwrap().node_id, 1);
        assert_eq!(admin.describe_group("g").await.unwrap().state, "Dead");
        let mut offsets = BTreeMap::new();
        offsets.insert(("t".to_string(), 0), OffsetAndMetadata::new(3));
        let results = admin.alter_group_offsets("g", &offsets).await.unwrap();
        assert!(results[0].1.is_ok());
        // The first OffsetFetch finds the coordinator loading; the retry gets the answer.
        let listed = admin.list_group_offsets("g").await.unwrap();
        assert_eq!(listed[&("t".to_string(), 0)].offset, 3);
        assert_eq!(fake.state().loading, 0);
        assert_eq!(admin.describe_group("g").await.unwrap().state, "Empty");

        let groups = admin.list_groups(&["stable"], &[]).await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].state.as_deref(), Some("Stable"));

        let parts = [("t".to_string(), 0), ("t".to_string(), 1)];
        let results = admin.delete_group_offsets("g", &parts).await.unwrap();
        assert!(results[0].1.is_ok());
        assert_eq!(results[1].1.as_ref().unwrap_err().code(), Some(3));
        assert!(admin.delete_groups(&["g"]).await.unwrap()[0].is_ok());
        assert!(fake.state().deleted);

        // A coordinator that never comes: a bounded number of attempts, then the error.
        fake.state().coordinator_unavailable = u32::MAX;
        let e = admin.list_group_offsets("g").await.unwrap_err();
        assert_eq!(e.code(), Some(COORDINATOR_NOT_AVAILABLE), "{e}");
    }
}
