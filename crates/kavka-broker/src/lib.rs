//! kavka-broker
