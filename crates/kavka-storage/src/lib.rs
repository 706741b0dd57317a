//! kavka-storage
