//! The cluster scenarios over each storage backend: every scenario is an
//! async fn taking the [`BackendKind`], run over memory and (feature `etcd`)
//! over one real etcd shared by the three nodes, each under its own prefix.
//!
//! Scenarios: replication through any node and losing the leader; a
//! whole-cluster restart keeping every acknowledged write; no secret in any
//! node's sled files, snapshots, backend or logs. The fault scenarios of
//! `t76_faults` (partitioned leader, snapshot install) run there over memory
//! and here over etcd.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{
    captured_logs, three_node_cluster_on, wait_until, BackendKind, ClusterCerts, ClusterNode,
    LinkCuts,
};
use crate::t40_leaks::{assert_no_leak, contains, exercise_secrets, files_under, STORED_SECRET};
use crate::t76_faults::{cluster_root, converge, get, init_and_unseal, login, put, SETTLE};

/// Generate one `#[tokio::test]` per scenario in module `$module`, over the
/// backend `$kind` (an `Option<BackendKind>`; `None`: no etcd here, the test
/// returns after `EtcdServer::start`'s notice; with `CI=true` it panics).
macro_rules! backend_tests {
    ($module:ident, $kind:expr, [$($name:ident => $scenario:path),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(kind) = $kind else {
                        return;
                    };
                    $scenario(&kind).await;
                }
            )*
        }
    };
}

backend_tests!(
    memory,
    Some(crate::common::BackendKind::Memory),
    [
        replicate_and_outlive_the_leader => crate::t78_backends::replicate_and_outlive_the_leader,
        whole_cluster_restart_keeps_every_write => crate::t78_backends::whole_cluster_restart_keeps_every_write,
        no_secret_reaches_any_node => crate::t78_backends::no_secret_reaches_any_node,
    ]
);

#[cfg(feature = "etcd")]
backend_tests!(
    etcd,
    crate::common::BackendKind::etcd(),
    [
        replicate_and_outlive_the_leader => crate::t78_backends::replicate_and_outlive_the_leader,
        whole_cluster_restart_keeps_every_write => crate::t78_backends::whole_cluster_restart_keeps_every_write,
        no_secret_reaches_any_node => crate::t78_backends::no_secret_reaches_any_node,
        partitioned_leader_acknowledges_nothing => crate::t76_faults::partitioned_leader_scenario,
        follower_behind_the_last_snapshot_catches_up_by_install => crate::t76_faults::snapshot_install_scenario,
    ]
);

/// The node that leads, as the first node that knows one says.
fn leader_of(nodes: &[ClusterNode]) -> u64 {
    nodes
        .iter()
        .find_map(|n| n.leader())
        .expect("some node knows the leader")
}

async fn sealed(n: &ClusterNode) -> bool {
    let (code, st) = n.http.get("/v1/sys/status", None).await;
    assert_eq!(code, 200, "{st}");
    st["sealed"].as_bool().expect("status says sealed or not")
}

/// A linearizable read of `app/{key}` through `n`, sent again on 503 (a
/// read that could not be confirmed in time says "retry"; on a loaded
/// 2-core machine a leader's heartbeat round can miss its 100 ms deadline).
async fn read(n: &ClusterNode, token: &str, key: &str) -> (u16, serde_json::Value) {
    let (code, body, retried) = until_available(|| get(n, token, key)).await;
    if retried > 0 {
        tracing::info!(node = n.id(), key, retried, "read retried on 503");
    }
    (code, body)
}

/// Wait until every node applied the same index and its backend holds the
/// same state (keys without the node's etcd prefix); returns that index.
async fn same_state(nodes: &[ClusterNode]) -> u64 {
    wait_until(
        SETTLE,
        "every node applied the same log into the same state",
        || async {
            let first = nodes[0].applied();
            let state = nodes[0].backend.state();
            first > 0
                && nodes
                    .iter()
                    .all(|n| n.applied() == first && n.backend.state() == state)
        },
    )
    .await;
    nodes[0].applied()
}

/// Steps:
/// 1. three nodes over `kind`;
/// 2. init through node 1, one unseal through node 2: every node unsealed;
/// 3. log in and write through a follower; every node reads the last write;
/// 4. stop the leader: a survivor takes the next write within `SETTLE`
///    (only 503 while electing); a new leader; the survivors read it;
/// 5. restart the old leader over its data dir and backend (etcd: the same
///    prefix): it comes back initialized and sealed and serves no data;
///    one gatekeeper-token unseal through it opens it;
/// 6. it catches up: same last applied index and the same backend state as
///    the others, and reads the last write;
/// 7. a write through it is read on every node;
/// 8. shut down.
pub(crate) async fn replicate_and_outlive_the_leader(kind: &BackendKind) {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let started = Instant::now();

    tracing::info!(backend = kind.name(), "--- step 1: three nodes");
    let mut nodes = three_node_cluster_on(kind, root.path(), &certs, &cuts, |_| {}, SETTLE).await;

    tracing::info!("--- step 2: init through node 1, unseal through node 2");
    let init = init_and_unseal(&nodes).await;

    let leader = leader_of(&nodes);
    let fi = nodes.iter().position(|n| n.id() != leader).unwrap();
    tracing::info!(
        leader,
        follower = nodes[fi].id(),
        "--- step 3: write through a follower"
    );
    let token = login(&nodes[fi], &init).await;
    let (code, body) = put(&nodes[fi], &token, "db", "one").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    for n in &nodes {
        let (code, body) = read(n, &token, "db").await;
        assert_eq!(
            (code, &body["value"], &body["version"]),
            (200, &json!("one"), &json!(1)),
            "node {}: {body}",
            n.id()
        );
    }

    tracing::info!("--- step 4: stop the leader (node {leader})");
    let at = nodes.iter().position(|n| n.id() == leader).unwrap();
    let old = nodes.remove(at).stop().await;
    let stopped = Instant::now();
    loop {
        let (code, body) = put(&nodes[0], &token, "db", "two").await;
        if code == 200 {
            assert_eq!(body["version"], 2, "{body}");
            break;
        }
        assert_eq!(code, 503, "only 'unavailable' while electing: {body}");
        assert!(
            stopped.elapsed() < SETTLE,
            "no write accepted within {SETTLE:?} of losing the leader: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(elapsed = ?stopped.elapsed(), "a new leader took the write");
    assert_ne!(leader_of(&nodes), leader);
    for n in &nodes {
        let (code, body) = read(n, &token, "db").await;
        assert_eq!(
            (code, &body["value"]),
            (200, &json!("two")),
            "node {}: {body}",
            n.id()
        );
    }

    tracing::info!("--- step 5: restart node {leader}; one gatekeeper-token unseal");
    let back = ClusterNode::start(old, &certs, cuts.options())
        .await
        .unwrap();
    let (code, st) = back.http.get("/v1/sys/status", None).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(
        (&st["initialized"], &st["sealed"]),
        (&json!(true), &json!(true)),
        "{st}"
    );
    let (code, body) = get(&back, &token, "db").await;
    assert_eq!(code, 503, "a sealed node serves no data: {body}");
    let gk = init["gatekeeper_tokens"][0]
        .as_str()
        .expect("a gatekeeper token");
    let (code, body) = back
        .http
        .post("/v1/sys/unseal", None, json!({ "gatekeeper_token": gk }))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["sealed"], false, "{body}");
    nodes.push(back);
    for n in &nodes {
        assert!(!sealed(n).await, "node {} is unsealed", n.id());
    }

    tracing::info!("--- step 6: node {leader} catches up");
    let applied = same_state(&nodes).await;
    tracing::info!(applied, "same last applied and state on every node");
    let (code, body) = read(&nodes[2], &token, "db").await;
    assert_eq!(
        (code, &body["value"], &body["version"]),
        (200, &json!("two"), &json!(2)),
        "{body}"
    );

    tracing::info!("--- step 7: a write through node {leader}");
    let (code, body) = put(&nodes[2], &token, "db", "three").await;
    assert_eq!(code, 200, "{body}");
    for n in &nodes {
        let (code, body) = read(n, &token, "db").await;
        assert_eq!(
            (code, &body["value"]),
            (200, &json!("three")),
            "node {}: {body}",
            n.id()
        );
    }

    tracing::info!(elapsed = ?started.elapsed(), "--- step 8: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// Acknowledged writes before the whole-cluster restart.
const WRITES: usize = 300;

/// Concurrent writers (and readers), each through node `i % 3`.
const WORKERS: usize = 6;

/// Entries between snapshots in the restart test: a restart then loads a
/// snapshot and replays the log after it.
const RESTART_SNAPSHOT_THRESHOLD: u64 = 50;

/// Steps:
/// 1. three nodes over `kind`, snapshot threshold 50; init, unseal, log in;
/// 2. write 300 distinct keys, six writers at once through all three
///    nodes; every write is acknowledged;
/// 3. converge; stop all three;
/// 4. start all three over the same data dirs and backends: all sealed;
///    once one leads, one unseal through node 2 opens every node;
/// 5. all report the same last applied index and backend state; every node
///    reads every acknowledged key with its value (stale reads from its own
///    replica), and the last one linearizably;
/// 6. shut down.
pub(crate) async fn whole_cluster_restart_keeps_every_write(kind: &BackendKind) {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let tweak = |c: &mut kstash::config::Config| c.snapshot_threshold = RESTART_SNAPSHOT_THRESHOLD;
    let started = Instant::now();

    tracing::info!(
        backend = kind.name(),
        "--- step 1: three nodes, init, unseal"
    );
    let nodes = three_node_cluster_on(kind, root.path(), &certs, &cuts, tweak, SETTLE).await;
    let init = init_and_unseal(&nodes).await;
    let token = login(&nodes[0], &init).await;

    tracing::info!("--- step 2: {WRITES} writes through every node");
    let t = Instant::now();
    let bases: Vec<String> = nodes.iter().map(|n| n.server.addr.to_string()).collect();
    let (acknowledged, retried) = for_each_key(&bases, &token, |http, token, i| async move {
        let key = format!("/v1/kv/app/key-{i}");
        let body = json!({ "value": value_of(i) });
        let (code, body, retried) =
            until_available(|| http.put(&key, Some(&token), body.clone())).await;
        assert_eq!(code, 200, "{key}: {body}");
        retried
    })
    .await;
    assert_eq!(acknowledged, WRITES);
    tracing::info!(elapsed = ?t.elapsed(), retried, "writes acknowledged");

    tracing::info!("--- step 3: converge, stop all three");
    let applied = converge(&nodes).await;
    let mut specs = Vec::new();
    for n in nodes {
        specs.push(n.stop().await);
    }

    tracing::info!(applied, "--- step 4: start all three again; unseal");
    let t = Instant::now();
    let mut nodes = Vec::new();
    for spec in specs {
        nodes.push(
            ClusterNode::start_tweaked(spec, &certs, cuts.options(), tweak)
                .await
                .unwrap(),
        );
    }
    for n in &nodes {
        assert!(sealed(n).await, "node {} restarts sealed", n.id());
    }
    wait_until(SETTLE, "some node leads", || async {
        nodes.iter().any(|n| n.leader().is_some())
    })
    .await;
    let (code, body) = nodes[1]
        .http
        .post(
            "/v1/sys/unseal",
            None,
            json!({ "key": init["unseal_keys"][0] }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    for n in &nodes {
        assert!(!sealed(n).await, "node {} is unsealed", n.id());
    }
    tracing::info!(elapsed = ?t.elapsed(), "restarted and unsealed");

    tracing::info!("--- step 5: every node reads every acknowledged write");
    let t = Instant::now();
    let after = same_state(&nodes).await;
    assert!(
        after >= applied,
        "applied {after} after the restart, {applied} before"
    );
    // The backends hold the same state (above); each node's API decrypts
    // every key from its own replica (a stale read: no Raft round per key).
    for n in &nodes {
        let base = [n.server.addr.to_string()];
        let id = n.id();
        let (ran, retried) = for_each_key(&base, &token, move |http, token, i| async move {
            let key = format!("/v1/kv/app/key-{i}?consistency=stale");
            let (code, body, retried) = until_available(|| http.get(&key, Some(&token))).await;
            assert_eq!(
                (code, &body["value"]),
                (200, &json!(value_of(i))),
                "{key} on node {id}: {body}"
            );
            retried
        })
        .await;
        assert_eq!(ran, WRITES);
        // And a linearizable read of the last key.
        let last = format!("key-{}", WRITES - 1);
        let (code, body) = read(n, &token, &last).await;
        assert_eq!(
            (code, &body["value"]),
            (200, &json!(value_of(WRITES - 1))),
            "{last} on node {id}: {body}"
        );
        tracing::info!(node = id, retried, "every key read back");
    }
    tracing::info!(elapsed = ?t.elapsed(), "every write read back on every node");

    tracing::info!(elapsed = ?started.elapsed(), "--- step 6: shut down");
    for n in nodes {
        n.stop().await;
    }
}

/// The value written under `key-{i}`.
fn value_of(i: usize) -> String {
    format!("value-{i}")
}

/// Run `op` for keys `0..WRITES`, `WORKERS` at a time; worker `w` sends
/// through `bases[w % bases.len()]`. Returns how many ran, and the sum of
/// what they returned (the 503s they retried).
async fn for_each_key<F, Fut>(bases: &[String], token: &str, op: F) -> (usize, usize)
where
    F: Fn(crate::common::Http, String, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = usize> + Send,
{
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let base = format!("http://{}", bases[w % bases.len()]);
        let token = token.to_string();
        let op = op.clone();
        workers.spawn(async move {
            let (mut done, mut retried) = (0, 0);
            for i in (w..WRITES).step_by(WORKERS) {
                retried += op(crate::common::Http::new(base.clone()), token.clone(), i).await;
                done += 1;
            }
            (done, retried)
        });
    }
    let (mut done, mut retried) = (0, 0);
    while let Some(worker) = workers.join_next().await {
        let (d, r) = worker.expect("a worker ran to the end");
        done += d;
        retried += r;
    }
    (done, retried)
}

/// Send `call` again while it answers 503 (unavailable: retry), for at most
/// `SETTLE`; returns the last answer and how many 503s came before it.
async fn until_available<F, Fut>(call: F) -> (u16, serde_json::Value, usize)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, serde_json::Value)>,
{
    let deadline = Instant::now() + SETTLE;
    let mut retried = 0;
    loop {
        let (code, body) = call().await;
        if code != 503 || Instant::now() >= deadline {
            return (code, body, retried);
        }
        tracing::info!(%body, "503; retrying");
        retried += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Entries between snapshots in the leak test (snapshots are also forced at
/// its end, so every node's snapshot covers every secret-bearing entry).
const LEAK_SNAPSHOT_THRESHOLD: u64 = 10;

/// Steps:
/// 1. three nodes over `kind`, snapshot threshold 10;
/// 2. every secret-bearing operation of `t40_leaks`, each call through the
///    next node in turn (init through node 1, unseal through node 2, seal
///    and token unseal through node 3, logins, policy, writes, reads,
///    renew, gatekeeper tokens, rotate, access-key rotate, rekey, revoke
///    spread over the three): known value, access tokens, access keys,
///    unseal keys (text and raw share bytes), gatekeeper tokens, and the
///    gatekeeper key;
/// 3. a sweep on every node; a snapshot forced on every node once all
///    applied the same log: each node's data dir holds its sled Raft log and
///    `snapshots/current.snap`, the snapshot covers the last entry and holds
///    the stored secret's (encrypted) record; every backend holds it too;
/// 4. scan every byte of the three data dirs, the three backends (memory:
///    its map; etcd: the node's prefix read raw) and the debug logs for
///    every secret: as text, raw bytes, hex, base64 and `Debug` bytes;
/// 5. shut down.
pub(crate) async fn no_secret_reaches_any_node(kind: &BackendKind) {
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let started = Instant::now();

    tracing::info!(backend = kind.name(), "--- step 1: three nodes");
    let nodes = three_node_cluster_on(
        kind,
        root.path(),
        &certs,
        &cuts,
        |c| c.snapshot_threshold = LEAK_SNAPSHOT_THRESHOLD,
        SETTLE,
    )
    .await;

    tracing::info!("--- step 2: every secret-bearing operation, through each node in turn");
    let hs: Vec<&crate::common::Http> = nodes.iter().map(|n| &n.http).collect();
    let needles = exercise_secrets(&hs).await;
    for n in &nodes {
        n.server.node.sweep().await.unwrap();
    }

    tracing::info!("--- step 3: force a snapshot on every node");
    let last = same_state(&nodes).await;
    for n in &nodes {
        n.server
            .replica()
            .raft()
            .trigger()
            .snapshot()
            .await
            .unwrap();
    }
    wait_until(SETTLE, "every node snapshotted its last entry", || async {
        nodes
            .iter()
            .all(|n| n.metrics().snapshot.is_some_and(|s| s.index >= last))
    })
    .await;
    let mut files = Vec::new();
    let mut dump = Vec::new();
    for n in &nodes {
        let mine = files_under(&n.spec.data_dir);
        assert!(
            mine.iter().any(|(p, _)| p.contains("raft-log")),
            "node {}: the Raft log is on disk",
            n.id()
        );
        let snap = n.spec.data_dir.join("snapshots").join("current.snap");
        let snap = snap.display().to_string();
        let (_, bytes) = mine
            .iter()
            .find(|(p, _)| *p == snap)
            .unwrap_or_else(|| panic!("node {}: {snap} exists", n.id()));
        assert!(
            contains(bytes, STORED_SECRET),
            "node {}: the snapshot holds the stored secret's record",
            n.id()
        );
        let stored = n.backend.dump();
        assert!(
            stored.iter().any(|(k, _)| k.ends_with(STORED_SECRET)),
            "node {}: the backend holds the stored secret",
            n.id()
        );
        files.extend(mine);
        dump.extend(stored);
    }

    tracing::info!(
        files = files.len(),
        pairs = dump.len(),
        needles = needles.len(),
        "--- step 4: scan data dirs, backends and logs"
    );
    let logs = captured_logs().lock().unwrap().clone();
    assert_no_leak(&needles, &files, &dump, &logs);

    tracing::info!(elapsed = ?started.elapsed(), "--- step 5: shut down");
    for n in nodes {
        n.stop().await;
    }
}
