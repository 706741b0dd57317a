//! The sparse offset index of one segment: `(relative offset u32, position u32)` pairs, both
//! strictly increasing, one every `index.interval.bytes` of log. Each entry points at the start
//! of the batch whose base offset it names, so a lookup gives a position from which a short
//! forward scan of batch headers reaches any offset.
//!
//! Entries are kept by [`IndexEntries`]: in memory, appended to the `.index` file.

use crate::index_entries::{IndexEntries, IndexEntry};
use std::fs::File;
use std::io;

/// Bytes per on-disk entry.
pub(crate) const ENTRY_SIZE: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug)]
pub(crate) struct OffsetIndex {
    base_offset: i64,
    entries: IndexEntries<OffsetEntry>,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = ENTRY_SIZE;

    fn encode_into(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }

    fn decode(c: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
        }
    }
}

impl OffsetIndex {
    pub(crate) fn new(base_offset: i64) -> Self {
        OffsetIndex {
            base_offset,
            entries: IndexEntries::new(),
        }
    }

    /// Parses the file contents; a trailing partial entry (torn write) is ignored.
    pub(crate) fn parse(base_offset: i64, bytes: &[u8]) -> Self {
        OffsetIndex {
            base_offset,
            entries: IndexEntries::parse(bytes),
        }
    }

    /// Checks that the entries could describe a log of `log_size` bytes whose offsets are below
    /// `offset_limit`: strictly increasing on both columns and in range. Anything else means
    /// the file is stale or corrupt and must be rebuilt from the log.
    pub(crate) fn sanity_check(
        &self,
        log_size: u64,
        offset_limit: Option<i64>,
    ) -> Result<(), String> {
        let mut prev: Option<OffsetEntry> = None;
        for e in self.entries.iter() {
            if let Some(p) = prev {
                if e.relative_offset <= p.relative_offset || e.position <= p.position {
                    return Err(format!("entries not increasing: {p:?} then {e:?}"));
                }
            }
            if u64::from(e.position) >= log_size {
                return Err(format!(
                    "position {} beyond log size {log_size}",
                    e.position
                ));
            }
            if let Some(limit) = offset_limit {
                if self.base_offset + i64::from(e.relative_offset) >= limit {
                    return Err(format!("offset {} beyond {limit}", e.relative_offset));
                }
            }
            prev = Some(*e);
        }
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry with the largest offset <= `offset`, or the segment start.
    pub(crate) fn lookup(&self, offset: i64) -> (i64, u64) {
        let rel = offset - self.base_offset;
        let idx = self
            .entries
            .partition_point(|e| i64::from(e.relative_offset) <= rel);
        match idx.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => (
                self.base_offset + i64::from(e.relative_offset),
                u64::from(e.position),
            ),
            None => (self.base_offset, 0),
        }
    }

    /// The entry with the largest position <= `position`, or the segment start.
    pub(crate) fn lookup_position(&self, position: u64) -> (i64, u64) {
        let idx = self
            .entries
            .partition_point(|e| u64::from(e.position) <= position);
        match idx.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => (
                self.base_offset + i64::from(e.relative_offset),
                u64::from(e.position),
            ),
            None => (self.base_offset, 0),
        }
    }

    pub(crate) fn last(&self) -> (i64, u64) {
        match self.entries.last() {
            Some(e) => (
                self.base_offset + i64::from(e.relative_offset),
                u64::from(e.position),
            ),
            None => (self.base_offset, 0),
        }
    }

    /// Adds an entry in memory and, when `file` is given, appends it to the file.
    pub(crate) fn append(
        &mut self,
        offset: i64,
        position: u64,
        file: Option<&File>,
    ) -> io::Result<()> {
        let rel = u32::try_from(offset - self.base_offset)
            .map_err(|_| io::Error::other("relative offset does not fit the index"))?;
        let pos = u32::try_from(position)
            .map_err(|_| io::Error::other("position does not fit the index"))?;
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|l| l.relative_offset < rel && l.position < pos));
        let entry = OffsetEntry {
            relative_offset: rel,
            position: pos,
        };
        self.entries.push(entry, file)
    }

    pub(crate) fn truncate_entries(&mut self, keep: usize, file: Option<&File>) -> io::Result<()> {
        self.entries.truncate(keep, file)
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.entries.to_bytes()
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_floor_entries() {
        let mut idx = OffsetIndex::new(100);
        idx.append(110, 400, None).unwrap();
        idx.append(125, 900, None).unwrap();
        assert_eq!(idx.lookup(100), (100, 0));
        assert_eq!(idx.lookup(109), (100, 0));
        assert_eq!(idx.lookup(110), (110, 400));
        assert_eq!(idx.lookup(124), (110, 400));
        assert_eq!(idx.lookup(1000), (125, 900));
        assert_eq!(idx.lookup(5), (100, 0));
        assert_eq!(idx.lookup_position(399), (100, 0));
        assert_eq!(idx.lookup_position(400), (110, 400));
        assert_eq!(idx.lookup_position(10_000), (125, 900));
    }

    #[test]
    fn round_trips_and_checks() {
        let mut idx = OffsetIndex::new(7);
        idx.append(8, 10, None).unwrap();
        idx.append(9, 20, None).unwrap();
        let mut bytes = idx.to_bytes();
        bytes.push(1); // torn tail
        let back = OffsetIndex::parse(7, &bytes);
        assert_eq!(back.len(), 2);
        assert!(back.sanity_check(21, Some(10)).is_ok());
        assert!(back.sanity_check(20, None).is_err());
        assert!(back.sanity_check(100, Some(9)).is_err());
        let zeros = OffsetIndex::parse(7, &[0u8; 16]);
        assert!(zeros.sanity_check(100, None).is_err());
        let mut t = back;
        t.truncate_entries(1, None).unwrap();
        assert_eq!(t.len(), 1);
    }
}
