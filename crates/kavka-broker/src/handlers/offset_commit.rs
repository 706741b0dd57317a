//! OffsetCommit: validated against the group's generation, appended to
//! `__consumer_offsets`, acknowledged once the log says it is safe (fsync when configured).

use crate::broker::Broker;
use crate::group::coordinator::{CommitPartition, Committer};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use std::sync::Arc;

pub async fn handle(
    b: Arc<Broker>,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let who = Committer {
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        retention_time_ms: if (2..=4).contains(&version) {
            req.retention_time_ms
        } else {
            -1
        },
    };
    let parts: Vec<CommitPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| CommitPartition {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let (mut codes, wait) = b.groups.commit_offsets(&req.group_id, &who, &parts);
    if let Some(w) = wait {
        if let Err(e) = w.wait().await {
            for c in codes.iter_mut().filter(|c| c.is_none()) {
                *c = Some(e);
            }
        }
    }
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = codes.next().flatten().map_or(0, |e| e.code());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
