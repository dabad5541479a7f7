//! The server side of the cluster port (`proto/kstash/cluster/v1`): the
//! three Raft RPCs, handed to this node's [`typ::Raft`], and kstash's own
//! node-to-node RPCs, handed to a [`ClusterHandler`] (the node layer).
//! Also the wire format both sides share: [`encode`] / [`decode`] and the
//! request and reply types inside the envelopes.
//!
//! Invariants:
//! - The port speaks mutual TLS only ([`super::tls::ClusterTls`]): a peer
//!   without a certificate from the cluster CA gets no RPC answered.
//! - An envelope is `FORMAT_V1 | bincode(value)`, at most
//!   [`MAX_ENVELOPE_BYTES`]; a larger one is refused before it is decoded,
//!   and decoding is bounded by the same limit.
//! - A decoded request is always answered with `Ok(envelope)` holding
//!   `Result<reply, error>`; gRPC errors mean the envelope itself was
//!   refused or the node cannot serve that RPC.
//! - A forwarded request whose hop budget is spent never reaches the
//!   handler; the handler gets the budget left after this hop.
//! - Nothing secret is logged: spans name the RPC only, and the envelope's
//!   `Debug` prints its length.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bincode::Options;
use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use zeroize::Zeroize;

use super::tls::ClusterTls;
use super::types::{typ, NodeInfo};
use crate::secret::SecretString;
use crate::state::command::{Request, Response};

/// The generated messages, client and server of package `kstash.cluster.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("kstash.cluster.v1");

    impl std::fmt::Debug for Envelope {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Envelope({} bytes)", self.payload.len())
        }
    }
}

/// Format byte of every envelope written by this version.
pub const FORMAT_V1: u8 = 1;

/// Largest envelope payload, format byte included, either side accepts or
/// sends. A log entry carries at most 4 MiB of requests (or one larger
/// request, bounded by the value limit) and snapshots travel in chunks, so
/// this only refuses garbage.
pub const MAX_ENVELOPE_BYTES: usize = 64 << 20;

/// gRPC message limit (decoding and encoding) of the cluster port: an
/// envelope plus protobuf framing. A payload between the two limits is
/// refused by [`decode`] with a clear message; a bigger one by tonic.
pub const MAX_MESSAGE_BYTES: usize = MAX_ENVELOPE_BYTES + 64 * 1024;

/// Requests in one `ForwardBatch` call at most (a follower's forwarder
/// sends at most one log entry's worth); more is refused with
/// RESOURCE_EXHAUSTED before any is proposed.
pub const MAX_FORWARD_BATCH: usize = super::proposer::MAX_BATCH_REQUESTS;

/// The longest a request may run on the server, whatever the client asked.
pub const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Most connections the cluster port keeps open at once (peers, their
/// retries and probes, TLS handshakes included); the node lowers it when
/// the file-descriptor limit is tight.
pub const CLUSTER_MAX_CONNECTIONS: usize = 128;

/// HTTP/2 pings between peers, to notice a dead connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_ENVELOPE_BYTES as u64 - 1)
        .reject_trailing_bytes()
}

/// Why an envelope could not be made or read.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum WireError {
    /// The payload is (or would be) larger than [`MAX_ENVELOPE_BYTES`].
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Unknown format byte or undecodable body.
    #[error("undecodable envelope: {0}")]
    Malformed(String),
}

impl From<WireError> for Status {
    fn from(e: WireError) -> Status {
        match e {
            WireError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
            WireError::Malformed(_) => Status::invalid_argument(e.to_string()),
        }
    }
}

/// Wrap `value` in an envelope, refusing it when over the limit.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<pb::Envelope, WireError> {
    let body = bincode::DefaultOptions::new()
        .serialized_size(value)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    let size = usize::try_from(body)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if size > MAX_ENVELOPE_BYTES {
        return Err(WireError::TooLarge {
            size,
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    let mut payload = Vec::with_capacity(size);
    payload.push(FORMAT_V1);
    options()
        .serialize_into(&mut payload, value)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    Ok(pb::Envelope { payload })
}

/// Read the value of an envelope, refusing one over the limit before
/// decoding it.
pub fn decode<T: DeserializeOwned>(envelope: &pb::Envelope) -> Result<T, WireError> {
    let size = envelope.payload.len();
    if size > MAX_ENVELOPE_BYTES {
        return Err(WireError::TooLarge {
            size,
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    match envelope.payload.split_first() {
        Some((&FORMAT_V1, body)) => options()
            .deserialize(body)
            .map_err(|e| WireError::Malformed(e.to_string())),
        Some((v, _)) => Err(WireError::Malformed(format!("unknown format {v}"))),
        None => Err(WireError::Malformed("empty payload".into())),
    }
}

// ----- the requests and replies inside the envelopes --------------------------

/// `Forward`: propose `request` on the leader on behalf of a follower.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// How many more times the request may be passed on, this hop
    /// included; 0 is refused with [`ClusterError::HopsExhausted`].
    pub hops: u8,
    /// The replicated request to propose.
    pub request: Request,
}

/// `Forward` succeeded: where the request landed and what apply produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardReply {
    /// The log id of the entry, so the follower can wait until it has
    /// applied it itself (read-your-writes).
    pub log_id: typ::LogId,
    /// The state machine's answer (which may be a rejection).
    pub response: Response,
}

/// `ReadIndex` succeeded: the leader confirmed its leadership.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadIndexReply {
    /// The log id a follower must have applied before serving a
    /// linearizable read; `None` when nothing was ever committed.
    pub read_log_id: Option<typ::LogId>,
}

impl ReadIndexReply {
    /// The log index to wait for (0 when there is none).
    pub fn index(&self) -> u64 {
        self.read_log_id.map_or(0, |l| l.index)
    }
}

/// `Join`: add this node to the cluster as a learner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinRequest {
    /// The joining node's id.
    pub node_id: typ::NodeId,
    /// How to reach it.
    pub node: NodeInfo,
}

/// `Join` succeeded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinReply {
    /// The membership entry that added the node; `None` when it already was
    /// a member and nothing was written.
    pub log_id: Option<typ::LogId>,
}

/// `Unseal`: one secret a peer accepted, for this node to open its own
/// barrier with. `Debug` prints `<redacted>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum UnsealRequest {
    /// One unseal key (Shamir share); progress accumulates per node.
    Key(SecretString),
    /// One gatekeeper token, used within its grace window on each node.
    GatekeeperToken(SecretString),
    /// After a rekey on the sending node: a one-use gatekeeper token for the
    /// new gatekeeper key. An unsealed peer uses it (inside its grace window)
    /// to re-open its barrier under the new root key; a sealed peer ignores
    /// it. The gatekeeper key itself never crosses the network.
    Rekeyed(SecretString),
}

/// `Unseal` was applied: where this node stands now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnsealReply {
    /// Still sealed?
    pub sealed: bool,
    /// Unseal keys given so far.
    pub progress: u8,
    /// Unseal keys needed.
    pub threshold: u8,
}

/// `PeerStatus`: what a node says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its node id.
    pub id: typ::NodeId,
    /// Whether the cluster it holds is initialised.
    pub initialized: bool,
    /// Whether its barrier is sealed.
    pub sealed: bool,
    /// Unseal keys given so far.
    pub progress: u8,
    /// Its current Raft term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<typ::NodeId>,
    /// The last log id it applied.
    pub last_applied: Option<typ::LogId>,
}

/// `Membership`: a committed membership, sent both ways (see
/// [`super::removal`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MembershipExchange {
    /// The sender's latest committed membership.
    pub committed: typ::StoredMembership,
}

/// Why a node refused one of kstash's cluster RPCs; travels back inside
/// the reply envelope. Messages never hold secrets.
#[derive(Debug, Clone, Error, Serialize, Deserialize, PartialEq, Eq)]
pub enum ClusterError {
    /// This node does not lead; try the leader, if it knows one.
    #[error("not the leader (leader: {})", leader_hint(leader_id, leader))]
    NotLeader {
        /// The leader's id, if known.
        leader_id: Option<typ::NodeId>,
        /// How to reach the leader, if known.
        leader: Option<NodeInfo>,
    },
    /// A forwarded request ran out of hops (the nodes disagree about the
    /// leader, e.g. during an election).
    #[error("forwarding hop budget spent")]
    HopsExhausted,
    /// The node is sealed and the RPC needs it unsealed.
    #[error("sealed")]
    Sealed,
    /// The cluster is not initialised.
    #[error("not initialised")]
    NotInitialized,
    /// The node refused the request itself (e.g. a wrong unseal key).
    #[error("refused: {0}")]
    Refused(String),
    /// Try again later (e.g. no quorum, shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node failed.
    #[error("internal error: {0}")]
    Internal(String),
}

fn leader_hint(id: &Option<typ::NodeId>, node: &Option<NodeInfo>) -> String {
    match (id, node) {
        (Some(id), Some(node)) => format!("{id} at {}", node.cluster_addr),
        (Some(id), None) => id.to_string(),
        _ => "unknown".into(),
    }
}

impl ClusterError {
    /// Whether the same request may succeed if sent again (possibly to the
    /// leader named in `NotLeader`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::NotLeader { .. }
                | ClusterError::HopsExhausted
                | ClusterError::Unavailable(_)
        )
    }
}

// ----- the handler the node layer implements ----------------------------------

/// The future a [`ClusterHandler`] method returns.
pub type HandlerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ClusterError>> + Send + 'a>>;

/// kstash's own cluster RPCs, as served by the node layer. The transport
/// decodes and bounds the requests, enforces the hop budget, and encodes
/// the outcome; a method only does the work.
pub trait ClusterHandler: Send + Sync + 'static {
    /// Propose `request.request` if this node leads; else pass it on with
    /// `request.hops` (the budget left after this hop; 0 = may not pass it
    /// on) or answer [`ClusterError::NotLeader`].
    fn forward(&self, request: ForwardRequest) -> HandlerFuture<'_, ForwardReply>;
    /// Confirm leadership and return the read index.
    fn read_index(&self) -> HandlerFuture<'_, ReadIndexReply>;
    /// Add a node as a learner (and later promote it).
    fn join(&self, request: JoinRequest) -> HandlerFuture<'_, JoinReply>;
    /// Open this node's barrier with one secret a peer passed on. Must not
    /// pass it on again.
    fn unseal(&self, request: UnsealRequest) -> HandlerFuture<'_, UnsealReply>;
    /// This node's status.
    fn peer_status(&self) -> HandlerFuture<'_, PeerStatus>;
    /// Check a peer's committed membership against this node's log (was
    /// this node removed?) and answer with this node's own.
    fn membership(&self, request: MembershipExchange) -> HandlerFuture<'_, MembershipExchange>;
}

// ----- the tonic service ------------------------------------------------------

/// The `kstash.cluster.v1.Cluster` service of one node.
#[derive(Clone)]
pub struct ClusterService {
    raft: typ::Raft,
    handler: Arc<dyn ClusterHandler>,
}

impl std::fmt::Debug for ClusterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterService")
    }
}

impl ClusterService {
    /// Serve `raft`'s RPCs and `handler`'s.
    pub fn new(raft: typ::Raft, handler: Arc<dyn ClusterHandler>) -> Self {
        ClusterService { raft, handler }
    }

    /// The tonic server, with the cluster port's message limits.
    pub fn into_server(self) -> pb::cluster_server::ClusterServer<Self> {
        pb::cluster_server::ClusterServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

impl ClusterService {
    /// One forwarded request: spend a hop, then hand it to the handler.
    async fn forward_one(&self, mut forward: ForwardRequest) -> Result<ForwardReply, ClusterError> {
        match forward.hops.checked_sub(1) {
            None => Err(ClusterError::HopsExhausted),
            Some(left) => {
                forward.hops = left;
                self.handler.forward(forward).await
            }
        }
    }
}

/// Encode an outcome as the reply envelope.
fn reply<T: Serialize>(outcome: &T) -> Result<GrpcResponse<pb::Envelope>, Status> {
    match encode(outcome) {
        Ok(envelope) => Ok(GrpcResponse::new(envelope)),
        Err(e) => {
            tracing::warn!(error = %e, "cluster reply not sent");
            Err(Status::internal(format!("reply not sent: {e}")))
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    #[tracing::instrument(level = "trace", skip_all)]
    async fn append_entries(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let rpc: typ::AppendEntriesRequest = decode(request.get_ref())?;
        reply(&self.raft.append_entries(rpc).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn vote(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let rpc: typ::VoteRequest = decode(request.get_ref())?;
        reply(&self.raft.vote(rpc).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn install_snapshot(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let rpc: typ::InstallSnapshotRequest = decode(request.get_ref())?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn forward(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let forward: ForwardRequest = decode(request.get_ref())?;
        reply(&self.forward_one(forward).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn forward_batch(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let batch: Vec<ForwardRequest> = decode(request.get_ref())?;
        if batch.len() > MAX_FORWARD_BATCH {
            return Err(Status::resource_exhausted(format!(
                "{} forwarded requests in one call; at most {MAX_FORWARD_BATCH}",
                batch.len()
            )));
        }
        // All at once: the leader's proposer puts the requests that wait
        // together into one log entry.
        let outcomes = join_all(batch.into_iter().map(|f| self.forward_one(f))).await;
        reply(&Ok::<_, ClusterError>(outcomes))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn read_index(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        decode::<()>(request.get_ref())?;
        reply(&self.handler.read_index().await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn join(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let join: JoinRequest = decode(request.get_ref())?;
        tracing::info!(node_id = join.node_id, node = %join.node, "join requested");
        reply(&self.handler.join(join).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn unseal(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let mut envelope = request.into_inner();
        let decoded = decode::<UnsealRequest>(&envelope);
        // Best effort: the transport's own buffers are out of reach.
        envelope.payload.zeroize();
        reply(&self.handler.unseal(decoded?).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn peer_status(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        decode::<()>(request.get_ref())?;
        reply(&self.handler.peer_status().await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn membership(
        &self,
        request: GrpcRequest<pb::Envelope>,
    ) -> Result<GrpcResponse<pb::Envelope>, Status> {
        let exchange: MembershipExchange = decode(request.get_ref())?;
        reply(&self.handler.membership(exchange).await)
    }
}

// ----- serving ----------------------------------------------------------------

/// Why the cluster port could not be served.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("binding the cluster port {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// TLS setup or the server itself failed.
    #[error("cluster port: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Bind `addr` and serve the cluster port over mutual TLS until `shutdown`
/// completes; in-flight RPCs are then allowed to finish.
pub async fn serve(
    addr: SocketAddr,
    tls: &ClusterTls,
    raft: typ::Raft,
    handler: Arc<dyn ClusterHandler>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(listener, tls, ClusterService::new(raft, handler), shutdown).await
}

/// [`serve`] on a listener the caller bound (e.g. to port 0 in tests),
/// with at most [`CLUSTER_MAX_CONNECTIONS`] connections.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    tls: &ClusterTls,
    service: ClusterService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_capped(listener, tls, service, shutdown, CLUSTER_MAX_CONNECTIONS).await
}

/// [`serve_on`] with at most `max_connections` connections open at once
/// (TLS handshakes included); one more is closed as soon as it is
/// accepted. Accept errors (`EMFILE`, …) pause accepting for
/// [`ACCEPT_BACKOFF`] instead of spinning.
pub async fn serve_capped(
    listener: tokio::net::TcpListener,
    tls: &ClusterTls,
    service: ClusterService,
    shutdown: impl Future<Output = ()> + Send,
    max_connections: usize,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())?
        .timeout(SERVER_REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(capped_incoming(listener, max_connections), shutdown)
        .await?;
    Ok(())
}

/// How long the cluster port stops accepting after an accept error.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepted connections, each holding a slot of `max` until it closes;
/// one accepted over the cap is dropped at once. tonic skips accept
/// errors without a pause, so this stream never yields one: it logs it
/// and waits [`ACCEPT_BACKOFF`].
fn capped_incoming(
    listener: tokio::net::TcpListener,
    max: usize,
) -> impl futures_util::Stream<Item = std::io::Result<Capped>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!("cluster port: {max} connections open; closing a new one");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let capped = Capped {
                        inner: stream,
                        _slot: slot,
                    };
                    return Some((Ok(capped), (listener, slots)));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cluster port: accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

/// A cluster-port connection holding its slot under the cap.
struct Capped {
    inner: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = <tokio::net::TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl tokio::io::AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::{Command, Rejection};

    #[test]
    fn envelopes_round_trip_and_are_bounded() {
        let req = ForwardRequest {
            hops: 3,
            request: Request {
                time_ms: 7,
                idempotency: None,
                command: Command::Sweep,
            },
        };
        let env = encode(&req).unwrap();
        assert_eq!(env.payload[0], FORMAT_V1);
        let back: ForwardRequest = decode(&env).unwrap();
        assert_eq!((back.hops, back.request.time_ms), (3, 7));

        let outcome: Result<ForwardReply, ClusterError> = Err(ClusterError::NotLeader {
            leader_id: Some(2),
            leader: Some(NodeInfo {
                api_addr: "a:1".into(),
                cluster_addr: "c:2".into(),
                ..Default::default()
            }),
        });
        let back: Result<ForwardReply, ClusterError> = decode(&encode(&outcome).unwrap()).unwrap();
        assert_eq!(back, outcome);
        let ok: Result<ForwardReply, ClusterError> = Ok(ForwardReply {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 5),
            response: Err(Rejection::NotFound),
        });
        assert_eq!(
            decode::<Result<_, ClusterError>>(&encode(&ok).unwrap()).unwrap(),
            ok
        );

        let mut trailing = encode(&()).unwrap();
        trailing.payload.push(0);
        assert!(matches!(
            decode::<()>(&trailing),
            Err(WireError::Malformed(_))
        ));
        let future = pb::Envelope {
            payload: vec![2, 0],
        };
        assert!(matches!(
            decode::<()>(&future),
            Err(WireError::Malformed(_))
        ));
        let huge = pb::Envelope {
            payload: vec![FORMAT_V1; MAX_ENVELOPE_BYTES + 1],
        };
        assert!(matches!(
            decode::<()>(&huge),
            Err(WireError::TooLarge { .. })
        ));
        let big = vec![0u8; MAX_ENVELOPE_BYTES];
        assert!(matches!(encode(&big), Err(WireError::TooLarge { .. })));
    }

    #[test]
    fn secrets_do_not_print() {
        let req = UnsealRequest::Key(SecretString::new("ksg_secret".into()));
        assert!(!format!("{req:?}").contains("secret"));
        let env = encode(&req).unwrap();
        assert!(!format!("{env:?}").contains("secret"));
    }
}
