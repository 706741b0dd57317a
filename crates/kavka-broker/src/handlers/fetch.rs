//! Fetch with long polling: read what is available up to the high watermark; if it is less
//! than `min_bytes`, park on the partitions' high-watermark notifications until enough
//! arrives or `max_wait_ms` passes. Never sleeps, never blocks a reactor thread.

use crate::broker::Broker;
use crate::partition::{Partition, PartitionError};
use bytes::Bytes;
use futures_util::future::{select_all, FutureExt};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kavka_protocol::error::ErrorCode;
use kavka_storage::StorageError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Upper bound on how long a client may park a fetch, whatever it asks for.
const MAX_WAIT_CAP_MS: i32 = 5 * 60 * 1000;

/// One requested partition, resolved against the image.
struct Slot {
    topic_idx: usize,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
    target: Result<Arc<Partition>, ErrorCode>,
}

fn error_partition(index: i32, code: ErrorCode) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(Bytes::new()))
}

/// Reads every slot once. Blocking (positional file reads). Returns the partition data and
/// the number of record bytes gathered.
fn read_once(
    slots: &[Slot],
    response_max_bytes: i32,
    read_committed: bool,
) -> (Vec<PartitionData>, usize) {
    let mut remaining = response_max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut out = Vec::with_capacity(slots.len());
    for s in slots {
        let part = match &s.target {
            Ok(p) => p,
            Err(code) => {
                out.push(error_partition(s.partition, *code));
                continue;
            }
        };
        let limit = (s.max_bytes.max(0) as usize).min(remaining);
        // Kafka returns at least one whole batch for the first partition with data, even
        // if it exceeds the limits, so a consumer can always make progress.
        let min_one = total == 0;
        let hw = part.high_watermark();
        let read = part
            .read_plan(s.fetch_offset, limit, min_one)
            .and_then(|plan| {
                plan.execute()
                    .map_err(|e| PartitionError::Storage(StorageError::Io(e)))
            });
        match read {
            Ok(records) => {
                total += records.len();
                remaining = remaining.saturating_sub(records.len());
                out.push(
                    PartitionData::default()
                        .with_partition_index(s.partition)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(part.log_start_offset())
                        .with_aborted_transactions(read_committed.then(Vec::new))
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_records(Some(records)),
                );
            }
            Err(e) => {
                let code = super::partition_error_code(&e, &part.topic, part.index);
                let mut d = error_partition(s.partition, code);
                d.high_watermark = hw;
                d.last_stable_offset = hw;
                d.log_start_offset = part.log_start_offset();
                out.push(d);
            }
        }
    }
    (out, total)
}

pub async fn handle(b: Arc<Broker>, req: FetchRequest, version: i16) -> FetchResponse {
    // kavka does not keep incremental fetch sessions (KIP-227); session id 0 tells the client
    // to send full fetch requests. A client that names a session we never gave it is told so.
    if req.session_id != 0 || req.session_epoch > 0 {
        return FetchResponse::default().with_error_code(ErrorCode::FetchSessionIdNotFound.code());
    }
    let image = b.controller.image();
    let use_ids = version >= 13;
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut slots = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let resolved = if use_ids {
            image
                .topic_by_id(&t.topic_id)
                .map(|ti| ti.name.clone())
                .ok_or(ErrorCode::UnknownTopicId)
        } else if image.topic(&t.topic).is_some() {
            Ok(t.topic.to_string())
        } else {
            Err(ErrorCode::UnknownTopicOrPartition)
        };
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id),
        );
        for p in &t.partitions {
            let target = resolved.clone().and_then(|name| {
                b.replicas
                    .get(&name, p.partition)
                    .ok_or(ErrorCode::UnknownTopicOrPartition)
            });
            slots.push(Slot {
                topic_idx: ti,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                target,
            });
        }
    }
    let response_max_bytes = if version >= 3 {
        req.max_bytes
    } else {
        i32::MAX
    };
    let read_committed = version >= 4 && req.isolation_level == 1;
    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS) as u64);
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    // The most a read of this request can return: decides whether it may run inline.
    let read_bound = slots
        .iter()
        .map(|s| s.max_bytes.max(0) as usize)
        .sum::<usize>()
        .min(response_max_bytes.max(0) as usize);
    let slots = Arc::new(slots);
    let data = loop {
        // Subscribe before reading so an append between the read and the wait still wakes us.
        let mut watchers: Vec<watch::Receiver<i64>> = slots
            .iter()
            .filter_map(|s| s.target.as_ref().ok())
            .map(|p| p.watch_high_watermark())
            .collect();
        for w in &mut watchers {
            w.mark_unchanged();
        }
        let s2 = slots.clone();
        let Ok((data, bytes)) = crate::offload::run_io(read_bound, move || {
            read_once(&s2, response_max_bytes, read_committed)
        })
        .await
        else {
            break Vec::new();
        };
        let any_error = data.iter().any(|d| d.error_code != 0);
        if bytes >= min_bytes
            || any_error
            || watchers.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            break data;
        }
        let changed = select_all(watchers.iter_mut().map(|w| w.changed().boxed()));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            // Timed out: answer with what there is (re-read, cheap, in case of a race).
            let s2 = slots.clone();
            break crate::offload::run_io(read_bound, move || {
                read_once(&s2, response_max_bytes, read_committed).0
            })
            .await
            .unwrap_or_default();
        }
    };
    for (slot, d) in slots.iter().zip(data) {
        if let Some(t) = topics.get_mut(slot.topic_idx) {
            t.partitions.push(d);
        }
    }
    if use_ids {
        for t in &mut topics {
            t.topic = TopicName::default();
        }
    }
    FetchResponse::default().with_responses(topics)
}
