//! Fetch with long polling, from consumers and from follower replicas.
//!
//! A consumer (replica id < 0) reads from the leader up to the high watermark; if that is
//! less than `min_bytes`, the request parks on the partitions' high-watermark notifications
//! until enough arrives or `max_wait_ms` passes. A follower (replica id >= 0) reads up to the
//! log end offset, and its fetch offset tells the leader how far it has replicated: the HW
//! moves, a caught-up follower is proposed back into the ISR, and acks=all producers waiting
//! on the HW are released. Follower fetches park on log-end-offset changes. Never sleeps,
//! never blocks a reactor thread.
//!
//! Transactions: a read_committed consumer (isolation_level 1) reads up to the last stable
//! offset (LSO: below the first offset of any undecided transaction) and is told which
//! aborted transactions overlap what it got, so it can drop their records; every consumer is
//! told the LSO. A read_committed long poll re-reads only when some LSO moved, so a
//! transaction left open does not turn every append behind it into a pointless read.
//!
//! Replication throttle (KIP-73), Kafka's `shouldLeaderThrottle`: a follower outside the ISR
//! fetching a partition listed in `leader.replication.throttled.replicas` for this broker gets
//! no records for it (not an error) while the leader rate is used up; the bytes sent for such
//! partitions drain the rate.

use crate::broker::Broker;
use crate::partition::{FollowerFetchError, LeaderEpochError, Partition, PartitionError};
use crate::replica_manager::now_ms;
use crate::replication::throttle::ReplicationQuotas;
use bytes::Bytes;
use futures_util::future::{select_all, FutureExt};
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kavka_metadata::MetadataImage;
use kavka_protocol::error::ErrorCode;
use kavka_storage::StorageError;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Upper bound on how long a client may park a fetch, whatever it asks for.
const MAX_WAIT_CAP_MS: i32 = 5 * 60 * 1000;

/// What a requested partition is answered with.
enum Target {
    /// Read from the partition: up to the HW for a consumer, the log end for a follower.
    Read(Arc<Partition>),
    /// Answered without reading (an error, or a follower's diverging epoch).
    Fixed(Box<PartitionData>),
}

/// One requested partition, resolved against the image.
struct Slot {
    topic_idx: usize,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
    target: Target,
    /// Replication throttled on this leader (KIP-73): held back while the rate is used up.
    throttled: bool,
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

/// The partition's leader and leader epoch in `image`, when it has a leader.
pub(crate) fn image_leader(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
) -> Option<(i32, i32)> {
    image
        .topic(topic)
        .and_then(|t| t.partitions.get(&partition))
        .filter(|p| p.leader >= 0)
        .map(|p| (p.leader, p.leader_epoch))
}

/// Whether a partition error tells the client where the leader is (KIP-951).
fn names_leader(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch
    )
}

/// Reads every slot once. Blocking (positional file reads). Returns the partition data and
/// the number of record bytes gathered.
fn read_once(
    slots: &[Slot],
    response_max_bytes: i32,
    read_committed: bool,
    from_follower: bool,
    hold_throttled: bool,
) -> (Vec<PartitionData>, usize) {
    let mut remaining = response_max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut out = Vec::with_capacity(slots.len());
    for s in slots {
        let part = match &s.target {
            Target::Read(p) => p,
            Target::Fixed(d) => {
                out.push((**d).clone());
                continue;
            }
        };
        let limit = (s.max_bytes.max(0) as usize).min(remaining);
        // Kafka returns at least one whole batch for the first partition with data, even
        // if it exceeds the limits, so a consumer can always make progress.
        let min_one = total == 0;
        let hw = part.high_watermark();
        if hold_throttled && s.throttled {
            out.push(
                PartitionData::default()
                    .with_partition_index(s.partition)
                    .with_high_watermark(hw)
                    .with_last_stable_offset(hw)
                    .with_log_start_offset(part.log_start_offset())
                    .with_preferred_read_replica(BrokerId(-1))
                    .with_records(Some(Bytes::new())),
            );
            continue;
        }
        // Consumers of both isolation levels are told the last stable offset (Kafka reports
        // it whatever the level); followers keep the HW there, as before transactions.
        let lso = if from_follower {
            hw
        } else {
            part.last_stable_offset()
        };
        let plan = if from_follower {
            part.read_plan_for_follower(s.fetch_offset, limit, min_one)
        } else if read_committed {
            part.read_plan_committed(s.fetch_offset, limit, min_one)
        } else {
            part.read_plan(s.fetch_offset, limit, min_one)
        };
        let read = plan
            .and_then(|plan| {
                plan.execute()
                    .map_err(|e| PartitionError::Storage(StorageError::Io(e)))
            })
            .and_then(|records| {
                let aborted = if read_committed {
                    Some(aborted_in(part, s.fetch_offset, &records)?)
                } else {
                    None
                };
                Ok((records, aborted))
            });
        match read {
            Ok((records, aborted)) => {
                total += records.len();
                remaining = remaining.saturating_sub(records.len());
                out.push(
                    PartitionData::default()
                        .with_partition_index(s.partition)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(part.log_start_offset())
                        .with_aborted_transactions(aborted)
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_records(Some(records)),
                );
            }
            Err(e) => {
                let code = super::partition_error_code(&e, &part.topic, part.index);
                let mut d = error_partition(s.partition, code);
                d.high_watermark = hw;
                d.last_stable_offset = lso;
                d.log_start_offset = part.log_start_offset();
                out.push(d);
            }
        }
    }
    (out, total)
}

/// The aborted transactions a read_committed consumer needs to filter `records`, read from
/// `fetch_offset`: those overlapping `fetch_offset..end`, where `end` is the offset after the
/// last whole batch returned (Kafka bounds them by the end of the data read). Nothing read:
/// an empty list, never null, as Kafka answers read_committed.
fn aborted_in(
    part: &Partition,
    fetch_offset: i64,
    records: &[u8],
) -> Result<Vec<AbortedTransaction>, PartitionError> {
    let Some(end) = kavka_protocol::record_batch::batches(records)
        .map_while(Result::ok)
        .last()
        .map(|(_, h)| h.last_offset().saturating_add(1))
    else {
        return Ok(Vec::new());
    };
    Ok(part
        .aborted_transactions(fetch_offset, end)?
        .into_iter()
        .map(|a| {
            AbortedTransaction::default()
                .with_producer_id(ProducerId(a.producer_id))
                .with_first_offset(a.first_offset)
        })
        .collect())
}

/// The last stable offset of every slot read from, in slot order (a consumer's long poll).
fn stable_offsets(slots: &[Slot]) -> Vec<i64> {
    slots
        .iter()
        .filter_map(|s| match &s.target {
            Target::Read(p) => Some(p.last_stable_offset()),
            Target::Fixed(_) => None,
        })
        .collect()
}

/// The fetching replica: `replica_id` before v15, `replica_state.replica_id` from v15 on.
fn replica_id(req: &FetchRequest, version: i16) -> i32 {
    if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    }
}

/// Resolves one requested partition: leadership and epoch checks, and for a follower the
/// diverging-epoch check and the update of its position on the leader.
fn resolve(
    b: &Arc<Broker>,
    image: &MetadataImage,
    topic: &Result<String, ErrorCode>,
    p: &FetchPartition,
    version: i16,
    replica: i32,
) -> Target {
    let fixed = |code: ErrorCode| Target::Fixed(Box::new(error_partition(p.partition, code)));
    let name = match topic {
        Ok(name) => name,
        Err(code) => return fixed(*code),
    };
    let Some(part) = b.replicas.get(name, p.partition) else {
        // Kafka: a partition the cluster has but this broker does not host is answered
        // NOT_LEADER_OR_FOLLOWER, so the client refreshes its metadata.
        return match image_leader(image, name, p.partition) {
            Some(_) => fixed(ErrorCode::NotLeaderOrFollower),
            None => fixed(ErrorCode::UnknownTopicOrPartition),
        };
    };
    // Kafka checks the epoch before the leadership.
    if let Err(e) = part.check_current_leader_epoch(p.current_leader_epoch) {
        return fixed(epoch_error_code(&e));
    }
    if !part.is_leader() {
        return fixed(ErrorCode::NotLeaderOrFollower);
    }
    if replica < 0 {
        return Target::Read(part);
    }
    // KIP-320: a follower whose last fetched epoch ended earlier on the leader has diverged;
    // it is told where, and truncates before fetching again.
    if version >= 12 && p.last_fetched_epoch >= 0 {
        match part.end_offset_for_leader_epoch(-1, p.last_fetched_epoch) {
            Ok(Some((epoch, end_offset)))
                if epoch < p.last_fetched_epoch || end_offset < p.fetch_offset =>
            {
                let hw = part.high_watermark();
                return Target::Fixed(Box::new(
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(part.log_start_offset())
                        .with_diverging_epoch(
                            EpochEndOffset::default()
                                .with_epoch(epoch)
                                .with_end_offset(end_offset),
                        )
                        .with_records(Some(Bytes::new())),
                ));
            }
            Ok(Some(_)) => {}
            Ok(None) => return fixed(ErrorCode::OffsetOutOfRange),
            Err(e) => return fixed(epoch_error_code(&e)),
        }
    }
    if p.fetch_offset < part.log_start_offset() {
        return fixed(ErrorCode::OffsetOutOfRange);
    }
    let log_start_offset = if version >= 5 { p.log_start_offset } else { -1 };
    // A fenced follower still fetching must not be proposed into the ISR (KIP-841).
    part.set_ineligible_replicas(crate::replication::isr::ineligible_replicas(image, &part));
    match part.on_follower_fetch(replica, p.fetch_offset, log_start_offset, now_ms()) {
        Ok(send) => {
            if send {
                crate::replication::isr::send_pending_alter_partition(b, &part);
            }
            Target::Read(part)
        }
        Err(FollowerFetchError::NotLeader) => fixed(ErrorCode::NotLeaderOrFollower),
        Err(FollowerFetchError::Refused(e)) => {
            fixed(ErrorCode::try_from_code(e.code()).unwrap_or(ErrorCode::UnknownServerError))
        }
    }
}

/// Kafka's `shouldLeaderThrottle` less the rate check: the partition is listed as throttled on
/// this leader and the fetching follower is not in the ISR.
fn is_leader_throttled(
    quotas: &ReplicationQuotas,
    topic: &str,
    part: &Partition,
    replica: i32,
) -> bool {
    quotas.is_leader_throttled(topic, part.index)
        && !part.leader_isr().is_some_and(|isr| isr.contains(&replica))
}

fn epoch_error_code(e: &LeaderEpochError) -> ErrorCode {
    match e {
        LeaderEpochError::Fenced { .. } => ErrorCode::FencedLeaderEpoch,
        LeaderEpochError::Unknown { .. } => ErrorCode::UnknownLeaderEpoch,
        LeaderEpochError::Partition(_) => ErrorCode::NotLeaderOrFollower,
    }
}

pub async fn handle(b: Arc<Broker>, req: FetchRequest, version: i16) -> FetchResponse {
    // kavka does not keep incremental fetch sessions (KIP-227); session id 0 tells the client
    // to send full fetch requests. A client that names a session we never gave it is told so.
    if req.session_id != 0 || req.session_epoch > 0 {
        return FetchResponse::default().with_error_code(ErrorCode::FetchSessionIdNotFound.code());
    }
    let image = b.controller.image();
    let use_ids = version >= 13;
    let replica = replica_id(&req, version);
    let from_follower = replica >= 0;
    let quotas = b.replicas.fetchers().quotas().clone();
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
            let target = resolve(&b, &image, &resolved, p, version, replica);
            let throttled = match (&target, &resolved) {
                (Target::Read(part), Ok(name)) if from_follower => {
                    is_leader_throttled(&quotas, name, part, replica)
                }
                _ => false,
            };
            slots.push(Slot {
                topic_idx: ti,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                target,
                throttled,
            });
        }
        if let Ok(name) = resolved {
            if let Some(t) = topics.last_mut() {
                t.topic = TopicName(StrBytes::from_string(name));
            }
        }
    }
    let response_max_bytes = if version >= 3 {
        req.max_bytes
    } else {
        i32::MAX
    };
    // The isolation level is a consumer's: a follower copies the log to its end whatever it
    // asks (Kafka's FetchLogEnd).
    let read_committed = version >= 4 && req.isolation_level == 1 && !from_follower;
    let max_wait = Duration::from_millis(req.max_wait_ms.clamp(0, MAX_WAIT_CAP_MS) as u64);
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    // A diverging epoch or an error is answered at once.
    let answer_now = slots.iter().any(|s| matches!(s.target, Target::Fixed(_)));
    // The most a read of this request can return: decides whether it may run inline.
    let read_bound = slots
        .iter()
        .map(|s| s.max_bytes.max(0) as usize)
        .sum::<usize>()
        .min(response_max_bytes.max(0) as usize);
    let any_throttled = slots.iter().any(|s| s.throttled);
    let slots = Arc::new(slots);
    let data = loop {
        // Subscribe before reading so an append between the read and the wait still wakes us.
        let mut watchers: Vec<watch::Receiver<i64>> = slots
            .iter()
            .filter_map(|s| match &s.target {
                Target::Read(p) => Some(p),
                Target::Fixed(_) => None,
            })
            .map(|p| {
                if from_follower {
                    p.watch_log_end_offset()
                } else {
                    p.watch_high_watermark()
                }
            })
            .collect();
        for w in &mut watchers {
            w.mark_unchanged();
        }
        // read_committed reads stop at the LSO: what is taken before the read tells a later
        // HW move that left every LSO in place (an open transaction) from one worth a read.
        let lsos = if read_committed {
            stable_offsets(&slots)
        } else {
            Vec::new()
        };
        let s2 = slots.clone();
        let hold = any_throttled && quotas.is_leader_exhausted(now_ms());
        let Ok((data, bytes)) = crate::offload::run_io(read_bound, move || {
            read_once(&s2, response_max_bytes, read_committed, from_follower, hold)
        })
        .await
        else {
            break Vec::new();
        };
        let any_error = data.iter().any(|d| d.error_code != 0);
        if bytes >= min_bytes
            || any_error
            || answer_now
            || watchers.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            break data;
        }
        let timed_out = loop {
            let changed = select_all(watchers.iter_mut().map(|w| w.changed().boxed()));
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break true;
            }
            if !read_committed {
                break false;
            }
            // Marked before the LSOs are looked at, so a move right after still wakes us.
            for w in &mut watchers {
                w.mark_unchanged();
            }
            if stable_offsets(&slots) != lsos {
                break false;
            }
        };
        if timed_out {
            // Timed out: answer with what there is (re-read, cheap, in case of a race).
            let s2 = slots.clone();
            let hold = any_throttled && quotas.is_leader_exhausted(now_ms());
            break crate::offload::run_io(read_bound, move || {
                read_once(&s2, response_max_bytes, read_committed, from_follower, hold).0
            })
            .await
            .unwrap_or_default();
        }
    };
    if any_throttled {
        let sent: usize = slots
            .iter()
            .zip(&data)
            .filter(|(slot, _)| slot.throttled)
            .filter_map(|(_, d)| d.records.as_ref().map(|r| r.len()))
            .sum();
        quotas.record_leader(sent as u64, now_ms());
    }
    let mut leaders = BTreeSet::new();
    for (slot, mut d) in slots.iter().zip(data) {
        let Some(t) = topics.get_mut(slot.topic_idx) else {
            continue;
        };
        let code = ErrorCode::try_from_code(d.error_code);
        if version >= 12 && code.is_some_and(names_leader) {
            if let Some((leader, epoch)) = image_leader(&image, &t.topic, slot.partition) {
                d.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
                leaders.insert(leader);
            }
        }
        t.partitions.push(d);
    }
    let node_endpoints = if version >= 16 {
        leaders
            .into_iter()
            .filter_map(|id| image.brokers.get(&id).filter(|br| !br.fenced))
            .map(|br| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(br.node_id))
                    .with_host(StrBytes::from_string(br.host.clone()))
                    .with_port(i32::from(br.port))
                    .with_rack(br.rack.clone().map(StrBytes::from_string))
            })
            .collect()
    } else {
        Vec::new()
    };
    if use_ids {
        for t in &mut topics {
            t.topic = TopicName::default();
        }
    }
    FetchResponse::default()
        .with_responses(topics)
        .with_node_endpoints(node_endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::throttle::ThrottledReplicas;
    use kafka_protocol::records::Compression;
    use kavka_protocol::records::{encode_batch, plain_record};
    use std::collections::HashMap;

    /// Partition `t`-0 led by node 1 with replicas [1, 2, 3], ISR [1, 2], holding one batch.
    fn leader(dir: &std::path::Path) -> Arc<Partition> {
        let log = kavka_storage::Log::open(dir, kavka_storage::LogConfig::default(), 0).unwrap();
        let p = Partition::new("t".into(), uuid::Uuid::nil(), 0, log);
        p.become_leader(
            &kavka_metadata::PartitionImage {
                partition: 0,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
            Default::default(),
            0,
        );
        let batch = encode_batch(
            &[plain_record(0, 1, None, Some(Bytes::from_static(b"value")))],
            Compression::None,
        )
        .unwrap();
        p.append(&mut batch.to_vec(), 0).unwrap();
        p
    }

    /// Only a follower outside the ISR fetching a listed replica is throttled, and while the
    /// leader rate is used up it gets its partition with no records, not an error.
    #[test]
    fn throttled_followers_outside_the_isr_get_no_records_while_the_rate_is_used_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path());
        let quotas = ReplicationQuotas::new(1);
        assert!(!is_leader_throttled(&quotas, "t", &p, 3), "nothing listed");
        quotas.set_leader(
            Some(1000),
            HashMap::from([("t".to_string(), ThrottledReplicas::parse("0:1"))]),
            0,
        );
        assert!(is_leader_throttled(&quotas, "t", &p, 3), "out of the ISR");
        assert!(!is_leader_throttled(&quotas, "t", &p, 2), "in the ISR");
        assert!(!is_leader_throttled(&quotas, "u", &p, 3), "another topic");
        let slot = |throttled| Slot {
            topic_idx: 0,
            partition: 0,
            fetch_offset: 0,
            max_bytes: 1 << 20,
            target: Target::Read(p.clone()),
            throttled,
        };
        let slots = [slot(true), slot(false)];
        let (data, bytes) = read_once(&slots, i32::MAX, false, true, false);
        let sizes = |data: &[PartitionData]| {
            data.iter()
                .map(|d| (d.error_code, d.records.as_ref().map_or(0, |r| r.len())))
                .collect::<Vec<_>>()
        };
        let full = sizes(&data)[0].1;
        assert!(full > 0);
        assert_eq!(sizes(&data), vec![(0, full), (0, full)]);
        assert_eq!(bytes, 2 * full);
        // Held: the throttled slot answers with no records, the other is read as before.
        let (data, bytes) = read_once(&slots, i32::MAX, false, true, true);
        assert_eq!(sizes(&data), vec![(0, 0), (0, full)]);
        assert_eq!(bytes, full);
        assert_eq!(data[0].high_watermark, p.high_watermark());
    }
}
