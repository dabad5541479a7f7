//! A cluster of real `kstash server` processes on loopback, for black-box
//! tests: each node is a child process of the test with its own data dir,
//! a plaintext REST API on a free `127.0.0.1` port, and a mutual-TLS
//! cluster port with certificates made by `kstash operator cluster-certs`.
//!
//! Invariants: no child outlives its [`ProcNode`] (drop sends SIGKILL and
//! reaps it), so a failing test never leaves a server running; every wait
//! is bounded; a node restarts with the same command line, data dir and
//! ports; each node's stdout and stderr go to `node-<id>.log` next to its
//! data dir, and a test that panics prints the tail of every log and keeps
//! the cluster's directory for a post-mortem.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The `kstash` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kstash");

/// Raft timings given to every node: short, so failover tests stay quick.
pub const ELECTION_MIN_MS: u64 = 400;
/// See [`ELECTION_MIN_MS`].
pub const ELECTION_MAX_MS: u64 = 800;
/// See [`ELECTION_MIN_MS`].
pub const HEARTBEAT_MS: u64 = 100;

/// Longest wait for a process to answer on its client port.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of each node's log printed when a test fails.
const TAIL_LINES: usize = 60;

/// Poll `check` every `every` until it returns `Some`; panic naming `what`
/// after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, every: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// A JSON-over-HTTP client for one node that reports connection failures
/// as errors (a node may be down or still starting) instead of panicking.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for `http://addr` whose requests give up after `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(2))
                .build()
                .expect("a reqwest client"),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:8201`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send `method path` with an optional bearer token and JSON body;
    /// returns (status, body), or an error when no answer came.
    pub async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((code, value))
    }

    pub async fn try_get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        self.try_send(reqwest::Method::GET, path, token, None).await
    }

    pub async fn try_post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<(u16, Value)> {
        self.try_send(reqwest::Method::POST, path, token, Some(&body))
            .await
    }

    pub async fn try_put(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<(u16, Value)> {
        self.try_send(reqwest::Method::PUT, path, token, Some(&body))
            .await
    }

    /// Like [`Api::try_get`]; panics when the node does not answer.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.try_get(path, token)
            .await
            .unwrap_or_else(|e| panic!("GET {}{path}: {e:#}", self.base))
    }

    /// Like [`Api::try_post`]; panics when the node does not answer.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.try_post(path, token, body)
            .await
            .unwrap_or_else(|e| panic!("POST {}{path}: {e:#}", self.base))
    }

    /// Like [`Api::try_put`]; panics when the node does not answer.
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.try_put(path, token, body)
            .await
            .unwrap_or_else(|e| panic!("PUT {}{path}: {e:#}", self.base))
    }

    /// `GET /v1/sys/status` (no credential; answers sealed or not).
    pub async fn status(&self) -> anyhow::Result<Value> {
        let (code, st) = self.try_get("/v1/sys/status", None).await?;
        if code != 200 {
            bail!("status answered {code}: {st}");
        }
        Ok(st)
    }
}

/// The cluster CA and the node certificates, as `kstash operator
/// cluster-certs --format json` listed them.
pub struct CertFiles {
    pub ca_cert: PathBuf,
    /// (name, certificate, private key) per node name.
    pub nodes: Vec<(String, PathBuf, PathBuf)>,
}

impl CertFiles {
    /// Run `kstash operator cluster-certs --out DIR NAME...`.
    pub fn make(dir: &Path, names: &[&str]) -> anyhow::Result<CertFiles> {
        let out = Command::new(BIN)
            .args(["operator", "cluster-certs", "--format", "json", "--out"])
            .arg(dir)
            .args(names)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .context("running kstash operator cluster-certs")?;
        if !out.status.success() {
            bail!(
                "cluster-certs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let listed: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
        let path = |v: &Value| PathBuf::from(v.as_str().unwrap_or_default());
        let nodes = listed["nodes"]
            .as_array()
            .context("cluster-certs listed no nodes")?
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap_or_default().to_string(),
                    path(&n["cert"]),
                    path(&n["key"]),
                )
            })
            .collect();
        Ok(CertFiles {
            ca_cert: path(&listed["ca_cert"]),
            nodes,
        })
    }

    fn node(&self, name: &str) -> (&Path, &Path) {
        let (_, cert, key) = self
            .nodes
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no cluster certificate for {name}"));
        (cert, key)
    }
}

/// Distinct free loopback ports, all held at once while they are picked.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One `kstash server` process (running or not) and how to start it again.
pub struct ProcNode {
    pub id: u64,
    /// The client (REST) address.
    pub api_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the process's stdout and stderr go (appended on restarts).
    pub log: PathBuf,
    pub api: Api,
    args: Vec<OsString>,
    child: Option<Child>,
    starts: u32,
}

impl ProcNode {
    /// A node (not started) that runs `kstash` with `args`, logging to `log`.
    pub fn new(
        id: u64,
        api_addr: SocketAddr,
        data_dir: PathBuf,
        log: PathBuf,
        args: Vec<OsString>,
    ) -> ProcNode {
        ProcNode {
            id,
            api_addr,
            data_dir,
            log,
            api: Api::new(api_addr, Duration::from_secs(10)),
            args,
            child: None,
            starts: 0,
        }
    }

    /// Spawn the process (stdout and stderr appended to the log). Does not
    /// wait for it; see [`ProcNode::wait_up`].
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(
            log,
            "\n===== start #{} of node {}: {BIN} {} =====",
            self.starts,
            self.id,
            self.args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )?;
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The flags say everything: no KSTASH_* or RUST_LOG from the
        // environment of whoever runs the tests. Plain logs (no colours).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KSTASH_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1");
        self.child = Some(cmd.spawn().context("spawning kstash server")?);
        Ok(())
    }

    /// SIGKILL the process (`Child::kill`) and reap it. No-op when it is
    /// not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether a process was started and is still running; a process that
    /// exited is reaped and reported in the error.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("node {} is not running", self.id);
        };
        if let Some(exit) = child.try_wait()? {
            self.child = None;
            bail!(
                "node {} exited ({exit}); log tail:\n{}",
                self.id,
                self.log_tail(TAIL_LINES)
            );
        }
        Ok(())
    }

    /// Wait until the process answers `GET /v1/sys/status`; returns that
    /// status. Panics (with the log tail) if the process exits first or
    /// `START_TIMEOUT` passes.
    pub async fn wait_up(&mut self) -> Value {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Err(e) = self.check_running() {
                panic!("{e:#}");
            }
            if let Ok(st) = self.api.status().await {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not answer on {} within {START_TIMEOUT:?}; log tail:\n{}",
                self.id,
                self.api.base(),
                self.log_tail(TAIL_LINES)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is running (as far as the harness knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last `n` lines of the node's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three `kstash server` processes: node 1 bootstraps, nodes 2 and 3 join
/// through node 1 (node 2 is advertised by name, `localhost`, the others by
/// IP, as in the README's walk-through).
pub struct ProcCluster {
    pub nodes: Vec<ProcNode>,
    /// Declared last: dropped after every node was killed.
    root: Option<tempfile::TempDir>,
}

impl ProcCluster {
    /// Make certificates, start node 1 and wait until it leads, then start
    /// nodes 2 and 3 and wait until node 1 lists all three as reachable
    /// members. `name` prefixes the cluster's directory.
    pub async fn start(name: &str) -> ProcCluster {
        Self::start_with(name, &[]).await
    }

    /// [`ProcCluster::start`] with `extra` flags appended to every node's
    /// `kstash server` command line (e.g. `--encryption-limit 10`).
    pub async fn start_with(name: &str, extra: &[&str]) -> ProcCluster {
        let log_level = std::env::var("KSTASH_IT_LOG").unwrap_or_else(|_| "info".into());
        Self::start_with_log(name, extra, Some(&log_level)).await
    }

    /// [`ProcCluster::start_with`] with the log filter `log` (`--log`), or
    /// with none: the nodes then log at the config's default.
    pub async fn start_with_log(name: &str, extra: &[&str], log: Option<&str>) -> ProcCluster {
        let root = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("a cluster dir");
        let certs = CertFiles::make(&root.path().join("certs"), &["127.0.0.1", "localhost"])
            .expect("kstash operator cluster-certs");
        // API ports of nodes 1, 2, 3, then their cluster ports.
        let ports = free_ports(6);
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let api_addr: SocketAddr = format!("127.0.0.1:{}", ports[id as usize - 1])
                .parse()
                .unwrap();
            let cluster_port = ports[id as usize + 2];
            let cluster_addr: SocketAddr = format!("127.0.0.1:{cluster_port}").parse().unwrap();
            let host = if id == 2 { "localhost" } else { "127.0.0.1" };
            let advertised = format!("{host}:{cluster_port}");
            let (cert, key) = certs.node(host);
            let data_dir = root.path().join(format!("node-{id}"));
            let mut args: Vec<OsString> = vec![
                "server".into(),
                "--tls-disable".into(),
                "--node-id".into(),
                id.to_string().into(),
                "--api-addr".into(),
                api_addr.to_string().into(),
                "--cluster-addr".into(),
                cluster_addr.to_string().into(),
                "--advertise-cluster-addr".into(),
                advertised.into(),
                "--data-dir".into(),
                data_dir.clone().into(),
                "--cluster-ca".into(),
                certs.ca_cert.clone().into(),
                "--cluster-cert".into(),
                cert.into(),
                "--cluster-key".into(),
                key.into(),
                "--election-timeout-min-ms".into(),
                ELECTION_MIN_MS.to_string().into(),
                "--election-timeout-max-ms".into(),
                ELECTION_MAX_MS.to_string().into(),
                "--heartbeat-interval-ms".into(),
                HEARTBEAT_MS.to_string().into(),
            ];
            if let Some(log) = log {
                args.extend(["--log".into(), log.into()]);
            }
            args.extend(extra.iter().map(OsString::from));
            if id == 1 {
                args.push("--bootstrap".into());
            } else {
                args.push("--join".into());
                args.push(format!("127.0.0.1:{}", ports[3]).into());
            }
            nodes.push(ProcNode {
                id,
                api_addr,
                log: root.path().join(format!("node-{id}.log")),
                data_dir,
                api: Api::new(api_addr, Duration::from_secs(10)),
                args,
                child: None,
                starts: 0,
            });
        }
        let mut cluster = ProcCluster {
            nodes,
            root: Some(root),
        };
        cluster.nodes[0].spawn().expect("start node 1");
        cluster.nodes[0].wait_up().await;
        let api = cluster.nodes[0].api.clone();
        wait_for(
            START_TIMEOUT,
            Duration::from_millis(50),
            "node 1 leads its new cluster",
            || {
                let api = api.clone();
                async move { api.status().await.ok().filter(|st| st["leader"] == true) }
            },
        )
        .await;
        for i in 1..3 {
            cluster.nodes[i].spawn().expect("start a joining node");
        }
        for i in 1..3 {
            cluster.nodes[i].wait_up().await;
        }
        wait_for(
            START_TIMEOUT,
            Duration::from_millis(100),
            "node 1 lists nodes 1, 2, 3 as reachable members",
            || {
                let api = api.clone();
                async move {
                    let st = api.status().await.ok()?;
                    let mut up: Vec<u64> = st["peers"]
                        .as_array()?
                        .iter()
                        .filter(|p| p["reachable"] == true)
                        .filter_map(|p| p["id"].as_u64())
                        .collect();
                    up.sort_unstable();
                    (up == [1, 2, 3]).then_some(())
                }
            },
        )
        .await;
        cluster
    }

    /// The node with id `id`.
    pub fn node(&self, id: u64) -> &ProcNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut ProcNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The client of node `id`.
    pub fn api(&self, id: u64) -> Api {
        self.node(id).api.clone()
    }

    /// SIGKILL node `id`.
    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).kill();
    }

    /// Start node `id` again (same command line, data dir and ports);
    /// does not wait for it.
    pub fn spawn(&mut self, id: u64) {
        self.node_mut(id).spawn().expect("restart a node");
    }

    /// Start node `id` again (same command line, data dir and ports) and
    /// wait until it answers; returns its first status.
    pub async fn restart(&mut self, id: u64) -> Value {
        let node = self.node_mut(id);
        // The ports were just released by the killed process; a bind can
        // still race with nothing else (loopback, fixed ports), so one
        // spawn is enough.
        node.spawn().expect("restart a node");
        node.wait_up().await
    }

    /// Every running node's status, fetched concurrently, in node order
    /// (`None`: no answer or not running).
    pub async fn statuses(&self) -> Vec<(u64, Option<Value>)> {
        let calls = self.nodes.iter().map(|n| {
            let api = n.api.clone();
            let running = n.is_running();
            let id = n.id;
            async move {
                let st = if running {
                    api.status().await.ok()
                } else {
                    None
                };
                (id, st)
            }
        });
        futures_join_all(calls).await
    }

    /// The leader every answering running node agrees on: a node that says
    /// it leads and that every other answering node names as leader.
    pub async fn agreed_leader(&self) -> Option<u64> {
        let sts = self.statuses().await;
        let claim: Vec<u64> = sts
            .iter()
            .filter(|(_, st)| st.as_ref().is_some_and(|s| s["leader"] == true))
            .map(|(id, _)| *id)
            .collect();
        let [leader] = claim[..] else { return None };
        let agreed = sts
            .iter()
            .filter_map(|(_, st)| st.as_ref())
            .all(|st| named_leader(st) == Some(leader));
        agreed.then_some(leader)
    }

    /// Wait until a leader is agreed on (see [`ProcCluster::agreed_leader`]).
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        wait_for(
            timeout,
            Duration::from_millis(100),
            "the nodes agree on a leader",
            || self.agreed_leader(),
        )
        .await
    }

    /// Wait until every node reports the same last applied index in its own
    /// peers entry, and every node's peer list agrees; returns that index.
    pub async fn wait_same_applied(&self, timeout: Duration) -> u64 {
        wait_for(
            timeout,
            Duration::from_millis(100),
            "every node reports the same last applied index",
            || async {
                let sts = self.statuses().await;
                let mut seen = Vec::new();
                for (id, st) in &sts {
                    let st = st.as_ref()?;
                    for p in st["peers"].as_array()? {
                        if p["id"] == *id || p["reachable"] == true {
                            seen.push(p["last_applied"].as_u64()?);
                        }
                    }
                }
                let first = *seen.first()?;
                (seen.len() >= sts.len() * sts.len() && seen.iter().all(|a| *a == first))
                    .then_some(first)
            },
        )
        .await
    }

    /// Print the tail of every node's log (to stderr).
    pub fn print_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "----- node {} (data dir {}) log {}, last {TAIL_LINES} lines -----\n{}",
                n.id,
                n.data_dir.display(),
                n.log.display(),
                n.log_tail(TAIL_LINES)
            );
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        if std::thread::panicking() {
            self.print_logs();
            if let Some(root) = self.root.take() {
                let kept = root.keep();
                eprintln!("----- kept the cluster dir {} -----", kept.display());
            }
        }
    }
}

/// The id a status names as leader in its peer list (this node's view).
pub fn named_leader(st: &Value) -> Option<u64> {
    let leaders: Vec<u64> = st["peers"]
        .as_array()?
        .iter()
        .filter(|p| p["leader"] == true)
        .filter_map(|p| p["id"].as_u64())
        .collect();
    match leaders[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// Await every future; results in order. (A tiny `join_all` so the test
/// binary needs no `futures` crate.)
pub async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a joined task"));
    }
    out
}

/// `POST /v1/sys/init` with `shares`, `threshold` and `gatekeeper_tokens`
/// through `api`; returns the response.
pub async fn init(api: &Api, shares: u32, threshold: u32, gatekeeper_tokens: u32) -> Value {
    let (code, body) = api
        .post(
            "/v1/sys/init",
            None,
            json!({"shares": shares, "threshold": threshold, "gatekeeper_tokens": gatekeeper_tokens}),
        )
        .await;
    assert_eq!(code, 200, "init: {body}");
    body
}

/// Log in with the access key through `api`: an admin token for `ns`.
pub async fn login(api: &Api, access_key: &Value, ns: &str) -> String {
    let (code, body) = api
        .post(
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": access_key, "namespace": ns, "policies": ["admin"]}),
        )
        .await;
    assert_eq!(code, 200, "login: {body}");
    body["token"].as_str().expect("a token").to_string()
}

impl ProcCluster {
    /// Wait until every running node's view of the membership (`GET
    /// /v1/sys/raft/peers`, which needs no credential) holds nodes 1, 2 and
    /// 3 as voters.
    pub async fn wait_voters(&self, timeout: Duration) {
        wait_for(
            timeout,
            Duration::from_millis(100),
            "every node sees voters 1, 2, 3",
            || async {
                for n in self.nodes.iter().filter(|n| n.is_running()) {
                    let (code, body) = n.api.try_get("/v1/sys/raft/peers", None).await.ok()?;
                    if code != 200 {
                        return None;
                    }
                    let mut voters: Vec<u64> = body["peers"]
                        .as_array()?
                        .iter()
                        .filter(|p| p["role"] == "voter")
                        .filter_map(|p| p["id"].as_u64())
                        .collect();
                    voters.sort_unstable();
                    if voters != [1, 2, 3] {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }

    /// Unseal with one gatekeeper token through node `via`, retrying while
    /// the cluster cannot take it yet (no leader: 503, or no answer), until
    /// every running node reports unsealed. A retry uses the same token,
    /// which inside its grace window answers with the same replacement.
    /// Returns (the last unseal response, attempts).
    pub async fn unseal_with_token(
        &self,
        via: u64,
        token: &str,
        timeout: Duration,
    ) -> (Value, u32) {
        let api = self.api(via);
        let deadline = Instant::now() + timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let answer = api
                .try_post("/v1/sys/unseal", None, json!({ "gatekeeper_token": token }))
                .await;
            match answer {
                Ok((200, body)) => {
                    let all = self
                        .statuses()
                        .await
                        .iter()
                        .all(|(_, st)| st.as_ref().is_some_and(|s| s["sealed"] == false));
                    if all {
                        return (body, attempts);
                    }
                    eprintln!("unseal through node {via} answered, but not every node is open yet: {body}");
                }
                Ok((code, body)) => {
                    assert!(
                        code == 503,
                        "a gatekeeper-token unseal through node {via} was refused ({code}): {body}"
                    );
                }
                Err(e) => eprintln!("unseal through node {via}: no answer: {e:#}"),
            }
            assert!(
                Instant::now() < deadline,
                "the cluster was not unsealed within {timeout:?} ({attempts} attempts)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
