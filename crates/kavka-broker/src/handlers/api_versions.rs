use crate::broker::Broker;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kavka_protocol::api_versions::SUPPORTED;
use kavka_protocol::error::ErrorCode;

fn api_list() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect()
}

pub fn handle(b: &Broker, req: ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    let mut apis = api_list();
    if !b.config.group.consumer_protocol_enabled {
        // Clients pick the KIP-848 protocol only when the broker advertises it.
        let hidden = [
            kafka_protocol::messages::ApiKey::ConsumerGroupHeartbeat as i16,
            kafka_protocol::messages::ApiKey::ConsumerGroupDescribe as i16,
        ];
        apis.retain(|a| !hidden.contains(&a.api_key));
    }
    let mut resp = ApiVersionsResponse::default().with_api_keys(apis);
    if version >= 3 {
        // KIP-511: client software name and version must be non-empty and made of
        // [a-zA-Z0-9.-], else INVALID_REQUEST.
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        };
        if !ok(&req.client_software_name) || !ok(&req.client_software_version) {
            resp.error_code = ErrorCode::InvalidRequest.code();
        }
    }
    resp
}

/// The v0 answer to a version we do not support.
pub fn unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ErrorCode::UnsupportedVersion.code())
        .with_api_keys(api_list())
}
