//! Lifecycle over REST: gatekeeper tokens, unseal progress, rotation, rekey,
//! access-key rotation, access-token lifetimes and CAS writes.

use std::time::{Duration, SystemTime};

use kstash::barrier::Barrier;
use kstash::keyspace::{self, KvRecord};
use kstash::secret::{hash_secret, SecretString};
use serde_json::{json, Value};

use crate::common::{assert_error, Http, TestNode};

// ----- helpers ---------------------------------------------------------------

/// `POST /v1/sys/init` with `body`; asserts 200.
async fn init_store(h: &Http, body: Value) -> Value {
    let (code, init) = h.post("/v1/sys/init", None, body).await;
    assert_eq!(code, 200, "{init}");
    init
}

/// The unseal keys of an init (or rekey) response.
fn keys_of(resp: &Value) -> Vec<Value> {
    resp["unseal_keys"].as_array().unwrap().clone()
}

/// The `i`th gatekeeper token of an init (or rekey) response.
fn token_of(resp: &Value, i: usize) -> String {
    resp["gatekeeper_tokens"][i].as_str().unwrap().to_string()
}

/// Give each key to `/v1/sys/unseal`; all must be accepted.
async fn unseal_with(h: &Http, keys: &[Value]) -> Value {
    let mut last = Value::Null;
    for k in keys {
        let (code, st) = h.post("/v1/sys/unseal", None, json!({ "key": k })).await;
        assert_eq!(code, 200, "{st}");
        last = st;
    }
    last
}

async fn status(h: &Http) -> Value {
    let (code, st) = h.get("/v1/sys/status", None).await;
    assert_eq!(code, 200, "{st}");
    st
}

/// The replacement gatekeeper token carried by a sys response.
fn replacement(body: &Value) -> String {
    let t = body["gatekeeper_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no replacement gatekeeper token in {body}"));
    assert!(t.starts_with("ksg_"), "{t}");
    t.to_string()
}

async fn put(h: &Http, token: &str, path: &str, value: &str) -> u64 {
    let (code, body) = h
        .put(
            &format!("/v1/kv/{path}"),
            Some(token),
            json!({ "value": value }),
        )
        .await;
    assert_eq!(code, 200, "put {path}: {body}");
    body["version"].as_u64().unwrap()
}

async fn read(h: &Http, token: &str, path: &str) -> String {
    let (code, body) = h.get(&format!("/v1/kv/{path}"), Some(token)).await;
    assert_eq!(code, 200, "get {path}: {body}");
    body["value"].as_str().unwrap().to_string()
}

/// The stored record of `kv/<ns>/<path>`, straight from the backend.
fn stored(n: &TestNode, ns: &str, path: &str) -> Vec<u8> {
    let key = keyspace::kv_key(ns, path);
    n.backend
        .dump()
        .into_iter()
        .find(|(k, _)| *k == key)
        .unwrap_or_else(|| panic!("no stored record for {ns}/{path}"))
        .1
}

/// The key term a stored secret was encrypted under: decoded exactly, and
/// cross-checked by finding `version 1 | term (BE)` in the raw bytes.
fn stored_term(n: &TestNode, ns: &str, path: &str) -> u32 {
    let raw = stored(n, ns, path);
    let record: KvRecord = keyspace::decode(&raw).unwrap();
    let term = Barrier::term_of(&record.ciphertext).expect("a barrier value header");
    let mut header = vec![1u8];
    header.extend_from_slice(&term.to_be_bytes());
    assert!(
        raw.windows(5).any(|w| w == header.as_slice()),
        "raw record of {path} holds the header {header:?}"
    );
    term
}

fn parse_time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

/// Number of stored access-token records.
fn access_token_records(n: &TestNode) -> usize {
    n.backend
        .dump()
        .iter()
        .filter(|(k, _)| k.starts_with(keyspace::ACCESS_TOKEN_PREFIX.as_bytes()))
        .count()
}

// ----- 1. gatekeeper tokens unseal ------------------------------------------

/// Steps: init 5/3 with 2 gatekeeper tokens (grace 2 s) → unseal with keys →
/// seal with token A → replacement A' → sealed → unseal with A again inside
/// the grace window → same A' → seal with A' → A'' → a sealed node answers
/// 503 `sealed` to kv, login, token lookup and policies, naming nothing →
/// after the grace window A and A' get 401 and the node stays sealed → A''
/// unseals → A is refused while unsealed too, node stays unsealed → the
/// unused token B still seals.
#[tokio::test]
async fn gatekeeper_token_unseal_and_grace() {
    let n = TestNode::start_with(|a| a.gatekeeper_grace = Some(Duration::from_secs(2))).await;
    let h = &n.http;

    tracing::info!("--- step: init 5/3 with 2 gatekeeper tokens, unseal with keys");
    let init = init_store(
        h,
        json!({"shares": 5, "threshold": 3, "gatekeeper_tokens": 2}),
    )
    .await;
    assert_eq!(init["gatekeeper_tokens"].as_array().unwrap().len(), 2);
    let (a, b) = (token_of(&init, 0), token_of(&init, 1));
    assert_ne!(a, b);
    let st = unseal_with(h, &keys_of(&init)[..3]).await;
    assert_eq!(st["sealed"], false);
    let admin = n
        .login(&init["access_key"], "team-hidden", &["admin"], None)
        .await;
    put(h, &admin, "hidden/path-x", "v").await;

    tracing::info!("--- step: seal with A → replacement A'");
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": a}))
        .await;
    assert_eq!(code, 200, "{body}");
    let a1 = replacement(&body);
    assert_ne!(a1, a);
    assert_ne!(a1, b);
    assert_eq!(status(h).await["sealed"], true);

    tracing::info!("--- step: A again inside the grace window unseals, same A'");
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"gatekeeper_token": a}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sealed"], false, "{body}");
    assert_eq!(
        replacement(&body),
        a1,
        "a repeat returns the same replacement"
    );
    assert_eq!(read(h, &admin, "hidden/path-x").await, "v");

    tracing::info!("--- step: seal with A' → A''");
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": a1}))
        .await;
    assert_eq!(code, 200, "{body}");
    let a2 = replacement(&body);
    assert!(a2 != a && a2 != a1 && a2 != b);
    assert_eq!(status(h).await["sealed"], true);

    tracing::info!("--- step: a sealed node answers 503 and names nothing");
    let login = json!({"access_key": init["access_key"], "namespace": "team-hidden", "policies": ["admin"]});
    let cases = [
        h.get("/v1/kv/hidden/path-x", Some(&admin)).await,
        h.get("/v1/kv/hidden/path-x", None).await,
        h.post("/v1/auth/access-key/login", None, login).await,
        h.get("/v1/auth/token/self", Some(&admin)).await,
        h.get("/v1/namespaces/default/policies", Some(&admin)).await,
        h.get("/v1/namespaces/team-hidden/policies", Some(&admin))
            .await,
    ];
    for (i, (code, body)) in cases.iter().enumerate() {
        assert_eq!(*code, 503, "case {i}: {body}");
        assert_error(body, "sealed");
        let text = body.to_string();
        for word in ["hidden", "path-x", "default", "team"] {
            assert!(!text.contains(word), "case {i} names {word:?}: {text}");
        }
    }

    tracing::info!("--- step: after the grace window A and A' are refused, node stays sealed");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for used in [&a, &a1] {
        let (code, body) = h
            .post("/v1/sys/unseal", None, json!({"gatekeeper_token": used}))
            .await;
        assert_eq!(code, 401, "{body}");
        assert_error(&body, "unauthorized");
        let st = status(h).await;
        assert_eq!(st["sealed"], true, "{st}");
    }

    tracing::info!("--- step: A'' unseals");
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"gatekeeper_token": a2}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sealed"], false, "{body}");
    let a3 = replacement(&body);
    assert_eq!(read(h, &admin, "hidden/path-x").await, "v");

    tracing::info!("--- step: A refused while unsealed, node stays unsealed");
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": a}))
        .await;
    assert_eq!(code, 401, "{body}");
    assert_error(&body, "unauthorized");
    assert_eq!(status(h).await["sealed"], false);

    tracing::info!("--- step: the unused token B still seals; A''' unseals");
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": b}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(h).await["sealed"], true);
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"gatekeeper_token": a3}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sealed"], false);

    n.server.shutdown().await.unwrap();
}

// ----- 2. unseal keys ------------------------------------------------------------

/// Flip one base64 character in the middle of `key` (it still decodes).
fn flip_char(key: &Value) -> String {
    let mut chars: Vec<char> = key.as_str().unwrap().chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// A key that decodes and carries a valid checksum, but whose share value
/// has one bit changed: only combining can notice.
fn forge_with_checksum(key: &Value) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(key.as_str().unwrap()).unwrap();
    assert_eq!(bytes.len(), 37, "x | y(32) | check(4)");
    bytes[5] ^= 0x01;
    let d = Sha256::digest(&bytes[..33]);
    bytes[33..].copy_from_slice(&d[..4]);
    b64.encode(bytes)
}

/// Steps: init 5/3 → 2 keys: progress 2, still sealed,
/// kv 503 → duplicate key 400, progress kept → flipped, non-base64 and
/// truncated keys 400, progress kept → reset clears progress → a forged key
/// with a valid checksum reaches the threshold, 400, progress reset → keys
/// of a second store reach the threshold, 400, progress reset, sealed →
/// 3 of our keys unseal.
#[tokio::test]
async fn unseal_keys_threshold_and_refusals() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = init_store(h, json!({"shares": 5, "threshold": 3})).await;
    let keys = keys_of(&init);

    tracing::info!("--- step: fewer than the threshold never unseals");
    let st = unseal_with(h, &keys[..2]).await;
    assert_eq!(
        (st["progress"].as_u64(), &st["sealed"]),
        (Some(2), &json!(true))
    );
    let (code, body) = h.get("/v1/kv/x", None).await;
    assert_eq!(code, 503, "{body}");
    assert_error(&body, "sealed");

    tracing::info!("--- step: a duplicated key is refused, progress kept");
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"key": keys[1]}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert_error(&body, "bad_request");
    let st = status(h).await;
    assert_eq!(
        (st["progress"].as_u64(), &st["sealed"]),
        (Some(2), &json!(true))
    );

    tracing::info!("--- step: corrupted keys are refused, node sealed");
    let not_base64 = format!("{}!", &keys[2].as_str().unwrap()[..20]);
    let truncated = keys[2].as_str().unwrap()[..40].to_string();
    for (what, bad, needle) in [
        ("flipped character", flip_char(&keys[2]), "checksum"),
        ("not base64", not_base64, "base64"),
        ("truncated", truncated, ""),
    ] {
        let (code, body) = h.post("/v1/sys/unseal", None, json!({"key": bad})).await;
        assert_eq!(code, 400, "{what}: {body}");
        assert_error(&body, "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{what}: {message}");
        assert!(
            !message.contains(&bad),
            "{what}: the key is echoed: {message}"
        );
        let st = status(h).await;
        assert_eq!(st["sealed"], true, "{what}");
        assert_eq!(st["progress"], 2, "{what}: progress kept");
    }

    tracing::info!("--- step: reset clears progress");
    let (code, body) = h.post("/v1/sys/unseal", None, json!({"reset": true})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["progress"], 0);
    assert_eq!(status(h).await["progress"], 0);

    tracing::info!("--- step: a forged key with a valid checksum fails at the threshold");
    unseal_with(h, &keys[..2]).await;
    let forged = forge_with_checksum(&keys[2]);
    let (code, body) = h.post("/v1/sys/unseal", None, json!({"key": forged})).await;
    assert_eq!(code, 400, "{body}");
    assert_error(&body, "bad_request");
    let st = status(h).await;
    assert_eq!(
        (st["progress"].as_u64(), &st["sealed"]),
        (Some(0), &json!(true))
    );

    tracing::info!("--- step: keys of another store reach the threshold and are refused");
    let other = TestNode::start().await;
    let other_init = init_store(&other.http, json!({"shares": 5, "threshold": 3})).await;
    let foreign = keys_of(&other_init);
    let st = unseal_with(h, &foreign[..2]).await;
    assert_eq!(st["progress"], 2);
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"key": foreign[2]}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert_error(&body, "bad_request");
    let st = status(h).await;
    assert_eq!(
        (st["progress"].as_u64(), &st["sealed"]),
        (Some(0), &json!(true))
    );
    let (code, _) = h.get("/v1/kv/x", None).await;
    assert_eq!(code, 503);

    tracing::info!("--- step: three of our keys unseal");
    let st = unseal_with(h, &keys[2..5]).await;
    assert_eq!(st["sealed"], false, "{st}");
    assert_eq!(st["progress"], 0);

    other.server.shutdown().await.unwrap();
    n.server.shutdown().await.unwrap();
}

/// Steps: unseal timeout 1 s → one key: progress 1 → 1.3 s later progress
/// is 0 → two more keys: progress 2, still sealed (the expired key does not
/// count) → a fourth key unseals.
#[tokio::test]
async fn unseal_progress_expires() {
    let n = TestNode::start_with(|a| a.unseal_timeout = Some(Duration::from_secs(1))).await;
    let h = &n.http;
    let init = init_store(h, json!({"shares": 5, "threshold": 3})).await;
    let keys = keys_of(&init);

    tracing::info!("--- step: one key, then wait out the timeout");
    let st = unseal_with(h, &keys[..1]).await;
    assert_eq!(st["progress"], 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(status(h).await["progress"], 0, "progress expired");

    tracing::info!("--- step: the expired key does not count");
    let st = unseal_with(h, &keys[1..3]).await;
    assert_eq!(
        (st["progress"].as_u64(), &st["sealed"]),
        (Some(2), &json!(true)),
        "{st}"
    );
    let st = unseal_with(h, &keys[3..4]).await;
    assert_eq!(st["sealed"], false, "{st}");
    assert_eq!(st["progress"], 0);

    n.server.shutdown().await.unwrap();
}

/// Steps: unseal timeout 2 s → key 1 → 1.2 s → key 2 → 1.2 s → key 3: each
/// key came less than the timeout after the previous one, so the progress
/// (kept "without a new key" for the timeout, per `Settings::unseal_timeout`)
/// is still there and the third key unseals.
#[tokio::test]
async fn unseal_progress_timeout_counts_from_the_last_key() {
    let n = TestNode::start_with(|a| a.unseal_timeout = Some(Duration::from_secs(2))).await;
    let h = &n.http;
    let init = init_store(h, json!({"shares": 5, "threshold": 3})).await;
    let keys = keys_of(&init);

    tracing::info!("--- step: three keys, 1.2 s apart");
    let st = unseal_with(h, &keys[..1]).await;
    assert_eq!(st["progress"], 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = unseal_with(h, &keys[1..2]).await;
    assert_eq!(st["progress"], 2, "1.2 s after the first key: {st}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let st = unseal_with(h, &keys[2..3]).await;
    assert_eq!(
        st["sealed"], false,
        "the third key came 1.2 s after the second (timeout 2 s): {st}"
    );

    n.server.shutdown().await.unwrap();
}

// ----- 3. rotation -----------------------------------------------------------

/// Steps: init 5/3, unseal → write a=X → rotate with a gatekeeper token:
/// term 2 and a replacement token → a still reads X → write b → the backend
/// holds a under term 1 and b under term 2 → rotate with 3 unseal keys:
/// term 3 → rotation with an access token, a gatekeeper token that is not
/// one, no auth, or too few keys is refused (400/401) and changes nothing →
/// seal, unseal, every value reads back.
#[tokio::test]
async fn rotate_adds_a_term() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = n.init_unsealed(5, 3).await;
    let keys = keys_of(&init);
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    assert_eq!(status(h).await["key_term"], 1);

    tracing::info!("--- step: write a, rotate with a gatekeeper token");
    put(h, &admin, "a", "X").await;
    let t = token_of(&init, 0);
    let (code, body) = h
        .post("/v1/sys/rotate", None, json!({"gatekeeper_token": t}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["key_term"], 2, "{body}");
    let t1 = replacement(&body);
    assert_ne!(t1, t);
    assert_eq!(status(h).await["key_term"], 2);

    tracing::info!("--- step: a still reads; b is written under term 2");
    assert_eq!(read(h, &admin, "a").await, "X");
    put(h, &admin, "b", "Y").await;
    assert_eq!(stored_term(&n, "team-a", "a"), 1);
    assert_eq!(stored_term(&n, "team-a", "b"), 2);

    tracing::info!("--- step: rotate with unseal keys");
    let (code, body) = h
        .post("/v1/sys/rotate", None, json!({"keys": keys[..3]}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["key_term"], 3, "{body}");
    assert!(body.get("gatekeeper_token").is_none(), "{body}");

    tracing::info!("--- step: rotation without gatekeeper proof is refused");
    let before = n.backend.dump();
    let refusals = [
        (
            "access token as bearer",
            h.post("/v1/sys/rotate", Some(&admin), json!({})).await,
            400,
        ),
        (
            "access token as gatekeeper token",
            h.post("/v1/sys/rotate", None, json!({"gatekeeper_token": admin}))
                .await,
            401,
        ),
        (
            "no body",
            h.send(
                reqwest::Method::POST,
                "/v1/sys/rotate",
                None,
                Some(String::new()),
            )
            .await,
            400,
        ),
        (
            "no Content-Type",
            h.send(reqwest::Method::POST, "/v1/sys/rotate", None, None)
                .await,
            415,
        ),
        (
            "two keys",
            h.post("/v1/sys/rotate", None, json!({"keys": keys[..2]}))
                .await,
            400,
        ),
        (
            "token and keys",
            h.post(
                "/v1/sys/rotate",
                None,
                json!({"gatekeeper_token": t1, "keys": keys[..3]}),
            )
            .await,
            400,
        ),
    ];
    for (what, (code, body), want) in refusals {
        assert_eq!(code, want, "{what}: {body}");
        assert_error(
            &body,
            match want {
                401 => "unauthorized",
                415 => "unsupported_media_type",
                _ => "bad_request",
            },
        );
    }
    assert_eq!(status(h).await["key_term"], 3);
    assert!(
        n.backend.dump() == before,
        "refused rotations change nothing"
    );

    tracing::info!("--- step: write c under term 3; seal, unseal, all read back");
    put(h, &admin, "c", "Z").await;
    assert_eq!(stored_term(&n, "team-a", "c"), 3);
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": t1}))
        .await;
    assert_eq!(code, 200, "{body}");
    unseal_with(h, &keys[2..5]).await;
    assert_eq!(status(h).await["key_term"], 3);
    for (p, v) in [("a", "X"), ("b", "Y"), ("c", "Z")] {
        assert_eq!(read(h, &admin, p).await, v);
    }

    n.server.shutdown().await.unwrap();
}

/// Steps: encryption limit 3 → write 7 values → key term is 3 and no term
/// encrypted more than 3 of them → all 7 read back → seal, unseal with the
/// key, all 7 still read back.
#[tokio::test]
async fn encryption_limit_forces_rotation() {
    let n = TestNode::start_with(|a| a.encryption_limit = Some(3)).await;
    let h = &n.http;
    let init = n.init_unsealed(1, 1).await;
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;

    tracing::info!("--- step: write 7 values");
    for i in 0..7 {
        assert_eq!(put(h, &admin, &format!("k{i}"), &format!("v{i}")).await, 1);
    }

    tracing::info!("--- step: terms rotated on their own");
    let term = status(h).await["key_term"].as_u64().unwrap();
    assert!(term >= 3, "7 writes at 3 per term need 3 terms, got {term}");
    let mut per_term = std::collections::BTreeMap::new();
    for i in 0..7 {
        *per_term
            .entry(stored_term(&n, "team-a", &format!("k{i}")))
            .or_insert(0) += 1;
    }
    assert!(
        per_term.values().all(|&c| c <= 3),
        "no term encrypts more than its limit: {per_term:?}"
    );
    assert_eq!(term, 3, "{per_term:?}");

    tracing::info!("--- step: all 7 read back, also after seal and unseal");
    for i in 0..7 {
        assert_eq!(read(h, &admin, &format!("k{i}")).await, format!("v{i}"));
    }
    let keys = keys_of(&init);
    let (code, body) = h.post("/v1/sys/seal", None, json!({"keys": keys})).await;
    assert_eq!(code, 200, "{body}");
    unseal_with(h, &keys).await;
    for i in 0..7 {
        assert_eq!(read(h, &admin, &format!("k{i}")).await, format!("v{i}"));
    }

    n.server.shutdown().await.unwrap();
}

// ----- 5. rekey ------------------------------------------------------------------

/// Steps: init 5/3 with 2 gatekeeper tokens, unseal, write a value → use
/// token A once (A' replaces it; A is in its grace window) → rekey with 2
/// keys: 400, nothing changes → rekey with 3 keys to 3/2: new keys and a new
/// gatekeeper token G → A, A' and unused B are all refused (401) → data
/// reads → seal with G → old keys fail to unseal (400) → 2 new keys unseal →
/// data reads, writes work → G' seals and G'' unseals → old keys cannot
/// mint gatekeeper tokens.
#[tokio::test]
async fn rekey_replaces_keys_and_tokens() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = init_store(
        h,
        json!({"shares": 5, "threshold": 3, "gatekeeper_tokens": 2}),
    )
    .await;
    let old = keys_of(&init);
    unseal_with(h, &old[..3]).await;
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    put(h, &admin, "before", "v1").await;

    tracing::info!("--- step: use token A once; it is in its grace window");
    let (a, b) = (token_of(&init, 0), token_of(&init, 1));
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/renew",
            None,
            json!({"gatekeeper_token": a}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let a1 = replacement(&body);

    tracing::info!("--- step: rekey with fewer than the threshold changes nothing");
    let before = n.backend.dump();
    let (code, body) = h
        .post(
            "/v1/sys/rekey",
            None,
            json!({"keys": old[..2], "shares": 3, "threshold": 2}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_error(&body, "bad_request");
    assert!(
        n.backend.dump() == before,
        "a refused rekey changes nothing"
    );
    let st = status(h).await;
    assert_eq!(
        (st["shares"].as_u64(), st["threshold"].as_u64()),
        (Some(5), Some(3))
    );

    tracing::info!("--- step: rekey to 3/2");
    let (code, rekey) = h
        .post(
            "/v1/sys/rekey",
            None,
            json!({"keys": old[1..4], "shares": 3, "threshold": 2}),
        )
        .await;
    assert_eq!(code, 200, "{rekey}");
    let new = keys_of(&rekey);
    assert_eq!(new.len(), 3);
    assert!(new.iter().all(|k| !old.contains(k)));
    assert_eq!(rekey["gatekeeper_tokens"].as_array().unwrap().len(), 1);
    let g = token_of(&rekey, 0);
    let st = status(h).await;
    assert_eq!(
        (
            st["shares"].as_u64(),
            st["threshold"].as_u64(),
            &st["sealed"]
        ),
        (Some(3), Some(2), &json!(false))
    );

    tracing::info!("--- step: every old gatekeeper token is refused, even inside its grace");
    for (name, t) in [("A (in grace)", &a), ("A'", &a1), ("B (unused)", &b)] {
        let (code, body) = h
            .post("/v1/sys/seal", None, json!({"gatekeeper_token": t}))
            .await;
        assert_eq!(code, 401, "{name}: {body}");
        assert_error(&body, "unauthorized");
        assert_eq!(status(h).await["sealed"], false, "{name}");
    }
    assert_eq!(read(h, &admin, "before").await, "v1");

    tracing::info!("--- step: seal with G; old keys fail to unseal");
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": g}))
        .await;
    assert_eq!(code, 200, "{body}");
    let g1 = replacement(&body);
    let (code, body) = h.post("/v1/sys/unseal", None, json!({"key": old[0]})).await;
    assert_eq!(
        code, 200,
        "below the threshold a key cannot be judged: {body}"
    );
    let (code, body) = h.post("/v1/sys/unseal", None, json!({"key": old[1]})).await;
    assert_eq!(code, 400, "{body}");
    assert_error(&body, "bad_request");
    let st = status(h).await;
    assert_eq!(
        (st["progress"].as_u64(), &st["sealed"]),
        (Some(0), &json!(true))
    );

    tracing::info!("--- step: two new keys unseal; data reads and writes");
    let st = unseal_with(h, &new[1..3]).await;
    assert_eq!(st["sealed"], false, "{st}");
    assert_eq!(read(h, &admin, "before").await, "v1");
    put(h, &admin, "after", "v2").await;

    tracing::info!("--- step: the new gatekeeper token line works");
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": g1}))
        .await;
    assert_eq!(code, 200, "{body}");
    let g2 = replacement(&body);
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"gatekeeper_token": g2}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sealed"], false);
    assert_eq!(read(h, &admin, "after").await, "v2");

    tracing::info!("--- step: old keys cannot mint gatekeeper tokens");
    let (code, body) = h
        .post("/v1/sys/gatekeeper-tokens", None, json!({"keys": old[..3]}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert_error(&body, "bad_request");

    n.server.shutdown().await.unwrap();
}

// ----- 6. gatekeeper token management -------------------------------------

/// Steps: init 5/3, unseal → mint 2 tokens with keys → list shows ids, never
/// tokens → revoke M1 by presenting it (204; again 404) → seal; M1 cannot
/// unseal (401); T0 can → revoke M2 by id + keys → M2 refused; list shows
/// neither → malformed revocations 400 → renew T0' → replacement R seals →
/// minting with too few keys or a bad count 400.
#[tokio::test]
async fn gatekeeper_tokens_mint_list_revoke_renew() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = n.init_unsealed(5, 3).await;
    let keys = keys_of(&init)[..3].to_vec();
    let t0 = token_of(&init, 0);

    tracing::info!("--- step: mint 2 with unseal keys");
    let (code, minted) = h
        .post(
            "/v1/sys/gatekeeper-tokens",
            None,
            json!({"keys": keys, "count": 2}),
        )
        .await;
    assert_eq!(code, 200, "{minted}");
    let (m1, m2) = (token_of(&minted, 0), token_of(&minted, 1));
    let ids: Vec<String> = minted["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids
        .iter()
        .all(|id| id.len() == 64 && hex::decode(id).is_ok()));

    tracing::info!("--- step: list shows ids, never tokens");
    let (code, list) = h
        .post(
            "/v1/sys/gatekeeper-tokens/list",
            None,
            json!({"keys": keys}),
        )
        .await;
    assert_eq!(code, 200, "{list}");
    let listed: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{list}");
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())), "{list}");
    let text = list.to_string();
    for t in [&t0, &m1, &m2] {
        assert!(!text.contains(&t[4..]), "the list shows a token: {text}");
    }
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/list",
            None,
            json!({"keys": keys[..2]}),
        )
        .await;
    assert_eq!(code, 400, "listing needs the threshold: {body}");

    tracing::info!("--- step: revoke M1 by presenting it");
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/revoke",
            None,
            json!({"gatekeeper_token": m1}),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    // A presented token proves nothing once it is gone: revoking it again
    // answers as the first time (and proposes nothing; see t44).
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/revoke",
            None,
            json!({"gatekeeper_token": m1}),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/revoke",
            None,
            json!({"id": ids[0], "keys": keys}),
        )
        .await;
    assert_eq!(
        code, 404,
        "by id with keys, an absent token is named: {body}"
    );
    assert_error(&body, "not_found");

    tracing::info!("--- step: M1 no longer unseals; T0 does");
    let (code, body) = h.post("/v1/sys/seal", None, json!({"keys": keys})).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"gatekeeper_token": m1}))
        .await;
    assert_eq!(code, 401, "{body}");
    assert_error(&body, "unauthorized");
    assert_eq!(status(h).await["sealed"], true);
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"gatekeeper_token": t0}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sealed"], false);
    let t0_1 = replacement(&body);

    tracing::info!("--- step: revoke M2 by id with keys");
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/revoke",
            None,
            json!({"id": ids[1], "keys": keys}),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/renew",
            None,
            json!({"gatekeeper_token": m2}),
        )
        .await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": m2}))
        .await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(status(h).await["sealed"], false);
    let (_, list) = h
        .post(
            "/v1/sys/gatekeeper-tokens/list",
            None,
            json!({"keys": keys}),
        )
        .await;
    let text = list.to_string();
    assert!(!text.contains(&ids[0]) && !text.contains(&ids[1]), "{text}");

    tracing::info!("--- step: malformed revocations are refused");
    let before = n.backend.dump();
    for (what, body) in [
        ("id without keys", json!({"id": ids[0]})),
        (
            "id with too few keys",
            json!({"id": ids[0], "keys": keys[..2]}),
        ),
        ("id not hex", json!({"id": "zz", "keys": keys})),
        (
            "token and id",
            json!({"gatekeeper_token": t0_1, "id": ids[0]}),
        ),
        ("nothing", json!({})),
    ] {
        let (code, resp) = h.post("/v1/sys/gatekeeper-tokens/revoke", None, body).await;
        assert_eq!(code, 400, "{what}: {resp}");
        assert_error(&resp, "bad_request");
    }
    assert!(n.backend.dump() == before);

    tracing::info!("--- step: renew returns a replacement that works");
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/renew",
            None,
            json!({"gatekeeper_token": t0_1}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let r = replacement(&body);
    assert_ne!(r, t0_1);
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": r}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(h).await["sealed"], true);
    unseal_with(h, &keys).await;

    tracing::info!("--- step: concurrent uses of one token share one replacement");
    let (code, minted) = h
        .post("/v1/sys/gatekeeper-tokens", None, json!({"keys": keys}))
        .await;
    assert_eq!(code, 200, "{minted}");
    let c = token_of(&minted, 0);
    let renew = |t: String| async move {
        h.post(
            "/v1/sys/gatekeeper-tokens/renew",
            None,
            json!({ "gatekeeper_token": t }),
        )
        .await
    };
    let (r1, r2, r3, r4) = tokio::join!(
        renew(c.clone()),
        renew(c.clone()),
        renew(c.clone()),
        renew(c.clone())
    );
    let results = [r1, r2, r3, r4];
    let mut reps: Vec<String> = results
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            replacement(body)
        })
        .collect();
    reps.dedup();
    assert_eq!(
        reps.len(),
        1,
        "one replacement for every concurrent use: {reps:?}"
    );
    let (_, list) = h
        .post(
            "/v1/sys/gatekeeper-tokens/list",
            None,
            json!({"keys": keys}),
        )
        .await;
    let used = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.get("used_at").is_some())
        .count();
    let total = list["tokens"].as_array().unwrap().len();
    assert_eq!(
        total - used,
        2,
        "unused: R' and the one replacement of C: {list}"
    );

    tracing::info!("--- step: minting needs the threshold and a sane count");
    for (what, body) in [
        ("two keys", json!({"keys": keys[..2]})),
        ("count 0", json!({"keys": keys, "count": 0})),
        ("count 17", json!({"keys": keys, "count": 17})),
    ] {
        let (code, resp) = h.post("/v1/sys/gatekeeper-tokens", None, body).await;
        assert_eq!(code, 400, "{what}: {resp}");
        assert_error(&resp, "bad_request");
    }

    n.server.shutdown().await.unwrap();
}

// ----- 7. access key rotation ----------------------------------------------

/// Steps: init, unseal, log in with the access key, write → rotate the access
/// key with a gatekeeper token → the old key gets 401, the new one logs in →
/// the token minted before still reads → rotate again with unseal keys → the
/// second key is refused too.
#[tokio::test]
async fn access_key_rotation() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = n.init_unsealed(5, 3).await;
    let ak0 = init["access_key"].clone();
    let before = n.login(&ak0, "team-a", &["admin"], None).await;
    put(h, &before, "x", "1").await;

    tracing::info!("--- step: rotate with a gatekeeper token");
    let (code, body) = h
        .post(
            "/v1/sys/access-key/rotate",
            None,
            json!({"gatekeeper_token": token_of(&init, 0)}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let ak1 = body["access_key"].clone();
    assert!(ak1.as_str().unwrap().starts_with("ksa_"), "{body}");
    assert_ne!(ak1, ak0);
    replacement(&body);

    tracing::info!("--- step: old key 401, new key logs in, old tokens live");
    let login =
        |ak: &Value| json!({"access_key": ak, "namespace": "team-a", "policies": ["admin"]});
    let (code, body) = h.post("/v1/auth/access-key/login", None, login(&ak0)).await;
    assert_eq!(code, 401, "{body}");
    assert_error(&body, "unauthorized");
    let after = n.login(&ak1, "team-a", &["admin"], None).await;
    assert_eq!(read(h, &after, "x").await, "1");
    assert_eq!(read(h, &before, "x").await, "1");

    tracing::info!("--- step: rotate with unseal keys");
    let (code, body) = h
        .post(
            "/v1/sys/access-key/rotate",
            None,
            json!({"keys": keys_of(&init)[..3]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let ak2 = body["access_key"].clone();
    assert!(ak2 != ak0 && ak2 != ak1);
    let (code, _) = h.post("/v1/auth/access-key/login", None, login(&ak1)).await;
    assert_eq!(code, 401);
    n.login(&ak2, "team-a", &[], None).await;

    tracing::info!("--- step: an access token cannot rotate the access key");
    let (code, body) = h
        .post("/v1/sys/access-key/rotate", Some(&after), json!({}))
        .await;
    assert_eq!(code, 400, "{body}");
    n.login(&ak2, "team-a", &[], None).await;

    n.server.shutdown().await.unwrap();
}

// ----- 8. access tokens ------------------------------------------------------

/// Steps: max token TTL 1 h, sweep every 200 ms → login ttl 2s → renew by 10s:
/// later expiry → lookup shows namespace, policies, ttl → renew by 2h: 400,
/// expiry unchanged → renew by 1h is capped at max_expires_at → login ttl 2h
/// or 0s: 400 → a 1 s token expires (401) and the sweeper removes its record.
#[tokio::test]
async fn access_token_lifecycle() {
    let n = TestNode::start_with(|a| {
        a.max_token_ttl = Some(Duration::from_secs(3600));
        a.sweep_interval = Some(Duration::from_millis(200));
    })
    .await;
    let h = &n.http;
    let init = n.init_unsealed(3, 2).await;
    let ak = &init["access_key"];

    tracing::info!("--- step: login ttl 2s");
    let (code, login) = h
        .post(
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": ak, "namespace": "team-a", "policies": ["admin", "app-ro"], "ttl": "2s"}),
        )
        .await;
    assert_eq!(code, 200, "{login}");
    let tok = login["token"].as_str().unwrap().to_string();
    let e1 = parse_time(&login["expires_at"]);
    assert!(login["warnings"].to_string().contains("app-ro"), "{login}");

    tracing::info!("--- step: renew by 10s");
    let (code, info) = h
        .post(
            "/v1/auth/token/renew",
            Some(&tok),
            json!({"increment": "10s"}),
        )
        .await;
    assert_eq!(code, 200, "{info}");
    let e2 = parse_time(&info["expires_at"]);
    assert!(
        e2.duration_since(e1).unwrap() >= Duration::from_secs(7),
        "{login} → {info}"
    );

    tracing::info!("--- step: lookup self");
    let (code, me) = h.get("/v1/auth/token/self", Some(&tok)).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["namespace"], "team-a");
    assert_eq!(me["policies"], json!(["admin", "app-ro"]));
    let ttl = me["ttl"].as_u64().unwrap();
    assert!((8..=10).contains(&ttl), "{me}");
    assert_eq!(me["expires_at"], info["expires_at"]);
    let created = parse_time(&me["created_at"]);
    let max = parse_time(&me["max_expires_at"]);
    assert_eq!(max.duration_since(created).unwrap().as_secs(), 3600, "{me}");
    assert!(me.get("token").is_none(), "{me}");

    tracing::info!("--- step: renew past the maximum TTL is refused");
    let (code, body) = h
        .post(
            "/v1/auth/token/renew",
            Some(&tok),
            json!({"increment": "2h"}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_error(&body, "bad_request");
    let (_, me2) = h.get("/v1/auth/token/self", Some(&tok)).await;
    assert_eq!(me2["expires_at"], me["expires_at"], "unchanged");

    tracing::info!("--- step: a renewal is capped at max_expires_at");
    let (code, capped) = h
        .post(
            "/v1/auth/token/renew",
            Some(&tok),
            json!({"increment": "1h"}),
        )
        .await;
    assert_eq!(code, 200, "{capped}");
    assert!(
        parse_time(&capped["expires_at"]) <= parse_time(&capped["max_expires_at"]),
        "{capped}"
    );
    assert_eq!(capped["expires_at"], capped["max_expires_at"], "{capped}");

    tracing::info!("--- step: login ttl above the maximum or below 1s");
    for ttl in ["2h", "0s", "forever"] {
        let (code, body) = h
            .post(
                "/v1/auth/access-key/login",
                None,
                json!({"access_key": ak, "namespace": "team-a", "ttl": ttl}),
            )
            .await;
        assert_eq!(code, 400, "ttl {ttl}: {body}");
        assert_error(&body, "bad_request");
    }

    tracing::info!("--- step: an expired token is swept");
    let count = access_token_records(&n);
    let short = n.login(ak, "team-a", &["admin"], Some("1s")).await;
    let key = keyspace::access_token_key(&hash_secret(&SecretString::new(short.clone())));
    assert!(n.backend.dump().iter().any(|(k, _)| *k == key));
    assert_eq!(access_token_records(&n), count + 1);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (code, body) = h.get("/v1/auth/token/self", Some(&short)).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = h
        .post("/v1/auth/token/renew", Some(&short), json!({}))
        .await;
    assert_eq!(code, 401, "an expired token cannot be renewed: {body}");
    assert!(
        !n.backend.dump().iter().any(|(k, _)| *k == key),
        "the sweeper removed the expired record"
    );
    assert_eq!(access_token_records(&n), count);
    let (code, _) = h.get("/v1/auth/token/self", Some(&tok)).await;
    assert_eq!(code, 200, "the live token is kept");

    n.server.shutdown().await.unwrap();
}

// ----- 9. CAS and list ------------------------------------------------------------

/// Steps: cas 0 on a new key → v1 → cas 0 again 409 → cas 1 → v2 → cas 5 409,
/// value unchanged → plain put v3 → delete, get 404, delete again 404 → cas 0
/// recreates v1 → list app/ shows one level with folders ending in '/' → a
/// token without `list` gets 403, one with it lists.
#[tokio::test]
async fn cas_delete_and_list() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = n.init_unsealed(3, 2).await;
    let ak = &init["access_key"];
    let admin = n.login(ak, "team-a", &["admin"], None).await;
    let put_cas = |value: &str, cas: u64| json!({"value": value, "cas": cas});

    tracing::info!("--- step: cas 0 creates, cas 0 again conflicts");
    let (code, body) = h.put("/v1/kv/app/db", Some(&admin), put_cas("v1", 0)).await;
    assert_eq!((code, &body["version"]), (200, &json!(1)), "{body}");
    let (code, body) = h
        .put("/v1/kv/app/db", Some(&admin), put_cas("nope", 0))
        .await;
    assert_eq!(code, 409, "{body}");
    assert_error(&body, "conflict");

    tracing::info!("--- step: cas 1 → v2; cas 5 conflicts, value unchanged");
    let (code, body) = h.put("/v1/kv/app/db", Some(&admin), put_cas("v2", 1)).await;
    assert_eq!((code, &body["version"]), (200, &json!(2)), "{body}");
    let (code, body) = h
        .put("/v1/kv/app/db", Some(&admin), put_cas("nope", 5))
        .await;
    assert_eq!(code, 409, "{body}");
    assert_error(&body, "conflict");
    let (code, body) = h.get("/v1/kv/app/db", Some(&admin)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["value"], &body["version"]),
        (&json!("v2"), &json!(2))
    );
    assert_eq!(put(h, &admin, "app/db", "v3").await, 3);

    tracing::info!("--- step: delete, then get 404");
    let (code, body) = h.delete("/v1/kv/app/db", Some(&admin)).await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = h.get("/v1/kv/app/db", Some(&admin)).await;
    assert_eq!(code, 404, "{body}");
    assert_error(&body, "not_found");
    let (code, body) = h.delete("/v1/kv/app/db", Some(&admin)).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = h
        .put("/v1/kv/app/db", Some(&admin), put_cas("v1 again", 0))
        .await;
    assert_eq!((code, &body["version"]), (200, &json!(1)), "{body}");

    tracing::info!("--- step: list one level");
    for p in [
        "app/cfg/x",
        "app/cfg/y",
        "app/z/deep/w",
        "app-other",
        "other/q",
    ] {
        put(h, &admin, p, "v").await;
    }
    for (prefix, want) in [
        ("app/", json!(["cfg/", "db", "z/"])),
        ("app", json!(["cfg/", "db", "z/"])),
        ("app/cfg/", json!(["x", "y"])),
        ("", json!(["app-other", "app/", "other/"])),
    ] {
        let (code, body) = h
            .get(&format!("/v1/kv/{prefix}?list=true"), Some(&admin))
            .await;
        assert_eq!(code, 200, "{prefix}: {body}");
        assert_eq!(body["keys"], want, "{prefix}");
    }
    let (code, body) = h.get("/v1/kv/nothing/?list=true", Some(&admin)).await;
    assert_eq!(code, 404, "{body}");

    tracing::info!("--- step: list needs the list capability");
    let rw = json!({"rules": [{"path": "app/*", "capabilities": ["read", "create", "update"]}]});
    let (code, body) = h
        .put("/v1/namespaces/team-a/policies/app-rw", Some(&admin), rw)
        .await;
    assert_eq!(code, 204, "{body}");
    let ls = json!({"rules": [{"path": "app/*", "capabilities": ["list"]}]});
    let (code, body) = h
        .put("/v1/namespaces/team-a/policies/app-ls", Some(&admin), ls)
        .await;
    assert_eq!(code, 204, "{body}");
    let app = n.login(ak, "team-a", &["app-rw"], None).await;
    assert_eq!(read(h, &app, "app/cfg/x").await, "v");
    let (code, body) = h.get("/v1/kv/app/?list=true", Some(&app)).await;
    assert_eq!(code, 403, "{body}");
    assert_error(&body, "forbidden");
    let lister = n.login(ak, "team-a", &["app-rw", "app-ls"], None).await;
    let (code, body) = h.get("/v1/kv/app/?list=true", Some(&lister)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["keys"], json!(["cfg/", "db", "z/"]));

    n.server.shutdown().await.unwrap();
}
