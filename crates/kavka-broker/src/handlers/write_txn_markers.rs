//! WriteTxnMarkers (v1), sent by transaction coordinators to partition leaders: for each
//! marker, a COMMIT or ABORT control batch on each listed partition, answered once the ISR
//! has it (Kafka appends markers with acks=-1). Partitions of `__consumer_offsets` go
//! through the group coordinator, which also commits or drops the producer's pending
//! offsets. Only brokers send it; with no ACLs here it is not authorized further.

use crate::broker::Broker;
use crate::txn::markers::{write_local_markers, MARKER_WRITE_TIMEOUT};
use futures_util::future::join_all;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kavka_protocol::error::ErrorCode;
use kavka_protocol::records::{ControlType, TxnMarker};
use std::sync::Arc;

pub async fn handle(
    b: Arc<Broker>,
    req: WriteTxnMarkersRequest,
    _version: i16,
) -> WriteTxnMarkersResponse {
    let image = b.controller.image();
    // Markers of different producers are independent: written concurrently.
    let markers = join_all(req.markers.into_iter().map(|m| {
        let (replicas, groups, image) = (b.replicas.clone(), b.groups.clone(), image.clone());
        async move {
            let marker = TxnMarker {
                producer_id: m.producer_id.0,
                producer_epoch: m.producer_epoch,
                coordinator_epoch: m.coordinator_epoch,
                control: if m.transaction_result {
                    ControlType::Commit
                } else {
                    ControlType::Abort
                },
            };
            let partitions: Vec<(String, i32)> = m
                .topics
                .iter()
                .flat_map(|t| {
                    t.partition_indexes
                        .iter()
                        .map(move |p| (t.name.0.to_string(), *p))
                })
                .collect();
            // Appends that could not run leave every partition unanswered: UNKNOWN_SERVER_ERROR.
            let results = write_local_markers(
                replicas,
                groups,
                image,
                marker,
                partitions,
                MARKER_WRITE_TIMEOUT,
            )
            .await
            .unwrap_or_default();
            // Answered per requested topic, partitions in request order.
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|&p| {
                            let code = results
                                .iter()
                                .find(|((rt, rp), _)| *rp == p && rt.as_str() == t.name.0.as_str())
                                .map_or(ErrorCode::UnknownServerError.code(), |(_, r)| {
                                    r.err().map_or(kavka_protocol::error::NONE, |e| e.code())
                                });
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        }
    }))
    .await;
    WriteTxnMarkersResponse::default().with_markers(markers)
}
