//! Transaction markers end to end on brokers started in-process: node 1 leads `txn`
//! (replicas [1]) and follows `followed` (replicas [2, 1]); node 2 is registered but never
//! runs (its address refuses connections). Produce, Fetch, ListOffsets, WriteTxnMarkers and
//! DescribeProducers go straight to their handlers.

use super::*;
use crate::handlers::{describe_producers, fetch, list_offsets, produce, write_txn_markers};
use bytes::Bytes;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    BrokerId, DescribeProducersRequest, FetchRequest, ListOffsetsRequest, ProduceRequest,
    TransactionalId, WriteTxnMarkersResponse,
};
use kafka_protocol::records::{Compression, Record, TimestampType};
use kavka_metadata::{CreateTopicSpec, TopicDefaults};
use kavka_protocol::record_batch;
use kavka_protocol::records::{encode_batch, plain_record};

const TOPIC: &str = "txn";
const FOLLOWED: &str = "followed";
const ABSENT: i32 = 2;
const PID: i64 = 1000;
/// Bound on polling for an asynchronous effect (20 ms apart).
const POLLS: usize = 500;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn config(dir: &std::path::Path, node: i32) -> crate::config::BrokerConfig {
    let overrides = [
        format!("node.id={node}"),
        "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
        format!("log.dirs={}", dir.join("logs").display()),
        format!("metadata.log.dir={}", dir.join("meta").display()),
        "replica.fetch.backoff.ms=1000".to_string(),
        // These tests write transactions of a made-up producer without a coordinator
        // (KIP-890 verification is tested in txn/verification_tests.rs).
        "transaction.partition.verification.enable=false".to_string(),
    ];
    crate::config::BrokerConfig::from_properties("", &overrides)
        .unwrap()
        .0
}

/// Registers `others` (node id, port on 127.0.0.1) and creates `topics` (name, replicas).
async fn create(
    b: &Arc<crate::broker::Broker>,
    others: &[(i32, u16)],
    topics: &[(&str, Vec<i32>)],
) {
    let b = b.clone();
    let others = others.to_vec();
    let specs: Vec<CreateTopicSpec> = topics
        .iter()
        .map(|(topic, replicas)| CreateTopicSpec {
            name: topic.to_string(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![(0, replicas.clone())],
            configs: Default::default(),
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        for (id, port) in others {
            b.controller
                .register_broker(id, "127.0.0.1", port, None)
                .unwrap();
        }
        let defaults = TopicDefaults {
            num_partitions: 1,
            replication_factor: 1,
        };
        for r in b.controller.create_topics(specs, false, &defaults) {
            r.unwrap();
        }
    })
    .await
    .unwrap();
}

/// Node 1, leading `txn` and following `followed` (led by the absent node 2).
async fn setup(dir: &std::path::Path) -> crate::RunningBroker {
    let running = crate::start(config(dir, 1)).await.unwrap();
    let b = running.broker.clone();
    create(
        &b,
        &[(ABSENT, 9)],
        &[(TOPIC, vec![1]), (FOLLOWED, vec![ABSENT, 1])],
    )
    .await;
    for _ in 0..POLLS {
        let led = b.replicas.get(TOPIC, 0).is_some_and(|p| p.is_leader());
        let followed = b.replicas.get(FOLLOWED, 0).is_some_and(|p| !p.is_leader());
        if led && followed {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the partitions never took their roles");
}

/// A transactional batch of `n` records of producer `PID` (epoch 0) from sequence `seq`.
fn txn_batch(seq: i32, n: i64) -> Bytes {
    let now = now_ms();
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: PID,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: seq + i as i32,
            timestamp: now,
            key: None,
            value: Some(Bytes::from_static(b"t")),
            headers: Default::default(),
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

fn plain_batch() -> Bytes {
    encode_batch(
        &[plain_record(
            0,
            now_ms(),
            None,
            Some(Bytes::from_static(b"p")),
        )],
        Compression::None,
    )
    .unwrap()
}

async fn produce_to(
    b: &Arc<crate::broker::Broker>,
    topic: &str,
    records: Bytes,
    transactional_id: Option<&str>,
) -> PartitionProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
        )
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let resp = produce::handle(b.clone(), req, 9).await.unwrap().unwrap();
    resp.responses[0].partition_responses[0].clone()
}

fn fetch_request(topic: &str, offset: i64, isolation: i8, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(1 << 20)])])
}

async fn fetch_at(b: &Arc<crate::broker::Broker>, offset: i64, isolation: i8) -> PartitionData {
    let resp = fetch::handle(b.clone(), fetch_request(TOPIC, offset, isolation, 0), 12).await;
    resp.responses[0].partitions[0].clone()
}

fn batch_count(d: &PartitionData) -> usize {
    record_batch::batches(d.records.as_ref().unwrap()).count()
}

fn aborted(d: &PartitionData) -> Option<Vec<(i64, i64)>> {
    d.aborted_transactions.as_ref().map(|v| {
        v.iter()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect()
    })
}

/// ListOffsets latest (-1) with an isolation level.
fn latest(b: &crate::broker::Broker, isolation: i8) -> i64 {
    list_offset(b, isolation, -1)
}

/// ListOffsets of `timestamp` with an isolation level: the offset answered.
fn list_offset(b: &crate::broker::Broker, isolation: i8, timestamp: i64) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(TOPIC))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(-1)
                .with_timestamp(timestamp)])]);
    let resp = list_offsets::handle(b, req, 7);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{resp:?}");
    p.offset
}

fn marker_request(
    commit: bool,
    coordinator_epoch: i32,
    partitions: &[(&str, i32)],
) -> WriteTxnMarkersRequest {
    WriteTxnMarkersRequest::default().with_markers(vec![writable_marker(
        &TxnMarker {
            producer_id: PID,
            producer_epoch: 0,
            coordinator_epoch,
            control: if commit {
                ControlType::Commit
            } else {
                ControlType::Abort
            },
        },
        &partitions
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect::<Vec<_>>(),
    )])
}

/// (topic, partition, error code) of every partition in a WriteTxnMarkers answer.
fn codes(resp: &WriteTxnMarkersResponse) -> Vec<(String, i32, i16)> {
    resp.markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

async fn write(
    b: &Arc<crate::broker::Broker>,
    commit: bool,
    partitions: &[(&str, i32)],
) -> Vec<(String, i32, i16)> {
    let resp = write_txn_markers::handle(b.clone(), marker_request(commit, 5, partitions), 1).await;
    codes(&resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_stops_at_the_lso_and_learns_aborted_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let running = setup(dir.path()).await;
    let b = running.broker.clone();
    let part = b.replicas.get(TOPIC, 0).unwrap();

    // An open transaction at 0-1, then a plain record at 2.
    let r = produce_to(&b, TOPIC, txn_batch(0, 2), Some("tx")).await;
    assert_eq!((r.error_code, r.base_offset), (0, 0), "{r:?}");
    let r = produce_to(&b, TOPIC, plain_batch(), None).await;
    assert_eq!((r.error_code, r.base_offset), (0, 2), "{r:?}");
    assert_eq!(part.high_watermark(), 3);
    assert_eq!(
        part.last_stable_offset(),
        0,
        "the open transaction holds the LSO"
    );

    let d = fetch_at(&b, 0, 1).await;
    assert_eq!(d.error_code, 0);
    assert_eq!((d.high_watermark, d.last_stable_offset), (3, 0));
    assert_eq!(batch_count(&d), 0, "read_committed stops at the LSO");
    assert_eq!(aborted(&d), Some(vec![]), "an empty list, not null");
    let d = fetch_at(&b, 0, 0).await;
    assert_eq!((d.high_watermark, d.last_stable_offset), (3, 0));
    assert_eq!(batch_count(&d), 2, "read_uncommitted reads to the HW");
    assert_eq!(aborted(&d), None);
    assert_eq!(latest(&b, 1), 0);
    assert_eq!(latest(&b, 0), 3);
    // A timestamp lookup answers only offsets the requester may fetch (Kafka's
    // `fetchOffsetForTimestamp`): the open transaction's first record is past the LSO.
    assert_eq!(list_offset(&b, 0, 0), 0);
    assert_eq!(list_offset(&b, 1, 0), -1);

    // Abort: the marker lands at 3 and the LSO passes it.
    assert_eq!(
        write(&b, false, &[(TOPIC, 0)]).await,
        vec![(TOPIC.into(), 0, 0)]
    );
    assert_eq!(part.log_end_offset(), 4);
    assert_eq!(part.last_stable_offset(), 4);
    let d = fetch_at(&b, 0, 1).await;
    assert_eq!((d.high_watermark, d.last_stable_offset), (4, 4));
    assert_eq!(batch_count(&d), 3, "data, plain record, marker");
    assert_eq!(aborted(&d), Some(vec![(PID, 0)]));
    // Past the aborted transaction, nothing to filter.
    let d = fetch_at(&b, 4, 1).await;
    assert_eq!(aborted(&d), Some(vec![]));
    assert_eq!(latest(&b, 1), 4);

    // A second transaction, committed while a read_committed long poll waits at the LSO.
    let r = produce_to(&b, TOPIC, txn_batch(2, 2), Some("tx")).await;
    assert_eq!((r.error_code, r.base_offset), (0, 4), "{r:?}");
    assert_eq!(part.last_stable_offset(), 4);
    let polling = tokio::spawn({
        let b = b.clone();
        async move {
            let started = std::time::Instant::now();
            let resp = fetch::handle(b, fetch_request(TOPIC, 4, 1, 20_000), 12).await;
            (resp.responses[0].partitions[0].clone(), started.elapsed())
        }
    });
    // Writes that move the HW but not the LSO leave the poll parked.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = produce_to(&b, TOPIC, plain_batch(), None).await;
    assert_eq!((r.error_code, r.base_offset), (0, 6), "{r:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!polling.is_finished(), "the LSO did not move: still parked");
    assert_eq!(
        write(&b, true, &[(TOPIC, 0)]).await,
        vec![(TOPIC.into(), 0, 0)]
    );
    let (d, waited) = polling.await.unwrap();
    assert!(waited < Duration::from_secs(10), "woken by the commit");
    assert_eq!(d.last_stable_offset, 8);
    assert_eq!(batch_count(&d), 3, "committed data, plain record, marker");
    assert_eq!(aborted(&d), Some(vec![]));
    assert_eq!(latest(&b, 1), 8);

    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_accepts_transactions_and_refuses_what_kafka_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let running = setup(dir.path()).await;
    let b = running.broker.clone();

    // Transactional records need the request's transactional id (Kafka authorizes it).
    let r = produce_to(&b, TOPIC, txn_batch(0, 1), None).await;
    assert_eq!(
        r.error_code,
        ErrorCode::TransactionalIdAuthorizationFailed.code()
    );
    // Control batches are the coordinator's.
    let marker = kavka_protocol::records::encode_txn_marker(
        &TxnMarker {
            producer_id: PID,
            producer_epoch: 0,
            coordinator_epoch: 0,
            control: ControlType::Commit,
        },
        now_ms(),
    )
    .unwrap();
    let r = produce_to(&b, TOPIC, marker, Some("tx")).await;
    assert_eq!(r.error_code, ErrorCode::InvalidRecord.code());
    let r = produce_to(&b, TOPIC, txn_batch(0, 1), Some("tx")).await;
    assert_eq!((r.error_code, r.base_offset), (0, 0), "{r:?}");

    // DescribeProducers shows the open transaction, then the marker that ended it.
    let describe = |b: &crate::broker::Broker| {
        let req = DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(name(TOPIC))
                .with_partition_indexes(vec![0]),
            TopicRequest::default()
                .with_name(name(FOLLOWED))
                .with_partition_indexes(vec![0]),
            TopicRequest::default()
                .with_name(name("nope"))
                .with_partition_indexes(vec![0]),
        ]);
        describe_producers::handle(b, req, 0)
    };
    let resp = describe(&b);
    let codes: Vec<i16> = resp
        .topics
        .iter()
        .map(|t| t.partitions[0].error_code)
        .collect();
    assert_eq!(
        codes,
        vec![0, 0, ErrorCode::UnknownTopicOrPartition.code()],
        "a follower replica answers too, as in Kafka"
    );
    let states = &resp.topics[0].partitions[0].active_producers;
    assert_eq!(states.len(), 1, "{resp:?}");
    let s = &states[0];
    assert_eq!(
        (s.producer_id.0, s.producer_epoch, s.last_sequence),
        (PID, 0, 0)
    );
    assert_eq!((s.coordinator_epoch, s.current_txn_start_offset), (-1, 0));
    assert_eq!(
        write(&b, true, &[(TOPIC, 0)]).await,
        vec![(TOPIC.into(), 0, 0)]
    );
    let resp = describe(&b);
    let s = &resp.topics[0].partitions[0].active_producers[0];
    assert_eq!((s.coordinator_epoch, s.current_txn_start_offset), (5, -1));

    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_txn_markers_refuses_partitions_this_broker_does_not_lead() {
    let dir = tempfile::tempdir().unwrap();
    let running = setup(dir.path()).await;
    let b = running.broker.clone();
    let got = write(&b, true, &[(FOLLOWED, 0), ("nope", 0), (TOPIC, 1)]).await;
    assert_eq!(
        got,
        vec![
            (FOLLOWED.into(), 0, ErrorCode::NotLeaderOrFollower.code()),
            ("nope".into(), 0, ErrorCode::UnknownTopicOrPartition.code()),
            (TOPIC.into(), 1, ErrorCode::UnknownTopicOrPartition.code()),
        ]
    );
    assert_eq!(b.replicas.get(FOLLOWED, 0).unwrap().log_end_offset(), 0);
    running.shutdown().await;
}

fn request(partitions: &[(&str, i32)], control: ControlType) -> MarkerRequest {
    MarkerRequest {
        transactional_id: "tx".into(),
        producer_id: PID,
        producer_epoch: 0,
        coordinator_epoch: 5,
        control,
        partitions: partitions
            .iter()
            .map(|(t, p)| (t.to_string(), *p))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_writes_local_markers_and_gives_up_when_no_longer_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let running = setup(dir.path()).await;
    let b = running.broker.clone();
    let channel = TxnMarkerChannel::new(
        1,
        b.replicas.clone(),
        b.groups.clone(),
        b.controller.clone(),
        Duration::from_secs(2),
    );
    let r = produce_to(&b, TOPIC, txn_batch(0, 2), Some("tx")).await;
    assert_eq!(r.error_code, 0);
    let part = b.replicas.get(TOPIC, 0).unwrap();
    assert_eq!(part.last_stable_offset(), 0);
    // A partition of a deleted (here: never created) topic is skipped, as Kafka does.
    channel
        .write_markers(
            request(&[(TOPIC, 0), ("gone", 0)], ControlType::Commit),
            || true,
        )
        .await
        .unwrap();
    assert_eq!(part.log_end_offset(), 3);
    assert_eq!(part.last_stable_offset(), 3);

    // Node 2 leads `followed` and never answers: retried until the caller stops being the
    // coordinator.
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let started = std::time::Instant::now();
    let r = channel
        .write_markers(request(&[(FOLLOWED, 0)], ControlType::Abort), || {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3
        })
        .await;
    assert_eq!(r, Err(MarkerError::NotCoordinator));
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert!(started.elapsed() < Duration::from_secs(30));
    running.shutdown().await;
}

/// Two brokers in one process, each its own single-node cluster: node 1's image says node 3
/// (the other broker's address) leads `remote`, so node 1's channel sends it WriteTxnMarkers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_sends_markers_to_the_leader_on_another_broker() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let running = setup(dir.path()).await;
    let other = crate::start(config(other_dir.path(), 3)).await.unwrap();
    let ob = other.broker.clone();
    create(&ob, &[], &[("remote", vec![3])]).await;
    create(
        &running.broker,
        &[(3, other.bound.port())],
        &[("remote", vec![3])],
    )
    .await;
    let remote = ob.replicas.get("remote", 0).unwrap();
    let r = produce_to(&ob, "remote", txn_batch(0, 2), Some("tx")).await;
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(remote.last_stable_offset(), 0);

    let b = running.broker.clone();
    let channel = TxnMarkerChannel::new(
        1,
        b.replicas.clone(),
        b.groups.clone(),
        b.controller.clone(),
        Duration::from_secs(5),
    );
    let produced = produce_to(&b, TOPIC, txn_batch(0, 1), Some("tx")).await;
    assert_eq!(produced.error_code, 0);
    tokio::time::timeout(
        Duration::from_secs(30),
        channel.write_markers(
            request(&[("remote", 0), (TOPIC, 0)], ControlType::Commit),
            || true,
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(remote.log_end_offset(), 3, "the marker was written there");
    assert_eq!(remote.last_stable_offset(), 3);
    assert_eq!(b.replicas.get(TOPIC, 0).unwrap().last_stable_offset(), 2);
    // Concurrent transactions of different producers share the link.
    let (a, c) = tokio::join!(
        channel.write_markers(
            MarkerRequest {
                producer_id: PID + 1,
                ..request(&[("remote", 0)], ControlType::Abort)
            },
            || true
        ),
        channel.write_markers(
            MarkerRequest {
                producer_id: PID + 2,
                ..request(&[("remote", 0)], ControlType::Abort)
            },
            || true
        ),
    );
    a.unwrap();
    c.unwrap();
    assert_eq!(remote.log_end_offset(), 5);

    other.shutdown().await;
    running.shutdown().await;
}

/// The coordinator spawns marker writes: the future must be `Send`.
#[allow(dead_code)]
fn write_markers_is_send(channel: Arc<TxnMarkerChannel>) {
    fn send<T: Send>(_: T) {}
    send(async move {
        channel
            .write_markers(request(&[(TOPIC, 0)], ControlType::Commit), || true)
            .await
    });
}

/// A `__consumer_offsets` partition goes through the group coordinator; the channel waits
/// out its load (COORDINATOR_LOAD_IN_PROGRESS is retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_writes_consumer_offsets_markers_through_the_group_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let running = crate::start(config(dir.path(), 1)).await.unwrap();
    let b = running.broker.clone();
    let groups = b.groups.clone();
    tokio::task::spawn_blocking(move || groups.ensure_ready().unwrap())
        .await
        .unwrap();
    let channel = TxnMarkerChannel::new(
        1,
        b.replicas.clone(),
        b.groups.clone(),
        b.controller.clone(),
        Duration::from_secs(2),
    );
    let part = b.replicas.get(OFFSETS_TOPIC, 0).unwrap();
    let before = part.log_end_offset();
    tokio::time::timeout(
        Duration::from_secs(30),
        channel.write_markers(request(&[(OFFSETS_TOPIC, 0)], ControlType::Commit), || true),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(part.log_end_offset(), before + 1);
    assert_eq!(part.last_stable_offset(), before + 1);
    running.shutdown().await;
}
