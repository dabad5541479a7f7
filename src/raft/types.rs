//! The one place that declares kstash's Raft types, and the aliases the
//! rest of the crate uses. Architecture invariant: only `src/raft/` names
//! openraft generics; everything above it sees these aliases.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::command::{Batch, Responses};

/// How a peer is reached (its client API address and its cluster address),
/// and which data dir it runs on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Client API address (`host:port`), shown in status.
    pub api_addr: String,
    /// Cluster (Raft RPC) address (`host:port`).
    pub cluster_addr: String,
    /// Random id of the node's data dir, made at its first start
    /// (`node-id` file). The leader refuses a join whose id is a member with
    /// another incarnation: that node's data dir was wiped or replaced.
    /// 0 = none (a node that never had a cluster port).
    #[serde(default)]
    pub incarnation: u64,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "api {} cluster {}", self.api_addr, self.cluster_addr)
    }
}

openraft::declare_raft_types!(
    /// kstash's Raft type configuration.
    pub TypeConfig:
        D = Batch,
        R = Responses,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Aliases of openraft's generic types for [`TypeConfig`].
pub mod typ {
    use super::TypeConfig;

    /// A node id.
    pub type NodeId = u64;
    /// The Raft handle.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// What openraft reports about one node.
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, super::NodeInfo>;
    /// A log entry.
    pub type LogEntry = openraft::Entry<TypeConfig>;
    /// A log id.
    pub type LogId = openraft::LogId<NodeId>;
    /// A vote.
    pub type Vote = openraft::Vote<NodeId>;
    /// Membership as stored with the state.
    pub type StoredMembership = openraft::StoredMembership<NodeId, super::NodeInfo>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, super::NodeInfo>;
    /// A snapshot.
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    /// Storage failures reported to openraft.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// Errors of `client_write`.
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, super::NodeInfo>;
    /// Errors of `ensure_linearizable`.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, super::NodeInfo>;
    /// A Raft API error.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    /// The result of `client_write`.
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    /// AppendEntries request.
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    /// AppendEntries response.
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    /// Vote request.
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    /// Vote response.
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    /// InstallSnapshot request.
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    /// InstallSnapshot response.
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    /// The callback a log store calls once an append is durable.
    pub type LogFlushed = openraft::storage::LogFlushed<TypeConfig>;
}
