//! OffsetFetch: one group (v0-7) or several (v8+); all committed offsets when no topics
//! are named (v2+).

use super::str_bytes;
use crate::broker::Broker;
use crate::group::coordinator::FetchedOffsets;
use crate::group::record::OffsetValue;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kavka_protocol::error::ErrorCode;

type Wanted = Option<Vec<(String, Vec<i32>)>>;

pub fn handle(b: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
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
                match b.groups.fetch_offsets(&g.group_id, member, wanted) {
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
    match b.groups.fetch_offsets(&req.group_id, None, wanted.clone()) {
        Ok(fetched) => {
            OffsetFetchResponse::default().with_topics(topics_v0(fetched, None, version))
        }
        Err(e) if version >= 2 => OffsetFetchResponse::default().with_error_code(e.code()),
        // v0-1 have no top-level error: every partition carries it.
        Err(e) => {
            let fetched: FetchedOffsets = wanted
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|p| (p, None)).collect()))
                .collect();
            OffsetFetchResponse::default().with_topics(topics_v0(fetched, Some(e), version))
        }
    }
}

/// Offset, leader epoch and metadata of a committed offset; -1, -1, "" when there is none.
fn committed(v: Option<OffsetValue>) -> (i64, i32, StrBytes) {
    match v {
        Some(v) => (v.offset, v.leader_epoch, str_bytes(&v.metadata)),
        None => (-1, -1, str_bytes("")),
    }
}

fn topics_v0(
    fetched: FetchedOffsets,
    error: Option<ErrorCode>,
    version: i16,
) -> Vec<OffsetFetchResponseTopic> {
    fetched
        .into_iter()
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, v)| {
                    let (offset, epoch, meta) = committed(v);
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                        .with_metadata(Some(meta))
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(&t)))
                .with_partitions(partitions)
        })
        .collect()
}

fn topics_v8(fetched: FetchedOffsets) -> Vec<OffsetFetchResponseTopics> {
    fetched
        .into_iter()
        .map(|(t, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, v)| {
                    let (offset, epoch, meta) = committed(v);
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(epoch)
                        .with_metadata(Some(meta))
                })
                .collect();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(str_bytes(&t)))
                .with_partitions(partitions)
        })
        .collect()
}
