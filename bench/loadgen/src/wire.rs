//! A blocking Kafka connection for the scenarios librdkafka cannot drive: framing and
//! correlation ids over `std::net::TcpStream`, messages from the `kafka-protocol` crate (generated
//! from Apache Kafka's JSON specs; the broker's own codec is not used).
//!
//! One request in flight per connection. Each request goes out at the highest version both the
//! broker (from ApiVersions) and the caller's cap allow.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use thiserror::Error;

/// Largest response frame accepted (a JoinGroup answer to the leader of 100 members is ~10 KB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("{addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: cannot encode api {api} v{version}: {reason}")]
    Encode {
        addr: String,
        api: i16,
        version: i16,
        reason: String,
    },
    #[error("{addr}: cannot decode the answer to api {api} v{version}: {reason}")]
    Decode {
        addr: String,
        api: i16,
        version: i16,
        reason: String,
    },
    #[error("{addr}: response frame of {len} bytes")]
    FrameLength { addr: String, len: i32 },
    #[error("{addr}: correlation id {got} answers a request we did not send (expected {want})")]
    Correlation { addr: String, got: i32, want: i32 },
    #[error("{addr}: no common version of api {api} (broker {theirs:?}, ours up to {cap})")]
    Unsupported {
        addr: String,
        api: i16,
        theirs: Option<(i16, i16)>,
        cap: i16,
    },
    #[error("{addr}: ApiVersions failed with error code {code}")]
    ApiVersions { addr: String, code: i16 },
}

pub struct Wire {
    addr: String,
    stream: TcpStream,
    next_correlation_id: i32,
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Wire {
    /// Connects and reads the broker's API version ranges.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self, WireError> {
        let io = |source| WireError::Io {
            addr: addr.to_string(),
            source,
        };
        let stream = TcpStream::connect(addr).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut wire = Wire {
            addr: addr.to_string(),
            stream,
            next_correlation_id: 0,
            broker_versions: HashMap::new(),
        };
        let response = wire.api_versions()?;
        if response.error_code != 0 {
            return Err(WireError::ApiVersions {
                addr: addr.to_string(),
                code: response.error_code,
            });
        }
        wire.broker_versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(wire)
    }

    /// One ApiVersions v3 round trip: the cheapest request a broker answers, used as the
    /// request-path baseline next to the coordinator's figures.
    pub fn api_versions(&mut self) -> Result<ApiVersionsResponse, WireError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kavka-loadgen"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        self.send_version(&request, 3)
    }

    /// The broker's (min, max) for an API key, if it supports it.
    pub fn broker_versions(&self, api: i16) -> Option<(i16, i16)> {
        self.broker_versions.get(&api).copied()
    }

    /// Sends `request` at the highest version within both the broker's range and `cap`.
    pub fn send<R: Request>(&mut self, request: &R, cap: i16) -> Result<R::Response, WireError> {
        let theirs = self.broker_versions(R::KEY);
        let version = theirs
            .map(|(lo, hi)| (lo.max(R::VERSIONS.min), hi.min(R::VERSIONS.max).min(cap)))
            .filter(|(lo, hi)| lo <= hi)
            .map(|(_, hi)| hi)
            .ok_or_else(|| WireError::Unsupported {
                addr: self.addr.clone(),
                api: R::KEY,
                theirs,
                cap,
            })?;
        self.send_version(request, version)
    }

    fn send_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, WireError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1) & i32::MAX;
        let frame = self.encode(request, version, correlation_id)?;
        self.stream.write_all(&frame).map_err(|e| self.io(e))?;
        let mut body = self.read_frame()?;
        let decode = |reason: String| WireError::Decode {
            addr: self.addr.clone(),
            api: R::KEY,
            version,
            reason,
        };
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| decode(format!("header: {e:#}")))?;
        if header.correlation_id != correlation_id {
            return Err(WireError::Correlation {
                addr: self.addr.clone(),
                got: header.correlation_id,
                want: correlation_id,
            });
        }
        R::Response::decode(&mut body, version).map_err(|e| decode(format!("{e:#}")))
    }

    fn encode<R: Request>(
        &self,
        request: &R,
        version: i16,
        correlation_id: i32,
    ) -> Result<BytesMut, WireError> {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("kavka-loadgen")));
        let fail = |e: anyhow::Error| WireError::Encode {
            addr: self.addr.clone(),
            api: R::KEY,
            version,
            reason: format!("{e:#}"),
        };
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(fail)?;
        request.encode(&mut buf, version).map_err(fail)?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| WireError::Encode {
            addr: self.addr.clone(),
            api: R::KEY,
            version,
            reason: "request larger than 2 GiB".into(),
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        Ok(buf)
    }

    fn read_frame(&mut self) -> Result<Bytes, WireError> {
        let mut prefix = [0u8; 4];
        self.stream
            .read_exact(&mut prefix)
            .map_err(|e| self.io(e))?;
        let len = i32::from_be_bytes(prefix);
        let size = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| WireError::FrameLength {
                addr: self.addr.clone(),
                len,
            })?;
        let mut buf = BytesMut::zeroed(size);
        self.stream.read_exact(&mut buf).map_err(|e| self.io(e))?;
        Ok(buf.freeze())
    }

    fn io(&self, source: std::io::Error) -> WireError {
        WireError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}
