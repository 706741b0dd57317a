//! Hands out producer ids from blocks the controller allocates in the metadata log (Kafka's
//! `RPCProducerIdManager`, minus the RPC on a single node). A block is committed before any
//! id of it is used, so a restart never hands out an id twice; the unused rest of a block
//! is simply skipped after a restart.

use kavka_metadata::{Controller, ControllerError};
use std::ops::Range;
use std::sync::Mutex;

/// Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

pub struct ProducerIdManager {
    broker_id: i32,
    block: Mutex<Range<i64>>,
}

impl ProducerIdManager {
    pub fn new(broker_id: i32) -> Self {
        ProducerIdManager {
            broker_id,
            block: Mutex::new(0..0),
        }
    }

    /// The next unused producer id. Blocking when a new block must be committed (fsync of
    /// the metadata log): call from a blocking thread.
    pub fn generate(&self, controller: &Controller) -> Result<i64, ControllerError> {
        let mut block = self.block.lock().unwrap_or_else(|p| p.into_inner());
        if block.is_empty() {
            *block = controller.allocate_producer_ids(self.broker_id, PRODUCER_ID_BLOCK_SIZE)?;
        }
        let id = block.start;
        block.start += 1;
        debug_assert!(id >= 0);
        Ok(id)
    }
}
