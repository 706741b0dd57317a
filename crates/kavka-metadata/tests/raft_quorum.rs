//! The Raft metadata quorum, in process: election, replication, partitions, restarts from
//! disk and catch-up by snapshot. Every wait is bounded in time; no assertion depends on timing.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kavka_metadata::raft::network::SplitMix64;
use kavka_metadata::raft::{
    InProcessNetwork, MetadataBatch, RaftMetadataError, RaftMetadataLog, RaftMetadataOptions,
    RaftNodeId,
};
use kavka_metadata::{MetadataImage, MetadataRecord};
use uuid::Uuid;

/// Upper bound of any single wait in these tests (elections on a loaded machine included).
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn options() -> RaftMetadataOptions {
    RaftMetadataOptions {
        cluster_name: "test".to_owned(),
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_after_entries: 10_000,
        entries_kept_after_snapshot: 1000,
    }
}

fn topic(name: &str, id: u128) -> Vec<MetadataRecord> {
    vec![
        MetadataRecord::Topic {
            name: name.to_owned(),
            topic_id: Uuid::from_u128(id),
        },
        MetadataRecord::Partition {
            topic_id: Uuid::from_u128(id),
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        },
    ]
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

struct Cluster {
    net: InProcessNetwork,
    root: tempfile::TempDir,
    options: RaftMetadataOptions,
    ids: Vec<RaftNodeId>,
    nodes: BTreeMap<RaftNodeId, RaftMetadataLog>,
}

impl Cluster {
    /// Starts members 1..=n and bootstraps the quorum from member 1.
    async fn start(n: u64, options: RaftMetadataOptions) -> Cluster {
        let mut cluster = Cluster {
            net: InProcessNetwork::new(),
            root: tempfile::tempdir().expect("temp dir"),
            options,
            ids: (1..=n).collect(),
            nodes: BTreeMap::new(),
        };
        for id in cluster.ids.clone() {
            cluster.start_node(id).await;
        }
        let voters = cluster
            .ids
            .iter()
            .map(|id| (*id, format!("127.0.0.1:{}", 9000 + id)))
            .collect();
        cluster.node(1).bootstrap(&voters).await.expect("bootstrap");
        cluster
    }

    fn dir(&self, id: RaftNodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    async fn start_node(&mut self, id: RaftNodeId) {
        let node =
            RaftMetadataLog::start(id, &self.dir(id), &self.options, Arc::new(self.net.clone()))
                .await
                .expect("start node");
        self.net.register(id, node.raft().clone());
        self.nodes.insert(id, node);
    }

    async fn stop_node(&mut self, id: RaftNodeId) {
        self.net.unregister(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await.expect("shutdown");
        }
    }

    fn node(&self, id: RaftNodeId) -> &RaftMetadataLog {
        &self.nodes[&id]
    }

    /// Cuts every link between `id` and the other members (registered or not).
    fn cut_off(&self, id: RaftNodeId) {
        for other in self.ids.iter().copied().filter(|o| *o != id) {
            self.net.cut(id, other);
            self.net.cut(other, id);
        }
    }

    /// Waits until every member in `among` names the same leader, itself in `among` and not
    /// `not`, and that leader believes it leads.
    async fn wait_leader(&self, among: &[RaftNodeId], not: Option<RaftNodeId>) -> RaftNodeId {
        bounded("a leader", async {
            loop {
                let leaders: Vec<_> = among.iter().map(|id| self.node(*id).leader_id()).collect();
                if let Some(Some(leader)) = leaders.first().copied() {
                    if leaders.iter().all(|l| *l == Some(leader))
                        && among.contains(&leader)
                        && Some(leader) != not
                        && self.node(leader).is_leader()
                    {
                        return leader;
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await
    }

    /// Waits until each member in `ids` has applied up to `offset`, and returns their images.
    async fn wait_offset(&self, ids: &[RaftNodeId], offset: i64) -> Vec<Arc<MetadataImage>> {
        let mut images = Vec::new();
        for id in ids {
            let mut rx = self.node(*id).subscribe();
            let image = bounded("a member to apply the committed records", async {
                rx.wait_for(|image| image.offset >= offset)
                    .await
                    .map(|image| Arc::clone(&image))
                    .expect("image channel open")
            })
            .await;
            images.push(image);
        }
        images
    }

    /// Proposes through whichever member leads, retrying while leadership moves.
    async fn propose_anywhere(&self, records: Vec<MetadataRecord>) -> i64 {
        bounded("a proposal to commit", async {
            loop {
                for node in self.nodes.values() {
                    if node.is_leader() {
                        if let Ok(offset) = node.propose(records.clone()).await {
                            return offset;
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await
    }

    async fn shutdown(mut self) {
        for id in self.ids.clone() {
            self.stop_node(id).await;
        }
    }
}

fn assert_all_equal(images: &[Arc<MetadataImage>]) {
    for image in images {
        assert_eq!(**image, *images[0], "committed images diverged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_a_leader_and_converge() {
    let cluster = Cluster::start(3, options()).await;
    let leader = cluster.wait_leader(&[1, 2, 3], None).await;
    let mut last = -1;
    for i in 0..10u128 {
        let offset = cluster
            .node(leader)
            .propose(topic(&format!("t{i}"), i + 1))
            .await
            .expect("leader accepts the proposal");
        assert_eq!(
            offset,
            last + 2,
            "each batch of two records advances the offset by two"
        );
        last = offset;
    }
    assert_eq!(cluster.node(leader).image().offset, last);
    let images = cluster.wait_offset(&[1, 2, 3], last).await;
    assert_all_equal(&images);
    assert_eq!(images[0].topics.len(), 10);
    assert!(images[0].topic("t9").is_some());

    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    match cluster.node(follower).propose(topic("refused", 99)).await {
        Err(RaftMetadataError::NotLeader { leader_id }) => assert_eq!(leader_id, Some(leader)),
        other => panic!("a follower must refuse proposals, got {other:?}"),
    }
    // An empty proposal commits nothing.
    assert_eq!(
        cluster.node(leader).propose(Vec::new()).await.ok(),
        Some(last)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_is_replaced_and_its_uncommitted_tail_discarded() {
    let cluster = Cluster::start(3, options()).await;
    let old = cluster.wait_leader(&[1, 2, 3], None).await;
    let committed = cluster
        .node(old)
        .propose(topic("before", 1))
        .await
        .expect("commit");
    cluster.wait_offset(&[1, 2, 3], committed).await;

    cluster.net.isolate(old);
    // The old leader still accepts this proposal, but can never commit it.
    let raft = cluster.node(old).raft().clone();
    let orphan = tokio::spawn(async move {
        raft.client_write(MetadataBatch {
            records: topic("orphan", 2),
        })
        .await
    });

    let rest: Vec<RaftNodeId> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    let new = cluster.wait_leader(&rest, Some(old)).await;
    let mut last = committed;
    for i in 0..5u128 {
        last = cluster
            .node(new)
            .propose(topic(&format!("after{i}"), 10 + i))
            .await
            .expect("the majority side commits");
    }
    cluster.wait_offset(&rest, last).await;
    assert!(
        cluster.node(old).image().offset < last,
        "the isolated leader cannot apply"
    );

    cluster.net.heal();
    let images = cluster.wait_offset(&[1, 2, 3], last).await;
    assert_all_equal(&images);
    assert!(
        images[0].topic("orphan").is_none(),
        "an uncommitted entry survived"
    );
    assert!(images[0].topic("after4").is_some());
    cluster.wait_leader(&[1, 2, 3], None).await;

    // The orphaned proposal must never report success.
    let result = bounded("the orphaned proposal to resolve", orphan).await;
    assert!(
        !matches!(result, Ok(Ok(_))),
        "an overwritten entry was acknowledged"
    );

    // The old leader's log now matches: its next proposals as a follower are refused and
    // the cluster keeps committing.
    let next = cluster.propose_anywhere(topic("later", 20)).await;
    assert_all_equal(&cluster.wait_offset(&[1, 2, 3], next).await);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_restarted_from_disk_recover_the_committed_image() {
    let mut cluster = Cluster::start(3, options()).await;
    let leader = cluster.wait_leader(&[1, 2, 3], None).await;
    let mut last = -1;
    for i in 0..5u128 {
        last = cluster
            .node(leader)
            .propose(topic(&format!("t{i}"), i + 1))
            .await
            .expect("commit");
    }
    let before = cluster.wait_offset(&[leader], last).await.remove(0);

    // Alone (every link cut), the restarted leader rebuilds its image from its disk only.
    cluster.stop_node(leader).await;
    cluster.cut_off(leader);
    cluster.start_node(leader).await;
    let recovered = cluster.wait_offset(&[leader], last).await.remove(0);
    assert_eq!(*recovered, *before);

    // Every member restarted at once: the quorum re-forms from disk and keeps committing.
    cluster.net.heal();
    for id in [1, 2, 3] {
        cluster.stop_node(id).await;
    }
    for id in [1, 2, 3] {
        cluster.start_node(id).await;
    }
    cluster.wait_leader(&[1, 2, 3], None).await;
    let next = cluster.propose_anywhere(topic("after-restart", 50)).await;
    assert_eq!(
        next,
        last + 2,
        "offsets continue where the committed log ended"
    );
    let images = cluster.wait_offset(&[1, 2, 3], next).await;
    assert_all_equal(&images);
    assert!(images[0].topic("t4").is_some() && images[0].topic("after-restart").is_some());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_catch_up_a_lagging_member() {
    let opts = RaftMetadataOptions {
        snapshot_after_entries: 5,
        entries_kept_after_snapshot: 0,
        ..options()
    };
    let mut cluster = Cluster::start(3, opts).await;
    let leader = cluster.wait_leader(&[1, 2, 3], None).await;
    let lagging = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    let lagging_last = cluster
        .node(lagging)
        .raft()
        .metrics()
        .borrow()
        .last_log_index;
    cluster.net.isolate(lagging);

    let mut last = -1;
    for i in 0..30u128 {
        last = cluster
            .node(leader)
            .propose(topic(&format!("t{i}"), i + 1))
            .await
            .expect("commit with two of three");
    }
    // The leader snapshots and purges past everything the lagging member has.
    let mut metrics = cluster.node(leader).raft().metrics();
    let purged = bounded("the leader to purge its log", async {
        metrics
            .wait_for(|m| {
                m.snapshot.is_some() && m.purged.map(|p| p.index) > lagging_last.map(|i| i + 1)
            })
            .await
            .map(|m| m.purged)
            .expect("metrics channel open")
    })
    .await;
    assert!(purged.is_some());
    let entries = cluster
        .node(leader)
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0)
        - purged.map(|p| p.index).unwrap_or(0);
    assert!(
        entries < 30,
        "the leader's log holds {entries} entries after purging"
    );

    cluster.net.heal();
    let images = cluster.wait_offset(&[1, 2, 3], last).await;
    assert_all_equal(&images);
    let snapshot = cluster.node(lagging).raft().metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| Some(s.index) > lagging_last),
        "the lagging member was not caught up by a snapshot: {snapshot:?}"
    );

    // The installed snapshot is durable: a restart recovers the image from it.
    cluster.stop_node(lagging).await;
    cluster.cut_off(lagging);
    cluster.start_node(lagging).await;
    let recovered = cluster.wait_offset(&[lagging], last).await.remove(0);
    assert_eq!(*recovered, *images[0]);
    cluster.shutdown().await;
}

/// Random message loss, partitions and restarts from a seed: whatever happens, two members
/// never apply different images at the same offset, and every acknowledged proposal survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_never_make_committed_images_diverge() {
    for seed in [7u64, 42] {
        run_seeded_schedule(seed).await;
    }
}

async fn run_seeded_schedule(seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let mut cluster = Cluster::start(3, options()).await;
    cluster.wait_leader(&[1, 2, 3], None).await;
    cluster.net.set_loss(seed, 100);

    // Every image any member publishes, by offset.
    let seen: Arc<Mutex<BTreeMap<i64, Arc<MetadataImage>>>> = Arc::default();
    let mut watchers = Vec::new();
    let watch = |node: &RaftMetadataLog, seen: Arc<Mutex<BTreeMap<i64, Arc<MetadataImage>>>>| {
        let mut rx = node.subscribe();
        tokio::spawn(async move {
            loop {
                let image = Arc::clone(&rx.borrow_and_update());
                {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    let first = seen
                        .entry(image.offset)
                        .or_insert_with(|| Arc::clone(&image));
                    assert_eq!(
                        **first, *image,
                        "two members applied different images at one offset"
                    );
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    for node in cluster.nodes.values() {
        watchers.push(watch(node, Arc::clone(&seen)));
    }

    let mut acknowledged = Vec::new();
    for step in 0..25u64 {
        match rng.below(10) {
            0..=5 => {
                let name = format!("s{seed}-{step}");
                // An isolated, deposed leader may still believe it leads: prefer the newest term.
                let leader = cluster
                    .nodes
                    .values()
                    .filter(|n| n.is_leader())
                    .max_by_key(|n| n.raft().metrics().borrow().current_term);
                if let Some(leader) = leader {
                    let proposal = leader.propose(topic(&name, u128::from(step) + 1));
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), proposal).await
                    {
                        acknowledged.push(name);
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            6 => {
                cluster.net.heal();
                cluster.net.set_loss(seed.wrapping_add(step), 100);
                cluster.net.isolate(1 + rng.below(3));
            }
            7 => {
                let from = 1 + rng.below(3);
                cluster.net.cut(from, 1 + (from + rng.below(2)) % 3);
            }
            8 => {
                cluster.net.heal();
                cluster.net.set_loss(seed.wrapping_add(step), 100);
            }
            _ => {
                let id = 1 + rng.below(3);
                cluster.stop_node(id).await;
                cluster.start_node(id).await;
                watchers.push(watch(cluster.node(id), Arc::clone(&seen)));
            }
        }
    }

    cluster.net.heal();
    let last = cluster
        .propose_anywhere(topic(&format!("s{seed}-final"), 1000))
        .await;
    let images = cluster.wait_offset(&[1, 2, 3], last).await;
    assert_all_equal(&images);
    for name in &acknowledged {
        assert!(
            images[0].topic(name).is_some(),
            "acknowledged proposal {name} was lost"
        );
    }
    cluster.shutdown().await;
    for watcher in watchers {
        watcher.abort();
        if let Err(e) = watcher.await {
            assert!(e.is_cancelled(), "an image watcher failed: {e}");
        }
    }
}
