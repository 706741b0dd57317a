//! Request router: decodes a frame, checks the API version against what we advertise,
//! dispatches to the handler and encodes the response with the matching header version.

use crate::broker::Broker;
use crate::handlers;
use crate::network::{ConnectionInfo, Dispatch, Reply, RequestHandler};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use kavka_protocol::api_versions::is_supported;
use kavka_protocol::frame::{decode_request_header, peek_prefix};
use std::sync::Arc;

pub struct Router {
    pub broker: Arc<Broker>,
}

/// Who sent a request, for handlers that record it (group members' client id and host).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    /// As Kafka prints it: `/` and the peer's IP address.
    pub client_host: String,
}

/// Encodes `[length][response header][body]`.
pub fn encode_response<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Reply {
    let header_version = api.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // Sized up front: a fetch response carries up to megabytes of records, and growing the
    // buffer by doubling would copy them several times.
    let body_size = body.compute_size(version).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(4 + 16 + body_size);
    buf.put_i32(0);
    let result = header
        .encode(&mut buf, header_version)
        .and_then(|_| body.encode(&mut buf, version));
    if let Err(e) = result {
        // Only a bug can get here (a field set that the version cannot carry).
        tracing::error!(?api, version, "cannot encode response: {e}");
        return Reply::Close(format!("cannot encode {api:?} v{version} response: {e}"));
    }
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Reply::Frame(buf.freeze())
}

fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, String> {
    T::decode(body, version).map_err(|e| format!("malformed request body: {e}"))
}

/// Runs blocking handler work (metadata log fsync, file I/O) off the reactor threads.
fn blocking<F>(f: F) -> Dispatch
where
    F: FnOnce() -> Reply + Send + 'static,
{
    Dispatch::Respond(
        async move {
            tokio::task::spawn_blocking(f)
                .await
                .unwrap_or_else(|e| Reply::Close(format!("handler failed: {e}")))
        }
        .boxed(),
    )
}

impl RequestHandler for Router {
    fn dispatch(&self, frame: Bytes, conn: &ConnectionInfo) -> Dispatch {
        let prefix = match peek_prefix(&frame) {
            Ok(p) => p,
            Err(e) => return Dispatch::Close(e.to_string()),
        };
        let Ok(api) = ApiKey::try_from(prefix.api_key) else {
            return Dispatch::Close(format!("unknown api key {}", prefix.api_key));
        };
        let (version, cid) = (prefix.api_version, prefix.correlation_id);
        if !is_supported(api, version) {
            if api == ApiKey::ApiVersions {
                // Kafka answers a too-new ApiVersions with a v0 response carrying
                // UNSUPPORTED_VERSION and the supported list, so the client can retry lower.
                let resp = handlers::api_versions::unsupported();
                return Dispatch::Respond(
                    futures_util::future::ready(encode_response(api, 0, cid, &resp)).boxed(),
                );
            }
            return Dispatch::Close(format!("unsupported version {version} of {api:?}"));
        }
        // Versions below the generated codecs' floor have hand-written codecs.
        if let Some(d) = handlers::legacy::dispatch(&self.broker, api, version, cid, &frame) {
            return d;
        }
        let (api, header, mut body) = match decode_request_header(frame) {
            Ok(x) => x,
            Err(e) => return Dispatch::Close(e.to_string()),
        };
        let b = self.broker.clone();
        let client = || ClientInfo {
            client_id: header
                .client_id
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            client_host: format!("/{}", conn.peer.ip()),
        };
        macro_rules! async_handler {
            ($req:ty, $call:expr) => {{
                let req: $req = match decode(&mut body, version) {
                    Ok(r) => r,
                    Err(e) => return Dispatch::Close(e),
                };
                #[allow(clippy::redundant_closure_call)]
                let fut = ($call)(b, req);
                Dispatch::Respond(
                    async move { encode_response(api, version, cid, &fut.await) }.boxed(),
                )
            }};
        }
        macro_rules! blocking_handler {
            ($req:ty, $handler:path) => {{
                let req: $req = match decode(&mut body, version) {
                    Ok(r) => r,
                    Err(e) => return Dispatch::Close(e),
                };
                blocking(move || encode_response(api, version, cid, &$handler(&b, req, version)))
            }};
        }
        match api {
            ApiKey::ApiVersions => {
                blocking_handler!(ApiVersionsRequest, handlers::api_versions::handle)
            }
            ApiKey::Metadata => blocking_handler!(MetadataRequest, handlers::metadata::handle),
            ApiKey::ListOffsets => {
                blocking_handler!(ListOffsetsRequest, handlers::list_offsets::handle)
            }
            ApiKey::CreateTopics => {
                blocking_handler!(CreateTopicsRequest, handlers::create_topics::handle)
            }
            ApiKey::DeleteTopics => {
                blocking_handler!(DeleteTopicsRequest, handlers::delete_topics::handle)
            }
            ApiKey::CreatePartitions => {
                blocking_handler!(CreatePartitionsRequest, handlers::create_partitions::handle)
            }
            ApiKey::DescribeConfigs => {
                blocking_handler!(DescribeConfigsRequest, handlers::configs::describe)
            }
            ApiKey::AlterConfigs => {
                blocking_handler!(AlterConfigsRequest, handlers::configs::alter)
            }
            ApiKey::IncrementalAlterConfigs => {
                blocking_handler!(
                    IncrementalAlterConfigsRequest,
                    handlers::configs::incremental_alter
                )
            }
            ApiKey::DescribeCluster => {
                blocking_handler!(DescribeClusterRequest, handlers::describe_cluster::handle)
            }
            ApiKey::DescribeLogDirs => {
                blocking_handler!(DescribeLogDirsRequest, handlers::describe_log_dirs::handle)
            }
            ApiKey::AlterPartitionReassignments => blocking_handler!(
                AlterPartitionReassignmentsRequest,
                handlers::alter_partition_reassignments::handle
            ),
            ApiKey::ListPartitionReassignments => blocking_handler!(
                ListPartitionReassignmentsRequest,
                handlers::list_partition_reassignments::handle
            ),
            ApiKey::ElectLeaders => {
                blocking_handler!(ElectLeadersRequest, handlers::elect_leaders::handle)
            }
            ApiKey::InitProducerId => {
                async_handler!(InitProducerIdRequest, |b, req| {
                    handlers::init_producer_id::handle(b, req, version)
                })
            }
            ApiKey::DeleteRecords => {
                blocking_handler!(DeleteRecordsRequest, handlers::delete_records::handle)
            }
            ApiKey::OffsetForLeaderEpoch => blocking_handler!(
                OffsetForLeaderEpochRequest,
                handlers::offset_for_leader_epoch::handle
            ),
            ApiKey::FindCoordinator => {
                blocking_handler!(FindCoordinatorRequest, handlers::find_coordinator::handle)
            }
            ApiKey::JoinGroup => {
                let client = client();
                async_handler!(JoinGroupRequest, |b, req| handlers::join_group::handle(
                    b, req, version, client
                ))
            }
            ApiKey::SyncGroup => {
                async_handler!(SyncGroupRequest, |b, req| handlers::sync_group::handle(
                    b, req, version
                ))
            }
            ApiKey::OffsetCommit => {
                async_handler!(OffsetCommitRequest, |b, req| {
                    handlers::offset_commit::handle(b, req, version)
                })
            }
            ApiKey::Heartbeat => blocking_handler!(HeartbeatRequest, handlers::heartbeat::handle),
            ApiKey::LeaveGroup => {
                blocking_handler!(LeaveGroupRequest, handlers::leave_group::handle)
            }
            ApiKey::OffsetFetch => {
                blocking_handler!(OffsetFetchRequest, handlers::offset_fetch::handle)
            }
            ApiKey::OffsetDelete => {
                blocking_handler!(OffsetDeleteRequest, handlers::offset_delete::handle)
            }
            ApiKey::DescribeGroups => {
                blocking_handler!(DescribeGroupsRequest, handlers::describe_groups::handle)
            }
            ApiKey::ListGroups => {
                blocking_handler!(ListGroupsRequest, handlers::list_groups::handle)
            }
            ApiKey::ConsumerGroupHeartbeat => {
                let client = client();
                let req: ConsumerGroupHeartbeatRequest = match decode(&mut body, version) {
                    Ok(r) => r,
                    Err(e) => return Dispatch::Close(e),
                };
                blocking(move || {
                    let resp =
                        handlers::consumer_group_heartbeat::handle(&b, req, version, &client);
                    encode_response(api, version, cid, &resp)
                })
            }
            ApiKey::ConsumerGroupDescribe => {
                blocking_handler!(
                    ConsumerGroupDescribeRequest,
                    handlers::consumer_group_describe::handle
                )
            }
            ApiKey::DeleteGroups => {
                blocking_handler!(DeleteGroupsRequest, handlers::delete_groups::handle)
            }
            ApiKey::Produce => {
                let req: ProduceRequest = match decode(&mut body, version) {
                    Ok(r) => r,
                    Err(e) => return Dispatch::Close(e),
                };
                Dispatch::Respond(
                    async move {
                        match handlers::produce::handle(b, req, version).await {
                            Ok(Some(resp)) => encode_response(api, version, cid, &resp),
                            Ok(None) => Reply::Nothing,
                            Err(e) => Reply::Close(e),
                        }
                    }
                    .boxed(),
                )
            }
            ApiKey::Fetch => {
                let req: FetchRequest = match decode(&mut body, version) {
                    Ok(r) => r,
                    Err(e) => return Dispatch::Close(e),
                };
                Dispatch::Respond(
                    async move {
                        let resp = handlers::fetch::handle(b, req, version).await;
                        encode_response(api, version, cid, &resp)
                    }
                    .boxed(),
                )
            }
            ApiKey::TxnOffsetCommit => {
                async_handler!(TxnOffsetCommitRequest, |b, req| {
                    handlers::txn_offset_commit::handle(b, req, version)
                })
            }
            ApiKey::WriteTxnMarkers => {
                async_handler!(WriteTxnMarkersRequest, |b, req| {
                    handlers::write_txn_markers::handle(b, req, version)
                })
            }
            ApiKey::DescribeProducers => {
                blocking_handler!(
                    DescribeProducersRequest,
                    handlers::describe_producers::handle
                )
            }
            ApiKey::AddPartitionsToTxn => {
                async_handler!(AddPartitionsToTxnRequest, |b, req| {
                    handlers::add_partitions_to_txn::handle(b, req, version)
                })
            }
            ApiKey::AddOffsetsToTxn => {
                async_handler!(AddOffsetsToTxnRequest, |b, req| {
                    handlers::add_offsets_to_txn::handle(b, req, version)
                })
            }
            ApiKey::EndTxn => {
                async_handler!(EndTxnRequest, |b, req| handlers::end_txn::handle(
                    b, req, version
                ))
            }
            ApiKey::DescribeTransactions => blocking_handler!(
                DescribeTransactionsRequest,
                handlers::describe_transactions::handle
            ),
            ApiKey::ListTransactions => {
                blocking_handler!(ListTransactionsRequest, handlers::list_transactions::handle)
            }
            other => Dispatch::Close(format!("{other:?} is not implemented")),
        }
    }
}
