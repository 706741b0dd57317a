//! Checksummed frames `[len u32 BE][crc32c u32 BE][payload]`: the one implementation of the
//! layout shared by the single-node [`crate::FileMetadataLog`], the Raft log store and snapshots,
//! and the Raft TCP transport. A torn or corrupt frame fails its length or CRC check.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Size of the `[len][crc32c]` header in front of every payload.
pub(crate) const HEADER_BYTES: usize = 8;

/// A frame's header: the payload's length and CRC-32C.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) crc: u32,
}

impl Header {
    pub(crate) fn parse(bytes: [u8; HEADER_BYTES]) -> Header {
        let [l0, l1, l2, l3, c0, c1, c2, c3] = bytes;
        Header {
            len: u32::from_be_bytes([l0, l1, l2, l3]),
            crc: u32::from_be_bytes([c0, c1, c2, c3]),
        }
    }

    /// Whether `payload` is what this header describes.
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && crc32c::crc32c(payload) == self.crc
    }
}

/// Encodes `payload` as one frame; `None` when it is longer than `max`.
pub(crate) fn encode(payload: &[u8], max: u32) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok().filter(|l| *l <= max)?;
    let mut frame = Vec::with_capacity(payload.len() + HEADER_BYTES);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}

/// Outcome of reading one frame.
pub(crate) enum FrameRead {
    Frame(Vec<u8>),
    End,
    /// The bytes from here on are not a valid frame (torn write or corruption).
    Invalid(&'static str),
}

/// Reads the frame at the reader's position; `remaining` (bytes left in the file) and `max`
/// bound the length before anything is allocated.
pub(crate) fn read<R: Read>(reader: &mut R, remaining: u64, max: u32) -> io::Result<FrameRead> {
    if remaining == 0 {
        return Ok(FrameRead::End);
    }
    if remaining < HEADER_BYTES as u64 {
        return Ok(FrameRead::Invalid("partial frame header"));
    }
    let mut bytes = [0u8; HEADER_BYTES];
    reader.read_exact(&mut bytes)?;
    let header = Header::parse(bytes);
    if header.len > max {
        return Ok(FrameRead::Invalid("frame length over the limit"));
    }
    if u64::from(header.len) > remaining - HEADER_BYTES as u64 {
        return Ok(FrameRead::Invalid("frame extends past the end of the file"));
    }
    let mut payload = vec![0u8; header.len as usize];
    reader.read_exact(&mut payload)?;
    if !header.matches(&payload) {
        return Ok(FrameRead::Invalid("CRC mismatch"));
    }
    Ok(FrameRead::Frame(payload))
}

/// Total size of a frame holding `payload_len` bytes.
pub(crate) fn framed_len(payload_len: usize) -> u64 {
    payload_len as u64 + HEADER_BYTES as u64
}

/// Replaces `path` with `bytes` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads the single frame stored in `path`; `Ok(None)` when the file does not exist.
pub(crate) fn read_file(
    path: &Path,
    max: u32,
) -> io::Result<Option<Result<Vec<u8>, &'static str>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    Ok(Some(match read(&mut file, len, max)? {
        FrameRead::Frame(payload) => Ok(payload),
        FrameRead::End => Err("empty file"),
        FrameRead::Invalid(reason) => Err(reason),
    }))
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new().read(true).open(dir)?.sync_all()
}
