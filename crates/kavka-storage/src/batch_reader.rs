//! Sequential reading of batch headers and whole batches from a segment file through a
//! reusable window buffer, with positional reads (no shared file cursor).
//!
//! Everything read here comes from disk and is treated as hostile: lengths are checked against
//! the file size before any allocation, and a batch larger than the window is CRC-checked in
//! pieces instead of being loaded whole.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use kavka_protocol::record_batch::{self, BatchError, BatchHeader, BATCH_HEADER_LEN};

/// Window used to walk headers on the read path (a few batches past an index entry).
pub(crate) const HEADER_WINDOW: usize = 16 * 1024;
/// Window used by recovery and index rebuilds, which read whole segments.
pub(crate) const SCAN_WINDOW: usize = 1024 * 1024;

/// Start of the CRC-covered part of a batch.
const CRC_START: usize = 21;

pub(crate) struct FileWindow<'a> {
    file: &'a File,
    file_len: u64,
    cap: usize,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> FileWindow<'a> {
    pub(crate) fn new(file: &'a File, file_len: u64, cap: usize) -> Self {
        FileWindow {
            file,
            file_len,
            cap,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The `len` bytes at `pos`, or `None` when they run past the end of the file.
    /// `len` must not exceed the window capacity.
    fn slice(&mut self, pos: u64, len: usize) -> io::Result<Option<&[u8]>> {
        debug_assert!(len <= self.cap);
        let Some(end) = pos.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.file_len {
            return Ok(None);
        }
        let buf_end = self.start + self.buf.len() as u64;
        if pos < self.start || end > buf_end {
            let want = (self.file_len - pos).min(self.cap as u64) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(self.buf.get(from..from + len))
    }

    /// The header of the batch at `pos`, without checking its CRC or that the batch is whole.
    pub(crate) fn header_at(&mut self, pos: u64) -> io::Result<Result<BatchHeader, BatchError>> {
        let avail = self
            .file_len
            .saturating_sub(pos)
            .min(BATCH_HEADER_LEN as u64) as usize;
        match self.slice(pos, avail)? {
            Some(bytes) => Ok(record_batch::peek_header(bytes)),
            None => Ok(Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: 0,
            })),
        }
    }

    /// Fully validates the batch at `pos` (length within the file, CRC-32C, record count,
    /// codec), streaming the CRC when the batch is larger than the window.
    pub(crate) fn validate_at(&mut self, pos: u64) -> io::Result<Result<BatchHeader, BatchError>> {
        let header = match self.header_at(pos)? {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let total = header.total_len();
        let available = self.file_len.saturating_sub(pos);
        if total as u64 > available {
            return Ok(Err(BatchError::Truncated {
                needed: total,
                available: available as usize,
            }));
        }
        if total <= self.cap {
            let bytes = self.slice(pos, total)?.unwrap_or_default();
            return Ok(record_batch::validate(bytes));
        }
        let mut crc = 0u32;
        let mut at = pos + CRC_START as u64;
        let end = pos + total as u64;
        while at < end {
            let n = (end - at).min(self.cap as u64) as usize;
            let Some(piece) = self.slice(at, n)? else {
                return Ok(Err(BatchError::Truncated {
                    needed: total,
                    available: available as usize,
                }));
            };
            crc = crc32c::crc32c_append(crc, piece);
            at += n as u64;
        }
        if crc != header.crc {
            return Ok(Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed: crc,
            }));
        }
        if let Err(e) = header.compression() {
            return Ok(Err(e));
        }
        if header.records_count < 0
            || header.last_offset_delta < 0
            || header.records_count > header.last_offset_delta.saturating_add(1)
        {
            return Ok(Err(BatchError::InvalidRecordCount {
                count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            }));
        }
        Ok(Ok(header))
    }
}
