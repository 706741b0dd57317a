//! ConsumerGroupHeartbeat (KIP-848): join, leave, and one reconciliation step per call.
//! When the call changed the group, it is answered once the snapshot is replicated.

use super::str_bytes;
use crate::broker::Broker;
use crate::router::ClientInfo;
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

pub fn handle(
    b: &Broker,
    req: ConsumerGroupHeartbeatRequest,
    _version: i16,
    client: &ClientInfo,
) -> ConsumerGroupHeartbeatResponse {
    let result =
        b.groups
            .consumer_group_heartbeat(&req, client)
            .and_then(|(resp, wait)| match wait {
                Some(w) => w
                    .replicated_blocking()
                    .map(|()| resp)
                    .map_err(|e| (e, String::new())),
                None => Ok(resp),
            });
    match result {
        Ok(resp) => resp,
        Err((code, message)) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code.code())
            .with_error_message((!message.is_empty()).then(|| str_bytes(&message)))
            .with_member_epoch(-1),
    }
}
