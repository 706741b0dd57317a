//! DeleteGroups: removes empty groups and their committed offsets.

use crate::broker::Broker;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

pub fn handle(b: &Broker, req: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    DeleteGroupsResponse::default().with_results(
        req.groups_names
            .into_iter()
            .map(|g| {
                let r = b.groups.delete_group(&g);
                DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(r.err().map_or(0, |e| e.code()))
            })
            .collect(),
    )
}
