//! Loading a partition directory on open (Kafka's `LogLoader`).
//!
//! After a clean shutdown the files are trusted: only the active segment's tail past its last
//! index entry is walked to find the log end, so a restart is cheap whatever the log size.
//! Otherwise every batch from the segment holding the recovery point onwards is validated
//! (length, CRC-32C, offset order); the first bad batch and everything after it is cut off —
//! a torn write loses only data that was never fsynced — and those segments' indexes are
//! rebuilt. Segments below the recovery point are trusted, but an index that does not fit
//! its log is rebuilt when first used.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io;
use std::path::Path;

use tracing::{debug, warn};

use crate::checkpoint::{self, Checkpoint};
use crate::segment::{segment_path, LogSegment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::txn_index::TXN_INDEX_SUFFIX;
use crate::{LogConfig, StorageError};

pub(crate) struct Loaded {
    pub segments: VecDeque<LogSegment>,
    pub log_start_offset: i64,
    pub recovery_point: i64,
    /// The checkpoint as found on disk, to skip rewriting an unchanged one.
    pub checkpoint_on_disk: Option<Checkpoint>,
    /// The previous shutdown was clean (its marker was present).
    pub clean: bool,
}

/// Parses `<20 digits>.<suffix>` into a base offset.
fn parse_base(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_segment_files(dir: &Path, base: i64) -> io::Result<()> {
    for suffix in [
        LOG_SUFFIX,
        INDEX_SUFFIX,
        TIME_INDEX_SUFFIX,
        TXN_INDEX_SUFFIX,
    ] {
        remove_if_exists(&segment_path(dir, base, suffix))?;
    }
    Ok(())
}

pub(crate) fn load(dir: &Path, config: &LogConfig, now_ms: i64) -> Result<Loaded, StorageError> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            checkpoint::sync_dir(parent)?;
        }
    }
    // A log cleaner swap cut short by a crash: finish it (or drop its unfinished files)
    // before the segments are listed.
    crate::segment_swap::recover(dir)?;
    let clean = checkpoint::has_clean_shutdown_marker(dir);
    let checkpoint_on_disk = checkpoint::read(dir)?;

    let mut bases = BTreeSet::new();
    let mut index_bases = BTreeSet::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".deleted")
            || checkpoint::is_temp_file(name)
            || crate::producer_state::is_temp_file(name)
            || crate::cleaner_checkpoint::is_temp_file(name)
            || crate::leader_epoch::is_temp_file(name)
        {
            // Deletions and checkpoint writes interrupted by the shutdown: finish them.
            remove_if_exists(&entry.path())?;
        } else if let Some(base) = parse_base(name, LOG_SUFFIX) {
            bases.insert(base);
        } else if let Some(base) = parse_base(name, INDEX_SUFFIX)
            .or_else(|| parse_base(name, TIME_INDEX_SUFFIX))
            .or_else(|| parse_base(name, TXN_INDEX_SUFFIX))
        {
            index_bases.insert(base);
        }
    }
    for orphan in index_bases.difference(&bases) {
        remove_segment_files(dir, *orphan)?;
    }

    let mut log_start_offset = checkpoint_on_disk
        .map(|c| c.log_start_offset)
        .unwrap_or_else(|| bases.first().copied().unwrap_or(0));
    // Segments wholly below the log start offset were deleted before the crash; a deletion
    // whose directory update was not yet durable can bring them back.
    let all: Vec<i64> = bases.iter().copied().collect();
    let mut kept = Vec::with_capacity(all.len());
    for (i, base) in all.iter().enumerate() {
        match all.get(i + 1) {
            Some(next) if *next <= log_start_offset => remove_segment_files(dir, *base)?,
            _ => kept.push(*base),
        }
    }

    // Index of the first segment to validate batch by batch.
    let mut recover_from = if clean {
        kept.len()
    } else {
        let rp = checkpoint_on_disk.map_or(0, |c| c.recovery_point);
        kept.iter().rposition(|b| *b <= rp).unwrap_or(0)
    };

    let mut segments: VecDeque<LogSegment> = VecDeque::with_capacity(kept.len());
    for (i, base) in kept.iter().enumerate() {
        let next_upper = kept.get(i + 1).copied().unwrap_or(i64::MAX);
        if i < recover_from {
            match LogSegment::open_existing(dir, *base, next_upper) {
                Ok(seg) => {
                    segments.push_back(seg);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    warn!(dir = %dir.display(), base, error = %e, "trusted segment is corrupt; recovering from it");
                    recover_from = i;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut seg = LogSegment::open_unchecked(dir, *base)?;
        let outcome = seg.recover(config.index_interval_bytes, now_ms)?;
        if let Some(why) = outcome.stopped {
            warn!(dir = %dir.display(), base, valid_bytes = outcome.valid_size, %why, "truncated the log at the first invalid batch");
            let is_empty_tail = seg.size() == 0 && !segments.is_empty();
            if is_empty_tail {
                drop(seg);
                remove_segment_files(dir, *base)?;
            } else {
                segments.push_back(seg);
            }
            for later in kept.iter().skip(i + 1) {
                warn!(dir = %dir.display(), base = *later, "deleting a segment after the truncation point");
                remove_segment_files(dir, *later)?;
            }
            break;
        }
        segments.push_back(seg);
    }

    // The active segment: recovered segments are ready; a trusted one must find its end.
    let mut needs_recovery = false;
    if let Some(last) = segments.back_mut() {
        if last.index_files().is_none() {
            if let Err(why) = last.activate(now_ms)? {
                warn!(dir = %dir.display(), base = last.base_offset(), %why, "active segment tail is inconsistent; recovering it");
                needs_recovery = true;
            }
        }
    }
    if needs_recovery {
        if let Some(last) = segments.pop_back() {
            let base = last.base_offset();
            drop(last);
            let mut seg = LogSegment::open_unchecked(dir, base)?;
            seg.recover(config.index_interval_bytes, now_ms)?;
            segments.push_back(seg);
        }
    }

    let mut log_end = segments
        .back()
        .map_or(log_start_offset, |s| s.next_offset());
    if log_start_offset > log_end {
        // Everything the checkpoint still references is gone: start afresh at the log start.
        warn!(dir = %dir.display(), log_start_offset, log_end, "log start offset beyond the log end; starting an empty log there");
        for seg in segments.drain(..) {
            let base = seg.base_offset();
            drop(seg);
            remove_segment_files(dir, base)?;
        }
        log_end = log_start_offset;
    }
    if segments.is_empty() {
        segments.push_back(LogSegment::create(dir, log_end, now_ms)?);
        checkpoint::sync_dir(dir)?;
    }
    if let Some(first) = segments.front() {
        log_start_offset = log_start_offset.max(first.base_offset());
    }
    let recovery_point = if clean {
        log_end
    } else {
        checkpoint_on_disk
            .map_or(0, |c| c.recovery_point)
            .min(log_end)
    };
    debug!(dir = %dir.display(), clean, segments = segments.len(), log_start_offset, log_end, "log loaded");
    Ok(Loaded {
        segments,
        log_start_offset,
        recovery_point,
        checkpoint_on_disk,
        clean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_kafka_segment_names() {
        assert_eq!(parse_base("00000000000000000042.log", "log"), Some(42));
        assert_eq!(parse_base("00000000000000000042.index", "log"), None);
        assert_eq!(parse_base("42.log", "log"), None);
        assert_eq!(parse_base("0000000000000000004x.log", "log"), None);
        assert_eq!(parse_base("00000000000000000042.log.deleted", "log"), None);
    }
}
