//! ElectLeaders (KIP-460): preferred or unclean leader election for the named partitions,
//! or for all of them (null topic partitions). Any broker answers; the controller forwards
//! the election to the active controller.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kavka_metadata::{ControllerError, ElectionType};
use kavka_protocol::error::ErrorCode;

pub fn handle(b: &Broker, req: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let requested: Option<Vec<(String, i32)>> = req.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                let name = t.topic.to_string();
                t.partitions.iter().map(move |p| (name.clone(), *p))
            })
            .collect()
    });
    let mut resp = ElectLeadersResponse::default();
    // v0 has no election type: it is always a preferred election.
    let election = if version == 0 {
        Some(ElectionType::Preferred)
    } else {
        ElectionType::from_wire(req.election_type)
    };
    let outcome = match election {
        Some(election) => b
            .controller
            .elect_leaders(election, requested.clone())
            .map(|results| (election, results)),
        None => Err(ControllerError::InvalidRequest(format!(
            "Unknown election type {}",
            req.election_type
        ))),
    };
    let results = match outcome {
        Ok((election, results)) => results
            .into_iter()
            .map(|(tp, r)| (tp, r.map_err(|e| error_of(election, &e))))
            .collect(),
        Err(e) => {
            if version >= 1 {
                resp.error_code = e.code();
            }
            let err = (e.code(), e.message());
            requested
                .unwrap_or_default()
                .into_iter()
                .map(|tp| (tp, Err(err.clone())))
                .collect()
        }
    };
    resp.replica_election_results = group_by_topic(results);
    resp
}

/// The wire error of one partition's failed election. An unclean election that finds no
/// live replica is ELIGIBLE_LEADERS_NOT_AVAILABLE in Kafka, not the preferred election's
/// PREFERRED_LEADER_NOT_AVAILABLE.
fn error_of(election: ElectionType, e: &ControllerError) -> (i16, String) {
    let code = match (election, e) {
        (ElectionType::Unclean, ControllerError::PreferredLeaderNotAvailable(_)) => {
            ErrorCode::EligibleLeadersNotAvailable.code()
        }
        _ => e.code(),
    };
    (code, e.message())
}

type PartitionOutcome = ((String, i32), Result<(), (i16, String)>);

/// One entry per topic in order of first appearance, its partitions in request order.
fn group_by_topic(results: Vec<PartitionOutcome>) -> Vec<ReplicaElectionResult> {
    let mut out: Vec<ReplicaElectionResult> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for ((topic, partition), result) in results {
        let (code, message) = match result {
            Ok(()) => (0, None),
            Err((code, message)) => (code, Some(str_bytes(&message))),
        };
        let p = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message);
        match index.get(&topic).and_then(|i| out.get_mut(*i)) {
            Some(r) => r.partition_result.push(p),
            None => {
                index.insert(topic.clone(), out.len());
                out.push(
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(str_bytes(&topic)))
                        .with_partition_result(vec![p]),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_grouped_by_topic_in_request_order() {
        let results = vec![
            (("a".to_string(), 1), Ok(())),
            (("b".to_string(), 0), Err((84, "not needed".to_string()))),
            (("a".to_string(), 0), Err((80, "no".to_string()))),
        ];
        let grouped = group_by_topic(results);
        let flat: Vec<(String, Vec<(i32, i16)>)> = grouped
            .iter()
            .map(|r| {
                (
                    r.topic.to_string(),
                    r.partition_result
                        .iter()
                        .map(|p| (p.partition_id, p.error_code))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            flat,
            vec![
                ("a".to_string(), vec![(1, 0), (0, 80)]),
                ("b".to_string(), vec![(0, 84)]),
            ]
        );
    }

    #[test]
    fn unclean_election_without_a_live_replica_is_eligible_leaders_not_available() {
        let e = ControllerError::PreferredLeaderNotAvailable("none".into());
        assert_eq!(error_of(ElectionType::Unclean, &e).0, 83);
        assert_eq!(error_of(ElectionType::Preferred, &e).0, 80);
        let e = ControllerError::ElectionNotNeeded("x".into());
        assert_eq!(error_of(ElectionType::Unclean, &e).0, 84);
    }
}
