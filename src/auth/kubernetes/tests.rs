//! The validator end to end on real signed tokens: keys made here (RSA,
//! P-256, P-384, Ed25519), JWKS files, and a small loopback API server for
//! OIDC discovery and TokenReview.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, OctetKeyPairParameters, OctetKeyPairType,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const NOW: u64 = 1_800_000_000_000;

/// A signing key and its public JWK.
struct Signer {
    key: EncodingKey,
    jwk: Jwk,
}

impl Signer {
    fn rsa() -> Signer {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::Generate as _;
        let private = rsa::PrivateKey::generate();
        let key = EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        jwk.common.key_algorithm = None;
        Signer { key, jwk }
    }

    fn ec(alg: &'static rcgen::SignatureAlgorithm, curve: EllipticCurve) -> Signer {
        let pair = rcgen::KeyPair::generate_for(alg).unwrap();
        let point = pair.public_key_raw();
        let half = (point.len() - 1) / 2;
        let jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve,
                x: URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
                y: URL_SAFE_NO_PAD.encode(&point[1 + half..]),
            }),
        };
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        Signer { key, jwk }
    }

    fn ed25519() -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }),
        };
        let key = EncodingKey::from_ed_der(&pair.serialize_der());
        Signer { key, jwk }
    }

    /// The public JWK under `kid`.
    fn public(&self, kid: &str) -> Value {
        let mut jwk = self.jwk.clone();
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    fn sign(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> SecretString {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(String::from);
        SecretString::new(jsonwebtoken::encode(&header, claims, &self.key).unwrap())
    }
}

/// Two RSA keys (made once: RSA key generation takes a while), and the
/// other shapes.
struct Keys {
    rsa: Signer,
    rsa_next: Signer,
    p256: Signer,
    p384: Signer,
    ed: Signer,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: Signer::rsa(),
        rsa_next: Signer::rsa(),
        p256: Signer::ec(&rcgen::PKCS_ECDSA_P256_SHA256, EllipticCurve::P256),
        p384: Signer::ec(&rcgen::PKCS_ECDSA_P384_SHA384, EllipticCurve::P384),
        ed: Signer::ed25519(),
    })
}

/// The claims of a projected token of `shop/web`, issued a minute before
/// [`NOW`], valid ten minutes.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "system:serviceaccount:shop:web",
        "aud": ["kstash"],
        "exp": NOW / 1000 + 600,
        "iat": NOW / 1000 - 60,
        "nbf": NOW / 1000 - 60,
        "jti": "6d1c1f0e-1111-4222-8333-944455556666",
        "kubernetes.io": {
            "namespace": "shop",
            "serviceaccount": {"name": "web", "uid": "0f0e0d0c-1111-4222-8333-944455556666"},
            "pod": {"name": "web-0", "uid": "0f0e0d0c-1111-4222-8333-944455556667"}
        }
    })
}

fn write_jwks(path: &Path, keys: &[Value]) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
}

/// Settings for a JWKS file.
fn file_settings(path: &Path) -> KubernetesSettings {
    KubernetesSettings {
        issuer: Some(ISSUER.into()),
        jwks_file: Some(path.to_path_buf()),
        local_check: true,
        jwks_refresh: Duration::from_secs(300),
        ..Default::default()
    }
}

/// A checker over a JWKS file of every test key (kids `rsa`, `p256`,
/// `p384`, `ed`).
fn file_auth(dir: &Path) -> KubernetesAuth {
    let k = keys();
    let path = dir.join("jwks.json");
    write_jwks(
        &path,
        &[
            k.rsa.public("rsa"),
            k.p256.public("p256"),
            k.p384.public("p384"),
            k.ed.public("ed"),
        ],
    );
    KubernetesAuth::open(file_settings(&path)).unwrap()
}

fn refused(result: Result<ServiceAccount, LoginError>) -> Check {
    match result {
        Err(LoginError::Refused(check)) => check,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn real_tokens_of_every_key_shape_verify() {
    let dir = tempfile::tempdir().unwrap();
    let auth = file_auth(dir.path());
    assert!(auth.is_enabled());
    let k = keys();
    let cases = [
        (&k.rsa, Algorithm::RS256, "rsa"),
        (&k.rsa, Algorithm::RS512, "rsa"),
        (&k.rsa, Algorithm::PS256, "rsa"),
        (&k.p256, Algorithm::ES256, "p256"),
        (&k.p384, Algorithm::ES384, "p384"),
        (&k.ed, Algorithm::EdDSA, "ed"),
    ];
    for (signer, alg, kid) in cases {
        let jwt = signer.sign(alg, Some(kid), &claims());
        let account = auth.verify(&jwt, "kstash", NOW).await;
        assert_eq!(
            account.unwrap(),
            ServiceAccount {
                namespace: "shop".into(),
                name: "web".into(),
                uid: Some("0f0e0d0c-1111-4222-8333-944455556666".into()),
                pod: Some("web-0".into()),
                expires_at_ms: NOW + 600_000,
            },
            "{alg:?}"
        );
        // No kid: every key that fits the algorithm is tried.
        let jwt = signer.sign(alg, None, &claims());
        assert!(
            auth.verify(&jwt, "kstash", NOW).await.is_ok(),
            "{alg:?} without kid"
        );
    }
}

#[tokio::test]
async fn every_token_check_refuses_a_real_signed_token() {
    let dir = tempfile::tempdir().unwrap();
    let auth = file_auth(dir.path());
    let k = keys();
    let rs = |claims: Value| k.rsa.sign(Algorithm::RS256, Some("rsa"), &claims);
    let with = |pointer: &str, v: Value| {
        let mut c = claims();
        *c.pointer_mut(pointer).unwrap() = v;
        c
    };
    let segment = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let rsa_public_der = {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        let private = rsa::PrivateKey::from_pkcs1_der(k.rsa.key.as_bytes()).unwrap();
        private.to_public_key().to_pkcs1_der().unwrap().into_vec()
    };
    let hs256 = |secret: &[u8]| {
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("rsa".into());
        let key = EncodingKey::from_secret(secret).unwrap();
        SecretString::new(jsonwebtoken::encode(&header, &claims(), &key).unwrap())
    };
    let good = rs(claims()).expose().to_string();
    let (signing_input, _) = good.rsplit_once('.').unwrap();
    let cases: Vec<(&str, SecretString, Check)> = vec![
        (
            "not a JWT",
            SecretString::new("hello".into()),
            Check::Malformed,
        ),
        (
            "over 16 KiB",
            rs(with("/jti", json!("x".repeat(MAX_JWT_BYTES)))),
            Check::Malformed,
        ),
        (
            "alg none",
            SecretString::new(format!(
                "{}.{}.",
                segment(&json!({"alg": "none", "kid": "rsa"})),
                segment(&claims())
            )),
            Check::Algorithm,
        ),
        (
            "HS256 keyed with the RSA public key",
            hs256(&rsa_public_der),
            Check::Algorithm,
        ),
        (
            "HS256 keyed with the JWK's modulus",
            hs256(k.rsa.public("rsa")["n"].as_str().unwrap().as_bytes()),
            Check::Algorithm,
        ),
        (
            "ES256 naming the RSA key",
            k.p256.sign(Algorithm::ES256, Some("rsa"), &claims()),
            Check::Algorithm,
        ),
        (
            "ES256 naming the P-384 key",
            k.p256.sign(Algorithm::ES256, Some("p384"), &claims()),
            Check::Algorithm,
        ),
        (
            "unknown kid",
            k.rsa_next.sign(Algorithm::RS256, Some("next"), &claims()),
            Check::KeyId,
        ),
        (
            "another key under a known kid",
            k.rsa_next.sign(Algorithm::RS256, Some("rsa"), &claims()),
            Check::Signature,
        ),
        (
            "another key, no kid",
            k.rsa_next.sign(Algorithm::RS256, None, &claims()),
            Check::Signature,
        ),
        (
            "claims changed after signing",
            SecretString::new(format!(
                "{}.{}.{}",
                signing_input.split('.').next().unwrap(),
                segment(&with("/sub", json!("system:serviceaccount:bank:web"))),
                good.rsplit('.').next().unwrap()
            )),
            Check::Signature,
        ),
        (
            "wrong issuer",
            rs(with("/iss", json!("https://other"))),
            Check::Issuer,
        ),
        (
            "wrong audience",
            rs(with("/aud", json!(["vault"]))),
            Check::Audience,
        ),
        (
            "expired",
            rs(with("/exp", json!(NOW / 1000 - 61))),
            Check::Expired,
        ),
        (
            "not yet valid",
            rs(with("/nbf", json!(NOW / 1000 + 61))),
            Check::NotYetValid,
        ),
        (
            "issued in the future",
            rs(with("/iat", json!(NOW / 1000 + 61))),
            Check::IssuedInFuture,
        ),
        (
            "not a service account",
            rs(with("/sub", json!("system:node:worker-1"))),
            Check::Subject,
        ),
        (
            "claims of another namespace",
            rs(with("/kubernetes.io/namespace", json!("bank"))),
            Check::ClaimsMismatch,
        ),
    ];
    for (what, jwt, want) in cases {
        assert_eq!(
            refused(auth.verify(&jwt, "kstash", NOW).await),
            want,
            "{what}"
        );
    }
    let mut legacy = claims();
    legacy.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refused(auth.verify(&rs(legacy), "kstash", NOW).await),
        Check::Expired,
        "a legacy token without exp"
    );
    // The leeway edges, with a real token.
    let jwt = rs(claims());
    let exp_ms = NOW + 600_000;
    assert!(auth
        .verify(&jwt, "kstash", exp_ms + LEEWAY_MS - 1)
        .await
        .is_ok());
    assert_eq!(
        refused(auth.verify(&jwt, "kstash", exp_ms + LEEWAY_MS).await),
        Check::Expired
    );
    let aud = rs(with("/aud", json!("kstash")));
    assert!(
        auth.verify(&aud, "kstash", NOW).await.is_ok(),
        "aud as a string"
    );
    assert_eq!(
        refused(auth.verify(&jwt, "other-audience", NOW).await),
        Check::Audience,
        "the role's audience decides"
    );
}

#[tokio::test]
async fn a_rotated_jwks_file_is_picked_up_by_the_same_checker() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[k.rsa.public("old")]);
    let auth = KubernetesAuth::open(file_settings(&path)).unwrap();
    let old = k.rsa.sign(Algorithm::RS256, Some("old"), &claims());
    let new = k.rsa_next.sign(Algorithm::RS256, Some("new"), &claims());
    assert!(auth.verify(&old, "kstash", NOW).await.is_ok());
    assert_eq!(
        refused(auth.verify(&new, "kstash", NOW).await),
        Check::KeyId
    );

    // --- step: the file changes (size and time): read again at once.
    write_jwks(&path, &[k.rsa.public("old"), k.rsa_next.public("new")]);
    assert!(auth.verify(&new, "kstash", NOW).await.is_ok());
    assert!(auth.verify(&old, "kstash", NOW).await.is_ok());

    // --- step: an unusable new version keeps the keys in use.
    for broken in [
        "{not json",
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    ] {
        std::fs::write(&path, broken).unwrap();
        assert!(auth.verify(&new, "kstash", NOW).await.is_ok(), "{broken}");
    }
    std::fs::remove_file(&path).unwrap();
    assert!(auth.verify(&old, "kstash", NOW).await.is_ok(), "file gone");

    // --- step: a change the stamp cannot see (same size, time put back)
    // is found by the unknown kid, at most once a second.
    write_jwks(&path, &[k.rsa.public("k1")]);
    let auth = KubernetesAuth::open(file_settings(&path)).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    write_jwks(&path, &[k.rsa_next.public("k2")]);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let k2 = k.rsa_next.sign(Algorithm::RS256, Some("k2"), &claims());
    assert_eq!(
        refused(auth.verify(&k2, "kstash", NOW).await),
        Check::KeyId,
        "read less than a second ago: not read again"
    );
    tokio::time::sleep(MIN_FETCH_INTERVAL + Duration::from_millis(100)).await;
    assert!(auth.verify(&k2, "kstash", NOW).await.is_ok());
}

#[test]
fn key_sets_keep_only_usable_signing_keys_and_at_most_64() {
    let k = keys();
    let mut enc = k.rsa.public("enc");
    enc["use"] = json!("enc");
    let mut short = k.rsa.public("short");
    short["n"] = json!(URL_SAFE_NO_PAD.encode([0xffu8; 128]));
    let mut mislabelled = k.p256.public("mislabelled");
    mislabelled["alg"] = json!("RS256");
    let unusable = [
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
        enc,
        short,
        mislabelled,
        json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"}),
        json!({"kty": "weird", "kid": "w"}),
        json!("not an object"),
    ];
    let doc = |keys: &[Value]| json!({ "keys": keys }).to_string();
    let err = keys::KeySet::parse(doc(&unusable).as_bytes()).unwrap_err();
    assert!(err.contains("no usable signing key"), "{err}");
    let mut mixed = unusable.to_vec();
    mixed.push(k.rsa.public("good"));
    let set = keys::KeySet::parse(doc(&mixed).as_bytes()).unwrap();
    assert!(set.has_kid("good") && !set.has_kid("enc") && !set.has_kid("short"));
    let many: Vec<Value> = (0..=MAX_KEYS)
        .map(|i| k.p256.public(&format!("k{i}")))
        .collect();
    let err = keys::KeySet::parse(doc(&many).as_bytes()).unwrap_err();
    assert!(err.contains("more than 64"), "{err}");
    assert!(keys::KeySet::parse(doc(&many[..MAX_KEYS]).as_bytes()).is_ok());
    let huge = format!(
        r#"{{"keys": [], "pad": "{}"}}"#,
        "x".repeat(MAX_DOCUMENT_BYTES)
    );
    let err = keys::KeySet::parse(huge.as_bytes()).unwrap_err();
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn in_cluster_defaults_come_from_the_service_variables_and_a_mounted_token() {
    let dir = Path::new(SERVICE_ACCOUNT_DIR);
    assert_eq!(
        InCluster::from_env(Some("10.96.0.1"), Some("443"), true),
        Some(InCluster {
            api: "https://10.96.0.1:443".into(),
            ca_cert: dir.join("ca.crt"),
            token_file: dir.join("token"),
        })
    );
    assert_eq!(
        InCluster::from_env(Some("fd00:10:96::1"), Some("443"), true).map(|c| c.api),
        Some("https://[fd00:10:96::1]:443".into()),
        "IPv6 in brackets"
    );
    for (host, port, token) in [
        (None, Some("443"), true),
        (Some("10.96.0.1"), None, true),
        (Some(""), Some("443"), true),
        (Some("10.96.0.1"), Some("https"), true),
        (Some("10.96.0.1"), Some("443"), false),
    ] {
        assert_eq!(
            InCluster::from_env(host, port, token),
            None,
            "{host:?} {port:?} {token}"
        );
    }
    let pod = InCluster::from_env(Some("10.96.0.1"), Some("443"), true).unwrap();
    let explicit = KubernetesSettings {
        api: Some("https://kubernetes.default.svc".into()),
        ..Default::default()
    }
    .with_in_cluster(Some(&pod));
    assert_eq!(
        explicit.api.as_deref(),
        Some("https://kubernetes.default.svc"),
        "explicit wins"
    );
    assert_eq!(explicit.ca_cert, Some(pod.ca_cert.clone()));
    assert_eq!(explicit.token_file, Some(pod.token_file.clone()));
    let outside = KubernetesSettings::default().with_in_cluster(None);
    assert_eq!(outside, KubernetesSettings::default());
}

#[tokio::test]
async fn settings_that_cannot_check_a_token_are_refused_and_say_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[keys().p256.public("p256")]);
    let base = KubernetesSettings {
        local_check: true,
        jwks_refresh: Duration::from_secs(300),
        ..Default::default()
    };
    let disabled = KubernetesAuth::open(base.clone()).unwrap();
    assert!(!disabled.is_enabled());
    match disabled
        .verify(&SecretString::new("a.b.c".into()), "kstash", NOW)
        .await
    {
        Err(LoginError::NotConfigured(m)) => assert!(m.contains("kubernetes_api"), "{m}"),
        other => panic!("{other:?}"),
    }
    let cases: Vec<(KubernetesSettings, &str)> = vec![
        (
            KubernetesSettings {
                jwks_file: Some(jwks.clone()),
                ..base.clone()
            },
            "kubernetes_jwks_file needs kubernetes_issuer",
        ),
        (
            KubernetesSettings {
                issuer: Some(ISSUER.into()),
                ..base.clone()
            },
            "give kubernetes_jwks_file",
        ),
        (
            KubernetesSettings {
                issuer: Some(ISSUER.into()),
                jwks_file: Some(jwks.clone()),
                local_check: false,
                ..base.clone()
            },
            "nothing would check",
        ),
        (
            KubernetesSettings {
                token_review: true,
                local_check: false,
                ..base.clone()
            },
            "kubernetes_token_review needs kubernetes_api",
        ),
        (
            KubernetesSettings {
                api: Some("http://10.0.0.1:8080".into()),
                ..base.clone()
            },
            "not loopback",
        ),
        (
            KubernetesSettings {
                api: Some("https://kubernetes.default.svc".into()),
                ..base.clone()
            },
            "give kubernetes_ca_cert",
        ),
        (
            KubernetesSettings {
                api: Some("https://kubernetes.default.svc".into()),
                ca_cert: Some(dir.path().join("missing-ca.crt")),
                ..base.clone()
            },
            "missing-ca.crt",
        ),
        (
            KubernetesSettings {
                api: Some("https://kubernetes.default.svc".into()),
                ca_cert: Some(jwks.clone()),
                ..base.clone()
            },
            "no PEM certificate",
        ),
        (
            KubernetesSettings {
                issuer: Some(ISSUER.into()),
                jwks_file: Some(jwks.clone()),
                ca_cert: Some(jwks.clone()),
                ..base.clone()
            },
            "kubernetes_ca_cert is only used with kubernetes_api",
        ),
        (
            KubernetesSettings {
                issuer: Some(ISSUER.into()),
                jwks_file: Some(dir.path().join("missing.json")),
                ..base.clone()
            },
            "cannot read the cluster's signing keys from",
        ),
        (
            KubernetesSettings {
                issuer: Some(ISSUER.into()),
                jwks_file: Some(jwks.clone()),
                jwks_refresh: Duration::from_secs(1),
                ..base.clone()
            },
            "kubernetes_jwks_refresh must be between",
        ),
    ];
    for (settings, want) in cases {
        match KubernetesAuth::open(settings.clone()) {
            Err(LoginError::NotConfigured(m)) => {
                assert!(m.contains(want), "want {want:?} in {m:?}")
            }
            other => panic!("{settings:?}: expected a refusal, got {other:?}"),
        }
    }
}

/// What the fake API server answers, and what it saw.
#[derive(Default)]
struct Cluster {
    /// Answer discovery with HTTP 500 while set.
    down: bool,
    /// The key set served at `/openid/v1/jwks`.
    jwks: Vec<Value>,
    /// The TokenReview status to answer, or an HTTP status to fail with.
    review: Option<Result<Value, u16>>,
    /// Requests seen: (path, bearer token).
    seen: Vec<(String, Option<String>)>,
    /// Tokens sent for review.
    reviewed: Vec<String>,
}

/// A plain-HTTP API server on loopback (OIDC discovery, keys,
/// TokenReview); stopped when the returned task is aborted.
async fn fake_api(state: Arc<Mutex<Cluster>>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    type Shared = Arc<Mutex<Cluster>>;

    fn record(state: &Shared, uri: &Uri, headers: &HeaderMap) {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        state
            .lock()
            .unwrap()
            .seen
            .push((uri.path().to_string(), bearer));
    }
    async fn discovery(
        State(state): State<Shared>,
        uri: Uri,
        headers: HeaderMap,
    ) -> axum::response::Response {
        record(&state, &uri, &headers);
        if state.lock().unwrap().down {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        axum::Json(json!({
            "issuer": ISSUER,
            "jwks_uri": "https://issuer.example/openid/v1/jwks",
            "response_types_supported": ["id_token"],
        }))
        .into_response()
    }
    async fn jwks(State(state): State<Shared>, uri: Uri, headers: HeaderMap) -> axum::Json<Value> {
        record(&state, &uri, &headers);
        axum::Json(json!({ "keys": state.lock().unwrap().jwks }))
    }
    async fn review(
        State(state): State<Shared>,
        uri: Uri,
        headers: HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        record(&state, &uri, &headers);
        let mut s = state.lock().unwrap();
        s.reviewed
            .push(body["spec"]["token"].as_str().unwrap_or_default().into());
        assert_eq!(body["kind"], "TokenReview");
        assert_eq!(body["spec"]["audiences"], json!(["kstash"]));
        match s.review.clone().expect("a TokenReview answer is set") {
            Ok(status) => (
                StatusCode::CREATED,
                axum::Json(json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": body["spec"],
                    "status": status,
                })),
            )
                .into_response(),
            Err(code) => StatusCode::from_u16(code).unwrap().into_response(),
        }
    }
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(discovery),
        )
        .route("/openid/v1/jwks", axum::routing::get(jwks))
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            axum::routing::post(review),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("kstash-token");
    std::fs::write(&path, "kstash-own-token\n").unwrap();
    path
}

#[tokio::test]
async fn discovery_finds_the_keys_and_issuer_and_survives_an_outage() {
    // Steps: discovery down at first use → Unavailable naming the URL,
    // nothing cached; up → keys from /openid/v1/jwks (jwks_uri is on
    // another origin), the discovered issuer enforced, kstash's token sent;
    // a rotated key found through its unknown kid; down again → the keys
    // fetched before stay in use.
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let state = Arc::new(Mutex::new(Cluster {
        down: true,
        jwks: vec![k.rsa.public("one")],
        ..Default::default()
    }));
    let (api, server) = fake_api(state.clone()).await;
    let auth = KubernetesAuth::open(KubernetesSettings {
        api: Some(api.clone()),
        token_file: Some(token_file(dir.path())),
        local_check: true,
        jwks_refresh: Duration::from_secs(300),
        ..Default::default()
    })
    .unwrap();
    let one = k.rsa.sign(Algorithm::RS256, Some("one"), &claims());

    // --- step: discovery down
    match auth.verify(&one, "kstash", NOW).await {
        Err(LoginError::Unavailable(m)) => {
            assert!(
                m.contains("cannot fetch the cluster's signing keys from"),
                "{m}"
            );
            assert!(
                m.contains(&format!("{api}/.well-known/openid-configuration")),
                "{m}"
            );
            assert!(m.contains("500"), "{m}");
            assert!(!m.contains(one.expose()), "{m}");
        }
        other => panic!("{other:?}"),
    }

    // --- step: discovery up (after the rate limit)
    state.lock().unwrap().down = false;
    tokio::time::sleep(MIN_FETCH_INTERVAL + Duration::from_millis(100)).await;
    assert!(auth.verify(&one, "kstash", NOW).await.is_ok());
    {
        let s = state.lock().unwrap();
        let paths: Vec<&str> = s.seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/.well-known/openid-configuration",
                "/.well-known/openid-configuration",
                "/openid/v1/jwks"
            ]
        );
        assert!(s
            .seen
            .iter()
            .all(|(_, b)| b.as_deref() == Some("Bearer kstash-own-token")));
    }
    let mut other_issuer = claims();
    other_issuer["iss"] = json!("https://evil.example");
    let evil = k.rsa.sign(Algorithm::RS256, Some("one"), &other_issuer);
    assert_eq!(
        refused(auth.verify(&evil, "kstash", NOW).await),
        Check::Issuer
    );

    // --- step: rotation
    state.lock().unwrap().jwks = vec![k.rsa.public("one"), k.rsa_next.public("two")];
    let two = k.rsa_next.sign(Algorithm::RS256, Some("two"), &claims());
    let flood: Vec<SecretString> = (0..20)
        .map(|i| {
            k.rsa
                .sign(Algorithm::RS256, Some(&format!("r{i}")), &claims())
        })
        .collect();
    tokio::time::sleep(MIN_FETCH_INTERVAL).await;
    assert!(auth.verify(&two, "kstash", NOW).await.is_ok());
    // A flood of unknown kids costs no fetch within the second.
    let fetched = state.lock().unwrap().seen.len();
    for random in &flood {
        assert_eq!(
            refused(auth.verify(random, "kstash", NOW).await),
            Check::KeyId
        );
    }
    assert_eq!(state.lock().unwrap().seen.len(), fetched, "no fetch");

    // --- step: down again: the cached keys stay
    state.lock().unwrap().down = true;
    tokio::time::sleep(MIN_FETCH_INTERVAL).await;
    let unknown = k.rsa.sign(Algorithm::RS256, Some("three"), &claims());
    assert_eq!(
        refused(auth.verify(&unknown, "kstash", NOW).await),
        Check::KeyId
    );
    assert!(auth.verify(&two, "kstash", NOW).await.is_ok());
    server.abort();
}

#[tokio::test]
async fn token_review_runs_after_the_local_checks_and_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, &[k.p256.public("p256")]);
    let state = Arc::new(Mutex::new(Cluster::default()));
    let (api, server) = fake_api(state.clone()).await;
    let settings = KubernetesSettings {
        issuer: Some(ISSUER.into()),
        jwks_file: Some(jwks),
        api: Some(api.clone()),
        token_file: Some(token_file(dir.path())),
        token_review: true,
        local_check: true,
        jwks_refresh: Duration::from_secs(300),
        ..Default::default()
    };
    let auth = KubernetesAuth::open(settings.clone()).unwrap();
    let jwt = k.p256.sign(Algorithm::ES256, Some("p256"), &claims());
    let set = |review: Result<Value, u16>| state.lock().unwrap().review = Some(review);
    let user = "system:serviceaccount:shop:web";

    set(Ok(
        json!({"authenticated": true, "user": {"username": user}, "audiences": ["kstash"]}),
    ));
    assert!(auth.verify(&jwt, "kstash", NOW).await.is_ok());
    assert_eq!(state.lock().unwrap().reviewed, [jwt.expose().to_string()]);
    assert_eq!(
        state.lock().unwrap().seen.last().unwrap().1.as_deref(),
        Some("Bearer kstash-own-token")
    );

    // A forged token never reaches the API server.
    let other = Signer::ec(&rcgen::PKCS_ECDSA_P256_SHA256, EllipticCurve::P256);
    let forged = other.sign(Algorithm::ES256, Some("p256"), &claims());
    assert_eq!(
        refused(auth.verify(&forged, "kstash", NOW).await),
        Check::Signature
    );
    assert_eq!(state.lock().unwrap().reviewed.len(), 1);

    let answers = [
        (
            json!({"authenticated": false, "error": "pod deleted"}),
            Check::TokenReview,
        ),
        (json!({}), Check::TokenReview),
        (
            json!({"authenticated": true, "user": {"username": "system:serviceaccount:shop:db"}}),
            Check::TokenReviewMismatch,
        ),
        (
            json!({"authenticated": true, "user": {"username": user}, "audiences": ["api"]}),
            Check::TokenReviewMismatch,
        ),
    ];
    for (status, want) in answers {
        set(Ok(status.clone()));
        assert_eq!(
            refused(auth.verify(&jwt, "kstash", NOW).await),
            want,
            "{status}"
        );
    }
    set(Ok(
        json!({"authenticated": true, "user": {"username": user}}),
    ));
    assert!(
        auth.verify(&jwt, "kstash", NOW).await.is_ok(),
        "no audiences in the answer"
    );

    set(Err(403));
    match auth.verify(&jwt, "kstash", NOW).await {
        Err(LoginError::Unavailable(m)) => {
            assert!(m.contains("system:auth-delegator"), "{m}");
            assert!(m.contains("tokenreviews"), "{m}");
            assert!(
                !m.contains(jwt.expose()) && !m.contains("kstash-own-token"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    set(Err(500));
    assert!(matches!(
        auth.verify(&jwt, "kstash", NOW).await,
        Err(LoginError::Unavailable(m)) if m.contains("HTTP 500")
    ));

    // --- step: TokenReview alone still checks every claim it can.
    let review_only = KubernetesAuth::open(KubernetesSettings {
        issuer: None,
        jwks_file: None,
        local_check: false,
        ..settings
    })
    .unwrap();
    set(Ok(
        json!({"authenticated": true, "user": {"username": user}}),
    ));
    let unsigned_by_anyone_known = k.rsa_next.sign(Algorithm::RS256, Some("x"), &claims());
    assert!(review_only
        .verify(&unsigned_by_anyone_known, "kstash", NOW)
        .await
        .is_ok());
    let mut late = claims();
    late["exp"] = json!(NOW / 1000 - 3600);
    let expired = k.rsa_next.sign(Algorithm::RS256, None, &late);
    assert_eq!(
        refused(review_only.verify(&expired, "kstash", NOW).await),
        Check::Expired
    );
    let hs = {
        let key = EncodingKey::from_secret(b"secret").unwrap();
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        SecretString::new(jsonwebtoken::encode(&header, &claims(), &key).unwrap())
    };
    assert_eq!(
        refused(review_only.verify(&hs, "kstash", NOW).await),
        Check::Algorithm
    );
    assert_eq!(
        refused(review_only.verify(&jwt, "other", NOW).await),
        Check::Audience
    );
    server.abort();
}
