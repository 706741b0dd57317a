//! Whole-record encoding and decoding of v2 batches, for the places that need records rather
//! than bytes: the client, down-conversion, compaction and tests. The broker's produce and
//! fetch paths never come here.
//!
//! Wraps kafka-protocol's `RecordBatchEncoder`/`RecordBatchDecoder`, but decompresses with
//! [`crate::compression`] so a hostile batch cannot inflate beyond a cap, and checks each
//! batch with [`crate::record_batch::validate`] first so a partial trailing batch (as a Fetch
//! response may end with) is skipped rather than reported as corrupt.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

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
        let records = decode_one(batch, &budget)?;
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
fn decode_one(mut batch: Bytes, budget: &Cell<usize>) -> Result<Vec<Record>, RecordsError> {
    let compression_error = Cell::new(None);
    let decompress = |data: &mut Bytes, codec: WireCompression| -> anyhow::Result<Bytes> {
        if codec == WireCompression::None {
            return Ok(data.clone());
        }
        match compression::decompress(codec.into(), data, budget.get(), Lz4Checksum::Standard) {
            Ok(v) => {
                budget.set(budget.get() - v.len());
                Ok(Bytes::from(v))
            }
            Err(e) => {
                compression_error.set(Some(e.clone()));
                Err(e.into())
            }
        }
    };
    // kafka-protocol adds timestamp and offset deltas with `+`, which panics on overflow in
    // debug builds (and the fuzzers); turn that into an error instead of a crash.
    let result = catch_unwind(AssertUnwindSafe(|| {
        RecordBatchDecoder::decode_with_custom_compression(&mut batch, Some(decompress))
    }));
    match result {
        Ok(Ok(set)) => Ok(set.records),
        Ok(Err(e)) => Err(match compression_error.take() {
            Some(c) => RecordsError::Compression(c),
            None => RecordsError::Malformed(e.to_string()),
        }),
        Err(_) => Err(RecordsError::Malformed(
            "arithmetic overflow in record deltas".into(),
        )),
    }
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
