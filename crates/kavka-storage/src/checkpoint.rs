//! Per-partition checkpoint of the log start offset and the recovery point, and the
//! clean-shutdown marker. Written atomically: temp file, fsync, rename, fsync the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use tracing::warn;

const CHECKPOINT_FILE: &str = "partition.checkpoint";
const CHECKPOINT_TMP: &str = "partition.checkpoint.tmp";
/// Present only between a clean `close` and the next `open`.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".kavka_cleanshutdown";
const HEADER: &str = "kavka-partition-checkpoint 1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub log_start_offset: i64,
    pub recovery_point: i64,
}

/// Reads the checkpoint; a missing or unreadable one yields `None` (recover everything).
pub(crate) fn read(dir: &Path) -> io::Result<Option<Checkpoint>> {
    let text = match fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(bytes) if bytes.len() <= 4096 => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let parsed = parse(&text);
    if parsed.is_none() {
        warn!(dir = %dir.display(), "unreadable partition checkpoint; recovering the whole log");
    }
    Ok(parsed)
}

fn parse(text: &str) -> Option<Checkpoint> {
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut lso = None;
    let mut rp = None;
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        let value: i64 = value.trim().parse().ok()?;
        match key {
            "log-start-offset" => lso = Some(value),
            "recovery-point" => rp = Some(value),
            _ => {}
        }
    }
    let (log_start_offset, recovery_point) = (lso?, rp?);
    (log_start_offset >= 0 && recovery_point >= 0).then_some(Checkpoint {
        log_start_offset,
        recovery_point,
    })
}

pub(crate) fn write(dir: &Path, cp: Checkpoint) -> io::Result<()> {
    let text = format!(
        "{HEADER}\nlog-start-offset {}\nrecovery-point {}\n",
        cp.log_start_offset, cp.recovery_point
    );
    write_atomic(dir, CHECKPOINT_TMP, CHECKPOINT_FILE, text.as_bytes())
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old file or the new one,
/// never a torn one: write `dir/tmp`, fsync, rename over `name`, fsync the directory.
pub(crate) fn write_atomic(dir: &Path, tmp: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn has_clean_shutdown_marker(dir: &Path) -> bool {
    dir.join(CLEAN_SHUTDOWN_FILE).exists()
}

pub(crate) fn write_clean_shutdown_marker(dir: &Path) -> io::Result<()> {
    File::create(dir.join(CLEAN_SHUTDOWN_FILE))?.sync_all()?;
    sync_dir(dir)
}

/// Removes the marker durably: once the log is open for appends, a crash must not find it.
pub(crate) fn remove_clean_shutdown_marker(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Leftovers of an interrupted checkpoint write.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name == CHECKPOINT_TMP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let cp = Checkpoint {
            log_start_offset: 5,
            recovery_point: 42,
        };
        write(dir.path(), cp).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(cp));
        fs::write(dir.path().join(CHECKPOINT_FILE), b"junk\x00\xff").unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        assert_eq!(
            parse("kavka-partition-checkpoint 1\nlog-start-offset -3\nrecovery-point 1\n"),
            None
        );
    }
}
