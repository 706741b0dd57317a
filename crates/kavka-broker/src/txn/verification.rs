//! Produce-time transaction verification (KIP-890 part 1, Kafka's
//! `transaction.partition.verification.enable`).
//!
//! Before a partition leader appends the batch that starts a producer's transaction on a
//! partition (the producer has no ongoing transaction there), it asks the transaction
//! coordinator of the request's transactional id whether that partition was added to the
//! producer's Ongoing transaction: AddPartitionsToTxn v4 with `verify_only`, or a direct call
//! when this broker is the coordinator. Without it, a late or stray batch (a retry that
//! arrives after its transaction was aborted, a client bug) would open a transaction that no
//! marker ever ends, holding back the last stable offset forever.
//!
//! Kafka's `AddPartitionsToTxnManager` keeps one inter-broker connection per coordinator;
//! here each destination has one [`LeaderClient`] behind an async mutex (verifications to one
//! coordinator take turns, each bounded by the request timeout). The answer is mapped to the
//! code the producer hears by [`produce_error`], as Kafka's `ReplicaManager.appendRecords`
//! does for clients below Produce v12 (all this broker speaks).

use super::coordinator::coordinator_in;
use super::state::TopicPartition;
use super::TransactionCoordinator;
use crate::replication::leader_client::{LeaderClient, LeaderClientConfig};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kavka_metadata::MetadataImage;
use kavka_protocol::error::ErrorCode;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The batched (v4+) AddPartitionsToTxn form, the first with `verify_only`; v4 answers a
/// missing partition with INVALID_TXN_STATE (v5 with TRANSACTION_ABORTABLE).
const VERIFY_VERSION: i16 = 4;

/// Every partition's verdict, in the order asked: `Ok` = in the producer's transaction.
pub type Verdicts = Vec<Result<(), ErrorCode>>;

/// Asks transaction coordinators whether partitions are in a producer's transaction.
/// One per broker (it keeps a connection per coordinator broker for its life).
pub struct TxnVerifier {
    node_id: i32,
    request_timeout: Duration,
    /// Connections by destination broker id; at most one per broker of the cluster.
    links: Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<LeaderClient>>>>>,
}

impl std::fmt::Debug for TxnVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnVerifier")
            .field("node_id", &self.node_id)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl TxnVerifier {
    /// `node_id`: this broker (when it is the coordinator no request is sent);
    /// `request_timeout`: bounds connecting and each AddPartitionsToTxn exchange.
    pub fn new(node_id: i32, request_timeout: Duration) -> Arc<Self> {
        Arc::new(TxnVerifier {
            node_id,
            request_timeout,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Whether each of `partitions` is in the Ongoing transaction of `producer_id` at
    /// `producer_epoch` under `transactional_id`, as the coordinator says (Kafka's
    /// `AddPartitionsToTxnManager` mapping applied: PRODUCER_FENCED becomes
    /// INVALID_PRODUCER_EPOCH, TRANSACTION_ABORTABLE and CLUSTER_AUTHORIZATION_FAILED become
    /// INVALID_TXN_STATE, no answer is NETWORK_EXCEPTION). Never blocks the thread.
    pub async fn verify(
        &self,
        txns: &TransactionCoordinator,
        image: &MetadataImage,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Verdicts {
        let coordinator = match coordinator_in(image, transactional_id) {
            Ok(c) => c,
            Err(code) => return vec![Err(code); partitions.len()],
        };
        let verdicts = if coordinator.node_id == self.node_id {
            match txns.verify_partitions(transactional_id, producer_id, producer_epoch, partitions)
            {
                Ok(present) => present
                    .into_iter()
                    .map(|p| {
                        if p {
                            Ok(())
                        } else {
                            Err(ErrorCode::InvalidTxnState)
                        }
                    })
                    .collect(),
                Err(e) => vec![Err(e.code()); partitions.len()],
            }
        } else {
            let addr = format!("{}:{}", coordinator.host, coordinator.port);
            self.remote(
                coordinator.node_id,
                addr,
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
            )
            .await
        };
        debug_assert_eq!(verdicts.len(), partitions.len());
        verdicts
            .into_iter()
            .map(|v| v.map_err(coordinator_error))
            .collect()
    }

    async fn remote(
        &self,
        dest: i32,
        addr: String,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
    ) -> Verdicts {
        let request = verify_request(transactional_id, producer_id, producer_epoch, partitions);
        let link = self.link(dest);
        let mut guard = link.lock().await;
        let client = match &mut *guard {
            Some(c) if c.addr() == addr => c,
            slot => slot.insert(LeaderClient::new(LeaderClientConfig {
                addr: addr.clone(),
                client_id: format!("broker-{}-txn-verifier", self.node_id),
                socket_timeout: self.request_timeout,
            })),
        };
        match client.send(&request, VERIFY_VERSION, Duration::ZERO).await {
            Ok(response) => verdicts(&response, transactional_id, partitions),
            Err(e) => {
                tracing::warn!(%transactional_id, "transaction verification at {addr}: {e}");
                vec![Err(ErrorCode::NetworkException); partitions.len()]
            }
        }
    }

    /// The connection slot of broker `dest`, made on first use.
    fn link(&self, dest: i32) -> Arc<tokio::sync::Mutex<Option<LeaderClient>>> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.entry(dest).or_default().clone()
    }
}

/// AddPartitionsToTxn v4, one verify-only transaction, its partitions grouped by topic.
fn verify_request(
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[TopicPartition],
) -> AddPartitionsToTxnRequest {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(ps)
        })
        .collect();
    AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(true)
            .with_topics(topics),
    ])
}

/// Each partition's verdict in a coordinator's answer. A top-level error applies to all; a
/// partition the answer leaves out is not taken as verified (NETWORK_EXCEPTION, retried).
fn verdicts(
    response: &AddPartitionsToTxnResponse,
    transactional_id: &str,
    partitions: &[TopicPartition],
) -> Verdicts {
    if let Some(code) = ErrorCode::try_from_code(response.error_code) {
        return vec![Err(code); partitions.len()];
    }
    let result = response
        .results_by_transaction
        .iter()
        .find(|r| r.transactional_id.0.as_str() == transactional_id);
    partitions
        .iter()
        .map(|(t, p)| {
            let code = result
                .into_iter()
                .flat_map(|r| &r.topic_results)
                .filter(|tr| tr.name.0.as_str() == t)
                .flat_map(|tr| &tr.results_by_partition)
                .find(|pr| pr.partition_index == *p)
                .map(|pr| pr.partition_error_code)
                .ok_or(ErrorCode::NetworkException)?;
            match ErrorCode::try_from_code(code) {
                None => Ok(()),
                Some(e) => Err(e),
            }
        })
        .collect()
}

/// Kafka's `AddPartitionsToTxnManager`: producers expect INVALID_PRODUCER_EPOCH for a fenced
/// epoch; TRANSACTION_ABORTABLE is for Produce v12+ clients only; an authorization failure
/// of the broker itself is not the client's business.
fn coordinator_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
        ErrorCode::TransactionAbortable | ErrorCode::ClusterAuthorizationFailed => {
            ErrorCode::InvalidTxnState
        }
        other => other,
    }
}

/// What the producer hears for a failed verification (Kafka's `ReplicaManager.appendRecords`
/// for clients below Produce v12): the coordinator's retriable conditions become
/// NOT_ENOUGH_REPLICAS, which old clients retry without a metadata refresh; a partition not
/// in the transaction is INVALID_TXN_STATE; anything else (INVALID_PRODUCER_EPOCH,
/// INVALID_PRODUCER_ID_MAPPING, ...) passes through.
pub fn produce_error(code: ErrorCode) -> (ErrorCode, String) {
    match code {
        ErrorCode::ConcurrentTransactions
        | ErrorCode::NetworkException
        | ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::NotCoordinator => (
            ErrorCode::NotEnoughReplicas,
            format!(
                "Unable to verify the partition has been added to the transaction. \
                 Underlying error: {code:?}"
            ),
        ),
        ErrorCode::InvalidTxnState => (
            code,
            "Partition was not added to the transaction".to_string(),
        ),
        other => (other, format!("transaction verification failed: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
    };

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn coordinator_codes_map_as_kafka_maps_them_for_old_producers() {
        assert_eq!(
            coordinator_error(ErrorCode::ProducerFenced),
            ErrorCode::InvalidProducerEpoch
        );
        assert_eq!(
            coordinator_error(ErrorCode::TransactionAbortable),
            ErrorCode::InvalidTxnState
        );
        assert_eq!(
            coordinator_error(ErrorCode::InvalidProducerIdMapping),
            ErrorCode::InvalidProducerIdMapping
        );
        for retriable in [
            ErrorCode::ConcurrentTransactions,
            ErrorCode::NetworkException,
            ErrorCode::CoordinatorLoadInProgress,
            ErrorCode::CoordinatorNotAvailable,
            ErrorCode::NotCoordinator,
        ] {
            assert_eq!(produce_error(retriable).0, ErrorCode::NotEnoughReplicas);
        }
        assert_eq!(
            produce_error(ErrorCode::InvalidTxnState).0,
            ErrorCode::InvalidTxnState
        );
        assert_eq!(
            produce_error(ErrorCode::InvalidProducerEpoch).0,
            ErrorCode::InvalidProducerEpoch
        );
    }

    #[test]
    fn the_request_groups_partitions_and_the_answer_is_read_per_partition() {
        let parts = [tp("b", 1), tp("a", 0), tp("b", 0)];
        let req = verify_request("t", 7, 3, &parts);
        let txn = &req.transactions[0];
        assert!(txn.verify_only);
        assert_eq!((txn.producer_id.0, txn.producer_epoch), (7, 3));
        let topics: Vec<_> = txn
            .topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partitions.clone()))
            .collect();
        assert_eq!(
            topics,
            vec![("a".to_string(), vec![0]), ("b".to_string(), vec![1, 0])]
        );

        let result = |p: i32, code: i16| {
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(p)
                .with_partition_error_code(code)
        };
        let response = AddPartitionsToTxnResponse::default().with_results_by_transaction(vec![
            AddPartitionsToTxnResult::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("t")))
                .with_topic_results(vec![AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(StrBytes::from_static_str("b")))
                    .with_results_by_partition(vec![
                        result(1, 0),
                        result(0, ErrorCode::InvalidTxnState.code()),
                    ])]),
        ]);
        assert_eq!(
            verdicts(&response, "t", &parts),
            vec![
                Ok(()),
                Err(ErrorCode::NetworkException),
                Err(ErrorCode::InvalidTxnState)
            ]
        );
        let refused = response
            .clone()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
        assert_eq!(
            verdicts(&refused, "t", &parts)
                .into_iter()
                .map(|v| v.map_err(coordinator_error))
                .collect::<Vec<_>>(),
            vec![Err(ErrorCode::InvalidTxnState); 3]
        );
    }
}
