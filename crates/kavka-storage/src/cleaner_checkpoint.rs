//! The cleaner checkpoint of one log (Kafka's `cleaner-offset-checkpoint`, kept per partition
//! directory here): the first dirty offset, below which the log has been cleaned, and the
//! earliest delete horizon of the tombstones kept, so a restart does not postpone their
//! removal. Losing or damaging it only makes the next round clean the whole log again, never
//! loses data.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use tracing::warn;

const FILE: &str = "cleaner-offset.checkpoint";
const TMP: &str = "cleaner-offset.checkpoint.tmp";
const HEADER: &str = "kavka-cleaner-checkpoint 1";
/// Larger than any checkpoint we write (a header and two numbers).
const MAX_BYTES: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanerCheckpoint {
    pub first_dirty_offset: i64,
    pub delete_horizon: Option<i64>,
}

/// The stored checkpoint; `None` when absent or unreadable.
pub(crate) fn read(dir: &Path) -> io::Result<Option<CleanerCheckpoint>> {
    let file = match File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Read at most one byte past the limit: a huge file is damage, not something to load.
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    let text = if bytes.len() as u64 <= MAX_BYTES {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        String::new()
    };
    let parsed = parse(&text);
    if parsed.is_none() {
        warn!(dir = %dir.display(), "unreadable cleaner checkpoint; the whole log counts as dirty");
    }
    Ok(parsed)
}

fn parse(text: &str) -> Option<CleanerCheckpoint> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let first_dirty_offset: i64 = lines
        .next()?
        .strip_prefix("first-dirty-offset ")?
        .trim()
        .parse()
        .ok()?;
    let delete_horizon = match lines.next() {
        None => None,
        Some(l) => Some(l.strip_prefix("delete-horizon ")?.trim().parse().ok()?),
    };
    (first_dirty_offset >= 0).then_some(CleanerCheckpoint {
        first_dirty_offset,
        delete_horizon,
    })
}

/// Writes the checkpoint atomically (temp file, fsync, rename, fsync the directory).
pub(crate) fn write(dir: &Path, cp: CleanerCheckpoint) -> io::Result<()> {
    let mut text = format!("{HEADER}\nfirst-dirty-offset {}\n", cp.first_dirty_offset);
    if let Some(h) = cp.delete_horizon {
        text.push_str(&format!("delete-horizon {h}\n"));
    }
    crate::checkpoint::write_atomic(dir, TMP, FILE, text.as_bytes())
}

/// Leftover of an interrupted write.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name == TMP
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let cp = CleanerCheckpoint {
            first_dirty_offset: 42,
            delete_horizon: None,
        };
        write(dir.path(), cp).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(cp));
        let cp = CleanerCheckpoint {
            first_dirty_offset: 43,
            delete_horizon: Some(-5),
        };
        write(dir.path(), cp).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(cp));
        fs::write(
            dir.path().join(FILE),
            b"kavka-cleaner-checkpoint 1\nfirst-dirty-offset x",
        )
        .unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        fs::write(dir.path().join(FILE), vec![b'7'; 1000]).unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        assert_eq!(
            parse("kavka-cleaner-checkpoint 1\nfirst-dirty-offset -1\n"),
            None
        );
    }
}
