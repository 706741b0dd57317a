use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kavka_metadata::TopicRef;
use kavka_protocol::error::ErrorCode;

pub fn handle(b: &Broker, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6+ in `topics`, by name or by id.
    let refs: Vec<TopicRef> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => TopicRef::Name(n.to_string()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| TopicRef::Name(n.to_string()))
            .collect()
    };
    if !b.config.delete_topic_enable {
        let responses = refs
            .iter()
            .map(|r| {
                let res = DeletableTopicResult::default()
                    .with_error_code(ErrorCode::TopicDeletionDisabled.code());
                match r {
                    TopicRef::Name(n) => res.with_name(Some(TopicName(str_bytes(n)))),
                    TopicRef::Id(id) => res.with_topic_id(*id),
                }
            })
            .collect();
        return DeleteTopicsResponse::default().with_responses(responses);
    }
    // Internal topics hold the coordinators' state: Kafka refuses to delete them.
    let image = b.controller.image();
    let is_internal = |r: &TopicRef| {
        let name = match r {
            TopicRef::Name(n) => Some(n.as_str()),
            TopicRef::Id(id) => image.topic_ids.get(id).map(String::as_str),
        };
        name.is_some_and(crate::internal_topics::is_internal)
    };
    let deletable: Vec<TopicRef> = refs.iter().filter(|r| !is_internal(r)).cloned().collect();
    let mut outcomes = b.controller.delete_topics(deletable).into_iter();
    let responses = refs
        .into_iter()
        .map(|r| {
            let outcome = if is_internal(&r) {
                Err(kavka_metadata::ControllerError::InvalidTopic(
                    "an internal topic cannot be deleted".to_string(),
                ))
            } else {
                outcomes
                    .next()
                    .unwrap_or(Err(kavka_metadata::ControllerError::InvalidTopic(
                        "the controller gave no answer".to_string(),
                    )))
            };
            (r, outcome)
        })
        .map(|(r, outcome)| {
            let mut res = DeletableTopicResult::default();
            match r {
                TopicRef::Name(n) => res.name = Some(TopicName(str_bytes(&n))),
                TopicRef::Id(id) => res.topic_id = id,
            }
            match outcome {
                Ok((name, id)) => {
                    res.name = Some(TopicName(str_bytes(&name)));
                    res.topic_id = id;
                }
                Err(e) => {
                    res.error_code = e.code();
                    res.error_message = Some(str_bytes(&e.to_string()));
                }
            }
            res
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
