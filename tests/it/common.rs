//! Shared helpers: an in-process node on a loopback port with a memory
//! backend the test can inspect, a tiny REST client, log capture, and
//! in-process cluster nodes over a chosen storage backend (memory, or one
//! shared etcd with a key prefix per node).

#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kstash::clock::{Clock, SystemClock};
use kstash::config::{Config, ServerArgs};
use kstash::server::Server;
#[cfg(feature = "etcd")]
use kstash::storage::etcd::{testing::EtcdServer, EtcdBackend};
use kstash::storage::memory::MemoryBackend;
use kstash::storage::Backend;
use serde_json::{json, Value};

/// Every log line written by any in-process node during the test run, at
/// `debug` level, so leak tests can scan them.
pub fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        captured_logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install a global subscriber at `debug` that records into `captured_logs`.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(|| Capture)
            .with_ansi(false)
            .try_init();
    });
}

/// A config for a plaintext loopback node on a free port.
pub fn test_config(extra: impl FnOnce(&mut ServerArgs)) -> Config {
    let mut args = ServerArgs {
        tls_disable: Some(true),
        api_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    extra(&mut args);
    assert!(
        args.data_dir.is_some(),
        "every test node needs its own data dir"
    );
    args.resolve().expect("test config is valid")
}

/// An in-process node and a client for it.
pub struct TestNode {
    pub server: Server,
    /// The node's data dir (Raft log and snapshots), removed on drop.
    pub data_dir: tempfile::TempDir,
    pub backend: Arc<MemoryBackend>,
    pub http: Http,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(extra: impl FnOnce(&mut ServerArgs)) -> TestNode {
        Self::start_with_clock(extra, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(
        extra: impl FnOnce(&mut ServerArgs),
        clock: Arc<dyn Clock>,
    ) -> TestNode {
        let backend = Arc::new(MemoryBackend::new());
        Self::start_on(backend.clone(), backend, extra, clock).await
    }

    /// A node over any backend (`memory` is still the handle tests use for
    /// the memory-only hooks; pass a fresh one when `backend` is another kind).
    pub async fn start_on(
        backend: Arc<dyn Backend>,
        memory: Arc<MemoryBackend>,
        extra: impl FnOnce(&mut ServerArgs),
        clock: Arc<dyn Clock>,
    ) -> TestNode {
        capture_logs();
        // kstash refuses a data dir others can reach: make it 0700, as
        // `mktemp -d` would.
        let data_dir = tempfile::Builder::new()
            .prefix("node-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let config = test_config(|a| {
            a.data_dir = Some(data_dir.path().to_path_buf());
            extra(a);
        });
        let server = Server::start(&config, backend, clock).await.unwrap();
        let http = Http::new(format!("http://{}", server.addr));
        TestNode {
            server,
            data_dir,
            backend: memory,
            http,
        }
    }

    /// Init with `shares`/`threshold`, unseal with the first keys; returns
    /// the init response.
    pub async fn init_unsealed(&self, shares: u32, threshold: u32) -> Value {
        let (code, init) = self
            .http
            .post(
                "/v1/sys/init",
                None,
                json!({"shares": shares, "threshold": threshold}),
            )
            .await;
        assert_eq!(code, 200, "{init}");
        for k in init["unseal_keys"]
            .as_array()
            .unwrap()
            .iter()
            .take(threshold as usize)
        {
            let (code, body) = self
                .http
                .post("/v1/sys/unseal", None, json!({"key": k}))
                .await;
            assert_eq!(code, 200, "{body}");
        }
        init
    }

    /// An access token for `ns` with `policies`.
    pub async fn login(
        &self,
        access_key: &Value,
        ns: &str,
        policies: &[&str],
        ttl: Option<&str>,
    ) -> String {
        self.http.login(access_key, ns, policies, ttl).await
    }
}

/// A small JSON-over-HTTP client returning (status, body).
pub struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    pub fn new(base: String) -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            base,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request reaches the test node");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (code, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body.to_string()))
            .await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, token, Some(body.to_string()))
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, token, None).await
    }
}

impl Http {
    /// An access token for `ns` with `policies`, minted with `access_key`.
    pub async fn login(
        &self,
        access_key: &Value,
        ns: &str,
        policies: &[&str],
        ttl: Option<&str>,
    ) -> String {
        let mut body = json!({"access_key": access_key, "namespace": ns, "policies": policies});
        if let Some(t) = ttl {
            body["ttl"] = json!(t);
        }
        let (code, resp) = self.post("/v1/auth/access-key/login", None, body).await;
        assert_eq!(code, 200, "{resp}");
        resp["token"].as_str().unwrap().to_string()
    }

    /// Send a GET with the path exactly as given (no client-side
    /// normalisation of `..`, unlike URL libraries and curl's default).
    pub async fn raw_get(&self, path: &str, token: &str) -> (u16, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.base.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        let value = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.to_string()));
        (code, value)
    }
}

/// Assert an error body has the shape `{"error": {"code", "message"}}`.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

impl Http {
    /// Send a request with the given extra headers and no bearer token
    /// (e.g. `X-KStash-Token`, or a malformed `Authorization`).
    pub async fn send_with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request reaches the test node");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (code, value)
    }
}

// ----- in-process clusters ---------------------------------------------------

/// Cluster certificates for loopback nodes, named `127.0.0.1` and
/// `localhost` (made by `kstash operator cluster-certs`' function).
pub struct ClusterCerts {
    _dir: tempfile::TempDir,
    pub files: kstash::raft::tls::CertFiles,
}

impl ClusterCerts {
    pub fn make() -> ClusterCerts {
        let dir = tempfile::Builder::new()
            .prefix("certs-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let files = kstash::raft::tls::make_cluster_certs(
            &dir.path().join("cluster"),
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .unwrap();
        ClusterCerts { _dir: dir, files }
    }

    /// The certificate and key of node name `name`.
    pub fn node(&self, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let (_, cert, key) = self
            .files
            .nodes
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no certificate for {name}"));
        (cert.clone(), key.clone())
    }
}

/// How a cluster node is started; kept (with the ports it bound) to
/// restart it over the same data dir and addresses.
#[derive(Clone, Debug)]
pub struct ClusterNodeSpec {
    pub id: u64,
    pub data_dir: std::path::PathBuf,
    /// Port 0 at first; the bound address after a start.
    pub api_addr: std::net::SocketAddr,
    /// Port 0 at first; the bound address after a start.
    pub cluster_addr: std::net::SocketAddr,
    /// The host peers dial (`127.0.0.1` or `localhost`); also the name of
    /// the node's certificate.
    pub host: String,
    pub bootstrap: bool,
    pub join: Vec<String>,
    /// The storage backend; a restart over this spec reopens the same one.
    pub backend: TestBackend,
}

impl ClusterNodeSpec {
    /// Node `id` with its data dir under `root`, on free loopback ports.
    pub fn new(id: u64, root: &std::path::Path, host: &str) -> ClusterNodeSpec {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        // A name (not an IP) must be advertised with a port known before
        // start: reserve one.
        let cluster_addr = if host == "127.0.0.1" {
            any
        } else {
            std::net::TcpListener::bind(any)
                .unwrap()
                .local_addr()
                .unwrap()
        };
        ClusterNodeSpec {
            id,
            data_dir: root.join(format!("node-{id}")),
            api_addr: any,
            cluster_addr,
            host: host.to_string(),
            bootstrap: false,
            join: Vec::new(),
            backend: TestBackend::Memory,
        }
    }

    /// The cluster address peers dial.
    pub fn advertised(&self) -> String {
        format!("{}:{}", self.host, self.cluster_addr.port())
    }

    /// The node's config: plaintext API on loopback, mutual TLS on the
    /// cluster port, short Raft timings.
    pub fn config(&self, certs: &ClusterCerts) -> Config {
        let (cert, key) = certs.node(&self.host);
        let mut args = ServerArgs {
            tls_disable: Some(true),
            api_addr: Some(self.api_addr),
            data_dir: Some(self.data_dir.clone()),
            node_id: Some(self.id),
            cluster_addr: Some(self.cluster_addr),
            cluster_ca: Some(certs.files.ca_cert.clone()),
            cluster_cert: Some(cert),
            cluster_key: Some(key),
            bootstrap: Some(self.bootstrap),
            join: Some(self.join.clone()),
            election_timeout_min_ms: Some(400),
            election_timeout_max_ms: Some(800),
            heartbeat_interval_ms: Some(100),
            ..Default::default()
        };
        if self.host != "127.0.0.1" || self.cluster_addr.port() != 0 {
            args.advertise_cluster_addr = Some(self.advertised());
        }
        args.resolve().expect("cluster test config is valid")
    }
}

/// A running cluster node.
pub struct ClusterNode {
    pub spec: ClusterNodeSpec,
    pub server: Server,
    pub http: Http,
    /// The backend the node runs over, for tests that read what it stores.
    pub backend: NodeBackend,
}

impl ClusterNode {
    /// Start `spec` over its backend (memory: a fresh, empty one, which a
    /// restarted node refills from its snapshot and log; etcd: the node's
    /// prefix, as the last run left it); records the bound ports.
    pub async fn start(
        spec: ClusterNodeSpec,
        certs: &ClusterCerts,
        options: kstash::server::ServerOptions,
    ) -> anyhow::Result<ClusterNode> {
        Self::start_tweaked(spec, certs, options, |_| {}).await
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.spec.id
    }

    /// Voters in this node's view of the membership.
    pub fn voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .server
            .replica()
            .members()
            .into_iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        v.sort_unstable();
        v
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.server.replica().raft_status().leader
    }

    /// The index of the last log entry this node applied.
    pub fn applied(&self) -> u64 {
        self.server
            .replica()
            .raft_status()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// Stop the node; its data dir stays.
    pub async fn stop(self) -> ClusterNodeSpec {
        self.server.shutdown().await.unwrap();
        self.spec
    }
}

/// Initialise `nodes` 1-of-1 through the first and unseal it, which passes
/// the key on to every peer; a peer that missed it (busy, or not caught up
/// with the init yet) gets the key directly, as an operator would give it.
/// The init answer.
pub async fn init_and_unseal(nodes: &[ClusterNode], timeout: Duration) -> Value {
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 1, "threshold": 1}))
        .await;
    assert_eq!(code, 200, "{init}");
    let key = init["unseal_keys"][0].clone();
    let (code, body) = nodes[0]
        .http
        .post("/v1/sys/unseal", None, json!({ "key": key }))
        .await;
    assert_eq!(code, 200, "{body}");
    wait_until(timeout, "every node is unsealed", || {
        let key = key.clone();
        async move {
            for n in nodes.iter().filter(|n| n.server.node.is_sealed()) {
                let _ = n
                    .http
                    .post("/v1/sys/unseal", None, json!({ "key": key }))
                    .await;
            }
            nodes.iter().all(|n| !n.server.node.is_sealed())
        }
    })
    .await;
    init
}

/// Poll `check` every 50 ms until it returns true; panic after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- fault injection -------------------------------------------------------

/// A switchable set of cut directed links `(from, to)`, shared by every
/// node of a test cluster through its link filter.
#[derive(Clone, Default)]
pub struct LinkCuts(Arc<Mutex<std::collections::HashSet<(u64, u64)>>>);

impl LinkCuts {
    /// Server options whose link filter drops every RPC over a cut link.
    pub fn options(&self) -> kstash::server::ServerOptions {
        let cuts = self.0.clone();
        kstash::server::ServerOptions {
            link_filter: Some(Arc::new(move |from, to| {
                !cuts.lock().unwrap().contains(&(from, to))
            })),
        }
    }

    /// Cut `node` off from each of `others`, both directions.
    pub fn isolate(&self, node: u64, others: &[u64]) {
        let mut cuts = self.0.lock().unwrap();
        for &o in others.iter().filter(|&&o| o != node) {
            cuts.insert((node, o));
            cuts.insert((o, node));
        }
    }

    /// Restore every link.
    pub fn heal(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl ClusterNode {
    /// Like [`ClusterNode::start`], with `tweak` applied to the resolved
    /// config (e.g. a low `snapshot_threshold`).
    pub async fn start_tweaked(
        mut spec: ClusterNodeSpec,
        certs: &ClusterCerts,
        options: kstash::server::ServerOptions,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<ClusterNode> {
        capture_logs();
        kstash::data_dir::create_private_dir(&spec.data_dir)?;
        let mut config = spec.config(certs);
        tweak(&mut config);
        let backend = spec.backend.open();
        let server = Server::start_with(
            &config,
            backend.as_backend(),
            Arc::new(SystemClock),
            options,
        )
        .await?;
        spec.api_addr = server.addr;
        spec.cluster_addr = server.cluster_addr().expect("a cluster node");
        let http = Http::new(format!("http://{}", server.addr));
        Ok(ClusterNode {
            spec,
            server,
            http,
            backend,
        })
    }

    /// openraft's metrics on this node, now.
    pub fn metrics(&self) -> openraft::RaftMetrics<u64, kstash::raft::types::NodeInfo> {
        self.server.replica().raft().metrics().borrow().clone()
    }
}

/// Node 1 bootstraps and nodes 2 and 3 join through it, every node behind
/// `cuts`, over a memory backend and with `tweak` applied to its config;
/// returns once all three see voters 1, 2, 3 (within `settle`).
pub async fn three_node_cluster(
    root: &std::path::Path,
    certs: &ClusterCerts,
    cuts: &LinkCuts,
    tweak: impl Fn(&mut Config),
    settle: Duration,
) -> Vec<ClusterNode> {
    three_node_cluster_on(&BackendKind::Memory, root, certs, cuts, tweak, settle).await
}

/// [`three_node_cluster`] with every node over a backend of `kind` (etcd:
/// one prefix per node).
pub async fn three_node_cluster_on(
    kind: &BackendKind,
    root: &std::path::Path,
    certs: &ClusterCerts,
    cuts: &LinkCuts,
    tweak: impl Fn(&mut Config),
    settle: Duration,
) -> Vec<ClusterNode> {
    let mut spec1 = ClusterNodeSpec::new(1, root, "127.0.0.1");
    spec1.bootstrap = true;
    spec1.backend = kind.for_node(1);
    let n1 = ClusterNode::start_tweaked(spec1, certs, cuts.options(), &tweak)
        .await
        .unwrap();
    wait_until(settle, "node 1 leads its new cluster", || async {
        n1.leader() == Some(1)
    })
    .await;
    let mut nodes = vec![n1];
    for id in [2, 3] {
        let mut spec = ClusterNodeSpec::new(id, root, "127.0.0.1");
        spec.join = vec![nodes[0].spec.advertised()];
        spec.backend = kind.for_node(id);
        let node = ClusterNode::start_tweaked(spec, certs, cuts.options(), &tweak)
            .await
            .unwrap();
        nodes.push(node);
    }
    for n in &nodes[1..] {
        assert_eq!(
            n.server.wait_joined(settle).await,
            kstash::server::JoinState::Joined
        );
    }
    wait_until(settle, "every node sees voters 1, 2, 3", || async {
        nodes.iter().all(|n| n.voters() == [1, 2, 3])
    })
    .await;
    nodes
}

// ----- storage backends of cluster nodes -------------------------------------

/// The kind of storage backend a test cluster's nodes run over.
#[derive(Clone, Debug)]
pub enum BackendKind {
    /// A fresh memory backend at every node start.
    Memory,
    /// One real etcd for the whole cluster, each node under its own prefix.
    #[cfg(feature = "etcd")]
    Etcd(Arc<EtcdServer>),
}

impl BackendKind {
    /// A real etcd for one test (see [`EtcdServer::start`]): `None`, after a
    /// notice, where none is installed, so the test can return early; with
    /// `CI=true` a missing etcd panics instead, failing the test.
    #[cfg(feature = "etcd")]
    pub fn etcd() -> Option<BackendKind> {
        EtcdServer::start().map(|e| BackendKind::Etcd(Arc::new(e)))
    }

    /// `memory` or `etcd`.
    pub fn name(&self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            #[cfg(feature = "etcd")]
            BackendKind::Etcd(_) => "etcd",
        }
    }

    /// The backend of a new node `id`: memory, or a prefix no other node
    /// (of this or any other test) uses.
    #[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
    pub fn for_node(&self, id: u64) -> TestBackend {
        match self {
            BackendKind::Memory => TestBackend::Memory,
            #[cfg(feature = "etcd")]
            BackendKind::Etcd(server) => TestBackend::Etcd {
                prefix: server.unique_prefix(&format!("node-{id}")),
                server: server.clone(),
            },
        }
    }
}

/// The backend of one cluster node, as its spec records it.
#[derive(Clone, Debug, Default)]
pub enum TestBackend {
    /// A fresh, empty memory backend at each start.
    #[default]
    Memory,
    /// The node's own prefix on a shared etcd; every start reopens it.
    #[cfg(feature = "etcd")]
    Etcd {
        server: Arc<EtcdServer>,
        prefix: String,
    },
}

/// Call timeout of the etcd backends of test nodes.
#[cfg(feature = "etcd")]
const ETCD_TIMEOUT: Duration = Duration::from_secs(10);

impl TestBackend {
    /// Make (memory) or connect to (etcd) the backend.
    fn open(&self) -> NodeBackend {
        match self {
            TestBackend::Memory => NodeBackend::Memory(Arc::new(MemoryBackend::new())),
            #[cfg(feature = "etcd")]
            TestBackend::Etcd { server, prefix } => {
                let backend = EtcdBackend::connect(&server.endpoints(), prefix, ETCD_TIMEOUT)
                    .unwrap_or_else(|e| panic!("connect to the test etcd under {prefix}: {e}"));
                NodeBackend::Etcd {
                    backend: Arc::new(backend),
                    prefix: prefix.clone(),
                }
            }
        }
    }
}

/// A running node's backend.
pub enum NodeBackend {
    Memory(Arc<MemoryBackend>),
    #[cfg(feature = "etcd")]
    Etcd {
        backend: Arc<EtcdBackend>,
        prefix: String,
    },
}

impl NodeBackend {
    fn as_backend(&self) -> Arc<dyn Backend> {
        match self {
            NodeBackend::Memory(m) => m.clone(),
            #[cfg(feature = "etcd")]
            NodeBackend::Etcd { backend, .. } => backend.clone(),
        }
    }

    /// Every pair the node stores, keys as the storage holds them (etcd:
    /// read raw, the node's prefix included, and only under it).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            NodeBackend::Memory(m) => m.dump(),
            #[cfg(feature = "etcd")]
            NodeBackend::Etcd { backend, prefix } => backend
                .raw_dump()
                .expect("read the test etcd")
                .into_iter()
                .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
                .collect(),
        }
    }

    /// [`NodeBackend::dump`] with the node's prefix taken off the keys, so
    /// the state of different nodes compares equal.
    pub fn state(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            NodeBackend::Memory(m) => m.dump(),
            #[cfg(feature = "etcd")]
            NodeBackend::Etcd { prefix, .. } => self
                .dump()
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_vec(), v))
                .collect(),
        }
    }
}
