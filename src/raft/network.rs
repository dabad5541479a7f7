//! The client side of the cluster port: [`Network`] is openraft's
//! `RaftNetworkFactory`, its [`NetworkConnection`]s send the Raft RPCs, and
//! [`PeerClient`] sends kstash's own RPCs (forward, read index, join,
//! unseal, peer status, membership) for the node layer.
//!
//! Invariants:
//! - Connections are made lazily, over mutual TLS, to the `cluster_addr`
//!   of a peer's [`NodeInfo`]; the name is resolved at each (re)connect
//!   (StatefulSet DNS names follow restarted pods) and its host part is the
//!   name the peer's certificate must carry. One HTTP/2 channel per address
//!   is shared by every client of this node.
//! - Every RPC is bounded in time (openraft's `RPCOption` for Raft RPCs,
//!   the network's RPC timeout otherwise) and in size
//!   ([`super::cluster::MAX_ENVELOPE_BYTES`], checked before sending).
//! - Transport failures map to openraft's errors by what a retry can do:
//!   a peer that cannot be reached or refuses the envelope is
//!   `Unreachable` (openraft backs off), a connection that broke mid-call
//!   is `NetworkError`, a deadline is `Timeout`, and the peer's own answer
//!   is `RemoteError`.
//! - A [`LinkFilter`] that returns false makes an RPC fail as `Unreachable`
//!   without sending anything: the hook for fault-injection tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::AnyError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};

use super::cluster::{
    decode, encode, pb, ClusterError, ForwardReply, ForwardRequest, JoinReply, JoinRequest,
    MembershipExchange, PeerStatus, ReadIndexReply, UnsealReply, UnsealRequest, WireError,
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_MESSAGE_BYTES,
};
use super::tls::{host_of, ClusterTls};
use super::types::{typ, NodeInfo, TypeConfig};

/// Decides whether an RPC from node `from` to node `to` may be sent; false
/// fails it as unreachable. Tests use it to partition and drop links.
pub type LinkFilter = Arc<dyn Fn(typ::NodeId, typ::NodeId) -> bool + Send + Sync>;

/// Default time to open a TCP connection and finish the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default deadline of a [`PeerClient`] call.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// openraft's network factory of this node, and the source of
/// [`PeerClient`]s. Cheap to clone; clones share their connections.
#[derive(Clone)]
pub struct Network {
    id: typ::NodeId,
    tls: ClusterTls,
    filter: Option<LinkFilter>,
    connect_timeout: Duration,
    rpc_timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("id", &self.id)
            .field("filtered", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

impl Network {
    /// The network of node `id`, authenticating with `tls`. Does no I/O.
    pub fn new(id: typ::NodeId, tls: ClusterTls) -> Self {
        Network {
            id,
            tls,
            filter: None,
            connect_timeout: CONNECT_TIMEOUT,
            rpc_timeout: RPC_TIMEOUT,
            channels: Arc::default(),
        }
    }

    /// Consult `filter` before every RPC to a peer with a known node id.
    pub fn with_link_filter(mut self, filter: LinkFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Replace the connect timeout and the [`PeerClient`] call deadline.
    pub fn with_timeouts(mut self, connect: Duration, rpc: Duration) -> Self {
        self.connect_timeout = connect;
        self.rpc_timeout = rpc;
        self
    }

    /// This node's id.
    pub fn id(&self) -> typ::NodeId {
        self.id
    }

    /// A client of node `id` at `node.cluster_addr`. Does no I/O.
    pub fn peer(&self, id: typ::NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            link: self.link(Some(id), &node.cluster_addr),
        }
    }

    /// A client of whatever node listens at `cluster_addr`, for a node that
    /// does not know its peers' ids yet (`Join` at boot). The link filter is
    /// not consulted: it names links by node id.
    pub fn peer_at(&self, cluster_addr: &str) -> PeerClient {
        PeerClient {
            link: self.link(None, cluster_addr),
        }
    }

    fn link(&self, to: Option<typ::NodeId>, addr: &str) -> Link {
        Link {
            net: self.clone(),
            to,
            addr: addr.to_string(),
        }
    }

    /// The shared channel to `addr`, made (lazily, without I/O) on first use.
    fn channel(&self, addr: &str) -> Result<Channel, Failure> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let host = host_of(addr).ok_or_else(|| {
            Failure::Unreachable(format!("bad cluster address {addr:?}: want host:port"))
        })?;
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(self.tls.client_config(host)))
            .map_err(|e| Failure::Unreachable(format!("bad cluster address {addr:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkConnection;

    async fn new_client(&mut self, target: typ::NodeId, node: &NodeInfo) -> NetworkConnection {
        NetworkConnection {
            link: self.link(Some(target), &node.cluster_addr),
            target,
            node: node.clone(),
        }
    }
}

/// The cluster RPCs, named for dispatch and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ForwardBatch,
    ReadIndex,
    Join,
    Unseal,
    PeerStatus,
    Membership,
}

/// Why a call got no answer from the peer's service.
#[derive(Debug)]
enum Failure {
    /// Filtered, not connectable, refused by TLS or by the peer's gRPC
    /// layer: retrying at once will not help.
    Unreachable(String),
    /// The deadline passed.
    Timeout(Duration),
    /// The connection broke during the call.
    Network(String),
    /// The peer does not serve this RPC (an older release).
    NotServed(String),
}

/// One direction of one link: this node to `to` at `addr`.
#[derive(Clone)]
struct Link {
    net: Network,
    to: Option<typ::NodeId>,
    addr: String,
}

impl Link {
    /// Send `envelope` as `method` and wait up to `timeout` for the reply.
    async fn send(
        &self,
        method: Method,
        envelope: pb::Envelope,
        timeout: Duration,
    ) -> Result<pb::Envelope, Failure> {
        if let (Some(filter), Some(to)) = (&self.net.filter, self.to) {
            if !filter(self.net.id, to) {
                return Err(Failure::Unreachable(format!(
                    "link {} -> {to} is cut by the link filter",
                    self.net.id
                )));
            }
        }
        let mut client = pb::cluster_client::ClusterClient::new(self.net.channel(&self.addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(envelope);
        request.set_timeout(timeout);
        let call = async move {
            match method {
                Method::AppendEntries => client.append_entries(request).await,
                Method::Vote => client.vote(request).await,
                Method::InstallSnapshot => client.install_snapshot(request).await,
                Method::Forward => client.forward(request).await,
                Method::ForwardBatch => client.forward_batch(request).await,
                Method::ReadIndex => client.read_index(request).await,
                Method::Join => client.join(request).await,
                Method::Unseal => client.unseal(request).await,
                Method::PeerStatus => client.peer_status(request).await,
                Method::Membership => client.membership(request).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(Failure::Timeout(timeout)),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => {
                let failure = classify(&status, timeout);
                tracing::debug!(?method, to = ?self.to, addr = %self.addr, ?failure, "cluster RPC failed");
                Err(failure)
            }
        }
    }
}

/// A status the peer sent has no source; one made locally from a transport
/// error (connect, TLS, broken connection) has it.
fn classify(status: &tonic::Status, timeout: Duration) -> Failure {
    use tonic::Code;
    let local = std::error::Error::source(status).is_some();
    let mut text = format!("{}: {}", status.code(), status.message());
    let mut tls_refused = false;
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        tls_refused |= is_tls_error(s);
        source = s.source();
    }
    match status.code() {
        Code::DeadlineExceeded => Failure::Timeout(timeout),
        // Could not connect (refused, no such host, server certificate
        // refused), or the peer's TLS refused our certificate.
        Code::Unavailable => Failure::Unreachable(text),
        _ if local && tls_refused => Failure::Unreachable(text),
        // The connection closed or broke during the call.
        _ if local => Failure::Network(text),
        // A peer of an older release, without this RPC.
        Code::Unimplemented => Failure::NotServed(format!("peer refused the call: {text}")),
        // The peer answered, but not with a reply: it refused the envelope
        // (size, format) or cannot serve the RPC. Back off.
        _ => Failure::Unreachable(format!("peer refused the call: {text}")),
    }
}

/// Whether `e` is a rustls error (e.g. a TLS alert from the peer), possibly
/// inside an I/O error.
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    e.is::<rustls::Error>()
        || e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>())
}

// ----- openraft's side --------------------------------------------------------

/// The Raft RPCs to one peer, made by [`Network::new_client`].
pub struct NetworkConnection {
    link: Link,
    target: typ::NodeId,
    node: NodeInfo,
}

impl std::fmt::Debug for NetworkConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NetworkConnection({} -> {} at {})",
            self.link.net.id, self.target, self.link.addr
        )
    }
}

impl NetworkConnection {
    /// Send one Raft RPC; decode `Result<Resp, RaftError<E>>` from the reply.
    async fn call<Resp, E>(
        &self,
        action: RPCTypes,
        method: Method,
        envelope: pb::Envelope,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<typ::NodeId, NodeInfo, RaftError<typ::NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        // openraft drops the call at `hard_ttl`; give up a little earlier to
        // report a proper timeout.
        let timeout = option.soft_ttl();
        let reply = self
            .link
            .send(method, envelope, timeout)
            .await
            .map_err(|f| self.rpc_error(action, f))?;
        let outcome: Result<Resp, RaftError<typ::NodeId, E>> = decode(&reply)
            .map_err(|e| self.rpc_error(action, Failure::Unreachable(e.to_string())))?;
        outcome.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        failure: Failure,
    ) -> RPCError<typ::NodeId, NodeInfo, E> {
        match failure {
            Failure::Unreachable(msg) | Failure::NotServed(msg) => {
                Unreachable::from(AnyError::error(msg)).into()
            }
            Failure::Network(msg) => NetworkError::from(AnyError::error(msg)).into(),
            Failure::Timeout(timeout) => Timeout {
                action,
                id: self.link.net.id,
                target: self.target,
                timeout,
            }
            .into(),
        }
    }
}

impl RaftNetwork<TypeConfig> for NetworkConnection {
    async fn append_entries(
        &mut self,
        rpc: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, RPCError<typ::NodeId, NodeInfo, RaftError<typ::NodeId>>>
    {
        let entries = rpc.entries.len() as u64;
        let envelope = match encode(&rpc) {
            Ok(envelope) => envelope,
            // openraft retries at once with fewer entries.
            Err(WireError::TooLarge { .. }) if entries > 1 => {
                return Err(PayloadTooLarge::new_entries_hint(entries / 2).into())
            }
            // One entry too large to send: back off rather than spin.
            Err(e) => {
                return Err(
                    self.rpc_error(RPCTypes::AppendEntries, Failure::Unreachable(e.to_string()))
                )
            }
        };
        self.call(
            RPCTypes::AppendEntries,
            Method::AppendEntries,
            envelope,
            &option,
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: typ::InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<
        typ::InstallSnapshotResponse,
        RPCError<typ::NodeId, NodeInfo, RaftError<typ::NodeId, InstallSnapshotError>>,
    > {
        let envelope = encode(&rpc).map_err(|e| {
            self.rpc_error(
                RPCTypes::InstallSnapshot,
                Failure::Unreachable(e.to_string()),
            )
        })?;
        self.call(
            RPCTypes::InstallSnapshot,
            Method::InstallSnapshot,
            envelope,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: typ::VoteRequest,
        option: RPCOption,
    ) -> Result<typ::VoteResponse, RPCError<typ::NodeId, NodeInfo, RaftError<typ::NodeId>>> {
        let envelope = encode(&rpc)
            .map_err(|e| self.rpc_error(RPCTypes::Vote, Failure::Unreachable(e.to_string())))?;
        self.call(RPCTypes::Vote, Method::Vote, envelope, &option)
            .await
    }
}

// ----- kstash's side ----------------------------------------------------------

/// Why a [`PeerClient`] call failed.
#[derive(Debug, Clone, Error)]
pub enum PeerError {
    /// The peer could not be reached (no connection, TLS refused, link
    /// filtered) or refused the call outright.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer's cluster address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("peer {peer} did not answer within {timeout:?}")]
    Timeout {
        /// The peer's cluster address.
        peer: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The connection broke during the call.
    #[error("connection to peer {peer} failed: {reason}")]
    Network {
        /// The peer's cluster address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// The request was too large to send, or the reply unreadable.
    #[error("peer {peer}: {source}")]
    Wire {
        /// The peer's cluster address.
        peer: String,
        /// The envelope problem.
        source: WireError,
    },
    /// The peer answered with an error.
    #[error("peer {peer}: {source}")]
    Remote {
        /// The peer's cluster address.
        peer: String,
        /// The peer's answer.
        source: ClusterError,
    },
}

impl PeerError {
    /// Whether sending the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PeerError::Unreachable { .. }
            | PeerError::Timeout { .. }
            | PeerError::Network { .. } => true,
            PeerError::Wire { .. } => false,
            PeerError::Remote { source, .. } => source.is_retryable(),
        }
    }

    /// The peer's own answer, if it gave one.
    pub fn remote(&self) -> Option<&ClusterError> {
        match self {
            PeerError::Remote { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// kstash's own RPCs to one peer, for the node layer. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    link: Link,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerClient({:?} at {})", self.link.to, self.link.addr)
    }
}

impl PeerClient {
    /// The peer's node id, when known.
    pub fn id(&self) -> Option<typ::NodeId> {
        self.link.to
    }

    /// The peer's cluster address.
    pub fn addr(&self) -> &str {
        &self.link.addr
    }

    /// Propose a request on the leader through this peer.
    pub async fn forward(&self, request: &ForwardRequest) -> Result<ForwardReply, PeerError> {
        self.call(Method::Forward, request).await
    }

    /// Propose several requests on the leader through this peer, in one
    /// call; one outcome per request, in order. A peer of an older release
    /// without `ForwardBatch` gets one `Forward` call per request.
    pub async fn forward_batch(
        &self,
        requests: &[ForwardRequest],
    ) -> Result<Vec<Result<ForwardReply, PeerError>>, PeerError> {
        let outcomes: Vec<Result<ForwardReply, ClusterError>> =
            match self.try_call(Method::ForwardBatch, &requests).await {
                Err(Failure::NotServed(_)) => {
                    return Ok(join_all(requests.iter().map(|r| self.forward(r))).await)
                }
                Err(failure) => return Err(self.failed(failure)),
                Ok(outcome) => outcome?,
            };
        if outcomes.len() != requests.len() {
            return Err(PeerError::Wire {
                peer: self.link.addr.clone(),
                source: WireError::Malformed(format!(
                    "{} outcomes for {} forwarded requests",
                    outcomes.len(),
                    requests.len()
                )),
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map_err(|source| PeerError::Remote {
                    peer: self.link.addr.clone(),
                    source,
                })
            })
            .collect())
    }

    /// Ask this peer (the leader) for a read index.
    pub async fn read_index(&self) -> Result<ReadIndexReply, PeerError> {
        self.call(Method::ReadIndex, &()).await
    }

    /// Ask this peer (the leader) to add a node as a learner.
    pub async fn join(&self, request: &JoinRequest) -> Result<JoinReply, PeerError> {
        self.call(Method::Join, request).await
    }

    /// Pass one unseal key or gatekeeper token to this peer.
    pub async fn unseal(&self, request: &UnsealRequest) -> Result<UnsealReply, PeerError> {
        self.call(Method::Unseal, request).await
    }

    /// This peer's status.
    pub async fn peer_status(&self) -> Result<PeerStatus, PeerError> {
        self.call(Method::PeerStatus, &()).await
    }

    /// Send this node's committed membership; get the peer's.
    pub async fn membership(
        &self,
        request: &MembershipExchange,
    ) -> Result<MembershipExchange, PeerError> {
        self.call(Method::Membership, request).await
    }

    async fn call<Q, R>(&self, method: Method, request: &Q) -> Result<R, PeerError>
    where
        Q: Serialize,
        R: DeserializeOwned,
    {
        self.try_call(method, request)
            .await
            .map_err(|f| self.failed(f))?
    }

    /// Send `request` and decode the peer's outcome; a failure to get one
    /// is returned as is, so the caller can tell `NotServed` apart.
    async fn try_call<Q, R>(
        &self,
        method: Method,
        request: &Q,
    ) -> Result<Result<R, PeerError>, Failure>
    where
        Q: Serialize,
        R: DeserializeOwned,
    {
        let peer = || self.link.addr.clone();
        let envelope = match encode(request) {
            Ok(envelope) => envelope,
            Err(source) => {
                return Ok(Err(PeerError::Wire {
                    peer: peer(),
                    source,
                }))
            }
        };
        let timeout = self.link.net.rpc_timeout;
        let reply = self.link.send(method, envelope, timeout).await?;
        let outcome: Result<R, ClusterError> = match decode(&reply) {
            Ok(outcome) => outcome,
            Err(source) => {
                return Ok(Err(PeerError::Wire {
                    peer: peer(),
                    source,
                }))
            }
        };
        Ok(outcome.map_err(|source| PeerError::Remote {
            peer: peer(),
            source,
        }))
    }

    /// The error for a call that got no answer.
    fn failed(&self, failure: Failure) -> PeerError {
        let peer = self.link.addr.clone();
        match failure {
            Failure::Unreachable(reason) | Failure::NotServed(reason) => {
                PeerError::Unreachable { peer, reason }
            }
            Failure::Network(reason) => PeerError::Network { peer, reason },
            Failure::Timeout(timeout) => PeerError::Timeout { peer, timeout },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(e: std::io::Error) -> tonic::Status {
        tonic::Status::from_error(Box::new(e))
    }

    #[test]
    fn failures_map_by_what_a_retry_can_do() {
        let t = Duration::from_secs(1);
        let answered = tonic::Status::resource_exhausted("envelope too large");
        assert!(matches!(classify(&answered, t), Failure::Unreachable(_)));
        let older = tonic::Status::unimplemented("no such method");
        assert!(matches!(classify(&older, t), Failure::NotServed(_)));
        let deadline = tonic::Status::deadline_exceeded("late");
        assert!(matches!(classify(&deadline, t), Failure::Timeout(_)));
        let unavailable = tonic::Status::unavailable("connection refused");
        assert!(matches!(classify(&unavailable, t), Failure::Unreachable(_)));

        let broken = local(std::io::Error::other("connection closed"));
        assert!(std::error::Error::source(&broken).is_some());
        assert!(matches!(classify(&broken, t), Failure::Network(_)));
        let alert = local(std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        )));
        match classify(&alert, t) {
            Failure::Unreachable(text) => assert!(text.contains("CertificateRequired"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
