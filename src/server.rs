//! Booting a node: storage backend, replica, service, sweeper, the client
//! port (TLS with rustls, or plaintext on loopback only) and, for a cluster
//! node, the cluster port (mutual TLS), joining and promotion.
//!
//! Invariants:
//! - The data dir's `node-id` file is checked (or made) before anything
//!   else touches the data dir: a data dir never serves another node id.
//! - A node that joins with no Raft state yet (a new or wiped data dir)
//!   opens its cluster port only after the leader accepted its `Join`; so a
//!   node refused for rejoining under an old id with a wiped data dir is
//!   never reached by Raft RPCs meant for the member it claims to be.
//! - The client port comes up at once; joining runs in the background,
//!   with bounded retries.
//! - The KMS socket (`kms_socket`) is served only once the node's front
//!   door exists, every call through it passes that door, and it is removed
//!   first on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::guard::audit::{reopen_on_sighup, AuditLog, AuditTarget};
use crate::guard::Door;
use crate::plugins::kms::local::LocalBackend;
use crate::plugins::kms::metrics::KmsMetrics;
use crate::plugins::kms::{check_status_interval, KmsEndpoint, KmsKey, KmsOptions, SocketOptions};
use crate::plugins::socket::parse_mode;

use crate::api::conn::{plan_fds, ConnAcceptor, ConnMetrics, Limits};
use crate::auth::kubernetes::{InCluster, KubernetesAuth};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StorageKind};
use crate::raft::cluster::{serve_capped, ClusterHandler, ServeError};
use crate::raft::network::{LinkFilter, Network};
use crate::raft::replica::{JoinError, NoPeers, NodeIdentity, Replica, ReplicaConfig};
use crate::raft::tls::ClusterTls;
use crate::raft::types::NodeInfo;
use crate::secret::SecretString;
use crate::service::types::{InitRequest, LoginRequest, UnsealRequest};
use crate::service::Node;
use crate::storage::memory::MemoryBackend;
use crate::storage::Backend;

/// How long a joining node keeps asking its `--join` peers before it gives
/// up (`kstash server` then exits, and its supervisor restarts it).
pub const JOIN_RETRY_FOR: Duration = Duration::from_secs(300);

/// Longest pause between two join attempts.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long a stopping node waits for in-flight cluster RPCs.
const CLUSTER_STOP_WAIT: Duration = Duration::from_secs(5);

/// Wiring beyond the config, for tests and embedders.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Consulted before every cluster RPC to a peer with a known id (fault
    /// injection in tests); `None` sends everything.
    pub link_filter: Option<LinkFilter>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("link_filter", &self.link_filter.is_some())
            .finish()
    }
}

/// Where this node's `--join` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinState {
    /// Not asked to join (alone, bootstrapped, or waiting to be contacted).
    NotJoining,
    /// Asking the peers.
    Joining,
    /// A member of the cluster (a learner until the leader promotes it).
    Joined,
    /// Refused, or no peer accepted in time; the message says which.
    Failed(String),
}

/// The cluster port and the tasks of a cluster node.
struct ClusterPort {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    serving: JoinHandle<Result<(), ServeError>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A running node: its bound addresses, its service and its tasks.
pub struct Server {
    /// The client port actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The node's services.
    pub node: Arc<Node>,
    replica: Arc<Replica>,
    handle: axum_server::Handle<SocketAddr>,
    connections: ConnMetrics,
    serve: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
    leader_log: JoinHandle<()>,
    /// Reopens the audit file on SIGHUP (audit to a file or stdout only).
    audit_reopen: Option<JoinHandle<()>>,
    audit: Arc<AuditLog>,
    cluster: Option<ClusterPort>,
    join_state: watch::Receiver<JoinState>,
    /// The KMS v2 socket, with `kms_socket`.
    kms: Option<KmsEndpoint>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Server({})", self.addr)
    }
}

/// Open the configured storage backend.
pub fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn Backend>> {
    match config.storage {
        StorageKind::Memory => Ok(Arc::new(MemoryBackend::new())),
        #[cfg(feature = "etcd")]
        StorageKind::Etcd => Ok(Arc::new(crate::storage::etcd::EtcdBackend::connect(
            &config.etcd_endpoints,
            &config.etcd_prefix(),
            Duration::from_secs(5),
        )?)),
        #[cfg(not(feature = "etcd"))]
        StorageKind::Etcd => {
            anyhow::bail!(
                "this kstash was built without the etcd backend; rebuild with --features etcd"
            )
        }
    }
}

fn tls_config(config: &Config) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading certificates from {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("reading the private key from {}", key.display()))?
    .with_context(|| format!("{} holds no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not form a valid TLS identity")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// The ServiceAccount token checker the `kubernetes_*` settings ask for
/// (with the in-cluster defaults in a pod); bad settings fail the start.
fn open_kubernetes(config: &Config) -> anyhow::Result<KubernetesAuth> {
    let pod = InCluster::detect();
    let settings = config.kubernetes_settings(pod.as_ref());
    let auth = KubernetesAuth::open(settings.clone())
        .map_err(|e| anyhow::anyhow!("kubernetes login: {e}"))?;
    if auth.is_enabled() {
        tracing::info!(
            api = settings.api.as_deref().unwrap_or("none"),
            jwks_file = %settings.jwks_file.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
            issuer = settings.issuer.as_deref().unwrap_or("from discovery"),
            local_check = settings.local_check,
            token_review = settings.token_review,
            in_cluster = pod.is_some(),
            "kubernetes ServiceAccount login enabled"
        );
    }
    Ok(auth)
}

impl Server {
    /// Bind the client port (and the cluster port, with `cluster_addr`)
    /// and start serving over `backend`.
    pub async fn start(
        config: &Config,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Server> {
        Self::start_with(config, backend, clock, ServerOptions::default()).await
    }

    /// [`Server::start`] with extra wiring.
    pub async fn start_with(
        config: &Config,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        options: ServerOptions,
    ) -> anyhow::Result<Server> {
        config.check()?;
        let kms = kms_options(config)?;
        let kubernetes = Arc::new(open_kubernetes(config)?);
        let mut settings = config.settings();
        let fds = plan_fds(config.max_connections, config.cluster_addr.is_some())?;
        if fds.clamped {
            tracing::warn!(
                max_connections = config.max_connections,
                serving = fds.client,
                nofile = fds.soft_limit,
                "the file-descriptor limit (RLIMIT_NOFILE) allows {} client connections, not \
                 max_connections = {}; raise it (ulimit -n, LimitNOFILE=) to allow more",
                fds.client,
                config.max_connections
            );
        }
        let limits = Limits {
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: fds.client,
        };
        let listener = std::net::TcpListener::bind(config.api_addr)
            .with_context(|| format!("binding the client port {}", config.api_addr))?;
        let addr = listener.local_addr()?;
        let api_address = config
            .advertise_api_addr
            .clone()
            .unwrap_or_else(|| addr.to_string());
        settings.api_address = api_address.clone();
        crate::data_dir::prepare(&config.data_dir, config.allow_insecure_data_dir)?;
        // After `prepare`: its umask makes a new audit file 0600 too.
        let audit = Arc::new(match &config.audit_file {
            Some(target) => {
                let target = AuditTarget::parse(target);
                let log = AuditLog::open(target.clone())
                    .with_context(|| format!("opening the audit log {target}"))?;
                tracing::info!(audit_file = %target, "audit log: every operation is recorded; a request that cannot be recorded is refused");
                log
            }
            None => AuditLog::disabled(),
        });
        let (identity, _) = NodeIdentity::open(&config.data_dir, config.node_id)?;
        let mut replica_config = ReplicaConfig {
            node_id: config.node_id,
            node: NodeInfo {
                api_addr: api_address,
                cluster_addr: String::new(),
                incarnation: identity.incarnation,
            },
            data_dir: config.data_dir.clone(),
            election_timeout_ms: (
                config.election_timeout_min_ms,
                config.election_timeout_max_ms,
            ),
            heartbeat_ms: config.heartbeat_interval_ms,
            snapshot_logs: config.snapshot_threshold,
            leader_wait: config.leader_wait(),
        };
        let (join_tx, join_state) = watch::channel(JoinState::NotJoining);
        let (replica, node, cluster) = match config.cluster_addr {
            None => {
                let replica =
                    Replica::start(replica_config, backend, clock.clone(), NoPeers, None).await?;
                replica.bootstrap_single(Duration::from_secs(10)).await?;
                let node = Arc::new(
                    Node::new(replica.clone(), clock, settings).with_kubernetes(kubernetes),
                );
                (replica, node, None)
            }
            Some(cluster_addr) => {
                let (Some(ca), Some(cert), Some(key)) = (
                    &config.cluster_ca,
                    &config.cluster_cert,
                    &config.cluster_key,
                ) else {
                    anyhow::bail!(
                        "a cluster node needs --cluster-ca, --cluster-cert and --cluster-key"
                    );
                };
                let tls =
                    ClusterTls::load(ca, cert, key).context("loading the cluster TLS files")?;
                let cluster_listener = tokio::net::TcpListener::bind(cluster_addr)
                    .await
                    .with_context(|| format!("binding the cluster port {cluster_addr}"))?;
                let bound = cluster_listener.local_addr()?;
                replica_config.node.cluster_addr = config
                    .advertise_cluster_addr
                    .clone()
                    .unwrap_or_else(|| bound.to_string());
                let mut network = Network::new(config.node_id, tls.clone());
                if let Some(filter) = options.link_filter {
                    network = network.with_link_filter(filter);
                }
                let replica =
                    Replica::start_clustered(replica_config, backend, clock.clone(), network, None)
                        .await?;
                let node = Arc::new(
                    Node::new(replica.clone(), clock, settings).with_kubernetes(kubernetes),
                );
                let cluster = start_cluster(
                    config,
                    &replica,
                    &node,
                    tls,
                    cluster_listener,
                    join_tx,
                    fds.cluster,
                )
                .await?;
                (replica, node, Some(cluster))
            }
        };
        let hosts = if config.tls_disable {
            let advertised = config
                .advertise_api_addr
                .as_deref()
                .and_then(crate::raft::tls::host_of);
            let api_host = config.api_addr.ip().to_string();
            let extra = config.allowed_hosts.iter().map(String::as_str);
            crate::api::HostCheck::Only(Arc::new(crate::api::edges::AllowedHosts::new(
                extra.chain(advertised).chain([api_host.as_str()]),
            )))
        } else {
            crate::api::HostCheck::Any
        };
        let metrics = Arc::new(crate::api::metrics::Metrics::for_node(node.clone()));
        let connections = metrics.connections.clone();
        let door = crate::api::door(
            node.clone(),
            audit.clone(),
            &metrics,
            config.audit_hmac_values,
        );
        let kms = match &kms {
            Some(options) => Some(start_kms(&door, options).await?),
            None => None,
        };
        let app = crate::api::router_with(door, hosts, metrics)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let acceptor = ConnAcceptor::new(limits, connections.clone());
        let handle = axum_server::Handle::new();
        let mut server = axum_server::from_tcp(listener)?;
        // Also the HTTP/1 keep-alive wait: hyper starts this clock as soon
        // as a connection waits for its next request.
        server
            .http_builder()
            .http1()
            .header_read_timeout(limits.header_read_timeout);
        let server = server.handle(handle.clone()).accept_error_handler({
            let connections = connections.clone();
            move |_, e| connections.on_accept_error(e)
        });
        let serve = match tls_config(config)? {
            Some(tls) => {
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
                    axum_server::tls_rustls::RustlsConfig::from_config(tls),
                )
                .handshake_timeout(limits.header_read_timeout)
                .acceptor(acceptor);
                tokio::spawn(server.acceptor(acceptor).serve(app))
            }
            None => tokio::spawn(server.acceptor(acceptor).serve(app)),
        };
        let sweeper = tokio::spawn(sweep_loop(
            node.clone(),
            replica.clone(),
            config.sweep_interval,
        ));
        let leader_log = tokio::spawn(log_leader_changes(replica.clone()));
        let audit_reopen = if audit.is_enabled() {
            Some(reopen_on_sighup(audit.clone()).context("listening for SIGHUP")?)
        } else {
            None
        };
        Ok(Server {
            addr,
            node,
            replica,
            handle,
            connections,
            serve,
            sweeper,
            leader_log,
            audit_reopen,
            audit,
            cluster,
            join_state,
            kms,
        })
    }

    /// The KMS socket file, with `kms_socket`.
    pub fn kms_socket(&self) -> Option<&std::path::Path> {
        self.kms.as_ref().map(KmsEndpoint::path)
    }

    /// The audit device (disabled without `audit_file`).
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The client port's connection metrics (open now, shed by reason).
    pub fn connections(&self) -> &ConnMetrics {
        &self.connections
    }

    /// The cluster port actually bound, on a cluster node.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|c| c.addr)
    }

    /// This node's replica (Raft metrics and membership, for tests and
    /// operators).
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Where `--join` stands now.
    pub fn join_state(&self) -> JoinState {
        self.join_state.borrow().clone()
    }

    /// Wait until joining ended (joined or failed), at most `timeout`;
    /// returns the state then.
    pub async fn wait_joined(&self, timeout: Duration) -> JoinState {
        let mut rx = self.join_state.clone();
        let _ = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| matches!(s, JoinState::Joined | JoinState::Failed(_))),
        )
        .await;
        let state = rx.borrow().clone();
        state
    }

    /// Remove the KMS socket, stop accepting, finish in-flight requests (up
    /// to 5 s), stop the cluster port and the tasks, then openraft.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(kms) = self.kms {
            kms.shutdown().await;
        }
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        self.sweeper.abort();
        self.leader_log.abort();
        if let Some(task) = &self.audit_reopen {
            task.abort();
        }
        if let Some(cluster) = &self.cluster {
            for task in &cluster.tasks {
                task.abort();
            }
        }
        let served = self.serve.await;
        if let Some(cluster) = self.cluster {
            let _ = cluster.stop.send(true);
            let abort = cluster.serving.abort_handle();
            match tokio::time::timeout(CLUSTER_STOP_WAIT, cluster.serving).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cluster port failed"),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(
                        "cluster RPCs still running after {CLUSTER_STOP_WAIT:?}; dropped"
                    );
                    abort.abort();
                }
            }
        }
        self.replica.shutdown().await;
        served??;
        Ok(())
    }

    /// Serve until the process is asked to stop (Ctrl-C or SIGTERM), or
    /// until joining the cluster failed (an error then).
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let mut join = self.join_state.clone();
        let failed = async move {
            match join.wait_for(|s| matches!(s, JoinState::Failed(_))).await {
                Ok(state) => match &*state {
                    JoinState::Failed(reason) => reason.clone(),
                    _ => unreachable!("waited for a failure"),
                },
                Err(_) => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            _ = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
            reason = failed => Err(anyhow::anyhow!("could not join the cluster: {reason}")),
        };
        self.shutdown().await?;
        outcome
    }
}

/// The KMS socket the `kms_*` settings ask for, if any: a socket path, a
/// key name, a mode and an interval the plugin accepts (`Config::check`
/// made sure `kms_socket` and `kms_key` come together).
pub fn kms_options(config: &Config) -> anyhow::Result<Option<KmsOptions>> {
    let (Some(socket), Some(key)) = (&config.kms_socket, &config.kms_key) else {
        return Ok(None);
    };
    let mut options = SocketOptions::new(socket).context("kms_socket")?;
    options.mode = parse_mode(&config.kms_socket_mode).context("kms_socket_mode")?;
    options.group = config.kms_socket_group;
    Ok(Some(KmsOptions {
        socket: options,
        key: KmsKey::parse(key)
            .map_err(anyhow::Error::msg)
            .context("kms_key")?,
        status_interval: check_status_interval(config.kms_status_interval)
            .map_err(anyhow::Error::msg)
            .context("kms_status_interval")?,
    }))
}

/// Serve the KMS v2 socket of `options` through `door`.
async fn start_kms(door: &Arc<Door>, options: &KmsOptions) -> anyhow::Result<KmsEndpoint> {
    let backend = Arc::new(LocalBackend::new(door.clone(), options.key.clone()));
    // The node's /metrics counts these calls as the operations kms.*;
    // the plugin's own series are for `kstash kms-plugin`.
    KmsEndpoint::start(backend, options, KmsMetrics::new())
        .await
        .with_context(|| format!("serving the KMS socket of key {}", options.key))
}

/// Serve the cluster port (at once, or after the join was accepted), and
/// start bootstrapping or joining, and the promoter.
async fn start_cluster(
    config: &Config,
    replica: &Arc<Replica>,
    node: &Arc<Node>,
    tls: ClusterTls,
    listener: tokio::net::TcpListener,
    join_tx: watch::Sender<JoinState>,
    max_connections: usize,
) -> anyhow::Result<ClusterPort> {
    let addr = listener.local_addr()?;
    let initialized = replica.is_initialized().await?;
    let mut starts_cluster = config.bootstrap;
    if config.bootstrap_node_id == Some(config.node_id) && !initialized {
        // Probed before this node's own cluster port opens.
        match replica.find_cluster(&config.join).await {
            Some(peer) => tracing::error!(
                %peer,
                node_id = config.node_id,
                "a cluster already answers at {peer}, and this node's data dir holds no Raft \
                 state: joining it instead of starting a second cluster (if this id was a \
                 member, remove it first with `kstash operator raft remove {}`)",
                config.node_id
            ),
            None => starts_cluster = true,
        }
    }
    if starts_cluster {
        replica.bootstrap().await?;
    }
    // The bootstrapping node of a fleet joins only when it found a cluster
    // instead of starting one, not when it restarts as a member.
    let member_already = config.bootstrap_node_id == Some(config.node_id) && initialized;
    let joining = !(config.join.is_empty() || starts_cluster || member_already);
    // A joiner without Raft state opens its port once a leader admitted it.
    let (open_tx, mut open_rx) = watch::channel(!joining || initialized);
    let (stop, mut stop_rx) = watch::channel(false);
    let handler: Arc<dyn ClusterHandler> = node.clone();
    let service = replica.cluster_service(handler);
    let serving = tokio::spawn(async move {
        // Until the port opens, close every connection at once: a peer
        // probing this node (`Replica::find_cluster`) learns at once that
        // it is no member, instead of waiting out a TLS handshake.
        loop {
            tokio::select! {
                opened = open_rx.wait_for(|open| *open) => {
                    if opened.is_err() { return Ok(()) }
                    break;
                }
                _ = stop_rx.wait_for(|stop| *stop) => return Ok(()),
                accepted = listener.accept() => drop(accepted),
            }
        }
        tracing::info!(%addr, "cluster port open");
        let stop = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        serve_capped(listener, &tls, service, stop, max_connections).await
    });
    let mut tasks = Vec::new();
    if joining {
        join_tx.send_replace(JoinState::Joining);
        tasks.push(tokio::spawn(join_loop(
            replica.clone(),
            config.join.clone(),
            open_tx,
            join_tx,
        )));
    } else {
        drop(open_tx);
    }
    let every =
        Duration::from_millis(config.heartbeat_interval_ms * 2).max(Duration::from_millis(100));
    tasks.push(tokio::spawn(replica.clone().run_promoter(every)));
    // A removed node notices it and stays out.
    tasks.push(tokio::spawn(
        replica.clone().run_membership_watch(
            Duration::from_millis(config.election_timeout_max_ms)
                .clamp(Duration::from_millis(200), Duration::from_secs(2)),
        ),
    ));
    // Invariant 6: an initialised but sealed node does not campaign.
    let guarded = node.clone();
    tasks.push(tokio::spawn(
        replica.clone().run_election_guard(
            Arc::new(move || guarded.holds_back_elections()),
            Duration::from_millis(config.heartbeat_interval_ms)
                .clamp(Duration::from_millis(20), Duration::from_millis(250)),
        ),
    ));
    Ok(ClusterPort {
        addr,
        stop,
        serving,
        tasks,
    })
}

/// Ask the `--join` peers to admit this node, with backoff, until it is a
/// member of the cluster, the cluster refuses it, or [`JOIN_RETRY_FOR`]
/// passed. Opens the cluster port once a leader accepted.
async fn join_loop(
    replica: Arc<Replica>,
    peers: Vec<String>,
    open: watch::Sender<bool>,
    state: watch::Sender<JoinState>,
) {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(200);
    let member_wait = Duration::from_secs(30);
    loop {
        if replica.is_voter() {
            open.send_replace(true);
            state.send_replace(JoinState::Joined);
            return;
        }
        match replica.request_join(&peers).await {
            Ok(()) => {
                open.send_replace(true);
                if replica.wait_member(member_wait).await {
                    tracing::info!("joined the cluster");
                    state.send_replace(JoinState::Joined);
                    return;
                }
                tracing::warn!(
                    "admitted, but no membership arrived in {member_wait:?}; asking again"
                );
            }
            Err(JoinError::Refused(reason)) => {
                tracing::error!(%reason, "the cluster refused this node");
                state.send_replace(JoinState::Failed(reason));
                return;
            }
            Err(e @ JoinError::Unavailable(_)) => {
                tracing::info!(error = %e, "join: will retry");
            }
        }
        if started.elapsed() >= JOIN_RETRY_FOR {
            let reason =
                format!("no peer of {peers:?} admitted this node within {JOIN_RETRY_FOR:?}");
            tracing::error!(%reason, "giving up joining");
            state.send_replace(JoinState::Failed(reason));
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
    }
}

/// Sweep expired tokens every `every`, on the leader only (followers would
/// only forward the same sweep to it).
async fn sweep_loop(node: Arc<Node>, replica: Arc<Replica>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !replica.is_leader() {
            continue;
        }
        if let Err(e) = node.sweep().await {
            tracing::debug!(error = %e, "sweep failed; will retry");
        }
    }
}

/// Log each change of leader once, at info, as an operator reads it: this
/// node became the leader, follows node N, or knows no leader any more.
/// (openraft's own account of elections stays at `warn` by default.)
async fn log_leader_changes(replica: Arc<Replica>) {
    let mut first = true;
    replica
        .watch_leader(|leader| {
            let term = replica.raft_status().term;
            match leader {
                Some(id) if id == replica.id() => tracing::info!(term, "became the leader"),
                Some(id) => tracing::info!(term, leader = id, "following the leader, node {id}"),
                None if !first => tracing::info!(term, "no leader known"),
                None => {}
            }
            first = false;
        })
        .await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Set up logging from the config's filter (`RUST_LOG` wins when set). The
/// default ([`crate::config::DEFAULT_LOG`]) keeps openraft and the
/// transport crates at `warn`: at `info` kstash itself says what the node
/// does.
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Colour only on a terminal: `docker logs` and log shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// What `server --dev` creates and prints.
pub struct DevSecrets {
    /// The single unseal key.
    pub unseal_key: SecretString,
    /// The access key.
    pub access_key: SecretString,
    /// A gatekeeper token.
    pub gatekeeper_token: SecretString,
    /// An admin token for namespace `default`.
    pub token: SecretString,
}

/// Initialise 1-of-1, unseal, and mint an admin token for `default`.
pub async fn dev_bootstrap(node: &Node) -> anyhow::Result<DevSecrets> {
    let init = node
        .init(InitRequest {
            shares: 1,
            threshold: 1,
            gatekeeper_tokens: 1,
        })
        .await?;
    let unseal_key = init
        .unseal_keys
        .into_iter()
        .next()
        .context("init made no unseal key")?;
    node.unseal(UnsealRequest {
        key: Some(unseal_key.clone()),
        ..Default::default()
    })
    .await?;
    let login = node
        .login(LoginRequest {
            access_key: init.access_key.clone(),
            namespace: "default".into(),
            policies: vec![crate::acl::ADMIN_POLICY.into()],
            ttl: None,
        })
        .await?;
    Ok(DevSecrets {
        unseal_key,
        access_key: init.access_key,
        gatekeeper_token: init
            .gatekeeper_tokens
            .into_iter()
            .next()
            .context("init made no gatekeeper token")?,
        token: login.token,
    })
}

/// `kstash server`: run a node until stopped.
pub async fn run(config: Config, dev: bool) -> anyhow::Result<()> {
    init_logging(&config.log);
    if cfg!(feature = "test-stale-reads") {
        tracing::error!(
            "built with the test-stale-reads feature: reads may be stale; a test build for \
             jepsen/, never for production"
        );
    }
    let backend = open_backend(&config)?;
    let server = Server::start(&config, backend, Arc::new(SystemClock)).await?;
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        addr = %server.addr,
        cluster_addr = ?server.cluster_addr(),
        storage = %config.storage_name(),
        "kstash listening"
    );
    if dev {
        let s = dev_bootstrap(&server.node).await?;
        eprintln!(
            "\nWARNING: dev mode. Everything lives in memory and is lost on exit; the secrets\n\
             below are printed in the clear. Never use dev mode in production.\n"
        );
        println!("Address:          {scheme}://{}", server.addr);
        println!("Unseal key:       {}", s.unseal_key.expose());
        println!("Access key:       {}", s.access_key.expose());
        println!("Gatekeeper token: {}", s.gatekeeper_token.expose());
        println!("Token (default):  {}", s.token.expose());
        println!("\n  export KSTASH_ADDR={scheme}://{}", server.addr);
        println!("  export KSTASH_TOKEN={}", s.token.expose());
    }
    let outcome = server.run_until_signal().await;
    if dev && config.data_dir.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_dir_all(&config.data_dir);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::kms_options;
    use crate::config::ServerArgs;

    #[test]
    fn the_kms_settings_become_the_socket_options_or_a_clear_error() {
        // Steps: no socket → none; socket, key, mode, group and interval →
        // the options; a relative path, a bad key, a mode others can use
        // and an interval out of range are refused naming the setting.
        let args = || ServerArgs {
            tls_disable: Some(true),
            kms_socket: Some("unix:///run/kstash/kms.sock".into()),
            kms_key: Some("kube-system/kube-kek".into()),
            ..Default::default()
        };
        let none = ServerArgs {
            tls_disable: Some(true),
            ..Default::default()
        };
        assert!(kms_options(&none.resolve().unwrap()).unwrap().is_none());
        let o = kms_options(&args().resolve().unwrap()).unwrap().unwrap();
        assert_eq!(o.socket.path.to_str(), Some("/run/kstash/kms.sock"));
        assert_eq!((o.socket.mode, o.socket.group), (0o600, None));
        assert_eq!(o.key.to_string(), "kube-system/kube-kek");
        assert_eq!(o.status_interval, Duration::from_secs(5));
        let o = kms_options(
            &ServerArgs {
                kms_socket_mode: Some("0660".into()),
                kms_socket_group: Some(998),
                kms_status_interval: Some(Duration::from_secs(2)),
                ..args()
            }
            .resolve()
            .unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!((o.socket.mode, o.socket.group), (0o660, Some(998)));
        assert_eq!(o.status_interval, Duration::from_secs(2));

        for (bad, want) in [
            (
                ServerArgs {
                    kms_socket: Some("kms.sock".into()),
                    ..args()
                },
                "absolute path",
            ),
            (
                ServerArgs {
                    kms_key: Some("kek".into()),
                    ..args()
                },
                "NAMESPACE/NAME",
            ),
            (
                ServerArgs {
                    kms_socket_mode: Some("0666".into()),
                    ..args()
                },
                "others may not have access",
            ),
            (
                ServerArgs {
                    kms_status_interval: Some(Duration::from_millis(10)),
                    ..args()
                },
                "status interval must be",
            ),
        ] {
            let err = format!("{:#}", kms_options(&bad.resolve().unwrap()).unwrap_err());
            assert!(err.contains(want) && err.contains("kms_"), "{want}: {err}");
        }
    }
}
