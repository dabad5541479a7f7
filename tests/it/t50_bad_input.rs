//! Bad input gets a 4xx with `{"error": {"code", "message"}}` and changes
//! nothing: the backend is byte-identical before and after every refusal.

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, TestNode};

/// A node with a 1 KiB value limit, initialised 3/2 and unsealed, with an
/// admin token for `team-a`.
async fn node() -> (TestNode, Value, String) {
    let n = TestNode::start_with(|a| a.max_value_bytes = Some(1024)).await;
    let init = n.init_unsealed(3, 2).await;
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    (n, init, admin)
}

/// Send a request that must be refused with `status`/`code`; assert the
/// error shape and that the backend did not change. Returns the message.
async fn refused(
    n: &TestNode,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    status: u16,
    code: &str,
) -> String {
    let before = n.backend.dump();
    let (got, resp) = n.http.send(method.clone(), path, token, body).await;
    let what = format!("{method} {}", &path[..path.len().min(80)]);
    assert_eq!(got, status, "{what}: {resp}");
    assert_error(&resp, code);
    let after = n.backend.dump();
    assert!(
        after == before,
        "{what} was refused but changed the backend: {:?}",
        changed_keys(&before, &after)
    );
    resp["error"]["message"].as_str().unwrap().to_string()
}

/// The storage keys that differ between two dumps (added, removed or
/// rewritten), as text.
fn changed_keys(before: &[(Vec<u8>, Vec<u8>)], after: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    let a: std::collections::BTreeMap<_, _> = before.iter().cloned().collect();
    let b: std::collections::BTreeMap<_, _> = after.iter().cloned().collect();
    a.keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

fn js(v: Value) -> Option<String> {
    Some(v.to_string())
}

/// Steps: value of 1025 bytes (text and base64) → 413 → a body far over the
/// limit → 413 → 1024 bytes are accepted → path of 1025 bytes and of 33
/// segments → 400 (put and get) → 1024 bytes and 32 segments are accepted.
#[tokio::test]
async fn oversized_values_and_paths() {
    let (n, _init, admin) = node().await;
    let t = Some(admin.as_str());

    tracing::info!("--- step: values over the limit");
    let m = refused(
        &n,
        Method::PUT,
        "/v1/kv/big",
        t,
        js(json!({"value": "x".repeat(1025)})),
        413,
        "too_large",
    )
    .await;
    assert!(m.contains("1024"), "{m}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1025]);
    refused(
        &n,
        Method::PUT,
        "/v1/kv/big",
        t,
        js(json!({ "value_base64": b64 })),
        413,
        "too_large",
    )
    .await;
    refused(
        &n,
        Method::PUT,
        "/v1/kv/big",
        t,
        js(json!({"value": "x".repeat(300 * 1024)})),
        413,
        "too_large",
    )
    .await;

    tracing::info!("--- step: exactly the limit is accepted");
    let (code, body) = n
        .http
        .put("/v1/kv/big", t, json!({"value": "x".repeat(1024)}))
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step: paths over the limits");
    let long = "p".repeat(1025);
    let deep = vec!["s"; 33].join("/");
    for p in [&long, &deep] {
        let path = format!("/v1/kv/{p}");
        let m = refused(
            &n,
            Method::PUT,
            &path,
            t,
            js(json!({"value": "v"})),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains("limit"), "{m}");
        refused(&n, Method::GET, &path, t, None, 400, "bad_request").await;
        refused(&n, Method::DELETE, &path, t, None, 400, "bad_request").await;
    }

    tracing::info!("--- step: paths at the limits are accepted");
    for p in ["p".repeat(1024), vec!["s"; 32].join("/")] {
        let (code, body) = n
            .http
            .put(&format!("/v1/kv/{p}"), t, json!({"value": "v"}))
            .await;
        assert_eq!(code, 200, "{body}");
    }

    n.server.shutdown().await.unwrap();
}

/// Steps: malformed JSON, a non-object and a wrong type → 400 → unknown
/// fields in kv put, login, init (on an initialised and a fresh node),
/// unseal and policy rules → 400 naming the field.
#[tokio::test]
async fn malformed_and_unknown_json() {
    let (n, init, admin) = node().await;
    let t = Some(admin.as_str());

    tracing::info!("--- step: malformed JSON");
    for body in [r#"{"value": "#, "[1]", r#"{"value": 5}"#, "not json"] {
        let m = refused(
            &n,
            Method::PUT,
            "/v1/kv/x",
            t,
            Some(body.into()),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains("JSON"), "{body}: {m}");
    }
    refused(
        &n,
        Method::POST,
        "/v1/auth/access-key/login",
        None,
        Some("{".into()),
        400,
        "bad_request",
    )
    .await;

    tracing::info!("--- step: unknown fields are named");
    let policy_rule =
        json!({"rules": [{"path": "app/*", "capabilities": ["read"], "colour": "red"}]});
    let policy_top = json!({"rules": [{"path": "app/*", "capabilities": ["read"]}], "colour": 1});
    let cases = [
        (
            Method::PUT,
            "/v1/kv/x",
            t,
            json!({"value": "v", "colour": "red"}),
        ),
        (
            Method::POST,
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": init["access_key"], "namespace": "team-a", "colour": 1}),
        ),
        (
            Method::POST,
            "/v1/sys/init",
            None,
            json!({"shares": 3, "threshold": 2, "colour": 1}),
        ),
        (
            Method::POST,
            "/v1/sys/unseal",
            None,
            json!({"reset": true, "colour": 1}),
        ),
        (
            Method::PUT,
            "/v1/namespaces/team-a/policies/p",
            t,
            policy_rule,
        ),
        (
            Method::PUT,
            "/v1/namespaces/team-a/policies/p",
            t,
            policy_top,
        ),
    ];
    for (method, path, token, body) in cases {
        let m = refused(&n, method, path, token, js(body), 400, "bad_request").await;
        assert!(m.contains("colour"), "{path}: {m}");
    }

    tracing::info!("--- step: init with an unknown field on a fresh node creates nothing");
    let fresh = TestNode::start().await;
    let m = refused(
        &fresh,
        Method::POST,
        "/v1/sys/init",
        None,
        js(json!({"shares": 3, "threshold": 2, "colour": 1})),
        400,
        "bad_request",
    )
    .await;
    assert!(m.contains("colour"), "{m}");
    assert!(
        fresh
            .backend
            .dump()
            .iter()
            .all(|(k, _)| k.starts_with(b"raft/")),
        "a refused init stores nothing but Raft bookkeeping"
    );

    fresh.server.shutdown().await.unwrap();
    n.server.shutdown().await.unwrap();
}

/// Steps: invalid namespaces in login and in policy URLs → 400 → unknown
/// capability `fly` → 400 naming it → invalid policy names (URL and login)
/// → 400 → PUT/DELETE of the built-in `admin` → 400 → wrong CAS → 409.
#[tokio::test]
async fn invalid_names_policies_and_cas() {
    let (n, init, admin) = node().await;
    let t = Some(admin.as_str());
    let ak = &init["access_key"];
    let rule = json!({"rules": [{"path": "app/*", "capabilities": ["read"]}]});

    tracing::info!("--- step: invalid namespaces");
    let long = "a".repeat(64);
    for ns in ["Team_A", "-a", "a-", long.as_str(), "", "team a", "team/a"] {
        let m = refused(
            &n,
            Method::POST,
            "/v1/auth/access-key/login",
            None,
            js(json!({"access_key": ak, "namespace": ns})),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains("namespace"), "{ns:?}: {m}");
    }
    for ns in ["Team_A", "-a", long.as_str()] {
        refused(
            &n,
            Method::GET,
            &format!("/v1/namespaces/{ns}/policies"),
            t,
            None,
            400,
            "bad_request",
        )
        .await;
        refused(
            &n,
            Method::PUT,
            &format!("/v1/namespaces/{ns}/policies/p"),
            t,
            js(rule.clone()),
            400,
            "bad_request",
        )
        .await;
    }

    tracing::info!("--- step: unknown capability");
    let m = refused(
        &n,
        Method::PUT,
        "/v1/namespaces/team-a/policies/p",
        t,
        js(json!({"rules": [{"path": "app/*", "capabilities": ["read", "fly"]}]})),
        400,
        "bad_request",
    )
    .await;
    assert!(m.contains("fly"), "{m}");

    tracing::info!("--- step: invalid policies");
    for body in [
        json!({"rules": []}),
        json!({"rules": [{"path": "app/*", "capabilities": []}]}),
        json!({"rules": [{"path": "a*b", "capabilities": ["read"]}]}),
        json!({"rules": [{"path": "../*", "capabilities": ["read"]}]}),
    ] {
        refused(
            &n,
            Method::PUT,
            "/v1/namespaces/team-a/policies/p",
            t,
            js(body),
            400,
            "bad_request",
        )
        .await;
    }

    tracing::info!("--- step: invalid policy names");
    let long_name = "p".repeat(65);
    for name in ["Bad", "_lead", "a.b", long_name.as_str()] {
        let m = refused(
            &n,
            Method::PUT,
            &format!("/v1/namespaces/team-a/policies/{name}"),
            t,
            js(rule.clone()),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains("policy name"), "{name}: {m}");
        refused(
            &n,
            Method::POST,
            "/v1/auth/access-key/login",
            None,
            js(json!({"access_key": ak, "namespace": "team-a", "policies": [name]})),
            400,
            "bad_request",
        )
        .await;
    }

    tracing::info!("--- step: the built-in admin policy cannot change");
    let m = refused(
        &n,
        Method::PUT,
        "/v1/namespaces/team-a/policies/admin",
        t,
        js(rule.clone()),
        400,
        "bad_request",
    )
    .await;
    assert!(m.contains("built in"), "{m}");
    refused(
        &n,
        Method::DELETE,
        "/v1/namespaces/team-a/policies/admin",
        t,
        None,
        400,
        "bad_request",
    )
    .await;

    tracing::info!("--- step: wrong CAS version");
    let (code, body) = n.http.put("/v1/kv/c", t, json!({"value": "1"})).await;
    assert_eq!(code, 200, "{body}");
    for cas in [0, 2, 7] {
        refused(
            &n,
            Method::PUT,
            "/v1/kv/c",
            t,
            js(json!({"value": "2", "cas": cas})),
            409,
            "conflict",
        )
        .await;
    }
    let (_, body) = n.http.get("/v1/kv/c", t).await;
    assert_eq!((&body["value"], &body["version"]), (&json!("1"), &json!(1)));

    n.server.shutdown().await.unwrap();
}

/// Steps: init with threshold > shares, shares 0, 1 of 5, 256 shares → 400 on
/// a fresh node (nothing stored) and on an initialised one → unseal with key
/// and gatekeeper token, or with nothing → 400.
#[tokio::test]
async fn bad_init_and_unseal_requests() {
    let fresh = TestNode::start().await;
    let (n, init, _admin) = node().await;
    let bad_params = [
        json!({"shares": 3, "threshold": 4}),
        json!({"shares": 0, "threshold": 0}),
        json!({"shares": 0, "threshold": 1}),
        json!({"shares": 5, "threshold": 1}),
        json!({"shares": 256, "threshold": 3}),
        json!({"shares": 3, "threshold": 2, "gatekeeper_tokens": 17}),
        json!({"shares": -1, "threshold": 2}),
    ];

    tracing::info!("--- step: bad init parameters on a fresh node");
    for body in &bad_params {
        refused(
            &fresh,
            Method::POST,
            "/v1/sys/init",
            None,
            js(body.clone()),
            400,
            "bad_request",
        )
        .await;
    }
    assert!(
        fresh
            .backend
            .dump()
            .iter()
            .all(|(k, _)| k.starts_with(b"raft/")),
        "a refused init stores nothing but Raft bookkeeping"
    );
    let (_, st) = fresh.http.get("/v1/sys/status", None).await;
    assert_eq!(st["initialized"], false);

    tracing::info!("--- step: bad init parameters on an initialised node");
    for body in &bad_params {
        refused(
            &n,
            Method::POST,
            "/v1/sys/init",
            None,
            js(body.clone()),
            400,
            "bad_request",
        )
        .await;
    }

    tracing::info!("--- step: unseal with two proofs, or none");
    let key = &init["unseal_keys"][0];
    let gk = &init["gatekeeper_tokens"][0];
    for body in [
        json!({"key": key, "gatekeeper_token": gk}),
        json!({"key": key, "reset": true}),
        json!({}),
    ] {
        let m = refused(
            &n,
            Method::POST,
            "/v1/sys/unseal",
            None,
            js(body),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains("exactly one"), "{m}");
    }
    tracing::info!("--- step: same on a sealed node, progress untouched");
    let (code, body) = n
        .http
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": gk}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = n
        .http
        .post("/v1/sys/unseal", None, json!({"key": key}))
        .await;
    assert_eq!(code, 200);
    refused(
        &n,
        Method::POST,
        "/v1/sys/unseal",
        None,
        js(json!({"key": init["unseal_keys"][1], "gatekeeper_token": gk})),
        400,
        "bad_request",
    )
    .await;
    let (_, st) = n.http.get("/v1/sys/status", None).await;
    assert_eq!((&st["sealed"], &st["progress"]), (&json!(true), &json!(1)));

    fresh.server.shutdown().await.unwrap();
    n.server.shutdown().await.unwrap();
}

/// Steps: no token → 401 → garbage and unknown well-shaped tokens → 401 →
/// `X-KStash-Token` works → a non-bearer `Authorization` → 401 → unknown
/// route → 404 JSON → wrong method → 405 JSON.
#[tokio::test]
async fn credentials_routes_and_methods() {
    let (n, _init, admin) = node().await;
    let (code, body) = n
        .http
        .put("/v1/kv/x", Some(&admin), json!({"value": "v"}))
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step: missing and garbage tokens");
    let unknown = format!("kst_{}", "A".repeat(43));
    for token in [None, Some("garbage"), Some(unknown.as_str()), Some("")] {
        refused(
            &n,
            Method::GET,
            "/v1/kv/x",
            token,
            None,
            401,
            "unauthorized",
        )
        .await;
        refused(
            &n,
            Method::PUT,
            "/v1/kv/x",
            token,
            js(json!({"value": "w"})),
            401,
            "unauthorized",
        )
        .await;
    }
    refused(
        &n,
        Method::GET,
        "/v1/auth/token/self",
        None,
        None,
        401,
        "unauthorized",
    )
    .await;

    tracing::info!("--- step: X-KStash-Token works; Basic does not");
    let (code, body) = n
        .http
        .send_with_headers(Method::GET, "/v1/kv/x", &[("X-KStash-Token", &admin)], None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value"], "v");
    let basic = format!("Basic {admin}");
    let (code, body) = n
        .http
        .send_with_headers(Method::GET, "/v1/kv/x", &[("Authorization", &basic)], None)
        .await;
    assert_eq!(code, 401, "{body}");
    assert_error(&body, "unauthorized");

    tracing::info!("--- step: unknown route and wrong method");
    for path in ["/v1/nope", "/v1/sys/nope", "/v2/kv/x", "/"] {
        refused(&n, Method::GET, path, None, None, 404, "not_found").await;
    }
    for (method, path) in [
        (Method::DELETE, "/v1/sys/status"),
        (Method::GET, "/v1/sys/init"),
        (Method::PUT, "/v1/auth/token/self"),
        (Method::PATCH, "/v1/kv/x"),
    ] {
        refused(
            &n,
            method,
            path,
            Some(&admin),
            None,
            405,
            "method_not_allowed",
        )
        .await;
    }

    n.server.shutdown().await.unwrap();
}

/// Steps: `value` and `value_base64` together, neither, or bad base64 → 400
/// → binary bytes (invalid UTF-8) round-trip through `value_base64` → UTF-8
/// bytes given as base64 come back as `value`.
#[tokio::test]
async fn value_encodings() {
    let (n, _init, admin) = node().await;
    let t = Some(admin.as_str());
    let b64 = base64::engine::general_purpose::STANDARD;

    tracing::info!("--- step: exactly one of value and value_base64");
    for body in [
        json!({"value": "a", "value_base64": "YQ=="}),
        json!({}),
        json!({"cas": 0}),
        json!({"value_base64": "not base64!"}),
    ] {
        refused(
            &n,
            Method::PUT,
            "/v1/kv/bin",
            t,
            js(body),
            400,
            "bad_request",
        )
        .await;
    }

    tracing::info!("--- step: binary round-trip");
    let bytes: Vec<u8> = vec![0xff, 0xfe, 0x00, 0x80, b'a', 0xc3, 0x28, 0x0a];
    assert!(std::str::from_utf8(&bytes).is_err());
    let (code, body) = n
        .http
        .put("/v1/kv/bin", t, json!({"value_base64": b64.encode(&bytes)}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = n.http.get("/v1/kv/bin", t).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.get("value").is_none(), "{body}");
    let back = b64.decode(body["value_base64"].as_str().unwrap()).unwrap();
    assert_eq!(back, bytes);

    tracing::info!("--- step: UTF-8 given as base64 reads back as value");
    let (code, body) = n
        .http
        .put(
            "/v1/kv/text",
            t,
            json!({"value_base64": b64.encode("héllo")}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, body) = n.http.get("/v1/kv/text", t).await;
    assert_eq!(body["value"], "héllo", "{body}");

    n.server.shutdown().await.unwrap();
}

/// Steps: encryption limit 1 → write c (term 1 is now used up) → put c with
/// a wrong CAS version → 409, and the backend is unchanged (no key term was
/// added for a write that was refused) → c still reads its first value.
#[tokio::test]
async fn wrong_cas_at_the_encryption_limit_changes_nothing() {
    let n = TestNode::start_with(|a| a.encryption_limit = Some(1)).await;
    let init = n.init_unsealed(3, 2).await;
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    let t = Some(admin.as_str());

    tracing::info!("--- step: write c; term 1 reaches its limit");
    let (code, body) = n.http.put("/v1/kv/c", t, json!({"value": "1"})).await;
    assert_eq!(code, 200, "{body}");
    let (_, st) = n.http.get("/v1/sys/status", None).await;
    assert_eq!(st["key_term"], 1);

    tracing::info!("--- step: a wrong CAS is refused and rotates nothing");
    refused(
        &n,
        Method::PUT,
        "/v1/kv/c",
        t,
        js(json!({"value": "2", "cas": 5})),
        409,
        "conflict",
    )
    .await;
    let (_, st) = n.http.get("/v1/sys/status", None).await;
    assert_eq!(st["key_term"], 1, "{st}");
    let (_, body) = n.http.get("/v1/kv/c", t).await;
    assert_eq!((&body["value"], &body["version"]), (&json!("1"), &json!(1)));

    n.server.shutdown().await.unwrap();
}

/// Steps: unseal keys sent as a string where a list is expected (seal,
/// rotate, rekey, mint, list gatekeeper tokens) → 400 whose message does not
/// repeat the key.
#[tokio::test]
async fn mistyped_unseal_keys_are_not_echoed() {
    let (n, init, _admin) = node().await;
    let key = init["unseal_keys"][0].as_str().unwrap().to_string();

    let mut echoed = Vec::new();
    for (path, mut body) in [
        ("/v1/sys/seal", json!({})),
        ("/v1/sys/rotate", json!({})),
        ("/v1/sys/rekey", json!({"shares": 3, "threshold": 2})),
        ("/v1/sys/gatekeeper-tokens", json!({})),
        ("/v1/sys/gatekeeper-tokens/list", json!({})),
    ] {
        tracing::info!("--- step: {path} with keys as a string");
        body["keys"] = json!(key);
        let m = refused(&n, Method::POST, path, None, js(body), 400, "bad_request").await;
        if m.contains(&key[..16]) {
            echoed.push(format!("{path}: {m}"));
        }
    }
    assert!(echoed.is_empty(), "the unseal key is echoed: {echoed:#?}");

    n.server.shutdown().await.unwrap();
}

/// Steps: duplicate JSON fields, an empty policy body, 129 rules, a rule path
/// over the limit, 33 policies on a login, a negative CAS, a trailing '/' on
/// a secret path, a read of the namespace root without `list` → 400 each.
#[tokio::test]
async fn more_malformed_requests() {
    let (n, init, admin) = node().await;
    let t = Some(admin.as_str());
    let ak = &init["access_key"];
    let rule = |p: &str| json!({"path": p, "capabilities": ["read"]});
    let many_rules: Vec<Value> = (0..129).map(|i| rule(&format!("r{i}/*"))).collect();
    let many_policies: Vec<String> = (0..33).map(|i| format!("p{i}")).collect();

    let cases: Vec<(&str, Method, &str, Option<String>)> = vec![
        (
            "duplicate field",
            Method::PUT,
            "/v1/kv/x",
            Some(r#"{"value": "a", "value": "b"}"#.into()),
        ),
        (
            "empty policy body",
            Method::PUT,
            "/v1/namespaces/team-a/policies/p",
            Some(String::new()),
        ),
        (
            "129 rules",
            Method::PUT,
            "/v1/namespaces/team-a/policies/p",
            js(json!({ "rules": many_rules })),
        ),
        (
            "rule path over the limit",
            Method::PUT,
            "/v1/namespaces/team-a/policies/p",
            js(json!({"rules": [rule(&"r".repeat(1025))]})),
        ),
        (
            "33 policies",
            Method::POST,
            "/v1/auth/access-key/login",
            js(json!({"access_key": ak, "namespace": "team-a", "policies": many_policies})),
        ),
        (
            "negative cas",
            Method::PUT,
            "/v1/kv/x",
            js(json!({"value": "a", "cas": -1})),
        ),
        (
            "trailing slash",
            Method::PUT,
            "/v1/kv/app/",
            js(json!({"value": "a"})),
        ),
        ("root read", Method::GET, "/v1/kv/", None),
        ("bad list flag", Method::GET, "/v1/kv/app?list=maybe", None),
    ];
    for (what, method, path, body) in cases {
        tracing::info!("--- step: {what}");
        let token = if path.starts_with("/v1/auth") {
            None
        } else {
            t
        };
        refused(&n, method, path, token, body, 400, "bad_request").await;
    }

    n.server.shutdown().await.unwrap();
}

/// Every REST route and the methods it answers, with a concrete path; kept
/// in step with `rest::ROUTES` by the test below.
const ROUTE_METHODS: &[(&str, &str, &[&str])] = &[
    ("/v1/sys/health", "/v1/sys/health", &["GET"]),
    ("/livez", "/livez", &["GET"]),
    ("/readyz", "/readyz", &["GET"]),
    ("/v1/sys/status", "/v1/sys/status", &["GET"]),
    ("/v1/sys/init", "/v1/sys/init", &["POST"]),
    ("/v1/sys/unseal", "/v1/sys/unseal", &["POST"]),
    ("/v1/sys/seal", "/v1/sys/seal", &["POST"]),
    ("/v1/sys/rotate", "/v1/sys/rotate", &["POST"]),
    ("/v1/sys/rekey", "/v1/sys/rekey", &["POST"]),
    (
        "/v1/sys/access-key/rotate",
        "/v1/sys/access-key/rotate",
        &["POST"],
    ),
    ("/v1/sys/raft/peers", "/v1/sys/raft/peers", &["POST"]),
    ("/v1/sys/raft/remove", "/v1/sys/raft/remove", &["POST"]),
    ("/v1/sys/snapshot", "/v1/sys/snapshot", &["POST"]),
    (
        "/v1/sys/gatekeeper-tokens",
        "/v1/sys/gatekeeper-tokens",
        &["POST"],
    ),
    (
        "/v1/sys/gatekeeper-tokens/list",
        "/v1/sys/gatekeeper-tokens/list",
        &["POST"],
    ),
    (
        "/v1/sys/gatekeeper-tokens/renew",
        "/v1/sys/gatekeeper-tokens/renew",
        &["POST"],
    ),
    (
        "/v1/sys/gatekeeper-tokens/revoke",
        "/v1/sys/gatekeeper-tokens/revoke",
        &["POST"],
    ),
    ("/v1/sys/audit/hash", "/v1/sys/audit/hash", &["POST"]),
    (
        "/v1/auth/access-key/login",
        "/v1/auth/access-key/login",
        &["POST"],
    ),
    (
        "/v1/auth/kubernetes/login",
        "/v1/auth/kubernetes/login",
        &["POST"],
    ),
    ("/v1/auth/token/renew", "/v1/auth/token/renew", &["POST"]),
    ("/v1/auth/token/revoke", "/v1/auth/token/revoke", &["POST"]),
    ("/v1/auth/token/self", "/v1/auth/token/self", &["GET"]),
    (
        "/v1/namespaces/{ns}/policies",
        "/v1/namespaces/team-a/policies",
        &["GET"],
    ),
    (
        "/v1/namespaces/{ns}/policies/{name}",
        "/v1/namespaces/team-a/policies/p",
        &["GET", "PUT", "DELETE"],
    ),
    (
        "/v1/namespaces/{ns}/auth/kubernetes/roles",
        "/v1/namespaces/team-a/auth/kubernetes/roles",
        &["GET"],
    ),
    (
        "/v1/namespaces/{ns}/auth/kubernetes/roles/{name}",
        "/v1/namespaces/team-a/auth/kubernetes/roles/web",
        &["GET", "PUT", "DELETE"],
    ),
    ("/v1/keys", "/v1/keys", &["GET"]),
    ("/v1/keys/{name}", "/v1/keys/kek", &["GET", "POST"]),
    ("/v1/keys/{name}/rotate", "/v1/keys/kek/rotate", &["POST"]),
    ("/v1/keys/{name}/config", "/v1/keys/kek/config", &["POST"]),
    ("/v1/keys/{name}/encrypt", "/v1/keys/kek/encrypt", &["POST"]),
    ("/v1/keys/{name}/decrypt", "/v1/keys/kek/decrypt", &["POST"]),
    ("/v1/kv", "/v1/kv", &["GET"]),
    ("/v1/kv/", "/v1/kv/", &["GET"]),
    (
        "/v1/kv/{*path}",
        "/v1/kv/app/x",
        &["GET", "PUT", "POST", "DELETE"],
    ),
    ("/v1/openapi.json", "/v1/openapi.json", &["GET"]),
    ("/metrics", "/metrics", &["GET"]),
];

/// The query parameters a route and method take (the rest take none).
fn takes(method: &str, route: &str) -> &'static [&'static str] {
    match (method, route) {
        ("GET", "/v1/sys/health") => &["standbyok"],
        ("GET", "/v1/kv" | "/v1/kv/" | "/v1/kv/{*path}") => {
            &["list", "consistency", "cursor", "limit"]
        }
        (
            "GET",
            "/v1/namespaces/{ns}/policies"
            | "/v1/namespaces/{ns}/auth/kubernetes/roles"
            | "/v1/keys",
        ) => &["cursor", "limit"],
        _ => &[],
    }
}

/// Steps: every route × method with `?colour=red` (and with a known
/// parameter plus `colour`) → 400 naming `colour` and the parameters the
/// route takes, backend unchanged → a known parameter given twice → 400 →
/// known parameters alone still work → seal: an unknown parameter on a gated
/// route still gets 503 `sealed` first.
#[tokio::test]
async fn unknown_and_repeated_query_parameters_are_refused() {
    let (n, init, admin) = node().await;
    let t = Some(admin.as_str());
    let routed: Vec<&str> = ROUTE_METHODS.iter().map(|(r, _, _)| *r).collect();
    assert_eq!(
        routed,
        kstash::api::rest::ROUTES,
        "the table covers every route"
    );

    tracing::info!("--- step: an unknown parameter on every route and method");
    for (route, path, methods) in ROUTE_METHODS {
        for method in *methods {
            let m: Method = method.parse().unwrap();
            let body = (m != Method::GET && m != Method::DELETE).then(|| "{}".to_string());
            for query in ["colour=red", "colour", "list=true&colour=1"] {
                if query.starts_with("list") && !takes(method, route).contains(&"list") {
                    continue;
                }
                let msg = refused(
                    &n,
                    m.clone(),
                    &format!("{path}?{query}"),
                    t,
                    body.clone(),
                    400,
                    "bad_request",
                )
                .await;
                assert!(msg.contains("\"colour\""), "{method} {route}: {msg}");
                let allowed = takes(method, route);
                if allowed.is_empty() {
                    assert!(
                        msg.contains("no query parameters"),
                        "{method} {route}: {msg}"
                    );
                } else {
                    assert!(
                        msg.contains(&allowed.join(", ")),
                        "{method} {route} names what it takes: {msg}"
                    );
                }
            }
        }
    }

    tracing::info!("--- step: a known parameter given twice");
    for path in [
        "/v1/kv/app/?list=true&list=true",
        "/v1/kv/app/?list=true&limit=1&limit=2",
        "/v1/sys/health?standbyok=true&standbyok=false",
        "/v1/namespaces/team-a/policies?limit=1&limit=1",
    ] {
        let msg = refused(&n, Method::GET, path, t, None, 400, "bad_request").await;
        assert!(msg.contains("more than once"), "{path}: {msg}");
    }

    tracing::info!("--- step: known parameters still work");
    let (code, body) = n.http.put("/v1/kv/app/x", t, json!({"value": "v"})).await;
    assert_eq!(code, 200, "{body}");
    for path in [
        "/v1/kv/app/?list=true&limit=5&consistency=stale",
        "/v1/kv/app/x?consistency=linearizable",
        "/v1/sys/health?standbyok=true",
        "/v1/namespaces/team-a/policies?limit=10",
        "/v1/sys/status?",
    ] {
        let (code, body) = n.http.get(path, t).await;
        assert_eq!(code, 200, "{path}: {body}");
    }

    tracing::info!("--- step: a sealed node answers sealed before it reads the query");
    let keys = &init["unseal_keys"].as_array().unwrap()[..2];
    let (code, body) = n
        .http
        .post("/v1/sys/seal", None, json!({ "keys": keys }))
        .await;
    assert_eq!(code, 200, "{body}");
    for (method, path) in [
        (Method::GET, "/v1/kv/app/x?colour=red"),
        (Method::POST, "/v1/sys/rotate?colour=red"),
    ] {
        let body = (method == Method::POST).then(|| "{}".to_string());
        let (code, resp) = n.http.send(method, path, t, body).await;
        assert_eq!(code, 503, "{path}: {resp}");
        assert_error(&resp, "sealed");
        let message = resp["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("kstash operator unseal") && message.contains("/v1/sys/unseal"),
            "a sealed error names the fix: {message}"
        );
    }
    let (code, resp) = n.http.get("/v1/sys/status?colour=red", None).await;
    assert_eq!(code, 400, "an open route still checks: {resp}");

    n.server.shutdown().await.unwrap();
}

/// Steps: an admin writes `app/db` and a read-only policy `ro` on `app/*`
/// → a `ro` token reads a secret it may not (`other/x`), writes an existing
/// and a missing secret, deletes, lists; a `ro` token manages policies; a
/// team-b admin manages team-a's policies → every 403 reads "permission
/// denied: <action> on <ns>/<path> is not granted by the token's policies
/// [..] in namespace <ns>", the two writes differ only in their path (no
/// hint whether a secret exists), and no message holds the secret's value.
#[tokio::test]
async fn permission_errors_share_one_wording() {
    let (n, init, admin) = node().await;
    let t = Some(admin.as_str());
    let (code, body) = n
        .http
        .put("/v1/kv/app/db", t, json!({"value": "hunter2-value"}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = n
        .http
        .put(
            "/v1/namespaces/team-a/policies/ro",
            t,
            json!({"rules": [{"path": "app/*", "capabilities": ["read"]}]}),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let ro = n.login(&init["access_key"], "team-a", &["ro"], None).await;
    let ro = Some(ro.as_str());
    let b_admin = n
        .login(&init["access_key"], "team-b", &["admin"], None)
        .await;

    tracing::info!("--- step: denials of every kind");
    let value = js(json!({"value": "v"}));
    type Case<'a> = (Method, &'a str, Option<&'a str>, Option<String>, &'a str);
    let cases: Vec<Case> = vec![
        (
            Method::GET,
            "/v1/kv/other/x",
            ro,
            None,
            "read on team-a/other/x",
        ),
        (
            Method::PUT,
            "/v1/kv/app/db",
            ro,
            value.clone(),
            "create or update on team-a/app/db",
        ),
        (
            Method::PUT,
            "/v1/kv/app/new",
            ro,
            value.clone(),
            "create or update on team-a/app/new",
        ),
        (
            Method::DELETE,
            "/v1/kv/app/db",
            ro,
            None,
            "delete on team-a/app/db",
        ),
        (
            Method::GET,
            "/v1/kv/app/?list=true",
            ro,
            None,
            "list on team-a/app/",
        ),
        (
            Method::GET,
            "/v1/namespaces/team-a/policies/ro",
            ro,
            None,
            "manage policies on team-a/policies/ro",
        ),
        (
            Method::DELETE,
            "/v1/namespaces/team-a/policies/ro",
            Some(b_admin.as_str()),
            None,
            "manage policies on team-a/policies/ro",
        ),
    ];
    for (method, path, token, body, what) in cases {
        let msg = refused(&n, method.clone(), path, token, body, 403, "forbidden").await;
        let policies = if token == ro {
            "[ro] in namespace team-a"
        } else {
            "[admin] in namespace team-b"
        };
        assert_eq!(
            msg,
            format!("permission denied: {what} is not granted by the token's policies {policies}"),
            "{method} {path}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    n.server.shutdown().await.unwrap();
}

/// Steps: a ServiceAccount login body that is not JSON, lacks a field, has
/// an unknown one or a field of the wrong type → 400 naming the field, never
/// echoing the JWT → a role body with an unknown field or a ttl that is no
/// duration → 400 → role calls without a token → 401 → an Idempotency-Key
/// on a role read or on a login → 400; on a role write it passes the edge.
/// The backend never changes. (All of this is refused before the service
/// runs.)
#[tokio::test]
async fn kubernetes_routes_refuse_bad_input() {
    let (n, _init, admin) = node().await;
    let t = Some(admin.as_str());
    let jwt = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWNsYWltcw.c2VjcmV0LXNpZw";
    let login = "/v1/auth/kubernetes/login";
    let role = "/v1/namespaces/team-a/auth/kubernetes/roles/web";

    tracing::info!("--- step: bad login bodies");
    let cases = [
        ("{".to_string(), "JSON"),
        (
            json!({"namespace": "team-a", "role": "web"}).to_string(),
            "jwt",
        ),
        (
            json!({"namespace": "team-a", "jwt": jwt}).to_string(),
            "role",
        ),
        (
            json!({"namespace": "team-a", "role": "web", "jwt": jwt, "colour": 1}).to_string(),
            "colour",
        ),
        (
            json!({"namespace": 5, "role": "web", "jwt": jwt}).to_string(),
            "invalid type",
        ),
        (
            json!({"namespace": "team-a", "role": "web", "jwt": [jwt]}).to_string(),
            "invalid type",
        ),
    ];
    for (body, says) in cases {
        let m = refused(
            &n,
            Method::POST,
            login,
            None,
            Some(body.clone()),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains(says), "{body}: {m}");
        assert!(!m.contains("c2VjcmV0"), "the JWT is never echoed: {m}");
    }

    tracing::info!("--- step: bad role bodies");
    for (body, says) in [
        (
            json!({"service_accounts": ["shop/web"], "colour": 1}),
            "colour",
        ),
        (
            json!({"service_accounts": ["shop/web"], "ttl": "soon"}),
            "duration",
        ),
        (json!({"policies": ["p"]}), "service_accounts"),
    ] {
        let m = refused(
            &n,
            Method::PUT,
            role,
            t,
            js(body.clone()),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains(says), "{body}: {m}");
    }

    tracing::info!("--- step: role calls need an access token");
    let body = js(json!({"service_accounts": ["shop/web"]}));
    for (method, path, body) in [
        (Method::PUT, role, body),
        (Method::GET, role, None),
        (Method::DELETE, role, None),
        (
            Method::GET,
            "/v1/namespaces/team-a/auth/kubernetes/roles",
            None,
        ),
    ] {
        refused(&n, method, path, None, body, 401, "unauthorized").await;
    }

    tracing::info!("--- step: Idempotency-Key only on role writes");
    let bearer = format!("Bearer {admin}");
    let login_body = json!({"namespace": "team-a", "role": "web", "jwt": jwt}).to_string();
    for (method, path, body) in [
        (Method::GET, role, None),
        (Method::POST, login, Some(login_body)),
    ] {
        let before = n.backend.dump();
        let (code, resp) = n
            .http
            .send_with_headers(
                method.clone(),
                path,
                &[("Authorization", &bearer), ("Idempotency-Key", "k-1")],
                body,
            )
            .await;
        assert_eq!(code, 400, "{method} {path}: {resp}");
        assert_error(&resp, "bad_request");
        let m = resp["error"]["message"].as_str().unwrap();
        assert!(m.contains("Kubernetes login roles"), "{m}");
        assert!(
            n.backend.dump() == before,
            "{method} {path} changed nothing"
        );
    }
    let (code, resp) = n
        .http
        .send_with_headers(
            Method::PUT,
            role,
            &[("Authorization", &bearer), ("Idempotency-Key", "k-1")],
            Some(json!({"service_accounts": ["shop/web"], "colour": 1}).to_string()),
        )
        .await;
    assert_eq!(code, 400, "{resp}");
    let m = resp["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("colour") && !m.contains("Idempotency-Key"),
        "a role write takes the key; its body is what is wrong: {m}"
    );

    n.server.shutdown().await.unwrap();
}

/// Steps: a key `kek` on the node (1 KiB value limit) → names that are not
/// key names, percent-encoded ones included (`%2F`, `%6b` for `k`), on
/// every key route → 400 naming the name rules, nothing changed → bad
/// bodies (an unknown field, a missing or mistyped field, plaintext that is
/// not base64, a malformed ciphertext) → 400 naming what to fix, never
/// echoing the plaintext → a plaintext of 64 KiB + 1 → 413, a body far over
/// the limit → 413 → every key route without a token → 401 → an
/// Idempotency-Key on encrypt, decrypt or get → 400; on create it passes
/// → a plaintext of exactly 64 KiB encrypts although values are limited to
/// 1 KiB (a key's bounds are its own).
#[tokio::test]
async fn named_key_routes_refuse_bad_input() {
    let (n, _init, admin) = node().await;
    let t = Some(admin.as_str());
    let (code, body) = n.http.post("/v1/keys/kek", t, json!({})).await;
    assert_eq!(code, 200, "{body}");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);

    tracing::info!("--- step: names that are not key names");
    let long = "k".repeat(65);
    for name in [
        "a%2Fb",
        "%6bek",
        "Kek",
        "-kek",
        "k.ek",
        "k%20ek",
        long.as_str(),
    ] {
        for (method, action, body) in [
            (Method::POST, "", js(json!({}))),
            (Method::GET, "", None),
            (Method::POST, "/rotate", js(json!({}))),
            (
                Method::POST,
                "/config",
                js(json!({"min_decryption_version": 1})),
            ),
            (Method::POST, "/encrypt", js(json!({"plaintext": "AAAA"}))),
            (
                Method::POST,
                "/decrypt",
                js(json!({"ciphertext": "kstash:v1:AAAA"})),
            ),
        ] {
            let path = format!("/v1/keys/{name}{action}");
            let m = refused(&n, method, &path, t, body, 400, "bad_request").await;
            assert!(m.contains("invalid key name"), "{path}: {m}");
            assert!(m.contains("a-z, 0-9"), "says what a name may hold: {m}");
        }
    }

    tracing::info!("--- step: bad bodies");
    let secret = b64(b"hunter2-plaintext");
    for (path, body, says) in [
        ("/v1/keys/new", json!({"colour": 1}), "colour"),
        ("/v1/keys/kek/rotate", json!({"colour": 1}), "colour"),
        ("/v1/keys/kek/config", json!({}), "min_decryption_version"),
        (
            "/v1/keys/kek/config",
            json!({"min_decryption_version": "2"}),
            "invalid type",
        ),
        (
            "/v1/keys/kek/config",
            json!({"min_decryption_version": 0}),
            "min_decryption_version must be 1 to the latest version",
        ),
        ("/v1/keys/kek/encrypt", json!({}), "plaintext"),
        (
            "/v1/keys/kek/encrypt",
            json!({"plaintext": format!("{secret}!")}),
            "not valid base64",
        ),
        (
            "/v1/keys/kek/encrypt",
            json!({"plaintext": secret, "key_version": 1}),
            "key_version",
        ),
        ("/v1/keys/kek/decrypt", json!({}), "ciphertext"),
        (
            "/v1/keys/kek/decrypt",
            json!({"ciphertext": "hunter2"}),
            "malformed ciphertext",
        ),
    ] {
        let m = refused(
            &n,
            Method::POST,
            path,
            t,
            js(body.clone()),
            400,
            "bad_request",
        )
        .await;
        assert!(m.contains(says), "{path} {body}: {m}");
        assert!(!m.contains("hunter2") && !m.contains(&secret), "{m}");
    }

    tracing::info!("--- step: too large");
    let max = kstash::keys::MAX_PLAINTEXT_BYTES;
    let m = refused(
        &n,
        Method::POST,
        "/v1/keys/kek/encrypt",
        t,
        js(json!({"plaintext": b64(&vec![1u8; max + 1])})),
        413,
        "too_large",
    )
    .await;
    assert!(m.contains("65537") && m.contains("65536"), "{m}");
    let m = refused(
        &n,
        Method::POST,
        "/v1/keys/kek/decrypt",
        t,
        js(json!({"ciphertext": format!("kstash:v1:{}", "A".repeat(400 << 10))})),
        413,
        "too_large",
    )
    .await;
    assert!(m.contains("too large"), "{m}");

    tracing::info!("--- step: key routes need an access token");
    for (method, path, body) in [
        (Method::GET, "/v1/keys", None),
        (Method::GET, "/v1/keys/kek", None),
        (Method::POST, "/v1/keys/kek", js(json!({}))),
        (Method::POST, "/v1/keys/kek/rotate", js(json!({}))),
        (
            Method::POST,
            "/v1/keys/kek/config",
            js(json!({"min_decryption_version": 1})),
        ),
        (
            Method::POST,
            "/v1/keys/kek/encrypt",
            js(json!({"plaintext": "AAAA"})),
        ),
        (
            Method::POST,
            "/v1/keys/kek/decrypt",
            js(json!({"ciphertext": "kstash:v1:AAAA"})),
        ),
    ] {
        refused(&n, method, path, None, body, 401, "unauthorized").await;
    }

    tracing::info!("--- step: Idempotency-Key only on key management writes");
    let bearer = format!("Bearer {admin}");
    for (method, path, body) in [
        (Method::GET, "/v1/keys/kek", None),
        (Method::GET, "/v1/keys", None),
        (
            Method::POST,
            "/v1/keys/kek/encrypt",
            js(json!({"plaintext": "AAAA"})),
        ),
        (
            Method::POST,
            "/v1/keys/kek/decrypt",
            js(json!({"ciphertext": "kstash:v1:AAAA"})),
        ),
    ] {
        let before = n.backend.dump();
        let (code, resp) = n
            .http
            .send_with_headers(
                method.clone(),
                path,
                &[("Authorization", &bearer), ("Idempotency-Key", "k-1")],
                body,
            )
            .await;
        assert_eq!(code, 400, "{method} {path}: {resp}");
        let m = resp["error"]["message"].as_str().unwrap();
        assert!(m.contains("named keys"), "{m}");
        assert!(n.backend.dump() == before, "{method} {path}");
    }
    let (code, resp) = n
        .http
        .send_with_headers(
            Method::POST,
            "/v1/keys/k2",
            &[("Authorization", &bearer), ("Idempotency-Key", "k-1")],
            js(json!({})),
        )
        .await;
    assert_eq!(code, 200, "a create takes the key: {resp}");

    tracing::info!("--- step: 64 KiB encrypts on a node whose values are limited to 1 KiB");
    let (code, resp) = n
        .http
        .post(
            "/v1/keys/kek/encrypt",
            t,
            json!({"plaintext": b64(&vec![2u8; max])}),
        )
        .await;
    assert_eq!(code, 200, "{resp}");
    assert!(resp["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("kstash:v1:"));

    n.server.shutdown().await.unwrap();
}
