//! The cluster's signing keys: a JWKS document from a file or from the API
//! server's OIDC discovery, cached and refreshed.
//!
//! Invariants:
//! - A fetch that fails or yields nothing usable (unreachable, not 200, bad
//!   JSON, no usable key, more than [`MAX_KEYS`] keys, a body over
//!   [`MAX_DOCUMENT_BYTES`]) never replaces the last good key set.
//! - One fetch at a time (single flight), and no two fetch attempts less
//!   than [`MIN_FETCH_INTERVAL`] apart: a flood of tokens with made-up key
//!   ids costs the API server at most one fetch a second.
//! - Only asymmetric public keys are kept: RSA (2048 bits or more), P-256,
//!   P-384 and Ed25519.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio::time::Instant;

use super::http::ApiClient;
use super::jwt::Token;
use super::{Check, LoginError};

/// Most keys a key set may hold (a cluster has one or two; more during a
/// rotation).
pub const MAX_KEYS: usize = 64;

/// Largest JWKS or discovery document read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Shortest time between two fetch attempts of the key set, whatever asks
/// for it (a token with an unknown `kid`, a failed fetch, a refresh).
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(1);

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// The curve or key type of a usable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Shape {
    /// Whether `alg` signs with keys of this shape.
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            Shape::Rsa => alg.family() == AlgorithmFamily::Rsa,
            Shape::P256 => alg == Algorithm::ES256,
            Shape::P384 => alg == Algorithm::ES384,
            Shape::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// One usable public key.
struct Key {
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one: then only that algorithm.
    alg: Option<Algorithm>,
    shape: Shape,
    key: DecodingKey,
}

impl Key {
    /// A usable signing key from `jwk`, or `None` (an encryption key, a
    /// symmetric key, an unsupported curve, a short RSA modulus, …).
    fn from_jwk(jwk: &Jwk) -> Option<Key> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return None;
        }
        let shape = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n = base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    &rsa.n,
                )
                .ok()?;
                let significant = n.iter().skip_while(|b| **b == 0).count();
                (significant >= MIN_RSA_MODULUS_BYTES).then_some(Shape::Rsa)?
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Shape::P256,
                EllipticCurve::P384 => Shape::P384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
                EllipticCurve::Ed25519 => Shape::Ed25519,
                _ => return None,
            },
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => Some(Algorithm::try_from(a).ok()?),
        };
        if alg.is_some_and(|a| !shape.fits(a)) {
            return None;
        }
        Some(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            shape,
            key: DecodingKey::from_jwk(jwk).ok()?,
        })
    }

    fn fits(&self, alg: Algorithm) -> bool {
        self.shape.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Whether the token's signature verifies under this key.
    fn verifies(&self, token: &Token<'_>) -> bool {
        jsonwebtoken::crypto::verify(
            token.signature,
            token.signing_input.as_bytes(),
            &self.key,
            token.alg,
        )
        .unwrap_or(false)
    }
}

/// A cluster's usable public keys, and the issuer discovery reported.
pub(super) struct KeySet {
    keys: Vec<Key>,
    /// The `issuer` of the discovery document (`None` from a file).
    pub issuer: Option<String>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref()).collect();
        f.debug_struct("KeySet")
            .field("kids", &kids)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl KeySet {
    /// The usable keys of a JWKS document; an error says why there are
    /// none (or too many).
    pub fn parse(doc: &[u8]) -> Result<KeySet, String> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        if doc.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "the key set is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        let doc: Document = serde_json::from_slice(doc)
            .map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
        if doc.keys.len() > MAX_KEYS {
            return Err(format!(
                "the key set holds {} keys, more than {MAX_KEYS}",
                doc.keys.len()
            ));
        }
        let keys: Vec<Key> = doc
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter_map(|jwk| Key::from_jwk(&jwk))
            .collect();
        if keys.is_empty() {
            return Err(
                "the key set holds no usable signing key (RSA of 2048 bits or more, P-256, P-384 or Ed25519)"
                    .into(),
            );
        }
        Ok(KeySet { keys, issuer: None })
    }

    /// Whether a key has the key id `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Check the token's signature: by the key its `kid` names (none:
    /// [`Check::KeyId`]), or, without a `kid`, by any key that fits its
    /// algorithm. [`Check::Algorithm`] when no key fits the algorithm.
    pub fn verify(&self, token: &Token<'_>) -> Result<(), Check> {
        let candidates: Vec<&Key> = match &token.kid {
            Some(kid) => {
                let named: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Err(Check::KeyId);
                }
                named
            }
            None => self.keys.iter().collect(),
        };
        let fitting: Vec<&&Key> = candidates.iter().filter(|k| k.fits(token.alg)).collect();
        if fitting.is_empty() {
            return Err(Check::Algorithm);
        }
        if fitting.iter().any(|k| k.verifies(token)) {
            Ok(())
        } else {
            Err(Check::Signature)
        }
    }
}

/// Where the key set comes from.
#[derive(Debug)]
pub(super) enum Source {
    /// A JWKS file, read again when it changes.
    File(PathBuf),
    /// OIDC discovery on the API server.
    Discovery(Arc<ApiClient>),
}

/// What identifies a file's version: modification time and size.
type Stamp = (Option<SystemTime>, u64);

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok(), meta.len()))
}

/// The state of fetching (under the single-flight lock).
#[derive(Debug, Default)]
struct Fetching {
    /// When the last attempt started.
    last_attempt: Option<Instant>,
    /// The file's stamp at the last attempt (a file source only).
    last_stamp: Option<Stamp>,
    /// Why the last attempt failed, if it did.
    last_error: Option<String>,
}

/// The cached key set of one [`Source`].
#[derive(Debug)]
pub(super) struct KeyCache {
    source: Source,
    refresh: Duration,
    current: RwLock<Option<Arc<KeySet>>>,
    fetching: tokio::sync::Mutex<Fetching>,
    /// Counts every failed or unusable fetch.
    failures: Counter,
}

impl KeyCache {
    /// Keys from the JWKS file `path`, read now (an unreadable or unusable
    /// file is refused) and again whenever it changes.
    pub fn file(path: PathBuf, refresh: Duration, failures: Counter) -> Result<KeyCache, String> {
        let fetching = Fetching {
            last_attempt: Some(Instant::now()),
            last_stamp: stamp(&path),
            last_error: None,
        };
        let keys = load_file(&path)?;
        Ok(KeyCache {
            source: Source::File(path),
            refresh,
            current: RwLock::new(Some(Arc::new(keys))),
            fetching: tokio::sync::Mutex::new(fetching),
            failures,
        })
    }

    /// Keys from OIDC discovery on the API server, fetched at first use.
    pub fn discovery(client: Arc<ApiClient>, refresh: Duration, failures: Counter) -> KeyCache {
        KeyCache {
            source: Source::Discovery(client),
            refresh,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(Fetching::default()),
            failures,
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The key set to check a token against: the cached one, read again
    /// first when its file changed, or fetched again when the last attempt
    /// is older than the refresh interval (unless another task is
    /// fetching: then the cached one).
    pub async fn keys(&self) -> Result<Arc<KeySet>, LoginError> {
        if let Some(keys) = self.current() {
            let Ok(fetching) = self.fetching.try_lock() else {
                return Ok(keys);
            };
            let changed =
                matches!(&self.source, Source::File(path) if stamp(path) != fetching.last_stamp);
            let old = fetching
                .last_attempt
                .is_none_or(|t| t.elapsed() >= self.refresh);
            if !changed && !old {
                return Ok(keys);
            }
            // A failure is logged and keeps the cached set.
            return self.fetch(fetching, changed).await;
        }
        let fetching = self.fetching.lock().await;
        if let Some(keys) = self.current() {
            // Another task fetched while this one waited.
            return Ok(keys);
        }
        self.fetch(fetching, false).await
    }

    /// Fetch the key set again for a token whose `kid` it lacks (at most
    /// once per [`MIN_FETCH_INTERVAL`]; otherwise the cached set).
    pub async fn refetch(&self) -> Result<Arc<KeySet>, LoginError> {
        let fetching = self.fetching.lock().await;
        self.fetch(fetching, false).await
    }

    /// One fetch attempt, holding the single-flight lock; skipped when the
    /// last one is less than [`MIN_FETCH_INTERVAL`] ago, unless `changed`
    /// (the file changed since: reading a local file costs nobody else).
    async fn fetch(
        &self,
        mut fetching: tokio::sync::MutexGuard<'_, Fetching>,
        changed: bool,
    ) -> Result<Arc<KeySet>, LoginError> {
        let recent = fetching
            .last_attempt
            .is_some_and(|t| t.elapsed() < MIN_FETCH_INTERVAL);
        if changed || !recent {
            fetching.last_attempt = Some(Instant::now());
            let result = match &self.source {
                Source::File(path) => {
                    fetching.last_stamp = stamp(path);
                    load_file(path)
                }
                Source::Discovery(client) => discover(client).await,
            };
            match result {
                Ok(keys) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(keys));
                    fetching.last_error = None;
                }
                Err(message) => {
                    let consequence = if self.current().is_some() {
                        "the keys read before stay in use"
                    } else {
                        "ServiceAccount logins fail until they can be read"
                    };
                    tracing::warn!("{message}; {consequence}");
                    self.failures.inc();
                    fetching.last_error = Some(message);
                }
            }
        }
        match (self.current(), &fetching.last_error) {
            (Some(keys), _) => Ok(keys),
            (None, Some(message)) => Err(LoginError::Unavailable(message.clone())),
            (None, None) => Err(LoginError::Unavailable(
                "the cluster's signing keys are being fetched; try again".into(),
            )),
        }
    }
}

/// The key set in the JWKS file `path`.
fn load_file(path: &std::path::Path) -> Result<KeySet, String> {
    let what = || {
        format!(
            "cannot read the cluster's signing keys from {}",
            path.display()
        )
    };
    let mut doc = Vec::new();
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", what()))?;
    use std::io::Read as _;
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut doc)
        .map_err(|e| format!("{}: {e}", what()))?;
    KeySet::parse(&doc).map_err(|e| format!("{}: {e}", what()))
}

/// The OIDC discovery document's fields kstash reads.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Fetch the discovery document, then the key set it names.
///
/// The key set is fetched from `jwks_uri` when that is on the API server's
/// own origin, and otherwise from `{api}/openid/v1/jwks`: the API server
/// serves the same keys there, and `jwks_uri` usually names the issuer's
/// public URL, which kstash may not reach and whose certificate the
/// cluster CA does not sign (kstash's token never leaves the API server).
async fn discover(client: &ApiClient) -> Result<KeySet, String> {
    let fetch = |url: String| async move {
        let fail =
            |why: String| format!("cannot fetch the cluster's signing keys from {url}: {why}");
        let answer = client.get(&url, MAX_DOCUMENT_BYTES).await.map_err(fail)?;
        if answer.status != reqwest::StatusCode::OK {
            return Err(fail(format!("HTTP {}", answer.status)));
        }
        Ok::<_, String>((url, answer.body))
    };
    let (url, body) = fetch(client.url("/.well-known/openid-configuration")).await?;
    let doc: Discovery = serde_json::from_slice(&body).map_err(|e| {
        format!("cannot fetch the cluster's signing keys from {url}: not an OIDC discovery document: {e}")
    })?;
    if doc.issuer.is_empty() {
        return Err(format!(
            "cannot fetch the cluster's signing keys from {url}: the discovery document names no issuer"
        ));
    }
    let jwks = if client.same_origin(&doc.jwks_uri) {
        doc.jwks_uri
    } else {
        client.url("/openid/v1/jwks")
    };
    let (url, body) = fetch(jwks).await?;
    let mut keys = KeySet::parse(&body)
        .map_err(|e| format!("cannot fetch the cluster's signing keys from {url}: {e}"))?;
    keys.issuer = Some(doc.issuer);
    Ok(keys)
}
