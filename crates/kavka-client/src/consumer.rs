//! The consumer: explicitly assigned partitions (no group yet), starting offsets resolved
//! with ListOffsets, and a Fetch loop that decodes v2 batches (compressed ones included).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kavka_protocol::record_batch::BatchError;
use kavka_protocol::records::{
    decode_batches_detailed, DecodedBatch, RecordsError, DEFAULT_MAX_DECOMPRESSED_BYTES,
};
use uuid::Uuid;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{self, codes, ClientError};
use crate::topic_id;
use crate::Result;

/// ListOffsets' special timestamps.
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (only records produced from now on).
    Latest,
    /// This exact offset; a fetch outside the log reports OFFSET_OUT_OF_RANGE.
    Offset(i64),
    /// The first offset whose timestamp is at or after this one (ms); the log end if none.
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `fetch.max.wait.ms`: how long the broker may hold a fetch waiting for `min_bytes`.
    pub max_wait: Duration,
    /// `fetch.min.bytes`.
    pub min_bytes: i32,
    /// `fetch.max.bytes`.
    pub max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub partition_max_bytes: i32,
    /// 0 read_uncommitted, 1 read_committed.
    pub isolation_level: i8,
    /// Upper bound on the decompressed size of one partition's records in one fetch
    /// response, so a compression bomb cannot exhaust memory.
    pub max_decompressed_bytes: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            isolation_level: 0,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    /// True for `LogAppendTime`, false for `CreateTime`.
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    /// Assigned partitions and the next offset to fetch from each.
    positions: IndexMap<(String, i32), i64>,
    /// Rotates which partition comes first in a fetch, so none starves behind the others
    /// when responses hit `max_bytes`.
    rotation: usize,
    failed_rounds: u32,
}

impl Consumer {
    pub async fn connect(client: ClientConfig, config: ConsumerConfig) -> Result<Self> {
        Ok(Consumer::new(Cluster::connect(client).await?, config))
    }

    pub fn new(cluster: Cluster, config: ConsumerConfig) -> Self {
        Consumer {
            cluster,
            config,
            positions: IndexMap::new(),
            rotation: 0,
            failed_rounds: 0,
        }
    }

    pub fn cluster(&mut self) -> &mut Cluster {
        &mut self.cluster
    }

    /// Partition indexes of `topic`.
    pub async fn partitions_for(&mut self, topic: &str) -> Result<Vec<i32>> {
        Ok(self
            .cluster
            .topic(topic)
            .await?
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect())
    }

    /// Adds `partitions` of `topic` to the assignment, starting at `spec`. Returns the
    /// resolved start offset of each.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<(i32, i64)>> {
        let md = self.cluster.topic(topic).await?;
        for p in partitions {
            if md.partition(*p).is_none() {
                return Err(ClientError::kafka(
                    codes::UNKNOWN_TOPIC_OR_PARTITION,
                    &format!("partition {topic}-{p}"),
                    None,
                ));
            }
        }
        let offsets = self.list_offsets(topic, partitions, spec).await?;
        for (p, offset) in &offsets {
            self.positions.insert((topic.to_string(), *p), *offset);
        }
        Ok(offsets)
    }

    /// Moves the next fetch of an assigned partition to `offset`.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) {
        self.positions
            .insert((topic.to_string(), partition), offset);
    }

    /// The next offset that will be fetched.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions.get(&(topic.to_string(), partition)).copied()
    }

    /// Resolves `spec` for each partition with ListOffsets (sent to each leader).
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<(i32, i64)>> {
        let timestamp = match spec {
            OffsetSpec::Offset(o) if o < 0 => {
                return Err(ClientError::InvalidArgument(format!("invalid offset {o}")))
            }
            OffsetSpec::Offset(o) => return Ok(partitions.iter().map(|p| (*p, o)).collect()),
            OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
            OffsetSpec::Latest => LATEST_TIMESTAMP,
            OffsetSpec::Timestamp(t) => t,
        };
        let mut resolved: BTreeMap<i32, i64> = BTreeMap::new();
        let mut todo: Vec<i32> = partitions.to_vec();
        let mut attempt = 0;
        loop {
            let mut last_error = None;
            let (by_leader, leaderless) = self
                .cluster
                .group_by_leader(todo.iter().map(|p| (topic, *p)))
                .await;
            for (_, e) in leaderless {
                if !e.is_retriable() {
                    return Err(e);
                }
                last_error = Some(e);
            }
            let mut retry = Vec::new();
            for (leader, parts) in by_leader {
                let parts: Vec<i32> = parts.into_iter().map(|(_, p)| p).collect();
                let result = self.list_offsets_on(leader, topic, &parts, timestamp).await;
                match result {
                    Ok(results) => {
                        for (p, r) in parts.iter().zip(results) {
                            match r {
                                Ok(offset) => {
                                    resolved.insert(*p, offset);
                                }
                                Err(e) if e.is_retriable() => {
                                    if e.is_stale_metadata() {
                                        self.cluster.invalidate(topic);
                                    }
                                    retry.push(*p);
                                    last_error = Some(e);
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Err(e) if e.is_retriable() => {
                        self.cluster.invalidate(topic);
                        retry.extend(parts);
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            // Partitions whose leader lookup failed are retried too.
            let unresolved: Vec<i32> = todo
                .iter()
                .filter(|p| !resolved.contains_key(p) && !retry.contains(p))
                .copied()
                .collect();
            retry.extend(unresolved);
            if retry.is_empty() {
                break;
            }
            if attempt >= self.cluster.config().retries {
                let last = last_error.unwrap_or_else(|| {
                    ClientError::InvalidArgument("offsets could not be resolved".into())
                });
                return Err(ClientError::RetriesExhausted {
                    attempts: attempt + 1,
                    last: Box::new(last),
                });
            }
            attempt += 1;
            tokio::time::sleep(self.cluster.config().backoff(attempt)).await;
            todo = retry;
        }
        // No record at or after the timestamp: start at the log end, like Java's seek.
        if let OffsetSpec::Timestamp(_) = spec {
            let missing: Vec<i32> = resolved
                .iter()
                .filter(|(_, o)| **o < 0)
                .map(|(p, _)| *p)
                .collect();
            if !missing.is_empty() {
                let ends = Box::pin(self.list_offsets(topic, &missing, OffsetSpec::Latest)).await?;
                resolved.extend(ends);
            }
        }
        Ok(partitions
            .iter()
            .filter_map(|p| resolved.get(p).map(|o| (*p, *o)))
            .collect())
    }

    async fn list_offsets_on(
        &mut self,
        leader: i32,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<Result<i64>>> {
        let isolation_level = self.config.isolation_level;
        let conn = self.cluster.connection(leader).await?;
        let version = conn.version_for::<ListOffsetsRequest>(None)?;
        let request = list_offsets_request(topic, partitions, timestamp, isolation_level);
        let resp = conn.send_version(&request, version, Duration::ZERO).await?;
        Ok(partitions
            .iter()
            .map(|p| {
                let subject = format!("partition {topic}-{p}");
                let part = resp
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|x| x.partition_index == *p);
                match part {
                    Some(x) => error::check(x.error_code, &subject, None).map(|()| x.offset),
                    None => Err(ClientError::InvalidArgument(format!(
                        "the broker did not answer ListOffsets for {subject}"
                    ))),
                }
            })
            .collect())
    }

    /// One fetch round over every assigned partition: returns the records that arrived
    /// (possibly none after `max_wait`). OFFSET_OUT_OF_RANGE and other non-retriable
    /// errors are returned; leader moves are followed within the retry budget.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>> {
        if self.positions.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no partitions are assigned".into(),
            ));
        }
        let n = self.positions.len();
        self.rotation = (self.rotation + 1) % n;
        let mut order: Vec<(String, i32)> = self.positions.keys().cloned().collect();
        order.rotate_left(self.rotation);

        let mut last_error = None;
        let (by_leader, leaderless) = self.cluster.group_by_leader(order).await;
        for ((t, _), e) in leaderless {
            if !e.is_retriable() {
                return Err(e);
            }
            self.cluster.invalidate(&t);
            last_error = Some(e);
        }
        let mut records = Vec::new();
        for (leader, parts) in by_leader {
            match self.fetch_from(leader, &parts, &mut records).await {
                Ok(None) => {}
                Ok(Some(stale)) => last_error = Some(stale),
                Err(e) if e.is_retriable() => {
                    for (t, _) in &parts {
                        self.cluster.invalidate(t);
                    }
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // A round that returned nothing and hit errors counts against the retry budget
        // and backs off, so a partition stuck without a leader cannot spin the loop.
        match last_error {
            Some(e) if records.is_empty() => {
                self.failed_rounds += 1;
                if self.failed_rounds > self.cluster.config().retries {
                    return Err(ClientError::RetriesExhausted {
                        attempts: self.failed_rounds,
                        last: Box::new(e),
                    });
                }
                tokio::time::sleep(self.cluster.config().backoff(self.failed_rounds)).await;
            }
            _ => self.failed_rounds = 0,
        }
        Ok(records)
    }

    async fn fetch_from(
        &mut self,
        leader: i32,
        parts: &[(String, i32)],
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<Option<ClientError>> {
        let topic_ids = self
            .cluster
            .topic_ids(parts.iter().map(|(t, _)| t.as_str()))
            .await;
        let fetch: Vec<(&str, i32, i64)> = parts
            .iter()
            .map(|(t, p)| {
                (
                    t.as_str(),
                    *p,
                    self.positions.get(&(t.clone(), *p)).copied().unwrap_or(0),
                )
            })
            .collect();
        let config = self.config.clone();
        let conn = self.cluster.connection(leader).await?;
        let version = conn.version_for::<FetchRequest>(topic_id::version_cap(&topic_ids))?;
        let request = fetch_request(&fetch, &topic_ids, &config);
        let resp = conn
            .send_version(&request, version, config.max_wait)
            .await?;
        error::check(resp.error_code, "fetch", None)?;

        let mut stale = None;
        for (t, p, position) in fetch {
            let subject = format!("partition {t}-{p}");
            let Some(data) =
                find_partition(&resp, t, topic_ids.get(t).copied().unwrap_or_default(), p)
            else {
                continue;
            };
            match data.error_code {
                codes::NONE => {}
                codes::OFFSET_OUT_OF_RANGE => {
                    return Err(ClientError::Kafka {
                        code: codes::OFFSET_OUT_OF_RANGE,
                        name: error::error_name(codes::OFFSET_OUT_OF_RANGE),
                        message: format!(
                            "offset {position} is out of range for {subject} (log start offset {}, high watermark {})",
                            data.log_start_offset, data.high_watermark
                        ),
                    })
                }
                code if error::is_retriable_code(code) => {
                    stale = Some(ClientError::kafka(code, &subject, None));
                    continue;
                }
                code => return Err(ClientError::kafka(code, &subject, None)),
            }
            let Some(bytes) = data.records.clone() else {
                continue;
            };
            let aborted: Vec<(i64, i64)> = data
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            let (records, next) = decode_records(
                t,
                p,
                bytes,
                position,
                &aborted,
                config.max_decompressed_bytes,
            )?;
            out.extend(records);
            self.positions.insert((t.to_string(), p), next);
        }
        match stale {
            // Some partitions were served; the stale ones are retried next round.
            Some(e) => {
                for (t, _) in parts {
                    self.cluster.invalidate(t);
                }
                tracing::debug!("fetch: {e}");
                Ok(Some(e))
            }
            None => Ok(None),
        }
    }
}

fn find_partition<'a>(
    resp: &'a FetchResponse,
    topic: &str,
    topic_id: Uuid,
    partition: i32,
) -> Option<&'a kafka_protocol::messages::fetch_response::PartitionData> {
    resp.responses
        .iter()
        .filter(|r| topic_id::answers_for(&r.topic, r.topic_id, topic, topic_id))
        .flat_map(|r| r.partitions.iter())
        .find(|d| d.partition_index == partition)
}

pub fn list_offsets_request(
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
    isolation_level: i8,
) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        // A consumer, not a replica.
        .with_replica_id((-1).into())
        .with_isolation_level(isolation_level)
        .with_timeout_ms(30_000)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )])
}

/// A full (sessionless) fetch of `(topic, partition, offset)` triples.
pub fn fetch_request(
    parts: &[(&str, i32, i64)],
    topic_ids: &HashMap<String, Uuid>,
    config: &ConsumerConfig,
) -> FetchRequest {
    let partitions = parts.iter().map(|(t, p, offset)| {
        let partition = FetchPartition::default()
            .with_partition(*p)
            .with_fetch_offset(*offset)
            .with_partition_max_bytes(config.partition_max_bytes);
        (*t, partition)
    });
    let topics = topic_id::group_by_topic(partitions, topic_ids, |name, id, partitions| {
        FetchTopic::default()
            .with_topic(name)
            .with_topic_id(id)
            .with_partitions(partitions)
    });
    FetchRequest::default()
        .with_max_wait_ms(i32::try_from(config.max_wait.as_millis()).unwrap_or(i32::MAX))
        .with_min_bytes(config.min_bytes)
        .with_max_bytes(config.max_bytes)
        .with_isolation_level(config.isolation_level)
        // session 0 / epoch -1: a full fetch without a fetch session.
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Decodes the complete v2 batches in a fetched `records` blob. Records below `position`
/// (the batch started earlier) and control records are skipped; a partial batch at the end
/// (the broker cuts at the size limit) is left for the next fetch. `aborted` lists the
/// fetch response's aborted transactions, `(producer id, first offset)`, which a
/// read_committed consumer drops, as Java's fetcher does. Returns the records and the next
/// position.
pub fn decode_records(
    topic: &str,
    partition: i32,
    buf: Bytes,
    position: i64,
    aborted: &[(i64, i64)],
    max_decompressed: usize,
) -> Result<(Vec<ConsumerRecord>, i64)> {
    let batches = decode_batches_detailed(&buf, max_decompressed).map_err(|e| {
        let reason = match e {
            RecordsError::Batch(BatchError::UnsupportedMagic(m)) => {
                format!("message format v{m} is not supported (only v2)")
            }
            e => e.to_string(),
        };
        ClientError::Kafka {
            code: codes::CORRUPT_MESSAGE,
            name: error::error_name(codes::CORRUPT_MESSAGE),
            message: format!("partition {topic}-{partition}: {reason}"),
        }
    })?;
    let mut out = Vec::new();
    let mut next = position;
    // Smallest first offset last, so `pop` yields transactions in log order.
    let mut pending_aborts: Vec<(i64, i64)> = aborted.to_vec();
    pending_aborts.sort_by_key(|(_, first)| std::cmp::Reverse(*first));
    let mut aborting: HashSet<i64> = HashSet::new();
    for DecodedBatch { header, records } in batches {
        next = next.max(header.next_offset());
        if header.is_transactional() {
            while pending_aborts
                .last()
                .is_some_and(|(_, first)| *first <= header.last_offset())
            {
                if let Some((pid, _)) = pending_aborts.pop() {
                    aborting.insert(pid);
                }
            }
            if header.is_control() {
                // Control record key: version i16, type i16 (0 ABORT, 1 COMMIT).
                let is_abort = records
                    .first()
                    .and_then(|r| r.key.as_deref())
                    .is_some_and(|k| k.len() >= 4 && i16::from_be_bytes([k[2], k[3]]) == 0);
                if is_abort {
                    aborting.remove(&header.producer_id);
                }
                continue;
            }
            if aborting.contains(&header.producer_id) {
                continue;
            }
        }
        if header.is_control() {
            continue;
        }
        for r in records {
            if r.offset < position || r.control {
                continue;
            }
            out.push(ConsumerRecord {
                topic: topic.to_string(),
                partition,
                offset: r.offset,
                timestamp: if header.is_log_append_time() {
                    header.max_timestamp
                } else {
                    r.timestamp
                },
                log_append_time: header.is_log_append_time(),
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::tests::CODECS;
    use crate::producer::{encode_batch as encode_producer_batch, to_record, ProducerRecord};
    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable, Message};
    use kafka_protocol::records::{Compression, Record};
    use kavka_protocol::records::encode_batch;

    fn batch_at(base: i64, n: usize, c: Compression) -> Bytes {
        let records: Vec<_> = (0..n)
            .map(|i| {
                ProducerRecord::new("t", format!("v{}", base + i as i64)).with_key(format!("k{i}"))
            })
            .collect();
        let mut b = BytesMut::from(&encode_producer_batch(&records, c, 99).unwrap()[..]);
        kavka_protocol::record_batch::set_base_offset(&mut b, base);
        b.freeze()
    }

    #[test]
    fn decodes_batches_skipping_earlier_records_and_a_partial_tail() {
        for c in CODECS {
            let mut blob = BytesMut::new();
            blob.extend_from_slice(&batch_at(10, 5, c));
            blob.extend_from_slice(&batch_at(15, 5, c));
            let third = batch_at(20, 5, c);
            blob.extend_from_slice(&third[..third.len() - 3]);
            let (records, next) = decode_records("t", 0, blob.freeze(), 12, &[], 1 << 20).unwrap();
            let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (12..20).collect::<Vec<_>>(), "{c:?}");
            assert_eq!(next, 20);
            assert_eq!(records[0].value.as_deref(), Some(&b"v12"[..]));
            assert_eq!(records[0].timestamp, 99);
        }
    }

    /// A transactional batch of `n` records (or one control record of `marker` type).
    fn txn_batch(base: i64, pid: i64, n: usize, marker: Option<i16>) -> Bytes {
        let records: Vec<Record> = (0..n as i64)
            .map(|i| {
                let plain = match marker {
                    Some(t) => {
                        ProducerRecord::new("t", vec![0u8; 6]).with_key(vec![0, 0, 0, t as u8])
                    }
                    None => ProducerRecord::new("t", format!("v{}", base + i))
                        .with_key(format!("k{}", base + i)),
                };
                Record {
                    transactional: true,
                    control: marker.is_some(),
                    partition_leader_epoch: 0,
                    producer_id: pid,
                    producer_epoch: 0,
                    sequence: i as i32,
                    ..to_record(&plain, i, 1)
                }
            })
            .collect();
        let mut buf = BytesMut::from(&encode_batch(&records, Compression::None).unwrap()[..]);
        kavka_protocol::record_batch::set_base_offset(&mut buf, base);
        buf.freeze()
    }

    #[test]
    fn read_committed_drops_aborted_transactions() {
        let mut blob = BytesMut::new();
        blob.extend_from_slice(&txn_batch(0, 7, 2, None)); // aborted below
        blob.extend_from_slice(&txn_batch(2, 8, 2, None)); // committed below
        blob.extend_from_slice(&txn_batch(4, 7, 1, Some(0))); // ABORT pid 7
        blob.extend_from_slice(&txn_batch(5, 8, 1, Some(1))); // COMMIT pid 8
        blob.extend_from_slice(&batch_at(6, 1, Compression::None));
        blob.extend_from_slice(&txn_batch(7, 7, 1, None)); // pid 7 again, not aborted
        let blob = blob.freeze();
        let offsets = |aborted: &[(i64, i64)]| -> Vec<i64> {
            let (records, next) =
                decode_records("t", 0, blob.clone(), 0, aborted, 1 << 20).unwrap();
            assert_eq!(next, 8);
            records.iter().map(|r| r.offset).collect()
        };
        assert_eq!(offsets(&[(7, 0)]), [2, 3, 6, 7]);
        // read_uncommitted: every data record, never the markers.
        assert_eq!(offsets(&[]), [0, 1, 2, 3, 6, 7]);
    }

    #[test]
    fn corrupt_batches_are_errors() {
        let mut b = BytesMut::from(&batch_at(0, 3, Compression::None)[..]);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(decode_records("t", 0, b.freeze(), 0, &[], 1 << 20).is_err());
        let mut legacy = BytesMut::from(&batch_at(0, 1, Compression::None)[..]);
        legacy[16] = 1;
        let err = decode_records("t", 0, legacy.freeze(), 0, &[], 1 << 20).unwrap_err();
        assert!(err.to_string().contains("v1"), "{err}");
        // Too short to hold a header: nothing, no panic.
        assert_eq!(
            decode_records("t", 0, Bytes::from_static(&[0; 5]), 0, &[], 1)
                .unwrap()
                .1,
            0
        );
    }

    /// The decompression cap applies to what the broker sent: a batch that inflates past
    /// it is refused as corrupt rather than allocated.
    #[test]
    fn decompression_is_capped() {
        let big = vec![ProducerRecord::new("t", vec![b'x'; 100_000])];
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = encode_producer_batch(&big, c, 1).unwrap();
            assert!(batch.len() < 50_000, "{c:?}");
            let err = decode_records("t", 0, batch.clone(), 0, &[], 50_000).unwrap_err();
            assert_eq!(err.code(), Some(codes::CORRUPT_MESSAGE), "{c:?}");
            assert_eq!(
                decode_records("t", 0, batch, 0, &[], 200_000)
                    .unwrap()
                    .0
                    .len(),
                1
            );
        }
    }

    #[test]
    fn fetch_and_list_offsets_at_every_version() {
        let ids: HashMap<String, Uuid> = [("t".to_string(), Uuid::from_u128(7))].into();
        let config = ConsumerConfig::default();
        let (lo, hi) = kavka_protocol::api_versions::supported_range(ApiKey::Fetch).unwrap();
        for v in lo.max(FetchRequest::VERSIONS.min)..=hi.min(FetchRequest::VERSIONS.max) {
            let req = fetch_request(&[("t", 0, 5), ("t", 1, 6)], &ids, &config);
            let mut buf = BytesMut::new();
            req.encode(&mut buf, v)
                .unwrap_or_else(|e| panic!("v{v}: {e}"));
            let back = FetchRequest::decode(&mut buf.freeze(), v).unwrap();
            assert_eq!(back.topics[0].partitions[1].fetch_offset, 6, "v{v}");

            let resp =
                FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_topic_id(Uuid::from_u128(7))
                    .with_partitions(vec![PartitionData::default()
                        .with_partition_index(1)
                        .with_records(Some(batch_at(6, 2, Compression::None)))])]);
            let mut buf = BytesMut::new();
            resp.encode(&mut buf, v).unwrap();
            let resp = FetchResponse::decode(&mut buf.freeze(), v).unwrap();
            let data = find_partition(&resp, "t", Uuid::from_u128(7), 1).expect("found");
            let (records, next) =
                decode_records("t", 1, data.records.clone().unwrap(), 6, &[], 1 << 20).unwrap();
            assert_eq!((records.len(), next), (2, 8), "v{v}");
        }
        let (lo, hi) = kavka_protocol::api_versions::supported_range(ApiKey::ListOffsets).unwrap();
        for v in lo.max(ListOffsetsRequest::VERSIONS.min)..=hi.min(ListOffsetsRequest::VERSIONS.max)
        {
            let req = list_offsets_request("t", &[0, 1], EARLIEST_TIMESTAMP, 0);
            let mut buf = BytesMut::new();
            req.encode(&mut buf, v).unwrap();
            let back = ListOffsetsRequest::decode(&mut buf.freeze(), v).unwrap();
            assert_eq!(back.replica_id.0, -1);
            assert_eq!(back.topics[0].partitions[1].timestamp, EARLIEST_TIMESTAMP);
        }
    }
}
