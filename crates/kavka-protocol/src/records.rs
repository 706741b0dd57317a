//! Whole-record encoding and decoding of v2 batches, for the places that need records rather
//! than bytes: the client, down-conversion, compaction and tests. The broker's produce and
//! fetch paths never come here.
//!
//! Wraps kafka-protocol's `RecordBatchEncoder`/`RecordBatchDecoder`, but decompresses with
//! [`crate::compression`] so a hostile batch cannot inflate beyond a cap, and checks each
//! batch with [`crate::record_batch::validate`] first so a partial trailing batch (as a Fetch
//! response may end with) is skipped rather than reported as corrupt.

use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as WireCompression, Record, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions,
};
use thiserror::Error;

use crate::compression::{self, CompressionError, Lz4Checksum};
use crate::record_batch::{self, BatchError, BatchHeader, Compression};

/// Default cap on the decompressed size of the records decoded by one call: Kafka's default
/// `message.max.bytes` is ~1 MiB and its `fetch.max.bytes` 50 MiB; a compressed batch rarely
/// expands more than 10x, so 256 MiB leaves room without letting a bomb exhaust memory.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Compression(#[from] CompressionError),
    #[error("malformed records: {0}")]
    Malformed(String),
    #[error("cannot encode records: {0}")]
    Encode(String),
}

/// One decoded batch: its header and its records (absolute offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}

impl From<WireCompression> for Compression {
    fn from(c: WireCompression) -> Self {
        match c {
            WireCompression::None => Compression::None,
            WireCompression::Gzip => Compression::Gzip,
            WireCompression::Snappy => Compression::Snappy,
            WireCompression::Lz4 => Compression::Lz4,
            WireCompression::Zstd => Compression::Zstd,
        }
    }
}

impl From<Compression> for WireCompression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::None => WireCompression::None,
            Compression::Gzip => WireCompression::Gzip,
            Compression::Snappy => WireCompression::Snappy,
            Compression::Lz4 => WireCompression::Lz4,
            Compression::Zstd => WireCompression::Zstd,
        }
    }
}

/// A record of a plain batch (no producer id, not transactional) at `offset` within the
/// batch. Its sequence moves with the offset (`offset - 1`), which is what keeps
/// [`encode_batch`] from splitting the records into one batch each; the batch's base
/// sequence is then -1, as a non-idempotent producer's.
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset,
        sequence: (offset as i32).wrapping_sub(1),
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// Encodes `records` as v2 batches. Records that share producer id, epoch, flags and leader
/// epoch, with offsets and sequences advancing together, go into one batch (kafka-protocol's
/// rule); give consecutive offsets and `sequence = base_sequence + (offset - base_offset)`
/// to get exactly one.
pub fn encode_batch(
    records: &[Record],
    compression: WireCompression,
) -> Result<Bytes, RecordsError> {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records, &options)
        .map_err(|e| RecordsError::Encode(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes every complete batch in `bytes` into records, skipping a partial trailing batch,
/// with [`DEFAULT_MAX_DECOMPRESSED_BYTES`] as the decompression cap.
pub fn decode_batches(bytes: &Bytes) -> Result<Vec<Record>, RecordsError> {
    decode_batches_with_limit(bytes, DEFAULT_MAX_DECOMPRESSED_BYTES)
}

/// [`decode_batches`] with an explicit cap on the total decompressed size.
pub fn decode_batches_with_limit(
    bytes: &Bytes,
    max_decompressed: usize,
) -> Result<Vec<Record>, RecordsError> {
    let mut out = Vec::new();
    for batch in decode_batches_detailed(bytes, max_decompressed)? {
        out.extend(batch.records);
    }
    Ok(out)
}

/// Decodes every complete batch, keeping each batch's header (needed to skip control batches
/// or honour `LogAppendTime`, which kafka-protocol's records do not reflect in `timestamp`).
pub fn decode_batches_detailed(
    bytes: &Bytes,
    max_decompressed: usize,
) -> Result<Vec<DecodedBatch>, RecordsError> {
    let budget = Cell::new(max_decompressed);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let header = match record_batch::peek_header(rest) {
            Ok(h) if h.total_len() <= rest.len() => h,
            // A batch cut short by the fetch size limit: the client asks again from here.
            Ok(_) | Err(BatchError::Truncated { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        record_batch::validate(rest)?;
        let batch = bytes.slice(pos..pos + header.total_len());
        let records = decode_one(batch, &header, &budget)?;
        if records.len() != header.records_count as usize {
            return Err(RecordsError::Malformed(format!(
                "batch at offset {} declares {} records but holds {}",
                header.base_offset,
                header.records_count,
                records.len()
            )));
        }
        out.push(DecodedBatch { header, records });
        pos += header.total_len();
    }
    Ok(out)
}

/// Decodes one complete, CRC-checked batch.
fn decode_one(
    mut batch: Bytes,
    header: &BatchHeader,
    budget: &Cell<usize>,
) -> Result<Vec<Record>, RecordsError> {
    let failure = Cell::new(None);
    let decompress = |data: &mut Bytes, codec: WireCompression| -> anyhow::Result<Bytes> {
        let records = if codec == WireCompression::None {
            data.clone()
        } else {
            match compression::decompress(codec.into(), data, budget.get(), Lz4Checksum::Standard) {
                Ok(v) => {
                    budget.set(budget.get() - v.len());
                    Bytes::from(v)
                }
                Err(e) => {
                    failure.set(Some(RecordsError::Compression(e.clone())));
                    return Err(e.into());
                }
            }
        };
        if let Err(e) = check_deltas(&records, header) {
            failure.set(Some(e.clone()));
            return Err(e.into());
        }
        Ok(records)
    };
    match RecordBatchDecoder::decode_with_custom_compression(&mut batch, Some(decompress)) {
        Ok(set) => Ok(set.records),
        Err(e) => Err(failure
            .take()
            .unwrap_or_else(|| RecordsError::Malformed(e.to_string()))),
    }
}

/// kafka-protocol adds each record's timestamp and offset delta to the batch's base with
/// `+`, which overflows on hostile deltas (a panic wherever overflow checks are on: tests,
/// fuzzing). Walk the records exactly as it does and refuse such a batch first. Anything
/// else malformed is left for the decoder to report.
fn check_deltas(records: &[u8], header: &BatchHeader) -> Result<(), RecordsError> {
    let mut buf = records;
    for _ in 0..header.records_count.max(0) {
        let Some(size) = read_varint(&mut buf) else {
            return Ok(());
        };
        let Some(record) = usize::try_from(size).ok().and_then(|n| buf.get(..n)) else {
            return Ok(());
        };
        buf = &buf[record.len()..];
        let mut r = record.get(1..).unwrap_or_default(); // skip attributes
                                                         // The decoder adds each delta as soon as it has read it, so check in the same order.
        let Some(timestamp_delta) = read_varlong(&mut r) else {
            return Ok(());
        };
        if header.base_timestamp.checked_add(timestamp_delta).is_none() {
            return Err(overflow("timestamp", timestamp_delta));
        }
        let Some(offset_delta) = read_varint(&mut r) else {
            return Ok(());
        };
        if header
            .base_offset
            .checked_add(i64::from(offset_delta))
            .is_none()
        {
            return Err(overflow("offset", i64::from(offset_delta)));
        }
    }
    Ok(())
}

fn overflow(what: &str, delta: i64) -> RecordsError {
    RecordsError::Malformed(format!(
        "record {what} delta {delta} overflows the batch base"
    ))
}

/// Reads an unsigned varint of at most `max_bytes` the way kafka-protocol does (an
/// over-long encoding just stops; bits shifted out are dropped).
fn read_unsigned(buf: &mut &[u8], max_bytes: u32) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..max_bytes {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (i * 7);
        if b < 0x80 {
            break;
        }
    }
    Some(value)
}

fn read_varint(buf: &mut &[u8]) -> Option<i32> {
    let zigzag = read_unsigned(buf, 5)? as u32;
    Some(((zigzag >> 1) as i32) ^ -((zigzag & 1) as i32))
}

fn read_varlong(buf: &mut &[u8]) -> Option<i64> {
    let zigzag = read_unsigned(buf, 10)?;
    Some(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use kafka_protocol::records::TimestampType;

    pub(crate) fn record(
        offset: i64,
        ts: i64,
        key: Option<&'static [u8]>,
        value: &'static [u8],
    ) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1 + offset as i32,
            timestamp: ts,
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(value)),
            headers: IndexMap::new(),
        }
    }

    const CODECS: [WireCompression; 5] = [
        WireCompression::None,
        WireCompression::Gzip,
        WireCompression::Snappy,
        WireCompression::Lz4,
        WireCompression::Zstd,
    ];

    #[test]
    fn round_trips_each_codec_as_one_batch() {
        let records = vec![record(0, 10, Some(b"k"), b"v0"), record(1, 12, None, b"v1")];
        for codec in CODECS {
            let bytes = encode_batch(&records, codec).unwrap();
            let hs: Vec<_> = record_batch::batches(&bytes)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(hs.len(), 1, "{codec:?}");
            assert_eq!(hs[0].1.compression().unwrap(), codec.into());
            assert_eq!(decode_batches(&bytes).unwrap(), records, "{codec:?}");
        }
    }

    #[test]
    fn skips_partial_trailing_batch() {
        let a = encode_batch(&[record(0, 1, None, b"a")], WireCompression::None).unwrap();
        let b = encode_batch(&[record(1, 1, None, b"b")], WireCompression::None).unwrap();
        let mut all = a.to_vec();
        all.extend_from_slice(&b[..b.len() - 3]);
        let got = decode_batches(&Bytes::from(all)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset, 0);
        // A partial header is skipped too.
        let mut all = a.to_vec();
        all.extend_from_slice(&b[..5]);
        assert_eq!(decode_batches(&Bytes::from(all)).unwrap().len(), 1);
    }

    #[test]
    fn caps_decompressed_size() {
        let big: &'static [u8] = Box::leak(vec![b'x'; 100_000].into_boxed_slice());
        let bytes = encode_batch(&[record(0, 1, None, big)], WireCompression::Gzip).unwrap();
        assert!(bytes.len() < 10_000);
        assert!(matches!(
            decode_batches_with_limit(&bytes, 50_000),
            Err(RecordsError::Compression(CompressionError::TooLarge { .. }))
        ));
        assert_eq!(decode_batches_with_limit(&bytes, 200_000).unwrap().len(), 1);
    }

    #[test]
    fn rejects_corrupt_batch() {
        let mut bytes = encode_batch(&[record(0, 1, None, b"abc")], WireCompression::None)
            .unwrap()
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        assert!(matches!(
            decode_batches(&Bytes::from(bytes)),
            Err(RecordsError::Batch(BatchError::CrcMismatch { .. }))
        ));
    }

    /// Found by the record_batch fuzzer: a timestamp delta that overflows the base timestamp.
    #[test]
    fn rejects_overflowing_deltas() {
        let mut bytes = encode_batch(&[record(0, 1, None, b"a")], WireCompression::None)
            .unwrap()
            .to_vec();
        // The record starts right after the header: size, attributes, then the timestamp
        // delta (zigzag varlong, one byte 0x00 here). Make it i64::MAX: 10-byte varlong.
        let rec = record_batch::BATCH_HEADER_LEN;
        assert_eq!(bytes[rec + 2], 0, "timestamp delta 0");
        let max = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        bytes.splice(rec + 2..rec + 3, max);
        bytes[rec] += 2 * 9; // zigzag size grows by 9 bytes
        let len = (bytes.len() - record_batch::LOG_OVERHEAD) as i32;
        bytes[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode_batches(&Bytes::from(bytes)).unwrap_err();
        assert!(
            matches!(err, RecordsError::Malformed(ref m) if m.contains("overflow")),
            "{err}"
        );
    }

    /// The second fuzzer find: the timestamp overflows and the offset delta after it is
    /// truncated; kafka-protocol adds the timestamp before it reads the offset delta.
    #[test]
    fn rejects_overflowing_timestamp_before_truncated_offset_delta() {
        let mut b = vec![0u8; record_batch::BATCH_HEADER_LEN];
        b.extend_from_slice(&[0x0e, 0xf7, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0x32, 0xff]);
        let len = (b.len() - record_batch::LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[27..35].copy_from_slice(&(i64::MIN + 5).to_be_bytes());
        b[57..61].copy_from_slice(&1i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode_batches(&Bytes::from(b)).unwrap_err();
        assert!(
            matches!(err, RecordsError::Malformed(ref m) if m.contains("overflow")),
            "{err}"
        );
    }

    #[test]
    fn varints_match_kafka_zigzag() {
        let mut b: &[u8] = &[0x01, 0x02, 0x03, 0xfe, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(read_varint(&mut b), Some(-1));
        assert_eq!(read_varint(&mut b), Some(1));
        assert_eq!(read_varint(&mut b), Some(-2));
        assert_eq!(read_varint(&mut b), Some(i32::MAX));
        assert_eq!(read_varint(&mut b), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode_batches_with_limit(&Bytes::from(data), 1 << 16);
        }

        /// Garbage behind a valid header and CRC reaches the record decoder itself.
        #[test]
        fn never_panics_on_garbage_records(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                           codec in 0i16..5, count in 0i32..4) {
            let mut b = vec![0u8; record_batch::BATCH_HEADER_LEN];
            b.extend_from_slice(&body);
            let len = (b.len() - record_batch::LOG_OVERHEAD) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            b[16] = 2;
            b[21..23].copy_from_slice(&codec.to_be_bytes());
            b[23..27].copy_from_slice(&(count - 1).max(0).to_be_bytes());
            b[27..35].copy_from_slice(&i64::MAX.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = decode_batches_with_limit(&Bytes::from(b), 1 << 16);
        }
    }
}

/// The type of a control record (Kafka's `ControlRecordType`): the transaction marker that
/// ends a producer's transaction on one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    pub fn id(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

/// A transaction marker as it is written to a partition (Kafka's `EndTransactionMarker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The coordinator epoch (its `__transaction_state` partition's leader epoch) that wrote
    /// it: markers of an older coordinator are refused (TRANSACTION_COORDINATOR_FENCED).
    pub coordinator_epoch: i32,
    pub control: ControlType,
}

/// The control record key: version 0, then the type.
pub fn control_key(control: ControlType) -> Bytes {
    let mut k = Vec::with_capacity(4);
    k.extend_from_slice(&0i16.to_be_bytes());
    k.extend_from_slice(&control.id().to_be_bytes());
    Bytes::from(k)
}

/// The control type of a control record's key; `None` for an unknown version or type
/// (Kafka skips those: later versions may add types).
pub fn decode_control_key(key: &[u8]) -> Option<ControlType> {
    let version = i16::from_be_bytes(key.get(0..2)?.try_into().ok()?);
    let kind = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    match kind {
        0 => Some(ControlType::Abort),
        1 => Some(ControlType::Commit),
        _ => None,
    }
}

/// The coordinator epoch of a transaction marker's value (version 0: i16 version, i32 epoch).
pub fn decode_marker_coordinator_epoch(value: &[u8]) -> Option<i32> {
    let version = i16::from_be_bytes(value.get(0..2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    Some(i32::from_be_bytes(value.get(2..6)?.try_into().ok()?))
}

/// One control batch holding `marker`, base offset 0, for the log to assign offsets to.
pub fn encode_txn_marker(marker: &TxnMarker, timestamp: i64) -> Result<Bytes, RecordsError> {
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: marker.producer_id,
        producer_epoch: marker.producer_epoch,
        timestamp_type: kafka_protocol::records::TimestampType::Creation,
        offset: 0,
        // Control batches carry no sequence (Kafka writes -1).
        sequence: -1,
        timestamp,
        key: Some(control_key(marker.control)),
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    encode_batch(&[record], WireCompression::None)
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn marker_round_trip() {
        let m = TxnMarker {
            producer_id: 42,
            producer_epoch: 3,
            coordinator_epoch: 7,
            control: ControlType::Commit,
        };
        let bytes = encode_txn_marker(&m, 1_700_000_000_000).unwrap();
        let batches = decode_batches_detailed(&bytes, 1 << 20).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert!(b.header.is_control() && b.header.is_transactional());
        assert_eq!(b.header.producer_id, 42);
        assert_eq!(b.header.producer_epoch, 3);
        assert_eq!(b.header.base_sequence, -1);
        let r = &b.records[0];
        assert_eq!(
            decode_control_key(r.key.as_deref().unwrap()),
            Some(ControlType::Commit)
        );
        assert_eq!(
            decode_marker_coordinator_epoch(r.value.as_deref().unwrap()),
            Some(7)
        );
        assert_eq!(decode_control_key(&[0, 0, 0, 0]), Some(ControlType::Abort));
        assert_eq!(decode_control_key(&[0, 0, 0, 9]), None);
        assert_eq!(decode_control_key(&[0]), None);
        assert_eq!(decode_marker_coordinator_epoch(&[0, 0, 1]), None);
    }
}
