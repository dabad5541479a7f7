//! `/metrics` has the figures an etcd or Vault operator looks for (Raft,
//! barrier, access tokens, operations), they move when the node does, their
//! names follow Prometheus' rules, and `deploy/monitoring/metrics.txt` (the
//! list the dashboard and alert rules are checked against) is exactly what
//! a node exports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{three_node_cluster, wait_until, ClusterCerts, Http, LinkCuts, TestNode};

/// The list the monitoring files are checked against (`deploy/validate`).
const METRICS_LIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/monitoring/metrics.txt");

/// Longer than `api::metrics::TOKEN_COUNT_TTL`, with room for a slow CI.
const TOKENS_SETTLE: Duration = Duration::from_secs(15);

/// One scrape: every sample `name{labels}` → value, and every family
/// `# TYPE` line: name → type.
struct Scrape {
    samples: BTreeMap<String, f64>,
    families: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    async fn of(http: &Http) -> Scrape {
        let (code, body) = http.get("/metrics", None).await;
        assert_eq!(code, 200, "{body}");
        let Value::String(text) = body else {
            panic!("/metrics is no text: {body}");
        };
        let mut samples = BTreeMap::new();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').expect("# TYPE name type");
                families.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                samples.insert(series.to_string(), value.parse().expect("a number"));
            }
        }
        Scrape {
            samples,
            families,
            text,
        }
    }

    /// The value of the series `series` (name and labels as printed).
    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The value of `series`, which must be there.
    fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{}", self.text))
    }
}

/// Poll `/metrics` until `check` holds for `series`.
async fn wait_for(http: &Http, series: &str, what: &str, check: impl Fn(f64) -> bool) {
    wait_until(TOKENS_SETTLE, what, || async {
        Scrape::of(http).await.get(series).is_some_and(&check)
    })
    .await;
}

/// The figures every node exports once initialised and unsealed (the
/// gauges a sealed node or one before init may leave out are included).
const FIGURES: &[&str] = &[
    "kstash_raft_has_leader",
    "kstash_raft_is_leader",
    "kstash_raft_term",
    "kstash_raft_commit_index",
    "kstash_raft_applied_index",
    "kstash_raft_leader_changes_total",
    "kstash_raft_proposals_committed_total",
    "kstash_raft_proposals_failed_total",
    "kstash_raft_proposals_pending",
    "kstash_raft_apply_duration_seconds_count",
    "kstash_raft_log_flush_duration_seconds_count",
    "kstash_barrier_sealed",
    "kstash_barrier_key_term",
    "kstash_barrier_key_encryptions",
    "kstash_barrier_key_encryption_limit",
    "kstash_access_tokens",
    "kstash_removed",
    "kstash_audit_failures_total",
];

/// Steps:
/// 1. a fresh single node: it leads (has_leader 1, is_leader 1, term >= 1,
///    a leader change seen), sealed 1, no key term yet;
/// 2. init and unseal: sealed 0, key term 1, the limit is the default;
/// 3. log in: one access token; write a secret: proposals committed, the
///    encryptions under term 1, the applied index, applies and log flushes
///    all grew, commit >= applied, nothing pending or failed;
/// 4. rotate: key term 2; revoke the token: no access token;
/// 5. seal: sealed 1, and the node still reports key term 2 and its Raft
///    figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_exports_its_raft_and_barrier_figures() {
    let n = TestNode::start().await;
    let h = &n.http;

    tracing::info!("--- step 1: a fresh node");
    wait_for(h, "kstash_raft_has_leader", "the node leads", |v| v == 1.0).await;
    let s = Scrape::of(h).await;
    assert_eq!(s.value("kstash_raft_is_leader"), 1.0);
    assert!(s.value("kstash_raft_term") >= 1.0);
    assert!(s.value("kstash_raft_leader_changes_total") >= 1.0);
    assert_eq!(s.value("kstash_barrier_sealed"), 1.0);
    assert_eq!(s.value("kstash_removed"), 0.0);
    assert_eq!(s.get("kstash_barrier_key_term"), None, "no keychain yet");

    tracing::info!("--- step 2: init and unseal");
    let init = n.init_unsealed(1, 1).await;
    let s = Scrape::of(h).await;
    assert_eq!(s.value("kstash_barrier_sealed"), 0.0);
    assert_eq!(s.value("kstash_barrier_key_term"), 1.0);
    assert_eq!(
        s.value("kstash_barrier_key_encryption_limit"),
        ((1u64 << 32) - (1 << 20)) as f64
    );

    tracing::info!("--- step 3: log in, write");
    let token = n.login(&init["access_key"], "app", &["admin"], None).await;
    wait_for(h, "kstash_access_tokens", "one access token", |v| v == 1.0).await;
    let before = Scrape::of(h).await;
    for i in 0..3 {
        let (code, body) = h
            .put(
                &format!("/v1/kv/app/s{i}"),
                Some(&token),
                json!({"value": "v"}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let after = Scrape::of(h).await;
    for grows in [
        "kstash_raft_proposals_committed_total",
        "kstash_raft_applied_index",
        "kstash_raft_apply_duration_seconds_count",
        "kstash_raft_log_flush_duration_seconds_count",
    ] {
        assert!(
            after.value(grows) >= before.value(grows) + 3.0,
            "{grows}: {} then {}",
            before.value(grows),
            after.value(grows)
        );
    }
    assert!(
        after.value("kstash_barrier_key_encryptions") >= 3.0,
        "three encryptions reserved at least"
    );
    assert!(after.value("kstash_raft_commit_index") >= after.value("kstash_raft_applied_index"));
    assert_eq!(after.value("kstash_raft_proposals_pending"), 0.0);
    assert_eq!(after.value("kstash_raft_proposals_failed_total"), 0.0);
    for name in FIGURES {
        assert!(
            after
                .samples
                .keys()
                .any(|k| k == name || k.starts_with(&format!("{name}{{"))),
            "{name} missing from /metrics:\n{}",
            after.text
        );
    }

    tracing::info!("--- step 4: rotate, revoke");
    let keys = json!({"keys": [init["unseal_keys"][0].clone()]});
    let (code, body) = h.post("/v1/sys/rotate", None, keys.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(Scrape::of(h).await.value("kstash_barrier_key_term"), 2.0);
    let (code, body) = h
        .post("/v1/auth/token/revoke", Some(&token), json!({}))
        .await;
    assert_eq!(code, 204, "{body}");
    wait_for(h, "kstash_access_tokens", "no access token", |v| v == 0.0).await;

    tracing::info!("--- step 5: seal");
    let (code, body) = h.post("/v1/sys/seal", None, keys).await;
    assert_eq!(code, 200, "{body}");
    let s = Scrape::of(h).await;
    assert_eq!(s.value("kstash_barrier_sealed"), 1.0);
    assert_eq!(
        s.value("kstash_barrier_key_term"),
        2.0,
        "known while sealed"
    );
    assert_eq!(s.value("kstash_raft_has_leader"), 1.0);
    assert!(s.get("kstash_barrier_key_encryptions").is_some());
    n.server.shutdown().await.unwrap();
}

/// Steps: one unsealed node; every `# TYPE` family of `/metrics` named by
/// the rules (`kstash_` prefix, lower snake case; counters' samples end in
/// `_total`, no gauge does; histograms are durations in `_seconds`), and the
/// set of families equals `deploy/monitoring/metrics.txt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_names_follow_the_rules_and_match_the_deploy_list() {
    let n = TestNode::start().await;
    n.init_unsealed(1, 1).await;
    let s = Scrape::of(&n.http).await;
    for (name, kind) in &s.families {
        assert!(
            name.starts_with("kstash_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}: not kstash_ lower snake case"
        );
        let samples: Vec<&String> = s
            .samples
            .keys()
            .filter(|k| {
                k.split(['{', ' ']).next() == Some(name.as_str())
                    || k.starts_with(&format!("{name}_"))
            })
            .collect();
        match kind.as_str() {
            "counter" => {
                assert!(
                    !name.ends_with("_total"),
                    "{name}: the family of a counter drops _total"
                );
                for k in samples {
                    let base = k.split('{').next().unwrap();
                    assert!(
                        base == format!("{name}_total") || base == format!("{name}_created"),
                        "counter sample {k} does not end in _total"
                    );
                }
            }
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
            "histogram" => assert!(
                name.ends_with("_seconds"),
                "histogram {name} is no duration in seconds"
            ),
            other => panic!("{name}: unexpected type {other}"),
        }
        assert!(
            !name.contains("_milliseconds") && !name.contains("_ms"),
            "{name}: use base units"
        );
    }
    let exported: BTreeSet<String> = s
        .families
        .iter()
        .map(|(name, kind)| format!("{name} {kind}"))
        .collect();
    let listed: BTreeSet<String> = std::fs::read_to_string(METRICS_LIST)
        .expect("deploy/monitoring/metrics.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let missing: Vec<_> = exported.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "deploy/monitoring/metrics.txt is out of step with /metrics: add {missing:?}, remove {stale:?}"
    );
    n.server.shutdown().await.unwrap();
}

/// Steps: three nodes (a low snapshot threshold); init through node 1,
/// unseal all, write through a follower → every node knows the leader, one
/// is it, all share a term and saw a leader change; the follower counted
/// its proposals; after enough writes every node built a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_agrees_on_its_figures() {
    let root = tempfile::Builder::new()
        .prefix("metrics-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let settle = Duration::from_secs(20);
    let nodes = three_node_cluster(
        root.path(),
        &certs,
        &cuts,
        |c| c.snapshot_threshold = 10,
        settle,
    )
    .await;

    tracing::info!("--- step: init, unseal");
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 1, "threshold": 1}))
        .await;
    assert_eq!(code, 200, "{init}");
    for n in &nodes {
        wait_until(settle, "the init reached every node", || async {
            n.http.get("/v1/sys/status", None).await.1["initialized"] == true
        })
        .await;
        let key = json!({"key": init["unseal_keys"][0].clone()});
        let (code, body) = n.http.post("/v1/sys/unseal", None, key).await;
        assert_eq!(code, 200, "{body}");
    }

    tracing::info!("--- step: figures agree");
    let leader = nodes[0].leader().expect("a leader");
    let follower = nodes.iter().find(|n| n.id() != leader).unwrap();
    let mut terms = BTreeSet::new();
    let mut leaders = 0.0;
    for n in &nodes {
        let s = Scrape::of(&n.http).await;
        assert_eq!(s.value("kstash_raft_has_leader"), 1.0, "node {}", n.id());
        assert!(
            s.value("kstash_raft_leader_changes_total") >= 1.0,
            "node {}",
            n.id()
        );
        terms.insert(s.value("kstash_raft_term") as u64);
        leaders += s.value("kstash_raft_is_leader");
    }
    assert_eq!(leaders, 1.0, "exactly one node is the leader");
    assert_eq!(terms.len(), 1, "one term: {terms:?}");

    tracing::info!("--- step: writes through a follower");
    let token = follower
        .http
        .login(&init["access_key"], "app", &["admin"], None)
        .await;
    let before = Scrape::of(&follower.http).await;
    for i in 0..20 {
        let (code, body) = follower
            .http
            .put(
                &format!("/v1/kv/app/s{i}"),
                Some(&token),
                json!({"value": "v"}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let after = Scrape::of(&follower.http).await;
    assert!(
        after.value("kstash_raft_proposals_committed_total")
            >= before.value("kstash_raft_proposals_committed_total") + 20.0
    );
    for n in &nodes {
        wait_for(
            &n.http,
            r#"kstash_raft_snapshots_total{kind="built"}"#,
            "every node built a snapshot",
            |v| v >= 1.0,
        )
        .await;
    }
    for n in nodes {
        n.stop().await;
    }
}
