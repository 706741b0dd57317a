//! KIP-890 produce-time verification on brokers started in-process: the transactional id's
//! coordinator is this broker (a direct call) or another one (AddPartitionsToTxn v4
//! verify-only over the network). Produce, InitProducerId, AddPartitionsToTxn and EndTxn go
//! straight to their handlers.

use crate::broker::Broker;
use crate::handlers::{
    add_partitions_to_txn, end_txn, find_coordinator, init_producer_id, produce,
};
use crate::replica_manager::now_ms;
use crate::txn::TxnState;
use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ProduceRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, TimestampType};
use kavka_metadata::{CreateTopicSpec, TopicDefaults};
use kavka_protocol::error::ErrorCode;
use kavka_protocol::records::encode_batch;
use std::sync::Arc;
use std::time::Duration;

const TOPIC: &str = "t";
const ID: &str = "tx";
/// Bound on polling for an asynchronous effect (20 ms apart).
const POLLS: usize = 500;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

async fn start(dir: &std::path::Path, node: i32, extra: &[&str]) -> crate::RunningBroker {
    let mut overrides = vec![
        format!("node.id={node}"),
        "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
        format!("log.dirs={}", dir.join("logs").display()),
        format!("metadata.log.dir={}", dir.join("meta").display()),
        "transaction.state.log.num.partitions=2".to_string(),
    ];
    overrides.extend(extra.iter().map(|o| o.to_string()));
    let config = crate::config::BrokerConfig::from_properties("", &overrides)
        .unwrap()
        .0;
    crate::start(config).await.unwrap()
}

/// Creates `name` with `replicas` for each of its partitions (in order) and waits until
/// this broker leads those it is the first replica of.
async fn create(b: &Arc<Broker>, name: &str, replicas: Vec<Vec<i32>>) {
    let b2 = b.clone();
    let spec = CreateTopicSpec {
        name: name.to_string(),
        num_partitions: -1,
        replication_factor: -1,
        assignments: replicas
            .iter()
            .enumerate()
            .map(|(p, r)| (p as i32, r.clone()))
            .collect(),
        configs: Default::default(),
    };
    tokio::task::spawn_blocking(move || {
        let defaults = TopicDefaults {
            num_partitions: 1,
            replication_factor: 1,
        };
        for r in b2.controller.create_topics(vec![spec], false, &defaults) {
            r.unwrap();
        }
    })
    .await
    .unwrap();
    let me = b.node_id();
    for _ in 0..POLLS {
        let led = replicas.iter().enumerate().all(|(p, r)| {
            r.first() != Some(&me)
                || b.replicas
                    .get(name, p as i32)
                    .is_some_and(|p| p.is_leader())
        });
        if led {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} never got its leaders");
}

/// FindCoordinator (creates `__transaction_state`) then InitProducerId: (pid, epoch).
async fn init(b: &Arc<Broker>, id: &str) -> (i64, i16) {
    let b2 = b.clone();
    let key = s(id);
    let found = tokio::task::spawn_blocking(move || {
        find_coordinator::handle(
            &b2,
            FindCoordinatorRequest::default()
                .with_key(key)
                .with_key_type(1),
            3,
        )
    })
    .await
    .unwrap();
    assert_eq!(found.error_code, 0, "{found:?}");
    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    for _ in 0..POLLS {
        let resp = init_producer_id::handle(b.clone(), init.clone(), 4).await;
        if resp.error_code == 0 {
            return (resp.producer_id.0, resp.producer_epoch);
        }
        assert!(
            resp.error_code == ErrorCode::CoordinatorLoadInProgress.code()
                || resp.error_code == ErrorCode::NotCoordinator.code(),
            "{resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("InitProducerId never succeeded");
}

/// AddPartitionsToTxn v3 of `partitions` of TOPIC: each partition's code.
async fn add(b: &Arc<Broker>, pid: i64, epoch: i16, partitions: &[i32]) -> Vec<i16> {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(ID)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partitions(partitions.to_vec())]);
    let resp = add_partitions_to_txn::handle(b.clone(), req, 3).await;
    resp.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| &t.results_by_partition)
        .map(|p| p.partition_error_code)
        .collect()
}

/// One transactional record of `pid` at `epoch`, sequence `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32) -> Bytes {
    let record = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: now_ms(),
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    encode_batch(&[record], Compression::None).unwrap()
}

async fn produce_as(
    b: &Arc<Broker>,
    id: &str,
    partition: i32,
    records: Bytes,
) -> PartitionProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5_000)
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(TOPIC)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let resp = produce::handle(b.clone(), req, 9).await.unwrap().unwrap();
    resp.responses[0].partition_responses[0].clone()
}

async fn produce(b: &Arc<Broker>, partition: i32, records: Bytes) -> PartitionProduceResponse {
    produce_as(b, ID, partition, records).await
}

fn leo(b: &Broker, partition: i32) -> i64 {
    b.replicas.get(TOPIC, partition).unwrap().log_end_offset()
}

/// Whether `pid` has an ongoing transaction on TOPIC-`partition` here.
fn ongoing(b: &Broker, partition: i32, pid: i64) -> bool {
    b.replicas
        .get(TOPIC, partition)
        .unwrap()
        .producer_entry(pid)
        .unwrap()
        .is_some_and(|e| e.current_txn_first_offset.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_not_in_the_transaction_is_refused_until_it_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1, &[]).await;
    let b = running.broker.clone();
    create(&b, TOPIC, vec![vec![1], vec![1]]).await;
    let (pid, epoch) = init(&b, ID).await;

    // Not added: refused, nothing written.
    let r = produce(&b, 0, txn_batch(pid, epoch, 0)).await;
    assert_eq!(r.error_code, ErrorCode::InvalidTxnState.code(), "{r:?}");
    assert_eq!(
        r.error_message.as_deref(),
        Some("Partition was not added to the transaction")
    );
    assert_eq!(leo(&b, 0), 0);

    // Added: accepted.
    assert_eq!(add(&b, pid, epoch, &[0]).await, vec![0]);
    let r = produce(&b, 0, txn_batch(pid, epoch, 0)).await;
    assert_eq!((r.error_code, r.base_offset), (0, 0), "{r:?}");
    assert!(ongoing(&b, 0, pid));

    // The transaction is ongoing here now: the next batch is not verified at all (a
    // transactional id the coordinator does not know would fail a verification).
    let r = produce_as(&b, "unknown-id", 0, txn_batch(pid, epoch, 1)).await;
    assert_eq!((r.error_code, r.base_offset), (0, 1), "{r:?}");

    // Partition 1 is still not in the transaction; a fenced epoch is the client's
    // INVALID_PRODUCER_EPOCH (the coordinator says PRODUCER_FENCED).
    let r = produce(&b, 1, txn_batch(pid, epoch, 0)).await;
    assert_eq!(r.error_code, ErrorCode::InvalidTxnState.code(), "{r:?}");
    let r = produce(&b, 1, txn_batch(pid, epoch + 1, 0)).await;
    assert_eq!(
        r.error_code,
        ErrorCode::InvalidProducerEpoch.code(),
        "{r:?}"
    );
    // Another producer id under this transactional id: the coordinator's mapping error.
    let r = produce(&b, 1, txn_batch(pid + 1, epoch, 0)).await;
    assert_eq!(
        r.error_code,
        ErrorCode::InvalidProducerIdMapping.code(),
        "{r:?}"
    );
    assert_eq!(leo(&b, 1), 0);

    // Commit; once the marker is in, a late batch of the ended transaction is refused
    // instead of opening a transaction nobody would end.
    let end = end_txn::handle(
        b.clone(),
        EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(ID)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true),
        3,
    )
    .await;
    assert_eq!(end.error_code, 0, "{end:?}");
    for _ in 0..POLLS {
        let done = b
            .txns
            .describe(ID)
            .is_ok_and(|m| m.state == TxnState::CompleteCommit);
        if done && !ongoing(&b, 0, pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ongoing(&b, 0, pid));
    let end_offset = leo(&b, 0);
    assert_eq!(end_offset, 3, "two batches and the marker");
    let r = produce(&b, 0, txn_batch(pid, epoch, 2)).await;
    assert_eq!(r.error_code, ErrorCode::InvalidTxnState.code(), "{r:?}");
    assert_eq!(leo(&b, 0), end_offset);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_verification_disabled_any_transactional_batch_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(
        dir.path(),
        1,
        &["transaction.partition.verification.enable=false"],
    )
    .await;
    let b = running.broker.clone();
    create(&b, TOPIC, vec![vec![1]]).await;
    let (pid, epoch) = init(&b, ID).await;
    let r = produce(&b, 0, txn_batch(pid, epoch, 0)).await;
    assert_eq!((r.error_code, r.base_offset), (0, 0), "{r:?}");
    assert!(ongoing(&b, 0, pid));
    running.shutdown().await;
}

/// Node 1 leads TOPIC; node 2 (another broker, its own single-node cluster) is the
/// transactional id's coordinator: node 1's metadata has `__transaction_state` led by node
/// 2 at its real address, so node 1 verifies over the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_coordinator_is_asked_over_the_network() {
    let dir1 = tempfile::tempdir().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let coordinator = start(dir2.path(), 2, &[]).await;
    let c = coordinator.broker.clone();
    create(&c, TOPIC, vec![vec![2], vec![2]]).await;
    let (pid, epoch) = init(&c, ID).await;
    assert_eq!(add(&c, pid, epoch, &[0]).await, vec![0]);

    let leader = start(dir1.path(), 1, &[]).await;
    let b = leader.broker.clone();
    {
        let b = b.clone();
        let port = coordinator.bound.port();
        tokio::task::spawn_blocking(move || {
            b.controller
                .register_broker(2, "127.0.0.1", port, None)
                .unwrap();
        })
        .await
        .unwrap();
    }
    create(&b, crate::txn::TXN_TOPIC, vec![vec![2], vec![2]]).await;
    create(&b, TOPIC, vec![vec![1], vec![1]]).await;

    let r = produce(&b, 0, txn_batch(pid, epoch, 0)).await;
    assert_eq!((r.error_code, r.base_offset), (0, 0), "{r:?}");
    let r = produce(&b, 1, txn_batch(pid, epoch, 0)).await;
    assert_eq!(r.error_code, ErrorCode::InvalidTxnState.code(), "{r:?}");
    let r = produce(&b, 1, txn_batch(pid, epoch + 1, 0)).await;
    assert_eq!(
        r.error_code,
        ErrorCode::InvalidProducerEpoch.code(),
        "{r:?}"
    );
    assert_eq!(leo(&b, 1), 0);

    // The coordinator gone: NOT_ENOUGH_REPLICAS, which old clients retry.
    coordinator.shutdown().await;
    let r = produce(&b, 1, txn_batch(pid, epoch, 0)).await;
    assert_eq!(r.error_code, ErrorCode::NotEnoughReplicas.code(), "{r:?}");
    assert!(
        r.error_message
            .as_deref()
            .is_some_and(|m| m.contains("Unable to verify")),
        "{r:?}"
    );
    assert_eq!(leo(&b, 1), 0);
    leader.shutdown().await;
}

/// The race the guard exists for: a marker for the producer (its transaction aborted, with
/// nothing of it on this partition yet) is written after the verification began and before
/// the verified batch is appended. The batch must be refused, or it would open a
/// transaction nobody ends (a hanging transaction holding the LSO back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_between_verification_and_append_refuses_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), 1, &[]).await;
    let b = running.broker.clone();
    create(&b, TOPIC, vec![vec![1]]).await;
    let pid = 4242;
    let part = b.replicas.get(TOPIC, 0).unwrap();
    let marker = |control| kavka_protocol::records::TxnMarker {
        producer_id: pid,
        producer_epoch: 0,
        coordinator_epoch: 0,
        control,
    };
    use kavka_protocol::records::ControlType::{Abort, Commit};

    // An earlier transaction of the producer here, committed: its entry exists, with the
    // same producer and coordinator epochs the abort below carries.
    let (entry, guard) = part.begin_txn_verification(pid).unwrap();
    assert!(entry.is_none());
    part.append_guarded(&mut txn_batch(pid, 0, 0).to_vec(), now_ms(), pid, guard)
        .unwrap();
    part.append_txn_marker(&marker(Commit), now_ms()).unwrap();

    // Guard set, then an abort marker of the same producer and epochs: refused.
    let (entry, guard) = part.begin_txn_verification(pid).unwrap();
    assert!(entry.is_some_and(|e| e.current_txn_first_offset.is_none()));
    part.append_txn_marker(&marker(Abort), now_ms()).unwrap();
    let leo_after_marker = part.log_end_offset();
    let err = part
        .append_guarded(&mut txn_batch(pid, 0, 1).to_vec(), now_ms(), pid, guard)
        .unwrap_err();
    assert!(
        matches!(
            err,
            crate::partition::PartitionError::Storage(kavka_storage::StorageError::Producer(
                kavka_storage::ProducerStateError::InvalidTxnState { .. }
            ))
        ),
        "{err:?}"
    );
    assert_eq!(part.log_end_offset(), leo_after_marker);
    assert!(!ongoing(&b, 0, pid));

    // A fresh verification with nothing in between: appended, and the transaction is
    // ongoing, so the used guard no longer matters for its next batches.
    let (_, guard) = part.begin_txn_verification(pid).unwrap();
    assert_eq!(part.begin_txn_verification(pid).unwrap().1, guard);
    part.append_guarded(&mut txn_batch(pid, 0, 1).to_vec(), now_ms(), pid, guard)
        .unwrap();
    assert!(ongoing(&b, 0, pid));
    part.append_guarded(&mut txn_batch(pid, 0, 2).to_vec(), now_ms(), pid, guard)
        .unwrap();
    running.shutdown().await;
}
