//! Membership changes leave no zombie: a node removed from the cluster
//! notices it (told by the leader, or asking its peers when the leader
//! falls silent, also after a partition), answers every client request at
//! once with 503 `removed`, is not ready, says so in status, agrees with
//! the cluster on the membership, and stays out after a restart.

use std::time::{Duration, Instant};

use kstash::raft::replica::{NOTICE_PAUSE, NOTICE_TRIES};
use kstash::server::JoinState;
use serde_json::{json, Value};

use crate::common::{
    assert_error, three_node_cluster, wait_until, ClusterCerts, ClusterNode, Http, LinkCuts,
};

/// Longest wait for anything that should take a few election timeouts.
const SETTLE: Duration = Duration::from_secs(20);

/// How long a removed node may take to notice its removal once it can
/// reach a member (a few of its membership checks).
const NOTICE: Duration = Duration::from_secs(8);

/// The longest any request to a removed node may take to answer.
const ANSWER: Duration = Duration::from_secs(1);

fn cluster_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("member-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

async fn converge(nodes: &[&ClusterNode]) {
    let target = nodes.iter().map(|n| n.applied()).max().unwrap();
    wait_until(SETTLE, "every node applied the same log", || async {
        nodes.iter().all(|n| n.applied() >= target)
    })
    .await;
}

/// Init through node 1, unseal every node with two keys, log in and write
/// one value; returns the keys and an admin token of namespace `app`.
async fn init_and_write(nodes: &[ClusterNode]) -> (Vec<Value>, String) {
    let all: Vec<&ClusterNode> = nodes.iter().collect();
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 3, "threshold": 2}))
        .await;
    assert_eq!(code, 200, "{init}");
    let keys: Vec<Value> = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    converge(&all).await;
    for n in nodes {
        for k in &keys {
            let (code, body) = n
                .http
                .post("/v1/sys/unseal", None, json!({ "key": k }))
                .await;
            assert_eq!(code, 200, "{body}");
        }
    }
    let token = nodes[0]
        .http
        .login(&init["access_key"], "app", &["admin"], None)
        .await;
    let (code, body) = nodes[0]
        .http
        .put("/v1/kv/app/db", Some(&token), json!({"value": "v1"}))
        .await;
    assert_eq!(code, 200, "{body}");
    converge(&all).await;
    (keys, token)
}

fn leader_of(nodes: &[ClusterNode]) -> u64 {
    nodes
        .iter()
        .find_map(|n| n.leader())
        .expect("some node knows the leader")
}

/// The membership `raft peers` lists on `h`: (id, role) pairs, sorted.
async fn peers(h: &Http) -> Vec<(u64, String)> {
    let (code, body) = h.get("/v1/sys/raft/peers", None).await;
    assert_eq!(code, 200, "{body}");
    let mut peers: Vec<(u64, String)> = body["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap(),
                p["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    peers.sort();
    peers
}

/// Whether status on `h` says the node was removed.
async fn says_removed(h: &Http) -> bool {
    let (code, st) = h.get("/v1/sys/status", None).await;
    code == 200 && st["removed"] == true
}

/// Time one request; returns (status, body, how long it took).
async fn timed<F: std::future::Future<Output = (u16, Value)>>(f: F) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (code, body) = f.await;
    (code, body, started.elapsed())
}

/// Every request type on the removed node `gone` (id `id`): a read, a
/// write, a login, status, readyz, health. Each is timed and logged
/// before it is checked, so a run against a build without the fix reports
/// what a client sees there.
async fn check_removed_answers(node: &ClusterNode, token: &str) {
    let (gone, id) = (&node.http, node.id());
    let (rc, rb, rt) = timed(gone.get("/v1/kv/app/db", Some(token))).await;
    let (wc, wb, wt) =
        timed(gone.put("/v1/kv/app/db", Some(token), json!({"value": "zombie"}))).await;
    let (lc, lb, lt) = timed(gone.post(
        "/v1/auth/access-key/login",
        None,
        json!({"access_key": "ksa_x", "namespace": "app"}),
    ))
    .await;
    let (sc, sb, st) = timed(gone.get("/v1/sys/status", None)).await;
    let (yc, yb, yt) = timed(gone.get("/readyz", None)).await;
    let (hc, hb, ht) = timed(gone.get("/v1/sys/health", None)).await;
    for (what, code, took) in [
        ("read", rc, rt),
        ("write", wc, wt),
        ("login", lc, lt),
        ("status", sc, st),
        ("readyz", yc, yt),
        ("health", hc, ht),
    ] {
        eprintln!("removed node {id}: {what} answered {code} in {took:?}");
    }
    for (what, code, body, took) in [
        ("read", rc, &rb, rt),
        ("write", wc, &wb, wt),
        ("login", lc, &lb, lt),
    ] {
        assert!(took < ANSWER, "{what} took {took:?}: {body}");
        assert_eq!(code, 503, "{what}: {body}");
        assert_error(body, "removed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("node {id} was removed from the cluster"))
                && message.contains("wipe its data dir"),
            "{what}: {message}"
        );
    }
    assert!(
        st < ANSWER && yt < ANSWER && ht < ANSWER,
        "{st:?} {yt:?} {ht:?}"
    );
    assert_eq!(sc, 200, "{sb}");
    assert_eq!(sb["removed"], true, "{sb}");
    assert!(
        sb["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != id),
        "a removed node lists itself as a member: {sb}"
    );
    assert_eq!(yc, 503, "{yb}");
    assert!(yb.to_string().contains("removed"), "{yb}");
    assert_eq!(hc, 503, "{hb}");
    assert_eq!(hb["removed"], true, "{hb}");

    // gRPC: the same refusal, UNAVAILABLE with the code in the message.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = kstash::api::grpc::pb::kv_client::KvClient::new(channel);
    let mut req = tonic::Request::new(kstash::api::grpc::pb::GetSecretRequest {
        path: "app/db".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let started = Instant::now();
    let err = kv.get(req).await.unwrap_err();
    assert!(started.elapsed() < ANSWER, "{:?}", started.elapsed());
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().starts_with("removed: "), "{err:?}");
}

/// Watch `node` for four election timeouts (a voter that campaigns does so
/// by then): it never becomes a candidate and its term stays.
async fn assert_never_campaigns(node: &ClusterNode) {
    let term = node.metrics().current_term;
    for _ in 0..32 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = node.metrics();
        assert_ne!(
            m.state,
            openraft::ServerState::Candidate,
            "the removed node campaigns"
        );
        assert_eq!(m.current_term, term, "the removed node campaigned");
    }
}

/// Steps:
/// 1. three nodes; init, unseal, write a value;
/// 2. remove a follower through the leader;
/// 3. the follower notices within a few seconds (the leader tells it);
///    read, write, login answer 503 `removed` at once (REST and gRPC),
///    readyz 503 naming the removal, status and health say removed;
/// 4. `raft peers` on every node, the removed one included, lists the same
///    two voters;
/// 5. restart the removed node from its data dir: it still says removed at
///    once, refuses to rejoin (its join ends failed, naming the removal),
///    never campaigns, and the cluster's term and membership stay as they
///    were; the two members still serve writes;
/// 6. shut everything down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_follower_stops_answering_and_stays_out() {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();

    tracing::info!("--- step 1: three nodes, init, write");
    let mut nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    let (keys, token) = init_and_write(&nodes).await;
    let leader = leader_of(&nodes);
    let li = nodes.iter().position(|n| n.id() == leader).unwrap();
    let gi = nodes.iter().position(|n| n.id() != leader).unwrap();
    let gone_id = nodes[gi].id();

    tracing::info!("--- step 2: remove node {gone_id}");
    let (code, body) = nodes[li]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": gone_id, "keys": keys}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step 3: node {gone_id} answers as removed");
    let started = Instant::now();
    let noticed = tokio::time::timeout(NOTICE, async {
        while !says_removed(&nodes[gi].http).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eprintln!(
        "removed node {gone_id}: noticed = {}, after {:?}",
        noticed.is_ok(),
        started.elapsed()
    );
    check_removed_answers(&nodes[gi], &token).await;

    tracing::info!("--- step 4: raft peers agree everywhere");
    let members: Vec<(u64, String)> = nodes
        .iter()
        .filter(|n| n.id() != gone_id)
        .map(|n| (n.id(), "voter".to_string()))
        .collect();
    for n in &nodes {
        assert_eq!(peers(&n.http).await, members, "node {}", n.id());
    }

    tracing::info!("--- step 5: restart node {gone_id}");
    let gone = nodes.remove(gi);
    let spec = gone.stop().await;
    assert!(
        spec.data_dir
            .join(kstash::raft::removal::REMOVED_FILE)
            .exists(),
        "the removal is recorded in the data dir"
    );
    let terms: Vec<u64> = nodes.iter().map(|n| n.metrics().current_term).collect();
    let gone = ClusterNode::start(spec, &certs, cuts.options())
        .await
        .unwrap();
    let (_, st) = gone.http.get("/v1/sys/status", None).await;
    assert_eq!(st["removed"], true, "removed at once after a restart: {st}");
    match gone.server.wait_joined(SETTLE).await {
        JoinState::Failed(reason) => assert!(
            reason.contains(&format!("node {gone_id} was removed")),
            "{reason}"
        ),
        other => panic!("a removed node joined again: {other:?}"),
    }
    assert_never_campaigns(&gone).await;
    let after: Vec<u64> = nodes.iter().map(|n| n.metrics().current_term).collect();
    assert_eq!(after, terms, "the cluster's term moved");
    check_removed_answers(&gone, &token).await;
    for n in nodes.iter().chain([&gone]) {
        assert_eq!(peers(&n.http).await, members, "node {}", n.id());
    }
    let (code, body) = nodes[0]
        .http
        .put("/v1/kv/app/db", Some(&token), json!({"value": "v2"}))
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step 6: shut down");
    gone.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

/// Steps:
/// 1. three nodes; init, unseal, write a value;
/// 2. remove the leader through itself: the call succeeds;
/// 3. the other two elect a new leader and serve a write;
/// 4. the former leader answers as removed (REST, gRPC, readyz, status);
/// 5. `raft peers` on every node lists the same two voters;
/// 6. shut everything down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_leader_steps_out() {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();

    tracing::info!("--- step 1: three nodes, init, write");
    let nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    let (keys, token) = init_and_write(&nodes).await;
    let leader = leader_of(&nodes);
    let li = nodes.iter().position(|n| n.id() == leader).unwrap();

    tracing::info!("--- step 2: remove the leader, node {leader}");
    let (code, body) = nodes[li]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": leader, "keys": keys}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step 3: a new leader serves");
    let rest: Vec<&ClusterNode> = nodes.iter().filter(|n| n.id() != leader).collect();
    wait_until(SETTLE, "another node leads", || async {
        rest.iter().any(|n| n.leader().is_some_and(|l| l != leader))
    })
    .await;
    let (code, body) = rest[0]
        .http
        .put("/v1/kv/app/db", Some(&token), json!({"value": "v2"}))
        .await;
    assert_eq!(code, 200, "{body}");

    tracing::info!("--- step 4: node {leader} answers as removed");
    let started = Instant::now();
    let noticed = tokio::time::timeout(NOTICE, async {
        while !says_removed(&nodes[li].http).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eprintln!(
        "removed leader {leader}: noticed = {}, after {:?}",
        noticed.is_ok(),
        started.elapsed()
    );
    check_removed_answers(&nodes[li], &token).await;

    tracing::info!("--- step 5: raft peers agree everywhere");
    let members: Vec<(u64, String)> = rest.iter().map(|n| (n.id(), "voter".into())).collect();
    for n in &nodes {
        assert_eq!(peers(&n.http).await, members, "node {}", n.id());
    }

    tracing::info!("--- step 6: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// Steps:
/// 1. three nodes; init, unseal, write a value;
/// 2. cut a follower off from both peers; remove it through the leader,
///    and wait until the leader gave up telling it;
/// 3. heal: the removed node learns of its removal by asking a peer, and
///    answers as removed; it never disturbed the cluster's leader;
/// 4. restart it (its log still makes it a voter): it never campaigns,
///    still says removed, and the leader stays;
/// 5. shut everything down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_removed_while_cut_off_learns_it_after_the_heal() {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();

    tracing::info!("--- step 1: three nodes, init, write");
    let nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    let (keys, token) = init_and_write(&nodes).await;
    let leader = leader_of(&nodes);
    let li = nodes.iter().position(|n| n.id() == leader).unwrap();
    let gi = nodes.iter().position(|n| n.id() != leader).unwrap();
    let gone_id = nodes[gi].id();

    tracing::info!("--- step 2: cut node {gone_id} off, then remove it");
    cuts.isolate(gone_id, &[1, 2, 3]);
    let (code, body) = nodes[li]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": gone_id, "keys": keys}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Until the leader gave up telling it (so it must ask by itself after
    // the heal); meanwhile it campaigns in vain.
    let notice_window = NOTICE_PAUSE * NOTICE_TRIES + Duration::from_secs(1);
    tokio::time::sleep(notice_window).await;
    assert!(!says_removed(&nodes[gi].http).await, "no one could tell it");

    tracing::info!("--- step 3: heal; node {gone_id} learns it was removed");
    cuts.heal();
    let started = Instant::now();
    wait_until(NOTICE, "the removed node says so", || async {
        says_removed(&nodes[gi].http).await
    })
    .await;
    eprintln!(
        "node {gone_id} removed while cut off: noticed {:?} after the heal",
        started.elapsed()
    );
    check_removed_answers(&nodes[gi], &token).await;
    assert_eq!(
        nodes[li].leader(),
        Some(leader),
        "the removed node disturbed the leader"
    );
    let members: Vec<(u64, String)> = nodes
        .iter()
        .filter(|n| n.id() != gone_id)
        .map(|n| (n.id(), "voter".to_string()))
        .collect();
    assert_eq!(peers(&nodes[gi].http).await, members);

    tracing::info!("--- step 4: restart node {gone_id}, a voter in its own log");
    let mut nodes = nodes;
    let gone = nodes.remove(gi);
    let gone = ClusterNode::start(gone.stop().await, &certs, cuts.options())
        .await
        .unwrap();
    assert_never_campaigns(&gone).await;
    let (_, st) = gone.http.get("/v1/sys/status", None).await;
    assert_eq!(st["removed"], true, "{st}");
    assert!(nodes.iter().all(|n| n.leader() == Some(leader)));

    tracing::info!("--- step 5: shut down");
    gone.stop().await;
    for n in nodes {
        n.stop().await;
    }
}
