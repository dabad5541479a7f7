//! The REST walk-through of the single-node acceptance, step by step.

use serde_json::json;

use crate::common::{assert_error, TestNode};

/// Steps: init 5/3 → status sealed → 2 keys (progress 2/3) → 3rd unseals →
/// admin login for team-a → policy app-rw → app-rw login → put/get app/db →
/// team-b token 403 → app/../x 400 → expired token 401 → revoked token 401.
#[tokio::test]
async fn rest_walk_through() {
    let n = TestNode::start().await;
    let h = &n.http;

    tracing::info!("--- step: init 5/3");
    let (code, st) = h.get("/v1/sys/status", None).await;
    assert_eq!((code, &st["initialized"]), (200, &json!(false)));
    let (code, init) = h
        .post("/v1/sys/init", None, json!({"shares": 5, "threshold": 3}))
        .await;
    assert_eq!(code, 200, "{init}");
    let keys = init["unseal_keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 5);
    assert_eq!(init["gatekeeper_tokens"].as_array().unwrap().len(), 1);
    let (code, again) = h
        .post("/v1/sys/init", None, json!({"shares": 5, "threshold": 3}))
        .await;
    assert_eq!(code, 409, "init happens once: {again}");

    tracing::info!("--- step: sealed, progress 2/3");
    let (_, st) = h.get("/v1/sys/status", None).await;
    assert_eq!(st["sealed"], true);
    assert_eq!(st["threshold"], 3);
    for (i, k) in keys.iter().take(2).enumerate() {
        let (code, st) = h.post("/v1/sys/unseal", None, json!({"key": k})).await;
        assert_eq!(code, 200, "{st}");
        assert_eq!(st["progress"], i + 1);
        assert_eq!(st["sealed"], true);
    }
    let (code, _) = h.get("/v1/kv/app/db", None).await;
    assert_eq!(code, 503, "sealed: nothing but status and unseal answer");
    for (method, path, body) in [
        ("GET", "/v1/kv/app/%2e%2e/x", None),
        ("PUT", "/v1/namespaces/team-a/policies/p", Some("{not json")),
        ("POST", "/v1/auth/access-key/login", Some("{}")),
        ("GET", "/v1/auth/token/self", None),
        ("POST", "/v1/sys/seal", Some("{}")),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (code, body) = h
            .send(m, path, Some("garbage"), body.map(String::from))
            .await;
        assert_eq!(code, 503, "{method} {path} while sealed: {body}");
        crate::common::assert_error(&body, "sealed");
    }

    tracing::info!("--- step: third key unseals");
    let (code, st) = h
        .post("/v1/sys/unseal", None, json!({"key": keys[2]}))
        .await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["sealed"], false);
    assert_eq!(st["progress"], 0);

    tracing::info!("--- step: policy and tokens for team-a");
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    let policy =
        json!({"rules": [{"path": "app/*", "capabilities": ["read", "create", "update"]}]});
    let (code, body) = h
        .put(
            "/v1/namespaces/team-a/policies/app-rw",
            Some(&admin),
            policy,
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let app = n
        .login(&init["access_key"], "team-a", &["app-rw"], None)
        .await;

    tracing::info!("--- step: put/get app/db");
    let (code, body) = h
        .put("/v1/kv/app/db", Some(&app), json!({"value": "s3cret"}))
        .await;
    assert_eq!((code, &body["version"]), (200, &json!(1)), "{body}");
    let (code, body) = h.get("/v1/kv/app/db", Some(&app)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value"], "s3cret");
    assert_eq!(body["version"], 1);
    let (code, body) = h.delete("/v1/kv/app/db", Some(&app)).await;
    assert_eq!(code, 403, "app-rw has no delete: {body}");
    assert_error(&body, "forbidden");

    tracing::info!("--- step: team-b is refused");
    let team_b = n
        .login(&init["access_key"], "team-b", &["app-rw"], None)
        .await;
    let (code, body) = h.get("/v1/kv/app/db", Some(&team_b)).await;
    assert_eq!(code, 403, "{body}");
    let team_b_admin = n
        .login(&init["access_key"], "team-b", &["admin"], None)
        .await;
    let (code, _) = h.get("/v1/kv/app/db", Some(&team_b_admin)).await;
    assert_eq!(
        code, 404,
        "team-b's namespace does not hold team-a's secret"
    );
    let (code, _) = h
        .get("/v1/namespaces/team-a/policies/app-rw", Some(&team_b_admin))
        .await;
    assert_eq!(code, 403);

    tracing::info!("--- step: dot segments are refused");
    for bad in [
        "/v1/kv/app/../x",
        "/v1/kv/app/%2e%2e/x",
        "/v1/kv/app%2Fdb",
        "/v1/kv/app//db",
        "/v1/kv/./app",
    ] {
        let (code, body) = h.raw_get(bad, &app).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_error(&body, "bad_request");
    }

    tracing::info!("--- step: expired token");
    let short = n
        .login(&init["access_key"], "team-a", &["app-rw"], Some("1s"))
        .await;
    let (code, _) = h.get("/v1/kv/app/db", Some(&short)).await;
    assert_eq!(code, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (code, body) = h.get("/v1/kv/app/db", Some(&short)).await;
    assert_eq!(code, 401, "{body}");
    assert_error(&body, "unauthorized");

    tracing::info!("--- step: revoked token");
    let (code, _) = h.post("/v1/auth/token/revoke", Some(&app), json!({})).await;
    assert_eq!(code, 204);
    let (code, _) = h.get("/v1/kv/app/db", Some(&app)).await;
    assert_eq!(code, 401);
    let (code, _) = h.get("/v1/auth/token/self", Some(&admin)).await;
    assert_eq!(code, 200);

    n.server.shutdown().await.unwrap();
}

/// Steps: init, team-a admin → PUT role `web` with an Idempotency-Key, twice
/// → 204 both times → GET: defaults filled in (ttl 15m, audience kstash) →
/// the list names it → the same key with another body → 409 → DELETE → GET
/// 404 → a login on a node without Kubernetes settings → 400 naming what to
/// set, never the JWT.
#[tokio::test]
async fn rest_kubernetes_roles() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = n.init_unsealed(1, 1).await;
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    let t = Some(admin.as_str());
    let path = "/v1/namespaces/team-a/auth/kubernetes/roles/web";
    let bearer = format!("Bearer {admin}");

    tracing::info!("--- step: put twice with one key");
    let body = json!({"service_accounts": ["shop/web"], "policies": ["app-ro"]});
    for _ in 0..2 {
        let (code, resp) = h
            .send_with_headers(
                reqwest::Method::PUT,
                path,
                &[("Authorization", &bearer), ("Idempotency-Key", "put-web-1")],
                Some(body.to_string()),
            )
            .await;
        assert_eq!(code, 204, "{resp}");
    }

    tracing::info!("--- step: get and list");
    let (code, got) = h.get(path, t).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(
        got,
        json!({"name": "web", "service_accounts": ["shop/web"], "policies": ["app-ro"],
               "ttl": "15m", "audience": "kstash"})
    );
    let (code, list) = h
        .get("/v1/namespaces/team-a/auth/kubernetes/roles", t)
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["roles"], json!(["web"]));
    assert_eq!(list["truncated"], false);

    tracing::info!("--- step: the same key with another role");
    let other = json!({"service_accounts": ["shop/*"]});
    let (code, resp) = h
        .send_with_headers(
            reqwest::Method::PUT,
            path,
            &[("Authorization", &bearer), ("Idempotency-Key", "put-web-1")],
            Some(other.to_string()),
        )
        .await;
    assert_eq!(code, 409, "{resp}");
    assert_error(&resp, "conflict");

    tracing::info!("--- step: delete");
    let (code, resp) = h.delete(path, t).await;
    assert_eq!(code, 204, "{resp}");
    let (code, resp) = h.get(path, t).await;
    assert_eq!(code, 404, "{resp}");

    tracing::info!("--- step: login without Kubernetes settings");
    let jwt = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWNsYWltcw.c2VjcmV0LXNpZw";
    let (code, resp) = h
        .post(
            "/v1/auth/kubernetes/login",
            None,
            json!({"namespace": "team-a", "role": "web", "jwt": jwt}),
        )
        .await;
    assert_eq!(code, 400, "{resp}");
    assert_error(&resp, "bad_request");
    let m = resp["error"]["message"].as_str().unwrap();
    assert!(m.contains("kubernetes"), "names what to set: {m}");
    assert!(!m.contains("c2VjcmV0"), "{m}");

    n.server.shutdown().await.unwrap();
}
