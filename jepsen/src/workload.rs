//! The clients: what each workload asks of kstash, and how every answer is
//! recorded.
//!
//! Invariant: an answer is classified by what it proves. Refused before any
//! effect (connection refused, 4xx, sealed) is `Fail`; a write that may have
//! been applied (timeout, broken connection, 5xx other than sealed) is
//! `Info`; only a 2xx (or, for a CAS, the 409 that reports the version it
//! found) is `Ok`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::api::{str_field, str_list, Api, Reply};
use crate::cluster::{Cluster, NODES};
use crate::events::{Event, EventKind};
use crate::history::{History, Input, OpId, Outcome, Output, Versioned};

/// Which workload a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Read, write and CAS on many versioned keys.
    Register,
    /// Unique adds to one set (a key each), read by listing.
    Set,
    /// Log in, use and revoke access tokens, some with short TTLs.
    Token,
    /// Seal one node, read from it, unseal through another.
    Seal,
}

/// A register key gets at most this many ops; then a fresh key replaces it.
pub const MAX_OPS_PER_KEY: u32 = 200;
const ACTIVE_KEYS: usize = 8;
/// Elements per set: the set workload fills set 0, then set 1, … so that
/// one list stays far below kstash's list limit (10,000 names).
pub const SET_SIZE: u64 = 1000;

/// The history key of set `k`; its elements are the keys under `set/k/`.
fn set_key(k: u64) -> String {
    format!("set-{k}")
}

/// Everything clients record, on one monotonic clock.
pub struct Recorder {
    start: Instant,
    start_wall_ns: u64,
    inner: Mutex<Recorded>,
}

/// The recorded operations of a run.
#[derive(Default)]
pub struct Recorded {
    /// Register and set operations (checked for linearizability).
    pub history: History,
    /// Token and seal operations (checked by their rules).
    pub events: Vec<Event>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            start: Instant::now(),
            start_wall_ns: wall,
            inner: Mutex::new(Recorded::default()),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The run's clock at instant `t` (0 before the run began).
    pub fn ns_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_nanos() as u64
    }

    /// The run's clock at wall-clock time `unix_ms` (saturating at 0).
    pub fn at_wall_ms(&self, unix_ms: u64) -> u64 {
        (unix_ms * 1_000_000).saturating_sub(self.start_wall_ns)
    }

    fn invoke(&self, process: u64, key: &str, input: Input) -> OpId {
        let now = self.now_ns();
        self.inner
            .lock()
            .unwrap()
            .history
            .invoke(process, key, input, now)
    }

    fn complete(&self, id: OpId, outcome: Outcome, output: Option<Output>) {
        let now = self.now_ns();
        self.inner
            .lock()
            .unwrap()
            .history
            .complete(id, outcome, output, now);
    }

    fn event(&self, e: Event) {
        self.inner.lock().unwrap().events.push(e);
    }

    /// Everything recorded so far.
    pub fn take(&self) -> Recorded {
        std::mem::take(&mut *self.inner.lock().unwrap())
    }
}

/// How a request ended, before it is turned into a history outcome.
fn write_outcome(reply: &Reply) -> Outcome {
    match reply {
        Reply::Ok(_) => Outcome::Ok,
        Reply::Unreachable(_) => Outcome::Fail,
        Reply::Lost(_) => Outcome::Info,
        Reply::Refused { status, code, .. } => match (*status, code.as_str()) {
            (503, "sealed" | "not_initialized") => Outcome::Fail,
            (s, _) if s < 500 => Outcome::Fail,
            // Unavailable may mean "committed, but not confirmed", 500 anything.
            _ => Outcome::Info,
        },
    }
}

/// Should the client try another node next?
fn should_move(reply: &Reply) -> bool {
    match reply {
        Reply::Ok(_) => false,
        Reply::Unreachable(_) | Reply::Lost(_) => true,
        Reply::Refused { status, .. } => *status >= 500,
    }
}

/// The version a 409 CAS answer names: "… found 7".
fn cas_found(reply: &Reply) -> Option<u64> {
    let Reply::Refused { message, .. } = reply else {
        return None;
    };
    message
        .rsplit_once("found ")
        .and_then(|(_, n)| n.trim().parse().ok())
}

/// What clients share.
pub struct Shared {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// The recorder.
    pub rec: Arc<Recorder>,
    /// An admin token for namespace `jepsen`.
    pub token: String,
    /// Set when clients must stop.
    pub stop: AtomicBool,
    /// Register keys in use.
    keys: Mutex<KeyPool>,
    /// Next unique set element / token number.
    counter: Mutex<u64>,
    /// Op timeout.
    pub op_timeout: Duration,
    /// Ops the clients may still start (`--max-ops`).
    ops_left: AtomicU64,
}

#[derive(Default)]
struct KeyPool {
    active: Vec<u64>,
    used: HashMap<u64, u32>,
    next: u64,
}

impl KeyPool {
    fn pick(&mut self, rng: &mut SmallRng) -> u64 {
        while self.active.len() < ACTIVE_KEYS {
            self.active.push(self.next);
            self.next += 1;
        }
        let slot = rng.gen_range(0..self.active.len());
        let key = self.active[slot];
        let n = self.used.entry(key).or_insert(0);
        *n += 1;
        if *n >= MAX_OPS_PER_KEY {
            self.active[slot] = self.next;
            self.next += 1;
        }
        key
    }
}

impl Shared {
    /// Shared state for the clients of one run.
    pub fn new(
        cluster: Arc<Cluster>,
        rec: Arc<Recorder>,
        token: String,
        op_timeout: Duration,
        max_ops: u64,
    ) -> Self {
        Self {
            cluster,
            rec,
            token,
            stop: AtomicBool::new(false),
            keys: Mutex::new(KeyPool::default()),
            counter: Mutex::new(0),
            op_timeout,
            ops_left: AtomicU64::new(max_ops),
        }
    }

    /// Take one op from the budget; false once it is spent.
    fn take_op(&self) -> bool {
        self.ops_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn next_number(&self) -> u64 {
        let mut c = self.counter.lock().unwrap();
        *c += 1;
        *c
    }

    /// How many sets the set workload has started.
    pub fn sets(&self) -> u64 {
        *self.counter.lock().unwrap() / SET_SIZE + 1
    }

    /// Every register key used so far.
    pub fn register_keys(&self) -> Vec<String> {
        let pool = self.keys.lock().unwrap();
        let mut keys: Vec<u64> = pool.used.keys().copied().collect();
        keys.sort_unstable();
        keys.into_iter().map(register_path).collect()
    }
}

fn register_path(k: u64) -> String {
    format!("r/{k}")
}

/// One client: a logical process with a home node, failing over to the
/// next node when its node does not answer or cannot serve.
pub struct Client {
    process: u64,
    home: usize,
    node: usize,
    away_ops: u32,
    apis: Vec<Api>,
    rng: SmallRng,
    seen: HashMap<String, u64>,
    tokens: Vec<(u64, String)>,
}

impl Client {
    /// Client `process`, at home on node `home`.
    pub fn new(shared: &Shared, process: u64, home: usize, seed: u64) -> Self {
        Self {
            process,
            home,
            node: home,
            away_ops: 0,
            apis: (0..NODES.len())
                .map(|i| shared.cluster.api_with_timeout(i, shared.op_timeout))
                .collect(),
            rng: SmallRng::seed_from_u64(seed ^ process.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            seen: HashMap::new(),
            tokens: Vec::new(),
        }
    }

    fn after(&mut self, reply: &Reply) {
        if should_move(reply) {
            self.node = (self.node + 1) % NODES.len();
            self.away_ops = 0;
        } else if self.node != self.home {
            // Go home now and then, so a node that was cut off and healed
            // gets its clients back.
            self.away_ops += 1;
            if self.away_ops >= 10 {
                self.node = self.home;
            }
        }
    }

    /// Run `workload` until `deadline` or `shared.stop`, one op every
    /// `interval` (with jitter).
    pub fn run(
        &mut self,
        shared: &Shared,
        workload: Workload,
        interval: Duration,
        deadline: Instant,
    ) {
        let mut next = Instant::now() + interval.mul_f64(self.rng.gen_range(0.0..1.0));
        while !shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if next > now {
                sleep((next - now).min(deadline - now));
                continue;
            }
            next += interval.mul_f64(self.rng.gen_range(0.5..1.5));
            if next < Instant::now() {
                next = Instant::now();
            }
            if !shared.take_op() {
                break;
            }
            match workload {
                Workload::Register => self.register_op(shared),
                Workload::Set => self.set_op(shared),
                Workload::Token => self.token_op(shared),
                Workload::Seal => self.seal_reader_op(shared),
            }
        }
    }

    fn register_op(&mut self, shared: &Shared) {
        let k = shared.keys.lock().unwrap().pick(&mut self.rng);
        let key = register_path(k);
        let roll = self.rng.gen_range(0..100);
        let value = format!("p{}-{}", self.process, self.rng.gen::<u32>());
        let input = if roll < 40 {
            Input::Read
        } else if roll < 70 {
            Input::Write { value }
        } else {
            let last = self.seen.get(&key).copied().unwrap_or(0);
            let expected = if self.rng.gen_bool(0.8) {
                last
            } else {
                self.rng.gen_range(0..=last + 1)
            };
            Input::Cas { expected, value }
        };
        let reply = self.register(shared, self.node, &key, input);
        self.after(&reply);
    }

    /// Run one register op on `node` and record it; also used for the final
    /// reads.
    pub fn register(&mut self, shared: &Shared, node: usize, key: &str, input: Input) -> Reply {
        let id = shared.rec.invoke(self.process, key, input.clone());
        let api = &self.apis[node];
        let (reply, outcome, output) = match &input {
            Input::Read => {
                let reply = api.get(&shared.token, key, false);
                let (outcome, output) = match &reply {
                    Reply::Ok(v) => {
                        let found =
                            v.get("version")
                                .and_then(Value::as_u64)
                                .map(|version| Versioned {
                                    version,
                                    value: str_field(v, "value").unwrap_or_default(),
                                });
                        (Outcome::Ok, Some(Output::Read { found }))
                    }
                    r if r.is_status(404) => (Outcome::Ok, Some(Output::Read { found: None })),
                    Reply::Lost(_) => (Outcome::Info, None),
                    _ => (Outcome::Fail, None),
                };
                (reply, outcome, output)
            }
            Input::Write { value } | Input::Cas { value, .. } => {
                let cas = match &input {
                    Input::Cas { expected, .. } => Some(*expected),
                    _ => None,
                };
                let reply = api.put(&shared.token, key, value, cas);
                match &reply {
                    Reply::Ok(v) => match v.get("version").and_then(Value::as_u64) {
                        Some(version) => (
                            reply.clone(),
                            Outcome::Ok,
                            Some(Output::Written { version }),
                        ),
                        None => (reply.clone(), Outcome::Info, None),
                    },
                    r if cas.is_some() && r.is_status(409) => (
                        reply.clone(),
                        Outcome::Ok,
                        Some(Output::CasMismatch {
                            actual: cas_found(r),
                        }),
                    ),
                    r => (reply.clone(), write_outcome(r), None),
                }
            }
            Input::Add { .. } | Input::ReadSet => unreachable!("register ops only"),
        };
        if let Some(Output::Read { found }) = &output {
            self.seen
                .insert(key.to_string(), found.as_ref().map_or(0, |v| v.version));
        }
        if let Some(Output::Written { version }) = &output {
            self.seen.insert(key.to_string(), *version);
        }
        shared.rec.complete(id, outcome, output);
        reply
    }

    fn set_op(&mut self, shared: &Shared) {
        if self.rng.gen_range(0..20) == 0 {
            let current = shared.sets() - 1;
            self.read_set(shared, self.node, current);
            return;
        }
        let n = shared.next_number();
        let k = n / SET_SIZE;
        let element = format!("e{n}");
        let id = shared.rec.invoke(
            self.process,
            &set_key(k),
            Input::Add {
                element: element.clone(),
            },
        );
        let reply =
            self.apis[self.node].put(&shared.token, &format!("set/{k}/{element}"), "1", Some(0));
        let outcome = write_outcome(&reply);
        shared.rec.complete(id, outcome, None);
        self.after(&reply);
    }

    /// Read set `k` whole through `node` and record it.
    pub fn read_set(&mut self, shared: &Shared, node: usize, k: u64) -> Reply {
        let id = shared.rec.invoke(self.process, &set_key(k), Input::ReadSet);
        let reply = self.apis[node].list(&shared.token, &format!("set/{k}/"));
        let (outcome, output) = match &reply {
            // One page of a longer listing is not the whole set: no read.
            Reply::Ok(v) if v.get("truncated").and_then(Value::as_bool) == Some(true) => {
                (Outcome::Fail, None)
            }
            Reply::Ok(v) => {
                let elements: BTreeSet<String> = str_list(v, "keys");
                (Outcome::Ok, Some(Output::Elements { elements }))
            }
            // An empty set is a namespace path with no keys.
            r if r.is_status(404) => (
                Outcome::Ok,
                Some(Output::Elements {
                    elements: BTreeSet::new(),
                }),
            ),
            Reply::Lost(_) => (Outcome::Info, None),
            _ => (Outcome::Fail, None),
        };
        shared.rec.complete(id, outcome, output);
        self.after(&reply);
        reply
    }

    fn token_op(&mut self, shared: &Shared) {
        let roll = self.rng.gen_range(0..100);
        if self.tokens.is_empty() || (roll < 15 && self.tokens.len() < 6) {
            self.login(shared);
        } else if roll < 30 {
            let (n, token) = self.tokens[self.rng.gen_range(0..self.tokens.len())].clone();
            let started = shared.rec.now_ns();
            let reply = self.apis[self.node].revoke_self(&token);
            // A revoked token stays in the pool: every later use must be
            // refused. Uses drop it once refused (below).
            self.token_event(shared, EventKind::Revoke, Some(n), started, &reply, None);
            self.after(&reply);
        } else {
            let (n, token) = self.tokens[self.rng.gen_range(0..self.tokens.len())].clone();
            let path = format!("t/{}", self.process);
            let started = shared.rec.now_ns();
            let reply = if self.rng.gen_bool(0.5) {
                self.apis[self.node].get(&token, &path, false)
            } else {
                self.apis[self.node].put(&token, &path, "v", None)
            };
            // 404 on a read still means the token was accepted.
            let accepted = matches!(reply, Reply::Ok(_)) || reply.is_status(404);
            let outcome = match &reply {
                _ if accepted => Outcome::Ok,
                Reply::Lost(_) => Outcome::Info,
                _ => Outcome::Fail,
            };
            self.record_event(
                shared,
                EventKind::Use,
                Some(n),
                started,
                outcome,
                &reply,
                None,
            );
            if reply.is_status(401) && self.tokens.len() > 4 {
                self.tokens.retain(|(m, _)| *m != n);
            }
            self.after(&reply);
        }
    }

    fn login(&mut self, shared: &Shared) {
        let n = shared.next_number();
        // Some tokens expire during the run: 2 to 6 s.
        let ttl = if self.rng.gen_bool(0.4) {
            format!("{}s", self.rng.gen_range(2..=6))
        } else {
            "1h".to_string()
        };
        let started = shared.rec.now_ns();
        let reply = self.apis[self.node].login(
            &shared.cluster.access_key(),
            crate::cluster::NAMESPACE,
            &["admin"],
            &ttl,
        );
        let mut expires = None;
        if let Reply::Ok(v) = &reply {
            if let (Some(token), Some(at)) = (str_field(v, "token"), str_field(v, "expires_at")) {
                expires = parse_rfc3339_ms(&at).map(|ms| shared.rec.at_wall_ms(ms));
                self.tokens.push((n, token));
            }
        }
        self.token_event(shared, EventKind::Login, Some(n), started, &reply, expires);
        self.after(&reply);
    }

    fn token_event(
        &self,
        shared: &Shared,
        kind: EventKind,
        token: Option<u64>,
        started: u64,
        reply: &Reply,
        expires_ns: Option<u64>,
    ) {
        let outcome = write_outcome(reply);
        self.record_event(shared, kind, token, started, outcome, reply, expires_ns);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_event(
        &self,
        shared: &Shared,
        kind: EventKind,
        token: Option<u64>,
        started: u64,
        outcome: Outcome,
        reply: &Reply,
        expires_ns: Option<u64>,
    ) {
        shared.rec.event(Event {
            process: self.process,
            node: self.node,
            kind,
            token,
            invoke_ns: started,
            complete_ns: Some(shared.rec.now_ns()),
            outcome,
            expires_ns,
            detail: short(reply),
        });
    }

    /// Seal workload, reader side: read a fixed key on this client's own
    /// node (no failover: the point is to ask sealed nodes).
    fn seal_reader_op(&mut self, shared: &Shared) {
        let started = shared.rec.now_ns();
        let reply = self.apis[self.home].get(&shared.token, "seal/probe", false);
        let outcome = match &reply {
            Reply::Ok(_) => Outcome::Ok,
            r if r.is_status(404) => Outcome::Ok,
            Reply::Lost(_) => Outcome::Info,
            _ => Outcome::Fail,
        };
        self.node = self.home;
        self.record_event(
            shared,
            EventKind::Read,
            None,
            started,
            outcome,
            &reply,
            None,
        );
    }

    /// A seal or unseal through `node` with one gatekeeper token (minted if
    /// none is left), keeping the replacement it returns, recorded as `kind`.
    fn gatekeeper_op(
        &mut self,
        shared: &Shared,
        node: usize,
        kind: EventKind,
        call: fn(&Api, &str) -> Reply,
    ) {
        self.node = node;
        let Some(token) = shared.cluster.take_gatekeeper_token(node) else {
            return;
        };
        let started = shared.rec.now_ns();
        let reply = call(&self.apis[node], &token);
        if let Some(next) = match &reply {
            Reply::Ok(v) => str_field(v, "gatekeeper_token"),
            _ => None,
        } {
            shared.cluster.give_gatekeeper_token(next);
        }
        self.token_event(shared, kind, None, started, &reply, None);
    }

    /// Seal workload, sealer side: seal a random node with a gatekeeper
    /// token, leave it sealed a while, unseal through another node.
    pub fn run_sealer(&mut self, shared: &Shared, deadline: Instant) {
        while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let target = self.rng.gen_range(0..NODES.len());
            self.gatekeeper_op(shared, target, EventKind::Seal, Api::seal);
            pause_until(
                shared,
                Instant::now() + Duration::from_millis(self.rng.gen_range(1000..3000)),
                deadline,
            );
            // Unseal through another node; if none is open, through the
            // sealed one itself.
            let via = (1..NODES.len())
                .map(|d| (target + d) % NODES.len())
                .find(|&i| matches!(shared.cluster.status(i), Some(s) if !s.sealed))
                .unwrap_or(target);
            self.gatekeeper_op(shared, via, EventKind::Unseal, Api::unseal_token);
            pause_until(
                shared,
                Instant::now() + Duration::from_millis(self.rng.gen_range(1000..3000)),
                deadline,
            );
        }
    }
}

fn pause_until(shared: &Shared, until: Instant, deadline: Instant) {
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < until.min(deadline) {
        sleep(Duration::from_millis(50));
    }
}

fn short(reply: &Reply) -> String {
    match reply {
        Reply::Ok(_) => "ok".into(),
        Reply::Refused { status, code, .. } => format!("{status} {code}"),
        Reply::Unreachable(_) => "unreachable".into(),
        Reply::Lost(_) => "lost".into(),
    }
}

/// `2026-11-24T22:15:03.123Z` (or with `+00:00`) → Unix milliseconds. kstash
/// writes UTC; anything else is refused.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let millis: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        format!("{digits:0<3}").parse().ok()?
    };
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let total = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + millis;
    u64::try_from(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_unix_millis() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-24T22:15:03.123Z"),
            Some(1_795_558_503_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T12:00:00+00:00"),
            Some(951_825_600_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-11-24T22:15:03+01:00"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn answers_are_classified_by_what_they_prove() {
        let refused = |status, code: &str| Reply::Refused {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(write_outcome(&Reply::Ok(Value::Null)), Outcome::Ok);
        assert_eq!(
            write_outcome(&Reply::Unreachable("x".into())),
            Outcome::Fail
        );
        assert_eq!(write_outcome(&Reply::Lost("x".into())), Outcome::Info);
        assert_eq!(write_outcome(&refused(503, "sealed")), Outcome::Fail);
        assert_eq!(write_outcome(&refused(503, "unavailable")), Outcome::Info);
        assert_eq!(write_outcome(&refused(401, "unauthorized")), Outcome::Fail);
        assert_eq!(write_outcome(&refused(500, "internal")), Outcome::Info);
        let mismatch = Reply::Refused {
            status: 409,
            code: "conflict".into(),
            message: "check-and-set failed: expected version 3, found 7".into(),
        };
        assert_eq!(cas_found(&mismatch), Some(7));
    }

    #[test]
    fn register_keys_are_retired_after_their_op_budget() {
        let mut pool = KeyPool::default();
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..(MAX_OPS_PER_KEY as usize * ACTIVE_KEYS * 3) {
            pool.pick(&mut rng);
        }
        assert!(pool.used.values().all(|&n| n <= MAX_OPS_PER_KEY));
        assert!(pool.next > ACTIVE_KEYS as u64, "fresh keys were taken");
    }
}
