use super::connection::serve_connection;
use super::RequestHandler;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// Largest request frame accepted (`socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// Requests read ahead of their responses on one connection; bounds memory and gives
    /// back-pressure to a client that pipelines without reading.
    pub max_in_flight: usize,
}

/// Accepts connections until `shutdown` flips to true. Each connection runs as its own task,
/// so a slow or hostile client never stalls the others.
pub async fn serve(
    listener: TcpListener,
    limits: Server,
    handler: Arc<dyn RequestHandler>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(serve_connection(stream, peer, limits, handler, shutdown));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    tracing::info!(
        "listener on {:?} stopped",
        listener
            .local_addr()
            .ok()
            .map(|a: SocketAddr| a.to_string())
    );
}
