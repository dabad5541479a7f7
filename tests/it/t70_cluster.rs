//! Three kstash nodes in one process, over real sockets: the cluster port
//! with mutual TLS, bootstrap and join, forwarding from followers,
//! linearizable reads on every node, losing and restarting the leader, and
//! the data dir's identity (node id, wiped data dirs).

use std::time::{Duration, Instant};

use kstash::server::{JoinState, ServerOptions};
use serde_json::{json, Value};

use crate::common::{wait_until, ClusterCerts, ClusterNode, ClusterNodeSpec, Http};

/// Longest wait for anything that should take a few election timeouts.
const SETTLE: Duration = Duration::from_secs(20);

fn cluster_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cluster-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Start node 1 (bootstrap) and nodes 2 and 3 (joining through node 1);
/// node 2 is reached by a DNS name (`localhost`), the others by IP. Waits
/// until every node sees all three as voters.
async fn three_nodes(root: &std::path::Path, certs: &ClusterCerts) -> Vec<ClusterNode> {
    let mut spec1 = ClusterNodeSpec::new(1, root, "127.0.0.1");
    spec1.bootstrap = true;
    let n1 = ClusterNode::start(spec1, certs, ServerOptions::default())
        .await
        .unwrap();
    wait_until(SETTLE, "node 1 leads its new cluster", || async {
        n1.leader() == Some(1)
    })
    .await;
    let mut nodes = vec![n1];
    for (id, host) in [(2, "localhost"), (3, "127.0.0.1")] {
        let mut spec = ClusterNodeSpec::new(id, root, host);
        spec.join = vec![nodes[0].spec.advertised()];
        nodes.push(
            ClusterNode::start(spec, certs, ServerOptions::default())
                .await
                .unwrap(),
        );
    }
    for n in &nodes[1..] {
        assert_eq!(n.server.wait_joined(SETTLE).await, JoinState::Joined);
    }
    wait_until(SETTLE, "every node sees voters 1, 2, 3", || async {
        nodes.iter().all(|n| n.voters() == [1, 2, 3])
    })
    .await;
    nodes
}

async fn status(h: &Http) -> Value {
    let (code, st) = h.get("/v1/sys/status", None).await;
    assert_eq!(code, 200, "{st}");
    st
}

/// The node that leads, as the first node that knows one says.
fn leader_of(nodes: &[ClusterNode]) -> u64 {
    nodes
        .iter()
        .find_map(|n| n.leader())
        .expect("some node knows the leader")
}

/// Wait until every node has applied what the most advanced one applied.
async fn converge(nodes: &[ClusterNode]) {
    let target = nodes.iter().map(|n| n.applied()).max().unwrap();
    wait_until(SETTLE, "every node applied the same log", || async {
        nodes.iter().all(|n| n.applied() >= target)
    })
    .await;
}

async fn unseal(h: &Http, keys: &[Value]) {
    for k in keys {
        let (code, body) = h.post("/v1/sys/unseal", None, json!({ "key": k })).await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(status(h).await["sealed"], false);
}

async fn read(h: &Http, token: &str) -> (u16, Value) {
    h.get("/v1/kv/app/db", Some(token)).await
}

/// Steps:
/// 1. cluster certificates; node 1 bootstraps, nodes 2 (`localhost`) and 3
///    join through node 1 and are promoted: all three are voters;
/// 2. init through node 1 over REST; every node applies it and reports
///    initialised and sealed;
/// 3. unseal each node with two of three keys through its own API;
/// 4. status on a follower lists the three members and the one leader;
/// 5. log in and write through a follower (forwarded to the leader) → 200;
///    every node reads the last acknowledged value;
/// 6. shut the leader down: a new leader is elected and a write through a
///    surviving node succeeds within 5 s; the survivors read it;
/// 7. restart the old leader over the same data dir and ports: it comes back
///    sealed; unsealed, it catches up (same value, same last applied), and
///    serves a write and a read itself;
/// 8. shut everything down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_forward_and_outlive_their_leader() {
    let root = cluster_root();
    let certs = ClusterCerts::make();

    tracing::info!("--- step 1: bootstrap node 1; nodes 2 and 3 join");
    let mut nodes = three_nodes(root.path(), &certs).await;
    assert_eq!(leader_of(&nodes), 1);

    tracing::info!("--- step 2: init through node 1");
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 3, "threshold": 2}))
        .await;
    assert_eq!(code, 200, "{init}");
    let keys: Vec<Value> = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    converge(&nodes).await;
    for n in &nodes {
        let st = status(&n.http).await;
        assert_eq!(
            (&st["initialized"], &st["sealed"]),
            (&json!(true), &json!(true)),
            "{st}"
        );
    }

    tracing::info!("--- step 3: unseal each node through its own API");
    for n in &nodes {
        unseal(&n.http, &keys).await;
    }

    tracing::info!("--- step 4: status on a follower lists every member");
    let leader = leader_of(&nodes);
    let follower = nodes.iter().position(|n| n.id() != leader).unwrap();
    let st = status(&nodes[follower].http).await;
    assert_eq!(st["leader"], false, "{st}");
    let peers = st["peers"].as_array().unwrap();
    let mut ids: Vec<u64> = peers.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "{st}");
    let leaders: Vec<u64> = peers
        .iter()
        .filter(|p| p["leader"] == true)
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders, [leader], "{st}");
    for p in peers {
        let n = nodes
            .iter()
            .find(|n| Some(n.id()) == p["id"].as_u64())
            .unwrap();
        assert_eq!(p["address"], n.server.addr.to_string(), "{st}");
    }

    tracing::info!(
        "--- step 5: log in and write through follower {}",
        nodes[follower].id()
    );
    let h = &nodes[follower].http;
    let (code, login) = h
        .post(
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": init["access_key"], "namespace": "app", "policies": ["admin"]}),
        )
        .await;
    assert_eq!(code, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_string();
    // The guard checks the token against each node's own state: let every
    // node apply the login before it is used there.
    converge(&nodes).await;
    let (code, body) = h
        .put("/v1/kv/app/db", Some(&token), json!({"value": "one"}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 1);
    for n in &nodes {
        let (code, body) = read(&n.http, &token).await;
        assert_eq!(code, 200, "node {}: {body}", n.id());
        assert_eq!(
            (&body["value"], &body["version"]),
            (&json!("one"), &json!(1))
        );
    }

    tracing::info!("--- step 6: shut the leader (node {leader}) down");
    let at = nodes.iter().position(|n| n.id() == leader).unwrap();
    let old = nodes.remove(at).stop().await;
    let killed = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (code, body) = nodes[0]
            .http
            .put("/v1/kv/app/db", Some(&token), json!({"value": "two"}))
            .await;
        if code == 200 {
            assert_eq!(body["version"], 2, "{body}");
            break;
        }
        assert_eq!(code, 503, "only 'unavailable' while electing: {body}");
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no write accepted within 5 s of losing the leader: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(
        elapsed = ?killed.elapsed(),
        attempts,
        "a new leader took the write"
    );
    let new_leader = leader_of(&nodes);
    assert_ne!(new_leader, leader);
    for n in &nodes {
        let (code, body) = read(&n.http, &token).await;
        assert_eq!(code, 200, "node {}: {body}", n.id());
        assert_eq!(body["value"], "two", "node {}", n.id());
    }

    tracing::info!("--- step 7: restart node {leader} over its data dir");
    let back = ClusterNode::start(old, &certs, ServerOptions::default())
        .await
        .unwrap();
    let st = status(&back.http).await;
    assert_eq!(
        (&st["initialized"], &st["sealed"]),
        (&json!(true), &json!(true)),
        "{st}"
    );
    let (code, body) = read(&back.http, &token).await;
    assert_eq!(code, 503, "a sealed node serves no data: {body}");
    unseal(&back.http, &keys).await;
    nodes.push(back);
    converge(&nodes).await;
    // New entries (a new term's blank entry) may still land while we look:
    // wait until every node reports the same last applied index.
    wait_until(
        SETTLE,
        "every node reports the same last applied",
        || async {
            let applied: Vec<u64> = nodes.iter().map(|n| n.applied()).collect();
            applied.windows(2).all(|w| w[0] == w[1])
        },
    )
    .await;
    let (code, body) = read(&nodes[2].http, &token).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["value"], &body["version"]),
        (&json!("two"), &json!(2))
    );
    let (code, body) = nodes[2]
        .http
        .put("/v1/kv/app/db", Some(&token), json!({"value": "three"}))
        .await;
    assert_eq!(code, 200, "{body}");
    for n in &nodes {
        let (code, body) = read(&n.http, &token).await;
        assert_eq!(code, 200, "node {}: {body}", n.id());
        assert_eq!(body["value"], "three", "node {}", n.id());
    }
    assert_eq!(
        status(&nodes[2].http).await["peers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    tracing::info!("--- step 8: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// Steps:
/// 1. a three-node cluster as above;
/// 2. stop node 3; starting it again over its data dir as node 9 is
///    refused (the `node-id` file names node 3);
/// 3. start node 3 with a wiped (empty) data dir and `--join`: the leader
///    refuses the join (another incarnation is the member), the node never
///    opens its cluster port nor receives any Raft state, and the cluster's
///    membership still holds the old node 3;
/// 4. the original data dir still starts as node 3, which rejoins as the
///    same member and catches up;
/// 5. shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_dir_keeps_its_node_id_and_a_wiped_node_cannot_rejoin() {
    let root = cluster_root();
    let certs = ClusterCerts::make();

    tracing::info!("--- step 1: three nodes");
    let mut nodes = three_nodes(root.path(), &certs).await;
    let incarnation = nodes[2].server.replica().node().incarnation;

    tracing::info!("--- step 2: node 3's data dir refuses another node id");
    let spec3 = nodes.pop().unwrap().stop().await;
    let mut as_nine = spec3.clone();
    as_nine.id = 9;
    let err = ClusterNode::start(as_nine, &certs, ServerOptions::default())
        .await
        .err()
        .expect("another node id over node 3's data dir is refused")
        .to_string();
    assert!(err.contains("belongs to node 3"), "{err}");
    assert!(err.contains("node 9"), "{err}");

    tracing::info!("--- step 3: node 3 with a wiped data dir cannot rejoin");
    let mut wiped = spec3.clone();
    wiped.data_dir = root.path().join("node-3-wiped");
    wiped.join = vec![nodes[0].spec.advertised(), nodes[1].spec.advertised()];
    let impostor = ClusterNode::start(wiped, &certs, ServerOptions::default())
        .await
        .unwrap();
    assert_ne!(impostor.server.replica().node().incarnation, incarnation);
    match impostor.server.wait_joined(SETTLE).await {
        JoinState::Failed(reason) => {
            assert!(reason.contains("already a member"), "{reason}");
            assert!(reason.contains("wiped"), "{reason}");
        }
        other => panic!("the join of a wiped node 3 must be refused, got {other:?}"),
    }
    // Heartbeats to node 3's address keep coming; none may land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !impostor.server.replica().is_initialized().await.unwrap(),
        "the wiped node took Raft state"
    );
    assert_eq!(impostor.applied(), 0);
    assert_eq!(impostor.voters(), Vec::<u64>::new());
    let members = nodes[0].server.replica().members();
    let three = members
        .iter()
        .find(|m| m.id == 3)
        .expect("node 3 is still a member");
    assert_eq!(three.node.incarnation, incarnation);
    let spec3 = ClusterNodeSpec {
        join: vec![nodes[0].spec.advertised()],
        ..spec3
    };
    impostor.stop().await;

    tracing::info!("--- step 4: the real node 3 comes back");
    let back = ClusterNode::start(spec3, &certs, ServerOptions::default())
        .await
        .unwrap();
    assert_eq!(back.server.wait_joined(SETTLE).await, JoinState::Joined);
    nodes.push(back);
    converge(&nodes).await;
    assert_eq!(nodes[2].voters(), [1, 2, 3]);

    tracing::info!("--- step 5: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// Nodes started with identical settings, as a StatefulSet starts them:
/// `bootstrap_node_id = 1` and `join` = every node's address (their own
/// included). Steps:
/// 1. start all three at once: node 1 bootstraps, 2 and 3 join; every node
///    sees voters 1, 2, 3;
/// 2. stop node 1 and restart it with a wiped data dir and the same
///    settings: a peer answers as a cluster member, so it does not start a
///    second cluster; it asks to join and is refused (its id is a member
///    with another incarnation), and it holds no Raft state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_settings_bootstrap_once_and_never_twice() {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let specs: Vec<ClusterNodeSpec> = (1..=3)
        .map(|id| ClusterNodeSpec::new(id, root.path(), "localhost"))
        .collect();
    let everyone: Vec<String> = specs.iter().map(|s| s.advertised()).collect();
    let same = |c: &mut kstash::config::Config| {
        c.bootstrap_node_id = Some(1);
        c.join = everyone.clone();
    };

    tracing::info!("--- step 1: three nodes, identical settings, started together");
    let mut nodes = Vec::new();
    for spec in specs {
        nodes.push(
            ClusterNode::start_tweaked(spec, &certs, ServerOptions::default(), same)
                .await
                .unwrap(),
        );
    }
    wait_until(SETTLE, "every node sees voters 1, 2, 3", || async {
        nodes.iter().all(|n| n.voters() == [1, 2, 3])
    })
    .await;

    tracing::info!("--- step 2: node 1 with a wiped data dir does not start a second cluster");
    let mut spec1 = nodes.remove(0).stop().await;
    spec1.data_dir = root.path().join("node-1-wiped");
    let wiped = ClusterNode::start_tweaked(spec1, &certs, ServerOptions::default(), same)
        .await
        .unwrap();
    // It asks to join; once nodes 2 and 3 have a leader it is refused. (Under
    // heavy parallel load their new election was seen to take longer than
    // SETTLE, so an unanswered join is accepted here: the point is that it
    // never starts a cluster of its own.)
    match wiped.server.wait_joined(SETTLE).await {
        JoinState::Failed(reason) => assert!(reason.contains("wiped"), "{reason}"),
        JoinState::Joining => tracing::warn!("the wiped node 1's join is not answered yet"),
        other => panic!("the wiped node 1 must not join or start a cluster, got {other:?}"),
    }
    assert!(
        !wiped.server.replica().is_initialized().await.unwrap(),
        "the wiped node 1 started a cluster of its own"
    );
    assert_eq!(wiped.leader(), None);
    for n in &nodes {
        assert_eq!(n.voters(), [1, 2, 3], "node {}", n.id());
    }
    wiped.stop().await;
    for n in nodes {
        n.stop().await;
    }
}
