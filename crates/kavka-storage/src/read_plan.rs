//! What a fetch will read, decided under the partition lock and executed outside it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// A contiguous byte range of one segment file.
#[derive(Clone, Debug)]
pub struct ReadChunk {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

/// Whole batches to read: chunks of segment files (one per segment touched). The files are
/// held open, so the plan stays valid even if retention deletes the segments meanwhile.
#[derive(Clone, Debug, Default)]
pub struct ReadPlan {
    chunks: Vec<ReadChunk>,
    len: usize,
}

impl ReadPlan {
    pub(crate) fn push(&mut self, file: Arc<File>, position: u64, len: usize) {
        if len > 0 {
            self.len += len;
            self.chunks.push(ReadChunk {
                file,
                position,
                len,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes the plan reads.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The file ranges, e.g. for sendfile.
    pub fn chunks(&self) -> &[ReadChunk] {
        &self.chunks
    }

    /// Reads the planned bytes with positional reads; needs no lock on the log.
    pub fn execute(&self) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(self.len);
        let mut at = 0usize;
        for c in &self.chunks {
            let dst = buf
                .get_mut(at..at + c.len)
                .ok_or_else(|| io::Error::other("read plan chunks exceed the plan length"))?;
            c.file.read_exact_at(dst, c.position)?;
            at += c.len;
        }
        Ok(buf.freeze())
    }
}
