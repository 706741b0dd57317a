//! ListTransactions: the transactional ids this broker coordinates, filtered by state,
//! producer id and (v1) how long their transaction has run. Unknown state names are
//! returned as such and otherwise ignored, as Kafka does.

use super::str_bytes;
use crate::broker::Broker;
use crate::txn::TxnState;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

pub fn handle(b: &Broker, req: ListTransactionsRequest, version: i16) -> ListTransactionsResponse {
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for name in &req.state_filters {
        match TxnState::from_name(name) {
            Some(s) => states.push(s),
            None => unknown.push(name.clone()),
        }
    }
    // Only unknown filters given: nothing can match.
    if states.is_empty() && !unknown.is_empty() {
        return ListTransactionsResponse::default().with_unknown_state_filters(unknown);
    }
    let producer_ids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let duration = if version >= 1 {
        req.duration_filter
    } else {
        -1
    };
    match b.txns.list(&states, &producer_ids, duration) {
        Ok(list) => ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(
                list.into_iter()
                    .map(|t| {
                        TransactionState::default()
                            .with_transactional_id(TransactionalId(str_bytes(&t.transactional_id)))
                            .with_producer_id(ProducerId(t.producer_id))
                            .with_transaction_state(str_bytes(t.state.name()))
                    })
                    .collect(),
            ),
        Err(e) => ListTransactionsResponse::default()
            .with_error_code(e.code().code())
            .with_unknown_state_filters(unknown),
    }
}
