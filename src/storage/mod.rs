//! Storage backends: where committed state lives.
//!
//! A backend stores bytes under byte keys and never encrypts; the barrier has
//! already turned every secret into ciphertext before a value reaches it.
//! Architecture invariant: nothing here knows about the barrier, tokens or the
//! API. The trait is small and synchronous so the state machine that drives it
//! stays plain, deterministic code.

pub mod memory;

#[cfg(feature = "etcd")]
pub mod etcd;

#[cfg(test)]
pub(crate) mod suite;

use thiserror::Error;

/// Key/value pairs as returned by a scan.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One change inside an atomic batch.
#[derive(Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Store `value` under `key`, replacing any previous value.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key`; removing a missing key is not an error.
    Delete { key: Vec<u8> },
}

impl std::fmt::Debug for BatchOp {
    // Values may be wrapped key material: print only their length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchOp::Put { key, value } => write!(
                f,
                "Put({}, {} bytes)",
                String::from_utf8_lossy(key),
                value.len()
            ),
            BatchOp::Delete { key } => write!(f, "Delete({})", String::from_utf8_lossy(key)),
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`, or
/// `None` when no such key exists (`prefix` is empty or all `0xFF`): where a
/// scan resumes to skip the whole subtree `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Errors a backend can report.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The backend could not be reached or refused the request.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

/// A key/value store of bytes.
///
/// Contract, shared by every implementation and checked by one test suite:
/// - `get` after a successful `apply` sees every op of the batch; a failed
///   `apply` changes nothing (batches are atomic).
/// - `scan_prefix` returns the pairs whose key starts with `prefix`, sorted by
///   key, at most `limit` of them when a limit is given.
/// - `scan_keys` returns only keys: the keys that start with `prefix` and are
///   not below `from` (when given), sorted, at most `limit` of them. It never
///   reads or copies a value, so its cost is that of the keys it returns, and
///   it stops at `limit` whatever the prefix holds. Listings use it.
/// - Keys are opaque bytes; a backend may add its own prefix (etcd does, one
///   per node) but never shows it to callers.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and status (`memory`, `etcd`).
    fn name(&self) -> &'static str;

    /// The value under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8], limit: Option<usize>) -> Result<KvPairs, StorageError>;

    /// The keys (never the values) that start with `prefix` and are `>= from`
    /// when `from` is given, in key order, at most `limit` of them (`0`
    /// returns nothing).
    ///
    /// `from` is inclusive so a caller can both continue after a key `k`
    /// (pass `k` + `[0]`) and skip a whole subtree `p` (pass the first key
    /// after every key starting with `p`, see [`prefix_end`]). A `from` that
    /// sorts before `prefix` means "from the start of the prefix"; one past
    /// every key of the prefix returns nothing.
    ///
    /// Cost: the returned keys only. The memory backend holds its lock for
    /// the walk over at most `limit` keys and clones no value; etcd reads one
    /// keys-only range of at most `limit` keys.
    fn scan_keys(
        &self,
        prefix: &[u8],
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError>;

    /// Apply every op of `batch` atomically, in order.
    fn apply(&self, batch: Vec<BatchOp>) -> Result<(), StorageError>;

    /// Replace everything this backend holds with `pairs` (installing a
    /// snapshot). Atomic for `memory`; for `etcd` it runs in several
    /// transactions, so callers that need crash safety mark the install
    /// (the Raft state machine does) and redo it after a crash.
    fn replace_all(&self, pairs: KvPairs) -> Result<(), StorageError>;

    /// Whether a call may wait on I/O (a network round trip, a disk). The
    /// Raft state machine applies through such a backend on the blocking
    /// pool, and through one that never waits on the async thread itself,
    /// which saves a thread hand-off on every applied entry.
    fn may_block(&self) -> bool {
        true
    }
}
