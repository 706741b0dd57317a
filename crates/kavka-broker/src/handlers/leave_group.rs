//! LeaveGroup: one member (v0-2) or a batch of members by member or instance id (v3+).
//! Answered once the group's record, when the leave changed it, is replicated (Kafka's
//! coordinator writes with acks=-1); a failed replication is a group-level error.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

pub fn handle(b: &Broker, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let result =
        b.groups
            .leave_group(&req.group_id, &members)
            .and_then(|(codes, wait)| match wait {
                Some(w) => w.replicated_blocking().map(|()| codes),
                None => Ok(codes),
            });
    match result {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(codes) if version >= 3 => LeaveGroupResponse::default().with_members(
            members
                .iter()
                .zip(codes)
                .map(|((m, i), r)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(m))
                        .with_group_instance_id(i.as_deref().map(str_bytes))
                        .with_error_code(r.err().map_or(0, |e| e.code()))
                })
                .collect(),
        ),
        Ok(codes) => LeaveGroupResponse::default().with_error_code(
            codes
                .into_iter()
                .next()
                .and_then(|r| r.err())
                .map_or(0, |e| e.code()),
        ),
    }
}
