//! FindCoordinator: this broker coordinates every group (single node). The first request
//! creates `__consumer_offsets`, as Kafka does. Transactions have no coordinator yet.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kavka_protocol::error::ErrorCode;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn find(b: &Broker, key: &str, key_type: i8) -> Result<(), (ErrorCode, &'static str)> {
    match key_type {
        KEY_TYPE_GROUP if key.is_empty() => Err((ErrorCode::InvalidRequest, "empty group id")),
        KEY_TYPE_GROUP => b
            .groups
            .ensure_ready()
            .map_err(|e| (e, "the group coordinator is not available yet")),
        KEY_TYPE_TRANSACTION => Err((
            ErrorCode::CoordinatorNotAvailable,
            "transactions are not supported by this broker yet",
        )),
        _ => Err((ErrorCode::InvalidRequest, "unknown coordinator key type")),
    }
}

pub fn handle(b: &Broker, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let (host, port) = (&b.advertised.0, i32::from(b.advertised.1));
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match find(b, key, req.key_type) {
                    Ok(()) => c
                        .with_node_id(BrokerId(b.node_id()))
                        .with_host(str_bytes(host))
                        .with_port(port),
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
        Ok(()) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(b.node_id()))
            .with_host(str_bytes(host))
            .with_port(port),
        Err((e, msg)) => FindCoordinatorResponse::default()
            .with_error_code(e.code())
            .with_error_message((version >= 1).then(|| str_bytes(msg)))
            .with_node_id(BrokerId(-1))
            .with_port(-1),
    }
}
