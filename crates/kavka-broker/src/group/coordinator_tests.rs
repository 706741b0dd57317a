//! The coordinator against real logs: what it acknowledged comes back after a restart.

use super::*;
use crate::config::BrokerConfig;
use crate::group::classic::{JoinRequest, Outcome, SyncRequest};

struct Node {
    controller: Arc<Controller>,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
}

fn start(dir: &std::path::Path) -> Node {
    start_with(dir, true)
}

fn start_with(dir: &std::path::Path, replay: bool) -> Node {
    let n = start_unloaded(dir);
    if replay {
        n.groups.load_existing();
    } else {
        n.groups.init_existing();
    }
    n
}

/// A node whose coordinator follows `__consumer_offsets` leadership (startup in a cluster).
fn start_following(dir: &std::path::Path) -> Node {
    let n = start_unloaded(dir);
    n.groups.follow_leadership();
    n
}

fn start_unloaded(dir: &std::path::Path) -> Node {
    start_unloaded_with(dir, &[])
}

fn start_unloaded_with(dir: &std::path::Path, extra: &[&str]) -> Node {
    let mut overrides = vec![
        format!("log.dirs={}", dir.join("logs").display()),
        format!("metadata.log.dir={}", dir.join("meta").display()),
        "offsets.topic.num.partitions=3".to_string(),
        "group.initial.rebalance.delay.ms=0".to_string(),
        "group.min.session.timeout.ms=10".to_string(),
        "group.member.metadata.max.bytes=4194304".to_string(),
    ];
    overrides.extend(extra.iter().map(|o| o.to_string()));
    let (config, _) = BrokerConfig::from_properties("", &overrides).expect("config");
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.metadata_log_dir).expect("meta dir");
    let controller = Arc::new(
        Controller::open(&config.metadata_log_dir, config.node_id, None).expect("controller"),
    );
    let replicas = ReplicaManager::new(config.clone(), tokio::runtime::Handle::current());
    replicas.reconcile(None, &controller.image());
    controller.subscribe(replicas.clone());
    controller
        .register_broker(config.node_id, "127.0.0.1", 9092, None)
        .expect("register");
    let groups = Arc::new(GroupCoordinator::new(
        config.group.clone(),
        replicas.clone(),
        controller.clone(),
    ));
    Node {
        controller,
        replicas,
        groups,
    }
}

fn create_topic(n: &Node, name: &str, partitions: i32) {
    let spec = CreateTopicSpec {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: 1,
        ..Default::default()
    };
    let defaults = TopicDefaults {
        num_partitions: 1,
        replication_factor: 1,
    };
    for r in n.controller.create_topics(vec![spec], false, &defaults) {
        r.expect("create topic");
    }
}

fn admin() -> Committer {
    Committer {
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        retention_time_ms: -1,
    }
}

fn commit(topic: &str, partition: i32, offset: i64) -> CommitPartition {
    CommitPartition {
        topic: topic.into(),
        partition,
        offset,
        leader_epoch: 3,
        metadata: Some("m".into()),
    }
}

fn join_one(n: &Node, group: &str) -> (String, i32) {
    join_with(n, group, Bytes::from_static(b"sub"))
}

fn join_with(n: &Node, group: &str, metadata: Bytes) -> (String, i32) {
    let req = |member: &str| JoinRequest {
        member_id: member.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), metadata.clone())],
        require_known_member_id: true,
    };
    let Outcome::Done(first) = n.groups.join_group(group, req("")) else {
        panic!("MEMBER_ID_REQUIRED expected")
    };
    assert_eq!(first.error, Some(ErrorCode::MemberIdRequired));
    let Outcome::Wait(mut rx) = n.groups.join_group(group, req(&first.member_id)) else {
        panic!("join parks")
    };
    let joined = rx
        .try_recv()
        .expect("a lone member completes the join at once");
    assert_eq!(joined.error, None);
    let sync = SyncRequest {
        member_id: joined.member_id.clone(),
        group_instance_id: None,
        generation_id: joined.generation_id,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"assigned"))],
    };
    let Outcome::Wait(mut rx) = n.groups.sync_group(group, sync) else {
        panic!("the leader's sync waits for the store")
    };
    let synced = rx.try_recv().expect("answered once stored");
    assert_eq!(synced.error, None);
    assert_eq!(synced.assignment, Bytes::from_static(b"assigned"));
    (joined.member_id, joined.generation_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_and_groups_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (member, generation) = {
        let n = start(dir.path());
        assert_eq!(
            n.groups.fetch_offsets("g", None, None),
            Err(ErrorCode::CoordinatorNotAvailable),
            "no __consumer_offsets before the first FindCoordinator"
        );
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 2);

        let (codes, _) = n.groups.commit_offsets(
            "simple",
            &admin(),
            &[
                commit("t", 0, 10),
                commit("t", 1, 20),
                commit("nope", 0, 1),
                commit("t", 9, 1),
            ],
        );
        assert_eq!(
            codes,
            vec![
                None,
                None,
                Some(ErrorCode::UnknownTopicOrPartition),
                Some(ErrorCode::UnknownTopicOrPartition)
            ]
        );
        let mut big = commit("t", 0, 11);
        big.metadata = Some("x".repeat(5000));
        let (codes, _) = n.groups.commit_offsets("simple", &admin(), &[big]);
        assert_eq!(codes, vec![Some(ErrorCode::OffsetMetadataTooLarge)]);

        let (member, generation) = join_one(&n, "g");
        let who = Committer {
            generation_id: generation,
            member_id: member.clone(),
            group_instance_id: None,
            retention_time_ms: -1,
        };
        let (codes, _) = n.groups.commit_offsets("g", &who, &[commit("t", 1, 7)]);
        assert_eq!(codes, vec![None]);
        let stale = Committer {
            generation_id: generation + 1,
            ..who.clone()
        };
        let (codes, _) = n.groups.commit_offsets("g", &stale, &[commit("t", 1, 8)]);
        assert_eq!(codes, vec![Some(ErrorCode::IllegalGeneration)]);
        let (codes, _) = n.groups.commit_offsets("g", &admin(), &[commit("t", 1, 8)]);
        assert_eq!(
            codes,
            vec![Some(ErrorCode::UnknownMemberId)],
            "no admin commits into an active group"
        );
        assert_eq!(
            n.groups.delete_group("g").err(),
            Some(ErrorCode::NonEmptyGroup)
        );
        n.replicas.shutdown();
        (member, generation)
    };

    let n = start(dir.path());
    let fetched = n.groups.fetch_offsets("simple", None, None).expect("fetch");
    assert_eq!(fetched.len(), 1);
    let (topic, parts) = &fetched[0];
    assert_eq!(topic, "t");
    let got: Vec<(i32, i64, i32, String)> = parts
        .iter()
        .map(|(p, v)| {
            let v = v.clone().expect("committed");
            (*p, v.offset, v.leader_epoch, v.metadata)
        })
        .collect();
    assert_eq!(got, vec![(0, 10, 3, "m".into()), (1, 20, 3, "m".into())]);

    // The member is back in the same generation: no rebalance needed after a restart.
    let d = n.groups.describe_group("g");
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].assignment, Bytes::from_static(b"assigned"));
    assert_eq!(n.groups.heartbeat("g", &member, None, generation), Ok(()));
    let g_offsets = n
        .groups
        .fetch_offsets("g", None, Some(vec![("t".into(), vec![0, 1])]))
        .expect("fetch");
    assert_eq!(g_offsets[0].1[0].1, None);
    assert_eq!(g_offsets[0].1[1].1.as_ref().map(|v| v.offset), Some(7));

    // Leaving empties the group; deleting it removes its offsets for good. On a single
    // node both writes are acknowledged at once: the ISR is this broker.
    let (codes, wait) = n
        .groups
        .leave_group("g", &[(member.clone(), None)])
        .expect("left");
    assert_eq!(codes, vec![Ok(())]);
    assert!(wait.expect("the empty group is stored").is_replicated());
    assert_eq!(n.groups.describe_group("g").state, "Empty");
    let wait = n.groups.delete_group("g").expect("deleted");
    assert!(wait.expect("tombstones written").is_replicated());
    assert_eq!(
        n.groups.delete_group("g").err(),
        Some(ErrorCode::GroupIdNotFound)
    );
    let listed: Vec<String> = n
        .groups
        .list_groups(&[], &[])
        .expect("list")
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(listed, vec!["simple".to_string()]);
    n.replicas.shutdown();
    drop(n);

    let n = start(dir.path());
    assert!(!n.groups.describe_group("g").found, "deleted stays deleted");
    assert_eq!(
        n.groups
            .fetch_offsets("g", None, None)
            .expect("fetch")
            .len(),
        0
    );
    n.replicas.shutdown();
}

/// A group whose stored metadata is bigger than the topic's max.message.bytes uncompressed
/// (1 MiB): the record is compressed, stored, and read back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_group_metadata_is_stored_compressed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = Bytes::from("subscription ".repeat(100_000));
    assert!(metadata.len() > 1 << 20);
    let (member, generation) = {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        let joined = join_with(&n, "big", metadata.clone());
        n.replicas.shutdown();
        joined
    };
    let n = start(dir.path());
    let d = n.groups.describe_group("big");
    assert_eq!(d.state, "Stable");
    assert_eq!(d.members[0].metadata, metadata);
    assert_eq!(n.groups.heartbeat("big", &member, None, generation), Ok(()));
    n.replicas.shutdown();
}

/// A KIP-848 member keeps its id, epoch and partitions across a restart: its next
/// heartbeat is answered as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_survive_a_restart() {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    use kafka_protocol::messages::{GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let client = crate::router::ClientInfo {
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (member_id, epoch, owned) = {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 4);
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("cg")))
            .with_member_id(s("m-1"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
            .with_topic_partitions(Some(vec![]));
        let (r, wait) = n
            .groups
            .consumer_group_heartbeat(&join, &client)
            .expect("joined");
        assert_eq!(r.error_code, 0);
        assert!(
            wait.expect("the join is stored").is_replicated(),
            "a single node acknowledges at once"
        );
        let assigned = r.assignment.expect("an assignment").topic_partitions;
        assert_eq!(
            assigned.iter().map(|t| t.partitions.len()).sum::<usize>(),
            4
        );
        let owned: Vec<TopicPartitions> = assigned
            .into_iter()
            .map(|t| {
                TopicPartitions::default()
                    .with_topic_id(t.topic_id)
                    .with_partitions(t.partitions)
            })
            .collect();
        n.replicas.shutdown();
        (
            r.member_id.expect("member id").to_string(),
            r.member_epoch,
            owned,
        )
    };
    let n = start(dir.path());
    let listed = n.groups.list_groups(&[], &[]).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].group_type.as_str(), listed[0].state.as_str()),
        ("consumer", "Stable")
    );
    let beat = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("cg")))
        .with_member_id(s(&member_id))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
        .with_topic_partitions(Some(owned));
    let (r, _) = n
        .groups
        .consumer_group_heartbeat(&beat, &client)
        .expect("still a member");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.member_epoch, epoch, "no new epoch: no rebalance");
    n.replicas.shutdown();
}

/// Offsets past their retention go (tombstoned, so they stay gone after a restart); an
/// empty group left with no offsets goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_offsets_and_empty_groups_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 1);
        // OffsetCommit v2-4 may ask for a retention of its own: 1 ms here.
        let short = Committer {
            retention_time_ms: 1,
            ..admin()
        };
        let (codes, _) = n
            .groups
            .commit_offsets("brief", &short, &[commit("t", 0, 5)]);
        assert_eq!(codes, vec![None]);
        let (codes, _) = n
            .groups
            .commit_offsets("kept", &admin(), &[commit("t", 0, 6)]);
        assert_eq!(codes, vec![None]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(n.groups.expire_offsets(), 1);
        let listed: Vec<String> = n
            .groups
            .list_groups(&[], &[])
            .expect("list")
            .into_iter()
            .map(|g| g.group_id)
            .collect();
        assert_eq!(listed, vec!["kept".to_string()]);
        n.replicas.shutdown();
    }
    let n = start(dir.path());
    assert!(!n.groups.describe_group("brief").found);
    let kept = n.groups.fetch_offsets("kept", None, None).expect("fetch");
    assert_eq!(kept[0].1[0].1.as_ref().map(|v| v.offset), Some(6));
    n.replicas.shutdown();
}

/// An active group keeps the offsets of the topics its members subscribe to, even past an
/// explicit retention; offsets of topics it no longer reads expire (KIP-211).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_group_keeps_offsets_of_subscribed_topics_only() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 1);
    create_topic(&n, "u", 1);
    let sub =
        ConsumerProtocolSubscription::default().with_topics(vec![StrBytes::from_static_str("t")]);
    let mut buf = bytes::BytesMut::new();
    bytes::BufMut::put_i16(&mut buf, 0);
    sub.encode(&mut buf, 0).expect("encode");
    let (member, generation) = join_with(&n, "active", buf.freeze());
    let who = Committer {
        generation_id: generation,
        member_id: member,
        group_instance_id: None,
        retention_time_ms: 1,
    };
    let (codes, _) =
        n.groups
            .commit_offsets("active", &who, &[commit("t", 0, 3), commit("u", 0, 4)]);
    assert_eq!(codes, vec![None, None]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(n.groups.expire_offsets(), 1);
    let left = n.groups.fetch_offsets("active", None, None).expect("fetch");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, "t");
    assert_eq!(n.groups.describe_group("active").state, "Stable");
    n.replicas.shutdown();
}

/// Until its partition is replayed, a group's requests get COORDINATOR_LOAD_IN_PROGRESS
/// (clients retry), never an empty answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_the_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 1);
        let (codes, _) = n.groups.commit_offsets("g", &admin(), &[commit("t", 0, 9)]);
        assert_eq!(codes, vec![None]);
        n.replicas.shutdown();
    }
    let n = start_with(dir.path(), false);
    assert_eq!(
        n.groups.ensure_ready(),
        Ok(()),
        "FindCoordinator answers at once"
    );
    assert_eq!(
        n.groups.fetch_offsets("g", None, None),
        Err(ErrorCode::CoordinatorLoadInProgress)
    );
    let (codes, _) = n
        .groups
        .commit_offsets("g", &admin(), &[commit("t", 0, 10)]);
    assert_eq!(codes, vec![Some(ErrorCode::CoordinatorLoadInProgress)]);
    assert_eq!(
        n.groups.list_groups(&[], &[]).err(),
        Some(ErrorCode::CoordinatorLoadInProgress)
    );
    n.groups.load_all();
    let got = n.groups.fetch_offsets("g", None, None).expect("loaded");
    assert_eq!(got[0].1[0].1.as_ref().map(|v| v.offset), Some(9));
    n.replicas.shutdown();
}

/// JoinGroup's hostile shapes are refused before they reach a group: too many protocols,
/// too much metadata summed over them, names the stored records could not carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_joins_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    let base = JoinRequest {
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".repeat(5000),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
    };
    let error = |group: &str, req: JoinRequest| match n.groups.join_group(group, req) {
        Outcome::Done(r) => r.error,
        Outcome::Wait(_) => panic!("refused joins are answered at once"),
    };
    let many = JoinRequest {
        protocols: (0..=MAX_JOIN_PROTOCOLS)
            .map(|i| (format!("p{i}"), Bytes::new()))
            .collect(),
        ..base.clone()
    };
    assert_eq!(error("g", many), Some(ErrorCode::InvalidRequest));
    // 4 × 1.5 MiB: each under a 4 MiB limit, together over it.
    let chunk = Bytes::from(vec![0u8; 3 << 19]);
    let heavy = JoinRequest {
        protocols: (0..4).map(|i| (format!("p{i}"), chunk.clone())).collect(),
        ..base.clone()
    };
    assert_eq!(error("g", heavy), Some(ErrorCode::InvalidRequest));
    let long_instance = JoinRequest {
        group_instance_id: Some("i".repeat(MAX_NAME_LEN + 1)),
        ..base.clone()
    };
    assert_eq!(error("g", long_instance), Some(ErrorCode::InvalidRequest));
    assert_eq!(
        error(&"g".repeat(MAX_NAME_LEN + 1), base.clone()),
        Some(ErrorCode::InvalidGroupId)
    );
    // A long client id is fine: the member id made from it is cut to size.
    let Outcome::Done(r) = n.groups.join_group("g", base) else {
        panic!("MEMBER_ID_REQUIRED expected")
    };
    assert_eq!(r.error, Some(ErrorCode::MemberIdRequired));
    assert!(r.member_id.len() <= MAX_NAME_LEN, "{}", r.member_id.len());
    n.replicas.shutdown();
}

/// One OffsetCommit is one batch in `__consumer_offsets`, however many partitions it
/// names (records of a batch must advance offset and sequence together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_commit_is_one_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 4);
    let parts: Vec<CommitPartition> = (0..4).map(|p| commit("t", p, 10 + i64::from(p))).collect();
    let (codes, _) = n.groups.commit_offsets("batched", &admin(), &parts);
    assert_eq!(codes, vec![None; 4]);
    let p = partition_for("batched", 3);
    let part = n.replicas.get(OFFSETS_TOPIC, p).expect("hosted");
    let bytes = part
        .read_plan(0, 1 << 20, true)
        .expect("plan")
        .execute()
        .expect("read");
    let batches =
        kavka_protocol::records::decode_batches_detailed(&bytes, 1 << 20).expect("decode");
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].records.len(), 4);
    n.replicas.shutdown();
}

// ---- Following `__consumer_offsets` leadership (cluster) ----

/// `image` with partition `p` of `__consumer_offsets` led by `leader` (a new leader
/// epoch), at the same image offset so later real commits still apply after it.
fn with_offsets_leader(
    image: &kavka_metadata::MetadataImage,
    p: i32,
    leader: i32,
) -> kavka_metadata::MetadataImage {
    let mut image = image.clone();
    let mut topic = (**image.topics.get(OFFSETS_TOPIC).expect("offsets topic")).clone();
    let part = topic.partitions.get_mut(&p).expect("partition");
    part.leader = leader;
    part.leader_epoch += 1;
    image
        .topics
        .insert(OFFSETS_TOPIC.to_string(), Arc::new(topic));
    image
}

/// Polls (bounded) until the group's shard is no longer loading; returns its answer.
async fn after_load(n: &Node, group: &str) -> Result<FetchedOffsets, ErrorCode> {
    loaded(&n.groups, group).await
}

async fn loaded(groups: &GroupCoordinator, group: &str) -> Result<FetchedOffsets, ErrorCode> {
    for _ in 0..1000 {
        match groups.fetch_offsets(group, None, None) {
            Err(ErrorCode::CoordinatorLoadInProgress) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other,
        }
    }
    panic!("the replay of {group}'s partition never finished");
}

fn committed(got: &FetchedOffsets) -> Vec<(String, i32, i64)> {
    got.iter()
        .flat_map(|(t, parts)| {
            parts
                .iter()
                .filter_map(move |(p, v)| v.as_ref().map(|v| (t.clone(), *p, v.offset)))
        })
        .collect()
}

/// Resigning a partition drops its groups: requests, and joins parked in a rebalance, hear
/// NOT_COORDINATOR; groups of partitions still led here are untouched. Regaining it replays
/// what was committed, and an acknowledged commit's wait resolves (single node: at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_follow_the_leadership_of_their_partition() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start_following(dir.path());
    let me = n.controller.node_id();
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 1);
    let p = partition_for("g", 3);
    let other_group = (0..100)
        .map(|i| format!("other-{i}"))
        .find(|g| partition_for(g, 3) != p)
        .expect("a group on another partition");

    let (codes, wait) = n.groups.commit_offsets("g", &admin(), &[commit("t", 0, 9)]);
    assert_eq!(codes, vec![None]);
    let wait = wait.expect("a stored commit is acknowledged through its wait");
    assert_eq!(wait.wait().await, Ok(()));
    let (codes, _) = n
        .groups
        .commit_offsets(&other_group, &admin(), &[commit("t", 0, 4)]);
    assert_eq!(codes, vec![None]);
    // A second member's join parks until the first rejoins.
    join_one(&n, "g");
    let Outcome::Wait(mut parked) = n.groups.join_group("g", second_join()) else {
        panic!("the second member waits for the rebalance")
    };

    let image = n.controller.image();
    n.groups
        .apply_leadership(&with_offsets_leader(&image, p, me + 1));
    let answered = parked.try_recv().expect("the parked join is answered");
    assert_eq!(answered.error, Some(ErrorCode::NotCoordinator));
    assert_eq!(
        n.groups.fetch_offsets("g", None, None),
        Err(ErrorCode::NotCoordinator)
    );
    let (codes, wait) = n
        .groups
        .commit_offsets("g", &admin(), &[commit("t", 0, 10)]);
    assert_eq!(codes, vec![Some(ErrorCode::NotCoordinator)]);
    assert!(wait.is_none());
    assert_eq!(
        n.groups.heartbeat("g", "m", None, 1),
        Err(ErrorCode::NotCoordinator)
    );
    assert_eq!(
        committed(
            &n.groups
                .fetch_offsets(&other_group, None, None)
                .expect("still ours")
        ),
        vec![("t".to_string(), 0, 4)]
    );
    let listed: Vec<String> = n
        .groups
        .list_groups(&[], &[])
        .expect("list")
        .into_iter()
        .map(|g| g.group_id)
        .collect();
    assert_eq!(
        listed,
        vec![other_group.clone()],
        "only the groups coordinated here"
    );

    // Leadership comes back (the image the controller holds names this node again).
    n.groups.apply_leadership(&n.controller.image());
    let got = after_load(&n, "g").await.expect("replayed");
    assert_eq!(committed(&got), vec![("t".to_string(), 0, 9)]);

    // Leadership went elsewhere and came back between two images (a newer leader epoch
    // naming this node): what is in memory may be stale, so the shard is replayed afresh.
    let Outcome::Wait(mut parked) = n.groups.join_group("g", second_join()) else {
        panic!("the second member waits for the rebalance")
    };
    n.groups
        .apply_leadership(&with_offsets_leader(&n.controller.image(), p, me));
    let answered = parked.try_recv().expect("the parked join is answered");
    assert_eq!(answered.error, Some(ErrorCode::NotCoordinator));
    let got = after_load(&n, "g").await.expect("replayed");
    assert_eq!(committed(&got), vec![("t".to_string(), 0, 9)]);
    n.replicas.shutdown();
}

/// A new member's join (no member id asked first), parked while the group rebalances.
fn second_join() -> JoinRequest {
    JoinRequest {
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c2".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: false,
    }
}

/// A replay that finishes after its partition's leadership moved away (and maybe came
/// back) installs nothing: the shard stays resigned, or the newer replay wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_replay_is_discarded() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 1);
        let (codes, _) = n.groups.commit_offsets("g", &admin(), &[commit("t", 0, 9)]);
        assert_eq!(codes, vec![None]);
        n.replicas.shutdown();
    }
    let n = start_with(dir.path(), false);
    let me = n.controller.node_id();
    let p = partition_for("g", 3);
    // A replay claims the shard ...
    let stale = n.groups.claim_load(p).expect("pending replay");
    n.groups.follow_leadership();
    // ... leadership moves away before it finishes.
    let image = n.controller.image();
    n.groups
        .apply_leadership(&with_offsets_leader(&image, p, me + 1));
    let replayed = n.groups.load_partition(p);
    assert!(
        replayed.contains_key("g"),
        "the replay itself read the group"
    );
    assert!(!n.groups.finish_load(p, stale, replayed));
    assert_eq!(
        n.groups.fetch_offsets("g", None, None),
        Err(ErrorCode::NotCoordinator)
    );

    // Elected again: a fresh replay runs; the stale one, finishing late, changes nothing.
    n.groups.apply_leadership(&image);
    assert!(!n.groups.finish_load(p, stale, HashMap::new()));
    let got = after_load(&n, "g").await.expect("replayed");
    assert_eq!(committed(&got), vec![("t".to_string(), 0, 9)]);
    n.replicas.shutdown();
}

/// FindCoordinator names the leader of the group's partition, with its registered
/// endpoint; `__consumer_offsets` is created with offsets.topic.replication.factor
/// replicas capped at the live brokers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_coordinator_answers_the_partition_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start_unloaded(dir.path());
    let me = n.controller.node_id();
    n.controller
        .register_broker(me + 1, "127.0.0.2", 9093, None)
        .expect("register");
    let groups = Arc::new(
        GroupCoordinator::new(
            n.groups.config().clone(),
            n.replicas.clone(),
            n.controller.clone(),
        )
        .with_offsets_topic_replication_factor(5),
    );
    groups.follow_leadership();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..50 {
        let group = format!("group-{i}");
        let node = groups.coordinator_for(&group).expect("a coordinator");
        let image = n.controller.image();
        let topic = image.topic(OFFSETS_TOPIC).expect("created");
        let part = &topic.partitions[&partition_for(&group, 3)];
        assert_eq!(part.replicas.len(), 2, "capped at the live brokers");
        assert_eq!(node.node_id, part.leader);
        let expected = if node.node_id == me {
            ("127.0.0.1", 9092)
        } else {
            ("127.0.0.2", 9093)
        };
        assert_eq!((node.host.as_str(), node.port), expected);
        if node.node_id != me {
            assert_eq!(
                groups.fetch_offsets(&group, None, None),
                Err(ErrorCode::NotCoordinator),
                "another broker's group"
            );
        }
        seen.insert(node.node_id);
    }
    assert_eq!(seen.len(), 2, "both brokers lead some partition");

    // No leader, a fenced leader or no topic: no coordinator (clients retry).
    let p = partition_for("group-0", 3);
    let image = n.controller.image();
    assert!(leadership::coordinator_in(&image, "group-0").is_ok());
    let leaderless = with_offsets_leader(&image, p, -1);
    assert_eq!(
        leadership::coordinator_in(&leaderless, "group-0"),
        Err(ErrorCode::CoordinatorNotAvailable)
    );
    let mut fenced = image.as_ref().clone();
    for b in fenced.brokers.values_mut() {
        b.fenced = true;
    }
    assert_eq!(
        leadership::coordinator_in(&fenced, "group-0"),
        Err(ErrorCode::CoordinatorNotAvailable)
    );
    let mut none = image.as_ref().clone();
    none.topics.remove(OFFSETS_TOPIC);
    assert_eq!(
        leadership::coordinator_in(&none, "group-0"),
        Err(ErrorCode::CoordinatorNotAvailable)
    );
    n.replicas.shutdown();
}

/// This node and a registered broker that never fetches; `__consumer_offsets` has both
/// in every ISR. Returns a group coordinated here and its partition.
async fn with_silent_follower(
    dir: &std::path::Path,
    commit_timeout: &str,
) -> (
    Node,
    Arc<GroupCoordinator>,
    String,
    Arc<crate::partition::Partition>,
) {
    let n = start_unloaded_with(dir, &[commit_timeout]);
    let me = n.controller.node_id();
    n.controller
        .register_broker(me + 1, "127.0.0.2", 9, None)
        .expect("register");
    let groups = Arc::new(
        GroupCoordinator::new(
            n.groups.config().clone(),
            n.replicas.clone(),
            n.controller.clone(),
        )
        .with_offsets_topic_replication_factor(2),
    );
    groups.follow_leadership();
    let group = (0..100)
        .map(|i| format!("g-{i}"))
        .find(|g| groups.coordinator_for(g).expect("a coordinator").node_id == me)
        .expect("a group coordinated here");
    create_topic(&n, "t", 1);
    assert_eq!(
        committed(&loaded(&groups, &group).await.expect("loaded")),
        vec![]
    );
    let part = n
        .replicas
        .get(OFFSETS_TOPIC, partition_for(&group, 3))
        .expect("hosted");
    assert!(part.is_leader());
    assert_eq!(
        n.controller
            .image()
            .topic(OFFSETS_TOPIC)
            .expect("topic")
            .partitions[&partition_for(&group, 3)]
            .isr
            .len(),
        2
    );
    (n, groups, group, part)
}

/// The silent follower catches up: it fetches at the leader's log end.
fn follower_fetches(n: &Node, part: &crate::partition::Partition) {
    part.on_follower_fetch(
        n.controller.node_id() + 1,
        part.log_end_offset(),
        part.log_start_offset(),
        now_ms(),
    )
    .expect("follower fetch");
}

/// With a follower in the ISR, an offset commit is acknowledged only once the follower
/// has it (acks=-1): its wait resolves when the follower's fetch moves the high
/// watermark, and answers COORDINATOR_NOT_AVAILABLE when that never happens in
/// offsets.commit.timeout.ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wait_for_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, groups, group, part) =
        with_silent_follower(dir.path(), "offsets.commit.timeout.ms=200").await;
    let (codes, wait) = groups.commit_offsets(&group, &admin(), &[commit("t", 0, 5)]);
    assert_eq!(codes, vec![None]);
    let wait = wait.expect("a wait");
    assert!(!wait.is_replicated(), "the follower does not have it yet");
    let acked = tokio::spawn(wait.wait());
    follower_fetches(&n, &part);
    assert_eq!(acked.await.expect("joined"), Ok(()));

    let (codes, wait) = groups.commit_offsets(&group, &admin(), &[commit("t", 0, 6)]);
    assert_eq!(codes, vec![None]);
    assert_eq!(
        wait.expect("a wait").wait().await,
        Err(ErrorCode::CoordinatorNotAvailable),
        "never replicated"
    );
    n.replicas.shutdown();
}

/// The leader's SyncGroup parks until the group's record (its assignment) is replicated,
/// as Kafka answers it from the store callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_answers_once_the_isr_has_the_assignment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, groups, group, part) =
        with_silent_follower(dir.path(), "offsets.commit.timeout.ms=600000").await;
    let req = |member: &str| JoinRequest {
        member_id: member.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
    };
    let Outcome::Done(first) = groups.join_group(&group, req("")) else {
        panic!("MEMBER_ID_REQUIRED expected")
    };
    let Outcome::Wait(mut rx) = groups.join_group(&group, req(&first.member_id)) else {
        panic!("join parks")
    };
    let joined = rx
        .try_recv()
        .expect("a lone member completes the join at once");
    let sync = SyncRequest {
        member_id: joined.member_id.clone(),
        group_instance_id: None,
        generation_id: joined.generation_id,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"assigned"))],
    };
    let Outcome::Wait(mut synced) = groups.sync_group(&group, sync) else {
        panic!("the leader's sync waits for the store")
    };
    assert!(
        matches!(
            synced.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ),
        "not answered before the follower has the record"
    );
    follower_fetches(&n, &part);
    let synced = synced.await.expect("answered");
    assert_eq!(synced.error, None);
    assert_eq!(synced.assignment, Bytes::from_static(b"assigned"));
    n.replicas.shutdown();
}

/// The image naming this broker is not enough: its partition must have become leader
/// (a restarted cluster broker holds its partitions roleless until caught up). Once the
/// roles are taken, applying the same image again elects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roleless_partition_is_not_coordinated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start_following(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 1);
    let (codes, _) = n.groups.commit_offsets("g", &admin(), &[commit("t", 0, 9)]);
    assert_eq!(codes, vec![None]);
    let p = partition_for("g", 3);
    let image = n.controller.image();
    let topic = image.topic(OFFSETS_TOPIC).expect("topic");
    let part = n.replicas.get(OFFSETS_TOPIC, p).expect("hosted");
    part.become_follower(&kavka_metadata::PartitionImage {
        leader: -1,
        ..topic.partitions[&p].clone()
    });
    n.groups.apply_leadership(&image);
    assert_eq!(
        n.groups.fetch_offsets("g", None, None),
        Err(ErrorCode::NotCoordinator)
    );
    n.replicas.reconcile(None, &image);
    assert!(part.is_leader());
    n.groups.apply_leadership(&image);
    let got = after_load(&n, "g").await.expect("replayed");
    assert_eq!(committed(&got), vec![("t".to_string(), 0, 9)]);
    n.replicas.shutdown();
}

/// The silent follower's shard holds an empty classic group with an offset for t/0,
/// replicated.
fn committed_and_replicated(
    n: &Node,
    groups: &GroupCoordinator,
    group: &str,
    part: &crate::partition::Partition,
) {
    let (codes, wait) = groups.commit_offsets(group, &admin(), &[commit("t", 0, 5)]);
    assert_eq!(codes, vec![None]);
    follower_fetches(n, part);
    assert!(wait.expect("a wait").is_replicated());
}

/// Waits as a handler on the blocking pool does (`replicated_blocking`), off the runtime's
/// workers.
fn acked_on_blocking_pool(wait: AppendWait) -> tokio::task::JoinHandle<Result<(), ErrorCode>> {
    tokio::task::spawn_blocking(move || wait.replicated_blocking())
}

/// LeaveGroup is answered once the group's record (now without the member) is
/// replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_group_waits_for_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, groups, group, part) =
        with_silent_follower(dir.path(), "offsets.commit.timeout.ms=600000").await;
    let req = |member: &str| JoinRequest {
        member_id: member.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
    };
    let Outcome::Done(first) = groups.join_group(&group, req("")) else {
        panic!("MEMBER_ID_REQUIRED expected")
    };
    let Outcome::Wait(mut rx) = groups.join_group(&group, req(&first.member_id)) else {
        panic!("join parks")
    };
    let joined = rx
        .try_recv()
        .expect("a lone member completes the join at once");
    let sync = SyncRequest {
        member_id: joined.member_id.clone(),
        group_instance_id: None,
        generation_id: joined.generation_id,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"assigned"))],
    };
    let Outcome::Wait(synced) = groups.sync_group(&group, sync) else {
        panic!("the leader's sync waits for the store")
    };
    follower_fetches(&n, &part);
    assert_eq!(synced.await.expect("answered").error, None);

    let (codes, wait) = groups
        .leave_group(&group, &[(joined.member_id.clone(), None)])
        .expect("left");
    assert_eq!(codes, vec![Ok(())]);
    let wait = wait.expect("the empty group is stored");
    assert!(!wait.is_replicated(), "the follower does not have it yet");
    let acked = acked_on_blocking_pool(wait);
    follower_fetches(&n, &part);
    assert_eq!(acked.await.expect("joined"), Ok(()));
    assert_eq!(groups.describe_group(&group).state, "Empty");
    n.replicas.shutdown();
}

/// DeleteGroups is answered once the group's tombstones are replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_group_waits_for_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, groups, group, part) =
        with_silent_follower(dir.path(), "offsets.commit.timeout.ms=600000").await;
    committed_and_replicated(&n, &groups, &group, &part);
    let wait = groups
        .delete_group(&group)
        .expect("deleted")
        .expect("tombstones written");
    assert!(!wait.is_replicated(), "the follower does not have it yet");
    let acked = acked_on_blocking_pool(wait);
    follower_fetches(&n, &part);
    assert_eq!(acked.await.expect("joined"), Ok(()));
    assert_eq!(
        groups.delete_group(&group).err(),
        Some(ErrorCode::GroupIdNotFound)
    );
    n.replicas.shutdown();
}

/// OffsetDelete is answered once the offsets' tombstones are replicated, and hears
/// COORDINATOR_NOT_AVAILABLE when that does not happen in offsets.commit.timeout.ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_delete_waits_for_the_isr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, groups, group, part) =
        with_silent_follower(dir.path(), "offsets.commit.timeout.ms=200").await;
    let delete = || {
        let (codes, wait) = groups
            .delete_offsets(&group, &[("t".to_string(), vec![0])])
            .expect("deleted");
        assert_eq!(codes, vec![("t".to_string(), vec![(0, None)])]);
        wait.expect("a tombstone written")
    };
    committed_and_replicated(&n, &groups, &group, &part);
    let wait = delete();
    assert!(!wait.is_replicated(), "the follower does not have it yet");
    let acked = acked_on_blocking_pool(wait);
    follower_fetches(&n, &part);
    assert_eq!(acked.await.expect("joined"), Ok(()));

    committed_and_replicated(&n, &groups, &group, &part);
    assert_eq!(
        acked_on_blocking_pool(delete()).await.expect("joined"),
        Err(ErrorCode::CoordinatorNotAvailable),
        "never replicated"
    );
    n.replicas.shutdown();
}

/// A ConsumerGroupHeartbeat that changed the group (a join) is answered once the
/// group's snapshot is replicated; one that changed nothing wrote nothing to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_heartbeat_waits_for_the_isr() {
    use kafka_protocol::messages::{GroupId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let client = crate::router::ClientInfo {
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (n, groups, group, part) =
        with_silent_follower(dir.path(), "offsets.commit.timeout.ms=600000").await;
    let join = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_member_id(s("m-1"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(vec![]));
    let (r, wait) = groups
        .consumer_group_heartbeat(&join, &client)
        .expect("joined");
    assert_eq!(r.error_code, 0);
    let wait = wait.expect("the join is stored");
    assert!(!wait.is_replicated(), "the follower does not have it yet");
    let acked = acked_on_blocking_pool(wait);
    follower_fetches(&n, &part);
    assert_eq!(acked.await.expect("joined"), Ok(()));

    let beat = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_member_id(s("m-1"))
        .with_member_epoch(r.member_epoch)
        .with_rebalance_timeout_ms(-1);
    let (r, wait) = groups
        .consumer_group_heartbeat(&beat, &client)
        .expect("still a member");
    assert_eq!(r.error_code, 0);
    assert!(wait.is_none(), "nothing changed, nothing stored");
    n.replicas.shutdown();
}

#[path = "txn_tests.rs"]
mod txn_tests;
