//! The broker's shared state: what every handler gets as its context.

use crate::config::BrokerConfig;
use crate::group::GroupCoordinator;
use crate::producer_ids::ProducerIdManager;
use crate::replica_manager::ReplicaManager;
use crate::txn::TransactionCoordinator;
use kavka_metadata::Controller;
use std::sync::Arc;

pub struct Broker {
    pub config: Arc<BrokerConfig>,
    pub controller: Arc<Controller>,
    pub replicas: Arc<ReplicaManager>,
    /// Host and port clients are told to use for this broker.
    pub advertised: (String, u16),
    /// Idempotent producers' ids (InitProducerId).
    /// Shared with the transaction coordinator, which allocates for transactional ids.
    pub producer_ids: Arc<ProducerIdManager>,
    /// Consumer groups and committed offsets.
    pub groups: Arc<GroupCoordinator>,
    /// Transactions and `__transaction_state`.
    pub txns: Arc<TransactionCoordinator>,
    /// KIP-890 produce-time checks that a partition is in the producer's transaction.
    pub txn_verifier: Arc<crate::txn::verification::TxnVerifier>,
}

impl Broker {
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }
}
