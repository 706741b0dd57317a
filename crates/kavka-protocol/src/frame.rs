//! Length-prefixed framing and request-header parsing.
//!
//! Every Kafka request and response is `[i32 length][payload]`. The length is untrusted: it
//! is checked against a configured maximum (Kafka's `socket.request.max.bytes`, default
//! 100 MiB) before anything is allocated.
//!
//! # Requests kavka cannot serve: what Apache Kafka does
//!
//! From Kafka's `SocketServer.Processor.parseRequestHeader`, `ApiVersionManager.isApiEnabled`,
//! `ApiKeys.isVersionEnabled`, `RequestContext` and `KafkaApis.handleApiVersionsRequest`
//! (3.x/4.x):
//!
//! - **Unknown api key**: `RequestHeader.parse` throws `InvalidRequestException("Unknown API
//!   key")`; the processor logs it and **closes the connection** without a response (a
//!   response could not even be encoded: its header version depends on the api).
//! - **Known api, version outside the broker's range** (or an api the broker does not enable):
//!   `parseRequestHeader` throws `UnsupportedVersionException` (`InvalidRequestException` for
//!   a disabled api) and the connection is **closed**, again without a response. Clients are
//!   expected to have asked ApiVersions first and to stay inside the advertised ranges.
//! - **ApiVersions with a version newer than the broker knows**: the one exception.
//!   `isVersionEnabled` accepts every ApiVersions version, the body is not parsed, and the
//!   broker answers with an ApiVersions **v0** response (response header v0, which is what
//!   ApiVersions always uses) carrying `UNSUPPORTED_VERSION` (35). Since KIP-511 (2.4) its
//!   `api_keys` holds the ApiVersions entry, whose max version the client retries with;
//!   kavka sends its whole table, a superset the Java client, librdkafka and kafka-python
//!   all accept. See [`disposition`] and [`api_versions_fallback_response`].
//! - A request whose header parses but whose body does not decode (`InvalidRequestException`
//!   from `RequestContext.parseRequest`) also closes the connection.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

use crate::api_versions;
use crate::error::ErrorCode;

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

/// What to do with a request, decided from its first bytes alone, as Kafka does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// kavka implements this api at this version.
    Serve,
    /// ApiVersions at a version above ours: answer with [`encode_api_versions_fallback`].
    ApiVersionsFallback,
    /// Unknown api, an api kavka does not implement, or an unsupported version: close the
    /// connection without a response.
    Close,
}

pub fn disposition(prefix: &RequestPrefix) -> Disposition {
    let Ok(api) = ApiKey::try_from(prefix.api_key) else {
        return Disposition::Close;
    };
    if api_versions::is_supported(api, prefix.api_version) {
        return Disposition::Serve;
    }
    match api_versions::supported_range(api) {
        Some((_, max)) if api == ApiKey::ApiVersions && prefix.api_version > max => {
            Disposition::ApiVersionsFallback
        }
        _ => Disposition::Close,
    }
}

/// The ApiVersions response to a too-new ApiVersions request: UNSUPPORTED_VERSION plus the
/// table, so the client retries with a version we speak. Encode it as v0.
pub fn api_versions_fallback_response() -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse::default();
    resp.error_code = ErrorCode::UnsupportedVersion.code();
    resp.api_keys = api_versions::SUPPORTED
        .iter()
        .map(|(api, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *api as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect();
    resp
}

/// The complete response payload (without the 4-byte length prefix) for
/// [`Disposition::ApiVersionsFallback`]: response header v0 (correlation id) and the v0 body.
pub fn encode_api_versions_fallback(correlation_id: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + 6 * api_versions::SUPPORTED.len());
    out.put_i32(correlation_id);
    // v0 has no tagged fields and no optional parts; encoding it cannot fail.
    let encoded = api_versions_fallback_response().encode(&mut out, 0);
    debug_assert!(encoded.is_ok());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_lengths() {
        assert_eq!(frame_len(10i32.to_be_bytes(), 100), Ok(10));
        assert_eq!(
            frame_len((-1i32).to_be_bytes(), 100),
            Err(FrameError::Negative(-1))
        );
        assert!(matches!(
            frame_len(i32::MAX.to_be_bytes(), DEFAULT_MAX_REQUEST_BYTES),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert!(decode_request_header(Bytes::from_static(&[0, 1])).is_err());
        let unknown = Bytes::from_static(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert_eq!(
            decode_request_header(unknown).unwrap_err(),
            FrameError::UnknownApiKey(0x7f7f)
        );
    }

    #[test]
    fn dispositions_follow_kafka() {
        let p = |api_key, api_version| RequestPrefix {
            api_key,
            api_version,
            correlation_id: 1,
        };
        assert_eq!(disposition(&p(18, 3)), Disposition::Serve);
        assert_eq!(disposition(&p(18, 99)), Disposition::ApiVersionsFallback);
        assert_eq!(disposition(&p(18, -1)), Disposition::Close);
        assert_eq!(disposition(&p(0, 0)), Disposition::Serve);
        assert_eq!(disposition(&p(0, 99)), Disposition::Close);
        assert_eq!(disposition(&p(0x7f7f, 0)), Disposition::Close);
    }

    #[test]
    fn fallback_is_api_versions_v0_with_unsupported_version() {
        let payload = encode_api_versions_fallback(0x0102_0304);
        let n = api_versions::SUPPORTED.len();
        // correlation id, error 35, array count, then (key, min, max) per api; nothing else.
        assert_eq!(payload.len(), 4 + 2 + 4 + 6 * n);
        assert_eq!(&payload[..10], &[1, 2, 3, 4, 0, 35, 0, 0, 0, n as u8]);
        let apis: Vec<[i16; 3]> = payload[10..]
            .chunks(6)
            .map(|c| [0, 2, 4].map(|i| i16::from_be_bytes([c[i], c[i + 1]])))
            .collect();
        assert!(apis.contains(&[18, 0, 4]));
    }
}
