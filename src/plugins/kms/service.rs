//! The KMS v2 service, once, over a [`KmsBackend`]: the node's own service
//! layer (`local`, `kstash server --kms-socket`) or the client library
//! (`remote`, `kstash kms-plugin`).
//!
//! Invariants:
//! - `Status` is answered only from the [`StatusCache`], which a background
//!   task refreshes every status interval: a poll never costs a Raft round.
//!   A cache that is empty, older than [`STALE_AFTER_INTERVALS`] intervals,
//!   or whose last refresh failed answers gRPC `UNAVAILABLE`, never a
//!   success with `healthz` other than `ok`.
//! - Every request is checked against kube-apiserver's limits before the
//!   backend sees it (`INVALID_ARGUMENT`), and every reply before it is sent
//!   (`INTERNAL` rather than a reply the apiserver would reject).
//! - A `Decrypt` names this service's key and the version its ciphertext
//!   was made by, or it is refused: a key id and a ciphertext from
//!   different envelopes never reach the backend.
//! - No seed, plaintext or ciphertext reaches a log line or an error
//!   message; the caller's `uid` is logged at `debug` only, cut short.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{Notify, Semaphore};
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::metrics::{KmsMetrics, Rpc};
use super::pb;
use crate::keys;

/// Largest plaintext `Encrypt` takes: the apiserver sends a 32-byte DEK
/// seed; anything much larger is not kube-apiserver.
pub const MAX_PLAINTEXT_BYTES: usize = 512;

/// Largest ciphertext, in either direction (kube-apiserver's limit).
pub const MAX_CIPHERTEXT_BYTES: usize = 1024;

/// Longest key id, in either direction (kube-apiserver's limit).
pub const MAX_KEY_ID_BYTES: usize = 1024;

/// Annotation keys and values of one `Decrypt` together stay below this
/// (kube-apiserver's limit).
pub const MAX_ANNOTATIONS_BYTES: usize = 32 * 1024;

/// Largest gRPC message the socket decodes or encodes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Most `Encrypt` and `Decrypt` calls running at once; more wait.
pub const MAX_IN_FLIGHT: usize = 64;

/// Shortest and longest status interval accepted.
pub const STATUS_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));

/// A cached status older than this many intervals is not served.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// The least time one status refresh may take before it counts as failed.
pub const MIN_REFRESH_WAIT: Duration = Duration::from_secs(10);

/// Characters of a caller's `uid` that reach a log line.
const MAX_LOGGED_UID: usize = 64;

/// What a backend refuses, as the apiserver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KmsError {
    /// kstash cannot serve now (sealed, no leader, key missing or used up,
    /// unreachable): gRPC `UNAVAILABLE`. The message says why.
    #[error("{0}")]
    Unavailable(String),
    /// The request itself is wrong (too large, malformed, another key's,
    /// tampered with): gRPC `INVALID_ARGUMENT`.
    #[error("{0}")]
    Invalid(String),
}

impl KmsError {
    /// The gRPC status of this error: the one mapping of the plugin.
    pub fn to_status(&self) -> Status {
        match self {
            KmsError::Unavailable(m) => Status::unavailable(m.clone()),
            KmsError::Invalid(m) => Status::invalid_argument(m.clone()),
        }
    }
}

/// The key a KMS service serves: `<namespace>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsKey {
    /// The kstash namespace.
    pub namespace: String,
    /// The key's name.
    pub name: String,
}

impl KmsKey {
    /// Parse `NS/NAME`, checking both parts as kstash does.
    pub fn parse(text: &str) -> Result<KmsKey, String> {
        let (namespace, name) = text.split_once('/').ok_or_else(|| {
            format!("key {text:?} is not NAMESPACE/NAME (e.g. kube-system/kube-kek)")
        })?;
        crate::acl::path::validate_namespace(namespace)
            .map_err(|e| format!("key {text:?}: {e}"))?;
        keys::validate_name(name).map_err(|e| format!("key {text:?}: {e}"))?;
        Ok(KmsKey {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// Whether `key_id` names a version of this key (any version, any uid).
    fn owns(&self, id: &keys::KeyIdParts) -> bool {
        id.namespace == self.namespace && id.name == self.name
    }
}

impl std::fmt::Display for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An encryption as a backend returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// The key id of the version that encrypted.
    pub key_id: String,
    /// The ciphertext: the UTF-8 text `kstash:v<N>:<base64>`.
    pub ciphertext: Vec<u8>,
}

/// Where the KMS service gets its answers: the node's service layer or a
/// kstash cluster through the client library.
pub trait KmsBackend: Send + Sync + 'static {
    /// The key id of the key's current version, if the key can encrypt now.
    fn status(&self) -> impl Future<Output = Result<String, KmsError>> + Send;

    /// Encrypt `plaintext` with the key's current version.
    fn encrypt(&self, plaintext: &[u8])
        -> impl Future<Output = Result<Encrypted, KmsError>> + Send;

    /// Decrypt `ciphertext` (checked by the service: it names the version
    /// `key_id` names, of this key).
    fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &str,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, KmsError>> + Send;
}

/// The last status refresh.
#[derive(Debug, Default)]
struct CacheState {
    /// The key id of the last successful refresh.
    key_id: Option<String>,
    /// When the last successful refresh ended.
    refreshed_at: Option<Instant>,
    /// Why the last refresh failed, if it did.
    failure: Option<String>,
}

/// The status `Status` answers with, refreshed in the background.
#[derive(Debug)]
pub struct StatusCache {
    interval: Duration,
    state: Mutex<CacheState>,
    wake: Notify,
}

/// Ready exactly when `Status` would answer "ok".
impl crate::plugins::health::Readiness for StatusCache {
    fn ready(&self) -> Result<(), String> {
        self.current(Instant::now())
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

impl StatusCache {
    /// An empty cache refreshed every `interval` (which `Status` therefore
    /// answers `UNAVAILABLE` until the first refresh).
    pub fn new(interval: Duration) -> Self {
        StatusCache {
            interval,
            state: Mutex::new(CacheState::default()),
            wake: Notify::new(),
        }
    }

    /// How often it is refreshed.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep the outcome of a refresh that ended at `at`.
    pub fn record(&self, outcome: Result<String, KmsError>, at: Instant) {
        let mut state = self.lock();
        match outcome {
            Ok(key_id) => {
                state.key_id = Some(key_id);
                state.refreshed_at = Some(at);
                state.failure = None;
            }
            Err(e) => state.failure = Some(e.to_string()),
        }
    }

    /// The key id to report at `now`, or why there is none.
    pub fn current(&self, now: Instant) -> Result<String, KmsError> {
        let state = self.lock();
        if let Some(why) = &state.failure {
            return Err(KmsError::Unavailable(format!(
                "kstash cannot serve the key: {why}"
            )));
        }
        let (Some(key_id), Some(at)) = (&state.key_id, state.refreshed_at) else {
            return Err(KmsError::Unavailable(
                "the plugin has not reached kstash yet".into(),
            ));
        };
        let age = now.saturating_duration_since(at);
        if age > self.interval * STALE_AFTER_INTERVALS {
            return Err(KmsError::Unavailable(format!(
                "the last status from kstash is {} old (refreshed every {}): kstash answers too \
                 slowly or not at all",
                crate::clock::format_duration(age),
                crate::clock::format_duration(self.interval)
            )));
        }
        Ok(key_id.clone())
    }

    /// The key id of the last successful refresh, however old.
    fn last_key_id(&self) -> Option<String> {
        self.lock().key_id.clone()
    }

    /// Whether `Status` answers "ok" now.
    pub fn is_healthy(&self) -> bool {
        self.current(Instant::now()).is_ok()
    }

    /// Ask the refresher to refresh now rather than at its next tick.
    pub fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    /// Refresh from `backend` every interval (or sooner when asked), until
    /// the task is aborted. One refresh waits at most
    /// [`STALE_AFTER_INTERVALS`] intervals, and at least [`MIN_REFRESH_WAIT`]
    /// (a failover of the client library takes about a second): a longer
    /// refresh makes the cache stale, which Status reports meanwhile.
    pub async fn run_refresher<B: KmsBackend>(
        self: Arc<Self>,
        backend: Arc<B>,
        key: KmsKey,
        metrics: KmsMetrics,
    ) {
        let budget = (self.interval * STALE_AFTER_INTERVALS).max(MIN_REFRESH_WAIT);
        let mut was: Option<Result<String, String>> = None;
        loop {
            let outcome = match tokio::time::timeout(budget, backend.status()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(KmsError::Unavailable(format!(
                    "no status from kstash within {}",
                    crate::clock::format_duration(budget)
                ))),
            };
            let now = outcome.clone().map_err(|e| e.to_string());
            match (&was, &now) {
                (Some(Ok(old)), Ok(new)) if old == new => {}
                (_, Ok(key_id)) => {
                    tracing::info!(key = %key, key_id, "KMS key healthy")
                }
                (Some(Err(old)), Err(e)) if old == e => {}
                (_, Err(e)) => {
                    tracing::warn!(key = %key, error = %e, "KMS key unavailable: Status, Encrypt and Decrypt fail until kstash can serve it")
                }
            }
            was = Some(now);
            self.record(outcome, Instant::now());
            metrics.set_healthy(self.is_healthy());
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// The KMS v2 gRPC service over `B`.
pub struct KmsService<B> {
    backend: Arc<B>,
    key: KmsKey,
    cache: Arc<StatusCache>,
    metrics: KmsMetrics,
    in_flight: Arc<Semaphore>,
}

impl<B> Clone for KmsService<B> {
    fn clone(&self) -> Self {
        KmsService {
            backend: self.backend.clone(),
            key: self.key.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            in_flight: self.in_flight.clone(),
        }
    }
}

impl<B: KmsBackend> KmsService<B> {
    /// The service of `key` over `backend`, answering `Status` from `cache`
    /// (which [`StatusCache::run_refresher`] must refresh) and counting in
    /// `metrics`. No I/O.
    pub fn new(backend: Arc<B>, key: KmsKey, cache: Arc<StatusCache>, metrics: KmsMetrics) -> Self {
        KmsService {
            backend,
            key,
            cache,
            metrics,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The tonic server of this service, with its message size limits.
    pub fn into_server(
        self,
    ) -> pb::key_management_service_server::KeyManagementServiceServer<Self> {
        pb::key_management_service_server::KeyManagementServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn do_encrypt(&self, req: pb::EncryptRequest) -> Result<pb::EncryptResponse, Status> {
        let pb::EncryptRequest { plaintext, uid } = req;
        let plaintext = Zeroizing::new(plaintext);
        tracing::debug!(uid = %short(&uid), bytes = plaintext.len(), "KMS Encrypt");
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT_BYTES {
            return Err(Status::invalid_argument(format!(
                "the plaintext is {} bytes; it must be 1 to {MAX_PLAINTEXT_BYTES} (a DEK seed is 32)",
                plaintext.len()
            )));
        }
        let _slot = self.in_flight.acquire().await.map_err(|_| closing())?;
        let encrypted = self
            .backend
            .encrypt(&plaintext)
            .await
            .map_err(|e| e.to_status())?;
        check_encrypted(&self.key, &encrypted)?;
        if self.cache.last_key_id().as_deref() != Some(encrypted.key_id.as_str()) {
            // A rotation the cache has not seen: the apiserver compares
            // this key id with Status's, so bring Status up to date now.
            self.cache.refresh_soon();
        }
        Ok(pb::EncryptResponse {
            ciphertext: encrypted.ciphertext,
            key_id: encrypted.key_id,
            annotations: HashMap::new(),
        })
    }

    async fn do_decrypt(&self, req: pb::DecryptRequest) -> Result<pb::DecryptResponse, Status> {
        tracing::debug!(uid = %short(&req.uid), bytes = req.ciphertext.len(), "KMS Decrypt");
        let text = check_decrypt(&self.key, &req).map_err(|e| e.to_status())?;
        let _slot = self.in_flight.acquire().await.map_err(|_| closing())?;
        let mut plaintext = self
            .backend
            .decrypt(&req.key_id, text)
            .await
            .map_err(|e| e.to_status())?;
        // The response owns the bytes from here; prost encodes it and drops it.
        Ok(pb::DecryptResponse {
            plaintext: std::mem::take(&mut *plaintext),
        })
    }
}

/// The caller's uid as logged: at most [`MAX_LOGGED_UID`] characters.
fn short(uid: &str) -> String {
    uid.chars().take(MAX_LOGGED_UID).collect()
}

fn closing() -> Status {
    Status::unavailable("the KMS plugin is shutting down")
}

/// Check a backend's encryption against what the apiserver accepts and
/// against the key this service serves.
fn check_encrypted(key: &KmsKey, e: &Encrypted) -> Result<(), Status> {
    let bad = |what: String| {
        tracing::error!(key = %key, "KMS Encrypt: {what}; answering INTERNAL");
        Err(Status::internal(format!(
            "the plugin produced a reply the apiserver would refuse: {what}"
        )))
    };
    if e.key_id.is_empty() || e.key_id.len() > MAX_KEY_ID_BYTES {
        return bad(format!(
            "the key id is {} bytes (1 to {MAX_KEY_ID_BYTES})",
            e.key_id.len()
        ));
    }
    if e.ciphertext.is_empty() || e.ciphertext.len() > MAX_CIPHERTEXT_BYTES {
        return bad(format!(
            "the ciphertext is {} bytes (1 to {MAX_CIPHERTEXT_BYTES})",
            e.ciphertext.len()
        ));
    }
    match keys::parse_key_id(&e.key_id) {
        Some(id) if key.owns(&id) => Ok(()),
        _ => bad(format!("the key id {:?} does not name key {key}", e.key_id)),
    }
}

/// Check a `Decrypt` request: sizes, and that its key id names a version of
/// `key` and the version its ciphertext was made by. Returns the ciphertext
/// as text.
fn check_decrypt<'r>(key: &KmsKey, req: &'r pb::DecryptRequest) -> Result<&'r str, KmsError> {
    let invalid = |m: String| Err(KmsError::Invalid(m));
    if req.ciphertext.is_empty() || req.ciphertext.len() > MAX_CIPHERTEXT_BYTES {
        return invalid(format!(
            "the ciphertext is {} bytes; it must be 1 to {MAX_CIPHERTEXT_BYTES}",
            req.ciphertext.len()
        ));
    }
    if req.key_id.is_empty() || req.key_id.len() > MAX_KEY_ID_BYTES {
        return invalid(format!(
            "the key id is {} bytes; it must be 1 to {MAX_KEY_ID_BYTES}",
            req.key_id.len()
        ));
    }
    let annotations: usize = req.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if annotations >= MAX_ANNOTATIONS_BYTES {
        return invalid(format!(
            "the annotations are {annotations} bytes; they must stay below {MAX_ANNOTATIONS_BYTES}"
        ));
    }
    let Some(id) = keys::parse_key_id(&req.key_id) else {
        return invalid(
            "the key id is not a kstash key id (kstash:<namespace>/<name>:<uid>:v<version>)".into(),
        );
    };
    if !key.owns(&id) {
        return invalid(format!(
            "the key id names key {}/{}, and this plugin serves {key}",
            id.namespace, id.name
        ));
    }
    let text = std::str::from_utf8(&req.ciphertext)
        .map_err(|_| KmsError::Invalid("the ciphertext is not a kstash ciphertext".into()))?;
    let parsed = keys::Ciphertext::parse(text).map_err(|e| {
        KmsError::Invalid(format!("the ciphertext is not a kstash ciphertext: {e}"))
    })?;
    if parsed.version != id.version {
        return invalid(format!(
            "the key id names version {} and the ciphertext was made by version {}: they come \
             from different envelopes",
            id.version, parsed.version
        ));
    }
    Ok(text)
}

#[tonic::async_trait]
impl<B: KmsBackend> pb::key_management_service_server::KeyManagementService for KmsService<B> {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let started = Instant::now();
        let answer = self
            .cache
            .current(started)
            .map(|key_id| pb::StatusResponse {
                version: "v2".into(),
                healthz: "ok".into(),
                key_id,
            })
            .map_err(|e| e.to_status());
        self.metrics
            .observe(Rpc::Status, &answer, started.elapsed());
        answer.map(Response::new)
    }

    async fn encrypt(
        &self,
        request: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let started = Instant::now();
        let answer = self.do_encrypt(request.into_inner()).await;
        self.metrics
            .observe(Rpc::Encrypt, &answer, started.elapsed());
        answer.map(Response::new)
    }

    async fn decrypt(
        &self,
        request: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let started = Instant::now();
        let answer = self.do_decrypt(request.into_inner()).await;
        self.metrics
            .observe(Rpc::Decrypt, &answer, started.elapsed());
        answer.map(Response::new)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use pb::key_management_service_server::KeyManagementService as _;

    /// The key the tests serve.
    pub fn test_key() -> KmsKey {
        KmsKey::parse("kube-system/kek").unwrap()
    }

    /// A key id of `test_key` at `version`.
    pub fn key_id(version: u32) -> String {
        keys::key_id("kube-system", "kek", &[7; keys::UID_BYTES], version)
    }

    /// A backend whose answers the test sets: a status, and an encryption
    /// that wraps the plaintext in a fake ciphertext of the current version.
    #[derive(Default)]
    pub struct FakeBackend {
        pub status: Mutex<Option<Result<String, KmsError>>>,
        /// Overrides the encryption's answer.
        pub encrypted: Mutex<Option<Result<Encrypted, KmsError>>>,
        pub decrypted: Mutex<Vec<(String, String)>>,
        pub version: Mutex<u32>,
    }

    impl FakeBackend {
        pub fn at(version: u32) -> Arc<FakeBackend> {
            let fake = FakeBackend::default();
            *fake.version.lock().unwrap() = version;
            *fake.status.lock().unwrap() = Some(Ok(key_id(version)));
            Arc::new(fake)
        }
    }

    /// A well-formed ciphertext of `version` (its body is not decryptable).
    pub fn ciphertext(version: u32) -> String {
        use base64::Engine;
        format!(
            "kstash:v{version}:{}",
            base64::engine::general_purpose::STANDARD.encode([1u8; 60])
        )
    }

    impl KmsBackend for FakeBackend {
        async fn status(&self) -> Result<String, KmsError> {
            self.status
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| Err(KmsError::Unavailable("no status set".into())))
        }

        async fn encrypt(&self, _plaintext: &[u8]) -> Result<Encrypted, KmsError> {
            if let Some(answer) = self.encrypted.lock().unwrap().clone() {
                return answer;
            }
            let version = *self.version.lock().unwrap();
            Ok(Encrypted {
                key_id: key_id(version),
                ciphertext: ciphertext(version).into_bytes(),
            })
        }

        async fn decrypt(
            &self,
            key_id: &str,
            ciphertext: &str,
        ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
            self.decrypted
                .lock()
                .unwrap()
                .push((key_id.into(), ciphertext.into()));
            Ok(Zeroizing::new(vec![0x5a; 32]))
        }
    }

    fn service(backend: Arc<FakeBackend>, interval: Duration) -> KmsService<FakeBackend> {
        KmsService::new(
            backend,
            test_key(),
            Arc::new(StatusCache::new(interval)),
            KmsMetrics::new(),
        )
    }

    async fn status_of(s: &KmsService<FakeBackend>) -> Result<pb::StatusResponse, Status> {
        s.status(Request::new(pb::StatusRequest {}))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn status_is_served_only_from_a_fresh_healthy_cache() {
        // Steps: empty cache → UNAVAILABLE; a fresh refresh → v2/ok/key
        // id; a refresh older than three intervals → UNAVAILABLE; a failed
        // refresh → UNAVAILABLE with its reason even though a key id was
        // known; a good refresh again → ok.
        let s = service(FakeBackend::at(1), Duration::from_millis(100));
        let err = status_of(&s).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("not reached kstash"), "{err:?}");

        s.cache.record(Ok(key_id(1)), Instant::now());
        let ok = status_of(&s).await.unwrap();
        assert_eq!((ok.version.as_str(), ok.healthz.as_str()), ("v2", "ok"));
        assert_eq!(ok.key_id, key_id(1));

        let long_ago = Instant::now()
            .checked_sub(Duration::from_millis(301))
            .unwrap();
        s.cache.record(Ok(key_id(1)), long_ago);
        let err = status_of(&s).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("too slowly"), "{err:?}");
        // Just inside three intervals it is still served.
        s.cache
            .record(Ok(key_id(1)), Instant::now() - Duration::from_millis(250));
        assert!(status_of(&s).await.is_ok());

        s.cache.record(
            Err(KmsError::Unavailable("kstash is sealed".into())),
            Instant::now(),
        );
        let err = status_of(&s).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("kstash is sealed"), "{err:?}");
        assert!(!s.cache.is_healthy());

        s.cache.record(Ok(key_id(2)), Instant::now());
        assert_eq!(status_of(&s).await.unwrap().key_id, key_id(2));
    }

    #[tokio::test]
    async fn the_refresher_follows_the_backend_and_an_encrypt_under_a_new_key_refreshes_at_once() {
        // Steps: a refresher with a long interval fills the cache; the
        // backend rotates; Status still reports the old key id (cache);
        // an Encrypt returns the new key id, which wakes the refresher, and
        // Status reports the new key id well before the interval; the
        // backend fails → Status UNAVAILABLE after the next refresh.
        let backend = FakeBackend::at(1);
        let s = service(backend.clone(), Duration::from_secs(30));
        let refresher = tokio::spawn(s.cache.clone().run_refresher(
            backend.clone(),
            test_key(),
            s.metrics.clone(),
        ));
        let wait_for = |want: Option<String>| {
            let s = s.clone();
            async move {
                for _ in 0..200 {
                    let now = status_of(&s).await.ok().map(|r| r.key_id);
                    if now == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("Status never became {want:?}");
            }
        };
        wait_for(Some(key_id(1))).await;
        *backend.version.lock().unwrap() = 2;
        *backend.status.lock().unwrap() = Some(Ok(key_id(2)));
        assert_eq!(status_of(&s).await.unwrap().key_id, key_id(1), "cached");
        let e = s
            .encrypt(Request::new(pb::EncryptRequest {
                plaintext: vec![1; 32],
                uid: "u1".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(e.key_id, key_id(2));
        wait_for(Some(key_id(2))).await;
        *backend.status.lock().unwrap() = Some(Err(KmsError::Unavailable("sealed".into())));
        s.cache.refresh_soon();
        wait_for(None).await;
        refresher.abort();
    }

    #[tokio::test]
    async fn encrypt_checks_its_input_and_its_reply() {
        // Steps: an empty and an oversized plaintext → INVALID_ARGUMENT;
        // a 32-byte seed → the backend's ciphertext and key id, no
        // annotations; a backend reply with an oversized ciphertext, an
        // empty or oversized key id, or another key's id → INTERNAL; a
        // backend refusal → its code.
        let backend = FakeBackend::at(3);
        let s = service(backend.clone(), Duration::from_secs(5));
        let encrypt = |plaintext: Vec<u8>| {
            let s = s.clone();
            async move {
                s.encrypt(Request::new(pb::EncryptRequest {
                    plaintext,
                    uid: "uid".into(),
                }))
                .await
                .map(Response::into_inner)
            }
        };
        for bad in [vec![], vec![1; MAX_PLAINTEXT_BYTES + 1]] {
            let err = encrypt(bad).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        }
        let ok = encrypt(vec![1; MAX_PLAINTEXT_BYTES]).await.unwrap();
        assert_eq!(ok.key_id, key_id(3));
        assert_eq!(ok.ciphertext, ciphertext(3).into_bytes());
        assert!(ok.annotations.is_empty());

        let replies = [
            (key_id(3), vec![b'x'; MAX_CIPHERTEXT_BYTES + 1]),
            (key_id(3), vec![]),
            (String::new(), ciphertext(3).into_bytes()),
            ("k".repeat(MAX_KEY_ID_BYTES + 1), ciphertext(3).into_bytes()),
            (
                keys::key_id("kube-system", "other", &[7; 16], 3),
                ciphertext(3).into_bytes(),
            ),
        ];
        for (key_id, ciphertext) in replies {
            *backend.encrypted.lock().unwrap() = Some(Ok(Encrypted { key_id, ciphertext }));
            let err = encrypt(vec![1; 32]).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
        }
        *backend.encrypted.lock().unwrap() = Some(Err(KmsError::Unavailable("sealed".into())));
        let err = encrypt(vec![1; 32]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), "sealed");
    }

    #[tokio::test]
    async fn decrypt_refuses_oversized_foreign_and_mismatched_envelopes() {
        // Steps: a good envelope reaches the backend (older versions too);
        // each of: an empty or 1 KiB + 1 ciphertext, an empty or 1 KiB + 1
        // key id, 32 KiB of annotations, a key id that is not kstash's, one
        // of another key or namespace, a ciphertext of another version than
        // the key id's, a ciphertext that is not kstash's → INVALID_ARGUMENT
        // and never reaches the backend.
        let backend = FakeBackend::at(2);
        let s = service(backend.clone(), Duration::from_secs(5));
        let good = pb::DecryptRequest {
            ciphertext: ciphertext(1).into_bytes(),
            uid: "uid".into(),
            key_id: key_id(1),
            annotations: Default::default(),
        };
        let decrypt = |req: pb::DecryptRequest| {
            let s = s.clone();
            async move { s.decrypt(Request::new(req)).await.map(Response::into_inner) }
        };
        assert_eq!(decrypt(good.clone()).await.unwrap().plaintext, [0x5a; 32]);
        assert_eq!(
            backend.decrypted.lock().unwrap().as_slice(),
            [(key_id(1), ciphertext(1))]
        );
        let big_annotations: HashMap<String, Vec<u8>> = [(
            "kms.kstash.io".to_string(),
            vec![0; MAX_ANNOTATIONS_BYTES - "kms.kstash.io".len()],
        )]
        .into();
        let bad = [
            pb::DecryptRequest {
                ciphertext: vec![],
                ..good.clone()
            },
            pb::DecryptRequest {
                ciphertext: vec![b'k'; MAX_CIPHERTEXT_BYTES + 1],
                ..good.clone()
            },
            pb::DecryptRequest {
                key_id: String::new(),
                ..good.clone()
            },
            pb::DecryptRequest {
                key_id: format!("{}{}", key_id(1), "0".repeat(MAX_KEY_ID_BYTES)),
                ..good.clone()
            },
            pb::DecryptRequest {
                annotations: big_annotations,
                ..good.clone()
            },
            pb::DecryptRequest {
                key_id: "vault:v1".into(),
                ..good.clone()
            },
            pb::DecryptRequest {
                key_id: keys::key_id("kube-system", "other", &[7; 16], 1),
                ..good.clone()
            },
            pb::DecryptRequest {
                key_id: keys::key_id("default", "kek", &[7; 16], 1),
                ..good.clone()
            },
            pb::DecryptRequest {
                key_id: key_id(2),
                ..good.clone()
            },
            pb::DecryptRequest {
                ciphertext: b"vault:v1:AAAA".to_vec(),
                ..good.clone()
            },
            pb::DecryptRequest {
                ciphertext: vec![0xff; 40],
                ..good.clone()
            },
        ];
        for req in bad {
            let err = decrypt(req.clone()).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{req:?}: {err:?}");
        }
        assert_eq!(
            backend.decrypted.lock().unwrap().len(),
            1,
            "none reached the backend"
        );
        // Exactly at the limits: accepted.
        let at_limits = pb::DecryptRequest {
            annotations: [("a.io".to_string(), vec![0; MAX_ANNOTATIONS_BYTES - 5])].into(),
            ..good.clone()
        };
        assert!(decrypt(at_limits).await.is_ok());
    }

    #[test]
    fn errors_map_to_the_codes_the_apiserver_reads() {
        assert_eq!(
            KmsError::Unavailable("x".into()).to_status().code(),
            tonic::Code::Unavailable
        );
        let s = KmsError::Invalid("bad".into()).to_status();
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::InvalidArgument, "bad")
        );
    }

    #[test]
    fn keys_are_namespace_slash_name() {
        let k = KmsKey::parse("kube-system/kube-kek").unwrap();
        assert_eq!(
            (k.namespace.as_str(), k.name.as_str()),
            ("kube-system", "kube-kek")
        );
        assert_eq!(k.to_string(), "kube-system/kube-kek");
        for bad in ["kube-kek", "/kek", "ns/", "ns/Kek", "ns/a/b", "NS!/kek"] {
            let err = KmsKey::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
