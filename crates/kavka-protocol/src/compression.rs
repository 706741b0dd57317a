//! Bounded compression codecs for record data, in the exact framings Kafka clients use.
//!
//! kafka-protocol's own decompressors inflate without a limit; a 1 KiB gzip bomb from a
//! client could then expand to gigabytes. Everything here stops at a caller-given cap.
//!
//! Framings:
//! - gzip: RFC 1952, possibly several concatenated members (Java's `GZIPInputStream`).
//! - snappy: xerial framing (`\x82SNAPPY\0` header, then `[i32 len][raw block]`*) as written
//!   by Java clients, or one raw snappy block as written by librdkafka and others.
//! - lz4: the LZ4 frame format. Kafka before 0.10 (and magic 0 message sets ever since)
//!   computes the frame descriptor checksum over the magic number too (KAFKA-3160); such
//!   frames are read with [`Lz4Checksum::KafkaLegacy`] and written that way for magic 0.
//! - zstd: a zstd frame (v2 batches only).

use std::io::{self, Read, Write};

use thiserror::Error;

use crate::record_batch::Compression;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CompressionError {
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("corrupt {codec:?} data: {reason}")]
    Corrupt { codec: Compression, reason: String },
    #[error("compression with {0:?} failed: {1}")]
    Compress(Compression, String),
}

/// Which LZ4 frame-descriptor checksum to expect or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lz4Checksum {
    /// The checksum of the LZ4 frame specification (magic 1 and v2 batches).
    Standard,
    /// Kafka's pre-0.10 checksum, which also covers the 4 magic bytes. Used by magic 0
    /// message sets; on input the stored byte is ignored, as Kafka does.
    KafkaLegacy,
}

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// xerial header: magic, version 1, minimum compatible version 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's default block size; Java clients read any size.
const XERIAL_BLOCK: usize = 32 * 1024;
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4d, 0x18];

/// Decompresses `data` with `codec`, failing once the output would exceed `limit` bytes.
pub fn decompress(
    codec: Compression,
    data: &[u8],
    limit: usize,
    lz4_checksum: Lz4Checksum,
) -> Result<Vec<u8>, CompressionError> {
    let corrupt = |e: io::Error| CompressionError::Corrupt {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(CompressionError::TooLarge { limit });
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), limit)
            .map_err(|e| e.into_error(codec)),
        Compression::Snappy => snappy_decompress(data, limit),
        Compression::Lz4 => {
            let fixed;
            let data = match lz4_checksum {
                Lz4Checksum::Standard => data,
                Lz4Checksum::KafkaLegacy => {
                    let mut copy = data.to_vec();
                    rewrite_lz4_header_checksum(&mut copy, Lz4Checksum::Standard);
                    fixed = copy;
                    &fixed
                }
            };
            let decoder = lz4::Decoder::new(data).map_err(corrupt)?;
            read_bounded(decoder, limit).map_err(|e| e.into_error(codec))
        }
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(data).map_err(corrupt)?;
            // The frame header chooses the window the decoder allocates; without a bound a
            // 20-byte frame could claim 2 GiB. Allow what the limit can use, but at least
            // 8 MiB so frames from high compression levels still decode.
            decoder
                .window_log_max(zstd_window_log_max(limit))
                .map_err(corrupt)?;
            read_bounded(decoder, limit).map_err(|e| e.into_error(codec))
        }
    }
}

/// log2 of the largest zstd window worth allocating for `limit` output bytes, within
/// [23, 27] (27 is zstd's default maximum).
fn zstd_window_log_max(limit: usize) -> u32 {
    let log = usize::BITS - limit.saturating_sub(1).leading_zeros();
    log.clamp(23, 27)
}

/// Compresses `data` with `codec` in the framing Kafka's Java producer writes.
pub fn compress(
    codec: Compression,
    data: &[u8],
    lz4_checksum: Lz4Checksum,
) -> Result<Vec<u8>, CompressionError> {
    let fail = |e: io::Error| CompressionError::Compress(codec, e.to_string());
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(fail)?;
            enc.finish().map_err(fail)
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER.len() + data.len() / 2);
            out.extend_from_slice(XERIAL_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for block in data.chunks(XERIAL_BLOCK) {
                let compressed = encoder
                    .compress_vec(block)
                    .map_err(|e| CompressionError::Compress(codec, e.to_string()))?;
                // A block is at most snap's max_compress_len(32 KiB), far below i32::MAX.
                out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
                out.extend_from_slice(&compressed);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut enc = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::new())
                .map_err(fail)?;
            enc.write_all(data).map_err(fail)?;
            let (mut out, res) = enc.finish();
            res.map_err(fail)?;
            if lz4_checksum == Lz4Checksum::KafkaLegacy {
                rewrite_lz4_header_checksum(&mut out, Lz4Checksum::KafkaLegacy);
            }
            Ok(out)
        }
        Compression::Zstd => zstd::stream::encode_all(data, 3).map_err(fail),
    }
}

enum BoundedReadError {
    TooLarge(usize),
    Io(io::Error),
}

impl BoundedReadError {
    fn into_error(self, codec: Compression) -> CompressionError {
        match self {
            BoundedReadError::TooLarge(limit) => CompressionError::TooLarge { limit },
            BoundedReadError::Io(e) => CompressionError::Corrupt {
                codec,
                reason: e.to_string(),
            },
        }
    }
}

/// Reads at most `limit` bytes; one byte more means the input was too large.
fn read_bounded<R: Read>(reader: R, limit: usize) -> Result<Vec<u8>, BoundedReadError> {
    let mut out = Vec::new();
    let cap = (limit as u64).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(BoundedReadError::Io)?;
    if out.len() > limit {
        return Err(BoundedReadError::TooLarge(limit));
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Compression::Snappy;
    let corrupt = |reason: String| CompressionError::Corrupt { codec, reason };
    let mut decoder = snap::raw::Decoder::new();
    let Some(mut rest) = data.strip_prefix(XERIAL_MAGIC.as_slice()) else {
        let len = snap::raw::decompress_len(data).map_err(|e| corrupt(e.to_string()))?;
        if len > limit {
            return Err(CompressionError::TooLarge { limit });
        }
        return decoder
            .decompress_vec(data)
            .map_err(|e| corrupt(e.to_string()));
    };
    // Skip version and minimum compatible version.
    rest = rest
        .get(8..)
        .ok_or_else(|| corrupt("truncated xerial header".into()))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len_bytes, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("truncated xerial block".into()))?;
        let block_len = u32::from_be_bytes(*len_bytes) as usize;
        if block_len > tail.len() {
            return Err(corrupt(format!(
                "xerial block of {block_len} bytes, {} left",
                tail.len()
            )));
        }
        let (block, tail) = tail.split_at(block_len);
        let n = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if n > limit.saturating_sub(out.len()) {
            return Err(CompressionError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + n, 0);
        let written = decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| corrupt(e.to_string()))?;
        out.truncate(start + written);
        rest = tail;
    }
    Ok(out)
}

/// Rewrites the header checksum byte of the LZ4 frame at the start of `frame` in the given
/// style. Leaves anything that is not an LZ4 frame header untouched (the decoder then
/// reports it).
fn rewrite_lz4_header_checksum(frame: &mut [u8], style: Lz4Checksum) {
    let Some(&flg) = frame.get(4) else { return };
    if frame[..4] != LZ4_MAGIC {
        return;
    }
    // FLG, BD, optional 8-byte content size (FLG bit 3), optional 4-byte dict id (bit 0).
    let descriptor_len =
        2 + if flg & 0x08 != 0 { 8 } else { 0 } + if flg & 0x01 != 0 { 4 } else { 0 };
    let hc_at = 4 + descriptor_len;
    if frame.len() <= hc_at {
        return;
    }
    let covered = match style {
        Lz4Checksum::Standard => &frame[4..hc_at],
        Lz4Checksum::KafkaLegacy => &frame[..hc_at],
    };
    frame[hc_at] = (xxh32(covered, 0) >> 8) as u8;
}

const P1: u32 = 2_654_435_761;
const P2: u32 = 2_246_822_519;
const P3: u32 = 3_266_489_917;
const P4: u32 = 668_265_263;
const P5: u32 = 374_761_393;

fn xxh32_round(acc: u32, lane: u32) -> u32 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(13)
        .wrapping_mul(P1)
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// XXH32, needed only for LZ4 frame-descriptor checksums (at most 18 bytes).
pub(crate) fn xxh32(input: &[u8], seed: u32) -> u32 {
    let mut chunks = input.chunks_exact(16);
    let mut h = if input.len() >= 16 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        for stripe in &mut chunks {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = xxh32_round(*acc, le_u32(&stripe[i * 4..]));
            }
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(input.len() as u32);
    let rest = if input.len() >= 16 {
        chunks.remainder()
    } else {
        input
    };
    let mut words = rest.chunks_exact(4);
    for w in &mut words {
        h = h
            .wrapping_add(le_u32(w).wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
    }
    for &b in words.remainder() {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn xxh32_known_vectors() {
        assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(
            xxh32(b"Nobody inspects the spammish repetition", 0),
            0xE229_3B2F
        );
    }

    /// Kafka 0.10's MessageCompressionTest reads the magic 0 header `04 22 4D 18 60 40 1A`
    /// (broken HC 0x1A); liblz4 writes the same descriptor with HC 0x82.
    #[test]
    fn lz4_header_checksums_match_kafka_and_liblz4() {
        let mut h = [0x04, 0x22, 0x4D, 0x18, 0x60, 0x40, 0x00];
        rewrite_lz4_header_checksum(&mut h, Lz4Checksum::KafkaLegacy);
        assert_eq!(h[6], 0x1A);
        rewrite_lz4_header_checksum(&mut h, Lz4Checksum::Standard);
        assert_eq!(h[6], 0x82);
    }

    #[test]
    fn lz4_standard_checksum_matches_liblz4() {
        let frame = compress(Compression::Lz4, b"hello", Lz4Checksum::Standard).unwrap();
        let mut copy = frame.clone();
        rewrite_lz4_header_checksum(&mut copy, Lz4Checksum::Standard);
        assert_eq!(copy, frame, "our header checksum must equal liblz4's");
    }

    #[test]
    fn round_trips_every_codec() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in ALL {
            for style in [Lz4Checksum::Standard, Lz4Checksum::KafkaLegacy] {
                let c = compress(codec, &data, style).unwrap();
                assert_eq!(
                    decompress(codec, &c, data.len(), style).unwrap(),
                    data,
                    "{codec:?}"
                );
                assert_eq!(
                    decompress(codec, &c, data.len() - 1, style),
                    Err(CompressionError::TooLarge {
                        limit: data.len() - 1
                    }),
                    "{codec:?}"
                );
            }
        }
    }

    #[test]
    fn legacy_lz4_checksum_differs_and_is_tolerated() {
        let std = compress(Compression::Lz4, b"abc", Lz4Checksum::Standard).unwrap();
        let legacy = compress(Compression::Lz4, b"abc", Lz4Checksum::KafkaLegacy).unwrap();
        assert_ne!(std[6], legacy[6], "HC byte follows FLG and BD");
        assert!(decompress(Compression::Lz4, &legacy, 10, Lz4Checksum::Standard).is_err());
        assert_eq!(
            decompress(Compression::Lz4, &legacy, 10, Lz4Checksum::KafkaLegacy).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn zstd_window_bound() {
        assert_eq!(zstd_window_log_max(0), 23);
        assert_eq!(zstd_window_log_max(1 << 20), 23);
        assert_eq!(zstd_window_log_max((1 << 25) + 1), 26);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
    }

    #[test]
    fn raw_snappy_is_accepted() {
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"raw snappy block")
            .unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 100, Lz4Checksum::Standard).unwrap(),
            b"raw snappy block"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            for codec in ALL {
                let _ = decompress(codec, &data, 4096, Lz4Checksum::KafkaLegacy);
                let _ = decompress(codec, &data, 4096, Lz4Checksum::Standard);
            }
            let mut xerial = XERIAL_HEADER.to_vec();
            xerial.extend_from_slice(&data);
            let _ = decompress(Compression::Snappy, &xerial, 4096, Lz4Checksum::Standard);
        }
    }
}
