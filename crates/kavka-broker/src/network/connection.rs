use super::{Dispatch, Reply, RequestHandler, Server};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use kavka_protocol::frame::frame_len;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Who is on the other end, for handlers and logs.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
}

/// Read chunk: a frame's buffer grows as its bytes arrive, never to a length merely claimed.
const READ_CHUNK: usize = 64 * 1024;

pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    limits: Server,
    handler: Arc<dyn RequestHandler>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Pending>(limits.max_in_flight.max(1));
    // Bytes of requests read but not yet answered are bounded too, so a client that pipelines
    // large frames behind a parked fetch cannot make us buffer max_in_flight x 100 MiB.
    let budget = Arc::new(Semaphore::new(limits.max_request_bytes.max(1)));
    let writer = tokio::spawn(write_responses(wr, rx));
    let info = ConnectionInfo { peer };
    let mut rd = BufReader::with_capacity(READ_CHUNK, rd);
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, limits.max_request_bytes, &budget) => f,
            _ = shutdown.changed() => break,
        };
        let (frame, permit) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, "closing connection: {e}");
                break;
            }
        };
        match handler.dispatch(frame, &info) {
            Dispatch::Respond(fut) => {
                if tx
                    .send(Pending {
                        fut,
                        _permit: permit,
                    })
                    .await
                    .is_err()
                {
                    break; // the writer hit an error; the socket is gone
                }
            }
            Dispatch::Close(reason) => {
                tracing::info!(%peer, "closing connection: {reason}");
                break;
            }
        }
    }
    // Let responses already promised drain, then close.
    drop(tx);
    let _ = writer.await;
}

/// A response on its way, holding the request's share of the connection's byte budget.
struct Pending {
    fut: BoxFuture<'static, Reply>,
    _permit: OwnedSemaphorePermit,
}

/// Reads one length-prefixed frame; `Ok(None)` on a clean EOF between frames. Waits for
/// the frame's bytes to fit the connection's budget before reading its body.
async fn read_frame<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    max: usize,
    budget: &Arc<Semaphore>,
) -> std::io::Result<Option<(Bytes, OwnedSemaphorePermit)>> {
    let mut prefix = [0u8; 4];
    match rd.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame_len(prefix, max)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    debug_assert!(len <= max);
    let permits = u32::try_from(len.max(1)).unwrap_or(u32::MAX);
    let permit = budget
        .clone()
        .acquire_many_owned(permits)
        .await
        .map_err(|_| std::io::Error::other("connection closing"))?;
    let mut buf = BytesMut::with_capacity(len.min(READ_CHUNK));
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK);
        buf.reserve(want);
        let n = (&mut *rd).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "truncated frame",
            ));
        }
    }
    Ok(Some((buf.freeze(), permit)))
}

/// Awaits each response in request order and writes it; batches writes while more responses
/// are ready.
async fn write_responses(wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Pending>) {
    let mut wr = BufWriter::with_capacity(READ_CHUNK, wr);
    while let Some(pending) = rx.recv().await {
        match pending.fut.await {
            Reply::Frame(bytes) => {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                tracing::warn!("closing connection: {reason}");
                let _ = wr.flush().await;
                return;
            }
        }
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}
