//! Transactions in the partition log: open transactions and the last stable offset, markers
//! and the aborted-transaction index, fencing, and all of it surviving restarts (clean and
//! not), truncation and replication to a follower. Ends with a model-based property test
//! over random interleavings.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::records::{Compression as WireCompression, Record};
use kavka_protocol::record_batch;
use kavka_protocol::records::TxnMarker;
use kavka_protocol::records::{encode_batch, encode_txn_marker, plain_record, ControlType};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::{AbortedTxn, Log, LogConfig, ProducerStateError, StorageError};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        retention_ms: -1,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config(), now()).unwrap()
}

/// A batch of `n` records of `pid` (transactional or merely idempotent) from `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, n: usize, transactional: bool) -> Vec<u8> {
    let ts = now();
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional,
            producer_id: pid,
            producer_epoch: epoch,
            sequence: seq + i as i32,
            ..plain_record(
                i as i64,
                ts,
                Some(Bytes::from(format!("k{i}"))),
                Some(Bytes::from(vec![b'v'; 30])),
            )
        })
        .collect();
    encode_batch(&records, WireCompression::None)
        .unwrap()
        .to_vec()
}

/// A batch without a producer id.
fn anonymous(n: usize) -> Vec<u8> {
    let ts = now();
    let records: Vec<Record> = (0..n)
        .map(|i| plain_record(i as i64, ts, Some(Bytes::from("k")), Some(Bytes::from("v"))))
        .collect();
    encode_batch(&records, WireCompression::None)
        .unwrap()
        .to_vec()
}

fn marker(pid: i64, epoch: i16, coordinator_epoch: i32, control: ControlType) -> TxnMarker {
    TxnMarker {
        producer_id: pid,
        producer_epoch: epoch,
        coordinator_epoch,
        control,
    }
}

/// One transactional producer (epoch 0, coordinator epoch 0) writing to one log.
struct Producer {
    pid: i64,
    epoch: i16,
    seq: i32,
}

impl Producer {
    fn new(pid: i64) -> Producer {
        Producer {
            pid,
            epoch: 0,
            seq: 0,
        }
    }

    /// Appends `n` transactional records; their first offset.
    fn send(&mut self, log: &mut Log, n: usize) -> i64 {
        let mut b = batch(self.pid, self.epoch, self.seq, n, true);
        self.seq += n as i32;
        log.append_as_leader(&mut b, 0, now()).unwrap().first_offset
    }

    /// Writes the marker ending the transaction; its offset.
    fn end(&mut self, log: &mut Log, control: ControlType) -> i64 {
        log.append_txn_marker(&marker(self.pid, self.epoch, 0, control), 0, now())
            .unwrap()
            .first_offset
    }
}

fn spans(v: &[AbortedTxn]) -> Vec<(i64, i64, i64)> {
    v.iter()
        .map(|t| (t.producer_id, t.first_offset, t.last_offset))
        .collect()
}

fn txn_index_files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".txnindex"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn all_bytes(log: &Log) -> Vec<u8> {
    log.read(log.log_start_offset(), 64 << 20, i64::MAX, true)
        .unwrap()
        .to_vec()
}

#[test]
fn last_stable_offset_follows_interleaved_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let (mut a, mut b) = (Producer::new(1), Producer::new(2));
    let mut plain = anonymous(2);
    log.append(&mut plain, now()).unwrap(); // 0..=1: no transaction
    assert_eq!(log.last_stable_offset(2), 2);
    let a0 = a.send(&mut log, 2); // 2..=3
    let b0 = b.send(&mut log, 1); // 4
    a.send(&mut log, 1); // 5: same transaction
    assert_eq!((a0, b0), (2, 4));
    let leo = log.log_end_offset();
    assert_eq!(log.last_stable_offset(leo), a0);
    assert_eq!(
        log.last_stable_offset(1),
        1,
        "never above the high watermark"
    );
    assert_eq!(
        log.producer_state().ongoing_transactions(),
        vec![(a0, 1), (b0, 2)]
    );
    let commit_a = a.end(&mut log, ControlType::Commit); // 6
                                                         // The marker is not replicated yet: A's records are still unstable.
    assert_eq!(log.last_stable_offset(commit_a), a0);
    // Once the high watermark passes it, B's open transaction bounds the offset.
    assert_eq!(log.last_stable_offset(commit_a + 1), b0);
    let abort_b = b.end(&mut log, ControlType::Abort); // 7
    assert_eq!(log.last_stable_offset(abort_b), b0);
    assert_eq!(log.last_stable_offset(abort_b + 1), abort_b + 1);
    // A new transaction of A starts a new unstable range.
    let a1 = a.send(&mut log, 1);
    assert_eq!(log.last_stable_offset(a1 + 1), a1);
    let e = log.producer_state().producer(1).unwrap().clone();
    assert_eq!(e.current_txn_first_offset, Some(a1));
    assert_eq!(e.coordinator_epoch, 0);
    assert_eq!(e.last_sequence(), 3);
    assert_eq!(
        spans(&log.aborted_transactions(0, log.log_end_offset()).unwrap()),
        vec![(2, b0, abort_b)]
    );
}

#[test]
fn aborts_are_indexed_commits_and_empty_markers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let (mut a, mut b) = (Producer::new(10), Producer::new(20));
    let a0 = a.send(&mut log, 1);
    let b0 = b.send(&mut log, 1);
    let abort_a = a.end(&mut log, ControlType::Abort);
    // A marker with no transaction open (a retry by the coordinator, or a partition that
    // got no data) is written but completes nothing.
    a.end(&mut log, ControlType::Abort);
    let commit_b = b.end(&mut log, ControlType::Commit);
    let aborted = log.aborted_transactions(0, log.log_end_offset()).unwrap();
    assert_eq!(
        aborted,
        vec![AbortedTxn {
            producer_id: 10,
            first_offset: a0,
            last_offset: abort_a,
            // B was still open when A aborted.
            last_stable_offset: b0,
        }]
    );
    assert!(commit_b > abort_a);
    assert_eq!(
        txn_index_files(dir.path()),
        vec![("00000000000000000000.txnindex".to_string(), 34)]
    );
    assert_eq!(
        log.last_stable_offset(log.log_end_offset()),
        log.log_end_offset()
    );
    // Kafka's file format: version 0, pid, first, last, last stable offset.
    let raw = fs::read(dir.path().join("00000000000000000000.txnindex")).unwrap();
    assert_eq!(&raw[..2], &[0, 0]);
    assert_eq!(i64::from_be_bytes(raw[2..10].try_into().unwrap()), 10);
    assert_eq!(i64::from_be_bytes(raw[26..34].try_into().unwrap()), b0);
}

#[test]
fn aborted_transactions_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let (mut a, mut b) = (Producer::new(1), Producer::new(2));
    // A long transaction of A spanning several segments, aborted far away; short aborted
    // transactions of B in between.
    let a0 = a.send(&mut log, 2);
    let mut b_spans = Vec::new();
    for _ in 0..12 {
        let first = b.send(&mut log, 3);
        let end = b.end(&mut log, ControlType::Abort);
        b_spans.push((2, first, end));
        a.send(&mut log, 1);
    }
    let abort_a = a.end(&mut log, ControlType::Abort);
    assert!(log.segment_count() >= 4, "{}", log.segment_count());
    let leo = log.log_end_offset();
    let all = log.aborted_transactions(0, leo).unwrap();
    let mut expected = b_spans.clone();
    expected.push((1, a0, abort_a));
    assert_eq!(spans(&all), expected);
    // A window at the start still finds A's transaction, indexed in the last segment.
    let window = log.aborted_transactions(0, a0 + 1).unwrap();
    assert_eq!(spans(&window), vec![(1, a0, abort_a)]);
    // A window in the middle: B's overlapping transactions and A's.
    let (_, f, l) = b_spans[5];
    let window = log.aborted_transactions(f + 1, l).unwrap();
    assert_eq!(spans(&window), vec![b_spans[5], (1, a0, abort_a)]);
    // Past everything.
    assert!(log.aborted_transactions(leo, leo + 10).unwrap().is_empty());
    // Each entry is in the index of its marker's segment.
    let files = txn_index_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(files.iter().map(|(_, n)| n).sum::<u64>(), 34 * 13);
    // Retention of the first segments drops their entries with them; DeleteRecords into
    // A's transaction keeps the stable offset at the log start.
    let mut c = Producer::new(3);
    let c0 = c.send(&mut log, 1);
    let cut = log.log_end_offset() - 1;
    assert_eq!(log.delete_records_before(cut).unwrap(), cut);
    log.apply_retention(now()).unwrap();
    assert!(txn_index_files(dir.path()).len() < files.len());
    assert_eq!(c0, cut);
    assert_eq!(log.last_stable_offset(log.log_end_offset()), c0);
    log.delete_records_before(log.log_end_offset()).unwrap();
    assert_eq!(
        log.last_stable_offset(log.log_end_offset()),
        log.log_end_offset(),
        "an open transaction below the log start bounds it at the log start"
    );
}

#[test]
fn crash_recovery_rebuilds_open_transactions_and_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let (mut a, mut b, mut c) = (Producer::new(1), Producer::new(2), Producer::new(3));
    for round in 0..6 {
        a.send(&mut log, 2);
        b.send(&mut log, 1);
        a.end(
            &mut log,
            if round % 2 == 0 {
                ControlType::Abort
            } else {
                ControlType::Commit
            },
        );
        b.end(&mut log, ControlType::Abort);
    }
    let c0 = c.send(&mut log, 2); // left open by the crash
    a.send(&mut log, 1); // so is this one
    let leo = log.log_end_offset();
    let aborted = log.aborted_transactions(0, leo).unwrap();
    let entries = log.producer_state().clone_entries();
    let ongoing = log.producer_state().ongoing_transactions();
    assert_eq!(ongoing.len(), 2);
    assert_eq!(log.last_stable_offset(leo), c0);
    // Flush part of the log, then crash: no snapshot at the end, no clean marker. The
    // index files past the recovery point are lost as well.
    let job = log.flush_job().unwrap();
    job.run().unwrap();
    log.complete_flush(job.up_to_offset / 2);
    log.checkpoint().unwrap();
    let rp = log.recovery_point();
    drop(log);
    for (name, _) in txn_index_files(dir.path()) {
        let base: i64 = name[..20].parse().unwrap();
        if base >= rp {
            fs::remove_file(dir.path().join(&name)).unwrap();
        }
    }
    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(log.aborted_transactions(0, leo).unwrap(), aborted);
    assert_eq!(log.producer_state().clone_entries(), entries);
    assert_eq!(log.producer_state().ongoing_transactions(), ongoing);
    assert_eq!(log.last_stable_offset(leo), c0);
    // The same when every snapshot is gone (a full replay).
    drop(log);
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snapshot") {
            fs::remove_file(p).unwrap();
        }
    }
    let mut log = open(dir.path());
    assert_eq!(log.aborted_transactions(0, leo).unwrap(), aborted);
    assert_eq!(log.producer_state().clone_entries(), entries);
    assert_eq!(log.last_stable_offset(leo), c0);
    c.end(&mut log, ControlType::Commit);
    assert_eq!(
        log.producer_state().ongoing_transactions(),
        vec![ongoing[1]]
    );
}

#[test]
fn clean_reopen_loads_a_version_2_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let (mut a, mut b) = (Producer::new(5), Producer::new(6));
    a.send(&mut log, 1);
    a.end(&mut log, ControlType::Abort);
    let a1 = a.send(&mut log, 1);
    b.send(&mut log, 1);
    log.append_txn_marker(&marker(6, 0, 7, ControlType::Commit), 0, now())
        .unwrap();
    let leo = log.log_end_offset();
    let entries = log.producer_state().clone_entries();
    let aborted = log.aborted_transactions(0, leo).unwrap();
    log.close().unwrap();
    let snap = dir.path().join(format!("{leo:020}.snapshot"));
    let raw = fs::read(&snap).unwrap();
    assert_eq!(&raw[..6], b"KVPS\0\x02");
    let mut log = open(dir.path());
    assert_eq!(log.producer_state().clone_entries(), entries);
    let e = log.producer_state().producer(6).unwrap();
    assert_eq!((e.coordinator_epoch, e.current_txn_first_offset), (7, None));
    assert_eq!(log.last_stable_offset(leo), a1);
    assert_eq!(log.aborted_transactions(0, leo).unwrap(), aborted);
    // The coordinator epoch survived: an older coordinator is still fenced.
    let err = log
        .append_txn_marker(&marker(6, 0, 6, ControlType::Abort), 0, now())
        .unwrap_err();
    assert!(matches!(
        err,
        StorageError::Producer(ProducerStateError::TransactionCoordinatorFenced {
            producer_id: 6,
            coordinator_epoch: 6,
            current: 7
        })
    ));
}

#[test]
fn truncation_below_a_marker_reopens_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let mut a = Producer::new(1);
    let a0 = a.send(&mut log, 3);
    // Enough data to roll a segment or two before the marker.
    for _ in 0..15 {
        a.send(&mut log, 1);
    }
    let abort = a.end(&mut log, ControlType::Abort);
    let mut more = anonymous(1);
    log.append(&mut more, now()).unwrap();
    assert_eq!(
        spans(&log.aborted_transactions(0, abort + 1).unwrap()),
        vec![(1, a0, abort)]
    );
    assert_eq!(log.last_stable_offset(abort + 2), abort + 2);
    log.truncate_to(abort).unwrap();
    assert_eq!(log.log_end_offset(), abort);
    assert!(log.aborted_transactions(0, abort).unwrap().is_empty());
    assert_eq!(log.producer_state().ongoing_transactions(), vec![(a0, 1)]);
    assert_eq!(log.last_stable_offset(abort), a0);
    assert!(txn_index_files(dir.path()).is_empty());
    // The coordinator decides again, this time to commit.
    let commit = a.end(&mut log, ControlType::Commit);
    assert_eq!(commit, abort);
    assert_eq!(log.last_stable_offset(commit + 1), commit + 1);
    assert!(log.aborted_transactions(0, commit + 1).unwrap().is_empty());
    // And after a restart.
    log.close().unwrap();
    let log = open(dir.path());
    assert!(log.producer_state().ongoing_transactions().is_empty());
    assert!(log.aborted_transactions(0, commit + 1).unwrap().is_empty());
}

#[test]
fn truncation_keeps_markers_not_yet_below_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let mut a = Producer::new(1);
    let a0 = a.send(&mut log, 2);
    let commit = a.end(&mut log, ControlType::Commit);
    let hw = a0 + 1;
    assert_eq!(log.last_stable_offset(hw), a0);
    // Roll (a snapshot past the marker), then truncate past the snapshot: the rebuilt state
    // replays only from the snapshot, yet the marker is still unreplicated.
    let mut cut = 0;
    while log.segment_count() < 3 {
        let mut b = anonymous(3);
        cut = log.append(&mut b, now()).unwrap().first_offset;
    }
    assert!(cut > commit);
    log.truncate_to(cut).unwrap();
    assert_eq!(log.last_stable_offset(hw), a0);
    assert_eq!(log.last_stable_offset(commit + 1), commit + 1);
}

#[test]
fn a_damaged_txn_index_gives_its_valid_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let mut a = Producer::new(1);
    let mut ends = Vec::new();
    for _ in 0..3 {
        let first = a.send(&mut log, 1);
        ends.push((1, first, a.end(&mut log, ControlType::Abort)));
    }
    let leo = log.log_end_offset();
    log.close().unwrap();
    let path = dir.path().join("00000000000000000000.txnindex");
    let mut raw = fs::read(&path).unwrap();
    assert_eq!(raw.len(), 34 * 3);
    // A torn third entry and garbage after it.
    raw.truncate(34 * 2 + 20);
    raw.extend_from_slice(&[0xff; 50]);
    fs::write(&path, &raw).unwrap();
    let mut log = open(dir.path());
    assert_eq!(
        spans(&log.aborted_transactions(0, leo).unwrap()),
        ends[..2].to_vec()
    );
    // New entries go after the valid ones.
    let first = a.send(&mut log, 1);
    let end = a.end(&mut log, ControlType::Abort);
    let mut expected = ends[..2].to_vec();
    expected.push((1, first, end));
    assert_eq!(
        spans(&log.aborted_transactions(0, end + 1).unwrap()),
        expected
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), 34 * 3);
}

#[test]
fn fenced_coordinators_and_zombie_markers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let mut b = batch(1, 3, 0, 1, true);
    log.append(&mut b, now()).unwrap();
    log.append_txn_marker(&marker(1, 3, 5, ControlType::Commit), 0, now())
        .unwrap();
    let leo = log.log_end_offset();
    let older_coordinator = log
        .append_txn_marker(&marker(1, 3, 4, ControlType::Abort), 0, now())
        .unwrap_err();
    assert!(matches!(
        older_coordinator,
        StorageError::Producer(ProducerStateError::TransactionCoordinatorFenced { .. })
    ));
    let zombie = log
        .append_txn_marker(&marker(1, 2, 9, ControlType::Abort), 0, now())
        .unwrap_err();
    assert!(matches!(
        zombie,
        StorageError::Producer(ProducerStateError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 2,
            current: 3
        })
    ));
    assert_eq!(log.log_end_offset(), leo, "nothing written");
    // A newer producer epoch in a marker (the coordinator fenced the producer) bumps the
    // epoch: the old one is a zombie from then on, and the new one starts at sequence 0.
    log.append_txn_marker(&marker(1, 4, 5, ControlType::Abort), 0, now())
        .unwrap();
    let mut old = batch(1, 3, 1, 1, true);
    assert!(matches!(
        log.append(&mut old, now()).unwrap_err(),
        StorageError::Producer(ProducerStateError::InvalidProducerEpoch { .. })
    ));
    let mut fresh = batch(1, 4, 0, 1, true);
    log.append(&mut fresh, now()).unwrap();
    // Clients cannot write control batches themselves.
    let mut forged = encode_txn_marker(&marker(1, 4, 5, ControlType::Commit), now())
        .unwrap()
        .to_vec();
    assert!(matches!(
        log.append(&mut forged, now()).unwrap_err(),
        StorageError::InvalidRecord(_)
    ));
    // Nor can a marker go without a producer id.
    assert!(log
        .append_txn_marker(&marker(-1, 0, 0, ControlType::Commit), 0, now())
        .is_err());
}

#[test]
fn a_plain_batch_inside_a_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let mut t = batch(1, 0, 0, 2, true);
    log.append(&mut t, now()).unwrap();
    let mut plain = batch(1, 0, 2, 1, false);
    assert!(matches!(
        log.append(&mut plain, now()).unwrap_err(),
        StorageError::Producer(ProducerStateError::InvalidTxnState { producer_id: 1 })
    ));
    // Other producers are not affected, and after the marker the producer may write
    // outside a transaction again.
    let mut other = batch(2, 0, 0, 1, false);
    log.append(&mut other, now()).unwrap();
    log.append_txn_marker(&marker(1, 0, 0, ControlType::Commit), 0, now())
        .unwrap();
    let mut plain = batch(1, 0, 2, 1, false);
    log.append(&mut plain, now()).unwrap();
    assert!(log.producer_state().ongoing_transactions().is_empty());
}

#[test]
fn open_transactions_outlive_producer_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        producer_id_expiration_ms: 1,
        ..config()
    };
    let mut log = Log::open(dir.path(), cfg, now()).unwrap();
    let mut t = batch(1, 0, 0, 1, true);
    log.append(&mut t, now()).unwrap();
    let mut idem = batch(2, 0, 0, 1, false);
    log.append(&mut idem, now()).unwrap();
    log.apply_retention(now() + 60_000).unwrap();
    assert!(log.producer_state().producer(2).is_none(), "expired");
    let e = log
        .producer_state()
        .producer(1)
        .expect("kept: its transaction is open");
    assert_eq!(e.current_txn_first_offset, Some(0));
    assert_eq!(log.last_stable_offset(2), 0);
}

#[test]
fn a_follower_replays_markers_like_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let fdir = tempfile::tempdir().unwrap();
    let mut leader = open(dir.path());
    let (mut a, mut b) = (Producer::new(1), Producer::new(2));
    for round in 0..8 {
        a.send(&mut leader, 2);
        b.send(&mut leader, 1);
        a.end(
            &mut leader,
            if round % 3 == 0 {
                ControlType::Commit
            } else {
                ControlType::Abort
            },
        );
    }
    b.send(&mut leader, 1);
    let leo = leader.log_end_offset();
    let bytes = all_bytes(&leader);
    let mut follower = open(fdir.path());
    // Fetched in pieces of a few batches.
    let mut pos = 0;
    while pos < bytes.len() {
        let mut end = pos;
        for _ in 0..3 {
            if end < bytes.len() {
                end += record_batch::peek_header(&bytes[end..])
                    .unwrap()
                    .total_len();
            }
        }
        let mut piece = bytes[pos..end].to_vec();
        follower.append_as_follower(&mut piece, now()).unwrap();
        pos = end;
    }
    assert_eq!(follower.log_end_offset(), leo);
    assert_eq!(
        follower.producer_state().clone_entries(),
        leader.producer_state().clone_entries()
    );
    assert_eq!(
        follower.producer_state().ongoing_transactions(),
        leader.producer_state().ongoing_transactions()
    );
    assert_eq!(
        follower.aborted_transactions(0, leo).unwrap(),
        leader.aborted_transactions(0, leo).unwrap()
    );
    for hw in [0, leo / 2, leo] {
        assert_eq!(
            follower.last_stable_offset(hw),
            leader.last_stable_offset(hw)
        );
    }
    // Promoted, it ends B's transaction as the leader would have.
    b.end(&mut follower, ControlType::Abort);
    let n = follower.aborted_transactions(0, leo + 1).unwrap().len();
    assert_eq!(n, leader.aborted_transactions(0, leo).unwrap().len() + 1);
}

// ---------------------------------------------------------------------------------------
// Model-based property test.

#[derive(Clone, Copy, Debug)]
enum Event {
    Data { pid: i64, first: i64, last: i64 },
    Marker { pid: i64, offset: i64, abort: bool },
    Plain { first: i64 },
}

impl Event {
    fn first(&self) -> i64 {
        match *self {
            Event::Data { first, .. } | Event::Plain { first } => first,
            Event::Marker { offset, .. } => offset,
        }
    }
}

/// What the log should say, computed from the events alone.
struct Model {
    /// pid → first offset of its open transaction.
    open: Vec<(i64, i64)>,
    /// (pid, first, marker, aborted, stable offset recorded for an abort).
    done: Vec<(i64, i64, i64, bool, i64)>,
}

fn model(events: &[Event]) -> Model {
    let mut m = Model {
        open: Vec::new(),
        done: Vec::new(),
    };
    for e in events {
        match *e {
            Event::Data { pid, first, .. } => {
                if !m.open.iter().any(|(p, _)| *p == pid) {
                    m.open.push((pid, first));
                }
            }
            Event::Marker { pid, offset, abort } => {
                if let Some(i) = m.open.iter().position(|(p, _)| *p == pid) {
                    let (_, first) = m.open.remove(i);
                    let stable = m.open.iter().map(|(_, f)| *f).min().unwrap_or(offset + 1);
                    m.done.push((pid, first, offset, abort, stable));
                }
            }
            Event::Plain { .. } => {}
        }
    }
    m
}

impl Model {
    fn lso(&self, hw: i64) -> i64 {
        self.open
            .iter()
            .map(|(_, f)| *f)
            .chain(self.done.iter().filter(|d| d.2 >= hw).map(|d| d.1))
            .fold(hw, i64::min)
    }

    fn aborted(&self, start: i64, upper: i64) -> Vec<AbortedTxn> {
        self.done
            .iter()
            .filter(|d| d.3 && d.2 >= start && d.1 < upper)
            .map(|d| AbortedTxn {
                producer_id: d.0,
                first_offset: d.1,
                last_offset: d.2,
                last_stable_offset: d.4,
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Send {
        pid: usize,
        n: usize,
    },
    End {
        pid: usize,
        abort: bool,
    },
    Plain,
    /// Raise the high watermark by this fraction (per mille) of what is left to the log end.
    RaiseHw(u16),
    /// Truncate at the base offset of a batch at or above the high watermark (index: which).
    Truncate(usize),
    CleanReopen,
    CrashReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 1..4usize).prop_map(|(pid, n)| Op::Send { pid, n }),
        3 => (0..3usize, any::<bool>()).prop_map(|(pid, abort)| Op::End { pid, abort }),
        1 => Just(Op::Plain),
        3 => (0..=1000u16).prop_map(Op::RaiseHw),
        1 => any::<usize>().prop_map(Op::Truncate),
        1 => Just(Op::CleanReopen),
        1 => Just(Op::CrashReopen),
    ]
}

fn check_against_model(log: &Log, events: &[Event], hw: i64, probes: &[(i64, i64)]) {
    let m = model(events);
    let leo = log.log_end_offset();
    assert_eq!(log.last_stable_offset(hw), m.lso(hw), "lso at hw {hw}");
    let mut open: Vec<(i64, i64)> = m.open.iter().map(|(p, f)| (*f, *p)).collect();
    open.sort_unstable();
    assert_eq!(log.producer_state().ongoing_transactions(), open);
    for (a, b) in probes {
        let (start, upper) = (a % (leo + 1), b % (leo + 2));
        assert_eq!(
            log.aborted_transactions(start, upper).unwrap(),
            m.aborted(start, upper),
            "aborted in {start}..{upper}"
        );
    }
}

fn run_ops(ops: &[Op], probes: &[(i64, i64)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let pids = [100i64, 200, 300];
    let mut events: Vec<Event> = Vec::new();
    let mut hw = 0i64;
    for op in ops {
        match op {
            Op::Send { pid, n } => {
                let id = pids[*pid];
                // The next sequence follows the producer's last batch still in the log.
                let seq = events
                    .iter()
                    .rev()
                    .find_map(|e| match *e {
                        Event::Data { pid, first, last } if pid == id => {
                            Some((last - first + 1) as i32 + seq_of(&events, id, first))
                        }
                        _ => None,
                    })
                    .unwrap_or(0);
                let mut b = batch(id, 0, seq, *n, true);
                let info = log.append_as_leader(&mut b, 0, now()).unwrap();
                assert!(!info.duplicate);
                events.push(Event::Data {
                    pid: id,
                    first: info.first_offset,
                    last: info.last_offset,
                });
            }
            Op::End { pid, abort } => {
                let id = pids[*pid];
                let control = if *abort {
                    ControlType::Abort
                } else {
                    ControlType::Commit
                };
                let info = log
                    .append_txn_marker(&marker(id, 0, 0, control), 0, now())
                    .unwrap();
                events.push(Event::Marker {
                    pid: id,
                    offset: info.first_offset,
                    abort: *abort,
                });
            }
            Op::Plain => {
                let mut b = anonymous(2);
                let info = log.append(&mut b, now()).unwrap();
                events.push(Event::Plain {
                    first: info.first_offset,
                });
            }
            Op::RaiseHw(permille) => {
                let leo = log.log_end_offset();
                hw += (leo - hw) * i64::from(*permille) / 1000;
            }
            Op::Truncate(which) => {
                let cuts: Vec<i64> = events
                    .iter()
                    .map(Event::first)
                    .filter(|o| *o >= hw)
                    .collect();
                if cuts.is_empty() {
                    continue;
                }
                let cut = cuts[which % cuts.len()];
                log.truncate_to(cut).unwrap();
                events.retain(|e| e.first() < cut);
                assert_eq!(log.log_end_offset(), cut);
            }
            Op::CleanReopen | Op::CrashReopen => {
                // Completed transactions not yet below the high watermark are not
                // persisted (as in Kafka): a restart is modelled with the high watermark
                // caught up.
                hw = log.log_end_offset();
                log.last_stable_offset(hw);
                if matches!(op, Op::CleanReopen) {
                    log.close().unwrap();
                } else {
                    if let Some(job) = log.flush_job() {
                        job.run().unwrap();
                        log.complete_flush(job.up_to_offset / 2);
                        log.checkpoint().unwrap();
                    }
                    drop(log);
                }
                log = open(dir.path());
            }
        }
        check_against_model(&log, &events, hw, probes);
    }
    // A follower fed the whole log agrees with the leader.
    let fdir = tempfile::tempdir().unwrap();
    let mut follower = open(fdir.path());
    let bytes = all_bytes(&log);
    if !bytes.is_empty() && log.log_start_offset() == 0 {
        let mut b = bytes.clone();
        follower.append_as_follower(&mut b, now()).unwrap();
        let leo = log.log_end_offset();
        assert_eq!(
            follower.producer_state().clone_entries(),
            log.producer_state().clone_entries()
        );
        assert_eq!(
            follower.aborted_transactions(0, leo).unwrap(),
            log.aborted_transactions(0, leo).unwrap()
        );
        assert_eq!(
            follower.last_stable_offset(leo),
            log.last_stable_offset(leo)
        );
    }
}

/// The sequence number of the batch of `pid` starting at `first`.
fn seq_of(events: &[Event], pid: i64, first: i64) -> i32 {
    let mut seq = 0i32;
    for e in events {
        if let Event::Data {
            pid: p,
            first: f,
            last,
        } = *e
        {
            if p == pid {
                if f == first {
                    return seq;
                }
                seq += (last - f + 1) as i32;
            }
        }
    }
    seq
}

#[test]
fn random_interleavings_match_the_model() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 48,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7u8; 32]),
    );
    let strategy = (
        proptest::collection::vec(op(), 1..60),
        proptest::collection::vec((0..10_000i64, 0..10_000i64), 3),
    );
    runner
        .run(&strategy, |(ops, probes)| {
            run_ops(&ops, &probes);
            Ok(())
        })
        .unwrap();
}

/// KIP-890's verification guard: set before the coordinator is asked, shared by a second
/// verification, and cleared by any append of the producer (a marker, or the batch that
/// starts its transaction), so a verified batch cannot follow a marker written meanwhile.
#[test]
fn verification_guards_are_cleared_by_the_producers_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let pid = 7;
    let g = log.begin_txn_verification(pid);
    assert_eq!(log.begin_txn_verification(pid), g);
    assert_eq!(log.producer_state().verification_guard(pid), Some(g));
    assert_eq!(log.begin_txn_verification(8), g + 1);
    let marker = TxnMarker {
        producer_id: pid,
        producer_epoch: 0,
        coordinator_epoch: 0,
        control: ControlType::Abort,
    };
    log.append_txn_marker(&marker, 0, now()).unwrap();
    assert_eq!(log.producer_state().verification_guard(pid), None);
    // The batch that starts the transaction clears it too.
    let g3 = log.begin_txn_verification(8);
    assert_eq!(g3, g + 1);
    log.append(&mut batch(8, 0, 0, 1, true), now()).unwrap();
    assert_eq!(log.producer_state().verification_guard(8), None);
    let g2 = log.begin_txn_verification(pid);
    assert_ne!(g2, g);
    log.close().unwrap();
}
