//! Rekey in a cluster: the node that rekeys hands the new root key's
//! gatekeeper token to every unsealed peer over the cluster channel, so
//! their barriers keep opening keychains rotated after the rekey.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{three_node_cluster, wait_until, ClusterCerts, LinkCuts};

const SETTLE: Duration = Duration::from_secs(20);

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
    let nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;

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
            let (_, st) = n.http.get("/v1/sys/status", None).await;
            all &= st["sealed"] == false;
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

    tracing::info!("--- step: rekey, then rotate with the new gatekeeper token");
    let (code, rekey) = nodes[0]
        .http
        .post(
            "/v1/sys/rekey",
            None,
            json!({"keys": [keys[0], keys[1], keys[2]], "shares": 3, "threshold": 2}),
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
        .put("/v1/kv/a/new", Some(&token), json!({"value": "v2"}))
        .await;
    assert_eq!(code, 200, "{body}");

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
