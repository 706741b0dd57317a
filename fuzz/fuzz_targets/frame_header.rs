//! Length prefix, request prefix and request-header decoding: the first code that touches
//! every byte a client sends.
#![no_main]

use bytes::Bytes;
use kavka_protocol::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<4>() {
        if let Ok(len) = frame::frame_len(*prefix, frame::DEFAULT_MAX_REQUEST_BYTES) {
            assert!(len <= frame::DEFAULT_MAX_REQUEST_BYTES);
        }
    }
    if let Ok(prefix) = frame::peek_prefix(data) {
        let _ = frame::disposition(&prefix);
    }
    if let Ok((_, header, body)) = frame::decode_request_header(Bytes::copy_from_slice(data)) {
        assert!(body.len() <= data.len());
        let _ = header;
    }
});
