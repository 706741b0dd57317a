//! DescribeLogDirs (KIP-113): which partitions each log directory of this broker holds, how
//! big they are and how far each lags its high watermark. Answered from the hosted
//! partitions and the files on disk; no log lock is taken.

use super::str_bytes;
use crate::broker::Broker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bytes of the files directly in a partition directory (segments, indexes, checkpoints).
fn dir_size(dir: &Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .fold(0i64, i64::saturating_add)
}

pub fn handle(b: &Broker, req: DescribeLogDirsRequest, version: i16) -> DescribeLogDirsResponse {
    // None = every partition; Some = only those named.
    let wanted: Option<BTreeSet<(String, i32)>> = req.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect()
    });
    let mut by_dir: BTreeMap<PathBuf, BTreeMap<String, Vec<DescribeLogDirsPartition>>> = b
        .config
        .log_dirs
        .iter()
        .map(|d| (d.clone(), BTreeMap::new()))
        .collect();
    let mut hosted = b.replicas.all();
    hosted.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    for p in hosted {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&(p.topic.clone(), p.index)))
        {
            continue;
        }
        let dir = b.replicas.partition_dir(&p.topic, p.index);
        let Some(log_dir) = dir.parent().map(Path::to_path_buf) else {
            continue;
        };
        let lag = (p.high_watermark() - p.log_end_offset()).max(0);
        by_dir
            .entry(log_dir)
            .or_default()
            .entry(p.topic.clone())
            .or_default()
            .push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index)
                    .with_partition_size(dir_size(&dir))
                    .with_offset_lag(lag)
                    .with_is_future_key(false),
            );
    }
    let results = by_dir
        .into_iter()
        .map(|(dir, topics)| {
            let mut result = DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(&dir.display().to_string()))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            DescribeLogDirsTopic::default()
                                .with_name(TopicName(str_bytes(&name)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            if version >= 4 {
                // Not measured: std has no portable free-space call.
                result = result.with_total_bytes(-1).with_usable_bytes(-1);
            }
            result
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}
