//! Node configuration: a TOML file, every field also a flag and an
//! environment variable (flag > env > file > default).
//!
//! Invariant: unknown fields are refused; TLS is required unless disabled
//! explicitly on a loopback address; a private key file readable by group or
//! others is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Deserializer};

use crate::barrier::DEFAULT_ENCRYPTION_LIMIT;
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
fn default_log() -> String {
    "info".into()
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
    /// Encryptions under one key term before a forced rotation. Default 2^32 − 2^20.
    #[serde(default = "default_encryption_limit")]
    pub encryption_limit: u64,
    /// Log filter (`RUST_LOG` syntax). Default `info`.
    #[serde(default = "default_log")]
    pub log: String,
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
    /// Encryptions per key term before a forced rotation.
    #[arg(long, env = "KSTASH_ENCRYPTION_LIMIT")]
    pub encryption_limit: Option<u64>,
    /// Log filter (`RUST_LOG` syntax).
    #[arg(long, env = "KSTASH_LOG")]
    pub log: Option<String>,
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
            tls_disable
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
        Ok(())
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

/// Refuse a secret file that group or others can read.
pub fn check_private_file(path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(ConfigError::Invalid(format!(
                "{} is readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    let _ = meta;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[cfg(unix)]
    #[test]
    fn world_readable_keys_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_private_file(&key).is_err());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private_file(&key).is_ok());
    }
}
