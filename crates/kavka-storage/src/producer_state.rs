//! Idempotent and transactional producer state of one partition (Kafka's
//! `ProducerStateManager` and `ProducerAppendInfo`): per producer id the current epoch and
//! the metadata of the last five batches, so a retried batch is recognised and acknowledged
//! with its original offsets instead of being written twice, and a gap or a zombie epoch is
//! refused; the first offset of its ongoing transaction on this partition and the epoch of
//! the coordinator that wrote its last marker.
//!
//! A transactional data batch opens a transaction for its producer if none is open; a
//! control batch (COMMIT or ABORT marker) closes it and yields a [`CompletedTxn`]. The open
//! transactions, ordered by first offset, give the first unstable offset; completed ones are
//! kept until the high watermark passes their marker, since until then the marker may still
//! be lost (Kafka's `unreplicatedTxns`), and both bound the last stable offset.
//!
//! The state is derived from the log: on open it is loaded from the newest `<offset>.snapshot`
//! (written at segment roll and on clean close) and brought up to the log end by scanning
//! batch headers (and the one record of each control batch).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kavka_protocol::record_batch::BatchHeader;
use kavka_protocol::records::{decode_control_key, decode_marker_coordinator_epoch, ControlType};
use thiserror::Error;

/// Kafka keeps the metadata of this many batches per producer (the client's
/// `max.in.flight.requests.per.connection` may not exceed it with idempotence).
pub const NUM_BATCHES_TO_RETAIN: usize = 5;

pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"KVPS";
/// Version 1: epochs and batches only. Version 2 adds the coordinator epoch and the first
/// offset of the ongoing transaction to each producer.
const SNAPSHOT_VERSION_V1: u16 = 1;
const SNAPSHOT_VERSION: u16 = 2;
/// Bytes of one batch entry in a snapshot.
const BATCH_ENTRY_BYTES: usize = 4 + 4 + 8 + 8;
/// Bytes of a producer entry before its batches, in versions 1 and 2.
const PRODUCER_ENTRY_BYTES_V1: usize = 8 + 2 + 8 + 1;
const PRODUCER_ENTRY_BYTES: usize = 8 + 2 + 8 + 4 + 8 + 1;
/// Completed transactions kept for the last stable offset until the high watermark passes
/// their markers. Beyond this many (a replica nobody reports a high watermark to), the
/// oldest markers are assumed replicated.
const MAX_UNREPLICATED_TXNS: usize = 100_000;
/// Largest control batch whose record is read to find the marker type (they are ~80 bytes).
pub(crate) const MAX_CONTROL_BATCH_BYTES: usize = 64 * 1024;
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

    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_timestamp: -1,
            current_txn_first_offset: None,
            coordinator_epoch: -1,
        }
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

/// What a transaction marker (the one record of a control batch) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MarkerInfo {
    pub control: ControlType,
    pub coordinator_epoch: i32,
}

/// The kind of a batch with a producer id, as far as producer state is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchKind {
    Data {
        transactional: bool,
    },
    Marker(MarkerInfo),
    /// A control batch that is no marker we know: an empty one left by the cleaner, or a
    /// type of a later version. It changes nothing (Kafka skips empty ones too).
    OtherControl,
}

/// The idempotence- and transaction-relevant fields of one batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub max_timestamp: i64,
    pub kind: BatchKind,
}

impl ProducerBatch {
    /// `None` for batches without a producer id (non-idempotent producers). A control
    /// batch is [`BatchKind::OtherControl`] until its record is read ([`Self::of_batch`]).
    pub(crate) fn of(h: &BatchHeader) -> Option<ProducerBatch> {
        (h.producer_id >= 0).then(|| ProducerBatch {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first_seq: h.base_sequence,
            last_seq: increment_sequence(h.base_sequence, h.last_offset_delta.max(0)),
            max_timestamp: h.max_timestamp,
            kind: if h.is_control() {
                BatchKind::OtherControl
            } else {
                BatchKind::Data {
                    transactional: h.is_transactional(),
                }
            },
        })
    }

    /// [`Self::of`] with the marker of a control batch read from `batch` (exactly the
    /// batch's bytes, when at hand).
    pub(crate) fn of_batch(h: &BatchHeader, batch: Option<&[u8]>) -> Option<ProducerBatch> {
        let mut b = Self::of(h)?;
        if let Some(m) = batch.and_then(|bytes| parse_marker(bytes, h)) {
            b.kind = BatchKind::Marker(m);
        }
        Some(b)
    }
}

/// A transaction ended by a marker on this partition (Kafka's `CompletedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub is_aborted: bool,
}

/// Reads the marker of a control batch (`batch` holds exactly the batch): the key of its
/// first record says COMMIT or ABORT, the value the coordinator epoch. `None` when it is not
/// a control batch, holds no record, or does not parse.
pub(crate) fn parse_marker(batch: &[u8], h: &BatchHeader) -> Option<MarkerInfo> {
    if !h.is_control() || h.records_count < 1 || batch.len() > MAX_CONTROL_BATCH_BYTES {
        return None;
    }
    let data = crate::record_filter::records_section(batch, h, MAX_CONTROL_BATCH_BYTES).ok()?;
    let mut r = Reader(&data);
    let len = usize::try_from(r.varint()?).ok()?;
    let mut rec = Reader(r.take(len)?);
    rec.take(1)?; // attributes
    rec.varint()?; // timestamp delta
    rec.varint()?; // offset delta
    let key = rec.bytes()?;
    let value = rec.bytes()?;
    Some(MarkerInfo {
        control: decode_control_key(key)?,
        coordinator_epoch: decode_marker_coordinator_epoch(value)?,
    })
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
    /// Ongoing transactions: first offset → producer id (Kafka's `ongoingTxns`). Mirrors
    /// the entries' `current_txn_first_offset`.
    ongoing: BTreeMap<i64, i64>,
    /// Completed transactions by marker offset, until the high watermark passes the marker
    /// (Kafka's `unreplicatedTxns`).
    unreplicated: BTreeMap<i64, CompletedTxn>,
    /// KIP-890 verification guards by producer id (Kafka's `VerificationStateEntry`): set
    /// before the leader asks the coordinator whether this partition is in the producer's
    /// transaction, cleared by any append of the producer (its transaction started, or a
    /// marker ended it). A verified batch is appended only while its guard is still here,
    /// so a marker written during the verification refuses it. In memory only: a guard
    /// lost with a rebuilt state just refuses the batch (the client retries).
    verification_guards: HashMap<i64, u64>,
    next_verification_guard: u64,
}

impl ProducerStateManager {
    /// The producer's verification guard, created if it has none (a second verification
    /// of the same transaction shares it, as Kafka's does).
    pub fn begin_verification(&mut self, producer_id: i64) -> u64 {
        if let Some(g) = self.verification_guards.get(&producer_id) {
            return *g;
        }
        self.next_verification_guard = self.next_verification_guard.wrapping_add(1);
        let g = self.next_verification_guard;
        self.verification_guards.insert(producer_id, g);
        g
    }

    /// The producer's current verification guard, if one is set.
    pub fn verification_guard(&self, producer_id: i64) -> Option<u64> {
        self.verification_guards.get(&producer_id).copied()
    }

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

    /// The ongoing transactions as (first offset, producer id), oldest first.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.ongoing.iter().map(|(f, p)| (*f, *p)).collect()
    }

    /// The first offset not known to be decided for a high watermark `high_watermark`:
    /// the earliest first offset of an ongoing transaction or of a completed one whose
    /// marker is not below the high watermark (Kafka's `firstUnstableOffset`).
    pub fn first_unstable_offset(&self, high_watermark: i64) -> Option<i64> {
        let ongoing = self.ongoing.keys().next().copied();
        let unreplicated = self
            .unreplicated
            .range(high_watermark..)
            .map(|(_, t)| t.first_offset)
            .min();
        match (ongoing, unreplicated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets completed transactions whose markers are below `high_watermark`, i.e.
    /// replicated (Kafka's `onHighWatermarkUpdated`).
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        if self
            .unreplicated
            .keys()
            .next()
            .is_some_and(|m| *m < high_watermark)
        {
            self.unreplicated = self.unreplicated.split_off(&high_watermark);
        }
    }

    /// Takes over `old`'s completed transactions with markers below `below` that this
    /// state does not know (a rebuild after truncation replays only from its snapshot, and
    /// those markers are still in the log, perhaps not yet replicated).
    pub(crate) fn carry_unreplicated(&mut self, old: &ProducerStateManager, below: i64) {
        for (marker, txn) in old.unreplicated.range(..below) {
            self.unreplicated.entry(*marker).or_insert(*txn);
        }
    }

    /// Where an abort marker's index entry says the log is stable after the transaction
    /// completes (Kafka's `lastStableOffset(completedTxn)`): the first offset of the oldest
    /// other ongoing transaction, or the offset after the marker.
    fn stable_offset_after(&self, completed: &CompletedTxn) -> i64 {
        self.ongoing
            .iter()
            .find(|(_, pid)| **pid != completed.producer_id)
            .map_or(completed.last_offset + 1, |(first, _)| *first)
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
            // Kafka 3.x accepts any sequence here, and a marker without a transaction.
            return Ok(Check::Append);
        };
        let transactional = match b.kind {
            BatchKind::Data { transactional } => transactional,
            BatchKind::OtherControl => return Ok(Check::Append),
            BatchKind::Marker(m) => {
                // Kafka's `appendEndTxnMarker`: `checkProducerEpoch`, `checkCoordinatorEpoch`.
                if b.epoch < entry.epoch {
                    return Err(ProducerStateError::InvalidProducerEpoch {
                        producer_id: b.producer_id,
                        epoch: b.epoch,
                        current: entry.epoch,
                    });
                }
                if entry.coordinator_epoch > m.coordinator_epoch {
                    return Err(ProducerStateError::TransactionCoordinatorFenced {
                        producer_id: b.producer_id,
                        coordinator_epoch: m.coordinator_epoch,
                        current: entry.coordinator_epoch,
                    });
                }
                return Ok(Check::Append);
            }
        };
        if transactional && b.first_seq == -1 {
            // No sequence (RecordBatch.NO_SEQUENCE): the group coordinator's transactional
            // offset commit, which Kafka appends with origin COORDINATOR: neither
            // deduplicated nor sequence-checked, only the epoch is (`checkProducerEpoch`).
            if b.epoch < entry.epoch {
                return Err(ProducerStateError::InvalidProducerEpoch {
                    producer_id: b.producer_id,
                    epoch: b.epoch,
                    current: entry.epoch,
                });
            }
            return Ok(Check::Append);
        }
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
        if entry.current_txn_first_offset.is_some() && !transactional {
            // Kafka's `appendDataBatch`: a plain batch in the middle of the producer's
            // transaction.
            return Err(ProducerStateError::InvalidTxnState {
                producer_id: b.producer_id,
            });
        }
        Ok(Check::Append)
    }

    /// Records an appended (or replayed) batch into `target`, starting from `base` when the
    /// producer has no entry there yet. A marker returns the transaction it completes.
    fn update_into(
        target: &mut HashMap<i64, ProducerEntry>,
        base: Option<&ProducerEntry>,
        b: &ProducerBatch,
        first_offset: i64,
        last_offset: i64,
    ) -> Option<CompletedTxn> {
        if b.kind == BatchKind::OtherControl {
            return None;
        }
        let entry = target
            .entry(b.producer_id)
            .or_insert_with(|| base.cloned().unwrap_or_else(|| ProducerEntry::new(b.epoch)));
        entry.last_timestamp = entry.last_timestamp.max(b.max_timestamp);
        match b.kind {
            BatchKind::Data { transactional } => {
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
                if transactional && entry.current_txn_first_offset.is_none() {
                    entry.current_txn_first_offset = Some(first_offset);
                }
                None
            }
            BatchKind::Marker(m) => {
                // A marker carries no sequence; a newer epoch (the coordinator bumped it to
                // fence a producer) still starts over the sequence window. An older epoch
                // only reaches here by replication, where Kafka just warns.
                if b.epoch > entry.epoch {
                    entry.epoch = b.epoch;
                    entry.batches.clear();
                }
                entry.coordinator_epoch = entry.coordinator_epoch.max(m.coordinator_epoch);
                entry
                    .current_txn_first_offset
                    .take()
                    .map(|first| CompletedTxn {
                        producer_id: b.producer_id,
                        first_offset: first,
                        last_offset: first_offset,
                        is_aborted: m.control == ControlType::Abort,
                    })
            }
            BatchKind::OtherControl => None,
        }
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

    /// Makes a request's staged entries current (after its batches were written), keeping
    /// the ongoing-transaction map in step with the entries.
    pub(crate) fn commit(&mut self, pending: HashMap<i64, ProducerEntry>) {
        for (pid, entry) in pending {
            self.verification_guards.remove(&pid);
            let before = self
                .producers
                .get(&pid)
                .and_then(|e| e.current_txn_first_offset);
            if before != entry.current_txn_first_offset {
                if let Some(first) = before {
                    self.ongoing.remove(&first);
                }
                if let Some(first) = entry.current_txn_first_offset {
                    self.ongoing.insert(first, pid);
                }
            }
            self.producers.insert(pid, entry);
        }
    }

    /// Applies one batch found in the log (rebuild on open, follower append) or a marker
    /// already checked by the leader; never refuses. A completed transaction is returned
    /// with the last stable offset its abort index entry records, and is kept for the last
    /// stable offset until the high watermark passes its marker.
    pub(crate) fn replay(
        &mut self,
        b: &ProducerBatch,
        first_offset: i64,
        last_offset: i64,
    ) -> Option<(CompletedTxn, i64)> {
        let mut one = HashMap::with_capacity(1);
        let base = self.producers.get(&b.producer_id);
        let completed = Self::update_into(&mut one, base, b, first_offset, last_offset);
        self.commit(one);
        let completed = completed?;
        let stable = self.stable_offset_after(&completed);
        self.unreplicated.insert(completed.last_offset, completed);
        if self.unreplicated.len() > MAX_UNREPLICATED_TXNS {
            self.unreplicated.pop_first();
        }
        Some((completed, stable))
    }

    /// Forgets producers whose last batch is older than `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`), except those with an ongoing transaction, which only
    /// its marker ends. Returns how many were removed.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Forgets producers whose every retained batch lies below the log start offset, unless
    /// their transaction is still ongoing (its marker will come, and until then the last
    /// stable offset must not pass the log start), and completed transactions whose marker
    /// is gone. Producers known only from markers (no batch retained; their coordinator
    /// epoch still fences) are left to expiry.
    pub fn on_log_start_offset(&mut self, log_start_offset: i64) {
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || e.batches
                    .back()
                    .is_none_or(|b| b.last_offset >= log_start_offset)
        });
        self.unreplicated = self.unreplicated.split_off(&log_start_offset);
    }

    pub fn clear(&mut self) {
        self.producers.clear();
        self.ongoing.clear();
        self.unreplicated.clear();
        self.verification_guards.clear();
    }

    /// A manager holding `producers`, its ongoing-transaction map derived from them.
    fn from_producers(producers: HashMap<i64, ProducerEntry>) -> ProducerStateManager {
        let ongoing = producers
            .iter()
            .filter_map(|(pid, e)| e.current_txn_first_offset.map(|f| (f, *pid)))
            .collect();
        ProducerStateManager {
            producers,
            ongoing,
            unreplicated: BTreeMap::new(),
            verification_guards: HashMap::new(),
            next_verification_guard: 0,
        }
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
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
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

    /// Parses a snapshot (version 1 or 2); `None` when it is damaged in any way.
    fn decode(buf: &[u8]) -> Option<ProducerStateManager> {
        let (body, crc) = buf.split_at_checked(buf.len().checked_sub(4)?)?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC {
            return None;
        }
        let version = u16::from_be_bytes(r.array()?);
        let entry_bytes = match version {
            SNAPSHOT_VERSION_V1 => PRODUCER_ENTRY_BYTES_V1,
            SNAPSHOT_VERSION => PRODUCER_ENTRY_BYTES,
            _ => return None,
        };
        let count = u32::from_be_bytes(r.array()?) as usize;
        // Bound the allocation by what the bytes can hold.
        if count > r.0.len() / entry_bytes {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let pid = i64::from_be_bytes(r.array()?);
            let epoch = i16::from_be_bytes(r.array()?);
            let last_timestamp = i64::from_be_bytes(r.array()?);
            let (coordinator_epoch, txn_first) = if version == SNAPSHOT_VERSION_V1 {
                (-1, -1)
            } else {
                (
                    i32::from_be_bytes(r.array()?),
                    i64::from_be_bytes(r.array()?),
                )
            };
            if txn_first < -1 {
                return None;
            }
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
                    current_txn_first_offset: (txn_first >= 0).then_some(txn_first),
                    coordinator_epoch,
                },
            );
        }
        r.0.is_empty()
            .then(|| ProducerStateManager::from_producers(producers))
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

    /// A zigzag varint (Kafka's record fields), at most 10 bytes.
    fn varint(&mut self) -> Option<i64> {
        let mut raw = 0u64;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        None
    }

    /// A varint-length-prefixed byte string; a null one (-1) reads as empty.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.varint()?;
        if len < 0 {
            return Some(&[]);
        }
        self.take(usize::try_from(len).ok()?)
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
            kind: BatchKind::Data {
                transactional: false,
            },
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

    /// A version 1 snapshot (written before transactions) still loads: no transaction is
    /// open and no coordinator epoch known.
    #[test]
    fn version_1_snapshots_are_read() {
        let mut s = ProducerStateManager::new();
        append(&mut s, &batch(3, 1, 0, 2), 0).unwrap();
        append(&mut s, &batch(9, 0, 5, 1), 2).unwrap();
        let mut v1 = Vec::new();
        v1.extend_from_slice(SNAPSHOT_MAGIC);
        v1.extend_from_slice(&SNAPSHOT_VERSION_V1.to_be_bytes());
        v1.extend_from_slice(&2u32.to_be_bytes());
        for (pid, e) in s.clone_entries() {
            v1.extend_from_slice(&pid.to_be_bytes());
            v1.extend_from_slice(&e.epoch.to_be_bytes());
            v1.extend_from_slice(&e.last_timestamp.to_be_bytes());
            v1.push(e.batches.len() as u8);
            for b in &e.batches {
                v1.extend_from_slice(&b.first_seq.to_be_bytes());
                v1.extend_from_slice(&b.last_seq.to_be_bytes());
                v1.extend_from_slice(&b.first_offset.to_be_bytes());
                v1.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let back = ProducerStateManager::decode(&v1).unwrap();
        assert_eq!(back.producers, s.producers);
        assert!(back.ongoing.is_empty());
        assert_eq!(back.producer(3).unwrap().coordinator_epoch, -1);
        // And the current version keeps the transaction fields.
        let mut t = batch(4, 0, 0, 1);
        t.kind = BatchKind::Data {
            transactional: true,
        };
        s.replay(&t, 7, 7);
        let m = ProducerBatch {
            kind: BatchKind::Marker(MarkerInfo {
                control: ControlType::Commit,
                coordinator_epoch: 12,
            }),
            ..batch(9, 0, -1, 1)
        };
        s.replay(&m, 8, 8);
        let back = ProducerStateManager::decode(&s.encode()).unwrap();
        assert_eq!(back.producers, s.producers);
        assert_eq!(back.ongoing_transactions(), vec![(7, 4)]);
        assert_eq!(back.producer(9).unwrap().coordinator_epoch, 12);
    }

    #[test]
    fn marker_record_parsing() {
        let m = kavka_protocol::records::TxnMarker {
            producer_id: 5,
            producer_epoch: 2,
            coordinator_epoch: 77,
            control: ControlType::Abort,
        };
        let bytes = kavka_protocol::records::encode_txn_marker(&m, 1_700_000_000_000).unwrap();
        let h = kavka_protocol::record_batch::validate(&bytes).unwrap();
        assert_eq!(
            parse_marker(&bytes, &h),
            Some(MarkerInfo {
                control: ControlType::Abort,
                coordinator_epoch: 77
            })
        );
        // Any cut of the record is refused, never a panic.
        for cut in 0..bytes.len() {
            let _ = parse_marker(&bytes[..cut], &h);
        }
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
