//! The zero-copy v2 batch view and full record decoding (with bounded decompression).
//!
//! The first input byte selects a mode: with its low bit set, the CRC-32C of every batch is
//! recomputed before decoding, so the fuzzer gets past the checksum into the records,
//! varints and decompressors instead of only ever exercising the CRC rejection.
#![no_main]

use bytes::Bytes;
use kavka_protocol::{record_batch, records};
use libfuzzer_sys::fuzz_target;

/// Rewrites the CRC of each batch whose length field fits in `buf`.
fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0;
    while let Some(len) = buf.get(pos + 8..pos + 12) {
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let end = pos + 12 + len.max(0) as usize;
        if len < 9 || end > buf.len() {
            return;
        }
        let crc = crc32c::crc32c(&buf[pos + 21..end]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut data);
    }
    let data = &data[..];
    if let Ok(h) = record_batch::validate(data) {
        // A valid batch fits in the input and can be rewritten in place.
        assert!(h.total_len() <= data.len());
        let mut copy = data[..h.total_len()].to_vec();
        record_batch::set_base_offset(&mut copy, 1234);
        record_batch::set_log_append_time(&mut copy, 5678);
        assert!(record_batch::validate(&copy).is_ok());
    }
    let _ = record_batch::peek_header(data);
    for r in record_batch::batches(data) {
        let _ = r;
    }
    let _ = records::decode_batches_with_limit(&Bytes::copy_from_slice(data), 1 << 20);
});
