//! A TCP [`MetadataTransport`]: Raft RPCs between quorum members as checksummed frames
//! (`[len u32 BE][crc32c u32 BE][JSON]`) on one connection per target, request then reply.
//!
//! Every request names the cluster and the target member; a server refuses a request meant for
//! another cluster or member (a stale `controller.quorum.voters` entry must not reach the wrong
//! quorum). Lengths are checked against [`MAX_RPC_BYTES`] before anything is allocated.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::network::{BoxFuture, MetadataTransport, RpcResult};
use super::{MetadataRaft, MetadataRaftConfig, RaftNodeId};
use crate::frame;

type C = MetadataRaftConfig;

/// Upper bound of one RPC frame (an AppendEntries of many batches, or a snapshot chunk).
pub const MAX_RPC_BYTES: u32 = 64 * 1024 * 1024;
/// How long a started frame may take to arrive in full (64 MiB at a few MB/s).
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Envelope {
    cluster: String,
    from: RaftNodeId,
    target: RaftNodeId,
    body: Request,
}

#[derive(Serialize, Deserialize)]
enum Request {
    AppendEntries(AppendEntriesRequest<C>),
    InstallSnapshot(InstallSnapshotRequest<C>),
    Vote(VoteRequest<RaftNodeId>),
    /// A controller operation forwarded by a member that is not the active controller
    /// (the JSON of the controller's operation; opaque to the transport).
    Controller(String),
}

#[derive(Serialize, Deserialize)]
enum Reply {
    AppendEntries(Result<AppendEntriesResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    ),
    Vote(Result<VoteResponse<RaftNodeId>, RaftError<RaftNodeId>>),
    /// The outcome of a forwarded controller operation (JSON), or why it was not run.
    Controller(Result<String, String>),
    /// The request was for another cluster or member.
    Refused(String),
}

async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    value: &impl Serialize,
) -> io::Result<()> {
    let payload = serde_json::to_vec(value).map_err(io::Error::other)?;
    let framed = frame::encode(&payload, MAX_RPC_BYTES)
        .ok_or_else(|| io::Error::other("raft RPC over the frame limit"))?;
    writer.write_all(&framed).await?;
    writer.flush().await
}

/// Reads one framed JSON message. Waiting for its first byte is unbounded (an idle connection
/// between requests is normal); once it has begun, the whole frame must arrive within
/// `frame_timeout`, so a peer that announces a length and stalls loses the connection
/// instead of pinning a task. Malformed bytes are an `InvalidData` error.
async fn read_message<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    reader: &mut R,
    frame_timeout: Duration,
) -> io::Result<T> {
    let mut first = [0u8; 1];
    reader.read_exact(&mut first).await?;
    let payload = tokio::time::timeout(frame_timeout, read_frame_rest(reader, first))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "raft RPC frame stalled"))??;
    serde_json::from_slice(&payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads the rest of a frame whose first byte is `first`. The payload buffer grows with the bytes
/// actually received, so an announced length costs no memory until the peer sends it.
async fn read_frame_rest<R: AsyncRead + Unpin>(
    reader: &mut R,
    [first]: [u8; 1],
) -> io::Result<Vec<u8>> {
    let mut bytes = [first, 0, 0, 0, 0, 0, 0, 0];
    reader.read_exact(&mut bytes[1..]).await?;
    let header = frame::Header::parse(bytes);
    if header.len > MAX_RPC_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "raft RPC frame over the limit",
        ));
    }
    let mut payload = Vec::new();
    (&mut *reader)
        .take(u64::from(header.len))
        .read_to_end(&mut payload)
        .await?;
    if payload.len() < header.len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "raft RPC frame truncated",
        ));
    }
    if !header.matches(&payload) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "raft RPC frame CRC mismatch",
        ));
    }
    Ok(payload)
}

/// Runs controller operations forwarded by other members (the controller implements it).
pub trait ForwardedOpHandler: Send + Sync + 'static {
    /// Runs one operation (JSON) and returns its outcome (JSON), or why it could not run.
    fn handle(&self, op: String) -> BoxFuture<Result<String, String>>;
}

/// Where the server finds the handler of forwarded operations; set once the controller exists
/// (it is created after the Raft member whose RPCs this server already answers).
pub type ForwardSlot = Arc<std::sync::OnceLock<Arc<dyn ForwardedOpHandler>>>;

/// Most connections a server keeps open at once (a voter needs a few per peer); more are
/// closed at accept, so a flood of connections cannot exhaust memory or file descriptors.
const MAX_SERVER_CONNECTIONS: usize = 256;

/// Serves Raft RPCs for member `node_id` of `cluster` on `listener` until the task is aborted.
pub fn serve(
    listener: TcpListener,
    cluster: String,
    node_id: RaftNodeId,
    raft: MetadataRaft,
) -> JoinHandle<()> {
    serve_with_forwarding(listener, cluster, node_id, raft, ForwardSlot::default())
}

/// [`serve`], also answering controller operations forwarded to this member.
pub fn serve_with_forwarding(
    listener: TcpListener,
    cluster: String,
    node_id: RaftNodeId,
    raft: MetadataRaft,
    forward: ForwardSlot,
) -> JoinHandle<()> {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_SERVER_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "raft transport: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                warn!(%peer, "raft transport: too many connections; closing a new one");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (raft, cluster, forward) = (raft.clone(), cluster.clone(), forward.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve_connection(stream, &cluster, node_id, &raft, &forward).await {
                    debug!(%peer, error = %e, "raft transport: connection closed");
                }
            });
        }
    })
}

async fn serve_connection(
    mut stream: TcpStream,
    cluster: &str,
    node_id: RaftNodeId,
    raft: &MetadataRaft,
    forward: &ForwardSlot,
) -> io::Result<()> {
    loop {
        let envelope: Envelope = match read_message(&mut stream, FRAME_READ_TIMEOUT).await {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = if envelope.cluster != cluster || envelope.target != node_id {
            Reply::Refused(format!(
                "member {node_id} of cluster {cluster} got a request from member {} for member {} \
                 of cluster {}",
                envelope.from, envelope.target, envelope.cluster
            ))
        } else {
            match envelope.body {
                Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
                Request::InstallSnapshot(rpc) => {
                    Reply::InstallSnapshot(raft.install_snapshot(rpc).await)
                }
                Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
                Request::Controller(op) => match forward.get() {
                    Some(handler) => Reply::Controller(handler.handle(op).await),
                    None => Reply::Controller(Err("the controller is not started yet".into())),
                },
            }
        };
        write_message(&mut stream, &reply).await?;
    }
}

type Connection = Arc<tokio::sync::Mutex<Option<TcpStream>>>;

/// The client side: one lazily (re)connected stream per target member.
pub struct TcpTransport {
    cluster: String,
    peers: Mutex<BTreeMap<RaftNodeId, SocketAddr>>,
    connections: Mutex<BTreeMap<RaftNodeId, Connection>>,
    /// Forwarded controller operations use their own connections, so a slow one never delays
    /// a vote or heartbeat queued behind it.
    forward_connections: Mutex<BTreeMap<RaftNodeId, Connection>>,
    request_timeout: Duration,
}

fn unreachable<E: std::error::Error>(
    e: &io::Error,
) -> RPCError<RaftNodeId, openraft::BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(e))
}

impl TcpTransport {
    /// A transport to the members in `peers` (id → address, Kafka's `controller.quorum.voters`).
    pub fn new(
        cluster: &str,
        peers: BTreeMap<RaftNodeId, SocketAddr>,
        request_timeout: Duration,
    ) -> Arc<TcpTransport> {
        Arc::new(TcpTransport {
            cluster: cluster.to_owned(),
            peers: Mutex::new(peers),
            connections: Mutex::new(BTreeMap::new()),
            forward_connections: Mutex::new(BTreeMap::new()),
            request_timeout,
        })
    }

    /// Sets or changes the address of member `id`; its connection is re-established.
    pub fn set_peer(&self, id: RaftNodeId, addr: SocketAddr) {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, addr);
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        self.forward_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn connection(&self, target: RaftNodeId, forwarded: bool) -> (Option<SocketAddr>, Connection) {
        let addr = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&target)
            .copied();
        let pool = if forwarded {
            &self.forward_connections
        } else {
            &self.connections
        };
        let conn = Arc::clone(
            pool.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(target)
                .or_default(),
        );
        (addr, conn)
    }

    /// Forwards a controller operation (JSON) to member `target`, which runs it if it is the
    /// active controller; returns its outcome (JSON) or the reason it did not run.
    pub async fn forward(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        op: String,
        timeout: Duration,
    ) -> io::Result<Result<String, String>> {
        match self
            .call_on(from, target, Request::Controller(op), true, timeout)
            .await?
        {
            Reply::Controller(outcome) => Ok(outcome),
            Reply::Refused(reason) => Ok(Err(reason)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a reply of the wrong kind",
            )),
        }
    }

    /// Sends one request and waits for its reply; any failure drops the connection.
    fn call(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        body: Request,
    ) -> BoxFuture<io::Result<Reply>> {
        self.call_on(from, target, body, false, self.request_timeout)
    }

    fn call_on(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        body: Request,
        forwarded: bool,
        timeout: Duration,
    ) -> BoxFuture<io::Result<Reply>> {
        let (addr, conn) = self.connection(target, forwarded);
        let envelope = Envelope {
            cluster: self.cluster.clone(),
            from,
            target,
            body,
        };
        Box::pin(async move {
            let addr = addr.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no address for member {target}"),
                )
            })?;
            let mut guard = conn.lock().await;
            // The stream leaves the slot for the exchange and goes back only after a whole
            // reply was read. A caller that gives up mid-exchange (openraft drops RPC futures
            // at its own timeouts) drops the stream with it, so the next request can never
            // read the reply meant for an abandoned one.
            let idle = guard.take();
            let exchange = async move {
                let mut stream = match idle {
                    Some(stream) => stream,
                    None => {
                        let stream = TcpStream::connect(addr).await?;
                        let _ = stream.set_nodelay(true);
                        stream
                    }
                };
                write_message(&mut stream, &envelope).await?;
                let reply = read_message::<_, Reply>(&mut stream, FRAME_READ_TIMEOUT).await?;
                Ok::<_, io::Error>((reply, stream))
            };
            let result = match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok((reply, stream))) => {
                    *guard = Some(stream);
                    Ok(reply)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "raft RPC timed out",
                )),
            };
            result
        })
    }
}

/// Turns the outcome of [`TcpTransport::call`] into openraft's RPC result: `pick` takes the
/// reply of the expected kind; a refusal, a reply of another kind or an I/O failure make the
/// target unreachable for this RPC.
async fn answer<T, E: std::error::Error>(
    target: RaftNodeId,
    call: BoxFuture<io::Result<Reply>>,
    pick: fn(Reply) -> Option<Result<T, E>>,
) -> RpcResult<T, E> {
    let invalid = |what: String| unreachable(&io::Error::new(io::ErrorKind::InvalidData, what));
    match call.await.map_err(|e| unreachable(&e))? {
        Reply::Refused(reason) => Err(invalid(reason)),
        reply => match pick(reply) {
            Some(result) => result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e))),
            None => Err(invalid("a reply of the wrong kind".to_owned())),
        },
    }
}

impl MetadataTransport for TcpTransport {
    fn append_entries(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: AppendEntriesRequest<C>,
    ) -> BoxFuture<RpcResult<AppendEntriesResponse<RaftNodeId>>> {
        let call = self.call(from, target, Request::AppendEntries(rpc));
        Box::pin(answer(target, call, |reply| match reply {
            Reply::AppendEntries(result) => Some(result),
            _ => None,
        }))
    }

    fn install_snapshot(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: InstallSnapshotRequest<C>,
    ) -> BoxFuture<
        RpcResult<InstallSnapshotResponse<RaftNodeId>, RaftError<RaftNodeId, InstallSnapshotError>>,
    > {
        let call = self.call(from, target, Request::InstallSnapshot(rpc));
        Box::pin(answer(target, call, |reply| match reply {
            Reply::InstallSnapshot(result) => Some(result),
            _ => None,
        }))
    }

    fn vote(
        &self,
        from: RaftNodeId,
        target: RaftNodeId,
        rpc: VoteRequest<RaftNodeId>,
    ) -> BoxFuture<RpcResult<VoteResponse<RaftNodeId>>> {
        let call = self.call(from, target, Request::Vote(rpc));
        Box::pin(answer(target, call, |reply| match reply {
            Reply::Vote(result) => Some(result),
            _ => None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        frame::encode(payload, MAX_RPC_BYTES).expect("under the limit")
    }

    #[tokio::test]
    async fn a_peer_that_stalls_mid_frame_times_out() {
        let (mut peer, mut server) = tokio::io::duplex(1024);
        // Announces 64 MiB, sends ten bytes, then stalls with the connection open.
        let mut partial = MAX_RPC_BYTES.to_be_bytes().to_vec();
        partial.extend_from_slice(&[0u8; 4]);
        partial.extend_from_slice(&[b'x'; 10]);
        peer.write_all(&partial).await.expect("write");
        // Bounded, so a reader that waits forever fails the test instead of hanging it.
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            read_message::<_, Envelope>(&mut server, Duration::from_millis(50)),
        )
        .await
        .expect("the read gave up on the stalled frame");
        assert_eq!(read.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        drop(peer);
    }

    #[tokio::test]
    async fn a_length_over_the_limit_is_refused_before_reading_the_payload() {
        let (mut peer, mut server) = tokio::io::duplex(1024);
        let mut header = (MAX_RPC_BYTES + 1).to_be_bytes().to_vec();
        header.extend_from_slice(&[0u8; 4]);
        peer.write_all(&header).await.expect("write");
        let read = read_message::<_, Envelope>(&mut server, FRAME_READ_TIMEOUT).await;
        assert_eq!(
            read.err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidData)
        );
    }

    #[tokio::test]
    async fn malformed_json_and_bad_checksums_are_errors() {
        for bytes in [
            framed(b"{not json"),
            framed(br#"{"cluster":"c","from":1,"target":2,"body":{"Nope":1}}"#),
            {
                let mut corrupt = framed(b"{}");
                if let Some(last) = corrupt.last_mut() {
                    *last ^= 0xff;
                }
                corrupt
            },
        ] {
            let (mut peer, mut server) = tokio::io::duplex(1024);
            peer.write_all(&bytes).await.expect("write");
            let read = read_message::<_, Envelope>(&mut server, FRAME_READ_TIMEOUT).await;
            assert_eq!(
                read.err().map(|e| e.kind()),
                Some(io::ErrorKind::InvalidData)
            );
        }
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_an_unexpected_eof() {
        let (mut peer, mut server) = tokio::io::duplex(1024);
        let bytes = framed(br#"{"Refused":"x"}"#);
        peer.write_all(&bytes[..bytes.len() - 3])
            .await
            .expect("write");
        drop(peer);
        let read = read_message::<_, Reply>(&mut server, FRAME_READ_TIMEOUT).await;
        assert_eq!(
            read.err().map(|e| e.kind()),
            Some(io::ErrorKind::UnexpectedEof)
        );
    }

    /// A caller that abandons a request mid-exchange must not leave its reply for the next
    /// request on the same connection (openraft drops RPC futures at its own timeouts).
    #[tokio::test]
    async fn an_abandoned_request_never_leaves_its_reply_to_the_next() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut served = 0u32;
            // Bounded: at most a few connections and requests.
            while served < 4 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                while served < 4 {
                    let Ok(env) =
                        read_message::<_, Envelope>(&mut stream, FRAME_READ_TIMEOUT).await
                    else {
                        break;
                    };
                    served += 1;
                    let label = match env.body {
                        Request::Controller(op) => op,
                        _ => String::new(),
                    };
                    if label == "slow" {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    if write_message(&mut stream, &Reply::Controller(Ok(label)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        let transport = TcpTransport::new("c", BTreeMap::from([(2, addr)]), Duration::from_secs(5));
        let slow = transport.forward(1, 2, "slow".into(), Duration::from_secs(5));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slow)
                .await
                .is_err(),
            "the slow request should still be running when abandoned"
        );
        let next = transport
            .forward(1, 2, "fast".into(), Duration::from_secs(5))
            .await
            .expect("second request");
        assert_eq!(next, Ok("fast".to_owned()));
        server.abort();
    }

    #[tokio::test]
    async fn a_whole_frame_round_trips() {
        let (mut peer, mut server) = tokio::io::duplex(1024);
        write_message(&mut peer, &Reply::Refused("elsewhere".to_owned()))
            .await
            .expect("write");
        let read = read_message::<_, Reply>(&mut server, FRAME_READ_TIMEOUT)
            .await
            .expect("read");
        assert!(matches!(read, Reply::Refused(ref r) if r == "elsewhere"));
    }
}
