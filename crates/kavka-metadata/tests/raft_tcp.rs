//! The Raft metadata quorum over the TCP transport on 127.0.0.1. Every wait is bounded.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use kavka_metadata::raft::network::MetadataTransport;
use kavka_metadata::raft::{tcp, RaftMetadataLog, RaftMetadataOptions, RaftNodeId, TcpTransport};
use kavka_metadata::MetadataRecord;
use openraft::error::RPCError;
use openraft::raft::VoteRequest;
use openraft::Vote;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn options() -> RaftMetadataOptions {
    RaftMetadataOptions {
        cluster_name: "tcp-test".to_owned(),
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        ..RaftMetadataOptions::default()
    }
}

fn config(i: usize) -> Vec<MetadataRecord> {
    vec![MetadataRecord::Config {
        resource: kavka_metadata::ConfigResource::Broker(-1),
        name: format!("key{i}"),
        value: Some(i.to_string()),
    }]
}

async fn wait_leader(nodes: &BTreeMap<RaftNodeId, RaftMetadataLog>) -> RaftNodeId {
    bounded("a leader", async {
        loop {
            let leaders: Vec<_> = nodes.values().map(|n| n.leader_id()).collect();
            if let Some(Some(leader)) = leaders.first().copied() {
                if leaders.iter().all(|l| *l == Some(leader))
                    && nodes.get(&leader).is_some_and(|n| n.is_leader())
                {
                    return leader;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_over_tcp_commit_and_survive_the_loss_of_the_leader() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut listeners = BTreeMap::new();
    let mut peers: BTreeMap<RaftNodeId, SocketAddr> = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        peers.insert(id, listener.local_addr().expect("addr"));
        listeners.insert(id, listener);
    }
    let opts = options();
    let mut nodes = BTreeMap::new();
    let mut servers = BTreeMap::new();
    for (id, listener) in listeners {
        let transport =
            TcpTransport::new(&opts.cluster_name, peers.clone(), Duration::from_secs(2));
        let node = RaftMetadataLog::start(id, &root.path().join(id.to_string()), &opts, transport)
            .await
            .expect("start");
        servers.insert(
            id,
            tcp::serve(listener, opts.cluster_name.clone(), id, node.raft().clone()),
        );
        nodes.insert(id, node);
    }
    let voters = peers.iter().map(|(id, a)| (*id, a.to_string())).collect();
    nodes[&1].bootstrap(&voters).await.expect("bootstrap");

    let leader = wait_leader(&nodes).await;
    let mut last = -1;
    for i in 0..5 {
        last = nodes[&leader].propose(config(i)).await.expect("commit");
    }
    assert_eq!(last, 4);
    for node in nodes.values() {
        let mut rx = node.subscribe();
        bounded("replication", rx.wait_for(|image| image.offset >= last))
            .await
            .expect("image channel");
    }
    let images: Vec<_> = nodes.values().map(|n| n.image()).collect();
    assert!(images.iter().all(|i| **i == *images[0]));

    // The leader goes away entirely; the other two elect a leader and keep committing.
    if let Some(server) = servers.remove(&leader) {
        server.abort();
    }
    if let Some(old) = nodes.remove(&leader) {
        old.shutdown().await.expect("shutdown");
    }
    let new = wait_leader(&nodes).await;
    assert_ne!(new, leader);
    let offset = nodes[&new]
        .propose(config(5))
        .await
        .expect("commit with two of three");
    assert_eq!(offset, 5);
    for node in nodes.values() {
        node.shutdown().await.expect("shutdown");
    }
    for server in servers.into_values() {
        server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_cluster_or_member_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opts = options();
    let peers: BTreeMap<RaftNodeId, SocketAddr> = [(1, addr)].into_iter().collect();
    let node = RaftMetadataLog::start(
        1,
        root.path(),
        &opts,
        TcpTransport::new(&opts.cluster_name, peers.clone(), Duration::from_secs(2)),
    )
    .await
    .expect("start");
    let server = tcp::serve(listener, opts.cluster_name.clone(), 1, node.raft().clone());

    let vote = || VoteRequest::new(Vote::new(1, 9), None);
    let foreign = TcpTransport::new("another-cluster", peers.clone(), Duration::from_secs(2));
    let refused = bounded("a reply", foreign.vote(9, 1, vote())).await;
    assert!(
        matches!(refused, Err(RPCError::Unreachable(_))),
        "{refused:?}"
    );

    // The same cluster, but the address of member 1 is listed as member 2.
    let misaddressed: BTreeMap<RaftNodeId, SocketAddr> = [(2, addr)].into_iter().collect();
    let wrong = TcpTransport::new(&opts.cluster_name, misaddressed, Duration::from_secs(2));
    let refused = bounded("a reply", wrong.vote(9, 2, vote())).await;
    assert!(
        matches!(refused, Err(RPCError::Unreachable(_))),
        "{refused:?}"
    );

    // A well-addressed request is answered.
    let right = TcpTransport::new(&opts.cluster_name, peers, Duration::from_secs(2));
    let answered = bounded("a reply", right.vote(9, 1, vote())).await;
    assert!(answered.is_ok(), "{answered:?}");

    node.shutdown().await.expect("shutdown");
    server.abort();
}
