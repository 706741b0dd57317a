//! The aborted-transaction index of a segment (Kafka's `TransactionIndex`, `<base>.txnindex`):
//! one entry per transaction aborted by a marker in that segment, so a read_committed fetch
//! can tell the consumer which producers' records to drop without the broker filtering them.

/// One aborted transaction: `producer_id`'s records in `first_offset..=last_offset` (the
/// abort marker is at `last_offset`) are not to be shown to read_committed consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The last stable offset when the abort marker was written.
    pub last_stable_offset: i64,
}
