//! Produce: validate each partition's batches (header, CRC, counts; never decompress),
//! transactional ones included (the log checks them against the producer's transaction
//! state). A transactional batch that would start its producer's transaction on a partition
//! is first verified with the transaction coordinator (KIP-890 part 1, see
//! [`crate::txn::verification`]): appended only if the partition is in the producer's
//! Ongoing transaction, and only if the producer's state on the partition did not change
//! meanwhile (Kafka's verification guard; a marker in between refuses the batch).
//! Then append them in request order on the partitions this broker leads, then acknowledge per
//! `acks`: acks=1 after the local append, acks=all once the high watermark covers the batch
//! (every in-sync replica has it), waiting parked on the HW up to the request timeout; both
//! after fsync when the topic's flush policy says so.

use crate::broker::Broker;
use crate::partition::{Partition, PartitionError};
use crate::replica_manager::now_ms;
use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kavka_metadata::MetadataImage;
use kavka_protocol::error::ErrorCode;
use kavka_protocol::record_batch::{self, BatchError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on how long an acks=all produce waits for replication, whatever it asks for.
const MAX_TIMEOUT_MS: i32 = 5 * 60 * 1000;

/// Why a partition's records were refused, before touching the log.
fn validate(records: &[u8], version: i16) -> Result<(), (ErrorCode, String)> {
    if records.is_empty() {
        return Err((
            ErrorCode::InvalidRecord,
            "no record batch in produce request".into(),
        ));
    }
    let mut count = 0usize;
    for item in record_batch::batches(records) {
        let (_, h) = item.map_err(|e| {
            let code = match e {
                BatchError::UnsupportedMagic(_) => ErrorCode::InvalidRecord,
                BatchError::UnknownCompression(_) => ErrorCode::InvalidRecord,
                _ => ErrorCode::CorruptMessage,
            };
            (code, e.to_string())
        })?;
        if h.records_count != h.last_offset_delta.saturating_add(1) || h.records_count == 0 {
            return Err((
                ErrorCode::CorruptMessage,
                "record count does not match last offset delta".into(),
            ));
        }
        // Kafka's `validateBatch` for client appends: markers are the coordinator's alone.
        if h.is_control() {
            return Err((
                ErrorCode::InvalidRecord,
                "producers may not write control batches".into(),
            ));
        }
        if h.producer_id >= 0 && h.base_sequence < 0 {
            return Err((
                ErrorCode::InvalidRecord,
                format!(
                    "invalid sequence number {} in a batch of producer {}",
                    h.base_sequence, h.producer_id
                ),
            ));
        }
        // A transaction belongs to a producer id: without one no marker could ever end it
        // and the last stable offset would never pass it. (Kafka would append it untracked.)
        if h.is_transactional() && h.producer_id < 0 {
            return Err((
                ErrorCode::InvalidRecord,
                "transactional batch without a producer id".into(),
            ));
        }
        count += 1;
    }
    if version >= 3 && count != 1 {
        return Err((
            ErrorCode::InvalidRecord,
            "produce requests v3+ must contain exactly one record batch per partition".into(),
        ));
    }
    Ok(())
}

struct Appended {
    topic: usize,
    response: PartitionProduceResponse,
    /// What must happen before acknowledging, when the append succeeded.
    wait: Option<AckWait>,
}

/// An appended batch waiting to be acknowledged.
struct AckWait {
    partition: Arc<Partition>,
    last_offset: i64,
    /// The topic's flush policy wants an fsync first.
    durable: bool,
    /// acks=all: the high watermark must pass `last_offset`.
    replicated: bool,
}

impl AckWait {
    /// Waits for fsync and replication as required; a failure replaces the response.
    async fn run(
        self,
        response: PartitionProduceResponse,
        timeout: Duration,
    ) -> PartitionProduceResponse {
        let part = &self.partition;
        let waited = async {
            if self.durable {
                part.wait_durable(self.last_offset).await?;
            }
            if self.replicated {
                part.wait_replicated(self.last_offset, timeout).await?;
            }
            Ok::<(), PartitionError>(())
        };
        match waited.await {
            Ok(()) => response,
            Err(e) => {
                let code = super::partition_error_code(&e, &part.topic, part.index);
                error_response(response.index, code, Some(e.to_string()))
            }
        }
    }
}

fn error_response(
    index: i32,
    code: ErrorCode,
    message: Option<String>,
) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(StrBytes::from_string))
}

/// What transaction verification decided for one partition of the request, by (topic index,
/// partition index) in the request.
enum Verified {
    /// In the producer's transaction: append only while the producer's verification
    /// `guard` on the partition still stands (no marker came in between), or once its
    /// transaction is ongoing there (an earlier batch of the same transaction started it).
    Guarded { producer_id: i64, guard: u64 },
    /// Not appended: this code and message.
    Refused(ErrorCode, String),
}

type Verifications = HashMap<(usize, usize), Verified>;

/// The producer id and epoch of the first transactional batch of a partition's records
/// (headers only; malformed data is left to `validate`).
fn transactional_producer(records: &[u8]) -> Option<(i64, i16)> {
    record_batch::batches(records)
        .map_while(Result::ok)
        .find(|(_, h)| h.is_transactional() && h.producer_id >= 0)
        .map(|(_, h)| (h.producer_id, h.producer_epoch))
}

/// A partition whose transactional batch needs the coordinator's word first.
struct Unverified {
    key: (usize, usize),
    partition: (String, i32),
    guard: u64,
}

/// KIP-890 part 1: asks the coordinator about every partition this broker leads where the
/// request's transactional batch would start its producer's transaction (Kafka's
/// `ReplicaManager.appendRecords` with `transaction.partition.verification.enable`).
/// `Err`: every partition is refused with that code (transactional batches of more than one
/// producer, Kafka's "Transactional records contained more than one producer ID").
async fn verify(
    b: &Broker,
    image: &MetadataImage,
    req: &ProduceRequest,
    transactional_id: &str,
) -> Result<Verifications, ErrorCode> {
    // Per producer epoch (a client sends one, but the log is the judge of a mix).
    let mut todo: BTreeMap<i16, Vec<Unverified>> = BTreeMap::new();
    let mut producers = BTreeSet::new();
    for (ti, topic) in req.topic_data.iter().enumerate() {
        for (pi, p) in topic.partition_data.iter().enumerate() {
            let Some((producer_id, epoch)) = p.records.as_deref().and_then(transactional_producer)
            else {
                continue;
            };
            producers.insert(producer_id);
            // Partitions not led here are refused by the append; an internal topic too.
            if crate::internal_topics::is_internal(&topic.name) {
                continue;
            }
            let Some(part) = b
                .replicas
                .get(&topic.name, p.index)
                .filter(|p| p.is_leader())
            else {
                continue;
            };
            // The guard is set before the coordinator is asked, so a marker written
            // meanwhile clears it (Kafka's VerificationGuard).
            let Ok((snapshot, guard)) = part.begin_txn_verification(producer_id) else {
                continue;
            };
            if snapshot
                .as_ref()
                .is_some_and(|e| e.current_txn_first_offset.is_some())
            {
                // The transaction is ongoing here: this batch continues it.
                continue;
            }
            todo.entry(epoch).or_default().push(Unverified {
                key: (ti, pi),
                partition: (topic.name.to_string(), p.index),
                guard,
            });
        }
    }
    let producer_id = match producers.len() {
        0 => return Ok(Verifications::new()),
        1 => producers.into_iter().next().unwrap_or(-1),
        _ => return Err(ErrorCode::InvalidProducerIdMapping),
    };
    let mut out = Verifications::new();
    for (epoch, parts) in todo {
        let tps: Vec<(String, i32)> = parts.iter().map(|u| u.partition.clone()).collect();
        let verdicts = b
            .txn_verifier
            .verify(&b.txns, image, transactional_id, producer_id, epoch, &tps)
            .await;
        debug_assert_eq!(verdicts.len(), parts.len());
        for (u, verdict) in parts.into_iter().zip(verdicts) {
            let v = match verdict {
                Ok(()) => Verified::Guarded {
                    producer_id,
                    guard: u.guard,
                },
                Err(code) => {
                    let (code, msg) = crate::txn::verification::produce_error(code);
                    tracing::debug!(
                        %transactional_id, producer_id, topic = %u.partition.0,
                        partition = u.partition.1, "produce refused: {msg}"
                    );
                    Verified::Refused(code, msg)
                }
            };
            out.insert(u.key, v);
        }
    }
    Ok(out)
}

/// Appends every partition's data. Blocking (file writes).
fn append_all(
    b: &Broker,
    image: &MetadataImage,
    req: &ProduceRequest,
    version: i16,
    convert: ConvertFn,
    verified: &Verifications,
) -> Vec<Appended> {
    let now = now_ms();
    let acks_all = req.acks == -1;
    let mut out = Vec::new();
    for (ti, topic) in req.topic_data.iter().enumerate() {
        for (pi, p) in topic.partition_data.iter().enumerate() {
            let response = |code, msg| Appended {
                topic: ti,
                response: error_response(p.index, code, msg),
                wait: None,
            };
            // Only the coordinator writes its internal topic (Kafka's "Cannot append to
            // internal topic").
            if crate::internal_topics::is_internal(&topic.name) {
                out.push(response(
                    ErrorCode::InvalidTopicException,
                    Some("cannot append to an internal topic".to_string()),
                ));
                continue;
            }
            let Some(part) = b.replicas.get(&topic.name, p.index) else {
                // A partition the cluster has but this broker does not host: the client
                // refreshes its metadata and goes to the leader.
                let code = match super::fetch::image_leader(image, &topic.name, p.index) {
                    Some(_) => ErrorCode::NotLeaderOrFollower,
                    None => ErrorCode::UnknownTopicOrPartition,
                };
                out.push(response(code, None));
                continue;
            };
            if !part.is_leader() {
                out.push(response(ErrorCode::NotLeaderOrFollower, None));
                continue;
            }
            let records: Bytes = p.records.clone().unwrap_or_default();
            let mut buf: BytesMut = match convert(records, version) {
                Ok(b) => b,
                Err((code, msg)) => {
                    out.push(response(code, Some(msg)));
                    continue;
                }
            };
            if let Err((code, msg)) = validate(&buf, version) {
                out.push(response(code, Some(msg)));
                continue;
            }
            let guard = match verified.get(&(ti, pi)) {
                Some(Verified::Refused(code, msg)) => {
                    out.push(response(*code, Some(msg.clone())));
                    continue;
                }
                Some(Verified::Guarded { producer_id, guard }) => Some((*producer_id, *guard)),
                None => None,
            };
            // Kafka refuses acks=all before the append when the ISR is too small.
            if acks_all {
                if let Err(e) = part.check_enough_replicas() {
                    let code = super::partition_error_code(&e, &topic.name, p.index);
                    out.push(response(code, Some(e.to_string())));
                    continue;
                }
            }
            let result = match guard {
                Some((producer_id, guard)) => {
                    part.append_guarded(&mut buf, now, producer_id, guard)
                }
                None => part.append(&mut buf, now),
            };
            match result {
                Ok((info, must_sync)) => {
                    let resp = PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(info.first_offset)
                        .with_log_append_time_ms(info.log_append_time)
                        .with_log_start_offset(info.log_start_offset);
                    let wait = (must_sync || acks_all).then(|| AckWait {
                        partition: part.clone(),
                        last_offset: info.last_offset,
                        durable: must_sync,
                        replicated: acks_all,
                    });
                    out.push(Appended {
                        topic: ti,
                        response: resp,
                        wait,
                    });
                }
                Err(e) => {
                    let code = super::partition_error_code(&e, &topic.name, p.index);
                    out.push(response(code, Some(e.to_string())));
                }
            }
        }
    }
    out
}

/// Turns the records of a request into v2 batches ready for the log: a copy we may rewrite
/// (base offsets), converted from magic 0/1 where an old client sent those.
pub type ConvertFn = fn(Bytes, i16) -> Result<BytesMut, (ErrorCode, String)>;

/// Every partition of `req` answered with `code`, nothing appended.
fn refuse_all(req: &ProduceRequest, code: ErrorCode) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    for t in &req.topic_data {
        let parts = t
            .partition_data
            .iter()
            .map(|p| error_response(p.index, code, None))
            .collect();
        resp.responses.push(
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(parts),
        );
    }
    resp
}

/// Whether any partition carries a transactional batch (headers only; a malformed batch is
/// left for the per-partition validation to refuse).
fn has_transactional_records(req: &ProduceRequest) -> bool {
    req.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.as_ref())
        .any(|r| {
            record_batch::batches(r)
                .map_while(Result::ok)
                .any(|(_, h)| h.is_transactional())
        })
}

/// `Ok(None)`: acks=0, no response. `Err`: the connection should be closed.
pub async fn handle(
    b: Arc<Broker>,
    req: ProduceRequest,
    version: i16,
) -> Result<Option<ProduceResponse>, String> {
    handle_with(b, req, version, super::legacy::convert_produce_records).await
}

pub async fn handle_with(
    b: Arc<Broker>,
    req: ProduceRequest,
    version: i16,
    convert: ConvertFn,
) -> Result<Option<ProduceResponse>, String> {
    // Kafka authorizes transactional records against the request's transactional id before
    // anything else; without one the whole request is refused (there are no ACLs here, so
    // a named id always passes).
    if req.transactional_id.is_none() && has_transactional_records(&req) {
        return Ok(Some(refuse_all(
            &req,
            ErrorCode::TransactionalIdAuthorizationFailed,
        )));
    }
    let acks = req.acks;
    if acks != 0 && acks != 1 && acks != -1 {
        return Ok(Some(refuse_all(&req, ErrorCode::InvalidRequiredAcks)));
    }
    let names: Vec<_> = req.topic_data.iter().map(|t| t.name.clone()).collect();
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, MAX_TIMEOUT_MS) as u64);
    let image = b.controller.image();
    let verified = match req.transactional_id.as_ref() {
        Some(id)
            if b.txns.config().partition_verification_enable && has_transactional_records(&req) =>
        {
            match verify(&b, &image, &req, id.as_str()).await {
                Ok(v) => v,
                Err(code) => return Ok(Some(refuse_all(&req, code))),
            }
        }
        _ => Verifications::new(),
    };
    let image2 = image.clone();
    let b2 = b.clone();
    let io_bytes: usize = req
        .topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
        .sum();
    let appended = crate::offload::run_io(io_bytes, move || {
        append_all(&b2, &image2, &req, version, convert, &verified)
    })
    .await
    .map_err(|e| format!("produce handler failed: {e}"))?;
    if acks == 0 {
        return Ok(None);
    }
    let mut topics: Vec<TopicProduceResponse> = names
        .into_iter()
        .map(|n| TopicProduceResponse::default().with_name(n))
        .collect();
    // Every partition waits at once (each parked on its own watch), under one timeout.
    let responses = join_all(appended.into_iter().map(|a| async move {
        let response = match a.wait {
            Some(wait) => wait.run(a.response, timeout).await,
            None => a.response,
        };
        (a.topic, response)
    }))
    .await;
    let mut leaders = BTreeSet::new();
    for (ti, mut response) in responses {
        let Some(t) = topics.get_mut(ti) else {
            continue;
        };
        // KIP-951: tell the client where the leader is.
        if version >= 10 && response.error_code == ErrorCode::NotLeaderOrFollower.code() {
            if let Some((leader, epoch)) =
                super::fetch::image_leader(&image, &t.name, response.index)
            {
                response.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
                leaders.insert(leader);
            }
        }
        t.partition_responses.push(response);
    }
    let node_endpoints = leaders
        .into_iter()
        .filter_map(|id| image.brokers.get(&id).filter(|br| !br.fenced))
        .map(|br| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(br.node_id))
                .with_host(StrBytes::from_string(br.host.clone()))
                .with_port(i32::from(br.port))
                .with_rack(br.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    Ok(Some(
        ProduceResponse::default()
            .with_responses(topics)
            .with_node_endpoints(node_endpoints),
    ))
}

#[cfg(test)]
mod tests {
    //! Produce and Fetch on a broker started in-process as node 1, with node 2 registered
    //! but never running: node 1 leads `led` (replicas 1, 2) and follows `followed`
    //! (replicas 2, 1). Node 2's follower fetches are sent to the Fetch handler by hand.

    use super::*;
    use crate::handlers::fetch;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::records::Compression;
    use kavka_metadata::{CreateTopicSpec, TopicDefaults};
    use kavka_protocol::records::{encode_batch, plain_record};

    const LED: &str = "led";
    const FOLLOWED: &str = "followed";
    const FOLLOWER: i32 = 2;
    /// Bound on polling for an asynchronous effect (20 ms apart).
    const POLLS: usize = 500;

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.to_string()))
    }

    async fn setup(dir: &std::path::Path) -> crate::RunningBroker {
        let overrides = [
            "node.id=1".to_string(),
            "listeners=PLAINTEXT://127.0.0.1:0".to_string(),
            format!("log.dirs={}", dir.join("logs").display()),
            format!("metadata.log.dir={}", dir.join("meta").display()),
            "replica.fetch.backoff.ms=1000".to_string(),
        ];
        let config = crate::config::BrokerConfig::from_properties("", &overrides)
            .unwrap()
            .0;
        let running = crate::start(config).await.unwrap();
        let b = running.broker.clone();
        tokio::task::spawn_blocking(move || {
            b.controller
                .register_broker(FOLLOWER, "127.0.0.1", 9, None)
                .unwrap();
            let specs = [(LED, vec![1, FOLLOWER]), (FOLLOWED, vec![FOLLOWER, 1])]
                .into_iter()
                .map(|(topic, replicas)| CreateTopicSpec {
                    name: topic.into(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: vec![(0, replicas)],
                    configs: Default::default(),
                })
                .collect();
            let defaults = TopicDefaults {
                num_partitions: 1,
                replication_factor: 1,
            };
            for r in b.controller.create_topics(specs, false, &defaults) {
                r.unwrap();
            }
        })
        .await
        .unwrap();
        let b = &running.broker;
        for _ in 0..POLLS {
            let led = b.replicas.get(LED, 0).is_some_and(|p| p.is_leader());
            let followed = b.replicas.get(FOLLOWED, 0).is_some_and(|p| !p.is_leader());
            if led && followed {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the partitions never took their roles");
    }

    fn produce_request(topic: &str, acks: i16, timeout_ms: i32) -> ProduceRequest {
        let batch = encode_batch(
            // A current timestamp: a 1970 one is past retention, and the broker's first
            // housekeeping round (run at start, late on a loaded machine) would delete it.
            &[plain_record(
                0,
                crate::replica_manager::now_ms(),
                None,
                Some(Bytes::from_static(b"v")),
            )],
            Compression::None,
        )
        .unwrap();
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(timeout_ms)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])])
    }

    fn fetch_request(topic: &str, replica_id: i32, offset: i64) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id(BrokerId(replica_id))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(0)
                    .with_partition_max_bytes(1 << 20)])])
    }

    async fn produce(b: &Arc<Broker>, req: ProduceRequest, version: i16) -> ProduceResponse {
        handle(b.clone(), req, version).await.unwrap().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_all_waits_for_the_follower_and_a_non_leader_names_the_leader() {
        let dir = tempfile::tempdir().unwrap();
        let running = setup(dir.path()).await;
        let b = running.broker.clone();
        let led = b.replicas.get(LED, 0).unwrap();

        // Node 2 never fetched: the HW cannot cover the batch in time.
        let resp = produce(&b, produce_request(LED, -1, 50), 9).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ErrorCode::RequestTimedOut.code(), "{resp:?}");
        assert_eq!(led.log_end_offset(), 1, "the batch was appended");

        // A second acks=all produce parks until node 2's fetch shows it has both batches.
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { produce(&b, produce_request(LED, -1, 60_000), 9).await }
        });
        for _ in 0..POLLS {
            if led.log_end_offset() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(led.log_end_offset(), 2);
        assert_eq!(led.high_watermark(), 0);
        let consumer = fetch::handle(b.clone(), fetch_request(LED, -1, 0), 12).await;
        let d = &consumer.responses[0].partitions[0];
        assert_eq!((d.error_code, d.high_watermark), (0, 0));
        assert!(
            d.records.as_ref().unwrap().is_empty(),
            "consumers stop at the HW"
        );

        let follower = fetch::handle(b.clone(), fetch_request(LED, FOLLOWER, 0), 12).await;
        let d = &follower.responses[0].partitions[0];
        assert_eq!(d.error_code, 0, "{follower:?}");
        assert_eq!(
            record_batch::batches(d.records.as_ref().unwrap()).count(),
            2,
            "a follower reads up to the log end"
        );
        let follower = fetch::handle(b.clone(), fetch_request(LED, FOLLOWER, 2), 12).await;
        let d = &follower.responses[0].partitions[0];
        assert_eq!((d.error_code, d.high_watermark), (0, 2));
        let resp = waiting.await.unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 1), "{resp:?}");

        // Node 1 follows `followed`: refused, with where to go instead.
        let epoch = b
            .controller
            .image()
            .topic(FOLLOWED)
            .and_then(|t| t.partitions.get(&0).map(|p| p.leader_epoch))
            .unwrap();
        let resp = produce(&b, produce_request(FOLLOWED, 1, 1_000), 10).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ErrorCode::NotLeaderOrFollower.code());
        assert_eq!(
            (p.current_leader.leader_id, p.current_leader.leader_epoch),
            (BrokerId(FOLLOWER), epoch)
        );
        let endpoints: Vec<_> = resp
            .node_endpoints
            .iter()
            .map(|e| (e.node_id, e.host.to_string(), e.port))
            .collect();
        assert_eq!(endpoints, vec![(BrokerId(FOLLOWER), "127.0.0.1".into(), 9)]);
        let consumer = fetch::handle(b.clone(), fetch_request(FOLLOWED, -1, 0), 12).await;
        let d = &consumer.responses[0].partitions[0];
        assert_eq!(d.error_code, ErrorCode::NotLeaderOrFollower.code());
        assert_eq!(d.current_leader.leader_id, BrokerId(FOLLOWER));

        running.shutdown().await;
    }
}
