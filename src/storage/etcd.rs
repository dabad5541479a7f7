//! The `etcd` backend: every pair lives in an etcd cluster under this node's key
//! prefix (for example `kstash/node-1/`).
//!
//! Invariants:
//! - Callers never see the node prefix: it is added to every key on the way in
//!   and stripped on the way out, and no call reads or writes outside it (only
//!   [`EtcdBackend::raw_dump`], a test aid, reads the whole keyspace).
//! - A batch is one etcd transaction, so it is applied whole or not at all.
//! - The [`Backend`] trait is synchronous and etcd-client is async: the backend
//!   owns a one-worker tokio runtime, spawns each call onto it and waits on a
//!   std channel. It never calls `Runtime::block_on` and shuts its runtime down
//!   in the background, so it may be created, called and dropped from inside
//!   any other tokio runtime, a `current_thread` one included.
//! - Every call is bounded by the timeout given to [`EtcdBackend::connect`].
//! - Error messages name the operation and etcd's reason, never a value.

use std::collections::HashSet;
use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use tokio::runtime::Runtime;

use super::{Backend, BatchOp, KvPairs, StorageError};

/// The most operations one [`Backend::apply`] batch may hold.
///
/// etcd refuses a transaction with more operations than its `--max-txn-ops`
/// (default 128); the backend refuses such a batch itself, before sending it,
/// so the state machine must keep its batches at or under this size.
pub const MAX_TXN_OPS: usize = 128;

/// Bytes of values per transaction when replacing everything (etcd refuses
/// requests over 1.5 MiB by default).
const REPLACE_CHUNK_BYTES: usize = 1 << 20;

/// Keys fetched per range request when scanning. etcd stores values of at most
/// `--max-request-bytes` (1.5 MiB by default), so one page stays under
/// [`MAX_RESPONSE_BYTES`] even when every value is that large.
const PAGE_KEYS: usize = 64;

/// The largest range response the client decodes (tonic's default is 4 MiB).
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// Extra time the calling thread waits past the timeout for the runtime to
/// report it, before giving up on a stuck runtime.
const REPORT_GRACE: Duration = Duration::from_secs(1);

/// A [`Backend`] that stores pairs in etcd under one node's key prefix.
///
/// # Durability
/// `apply` returns `Ok` only after etcd has committed the transaction through
/// its own Raft log (fsynced on a quorum); reads are linearizable.
///
/// # Limits (etcd's defaults)
/// - At most [`MAX_TXN_OPS`] operations per batch (`--max-txn-ops`).
/// - At most 1.5 MiB per batch request, keys and values together
///   (`--max-request-bytes`; past 2 MiB etcd's gRPC layer refuses it first),
///   so a batch holds at most one 1 MiB value. Over either limit `apply`
///   fails with [`StorageError::Unavailable`] and writes nothing.
pub struct EtcdBackend {
    endpoints: Vec<String>,
    prefix: String,
    timeout: Duration,
    kv: KvClient,
    /// Taken in `Drop` to shut it down without blocking; always `Some` before.
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl EtcdBackend {
    /// Connect to the etcd cluster at `endpoints` (`http://host:port`) and keep
    /// this node's data under `prefix`.
    ///
    /// `prefix` must be non-empty, end with `/` and hold no control characters.
    /// `timeout` bounds every call, this one included: connect reads one key to
    /// check that the cluster answers. Every error, an invalid prefix included
    /// (the error enum has no variant for bad configuration), is
    /// [`StorageError::Unavailable`].
    pub fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StorageError> {
        validate_prefix(prefix)?;
        if endpoints.is_empty() {
            return Err(StorageError::Unavailable(
                "no etcd endpoints were given".to_string(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kstash-etcd")
            .enable_all()
            .build()
            .map_err(|e| {
                StorageError::Unavailable(format!("cannot start the etcd client runtime: {e}"))
            })?;

        let eps = endpoints.to_vec();
        let probe_key = prefix.as_bytes().to_vec();
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_require_leader(true);
        let connected = bridge(&runtime, timeout, "connect", async move {
            let client = Client::connect(eps, Some(options)).await?;
            let mut kv = client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES);
            kv.get(
                probe_key,
                Some(GetOptions::new().with_keys_only().with_limit(1)),
            )
            .await?;
            Ok(kv)
        });
        let kv = match connected {
            Ok(kv) => kv,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(Self {
            endpoints: endpoints.to_vec(),
            prefix: prefix.to_string(),
            timeout,
            kv,
            runtime: Some(runtime),
        })
    }

    /// Every pair in the whole etcd keyspace, every node's prefix included,
    /// with the real (prefixed) keys, in key order.
    ///
    /// For tests that scan what etcd actually stores, e.g. for leaked
    /// plaintext; never used by kstash itself.
    pub fn raw_dump(&self) -> Result<KvPairs, StorageError> {
        let mut kv = self.kv.clone();
        // Range ["\0", "\0") is etcd's spelling of "every key".
        self.call("raw dump", async move {
            scan_range(&mut kv, vec![0], vec![0], None).await
        })
    }

    /// `prefix` + `key`.
    fn full_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key);
        k
    }

    fn call<T, F>(&self, what: &'static str, fut: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        match &self.runtime {
            Some(rt) => bridge(rt, self.timeout, what, fut),
            None => Err(StorageError::Unavailable(format!(
                "etcd {what}: the backend is shut down"
            ))),
        }
    }
}

impl Drop for EtcdBackend {
    fn drop(&mut self) {
        // Dropping a Runtime blocks, which panics inside another runtime;
        // shutting it down in the background never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let mut kv = self.kv.clone();
        let key = self.full_key(key);
        self.call("get", async move {
            let mut resp = kv.get(key, None).await?;
            Ok(resp
                .take_kvs()
                .into_iter()
                .next()
                .map(|pair| pair.into_key_value().1))
        })
    }

    fn scan_prefix(&self, prefix: &[u8], limit: Option<usize>) -> Result<KvPairs, StorageError> {
        if limit == Some(0) {
            // etcd reads a limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        let mut kv = self.kv.clone();
        let start = self.full_key(prefix);
        let end = range_end(&start);
        let strip = self.prefix.len();
        let pairs = self.call("scan", async move {
            scan_range(&mut kv, start, end, limit).await
        })?;
        Ok(pairs
            .into_iter()
            .map(|(mut k, v)| {
                k.drain(..strip);
                (k, v)
            })
            .collect())
    }

    fn scan_keys(
        &self,
        prefix: &[u8],
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        if limit == 0 {
            // etcd reads a limit of 0 as "no limit".
            return Ok(Vec::new());
        }
        let mut kv = self.kv.clone();
        let start = match from {
            Some(f) if f > prefix => self.full_key(f),
            _ => self.full_key(prefix),
        };
        let end = range_end(&self.full_key(prefix));
        let strip = self.prefix.len();
        // One keys-only request: keys are at most a few KiB, so even
        // `limit` = 10 001 keys stay far under MAX_RESPONSE_BYTES, and one
        // request reads one revision.
        let options = GetOptions::new()
            .with_range(end)
            .with_keys_only()
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let keys = self.call("scan keys", async move {
            let mut resp = kv.get(start, Some(options)).await?;
            Ok(resp
                .take_kvs()
                .into_iter()
                .map(|pair| pair.into_key_value().0)
                .collect::<Vec<_>>())
        })?;
        Ok(keys
            .into_iter()
            .map(|mut k| {
                k.drain(..strip);
                k
            })
            .collect())
    }

    fn replace_all(&self, pairs: KvPairs) -> Result<(), StorageError> {
        // Clear this node's prefix, then put the pairs in transactions that
        // stay under etcd's op-count and request-size limits.
        let mut kv = self.kv.clone();
        let start = self.prefix.clone().into_bytes();
        let end = range_end(&start);
        self.call("replace_all", async move {
            kv.delete(
                start,
                Some(etcd_client::DeleteOptions::new().with_range(end)),
            )
            .await?;
            Ok(())
        })?;
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        for (key, value) in pairs {
            if chunk.len() == MAX_TXN_OPS
                || (bytes + value.len() > REPLACE_CHUNK_BYTES && !chunk.is_empty())
            {
                self.apply(std::mem::take(&mut chunk))?;
                bytes = 0;
            }
            bytes += key.len() + value.len();
            chunk.push(BatchOp::Put { key, value });
        }
        if !chunk.is_empty() {
            self.apply(chunk)?;
        }
        Ok(())
    }

    fn apply(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        if batch.len() > MAX_TXN_OPS {
            return Err(StorageError::Unavailable(format!(
                "batch of {} operations exceeds etcd's limit of {MAX_TXN_OPS}",
                batch.len()
            )));
        }
        let ops: Vec<TxnOp> = last_op_per_key(batch)
            .into_iter()
            .map(|op| match op {
                BatchOp::Put { key, value } => TxnOp::put(self.full_key(&key), value, None),
                BatchOp::Delete { key } => TxnOp::delete(self.full_key(&key), None),
            })
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        let mut kv = self.kv.clone();
        self.call("apply", async move {
            // No compares: the `then` branch always runs, as one revision.
            kv.txn(Txn::new().and_then(ops)).await?;
            Ok(())
        })
    }
}

/// Refuse a prefix that is empty, lacks the trailing `/` or holds control
/// characters.
fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    let problem = if prefix.is_empty() {
        "it is empty"
    } else if !prefix.ends_with('/') {
        "it must end with '/'"
    } else if prefix.chars().any(char::is_control) {
        "it holds a control character"
    } else {
        return Ok(());
    };
    Err(StorageError::Unavailable(format!(
        "invalid etcd key prefix {prefix:?}: {problem}"
    )))
}

/// Run `fut` on `rt` and wait for it on this thread, for at most `timeout`.
///
/// Safe to call from inside another tokio runtime: the future runs on `rt`'s
/// own worker thread and this thread only waits on a std channel.
fn bridge<T, F>(rt: &Runtime, timeout: Duration, what: &str, fut: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        let outcome = tokio::time::timeout(timeout, fut).await;
        // The caller may have stopped waiting; nothing to do then.
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(timeout + REPORT_GRACE) {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(StorageError::Unavailable(format!(
            "etcd {what} failed: {e}"
        ))),
        Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Timeout) => Err(StorageError::Unavailable(
            format!("etcd {what} timed out after {timeout:?}"),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(StorageError::Unavailable(format!(
            "etcd {what}: the client runtime stopped"
        ))),
    }
}

/// The pairs of `[start, end)` in key order, at most `limit` of them, read
/// page by page at the revision of the first page so the result is one
/// consistent snapshot.
async fn scan_range(
    kv: &mut KvClient,
    start: Vec<u8>,
    end: Vec<u8>,
    limit: Option<usize>,
) -> Result<KvPairs, etcd_client::Error> {
    let mut out = KvPairs::new();
    let mut from = start;
    let mut revision = 0;
    loop {
        let want = limit.map_or(PAGE_KEYS, |l| (l - out.len()).min(PAGE_KEYS));
        if want == 0 {
            break;
        }
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(want as i64)
            .with_revision(revision);
        let mut resp = kv.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        let more = resp.more();
        let page = resp.take_kvs();
        let Some(last) = page.last() else { break };
        // The next page starts just after the last key of this one.
        from = last.key().to_vec();
        from.push(0);
        out.extend(page.into_iter().map(|pair| pair.into_key_value()));
        if !more {
            break;
        }
    }
    Ok(out)
}

/// The smallest key greater than every key that starts with `prefix`: etcd's
/// range end for a prefix read. `[0]` (meaning "to the end of the keyspace")
/// when no such key exists, i.e. `prefix` is empty or all `0xFF`.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The batch reduced to the last op on each key, in first-seen order.
///
/// etcd refuses a transaction that touches one key twice; since ops on
/// different keys commute, keeping only each key's last op gives the same
/// result as applying the batch in order.
fn last_op_per_key(batch: Vec<BatchOp>) -> Vec<BatchOp> {
    let mut seen = HashSet::new();
    let mut kept: Vec<BatchOp> = batch
        .into_iter()
        .rev()
        .filter(|op| {
            let key = match op {
                BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
            };
            seen.insert(key.clone())
        })
        .collect();
    kept.reverse();
    kept
}

/// A real etcd for tests, unit and integration alike (compiled with the `etcd`
/// feature, not only under `cfg(test)`).
///
/// Invariant: a server this module starts is killed, waited for and its data
/// directory removed when the [`testing::EtcdServer`] drops; an external etcd
/// named by `KSTASH_TEST_ETCD_ENDPOINTS` is never touched beyond the prefixes
/// tests write under.
pub mod testing {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::EtcdBackend;

    /// Env var naming an already running etcd (comma-separated client URLs).
    pub const ENDPOINTS_ENV: &str = "KSTASH_TEST_ETCD_ENDPOINTS";
    /// Env var naming the etcd binary; otherwise `etcd` is looked up on `PATH`.
    pub const BIN_ENV: &str = "ETCD_BIN";
    /// How long a started etcd may take to report healthy.
    const READY_WITHIN: Duration = Duration::from_secs(20);
    /// Start attempts, each on fresh ports, before giving up (a port picked as
    /// free can be taken by another process before etcd binds it).
    const ATTEMPTS: usize = 3;
    /// The call timeout of backends made by [`EtcdServer::backend`].
    const BACKEND_TIMEOUT: Duration = Duration::from_secs(10);

    /// Makes prefixes and data directories unique inside one process.
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    /// An etcd to run tests against: one this process started, or an external
    /// one from `KSTASH_TEST_ETCD_ENDPOINTS`.
    #[derive(Debug)]
    pub struct EtcdServer {
        endpoints: Vec<String>,
        /// The process and its scratch directory, when we started it.
        owned: Option<(Child, PathBuf)>,
    }

    impl EtcdServer {
        /// The etcd named by `KSTASH_TEST_ETCD_ENDPOINTS`, or a fresh
        /// single-member etcd on free loopback ports (binary from `ETCD_BIN`
        /// or `PATH`) once it reports healthy.
        ///
        /// Without any etcd this returns `None` after a one-line notice, so the
        /// calling test can return early; with `CI=true` it panics instead.
        /// Panics if an etcd binary exists but does not come up.
        pub fn start() -> Option<Self> {
            if let Ok(list) = std::env::var(ENDPOINTS_ENV) {
                let endpoints: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect();
                assert!(!endpoints.is_empty(), "{ENDPOINTS_ENV} is set but empty");
                return Some(Self {
                    endpoints,
                    owned: None,
                });
            }
            let bin = match find_binary() {
                Ok(bin) => bin,
                Err(why) => {
                    if std::env::var("CI").is_ok_and(|v| v == "true") {
                        panic!(
                            "CI=true but no etcd binary: set ETCD_BIN or install etcd-server ({why})"
                        );
                    }
                    eprintln!("note: skipping this etcd test: no etcd binary ({why})");
                    return None;
                }
            };
            let mut failures = Vec::new();
            for _ in 0..ATTEMPTS {
                match spawn(&bin) {
                    Ok(server) => return Some(server),
                    Err(why) => failures.push(why),
                }
            }
            panic!(
                "etcd at {} did not start after {ATTEMPTS} attempts:\n{}",
                bin.display(),
                failures.join("\n---\n")
            );
        }

        /// The client URLs, e.g. `["http://127.0.0.1:40123"]`.
        pub fn endpoints(&self) -> Vec<String> {
            self.endpoints.clone()
        }

        /// A key prefix no other test uses, in this process, another one, or
        /// an earlier run against the same external etcd:
        /// `kstash-test/<name>-<pid>-<process start, ms>-<n>/`.
        pub fn unique_prefix(&self, name: &str) -> String {
            static STARTED_MS: OnceLock<u128> = OnceLock::new();
            let started = STARTED_MS.get_or_init(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            });
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            format!("kstash-test/{name}-{}-{started}-{n}/", std::process::id())
        }

        /// A backend on this etcd under a fresh [`unique_prefix`](Self::unique_prefix),
        /// with a 10 s call timeout. Panics if it cannot connect.
        pub fn backend(&self, name: &str) -> EtcdBackend {
            let prefix = self.unique_prefix(name);
            EtcdBackend::connect(&self.endpoints, &prefix, BACKEND_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect to test etcd {:?}: {e}", self.endpoints))
        }
    }

    impl Drop for EtcdServer {
        fn drop(&mut self) {
            if let Some((mut child, dir)) = self.owned.take() {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    /// `$ETCD_BIN` if set, else the first `etcd` file on `PATH`; or why not.
    /// (`kstash bench compare` finds its etcd the same way.)
    pub fn find_binary() -> Result<PathBuf, String> {
        if let Some(bin) = std::env::var_os(BIN_ENV) {
            let bin = PathBuf::from(bin);
            return if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!("{BIN_ENV}={} is not a file", bin.display()))
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{BIN_ENV} is unset and no etcd on PATH"))
    }

    /// A loopback port nothing listens on right now.
    fn free_port() -> Result<u16, String> {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("cannot find a free port: {e}"))
    }

    /// etcd 3.4 refuses to start on architectures other than amd64, ppc64le and
    /// s390x unless `ETCD_UNSUPPORTED_ARCH` names the Go architecture.
    fn unsupported_arch() -> Option<&'static str> {
        match std::env::consts::ARCH {
            "x86_64" | "powerpc64" | "s390x" => None,
            "aarch64" => Some("arm64"),
            "x86" => Some("386"),
            other => Some(other),
        }
    }

    /// A command that runs the etcd at `bin` with only the flags it is given:
    /// etcd reads every `ETCD_*` variable as a flag, so none of ours is
    /// passed on (except `ETCD_UNSUPPORTED_ARCH` where this architecture
    /// needs it).
    pub fn command(bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(name);
            }
        }
        if let Some(arch) = unsupported_arch() {
            cmd.env("ETCD_UNSUPPORTED_ARCH", arch);
        }
        cmd
    }

    /// Start one etcd and wait until it is healthy; on failure, say why.
    fn spawn(bin: &Path) -> Result<EtcdServer, String> {
        let client = free_port()?;
        let peer = free_port()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kstash-etcd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let log_path = dir.join("etcd.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("clone log handle: {e}"))?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");

        let mut cmd = command(bin);
        cmd.arg("--name")
            .arg("kstash-test")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("kstash-test={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(format!("kstash-test-{}-{n}", std::process::id()))
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;

        let addr: SocketAddr = ([127, 0, 0, 1], client).into();
        let deadline = Instant::now() + READY_WITHIN;
        let failure = loop {
            match child.try_wait() {
                Ok(Some(status)) => break format!("etcd exited early with {status}"),
                Ok(None) => {}
                Err(e) => break format!("cannot check on etcd: {e}"),
            }
            if healthy(addr) {
                return Ok(EtcdServer {
                    endpoints: vec![client_url],
                    owned: Some((child, dir)),
                });
            }
            if Instant::now() >= deadline {
                break format!("etcd not healthy within {READY_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "{failure} (client {client_url}, peer {peer_url}); log tail:\n{}",
            tail.join("\n")
        ))
    }

    /// Whether etcd at `addr` answers `GET /health` with `"health":"true"`
    /// (within about 2.5 s).
    pub fn healthy(addr: SocketAddr) -> bool {
        let probe = || -> std::io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.set_write_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body.contains("\"health\":\"true\""))
        };
        probe().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    //! Every test that needs etcd starts with `let Some(etcd) =
    //! EtcdServer::start() else { return };` so it is skipped (with a notice)
    //! where no etcd is installed, and fails under `CI=true`.

    use super::testing::EtcdServer;
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> BatchOp {
        BatchOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn etcd_backend_passes_the_shared_suite() {
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let b = etcd.backend("suite");
        crate::storage::suite::run_all(&b);
        // Twice on one backend: the suite must not depend on an empty store.
        crate::storage::suite::run_all(&b);
        let fresh = etcd.backend("replace-all");
        let neighbour = etcd.backend("neighbour");
        neighbour
            .apply(vec![BatchOp::Put {
                key: b"mine".to_vec(),
                value: b"kept".to_vec(),
            }])
            .unwrap();
        crate::storage::suite::run_replace_all(&fresh);
        assert_eq!(
            neighbour.get(b"mine").unwrap().as_deref(),
            Some(&b"kept"[..]),
            "other prefixes are untouched"
        );
    }

    #[test]
    fn backends_with_different_prefixes_do_not_see_each_other() {
        // Steps: two backends on one etcd; each writes the same key; each
        // reads back only its own value and scans only its own keys.
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let one = etcd.backend("iso-one");
        let two = etcd.backend("iso-two");
        one.apply(vec![put(b"shared", b"from-one"), put(b"only-one", b"x")])
            .expect("apply on one");
        two.apply(vec![put(b"shared", b"from-two")])
            .expect("apply on two");
        assert_eq!(
            one.get(b"shared").expect("get on one").as_deref(),
            Some(&b"from-one"[..]),
            "backend one must read its own value"
        );
        assert_eq!(
            two.get(b"shared").expect("get on two").as_deref(),
            Some(&b"from-two"[..]),
            "backend two must read its own value"
        );
        assert_eq!(
            two.get(b"only-one").expect("get on two"),
            None,
            "backend two must not see backend one's key"
        );
        let keys: Vec<Vec<u8>> = two
            .scan_prefix(b"", None)
            .expect("scan on two")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![b"shared".to_vec()],
            "a full scan must return only the backend's own keys, unprefixed"
        );
        assert_eq!(
            one.scan_keys(b"", None, 10).expect("keys on one"),
            vec![b"only-one".to_vec(), b"shared".to_vec()],
            "a keys-only scan must return only the backend's own keys, unprefixed"
        );
        assert!(
            one.scan_keys(b"", Some(b"zzz"), 10)
                .expect("keys on one")
                .is_empty(),
            "a keys-only scan past the backend's last key must not reach a neighbour's"
        );
    }

    #[test]
    fn batch_over_the_txn_limit_is_refused_and_changes_nothing() {
        // Steps: a batch of MAX_TXN_OPS + 1 puts is refused with the documented
        // message and writes nothing; a batch of exactly MAX_TXN_OPS succeeds,
        // proving the limit matches etcd's own.
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let b = etcd.backend("txn-limit");
        let batch = |n: usize| -> Vec<BatchOp> {
            (0..n)
                .map(|i| put(format!("k/{i:04}").as_bytes(), b"v"))
                .collect()
        };
        let err = b
            .apply(batch(MAX_TXN_OPS + 1))
            .expect_err("an oversized batch must be refused");
        assert!(
            matches!(&err, StorageError::Unavailable(m)
                if m == "batch of 129 operations exceeds etcd's limit of 128"),
            "unexpected error: {err}"
        );
        assert!(
            b.scan_prefix(b"", None).expect("scan").is_empty(),
            "a refused batch must write nothing"
        );
        b.apply(batch(MAX_TXN_OPS))
            .expect("a batch of exactly MAX_TXN_OPS must be accepted by etcd");
        assert_eq!(
            b.scan_prefix(b"k/", None).expect("scan").len(),
            MAX_TXN_OPS,
            "every op of a full batch must be applied"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn works_from_inside_a_current_thread_runtime() {
        // Steps: connect, write, read, scan and drop the backend, all on the
        // single thread of a current_thread runtime; none of it may panic.
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let b = etcd.backend("in-runtime");
        b.apply(vec![put(b"k", b"v")]).expect("apply in a runtime");
        assert_eq!(
            b.get(b"k").expect("get in a runtime").as_deref(),
            Some(&b"v"[..]),
            "the value must come back inside a runtime"
        );
        assert_eq!(
            b.scan_prefix(b"", Some(1))
                .expect("scan in a runtime")
                .len(),
            1,
            "scan must work inside a runtime"
        );
        drop(b);
        tokio::task::yield_now().await;
    }

    #[test]
    fn raw_dump_shows_the_real_prefixed_keys() {
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let prefix = etcd.unique_prefix("raw-dump");
        let b = EtcdBackend::connect(&etcd.endpoints(), &prefix, Duration::from_secs(10))
            .expect("connect");
        let other = etcd.backend("raw-dump-other");
        b.apply(vec![put(b"secret/a", b"ciphertext-a")])
            .expect("apply");
        other
            .apply(vec![put(b"secret/b", b"ciphertext-b")])
            .expect("apply other");
        let dump = b.raw_dump().expect("raw dump");
        let mut want = prefix.clone().into_bytes();
        want.extend_from_slice(b"secret/a");
        assert!(
            dump.iter().any(|(k, v)| k == &want && v == b"ciphertext-a"),
            "raw_dump must show the key with its node prefix"
        );
        assert!(
            dump.iter().any(|(_, v)| v == b"ciphertext-b"),
            "raw_dump must cover other prefixes too"
        );
        assert!(
            !dump.iter().any(|(k, _)| k == b"secret/a"),
            "nothing is stored without a prefix"
        );
        let keys: Vec<&Vec<u8>> = dump.iter().map(|(k, _)| k).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "raw_dump must be in key order"
        );
    }

    #[test]
    fn errors_never_include_values() {
        // Steps: write a value over etcd's default request size limit (1.5
        // MiB); if etcd refuses it, the error must not echo the value.
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let b = etcd.backend("no-leak");
        let marker = b"KSTASH-SECRET-MARKER-";
        let value: Vec<u8> = marker.iter().copied().cycle().take(2 << 20).collect();
        if let Err(e) = b.apply(vec![put(b"big", &value)]) {
            let msg = e.to_string();
            assert!(
                !msg.contains("KSTASH-SECRET-MARKER"),
                "an error message must not include the value"
            );
            assert!(e.is_retryable(), "etcd errors are Unavailable: {msg}");
        }
        assert!(
            !format!("{b:?}").contains("KSTASH-SECRET-MARKER"),
            "Debug must not include values"
        );
    }

    #[test]
    fn debug_shows_endpoints_and_prefix() {
        let Some(etcd) = EtcdServer::start() else {
            return;
        };
        let prefix = etcd.unique_prefix("debug");
        let b = EtcdBackend::connect(&etcd.endpoints(), &prefix, Duration::from_secs(10))
            .expect("connect");
        let shown = format!("{b:?}");
        assert!(
            shown.contains(&prefix),
            "Debug must show the prefix: {shown}"
        );
        assert!(
            shown.contains(&etcd.endpoints()[0]),
            "Debug must show the endpoints: {shown}"
        );
    }

    #[test]
    fn unreachable_etcd_is_unavailable_within_the_timeout() {
        // Nothing listens on a port we just bound and released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let started = std::time::Instant::now();
        let err = EtcdBackend::connect(
            &[format!("http://127.0.0.1:{port}")],
            "kstash/node-1/",
            Duration::from_millis(500),
        )
        .expect_err("connect to nothing must fail");
        assert!(err.is_retryable(), "must be Unavailable: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "connect must give up near its timeout, took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_silent_etcd_times_out() {
        // Steps: a listener that accepts connections and never answers; connect
        // must give up as Unavailable near its timeout instead of hanging.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().take(16) {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let err = EtcdBackend::connect(
            &[format!("http://{addr}")],
            "kstash/node-1/",
            Duration::from_millis(300),
        )
        .expect_err("connect to a silent server must fail");
        assert!(err.is_retryable(), "must be Unavailable: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "connect must give up near its timeout, took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn invalid_prefixes_are_refused() {
        let eps = vec!["http://127.0.0.1:1".to_string()];
        for bad in ["", "kstash/node-1", "kstash/\nnode-1/", "kstash\u{0}/"] {
            let err = EtcdBackend::connect(&eps, bad, Duration::from_millis(100))
                .expect_err("an invalid prefix must be refused");
            assert!(
                err.to_string().contains("invalid etcd key prefix"),
                "prefix {bad:?}: unexpected error {err}"
            );
        }
    }

    #[test]
    fn batches_keep_the_last_op_per_key() {
        let batch = vec![
            put(b"a", b"1"),
            BatchOp::Delete { key: b"a".to_vec() },
            put(b"b", b"1"),
            put(b"b", b"2"),
            BatchOp::Delete { key: b"c".to_vec() },
            put(b"c", b"3"),
        ];
        assert_eq!(
            last_op_per_key(batch),
            vec![
                BatchOp::Delete { key: b"a".to_vec() },
                put(b"b", b"2"),
                put(b"c", b"3"),
            ],
            "each key must keep only its last op"
        );
    }

    #[test]
    fn range_end_covers_exactly_the_prefix() {
        assert_eq!(range_end(b"a/"), b"a0".to_vec(), "plain prefix");
        assert_eq!(range_end(b"a\xff"), b"b".to_vec(), "trailing 0xFF carries");
        assert_eq!(range_end(b"a\xff\xff"), b"b".to_vec(), "several 0xFF carry");
        assert_eq!(range_end(b"\xff"), vec![0], "all 0xFF means to the end");
        assert_eq!(range_end(b""), vec![0], "empty means everything");
    }
}
