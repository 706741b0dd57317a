//! The controller's side of partition reassignment (KIP-455): requests are validated and
//! committed by the active controller (forwarded there from other members), and pending
//! reassignments complete once their target replicas are in sync — checked after every
//! AlterPartition commit and on the active controller's periodic duties.

use tracing::{debug, info};
use uuid::Uuid;

use super::forward::{ControllerOp, ControllerReply};
use super::{Controller, WriteGuard};
use crate::error::ControllerError;
use crate::replication_control::{
    alter_partition_reassignments, complete_reassignment, complete_reassignments,
    list_partition_reassignments, OngoingReassignment, ReassignmentError, ReassignmentRequest,
};

/// One partition's outcome of [`Controller::alter_partition_reassignments`], in request order.
pub type ReassignmentResult = Result<(), ReassignmentError>;

impl Controller {
    /// AlterPartitionReassignments (KIP-455): starts, replaces or cancels (`target: None`)
    /// the reassignment of each partition. One result per request, in order; the whole call
    /// fails (NOT_CONTROLLER) only when the active controller cannot be reached.
    pub fn alter_partition_reassignments(
        &self,
        requests: Vec<ReassignmentRequest>,
        allow_replication_factor_change: bool,
    ) -> Result<Vec<ReassignmentResult>, ControllerError> {
        let op = ControllerOp::AlterPartitionReassignments {
            requests: requests.clone(),
            allow_replication_factor_change,
        };
        match self.forwarded(op) {
            Some(Ok(ControllerReply::AlterPartitionReassignments { results, .. })) => Ok(results),
            Some(Ok(_)) => Err(ControllerError::Storage(
                "the active controller answered another operation".into(),
            )),
            Some(Err(e)) => Err(e),
            None => {
                Ok(self
                    .alter_partition_reassignments_here(&requests, allow_replication_factor_change))
            }
        }
    }

    /// ListPartitionReassignments: the reassignments in progress, read from this node's
    /// image (every member applies the same records), for `partitions` or all.
    pub fn list_partition_reassignments(
        &self,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<OngoingReassignment> {
        list_partition_reassignments(&self.image(), partitions)
    }

    pub(super) fn alter_partition_reassignments_here(
        &self,
        requests: &[ReassignmentRequest],
        allow_replication_factor_change: bool,
    ) -> Vec<ReassignmentResult> {
        let all = |e: ControllerError| requests.iter().map(|_| Err(e.clone().into())).collect();
        let mut log = match self.lock_log() {
            Ok(log) => log,
            Err(e) => return all(e),
        };
        let image = self.image();
        let (records, results) =
            alter_partition_reassignments(&image, requests, allow_replication_factor_change);
        for (req, result) in requests.iter().zip(&results) {
            if result.is_ok() {
                info!(topic = %req.topic, partition = req.partition, target = ?req.target, "partition reassignment requested");
            }
        }
        match self.commit(&mut log, records) {
            Ok(_) => results,
            Err(e) => all(e),
        }
    }

    /// Completes the reassignment of one partition if its target is in sync now (called
    /// with the writers' lock held, right after an AlterPartition commit). A failure is
    /// logged: the periodic duty retries.
    pub(super) fn complete_reassignment_here(
        &self,
        log: &mut WriteGuard<'_>,
        topic_id: Uuid,
        partition: i32,
    ) {
        let image = self.image();
        if image.reassignments.is_empty() {
            return;
        }
        let records = complete_reassignment(&image, topic_id, partition);
        if records.is_empty() {
            return;
        }
        match self.commit(log, records) {
            Ok(_) => info!(%topic_id, partition, "partition reassignment completed"),
            Err(e) => {
                debug!(%topic_id, partition, error = %e, "completing a reassignment failed; will retry")
            }
        }
    }

    /// The periodic duty: completes every pending reassignment whose target is in sync.
    pub(super) fn complete_reassignments_duty(&self) {
        if self.image().reassignments.is_empty() {
            return;
        }
        let result = self.lock_log().and_then(|mut log| {
            let records = complete_reassignments(&self.image());
            if !records.is_empty() {
                self.commit(&mut log, records)?;
                info!("partition reassignments completed");
            }
            Ok(())
        });
        if let Err(e) = result {
            debug!(error = %e, "completing reassignments failed; will retry");
        }
    }
}
