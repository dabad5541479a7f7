//! A replica: this node's openraft instance, its log store and state
//! machine, and the one `propose` every mutation goes through.
//!
//! Invariants: the leader stamps the time into each request just before
//! `client_write`, so apply never reads a clock; a follower forwards the
//! command to the leader (with a hop budget) instead of proposing; a
//! proposal is acknowledged only after openraft reports it committed and
//! applied.

// openraft's `StorageError` is the error type its traits require.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use thiserror::Error;

use super::command::{Applied, Command, Request};
use super::log_store::LogStore;
use super::state::State;
use super::state_machine::{ApplyHook, StateMachineStore};
use super::types::{typ, NodeInfo, TypeConfig};
use super::ProposeError;
use crate::clock::Clock;
use crate::storage::Backend;

/// How a replica is set up.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's id.
    pub node_id: typ::NodeId,
    /// How peers reach this node.
    pub node: NodeInfo,
    /// The node's data dir: `raft-log/` and `snapshots/` live here.
    pub data_dir: PathBuf,
    /// Election timeout range, in milliseconds.
    pub election_timeout_ms: (u64, u64),
    /// Heartbeat interval, in milliseconds.
    pub heartbeat_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_logs: u64,
}

impl ReplicaConfig {
    /// A single-node configuration with openraft's usual timings.
    pub fn single(node_id: typ::NodeId, api_addr: String, data_dir: PathBuf) -> Self {
        ReplicaConfig {
            node_id,
            node: NodeInfo {
                api_addr,
                cluster_addr: String::new(),
            },
            data_dir,
            election_timeout_ms: (150, 300),
            heartbeat_ms: 50,
            snapshot_logs: 10_000,
        }
    }
}

/// Why a replica could not start.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The log store or state machine could not be opened.
    #[error("opening the node's storage: {0}")]
    Storage(#[from] typ::StorageError),
    /// openraft refused the configuration or failed to start.
    #[error("starting raft: {0}")]
    Raft(String),
}

/// This node's replica.
pub struct Replica {
    id: typ::NodeId,
    node: NodeInfo,
    raft: typ::Raft,
    state: State,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replica({}, {:?})", self.id, self.state)
    }
}

impl Replica {
    /// Open the log store and state machine under `config.data_dir`, and
    /// start openraft with `network` (or, for a node that never has peers,
    /// none).
    pub async fn start<N>(
        config: ReplicaConfig,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        network: N,
        hook: Option<ApplyHook>,
    ) -> Result<Arc<Replica>, ReplicaError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let log = LogStore::open(&config.data_dir.join("raft-log"))?;
        let state = State::new(backend);
        let mut sm = StateMachineStore::open(state.clone(), &config.data_dir.join("snapshots"))?;
        if let Some(hook) = hook {
            sm = sm.with_apply_hook(hook);
        }
        let raft_config = openraft::Config {
            cluster_name: "kstash".into(),
            election_timeout_min: config.election_timeout_ms.0,
            election_timeout_max: config.election_timeout_ms.1,
            heartbeat_interval: config.heartbeat_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
            max_in_snapshot_log_to_keep: config.snapshot_logs.min(1000),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let raft = typ::Raft::new(config.node_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        Ok(Arc::new(Replica {
            id: config.node_id,
            node: config.node,
            raft,
            state,
            clock,
        }))
    }

    /// Make this node a one-member cluster if it has never been part of
    /// one, and wait (bounded) until it leads.
    pub async fn bootstrap_single(&self, wait: Duration) -> Result<(), ReplicaError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(self.id, self.node.clone())]);
            self.raft
                .initialize(members)
                .await
                .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        }
        self.raft
            .wait(Some(wait))
            .current_leader(self.id, "single node leads")
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        Ok(())
    }

    /// The replicated state, for reads.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// openraft's handle.
    pub fn raft(&self) -> &typ::Raft {
        &self.raft
    }

    /// This node's id.
    pub fn id(&self) -> typ::NodeId {
        self.id
    }

    /// Whether this node currently leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Stamp `command` with the leader's time, replicate and apply it;
    /// returns what apply produced.
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        let request = Request {
            time_ms: self.clock.now_ms(),
            command,
        };
        match self.raft.client_write(request).await {
            Ok(written) => written.data.map_err(|r| ProposeError::Rejected(r.into())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::Unavailable(match f.leader_id {
                    Some(id) => format!("node {} is not the leader (node {id} is)", self.id),
                    None => "no leader is known yet; retry".into(),
                }))
            }
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    /// Wait until a read on this node would see every write acknowledged
    /// before the call (ReadIndex through openraft).
    pub async fn linearize(&self) -> Result<(), ProposeError> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| {
                ProposeError::Unavailable(format!("cannot confirm a linearizable read: {e}"))
            })
    }

    /// Stop openraft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// The network of a node that never has peers: every RPC is unreachable.
#[derive(Debug, Clone, Default)]
pub struct NoPeers;

/// A connection that never connects.
#[derive(Debug)]
pub struct NoConnection(typ::NodeId);

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoConnection;

    async fn new_client(&mut self, target: typ::NodeId, _node: &NodeInfo) -> NoConnection {
        NoConnection(target)
    }
}

fn unreachable_err(target: typ::NodeId) -> Unreachable {
    Unreachable::new(&std::io::Error::other(format!(
        "node {target}: this node has no cluster network"
    )))
}

impl RaftNetwork<TypeConfig> for NoConnection {
    async fn append_entries(
        &mut self,
        _rpc: typ::AppendEntriesRequest,
        _option: RPCOption,
    ) -> Result<
        typ::AppendEntriesResponse,
        openraft::error::RPCError<typ::NodeId, NodeInfo, RaftError<typ::NodeId>>,
    > {
        Err(unreachable_err(self.0).into())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: typ::InstallSnapshotRequest,
        _option: RPCOption,
    ) -> Result<
        typ::InstallSnapshotResponse,
        openraft::error::RPCError<
            typ::NodeId,
            NodeInfo,
            RaftError<typ::NodeId, openraft::error::InstallSnapshotError>,
        >,
    > {
        Err(unreachable_err(self.0).into())
    }

    async fn vote(
        &mut self,
        _rpc: typ::VoteRequest,
        _option: RPCOption,
    ) -> Result<
        typ::VoteResponse,
        openraft::error::RPCError<typ::NodeId, NodeInfo, RaftError<typ::NodeId>>,
    > {
        Err(unreachable_err(self.0).into())
    }
}
