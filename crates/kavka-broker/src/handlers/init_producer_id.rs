//! InitProducerId (Kafka's `TransactionCoordinator.handleInitProducerId`).
//!
//! - Without a transactional id (idempotent producers): a fresh producer id at epoch 0 on
//!   every call. Kafka ignores a given producer id/epoch (KIP-360) then, and so do we: the
//!   client bumps epochs of idempotent producers locally.
//! - With one: the transaction coordinator of the id (the leader of its
//!   `__transaction_state` partition) bumps its epoch, fencing older producers, and aborts a
//!   transaction they left Ongoing (the client hears CONCURRENT_TRANSACTIONS and retries).

use crate::broker::Broker;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kavka_protocol::error::ErrorCode;
use std::sync::Arc;

fn fail(code: ErrorCode) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(code.code())
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub async fn handle(
    b: Arc<Broker>,
    req: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let transactional_id = req.transactional_id.as_ref().map(|t| t.to_string());
    let Some(transactional_id) = transactional_id else {
        return idempotent(b).await;
    };
    if transactional_id.is_empty() {
        // Kafka: an empty transactional id is a client bug.
        return fail(ErrorCode::InvalidRequest);
    }
    // KIP-360 (v3+): a client re-initialising after an error names its producer id and
    // epoch; both or neither.
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let expected = if version >= 3 && (pid != -1 || epoch != -1) {
        if pid == -1 || epoch == -1 {
            return fail(ErrorCode::InvalidRequest);
        }
        Some((pid, epoch))
    } else {
        None
    };
    match b
        .txns
        .init_producer_id(&transactional_id, req.transaction_timeout_ms, expected)
        .await
    {
        Ok((id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
        Err(e) => {
            tracing::debug!(%transactional_id, "InitProducerId: {e}");
            fail(e.code())
        }
    }
}

/// An idempotent producer's id: fresh every time. Blocking when a new block of ids is
/// committed to the metadata log, so it runs on the blocking pool.
async fn idempotent(b: Arc<Broker>) -> InitProducerIdResponse {
    let generated =
        tokio::task::spawn_blocking(move || b.producer_ids.generate(&b.controller)).await;
    match generated {
        Ok(Ok(id)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(Err(e)) => {
            tracing::error!("cannot allocate producer ids: {e}");
            InitProducerIdResponse::default()
                .with_error_code(e.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
        Err(_) => fail(ErrorCode::UnknownServerError),
    }
}
