//! A pretend Kubernetes for the ServiceAccount login tests: the cluster's
//! signing keys, tokens shaped like the projected ServiceAccount tokens a
//! kube-apiserver issues, and a fake API server over HTTPS.
//!
//! - [`SigningKey`]: an RSA (RS256, 2048 bits) or EC (ES256, P-256) key pair
//!   made in the test; its public JWK and PEM; signs any header and claims.
//! - [`Jwks`]: the JWKS document of some keys (the API server's
//!   `/openid/v1/jwks`, or a `kubernetes_jwks_file`).
//! - [`SaToken`]: a builder for projected ServiceAccount tokens as
//!   Kubernetes 1.30+ issues them (the `kubernetes.io` claim block with
//!   namespace, serviceaccount, pod and node), and for legacy Secret-based
//!   tokens, with knobs that break exactly one thing at a time.
//! - [`FakeKubeApi`]: 127.0.0.1 over HTTPS with its own CA, answering OIDC
//!   discovery, JWKS and TokenReview with the Kubernetes JSON shapes
//!   (including the `Status` object of a refusal), with switches to take it
//!   down, forbid TokenReview, delete pods, rotate keys, and counters per
//!   route.
//!
//! Invariants: nothing here talks to anything but loopback; a
//! [`FakeKubeApi`] stops its server and every connection when dropped; every
//! key is made fresh in the process (no key material is checked in).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The issuer of a kind or kubeadm cluster (`--service-account-issuer`);
/// every [`SaToken`] and [`FakeKubeApi`] starts with it.
pub const KUBE_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The issuer of legacy (Secret-based, non-expiring) ServiceAccount tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// The audience an [`SaToken`] carries unless told otherwise (kstash's
/// default role audience).
pub const DEFAULT_AUDIENCE: &str = "kstash";

/// Lifetime of a projected token when the pod spec gives none
/// (`expirationSeconds` defaults to one hour).
pub const PROJECTED_TTL_SECS: i64 = 3600;

/// The TokenReview result of a token whose bound pod or ServiceAccount is
/// gone, word for word as kube-apiserver writes it.
pub const INVALIDATED: &str = "[invalid bearer token, service account token has been invalidated]";

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A random UUID (version 4), as Kubernetes gives objects and token ids.
pub fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------------------
// Keys

/// One signing key of the pretend cluster, with its key id.
///
/// Cheap to clone (the private key is shared); [`SigningKey::with_kid`] gives
/// the same key pair under another key id.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK without `kid` (added on the way out).
    jwk: Map<String, Value>,
    public_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh 2048-bit RSA key that signs RS256.
    pub fn rsa(kid: &str) -> SigningKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;

        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA keygen");
        let der = private.to_pkcs1_der().expect("RSA key to PKCS#1");
        let public = private.to_public_key();
        let jwk = json!({
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": b64(&public.n_bytes()),
            "e": b64(&public.e_bytes()),
        });
        let pem = public.to_public_key_pem(LineEnding::LF);
        let encoding = EncodingKey::from_rsa_der(der.as_bytes());
        SigningKey::assemble(kid, Algorithm::RS256, encoding, jwk, pem.expect("RSA PEM"))
    }

    /// A fresh P-256 key that signs ES256.
    pub fn ec(kid: &str) -> SigningKey {
        use p256::elliptic_curve::Generate;
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

        let secret = p256::SecretKey::try_generate_from_rng(&mut getrandom::SysRng)
            .expect("the system RNG works");
        let der = secret.to_pkcs8_der().expect("EC key to PKCS#8");
        let public = secret.public_key();
        // SEC1 uncompressed: 0x04 | x (32 bytes) | y (32 bytes).
        let point = public.to_sec1_bytes();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC",
            "alg": "ES256",
            "use": "sig",
            "crv": "P-256",
            "x": b64(&point[1..33]),
            "y": b64(&point[33..65]),
        });
        let pem = public.to_public_key_pem(LineEnding::LF);
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        SigningKey::assemble(kid, Algorithm::ES256, encoding, jwk, pem.expect("EC PEM"))
    }

    fn assemble(
        kid: &str,
        alg: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
        public_pem: String,
    ) -> SigningKey {
        SigningKey {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk: into_object(jwk),
            public_pem,
        }
    }

    /// The same key pair under key id `kid`.
    pub fn with_kid(&self, kid: &str) -> SigningKey {
        SigningKey {
            kid: kid.to_string(),
            ..self.clone()
        }
    }

    /// The key id (`kid`) of the JWK and of the tokens it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm it signs with (RS256 or ES256).
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The algorithm's JOSE name (`"RS256"`, `"ES256"`).
    pub fn alg_name(&self) -> &'static str {
        match self.alg {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            other => unreachable!("a SigningKey never signs {other:?}"),
        }
    }

    /// The public key as a JWK: `kty`, `kid`, `alg`, `use: "sig"` and
    /// `n`/`e` (RSA) or `crv`/`x`/`y` (EC).
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.jwk.clone();
        jwk.insert("kid".into(), Value::String(self.kid.clone()));
        Value::Object(jwk)
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`): also the
    /// "secret" of the HS256 key-confusion attack.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// A key that verifies this key's signatures (built from the JWK).
    pub fn decoding_key(&self) -> DecodingKey {
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(self.public_jwk()).expect("our JWK parses");
        DecodingKey::from_jwk(&jwk).expect("our JWK is a usable key")
    }

    /// Sign `claims` under exactly `header` (nothing added or checked: the
    /// header may name another `alg` or `kid` than this key's), with this
    /// key's algorithm. Returns the compact JWS.
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg)
            .expect("signing with a key we made");
        format!("{message}.{signature}")
    }
}

fn into_object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => unreachable!("not an object: {other}"),
    }
}

/// JWKS documents (`{"keys": [...]}`).
pub struct Jwks;

impl Jwks {
    /// The JWKS of `keys`, in that order.
    pub fn of(keys: &[&SigningKey]) -> Value {
        json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
    }

    /// Write the JWKS of `keys` to `dir/jwks.json` (a `kubernetes_jwks_file`)
    /// and return its path; overwrites, so a test can rotate the file.
    pub fn write(dir: &Path, keys: &[&SigningKey]) -> PathBuf {
        let path = dir.join("jwks.json");
        std::fs::write(&path, Jwks::of(keys).to_string()).expect("writing the JWKS file");
        path
    }
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Clone, Debug)]
enum Kid {
    /// The signing key's kid.
    FromKey,
    Set(String),
    Absent,
}

/// A ServiceAccount token to be signed, shaped like the ones kube-apiserver
/// issues for a projected volume (Kubernetes 1.30+):
///
/// ```json
/// {"aud": ["kstash"], "exp": now+3600, "iat": now, "nbf": now,
///  "iss": "https://kubernetes.default.svc.cluster.local", "jti": "<uuid>",
///  "kubernetes.io": {"namespace": NS,
///     "node": {"name": "kind-worker", "uid": "<uuid>"},
///     "pod": {"name": "NAME-6d9f7c8b5-x2k4p", "uid": "<uuid>"},
///     "serviceaccount": {"name": NAME, "uid": "<uuid>"}},
///  "sub": "system:serviceaccount:NS:NAME"}
/// ```
///
/// signed with header `{"alg", "kid"}` (no `typ`, like Kubernetes). Times
/// are relative to the `now` given to [`SaToken::new`] (seconds). Every knob
/// consumes and returns the builder; [`SaToken::set`]/[`SaToken::remove`]
/// reach any claim by JSON pointer (`"/kubernetes.io/namespace"`).
#[derive(Clone, Debug)]
pub struct SaToken {
    now: i64,
    kid: Kid,
    /// Extra header members, applied last.
    header: Map<String, Value>,
    claims: Value,
}

impl SaToken {
    /// A projected token of ServiceAccount `namespace/name`, bound to a pod,
    /// audience [`DEFAULT_AUDIENCE`], issued at `now` (Unix seconds) for
    /// [`PROJECTED_TTL_SECS`].
    pub fn new(namespace: &str, name: &str, now: u64) -> SaToken {
        let now = i64::try_from(now).expect("now fits in i64");
        SaToken {
            now,
            kid: Kid::FromKey,
            header: Map::new(),
            claims: json!({
                "aud": [DEFAULT_AUDIENCE],
                "exp": now + PROJECTED_TTL_SECS,
                "iat": now,
                "iss": KUBE_ISSUER,
                "jti": uuid(),
                "kubernetes.io": {
                    "namespace": namespace,
                    "node": {"name": "kind-worker", "uid": uuid()},
                    "pod": {"name": format!("{name}-6d9f7c8b5-x2k4p"), "uid": uuid()},
                    "serviceaccount": {"name": name, "uid": uuid()},
                },
                "nbf": now,
                "sub": format!("system:serviceaccount:{namespace}:{name}"),
            }),
        }
    }

    /// A legacy Secret-based token of `namespace/name`: issuer
    /// [`LEGACY_ISSUER`], no `aud`, `exp`, `iat`, `nbf` or `jti`, and the
    /// flat `kubernetes.io/serviceaccount/...` claims. kstash must refuse it;
    /// the fake API server still authenticates it, as a real one does.
    pub fn legacy(namespace: &str, name: &str) -> SaToken {
        SaToken {
            now: i64::try_from(unix_now()).expect("now fits in i64"),
            kid: Kid::FromKey,
            header: Map::new(),
            claims: json!({
                "iss": LEGACY_ISSUER,
                "kubernetes.io/serviceaccount/namespace": namespace,
                "kubernetes.io/serviceaccount/secret.name": format!("{name}-token-7xk2p"),
                "kubernetes.io/serviceaccount/service-account.name": name,
                "kubernetes.io/serviceaccount/service-account.uid": uuid(),
                "sub": format!("system:serviceaccount:{namespace}:{name}"),
            }),
        }
    }

    /// `iss`.
    pub fn issuer(self, issuer: &str) -> Self {
        self.set("/iss", json!(issuer))
    }

    /// `aud` as an array of these audiences.
    pub fn audiences(self, audiences: &[&str]) -> Self {
        self.set("/aud", json!(audiences))
    }

    /// `aud` as a single string (RFC 7519 allows it; Kubernetes never
    /// issues it).
    pub fn audience_string(self, audience: &str) -> Self {
        self.set("/aud", json!(audience))
    }

    /// Bind to pod `name` with `uid`.
    pub fn pod(self, name: &str, uid: &str) -> Self {
        self.set("/kubernetes.io/pod", json!({"name": name, "uid": uid}))
    }

    /// Not bound to a pod (`kubectl create token`): no `pod` nor `node`.
    pub fn no_pod(self) -> Self {
        self.remove("/kubernetes.io/pod")
            .remove("/kubernetes.io/node")
    }

    /// The ServiceAccount's uid.
    pub fn sa_uid_is(self, uid: &str) -> Self {
        self.set("/kubernetes.io/serviceaccount/uid", json!(uid))
    }

    /// `exp` = now + `secs` (negative: already expired).
    pub fn expires_in(self, secs: i64) -> Self {
        let at = self.now + secs;
        self.set("/exp", json!(at))
    }

    /// `nbf` = now + `secs` (positive: not yet valid).
    pub fn not_before_in(self, secs: i64) -> Self {
        let at = self.now + secs;
        self.set("/nbf", json!(at))
    }

    /// `iat` = now + `secs` (positive: issued in the future).
    pub fn issued_in(self, secs: i64) -> Self {
        let at = self.now + secs;
        self.set("/iat", json!(at))
    }

    /// The shape of a token whose expiry kube-apiserver extended
    /// (`--service-account-extend-token-expiration`, the default, for the
    /// `kube-api-access` volume): `exp` one year on, and
    /// `kubernetes.io.warnafter` at now + 3607 s.
    pub fn extended_expiry(self) -> Self {
        let (exp, warn) = (self.now + 365 * 86_400, self.now + 3607);
        self.set("/exp", json!(exp))
            .set("/kubernetes.io/warnafter", json!(warn))
    }

    /// Header `kid` = `kid`, whatever key signs (also for
    /// [`SaToken::unsigned_alg_none`] and [`SaToken::sign_hs256`]).
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Kid::Set(kid.to_string());
        self
    }

    /// No `kid` in the header.
    pub fn no_kid(mut self) -> Self {
        self.kid = Kid::Absent;
        self
    }

    /// Set header member `name` (e.g. `"typ"`, `"jku"`, or `"alg"` to lie
    /// about the algorithm); applied after `alg` and `kid`.
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.to_string(), value);
        self
    }

    /// Set the claim at JSON pointer `pointer` (RFC 6901: `/` between
    /// names, `~1` for a `/` inside a name), making objects on the way.
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        let (parent, last) = split_pointer(pointer);
        let mut at = &mut self.claims;
        for name in parent {
            at = at
                .as_object_mut()
                .unwrap_or_else(|| panic!("{pointer}: not inside an object"))
                .entry(name)
                .or_insert_with(|| json!({}));
        }
        at.as_object_mut()
            .unwrap_or_else(|| panic!("{pointer}: not inside an object"))
            .insert(last, value);
        self
    }

    /// Remove the claim at JSON pointer `pointer` (no-op when absent).
    pub fn remove(mut self, pointer: &str) -> Self {
        let (parent, last) = split_pointer(pointer);
        let mut at = Some(&mut self.claims);
        for name in parent {
            at = at.and_then(|v| v.get_mut(&name));
        }
        if let Some(Value::Object(m)) = at {
            m.remove(&last);
        }
        self
    }

    /// The claims as they will be signed.
    pub fn claims(&self) -> &Value {
        &self.claims
    }

    /// The `now` the times are relative to.
    pub fn now(&self) -> u64 {
        u64::try_from(self.now).expect("now is after 1970")
    }

    /// `jti`, if any.
    pub fn jti(&self) -> Option<&str> {
        self.claims["jti"].as_str()
    }

    /// The bound pod's name, if any.
    pub fn pod_name(&self) -> Option<&str> {
        self.claims["kubernetes.io"]["pod"]["name"].as_str()
    }

    /// The bound pod's uid, if any.
    pub fn pod_uid(&self) -> Option<&str> {
        self.claims["kubernetes.io"]["pod"]["uid"].as_str()
    }

    /// The ServiceAccount's uid, if any.
    pub fn sa_uid(&self) -> Option<&str> {
        self.claims["kubernetes.io"]["serviceaccount"]["uid"].as_str()
    }

    /// `exp` in Unix seconds, if any.
    pub fn exp(&self) -> Option<i64> {
        self.claims["exp"].as_i64()
    }

    fn header_for(&self, alg: &str, key_kid: Option<&str>) -> Value {
        let mut h = Map::new();
        h.insert("alg".into(), json!(alg));
        let kid = match &self.kid {
            Kid::FromKey => key_kid.map(str::to_string),
            Kid::Set(k) => Some(k.clone()),
            Kid::Absent => None,
        };
        if let Some(kid) = kid {
            h.insert("kid".into(), json!(kid));
        }
        for (k, v) in &self.header {
            h.insert(k.clone(), v.clone());
        }
        Value::Object(h)
    }

    /// Signed with `key` (header `alg` = the key's, `kid` = the key's unless
    /// set otherwise).
    pub fn sign(&self, key: &SigningKey) -> String {
        key.sign_raw(
            &self.header_for(key.alg_name(), Some(key.kid())),
            &self.claims,
        )
    }

    /// Header `alg: "none"` and an empty signature (`h.p.`); `kid` only if
    /// set with [`SaToken::kid`].
    pub fn unsigned_alg_none(&self) -> String {
        let header = self.header_for("none", None);
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(self.claims.to_string().as_bytes())
        )
    }

    /// HMAC-SHA256 with `secret` under header `alg: "HS256"` (`kid` only if
    /// set): with `key.public_pem().as_bytes()` and `.kid(key.kid())` this is
    /// the classic RSA/HMAC key-confusion attack.
    pub fn sign_hs256(&self, secret: &[u8]) -> String {
        let header = self.header_for("HS256", None);
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(self.claims.to_string().as_bytes())
        );
        let key = EncodingKey::from_secret(secret).expect("an HMAC key");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
            .expect("HMAC signing");
        format!("{message}.{signature}")
    }
}

/// `"/a/b~1c"` → (`["a"]`, `"b/c"`).
fn split_pointer(pointer: &str) -> (Vec<String>, String) {
    assert!(
        pointer.starts_with('/'),
        "{pointer}: a JSON pointer starts with /"
    );
    let mut names: Vec<String> = pointer[1..]
        .split('/')
        .map(|n| n.replace("~1", "/").replace("~0", "~"))
        .collect();
    let last = names.pop().expect("split gives at least one name");
    (names, last)
}

// ---------------------------------------------------------------------------
// The fake API server

/// The routes of [`FakeKubeApi`], for [`FakeKubeApi::hits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /.well-known/openid-configuration`
    Discovery,
    /// `GET /openid/v1/jwks`
    Jwks,
    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`
    TokenReview,
    /// Anything else (answered 404 with a `Status`).
    Other,
}

impl Route {
    const ALL: [Route; 4] = [
        Route::Discovery,
        Route::Jwks,
        Route::TokenReview,
        Route::Other,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// The TokenReview path.
pub const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// The JWKS path.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// The OIDC discovery path.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The user kstash runs as, named in the 403 of a forbidden TokenReview.
const KSTASH_USER: &str = "system:serviceaccount:kstash:kstash";

struct Inner {
    base_url: String,
    issuer: String,
    /// `None`: `<base>/openid/v1/jwks`.
    jwks_uri: Option<String>,
    keys: Vec<SigningKey>,
    reviewer_token: String,
    forbid_review: bool,
    down: bool,
    require_bearer: bool,
    /// `--api-audiences`; empty: the issuer.
    api_audiences: Vec<String>,
    leeway_secs: u64,
    /// `None`: the system clock.
    now: Option<u64>,
    delay: Duration,
    deleted_pods: BTreeSet<String>,
    deleted_service_accounts: BTreeSet<(String, String)>,
    revoked: BTreeSet<String>,
    reviews: Vec<Value>,
}

struct Shared {
    inner: Mutex<Inner>,
    hits: [AtomicU64; Route::ALL.len()],
    /// Close every connection (new and open) instead of answering.
    closing: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fake kube-apiserver on `https://127.0.0.1:PORT` with its own CA.
///
/// Serves, with the Kubernetes JSON shapes:
/// - `GET /.well-known/openid-configuration`: `issuer`, `jwks_uri`
///   (`<base>/openid/v1/jwks`), `response_types_supported`,
///   `subject_types_supported`, `id_token_signing_alg_values_supported`;
/// - `GET /openid/v1/jwks`: the current keys (`application/jwk-set+json`,
///   as kube-apiserver sends it), swappable with [`FakeKubeApi::set_keys`];
/// - `POST /apis/authentication.k8s.io/v1/tokenreviews`: a TokenReview
///   object back (201 Created), with `spec` echoed (the token too, as Kubernetes does) and
///   `status` decided by verifying the token against the current keys,
///   issuer, requested `spec.audiences` (default: the API audiences, i.e.
///   the issuer), time (60 s leeway, like Kubernetes) and the deleted
///   pods/ServiceAccounts and revoked tokens. Like Kubernetes, it ignores
///   `kid` (tries every key), authenticates legacy tokens (audience
///   agnostic) and, on failure, omits `authenticated` and sends `user: {}`
///   with `error`. Needs `Authorization: Bearer <reviewer token>` (401
///   `Status` otherwise), 403 `Status` when forbidden, 415 without a JSON
///   content type, 400 for a body that is no TokenReview.
///
/// Every route counts its requests ([`FakeKubeApi::hits`]) before anything
/// else, refused ones included; [`FakeKubeApi::set_down`] answers 503 on
/// every route, [`FakeKubeApi::close_connections`] closes connections
/// instead (no request is counted then). Dropping it stops the server and
/// all its connections.
pub struct FakeKubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    ca_pem: String,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubeApi {
    /// Start serving `keys` with issuer [`KUBE_ISSUER`] on a free loopback
    /// port (needs a Tokio runtime).
    pub async fn start(keys: &[&SigningKey]) -> FakeKubeApi {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("kube-api-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("a temp dir for the fake API server");
        let files = kstash::raft::tls::make_cluster_certs_with(
            &dir.path().join("tls"),
            &["127.0.0.1".to_string()],
            &["localhost".to_string()],
        )
        .expect("certificates for the fake API server");
        let ca_pem = std::fs::read_to_string(&files.ca_cert).expect("reading the CA");
        let (_, cert, key) = &files.nodes[0];
        let tls = server_tls(cert, key);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding loopback");
        let addr = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                base_url: format!("https://127.0.0.1:{}", addr.port()),
                issuer: KUBE_ISSUER.to_string(),
                jwks_uri: None,
                keys: keys.iter().map(|k| (*k).clone()).collect(),
                reviewer_token: format!("reviewer-{}", hex::encode(rand::random::<[u8; 16]>())),
                forbid_review: false,
                down: false,
                require_bearer: false,
                api_audiences: Vec::new(),
                leeway_secs: 60,
                now: None,
                delay: Duration::ZERO,
                deleted_pods: BTreeSet::new(),
                deleted_service_accounts: BTreeSet::new(),
                revoked: BTreeSet::new(),
                reviews: Vec::new(),
            }),
            hits: Default::default(),
            closing: AtomicBool::new(false),
        });
        let app = Router::new()
            .route(DISCOVERY_PATH, get(discovery))
            .route(JWKS_PATH, get(jwks))
            .route(TOKEN_REVIEW_PATH, post(token_review))
            .fallback(not_found)
            .with_state(shared.clone());
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
            axum_server::tls_rustls::RustlsConfig::from_config(tls),
        )
        .handshake_timeout(Duration::from_secs(5))
        .acceptor(SwitchAcceptor(shared.clone()));
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp(listener)
            .expect("serving the bound listener")
            .acceptor(acceptor)
            .handle(handle.clone());
        let task = tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        FakeKubeApi {
            shared,
            addr,
            _dir: dir,
            ca_file: files.ca_cert.clone(),
            ca_pem,
            handle,
            task,
        }
    }

    /// `https://127.0.0.1:PORT` (the `kubernetes_api` setting).
    pub fn base_url(&self) -> String {
        self.shared.lock().base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The issuer it reports and checks.
    pub fn issuer(&self) -> String {
        self.shared.lock().issuer.clone()
    }

    /// Report and check `issuer` from now on.
    pub fn set_issuer(&self, issuer: &str) {
        self.shared.lock().issuer = issuer.to_string();
    }

    /// Announce `uri` as `jwks_uri` in discovery (`None`: its own JWKS).
    pub fn set_jwks_uri(&self, uri: Option<&str>) {
        self.shared.lock().jwks_uri = uri.map(str::to_string);
    }

    /// Serve and verify with `keys` from now on (key rotation).
    pub fn set_keys(&self, keys: &[&SigningKey]) {
        self.shared.lock().keys = keys.iter().map(|k| (*k).clone()).collect();
    }

    /// The JWKS it serves now.
    pub fn jwks(&self) -> Value {
        let inner = self.shared.lock();
        Jwks::of(&inner.keys.iter().collect::<Vec<_>>())
    }

    /// The bearer token TokenReview (and, with
    /// [`FakeKubeApi::require_bearer`], discovery and JWKS) accept: kstash's
    /// own ServiceAccount token. Random per server.
    pub fn reviewer_token(&self) -> String {
        self.shared.lock().reviewer_token.clone()
    }

    /// Accept `token` as the reviewer's bearer token from now on.
    pub fn set_reviewer_token(&self, token: &str) {
        self.shared.lock().reviewer_token = token.to_string();
    }

    /// Write the reviewer token to `dir/token` with mode 0600 (a
    /// `kubernetes_token_file`); overwrites, so a test can rotate it.
    pub fn write_reviewer_token(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("token");
        std::fs::write(&path, self.reviewer_token()).expect("writing the token file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 0600");
        path
    }

    /// Answer TokenReview with 403 Forbidden, as when kstash's
    /// ServiceAccount lacks `system:auth-delegator`.
    pub fn forbid_token_review(&self, forbid: bool) {
        self.shared.lock().forbid_review = forbid;
    }

    /// Discovery and JWKS need the reviewer's bearer token too (clusters
    /// without anonymous access to them).
    pub fn require_bearer(&self, required: bool) {
        self.shared.lock().require_bearer = required;
    }

    /// Answer 503 (a `Status`, reason `ServiceUnavailable`) on every route.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// Close every connection instead of answering: new ones right after
    /// the TCP accept, open ones at their next read or write.
    pub fn close_connections(&self, close: bool) {
        self.shared.closing.store(close, Ordering::SeqCst);
    }

    /// Wait this long before answering any request (for timeout tests;
    /// dropping the server ends the wait).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// The audiences a TokenReview without `spec.audiences` checks
    /// (kube-apiserver's `--api-audiences`; default: the issuer).
    pub fn set_api_audiences(&self, audiences: &[&str]) {
        self.shared.lock().api_audiences = audiences.iter().map(|a| a.to_string()).collect();
    }

    /// TokenReview's clock: `Some(unix secs)` or `None` for the system
    /// clock.
    pub fn set_now(&self, now: Option<u64>) {
        self.shared.lock().now = now;
    }

    /// TokenReview's leeway on `exp`/`nbf` (Kubernetes: 60 s).
    pub fn set_leeway(&self, secs: u64) {
        self.shared.lock().leeway_secs = secs;
    }

    /// Delete pod `name` (any namespace): TokenReview refuses the tokens
    /// bound to it with [`INVALIDATED`].
    pub fn delete_pod(&self, name: &str) {
        self.shared.lock().deleted_pods.insert(name.to_string());
    }

    /// Delete ServiceAccount `namespace/name`: TokenReview refuses its
    /// tokens.
    pub fn delete_service_account(&self, namespace: &str, name: &str) {
        self.shared
            .lock()
            .deleted_service_accounts
            .insert((namespace.to_string(), name.to_string()));
    }

    /// TokenReview refuses exactly this token with [`INVALIDATED`].
    pub fn revoke(&self, token: &str) {
        self.shared.lock().revoked.insert(token.to_string());
    }

    /// Requests that reached `route` so far (refused ones included).
    pub fn hits(&self, route: Route) -> u64 {
        self.shared.hits[route.index()].load(Ordering::SeqCst)
    }

    /// Set every counter back to 0.
    pub fn reset_hits(&self) {
        for h in &self.shared.hits {
            h.store(0, Ordering::SeqCst);
        }
    }

    /// Every TokenReview body received, in order, as sent (token included:
    /// test data only).
    pub fn reviews(&self) -> Vec<Value> {
        self.shared.lock().reviews.clone()
    }

    /// The CA certificate (PEM) its server certificate chains to; the
    /// certificate names `127.0.0.1` and `localhost`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA file it made (lives as long as the server): a
    /// `kubernetes_ca_cert`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Copy the CA to `dir/kube-ca.pem` and return the path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kube-ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("writing the CA file");
        path
    }

    /// An HTTPS client that trusts this server's CA and nothing else.
    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("our CA parses"),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTPS client")
    }

    /// `https://127.0.0.1:PORT` with nothing listening (a port bound and
    /// released just now).
    pub fn unreachable_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding loopback");
        let port = l.local_addr().expect("a bound address").port();
        drop(l);
        format!("https://127.0.0.1:{port}")
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.handle.shutdown();
        self.task.abort();
    }
}

fn server_tls(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(
        std::fs::File::open(cert).expect("opening the certificate"),
    ))
    .collect::<Result<Vec<_>, _>>()
    .expect("reading the certificate");
    let key = rustls_pemfile::private_key(&mut io::BufReader::new(
        std::fs::File::open(key).expect("opening the key"),
    ))
    .expect("reading the key")
    .expect("a private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a TLS identity");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(tls)
}

// --- connections that can be cut

/// Wraps each accepted TCP stream so [`FakeKubeApi::close_connections`]
/// can cut it; refuses new ones while closing.
#[derive(Clone)]
struct SwitchAcceptor(Arc<Shared>);

impl<S> axum_server::accept::Accept<TcpStream, S> for SwitchAcceptor {
    type Stream = Switched;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Switched, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(if self.0.closing.load(Ordering::SeqCst) {
            Err(cut())
        } else {
            Ok((
                Switched {
                    inner: stream,
                    shared: self.0.clone(),
                },
                service,
            ))
        })
    }
}

fn cut() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "the fake API server closes connections",
    )
}

struct Switched {
    inner: TcpStream,
    shared: Arc<Shared>,
}

impl Switched {
    fn cut(&self) -> bool {
        self.shared.closing.load(Ordering::SeqCst)
    }
}

impl AsyncRead for Switched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.cut() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Switched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cut() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// --- handlers

/// A Kubernetes `Status` object (how the API server refuses).
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    status_with(code, reason, message, None)
}

fn status_with(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(code: StatusCode, content_type: &'static str, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response()
}

/// What every route does first: count, wait, answer 503 when down, and
/// check the bearer token (always for TokenReview; for discovery and JWKS
/// when [`FakeKubeApi::require_bearer`]).
async fn gate(shared: &Shared, headers: &HeaderMap, route: Route) -> Result<(), Response> {
    shared.hits[route.index()].fetch_add(1, Ordering::SeqCst);
    let delay = shared.lock().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let inner = shared.lock();
    if inner.down {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ));
    }
    let needs_bearer = match route {
        Route::TokenReview => true,
        Route::Discovery | Route::Jwks => inner.require_bearer,
        Route::Other => false,
    };
    if needs_bearer {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(inner.reviewer_token.as_str()) {
            return Err(status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
            ));
        }
    }
    Ok(())
}

async fn discovery(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refused) = gate(&shared, &headers, Route::Discovery).await {
        return refused;
    }
    let inner = shared.lock();
    let jwks_uri = inner
        .jwks_uri
        .clone()
        .unwrap_or_else(|| format!("{}{JWKS_PATH}", inner.base_url));
    json_response(
        StatusCode::OK,
        "application/json",
        &json!({
            "issuer": inner.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }),
    )
}

async fn jwks(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refused) = gate(&shared, &headers, Route::Jwks).await {
        return refused;
    }
    let inner = shared.lock();
    json_response(
        StatusCode::OK,
        "application/jwk-set+json",
        &Jwks::of(&inner.keys.iter().collect::<Vec<_>>()),
    )
}

async fn not_found(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refused) = gate(&shared, &headers, Route::Other).await {
        return refused;
    }
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

async fn token_review(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = gate(&shared, &headers, Route::TokenReview).await {
        return refused;
    }
    let mut inner = shared.lock();
    if inner.forbid_review {
        return status_with(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "tokenreviews.authentication.k8s.io is forbidden: User \"{KSTASH_USER}\" cannot \
                 create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the \
                 cluster scope"
            ),
            Some(json!({"group": "authentication.k8s.io", "kind": "tokenreviews"})),
        );
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/yaml, application/vnd.kubernetes.protobuf",
        );
    }
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body is not JSON",
        );
    };
    inner.reviews.push(review.clone());
    if review["apiVersion"] != "authentication.k8s.io/v1" || review["kind"] != "TokenReview" {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "not a TokenReview of authentication.k8s.io/v1",
        );
    }
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "token is required for TokenReview in authentication",
        );
    }
    let requested: Vec<String> = match review["spec"].get("audiences") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let audiences = if !requested.is_empty() {
        requested
    } else if !inner.api_audiences.is_empty() {
        inner.api_audiences.clone()
    } else {
        vec![inner.issuer.clone()]
    };
    let status = match review_token(&inner, token, &audiences) {
        Ok(reviewed) => json!({
            "authenticated": true,
            "user": reviewed.user,
            "audiences": reviewed.audiences,
        }),
        // Go's `omitempty` drops `authenticated: false`; `user` is a struct
        // and stays, empty.
        Err(error) => json!({"user": {}, "error": error}),
    };
    json_response(
        StatusCode::CREATED,
        "application/json",
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": review["spec"],
            "status": status,
        }),
    )
}

struct Reviewed {
    user: Value,
    audiences: Vec<String>,
}

/// kube-apiserver's ServiceAccount token authenticator, reduced to what the
/// tests need. `Err` is the TokenReview `status.error`.
fn review_token(inner: &Inner, token: &str, audiences: &[String]) -> Result<Reviewed, String> {
    let refuse = |why: &str| format!("[invalid bearer token, {why}]");
    if inner.revoked.contains(token) {
        return Err(INVALIDATED.to_string());
    }
    // Kubernetes ignores `kid` and tries every key of the issuer.
    let claims = inner
        .keys
        .iter()
        .find_map(|key| {
            let mut v = Validation::new(key.alg());
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            v.required_spec_claims.clear();
            jsonwebtoken::decode::<Value>(token, &key.decoding_key(), &v).ok()
        })
        .map(|data| data.claims)
        .ok_or_else(|| refuse("square/go-jose: error in cryptographic primitive"))?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();

    if claims["iss"] == LEGACY_ISSUER {
        // Legacy tokens are audience agnostic and never expire.
        let namespace = text(&claims["kubernetes.io/serviceaccount/namespace"]);
        let name = text(&claims["kubernetes.io/serviceaccount/service-account.name"]);
        if inner
            .deleted_service_accounts
            .contains(&(namespace.clone(), name.clone()))
        {
            return Err(refuse(&format!("serviceaccounts \"{name}\" not found")));
        }
        return Ok(Reviewed {
            user: json!({
                "username": format!("system:serviceaccount:{namespace}:{name}"),
                "uid": claims["kubernetes.io/serviceaccount/service-account.uid"],
                "groups": groups(&namespace),
            }),
            audiences: audiences.to_vec(),
        });
    }
    if claims["iss"] != inner.issuer.as_str() {
        return Err(refuse("token issuer is not recognized"));
    }
    let now = i64::try_from(inner.now.unwrap_or_else(unix_now)).unwrap_or(i64::MAX);
    let leeway = i64::try_from(inner.leeway_secs).unwrap_or(i64::MAX);
    let Some(exp) = claims["exp"].as_i64() else {
        return Err(refuse("service account token has no expiry"));
    };
    if now > exp.saturating_add(leeway) {
        return Err(refuse("service account token has expired"));
    }
    if let Some(nbf) = claims["nbf"].as_i64() {
        if now.saturating_add(leeway) < nbf {
            return Err(refuse("service account token is not valid yet"));
        }
    }
    let token_audiences: Vec<String> = match &claims["aud"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().map(text).collect(),
        _ => Vec::new(),
    };
    let granted: Vec<String> = audiences
        .iter()
        .filter(|a| token_audiences.contains(a))
        .cloned()
        .collect();
    if granted.is_empty() {
        return Err(refuse(&format!(
            "token audiences {token_audiences:?} is invalid for the target audiences {audiences:?}"
        )));
    }
    let k8s = &claims["kubernetes.io"];
    let namespace = text(&k8s["namespace"]);
    let name = text(&k8s["serviceaccount"]["name"]);
    if namespace.is_empty() || name.is_empty() {
        return Err(refuse("namespace or serviceaccount claim is missing"));
    }
    if claims["sub"] != format!("system:serviceaccount:{namespace}:{name}").as_str() {
        return Err(refuse("sub claim is invalid"));
    }
    if inner
        .deleted_service_accounts
        .contains(&(namespace.clone(), name.clone()))
    {
        return Err(refuse(&format!("serviceaccounts \"{name}\" not found")));
    }
    let mut extra = Map::new();
    if let Some(jti) = claims["jti"].as_str() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            json!([format!("JTI={jti}")]),
        );
    }
    if let Some(node) = k8s["node"].as_object() {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            json!([node.get("name")]),
        );
        extra.insert(
            "authentication.kubernetes.io/node-uid".into(),
            json!([node.get("uid")]),
        );
    }
    if let Some(pod) = k8s["pod"].as_object() {
        let pod_name = pod.get("name").map(text).unwrap_or_default();
        if inner.deleted_pods.contains(&pod_name) {
            return Err(INVALIDATED.to_string());
        }
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            json!([pod_name]),
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            json!([pod.get("uid")]),
        );
    }
    Ok(Reviewed {
        user: json!({
            "username": format!("system:serviceaccount:{namespace}:{name}"),
            "uid": k8s["serviceaccount"]["uid"],
            "groups": groups(&namespace),
            "extra": extra,
        }),
        audiences: granted,
    })
}

fn groups(namespace: &str) -> Value {
    json!([
        "system:serviceaccounts",
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated",
    ])
}
