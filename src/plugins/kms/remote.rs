//! `kstash kms-plugin`: the KMS v2 service as a separate process (a static
//! pod on each control-plane node) that reaches a kstash cluster through
//! the client library, with failover across the node addresses and an
//! access token read from a file.
//!
//! Invariants:
//! - Each call to kstash has its own time budget (`--timeout`), however
//!   long the process runs ([`Client::with_budget_per_call`]); a sealed
//!   node, or one without a leader, passes these calls (all reads or
//!   replayable key uses) on to the next address.
//! - The token file is refused when group-writable or readable by others
//!   (like every `*_file` secret of kstash), and read again when it
//!   changes. The plugin renews the token at about two thirds of its
//!   remaining life; a token that cannot be renewed past its maximum
//!   lifetime is reported (its expiry, never the token) while it still
//!   works.
//! - The plugin uses the token's namespace only for the key `--key` names:
//!   a key id of any other key is never passed to the apiserver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use zeroize::Zeroizing;

use super::metrics::KmsMetrics;
use super::service::{Encrypted, KmsBackend, KmsError, KmsKey};
use super::{KmsEndpoint, KmsOptions};
use crate::client::wire::RenewRequest;
use crate::client::{Client, ClientError, ClientOptions};
use crate::plugins::health::HealthServer;
use crate::plugins::socket::SocketError;
use crate::plugins::TaskGuard;
use crate::secret::SecretString;

/// Most bytes read from the token file.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Why the plugin cannot start.
#[derive(Debug, Error)]
pub enum PluginError {
    /// The token file is unusable; the message says why.
    #[error("--token-file {path}: {why}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The client settings are unusable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The socket cannot be served.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The health address cannot be bound.
    #[error("--health-listen {addr}: {source}")]
    Health {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A KMS backend over a kstash cluster: the client library with the
/// plugin's access token.
#[derive(Debug)]
pub struct RemoteBackend {
    key: KmsKey,
    client: RwLock<Arc<Client>>,
}

impl RemoteBackend {
    /// The backend of `key` through `client`.
    pub fn new(key: KmsKey, client: Client) -> Self {
        RemoteBackend {
            key,
            client: RwLock::new(Arc::new(client)),
        }
    }

    /// The client in use.
    fn client(&self) -> Arc<Client> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Use `client` (with a new token) from the next call on.
    fn replace_client(&self, client: Client) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(client);
    }

    /// Refuse a key id that names another key than this plugin's (a token
    /// of another namespace that holds a key of the same name).
    fn check_key_id(&self, key_id: &str) -> Result<(), KmsError> {
        match crate::keys::parse_key_id(key_id) {
            Some(id) if id.namespace == self.key.namespace && id.name == self.key.name => Ok(()),
            _ => Err(KmsError::Unavailable(format!(
                "kstash answered with key id {key_id:?}, which is not a version of {}: the \
                 token must belong to namespace {}",
                self.key, self.key.namespace
            ))),
        }
    }
}

/// What a failed call to kstash means to kube-apiserver: the request's
/// fault (400, 413: `INVALID_ARGUMENT`), or kstash cannot serve it now
/// (everything else: `UNAVAILABLE`, with the reason).
pub fn kms_error(e: ClientError) -> KmsError {
    match &e {
        ClientError::Api {
            status: 400 | 413, ..
        } => KmsError::Invalid(e.to_string()),
        ClientError::Api {
            status: 401 | 403, ..
        } => KmsError::Unavailable(format!(
            "{e}; check the plugin's token (--token-file) and its policy (encrypt and decrypt on \
             keys/<name>)"
        )),
        _ => KmsError::Unavailable(e.to_string()),
    }
}

impl KmsBackend for RemoteBackend {
    async fn status(&self) -> Result<String, KmsError> {
        let info = self
            .client()
            .get_key(&self.key.name)
            .await
            .map_err(kms_error)?;
        if info.namespace != self.key.namespace {
            return Err(KmsError::Unavailable(format!(
                "the token belongs to namespace {}, and the plugin serves {}: mint the token in \
                 namespace {}",
                info.namespace, self.key, self.key.namespace
            )));
        }
        if info.exhausted {
            return Err(KmsError::Unavailable(format!(
                "key {} version {} reached its encryption limit; rotate it (kstash key rotate {})",
                self.key, info.latest_version, self.key.name
            )));
        }
        self.check_key_id(&info.key_id)?;
        Ok(info.key_id)
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Encrypted, KmsError> {
        let done = self
            .client()
            .encrypt(&self.key.name, plaintext)
            .await
            .map_err(kms_error)?;
        self.check_key_id(&done.key_id)?;
        Ok(Encrypted {
            key_id: done.key_id,
            ciphertext: done.ciphertext.into_bytes(),
        })
    }

    async fn decrypt(
        &self,
        _key_id: &str,
        ciphertext: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let done = self
            .client()
            .decrypt(&self.key.name, ciphertext)
            .await
            .map_err(kms_error)?;
        Ok(done.plaintext)
    }
}

/// What identifies one version of the token file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    device: u64,
    inode: u64,
}

/// The token file, and the version of it in use.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    stamp: Option<Stamp>,
}

impl TokenFile {
    /// Read the token from `path` (checked as a private file).
    pub fn open(path: &Path) -> Result<(TokenFile, SecretString), PluginError> {
        let mut file = TokenFile {
            path: path.to_path_buf(),
            stamp: None,
        };
        let token = file.read()?;
        Ok((file, token))
    }

    fn error(&self, why: impl Into<String>) -> PluginError {
        PluginError::TokenFile {
            path: self.path.clone(),
            why: why.into(),
        }
    }

    fn stamp(&self) -> Result<Stamp, PluginError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.path).map_err(|e| self.error(e.to_string()))?;
        Ok(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// Read the token (a private file, one line, not empty) and remember
    /// which version of the file it came from.
    fn read(&mut self) -> Result<SecretString, PluginError> {
        use crate::data_dir::PrivateFileError;
        use std::io::Read;
        crate::data_dir::check_private_file(&self.path).map_err(|e| match e {
            PrivateFileError::NotPrivate { mode, .. } => self.error(format!(
                "readable by others or writable by group (mode {:o}); chmod 600 it",
                mode & 0o777
            )),
            PrivateFileError::Io { source, .. } => self.error(source.to_string()),
        })?;
        let stamp = self.stamp()?;
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(&self.path)
            .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| self.error(e.to_string()))?;
        if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(self.error(format!(
                "longer than {MAX_TOKEN_FILE_BYTES} bytes: it must hold only the access token"
            )));
        }
        let token = text.trim();
        if token.is_empty() {
            return Err(self.error("empty: write the plugin's access token into it"));
        }
        if token.contains(char::is_whitespace) {
            return Err(self.error("holds more than one word: it must hold only the access token"));
        }
        self.stamp = Some(stamp);
        Ok(SecretString::new(token.to_string()))
    }

    /// The token, if the file changed since it was last read.
    fn changed(&mut self) -> Result<Option<SecretString>, PluginError> {
        if self.stamp.as_ref() == Some(&self.stamp()?) {
            return Ok(None);
        }
        self.read().map(Some)
    }
}

/// Everything `kstash kms-plugin` needs.
#[derive(Debug, Clone)]
pub struct RemotePluginOptions {
    /// The kstash addresses, CA and per-call budget (its token is ignored:
    /// it comes from `token_file`).
    pub client: ClientOptions,
    /// The access token's file.
    pub token_file: PathBuf,
    /// The socket, the key and the status interval.
    pub kms: KmsOptions,
    /// Where to serve `/healthz`, `/readyz` and `/metrics`, if anywhere.
    pub health_listen: Option<SocketAddr>,
}

/// A running `kstash kms-plugin`.
#[derive(Debug)]
pub struct RemotePlugin {
    endpoint: KmsEndpoint,
    _token_keeper: TaskGuard,
    health: Option<HealthServer>,
}

/// The client of `options` with `token`, a budget per call.
fn client_with(options: &ClientOptions, token: SecretString) -> Result<Client, ClientError> {
    let options = ClientOptions {
        token: Some(token),
        ..options.clone()
    };
    Ok(Client::new(&options)?.with_budget_per_call())
}

impl RemotePlugin {
    /// Read the token, bind the health address and the socket, and start
    /// serving. kstash need not be reachable: until it is, Status answers
    /// `UNAVAILABLE`.
    pub async fn start(options: RemotePluginOptions) -> Result<RemotePlugin, PluginError> {
        let (file, token) = TokenFile::open(&options.token_file)?;
        let client = client_with(&options.client, token)?;
        let key = options.kms.key.clone();
        let backend = Arc::new(RemoteBackend::new(key.clone(), client));
        let metrics = KmsMetrics::new();
        let health_listener = match options.health_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| PluginError::Health { addr, source })?,
            ),
            None => None,
        };
        let endpoint = KmsEndpoint::start(backend.clone(), &options.kms, metrics.clone()).await?;
        let health = health_listener.map(|l| {
            HealthServer::start(
                "KMS plugin",
                l,
                endpoint.cache().clone(),
                metrics.registry(),
            )
        });
        let keeper = TokenKeeper {
            backend,
            file,
            client: options.client.clone(),
            metrics,
            every: options.kms.status_interval,
        };
        let token_keeper = TaskGuard::new(tokio::spawn(keeper.run()));
        tracing::info!(
            key = %key,
            socket = %endpoint.path().display(),
            health = ?health.as_ref().map(HealthServer::addr),
            "kstash KMS v2 plugin started"
        );
        Ok(RemotePlugin {
            endpoint,
            _token_keeper: token_keeper,
            health,
        })
    }

    /// The socket file.
    pub fn socket_path(&self) -> &Path {
        self.endpoint.path()
    }

    /// The bound health address, if one was asked for.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().map(HealthServer::addr)
    }

    /// Stop serving, remove the socket, stop the health server and the
    /// token's renewal.
    pub async fn shutdown(self) {
        self.endpoint.shutdown().await;
        drop(self._token_keeper);
        if let Some(health) = self.health {
            health.shutdown().await;
        }
        tracing::info!("kstash KMS v2 plugin stopped");
    }
}

/// Keeps the plugin's token usable: follows the file, renews the token.
struct TokenKeeper {
    backend: Arc<RemoteBackend>,
    file: TokenFile,
    client: ClientOptions,
    metrics: KmsMetrics,
    /// How often the file is checked (and a failed renewal retried).
    every: Duration,
}

/// What the keeper does next with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Look it up (a new token, or one whose life is unknown).
    LookUp,
    /// Renew it at this instant.
    RenewAt(Instant),
}

/// When to renew a token with `ttl` left: at two thirds of it.
fn renew_in(ttl: Duration) -> Duration {
    (ttl * 2 / 3).max(Duration::from_millis(200))
}

impl TokenKeeper {
    async fn run(mut self) {
        let mut next = Next::LookUp;
        let mut failing = false;
        let mut warned_max = false;
        loop {
            match self.file.changed() {
                Ok(Some(token)) => match client_with(&self.client, token) {
                    Ok(client) => {
                        self.backend.replace_client(client);
                        tracing::info!(file = %self.file.path.display(), "the token file changed: using its token");
                        next = Next::LookUp;
                        warned_max = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot use the new token"),
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the token file; keeping the token in use")
                }
            }
            let due = match next {
                Next::LookUp => true,
                Next::RenewAt(at) => Instant::now() >= at,
            };
            if due {
                let client = self.backend.client();
                let answer = match next {
                    Next::LookUp => client.token_self().await,
                    Next::RenewAt(_) => client.token_renew(&RenewRequest { increment: None }).await,
                };
                match answer {
                    Ok(info) => {
                        let unix_now = SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        self.metrics.set_token_expires_at(unix_now + info.ttl);
                        if info.namespace != self.backend.key.namespace {
                            tracing::error!(
                                token_namespace = %info.namespace,
                                key = %self.backend.key,
                                "the plugin's token belongs to another namespace than its key: mint it in the key's namespace"
                            );
                        }
                        let renewed = matches!(next, Next::RenewAt(_));
                        if renewed && info.expires_at == info.max_expires_at && !warned_max {
                            tracing::warn!(
                                expires_at = %info.expires_at,
                                "the plugin's access token reached its maximum lifetime and stops working at {}: write a new token to the token file before then",
                                info.expires_at
                            );
                            warned_max = true;
                        }
                        if failing {
                            tracing::info!(expires_at = %info.expires_at, "the plugin's access token is renewed again");
                        } else {
                            tracing::debug!(expires_at = %info.expires_at, renewed, "the plugin's access token");
                        }
                        failing = false;
                        next =
                            Next::RenewAt(Instant::now() + renew_in(Duration::from_secs(info.ttl)));
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot look up or renew the plugin's access token; retrying every {}", crate::clock::format_duration(self.every));
                        }
                        failing = true;
                        // Retry soon; a lookup stays a lookup.
                        if let Next::RenewAt(_) = next {
                            next = Next::RenewAt(Instant::now() + self.every);
                        }
                    }
                }
            }
            let wait = match next {
                Next::LookUp => self.every,
                Next::RenewAt(at) => at.saturating_duration_since(Instant::now()).min(self.every),
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_token_file_is_private_one_token_and_read_again_when_it_changes() {
        // Steps: a 0600 file with a token (and a newline) reads; unchanged,
        // nothing new; rewritten, the new token; a world-readable, an
        // empty and a two-word file are refused with their path.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, "kst_first\n", 0o600);
        let (mut file, token) = TokenFile::open(&path).unwrap();
        assert_eq!(token.expose(), "kst_first");
        assert!(file.changed().unwrap().is_none());
        write(&path, "kst_second-and-longer", 0o600);
        assert_eq!(
            file.changed().unwrap().unwrap().expose(),
            "kst_second-and-longer"
        );
        assert!(file.changed().unwrap().is_none());
        write(&path, "kst_x", 0o640);
        assert!(TokenFile::open(&path).is_ok(), "group-readable is allowed");

        for (text, mode, want) in [
            ("kst_x", 0o644, "readable"),
            ("  \n", 0o600, "empty"),
            ("kst_x kst_y", 0o600, "more than one word"),
        ] {
            write(&path, text, mode);
            let err = TokenFile::open(&path).unwrap_err().to_string();
            assert!(
                err.contains("--token-file") && err.contains(want),
                "{text:?}: {err}"
            );
            assert!(!err.contains("kst_x"), "the token is never shown: {err}");
        }
        let err = TokenFile::open(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn client_errors_map_to_invalid_only_for_bad_requests() {
        let api = |status: u16, code: &str| ClientError::Api {
            status,
            code: code.into(),
            message: "m".into(),
        };
        assert!(matches!(
            kms_error(api(400, "bad_request")),
            KmsError::Invalid(_)
        ));
        assert!(matches!(
            kms_error(api(413, "too_large")),
            KmsError::Invalid(_)
        ));
        for e in [
            api(503, "sealed"),
            api(503, "unavailable"),
            api(404, "not_found"),
            api(500, "internal"),
            ClientError::Connect("refused".into()),
        ] {
            assert!(matches!(kms_error(e), KmsError::Unavailable(_)));
        }
        let forbidden = kms_error(api(403, "forbidden")).to_string();
        assert!(forbidden.contains("--token-file"), "{forbidden}");
    }

    #[test]
    fn a_token_is_renewed_at_two_thirds_of_its_life() {
        assert_eq!(
            renew_in(Duration::from_secs(3600)),
            Duration::from_secs(2400)
        );
        assert_eq!(renew_in(Duration::from_secs(3)), Duration::from_secs(2));
        assert_eq!(renew_in(Duration::ZERO), Duration::from_millis(200));
    }

    #[test]
    fn key_ids_of_other_keys_are_refused() {
        let backend = RemoteBackend::new(
            KmsKey::parse("kube-system/kek").unwrap(),
            Client::new(&ClientOptions {
                addresses: vec!["http://127.0.0.1:1".into()],
                token: None,
                ca_cert: None,
                timeout: Duration::from_secs(1),
            })
            .unwrap(),
        );
        let uid = [1; crate::keys::UID_BYTES];
        assert!(backend
            .check_key_id(&crate::keys::key_id("kube-system", "kek", &uid, 4))
            .is_ok());
        for other in [
            crate::keys::key_id("default", "kek", &uid, 4),
            crate::keys::key_id("kube-system", "kek2", &uid, 4),
            "garbage".to_string(),
        ] {
            let err = backend.check_key_id(&other).unwrap_err();
            assert!(matches!(err, KmsError::Unavailable(_)), "{other}");
        }
    }
}
