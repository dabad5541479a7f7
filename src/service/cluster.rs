//! The node's side of kstash's own cluster RPCs ([`ClusterHandler`]):
//! forwarded writes, read indexes, joins and membership exchanges go to the
//! replica; unseal and peer status are the node's.
//!
//! Invariants: a peer's unseal secret takes the same path as a client's
//! unseal on this node and is never passed on again; replies and errors
//! carry no secret; status shows every member of the membership, each
//! remote one as it answered a bounded `PeerStatus` call, and what no peer
//! said reads as unknown (`None`), never as a guess such as "sealed".

use std::time::Duration;

use super::types::{PeerStatus as StatusPeer, UnsealRequest as ClientUnseal};
use super::{Node, ServiceError};
use crate::raft::cluster::{
    ClusterError, ClusterHandler, ForwardReply, ForwardRequest, HandlerFuture, JoinReply,
    JoinRequest, MembershipExchange, PeerStatus, ReadIndexReply, UnsealReply, UnsealRequest,
};
use crate::secret::SecretString;

/// The one mapping of service errors to what a peer is told.
fn cluster_error(e: ServiceError) -> ClusterError {
    match e {
        ServiceError::Sealed => ClusterError::Sealed,
        ServiceError::NotInitialized => ClusterError::NotInitialized,
        ServiceError::Unavailable(m) => ClusterError::Unavailable(m),
        // The cluster wire has no variant for it; the message keeps it.
        e @ ServiceError::OutcomeUnknown(_) => ClusterError::Unavailable(e.to_string()),
        ServiceError::Internal => ClusterError::Internal("internal error".into()),
        other => ClusterError::Refused(other.to_string()),
    }
}

/// How long status waits for each peer's own answer.
pub const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) fn small(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

impl Node {
    /// Every member of the cluster as this node sees it, without asking
    /// anyone: id, client address, whether it leads. Only this node's own
    /// `sealed` is known; every other member's `sealed` and `reachable` are
    /// unknown (`None`: not asked) until [`Node::peers_status`] asks it.
    pub(super) fn members_status(&self, sealed: bool) -> Vec<StatusPeer> {
        let raft = self.raft.raft_status();
        let me_applied = raft.last_applied.map(|l| l.index);
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
                    sealed: me.then_some(sealed),
                    leader: raft.leader == Some(m.id),
                    reachable: me.then_some(true),
                    last_applied: if me { me_applied } else { None },
                }
            })
            .collect();
        if peers.is_empty() {
            // Not a member of any cluster yet (waiting to join).
            peers.push(StatusPeer {
                id: self.settings.node_id,
                address: self.settings.api_address.clone(),
                sealed: Some(sealed),
                leader: false,
                reachable: Some(true),
                last_applied: me_applied,
            });
        }
        peers
    }

    /// [`Node::members_status`] with every other member asked for its own
    /// status over the cluster channel, concurrently, each call bounded by
    /// [`PEER_STATUS_TIMEOUT`]. A member that answered is reachable with
    /// the `sealed` it reported; one that did not is not reachable, and its
    /// `sealed` stays unknown.
    pub(super) async fn peers_status(&self, sealed: bool) -> Vec<StatusPeer> {
        let mut peers = self.members_status(sealed);
        for (member, answer) in self.raft.peers_status(PEER_STATUS_TIMEOUT).await {
            let Some(p) = peers.iter_mut().find(|p| p.id == member.id) else {
                continue;
            };
            match answer {
                Ok(st) => {
                    p.reachable = Some(true);
                    p.sealed = Some(st.sealed);
                    p.last_applied = st.last_applied.map(|l| l.index);
                }
                Err(reason) => {
                    p.reachable = Some(false);
                    tracing::debug!(peer = member.id, %reason, "peer status not available");
                }
            }
        }
        peers
    }

    /// Open this node's barrier with a secret a peer accepted. Never passes
    /// it on. First this node catches up with the leader (linearizable
    /// read, bounded): it may not have applied the init yet (a key would be
    /// refused as "not initialised"), and for a gatekeeper token the calling
    /// peer recorded the token's use through the log, which this node must
    /// see to take the token's grace path instead of using it a second time.
    async fn unseal_from_peer(&self, request: UnsealRequest) -> Result<UnsealReply, ServiceError> {
        if self.is_sealed() {
            if let Err(e) = self.linearize().await {
                // Not fatal: the init may be here already, and a second use
                // of a token is refused at apply and then takes the grace
                // path too.
                tracing::info!(error = %e, "unseal from a peer: could not catch up first");
            }
        }
        let request = match request {
            UnsealRequest::Rekeyed(token) => return self.reopen_after_rekey(&token).await,
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
        let status = self.unseal_here(request).await?.status;
        Ok(UnsealReply {
            sealed: status.sealed,
            progress: small(status.progress),
            threshold: small(status.threshold),
        })
    }

    /// A peer rekeyed: re-open this node's (unsealed) barrier under the new
    /// root key with the one-use token it sent. A sealed node stays sealed.
    async fn reopen_after_rekey(&self, token: &SecretString) -> Result<UnsealReply, ServiceError> {
        let init = self.require_initialized()?;
        if !self.is_sealed() {
            // See the rekey and the token's use before checking the token.
            self.linearize().await?;
            let (gatekeeper_key, _replacement) = self.use_gatekeeper_token(token).await?;
            self.open_barrier(&gatekeeper_key)?;
            tracing::info!("barrier re-opened under the root key of a rekey");
        }
        Ok(UnsealReply {
            sealed: self.is_sealed(),
            progress: 0,
            threshold: small(init.threshold as u32),
        })
    }

    /// Whether this node should stay out of elections (invariant 6): the
    /// store is initialised and this node's barrier is sealed.
    pub fn holds_back_elections(&self) -> bool {
        self.is_sealed() && matches!(self.sm().init_record(), Ok(Some(_)))
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

    fn membership(&self, request: MembershipExchange) -> HandlerFuture<'_, MembershipExchange> {
        Box::pin(self.raft.exchange_membership(request))
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
