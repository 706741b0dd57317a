//! JoinGroup: parks until the group's join phase completes, then answers with the
//! generation (and, to the leader, every member's metadata).

use super::str_bytes;
use crate::broker::Broker;
use crate::group::classic::{JoinRequest, JoinResult, Outcome};
use crate::router::ClientInfo;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kavka_protocol::error::ErrorCode;
use std::sync::Arc;

pub async fn handle(
    b: Arc<Broker>,
    req: JoinGroupRequest,
    version: i16,
    client: ClientInfo,
) -> JoinGroupResponse {
    let member_id = req.member_id.to_string();
    let join = JoinRequest {
        member_id: member_id.clone(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client.client_id,
        client_host: client.client_host,
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let result = match b.groups.join_group(&req.group_id, join) {
        Outcome::Done(r) => r,
        Outcome::Wait(rx) => rx
            .await
            .unwrap_or_else(|_| JoinResult::error(ErrorCode::CoordinatorNotAvailable, &member_id)),
    };
    response(result, version)
}

fn response(r: JoinResult, version: i16) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(if version >= 5 {
                    m.group_instance_id.as_deref().map(str_bytes)
                } else {
                    None
                })
                .with_metadata(m.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_generation_id(r.generation_id)
        .with_protocol_type(if version >= 7 {
            r.protocol_type.as_deref().map(str_bytes)
        } else {
            None
        })
        // Nullable only from v7.
        .with_protocol_name(match (&r.protocol_name, version >= 7) {
            (Some(n), _) => Some(str_bytes(n)),
            (None, true) => None,
            (None, false) => Some(str_bytes("")),
        })
        .with_leader(str_bytes(&r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(str_bytes(&r.member_id))
        .with_members(members)
}
