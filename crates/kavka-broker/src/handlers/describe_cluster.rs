use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kavka_protocol::error::ErrorCode;

/// DescribeCluster endpoint types (KIP-919): 1 = brokers, 2 = controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn handle(b: &Broker, req: DescribeClusterRequest, version: i16) -> DescribeClusterResponse {
    let image = b.controller.image();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(&image.cluster_id))
        .with_controller_id(BrokerId(b.controller.active_controller_id().unwrap_or(-1)))
        .with_cluster_authorized_operations(i32::MIN);
    if version >= 1 {
        resp.endpoint_type = req.endpoint_type;
        if req.endpoint_type != ENDPOINT_BROKERS && req.endpoint_type != 2 {
            resp.error_code = ErrorCode::UnsupportedEndpointType.code();
            return resp;
        }
    }
    // As Kafka: fenced brokers are left out.
    resp.brokers = image
        .live_brokers()
        .map(|br| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(br.node_id))
                .with_host(str_bytes(&br.host))
                .with_port(br.port as i32)
                .with_rack(br.rack.as_deref().map(str_bytes))
        })
        .collect();
    resp
}
