//! kavka-client
