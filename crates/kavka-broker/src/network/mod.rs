//! The network layer: accepts connections, frames requests, and writes responses back in
//! request order. It knows nothing of topics; a [`RequestHandler`] turns a frame into a
//! (possibly deferred) response.

mod connection;
mod server;

pub use connection::ConnectionInfo;
pub use server::{serve, Server};

use bytes::Bytes;
use futures_util::future::BoxFuture;

/// What the handler decided for one request frame.
pub enum Dispatch {
    /// A response (full frame, length prefix included) that will be ready later.
    Respond(BoxFuture<'static, Reply>),
    /// The request was unacceptable (unknown API, unsupported version, malformed): close the
    /// connection, as Apache Kafka does.
    Close(String),
}

/// The outcome of one request.
pub enum Reply {
    Frame(Bytes),
    /// The request wants no response (Produce with acks=0).
    Nothing,
    /// Something went wrong that the protocol cannot express: close the connection, so the
    /// client reconnects and retries instead of waiting forever.
    Close(String),
}

pub trait RequestHandler: Send + Sync + 'static {
    /// Called in request order on the connection's reader task. Work that must happen in
    /// request order (appending produced batches) happens here, synchronously; waiting
    /// (long-poll fetch, acks=all, fsync) happens inside the returned future.
    fn dispatch(&self, frame: Bytes, conn: &ConnectionInfo) -> Dispatch;
}
