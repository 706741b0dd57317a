//! Finding a group's coordinator (FindCoordinator v0-6) and sending group requests to it,
//! retrying while the coordinator loads, moves or is not yet elected.

use std::time::Duration;

use kafka_protocol::messages::{
    ConsumerGroupDescribeResponse, DeleteGroupsResponse, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupResponse, ListGroupsResponse, OffsetCommitResponse, OffsetDeleteResponse,
    OffsetFetchResponse, SyncGroupResponse,
};
use kafka_protocol::protocol::{Request, StrBytes};

use crate::cluster::{BrokerMetadata, Cluster};
use crate::error::{self, codes, ClientError};
use crate::Result;

/// Kafka error codes of the group APIs.
pub mod group_codes {
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}

use group_codes::*;

/// `FindCoordinatorRequest.KeyType.GROUP`.
const KEY_TYPE_GROUP: i8 = 0;

/// Attempts for a group request while the coordinator is loading or moving. With the
/// cluster's backoff (100 ms doubling to 1 s) this waits about eight seconds in all:
/// long enough for a broker to load `__consumer_offsets` after a restart.
pub const COORDINATOR_ATTEMPTS: u32 = 10;

/// Whether `code` says "ask again, maybe elsewhere": the coordinator is loading its
/// state, not elected yet, or has moved.
pub fn is_coordinator_error(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
    )
}

/// The first coordinator error among `codes`, else NONE.
pub fn first_coordinator_error(mut codes_iter: impl Iterator<Item = i16>) -> i16 {
    codes_iter
        .find(|c| is_coordinator_error(*c))
        .unwrap_or(codes::NONE)
}

/// A group-level error with wording for the codes a user meets most.
pub fn group_error(code: i16, group: &str, server_message: Option<&str>) -> ClientError {
    let message = match code {
        GROUP_ID_NOT_FOUND => format!("consumer group '{group}' does not exist"),
        NON_EMPTY_GROUP => format!("consumer group '{group}' is not empty"),
        INVALID_GROUP_ID => format!("'{group}' is not a valid group id"),
        _ => return ClientError::kafka(code, &format!("group '{group}'"), server_message),
    };
    ClientError::Kafka {
        code,
        name: error::error_name(code),
        message,
    }
}

/// Responses that can say "not the coordinator" (at the top, per group or per partition).
pub trait CoordinatorError {
    /// A coordinator error code found anywhere in the response, else NONE.
    fn coordinator_error(&self) -> i16;
}

impl CoordinatorError for DescribeGroupsResponse {
    fn coordinator_error(&self) -> i16 {
        first_coordinator_error(self.groups.iter().map(|g| g.error_code))
    }
}
impl CoordinatorError for ConsumerGroupDescribeResponse {
    fn coordinator_error(&self) -> i16 {
        first_coordinator_error(self.groups.iter().map(|g| g.error_code))
    }
}
impl CoordinatorError for OffsetFetchResponse {
    fn coordinator_error(&self) -> i16 {
        first_coordinator_error(
            std::iter::once(self.error_code).chain(self.groups.iter().map(|g| g.error_code)),
        )
    }
}
impl CoordinatorError for OffsetCommitResponse {
    fn coordinator_error(&self) -> i16 {
        first_coordinator_error(
            self.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        )
    }
}
impl CoordinatorError for DeleteGroupsResponse {
    fn coordinator_error(&self) -> i16 {
        first_coordinator_error(self.results.iter().map(|r| r.error_code))
    }
}
/// Responses whose only error is the top-level `error_code`.
macro_rules! top_level_coordinator_error {
    ($($response:ty),+ $(,)?) => {$(
        impl CoordinatorError for $response {
            fn coordinator_error(&self) -> i16 {
                first_coordinator_error(std::iter::once(self.error_code))
            }
        }
    )+};
}

top_level_coordinator_error!(
    OffsetDeleteResponse,
    ListGroupsResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
);

/// FindCoordinator for a group: the batched `coordinator_keys` form from v4 on, the
/// single `key` before.
pub fn find_coordinator_request(version: i16, group: &str) -> FindCoordinatorRequest {
    find_coordinator_request_keyed(version, KEY_TYPE_GROUP, group)
}

/// FindCoordinator for `key` of `key_type` (0 group, 1 transactional id), batched from v4.
pub(crate) fn find_coordinator_request_keyed(
    version: i16,
    key_type: i8,
    key: &str,
) -> FindCoordinatorRequest {
    let key = StrBytes::from_string(key.to_string());
    let request = FindCoordinatorRequest::default().with_key_type(key_type);
    if version >= 4 {
        request.with_coordinator_keys(vec![key])
    } else {
        request.with_key(key)
    }
}

/// The coordinator named by a FindCoordinator response at `version`, or its error.
pub fn parse_find_coordinator(
    version: i16,
    group: &str,
    resp: &FindCoordinatorResponse,
) -> Result<BrokerMetadata> {
    parse_find_coordinator_keyed(version, group, "group", resp, |code, message| {
        group_error(code, group, message)
    })
}

/// The coordinator of `key` (a `what`: "group", "transactional id") in a FindCoordinator
/// response at `version`; a coordinator error goes through `error`.
pub(crate) fn parse_find_coordinator_keyed(
    version: i16,
    key: &str,
    what: &str,
    resp: &FindCoordinatorResponse,
    error: impl FnOnce(i16, Option<&str>) -> ClientError,
) -> Result<BrokerMetadata> {
    let (code, message, node_id, host, port) = if version >= 4 {
        let c = resp
            .coordinators
            .iter()
            .find(|c| c.key.as_str() == key)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "the broker did not name a coordinator for {what} '{key}'"
                ))
            })?;
        (
            c.error_code,
            c.error_message.as_deref(),
            c.node_id.0,
            &c.host,
            c.port,
        )
    } else {
        (
            resp.error_code,
            resp.error_message.as_deref(),
            resp.node_id.0,
            &resp.host,
            resp.port,
        )
    };
    if code != codes::NONE {
        return Err(error(code, message));
    }
    Ok(BrokerMetadata {
        node_id,
        host: host.to_string(),
        port,
        rack: None,
    })
}

/// Asks any broker which broker coordinates `group`, once (no retry), and makes sure the
/// cluster knows how to reach it.
pub async fn find_coordinator_once(cluster: &mut Cluster, group: &str) -> Result<BrokerMetadata> {
    let conn = cluster.any_connection().await?;
    let version = conn.version_for::<FindCoordinatorRequest>(None)?;
    let resp = conn
        .send_version(
            &find_coordinator_request(version, group),
            version,
            Duration::ZERO,
        )
        .await?;
    let coordinator = parse_find_coordinator(version, group, &resp)?;
    if !cluster.brokers().any(|b| b.node_id == coordinator.node_id) {
        // A broker that joined after our last metadata refresh.
        cluster.fetch_metadata(Some(&[][..])).await?;
    }
    Ok(coordinator)
}

/// Whether an error is worth another attempt at the (possibly new) coordinator.
pub fn retry_at_coordinator(e: &ClientError) -> bool {
    match e {
        ClientError::Kafka { code, .. } => is_coordinator_error(*code),
        ClientError::Connect { .. } | ClientError::Io { .. } => true,
        _ => false,
    }
}

/// The coordinator of `group`, retrying while none is available.
pub async fn find_coordinator(cluster: &mut Cluster, group: &str) -> Result<BrokerMetadata> {
    let mut attempt = 0;
    loop {
        match find_coordinator_once(cluster, group).await {
            Err(e) if retry_at_coordinator(&e) && attempt + 1 < COORDINATOR_ATTEMPTS => {
                attempt += 1;
                tracing::debug!("find coordinator of '{group}': {e}; retrying");
                tokio::time::sleep(cluster.config().backoff(attempt)).await;
            }
            other => return other,
        }
    }
}

/// Sends the request `build(version)` to the coordinator of `group` and returns the
/// coordinator with the response. A response carrying a coordinator error, or a broken
/// connection, sends the request again to a freshly looked-up coordinator after a
/// backoff, at most [`COORDINATOR_ATTEMPTS`] times. `extra` extends the request timeout
/// (JoinGroup waits for the rebalance).
pub async fn coordinator_request<R, F>(
    cluster: &mut Cluster,
    group: &str,
    extra: Duration,
    build: F,
) -> Result<(BrokerMetadata, R::Response)>
where
    R: Request,
    R::Response: CoordinatorError,
    F: Fn(i16) -> Result<R>,
{
    let mut attempt = 0;
    loop {
        let result = async {
            let coordinator = find_coordinator_once(cluster, group).await?;
            let conn = cluster.connection(coordinator.node_id).await?;
            let version = conn.version_for::<R>(None)?;
            let request = build(version)?;
            let resp = conn.send_version(&request, version, extra).await?;
            match resp.coordinator_error() {
                codes::NONE => Ok((coordinator, resp)),
                code => Err(group_error(code, group, None)),
            }
        }
        .await;
        match result {
            Err(e) if retry_at_coordinator(&e) && attempt + 1 < COORDINATOR_ATTEMPTS => {
                attempt += 1;
                tracing::debug!("group '{group}': {e}; retrying");
                tokio::time::sleep(cluster.config().backoff(attempt)).await;
            }
            Err(e) if retry_at_coordinator(&e) => {
                return Err(ClientError::RetriesExhausted {
                    attempts: attempt + 1,
                    last: Box::new(e),
                })
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    #[test]
    fn find_coordinator_at_every_version() {
        for v in FindCoordinatorRequest::VERSIONS.min..=FindCoordinatorRequest::VERSIONS.max {
            let mut buf = BytesMut::new();
            find_coordinator_request(v, "g")
                .encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("v{v}: {e}"));
            let back = FindCoordinatorRequest::decode(&mut buf.freeze(), v).unwrap();
            if v >= 4 {
                assert_eq!(back.coordinator_keys[0].as_str(), "g", "v{v}");
            } else {
                assert_eq!(back.key.as_str(), "g", "v{v}");
            }

            let resp = if v >= 4 {
                FindCoordinatorResponse::default().with_coordinators(vec![Coordinator::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_node_id(3.into())
                    .with_host(StrBytes::from_static_str("h"))
                    .with_port(9092)])
            } else {
                FindCoordinatorResponse::default()
                    .with_node_id(3.into())
                    .with_host(StrBytes::from_static_str("h"))
                    .with_port(9092)
            };
            let mut buf = BytesMut::new();
            resp.encode(&mut buf, v).unwrap();
            let resp = FindCoordinatorResponse::decode(&mut buf.freeze(), v).unwrap();
            let c = parse_find_coordinator(v, "g", &resp).unwrap();
            assert_eq!((c.node_id, c.addr()), (3, "h:9092".to_string()), "v{v}");
        }
    }

    #[test]
    fn coordinator_errors_are_retried_and_named() {
        let resp = FindCoordinatorResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
        let e = parse_find_coordinator(3, "g", &resp).unwrap_err();
        assert!(retry_at_coordinator(&e), "{e}");
        assert!(e.to_string().contains("COORDINATOR_NOT_AVAILABLE"), "{e}");
        // A v4 answer that does not name our group is not taken for someone else's.
        let resp = FindCoordinatorResponse::default().with_coordinators(vec![
            Coordinator::default().with_key(StrBytes::from_static_str("other")),
        ]);
        assert!(parse_find_coordinator(4, "g", &resp).is_err());
        let e = group_error(GROUP_ID_NOT_FOUND, "g", None);
        assert_eq!(
            e.to_string(),
            "consumer group 'g' does not exist (GROUP_ID_NOT_FOUND)"
        );
        assert!(!retry_at_coordinator(&e));
        assert_eq!(
            first_coordinator_error([0, 25, NOT_COORDINATOR, 14].into_iter()),
            NOT_COORDINATOR
        );
        assert_eq!(first_coordinator_error([0, 25].into_iter()), codes::NONE);
    }
}
