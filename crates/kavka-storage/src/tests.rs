//! Behaviour tests of `Log` through its public API, with batches from kafka-protocol's
//! encoder, plus a model-based crash test.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as KTimestampType,
};
use kavka_protocol::record_batch;

use crate::{Log, LogConfig, StorageError, TimestampType};

/// One encoded batch of `n` records with timestamps `ts, ts+1, ...` and `value_len`-byte values.
fn batch_with(n: usize, ts: i64, value_len: usize, compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: KTimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: ts + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'v'; value_len])),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.to_vec()
}

fn batch(n: usize, ts: i64, value_len: usize) -> Vec<u8> {
    batch_with(n, ts, value_len, Compression::None)
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

fn open(dir: &Path, config: LogConfig) -> Log {
    Log::open(dir, config, 1_000).unwrap()
}

/// Base offsets and bytes of every batch in `buf`.
fn batch_offsets(buf: &[u8]) -> Vec<(i64, i64)> {
    record_batch::batches(buf)
        .map(|r| r.unwrap().1)
        .map(|h| (h.base_offset, h.last_offset()))
        .collect()
}

fn append(log: &mut Log, b: &[u8], now: i64) -> crate::AppendInfo {
    let mut b = b.to_vec();
    log.append(&mut b, now).unwrap()
}

#[test]
fn appends_assign_offsets_and_read_back_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let mut two = batch(3, 100, 10);
    two.extend(batch(2, 200, 10));
    let info = append(&mut log, &two, 5);
    assert_eq!(
        (
            info.first_offset,
            info.last_offset,
            info.batches,
            info.records
        ),
        (0, 4, 2, 5)
    );
    assert_eq!(info.log_append_time, -1);
    assert_eq!(info.bytes, two.len());
    let info = append(&mut log, &batch(1, 300, 10), 6);
    assert_eq!((info.first_offset, info.last_offset), (5, 5));
    assert_eq!(log.log_end_offset(), 6);
    let all = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    assert_eq!(batch_offsets(&all), vec![(0, 2), (3, 4), (5, 5)]);
    assert_eq!(all.len() as u64, log.size_bytes());
    // Offset in the middle of a batch returns the whole batch holding it.
    let from_4 = log.read(4, usize::MAX, i64::MAX, false).unwrap();
    assert_eq!(batch_offsets(&from_4), vec![(3, 4), (5, 5)]);
    assert!(log.read(6, 1000, i64::MAX, true).unwrap().is_empty());
    assert!(matches!(
        log.read(7, 1000, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { offset: 7, .. })
    ));
    assert!(matches!(
        log.read(-1, 1000, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn rejects_too_large_and_corrupt_batches_without_appending() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_message_bytes: 200,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    let mut ok_then_big = batch(1, 1, 10);
    ok_then_big.extend(batch(1, 1, 500));
    assert!(matches!(
        log.append(&mut ok_then_big, 1),
        Err(StorageError::RecordTooLarge { max: 200, .. })
    ));
    let mut corrupt = batch(2, 1, 10);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert!(matches!(
        log.append(&mut corrupt, 1),
        Err(StorageError::CorruptBatch(_))
    ));
    let mut torn = batch(2, 1, 10);
    torn.pop();
    assert!(matches!(
        log.append(&mut torn, 1),
        Err(StorageError::CorruptBatch(_))
    ));
    assert!(matches!(
        log.append(&mut [], 1),
        Err(StorageError::EmptyAppend)
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    append(&mut log, &batch(2, 1, 10), 1);
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn rolls_segments_on_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let b = batch(2, 10, 100); // ~ 200 bytes
    for i in 0..20 {
        append(&mut log, &b, i);
    }
    assert!(
        log.segment_count() >= 4,
        "segments: {}",
        log.segment_count()
    );
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    assert_eq!(names[0], "00000000000000000000.log");
    assert_eq!(names.len(), log.segment_count());
    for name in &names {
        assert!(fs::metadata(dir.path().join(name)).unwrap().len() <= 1024);
        let stem = name.trim_end_matches(".log");
        assert!(dir.path().join(format!("{stem}.index")).exists());
        assert!(dir.path().join(format!("{stem}.timeindex")).exists());
    }
    let all = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    let offsets = batch_offsets(&all);
    assert_eq!(offsets.len(), 20);
    assert!(offsets
        .iter()
        .enumerate()
        .all(|(i, (b, l))| *b == 2 * i as i64 && *l == *b + 1));
}

#[test]
fn rolls_segments_on_age_and_when_the_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    append(&mut log, &batch(1, 0, 1), 10_000);
    append(&mut log, &batch(1, 0, 1), 10_500);
    assert_eq!(log.segment_count(), 1);
    append(&mut log, &batch(1, 0, 1), 11_001);
    assert_eq!(log.segment_count(), 2);
    log.roll_if_due(11_500).unwrap();
    assert_eq!(log.segment_count(), 2);
    log.roll_if_due(12_002).unwrap();
    assert_eq!(log.segment_count(), 3);
    // An empty active segment never rolls.
    log.roll_if_due(100_000).unwrap();
    assert_eq!(log.segment_count(), 3);

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        segment_index_bytes: 24,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    for _ in 0..6 {
        append(&mut log, &batch(1, 0, 1), 0);
    }
    // Three entries fill a 24-byte offset index; the first batch of a segment is not indexed.
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn reads_respect_max_offset_max_bytes_and_min_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let b = batch(2, 10, 50);
    let blen = b.len();
    for _ in 0..30 {
        append(&mut log, &b, 0);
    }
    assert_eq!(log.log_end_offset(), 60);
    // High watermark: batches at or past 10 excluded (10 is the base of batch 5).
    assert_eq!(
        batch_offsets(&log.read(0, usize::MAX, 10, false).unwrap()).last(),
        Some(&(8, 9))
    );
    // A max offset inside a batch excludes that batch.
    assert_eq!(
        batch_offsets(&log.read(0, usize::MAX, 11, false).unwrap()).last(),
        Some(&(8, 9))
    );
    assert!(log.read(10, usize::MAX, 10, true).unwrap().is_empty());
    // Byte limit: whole batches only.
    let r = log.read(0, blen * 3 + blen / 2, i64::MAX, false).unwrap();
    assert_eq!(r.len(), blen * 3);
    // Too small for one batch.
    assert!(log.read(4, blen - 1, i64::MAX, false).unwrap().is_empty());
    let r = log.read(4, blen - 1, i64::MAX, true).unwrap();
    assert_eq!(batch_offsets(&r), vec![(4, 5)]);
    // Zero bytes with min_one_batch still gives one batch, but never past max_offset.
    assert_eq!(
        batch_offsets(&log.read(57, 0, i64::MAX, true).unwrap()),
        vec![(56, 57)]
    );
    assert!(log.read(56, 0, 56, true).unwrap().is_empty());
    // Reads spanning segments return contiguous whole batches.
    let plan = log.read_plan(0, usize::MAX, i64::MAX, false).unwrap();
    assert!(plan.chunks().len() > 1);
    assert_eq!(plan.len(), 30 * blen);
    // Every start offset gives the batch holding it first.
    for off in 0..60 {
        let r = log.read(off, blen * 2, i64::MAX, false).unwrap();
        let got = batch_offsets(&r);
        assert_eq!(got[0].0, off - off % 2, "offset {off}");
        assert!(got.len() <= 2);
    }
}

/// Every record's (offset, timestamp), decoded.
fn all_records(log: &Log) -> Vec<(i64, i64)> {
    let mut bytes = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, false)
        .unwrap();
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut bytes).unwrap() {
        for r in set.records {
            out.push((r.offset, r.timestamp));
        }
    }
    out
}

#[test]
fn finds_offsets_by_timestamp_like_a_linear_scan() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    // Mostly rising timestamps with a few going back in time, some batches compressed.
    let timestamps = [100, 150, 140, 300, 290, 500, 510, 505, 800, 700, 900, 1000];
    for (i, ts) in timestamps.iter().enumerate() {
        let c = if i % 3 == 0 {
            Compression::Gzip
        } else {
            Compression::None
        };
        append(&mut log, &batch_with(3, *ts, 80, c), 0);
    }
    assert!(log.segment_count() > 2);
    let records = all_records(&log);
    for target in (0..1100).step_by(7) {
        let expected = records
            .iter()
            .find(|(o, t)| *o >= log.log_start_offset() && *t >= target)
            .copied();
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            expected,
            "target {target}"
        );
    }
    let max_ts = records.iter().map(|r| r.1).max().unwrap();
    let first_max = records.iter().find(|r| r.1 == max_ts).copied();
    assert_eq!(
        log.max_timestamp_and_offset(),
        first_max.map(|(o, t)| (t, o))
    );
    assert_eq!(log.offset_for_timestamp(max_ts + 1).unwrap(), None);

    // After DeleteRecords, records below the log start offset are not returned.
    log.delete_records_before(10).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap().map(|r| r.0), Some(10));

    // Same answers after a clean reopen (indexes loaded lazily from disk).
    let before: Vec<_> = (0..1100)
        .step_by(13)
        .map(|t| log.offset_for_timestamp(t).unwrap())
        .collect();
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    let after: Vec<_> = (0..1100)
        .step_by(13)
        .map(|t| log.offset_for_timestamp(t).unwrap())
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        log.max_timestamp_and_offset(),
        first_max.map(|(o, t)| (t, o))
    );
}

#[test]
fn log_append_time_rewrites_timestamp_and_crc() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        message_timestamp_type: TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    let info = append(&mut log, &batch(3, 5, 10), 77_777);
    assert_eq!(info.log_append_time, 77_777);
    let bytes = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    let h = record_batch::validate(&bytes).unwrap();
    assert!(h.is_log_append_time());
    assert_eq!(h.max_timestamp, 77_777);
    assert_eq!(log.offset_for_timestamp(77_777).unwrap(), Some((0, 77_777)));
    assert_eq!(log.max_timestamp_and_offset(), Some((77_777, 0)));
}

#[test]
fn retention_by_time_deletes_old_segments_and_rolls_when_all_expired() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1_000,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    for i in 0..10 {
        append(&mut log, &batch(2, i * 100, 100), i * 100);
    }
    let segments = log.segment_count();
    assert!(segments >= 3);
    assert_eq!(log.apply_retention(500).unwrap(), 0);
    // Segments whose largest timestamp is older than now - retention go.
    let deleted = log.apply_retention(1_650).unwrap();
    assert!(
        deleted >= 1 && deleted < segments,
        "{deleted} of {segments}"
    );
    assert!(log.log_start_offset() > 0);
    assert!(matches!(
        log.read(0, 100, i64::MAX, false),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let first = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, false)
        .unwrap();
    assert_eq!(batch_offsets(&first)[0].0, log.log_start_offset());
    // Everything expired: the active segment goes too and the log start reaches the end.
    let leo = log.log_end_offset();
    assert!(log.apply_retention(100_000).unwrap() >= 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes()
        ),
        (leo, leo, 0)
    );
    assert_eq!(log.apply_retention(200_000).unwrap(), 0);
    let info = append(&mut log, &batch(1, 0, 1), 200_000);
    assert_eq!(info.first_offset, leo);
    let only_logs = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert_eq!(only_logs, 1);
    // Log start survives a reopen.
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (leo, leo + 1)
    );
}

#[test]
fn retention_by_size_keeps_the_newest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 2_000,
        file_delete_delay_ms: 60_000,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    for _ in 0..30 {
        append(&mut log, &batch(1, 0, 150), 0);
    }
    let before = log.size_bytes();
    assert!(before > 4_000);
    let deleted = log.apply_retention(10).unwrap();
    assert!(deleted > 0);
    // Like Kafka, whole segments go only while at least retention.bytes remain.
    assert!(
        log.size_bytes() >= 2_000,
        "deleted too much: {}",
        log.size_bytes()
    );
    assert!(
        log.size_bytes() < 2_000 + 1024,
        "kept too much: {}",
        log.size_bytes()
    );
    // Deleted files linger as .deleted until file.delete.delay.ms passes.
    let count_deleted = || {
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".deleted")
            })
            .count()
    };
    assert_eq!(count_deleted(), deleted * 3);
    log.apply_retention(30_000).unwrap();
    assert_eq!(count_deleted(), deleted * 3);
    log.apply_retention(61_001).unwrap(); // opened at 1_000 + 60_000 delay
    assert_eq!(count_deleted(), 0);
}

#[test]
fn plans_stay_readable_after_their_segment_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for _ in 0..10 {
        append(&mut log, &batch(1, 0, 300), 0);
    }
    let plan = log.read_plan(0, 400, i64::MAX, true).unwrap();
    let expected = plan.execute().unwrap();
    log.delete_records_before(log.log_end_offset()).unwrap();
    assert_eq!(plan.execute().unwrap(), expected);
}

#[test]
fn delete_records_advances_log_start_and_drops_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for _ in 0..20 {
        append(&mut log, &batch(2, 0, 100), 0);
    }
    let segments = log.segment_count();
    assert_eq!(log.delete_records_before(0).unwrap(), 0);
    assert_eq!(log.delete_records_before(7).unwrap(), 7);
    // Offset 7 sits in a batch of the first segment: nothing deleted yet, reads start at the batch.
    assert!(matches!(
        log.read(5, 100, i64::MAX, true),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        batch_offsets(&log.read(7, 10_000, i64::MAX, true).unwrap())[0],
        (6, 7)
    );
    assert_eq!(log.delete_records_before(3).unwrap(), 7);
    assert_eq!(log.delete_records_before(30).unwrap(), 30);
    assert!(log.segment_count() < segments);
    assert!(matches!(
        log.delete_records_before(41),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_before(40).unwrap(), 40);
    assert_eq!(log.segment_count(), 1, "only the active segment remains");
    // Persisted: a crash (no close) keeps the log start.
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), 40);
    assert_eq!(log.log_end_offset(), 40);
}

#[test]
fn reopen_after_clean_close_and_after_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for i in 0..25 {
        append(&mut log, &batch(3, i * 10, 60), 0);
    }
    let all = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    let segments = log.segment_count();
    log.close().unwrap();
    assert!(dir.path().join(".kavka_cleanshutdown").exists());
    let mut log = open(dir.path(), small_config());
    assert!(!dir.path().join(".kavka_cleanshutdown").exists());
    assert_eq!(log.log_end_offset(), 75);
    assert_eq!(log.segment_count(), segments);
    assert_eq!(log.read(0, usize::MAX, i64::MAX, false).unwrap(), all);
    assert_eq!(log.recovery_point(), 75);
    assert!(log.flush_job().is_none());
    let info = append(&mut log, &batch(1, 0, 1), 0);
    assert_eq!(info.first_offset, 75);
    drop(log); // crash: no flush, no marker
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 76);
    assert_eq!(&log.read(0, usize::MAX, 75, false).unwrap()[..], &all[..]);
}

#[test]
fn rebuilds_missing_or_corrupt_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for i in 0..25 {
        append(&mut log, &batch(2, i, 60), 0);
    }
    let all = log.read(0, usize::MAX, i64::MAX, false).unwrap();
    log.close().unwrap();
    fs::remove_file(dir.path().join("00000000000000000000.index")).unwrap();
    fs::write(
        dir.path().join("00000000000000000000.timeindex"),
        [0xffu8; 36],
    )
    .unwrap();
    let last_index = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .max()
        .unwrap();
    fs::write(&last_index, [0u8; 64]).unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.read(0, usize::MAX, i64::MAX, false).unwrap(), all);
    for off in 0..50 {
        assert_eq!(
            batch_offsets(&log.read(off, 1, i64::MAX, true).unwrap())[0].0,
            off - off % 2
        );
    }
    assert_eq!(log.offset_for_timestamp(3).unwrap(), Some((5, 3)));
}

#[test]
fn flush_jobs_advance_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush_interval_messages: 3,
        flush_interval_ms: 500,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    assert!(log.flush_job().is_none());
    assert!(!log.flush_due(0));
    append(&mut log, &batch(2, 0, 10), 1_000);
    assert!(!log.flush_due(1_000));
    assert!(log.flush_due(1_500), "flush.ms");
    append(&mut log, &batch(1, 0, 10), 1_100);
    assert!(log.flush_due(1_100), "flush.messages");
    let job = log.flush_job().unwrap();
    assert_eq!(job.up_to_offset, 3);
    append(&mut log, &batch(1, 0, 10), 1_200);
    job.run().unwrap();
    log.complete_flush(job.up_to_offset);
    assert_eq!(log.recovery_point(), 3);
    assert!(!log.flush_due(1_200));
    let job = log.flush_job().unwrap();
    job.run().unwrap();
    log.complete_flush(job.up_to_offset);
    assert_eq!(log.recovery_point(), 4);
    assert!(log.flush_job().is_none());
    // Flush across rolls covers the rolled segments.
    assert!(!log.rolled_segments_unflushed());
    for _ in 0..20 {
        append(&mut log, &batch(1, 0, 200), 2_000);
    }
    assert!(log.rolled_segments_unflushed());
    let job = log.flush_job().unwrap();
    assert!(job.files.len() >= 3 * 2);
    assert!(job.dir.is_some());
    job.run().unwrap();
    log.complete_flush(job.up_to_offset);
    assert_eq!(log.recovery_point(), log.log_end_offset());
    assert!(!log.rolled_segments_unflushed());
}

#[test]
fn truncate_to_removes_the_tail_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for _ in 0..20 {
        append(&mut log, &batch(2, 0, 100), 0);
    }
    let segments = log.segment_count();
    log.truncate_to(21).unwrap(); // inside batch 20..21: the whole batch goes
    assert_eq!(log.log_end_offset(), 20);
    assert!(log.segment_count() < segments);
    assert_eq!(
        batch_offsets(&log.read(0, usize::MAX, i64::MAX, false).unwrap()).last(),
        Some(&(18, 19))
    );
    assert_eq!(append(&mut log, &batch(1, 0, 1), 0).first_offset, 20);
    log.truncate_to(0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.size_bytes()
        ),
        (0, 0, 0)
    );
    append(&mut log, &batch(1, 0, 1), 0);
    drop(log);
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let mut log = open(&path, LogConfig::default());
    append(&mut log, &batch(1, 0, 1), 0);
    log.delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn idle_partitions_are_cheap() {
    // Many empty logs: no preallocated index memory, empty index files.
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<Log> = (0..200)
        .map(|i| open(&dir.path().join(format!("t-{i}")), LogConfig::default()))
        .collect();
    for log in &logs {
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.size_bytes(), 0);
    }
    assert_eq!(
        fs::metadata(dir.path().join("t-0/00000000000000000000.index"))
            .unwrap()
            .len(),
        0
    );
}

mod crash_model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Append {
            batches: usize,
            records: usize,
            value_len: usize,
        },
        Flush,
        CleanReopen,
        /// DeleteRecords at a fraction of the way from log start to log end.
        DeleteRecords(f64),
        /// Crash, then damage the unflushed tail of the active segment at `at` (a fraction).
        Crash {
            at: f64,
            flip: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..3, 1usize..5, 0usize..300).prop_map(|(batches, records, value_len)| Op::Append { batches, records, value_len }),
            2 => Just(Op::Flush),
            1 => Just(Op::CleanReopen),
            1 => (0.0f64..1.0).prop_map(Op::DeleteRecords),
            2 => (0.0f64..1.0, any::<bool>()).prop_map(|(at, flip)| Op::Crash { at, flip }),
        ]
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 2_000,
            index_interval_bytes: 100,
            retention_ms: -1,
            ..LogConfig::default()
        }
    }

    /// Appended batches as (base offset, bytes as stored).
    struct Model {
        batches: Vec<(i64, Vec<u8>)>,
        durable_end: i64,
        log_start: i64,
    }

    impl Model {
        fn log_end(&self) -> i64 {
            let end = self.batches.last().map_or(0, |(_, b)| {
                record_batch::peek_header(b).unwrap().next_offset()
            });
            end.max(self.log_start)
        }
        /// What a read from the log start returns: batches holding offsets >= log start.
        fn bytes(&self) -> Vec<u8> {
            self.batches
                .iter()
                .filter(|(_, b)| {
                    record_batch::peek_header(b).unwrap().last_offset() >= self.log_start
                })
                .flat_map(|(_, b)| b.clone())
                .collect()
        }
    }

    fn check(log: &Log, model: &Model) {
        assert_eq!(log.log_start_offset(), model.log_start);
        assert_eq!(log.log_end_offset(), model.log_end());
        assert_eq!(
            &log.read(model.log_start, usize::MAX, i64::MAX, false)
                .unwrap()[..],
            &model.bytes()[..]
        );
        let middle = model.batches.get(model.batches.len() / 2);
        if let Some((base, bytes)) = middle.filter(|(b, _)| *b >= model.log_start) {
            let got = log.read(*base, 1, i64::MAX, true).unwrap();
            assert_eq!(&got[..], &bytes[..]);
        }
    }

    /// Damages the last segment file beyond its durable prefix; returns the model trimmed to
    /// the batches that must survive.
    fn damage(dir: &Path, model: &mut Model, at: f64, flip: bool) {
        let mut logs: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let last = logs.last().unwrap();
        let base: i64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        // Batches of the last segment, with their positions.
        let mut pos = 0u64;
        let mut in_segment = Vec::new();
        for (i, (b, bytes)) in model.batches.iter().enumerate() {
            if *b >= base {
                in_segment.push((i, pos, bytes.len() as u64, *b));
                pos += bytes.len() as u64;
            }
        }
        let size = fs::metadata(last).unwrap().len();
        assert_eq!(size, pos);
        let durable: u64 = in_segment
            .iter()
            .filter(|(i, ..)| {
                record_batch::peek_header(&model.batches[*i].1)
                    .unwrap()
                    .next_offset()
                    <= model.durable_end
            })
            .map(|(_, _, len, _)| len)
            .sum();
        if size <= durable {
            return;
        }
        let mut target = durable + ((size - durable) as f64 * at) as u64;
        target = target.min(size - 1);
        let (victim, start, _, _) = *in_segment
            .iter()
            .find(|(_, p, len, _)| target >= *p && target < p + len)
            .unwrap();
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(last)
            .unwrap();
        if flip {
            // Bytes 0..16 (base offset, length, leader epoch) are outside the CRC: aim past them.
            let target = target.max(start + 16);
            let mut byte = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, target).unwrap();
            byte[0] ^= 0x5a;
            std::os::unix::fs::FileExt::write_all_at(&f, &byte, target).unwrap();
        } else {
            f.set_len(target).unwrap();
        }
        model.batches.truncate(victim);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn recovers_to_the_longest_intact_prefix(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path();
            let mut log = Log::open(path, config(), 0).unwrap();
            let mut model = Model { batches: Vec::new(), durable_end: 0, log_start: 0 };
            let mut ts = 0i64;
            for op in ops {
                match op {
                    Op::Append { batches, records, value_len } => {
                        let mut buf = Vec::new();
                        for _ in 0..batches {
                            ts += 1;
                            buf.extend(batch(records, ts, value_len));
                        }
                        let info = log.append(&mut buf, ts).unwrap();
                        prop_assert_eq!(info.first_offset, model.log_end());
                        for r in record_batch::batches(&buf) {
                            let (at, h) = r.unwrap();
                            model.batches.push((h.base_offset, buf[at..at + h.total_len()].to_vec()));
                        }
                    }
                    Op::Flush => {
                        if let Some(job) = log.flush_job() {
                            job.run().unwrap();
                            log.complete_flush(job.up_to_offset);
                        }
                        model.durable_end = log.log_end_offset();
                    }
                    Op::DeleteRecords(at) => {
                        let span = model.log_end() - model.log_start;
                        let offset = model.log_start + (span as f64 * at) as i64;
                        let new_start = log.delete_records_before(offset).unwrap();
                        prop_assert_eq!(new_start, offset.max(model.log_start));
                        model.log_start = new_start;
                    }
                    Op::CleanReopen => {
                        log.close().unwrap();
                        model.durable_end = model.log_end();
                        log = Log::open(path, config(), ts).unwrap();
                    }
                    Op::Crash { at, flip } => {
                        drop(log);
                        damage(path, &mut model, at, flip);
                        log = Log::open(path, config(), ts).unwrap();
                        prop_assert!(log.log_end_offset() >= model.durable_end.min(model.log_end()));
                        model.durable_end = model.durable_end.min(model.log_end());
                    }
                }
                check(&log, &model);
            }
            // Appends continue right after the surviving data.
            let end = model.log_end();
            let info = log.append(&mut batch(1, 0, 1), ts).unwrap();
            prop_assert_eq!(info.first_offset, end);
        }
    }
}

#[test]
fn sealed_segment_max_timestamp_survives_a_lost_time_index_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for i in 0..12 {
        append(&mut log, &batch(2, i * 100, 100), 0);
    }
    assert!(log.segment_count() >= 2);
    log.close().unwrap();
    let first_ti = dir.path().join("00000000000000000000.timeindex");
    let len = fs::metadata(&first_ti).unwrap().len();
    assert!(len >= 24);
    fs::OpenOptions::new()
        .write(true)
        .open(&first_ti)
        .unwrap()
        .set_len(len - 12)
        .unwrap();
    let config = LogConfig {
        retention_ms: 1_000,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    let segments = log.segment_count();
    let stats_max = log.max_timestamp_and_offset().unwrap().0;
    assert_eq!(stats_max, 1101);
    // A segment is deleted only once now - its largest timestamp > retention.ms.
    let mut now = 0;
    while log.segment_count() == segments {
        now += 50;
        log.apply_retention(now).unwrap();
    }
    let remaining_first = batch_offsets(
        &log.read(log.log_start_offset(), usize::MAX, i64::MAX, false)
            .unwrap(),
    )[0]
    .0;
    // The deleted first segment held batches up to remaining_first - 1, the newest one with
    // timestamp (remaining_first / 2 - 1) * 100 + 1; it may not go before that plus retention.
    let newest_deleted = (remaining_first / 2 - 1) * 100 + 1;
    assert!(
        now > newest_deleted + 1_000,
        "deleted at {now}, newest record {newest_deleted}"
    );
    assert!(now <= newest_deleted + 1_000 + 50);
}

#[test]
fn log_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
    assert_send_sync::<crate::ReadPlan>();
    assert_send_sync::<crate::FlushJob>();
}

#[test]
fn garbage_on_disk_is_truncated_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    for _ in 0..8 {
        append(&mut log, &batch(1, 0, 300), 0);
    }
    let leo = log.log_end_offset();
    drop(log);
    // A stray file, a garbage checkpoint, garbage appended to the active segment, an orphan
    // index, and a leftover .deleted file.
    fs::write(dir.path().join("README"), b"hello").unwrap();
    fs::write(dir.path().join("partition.checkpoint"), b"\xff\xfe garbage").unwrap();
    fs::write(dir.path().join("00000000000000099999.index"), b"x").unwrap();
    fs::write(dir.path().join("00000000000000000000.log.deleted"), b"x").unwrap();
    let mut active = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect::<Vec<_>>();
    active.sort();
    let active = active.last().unwrap().clone();
    let mut bytes = fs::read(&active).unwrap();
    bytes.extend([0x7fu8; 100]); // absurd length prefix
    fs::write(&active, &bytes).unwrap();
    let mut log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), leo);
    assert!(!dir.path().join("00000000000000099999.index").exists());
    assert!(!dir.path().join("00000000000000000000.log.deleted").exists());
    assert_eq!(append(&mut log, &batch(1, 0, 1), 0).first_offset, leo);
    // A segment that is garbage from its first byte is emptied.
    drop(log);
    fs::write(&active, [0xffu8; 64]).unwrap();
    let log = open(dir.path(), small_config());
    let base: i64 = active
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(log.log_end_offset(), base);
}
