//! `Log` as a follower replica: batches fetched from a leader are appended with the leader's
//! offsets, epochs and timestamps, rebuild the producer state and epoch cache, survive a
//! restart, and are refused when they would overlap the log.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType as KTimestampType,
};
use kavka_protocol::record_batch;
use proptest::prelude::*;

use crate::{Log, LogConfig, StorageError, TimestampType};

/// One batch of `n` records; `pid` < 0 for a non-idempotent producer.
fn batch(pid: i64, first_seq: i32, n: usize) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: if pid >= 0 { 0 } else { -1 },
            timestamp_type: KTimestampType::Creation,
            offset: i as i64,
            // Moving with the offset even without a producer id: the encoder starts a new batch
            // when it does not.
            sequence: first_seq + i as i32,
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
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

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 64,
        retention_ms: -1,
        file_delete_delay_ms: 0,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config, 1_000).unwrap()
}

fn all_bytes(log: &Log) -> Bytes {
    log.read(log.log_start_offset(), usize::MAX, i64::MAX, false)
        .unwrap()
}

fn epochs(log: &Log) -> Vec<(i32, i64)> {
    log.leader_epoch_cache()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

/// Byte ranges of the whole batches in `bytes`.
fn batch_ranges(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = record_batch::validate(&bytes[pos..]).unwrap().total_len();
        out.push((pos, pos + len));
        pos += len;
    }
    out
}

/// A leader log: batches from two idempotent producers and a plain one, under `epochs`.
fn leader_log(dir: &Path, config: LogConfig, batch_epochs: &[i32]) -> Log {
    let mut log = open(dir, config);
    let mut seqs = [0i32; 2];
    for (i, &epoch) in batch_epochs.iter().enumerate() {
        let n = 1 + i % 3;
        let b = match i % 3 {
            2 => batch(-1, 0, n),
            k => {
                let b = batch(10 + k as i64, seqs[k], n);
                seqs[k] += n as i32;
                b
            }
        };
        log.append_as_leader(&mut b.clone(), epoch, 2_000 + i as i64)
            .unwrap();
    }
    log
}

/// Copies `leader` into `follower` in fetch-sized pieces cut at the given batch counts.
fn replicate(leader: &Log, follower: &mut Log, cuts: &[usize]) {
    let bytes = all_bytes(leader);
    let ranges = batch_ranges(&bytes);
    let mut i = 0;
    let mut cut = cuts.iter().cycle();
    while i < ranges.len() {
        let n = (*cut.next().unwrap()).clamp(1, ranges.len() - i);
        let (from, to) = (ranges[i].0, ranges[i + n - 1].1);
        let mut piece = bytes[from..to].to_vec();
        let info = follower.append_as_follower(&mut piece, 9_999).unwrap();
        let first = record_batch::peek_header(&bytes[from..]).unwrap();
        assert_eq!(info.first_offset, first.base_offset);
        assert_eq!(info.batches, n);
        assert_eq!(info.log_append_time, -1);
        i += n;
    }
}

fn assert_same(leader: &Log, follower: &Log) {
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(all_bytes(follower), all_bytes(leader));
    assert_eq!(epochs(follower), epochs(leader));
    assert_eq!(
        follower.producer_state().clone_entries(),
        leader.producer_state().clone_entries()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the fetch sizes, the follower ends with the leader's bytes, epochs and
    /// producer state, and keeps them across a clean restart and a crash (no close).
    #[test]
    fn follower_copy_equals_leader(
        epoch_steps in proptest::collection::vec(0i32..3, 1..25),
        cuts in proptest::collection::vec(1usize..6, 1..6),
        crash in any::<bool>(),
    ) {
        let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut epoch = 0;
        let batch_epochs: Vec<i32> = epoch_steps.iter().map(|s| { epoch += s; epoch }).collect();
        let leader = leader_log(ld.path(), config(), &batch_epochs);
        let mut follower = open(fd.path(), config());
        replicate(&leader, &mut follower, &cuts);
        assert_same(&leader, &follower);
        if crash {
            drop(follower);
        } else {
            follower.close().unwrap();
        }
        let follower = open(fd.path(), config());
        assert_same(&leader, &follower);
    }
}

#[test]
fn epoch_cache_gets_an_entry_for_each_newer_epoch() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = leader_log(ld.path(), config(), &[0, 0, 3, 3, 7]);
    let mut follower = open(fd.path(), config());
    replicate(&leader, &mut follower, &[2]);
    // Batches of 1, 2, 3, 1, 2 records.
    assert_eq!(epochs(&follower), vec![(0, 0), (3, 3), (7, 7)]);
    assert_eq!(follower.latest_epoch(), Some(7));
    assert_eq!(follower.end_offset_for_epoch(3), Some((3, 7)));
    let stored: Vec<i32> = record_batch::batches(&all_bytes(&follower))
        .map(|r| r.unwrap().1.partition_leader_epoch)
        .collect();
    assert_eq!(stored, vec![0, 0, 3, 3, 7]);
}

#[test]
fn follower_keeps_the_leaders_timestamps() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let append_time = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..config()
    };
    let leader = leader_log(ld.path(), append_time.clone(), &[1, 1, 1]);
    // The follower's own config says LogAppendTime too, with a different clock: still no
    // rewrite.
    let mut follower = open(fd.path(), append_time);
    replicate(&leader, &mut follower, &[1]);
    assert_same(&leader, &follower);
    let times: Vec<i64> = record_batch::batches(&all_bytes(&follower))
        .map(|r| r.unwrap().1.max_timestamp)
        .collect();
    assert_eq!(times, vec![2_000, 2_001, 2_002]);
}

/// Batches of the leader with their offsets as fetched.
fn leader_batches(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let leader = leader_log(dir, config(), &vec![0; n]);
    let bytes = all_bytes(&leader);
    batch_ranges(&bytes)
        .into_iter()
        .map(|(a, b)| bytes[a..b].to_vec())
        .collect()
}

#[test]
fn offsets_below_the_log_end_or_out_of_order_are_refused() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = leader_batches(ld.path(), 4); // offsets 0, 1-2, 3-5, 6
    let mut follower = open(fd.path(), config());
    follower.append_as_follower(&mut b[0].clone(), 1).unwrap();
    follower.append_as_follower(&mut b[1].clone(), 1).unwrap();
    assert_eq!(follower.log_end_offset(), 3);
    let before = all_bytes(&follower);

    // Again the batch already there (base 1 < log end 3).
    let err = follower
        .append_as_follower(&mut b[1].clone(), 1)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OffsetsOutOfOrder {
                first_offset: 1,
                last_offset: 2,
                min_offset: 3
            }
        ),
        "{err:?}"
    );
    // Two batches in the wrong order within one append: nothing of it is written.
    let mut swapped = [b[3].clone(), b[2].clone()].concat();
    let err = follower.append_as_follower(&mut swapped, 1).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::OffsetsOutOfOrder {
                first_offset: 3,
                min_offset: 7,
                ..
            }
        ),
        "{err:?}"
    );
    // The same batch twice in one append.
    let mut twice = [b[2].clone(), b[2].clone()].concat();
    assert!(matches!(
        follower.append_as_follower(&mut twice, 1),
        Err(StorageError::OffsetsOutOfOrder { .. })
    ));
    assert_eq!(follower.log_end_offset(), 3);
    assert_eq!(all_bytes(&follower), before);
    follower.append_as_follower(&mut b[2].clone(), 1).unwrap();
    assert_eq!(follower.log_end_offset(), 6);
}

#[test]
fn forward_gaps_of_a_compacted_leader_are_kept() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = leader_batches(ld.path(), 4); // offsets 0, 1-2, 3-5, 6
    let mut follower = open(fd.path(), config());
    // The cleaner removed the batch at 1-2 on the leader.
    let mut gapped = [b[0].clone(), b[2].clone()].concat();
    follower.append_as_follower(&mut gapped, 1).unwrap();
    assert_eq!(follower.log_end_offset(), 6);
    // The batch holding offset 1 is now the one at 3.
    let first = follower.read(1, usize::MAX, i64::MAX, false).unwrap();
    assert_eq!(record_batch::peek_header(&first).unwrap().base_offset, 3);
    follower.close().unwrap();
    let mut follower = open(fd.path(), config());
    assert_eq!(follower.log_end_offset(), 6);
    follower.append_as_follower(&mut b[3].clone(), 1).unwrap();
    assert_eq!(follower.log_end_offset(), 7);
}

#[test]
fn corrupt_batches_are_refused() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = leader_batches(ld.path(), 2);
    let mut follower = open(fd.path(), config());
    let mut bad = b[0].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(
        follower.append_as_follower(&mut bad, 1),
        Err(StorageError::CorruptBatch(_))
    ));
    let mut torn = b[0].clone();
    torn.truncate(torn.len() - 3);
    assert!(matches!(
        follower.append_as_follower(&mut torn, 1),
        Err(StorageError::CorruptBatch(_))
    ));
    assert!(matches!(
        follower.append_as_follower(&mut [], 1),
        Err(StorageError::EmptyAppend)
    ));
    assert_eq!(follower.log_end_offset(), 0);
}

#[test]
fn truncate_fully_and_start_at_leaves_an_empty_log_at_the_offset() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = leader_log(ld.path(), config(), &[1, 1, 2, 2, 2, 2]);
    let mut follower = open(fd.path(), config());
    replicate(&leader, &mut follower, &[3]);
    assert!(follower.segment_count() > 1);
    assert!(!follower.producer_state().is_empty());

    follower.truncate_fully_and_start_at(100).unwrap();
    let check = |log: &Log| {
        assert_eq!(log.log_start_offset(), 100);
        assert_eq!(log.log_end_offset(), 100);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.size_bytes(), 0);
        assert!(log.latest_epoch().is_none());
        assert!(log.producer_state().is_empty());
        assert!(all_bytes(log).is_empty());
    };
    check(&follower);
    drop(follower); // no clean close: recovery must agree
    let mut follower = open(fd.path(), config());
    check(&follower);

    // The leader's batches from offset 100 on follow.
    let mut next = batch(-1, 0, 2);
    record_batch::set_base_offset(&mut next, 100);
    record_batch::set_partition_leader_epoch(&mut next, 4);
    let info = follower.append_as_follower(&mut next, 1).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (100, 101));
    assert_eq!(epochs(&follower), vec![(4, 100)]);
    assert_eq!(
        follower.read(100, usize::MAX, i64::MAX, false).unwrap(),
        Bytes::from(next)
    );

    // Truncating fully below the current start works as well.
    follower.truncate_fully_and_start_at(5).unwrap();
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (5, 5)
    );
}

#[test]
fn an_empty_log_restarts_at_the_batch_holding_its_start_offset() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = leader_batches(ld.path(), 4); // offsets 0, 1-2, 3-5, 6
    let mut follower = open(fd.path(), config());
    // The leader's log start offset is 4 (DeleteRecords): the follower starts there and
    // receives the batch holding offset 4, which begins at 3.
    follower.truncate_fully_and_start_at(4).unwrap();
    let mut rest = [b[2].clone(), b[3].clone()].concat();
    let info = follower.append_as_follower(&mut rest, 1).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (3, 6));
    assert_eq!(follower.log_start_offset(), 4);
    assert_eq!(follower.log_end_offset(), 7);
    assert_eq!(
        follower.read(4, usize::MAX, i64::MAX, false).unwrap(),
        Bytes::from(rest.clone())
    );
    // Once the log holds data, a batch below its end is an error again.
    assert!(matches!(
        follower.append_as_follower(&mut b[3].clone(), 1),
        Err(StorageError::OffsetsOutOfOrder { .. })
    ));
    // A restart keeps the log start inside the first batch.
    drop(follower);
    let follower = open(fd.path(), config());
    assert_eq!(follower.log_start_offset(), 4);
    assert_eq!(follower.log_end_offset(), 7);
    assert_eq!(
        follower.read(4, usize::MAX, i64::MAX, false).unwrap(),
        Bytes::from(rest)
    );
}

#[test]
fn follower_then_truncate_then_follow_a_new_leader() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = leader_log(ld.path(), config(), &[1, 1, 1, 2, 2]);
    let mut follower = open(fd.path(), config());
    replicate(&leader, &mut follower, &[5]);
    // Epoch 2 began at offset 6 (batches of 1, 2, 3, 1, 2 records); the new leader never
    // saw it: truncate there and take its epoch-3 batches.
    follower.truncate_to(6).unwrap();
    assert_eq!(follower.log_end_offset(), 6);
    assert_eq!(epochs(&follower), vec![(1, 0)]);
    let mut next = batch(-1, 0, 3);
    record_batch::set_base_offset(&mut next, 6);
    record_batch::set_partition_leader_epoch(&mut next, 3);
    follower.append_as_follower(&mut next, 1).unwrap();
    assert_eq!(epochs(&follower), vec![(1, 0), (3, 6)]);
    // The idempotent producers' state from the kept batches survived the truncation.
    assert_eq!(follower.producer_state().len(), 2);
}
