//! One TCP connection to one broker: framing, correlation ids, and version negotiation.
//!
//! A connection opens with ApiVersions and remembers the broker's ranges; every request is
//! then sent at the highest version both the broker and the generated codec support. One
//! request is in flight at a time (no pipelining), so a response is matched by checking
//! its correlation id equals the one just sent. Response lengths are bounded before any
//! allocation. After any I/O error or timeout the connection is unusable (the stream may
//! hold half a response) and reports itself broken.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, Request, StrBytes, VersionRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{codes, ClientError};
use crate::Result;

/// Settings shared by every connection a client opens.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Largest response frame accepted; a longer length prefix closes the connection.
    pub max_response_bytes: usize,
    /// Per-API ceilings (api key -> highest version to use), to talk like an older
    /// client or to work around a broker's faulty version.
    pub max_versions: HashMap<i16, i16>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            client_id: "kavka-client".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 128 * 1024 * 1024,
            max_versions: HashMap::new(),
        }
    }
}

pub struct Connection {
    addr: String,
    stream: TcpStream,
    client_id: StrBytes,
    next_correlation_id: i32,
    /// The broker's supported (min, max) per API key, from ApiVersions.
    broker_versions: HashMap<i16, (i16, i16)>,
    request_timeout: Duration,
    max_response_bytes: usize,
    max_versions: HashMap<i16, i16>,
    broken: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates API versions.
    pub async fn connect(addr: &str, options: &ConnectionOptions) -> Result<Self> {
        let stream = match tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(error)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    error,
                })
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: addr.to_string(),
                    error: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                })
            }
        };
        // Latency matters more than packet count for a request/response protocol.
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            addr: addr.to_string(),
            stream,
            client_id: StrBytes::from_string(options.client_id.clone()),
            next_correlation_id: 0,
            broker_versions: HashMap::new(),
            request_timeout: options.request_timeout,
            max_response_bytes: options.max_response_bytes,
            max_versions: options.max_versions.clone(),
            broken: false,
        };
        conn.negotiate_versions().await?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True once an I/O error or timeout left the stream in an unknown state.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The broker's (min, max) for `api`, if it supports the API at all.
    pub fn broker_versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.broker_versions.get(&(api as i16)).copied()
    }

    /// The highest version of `R` both sides support, optionally capped by the caller.
    pub fn version_for<R: Request>(&self, cap: Option<i16>) -> Result<i16> {
        let api = api_key::<R>()?;
        let theirs = self.broker_versions(api);
        let cap = match (cap, self.max_versions.get(&R::KEY).copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ours = match cap {
            Some(cap) => VersionRange {
                min: R::VERSIONS.min,
                max: R::VERSIONS.max.min(cap),
            },
            None => R::VERSIONS,
        };
        pick_version(ours, theirs).ok_or_else(|| ClientError::UnsupportedVersion {
            addr: self.addr.clone(),
            api,
            ours: format!("v{}..v{}", ours.min, ours.max),
            theirs: theirs.map_or("nothing".to_string(), |(lo, hi)| format!("v{lo}..v{hi}")),
        })
    }

    /// Sends `request` at the negotiated version and waits for its response.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response> {
        let version = self.version_for::<R>(None)?;
        self.send_version(request, version, Duration::ZERO).await
    }

    /// Sends `request` at `version`; `extra` extends the request timeout (for long polls).
    pub async fn send_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        extra: Duration,
    ) -> Result<R::Response> {
        let correlation_id = self.write_request(request, version).await?;
        let timeout = self.request_timeout + extra;
        let frame = match tokio::time::timeout(timeout, self.read_frame()).await {
            Ok(r) => r?,
            Err(_) => {
                self.broken = true;
                return Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    ms: timeout.as_millis(),
                });
            }
        };
        decode_response::<R>(&self.addr, frame, version, correlation_id)
    }

    /// Sends a request the broker will not answer (Produce with acks=0).
    pub async fn send_without_response<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<()> {
        self.write_request(request, version).await.map(|_| ())
    }

    async fn write_request<R: Request>(&mut self, request: &R, version: i16) -> Result<i32> {
        if self.broken {
            return Err(self.io_error(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "connection was closed after an earlier failure",
            )));
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1) & i32::MAX;
        let frame = encode_request(request, version, correlation_id, &self.client_id)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot encode request: {e:#}")))?;
        let write = self.stream.write_all(&frame);
        match tokio::time::timeout(self.request_timeout, write).await {
            Ok(Ok(())) => Ok(correlation_id),
            Ok(Err(e)) => {
                self.broken = true;
                Err(self.io_error(e))
            }
            Err(_) => {
                self.broken = true;
                Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    ms: self.request_timeout.as_millis(),
                })
            }
        }
    }

    async fn read_frame(&mut self) -> Result<Bytes> {
        let result = read_frame(&mut self.stream, self.max_response_bytes).await;
        if result.is_err() {
            self.broken = true;
        }
        result.map_err(|e| match e {
            FrameReadError::Io(e) => self.io_error(e),
            FrameReadError::Bad(reason) => ClientError::protocol(&self.addr, reason),
        })
    }

    fn io_error(&self, error: std::io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            error,
        }
    }

    /// ApiVersions handshake. A broker that does not know our ApiVersions version answers
    /// with UNSUPPORTED_VERSION in a v0 body listing its own range; we retry once within it.
    async fn negotiate_versions(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kavka-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::VERSIONS.max.min(
            self.max_versions
                .get(&ApiVersionsRequest::KEY)
                .copied()
                .unwrap_or(i16::MAX),
        );
        for _ in 0..2 {
            let correlation_id = self.write_request(&request, version).await?;
            let frame = match tokio::time::timeout(self.request_timeout, self.read_frame()).await {
                Ok(r) => r?,
                Err(_) => {
                    self.broken = true;
                    return Err(ClientError::Timeout {
                        addr: self.addr.clone(),
                        ms: self.request_timeout.as_millis(),
                    });
                }
            };
            let response = match decode_response::<ApiVersionsRequest>(
                &self.addr,
                frame.clone(),
                version,
                correlation_id,
            ) {
                Ok(r) if r.error_code != codes::UNSUPPORTED_VERSION => r,
                // The error answer is always encoded as v0.
                _ => decode_response::<ApiVersionsRequest>(&self.addr, frame, 0, correlation_id)?,
            };
            if response.error_code == codes::UNSUPPORTED_VERSION {
                let theirs = response
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map(|k| (k.min_version, k.max_version));
                match pick_version(ApiVersionsRequest::VERSIONS, theirs) {
                    Some(v) if v < version => {
                        version = v;
                        continue;
                    }
                    _ => {
                        return Err(ClientError::kafka(
                            response.error_code,
                            &format!("ApiVersions to {}", self.addr),
                            None,
                        ))
                    }
                }
            }
            crate::error::check(
                response.error_code,
                &format!("ApiVersions to {}", self.addr),
                None,
            )?;
            self.broker_versions = versions_table(&response);
            return Ok(());
        }
        Err(ClientError::protocol(
            &self.addr,
            "ApiVersions negotiation did not converge",
        ))
    }
}

/// The broker's ranges as a lookup table.
fn versions_table(response: &ApiVersionsResponse) -> HashMap<i16, (i16, i16)> {
    response
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect()
}

/// The highest version in both ranges.
pub fn pick_version(ours: VersionRange, theirs: Option<(i16, i16)>) -> Option<i16> {
    let (lo, hi) = theirs?;
    let both = ours.intersect(&VersionRange { min: lo, max: hi });
    (!both.is_empty()).then_some(both.max)
}

pub(crate) fn api_key<R: Request>() -> Result<ApiKey> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::InvalidArgument(format!("unknown api key {}", R::KEY)))
}

/// `[i32 length][request header][body]` for one request.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> anyhow::Result<BytesMut> {
    let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown api key"))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let header_version = api.request_header_version(version);
    let mut buf = BytesMut::with_capacity(
        4 + header.compute_size(header_version)? + request.compute_size(version)?,
    );
    buf.extend_from_slice(&[0; 4]);
    header.encode(&mut buf, header_version)?;
    request.encode(&mut buf, version)?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| anyhow::anyhow!("request too large"))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes a response frame (without its length prefix) for a request sent at `version`.
pub fn decode_response<R: Request>(
    addr: &str,
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response> {
    let api = api_key::<R>()?;
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| ClientError::protocol(addr, format!("{api:?} response header: {e:#}")))?;
    if header.correlation_id != correlation_id {
        return Err(ClientError::protocol(
            addr,
            format!(
                "correlation id {} does not match the request's {correlation_id}",
                header.correlation_id
            ),
        ));
    }
    R::Response::decode(&mut frame, version)
        .map_err(|e| ClientError::protocol(addr, format!("{api:?} v{version} response: {e:#}")))
}

enum FrameReadError {
    Io(std::io::Error),
    Bad(String),
}

async fn read_frame(
    stream: &mut TcpStream,
    max: usize,
) -> std::result::Result<Bytes, FrameReadError> {
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(FrameReadError::Io)?;
    let len = kavka_protocol::frame::frame_len(prefix, max)
        .map_err(|e| FrameReadError::Bad(e.to_string()))?;
    let mut buf = BytesMut::zeroed(len);
    stream
        .read_exact(&mut buf)
        .await
        .map_err(FrameReadError::Io)?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use tokio::net::TcpListener;

    #[test]
    fn picks_highest_common_version() {
        let ours = VersionRange { min: 4, max: 18 };
        assert_eq!(pick_version(ours, Some((0, 16))), Some(16));
        assert_eq!(pick_version(ours, Some((0, 3))), None);
        assert_eq!(pick_version(ours, None), None);
        assert_eq!(pick_version(ours, Some((10, 20))), Some(18));
    }

    #[test]
    fn request_frame_has_length_and_header() {
        let frame = encode_request(
            &MetadataRequest::default().with_topics(None),
            12,
            7,
            &StrBytes::from_static_str("t"),
        )
        .unwrap();
        let len = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let (api, header, _) =
            kavka_protocol::frame::decode_request_header(frame.freeze().slice(4..)).unwrap();
        assert_eq!(api, ApiKey::Metadata);
        assert_eq!(header.request_api_version, 12);
        assert_eq!(header.correlation_id, 7);
    }

    #[test]
    fn rejects_wrong_correlation_id_and_garbage() {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(3)
            .encode(&mut buf, 1)
            .unwrap();
        MetadataResponse::default().encode(&mut buf, 12).unwrap();
        let frame = buf.freeze();
        assert!(decode_response::<MetadataRequest>("b", frame.clone(), 12, 3).is_ok());
        assert!(matches!(
            decode_response::<MetadataRequest>("b", frame.clone(), 12, 4),
            Err(ClientError::Protocol { .. })
        ));
        assert!(decode_response::<MetadataRequest>("b", frame.slice(..6), 12, 3).is_err());
    }

    /// A one-connection fake broker: answers ApiVersions (rejecting v3+ like an old broker
    /// would) and then echoes a Metadata response, to exercise framing end to end.
    async fn fake_broker(listener: TcpListener, max_api_versions: i16) {
        let (mut sock, _) = listener.accept().await.unwrap();
        loop {
            let mut prefix = [0u8; 4];
            if sock.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let mut payload = vec![0u8; i32::from_be_bytes(prefix) as usize];
            sock.read_exact(&mut payload).await.unwrap();
            let (api, header, _) =
                kavka_protocol::frame::decode_request_header(Bytes::from(payload)).unwrap();
            let v = header.request_api_version;
            let mut body = BytesMut::new();
            let response_header_version;
            match api {
                ApiKey::ApiVersions => {
                    let (resp, enc_v) = if v > max_api_versions {
                        (
                            ApiVersionsResponse::default()
                                .with_error_code(35)
                                .with_api_keys(vec![ApiVersion::default()
                                    .with_api_key(18)
                                    .with_min_version(0)
                                    .with_max_version(max_api_versions)]),
                            0,
                        )
                    } else {
                        (
                            ApiVersionsResponse::default().with_api_keys(vec![
                                ApiVersion::default()
                                    .with_api_key(18)
                                    .with_min_version(0)
                                    .with_max_version(max_api_versions),
                                ApiVersion::default()
                                    .with_api_key(3)
                                    .with_min_version(0)
                                    .with_max_version(7),
                            ]),
                            v,
                        )
                    };
                    response_header_version = 0;
                    resp.encode(&mut body, enc_v).unwrap();
                }
                ApiKey::Metadata => {
                    assert_eq!(v, 7, "highest common Metadata version");
                    response_header_version = api.response_header_version(v);
                    MetadataResponse::default()
                        .with_controller_id(1.into())
                        .encode(&mut body, v)
                        .unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
            let mut head = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(header.correlation_id)
                .encode(&mut head, response_header_version)
                .unwrap();
            let len = (head.len() + body.len()) as i32;
            sock.write_all(&len.to_be_bytes()).await.unwrap();
            sock.write_all(&head).await.unwrap();
            sock.write_all(&body).await.unwrap();
        }
    }

    #[tokio::test]
    async fn negotiates_down_and_sends() {
        for max_api_versions in [2, 3] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server = tokio::spawn(fake_broker(listener, max_api_versions));
            let mut conn = Connection::connect(&addr, &ConnectionOptions::default())
                .await
                .unwrap();
            assert_eq!(conn.broker_versions(ApiKey::Metadata), Some((0, 7)));
            assert_eq!(conn.version_for::<MetadataRequest>(None).unwrap(), 7);
            assert_eq!(conn.version_for::<MetadataRequest>(Some(4)).unwrap(), 4);
            assert!(conn
                .version_for::<kafka_protocol::messages::FetchRequest>(None)
                .is_err());
            let resp = conn
                .send(&MetadataRequest::default().with_topics(None))
                .await
                .unwrap();
            assert_eq!(resp.controller_id.0, 1);
            drop(conn);
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn oversized_response_breaks_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = sock.read(&mut buf).await;
            sock.write_all(&i32::MAX.to_be_bytes()).await.unwrap();
        });
        let err = Connection::connect(&addr, &ConnectionOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Protocol { .. }), "{err}");
        server.await.unwrap();
    }
}
