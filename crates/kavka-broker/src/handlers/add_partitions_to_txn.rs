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

#[cfg(test)]
mod tests {
    //! The transaction handlers on a broker started in-process: the codes Kafka answers.

    use super::*;
    use crate::handlers::{
        describe_transactions, end_txn, find_coordinator, init_producer_id, list_transactions,
    };
    use kafka_protocol::messages::{
        DescribeTransactionsRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
        ListTransactionsRequest, ProducerId,
    };
    use kafka_protocol::protocol::StrBytes;
    use kavka_metadata::{CreateTopicSpec, TopicDefaults};

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    fn topic(name: &str, partitions: &[i32]) -> AddPartitionsToTxnTopic {
        AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(name)))
            .with_partitions(partitions.to_vec())
    }

    /// (topic, partition, code) of a result, sorted.
    fn codes(results: &[AddPartitionsToTxnTopicResult]) -> Vec<(String, i32, i16)> {
        let mut out: Vec<_> = results
            .iter()
            .flat_map(|t| {
                t.results_by_partition.iter().map(|p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.partition_error_code,
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transaction_handlers_answer_kafka_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let overrides = [
            "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
            format!("log.dirs={}", dir.path().join("logs").display()),
            format!("metadata.log.dir={}", dir.path().join("meta").display()),
            "transaction.state.log.num.partitions=2".to_string(),
        ];
        let config = crate::config::BrokerConfig::from_properties("", &overrides)
            .unwrap()
            .0;
        let running = crate::start(config).await.unwrap();
        let b = running.broker.clone();
        {
            let b = b.clone();
            tokio::task::spawn_blocking(move || {
                let spec = CreateTopicSpec {
                    name: "t".into(),
                    num_partitions: 1,
                    replication_factor: 1,
                    ..Default::default()
                };
                let defaults = TopicDefaults {
                    num_partitions: 1,
                    replication_factor: 1,
                };
                for r in b.controller.create_topics(vec![spec], false, &defaults) {
                    r.unwrap();
                }
                let found = find_coordinator::handle(
                    &b,
                    FindCoordinatorRequest::default()
                        .with_key(s("tx"))
                        .with_key_type(1),
                    3,
                );
                assert_eq!(found.error_code, 0);
                assert_eq!(found.node_id.0, 1);
            })
            .await
            .unwrap();
        }
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("tx"))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let mut resp = init_producer_id::handle(b.clone(), init.clone(), 4).await;
        for _ in 0..200 {
            if resp.error_code != ErrorCode::CoordinatorLoadInProgress.code() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            resp = init_producer_id::handle(b.clone(), init.clone(), 4).await;
        }
        assert_eq!(resp.error_code, 0);
        let (pid, epoch) = (resp.producer_id, resp.producer_epoch);
        assert_eq!(epoch, 0);

        let v3 = |topics: Vec<AddPartitionsToTxnTopic>| {
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
                .with_v3_and_below_producer_id(pid)
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(topics)
        };
        // An unknown partition: it hears UNKNOWN_TOPIC_OR_PARTITION, the rest is not tried.
        let r = handle(
            b.clone(),
            v3(vec![topic("t", &[0, 5]), topic("nope", &[0])]),
            3,
        )
        .await;
        assert_eq!(
            codes(&r.results_by_topic_v3_and_below),
            vec![
                ("nope".into(), 0, ErrorCode::UnknownTopicOrPartition.code()),
                ("t".into(), 0, ErrorCode::OperationNotAttempted.code()),
                ("t".into(), 5, ErrorCode::UnknownTopicOrPartition.code()),
            ]
        );
        let r = handle(b.clone(), v3(vec![topic("t", &[0])]), 3).await;
        assert_eq!(
            codes(&r.results_by_topic_v3_and_below),
            vec![("t".into(), 0, 0)]
        );

        // Verify-only (v4+, from partition leaders).
        let verify = |version_epoch: i16| {
            AddPartitionsToTxnRequest::default().with_transactions(vec![
                AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(TransactionalId(s("tx")))
                    .with_producer_id(pid)
                    .with_producer_epoch(version_epoch)
                    .with_verify_only(true)
                    .with_topics(vec![topic("t", &[0]), topic("u", &[1])]),
            ])
        };
        for (version, missing) in [
            (4, ErrorCode::InvalidTxnState.code()),
            (5, ErrorCode::TransactionAbortable.code()),
        ] {
            let r = handle(b.clone(), verify(epoch), version).await;
            assert_eq!(r.results_by_transaction.len(), 1);
            assert_eq!(
                codes(&r.results_by_transaction[0].topic_results),
                vec![("t".into(), 0, 0), ("u".into(), 1, missing)]
            );
        }
        let r = handle(b.clone(), verify(epoch + 1), 5).await;
        assert_eq!(
            codes(&r.results_by_transaction[0].topic_results),
            vec![
                ("t".into(), 0, ErrorCode::ProducerFenced.code()),
                ("u".into(), 1, ErrorCode::ProducerFenced.code())
            ]
        );

        // ListTransactions: unknown state names are reported and ignored.
        let b2 = b.clone();
        let (listed, only_unknown, described) = tokio::task::spawn_blocking(move || {
            let listed = list_transactions::handle(
                &b2,
                ListTransactionsRequest::default()
                    .with_state_filters(vec![s("Ongoing"), s("Bogus")])
                    .with_duration_filter(-1),
                1,
            );
            let only_unknown = list_transactions::handle(
                &b2,
                ListTransactionsRequest::default().with_state_filters(vec![s("Bogus")]),
                0,
            );
            let described = describe_transactions::handle(
                &b2,
                DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    TransactionalId(s("tx")),
                    TransactionalId(s("nope")),
                ]),
                0,
            );
            (listed, only_unknown, described)
        })
        .await
        .unwrap();
        assert_eq!(listed.error_code, 0);
        assert_eq!(listed.unknown_state_filters, vec![s("Bogus")]);
        assert_eq!(listed.transaction_states.len(), 1);
        assert_eq!(&*listed.transaction_states[0].transaction_state, "Ongoing");
        assert_eq!(listed.transaction_states[0].producer_id, pid);
        assert!(only_unknown.transaction_states.is_empty());
        assert_eq!(only_unknown.unknown_state_filters, vec![s("Bogus")]);
        let d = &described.transaction_states;
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].error_code, &*d[0].transaction_state), (0, "Ongoing"));
        assert_eq!(d[0].transaction_timeout_ms, 60_000);
        assert_eq!(d[0].topics.len(), 1);
        assert_eq!(d[0].topics[0].partitions, vec![0]);
        assert!(d[0].transaction_start_time_ms > 0);
        assert_eq!(d[1].error_code, ErrorCode::TransactionalIdNotFound.code());

        // EndTxn: an old epoch is fenced, an unknown id has no mapping, the producer commits.
        let end = |id: &str, e: i16| {
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(s(id)))
                .with_producer_id(pid)
                .with_producer_epoch(e)
                .with_committed(true)
        };
        let r = end_txn::handle(b.clone(), end("tx", epoch + 1), 3).await;
        assert_eq!(r.error_code, ErrorCode::ProducerFenced.code());
        let r = end_txn::handle(b.clone(), end("unknown", epoch), 3).await;
        assert_eq!(r.error_code, ErrorCode::InvalidProducerIdMapping.code());
        let r = end_txn::handle(b.clone(), end("tx", epoch), 3).await;
        assert_eq!(r.error_code, 0);
        running.shutdown().await;
    }
}
