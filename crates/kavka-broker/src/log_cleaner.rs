//! The background log cleaner (Kafka's `LogCleaner` / `CleanerThread`): every so often it
//! picks the compacted log with the highest dirty ratio that is due
//! (`min.cleanable.dirty.ratio`, `max.compaction.lag.ms`, or tombstones past their delete
//! horizon) and cleans it.
//!
//! The partition lock is held only to take the snapshot and to swap the cleaned segments
//! in; reading and writing segments happens on a blocking thread without it, so produce and
//! fetch never wait for the cleaner. A log whose cleaning fails on its data (a corrupt batch,
//! a key map too small for one batch) is logged and left alone until the broker restarts;
//! an I/O error is retried after the backoff. The broker itself keeps running.

use crate::config::CleanerSettings;
use crate::partition::Partition;
use crate::replica_manager::{now_ms, ReplicaManager};
use kavka_storage::{CleanableLog, Cleaner, CleanerConfig, CleanerError, SwapOutcome};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// One cleaner: its key map (reused between rounds) and the logs it gave up on.
pub struct LogCleaner {
    cleaner: Cleaner,
    uncleanable: HashSet<(Uuid, i32)>,
}

/// What a call to [`LogCleaner::clean_filthiest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// No log was due.
    Idle,
    /// A log was cleaned (look again at once: another may be due).
    Cleaned,
    /// The round was aborted or failed (wait for the backoff before retrying).
    NoProgress,
}

impl LogCleaner {
    pub fn new(settings: &CleanerSettings) -> Self {
        LogCleaner {
            cleaner: Cleaner::new(CleanerConfig {
                dedupe_buffer_bytes: settings.dedupe_buffer_size,
                ..CleanerConfig::default()
            }),
            uncleanable: HashSet::new(),
        }
    }

    /// Cleans the dirtiest due log, if any. Blocking (file I/O).
    pub fn clean_filthiest(&mut self, replicas: &ReplicaManager) -> Round {
        let now = now_ms();
        let mut best: Option<(Arc<Partition>, CleanableLog)> = None;
        for p in replicas.all() {
            if self.uncleanable.contains(&(p.topic_id, p.index)) {
                continue;
            }
            let Ok(Some(snap)) = p.cleanable(now) else {
                continue;
            };
            if snap.is_due()
                && best
                    .as_ref()
                    .is_none_or(|(_, b)| snap.dirty_ratio() > b.dirty_ratio())
            {
                best = Some((p, snap));
            }
        }
        let Some((p, snap)) = best else {
            return Round::Idle;
        };
        let started = Instant::now();
        let cleaned = match self.cleaner.clean(&snap, now) {
            Ok(c) => c,
            Err(e) if p.changed_since(&snap) => {
                // A truncation raced with the read: not bad data.
                tracing::info!(topic = %p.topic, partition = p.index, "log cleaning aborted, the log was truncated: {e}");
                return Round::NoProgress;
            }
            Err(CleanerError::Io(e)) => {
                tracing::warn!(topic = %p.topic, partition = p.index, "log cleaning failed: {e}; retrying after the backoff");
                return Round::NoProgress;
            }
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, "log cleaning failed: {e}; this log is not cleaned again until restart");
                self.uncleanable.insert((p.topic_id, p.index));
                return Round::NoProgress;
            }
        };
        drop(snap);
        let stats = cleaned.stats.clone();
        match p.swap_cleaned(cleaned) {
            Ok(SwapOutcome::Swapped {
                segments_replaced,
                segments_written,
            }) => {
                let secs = started.elapsed().as_secs_f64().max(1e-6);
                tracing::info!(
                    topic = %p.topic,
                    partition = p.index,
                    segments_replaced,
                    segments_written,
                    keys = stats.keys,
                    records_read = stats.records_read,
                    records_retained = stats.records_retained,
                    tombstones_removed = stats.tombstones_removed,
                    bytes_read = stats.bytes_read,
                    bytes_written = stats.bytes_written,
                    "log cleaned in {:.1} ms ({:.1} MB/s read)",
                    secs * 1000.0,
                    stats.bytes_read as f64 / secs / 1e6
                );
                Round::Cleaned
            }
            Ok(SwapOutcome::Aborted(why)) => {
                tracing::info!(topic = %p.topic, partition = p.index, "log cleaning aborted: {why}");
                Round::NoProgress
            }
            Err(e) => {
                tracing::error!(topic = %p.topic, partition = p.index, "swapping in cleaned segments failed: {e}; this log is not cleaned again until restart");
                self.uncleanable.insert((p.topic_id, p.index));
                Round::NoProgress
            }
        }
    }
}

/// Runs the cleaner until `stop` turns true: cleans while logs are due, then sleeps
/// `log.cleaner.backoff.ms`. `log.cleaner.threads` is accepted but one task does the work.
pub async fn run(
    replicas: Arc<ReplicaManager>,
    settings: CleanerSettings,
    mut stop: watch::Receiver<bool>,
) {
    let backoff = Duration::from_millis(settings.backoff_ms);
    let mut cleaner = Some(LogCleaner::new(&settings));
    loop {
        if *stop.borrow() {
            return;
        }
        let mut c = cleaner.take().unwrap_or_else(|| LogCleaner::new(&settings));
        let r = replicas.clone();
        let round = match tokio::task::spawn_blocking(move || {
            let round = c.clean_filthiest(&r);
            (c, round)
        })
        .await
        {
            Ok((c, round)) => {
                cleaner = Some(c);
                round
            }
            Err(e) => {
                // A bug, not bad data (that is an error value): start afresh after a pause.
                tracing::error!("log cleaner task failed: {e}");
                Round::NoProgress
            }
        };
        if round == Round::Cleaned {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
    }
}
