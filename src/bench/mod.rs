//! `kstash bench`: closed-loop load against a kstash cluster, the way the
//! performance targets are measured.
//!
//! N clients share M connections (HTTP/2, gRPC). Each client sends one
//! request, waits for the answer, and sends the next. Keys are drawn uniformly
//! from a fixed set, and values are fixed random bytes. A warm-up runs first
//! and is not measured. Then latencies go into one HDR histogram per client,
//! and these are merged at the end.
//!
//! Invariants:
//! - What is measured is what production does. Puts go through the same API,
//!   barrier, ACL check, token check and durable Raft append as any client
//!   write; the bench has no shortcut into the server.
//! - Throughput counts only operations that started and finished inside the
//!   measured window. A failed operation is counted as an error, never as
//!   throughput.
//!
//! `compare` (`kstash bench compare`) runs this load against a three-node
//! kstash and a three-node etcd that `cluster` starts on loopback, and
//! `plot` draws the result. `kms` (`kstash bench kms`) loads a Kubernetes
//! KMS v2 socket the way kube-apiserver does, both topologies side by side.
//! `csi` (`kstash bench csi`) is the mount storm: simulated pods mount
//! secrets through a `kstash csi-provider` as the Secrets Store CSI Driver
//! asks for them. `socket` is the caller's side of a plugin's Unix socket.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::api::grpc::pb;
use crate::api::grpc::pb::kv_client::KvClient;

mod cluster;
pub mod compare;
pub mod csi;
pub mod kms;
mod plot;
mod socket;

/// What each client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Writes of `value_size` bytes to uniformly chosen keys.
    Put,
    /// Linearizable reads (ReadIndex through the leader).
    Get,
    /// Stale reads: the answering node's own applied state.
    StaleGet,
}

/// A store the bench can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Store {
    /// kstash, over gRPC with an access token.
    Kstash,
    /// etcd, through etcd-client (needs the `etcd` cargo feature).
    Etcd,
}

impl Store {
    /// The name used in flags, tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Store::Kstash => "kstash",
            Store::Etcd => "etcd",
        }
    }
}

impl Workload {
    /// The name used in flags, tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::StaleGet => "stale-get",
        }
    }
}

/// How to load.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients (requests in flight).
    pub clients: usize,
    /// Connections the clients share (round robin over the addresses).
    pub connections: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Distinct keys.
    pub keys: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Write every key before a read workload (off when the caller already
    /// did).
    pub prefill: bool,
    /// Print a live progress line on stderr.
    pub progress: bool,
}

/// The result of one bench run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// Connections.
    pub connections: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Operations completed in the measured window.
    pub ops: u64,
    /// Operations per second in the measured window.
    pub ops_per_s: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile, milliseconds.
    pub p999_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
    /// Failed operations in the measured window.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// A store the bench can load. Implementations share nothing between
/// connections but what the store's own client shares.
pub trait Target: Clone + Send + Sync + 'static {
    /// Write `value` at `key` over connection `conn`.
    fn put(
        &self,
        conn: usize,
        key: &str,
        value: &[u8],
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// Read `key` over connection `conn`; linearizable unless `stale`.
    fn get(
        &self,
        conn: usize,
        key: &str,
        stale: bool,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// A kstash cluster over gRPC, with an access token.
#[derive(Clone)]
pub struct KstashTarget {
    clients: Vec<KvClient<Channel>>,
    token: MetadataValue<tonic::metadata::Ascii>,
}

impl KstashTarget {
    /// Open `connections` connections, spread round robin over `addresses`
    /// (base URLs, `https://host:port` or `http://…`). `ca_pem` is needed for
    /// https.
    pub async fn connect(
        addresses: &[String],
        connections: usize,
        token: &str,
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        if addresses.is_empty() {
            bail!("no address to bench");
        }
        let mut clients = Vec::with_capacity(connections);
        for i in 0..connections.max(1) {
            let url = addresses[i % addresses.len()].trim_end_matches('/');
            let mut endpoint = Endpoint::from_shared(url.to_string())
                .with_context(|| format!("bad address {url:?}"))?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5));
            if url.starts_with("https://") {
                let ca = ca_pem.context("an https address needs --ca-cert")?;
                let host = url
                    .trim_start_matches("https://")
                    .rsplit_once(':')
                    .map_or(url, |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                endpoint = endpoint.tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .domain_name(host),
                )?;
            }
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            clients.push(KvClient::new(channel));
        }
        let token = MetadataValue::try_from(token).context("the token is not valid metadata")?;
        Ok(Self { clients, token })
    }

    fn client(&self, conn: usize) -> KvClient<Channel> {
        self.clients[conn % self.clients.len()].clone()
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut()
            .insert(crate::api::grpc::TOKEN_METADATA, self.token.clone());
        req
    }
}

impl Target for KstashTarget {
    async fn put(&self, conn: usize, key: &str, value: &[u8]) -> Result<(), String> {
        let req = self.request(pb::PutSecretRequest {
            path: key.to_string(),
            value: value.to_vec(),
            cas: None,
            idempotency_key: String::new(),
        });
        self.client(conn)
            .put(req)
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }

    async fn get(&self, conn: usize, key: &str, stale: bool) -> Result<(), String> {
        let consistency = if stale {
            pb::Consistency::Stale
        } else {
            pb::Consistency::Linearizable
        };
        let req = self.request(pb::GetSecretRequest {
            path: key.to_string(),
            consistency: consistency as i32,
        });
        self.client(conn)
            .get(req)
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }
}

/// An etcd cluster through etcd-client, driven by the same clients, keys
/// and values as [`KstashTarget`], so that the two compare honestly.
#[cfg(feature = "etcd")]
#[derive(Clone)]
pub struct EtcdTarget {
    clients: Vec<etcd_client::KvClient>,
}

#[cfg(feature = "etcd")]
impl EtcdTarget {
    /// Open `connections` clients, each to one endpoint (round robin over
    /// `endpoints`, `http://host:port`).
    pub async fn connect(endpoints: &[String], connections: usize) -> anyhow::Result<Self> {
        if endpoints.is_empty() {
            bail!("no etcd endpoint to bench");
        }
        let mut clients = Vec::with_capacity(connections);
        for i in 0..connections.max(1) {
            let endpoint = &endpoints[i % endpoints.len()];
            let client = etcd_client::Client::connect(
                [endpoint.as_str()],
                Some(
                    etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5)),
                ),
            )
            .await
            .with_context(|| format!("cannot connect to etcd at {endpoint}"))?;
            clients.push(client.kv_client());
        }
        Ok(Self { clients })
    }

    fn client(&self, conn: usize) -> etcd_client::KvClient {
        self.clients[conn % self.clients.len()].clone()
    }
}

#[cfg(feature = "etcd")]
impl Target for EtcdTarget {
    async fn put(&self, conn: usize, key: &str, value: &[u8]) -> Result<(), String> {
        self.client(conn)
            .put(key, value.to_vec(), None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn get(&self, conn: usize, key: &str, stale: bool) -> Result<(), String> {
        // etcd's default range read is linearizable; serializable is its
        // stale read (the answering member's own state).
        let options = stale.then(|| etcd_client::GetOptions::new().with_serializable());
        self.client(conn)
            .get(key, options)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The bench's key names: `bench/k00000` …
pub fn key_names(keys: usize) -> Vec<String> {
    (0..keys).map(|i| format!("bench/k{i:05}")).collect()
}

/// The bench's value: `size` fixed pseudo-random bytes, the same in every
/// run and for every target.
pub fn value_bytes(size: usize) -> Vec<u8> {
    let mut value = vec![0u8; size];
    StdRng::seed_from_u64(0x6b73_7461_7368).fill(&mut value[..]);
    value
}

/// Write every key once (so reads find values), `parallel` at a time.
pub async fn prefill<T: Target>(
    target: &T,
    keys: &[String],
    value: &[u8],
    parallel: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys.to_vec());
    let value = Arc::new(value.to_vec());
    let mut tasks: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    for conn in 0..parallel.max(1) {
        let (target, next, keys, value) =
            (target.clone(), next.clone(), keys.clone(), value.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(key) = keys.get(i) else {
                    return Ok(());
                };
                target
                    .put(conn, key, &value)
                    .await
                    .map_err(|e| anyhow::anyhow!("prefill {key}: {e}"))?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("prefill task")??;
    }
    Ok(())
}

/// Run one bench: warm-up, then the measured window.
pub async fn run<T: Target>(target: T, opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    if opts.clients == 0 || opts.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    let keys = Arc::new(key_names(opts.keys));
    let value = Arc::new(value_bytes(opts.value_size));
    if opts.prefill && opts.workload != Workload::Put {
        prefill(&target, &keys, &value, opts.clients.min(64)).await?;
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done_ops = Arc::new(AtomicU64::new(0));
    let done_errors = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..opts.clients {
        let target = target.clone();
        let (keys, value) = (keys.clone(), value.clone());
        let (measuring, stop) = (measuring.clone(), stop.clone());
        let (done_ops, done_errors) = (done_ops.clone(), done_errors.clone());
        let workload = opts.workload;
        let conn = client % opts.connections.max(1);
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(client as u64);
            let mut hist = histogram();
            let mut errors = 0u64;
            let mut first_error = None;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[rng.gen_range(0..keys.len())];
                let counted = measuring.load(Ordering::Relaxed);
                let started = Instant::now();
                let result = match workload {
                    Workload::Put => target.put(conn, key, &value).await,
                    Workload::Get => target.get(conn, key, false).await,
                    Workload::StaleGet => target.get(conn, key, true).await,
                };
                // Only ops that began and ended inside the window count.
                if !(counted && measuring.load(Ordering::Relaxed)) {
                    continue;
                }
                match result {
                    Ok(()) => {
                        let micros = started.elapsed().as_micros().max(1) as u64;
                        hist.saturating_record(micros);
                        done_ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        done_errors.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
            (hist, errors, first_error)
        });
    }

    let progress = opts.progress && std::io::stderr().is_terminal();
    let line = |label: &str, elapsed: f64, rate: f64, errors: u64| {
        if progress {
            eprint!(
                "\r[bench] {label} {elapsed:5.1} s  {:?}  {rate:>9.0} ops/s  errors {errors}   ",
                opts.workload
            );
        }
    };
    let start = Instant::now();
    while start.elapsed() < opts.warmup {
        tokio::time::sleep(Duration::from_millis(200).min(opts.warmup)).await;
        line("warm-up", start.elapsed().as_secs_f64(), 0.0, 0);
    }
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    let mut last = (Instant::now(), 0u64);
    while window.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(500).min(opts.duration)).await;
        let ops = done_ops.load(Ordering::Relaxed);
        let rate = (ops - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
        last = (Instant::now(), ops);
        line(
            "measured",
            window.elapsed().as_secs_f64(),
            rate,
            done_errors.load(Ordering::Relaxed),
        );
    }
    measuring.store(false, Ordering::Relaxed);
    let measured = window.elapsed();
    stop.store(true, Ordering::Relaxed);
    if progress {
        eprintln!();
    }

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
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let ops = hist.len();
    Ok(BenchReport {
        workload: opts.workload,
        clients: opts.clients,
        connections: opts.connections,
        duration_s: measured.as_secs_f64(),
        ops,
        ops_per_s: ops as f64 / measured.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        errors,
        first_error,
    })
}

/// A histogram of 1 µs .. 60 s at 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Write `results.json` and `table.md` into `out`.
pub(crate) fn write_outputs<R: Serialize>(
    results: &R,
    table: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let write = |name: &str, body: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))
    };
    write("results.json", &serde_json::to_vec_pretty(results)?)?;
    write("table.md", table.as_bytes())?;
    Ok(())
}

/// Now, RFC 3339 in UTC.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// `bench-results/<bench>-<UTC time, e.g. 20250102T030405Z>`.
pub(crate) fn out_dir_for(bench: &str) -> PathBuf {
    let stamp: String = now().chars().filter(|c| !matches!(c, '-' | ':')).collect();
    PathBuf::from("bench-results").join(format!("{bench}-{stamp}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A target that answers after a fixed delay and remembers what it saw.
    #[derive(Clone, Default)]
    struct Fake {
        seen: Arc<Mutex<Vec<(String, usize)>>>,
        fail_every: Option<usize>,
    }

    impl Target for Fake {
        async fn put(&self, _conn: usize, key: &str, value: &[u8]) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mut seen = self.seen.lock().unwrap();
            seen.push((key.to_string(), value.len()));
            match self.fail_every {
                Some(n) if seen.len().is_multiple_of(n) => Err("planted failure".into()),
                _ => Ok(()),
            }
        }

        async fn get(&self, _conn: usize, key: &str, _stale: bool) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.seen.lock().unwrap().push((key.to_string(), 0));
            Ok(())
        }
    }

    fn opts(workload: Workload) -> BenchOptions {
        BenchOptions {
            workload,
            clients: 4,
            connections: 2,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            keys: 50,
            value_size: 256,
            prefill: true,
            progress: false,
        }
    }

    #[tokio::test]
    async fn puts_use_the_value_size_and_the_key_set_and_count_only_successes() {
        let fake = Fake {
            fail_every: Some(10),
            ..Fake::default()
        };
        let report = run(fake.clone(), &opts(Workload::Put)).await.unwrap();
        let seen = fake.seen.lock().unwrap();
        assert!(seen.iter().all(|(_, len)| *len == 256));
        let names = key_names(50);
        assert!(seen.iter().all(|(k, _)| names.contains(k)));
        assert!(report.ops > 0 && report.errors > 0, "{report:?}");
        assert_eq!(report.first_error.as_deref(), Some("planted failure"));
        // Every measured op is in the histogram, and none of the warm-up's.
        assert!(report.ops + report.errors < seen.len() as u64, "{report:?}");
        assert!(
            report.p50_ms >= 1.0 && report.p50_ms <= report.p99_ms,
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn reads_are_preceded_by_a_prefill_of_every_key() {
        let fake = Fake::default();
        let report = run(fake.clone(), &opts(Workload::Get)).await.unwrap();
        let seen = fake.seen.lock().unwrap();
        let written: std::collections::BTreeSet<&str> = seen
            .iter()
            .filter(|(_, len)| *len == 256)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(written.len(), 50, "every key written once before reads");
        assert_eq!(report.errors, 0);
        assert!(report.ops > 0);
    }

    /// The etcd target against a real etcd (skipped, with a notice, where
    /// none is installed; with CI=true a missing etcd fails).
    #[cfg(feature = "etcd")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_etcd_target_puts_and_reads_a_real_etcd() {
        let Some(etcd) =
            tokio::task::spawn_blocking(crate::storage::etcd::testing::EtcdServer::start)
                .await
                .unwrap()
        else {
            return;
        };
        let target = EtcdTarget::connect(&etcd.endpoints(), 2).await.unwrap();
        for workload in [Workload::Put, Workload::Get, Workload::StaleGet] {
            // A real etcd shares the two cores and the disk with the rest of
            // the suite: one fsync stall can outlast 300 ms, and an op only
            // counts when it starts and ends inside the window.
            let o = BenchOptions {
                duration: Duration::from_secs(1),
                warmup: Duration::from_millis(200),
                ..opts(workload)
            };
            let report = run(target.clone(), &o).await.unwrap();
            assert_eq!(report.errors, 0, "{report:?}");
            assert!(report.ops > 0, "{report:?}");
        }
        let mut kv = target.client(0);
        let got = kv.get("bench/k00000", None).await.unwrap();
        assert_eq!(got.kvs()[0].value().len(), 256);
    }

    #[tokio::test]
    async fn reads_without_prefill_write_nothing() {
        let fake = Fake::default();
        let mut o = opts(Workload::StaleGet);
        o.prefill = false;
        run(fake.clone(), &o).await.unwrap();
        let seen = fake.seen.lock().unwrap();
        assert!(!seen.is_empty() && seen.iter().all(|(_, len)| *len == 0));
    }

    #[tokio::test]
    async fn zero_clients_is_refused() {
        let mut o = opts(Workload::Put);
        o.clients = 0;
        assert!(run(Fake::default(), &o).await.is_err());
    }
}
