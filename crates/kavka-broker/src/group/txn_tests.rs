//! Transactional offset commits against real logs: pending until the producer's marker,
//! committed or dropped by it, and rebuilt the same way from `__consumer_offsets`.

use super::*;
use kavka_protocol::records::{ControlType, TxnMarker};

const PARTITIONS: i32 = 3;

fn producer(producer_id: i64) -> TxnCommitter {
    TxnCommitter {
        producer_id,
        producer_epoch: 0,
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
    }
}

fn marker(producer_id: i64, control: ControlType) -> TxnMarker {
    TxnMarker {
        producer_id,
        producer_epoch: 0,
        coordinator_epoch: 0,
        control,
    }
}

/// Writes `producer_id`'s marker to `group`'s partition; the wait is resolved (one node).
fn end_txn(n: &Node, group: &str, producer_id: i64, control: ControlType) {
    let wait = n
        .groups
        .write_txn_marker(
            partition_for(group, PARTITIONS),
            &marker(producer_id, control),
        )
        .expect("marker written")
        .expect("a marker is always appended");
    assert!(wait.is_replicated());
}

fn txn_commit(n: &Node, group: &str, producer_id: i64, parts: &[CommitPartition]) {
    let (codes, wait) = n
        .groups
        .commit_txn_offsets(group, &producer(producer_id), parts);
    assert_eq!(codes, vec![None; parts.len()]);
    assert!(wait.expect("appended").is_replicated());
}

fn offset_of(n: &Node, group: &str, topic: &str, partition: i32) -> Option<i64> {
    n.groups
        .fetch_offsets(group, None, Some(vec![(topic.into(), vec![partition])]))
        .expect("fetch")
        .first()
        .and_then(|(_, parts)| parts.first())
        .and_then(|(_, v)| v.as_ref().map(|v| v.offset))
}

fn stable(n: &Node, group: &str, topic: &str, partition: i32) -> FetchedOffset {
    let got = n
        .groups
        .fetch_offsets_stable(
            group,
            None,
            Some(vec![(topic.into(), vec![partition])]),
            true,
        )
        .expect("fetch");
    got.into_iter()
        .next()
        .and_then(|(_, parts)| parts.into_iter().next())
        .map(|(_, v)| v)
        .expect("one partition asked, one answered")
}

fn stable_offset(
    n: &Node,
    group: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, ErrorCode> {
    stable(n, group, topic, partition).map(|v| v.map(|v| v.offset))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offsets_are_pending_until_the_commit_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 2);

    let (codes, wait) = n.groups.commit_txn_offsets(
        "g",
        &producer(1000),
        &[commit("t", 0, 5), commit("t", 1, 6), commit("nope", 0, 1)],
    );
    assert_eq!(
        codes,
        vec![None, None, Some(ErrorCode::UnknownTopicOrPartition)]
    );
    assert!(wait.expect("appended").is_replicated());
    let mut big = commit("t", 0, 7);
    big.metadata = Some("x".repeat(5000));
    let (codes, wait) = n.groups.commit_txn_offsets("g", &producer(1000), &[big]);
    assert_eq!(codes, vec![Some(ErrorCode::OffsetMetadataTooLarge)]);
    assert!(wait.is_none(), "nothing to append");

    // One transactional batch of the producer, no sequence.
    let part = n
        .replicas
        .get(OFFSETS_TOPIC, partition_for("g", PARTITIONS))
        .expect("hosted");
    let bytes = part
        .read_plan_for_follower(0, 1 << 20, true)
        .expect("plan")
        .execute()
        .expect("read");
    let batches =
        kavka_protocol::records::decode_batches_detailed(&bytes, 1 << 20).expect("decode");
    let txn = batches.last().expect("a batch");
    assert!(txn.header.is_transactional() && !txn.header.is_control());
    assert_eq!(txn.header.producer_id, 1000);
    assert_eq!(txn.header.producer_epoch, 0);
    assert_eq!(txn.header.base_sequence, -1);
    assert_eq!(txn.records.len(), 2);

    assert_eq!(offset_of(&n, "g", "t", 0), None, "pending is never fetched");
    assert_eq!(
        n.groups
            .fetch_offsets("g", None, None)
            .expect("fetch")
            .len(),
        0
    );
    assert_eq!(
        stable_offset(&n, "g", "t", 0),
        Err(ErrorCode::UnstableOffsetCommit)
    );
    assert_eq!(
        stable_offset(&n, "g", "t", 9),
        Ok(None),
        "other partitions answer"
    );

    end_txn(&n, "g", 1000, ControlType::Commit);
    assert_eq!(offset_of(&n, "g", "t", 0), Some(5));
    assert_eq!(offset_of(&n, "g", "t", 1), Some(6));
    assert_eq!(stable_offset(&n, "g", "t", 0), Ok(Some(5)));
    // A second marker (a retry) changes nothing.
    end_txn(&n, "g", 1000, ControlType::Commit);
    assert_eq!(offset_of(&n, "g", "t", 0), Some(5));
    n.replicas.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_marker_drops_the_pending_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 2);
    let (codes, _) = n.groups.commit_offsets("g", &admin(), &[commit("t", 0, 3)]);
    assert_eq!(codes, vec![None]);
    txn_commit(&n, "g", 7, &[commit("t", 0, 30), commit("t", 1, 31)]);
    // Another producer's transaction in the same group is not touched by this one's end.
    txn_commit(&n, "g", 8, &[commit("t", 1, 41)]);
    end_txn(&n, "g", 7, ControlType::Abort);
    assert_eq!(offset_of(&n, "g", "t", 0), Some(3));
    assert_eq!(offset_of(&n, "g", "t", 1), None);
    assert_eq!(stable_offset(&n, "g", "t", 0), Ok(Some(3)));
    assert_eq!(
        stable_offset(&n, "g", "t", 1),
        Err(ErrorCode::UnstableOffsetCommit),
        "producer 8 is still open"
    );
    end_txn(&n, "g", 8, ControlType::Commit);
    assert_eq!(offset_of(&n, "g", "t", 1), Some(41));
    n.replicas.shutdown();
}

/// The replay rebuilds what was acknowledged: committed transactions visible, aborted ones
/// gone, open ones still pending (their marker comes later and still works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offsets_replay_with_and_without_markers() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 3);
        txn_commit(&n, "g", 1, &[commit("t", 0, 10)]);
        end_txn(&n, "g", 1, ControlType::Commit);
        txn_commit(&n, "g", 2, &[commit("t", 1, 20)]);
        txn_commit(&n, "g", 3, &[commit("t", 2, 30)]);
        end_txn(&n, "g", 3, ControlType::Abort);
        // A group that only ever had a pending offset exists after the replay.
        txn_commit(&n, "only-pending", 4, &[commit("t", 0, 40)]);
        n.replicas.shutdown();
    }
    let n = start(dir.path());
    assert_eq!(offset_of(&n, "g", "t", 0), Some(10));
    assert_eq!(offset_of(&n, "g", "t", 1), None);
    assert_eq!(offset_of(&n, "g", "t", 2), None);
    assert_eq!(
        stable_offset(&n, "g", "t", 1),
        Err(ErrorCode::UnstableOffsetCommit)
    );
    assert_eq!(stable_offset(&n, "g", "t", 2), Ok(None));
    assert_eq!(
        stable_offset(&n, "only-pending", "t", 0),
        Err(ErrorCode::UnstableOffsetCommit)
    );
    end_txn(&n, "g", 2, ControlType::Commit);
    assert_eq!(offset_of(&n, "g", "t", 1), Some(20));
    end_txn(&n, "only-pending", 4, ControlType::Abort);
    assert_eq!(stable_offset(&n, "only-pending", "t", 0), Ok(None));
    n.replicas.shutdown();
    drop(n);

    let n = start(dir.path());
    assert_eq!(offset_of(&n, "g", "t", 0), Some(10));
    assert_eq!(offset_of(&n, "g", "t", 1), Some(20));
    assert_eq!(stable_offset(&n, "only-pending", "t", 0), Ok(None));
    n.replicas.shutdown();
}

/// Kafka's rule when transactional and plain commits mix: the offset whose record is newer
/// in the log wins, whenever the marker arrives, and the replay agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_record_wins_between_plain_and_txn_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 2);
        // Partition 0: the transaction's record first, then a plain commit.
        txn_commit(&n, "g", 5, &[commit("t", 0, 100)]);
        let (codes, _) = n
            .groups
            .commit_offsets("g", &admin(), &[commit("t", 0, 200)]);
        assert_eq!(codes, vec![None]);
        // Partition 1: a plain commit first, then the transaction's record.
        let (codes, _) = n
            .groups
            .commit_offsets("g", &admin(), &[commit("t", 1, 300)]);
        assert_eq!(codes, vec![None]);
        txn_commit(&n, "g", 5, &[commit("t", 1, 400)]);
        assert_eq!(offset_of(&n, "g", "t", 0), Some(200));
        assert_eq!(offset_of(&n, "g", "t", 1), Some(300));
        end_txn(&n, "g", 5, ControlType::Commit);
        assert_eq!(
            offset_of(&n, "g", "t", 0),
            Some(200),
            "the plain commit is newer"
        );
        assert_eq!(
            offset_of(&n, "g", "t", 1),
            Some(400),
            "the txn record is newer"
        );
        n.replicas.shutdown();
    }
    let n = start(dir.path());
    assert_eq!(offset_of(&n, "g", "t", 0), Some(200));
    assert_eq!(offset_of(&n, "g", "t", 1), Some(400));
    n.replicas.shutdown();
}

/// A static member of a classic group (no MEMBER_ID_REQUIRED round trip).
fn join_static(n: &Node, group: &str, instance: &str) -> (String, i32) {
    let req = |member: &str| JoinRequest {
        member_id: member.into(),
        group_instance_id: Some(instance.into()),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 60_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"sub"))],
        require_known_member_id: true,
    };
    let joined = match n.groups.join_group(group, req("")) {
        Outcome::Wait(mut rx) => rx.try_recv().expect("a lone member joins at once"),
        Outcome::Done(r) => r,
    };
    assert_eq!(joined.error, None);
    let sync = SyncRequest {
        member_id: joined.member_id.clone(),
        group_instance_id: Some(instance.into()),
        generation_id: joined.generation_id,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(joined.member_id.clone(), Bytes::from_static(b"assigned"))],
    };
    match n.groups.sync_group(group, sync) {
        Outcome::Wait(mut rx) => assert_eq!(rx.try_recv().expect("stored").error, None),
        Outcome::Done(r) => assert_eq!(r.error, None),
    }
    (joined.member_id, joined.generation_id)
}

/// TxnOffsetCommit v3+ names the member: checked like OffsetCommit. Without one (v0-2,
/// member id empty and generation -1) the producer's commit is accepted even into an active
/// group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_commits_check_the_member_like_offset_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 1);
    let (member, generation) = join_one(&n, "g");
    let as_member = |member_id: &str, generation_id: i32, instance: Option<&str>| TxnCommitter {
        producer_id: 9,
        producer_epoch: 0,
        generation_id,
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
    };
    let one = [commit("t", 0, 1)];
    let code = |who: &TxnCommitter| n.groups.commit_txn_offsets("g", who, &one).0[0];
    assert_eq!(
        code(&as_member(&member, generation + 1, None)),
        Some(ErrorCode::IllegalGeneration)
    );
    assert_eq!(
        code(&as_member("someone-else", generation, None)),
        Some(ErrorCode::UnknownMemberId)
    );
    assert_eq!(
        code(&as_member("", generation, None)),
        Some(ErrorCode::UnknownMemberId)
    );
    assert_eq!(code(&as_member(&member, generation, None)), None);
    assert_eq!(code(&producer(9)), None, "v0-2: no member named");
    // No such group: a generation means the member's group is gone.
    assert_eq!(
        n.groups
            .commit_txn_offsets("gone", &as_member("m", 1, None), &one)
            .0,
        vec![Some(ErrorCode::IllegalGeneration)]
    );
    assert_eq!(
        n.groups
            .commit_txn_offsets(
                "g",
                &TxnCommitter {
                    producer_id: -1,
                    ..producer(9)
                },
                &one
            )
            .0,
        vec![Some(ErrorCode::InvalidProducerIdMapping)]
    );

    let (static_member, static_generation) = join_static(&n, "s", "instance-1");
    let code = |who: &TxnCommitter| n.groups.commit_txn_offsets("s", who, &one).0[0];
    assert_eq!(
        code(&as_member("old-id", static_generation, Some("instance-1"))),
        Some(ErrorCode::FencedInstanceId)
    );
    assert_eq!(
        code(&as_member(
            &static_member,
            static_generation,
            Some("instance-1")
        )),
        None
    );
    n.replicas.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_need_a_loaded_shard_led_here() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 1);
        txn_commit(&n, "g", 11, &[commit("t", 0, 5)]);
        n.replicas.shutdown();
    }
    let n = start_with(dir.path(), false);
    let p = partition_for("g", PARTITIONS);
    assert_eq!(
        n.groups
            .write_txn_marker(p, &marker(11, ControlType::Commit))
            .err(),
        Some(ErrorCode::CoordinatorLoadInProgress)
    );
    assert_eq!(
        n.groups
            .commit_txn_offsets("g", &producer(11), &[commit("t", 0, 6)])
            .0,
        vec![Some(ErrorCode::CoordinatorLoadInProgress)]
    );
    assert_eq!(
        n.groups
            .write_txn_marker(PARTITIONS, &marker(11, ControlType::Commit))
            .err(),
        Some(ErrorCode::NotCoordinator)
    );
    n.groups.load_all();
    end_txn(&n, "g", 11, ControlType::Commit);
    assert_eq!(offset_of(&n, "g", "t", 0), Some(5));
    n.replicas.shutdown();
}

/// DeleteGroups takes a group's pending transactional offsets too (tombstones, as Kafka's
/// coordinator writes); a marker arriving afterwards brings nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_drops_its_pending_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path());
        n.groups.ensure_ready().expect("ready");
        create_topic(&n, "t", 2);
        let (codes, _) = n.groups.commit_offsets("g", &admin(), &[commit("t", 0, 1)]);
        assert_eq!(codes, vec![None]);
        txn_commit(&n, "g", 21, &[commit("t", 0, 2), commit("t", 1, 3)]);
        assert!(n.groups.delete_group("g").expect("deleted").is_some());
        end_txn(&n, "g", 21, ControlType::Commit);
        assert_eq!(offset_of(&n, "g", "t", 0), None);
        assert_eq!(stable_offset(&n, "g", "t", 1), Ok(None));
        assert!(!n.groups.describe_group("g").found);
        n.replicas.shutdown();
    }
    let n = start(dir.path());
    assert_eq!(
        n.groups
            .fetch_offsets("g", None, None)
            .expect("fetch")
            .len(),
        0
    );
    assert_eq!(stable_offset(&n, "g", "t", 1), Ok(None));
    n.replicas.shutdown();
}

/// Expiry never removes an offset a transaction is about to replace, nor a group with an
/// open transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_spares_open_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 2);
    // OffsetCommit v2-4's own retention: 1 ms.
    let short = Committer {
        retention_time_ms: 1,
        ..admin()
    };
    let (codes, _) = n
        .groups
        .commit_offsets("g", &short, &[commit("t", 0, 1), commit("t", 1, 2)]);
    assert_eq!(codes, vec![None, None]);
    txn_commit(&n, "g", 31, &[commit("t", 0, 10)]);
    txn_commit(&n, "pending-only", 32, &[commit("t", 0, 20)]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(n.groups.expire_offsets(), 1, "only t-1 of g expires");
    assert_eq!(offset_of(&n, "g", "t", 0), Some(1));
    assert_eq!(offset_of(&n, "g", "t", 1), None);
    assert_eq!(
        stable_offset(&n, "pending-only", "t", 0),
        Err(ErrorCode::UnstableOffsetCommit),
        "the group stays while its transaction is open"
    );
    end_txn(&n, "g", 31, ControlType::Commit);
    end_txn(&n, "pending-only", 32, ControlType::Commit);
    assert_eq!(offset_of(&n, "g", "t", 0), Some(10));
    assert_eq!(offset_of(&n, "pending-only", "t", 0), Some(20));
    n.replicas.shutdown();
}

/// A zombie producer (an older epoch than the partition has seen from its id) is told so,
/// as Kafka's coordinator does; its offsets never become pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_producer_epoch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.groups.ensure_ready().expect("ready");
    create_topic(&n, "t", 1);
    let at = |epoch: i16| TxnCommitter {
        producer_epoch: epoch,
        ..producer(51)
    };
    let (codes, _) = n
        .groups
        .commit_txn_offsets("g", &at(1), &[commit("t", 0, 5)]);
    assert_eq!(codes, vec![None]);
    let (codes, wait) = n
        .groups
        .commit_txn_offsets("g", &at(0), &[commit("t", 0, 6)]);
    assert_eq!(codes, vec![Some(ErrorCode::InvalidProducerEpoch)]);
    assert!(wait.is_none());
    // The same epoch again (another commit of the transaction) is no duplicate.
    let (codes, _) = n
        .groups
        .commit_txn_offsets("g", &at(1), &[commit("t", 0, 7)]);
    assert_eq!(codes, vec![None]);
    let wait = n
        .groups
        .write_txn_marker(
            partition_for("g", PARTITIONS),
            &TxnMarker {
                producer_epoch: 1,
                ..marker(51, ControlType::Commit)
            },
        )
        .expect("marker");
    assert!(wait.is_some());
    assert_eq!(offset_of(&n, "g", "t", 0), Some(7));
    n.replicas.shutdown();
}
