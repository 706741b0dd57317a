//! The transaction coordinator (`__transaction_state`) and transaction markers.

pub mod markers;
