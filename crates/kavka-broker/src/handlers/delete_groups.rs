//! DeleteGroups: removes empty groups and their committed offsets, answered once their
//! tombstones are replicated.

use crate::broker::Broker;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

pub fn handle(b: &Broker, req: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    // Every group's tombstones are appended first, then waited for together.
    let deleted: Vec<_> = req
        .groups_names
        .into_iter()
        .map(|g| {
            let r = b.groups.delete_group(&g);
            (g, r)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(
        deleted
            .into_iter()
            .map(|(g, r)| {
                let r = r.and_then(|wait| wait.map_or(Ok(()), |w| w.replicated_blocking()));
                DeletableGroupResult::default()
                    .with_group_id(g)
                    .with_error_code(r.err().map_or(0, |e| e.code()))
            })
            .collect(),
    )
}
