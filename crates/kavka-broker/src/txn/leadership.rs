//! The transaction coordinator follows `__transaction_state` leadership, as the group
//! coordinator follows `__consumer_offsets` (Kafka's `onElection` / `onResignation`): this
//! broker coordinates a partition's transactional ids iff the metadata image names it the
//! partition's leader and the partition took the role here.
//!
//! - Elected: the shard is marked loading (requests hear COORDINATOR_LOAD_IN_PROGRESS) and
//!   replayed from the log, to its end, on a blocking thread. Once loaded, decided
//!   (Prepare*) transactions resume writing their markers, and Ongoing ones restart their
//!   timeout clock from their last update.
//! - Resigned: the shard's ids are dropped (requests hear NOT_COORDINATOR); writes and
//!   completions in flight find the shard's epoch moved and stop.

use super::coordinator::{lock, ShardStatus, TransactionCoordinator, TXN_TOPIC};
use super::record;
use super::state::{TxnMetadata, TxnState};
use kavka_metadata::{ImageListener, MetadataImage};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Hands every committed metadata image to the coordinator (held weakly: the controller
/// keeps its listeners for good).
pub struct TxnLeadershipListener(Weak<TransactionCoordinator>);

impl ImageListener for TxnLeadershipListener {
    fn on_image(&self, _old: &MetadataImage, new: &MetadataImage) {
        if let Some(c) = self.0.upgrade() {
            c.apply_leadership(new);
        }
    }
}

impl TransactionCoordinator {
    /// Startup: subscribes to the controller's images and adopts the current one. Subscribe
    /// the ReplicaManager first (a replay needs the partition open and leading). Idempotent.
    pub fn follow_leadership(self: &Arc<Self>) {
        if self.me.set(Arc::downgrade(self)).is_err() {
            return;
        }
        self.controller
            .subscribe(Arc::new(TxnLeadershipListener(Arc::downgrade(self))));
        self.apply_leadership(&self.controller.image());
    }

    /// Adopts `image`'s leadership of the `__transaction_state` partitions. Quick: replays
    /// run elsewhere. An older image than one applied is ignored; the same one again is
    /// fine (after partitions took their roles outside an image change).
    pub fn apply_leadership(&self, image: &MetadataImage) {
        if self.me.get().is_none() {
            return;
        }
        let mut applied = self.applied_image.lock().unwrap_or_else(|p| p.into_inner());
        if image.offset < *applied {
            return;
        }
        *applied = image.offset;
        let Some(topic) = image.topic(TXN_TOPIC) else {
            return;
        };
        let shards = self.init_shards(topic.partitions.len());
        if shards.len() != topic.partitions.len() {
            tracing::warn!(
                shards = shards.len(),
                partitions = topic.partitions.len(),
                "{TXN_TOPIC} changed its partition count; transactional ids stay where they hash"
            );
        }
        for (p, shard) in shards.iter().enumerate() {
            let p = p as i32;
            let led_at = self.replicas.coordinated_epoch(image, TXN_TOPIC, p);
            let mut s = lock(shard);
            let moved_meanwhile = led_at.is_some()
                && s.status != ShardStatus::NotCoordinator
                && s.leader_epoch.is_some_and(|e| Some(e) != led_at);
            if led_at.is_none() || moved_meanwhile {
                if s.status != ShardStatus::NotCoordinator {
                    s.epoch += 1;
                    s.status = ShardStatus::NotCoordinator;
                    s.leader_epoch = None;
                    let n = std::mem::take(&mut s.txns).len();
                    tracing::info!(
                        partition = p,
                        transactional_ids = n,
                        "resigned as transaction coordinator of {TXN_TOPIC}-{p}"
                    );
                }
                if led_at.is_none() {
                    continue;
                }
            }
            s.leader_epoch = led_at;
            if s.status == ShardStatus::NotCoordinator {
                s.epoch += 1;
                s.status = ShardStatus::Loading { claimed: false };
                drop(s);
                tracing::info!(
                    partition = p,
                    "elected transaction coordinator of {TXN_TOPIC}-{p}"
                );
                self.spawn_load(p);
            }
        }
    }

    fn spawn_load(&self, p: i32) {
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let run = move || {
            let started = std::time::Instant::now();
            if let Some(n) = me.load_shard(p) {
                tracing::info!(
                    partition = p,
                    transactional_ids = n,
                    "loaded {TXN_TOPIC}-{p} in {} ms",
                    started.elapsed().as_millis()
                );
                me.resume_completions(p);
            }
        };
        match &self.runtime {
            Some(rt) => {
                rt.spawn_blocking(run);
            }
            None => {
                std::thread::spawn(run);
            }
        }
    }

    /// Replays shard `p` if it awaits its replay; returns how many ids it loaded, or `None`
    /// when there was nothing to do or leadership moved meanwhile. Blocking.
    fn load_shard(&self, p: i32) -> Option<usize> {
        let shard = self.shards.get()?.get(usize::try_from(p).ok()?)?;
        let epoch = {
            let mut s = lock(shard);
            if s.status != (ShardStatus::Loading { claimed: false }) {
                return None;
            }
            s.status = ShardStatus::Loading { claimed: true };
            s.epoch
        };
        let mut loaded = self.load_partition(p);
        let mut s = lock(shard);
        if s.epoch != epoch || s.status != (ShardStatus::Loading { claimed: true }) {
            tracing::info!(
                partition = p,
                "discarding a stale {TXN_TOPIC} replay (leadership moved meanwhile)"
            );
            return None;
        }
        for m in loaded.values_mut() {
            // The coordinator was away for part of the transaction's life: its clock
            // restarts from the last thing it heard.
            if m.state == TxnState::Ongoing {
                m.timeout_base = m.last_update_timestamp;
            }
        }
        let n = loaded.len();
        s.txns = loaded;
        s.status = ShardStatus::Loaded;
        Some(n)
    }

    /// Replays one partition to its log end: the last record per id wins, tombstones
    /// remove. Unreadable records are skipped with a warning.
    pub(super) fn load_partition(&self, p: i32) -> HashMap<String, TxnMetadata> {
        let mut txns: HashMap<String, TxnMetadata> = HashMap::new();
        let Some(part) = self.replicas.get(TXN_TOPIC, p) else {
            tracing::error!(partition = p, "{TXN_TOPIC} partition is not hosted here");
            return txns;
        };
        let mut pos = part.log_start_offset();
        loop {
            // To the log end (Kafka's LOG_END isolation): everything in a new leader's log
            // is what it will replicate.
            let bytes = match part
                .read_plan_for_follower(pos, 1 << 20, true)
                .map(|plan| plan.execute())
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    tracing::error!(partition = p, "cannot read {TXN_TOPIC}: {e}");
                    break;
                }
                Err(e) => {
                    tracing::error!(partition = p, "cannot read {TXN_TOPIC}: {e}");
                    break;
                }
            };
            if bytes.is_empty() {
                break;
            }
            let batches = match kavka_protocol::records::decode_batches_detailed(&bytes, 256 << 20)
            {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(
                        partition = p,
                        offset = pos,
                        "corrupt {TXN_TOPIC} batch: {e}"
                    );
                    break;
                }
            };
            for batch in batches {
                pos = pos.max(batch.header.next_offset());
                if batch.header.is_control() {
                    continue;
                }
                for r in batch.records {
                    let Some(key) = r.key else { continue };
                    let id = match record::decode_key(&key) {
                        Ok(Some(id)) => id,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(
                                partition = p,
                                offset = r.offset,
                                "skipping bad key: {e}"
                            );
                            continue;
                        }
                    };
                    match r.value.as_deref().map(record::decode_value) {
                        None => {
                            txns.remove(&id);
                        }
                        Some(Ok(v)) => {
                            let m = TxnMetadata::from_log(&id, &v.to_transit());
                            txns.insert(id, m);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(
                                partition = p,
                                offset = r.offset,
                                "skipping bad value: {e}"
                            )
                        }
                    }
                }
            }
        }
        txns
    }
}
