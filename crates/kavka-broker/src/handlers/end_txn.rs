//! EndTxn: commits or aborts the producer's transaction. Answered once the decision
//! (PrepareCommit/PrepareAbort) is in `__transaction_state`; the markers follow in the
//! background, and until they are written the id's other requests hear
//! CONCURRENT_TRANSACTIONS.

use crate::broker::Broker;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};
use std::sync::Arc;

pub async fn handle(b: Arc<Broker>, req: EndTxnRequest, _version: i16) -> EndTxnResponse {
    let code = match b
        .txns
        .end_txn(
            &req.transactional_id,
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await
    {
        Ok(()) => kavka_protocol::error::NONE,
        Err(e) => {
            tracing::debug!(transactional_id = %&*req.transactional_id, "EndTxn: {e}");
            e.code().code()
        }
    };
    EndTxnResponse::default().with_error_code(code)
}
