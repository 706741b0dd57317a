//! Magic 0 and magic 1 message sets (Kafka's message formats before 0.11), converted to and
//! from v2 record batches so that storage only ever holds magic 2.
//!
//! Layout of one entry (big-endian), from the "Message Sets" section of the protocol guide:
//! ```text
//! offset i64 | message_size i32 | crc u32 (CRC-32 of magic..end) | magic i8 | attributes i8
//! | timestamp i64 (magic 1 only) | key bytes (i32 length, -1 = null) | value bytes (same)
//! ```
//! Attribute bits 0-2 are the codec (0 none, 1 gzip, 2 snappy, 3 lz4); bit 3 (magic 1) marks
//! `LogAppendTime`. A compressed message is a *wrapper* whose value holds a nested message
//! set. For magic 1 wrappers (KIP-31) the inner offsets are relative and the wrapper carries
//! the absolute offset of the last inner message; magic 0 inner offsets are absolute.

use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{Record, TimestampType};
use thiserror::Error;

use crate::compression::{self, CompressionError, Lz4Checksum};
use crate::record_batch::{self, BatchError, Compression};
use crate::records::{self, RecordsError};

/// offset + message_size.
pub const LOG_OVERHEAD: usize = 12;
/// crc + magic + attributes + key length + value length.
const MESSAGE_V0_MIN: usize = 4 + 1 + 1 + 4 + 4;
/// v0 plus the timestamp.
const MESSAGE_V1_MIN: usize = MESSAGE_V0_MIN + 8;
const CODEC_MASK: i8 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND: i8 = 0x08;
/// "No timestamp", what magic 0 messages carry once converted.
pub const NO_TIMESTAMP: i64 = -1;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LegacyError {
    #[error("message set truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("message size {0} is invalid")]
    InvalidMessageSize(i32),
    #[error("unsupported message magic {0}")]
    UnsupportedMagic(i8),
    #[error("message crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid key or value length {0}")]
    InvalidLength(i32),
    #[error("{0} unexpected bytes after the value of a message")]
    TrailingBytes(usize),
    #[error("compression codec {0} is not valid for magic 0/1 messages")]
    UnsupportedCompression(i8),
    #[error("compressed message nested inside a compressed message")]
    NestedCompression,
    #[error("inner message magic {inner} differs from its wrapper's magic {wrapper}")]
    InnerMagicMismatch { wrapper: i8, inner: i8 },
    #[error("compressed wrapper message has {0}")]
    BadWrapper(&'static str),
    #[error("offsets must increase within a message set ({previous} then {next})")]
    NonMonotonicOffsets { previous: i64, next: i64 },
    #[error("offsets {first}..={last} do not fit in one batch")]
    OffsetRangeTooWide { first: i64, last: i64 },
    #[error("message set holds no messages")]
    Empty,
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Records(#[from] RecordsError),
}

/// One logical message, flattened out of any wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyMessage {
    /// Absolute offset (as far as the producer or broker wrote one).
    pub offset: i64,
    /// The magic of the message (inner messages carry their wrapper's).
    pub magic: i8,
    /// Creation or log-append time; [`NO_TIMESTAMP`] for magic 0.
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    /// Codec of the wrapper this message came from (`None` if it was not wrapped).
    pub compression: Compression,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Cap on the sum of all decompressed wrapper values.
    pub max_decompressed_bytes: usize,
    /// Fetch responses may end with a message cut short by the size limit; skip it instead
    /// of failing. Produce requests must never contain one.
    pub allow_partial_trailing: bool,
}

/// Parses a whole magic 0/1 message set, flattening compressed wrappers (one level deep,
/// as in Kafka) and resolving inner offsets to absolute ones.
pub fn parse_message_set(
    buf: &Bytes,
    opts: &ParseOptions,
) -> Result<Vec<LegacyMessage>, LegacyError> {
    let mut budget = opts.max_decompressed_bytes;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let rest = buf.len() - pos;
        match entry_len(&buf[pos..])? {
            Some(len) => {
                let entry = buf.slice(pos..pos + len);
                parse_entry(&entry, &mut budget, &mut out)?;
                pos += len;
            }
            None if opts.allow_partial_trailing => break,
            None => {
                let needed = if rest < LOG_OVERHEAD {
                    LOG_OVERHEAD
                } else {
                    LOG_OVERHEAD + be_i32(&buf[pos + 8..]) as usize
                };
                return Err(LegacyError::Truncated {
                    needed,
                    available: rest,
                });
            }
        }
    }
    Ok(out)
}

/// Length of the complete entry at the start of `buf`, `None` if it is cut short.
fn entry_len(buf: &[u8]) -> Result<Option<usize>, LegacyError> {
    if buf.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let size = be_i32(&buf[8..]);
    if size < MESSAGE_V0_MIN as i32 {
        return Err(LegacyError::InvalidMessageSize(size));
    }
    let total = LOG_OVERHEAD + size as usize;
    Ok((total <= buf.len()).then_some(total))
}

/// The fields of one message entry, CRC checked.
struct RawMessage {
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn decode_entry(entry: &Bytes) -> Result<RawMessage, LegacyError> {
    debug_assert!(entry.len() >= LOG_OVERHEAD + MESSAGE_V0_MIN);
    let offset = be_i64(entry);
    let stored = be_i32(&entry[12..]) as u32;
    let magic = entry[16] as i8;
    let attributes = entry[17] as i8;
    let min = match magic {
        0 => MESSAGE_V0_MIN,
        1 => MESSAGE_V1_MIN,
        m => return Err(LegacyError::UnsupportedMagic(m)),
    };
    if entry.len() < LOG_OVERHEAD + min {
        return Err(LegacyError::InvalidMessageSize(
            (entry.len() - LOG_OVERHEAD) as i32,
        ));
    }
    let computed = crc32fast::hash(&entry[16..]);
    if computed != stored {
        return Err(LegacyError::CrcMismatch { stored, computed });
    }
    let mut pos = 18;
    let timestamp = if magic == 1 {
        pos += 8;
        be_i64(&entry[18..])
    } else {
        NO_TIMESTAMP
    };
    let key = read_bytes(entry, &mut pos)?;
    let value = read_bytes(entry, &mut pos)?;
    if pos != entry.len() {
        return Err(LegacyError::TrailingBytes(entry.len() - pos));
    }
    Ok(RawMessage {
        offset,
        magic,
        attributes,
        timestamp,
        key,
        value,
    })
}

fn read_bytes(entry: &Bytes, pos: &mut usize) -> Result<Option<Bytes>, LegacyError> {
    let len_at = *pos;
    let Some(len_bytes) = entry.get(len_at..len_at + 4) else {
        return Err(LegacyError::Truncated {
            needed: len_at + 4,
            available: entry.len(),
        });
    };
    let len = be_i32(len_bytes);
    *pos += 4;
    if len == -1 {
        return Ok(None);
    }
    if len < -1 || len as usize > entry.len() - *pos {
        return Err(LegacyError::InvalidLength(len));
    }
    let b = entry.slice(*pos..*pos + len as usize);
    *pos += len as usize;
    Ok(Some(b))
}

fn codec(attributes: i8) -> Result<Compression, LegacyError> {
    match attributes & CODEC_MASK {
        0 => Ok(Compression::None),
        1 => Ok(Compression::Gzip),
        2 => Ok(Compression::Snappy),
        3 => Ok(Compression::Lz4),
        other => Err(LegacyError::UnsupportedCompression(other)),
    }
}

fn timestamp_type(magic: i8, attributes: i8) -> TimestampType {
    if magic > 0 && attributes & TIMESTAMP_TYPE_LOG_APPEND != 0 {
        TimestampType::LogAppend
    } else {
        TimestampType::Creation
    }
}

fn parse_entry(
    entry: &Bytes,
    budget: &mut usize,
    out: &mut Vec<LegacyMessage>,
) -> Result<(), LegacyError> {
    let m = decode_entry(entry)?;
    let codec = codec(m.attributes)?;
    let ts_type = timestamp_type(m.magic, m.attributes);
    if codec == Compression::None {
        out.push(LegacyMessage {
            offset: m.offset,
            magic: m.magic,
            timestamp: m.timestamp,
            timestamp_type: ts_type,
            compression: Compression::None,
            key: m.key,
            value: m.value,
        });
        return Ok(());
    }
    let wrapped = m.value.ok_or(LegacyError::BadWrapper("a null value"))?;
    let lz4 = if m.magic == 0 {
        Lz4Checksum::KafkaLegacy
    } else {
        Lz4Checksum::Standard
    };
    let inner = Bytes::from(compression::decompress(codec, &wrapped, *budget, lz4)?);
    *budget -= inner.len();

    let first = out.len();
    let mut pos = 0;
    while pos < inner.len() {
        let Some(len) = entry_len(&inner[pos..])? else {
            return Err(LegacyError::Truncated {
                needed: LOG_OVERHEAD,
                available: inner.len() - pos,
            });
        };
        let im = decode_entry(&inner.slice(pos..pos + len))?;
        pos += len;
        if codec_bits(im.attributes) != 0 {
            return Err(LegacyError::NestedCompression);
        }
        if im.magic != m.magic {
            return Err(LegacyError::InnerMagicMismatch {
                wrapper: m.magic,
                inner: im.magic,
            });
        }
        // A LogAppendTime wrapper's timestamp applies to every inner message.
        let timestamp = if ts_type == TimestampType::LogAppend {
            m.timestamp
        } else {
            im.timestamp
        };
        out.push(LegacyMessage {
            offset: im.offset,
            magic: im.magic,
            timestamp,
            timestamp_type: ts_type,
            compression: codec,
            key: im.key,
            value: im.value,
        });
    }
    let inner_msgs = &mut out[first..];
    let Some(last) = inner_msgs.last() else {
        return Err(LegacyError::BadWrapper("no inner messages"));
    };
    if m.magic > 0 {
        // KIP-31: inner offsets are relative; the wrapper holds the last absolute offset.
        let base = m.offset.wrapping_sub(last.offset);
        for msg in inner_msgs.iter_mut() {
            msg.offset = base.wrapping_add(msg.offset);
        }
    }
    Ok(())
}

fn codec_bits(attributes: i8) -> i8 {
    attributes & CODEC_MASK
}

/// How up-conversion numbers the records of the batch it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAssignment {
    /// 0, 1, 2, ... : the produce path, where the log assigns real offsets anyway and old
    /// producers write zeros or arbitrary values.
    Sequential,
    /// Keep the message offsets; they must strictly increase.
    Preserve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpConvertOptions {
    pub max_decompressed_bytes: usize,
    pub offsets: OffsetAssignment,
}

/// The result of up-converting a message set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpConverted {
    /// Exactly one v2 batch.
    pub batch: Bytes,
    pub record_count: usize,
    /// Magic of the source messages (the highest, if a client mixed them).
    pub source_magic: i8,
    /// Codec of the batch: the source wrappers' codec, so a compressed produce stays
    /// compressed on disk.
    pub compression: Compression,
}

/// Converts a magic 0/1 message set (as found in a Produce v0-v2 request) into ONE v2
/// batch, keeping keys, values and timestamps (magic 0 → [`NO_TIMESTAMP`]). If the set
/// carries `LogAppendTime` the batch does too, with the latest such timestamp. The batch has
/// no producer id and no headers.
pub fn message_set_to_batch(
    buf: &Bytes,
    opts: &UpConvertOptions,
) -> Result<UpConverted, LegacyError> {
    let parse = ParseOptions {
        max_decompressed_bytes: opts.max_decompressed_bytes,
        allow_partial_trailing: false,
    };
    let messages = parse_message_set(buf, &parse)?;
    let Some(first) = messages.first() else {
        return Err(LegacyError::Empty);
    };
    let compression = messages
        .iter()
        .map(|m| m.compression)
        .find(|c| *c != Compression::None)
        .unwrap_or(Compression::None);
    let source_magic = messages
        .iter()
        .map(|m| m.magic)
        .max()
        .unwrap_or(first.magic);
    let base_offset = match opts.offsets {
        OffsetAssignment::Sequential => 0,
        OffsetAssignment::Preserve => first.offset,
    };
    let mut log_append_time: Option<i64> = None;
    let mut records = Vec::with_capacity(messages.len());
    let mut previous: Option<i64> = None;
    for (i, m) in messages.into_iter().enumerate() {
        let offset = match opts.offsets {
            OffsetAssignment::Sequential => i as i64,
            OffsetAssignment::Preserve => {
                if let Some(p) = previous {
                    if m.offset <= p {
                        return Err(LegacyError::NonMonotonicOffsets {
                            previous: p,
                            next: m.offset,
                        });
                    }
                }
                previous = Some(m.offset);
                m.offset
            }
        };
        // A v2 batch spans at most i32::MAX offsets.
        let delta = offset
            .checked_sub(base_offset)
            .filter(|d| *d <= i32::MAX as i64)
            .ok_or(LegacyError::OffsetRangeTooWide {
                first: base_offset,
                last: offset,
            })?;
        if m.timestamp_type == TimestampType::LogAppend {
            log_append_time = Some(log_append_time.map_or(m.timestamp, |t| t.max(m.timestamp)));
        }
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: kafka_protocol::records::NO_PARTITION_LEADER_EPOCH,
            producer_id: kafka_protocol::records::NO_PRODUCER_ID,
            producer_epoch: kafka_protocol::records::NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset,
            // kafka-protocol starts a new batch unless offset - sequence stays constant;
            // this keeps it constant and makes the batch's base sequence -1 (none).
            sequence: (delta as i32).wrapping_sub(1),
            timestamp: m.timestamp,
            key: m.key,
            value: m.value,
            headers: IndexMap::new(),
        });
    }
    let record_count = records.len();
    let batch = records::encode_batch(&records, compression.into())?;
    let batch = match log_append_time {
        None => batch,
        Some(t) => {
            let mut b = batch.to_vec();
            record_batch::set_log_append_time(&mut b, t);
            Bytes::from(b)
        }
    };
    debug_assert_eq!(record_batch::batches(&batch).count(), 1);
    Ok(UpConverted {
        batch,
        record_count,
        source_magic,
        compression,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownConvertOptions {
    /// 0 for Fetch v0-v1, 1 for Fetch v2-v3.
    pub magic: i8,
    pub max_decompressed_bytes: usize,
    /// Keep each batch's codec (gzip, snappy, lz4) as a wrapper message. zstd has no
    /// magic 0/1 form and is always written uncompressed.
    pub keep_compression: bool,
}

/// Converts stored v2 batches (concatenated, the last possibly partial — skipped) into a
/// magic 0 or 1 message set with absolute offsets, for Fetch v0-v3. Control batches are
/// skipped and record headers dropped: neither exists before magic 2. If only a partial
/// batch was given, the result is a truncated message prefix that tells the client its
/// fetch size is too small (see `write_oversize_marker`).
pub fn batches_to_message_set(
    stored: &Bytes,
    opts: &DownConvertOptions,
) -> Result<Bytes, LegacyError> {
    if !(0..=1).contains(&opts.magic) {
        return Err(LegacyError::UnsupportedMagic(opts.magic));
    }
    let mut out = BytesMut::with_capacity(stored.len());
    let mut consumed = 0;
    for batch in records::decode_batches_detailed(stored, opts.max_decompressed_bytes)? {
        let h = batch.header;
        consumed += h.total_len();
        if h.is_control() || batch.records.is_empty() {
            continue;
        }
        let log_append = h.is_log_append_time() && opts.magic > 0;
        let ts = |r: &Record| match (opts.magic, log_append) {
            (0, _) => NO_TIMESTAMP,
            (_, true) => h.max_timestamp,
            _ => r.timestamp,
        };
        let ts_attr = if log_append {
            TIMESTAMP_TYPE_LOG_APPEND
        } else {
            0
        };
        let codec = match h.compression()? {
            Compression::Zstd => Compression::None,
            _ if !opts.keep_compression => Compression::None,
            c => c,
        };
        if codec == Compression::None {
            for r in &batch.records {
                write_message(
                    &mut out,
                    r.offset,
                    opts.magic,
                    ts_attr,
                    ts(r),
                    r.key.as_deref(),
                    r.value.as_deref(),
                );
            }
            continue;
        }
        let mut inner = BytesMut::new();
        for r in &batch.records {
            // Magic 1 inner offsets are relative to the batch (KIP-31); magic 0 are absolute.
            let offset = if opts.magic > 0 {
                r.offset.wrapping_sub(h.base_offset)
            } else {
                r.offset
            };
            write_message(
                &mut inner,
                offset,
                opts.magic,
                ts_attr,
                ts(r),
                r.key.as_deref(),
                r.value.as_deref(),
            );
        }
        let lz4 = if opts.magic == 0 {
            Lz4Checksum::KafkaLegacy
        } else {
            Lz4Checksum::Standard
        };
        let compressed = compression::compress(codec, &inner, lz4)?;
        let last = batch
            .records
            .iter()
            .map(|r| r.offset)
            .max()
            .unwrap_or(h.base_offset);
        let wrapper_ts = match opts.magic {
            0 => NO_TIMESTAMP,
            _ => batch.records.iter().map(ts).max().unwrap_or(NO_TIMESTAMP),
        };
        write_message(
            &mut out,
            last,
            opts.magic,
            ts_attr | codec.id() as i8,
            wrapper_ts,
            None,
            Some(&compressed),
        );
    }
    if out.is_empty() {
        write_oversize_marker(&mut out, stored.get(consumed..).unwrap_or_default());
    }
    Ok(out.freeze())
}

/// When nothing converted because the first batch did not fit the fetch size, old clients
/// must still learn that a message is waiting, or they poll an empty partition forever.
/// Kafka's own answer to such a fetch was the truncated message; send its 12-byte prefix
/// (offset and full size), which every magic 0/1 client reads as "message larger than the
/// fetch size" (sarama then doubles its fetch size, kafka-python and Java raise
/// RecordTooLarge).
fn write_oversize_marker(out: &mut BytesMut, partial: &[u8]) {
    let Ok(h) = record_batch::peek_header(partial) else {
        return;
    };
    if h.total_len() > partial.len() {
        out.put_i64(h.base_offset);
        out.put_i32(h.batch_length);
    }
}

/// Appends one message entry. Keys and values come from decoded batches, so each is far
/// below `i32::MAX` bytes.
fn write_message(
    out: &mut BytesMut,
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let body_len = if magic > 0 {
        MESSAGE_V1_MIN
    } else {
        MESSAGE_V0_MIN
    } + key.map_or(0, <[u8]>::len)
        + value.map_or(0, <[u8]>::len);
    debug_assert!(body_len <= i32::MAX as usize);
    out.reserve(LOG_OVERHEAD + body_len);
    out.put_i64(offset);
    out.put_i32(body_len as i32);
    let crc_at = out.len();
    out.put_u32(0);
    let body_start = out.len();
    out.put_i8(magic);
    out.put_i8(attributes);
    if magic > 0 {
        out.put_i64(timestamp);
    }
    for field in [key, value] {
        match field {
            None => out.put_i32(-1),
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
        }
    }
    let crc = crc32fast::hash(&out[body_start..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Whether `records` (a Produce partition's or a stored segment's bytes) starts with a
/// magic 0/1 message set rather than a v2 batch.
pub fn is_legacy(records: &[u8]) -> bool {
    matches!(record_batch::peek_magic(records), Some(0 | 1))
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

#[cfg(test)]
mod tests;
