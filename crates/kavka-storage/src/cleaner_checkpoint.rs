//! The cleaner checkpoint of one log (Kafka's `cleaner-offset-checkpoint`, kept per partition
//! directory here): the first dirty offset, below which the log has been cleaned. Losing or
//! damaging it only makes the next round clean the whole log again, never loses data.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use tracing::warn;

const FILE: &str = "cleaner-offset.checkpoint";
const TMP: &str = "cleaner-offset.checkpoint.tmp";
const HEADER: &str = "kavka-cleaner-checkpoint 1";

/// The stored first dirty offset; `None` when absent or unreadable.
pub(crate) fn read(dir: &Path) -> io::Result<Option<i64>> {
    let text = match fs::read(dir.join(FILE)) {
        Ok(bytes) if bytes.len() <= 256 => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(_) => String::new(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let parsed = parse(&text);
    if parsed.is_none() {
        warn!(dir = %dir.display(), "unreadable cleaner checkpoint; the whole log counts as dirty");
    }
    Ok(parsed)
}

fn parse(text: &str) -> Option<i64> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let value: i64 = lines
        .next()?
        .strip_prefix("first-dirty-offset ")?
        .trim()
        .parse()
        .ok()?;
    (value >= 0).then_some(value)
}

/// Writes the checkpoint atomically (temp file, fsync, rename, fsync the directory).
pub(crate) fn write(dir: &Path, first_dirty_offset: i64) -> io::Result<()> {
    let tmp = dir.join(TMP);
    {
        let mut f = File::create(&tmp)?;
        write!(f, "{HEADER}\nfirst-dirty-offset {first_dirty_offset}\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(FILE))?;
    crate::checkpoint::sync_dir(dir)
}

/// Leftover of an interrupted write.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name == TMP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), 42).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(42));
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
