//! ListGroups, with the state (v4+) and type (v5+) filters.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

pub fn handle(b: &Broker, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_string()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_string()).collect();
    match b.groups.list_groups(&states, &types) {
        Err(e) => ListGroupsResponse::default().with_error_code(e.code()),
        Ok(groups) => ListGroupsResponse::default().with_groups(
            groups
                .into_iter()
                .map(|g| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&g.group_id)))
                        .with_protocol_type(str_bytes(&g.protocol_type))
                        .with_group_state(if version >= 4 {
                            str_bytes(&g.state)
                        } else {
                            Default::default()
                        })
                        .with_group_type(if version >= 5 {
                            str_bytes(&g.group_type)
                        } else {
                            Default::default()
                        })
                })
                .collect(),
        ),
    }
}
