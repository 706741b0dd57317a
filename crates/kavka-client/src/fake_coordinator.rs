//! Test-only: an in-process broker that is its own group coordinator, for one topic of
//! two partitions and one group. It answers just enough of the protocol to drive the
//! group admin calls and [`crate::GroupConsumer`] through their flows, and can be told to
//! answer coordinator and rebalance errors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
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
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

pub const TOPIC: &str = "t";
pub const GROUP: &str = "g";
/// Every partition's log is [LOG_START, LOG_END).
pub const LOG_START: i64 = 0;
pub const LOG_END: i64 = 10;

#[derive(Debug, Default)]
pub struct State {
    pub committed: BTreeMap<(String, i32), i64>,
    pub generation: i32,
    pub member: Option<String>,
    pub assignment: Bytes,
    /// Answer the next N FindCoordinator requests with COORDINATOR_NOT_AVAILABLE.
    pub coordinator_unavailable: u32,
    /// Answer the next N OffsetFetch requests with COORDINATOR_LOAD_IN_PROGRESS.
    pub loading: u32,
    /// Answer the next heartbeat with REBALANCE_IN_PROGRESS.
    pub rebalance: bool,
    pub joins: u32,
    pub leaves: u32,
    pub deleted: bool,
}

pub struct FakeCoordinator {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeCoordinator {
    pub async fn start() -> FakeCoordinator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, port, shared.clone()));
            }
        });
        FakeCoordinator { addr, state }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn serve(mut sock: TcpStream, port: u16, state: Arc<Mutex<State>>) {
    loop {
        let mut prefix = [0u8; 4];
        if sock.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let Ok(len) = kavka_protocol::frame::frame_len(
            prefix,
            kavka_protocol::frame::DEFAULT_MAX_REQUEST_BYTES,
        ) else {
            return;
        };
        let mut payload = vec![0u8; len];
        if sock.read_exact(&mut payload).await.is_err() {
            return;
        }
        let (api, header, mut body) =
            kavka_protocol::frame::decode_request_header(Bytes::from(payload)).unwrap();
        let v = header.request_api_version;
        let mut out = BytesMut::new();
        macro_rules! answer {
            ($req:ty, $f:expr) => {{
                let req = <$req>::decode(&mut body, v).unwrap();
                let resp = $f(req).await;
                resp.encode(&mut out, v).unwrap();
            }};
        }
        match api {
            ApiKey::ApiVersions => answer!(ApiVersionsRequest, |_| async { api_versions() }),
            ApiKey::Metadata => answer!(MetadataRequest, |_| async { metadata(port) }),
            ApiKey::FindCoordinator => {
                answer!(FindCoordinatorRequest, |_| async {
                    find_coordinator(v, port, &state)
                })
            }
            ApiKey::JoinGroup => answer!(JoinGroupRequest, |r| async { join(r, &state) }),
            ApiKey::SyncGroup => answer!(SyncGroupRequest, |r| async { sync(r, &state) }),
            ApiKey::Heartbeat => answer!(HeartbeatRequest, |_| async {
                let mut st = state.lock().unwrap();
                let code = if std::mem::take(&mut st.rebalance) {
                    27
                } else {
                    0
                };
                HeartbeatResponse::default().with_error_code(code)
            }),
            ApiKey::LeaveGroup => answer!(LeaveGroupRequest, |_| async {
                let mut st = state.lock().unwrap();
                st.leaves += 1;
                st.member = None;
                LeaveGroupResponse::default()
            }),
            ApiKey::OffsetFetch => {
                answer!(OffsetFetchRequest, |_| async { offset_fetch(v, &state) })
            }
            ApiKey::OffsetCommit => {
                answer!(OffsetCommitRequest, |r| async { offset_commit(r, &state) })
            }
            ApiKey::OffsetDelete => {
                answer!(OffsetDeleteRequest, |r| async { offset_delete(r, &state) })
            }
            ApiKey::DescribeGroups => {
                answer!(DescribeGroupsRequest, |_| async { describe(&state) })
            }
            ApiKey::ListGroups => answer!(ListGroupsRequest, |_| async {
                ListGroupsResponse::default().with_groups(vec![ListedGroup::default()
                    .with_group_id(GroupId(s(GROUP)))
                    .with_protocol_type(s("consumer"))
                    .with_group_state(s("Stable"))])
            }),
            ApiKey::DeleteGroups => answer!(DeleteGroupsRequest, |_| async {
                state.lock().unwrap().deleted = true;
                DeleteGroupsResponse::default().with_results(vec![
                    kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                        .with_group_id(GroupId(s(GROUP))),
                ])
            }),
            ApiKey::ListOffsets => {
                answer!(ListOffsetsRequest, |r: ListOffsetsRequest| async move {
                    list_offsets(r)
                })
            }
            ApiKey::Fetch => answer!(FetchRequest, |r: FetchRequest| async move {
                // Nothing to read: wait as a long poll would, then answer empty.
                let wait = u64::try_from(r.max_wait_ms).unwrap_or(0).min(50);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                FetchResponse::default()
            }),
            other => panic!("fake coordinator: unexpected {other:?}"),
        }
        let mut head = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut head, api.response_header_version(v))
            .unwrap();
        let len = (head.len() + out.len()) as i32;
        if sock.write_all(&len.to_be_bytes()).await.is_err()
            || sock.write_all(&head).await.is_err()
            || sock.write_all(&out).await.is_err()
        {
            return;
        }
    }
}

fn api_versions() -> ApiVersionsResponse {
    fn v<M: Message>(key: ApiKey) -> ApiVersion {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(M::VERSIONS.min)
            .with_max_version(M::VERSIONS.max)
    }
    ApiVersionsResponse::default().with_api_keys(vec![
        v::<ApiVersionsRequest>(ApiKey::ApiVersions),
        v::<MetadataRequest>(ApiKey::Metadata),
        v::<FindCoordinatorRequest>(ApiKey::FindCoordinator),
        v::<JoinGroupRequest>(ApiKey::JoinGroup),
        v::<SyncGroupRequest>(ApiKey::SyncGroup),
        v::<HeartbeatRequest>(ApiKey::Heartbeat),
        v::<LeaveGroupRequest>(ApiKey::LeaveGroup),
        v::<OffsetFetchRequest>(ApiKey::OffsetFetch),
        v::<OffsetCommitRequest>(ApiKey::OffsetCommit),
        v::<OffsetDeleteRequest>(ApiKey::OffsetDelete),
        v::<DescribeGroupsRequest>(ApiKey::DescribeGroups),
        v::<ListGroupsRequest>(ApiKey::ListGroups),
        v::<DeleteGroupsRequest>(ApiKey::DeleteGroups),
        v::<ListOffsetsRequest>(ApiKey::ListOffsets),
        v::<FetchRequest>(ApiKey::Fetch),
    ])
}

fn metadata(port: u16) -> MetadataResponse {
    let partition = |i| {
        MetadataResponsePartition::default()
            .with_partition_index(i)
            .with_leader_id(1.into())
            .with_replica_nodes(vec![1.into()])
            .with_isr_nodes(vec![1.into()])
    };
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(1.into())
            .with_host(s("127.0.0.1"))
            .with_port(i32::from(port))])
        .with_controller_id(1.into())
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(s(TOPIC))))
            .with_topic_id(Uuid::from_u128(7))
            .with_partitions(vec![partition(0), partition(1)])])
}

fn find_coordinator(v: i16, port: u16, state: &Mutex<State>) -> FindCoordinatorResponse {
    let mut st = state.lock().unwrap();
    let code = if st.coordinator_unavailable > 0 {
        st.coordinator_unavailable -= 1;
        15
    } else {
        0
    };
    if v >= 4 {
        FindCoordinatorResponse::default().with_coordinators(vec![Coordinator::default()
            .with_key(s(GROUP))
            .with_node_id(1.into())
            .with_host(s("127.0.0.1"))
            .with_port(i32::from(port))
            .with_error_code(code)])
    } else {
        FindCoordinatorResponse::default()
            .with_node_id(1.into())
            .with_host(s("127.0.0.1"))
            .with_port(i32::from(port))
            .with_error_code(code)
    }
}

/// One member: a join without a member id is told its id first (KIP-394).
fn join(r: JoinGroupRequest, state: &Mutex<State>) -> JoinGroupResponse {
    let mut st = state.lock().unwrap();
    if r.member_id.is_empty() {
        return JoinGroupResponse::default()
            .with_error_code(79)
            .with_member_id(s("member-1"));
    }
    st.joins += 1;
    st.generation += 1;
    st.member = Some(r.member_id.to_string());
    JoinGroupResponse::default()
        .with_generation_id(st.generation)
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(r.protocols[0].name.clone()))
        .with_leader(r.member_id.clone())
        .with_member_id(r.member_id.clone())
        .with_members(vec![JoinGroupResponseMember::default()
            .with_member_id(r.member_id.clone())
            .with_metadata(r.protocols[0].metadata.clone())])
}

fn sync(r: SyncGroupRequest, state: &Mutex<State>) -> SyncGroupResponse {
    let mut st = state.lock().unwrap();
    if r.generation_id != st.generation {
        return SyncGroupResponse::default().with_error_code(22);
    }
    if let Some(a) = r.assignments.iter().find(|a| a.member_id == r.member_id) {
        st.assignment = a.assignment.clone();
    }
    SyncGroupResponse::default().with_assignment(st.assignment.clone())
}

fn offset_fetch(v: i16, state: &Mutex<State>) -> OffsetFetchResponse {
    let mut st = state.lock().unwrap();
    if st.loading > 0 {
        st.loading -= 1;
        return if v >= 8 {
            OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(s(GROUP)))
                .with_error_code(14)])
        } else {
            OffsetFetchResponse::default().with_error_code(14)
        };
    }
    if v >= 8 {
        let partitions = st
            .committed
            .iter()
            .map(|((_, p), o)| {
                OffsetFetchResponsePartitions::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
            })
            .collect();
        OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
            .with_group_id(GroupId(s(GROUP)))
            .with_topics(vec![OffsetFetchResponseTopics::default()
                .with_name(TopicName(s(TOPIC)))
                .with_partitions(partitions)])])
    } else {
        let partitions = st
            .committed
            .iter()
            .map(|((_, p), o)| {
                OffsetFetchResponsePartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(partitions)])
    }
}

/// Members commit with their generation; an admin (generation -1) only while no one is in
/// the group, as Kafka does.
fn offset_commit(r: OffsetCommitRequest, state: &Mutex<State>) -> OffsetCommitResponse {
    let mut st = state.lock().unwrap();
    let code = match (r.generation_id_or_member_epoch, &st.member) {
        (-1, None) => 0,
        (-1, Some(_)) => 25,
        (g, Some(m)) if g == st.generation && r.member_id.as_str() == m => 0,
        _ => 22,
    };
    let mut topics = Vec::new();
    for t in &r.topics {
        let mut partitions = Vec::new();
        for p in &t.partitions {
            if code == 0 {
                st.committed.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
            partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

fn offset_delete(r: OffsetDeleteRequest, state: &Mutex<State>) -> OffsetDeleteResponse {
    let mut st = state.lock().unwrap();
    if st.member.is_some() {
        return OffsetDeleteResponse::default().with_error_code(68);
    }
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let key = (t.name.0.to_string(), p.partition_index);
                    let code = if st.committed.remove(&key).is_some() {
                        0
                    } else {
                        3
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

fn describe(state: &Mutex<State>) -> DescribeGroupsResponse {
    let st = state.lock().unwrap();
    let (group_state, members) = match &st.member {
        Some(m) => (
            "Stable",
            vec![DescribedGroupMember::default()
                .with_member_id(s(m))
                .with_client_id(s("kavka-client"))
                .with_client_host(s("/127.0.0.1"))
                .with_member_assignment(st.assignment.clone())],
        ),
        None if st.committed.is_empty() => ("Dead", vec![]),
        None => ("Empty", vec![]),
    };
    DescribeGroupsResponse::default().with_groups(vec![DescribedGroup::default()
        .with_group_id(GroupId(s(GROUP)))
        .with_group_state(s(group_state))
        .with_protocol_type(s("consumer"))
        .with_protocol_data(s("range"))
        .with_members(members)])
}

fn list_offsets(r: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let offset = if p.timestamp == -2 {
                        LOG_START
                    } else {
                        LOG_END
                    };
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_offset(offset)
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
