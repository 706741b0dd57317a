//! The follower's connection to a partition leader (Kafka's `BrokerBlockingSender` /
//! `NetworkClient` as the replica fetcher uses it): one TCP connection to one broker, one
//! request in flight at a time, Kafka-protocol frames.
//!
//! The leader is another broker and so untrusted input: a response's length is checked
//! against [`MAX_RESPONSE_BYTES`] before it is read, its buffer grows with the bytes that
//! arrive, and its correlation id must be the request's. Every step is bounded by the
//! socket timeout (`replica.socket.timeout.ms`; a Fetch adds its `max_wait_ms`). After any
//! failure the connection is dropped, since the stream may hold half a frame; the next
//! request reconnects.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response accepted: Kafka's default `socket.request.max.bytes`. A fetch response
/// is bounded by `replica.fetch.response.max.bytes` (10 MiB by default) plus one batch.
pub const MAX_RESPONSE_BYTES: usize = kavka_protocol::frame::DEFAULT_MAX_REQUEST_BYTES;

/// Fetch v12: the last version naming topics (v13+ use topic ids), with the leader-epoch
/// fields replication needs (current_leader_epoch, last_fetched_epoch, diverging_epoch).
pub const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v4 (flexible; replica_id since v3).
pub const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// ListOffsets v7 (current_leader_epoch since v4, flexible since v6).
pub const LIST_OFFSETS_VERSION: i16 = 7;

/// Bytes read from the socket per step while a frame arrives.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum LeaderClientError {
    #[error("cannot connect to leader {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("I/O error talking to leader {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("leader {addr} did not answer {api:?} within {ms} ms")]
    Timeout { addr: String, api: ApiKey, ms: u128 },
    /// A frame we cannot accept: too long, wrong correlation id, undecodable.
    #[error("bad response from leader {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("cannot encode {api:?} v{version}: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Where to reach a leader and how long to wait for it.
#[derive(Debug, Clone)]
pub struct LeaderClientConfig {
    /// `host:port` of the leader's listener.
    pub addr: String,
    /// The client id in request headers (Kafka's replica fetcher uses
    /// `broker-<id>-fetcher-<n>`).
    pub client_id: String,
    /// `replica.socket.timeout.ms`: bounds connecting and every request.
    pub socket_timeout: Duration,
}

/// A lazily (re)connecting client to one leader broker.
pub struct LeaderClient {
    config: LeaderClientConfig,
    client_id: StrBytes,
    stream: Option<TcpStream>,
    next_correlation_id: i32,
}

impl std::fmt::Debug for LeaderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderClient")
            .field("addr", &self.config.addr)
            .field("connected", &self.stream.is_some())
            .finish()
    }
}

impl LeaderClient {
    /// A client that connects on its first request.
    pub fn new(config: LeaderClientConfig) -> Self {
        let client_id = StrBytes::from_string(config.client_id.clone());
        LeaderClient {
            config,
            client_id,
            stream: None,
            next_correlation_id: 0,
        }
    }

    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Drops the connection (the next request reconnects).
    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    /// Connects now unless connected, within the socket timeout.
    pub async fn connect(&mut self) -> Result<(), LeaderClientError> {
        if self.stream.is_some() {
            return Ok(());
        }
        let addr = self.config.addr.clone();
        let connect = TcpStream::connect(addr.as_str());
        let stream = match tokio::time::timeout(self.config.socket_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(LeaderClientError::Connect { addr, source }),
            Err(_) => {
                return Err(LeaderClientError::Connect {
                    addr,
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                })
            }
        };
        // Request/response traffic: latency over packet count.
        let _ = stream.set_nodelay(true);
        self.stream = Some(stream);
        Ok(())
    }

    /// A replica Fetch (the request carries `replica_id`). The wait is the socket timeout
    /// plus the request's `max_wait_ms`, so a long poll is not mistaken for a dead leader.
    pub async fn fetch(
        &mut self,
        request: &FetchRequest,
        version: i16,
    ) -> Result<FetchResponse, LeaderClientError> {
        let long_poll = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
        self.send(request, version, long_poll).await
    }

    /// OffsetForLeaderEpoch: where the leader's log for each asked epoch ends.
    pub async fn offset_for_leader_epoch(
        &mut self,
        request: &OffsetForLeaderEpochRequest,
        version: i16,
    ) -> Result<OffsetForLeaderEpochResponse, LeaderClientError> {
        self.send(request, version, Duration::ZERO).await
    }

    /// ListOffsets as a replica: the leader's log start offset when the follower fell behind
    /// it.
    pub async fn list_offsets(
        &mut self,
        request: &ListOffsetsRequest,
        version: i16,
    ) -> Result<ListOffsetsResponse, LeaderClientError> {
        self.send(request, version, Duration::ZERO).await
    }

    /// Sends any request at `version` and waits for its response, at most the socket timeout
    /// plus `extra`. Connects first if needed; drops the connection on any failure, and when
    /// the returned future is dropped before it completes.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        extra: Duration,
    ) -> Result<R::Response, LeaderClientError> {
        let result = self.exchange(request, version, extra).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        extra: Duration,
    ) -> Result<R::Response, LeaderClientError> {
        let api = api_key::<R>();
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1) & i32::MAX;
        let frame = encode_request(request, version, correlation_id, &self.client_id)?;
        self.connect().await?;
        let addr = self.config.addr.clone();
        let timeout = self.config.socket_timeout + extra;
        // Out of `self` while in use: if this future is dropped halfway (the caller stopped
        // waiting), the half-used connection goes with it instead of serving the next
        // request a stale response.
        let Some(mut stream) = self.stream.take() else {
            return Err(LeaderClientError::Io {
                addr,
                source: std::io::ErrorKind::NotConnected.into(),
            });
        };
        let round_trip = async {
            stream
                .write_all(&frame)
                .await
                .map_err(|source| LeaderClientError::Io {
                    addr: addr.clone(),
                    source,
                })?;
            read_frame(&mut stream, MAX_RESPONSE_BYTES, &addr).await
        };
        let response = match tokio::time::timeout(timeout, round_trip).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(LeaderClientError::Timeout {
                    addr,
                    api,
                    ms: timeout.as_millis(),
                })
            }
        };
        let response = decode_response::<R>(&addr, response, version, correlation_id)?;
        self.stream = Some(stream);
        Ok(response)
    }
}

fn api_key<R: Request>() -> ApiKey {
    // Every generated request type carries a key the enum knows.
    ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions)
}

/// `[i32 length][request header][body]`.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<BytesMut, LeaderClientError> {
    let api = api_key::<R>();
    let encode_error = |reason: String| LeaderClientError::Encode {
        api,
        version,
        reason,
    };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let header_version = api.request_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + request.compute_size(version)?))
        .map_err(|e| encode_error(format!("{e:#}")))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.extend_from_slice(&[0; 4]);
    header
        .encode(&mut buf, header_version)
        .and_then(|_| request.encode(&mut buf, version))
        .map_err(|e| encode_error(format!("{e:#}")))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| encode_error("too large".into()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes a response frame (without its length prefix) to a request sent at `version`
/// with `correlation_id`.
pub fn decode_response<R: Request>(
    addr: &str,
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, LeaderClientError> {
    let api = api_key::<R>();
    let protocol = |reason: String| LeaderClientError::Protocol {
        addr: addr.to_string(),
        reason,
    };
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| protocol(format!("{api:?} response header: {e:#}")))?;
    if header.correlation_id != correlation_id {
        return Err(protocol(format!(
            "correlation id {} does not match the request's {correlation_id}",
            header.correlation_id
        )));
    }
    R::Response::decode(&mut frame, version)
        .map_err(|e| protocol(format!("{api:?} v{version} response: {e:#}")))
}

/// Reads one length-prefixed frame, refusing a length above `max` before reading it; the
/// buffer grows with what arrives, so a lying prefix costs no memory.
async fn read_frame(
    stream: &mut TcpStream,
    max: usize,
    addr: &str,
) -> Result<Bytes, LeaderClientError> {
    let io = |source| LeaderClientError::Io {
        addr: addr.to_string(),
        source,
    };
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.map_err(io)?;
    let len =
        kavka_protocol::frame::frame_len(prefix, max).map_err(|e| LeaderClientError::Protocol {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let mut buf = BytesMut::with_capacity(len.min(READ_CHUNK));
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK);
        buf.reserve(want);
        let n = (&mut *stream)
            .take(want as u64)
            .read_buf(&mut buf)
            .await
            .map_err(io)?;
        if n == 0 {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
    use kafka_protocol::messages::{ResponseHeader, TopicName};
    use tokio::net::TcpListener;

    fn config(addr: String) -> LeaderClientConfig {
        LeaderClientConfig {
            addr,
            client_id: "broker-1-fetcher-0".into(),
            socket_timeout: Duration::from_secs(5),
        }
    }

    /// A fake leader that reads one request and writes `reply(correlation_id)` raw.
    async fn fake_leader(reply: impl Fn(i32) -> Vec<u8> + Send + 'static) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut prefix = [0u8; 4];
            s.read_exact(&mut prefix).await.unwrap();
            let len = kavka_protocol::frame::frame_len(prefix, 1 << 20).unwrap();
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.unwrap();
            let p = kavka_protocol::frame::peek_prefix(&body).unwrap();
            assert_eq!(p.api_key, ApiKey::Fetch as i16);
            assert_eq!(p.api_version, FETCH_VERSION);
            let _ = s.write_all(&reply(p.correlation_id)).await;
            // Hold the socket until the client is done.
            let _ = s.read(&mut [0u8; 1]).await;
        });
        addr
    }

    fn fetch_response_frame(correlation_id: i32) -> Vec<u8> {
        let resp = FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))]);
        let version = FETCH_VERSION;
        let hv = ApiKey::Fetch.response_header_version(version);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut buf, hv)
            .unwrap();
        resp.encode(&mut buf, version).unwrap();
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        buf.to_vec()
    }

    #[tokio::test]
    async fn fetch_round_trip_with_a_fake_leader() {
        let addr = fake_leader(fetch_response_frame).await;
        let mut client = LeaderClient::new(config(addr));
        let resp = client
            .fetch(
                &FetchRequest::default().with_replica_id(1.into()),
                FETCH_VERSION,
            )
            .await
            .unwrap();
        assert_eq!(resp.responses.len(), 1);
        assert_eq!(resp.responses[0].topic.0.as_str(), "t");
        assert!(client.is_connected());
    }

    #[tokio::test]
    async fn a_wrong_correlation_id_is_refused_and_drops_the_connection() {
        let addr = fake_leader(|c| fetch_response_frame(c + 1)).await;
        let mut client = LeaderClient::new(config(addr));
        let err = client
            .fetch(&FetchRequest::default(), FETCH_VERSION)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LeaderClientError::Protocol { reason, .. } if reason.contains("correlation")),
            "{err}"
        );
        assert!(!client.is_connected());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading() {
        let addr = fake_leader(|_| ((MAX_RESPONSE_BYTES + 1) as i32).to_be_bytes().to_vec()).await;
        let mut client = LeaderClient::new(config(addr));
        let err = client
            .fetch(&FetchRequest::default(), FETCH_VERSION)
            .await
            .unwrap_err();
        assert!(matches!(err, LeaderClientError::Protocol { .. }), "{err}");
        let addr = fake_leader(|_| (-5i32).to_be_bytes().to_vec()).await;
        let mut client = LeaderClient::new(config(addr));
        let err = client
            .fetch(&FetchRequest::default(), FETCH_VERSION)
            .await
            .unwrap_err();
        assert!(matches!(err, LeaderClientError::Protocol { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_an_io_error() {
        let addr = fake_leader(|c| {
            let mut f = fetch_response_frame(c);
            f.truncate(f.len() - 2);
            f
        })
        .await;
        let mut client = LeaderClient::new(config(addr));
        // The fake keeps the socket open after the short frame: the read waits until the
        // timeout, or fails at EOF once the fake gives up. Either way it is an error.
        client.config.socket_timeout = Duration::from_millis(300);
        let err = client
            .fetch(&FetchRequest::default(), FETCH_VERSION)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LeaderClientError::Timeout { .. } | LeaderClientError::Io { .. }
            ),
            "{err}"
        );
        assert!(!client.is_connected());
    }

    #[tokio::test]
    async fn a_request_abandoned_halfway_drops_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let silent = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Never answers; reads until the client goes away.
            let mut buf = [0u8; 1024];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {}
        });
        let mut client = LeaderClient::new(config(addr));
        let abandoned = tokio::time::timeout(
            Duration::from_millis(200),
            client.fetch(&FetchRequest::default(), FETCH_VERSION),
        )
        .await;
        assert!(abandoned.is_err(), "the fake never answers");
        assert!(!client.is_connected());
        // The fake sees the connection close.
        tokio::time::timeout(Duration::from_secs(10), silent)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut client = LeaderClient::new(config(addr));
        let err = client
            .offset_for_leader_epoch(
                &OffsetForLeaderEpochRequest::default(),
                OFFSET_FOR_LEADER_EPOCH_VERSION,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LeaderClientError::Connect { .. }), "{err}");
    }
}
