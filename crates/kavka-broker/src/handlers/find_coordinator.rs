//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
//! partition, a transactional id's the leader of its `__transaction_state` partition (on a
//! single node, this broker). The first request creates the topic, as Kafka does.

use super::str_bytes;
use crate::broker::Broker;
use crate::group::CoordinatorNode;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kavka_protocol::error::ErrorCode;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn find(b: &Broker, key: &str, key_type: i8) -> Result<CoordinatorNode, (ErrorCode, &'static str)> {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => Err((ErrorCode::InvalidRequest, "empty group id")),
        KEY_TYPE_GROUP => b
            .groups
            .coordinator_for(key)
            .map_err(|e| (e, "the group coordinator is not available yet")),
        KEY_TYPE_TRANSACTION if key.is_empty() => {
            Err((ErrorCode::InvalidRequest, "empty transactional id"))
        }
        KEY_TYPE_TRANSACTION => b
            .txns
            .coordinator_for(key)
            .map_err(|e| (e, "the transaction coordinator is not available yet")),
        _ => Err((ErrorCode::InvalidRequest, "unknown coordinator key type")),
    }
}

pub fn handle(b: &Broker, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match find(b, key, req.key_type) {
                    Ok(node) => c
                        .with_node_id(BrokerId(node.node_id))
                        .with_host(str_bytes(&node.host))
                        .with_port(i32::from(node.port)),
                    Err((e, msg)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(msg))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match find(b, &req.key, req.key_type) {
        Ok(node) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node.node_id))
            .with_host(str_bytes(&node.host))
            .with_port(i32::from(node.port)),
        Err((e, msg)) => FindCoordinatorResponse::default()
            .with_error_code(e.code())
            .with_error_message((version >= 1).then(|| str_bytes(msg)))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
