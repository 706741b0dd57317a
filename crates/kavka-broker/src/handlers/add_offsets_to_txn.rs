//! AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction, so
//! its transactional offset commits get the transaction's marker (Kafka's
//! `handleAddOffsetsToTransaction`).

use crate::broker::Broker;
use crate::group::coordinator::partition_for;
use crate::group::OFFSETS_TOPIC;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kavka_protocol::error::ErrorCode;
use std::collections::BTreeSet;
use std::sync::Arc;

pub async fn handle(
    b: Arc<Broker>,
    req: AddOffsetsToTxnRequest,
    _version: i16,
) -> AddOffsetsToTxnResponse {
    let code = match add(&b, &req).await {
        Ok(()) => kavka_protocol::error::NONE,
        Err(e) => e.code(),
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

async fn add(b: &Arc<Broker>, req: &AddOffsetsToTxnRequest) -> Result<(), ErrorCode> {
    let group = req.group_id.to_string();
    if group.is_empty() {
        return Err(ErrorCode::InvalidGroupId);
    }
    // The offsets topic must exist for the group's partition to be named (created on
    // first use, as FindCoordinator for the group would).
    let groups = b.groups.clone();
    tokio::task::spawn_blocking(move || groups.ensure_ready())
        .await
        .map_err(|_| ErrorCode::UnknownServerError)??;
    let n = b
        .controller
        .image()
        .topic(OFFSETS_TOPIC)
        .map(|t| t.partitions.len())
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let partition = (OFFSETS_TOPIC.to_string(), partition_for(&group, n));
    b.txns
        .add_partitions(
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            BTreeSet::from([partition]),
        )
        .await
        .map_err(|e| e.code())
}
