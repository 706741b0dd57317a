//! ConsumerGroupDescribe (KIP-848): members, their assignments and target assignments.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};

use super::GROUP_OPERATIONS;

pub fn handle(
    b: &Broker,
    req: ConsumerGroupDescribeRequest,
    _version: i16,
) -> ConsumerGroupDescribeResponse {
    let operations = if req.include_authorized_operations {
        GROUP_OPERATIONS
    } else {
        i32::MIN
    };
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| match b.groups.consumer_group_describe(&id) {
            Ok(g) => g.with_group_id(id).with_authorized_operations(operations),
            Err((code, message)) => DescribedGroup::default()
                .with_group_id(id)
                .with_error_code(code.code())
                .with_error_message((!message.is_empty()).then(|| str_bytes(&message)))
                .with_authorized_operations(operations),
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
