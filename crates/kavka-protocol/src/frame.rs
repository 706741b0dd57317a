//! Length-prefixed framing and request-header parsing.
//!
//! Every Kafka request and response is `[i32 length][payload]`. The length is untrusted: it
//! is checked against a configured maximum (Kafka's `socket.request.max.bytes`, default
//! 100 MiB) before anything is allocated.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use thiserror::Error;

/// Kafka's default `socket.request.max.bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("request header too short ({0} bytes)")]
    HeaderTooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header: {0}")]
    MalformedHeader(String),
}

/// Validates a 4-byte length prefix and returns the payload length.
pub fn frame_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(prefix);
    if len < 0 {
        return Err(FrameError::Negative(len));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// The first four bytes of every request: enough to route it, and to answer even when the
/// version is not one we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads api key, version and correlation id, which sit at fixed offsets in every header
/// version.
pub fn peek_prefix(payload: &[u8]) -> Result<RequestPrefix, FrameError> {
    if payload.len() < 8 {
        return Err(FrameError::HeaderTooShort(payload.len()));
    }
    Ok(RequestPrefix {
        api_key: i16::from_be_bytes([payload[0], payload[1]]),
        api_version: i16::from_be_bytes([payload[2], payload[3]]),
        correlation_id: i32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
    })
}

/// Decodes the request header and returns it with the remaining body.
pub fn decode_request_header(payload: Bytes) -> Result<(ApiKey, RequestHeader, Bytes), FrameError> {
    let prefix = peek_prefix(&payload)?;
    let api_key =
        ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApiKey(prefix.api_key))?;
    let header_version = api_key.request_header_version(prefix.api_version);
    let mut buf = payload;
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| FrameError::MalformedHeader(e.to_string()))?;
    Ok((api_key, header, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_lengths() {
        assert_eq!(frame_len(10i32.to_be_bytes(), 100), Ok(10));
        assert_eq!(frame_len((-1i32).to_be_bytes(), 100), Err(FrameError::Negative(-1)));
        assert!(matches!(
            frame_len(i32::MAX.to_be_bytes(), DEFAULT_MAX_REQUEST_BYTES),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert!(decode_request_header(Bytes::from_static(&[0, 1])).is_err());
        let unknown = Bytes::from_static(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert_eq!(decode_request_header(unknown).unwrap_err(), FrameError::UnknownApiKey(0x7f7f));
    }
}
