//! Old request versions (Produce v0-2, Fetch v0-3, ListOffsets v0) and old message formats
//! (magic 0/1). Filled in once the protocol crate's legacy codecs land.

use super::produce::copy_v2;
use crate::broker::Broker;
use crate::network::Dispatch;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kavka_protocol::error::ErrorCode;
use std::sync::Arc;

pub fn dispatch(
    _b: &Arc<Broker>,
    _api: ApiKey,
    _version: i16,
    _cid: i32,
    _frame: &Bytes,
) -> Option<Dispatch> {
    None
}

pub fn convert_produce_records(
    records: Bytes,
    version: i16,
) -> Result<BytesMut, (ErrorCode, String)> {
    copy_v2(records, version)
}
