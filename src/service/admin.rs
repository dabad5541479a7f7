//! Operator calls on the Raft cluster: list peers, remove a member, save a
//! snapshot. Invariants: listing peers is a read-only view that needs no
//! credential and no barrier (like status, it answers while sealed, and it
//! writes nothing); every other call here is authorised like the other sys
//! operations (a gatekeeper token or a threshold of unseal keys), and a
//! saved snapshot is the state machine's own file, which holds ciphertext
//! only (backend pairs are written by the barrier). This file speaks to the
//! replica in kstash's types only (`Replica::peers`, `remove_node`,
//! `save_snapshot`): only `src/raft/` names openraft.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::types::{GatekeeperAuth, SysResponse};
use super::{Node, ServiceError};
use crate::secret::SecretString;

/// Longest wait for a freshly triggered snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

/// One member of the cluster.
#[derive(Serialize, Debug, Clone, ToSchema)]
pub struct Peer {
    /// Node id.
    pub id: u64,
    /// Client API address.
    pub api_addr: String,
    /// Cluster (Raft RPC) address.
    pub cluster_addr: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Whether this member is the leader.
    pub leader: bool,
    /// Highest log index known to match the leader's log (known on the
    /// leader only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
}

/// Request of `raft/remove`: the member to remove and the operator's
/// proof (a gatekeeper token or unseal keys).
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// The node id to remove.
    pub node_id: u64,
    /// A gatekeeper token (consumed; the response carries its replacement).
    #[schema(value_type = Option<String>)]
    pub gatekeeper_token: Option<SecretString>,
    /// At least `threshold` unseal keys.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<SecretString>,
}

impl RemoveRequest {
    /// The proof part, as the other sys operations take it.
    pub fn into_auth(self) -> (u64, GatekeeperAuth) {
        (
            self.node_id,
            GatekeeperAuth {
                gatekeeper_token: self.gatekeeper_token,
                keys: self.keys,
            },
        )
    }
}

/// Response of `raft/peers`.
#[derive(Serialize, Debug, ToSchema)]
pub struct PeersResponse {
    /// The node that answered.
    pub node_id: u64,
    /// Every member, by id.
    pub peers: Vec<Peer>,
}

/// A saved snapshot: its bytes (the state machine's snapshot file) and the
/// replacement gatekeeper token, if one was used.
#[derive(Debug)]
pub struct SavedSnapshot {
    /// The snapshot file, exactly as stored in `snapshots/current.snap`.
    pub bytes: Vec<u8>,
    /// The replacement for the gatekeeper token that was used.
    pub gatekeeper_token: Option<SecretString>,
}

impl Node {
    /// Every member of the cluster as this node sees it. No credential: the
    /// view holds ids, addresses, roles and log positions from Raft's own
    /// state (status shows ids and addresses to anyone already), never
    /// touches the barrier, so it answers while sealed, and appends nothing
    /// to the log.
    pub fn raft_peers(&self) -> PeersResponse {
        let peers = self
            .raft
            .peers()
            .into_iter()
            .map(|p| Peer {
                id: p.member.id,
                api_addr: p.member.node.api_addr,
                cluster_addr: p.member.node.cluster_addr,
                role: if p.member.voter { "voter" } else { "learner" }.into(),
                leader: p.leader,
                matched_index: p.matched_index,
            })
            .collect();
        PeersResponse {
            node_id: self.raft.id(),
            peers,
        }
    }

    /// Remove `node_id` from the voters and learners. Runs on the leader
    /// only: a follower answers 503 naming the leader, before touching the
    /// caller's credentials. Refuses removing the last voter.
    pub async fn raft_remove(
        &self,
        node_id: u64,
        auth: GatekeeperAuth,
    ) -> Result<SysResponse, ServiceError> {
        self.require_leader()?;
        // Before the credential is spent: a doomed removal uses no token.
        self.raft.check_removable(node_id)?;
        let (gk, rep) = self.authorize_gatekeeper(&auth).await?;
        drop(gk);
        // The replica also tells the removed node, so it stops serving.
        let log_index = self.raft.remove_node(node_id).await?;
        tracing::info!(node_id, log_index, "member removed");
        Ok(SysResponse {
            gatekeeper_token: rep,
            ..Default::default()
        })
    }

    /// Build a fresh snapshot on this node and return its file. The file
    /// holds the Raft metadata and the backend's pairs, which are
    /// ciphertext written by the barrier.
    pub async fn save_snapshot(&self, auth: GatekeeperAuth) -> Result<SavedSnapshot, ServiceError> {
        let (gk, rep) = self.authorize_gatekeeper(&auth).await?;
        drop(gk);
        let bytes = self.raft.save_snapshot(SNAPSHOT_WAIT).await?;
        Ok(SavedSnapshot {
            bytes,
            gatekeeper_token: rep,
        })
    }

    fn require_leader(&self) -> Result<(), ServiceError> {
        if self.raft.is_leader() {
            return Ok(());
        }
        Err(ServiceError::Unavailable(match self.raft.leader() {
            Some((id, node)) => format!(
                "not the leader: send this to the leader, node {id} at {}",
                node.api_addr
            ),
            None => "not the leader, and no leader is known; retry".into(),
        }))
    }
}
