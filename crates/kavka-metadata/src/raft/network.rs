//! How quorum members reach each other.
//!
//! openraft's network traits are generic (not object-safe); [`MetadataTransport`] is the
//! object-safe seam under them, so the node takes an `Arc<dyn MetadataTransport>` and a TCP
//! transport can replace [`InProcessNetwork`] without touching the node. [`InProcessNetwork`]
//! calls the target's `Raft` directly and can cut links or drop messages (seeded), for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use super::{MetadataRaft, MetadataRaftConfig, RaftNodeId};

type C = MetadataRaftConfig;
/// A boxed, sendable future (what an object-safe async method returns).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// The result of one RPC to another member.
pub type RpcResult<T, E = RaftError<RaftNodeId>> = Result<T, RPCError<RaftNodeId, BasicNode, E>>;

/// Carries Raft RPCs from member `from` to member `target`.
pub trait MetadataTransport: Send + Sync + 'static {
    fn append_entries(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: AppendEntriesRequest<C>,
    ) -> BoxFuture<RpcResult<AppendEntriesResponse<RaftNodeId>>>;

    fn install_snapshot(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: InstallSnapshotRequest<C>,
    ) -> BoxFuture<
        RpcResult<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    >;

    fn vote(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: VoteRequest<RaftNodeId>,
    ) -> BoxFuture<RpcResult<VoteResponse<RaftNodeId>>>;
}

/// openraft's network factory over a [`MetadataTransport`], for member `from`.
pub struct TransportNetwork {
    pub(crate) from: RaftNodeId,
    pub(crate) transport: Arc<dyn MetadataTransport>,
}

/// openraft's connection to one target, over a [`MetadataTransport`].
pub struct TransportConnection {
    from: RaftNodeId,
    target: RaftNodeId,
    transport: Arc<dyn MetadataTransport>,
}

impl RaftNetworkFactory<C> for TransportNetwork {
    type Network = TransportConnection;

    async fn new_client(&mut self, target: RaftNodeId, _node: &BasicNode) -> Self::Network {
        TransportConnection {
            from: self.from,
            target,
            transport: Arc::clone(&self.transport),
        }
    }
}

impl RaftNetwork<C> for TransportConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>> {
        self.transport
            .append_entries(self.from, self.target, rpc)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>
    {
        self.transport
            .install_snapshot(self.from, self.target, rpc)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftNodeId>> {
        self.transport.vote(self.from, self.target, rpc).await
    }
}

/// A small deterministic PRNG (SplitMix64), so a fault schedule is reproducible from a seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next_u64() % bound.max(1)
    }
}

/// What happens to one message.
enum Fate {
    Deliver,
    /// Lost before reaching the target.
    DropRequest,
    /// Delivered, but the reply is lost (the sender must cope with a duplicate on retry).
    DropResponse,
}

#[derive(Default)]
struct Links {
    nodes: BTreeMap<RaftNodeId, MetadataRaft>,
    /// Directed links that lose every message.
    cut: BTreeSet<(RaftNodeId, RaftNodeId)>,
    /// Seeded random loss: (rng, loss per mille).
    loss: Option<(SplitMix64, u64)>,
}

/// An in-process [`MetadataTransport`]: members are `Raft` handles in one process.
#[derive(Clone, Default)]
pub struct InProcessNetwork {
    links: Arc<Mutex<Links>>,
}

fn unreachable<E: std::error::Error>(
    from: RaftNodeId,
    target: RaftNodeId,
    what: &str,
) -> RPCError<RaftNodeId, BasicNode, E> {
    let e = io::Error::new(
        io::ErrorKind::NotConnected,
        format!("{what}: {from} -> {target}"),
    );
    RPCError::Unreachable(Unreachable::new(&e))
}

impl InProcessNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `raft` reachable as member `id` (replacing an earlier incarnation).
    pub fn register(&self, id: RaftNodeId, raft: MetadataRaft) {
        self.lock().nodes.insert(id, raft);
    }

    /// Makes member `id` unreachable (it stopped).
    pub fn unregister(&self, id: RaftNodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: RaftNodeId) {
        let mut links = self.lock();
        let ids: Vec<RaftNodeId> = links.nodes.keys().copied().collect();
        for other in ids.into_iter().filter(|o| *o != id) {
            links.cut.insert((id, other));
            links.cut.insert((other, id));
        }
    }

    /// Cuts the directed link `from -> to`.
    pub fn cut(&self, from: RaftNodeId, to: RaftNodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Restores every link and stops random loss.
    pub fn heal(&self) {
        let mut links = self.lock();
        links.cut.clear();
        links.loss = None;
    }

    /// Loses each message with probability `per_mille`/1000, drawn from `seed`.
    pub fn set_loss(&self, seed: u64, per_mille: u64) {
        self.lock().loss = Some((SplitMix64::new(seed), per_mille.min(1000)));
    }

    /// Decides the message's fate and returns the target, or `None` when it is lost.
    fn route(&self, from: RaftNodeId, target: RaftNodeId) -> (Option<MetadataRaft>, Fate) {
        let mut links = self.lock();
        let raft = links.nodes.get(&target).cloned();
        if raft.is_none() || links.cut.contains(&(from, target)) {
            return (None, Fate::DropRequest);
        }
        let fate = match links.loss.as_mut() {
            Some((rng, per_mille)) => {
                let lost = rng.below(1000) < *per_mille;
                match (lost, rng.below(2)) {
                    (false, _) => Fate::Deliver,
                    (true, 0) => Fate::DropRequest,
                    (true, _) => Fate::DropResponse,
                }
            }
            None => Fate::Deliver,
        };
        (raft, fate)
    }
}

/// Delivers one RPC through `call` according to the network's faults.
async fn deliver<T, E, F, Fut>(
    net: InProcessNetwork,
    from: RaftNodeId,
    target: RaftNodeId,
    call: F,
) -> RpcResult<T, E>
where
    E: std::error::Error,
    F: FnOnce(MetadataRaft) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let (raft, fate) = net.route(from, target);
    let raft = match (raft, &fate) {
        (Some(raft), Fate::Deliver | Fate::DropResponse) => raft,
        _ => return Err(unreachable(from, target, "message lost")),
    };
    let result = call(raft).await;
    if matches!(fate, Fate::DropResponse) {
        return Err(unreachable(from, target, "reply lost"));
    }
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl MetadataTransport for InProcessNetwork {
    fn append_entries(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: AppendEntriesRequest<C>,
    ) -> BoxFuture<RpcResult<AppendEntriesResponse<RaftNodeId>>> {
        let net = self.clone();
        Box::pin(deliver(net, from, target, |raft| async move {
            raft.append_entries(rpc).await
        }))
    }

    fn install_snapshot(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: InstallSnapshotRequest<C>,
    ) -> BoxFuture<
        RpcResult<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        let net = self.clone();
        Box::pin(deliver(net, from, target, |raft| async move {
            raft.install_snapshot(rpc).await
        }))
    }

    fn vote(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: VoteRequest<RaftNodeId>,
    ) -> BoxFuture<RpcResult<VoteResponse<RaftNodeId>>> {
        let net = self.clone();
        Box::pin(deliver(net, from, target, |raft| async move {
            raft.vote(rpc).await
        }))
    }
}
