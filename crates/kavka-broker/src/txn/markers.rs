//! Transaction markers, both sides.
//!
//! - The partition leader's side ([`write_local_markers`], used by the WriteTxnMarkers handler
//!   and by the channel for partitions this broker leads): append a COMMIT or ABORT control
//!   batch on each partition (through the group coordinator for `__consumer_offsets`, which
//!   materializes or drops the producer's pending offsets under its shard lock), then wait
//!   until the ISR has it, as an acks=all produce does.
//! - The coordinator's side ([`TxnMarkerChannel`], Kafka's `TransactionMarkerChannelManager`):
//!   once a transaction is decided, the markers go to every partition's current leader, over
//!   one kept connection per broker, and failed partitions are retried until all are written
//!   or the caller stops being the transaction's coordinator.
//!
//! Error handling follows Kafka's `TransactionMarkerRequestCompletionHandler`: leadership and
//! replication errors are retried after re-resolving the leader; a partition whose topic is
//! gone from the metadata is dropped (its records went with the topic); a fenced producer or
//! coordinator epoch ends the attempt; a broker refusing the marker as malformed is reported.

use crate::group::append_wait::AppendWait;
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::partition::Partition;
use crate::replica_manager::{now_ms, ReplicaManager};
use crate::replication::leader_client::{LeaderClient, LeaderClientConfig};
use futures_util::future::join_all;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use kavka_metadata::{Controller, MetadataImage};
use kavka_protocol::error::ErrorCode;
use kavka_protocol::records::{ControlType, TxnMarker};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the coordinator asks to be written once a transaction is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The leader epoch of the transaction's `__transaction_state` partition.
    pub coordinator_epoch: i32,
    pub control: ControlType,
    /// Every partition of the transaction (data partitions and `__consumer_offsets` ones).
    pub partitions: Vec<(String, i32)>,
}

impl MarkerRequest {
    /// The control record this request writes.
    pub fn marker(&self) -> TxnMarker {
        TxnMarker {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            coordinator_epoch: self.coordinator_epoch,
            control: self.control,
        }
    }
}

/// Why markers could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// The caller stopped being the coordinator of this transaction (its check said so).
    #[error("no longer the coordinator of the transaction")]
    NotCoordinator,
    /// A partition leader refused the marker because a newer producer epoch or a newer
    /// coordinator wrote there (INVALID_PRODUCER_EPOCH, PRODUCER_FENCED,
    /// TRANSACTION_COORDINATOR_FENCED): this transaction's markers are moot, as Kafka's
    /// channel stops sending them. The coordinator leaves the transaction to whoever fenced it.
    #[error("marker fenced on {topic}-{partition}: {code:?}")]
    Fenced {
        topic: String,
        partition: i32,
        code: ErrorCode,
    },
    /// The local appends could not run (the blocking pool refused them: the runtime is
    /// shutting down, or an append panicked). The caller may retry later.
    #[error("transaction markers cannot be written now")]
    Unavailable,
    /// A partition leader answered with an error that retrying cannot fix (a malformed
    /// marker: CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, or an unexpected code). Kafka treats these
    /// as illegal states; the transaction stays undecided on that partition.
    #[error("marker refused on {topic}-{partition}: {code:?}")]
    Failed {
        topic: String,
        partition: i32,
        code: ErrorCode,
    },
}

/// How long a partition leader waits for a marker to be replicated before answering
/// REQUEST_TIMED_OUT (Kafka appends markers with acks=-1 and `request.timeout.ms`, 30 s by
/// default). The channel waits this long beyond its own request timeout for an answer.
pub const MARKER_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// WriteTxnMarkers version spoken between brokers (the only one Kafka still has).
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// First pause before retrying partitions whose markers failed (Kafka's sender retries on
/// its next poll, `retry.backoff.ms` = 100 ms by default).
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Retries back off exponentially up to this.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Markers of several transactions travel to one broker in one request, at most this many.
const MAX_MARKERS_PER_REQUEST: usize = 64;
/// Requests queued per destination broker before callers wait for room.
const LINK_QUEUE: usize = 256;

/// A partition's outcome: written and replicated, or the Kafka error.
pub type PartitionResult = ((String, i32), Result<(), ErrorCode>);

/// What happens to a partition after a marker attempt (Kafka's completion handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Written,
    /// Try again after re-resolving the leader.
    Retry,
    /// Leave the partition out: the producer could not have written there.
    Drop,
    Fenced,
    Failed,
}

fn classify(result: Result<(), ErrorCode>) -> Outcome {
    let Err(code) = result else {
        return Outcome::Written;
    };
    match code {
        ErrorCode::UnknownTopicOrPartition
        | ErrorCode::NotLeaderOrFollower
        | ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RequestTimedOut
        | ErrorCode::KafkaStorageError
        // The group coordinator of a `__consumer_offsets` partition is moving or loading.
        | ErrorCode::NotCoordinator
        | ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::CoordinatorNotAvailable
        // Transport failures (no answer, connection lost).
        | ErrorCode::NetworkException
        | ErrorCode::LeaderNotAvailable => Outcome::Retry,
        ErrorCode::InvalidProducerEpoch
        | ErrorCode::ProducerFenced
        | ErrorCode::TransactionCoordinatorFenced => Outcome::Fenced,
        ErrorCode::UnsupportedForMessageFormat | ErrorCode::UnsupportedVersion => Outcome::Drop,
        _ => Outcome::Failed,
    }
}

/// What a locally written marker still waits for.
enum Waiter {
    Log {
        partition: Arc<Partition>,
        last_offset: i64,
        durable: bool,
    },
    Group(AppendWait),
}

impl Waiter {
    async fn wait(self, timeout: Duration) -> Result<(), ErrorCode> {
        match self {
            Waiter::Log {
                partition,
                last_offset,
                durable,
            } => {
                let waited = async {
                    if durable {
                        partition.wait_durable(last_offset).await?;
                    }
                    partition.wait_replicated(last_offset, timeout).await
                };
                waited.await.map_err(|e| {
                    crate::handlers::partition_error_code(&e, &partition.topic, partition.index)
                })
            }
            Waiter::Group(wait) => wait.wait().await.map_err(group_error),
        }
    }
}

/// The group coordinator speaks of coordinators; a marker's writer of partition leaders.
fn group_error(code: ErrorCode) -> ErrorCode {
    match code {
        ErrorCode::NotCoordinator => ErrorCode::NotLeaderOrFollower,
        other => other,
    }
}

/// Appends `marker` on one partition this broker should lead. Blocking (file write).
fn append_one(
    replicas: &ReplicaManager,
    groups: &GroupCoordinator,
    image: &MetadataImage,
    marker: &TxnMarker,
    topic: &str,
    index: i32,
    now: i64,
) -> Result<Option<Waiter>, ErrorCode> {
    let known = image
        .topic(topic)
        .is_some_and(|t| t.partitions.contains_key(&index));
    let Some(part) = replicas.get(topic, index) else {
        return Err(if known {
            ErrorCode::NotLeaderOrFollower
        } else {
            ErrorCode::UnknownTopicOrPartition
        });
    };
    if !part.is_leader() {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    let error = |e: &crate::partition::PartitionError| {
        crate::handlers::partition_error_code(e, topic, index)
    };
    if topic == OFFSETS_TOPIC {
        // The coordinator appends under its shard lock, so its pending offsets and the log
        // agree on what the marker decided.
        return groups
            .write_txn_marker(index, marker)
            .map(|w| w.map(Waiter::Group))
            .map_err(group_error);
    }
    // Markers are written with acks=-1: refused up front when the ISR is too small.
    part.check_enough_replicas().map_err(|e| error(&e))?;
    let (info, durable) = part.append_txn_marker(marker, now).map_err(|e| error(&e))?;
    Ok(Some(Waiter::Log {
        partition: part,
        last_offset: info.last_offset,
        durable,
    }))
}

/// The partition leader's side of WriteTxnMarkers: writes `marker` on each of `partitions`
/// and waits (at most `timeout` each, concurrently) until the ISR has it. Partitions this
/// broker does not lead are answered NOT_LEADER_OR_FOLLOWER, unknown ones
/// UNKNOWN_TOPIC_OR_PARTITION. The appends run on the blocking pool; nothing blocks the
/// caller's runtime thread. Results are in the order of `partitions`; `Unavailable` when the
/// blocking pool could not run the appends.
pub async fn write_local_markers(
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    image: Arc<MetadataImage>,
    marker: TxnMarker,
    partitions: Vec<(String, i32)>,
    timeout: Duration,
) -> Result<Vec<PartitionResult>, MarkerError> {
    let appended = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        partitions
            .into_iter()
            .map(|(topic, index)| {
                let r = append_one(&replicas, &groups, &image, &marker, &topic, index, now);
                ((topic, index), r)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let appended = match appended {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("transaction marker appends did not run: {e}");
            return Err(MarkerError::Unavailable);
        }
    };
    Ok(join_all(appended.into_iter().map(|(tp, r)| async move {
        let result = match r {
            Ok(Some(waiter)) => waiter.wait(timeout).await,
            Ok(None) => Ok(()),
            Err(code) => Err(code),
        };
        (tp, result)
    }))
    .await)
}

/// Markers for one destination broker, queued to its link.
struct LinkJob {
    /// `host:port` of the broker as the image had it when the job was made.
    addr: String,
    marker: TxnMarker,
    partitions: Vec<(String, i32)>,
    reply: oneshot::Sender<Vec<PartitionResult>>,
}

impl LinkJob {
    fn answer_all(self, code: ErrorCode) {
        let results = self
            .partitions
            .into_iter()
            .map(|tp| (tp, Err(code)))
            .collect();
        let _ = self.reply.send(results);
    }
}

/// The coordinator's side: sends transaction markers to partition leaders and retries them
/// until written (Kafka's `TransactionMarkerChannelManager`).
///
/// Construct it once at startup and share it: it keeps one connection (and one sender task)
/// per destination broker, created on first use and kept for the life of the channel; the
/// tasks end when the channel is dropped. Several transactions may complete concurrently:
/// their markers to one broker are batched into one WriteTxnMarkers request.
pub struct TxnMarkerChannel {
    node_id: i32,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupCoordinator>,
    controller: Arc<Controller>,
    request_timeout: Duration,
    links: Mutex<HashMap<i32, mpsc::Sender<LinkJob>>>,
}

impl std::fmt::Debug for TxnMarkerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnMarkerChannel")
            .field("node_id", &self.node_id)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl TxnMarkerChannel {
    /// `node_id`: this broker (partitions it leads are written locally, without a request).
    /// `request_timeout`: bounds connecting to another broker and each WriteTxnMarkers
    /// exchange (on top of [`MARKER_WRITE_TIMEOUT`], the leader's own wait for its ISR);
    /// Kafka uses `request.timeout.ms`. Needs no runtime until [`Self::write_markers`] runs.
    pub fn new(
        node_id: i32,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupCoordinator>,
        controller: Arc<Controller>,
        request_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(TxnMarkerChannel {
            node_id,
            replicas,
            groups,
            controller,
            request_timeout,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Writes `req`'s marker on every partition of the transaction and returns once each is
    /// written and replicated on its leader. Partitions are grouped by their current leader
    /// in the metadata image: those this broker leads are written locally, the others are
    /// sent WriteTxnMarkers v1. Failed partitions are retried with a backoff (50 ms doubling
    /// to 1 s), re-resolving their leader each time, until all are written; a partition whose
    /// topic no longer exists is dropped. Before every round `still_coordinator()` is asked:
    /// false ends with [`MarkerError::NotCoordinator`] (the new coordinator completes the
    /// transaction). Cancel-safe: dropping the future abandons the remaining retries.
    pub async fn write_markers(
        &self,
        req: MarkerRequest,
        still_coordinator: impl Fn() -> bool + Send + Sync,
    ) -> Result<(), MarkerError> {
        let marker = req.marker();
        let mut pending: BTreeSet<(String, i32)> = req.partitions.into_iter().collect();
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            if !still_coordinator() {
                return Err(MarkerError::NotCoordinator);
            }
            let image = self.controller.image();
            let mut local = Vec::new();
            let mut remote: BTreeMap<i32, (String, Vec<(String, i32)>)> = BTreeMap::new();
            let mut gone = Vec::new();
            for tp in &pending {
                let Some(p) = image.topic(&tp.0).and_then(|t| t.partitions.get(&tp.1)) else {
                    gone.push(tp.clone());
                    continue;
                };
                if p.leader == self.node_id {
                    local.push(tp.clone());
                    continue;
                }
                // No leader, or one not reachable yet: retried after the backoff.
                let Some(broker) = image
                    .brokers
                    .get(&p.leader)
                    .filter(|b| p.leader >= 0 && !b.fenced)
                else {
                    continue;
                };
                remote
                    .entry(p.leader)
                    .or_insert_with(|| (format!("{}:{}", broker.host, broker.port), Vec::new()))
                    .1
                    .push(tp.clone());
            }
            for tp in gone {
                tracing::info!(
                    transactional_id = %req.transactional_id,
                    "{}-{} no longer exists: its transaction marker is skipped",
                    tp.0,
                    tp.1
                );
                pending.remove(&tp);
            }
            let local_done = async {
                if local.is_empty() {
                    return Ok(Vec::new());
                }
                write_local_markers(
                    self.replicas.clone(),
                    self.groups.clone(),
                    image.clone(),
                    marker,
                    local,
                    MARKER_WRITE_TIMEOUT,
                )
                .await
            };
            let remote_done = join_all(
                remote
                    .into_iter()
                    .map(|(dest, (addr, parts))| self.send(dest, addr, marker, parts)),
            );
            let (local_results, remote_results) = tokio::join!(local_done, remote_done);
            let local_results = local_results?;
            for ((topic, partition), result) in local_results
                .into_iter()
                .chain(remote_results.into_iter().flatten())
            {
                let code = result.err().unwrap_or(ErrorCode::UnknownServerError);
                match classify(result) {
                    Outcome::Written => {
                        pending.remove(&(topic, partition));
                    }
                    Outcome::Retry => {
                        tracing::debug!(
                            transactional_id = %req.transactional_id,
                            "transaction marker for {topic}-{partition} not written ({code:?}); retrying"
                        );
                    }
                    Outcome::Drop => {
                        tracing::info!(
                            transactional_id = %req.transactional_id,
                            "{topic}-{partition} cannot hold a transaction marker ({code:?}); skipped"
                        );
                        pending.remove(&(topic, partition));
                    }
                    Outcome::Fenced => {
                        return Err(MarkerError::Fenced {
                            topic,
                            partition,
                            code,
                        })
                    }
                    Outcome::Failed => {
                        tracing::error!(
                            transactional_id = %req.transactional_id,
                            "transaction marker for {topic}-{partition} refused: {code:?}"
                        );
                        return Err(MarkerError::Failed {
                            topic,
                            partition,
                            code,
                        });
                    }
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Sends one marker for `partitions` to broker `dest` through its link; transport
    /// failures come back as NETWORK_EXCEPTION for every partition.
    async fn send(
        &self,
        dest: i32,
        addr: String,
        marker: TxnMarker,
        partitions: Vec<(String, i32)>,
    ) -> Vec<PartitionResult> {
        let (reply, answer) = oneshot::channel();
        let fallback: Vec<PartitionResult> = partitions
            .iter()
            .map(|tp| (tp.clone(), Err(ErrorCode::NetworkException)))
            .collect();
        let job = LinkJob {
            addr,
            marker,
            partitions,
            reply,
        };
        let link = self.link(dest);
        if link.send(job).await.is_err() {
            return fallback;
        }
        answer.await.unwrap_or(fallback)
    }

    /// The queue of broker `dest`'s sender task, started on first use.
    fn link(&self, dest: i32) -> mpsc::Sender<LinkJob> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = links.get(&dest).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        tokio::spawn(run_link(
            format!("broker-{}-txn-marker-sender", self.node_id),
            self.request_timeout,
            rx,
        ));
        links.insert(dest, tx.clone());
        tx
    }
}

/// One destination broker's sender: takes queued jobs, batches what is waiting into one
/// WriteTxnMarkers request (never two markers of one producer in a request: the answer is
/// matched by producer id), and answers each job. Ends when the channel is dropped.
async fn run_link(client_id: String, request_timeout: Duration, mut rx: mpsc::Receiver<LinkJob>) {
    let mut client: Option<LeaderClient> = None;
    let mut carried: VecDeque<LinkJob> = VecDeque::new();
    loop {
        let first = match carried.pop_front() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let addr = first.addr.clone();
        let mut producers = HashSet::from([first.marker.producer_id]);
        let mut batch = vec![first];
        let mut later = VecDeque::new();
        while batch.len() < MAX_MARKERS_PER_REQUEST {
            let next = match carried.pop_front() {
                Some(job) => job,
                None => match rx.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            if next.addr == addr && producers.insert(next.marker.producer_id) {
                batch.push(next);
            } else {
                later.push_back(next);
            }
        }
        later.append(&mut carried);
        carried = later;
        let c = match &mut client {
            Some(c) if c.addr() == addr => c,
            _ => client.insert(LeaderClient::new(LeaderClientConfig {
                addr: addr.clone(),
                client_id: client_id.clone(),
                socket_timeout: request_timeout,
            })),
        };
        let request = WriteTxnMarkersRequest::default().with_markers(
            batch
                .iter()
                .map(|job| writable_marker(&job.marker, &job.partitions))
                .collect(),
        );
        match c
            .send(&request, WRITE_TXN_MARKERS_VERSION, MARKER_WRITE_TIMEOUT)
            .await
        {
            Ok(response) => {
                for job in batch {
                    let results = match response
                        .markers
                        .iter()
                        .find(|m| m.producer_id.0 == job.marker.producer_id)
                    {
                        Some(m) => job
                            .partitions
                            .iter()
                            .map(|tp| (tp.clone(), result_code(m, tp)))
                            .collect(),
                        None => job
                            .partitions
                            .iter()
                            .map(|tp| (tp.clone(), Err(ErrorCode::NetworkException)))
                            .collect(),
                    };
                    let _ = job.reply.send(results);
                }
            }
            Err(e) => {
                tracing::warn!("WriteTxnMarkers to {addr} failed: {e}");
                for job in batch {
                    job.answer_all(ErrorCode::NetworkException);
                }
            }
        }
    }
}

/// A partition's result in a marker's answer; one missing from it was not written.
fn result_code(
    m: &kafka_protocol::messages::write_txn_markers_response::WritableTxnMarkerResult,
    tp: &(String, i32),
) -> Result<(), ErrorCode> {
    let code = m
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == tp.0)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition_index == tp.1)
        .map(|p| p.error_code)
        .ok_or(ErrorCode::NetworkException)?;
    match ErrorCode::try_from_code(code) {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// The request form of one marker, its partitions grouped by topic.
fn writable_marker(marker: &TxnMarker, partitions: &[(String, i32)]) -> WritableTxnMarker {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        topics.entry(t.as_str()).or_default().push(*p);
    }
    WritableTxnMarker::default()
        .with_producer_id(ProducerId(marker.producer_id))
        .with_producer_epoch(marker.producer_epoch)
        .with_transaction_result(marker.control == ControlType::Commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_indexes(ps)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_retried_dropped_or_final_as_kafka_does() {
        assert_eq!(classify(Ok(())), Outcome::Written);
        for code in [
            ErrorCode::NotLeaderOrFollower,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::NotEnoughReplicas,
            ErrorCode::RequestTimedOut,
            ErrorCode::CoordinatorLoadInProgress,
            ErrorCode::NetworkException,
        ] {
            assert_eq!(classify(Err(code)), Outcome::Retry, "{code:?}");
        }
        assert_eq!(
            classify(Err(ErrorCode::TransactionCoordinatorFenced)),
            Outcome::Fenced
        );
        assert_eq!(
            classify(Err(ErrorCode::InvalidProducerEpoch)),
            Outcome::Fenced
        );
        assert_eq!(
            classify(Err(ErrorCode::UnsupportedForMessageFormat)),
            Outcome::Drop
        );
        assert_eq!(classify(Err(ErrorCode::CorruptMessage)), Outcome::Failed);
    }

    #[test]
    fn a_marker_groups_its_partitions_by_topic() {
        let marker = TxnMarker {
            producer_id: 7,
            producer_epoch: 2,
            coordinator_epoch: 3,
            control: ControlType::Commit,
        };
        let w = writable_marker(
            &marker,
            &[("b".into(), 1), ("a".into(), 0), ("b".into(), 0)],
        );
        assert_eq!(w.producer_id, ProducerId(7));
        assert!(w.transaction_result);
        assert_eq!((w.producer_epoch, w.coordinator_epoch), (2, 3));
        let topics: Vec<_> = w
            .topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect();
        assert_eq!(
            topics,
            vec![("a".to_string(), vec![0]), ("b".to_string(), vec![1, 0])]
        );
    }
}

#[cfg(test)]
#[path = "marker_tests.rs"]
mod marker_tests;
