//! The crash-safe replacement of old segments by a cleaned one (Kafka's `.cleaned` /
//! `.swap` protocol).
//!
//! 1. The cleaner writes `<B>.log.cleaned`, `<B>.index.cleaned`, `<B>.timeindex.cleaned`
//!    and, when the cleaned segment keeps aborted transactions, `<B>.txnindex.cleaned`, all
//!    fsynced. A crash now leaves only `.cleaned` files, which recovery deletes.
//! 2. Commit: `<B>.log.cleaned` is renamed to `<B>.log.<E>.swap` and the directory fsynced,
//!    `<E>` being the first offset past the replaced segments. From here on recovery finishes
//!    the swap: it deletes every segment whose base offset is in `[B, E)`, then renames the
//!    swap file to `<B>.log`, after `<B>.txnindex.cleaned`, if any, became `<B>.txnindex`
//!    (the offset and time indexes are rebuilt when first used; the aborted transactions
//!    cannot be, so that file is kept).
//! 3. The old segments are renamed `.deleted`, the swap and index files take their final
//!    names.
//!
//! Unlike Kafka's `<B>.log.swap`, the name carries `E`: the cleaned segment may end before
//! the replaced ones did (its last batches were cleaned away), so its own contents cannot say
//! which old segments it replaces.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::checkpoint::sync_dir;
use crate::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::txn_index::TXN_INDEX_SUFFIX;

pub(crate) const CLEANED: &str = "cleaned";
const SWAP: &str = "swap";

/// `<B>.<suffix>.cleaned`.
pub(crate) fn cleaned_path(dir: &Path, base: i64, suffix: &str) -> PathBuf {
    segment_path(dir, base, &format!("{suffix}.{CLEANED}"))
}

fn swap_path(dir: &Path, base: i64, end: i64) -> PathBuf {
    segment_path(dir, base, &format!("{LOG_SUFFIX}.{end:020}.{SWAP}"))
}

/// Parses `<B>.log.<E>.swap` into `(B, E)`.
pub(crate) fn parse_swap(name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_suffix(".swap")?;
    let (head, end) = rest.rsplit_once('.')?;
    let base = head.strip_suffix(".log")?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(base) || !digits(end) {
        return None;
    }
    let (base, end): (i64, i64) = (base.parse().ok()?, end.parse().ok()?);
    (base < end).then_some((base, end))
}

pub(crate) fn is_cleaned(name: &str) -> bool {
    name.ends_with(".cleaned")
}

/// Step 2: makes the swap durable. After this the old segments are as good as gone.
pub(crate) fn commit(dir: &Path, base: i64, end: i64) -> io::Result<()> {
    let (cleaned, swap) = (
        cleaned_path(dir, base, LOG_SUFFIX),
        swap_path(dir, base, end),
    );
    fs::rename(&cleaned, &swap)?;
    if let Err(e) = sync_dir(dir) {
        // Not committed after all: a swap file left behind would be applied by recovery
        // even if the log changes before the next start.
        if let Err(back) = fs::rename(&swap, &cleaned) {
            warn!(file = %swap.display(), error = %back, "cannot undo an unsynced swap");
        }
        return Err(e);
    }
    Ok(())
}

/// Step 3 (after the old segments' files were renamed away): final names. The directory is
/// fsynced by the caller once for all groups.
pub(crate) fn finish(dir: &Path, base: i64, end: i64) -> io::Result<()> {
    fs::rename(
        swap_path(dir, base, end),
        segment_path(dir, base, LOG_SUFFIX),
    )?;
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        fs::rename(
            cleaned_path(dir, base, suffix),
            segment_path(dir, base, suffix),
        )?;
    }
    finish_txn_index(dir, base)
}

/// `<B>.txnindex.cleaned` becomes `<B>.txnindex`; without one the cleaned segment has no
/// aborted transactions, and a leftover `<B>.txnindex` (the replaced segment's, if its
/// rename for deletion failed) must not be taken for its index.
fn finish_txn_index(dir: &Path, base: i64) -> io::Result<()> {
    let final_path = segment_path(dir, base, TXN_INDEX_SUFFIX);
    match fs::rename(cleaned_path(dir, base, TXN_INDEX_SUFFIX), &final_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => remove_if_exists(&final_path),
        other => other,
    }
}

/// Removes the `.cleaned` files of a swap that did not happen.
pub(crate) fn discard(dir: &Path, base: i64) {
    for suffix in [
        LOG_SUFFIX,
        INDEX_SUFFIX,
        TIME_INDEX_SUFFIX,
        TXN_INDEX_SUFFIX,
    ] {
        let path = cleaned_path(dir, base, suffix);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(file = %path.display(), error = %e, "cannot remove cleaned segment file");
            }
        }
    }
}

/// On open, before segments are listed: deletes `.cleaned` leftovers and completes every
/// committed swap. Returns whether anything changed.
pub(crate) fn recover(dir: &Path) -> io::Result<bool> {
    let mut swaps = Vec::new();
    let mut changed = false;
    let mut names = Vec::new();
    let mut cleaned = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_cleaned(&name) {
            cleaned.push(name);
        } else if let Some(range) = parse_swap(&name) {
            swaps.push(range);
        } else {
            names.push(name);
        }
    }
    swaps.sort_unstable();
    for (base, end) in swaps {
        warn!(dir = %dir.display(), base, end, "completing a log cleaner swap interrupted by a crash");
        // `<B>.txnindex` is left alone: it may already be the cleaned segment's (moved there
        // by a recovery interrupted before the swap file's rename), and if it is still the
        // replaced segment's, its entries are a subset of the truth for offsets >= B (aborted
        // transactions whose data may have been cleaned away, which consumers skip anyway).
        let own_txn_index = format!("{base:020}.{TXN_INDEX_SUFFIX}");
        for name in &names {
            let replaced = [
                LOG_SUFFIX,
                INDEX_SUFFIX,
                TIME_INDEX_SUFFIX,
                TXN_INDEX_SUFFIX,
            ]
            .iter()
            .filter_map(|s| parse_base(name, s))
            .any(|b| b >= base && b < end);
            if replaced && *name != own_txn_index {
                remove_if_exists(&dir.join(name))?;
            }
        }
        // The committed segment's aborted transactions (written before the commit).
        let txn_name = format!("{base:020}.{TXN_INDEX_SUFFIX}.{CLEANED}");
        if let Some(i) = cleaned.iter().position(|n| *n == txn_name) {
            fs::rename(
                dir.join(cleaned.swap_remove(i)),
                segment_path(dir, base, TXN_INDEX_SUFFIX),
            )?;
        }
        fs::rename(
            swap_path(dir, base, end),
            segment_path(dir, base, LOG_SUFFIX),
        )?;
        changed = true;
    }
    for name in cleaned {
        fs::remove_file(dir.join(name))?;
        changed = true;
    }
    if changed {
        sync_dir(dir)?;
    }
    Ok(changed)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_round_trip() {
        let dir = Path::new("/x");
        let p = swap_path(dir, 5, 77);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000005.log.00000000000000000077.swap");
        assert_eq!(parse_swap(name), Some((5, 77)));
        assert_eq!(parse_swap("00000000000000000005.log.swap"), None);
        assert_eq!(
            parse_swap("00000000000000000077.log.00000000000000000005.swap"),
            None
        );
        assert!(is_cleaned("00000000000000000005.timeindex.cleaned"));
    }

    /// A committed swap completed by recovery takes the cleaned transaction index along;
    /// a recovery interrupted after moving it (the swap file still there) keeps it.
    #[test]
    fn recovery_carries_the_cleaned_txn_index() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |base: i64, suffix: &str, body: &str| {
            fs::write(segment_path(d, base, suffix), body).unwrap();
        };
        write(0, LOG_SUFFIX, "old0");
        write(0, TXN_INDEX_SUFFIX, "old0-txn");
        write(5, LOG_SUFFIX, "old5");
        write(5, TXN_INDEX_SUFFIX, "old5-txn");
        write(10, LOG_SUFFIX, "next");
        fs::write(swap_path(d, 0, 10), "cleaned").unwrap();
        fs::write(cleaned_path(d, 0, TXN_INDEX_SUFFIX), "cleaned-txn").unwrap();
        fs::write(cleaned_path(d, 0, INDEX_SUFFIX), "x").unwrap();
        assert!(recover(d).unwrap());
        let read = |base: i64, suffix: &str| fs::read_to_string(segment_path(d, base, suffix)).ok();
        assert_eq!(read(0, LOG_SUFFIX).as_deref(), Some("cleaned"));
        assert_eq!(read(0, TXN_INDEX_SUFFIX).as_deref(), Some("cleaned-txn"));
        assert_eq!(read(5, LOG_SUFFIX), None);
        assert_eq!(read(5, TXN_INDEX_SUFFIX), None);
        assert_eq!(read(10, LOG_SUFFIX).as_deref(), Some("next"));
        assert!(!cleaned_path(d, 0, INDEX_SUFFIX).exists());
        // Interrupted after the txn index moved: the swap is redone, the index kept.
        fs::write(swap_path(d, 0, 10), "cleaned2").unwrap();
        assert!(recover(d).unwrap());
        assert_eq!(read(0, LOG_SUFFIX).as_deref(), Some("cleaned2"));
        assert_eq!(read(0, TXN_INDEX_SUFFIX).as_deref(), Some("cleaned-txn"));
    }
}
