//! A zero-copy view of a v2 `RecordBatch` (magic 2).
//!
//! The broker never decodes records on the produce or fetch path: it validates the batch
//! header and CRC, then rewrites only the base offset (and, for `LogAppendTime` topics, the
//! max timestamp plus CRC). Everything here reads fixed offsets of a byte slice.
//!
//! Layout (big-endian), from the Kafka protocol guide:
//! ```text
//! 0  baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
//! 17 crc u32 (CRC-32C of bytes 21..end) | 21 attributes i16 | 23 lastOffsetDelta i32
//! 27 baseTimestamp i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16
//! 53 baseSequence i32 | 57 recordsCount i32 | 61 records...
//! ```

use thiserror::Error;

/// Size of the fixed v2 batch header; the smallest possible batch.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before the `batchLength` field ends: a batch occupies `LOG_OVERHEAD + batch_length`.
pub const LOG_OVERHEAD: usize = 12;
/// Offset of the CRC-covered region.
const CRC_START: usize = 21;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

/// Attribute bits.
pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
pub const CONTROL_FLAG: i16 = 0x20;

/// Why a batch was rejected. Maps to CORRUPT_MESSAGE / INVALID_RECORD / UNSUPPORTED_VERSION at
/// the edge.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is below the minimum header size")]
    LengthTooSmall(i32),
    #[error("unsupported magic {0}")]
    UnsupportedMagic(i8),
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid record count {count} for last offset delta {last_offset_delta}")]
    InvalidRecordCount { count: i32, last_offset_delta: i32 },
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
}

/// Compression codec from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }

    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// The decoded fixed header of one v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Total bytes the batch occupies, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Offset of the record after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes)
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    be_i32(b, at) as u32
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the header of the batch starting at `buf[0]` without checking the CRC.
///
/// Checks only that the fixed header is present and that `batchLength` is plausible; the
/// whole batch need not be in `buf` (useful when scanning a file in chunks). Works for any
/// magic: magic 0/1 message sets share the offset/length prefix, so callers read `magic`
/// to decide what to do.
pub fn peek_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < LOG_OVERHEAD + 5 {
        return Err(BatchError::Truncated {
            needed: LOG_OVERHEAD + 5,
            available: buf.len(),
        });
    }
    let batch_length = be_i32(buf, BATCH_LENGTH);
    let magic = buf[MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::LengthTooSmall(batch_length));
    }
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: BATCH_HEADER_LEN,
            available: buf.len(),
        });
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, BASE_OFFSET),
        batch_length,
        partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
        magic,
        crc: be_u32(buf, CRC),
        attributes: be_i16(buf, ATTRIBUTES),
        last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
        base_timestamp: be_i64(buf, BASE_TIMESTAMP),
        max_timestamp: be_i64(buf, MAX_TIMESTAMP),
        producer_id: be_i64(buf, PRODUCER_ID),
        producer_epoch: be_i16(buf, PRODUCER_EPOCH),
        base_sequence: be_i32(buf, BASE_SEQUENCE),
        records_count: be_i32(buf, RECORDS_COUNT),
    })
}

/// Magic byte of the batch or message set entry at `buf[0]`, if the prefix is present.
pub fn peek_magic(buf: &[u8]) -> Option<i8> {
    buf.get(MAGIC).map(|m| *m as i8)
}

/// Validates one complete v2 batch at the start of `buf`: header, length, CRC-32C, record
/// count and codec. Returns the header; the batch occupies `header.total_len()` bytes.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = peek_header(buf)?;
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[CRC_START..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    header.compression()?;
    // A batch holds lastOffsetDelta + 1 records, except that compaction may leave fewer
    // (never more). An empty batch is legal only after compaction, never from a producer;
    // callers on the produce path additionally require records_count == last_offset_delta + 1.
    if header.records_count < 0
        || header.last_offset_delta < 0
        || header.records_count > header.last_offset_delta.saturating_add(1)
    {
        return Err(BatchError::InvalidRecordCount {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Iterates over the complete, CRC-valid v2 batches in `buf`, stopping with an error at the
/// first bad one.
pub fn batches(buf: &[u8]) -> BatchIter<'_> {
    BatchIter { buf, pos: 0 }
}

pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for BatchIter<'a> {
    /// (position of the batch in the buffer, header)
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        match validate(rest) {
            Ok(h) => {
                let at = self.pos;
                self.pos += h.total_len();
                Some(Ok((at, h)))
            }
            Err(e) => {
                self.pos = self.buf.len();
                Some(Err(e))
            }
        }
    }
}

/// Rewrites the base offset. The base offset is outside the CRC, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    debug_assert!(batch.len() >= BATCH_HEADER_LEN);
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch (outside the CRC as well).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    debug_assert!(batch.len() >= BATCH_HEADER_LEN);
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as `LogAppendTime` with the broker's clock and recomputes the CRC, as
/// Kafka does for topics with `message.timestamp.type=LogAppendTime`.
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let total = LOG_OVERHEAD + be_i32(batch, BATCH_LENGTH) as usize;
    debug_assert!(batch.len() >= total);
    let attributes = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_LOG_APPEND;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..total]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal valid uncompressed batch with `n` empty-bodied records' worth of
    /// header (the records section is opaque to this module).
    pub(crate) fn fake_batch(base_offset: i64, n: i32, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; BATCH_HEADER_LEN];
        b.extend_from_slice(body);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        b[35..43].copy_from_slice(&1234i64.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn validates_and_rewrites() {
        let mut b = fake_batch(0, 3, b"abc");
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.total_len(), b.len());
        set_base_offset(&mut b, 42);
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
        set_log_append_time(&mut b, 99);
        let h = validate(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn rejects_corruption_and_truncation() {
        let mut b = fake_batch(0, 1, b"xyz");
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
        let b = fake_batch(0, 1, b"xyz");
        assert!(matches!(
            validate(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&b[..10]),
            Err(BatchError::Truncated { .. })
        ));
        let mut b = fake_batch(0, 1, b"");
        b[8..12].copy_from_slice(&5i32.to_be_bytes());
        assert!(matches!(validate(&b), Err(BatchError::LengthTooSmall(5))));
    }

    #[test]
    fn iterates_batches() {
        let mut all = fake_batch(0, 2, b"a");
        all.extend(fake_batch(2, 1, b"bb"));
        let hs: Vec<_> = batches(&all).collect::<Result<_, _>>().unwrap();
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[1].1.base_offset, 2);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = validate(&data);
            for r in batches(&data) { let _ = r; }
        }
    }
}
