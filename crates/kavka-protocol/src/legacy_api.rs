//! Codecs for the API versions kafka-protocol 0.18 no longer generates: Produce v0-v2,
//! Fetch v0-v3 and ListOffsets v0, spoken by kafka-python with an old `api_version`,
//! segmentio/kafka-go before 0.4 and old sarama configurations.
//!
//! They decode into and encode from the generated structs, so handlers stay
//! version-agnostic. Bodies only: the request header (v1) and response header (v0) are
//! handled by [`crate::frame`]. Layouts, from Apache Kafka's message JSON specs and the
//! protocol guide (`string` = i16 length + UTF-8, `bytes` = i32 length, `[x]` = i32 count):
//! ```text
//! ProduceRequest v0-2:  acks i16, timeout_ms i32, [topic string, [partition i32, records bytes]]
//! ProduceResponse v0:   [topic string, [partition i32, error_code i16, base_offset i64]]
//!                 v1:   v0 + throttle_time_ms i32 (at the end)
//!                 v2:   v1 with log_append_time_ms i64 after base_offset
//! FetchRequest v0-2:    replica_id i32, max_wait_ms i32, min_bytes i32,
//!                       [topic string, [partition i32, fetch_offset i64, partition_max_bytes i32]]
//!              v3:      max_bytes i32 after min_bytes
//! FetchResponse v0:     [topic string, [partition i32, error_code i16, high_watermark i64, records bytes]]
//!               v1-3:   throttle_time_ms i32 first
//! ListOffsetsRequest v0:  replica_id i32, [topic string, [partition i32, timestamp i64, max_num_offsets i32]]
//! ListOffsetsResponse v0: [topic string, [partition i32, error_code i16, old_style_offsets [i64]]]
//! ```
//! Record data is passed through untouched: Produce v0-v2 carries magic 0/1 message sets
//! (convert with [`crate::legacy_message_set::message_set_to_batch`]), and Fetch v0-v3
//! responses must carry magic 0 (v0-v1) or magic 1 (v2-v3) sets, which
//! [`down_convert_fetch_response`] produces from stored v2 batches.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use thiserror::Error;

use crate::error::ErrorCode;
use crate::legacy_message_set::{self, DownConvertOptions};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LegacyApiError {
    #[error("request truncated reading {field}: need {needed} bytes, have {available}")]
    Truncated {
        field: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("invalid length {len} for {field}")]
    InvalidLength { field: &'static str, len: i32 },
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("{field} is null")]
    UnexpectedNull { field: &'static str },
    #[error("version {0} is not handled by the legacy codec")]
    UnsupportedVersion(i16),
    #[error("{field} is too long to encode ({len})")]
    TooLong { field: &'static str, len: usize },
}

type Result<T> = std::result::Result<T, LegacyApiError>;

/// A bounds-checked cursor over a request body.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, field: &'static str, n: usize) -> Result<()> {
        if self.buf.remaining() < n {
            return Err(LegacyApiError::Truncated {
                field,
                needed: n,
                available: self.buf.remaining(),
            });
        }
        Ok(())
    }

    fn i16(&mut self, field: &'static str) -> Result<i16> {
        self.need(field, 2)?;
        Ok(self.buf.get_i16())
    }

    fn i32(&mut self, field: &'static str) -> Result<i32> {
        self.need(field, 4)?;
        Ok(self.buf.get_i32())
    }

    fn i64(&mut self, field: &'static str) -> Result<i64> {
        self.need(field, 8)?;
        Ok(self.buf.get_i64())
    }

    /// A non-nullable `string`.
    fn string(&mut self, field: &'static str) -> Result<StrBytes> {
        let len = self.i16(field)?;
        if len < 0 {
            return Err(LegacyApiError::UnexpectedNull { field });
        }
        self.need(field, len as usize)?;
        StrBytes::from_utf8(self.buf.split_to(len as usize))
            .map_err(|_| LegacyApiError::InvalidUtf8(field))
    }

    /// A nullable `bytes` (record sets).
    fn nullable_bytes(&mut self, field: &'static str) -> Result<Option<Bytes>> {
        let len = self.i32(field)?;
        if len == -1 {
            return Ok(None);
        }
        if len < -1 {
            return Err(LegacyApiError::InvalidLength { field, len });
        }
        self.need(field, len as usize)?;
        Ok(Some(self.buf.split_to(len as usize)))
    }

    /// An array count, checked against what `min_element` bytes per element could fill, so
    /// the caller may reserve that many.
    fn array_len(&mut self, field: &'static str, min_element: usize) -> Result<usize> {
        let len = self.i32(field)?;
        // Kafka writes null arrays as -1; none of these fields is nullable, but treat it as
        // empty like the Java parser does for tolerant fields.
        if len == -1 {
            return Ok(0);
        }
        if len < -1 || len as usize > self.buf.remaining() / min_element.max(1) {
            return Err(LegacyApiError::InvalidLength { field, len });
        }
        Ok(len as usize)
    }
}

fn put_string(out: &mut BytesMut, field: &'static str, s: &str) -> Result<()> {
    let len = i16::try_from(s.len()).map_err(|_| LegacyApiError::TooLong {
        field,
        len: s.len(),
    })?;
    out.put_i16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_array_len(out: &mut BytesMut, field: &'static str, len: usize) -> Result<()> {
    out.put_i32(i32::try_from(len).map_err(|_| LegacyApiError::TooLong { field, len })?);
    Ok(())
}

fn check_version(version: i16, max: i16) -> Result<()> {
    if (0..=max).contains(&version) {
        Ok(())
    } else {
        Err(LegacyApiError::UnsupportedVersion(version))
    }
}

/// Decodes a Produce v0-v2 request body. Partition `records` are the raw message sets.
pub fn decode_produce_request_v0_2(body: Bytes, version: i16) -> Result<ProduceRequest> {
    check_version(version, 2)?;
    let mut r = Reader { buf: body };
    let mut req = ProduceRequest::default();
    req.transactional_id = None;
    req.acks = r.i16("acks")?;
    req.timeout_ms = r.i32("timeout_ms")?;
    // topic: string(2) + partition count(4)
    let topics = r.array_len("topic_data", 6)?;
    req.topic_data = Vec::with_capacity(topics);
    for _ in 0..topics {
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(r.string("topic name")?);
        // partition: index(4) + records length(4)
        let partitions = r.array_len("partition_data", 8)?;
        topic.partition_data = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let mut p = PartitionProduceData::default();
            p.index = r.i32("partition index")?;
            p.records = r.nullable_bytes("records")?;
            topic.partition_data.push(p);
        }
        req.topic_data.push(topic);
    }
    Ok(req)
}

/// Encodes a Produce v0-v2 response body.
pub fn encode_produce_response_v0_2(
    resp: &ProduceResponse,
    version: i16,
    out: &mut BytesMut,
) -> Result<()> {
    check_version(version, 2)?;
    put_array_len(out, "responses", resp.responses.len())?;
    for topic in &resp.responses {
        put_string(out, "topic name", &topic.name.0)?;
        put_array_len(out, "partition_responses", topic.partition_responses.len())?;
        for p in &topic.partition_responses {
            out.put_i32(p.index);
            out.put_i16(p.error_code);
            out.put_i64(p.base_offset);
            if version >= 2 {
                out.put_i64(p.log_append_time_ms);
            }
        }
    }
    if version >= 1 {
        out.put_i32(resp.throttle_time_ms);
    }
    Ok(())
}

/// Decodes a Fetch v0-v3 request body. `max_bytes` (v3+) defaults to `i32::MAX` before v3,
/// isolation level to READ_UNCOMMITTED, and there is no fetch session.
pub fn decode_fetch_request_v0_3(body: Bytes, version: i16) -> Result<FetchRequest> {
    check_version(version, 3)?;
    let mut r = Reader { buf: body };
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(r.i32("replica_id")?);
    req.max_wait_ms = r.i32("max_wait_ms")?;
    req.min_bytes = r.i32("min_bytes")?;
    req.max_bytes = if version >= 3 {
        r.i32("max_bytes")?
    } else {
        i32::MAX
    };
    req.isolation_level = 0;
    req.session_id = 0;
    req.session_epoch = -1;
    let topics = r.array_len("topics", 6)?;
    req.topics = Vec::with_capacity(topics);
    for _ in 0..topics {
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(r.string("topic name")?);
        // partition(4) + fetch_offset(8) + partition_max_bytes(4)
        let partitions = r.array_len("partitions", 16)?;
        topic.partitions = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let mut p = FetchPartition::default();
            p.partition = r.i32("partition")?;
            p.fetch_offset = r.i64("fetch_offset")?;
            p.partition_max_bytes = r.i32("partition_max_bytes")?;
            topic.partitions.push(p);
        }
        req.topics.push(topic);
    }
    Ok(req)
}

/// Encodes a Fetch v0-v3 response body. Records are written as given (a null set as an
/// empty one, which every old client accepts); see [`down_convert_fetch_response`].
pub fn encode_fetch_response_v0_3(
    resp: &FetchResponse,
    version: i16,
    out: &mut BytesMut,
) -> Result<()> {
    check_version(version, 3)?;
    if version >= 1 {
        out.put_i32(resp.throttle_time_ms);
    }
    put_array_len(out, "responses", resp.responses.len())?;
    for topic in &resp.responses {
        put_string(out, "topic name", &topic.topic.0)?;
        put_array_len(out, "partitions", topic.partitions.len())?;
        for p in &topic.partitions {
            out.put_i32(p.partition_index);
            out.put_i16(p.error_code);
            out.put_i64(p.high_watermark);
            let records = p.records.as_deref().unwrap_or_default();
            put_array_len(out, "records", records.len())?;
            out.put_slice(records);
        }
    }
    Ok(())
}

/// The message format a Fetch version can read: magic 0 for v0-v1, magic 1 for v2-v3, and
/// v2 batches from v4 on.
pub fn fetch_message_format(version: i16) -> i8 {
    match version {
        ..=1 => 0,
        2..=3 => 1,
        _ => 2,
    }
}

/// Rewrites every partition's stored v2 batches in `resp` into the message format a Fetch
/// `version` below 4 understands (a no-op from v4 on). A partition whose data cannot be
/// converted gets CORRUPT_MESSAGE and no records, so one bad batch does not fail the whole
/// response.
pub fn down_convert_fetch_response(
    resp: &mut FetchResponse,
    version: i16,
    max_decompressed_bytes: usize,
) {
    let magic = fetch_message_format(version);
    if magic >= 2 {
        return;
    }
    let opts = DownConvertOptions {
        magic,
        max_decompressed_bytes,
        keep_compression: true,
    };
    for p in resp
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
            continue;
        };
        if legacy_message_set::is_legacy(records) {
            continue;
        }
        match legacy_message_set::batches_to_message_set(records, &opts) {
            Ok(converted) => p.records = Some(converted),
            Err(_) => {
                p.error_code = ErrorCode::CorruptMessage.code();
                p.records = Some(Bytes::new());
            }
        }
    }
}

/// Decodes a ListOffsets v0 request body into the v1+ shape: each partition asks for the
/// offset at `timestamp` (-1 latest, -2 earliest). `max_num_offsets` is read and dropped: the
/// response carries at most one offset, which is all Kafka clients ever use.
pub fn decode_list_offsets_request_v0(body: Bytes) -> Result<ListOffsetsRequest> {
    let mut r = Reader { buf: body };
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(r.i32("replica_id")?);
    req.isolation_level = 0;
    let topics = r.array_len("topics", 6)?;
    req.topics = Vec::with_capacity(topics);
    for _ in 0..topics {
        let mut topic = ListOffsetsTopic::default();
        topic.name = TopicName(r.string("topic name")?);
        // partition(4) + timestamp(8) + max_num_offsets(4)
        let partitions = r.array_len("partitions", 16)?;
        topic.partitions = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = r.i32("partition_index")?;
            p.timestamp = r.i64("timestamp")?;
            p.current_leader_epoch = -1;
            let _max_num_offsets = r.i32("max_num_offsets")?;
            topic.partitions.push(p);
        }
        req.topics.push(topic);
    }
    Ok(req)
}

/// Encodes a ListOffsets v0 response body: `old_style_offsets` is `[offset]` when the
/// partition has no error and an offset was found (`offset >= 0`), else empty.
pub fn encode_list_offsets_response_v0(
    resp: &ListOffsetsResponse,
    out: &mut BytesMut,
) -> Result<()> {
    put_array_len(out, "topics", resp.topics.len())?;
    for topic in &resp.topics {
        put_string(out, "topic name", &topic.name.0)?;
        put_array_len(out, "partitions", topic.partitions.len())?;
        for p in &topic.partitions {
            out.put_i32(p.partition_index);
            out.put_i16(p.error_code);
            if p.error_code == 0 && p.offset >= 0 {
                out.put_i32(1);
                out.put_i64(p.offset);
            } else {
                out.put_i32(0);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
