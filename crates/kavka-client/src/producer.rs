//! The producer: records are partitioned, collected into one v2 batch per partition, and
//! sent in one Produce request per leader when a batch fills up or on `flush`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record};
use kavka_protocol::records;
use uuid::Uuid;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{self, codes, ClientError};
use crate::partitioner::{partition_for_key, StickyPartitioner};
use crate::topic_id;
use crate::Result;

/// `acks`: how many replicas must have the batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: no answer at all; offsets are unknown.
    None,
    /// `acks=1`: the leader wrote it.
    Leader,
    /// `acks=all` / `-1`: every in-sync replica has it.
    All,
}

impl Acks {
    pub fn as_i16(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(ClientError::InvalidArgument(format!(
                "invalid acks '{other}': expected all, -1, 0 or 1"
            ))),
        }
    }
}

/// Parses Kafka's `compression.type` names.
pub fn parse_compression(s: &str) -> Result<Compression> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" | "" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        other => Err(ClientError::InvalidArgument(format!(
            "invalid compression codec '{other}': expected none, gzip, snappy, lz4 or zstd"
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    pub compression: Compression,
    /// `batch.size`: a partition's batch is sent once its records reach this many bytes.
    pub batch_size: usize,
    /// `max.request.size`: the largest single record accepted.
    pub max_request_size: usize,
    /// Broker-side timeout for acks=all.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            compression: Compression::None,
            batch_size: 16 * 1024,
            max_request_size: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// Explicit partition; otherwise chosen from the key (or sticky when unkeyed).
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; now when unset.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    fn approx_size(&self) -> usize {
        // Record framing: length, attributes, deltas, lengths: at most ~21 bytes + headers'.
        21 + self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + self
                .headers
                .iter()
                .map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>()
    }
}

/// Where a batch landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceAck {
    pub topic: String,
    pub partition: i32,
    /// Offset of the batch's first record; -1 with acks=0.
    pub base_offset: i64,
    pub record_count: usize,
}

/// (topic, partition)
type TopicPartition = (String, i32);
/// A partition's batch waiting to be sent.
type Pending = (TopicPartition, PendingBatch);

#[derive(Debug, Default)]
struct PendingBatch {
    records: Vec<ProducerRecord>,
    bytes: usize,
}

pub struct Producer {
    cluster: Cluster,
    config: ProducerConfig,
    batches: IndexMap<TopicPartition, PendingBatch>,
    sticky: StickyPartitioner,
    acks: Vec<ProduceAck>,
    errors: Vec<ClientError>,
    failed_records: usize,
}

impl Producer {
    /// Connects with auto topic creation allowed, as the Java producer does.
    pub async fn connect(mut client: ClientConfig, config: ProducerConfig) -> Result<Self> {
        client.allow_auto_topic_creation = true;
        Ok(Producer::new(Cluster::connect(client).await?, config))
    }

    pub fn new(cluster: Cluster, config: ProducerConfig) -> Self {
        Producer {
            cluster,
            config,
            batches: IndexMap::new(),
            sticky: StickyPartitioner::new(),
            acks: Vec::new(),
            errors: Vec::new(),
            failed_records: 0,
        }
    }

    pub fn cluster(&mut self) -> &mut Cluster {
        &mut self.cluster
    }

    /// Queues `record`; sends every pending batch once one partition's batch is full.
    /// Errors here are about the record itself (unknown topic, bad partition, too large);
    /// delivery failures are reported by [`Producer::flush`].
    pub async fn send(&mut self, record: ProducerRecord) -> Result<()> {
        let size = record.approx_size();
        if size > self.config.max_request_size {
            return Err(ClientError::InvalidArgument(format!(
                "record of {size} bytes exceeds max.request.size {}",
                self.config.max_request_size
            )));
        }
        let count = self.cluster.partition_count(&record.topic).await?;
        if count == 0 {
            return Err(ClientError::kafka(
                codes::LEADER_NOT_AVAILABLE,
                &format!("topic '{}'", record.topic),
                Some("the topic has no partitions"),
            ));
        }
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p < 0 || p >= count => {
                return Err(ClientError::InvalidArgument(format!(
                    "partition {p} of topic '{}' does not exist (it has {count})",
                    record.topic
                )))
            }
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => self.sticky.partition(&record.topic, count),
        };
        let batch = self
            .batches
            .entry((record.topic.clone(), partition))
            .or_default();
        batch.bytes += size;
        batch.records.push(record);
        if batch.bytes >= self.config.batch_size {
            self.send_pending().await;
        }
        Ok(())
    }

    /// Sends everything pending and returns the acks since the last flush, or the first
    /// delivery error (with how many records failed) if any batch could not be written.
    pub async fn flush(&mut self) -> Result<Vec<ProduceAck>> {
        self.send_pending().await;
        let acks = std::mem::take(&mut self.acks);
        let failed = std::mem::take(&mut self.failed_records);
        let mut errors = std::mem::take(&mut self.errors);
        if errors.is_empty() {
            return Ok(acks);
        }
        let first = errors.swap_remove(0);
        Err(ClientError::NotDelivered {
            records: failed,
            first: Box::new(first),
        })
    }

    /// Sends all pending batches, retrying those whose leader moved. Failures are
    /// recorded for `flush`.
    async fn send_pending(&mut self) {
        let mut pending: Vec<Pending> = self.batches.drain(..).collect();
        // Unkeyed records move to a new partition once their batch is gone.
        let topics: std::collections::BTreeSet<String> =
            pending.iter().map(|((t, _), _)| t.clone()).collect();
        for t in topics {
            if let Ok(count) = self.cluster.partition_count(&t).await {
                self.sticky.advance(&t, count);
            }
        }
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut retry = Vec::new();
            let (by_leader, leaderless) = self.cluster.group_by_leader(pending).await;
            for ((tp, batch), e) in leaderless {
                if e.is_retriable() && attempt < self.cluster.config().retries {
                    retry.push((tp, batch));
                } else {
                    self.fail(&tp, batch.records.len(), e);
                }
            }
            for (leader, batches) in by_leader {
                let outcome = self.produce_to(leader, &batches).await;
                match outcome {
                    Ok(results) => {
                        for ((tp, batch), result) in batches.into_iter().zip(results) {
                            match result {
                                Ok(base_offset) => self.acks.push(ProduceAck {
                                    topic: tp.0,
                                    partition: tp.1,
                                    base_offset,
                                    record_count: batch.records.len(),
                                }),
                                Err(e)
                                    if e.is_retriable()
                                        && attempt < self.cluster.config().retries =>
                                {
                                    if e.is_stale_metadata() {
                                        self.cluster.invalidate(&tp.0);
                                    }
                                    retry.push((tp, batch));
                                }
                                Err(e) => self.fail(&tp, batch.records.len(), e),
                            }
                        }
                    }
                    Err(e) if e.is_retriable() && attempt < self.cluster.config().retries => {
                        for (tp, _) in &batches {
                            self.cluster.invalidate(&tp.0);
                        }
                        retry.extend(batches);
                    }
                    Err(e) => {
                        for (tp, batch) in batches {
                            self.fail(&tp, batch.records.len(), clone_error(&e));
                        }
                    }
                }
            }
            pending = retry;
            if !pending.is_empty() {
                attempt += 1;
                tokio::time::sleep(self.cluster.config().backoff(attempt)).await;
            }
        }
    }

    fn fail(&mut self, tp: &TopicPartition, records: usize, e: ClientError) {
        tracing::debug!("produce to {}-{} failed: {e}", tp.0, tp.1);
        self.failed_records += records;
        self.errors.push(e);
    }

    /// One Produce request to `leader` carrying `batches`; a result per batch, in order.
    async fn produce_to(&mut self, leader: i32, batches: &[Pending]) -> Result<Vec<Result<i64>>> {
        let now = now_ms();
        let mut encoded = Vec::with_capacity(batches.len());
        for ((_, _), batch) in batches {
            encoded.push(encode_batch(&batch.records, self.config.compression, now)?);
        }
        let topic_ids = self
            .cluster
            .topic_ids(batches.iter().map(|((t, _), _)| t.as_str()))
            .await;
        let acks = self.config.acks;
        let timeout_ms = i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(i32::MAX);
        let conn = self.cluster.connection(leader).await?;
        let version = conn.version_for::<ProduceRequest>(topic_id::version_cap(&topic_ids))?;
        let parts: Vec<(&str, i32, Bytes)> = batches
            .iter()
            .zip(encoded)
            .map(|(((t, p), _), bytes)| (t.as_str(), *p, bytes))
            .collect();
        let request = produce_request(&parts, &topic_ids, acks.as_i16(), timeout_ms);
        if acks == Acks::None {
            conn.send_without_response(&request, version).await?;
            return Ok(parts.iter().map(|_| Ok(-1)).collect());
        }
        let resp = conn.send_version(&request, version, Duration::ZERO).await?;
        Ok(produce_results(&parts, &topic_ids, &resp))
    }
}

fn clone_error(e: &ClientError) -> ClientError {
    match e.code() {
        Some(code) => ClientError::Kafka {
            code,
            name: error::error_name(code),
            message: e.to_string(),
        },
        None => ClientError::InvalidArgument(e.to_string()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Encodes `records` as one v2 batch (base offset 0, no producer id).
pub fn encode_batch(
    records: &[ProducerRecord],
    compression: Compression,
    now: i64,
) -> Result<Bytes> {
    let records: Vec<Record> = (0..)
        .zip(records)
        .map(|(offset, r)| to_record(r, offset, now))
        .collect();
    records::encode_batch(&records, compression)
        .map_err(|e| ClientError::InvalidArgument(e.to_string()))
}

/// The batch record for `r` at `offset` within its batch, stamped `now` unless it has a
/// timestamp; not transactional, no producer id.
pub(crate) fn to_record(r: &ProducerRecord, offset: i64, now: i64) -> Record {
    let mut record = records::plain_record(
        offset,
        r.timestamp.unwrap_or(now),
        r.key.clone(),
        r.value.clone(),
    );
    record.headers = r
        .headers
        .iter()
        .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
        .collect();
    record
}

/// A Produce request for `(topic, partition, batch)` triples, grouped by topic.
pub fn produce_request(
    parts: &[(&str, i32, Bytes)],
    topic_ids: &HashMap<String, Uuid>,
    acks: i16,
    timeout_ms: i32,
) -> ProduceRequest {
    let partitions = parts.iter().map(|(t, p, bytes)| {
        let partition = PartitionProduceData::default()
            .with_index(*p)
            .with_records(Some(bytes.clone()));
        (*t, partition)
    });
    let topics = topic_id::group_by_topic(partitions, topic_ids, |name, id, partitions| {
        TopicProduceData::default()
            .with_name(name)
            .with_topic_id(id)
            .with_partition_data(partitions)
    });
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(topics)
}

/// Matches each part to its partition response (by name, or topic id from v13).
pub fn produce_results(
    parts: &[(&str, i32, Bytes)],
    topic_ids: &HashMap<String, Uuid>,
    resp: &ProduceResponse,
) -> Vec<Result<i64>> {
    parts
        .iter()
        .map(|(t, p, _)| {
            let subject = format!("partition {t}-{p}");
            let id = topic_ids.get(*t).copied().unwrap_or_default();
            let topic = resp
                .responses
                .iter()
                .find(|r| topic_id::answers_for(&r.name, r.topic_id, t, id));
            let part = topic.and_then(|r| r.partition_responses.iter().find(|x| x.index == *p));
            match part {
                Some(x) => error::check(x.error_code, &subject, x.error_message.as_deref())
                    .map(|()| x.base_offset),
                None => Err(ClientError::InvalidArgument(format!(
                    "the broker did not answer for {subject}"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, Message};
    use kavka_protocol::records::decode_batches;

    /// Every codec a v2 batch may use.
    pub(crate) const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn rec(key: &str, value: &str) -> ProducerRecord {
        ProducerRecord::new("t", value.to_string()).with_key(key.to_string())
    }

    #[test]
    fn one_batch_per_call_with_every_codec() {
        let mut records: Vec<_> = (0..50)
            .map(|i| rec(&format!("k{i}"), &format!("v{i}")))
            .collect();
        records[3].headers = vec![
            ("h".into(), Some(Bytes::from_static(b"x"))),
            ("n".into(), None),
        ];
        records[4].key = None;
        for c in CODECS {
            let bytes = encode_batch(&records, c, 1234).unwrap();
            let header = kavka_protocol::record_batch::validate(&bytes).unwrap();
            assert_eq!(header.total_len(), bytes.len(), "{c:?}: exactly one batch");
            assert_eq!(header.records_count, 50);
            assert_eq!(header.base_sequence, -1);
            assert_eq!(header.producer_id, -1);
            let decoded = decode_batches(&bytes).unwrap();
            assert_eq!(decoded.len(), 50);
            assert_eq!(decoded[7].offset, 7);
            assert_eq!(decoded[7].key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(decoded[3].headers.len(), 2);
            assert_eq!(decoded[4].key, None);
            assert_eq!(decoded[0].timestamp, 1234);
        }
    }

    #[test]
    fn produce_request_round_trips_at_every_version() {
        let (lo, hi) = kavka_protocol::api_versions::supported_range(ApiKey::Produce).unwrap();
        let batch = encode_batch(&[rec("k", "v")], Compression::None, 1).unwrap();
        let parts = vec![
            ("a", 0, batch.clone()),
            ("b", 1, batch.clone()),
            ("a", 2, batch),
        ];
        let ids: HashMap<String, Uuid> = [
            ("a".to_string(), Uuid::from_u128(1)),
            ("b".to_string(), Uuid::from_u128(2)),
        ]
        .into();
        for v in lo.max(ProduceRequest::VERSIONS.min)..=hi.min(ProduceRequest::VERSIONS.max) {
            let req = produce_request(&parts, &ids, -1, 500);
            let mut buf = BytesMut::new();
            req.encode(&mut buf, v).unwrap();
            let back = ProduceRequest::decode(&mut buf.freeze(), v).unwrap();
            assert_eq!(back.topic_data.len(), 2, "v{v}: grouped by topic");
            assert_eq!(back.topic_data[0].partition_data.len(), 2);
            assert_eq!(back.acks, -1);

            let resp =
                ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("a")))
                    .with_topic_id(Uuid::from_u128(1))
                    .with_partition_responses(vec![
                        PartitionProduceResponse::default()
                            .with_index(0)
                            .with_base_offset(10),
                        PartitionProduceResponse::default()
                            .with_index(2)
                            .with_error_code(6),
                    ])]);
            let mut buf = BytesMut::new();
            resp.encode(&mut buf, v).unwrap();
            let resp = ProduceResponse::decode(&mut buf.freeze(), v).unwrap();
            let results = produce_results(&parts, &ids, &resp);
            assert_eq!(results[0].as_ref().ok(), Some(&10));
            assert!(results[1].is_err(), "missing partition is an error");
            assert!(results[2].as_ref().unwrap_err().is_stale_metadata());
        }
    }

    #[test]
    fn parses_acks_and_codecs() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap().as_i16(), -1);
        assert_eq!("0".parse::<Acks>().unwrap(), Acks::None);
        assert!("2".parse::<Acks>().is_err());
        assert_eq!(parse_compression("ZSTD").unwrap(), Compression::Zstd);
        assert!(parse_compression("brotli").is_err());
    }
}
