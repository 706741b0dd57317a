//! SyncGroup: the leader hands in the assignment; every member waits for its share.

use super::str_bytes;
use crate::broker::Broker;
use crate::group::classic::{Outcome, SyncRequest, SyncResult};
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kavka_protocol::error::ErrorCode;
use std::sync::Arc;

pub async fn handle(b: Arc<Broker>, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        generation_id: req.generation_id,
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let r = match b.groups.sync_group(&req.group_id, sync) {
        Outcome::Done(r) => r,
        Outcome::Wait(rx) => rx
            .await
            .unwrap_or_else(|_| SyncResult::error(ErrorCode::CoordinatorNotAvailable)),
    };
    let v5 = version >= 5;
    SyncGroupResponse::default()
        .with_error_code(r.error.map_or(0, |e| e.code()))
        .with_protocol_type(r.protocol_type.as_deref().filter(|_| v5).map(str_bytes))
        .with_protocol_name(r.protocol_name.as_deref().filter(|_| v5).map(str_bytes))
        .with_assignment(r.assignment)
}
