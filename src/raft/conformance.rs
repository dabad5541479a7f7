//! openraft's storage conformance suite on every log-store / state-machine
//! backend pair: sled + memory, and sled + etcd (with the `etcd` feature).

// The suite's error type is openraft's (large) `StorageError`.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::types::{typ, TypeConfig};
use crate::state::State;
use crate::storage::memory::MemoryBackend;
use crate::storage::Backend;

/// Builds a fresh pair per suite case; the temp dir lives as long as the case.
struct Builder {
    backend: fn(&str) -> Arc<dyn Backend>,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), typ::StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft-log"))?;
        let name = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sm = StateMachineStore::open(
            State::new((self.backend)(&name)),
            &dir.path().join("snapshots"),
        )?;
        Ok((dir, log, sm))
    }
}

fn memory(_: &str) -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

#[test]
fn sled_and_memory_pass_the_openraft_suite() -> Result<(), typ::StorageError> {
    Suite::test_all(Builder { backend: memory })
}

#[cfg(feature = "etcd")]
#[test]
fn sled_and_etcd_pass_the_openraft_suite() -> Result<(), typ::StorageError> {
    use crate::storage::etcd::testing::EtcdServer;
    use std::sync::Mutex;
    // One etcd for every case of the suite (each case gets its own prefix),
    // taken out again at the end so its process is stopped.
    static ETCD: Mutex<Option<EtcdServer>> = Mutex::new(None);
    fn etcd(name: &str) -> Arc<dyn Backend> {
        let guard = ETCD.lock().unwrap_or_else(|e| e.into_inner());
        Arc::new(guard.as_ref().expect("etcd started").backend(name))
    }
    let Some(server) = EtcdServer::start() else {
        return Ok(());
    };
    *ETCD.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
    let result = Suite::test_all(Builder { backend: etcd });
    drop(ETCD.lock().unwrap_or_else(|e| e.into_inner()).take());
    result
}
