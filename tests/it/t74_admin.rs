//! Operator calls on a three-node in-process cluster: raft peers and
//! remove, snapshot save through a follower (ciphertext only), and an
//! offline restore into a fresh data dir that starts as a new one-member
//! cluster.

use std::time::Duration;

use kstash::raft::replica::NodeIdentity;
use kstash::raft::state_machine::{restore_snapshot_offline, validate_snapshot};
use kstash::raft::types::NodeInfo;
use kstash::server::{JoinState, ServerOptions};
use serde_json::{json, Value};

use crate::common::{wait_until, ClusterCerts, ClusterNode, ClusterNodeSpec, Http};

/// Longest wait for anything that should take a few election timeouts.
const SETTLE: Duration = Duration::from_secs(20);

/// A value whose bytes must never appear in a snapshot.
const PLAINTEXT: &str = "plaintext-marker-7f3a9c1e5b";

fn cluster_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("admin-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Node 1 bootstraps, 2 and 3 join; waits until all see three voters.
async fn three_nodes(root: &std::path::Path, certs: &ClusterCerts) -> Vec<ClusterNode> {
    let mut spec1 = ClusterNodeSpec::new(1, root, "127.0.0.1");
    spec1.bootstrap = true;
    let n1 = ClusterNode::start(spec1, certs, ServerOptions::default())
        .await
        .unwrap();
    wait_until(SETTLE, "node 1 leads", || async { n1.leader() == Some(1) }).await;
    let mut nodes = vec![n1];
    for id in [2, 3] {
        let mut spec = ClusterNodeSpec::new(id, root, "127.0.0.1");
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
    let (_, st) = h.get("/v1/sys/status", None).await;
    assert_eq!(st["sealed"], false, "{st}");
}

/// Init through node 1, unseal every node, log in and write `PLAINTEXT` at
/// `app/db`; returns the init response, the keys used, and the token.
async fn init_and_write(nodes: &[ClusterNode]) -> (Value, Vec<Value>, String) {
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 3, "threshold": 2}))
        .await;
    assert_eq!(code, 200, "{init}");
    let keys: Vec<Value> = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    converge(nodes).await;
    for n in nodes {
        unseal(&n.http, &keys).await;
    }
    let token = login(&nodes[0].http, &init).await;
    converge(nodes).await;
    let (code, body) = nodes[0]
        .http
        .put("/v1/kv/app/db", Some(&token), json!({"value": PLAINTEXT}))
        .await;
    assert_eq!(code, 200, "{body}");
    converge(nodes).await;
    (init, keys, token)
}

async fn login(h: &Http, init: &Value) -> String {
    let (code, login) = h
        .post(
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": init["access_key"], "namespace": "app", "policies": ["admin"]}),
        )
        .await;
    assert_eq!(code, 200, "{login}");
    login["token"].as_str().unwrap().to_string()
}

/// The gatekeeper tokens as `gatekeeper-tokens/list` shows them (ids and
/// times of use), listed with unseal keys (which spends no token).
async fn gatekeeper_tokens(h: &Http, keys: &[Value]) -> Value {
    let (code, body) = h
        .post(
            "/v1/sys/gatekeeper-tokens/list",
            None,
            json!({ "keys": keys }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    body["tokens"].clone()
}

fn leader_of(nodes: &[ClusterNode]) -> u64 {
    nodes
        .iter()
        .find_map(|n| n.leader())
        .expect("some node knows the leader")
}

/// Steps:
/// 1. three nodes; init, unseal, write a value;
/// 2. `GET /v1/sys/raft/peers` without any credential through a follower
///    lists three voters and exactly one leader; the leader also knows the
///    matched indexes; the old `POST` is gone (405); the gatekeeper tokens
///    are as they were (none used) and no node applied a new log entry;
///    a sealed follower still answers it, then is unsealed again;
/// 3. remove through a follower → 503 naming the leader; remove the last
///    voter is refused only when it is the last (checked by the count);
/// 4. remove a follower through the leader → peers lists two voters; a
///    write still succeeds and reads back;
/// 5. over gRPC: RaftPeers (no credential) on the leader lists the two members; removing
///    an unknown id is NOT_FOUND; SaveSnapshot returns a valid file;
/// 6. remove the other follower, then the leader itself: refused (409),
///    it is the last voter;
/// 7. shut everything down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_lists_members_and_remove_drops_one() {
    let root = cluster_root();
    let certs = ClusterCerts::make();

    tracing::info!("--- step 1: three nodes, init, write");
    let nodes = three_nodes(root.path(), &certs).await;
    let (_init, keys, token) = init_and_write(&nodes).await;
    let leader = leader_of(&nodes);
    let li = nodes.iter().position(|n| n.id() == leader).unwrap();
    let fi = nodes.iter().position(|n| n.id() != leader).unwrap();

    tracing::info!("--- step 2: peers, no credential");
    let tokens_before = gatekeeper_tokens(&nodes[li].http, &keys).await;
    converge(&nodes).await;
    let applied_before: Vec<u64> = nodes.iter().map(|n| n.applied()).collect();
    let (code, body) = nodes[fi].http.get("/v1/sys/raft/peers", None).await;
    assert_eq!(code, 200, "{body}");
    let peers = body["peers"].as_array().unwrap();
    let mut ids: Vec<u64> = peers.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3], "{body}");
    assert!(peers.iter().all(|p| p["role"] == "voter"), "{body}");
    let leaders: Vec<u64> = peers
        .iter()
        .filter(|p| p["leader"] == true)
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders, [leader], "{body}");
    assert!(body.get("gatekeeper_token").is_none(), "{body}");
    // The leader knows how far each member's log matches.
    let (code, body) = nodes[li].http.get("/v1/sys/raft/peers", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["matched_index"].as_u64().is_some()),
        "{body}"
    );
    let (code, body) = nodes[fi]
        .http
        .post("/v1/sys/raft/peers", None, json!({ "keys": keys }))
        .await;
    assert_eq!(code, 405, "{body}");
    let applied_after: Vec<u64> = nodes.iter().map(|n| n.applied()).collect();
    assert_eq!(applied_after, applied_before, "listing peers wrote nothing");
    assert_eq!(
        gatekeeper_tokens(&nodes[li].http, &keys).await,
        tokens_before,
        "listing peers used no gatekeeper token"
    );
    let (code, body) = nodes[fi]
        .http
        .post("/v1/sys/seal", None, json!({ "keys": keys }))
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, st) = nodes[fi].http.get("/v1/sys/status", None).await;
    assert_eq!(st["sealed"], true, "{st}");
    let (code, body) = nodes[fi].http.get("/v1/sys/raft/peers", None).await;
    assert_eq!(code, 200, "a sealed node lists its peers: {body}");
    assert_eq!(body["peers"].as_array().unwrap().len(), 3, "{body}");
    unseal(&nodes[fi].http, &keys).await;

    tracing::info!("--- step 3: remove through a follower, and of a stranger");
    let victim = nodes[fi].id();
    let (code, body) = nodes[fi]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": victim, "keys": keys}),
        )
        .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.to_string()
            .contains(&nodes[li].server.addr.to_string()),
        "{body}"
    );
    let (code, body) = nodes[li]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": 99, "keys": keys}),
        )
        .await;
    assert_eq!(code, 404, "{body}");

    tracing::info!("--- step 4: remove node {victim} through the leader");
    let (code, body) = nodes[li]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": victim, "keys": keys}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = nodes[li].http.get("/v1/sys/raft/peers", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["peers"].as_array().unwrap().len(), 2, "{body}");
    let (code, body) = nodes[li]
        .http
        .put(
            "/v1/kv/app/db",
            Some(&token),
            json!({"value": "after-remove"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = nodes[li].http.get("/v1/kv/app/db", Some(&token)).await;
    assert_eq!(
        (code, &body["value"]),
        (200, &json!("after-remove")),
        "{body}"
    );

    tracing::info!("--- step 5: the same calls over gRPC");
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", nodes[li].server.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut sys = kstash::api::grpc::pb::sys_client::SysClient::new(channel);
    let auth = kstash::api::grpc::pb::GatekeeperAuth {
        gatekeeper_token: None,
        keys: keys
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect(),
    };
    let peers = sys
        .raft_peers(kstash::api::grpc::pb::RaftPeersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(peers.peers.len(), 2, "{peers:?}");
    let err = sys
        .raft_remove(kstash::api::grpc::pb::RaftRemoveRequest {
            node_id: 99,
            auth: Some(auth.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    let file = sys.save_snapshot(auth).await.unwrap().into_inner();
    validate_snapshot(&file.data).expect("the gRPC snapshot validates");

    tracing::info!("--- step 6: down to one voter; the last is kept");
    let other = nodes
        .iter()
        .map(|n| n.id())
        .find(|id| *id != leader && *id != victim)
        .unwrap();
    let (code, body) = nodes[li]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": other, "keys": keys}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = nodes[li]
        .http
        .post(
            "/v1/sys/raft/remove",
            None,
            json!({"node_id": leader, "keys": keys}),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.to_string().contains("last voter"), "{body}");

    tracing::info!("--- step 7: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// Steps:
/// 1. three nodes; init, unseal, write `PLAINTEXT`;
/// 2. save a snapshot through a follower with unseal keys: 200,
///    octet-stream; the file validates and holds no byte string of
///    `PLAINTEXT`;
/// 3. shut the cluster down; restore the file offline into a fresh data
///    dir for node 4 (node-id file written first, as the server expects);
/// 4. start node 4 with bootstrap: it comes up sealed and leads its
///    one-member cluster; unseal with the original keys;
/// 5. log in with the original access key and read `PLAINTEXT` back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_saved_through_a_follower_restores_offline() {
    let root = cluster_root();
    let certs = ClusterCerts::make();

    tracing::info!("--- step 1: three nodes, init, write");
    let nodes = three_nodes(root.path(), &certs).await;
    let (init, keys, _token) = init_and_write(&nodes).await;
    let leader = leader_of(&nodes);
    let fi = nodes.iter().position(|n| n.id() != leader).unwrap();

    tracing::info!("--- step 2: save through follower {}", nodes[fi].id());
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/sys/snapshot", nodes[fi].server.addr))
        .header("content-type", "application/json")
        .body(json!({ "keys": keys }).to_string())
        .timeout(SETTLE * 2)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    let bytes = resp.bytes().await.unwrap().to_vec();
    let found = validate_snapshot(&bytes).expect("the saved snapshot validates");
    assert!(found.pairs > 0 && found.last_index > 0, "{found:?}");
    let needle = PLAINTEXT.as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "plaintext in the snapshot"
    );

    tracing::info!("--- step 3: stop the cluster; restore offline as node 4");
    for n in nodes {
        n.stop().await;
    }
    let mut spec = ClusterNodeSpec::new(4, root.path(), "localhost");
    spec.api_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    spec.bootstrap = true;
    kstash::data_dir::create_private_dir(&spec.data_dir).unwrap();
    let (identity, made) = NodeIdentity::open(&spec.data_dir, 4).unwrap();
    assert!(made);
    let node = NodeInfo {
        api_addr: spec.api_addr.to_string(),
        cluster_addr: spec.advertised(),
        incarnation: identity.incarnation,
    };
    restore_snapshot_offline(&bytes, &spec.data_dir, 4, node)
        .await
        .expect("restore");

    tracing::info!("--- step 4: start node 4; it leads alone; unseal");
    let n4 = ClusterNode::start(spec, &certs, ServerOptions::default())
        .await
        .unwrap();
    let (_, st) = n4.http.get("/v1/sys/status", None).await;
    assert_eq!(
        (&st["initialized"], &st["sealed"]),
        (&json!(true), &json!(true)),
        "{st}"
    );
    wait_until(SETTLE, "node 4 leads its restored cluster", || async {
        n4.leader() == Some(4)
    })
    .await;
    assert_eq!(n4.voters(), [4]);
    unseal(&n4.http, &keys).await;

    tracing::info!("--- step 5: log in and read the value back");
    let token = login(&n4.http, &init).await;
    let (code, body) = n4.http.get("/v1/kv/app/db", Some(&token)).await;
    assert_eq!((code, &body["value"]), (200, &json!(PLAINTEXT)), "{body}");
    n4.stop().await;
}

/// Run the real `kstash` binary against `address`; returns (code, stdout,
/// stderr).
fn cli(address: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kstash"));
    cmd.env_clear()
        .env("KSTASH_ADDR", address)
        .env("KSTASH_TIMEOUT", "30s")
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Steps:
/// 1. three nodes; init (with a gatekeeper token), unseal, write;
/// 2. `operator raft peers --format json` through a follower with no
///    credential at all: three voters, one leader; the gatekeeper token is
///    still unused (the snapshot save below spends it);
/// 3. `operator snapshot save FILE` through a follower: exit 0, a progress
///    line on stderr, FILE mode 0600, validates, no plaintext; saving over
///    an existing FILE is refused;
/// 4. `operator snapshot restore` refuses a non-empty data dir and a
///    corrupt file; restores into an empty one (made private: 0700, files
///    0600) and prints a progress line;
/// 5. stop the cluster, start node 4 from the restored dir, unseal with the
///    original keys and read the value back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_lists_peers_saves_and_restores_a_snapshot() {
    let root = cluster_root();
    let certs = ClusterCerts::make();

    tracing::info!("--- step 1: three nodes, init, write");
    let nodes = three_nodes(root.path(), &certs).await;
    let (code, init) = nodes[0]
        .http
        .post(
            "/v1/sys/init",
            None,
            json!({"shares": 3, "threshold": 2, "gatekeeper_tokens": 1}),
        )
        .await;
    assert_eq!(code, 200, "{init}");
    let keys: Vec<Value> = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    converge(&nodes).await;
    for n in &nodes {
        unseal(&n.http, &keys).await;
    }
    let token = login(&nodes[0].http, &init).await;
    converge(&nodes).await;
    let (code, body) = nodes[0]
        .http
        .put("/v1/kv/app/db", Some(&token), json!({"value": PLAINTEXT}))
        .await;
    assert_eq!(code, 200, "{body}");
    converge(&nodes).await;
    let leader = leader_of(&nodes);
    let fi = nodes.iter().position(|n| n.id() != leader).unwrap();
    let addr = format!("http://{}", nodes[fi].server.addr);
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap().to_string();

    tracing::info!("--- step 2: raft peers through a follower");
    let (code, out, err) = cli(
        &addr,
        &["--format", "json", "operator", "raft", "peers"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let peers: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(peers["peers"].as_array().unwrap().len(), 3, "{peers}");
    let leaders = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["leader"] == true && p["role"] == "voter")
        .count();
    assert_eq!(leaders, 1, "{peers}");
    let tokens = gatekeeper_tokens(&nodes[0].http, &keys).await;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["used_at"].is_null()),
        "no gatekeeper token was used: {tokens}"
    );
    let (code, out, _) = cli(&addr, &["operator", "raft", "peers"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID") && out.contains("voter"), "{out}");

    tracing::info!("--- step 3: snapshot save through a follower");
    let file = root.path().join("saved.snap");
    let file_s = file.to_str().unwrap();
    let (code, out, err) = cli(
        &addr,
        &["operator", "snapshot", "save", file_s],
        &[("KSTASH_GATEKEEPER_TOKEN", &gk)],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("received") && err.contains("bytes"), "{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    validate_snapshot(&bytes).expect("the saved file validates");
    assert!(!bytes
        .windows(PLAINTEXT.len())
        .any(|w| w == PLAINTEXT.as_bytes()));
    let (code, _, err) = cli(&addr, &["operator", "snapshot", "save", file_s], &[]);
    assert_ne!(code, 0, "{err}");

    tracing::info!("--- step 4: restore offline");
    let mut spec = ClusterNodeSpec::new(4, root.path(), "localhost");
    spec.api_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    spec.bootstrap = true;
    let dir = spec.data_dir.to_str().unwrap().to_string();
    let api = spec.api_addr.to_string();
    let cluster = spec.advertised();
    let restore = |file: &str, dir: &str| {
        cli(
            &addr,
            &[
                "operator",
                "snapshot",
                "restore",
                file,
                "--data-dir",
                dir,
                "--node-id",
                "4",
                "--api-addr",
                &api,
                "--cluster-addr",
                &cluster,
            ],
            &[],
        )
    };
    let (code, _, err) = restore(file_s, nodes[0].spec.data_dir.to_str().unwrap());
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    let bad = root.path().join("bad.snap");
    let mut corrupt = bytes.clone();
    corrupt.truncate(bytes.len() / 2);
    std::fs::write(&bad, &corrupt).unwrap();
    let (code, _, err) = restore(bad.to_str().unwrap(), &dir);
    assert_ne!(code, 0);
    assert!(err.contains("not a usable snapshot"), "{err}");
    assert!(!spec.data_dir.exists(), "nothing written for a bad file");
    let (code, out, err) = restore(file_s, &dir);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Restored snapshot"), "{out}");
    assert!(err.contains("read") && err.contains("bytes"), "{err}");
    let loose = kstash::data_dir::not_private(&spec.data_dir).unwrap();
    assert!(
        loose.is_empty(),
        "the restored data dir is private: {loose:?}"
    );

    tracing::info!("--- step 5: start node 4 from the restored dir");
    for n in nodes {
        n.stop().await;
    }
    let n4 = ClusterNode::start(spec, &certs, ServerOptions::default())
        .await
        .unwrap();
    wait_until(SETTLE, "node 4 leads its restored cluster", || async {
        n4.leader() == Some(4)
    })
    .await;
    unseal(&n4.http, &keys).await;
    let token = login(&n4.http, &init).await;
    let (code, body) = n4.http.get("/v1/kv/app/db", Some(&token)).await;
    assert_eq!((code, &body["value"]), (200, &json!(PLAINTEXT)), "{body}");
    n4.stop().await;
}
