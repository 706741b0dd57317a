//! Transaction markers: the coordinator's side (Kafka's `TransactionMarkerChannelManager`)
//! and the partition leader's side (WriteTxnMarkers). SCAFFOLD: owned by the markers helper.

use kavka_protocol::records::ControlType;

/// What the coordinator asks to be written once a transaction is decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The leader epoch of the transaction's `__transaction_state` partition.
    pub coordinator_epoch: i32,
    pub control: ControlType,
    /// Every partition of the transaction (data partitions and `__consumer_offsets` ones).
    pub partitions: Vec<(String, i32)>,
}

/// Why markers could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// The caller stopped being the coordinator of this transaction (its check said so).
    #[error("no longer the coordinator of the transaction")]
    NotCoordinator,
    #[error("transaction markers are not written yet")]
    Unavailable,
}
