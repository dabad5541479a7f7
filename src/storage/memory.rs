//! The `memory` backend: a sorted map behind a lock. Nothing is persisted.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{Backend, BatchOp, KvPairs, StorageError};

/// An in-memory backend, the default for a single node and for tests.
#[derive(Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored pair, for tests that scan the backend for leaks or
    /// tamper with ciphertext.
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Overwrite one raw value, bypassing every check (tests only: relocation
    /// and corruption scenarios).
    pub fn put_raw(&self, key: &[u8], value: &[u8]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.insert(key.to_vec(), value.to_vec());
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// Never: every call is a short critical section on a map in memory.
    fn may_block(&self) -> bool {
        false
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(key).cloned())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let iter = map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()));
        Ok(match limit {
            Some(n) => iter.take(n).collect(),
            None => iter.collect(),
        })
    }

    fn scan_keys(
        &self,
        prefix: &[u8],
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        // Start at the later of the prefix and `from`; the lock covers the
        // walk over at most `limit` keys and no value is touched.
        let start = match from {
            Some(f) if f > prefix => f,
            _ => prefix,
        };
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        Ok(map
            .range::<[u8], _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }

    fn replace_all(&self, pairs: KvPairs) -> Result<(), StorageError> {
        let fresh: BTreeMap<Vec<u8>, Vec<u8>> = pairs.into_iter().collect();
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn apply(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for op in batch {
            match op {
                BatchOp::Put { key, value } => {
                    map.insert(key, value);
                }
                BatchOp::Delete { key } => {
                    map.remove(&key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_backend_passes_the_shared_suite() {
        crate::storage::suite::run_all(&MemoryBackend::new());
        crate::storage::suite::run_replace_all(&MemoryBackend::new());
    }
}
