//! Retrying safely: idempotency keys on writes (REST and gRPC), stale reads,
//! and the client library's failover between addresses (past a dead address
//! and a sealed node, never resending an unkeyed write whose fate is unknown).

use std::time::Duration;

use kstash::client::wire::PutSecretRequest;
use kstash::client::{Client, ClientError, ClientOptions};
use kstash::secret::SecretString;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, TestNode};

/// An unsealed node and an admin token for namespace `app`.
async fn node_and_token() -> (TestNode, String) {
    let node = TestNode::start().await;
    let init = node.init_unsealed(1, 1).await;
    let token = node
        .login(&init["access_key"], "app", &["admin"], None)
        .await;
    (node, token)
}

/// A REST call with a token and optional idempotency key.
async fn keyed(
    node: &TestNode,
    method: Method,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    node.http
        .send_with_headers(method, path, &headers, body.map(|b| b.to_string()))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_write_is_applied_once() {
    let (node, token) = node_and_token().await;
    let put = |value: &str, key: &'static str| {
        let body = json!({ "value": value });
        keyed(
            &node,
            Method::PUT,
            "/v1/kv/db",
            &token,
            Some(key),
            Some(body),
        )
    };

    tracing::info!("--- a repeat with the same key gets the first outcome");
    let (code, first) = put("one", "k-1").await;
    assert_eq!((code, &first["version"]), (200, &json!(1)), "{first}");
    let (code, again) = put("one", "k-1").await;
    assert_eq!((code, &again["version"]), (200, &json!(1)), "{again}");
    let (code, got) = node.http.get("/v1/kv/db", Some(&token)).await;
    assert_eq!((code, &got["version"]), (200, &json!(1)), "{got}");

    tracing::info!("--- another key is another write");
    let (code, second) = put("two", "k-2").await;
    assert_eq!((code, &second["version"]), (200, &json!(2)), "{second}");

    tracing::info!("--- the same key on another request is refused and changes nothing");
    let body = Some(json!({ "value": "x" }));
    let (code, body) = keyed(
        &node,
        Method::PUT,
        "/v1/kv/other",
        &token,
        Some("k-1"),
        body,
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert_error(&body, "conflict");
    let (code, _) = node.http.get("/v1/kv/other", Some(&token)).await;
    assert_eq!(code, 404, "the refused write left nothing");

    tracing::info!("--- a check-and-set retried after it applied still succeeds");
    let cas = Some(json!({ "value": "three", "cas": 2 }));
    for attempt in 1..=2 {
        let body = cas.clone();
        let (code, body) = keyed(&node, Method::PUT, "/v1/kv/db", &token, Some("k-3"), body).await;
        assert_eq!(
            (code, &body["version"]),
            (200, &json!(3)),
            "attempt {attempt}: {body}"
        );
    }
    let (code, body) = keyed(&node, Method::PUT, "/v1/kv/db", &token, None, cas).await;
    assert_eq!(
        code, 409,
        "without the key it is a new, failing write: {body}"
    );

    tracing::info!("--- a delete retried with its key answers as the first did");
    for attempt in 1..=2 {
        let (code, body) = keyed(
            &node,
            Method::DELETE,
            "/v1/kv/db",
            &token,
            Some("d-1"),
            None,
        )
        .await;
        assert_eq!(code, 204, "attempt {attempt}: {body}");
    }
    let (code, body) = keyed(&node, Method::DELETE, "/v1/kv/db", &token, None, None).await;
    assert_eq!(code, 404, "{body}");

    tracing::info!("--- policies take keys too");
    let policy = json!({"rules": [{"path": "app/*", "capabilities": ["read"]}]});
    let path = "/v1/namespaces/app/policies/reader";
    for _ in 0..2 {
        let (code, body) = keyed(
            &node,
            Method::PUT,
            path,
            &token,
            Some("p-1"),
            Some(policy.clone()),
        )
        .await;
        assert_eq!(code, 204, "{body}");
    }
    for _ in 0..2 {
        let (code, body) = keyed(&node, Method::DELETE, path, &token, Some("p-2"), None).await;
        assert_eq!(code, 204, "{body}");
    }
}

/// Steps (REST, then gRPC on the same node):
/// 1. a keyed put; the same key with the same value gets the first outcome
///    (the same bytes as `value_base64` too);
/// 2. the same key with another value is refused with 409 `conflict`
///    (gRPC `FAILED_PRECONDITION`, "conflict: …") and changes nothing: the
///    secret keeps the first value and version.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_reused_with_another_value_is_refused() {
    use base64::Engine;
    let (node, token) = node_and_token().await;
    let put = |body: Value| {
        keyed(
            &node,
            Method::PUT,
            "/v1/kv/v",
            &token,
            Some("v-1"),
            Some(body),
        )
    };

    tracing::info!("--- step 1 (REST): the same key and value: the first outcome");
    let (code, first) = put(json!({ "value": "one" })).await;
    assert_eq!((code, &first["version"]), (200, &json!(1)), "{first}");
    let (code, again) = put(json!({ "value": "one" })).await;
    assert_eq!((code, &again["version"]), (200, &json!(1)), "{again}");
    let b64 = base64::engine::general_purpose::STANDARD.encode("one");
    let (code, again) = put(json!({ "value_base64": b64 })).await;
    assert_eq!((code, &again["version"]), (200, &json!(1)), "{again}");

    tracing::info!("--- step 2 (REST): the same key, another value: 409");
    let (code, body) = put(json!({ "value": "two" })).await;
    assert_eq!(code, 409, "{body}");
    assert_error(&body, "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("idempotency key")),
        "{body}"
    );
    let (code, got) = node.http.get("/v1/kv/v", Some(&token)).await;
    assert_eq!(
        (code, &got["value"], &got["version"]),
        (200, &json!("one"), &json!(1)),
        "{got}"
    );

    tracing::info!("--- step 1 (gRPC): the same key and value: the first outcome");
    use kstash::api::grpc::pb;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = pb::kv_client::KvClient::new(channel);
    let request = |value: &[u8]| {
        let mut r = tonic::Request::new(pb::PutSecretRequest {
            path: "g".into(),
            value: value.to_vec(),
            cas: None,
            idempotency_key: "g-1".into(),
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    for attempt in 1..=2 {
        let version = kv
            .put(request(b"alpha"))
            .await
            .unwrap()
            .into_inner()
            .version;
        assert_eq!(version, 1, "attempt {attempt}");
    }

    tracing::info!("--- step 2 (gRPC): the same key, another value: refused");
    let e = kv.put(request(b"beta")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().starts_with("conflict:"), "{e:?}");
    let (code, got) = node.http.get("/v1/kv/g", Some(&token)).await;
    assert_eq!(
        (code, &got["value"], &got["version"]),
        (200, &json!("alpha"), &json!(1)),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_scoped_to_the_caller() {
    let node = TestNode::start().await;
    let init = node.init_unsealed(1, 1).await;
    let a = node
        .login(&init["access_key"], "app", &["admin"], None)
        .await;
    let b = node
        .login(&init["access_key"], "app", &["admin"], None)
        .await;
    let body = || Some(json!({ "value": "v" }));
    let (code, first) = keyed(&node, Method::PUT, "/v1/kv/s", &a, Some("same"), body()).await;
    assert_eq!((code, &first["version"]), (200, &json!(1)), "{first}");
    // Another token's identical key is its own: applied, not answered.
    let (code, other) = keyed(&node, Method::PUT, "/v1/kv/s", &b, Some("same"), body()).await;
    assert_eq!((code, &other["version"]), (200, &json!(2)), "{other}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_and_misplaced_keys_are_refused() {
    let (node, token) = node_and_token().await;
    let long = "k".repeat(129);
    for bad in ["has space", "semi;colon", long.as_str(), "é"] {
        let body = Some(json!({ "value": "v" }));
        let (code, body) = keyed(&node, Method::PUT, "/v1/kv/x", &token, Some(bad), body).await;
        assert_eq!(code, 400, "{bad:?}: {body}");
        assert_error(&body, "bad_request");
    }
    let (code, _) = node.http.get("/v1/kv/x", Some(&token)).await;
    assert_eq!(code, 404, "no refused write applied");
    // Where a key would be ignored it is refused instead.
    for (method, path) in [
        (Method::GET, "/v1/kv/x"),
        (Method::POST, "/v1/auth/token/renew"),
        (Method::GET, "/v1/namespaces/app/policies"),
    ] {
        let (code, body) = keyed(&node, method.clone(), path, &token, Some("k"), None).await;
        assert_eq!(code, 400, "{method} {path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_and_linearizable_reads() {
    let (node, token) = node_and_token().await;
    let (code, _) = node
        .http
        .put("/v1/kv/a/b", Some(&token), json!({"value": "v"}))
        .await;
    assert_eq!(code, 200);
    for q in ["", "?consistency=linearizable", "?consistency=stale"] {
        let (code, body) = node.http.get(&format!("/v1/kv/a/b{q}"), Some(&token)).await;
        assert_eq!((code, &body["value"]), (200, &json!("v")), "{q}: {body}");
    }
    let (code, body) = node
        .http
        .get("/v1/kv/a?list=true&consistency=stale", Some(&token))
        .await;
    assert_eq!((code, &body["keys"]), (200, &json!(["b"])), "{body}");
    let (code, body) = node
        .http
        .get("/v1/kv/a/b?consistency=eventual", Some(&token))
        .await;
    assert_eq!(code, 400, "{body}");
}

fn client(addresses: Vec<String>, token: &str) -> Client {
    Client::new(&ClientOptions {
        addresses,
        token: Some(SecretString::new(token.to_string())),
        ca_cert: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

fn value(v: &str) -> PutSecretRequest {
    PutSecretRequest {
        value: Some(SecretString::new(v.to_string())),
        value_base64: None,
        cas: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_fails_over_past_dead_and_sealed_nodes() {
    let (live, token) = node_and_token().await;
    // A second node, initialised but sealed: its gate answers 503 `sealed`.
    let sealed = TestNode::start().await;
    let (code, body) = sealed
        .http
        .post("/v1/sys/init", None, json!({"shares": 1, "threshold": 1}))
        .await;
    assert_eq!(code, 200, "{body}");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let addresses = vec![
        dead,
        format!("http://{}", sealed.server.addr),
        format!("http://{}", live.server.addr),
    ];
    let c = client(addresses, &token);
    let put = c.kv_put("fo/x", &value("v1"), None).await.unwrap();
    assert_eq!(put.version, 1);
    let got = c.kv_get("fo/x", false).await.unwrap();
    assert_eq!(got.value.unwrap().expose(), "v1");
    c.kv_delete("fo/x", None).await.unwrap();

    // With only the sealed node, its answer (not a connection error) is
    // what the caller sees.
    let only_sealed = client(vec![format!("http://{}", sealed.server.addr)], &token);
    match only_sealed.kv_get("fo/x", false).await {
        Err(ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (503, "sealed"))
        }
        other => panic!("expected 503 sealed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_resends_a_write_only_under_its_key() {
    let (node, token) = node_and_token().await;
    let c = client(vec![format!("http://{}", node.server.addr)], &token);
    // The library sends every secret write with a key: the caller's own
    // key makes a second call (a retry by the application) apply once.
    let a = c
        .kv_put("r/x", &value("v"), Some("app-retry-1"))
        .await
        .unwrap();
    let b = c
        .kv_put("r/x", &value("v"), Some("app-retry-1"))
        .await
        .unwrap();
    assert_eq!((a.version, b.version), (1, 1));
    // Without a caller's key each call is a new write.
    let c2 = c.kv_put("r/x", &value("v"), None).await.unwrap();
    assert_eq!(c2.version, 2);
    c.kv_delete("r/x", Some("del-1")).await.unwrap();
    c.kv_delete("r/x", Some("del-1")).await.unwrap();
    assert!(matches!(
        c.kv_delete("r/x", None).await,
        Err(ClientError::Api { status: 404, .. })
    ));
}
