//! The controller as a member of the Raft metadata quorum (KRaft's QuorumController role).
//!
//! Every node of a cluster is a voter. The Raft leader is the active controller: it alone
//! validates and proposes. Other members forward operations to it over the quorum transport
//! and then wait until they have applied the result themselves, so a client that created a
//! topic through any broker can use it on that broker at once. Committed entries, whoever
//! proposed them, reach the image and the listeners through one publishing path.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing::{debug, info, warn};

use super::forward::{ControllerOp, ControllerReply, ForwardHandler};
use super::{Backend, Controller, ControllerOptions};
use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::raft::tcp::{self, ForwardSlot};
use crate::raft::{RaftMetadataError, RaftMetadataLog, RaftMetadataOptions, TcpTransport};
use crate::record::MetadataRecord;
use crate::uuid_string::{random_uuid, uuid_to_kafka_string};

/// How a node takes part in the metadata quorum.
#[derive(Debug, Clone)]
pub struct QuorumOptions {
    pub node_id: i32,
    /// Where this member keeps its Raft log and state (`<metadata.log.dir>/__cluster_metadata-0`).
    pub dir: PathBuf,
    /// Every voter's controller listener, this node included (controller.quorum.voters).
    pub voters: BTreeMap<i32, SocketAddr>,
    pub raft: RaftMetadataOptions,
    /// The active controller fences a broker that has not heartbeated for this long.
    pub broker_session_timeout_ms: u64,
    /// Move leadership back to preferred replicas every `leader_imbalance_check_interval_ms`.
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_ms: u64,
    /// Cluster-wide unclean.leader.election.enable (a topic config overrides it).
    pub unclean_leader_election: bool,
    /// How long a forwarded operation may take before the caller gets NOT_CONTROLLER.
    pub forward_timeout: Duration,
}

/// Broker liveness as this member saw it while active. Not replicated: a newly active
/// controller gives every broker a full session before fencing it.
#[derive(Default)]
struct Liveness {
    /// The Raft term in which `last_seen` was collected.
    term: Option<u64>,
    last_seen: HashMap<i32, Instant>,
    last_rebalance: Option<Instant>,
}

/// The quorum side of a cluster controller.
pub(super) struct Quorum {
    raft: Arc<RaftMetadataLog>,
    transport: Arc<TcpTransport>,
    runtime: Handle,
    options: QuorumOptions,
    /// Serializes validate-and-propose on the active controller.
    write: Mutex<()>,
    liveness: Mutex<Liveness>,
}

/// How often the active controller looks for expired broker sessions.
const DUTY_INTERVAL: Duration = Duration::from_millis(250);
/// How long a member waits to apply an entry the active controller says it committed.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

fn not_controller(leader: Option<u64>) -> ControllerError {
    ControllerError::NotController(match leader {
        Some(id) => format!("This node is not the active controller (node {id} is)."),
        None => "There is no active controller at the moment.".into(),
    })
}

fn raft_error(e: RaftMetadataError) -> ControllerError {
    match e {
        RaftMetadataError::NotLeader { leader_id } => not_controller(leader_id),
        other => ControllerError::Storage(other.to_string()),
    }
}

impl Quorum {
    pub(super) fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    pub(super) fn leader_id(&self) -> Option<i32> {
        self.raft.leader_id().and_then(|id| i32::try_from(id).ok())
    }

    pub(super) fn applied_image(&self) -> Arc<MetadataImage> {
        self.raft.image()
    }

    fn wait<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ControllerError> {
        block_on_runtime(&self.runtime, fut)
    }

    /// Every image this member applies (what image polls of broker-only nodes wait on).
    pub(super) fn updates(&self) -> tokio::sync::watch::Receiver<Arc<MetadataImage>> {
        self.raft.subscribe()
    }

    /// Confirms leadership and that everything committed before now is applied here.
    pub(super) fn ensure_current(&self) -> Result<(), ControllerError> {
        let raft = Arc::clone(&self.raft);
        self.wait(async move { raft.ensure_linearizable().await })?
            .map_err(raft_error)
    }

    /// Commits `records` through the quorum; returns the offset of the last one, applied here.
    pub(super) fn propose(&self, records: Vec<MetadataRecord>) -> Result<i64, ControllerError> {
        let raft = Arc::clone(&self.raft);
        self.wait(async move { raft.propose(records).await })?
            .map_err(raft_error)
    }

    /// Sends `op` to the active controller and waits until this member has applied what it
    /// committed.
    pub(super) fn forward(&self, op: &ControllerOp) -> Result<ControllerReply, ControllerError> {
        let leader = self.raft.leader_id();
        let Some(target) = leader.filter(|l| *l != self.raft.node_id()) else {
            return Err(not_controller(leader));
        };
        let body = serde_json::to_string(op)
            .map_err(|e| ControllerError::InvalidRequest(format!("cannot forward: {e}")))?;
        let transport = Arc::clone(&self.transport);
        let from = self.raft.node_id();
        // A heartbeat stuck on an unresponsive controller must not outlive the broker's
        // session: it gives up early and the next one goes to whoever leads by then.
        let timeout = match op {
            ControllerOp::BrokerHeartbeat { .. } => Duration::from_millis(
                (self.options.broker_session_timeout_ms / 4).clamp(250, 2_000),
            ),
            _ => self.options.forward_timeout,
        };
        let outcome =
            self.wait(async move { transport.forward(from, target, body, timeout).await })?;
        let text = match outcome {
            Ok(Ok(text)) => text,
            Ok(Err(reason)) => {
                debug!(target, %reason, "forwarded controller operation refused");
                return Err(not_controller(Some(target)));
            }
            Err(e) => {
                debug!(target, error = %e, "cannot reach the active controller");
                return Err(not_controller(Some(target)));
            }
        };
        let reply: ControllerReply = serde_json::from_str(&text)
            .map_err(|e| ControllerError::Storage(format!("bad controller reply: {e}")))?;
        let heartbeat = matches!(op, ControllerOp::BrokerHeartbeat { .. });
        let patience = if heartbeat { timeout } else { CATCH_UP_TIMEOUT };
        if !self.catch_up(reply.offset(), patience) && heartbeat {
            // A broker takes its roles after its first heartbeat: only with a current image.
            return Err(ControllerError::NotController(
                "This node has not caught up with the active controller yet.".into(),
            ));
        }
        Ok(reply)
    }

    /// Waits (at most `patience`) until this member has applied `offset`.
    fn catch_up(&self, offset: i64, patience: Duration) -> bool {
        if self.raft.image().offset >= offset {
            return true;
        }
        let mut rx = self.raft.subscribe();
        let reached = self.wait(async move {
            tokio::time::timeout(patience, rx.wait_for(|i| i.offset >= offset))
                .await
                .is_ok_and(|r| r.is_ok())
        });
        let reached = matches!(reached, Ok(true));
        if !reached {
            warn!(
                offset,
                "metadata: not caught up with the active controller in time"
            );
        }
        reached
    }

    /// Notes a heartbeat from `node_id` (only meaningful on the active controller).
    pub(super) fn heartbeat(&self, node_id: i32) {
        let mut l = self.liveness.lock().unwrap_or_else(PoisonError::into_inner);
        l.last_seen.insert(node_id, Instant::now());
    }

    /// Brokers whose session expired, as seen by this (active) controller. A change of term
    /// restarts every session.
    fn expired_brokers(&self, image: &MetadataImage) -> Vec<i32> {
        let term = self.raft.raft().metrics().borrow().current_term;
        let now = Instant::now();
        let timeout = Duration::from_millis(self.options.broker_session_timeout_ms);
        let mut l = self.liveness.lock().unwrap_or_else(PoisonError::into_inner);
        if l.term != Some(term) {
            l.term = Some(term);
            l.last_seen = image.brokers.keys().map(|id| (*id, now)).collect();
            l.last_rebalance = Some(now);
            return Vec::new();
        }
        image
            .live_brokers()
            .map(|b| b.node_id)
            .filter(|id| {
                let seen = *l.last_seen.entry(*id).or_insert(now);
                now.duration_since(seen) > timeout
            })
            .collect()
    }

    fn rebalance_due(&self) -> bool {
        if !self.options.auto_leader_rebalance {
            return false;
        }
        let every = Duration::from_millis(self.options.leader_imbalance_check_interval_ms);
        let mut l = self.liveness.lock().unwrap_or_else(PoisonError::into_inner);
        match l.last_rebalance {
            Some(at) if at.elapsed() < every => false,
            _ => {
                l.last_rebalance = Some(Instant::now());
                true
            }
        }
    }

    pub(super) fn unclean_leader_election(&self) -> bool {
        self.options.unclean_leader_election
    }
}

/// Waits for `fut` on `runtime` from synchronous controller code. Controller calls come from
/// blocking-pool threads or (briefly) from runtime workers, never from a current-thread
/// runtime (which this would stall).
pub(super) fn block_on_runtime<T: Send + 'static>(
    runtime: &Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, ControllerError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    let recv = move || {
        rx.recv()
            .map_err(|_| ControllerError::Storage("the metadata quorum runtime stopped".into()))
    };
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::CurrentThread) => Err(ControllerError::Storage(
            "a cluster controller cannot block a current-thread runtime".into(),
        )),
        Ok(_) => tokio::task::block_in_place(recv),
        Err(_) => recv(),
    }
}

impl Controller {
    /// Starts this node's member of the metadata quorum on `listener` (its controller
    /// listener) and returns the controller. The lowest voter id forms a new quorum; the
    /// others wait to be contacted. The image fills in as the member catches up.
    pub async fn start_quorum(
        options: QuorumOptions,
        listener: TcpListener,
        cluster_id_hint: Option<String>,
    ) -> Result<Arc<Controller>, ControllerError> {
        let node_id = options.node_id;
        let raft_id = u64::try_from(node_id)
            .map_err(|_| ControllerError::InvalidRequest(format!("bad node id {node_id}")))?;
        let peers: BTreeMap<u64, SocketAddr> = options
            .voters
            .iter()
            .filter_map(|(id, addr)| u64::try_from(*id).ok().map(|id| (id, *addr)))
            .collect();
        if !peers.contains_key(&raft_id) {
            return Err(ControllerError::InvalidRequest(format!(
                "node {node_id} is not a voter of the metadata quorum"
            )));
        }
        let transport = TcpTransport::new(
            &options.raft.cluster_name,
            peers.clone(),
            Duration::from_millis(options.raft.election_timeout_min_ms.max(500)),
        );
        let raft = RaftMetadataLog::start(
            raft_id,
            &options.dir,
            &options.raft,
            transport.clone() as Arc<dyn crate::raft::MetadataTransport>,
        )
        .await
        .map_err(|e| ControllerError::Storage(e.to_string()))?;
        let raft = Arc::new(raft);
        let slot = ForwardSlot::default();
        tcp::serve_with_forwarding(
            listener,
            options.raft.cluster_name.clone(),
            raft_id,
            raft.raft().clone(),
            slot.clone(),
        );
        if peers.keys().next() == Some(&raft_id) {
            let voters: BTreeMap<u64, String> = peers
                .iter()
                .map(|(id, addr)| (*id, addr.to_string()))
                .collect();
            raft.bootstrap(&voters)
                .await
                .map_err(|e| ControllerError::Storage(e.to_string()))?;
        }
        let image = raft.image();
        let mut updates = raft.subscribe();
        let quorum = Quorum {
            raft,
            transport,
            runtime: Handle::current(),
            options,
            write: Mutex::new(()),
            liveness: Mutex::new(Liveness::default()),
        };
        let controller = Arc::new(Controller {
            node_id,
            options: ControllerOptions::default(),
            backend: Backend::Quorum(Box::new(quorum)),
            image: RwLock::new(image),
            listeners: RwLock::new(Vec::new()),
            publish_lock: Mutex::new(()),
        });
        let _ = slot.set(Arc::new(ForwardHandler::new(&controller)));

        // Publish what the member applies, whoever proposed it.
        let weak = Arc::downgrade(&controller);
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let image = updates.borrow_and_update().clone();
                let Some(c) = weak.upgrade() else { break };
                if tokio::task::spawn_blocking(move || c.publish(image))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });

        // The active controller's duties: cluster id, broker sessions, leader balance.
        let weak = Arc::downgrade(&controller);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DUTY_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { break };
                let hint = cluster_id_hint.clone();
                if tokio::task::spawn_blocking(move || c.run_duties(hint))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        info!(node_id, "metadata quorum member started");
        Ok(controller)
    }

    pub(super) fn quorum(&self) -> Option<&Quorum> {
        match &self.backend {
            Backend::Quorum(q) => Some(q),
            Backend::Local(_) | Backend::Observer(_) => None,
        }
    }

    /// The quorum to forward to when this node is a cluster member but not the active
    /// controller.
    pub(super) fn remote_quorum(&self) -> Option<&Quorum> {
        self.quorum().filter(|q| !q.is_leader())
    }

    /// The active controller's node id (this node on a single node; `None` during an
    /// election).
    pub fn active_controller_id(&self) -> Option<i32> {
        match &self.backend {
            Backend::Local(_) => Some(self.node_id),
            Backend::Quorum(q) => q.leader_id(),
            Backend::Observer(o) => o.leader_id(),
        }
    }

    /// Whether this node is the active controller.
    pub fn is_active(&self) -> bool {
        self.active_controller_id() == Some(self.node_id)
    }

    /// Whether this controller is a member of a Raft quorum (cluster mode).
    pub fn is_clustered(&self) -> bool {
        !matches!(self.backend, Backend::Local(_))
    }

    /// One round of the active controller's periodic work; a no-op elsewhere.
    pub(super) fn run_duties(&self, cluster_id_hint: Option<String>) {
        let Some(q) = self.quorum() else { return };
        if !q.is_leader() {
            return;
        }
        let image = self.image();
        if image.cluster_id.is_empty() {
            let cluster_id = cluster_id_hint
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| uuid_to_kafka_string(random_uuid()));
            let result = self.lock_log().and_then(|mut log| {
                if self.image().cluster_id.is_empty() {
                    info!(%cluster_id, "formatting a new cluster");
                    self.commit(&mut log, vec![MetadataRecord::ClusterId { cluster_id }])?;
                }
                Ok(())
            });
            if let Err(e) = result {
                debug!(error = %e, "metadata: cannot write the cluster id yet");
            }
            return;
        }
        for node_id in q.expired_brokers(&image) {
            warn!(node_id, "broker session expired: fencing it");
            if let Err(e) = self.fence_broker_here(node_id) {
                debug!(node_id, error = %e, "metadata: fencing failed; will retry");
            }
        }
        self.complete_reassignments_duty();
        if q.rebalance_due() {
            if let Err(e) = self.rebalance_leaders_here() {
                debug!(error = %e, "metadata: preferred leader election failed");
            }
        }
    }
}
