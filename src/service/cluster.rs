//! The node's side of kstash's own cluster RPCs ([`ClusterHandler`]):
//! forwarded writes, read indexes and joins go to the replica; unseal and
//! peer status are the node's.
//!
//! Invariants: a peer's unseal secret takes the same path as a client's
//! unseal on this node and is never passed on again; replies and errors
//! carry no secret; `status` shows every member of the membership, and says
//! only what this node knows (a remote peer's seal state is not asked yet).

use super::types::{PeerStatus as StatusPeer, UnsealRequest as ClientUnseal};
use super::{Node, ServiceError};
use crate::raft::cluster::{
    ClusterError, ClusterHandler, ForwardReply, ForwardRequest, HandlerFuture, JoinReply,
    JoinRequest, PeerStatus, ReadIndexReply, UnsealReply, UnsealRequest,
};

/// The one mapping of service errors to what a peer is told.
fn cluster_error(e: ServiceError) -> ClusterError {
    match e {
        ServiceError::Sealed => ClusterError::Sealed,
        ServiceError::NotInitialized => ClusterError::NotInitialized,
        ServiceError::Unavailable(m) => ClusterError::Unavailable(m),
        ServiceError::Internal => ClusterError::Internal("internal error".into()),
        other => ClusterError::Refused(other.to_string()),
    }
}

fn small(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

impl Node {
    /// Every member of the cluster as this node sees it: id, client address,
    /// and whether it leads. Only this node's own `sealed` is known; remote
    /// peers show `false` until status asks them (`peer_status`).
    pub(super) fn members_status(&self, sealed: bool) -> Vec<StatusPeer> {
        let leader = self.raft.raft_status().leader;
        let mut peers: Vec<StatusPeer> = self
            .raft
            .members()
            .into_iter()
            .map(|m| {
                let me = m.id == self.settings.node_id;
                StatusPeer {
                    id: m.id,
                    // This node's own address as it runs now (a lone node's
                    // membership keeps the address of its first start).
                    address: if me {
                        self.settings.api_address.clone()
                    } else {
                        m.node.api_addr
                    },
                    sealed: me && sealed,
                    leader: leader == Some(m.id),
                }
            })
            .collect();
        if peers.is_empty() {
            // Not a member of any cluster yet (waiting to join).
            peers.push(StatusPeer {
                id: self.settings.node_id,
                address: self.settings.api_address.clone(),
                sealed,
                leader: false,
            });
        }
        peers
    }

    /// Open this node's barrier with a secret a peer accepted.
    async fn unseal_from_peer(&self, request: UnsealRequest) -> Result<UnsealReply, ServiceError> {
        let request = match request {
            UnsealRequest::Key(key) => ClientUnseal {
                key: Some(key),
                ..Default::default()
            },
            UnsealRequest::GatekeeperToken(token) => ClientUnseal {
                gatekeeper_token: Some(token),
                ..Default::default()
            },
        };
        // The replacement token (if any) stays with the client of the node
        // that was called; a peer gets only where it stands.
        let status = self.unseal(request).await?.status;
        Ok(UnsealReply {
            sealed: status.sealed,
            progress: small(status.progress),
            threshold: small(status.threshold),
        })
    }

    fn own_peer_status(&self) -> Result<PeerStatus, ServiceError> {
        let raft = self.raft.raft_status();
        let sealed = self.is_sealed();
        Ok(PeerStatus {
            id: self.settings.node_id,
            initialized: self.sm().init_record()?.is_some(),
            sealed,
            progress: if sealed {
                small(self.live_progress_len())
            } else {
                0
            },
            term: raft.term,
            leader: raft.leader,
            last_applied: raft.last_applied,
        })
    }
}

impl ClusterHandler for Node {
    fn forward(&self, request: ForwardRequest) -> HandlerFuture<'_, ForwardReply> {
        Box::pin(self.raft.forwarded(request))
    }

    fn read_index(&self) -> HandlerFuture<'_, ReadIndexReply> {
        Box::pin(self.raft.read_index())
    }

    fn join(&self, request: JoinRequest) -> HandlerFuture<'_, JoinReply> {
        Box::pin(self.raft.admit(request))
    }

    fn unseal(&self, request: UnsealRequest) -> HandlerFuture<'_, UnsealReply> {
        Box::pin(async move { self.unseal_from_peer(request).await.map_err(cluster_error) })
    }

    fn peer_status(&self) -> HandlerFuture<'_, PeerStatus> {
        Box::pin(async move { self.own_peer_status().map_err(cluster_error) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_what_a_peer_may_retry() {
        assert_eq!(cluster_error(ServiceError::Sealed), ClusterError::Sealed);
        assert!(cluster_error(ServiceError::Unavailable("x".into())).is_retryable());
        let refused = cluster_error(ServiceError::bad("wrong key"));
        assert_eq!(refused, ClusterError::Refused("wrong key".into()));
        assert!(!refused.is_retryable());
        assert_eq!(
            cluster_error(ServiceError::Internal),
            ClusterError::Internal("internal error".into())
        );
    }
}
