//! The follower side of replication against a real broker started in-process as the
//! leader: the leader client's replica Fetch and OffsetForLeaderEpoch, and a
//! `FetcherManager` copying the leader's partition into a follower `Partition` (a log in a
//! temp dir), truncating a divergent tail first.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreateTopicsRequest, FetchRequest, OffsetForLeaderEpochRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use kavka_broker::config::BrokerConfig;
use kavka_broker::partition::Partition;
use kavka_broker::replication::fetcher::{FetcherManager, LeaderEndpoint};
use kavka_broker::replication::leader_client::{
    LeaderClient, LeaderClientConfig, FETCH_VERSION, OFFSET_FOR_LEADER_EPOCH_VERSION,
};
use kavka_broker::RunningBroker;
use kavka_metadata::PartitionImage;
use kavka_protocol::error::ErrorCode;
use kavka_protocol::record_batch;
use kavka_protocol::records::{encode_batch, plain_record};
use kavka_storage::{Log, LogConfig};

const TOPIC: &str = "replicated";
const LEADER: i32 = 1;
const FOLLOWER: i32 = 2;
/// Upper bound on waiting for the follower to catch up (the loop polls every 20 ms).
const CATCH_UP_POLLS: usize = 1_000;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn broker_config(dir: &Path) -> BrokerConfig {
    let overrides = [
        format!("node.id={LEADER}"),
        "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
        format!("log.dirs={}", dir.join("logs").display()),
        format!("metadata.log.dir={}", dir.join("meta").display()),
        "replica.fetch.wait.max.ms=100".to_string(),
        "replica.fetch.backoff.ms=50".to_string(),
    ];
    BrokerConfig::from_properties("", &overrides).unwrap().0
}

fn client(leader: &RunningBroker) -> LeaderClient {
    LeaderClient::new(LeaderClientConfig {
        addr: leader.bound.to_string(),
        client_id: "fetcher-test".into(),
        socket_timeout: Duration::from_secs(10),
    })
}

/// Starts the leader, registers the follower's node id with its controller (the follower
/// itself runs no broker), and creates the one-partition topic on both, led by the leader.
async fn start_leader(dir: &Path) -> (RunningBroker, LeaderClient, Arc<Partition>) {
    let leader = kavka_broker::start(broker_config(dir)).await.unwrap();
    let controller = leader.broker.controller.clone();
    tokio::task::spawn_blocking(move || controller.register_broker(FOLLOWER, "127.0.0.1", 1, None))
        .await
        .unwrap()
        .unwrap();
    let mut c = client(&leader);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(TOPIC))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(vec![LEADER.into(), FOLLOWER.into()])])])
        .with_timeout_ms(10_000);
    let resp = c.send(&req, 7, Duration::ZERO).await.unwrap();
    assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
    let mut partition = None;
    for _ in 0..CATCH_UP_POLLS {
        partition = leader
            .broker
            .replicas
            .get(TOPIC, 0)
            .filter(|p| p.is_leader());
        if partition.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let partition = partition.expect("the leader never led the new partition");
    (leader, c, partition)
}

fn batch(n: usize, tag: &str) -> Bytes {
    // Current timestamps: 1970 ones are past retention, and the broker's first housekeeping
    // round (run at start, late on a loaded machine) would delete them under the test.
    let now = kavka_broker::replica_manager::now_ms();
    let records: Vec<_> = (0..n)
        .map(|i| {
            plain_record(
                i as i64,
                now + i as i64,
                Some(Bytes::from(format!("{tag}-{i}"))),
                Some(Bytes::from(vec![b'v'; 100])),
            )
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

async fn produce(c: &mut LeaderClient, batches: usize, tag: &str) {
    for b in 0..batches {
        let req = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(TOPIC))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch(1 + b % 3, tag)))])]);
        let resp = c.send(&req, 9, Duration::ZERO).await.unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "{resp:?}");
    }
}

/// Everything in a partition's log, up to its log end (not the high watermark, which on the
/// leader waits for the follower).
fn log_bytes(p: &Partition) -> Bytes {
    p.read_plan_for_follower(p.log_start_offset(), usize::MAX, false)
        .unwrap()
        .execute()
        .unwrap()
}

fn image(leader_epoch: i32) -> PartitionImage {
    PartitionImage {
        partition: 0,
        replicas: vec![LEADER, FOLLOWER],
        isr: vec![LEADER, FOLLOWER],
        leader: LEADER,
        leader_epoch,
        partition_epoch: leader_epoch,
    }
}

fn follower_partition(leader_part: &Partition, log: Log, leader_epoch: i32) -> Arc<Partition> {
    let p = Partition::new(TOPIC.to_string(), leader_part.topic_id, 0, log);
    assert!(p.become_follower(&image(leader_epoch)));
    p
}

fn endpoint(leader: &RunningBroker) -> LeaderEndpoint {
    LeaderEndpoint {
        node_id: LEADER,
        host: "127.0.0.1".into(),
        port: leader.bound.port(),
    }
}

/// Polls until the follower holds the leader's log end offset (bounded).
async fn wait_caught_up(leader: &Partition, follower: &Partition) {
    for _ in 0..CATCH_UP_POLLS {
        if follower.log_end_offset() == leader.log_end_offset()
            && follower.high_watermark() == leader.high_watermark()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "follower at {} (hw {}) never caught up with the leader at {} (hw {})",
        follower.log_end_offset(),
        follower.high_watermark(),
        leader.log_end_offset(),
        leader.high_watermark()
    );
}

fn fetch_request(leader_epoch: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(FOLLOWER.into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(leader_epoch)
                .with_fetch_offset(offset)
                .with_log_start_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_client_fetches_and_asks_offset_for_leader_epoch_as_a_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut c, part) = start_leader(dir.path()).await;
    produce(&mut c, 4, "a").await;
    let epoch = part.leader_epoch();

    let resp = c
        .fetch(&fetch_request(epoch, 0), FETCH_VERSION)
        .await
        .unwrap();
    let data = &resp.responses[0].partitions[0];
    assert_eq!(data.error_code, 0, "{resp:?}");
    assert_eq!(data.records.clone().unwrap_or_default(), log_bytes(&part));
    // The leader's high watermark waits for this follower, which has nothing yet...
    assert_eq!(data.high_watermark, 0);
    // ...and moves to the log end once the follower fetches from there.
    let leo = part.log_end_offset();
    let resp = c
        .fetch(&fetch_request(epoch, leo), FETCH_VERSION)
        .await
        .unwrap();
    let data = &resp.responses[0].partitions[0];
    assert_eq!(data.error_code, 0, "{resp:?}");
    assert_eq!(data.high_watermark, leo);
    assert_eq!(part.high_watermark(), leo);

    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(FOLLOWER.into())
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(name(TOPIC))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(epoch)
                .with_leader_epoch(epoch)])]);
    let resp = c
        .offset_for_leader_epoch(&req, OFFSET_FOR_LEADER_EPOCH_VERSION)
        .await
        .unwrap();
    let answer = &resp.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0, "{resp:?}");
    assert_eq!(
        (answer.leader_epoch, answer.end_offset),
        (epoch, part.log_end_offset())
    );
    // A current leader epoch the leader does not know yet is refused.
    let ahead = c
        .fetch(&fetch_request(epoch + 1, leo), FETCH_VERSION)
        .await
        .unwrap();
    assert_eq!(
        ahead.responses[0].partitions[0].error_code,
        ErrorCode::UnknownLeaderEpoch.code()
    );
    leader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetcher_copies_the_leaders_log() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut c, part) = start_leader(dir.path()).await;
    produce(&mut c, 5, "a").await;
    let epoch = part.leader_epoch();

    let fdir = tempfile::tempdir().unwrap();
    let log = Log::open(&fdir.path().join("replicated-0"), LogConfig::default(), 0).unwrap();
    let follower = follower_partition(&part, log, epoch);
    let fetchers = FetcherManager::new(FOLLOWER, leader.broker.config.replication.clone());
    fetchers.add_partition(follower.clone(), endpoint(&leader), epoch);
    wait_caught_up(&part, &follower).await;
    assert_eq!(log_bytes(&follower), log_bytes(&part));

    // New records keep flowing while the fetcher runs.
    produce(&mut c, 3, "b").await;
    wait_caught_up(&part, &follower).await;
    assert_eq!(log_bytes(&follower), log_bytes(&part));
    assert_eq!(follower.latest_epoch(), part.latest_epoch());
    assert_eq!(fetchers.followed(), vec![(TOPIC.to_string(), 0, LEADER)]);

    // Removed: nothing more is copied.
    fetchers.remove_partition(TOPIC, 0);
    assert!(fetchers.followed().is_empty());
    let copied = follower.log_end_offset();
    produce(&mut c, 2, "c").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(follower.log_end_offset(), copied);
    fetchers.shutdown();
    leader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetcher_truncates_a_divergent_tail_written_under_an_older_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut c, part) = start_leader(dir.path()).await;
    produce(&mut c, 3, "common").await;
    let common = log_bytes(&part);
    let common_end = part.log_end_offset();
    let old_epoch = part.leader_epoch();
    // A later leadership of the leader: epochs old+1 (the follower's, lost) and old+2.
    let new_epoch = old_epoch + 2;
    part.set_leader_epoch(new_epoch);
    produce(&mut c, 3, "new").await;
    assert_eq!(
        part.latest_epoch(),
        Some(new_epoch),
        "produce should stamp the new leader epoch"
    );

    // The follower: the common prefix, then batches the leader never had, written while it
    // was itself leader under epoch old+1.
    let fdir = tempfile::tempdir().unwrap();
    let mut log = Log::open(&fdir.path().join("replicated-0"), LogConfig::default(), 0).unwrap();
    log.append_as_follower(&mut common.to_vec(), 1).unwrap();
    for _ in 0..4 {
        log.append_as_leader(&mut batch(2, "lost").to_vec(), old_epoch + 1, 1)
            .unwrap();
    }
    let follower = follower_partition(&part, log, new_epoch);

    let fetchers = FetcherManager::new(FOLLOWER, leader.broker.config.replication.clone());
    fetchers.add_partition(follower.clone(), endpoint(&leader), new_epoch);
    wait_caught_up(&part, &follower).await;
    let bytes = log_bytes(&follower);
    assert_eq!(bytes, log_bytes(&part));
    let epochs: Vec<i32> = record_batch::batches(&bytes)
        .map(|r| r.unwrap().1.partition_leader_epoch)
        .collect();
    assert!(!epochs.contains(&(old_epoch + 1)), "{epochs:?}");
    assert_eq!(
        follower.end_offset_for_leader_epoch(-1, old_epoch).unwrap(),
        Some((old_epoch, common_end))
    );
    fetchers.shutdown();
    leader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_starts_over_there() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut c, part) = start_leader(dir.path()).await;
    produce(&mut c, 6, "a").await; // batches of 1, 2, 3, 1, 2, 3 records
                                   // DeleteRecords on the leader, to the middle of the batch at offsets 3..=5.
    let epoch = part.leader_epoch();
    assert_eq!(part.delete_records_before(4).unwrap(), 4);

    let fdir = tempfile::tempdir().unwrap();
    let log = Log::open(&fdir.path().join("replicated-0"), LogConfig::default(), 0).unwrap();
    let follower = follower_partition(&part, log, epoch);
    let fetchers = FetcherManager::new(FOLLOWER, leader.broker.config.replication.clone());
    fetchers.add_partition(follower.clone(), endpoint(&leader), epoch);
    wait_caught_up(&part, &follower).await;
    assert_eq!(follower.log_start_offset(), 4);
    assert_eq!(log_bytes(&follower), log_bytes(&part));
    let first = record_batch::peek_header(&log_bytes(&follower)).unwrap();
    assert_eq!(
        first.base_offset, 3,
        "the batch holding the log start comes whole"
    );
    fetchers.shutdown();
    leader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_follower_waits_for_the_new_epoch_then_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut c, part) = start_leader(dir.path()).await;
    produce(&mut c, 3, "a").await;
    let epoch = part.leader_epoch();
    let fdir = tempfile::tempdir().unwrap();
    let log = Log::open(&fdir.path().join("replicated-0"), LogConfig::default(), 0).unwrap();
    let follower = follower_partition(&part, log, epoch);
    let fetchers = FetcherManager::new(FOLLOWER, leader.broker.config.replication.clone());
    fetchers.add_partition(follower.clone(), endpoint(&leader), epoch);
    wait_caught_up(&part, &follower).await;

    // The leader moves to a new epoch the follower has not heard of: its fetches are fenced
    // and it copies nothing more...
    part.set_leader_epoch(epoch + 1);
    produce(&mut c, 2, "b").await;
    let before = follower.log_end_offset();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(follower.log_end_offset(), before);
    assert!(before < part.log_end_offset());
    // ...until the metadata tells it the new epoch.
    assert!(follower.become_follower(&image(epoch + 1)));
    fetchers.add_partition(follower.clone(), endpoint(&leader), epoch + 1);
    wait_caught_up(&part, &follower).await;
    assert_eq!(log_bytes(&follower), log_bytes(&part));
    assert_eq!(follower.latest_epoch(), Some(epoch + 1));
    fetchers.shutdown();
    leader.shutdown().await;
}
