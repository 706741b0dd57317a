//! Old request versions the generated codecs dropped (Produce v0-2, Fetch v0-3,
//! ListOffsets v0) and old message formats (magic 0/1), as Kafka 3.x still serves them for
//! clients like segmentio/kafka-go < 0.4 and old sarama configs.
//!
//! Requests are decoded into the same structs as their modern versions and served by the
//! same handlers; only the records are converted: magic 0/1 sets become one v2 batch on
//! produce, and stored v2 batches are down-converted on fetch.

use super::produce::ConvertFn;
use crate::broker::Broker;
use crate::network::{Dispatch, Reply};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use kavka_protocol::error::ErrorCode;
use kavka_protocol::legacy_api;
use kavka_protocol::legacy_message_set::{self, OffsetAssignment, UpConvertOptions};
use kavka_protocol::record_batch;
use std::sync::Arc;

/// Bound on what one legacy message set may decompress to (up- and down-conversion).
const MAX_CONVERTED_BYTES: usize = 64 * 1024 * 1024;

/// Frames a legacy response: `[length][correlation id][body]` (response header v0).
fn frame(
    cid: i32,
    encode: impl FnOnce(&mut BytesMut) -> Result<(), legacy_api::LegacyApiError>,
) -> Reply {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    buf.put_i32(cid);
    if let Err(e) = encode(&mut buf) {
        return Reply::Close(format!("cannot encode legacy response: {e}"));
    }
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Reply::Frame(buf.freeze())
}

/// Serves the request here when its version needs a hand-written codec; `None` otherwise.
pub fn dispatch(
    b: &Arc<Broker>,
    api: ApiKey,
    version: i16,
    cid: i32,
    payload: &Bytes,
) -> Option<Dispatch> {
    let legacy = matches!(
        (api, version),
        (ApiKey::Produce, 0..=2) | (ApiKey::Fetch, 0..=3) | (ApiKey::ListOffsets, 0)
    );
    if !legacy {
        return None;
    }
    // These versions all use request header v1.
    let mut buf = payload.clone();
    if let Err(e) = RequestHeader::decode(&mut buf, 1) {
        return Some(Dispatch::Close(format!("malformed request header: {e}")));
    }
    let b = b.clone();
    Some(match api {
        ApiKey::Produce => match legacy_api::decode_produce_request_v0_2(buf, version) {
            Err(e) => Dispatch::Close(format!("malformed produce v{version}: {e}")),
            Ok(req) => Dispatch::Respond(
                async move {
                    match super::produce::handle_with(
                        b,
                        req,
                        version,
                        convert_produce_records as ConvertFn,
                    )
                    .await
                    {
                        Ok(Some(resp)) => frame(cid, |out| {
                            legacy_api::encode_produce_response_v0_2(&resp, version, out)
                        }),
                        Ok(None) => Reply::Nothing,
                        Err(e) => Reply::Close(e),
                    }
                }
                .boxed(),
            ),
        },
        ApiKey::Fetch => match legacy_api::decode_fetch_request_v0_3(buf, version) {
            Err(e) => Dispatch::Close(format!("malformed fetch v{version}: {e}")),
            Ok(req) => Dispatch::Respond(
                async move {
                    let mut resp = super::fetch::handle(b, req, version).await;
                    // Down-conversion decompresses: keep it off the reactor threads.
                    let converted = tokio::task::spawn_blocking(move || {
                        legacy_api::down_convert_fetch_response(
                            &mut resp,
                            version,
                            MAX_CONVERTED_BYTES,
                        );
                        resp
                    })
                    .await;
                    match converted {
                        Ok(resp) => frame(cid, |out| {
                            legacy_api::encode_fetch_response_v0_3(&resp, version, out)
                        }),
                        Err(e) => Reply::Close(format!("down-conversion failed: {e}")),
                    }
                }
                .boxed(),
            ),
        },
        _ => match legacy_api::decode_list_offsets_request_v0(buf) {
            Err(e) => Dispatch::Close(format!("malformed list offsets v0: {e}")),
            Ok(req) => Dispatch::Respond(
                async move {
                    let resp = tokio::task::spawn_blocking(move || {
                        super::list_offsets::handle(&b, req, 0)
                    })
                    .await;
                    match resp {
                        Ok(resp) => frame(cid, |out| {
                            legacy_api::encode_list_offsets_response_v0(&resp, out)
                        }),
                        Err(e) => Reply::Close(format!("list offsets failed: {e}")),
                    }
                }
                .boxed(),
            ),
        },
    })
}

/// Produce v0-2 carry magic 0/1 message sets, v3+ carry v2 batches; Kafka rejects any other
/// combination. The result is a private copy the log may rewrite (base offsets).
pub fn convert_produce_records(
    records: Bytes,
    version: i16,
) -> Result<BytesMut, (ErrorCode, String)> {
    let magic = record_batch::peek_magic(&records);
    if version >= 3 {
        return match magic {
            Some(2) | None => Ok(BytesMut::from(&records[..])),
            Some(m) => Err((
                ErrorCode::InvalidRecord,
                format!("produce v{version} requires magic 2, got {m}"),
            )),
        };
    }
    if !legacy_message_set::is_legacy(&records) {
        return Err((
            ErrorCode::CorruptMessage,
            format!("produce v{version} requires message format v0 or v1"),
        ));
    }
    let opts = UpConvertOptions {
        max_decompressed_bytes: MAX_CONVERTED_BYTES,
        offsets: OffsetAssignment::Sequential,
    };
    legacy_message_set::message_set_to_batch(&records, &opts)
        .map(|up| BytesMut::from(&up.batch[..]))
        .map_err(|e| (ErrorCode::CorruptMessage, e.to_string()))
}
