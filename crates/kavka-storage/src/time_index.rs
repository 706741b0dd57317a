//! The time index of one segment: `(timestamp i64, relative offset u32)` pairs, both strictly
//! increasing. An entry `(T, O)` means: every batch of the segment with base offset <= `O` has
//! a max timestamp <= `T`. So for a target `t`, the last entry with `T < t` tells where the
//! scan for the first record with timestamp >= `t` may start. An entry is added with each
//! offset index entry when the segment's max timestamp grew, and once more when the segment
//! is sealed, so the last entry holds the segment's largest timestamp.

use crate::index_entries::{IndexEntries, IndexEntry};
use std::fs::File;
use std::io;

/// Bytes per on-disk entry.
pub(crate) const ENTRY_SIZE: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug)]
pub(crate) struct TimeIndex {
    base_offset: i64,
    entries: IndexEntries<TimeEntry>,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = ENTRY_SIZE;

    fn encode_into(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(c: &[u8]) -> Self {
        decode(c)
    }
}

impl TimeIndex {
    pub(crate) fn new(base_offset: i64) -> Self {
        TimeIndex {
            base_offset,
            entries: IndexEntries::new(),
        }
    }

    pub(crate) fn parse(base_offset: i64, bytes: &[u8]) -> Self {
        TimeIndex {
            base_offset,
            entries: IndexEntries::parse(bytes),
        }
    }

    /// Checks ordering and that offsets stay below `offset_limit` (the segment's end).
    pub(crate) fn sanity_check(&self, offset_limit: Option<i64>) -> Result<(), String> {
        let mut prev: Option<TimeEntry> = None;
        for e in self.entries.iter() {
            if let Some(p) = prev {
                if e.timestamp <= p.timestamp || e.relative_offset < p.relative_offset {
                    return Err(format!("entries not increasing: {p:?} then {e:?}"));
                }
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

    /// The last entry whose timestamp is strictly below `timestamp`, as (timestamp, offset).
    pub(crate) fn lookup_below(&self, timestamp: i64) -> Option<(i64, i64)> {
        let idx = self.entries.partition_point(|e| e.timestamp < timestamp);
        idx.checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)))
    }

    pub(crate) fn last(&self) -> Option<(i64, i64)> {
        self.entries
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)))
    }

    /// Appends `(timestamp, offset)` unless it would not raise the indexed timestamp.
    pub(crate) fn maybe_append(
        &mut self,
        timestamp: i64,
        offset: i64,
        file: Option<&File>,
    ) -> io::Result<()> {
        if timestamp < 0
            || self
                .entries
                .last()
                .is_some_and(|l| timestamp <= l.timestamp)
        {
            return Ok(());
        }
        let rel = u32::try_from(offset - self.base_offset)
            .map_err(|_| io::Error::other("relative offset does not fit the time index"))?;
        if self.entries.last().is_some_and(|l| rel < l.relative_offset) {
            return Ok(());
        }
        let entry = TimeEntry {
            timestamp,
            relative_offset: rel,
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

/// Decodes one on-disk entry (`bytes` must hold at least `ENTRY_SIZE` bytes).
pub(crate) fn decode(c: &[u8]) -> TimeEntry {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&c[..8]);
    TimeEntry {
        timestamp: i64::from_be_bytes(ts),
        relative_offset: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_only_growing_timestamps_and_looks_up_strictly_below() {
        let mut idx = TimeIndex::new(50);
        idx.maybe_append(1000, 50, None).unwrap();
        idx.maybe_append(900, 55, None).unwrap(); // not a new max: skipped
        idx.maybe_append(2000, 60, None).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.lookup_below(1000), None);
        assert_eq!(idx.lookup_below(1001), Some((1000, 50)));
        assert_eq!(idx.lookup_below(2000), Some((1000, 50)));
        assert_eq!(idx.lookup_below(i64::MAX), Some((2000, 60)));
        assert_eq!(idx.last(), Some((2000, 60)));
        let back = TimeIndex::parse(50, &idx.to_bytes());
        assert!(back.sanity_check(Some(61)).is_ok());
        assert!(back.sanity_check(Some(60)).is_err());
        let mut t = back;
        t.truncate_entries(1, None).unwrap();
        assert_eq!(t.last(), Some((1000, 50)));
    }
}
