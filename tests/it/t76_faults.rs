//! Cluster faults over three in-process nodes (mutual TLS on the cluster
//! port) behind a shared, switchable link filter: a partitioned leader
//! acknowledges nothing and its unacknowledged entries are gone after the
//! heal, and a follower that fell behind the leader's last snapshot (log
//! purged past it) catches up by snapshot install.
//!
//! Each scenario is an async fn taking the storage backend; the tests here
//! run them over memory, `t78_backends` over etcd.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{
    three_node_cluster_on, wait_until, BackendKind, ClusterCerts, ClusterNode, LinkCuts,
};

/// Longest wait for anything that should take a few election timeouts.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);

/// How long a write through the partitioned leader is given to be
/// (wrongly) acknowledged; longer than the node's leader wait (3 × 800 ms).
const MINORITY_WAIT: Duration = Duration::from_secs(3);

const ALL: [u64; 3] = [1, 2, 3];

pub(crate) fn cluster_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("faults-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Init through `nodes[0]` (one share, one gatekeeper token; wait until
/// every node applied it), one unseal through `nodes[1]` (coordinated:
/// every node opens); returns the init response.
pub(crate) async fn init_and_unseal(nodes: &[ClusterNode]) -> Value {
    let (code, init) = nodes[0]
        .http
        .post(
            "/v1/sys/init",
            None,
            json!({"shares": 1, "threshold": 1, "gatekeeper_tokens": 1}),
        )
        .await;
    assert_eq!(code, 200, "{init}");
    converge(nodes).await;
    let key = &init["unseal_keys"][0];
    let (code, body) = nodes[1]
        .http
        .post("/v1/sys/unseal", None, json!({ "key": key }))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sealed"], false, "{body}");
    for n in nodes {
        let (code, st) = n.http.get("/v1/sys/status", None).await;
        assert_eq!(code, 200, "{st}");
        assert_eq!(st["sealed"], false, "node {}: {st}", n.id());
    }
    init
}

/// An admin token for `app`, minted through `n`.
pub(crate) async fn login(n: &ClusterNode, init: &Value) -> String {
    let (code, login) = n
        .http
        .post(
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": init["access_key"], "namespace": "app", "policies": ["admin"]}),
        )
        .await;
    assert_eq!(code, 200, "{login}");
    login["token"].as_str().unwrap().to_string()
}

/// [`init_and_unseal`], then an admin token for `app` through `nodes[0]`.
async fn init_unseal_login(nodes: &[ClusterNode]) -> String {
    let init = init_and_unseal(nodes).await;
    login(&nodes[0], &init).await
}

pub(crate) async fn put(n: &ClusterNode, token: &str, key: &str, value: &str) -> (u16, Value) {
    n.http
        .put(
            &format!("/v1/kv/app/{key}"),
            Some(token),
            json!({ "value": value }),
        )
        .await
}

pub(crate) async fn get(n: &ClusterNode, token: &str, key: &str) -> (u16, Value) {
    n.http.get(&format!("/v1/kv/app/{key}"), Some(token)).await
}

/// Wait until every node has applied the same index, and return it.
pub(crate) async fn converge(nodes: &[ClusterNode]) -> u64 {
    wait_until(SETTLE, "every node applied the same log", || async {
        let first = nodes[0].applied();
        first > 0 && nodes.iter().all(|n| n.applied() == first)
    })
    .await;
    nodes[0].applied()
}

/// Steps:
/// 1. three nodes behind one switchable link filter; init through node 1,
///    unseal through node 2, log in; write k=v1 through the leader;
/// 2. cut the leader off from both followers (both directions);
/// 3. a write of a distinct key through the old leader's REST API is not
///    acknowledged (no 200 within `MINORITY_WAIT`);
/// 4. the two followers elect a new leader; k=v2 through it succeeds;
/// 5. heal; every node agrees on the new leader;
/// 6. all three converge: same last applied, k=v2 everywhere, and the
///    old leader's unacknowledged key is absent everywhere;
/// 7. shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_leader_acknowledges_nothing_and_its_entries_vanish() {
    partitioned_leader_scenario(&BackendKind::Memory).await;
}

/// The scenario of [`partitioned_leader_acknowledges_nothing_and_its_entries_vanish`]
/// over `kind`.
pub(crate) async fn partitioned_leader_scenario(kind: &BackendKind) {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let started = Instant::now();

    tracing::info!(
        backend = kind.name(),
        "--- step 1: three nodes, init, unseal, k=v1"
    );
    let nodes = three_node_cluster_on(kind, root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    let token = init_unseal_login(&nodes).await;
    let old = nodes[0].leader().expect("a leader");
    let oi = (old - 1) as usize;
    let (code, body) = put(&nodes[oi], &token, "k", "v1").await;
    assert_eq!(code, 200, "{body}");
    converge(&nodes).await;

    tracing::info!(old, "--- step 2: cut the leader off from both followers");
    cuts.isolate(old, &ALL);

    tracing::info!("--- step 3: a write through the old leader is not acknowledged");
    let t = Instant::now();
    let mut minority = {
        let http = crate::common::Http::new(format!("http://{}", nodes[oi].server.addr));
        let token = token.clone();
        tokio::spawn(async move {
            http.put("/v1/kv/app/lost", Some(&token), json!({"value": "never"}))
                .await
        })
    };
    // Give it `MINORITY_WAIT`; an answer in that time must not be a 200.
    // Still pending: it is awaited again after the heal, and must not end
    // in a 200 either.
    let mut pending = true;
    if let Ok(answer) = tokio::time::timeout(MINORITY_WAIT, &mut minority).await {
        let (code, body) = answer.unwrap();
        assert_ne!(code, 200, "the partitioned leader acknowledged: {body}");
        tracing::info!(code, elapsed = ?t.elapsed(), %body, "minority write refused");
        pending = false;
    } else {
        tracing::info!("minority write still pending after {MINORITY_WAIT:?}");
    }

    tracing::info!("--- step 4: the majority elects a new leader and serves k=v2");
    let majority: Vec<&ClusterNode> = nodes.iter().filter(|n| n.id() != old).collect();
    wait_until(SETTLE, "the majority agrees on a new leader", || async {
        let l = majority[0].leader();
        l.is_some_and(|l| l != old) && majority.iter().all(|n| n.leader() == l)
    })
    .await;
    let new = majority[0].leader().unwrap();
    tracing::info!(new, elapsed = ?t.elapsed(), "new leader");
    let (code, body) = put(&nodes[(new - 1) as usize], &token, "k", "v2").await;
    assert_eq!(code, 200, "{body}");
    // The other majority node serves it too (forwarding to the new leader).
    let other = majority.iter().find(|n| n.id() != new).unwrap();
    let (code, body) = get(other, &token, "k").await;
    assert_eq!((code, &body["value"]), (200, &json!("v2")), "{body}");

    tracing::info!("--- step 5: heal");
    cuts.heal();
    wait_until(SETTLE, "every node agrees on one leader", || async {
        let l = nodes[0].leader();
        l.is_some() && nodes.iter().all(|n| n.leader() == l)
    })
    .await;

    tracing::info!("--- step 6: converge; the minority write is gone");
    if pending {
        let (code, body) = tokio::time::timeout(SETTLE, &mut minority)
            .await
            .expect("the minority write ends after the heal")
            .unwrap();
        assert_ne!(
            code, 200,
            "the old leader acknowledged after the heal: {body}"
        );
        tracing::info!(code, %body, "minority write refused after the heal");
    }
    let applied = converge(&nodes).await;
    tracing::info!(applied, "converged");
    for n in &nodes {
        let (code, body) = get(n, &token, "k").await;
        assert_eq!(
            (code, &body["value"]),
            (200, &json!("v2")),
            "node {}: {body}",
            n.id()
        );
        let (code, body) = get(n, &token, "lost").await;
        assert_eq!(
            code,
            404,
            "node {}: the unacknowledged write survived: {body}",
            n.id()
        );
    }
    let applied_after = converge(&nodes).await;
    tracing::info!(applied_after, "still converged after the reads");

    tracing::info!(elapsed = ?started.elapsed(), "--- step 7: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// Entries between snapshots on every node of the snapshot test (openraft
/// then keeps at most this many entries behind a snapshot).
const SNAPSHOT_THRESHOLD: u64 = 20;

/// Keys written while the follower is cut off.
const KEYS: usize = 100;

/// Steps:
/// 1. three nodes with `snapshot_threshold` 20; init, unseal, log in,
///    one write; converge;
/// 2. cut one follower off (both directions); note its last log index;
/// 3. write 100 keys through the leader;
/// 4. wait until both connected nodes have snapshotted and purged their
///    logs past the follower's last log index: the entries it lacks exist
///    only inside a snapshot now;
/// 5. heal; the follower catches up: same last applied as the others,
///    reads the last key;
/// 6. confirm it was an install (step 4 left no log to replay from): the
///    follower's snapshot covers an index past its pre-heal last log, its
///    own log is purged past it, and its data dir holds
///    `snapshots/current.snap`;
/// 7. shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_behind_the_last_snapshot_catches_up_by_install() {
    snapshot_install_scenario(&BackendKind::Memory).await;
}

/// The scenario of [`follower_behind_the_last_snapshot_catches_up_by_install`]
/// over `kind`.
pub(crate) async fn snapshot_install_scenario(kind: &BackendKind) {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let started = Instant::now();

    tracing::info!(
        backend = kind.name(),
        "--- step 1: three nodes, snapshot threshold 20, init, unseal"
    );
    let nodes = three_node_cluster_on(
        kind,
        root.path(),
        &certs,
        &cuts,
        |c| c.snapshot_threshold = SNAPSHOT_THRESHOLD,
        SETTLE,
    )
    .await;
    let token = init_unseal_login(&nodes).await;
    let leader = nodes[0].leader().expect("a leader");
    let li = (leader - 1) as usize;
    let (code, body) = put(&nodes[li], &token, "first", "1").await;
    assert_eq!(code, 200, "{body}");
    converge(&nodes).await;

    tracing::info!("--- step 2: cut a follower off");
    let fi = (0..3).find(|&i| i != li).unwrap();
    let follower = &nodes[fi];
    cuts.isolate(follower.id(), &ALL);
    let behind = follower.metrics().last_log_index.unwrap_or(0);
    tracing::info!(follower = follower.id(), behind, "follower cut off");

    tracing::info!("--- step 3: write {KEYS} keys through the leader");
    let t = Instant::now();
    for i in 0..KEYS {
        let (code, body) = put(&nodes[li], &token, &format!("key-{i}"), &i.to_string()).await;
        assert_eq!(code, 200, "key-{i}: {body}");
    }
    tracing::info!(elapsed = ?t.elapsed(), "writes done");

    tracing::info!("--- step 4: the connected nodes purge past the follower's log");
    let connected: Vec<&ClusterNode> = nodes.iter().filter(|n| n.id() != follower.id()).collect();
    wait_until(
        SETTLE,
        "both connected nodes purged past the follower",
        || async {
            connected
                .iter()
                .all(|n| n.metrics().purged.is_some_and(|p| p.index > behind))
        },
    )
    .await;
    for n in &connected {
        let m = n.metrics();
        tracing::info!(node = n.id(), snapshot = ?m.snapshot, purged = ?m.purged, "connected node");
    }
    assert_eq!(
        follower.metrics().last_log_index.unwrap_or(0),
        behind,
        "the cut-off follower received nothing"
    );

    tracing::info!("--- step 5: heal; the follower catches up");
    let t = Instant::now();
    cuts.heal();
    let last = format!("key-{}", KEYS - 1);
    wait_until(
        SETTLE,
        "the follower applied as far as the others",
        || async {
            let target = connected.iter().map(|n| n.applied()).max().unwrap();
            follower.applied() >= target
        },
    )
    .await;
    tracing::info!(elapsed = ?t.elapsed(), "follower caught up");
    let applied = converge(&nodes).await;
    let (code, body) = get(follower, &token, &last).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value"], json!((KEYS - 1).to_string()), "{body}");
    let stale = format!("/v1/kv/app/{last}?consistency=stale");
    let (code, body) = follower.http.get(&stale, Some(&token)).await;
    assert_eq!(
        (code, &body["value"]),
        (200, &json!((KEYS - 1).to_string())),
        "{body}"
    );

    tracing::info!("--- step 6: it was a snapshot install");
    let m = follower.metrics();
    tracing::info!(applied, snapshot = ?m.snapshot, purged = ?m.purged, "follower");
    let snapshot = m.snapshot.expect("the follower holds a snapshot");
    assert!(
        snapshot.index > behind,
        "the follower's snapshot ({snapshot}) covers what it missed (after {behind})"
    );
    // The decisive evidence is step 4: no node still held the entries after
    // `behind`, so they could only arrive inside a snapshot. These checks
    // confirm the follower now stands on one.
    assert!(
        m.purged.is_some_and(|p| p.index > behind),
        "the follower's log was purged past {behind}: {:?}",
        m.purged
    );
    let snap_file = follower
        .spec
        .data_dir
        .join("snapshots")
        .join("current.snap");
    assert!(snap_file.exists(), "{} exists", snap_file.display());

    tracing::info!(elapsed = ?started.elapsed(), "--- step 7: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// Found by jepsen/ (`register` under `partition`): a follower that lags the
/// leader must not refuse a check-and-set with a version that was already
/// replaced. Steps:
/// 1. three nodes; init, unseal, log in; k = v1 through the leader;
/// 2. cut a follower off; k = v2 through the leader (acknowledged);
/// 3. through the cut-off follower, `cas: 2` (right, as of the last
///    acknowledged write) and `cas: 1` (wrong) are never answered with a
///    conflict naming version 1: the follower cannot confirm what is
///    current, so it answers 503; linearizable reads (get, list, token
///    self) answer 503 too, never v1, which only a stale read shows; a
///    read-only token's write is refused with 403 at once;
/// 4. heal; through the same follower `cas: 1` is refused naming version 2,
///    and `cas: 2` succeeds with version 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_follower_never_answers_a_cas_with_a_replaced_version() {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let nodes = three_node_cluster_on(
        &BackendKind::Memory,
        root.path(),
        &certs,
        &cuts,
        |_| {},
        SETTLE,
    )
    .await;
    let init = init_and_unseal(&nodes).await;
    let token = login(&nodes[0], &init).await;
    let li = (nodes[0].leader().expect("a leader") - 1) as usize;
    let (code, body) = put(&nodes[li], &token, "k", "v1").await;
    assert_eq!((code, body["version"].as_u64()), (200, Some(1)), "{body}");
    let (code, body) = nodes[li]
        .http
        .put(
            "/v1/namespaces/app/policies/reader",
            Some(&token),
            json!({"rules": [{"path": "app/*", "capabilities": ["read"]}]}),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let reader = nodes[li]
        .http
        .login(&init["access_key"], "app", &["reader"], None)
        .await;
    converge(&nodes).await;

    let fi = (0..3).find(|&i| i != li).unwrap();
    let follower = &nodes[fi];
    cuts.isolate(follower.id(), &ALL);
    let (code, body) = put(&nodes[li], &token, "k", "v2").await;
    assert_eq!((code, body["version"].as_u64()), (200, Some(2)), "{body}");

    // Linearizable reads through the cut-off follower (the default, and
    // asked for by name; a get, a list, the token's own record) answer an
    // error, never the replaced value; only a stale read may show it.
    for path in [
        "/v1/kv/app/k",
        "/v1/kv/app/k?consistency=linearizable",
        "/v1/kv/app/?list=true",
        "/v1/auth/token/self",
    ] {
        let (code, body) = follower.http.get(path, Some(&token)).await;
        assert_eq!(
            code, 503,
            "linearizable {path} through the cut-off follower: {body}"
        );
        assert!(!body.to_string().contains("\"v1\""), "{path}: {body}");
    }
    let (code, body) = follower
        .http
        .get("/v1/kv/app/k?consistency=stale", Some(&token))
        .await;
    assert_eq!((code, body["value"].as_str()), (200, Some("v1")), "{body}");

    for expected in [2, 1] {
        let (code, body) = cas(follower, &token, expected).await;
        assert_eq!(
            code, 503,
            "cas {expected} through the cut-off follower: {body}"
        );
    }

    // A caller that may neither create nor update is refused at once: no
    // state of the secret could allow it.
    let (code, body) = put(follower, &reader, "k", "v3").await;
    assert_eq!(code, 403, "{body}");

    cuts.heal();
    converge(&nodes).await;
    let (code, body) = cas(follower, &token, 1).await;
    assert_eq!(code, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.ends_with("found 2"), "{message}");
    let (code, body) = cas(follower, &token, 2).await;
    assert_eq!((code, body["version"].as_u64()), (200, Some(3)), "{body}");
    for n in nodes {
        n.stop().await;
    }
}

async fn cas(n: &ClusterNode, token: &str, expected: u64) -> (u16, Value) {
    n.http
        .put(
            "/v1/kv/app/k",
            Some(token),
            json!({ "value": format!("after-{expected}"), "cas": expected }),
        )
        .await
}
