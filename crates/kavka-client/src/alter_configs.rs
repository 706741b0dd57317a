//! IncrementalAlterConfigs for one topic or one broker (a broker's own configs must be sent
//! to that broker, the cluster default `""` to any), as `kavka reassign-partitions
//! --throttle` needs for the replication throttle (KIP-73).

use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::protocol::StrBytes;

use crate::admin::{AlterConfigOp, RESOURCE_TOPIC};
use crate::cluster::Cluster;
use crate::error::{self, ClientError};
use crate::Result;

/// Kafka's `ConfigResource.Type.BROKER`.
pub const RESOURCE_BROKER: i8 = 4;

/// Whose configs to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigTarget {
    Topic(String),
    /// A broker's own dynamic configs, sent to that broker.
    Broker(i32),
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn alterable(op: &AlterConfigOp) -> AlterableConfig {
    let (name, op, value) = match op {
        AlterConfigOp::Set(k, v) => (k, 0, Some(v)),
        AlterConfigOp::Delete(k) => (k, 1, None),
        AlterConfigOp::Append(k, v) => (k, 2, Some(v)),
        AlterConfigOp::Subtract(k, v) => (k, 3, Some(v)),
    };
    AlterableConfig::default()
        .with_name(str_bytes(name))
        .with_config_operation(op)
        .with_value(value.map(|v| str_bytes(v)))
}

/// The request applying `ops` to `target`.
pub fn request(target: &ConfigTarget, ops: &[AlterConfigOp]) -> IncrementalAlterConfigsRequest {
    let (kind, name) = match target {
        ConfigTarget::Topic(t) => (RESOURCE_TOPIC, t.clone()),
        ConfigTarget::Broker(id) => (RESOURCE_BROKER, id.to_string()),
    };
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(str_bytes(&name))
        .with_configs(ops.iter().map(alterable).collect())])
}

/// Applies `ops` to `target`'s dynamic configs.
pub async fn incremental_alter_configs(
    cluster: &mut Cluster,
    target: &ConfigTarget,
    ops: &[AlterConfigOp],
) -> Result<()> {
    let req = request(target, ops);
    let resp = match target {
        ConfigTarget::Topic(_) => cluster.send_any(&req).await?,
        ConfigTarget::Broker(id) => cluster.send_to(*id, &req).await?,
    };
    let subject = match target {
        ConfigTarget::Topic(t) => format!("topic '{t}'"),
        ConfigTarget::Broker(id) => format!("broker {id}"),
    };
    match resp.responses.first() {
        Some(r) => error::check(r.error_code, &subject, r.error_message.as_deref()),
        None => Err(ClientError::InvalidArgument(format!(
            "the broker did not answer for {subject}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_targets_name_the_node() {
        let r = request(
            &ConfigTarget::Broker(3),
            &[
                AlterConfigOp::Set("leader.replication.throttled.rate".into(), "10".into()),
                AlterConfigOp::Delete("follower.replication.throttled.rate".into()),
            ],
        );
        let res = &r.resources[0];
        assert_eq!(res.resource_type, RESOURCE_BROKER);
        assert_eq!(res.resource_name.as_str(), "3");
        assert_eq!(res.configs[0].config_operation, 0);
        assert_eq!(res.configs[0].value.as_deref(), Some("10"));
        assert_eq!(res.configs[1].config_operation, 1);
        assert!(res.configs[1].value.is_none());
        let t = request(&ConfigTarget::Topic("t".into()), &[]);
        assert_eq!(t.resources[0].resource_type, RESOURCE_TOPIC);
    }
}
