//! Idempotent producer behaviour of `Log`: duplicates, gaps, fencing, and the state
//! surviving a clean restart, a crash (rebuilt from the log) and truncation.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KTimestampType,
};
use proptest::prelude::*;

use crate::{Log, LogConfig, ProducerStateError, StorageError};

fn idem_batch(pid: i64, epoch: i16, first_seq: i32, n: usize) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: KTimestampType::Creation,
            offset: i as i64,
            sequence: first_seq.wrapping_add(i as i32),
            timestamp: 1_000 + i as i64,
            key: None,
            value: Some(Bytes::from(vec![b'v'; 40])),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        retention_ms: -1,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, small_config(), 1_000).unwrap()
}

fn try_append(log: &mut Log, b: &[u8]) -> Result<crate::AppendInfo, StorageError> {
    let mut b = b.to_vec();
    log.append(&mut b, 2_000)
}

#[test]
fn retried_batch_is_acknowledged_with_its_original_offset_and_not_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    let first = try_append(&mut log, &idem_batch(7, 0, 0, 3)).unwrap();
    try_append(&mut log, &idem_batch(7, 0, 3, 2)).unwrap();
    let leo = log.log_end_offset();
    let size = log.size_bytes();
    let retry = try_append(&mut log, &idem_batch(7, 0, 0, 3)).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        (retry.first_offset, retry.last_offset),
        (first.first_offset, 2)
    );
    assert_eq!((log.log_end_offset(), log.size_bytes()), (leo, size));
}

#[test]
fn gaps_and_zombies_are_refused_without_appending() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    try_append(&mut log, &idem_batch(7, 3, 0, 2)).unwrap();
    let leo = log.log_end_offset();
    assert!(matches!(
        try_append(&mut log, &idem_batch(7, 3, 5, 1)),
        Err(StorageError::Producer(
            ProducerStateError::OutOfOrderSequence {
                expected: 2,
                got: 5,
                ..
            }
        ))
    ));
    assert!(matches!(
        try_append(&mut log, &idem_batch(7, 2, 2, 1)),
        Err(StorageError::Producer(
            ProducerStateError::InvalidProducerEpoch { current: 3, .. }
        ))
    ));
    assert!(matches!(
        try_append(&mut log, &idem_batch(7, 4, 1, 1)),
        Err(StorageError::Producer(
            ProducerStateError::OutOfOrderSequence { expected: 0, .. }
        ))
    ));
    assert_eq!(log.log_end_offset(), leo);
    // A bumped epoch starting at 0 is fine; the old epoch is then fenced.
    try_append(&mut log, &idem_batch(7, 4, 0, 1)).unwrap();
    assert!(try_append(&mut log, &idem_batch(7, 3, 2, 1)).is_err());
}

/// Appends `n` batches of two records each for producers 1..=3, rolling several segments.
fn fill(log: &mut Log, n: i32) {
    for i in 0..n {
        let pid = i64::from(i % 3) + 1;
        let seq = (i / 3) * 2;
        try_append(log, &idem_batch(pid, 0, seq, 2)).unwrap();
    }
}

#[test]
fn state_survives_clean_restart_and_crash_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    fill(&mut log, 30);
    assert!(log.segment_count() > 2);
    let before = log.producer_state().clone_entries();
    drop(log); // a crash: no close, no final snapshot
    let log = open(dir.path());
    assert_eq!(log.producer_state().clone_entries(), before);
    log.close().unwrap();
    assert!(
        crate::producer_state::list_snapshots(dir.path())
            .unwrap()
            .len()
            <= 3
    );
    let mut log = open(dir.path());
    assert_eq!(log.producer_state().clone_entries(), before);
    // Every snapshot removed: rebuilt from the log alone, the same again.
    drop(log);
    for s in crate::producer_state::list_snapshots(dir.path()).unwrap() {
        crate::producer_state::delete_snapshot(dir.path(), s).unwrap();
    }
    log = open(dir.path());
    assert_eq!(log.producer_state().clone_entries(), before);
    // And a retry of producer 3's last batch is still recognised.
    let e = log
        .producer_state()
        .producer(3)
        .unwrap()
        .batches
        .back()
        .copied()
        .unwrap();
    let dup = try_append(&mut log, &idem_batch(3, 0, e.first_seq, 2)).unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.first_offset, e.first_offset);
}

#[test]
fn truncation_drops_later_snapshots_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path());
    fill(&mut log, 6);
    let at6 = log.producer_state().clone_entries();
    let cut = log.log_end_offset();
    fill_more(&mut log);
    log.truncate_to(cut).unwrap();
    assert_eq!(log.producer_state().clone_entries(), at6);
    for s in crate::producer_state::list_snapshots(dir.path()).unwrap() {
        assert!(s <= cut);
    }
}

fn fill_more(log: &mut Log) {
    for i in 6..30 {
        let pid = i64::from(i % 3) + 1;
        try_append(log, &idem_batch(pid, 0, (i / 3) * 2, 2)).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Any mix of fresh batches and retries: the log holds each sequence once, in order,
    /// and a reopen rebuilds the same state.
    #[test]
    fn retries_never_duplicate(ops in proptest::collection::vec((1i64..3, any::<bool>(), 1usize..4), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let mut next_seq = std::collections::HashMap::new();
        let mut sent: std::collections::HashMap<i64, Vec<(i32, usize, i64)>> = Default::default();
        let mut expected_records = 0i64;
        for (pid, retry, n) in ops {
            let hist = sent.entry(pid).or_default();
            if retry && !hist.is_empty() {
                let (seq, n, off) = hist[hist.len() - 1];
                let info = try_append(&mut log, &idem_batch(pid, 0, seq, n)).unwrap();
                prop_assert!(info.duplicate);
                prop_assert_eq!(info.first_offset, off);
            } else {
                let seq = *next_seq.get(&pid).unwrap_or(&0);
                let info = try_append(&mut log, &idem_batch(pid, 0, seq, n)).unwrap();
                prop_assert!(!info.duplicate);
                hist.push((seq, n, info.first_offset));
                next_seq.insert(pid, seq + n as i32);
                expected_records += n as i64;
            }
        }
        prop_assert_eq!(log.log_end_offset(), expected_records);
        let before = log.producer_state().clone_entries();
        drop(log);
        let log = open(dir.path());
        prop_assert_eq!(log.producer_state().clone_entries(), before);
    }
}
