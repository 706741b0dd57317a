use super::{Dispatch, Reply, RequestHandler, Server};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use kavka_protocol::frame::frame_len;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

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
    let (tx, rx) = mpsc::channel::<BoxFuture<'static, Reply>>(limits.max_in_flight.max(1));
    let writer = tokio::spawn(write_responses(wr, rx));
    let info = ConnectionInfo { peer };
    let mut rd = BufReader::with_capacity(READ_CHUNK, rd);
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, limits.max_request_bytes) => f,
            _ = shutdown.changed() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, "closing connection: {e}");
                break;
            }
        };
        match handler.dispatch(frame, &info) {
            Dispatch::Respond(fut) => {
                if tx.send(fut).await.is_err() {
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

/// Reads one length-prefixed frame; `Ok(None)` on a clean EOF between frames.
async fn read_frame<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    max: usize,
) -> std::io::Result<Option<Bytes>> {
    let mut prefix = [0u8; 4];
    match rd.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame_len(prefix, max)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
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
    Ok(Some(buf.freeze()))
}

/// Awaits each response in request order and writes it; batches writes while more responses
/// are ready.
async fn write_responses(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<BoxFuture<'static, Reply>>,
) {
    let mut wr = BufWriter::with_capacity(READ_CHUNK, wr);
    while let Some(fut) = rx.recv().await {
        match fut.await {
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
