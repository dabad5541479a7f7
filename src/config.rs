//! Node configuration: a TOML file, every field also a flag and an
//! environment variable (flag > env > file > default).
//!
//! Invariant: unknown fields are refused; TLS is required unless disabled
//! explicitly on a loopback address; a private key file readable by others
//! or writable by group is refused; a cluster node (`cluster_addr`) has its cluster TLS
//! files, and the combinations that cannot work (`bootstrap` with `join`,
//! cluster settings without `cluster_addr`, …) are refused at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Deserializer};

use crate::barrier::DEFAULT_ENCRYPTION_LIMIT;
use crate::clock::format_duration;
use crate::data_dir::{check_private_file, PrivateFileError};
use crate::service::Settings;

/// Which storage backend holds committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// In memory (default; nothing persisted).
    Memory,
    /// etcd (needs the `etcd` cargo feature).
    Etcd,
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

fn default_api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8200))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("kstash-data")
}
fn default_storage() -> StorageKind {
    StorageKind::Memory
}
fn default_node_id() -> u64 {
    1
}
fn default_max_value_bytes() -> usize {
    1 << 20
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_token_ttl() -> Duration {
    Duration::from_secs(32 * 24 * 3600)
}
fn default_gatekeeper_grace() -> Duration {
    Duration::from_secs(60)
}
fn default_unseal_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_sweep_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_encryption_limit() -> u64 {
    DEFAULT_ENCRYPTION_LIMIT
}
/// The default log filter: kstash's own events at `info` (listening,
/// storage, initialised, unsealed and sealed, leader changes, joins,
/// snapshots, key rotations), and openraft's internal account of elections
/// and replication, and the storage and HTTP crates, only from `warn`.
pub const DEFAULT_LOG: &str = "info,openraft=warn,sled=warn,h2=warn,hyper=warn,tower=warn";

fn default_log() -> String {
    DEFAULT_LOG.into()
}
fn default_election_timeout_min_ms() -> u64 {
    1000
}
fn default_election_timeout_max_ms() -> u64 {
    2000
}
fn default_heartbeat_interval_ms() -> u64 {
    200
}
fn default_snapshot_threshold() -> u64 {
    10_000
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    1024
}

/// A node's configuration (the TOML file's shape).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client API address (gRPC and REST on one port). Default 127.0.0.1:8200.
    #[serde(default = "default_api_addr")]
    pub api_addr: SocketAddr,
    /// Directory for node state. Default `kstash-data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Storage backend: `memory` or `etcd`.
    #[serde(default = "default_storage")]
    pub storage: StorageKind,
    /// etcd endpoints (with `storage = "etcd"`).
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of this node in etcd. Default `kstash/node-<node_id>/`.
    #[serde(default)]
    pub etcd_prefix: Option<String>,
    /// This node's id.
    #[serde(default = "default_node_id")]
    pub node_id: u64,
    /// PEM certificate chain for the client API.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the client API (must not be group/world readable).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve plaintext HTTP (only allowed on a loopback address).
    #[serde(default)]
    pub tls_disable: bool,
    /// Start even when group or others can reach the data dir or a file in
    /// it, with a warning instead of a refusal. Default `false`.
    #[serde(default)]
    pub allow_insecure_data_dir: bool,
    /// With `tls_disable`, further host names or addresses (no port) the
    /// client port answers for. Without TLS the node answers only requests
    /// whose `Host` is a loopback address, `localhost`, the host of
    /// `api_addr` or `advertise_api_addr`, or one of these, so a web page
    /// that rebinds its own name to 127.0.0.1 is refused. For a name the
    /// node is reached by on loopback (an `/etc/hosts` alias, a container
    /// name behind a port forward). Refused with TLS, where the
    /// certificate's names do this job.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Largest secret value in bytes. Default 1 MiB.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Access token lifetime when login gives none. Default `1h`.
    #[serde(default = "default_token_ttl", deserialize_with = "de_duration")]
    pub default_token_ttl: Duration,
    /// Longest access token lifetime, renewals included. Default `32d`.
    #[serde(default = "default_max_token_ttl", deserialize_with = "de_duration")]
    pub max_token_ttl: Duration,
    /// How long a used gatekeeper token keeps working. Default `60s`.
    #[serde(default = "default_gatekeeper_grace", deserialize_with = "de_duration")]
    pub gatekeeper_grace: Duration,
    /// How long unseal progress is kept. Default `10m`.
    #[serde(default = "default_unseal_timeout", deserialize_with = "de_duration")]
    pub unseal_timeout: Duration,
    /// How often expired tokens are swept. Default `30s`.
    #[serde(default = "default_sweep_interval", deserialize_with = "de_duration")]
    pub sweep_interval: Duration,
    /// Encryptions under one key term before a forced rotation, counted
    /// over the whole cluster (give every node the same value). Default
    /// 2^32 − 2^20.
    #[serde(default = "default_encryption_limit")]
    pub encryption_limit: u64,
    /// Log filter (`RUST_LOG` syntax). Default [`DEFAULT_LOG`]: `info`, with
    /// openraft, sled, h2, hyper and tower at `warn`.
    #[serde(default = "default_log")]
    pub log: String,
    /// Cluster port (Raft and node-to-node RPCs, mutual TLS) to bind, e.g.
    /// `0.0.0.0:8201`. Without it the node runs alone: a one-member Raft
    /// cluster with no cluster port.
    #[serde(default)]
    pub cluster_addr: Option<SocketAddr>,
    /// Client API address shown to peers and in status (`host:port`, DNS
    /// names allowed). Default: the bound `api_addr`.
    #[serde(default)]
    pub advertise_api_addr: Option<String>,
    /// Cluster address peers dial to reach this node (`host:port`, DNS names
    /// allowed; the host must be a name in this node's cluster certificate).
    /// Default: the bound `cluster_addr`; required when that is a wildcard
    /// address.
    #[serde(default)]
    pub advertise_cluster_addr: Option<String>,
    /// Start a new cluster with this node as its only member, unless the data
    /// dir already holds Raft state. Give it to one node of a new cluster.
    #[serde(default)]
    pub bootstrap: bool,
    /// For nodes started with identical settings (a StatefulSet): the node
    /// whose `node_id` is this one bootstraps, unless its data dir already
    /// holds Raft state or a `join` peer already answers as a cluster member
    /// (then it joins: a node that lost its data dir never starts a second
    /// cluster); every other node joins through `join`.
    #[serde(default)]
    pub bootstrap_node_id: Option<u64>,
    /// Cluster addresses (`host:port`) of peers to join through; a follower
    /// names the leader. Ignored once this node is a voter.
    #[serde(default)]
    pub join: Vec<String>,
    /// PEM certificate of the cluster CA; peers must present certificates
    /// it signed. Required with `cluster_addr`.
    #[serde(default)]
    pub cluster_ca: Option<PathBuf>,
    /// PEM certificate chain of this node on the cluster port (client and
    /// server). Required with `cluster_addr`.
    #[serde(default)]
    pub cluster_cert: Option<PathBuf>,
    /// PEM private key of `cluster_cert` (must not be group/world readable).
    /// Required with `cluster_addr`.
    #[serde(default)]
    pub cluster_key: Option<PathBuf>,
    /// Shortest election timeout in milliseconds: a follower that hears no
    /// leader for a random time between the two bounds campaigns. Default 1000.
    #[serde(default = "default_election_timeout_min_ms")]
    pub election_timeout_min_ms: u64,
    /// Longest election timeout in milliseconds. Default 2000.
    #[serde(default = "default_election_timeout_max_ms")]
    pub election_timeout_max_ms: u64,
    /// Interval of the leader's heartbeats in milliseconds; at most half the
    /// shortest election timeout. Default 200.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Applied log entries between snapshots (the log is purged behind a
    /// snapshot). Default 10000.
    #[serde(default = "default_snapshot_threshold")]
    pub snapshot_threshold: u64,
    /// How long a client has to send a request's headers: from accepting
    /// the connection (TLS handshake included) to its first request, and on
    /// HTTP/1 from the end of one response to the next request's headers.
    /// Default `10s`.
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub header_read_timeout: Duration,
    /// How long a request's whole body may take to arrive, counted from its
    /// headers; a slower body fails the request. Default `30s`.
    #[serde(
        default = "default_body_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub body_read_timeout: Duration,
    /// How long a client connection with no request in flight stays open
    /// after its last response (HTTP/2; HTTP/1 waits at most the shorter of
    /// this and `header_read_timeout`). Default `60s`.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Client connections open at once; one more is closed as soon as it is
    /// accepted. Lowered at start to what the file-descriptor limit allows.
    /// Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("an empty config takes every default")
    }
}

/// `kstash server` flags; each overrides the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// TOML config file.
    #[arg(long, env = "KSTASH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: memory storage, initialised 1-of-1 and unsealed,
    /// plaintext on loopback. Prints its secrets. Never for production.
    #[arg(long)]
    pub dev: bool,
    /// Client API address.
    #[arg(long, env = "KSTASH_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// Node state directory.
    #[arg(long, env = "KSTASH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, env = "KSTASH_STORAGE", value_enum)]
    pub storage: Option<StorageKind>,
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "KSTASH_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Key prefix of this node in etcd.
    #[arg(long, env = "KSTASH_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Node id.
    #[arg(long, env = "KSTASH_NODE_ID")]
    pub node_id: Option<u64>,
    /// PEM certificate chain.
    #[arg(long, env = "KSTASH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "KSTASH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve plaintext (loopback only).
    #[arg(long, env = "KSTASH_TLS_DISABLE", num_args = 0..=1, default_missing_value = "true")]
    pub tls_disable: Option<bool>,
    /// Only warn (instead of refusing to start) when group or others can
    /// reach the data dir.
    #[arg(long, env = "KSTASH_ALLOW_INSECURE_DATA_DIR", num_args = 0..=1, default_missing_value = "true")]
    pub allow_insecure_data_dir: Option<bool>,
    /// With --tls-disable: extra Host names or addresses answered, comma-separated.
    #[arg(long, env = "KSTASH_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Option<Vec<String>>,
    /// Largest secret value in bytes.
    #[arg(long, env = "KSTASH_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Default access token TTL (e.g. `1h`).
    #[arg(long, env = "KSTASH_DEFAULT_TOKEN_TTL", value_parser = humantime::parse_duration)]
    pub default_token_ttl: Option<Duration>,
    /// Maximum access token TTL (e.g. `32d`).
    #[arg(long, env = "KSTASH_MAX_TOKEN_TTL", value_parser = humantime::parse_duration)]
    pub max_token_ttl: Option<Duration>,
    /// Gatekeeper token grace window (e.g. `60s`).
    #[arg(long, env = "KSTASH_GATEKEEPER_GRACE", value_parser = humantime::parse_duration)]
    pub gatekeeper_grace: Option<Duration>,
    /// Unseal progress timeout (e.g. `10m`).
    #[arg(long, env = "KSTASH_UNSEAL_TIMEOUT", value_parser = humantime::parse_duration)]
    pub unseal_timeout: Option<Duration>,
    /// Expired-token sweep interval (e.g. `30s`).
    #[arg(long, env = "KSTASH_SWEEP_INTERVAL", value_parser = humantime::parse_duration)]
    pub sweep_interval: Option<Duration>,
    /// Encryptions per key term, cluster-wide, before a forced rotation.
    #[arg(long, env = "KSTASH_ENCRYPTION_LIMIT")]
    pub encryption_limit: Option<u64>,
    /// Log filter (`RUST_LOG` syntax).
    #[arg(long, env = "KSTASH_LOG")]
    pub log: Option<String>,
    /// Cluster port to bind (mutual TLS); without it the node runs alone.
    #[arg(long, env = "KSTASH_CLUSTER_ADDR")]
    pub cluster_addr: Option<SocketAddr>,
    /// Client API address to show peers (`host:port`).
    #[arg(long, env = "KSTASH_ADVERTISE_API_ADDR")]
    pub advertise_api_addr: Option<String>,
    /// Cluster address peers dial (`host:port`).
    #[arg(long, env = "KSTASH_ADVERTISE_CLUSTER_ADDR")]
    pub advertise_cluster_addr: Option<String>,
    /// Start a new cluster with this node as its only member.
    #[arg(long, env = "KSTASH_BOOTSTRAP", num_args = 0..=1, default_missing_value = "true")]
    pub bootstrap: Option<bool>,
    /// The node id that bootstraps when every node gets the same settings.
    #[arg(long, env = "KSTASH_BOOTSTRAP_NODE_ID")]
    pub bootstrap_node_id: Option<u64>,
    /// Peers' cluster addresses to join through, comma-separated.
    #[arg(long, env = "KSTASH_JOIN", value_delimiter = ',')]
    pub join: Option<Vec<String>>,
    /// PEM certificate of the cluster CA.
    #[arg(long, env = "KSTASH_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// PEM certificate chain of this node on the cluster port.
    #[arg(long, env = "KSTASH_CLUSTER_CERT")]
    pub cluster_cert: Option<PathBuf>,
    /// PEM private key of the cluster certificate.
    #[arg(long, env = "KSTASH_CLUSTER_KEY")]
    pub cluster_key: Option<PathBuf>,
    /// Shortest election timeout in milliseconds.
    #[arg(long, env = "KSTASH_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Longest election timeout in milliseconds.
    #[arg(long, env = "KSTASH_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, env = "KSTASH_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Applied log entries between snapshots.
    #[arg(long, env = "KSTASH_SNAPSHOT_THRESHOLD")]
    pub snapshot_threshold: Option<u64>,
    /// Time a client has to send a request's headers (e.g. `10s`).
    #[arg(long, env = "KSTASH_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// Time a request's body has to arrive whole (e.g. `30s`).
    #[arg(long, env = "KSTASH_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Option<Duration>,
    /// Time a client connection without a request stays open (e.g. `60s`).
    #[arg(long, env = "KSTASH_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Client connections open at once.
    #[arg(long, env = "KSTASH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl From<PrivateFileError> for ConfigError {
    fn from(e: PrivateFileError) -> Self {
        ConfigError::Invalid(e.to_string())
    }
}

impl ServerArgs {
    /// Merge flags and env over the config file over the defaults, then check.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { c.$f = v.clone(); } )* };
        }
        over!(
            api_addr,
            data_dir,
            storage,
            etcd_endpoints,
            node_id,
            max_value_bytes,
            default_token_ttl,
            max_token_ttl,
            gatekeeper_grace,
            unseal_timeout,
            sweep_interval,
            encryption_limit,
            log,
            tls_disable,
            allow_insecure_data_dir,
            allowed_hosts,
            bootstrap,
            join,
            election_timeout_min_ms,
            election_timeout_max_ms,
            heartbeat_interval_ms,
            snapshot_threshold,
            header_read_timeout,
            body_read_timeout,
            idle_timeout,
            max_connections
        );
        macro_rules! over_opt {
            ($($f:ident),*) => { $( if self.$f.is_some() { c.$f = self.$f.clone(); } )* };
        }
        over_opt!(
            cluster_addr,
            advertise_api_addr,
            advertise_cluster_addr,
            cluster_ca,
            cluster_cert,
            cluster_key,
            bootstrap_node_id
        );
        if self.etcd_prefix.is_some() {
            c.etcd_prefix = self.etcd_prefix.clone();
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert.clone();
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key.clone();
        }
        if self.dev {
            c.storage = StorageKind::Memory;
            if self.data_dir.is_none() {
                // Dev mode keeps nothing: its Raft log lives in a fresh
                // directory the server removes on exit.
                c.data_dir =
                    std::env::temp_dir().join(format!("kstash-dev-{}", std::process::id()));
            }
            if c.tls_cert.is_none() {
                c.tls_disable = true;
            }
        }
        c.check()?;
        Ok(c)
    }
}

impl Config {
    /// Check the settings that cannot be expressed in types.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match (&self.tls_cert, &self.tls_key, self.tls_disable) {
            (Some(_), Some(_), false) => {}
            (None, None, true) => {
                if !self.api_addr.ip().is_loopback() {
                    return invalid(format!(
                        "plaintext is only allowed on a loopback address, not {}; give --tls-cert and --tls-key",
                        self.api_addr
                    ));
                }
            }
            (_, _, true) => {
                return invalid("--tls-disable cannot be combined with --tls-cert/--tls-key".into())
            }
            _ => return invalid(
                "TLS needs both --tls-cert and --tls-key (or --tls-disable on a loopback address)"
                    .into(),
            ),
        }
        if let Some(key) = &self.tls_key {
            check_private_file(key)?;
        }
        if !self.allowed_hosts.is_empty() && !self.tls_disable {
            return invalid(
                "--allowed-hosts only applies with --tls-disable; over TLS the certificate's names decide"
                    .into(),
            );
        }
        for host in &self.allowed_hosts {
            if crate::api::edges::Host::parse(host).is_none() {
                return invalid(format!(
                    "--allowed-hosts {host:?} is not a host name or IP address (give no port or scheme)"
                ));
            }
        }
        if self.storage == StorageKind::Etcd && self.etcd_endpoints.is_empty() {
            return invalid("--storage etcd needs --etcd-endpoints".into());
        }
        if self.storage == StorageKind::Etcd && self.max_value_bytes > 1 << 20 {
            // etcd refuses requests over 1.5 MiB by default; one write carries
            // one value plus its record.
            return invalid("with --storage etcd, max_value_bytes can be at most 1 MiB".into());
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 64 << 20 {
            return invalid("max_value_bytes must be between 1 and 64 MiB".into());
        }
        if self.default_token_ttl > self.max_token_ttl {
            return invalid("default_token_ttl exceeds max_token_ttl".into());
        }
        if self.encryption_limit == 0 || self.encryption_limit > 1 << 32 {
            return invalid("encryption_limit must be between 1 and 2^32".into());
        }
        if self.sweep_interval < Duration::from_millis(100) {
            return invalid("sweep_interval must be at least 100ms".into());
        }
        self.check_raft()?;
        self.check_connections()?;
        self.check_cluster()
    }

    /// The client port's timeouts and connection cap.
    fn check_connections(&self) -> Result<(), ConfigError> {
        let timeouts = [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        for (name, value) in timeouts {
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between 100ms and 1h, not {}",
                    format_duration(value)
                )));
            }
        }
        if self.max_connections == 0 || self.max_connections > 1_000_000 {
            return Err(ConfigError::Invalid(format!(
                "max_connections must be between 1 and 1000000, not {}",
                self.max_connections
            )));
        }
        Ok(())
    }

    /// Raft timings and the snapshot threshold.
    fn check_raft(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.heartbeat_interval_ms < 10 {
            return invalid("heartbeat_interval_ms must be at least 10".into());
        }
        if self.election_timeout_min_ms < 2 * self.heartbeat_interval_ms {
            return invalid(format!(
                "election_timeout_min_ms ({}) must be at least twice heartbeat_interval_ms ({})",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return invalid(format!(
                "election_timeout_max_ms ({}) must be greater than election_timeout_min_ms ({})",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            ));
        }
        if self.election_timeout_max_ms > 60_000 {
            return invalid("election_timeout_max_ms must be at most 60000".into());
        }
        if self.snapshot_threshold == 0 {
            return invalid("snapshot_threshold must be at least 1".into());
        }
        Ok(())
    }

    /// The cluster settings fit together.
    fn check_cluster(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let Some(cluster_addr) = self.cluster_addr else {
            let stray = [
                ("--bootstrap", self.bootstrap),
                ("--bootstrap-node-id", self.bootstrap_node_id.is_some()),
                ("--join", !self.join.is_empty()),
                (
                    "--advertise-cluster-addr",
                    self.advertise_cluster_addr.is_some(),
                ),
                ("--cluster-ca", self.cluster_ca.is_some()),
                ("--cluster-cert", self.cluster_cert.is_some()),
                ("--cluster-key", self.cluster_key.is_some()),
            ];
            if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                return invalid(format!(
                    "{flag} needs --cluster-addr (without it the node runs alone)"
                ));
            }
            return Ok(());
        };
        match (&self.cluster_ca, &self.cluster_cert, &self.cluster_key) {
            (Some(_), Some(_), Some(key)) => check_private_file(key)?,
            _ => {
                return invalid(
                    "a cluster node (--cluster-addr) needs --cluster-ca, --cluster-cert and --cluster-key; \
                     `kstash operator cluster-certs` makes them"
                        .into(),
                )
            }
        }
        if self.bootstrap && self.bootstrap_node_id.is_some() {
            return invalid(
                "give --bootstrap (this node starts the cluster) or --bootstrap-node-id (the node with that id does), not both"
                    .into(),
            );
        }
        if self.bootstrap_node_id.is_some_and(|id| id != self.node_id) && self.join.is_empty() {
            return invalid(
                "with --bootstrap-node-id, a node with another id joins: give --join".into(),
            );
        }
        if self.bootstrap && !self.join.is_empty() {
            return invalid(
                "--bootstrap starts a new cluster and --join joins an existing one; give one of them"
                    .into(),
            );
        }
        if cluster_addr == self.api_addr && cluster_addr.port() != 0 {
            return invalid(format!(
                "--cluster-addr and --api-addr are both {cluster_addr}; the cluster port needs its own"
            ));
        }
        if cluster_addr.ip().is_unspecified() && self.advertise_cluster_addr.is_none() {
            return invalid(format!(
                "--cluster-addr {cluster_addr} is a wildcard address peers cannot dial; \
                 give --advertise-cluster-addr (e.g. kstash-0.kstash:{})",
                cluster_addr.port()
            ));
        }
        let addresses = self
            .advertise_api_addr
            .iter()
            .map(|a| ("--advertise-api-addr", a))
            .chain(
                self.advertise_cluster_addr
                    .iter()
                    .map(|a| ("--advertise-cluster-addr", a)),
            )
            .chain(self.join.iter().map(|a| ("--join", a)));
        for (flag, addr) in addresses {
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p != 0));
            if crate::raft::tls::host_of(addr).is_none() || !port_ok {
                return invalid(format!(
                    "{flag} {addr:?} is not host:port (a DNS name or IP address, and a port)"
                ));
            }
        }
        Ok(())
    }

    /// How long a request waits for a leader to be known, reachable and
    /// confirmed before it fails as unavailable (503): three of the longest
    /// election timeouts, between 2 s and 30 s.
    pub fn leader_wait(&self) -> Duration {
        Duration::from_millis((3 * self.election_timeout_max_ms).clamp(2000, 30_000))
    }

    /// The storage backend's name, for logs.
    pub fn storage_name(&self) -> &'static str {
        match self.storage {
            StorageKind::Memory => "memory",
            StorageKind::Etcd => "etcd",
        }
    }

    /// The etcd key prefix of this node.
    pub fn etcd_prefix(&self) -> String {
        self.etcd_prefix
            .clone()
            .unwrap_or_else(|| format!("kstash/node-{}/", self.node_id))
    }

    /// The service settings this config implies.
    pub fn settings(&self) -> Settings {
        Settings {
            max_value_bytes: self.max_value_bytes,
            default_token_ttl: self.default_token_ttl,
            max_token_ttl: self.max_token_ttl,
            gatekeeper_grace: self.gatekeeper_grace,
            unseal_timeout: self.unseal_timeout,
            encryption_limit: self.encryption_limit,
            node_id: self.node_id,
            api_address: self.api_addr.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn durations_as_kstash_writes_them_read_back_from_the_config_file() {
        // A spread of values, through the config file's own parser.
        let mut n: u64 = 1;
        while n < 400 * 86_400_000_000_000 {
            for d in [Duration::from_nanos(n), Duration::from_nanos(n - 1)] {
                let text = format_duration(d);
                #[derive(Deserialize)]
                struct T {
                    #[serde(deserialize_with = "de_duration")]
                    d: Duration,
                }
                let t: T = toml::from_str(&format!("d = \"{text}\"")).unwrap();
                assert_eq!(t.d, d, "{text}");
            }
            n = n * 7 + 3;
        }
    }

    #[test]
    fn defaults_need_tls_or_explicit_plaintext() {
        let args = ServerArgs::default();
        assert!(
            args.resolve().is_err(),
            "no TLS and no --tls-disable is refused"
        );
        let args = ServerArgs {
            tls_disable: Some(true),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.api_addr, default_api_addr());
        assert_eq!(c.default_token_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn allowed_hosts_only_with_plaintext_and_only_hosts() {
        let plain = |hosts: &[&str]| ServerArgs {
            tls_disable: Some(true),
            allowed_hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
            ..Default::default()
        };
        let c = plain(&["kstash.test", "::1", "10.0.0.1"])
            .resolve()
            .unwrap();
        assert_eq!(c.allowed_hosts, ["kstash.test", "::1", "10.0.0.1"]);
        for bad in ["kstash.test:8200", "http://kstash.test", "", "a b"] {
            let err = plain(&[bad]).resolve().unwrap_err().to_string();
            assert!(err.contains("--allowed-hosts"), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, "x").unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            Some(path)
        };
        let err = ServerArgs {
            tls_cert: file("cert.pem"),
            tls_key: file("key.pem"),
            allowed_hosts: Some(vec!["kstash.test".into()]),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("only applies with --tls-disable"), "{err}");
    }

    #[test]
    fn plaintext_only_on_loopback() {
        let args = ServerArgs {
            tls_disable: Some(true),
            api_addr: Some("0.0.0.0:8200".parse().unwrap()),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kstash.toml");
        std::fs::write(
            &path,
            "tls_disable = true\nnode_id = 7\ngatekeeper_grace = \"5s\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(path.clone()),
            node_id: Some(9),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.node_id, 9, "flag wins over file");
        assert_eq!(c.gatekeeper_grace, Duration::from_secs(5));
        std::fs::write(&path, "tls_disable = true\nbogus = 1\n").unwrap();
        let err = ServerArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    /// Cluster TLS files in a temp dir (contents do not matter to `check`).
    fn cluster_files(dir: &Path) -> ServerArgs {
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, "x").unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            Some(path)
        };
        ServerArgs {
            tls_disable: Some(true),
            cluster_addr: Some("127.0.0.1:8201".parse().unwrap()),
            cluster_ca: file("ca.pem"),
            cluster_cert: file("node.pem"),
            cluster_key: file("node-key.pem"),
            ..Default::default()
        }
    }

    fn refused(args: ServerArgs) -> String {
        args.resolve().unwrap_err().to_string()
    }

    #[test]
    fn cluster_settings_come_from_file_flags_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let base = cluster_files(dir.path());
        let c = base.clone().resolve().unwrap();
        assert_eq!(
            (
                c.election_timeout_min_ms,
                c.election_timeout_max_ms,
                c.heartbeat_interval_ms,
                c.snapshot_threshold
            ),
            (1000, 2000, 200, 10_000)
        );
        assert_eq!(c.leader_wait(), Duration::from_secs(6));
        assert!(!c.bootstrap && c.join.is_empty());

        let path = dir.path().join("kstash.toml");
        std::fs::write(
            &path,
            "tls_disable = true\n\
             cluster_addr = \"0.0.0.0:8201\"\n\
             advertise_cluster_addr = \"kstash-1.kstash:8201\"\n\
             advertise_api_addr = \"kstash-1.kstash:8200\"\n\
             join = [\"kstash-0.kstash:8201\"]\n\
             election_timeout_min_ms = 300\n\
             election_timeout_max_ms = 600\n\
             heartbeat_interval_ms = 100\n\
             snapshot_threshold = 50\n",
        )
        .unwrap();
        let c = ServerArgs {
            config: Some(path),
            snapshot_threshold: Some(70),
            cluster_addr: None,
            ..base
        }
        .resolve()
        .unwrap();
        assert_eq!(c.cluster_addr, Some("0.0.0.0:8201".parse().unwrap()));
        assert_eq!(c.join, ["kstash-0.kstash:8201"]);
        assert_eq!(
            c.advertise_api_addr.as_deref(),
            Some("kstash-1.kstash:8200")
        );
        assert_eq!((c.election_timeout_min_ms, c.snapshot_threshold), (300, 70));
        assert_eq!(c.leader_wait(), Duration::from_secs(2), "at least 2 s");
    }

    #[test]
    fn cluster_combinations_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = cluster_files(dir.path());
        let cases: Vec<(ServerArgs, &str)> = vec![
            (
                ServerArgs {
                    cluster_key: None,
                    ..base.clone()
                },
                "needs --cluster-ca, --cluster-cert and --cluster-key",
            ),
            (
                ServerArgs {
                    bootstrap: Some(true),
                    join: Some(vec!["a:1".into()]),
                    ..base.clone()
                },
                "give one of them",
            ),
            (
                ServerArgs {
                    tls_disable: Some(true),
                    join: Some(vec!["a:1".into()]),
                    ..Default::default()
                },
                "--join needs --cluster-addr",
            ),
            (
                ServerArgs {
                    tls_disable: Some(true),
                    bootstrap: Some(true),
                    ..Default::default()
                },
                "--bootstrap needs --cluster-addr",
            ),
            (
                ServerArgs {
                    cluster_addr: Some("0.0.0.0:8201".parse().unwrap()),
                    ..base.clone()
                },
                "--advertise-cluster-addr",
            ),
            (
                ServerArgs {
                    join: Some(vec!["kstash-0".into()]),
                    ..base.clone()
                },
                "is not host:port",
            ),
            (
                ServerArgs {
                    advertise_cluster_addr: Some("kstash-0:0".into()),
                    ..base.clone()
                },
                "is not host:port",
            ),
            (
                ServerArgs {
                    cluster_addr: Some(default_api_addr()),
                    ..base.clone()
                },
                "needs its own",
            ),
            (
                ServerArgs {
                    election_timeout_min_ms: Some(500),
                    election_timeout_max_ms: Some(500),
                    ..base.clone()
                },
                "greater than election_timeout_min_ms",
            ),
            (
                ServerArgs {
                    heartbeat_interval_ms: Some(600),
                    ..base.clone()
                },
                "at least twice heartbeat_interval_ms",
            ),
            (
                ServerArgs {
                    snapshot_threshold: Some(0),
                    ..base.clone()
                },
                "snapshot_threshold",
            ),
        ];
        for (args, want) in cases {
            let err = refused(args);
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }

    #[test]
    fn connection_limits_have_defaults_and_bounds() {
        let plain = || ServerArgs {
            tls_disable: Some(true),
            ..Default::default()
        };
        let c = plain().resolve().unwrap();
        assert_eq!(
            (
                c.header_read_timeout,
                c.body_read_timeout,
                c.idle_timeout,
                c.max_connections
            ),
            (
                Duration::from_secs(10),
                Duration::from_secs(30),
                Duration::from_secs(60),
                1024
            )
        );
        let refused_with = |args: ServerArgs, want: &str| {
            let err = refused(args);
            assert!(err.contains(want), "want {want:?} in {err:?}");
        };
        refused_with(
            ServerArgs {
                header_read_timeout: Some(Duration::ZERO),
                ..plain()
            },
            "header_read_timeout must be between 100ms and 1h",
        );
        refused_with(
            ServerArgs {
                body_read_timeout: Some(Duration::from_secs(7200)),
                ..plain()
            },
            "body_read_timeout",
        );
        refused_with(
            ServerArgs {
                idle_timeout: Some(Duration::from_millis(10)),
                ..plain()
            },
            "idle_timeout",
        );
        refused_with(
            ServerArgs {
                max_connections: Some(0),
                ..plain()
            },
            "max_connections must be between 1 and 1000000",
        );
    }

    /// The names of the fields of `pub struct <name>` in this file.
    fn struct_fields(name: &str) -> Vec<String> {
        let src = include_str!("config.rs");
        let start = src
            .find(&format!("pub struct {name} {{"))
            .expect("the struct is in this file");
        let body = &src[start..];
        let body = &body[..body.find("\n}").unwrap()];
        body.lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .filter_map(|l| l.split_once(':').map(|(f, _)| f.to_string()))
            .filter(|f| !f.contains(' '))
            .collect()
    }

    #[test]
    fn every_config_field_has_a_flag_an_env_var_and_a_readme_row() {
        let readme = include_str!("../README.md");
        let flags = struct_fields("ServerArgs");
        let fields = struct_fields("Config");
        assert!(fields.len() > 20, "{fields:?}");
        for field in &fields {
            assert!(flags.contains(field), "no flag for config field {field}");
            let row = format!(
                "| `{field}` | `--{}` | `KSTASH_{}` |",
                field.replace('_', "-"),
                field.to_uppercase()
            );
            assert!(
                readme.contains(&row),
                "README's configuration table lacks {row}"
            );
        }
    }
}
