//! The zero-copy v2 batch view and full record decoding (with bounded decompression).
#![no_main]

use bytes::Bytes;
use kavka_protocol::{record_batch, records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
