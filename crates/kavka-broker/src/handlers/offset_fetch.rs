//! OffsetFetch: one group (v0-7) or several (v8+); all committed offsets when no topics
//! are named (v2+). With `require_stable` (v7+) a partition whose group has a pending
//! transactional offset answers UNSTABLE_OFFSET_COMMIT, so a read_committed consumer does
//! not start from an offset a transaction is about to replace.

use super::str_bytes;
use crate::broker::Broker;
use crate::group::coordinator::{FetchedOffset, StableFetchedOffsets};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

type Wanted = Option<Vec<(String, Vec<i32>)>>;

pub fn handle(b: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let require_stable = version >= 7 && req.require_stable;
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted: Wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect()
                });
                let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                let member = g
                    .member_id
                    .as_ref()
                    .map(|m| (m.as_str(), g.member_epoch))
                    .filter(|(m, e)| !m.is_empty() || *e >= 0);
                match b
                    .groups
                    .fetch_offsets_stable(&g.group_id, member, wanted, require_stable)
                {
                    Err(e) => out.with_error_code(e.code()),
                    Ok(fetched) => out.with_topics(topics_v8(fetched)),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted: Wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    match b
        .groups
        .fetch_offsets_stable(&req.group_id, None, wanted.clone(), require_stable)
    {
        Ok(fetched) => OffsetFetchResponse::default().with_topics(topics_v0(fetched, version)),
        Err(e) if version >= 2 => OffsetFetchResponse::default().with_error_code(e.code()),
        // v0-1 have no top-level error: every partition carries it.
        Err(e) => {
            let fetched: StableFetchedOffsets = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, Err(e))).collect()))
                .collect();
            OffsetFetchResponse::default().with_topics(topics_v0(fetched, version))
        }
    }
}

/// Offset, leader epoch, metadata and error of a fetched partition; -1, -1, "" when there
/// is no committed offset or the partition failed.
fn committed(v: FetchedOffset) -> (i64, i32, StrBytes, i16) {
    match v {
        Ok(Some(v)) => (v.offset, v.leader_epoch, str_bytes(&v.metadata), 0),
        Ok(None) => (-1, -1, str_bytes(""), 0),
        Err(e) => (-1, -1, str_bytes(""), e.code()),
    }
}

fn topics_v0(fetched: StableFetchedOffsets, version: i16) -> Vec<OffsetFetchResponseTopic> {
    fetched
        .into_iter()
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, v)| {
                    let (offset, epoch, meta, code) = committed(v);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(Some(meta))
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(&t)))
                .with_partitions(partitions)
        })
        .collect()
}

fn topics_v8(fetched: StableFetchedOffsets) -> Vec<OffsetFetchResponseTopics> {
    fetched
        .into_iter()
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, v)| {
                    let (offset, epoch, meta, code) = committed(v);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(meta))
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(str_bytes(&t)))
                .with_partitions(partitions)
        })
        .collect()
}
