//! The transaction coordinator (`__transaction_state`) and transaction markers.
//!
//! - `state`: one transactional id's state machine (pure); `record`: the
//!   `__transaction_state` record layouts; `config`: the `transaction.*` keys.
//! - `coordinator`: ties them to the log, sharded by `__transaction_state` partition; its
//!   `leadership` part moves shards with the partitions' leadership.
//! - `markers`: writing the markers of a decided transaction to its partitions.
//! - `verification`: a partition leader asking the coordinator whether a partition is in a
//!   producer's transaction before appending its first transactional batch (KIP-890).

pub mod config;
pub mod coordinator;
pub mod leadership;
pub mod markers;
pub mod record;
pub mod state;
pub mod verification;

pub use config::TxnConfig;
pub use coordinator::{MarkerWriter, TransactionCoordinator, TXN_TOPIC};
pub use state::{TxnError, TxnState};

#[cfg(test)]
mod coordinator_tests;
#[cfg(test)]
mod verification_tests;
