//! The kavka broker: network server, request router, handlers, partition manager.
//!
//! Layering (DESIGN.md): `network` frames bytes and knows nothing of topics; `router` turns
//! frames into typed requests; `handlers` are functions of (request, broker context);
//! `replica_manager`/`partition` own the logs; the controller (kavka-metadata) owns
//! cluster state.

pub mod broker;
pub mod config;
pub mod group;
pub mod handlers;
pub mod internal_topics;
pub mod log_cleaner;
pub mod log_config;
pub mod network;
pub mod offload;
pub mod partition;
pub mod producer_ids;
pub mod replica_manager;
pub mod replication;
pub mod router;
pub mod txn;

use broker::Broker;
use config::BrokerConfig;
use kavka_metadata::Controller;
use replica_manager::ReplicaManager;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create log dir {0}: {1}")]
    LogDir(String, std::io::Error),
    #[error("cannot open the metadata log: {0}")]
    Metadata(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("log dir {0} is in use by another kavka process (lock file {0}/.lock)")]
    Locked(String),
}

/// Takes an exclusive lock on each data directory for the life of the process, so two
/// brokers can never write the same logs (Kafka's `.lock` file).
fn lock_dirs(dirs: &[std::path::PathBuf]) -> Result<Vec<std::fs::File>, StartError> {
    let mut locks = Vec::new();
    for d in dirs {
        let path = d.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StartError::LogDir(d.display().to_string(), e))?;
        match file.try_lock() {
            Ok(()) => locks.push(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StartError::Locked(d.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StartError::LogDir(d.display().to_string(), e))
            }
        }
    }
    Ok(locks)
}

/// A started broker: resolves when the broker has shut down.
pub struct RunningBroker {
    pub bound: std::net::SocketAddr,
    pub broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    stop_heartbeats: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    /// Held until shutdown; dropping releases the directory locks.
    _dir_locks: Vec<std::fs::File>,
}

/// Opens the metadata log and every hosted partition, binds the listener and starts serving.
pub async fn start(config: BrokerConfig) -> Result<RunningBroker, StartError> {
    let config = Arc::new(config);
    for d in &config.log_dirs {
        std::fs::create_dir_all(d).map_err(|e| StartError::LogDir(d.display().to_string(), e))?;
    }
    let mut lock_targets = config.log_dirs.clone();
    if !lock_targets.contains(&config.metadata_log_dir) {
        std::fs::create_dir_all(&config.metadata_log_dir)
            .map_err(|e| StartError::LogDir(config.metadata_log_dir.display().to_string(), e))?;
        lock_targets.push(config.metadata_log_dir.clone());
    }
    let dir_locks = lock_dirs(&lock_targets)?;
    let bind = config.bind_addr();
    let listener = TcpListener::bind(&bind)
        .await
        .map_err(|e| StartError::Bind(bind.clone(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartError::Bind(bind.clone(), e))?;
    let advertised = config.advertised_endpoint(bound);

    // Cluster mode: this node is a voter of the Raft metadata quorum.
    let quorum_controller = match &config.cluster {
        Some(cluster) if cluster.is_voter => Some(start_quorum(&config, cluster).await?),
        Some(cluster) => Some(start_observer(&config, cluster).await?),
        None => None,
    };

    let (controller, replicas, groups, txns, producer_ids) = {
        let config = config.clone();
        let advertised = advertised.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || -> Result<_, StartError> {
            let controller = match quorum_controller {
                Some(c) => c,
                None => {
                    let cluster_hint = config.props.get("cluster.id").cloned();
                    Arc::new(
                        Controller::open(&config.metadata_log_dir, config.node_id, cluster_hint)
                            .map_err(|e| StartError::Metadata(e.to_string()))?,
                    )
                }
            };
            let replicas = ReplicaManager::new(config.clone(), runtime);
            let started = std::time::Instant::now();
            replicas.reconcile(None, &controller.image());
            tracing::info!(
                partitions = replicas.all().len(),
                "logs loaded in {} ms",
                started.elapsed().as_millis()
            );
            controller.subscribe(replicas.clone());
            let groups = Arc::new(
                group::GroupCoordinator::new(
                    config.group.clone(),
                    replicas.clone(),
                    controller.clone(),
                )
                .with_offsets_topic_replication_factor(
                    config.replication.offsets_topic_replication_factor,
                ),
            );
            // Subscribed after the replica manager: a shard loads once its partition leads.
            // The coordinator replays __consumer_offsets while the broker already serves;
            // group requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS and clients retry.
            groups.follow_leadership();
            let producer_ids = Arc::new(producer_ids::ProducerIdManager::new(config.node_id));
            let txns = Arc::new(txn::TransactionCoordinator::new(
                config.txn.clone(),
                replicas.clone(),
                controller.clone(),
                producer_ids.clone(),
            ));
            txns.set_marker_writer(txn::markers::TxnMarkerChannel::new(
                config.node_id,
                replicas.clone(),
                groups.clone(),
                controller.clone(),
                Duration::from_millis(30_000),
            ));
            // Like the groups: shards follow __transaction_state leadership, replayed in
            // the background (COORDINATOR_LOAD_IN_PROGRESS meanwhile).
            txns.follow_leadership();
            // A cluster node registers through its heartbeats once the quorum has a leader.
            if !controller.is_clustered() {
                controller
                    .register_broker(
                        config.node_id,
                        advertised.0.clone(),
                        advertised.1,
                        config.rack.clone(),
                    )
                    .map_err(|e| StartError::Metadata(e.to_string()))?;
            }
            Ok((controller, replicas, groups, txns, producer_ids))
        })
        .await
        .map_err(|e| StartError::Metadata(e.to_string()))??
    };
    let broker = Arc::new(Broker {
        config: config.clone(),
        controller,
        replicas: replicas.clone(),
        advertised,
        producer_ids,
        groups: groups.clone(),
        txns: txns.clone(),
        txn_verifier: txn::verification::TxnVerifier::new(
            config.node_id,
            Duration::from_millis(30_000),
        ),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (stop_heartbeats, heartbeats_rx) = watch::channel(false);

    // ISR expiration: leaders drop followers that stopped catching up.
    tokio::spawn(replication::isr::run_isr_maintenance(
        broker.clone(),
        shutdown_rx.clone(),
    ));

    if let Some(cluster) = &config.cluster {
        tokio::spawn(heartbeat_loop(
            broker.clone(),
            Duration::from_millis(cluster.broker_heartbeat_interval_ms),
            heartbeats_rx,
        ));
    }

    // Housekeeping: retention and time-based roll, and time-based flush.
    {
        let replicas = replicas.clone();
        let mut stop = shutdown_rx.clone();
        let retention_every = Duration::from_millis(config.retention_check_interval_ms);
        let flush_every = Duration::from_millis(config.flush_scheduler_interval_ms.max(100));
        tokio::spawn(async move {
            let mut retention = tokio::time::interval(retention_every);
            let mut flush = tokio::time::interval(flush_every);
            loop {
                tokio::select! {
                    _ = retention.tick() => {
                        let r = replicas.clone();
                        let _ = tokio::task::spawn_blocking(move || r.housekeeping()).await;
                    }
                    _ = flush.tick() => {
                        let r = replicas.clone();
                        let _ = tokio::task::spawn_blocking(move || r.flush_due_partitions()).await;
                    }
                    _ = stop.changed() => break,
                }
            }
        });
    }

    if config.cleaner.enable {
        let stop = shutdown_rx.clone();
        tokio::spawn(log_cleaner::run(
            replicas.clone(),
            config.cleaner.clone(),
            stop,
        ));
    }

    // Group coordinator timers: member sessions and rebalance deadlines, offset expiry.
    {
        let mut stop = shutdown_rx.clone();
        let expire_every = Duration::from_millis(config.group.offsets_retention_check_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut expire = tokio::time::interval(expire_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let g = groups.clone();
                        let _ = tokio::task::spawn_blocking(move || g.tick()).await;
                    }
                    _ = expire.tick() => {
                        let g = groups.clone();
                        let _ = tokio::task::spawn_blocking(move || g.expire_offsets()).await;
                    }
                    _ = stop.changed() => break,
                }
            }
        });
    }

    // Transaction timers: abort transactions past their timeout, forget idle ids.
    {
        let mut stop = shutdown_rx.clone();
        let abort_every = Duration::from_millis(config.txn.abort_timed_out_interval_ms);
        let expire_every = Duration::from_millis(config.txn.remove_expired_interval_ms);
        tokio::spawn(async move {
            let mut abort = tokio::time::interval(abort_every);
            abort.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut expire = tokio::time::interval(expire_every);
            expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = abort.tick() => {
                        txns.abort_timed_out().await;
                    }
                    _ = expire.tick() => {
                        txns.remove_expired().await;
                    }
                    _ = stop.changed() => break,
                }
            }
        });
    }

    let limits = network::Server {
        max_request_bytes: config.socket_request_max_bytes,
        max_in_flight: 128,
    };
    let router = Arc::new(router::Router {
        broker: broker.clone(),
    });
    let server = tokio::spawn(network::serve(listener, limits, router, shutdown_rx));
    tracing::info!(
        node_id = config.node_id,
        cluster_id = %broker.controller.image().cluster_id,
        "kavka broker listening on {bound}, advertised as {}:{}",
        broker.advertised.0,
        broker.advertised.1
    );
    Ok(RunningBroker {
        bound,
        broker,
        shutdown,
        stop_heartbeats,
        server,
        _dir_locks: dir_locks,
    })
}

/// Resolves the voters' controller listeners (controller.quorum.voters).
async fn resolve_voters(
    cluster: &config::ClusterSettings,
) -> Result<std::collections::BTreeMap<i32, std::net::SocketAddr>, StartError> {
    let mut voters = std::collections::BTreeMap::new();
    for v in &cluster.voters {
        let target = format!("{}:{}", v.host, v.port);
        let addr = tokio::net::lookup_host(&target)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                StartError::Metadata(format!(
                    "controller.quorum.voters: cannot resolve {target} (voter {})",
                    v.node_id
                ))
            })?;
        voters.insert(v.node_id, addr);
    }
    Ok(voters)
}

/// A broker-only node: follows the quorum's image and forwards writes to the controller.
async fn start_observer(
    config: &BrokerConfig,
    cluster: &config::ClusterSettings,
) -> Result<Arc<Controller>, StartError> {
    let options = kavka_metadata::ObserverOptions {
        node_id: config.node_id,
        voters: resolve_voters(cluster).await?,
        cluster_name: kavka_metadata::raft::RaftMetadataOptions::default().cluster_name,
        forward_timeout: Duration::from_millis(cluster.fetch_timeout_ms.max(1000) * 5),
    };
    Ok(Controller::start_observer(options))
}

/// Binds the controller listener and starts this node's member of the metadata quorum.
async fn start_quorum(
    config: &BrokerConfig,
    cluster: &config::ClusterSettings,
) -> Result<Arc<Controller>, StartError> {
    let bind = cluster.controller_listener.bind_addr();
    let listener = TcpListener::bind(&bind)
        .await
        .map_err(|e| StartError::Bind(bind.clone(), e))?;
    let voters = resolve_voters(cluster).await?;
    let election = cluster.election_timeout_ms.max(200);
    let options = kavka_metadata::QuorumOptions {
        node_id: config.node_id,
        dir: config.metadata_log_dir.join("__cluster_metadata-0"),
        voters,
        raft: kavka_metadata::raft::RaftMetadataOptions {
            heartbeat_interval_ms: (election / 10).max(20),
            election_timeout_min_ms: election,
            election_timeout_max_ms: election * 2,
            ..Default::default()
        },
        broker_session_timeout_ms: cluster.broker_session_timeout_ms,
        auto_leader_rebalance: config.replication.auto_leader_rebalance_enable,
        leader_imbalance_check_interval_ms: config.replication.leader_imbalance_check_interval_ms,
        unclean_leader_election: config.replication.unclean_leader_election_enable,
        forward_timeout: Duration::from_millis(cluster.fetch_timeout_ms.max(1000) * 5),
    };
    let cluster_hint = config.props.get("cluster.id").cloned();
    Controller::start_quorum(options, listener, cluster_hint)
        .await
        .map_err(|e| StartError::Metadata(e.to_string()))
}

/// A cluster broker's heartbeats to the active controller: they register it, unfence it,
/// and keep its session alive. Until the first one succeeds they are sent more often.
async fn heartbeat_loop(broker: Arc<Broker>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut registered = false;
    // This process's incarnation: the controller fences a broker whose incarnation changes.
    let incarnation = uuid::Uuid::new_v4();
    loop {
        let b = broker.clone();
        let beat = tokio::task::spawn_blocking(move || {
            b.controller.broker_heartbeat(
                b.node_id(),
                b.advertised.0.clone(),
                b.advertised.1,
                b.config.rack.clone(),
                Some(incarnation),
            )
        })
        .await;
        let healthy = match beat {
            Ok(Ok(())) => {
                if !registered {
                    tracing::info!(
                        node_id = broker.node_id(),
                        "registered with the active controller"
                    );
                    // The heartbeat's answer caught the local image up: take the roles now.
                    let b = broker.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let image = b.controller.image();
                        b.replicas.enable_roles(&image);
                        // Roles changed without a new image: coordinators follow them.
                        b.groups.apply_leadership(&image);
                        b.txns.apply_leadership(&image);
                    })
                    .await;
                }
                registered = true;
                true
            }
            Ok(Err(e)) => {
                tracing::debug!("broker heartbeat failed: {e}");
                false
            }
            Err(_) => return,
        };
        // A failed heartbeat (controller moving) is retried soon, within the session.
        let pause = if healthy {
            interval
        } else {
            interval.min(Duration::from_millis(200))
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

impl RunningBroker {
    /// Stops accepting, lets connections finish their in-flight responses, and closes every
    /// log cleanly so the next start skips recovery.
    pub async fn shutdown(self) {
        // Controlled shutdown: stop heartbeating, then have the controller move this
        // broker's leaderships elsewhere while it still serves, so clients fail over at once.
        let _ = self.stop_heartbeats.send(true);
        if self.broker.controller.is_clustered() {
            let b = self.broker.clone();
            let fenced = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::task::spawn_blocking(move || b.controller.controlled_shutdown(b.node_id())),
            )
            .await;
            match fenced {
                Ok(Ok(Ok(()))) => tracing::info!("controlled shutdown: leadership moved"),
                _ => tracing::warn!("controlled shutdown: the controller did not answer in time"),
            }
        }
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        // Give connection tasks a moment to flush responses already promised.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let replicas = self.broker.replicas.clone();
        let _ = tokio::task::spawn_blocking(move || replicas.shutdown()).await;
        tracing::info!("kavka broker stopped");
    }
}
