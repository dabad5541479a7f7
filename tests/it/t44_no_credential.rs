//! A call that proves nothing writes nothing: anonymous calls and calls with
//! unknown credentials never append to the Raft log, over REST and gRPC, and
//! the answer does not tell an absent record from a present one. Also: the
//! gatekeeper-token cap holds under renewal, and renewing never blocks
//! minting.

use kstash::api::grpc::pb;
use kstash::secret::{new_bearer, SecretKind};
use pb::auth_client::AuthClient;
use pb::kv_client::KvClient;
use pb::policies_client::PoliciesClient;
use pb::sys_client::SysClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::common::TestNode;

fn last_log_index(n: &TestNode) -> u64 {
    n.server
        .replica()
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0)
}

fn unknown(kind: SecretKind) -> String {
    new_bearer(kind).expose().to_string()
}

#[tokio::test]
async fn anonymous_calls_append_nothing() {
    // Steps: init and unseal a node; log in once; note the last log index;
    // send a burst of calls that carry no valid credential (unknown access
    // tokens, gatekeeper tokens, access key, unseal keys; init again) over
    // REST and gRPC; the log index is unchanged; revoking an absent and a
    // present token answers the same.
    let n = TestNode::start().await;
    let init = n.init_unsealed(3, 2).await;
    let admin = n
        .login(&init["access_key"], "default", &["admin"], None)
        .await;
    let h = &n.http;
    let before = last_log_index(&n);
    assert!(before > 0);

    tracing::info!("--- step: a REST burst without a valid credential");
    let wrong_keys = json!({"keys": [
        "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghij",
        "ZbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefghij",
    ]});
    for round in 0..20 {
        let kst = unknown(SecretKind::AccessToken);
        let ksg = unknown(SecretKind::GatekeeperToken);
        let ksa = unknown(SecretKind::AccessKey);
        let calls: Vec<(&str, &str, Option<&str>, Value, u16)> = vec![
            (
                "POST",
                "/v1/auth/token/revoke",
                None,
                json!({"token": kst}),
                204,
            ),
            ("POST", "/v1/auth/token/revoke", Some(&kst), json!({}), 401),
            ("POST", "/v1/auth/token/renew", Some(&kst), json!({}), 401),
            (
                "POST",
                "/v1/sys/gatekeeper-tokens/revoke",
                None,
                json!({"gatekeeper_token": ksg}),
                204,
            ),
            (
                "POST",
                "/v1/sys/gatekeeper-tokens/renew",
                None,
                json!({"gatekeeper_token": ksg}),
                401,
            ),
            (
                "POST",
                "/v1/sys/seal",
                None,
                json!({"gatekeeper_token": ksg}),
                401,
            ),
            (
                "POST",
                "/v1/sys/rotate",
                None,
                json!({"gatekeeper_token": ksg}),
                401,
            ),
            (
                "POST",
                "/v1/sys/access-key/rotate",
                None,
                json!({"gatekeeper_token": ksg}),
                401,
            ),
            ("POST", "/v1/sys/rotate", None, wrong_keys.clone(), 400),
            ("POST", "/v1/sys/rekey", None, wrong_keys.clone(), 400),
            (
                "POST",
                "/v1/sys/gatekeeper-tokens",
                None,
                wrong_keys.clone(),
                400,
            ),
            (
                "POST",
                "/v1/sys/init",
                None,
                json!({"shares": 1, "threshold": 1}),
                409,
            ),
            (
                "POST",
                "/v1/auth/access-key/login",
                None,
                json!({"access_key": ksa, "namespace": "default", "policies": ["admin"]}),
                401,
            ),
            (
                "PUT",
                "/v1/kv/app/x",
                Some(&kst),
                json!({"value": "v"}),
                401,
            ),
            ("DELETE", "/v1/kv/app/x", Some(&kst), Value::Null, 401),
            (
                "PUT",
                "/v1/namespaces/default/policies/p",
                Some(&kst),
                json!({"rules": [{"path": "a/*", "capabilities": ["read"]}]}),
                401,
            ),
            (
                "DELETE",
                "/v1/namespaces/default/policies/p",
                Some(&kst),
                Value::Null,
                401,
            ),
        ];
        for (method, path, token, body, want) in calls {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let body = (!body.is_null()).then(|| body.to_string());
            let (code, resp) = h.send(method, path, token, body).await;
            assert_eq!(code, want, "round {round}: {path}: {resp}");
        }
    }
    assert_eq!(
        last_log_index(&n),
        before,
        "the REST burst appended entries"
    );

    tracing::info!("--- step: the same over gRPC");
    let channel = Channel::from_shared(format!("http://{}", n.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut sys = SysClient::new(channel.clone());
    let mut auth = AuthClient::new(channel.clone());
    let mut kv = KvClient::new(channel.clone());
    let mut policies = PoliciesClient::new(channel);
    for _ in 0..10 {
        let kst = unknown(SecretKind::AccessToken);
        let ksg = unknown(SecretKind::GatekeeperToken);
        auth.revoke_token(pb::RevokeTokenRequest {
            token: Some(kst.clone()),
        })
        .await
        .expect("revoking an unknown token answers like a known one");
        sys.revoke_gatekeeper_token(pb::RevokeGatekeeperTokenRequest {
            gatekeeper_token: Some(ksg.clone()),
            ..Default::default()
        })
        .await
        .expect("revoking an unknown gatekeeper token answers like a known one");
        let gk = pb::GatekeeperAuth {
            gatekeeper_token: Some(ksg.clone()),
            keys: vec![],
        };
        assert!(sys.seal(gk.clone()).await.is_err());
        assert!(sys.rotate(gk.clone()).await.is_err());
        assert!(sys.rotate_access_key(gk).await.is_err());
        assert!(sys
            .init(pb::InitRequest {
                shares: 1,
                threshold: 1,
                gatekeeper_tokens: None
            })
            .await
            .is_err());
        let mut put = tonic::Request::new(pb::PutSecretRequest {
            path: "app/x".into(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        put.metadata_mut()
            .insert("x-kstash-token", kst.parse().unwrap());
        assert!(kv.put(put).await.is_err());
        let mut del = tonic::Request::new(pb::DeletePolicyRequest {
            namespace: "default".into(),
            name: "p".into(),
            ..Default::default()
        });
        del.metadata_mut()
            .insert("x-kstash-token", kst.parse().unwrap());
        assert!(policies.delete_policy(del).await.is_err());
    }
    assert_eq!(
        last_log_index(&n),
        before,
        "the gRPC burst appended entries"
    );

    tracing::info!("--- step: absent and present records answer the same");
    let victim = n
        .login(&init["access_key"], "default", &["admin"], None)
        .await;
    let absent = h
        .post(
            "/v1/auth/token/revoke",
            None,
            json!({"token": unknown(SecretKind::AccessToken)}),
        )
        .await;
    let present = h
        .post("/v1/auth/token/revoke", None, json!({"token": victim}))
        .await;
    assert_eq!(absent, present);
    assert_eq!(h.get("/v1/auth/token/self", Some(&victim)).await.0, 401);
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap();
    let absent = h
        .post(
            "/v1/sys/gatekeeper-tokens/revoke",
            None,
            json!({"gatekeeper_token": unknown(SecretKind::GatekeeperToken)}),
        )
        .await;
    let present = h
        .post(
            "/v1/sys/gatekeeper-tokens/revoke",
            None,
            json!({"gatekeeper_token": gk}),
        )
        .await;
    assert_eq!(absent, present);
    let (code, _) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": gk}))
        .await;
    assert_eq!(code, 401, "the presented gatekeeper token was revoked");
    assert_eq!(h.get("/v1/auth/token/self", Some(&admin)).await.0, 200);
}

#[tokio::test]
async fn a_renew_loop_keeps_the_cap_and_never_blocks_minting() {
    // Steps: init with 16 gatekeeper tokens; mint up to the cap of 64; renew
    // one token 80 times in a row (inside one grace window); the list never
    // shows more than 64 records; revoke 16 unused tokens and mint 16 again:
    // the used records of the renew loop do not block it.
    let n = TestNode::start().await;
    let (code, init) = n
        .http
        .post(
            "/v1/sys/init",
            None,
            json!({"shares": 1, "threshold": 1, "gatekeeper_tokens": 16}),
        )
        .await;
    assert_eq!(code, 200, "{init}");
    let keys = init["unseal_keys"].clone();
    let h = &n.http;
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"key": keys[0]}))
        .await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..3 {
        let (code, body) = h
            .post(
                "/v1/sys/gatekeeper-tokens",
                None,
                json!({"keys": keys, "count": 16}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(list(h, &keys).await.len(), 64);

    tracing::info!("--- step: a renew loop");
    let mut token = init["gatekeeper_tokens"][0].as_str().unwrap().to_string();
    for i in 0..80 {
        let (code, body) = h
            .post(
                "/v1/sys/gatekeeper-tokens/renew",
                None,
                json!({"gatekeeper_token": token}),
            )
            .await;
        assert_eq!(code, 200, "renew {i}: {body}");
        token = body["gatekeeper_token"].as_str().unwrap().to_string();
        assert!(list(h, &keys).await.len() <= 64, "renew {i} passed the cap");
    }
    let (code, body) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": token}))
        .await;
    assert_eq!(code, 200, "the last replacement works: {body}");
    token = body["gatekeeper_token"].as_str().unwrap().to_string();
    let (code, body) = h
        .post("/v1/sys/unseal", None, json!({"gatekeeper_token": token}))
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step: used records give way to minting");
    let tokens = list(h, &keys).await;
    let unused: Vec<&str> = tokens
        .iter()
        .filter(|t| t["used_at"].is_null())
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(unused.len(), 64);
    for id in unused.iter().take(16) {
        let (code, body) = h
            .post(
                "/v1/sys/gatekeeper-tokens/revoke",
                None,
                json!({"id": id, "keys": keys}),
            )
            .await;
        assert_eq!(code, 204, "{body}");
    }
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens",
            None,
            json!({"keys": keys, "count": 16}),
        )
        .await;
    assert_eq!(code, 200, "a renew loop must not block minting: {body}");
    assert!(list(h, &keys).await.len() <= 64);
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens",
            None,
            json!({"keys": keys, "count": 1}),
        )
        .await;
    assert_eq!(code, 400, "64 unused tokens is the cap: {body}");
}

/// Every gatekeeper-token record, listed with the unseal keys.
async fn list(h: &crate::common::Http, keys: &Value) -> Vec<Value> {
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/list",
            None,
            json!({"keys": keys}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["tokens"].as_array().unwrap().clone()
}
