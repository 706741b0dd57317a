//! `__transaction_state` records, byte-compatible with Kafka's `TransactionLogKey` (v0) and
//! `TransactionLogValue` (v0 written; v0 and the flexible v1 read, v1's tagged fields
//! skipped). A null value is a tombstone: the transactional id was removed.
//!
//! Key:   int16 version=0, string transactional_id
//! Value: int16 version, int64 producer_id, int16 producer_epoch, int32 timeout_ms,
//!        int8 status, nullable [ {string topic, [int32] partition_ids} ],
//!        int64 last_update_timestamp_ms, int64 start_timestamp_ms (v1: compact
//!        strings and arrays, tagged fields after every struct).

use super::state::{TopicPartition, Transit, TxnState, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};

/// Longest transactional id or topic name decoded.
const MAX_STRING: usize = 32 * 1024;
/// Most partitions one stored transaction may name.
const MAX_PARTITIONS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("unsupported {0} version {1}")]
    Version(&'static str, i16),
    #[error("bad {0}")]
    Bad(&'static str),
}

/// The value of a `__transaction_state` record: a transactional id's state as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnLogValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TopicPartition>,
    pub last_update_timestamp: i64,
    pub start_timestamp: i64,
}

impl TxnLogValue {
    pub fn from_transit(t: &Transit) -> Self {
        TxnLogValue {
            producer_id: t.producer_id,
            producer_epoch: t.producer_epoch,
            timeout_ms: t.timeout_ms,
            state: t.state,
            partitions: t.partitions.clone(),
            last_update_timestamp: t.last_update_timestamp,
            start_timestamp: t.start_timestamp,
        }
    }

    /// The transition a replay applies (the last producer id and epoch are not stored).
    pub fn to_transit(&self) -> Transit {
        Transit {
            producer_id: self.producer_id,
            last_producer_id: NO_PRODUCER_ID,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions.clone(),
            start_timestamp: self.start_timestamp,
            last_update_timestamp: self.last_update_timestamp,
            fences: false,
        }
    }
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(0);
    put_string(&mut b, transactional_id);
    b.freeze()
}

/// Version 0, as Kafka writes it for clients without transaction version 2; an Empty
/// state's partitions are null.
pub fn encode_value(v: &TxnLogValue) -> Bytes {
    debug_assert!(v.state != TxnState::Empty || v.partitions.is_empty());
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(0);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_i8(v.state.id());
    if v.state == TxnState::Empty {
        b.put_i32(-1);
    } else {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &v.partitions {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        b.put_i32(by_topic.len() as i32);
        for (t, ps) in by_topic {
            put_string(&mut b, t);
            b.put_i32(ps.len() as i32);
            for p in ps {
                b.put_i32(p);
            }
        }
    }
    b.put_i64(v.last_update_timestamp);
    b.put_i64(v.start_timestamp);
    b.freeze()
}

fn put_string(b: &mut BytesMut, s: &str) {
    // Names are bounded well below i16::MAX by the coordinator's checks.
    debug_assert!(s.len() <= i16::MAX as usize);
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

/// The transactional id of a key; `Ok(None)` for a key version this broker does not know
/// (skipped, as Kafka does).
pub fn decode_key(bytes: &[u8]) -> Result<Option<String>, RecordError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version != 0 {
        return Ok(None);
    }
    Ok(Some(r.string(false)?))
}

pub fn decode_value(bytes: &[u8]) -> Result<TxnLogValue, RecordError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    let flexible = match version {
        0 => false,
        1 => true,
        v => return Err(RecordError::Version("transaction log value", v)),
    };
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_id(r.i8()?).ok_or(RecordError::Bad("transaction status"))?;
    let mut partitions = BTreeSet::new();
    if let Some(topics) = r.array_len(flexible)? {
        for _ in 0..topics {
            let topic = r.string(flexible)?;
            let n = r
                .array_len(flexible)?
                .ok_or(RecordError::Bad("partition ids"))?;
            for _ in 0..n {
                partitions.insert((topic.clone(), r.i32()?));
                if partitions.len() > MAX_PARTITIONS {
                    return Err(RecordError::Bad("too many partitions"));
                }
            }
            if flexible {
                r.skip_tagged_fields()?;
            }
        }
    }
    let last_update_timestamp = r.i64()?;
    let start_timestamp = r.i64()?;
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(TxnLogValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_timestamp,
        start_timestamp,
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(i8::from_be_bytes(self.fixed()?))
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.fixed()?))
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.fixed()?))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.fixed()?))
    }

    fn uvarint(&mut self) -> Result<u32, RecordError> {
        let mut v: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.fixed::<1>()?[0];
            v |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Bad("varint"))
    }

    fn string(&mut self, compact: bool) -> Result<String, RecordError> {
        let len = if compact {
            let n = self.uvarint()?;
            usize::try_from(n.checked_sub(1).ok_or(RecordError::Bad("null string"))?)
                .map_err(|_| RecordError::Bad("string length"))?
        } else {
            usize::try_from(self.i16()?).map_err(|_| RecordError::Bad("null string"))?
        };
        if len > MAX_STRING {
            return Err(RecordError::Bad("string too long"));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| RecordError::Bad("utf-8"))
    }

    /// `None` for a null array.
    fn array_len(&mut self, compact: bool) -> Result<Option<usize>, RecordError> {
        let n: i64 = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if n < 0 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| RecordError::Bad("array length"))?;
        // Every element takes at least one byte: a length beyond the rest is corrupt.
        if n > self.0.len() {
            return Err(RecordError::Truncated);
        }
        Ok(Some(n))
    }

    fn skip_tagged_fields(&mut self) -> Result<(), RecordError> {
        let n = self.uvarint()?;
        for _ in 0..n {
            let _tag = self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(state: TxnState, parts: &[(&str, i32)]) -> TxnLogValue {
        TxnLogValue {
            producer_id: 1000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state,
            partitions: parts.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            last_update_timestamp: 1_700_000_000_123,
            start_timestamp: 1_700_000_000_000,
        }
    }

    #[test]
    fn key_bytes_match_kafka() {
        let k = encode_key("tx-1");
        assert_eq!(&k[..], &[0, 0, 0, 4, b't', b'x', b'-', b'1']);
        assert_eq!(decode_key(&k).unwrap().as_deref(), Some("tx-1"));
        assert_eq!(decode_key(&[0, 1, 0, 0]).unwrap(), None);
        assert_eq!(decode_key(&[0, 0, 0, 9, b'a']), Err(RecordError::Truncated));
    }

    #[test]
    fn value_v0_bytes_match_kafka() {
        let v = value(TxnState::Ongoing, &[("t", 0), ("t", 2)]);
        let mut want = vec![0u8, 0];
        want.extend_from_slice(&1000i64.to_be_bytes());
        want.extend_from_slice(&3i16.to_be_bytes());
        want.extend_from_slice(&60_000i32.to_be_bytes());
        want.push(1); // Ongoing
        want.extend_from_slice(&1i32.to_be_bytes()); // one topic
        want.extend_from_slice(&[0, 1, b't']);
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&0i32.to_be_bytes());
        want.extend_from_slice(&2i32.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
        want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(&encode_value(&v)[..], &want[..]);
        assert_eq!(decode_value(&want).unwrap(), v);
    }

    #[test]
    fn empty_state_has_null_partitions() {
        let v = value(TxnState::Empty, &[]);
        let b = encode_value(&v);
        assert_eq!(&b[17..21], &(-1i32).to_be_bytes());
        assert_eq!(decode_value(&b).unwrap(), v);
    }

    #[test]
    fn round_trip_every_state() {
        for s in super::super::state::ALL_STATES {
            let parts: &[(&str, i32)] = if s == TxnState::Empty {
                &[]
            } else {
                &[("a", 1), ("b", 0), ("b", 7)]
            };
            let v = value(s, parts);
            assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
        }
    }

    #[test]
    fn value_v1_flexible_with_tagged_fields_decodes() {
        let mut b = vec![0u8, 1];
        b.extend_from_slice(&1000i64.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&60_000i32.to_be_bytes());
        b.push(2); // PrepareCommit
        b.push(2); // compact array: one topic
        b.extend_from_slice(&[2, b't']); // compact string "t"
        b.push(2); // one partition id
        b.extend_from_slice(&5i32.to_be_bytes());
        b.push(0); // topic's tagged fields
        b.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
        b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        // Tagged fields: ClientTransactionVersion (tag 2) = 2, PreviousProducerId (tag 0).
        b.extend_from_slice(&[2, 2, 2, 0, 2, 0, 8]);
        b.extend_from_slice(&999i64.to_be_bytes());
        let v = decode_value(&b).unwrap();
        assert_eq!(v, value(TxnState::PrepareCommit, &[("t", 5)]));
    }

    #[test]
    fn corrupt_values_are_errors() {
        let good = encode_value(&value(TxnState::Ongoing, &[("t", 0)]));
        for n in 0..good.len() {
            assert!(decode_value(&good[..n]).is_err(), "prefix {n}");
        }
        let mut bad = good.to_vec();
        bad[16] = 9; // status
        assert_eq!(
            decode_value(&bad),
            Err(RecordError::Bad("transaction status"))
        );
        let mut bad = good.to_vec();
        bad[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_value(&bad).is_err());
        assert_eq!(
            decode_value(&[0, 5]),
            Err(RecordError::Version("transaction log value", 5))
        );
    }
}
