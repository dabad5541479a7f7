//! Rekey in a cluster: the node that rekeys hands the new root key's
//! gatekeeper token to every unsealed peer over the cluster channel, so
//! their barriers keep opening keychains rotated after the rekey.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{three_node_cluster, wait_until, ClusterCerts, ClusterNode, LinkCuts};

const SETTLE: Duration = Duration::from_secs(20);

/// Three nodes, initialised 5/3 through node 1 and unsealed through node 2
/// (coordinated); returns the nodes, the unseal keys and an admin token
/// for `app`, with `a/old` written through node 2.
async fn unsealed_cluster(
    root: &std::path::Path,
    certs: &ClusterCerts,
    cuts: &LinkCuts,
) -> (Vec<ClusterNode>, Vec<Value>, String) {
    let nodes = three_node_cluster(root, certs, cuts, |_| {}, SETTLE).await;

    tracing::info!("--- step: init and coordinated unseal");
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 5, "threshold": 3}))
        .await;
    assert_eq!(code, 200, "{init}");
    let keys: Vec<Value> = init["unseal_keys"].as_array().unwrap().clone();
    for k in keys.iter().take(3) {
        let (code, body) = nodes[1]
            .http
            .post("/v1/sys/unseal", None, json!({"key": k}))
            .await;
        assert_eq!(code, 200, "{body}");
    }
    wait_until(SETTLE, "every node unsealed", || async {
        let mut all = true;
        for n in &nodes {
            all &= !sealed(n).await;
        }
        all
    })
    .await;
    let (code, login) = nodes[0]
        .http
        .post(
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": init["access_key"], "namespace": "app", "policies": ["admin"]}),
        )
        .await;
    assert_eq!(code, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_string();
    let (code, body) = nodes[1]
        .http
        .put("/v1/kv/a/old", Some(&token), json!({"value": "v1"}))
        .await;
    assert_eq!(code, 200, "{body}");
    (nodes, keys, token)
}

async fn sealed(n: &ClusterNode) -> bool {
    let (_, st) = n.http.get("/v1/sys/status", None).await;
    st["sealed"] != false
}

/// Rekey through node 1 with the first three `keys` (new 3/2), then rotate
/// with the new gatekeeper token and write `a/new` (term 2) through node 1.
/// Returns the rekey's answer.
async fn rekey_rotate_write(nodes: &[ClusterNode], keys: &[Value], token: &str) -> Value {
    let (code, rekey) = nodes[0]
        .http
        .post(
            "/v1/sys/rekey",
            None,
            json!({"keys": [keys[0], keys[1], keys[2]], "shares": 3, "threshold": 2, "gatekeeper_tokens": 2}),
        )
        .await;
    assert_eq!(code, 200, "{rekey}");
    let (code, rotated) = nodes[0]
        .http
        .post(
            "/v1/sys/rotate",
            None,
            json!({"gatekeeper_token": rekey["gatekeeper_tokens"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{rotated}");
    assert_eq!(rotated["key_term"], 2);
    let (code, body) = nodes[0]
        .http
        .put("/v1/kv/a/new", Some(token), json!({"value": "v2"}))
        .await;
    assert_eq!(code, 200, "{body}");
    rekey
}

/// Steps: three nodes → init 5/3 through node 1 → unseal through node 2
/// (coordinated) → write `a/old` → rekey through node 1 → rotate through
/// node 1 with the new gatekeeper token → write `a/new` through node 1 (new
/// term) → both values read on every node → old unseal keys are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_follow_a_rekey_and_read_values_of_later_terms() {
    let root = tempfile::Builder::new()
        .prefix("rekey-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let (nodes, keys, token) = unsealed_cluster(root.path(), &certs, &cuts).await;

    tracing::info!("--- step: rekey, then rotate with the new gatekeeper token");
    rekey_rotate_write(&nodes, &keys, &token).await;

    tracing::info!("--- step: every node reads both terms");
    for n in &nodes {
        for (path, value) in [("/v1/kv/a/old", "v1"), ("/v1/kv/a/new", "v2")] {
            let (code, body) = n.http.get(path, Some(&token)).await;
            assert_eq!(code, 200, "node {} {path}: {body}", n.id());
            assert_eq!(body["value"], value, "node {} {path}", n.id());
        }
    }

    tracing::info!("--- step: old unseal keys no longer rebuild the gatekeeper key");
    let (code, body) = nodes[2]
        .http
        .post(
            "/v1/sys/rotate",
            None,
            json!({"keys": [keys[0], keys[1], keys[2]]}),
        )
        .await;
    assert_eq!(code, 400, "{body}");

    for n in nodes {
        n.stop().await;
    }
}

/// A peer cut off during the rekey misses the hand-off and still holds the
/// old root key. Steps: cut node 3 off → rekey, rotate, write `a/new`
/// through node 1 → heal; node 3 catches up → a read of `a/new` there finds
/// a keychain its root cannot open: node 3 seals itself (503 `sealed`, never
/// a wrong answer) → one gatekeeper-token unseal through node 1 opens it →
/// it reads both values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_missed_the_rekey_seals_itself_until_unsealed() {
    let root = tempfile::Builder::new()
        .prefix("rekey-missed-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let (nodes, keys, token) = unsealed_cluster(root.path(), &certs, &cuts).await;

    tracing::info!("--- step: node 3 cut off; rekey, rotate and write without it");
    cuts.isolate(3, &[1, 2, 3]);
    let rekey = rekey_rotate_write(&nodes, &keys, &token).await;

    tracing::info!("--- step: heal; node 3 catches up and seals itself on the new keychain");
    cuts.heal();
    let target = nodes[0].applied();
    wait_until(SETTLE, "node 3 applied the rekey and the write", || async {
        nodes[2].applied() >= target
    })
    .await;
    assert!(!sealed(&nodes[2]).await, "node 3 does not know yet");
    let (code, body) = nodes[2].http.get("/v1/kv/a/new", Some(&token)).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "sealed", "{body}");
    assert!(sealed(&nodes[2]).await, "node 3 sealed itself");
    for n in &nodes[..2] {
        let (code, body) = n.http.get("/v1/kv/a/new", Some(&token)).await;
        assert_eq!((code, &body["value"]), (200, &json!("v2")), "{body}");
    }

    tracing::info!("--- step: one gatekeeper-token unseal through node 1 opens node 3");
    let (code, body) = nodes[0]
        .http
        .post(
            "/v1/sys/unseal",
            None,
            json!({"gatekeeper_token": rekey["gatekeeper_tokens"][1]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    wait_until(SETTLE, "node 3 unsealed", || async {
        !sealed(&nodes[2]).await
    })
    .await;
    for (path, value) in [("/v1/kv/a/old", "v1"), ("/v1/kv/a/new", "v2")] {
        let (code, body) = nodes[2].http.get(path, Some(&token)).await;
        assert_eq!(
            (code, &body["value"]),
            (200, &json!(value)),
            "{path}: {body}"
        );
    }

    for n in nodes {
        n.stop().await;
    }
}
