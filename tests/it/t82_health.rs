//! Health semantics, as probes and load balancers see them:
//! - `/livez`: 200 whenever the process answers (sealed and uninitialised
//!   nodes are alive);
//! - `/readyz`: 200 when the node serves clients (initialised, unsealed, a
//!   leader known), else 503 with the reason;
//! - `/v1/sys/health`: 501 not initialised, 503 sealed (or no leader),
//!   200 the unsealed leader, 429 an unsealed follower (200 with
//!   `?standbyok=true`); the body is always the status.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::{three_node_cluster, wait_until, ClusterCerts, Http, LinkCuts, TestNode};

const SETTLE: Duration = Duration::from_secs(20);

/// (status code, body text) of a GET.
async fn probe(http: &Http, path: &str) -> (u16, String) {
    let (code, body) = http.send_with_headers(Method::GET, path, &[], None).await;
    let text = match body {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    (code, text)
}

/// The three answers of one node: (livez, readyz, health) status codes.
async fn probes(http: &Http) -> (u16, u16, u16) {
    let (live, _) = probe(http, "/livez").await;
    let (ready, _) = probe(http, "/readyz").await;
    let (health, _) = probe(http, "/v1/sys/health").await;
    (live, ready, health)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_through_its_life() {
    let node = TestNode::start().await;
    let h = &node.http;
    assert_eq!(probes(h).await, (200, 503, 501), "before init");
    let (_, why) = probe(h, "/readyz").await;
    assert!(why.contains("not initialized"), "{why}");

    let (code, init) = h
        .post("/v1/sys/init", None, json!({"shares": 1, "threshold": 1}))
        .await;
    assert_eq!(code, 200, "{init}");
    assert_eq!(probes(h).await, (200, 503, 503), "initialised, sealed");
    let (_, why) = probe(h, "/readyz").await;
    assert!(why.contains("sealed"), "{why}");
    let (code, body) = h.get("/v1/sys/health", None).await;
    assert_eq!(
        (code, &body["sealed"]),
        (503, &json!(true)),
        "the body is the status"
    );

    let (code, body) = h
        .post(
            "/v1/sys/unseal",
            None,
            json!({"key": init["unseal_keys"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(probes(h).await, (200, 200, 200), "unsealed, leads itself");
    let (code, st) = h.get("/v1/sys/status", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        (&st["leader"], &st["leader_id"]),
        (&json!(true), &json!(1)),
        "{st}"
    );

    let (code, body) = h.get("/v1/sys/health?standbyok=perhaps", None).await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_followers_and_a_sealed_restart() {
    let root = tempfile::Builder::new()
        .prefix("health-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let mut nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    let init = crate::t76_faults::init_and_unseal(&nodes).await;

    let leader = nodes[0].leader().expect("a leader");
    wait_until(SETTLE, "every node ready", || async {
        let mut all = true;
        for n in &nodes {
            all &= probe(&n.http, "/readyz").await.0 == 200;
        }
        all
    })
    .await;
    for n in &nodes {
        let (live, ready, health) = probes(&n.http).await;
        let expected = if n.id() == leader { 200 } else { 429 };
        assert_eq!(
            (live, ready, health),
            (200, 200, expected),
            "node {}",
            n.id()
        );
        let (code, st) = n.http.get("/v1/sys/health?standbyok=true", None).await;
        assert_eq!(code, 200, "node {}: {st}", n.id());
        assert_eq!(st["leader_id"], json!(leader), "node {}: {st}", n.id());
    }

    // A follower restarted: alive, not ready, health 503 until unsealed.
    let idx = nodes.iter().position(|n| n.id() != leader).unwrap();
    let spec = nodes.remove(idx).stop().await;
    let restarted = crate::common::ClusterNode::start(spec, &certs, cuts.options())
        .await
        .unwrap();
    assert_eq!(probes(&restarted.http).await.0, 200, "alive while sealed");
    let (ready, why) = probe(&restarted.http, "/readyz").await;
    assert_eq!(ready, 503, "{why}");
    assert_eq!(probe(&restarted.http, "/v1/sys/health").await.0, 503);
    let (code, body) = nodes[0]
        .http
        .post(
            "/v1/sys/unseal",
            None,
            json!({"gatekeeper_token": init["gatekeeper_tokens"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    wait_until(SETTLE, "the restarted follower is ready again", || async {
        probe(&restarted.http, "/readyz").await.0 == 200
    })
    .await;
    assert_eq!(probe(&restarted.http, "/v1/sys/health").await.0, 429);

    restarted.stop().await;
    for n in nodes {
        n.stop().await;
    }
}
