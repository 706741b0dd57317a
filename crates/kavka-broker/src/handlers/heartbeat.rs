//! Heartbeat: keeps a classic member's session alive and tells it when to rejoin.

use crate::broker::Broker;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

pub fn handle(b: &Broker, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let r = b.groups.heartbeat(
        &req.group_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(r.err().map_or(0, |e| e.code()))
}
