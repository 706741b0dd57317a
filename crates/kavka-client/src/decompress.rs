//! Bounded decompression of fetched batches.
//!
//! kafka-protocol's built-in decompressors inflate without limit, so a hostile or broken
//! broker could make a few kilobytes expand into gigabytes. This module is passed to
//! `RecordBatchDecoder` as its decompressor and stops at `limit` bytes of output.

use std::io::Read;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::records::Compression;

/// The xerial snappy-java stream header Java clients write.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;

/// Decompresses one batch's record bytes, failing if the output would exceed `limit`.
pub fn decompress(input: &mut Bytes, compression: Compression, limit: usize) -> Result<Bytes> {
    let data = input.split_to(input.len());
    match compression {
        Compression::None => Ok(data),
        Compression::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(data.reader()), limit).context("gzip")
        }
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(data.reader()).context("lz4")?;
            read_bounded(decoder, limit).context("lz4")
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data.reader()).context("zstd")?;
            read_bounded(decoder, limit).context("zstd")
        }
        Compression::Snappy => snappy(&data, limit).context("snappy"),
    }
}

fn read_bounded<R: Read>(reader: R, limit: usize) -> Result<Bytes> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        bail!("decompressed batch exceeds {limit} bytes");
    }
    Ok(Bytes::from(out))
}

/// Snappy as Kafka writes it: xerial framing (`[header][i32 len][raw block]...`) from Java,
/// or a single raw block from other clients.
fn snappy(data: &[u8], limit: usize) -> Result<Bytes> {
    let mut out = Vec::new();
    if data.len() >= XERIAL_HEADER_LEN && data[..8] == XERIAL_MAGIC {
        let mut rest = &data[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                bail!("truncated xerial block length");
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if len > rest.len() {
                bail!(
                    "xerial block of {len} bytes exceeds the {} bytes left",
                    rest.len()
                );
            }
            let (block, tail) = rest.split_at(len);
            raw_snappy_into(block, &mut out, limit)?;
            rest = tail;
        }
    } else {
        raw_snappy_into(data, &mut out, limit)?;
    }
    Ok(Bytes::from(out))
}

fn raw_snappy_into(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<()> {
    let len = snap::raw::decompress_len(block)?;
    if out.len().saturating_add(len) > limit {
        bail!("decompressed batch exceeds {limit} bytes");
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new().decompress(block, &mut out[start..])?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

    fn compress_with(compression: Compression, payload: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        let fill = |buf: &mut BytesMut| {
            buf.extend_from_slice(payload);
            Ok(())
        };
        match compression {
            Compression::Gzip => Gzip::compress(&mut out, fill),
            Compression::Snappy => Snappy::compress(&mut out, fill),
            Compression::Lz4 => Lz4::compress(&mut out, fill),
            Compression::Zstd => Zstd::compress(&mut out, fill),
            Compression::None => fill(&mut out),
        }
        .unwrap();
        out.freeze()
    }

    #[test]
    fn round_trips_every_codec() {
        let payload: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut compressed = compress_with(c, &payload);
            let out = decompress(&mut compressed, c, payload.len()).unwrap();
            assert_eq!(&out[..], &payload[..], "{c:?}");
        }
    }

    #[test]
    fn refuses_output_over_the_limit() {
        let payload = vec![0u8; 1 << 20];
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut compressed = compress_with(c, &payload);
            assert!(decompress(&mut compressed, c, 1000).is_err(), "{c:?}");
        }
    }

    #[test]
    fn raw_snappy_without_xerial_header() {
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"hello hello hello")
            .unwrap();
        let mut input = Bytes::from(raw);
        assert_eq!(
            &decompress(&mut input, Compression::Snappy, 100).unwrap()[..],
            b"hello hello hello"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut junk = Bytes::from_static(&[
                0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff,
                0xff, 0xff,
            ]);
            assert!(decompress(&mut junk, c, 1 << 20).is_err(), "{c:?}");
        }
    }
}
