//! fsync work taken out of the partition lock: the broker gets a `FlushJob` under the lock,
//! runs it on a blocking thread, then reports back with `Log::complete_flush`. One job covers
//! every batch appended before it was taken (group commit).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug)]
pub struct FlushJob {
    pub(crate) files: Vec<Arc<File>>,
    /// Set when segments were created since the last durable point: their directory entries
    /// must be made durable too.
    pub(crate) dir: Option<PathBuf>,
    /// Every offset below this is durable once `run` succeeds.
    pub up_to_offset: i64,
}

impl FlushJob {
    /// fsyncs the segment files (data first), their indexes and, if needed, the directory.
    pub fn run(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
