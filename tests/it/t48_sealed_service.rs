//! The service layer refuses every data, token and key operation while the
//! barrier is sealed on its own, without the API's sealed gate in front
//! (which answers 503 before a request reaches the service, and so hides
//! the service's own check). Cluster RPCs, which reach the service without
//! the gate, keep a sealed node sealed.

use kstash::raft::cluster::{ClusterHandler, UnsealRequest as PeerUnseal};
use kstash::secret::SecretString;
use kstash::service::types::*;
use kstash::service::ServiceError;
use serde_json::{json, Value};

use crate::common::TestNode;

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn sealed<T: std::fmt::Debug>(what: &str, r: Result<T, ServiceError>) {
    assert!(
        matches!(r, Err(ServiceError::Sealed)),
        "{what} while sealed: {r:?}"
    );
}

#[tokio::test]
async fn the_service_itself_refuses_everything_while_sealed() {
    // Steps: init, unseal, log in, write a secret and a policy; seal through
    // the service; call every operation on the service directly (no API
    // gate) with credentials that worked before: each answers Sealed, and
    // the stored state and the Raft log are unchanged; cluster RPCs (peer
    // status, a rekey hand-off) leave the node sealed.
    let n = TestNode::start().await;
    let init = n.init_unsealed(3, 2).await;
    let token = n
        .login(&init["access_key"], "default", &["admin"], None)
        .await;
    let (code, body) = n
        .http
        .put("/v1/kv/app/db", Some(&token), json!({"value": "s3cret"}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = n
        .http
        .put(
            "/v1/namespaces/default/policies/p",
            Some(&token),
            json!({"rules": [{"path": "app/*", "capabilities": ["read"]}]}),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let node = n.server.node.clone();
    let keys: Vec<Value> = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    let gk = init["gatekeeper_tokens"][0].clone();

    // The principal the front door made of the token while unsealed.
    let t = SecretString::new(token.clone());
    let holder = node
        .authenticate(Some(&t), Consistency::Stale)
        .await
        .expect("the token is live");

    tracing::info!("--- step: seal through the service");
    let out = node
        .seal(from(json!({"keys": keys})))
        .await
        .expect("seal with unseal keys");
    assert!(out.gatekeeper_token.is_none());
    assert!(node.is_sealed());
    let before = n.backend.dump();
    let log_before = n.server.replica().raft().metrics().borrow().last_log_index;

    tracing::info!("--- step: every operation, straight to the service");
    sealed(
        "authenticate",
        node.authenticate(Some(&t), Consistency::Stale).await,
    );
    let t = &holder;
    sealed(
        "put_secret",
        node.put_secret(t, "app/db", from(json!({"value": "x"})), None)
            .await,
    );
    sealed("get_secret", node.get_secret(t, "app/db").await);
    sealed(
        "list_secrets",
        node.list_secrets(t, "app/", &ListPage::default()).await,
    );
    sealed("delete_secret", node.delete_secret(t, "app/db", None).await);
    sealed(
        "put_policy",
        node.put_policy(
            t,
            "default",
            "q",
            from(json!({"rules": [{"path": "a/*", "capabilities": ["read"]}]})),
            None,
        )
        .await,
    );
    sealed("get_policy", node.get_policy(t, "default", "p").await);
    sealed(
        "list_policies",
        node.list_policies(t, "default", &ListPage::default()).await,
    );
    sealed(
        "delete_policy",
        node.delete_policy(t, "default", "p", None).await,
    );
    sealed(
        "put_kubernetes_role",
        node.put_kubernetes_role(
            t,
            "default",
            "web",
            from(json!({"service_accounts": ["apps/web"]})),
            None,
        )
        .await,
    );
    sealed(
        "get_kubernetes_role",
        node.get_kubernetes_role(t, "default", "web").await,
    );
    sealed(
        "list_kubernetes_roles",
        node.list_kubernetes_roles(t, "default", &ListPage::default())
            .await,
    );
    sealed(
        "delete_kubernetes_role",
        node.delete_kubernetes_role(t, "default", "web", None).await,
    );
    sealed(
        "login_kubernetes",
        node.login_kubernetes(from(json!({
            "namespace": "default",
            "role": "web",
            "jwt": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        })))
        .await,
    );
    sealed(
        "login",
        node.login(from(json!({
            "access_key": init["access_key"],
            "namespace": "default",
            "policies": ["admin"],
        })))
        .await,
    );
    sealed("renew_token", node.renew_token(t, from(json!({}))).await);
    sealed(
        "revoke_token",
        node.revoke_token(Some(t), from(json!({}))).await,
    );
    sealed(
        "revoke_token (another)",
        node.revoke_token(None, from(json!({"token": token}))).await,
    );
    sealed("lookup_token", node.lookup_token(t));
    sealed(
        "audit_hash",
        node.audit_hash(t, &SecretString::new("x".into())),
    );
    sealed(
        "seal",
        node.seal(from(json!({"gatekeeper_token": gk}))).await,
    );
    sealed("rotate", node.rotate(from(json!({"keys": keys}))).await);
    sealed(
        "rotate_access_key",
        node.rotate_access_key(from(json!({"keys": keys}))).await,
    );
    sealed(
        "rekey",
        node.rekey(from(json!({"keys": keys, "shares": 3, "threshold": 2})))
            .await,
    );
    sealed(
        "mint_gatekeeper_tokens",
        node.mint_gatekeeper_tokens(from(json!({"keys": keys, "count": 1})))
            .await,
    );
    sealed(
        "list_gatekeeper_tokens",
        node.list_gatekeeper_tokens(from(json!({"keys": keys})))
            .await,
    );
    sealed(
        "renew_gatekeeper_token",
        node.renew_gatekeeper_token(SecretString::new(gk.as_str().unwrap().into()))
            .await,
    );
    sealed(
        "revoke_gatekeeper_token",
        node.revoke_gatekeeper_token(from(json!({"gatekeeper_token": gk})))
            .await,
    );

    tracing::info!("--- step: cluster RPCs reach the service and leave it sealed");
    let status = ClusterHandler::peer_status(node.as_ref()).await.unwrap();
    assert!(status.sealed && status.initialized, "{status:?}");
    let reply = ClusterHandler::unseal(
        node.as_ref(),
        PeerUnseal::Rekeyed(SecretString::new(gk.as_str().unwrap().into())),
    )
    .await;
    assert!(
        reply.as_ref().map_or(true, |r| r.sealed),
        "a rekey hand-off never opens a sealed node: {reply:?}"
    );
    assert!(node.is_sealed());

    assert!(n.backend.dump() == before, "a sealed service changed state");
    assert_eq!(
        n.server.replica().raft().metrics().borrow().last_log_index,
        log_before,
        "a sealed service appended to the log"
    );

    tracing::info!("--- step: unsealed again, the same credentials work");
    for k in &keys {
        node.unseal(from(json!({"key": k}))).await.unwrap();
    }
    assert!(!node.is_sealed());
    let t = node
        .authenticate(
            Some(&SecretString::new(token.clone())),
            Consistency::Linearizable,
        )
        .await
        .expect("the token works again");
    let got = node.get_secret(&t, "app/db").await.unwrap();
    assert_eq!(got.version, 1);
}
