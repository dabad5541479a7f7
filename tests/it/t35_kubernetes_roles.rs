//! Kubernetes login roles and the login's input checks, straight through
//! the service layer (`Node`), on a node without ServiceAccount login
//! configured: everything a login does before it needs a verified token.
//! (The login with real tokens is covered end to end with the validator.)

use kstash::secret::SecretString;
use kstash::service::types::*;
use kstash::service::{Node, ServiceError, TokenHolder};
use serde_json::{json, Value};

use crate::common::TestNode;

fn body(v: Value) -> KubernetesRoleBody {
    serde_json::from_value(v).unwrap()
}

async fn holder(node: &Node, token: &str) -> TokenHolder {
    node.authenticate(Some(&SecretString::new(token.into())), Consistency::Stale)
        .await
        .expect("the token is live")
}

fn login(ns: &str, role: &str, jwt: String) -> KubernetesLoginRequest {
    KubernetesLoginRequest {
        namespace: ns.into(),
        role: role.into(),
        jwt: SecretString::new(jwt),
    }
}

#[tokio::test]
async fn roles_are_managed_by_namespace_admins_through_the_service() {
    // Steps: an admin of `team-a` puts a role (repeated policies, no ttl,
    // no audience) and reads it back normalized with the defaults; the
    // same put with the same idempotency key is answered, another body
    // with it is a conflict; a reader of `team-a` and an admin of `team-b`
    // are refused (403, worded by Denial); bad bodies are 400 with what to
    // fix; list pages; delete, then get and delete are 404.
    let n = TestNode::start().await;
    let init = n.init_unsealed(1, 1).await;
    let node = n.server.node.clone();
    let admin = holder(
        &node,
        &n.login(&init["access_key"], "team-a", &["admin"], None)
            .await,
    )
    .await;
    let reader = holder(
        &node,
        &n.login(&init["access_key"], "team-a", &["app"], None).await,
    )
    .await;
    let other = holder(
        &node,
        &n.login(&init["access_key"], "team-b", &["admin"], None)
            .await,
    )
    .await;

    tracing::info!("--- step: put and get");
    let key = IdempotencyKey::parse("role-put-1").unwrap();
    let ci = json!({
        "service_accounts": ["build/runner", "deploy/*"],
        "policies": ["app", "admin", "app"],
    });
    node.put_kubernetes_role(&admin, "team-a", "ci", body(ci.clone()), Some(&key))
        .await
        .unwrap();
    let got = node
        .get_kubernetes_role(&admin, "team-a", "ci")
        .await
        .unwrap();
    assert_eq!(
        got,
        KubernetesRoleResponse {
            name: "ci".into(),
            service_accounts: vec!["build/runner".into(), "deploy/*".into()],
            policies: vec!["app".into(), "admin".into()],
            ttl: "15m".into(),
            audience: "kstash".into(),
        }
    );
    node.put_kubernetes_role(&admin, "team-a", "ci", body(ci), Some(&key))
        .await
        .expect("a retry with the same key and body is answered");
    let changed = json!({"service_accounts": ["build/*"], "ttl": "5m"});
    let e = node
        .put_kubernetes_role(&admin, "team-a", "ci", body(changed), Some(&key))
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::Conflict(_)), "{e:?}");

    tracing::info!("--- step: not an admin of the namespace");
    let any = || body(json!({"service_accounts": ["x/y"]}));
    let last_log = || n.server.replica().raft().metrics().borrow().last_log_index;
    let log_before = last_log();
    for (who, ns) in [(&reader, "team-a"), (&other, "team-a")] {
        let e = node
            .put_kubernetes_role(who, ns, "ci", any(), None)
            .await
            .unwrap_err();
        match e {
            ServiceError::Forbidden(d) => assert!(
                d.to_string()
                    .contains("manage kubernetes roles on team-a/auth/kubernetes/roles/ci"),
                "{d}"
            ),
            other => panic!("{other:?}"),
        }
        for e in [
            node.get_kubernetes_role(who, ns, "ci").await.unwrap_err(),
            node.list_kubernetes_roles(who, ns, &ListPage::default())
                .await
                .map(|_| ())
                .unwrap_err(),
            node.delete_kubernetes_role(who, ns, "ci", None)
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(e, ServiceError::Forbidden(_)), "{e:?}");
        }
    }
    assert_eq!(
        last_log(),
        log_before,
        "refused before anything was proposed"
    );
    assert!(node
        .get_kubernetes_role(&admin, "team-a", "ci")
        .await
        .is_ok());

    tracing::info!("--- step: bad input says what to fix (nothing proposed)");
    for (v, says) in [
        (json!({"service_accounts": []}), "bind at least one"),
        (
            json!({"service_accounts": ["*/app"]}),
            "every Kubernetes namespace",
        ),
        (json!({"service_accounts": ["ns/app-*"]}), "'*' stands only"),
        (
            json!({"service_accounts": ["ns/a", "ns/a"]}),
            "listed twice",
        ),
        (
            json!({"service_accounts": ["ns/a"], "ttl": "0s"}),
            "at least 1s",
        ),
        (
            json!({"service_accounts": ["ns/a"], "ttl": "400d"}),
            "exceeds the maximum",
        ),
        (
            json!({"service_accounts": ["ns/a"], "audience": "a b"}),
            "audience",
        ),
        (
            json!({"service_accounts": ["ns/a"], "policies": ["A"]}),
            "policy name",
        ),
    ] {
        let e = node
            .put_kubernetes_role(&admin, "team-a", "bad", body(v.clone()), None)
            .await
            .unwrap_err();
        match e {
            ServiceError::BadRequest(m) => assert!(m.contains(says), "{v}: {m}"),
            other => panic!("{v}: {other:?}"),
        }
    }
    let e = node
        .put_kubernetes_role(&admin, "team-a", "Bad", any(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ServiceError::BadRequest(m) if m.starts_with("role name")),
        "{e:?}"
    );
    assert_eq!(last_log(), log_before);

    tracing::info!("--- step: list pages");
    for name in ["b", "a"] {
        node.put_kubernetes_role(&admin, "team-a", name, any(), None)
            .await
            .unwrap();
    }
    let page = |cursor: Option<&str>| ListPage {
        cursor: cursor.map(str::to_owned),
        limit: Some(2),
    };
    let first = node
        .list_kubernetes_roles(&admin, "team-a", &page(None))
        .await
        .unwrap();
    assert_eq!(
        (first.roles.clone(), first.truncated, first.cursor.clone()),
        (vec!["a".into(), "b".into()], true, Some("b".into()))
    );
    let second = node
        .list_kubernetes_roles(&admin, "team-a", &page(first.cursor.as_deref()))
        .await
        .unwrap();
    assert_eq!(
        (second.roles, second.truncated, second.cursor),
        (vec!["ci".to_string()], false, None)
    );

    tracing::info!("--- step: delete");
    node.delete_kubernetes_role(&admin, "team-a", "ci", None)
        .await
        .unwrap();
    for e in [
        node.get_kubernetes_role(&admin, "team-a", "ci")
            .await
            .map(|_| ())
            .unwrap_err(),
        node.delete_kubernetes_role(&admin, "team-a", "ci", None)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(
            e,
            ServiceError::NotFound("no kubernetes role ci in namespace team-a".into())
        );
    }
}

#[tokio::test]
async fn a_login_checks_its_input_before_any_token_check() {
    // Steps: while sealed, a login is refused as sealed; unsealed, an
    // invalid namespace or role name is 400, a JWT over 16 KiB is 413 and
    // its text never appears in the answer; a well-formed login on a node
    // without ServiceAccount login configured is 400 naming the settings
    // (whether or not the role exists); nothing was written.
    let n = TestNode::start().await;
    let node = n.server.node.clone();
    let jwt = || "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".to_string();
    let e = node
        .login_kubernetes(login("team-a", "ci", jwt()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ServiceError::Sealed | ServiceError::NotInitialized),
        "{e:?}"
    );
    let init = n.init_unsealed(1, 1).await;
    let admin = holder(
        &node,
        &n.login(&init["access_key"], "team-a", &["admin"], None)
            .await,
    )
    .await;
    node.put_kubernetes_role(
        &admin,
        "team-a",
        "ci",
        body(json!({"service_accounts": ["build/*"]})),
        None,
    )
    .await
    .unwrap();
    let before = n.backend.dump();
    let log_before = n.server.replica().raft().metrics().borrow().last_log_index;

    for (req, says) in [
        (login("Team_A", "ci", jwt()), "namespace"),
        (login("team-a", "C I", jwt()), "role name"),
        (login("team-a", "", jwt()), "role name"),
    ] {
        match node.login_kubernetes(req).await {
            Err(ServiceError::BadRequest(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let huge = format!("secret-part-{}", "x".repeat(16 * 1024));
    match node.login_kubernetes(login("team-a", "ci", huge)).await {
        Err(ServiceError::TooLarge(m)) => {
            assert!(m.contains("16384"), "{m}");
            assert!(!m.contains("secret-part"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    for role in ["ci", "missing"] {
        match node.login_kubernetes(login("team-a", role, jwt())).await {
            Err(ServiceError::BadRequest(m)) => {
                for setting in [
                    "kubernetes_issuer",
                    "kubernetes_jwks_file",
                    "kubernetes_api",
                ] {
                    assert!(m.contains(setting), "{m}");
                }
            }
            other => panic!("{role}: {other:?}"),
        }
    }
    assert!(n.backend.dump() == before, "a refused login writes nothing");
    assert_eq!(
        n.server.replica().raft().metrics().borrow().last_log_index,
        log_before,
        "nor proposes anything"
    );
}
