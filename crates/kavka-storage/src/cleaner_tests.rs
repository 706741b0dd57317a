//! Log compaction through the public API: latest value per key, preserved offsets, reads
//! across the gaps, tombstone expiry, crash in the middle of a swap, abort when the log
//! changed, idempotent producer state, corrupt data, a bounded key map, and a model test.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record};
use kavka_protocol::records::{decode_batches_detailed, encode_batch, plain_record};
use proptest::prelude::*;

use crate::{Cleaner, CleanerConfig, CleanerError, Log, LogConfig, StorageError, SwapOutcome};

const NOW: i64 = 1_000_000;
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
