//! Three real `kstash server` processes on loopback, driven only through
//! their REST APIs (black box): the README's three-node walk-through, a
//! leader killed with SIGKILL, and the whole cluster killed with SIGKILL in
//! the middle of a write load. Each test starts its own cluster (see
//! `procs`); the tests of this file run one at a time, so that three
//! clusters never compete for a small machine's cores during failovers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::procs::{self, named_leader, wait_for, Api, ProcCluster};

/// Longest wait for anything that should take a few election timeouts.
const SETTLE: Duration = Duration::from_secs(20);

/// A write must be acknowledged this soon after the leader is killed.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);

/// How long leadership is watched while a restarted node stays sealed.
const WATCH: Duration = Duration::from_secs(30);

/// Acknowledged writes before the whole cluster is killed.
const WRITES: usize = 5_000;

/// Concurrent writers.
const WORKERS: usize = 16;

/// Keys each writer owns; each is written about `WRITES / (WORKERS *
/// KEYS_PER_WORKER)` times, so reads check versions as well as values.
const KEYS_PER_WORKER: usize = 16;

/// Concurrent readers when reading back.
const READERS: usize = 8;

/// Attempts per key when reading back (a 503 is retried).
const READ_TRIES: usize = 30;

/// The process tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Step markers and timings on stderr (shown with `--nocapture`), with the
/// time since the test started.
struct Steps {
    test: &'static str,
    started: Instant,
}

impl Steps {
    fn new(test: &'static str) -> Steps {
        Steps {
            test,
            started: Instant::now(),
        }
    }

    fn step(&self, what: &str) {
        eprintln!(
            "[t80 {} {:>6.2}s] --- {what}",
            self.test,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn note(&self, what: &str) {
        eprintln!(
            "[t80 {} {:>6.2}s] {what}",
            self.test,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// `status["peers"]` as (id, sealed, reachable), sorted by id.
fn peer_states(st: &Value) -> Vec<(u64, bool, bool)> {
    let mut v: Vec<(u64, bool, bool)> = st["peers"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0),
                p["sealed"].as_bool().unwrap_or(true),
                p["reachable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort_unstable();
    v
}

/// Every node's own `sealed`, in node order (panics if one does not answer).
async fn sealed(c: &ProcCluster) -> Vec<bool> {
    c.statuses()
        .await
        .into_iter()
        .map(|(id, st)| {
            st.unwrap_or_else(|| panic!("node {id} answers status"))["sealed"]
                .as_bool()
                .unwrap()
        })
        .collect()
}

/// Read `path` through every node and check value and version.
async fn read_everywhere(c: &ProcCluster, token: &str, path: &str, value: &str, version: u64) {
    for n in &c.nodes {
        let (code, body) = n.api.get(path, Some(token)).await;
        assert_eq!(code, 200, "read {path} through node {}: {body}", n.id);
        assert_eq!(
            (&body["value"], &body["version"]),
            (&json!(value), &json!(version)),
            "read {path} through node {}: {body}",
            n.id
        );
    }
}

/// Init and one gatekeeper-token unseal through node `via`; returns the
/// init response, once every node is unsealed and a voter.
async fn init_and_unseal(c: &ProcCluster, via: u64, s: &Steps) -> Value {
    let init = procs::init(&c.api(1), 3, 2, 3).await;
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap();
    let t = Instant::now();
    let (code, body) = c
        .api(via)
        .post("/v1/sys/unseal", None, json!({ "gatekeeper_token": gk }))
        .await;
    assert_eq!(code, 200, "{body}");
    s.note(&format!(
        "one gatekeeper-token unseal through node {via} took {:?}",
        t.elapsed()
    ));
    assert_eq!(
        peer_states(&body),
        [(1, false, true), (2, false, true), (3, false, true)],
        "{body}"
    );
    c.wait_voters(SETTLE).await;
    init
}

/// Steps:
/// 1. `kstash operator cluster-certs`; start node 1 (`--bootstrap`), then
///    nodes 2 and 3 (`--join` node 1; node 2 advertised as `localhost`);
/// 2. init through node 1 (3 shares, threshold 2, 3 gatekeeper tokens):
///    every node reports initialised and sealed;
/// 3. ONE gatekeeper-token unseal through node 2: its answer lists three
///    reachable unsealed peers, each node's own status says unsealed, and
///    a replacement token comes back;
/// 4. log in with the access key through node 3; write through each
///    follower in turn, and after each acknowledged write read the key
///    through every node: each returns that write (value and version);
/// 5. the unseal-key variant: seal each node through its own API, then two
///    keys through node 2 alone (progress 1, then open): every node is
///    unsealed and serves the last write;
/// 6. drop: every process is killed.
#[tokio::test(flavor = "multi_thread")]
async fn walkthrough() {
    let _serial = SERIAL.lock().await;
    let s = Steps::new("walkthrough");

    s.step("step 1: certificates; node 1 bootstraps, nodes 2 and 3 join");
    let c = ProcCluster::start("procs-walk").await;
    s.note("three processes up");

    s.step("step 2: init through node 1");
    let init = procs::init(&c.api(1), 3, 2, 3).await;
    let keys = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    wait_for(
        SETTLE,
        Duration::from_millis(100),
        "every node reports initialised and sealed",
        || async {
            c.statuses()
                .await
                .iter()
                .all(|(_, st)| {
                    st.as_ref()
                        .is_some_and(|st| st["initialized"] == true && st["sealed"] == true)
                })
                .then_some(())
        },
    )
    .await;

    s.step("step 3: one gatekeeper-token unseal through node 2");
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap();
    let t = Instant::now();
    let (code, body) = c
        .api(2)
        .post("/v1/sys/unseal", None, json!({ "gatekeeper_token": gk }))
        .await;
    assert_eq!(code, 200, "{body}");
    s.note(&format!(
        "token unseal through node 2 took {:?}",
        t.elapsed()
    ));
    assert_eq!(body["sealed"], false, "{body}");
    let replacement = body["gatekeeper_token"].as_str().unwrap_or_default();
    assert!(
        replacement.starts_with("ksg_") && replacement != gk,
        "{body}"
    );
    assert_eq!(
        peer_states(&body),
        [(1, false, true), (2, false, true), (3, false, true)],
        "{body}"
    );
    assert_eq!(sealed(&c).await, [false, false, false]);
    c.wait_voters(SETTLE).await;

    s.step("step 4: log in through node 3; write through followers, read everywhere");
    let token = procs::login(&c.api(3), &init["access_key"], "app").await;
    let leader = c.wait_leader(SETTLE).await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    s.note(&format!("leader: node {leader}; followers: {followers:?}"));
    let mut last = String::new();
    for version in 1..=4u64 {
        let via = followers[version as usize % 2];
        let value = format!("walk-{version}-via-{via}");
        let (code, body) = c
            .api(via)
            .put("/v1/kv/app/walk", Some(&token), json!({ "value": value }))
            .await;
        assert_eq!(code, 200, "write through follower {via}: {body}");
        assert_eq!(body["version"], version, "{body}");
        read_everywhere(&c, &token, "/v1/kv/app/walk", &value, version).await;
        last = value;
    }

    s.step("step 5: seal each node; two unseal keys through node 2 open all");
    for n in &c.nodes {
        let (code, body) = n
            .api
            .post("/v1/sys/seal", None, json!({ "keys": keys }))
            .await;
        assert_eq!(code, 200, "seal node {}: {body}", n.id);
    }
    assert_eq!(sealed(&c).await, [true, true, true]);
    let (code, body) = c
        .api(2)
        .post("/v1/sys/unseal", None, json!({ "key": keys[0] }))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["sealed"], &body["progress"]),
        (&json!(true), &json!(1)),
        "{body}"
    );
    let (code, body) = c
        .api(2)
        .post("/v1/sys/unseal", None, json!({ "key": keys[1] }))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        peer_states(&body),
        [(1, false, true), (2, false, true), (3, false, true)],
        "{body}"
    );
    assert_eq!(sealed(&c).await, [false, false, false]);
    read_everywhere(&c, &token, "/v1/kv/app/walk", &last, 4).await;

    s.step("step 6: done; dropping the cluster kills every process");
}

/// Steps:
/// 1. three processes, init, one token unseal through node 2, log in,
///    write `app/before`;
/// 2. SIGKILL the leader; write through the survivors until one write is
///    acknowledged: within 5 s of the kill (logged); write `app/down`
///    while the old leader is down;
/// 3. restart the killed process over its data dir and ports: it comes
///    back initialised and sealed, and serves no data;
/// 4. watch leadership for 30 s (every node's status every ~100 ms): no
///    survivor ever names the sealed node leader, it stays sealed, and once
///    it has named a survivor as leader it never says it leads again,
///    while the survivors keep a leader it follows. (Its claims before it
///    heard of the current term are logged as a known issue, not failed:
///    see `sealed_restarted_leader_never_claims_to_lead`.)
/// 5. ONE gatekeeper-token unseal through a survivor opens it;
/// 6. it caught up: it reads `app/down` and the failover write, all three
///    report the same last applied index, and it takes a write itself.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_leader() {
    let _serial = SERIAL.lock().await;
    let s = Steps::new("kill_9_leader");

    s.step("step 1: three processes; init; unseal through node 2; log in");
    let mut c = ProcCluster::start("procs-kill-leader").await;
    let init = init_and_unseal(&c, 2, &s).await;
    let token = procs::login(&c.api(1), &init["access_key"], "app").await;
    let (code, body) = c
        .api(3)
        .put(
            "/v1/kv/app/before",
            Some(&token),
            json!({"value": "before"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    let leader = c.wait_leader(SETTLE).await;
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    s.step(&format!("step 2: SIGKILL the leader, node {leader}"));
    c.kill(leader);
    let killed = Instant::now();
    // Short client timeouts, so a write stuck on the dead leader does not
    // hide a quicker one through the other survivor.
    let quick: Vec<Api> = survivors
        .iter()
        .map(|id| Api::new(c.node(*id).api_addr, Duration::from_secs(2)))
        .collect();
    let mut attempts = 0u32;
    let (acked_value, acked_version, took) = loop {
        attempts += 1;
        let via = attempts as usize % 2;
        let value = format!("after-kill-{attempts}");
        match quick[via]
            .try_put(
                "/v1/kv/app/failover",
                Some(&token),
                json!({ "value": value }),
            )
            .await
        {
            Ok((200, body)) => {
                break (value, body["version"].as_u64().unwrap(), killed.elapsed());
            }
            Ok((code, body)) => {
                assert_eq!(code, 503, "only 'unavailable' while electing: {body}");
            }
            Err(e) => s.note(&format!("write through node {}: {e:#}", survivors[via])),
        }
        assert!(
            killed.elapsed() < FAILOVER_BOUND,
            "no write acknowledged within {FAILOVER_BOUND:?} of killing the leader ({attempts} attempts)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    s.note(&format!(
        "TIMING: first acknowledged write {took:?} after SIGKILL of the leader ({attempts} attempts)"
    ));
    assert!(took < FAILOVER_BOUND, "{took:?}");
    let new_leader = c.wait_leader(SETTLE).await;
    assert_ne!(new_leader, leader);
    s.note(&format!("new leader: node {new_leader}"));
    let (code, body) = c
        .api(survivors[0])
        .put(
            "/v1/kv/app/down",
            Some(&token),
            json!({"value": "written while down"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    s.step(&format!("step 3: restart node {leader} over its data dir"));
    let mut watch = LeaderWatch::new(leader);
    let first = c.restart(leader).await;
    s.note(&format!(
        "node {leader} answers again, {:?} after the kill",
        killed.elapsed()
    ));
    assert_eq!(
        (&first["initialized"], &first["sealed"]),
        (&json!(true), &json!(true)),
        "the restarted node comes back initialised and sealed: {first}"
    );
    watch.judge(leader, &first);
    let (code, body) = c.api(leader).get("/v1/kv/app/down", Some(&token)).await;
    assert_eq!(code, 503, "a sealed node serves no data: {body}");

    s.step(&format!("step 4: watch leadership for {WATCH:?}"));
    let started = Instant::now();
    while started.elapsed() < WATCH {
        let round = Instant::now();
        watch.round(&c.statuses().await, &s);
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(round.elapsed())).await;
    }
    watch.report(&s);
    assert!(
        watch.led * 10 >= watch.rounds * 9,
        "the survivors kept a leader ({} of {} rounds)",
        watch.led,
        watch.rounds
    );
    assert!(
        watch.followed > 0,
        "the restarted node follows the survivors' leader"
    );

    let via = survivors[1];
    s.step(&format!(
        "step 5: one gatekeeper-token unseal through node {via}"
    ));
    let gk = init["gatekeeper_tokens"][1].as_str().unwrap();
    let (code, body) = c
        .api(via)
        .post("/v1/sys/unseal", None, json!({ "gatekeeper_token": gk }))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        peer_states(&body),
        [(1, false, true), (2, false, true), (3, false, true)],
        "{body}"
    );
    assert_eq!(sealed(&c).await, [false, false, false]);

    s.step(&format!("step 6: node {leader} caught up"));
    let back = c.api(leader);
    let (code, body) = back.get("/v1/kv/app/down", Some(&token)).await;
    assert_eq!(
        (code, &body["value"]),
        (200, &json!("written while down")),
        "{body}"
    );
    let (code, body) = back.get("/v1/kv/app/failover", Some(&token)).await;
    assert_eq!(code, 200, "{body}");
    let version = body["version"].as_u64().unwrap();
    assert!(version >= acked_version, "{body}");
    if version == acked_version {
        assert_eq!(body["value"], acked_value.as_str(), "{body}");
    }
    let (code, body) = back.get("/v1/kv/app/before", Some(&token)).await;
    assert_eq!((code, &body["value"]), (200, &json!("before")), "{body}");
    let applied = c.wait_same_applied(SETTLE).await;
    s.note(&format!("every node applied up to index {applied}"));
    let (code, body) = back
        .put("/v1/kv/app/back", Some(&token), json!({"value": "back"}))
        .await;
    assert_eq!(code, 200, "{body}");
    read_everywhere(&c, &token, "/v1/kv/app/back", "back", 1).await;
    s.step("done");
}

/// Judges status samples while a restarted node stays sealed: it never
/// says it leads, no other node names it leader, and it stays sealed.
/// (openraft 0.9 restores a node whose saved vote is its own committed vote
/// as leader of that old term at startup, until a peer answers with a newer
/// term; kstash must not report that claim: see
/// `sealed_restarted_leader_never_claims_to_lead`.)
struct LeaderWatch {
    sealed_id: u64,
    rounds: u32,
    /// Rounds in which some other node said it leads.
    led: u32,
    /// Samples in which the restarted node named another node as leader.
    followed: u32,
}

impl LeaderWatch {
    fn new(sealed_id: u64) -> LeaderWatch {
        LeaderWatch {
            sealed_id,
            rounds: 0,
            led: 0,
            followed: 0,
        }
    }

    /// Judge one node's status.
    fn judge(&mut self, id: u64, st: &Value) {
        let me = self.sealed_id;
        if id != me {
            assert_ne!(
                named_leader(st),
                Some(me),
                "node {id} names the sealed node {me} leader: {st}"
            );
            return;
        }
        assert_eq!(st["sealed"], true, "node {me} stays sealed: {st}");
        if named_leader(st).is_some_and(|l| l != me) {
            self.followed += 1;
        }
        assert!(
            st["leader"] != true && named_leader(st) != Some(me),
            "the sealed node {me} says it leads: {st}"
        );
    }

    /// Judge one round of every node's status.
    fn round(&mut self, statuses: &[(u64, Option<Value>)], s: &Steps) {
        self.rounds += 1;
        let mut someone_leads = false;
        for (id, st) in statuses {
            let Some(st) = st else {
                s.note(&format!("node {id} did not answer status"));
                continue;
            };
            someone_leads |= *id != self.sealed_id && st["leader"] == true;
            self.judge(*id, st);
        }
        if someone_leads {
            self.led += 1;
        }
    }

    fn report(&self, s: &Steps) {
        s.note(&format!(
            "watched {} rounds: another node led in {}, node {} followed it in {} samples",
            self.rounds, self.led, self.sealed_id, self.followed
        ));
    }
}

/// Steps:
/// 1. three processes, init, one token unseal; SIGKILL the leader; wait
///    until the survivors agree on a new leader;
/// 2. restart the killed process and read its status every ~5 ms from its
///    first answer, for 3 s, and every node's status every ~100 ms: it
///    never says it leads, and no node names it leader.
///
/// openraft 0.9 restores a node whose saved vote is its own committed vote
/// as leader of that (old) term at startup, before kstash's election guard
/// or any peer is heard from; until a survivor answers with a newer term
/// (tens of milliseconds) it believes it leads. Before the fix the sealed
/// node answered `"leader": true` (and named itself in `peers`) meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn sealed_restarted_leader_never_claims_to_lead() {
    let _serial = SERIAL.lock().await;
    let s = Steps::new("sealed_restarted_leader_never_claims_to_lead");

    s.step("step 1: three processes; init; unseal; SIGKILL the leader");
    let mut c = ProcCluster::start("procs-stale-leader").await;
    init_and_unseal(&c, 2, &s).await;
    let leader = c.wait_leader(SETTLE).await;
    c.kill(leader);
    let new_leader = c.wait_leader(SETTLE).await;
    s.note(&format!("node {leader} killed; node {new_leader} leads"));

    s.step(&format!("step 2: restart node {leader}; watch it closely"));
    let mut watch = LeaderWatch::new(leader);
    let api = Api::new(c.node(leader).api_addr, Duration::from_secs(2));
    c.spawn(leader);
    let spawned = Instant::now();
    let mut answered: Option<Instant> = None;
    let mut last_round = Instant::now();
    while answered.is_none_or(|t| t.elapsed() < Duration::from_secs(3)) {
        assert!(
            spawned.elapsed() < procs::START_TIMEOUT,
            "node {leader} did not answer"
        );
        if let Ok(st) = api.status().await {
            answered.get_or_insert_with(Instant::now);
            watch.judge(leader, &st);
        }
        if last_round.elapsed() > Duration::from_millis(100) {
            watch.round(&c.statuses().await, &s);
            last_round = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    watch.report(&s);
    assert!(watch.followed > 0, "node {leader} follows {new_leader}");
    s.step("done");
}

/// The last acknowledged write of one key: (version, sequence number of
/// the value written).
type Acked = HashMap<String, (u64, u64)>;

/// Write until `stop` is set, counting acknowledged writes in `acks`:
/// writer `w` owns keys `app/w{w}/k{i}` and writes them in turn, each write
/// through the next node, value `w{w}-k{i}-s{seq}` with `seq` counting the
/// attempts on that key. Returns the last acknowledged write of each key,
/// and the calls without an acknowledgement before and after `stop`.
async fn writer(
    w: usize,
    apis: Vec<Api>,
    token: String,
    acks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (Acked, u64, u64) {
    let mut acked = Acked::new();
    let mut seqs = [0u64; KEYS_PER_WORKER];
    let (mut failed, mut cut) = (0u64, 0u64);
    for j in 0usize.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let i = j % KEYS_PER_WORKER;
        seqs[i] += 1;
        let key = format!("app/w{w}/k{i}");
        let value = format!("w{w}-k{i}-s{}", seqs[i]);
        let api = &apis[(w + j) % apis.len()];
        match api
            .try_put(
                &format!("/v1/kv/{key}"),
                Some(&token),
                json!({ "value": value }),
            )
            .await
        {
            Ok((200, body)) => {
                let version = body["version"].as_u64().expect("a version");
                acked.insert(key, (version, seqs[i]));
                acks.fetch_add(1, Ordering::SeqCst);
            }
            answer => {
                if stop.load(Ordering::SeqCst) {
                    cut += 1;
                    break;
                }
                failed += 1;
                if failed <= 3 {
                    eprintln!(
                        "writer {w}: a write through {} failed: {answer:?}",
                        api.base()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (acked, failed, cut)
}

/// Steps:
/// 1. three processes, init, one token unseal through node 1, log in;
/// 2. 16 writers over all three nodes until 5,000 writes are acknowledged
///    (only 200s count), then SIGKILL all three processes at once while
///    writes are still in flight; every write acknowledged before the
///    kill is recorded (logged: throughput);
/// 3. restart all three: each comes back sealed; one gatekeeper-token
///    unseal through node 3 (retried while no leader exists yet) opens
///    every node;
/// 4. read every key (8 readers, through the three nodes in turn;
///    linearizable reads; a 503 is retried), with the access token minted
///    before the crash: each has at least its
///    acknowledged version, and its acknowledged value at that version
///    (a later version only holds a later attempt of the same writer);
/// 5. every node reports the same last applied index.
#[tokio::test(flavor = "multi_thread")]
async fn whole_cluster_kill_9() {
    let _serial = SERIAL.lock().await;
    let s = Steps::new("whole_cluster_kill_9");

    s.step("step 1: three processes; init; unseal through node 1; log in");
    let mut c = ProcCluster::start("procs-kill-all").await;
    let init = init_and_unseal(&c, 1, &s).await;
    let token = procs::login(&c.api(2), &init["access_key"], "app").await;

    s.step(&format!(
        "step 2: {WORKERS} writers until {WRITES} acknowledged writes, then SIGKILL all"
    ));
    let apis: Vec<Api> = c
        .nodes
        .iter()
        .map(|n| Api::new(n.api_addr, Duration::from_secs(10)))
        .collect();
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(writer(
                w,
                apis.clone(),
                token.clone(),
                acks.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut last_report = Instant::now();
    wait_for(
        Duration::from_secs(120),
        Duration::from_millis(5),
        &format!("{WRITES} writes are acknowledged"),
        || {
            let n = acks.load(Ordering::SeqCst);
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                s.note(&format!("{n} writes acknowledged so far"));
            }
            std::future::ready((n >= WRITES).then_some(()))
        },
    )
    .await;
    // Writers stop issuing new writes; those in flight are cut by the kill.
    stop.store(true, Ordering::SeqCst);
    for id in [1, 2, 3] {
        c.kill(id);
    }
    let killed = Instant::now();
    let write_time = killed - started;
    let mut acked = Acked::new();
    let (mut failed, mut cut) = (0, 0);
    for w in writers {
        let (mine, f, c) = w.await.expect("a writer");
        acked.extend(mine);
        failed += f;
        cut += c;
    }
    let total = acks.load(Ordering::SeqCst);
    s.note(&format!(
        "TIMING: {total} writes acknowledged in {write_time:?} ({:.0} writes/s over {WORKERS} writers), \
         {failed} calls without an acknowledgement before the kill, {cut} cut by it; {} keys",
        total as f64 / write_time.as_secs_f64(),
        acked.len()
    ));
    assert!(total >= WRITES);

    s.step("step 3: restart all three; one token unseal through node 3");
    let restart = Instant::now();
    for n in &mut c.nodes {
        n.spawn().expect("restart a node");
    }
    for n in &mut c.nodes {
        let st = n.wait_up().await;
        assert_eq!(
            (&st["initialized"], &st["sealed"]),
            (&json!(true), &json!(true)),
            "node {} comes back initialised and sealed: {st}",
            n.id
        );
    }
    s.note(&format!(
        "all three answer {:?} after the restart",
        restart.elapsed()
    ));
    let gk = init["gatekeeper_tokens"][1].as_str().unwrap();
    let (body, attempts) = c.unseal_with_token(3, gk, SETTLE).await;
    assert!(body["gatekeeper_token"].is_string(), "{body}");
    s.note(&format!(
        "TIMING: unsealed {:?} after the restart ({attempts} unseal calls with one token)",
        restart.elapsed()
    ));
    assert_eq!(sealed(&c).await, [false, false, false]);

    let keys = acked.len();
    s.step(&format!("step 4: read back all {keys} keys"));
    let (problems, retried, took) = read_back(&apis, &token, Arc::new(acked), READERS).await;
    s.note(&format!(
        "TIMING: read back {keys} keys in {took:?} with {READERS} readers ({retried} reads \
         retried after a 503 or no answer)"
    ));
    assert!(
        problems.is_empty(),
        "{} of {keys} acknowledged keys are missing or older than acknowledged, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );

    s.step("step 5: every node applied the same log");
    let applied = c.wait_same_applied(SETTLE).await;
    s.note(&format!("every node applied up to index {applied}"));
    s.step("done");
}

/// Read every key of `acked` through the nodes in turn, `readers` at a
/// time, and check it against its last acknowledged write. A 503 (the
/// read could not be confirmed with a quorum in time) or no answer is
/// retried through the next node; only an answer counts. Returns the
/// problems, the retried reads and the time taken.
async fn read_back(
    apis: &[Api],
    token: &str,
    acked: Arc<Acked>,
    readers: usize,
) -> (Vec<String>, usize, Duration) {
    let started = Instant::now();
    let keys: Arc<Vec<String>> = Arc::new(acked.keys().cloned().collect());
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let retried = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..readers)
        .map(|r| {
            let (apis, token, acked, keys, problems, retried) = (
                apis.to_vec(),
                token.to_string(),
                acked.clone(),
                keys.clone(),
                problems.clone(),
                retried.clone(),
            );
            tokio::spawn(async move {
                for (i, key) in keys.iter().enumerate().skip(r).step_by(readers) {
                    let (version, seq) = acked[key];
                    let mut tries = 0;
                    let problem = loop {
                        let api = &apis[(i + tries) % apis.len()];
                        tries += 1;
                        match api.try_get(&format!("/v1/kv/{key}"), Some(&token)).await {
                            Ok((200, body)) => break check_read(key, version, seq, &body).err(),
                            Ok((503, _)) | Err(_) if tries < READ_TRIES => {
                                retried.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok((code, body)) => break Some(format!("{key}: {code} {body}")),
                            Err(e) => break Some(format!("{key}: {e:#}")),
                        }
                    };
                    if let Some(p) = problem {
                        problems.lock().unwrap().push(p);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a reader");
    }
    let problems = problems.lock().unwrap().clone();
    (problems, retried.load(Ordering::SeqCst), started.elapsed())
}

/// Check a read of `key` against its last acknowledged write (`version`,
/// value sequence `seq`): at least that version; that value at that
/// version; a later attempt of the same writer at a later version.
fn check_read(key: &str, version: u64, seq: u64, body: &Value) -> Result<(), String> {
    let got = body["version"].as_u64().unwrap_or(0);
    let value = body["value"].as_str().unwrap_or_default();
    let got_seq: u64 = value
        .rsplit_once("-s")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0);
    let ok = if got == version {
        got_seq == seq
    } else {
        got > version && got_seq > seq
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: acknowledged version {version} (seq {seq}), read version {got} value {value:?}"
        ))
    }
}
