//! The Raft log store: log entries, the vote, the committed log id and the
//! purge point, kept in a sled database in its own directory.
//!
//! Invariant: openraft is told that an append, a vote, a committed log id or
//! a purge point is durable only after sled has written it *and* we have
//! `fdatasync`ed sled's files ourselves. sled 0.34's `flush` writes its log
//! with `sync_file_range` on Linux and never syncs blob files or directory
//! entries, which is not durable; the store's durability barrier
//! (`Shared::make_durable`) closes that gap. Every flush and sync it makes
//! goes through one `Syncer`, so that tests can watch the order of syncs
//! and acknowledgements and hold a sync while they look.
//! The log never has a hole: an append inserts its entries one by one in
//! index order, and sled recovers a prefix of its log (it stops at the first
//! torn write), so a crash can only cut the end off an append; truncations
//! and purges are each one atomic sled batch, and a purge records its purge
//! point durably before it deletes anything.
//!
//! Layout (every record is `keyspace::encode`d: a format byte, then bincode
//! with a size limit):
//! - tree [`LOGS_TREE`]: big-endian `u64` index → [`typ::LogEntry`];
//! - tree [`META_TREE`]: [`VOTE_KEY`] → [`typ::Vote`], [`COMMITTED_KEY`] and
//!   [`LAST_PURGED_KEY`] → [`typ::LogId`].

// openraft's `StorageError` (224 bytes) is the error type its traits demand;
// boxing it in the helpers would only be unboxed again at the trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::ops::{Bound, RangeBounds};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bincode::Options;
use openraft::storage::{LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use rustix::fs::inotify;
use serde::de::DeserializeOwned;

use super::types::{typ, TypeConfig};
use crate::keyspace;

/// sled tree of log entries, keyed by big-endian index so that sled's key
/// order is log order.
pub const LOGS_TREE: &str = "logs";
/// sled tree of the vote, the committed log id and the purge point.
pub const META_TREE: &str = "meta";
/// The last saved vote; must survive restarts so a node never votes twice in
/// one term.
pub const VOTE_KEY: &[u8] = b"vote";
/// The last saved committed log id, so a restart re-applies up to it.
pub const COMMITTED_KEY: &[u8] = b"committed";
/// The last purged log id; entries up to it are gone for good.
pub const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The subdirectory where sled 0.34 writes every page (tree node) larger than
/// a quarter of its 512 KiB segment, so any node holding a large entry, one
/// new file per write.
const SLED_BLOBS_DIR: &str = "blobs";
/// sled 0.34's main data file (its log segments).
const SLED_DATA_FILE: &str = "db";

/// The Raft log store: implements openraft's [`RaftLogStorage`].
///
/// Opening touches disk; there is exactly one writer per directory (sled
/// locks the data file). Readers for replication come from
/// [`RaftLogStorage::get_log_reader`] and share the same database.
pub struct LogStore {
    inner: Arc<Shared>,
}

/// A read-only handle on a [`LogStore`], handed to openraft's replication
/// tasks. Cloning is cheap; all clones share the database.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogStore({})", self.inner.path.display())
    }
}

impl Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogReader({})", self.inner.path.display())
    }
}

/// What the store and its readers share.
struct Shared {
    path: PathBuf,
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    /// Makes the durability barrier's flush and sync calls.
    syncer: Box<dyn Syncer>,
    /// Set once a flush or fsync failed. After a failed `fsync` the kernel may
    /// have dropped the dirty pages and a retry can report success for data
    /// that never reached the disk, so every later durability barrier fails.
    durability_lost: AtomicBool,
    /// Serialises durability barriers and remembers what they have synced.
    synced: Mutex<Synced>,
    /// The last appended entries, for replication reads.
    recent: Mutex<Recent>,
    /// How long each durability barrier took (`/metrics`).
    flush_seconds: Histogram,
}

/// Entries kept in memory after an append, at most.
const RECENT_MAX_ENTRIES: usize = 1024;
/// Encoded bytes of the entries kept in memory, at most (one entry larger
/// than this is not kept).
const RECENT_MAX_BYTES: usize = 32 << 20;

/// The last appended entries, in memory, so that openraft's replication
/// reads them without a blocking-pool hand-off, a sled range scan and a
/// decode for every follower. Invariant: a contiguous run of indexes
/// ending at the last entry of the log, each entry equal to what sled holds
/// under its index; a read it cannot answer whole goes to sled.
#[derive(Default)]
struct Recent {
    entries: VecDeque<(typ::LogEntry, usize)>,
    bytes: usize,
}

impl Recent {
    /// `appended` (with their encoded sizes) now end the log.
    fn appended(&mut self, appended: Vec<(typ::LogEntry, usize)>) {
        let continues = match (self.entries.back(), appended.first()) {
            (Some((last, _)), Some((first, _))) => first.log_id.index == last.log_id.index + 1,
            _ => true,
        };
        if !continues {
            self.clear();
        }
        for (entry, size) in appended {
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > RECENT_MAX_ENTRIES || self.bytes > RECENT_MAX_BYTES {
            let Some((_, size)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= size;
        }
    }

    /// Entries from `index` on are gone.
    fn truncated(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= index)
        {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Entries up to `index` are gone.
    fn purged(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= index)
        {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries of `[start, end)` (`end` `None`: to the end of the log),
    /// if every one of them is here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<typ::LogEntry>> {
        let first = self.entries.front()?.0.log_id.index;
        let next = self.entries.back()?.0.log_id.index + 1;
        let end = end.unwrap_or(next);
        if start < first || end > next {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let take = usize::try_from(end.saturating_sub(start)).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// The calls that make what sled wrote durable. The durability barrier makes
/// every flush and sync through the store's `Syncer`: [`FsSyncer`] makes the
/// real calls, and tests wrap it to record the order of syncs and
/// acknowledgements and to hold a sync. The cost in production is one
/// indirect call per system call.
trait Syncer: Send + Sync {
    /// sled's `Db::flush`: write its dirty I/O buffers to the `db` file.
    fn flush(&self, db: &sled::Db) -> io::Result<()>;
    /// `fdatasync` the regular file `file`, opened from `path`.
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// `fsync` the directory `dir`, making the creation, renaming and
    /// removal of its entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The [`Syncer`] of every store outside tests: the system calls themselves.
struct FsSyncer;

impl Syncer for FsSyncer {
    fn flush(&self, db: &sled::Db) -> io::Result<()> {
        db.flush().map(drop).map_err(io::Error::other)
    }

    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// Files a durability barrier has already made durable.
struct Synced {
    /// sled's data file, open for `fdatasync`.
    data_file: File,
    /// Its path.
    data_path: PathBuf,
    /// Names in the db directory (`db`, `conf`, `snap.*`, `blobs`).
    dir_names: BTreeSet<OsString>,
    /// Names in `blobs/`; blob files are written once and never modified.
    blob_names: BTreeSet<OsString>,
    /// Whether the db directory's names may have changed since last listed.
    dir_watch: DirWatch,
    /// The same for `blobs/`.
    blob_watch: DirWatch,
}

/// Tells whether a directory's list of names may have changed since the
/// last look, without listing it (two `openat` and four `getdents64` per
/// barrier otherwise): an inotify watch on creations, deletions and renames.
/// Where inotify is unavailable it always answers yes, and the directory is
/// listed as before.
struct DirWatch {
    inotify: Option<OwnedFd>,
}

impl DirWatch {
    /// Watch `dir`. Call before listing it for the first time, so nothing
    /// created in between goes unseen.
    fn new(dir: &Path) -> DirWatch {
        let watch = || -> rustix::io::Result<OwnedFd> {
            let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
            inotify::add_watch(
                &fd,
                dir,
                inotify::WatchFlags::CREATE
                    | inotify::WatchFlags::DELETE
                    | inotify::WatchFlags::MOVE
                    | inotify::WatchFlags::DELETE_SELF
                    | inotify::WatchFlags::MOVE_SELF
                    | inotify::WatchFlags::ONLYDIR,
            )?;
            Ok(fd)
        };
        let inotify = watch()
            .map_err(|e| {
                tracing::info!(dir = %dir.display(), error = %e, "no inotify watch; the Raft log's directory is listed at every barrier");
            })
            .ok();
        DirWatch { inotify }
    }

    /// Whether anything happened to the directory's names since the last
    /// call (or the watch cannot tell, e.g. its queue overflowed). Takes the
    /// events it read.
    fn changed(&self) -> bool {
        let Some(fd) = &self.inotify else {
            return true;
        };
        let mut buf = [MaybeUninit::uninit(); 4096];
        let mut events = inotify::Reader::new(fd, &mut buf);
        let mut changed = false;
        loop {
            match events.next() {
                Ok(_) => changed = true,
                Err(rustix::io::Errno::WOULDBLOCK) => return changed,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return true,
            }
        }
    }
}

impl LogStore {
    /// Open (creating if needed) the log store in `dir`, e.g.
    /// `<data_dir>/raft-log`.
    ///
    /// Durability: before returning, every file sled keeps in `dir` and the
    /// directories holding them are synced, and a purge that a crash
    /// interrupted is finished (entries up to the recorded purge point are
    /// deleted).
    pub fn open(dir: &Path) -> Result<LogStore, typ::StorageError> {
        LogStore::open_with(dir, Box::new(FsSyncer))
    }

    /// [`LogStore::open`] with the barrier's calls made by `syncer`.
    fn open_with(dir: &Path, syncer: Box<dyn Syncer>) -> Result<LogStore, typ::StorageError> {
        let shared = Shared::open(dir, syncer).map_err(|e| {
            StorageIOError::read(AnyError::error(format!(
                "cannot open the Raft log at {}: {e}",
                dir.display()
            )))
        })?;
        shared.finish_purge()?;
        tracing::debug!(path = %dir.display(), "opened the Raft log");
        Ok(LogStore {
            inner: Arc::new(shared),
        })
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The durations of this store's durability barriers (sled flush, then
    /// `fdatasync`), one observation per barrier; cloning shares it.
    pub fn flush_seconds(&self) -> Histogram {
        self.inner.flush_seconds.clone()
    }

    /// [`RaftLogStorage::append`], with its acknowledgement as a closure:
    /// `acknowledge` is called once, with the durability barrier's result,
    /// after the barrier returned (the trait's `append` passes the
    /// `LogFlushed` callback; tests pass a recorder). On an error returned
    /// here instead, the entries were refused or only partly inserted, and
    /// `acknowledge` is not called.
    async fn append_then(
        &mut self,
        entries: Vec<typ::LogEntry>,
        acknowledge: impl FnOnce(io::Result<()>),
    ) -> Result<(), typ::StorageError> {
        let durable = blocking(&self.inner, write_logs_error, move |s| {
            // Encode all first: a refused entry writes nothing.
            let records = entries
                .iter()
                .map(|entry| Ok((log_key(entry.log_id.index), encode_entry(entry)?)))
                .collect::<Result<Vec<_>, typ::StorageError>>()?;
            let sizes: Vec<usize> = records.iter().map(|(_, r)| r.len()).collect();
            for (key, record) in records {
                if let Err(e) = s.logs.insert(key, record) {
                    // sled may hold part of this append: forget what is kept.
                    s.lock_recent().clear();
                    return Err(write_logs_error(AnyError::new(&e)));
                }
            }
            s.lock_recent()
                .appended(entries.into_iter().zip(sizes).collect());
            Ok(s.make_durable())
        })
        .await?;
        acknowledge(durable);
        Ok(())
    }
}

/// Run `f` on the blocking pool: sled reads and writes may block on disk I/O
/// and fsync always does. `on_panic` builds the error if `f` panics.
async fn blocking<T, F>(
    inner: &Arc<Shared>,
    on_panic: impl FnOnce(AnyError) -> typ::StorageError,
    f: F,
) -> Result<T, typ::StorageError>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> Result<T, typ::StorageError> + Send + 'static,
{
    let inner = Arc::clone(inner);
    match tokio::task::spawn_blocking(move || f(&inner)).await {
        Ok(result) => result,
        Err(e) => Err(on_panic(AnyError::new(&e))),
    }
}

fn read_logs_error(e: AnyError) -> typ::StorageError {
    StorageIOError::read_logs(e).into()
}

fn write_logs_error(e: AnyError) -> typ::StorageError {
    StorageIOError::write_logs(e).into()
}

fn write_vote_error(e: AnyError) -> typ::StorageError {
    StorageIOError::write_vote(e).into()
}

fn write_store_error(e: AnyError) -> typ::StorageError {
    StorageIOError::write(e).into()
}

fn read_vote_error(e: AnyError) -> typ::StorageError {
    StorageIOError::read_vote(e).into()
}

fn read_store_error(e: AnyError) -> typ::StorageError {
    StorageIOError::read(e).into()
}

/// The sled key of log index `index`.
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index of a sled key.
fn log_index(key: &[u8]) -> Result<u64, typ::StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StorageIOError::read_logs(AnyError::error(format!(
            "a log key is {} bytes long, not 8",
            key.len()
        )))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Encode a log entry, refusing one above the record size limit (rather than
/// letting `keyspace::encode` panic).
fn encode_entry(entry: &typ::LogEntry) -> Result<Vec<u8>, typ::StorageError> {
    let size = bincode::DefaultOptions::new()
        .serialized_size(entry)
        .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
    if size >= keyspace::MAX_RECORD_BYTES {
        return Err(StorageIOError::write_log_entry(
            entry.log_id,
            AnyError::error(format!(
                "the entry is {size} bytes; records are limited to {} bytes",
                keyspace::MAX_RECORD_BYTES
            )),
        )
        .into());
    }
    Ok(keyspace::encode(entry))
}

/// Decode the entry stored under `index`, checking it claims that index.
fn decode_entry(index: u64, bytes: &[u8]) -> Result<typ::LogEntry, typ::StorageError> {
    let entry: typ::LogEntry = keyspace::decode(bytes).map_err(|e| {
        StorageIOError::read_log_at_index(
            index,
            AnyError::error(format!("log entry {index} is unreadable: {e}")),
        )
    })?;
    if entry.log_id.index != index {
        return Err(StorageIOError::read_log_at_index(
            index,
            AnyError::error(format!(
                "the entry stored at index {index} has log id {}",
                entry.log_id
            )),
        )
        .into());
    }
    Ok(entry)
}

/// `range` as a half-open `[start, end)` (`end` `None` = unbounded), or
/// `None` if it is empty.
fn half_open(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if start >= end => None,
        _ => Some((start, end)),
    }
}

impl Shared {
    fn open(dir: &Path, syncer: Box<dyn Syncer>) -> io::Result<Shared> {
        crate::data_dir::create_private_dir(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(io::Error::other)?;
        let logs = db.open_tree(LOGS_TREE).map_err(io::Error::other)?;
        let meta = db.open_tree(META_TREE).map_err(io::Error::other)?;
        let data_path = dir.join(SLED_DATA_FILE);
        let data_file = File::open(&data_path)?;
        // sled made `blobs/` when it opened.
        let dir_watch = DirWatch::new(dir);
        let blob_watch = DirWatch::new(&dir.join(SLED_BLOBS_DIR));
        let shared = Shared {
            path: dir.to_path_buf(),
            db,
            logs,
            meta,
            syncer,
            durability_lost: AtomicBool::new(false),
            synced: Mutex::new(Synced {
                data_file,
                data_path,
                dir_names: BTreeSet::new(),
                blob_names: BTreeSet::new(),
                dir_watch,
                blob_watch,
            }),
            recent: Mutex::new(Recent::default()),
            // 50 µs (page cache) .. ~1.6 s (a slow disk).
            flush_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
        };
        // Nothing is known to be synced yet: this barrier syncs every file
        // (`conf` is written without any sync by sled) and both directories.
        shared.make_durable()?;
        // `dir` itself may just have been created.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            shared.syncer.sync_dir(parent)?;
        }
        Ok(shared)
    }

    /// The durability barrier: when it returns `Ok`, every write sled has
    /// accepted so far survives a crash or power loss.
    ///
    /// 1. `Db::flush` writes sled's dirty I/O buffers to the `db` file. On
    ///    Linux (no `io_uring` feature) sled 0.34 follows each write with
    ///    `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`, which neither
    ///    flushes file metadata (the file's size grows as the log grows) nor
    ///    the device's write cache, so
    /// 2. `fdatasync` the `db` file ourselves;
    /// 3. `fdatasync` every file in `blobs/` not synced before: sled writes
    ///    pages above ~128 KiB there (`write_blob`: create, `write_all`, no
    ///    sync at all), and the `db` file then points at them;
    /// 4. `fdatasync` new files in the db directory (`conf`, which sled
    ///    writes without syncing, `snap.*`), and `fsync` a directory whenever
    ///    its list of names changed, so created, renamed and deleted files
    ///    are durable too.
    ///
    /// Steps 3 and 4 list a directory only when its [`DirWatch`] saw a
    /// name change since the last barrier.
    fn make_durable(&self) -> io::Result<()> {
        self.refuse_if_poisoned()?;
        let start = std::time::Instant::now();
        let result = self.flush_and_sync();
        self.flush_seconds.observe(start.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::error!(path = %self.path.display(), error = %e, "flushing the Raft log failed");
            self.durability_lost.store(true, Ordering::Release);
        }
        result
    }

    /// Fails once a barrier has failed: the store's durability is unknown.
    fn refuse_if_poisoned(&self) -> io::Result<()> {
        if self.durability_lost.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an earlier flush of the Raft log failed; its durability is unknown",
            ));
        }
        Ok(())
    }

    fn flush_and_sync(&self) -> io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let syncer = &*self.syncer;
        syncer.flush(&self.db)?;
        syncer.sync_file(&synced.data_file, &synced.data_path)?;
        // The first barrier (at open) lists both: nothing is known yet.
        let first = synced.dir_names.is_empty();
        if synced.blob_watch.changed() || first {
            let blobs = self.path.join(SLED_BLOBS_DIR);
            sync_new_files(syncer, &blobs, &mut synced.blob_names)?;
        }
        if synced.dir_watch.changed() || first {
            sync_new_files(syncer, &self.path, &mut synced.dir_names)?;
        }
        Ok(())
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        on_error: fn(AnyError) -> typ::StorageError,
    ) -> Result<Option<T>, typ::StorageError> {
        let Some(bytes) = self
            .meta
            .get(key)
            .map_err(|e| on_error(AnyError::new(&e)))?
        else {
            return Ok(None);
        };
        keyspace::decode(&bytes).map(Some).map_err(|e| {
            on_error(AnyError::error(format!(
                "the Raft log's `{}` record is unreadable: {e}",
                String::from_utf8_lossy(key)
            )))
        })
    }

    fn last_purged(&self) -> Result<Option<typ::LogId>, typ::StorageError> {
        self.read_meta(LAST_PURGED_KEY, read_logs_error)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, typ::StorageError> {
        let last_purged = self.last_purged()?;
        let last_entry = match self
            .logs
            .last()
            .map_err(|e| read_logs_error(AnyError::new(&e)))?
        {
            Some((key, value)) => Some(decode_entry(log_index(&key)?, &value)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last_entry.max(last_purged),
        })
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entries(
        &self,
        start: u64,
        end: Option<u64>,
    ) -> Result<Vec<typ::LogEntry>, typ::StorageError> {
        let iter = match end {
            Some(end) => self.logs.range(log_key(start)..log_key(end)),
            None => self.logs.range(log_key(start)..),
        };
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| read_logs_error(AnyError::new(&e)))?;
            entries.push(decode_entry(log_index(&key)?, &value)?);
        }
        Ok(entries)
    }

    /// Delete every entry whose key is in `range`, in one atomic batch.
    fn delete_entries(
        &self,
        range: impl RangeBounds<[u8; 8]>,
        log_id: typ::LogId,
    ) -> Result<(), typ::StorageError> {
        let delete_error = |e: &sled::Error| {
            StorageIOError::new(
                ErrorSubject::Log(log_id),
                ErrorVerb::Delete,
                AnyError::new(e),
            )
        };
        let mut batch = sled::Batch::default();
        for key in self.logs.range(range).keys() {
            batch.remove(key.map_err(|e| delete_error(&e))?);
        }
        self.logs.apply_batch(batch).map_err(|e| delete_error(&e))?;
        Ok(())
    }

    /// Finish a purge a crash interrupted: delete entries up to the recorded
    /// purge point, durably.
    fn finish_purge(&self) -> Result<(), typ::StorageError> {
        let Some(last_purged) = self.last_purged()? else {
            return Ok(());
        };
        let upto = log_key(last_purged.index);
        let leftover = self
            .logs
            .first()
            .map_err(|e| read_logs_error(AnyError::new(&e)))?
            .is_some_and(|(key, _)| key.as_ref() <= upto.as_slice());
        if leftover {
            tracing::info!(%last_purged, "finishing an interrupted purge of the Raft log");
            self.delete_entries(..=upto, last_purged)?;
            self.make_durable().map_err(|e| {
                StorageIOError::new(
                    ErrorSubject::Log(last_purged),
                    ErrorVerb::Delete,
                    AnyError::new(&e),
                )
            })?;
        }
        Ok(())
    }
}

/// `fdatasync` every regular file in `dir` that is not in `known`, and
/// `fsync` `dir` if its names differ from `known`; then remember them.
/// A missing `dir` counts as empty; a file deleted while we look is skipped.
fn sync_new_files(
    syncer: &dyn Syncer,
    dir: &Path,
    known: &mut BTreeSet<OsString>,
) -> io::Result<()> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut names = BTreeSet::new();
    for dir_entry in listing {
        let dir_entry = dir_entry?;
        let name = dir_entry.file_name();
        if !known.contains(&name) && dir_entry.file_type()?.is_file() {
            let path = dir_entry.path();
            match File::open(&path) {
                Ok(file) => syncer.sync_file(&file, &path)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        names.insert(name);
    }
    if names != *known {
        syncer.sync_dir(dir)?;
        *known = names;
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<typ::LogEntry>, typ::StorageError> {
        let Some((start, end)) = half_open(&range) else {
            return Ok(Vec::new());
        };
        if let Some(entries) = self.inner.lock_recent().get(start, end) {
            return Ok(entries);
        }
        blocking(&self.inner, read_logs_error, move |s| s.entries(start, end)).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<typ::LogEntry>, typ::StorageError> {
        let Some((start, end)) = half_open(&range) else {
            return Ok(Vec::new());
        };
        if let Some(entries) = self.inner.lock_recent().get(start, end) {
            return Ok(entries);
        }
        blocking(&self.inner, read_logs_error, move |s| s.entries(start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    /// The last purged log id and the last log id (the last entry's, or the
    /// purge point when no entry is left).
    ///
    /// Durability: reads only; reflects every earlier write, durable or not.
    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, typ::StorageError> {
        blocking(&self.inner, read_logs_error, |s| s.log_state()).await
    }

    /// A reader sharing this store's database.
    ///
    /// Durability: none involved.
    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Save the vote.
    ///
    /// Durability: returns `Ok` only after the vote, and every write before
    /// it, passed the durability barrier (sled flush, then `fdatasync` of
    /// sled's files); a node that restarts never forgets a vote it cast.
    async fn save_vote(&mut self, vote: &typ::Vote) -> Result<(), typ::StorageError> {
        let record = keyspace::encode(vote);
        blocking(&self.inner, write_vote_error, move |s| {
            s.meta
                .insert(VOTE_KEY, record)
                .map_err(|e| write_vote_error(AnyError::new(&e)))?;
            s.make_durable()
                .map_err(|e| write_vote_error(AnyError::new(&e)))
        })
        .await
    }

    /// The last vote saved by [`RaftLogStorage::save_vote`].
    ///
    /// Durability: reads only.
    async fn read_vote(&mut self) -> Result<Option<typ::Vote>, typ::StorageError> {
        blocking(&self.inner, read_vote_error, |s| {
            s.read_meta(VOTE_KEY, read_vote_error)
        })
        .await
    }

    /// Save the committed log id (`None` removes it).
    ///
    /// Durability: written, not flushed; the next barrier (the next append
    /// or vote) makes it durable. It is a hint: at restart openraft applies
    /// the log up to it, then learns the rest from the leader, and every
    /// committed entry is in the (durable) log of a quorum. Losing the
    /// latest value in a crash only means applying less before that, while
    /// a barrier per commit would cost every write one more `fdatasync` on
    /// openraft's core loop. A store whose barrier failed refuses it.
    async fn save_committed(
        &mut self,
        committed: Option<typ::LogId>,
    ) -> Result<(), typ::StorageError> {
        blocking(&self.inner, write_store_error, move |s| {
            s.refuse_if_poisoned()
                .map_err(|e| write_store_error(AnyError::new(&e)))?;
            let written = match committed {
                Some(log_id) => s.meta.insert(COMMITTED_KEY, keyspace::encode(&log_id)),
                None => s.meta.remove(COMMITTED_KEY),
            };
            written
                .map(|_| ())
                .map_err(|e| write_store_error(AnyError::new(&e)))
        })
        .await
    }

    /// The last committed log id saved by
    /// [`RaftLogStorage::save_committed`].
    ///
    /// Durability: reads only.
    async fn read_committed(&mut self) -> Result<Option<typ::LogId>, typ::StorageError> {
        blocking(&self.inner, read_store_error, |s| {
            s.read_meta(COMMITTED_KEY, read_store_error)
        })
        .await
    }

    /// Append entries (consecutive, continuing the log), inserted one by one
    /// in index order. Not a sled batch: sled makes a batch atomic by
    /// writing out its I/O buffer before and after it, which costs two more
    /// device writes per append. Plain inserts from one caller are logged in
    /// call order and sled recovers a prefix of its log, so a crash before
    /// the barrier leaves a prefix of these entries: a shorter log, never a
    /// hole (and openraft was not told they were durable).
    ///
    /// Durability: the `callback` is told `Ok` only after the entries, and
    /// every write before them, passed the durability barrier (sled flush,
    /// then `fdatasync` of sled's data and blob files), run on the same
    /// blocking thread right after the inserts. If the barrier fails the
    /// `callback` gets the error, and every later barrier fails.
    ///
    /// Why not return first and flush on another thread: openraft 0.9's
    /// core awaits the callback of each append before it does anything else
    /// (`RaftCore::append_to_log`), replication of these entries included,
    /// so there is never a second append to share a barrier with, and a
    /// hand-off to a flusher thread only adds a wake-up to every write.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: typ::LogFlushed,
    ) -> Result<(), typ::StorageError>
    where
        I: IntoIterator<Item = typ::LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<typ::LogEntry> = entries.into_iter().collect();
        self.append_then(entries, |durable| callback.log_io_completed(durable))
            .await
    }

    /// Delete the entries from `log_id.index` on, inclusive, in one atomic
    /// batch (so no hole can appear).
    ///
    /// Durability: returns `Ok` only after the deletion passed the
    /// durability barrier.
    async fn truncate(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        let on_error = |e: AnyError| -> typ::StorageError {
            StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Delete, e).into()
        };
        blocking(&self.inner, on_error, move |s| {
            s.lock_recent().truncated(log_id.index);
            s.delete_entries(log_key(log_id.index).., log_id)?;
            s.make_durable().map_err(|e| on_error(AnyError::new(&e)))
        })
        .await
    }

    /// Delete the entries up to `log_id`, inclusive, and remember `log_id`
    /// as the purge point (it may lie beyond the last entry).
    ///
    /// Durability: the purge point is written and passes the durability
    /// barrier *before* any entry is deleted; the deletion itself (one atomic
    /// batch) is made durable by the next barrier. A crash in between leaves
    /// entries at or below the purge point, which [`LogStore::open`] deletes.
    /// A purge point at or below the current one changes nothing.
    async fn purge(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        let on_error = move |e: AnyError| -> typ::StorageError {
            StorageIOError::new(ErrorSubject::Log(log_id), ErrorVerb::Delete, e).into()
        };
        blocking(&self.inner, on_error, move |s| {
            if s.last_purged()?.is_some_and(|last| last >= log_id) {
                return Ok(());
            }
            s.meta
                .insert(LAST_PURGED_KEY, keyspace::encode(&log_id))
                .map_err(|e| on_error(AnyError::new(&e)))?;
            s.make_durable().map_err(|e| on_error(AnyError::new(&e)))?;
            s.lock_recent().purged(log_id.index);
            s.delete_entries(..=log_key(log_id.index), log_id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload, Membership, Vote};

    use super::*;
    use crate::state::command::{Batch, Command, Request};

    const NODE: u64 = 1;

    fn lid(term: u64, index: u64) -> typ::LogId {
        log_id(term, NODE, index)
    }

    fn normal(term: u64, index: u64) -> typ::LogEntry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(Batch {
                requests: vec![Request {
                    time_ms: 1_700_000_000_000 + index,
                    idempotency: None,
                    command: Command::Sweep,
                }],
            }),
        }
    }

    fn blank(term: u64, index: u64) -> typ::LogEntry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn membership(term: u64, index: u64) -> typ::LogEntry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2, 3])],
                None,
            )),
        }
    }

    /// An entry carrying a 1 MiB ciphertext (the largest value kstash takes).
    fn big(term: u64, index: u64) -> typ::LogEntry {
        Entry {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(Batch {
                requests: vec![Request {
                    time_ms: 1_700_000_000_000,
                    idempotency: None,
                    command: Command::PutSecret {
                        by: crate::state::command::Actor::AccessToken { id: [7; 32] },
                        namespace: "team".into(),
                        path: format!("blob/{index}"),
                        cas: None,
                        term: 1,
                        ciphertext: (0..1 << 20).map(|i| (i * 31 + index) as u8).collect(),
                    },
                }],
            }),
        }
    }

    /// Entries compared by their encoding (`Batch` has no `PartialEq`).
    fn encoded(entries: &[typ::LogEntry]) -> Vec<Vec<u8>> {
        entries.iter().map(keyspace::encode).collect()
    }

    /// Same entries, byte for byte; prints only the indexes on failure.
    fn assert_same(got: &[typ::LogEntry], want: &[typ::LogEntry]) {
        assert_eq!(indexes(got), indexes(want));
        assert!(encoded(got) == encoded(want), "entries differ in content");
    }

    fn indexes(entries: &[typ::LogEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    async fn all(store: &mut LogStore) -> Vec<typ::LogEntry> {
        store.try_get_log_entries(..).await.expect("read entries")
    }

    /// The entries are consecutive, start right after the purge point (if
    /// any) and end at the last log id.
    async fn assert_no_hole(store: &mut LogStore) {
        let state = store.get_log_state().await.unwrap();
        let got = indexes(&all(store).await);
        let (Some(&first), Some(&last)) = (got.first(), got.last()) else {
            assert_eq!(state.last_log_id, state.last_purged_log_id);
            return;
        };
        assert_eq!(got, (first..=last).collect::<Vec<_>>(), "a hole");
        if let Some(purged) = state.last_purged_log_id {
            assert_eq!(first, purged.index + 1, "{state:?}");
        }
        assert_eq!(state.last_log_id.map(|l| l.index), Some(last));
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    fn io_message(err: typ::StorageError) -> String {
        match err {
            openraft::StorageError::IO { source } => source.to_string(),
            other => panic!("expected an IO error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn everything_survives_a_reopen() {
        // Steps: append blank, membership and normal entries; save vote and
        // committed; purge; close; reopen; everything is there.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log");
        let entries = vec![
            blank(1, 1),
            membership(1, 2),
            normal(1, 3),
            normal(1, 4),
            normal(2, 5),
        ];
        let vote = Vote::new_committed(2, NODE);
        {
            let mut store = LogStore::open(&path).unwrap();
            store.blocking_append(entries.clone()).await.unwrap();
            store.save_vote(&vote).await.unwrap();
            store.save_committed(Some(lid(1, 4))).await.unwrap();
            store.purge(lid(1, 2)).await.unwrap();
        }
        let mut store = LogStore::open(&path).unwrap();
        assert_same(&all(&mut store).await, &entries[2..]);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 4)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(1, 2)));
        assert_eq!(state.last_log_id, Some(lid(2, 5)));

        store.save_committed(None).await.unwrap();
        drop(store);
        let mut store = LogStore::open(&path).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_empty_store_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert_eq!(store.read_committed().await.unwrap(), None);
        assert!(all(&mut store).await.is_empty());
    }

    #[tokio::test]
    async fn the_files_hold_the_entries_once_the_callback_ran() {
        // Steps: append (small and 1 MiB entries) and wait for the callback;
        // copy the directory while the store is still open, as a killed
        // process would leave it; the copy opens and holds every entry; every
        // blob file sled wrote was synced by the barrier. Same for a vote.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft-log");
        let mut store = LogStore::open(&path).unwrap();
        let entries = vec![normal(1, 1), big(1, 2), normal(1, 3), big(1, 4)];
        store.blocking_append(entries.clone()).await.unwrap();

        let blobs: BTreeSet<OsString> = std::fs::read_dir(path.join(SLED_BLOBS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!blobs.is_empty(), "1 MiB entries are stored as sled blobs");
        let synced_blobs = store.inner.synced.lock().unwrap().blob_names.clone();
        assert!(blobs.is_subset(&synced_blobs), "{blobs:?}");

        let copy = dir.path().join("copy-after-append");
        copy_dir(&path, &copy);
        let mut copied = LogStore::open(&copy).unwrap();
        assert_same(&all(&mut copied).await, &entries);
        drop(copied);

        store.save_vote(&Vote::new(3, NODE)).await.unwrap();
        let copy = dir.path().join("copy-after-vote");
        copy_dir(&path, &copy);
        let mut copied = LogStore::open(&copy).unwrap();
        assert_eq!(copied.read_vote().await.unwrap(), Some(Vote::new(3, NODE)));
    }

    #[tokio::test]
    async fn reads_from_memory_match_sled_after_appends_truncations_and_purges() {
        // Steps: append 1..=5, then 6..=8; truncate at 7; append 7..=9 of a
        // new term; purge to 3. After each, every range read through the
        // store equals the same range read from sled, and recent ranges are
        // answered from memory.
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        let check = |store: &LogStore, first: u64, last: u64| {
            let memory = store.inner.lock_recent().get(first, None);
            let sled = store.inner.entries(first, None).unwrap();
            assert_same(memory.as_deref().expect("kept in memory"), &sled);
            assert_eq!(indexes(&sled), (first..=last).collect::<Vec<_>>());
        };
        store
            .blocking_append((1..=5).map(|i| normal(1, i)))
            .await
            .unwrap();
        store
            .blocking_append((6..=8).map(|i| normal(1, i)))
            .await
            .unwrap();
        check(&store, 1, 8);
        store.truncate(lid(1, 7)).await.unwrap();
        check(&store, 1, 6);
        store
            .blocking_append((7..=9).map(|i| normal(2, i)))
            .await
            .unwrap();
        check(&store, 1, 9);
        assert_eq!(
            all(&mut store).await[6].log_id,
            lid(2, 7),
            "the new term's entry"
        );
        store.purge(lid(1, 3)).await.unwrap();
        check(&store, 4, 9);
        assert!(store.inner.lock_recent().get(3, None).is_none(), "purged");
        let middle = store.try_get_log_entries(5..7).await.unwrap();
        assert_same(&middle, &store.inner.entries(5, Some(7)).unwrap());
    }

    #[test]
    fn memory_keeps_a_bounded_contiguous_run() {
        let mut recent = Recent::default();
        recent.appended((1..=3).map(|i| (normal(1, i), 10)).collect());
        recent.appended(vec![(normal(1, 5), 10)]);
        assert_eq!(recent.get(5, None).map(|e| indexes(&e)), Some(vec![5]));
        assert!(
            recent.get(3, None).is_none(),
            "a gap forgets what came before"
        );
        let many = RECENT_MAX_ENTRIES as u64 + 10;
        recent.appended((6..6 + many).map(|i| (normal(1, i), 1)).collect());
        assert_eq!(recent.entries.len(), RECENT_MAX_ENTRIES);
        assert!(recent.get(6, None).is_none(), "the oldest were dropped");
        let last = 5 + many;
        assert_eq!(
            recent.get(last, None).map(|e| indexes(&e)),
            Some(vec![last])
        );
        assert!(recent.get(last, Some(last + 2)).is_none(), "beyond the log");
        recent.appended(vec![(normal(1, last + 1), RECENT_MAX_BYTES + 1)]);
        assert!(
            recent.entries.is_empty() && recent.bytes == 0,
            "too large to keep"
        );
    }

    #[test]
    fn a_dir_watch_reports_each_name_change_once_and_falls_back_to_yes() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path());
        assert!(watch.inotify.is_some(), "inotify works here");
        assert!(!watch.changed(), "nothing happened yet");
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        assert!(watch.changed(), "a creation");
        assert!(!watch.changed(), "taken");
        std::fs::write(dir.path().join("a"), b"y").unwrap();
        assert!(!watch.changed(), "a write changes no name");
        std::fs::rename(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert!(watch.changed(), "a rename");
        std::fs::remove_file(dir.path().join("b")).unwrap();
        assert!(watch.changed(), "a deletion");
        let blind = DirWatch::new(&dir.path().join("missing"));
        assert!(blind.changed() && blind.changed(), "no watch: always list");
    }

    #[tokio::test]
    async fn one_mib_entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (1..=3).map(|i| big(1, i)).collect();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store.blocking_append(entries.clone()).await.unwrap();
            let middle = store.try_get_log_entries(2..3).await.unwrap();
            assert_same(&middle, &entries[1..2]);
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_same(&all(&mut store).await, &entries);
        let mut reader = store.get_log_reader().await;
        let read = reader.try_get_log_entries(1..=3).await.unwrap();
        assert_same(&read, &entries);
    }

    #[tokio::test]
    async fn truncate_and_purge_never_leave_a_hole() {
        // Steps: append 1..=10; truncate at 6; purge to 3; reopen; purge
        // beyond the last entry; append after the purge point; reopen.
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((1..=10).map(|i| normal(1, i)))
            .await
            .unwrap();

        tracing::info!("--- truncate at 6");
        store.truncate(lid(1, 6)).await.unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![1, 2, 3, 4, 5]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(lid(1, 5)));
        assert_no_hole(&mut store).await;

        tracing::info!("--- purge to 3");
        store.purge(lid(1, 3)).await.unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![4, 5]);
        assert_no_hole(&mut store).await;

        tracing::info!("--- an older purge point changes nothing");
        store.purge(lid(1, 2)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(1, 3)));

        tracing::info!("--- reopen");
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(1, 3)));
        assert_eq!(state.last_log_id, Some(lid(1, 5)));
        assert_no_hole(&mut store).await;

        tracing::info!("--- purge beyond the last entry");
        store.purge(lid(2, 8)).await.unwrap();
        assert!(all(&mut store).await.is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(2, 8)));
        assert_eq!(state.last_log_id, Some(lid(2, 8)));

        tracing::info!("--- append after the purge point; reopen");
        store
            .blocking_append([normal(2, 9), normal(2, 10)])
            .await
            .unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![9, 10]);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(lid(2, 8)));
        assert_eq!(state.last_log_id, Some(lid(2, 10)));
        assert_no_hole(&mut store).await;

        tracing::info!("--- truncate everything that is left");
        store.truncate(lid(2, 9)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            state.last_log_id,
            Some(lid(2, 8)),
            "falls back to the purge point"
        );
        assert_no_hole(&mut store).await;
    }

    #[tokio::test]
    async fn truncate_everything_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((0..=4).map(|i| blank(1, i)))
            .await
            .unwrap();
        store.truncate(lid(1, 0)).await.unwrap();
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
        assert!(all(&mut store).await.is_empty());
    }

    #[tokio::test]
    async fn an_interrupted_purge_is_finished_on_open() {
        // Steps: append 1..=5; record purge point 3 durably without deleting
        // (a crash between the two steps of `purge`); reopen: 1..=3 are gone.
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = LogStore::open(dir.path()).unwrap();
            store
                .blocking_append((1..=5).map(|i| normal(1, i)))
                .await
                .unwrap();
            let inner = &store.inner;
            inner
                .meta
                .insert(LAST_PURGED_KEY, keyspace::encode(&lid(1, 3)))
                .unwrap();
            inner.make_durable().unwrap();
        }
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![4, 5]);
        assert_no_hole(&mut store).await;
    }

    #[tokio::test]
    async fn ranges_are_half_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append((1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();
        let mut get = async |range: (Bound<u64>, Bound<u64>)| {
            indexes(&store.try_get_log_entries(range).await.unwrap())
        };
        use Bound::*;
        assert_eq!(get((Included(3), Excluded(3))).await, Vec::<u64>::new());
        assert_eq!(get((Included(5), Excluded(7))).await, vec![5, 6]);
        assert_eq!(get((Excluded(8), Unbounded)).await, vec![9, 10]);
        assert_eq!(get((Unbounded, Included(2))).await, vec![1, 2]);
        assert_eq!(get((Included(7), Excluded(2))).await, Vec::<u64>::new());
        assert_eq!(get((Included(9), Included(u64::MAX))).await, vec![9, 10]);
        assert_eq!(
            get((Excluded(u64::MAX), Unbounded)).await,
            Vec::<u64>::new()
        );
        assert_eq!(get((Included(11), Unbounded)).await, Vec::<u64>::new());
    }

    #[tokio::test]
    async fn garbage_records_are_refused_with_a_storage_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .blocking_append([normal(1, 1), normal(1, 2)])
            .await
            .unwrap();
        let inner = Arc::clone(&store.inner);

        tracing::info!("--- an undecodable entry");
        inner.logs.insert(log_key(3), &[1, 0xff, 0xff][..]).unwrap();
        let err = store.try_get_log_entries(..).await.unwrap_err();
        let message = io_message(err);
        assert!(message.contains("LogIndex(3)"), "{message}");
        assert!(message.contains("log entry 3 is unreadable"), "{message}");
        let err = store.get_log_state().await.unwrap_err();
        assert!(io_message(err).contains("log entry 3"));

        tracing::info!("--- an unknown format byte");
        inner.logs.insert(log_key(3), &[9, 0][..]).unwrap();
        let message = io_message(store.try_get_log_entries(3..4).await.unwrap_err());
        assert!(message.contains("unknown record format 9"), "{message}");

        tracing::info!("--- an entry stored under the wrong index");
        inner
            .logs
            .insert(log_key(3), keyspace::encode(&normal(1, 4)))
            .unwrap();
        let message = io_message(store.try_get_log_entries(3..4).await.unwrap_err());
        assert!(message.contains("stored at index 3"), "{message}");

        tracing::info!("--- a malformed key");
        inner.logs.remove(log_key(3)).unwrap();
        inner
            .logs
            .insert(&b"xyz"[..], keyspace::encode(&normal(1, 3)))
            .unwrap();
        let message = io_message(store.try_get_log_entries(..).await.unwrap_err());
        assert!(message.contains("3 bytes long"), "{message}");
        inner.logs.remove(&b"xyz"[..]).unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![1, 2]);

        tracing::info!("--- a garbage vote, committed id and purge point");
        inner.meta.insert(VOTE_KEY, &[1, 0xff][..]).unwrap();
        let message = io_message(store.read_vote().await.unwrap_err());
        assert!(
            message.contains("Vote") && message.contains("`vote`"),
            "{message}"
        );
        inner.meta.insert(COMMITTED_KEY, &[][..]).unwrap();
        let message = io_message(store.read_committed().await.unwrap_err());
        assert!(message.contains("empty record"), "{message}");
        inner.meta.insert(LAST_PURGED_KEY, &[2][..]).unwrap();
        assert!(store.get_log_state().await.is_err());
        drop(inner);
        drop(store);
        let err = LogStore::open(dir.path()).unwrap_err();
        assert!(io_message(err).contains("`last_purged` record is unreadable"));
    }

    #[tokio::test]
    async fn a_failed_barrier_fails_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.blocking_append([blank(1, 1)]).await.unwrap();
        store.inner.durability_lost.store(true, Ordering::Release);
        let err = store.blocking_append([blank(1, 2)]).await.unwrap_err();
        assert!(io_message(err).contains("durability is unknown"));
        assert!(store.save_vote(&Vote::new(1, NODE)).await.is_err());
        assert!(store.save_committed(Some(lid(1, 1))).await.is_err());
        assert!(store.truncate(lid(1, 1)).await.is_err());
        assert!(store.purge(lid(1, 1)).await.is_err());
    }

    #[tokio::test]
    async fn debug_prints_the_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        let expected = format!("LogStore({})", dir.path().display());
        assert_eq!(format!("{store:?}"), expected);
        let reader = store.get_log_reader().await;
        assert_eq!(
            format!("{reader:?}"),
            format!("LogReader({})", dir.path().display())
        );
    }

    /// The durability barrier watched through its [`Syncer`]: the order of
    /// flushes, syncs and acknowledgements, and acknowledgements while a
    /// sync is held.
    mod sync_order {
        use std::sync::atomic::AtomicUsize;
        use std::thread::ThreadId;
        use std::time::{Duration, Instant};

        use super::*;

        /// How long a held sync may wait, and a test may wait for one.
        const PATIENCE: Duration = Duration::from_secs(10);
        /// How long a test gives a wrong acknowledgement to show up.
        const GRACE: Duration = Duration::from_millis(200);

        /// What the watching [`Syncer`] and the test saw, in order.
        #[derive(Debug, Clone, PartialEq, Eq)]
        enum Event {
            /// The test handed the store an append of indexes `first..=last`.
            Submitted { first: u64, last: u64 },
            /// sled's flush was called.
            Flushing { thread: ThreadId },
            /// sled's flush returned.
            Flushed { thread: ThreadId },
            /// `fdatasync` of `path` returned.
            Synced { path: PathBuf, thread: ThreadId },
            /// `fsync` of the directory `path` returned.
            DirSynced { path: PathBuf },
            /// The append of `first..=last` was acknowledged; `blobs` are
            /// the blob files that existed then.
            Acked {
                first: u64,
                last: u64,
                ok: bool,
                blobs: BTreeSet<PathBuf>,
            },
            /// The test wrote `key` (directly into sled, or a vote's term).
            Written { key: u64 },
            /// The write of `key` was reported durable (a barrier or
            /// `save_vote` returned `Ok`).
            Durable { key: u64 },
        }

        /// Shared by a test and its [`Watching`] syncer.
        #[derive(Default)]
        struct Probe {
            events: Mutex<Vec<Event>>,
            /// While set, an `fdatasync` of the `db` file waits before it
            /// starts.
            hold: AtomicBool,
            /// `fdatasync`s of the `db` file waiting at the hold now.
            held: AtomicUsize,
            /// The next `fdatasync` of the `db` file fails with `EIO`.
            fail_next: AtomicBool,
        }

        impl Probe {
            fn record(&self, event: Event) {
                self.events.lock().unwrap().push(event);
            }

            fn events(&self) -> Vec<Event> {
                self.events.lock().unwrap().clone()
            }

            fn acked(&self) -> Vec<Event> {
                let events = self.events();
                events
                    .into_iter()
                    .filter(|e| matches!(e, Event::Acked { .. }))
                    .collect()
            }

            /// Wait until an `fdatasync` of the `db` file waits at the hold.
            async fn a_sync_is_held(&self) -> bool {
                let start = Instant::now();
                while self.held.load(Ordering::Acquire) == 0 {
                    if start.elapsed() > PATIENCE {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                true
            }
        }

        /// Makes the real calls through [`FsSyncer`], records each in the
        /// probe, and holds or fails the `db` file's `fdatasync` on demand.
        struct Watching {
            probe: Arc<Probe>,
            data_path: PathBuf,
        }

        impl Syncer for Watching {
            fn flush(&self, db: &sled::Db) -> io::Result<()> {
                let thread = std::thread::current().id();
                self.probe.record(Event::Flushing { thread });
                FsSyncer.flush(db)?;
                self.probe.record(Event::Flushed { thread });
                Ok(())
            }

            fn sync_file(&self, file: &File, path: &Path) -> io::Result<()> {
                if path == self.data_path {
                    let probe = &self.probe;
                    probe.held.fetch_add(1, Ordering::AcqRel);
                    let start = Instant::now();
                    while probe.hold.load(Ordering::Acquire) {
                        assert!(start.elapsed() < PATIENCE, "a sync was held too long");
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    probe.held.fetch_sub(1, Ordering::AcqRel);
                    if probe.fail_next.swap(false, Ordering::AcqRel) {
                        return Err(io::Error::from_raw_os_error(
                            rustix::io::Errno::IO.raw_os_error(),
                        ));
                    }
                }
                FsSyncer.sync_file(file, path)?;
                self.probe.record(Event::Synced {
                    path: path.to_path_buf(),
                    thread: std::thread::current().id(),
                });
                Ok(())
            }

            fn sync_dir(&self, dir: &Path) -> io::Result<()> {
                FsSyncer.sync_dir(dir)?;
                self.probe.record(Event::DirSynced {
                    path: dir.to_path_buf(),
                });
                Ok(())
            }
        }

        /// A store in `dir` whose barrier is watched by the returned probe.
        fn watched(dir: &Path) -> (LogStore, Arc<Probe>) {
            let probe = Arc::new(Probe::default());
            let syncer = Watching {
                probe: Arc::clone(&probe),
                data_path: dir.join(SLED_DATA_FILE),
            };
            let store = LogStore::open_with(dir, Box::new(syncer)).unwrap();
            (store, probe)
        }

        fn blob_files(dir: &Path) -> BTreeSet<PathBuf> {
            std::fs::read_dir(dir.join(SLED_BLOBS_DIR))
                .map(|list| list.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default()
        }

        /// Append `entries` as the store's `append` does, recording the
        /// submission and, from inside the acknowledgement, the ack.
        async fn append(store: &mut LogStore, probe: &Arc<Probe>, entries: Vec<typ::LogEntry>) {
            let first = entries.first().unwrap().log_id.index;
            let last = entries.last().unwrap().log_id.index;
            probe.record(Event::Submitted { first, last });
            let (ack_probe, dir) = (Arc::clone(probe), store.path().to_path_buf());
            store
                .append_then(entries, move |durable| {
                    ack_probe.record(Event::Acked {
                        first,
                        last,
                        ok: durable.is_ok(),
                        blobs: blob_files(&dir),
                    })
                })
                .await
                .unwrap();
        }

        /// Where `wanted` first occurs in `events[from..]`.
        fn find(events: &[Event], from: usize, wanted: impl Fn(&Event) -> bool) -> Option<usize> {
            events[from..].iter().position(wanted).map(|p| p + from)
        }

        /// Between `start` (a write) and `end` (its acknowledgement): sled's
        /// flush called, then returned, then an `fdatasync` of the `db` file
        /// returned, all on one thread.
        fn synced_between(events: &[Event], start: usize, end: usize, data_path: &Path) -> bool {
            let mut from = start;
            while let Some(p) = find(events, from, |e| matches!(e, Event::Flushing { .. })) {
                if p > end {
                    return false;
                }
                let Event::Flushing { thread } = events[p] else {
                    unreachable!()
                };
                let synced = find(events, p, |e| *e == Event::Flushed { thread })
                    .and_then(|q| {
                        find(events, q, |e| {
                            matches!(e, Event::Synced { path, thread: t } if path == data_path && *t == thread)
                        })
                    })
                    .is_some_and(|r| r < end);
                if synced {
                    return true;
                }
                from = p + 1;
            }
            false
        }

        /// Every acknowledgement follows its submission, then a sled flush,
        /// then an `fdatasync` of the `db` file, and every blob file that
        /// existed when it ran was synced before it. Returns how many
        /// appends were acknowledged.
        fn assert_acks_follow_their_syncs(events: &[Event], data_path: &Path) -> usize {
            let mut acks = 0;
            for (a, event) in events.iter().enumerate() {
                let Event::Acked {
                    first,
                    last,
                    ok,
                    blobs,
                } = event
                else {
                    continue;
                };
                let (first, last) = (*first, *last);
                assert!(ok, "the append of {first}..={last} failed");
                let s = find(events, 0, |e| *e == Event::Submitted { first, last })
                    .filter(|&s| s < a)
                    .unwrap_or_else(|| {
                        panic!("{first}..={last} acknowledged before it was submitted")
                    });
                assert!(
                    synced_between(events, s, a, data_path),
                    "{first}..={last} acknowledged before a flush and an fdatasync of the db file returned: {events:#?}"
                );
                for blob in blobs {
                    let synced = events[..a]
                        .iter()
                        .any(|e| matches!(e, Event::Synced { path, .. } if path == blob));
                    assert!(
                        synced,
                        "{first}..={last} acknowledged before blob {} was synced",
                        blob.display()
                    );
                }
                acks += 1;
            }
            acks
        }

        #[tokio::test]
        async fn no_append_is_acknowledged_before_the_fdatasync_covering_it() {
            // Steps: open a store whose syncs are recorded; append six
            // batches (one entry, several, 1 MiB entries, a mix), each
            // acknowledged through a recorder; for every batch, in order:
            // submitted, sled flush called and returned, fdatasync of `db`
            // returned, every blob file synced, then acknowledged.
            let dir = tempfile::tempdir().unwrap();
            let (mut store, probe) = watched(dir.path());
            let batches: Vec<Vec<typ::LogEntry>> = vec![
                vec![normal(1, 1)],
                (2..=6).map(|i| normal(1, i)).collect(),
                vec![big(1, 7)],
                vec![normal(1, 8), big(1, 9), normal(1, 10)],
                vec![blank(2, 11), membership(2, 12)],
                vec![big(2, 13), big(2, 14)],
            ];
            for batch in batches {
                append(&mut store, &probe, batch).await;
            }
            let events = probe.events();
            let acks = assert_acks_follow_their_syncs(&events, &dir.path().join(SLED_DATA_FILE));
            assert_eq!(acks, 6, "every batch acknowledged once");
            let blobs = probe.acked().into_iter().map(|e| match e {
                Event::Acked { blobs, .. } => blobs.len(),
                _ => 0,
            });
            assert!(blobs.max() > Some(0), "1 MiB entries are blob files");
        }

        #[tokio::test]
        async fn a_held_fdatasync_holds_the_acknowledgement() {
            // Steps: append 1..=2 normally; hold the next fdatasync of `db`;
            // start the append of 3..=5 (one 1 MiB) on a task; once the sync
            // is held, wait: no acknowledgement, the task has not finished;
            // release the sync: the task ends and the acknowledgement follows
            // the sync. Then the same for a vote.
            let dir = tempfile::tempdir().unwrap();
            let data_path = dir.path().join(SLED_DATA_FILE);
            let (mut store, probe) = watched(dir.path());
            append(&mut store, &probe, vec![normal(1, 1), normal(1, 2)]).await;

            tracing::info!("--- hold the sync of an append");
            probe.hold.store(true, Ordering::Release);
            let task_probe = Arc::clone(&probe);
            let task = tokio::spawn(async move {
                append(
                    &mut store,
                    &task_probe,
                    vec![normal(1, 3), big(1, 4), normal(1, 5)],
                )
                .await;
                store
            });
            assert!(
                probe.a_sync_is_held().await,
                "the append never reached an fdatasync of the db file"
            );
            tokio::time::sleep(GRACE).await;
            assert_eq!(
                probe.acked().len(),
                1,
                "acknowledged while its fdatasync is held: {:#?}",
                probe.events()
            );
            assert!(!task.is_finished());

            tracing::info!("--- release it");
            probe.hold.store(false, Ordering::Release);
            let mut store = tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
            assert_eq!(
                assert_acks_follow_their_syncs(&probe.events(), &data_path),
                2
            );

            tracing::info!("--- hold the sync of a vote");
            probe.hold.store(true, Ordering::Release);
            probe.record(Event::Written { key: 7 });
            let task = tokio::spawn(async move {
                let saved = store.save_vote(&Vote::new(7, NODE)).await;
                (store, saved)
            });
            assert!(
                probe.a_sync_is_held().await,
                "the vote never reached an fdatasync of the db file"
            );
            tokio::time::sleep(GRACE).await;
            assert!(
                !task.is_finished(),
                "the vote was acknowledged while its fdatasync is held"
            );
            probe.hold.store(false, Ordering::Release);
            let (mut store, saved) = tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
            saved.unwrap();
            probe.record(Event::Durable { key: 7 });
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(7, NODE)));
            let events = probe.events();
            let written = find(&events, 0, |e| *e == Event::Written { key: 7 }).unwrap();
            let durable = find(&events, 0, |e| *e == Event::Durable { key: 7 }).unwrap();
            assert!(
                synced_between(&events, written, durable, &data_path),
                "{events:#?}"
            );
        }

        #[test]
        fn a_barrier_syncs_after_its_own_write_when_another_is_in_flight() {
            // Steps: thread A writes key 1 and runs a barrier whose fdatasync
            // is held; thread B writes key 2 and runs a barrier; release. Each
            // barrier returns only after a flush that began after its own
            // write and an fdatasync after that flush, so B cannot ride on
            // A's sync (which began before B's write).
            let dir = tempfile::tempdir().unwrap();
            let data_path = dir.path().join(SLED_DATA_FILE);
            let (store, probe) = watched(dir.path());
            let write_and_sync = |key: u64| {
                let (shared, probe) = (Arc::clone(&store.inner), Arc::clone(&probe));
                std::thread::spawn(move || {
                    shared.meta.insert(key.to_be_bytes(), &b"x"[..]).unwrap();
                    probe.record(Event::Written { key });
                    shared.make_durable().unwrap();
                    probe.record(Event::Durable { key });
                })
            };
            probe.hold.store(true, Ordering::Release);
            let a = write_and_sync(1);
            let start = Instant::now();
            while probe.held.load(Ordering::Acquire) == 0 {
                assert!(start.elapsed() < PATIENCE, "A never reached an fdatasync");
                std::thread::sleep(Duration::from_millis(5));
            }
            let b = write_and_sync(2);
            std::thread::sleep(GRACE);
            probe.hold.store(false, Ordering::Release);
            a.join().unwrap();
            b.join().unwrap();
            let events = probe.events();
            for key in [1, 2] {
                let written = find(&events, 0, |e| *e == Event::Written { key }).unwrap();
                let durable = find(&events, 0, |e| *e == Event::Durable { key }).unwrap();
                assert!(
                    synced_between(&events, written, durable, &data_path),
                    "key {key} reported durable without a flush and fdatasync after its write: {events:#?}"
                );
            }
        }

        #[tokio::test]
        async fn a_failed_fdatasync_fails_the_acknowledgement_and_every_later_one() {
            // Steps: make the next fdatasync of `db` fail; append: the
            // acknowledgement carries the error; append again (the syncs
            // work again): refused, the store's durability is unknown.
            let dir = tempfile::tempdir().unwrap();
            let (mut store, probe) = watched(dir.path());
            probe.fail_next.store(true, Ordering::Release);
            append(&mut store, &probe, vec![normal(1, 1)]).await;
            append(&mut store, &probe, vec![normal(1, 2)]).await;
            let oks: Vec<bool> = probe
                .acked()
                .into_iter()
                .map(|e| matches!(e, Event::Acked { ok: true, .. }))
                .collect();
            assert_eq!(oks, vec![false, false]);
            assert!(store.save_vote(&Vote::new(1, NODE)).await.is_err());
        }
    }
}
