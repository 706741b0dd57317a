//! The leader-epoch cache as `Log` keeps it: stamped on append as leader, cut by truncation
//! and by a moving log start, and the same after a clean restart, a crash, and a missing,
//! damaged or stale checkpoint.

use std::fs;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use kavka_protocol::record_batch;
use kavka_protocol::records::{encode_batch, plain_record};

use crate::{EpochEntry, Log, LogConfig};

const CHECKPOINT: &str = "leader-epoch-checkpoint";

/// A batch of three records as a producer sends it (partition leader epoch -1).
fn batch() -> Vec<u8> {
    let records: Vec<_> = (0..3)
        .map(|i| {
            let key = Bytes::from(format!("k{i}"));
            plain_record(i, 1_000 + i, Some(key), Some(Bytes::from(vec![b'v'; 50])))
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap().to_vec()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 64,
        retention_ms: -1,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config(), 1_000).unwrap()
}

fn entries(log: &Log) -> Vec<(i32, i64)> {
    log.leader_epoch_cache()
        .entries()
        .iter()
        .map(|e: &EpochEntry| (e.epoch, e.start_offset))
        .collect()
}

/// Epochs 0, 0, 2, 5: one three-record batch each, offsets 0..12.
fn log_with_epochs(dir: &Path) -> Log {
    let mut log = open(dir);
    for epoch in [0, 0, 2, 5] {
        log.append_as_leader(&mut batch(), epoch, 1_000).unwrap();
    }
    log
}

#[test]
fn append_as_leader_stamps_batches_and_records_epoch_starts() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_epochs(dir.path());
    assert!(log.segment_count() > 1, "the test should span segments");
    assert_eq!(entries(&log), vec![(0, 0), (2, 6), (5, 9)]);
    assert_eq!(log.latest_epoch(), Some(5));
    let stored: Vec<(i32, i64)> =
        record_batch::batches(&log.read(0, usize::MAX, i64::MAX, false).unwrap())
            .map(|r| r.unwrap().1)
            .map(|h| (h.partition_leader_epoch, h.base_offset))
            .collect();
    assert_eq!(stored, vec![(0, 0), (0, 3), (2, 6), (5, 9)]);
    // The CRC does not cover the epoch: every stored batch still validates.
    let bytes = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    let mut pos = 0;
    while pos < bytes.len() {
        pos += record_batch::validate(&bytes[pos..]).unwrap().total_len();
    }
    assert_eq!(
        fs::read_to_string(dir.path().join(CHECKPOINT)).unwrap(),
        "0\n3\n0 0\n2 6\n5 9\n"
    );
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 6)));
    assert_eq!(log.end_offset_for_epoch(1), Some((0, 6)));
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 9)));
    assert_eq!(log.end_offset_for_epoch(4), Some((2, 9)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 12)));
    assert_eq!(log.end_offset_for_epoch(6), None);
    assert_eq!(log.end_offset_for_epoch(-1), None);
}

#[test]
fn plain_append_keeps_the_batch_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    log.append(&mut batch(), 1_000).unwrap();
    assert!(entries(&log).is_empty(), "a producer's -1 is not an epoch");
    assert_eq!(log.end_offset_for_epoch(0), None);
    let mut b = batch();
    record_batch::set_partition_leader_epoch(&mut b, 3);
    log.append(&mut b, 1_000).unwrap();
    assert_eq!(entries(&log), vec![(3, 3)]);
    drop(log);
    // Nothing in the checkpoint was lost by a crash.
    assert_eq!(entries(&open(dir.path())), vec![(3, 3)]);
}

#[test]
fn truncation_cuts_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_epochs(dir.path());
    log.truncate_to(9).unwrap();
    assert_eq!(entries(&log), vec![(0, 0), (2, 6)]);
    assert_eq!(log.end_offset_for_epoch(2), Some((2, 9)));
    assert_eq!(log.end_offset_for_epoch(5), None);
    // Inside the epoch-2 batch (6..8): the whole batch goes, and with it epoch 2.
    log.truncate_to(7).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(entries(&log), vec![(0, 0)]);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 6)));
    assert_eq!(
        log.end_offset_for_epoch(3),
        None,
        "newer than any epoch left"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join(CHECKPOINT)).unwrap(),
        "0\n1\n0 0\n"
    );
    // A new leader epoch continues from there.
    log.append_as_leader(&mut batch(), 7, 1_000).unwrap();
    assert_eq!(entries(&log), vec![(0, 0), (7, 6)]);
    log.truncate_to(0).unwrap();
    assert!(entries(&log).is_empty());
    drop(log);
    assert!(entries(&open(dir.path())).is_empty());
}

#[test]
fn a_moving_log_start_cuts_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_epochs(dir.path());
    log.delete_records_before(4).unwrap();
    assert_eq!(entries(&log), vec![(0, 4), (2, 6), (5, 9)]);
    log.delete_records_before(7).unwrap();
    assert_eq!(entries(&log), vec![(2, 7), (5, 9)]);
    assert_eq!(log.end_offset_for_epoch(0), Some((0, 7)));
    log.delete_records_before(12).unwrap();
    assert_eq!(entries(&log), vec![(5, 12)]);
    log.close().unwrap();
    assert_eq!(entries(&open(dir.path())), vec![(5, 12)]);
}

#[test]
fn survives_restart_and_is_rebuilt_when_the_checkpoint_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let want = vec![(0, 0), (2, 6), (5, 9)];
    log_with_epochs(dir.path()).close().unwrap();
    let log = open(dir.path());
    assert_eq!(entries(&log), want);
    drop(log); // crash
    assert_eq!(entries(&open(dir.path())), want);

    for damage in [
        None,
        Some(&b"0\n3\n0 0\n"[..]),
        Some(b"\xff\x00garbage"),
        Some(b"0\n2\n5 0\n2 6\n"),
    ] {
        match damage {
            None => fs::remove_file(dir.path().join(CHECKPOINT)).unwrap(),
            Some(bytes) => fs::write(dir.path().join(CHECKPOINT), bytes).unwrap(),
        }
        let log = open(dir.path());
        assert_eq!(entries(&log), want, "{damage:?}");
        drop(log);
        // Rewritten on open.
        assert_eq!(
            fs::read_to_string(dir.path().join(CHECKPOINT)).unwrap(),
            "0\n3\n0 0\n2 6\n5 9\n"
        );
    }
}

#[test]
fn unclean_open_adds_epochs_past_the_checkpoint_and_drops_epochs_past_the_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_epochs(dir.path());
    assert!(log.flush_job().is_some(), "nothing is fsynced yet");
    drop(log);
    // A crash after the epoch-5 batch was written but before its checkpoint was.
    fs::write(dir.path().join(CHECKPOINT), "0\n2\n0 0\n2 6\n").unwrap();
    let log = open(dir.path());
    assert_eq!(entries(&log), vec![(0, 0), (2, 6), (5, 9)]);
    drop(log);

    // A checkpoint naming epochs whose batches recovery cut off (a torn tail): one that
    // began past the log end goes; one that began exactly at it stays, as it was in memory.
    fs::write(
        dir.path().join(CHECKPOINT),
        "0\n5\n0 0\n2 6\n5 9\n8 12\n9 14\n",
    )
    .unwrap();
    let log = open(dir.path());
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(entries(&log), vec![(0, 0), (2, 6), (5, 9), (8, 12)]);
    assert_eq!(log.end_offset_for_epoch(9), None);
    assert_eq!(log.end_offset_for_epoch(5), Some((5, 12)));
    drop(log);

    // A leftover temp file of an interrupted checkpoint write is removed on open.
    fs::write(dir.path().join("leader-epoch-checkpoint.tmp"), "0\n").unwrap();
    let log = open(dir.path());
    assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
    assert_eq!(log.end_offset_for_epoch(8), Some((8, 12)));
}
