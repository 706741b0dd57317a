//! DescribeGroups: state, protocol and members of classic groups.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kavka_protocol::error::ErrorCode;

use super::GROUP_OPERATIONS;

pub fn handle(b: &Broker, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let d = b.groups.describe_group(id);
            let mut error = d.error;
            // v6 (KIP-1043) reports an unknown group as such; older versions as Dead.
            if error.is_none() && !d.found && version >= 6 {
                error = Some(ErrorCode::GroupIdNotFound);
            }
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(if version >= 4 {
                            m.group_instance_id.as_deref().map(str_bytes)
                        } else {
                            None
                        })
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            DescribedGroup::default()
                .with_error_code(error.map_or(0, |e| e.code()))
                .with_group_id(id.clone())
                .with_group_state(str_bytes(&d.state))
                .with_protocol_type(str_bytes(&d.protocol_type))
                .with_protocol_data(str_bytes(&d.protocol))
                .with_members(members)
                .with_authorized_operations(if req.include_authorized_operations {
                    GROUP_OPERATIONS
                } else {
                    i32::MIN
                })
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
