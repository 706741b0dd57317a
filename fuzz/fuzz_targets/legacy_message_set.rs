//! Magic 0/1 message-set parsing, up-conversion (produce path) and down-conversion (fetch
//! path), including the decompressors behind wrapper messages.
#![no_main]

use bytes::Bytes;
use kavka_protocol::legacy_message_set::{
    batches_to_message_set, message_set_to_batch, parse_message_set, DownConvertOptions,
    OffsetAssignment, ParseOptions, UpConvertOptions,
};
use kavka_protocol::record_batch;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    for allow_partial_trailing in [false, true] {
        let _ = parse_message_set(
            &buf,
            &ParseOptions {
                max_decompressed_bytes: LIMIT,
                allow_partial_trailing,
            },
        );
    }
    for offsets in [OffsetAssignment::Sequential, OffsetAssignment::Preserve] {
        if let Ok(up) = message_set_to_batch(
            &buf,
            &UpConvertOptions {
                max_decompressed_bytes: LIMIT,
                offsets,
            },
        ) {
            // Whatever we accept must become exactly one valid v2 batch...
            let h = record_batch::validate(&up.batch).expect("up-converted batch is valid");
            assert_eq!(h.total_len(), up.batch.len());
            // ...that converts back down.
            let down = DownConvertOptions {
                magic: 1,
                max_decompressed_bytes: LIMIT * 2,
                keep_compression: true,
            };
            batches_to_message_set(&up.batch, &down).expect("down-conversion of our own batch");
        }
    }
    for magic in [0, 1] {
        let opts = DownConvertOptions {
            magic,
            max_decompressed_bytes: LIMIT,
            keep_compression: true,
        };
        let _ = batches_to_message_set(&buf, &opts);
    }
});
