//! AlterPartitionReassignments (KIP-455): start, replace or cancel (null replicas) the
//! reassignment of partitions. Any broker answers; the controller forwards the change to the
//! active controller. v1 (KIP-860) may forbid a change of replication factor.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};
use kavka_metadata::replication_control::{ReassignmentError, ReassignmentRequest};

pub fn handle(
    b: &Broker,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let requests: Vec<ReassignmentRequest> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ReassignmentRequest {
                topic: t.name.to_string(),
                partition: p.partition_index,
                target: p
                    .replicas
                    .as_ref()
                    .map(|r| r.iter().map(|id| id.0).collect()),
            })
        })
        .collect();
    // v0 has no such flag: any replication factor is allowed.
    let allow_rf_change = version < 1 || req.allow_replication_factor_change;
    let mut resp = AlterPartitionReassignmentsResponse::default().with_error_message(None);
    if version >= 1 {
        resp.allow_replication_factor_change = req.allow_replication_factor_change;
    }
    let count = requests.len();
    let results: Vec<Result<(), ReassignmentError>> = match b
        .controller
        .alter_partition_reassignments(requests, allow_rf_change)
    {
        Ok(results) => results,
        Err(e) => {
            // The active controller could not be reached: the request failed as a whole.
            resp.error_code = e.code();
            resp.error_message = Some(str_bytes(&e.message()));
            (0..count).map(|_| Err(e.clone().into())).collect()
        }
    };
    let mut results = results.into_iter();
    resp.responses = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_message(None);
                    match results.next() {
                        Some(Ok(())) => r,
                        Some(Err(e)) => r
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(&e.to_string()))),
                        None => r.with_error_code(
                            kavka_protocol::error::ErrorCode::UnknownServerError.code(),
                        ),
                    }
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    resp
}
