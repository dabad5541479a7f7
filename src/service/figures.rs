//! A node's figures for `/metrics`: what Raft, the barrier and the
//! replicated state say now, read at scrape time.
//!
//! Invariants: reading figures changes nothing and proposes nothing; a
//! sealed or removed node still reports what it knows (its Raft view, the
//! key term and reservations from the replicated state, its stored access
//! tokens); a figure that cannot be read is left out, never guessed. The
//! access-token count reads keys only, and is cached ([`TokenCountCache`])
//! so that a scrape stays cheap whatever the number of tokens.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Node, ServiceError};
use crate::keyspace::ACCESS_TOKEN_PREFIX;
use crate::storage::{Backend, StorageError};

pub use crate::raft::replica::{ReplicationFigures, ReplicationMeters};

/// Most access-token keys one count walks; past it the count reports this.
pub const MAX_COUNTED_TOKENS: u64 = 1 << 24;

/// Keys read per backend call while counting.
const COUNT_PAGE: usize = 4096;

/// A node's gauges, as of one scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    /// Leader, term, commit and applied index.
    pub replication: ReplicationFigures,
    /// Whether the barrier is sealed.
    pub sealed: bool,
    /// Whether this node was removed from its cluster.
    pub removed: bool,
    /// The keychain's active term: as the log set it, else (a store from
    /// before it was recorded) the open barrier's; `None` when neither is
    /// known (not initialised, or sealed on such an old store).
    pub key_term: Option<u32>,
    /// Encryptions the cluster reserved under `key_term`
    /// (`core/term-reserved/<term>`): what the encryption limit counts.
    pub key_encryptions: Option<u64>,
    /// This node's encryption limit per term (`encryption_limit`).
    pub encryption_limit: u64,
}

impl Node {
    /// The figures of this node now. Cheap: a few reads of the replicated
    /// state and of openraft's last report.
    pub fn figures(&self) -> Figures {
        let logged = match self.sm().active_term() {
            Ok(term) => term,
            Err(e) => {
                tracing::debug!(error = %e, "metrics: cannot read the active key term");
                None
            }
        };
        let key_term = logged.or_else(|| self.barrier.active_term());
        let key_encryptions = key_term.and_then(|term| match self.sm().term_reserved(term) {
            Ok(reserved) => Some(reserved),
            Err(e) => {
                tracing::debug!(error = %e, term, "metrics: cannot read the reserved encryptions");
                None
            }
        });
        Figures {
            replication: self.raft.figures(),
            sealed: self.barrier.is_sealed(),
            removed: self.raft.removal().is_some(),
            key_term,
            key_encryptions,
            encryption_limit: self.barrier.limit(),
        }
    }

    /// What replication counts as it works (proposals, leader changes,
    /// apply and log flush latency, snapshots).
    pub fn replication_meters(&self) -> &ReplicationMeters {
        self.raft.meters()
    }

    /// What ServiceAccount login counts (key fetch and TokenReview
    /// failures).
    pub fn kubernetes_meters(&self) -> &crate::auth::kubernetes::KubernetesMeters {
        self.kubernetes.meters()
    }

    /// How many access tokens are stored (expired ones count until the
    /// next sweep removes them), at most [`MAX_COUNTED_TOKENS`]. Reads keys
    /// only.
    pub fn count_access_tokens(&self) -> Result<u64, ServiceError> {
        let prefix = ACCESS_TOKEN_PREFIX.as_bytes();
        Ok(count_keys(
            self.sm().backend().as_ref(),
            prefix,
            COUNT_PAGE,
            MAX_COUNTED_TOKENS,
        )?)
    }
}

/// The keys under `prefix`, counted `page` at a time, at most `max`.
fn count_keys(
    backend: &dyn Backend,
    prefix: &[u8],
    page: usize,
    max: u64,
) -> Result<u64, StorageError> {
    let mut count = 0u64;
    let mut from: Option<Vec<u8>> = None;
    loop {
        let keys = backend.scan_keys(prefix, from.as_deref(), page)?;
        count += keys.len() as u64;
        let Some(last) = keys.last() else {
            return Ok(count.min(max));
        };
        if keys.len() < page || count >= max {
            return Ok(count.min(max));
        }
        let mut next = last.clone();
        next.push(0);
        from = Some(next);
    }
}

/// The access-token count of a node, read at most once per `ttl`.
#[derive(Debug)]
pub struct TokenCountCache {
    ttl: Duration,
    last: Mutex<Option<(Instant, u64)>>,
}

impl TokenCountCache {
    /// An empty cache that keeps a count for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        TokenCountCache {
            ttl,
            last: Mutex::new(None),
        }
    }

    /// The count, from the cache when it is younger than `ttl`; `None` when
    /// the backend cannot be read now.
    pub fn get(&self, node: &Node) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, count)) = *last {
            if at.elapsed() < self.ttl {
                return Some(count);
            }
        }
        match node.count_access_tokens() {
            Ok(count) => {
                *last = Some((Instant::now(), count));
                Some(count)
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics: cannot count the access tokens");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryBackend;
    use crate::storage::BatchOp;

    #[test]
    fn counting_keys_walks_every_page_and_stops_at_the_cap() {
        let backend = MemoryBackend::new();
        let mut batch: Vec<BatchOp> = (0..10u8)
            .map(|i| BatchOp::Put {
                key: format!("auth/tokens/{i:02}").into_bytes(),
                value: vec![i],
            })
            .collect();
        // Neighbours that are no tokens.
        for key in ["auth/tokens", "auth/tokenz/1", "auth/policies/x"] {
            batch.push(BatchOp::Put {
                key: key.as_bytes().to_vec(),
                value: vec![],
            });
        }
        backend.apply(batch).unwrap();
        let prefix = ACCESS_TOKEN_PREFIX.as_bytes();
        for page in [1, 3, 5, 10, 11, 4096] {
            assert_eq!(
                count_keys(&backend, prefix, page, 100).unwrap(),
                10,
                "page {page}"
            );
        }
        assert_eq!(count_keys(&backend, prefix, 3, 7).unwrap(), 7, "capped");
        assert_eq!(count_keys(&backend, b"none/", 3, 7).unwrap(), 0);
    }
}
