//! TxnOffsetCommit (v0-4): a transactional producer commits its consumer's offsets as part
//! of its transaction. They are appended to the group's `__consumer_offsets` partition as a
//! transactional batch of the producer and stay pending (invisible to OffsetFetch) until the
//! transaction coordinator's marker commits or aborts them. Answered once the batch is
//! replicated, like OffsetCommit, without holding a thread while waiting.

use crate::broker::Broker;
use crate::group::coordinator::{CommitPartition, TxnCommitter};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use std::sync::Arc;

pub async fn handle(
    b: Arc<Broker>,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    // v0-2 carry no member: the commit is the producer's alone (Kafka's defaults).
    let who = if version >= 3 {
        TxnCommitter {
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            generation_id: req.generation_id,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        }
    } else {
        TxnCommitter {
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    };
    let parts: Vec<CommitPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| CommitPartition {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 2 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    // The coordinator appends under its shard lock: a short page-cache write, as for
    // OffsetCommit; the replication wait below holds no thread.
    let (mut codes, wait) = b.groups.commit_txn_offsets(&req.group_id, &who, &parts);
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
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
