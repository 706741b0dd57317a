use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

pub fn handle(b: &Broker, req: CreatePartitionsRequest, _version: i16) -> CreatePartitionsResponse {
    let results = req
        .topics
        .iter()
        .map(|t| {
            let assignments = t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|id| id.0).collect())
                    .collect()
            });
            let res = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match b
                .controller
                .create_partitions(&t.name, t.count, assignments, req.validate_only)
            {
                Ok(()) => res,
                Err(e) => res
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(&e.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
