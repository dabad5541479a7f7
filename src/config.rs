//! Node configuration: a TOML file, every setting also a flag and an
//! environment variable (flag > env > file > default).
//!
//! Invariant: each setting is declared once, in the `settings!` table
//! below, which makes its TOML key, its `--flag`, its `KSTASH_*`
//! environment variable, its default and its doc (rustdoc, `--help`), so
//! none of them can drift from the others. Unknown fields are refused; TLS
//! is required unless disabled explicitly on a loopback address; a private
//! key file readable by others or writable by group is refused; a cluster
//! node (`cluster_addr`) has its cluster TLS files, and the combinations
//! that cannot work (`bootstrap` with `join`, cluster settings without
//! `cluster_addr`, …) are refused at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Deserializer};

use crate::auth::kubernetes::{InCluster, KubernetesSettings};
use crate::barrier::DEFAULT_ENCRYPTION_LIMIT;
use crate::clock::format_duration;
use crate::data_dir::{check_private_file, PrivateFileError};
use crate::plugins::kms::socket::parse_mode;
use crate::plugins::kms::{check_status_interval, KmsKey, KmsOptions, SocketOptions};
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

/// A duration in the config file, as humantime reads it (`90s`, `1h`).
fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn default_api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8200))
}

/// The default log filter: kstash's own events at `info` (listening,
/// storage, initialised, unsealed and sealed, leader changes, joins,
/// snapshots, key rotations), and openraft's internal account of elections
/// and replication, and the storage and HTTP crates, only from `warn`.
pub const DEFAULT_LOG: &str = "info,openraft=warn,sled=warn,h2=warn,hyper=warn,tower=warn";

/// One setting as declared in the table: its TOML key (its flag is the key
/// in kebab case after `--`) and its environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The TOML key, and the field of [`Config`] and [`ServerArgs`].
    pub key: &'static str,
    /// The environment variable (`KSTASH_` and the key in upper case).
    pub env: &'static str,
}

/// The type of a setting in [`Config`]: the declared type with a default,
/// an `Option` of it without one.
macro_rules! resolved_type {
    ($t:ty) => { Option<$t> };
    ($t:ty, $default:expr) => { $t };
}

/// A setting's resolved value: what a layer gave, else its default (a
/// setting without a default stays `None`).
macro_rules! or_default {
    ($v:expr) => {
        $v
    };
    ($v:expr, $default:expr) => {
        $v.unwrap_or_else(|| $default)
    };
}

/// Declares every setting once. Each entry is
///
/// ```text
/// /// Summary (the `-h` line).
/// ///
/// /// Details (rustdoc and `--help`).
/// key: Type = default, env "KSTASH_KEY", arg(clap options), file(serde options);
/// ```
///
/// and makes the field `key` of [`Config`] (of type `Type`, or
/// `Option<Type>` when no default is given), the TOML key `key`, the flag
/// `--key` (kebab case) with its environment variable, both `Option<Type>`
/// in [`ServerArgs`], and a row of [`SETTINGS`].
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident : $ty:ty $(= $default:expr)? , env $env:literal
            $(, arg($($arg:tt)*))? $(, file($($file:tt)*))? ;
    )*) => {
        /// A node's configuration, every setting resolved (flag > env >
        /// file > default) and checked ([`ServerArgs::resolve`]).
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $key: resolved_type!($ty $(, $default)?), )*
        }

        /// The TOML file's shape: any subset of the settings, nothing else.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ConfigFile {
            $( #[serde(default $(, $($file)*)?)] $key: Option<$ty>, )*
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
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env $(, $($arg)*)?)]
                pub $key: Option<$ty>,
            )*
        }

        /// Every setting of [`Config`], in declaration order.
        pub const SETTINGS: &[Setting] = &[$(Setting { key: stringify!($key), env: $env },)*];

        impl ConfigFile {
            /// This layer over `under`: each setting this one gives wins.
            fn over(self, under: ConfigFile) -> ConfigFile {
                ConfigFile { $( $key: self.$key.or(under.$key), )* }
            }

            /// The settings, defaults filling in what no layer gave.
            fn with_defaults(self) -> Config {
                Config { $( $key: or_default!(self.$key $(, $default)?), )* }
            }
        }

        impl ServerArgs {
            /// The settings the flags and the environment give.
            fn layer(&self) -> ConfigFile {
                ConfigFile { $( $key: self.$key.clone(), )* }
            }
        }
    };
}

settings! {
    /// Client API address.
    ///
    /// gRPC and REST on one port. Default 127.0.0.1:8200.
    api_addr: SocketAddr = default_api_addr(), env "KSTASH_API_ADDR";

    /// Node state directory.
    ///
    /// Default `kstash-data`.
    data_dir: PathBuf = PathBuf::from("kstash-data"), env "KSTASH_DATA_DIR";

    /// Storage backend.
    ///
    /// `memory` or `etcd`. Default `memory`.
    storage: StorageKind = StorageKind::Memory, env "KSTASH_STORAGE", arg(value_enum);

    /// etcd endpoints, comma-separated.
    ///
    /// With `storage = "etcd"`.
    etcd_endpoints: Vec<String> = Vec::new(), env "KSTASH_ETCD_ENDPOINTS",
        arg(value_delimiter = ',');

    /// Key prefix of this node in etcd.
    ///
    /// Default `kstash/node-<node_id>/`.
    etcd_prefix: String, env "KSTASH_ETCD_PREFIX";

    /// Node id.
    ///
    /// This node's id. Default 1.
    node_id: u64 = 1, env "KSTASH_NODE_ID";

    /// PEM certificate chain.
    ///
    /// For the client API.
    tls_cert: PathBuf, env "KSTASH_TLS_CERT";

    /// PEM private key.
    ///
    /// For the client API (must not be group/world readable).
    tls_key: PathBuf, env "KSTASH_TLS_KEY";

    /// Serve plaintext (loopback only).
    ///
    /// Serve plaintext HTTP (only allowed on a loopback address).
    tls_disable: bool = false, env "KSTASH_TLS_DISABLE",
        arg(num_args = 0..=1, default_missing_value = "true");

    /// Only warn (instead of refusing to start) when group or others can
    /// reach the data dir.
    ///
    /// Start even when group or others can reach the data dir or a file in
    /// it, with a warning instead of a refusal. Default `false`.
    allow_insecure_data_dir: bool = false, env "KSTASH_ALLOW_INSECURE_DATA_DIR",
        arg(num_args = 0..=1, default_missing_value = "true");

    /// With --tls-disable: extra Host names or addresses answered, comma-separated.
    ///
    /// With `tls_disable`, further host names or addresses (no port) the
    /// client port answers for. Without TLS the node answers only requests
    /// whose `Host` is a loopback address, `localhost`, the host of
    /// `api_addr` or `advertise_api_addr`, or one of these, so a web page
    /// that rebinds its own name to 127.0.0.1 is refused. For a name the
    /// node is reached by on loopback (an `/etc/hosts` alias, a container
    /// name behind a port forward). Refused with TLS, where the
    /// certificate's names do this job.
    allowed_hosts: Vec<String> = Vec::new(), env "KSTASH_ALLOWED_HOSTS",
        arg(value_delimiter = ',');

    /// Largest secret value in bytes.
    ///
    /// Default 1 MiB.
    max_value_bytes: usize = 1 << 20, env "KSTASH_MAX_VALUE_BYTES";

    /// Default access token TTL (e.g. `1h`).
    ///
    /// Access token lifetime when login gives none. Default `1h`.
    default_token_ttl: Duration = Duration::from_secs(3600), env "KSTASH_DEFAULT_TOKEN_TTL",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Maximum access token TTL (e.g. `32d`).
    ///
    /// Longest access token lifetime, renewals included. Default `32d`.
    max_token_ttl: Duration = Duration::from_secs(32 * 24 * 3600), env "KSTASH_MAX_TOKEN_TTL",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Gatekeeper token grace window (e.g. `60s`).
    ///
    /// How long a used gatekeeper token keeps working. Default `60s`.
    gatekeeper_grace: Duration = Duration::from_secs(60), env "KSTASH_GATEKEEPER_GRACE",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Unseal progress timeout (e.g. `10m`).
    ///
    /// How long unseal progress is kept. Default `10m`.
    unseal_timeout: Duration = Duration::from_secs(600), env "KSTASH_UNSEAL_TIMEOUT",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Expired-token sweep interval (e.g. `30s`).
    ///
    /// How often expired tokens are swept. Default `30s`.
    sweep_interval: Duration = Duration::from_secs(30), env "KSTASH_SWEEP_INTERVAL",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Encryptions per key term, cluster-wide, before a forced rotation.
    ///
    /// Counted over the whole cluster (give every node the same value).
    /// Default 2^32 − 2^20.
    encryption_limit: u64 = DEFAULT_ENCRYPTION_LIMIT, env "KSTASH_ENCRYPTION_LIMIT";

    /// Log filter (`RUST_LOG` syntax).
    ///
    /// Default [`DEFAULT_LOG`]: `info`, with openraft, sled, h2, hyper and
    /// tower at `warn`.
    log: String = DEFAULT_LOG.into(), env "KSTASH_LOG";

    /// Audit log device: a file path, or `-` for stdout.
    ///
    /// One JSON line per audited request and response, every secret in it
    /// as `hmac-sha256:<hex>` under the cluster's audit key. A file is
    /// created 0600 and reopened on SIGHUP (for logrotate). While it is
    /// set, a request whose record no device can write is refused (503)
    /// before anything is proposed. Default: none, no audit log.
    audit_file: String, env "KSTASH_AUDIT_FILE";

    /// Put secret values in the audit log as `hmac-sha256:<hex>`.
    ///
    /// Without it (the default) the audit log carries no secret values at
    /// all; tokens, keys and other credentials are always HMAC'd.
    audit_hmac_values: bool = false, env "KSTASH_AUDIT_HMAC_VALUES",
        arg(num_args = 0..=1, default_missing_value = "true");

    /// Cluster port to bind (mutual TLS); without it the node runs alone.
    ///
    /// Raft and node-to-node RPCs, e.g. `0.0.0.0:8201`. Without it the node
    /// runs alone: a one-member Raft cluster with no cluster port.
    cluster_addr: SocketAddr, env "KSTASH_CLUSTER_ADDR";

    /// Client API address to show peers (`host:port`).
    ///
    /// Shown to peers and in status (DNS names allowed). Default: the bound
    /// `api_addr`.
    advertise_api_addr: String, env "KSTASH_ADVERTISE_API_ADDR";

    /// Cluster address peers dial (`host:port`).
    ///
    /// DNS names allowed; the host must be a name in this node's cluster
    /// certificate. Default: the bound `cluster_addr`; required when that
    /// is a wildcard address.
    advertise_cluster_addr: String, env "KSTASH_ADVERTISE_CLUSTER_ADDR";

    /// Start a new cluster with this node as its only member.
    ///
    /// Unless the data dir already holds Raft state. Give it to one node of
    /// a new cluster.
    bootstrap: bool = false, env "KSTASH_BOOTSTRAP",
        arg(num_args = 0..=1, default_missing_value = "true");

    /// The node id that bootstraps when every node gets the same settings.
    ///
    /// For nodes started with identical settings (a StatefulSet): the node
    /// whose `node_id` is this one bootstraps, unless its data dir already
    /// holds Raft state or a `join` peer already answers as a cluster member
    /// (then it joins: a node that lost its data dir never starts a second
    /// cluster); every other node joins through `join`.
    bootstrap_node_id: u64, env "KSTASH_BOOTSTRAP_NODE_ID";

    /// Peers' cluster addresses to join through, comma-separated.
    ///
    /// `host:port` each; a follower names the leader. Ignored once this
    /// node is a voter.
    join: Vec<String> = Vec::new(), env "KSTASH_JOIN", arg(value_delimiter = ',');

    /// PEM certificate of the cluster CA.
    ///
    /// Peers must present certificates it signed. Required with
    /// `cluster_addr`.
    cluster_ca: PathBuf, env "KSTASH_CLUSTER_CA";

    /// PEM certificate chain of this node on the cluster port.
    ///
    /// Client and server. Required with `cluster_addr`.
    cluster_cert: PathBuf, env "KSTASH_CLUSTER_CERT";

    /// PEM private key of the cluster certificate.
    ///
    /// Must not be group/world readable. Required with `cluster_addr`.
    cluster_key: PathBuf, env "KSTASH_CLUSTER_KEY";

    /// Shortest election timeout in milliseconds.
    ///
    /// A follower that hears no leader for a random time between the two
    /// bounds campaigns. Default 1000.
    election_timeout_min_ms: u64 = 1000, env "KSTASH_ELECTION_TIMEOUT_MIN_MS";

    /// Longest election timeout in milliseconds.
    ///
    /// Default 2000.
    election_timeout_max_ms: u64 = 2000, env "KSTASH_ELECTION_TIMEOUT_MAX_MS";

    /// Leader heartbeat interval in milliseconds.
    ///
    /// At most half the shortest election timeout. Default 200.
    heartbeat_interval_ms: u64 = 200, env "KSTASH_HEARTBEAT_INTERVAL_MS";

    /// Applied log entries between snapshots.
    ///
    /// The log is purged behind a snapshot. Default 10000.
    snapshot_threshold: u64 = 10_000, env "KSTASH_SNAPSHOT_THRESHOLD";

    /// Time a client has to send a request's headers (e.g. `10s`).
    ///
    /// From accepting the connection (TLS handshake included) to its first
    /// request, and on HTTP/1 from the end of one response to the next
    /// request's headers. Default `10s`.
    header_read_timeout: Duration = Duration::from_secs(10), env "KSTASH_HEADER_READ_TIMEOUT",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Time a request's body has to arrive whole (e.g. `30s`).
    ///
    /// Counted from its headers; a slower body fails the request. Default
    /// `30s`.
    body_read_timeout: Duration = Duration::from_secs(30), env "KSTASH_BODY_READ_TIMEOUT",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Time a client connection without a request stays open (e.g. `60s`).
    ///
    /// After its last response (HTTP/2; HTTP/1 waits at most the shorter of
    /// this and `header_read_timeout`). Default `60s`.
    idle_timeout: Duration = Duration::from_secs(60), env "KSTASH_IDLE_TIMEOUT",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Client connections open at once.
    ///
    /// One more is closed as soon as it is accepted. Lowered at start to
    /// what the file-descriptor limit allows. Default 1024.
    max_connections: usize = 1024, env "KSTASH_MAX_CONNECTIONS";

    /// Issuer (`iss`) of the cluster's ServiceAccount tokens.
    ///
    /// Every token must carry it. Default: the issuer OIDC discovery on
    /// `kubernetes_api` reports. Required with `kubernetes_jwks_file`.
    kubernetes_issuer: String, env "KSTASH_KUBERNETES_ISSUER";

    /// JWKS file with the cluster's public signing keys.
    ///
    /// Instead of OIDC discovery; read again when it changes.
    kubernetes_jwks_file: PathBuf, env "KSTASH_KUBERNETES_JWKS_FILE";

    /// Kubernetes API server URL (`https://host:port`).
    ///
    /// For OIDC discovery of the signing keys and for TokenReview. In a pod:
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    kubernetes_api: String, env "KSTASH_KUBERNETES_API";

    /// PEM CA certificate(s) of the Kubernetes API server.
    ///
    /// The only roots trusted for `kubernetes_api`. In a pod: the mounted
    /// ServiceAccount's `ca.crt`.
    kubernetes_ca_cert: PathBuf, env "KSTASH_KUBERNETES_CA_CERT";

    /// File with the bearer token kstash presents to the API server.
    ///
    /// Re-read at each request. In a pod: the mounted ServiceAccount's
    /// `token`.
    kubernetes_token_file: PathBuf, env "KSTASH_KUBERNETES_TOKEN_FILE";

    /// Also check every ServiceAccount token with TokenReview.
    ///
    /// On `kubernetes_api`, so a token whose pod is gone stops working at
    /// once (kstash's ServiceAccount needs `system:auth-delegator`).
    /// Default `false`.
    kubernetes_token_review: bool = false, env "KSTASH_KUBERNETES_TOKEN_REVIEW",
        arg(num_args = 0..=1, default_missing_value = "true");

    /// Check ServiceAccount token signatures locally.
    ///
    /// Against the cluster's keys (`kubernetes_jwks_file` or OIDC
    /// discovery). `false`: TokenReview alone. Default `true`.
    kubernetes_local_check: bool = true, env "KSTASH_KUBERNETES_LOCAL_CHECK",
        arg(num_args = 0..=1, default_missing_value = "true");

    /// How often the cluster's signing keys are fetched again (e.g. `5m`).
    ///
    /// A token with an unknown key id also fetches them, at most once a
    /// second. Default `5m`.
    kubernetes_jwks_refresh: Duration = Duration::from_secs(300), env "KSTASH_KUBERNETES_JWKS_REFRESH",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");

    /// Serve kube-apiserver's KMS v2 plugin API on this Unix socket.
    ///
    /// `unix:///abs/path` or `/abs/path`; its directory must exist. For a
    /// node stacked on a control-plane host: its kube-apiserver encrypts
    /// Secrets with the named key `kms_key` through this socket, with no
    /// token (the socket's file permissions are the boundary). Requires
    /// `kms_key`.
    kms_socket: String, env "KSTASH_KMS_SOCKET";

    /// The named key the KMS socket serves (`NAMESPACE/NAME`).
    ///
    /// The socket may encrypt and decrypt with this key and nothing else.
    /// Requires `kms_socket`.
    kms_key: String, env "KSTASH_KMS_KEY";

    /// Mode of the KMS socket file, in octal.
    ///
    /// Nothing for others; `0660` with `kms_socket_group` lets a group
    /// connect. Default `0600`.
    kms_socket_mode: String = "0600".into(), env "KSTASH_KMS_SOCKET_MODE";

    /// Group (numeric gid) of the KMS socket file.
    ///
    /// kstash's user must be a member. Default: kstash's own group.
    kms_socket_group: u32, env "KSTASH_KMS_SOCKET_GROUP";

    /// How often the KMS socket's status is refreshed (e.g. `5s`).
    ///
    /// kube-apiserver's Status polls are answered from this cache, never
    /// with a Raft round; a status older than three intervals is not
    /// served. 100ms to 60s. Default `5s`.
    kms_status_interval: Duration = crate::plugins::kms::service::DEFAULT_STATUS_INTERVAL,
        env "KSTASH_KMS_STATUS_INTERVAL",
        arg(value_parser = humantime::parse_duration), file(deserialize_with = "de_duration");
}

impl Default for Config {
    /// Every setting at its default (not checked: the default needs TLS
    /// files or `tls_disable`).
    fn default() -> Self {
        ConfigFile::default().with_defaults()
    }
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
        let file = match &self.config {
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
            None => ConfigFile::default(),
        };
        let mut c = self.layer().over(file).with_defaults();
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
        if self
            .audit_file
            .as_ref()
            .is_some_and(|f| f.trim().is_empty())
        {
            return invalid(
                "audit_file is empty: give the audit log's file path, or `-` for stdout \
                 (leave audit_file out to run without an audit log)"
                    .into(),
            );
        }
        self.check_raft()?;
        self.check_connections()?;
        self.kms_options()?;
        // The kubernetes_* settings are checked with the in-cluster
        // defaults added, when the server opens them (KubernetesAuth::open).
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

    /// The KMS socket this node serves, if any: `kms_socket` and `kms_key`
    /// together, a socket path, a key name, a mode and an interval that
    /// kstash accepts.
    pub fn kms_options(&self) -> Result<Option<KmsOptions>, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let (socket, key) =
            match (&self.kms_socket, &self.kms_key) {
                (Some(socket), Some(key)) => (socket, key),
                (Some(_), None) => return invalid(
                    "--kms-socket needs --kms-key NAMESPACE/NAME: the named key the socket serves"
                        .into(),
                ),
                (None, Some(_)) => {
                    return invalid(
                        "--kms-key needs --kms-socket: the Unix socket to serve it on".into(),
                    )
                }
                (None, None) => {
                    let stray = [
                        ("--kms-socket-group", self.kms_socket_group.is_some()),
                        ("--kms-socket-mode", self.kms_socket_mode != "0600"),
                        (
                            "--kms-status-interval",
                            self.kms_status_interval
                                != crate::plugins::kms::service::DEFAULT_STATUS_INTERVAL,
                        ),
                    ];
                    if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                        return invalid(format!("{flag} needs --kms-socket and --kms-key"));
                    }
                    return Ok(None);
                }
            };
        let kms = |m: String| ConfigError::Invalid(format!("kms: {m}"));
        let mut options = SocketOptions::new(socket).map_err(|e| kms(e.to_string()))?;
        options.mode = parse_mode(&self.kms_socket_mode).map_err(|e| kms(e.to_string()))?;
        options.group = self.kms_socket_group;
        Ok(Some(KmsOptions {
            socket: options,
            key: KmsKey::parse(key).map_err(kms)?,
            status_interval: check_status_interval(self.kms_status_interval).map_err(kms)?,
        }))
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

    /// How this node checks Kubernetes ServiceAccount tokens: the
    /// `kubernetes_*` settings, with `pod`'s in-cluster API server, CA and
    /// token for those not given ([`InCluster::detect`] in a pod).
    pub fn kubernetes_settings(&self, pod: Option<&InCluster>) -> KubernetesSettings {
        KubernetesSettings {
            issuer: self.kubernetes_issuer.clone(),
            jwks_file: self.kubernetes_jwks_file.clone(),
            api: self.kubernetes_api.clone(),
            ca_cert: self.kubernetes_ca_cert.clone(),
            token_file: self.kubernetes_token_file.clone(),
            token_review: self.kubernetes_token_review,
            local_check: self.kubernetes_local_check,
            jwks_refresh: self.kubernetes_jwks_refresh,
        }
        .with_in_cluster(pod)
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
                let file: ConfigFile =
                    toml::from_str(&format!("sweep_interval = \"{text}\"")).unwrap();
                assert_eq!(file.sweep_interval, Some(d), "{text}");
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

    /// The rows of README's configuration table: (field, flag, env) cells.
    fn readme_rows() -> Vec<(String, String, String)> {
        let readme = include_str!("../README.md");
        let start = readme
            .find("\n## Configuration\n")
            .expect("README has a Configuration section");
        let section = &readme[start + 1..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                let cell = |i: usize| cells[i].trim_start_matches("| ").to_string();
                (cell(0), cell(1), cell(2))
            })
            .collect()
    }

    #[test]
    fn every_setting_has_its_flag_its_env_var_and_one_readme_row() {
        // Steps: each declared setting has the env var named after its key,
        // and clap gives it the flag and env var declared (nothing else
        // either); README's table has one row per setting, naming the same
        // key, flag and env var, and no row for anything else.
        use clap::Args as _;
        assert!(SETTINGS.len() > 20, "{SETTINGS:?}");
        let command = ServerArgs::augment_args(clap::Command::new("server"));
        let flags: Vec<(String, Option<String>)> = command
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                a.get_long().map(|l| (l.to_string(), env))
            })
            .collect();
        let mut expected: Vec<(String, Option<String>)> = vec![
            ("config".into(), Some("KSTASH_CONFIG".into())),
            ("dev".into(), None),
        ];
        for s in SETTINGS {
            assert_eq!(s.env, format!("KSTASH_{}", s.key.to_uppercase()), "{s:?}");
            expected.push((s.key.replace('_', "-"), Some(s.env.into())));
        }
        assert_eq!(flags, expected, "kstash server's flags are the settings");

        let rows = readme_rows();
        let declared: Vec<(String, String, String)> = SETTINGS
            .iter()
            .map(|s| {
                (
                    format!("`{}`", s.key),
                    format!("`--{}`", s.key.replace('_', "-")),
                    format!("`{}`", s.env),
                )
            })
            .collect();
        for row in &declared {
            assert!(
                rows.contains(row),
                "README's configuration table lacks the row {row:?}"
            );
        }
        for row in &rows {
            assert!(
                declared.contains(row),
                "README's configuration table has a row no setting declares: {row:?}"
            );
        }
        assert_eq!(rows.len(), declared.len(), "one README row per setting");
    }

    #[test]
    fn flags_reach_the_settings_with_their_parsers() {
        use clap::{Args as _, FromArgMatches as _};
        let command = ServerArgs::augment_args(clap::Command::new("server"));
        let matches = command
            .try_get_matches_from([
                "server",
                "--tls-disable",
                "--join",
                "a:1,b:2",
                "--idle-timeout",
                "2m",
                "--storage",
                "memory",
                "--etcd-prefix",
                "p/",
            ])
            .unwrap();
        let args = ServerArgs::from_arg_matches(&matches).unwrap();
        assert_eq!(args.tls_disable, Some(true));
        assert_eq!(args.join, Some(vec!["a:1".to_string(), "b:2".to_string()]));
        assert_eq!(args.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(args.storage, Some(StorageKind::Memory));
        assert_eq!(args.etcd_prefix.as_deref(), Some("p/"));
        assert_eq!(args.bootstrap, None);
    }

    #[test]
    fn audit_settings_come_from_flags_env_and_file_and_an_empty_file_is_refused() {
        let plain = || ServerArgs {
            tls_disable: Some(true),
            ..Default::default()
        };
        let c = plain().resolve().unwrap();
        assert_eq!(
            (c.audit_file, c.audit_hmac_values),
            (None, false),
            "audit is off and values are not logged by default"
        );
        for device in ["-", "/var/log/kstash/audit.log"] {
            let c = ServerArgs {
                audit_file: Some(device.into()),
                audit_hmac_values: Some(true),
                ..plain()
            }
            .resolve()
            .unwrap();
            assert_eq!(c.audit_file.as_deref(), Some(device));
            assert!(c.audit_hmac_values);
        }
        for empty in ["", "  "] {
            let err = ServerArgs {
                audit_file: Some(empty.into()),
                ..plain()
            }
            .resolve()
            .unwrap_err()
            .to_string();
            assert!(err.contains("audit_file is empty"), "{empty:?}: {err}");
            assert!(err.contains("`-` for stdout"), "{err}");
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kstash.toml");
        std::fs::write(
            &path,
            "tls_disable = true\naudit_file = \"-\"\naudit_hmac_values = true\n",
        )
        .unwrap();
        let c = ServerArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (c.audit_file.as_deref(), c.audit_hmac_values),
            (Some("-"), true)
        );
        std::fs::write(&path, "tls_disable = true\naudit_file = \"\"\n").unwrap();
        let err = ServerArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("audit_file is empty"), "{err}");

        use clap::{Args as _, FromArgMatches as _};
        let command = ServerArgs::augment_args(clap::Command::new("server"));
        let matches = command
            .try_get_matches_from(["server", "--audit-file", "-", "--audit-hmac-values"])
            .unwrap();
        let args = ServerArgs::from_arg_matches(&matches).unwrap();
        assert_eq!(
            (args.audit_file.as_deref(), args.audit_hmac_values),
            (Some("-"), Some(true))
        );
    }

    #[test]
    fn kubernetes_settings_come_from_file_flags_and_the_pod() {
        // Steps: defaults (login off, local checks on, keys refreshed every
        // 5m); the file and the flags reach KubernetesSettings; a pod's API
        // server, CA and token fill in what is not given; settings that
        // could never check a token fail KubernetesAuth::open.
        use crate::auth::kubernetes::KubernetesAuth;
        let plain = || ServerArgs {
            tls_disable: Some(true),
            ..Default::default()
        };
        let c = plain().resolve().unwrap();
        let k = c.kubernetes_settings(None);
        assert_eq!(
            k,
            KubernetesSettings {
                local_check: true,
                jwks_refresh: Duration::from_secs(300),
                ..Default::default()
            }
        );
        assert!(!KubernetesAuth::open(k).unwrap().is_enabled());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kstash.toml");
        std::fs::write(
            &path,
            "tls_disable = true\n\
             kubernetes_issuer = \"https://k8s.example\"\n\
             kubernetes_jwks_file = \"/etc/kstash/jwks.json\"\n\
             kubernetes_token_review = true\n\
             kubernetes_jwks_refresh = \"2m\"\n",
        )
        .unwrap();
        use clap::{Args as _, FromArgMatches as _};
        let command = ServerArgs::augment_args(clap::Command::new("server"));
        let matches = command
            .try_get_matches_from([
                "server",
                "--config",
                path.to_str().unwrap(),
                "--kubernetes-local-check=false",
                "--kubernetes-api",
                "https://10.0.0.1:6443",
            ])
            .unwrap();
        let c = ServerArgs::from_arg_matches(&matches)
            .unwrap()
            .resolve()
            .unwrap();
        let pod = InCluster::from_env(Some("10.96.0.1"), Some("443"), true).unwrap();
        let k = c.kubernetes_settings(Some(&pod));
        assert_eq!(
            k,
            KubernetesSettings {
                issuer: Some("https://k8s.example".into()),
                jwks_file: Some("/etc/kstash/jwks.json".into()),
                api: Some("https://10.0.0.1:6443".into()),
                ca_cert: Some(pod.ca_cert.clone()),
                token_file: Some(pod.token_file.clone()),
                token_review: true,
                local_check: false,
                jwks_refresh: Duration::from_secs(120),
            },
            "the flag's api wins over the pod's; the pod's CA and token fill in"
        );

        let c = ServerArgs {
            kubernetes_token_review: Some(true),
            ..plain()
        }
        .resolve()
        .unwrap();
        let err = KubernetesAuth::open(c.kubernetes_settings(None)).unwrap_err();
        assert!(
            err.to_string()
                .contains("kubernetes_token_review needs kubernetes_api"),
            "{err}"
        );
    }

    #[test]
    fn kms_settings_come_from_flags_and_the_file_and_bad_ones_are_refused() {
        // Steps: no KMS by default; socket and key from the file, mode,
        // group and interval from flags → the KMS options; each half of
        // the pair alone, and a mode, group or interval without them, are
        // refused naming the missing flag; a relative path, a bad key, a
        // mode others can use and an interval out of range are refused.
        let plain = || ServerArgs {
            tls_disable: Some(true),
            ..Default::default()
        };
        assert_eq!(plain().resolve().unwrap().kms_options().unwrap(), None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kstash.toml");
        std::fs::write(
            &path,
            "tls_disable = true\n\
             kms_socket = \"unix:///run/kstash/kms.sock\"\n\
             kms_key = \"kube-system/kube-kek\"\n\
             kms_status_interval = \"2s\"\n",
        )
        .unwrap();
        use clap::{Args as _, FromArgMatches as _};
        let command = ServerArgs::augment_args(clap::Command::new("server"));
        let matches = command
            .try_get_matches_from([
                "server",
                "--config",
                path.to_str().unwrap(),
                "--kms-socket-mode",
                "0660",
                "--kms-socket-group",
                "998",
            ])
            .unwrap();
        let c = ServerArgs::from_arg_matches(&matches)
            .unwrap()
            .resolve()
            .unwrap();
        let kms = c.kms_options().unwrap().unwrap();
        assert_eq!(kms.socket.path, PathBuf::from("/run/kstash/kms.sock"));
        assert_eq!((kms.socket.mode, kms.socket.group), (0o660, Some(998)));
        assert_eq!(kms.key.to_string(), "kube-system/kube-kek");
        assert_eq!(kms.status_interval, Duration::from_secs(2));
        let defaults = ServerArgs {
            kms_socket: Some("/run/kms.sock".into()),
            kms_key: Some("ns/k".into()),
            ..plain()
        }
        .resolve()
        .unwrap()
        .kms_options()
        .unwrap()
        .unwrap();
        assert_eq!((defaults.socket.mode, defaults.socket.group), (0o600, None));
        assert_eq!(defaults.status_interval, Duration::from_secs(5));

        let refused = |args: ServerArgs, want: &str| {
            let err = args.resolve().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        };
        let both = || ServerArgs {
            kms_socket: Some("/run/kms.sock".into()),
            kms_key: Some("ns/k".into()),
            ..plain()
        };
        refused(
            ServerArgs {
                kms_key: None,
                ..both()
            },
            "--kms-socket needs --kms-key",
        );
        refused(
            ServerArgs {
                kms_socket: None,
                ..both()
            },
            "--kms-key needs --kms-socket",
        );
        for (args, flag) in [
            (
                ServerArgs {
                    kms_socket_group: Some(1),
                    ..plain()
                },
                "--kms-socket-group",
            ),
            (
                ServerArgs {
                    kms_socket_mode: Some("0660".into()),
                    ..plain()
                },
                "--kms-socket-mode",
            ),
            (
                ServerArgs {
                    kms_status_interval: Some(Duration::from_secs(1)),
                    ..plain()
                },
                "--kms-status-interval",
            ),
        ] {
            refused(args, &format!("{flag} needs --kms-socket and --kms-key"));
        }
        refused(
            ServerArgs {
                kms_socket: Some("kms.sock".into()),
                ..both()
            },
            "absolute path",
        );
        refused(
            ServerArgs {
                kms_key: Some("kek".into()),
                ..both()
            },
            "NAMESPACE/NAME",
        );
        refused(
            ServerArgs {
                kms_socket_mode: Some("0666".into()),
                ..both()
            },
            "others may not have access",
        );
        refused(
            ServerArgs {
                kms_status_interval: Some(Duration::from_millis(10)),
                ..both()
            },
            "status interval must be",
        );
    }

    #[test]
    fn the_file_takes_every_setting_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kstash.toml");
        let args = || ServerArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        std::fs::write(
            &path,
            "tls_disable = true\napi_addr = \"127.0.0.1:9300\"\netcd_prefix = \"p/\"\n\
             allowed_hosts = [\"kstash.test\"]\nidle_timeout = \"2m\"\nmax_connections = 7\n",
        )
        .unwrap();
        let c = args().resolve().unwrap();
        assert_eq!(c.api_addr, "127.0.0.1:9300".parse().unwrap());
        assert_eq!(c.etcd_prefix.as_deref(), Some("p/"));
        assert_eq!(c.allowed_hosts, ["kstash.test"]);
        assert_eq!(
            (c.idle_timeout, c.max_connections),
            (Duration::from_secs(120), 7)
        );
        assert_eq!(
            Config {
                api_addr: c.api_addr,
                tls_disable: true,
                etcd_prefix: c.etcd_prefix.clone(),
                allowed_hosts: c.allowed_hosts.clone(),
                idle_timeout: c.idle_timeout,
                max_connections: 7,
                ..Config::default()
            },
            c,
            "every other setting at its default"
        );
        for flag_only in ["config = \"x.toml\"", "dev = true"] {
            std::fs::write(&path, format!("tls_disable = true\n{flag_only}\n")).unwrap();
            let err = args().resolve().unwrap_err().to_string();
            assert!(err.contains("unknown field"), "{flag_only}: {err}");
        }
    }
}
