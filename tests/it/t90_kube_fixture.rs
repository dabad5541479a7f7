//! The pretend Kubernetes of `kube.rs` proves itself: its tokens verify
//! with `jsonwebtoken` against the JWKS it serves, its API server answers
//! discovery, JWKS and TokenReview over HTTPS with the Kubernetes shapes,
//! and its switches (rotation, down, closed, forbidden, deleted pod) do what
//! they say. The kstash login scenarios build on it elsewhere.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::kube::{
    unix_now, FakeKubeApi, Jwks, Route, SaToken, SigningKey, DISCOVERY_PATH, INVALIDATED,
    JWKS_PATH, KUBE_ISSUER, LEGACY_ISSUER, TOKEN_REVIEW_PATH,
};

/// Verify `token` with the JWK of kid `kid` in `jwks`, as a relying party
/// would: RS256/ES256 only, issuer [`KUBE_ISSUER`], audience `kstash`.
fn verify_with_jwks(
    token: &str,
    jwks: &Value,
    alg: Algorithm,
) -> jsonwebtoken::errors::Result<Value> {
    let header = jsonwebtoken::decode_header(token)?;
    let kid = header.kid.clone().unwrap_or_default();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let jwk = set.find(&kid).ok_or_else(|| {
        jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)
    })?;
    let mut v = Validation::new(alg);
    v.set_issuer(&[KUBE_ISSUER]);
    v.set_audience(&["kstash"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &v).map(|d| d.claims)
}

/// Every member of `expected` is in `actual` with that value.
fn assert_members(actual: &Value, expected: Value) {
    for (name, value) in expected.as_object().unwrap() {
        assert_eq!(&actual[name], value, "{name} of {actual}");
    }
}

fn segment(token: &str, i: usize) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

async fn review(
    api: &FakeKubeApi,
    bearer: Option<&str>,
    token: &str,
    audiences: &[&str],
) -> (u16, Value) {
    let mut req = api
        .client()
        .post(format!("{}{TOKEN_REVIEW_PATH}", api.base_url()))
        .json(&json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        }));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn get(api: &FakeKubeApi, path: &str) -> reqwest::Result<reqwest::Response> {
    api.client()
        .get(format!("{}{path}", api.base_url()))
        .send()
        .await
}

/// Steps: make an RSA and an EC key (timed) → their JWKs have the RFC 7517
/// members → tokens of each verify against the JWKS and the PEM, carry the
/// projected-token claims and the header `{alg, kid}` → a token does not
/// verify under the other key's kid → `alg: none`, HS256 and legacy tokens
/// have the shapes the attacks need.
#[test]
fn keys_and_tokens_have_the_kubernetes_shapes() {
    tracing::info!("--- step: keys");
    let t = Instant::now();
    let rsa = SigningKey::rsa("rsa-1");
    eprintln!("RSA-2048 keygen: {:?}", t.elapsed());
    let t = Instant::now();
    let ec = SigningKey::ec("ec-1");
    eprintln!("P-256 keygen: {:?}", t.elapsed());
    let r = rsa.public_jwk();
    assert_members(
        &r,
        json!({"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "e": "AQAB"}),
    );
    // 2048 bits = 256 bytes = 342 base64url characters, no padding.
    assert_eq!(r["n"].as_str().unwrap().len(), 342);
    let e = ec.public_jwk();
    assert_members(
        &e,
        json!({"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256"}),
    );
    assert_eq!(e["x"].as_str().unwrap().len(), 43);
    assert_eq!(e["y"].as_str().unwrap().len(), 43);
    assert!(rsa.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(ec.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    let jwks = Jwks::of(&[&rsa, &ec]);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    tracing::info!("--- step: tokens verify against the JWKS and the PEM");
    let now = unix_now();
    for (key, pem_key) in [
        (
            &rsa,
            DecodingKey::from_rsa_pem(rsa.public_pem().as_bytes()).unwrap(),
        ),
        (
            &ec,
            DecodingKey::from_ec_pem(ec.public_pem().as_bytes()).unwrap(),
        ),
    ] {
        let token = SaToken::new("team-a", "builder", now).sign(key);
        assert_eq!(
            segment(&token, 0),
            json!({"alg": key.alg_name(), "kid": key.kid()})
        );
        let claims = verify_with_jwks(&token, &jwks, key.alg()).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:team-a:builder");
        assert_eq!(claims["aud"], json!(["kstash"]));
        assert_eq!(claims["exp"], json!(now + 3600));
        assert_eq!(claims["iat"], json!(now));
        assert_eq!(claims["nbf"], json!(now));
        assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
        let k8s = &claims["kubernetes.io"];
        assert_eq!(k8s["namespace"], "team-a");
        assert_eq!(k8s["serviceaccount"]["name"], "builder");
        assert!(k8s["pod"]["name"].as_str().unwrap().starts_with("builder-"));
        assert_eq!(k8s["pod"]["uid"].as_str().unwrap().len(), 36);
        assert!(k8s["node"]["name"].is_string());
        assert!(k8s.get("warnafter").is_none());
        let mut v = Validation::new(key.alg());
        v.set_audience(&["kstash"]);
        jsonwebtoken::decode::<Value>(&token, &pem_key, &v).unwrap();
    }

    tracing::info!("--- step: a token under the other key's kid fails");
    let forged = SaToken::new("team-a", "builder", now).sign(&SigningKey::ec("ec-1"));
    assert!(verify_with_jwks(&forged, &jwks, Algorithm::ES256).is_err());
    let unknown = SaToken::new("team-a", "builder", now).sign(&rsa.with_kid("rsa-9"));
    assert!(verify_with_jwks(&unknown, &jwks, Algorithm::RS256).is_err());

    tracing::info!("--- step: the knobs");
    let t = SaToken::new("a", "b", now)
        .audiences(&["x", "y"])
        .issuer("https://other")
        .expires_in(-10)
        .not_before_in(30)
        .no_pod()
        .set("/kubernetes.io/namespace", json!("c"))
        .remove("/jti")
        .extended_expiry()
        .no_kid()
        .header("typ", json!("JWT"));
    let c = t.claims();
    assert_eq!(c["aud"], json!(["x", "y"]));
    assert_eq!(c["iss"], "https://other");
    assert_eq!(c["nbf"], json!(now + 30));
    assert_eq!(c["exp"], json!(now + 365 * 86_400));
    assert_eq!(c["kubernetes.io"]["warnafter"], json!(now + 3607));
    assert_eq!(c["kubernetes.io"]["namespace"], "c");
    assert!(c["kubernetes.io"].get("pod").is_none() && c["kubernetes.io"].get("node").is_none());
    assert!(c.get("jti").is_none());
    assert_eq!(
        segment(&t.sign(&rsa), 0),
        json!({"alg": "RS256", "typ": "JWT"})
    );
    let single = SaToken::new("a", "b", now).audience_string("kstash");
    assert_eq!(single.claims()["aud"], "kstash");

    tracing::info!("--- step: alg none, HS256 with the public key, legacy");
    let none = SaToken::new("a", "b", now).kid("rsa-1").unsigned_alg_none();
    assert!(none.ends_with('.'));
    assert_eq!(segment(&none, 0), json!({"alg": "none", "kid": "rsa-1"}));
    assert!(verify_with_jwks(&none, &jwks, Algorithm::RS256).is_err());
    let hs = SaToken::new("a", "b", now)
        .kid("rsa-1")
        .sign_hs256(rsa.public_pem().as_bytes());
    assert_eq!(segment(&hs, 0), json!({"alg": "HS256", "kid": "rsa-1"}));
    assert!(verify_with_jwks(&hs, &jwks, Algorithm::RS256).is_err());
    let mut hmac = Validation::new(Algorithm::HS256);
    hmac.set_audience(&["kstash"]);
    jsonwebtoken::decode::<Value>(
        &hs,
        &DecodingKey::from_secret(rsa.public_pem().as_bytes()).unwrap(),
        &hmac,
    )
    .expect("the confusion token is a real HMAC over the PEM");
    let legacy = SaToken::legacy("a", "b").sign(&rsa);
    let lc = segment(&legacy, 1);
    assert_eq!(lc["iss"], LEGACY_ISSUER);
    assert_eq!(lc["kubernetes.io/serviceaccount/namespace"], "a");
    assert!(lc.get("exp").is_none() && lc.get("aud").is_none());
}

/// Steps: start with an RSA and an EC key → discovery over HTTPS, trusting
/// only the fake's CA → JWKS from its `jwks_uri`, both tokens verify →
/// a client with no roots refuses the server.
#[tokio::test]
async fn discovery_and_jwks_over_https() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let api = FakeKubeApi::start(&[&rsa, &ec]).await;

    tracing::info!("--- step: discovery");
    let resp = get(&api, DISCOVERY_PATH).await.unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(
        doc,
        json!({
            "issuer": KUBE_ISSUER,
            "jwks_uri": format!("{}{JWKS_PATH}", api.base_url()),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        })
    );

    tracing::info!("--- step: JWKS from jwks_uri");
    let resp = api
        .client()
        .get(doc["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/jwk-set+json");
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, Jwks::of(&[&rsa, &ec]));
    let now = unix_now();
    for key in [&rsa, &ec] {
        let token = SaToken::new("ns", "sa", now).sign(key);
        verify_with_jwks(&token, &served, key.alg()).unwrap();
    }
    assert_eq!((api.hits(Route::Discovery), api.hits(Route::Jwks)), (1, 1));

    tracing::info!("--- step: the CA is needed, and files hold it");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .get(format!("{}{DISCOVERY_PATH}", api.base_url()))
        .send()
        .await
        .is_err());
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        std::fs::read_to_string(api.write_ca(dir.path())).unwrap(),
        api.ca_pem()
    );
    assert_eq!(
        std::fs::read_to_string(api.ca_file()).unwrap(),
        api.ca_pem()
    );
    let jwks_file = Jwks::write(dir.path(), &[&ec]);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(jwks_file).unwrap()).unwrap();
    assert_eq!(on_disk, Jwks::of(&[&ec]));
}

/// Steps: a good token → authenticated with the ServiceAccount user, pod
/// extras and the granted audience, spec echoed → wrong audience, expired,
/// signed by a stranger: unauthenticated → a deleted pod: "invalidated" →
/// a legacy token: authenticated (audience agnostic) → no bearer, a wrong
/// one: 401 Status → forbidden: 403 Status → every request counted.
#[tokio::test]
async fn token_review_answers_like_kubernetes() {
    let key = SigningKey::ec("ec-1");
    let api = FakeKubeApi::start(&[&key]).await;
    let bearer = api.reviewer_token();
    let now = unix_now();

    tracing::info!("--- step: a good token");
    let token = SaToken::new("team-a", "builder", now);
    let jwt = token.sign(&key);
    let (code, body) = review(&api, Some(&bearer), &jwt, &["kstash"]).await;
    assert_eq!(code, 201, "created, as Kubernetes answers: {body}");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["spec"], json!({"token": jwt, "audiences": ["kstash"]}));
    let status = &body["status"];
    assert_eq!(status["authenticated"], true, "{body}");
    assert_eq!(status["audiences"], json!(["kstash"]));
    let user = &status["user"];
    assert_eq!(user["username"], "system:serviceaccount:team-a:builder");
    assert_eq!(user["uid"].as_str(), token.sa_uid());
    assert_eq!(
        user["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:team-a",
            "system:authenticated"
        ])
    );
    let extra = &user["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        json!([token.pod_name()])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([token.pod_uid()])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/credential-id"],
        json!([format!("JTI={}", token.jti().unwrap())])
    );
    assert_eq!(api.reviews().last().unwrap()["spec"]["token"], jwt);

    tracing::info!("--- step: what Kubernetes refuses");
    let refused = |body: &Value| {
        assert!(body["status"].get("authenticated").is_none(), "{body}");
        assert_eq!(body["status"]["user"], json!({}));
        body["status"]["error"].as_str().unwrap().to_string()
    };
    let (_, body) = review(&api, Some(&bearer), &jwt, &["vault"]).await;
    assert!(refused(&body).contains("is invalid for the target audiences"));
    let expired = SaToken::new("team-a", "builder", now)
        .expires_in(-120)
        .sign(&key);
    let (_, body) = review(&api, Some(&bearer), &expired, &["kstash"]).await;
    assert!(refused(&body).contains("has expired"));
    let within_leeway = SaToken::new("team-a", "builder", now)
        .expires_in(-10)
        .sign(&key);
    let (_, body) = review(&api, Some(&bearer), &within_leeway, &["kstash"]).await;
    assert_eq!(
        body["status"]["authenticated"], true,
        "60 s leeway, as Kubernetes"
    );
    let stranger = SaToken::new("team-a", "builder", now).sign(&SigningKey::ec("ec-1"));
    let (_, body) = review(&api, Some(&bearer), &stranger, &["kstash"]).await;
    refused(&body);
    let none = SaToken::new("team-a", "builder", now).unsigned_alg_none();
    let (_, body) = review(&api, Some(&bearer), &none, &["kstash"]).await;
    refused(&body);

    tracing::info!("--- step: the pod is deleted");
    api.delete_pod(token.pod_name().unwrap());
    let (_, body) = review(&api, Some(&bearer), &jwt, &["kstash"]).await;
    assert_eq!(refused(&body), INVALIDATED);
    let other_pod = SaToken::new("team-a", "builder", now)
        .pod("builder-2", "u-2")
        .sign(&key);
    let (_, body) = review(&api, Some(&bearer), &other_pod, &["kstash"]).await;
    assert_eq!(body["status"]["authenticated"], true);
    api.revoke(&other_pod);
    let (_, body) = review(&api, Some(&bearer), &other_pod, &["kstash"]).await;
    assert_eq!(refused(&body), INVALIDATED);

    tracing::info!("--- step: a legacy token passes TokenReview");
    let legacy = SaToken::legacy("team-a", "old").sign(&key);
    let (_, body) = review(&api, Some(&bearer), &legacy, &["kstash"]).await;
    assert_eq!(body["status"]["authenticated"], true, "{body}");
    assert!(body["status"]["user"].get("extra").is_none());

    tracing::info!("--- step: 401 without or with a wrong bearer, 403 when forbidden");
    let other = SaToken::new("team-a", "builder", now)
        .pod("p3", "u3")
        .sign(&key);
    for bad in [None, Some("nope")] {
        let (code, body) = review(&api, bad, &other, &["kstash"]).await;
        assert_eq!(code, 401);
        assert_eq!(
            (&body["kind"], &body["reason"], &body["code"]),
            (&json!("Status"), &json!("Unauthorized"), &json!(401))
        );
    }
    api.forbid_token_review(true);
    let (code, body) = review(&api, Some(&bearer), &other, &["kstash"]).await;
    assert_eq!(code, 403);
    assert_eq!(
        (&body["reason"], &body["code"]),
        (&json!("Forbidden"), &json!(403))
    );
    assert!(body["message"].as_str().unwrap().contains("tokenreviews"));
    api.forbid_token_review(false);
    let dir = tempfile::tempdir().unwrap();
    api.set_reviewer_token("rotated");
    let file = api.write_reviewer_token(dir.path());
    assert_eq!(std::fs::read_to_string(file).unwrap(), "rotated");
    let (code, body) = review(&api, Some("rotated"), &other, &["kstash"]).await;
    assert_eq!(
        (code, &body["status"]["authenticated"]),
        (201, &json!(true))
    );
    assert_eq!(api.hits(Route::TokenReview), 14);
    assert_eq!(api.hits(Route::Jwks), 0);
}

/// Steps: rotate the keys → the JWKS serves only the new key and
/// TokenReview refuses the old key's tokens → `require_bearer` guards
/// discovery and JWKS → `set_down` answers 503 everywhere, and recovers →
/// `close_connections` makes requests fail, and recovers → an unreachable
/// URL refuses → after drop nothing answers.
#[tokio::test]
async fn switches_rotate_take_down_and_stop() {
    let old = SigningKey::rsa("old");
    let new = SigningKey::ec("new");
    let api = FakeKubeApi::start(&[&old]).await;
    let bearer = api.reviewer_token();
    let now = unix_now();
    let old_jwt = SaToken::new("ns", "sa", now)
        .audiences(&[KUBE_ISSUER])
        .sign(&old);

    tracing::info!("--- step: rotation");
    let (_, body) = review(&api, Some(&bearer), &old_jwt, &[]).await;
    assert_eq!(
        body["status"]["authenticated"], true,
        "no audiences: the issuer"
    );
    api.set_keys(&[&new]);
    let served: Value = get(&api, JWKS_PATH).await.unwrap().json().await.unwrap();
    assert_eq!(served, Jwks::of(&[&new]));
    assert_eq!(api.jwks(), served);
    let (_, body) = review(&api, Some(&bearer), &old_jwt, &[]).await;
    assert!(body["status"]["error"].is_string(), "{body}");

    tracing::info!("--- step: require_bearer");
    api.require_bearer(true);
    for path in [DISCOVERY_PATH, JWKS_PATH] {
        assert_eq!(get(&api, path).await.unwrap().status(), 401);
        let with = api
            .client()
            .get(format!("{}{path}", api.base_url()))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(with.status(), 200);
    }
    api.require_bearer(false);

    tracing::info!("--- step: down answers 503");
    api.set_down(true);
    for path in [DISCOVERY_PATH, JWKS_PATH, "/api"] {
        let resp = get(&api, path).await.unwrap();
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["reason"], "ServiceUnavailable");
    }
    let (code, _) = review(&api, Some(&bearer), &old_jwt, &[]).await;
    assert_eq!(code, 503);
    api.set_down(false);
    assert_eq!(get(&api, DISCOVERY_PATH).await.unwrap().status(), 200);

    tracing::info!("--- step: closed connections");
    let client = api.client();
    let url = format!("{}{DISCOVERY_PATH}", api.base_url());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let before = api.hits(Route::Discovery);
    api.close_connections(true);
    assert!(
        client.get(&url).send().await.is_err(),
        "a pooled connection is cut"
    );
    assert!(
        api.client().get(&url).send().await.is_err(),
        "a new one too"
    );
    assert_eq!(api.hits(Route::Discovery), before);
    api.close_connections(false);
    assert_eq!(api.client().get(&url).send().await.unwrap().status(), 200);

    tracing::info!("--- step: slow answers");
    api.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(get(&api, DISCOVERY_PATH).await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    api.set_delay(Duration::ZERO);

    tracing::info!("--- step: unreachable, and stopped on drop");
    let unreachable = FakeKubeApi::unreachable_url();
    assert!(client
        .get(format!("{unreachable}{DISCOVERY_PATH}"))
        .send()
        .await
        .unwrap_err()
        .is_connect());
    api.reset_hits();
    assert_eq!(api.hits(Route::Discovery), 0);
    drop(api);
    let after = client.get(&url).send().await;
    assert!(after.is_err(), "nothing answers after drop");
}
