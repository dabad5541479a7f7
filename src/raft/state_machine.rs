//! The Raft state machine: openraft's `RaftStateMachine` over [`State`] and
//! a storage backend, with snapshots persisted in the data dir.
//!
//! Invariants: the last applied log id and the membership are written in the
//! same backend batch as the entry's data, so the backend never claims an
//! entry it does not hold. A snapshot file is written, fsynced and renamed
//! into place (and the directory fsynced) before openraft is told about it.
//! Installing a snapshot is marked by a file in the snapshot dir; a node that
//! finds the mark at start redoes the install, so a crash half-way through a
//! multi-transaction (etcd) install never leaves mixed state. A `memory`
//! backend starts empty after a restart and is refilled from the snapshot
//! file, then openraft replays the log after it.

// openraft's `StorageError` is the error type its traits require; it is large
// by design and boxing it here would only add conversions.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bincode::Options;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, StorageIOError};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::{Deserialize, Serialize};

use super::types::{typ, TypeConfig};
use crate::keyspace::{self, RAFT_APPLIED_PART, RAFT_LAST_APPLIED, RAFT_MEMBERSHIP};
use crate::state::command::{Applied, Batch, Request, Response, Responses};
use crate::state::State;
use crate::storage::{BatchOp, KvPairs};

/// Format byte of snapshot files.
const SNAPSHOT_FORMAT_V1: u8 = 1;
/// Upper bound on a decoded snapshot.
const MAX_SNAPSHOT_BYTES: u64 = 16 << 30;
const CURRENT: &str = "current.snap";
const INSTALLING: &str = "installing";

/// What a snapshot holds: its metadata and every backend pair.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: typ::SnapshotMeta,
    pairs: KvPairs,
}

fn snapshot_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_SNAPSHOT_BYTES)
        .reject_trailing_bytes()
}

fn encode_snapshot(file: &SnapshotFile) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_FORMAT_V1];
    snapshot_options()
        .serialize_into(&mut out, file)
        .expect("a snapshot serialises");
    out
}

fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotFile, String> {
    match bytes.split_first() {
        Some((&SNAPSHOT_FORMAT_V1, body)) => snapshot_options()
            .deserialize(body)
            .map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown snapshot format {v}")),
        None => Err("empty snapshot".into()),
    }
}

fn read_err(e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

fn snapshot_err(meta: Option<&typ::SnapshotMeta>, e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::write_snapshot(
        meta.map(|m| m.signature()),
        &std::io::Error::other(e.to_string()),
    )
    .into()
}

fn remove_durably(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => std::fs::File::open(dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What an offline restore found in a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredSnapshot {
    /// The snapshot's id.
    pub snapshot_id: String,
    /// Index of the last log entry it covers.
    pub last_index: u64,
    /// Number of backend pairs (all ciphertext or Raft metadata).
    pub pairs: usize,
}

/// Check a snapshot file: format byte, decodes, metadata consistent with
/// the last applied id and membership recorded among its pairs.
pub fn validate_snapshot(bytes: &[u8]) -> Result<RestoredSnapshot, String> {
    let file = decode_snapshot(bytes)?;
    check_snapshot(&file)
}

/// Every backend pair a snapshot file holds (ciphertext and metadata),
/// for offline inspection.
pub fn snapshot_pairs(bytes: &[u8]) -> Result<KvPairs, String> {
    Ok(decode_snapshot(bytes)?.pairs)
}

fn check_snapshot(file: &SnapshotFile) -> Result<RestoredSnapshot, String> {
    let find = |key: &[u8]| file.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let applied: Option<typ::LogId> = match find(RAFT_LAST_APPLIED) {
        Some(b) => keyspace::decode(b).map_err(|e| e.to_string())?,
        None => None,
    };
    let membership: typ::StoredMembership = match find(RAFT_MEMBERSHIP) {
        Some(b) => keyspace::decode(b).map_err(|e| e.to_string())?,
        None => typ::StoredMembership::default(),
    };
    if applied != file.meta.last_log_id || membership != file.meta.last_membership {
        return Err("snapshot metadata does not match its contents".into());
    }
    let last = file
        .meta
        .last_log_id
        .ok_or("the snapshot is empty (no applied log entry)")?;
    Ok(RestoredSnapshot {
        snapshot_id: file.meta.snapshot_id.clone(),
        last_index: last.index,
        pairs: file.pairs.len(),
    })
}

/// Restore a saved snapshot into the empty data dir of node `node_id`,
/// offline. The snapshot's membership is replaced by `{node_id: node}`
/// alone (a voter), and a vote for `node_id` in the snapshot's last term
/// is recorded so the node's first election starts above every log id the
/// snapshot covers. Started afterwards (with `--bootstrap` or not), the
/// node is a one-member cluster holding the snapshot's (ciphertext) state;
/// it comes up sealed and opens with the original unseal keys.
///
/// Writes only `snapshots/current.snap` (write, fsync, rename) and the
/// vote in `raft-log/`; the caller writes the `node-id` file and checks
/// the dir was empty.
pub async fn restore_snapshot_offline(
    bytes: &[u8],
    data_dir: &Path,
    node_id: typ::NodeId,
    node: super::types::NodeInfo,
) -> Result<RestoredSnapshot, String> {
    use openraft::storage::RaftLogStorage;
    let mut file = decode_snapshot(bytes)?;
    let found = check_snapshot(&file)?;
    let last = file.meta.last_log_id.ok_or("the snapshot is empty")?;
    let nodes = std::collections::BTreeMap::from([(node_id, node)]);
    let membership =
        openraft::Membership::new(vec![std::collections::BTreeSet::from([node_id])], nodes);
    // Marked as decided at the snapshot's last entry, so it is effective
    // (and committed) as soon as the snapshot is loaded.
    let stored = typ::StoredMembership::new(Some(last), membership);
    for (k, v) in file.pairs.iter_mut() {
        if k.as_slice() == RAFT_MEMBERSHIP {
            *v = keyspace::encode(&stored);
        }
    }
    if !file
        .pairs
        .iter()
        .any(|(k, _)| k.as_slice() == RAFT_MEMBERSHIP)
    {
        file.pairs
            .push((RAFT_MEMBERSHIP.to_vec(), keyspace::encode(&stored)));
    }
    file.meta.last_membership = stored;
    file.meta.snapshot_id = format!("{}-restored", file.meta.snapshot_id);
    check_snapshot(&file)?;
    let snap_dir = data_dir.join("snapshots");
    crate::data_dir::create_private_dir(&snap_dir).map_err(|e| e.to_string())?;
    crate::data_dir::write_durably(&snap_dir, CURRENT, &encode_snapshot(&file))
        .map_err(|e| e.to_string())?;
    let mut log =
        super::log_store::LogStore::open(&data_dir.join("raft-log")).map_err(|e| e.to_string())?;
    log.save_vote(&typ::Vote::new(last.leader_id.term, node_id))
        .await
        .map_err(|e| e.to_string())?;
    Ok(RestoredSnapshot {
        snapshot_id: file.meta.snapshot_id,
        ..found
    })
}

/// Called after each applied request with its outcome, on the applying
/// thread (the node layer uses it to follow keychain changes).
pub type ApplyHook = Arc<dyn Fn(&Request, &Response) + Send + Sync>;

/// How a snapshot came to this node: the `kind` label of
/// `kstash_raft_snapshots_total` (a fixed set).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Built here from the applied state.
    Built,
    /// Received from the leader and installed.
    Installed,
}

impl SnapshotKind {
    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            SnapshotKind::Built => "built",
            SnapshotKind::Installed => "installed",
        }
    }
}

impl EncodeLabelValue for SnapshotKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of the snapshot counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    /// Built or installed.
    pub kind: SnapshotKind,
}

/// openraft's state machine for kstash.
#[derive(Clone)]
pub struct StateMachineStore {
    state: State,
    dir: PathBuf,
    /// Serialises snapshot file writes (build and install).
    files: Arc<Mutex<()>>,
    counter: Arc<AtomicU64>,
    hook: Option<ApplyHook>,
    /// How long each log entry took to apply (`/metrics`).
    apply_seconds: Histogram,
    /// Snapshots built and installed (`/metrics`).
    snapshots: Family<SnapshotLabels, Counter>,
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StateMachineStore({:?}, {})",
            self.state,
            self.dir.display()
        )
    }
}

impl StateMachineStore {
    /// Open over `state`, keeping snapshots in `dir` (created if missing).
    /// Finishes an interrupted snapshot install, and refills a backend that
    /// is behind the snapshot file (a `memory` backend after a restart).
    pub fn open(state: State, dir: &Path) -> Result<Self, typ::StorageError> {
        crate::data_dir::create_private_dir(dir).map_err(write_err)?;
        let store = StateMachineStore {
            state,
            dir: dir.to_path_buf(),
            files: Arc::new(Mutex::new(())),
            counter: Arc::new(AtomicU64::new(0)),
            hook: None,
            // 20 µs (memory) .. ~650 ms (a slow etcd).
            apply_seconds: Histogram::new(exponential_buckets(0.00002, 2.0, 16)),
            snapshots: Family::default(),
        };
        if let Some(file) = store.read_snapshot_file()? {
            let interrupted = dir.join(INSTALLING).exists();
            let applied = store.last_applied()?;
            if interrupted || applied < file.meta.last_log_id {
                tracing::info!(
                    snapshot = %file.meta.snapshot_id,
                    interrupted,
                    "restoring the state from the snapshot file"
                );
                store.replace_state(file.pairs)?;
            }
        }
        Ok(store)
    }

    /// Run `hook` after every applied request.
    pub fn with_apply_hook(mut self, hook: ApplyHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The replicated state, for reads.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The time each log entry took to apply, one observation per entry;
    /// cloning shares it.
    pub fn apply_seconds(&self) -> Histogram {
        self.apply_seconds.clone()
    }

    /// Snapshots built and installed by this store, by kind; cloning
    /// shares them.
    pub fn snapshots(&self) -> Family<SnapshotLabels, Counter> {
        self.snapshots.clone()
    }

    fn count_snapshot(&self, kind: SnapshotKind) {
        self.snapshots.get_or_create(&SnapshotLabels { kind }).inc();
    }

    fn last_applied(&self) -> Result<Option<typ::LogId>, typ::StorageError> {
        match self
            .state
            .backend()
            .get(RAFT_LAST_APPLIED)
            .map_err(read_err)?
        {
            Some(b) => keyspace::decode(&b).map_err(read_err),
            None => Ok(None),
        }
    }

    fn membership(&self) -> Result<typ::StoredMembership, typ::StorageError> {
        match self
            .state
            .backend()
            .get(RAFT_MEMBERSHIP)
            .map_err(read_err)?
        {
            Some(b) => keyspace::decode(&b).map_err(read_err),
            None => Ok(typ::StoredMembership::default()),
        }
    }

    fn read_snapshot_file(&self) -> Result<Option<SnapshotFile>, typ::StorageError> {
        match std::fs::read(self.dir.join(CURRENT)) {
            Ok(bytes) => decode_snapshot(&bytes).map(Some).map_err(read_err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(read_err(e)),
        }
    }

    /// Replace the backend's contents, marked so a crash redoes it.
    fn replace_state(&self, pairs: KvPairs) -> Result<(), typ::StorageError> {
        crate::data_dir::write_durably(&self.dir, INSTALLING, b"").map_err(write_err)?;
        self.state.backend().replace_all(pairs).map_err(write_err)?;
        remove_durably(&self.dir, INSTALLING).map_err(write_err)
    }

    fn apply_blocking(
        &self,
        entries: Vec<typ::LogEntry>,
    ) -> Result<Vec<Responses>, typ::StorageError> {
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let start = std::time::Instant::now();
            let log_id = entry.log_id;
            let last_applied = BatchOp::Put {
                key: RAFT_LAST_APPLIED.to_vec(),
                value: keyspace::encode(&Some(log_id)),
            };
            let responses = match entry.payload {
                EntryPayload::Blank => {
                    self.state
                        .backend()
                        .apply(vec![last_applied])
                        .map_err(|e| StorageIOError::apply(log_id, &e))?;
                    Vec::new()
                }
                EntryPayload::Normal(batch) => self.apply_batch(log_id, batch, last_applied)?,
                EntryPayload::Membership(m) => {
                    let membership = BatchOp::Put {
                        key: RAFT_MEMBERSHIP.to_vec(),
                        value: keyspace::encode(&typ::StoredMembership::new(Some(log_id), m)),
                    };
                    self.state
                        .backend()
                        .apply(vec![last_applied, membership])
                        .map_err(|e| StorageIOError::apply(log_id, &e))?;
                    Vec::new()
                }
            };
            out.push(responses);
            self.apply_seconds.observe(start.elapsed().as_secs_f64());
        }
        Ok(out)
    }

    /// Apply the requests of one entry in order, each in its own backend
    /// batch. The last one also records `last_applied`; each earlier one
    /// records how many are done (`RAFT_APPLIED_PART`), so a persistent
    /// backend that crashed mid-entry resumes after them instead of
    /// applying them twice. The skipped ones answer `Done`: nobody waits
    /// for them after a restart.
    fn apply_batch(
        &self,
        log_id: typ::LogId,
        batch: Batch,
        last_applied: BatchOp,
    ) -> Result<Responses, typ::StorageError> {
        let io = |e: crate::storage::StorageError| StorageIOError::apply(log_id, &e);
        let count = batch.requests.len();
        if count == 0 {
            self.state.backend().apply(vec![last_applied]).map_err(io)?;
            return Ok(Vec::new());
        }
        // The last request removes the marker in its own batch, so at most
        // `count - 1` can be recorded as done.
        let done = if count > 1 {
            self.parts_done(log_id)?.min(count - 1)
        } else {
            0
        };
        let mut responses = vec![Ok(Applied::Done); done];
        for (i, request) in batch.requests.iter().enumerate().skip(done) {
            let meta = if i + 1 == count {
                let mut meta = vec![last_applied.clone()];
                if count > 1 {
                    meta.push(BatchOp::Delete {
                        key: RAFT_APPLIED_PART.to_vec(),
                    });
                }
                meta
            } else {
                vec![BatchOp::Put {
                    key: RAFT_APPLIED_PART.to_vec(),
                    value: keyspace::encode(&(log_id, (i + 1) as u32)),
                }]
            };
            let response = self.state.apply_with_meta(request, meta).map_err(io)?;
            if let Some(hook) = &self.hook {
                hook(request, &response);
            }
            responses.push(response);
        }
        Ok(responses)
    }

    /// How many requests of entry `log_id` a crash interrupted after.
    fn parts_done(&self, log_id: typ::LogId) -> Result<usize, typ::StorageError> {
        let Some(bytes) = self
            .state
            .backend()
            .get(RAFT_APPLIED_PART)
            .map_err(read_err)?
        else {
            return Ok(0);
        };
        let (id, done): (typ::LogId, u32) = keyspace::decode(&bytes).map_err(read_err)?;
        Ok(if id == log_id { done as usize } else { 0 })
    }

    fn build_blocking(&self) -> Result<typ::Snapshot, typ::StorageError> {
        // One scan: memory holds its lock and etcd reads one revision, so
        // the data and the Raft metadata inside it agree.
        let pairs = self
            .state
            .backend()
            .scan_prefix(b"", None)
            .map_err(read_err)?;
        let find = |key: &[u8]| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let last_log_id: Option<typ::LogId> = match find(RAFT_LAST_APPLIED) {
            Some(b) => keyspace::decode(&b).map_err(read_err)?,
            None => None,
        };
        let last_membership: typ::StoredMembership = match find(RAFT_MEMBERSHIP) {
            Some(b) => keyspace::decode(&b).map_err(read_err)?,
            None => typ::StoredMembership::default(),
        };
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let snapshot_id = match last_log_id {
            Some(id) => format!(
                "{}-{}-{}-{n}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("empty-{n}"),
        };
        let meta = typ::SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let bytes = encode_snapshot(&SnapshotFile {
            meta: meta.clone(),
            pairs,
        });
        {
            let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            crate::data_dir::write_durably(&self.dir, CURRENT, &bytes)
                .map_err(|e| snapshot_err(Some(&meta), e))?;
        }
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "snapshot built");
        self.count_snapshot(SnapshotKind::Built);
        Ok(typ::Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }

    fn install_blocking(
        &self,
        meta: typ::SnapshotMeta,
        bytes: Vec<u8>,
    ) -> Result<(), typ::StorageError> {
        let file = decode_snapshot(&bytes).map_err(|e| snapshot_err(Some(&meta), e))?;
        if file.meta.last_log_id != meta.last_log_id
            || file.meta.last_membership != meta.last_membership
        {
            return Err(snapshot_err(
                Some(&meta),
                "snapshot data does not match its metadata",
            ));
        }
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        crate::data_dir::write_durably(&self.dir, CURRENT, &bytes)
            .map_err(|e| snapshot_err(Some(&meta), e))?;
        self.replace_state(file.pairs)?;
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        self.count_snapshot(SnapshotKind::Installed);
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, typ::StorageError> + Send + 'static,
) -> Result<T, typ::StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(write_err)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<typ::Snapshot, typ::StorageError> {
        let this = self.clone();
        blocking(move || this.build_blocking()).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<typ::LogId>, typ::StoredMembership), typ::StorageError> {
        let this = self.clone();
        blocking(move || Ok((this.last_applied()?, this.membership()?))).await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Responses>, typ::StorageError>
    where
        I: IntoIterator<Item = typ::LogEntry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        if !self.state.backend().may_block() {
            return self.apply_blocking(entries);
        }
        let this = self.clone();
        blocking(move || this.apply_blocking(entries)).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, typ::StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &typ::SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), typ::StorageError> {
        let this = self.clone();
        let meta = meta.clone();
        let bytes = snapshot.into_inner();
        blocking(move || this.install_blocking(meta, bytes)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<typ::Snapshot>, typ::StorageError> {
        let this = self.clone();
        blocking(move || {
            let _files = this.files.lock().unwrap_or_else(|e| e.into_inner());
            match std::fs::read(this.dir.join(CURRENT)) {
                Ok(bytes) => {
                    let file = decode_snapshot(&bytes).map_err(read_err)?;
                    Ok(Some(typ::Snapshot {
                        meta: file.meta,
                        snapshot: Box::new(Cursor::new(bytes)),
                    }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(read_err(e)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::Command;
    use crate::storage::memory::MemoryBackend;
    use crate::storage::Backend;
    use openraft::{CommittedLeaderId, LogId, Membership};
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering;

    fn log_id(index: u64) -> typ::LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> typ::LogEntry {
        openraft::Entry {
            log_id: log_id(index),
            payload,
        }
    }

    fn init_request() -> Request {
        Request {
            time_ms: 1,
            idempotency: None,
            command: Command::Init {
                shares: 1,
                threshold: 1,
                wrapped_root: vec![1; 60],
                keychain: vec![2; 60],
                access_key_hash: [3; 32],
                gatekeeper_tokens: vec![],
            },
        }
    }

    fn one(request: Request) -> Batch {
        Batch {
            requests: vec![request],
        }
    }

    fn store(dir: &Path) -> (StateMachineStore, Arc<MemoryBackend>) {
        let backend = Arc::new(MemoryBackend::new());
        let sm = StateMachineStore::open(State::new(backend.clone()), dir).unwrap();
        (sm, backend)
    }

    fn membership() -> Membership<u64, crate::raft::types::NodeInfo> {
        Membership::new(vec![BTreeSet::from([1u64])], None)
    }

    #[tokio::test]
    async fn applies_entries_with_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, _) = store(dir.path());
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        let responses = sm
            .apply(vec![
                entry(1, EntryPayload::Blank),
                entry(2, EntryPayload::Membership(membership())),
                entry(3, EntryPayload::Normal(one(init_request()))),
                entry(4, EntryPayload::Normal(one(init_request()))),
            ])
            .await
            .unwrap();
        assert_eq!(responses[0], vec![], "a blank entry answers nothing");
        assert_eq!(responses[2], vec![Ok(Applied::Done)]);
        assert_eq!(
            responses[3],
            vec![Err(crate::state::command::Rejection::AlreadyInitialized)]
        );
        let (applied, m) = sm.applied_state().await.unwrap();
        assert_eq!(
            applied,
            Some(log_id(4)),
            "a rejected entry still counts as applied"
        );
        assert_eq!(m.log_id(), &Some(log_id(2)));
    }

    #[tokio::test]
    async fn a_memory_backend_is_refilled_from_the_snapshot_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, backend) = store(dir.path());
        sm.apply(vec![
            entry(1, EntryPayload::Membership(membership())),
            entry(2, EntryPayload::Normal(one(init_request()))),
        ])
        .await
        .unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(2)));
        // A restart: a fresh, empty memory backend over the same data dir.
        let (mut again, fresh) = store(dir.path());
        assert_eq!(fresh.dump(), backend.dump());
        assert_eq!(again.applied_state().await.unwrap().0, Some(log_id(2)));
        let current = again.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);
    }

    #[tokio::test]
    async fn install_replaces_the_state_and_survives_an_interruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut leader, leader_backend) = store(dir.path());
        leader
            .apply(vec![
                entry(1, EntryPayload::Membership(membership())),
                entry(2, EntryPayload::Normal(one(init_request()))),
            ])
            .await
            .unwrap();
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let other = tempfile::tempdir().unwrap();
        let (mut follower, follower_backend) = store(other.path());
        follower_backend.put_raw(b"stale", b"junk");
        follower
            .install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        assert_eq!(
            follower_backend.dump(),
            leader_backend.dump(),
            "stale keys are gone"
        );
        assert!(!other.path().join(INSTALLING).exists());

        // An install that crashed half-way is redone at the next open.
        follower_backend.put_raw(b"half", b"way");
        crate::data_dir::write_durably(other.path(), INSTALLING, b"").unwrap();
        let _reopened =
            StateMachineStore::open(State::new(follower_backend.clone()), other.path()).unwrap();
        assert_eq!(follower_backend.dump(), leader_backend.dump());
        assert!(!other.path().join(INSTALLING).exists());
    }

    #[tokio::test]
    async fn a_snapshot_that_does_not_match_its_metadata_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, backend) = store(dir.path());
        sm.apply(vec![entry(1, EntryPayload::Normal(one(init_request())))])
            .await
            .unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut meta = snap.meta.clone();
        meta.last_log_id = Some(log_id(9));
        let before = backend.dump();
        assert!(sm.install_snapshot(&meta, snap.snapshot).await.is_err());
        assert!(sm
            .install_snapshot(&snap.meta, Box::new(Cursor::new(vec![7, 7])))
            .await
            .is_err());
        assert_eq!(backend.dump(), before);
        let _ = backend.name();
    }

    /// A memory backend whose `apply` fails from its `fail_from`-th call on
    /// (counting from 1), as a crash in the middle of an entry would.
    struct Crashing {
        inner: Arc<MemoryBackend>,
        calls: AtomicU64,
        fail_from: u64,
    }

    impl Backend for Crashing {
        fn name(&self) -> &'static str {
            "crashing"
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, crate::storage::StorageError> {
            self.inner.get(key)
        }
        fn scan_prefix(
            &self,
            prefix: &[u8],
            limit: Option<usize>,
        ) -> Result<KvPairs, crate::storage::StorageError> {
            self.inner.scan_prefix(prefix, limit)
        }
        fn scan_keys(
            &self,
            prefix: &[u8],
            from: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<Vec<u8>>, crate::storage::StorageError> {
            self.inner.scan_keys(prefix, from, limit)
        }
        fn apply(&self, batch: Vec<BatchOp>) -> Result<(), crate::storage::StorageError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from {
                return Err(crate::storage::StorageError::Unavailable("crashed".into()));
            }
            self.inner.apply(batch)
        }
        fn replace_all(&self, pairs: KvPairs) -> Result<(), crate::storage::StorageError> {
            self.inner.replace_all(pairs)
        }
    }

    fn request(time_ms: u64, command: Command) -> Request {
        Request {
            time_ms,
            idempotency: None,
            command,
        }
    }

    /// Entry 1: init, and an admin token of namespace `ns` with id [5; 32].
    fn initialised() -> Vec<typ::LogEntry> {
        let token = Command::CreateAccessToken {
            id: [5; 32],
            namespace: "ns".into(),
            policies: vec!["admin".into()],
            ttl_ms: 3_600_000,
            max_ttl_ms: 3_600_000,
        };
        vec![entry(
            1,
            EntryPayload::Normal(Batch {
                requests: vec![init_request(), request(1, token)],
            }),
        )]
    }

    fn put(path: &str, cas: Option<u64>) -> Request {
        request(
            2,
            Command::PutSecret {
                by: crate::state::command::Actor::AccessToken { id: [5; 32] },
                namespace: "ns".into(),
                path: path.into(),
                cas,
                term: 1,
                ciphertext: vec![9; 40],
            },
        )
    }

    #[tokio::test]
    async fn an_entry_answers_each_of_its_requests_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sm, backend) = store(dir.path());
        sm.apply(initialised()).await.unwrap();
        let batch = Batch {
            requests: vec![
                put("a", Some(0)),
                put("a", Some(0)),
                put("a", Some(1)),
                put("b", None),
            ],
        };
        let responses = sm
            .apply(vec![entry(2, EntryPayload::Normal(batch))])
            .await
            .unwrap();
        assert_eq!(
            responses,
            vec![vec![
                Ok(Applied::Version(1)),
                Err(crate::state::command::Rejection::CasMismatch {
                    expected: 0,
                    actual: 1
                }),
                Ok(Applied::Version(2)),
                Ok(Applied::Version(1)),
            ]],
            "each request sees the ones before it"
        );
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2)));
        assert_eq!(
            backend.get(RAFT_APPLIED_PART).unwrap(),
            None,
            "marker removed"
        );
    }

    #[tokio::test]
    async fn an_entry_interrupted_half_way_resumes_after_what_was_applied() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::new());
        let mut sm = StateMachineStore::open(State::new(backend.clone()), dir.path()).unwrap();
        sm.apply(initialised()).await.unwrap();
        let batch = || Batch {
            requests: vec![put("a", None), put("a", None), put("b", None)],
        };
        // The backend dies after the first two requests of entry 2 landed.
        let crashing = Arc::new(Crashing {
            inner: backend.clone(),
            calls: AtomicU64::new(0),
            fail_from: 3,
        });
        let mut dying = StateMachineStore::open(State::new(crashing), dir.path()).unwrap();
        assert!(dying
            .apply(vec![entry(2, EntryPayload::Normal(batch()))])
            .await
            .is_err());
        assert_eq!(
            dying.applied_state().await.unwrap().0,
            Some(log_id(1)),
            "the entry is not applied yet"
        );
        // After the restart openraft applies entry 2 again.
        let mut again = StateMachineStore::open(State::new(backend.clone()), dir.path()).unwrap();
        let responses = again
            .apply(vec![entry(2, EntryPayload::Normal(batch()))])
            .await
            .unwrap();
        assert_eq!(responses[0][2], Ok(Applied::Version(1)));
        let state = State::new(backend.clone());
        assert_eq!(
            state.secret("ns", "a").unwrap().unwrap().version,
            2,
            "the two puts of `a` applied once each"
        );
        assert_eq!(state.secret("ns", "b").unwrap().unwrap().version, 1);
        assert_eq!(again.applied_state().await.unwrap().0, Some(log_id(2)));
        assert_eq!(backend.get(RAFT_APPLIED_PART).unwrap(), None);
    }
}
