//! A replica: this node's openraft instance, its log store and state
//! machine, the one `propose` every mutation goes through, and the
//! membership work of a cluster node (join, promotion).
//!
//! Invariants:
//! - The leader stamps the time into each request just before
//!   `client_write`, so apply never reads a clock. A follower forwards the
//!   command to the leader over the cluster port (forwards waiting at once
//!   share one `ForwardBatch` call, `forwarder.rs`); the leader stamps it
//!   with its own clock.
//! - A proposal is acknowledged only after openraft reports it committed and
//!   applied on the leader; a forwarded one also waits (bounded) until this
//!   node has applied it (read-your-writes on the node the client talks to).
//! - A forwarded proposal is retried only when it surely was not applied
//!   ([`super::forwarder::surely_not_logged`]): the peer was never reached,
//!   or it answered "not the leader" (openraft answers that only before
//!   appending, or after truncating the entry). A call that broke or timed
//!   out after sending is [`ProposeError::OutcomeUnknown`], never retried
//!   (unless it carries an idempotency key: a repeat is answered, not
//!   applied; if the wait then runs out, the outcome is still unknown).
//! - A linearizable read on a follower gets a read index from the leader
//!   (which confirms its leadership with a quorum) and waits until this
//!   node has applied up to it. Reads waiting at the same time share one
//!   confirmation (on the leader) and one `ReadIndex` call (on a follower),
//!   but only one that started after they came (`read_rounds.rs`).
//! - Every wait is bounded (`ReplicaConfig::leader_wait`); running out is
//!   [`ProposeError::NotSent`] when no attempt may have entered the log,
//!   else [`ProposeError::OutcomeUnknown`] (both HTTP 503, with distinct
//!   codes).
//! - Invariant 6 ([`Replica::run_election_guard`]): an initialised but
//!   sealed node keeps openraft's elections off while a leader exists or
//!   was seen recently; a sealed leader stops its heartbeats once an
//!   unsealed voter answers, so that voter takes over.
//! - A removed node ([`super::removal`]) stays out: it never campaigns
//!   (elections off, also after a restart), never asks to join, and its
//!   membership view is the cluster's membership that removed it. It learns
//!   of its removal from its own committed log, from the leader that removed
//!   it ([`Replica::remove_member`] tells it), or by asking its peers once
//!   its leader fell silent ([`Replica::run_membership_watch`]).
//! - The data dir holds a `node-id` file made at first start
//!   ([`NodeIdentity`]): a later start with another node id is refused, and
//!   its random incarnation travels in [`NodeInfo`] so the leader can refuse
//!   a node that lost its data dir and tries to rejoin under its old id.

// openraft's `StorageError` is the error type its traits require.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::ChangeMembers;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::time::Instant;

use super::cluster::{
    ClusterError, ForwardReply, ForwardRequest, JoinReply, JoinRequest, MembershipExchange,
    PeerStatus, ReadIndexReply,
};
use super::forwarder::surely_not_logged;
use super::forwarder::Forwarder;
use super::log_store::LogStore;
use super::network::{Network, PeerClient, PeerError};
use super::proposer::{LocalWrite, Proposer};
use super::read_rounds::Rounds;
use super::removal::{judge, Removal};
use super::state_machine::{ApplyHook, SnapshotLabels, StateMachineStore};
use super::types::{typ, NodeInfo, TypeConfig};
use super::{OutcomeUnknown, ProposeError};
use crate::clock::Clock;
use crate::state::command::{Applied, Command, Idempotency, Request};
use crate::state::State;
use crate::storage::Backend;

/// How many times a follower follows "not the leader, try node N" answers
/// for one proposal or read before it waits for its own view of the leader.
/// Also the hop budget it puts into each `Forward`.
pub const FORWARD_HOPS: u8 = 3;

/// A learner is promoted to voter once its replicated log is at most this
/// many entries behind the leader's last log entry.
pub const PROMOTE_MAX_LAG: u64 = 100;

/// Pause between attempts while no leader is known or reachable.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How many times the leader tries to tell a node it removed (one try
/// every [`NOTICE_PAUSE`], each bounded by the RPC timeout).
pub const NOTICE_TRIES: u32 = 10;

/// Pause between the leader's tries to tell a removed node.
pub const NOTICE_PAUSE: Duration = Duration::from_millis(500);

/// Name of the identity file in the data dir.
pub const NODE_ID_FILE: &str = "node-id";

// ----- identity -----------------------------------------------------------------

/// Who this data dir belongs to, from its `node-id` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node id the data dir was first started with.
    pub node_id: typ::NodeId,
    /// A random non-zero number made at that first start; a wiped or
    /// replaced data dir gets a new one.
    pub incarnation: u64,
}

/// The `node-id` file (TOML). The incarnation is 16 hex digits: TOML
/// integers stop at 2^63.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    node_id: typ::NodeId,
    incarnation: String,
}

impl NodeIdentity {
    /// Read `data_dir/node-id`, or make it on a first start (temp file,
    /// fsync, rename, fsync dir). Refuses a data dir made for another node
    /// id. Returns the identity and whether it was made now.
    pub fn open(
        data_dir: &Path,
        node_id: typ::NodeId,
    ) -> Result<(NodeIdentity, bool), ReplicaError> {
        let path = data_dir.join(NODE_ID_FILE);
        let bad = |reason: String| ReplicaError::Identity(format!("{}: {reason}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: IdentityFile =
                    toml::from_str(&text).map_err(|e| bad(format!("unreadable: {e}")))?;
                let found = NodeIdentity {
                    node_id: file.node_id,
                    incarnation: u64::from_str_radix(&file.incarnation, 16)
                        .ok()
                        .filter(|i| *i != 0 && file.incarnation.len() == 16)
                        .ok_or_else(
                            || bad("unreadable: incarnation is not 16 hex digits".into()),
                        )?,
                };
                if found.node_id != node_id {
                    return Err(ReplicaError::Identity(format!(
                        "the data dir {} belongs to node {}, but this node was started as node {node_id}; \
                         start it with --node-id {} or give it its own data dir",
                        data_dir.display(),
                        found.node_id,
                        found.node_id
                    )));
                }
                Ok((found, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = NodeIdentity {
                    node_id,
                    incarnation: rand::rngs::OsRng.next_u64().max(1),
                };
                let text = format!(
                    "# kstash node identity, written at this data dir's first start.\n\
                     # Never edit it or copy it to another node.\n{}",
                    toml::to_string(&IdentityFile {
                        node_id,
                        incarnation: format!("{:016x}", identity.incarnation),
                    })
                    .map_err(|e| bad(e.to_string()))?
                );
                crate::data_dir::write_durably(data_dir, NODE_ID_FILE, text.as_bytes())
                    .map_err(|e| bad(format!("cannot write: {e}")))?;
                tracing::info!(node_id, "new data dir: node identity written");
                Ok((identity, true))
            }
            Err(e) => Err(bad(e.to_string())),
        }
    }
}

// ----- configuration ------------------------------------------------------------

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
    /// The longest a proposal or read waits for a leader to be known and
    /// reachable, for the leader to confirm a read, or for this node to
    /// apply what the leader committed.
    pub leader_wait: Duration,
}

impl ReplicaConfig {
    /// A single-node configuration with openraft's usual timings.
    pub fn single(node_id: typ::NodeId, api_addr: String, data_dir: PathBuf) -> Self {
        ReplicaConfig {
            node_id,
            node: NodeInfo {
                api_addr,
                ..Default::default()
            },
            data_dir,
            election_timeout_ms: (150, 300),
            heartbeat_ms: 50,
            snapshot_logs: 10_000,
            leader_wait: Duration::from_secs(5),
        }
    }
}

/// Why a replica could not start, or a membership step failed.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The log store or state machine could not be opened.
    #[error("opening the node's storage: {0}")]
    Storage(#[from] typ::StorageError),
    /// openraft refused the configuration or failed to start.
    #[error("starting raft: {0}")]
    Raft(String),
    /// The data dir's `node-id` file is missing, unreadable or names
    /// another node, or its `removed` record is unreadable.
    #[error("node identity: {0}")]
    Identity(String),
}

/// Why a join attempt did not succeed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The cluster refused this node; trying again will not help (e.g. its
    /// id is a member with another data dir).
    #[error("join refused: {0}")]
    Refused(String),
    /// No peer accepted this time (unreachable, no leader, busy); retry.
    #[error("join not accepted yet: {0}")]
    Unavailable(String),
}

/// Why an operator's call on the cluster ([`Replica::remove_node`],
/// [`Replica::save_snapshot`]) failed, in kstash's terms: callers outside
/// `src/raft/` never see an openraft error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RaftAdminError {
    /// The node id is not a member of this node's view of the membership.
    #[error("node {0} is not a member")]
    NotMember(typ::NodeId),
    /// Removing it would leave the cluster with no voter.
    #[error("node {0} is the last voter; a cluster cannot remove its last voter")]
    LastVoter(typ::NodeId),
    /// openraft could not do it now (not the leader any more, no quorum,
    /// shutting down, a snapshot not built in time); the message says which.
    #[error("{0}")]
    Unavailable(String),
}

/// One member of the cluster with what this node knows of it, for the
/// operator's `raft peers` view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The member: id, addresses, voter or learner.
    pub member: Member,
    /// Whether it leads, as [`Replica::raft_status`] reports the leader.
    pub leader: bool,
    /// Highest log index known to match the leader's log (known on the
    /// leader only).
    pub matched_index: Option<u64>,
}

/// One member of the cluster, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its node id.
    pub id: typ::NodeId,
    /// How it is reached.
    pub node: NodeInfo,
    /// Voter (true) or learner (false).
    pub voter: bool,
}

/// This node's view of Raft, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<typ::NodeId>,
    /// The last log id applied here.
    pub last_applied: Option<typ::LogId>,
}

/// This node's view of Raft as numbers, for `/metrics` (read at scrape
/// time; openraft's own types stay inside `src/raft/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationFigures {
    /// Whether this node knows a leader (as status reports it: not its own
    /// claim before a quorum acknowledged it).
    pub has_leader: bool,
    /// Whether that leader is this node.
    pub is_leader: bool,
    /// Current term.
    pub term: u64,
    /// The highest log index this node knows to be committed: refreshed
    /// every [`COMMIT_REFRESH`], never below `applied_index`.
    pub commit_index: u64,
    /// The index of the last log entry applied here.
    pub applied_index: u64,
}

/// How often the commit index of [`ReplicationFigures`] is read from
/// openraft (its metrics do not carry it; one request to the Raft core).
pub const COMMIT_REFRESH: Duration = Duration::from_secs(1);

/// The counters and histograms replication feeds as it works, for
/// `/metrics` (`api::metrics` registers them). Cloning shares them.
#[derive(Clone, Debug)]
pub struct ReplicationMeters {
    /// Times this node saw a new leader (the first one included).
    pub leader_changes: Counter,
    /// Proposals of this node ([`Replica::propose`], local or forwarded)
    /// that were committed: applied, or refused by apply.
    pub proposals_committed: Counter,
    /// Proposals of this node that failed: not committed, or with an
    /// unknown outcome.
    pub proposals_failed: Counter,
    /// Proposals of this node waiting for their outcome now.
    pub proposals_pending: Gauge,
    /// Time to apply one log entry (`LogStore` → state machine).
    pub apply_seconds: Histogram,
    /// Time of one durability barrier of the Raft log (sled flush, then
    /// `fdatasync`).
    pub log_flush_seconds: Histogram,
    /// Snapshots built or installed here, by kind.
    pub snapshots: Family<SnapshotLabels, Counter>,
}

/// Counts a proposal as pending while it lives (also when its caller
/// stops waiting).
struct Pending<'a>(&'a Gauge);

impl<'a> Pending<'a> {
    fn start(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Pending(gauge)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Count leader changes as openraft reports them, and read the commit index
/// every [`COMMIT_REFRESH`], until the Raft core stops or the replica is
/// dropped.
async fn watch_figures(
    replica: std::sync::Weak<Replica>,
    mut metrics: tokio::sync::watch::Receiver<typ::RaftMetrics>,
    leader_changes: Counter,
    committed: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut tick = tokio::time::interval(COMMIT_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_leader = None;
    loop {
        let leader = metrics.borrow_and_update().current_leader;
        if leader.is_some() && leader != last_leader {
            leader_changes.inc();
            last_leader = leader;
        }
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                // Stopped: asking now would only log openraft's error.
                if metrics.has_changed().is_err() {
                    return;
                }
                let Some(replica) = replica.upgrade() else {
                    return;
                };
                let read = replica
                    .raft
                    .with_raft_state(|s| s.committed.map_or(0, |l| l.index))
                    .await;
                match read {
                    Ok(index) => committed.store(index, std::sync::atomic::Ordering::Relaxed),
                    Err(_) => return,
                }
            }
        }
    }
}

/// A try in flight, as [`Replica::at_leader`] runs it.
type Attempt<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Try<T>> + Send + 'a>>;

/// One try at an operation run where the leader is ([`Replica::at_leader`]).
enum Try<T> {
    /// Finished: the answer, or an error that trying again cannot fix.
    Done(Result<T, ProposeError>),
    /// Not done (`why`, for the error if time runs out); `to`: the leader
    /// to try next, when known. Nothing entered the log.
    Again {
        why: String,
        to: Option<(typ::NodeId, NodeInfo)>,
    },
    /// Not done, and the attempt may have entered the log (its answer was
    /// lost); tried again only because a repeat is answered, not applied
    /// (an idempotency key). If time runs out, the outcome is unknown.
    Resend { why: String },
}

/// One leadership confirmation on this node ([`Replica::read_round`]).
#[derive(Clone, Debug)]
enum ReadRound {
    /// Confirmed by a quorum: a read must see this log id applied.
    Confirmed(Option<typ::LogId>),
    /// Not the leader; the leader it knows of.
    NotLeader(Option<(typ::NodeId, NodeInfo)>),
    /// Not confirmed (no quorum answered in time, or openraft failed).
    Failed(String),
}

/// The leader a peer's "not leader" answer names, when it is another node
/// and the redirect budget allows following it.
fn redirect(e: &PeerError, peer: &PeerClient, redirects: u8) -> Option<(typ::NodeId, NodeInfo)> {
    match e.remote() {
        Some(ClusterError::NotLeader {
            leader_id: Some(l),
            leader: Some(info),
        }) if Some(*l) != peer.id() && redirects < FORWARD_HOPS => Some((*l, info.clone())),
        _ => None,
    }
}

pub(super) fn hint_of(
    f: ForwardToLeader<typ::NodeId, NodeInfo>,
) -> Option<(typ::NodeId, NodeInfo)> {
    f.leader_id.zip(f.leader_node)
}

// ----- the replica --------------------------------------------------------------

/// This node's replica.
pub struct Replica {
    id: typ::NodeId,
    node: NodeInfo,
    raft: typ::Raft,
    state: State,
    clock: Arc<dyn Clock>,
    /// The cluster network, for kstash's own RPCs; `None` on a node that
    /// never has peers.
    peers: Option<Network>,
    leader_wait: Duration,
    /// The batching queue in front of `client_write`.
    proposer: Proposer,
    /// The batching queue in front of `Forward` calls to the leader.
    forwarder: Forwarder,
    /// Leadership confirmations for linearizable reads, shared by the
    /// reads (local or a follower's `ReadIndex`) that wait at once.
    read_rounds: Rounds<ReadRound>,
    /// A follower's `ReadIndex` calls to the leader, shared the same way.
    remote_read_rounds: Rounds<Result<ReadIndexReply, Arc<PeerError>>>,
    /// Serialises membership changes made by this node (joins, promotions).
    membership_lock: tokio::sync::Mutex<()>,
    /// The longest election timeout, in milliseconds (the election guard's
    /// unit of "no leader for a while").
    election_timeout_max_ms: u64,
    /// The data dir (for the removal record).
    data_dir: PathBuf,
    /// Set once this node learned it was removed; never cleared.
    removal: std::sync::Mutex<Option<Removal>>,
    /// The latest log id of a committed membership that held this node.
    included: std::sync::Mutex<Option<typ::LogId>>,
    /// What replication counts, for `/metrics`.
    meters: ReplicationMeters,
    /// The commit index as last read ([`COMMIT_REFRESH`]).
    committed: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replica({}, {:?})", self.id, self.state)
    }
}

impl Replica {
    /// Open the log store and state machine under `config.data_dir`, and
    /// start openraft with `network`. kstash's own RPCs (forwarding, read
    /// index, join) are not available: use this for a node that never has
    /// peers ([`NoPeers`]) or for tests of openraft alone.
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
        Self::start_inner(config, backend, clock, network, None, hook).await
    }

    /// [`Replica::start`] for a cluster node: openraft and kstash's own
    /// RPCs both use `network`.
    pub async fn start_clustered(
        config: ReplicaConfig,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        network: Network,
        hook: Option<ApplyHook>,
    ) -> Result<Arc<Replica>, ReplicaError> {
        let peers = Some(network.clone());
        Self::start_inner(config, backend, clock, network, peers, hook).await
    }

    async fn start_inner<N>(
        config: ReplicaConfig,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        network: N,
        peers: Option<Network>,
        hook: Option<ApplyHook>,
    ) -> Result<Arc<Replica>, ReplicaError>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let removal = Removal::load(&config.data_dir).map_err(ReplicaError::Identity)?;
        if let Some(removal) = &removal {
            tracing::warn!(node_id = config.node_id, "{removal}");
        }
        let log = LogStore::open(&config.data_dir.join("raft-log"))?;
        let state = State::new(backend);
        let mut sm = StateMachineStore::open(state.clone(), &config.data_dir.join("snapshots"))?;
        let meters = ReplicationMeters {
            leader_changes: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            proposals_pending: Gauge::default(),
            apply_seconds: sm.apply_seconds(),
            log_flush_seconds: log.flush_seconds(),
            snapshots: sm.snapshots(),
        };
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
            // A removed node never campaigns.
            enable_elect: removal.is_none(),
            ..Default::default()
        }
        .validate()
        .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let raft = typ::Raft::new(config.node_id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        let proposer = Proposer::start(raft.clone(), clock.clone(), config.leader_wait);
        let raft_metrics = raft.metrics();
        let replica = Arc::new(Replica {
            id: config.node_id,
            node: config.node,
            raft,
            state,
            clock,
            proposer,
            forwarder: Forwarder::start(),
            read_rounds: Rounds::default(),
            remote_read_rounds: Rounds::default(),
            peers,
            leader_wait: config.leader_wait,
            membership_lock: tokio::sync::Mutex::new(()),
            election_timeout_max_ms: config.election_timeout_ms.1,
            data_dir: config.data_dir,
            removal: std::sync::Mutex::new(removal),
            included: std::sync::Mutex::new(None),
            meters,
            committed: Arc::default(),
        });
        tokio::spawn(watch_figures(
            Arc::downgrade(&replica),
            raft_metrics,
            replica.meters.leader_changes.clone(),
            replica.committed.clone(),
        ));
        Ok(replica)
    }

    /// Make this node a one-member cluster if it has never been part of
    /// one, and wait (bounded) until it leads and has applied the first
    /// entry of its term (so nothing is left to apply in the background).
    pub async fn bootstrap_single(&self, wait: Duration) -> Result<(), ReplicaError> {
        self.bootstrap().await?;
        let id = self.id;
        self.raft
            .wait(Some(wait))
            .metrics(
                |m| {
                    m.current_leader == Some(id)
                        && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term)
                },
                "single node leads and applied its term's first entry",
            )
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        Ok(())
    }

    /// Make this node a one-member cluster if it has never been part of
    /// one (`--bootstrap`); others join it later. Returns whether it did.
    pub async fn bootstrap(&self) -> Result<bool, ReplicaError> {
        if self.is_initialized().await? {
            return Ok(false);
        }
        let members = BTreeMap::from([(self.id, self.node.clone())]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))?;
        tracing::info!(node_id = self.id, "bootstrapped a new cluster");
        Ok(true)
    }

    /// Whether this node holds any Raft state (a vote or a log): it has
    /// been bootstrapped, or contacted by a leader.
    pub async fn is_initialized(&self) -> Result<bool, ReplicaError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| ReplicaError::Raft(e.to_string()))
    }

    /// The replicated state, for reads.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// openraft's handle.
    pub fn raft(&self) -> &typ::Raft {
        &self.raft
    }

    /// The cluster port's service over this replica: openraft's RPCs and
    /// `handler`'s (the handle on openraft stays inside `src/raft/`).
    pub fn cluster_service(
        &self,
        handler: Arc<dyn super::cluster::ClusterHandler>,
    ) -> super::cluster::ClusterService {
        super::cluster::ClusterService::new(self.raft.clone(), handler)
    }

    /// Wait up to `wait` for this node to appear in the membership (after
    /// a leader admitted it); whether it did.
    pub async fn wait_member(&self, wait: Duration) -> bool {
        let id = self.id;
        self.raft
            .wait(Some(wait))
            .metrics(
                |m| m.membership_config.membership().get_node(&id).is_some(),
                "this node is in the membership",
            )
            .await
            .is_ok()
    }

    /// Call `on_change` with the leader this node knows (`None`: none)
    /// each time it changes, the current one first, until the replica
    /// shuts down.
    pub async fn watch_leader(&self, mut on_change: impl FnMut(Option<typ::NodeId>)) {
        let mut server = self.raft.server_metrics();
        let mut seen = None;
        loop {
            let leader = server.borrow_and_update().current_leader;
            if seen != Some(leader) {
                on_change(leader);
                seen = Some(leader);
            }
            if server.changed().await.is_err() {
                return;
            }
        }
    }

    /// This node's id.
    pub fn id(&self) -> typ::NodeId {
        self.id
    }

    /// How peers reach this node.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Whether this node currently leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// The leader in `m` as status reports it: without this node's own claim
    /// before a quorum has acknowledged it. A node restarted after leading
    /// restores its old leadership from its vote (openraft 0.9) and keeps it
    /// until a peer answers with a newer term; meanwhile it can commit
    /// nothing and must not be reported as the leader. Routing uses the raw
    /// claim (a write there fails over on `ForwardToLeader`): the metric is
    /// not a live age, and filtering on it made a real leader refuse joins
    /// until its next metrics report. (A leader cut off later
    /// keeps its claim until it hears of a newer term: openraft's
    /// `millis_since_quorum_ack` is a value from its last metrics report, not
    /// a live age, so it cannot tell a stale lease from a quiet one.)
    fn leader_in(&self, m: &typ::RaftMetrics) -> Option<typ::NodeId> {
        match m.current_leader {
            Some(id) if id == self.id && m.millis_since_quorum_ack.is_none() => None,
            other => other,
        }
    }

    /// The leader this node knows of, with its address if it is a member.
    pub fn leader(&self) -> Option<(typ::NodeId, NodeInfo)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Every member of the (latest, possibly uncommitted) membership; on a
    /// removed node, the members of the membership that removed it.
    pub fn members(&self) -> Vec<Member> {
        if let Some(removal) = self.removal() {
            return removal.members;
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<_> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                node: node.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// Whether this node is a voter in its own view of the membership
    /// (never once it was removed).
    pub fn is_voter(&self) -> bool {
        if self.removal().is_some() {
            return false;
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        voter
    }

    /// Whether this node is in its own view of the membership at all
    /// (never once it was removed).
    pub fn is_member(&self) -> bool {
        if self.removal().is_some() {
            return false;
        }
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let member = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        member
    }

    /// Term, leader and last applied log id.
    pub fn raft_status(&self) -> RaftStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        RaftStatus {
            term: m.current_term,
            leader: self.leader_in(&m),
            last_applied: m.last_applied,
        }
    }

    /// Term, leader, commit and applied index as numbers, for `/metrics`.
    pub fn figures(&self) -> ReplicationFigures {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = self.leader_in(&m);
        let applied_index = m.last_applied.map_or(0, |l| l.index);
        let committed = self.committed.load(std::sync::atomic::Ordering::Relaxed);
        ReplicationFigures {
            has_leader: leader.is_some(),
            is_leader: leader == Some(self.id),
            term: m.current_term,
            commit_index: committed.max(applied_index),
            applied_index,
        }
    }

    /// What replication counts (proposals, leader changes, apply and log
    /// flush latency, snapshots), for `/metrics`.
    pub fn meters(&self) -> &ReplicationMeters {
        &self.meters
    }

    fn not_leader(&self) -> ClusterError {
        let leader = self.leader().filter(|(id, _)| *id != self.id);
        ClusterError::NotLeader {
            leader_id: leader.as_ref().map(|(id, _)| *id),
            leader: leader.map(|(_, node)| node),
        }
    }

    // ----- proposals and reads, from any node -----------------------------------

    /// Stamp `command` with the leader's time, replicate and apply it;
    /// returns what apply produced. On a follower the command is forwarded
    /// to the leader, and the call returns once this node has applied it
    /// too (or `leader_wait` passed).
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        self.propose_with(command, None).await
    }

    /// [`Self::propose`] with the client's idempotency key. With a key, a
    /// forward whose fate is unknown (the connection broke after sending)
    /// is sent again until the deadline: apply answers a repeated key with
    /// the first outcome, so the command is applied once.
    pub async fn propose_with(
        &self,
        command: Command,
        idempotency: Option<Idempotency>,
    ) -> Result<Applied, ProposeError> {
        let _pending = Pending::start(&self.meters.proposals_pending);
        let (command, idempotency) = (&command, &idempotency);
        let local = |_deadline: Instant| -> Attempt<'_, Applied> {
            Box::pin(async move {
                match self.write_local(command.clone(), idempotency.clone()).await {
                    LocalWrite::Done(_, response) => {
                        Try::Done(response.map_err(|r| ProposeError::Rejected(r.into())))
                    }
                    LocalWrite::NotLeader(hint) => Try::Again {
                        why: format!("node {} lost the leadership", self.id),
                        to: hint,
                    },
                    LocalWrite::NotSent(why) => Try::Done(Err(ProposeError::NotSent(why))),
                    LocalWrite::Unknown(unknown) => Try::Done(Err(unknown.into())),
                }
            })
        };
        let remote = |peer: PeerClient, redirects: u8, deadline: Instant| -> Attempt<'_, Applied> {
            Box::pin(async move {
                let request = ForwardRequest {
                    hops: FORWARD_HOPS.saturating_sub(redirects).max(1),
                    request: Request {
                        time_ms: self.clock.now_ms(),
                        command: command.clone(),
                        idempotency: idempotency.clone(),
                    },
                };
                // Stop waiting when the leader wait ends or another node
                // becomes leader (the one asked may be cut off and never
                // answer): the request's fate is then unknown.
                let forwarded = tokio::select! {
                    r = self.forwarder.forward(peer.clone(), request) => r,
                    why = self.leader_moved_from(peer.id(), deadline) => {
                        let why = format!("forwarding to {}: {why}", peer.addr());
                        return if idempotency.is_some() {
                            Try::Resend { why }
                        } else {
                            Try::Done(Err(OutcomeUnknown::new(why).into()))
                        };
                    }
                };
                match forwarded {
                    Ok(reply) => {
                        self.await_applied(reply.log_id.index, deadline).await;
                        Try::Done(reply.response.map_err(|r| ProposeError::Rejected(r.into())))
                    }
                    Err(e) => {
                        let why = format!("forwarding to {}: {e}", peer.addr());
                        match redirect(&e, &peer, redirects) {
                            Some(to) => Try::Again { why, to: Some(to) },
                            // Never delivered, or refused before the log:
                            // safe to send again.
                            None if surely_not_logged(&e) => Try::Again { why, to: None },
                            // Fate unknown, but a repeat is answered, not applied.
                            None if idempotency.is_some() => Try::Resend { why },
                            None => Try::Done(Err(OutcomeUnknown::new(why).into())),
                        }
                    }
                }
            })
        };
        let result = self
            .at_leader("no leader accepted the write", local, remote)
            .await;
        // Applied or refused by apply: committed either way.
        match &result {
            Ok(_) | Err(ProposeError::Rejected(_)) => self.meters.proposals_committed.inc(),
            Err(_) => self.meters.proposals_failed.inc(),
        };
        result
    }

    /// Resolves (with why) once this node learns of a new leader other than
    /// `asked` (one it did not know of when called), or at `deadline`;
    /// pending otherwise.
    async fn leader_moved_from(&self, asked: Option<typ::NodeId>, deadline: Instant) -> String {
        // The server metrics change only with the vote, role, leader or
        // membership, so the many requests waiting here are not woken by
        // every append and apply.
        let mut server = self.raft.server_metrics();
        let known = server.borrow_and_update().current_leader;
        let moved = tokio::time::timeout_at(
            deadline,
            server.wait_for(|m| {
                m.current_leader.is_some() && m.current_leader != asked && m.current_leader != known
            }),
        )
        .await;
        match moved {
            Ok(Ok(m)) => format!(
                "node {} leads now; no answer came",
                m.current_leader.unwrap_or_default()
            ),
            Ok(Err(_)) => "the node is shutting down".to_string(),
            Err(_) => format!("no answer within {:?}", self.leader_wait),
        }
    }

    /// Run an operation where the leader is: `local` when this node leads,
    /// `remote` (given the leader's client, the redirects followed so far
    /// and the deadline) otherwise. Follows leader hints (at most
    /// [`FORWARD_HOPS`] redirects from peers) and tries again, pausing
    /// while no leader is known, until the leader wait ends; `what` opens
    /// the error then: [`ProposeError::NotSent`], or
    /// [`ProposeError::OutcomeUnknown`] once an attempt may have entered
    /// the log ([`Try::Resend`]).
    async fn at_leader<'a, T>(
        &self,
        what: &str,
        mut local: impl FnMut(Instant) -> Attempt<'a, T>,
        mut remote: impl FnMut(PeerClient, u8, Instant) -> Attempt<'a, T>,
    ) -> Result<T, ProposeError> {
        let deadline = Instant::now() + self.leader_wait;
        let mut hint: Option<(typ::NodeId, NodeInfo)> = None;
        let mut redirects = 0u8;
        let mut last = String::from("no leader is known");
        let mut maybe_logged = false;
        loop {
            let attempt = match hint.take().or_else(|| self.leader()) {
                Some((id, _)) if id == self.id => match local(deadline).await {
                    // This node's own hint never names itself.
                    Try::Again { why, to } => Try::Again {
                        why,
                        to: to.filter(|(l, _)| *l != self.id),
                    },
                    // Only a forward is resent.
                    Try::Resend { why } => Try::Resend { why },
                    done => done,
                },
                Some((id, node)) => {
                    let Some(net) = &self.peers else {
                        return Err(ProposeError::NotSent(format!(
                            "node {} is not the leader (node {id} is) and has no cluster network",
                            self.id
                        )));
                    };
                    let attempt = remote(net.peer(id, &node), redirects, deadline).await;
                    if matches!(attempt, Try::Again { to: Some(_), .. }) {
                        redirects += 1;
                    }
                    attempt
                }
                None => Try::Again {
                    why: last.clone(),
                    to: None,
                },
            };
            match attempt {
                Try::Done(result) => return result,
                Try::Again { why, to } => {
                    last = why;
                    hint = to;
                }
                Try::Resend { why } => {
                    last = why;
                    maybe_logged = true;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let why = format!("{what} within {:?} ({last})", self.leader_wait);
                return Err(if maybe_logged {
                    OutcomeUnknown::new(why).into()
                } else {
                    ProposeError::NotSent(format!("{why}; retry"))
                });
            }
            if hint.is_none() {
                tokio::time::sleep(RETRY_PAUSE.min(deadline - now)).await;
            }
        }
    }

    /// Propose on this node's openraft, through the batching queue (which
    /// stamps the time).
    async fn write_local(&self, command: Command, idempotency: Option<Idempotency>) -> LocalWrite {
        self.proposer.write(command, idempotency).await
    }

    /// Wait until this node has applied `index`, at most until `deadline`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ProposeError> {
        // The data metrics, not `Raft::wait`: that clones the whole metrics
        // and sets a new timer on every change, for every waiting request.
        let mut data = self.raft.data_metrics();
        let applied = |m: &openraft::metrics::RaftDataMetrics<typ::NodeId>| {
            m.last_applied.map_or(0, |l| l.index) >= index
        };
        let started = Instant::now();
        let outcome = match tokio::time::timeout_at(deadline, data.wait_for(applied)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(_)) => "the node is shutting down".to_string(),
            Err(_) => format!("waited {:?}", started.elapsed()),
        };
        let last = data.borrow().last_applied.map_or(0, |l| l.index);
        Err(ProposeError::NotSent(format!(
            "node {} has not applied log index {index} in time ({outcome}; applied {last})",
            self.id
        )))
    }

    /// After a forwarded write: the write is committed whatever happens
    /// here, so running out of time only warns.
    async fn await_applied(&self, index: u64, deadline: Instant) {
        if let Err(e) = self.wait_applied(index, deadline).await {
            tracing::warn!(error = %e, "forwarded write committed, but not yet applied here");
        }
    }

    /// Wait until a read on this node would see every write acknowledged
    /// before the call: ReadIndex through openraft on the leader; on a
    /// follower, the leader's read index, then this node's apply.
    pub async fn linearize(&self) -> Result<(), ProposeError> {
        if cfg!(feature = "test-stale-reads") {
            // The jepsen harness's planted bug (Cargo.toml): no ReadIndex.
            return Ok(());
        }
        let local = |deadline: Instant| -> Attempt<'_, ()> {
            Box::pin(async move {
                // The round is shared; this read still ends at its own
                // deadline (leaving the round to the others).
                let remaining = deadline.saturating_duration_since(Instant::now());
                let round = tokio::time::timeout(remaining, self.read_round())
                    .await
                    .unwrap_or_else(|_| {
                        ReadRound::Failed("the leadership was not confirmed in time".into())
                    });
                match round {
                    ReadRound::Confirmed(read_log_id) => {
                        let index = read_log_id.map_or(0, |l| l.index);
                        Try::Done(self.wait_applied(index, deadline).await)
                    }
                    ReadRound::NotLeader(to) => Try::Again {
                        why: format!("node {} lost the leadership", self.id),
                        to,
                    },
                    // openraft gives the heartbeats behind the check one
                    // heartbeat interval; one slow answer fails it. A read
                    // changes nothing: try again until the deadline.
                    ReadRound::Failed(why) => Try::Again { why, to: None },
                }
            })
        };
        let remote = |peer: PeerClient, redirects: u8, deadline: Instant| -> Attempt<'_, ()> {
            Box::pin(async move {
                // One `ReadIndex` call answers every read on this node that
                // joined before it was sent.
                let asked = peer.clone();
                let answer = self
                    .remote_read_rounds
                    .join(|| async move { asked.read_index().await.map_err(Arc::new) })
                    .await;
                match answer {
                    Ok(reply) => Try::Done(self.wait_applied(reply.index(), deadline).await),
                    Err(e) => {
                        let e = &*e;
                        let why = format!("read index from {}: {e}", peer.addr());
                        match redirect(e, &peer, redirects) {
                            Some(to) => Try::Again { why, to: Some(to) },
                            // A read changes nothing: any retryable failure may be retried.
                            None if e.is_retryable() => Try::Again { why, to: None },
                            None => Try::Done(Err(ProposeError::NotSent(format!(
                                "cannot confirm a linearizable read: {why}"
                            )))),
                        }
                    }
                }
            })
        };
        self.at_leader("cannot confirm a linearizable read", local, remote)
            .await
    }

    // ----- the leader's side of kstash's cluster RPCs ---------------------------

    /// `Forward`: propose a follower's request if this node leads, stamped
    /// with this node's clock; otherwise name the leader. Never passes the
    /// request on.
    pub async fn forwarded(&self, request: ForwardRequest) -> Result<ForwardReply, ClusterError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let request = request.request;
        match self.write_local(request.command, request.idempotency).await {
            LocalWrite::Done(log_id, response) => Ok(ForwardReply { log_id, response }),
            LocalWrite::NotLeader(hint) => Err(ClusterError::NotLeader {
                leader_id: hint.as_ref().map(|(id, _)| *id),
                leader: hint.map(|(_, node)| node),
            }),
            // The follower cannot tell these apart (the cluster wire has no
            // variant for it) and treats both as an unknown outcome.
            LocalWrite::NotSent(why) => Err(ClusterError::Unavailable(why)),
            LocalWrite::Unknown(unknown) => Err(ClusterError::Unavailable(unknown.to_string())),
        }
    }

    /// `ReadIndex`: confirm the leadership with a quorum and return the log
    /// id a follower must apply before reading. (openraft's
    /// `get_read_log_id`, the first half of `ensure_linearizable`; the
    /// second half, waiting for apply, is the follower's.)
    pub async fn read_index(&self) -> Result<ReadIndexReply, ClusterError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        match self.read_round().await {
            ReadRound::Confirmed(read_log_id) => Ok(ReadIndexReply { read_log_id }),
            ReadRound::NotLeader(hint) => Err(ClusterError::NotLeader {
                leader_id: hint.as_ref().map(|(id, _)| *id),
                leader: hint.map(|(_, node)| node),
            }),
            ReadRound::Failed(why) => Err(ClusterError::Unavailable(why)),
        }
    }

    /// Confirm this node's leadership with a quorum and get the read log id,
    /// in a round shared with every read that waits at the same time
    /// (bounded by the leader wait).
    async fn read_round(&self) -> ReadRound {
        self.read_rounds
            .join(|| async {
                match tokio::time::timeout(self.leader_wait, self.raft.get_read_log_id()).await {
                    Ok(Ok((read_log_id, _))) => ReadRound::Confirmed(read_log_id),
                    Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                        ReadRound::NotLeader(hint_of(f))
                    }
                    Ok(Err(e)) => {
                        ReadRound::Failed(format!("cannot confirm a linearizable read: {e}"))
                    }
                    Err(_) => ReadRound::Failed("the leadership was not confirmed in time".into()),
                }
            })
            .await
    }

    /// `Join`: add a node as a learner (it is promoted to voter by
    /// [`Replica::promote_caught_up_learners`] once it has caught up).
    /// Refuses a node id that is a member with another incarnation (its data
    /// dir was wiped or replaced) or at another address, and an address a
    /// different member uses. A member asking again gets `log_id: None`.
    pub async fn admit(&self, join: JoinRequest) -> Result<JoinReply, ClusterError> {
        let _guard = self.membership_lock.lock().await;
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let JoinRequest { node_id, node } = join;
        if node.incarnation == 0 {
            return Err(ClusterError::Refused(format!(
                "node {node_id} sent no incarnation; upgrade it"
            )));
        }
        let members = self.members();
        if let Some(existing) = members.iter().find(|m| m.id == node_id) {
            if existing.node.incarnation != node.incarnation {
                return Err(ClusterError::Refused(format!(
                    "node {node_id} is already a member of this cluster with another data dir \
                     (incarnation {:016x}, the joining node has {:016x}): a node whose data dir was \
                     wiped or replaced must not rejoin under its old id; remove node {node_id} from \
                     the cluster first, or start the node with a new --node-id",
                    existing.node.incarnation, node.incarnation
                )));
            }
            if existing.node.cluster_addr != node.cluster_addr {
                return Err(ClusterError::Refused(format!(
                    "node {node_id} is a member at cluster address {}, not {}",
                    existing.node.cluster_addr, node.cluster_addr
                )));
            }
            tracing::info!(node_id, voter = existing.voter, "join: already a member");
            return Ok(JoinReply { log_id: None });
        }
        if let Some(other) = members
            .iter()
            .find(|m| m.node.cluster_addr == node.cluster_addr)
        {
            return Err(ClusterError::Refused(format!(
                "cluster address {} belongs to member node {}; remove it first",
                node.cluster_addr, other.id
            )));
        }
        let add = self.raft.add_learner(node_id, node, false);
        let Ok(added) = tokio::time::timeout(self.leader_wait, add).await else {
            // It may still commit; the joiner asks again and is then told
            // it is a member.
            return Err(ClusterError::Unavailable(format!(
                "adding node {node_id} was not committed within {:?}",
                self.leader_wait
            )));
        };
        match added {
            Ok(written) => {
                tracing::info!(node_id, log_id = %written.log_id, "join: added as a learner");
                Ok(JoinReply {
                    log_id: Some(written.log_id),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let hint = hint_of(f);
                Err(ClusterError::NotLeader {
                    leader_id: hint.as_ref().map(|(id, _)| *id),
                    leader: hint.map(|(_, node)| node),
                })
            }
            Err(e) => Err(ClusterError::Unavailable(format!(
                "adding node {node_id}: {e}"
            ))),
        }
    }

    /// One promotion pass, on the leader only: every learner whose log is
    /// at most [`PROMOTE_MAX_LAG`] entries behind becomes a voter (one
    /// `change_membership`, joint then uniform). Returns the promoted ids.
    pub async fn promote_caught_up_learners(&self) -> Result<Vec<typ::NodeId>, ReplicaError> {
        let _guard = self.membership_lock.lock().await;
        let ready: BTreeSet<typ::NodeId> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            if m.current_leader != Some(self.id) || membership.get_joint_config().len() > 1 {
                return Ok(Vec::new());
            }
            let last = m.last_log_index.unwrap_or(0);
            let matched = |id: &typ::NodeId| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id).copied().flatten())
                    .map(|l| l.index)
            };
            membership
                .learner_ids()
                .filter(|id| matched(id).is_some_and(|i| i.saturating_add(PROMOTE_MAX_LAG) >= last))
                .collect()
        };
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let change = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(ready.clone()), true);
        match tokio::time::timeout(self.leader_wait.max(Duration::from_secs(10)), change).await {
            Ok(Ok(written)) => {
                tracing::info!(promoted = ?ready, log_id = %written.log_id, "learners promoted to voters");
                Ok(ready.into_iter().collect())
            }
            Ok(Err(e)) => Err(ReplicaError::Raft(format!("promoting {ready:?}: {e}"))),
            Err(_) => Err(ReplicaError::Raft(format!(
                "promoting {ready:?}: not committed in time"
            ))),
        }
    }

    /// Promote caught-up learners every `every`, while this node runs (the
    /// leader-side half of joining; any node may become leader, so every
    /// cluster node runs it).
    pub async fn run_promoter(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.promote_caught_up_learners().await {
                tracing::debug!(error = %e, "promotion failed; will retry");
            }
        }
    }

    // ----- peers and the election guard (invariant 6) ---------------------------

    /// A kstash RPC client for every other member of the membership (none
    /// on a node without a cluster network).
    pub fn peer_clients(&self) -> Vec<(Member, PeerClient)> {
        let Some(net) = &self.peers else {
            return Vec::new();
        };
        self.members()
            .into_iter()
            .filter(|m| m.id != self.id)
            .map(|m| {
                let client = net.peer(m.id, &m.node);
                (m, client)
            })
            .collect()
    }

    /// Ask every other member for its status, concurrently, each bounded by
    /// `timeout`. A peer that did not answer in time carries the reason.
    pub async fn peers_status(
        &self,
        timeout: Duration,
    ) -> Vec<(Member, Result<PeerStatus, String>)> {
        let clients = self.peer_clients();
        let mut calls = tokio::task::JoinSet::new();
        for (i, (_, client)) in clients.iter().cloned().enumerate() {
            calls.spawn(async move {
                let outcome = match tokio::time::timeout(timeout, client.peer_status()).await {
                    Ok(Ok(status)) => Ok(status),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                };
                (i, outcome)
            });
        }
        let mut members: Vec<(Member, Result<PeerStatus, String>)> = clients
            .into_iter()
            .map(|(m, _)| (m, Err("not asked".to_string())))
            .collect();
        while let Some(done) = calls.join_next().await {
            if let Ok((i, outcome)) = done {
                if let Some(slot) = members.get_mut(i) {
                    slot.1 = outcome;
                }
            }
        }
        members
    }

    /// Keep invariant 6 (a sealed node does not lead when an unsealed peer
    /// can) for as long as this node runs. Every `every`:
    /// - `holds_back()` false (not initialised, or unsealed): elections on;
    /// - sealed and some other node leads: elections off;
    /// - sealed and no leader seen for 3 × the longest election timeout
    ///   (e.g. every node restarted and is sealed): elections on, so a
    ///   leader exists to record a gatekeeper token's use; off again once a
    ///   leader is known;
    /// - sealed, leading, and some voter reports itself unsealed: step
    ///   aside. openraft 0.9 has no leadership transfer, so the leader stops
    ///   its heartbeats (`runtime_config().heartbeat(false)`); the
    ///   followers' leases run out, an unsealed voter campaigns (this node
    ///   does not: elections are off) and wins with a higher term.
    ///   Heartbeats come back on once this node no longer leads. Until then
    ///   (about one election timeout) the sealed node still leads: writes it
    ///   replicates keep refreshing the followers, so a steady write load
    ///   delays the hand-over.
    pub async fn run_election_guard(
        self: Arc<Self>,
        holds_back: Arc<dyn Fn() -> bool + Send + Sync>,
        every: Duration,
    ) {
        let no_leader_for = Duration::from_millis(self.election_timeout_max_ms.saturating_mul(3));
        let peer_timeout = Duration::from_millis(self.election_timeout_max_ms.clamp(100, 500));
        let mut elect: Option<bool> = None;
        let mut heartbeat = true;
        let mut leader_seen = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sealed = holds_back();
            let leader = self.raft.metrics().borrow().current_leader;
            let now = Instant::now();
            if leader.is_some() {
                leader_seen = now;
            }
            // A removed node never campaigns.
            let want_elect = self.removal().is_none()
                && (!sealed || (leader.is_none() && now - leader_seen >= no_leader_for));
            if elect != Some(want_elect) {
                tracing::info!(
                    node_id = self.id,
                    sealed,
                    ?leader,
                    campaign = want_elect,
                    "election guard: campaigning {}",
                    if want_elect { "on" } else { "off" }
                );
                self.raft.runtime_config().elect(want_elect);
                elect = Some(want_elect);
            }
            let step_aside =
                sealed
                    && leader == Some(self.id)
                    && self.peers_status(peer_timeout).await.iter().any(|(m, s)| {
                        m.voter && s.as_ref().is_ok_and(|s| s.initialized && !s.sealed)
                    });
            // Once off, heartbeats stay off while this sealed node leads.
            let keep_off = sealed && !heartbeat && leader == Some(self.id);
            let want_heartbeat = !(step_aside || keep_off);
            if want_heartbeat != heartbeat {
                tracing::info!(
                    node_id = self.id,
                    "election guard: heartbeats {} ({})",
                    if want_heartbeat { "on" } else { "off" },
                    if want_heartbeat {
                        "no longer leading"
                    } else {
                        "sealed leader steps aside for an unsealed voter"
                    }
                );
                self.raft.runtime_config().heartbeat(want_heartbeat);
                heartbeat = want_heartbeat;
            }
        }
    }

    // ----- operator calls: peers, removing a member, saving a snapshot ----------

    /// Every member of the cluster as this node sees it ([`Self::members`]),
    /// with the leader marked and, on the leader, each one's matched log
    /// index. Reads Raft's own state only: it writes nothing.
    pub fn peers(&self) -> Vec<PeerView> {
        let leader = self.raft_status().leader;
        let matched: BTreeMap<typ::NodeId, Option<u64>> = self
            .raft
            .metrics()
            .borrow()
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        self.members()
            .into_iter()
            .map(|member| PeerView {
                leader: leader == Some(member.id),
                matched_index: matched.get(&member.id).copied().flatten(),
                member,
            })
            .collect()
    }

    /// Whether [`Self::remove_node`] would accept `node_id` now: it is a
    /// member, and not the last voter. Returns the member. (A caller checks
    /// this before spending a credential on a removal.)
    pub fn check_removable(&self, node_id: typ::NodeId) -> Result<Member, RaftAdminError> {
        let members = self.members();
        let target = members
            .iter()
            .find(|m| m.id == node_id)
            .cloned()
            .ok_or(RaftAdminError::NotMember(node_id))?;
        let voters = members.iter().filter(|m| m.voter).count();
        if target.voter && voters <= 1 {
            return Err(RaftAdminError::LastVoter(node_id));
        }
        Ok(target)
    }

    /// Remove `node_id` from the cluster, on the leader
    /// ([`Self::check_removable`] first, then [`Self::remove_member`]).
    /// Returns the log index of the membership that removed it.
    pub async fn remove_node(&self, node_id: typ::NodeId) -> Result<u64, RaftAdminError> {
        let target = self.check_removable(node_id)?;
        let log_id = self
            .remove_member(node_id, target.voter)
            .await
            .map_err(|e| RaftAdminError::Unavailable(e.to_string()))?;
        Ok(log_id.index)
    }

    /// Build a fresh snapshot on this node, covering at least what it has
    /// applied now, waiting at most `wait` for it, and return its file
    /// (`snapshots/current.snap`: Raft metadata and the backend's pairs,
    /// which are ciphertext written by the barrier).
    pub async fn save_snapshot(&self, wait: Duration) -> Result<Vec<u8>, RaftAdminError> {
        let applied = self.raft.metrics().borrow().last_applied;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| RaftAdminError::Unavailable(format!("cannot trigger a snapshot: {e}")))?;
        self.raft
            .wait(Some(wait))
            .metrics(|m| m.snapshot >= applied, "snapshot reaches last applied")
            .await
            .map_err(|e| RaftAdminError::Unavailable(format!("snapshot not built in time: {e}")))?;
        let snapshot = self
            .raft
            .get_snapshot()
            .await
            .map_err(|e| RaftAdminError::Unavailable(format!("cannot read the snapshot: {e}")))?
            .ok_or_else(|| RaftAdminError::Unavailable("no snapshot yet".into()))?;
        Ok(snapshot.snapshot.into_inner())
    }

    // ----- removal: noticing it, and staying out ---------------------------------

    /// Why this node serves nothing, once it learned it was removed.
    pub fn removal(&self) -> Option<Removal> {
        self.removal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This node's committed membership, how long ago it last heard from a
    /// leader (its vote was last confirmed), and whether it leads; `None`
    /// once openraft stopped.
    async fn membership_now(&self) -> Option<(typ::StoredMembership, Option<Duration>, bool)> {
        self.raft
            .with_raft_state(|st| {
                let committed = st.membership_state.committed();
                (
                    typ::StoredMembership::new(*committed.log_id(), committed.membership().clone()),
                    st.vote_last_modified().map(|at| at.elapsed()),
                    st.server_state == openraft::ServerState::Leader,
                )
            })
            .await
            .ok()
    }

    /// Take in `committed`, a committed membership (this node's own or a
    /// peer's): remember it when it holds this node, and record the removal
    /// when it shows one ([`judge`]). Returns whether this node is removed.
    fn learn_membership(&self, committed: &typ::StoredMembership) -> bool {
        if self.removal().is_some() {
            return true;
        }
        let included = {
            let mut included = self.included.lock().unwrap_or_else(|e| e.into_inner());
            if committed.membership().get_node(&self.id).is_some() {
                *included = (*included).max(*committed.log_id());
            }
            *included
        };
        match judge(self.id, included, committed) {
            Some(removal) => {
                self.note_removed(removal);
                true
            }
            None => false,
        }
    }

    /// Record this node's removal: durably first, then elections off.
    fn note_removed(&self, removal: Removal) {
        let mut slot = self.removal.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        if let Err(e) = removal.save(&self.data_dir) {
            tracing::error!(error = %e, "cannot write the removal record; a restart may not know");
        }
        self.raft.runtime_config().elect(false);
        tracing::warn!(
            node_id = self.id,
            log_index = removal.log_index,
            "{removal}"
        );
        *slot = Some(removal);
    }

    /// `Membership` from a peer: check its committed membership against
    /// this node's log, and answer with this node's own.
    pub async fn exchange_membership(
        &self,
        request: MembershipExchange,
    ) -> Result<MembershipExchange, ClusterError> {
        let (committed, _, _) = self
            .membership_now()
            .await
            .ok_or_else(|| ClusterError::Unavailable("the node is shutting down".into()))?;
        self.learn_membership(&committed);
        self.learn_membership(&request.committed);
        Ok(MembershipExchange { committed })
    }

    /// Notice this node's removal, for as long as it runs: every `every`,
    /// check its own committed membership, and, when it is a member that
    /// has not heard from a leader for two election timeouts (or knows
    /// none), ask every peer of its view for theirs (concurrently, each
    /// bounded). This is how a node that was cut off when it was removed
    /// learns it once the partition heals; a healthy follower asks nobody.
    pub async fn run_membership_watch(self: Arc<Self>, every: Duration) {
        let quiet = Duration::from_millis(self.election_timeout_max_ms.saturating_mul(2));
        let peer_timeout = Duration::from_millis(self.election_timeout_max_ms.clamp(100, 500));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some((committed, silent_for, leads)) = self.membership_now().await else {
                return;
            };
            if self.learn_membership(&committed) {
                return;
            }
            let member = self
                .included
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            let leader = self.raft.metrics().borrow().current_leader;
            let heard = leader.is_some() && silent_for.is_some_and(|s| s < quiet);
            if !member || leads || heard {
                continue;
            }
            let exchange = MembershipExchange { committed };
            let mut calls = tokio::task::JoinSet::new();
            for (_, client) in self.peer_clients() {
                let exchange = exchange.clone();
                calls.spawn(async move {
                    tokio::time::timeout(peer_timeout, client.membership(&exchange)).await
                });
            }
            while let Some(done) = calls.join_next().await {
                if let Ok(Ok(Ok(reply))) = done {
                    if self.learn_membership(&reply.committed) {
                        return;
                    }
                }
            }
        }
    }

    /// Remove `node_id` from the voters and learners (joint, then uniform;
    /// a removed voter leaves the nodes too), on the leader. Once committed,
    /// tell the removed node (in the background, at most [`NOTICE_TRIES`]
    /// times; it also finds out by itself, see
    /// [`Replica::run_membership_watch`]). Returns the log id of the
    /// membership that removed it.
    pub async fn remove_member(
        &self,
        node_id: typ::NodeId,
        voter: bool,
    ) -> Result<typ::LogId, ReplicaError> {
        let _guard = self.membership_lock.lock().await;
        let target = self.members().into_iter().find(|m| m.id == node_id);
        let change = if voter {
            ChangeMembers::RemoveVoters([node_id].into())
        } else {
            ChangeMembers::RemoveNodes([node_id].into())
        };
        let written = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| ReplicaError::Raft(format!("membership change failed: {e}")))?;
        let Some((committed, _, _)) = self.membership_now().await else {
            return Ok(written.log_id);
        };
        if node_id == self.id {
            self.learn_membership(&committed);
        } else if let (Some(target), Some(net)) = (target, &self.peers) {
            let client = net.peer(target.id, &target.node);
            tokio::spawn(tell_removed(client, MembershipExchange { committed }));
        }
        Ok(written.log_id)
    }

    // ----- the joiner's side ----------------------------------------------------

    /// Ask the nodes at `addrs` (cluster addresses), in turn, to add this
    /// node; a node that does not lead names the leader, and the request
    /// follows at most [`FORWARD_HOPS`] such hints. Ok once one accepted.
    pub async fn request_join(&self, addrs: &[String]) -> Result<(), JoinError> {
        self.request_join_once(addrs).await
    }

    /// The first of `addrs` (not this node's own) whose cluster port answers
    /// a status call: a node answers there only once it is a member of a
    /// cluster (or bootstrapped one), so an answer means a cluster exists.
    pub async fn find_cluster(&self, addrs: &[String]) -> Option<String> {
        let net = self.peers.as_ref()?;
        for addr in addrs.iter().filter(|a| **a != self.node.cluster_addr) {
            if net.peer_at(addr).peer_status().await.is_ok() {
                return Some(addr.clone());
            }
        }
        None
    }

    async fn request_join_once(&self, addrs: &[String]) -> Result<(), JoinError> {
        if let Some(removal) = self.removal() {
            return Err(JoinError::Refused(removal.to_string()));
        }
        let Some(net) = &self.peers else {
            return Err(JoinError::Refused(
                "this node has no cluster network".into(),
            ));
        };
        let request = JoinRequest {
            node_id: self.id,
            node: self.node.clone(),
        };
        let mut errors = Vec::new();
        for addr in addrs.iter().filter(|a| **a != self.node.cluster_addr) {
            let mut peer = net.peer_at(addr);
            let mut redirects = 0u8;
            loop {
                match peer.join(&request).await {
                    Ok(reply) => {
                        tracing::info!(via = %peer.addr(), log_id = ?reply.log_id, "join accepted");
                        return Ok(());
                    }
                    Err(e) => match e.remote() {
                        Some(ClusterError::Refused(reason)) => {
                            return Err(JoinError::Refused(reason.clone()))
                        }
                        Some(ClusterError::NotLeader {
                            leader_id: Some(id),
                            leader: Some(info),
                        }) if *id != self.id && redirects < FORWARD_HOPS => {
                            redirects += 1;
                            peer = net.peer(*id, info);
                        }
                        _ => {
                            errors.push(e.to_string());
                            break;
                        }
                    },
                }
            }
        }
        Err(JoinError::Unavailable(if errors.is_empty() {
            "no peer address to join through (every --join address is this node's own)".into()
        } else {
            errors.join("; ")
        }))
    }

    /// Stop openraft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Tell a node it was removed: send it the committed membership without
/// it, until it answers or [`NOTICE_TRIES`] tries failed (it may be down or
/// cut off; it then learns by asking its peers).
async fn tell_removed(client: PeerClient, exchange: MembershipExchange) {
    for _ in 0..NOTICE_TRIES {
        match client.membership(&exchange).await {
            Ok(_) => {
                tracing::info!(node = ?client.id(), "removed node told");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "removed node not told yet"),
        }
        tokio::time::sleep(NOTICE_PAUSE).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::storage::memory::MemoryBackend;

    /// A replica with no peers and a short leader wait, in `dir`.
    async fn lone_replica(dir: &Path) -> Arc<Replica> {
        let mut config = ReplicaConfig::single(1, "127.0.0.1:1".into(), dir.to_path_buf());
        config.leader_wait = Duration::from_millis(400);
        Replica::start(
            config,
            Arc::new(MemoryBackend::new()),
            Arc::new(SystemClock),
            NoPeers,
            None,
        )
        .await
        .unwrap()
    }

    fn absent_node() -> NodeInfo {
        NodeInfo {
            cluster_addr: "127.0.0.1:2".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn operator_calls_speak_kstash_types() {
        let dir = tempfile::tempdir().unwrap();
        let replica = lone_replica(dir.path()).await;
        replica
            .bootstrap_single(Duration::from_secs(10))
            .await
            .unwrap();
        let peers = replica.peers();
        assert_eq!(peers.len(), 1, "{peers:?}");
        assert_eq!(peers[0].member.id, 1);
        assert!(peers[0].member.voter && peers[0].leader, "{peers:?}");
        // Checked before anything is proposed (or a credential spent).
        assert_eq!(
            replica.check_removable(9),
            Err(RaftAdminError::NotMember(9))
        );
        assert_eq!(
            replica.remove_node(1).await,
            Err(RaftAdminError::LastVoter(1))
        );
        let file = replica
            .save_snapshot(Duration::from_secs(10))
            .await
            .unwrap();
        assert!(!file.is_empty());
        replica.shutdown().await;
    }

    #[tokio::test]
    async fn a_write_with_no_leader_in_time_was_not_sent() {
        // Two voters, and the other one never answers: no leader is ever
        // elected, so nothing enters the log.
        let dir = tempfile::tempdir().unwrap();
        let replica = lone_replica(dir.path()).await;
        let members = BTreeMap::from([(1, replica.node().clone()), (2, absent_node())]);
        replica.raft().initialize(members).await.unwrap();
        let e = replica.propose(Command::Sweep).await.unwrap_err();
        assert!(matches!(e, ProposeError::NotSent(_)), "{e:?}");
        assert!(e.is_retryable());
        assert!(
            e.to_string().contains("no leader accepted the write"),
            "{e}"
        );
        replica.shutdown().await;
    }

    #[tokio::test]
    async fn a_write_appended_but_never_committed_has_an_unknown_outcome() {
        // A lone leader starts making an absent learner a voter: the joint
        // membership needs the absent node, so every entry after it is
        // appended and never committed.
        let dir = tempfile::tempdir().unwrap();
        let replica = lone_replica(dir.path()).await;
        replica
            .bootstrap_single(Duration::from_secs(10))
            .await
            .unwrap();
        // Committed and applied: apply answers (here, refuses) it.
        let answered = replica.propose(Command::Sweep).await;
        assert!(
            matches!(answered, Ok(_) | Err(ProposeError::Rejected(_))),
            "{answered:?}"
        );
        replica
            .raft()
            .add_learner(2, absent_node(), false)
            .await
            .unwrap();
        let raft = replica.raft().clone();
        let change = tokio::spawn(async move {
            raft.change_membership(ChangeMembers::AddVoterIds([2].into()), false)
                .await
        });
        replica
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.membership_config.membership().get_joint_config().len() > 1,
                "the joint membership is appended",
            )
            .await
            .unwrap();
        let e = replica.propose(Command::Sweep).await.unwrap_err();
        match &e {
            ProposeError::OutcomeUnknown(unknown) => {
                assert!(unknown.reason().contains("not committed within"), "{e}")
            }
            other => panic!("{other:?} is not an unknown outcome"),
        }
        assert!(!e.is_retryable());
        change.abort();
        replica.shutdown().await;
    }

    #[test]
    fn the_node_id_file_is_made_once_and_guards_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = NodeIdentity::open(dir.path(), 3).unwrap();
        assert!(created);
        assert_eq!(first.node_id, 3);
        assert_ne!(first.incarnation, 0);
        let (again, created) = NodeIdentity::open(dir.path(), 3).unwrap();
        assert!(!created);
        assert_eq!(again, first, "a restart keeps the incarnation");
        assert!(!dir.path().join("node-id.tmp").exists());

        let err = NodeIdentity::open(dir.path(), 4).unwrap_err().to_string();
        assert!(
            err.contains("belongs to node 3") && err.contains("node 4"),
            "{err}"
        );

        let other = tempfile::tempdir().unwrap();
        let (fresh, _) = NodeIdentity::open(other.path(), 3).unwrap();
        assert_ne!(
            fresh.incarnation, first.incarnation,
            "a new data dir is a new incarnation"
        );

        std::fs::write(dir.path().join(NODE_ID_FILE), "node_id = 3\nbogus = 1\n").unwrap();
        let err = NodeIdentity::open(dir.path(), 3).unwrap_err().to_string();
        assert!(err.contains("unreadable"), "{err}");
    }
}
