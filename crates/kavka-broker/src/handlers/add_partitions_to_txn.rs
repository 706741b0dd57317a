//! AddPartitionsToTxn (Kafka's `handleAddPartitionsToTransaction`): v0-3 carry one
//! transaction from its producer; v4+ a batch of transactions, each either added (as v3) or,
//! with `verify_only` (KIP-890, sent by partition leaders), only checked: every partition
//! hears whether the producer's Ongoing transaction has it.
//!
//! Partitions of unknown topics hear UNKNOWN_TOPIC_OR_PARTITION and the rest of that
//! transaction OPERATION_NOT_ATTEMPTED, as Kafka answers. A coordinator error applies to
//! every partition of the transaction.

use crate::broker::Broker;
use crate::txn::state::TopicPartition;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};
use kavka_protocol::error::{ErrorCode, NONE};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Most partitions one transaction entry of a request may name.
const MAX_PARTITIONS: usize = 100_000;

pub async fn handle(
    b: Arc<Broker>,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version < 4 {
        let txn = AddPartitionsToTxnTransaction::default()
            .with_transactional_id(req.v3_and_below_transactional_id)
            .with_producer_id(req.v3_and_below_producer_id)
            .with_producer_epoch(req.v3_and_below_producer_epoch)
            .with_topics(req.v3_and_below_topics);
        let result = one(&b, txn, version).await;
        return AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(result.topic_results);
    }
    let mut results = Vec::with_capacity(req.transactions.len());
    for txn in req.transactions {
        results.push(one(&b, txn, version).await);
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

async fn one(
    b: &Arc<Broker>,
    txn: AddPartitionsToTxnTransaction,
    version: i16,
) -> AddPartitionsToTxnResult {
    let id = txn.transactional_id.to_string();
    let parts = partitions(&txn.topics);
    let codes: Vec<i16> = if parts.len() > MAX_PARTITIONS {
        vec![ErrorCode::InvalidRequest.code(); parts.len()]
    } else if txn.verify_only {
        match b
            .txns
            .verify_partitions(&id, txn.producer_id.0, txn.producer_epoch, &parts)
        {
            Ok(present) => present
                .into_iter()
                .map(|p| match (p, version >= 5) {
                    (true, _) => NONE,
                    // KIP-890: the leader tells its producer to abort.
                    (false, true) => ErrorCode::TransactionAbortable.code(),
                    (false, false) => ErrorCode::InvalidTxnState.code(),
                })
                .collect(),
            Err(e) => vec![e.code().code(); parts.len()],
        }
    } else {
        let image = b.controller.image();
        let unknown: Vec<bool> = parts
            .iter()
            .map(|(t, p)| {
                image
                    .topic(t)
                    .is_none_or(|topic| !topic.partitions.contains_key(p))
            })
            .collect();
        if unknown.iter().any(|u| *u) {
            unknown
                .iter()
                .map(|u| {
                    if *u {
                        ErrorCode::UnknownTopicOrPartition.code()
                    } else {
                        ErrorCode::OperationNotAttempted.code()
                    }
                })
                .collect()
        } else {
            let set: BTreeSet<TopicPartition> = parts.iter().cloned().collect();
            let code = match b
                .txns
                .add_partitions(&id, txn.producer_id.0, txn.producer_epoch, set)
                .await
            {
                Ok(()) => NONE,
                Err(e) => {
                    tracing::debug!(transactional_id = %id, "AddPartitionsToTxn: {e}");
                    e.code().code()
                }
            };
            vec![code; parts.len()]
        }
    };
    AddPartitionsToTxnResult::default()
        .with_transactional_id(TransactionalId(txn.transactional_id.0))
        .with_topic_results(results(&parts, &codes))
}

/// The request's partitions, in its order (duplicates kept once).
fn partitions(topics: &[AddPartitionsToTxnTopic]) -> Vec<TopicPartition> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for t in topics {
        for p in &t.partitions {
            let tp = (t.name.to_string(), *p);
            if seen.insert(tp.clone()) {
                out.push(tp);
            }
        }
    }
    out
}

fn results(parts: &[TopicPartition], codes: &[i16]) -> Vec<AddPartitionsToTxnTopicResult> {
    debug_assert_eq!(parts.len(), codes.len());
    let mut by_topic: BTreeMap<&str, Vec<AddPartitionsToTxnPartitionResult>> = BTreeMap::new();
    for ((t, p), code) in parts.iter().zip(codes) {
        by_topic.entry(t.as_str()).or_default().push(
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(*p)
                .with_partition_error_code(*code),
        );
    }
    by_topic
        .into_iter()
        .map(|(t, rs)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(super::str_bytes(t)))
                .with_results_by_partition(rs)
        })
        .collect()
}
