//! AlterPartitionReassignments, ListPartitionReassignments and ElectLeaders handlers on a
//! single-node broker (its controller is the active one) with two more brokers registered
//! that never run: reassignments start and stay pending (the new replicas never catch up),
//! and can be listed and cancelled.

use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kavka_broker::broker::Broker;
use kavka_broker::config::BrokerConfig;
use kavka_broker::handlers::{
    alter_partition_reassignments, elect_leaders, list_partition_reassignments,
};
use kavka_metadata::CreateTopicSpec;

const TOPIC: &str = "moving";

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn config(dir: &Path) -> BrokerConfig {
    let overrides = [
        "node.id=1".to_string(),
        "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
        format!("log.dirs={}", dir.join("logs").display()),
        format!("metadata.log.dir={}", dir.join("meta").display()),
    ];
    BrokerConfig::from_properties("", &overrides).unwrap().0
}

/// Runs a (blocking) handler off the runtime's worker threads.
async fn call<T: Send + 'static>(
    b: &Arc<Broker>,
    f: impl FnOnce(&Broker) -> T + Send + 'static,
) -> T {
    let b = b.clone();
    tokio::task::spawn_blocking(move || f(&b)).await.unwrap()
}

fn reassign(partition: i32, replicas: Option<&[i32]>) -> AlterPartitionReassignmentsRequest {
    AlterPartitionReassignmentsRequest::default().with_topics(vec![ReassignableTopic::default()
        .with_name(name(TOPIC))
        .with_partitions(vec![ReassignablePartition::default()
            .with_partition_index(partition)
            .with_replicas(
                replicas.map(|r| r.iter().map(|id| BrokerId(*id)).collect()),
            )])])
}

fn codes(resp: &AlterPartitionReassignmentsResponse) -> Vec<i16> {
    resp.responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

async fn setup(dir: &Path) -> (kavka_broker::RunningBroker, Arc<Broker>) {
    let running = kavka_broker::start(config(dir)).await.unwrap();
    let b = running.broker.clone();
    call(&b, |b| {
        for id in [2, 3] {
            b.controller
                .register_broker(id, "127.0.0.1", 1, None)
                .unwrap();
        }
        let spec = CreateTopicSpec {
            name: TOPIC.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![(0, vec![1]), (1, vec![1])],
            configs: Default::default(),
        };
        let defaults = kavka_metadata::TopicDefaults {
            num_partitions: 1,
            replication_factor: 1,
        };
        for r in b.controller.create_topics(vec![spec], false, &defaults) {
            r.unwrap();
        }
    })
    .await;
    (running, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reassign_list_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, b) = setup(dir.path()).await;

    let resp = call(&b, |b| {
        alter_partition_reassignments::handle(b, reassign(0, Some(&[2, 3])), 1)
    })
    .await;
    assert_eq!((resp.error_code, codes(&resp)), (0, vec![0]), "{resp:?}");
    assert!(resp.allow_replication_factor_change);

    let image = b.controller.image();
    let t = image.topic(TOPIC).unwrap();
    assert_eq!(t.partitions[&0].replicas, vec![2, 3, 1]);

    // Listed with the replicas being added and removed; partition 1 is not moving.
    let list = ListPartitionReassignmentsRequest::default().with_topics(Some(vec![
        ListPartitionReassignmentsTopics::default()
            .with_name(name(TOPIC))
            .with_partition_indexes(vec![0, 1]),
    ]));
    let resp = call(&b, move |b| {
        list_partition_reassignments::handle(b, list, 0)
    })
    .await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.topics.len(), 1);
    let p = &resp.topics[0].partitions;
    assert_eq!(p.len(), 1);
    let ids = |v: &[BrokerId]| v.iter().map(|id| id.0).collect::<Vec<_>>();
    assert_eq!(
        (
            ids(&p[0].replicas),
            ids(&p[0].adding_replicas),
            ids(&p[0].removing_replicas)
        ),
        (vec![2, 3, 1], vec![2, 3], vec![1])
    );

    // Errors: bad targets, unknown partition, nothing to cancel, RF change not allowed (v1).
    for (req, version, code) in [
        (reassign(1, Some(&[1, 9])), 0, 39),
        (reassign(1, Some(&[2, 2])), 0, 39),
        (reassign(1, Some(&[])), 0, 39),
        (reassign(5, Some(&[1])), 0, 3),
        (reassign(1, None), 0, 85),
        (
            reassign(1, Some(&[2, 3])).with_allow_replication_factor_change(false),
            1,
            38,
        ),
    ] {
        let resp = call(&b, move |b| {
            alter_partition_reassignments::handle(b, req, version)
        })
        .await;
        assert_eq!(codes(&resp), vec![code], "{resp:?}");
    }

    // Cancel: back to the original replica.
    let resp = call(&b, |b| {
        alter_partition_reassignments::handle(b, reassign(0, None), 0)
    })
    .await;
    assert_eq!(codes(&resp), vec![0], "{resp:?}");
    let image = b.controller.image();
    assert_eq!(image.topic(TOPIC).unwrap().partitions[&0].replicas, vec![1]);
    let resp = call(&b, |b| {
        list_partition_reassignments::handle(b, ListPartitionReassignmentsRequest::default(), 0)
    })
    .await;
    assert!(resp.topics.is_empty(), "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_per_partition_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, b) = setup(dir.path()).await;
    let req = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(name(TOPIC))
                .with_partitions(vec![0, 7]),
            TopicPartitions::default()
                .with_topic(name("nope"))
                .with_partitions(vec![0]),
        ]));
    let resp = call(&b, move |b| elect_leaders::handle(b, req, 2)).await;
    let flat: Vec<(String, i32, i16)> = resp
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.to_string(), p.partition_id, p.error_code))
        })
        .collect();
    assert_eq!(
        flat,
        vec![
            (TOPIC.to_string(), 0, 84),
            (TOPIC.to_string(), 7, 3),
            ("nope".to_string(), 0, 3),
        ]
    );
    // Null partitions: every partition; those already led by their preferred replica are
    // left out.
    let resp = call(&b, |b| {
        elect_leaders::handle(
            b,
            ElectLeadersRequest::default().with_topic_partitions(None),
            1,
        )
    })
    .await;
    assert_eq!(resp.error_code, 0);
    assert!(resp.replica_election_results.is_empty(), "{resp:?}");
    // An unknown election type.
    let resp = call(&b, |b| {
        elect_leaders::handle(b, ElectLeadersRequest::default().with_election_type(5), 2)
    })
    .await;
    assert_eq!(resp.error_code, 42);
}
