//! A broker-only node's view of the metadata (`process.roles=broker` in a cluster): it is not a
//! voter of the quorum. Like KRaft's observers it pulls the committed image from the active
//! controller (a long poll that answers when the image moved past what the broker has), and
//! it forwards every write to the active controller.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{debug, info};

use super::forward::{ControllerOp, ControllerReply};
use super::quorum::block_on_runtime;
use super::{Backend, Controller, ControllerOptions};
use crate::error::ControllerError;
use crate::image::MetadataImage;
use crate::raft::TcpTransport;

/// How a broker-only node reaches the quorum.
#[derive(Debug, Clone)]
pub struct ObserverOptions {
    pub node_id: i32,
    /// The voters' controller listeners (controller.quorum.voters).
    pub voters: BTreeMap<i32, SocketAddr>,
    /// Must match the voters' quorum name.
    pub cluster_name: String,
    /// How long a forwarded write may take before the caller gets NOT_CONTROLLER.
    pub forward_timeout: Duration,
}

/// How long the active controller holds an image poll open when nothing changed.
pub(super) const IMAGE_POLL_WAIT: Duration = Duration::from_millis(1_000);
/// Pause after a failed poll (no controller reachable) before trying the next voter.
const POLL_BACKOFF: Duration = Duration::from_millis(200);

pub(super) struct Observer {
    node_id: i32,
    voters: Vec<i32>,
    transport: Arc<TcpTransport>,
    runtime: Handle,
    forward_timeout: Duration,
    /// The voter last found to be the active controller.
    leader_hint: Mutex<Option<i32>>,
    /// The offset of the image this node has published.
    applied: watch::Sender<i64>,
}

impl Observer {
    pub(super) fn leader_id(&self) -> Option<i32> {
        *self
            .leader_hint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The voters to try, the last known active controller first.
    fn candidates(&self) -> Vec<i32> {
        let hint = self.leader_id();
        let mut order: Vec<i32> = hint.into_iter().collect();
        order.extend(self.voters.iter().copied().filter(|v| Some(*v) != hint));
        order
    }

    /// Sends `op` to the active controller, trying each voter until one runs it.
    async fn send(
        transport: Arc<TcpTransport>,
        from: i32,
        candidates: Vec<i32>,
        op: String,
        timeout: Duration,
    ) -> Result<(i32, String), ControllerError> {
        let from = u64::try_from(from).unwrap_or_default();
        for target in candidates {
            let Ok(raft_target) = u64::try_from(target) else {
                continue;
            };
            match transport
                .forward(from, raft_target, op.clone(), timeout)
                .await
            {
                Ok(Ok(reply)) => return Ok((target, reply)),
                Ok(Err(reason)) => debug!(target, %reason, "voter did not run the operation"),
                Err(e) => debug!(target, error = %e, "voter unreachable"),
            }
        }
        Err(ControllerError::NotController(
            "No active controller could be reached.".into(),
        ))
    }

    /// Forwards a write and waits until this node's image includes its outcome.
    pub(super) fn forward(&self, op: &ControllerOp) -> Result<ControllerReply, ControllerError> {
        let body = serde_json::to_string(op)
            .map_err(|e| ControllerError::InvalidRequest(format!("cannot forward: {e}")))?;
        let heartbeat = matches!(op, ControllerOp::BrokerHeartbeat { .. });
        let timeout = if heartbeat {
            Duration::from_millis(750)
        } else {
            self.forward_timeout
        };
        let send = Self::send(
            Arc::clone(&self.transport),
            self.node_id,
            self.candidates(),
            body,
            timeout,
        );
        let (leader, text) = block_on_runtime(&self.runtime, send)??;
        self.set_leader(Some(leader));
        let reply: ControllerReply = serde_json::from_str(&text)
            .map_err(|e| ControllerError::Storage(format!("bad controller reply: {e}")))?;
        let offset = reply.offset();
        let mut applied = self.applied.subscribe();
        let caught_up = block_on_runtime(&self.runtime, async move {
            tokio::time::timeout(timeout, applied.wait_for(|o| *o >= offset))
                .await
                .is_ok_and(|r| r.is_ok())
        })?;
        if !caught_up && heartbeat {
            return Err(ControllerError::NotController(
                "This node has not caught up with the active controller yet.".into(),
            ));
        }
        Ok(reply)
    }

    fn set_leader(&self, leader: Option<i32>) {
        *self
            .leader_hint
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = leader;
    }
}

impl Controller {
    /// Starts a broker-only node's metadata view: it polls the active controller for the
    /// committed image and forwards writes to it. The image is empty until the first poll.
    pub fn start_observer(options: ObserverOptions) -> Arc<Controller> {
        let peers = options
            .voters
            .iter()
            .filter_map(|(id, addr)| u64::try_from(*id).ok().map(|id| (id, *addr)))
            .collect();
        let transport = TcpTransport::new(&options.cluster_name, peers, options.forward_timeout);
        let observer = Observer {
            node_id: options.node_id,
            voters: options.voters.keys().copied().collect(),
            transport,
            runtime: Handle::current(),
            forward_timeout: options.forward_timeout,
            leader_hint: Mutex::new(None),
            applied: watch::Sender::new(-1),
        };
        let controller = Arc::new(Controller {
            node_id: options.node_id,
            options: ControllerOptions::default(),
            backend: Backend::Observer(Box::new(observer)),
            image: RwLock::new(Arc::new(MetadataImage::empty())),
            listeners: RwLock::new(Vec::new()),
            publish_lock: Mutex::new(()),
        });
        let weak = Arc::downgrade(&controller);
        tokio::spawn(async move {
            loop {
                let Some(c) = weak.upgrade() else { break };
                let Backend::Observer(o) = &c.backend else {
                    break;
                };
                let known_offset = c.image().offset;
                let op = ControllerOp::FetchImage { known_offset };
                let Ok(body) = serde_json::to_string(&op) else {
                    break;
                };
                let send = Observer::send(
                    Arc::clone(&o.transport),
                    o.node_id,
                    o.candidates(),
                    body,
                    IMAGE_POLL_WAIT + o.forward_timeout,
                );
                drop(c);
                let outcome = send.await;
                let Some(c) = weak.upgrade() else { break };
                let Backend::Observer(o) = &c.backend else {
                    break;
                };
                let reply = outcome.and_then(|(leader, text)| {
                    o.set_leader(Some(leader));
                    serde_json::from_str::<ControllerReply>(&text)
                        .map_err(|e| ControllerError::Storage(e.to_string()))
                });
                match reply {
                    Ok(ControllerReply::Image {
                        offset,
                        records: Some(records),
                    }) => {
                        let mut image = MetadataImage::empty().apply(&records);
                        image.offset = offset;
                        let c2 = Arc::clone(&c);
                        let published = tokio::task::spawn_blocking(move || {
                            c2.publish(Arc::new(image));
                        })
                        .await;
                        if published.is_err() {
                            break;
                        }
                        o.applied.send_replace(offset);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(error = %e, "metadata poll failed");
                        o.set_leader(None);
                        drop(c);
                        tokio::time::sleep(POLL_BACKOFF).await;
                    }
                }
            }
        });
        info!(
            node_id = options.node_id,
            "broker-only node: following the metadata quorum"
        );
        controller
    }

    pub(super) fn observer(&self) -> Option<&Observer> {
        match &self.backend {
            Backend::Observer(o) => Some(o),
            _ => None,
        }
    }
}

/// What the active controller answers an image poll: the whole image as records when it has
/// moved past `known_offset` (waiting up to [`IMAGE_POLL_WAIT`] for that), else nothing new.
pub(super) async fn answer_image_poll(
    mut updates: watch::Receiver<Arc<MetadataImage>>,
    known_offset: i64,
) -> ControllerReply {
    let _ = tokio::time::timeout(
        IMAGE_POLL_WAIT,
        updates.wait_for(|i| i.offset > known_offset),
    )
    .await;
    let image = updates.borrow().clone();
    if image.offset > known_offset {
        ControllerReply::Image {
            offset: image.offset,
            records: Some(image.to_records()),
        }
    } else {
        ControllerReply::Image {
            offset: image.offset,
            records: None,
        }
    }
}
