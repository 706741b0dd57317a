//! The topics only the broker writes: the coordinators' state. Kafka's `Topic.isInternal`.

/// `__consumer_offsets` (group coordinator) and `__transaction_state` (transaction
/// coordinator). Both are key → latest value tables, compacted.
pub const INTERNAL_TOPICS: &[&str] = &[crate::group::OFFSETS_TOPIC, "__transaction_state"];

/// Internal topics are marked so in Metadata, refuse client produce and cannot be deleted.
pub fn is_internal(topic: &str) -> bool {
    INTERNAL_TOPICS.contains(&topic)
}
