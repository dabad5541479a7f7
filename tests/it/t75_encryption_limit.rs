//! Invariant 9 across a cluster: no key term encrypts more than the
//! encryption limit, whichever nodes write, and a node's count does not
//! start from zero again after a seal, an unseal or a restart.
//!
//! Every test writes each value to its own path, so every ciphertext ever
//! sent stays stored and the stored values count the encryptions per term
//! (their header names the term: `version | term (4, BE) | nonce | ct`).
//! The reserved count of each term (`core/term-reserved/<term>`) is
//! checked too: at most the limit, and at least the values under the term.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kstash::barrier::Barrier;
use kstash::keyspace::{self, KvRecord};
use serde_json::{json, Value};

use crate::common::{three_node_cluster, wait_until, ClusterCerts, ClusterNode, Http, LinkCuts};
use crate::procs::{self, ProcCluster};

/// Longest wait for anything that should take a few election timeouts.
const SETTLE: Duration = Duration::from_secs(20);

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn cluster_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("enc-limit-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Stored values per key term, from a node's backend pairs.
fn values_per_term(pairs: &Pairs) -> BTreeMap<u32, u64> {
    let mut per_term = BTreeMap::new();
    for (key, value) in pairs {
        if key.starts_with(keyspace::KV_PREFIX.as_bytes()) {
            let record: KvRecord = keyspace::decode(value).expect("a KV record");
            let term = Barrier::term_of(&record.ciphertext).expect("a barrier header");
            *per_term.entry(term).or_insert(0) += 1;
        }
    }
    per_term
}

/// The reserved count of `term` as stored (0 when absent).
fn reserved(pairs: &Pairs, term: u32) -> u64 {
    let key = format!("core/term-reserved/{term:010}").into_bytes();
    pairs
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(0, |(_, v)| keyspace::decode::<u64>(v).expect("a count"))
}

/// No term holds more values than `limit`, nor reserved more than `limit`,
/// and each term reserved at least its values; returns values per term.
fn check_terms(pairs: &Pairs, limit: u64) -> BTreeMap<u32, u64> {
    let per_term = values_per_term(pairs);
    tracing::info!(?per_term, "values per key term");
    for (&term, &values) in &per_term {
        assert!(
            values <= limit,
            "term {term} encrypted {values} stored values, over the limit of {limit}: {per_term:?}"
        );
        let reserved = reserved(pairs, term);
        assert!(
            values <= reserved && reserved <= limit,
            "term {term}: {values} values, {reserved} reserved, limit {limit}"
        );
    }
    per_term
}

/// Send a request again while it answers 503 (a write whose reservation
/// or rotation lost every round to other nodes, or a leader change).
async fn until_available<F, Fut>(call: F) -> (u16, Value)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let deadline = Instant::now() + SETTLE;
    loop {
        let (code, body) = call().await;
        if code != 503 || Instant::now() >= deadline {
            return (code, body);
        }
        tracing::info!(%body, "503; retrying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Write `count` values under `prefix` through `base`, `writers` at a time;
/// each value to its own path.
async fn write_through(base: String, token: String, prefix: String, writers: usize, count: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (base, token, prefix) = (base.clone(), token.clone(), prefix.clone());
        tasks.spawn(async move {
            let http = Http::new(base);
            for i in (w..count).step_by(writers) {
                let path = format!("/v1/kv/{prefix}/k{i}");
                let body = json!({ "value": format!("{prefix}-{i}") });
                let (code, body) =
                    until_available(|| http.put(&path, Some(&token), body.clone())).await;
                assert_eq!(code, 200, "{path}: {body}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a writer ran to the end");
    }
}

async fn sealed(n: &ClusterNode) -> bool {
    let (code, st) = n.http.get("/v1/sys/status", None).await;
    assert_eq!(code, 200, "{st}");
    st["sealed"].as_bool().expect("status says sealed or not")
}

/// Init (one unseal key) through node 1 and unseal through it (passed on
/// to every node); an admin token for `team-a`.
async fn init_and_unseal(nodes: &[ClusterNode]) -> (Value, String) {
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 1, "threshold": 1}))
        .await;
    assert_eq!(code, 200, "{init}");
    unseal(&nodes[0], &init).await;
    for n in nodes {
        assert!(!sealed(n).await, "node {} is unsealed", n.id());
    }
    let token = nodes[0]
        .http
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    (init, token)
}

async fn unseal(n: &ClusterNode, init: &Value) {
    let (code, body) = n
        .http
        .post(
            "/v1/sys/unseal",
            None,
            json!({"key": init["unseal_keys"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

/// Wait until every node applied what the most advanced one applied.
async fn converge(nodes: &[ClusterNode]) {
    let target = nodes.iter().map(|n| n.applied()).max().unwrap();
    wait_until(SETTLE, "every node applied the same log", || async {
        nodes.iter().all(|n| n.applied() >= target)
    })
    .await;
}

/// Every value written by [`write_through`] reads back through `n`.
async fn read_back(n: &ClusterNode, token: &str, prefix: &str, count: usize) {
    for i in 0..count {
        let path = format!("/v1/kv/{prefix}/k{i}");
        let (code, body) = until_available(|| n.http.get(&path, Some(token))).await;
        assert_eq!(
            (code, &body["value"]),
            (200, &json!(format!("{prefix}-{i}"))),
            "{path} on node {}: {body}",
            n.id()
        );
    }
}

/// Steps:
/// 1. three in-process nodes, encryption limit 48 on each;
/// 2. init and unseal through node 1, log in;
/// 3. 144 writes (three times the limit), 3 writers through each node at
///    once, each to its own path;
/// 4. converge; in node 1's backend, no term holds more than 48 values or
///    reserved more than 48, and the keychain rotated at least twice;
/// 5. every value reads back through node 3 (no rotation replaced a key
///    that values were written under).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_term_encrypts_more_than_the_limit_across_the_cluster() {
    const LIMIT: u64 = 48;
    const PER_NODE: usize = 48;
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();

    tracing::info!("--- step 1: three nodes, limit {LIMIT}");
    let nodes = three_node_cluster(
        root.path(),
        &certs,
        &cuts,
        |c| c.encryption_limit = LIMIT,
        SETTLE,
    )
    .await;

    tracing::info!("--- step 2: init, unseal, log in");
    let (_init, token) = init_and_unseal(&nodes).await;

    tracing::info!("--- step 3: writes through every node at once");
    let mut writers = tokio::task::JoinSet::new();
    for n in &nodes {
        let base = format!("http://{}", n.server.addr);
        let prefix = format!("node-{}", n.id());
        writers.spawn(write_through(base, token.clone(), prefix, 3, PER_NODE));
    }
    while let Some(done) = writers.join_next().await {
        done.expect("every node took its writes");
    }

    tracing::info!("--- step 4: no term encrypted more than the limit");
    converge(&nodes).await;
    let per_term = check_terms(&nodes[0].backend.dump(), LIMIT);
    assert_eq!(
        per_term.values().sum::<u64>(),
        3 * PER_NODE as u64,
        "{per_term:?}"
    );
    assert!(per_term.len() >= 3, "{per_term:?}");

    tracing::info!("--- step 5: every value reads back");
    for n in &nodes {
        read_back(&nodes[2], &token, &format!("node-{}", n.id()), PER_NODE).await;
    }

    for n in nodes {
        n.stop().await;
    }
}

/// Steps (limit 10; a reservation is one encryption at that limit, so no
/// block is lost and the terms fill exactly):
/// 1. three in-process nodes; init, unseal, log in;
/// 2. 6 writes through node 1: term 1 holds 6;
/// 3. seal node 1 and unseal it again; 6 writes: term 1 reaches 10 and
///    the last 2 go to term 2 (a count started from zero again would put
///    all 12 under term 1);
/// 4. stop all three nodes and start them again (every state rebuilt from
///    its snapshot and log); unseal; 10 writes through node 1: term 2
///    reaches 10, term 3 holds 2;
/// 5. no term holds more than 10 values; every value reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_count_survives_seal_unseal_and_restart() {
    const LIMIT: u64 = 10;
    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let tweak = |c: &mut kstash::config::Config| c.encryption_limit = LIMIT;

    tracing::info!("--- step 1: three nodes, limit {LIMIT}; init, unseal");
    let nodes = three_node_cluster(root.path(), &certs, &cuts, tweak, SETTLE).await;
    let (init, token) = init_and_unseal(&nodes).await;
    let base = format!("http://{}", nodes[0].server.addr);

    tracing::info!("--- step 2: 6 writes");
    write_through(base.clone(), token.clone(), "a".into(), 1, 6).await;
    converge(&nodes).await;
    let per_term = check_terms(&nodes[0].backend.dump(), LIMIT);
    assert_eq!(per_term, BTreeMap::from([(1, 6)]));

    tracing::info!("--- step 3: seal and unseal node 1; 6 writes");
    let keys = json!([init["unseal_keys"][0]]);
    let (code, body) = nodes[0]
        .http
        .post("/v1/sys/seal", None, json!({ "keys": keys }))
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(sealed(&nodes[0]).await);
    unseal(&nodes[0], &init).await;
    write_through(base.clone(), token.clone(), "b".into(), 1, 6).await;
    converge(&nodes).await;
    let per_term = check_terms(&nodes[0].backend.dump(), LIMIT);
    assert_eq!(per_term, BTreeMap::from([(1, 10), (2, 2)]));

    tracing::info!("--- step 4: restart all three nodes; unseal; 10 writes");
    let mut specs = Vec::new();
    for n in nodes {
        specs.push(n.stop().await);
    }
    let mut nodes = Vec::new();
    for spec in specs {
        nodes.push(
            ClusterNode::start_tweaked(spec, &certs, cuts.options(), tweak)
                .await
                .unwrap(),
        );
    }
    wait_until(SETTLE, "some node leads", || async {
        nodes.iter().any(|n| n.leader().is_some())
    })
    .await;
    unseal(&nodes[0], &init).await;
    for n in &nodes {
        assert!(!sealed(n).await, "node {} is unsealed", n.id());
    }
    let base = format!("http://{}", nodes[0].server.addr);
    write_through(base, token.clone(), "c".into(), 1, 10).await;
    converge(&nodes).await;

    tracing::info!("--- step 5: no term over the limit; every value reads back");
    let per_term = check_terms(&nodes[0].backend.dump(), LIMIT);
    assert_eq!(per_term, BTreeMap::from([(1, 10), (2, 10), (3, 2)]));
    for (prefix, count) in [("a", 6), ("b", 6), ("c", 10)] {
        read_back(&nodes[1], &token, prefix, count).await;
    }

    for n in nodes {
        n.stop().await;
    }
}

/// Steps:
/// 1. three `kstash server` processes with `--encryption-limit 10`;
/// 2. init and unseal through node 1, log in;
/// 3. 60 writes (six times the limit), 2 writers through each node at
///    once, each to its own path;
/// 4. wait until every node applied the same log; save a snapshot of
///    node 1 (with the unseal key): no term holds more than 10 values or
///    reserved more than 10, and the 60 values span at least 6 terms;
/// 5. every value reads back through node 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_never_pass_the_limit_under_one_term() {
    const LIMIT: u64 = 10;
    const PER_NODE: usize = 20;
    tracing::info!("--- step 1: three processes, limit {LIMIT}");
    let c = ProcCluster::start_with("enc-limit", &["--encryption-limit", "10"]).await;

    tracing::info!("--- step 2: init, unseal, log in");
    let api = c.api(1);
    let init = procs::init(&api, 1, 1, 0).await;
    let (code, body) = api
        .post(
            "/v1/sys/unseal",
            None,
            json!({"key": init["unseal_keys"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    wait_until(SETTLE, "every node is unsealed", || async {
        c.statuses()
            .await
            .iter()
            .all(|(_, st)| st.as_ref().is_some_and(|s| s["sealed"] == false))
    })
    .await;
    let token = procs::login(&api, &init["access_key"], "team-a").await;

    tracing::info!("--- step 3: writes through every node at once");
    let mut writers = tokio::task::JoinSet::new();
    for n in &c.nodes {
        let base = n.api.base().to_string();
        let prefix = format!("node-{}", n.id);
        writers.spawn(write_through(base, token.clone(), prefix, 2, PER_NODE));
    }
    while let Some(done) = writers.join_next().await {
        done.expect("every node took its writes");
    }

    tracing::info!("--- step 4: a snapshot of node 1; count values per term");
    c.wait_same_applied(SETTLE).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sys/snapshot", api.base()))
        .json(&json!({ "keys": [init["unseal_keys"][0]] }))
        .timeout(SETTLE)
        .send()
        .await
        .expect("node 1 answers the snapshot");
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.expect("the snapshot file");
    let pairs = kstash::raft::state_machine::snapshot_pairs(&bytes).expect("a snapshot");
    let per_term = check_terms(&pairs, LIMIT);
    assert_eq!(
        per_term.values().sum::<u64>(),
        3 * PER_NODE as u64,
        "{per_term:?}"
    );
    assert!(per_term.len() >= 6, "{per_term:?}");

    tracing::info!("--- step 5: every value reads back through node 2");
    let api2 = c.api(2);
    for n in 1..=3 {
        for i in 0..PER_NODE {
            let path = format!("/v1/kv/node-{n}/k{i}");
            let (code, body) = until_available(|| api2.get(&path, Some(&token))).await;
            assert_eq!(
                (code, &body["value"]),
                (200, &json!(format!("node-{n}-{i}"))),
                "{path}: {body}"
            );
        }
    }
}
