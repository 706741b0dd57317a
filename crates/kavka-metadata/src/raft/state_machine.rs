//! The replicated state machine: committed [`MetadataBatch`]es applied to a [`MetadataImage`].
//!
//! A snapshot is the image's records (what [`MetadataImage::to_records`] rebuilds it from) with
//! its metadata offset and Raft position. The latest snapshot is kept in `<dir>/snapshot` (one
//! frame, replaced atomically), so a restarted node starts from it and replays only the log
//! after it. Every applied batch publishes the new image on a watch channel.

// openraft's trait methods return its own (large) StorageError; the helpers here share it.
#![allow(clippy::result_large_err)]

use std::io::{self, Cursor};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

use super::log_store::LogStoreError;
use super::{MetadataCommit, MetadataRaftConfig, RaftNodeId};
use crate::frame;
use crate::image::MetadataImage;
use crate::record::MetadataRecord;

type C = MetadataRaftConfig;
type StorageResult<T> = Result<T, StorageError<RaftNodeId>>;

const SNAPSHOT_FILE: &str = "snapshot";
/// Upper bound of a snapshot, checked before allocating when one is read or received.
pub const MAX_SNAPSHOT_BYTES: u32 = 256 * 1024 * 1024;

/// The bytes of a snapshot, as sent to a lagging follower.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    /// The image's offset (records are renumbered by `to_records`, offsets are not).
    offset: i64,
    records: Vec<MetadataRecord>,
}

/// The snapshot file: the data plus openraft's metadata.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftNodeId, BasicNode>,
    data: Vec<u8>,
}

/// The metadata state machine of one node. Cloning shares it (the snapshot builder is a clone).
#[derive(Clone)]
pub struct MetadataStateMachine {
    dir: Arc<Path>,
    inner: Arc<Mutex<Inner>>,
    /// Held for a whole snapshot build or install, so the snapshot file is written in the order
    /// the state was taken, while `inner` is held only briefly: apply and readers never wait
    /// behind a snapshot's serialization and fsync.
    snapshot_io: Arc<Mutex<()>>,
    image_tx: Arc<watch::Sender<Arc<MetadataImage>>>,
}

struct Inner {
    last_applied: Option<LogId<RaftNodeId>>,
    membership: StoredMembership<RaftNodeId, BasicNode>,
    image: Arc<MetadataImage>,
    snapshot: Option<StoredSnapshot>,
    snapshot_seq: u64,
}

fn decode_data(bytes: &[u8]) -> Result<MetadataImage, &'static str> {
    if bytes.len() > MAX_SNAPSHOT_BYTES as usize {
        return Err("snapshot over the size limit");
    }
    let data: SnapshotData =
        serde_json::from_slice(bytes).map_err(|_| "undecodable snapshot data")?;
    let mut image = MetadataImage::empty().apply(&data.records);
    image.offset = data.offset;
    Ok(image)
}

impl MetadataStateMachine {
    /// Opens the state machine under `dir`, restoring the image from the latest snapshot.
    pub fn open(dir: &Path) -> Result<MetadataStateMachine, LogStoreError> {
        std::fs::create_dir_all(dir).map_err(|source| LogStoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(SNAPSHOT_FILE);
        let corrupt = |reason: &str| LogStoreError::Corrupt {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let mut inner = Inner {
            last_applied: None,
            membership: StoredMembership::default(),
            image: Arc::new(MetadataImage::empty()),
            snapshot: None,
            snapshot_seq: 0,
        };
        let payload =
            frame::read_file(&path, MAX_SNAPSHOT_BYTES).map_err(|source| LogStoreError::Io {
                path: path.clone(),
                source,
            })?;
        if let Some(payload) = payload {
            // The snapshot may cover purged log entries: losing it would lose committed state.
            let payload = payload.map_err(corrupt)?;
            let stored: StoredSnapshot =
                serde_json::from_slice(&payload).map_err(|_| corrupt("undecodable snapshot"))?;
            inner.image = Arc::new(decode_data(&stored.data).map_err(corrupt)?);
            inner.last_applied = stored.meta.last_log_id;
            inner.membership = stored.meta.last_membership.clone();
            info!(offset = inner.image.offset, last_log_id = ?inner.last_applied, "raft metadata snapshot loaded");
            inner.snapshot = Some(stored);
        }
        let (image_tx, _) = watch::channel(Arc::clone(&inner.image));
        Ok(MetadataStateMachine {
            dir: Arc::from(dir),
            inner: Arc::new(Mutex::new(inner)),
            snapshot_io: Arc::new(Mutex::new(())),
            image_tx: Arc::new(image_tx),
        })
    }

    /// The committed image as applied so far.
    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.lock().image)
    }

    /// A receiver that sees every newly applied image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image_tx.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, image: Arc<MetadataImage>) {
        self.image_tx.send_replace(image);
    }
}

/// Writes `stored` as the snapshot file, durably (caller holds `snapshot_io`).
fn write_snapshot(dir: &Path, stored: &StoredSnapshot) -> io::Result<()> {
    let bytes = serde_json::to_vec(stored).map_err(io::Error::other)?;
    let framed = frame::encode(&bytes, MAX_SNAPSHOT_BYTES)
        .ok_or_else(|| io::Error::other("snapshot over the size limit"))?;
    frame::write_atomically(&dir.join(SNAPSHOT_FILE), &framed)
}

fn snapshot_of(stored: &StoredSnapshot) -> Snapshot<C> {
    Snapshot {
        meta: stored.meta.clone(),
        snapshot: Box::new(Cursor::new(stored.data.clone())),
    }
}

impl MetadataStateMachine {
    /// Runs a snapshot write (it fsyncs) on the blocking pool rather than on a runtime worker.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&MetadataStateMachine) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || op(&this)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StorageIOError::write_snapshot(None, AnyError::new(&e)).into()),
        }
    }

    fn build_snapshot_blocking(&self) -> StorageResult<Snapshot<C>> {
        let _io = self
            .snapshot_io
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Take a consistent (image, last_applied, membership) and let go of `inner` before the
        // slow part: rebuilding records, serializing and fsyncing.
        let (image, last_applied, membership, seq) = {
            let mut inner = self.lock();
            inner.snapshot_seq += 1;
            (
                Arc::clone(&inner.image),
                inner.last_applied,
                inner.membership.clone(),
                inner.snapshot_seq,
            )
        };
        let data = SnapshotData {
            offset: image.offset,
            records: image.to_records(),
        };
        let data = serde_json::to_vec(&data).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e)))
        })?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        let snapshot = snapshot_of(&stored);
        write_snapshot(&self.dir, &stored).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(snapshot.meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        self.lock().snapshot = Some(stored);
        info!(
            offset = image.offset,
            ?last_applied,
            "raft metadata snapshot built"
        );
        Ok(snapshot)
    }

    fn install_snapshot_blocking(
        &self,
        meta: &SnapshotMeta<RaftNodeId, BasicNode>,
        data: Vec<u8>,
    ) -> StorageResult<()> {
        let read_err = |reason: &'static str| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::error(reason),
            ))
        };
        let image = Arc::new(decode_data(&data).map_err(read_err)?);
        let _io = self
            .snapshot_io
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_snapshot(&self.dir, &stored).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        {
            let mut inner = self.lock();
            inner.snapshot = Some(stored);
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.image = Arc::clone(&image);
        }
        info!(offset = image.offset, last_log_id = ?meta.last_log_id, "raft metadata snapshot installed");
        self.publish(image);
        Ok(())
    }
}

impl RaftSnapshotBuilder<C> for MetadataStateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<C>> {
        self.blocking(|sm| sm.build_snapshot_blocking()).await
    }
}

impl RaftStateMachine<C> for MetadataStateMachine {
    type SnapshotBuilder = MetadataStateMachine;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<RaftNodeId>>,
        StoredMembership<RaftNodeId, BasicNode>,
    )> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<MetadataCommit>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut image = Arc::clone(&inner.image);
        let mut responses = Vec::new();
        for entry in entries {
            debug_assert!(
                inner
                    .last_applied
                    .is_none_or(|l| l.index < entry.log_id.index),
                "entries applied out of order"
            );
            inner.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    if !batch.records.is_empty() {
                        image = Arc::new(image.apply(&batch.records));
                    }
                }
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            responses.push(MetadataCommit {
                offset: image.offset,
            });
        }
        if !Arc::ptr_eq(&image, &inner.image) {
            inner.image = Arc::clone(&image);
            drop(inner);
            self.publish(image);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
        self.blocking(move |sm| sm.install_snapshot_blocking(&meta, data))
            .await
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<C>>> {
        Ok(self.lock().snapshot.as_ref().map(snapshot_of))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};
    use uuid::Uuid;

    use super::*;
    use crate::raft::MetadataBatch;

    fn entry(index: u64, payload: EntryPayload<C>) -> Entry<C> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload,
        }
    }

    fn topic(name: &str) -> EntryPayload<C> {
        EntryPayload::Normal(MetadataBatch {
            records: vec![MetadataRecord::Topic {
                name: name.to_owned(),
                topic_id: Uuid::new_v4(),
            }],
        })
    }

    #[tokio::test]
    async fn applies_batches_and_restores_from_its_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sm = MetadataStateMachine::open(dir.path()).expect("open");
        let mut rx = sm.subscribe();
        let membership = Membership::new(vec![[1u64].into_iter().collect()], None);
        let responses = sm
            .apply(vec![
                entry(1, EntryPayload::Membership(membership)),
                entry(2, EntryPayload::Blank),
                entry(3, topic("a")),
                entry(4, topic("b")),
            ])
            .await
            .expect("apply");
        let offsets: Vec<i64> = responses.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![-1, -1, 0, 1]);
        assert!(rx.has_changed().expect("open"));
        assert_eq!(rx.borrow_and_update().offset, 1);

        let snapshot = sm.build_snapshot().await.expect("snapshot");
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(4));
        let image = sm.image();
        drop(sm);

        let mut reopened = MetadataStateMachine::open(dir.path()).expect("reopen");
        assert_eq!(*reopened.image(), *image);
        let (applied, membership) = reopened.applied_state().await.expect("state");
        assert_eq!(applied.map(|l| l.index), Some(4));
        assert_eq!(membership.log_id().map(|l| l.index), Some(1));

        // Installing it on a fresh member gives the same image, offset included.
        let other = tempfile::tempdir().expect("temp dir");
        let mut fresh = MetadataStateMachine::open(other.path()).expect("open");
        fresh
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert_eq!(*fresh.image(), *image);
        assert!(fresh
            .get_current_snapshot()
            .await
            .expect("current")
            .is_some());
    }

    #[tokio::test]
    async fn hostile_snapshot_bytes_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sm = MetadataStateMachine::open(dir.path()).expect("open");
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 9)),
            last_membership: StoredMembership::default(),
            snapshot_id: "x".to_owned(),
        };
        let result = sm
            .install_snapshot(&meta, Box::new(Cursor::new(b"{\"offset\":1,".to_vec())))
            .await;
        assert!(result.is_err());
        assert_eq!(
            sm.image().offset,
            -1,
            "a refused snapshot changed the image"
        );

        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"\0\0\0\x10junk").expect("write");
        assert!(matches!(
            MetadataStateMachine::open(dir.path()),
            Err(LogStoreError::Corrupt { .. })
        ));
    }
}
