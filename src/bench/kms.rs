//! `kstash bench kms`: load a Kubernetes KMS v2 socket the way
//! kube-apiserver does, and report per workload ops/s, p50, p90, p99, max
//! and errors.
//!
//! Workloads, each a closed loop of N clients for a measured window after a
//! warm-up: `status`; `encrypt` of a fresh random 32-byte seed with a uid
//! of its own; `decrypt` of a ciphertext chosen uniformly from those made
//! by Encrypt during setup. Then the scenario `decrypt-burst`: N distinct
//! seeds are encrypted first, then N Decrypts fire at once (at most
//! `burst_concurrency` in flight), which is what an apiserver restart does;
//! it reports the time until all answered.
//!
//! Two ways to point it: an existing socket, or a three-node kstash it
//! starts on loopback (`cluster`), where it measures both topologies side
//! by side: `stacked` (node 1 serves the socket itself, `kstash server
//! --kms-socket`) and `plugin` (a `kstash kms-plugin` process that talks to
//! the three nodes over REST with an access token).
//!
//! Invariants:
//! - The bench is a client the way kube-apiserver is one: gRPC over the
//!   Unix socket, one connection per topology, and nothing else: it has no
//!   shortcut into kstash.
//! - An answer counts only when it is right: Status says healthz "ok" and
//!   the key id setup saw; Encrypt gives a ciphertext and a key id within
//!   the apiserver's 1 KiB limits, under that key id; Decrypt gives back
//!   exactly the seed that was encrypted. Anything else is an error, and an
//!   error never counts as throughput.
//! - Closed loops count only operations that started and finished inside
//!   the measured window. A burst's throughput is its successful Decrypts
//!   over the time from the first send until the last answer.
//! - Whatever the caller chooses is bounded: clients, ciphertexts, the
//!   burst ([`MAX_CLIENTS`], [`MAX_CIPHERTEXTS`], [`MAX_BURST`]); every
//!   call has a deadline (`bench::socket::CALL_TIMEOUT`, 30 s) and every wait a limit.
//! - Nothing outlives the command: the cluster's members and the plugin are
//!   stopped and reaped (also on an error, Ctrl-C or SIGTERM), and the
//!   sockets, the plugin's token file and the data dirs are removed. The
//!   DEK seeds are random bench data and never printed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};
use tonic::transport::Channel;

use super::cluster::{LocalCluster, Scratch, NAMESPACE};
use super::socket::{check_socket_path, describe, unix_channel};
use super::{histogram, now, write_outputs};
use crate::acl::{Capability, Policy, Rule};
use crate::client::{Client, ClientOptions};
use crate::plugins::kms::pb;
use crate::plugins::kms::pb::key_management_service_client::KeyManagementServiceClient;
use crate::secret::SecretString;

/// Most concurrent clients of a point.
pub const MAX_CLIENTS: usize = 4096;
/// Most ciphertexts made during setup for the decrypt workload.
pub const MAX_CIPHERTEXTS: usize = 100_000;
/// Most Decrypts of one burst.
pub const MAX_BURST: usize = 100_000;
/// Bytes of a DEK seed, as kube-apiserver makes them.
pub const SEED_BYTES: usize = 32;
/// kube-apiserver refuses a ciphertext or a key id longer than this.
const WIRE_LIMIT: usize = 1024;
/// Encrypts in flight while setup makes ciphertexts.
const SETUP_PARALLEL: usize = 16;
/// The key the local cluster's topologies use, in the bench's namespace (`bench`).
pub const KEY_NAME: &str = "bench-kek";
/// The policy of the plugin's token: encrypt and decrypt on the key only.
const POLICY_NAME: &str = "bench-kek-kms";
/// How often the plugin refreshes its Status cache in the local cluster.
const PLUGIN_STATUS_INTERVAL: &str = "1s";

/// A closed-loop workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KmsWorkload {
    /// Status polls (health and the current key id).
    Status,
    /// Encrypt of a fresh random 32-byte seed, with a uid per call.
    Encrypt,
    /// Decrypt of a ciphertext made during setup, chosen uniformly.
    Decrypt,
}

/// What a row of the table measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Status in a closed loop.
    Status,
    /// Encrypt in a closed loop.
    Encrypt,
    /// Decrypt in a closed loop.
    Decrypt,
    /// N Decrypts of distinct ciphertexts at once.
    DecryptBurst,
}

impl Scenario {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Status => "status",
            Scenario::Encrypt => "encrypt",
            Scenario::Decrypt => "decrypt",
            Scenario::DecryptBurst => "decrypt-burst",
        }
    }
}

impl From<KmsWorkload> for Scenario {
    fn from(w: KmsWorkload) -> Scenario {
        match w {
            KmsWorkload::Status => Scenario::Status,
            KmsWorkload::Encrypt => Scenario::Encrypt,
            KmsWorkload::Decrypt => Scenario::Decrypt,
        }
    }
}

/// Who serves the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// A kstash node serves the socket itself (`kstash server --kms-socket`).
    Stacked,
    /// A `kstash kms-plugin` process, over REST to the nodes.
    Plugin,
    /// A socket given with `--socket`: whoever serves it.
    Socket,
}

impl Topology {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Stacked => "stacked",
            Topology::Plugin => "plugin",
            Topology::Socket => "socket",
        }
    }
}

/// What to run against each topology.
#[derive(Debug, Clone, Serialize)]
pub struct KmsPlan {
    /// Closed-loop workloads, in order.
    pub workloads: Vec<KmsWorkload>,
    /// Concurrent clients of each closed-loop point.
    pub concurrency: Vec<usize>,
    /// Measured time of a closed-loop point.
    #[serde(rename = "duration_s", serialize_with = "as_secs")]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[serde(rename = "warmup_s", serialize_with = "as_secs")]
    pub warmup: Duration,
    /// Ciphertexts made during setup for `decrypt`.
    pub ciphertexts: usize,
    /// Decrypts of the burst (0: no burst).
    pub burst: usize,
    /// Decrypts of the burst in flight at once (`None`: all of them).
    pub burst_concurrency: Option<usize>,
}

impl KmsPlan {
    /// Refuse a plan that measures nothing or exceeds a bound.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.workloads.is_empty() && self.burst == 0 {
            bail!("nothing to measure: give --workloads or a --burst above 0");
        }
        if !self.workloads.is_empty() {
            if self.concurrency.is_empty() || self.concurrency.contains(&0) {
                bail!("--concurrency needs at least one value, each at least 1");
            }
            if let Some(c) = self.concurrency.iter().find(|c| **c > MAX_CLIENTS) {
                bail!("--concurrency {c} is over the limit of {MAX_CLIENTS}");
            }
            if self.duration.is_zero() {
                bail!("--duration must be longer than zero");
            }
        }
        if self.workloads.contains(&KmsWorkload::Decrypt)
            && !(1..=MAX_CIPHERTEXTS).contains(&self.ciphertexts)
        {
            bail!("--ciphertexts must be 1 to {MAX_CIPHERTEXTS} for the decrypt workload");
        }
        if self.burst > MAX_BURST {
            bail!("--burst {} is over the limit of {MAX_BURST}", self.burst);
        }
        if self.burst_concurrency == Some(0) {
            bail!("--burst-concurrency must be at least 1");
        }
        Ok(())
    }

    /// Decrypts of the burst in flight at once.
    fn burst_in_flight(&self) -> usize {
        self.burst_concurrency
            .unwrap_or(self.burst)
            .clamp(1, self.burst.max(1))
    }

    /// The closed-loop points, in the order they run.
    fn points(&self) -> Vec<(KmsWorkload, usize)> {
        self.workloads
            .iter()
            .flat_map(|w| self.concurrency.iter().map(move |c| (*w, *c)))
            .collect()
    }

    /// Roughly how long one topology is measured, without setup.
    fn measured_time(&self) -> Duration {
        (self.duration + self.warmup) * self.points().len() as u32
    }
}

fn as_secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What to load.
#[derive(Debug, Clone)]
pub enum KmsSource {
    /// An existing socket.
    Socket(PathBuf),
    /// A three-node kstash started from `bin`, its data dirs, sockets and
    /// token file under `scratch`.
    LocalCluster {
        /// The kstash binary of the nodes and the plugin.
        bin: PathBuf,
        /// The parent of the scratch directories.
        scratch: PathBuf,
    },
}

/// Everything `kstash bench kms` needs.
#[derive(Debug, Clone)]
pub struct KmsOptions {
    /// The load.
    pub plan: KmsPlan,
    /// What to load.
    pub source: KmsSource,
    /// Where `results.json`, `table.md` and `logs/` go.
    pub out: PathBuf,
}

/// One line of the table: one scenario at one concurrency on one topology.
#[derive(Debug, Clone, Serialize)]
pub struct KmsRow {
    /// Who served the socket.
    pub topology: Topology,
    /// What was measured.
    pub workload: Scenario,
    /// Concurrent clients (for a burst: Decrypts in flight at once).
    pub clients: usize,
    /// Correct answers.
    pub ops: u64,
    /// Failed or wrong answers.
    pub errors: u64,
    /// Measured seconds (for a burst: until the last answer).
    pub seconds: f64,
    /// Correct answers per second.
    pub ops_per_s: f64,
    /// Median latency of correct answers, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// A socket that was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    /// Who served it.
    pub topology: Topology,
    /// Its path.
    pub socket: PathBuf,
}

/// The whole result of `kstash bench kms` (`results.json`).
#[derive(Debug, Clone, Serialize)]
pub struct KmsResults {
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// What ran.
    pub plan: KmsPlan,
    /// The sockets, in the order they were measured.
    pub topologies: Vec<Served>,
    /// The key id Status reported.
    pub key_id: String,
    /// Local cluster only: the node that led while measuring (the stacked
    /// socket is node 1's).
    pub leader: Option<u64>,
    /// Local cluster only: the process ids of the nodes and the plugin
    /// (all stopped by now).
    pub pids: Vec<u32>,
    /// One row per (scenario, clients, topology), topologies side by side.
    pub rows: Vec<KmsRow>,
}

/// What Encrypt gave for a seed: what the apiserver stores, and the seed to
/// check Decrypt against. Bench data; never printed.
struct Envelope {
    seed: Vec<u8>,
    ciphertext: Vec<u8>,
    key_id: String,
}

/// One gRPC connection to a KMS v2 socket; clones share it.
#[derive(Clone)]
pub struct KmsSocket {
    client: KeyManagementServiceClient<Channel>,
}

impl KmsSocket {
    /// Connect to the socket at `path` (one HTTP/2 connection, each call
    /// bounded by `bench::socket::CALL_TIMEOUT`, 30 s).
    pub async fn connect(path: &Path) -> anyhow::Result<KmsSocket> {
        let channel = unix_channel(path, "KMS").await?;
        Ok(KmsSocket {
            client: KeyManagementServiceClient::new(channel),
        })
    }

    /// Status: the key id, when healthz is exactly "ok" and the key id is
    /// non-empty and within the limit.
    async fn status(&self) -> Result<String, String> {
        let reply = self
            .client
            .clone()
            .status(pb::StatusRequest {})
            .await
            .map_err(describe)?
            .into_inner();
        if reply.healthz != "ok" {
            return Err(format!("Status healthz is {:?}, not \"ok\"", reply.healthz));
        }
        if reply.key_id.is_empty() || reply.key_id.len() > WIRE_LIMIT {
            return Err(format!(
                "Status key_id has {} bytes (1 to {WIRE_LIMIT} allowed)",
                reply.key_id.len()
            ));
        }
        Ok(reply.key_id)
    }

    /// Encrypt `seed` with request id `uid`; checked like the apiserver
    /// checks it, and against the key id Status gave.
    async fn encrypt(&self, seed: Vec<u8>, uid: String, key_id: &str) -> Result<Envelope, String> {
        let reply = self
            .client
            .clone()
            .encrypt(pb::EncryptRequest {
                plaintext: seed.clone(),
                uid,
            })
            .await
            .map_err(describe)?
            .into_inner();
        if reply.ciphertext.is_empty() || reply.ciphertext.len() > WIRE_LIMIT {
            return Err(format!(
                "Encrypt ciphertext has {} bytes (1 to {WIRE_LIMIT} allowed)",
                reply.ciphertext.len()
            ));
        }
        if reply.key_id != key_id {
            return Err(format!(
                "Encrypt key_id {:?} is not Status's {key_id:?}",
                reply.key_id
            ));
        }
        Ok(Envelope {
            seed,
            ciphertext: reply.ciphertext,
            key_id: reply.key_id,
        })
    }

    /// Decrypt `envelope` with request id `uid`: right only when the seed
    /// comes back.
    async fn decrypt(&self, envelope: &Envelope, uid: String) -> Result<(), String> {
        let reply = self
            .client
            .clone()
            .decrypt(pb::DecryptRequest {
                ciphertext: envelope.ciphertext.clone(),
                uid,
                key_id: envelope.key_id.clone(),
                annotations: Default::default(),
            })
            .await
            .map_err(describe)?
            .into_inner();
        if reply.plaintext != envelope.seed {
            return Err("Decrypt gave back bytes that are not the seed".into());
        }
        Ok(())
    }

    /// Encrypt `count` fresh seeds, [`SETUP_PARALLEL`] at a time; any
    /// failure fails the setup.
    async fn envelopes(&self, count: usize, key_id: &str) -> anyhow::Result<Vec<Envelope>> {
        let next = Arc::new(AtomicUsize::new(0));
        let key_id: Arc<str> = key_id.into();
        let mut tasks: tokio::task::JoinSet<anyhow::Result<Vec<Envelope>>> =
            tokio::task::JoinSet::new();
        for _ in 0..SETUP_PARALLEL.min(count) {
            let (socket, next, key_id) = (self.clone(), next.clone(), key_id.clone());
            tasks.spawn(async move {
                let mut rng = StdRng::from_entropy();
                let mut made = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let envelope = socket
                        .encrypt(seed(&mut rng), request_uid(&mut rng), &key_id)
                        .await
                        .map_err(|e| anyhow::anyhow!("setup Encrypt failed: {e}"))?;
                    made.push(envelope);
                }
                Ok(made)
            });
        }
        let mut all = Vec::with_capacity(count);
        while let Some(done) = tasks.join_next().await {
            all.extend(done.context("setup task")??);
        }
        Ok(all)
    }
}

/// A fresh random DEK seed.
fn seed(rng: &mut StdRng) -> Vec<u8> {
    let mut seed = vec![0u8; SEED_BYTES];
    rng.fill(&mut seed[..]);
    seed
}

/// A random version-4 UUID, as the apiserver sends one per request.
fn request_uid(rng: &mut StdRng) -> String {
    let mut b: [u8; 16] = rng.gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A row from a histogram of correct answers.
fn row(
    topology: Topology,
    workload: Scenario,
    clients: usize,
    hist: &Histogram<u64>,
    seconds: f64,
    errors: u64,
    first_error: Option<String>,
) -> KmsRow {
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let ops = hist.len();
    KmsRow {
        topology,
        workload,
        clients,
        ops,
        errors,
        seconds,
        ops_per_s: ops as f64 / seconds.max(1e-9),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        first_error,
    }
}

/// One closed-loop point: `clients` clients of `workload` on one
/// connection, `warmup` unmeasured, then `duration` measured. `key_id` is
/// what Status said; `pool` the ciphertexts for `decrypt`.
async fn closed_loop(
    socket: &KmsSocket,
    topology: Topology,
    workload: KmsWorkload,
    clients: usize,
    plan: &KmsPlan,
    key_id: &Arc<str>,
    pool: &Arc<Vec<Envelope>>,
) -> anyhow::Result<KmsRow> {
    if workload == KmsWorkload::Decrypt && pool.is_empty() {
        bail!("the decrypt workload needs ciphertexts from setup");
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (socket, key_id, pool) = (socket.clone(), key_id.clone(), pool.clone());
        let (measuring, stop) = (measuring.clone(), stop.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::from_entropy();
            let mut hist = histogram();
            let (mut errors, mut first_error) = (0u64, None);
            while !stop.load(Ordering::Relaxed) {
                let counted = measuring.load(Ordering::Relaxed);
                let started = Instant::now();
                let result = match workload {
                    KmsWorkload::Status => socket.status().await.and_then(|id| {
                        (id == *key_id)
                            .then_some(())
                            .ok_or_else(|| format!("Status key_id changed to {id:?}"))
                    }),
                    KmsWorkload::Encrypt => {
                        let (s, uid) = (seed(&mut rng), request_uid(&mut rng));
                        socket.encrypt(s, uid, &key_id).await.map(drop)
                    }
                    KmsWorkload::Decrypt => {
                        let envelope = &pool[rng.gen_range(0..pool.len())];
                        socket.decrypt(envelope, request_uid(&mut rng)).await
                    }
                };
                // Only calls that began and ended inside the window count.
                if !(counted && measuring.load(Ordering::Relaxed)) {
                    continue;
                }
                match result {
                    Ok(()) => {
                        hist.saturating_record(started.elapsed().as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (hist, errors, first_error)
        });
    }
    tokio::time::sleep(plan.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(plan.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let measured = window.elapsed();
    stop.store(true, Ordering::Relaxed);

    let mut hist = histogram();
    let (mut errors, mut first_error) = (0u64, None);
    while let Some(done) = tasks.join_next().await {
        let (h, e, f) = done.context("bench client task")?;
        hist.add(&h).context("merging histograms")?;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    Ok(row(
        topology,
        workload.into(),
        clients,
        &hist,
        measured.as_secs_f64(),
        errors,
        first_error,
    ))
}

/// The decrypt burst: encrypt `n` fresh seeds, then send all `n` Decrypts
/// at once (at most `in_flight` unanswered) and time until the last answer.
async fn burst(
    socket: &KmsSocket,
    topology: Topology,
    n: usize,
    in_flight: usize,
    key_id: &str,
) -> anyhow::Result<KmsRow> {
    let envelopes = socket.envelopes(n, key_id).await?;
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let fired = Instant::now();
    for envelope in envelopes {
        let (socket, gate) = (socket.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let uid = request_uid(&mut StdRng::from_entropy());
            let sent = Instant::now();
            let result = socket.decrypt(&envelope, uid).await;
            let answered = Instant::now();
            (result, answered - sent, answered)
        });
    }
    let mut hist = histogram();
    let (mut errors, mut first_error, mut last) = (0u64, None, fired);
    while let Some(done) = tasks.join_next().await {
        let (result, latency, answered) = done.context("burst task")?;
        last = last.max(answered);
        match result {
            Ok(()) => hist.saturating_record(latency.as_micros().max(1) as u64),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    Ok(row(
        topology,
        Scenario::DecryptBurst,
        in_flight,
        &hist,
        (last - fired).as_secs_f64(),
        errors,
        first_error,
    ))
}

/// A socket to measure, connected, with the key id its Status gave.
struct Subject {
    topology: Topology,
    path: PathBuf,
    socket: KmsSocket,
    key_id: Arc<str>,
}

/// Every point of `plan` on every subject, topologies side by side (each
/// point on each subject before the next point), then the bursts. A line
/// per row on stderr.
async fn measure(subjects: &[Subject], plan: &KmsPlan) -> anyhow::Result<Vec<KmsRow>> {
    let mut pools = Vec::new();
    for s in subjects {
        let count = if plan.workloads.contains(&KmsWorkload::Decrypt) {
            plan.ciphertexts
        } else {
            0
        };
        let pool = s
            .socket
            .envelopes(count, &s.key_id)
            .await
            .with_context(|| format!("setting up {}", s.topology.name()))?;
        pools.push(Arc::new(pool));
    }
    let mut rows = Vec::new();
    for (workload, clients) in plan.points() {
        for (s, pool) in subjects.iter().zip(&pools) {
            let r = closed_loop(
                &s.socket, s.topology, workload, clients, plan, &s.key_id, pool,
            )
            .await?;
            progress(&r);
            rows.push(r);
        }
    }
    if plan.burst > 0 {
        for s in subjects {
            let r = burst(
                &s.socket,
                s.topology,
                plan.burst,
                plan.burst_in_flight(),
                &s.key_id,
            )
            .await?;
            progress(&r);
            rows.push(r);
        }
    }
    Ok(rows)
}

/// A row as a line on stderr.
fn progress(r: &KmsRow) {
    eprintln!(
        "[kms] {} {} c={}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
        r.topology.name(),
        r.workload.name(),
        r.clients,
        r.ops_per_s,
        r.p50_ms,
        r.p99_ms,
        r.errors
    );
}

/// `unix:///abs/path` or `/abs/path` → the path, parsed as the plugin
/// parses its own `--socket`; anything else is refused.
pub fn socket_path(given: &str) -> anyhow::Result<PathBuf> {
    crate::plugins::socket::parse_endpoint(given).context("--socket")
}

/// Run `kstash bench kms`: connect or start, measure, stop, and write
/// `results.json` and `table.md` into `out` (the members' logs into
/// `out/logs`). Ctrl-C or SIGTERM stops everything and ends with an error;
/// so does a point where nothing succeeded (after the files are written).
pub async fn run(opts: &KmsOptions) -> anyhow::Result<KmsResults> {
    opts.plan.check()?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let started_at = now();
    let measured = tokio::select! {
        r = measure_source(opts) => r,
        signal = super::compare::interrupted() => Err(anyhow::anyhow!(
            "interrupted by {signal}; every process the bench started is stopped"
        )),
    }?;
    let results = KmsResults {
        started_at,
        finished_at: now(),
        plan: opts.plan.clone(),
        topologies: measured.served,
        key_id: measured.key_id,
        leader: measured.leader,
        pids: measured.pids,
        rows: measured.rows,
    };
    write_outputs(&results, &markdown(&results), &opts.out)?;
    let idle: Vec<String> = results
        .rows
        .iter()
        .filter(|r| r.ops == 0)
        .map(|r| {
            format!(
                "{} {} c={}: {}",
                r.topology.name(),
                r.workload.name(),
                r.clients,
                r.first_error.as_deref().unwrap_or("none finished")
            )
        })
        .collect();
    if !idle.is_empty() {
        bail!("no call succeeded in: {}", idle.join("; "));
    }
    Ok(results)
}

/// What one source gave.
struct Measured {
    served: Vec<Served>,
    key_id: String,
    leader: Option<u64>,
    pids: Vec<u32>,
    rows: Vec<KmsRow>,
}

async fn measure_source(opts: &KmsOptions) -> anyhow::Result<Measured> {
    match &opts.source {
        KmsSource::Socket(path) => {
            let socket = KmsSocket::connect(path).await?;
            let key_id = socket.status().await.map_err(|e| {
                anyhow::anyhow!(
                    "the KMS socket {} is not healthy: {e} (is kstash unsealed, with a \
                     leader, and the socket's key created?)",
                    path.display()
                )
            })?;
            let subjects = [Subject {
                topology: Topology::Socket,
                path: path.clone(),
                socket,
                key_id: key_id.as_str().into(),
            }];
            let rows = measure(&subjects, &opts.plan).await?;
            Ok(Measured {
                served: served(&subjects),
                key_id,
                leader: None,
                pids: Vec::new(),
                rows,
            })
        }
        KmsSource::LocalCluster { bin, scratch } => {
            measure_local_cluster(bin, scratch, &opts.plan, &opts.out.join("logs")).await
        }
    }
}

fn served(subjects: &[Subject]) -> Vec<Served> {
    subjects
        .iter()
        .map(|s| Served {
            topology: s.topology,
            socket: s.path.clone(),
        })
        .collect()
}

/// Start a three-node kstash whose node 1 serves `stacked.sock`, create the
/// key, a policy and a token, start a `kstash kms-plugin` on `plugin.sock`
/// with that token, wait until both sockets are healthy, measure both, and
/// stop everything.
async fn measure_local_cluster(
    bin: &Path,
    scratch: &Path,
    plan: &KmsPlan,
    logs: &Path,
) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // Declared first, dropped last: removed after every process stopped.
    let sockets = Scratch::create(scratch, "kms")?;
    let stacked = sockets.path().join("stacked.sock");
    let plugin = sockets.path().join("plugin.sock");
    check_socket_path(&stacked)?;
    check_socket_path(&plugin)?;
    let key = format!("{NAMESPACE}/{KEY_NAME}");
    // Tokens outlive the whole measurement, with room for setup.
    let ttl = plan.measured_time() * 3 + Duration::from_secs(3600);

    eprintln!(
        "[kms] starting a three-node kstash ({}), node 1 serving {}",
        bin.display(),
        stacked.display()
    );
    let node_1_args = [
        "--kms-socket".into(),
        format!("unix://{}", stacked.display()).into(),
        "--kms-key".into(),
        key.clone().into(),
    ];
    let mut cluster =
        LocalCluster::start_kstash_with(bin, scratch, logs, ttl, &node_1_args).await?;

    let admin = Client::new(&ClientOptions {
        addresses: cluster.endpoints.clone(),
        token: Some(SecretString::new(cluster.token()?.to_string())),
        ca_cert: None,
        timeout: Duration::from_secs(60),
    })?;
    admin
        .create_key(KEY_NAME, None)
        .await
        .with_context(|| format!("cannot create the key {key}"))?;
    let policy = Policy {
        rules: vec![Rule {
            path: format!("keys/{KEY_NAME}"),
            capabilities: vec![Capability::Encrypt, Capability::Decrypt],
        }],
    };
    admin
        .policy_put(NAMESPACE, POLICY_NAME, &policy, None)
        .await
        .with_context(|| format!("cannot write the policy {POLICY_NAME}"))?;
    let token = cluster.login(&[POLICY_NAME.to_string()], ttl).await?;
    let token_file = sockets.path().join("plugin-token");
    write_private(&token_file, token.expose().as_bytes())?;
    drop(token);

    let mut cmd = std::process::Command::new(bin);
    cmd.arg("kms-plugin")
        .arg("--socket")
        .arg(format!("unix://{}", plugin.display()))
        .args(["--key", &key])
        .args(["--address", &cluster.endpoints.join(",")])
        .arg("--token-file")
        .arg(&token_file)
        .args(["--status-interval", PLUGIN_STATUS_INTERVAL])
        .env("NO_COLOR", "1");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KSTASH_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cluster.spawn_helper("kstash-kms-plugin", cmd, logs)?;

    let mut subjects = Vec::new();
    for (topology, path) in [(Topology::Stacked, &stacked), (Topology::Plugin, &plugin)] {
        let what = format!(
            "the {} socket {} answers Status ok",
            topology.name(),
            path.display()
        );
        let (socket, key_id) = cluster
            .wait_until(&what, || async {
                let socket = KmsSocket::connect(path).await.ok()?;
                let key_id = socket.status().await.ok()?;
                Some((socket, key_id))
            })
            .await?;
        subjects.push(Subject {
            topology,
            path: path.clone(),
            socket,
            key_id: key_id.into(),
        });
    }
    if subjects[0].key_id != subjects[1].key_id {
        bail!(
            "the two sockets report different key ids: {} and {}",
            subjects[0].key_id,
            subjects[1].key_id
        );
    }
    let leader = admin.status().await.ok().and_then(|s| s.leader_id);
    let rows = measure(&subjects, plan).await;
    let key_id = subjects[0].key_id.to_string();
    let served = served(&subjects);
    drop(subjects);
    cluster.stop();
    eprintln!("[kms] stopped the cluster and the plugin");
    let pids = cluster.pids();
    drop(cluster);
    drop(sockets);
    Ok(Measured {
        served,
        key_id,
        leader,
        pids,
        rows: rows?,
    })
}

/// Write `body` to a new file `path` that only its owner can read.
fn write_private(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(body)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The table as Markdown, with lines saying what the numbers are.
pub fn markdown(results: &KmsResults) -> String {
    let mut md = String::from(
        "| workload | clients | topology | ops/s | p50 ms | p90 ms | p99 ms | max ms | ops | seconds | errors |\n\
         | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &results.rows {
        // Writing into a String cannot fail.
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} |",
            r.workload.name(),
            r.clients,
            r.topology.name(),
            r.ops_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.ops,
            r.seconds,
            r.errors
        );
    }
    let plan = &results.plan;
    let _ = write!(
        md,
        "\nOne gRPC connection per socket, like kube-apiserver. Closed loops of {:.1} s \
         measured after {:.1} s of warm-up; status: Status polls; encrypt: a fresh random \
         {SEED_BYTES}-byte seed per call, each with its own uid; decrypt: chosen uniformly \
         from {} ciphertexts made during setup; every answer is checked (healthz \"ok\", \
         the key id, the seed back) and a wrong one is an error.",
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.ciphertexts
    );
    if plan.burst > 0 {
        let _ = write!(
            md,
            " decrypt-burst: {} Decrypts of distinct ciphertexts sent at once, at most \
             `clients` in flight; seconds = until the last answered.",
            plan.burst
        );
    }
    let topologies: Vec<Topology> = results.topologies.iter().map(|t| t.topology).collect();
    if topologies.contains(&Topology::Stacked) {
        let leader = match results.leader {
            Some(1) => "node 1 led".to_string(),
            Some(n) => format!("node {n} led"),
            None => "the leader was not known".to_string(),
        };
        let _ = write!(
            md,
            " stacked: node 1 of a three-node kstash on loopback serves the socket \
             (`kstash server --kms-socket`); plugin: `kstash kms-plugin` over REST to the \
             three nodes with an access token; {leader}."
        );
    }
    md.push('\n');
    md
}

/// Write `results.json` and `table.md` into `out`.
/// `bench-results/kms-<UTC time, e.g. 20250102T030405Z>`.
pub fn default_out_dir() -> PathBuf {
    super::out_dir_for("kms")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    use tonic::{Request, Response, Status};

    use super::*;
    use crate::plugins::kms::pb::key_management_service_server::{
        KeyManagementService, KeyManagementServiceServer,
    };

    /// The key id the fake reports.
    const KEY_ID: &str = "kstash:bench/bench-kek:00000000000000000000000000000001:v1";

    /// A KMS plugin that "encrypts" by prefixing, answers after `delay`,
    /// and plants faults: every `fail_every`-th Decrypt is UNAVAILABLE,
    /// every `wrong_every`-th gives back other bytes.
    #[derive(Clone, Default)]
    struct Fake {
        delay: Duration,
        fail_every: Option<u64>,
        wrong_every: Option<u64>,
        decrypts: Arc<AtomicU64>,
        in_flight: Arc<AtomicU64>,
        most_in_flight: Arc<AtomicU64>,
        uids: Arc<Mutex<Vec<String>>>,
        seeds: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    #[tonic::async_trait]
    impl KeyManagementService for Fake {
        async fn status(
            &self,
            _: Request<pb::StatusRequest>,
        ) -> Result<Response<pb::StatusResponse>, Status> {
            Ok(Response::new(pb::StatusResponse {
                version: "v2".into(),
                healthz: "ok".into(),
                key_id: KEY_ID.into(),
            }))
        }

        async fn encrypt(
            &self,
            req: Request<pb::EncryptRequest>,
        ) -> Result<Response<pb::EncryptResponse>, Status> {
            let req = req.into_inner();
            self.uids.lock().unwrap().push(req.uid);
            self.seeds.lock().unwrap().push(req.plaintext.clone());
            let mut ciphertext = b"fake:".to_vec();
            ciphertext.extend(req.plaintext);
            Ok(Response::new(pb::EncryptResponse {
                ciphertext,
                key_id: KEY_ID.into(),
                annotations: Default::default(),
            }))
        }

        async fn decrypt(
            &self,
            req: Request<pb::DecryptRequest>,
        ) -> Result<Response<pb::DecryptResponse>, Status> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let n = self.decrypts.fetch_add(1, Ordering::SeqCst) + 1;
            let req = req.into_inner();
            if self.fail_every.is_some_and(|k| n.is_multiple_of(k)) {
                return Err(Status::unavailable("planted failure"));
            }
            let mut plaintext = req.ciphertext[b"fake:".len()..].to_vec();
            if self.wrong_every.is_some_and(|k| n.is_multiple_of(k)) {
                plaintext[0] ^= 1;
            }
            Ok(Response::new(pb::DecryptResponse { plaintext }))
        }
    }

    /// `fake` served on a socket in a fresh temp dir, until the guard drops.
    struct Served {
        path: PathBuf,
        _stop: tokio::sync::oneshot::Sender<()>,
        _dir: tempfile::TempDir,
    }

    fn serve(fake: Fake) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KeyManagementServiceServer::new(fake))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Served {
            path,
            _stop: stop,
            _dir: dir,
        }
    }

    fn plan() -> KmsPlan {
        KmsPlan {
            workloads: vec![
                KmsWorkload::Status,
                KmsWorkload::Encrypt,
                KmsWorkload::Decrypt,
            ],
            concurrency: vec![1, 4],
            duration: Duration::from_millis(200),
            warmup: Duration::from_millis(50),
            ciphertexts: 20,
            burst: 40,
            burst_concurrency: None,
        }
    }

    async fn subject(served: &Served) -> Subject {
        let socket = KmsSocket::connect(&served.path).await.unwrap();
        let key_id = socket.status().await.unwrap();
        Subject {
            topology: Topology::Socket,
            path: served.path.clone(),
            socket,
            key_id: key_id.into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_point_and_the_burst_are_measured_over_the_socket() {
        let fake = Fake::default();
        let served = serve(fake.clone());
        let rows = measure(&[subject(&served).await], &plan()).await.unwrap();
        let kinds: Vec<(Scenario, usize)> = rows.iter().map(|r| (r.workload, r.clients)).collect();
        assert_eq!(
            kinds,
            [
                (Scenario::Status, 1),
                (Scenario::Status, 4),
                (Scenario::Encrypt, 1),
                (Scenario::Encrypt, 4),
                (Scenario::Decrypt, 1),
                (Scenario::Decrypt, 4),
                (Scenario::DecryptBurst, 40),
            ]
        );
        for r in &rows {
            assert!(r.ops > 0 && r.errors == 0, "{r:?}");
            assert!(r.p50_ms <= r.p90_ms && r.p90_ms <= r.p99_ms && r.p99_ms <= r.max_ms);
        }
        let burst = &rows[6];
        assert_eq!(burst.ops, 40, "every Decrypt of the burst answered");
        assert_eq!(burst.topology, Topology::Socket);
        // Seeds are fresh 32 random bytes; uids are distinct v4 UUIDs.
        let seeds = fake.seeds.lock().unwrap();
        assert!(seeds.iter().all(|s| s.len() == SEED_BYTES));
        let distinct: std::collections::BTreeSet<&Vec<u8>> = seeds.iter().collect();
        assert_eq!(distinct.len(), seeds.len());
        let uids = fake.uids.lock().unwrap();
        let distinct: std::collections::BTreeSet<&String> = uids.iter().collect();
        assert_eq!(distinct.len(), uids.len());
        assert!(uids
            .iter()
            .all(|u| u.len() == 36 && u.as_bytes()[14] == b'4'));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_and_wrong_answers_are_errors_never_throughput() {
        // A Decrypt that gives back other bytes than the seed is an error.
        let served = serve(Fake {
            wrong_every: Some(7),
            ..Fake::default()
        });
        let s = subject(&served).await;
        let p = KmsPlan {
            workloads: vec![KmsWorkload::Decrypt],
            concurrency: vec![2],
            burst: 0,
            ..plan()
        };
        let rows = measure(&[s], &p).await.unwrap();
        let decrypt = &rows[0];
        assert!(decrypt.ops > 0 && decrypt.errors > 0, "{decrypt:?}");
        let first = decrypt.first_error.as_deref().unwrap();
        assert!(first.contains("not the seed"), "{first}");
        let rate = decrypt.ops as f64 / decrypt.seconds;
        assert!((decrypt.ops_per_s - rate).abs() < 1e-6, "{decrypt:?}");

        // A failed Decrypt of the burst is an error, and only answers count
        // as throughput: 70 Decrypts, every 5th refused.
        let fake = Fake {
            fail_every: Some(5),
            ..Fake::default()
        };
        let served = serve(fake);
        let s = subject(&served).await;
        let burst = burst(&s.socket, s.topology, 70, 70, &s.key_id)
            .await
            .unwrap();
        assert_eq!((burst.ops, burst.errors), (56, 14), "{burst:?}");
        assert!(
            (burst.ops_per_s * burst.seconds - 56.0).abs() < 1e-6,
            "{burst:?}"
        );
        assert_eq!(
            burst.first_error.as_deref(),
            Some("Unavailable: planted failure")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_keeps_at_most_its_concurrency_in_flight() {
        let fake = Fake {
            delay: Duration::from_millis(20),
            ..Fake::default()
        };
        let served = serve(fake.clone());
        let s = subject(&served).await;
        let row = burst(&s.socket, s.topology, 30, 5, &s.key_id)
            .await
            .unwrap();
        assert_eq!((row.ops, row.errors, row.clients), (30, 0, 5), "{row:?}");
        assert_eq!(fake.most_in_flight.load(Ordering::SeqCst), 5);
        // Six waves of 20 ms each: the time until the last answer.
        assert!(row.seconds >= 0.12, "{row:?}");

        let all_at_once = Fake {
            delay: Duration::from_millis(20),
            ..Fake::default()
        };
        let served = serve(all_at_once.clone());
        let s = subject(&served).await;
        let row = burst(&s.socket, s.topology, 30, 30, &s.key_id)
            .await
            .unwrap();
        assert_eq!(row.ops, 30);
        assert_eq!(all_at_once.most_in_flight.load(Ordering::SeqCst), 30);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_existing_socket_is_measured_and_the_files_written() {
        let served = serve(Fake::default());
        let out = tempfile::tempdir().unwrap();
        let opts = KmsOptions {
            plan: KmsPlan {
                concurrency: vec![2],
                burst: 10,
                ..plan()
            },
            source: KmsSource::Socket(served.path.clone()),
            out: out.path().join("results"),
        };
        let results = run(&opts).await.unwrap();
        assert_eq!(results.key_id, KEY_ID);
        assert_eq!(results.topologies.len(), 1);
        assert_eq!(results.topologies[0].topology, Topology::Socket);
        assert_eq!(results.rows.len(), 4, "three workloads and the burst");
        assert!(results.rows.iter().all(|r| r.topology == Topology::Socket));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(opts.out.join("results.json")).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), 4);
        let md = std::fs::read_to_string(opts.out.join("table.md")).unwrap();
        assert!(md.contains("| decrypt-burst | 10 | socket |"), "{md}");
        assert!(
            !md.contains("stacked:"),
            "no cluster, no topology note: {md}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_point_where_nothing_succeeded_fails_the_run_after_writing_the_files() {
        let served = serve(Fake {
            fail_every: Some(1),
            ..Fake::default()
        });
        let out = tempfile::tempdir().unwrap();
        let opts = KmsOptions {
            plan: KmsPlan {
                workloads: vec![KmsWorkload::Status, KmsWorkload::Decrypt],
                concurrency: vec![1],
                burst: 0,
                ..plan()
            },
            source: KmsSource::Socket(served.path.clone()),
            out: out.path().to_path_buf(),
        };
        let e = format!("{:#}", run(&opts).await.unwrap_err());
        assert!(
            e.contains("no call succeeded in: socket decrypt c=1: Unavailable: planted failure"),
            "{e}"
        );
        assert!(!e.contains("status"), "Status answered: {e}");
        let md = std::fs::read_to_string(out.path().join("table.md")).unwrap();
        assert!(md.contains("| decrypt | 1 | socket | 0 |"), "{md}");
    }

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let e = KmsSocket::connect(&path).await.err().unwrap();
        assert!(format!("{e:#}").contains("none.sock"), "{e:#}");
    }

    #[test]
    fn socket_arguments_are_absolute_paths_or_unix_urls() {
        assert_eq!(
            socket_path("unix:///run/kstash/kms.sock").unwrap(),
            Path::new("/run/kstash/kms.sock")
        );
        assert_eq!(
            socket_path("/tmp/k.sock").unwrap(),
            Path::new("/tmp/k.sock")
        );
        for bad in [
            "kms.sock",
            "unix://kms.sock",
            "unix://./k.sock",
            "",
            "tcp://h:1",
        ] {
            let e = format!("{:#}", socket_path(bad).unwrap_err());
            assert!(e.starts_with("--socket: "), "{bad}: {e}");
        }
        assert!(check_socket_path(Path::new("/tmp/short.sock")).is_ok());
        let long = PathBuf::from(format!("/tmp/{}.sock", "x".repeat(120)));
        let e = check_socket_path(&long).unwrap_err().to_string();
        assert!(e.contains("--scratch-dir"), "{e}");
    }

    #[test]
    fn plans_that_measure_nothing_or_too_much_are_refused() {
        assert!(plan().check().is_ok());
        let only_burst = KmsPlan {
            workloads: vec![],
            concurrency: vec![],
            ..plan()
        };
        assert!(only_burst.check().is_ok());
        for bad in [
            KmsPlan {
                workloads: vec![],
                burst: 0,
                ..plan()
            },
            KmsPlan {
                concurrency: vec![0],
                ..plan()
            },
            KmsPlan {
                concurrency: vec![MAX_CLIENTS + 1],
                ..plan()
            },
            KmsPlan {
                duration: Duration::ZERO,
                ..plan()
            },
            KmsPlan {
                ciphertexts: 0,
                ..plan()
            },
            KmsPlan {
                ciphertexts: MAX_CIPHERTEXTS + 1,
                ..plan()
            },
            KmsPlan {
                burst: MAX_BURST + 1,
                ..plan()
            },
            KmsPlan {
                burst_concurrency: Some(0),
                ..plan()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let capped = KmsPlan {
            burst_concurrency: Some(5000),
            ..plan()
        };
        assert_eq!(capped.burst_in_flight(), 40, "never more than the burst");
        assert_eq!(plan().burst_in_flight(), 40, "all at once by default");
    }

    #[test]
    fn request_uids_are_version_4_uuids() {
        let mut rng = StdRng::seed_from_u64(7);
        let uid = request_uid(&mut rng);
        let parts: Vec<&str> = uid.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(uid, request_uid(&mut rng));
    }

    #[test]
    fn the_table_has_a_line_per_row_and_says_what_ran() {
        let row = |topology, workload, ops_per_s: f64| KmsRow {
            topology,
            workload,
            clients: 16,
            ops: 100,
            errors: 0,
            seconds: 1.0,
            ops_per_s,
            p50_ms: 0.5,
            p90_ms: 0.9,
            p99_ms: 1.25,
            max_ms: 3.0,
            first_error: None,
        };
        let results = KmsResults {
            started_at: now(),
            finished_at: now(),
            plan: plan(),
            topologies: vec![
                super::Served {
                    topology: Topology::Stacked,
                    socket: "/s".into(),
                },
                super::Served {
                    topology: Topology::Plugin,
                    socket: "/p".into(),
                },
            ],
            key_id: KEY_ID.into(),
            leader: Some(1),
            pids: vec![],
            rows: vec![
                row(Topology::Stacked, Scenario::Encrypt, 1234.4),
                row(Topology::Plugin, Scenario::DecryptBurst, 99.6),
            ],
        };
        let md = markdown(&results);
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines[0].starts_with("| workload | clients | topology | ops/s"),
            "{md}"
        );
        assert_eq!(
            lines[2],
            "| encrypt | 16 | stacked | 1234 | 0.50 | 0.90 | 1.25 | 3.00 | 100 | 1.00 | 0 |"
        );
        assert!(
            lines[3].starts_with("| decrypt-burst | 16 | plugin | 100 |"),
            "{md}"
        );
        assert!(md.contains("40 Decrypts of distinct ciphertexts"), "{md}");
        assert!(md.contains("node 1 led"), "{md}");
    }

    #[test]
    fn the_default_out_dir_is_stamped_in_utc() {
        let dir = default_out_dir();
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(dir.starts_with("bench-results"));
        assert!(name.starts_with("kms-") && name.ends_with('Z'), "{name}");
        assert_eq!(name.len(), "kms-20250102T030405Z".len(), "{name}");
    }
}
