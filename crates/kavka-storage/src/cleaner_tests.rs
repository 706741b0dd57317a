//! Log compaction through the public API: latest value per key, preserved offsets, reads
//! across the gaps, tombstone expiry, crash in the middle of a swap, abort when the log
//! changed, idempotent producer state, corrupt data, a bounded key map, and a model test;
//! with transactions: aborted values never win, markers and aborted-transaction entries stay
//! as long as needed, nothing at or above the LSO is cleaned, and a `__consumer_offsets`-like
//! replay gives the same committed state before and after cleaning (model test).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record};
use kavka_protocol::records::{
    decode_batches_detailed, decode_control_key, encode_batch, plain_record, ControlType,
    DecodedBatch, TxnMarker,
};
use proptest::prelude::*;

use crate::{
    AbortedTxn, Cleaner, CleanerConfig, CleanerError, Log, LogConfig, StorageError, SwapOutcome,
};

/// A current wall-clock time (November 2025), so nothing reads as decades old.
const NOW: i64 = 1_763_700_000_000;
const RETENTION: i64 = 10_000;

/// One batch of (key, value) records; `None` values are tombstones.
fn keyed_batch(
    records: &[(Option<&str>, Option<String>)],
    pid: i64,
    first_seq: i32,
    compression: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            producer_id: pid,
            producer_epoch: if pid >= 0 { 0 } else { -1 },
            sequence: first_seq + i as i32,
            ..plain_record(
                i as i64,
                NOW + i as i64,
                k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                v.as_ref().map(|v| Bytes::copy_from_slice(v.as_bytes())),
            )
        })
        .collect();
    encode_batch(&records, compression).unwrap().to_vec()
}

fn put(log: &mut Log, key: &str, value: Option<&str>) -> i64 {
    let mut b = keyed_batch(
        &[(Some(key), value.map(str::to_string))],
        -1,
        0,
        Compression::None,
    );
    log.append(&mut b, NOW).unwrap().first_offset
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        retention_ms: -1,
        file_delete_delay_ms: 0,
        compact: true,
        min_cleanable_dirty_ratio: 0.01,
        delete_retention_ms: RETENTION,
        ..LogConfig::default()
    }
}

/// Appends filler (its own keys) until a new segment is rolled, so everything written
/// before is in sealed, cleanable segments.
fn seal(log: &mut Log) {
    let segments = log.segment_count();
    for i in 0..100 {
        put(log, &format!("filler{i}"), Some("f"));
        if log.segment_count() > segments {
            return;
        }
    }
    panic!("no roll after 100 appends");
}

/// Every record from the log start: (offset, key, value).
fn records(log: &Log) -> Vec<(i64, String, Option<String>)> {
    let bytes = log
        .read(log.log_start_offset(), 64 << 20, i64::MAX, true)
        .unwrap();
    decode_batches_detailed(&bytes, 64 << 20)
        .unwrap()
        .into_iter()
        .flat_map(|b| b.records)
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.key.unwrap().to_vec()).unwrap(),
                r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            )
        })
        .collect()
}

/// One full round: snapshot, clean, swap.
fn clean_round(log: &mut Log, cleaner: &mut Cleaner, now: i64) -> Option<SwapOutcome> {
    let snap = log.cleanable(now, i64::MAX)?;
    if !snap.is_due() {
        return None;
    }
    let cleaned = cleaner.clean(&snap, now).unwrap();
    Some(log.swap_cleaned(cleaned).unwrap())
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect()
}

/// Writes `rounds` updates of `keys` keys; returns the offset of each key's latest value.
fn updates(log: &mut Log, keys: usize, rounds: usize) -> BTreeMap<String, (i64, String)> {
    let mut latest = BTreeMap::new();
    for r in 0..rounds {
        for k in 0..keys {
            let (key, value) = (format!("k{k}"), format!("v{k}-{r}"));
            let o = put(log, &key, Some(&value));
            latest.insert(key, (o, value));
        }
    }
    latest
}

#[test]
fn keeps_the_latest_value_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    let latest = updates(&mut log, 5, 60);
    seal(&mut log);
    let before_segments = log.segment_count();
    let before_size = log.size_bytes();
    let leo = log.log_end_offset();
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    let outcome = clean_round(&mut log, &mut cleaner, NOW).expect("due");
    assert!(
        matches!(outcome, SwapOutcome::Swapped { .. }),
        "{outcome:?}"
    );
    assert!(log.segment_count() <= before_segments);
    assert!(log.size_bytes() < before_size);
    assert_eq!(log.log_end_offset(), leo, "the log end never moves");
    assert!(leftovers(dir.path()).is_empty());

    let got = records(&log);
    let keyed: Vec<_> = got.iter().filter(|(_, k, _)| k.starts_with('k')).collect();
    assert_eq!(keyed.len(), 5, "one record per key: {keyed:?}");
    for (offset, key, value) in keyed {
        let (o, v) = &latest[key];
        assert_eq!((offset, value.as_deref()), (o, Some(v.as_str())));
    }
    // The checkpoint advanced to the active segment: nothing dirty is left.
    assert!(log.cleanable(NOW, i64::MAX).is_none());

    // Reopen (crash-style, no close) and after a clean close: same content.
    drop(log);
    let log = Log::open(dir.path(), config(), NOW).unwrap();
    assert_eq!(records(&log), got);
    log.close().unwrap();
    let log = Log::open(dir.path(), config(), NOW).unwrap();
    assert_eq!(records(&log), got);
    assert!(
        log.cleanable(NOW, i64::MAX).is_none(),
        "the cleaner checkpoint persisted"
    );
}

#[test]
fn fetch_from_a_compacted_offset_returns_the_next_surviving_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    let latest = updates(&mut log, 3, 40);
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    let survivors: Vec<i64> = records(&log).iter().map(|r| r.0).collect();
    for offset in 0..log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX, true).unwrap();
        let batches = decode_batches_detailed(&bytes, 1 << 20).unwrap();
        let first = batches
            .iter()
            .flat_map(|b| &b.records)
            .map(|r| r.offset)
            .find(|o| *o >= offset);
        let expected = survivors.iter().copied().find(|o| *o >= offset);
        assert_eq!(first, expected, "fetch from {offset}");
    }
    // The time index was rebuilt: a timestamp lookup still finds a record.
    assert!(log.offset_for_timestamp(NOW).unwrap().is_some());
    assert!(latest.values().all(|(o, _)| survivors.contains(o)));
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    updates(&mut log, 3, 10);
    let tomb = put(&mut log, "k1", None);
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    let got = records(&log);
    assert!(
        got.contains(&(tomb, "k1".into(), None)),
        "tombstone kept: {got:?}"
    );
    assert!(!got.iter().any(|(_, k, v)| k == "k1" && v.is_some()));

    // Before the horizon nothing is due; after it a round removes the tombstone without any
    // new dirt, also after a restart.
    assert!(log.cleanable(NOW + RETENTION - 1, i64::MAX).is_none());
    drop(log);
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    assert!(log.cleanable(NOW + RETENTION - 1, i64::MAX).is_none());
    let outcome = clean_round(&mut log, &mut cleaner, NOW + RETENTION).expect("tombstones due");
    assert!(matches!(outcome, SwapOutcome::Swapped { .. }));
    let got = records(&log);
    assert!(!got.iter().any(|(_, k, _)| k == "k1"), "{got:?}");
    assert!(got.iter().any(|(_, k, _)| k == "k0"));
    assert!(log.cleanable(NOW + 2 * RETENTION, i64::MAX).is_none());
}

#[test]
fn crash_before_commit_discards_and_after_commit_completes_the_swap() {
    // 0: crash before the commit; 1: right after it; 2: after the old segments were renamed
    // `.deleted` too, before the final renames.
    for stage in 0..3 {
        let committed = stage > 0;
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), NOW).unwrap();
        let latest = updates(&mut log, 4, 50);
        seal(&mut log);
        let before = records(&log);
        let mut cleaner = Cleaner::new(CleanerConfig::default());
        let snap = log.cleanable(NOW, i64::MAX).unwrap();
        let cleaned = cleaner.clean(&snap, NOW).unwrap();
        assert!(!leftovers(dir.path()).is_empty());
        if committed {
            let g = &cleaned.groups[0];
            crate::segment_swap::commit(dir.path(), g.base_offset, g.end_offset).unwrap();
            if stage == 2 {
                for (base, _) in &g.sources {
                    for suffix in ["log", "index", "timeindex"] {
                        let from = dir.path().join(format!("{base:020}.{suffix}"));
                        match fs::rename(&from, format!("{}.deleted", from.display())) {
                            // A sealed segment's indexes may not be on disk; its log is.
                            Err(e) if suffix != "log" && e.kind() == io::ErrorKind::NotFound => {}
                            r => r.unwrap(),
                        }
                    }
                }
            }
        }
        // The crash: the process is gone, its files stay as they are.
        std::mem::forget(cleaned);
        drop(snap);
        drop(log);
        let log = Log::open(dir.path(), config(), NOW).unwrap();
        assert!(leftovers(dir.path()).is_empty());
        let after = records(&log);
        if committed {
            assert!(after.len() < before.len());
        } else {
            assert_eq!(after, before);
        }
        // Either way every key still reads as its latest value, at its offset.
        let mut seen = BTreeMap::new();
        for (o, k, v) in &after {
            assert!(seen
                .insert(k.clone(), (*o, v.clone()))
                .is_none_or(|(p, _)| p < *o));
        }
        for (k, (o, v)) in &latest {
            assert_eq!(seen[k], (*o, Some(v.clone())), "{k} committed={committed}");
        }
        let offsets: Vec<i64> = after.iter().map(|r| r.0).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn a_round_aborts_when_the_log_changed_underneath() {
    for change in ["truncate", "retention", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), NOW).unwrap();
        updates(&mut log, 4, 50);
        seal(&mut log);
        let mut cleaner = Cleaner::new(CleanerConfig::default());
        let snap = log.cleanable(NOW, i64::MAX).unwrap();
        let cleaned = cleaner.clean(&snap, NOW).unwrap();
        match change {
            "truncate" => log.truncate_to(log.log_end_offset() - 1).unwrap(),
            "retention" => {
                log.delete_records_before(50).unwrap();
            }
            _ => {}
        }
        let before = records(&log);
        let outcome = log.swap_cleaned(cleaned).unwrap();
        if change == "none" {
            assert!(matches!(outcome, SwapOutcome::Swapped { .. }));
        } else {
            assert!(matches!(outcome, SwapOutcome::Aborted(_)), "{change}");
            assert_eq!(records(&log), before);
        }
        assert!(leftovers(dir.path()).is_empty(), "{change}");
    }
}

#[test]
fn an_idempotent_producers_last_batch_survives_as_an_empty_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    for seq in 0..10 {
        let mut b = keyed_batch(
            &[(Some("k"), Some(format!("p{seq}")))],
            7,
            seq,
            Compression::None,
        );
        log.append(&mut b, NOW).unwrap();
    }
    put(&mut log, "k", Some("plain"));
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    let got = records(&log);
    assert_eq!(
        got.iter().filter(|r| r.1 == "k").collect::<Vec<_>>(),
        vec![&(10, "k".to_string(), Some("plain".to_string()))]
    );
    // Forget every snapshot: the state is rebuilt from batch headers alone.
    log.close().unwrap();
    for e in fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snapshot") {
            fs::remove_file(p).unwrap();
        }
    }
    fs::remove_file(dir.path().join(crate::checkpoint::CLEAN_SHUTDOWN_FILE)).ok();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    let entry = log.producer_state().producer(7).expect("producer 7 known");
    assert_eq!(entry.batches.back().map(|b| b.last_seq), Some(9));
    // A retry of the last batch is still recognised as a duplicate.
    let mut retry = keyed_batch(&[(Some("k"), Some("p9".into()))], 7, 9, Compression::None);
    let info = log.append(&mut retry, NOW).unwrap();
    assert!(info.duplicate);
    assert_eq!(info.first_offset, 9);
    let mut next = keyed_batch(&[(Some("k"), Some("p10".into()))], 7, 10, Compression::None);
    assert!(!log.append(&mut next, NOW).unwrap().duplicate);
}

#[test]
fn compressed_batches_are_rebuilt_with_their_codec() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    for r in 0..20 {
        let recs: Vec<_> = (0..4)
            .map(|k| (Some(["a", "b", "c", "d"][k]), Some(format!("{r}-{k}"))))
            .collect();
        let mut b = keyed_batch(&recs, -1, 0, Compression::Zstd);
        log.append(&mut b, NOW).unwrap();
    }
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    let bytes = log.read(0, 1 << 20, i64::MAX, true).unwrap();
    let batches = decode_batches_detailed(&bytes, 1 << 20).unwrap();
    let last = batches
        .iter()
        .find(|b| b.records.iter().any(|r| r.key.as_deref() == Some(b"a")))
        .unwrap();
    assert_eq!(
        last.header.compression().unwrap(),
        kavka_protocol::record_batch::Compression::Zstd
    );
    let vals: Vec<_> = last
        .records
        .iter()
        .map(|r| r.value.clone().unwrap())
        .collect();
    assert_eq!(
        vals,
        vec![
            Bytes::from("19-0"),
            Bytes::from("19-1"),
            Bytes::from("19-2"),
            Bytes::from("19-3")
        ]
    );
}

#[test]
fn a_corrupt_batch_stops_cleaning_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    updates(&mut log, 3, 30);
    seal(&mut log);
    let first = dir.path().join(format!("{:020}.log", 0));
    let mut data = fs::read(&first).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x55;
    fs::write(&first, &data).unwrap();
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    let snap = log.cleanable(NOW, i64::MAX).unwrap();
    let err = cleaner.clean(&snap, NOW).unwrap_err();
    assert!(
        matches!(err, CleanerError::Corrupt { segment: 0, .. }),
        "{err}"
    );
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn a_full_key_map_cleans_part_of_the_log_per_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    let latest = updates(&mut log, 30, 4);
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig {
        dedupe_buffer_bytes: 24 * 20,
        io_buffer_bytes: 4096,
    });
    assert_eq!(cleaner.map_capacity(), 18);
    let mut rounds = 0;
    while let Some(outcome) = clean_round(&mut log, &mut cleaner, NOW) {
        assert!(matches!(outcome, SwapOutcome::Swapped { .. }));
        rounds += 1;
        assert!(rounds < 50, "cleaning does not converge");
    }
    assert!(rounds > 1, "the map could not hold every key at once");
    let got: Vec<_> = records(&log)
        .into_iter()
        .filter(|r| !r.1.starts_with("filler"))
        .collect();
    assert_eq!(got.len(), 30, "{got:?}");
    for (o, k, v) in got {
        assert_eq!(latest[&k], (o, v.unwrap()));
    }
}

#[test]
fn a_compacted_log_refuses_records_without_a_key() {
    // Compressed batches are inflated; uncompressed ones are checked in place.
    for codec in [Compression::Lz4, Compression::None] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), NOW).unwrap();
        let mut b = keyed_batch(
            &[(Some("k"), Some("v".into())), (None, Some("v".into()))],
            -1,
            0,
            codec,
        );
        assert!(
            matches!(log.append(&mut b, NOW), Err(StorageError::InvalidRecord(_))),
            "{codec:?}"
        );
        assert_eq!(log.log_end_offset(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Against a model: after a round (before any horizon) the log reads as, per key, its
    /// latest record (value or tombstone) at its original offset; reads from every offset
    /// agree with the survivors; a second round changes nothing.
    #[test]
    fn compaction_matches_a_model(ops in proptest::collection::vec((0u8..6, proptest::option::weighted(0.8, 0u16..1000)), 1..120),
                                  segment_bytes in 300u64..2000) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes, ..config() };
        let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
        let mut model = BTreeMap::new();
        for (k, v) in &ops {
            let key = format!("k{k}");
            let value = v.map(|v| v.to_string());
            let o = put(&mut log, &key, value.as_deref());
            model.insert(key, (o, value));
        }
        seal(&mut log);
        let mut cleaner = Cleaner::new(CleanerConfig::default());
        clean_round(&mut log, &mut cleaner, NOW);
        let got: BTreeMap<String, (i64, Option<String>)> = records(&log)
            .into_iter()
            .filter(|r| r.1.starts_with('k'))
            .map(|(o, k, v)| (k, (o, v)))
            .collect();
        let keyed_count = records(&log).iter().filter(|r| r.1.starts_with('k')).count();
        prop_assert_eq!(keyed_count, model.len());
        prop_assert_eq!(&got, &model);
        let survivors: Vec<i64> = records(&log).iter().map(|r| r.0).collect();
        for offset in (0..log.log_end_offset()).step_by(7) {
            let bytes = log.read(offset, 1 << 16, i64::MAX, true).unwrap();
            let first = decode_batches_detailed(&bytes, 1 << 20).unwrap()
                .iter().flat_map(|b| b.records.clone()).map(|r| r.offset).find(|o| *o >= offset);
            prop_assert_eq!(first, survivors.iter().copied().find(|o| *o >= offset));
        }
        drop(log);
        let log = Log::open(dir.path(), cfg, NOW).unwrap();
        prop_assert_eq!(records(&log).into_iter().filter(|r| r.1.starts_with('k')).map(|(o, k, v)| (k, (o, v))).collect::<BTreeMap<_, _>>(), model);
    }
}

#[test]
fn nothing_past_the_high_watermark_or_younger_than_the_lag_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    updates(&mut log, 4, 50);
    seal(&mut log);
    let full = log.cleanable(NOW, i64::MAX).unwrap();
    let hw = full.first_uncleanable_offset() / 2;
    let capped = log.cleanable(NOW, hw).unwrap();
    assert!(capped.first_uncleanable_offset() <= hw);
    assert!(capped.dirty_bytes() < full.dirty_bytes());
    // Every record is younger than a one-hour lag: nothing may be cleaned yet.
    log.update_config(LogConfig {
        min_compaction_lag_ms: 3_600_000,
        ..config()
    });
    assert!(log.cleanable(NOW + 1000, i64::MAX).is_none());
    assert!(log.cleanable(NOW + 3_700_000, i64::MAX).is_some());
    // A max lag makes an otherwise clean-enough log due.
    log.update_config(LogConfig {
        min_cleanable_dirty_ratio: 1.0,
        max_compaction_lag_ms: 60_000,
        ..config()
    });
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    updates(&mut log, 1, 1);
    seal(&mut log);
    let snap = log.cleanable(NOW, i64::MAX).unwrap();
    assert!(snap.dirty_ratio() < 1.0 && !snap.is_due());
    assert!(log.cleanable(NOW + 120_000, i64::MAX).unwrap().is_due());
}

#[test]
fn a_round_aborted_between_groups_keeps_every_latest_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    let latest = updates(&mut log, 4, 80);
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    let snap = log.cleanable(NOW, i64::MAX).unwrap();
    let mut cleaned = cleaner.clean(&snap, NOW).unwrap();
    assert!(cleaned.groups.len() > 2);
    assert_eq!(log.swap_cleaned_group(&mut cleaned).unwrap(), None);
    log.truncate_to(log.log_end_offset() - 1).unwrap();
    assert!(matches!(
        log.swap_cleaned_group(&mut cleaned).unwrap(),
        Some(SwapOutcome::Aborted(_))
    ));
    drop(cleaned);
    assert!(leftovers(dir.path()).is_empty());
    let check = |log: &Log| {
        let mut seen = BTreeMap::new();
        for (o, k, v) in records(log) {
            seen.insert(k, (o, v.unwrap()));
        }
        for (k, v) in &latest {
            assert_eq!(&seen[k], v);
        }
    };
    check(&log);
    // The checkpoint did not move: the next round cleans the rest.
    assert_eq!(log.first_dirty_offset(), 0);
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    check(&log);
    drop(log);
    check(&Log::open(dir.path(), config(), NOW).unwrap());
}

// ---- Transactions -----------------------------------------------------------------------

/// A transactional producer writing to the log as the partition leader would see it.
struct TxnProducer {
    pid: i64,
    epoch: i16,
    next_seq: i32,
}

impl TxnProducer {
    fn new(pid: i64) -> Self {
        TxnProducer {
            pid,
            epoch: 0,
            next_seq: 0,
        }
    }

    /// One transactional batch of `(key, value)` records; its first offset.
    fn send(&mut self, log: &mut Log, records: &[(&str, Option<&str>)]) -> i64 {
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: true,
                producer_id: self.pid,
                producer_epoch: self.epoch,
                sequence: self.next_seq + i as i32,
                ..plain_record(
                    i as i64,
                    NOW + i as i64,
                    Some(Bytes::copy_from_slice(k.as_bytes())),
                    v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                )
            })
            .collect();
        self.next_seq += records.len() as i32;
        let mut b = encode_batch(&recs, Compression::None).unwrap().to_vec();
        log.append(&mut b, NOW).unwrap().first_offset
    }

    /// Writes the COMMIT or ABORT marker of the ongoing transaction; its offset.
    fn end(&mut self, log: &mut Log, control: ControlType) -> i64 {
        let marker = TxnMarker {
            producer_id: self.pid,
            producer_epoch: self.epoch,
            coordinator_epoch: 0,
            control,
        };
        log.append_txn_marker(&marker, 0, NOW).unwrap().first_offset
    }
}

fn batches(log: &Log) -> Vec<DecodedBatch> {
    let bytes = log
        .read(log.log_start_offset(), 64 << 20, i64::MAX, true)
        .unwrap();
    decode_batches_detailed(&bytes, 64 << 20).unwrap()
}

fn text(b: &Option<Bytes>) -> Option<String> {
    b.as_ref().map(|v| String::from_utf8(v.to_vec()).unwrap())
}

/// The control type of a marker batch (`None`: an emptied one).
fn control_of(b: &DecodedBatch) -> Option<ControlType> {
    let r = b.records.first()?;
    decode_control_key(r.key.as_deref()?)
}

/// Every marker: (offset, producer id, type).
fn markers(log: &Log) -> Vec<(i64, i64, ControlType)> {
    batches(log)
        .iter()
        .filter(|b| b.header.is_control())
        .filter_map(|b| Some((b.header.base_offset, b.header.producer_id, control_of(b)?)))
        .collect()
}

/// Every data record, whatever its transaction became: (offset, key, value).
fn data_records(log: &Log) -> Vec<(i64, String, Option<String>)> {
    batches(log)
        .into_iter()
        .filter(|b| !b.header.is_control())
        .flat_map(|b| b.records)
        .map(|r| (r.offset, text(&r.key).unwrap(), text(&r.value)))
        .collect()
}

/// What a read_committed consumer sees reading the whole log below `lso` (Kafka's
/// consumer: an aborted transaction from the log's list hides its producer's transactional
/// batches from its first offset until the producer's abort marker).
fn read_committed(log: &Log, lso: i64) -> Vec<(i64, String, Option<String>)> {
    let mut aborted: Vec<AbortedTxn> = log.aborted_transactions(0, lso).unwrap();
    aborted.sort_by_key(|t| std::cmp::Reverse(t.first_offset));
    let mut hidden = HashSet::new();
    let mut out = Vec::new();
    for b in batches(log) {
        let h = &b.header;
        if h.base_offset >= lso {
            break;
        }
        while aborted
            .last()
            .is_some_and(|t| t.first_offset <= h.last_offset())
        {
            hidden.insert(aborted.pop().unwrap().producer_id);
        }
        if h.is_control() {
            if control_of(&b) == Some(ControlType::Abort) {
                hidden.remove(&h.producer_id);
            }
            continue;
        }
        if h.is_transactional() && hidden.contains(&h.producer_id) {
            continue;
        }
        out.extend(
            b.records
                .iter()
                .map(|r| (r.offset, text(&r.key).unwrap(), text(&r.value))),
        );
    }
    out
}

/// Replays the log as the group coordinator loads `__consumer_offsets`: a non-transactional
/// record applies at once, a transactional one when its producer's COMMIT marker comes (an
/// ABORT drops it), and a record only replaces a key's value from a lower offset (Kafka's
/// `completePendingTxnOffsetCommit` rule, which is what makes the replay immune to
/// compaction). Tombstones remove the key. Returns key -> (offset, value).
fn replay(log: &Log) -> BTreeMap<String, (i64, String)> {
    let mut state: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    let mut pending: HashMap<i64, Vec<(i64, String, Option<String>)>> = HashMap::new();
    let apply = |state: &mut BTreeMap<String, (i64, Option<String>)>, (o, k, v)| {
        if state.get(&k).is_none_or(|(p, _)| *p < o) {
            state.insert(k, (o, v));
        }
    };
    for b in batches(log) {
        let h = &b.header;
        if h.is_control() {
            let txn = pending.remove(&h.producer_id).unwrap_or_default();
            if control_of(&b) == Some(ControlType::Commit) {
                for r in txn {
                    apply(&mut state, r);
                }
            }
            continue;
        }
        for r in &b.records {
            let rec = (r.offset, text(&r.key).unwrap(), text(&r.value));
            if h.is_transactional() {
                pending.entry(h.producer_id).or_default().push(rec);
            } else {
                apply(&mut state, rec);
            }
        }
    }
    assert!(
        pending.values().all(Vec::is_empty),
        "records of a transaction without a marker: {pending:?}"
    );
    state
        .into_iter()
        .filter_map(|(k, (o, v))| Some((k, (o, v?))))
        .filter(|(k, _)| k.starts_with('k'))
        .collect()
}

/// Latest value per key among records, as a compacted reader sees it.
fn latest(records: &[(i64, String, Option<String>)]) -> BTreeMap<String, (i64, Option<String>)> {
    let mut m = BTreeMap::new();
    for (o, k, v) in records {
        m.insert(k.clone(), (*o, v.clone()));
    }
    m
}

fn forget_producer_snapshots(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "snapshot") {
            fs::remove_file(p).unwrap();
        }
    }
    fs::remove_file(dir.join(crate::checkpoint::CLEAN_SHUTDOWN_FILE)).ok();
}

#[test]
fn aborted_values_never_win_and_committed_ones_compact() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    for k in 0..4 {
        put(&mut log, &format!("k{k}"), Some("v0"));
    }
    let (mut p1, mut p2) = (TxnProducer::new(100), TxnProducer::new(200));
    let c1 = p1.send(&mut log, &[("k0", Some("c1")), ("k1", Some("c1"))]);
    let a2 = p2.send(&mut log, &[("k0", Some("a2")), ("k2", Some("a2"))]);
    let commit1 = p1.end(&mut log, ControlType::Commit);
    p2.send(&mut log, &[("k3", Some("a2")), ("k3", None)]);
    let abort2 = p2.end(&mut log, ControlType::Abort);
    let a1 = p1.send(&mut log, &[("k1", Some("a1"))]);
    let abort1 = p1.end(&mut log, ControlType::Abort);
    seal(&mut log);
    let leo = log.log_end_offset();
    let committed_before = latest(&read_committed(&log, leo));
    let replay_before = replay(&log);
    assert_eq!(committed_before["k0"], (c1, Some("c1".into())));

    let mut cleaner = Cleaner::new(CleanerConfig::default());
    let snap = log.cleanable(NOW, leo).expect("dirty");
    let cleaned = cleaner.clean(&snap, NOW).unwrap();
    assert_eq!(cleaned.stats.aborted_records_removed, 5);
    assert!(matches!(
        log.swap_cleaned(cleaned).unwrap(),
        SwapOutcome::Swapped { .. }
    ));

    // No aborted record is left, not even for a read_uncommitted reader; committed and
    // plain values compact as usual.
    let data = data_records(&log);
    assert!(
        !data
            .iter()
            .any(|(_, _, v)| v.as_deref().is_some_and(|v| v.starts_with('a'))),
        "{data:?}"
    );
    let keyed: BTreeMap<_, _> = latest(&data)
        .into_iter()
        .filter(|(k, _)| k.starts_with('k'))
        .collect();
    let expected: BTreeMap<String, (i64, Option<String>)> = [
        ("k0", (c1, Some("c1"))),
        ("k1", (c1 + 1, Some("c1"))),
        ("k2", (2, Some("v0"))),
        ("k3", (3, Some("v0"))),
    ]
    .into_iter()
    .map(|(k, (o, v))| (k.to_string(), (o, v.map(str::to_string))))
    .collect();
    assert_eq!(keyed, expected);
    assert_eq!(
        data.iter().filter(|r| r.1.starts_with('k')).count(),
        4,
        "{data:?}"
    );
    // Every marker stays: each transaction still had data in this pass.
    assert_eq!(
        markers(&log),
        vec![
            (commit1, 100, ControlType::Commit),
            (abort2, 200, ControlType::Abort),
            (abort1, 100, ControlType::Abort),
        ]
    );
    // The aborted transactions are still reported, from the cleaned segment's index.
    let aborted = log.aborted_transactions(0, leo).unwrap();
    let spans: Vec<(i64, i64, i64)> = aborted
        .iter()
        .map(|t| (t.producer_id, t.first_offset, t.last_offset))
        .collect();
    assert_eq!(spans, vec![(200, a2, abort2), (100, a1, abort1)]);
    assert_eq!(latest(&read_committed(&log, leo)), committed_before);
    assert_eq!(replay(&log), replay_before);

    // The same after a restart, also one that rebuilds the producer state from the log:
    // both producers are known, with no transaction left open.
    log.close().unwrap();
    forget_producer_snapshots(dir.path());
    let log = Log::open(dir.path(), config(), NOW).unwrap();
    assert_eq!(log.aborted_transactions(0, leo).unwrap(), aborted);
    assert_eq!(latest(&read_committed(&log, leo)), committed_before);
    assert_eq!(replay(&log), replay_before);
    assert_eq!(log.last_stable_offset(leo), leo, "no transaction is open");
    for pid in [100, 200] {
        let e = log.producer_state().producer(pid).expect("producer known");
        assert_eq!(e.current_txn_first_offset, None);
    }
}

#[test]
fn markers_stay_while_their_data_do_then_go_after_the_delete_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    let (mut p1, mut p2) = (TxnProducer::new(100), TxnProducer::new(200));
    p1.send(&mut log, &[("k0", Some("c1")), ("k1", Some("c1"))]);
    let commit1 = p1.end(&mut log, ControlType::Commit);
    let a1 = p1.send(&mut log, &[("k1", Some("a1"))]);
    let abort1 = p1.end(&mut log, ControlType::Abort);
    p2.send(&mut log, &[("k2", Some("a2"))]);
    let abort2 = p2.end(&mut log, ControlType::Abort);
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    assert_eq!(markers(&log).len(), 3);

    // Round 2: plain values shadow the committed transaction's records. Its batch is read
    // (and dropped) in this pass, so its commit marker stays once more. The aborted
    // transactions' batches stay as empty batches: each is its producer's last, which the
    // producer state needs, so their abort markers stay for good.
    put(&mut log, "k0", Some("v2"));
    put(&mut log, "k1", Some("v2"));
    seal(&mut log);
    clean_round(&mut log, &mut cleaner, NOW + 1).expect("due");
    assert_eq!(markers(&log).len(), 3);
    let aborted = log.aborted_transactions(0, log.log_end_offset()).unwrap();
    assert_eq!(
        aborted
            .iter()
            .map(|t| (t.producer_id, t.first_offset, t.last_offset))
            .collect::<Vec<_>>(),
        vec![(100, a1, abort1), (200, 5, abort2)]
    );

    // Round 3: no data of the committed transaction is left: its marker gets a delete
    // horizon. Round 4, past the horizon, removes it with no new dirt needed.
    put(&mut log, "k9", Some("v"));
    seal(&mut log);
    let out = clean_round(&mut log, &mut cleaner, NOW + 2).expect("due");
    assert!(matches!(out, SwapOutcome::Swapped { .. }));
    assert_eq!(markers(&log).len(), 3, "kept until the horizon");
    assert!(log.cleanable(NOW + 2 + RETENTION - 1, i64::MAX).is_none());
    let snap = log
        .cleanable(NOW + 2 + RETENTION, i64::MAX)
        .expect("horizon due");
    let cleaned = cleaner.clean(&snap, NOW + 2 + RETENTION).unwrap();
    assert_eq!(cleaned.stats.markers_removed, 1);
    log.swap_cleaned(cleaned).unwrap();
    assert_eq!(
        markers(&log),
        vec![
            (abort1, 100, ControlType::Abort),
            (abort2, 200, ControlType::Abort)
        ]
    );
    assert!(!markers(&log).iter().any(|m| m.0 == commit1));
    // What is left still replays and rebuilds to the same state.
    let state = replay(&log);
    assert_eq!(state["k0"].1, "v2");
    log.close().unwrap();
    forget_producer_snapshots(dir.path());
    let log = Log::open(dir.path(), config(), NOW).unwrap();
    let leo = log.log_end_offset();
    assert_eq!(log.last_stable_offset(leo), leo);
    assert_eq!(replay(&log), state);
    let p1_state = log.producer_state().producer(100).expect("p1 known");
    assert_eq!(p1_state.batches.back().map(|b| b.last_seq), Some(2));
}

#[test]
fn nothing_at_or_above_the_last_stable_offset_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    updates(&mut log, 2, 20);
    let mut p = TxnProducer::new(300);
    let open = p.send(&mut log, &[("k0", Some("open"))]);
    let after = updates(&mut log, 2, 30);
    seal(&mut log);
    let leo = log.log_end_offset();
    assert_eq!(log.last_stable_offset(leo), open);
    let snap = log.cleanable(NOW, leo).expect("dirty below the LSO");
    assert!(snap.first_uncleanable_offset() <= open);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    let cleaned = cleaner.clean(&snap, NOW).unwrap();
    assert!(cleaned.first_dirty_offset() <= open);
    log.swap_cleaned(cleaned).unwrap();
    // The undecided record and everything after it are untouched.
    let data = data_records(&log);
    assert!(data.contains(&(open, "k0".into(), Some("open".into()))));
    assert_eq!(
        data.iter()
            .filter(|r| r.0 >= open && r.1.starts_with('k'))
            .count(),
        61,
        "{data:?}"
    );
    assert!(
        log.cleanable(NOW, leo).is_none(),
        "nothing more until the transaction ends"
    );

    // Once it is decided (and the HW passed the marker), the rest is cleaned; the
    // committed record is shadowed by the later plain values.
    p.end(&mut log, ControlType::Commit);
    seal(&mut log);
    let leo = log.log_end_offset();
    assert_eq!(log.last_stable_offset(leo), leo);
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    let keyed: Vec<_> = data_records(&log)
        .into_iter()
        .filter(|r| r.1.starts_with('k'))
        .collect();
    assert_eq!(keyed.len(), 2, "{keyed:?}");
    for (o, k, v) in keyed {
        assert_eq!(after[&k], (o, v.unwrap()));
    }
}

/// One step of the transactional model test.
#[derive(Clone, Debug)]
enum Step {
    Plain(u8, Option<u16>),
    /// A transactional record of producer `0..3`.
    Txn(usize, u8, Option<u16>),
    /// Ends producer `0..3`'s transaction (commit when true), if it has one.
    End(usize, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let value = proptest::option::weighted(0.85, 0u16..1000);
    prop_oneof![
        3 => (0u8..6, value.clone()).prop_map(|(k, v)| Step::Plain(k, v)),
        4 => (0usize..3, 0u8..6, value).prop_map(|(p, k, v)| Step::Txn(p, k, v)),
        2 => (0usize..3, proptest::bool::weighted(0.6)).prop_map(|(p, c)| Step::End(p, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// `__consumer_offsets`-like use: interleaved plain writes and transactions of three
    /// producers, committed or aborted. After every cleaning round (before and after the
    /// delete horizons) the replay gives the same committed state as before cleaning, a
    /// read_committed reader sees the same latest values, no aborted value is readable at
    /// all, and a restart that rebuilds the producer state from the log leaves no
    /// transaction open.
    #[test]
    fn transactional_compaction_keeps_the_committed_state(steps in proptest::collection::vec(step(), 1..80),
                                                         segment_bytes in 400u64..1500,
                                                         small_map in proptest::bool::ANY) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes, ..config() };
        let mut log = Log::open(dir.path(), cfg.clone(), NOW).unwrap();
        let mut producers: Vec<TxnProducer> = (0..3).map(|i| TxnProducer::new(500 + i)).collect();
        let mut open = [false; 3];
        let mut aborted_values = HashSet::new();
        let mut pending: [Vec<String>; 3] = Default::default();
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Plain(k, v) => {
                    put(&mut log, &format!("k{k}"), v.map(|v| format!("p{v}")).as_deref());
                }
                Step::Txn(p, k, v) => {
                    // Unique values, so an aborted one can be recognised anywhere.
                    let value = v.map(|v| format!("t{i}-{v}"));
                    producers[*p].send(&mut log, &[(&format!("k{k}"), value.as_deref())]);
                    pending[*p].extend(value);
                    open[*p] = true;
                }
                Step::End(p, commit) => {
                    if open[*p] {
                        let c = if *commit { ControlType::Commit } else { ControlType::Abort };
                        producers[*p].end(&mut log, c);
                        if !*commit {
                            aborted_values.extend(pending[*p].drain(..));
                        }
                        pending[*p].clear();
                        open[*p] = false;
                    }
                }
            }
        }
        for p in 0..3 {
            if open[p] {
                producers[p].end(&mut log, ControlType::Abort);
                aborted_values.extend(pending[p].drain(..));
            }
        }
        seal(&mut log);
        let leo = log.log_end_offset();
        let state = replay(&log);
        let committed = |log: &Log| -> BTreeMap<String, Option<String>> {
            latest(&read_committed(log, leo))
                .into_iter()
                .filter(|(k, _)| k.starts_with('k'))
                .filter_map(|(k, (_, v))| v.map(|v| (k, Some(v))))
                .collect()
        };
        let committed_before = committed(&log);
        // A small key map makes rounds stop part way (the rest is cleaned by later rounds).
        let mut cleaner = Cleaner::new(CleanerConfig {
            dedupe_buffer_bytes: if small_map { 24 * 20 } else { 1 << 20 },
            ..CleanerConfig::default()
        });
        for now in [NOW, NOW + 1, NOW + RETENTION + 2, NOW + 2 * RETENTION + 3] {
            // Every round has something dirty, so the markers' life cycle moves on.
            put(&mut log, "filler-round", Some("x"));
            seal(&mut log);
            clean_round(&mut log, &mut cleaner, now);
            prop_assert_eq!(&replay(&log), &state);
            prop_assert_eq!(&committed(&log), &committed_before);
            let readable = data_records(&log);
            prop_assert!(
                !readable.iter().any(|(_, _, v)| v.as_ref().is_some_and(|v| aborted_values.contains(v))),
                "aborted value readable: {:?}", readable
            );
        }
        log.close().unwrap();
        forget_producer_snapshots(dir.path());
        let log = Log::open(dir.path(), cfg, NOW).unwrap();
        let leo = log.log_end_offset();
        prop_assert_eq!(log.last_stable_offset(leo), leo);
        prop_assert_eq!(&replay(&log), &state);
    }
}

#[test]
fn a_crash_mid_swap_keeps_the_aborted_transaction_index() {
    // 0: crash before the commit; 1: right after it; 2: after the old segments were renamed
    // `.deleted` too, before the final renames.
    for stage in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(), NOW).unwrap();
        let mut p = TxnProducer::new(100);
        let first = p.send(&mut log, &[("k0", Some("a")), ("k1", Some("a"))]);
        updates(&mut log, 2, 3);
        let abort = p.end(&mut log, ControlType::Abort);
        updates(&mut log, 2, 40);
        seal(&mut log);
        let leo = log.log_end_offset();
        let expected = vec![(100, first, abort)];
        let spans = |log: &Log| -> Vec<(i64, i64, i64)> {
            log.aborted_transactions(0, leo)
                .unwrap()
                .iter()
                .map(|t| (t.producer_id, t.first_offset, t.last_offset))
                .collect()
        };
        assert_eq!(spans(&log), expected);
        let mut cleaner = Cleaner::new(CleanerConfig::default());
        let snap = log.cleanable(NOW, leo).unwrap();
        let cleaned = cleaner.clean(&snap, NOW).unwrap();
        let g = &cleaned.groups[0];
        assert_eq!(g.base_offset, 0);
        assert_eq!(g.aborted_txns.len(), 1, "the kept abort marker's entry");
        if stage > 0 {
            crate::segment_swap::commit(dir.path(), g.base_offset, g.end_offset).unwrap();
            if stage == 2 {
                for (base, _) in &g.sources {
                    for suffix in ["log", "index", "timeindex", "txnindex"] {
                        let from = dir.path().join(format!("{base:020}.{suffix}"));
                        match fs::rename(&from, format!("{}.deleted", from.display())) {
                            Err(e) if suffix != "log" && e.kind() == io::ErrorKind::NotFound => {}
                            r => r.unwrap(),
                        }
                    }
                }
            }
        }
        std::mem::forget(cleaned);
        drop(snap);
        drop(log);
        let log = Log::open(dir.path(), config(), NOW).unwrap();
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(spans(&log), expected, "stage {stage}");
        let data = data_records(&log);
        let aborted_left = data.iter().any(|r| r.2.as_deref() == Some("a"));
        assert_eq!(aborted_left, stage == 0, "stage {stage}: {data:?}");
        assert!(!read_committed(&log, leo)
            .iter()
            .any(|r| r.2.as_deref() == Some("a")));
        assert_eq!(markers(&log), vec![(abort, 100, ControlType::Abort)]);
    }
}

#[test]
fn a_producers_committed_transaction_after_its_aborted_one_compacts_in_a_later_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), NOW).unwrap();
    let mut p = TxnProducer::new(100);
    p.send(&mut log, &[("k0", Some("a"))]);
    p.end(&mut log, ControlType::Abort);
    seal(&mut log);
    let mut cleaner = Cleaner::new(CleanerConfig::default());
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    // The abort marker (and its index entry) stay; the offset map of the next round starts
    // past it, so the producer's next, committed, transaction must not count as aborted.
    let old = put(&mut log, "k1", Some("old"));
    let new = p.send(&mut log, &[("k1", Some("new"))]);
    p.end(&mut log, ControlType::Commit);
    seal(&mut log);
    let snap = log.cleanable(NOW, i64::MAX).expect("dirty");
    assert!(snap.first_dirty_offset() > 0);
    assert_eq!(log.aborted_transactions(0, old).unwrap().len(), 1);
    clean_round(&mut log, &mut cleaner, NOW).expect("due");
    let k1: Vec<_> = data_records(&log)
        .into_iter()
        .filter(|r| r.1 == "k1")
        .collect();
    assert_eq!(k1, vec![(new, "k1".to_string(), Some("new".to_string()))]);
}
