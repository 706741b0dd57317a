//! Record-level view of one v2 batch for the cleaner: where each record, its key and its
//! value sit in the (decompressed) records section, and the rebuild of a batch from the
//! records that survive cleaning.
//!
//! A rebuilt batch keeps the base offset, `lastOffsetDelta` (so the next batch still starts
//! right after it, as Kafka does), producer id, epoch and base sequence, partition leader
//! epoch, max timestamp and compression codec. Record bytes are copied verbatim unless the
//! batch gets a delete horizon (KIP-534): then the base timestamp holds the horizon and each
//! record's timestamp delta is rewritten against it, so absolute timestamps do not change.

use std::borrow::Cow;
use std::ops::Range;

use kavka_protocol::compression::{self, Lz4Checksum};
use kavka_protocol::record_batch::{BatchHeader, Compression, BATCH_HEADER_LEN, COMPRESSION_MASK};

/// Attribute bit 6: the base timestamp is the delete horizon (KIP-534).
pub(crate) const DELETE_HORIZON_FLAG: i16 = 0x40;
const CRC_START: usize = 21;

/// One record of a batch, as ranges into the records section.
#[derive(Clone, Debug)]
pub(crate) struct RecordView {
    /// The whole record, length prefix included.
    pub bytes: Range<usize>,
    /// From the offset delta to the end of the record (what follows the timestamp delta).
    pub after_timestamp: Range<usize>,
    pub attributes: u8,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Range<usize>>,
    /// A null value: a tombstone.
    pub null_value: bool,
}

/// The batch's delete horizon, if the cleaner set one.
pub(crate) fn delete_horizon(h: &BatchHeader) -> Option<i64> {
    (h.attributes & DELETE_HORIZON_FLAG != 0).then_some(h.base_timestamp)
}

/// The records section of a CRC-checked batch (`batch` holds exactly the batch), inflated
/// when compressed, at most `max_bytes` long. An uncompressed section is borrowed, not
/// copied: append checks every batch of a compacted topic through here.
pub(crate) fn records_section<'a>(
    batch: &'a [u8],
    h: &BatchHeader,
    max_bytes: usize,
) -> Result<Cow<'a, [u8]>, String> {
    let body = batch.get(BATCH_HEADER_LEN..).unwrap_or_default();
    let codec = h.compression().map_err(|e| e.to_string())?;
    if codec == Compression::None {
        if body.len() > max_bytes {
            return Err(format!("records section larger than {max_bytes} bytes"));
        }
        return Ok(Cow::Borrowed(body));
    }
    compression::decompress(codec, body, max_bytes, Lz4Checksum::Standard)
        .map(Cow::Owned)
        .map_err(|e| e.to_string())
}

/// Splits a records section into its records; anything that does not parse exactly (a
/// length past the end, a count that does not match, trailing bytes) is an error.
pub(crate) fn parse_records(data: &[u8], h: &BatchHeader) -> Result<Vec<RecordView>, String> {
    let count = usize::try_from(h.records_count).map_err(|_| "negative record count")?;
    // Every record takes at least 7 bytes: bound the allocation by the data, not the header.
    let mut out = Vec::with_capacity(count.min(data.len() / 7 + 1));
    for_each_record(data, h, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// [`parse_records`] without collecting: hands each record to `visit` in order and stops at
/// its first error (the append path checks keys this way, allocating nothing per record).
pub(crate) fn for_each_record(
    data: &[u8],
    h: &BatchHeader,
    mut visit: impl FnMut(RecordView) -> Result<(), String>,
) -> Result<(), String> {
    let count = usize::try_from(h.records_count).map_err(|_| "negative record count")?;
    let mut pos = 0usize;
    for _ in 0..count {
        let mut r = Reader { data, pos };
        let size = r.varint()?;
        let size = usize::try_from(size).map_err(|_| format!("negative record size {size}"))?;
        let body_start = r.pos;
        let end = body_start
            .checked_add(size)
            .filter(|e| *e <= data.len())
            .ok_or("record runs past the end of the batch")?;
        let mut b = Reader {
            data: &data[..end],
            pos: body_start,
        };
        let attributes = b.byte()?;
        let ts_delta = b.varlong()?;
        let after_ts = b.pos;
        let offset_delta = b.varint()?;
        let key = b.bytes()?;
        let null_value = b.bytes()?.is_none();
        let offset = h
            .base_offset
            .checked_add(i64::from(offset_delta))
            .filter(|o| offset_delta >= 0 && offset_delta <= h.last_offset_delta && *o < i64::MAX)
            .ok_or_else(|| format!("record offset delta {offset_delta} outside the batch"))?;
        let timestamp = h
            .base_timestamp
            .checked_add(ts_delta)
            .ok_or("record timestamp overflows")?;
        visit(RecordView {
            bytes: pos..end,
            after_timestamp: after_ts..end,
            attributes,
            offset,
            timestamp,
            key,
            null_value,
        })?;
        pos = end;
    }
    if pos != data.len() {
        return Err(format!(
            "{} bytes after the last of {count} records",
            data.len() - pos
        ));
    }
    Ok(())
}

/// Appends to `out` the batch `h` rebuilt from `kept` (records of `data`, in order), with
/// `horizon` as its delete horizon when given. An empty `kept` writes an empty batch (kept
/// only to preserve an idempotent producer's last sequence). Uncompressed records go
/// straight from `data` into `out`; only a compressed batch stages its records first.
pub(crate) fn write_batch(
    out: &mut Vec<u8>,
    h: &BatchHeader,
    data: &[u8],
    kept: &[&RecordView],
    horizon: Option<i64>,
) -> Result<(), String> {
    let base_timestamp = horizon.unwrap_or(h.base_timestamp);
    let mut attributes = h.attributes;
    if horizon.is_some() {
        attributes |= DELETE_HORIZON_FLAG;
    }
    let codec = h.compression().map_err(|e| e.to_string())?;
    if kept.is_empty() {
        attributes &= !COMPRESSION_MASK;
    }
    let start = out.len();
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // batch length, below
    out.extend_from_slice(&h.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]); // CRC, below
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&h.producer_id.to_be_bytes());
    out.extend_from_slice(&h.producer_epoch.to_be_bytes());
    out.extend_from_slice(&h.base_sequence.to_be_bytes());
    out.extend_from_slice(&(kept.len() as i32).to_be_bytes());
    debug_assert_eq!(out.len() - start, BATCH_HEADER_LEN);
    let written = if kept.is_empty() || codec == Compression::None {
        put_records(out, data, kept, horizon, base_timestamp)
    } else {
        let mut records = Vec::with_capacity(kept.iter().map(|r| r.bytes.len() + 4).sum());
        put_records(&mut records, data, kept, horizon, base_timestamp).and_then(|()| {
            let section = compression::compress(codec, &records, Lz4Checksum::Standard)
                .map_err(|e| e.to_string())?;
            out.extend_from_slice(&section);
            Ok(())
        })
    };
    if let Err(e) = written {
        out.truncate(start);
        return Err(e);
    }
    let Ok(batch_length) = i32::try_from(out.len() - start - 12) else {
        out.truncate(start);
        return Err("rebuilt batch too large".into());
    };
    out[start + 8..start + 12].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The records of `kept`, verbatim, or with their timestamp deltas rewritten against
/// `base_timestamp` when the batch gets a delete horizon.
fn put_records(
    out: &mut Vec<u8>,
    data: &[u8],
    kept: &[&RecordView],
    horizon: Option<i64>,
    base_timestamp: i64,
) -> Result<(), String> {
    for r in kept {
        if horizon.is_none() {
            out.extend_from_slice(&data[r.bytes.clone()]);
            continue;
        }
        let delta = r
            .timestamp
            .checked_sub(base_timestamp)
            .ok_or("timestamp delta against the delete horizon overflows")?;
        let zigzag = ((delta << 1) ^ (delta >> 63)) as u64;
        let tail = &data[r.after_timestamp.clone()];
        let size = 1 + unsigned_len(zigzag) + tail.len();
        let size = i32::try_from(size).map_err(|_| "record too large")?;
        put_varint(out, size);
        out.push(r.attributes);
        put_unsigned(out, zigzag);
        out.extend_from_slice(tail);
    }
    Ok(())
}

/// Bytes `put_unsigned` writes for `v`.
fn unsigned_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.pos).ok_or("record truncated")?;
        self.pos += 1;
        Ok(b)
    }

    fn unsigned(&mut self, max_bytes: u32) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << (i * 7);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn varint(&mut self) -> Result<i32, String> {
        let z = self.unsigned(5)?;
        let z = u32::try_from(z).map_err(|_| "varint out of range")?;
        Ok(((z >> 1) as i32) ^ -((z & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, String> {
        let z = self.unsigned(10)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A length-prefixed byte string; -1 is null.
    fn bytes(&mut self) -> Result<Option<Range<usize>>, String> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("negative length {len}"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.data.len())
            .ok_or("field runs past the end of the record")?;
        let r = self.pos..end;
        self.pos = end;
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{Compression as Wire, Record, TimestampType};
    use kavka_protocol::record_batch;
    use kavka_protocol::records::{decode_batches_detailed, encode_batch};

    fn rec(offset: i64, key: Option<&str>, value: Option<&str>) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 7,
            producer_id: 9,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 1000 + offset * 10,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        }
    }

    fn rebuild(codec: Wire, keep: &[usize], horizon: Option<i64>) -> (BatchHeader, Vec<Record>) {
        let records = vec![
            rec(100, Some("a"), Some("1")),
            rec(101, Some("b"), None),
            rec(102, None, Some("3")),
            rec(103, Some("a"), Some("4")),
        ];
        let batch = encode_batch(&records, codec).unwrap();
        let h = record_batch::validate(&batch).unwrap();
        let data = records_section(&batch, &h, 1 << 20).unwrap();
        let views = parse_records(&data, &h).unwrap();
        assert_eq!(views.len(), 4);
        assert_eq!(
            views[1].key.as_ref().map(|k| &data[k.clone()]),
            Some(&b"b"[..])
        );
        assert!(views[1].null_value && views[2].key.is_none());
        let kept: Vec<&RecordView> = keep.iter().map(|i| &views[*i]).collect();
        let mut out = Vec::new();
        write_batch(&mut out, &h, &data, &kept, horizon).unwrap();
        let nh = record_batch::validate(&out).unwrap();
        let decoded = decode_batches_detailed(&Bytes::from(out), 1 << 20).unwrap();
        assert_eq!(decoded.len(), 1);
        (nh, decoded.into_iter().next().unwrap().records)
    }

    #[test]
    fn keeps_offsets_producer_fields_and_codec() {
        for codec in [Wire::None, Wire::Gzip, Wire::Snappy, Wire::Lz4, Wire::Zstd] {
            let (h, got) = rebuild(codec, &[1, 3], None);
            assert_eq!(h.base_offset, 100);
            assert_eq!(h.last_offset_delta, 3, "the offset range is kept");
            assert_eq!(h.records_count, 2);
            assert_eq!(h.compression().unwrap(), codec.into());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (9, 1, 100)
            );
            assert_eq!(h.partition_leader_epoch, 7);
            assert_eq!(
                got.iter().map(|r| r.offset).collect::<Vec<_>>(),
                vec![101, 103]
            );
            assert_eq!(got[1].timestamp, 2030);
            assert_eq!(got[1].value.as_deref(), Some(&b"4"[..]));
        }
    }

    #[test]
    fn delete_horizon_keeps_absolute_timestamps() {
        for codec in [Wire::Lz4, Wire::None] {
            let (h, got) = rebuild(codec, &[0, 1], Some(5_000_000));
            assert_eq!(delete_horizon(&h), Some(5_000_000));
            assert_eq!(h.compression().unwrap(), codec.into());
            assert_eq!(
                got.iter().map(|r| r.timestamp).collect::<Vec<_>>(),
                vec![2000, 2010]
            );
            assert!(got[1].value.is_none());
            assert!(got[0].delete_horizon);
        }
    }

    #[test]
    fn unsigned_len_matches_put_unsigned() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_unsigned(&mut out, v);
            assert_eq!(unsigned_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn empty_batch_keeps_the_offset_range() {
        let (h, got) = rebuild(Wire::Zstd, &[], None);
        assert_eq!((h.records_count, h.last_offset_delta), (0, 3));
        assert_eq!(h.compression().unwrap(), Compression::None);
        assert!(got.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                              count in 0i32..10, last in 0i32..10) {
            let h = BatchHeader {
                base_offset: 5, batch_length: 0, partition_leader_epoch: 0, magic: 2, crc: 0,
                attributes: 0, last_offset_delta: last, base_timestamp: i64::MAX - 3,
                max_timestamp: 0, producer_id: -1, producer_epoch: -1, base_sequence: -1,
                records_count: count,
            };
            let _ = parse_records(&data, &h);
        }
    }
}
