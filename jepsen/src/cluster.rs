//! The three-node `cluster/` under test, seen from the host: its scripts,
//! its nodes' APIs, and the operator's secrets (unseal keys, gatekeeper
//! tokens, access key) that the harness holds to bring nodes back.
//!
//! Invariant: every fault is made by a `cluster/` script, the same ones a
//! person uses, so the harness never breaks the cluster in a way the scripts
//! cannot undo.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::{str_field, str_list, tls_config, Api, Reply};

/// Container names, in node-index order; kstash-N publishes its API on
/// 127.0.0.1:1820N.
pub const NODES: [&str; 3] = ["kstash-0", "kstash-1", "kstash-2"];
const API_PORT_BASE: u16 = 18200;

/// The namespace every workload writes in.
pub const NAMESPACE: &str = "jepsen";

/// What one node's `GET /v1/sys/status` said.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    /// Raft node id (changes when `cluster/replace` re-adds the node).
    pub node_id: u64,
    /// Sealed or not.
    pub sealed: bool,
    /// The leader this node knows of, by node id.
    pub leader_id: Option<u64>,
    /// Member ids and the container each runs in, as this node sees them.
    pub members: Vec<(u64, usize)>,
}

/// The cluster and the operator's secrets.
pub struct Cluster {
    repo: PathBuf,
    image: String,
    tls: Arc<rustls::ClientConfig>,
    apis: Vec<Api>,
    operator: Mutex<Operator>,
    next_node_id: Mutex<u64>,
    unseals: Mutex<Vec<Instant>>,
}

/// The operator's secrets, as `init` gave them.
#[derive(Default)]
struct Operator {
    unseal_keys: Vec<String>,
    threshold: usize,
    gatekeeper_tokens: Vec<String>,
    access_key: String,
}

/// An error of the harness itself (a script failed, the cluster never came
/// up): the run cannot be a test.
pub type HarnessResult<T> = Result<T, String>;

impl Cluster {
    /// Start a fresh cluster from `image` (volumes wiped), initialise it
    /// (3 shares, threshold 2, 8 gatekeeper tokens) and unseal it.
    pub fn start_fresh(repo: &Path, image: &str, op_timeout: Duration) -> HarnessResult<Self> {
        run_script(repo, image, "down", &["-v"])?;
        run_script(repo, image, "up", &[])?;
        let ca = repo.join("cluster/.state/ca.pem");
        let tls = tls_config(&ca)?;
        let apis = (0..NODES.len())
            .map(|i| {
                Api::new(
                    &format!("https://127.0.0.1:{}", API_PORT_BASE + i as u16),
                    tls.clone(),
                    op_timeout,
                )
            })
            .collect();
        let cluster = Cluster {
            repo: repo.to_path_buf(),
            image: image.to_string(),
            tls,
            apis,
            operator: Mutex::new(Operator::default()),
            next_node_id: Mutex::new(10),
            unseals: Mutex::new(Vec::new()),
        };
        cluster.initialise()?;
        Ok(cluster)
    }

    fn initialise(&self) -> HarnessResult<()> {
        let init = match self.apis[0].init(3, 2, 8) {
            Reply::Ok(v) => v,
            other => return Err(format!("init: {}", other.describe())),
        };
        {
            let mut op = self.operator.lock().unwrap();
            op.unseal_keys = str_list(&init, "unseal_keys");
            op.threshold = 2;
            op.gatekeeper_tokens = str_list(&init, "gatekeeper_tokens");
            op.access_key = str_field(&init, "access_key").ok_or("init gave no access key")?;
            if op.unseal_keys.len() < 2 || op.gatekeeper_tokens.is_empty() {
                return Err("init gave too few unseal keys or gatekeeper tokens".into());
            }
        }
        self.unseal_all(Duration::from_secs(60))?;
        self.wait_leader(Duration::from_secs(30))
    }

    /// The API of node `i`.
    pub fn api(&self, i: usize) -> &Api {
        &self.apis[i]
    }

    /// A new client of node `i` with its own timeout.
    pub fn api_with_timeout(&self, i: usize, timeout: Duration) -> Api {
        Api::new(self.apis[i].base(), self.tls.clone(), timeout)
    }

    /// Log in with the access key: an access token for [`NAMESPACE`] (or
    /// `namespace`) with the `admin` policy, through any node.
    pub fn login(&self, namespace: &str, ttl: &str) -> HarnessResult<String> {
        let key = self.operator.lock().unwrap().access_key.clone();
        let mut last = String::new();
        for round in 0..20 {
            let api = &self.apis[round % NODES.len()];
            match api.login(&key, namespace, &["admin"], ttl) {
                Reply::Ok(v) => return str_field(&v, "token").ok_or("login gave no token".into()),
                other => last = other.describe(),
            }
            sleep(Duration::from_millis(500));
        }
        Err(format!("login: {last}"))
    }

    /// The access key (the token workload logs in with it).
    pub fn access_key(&self) -> String {
        self.operator.lock().unwrap().access_key.clone()
    }

    /// What node `i` says about itself, if it answers.
    pub fn status(&self, i: usize) -> Option<NodeStatus> {
        let Reply::Ok(v) = self.apis[i].status() else {
            return None;
        };
        let members = v
            .get("peers")
            .and_then(Value::as_array)
            .map(|peers| {
                peers
                    .iter()
                    .filter_map(|p| {
                        let id = p.get("id")?.as_u64()?;
                        let addr = p.get("address")?.as_str()?;
                        Some((id, container_of(addr)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(NodeStatus {
            node_id: v.get("node_id").and_then(Value::as_u64).unwrap_or(0),
            sealed: v.get("sealed").and_then(Value::as_bool).unwrap_or(true),
            leader_id: v.get("leader_id").and_then(Value::as_u64),
            members,
        })
    }

    /// The container index of the leader that a majority of nodes name, if
    /// any.
    pub fn leader(&self) -> Option<usize> {
        let statuses: Vec<(usize, NodeStatus)> = (0..NODES.len())
            .filter_map(|i| self.status(i).map(|s| (i, s)))
            .collect();
        let mut votes = [0usize; NODES.len()];
        for (_, s) in &statuses {
            let Some(leader) = s.leader_id else { continue };
            let by_own = statuses
                .iter()
                .find(|(_, o)| o.node_id == leader)
                .map(|(i, _)| *i);
            let by_members = s
                .members
                .iter()
                .find(|(id, _)| *id == leader)
                .map(|(_, c)| *c);
            if let Some(c) = by_own.or(by_members) {
                votes[c] += 1;
            }
        }
        (0..NODES.len()).find(|&c| votes[c] * 2 > NODES.len())
    }

    /// Wait until a majority names a leader.
    pub fn wait_leader(&self, limit: Duration) -> HarnessResult<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.leader().is_some() {
                return Ok(());
            }
            sleep(Duration::from_millis(200));
        }
        Err(format!("no leader within {limit:?}"))
    }

    /// Unseal every running node: a gatekeeper token through an unsealed
    /// node (which passes it to its sealed peers), or the unseal keys when
    /// every node is sealed. Repeats until no answering node is sealed.
    pub fn unseal_all(&self, limit: Duration) -> HarnessResult<()> {
        let deadline = Instant::now() + limit;
        loop {
            let statuses: Vec<Option<NodeStatus>> =
                (0..NODES.len()).map(|i| self.status(i)).collect();
            let sealed: Vec<usize> = (0..NODES.len())
                .filter(|&i| matches!(&statuses[i], Some(s) if s.sealed))
                .collect();
            if sealed.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("nodes {sealed:?} still sealed after {limit:?}"));
            }
            let open = (0..NODES.len()).find(|&i| matches!(&statuses[i], Some(s) if !s.sealed));
            match open {
                Some(via) => self.unseal_with_token(via),
                None => self.unseal_with_keys(sealed[0]),
            }
            sleep(Duration::from_millis(500));
        }
    }

    /// Use one gatekeeper token through node `via`, keeping its replacement;
    /// mint more with the unseal keys when none is left.
    pub fn unseal_with_token(&self, via: usize) {
        let Some(token) = self.take_gatekeeper_token(via) else {
            return;
        };
        self.unseals.lock().unwrap().push(Instant::now());
        match self.apis[via].unseal_token(&token) {
            Reply::Ok(v) => {
                if let Some(next) = str_field(&v, "gatekeeper_token") {
                    self.give_gatekeeper_token(next);
                }
            }
            // Refused: the token is spent or unknown; a lost answer may have
            // spent it. Either way it is not used again.
            Reply::Refused { .. } | Reply::Lost(_) => {}
            Reply::Unreachable(_) => self.give_gatekeeper_token(token),
        }
    }

    fn unseal_with_keys(&self, via: usize) {
        let keys = {
            let op = self.operator.lock().unwrap();
            op.unseal_keys[..op.threshold].to_vec()
        };
        self.unseals.lock().unwrap().push(Instant::now());
        for key in keys {
            let _ = self.apis[via].unseal_key(&key);
        }
    }

    /// When the harness itself sent unseals (to bring nodes back after
    /// faults): each one may open a node a client had sealed.
    pub fn harness_unseals(&self) -> Vec<Instant> {
        self.unseals.lock().unwrap().clone()
    }

    /// A gatekeeper token, minted through node `via` if none is left.
    pub fn take_gatekeeper_token(&self, via: usize) -> Option<String> {
        if let Some(t) = self.operator.lock().unwrap().gatekeeper_tokens.pop() {
            return Some(t);
        }
        let keys = self.unseal_keys();
        if let Reply::Ok(v) = self.apis[via].mint_gatekeeper_tokens(&keys, 4) {
            let minted: Vec<String> = str_list(&v, "gatekeeper_tokens");
            let mut op = self.operator.lock().unwrap();
            op.gatekeeper_tokens.extend(minted);
            return op.gatekeeper_tokens.pop();
        }
        None
    }

    /// Keep a gatekeeper token (a replacement) for later use.
    pub fn give_gatekeeper_token(&self, token: String) {
        self.operator.lock().unwrap().gatekeeper_tokens.push(token);
    }

    /// The threshold's worth of unseal keys.
    pub fn unseal_keys(&self) -> Vec<String> {
        let op = self.operator.lock().unwrap();
        op.unseal_keys[..op.threshold].to_vec()
    }

    /// A fresh node id for membership churn.
    pub fn fresh_node_id(&self) -> u64 {
        let mut next = self.next_node_id.lock().unwrap();
        *next += 1;
        *next
    }

    /// Run `cluster/<name> args…`.
    pub fn script(&self, name: &str, args: &[&str]) -> HarnessResult<()> {
        run_script(&self.repo, &self.image, name, args)
    }

    /// `docker inspect` state of a container: `running`, `paused`,
    /// `exited`, … or `absent`.
    pub fn container_state(&self, i: usize) -> String {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Status}}", NODES[i]])
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => "absent".into(),
        }
    }

    /// Rules in node `i`'s partition chain (0 when healed or never cut).
    pub fn partition_rules(&self, i: usize) -> usize {
        let pid = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", NODES[i]])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if pid.is_empty() || pid == "0" {
            return 0;
        }
        Command::new("nsenter")
            .args(["-t", &pid, "-n", "iptables", "-w", "-S", "KSTASH-PARTITION"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with("-A"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Save every node's log into `dir` (kstash never logs a secret).
    pub fn save_logs(&self, dir: &Path) {
        let _ = std::fs::create_dir_all(dir);
        for name in NODES {
            if let Ok(out) = Command::new("docker").args(["logs", name]).output() {
                let mut text = out.stdout;
                text.extend_from_slice(&out.stderr);
                let _ = std::fs::write(dir.join(format!("{name}.log")), text);
            }
        }
    }
}

/// `kstash-N.kstash-peers.kstash.svc:8201` → N.
fn container_of(address: &str) -> Option<usize> {
    let n = address.strip_prefix("kstash-")?.split('.').next()?;
    n.parse::<usize>().ok().filter(|&i| i < NODES.len())
}

fn run_script(repo: &Path, image: &str, name: &str, args: &[&str]) -> HarnessResult<()> {
    let out = Command::new(repo.join("cluster").join(name))
        .args(args)
        .env("KSTASH_IMAGE", image)
        .output()
        .map_err(|e| format!("cluster/{name}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cluster/{name} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::container_of;

    #[test]
    fn container_names_come_from_peer_addresses() {
        assert_eq!(
            container_of("kstash-2.kstash-peers.kstash.svc:8201"),
            Some(2)
        );
        assert_eq!(
            container_of("kstash-0.kstash-peers.kstash.svc:8200"),
            Some(0)
        );
        assert_eq!(container_of("kstash-7.kstash-peers.kstash.svc:8201"), None);
        assert_eq!(container_of("other:8201"), None);
    }
}
