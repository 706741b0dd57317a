//! The transaction coordinator against real logs on a single node: what it acknowledged
//! comes back after a restart, decided transactions complete, stuck ones abort.

use super::coordinator::{MarkerWriter, StillCoordinator, TransactionCoordinator};
use super::markers::{MarkerError, MarkerRequest};
use super::state::{TxnError, TxnState};
use crate::config::BrokerConfig;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::ReplicaManager;
use futures_util::future::BoxFuture;
use kavka_metadata::{Controller, CreateTopicSpec, TopicDefaults};
use kavka_protocol::records::ControlType;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records marker requests; fails them while `failing` is set, and answers
/// NOT_COORDINATOR once `stopped` (a node the test is done with).
#[derive(Default)]
struct FakeMarkers {
    written: Mutex<Vec<MarkerRequest>>,
    failing: AtomicBool,
    stopped: AtomicBool,
}

impl MarkerWriter for FakeMarkers {
    fn write_markers(
        self: Arc<Self>,
        req: MarkerRequest,
        still_coordinator: StillCoordinator,
    ) -> BoxFuture<'static, Result<(), MarkerError>> {
        Box::pin(async move {
            if !still_coordinator() || self.stopped.load(Ordering::SeqCst) {
                return Err(MarkerError::NotCoordinator);
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(MarkerError::Unavailable);
            }
            self.written.lock().unwrap().push(req);
            Ok(())
        })
    }
}

impl FakeMarkers {
    fn written(&self) -> Vec<MarkerRequest> {
        self.written.lock().unwrap().clone()
    }
}

struct Node {
    controller: Arc<Controller>,
    txns: Arc<TransactionCoordinator>,
    markers: Arc<FakeMarkers>,
}

fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    start_with(dir, extra, Arc::new(FakeMarkers::default()))
}

fn start_with(dir: &std::path::Path, extra: &[&str], markers: Arc<FakeMarkers>) -> Node {
    let mut overrides = vec![
        format!("log.dirs={}", dir.join("logs").display()),
        format!("metadata.log.dir={}", dir.join("meta").display()),
        "transaction.state.log.num.partitions=3".to_string(),
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
    let txns = Arc::new(TransactionCoordinator::new(
        config.txn.clone(),
        replicas,
        controller.clone(),
        Arc::new(ProducerIdManager::new(config.node_id)),
    ));
    txns.set_marker_writer(markers.clone());
    txns.follow_leadership();
    Node {
        controller,
        txns,
        markers,
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

/// Waits until every shard is loaded (ListTransactions stops answering LOAD_IN_PROGRESS).
async fn loaded(n: &Node) {
    for _ in 0..500 {
        if n.txns.list(&[], &[], -1).is_ok() && n.txns.partition_of("x").is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the coordinator never loaded");
}

async fn ready(n: &Node) {
    let txns = n.txns.clone();
    tokio::task::spawn_blocking(move || txns.ensure_ready())
        .await
        .unwrap()
        .expect("ready");
    loaded(n).await;
}

/// Waits until `id` reaches `state`.
async fn reaches(n: &Node, id: &str, state: TxnState) {
    for _ in 0..500 {
        if n.txns.describe(id).is_ok_and(|m| m.state == state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{id} never reached {state:?}: {:?}",
        n.txns.describe(id).map(|m| m.state)
    );
}

fn parts(ps: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
    ps.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_the_topic_and_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path(), &[]);
    // No __transaction_state yet: the client is sent to FindCoordinator, which creates it.
    assert_eq!(
        n.txns.init_producer_id("tx", 60_000, None).await,
        Err(TxnError::NotCoordinator)
    );
    ready(&n).await;
    assert_eq!(
        n.txns.init_producer_id("tx", 900_001, None).await,
        Err(TxnError::InvalidTransactionTimeout)
    );
    assert_eq!(
        n.txns.init_producer_id("tx", 0, None).await,
        Err(TxnError::InvalidTransactionTimeout)
    );
    assert_eq!(
        n.txns.init_producer_id("", 1000, None).await,
        Err(TxnError::InvalidRequest)
    );
    assert_eq!(
        n.txns.end_txn("unknown", 1, 0, true).await,
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        n.txns
            .add_partitions("unknown", 1, 0, parts(&[("t", 0)]))
            .await,
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        n.txns
            .verify_partitions("unknown", 1, 0, &[("t".into(), 0)]),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        n.txns.describe("unknown").map(|m| m.state),
        Err(TxnError::TransactionalIdNotFound)
    );
    let node = n.txns.coordinator_for("tx").expect("coordinator");
    assert_eq!((node.node_id, node.port), (1, 9092));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_path_writes_markers_then_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path(), &[]);
    ready(&n).await;
    create_topic(&n, "t", 2);
    let (pid, epoch) = n.txns.init_producer_id("tx", 60_000, None).await.unwrap();
    assert_eq!(epoch, 0);
    let m = n.txns.describe("tx").unwrap();
    assert_eq!(
        (m.state, m.producer_id, m.timeout_ms),
        (TxnState::Empty, pid, 60_000)
    );
    // EndTxn with nothing started is an invalid state.
    assert_eq!(
        n.txns.end_txn("tx", pid, epoch, true).await,
        Err(TxnError::InvalidTxnState)
    );

    n.txns
        .add_partitions("tx", pid, epoch, parts(&[("t", 0)]))
        .await
        .unwrap();
    n.txns
        .add_partitions("tx", pid, epoch, parts(&[("t", 1), ("t", 0)]))
        .await
        .unwrap();
    let m = n.txns.describe("tx").unwrap();
    assert_eq!(m.state, TxnState::Ongoing);
    assert_eq!(m.partitions, parts(&[("t", 0), ("t", 1)]));
    assert!(m.start_timestamp > 0);
    assert_eq!(
        n.txns
            .verify_partitions("tx", pid, epoch, &[("t".into(), 1), ("u".into(), 0)]),
        Ok(vec![true, false])
    );
    assert_eq!(
        n.txns
            .add_partitions("tx", pid + 1, epoch, parts(&[("t", 0)]))
            .await,
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(
        n.txns
            .add_partitions("tx", pid, epoch + 1, parts(&[("t", 0)]))
            .await,
        Err(TxnError::ProducerFenced)
    );
    let listed = n.txns.list(&[TxnState::Ongoing], &[], -1).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transactional_id, "tx");
    assert!(n.txns.list(&[TxnState::Empty], &[], -1).unwrap().is_empty());
    assert!(n.txns.list(&[], &[pid + 1], -1).unwrap().is_empty());
    // The duration filter keeps transactions running longer than it.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(n.txns.list(&[], &[pid], 0).unwrap().len(), 1);
    assert!(n.txns.list(&[], &[], 3_600_000).unwrap().is_empty());

    n.txns.end_txn("tx", pid, epoch, true).await.unwrap();
    reaches(&n, "tx", TxnState::CompleteCommit).await;
    let written = n.markers.written();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].control, ControlType::Commit);
    assert_eq!(
        (written[0].producer_id, written[0].producer_epoch),
        (pid, epoch)
    );
    assert_eq!(
        written[0].partitions,
        vec![("t".to_string(), 0), ("t".to_string(), 1)]
    );
    assert!(n.txns.describe("tx").unwrap().partitions.is_empty());
    // A retried EndTxn of the same outcome succeeds; the other outcome is invalid.
    n.txns.end_txn("tx", pid, epoch, true).await.unwrap();
    assert_eq!(
        n.txns.end_txn("tx", pid, epoch, false).await,
        Err(TxnError::InvalidTxnState)
    );
    assert_eq!(n.markers.written().len(), 1, "no second round of markers");

    // The next transaction aborts.
    n.txns
        .add_partitions("tx", pid, epoch, parts(&[("t", 1)]))
        .await
        .unwrap();
    n.txns.end_txn("tx", pid, epoch, false).await.unwrap();
    reaches(&n, "tx", TxnState::CompleteAbort).await;
    let written = n.markers.written();
    assert_eq!(written.len(), 2);
    assert_eq!(written[1].control, ControlType::Abort);
    assert_eq!(written[1].partitions, vec![("t".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_over_an_ongoing_transaction_fences_the_zombie() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path(), &[]);
    ready(&n).await;
    create_topic(&n, "t", 1);
    let (pid, epoch) = n.txns.init_producer_id("tx", 60_000, None).await.unwrap();
    n.txns
        .add_partitions("tx", pid, epoch, parts(&[("t", 0)]))
        .await
        .unwrap();
    // A new producer with the same id: the ongoing transaction is aborted first.
    assert_eq!(
        n.txns.init_producer_id("tx", 60_000, None).await,
        Err(TxnError::ConcurrentTransactions)
    );
    reaches(&n, "tx", TxnState::CompleteAbort).await;
    let written = n.markers.written();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].control, ControlType::Abort);
    assert_eq!(
        written[0].producer_epoch,
        epoch + 1,
        "aborted with the fencing epoch"
    );
    // The retry gets the next epoch.
    let (pid2, epoch2) = n.txns.init_producer_id("tx", 60_000, None).await.unwrap();
    assert_eq!((pid2, epoch2), (pid, epoch + 2));
    // The zombie is fenced everywhere.
    assert_eq!(
        n.txns
            .add_partitions("tx", pid, epoch, parts(&[("t", 0)]))
            .await,
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        n.txns.end_txn("tx", pid, epoch, true).await,
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(
        n.txns
            .verify_partitions("tx", pid, epoch, &[("t".into(), 0)]),
        Err(TxnError::ProducerFenced)
    );
    // KIP-360: the new producer re-initialises with its epoch and gets the next one; a
    // retry of that gets the same answer.
    let (_, epoch3) = n
        .txns
        .init_producer_id("tx", 60_000, Some((pid2, epoch2)))
        .await
        .unwrap();
    assert_eq!(epoch3, epoch2 + 1);
    assert_eq!(
        n.txns
            .init_producer_id("tx", 60_000, Some((pid2, epoch2)))
            .await
            .unwrap(),
        (pid2, epoch3)
    );
    assert_eq!(
        n.txns.init_producer_id("tx", 60_000, Some((pid2, 0))).await,
        Err(TxnError::ProducerFenced)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (before_done, before_ongoing, before_empty) = {
        let n = start(dir.path(), &[]);
        ready(&n).await;
        create_topic(&n, "t", 3);
        let (p1, e1) = n.txns.init_producer_id("done", 60_000, None).await.unwrap();
        n.txns
            .add_partitions("done", p1, e1, parts(&[("t", 0)]))
            .await
            .unwrap();
        n.txns.end_txn("done", p1, e1, true).await.unwrap();
        reaches(&n, "done", TxnState::CompleteCommit).await;
        let (p2, e2) = n
            .txns
            .init_producer_id("ongoing", 45_000, None)
            .await
            .unwrap();
        n.txns
            .add_partitions("ongoing", p2, e2, parts(&[("t", 1), ("t", 2)]))
            .await
            .unwrap();
        n.txns.init_producer_id("empty", 1000, None).await.unwrap();
        n.txns.init_producer_id("empty", 2000, None).await.unwrap();
        (
            n.txns.describe("done").unwrap(),
            n.txns.describe("ongoing").unwrap(),
            n.txns.describe("empty").unwrap(),
        )
    };
    let n = start(dir.path(), &[]);
    loaded(&n).await;
    let same = |a: &super::state::TxnMetadata, b: &super::state::TxnMetadata| {
        assert_eq!(
            (
                a.producer_id,
                a.producer_epoch,
                a.timeout_ms,
                a.state,
                &a.partitions,
                a.start_timestamp,
                a.last_update_timestamp
            ),
            (
                b.producer_id,
                b.producer_epoch,
                b.timeout_ms,
                b.state,
                &b.partitions,
                b.start_timestamp,
                b.last_update_timestamp
            )
        );
    };
    same(&n.txns.describe("done").unwrap(), &before_done);
    same(&n.txns.describe("ongoing").unwrap(), &before_ongoing);
    same(&n.txns.describe("empty").unwrap(), &before_empty);
    assert_eq!(before_empty.producer_epoch, 1);
    assert_eq!(before_empty.timeout_ms, 2000);
    // The reloaded transaction goes on: its producer can commit it.
    let (p, e) = (before_ongoing.producer_id, before_ongoing.producer_epoch);
    n.txns.end_txn("ongoing", p, e, true).await.unwrap();
    reaches(&n, "ongoing", TxnState::CompleteCommit).await;
    // Producer ids are not handed out twice across the restart.
    let (p3, _) = n.txns.init_producer_id("new", 60_000, None).await.unwrap();
    assert!(p3 > before_ongoing.producer_id.max(before_done.producer_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decided_transaction_completes_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pid, epoch) = {
        let markers = Arc::new(FakeMarkers::default());
        markers.failing.store(true, Ordering::SeqCst);
        let n = start_with(dir.path(), &[], markers);
        ready(&n).await;
        create_topic(&n, "t", 1);
        let (pid, epoch) = n.txns.init_producer_id("tx", 60_000, None).await.unwrap();
        n.txns
            .add_partitions("tx", pid, epoch, parts(&[("t", 0)]))
            .await
            .unwrap();
        n.txns.end_txn("tx", pid, epoch, true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Markers cannot be written: it stays decided, and the producer must wait.
        assert_eq!(
            n.txns.describe("tx").unwrap().state,
            TxnState::PrepareCommit
        );
        assert_eq!(
            n.txns
                .add_partitions("tx", pid, epoch, parts(&[("t", 0)]))
                .await,
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            n.txns.end_txn("tx", pid, epoch, true).await,
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            n.txns.init_producer_id("tx", 60_000, None).await,
            Err(TxnError::ConcurrentTransactions)
        );
        // This node goes away: its retries end.
        n.markers.stopped.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        (pid, epoch)
    };
    // The new coordinator finds the decision in the log and writes the markers.
    let n = start(dir.path(), &[]);
    loaded(&n).await;
    reaches(&n, "tx", TxnState::CompleteCommit).await;
    let written = n.markers.written();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].control, ControlType::Commit);
    assert_eq!(
        (written[0].producer_id, written[0].producer_epoch),
        (pid, epoch)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ongoing_transaction_times_out_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pid, epoch) = {
        let n = start(dir.path(), &[]);
        ready(&n).await;
        create_topic(&n, "t", 1);
        let (pid, epoch) = n.txns.init_producer_id("tx", 300, None).await.unwrap();
        n.txns
            .add_partitions("tx", pid, epoch, parts(&[("t", 0)]))
            .await
            .unwrap();
        assert_eq!(n.txns.abort_timed_out().await, 0, "not yet");
        (pid, epoch)
    };
    let n = start(dir.path(), &[]);
    loaded(&n).await;
    assert_eq!(n.txns.describe("tx").unwrap().state, TxnState::Ongoing);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(n.txns.abort_timed_out().await, 1);
    reaches(&n, "tx", TxnState::CompleteAbort).await;
    let m = n.txns.describe("tx").unwrap();
    assert_eq!(m.producer_epoch, epoch + 1, "the timeout bumps the epoch");
    let written = n.markers.written();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].control, ControlType::Abort);
    assert_eq!(written[0].producer_epoch, epoch + 1);
    // The stuck producer is fenced.
    assert_eq!(
        n.txns.end_txn("tx", pid, epoch, true).await,
        Err(TxnError::ProducerFenced)
    );
    assert_eq!(n.txns.abort_timed_out().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ids_expire_with_a_tombstone() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let n = start(dir.path(), &["transactional.id.expiration.ms=1"]);
        ready(&n).await;
        create_topic(&n, "t", 1);
        let (pid, epoch) = n.txns.init_producer_id("idle", 60_000, None).await.unwrap();
        let (p2, e2) = n.txns.init_producer_id("busy", 60_000, None).await.unwrap();
        n.txns
            .add_partitions("busy", p2, e2, parts(&[("t", 0)]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(n.txns.remove_expired().await, 1, "only the idle id");
        assert_eq!(
            n.txns.describe("idle").map(|m| m.state),
            Err(TxnError::TransactionalIdNotFound)
        );
        assert_eq!(
            n.txns.end_txn("idle", pid, epoch, true).await,
            Err(TxnError::InvalidProducerIdMapping)
        );
    }
    let n = start(dir.path(), &[]);
    loaded(&n).await;
    assert_eq!(
        n.txns.describe("idle").map(|m| m.state),
        Err(TxnError::TransactionalIdNotFound)
    );
    assert_eq!(n.txns.describe("busy").unwrap().state, TxnState::Ongoing);
}

/// `image` with every `__transaction_state` partition led by `leader` at `epoch_bump` more
/// than now, as a later image.
fn with_txn_leader(
    image: &kavka_metadata::MetadataImage,
    leader: i32,
    epoch_bump: i32,
    offset_bump: i64,
) -> kavka_metadata::MetadataImage {
    let mut image = image.clone();
    image.offset += offset_bump;
    let topic = image.topics.get_mut(super::TXN_TOPIC).expect("txn topic");
    let t = Arc::make_mut(topic);
    for p in t.partitions.values_mut() {
        p.leader = leader;
        p.leader_epoch += epoch_bump;
    }
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_away_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let markers = Arc::new(FakeMarkers::default());
    markers.failing.store(true, Ordering::SeqCst);
    let n = start_with(dir.path(), &[], markers);
    ready(&n).await;
    create_topic(&n, "t", 1);
    let (pid, epoch) = n.txns.init_producer_id("tx", 60_000, None).await.unwrap();
    n.txns
        .add_partitions("tx", pid, epoch, parts(&[("t", 0)]))
        .await
        .unwrap();
    n.txns.end_txn("tx", pid, epoch, true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        n.txns.describe("tx").unwrap().state,
        TxnState::PrepareCommit
    );

    // Another broker leads now: this one forgets its ids and sends clients away.
    let base = n.controller.image();
    n.txns.apply_leadership(&with_txn_leader(&base, 2, 1, 1));
    assert_eq!(
        n.txns.describe("tx").map(|m| m.state),
        Err(TxnError::NotCoordinator)
    );
    assert_eq!(
        n.txns.init_producer_id("tx", 60_000, None).await,
        Err(TxnError::NotCoordinator)
    );
    assert!(n.txns.list(&[], &[], -1).unwrap().is_empty());
    // An older image cannot undo the newer one.
    n.txns.apply_leadership(&base);
    assert_eq!(
        n.txns.describe("tx").map(|m| m.state),
        Err(TxnError::NotCoordinator)
    );

    // Leadership comes back at a newer epoch: the log is replayed and the decided
    // transaction completes, its markers carrying the new coordinator epoch.
    n.markers.failing.store(false, Ordering::SeqCst);
    let back = with_txn_leader(&base, 1, 2, 2);
    let new_epoch = back.topic(super::TXN_TOPIC).unwrap().partitions
        [&n.txns.partition_of("tx").unwrap()]
        .leader_epoch;
    n.txns.apply_leadership(&back);
    loaded(&n).await;
    reaches(&n, "tx", TxnState::CompleteCommit).await;
    let written = n.markers.written();
    assert_eq!(
        written.len(),
        1,
        "only the new coordinator writes the markers"
    );
    assert_eq!(written[0].coordinator_epoch, new_epoch);
    assert_eq!(
        (written[0].producer_id, written[0].producer_epoch),
        (pid, epoch)
    );
}
