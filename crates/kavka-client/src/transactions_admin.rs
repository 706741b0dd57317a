//! Transaction administration on [`Admin`], as Kafka's `kafka-transactions.sh` does it:
//! ListTransactions (v0-2) on every broker, DescribeTransactions (v0) at the transaction
//! coordinator found with FindCoordinator `key_type = 1`, and DescribeProducers (v0) at a
//! partition's leader (or a chosen replica).
//!
//! A transaction coordinator loads its shard of `__transaction_state` on first use, and
//! moves with that partition's leadership, so coordinator errors (NOT_COORDINATOR,
//! COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE) are retried with a bounded
//! backoff before they are reported.

use std::time::Duration;

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::Admin;
use crate::cluster::{BrokerMetadata, Cluster};
use crate::coordinator::{is_coordinator_error, retry_at_coordinator};
use crate::error::{self, codes, ClientError};
use crate::group_admin::TopicPartition;
use crate::Result;

/// `FindCoordinatorRequest.KeyType.TRANSACTION` (needs FindCoordinator v1+).
pub const KEY_TYPE_TRANSACTION: i8 = 1;

/// Kafka's TRANSACTIONAL_ID_NOT_FOUND: DescribeTransactions of an id the coordinator has
/// no state for.
pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

/// Attempts for a transaction-coordinator request. With the cluster's backoff (100 ms
/// doubling to 1 s) this waits about thirteen seconds in all: the first FindCoordinator
/// for a transactional id may have to create `__transaction_state` and load the shard.
pub const TXN_COORDINATOR_ATTEMPTS: u32 = 15;

/// Kafka's transaction state names (`TransactionState`), as the coordinator reports them
/// and as ListTransactions filters on them.
pub const TRANSACTION_STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

/// Kafka's spelling of a transaction state given in any case, `None` if it is no state.
pub fn canonical_transaction_state(state: &str) -> Option<&'static str> {
    TRANSACTION_STATES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(state))
        .copied()
}

/// What ListTransactions should return; empty filters match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListTransactionsFilter {
    /// Only these states (Kafka's names).
    pub states: Vec<String>,
    /// Only these producer ids.
    pub producer_ids: Vec<i64>,
    /// Only transactions running longer than this many ms (ListTransactions v1+, KIP-994).
    pub min_duration_ms: Option<i64>,
    /// Only transactional ids matching this regular expression (ListTransactions v2+).
    pub transactional_id_pattern: Option<String>,
}

impl ListTransactionsFilter {
    /// The lowest ListTransactions version that carries every filter set here.
    pub fn min_version(&self) -> i16 {
        if self.transactional_id_pattern.is_some() {
            2
        } else if self.min_duration_ms.is_some() {
            1
        } else {
            0
        }
    }
}

/// One row of ListTransactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    pub transactional_id: String,
    /// The broker that answered: the coordinator of this id.
    pub coordinator_id: i32,
    pub producer_id: i64,
    pub state: String,
}

/// What DescribeTransactions says about one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    pub coordinator_id: i32,
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    pub transaction_timeout_ms: i32,
    /// When the current transaction began; `None` when none is in progress (-1 on the wire).
    pub transaction_start_time_ms: Option<i64>,
    /// Partitions of the current transaction, sorted.
    pub topic_partitions: Vec<TopicPartition>,
}

/// One active producer of a partition (DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateDescription {
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// Epoch of the coordinator that wrote the last marker; `None` before any (-1).
    pub coordinator_epoch: Option<i32>,
    /// First offset of the producer's open transaction; `None` when none is open (-1).
    pub current_txn_start_offset: Option<i64>,
}

/// A transaction-level error with wording for the code a user meets most.
pub fn transaction_error(
    code: i16,
    transactional_id: &str,
    server_message: Option<&str>,
) -> ClientError {
    if code == TRANSACTIONAL_ID_NOT_FOUND {
        return ClientError::Kafka {
            code,
            name: error::error_name(code),
            message: format!("transactional id '{transactional_id}' not found"),
        };
    }
    ClientError::kafka(
        code,
        &format!("transactional id '{transactional_id}'"),
        server_message,
    )
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// ListTransactions carrying `filter`; the caller has checked `version >= filter.min_version()`.
pub fn list_transactions_request(filter: &ListTransactionsFilter) -> ListTransactionsRequest {
    debug_assert!(filter.states.iter().all(|s| !s.is_empty()));
    ListTransactionsRequest::default()
        .with_state_filters(filter.states.iter().map(|s| str_bytes(s)).collect())
        .with_producer_id_filters(filter.producer_ids.iter().map(|p| ProducerId(*p)).collect())
        .with_duration_filter(filter.min_duration_ms.unwrap_or(-1))
        .with_transactional_id_pattern(filter.transactional_id_pattern.as_deref().map(str_bytes))
}

/// The rows of one broker's ListTransactions answer.
pub fn parse_list_transactions(
    node_id: i32,
    resp: ListTransactionsResponse,
) -> Result<Vec<TransactionListing>> {
    error::check(
        resp.error_code,
        &format!("ListTransactions on broker {node_id}"),
        None,
    )?;
    if !resp.unknown_state_filters.is_empty() {
        let unknown: Vec<String> = resp
            .unknown_state_filters
            .iter()
            .map(|s| s.to_string())
            .collect();
        tracing::warn!(
            "broker {node_id} does not know the state filter(s) {}",
            unknown.join(", ")
        );
    }
    Ok(resp
        .transaction_states
        .into_iter()
        .map(|t| TransactionListing {
            transactional_id: t.transactional_id.0.to_string(),
            coordinator_id: node_id,
            producer_id: t.producer_id.0,
            state: t.transaction_state.to_string(),
        })
        .collect())
}

/// FindCoordinator for a transactional id: the batched `coordinator_keys` form from v4
/// on, the single `key` before (v1-3; v0 has no key type and only finds groups).
pub fn find_transaction_coordinator_request(
    version: i16,
    transactional_id: &str,
) -> FindCoordinatorRequest {
    debug_assert!(version >= 1, "FindCoordinator v0 cannot name a key type");
    crate::coordinator::find_coordinator_request_keyed(
        version,
        KEY_TYPE_TRANSACTION,
        transactional_id,
    )
}

/// The transaction coordinator named by a FindCoordinator response at `version`.
pub fn parse_find_transaction_coordinator(
    version: i16,
    transactional_id: &str,
    resp: &FindCoordinatorResponse,
) -> Result<BrokerMetadata> {
    crate::coordinator::parse_find_coordinator_keyed(
        version,
        transactional_id,
        "transactional id",
        resp,
        |code, message| transaction_error(code, transactional_id, message),
    )
}

pub fn describe_transactions_request(transactional_id: &str) -> DescribeTransactionsRequest {
    DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(str_bytes(transactional_id))])
}

/// The description of `transactional_id` in a DescribeTransactions answer from
/// `coordinator_id`, or its error (a coordinator error is for the caller to retry).
pub fn parse_describe_transactions(
    transactional_id: &str,
    coordinator_id: i32,
    resp: DescribeTransactionsResponse,
) -> Result<TransactionDescription> {
    let state = resp
        .transaction_states
        .into_iter()
        .find(|s| s.transactional_id.0.as_str() == transactional_id)
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "the broker did not describe transactional id '{transactional_id}'"
            ))
        })?;
    if state.error_code != codes::NONE {
        return Err(transaction_error(state.error_code, transactional_id, None));
    }
    let mut topic_partitions: Vec<TopicPartition> = state
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.0.to_string(), *p))
        })
        .collect();
    topic_partitions.sort();
    topic_partitions.dedup();
    Ok(TransactionDescription {
        coordinator_id,
        transactional_id: transactional_id.to_string(),
        producer_id: state.producer_id.0,
        producer_epoch: state.producer_epoch,
        state: state.transaction_state.to_string(),
        transaction_timeout_ms: state.transaction_timeout_ms,
        transaction_start_time_ms: (state.transaction_start_time_ms >= 0)
            .then_some(state.transaction_start_time_ms),
        topic_partitions,
    })
}

pub fn describe_producers_request(topic: &str, partition: i32) -> DescribeProducersRequest {
    DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
        .with_name(TopicName(str_bytes(topic)))
        .with_partition_indexes(vec![partition])])
}

/// The active producers of `topic`-`partition` in a DescribeProducers answer, sorted by
/// producer id, or the partition's error.
pub fn parse_describe_producers(
    topic: &str,
    partition: i32,
    resp: DescribeProducersResponse,
) -> Result<Vec<ProducerStateDescription>> {
    let subject = format!("partition {topic}-{partition}");
    let p = resp
        .topics
        .into_iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| {
            ClientError::InvalidArgument(format!("the broker did not describe {subject}"))
        })?;
    error::check(p.error_code, &subject, p.error_message.as_deref())?;
    let mut producers: Vec<ProducerStateDescription> = p
        .active_producers
        .into_iter()
        .map(|s| ProducerStateDescription {
            producer_id: s.producer_id.0,
            producer_epoch: s.producer_epoch,
            last_sequence: s.last_sequence,
            last_timestamp: s.last_timestamp,
            coordinator_epoch: (s.coordinator_epoch >= 0).then_some(s.coordinator_epoch),
            current_txn_start_offset: (s.current_txn_start_offset >= 0)
                .then_some(s.current_txn_start_offset),
        })
        .collect();
    producers.sort_by_key(|p| p.producer_id);
    Ok(producers)
}

/// Asks any broker which broker coordinates `transactional_id`, once, and makes sure the
/// cluster knows how to reach it.
async fn find_transaction_coordinator_once(
    cluster: &mut Cluster,
    transactional_id: &str,
) -> Result<BrokerMetadata> {
    let conn = cluster.any_connection().await?;
    let version = conn.version_for::<FindCoordinatorRequest>(None)?;
    if version < 1 {
        return Err(ClientError::InvalidArgument(format!(
            "broker {} answers FindCoordinator v0 only, which cannot find transaction coordinators",
            conn.addr()
        )));
    }
    let request = find_transaction_coordinator_request(version, transactional_id);
    let resp = conn.send_version(&request, version, Duration::ZERO).await?;
    let coordinator = parse_find_transaction_coordinator(version, transactional_id, &resp)?;
    if !cluster.brokers().any(|b| b.node_id == coordinator.node_id) {
        // A broker that joined after our last metadata refresh.
        cluster.fetch_metadata(Some(&[][..])).await?;
    }
    Ok(coordinator)
}

/// What to do after one attempt at a transaction-coordinator request: `Some` result to
/// return (success, a final error, or coordinator errors on the last of
/// [`TXN_COORDINATOR_ATTEMPTS`] attempts), or `None` to try again after the backoff of
/// the incremented `attempt`.
fn after_attempt<T>(result: Result<T>, attempt: &mut u32, what: &str) -> Option<Result<T>> {
    match result {
        Err(e) if retry_at_coordinator(&e) && *attempt + 1 < TXN_COORDINATOR_ATTEMPTS => {
            *attempt += 1;
            tracing::debug!("{what}: {e}; retrying");
            None
        }
        Err(e) if retry_at_coordinator(&e) => Some(Err(ClientError::RetriesExhausted {
            attempts: *attempt + 1,
            last: Box::new(e),
        })),
        other => Some(other),
    }
}

impl Admin {
    /// The broker coordinating `transactional_id`, retrying while none is available.
    pub async fn find_transaction_coordinator(
        &mut self,
        transactional_id: &str,
    ) -> Result<BrokerMetadata> {
        let what = format!("find coordinator of transactional id '{transactional_id}'");
        let mut attempt = 0;
        loop {
            let result = find_transaction_coordinator_once(self.cluster(), transactional_id).await;
            if let Some(done) = after_attempt(result, &mut attempt, &what) {
                return done;
            }
            tokio::time::sleep(self.cluster().config().backoff(attempt)).await;
        }
    }

    /// Every transaction on every broker (each coordinator lists its own), filtered by
    /// `filter`; sorted by transactional id. A broker still loading its transaction state
    /// is asked again after a backoff, so the list is not silently partial.
    pub async fn list_transactions(
        &mut self,
        filter: &ListTransactionsFilter,
    ) -> Result<Vec<TransactionListing>> {
        // Brokers that joined since the bootstrap would otherwise be missed.
        self.cluster().fetch_metadata(Some(&[][..])).await?;
        let mut nodes: Vec<i32> = self.cluster().brokers().map(|b| b.node_id).collect();
        nodes.sort_unstable();
        let request = list_transactions_request(filter);
        let mut out = Vec::new();
        for node in nodes {
            let mut attempt = 0;
            let resp = loop {
                let conn = self.cluster().connection(node).await?;
                let version = conn.version_for::<ListTransactionsRequest>(None)?;
                if version < filter.min_version() {
                    let theirs = conn
                        .broker_versions(ApiKey::ListTransactions)
                        .map_or("none".to_string(), |(lo, hi)| format!("v{lo}..v{hi}"));
                    let filter_name = if filter.transactional_id_pattern.is_some() {
                        "a transactional id pattern"
                    } else {
                        "a duration filter"
                    };
                    return Err(ClientError::InvalidArgument(format!(
                        "listing transactions with {filter_name} needs ListTransactions v{}, \
                         broker {} offers {theirs}",
                        filter.min_version(),
                        conn.addr()
                    )));
                }
                let resp = conn.send_version(&request, version, Duration::ZERO).await?;
                if !is_coordinator_error(resp.error_code) || attempt + 1 >= TXN_COORDINATOR_ATTEMPTS
                {
                    break resp;
                }
                attempt += 1;
                tracing::debug!(
                    "ListTransactions on broker {node}: {}; retrying",
                    error::error_name(resp.error_code)
                );
                tokio::time::sleep(self.cluster().config().backoff(attempt)).await;
            };
            out.extend(parse_list_transactions(node, resp)?);
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// Describes `transactional_id` at its coordinator. An id the coordinator has no
    /// state for is TRANSACTIONAL_ID_NOT_FOUND (see [`transaction_error`]).
    pub async fn describe_transaction(
        &mut self,
        transactional_id: &str,
    ) -> Result<TransactionDescription> {
        let what = format!("describe transactional id '{transactional_id}'");
        let request = describe_transactions_request(transactional_id);
        let mut attempt = 0;
        loop {
            let result = async {
                let cluster = self.cluster();
                let coordinator =
                    find_transaction_coordinator_once(cluster, transactional_id).await?;
                let conn = cluster.connection(coordinator.node_id).await?;
                let version = conn.version_for::<DescribeTransactionsRequest>(None)?;
                let resp = conn.send_version(&request, version, Duration::ZERO).await?;
                parse_describe_transactions(transactional_id, coordinator.node_id, resp)
            }
            .await;
            if let Some(done) = after_attempt(result, &mut attempt, &what) {
                return done;
            }
            tokio::time::sleep(self.cluster().config().backoff(attempt)).await;
        }
    }

    /// The active producers of `topic`-`partition` as `broker_id` sees them, or as its
    /// leader does when `broker_id` is `None` (then a stale leader is looked up again).
    pub async fn describe_producers(
        &mut self,
        topic: &str,
        partition: i32,
        broker_id: Option<i32>,
    ) -> Result<Vec<ProducerStateDescription>> {
        let request = describe_producers_request(topic, partition);
        let mut attempt = 0;
        loop {
            // leader_for waits out a missing leader itself and fails at once on a
            // partition that does not exist.
            let node = match broker_id {
                Some(b) => b,
                None => self.cluster().leader_for(topic, partition).await?,
            };
            let result = async {
                let conn = self.cluster().connection(node).await?;
                let version = conn.version_for::<DescribeProducersRequest>(None)?;
                let resp = conn.send_version(&request, version, Duration::ZERO).await?;
                parse_describe_producers(topic, partition, resp)
            }
            .await;
            match result {
                Err(e)
                    if broker_id.is_none()
                        && e.is_retriable()
                        && attempt < self.cluster().config().retries =>
                {
                    attempt += 1;
                    tracing::debug!("describe producers of {topic}-{partition}: {e}; retrying");
                    if e.is_stale_metadata() {
                        self.cluster().invalidate(topic);
                    }
                    tokio::time::sleep(self.cluster().config().backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::group_codes::{
        COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
    };
    use bytes::BytesMut;
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    use kafka_protocol::messages::describe_transactions_response::{
        TopicData, TransactionState as DescribedState,
    };
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
    use kafka_protocol::protocol::{Decodable, Encodable, Message};

    fn round_trip<R: Encodable + Decodable>(m: &R, v: i16) -> R {
        let mut buf = BytesMut::new();
        m.encode(&mut buf, v)
            .unwrap_or_else(|e| panic!("v{v}: {e}"));
        R::decode(&mut buf.freeze(), v).unwrap()
    }

    #[test]
    fn states_are_spelled_as_kafka_does() {
        assert_eq!(canonical_transaction_state("ongoing"), Some("Ongoing"));
        assert_eq!(
            canonical_transaction_state("PREPAREEPOCHFENCE"),
            Some("PrepareEpochFence")
        );
        assert_eq!(canonical_transaction_state("Stable"), None);
    }

    #[test]
    fn list_request_carries_filters_at_the_versions_that_have_them() {
        let plain = ListTransactionsFilter {
            states: vec!["Ongoing".into()],
            producer_ids: vec![7, 9],
            ..Default::default()
        };
        assert_eq!(plain.min_version(), 0);
        for v in ListTransactionsRequest::VERSIONS.min..=ListTransactionsRequest::VERSIONS.max {
            let back = round_trip(&list_transactions_request(&plain), v);
            assert_eq!(back.state_filters[0].as_str(), "Ongoing", "v{v}");
            assert_eq!(back.producer_id_filters, vec![ProducerId(7), ProducerId(9)]);
        }
        let duration = ListTransactionsFilter {
            min_duration_ms: Some(5000),
            ..Default::default()
        };
        assert_eq!(duration.min_version(), 1);
        assert_eq!(
            round_trip(&list_transactions_request(&duration), 1).duration_filter,
            5000
        );
        // Below its version a set filter cannot be encoded (and is refused before sending).
        assert!(list_transactions_request(&duration)
            .encode(&mut BytesMut::new(), 0)
            .is_err());
        let pattern = ListTransactionsFilter {
            transactional_id_pattern: Some("app-.*".into()),
            min_duration_ms: Some(1),
            ..Default::default()
        };
        assert_eq!(pattern.min_version(), 2);
        let back = round_trip(&list_transactions_request(&pattern), 2);
        assert_eq!(back.transactional_id_pattern.as_deref(), Some("app-.*"));
    }

    #[test]
    fn list_response_rows_name_the_answering_broker() {
        let resp = ListTransactionsResponse::default().with_transaction_states(vec![
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes("b")))
                .with_producer_id(ProducerId(4))
                .with_transaction_state(str_bytes("Ongoing")),
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes("a")))
                .with_producer_id(ProducerId(3))
                .with_transaction_state(str_bytes("CompleteCommit")),
        ]);
        for v in 0..=2 {
            let rows = parse_list_transactions(2, round_trip(&resp, v)).unwrap();
            assert_eq!(rows.len(), 2);
            assert_eq!(
                rows[0],
                TransactionListing {
                    transactional_id: "b".into(),
                    coordinator_id: 2,
                    producer_id: 4,
                    state: "Ongoing".into(),
                }
            );
        }
        let e = parse_list_transactions(
            2,
            ListTransactionsResponse::default().with_error_code(COORDINATOR_LOAD_IN_PROGRESS),
        )
        .unwrap_err();
        assert_eq!(e.code(), Some(COORDINATOR_LOAD_IN_PROGRESS));
    }

    #[test]
    fn find_coordinator_uses_the_transaction_key_type() {
        for v in 1..=FindCoordinatorRequest::VERSIONS.max {
            let back = round_trip(&find_transaction_coordinator_request(v, "tx"), v);
            assert_eq!(back.key_type, KEY_TYPE_TRANSACTION, "v{v}");
            if v >= 4 {
                assert_eq!(back.coordinator_keys[0].as_str(), "tx");
            } else {
                assert_eq!(back.key.as_str(), "tx");
            }
        }
        let resp =
            FindCoordinatorResponse::default().with_coordinators(vec![Coordinator::default()
                .with_key(str_bytes("tx"))
                .with_node_id(2.into())
                .with_host(str_bytes("h"))
                .with_port(9093)]);
        let c = parse_find_transaction_coordinator(4, "tx", &round_trip(&resp, 4)).unwrap();
        assert_eq!((c.node_id, c.addr()), (2, "h:9093".to_string()));
        let resp = FindCoordinatorResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE);
        let e = parse_find_transaction_coordinator(3, "tx", &resp).unwrap_err();
        assert!(retry_at_coordinator(&e), "{e}");
        assert!(e.to_string().contains("transactional id 'tx'"), "{e}");
    }

    fn described(code: i16) -> DescribeTransactionsResponse {
        DescribeTransactionsResponse::default().with_transaction_states(vec![
            DescribedState::default()
                .with_error_code(code)
                .with_transactional_id(TransactionalId(str_bytes("tx")))
                .with_transaction_state(str_bytes("Ongoing"))
                .with_transaction_timeout_ms(60000)
                .with_transaction_start_time_ms(1_700_000_000_000)
                .with_producer_id(ProducerId(1000))
                .with_producer_epoch(3)
                .with_topics(vec![
                    TopicData::default()
                        .with_topic(TopicName(str_bytes("out")))
                        .with_partitions(vec![2, 0]),
                    TopicData::default()
                        .with_topic(TopicName(str_bytes("in")))
                        .with_partitions(vec![1]),
                ]),
        ])
    }

    #[test]
    fn describe_transactions_parses_and_names_errors() {
        let back = round_trip(&describe_transactions_request("tx"), 0);
        assert_eq!(back.transactional_ids[0].0.as_str(), "tx");
        let d = parse_describe_transactions("tx", 1, round_trip(&described(0), 0)).unwrap();
        assert_eq!(
            d,
            TransactionDescription {
                coordinator_id: 1,
                transactional_id: "tx".into(),
                producer_id: 1000,
                producer_epoch: 3,
                state: "Ongoing".into(),
                transaction_timeout_ms: 60000,
                transaction_start_time_ms: Some(1_700_000_000_000),
                topic_partitions: vec![("in".into(), 1), ("out".into(), 0), ("out".into(), 2)],
            }
        );
        let mut idle = described(0);
        idle.transaction_states[0].transaction_start_time_ms = -1;
        let d = parse_describe_transactions("tx", 1, idle).unwrap();
        assert_eq!(d.transaction_start_time_ms, None);

        let e = parse_describe_transactions("tx", 1, described(TRANSACTIONAL_ID_NOT_FOUND))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "transactional id 'tx' not found (TRANSACTIONAL_ID_NOT_FOUND)"
        );
        assert!(!retry_at_coordinator(&e));
        let e = parse_describe_transactions("tx", 1, described(NOT_COORDINATOR)).unwrap_err();
        assert!(retry_at_coordinator(&e), "{e}");
        // An answer about another id is not taken for ours.
        assert!(parse_describe_transactions("other", 1, described(0)).is_err());
    }

    fn producers(code: i16) -> DescribeProducersResponse {
        DescribeProducersResponse::default().with_topics(vec![TopicResponse::default()
            .with_name(TopicName(str_bytes("t")))
            .with_partitions(vec![PartitionResponse::default()
                .with_partition_index(3)
                .with_error_code(code)
                .with_active_producers(vec![
                    ProducerState::default()
                        .with_producer_id(ProducerId(9))
                        .with_producer_epoch(1)
                        .with_last_sequence(41)
                        .with_last_timestamp(1_700_000_000_123)
                        .with_coordinator_epoch(-1)
                        .with_current_txn_start_offset(-1),
                    ProducerState::default()
                        .with_producer_id(ProducerId(5))
                        .with_producer_epoch(0)
                        .with_last_sequence(4)
                        .with_last_timestamp(1_700_000_000_000)
                        .with_coordinator_epoch(2)
                        .with_current_txn_start_offset(17),
                ])])])
    }

    #[test]
    fn describe_producers_parses_and_names_errors() {
        let back = round_trip(&describe_producers_request("t", 3), 0);
        assert_eq!(back.topics[0].name.0.as_str(), "t");
        assert_eq!(back.topics[0].partition_indexes, vec![3]);
        let rows = parse_describe_producers("t", 3, round_trip(&producers(0), 0)).unwrap();
        assert_eq!(
            rows,
            vec![
                ProducerStateDescription {
                    producer_id: 5,
                    producer_epoch: 0,
                    last_sequence: 4,
                    last_timestamp: 1_700_000_000_000,
                    coordinator_epoch: Some(2),
                    current_txn_start_offset: Some(17),
                },
                ProducerStateDescription {
                    producer_id: 9,
                    producer_epoch: 1,
                    last_sequence: 41,
                    last_timestamp: 1_700_000_000_123,
                    coordinator_epoch: None,
                    current_txn_start_offset: None,
                },
            ]
        );
        let e =
            parse_describe_producers("t", 3, producers(codes::NOT_LEADER_OR_FOLLOWER)).unwrap_err();
        assert!(e.is_stale_metadata() && e.is_retriable(), "{e}");
        let e = parse_describe_producers("t", 3, producers(codes::UNKNOWN_TOPIC_OR_PARTITION))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "partition t-3 does not exist (UNKNOWN_TOPIC_OR_PARTITION)"
        );
        assert!(parse_describe_producers("t", 4, producers(0)).is_err());
    }

    /// A one-broker cluster answering the transaction admin APIs, with coordinator errors
    /// first: the admin calls must ride them out.
    mod fake {
        use super::*;
        use bytes::Bytes;
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::metadata_response::{
            MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
        };
        use kafka_protocol::messages::{
            ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
            ResponseHeader,
        };
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::{TcpListener, TcpStream};

        /// Errors still to answer, counted down by each request of the kind.
        #[derive(Default)]
        pub struct Faults {
            pub find_coordinator: AtomicU32,
            pub describe: AtomicU32,
            pub list: AtomicU32,
            pub producers_not_leader: AtomicU32,
            pub requests: AtomicU32,
        }

        fn take(counter: &AtomicU32) -> bool {
            counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        }

        pub async fn start(faults: Arc<Faults>) -> String {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    tokio::spawn(serve(sock, port, faults.clone()));
                }
            });
            format!("127.0.0.1:{port}")
        }

        async fn serve(mut sock: TcpStream, port: u16, faults: Arc<Faults>) {
            loop {
                let mut prefix = [0u8; 4];
                if sock.read_exact(&mut prefix).await.is_err() {
                    return;
                }
                let len = kavka_protocol::frame::frame_len(prefix, 1 << 20).unwrap();
                let mut payload = vec![0u8; len];
                sock.read_exact(&mut payload).await.unwrap();
                let (api, header, mut body) =
                    kavka_protocol::frame::decode_request_header(Bytes::from(payload)).unwrap();
                let v = header.request_api_version;
                faults.requests.fetch_add(1, Ordering::SeqCst);
                let mut out = BytesMut::new();
                match api {
                    ApiKey::ApiVersions => api_versions().encode(&mut out, v).unwrap(),
                    ApiKey::Metadata => metadata(port).encode(&mut out, v).unwrap(),
                    ApiKey::FindCoordinator => {
                        let req = FindCoordinatorRequest::decode(&mut body, v).unwrap();
                        assert_eq!(req.key_type, KEY_TYPE_TRANSACTION);
                        let code = if take(&faults.find_coordinator) {
                            COORDINATOR_NOT_AVAILABLE
                        } else {
                            0
                        };
                        FindCoordinatorResponse::default()
                            .with_coordinators(vec![Coordinator::default()
                                .with_key(req.coordinator_keys[0].clone())
                                .with_node_id(1.into())
                                .with_host(str_bytes("127.0.0.1"))
                                .with_port(i32::from(port))
                                .with_error_code(code)])
                            .encode(&mut out, v)
                            .unwrap()
                    }
                    ApiKey::DescribeTransactions => {
                        let req = DescribeTransactionsRequest::decode(&mut body, v).unwrap();
                        let code = if take(&faults.describe) {
                            COORDINATOR_LOAD_IN_PROGRESS
                        } else if req.transactional_ids[0].0.as_str() == "tx" {
                            0
                        } else {
                            TRANSACTIONAL_ID_NOT_FOUND
                        };
                        let mut resp = described(code);
                        resp.transaction_states[0].transactional_id =
                            req.transactional_ids[0].clone();
                        resp.encode(&mut out, v).unwrap()
                    }
                    ApiKey::ListTransactions => {
                        let req = ListTransactionsRequest::decode(&mut body, v).unwrap();
                        let code = if take(&faults.list) {
                            COORDINATOR_LOAD_IN_PROGRESS
                        } else {
                            0
                        };
                        let all = [("tx", 1000, "Ongoing"), ("idle", 1001, "Empty")];
                        let rows = all
                            .iter()
                            .filter(|(_, _, s)| {
                                req.state_filters.is_empty()
                                    || req.state_filters.iter().any(|f| f.as_str() == *s)
                            })
                            .map(|(id, pid, s)| {
                                ListedState::default()
                                    .with_transactional_id(TransactionalId(str_bytes(id)))
                                    .with_producer_id(ProducerId(*pid))
                                    .with_transaction_state(str_bytes(s))
                            })
                            .collect();
                        ListTransactionsResponse::default()
                            .with_error_code(code)
                            .with_transaction_states(if code == 0 { rows } else { vec![] })
                            .encode(&mut out, v)
                            .unwrap()
                    }
                    ApiKey::DescribeProducers => {
                        let _ = DescribeProducersRequest::decode(&mut body, v).unwrap();
                        let code = if take(&faults.producers_not_leader) {
                            codes::NOT_LEADER_OR_FOLLOWER
                        } else {
                            0
                        };
                        producers(code).encode(&mut out, v).unwrap()
                    }
                    other => panic!("unexpected {other:?}"),
                }
                let mut head = BytesMut::new();
                ResponseHeader::default()
                    .with_correlation_id(header.correlation_id)
                    .encode(&mut head, api.response_header_version(v))
                    .unwrap();
                let len = (head.len() + out.len()) as i32;
                if sock.write_all(&len.to_be_bytes()).await.is_err()
                    || sock.write_all(&head).await.is_err()
                    || sock.write_all(&out).await.is_err()
                {
                    return;
                }
            }
        }

        fn api_versions() -> ApiVersionsResponse {
            fn v<M: Message>(key: ApiKey) -> ApiVersion {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(M::VERSIONS.min)
                    .with_max_version(M::VERSIONS.max)
            }
            ApiVersionsResponse::default().with_api_keys(vec![
                v::<ApiVersionsRequest>(ApiKey::ApiVersions),
                v::<MetadataRequest>(ApiKey::Metadata),
                v::<FindCoordinatorRequest>(ApiKey::FindCoordinator),
                v::<DescribeTransactionsRequest>(ApiKey::DescribeTransactions),
                v::<ListTransactionsRequest>(ApiKey::ListTransactions),
                v::<DescribeProducersRequest>(ApiKey::DescribeProducers),
            ])
        }

        fn metadata(port: u16) -> MetadataResponse {
            let partition = |i| {
                MetadataResponsePartition::default()
                    .with_partition_index(i)
                    .with_leader_id(1.into())
                    .with_replica_nodes(vec![1.into()])
                    .with_isr_nodes(vec![1.into()])
            };
            MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(1.into())
                    .with_host(str_bytes("127.0.0.1"))
                    .with_port(i32::from(port))])
                .with_controller_id(1.into())
                .with_topics(vec![MetadataResponseTopic::default()
                    .with_name(Some(TopicName(str_bytes("t"))))
                    .with_partitions((0..4).map(partition).collect())])
        }
    }

    async fn admin(addr: &str) -> Admin {
        let mut config = crate::ClientConfig::new(addr).unwrap();
        config.retry_backoff = Duration::from_millis(1);
        config.max_retry_backoff = Duration::from_millis(5);
        Admin::connect(config).await.unwrap()
    }

    #[tokio::test]
    async fn describe_rides_out_a_loading_coordinator() {
        let faults = std::sync::Arc::new(fake::Faults::default());
        faults
            .find_coordinator
            .store(2, std::sync::atomic::Ordering::SeqCst);
        faults
            .describe
            .store(3, std::sync::atomic::Ordering::SeqCst);
        let addr = fake::start(faults.clone()).await;
        let mut admin = admin(&addr).await;
        let d = admin.describe_transaction("tx").await.unwrap();
        assert_eq!(
            faults.describe.load(std::sync::atomic::Ordering::SeqCst)
                + faults
                    .find_coordinator
                    .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert_eq!(
            (d.coordinator_id, d.producer_id, d.state.as_str()),
            (1, 1000, "Ongoing")
        );
        let e = admin.describe_transaction("nope").await.unwrap_err();
        assert_eq!(e.code(), Some(TRANSACTIONAL_ID_NOT_FOUND));
        assert_eq!(
            admin
                .find_transaction_coordinator("tx")
                .await
                .unwrap()
                .node_id,
            1
        );

        // A coordinator that never finishes loading is given up on, boundedly.
        faults
            .describe
            .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
        let e = admin.describe_transaction("tx").await.unwrap_err();
        assert!(
            matches!(e, ClientError::RetriesExhausted { attempts, .. } if attempts == TXN_COORDINATOR_ATTEMPTS),
            "{e}"
        );
        assert_eq!(e.code(), Some(COORDINATOR_LOAD_IN_PROGRESS));
    }

    #[tokio::test]
    async fn list_and_producers_retry_and_filter() {
        let faults = std::sync::Arc::new(fake::Faults::default());
        faults.list.store(2, std::sync::atomic::Ordering::SeqCst);
        faults
            .producers_not_leader
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let addr = fake::start(faults.clone()).await;
        let mut admin = admin(&addr).await;
        let all = admin
            .list_transactions(&ListTransactionsFilter::default())
            .await
            .unwrap();
        let ids: Vec<&str> = all.iter().map(|t| t.transactional_id.as_str()).collect();
        assert_eq!(ids, ["idle", "tx"]);
        assert_eq!(faults.list.load(std::sync::atomic::Ordering::SeqCst), 0);
        let ongoing = admin
            .list_transactions(&ListTransactionsFilter {
                states: vec!["Ongoing".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ongoing.len(), 1);
        assert_eq!(ongoing[0].coordinator_id, 1);

        let rows = admin.describe_producers("t", 3, None).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            faults
                .producers_not_leader
                .load(std::sync::atomic::Ordering::SeqCst),
            0,
            "NOT_LEADER_OR_FOLLOWER was retried"
        );
        let rows = admin.describe_producers("t", 3, Some(1)).await.unwrap();
        assert_eq!(rows[0].producer_id, 5);
        let e = admin.describe_producers("t", 9, None).await.unwrap_err();
        assert_eq!(e.code(), Some(codes::UNKNOWN_TOPIC_OR_PARTITION));
    }
}
