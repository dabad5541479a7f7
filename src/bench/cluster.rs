//! Three-node clusters on loopback for `kstash bench compare` and
//! `kstash bench kms`: three `kstash server` processes (node 1 optionally
//! with flags of its own, such as a KMS socket), or three `etcd` members,
//! plus any helper process started beside them (a `kstash kms-plugin`).
//! Every member is a child process with its own data dir under a scratch
//! directory, and its stdout and stderr go to `<logs>/<member>.log`.
//!
//! Invariants:
//! - Production settings: the sled Raft log with durable appends, the memory
//!   state machine, default Raft timings and mutual TLS between kstash nodes;
//!   etcd with its defaults (fsync on). The one difference from a deployment
//!   is a plaintext client API on loopback, the same for both stores.
//! - No child outlives its [`Member`]: dropping one (also on an error or a
//!   panic) sends SIGTERM, waits up to [`STOP_GRACE`], then sends SIGKILL
//!   and reaps it. The scratch directory is removed once every member of its
//!   [`LocalCluster`] is stopped.
//! - Every wait is bounded. A failed start names the member and ends with
//!   the tail of its log (of every member's log when no single one failed).
//! - The secrets init makes (unseal key, gatekeeper token, access key) stay
//!   in memory and never reach a file or a log line; the access key is kept
//!   (in memory) only to log in for more tokens ([`LocalCluster::login`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

use crate::client::wire::{InitRequest, LoginRequest, Status, UnsealRequest};
use crate::client::{Client, ClientOptions};
use crate::secret::SecretString;

/// Longest wait for a cluster to serve: members up, leader elected, and for
/// kstash initialised, unsealed and logged in to.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a member to exit after SIGTERM, before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest run of a short helper command (`--version`, `cluster-certs`).
const HELPER_TIMEOUT: Duration = Duration::from_secs(20);
/// Log lines quoted when a start fails.
const TAIL_LINES: usize = 30;
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(100);
/// The namespace of the bench's access token.
pub const NAMESPACE: &str = "bench";

/// One child process: a store's member.
pub struct Member {
    name: String,
    pid: u32,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// Start `cmd` with stdin closed and stdout and stderr in a new file
    /// `log`, headed by the command line.
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> anyhow::Result<Member> {
        let mut file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        writeln!(file, "===== {name}: {cmd:?} =====")?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", cmd.get_program().display()))?;
        Ok(Member {
            name: name.to_string(),
            pid: child.id(),
            log,
            child: Some(child),
        })
    }

    /// An error about this member, with the tail of its log.
    fn failure(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "{} {what}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, TAIL_LINES)
        )
    }

    /// Fails, with the tail of the log, when the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.failure("is not running"));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(exit)) => {
                self.child = None;
                Err(self.failure(&format!("exited ({exit})")))
            }
            Err(e) => Err(self.failure(&format!("cannot be checked on ({e})"))),
        }
    }

    /// Send SIGTERM, if the process runs.
    fn terminate(&mut self) {
        if let Some(child) = &self.child {
            let pid = rustix::process::Pid::from_child(child);
            // It may have exited already; `reap` handles that.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Wait for the process to exit until `deadline`, then SIGKILL it, and
    /// reap it either way.
    fn reap(&mut self, deadline: Instant) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.terminate();
        self.reap(Instant::now() + STOP_GRACE);
    }
}

/// A directory of its own under a parent, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// Create `<parent>/kstash-bench-<what>-<pid>-<nanos>`.
    pub fn create(parent: &Path, what: &str) -> anyhow::Result<Scratch> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = parent.join(format!(
            "kstash-bench-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the scratch dir {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Three members of one store, serving.
pub struct LocalCluster {
    /// The members' client URLs (`http://127.0.0.1:<port>`).
    pub endpoints: Vec<String>,
    /// kstash only: an admin access token for [`NAMESPACE`].
    token: Option<SecretString>,
    /// kstash only: the access key, to log in for more tokens.
    access_key: Option<SecretString>,
    members: Vec<Member>,
    /// Declared last: removed after the members stopped.
    _scratch: Scratch,
}

impl LocalCluster {
    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.pid).collect()
    }

    /// The access token of a kstash cluster.
    pub fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_ref()
            .map(SecretString::expose)
            .context("this cluster has no access token")
    }

    /// Log in with the access key for a token of [`NAMESPACE`] with
    /// `policies` that lives `ttl` (kstash only).
    pub async fn login(&self, policies: &[String], ttl: Duration) -> anyhow::Result<SecretString> {
        let access_key = self
            .access_key
            .as_ref()
            .context("this cluster has no access key")?;
        let client = Client::new(&ClientOptions {
            addresses: self.endpoints.clone(),
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(10),
        })?;
        let login = client
            .login(&LoginRequest {
                access_key,
                namespace: NAMESPACE,
                policies,
                ttl: Some(ttl.as_secs().max(1)),
            })
            .await
            .with_context(|| format!("kstash login with policies {policies:?} failed"))?;
        Ok(login.token)
    }

    /// Start `cmd` beside the cluster's members (e.g. a `kstash
    /// kms-plugin`), logging to `<logs>/<name>.log`. It is one of
    /// [`Self::pids`] from now on, is stopped with the members, and its
    /// exit fails [`Self::wait_until`].
    pub fn spawn_helper(&mut self, name: &str, cmd: Command, logs: &Path) -> anyhow::Result<()> {
        let log = logs.join(format!("{name}.log"));
        self.members.push(Member::spawn(name, cmd, log)?);
        Ok(())
    }

    /// Stop every member: SIGTERM to all, then at most [`STOP_GRACE`]
    /// for all together before SIGKILL.
    pub fn stop(&mut self) {
        for m in &mut self.members {
            m.terminate();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for m in &mut self.members {
            m.reap(deadline);
        }
    }

    /// Poll `check` until it gives `Some`, failing as soon as a member
    /// exits (with its log) or after [`START_TIMEOUT`] (with every log).
    pub async fn wait_until<T, F, Fut>(&mut self, what: &str, mut check: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for m in &mut self.members {
                m.check_running()
                    .with_context(|| format!("while waiting until {what}"))?;
            }
            if let Some(v) = check().await {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| {
                        format!(
                            "--- {} ({}):\n{}",
                            m.name,
                            m.log.display(),
                            log_tail(&m.log, TAIL_LINES)
                        )
                    })
                    .collect();
                bail!(
                    "timed out after {START_TIMEOUT:?} waiting until {what}\n{}",
                    tails.join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Start three `kstash server` processes from `bin`: node 1 bootstraps,
    /// nodes 2 and 3 join it. Then init (one unseal key, one gatekeeper
    /// token), unseal with the gatekeeper token through node 1 (the unseal
    /// reaches every peer), wait until every node is unsealed and agrees on
    /// a leader, and log in for an admin token of [`NAMESPACE`] that lives
    /// `token_ttl`.
    pub async fn start_kstash(
        bin: &Path,
        scratch: &Path,
        logs: &Path,
        token_ttl: Duration,
    ) -> anyhow::Result<LocalCluster> {
        Self::start_kstash_with(bin, scratch, logs, token_ttl, &[]).await
    }

    /// [`Self::start_kstash`], with `node_1_args` added to node 1's command
    /// line (e.g. `--kms-socket unix:///… --kms-key bench/NAME`).
    pub async fn start_kstash_with(
        bin: &Path,
        scratch: &Path,
        logs: &Path,
        token_ttl: Duration,
        node_1_args: &[std::ffi::OsString],
    ) -> anyhow::Result<LocalCluster> {
        Self::start_kstash_configured(bin, scratch, logs, token_ttl, node_1_args, &[]).await
    }

    /// [`Self::start_kstash_with`], with `every_node_args` added to every
    /// node's command line (e.g. the Kubernetes login's
    /// `--kubernetes-issuer` and `--kubernetes-jwks-file`).
    pub async fn start_kstash_configured(
        bin: &Path,
        scratch: &Path,
        logs: &Path,
        token_ttl: Duration,
        node_1_args: &[std::ffi::OsString],
        every_node_args: &[std::ffi::OsString],
    ) -> anyhow::Result<LocalCluster> {
        let scratch = Scratch::create(scratch, "kstash")?;
        let certs = scratch.0.join("certs");
        let listed = run_helper(
            Command::new(bin)
                .args(["operator", "cluster-certs", "--format", "json", "--out"])
                .arg(&certs)
                .arg("127.0.0.1"),
        )?;
        let listed: serde_json::Value = serde_json::from_slice(&listed)
            .context("cannot read the output of kstash operator cluster-certs")?;
        let cert_path = |v: &serde_json::Value| -> anyhow::Result<PathBuf> {
            v.as_str()
                .map(PathBuf::from)
                .context("kstash operator cluster-certs listed no such file")
        };
        let ca = cert_path(&listed["ca_cert"])?;
        let cert = cert_path(&listed["nodes"][0]["cert"])?;
        let key = cert_path(&listed["nodes"][0]["key"])?;

        // API ports of nodes 1, 2, 3, then their cluster ports.
        let ports = free_ports(6)?;
        let mut cluster = LocalCluster {
            endpoints: ports[..3]
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}"))
                .collect(),
            token: None,
            access_key: None,
            members: Vec::new(),
            _scratch: scratch,
        };
        let clients = cluster
            .endpoints
            .iter()
            .map(|url| {
                Client::new(&ClientOptions {
                    addresses: vec![url.clone()],
                    token: None,
                    ca_cert: None,
                    timeout: Duration::from_secs(5),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for node in 0..3 {
            let cluster_addr = format!("127.0.0.1:{}", ports[3 + node]);
            let mut cmd = Command::new(bin);
            cmd.arg("server")
                .arg("--tls-disable")
                .args(["--node-id", &(node + 1).to_string()])
                .args(["--api-addr", &format!("127.0.0.1:{}", ports[node])])
                .args(["--cluster-addr", &cluster_addr])
                .args(["--advertise-cluster-addr", &cluster_addr])
                .arg("--data-dir")
                .arg(cluster._scratch.0.join(format!("node-{}", node + 1)))
                .args([OsStr::new("--cluster-ca"), ca.as_os_str()])
                .args([OsStr::new("--cluster-cert"), cert.as_os_str()])
                .args([OsStr::new("--cluster-key"), key.as_os_str()])
                .args(every_node_args);
            if node == 0 {
                cmd.arg("--bootstrap").args(node_1_args);
            } else {
                cmd.args(["--join", &format!("127.0.0.1:{}", ports[3])]);
            }
            // The flags say everything: no KSTASH_* or RUST_LOG of ours.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("KSTASH_") || k == "RUST_LOG" {
                    cmd.env_remove(k);
                }
            }
            cmd.env("NO_COLOR", "1");
            let name = format!("kstash-node-{}", node + 1);
            let log = logs.join(format!("{name}.log"));
            cluster.members.push(Member::spawn(&name, cmd, log)?);
            if node == 0 {
                let first = &clients[0];
                cluster
                    .wait_until("kstash node 1 leads its new cluster", || async {
                        first.status().await.ok().filter(|s| s.leader)
                    })
                    .await?;
            }
        }
        let statuses = || async {
            let mut all = Vec::new();
            for c in &clients {
                all.push(c.status().await.ok()?);
            }
            Some(all)
        };
        cluster
            .wait_until(
                "every kstash node answers and node 1 lists three members",
                || async { statuses().await.filter(|all| all[0].peers.len() == 3) },
            )
            .await?;

        let init = clients[0]
            .init(&InitRequest {
                shares: 1,
                threshold: 1,
                gatekeeper_tokens: 1,
            })
            .await
            .context("kstash init failed")?;
        let gatekeeper_token = init
            .gatekeeper_tokens
            .first()
            .context("kstash init made no gatekeeper token")?;
        let unseal = UnsealRequest {
            gatekeeper_token: Some(gatekeeper_token),
            ..UnsealRequest::default()
        };
        // A retry uses the same token, which inside its grace window gets
        // the same answer, and reaches the peers that missed the first one.
        let all_unsealed = |all: &Vec<Status>| all.iter().all(|s| !s.sealed);
        cluster
            .wait_until("every kstash node is unsealed", || async {
                if statuses().await.filter(all_unsealed).is_some() {
                    return Some(());
                }
                clients[0].unseal(&unseal).await.ok()?;
                statuses().await.filter(all_unsealed).map(drop)
            })
            .await?;
        cluster
            .wait_until("every kstash node names the same leader", || async {
                agreed_leader(&statuses().await?)
            })
            .await?;
        let login = clients[0]
            .login(&LoginRequest {
                access_key: &init.access_key,
                namespace: NAMESPACE,
                policies: &["admin".to_string()],
                ttl: Some(token_ttl.as_secs().max(1)),
            })
            .await
            .context("kstash login failed")?;
        cluster.token = Some(login.token);
        cluster.access_key = Some(init.access_key);
        Ok(cluster)
    }

    /// Start three `etcd` members from `bin` (`e0`, `e1`, `e2`, a new
    /// cluster, default durability) and wait until each reports healthy.
    #[cfg(feature = "etcd")]
    pub async fn start_etcd(
        bin: &Path,
        scratch: &Path,
        logs: &Path,
    ) -> anyhow::Result<LocalCluster> {
        use crate::storage::etcd::testing;

        let scratch = Scratch::create(scratch, "etcd")?;
        // Client ports of e0, e1, e2, then their peer ports.
        let ports = free_ports(6)?;
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let initial_cluster: Vec<String> = (0..3)
            .map(|i| format!("e{i}={}", url(ports[3 + i])))
            .collect();
        let mut cluster = LocalCluster {
            endpoints: ports[..3].iter().map(|p| url(*p)).collect(),
            token: None,
            access_key: None,
            members: Vec::new(),
            _scratch: scratch,
        };
        for i in 0..3 {
            let name = format!("e{i}");
            let mut cmd = testing::command(bin);
            cmd.args(["--name", &name])
                .arg("--data-dir")
                .arg(cluster._scratch.0.join(&name))
                .args(["--listen-client-urls", &url(ports[i])])
                .args(["--advertise-client-urls", &url(ports[i])])
                .args(["--listen-peer-urls", &url(ports[3 + i])])
                .args(["--initial-advertise-peer-urls", &url(ports[3 + i])])
                .args(["--initial-cluster", &initial_cluster.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args([
                    "--initial-cluster-token",
                    &format!("kstash-bench-{}", std::process::id()),
                ])
                .args(["--logger", "zap", "--log-outputs", "stderr"]);
            let log = logs.join(format!("etcd-{name}.log"));
            cluster
                .members
                .push(Member::spawn(&format!("etcd {name}"), cmd, log)?);
        }
        let addrs: Vec<std::net::SocketAddr> = ports[..3]
            .iter()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        cluster
            .wait_until("every etcd member reports healthy", || {
                let addrs = addrs.clone();
                async move {
                    let healthy = tokio::task::spawn_blocking(move || {
                        addrs.into_iter().all(testing::healthy)
                    })
                    .await
                    .ok()?;
                    healthy.then_some(())
                }
            })
            .await?;
        Ok(cluster)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The leader every status names, when exactly one node claims to lead.
fn agreed_leader(statuses: &[Status]) -> Option<u64> {
    let claims: Vec<u64> = statuses
        .iter()
        .filter(|s| s.leader)
        .map(|s| s.node_id)
        .collect();
    let [leader] = claims[..] else {
        return None;
    };
    statuses
        .iter()
        .all(|s| s.leader_id == Some(leader))
        .then_some(leader)
}

/// The first line `bin --version` prints, or why there is none.
pub fn version_of(bin: &Path) -> String {
    match run_helper(Command::new(bin).arg("--version")) {
        Ok(out) => String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        Err(e) => format!("unknown ({e:#})"),
    }
}

/// Run a short command to its end (at most [`HELPER_TIMEOUT`]) and return
/// its stdout; a non-zero exit fails with its stderr. For commands whose
/// output fits a pipe's buffer: the output is read once the command ended.
fn run_helper(cmd: &mut Command) -> anyhow::Result<Vec<u8>> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not finish within {HELPER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (Vec::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    if !status.success() {
        bail!("{shown} failed ({status}): {}", err.trim());
    }
    Ok(out)
}

/// `n` distinct loopback ports that were free, all held at once while they
/// were picked. Another process may still take one before a member binds
/// it; that member then fails to start, with its log.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free loopback ports")?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// The last `n` lines of a log file.
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node_id: u64, leader: bool, leader_id: Option<u64>) -> Status {
        Status {
            initialized: true,
            sealed: false,
            threshold: 1,
            shares: 1,
            progress: 0,
            storage: "memory".into(),
            version: "test".into(),
            node_id,
            leader,
            leader_id,
            key_term: None,
            peers: Vec::new(),
            removed: false,
        }
    }

    #[test]
    fn a_leader_counts_only_when_every_node_names_it() {
        let agreed = [
            status(1, false, Some(2)),
            status(2, true, Some(2)),
            status(3, false, Some(2)),
        ];
        assert_eq!(agreed_leader(&agreed), Some(2));
        let lagging = [
            status(1, false, None),
            status(2, true, Some(2)),
            status(3, false, Some(2)),
        ];
        assert_eq!(agreed_leader(&lagging), None);
        let two_claims = [
            status(1, true, Some(1)),
            status(2, true, Some(2)),
            status(3, false, Some(2)),
        ];
        assert_eq!(agreed_leader(&two_claims), None);
    }

    #[test]
    fn a_member_is_stopped_and_reaped_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let member = Member::spawn("sleeper", cmd, dir.path().join("sleeper.log")).unwrap();
        let pid = member.pid;
        let started = Instant::now();
        drop(member);
        assert!(started.elapsed() < STOP_GRACE, "SIGTERM ended it");
        // Reaped: the pid is gone (no zombie left behind).
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_member_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo the port is taken >&2; exit 3"]);
        let mut member = Member::spawn("failing", cmd, dir.path().join("f.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match member.check_running() {
                Err(e) => break e.to_string(),
                Ok(()) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(()) => panic!("the member never exited"),
            }
        };
        assert!(err.contains("failing exited"), "{err}");
        assert!(err.contains("the port is taken"), "{err}");
    }
}
