//! The storage shared by the offset and time indexes: fixed-size big-endian entries kept in
//! memory (no mmap) and appended to the index file as they are added. The file is only read
//! back when a segment is opened; a trailing partial entry (torn write) is ignored.

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::unix::fs::FileExt;

/// One on-disk index entry of `SIZE` bytes.
pub(crate) trait IndexEntry: Copy {
    const SIZE: usize;
    /// Writes the entry into `out`, which holds exactly `SIZE` bytes.
    fn encode_into(&self, out: &mut [u8]);
    /// Reads an entry from `bytes`, which holds exactly `SIZE` bytes.
    fn decode(bytes: &[u8]) -> Self;

    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        self.encode_into(&mut b);
        b
    }
}

#[derive(Debug)]
pub(crate) struct IndexEntries<E> {
    entries: Vec<E>,
}

impl<E: IndexEntry> IndexEntries<E> {
    pub(crate) fn new() -> Self {
        IndexEntries {
            entries: Vec::new(),
        }
    }

    /// Parses file contents, ignoring a trailing partial entry.
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        IndexEntries {
            entries: bytes.chunks_exact(E::SIZE).map(E::decode).collect(),
        }
    }

    /// Adds an entry in memory and, when `file` is given, appends it to the file.
    pub(crate) fn push(&mut self, entry: E, file: Option<&File>) -> io::Result<()> {
        if let Some(f) = file {
            f.write_all_at(&entry.encode(), (self.entries.len() * E::SIZE) as u64)?;
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Keeps the first `keep` entries, in memory and (when given) in the file.
    pub(crate) fn truncate(&mut self, keep: usize, file: Option<&File>) -> io::Result<()> {
        self.entries.truncate(keep);
        if let Some(f) = file {
            f.set_len((self.entries.len() * E::SIZE) as u64)?;
        }
        Ok(())
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.entries.len() * E::SIZE];
        for (e, chunk) in self.entries.iter().zip(out.chunks_exact_mut(E::SIZE)) {
            e.encode_into(chunk);
        }
        out
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }
}

impl<E> Deref for IndexEntries<E> {
    type Target = [E];

    fn deref(&self) -> &[E] {
        &self.entries
    }
}
