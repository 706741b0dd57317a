//! The Raft log and vote of one metadata quorum member, on disk.
//!
//! In `<dir>/`:
//! - `raft.log`: frames (see `frame`), each one JSON [`LogFrame`]. An append writes all its
//!   entries and fsyncs before openraft is told they are durable, so a torn tail belongs to an
//!   append nobody was acknowledged for and is truncated on open. Truncation (a new leader
//!   overwriting an uncommitted tail) shortens the file in place; a purge rewrites it, starting
//!   with a [`LogFrame::Purged`] marker, through a temp file and a rename.
//! - `vote`, `committed`: one frame each, replaced atomically. The vote must survive a crash (a
//!   node must never vote twice in a term), so a corrupt vote file is an error, never ignored.
//!
//! The entries are also kept in memory: the metadata log is small and bounded by snapshots.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{MetadataRaftConfig, RaftNodeId};
use crate::frame::{self, FrameRead};
use crate::log::MAX_FRAME_BYTES;

type C = MetadataRaftConfig;
type StorageResult<T> = Result<T, StorageError<RaftNodeId>>;

const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";

/// One frame of `raft.log`.
#[derive(Serialize, Deserialize)]
enum LogFrame {
    /// Every entry up to this log id was purged (covered by a snapshot). Only first in a file.
    Purged(LogId<RaftNodeId>),
    Entry(Entry<C>),
}

/// Failures opening the Raft log store.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt Raft metadata file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The on-disk Raft log. Cloning shares the same store (openraft's log reader is a clone).
///
/// Two locks: `inner` (the file) is held for a whole write, fsync included, and serializes
/// writes; `state` (what readers see) is only held briefly, and updated after a write is
/// durable. Readers on runtime workers never wait for an fsync.
#[derive(Clone)]
pub struct RaftLogStore {
    inner: Arc<Mutex<Inner>>,
    state: Arc<Mutex<State>>,
}

/// The file side; only writers lock it.
struct Inner {
    dir: PathBuf,
    file: File,
    /// Length of the valid prefix of `raft.log`: where the next frame goes.
    position: u64,
    /// Set when a failed write could not be rolled back; all writes are refused after.
    failed: bool,
    state: Arc<Mutex<State>>,
}

/// The durable state as of the last completed write.
struct State {
    /// Entries by index, with the byte position of their frame (for truncation).
    entries: BTreeMap<u64, (Entry<C>, u64)>,
    last_purged: Option<LogId<RaftNodeId>>,
    vote: Option<Vote<RaftNodeId>>,
    committed: Option<LogId<RaftNodeId>>,
}

impl RaftLogStore {
    /// Opens (creating if needed) the store under `dir`. A torn tail of `raft.log` is truncated
    /// with a warning; entries out of order or an unreadable vote are errors.
    pub fn open(dir: &Path) -> Result<RaftLogStore, LogStoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LogStoreError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let _ = fs::remove_file(dir.join(LOG_FILE).with_extension("tmp"));
        let vote = read_json_file(&dir.join(VOTE_FILE), true)?;
        let committed = read_json_file(&dir.join(COMMITTED_FILE), false)?.flatten();

        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        let (entries, last_purged, position) = scan_log(&mut file, &path)?;
        let file_len = file.metadata().map_err(io(&path))?.len();
        if file_len > position {
            warn!(path = %path.display(), valid_bytes = position, dropped_bytes = file_len - position,
                "raft log: truncating a torn or corrupt tail");
            file.set_len(position).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        frame::sync_dir(dir).map_err(io(dir))?;
        file.seek(SeekFrom::Start(position)).map_err(io(&path))?;
        info!(dir = %dir.display(), entries = entries.len(), ?last_purged, ?vote, ?committed, "raft log opened");
        let state = Arc::new(Mutex::new(State {
            entries,
            last_purged,
            vote,
            committed,
        }));
        Ok(RaftLogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_owned(),
                file,
                position,
                failed: false,
                state: Arc::clone(&state),
            })),
            state,
        })
    }

    /// The file side, for writers (tests drive writes through it directly).
    #[cfg(test)]
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a write (it fsyncs) on the blocking pool rather than on a runtime worker. Refused
    /// once a write could not be rolled back.
    async fn blocking<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut Inner) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let inner = Arc::clone(&self.inner);
        let task = tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
            if inner.failed {
                return Err(io::Error::other(
                    "the raft log failed a write it could not roll back; restart to recover",
                ));
            }
            write(&mut inner)
        });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Reads a one-frame JSON file. A missing file is `None`; a damaged one is an error when
/// `required` (the vote), else `None` with a warning (`committed` is only a hint).
fn read_json_file<T: for<'de> Deserialize<'de>>(
    path: &Path,
    required: bool,
) -> Result<Option<T>, LogStoreError> {
    let payload = frame::read_file(path, MAX_FRAME_BYTES).map_err(|source| LogStoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    let reason = match payload {
        None => return Ok(None),
        Some(Ok(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(v) => return Ok(Some(v)),
            Err(_) => "undecodable payload",
        },
        Some(Err(reason)) => reason,
    };
    if required {
        return Err(LogStoreError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        });
    }
    warn!(path = %path.display(), reason, "raft log: ignoring a damaged file");
    Ok(None)
}

type Scanned = (
    BTreeMap<u64, (Entry<C>, u64)>,
    Option<LogId<RaftNodeId>>,
    u64,
);

/// Reads every valid frame of `raft.log`; returns the entries, the purge point and the length
/// of the valid prefix.
fn scan_log(file: &mut File, path: &Path) -> Result<Scanned, LogStoreError> {
    let io = |source| LogStoreError::Io {
        path: path.to_owned(),
        source,
    };
    let corrupt = |reason: &str| LogStoreError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let len = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(&mut *file);
    let mut entries: BTreeMap<u64, (Entry<C>, u64)> = BTreeMap::new();
    let mut last_purged = None;
    let mut position = 0u64;
    loop {
        let payload = match frame::read(&mut reader, len - position, MAX_FRAME_BYTES).map_err(io)? {
            FrameRead::Frame(p) => p,
            FrameRead::End => break,
            FrameRead::Invalid(reason) => {
                warn!(path = %path.display(), position, reason, "raft log: invalid frame");
                break;
            }
        };
        let Ok(decoded) = serde_json::from_slice::<LogFrame>(&payload) else {
            warn!(path = %path.display(), position, "raft log: undecodable frame");
            break;
        };
        match decoded {
            LogFrame::Purged(log_id) if position == 0 => last_purged = Some(log_id),
            LogFrame::Purged(_) => return Err(corrupt("purge marker after the first frame")),
            LogFrame::Entry(entry) => {
                let expected = entries
                    .last_key_value()
                    .map(|(i, _)| i + 1)
                    .or(last_purged.map(|l: LogId<RaftNodeId>| l.index + 1));
                if expected.is_some_and(|e| e != entry.log_id.index) {
                    return Err(corrupt("raft log entries out of order"));
                }
                entries.insert(entry.log_id.index, (entry, position));
            }
        }
        position += frame::framed_len(payload.len());
    }
    Ok((entries, last_purged, position))
}

fn write_err(e: &io::Error) -> StorageError<RaftNodeId> {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    fn encode(value: &impl Serialize) -> Result<Vec<u8>, io::Error> {
        let payload = serde_json::to_vec(value).map_err(io::Error::other)?;
        frame::encode(&payload, MAX_FRAME_BYTES)
            .ok_or_else(|| io::Error::other("raft log entry over the frame limit"))
    }

    /// Writes `bytes` at the end and fsyncs; on failure cuts the file back to `position`.
    fn write_durably(&mut self, bytes: &[u8]) -> io::Result<()> {
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            let rollback = self
                .file
                .set_len(self.position)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.position)).map(|_| ()));
            if rollback.is_err() {
                self.failed = true;
            }
            return Err(e);
        }
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn append(&mut self, entries: Vec<Entry<C>>) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("raft log failed earlier"));
        }
        let mut bytes = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for entry in &entries {
            positions.push(self.position + bytes.len() as u64);
            bytes.extend(Self::encode(&LogFrame::Entry(entry.clone()))?);
        }
        self.write_durably(&bytes)?;
        let mut state = self.state();
        for (entry, pos) in entries.into_iter().zip(positions) {
            debug_assert!(
                state
                    .entries
                    .last_key_value()
                    .is_none_or(|(i, _)| *i + 1 == entry.log_id.index),
                "raft log append is not contiguous"
            );
            state.entries.insert(entry.log_id.index, (entry, pos));
        }
        Ok(())
    }

    /// Drops every entry at or after `index`.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some(pos) = self.state().entries.get(&index).map(|(_, pos)| *pos) else {
            return Ok(());
        };
        self.file.set_len(pos)?;
        self.file.sync_all()?;
        self.file.seek(SeekFrom::Start(pos))?;
        self.position = pos;
        self.state().entries.split_off(&index);
        Ok(())
    }

    /// Drops every entry up to `log_id` and rewrites the file without them.
    fn purge(&mut self, log_id: LogId<RaftNodeId>) -> io::Result<()> {
        // Copied, not taken: readers keep seeing the entries until the rewrite is durable.
        let kept: Vec<(u64, Entry<C>)> = self
            .state()
            .entries
            .range(log_id.index + 1..)
            .map(|(index, (entry, _))| (*index, entry.clone()))
            .collect();
        let mut bytes = Self::encode(&LogFrame::Purged(log_id))?;
        let mut entries = BTreeMap::new();
        for (index, entry) in kept {
            let pos = bytes.len() as u64;
            bytes.extend(Self::encode(&LogFrame::Entry(entry.clone()))?);
            entries.insert(index, (entry, pos));
        }
        let path = self.log_path();
        frame::write_atomically(&path, &bytes)?;
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        file.seek(SeekFrom::End(0))?;
        self.file = file;
        self.position = bytes.len() as u64;
        let mut state = self.state();
        state.entries = entries;
        state.last_purged = Some(log_id);
        Ok(())
    }

    fn save_json(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        frame::write_atomically(&self.dir.join(name), &Self::encode(value)?)
    }
}

impl RaftLogReader<C> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<C>>> {
        Ok(self
            .state()
            .entries
            .range(range)
            .map(|(_, (entry, _))| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<C> for RaftLogStore {
    type LogReader = RaftLogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<C>> {
        let state = self.state();
        let last_log_id = state
            .entries
            .last_key_value()
            .map(|(_, (entry, _))| *entry.get_log_id())
            .or(state.last_purged);
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> StorageResult<()> {
        let vote = *vote;
        self.blocking(move |inner| {
            inner.save_json(VOTE_FILE, &vote)?;
            inner.state().vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<RaftNodeId>>> {
        Ok(self.state().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> StorageResult<()> {
        self.blocking(move |inner| {
            inner.save_json(COMMITTED_FILE, &committed)?;
            inner.state().committed = committed;
            Ok(())
        })
        .await
        .map_err(|e| write_err(&e))
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<RaftNodeId>>> {
        Ok(self.state().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        match self.blocking(move |inner| inner.append(entries)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = write_err(&e);
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        self.blocking(move |inner| {
            inner
                .truncate(log_id.index)
                .inspect_err(|_| inner.failed = true)
        })
        .await
        .map_err(|e| write_err(&e))
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        self.blocking(move |inner| inner.purge(log_id).inspect_err(|_| inner.failed = true))
            .await
            .map_err(|e| write_err(&e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft::MetadataBatch;
    use crate::record::MetadataRecord;

    fn entry(term: u64, index: u64) -> Entry<C> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetadataBatch {
                records: vec![MetadataRecord::ClusterId {
                    cluster_id: format!("c{index}"),
                }],
            }),
        }
    }

    async fn indexes(store: &mut RaftLogStore) -> Vec<(u64, u64)> {
        store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[tokio::test]
    async fn append_truncate_purge_and_vote_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = RaftLogStore::open(dir.path()).expect("open");
        store
            .lock()
            .append((1..=6).map(|i| entry(1, i)).collect())
            .expect("append");
        store.lock().truncate(5).expect("truncate");
        store
            .lock()
            .append(vec![entry(2, 5)])
            .expect("append after truncate");
        store
            .lock()
            .purge(LogId::new(CommittedLeaderId::new(1, 1), 2))
            .expect("purge");
        store.save_vote(&Vote::new(2, 3)).await.expect("save vote");
        let committed = Some(LogId::new(CommittedLeaderId::new(2, 1), 5));
        store
            .save_committed(committed)
            .await
            .expect("save committed");
        let expected = vec![(1, 3), (1, 4), (2, 5)];
        assert_eq!(indexes(&mut store).await, expected);
        drop(store);

        let mut store = RaftLogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut store).await, expected);
        assert_eq!(
            store.read_vote().await.expect("vote"),
            Some(Vote::new(2, 3))
        );
        assert_eq!(store.read_committed().await.expect("committed"), committed);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));
        assert_eq!(
            state.last_log_id.map(|l| (l.leader_id.term, l.index)),
            Some((2, 5))
        );
        // Appends continue after a reopen, at the right place in the file.
        store.lock().append(vec![entry(2, 6)]).expect("append");
        drop(store);
        let mut store = RaftLogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut store).await.last(), Some(&(2, 6)));
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_a_damaged_vote_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RaftLogStore::open(dir.path()).expect("open");
        store
            .lock()
            .append(vec![entry(1, 1), entry(1, 2)])
            .expect("append");
        drop(store);
        let log = dir.path().join(LOG_FILE);
        let len = fs::metadata(&log).expect("log").len();
        // A torn frame: a header that promises more bytes than were written.
        let mut file = OpenOptions::new().append(true).open(&log).expect("log");
        file.write_all(&[0, 0, 1, 0, 1, 2, 3, 4, 5]).expect("write");
        drop(file);
        let mut store = RaftLogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![(1, 1), (1, 2)]);
        assert_eq!(fs::metadata(&log).expect("log").len(), len);
        drop(store);

        // A flipped byte inside the last entry fails its CRC: that entry is dropped.
        let mut bytes = fs::read(&log).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        fs::write(&log, &bytes).expect("write");
        let mut store = RaftLogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut store).await, vec![(1, 1)]);
        drop(store);

        fs::write(dir.path().join(VOTE_FILE), b"garbage").expect("write");
        assert!(matches!(
            RaftLogStore::open(dir.path()),
            Err(LogStoreError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn entries_out_of_order_are_corruption() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bytes = Vec::new();
        for index in [1, 3] {
            let payload = serde_json::to_vec(&LogFrame::Entry(entry(1, index))).expect("json");
            bytes.extend(frame::encode(&payload, MAX_FRAME_BYTES).expect("frame"));
        }
        fs::write(dir.path().join(LOG_FILE), bytes).expect("write");
        assert!(matches!(
            RaftLogStore::open(dir.path()),
            Err(LogStoreError::Corrupt { .. })
        ));
    }
}
