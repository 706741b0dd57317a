//! InitProducerId for idempotent producers (Kafka's `TransactionCoordinator
//! .handleInitProducerId` without a transactional id): every call gets a fresh producer id at
//! epoch 0. Kafka ignores a given producer id/epoch (KIP-360) when there is no transactional
//! id, and so do we: the client bumps epochs of idempotent producers locally.
//!
//! Transactions are not supported. A transactional id is answered with INVALID_REQUEST,
//! which clients treat as fatal, rather than COORDINATOR_NOT_AVAILABLE, which they would
//! retry forever.

use crate::broker::Broker;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kavka_protocol::error::ErrorCode;

pub fn handle(b: &Broker, req: InitProducerIdRequest, _version: i16) -> InitProducerIdResponse {
    let fail = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        tracing::warn!(
            "InitProducerId with a transactional id refused: transactions are not supported"
        );
        return fail(ErrorCode::InvalidRequest.code());
    }
    match b.producer_ids.generate(&b.controller) {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!("cannot allocate producer ids: {e}");
            fail(e.code())
        }
    }
}
