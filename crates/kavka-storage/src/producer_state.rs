//! Idempotent producer state of one partition (Kafka's `ProducerStateManager` and
//! `ProducerAppendInfo`): per producer id the current epoch and the metadata of the last
//! five batches, so a retried batch is recognised and acknowledged with its original offsets
//! instead of being written twice, and a gap or a zombie epoch is refused.
//!
//! The state is derived from the log: on open it is loaded from the newest `<offset>.snapshot`
//! (written at segment roll and on clean close) and brought up to the log end by scanning
//! batch headers only. Transactions are not supported, so there is no transaction state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kavka_protocol::record_batch::BatchHeader;
use thiserror::Error;

/// Kafka keeps the metadata of this many batches per producer (the client's
/// `max.in.flight.requests.per.connection` may not exceed it with idempotence).
pub const NUM_BATCHES_TO_RETAIN: usize = 5;

pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"KVPS";
const SNAPSHOT_VERSION: u16 = 1;
/// Bytes of one batch entry in a snapshot.
const BATCH_ENTRY_BYTES: usize = 4 + 4 + 8 + 8;
/// Bytes of a producer entry before its batches.
const PRODUCER_ENTRY_BYTES: usize = 8 + 2 + 8 + 1;
/// A snapshot larger than this is treated as corrupt (never allocated).
const MAX_SNAPSHOT_BYTES: u64 = 512 * 1024 * 1024;

/// Why an idempotent batch was refused. Mapped to Kafka error codes by the broker.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProducerStateError {
    /// A zombie: the batch's epoch is older than the producer's current epoch.
    #[error("producer {producer_id}'s epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A gap (or a new epoch not starting at 0).
    #[error("out of order sequence for producer {producer_id} at epoch {epoch}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        got: i32,
    },
    /// A batch that does not fit the producer's transaction state on this partition: a
    /// non-transactional batch while its transaction is ongoing, or a transactional batch of
    /// a producer that was not transactional in the same epoch (Kafka's `INVALID_TXN_STATE`).
    #[error("producer {producer_id}: batch does not fit its transaction state")]
    InvalidTxnState { producer_id: i64 },
    /// A transaction marker written by an older transaction coordinator than the last one
    /// seen for this producer (Kafka's `TRANSACTION_COORDINATOR_FENCED`).
    #[error("producer {producer_id}: marker from coordinator epoch {coordinator_epoch}, older than {current}")]
    TransactionCoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
}

/// One retained batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What the partition remembers of one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most [`NUM_BATCHES_TO_RETAIN`].
    pub batches: VecDeque<BatchMetadata>,
    /// Largest batch timestamp seen, for `producer.id.expiration.ms`.
    pub last_timestamp: i64,
    /// First offset of the producer's ongoing transaction on this partition, if any.
    pub current_txn_first_offset: Option<i64>,
    /// Epoch of the transaction coordinator that wrote the producer's last marker here, -1
    /// when none was seen.
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    /// Sequence of the last retained batch, -1 when none is (DescribeProducers).
    pub fn last_sequence(&self) -> i32 {
        self.last_seq().unwrap_or(-1)
    }

    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMetadata> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }

    fn push(&mut self, batch: BatchMetadata) {
        if self.batches.len() == NUM_BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

/// The sequence after `seq` advanced by `delta`, wrapping at `i32::MAX` as Kafka does.
pub fn increment_sequence(seq: i32, delta: i32) -> i32 {
    if seq > i32::MAX - delta {
        delta - (i32::MAX - seq) - 1
    } else {
        seq + delta
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

/// The idempotence-relevant fields of one batch header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub max_timestamp: i64,
}

impl ProducerBatch {
    /// `None` for batches without a producer id (non-idempotent producers).
    pub(crate) fn of(h: &BatchHeader) -> Option<ProducerBatch> {
        (h.producer_id >= 0).then(|| ProducerBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            last_seq: increment_sequence(h.base_sequence, h.last_offset_delta.max(0)),
            max_timestamp: h.max_timestamp,
        })
    }
}

/// Result of checking a client batch against the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Append it.
    Append,
    /// Already in the log: acknowledge with these offsets, append nothing.
    Duplicate(BatchMetadata),
}

#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateManager {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn producer(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer's entry, sorted by producer id (comparisons in tests).
    pub fn clone_entries(&self) -> Vec<(i64, ProducerEntry)> {
        let mut v: Vec<_> = self
            .producers
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Validates a batch from a client (Kafka's duplicate check, then `checkProducerEpoch`
    /// and `checkSequence`). `pending` holds entries already updated by earlier batches of
    /// the same request, which take precedence.
    pub(crate) fn check(
        &self,
        pending: &HashMap<i64, ProducerEntry>,
        b: &ProducerBatch,
    ) -> Result<Check, ProducerStateError> {
        let current = pending
            .get(&b.producer_id)
            .or_else(|| self.producers.get(&b.producer_id));
        let Some(entry) = current else {
            // Unknown producer (new, expired, or its batches were deleted by retention):
            // Kafka 3.x accepts any sequence here.
            return Ok(Check::Append);
        };
        if let Some(dup) = entry.find_duplicate(b.epoch, b.first_seq, b.last_seq) {
            return Ok(Check::Duplicate(dup));
        }
        if b.epoch < entry.epoch {
            return Err(ProducerStateError::InvalidProducerEpoch {
                producer_id: b.producer_id,
                epoch: b.epoch,
                current: entry.epoch,
            });
        }
        if b.epoch != entry.epoch {
            if b.first_seq != 0 {
                return Err(ProducerStateError::OutOfOrderSequence {
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    expected: 0,
                    got: b.first_seq,
                });
            }
        } else if let Some(last) = entry.last_seq() {
            if !in_sequence(last, b.first_seq) {
                return Err(ProducerStateError::OutOfOrderSequence {
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    expected: increment_sequence(last, 1),
                    got: b.first_seq,
                });
            }
        }
        Ok(Check::Append)
    }

    /// Records an appended (or replayed) batch into `target`, starting from `base` when the
    /// producer has no entry there yet.
    fn update_into(
        target: &mut HashMap<i64, ProducerEntry>,
        base: Option<&ProducerEntry>,
        b: &ProducerBatch,
        first_offset: i64,
        last_offset: i64,
    ) {
        let entry = target.entry(b.producer_id).or_insert_with(|| {
            base.cloned().unwrap_or(ProducerEntry {
                epoch: b.epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
                current_txn_first_offset: None,
                coordinator_epoch: -1,
            })
        });
        if b.epoch != entry.epoch {
            entry.epoch = b.epoch;
            entry.batches.clear();
        }
        entry.push(BatchMetadata {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            first_offset,
            last_offset,
        });
        entry.last_timestamp = entry.last_timestamp.max(b.max_timestamp);
    }

    /// Stages an accepted batch of a request in `pending`.
    pub(crate) fn stage(
        &self,
        pending: &mut HashMap<i64, ProducerEntry>,
        b: &ProducerBatch,
        first_offset: i64,
        last_offset: i64,
    ) {
        let base = self.producers.get(&b.producer_id);
        Self::update_into(pending, base, b, first_offset, last_offset);
    }

    /// Makes a request's staged entries current (after its batches were written).
    pub(crate) fn commit(&mut self, pending: HashMap<i64, ProducerEntry>) {
        self.producers.extend(pending);
    }

    /// Replays a batch found in the log (rebuild on open); never refuses.
    pub(crate) fn replay(&mut self, b: &ProducerBatch, first_offset: i64, last_offset: i64) {
        let mut one = HashMap::new();
        let base = self.producers.remove(&b.producer_id);
        Self::update_into(&mut one, base.as_ref(), b, first_offset, last_offset);
        self.producers.extend(one);
    }

    /// Forgets producers whose last batch is older than `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`). Returns how many were removed.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }

    /// Forgets producers whose every retained batch lies below the log start offset.
    pub fn on_log_start_offset(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, e| {
            e.batches
                .back()
                .is_some_and(|b| b.last_offset >= log_start_offset)
        });
    }

    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Serialises the state (sorted by producer id, so equal states give equal bytes).
    fn encode(&self) -> Vec<u8> {
        let sorted: BTreeMap<_, _> = self.producers.iter().collect();
        let mut out = Vec::with_capacity(16 + sorted.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&(sorted.len() as u32).to_be_bytes());
        for (pid, e) in sorted {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot; `None` when it is damaged in any way.
    fn decode(buf: &[u8]) -> Option<ProducerStateManager> {
        let (body, crc) = buf.split_at_checked(buf.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC || u16::from_be_bytes(r.array()?) != SNAPSHOT_VERSION {
            return None;
        }
        let count = u32::from_be_bytes(r.array()?) as usize;
        // Bound the allocation by what the bytes can hold.
        if count > r.0.len() / PRODUCER_ENTRY_BYTES {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let pid = i64::from_be_bytes(r.array()?);
            let epoch = i16::from_be_bytes(r.array()?);
            let last_timestamp = i64::from_be_bytes(r.array()?);
            let n = usize::from(r.take(1)?[0]);
            if n > NUM_BATCHES_TO_RETAIN {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let chunk = r.take(BATCH_ENTRY_BYTES)?;
                let mut c = Reader(chunk);
                batches.push_back(BatchMetadata {
                    first_seq: i32::from_be_bytes(c.array()?),
                    last_seq: i32::from_be_bytes(c.array()?),
                    first_offset: i64::from_be_bytes(c.array()?),
                    last_offset: i64::from_be_bytes(c.array()?),
                });
            }
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                    current_txn_first_offset: None,
                    coordinator_epoch: -1,
                },
            );
        }
        r.0.is_empty().then_some(ProducerStateManager { producers })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// `<dir>/<offset, 20 digits>.snapshot`: the state of every batch below `offset`.
pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_SUFFIX}"))
}

/// Snapshot offsets present in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name
            .strip_suffix(SNAPSHOT_SUFFIX)
            .and_then(|s| s.strip_suffix('.'))
        else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(offset) = stem.parse::<i64>() {
                out.push(offset);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes the snapshot for `offset` (temp file, rename). A snapshot is only a cache of what
/// the log holds: one torn by a crash fails its CRC and the next older one (or the log
/// itself) is used, so `sync` (an fsync before the rename) is optional.
pub(crate) fn write_snapshot(
    dir: &Path,
    offset: i64,
    state: &ProducerStateManager,
    sync: bool,
) -> io::Result<()> {
    let path = snapshot_path(dir, offset);
    let tmp = path.with_extension("snapshot.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&state.encode())?;
        if sync {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, &path)
}

/// Reads the snapshot for `offset`; `Ok(None)` when it is missing or damaged.
pub(crate) fn read_snapshot(dir: &Path, offset: i64) -> io::Result<Option<ProducerStateManager>> {
    let path = snapshot_path(dir, offset);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if f.metadata()?.len() > MAX_SNAPSHOT_BYTES {
        return Ok(None);
    }
    let buf = fs::read(&path)?;
    Ok(ProducerStateManager::decode(&buf))
}

/// Removes the snapshot for `offset`, if present.
pub(crate) fn delete_snapshot(dir: &Path, offset: i64) -> io::Result<()> {
    match fs::remove_file(snapshot_path(dir, offset)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Leftovers of an interrupted snapshot write.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name.ends_with(".snapshot.tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, first: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: pid,
            epoch,
            first_seq: first,
            last_seq: increment_sequence(first, count - 1),
            max_timestamp: 1000,
        }
    }

    fn append(
        s: &mut ProducerStateManager,
        b: &ProducerBatch,
        off: i64,
    ) -> Result<Check, ProducerStateError> {
        let mut pending = HashMap::new();
        let c = s.check(&pending, b)?;
        if c == Check::Append {
            s.stage(
                &mut pending,
                b,
                off,
                off + i64::from(b.last_seq - b.first_seq),
            );
            s.commit(pending);
        }
        Ok(c)
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 3), 8);
        assert!(in_sequence(i32::MAX, 0));
        assert!(!in_sequence(i32::MAX, 1));
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut s = ProducerStateManager::new();
        assert_eq!(append(&mut s, &batch(7, 0, 0, 3), 0), Ok(Check::Append));
        assert_eq!(append(&mut s, &batch(7, 0, 3, 2), 3), Ok(Check::Append));
        // Retry of the first batch: its original offsets.
        assert_eq!(
            append(&mut s, &batch(7, 0, 0, 3), 99),
            Ok(Check::Duplicate(BatchMetadata {
                first_seq: 0,
                last_seq: 2,
                first_offset: 0,
                last_offset: 2
            }))
        );
        assert!(matches!(
            append(&mut s, &batch(7, 0, 6, 1), 5),
            Err(ProducerStateError::OutOfOrderSequence {
                expected: 5,
                got: 6,
                ..
            })
        ));
        // New epoch must start at 0; then the old epoch is fenced.
        assert!(matches!(
            append(&mut s, &batch(7, 1, 5, 1), 5),
            Err(ProducerStateError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(append(&mut s, &batch(7, 1, 0, 1), 5), Ok(Check::Append));
        assert!(matches!(
            append(&mut s, &batch(7, 0, 5, 1), 6),
            Err(ProducerStateError::InvalidProducerEpoch { current: 1, .. })
        ));
        // Unknown producer: any sequence.
        assert_eq!(append(&mut s, &batch(8, 0, 42, 1), 6), Ok(Check::Append));
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut s = ProducerStateManager::new();
        for i in 0..6 {
            append(&mut s, &batch(1, 0, i, 1), i64::from(i)).unwrap();
        }
        assert_eq!(s.producer(1).unwrap().batches.len(), NUM_BATCHES_TO_RETAIN);
        // The oldest fell out: a retry of it is now out of order.
        assert!(append(&mut s, &batch(1, 0, 0, 1), 6).is_err());
        assert!(matches!(
            append(&mut s, &batch(1, 0, 1, 1), 6),
            Ok(Check::Duplicate(_))
        ));
    }

    #[test]
    fn snapshot_round_trip_and_damage() {
        let mut s = ProducerStateManager::new();
        for pid in 0..10 {
            for i in 0..3 {
                append(
                    &mut s,
                    &batch(pid, 2, i * 10, 10),
                    pid * 100 + i64::from(i) * 10,
                )
                .unwrap();
            }
        }
        let bytes = s.encode();
        let back = ProducerStateManager::decode(&bytes).unwrap();
        assert_eq!(back.producers, s.producers);
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(ProducerStateManager::decode(&bytes[..cut]).is_none());
        }
        let mut flipped = bytes.clone();
        flipped[12] ^= 1;
        assert!(ProducerStateManager::decode(&flipped).is_none());
    }

    #[test]
    fn expiry_and_log_start() {
        let mut s = ProducerStateManager::new();
        append(&mut s, &batch(1, 0, 0, 1), 0).unwrap();
        let mut late = batch(2, 0, 0, 1);
        late.max_timestamp = 5000;
        append(&mut s, &late, 10).unwrap();
        assert_eq!(s.remove_expired(3000, 1000), 1);
        assert!(s.producer(1).is_none());
        s.on_log_start_offset(11);
        assert!(s.is_empty());
    }
}
