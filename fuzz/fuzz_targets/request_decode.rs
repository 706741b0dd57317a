//! A whole request payload (after the length prefix) dispatched the way the broker does:
//! header, then the legacy codecs for the versions kafka-protocol does not generate, else the
//! generated decoder for that api.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kavka_protocol::{frame, legacy_api};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((api, header, body)) = frame::decode_request_header(Bytes::copy_from_slice(data)) else {
        return;
    };
    let version = header.request_api_version;
    match (api, version) {
        (ApiKey::Produce, 0..=2) => {
            let _ = legacy_api::decode_produce_request_v0_2(body, version);
        }
        (ApiKey::Fetch, 0..=3) => {
            let _ = legacy_api::decode_fetch_request_v0_3(body, version);
        }
        (ApiKey::ListOffsets, 0) => {
            let _ = legacy_api::decode_list_offsets_request_v0(body);
        }
        _ => {
            let mut body = body;
            let _ = RequestKind::decode(api, &mut body, version);
        }
    }
});
