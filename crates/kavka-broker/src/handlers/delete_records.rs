use crate::broker::Broker;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kavka_protocol::error::ErrorCode;

pub fn handle(b: &Broker, req: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let Some(part) = b.replicas.get(&t.name, p.partition_index) else {
                        return r.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    let hw = part.high_watermark();
                    // -1 means "up to the high watermark".
                    let offset = if p.offset == -1 { hw } else { p.offset };
                    if offset < 0 || offset > hw {
                        return r.with_error_code(ErrorCode::OffsetOutOfRange.code());
                    }
                    match part.delete_records_before(offset) {
                        Ok(low) => r.with_low_watermark(low),
                        Err(e) => r.with_error_code(
                            super::partition_error_code(&e, &t.name, p.partition_index).code(),
                        ),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
