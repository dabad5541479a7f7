//! The HTTP client of the REST API: one typed method per endpoint, failover
//! between server addresses, and the error body turned into [`ClientError`].
//!
//! Invariants:
//! - Failover: every address is tried in turn, up to three rounds with a
//!   pause for an election between them. What a failed attempt says about
//!   the request is its [`Fate`], decided in one place
//!   ([`ClientError::fate`], with [`fate_of_answer`] for the node's
//!   answers): a request that surely did nothing ([`Fate::NotApplied`]: no
//!   connection was made, or the node answered 503 `sealed` or `removed`
//!   from a gate that runs before anything else) goes on to the next
//!   address. A request whose effect is unknown ([`Fate::Unknown`]: 503
//!   `outcome_unknown`, any other 503, a timeout or a reset after sending)
//!   is resent only when
//!   resending cannot apply it twice: reads, and writes carrying an
//!   idempotency key. Writes of secrets, policies and Kubernetes login
//!   roles always carry one (the caller's, or a fresh key per call); other
//!   writes (both logins, sys calls) are never resent after an unknown
//!   outcome. Any other answer is returned as
//!   it is. README.md's failover table says the same and a test checks it.
//! - `--timeout` is the budget of the whole command: every request, retry,
//!   failover round and pause of all its calls together waits at most that
//!   long for servers (time spent at a prompt between calls is not counted).
//!   A long-running caller (the KMS plugin) makes it the budget of each call
//!   instead ([`Client::with_budget_per_call`]).
//!   A request that may be resent elsewhere gets an equal share of what is
//!   left for the addresses still to try in its round, so one node that
//!   accepts and never answers cannot starve the others.
//! - Redirects are not followed, so a token or secret body never travels to a
//!   host the user did not name.
//! - Path segments are percent-encoded here and nowhere else; a `.` or `..`
//!   segment or a backslash is refused before sending, because URL
//!   normalisation would otherwise rewrite `app/../x` into `x` (and `\` into
//!   `/`) and address another secret.
//! - The access token is sent only to endpoints that need one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub mod wire;

use self::wire::*;
use crate::secret::SecretString;

/// Default server address.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8200";

/// How many times every address is tried before a call gives up.
const FAILOVER_ROUNDS: usize = 3;
/// Pause between rounds: long enough for a Raft election to end.
const FAILOVER_PAUSE: Duration = Duration::from_millis(500);
/// The header carrying a write's idempotency key.
const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The server's machine-readable code (`forbidden`, `sealed`, …).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// No address could be reached.
    #[error("could not connect to any server address: {0}")]
    Connect(String),
    /// The connection failed after it was made (timeout, reset, …).
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL (never holds a secret).
        url: String,
        /// Why.
        reason: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("unexpected response from {url}: {reason}")]
    Decode {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The command's `--timeout` ran out before an answer came.
    #[error("no answer within --timeout {}: {tried}", crate::clock::format_duration(*.budget))]
    Timeout {
        /// The whole command's budget.
        budget: Duration,
        /// What each address did (never holds a secret).
        tried: String,
    },
    /// The command needs an access token and none was given.
    #[error("this command needs an access token: give --token or set KSTASH_TOKEN (`kstash login` mints one)")]
    NoToken,
    /// Input refused before sending.
    #[error("{0}")]
    Invalid(String),
}

/// What a failed attempt says about the request's effect on the cluster,
/// and so whether the client may send it to the next address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Surely not applied: no connection was made, or the node refused it
    /// before anything ran. Any request moves on to the next address.
    NotApplied,
    /// May or may not have been applied. Only a request that cannot apply
    /// twice (a read, or a write with an idempotency key) is sent again.
    Unknown,
    /// The answer stands: it is returned to the caller as it is.
    Final,
}

impl Fate {
    /// Whether a request that failed this way goes to the next address;
    /// `replayable`: it is a read or a write with an idempotency key.
    pub fn moves_on(self, replayable: bool) -> bool {
        match self {
            Fate::NotApplied => true,
            Fate::Unknown => replayable,
            Fate::Final => false,
        }
    }
}

/// The [`Fate`] of a node's non-2xx answer, by HTTP status and error code.
/// The one list of answers that move to the next address (README.md's
/// failover table is checked against it):
/// - 503 `sealed` comes from the sealed gate, which runs before routing,
///   the body or the token are looked at; 503 `removed` from a node that is
///   no longer a member, before the request reaches the service: nothing
///   was done;
/// - 503 `outcome_unknown` says the write entered, or may have entered,
///   the Raft log and its answer was lost (a commit or a forward that timed
///   out, a leader change while it waited);
/// - any other 503 (`unavailable`: no leader, no quorum; `not_initialized`)
///   is read the same way: `unavailable` also reports a storage failure
///   at apply, after the write entered the log;
/// - every other answer (2xx, 4xx, 500, …) is the request's outcome.
pub fn fate_of_answer(status: u16, code: &str) -> Fate {
    match (status, code) {
        (503, "sealed" | "removed" | "audit_failed") => Fate::NotApplied,
        (503, _) => Fate::Unknown,
        _ => Fate::Final,
    }
}

impl ClientError {
    /// What this failure says about the request's effect; see [`Fate`].
    pub fn fate(&self) -> Fate {
        match self {
            ClientError::Api { status, code, .. } => fate_of_answer(*status, code),
            // Never connected: nothing was sent.
            ClientError::Connect(_) => Fate::NotApplied,
            // Sent, then no whole answer (or the command's budget ran out
            // waiting for one): it may have run.
            ClientError::Transport { .. } | ClientError::Timeout { .. } => Fate::Unknown,
            // A 2xx answer, or refused here before sending: going elsewhere
            // would change nothing.
            ClientError::Decode { .. } | ClientError::NoToken | ClientError::Invalid(_) => {
                Fate::Final
            }
        }
    }
}

/// Whether a call carries the access token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Auth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`; fails with [`ClientError::NoToken`] without one.
    Token,
}

/// A decrypted payload, as [`Client::decrypt`] gives it.
#[derive(Debug)]
pub struct Decrypted {
    /// The plaintext (wiped on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The key version that decrypted it.
    pub key_version: u32,
    /// That version's key id.
    pub key_id: String,
}

/// How to reach the servers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URLs, tried in order on connection errors.
    pub addresses: Vec<String>,
    /// The access token, if any.
    pub token: Option<SecretString>,
    /// PEM file of root certificates for `https` addresses.
    pub ca_cert: Option<PathBuf>,
    /// The budget of all calls of this client together (see the module
    /// invariants), or of each call after [`Client::with_budget_per_call`].
    pub timeout: Duration,
}

/// A REST client for one or more kstash nodes.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// Base URLs without a trailing '/'.
    bases: Vec<String>,
    /// Index of the base that answered last; the next call starts there.
    current: AtomicUsize,
    token: Option<SecretString>,
    /// Whether `--ca-cert` was given (for a hint on TLS failures).
    has_ca: bool,
    /// How long all calls together may wait for servers.
    budget: Duration,
    /// How much of `budget` calls have used so far.
    spent: Mutex<Duration>,
    /// `budget` is each call's, not all calls' together.
    per_call: bool,
}

/// The error body of every non-2xx answer.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Install rustls' ring provider as the process default (reqwest and the
/// server both use it); a second call is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Percent-encode one URL path segment: everything but RFC 3986 unreserved
/// characters. Refuses `.` and `..`, which URL normalisation would resolve.
pub fn encode_segment(segment: &str) -> Result<String, ClientError> {
    if segment == "." || segment == ".." {
        return Err(ClientError::Invalid(format!(
            "path segment '{segment}' is not allowed"
        )));
    }
    Ok(percent_encode(segment))
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`: safe
/// in a path segment and in a query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `&cursor=..&limit=..` of a list call (empty when neither is given).
fn page_query(cursor: Option<&str>, limit: Option<u32>) -> String {
    let mut q = String::new();
    if let Some(c) = cursor {
        q.push_str("&cursor=");
        q.push_str(&percent_encode(c));
    }
    if let Some(l) = limit {
        q.push_str(&format!("&limit={l}"));
    }
    q
}

/// `?cursor=..&limit=..` of a list call whose URL has no query yet (empty
/// when neither is given).
fn first_page_query(cursor: Option<&str>, limit: Option<u32>) -> String {
    match page_query(cursor, limit).strip_prefix('&') {
        Some(rest) => format!("?{rest}"),
        None => String::new(),
    }
}

/// Encode a secret path or list prefix segment by segment, keeping '/'.
/// Refuses a backslash, which URL parsing would turn into '/'.
pub fn encode_path(path: &str) -> Result<String, ClientError> {
    if path.contains('\\') {
        return Err(ClientError::Invalid(format!(
            "path {path:?} contains a backslash, which is not allowed"
        )));
    }
    let parts: Result<Vec<_>, _> = path.split('/').map(encode_segment).collect();
    parts
        .map(|p| p.join("/"))
        .map_err(|e| ClientError::Invalid(format!("{e} (in {path:?})")))
}

fn json_body<B: Serialize>(body: &B) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(serde_json::to_vec(body).expect("request bodies always serialize"))
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl Client {
    /// Check the addresses and load the CA file; no network I/O.
    pub fn new(opts: &ClientOptions) -> Result<Self, ClientError> {
        let ca = match &opts.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    ClientError::Invalid(format!("--ca-cert {}: {e}", path.display()))
                })?;
                Some((format!("--ca-cert {}", path.display()), pem))
            }
            None => None,
        };
        Self::build(opts, ca)
    }

    /// [`Self::new`] trusting the PEM certificates `pem` (named `source` in
    /// errors) instead of `opts.ca_cert`: for a caller that is handed the
    /// bundle itself, like the CSI provider (a SecretProviderClass's
    /// `caCert`). No network I/O.
    pub fn with_ca_pem(
        opts: &ClientOptions,
        source: &str,
        pem: &[u8],
    ) -> Result<Self, ClientError> {
        Self::build(opts, Some((source.to_string(), pem.to_vec())))
    }

    /// Check the addresses and trust `ca` (its name for errors, its PEM).
    fn build(opts: &ClientOptions, ca: Option<(String, Vec<u8>)>) -> Result<Self, ClientError> {
        let invalid = |m: String| ClientError::Invalid(m);
        let mut bases = Vec::new();
        for a in &opts.addresses {
            let a = a.trim();
            if a.is_empty() {
                continue;
            }
            if !a.contains("://") {
                return Err(invalid(format!(
                    "invalid server address {a:?} (--address / KSTASH_ADDR): add the scheme: \
                     http://{a} or https://{a}"
                )));
            }
            let url = reqwest::Url::parse(a)
                .map_err(|e| invalid(format!("invalid server address {a:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host().is_none()
                || url.query().is_some()
                || url.fragment().is_some()
            {
                return Err(invalid(format!(
                    "invalid server address {a:?}: expected http(s)://host[:port][/prefix]"
                )));
            }
            bases.push(url.as_str().trim_end_matches('/').to_string());
        }
        if bases.is_empty() {
            return Err(invalid(
                "no server address given (--address / KSTASH_ADDR)".into(),
            ));
        }

        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kstash-cli/", env!("CARGO_PKG_VERSION")));
        let has_ca = ca.is_some();
        if let Some((source, pem)) = ca {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("{source}: {}", chain(&e))))?;
            if certs.is_empty() {
                return Err(invalid(format!("{source}: no PEM certificate in it")));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {}", chain(&e))))?;
        Ok(Client {
            http,
            bases,
            current: AtomicUsize::new(0),
            token: opts.token.clone(),
            has_ca,
            budget: opts.timeout,
            spent: Mutex::new(Duration::ZERO),
            per_call: false,
        })
    }

    /// Make `timeout` the budget of each call (every request, retry,
    /// failover round and pause of that one call) instead of all calls
    /// together: for a process that runs for days, like the KMS plugin.
    pub fn with_budget_per_call(mut self) -> Self {
        self.per_call = true;
        self
    }

    /// When a call starting now must end: what is left of the budget (all
    /// of it for a client with a budget per call).
    fn deadline(&self) -> Instant {
        if self.per_call {
            return Instant::now() + self.budget;
        }
        let spent = *self.spent.lock().unwrap_or_else(|e| e.into_inner());
        Instant::now() + self.budget.saturating_sub(spent)
    }

    /// Count the time a call took against the budget.
    fn spend(&self, took: Duration) {
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        *spent = spent.saturating_add(took);
    }

    fn timed_out(&self, failures: &[String]) -> ClientError {
        ClientError::Timeout {
            budget: self.budget,
            tried: if failures.is_empty() {
                "no request could be sent".into()
            } else {
                failures.join("; ")
            },
        }
    }

    /// Whether an access token was given.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Send one request, failing over between addresses (see the module
    /// invariants). `path_and_query` starts with '/' and is already encoded.
    /// Returns the body of a 2xx answer, `None` when it is empty.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        auth: Auth,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        self.call_as(method, path_and_query, body, auth, None, None)
            .await
    }

    /// [`Self::call`] with `bearer` instead of the configured token, and
    /// with an idempotency key for a write that may then be resent. The
    /// time it takes is counted against the budget.
    async fn call_as(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        auth: Auth,
        bearer: Option<&SecretString>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        let started = Instant::now();
        let out = self
            .attempts(method, path_and_query, body, auth, bearer, idempotency_key)
            .await;
        self.spend(started.elapsed());
        out
    }

    /// The requests of one call, over the addresses and rounds, until an
    /// answer or the end of the budget.
    async fn attempts(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        auth: Auth,
        bearer: Option<&SecretString>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        let token = match auth {
            Auth::None => None,
            Auth::Token => Some(bearer.or(self.token.as_ref()).ok_or(ClientError::NoToken)?),
        };
        let replayable = replayable(&method, path_and_query, idempotency_key);
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let deadline = self.deadline();
        let mut failures = Vec::new();
        let mut last_answer: Option<ClientError> = None;
        for attempt in 0..n * FAILOVER_ROUNDS {
            if attempt > 0 && attempt % n == 0 {
                // Every address failed once: give an election time to end.
                if Instant::now() + FAILOVER_PAUSE >= deadline {
                    break;
                }
                tokio::time::sleep(FAILOVER_PAUSE).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A request that may go on to the next address gets its share
            // of what is left, so a node that accepts and never answers
            // cannot keep the call from the others.
            let share = if replayable {
                left / (n - attempt % n) as u32
            } else {
                left
            };
            let idx = (start + attempt) % n;
            let url = format!("{}{}", self.bases[idx], path_and_query);
            let mut req = self.http.request(method.clone(), &url).timeout(share);
            if let Some(t) = token {
                req = req.bearer_auth(t.expose());
            }
            if let Some(k) = idempotency_key {
                req = req.header(IDEMPOTENCY_HEADER, k);
            }
            if let Some(b) = &body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(b.to_vec());
            }
            let failure = match req.send().await {
                Ok(resp) => match self.finish(resp, &url).await {
                    Ok(body) => {
                        self.current.store(idx, Ordering::Relaxed);
                        return Ok(body);
                    }
                    Err(e) => e,
                },
                Err(e) if e.is_connect() => {
                    let mut why = format!("{}: {}", self.bases[idx], chain(&e.without_url()));
                    if self.bases[idx].starts_with("https:")
                        && !self.has_ca
                        && why.to_lowercase().contains("certificate")
                    {
                        why.push_str(
                            " (for https give the server's CA with --ca-cert or KSTASH_CACERT)",
                        );
                    }
                    ClientError::Connect(why)
                }
                Err(e) => ClientError::Transport {
                    url,
                    reason: chain(&e.without_url()),
                },
            };
            if !failure.fate().moves_on(replayable) {
                if matches!(failure, ClientError::Api { .. }) {
                    self.current.store(idx, Ordering::Relaxed);
                }
                return Err(failure);
            }
            match failure {
                ClientError::Connect(why) => failures.push(why),
                answered => {
                    failures.push(format!("{}: {answered}", self.bases[idx]));
                    last_answer = Some(answered);
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        // The last answer (with its code, e.g. `sealed`) tells more than a
        // list; without one, the budget ran out or nothing could be reached.
        match last_answer {
            Some(e @ ClientError::Api { .. }) => Err(e),
            _ if Instant::now() >= deadline => Err(self.timed_out(&failures)),
            Some(e) => Err(e),
            None => Err(ClientError::Connect(failures.join("; "))),
        }
    }

    async fn finish(
        &self,
        resp: reqwest::Response,
        url: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
            url: url.to_string(),
            reason: chain(&e.without_url()),
        })?;
        // `Vec::from(Bytes)` reuses the buffer when it is not shared, so the
        // copy we zeroize is usually the only one.
        let bytes = Zeroizing::new(Vec::from(bytes));
        if status.is_success() {
            return Ok((!bytes.is_empty()).then_some(bytes));
        }
        Err(api_error(status, &bytes))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        auth: Auth,
    ) -> Result<T, ClientError> {
        let bytes = self.call(method, path_and_query, body, auth).await?;
        decode(bytes, path_and_query)
    }

    async fn no_content(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        auth: Auth,
    ) -> Result<(), ClientError> {
        self.call(method, path_and_query, body, auth)
            .await
            .map(drop)
    }

    // ---- sys ----------------------------------------------------------------

    /// `GET /v1/sys/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.json(Method::GET, "/v1/sys/status", None, Auth::None)
            .await
    }

    /// `POST /v1/sys/init`.
    pub async fn init(&self, req: &InitRequest) -> Result<InitResponse, ClientError> {
        self.json(
            Method::POST,
            "/v1/sys/init",
            Some(json_body(req)),
            Auth::None,
        )
        .await
    }

    /// `POST /v1/sys/unseal`.
    pub async fn unseal(&self, req: &UnsealRequest<'_>) -> Result<UnsealResponse, ClientError> {
        self.json(
            Method::POST,
            "/v1/sys/unseal",
            Some(json_body(req)),
            Auth::None,
        )
        .await
    }

    /// `POST /v1/sys/seal`.
    pub async fn seal(&self, req: &GatekeeperAuth) -> Result<SysResponse, ClientError> {
        self.sys("/v1/sys/seal", req).await
    }

    /// `POST /v1/sys/rotate`.
    pub async fn rotate(&self, req: &GatekeeperAuth) -> Result<SysResponse, ClientError> {
        self.sys("/v1/sys/rotate", req).await
    }

    /// `POST /v1/sys/access-key/rotate`.
    pub async fn rotate_access_key(
        &self,
        req: &GatekeeperAuth,
    ) -> Result<SysResponse, ClientError> {
        self.sys("/v1/sys/access-key/rotate", req).await
    }

    /// A sys call answered by [`SysResponse`] (which may be an empty body).
    async fn sys<B: Serialize>(&self, path: &str, req: &B) -> Result<SysResponse, ClientError> {
        let bytes = self
            .call(Method::POST, path, Some(json_body(req)), Auth::None)
            .await?;
        match bytes {
            None => Ok(SysResponse::default()),
            some => decode(some, path),
        }
    }

    /// `GET /v1/sys/raft/peers` (no credential).
    pub async fn raft_peers(&self) -> Result<PeersResponse, ClientError> {
        self.json(Method::GET, "/v1/sys/raft/peers", None, Auth::None)
            .await
    }

    /// `POST /v1/sys/raft/remove`.
    pub async fn raft_remove(&self, req: &RemoveRequest<'_>) -> Result<SysResponse, ClientError> {
        self.sys("/v1/sys/raft/remove", req).await
    }

    /// `POST /v1/sys/snapshot`: stream the snapshot into `out`, calling
    /// `progress` with the bytes received so far after each chunk. Returns
    /// the replacement gatekeeper token, if one was used. Fails over
    /// between addresses on connection errors only.
    pub async fn snapshot_save(
        &self,
        req: &GatekeeperAuth,
        out: &mut (dyn std::io::Write + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Option<SecretString>, ClientError> {
        let started = Instant::now();
        let out = self.snapshot_attempts(req, out, progress).await;
        self.spend(started.elapsed());
        out
    }

    /// The requests of [`Self::snapshot_save`], within the budget.
    async fn snapshot_attempts(
        &self,
        req: &GatekeeperAuth,
        out: &mut (dyn std::io::Write + Send),
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Option<SecretString>, ClientError> {
        let path = "/v1/sys/snapshot";
        let body = json_body(req);
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let deadline = self.deadline();
        let mut failures = Vec::new();
        for i in 0..n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out(&failures));
            }
            let idx = (start + i) % n;
            let url = format!("{}{}", self.bases[idx], path);
            let sent = self
                .http
                .post(&url)
                .timeout(left)
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec())
                .send()
                .await;
            let mut resp = match sent {
                Ok(resp) => resp,
                Err(e) if e.is_connect() => {
                    failures.push(format!("{}: {}", self.bases[idx], chain(&e.without_url())));
                    continue;
                }
                Err(e) => {
                    return Err(ClientError::Transport {
                        url,
                        reason: chain(&e.without_url()),
                    })
                }
            };
            self.current.store(idx, Ordering::Relaxed);
            if !resp.status().is_success() {
                return self.finish(resp, &url).await.map(|_| None);
            }
            let replacement = resp
                .headers()
                .get("x-kstash-gatekeeper-token")
                .and_then(|v| v.to_str().ok())
                .map(|v| SecretString::new(v.to_string()));
            let mut got = 0u64;
            loop {
                let chunk = resp.chunk().await.map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    reason: chain(&e.without_url()),
                })?;
                let Some(chunk) = chunk else { break };
                out.write_all(&chunk).map_err(|e| ClientError::Transport {
                    url: url.clone(),
                    reason: format!("cannot write the snapshot: {e}"),
                })?;
                got += chunk.len() as u64;
                progress(got);
            }
            return Ok(replacement);
        }
        Err(ClientError::Connect(failures.join("; ")))
    }

    /// `POST /v1/sys/rekey`.
    pub async fn rekey(&self, req: &RekeyRequest<'_>) -> Result<RekeyResponse, ClientError> {
        self.json(
            Method::POST,
            "/v1/sys/rekey",
            Some(json_body(req)),
            Auth::None,
        )
        .await
    }

    /// `POST /v1/sys/gatekeeper-tokens`.
    pub async fn mint_gatekeeper_tokens(
        &self,
        req: &MintGatekeeperTokensRequest<'_>,
    ) -> Result<MintGatekeeperTokensResponse, ClientError> {
        let path = "/v1/sys/gatekeeper-tokens";
        self.json(Method::POST, path, Some(json_body(req)), Auth::None)
            .await
    }

    /// `POST /v1/sys/gatekeeper-tokens/list`.
    pub async fn list_gatekeeper_tokens(
        &self,
        keys: &[SecretString],
    ) -> Result<GatekeeperTokenList, ClientError> {
        let body = json_body(&KeysRequest { keys });
        let path = "/v1/sys/gatekeeper-tokens/list";
        self.json(Method::POST, path, Some(body), Auth::None).await
    }

    /// `POST /v1/sys/gatekeeper-tokens/renew`.
    pub async fn renew_gatekeeper_token(
        &self,
        token: &SecretString,
    ) -> Result<SysResponse, ClientError> {
        let req = RenewGatekeeperTokenRequest {
            gatekeeper_token: token,
        };
        self.sys("/v1/sys/gatekeeper-tokens/renew", &req).await
    }

    /// `POST /v1/sys/gatekeeper-tokens/revoke`.
    pub async fn revoke_gatekeeper_token(
        &self,
        req: &RevokeGatekeeperTokenRequest<'_>,
    ) -> Result<(), ClientError> {
        let path = "/v1/sys/gatekeeper-tokens/revoke";
        self.no_content(Method::POST, path, Some(json_body(req)), Auth::None)
            .await
    }

    // ---- auth ---------------------------------------------------------------

    /// `POST /v1/auth/access-key/login`.
    pub async fn login(&self, req: &LoginRequest<'_>) -> Result<LoginResponse, ClientError> {
        let path = "/v1/auth/access-key/login";
        self.json(Method::POST, path, Some(json_body(req)), Auth::None)
            .await
    }

    /// `POST /v1/sys/audit/hash`: the audit log's HMAC of `input`.
    pub async fn audit_hash(&self, input: &SecretString) -> Result<AuditHashResponse, ClientError> {
        let path = "/v1/sys/audit/hash";
        let body = json_body(&AuditHashRequest { input });
        self.json(Method::POST, path, Some(body), Auth::Token).await
    }

    /// `GET /v1/auth/token/self`.
    pub async fn token_self(&self) -> Result<TokenInfo, ClientError> {
        self.json(Method::GET, "/v1/auth/token/self", None, Auth::Token)
            .await
    }

    /// `POST /v1/auth/token/renew`.
    pub async fn token_renew(&self, req: &RenewRequest) -> Result<TokenInfo, ClientError> {
        let path = "/v1/auth/token/renew";
        self.json(Method::POST, path, Some(json_body(req)), Auth::Token)
            .await
    }

    /// `POST /v1/auth/token/revoke`: `other`, or the caller's own token.
    /// Without a configured token, `other` revokes itself (possession is
    /// authority either way).
    pub async fn token_revoke(&self, other: Option<&SecretString>) -> Result<(), ClientError> {
        let path = "/v1/auth/token/revoke";
        match (other, self.has_token()) {
            (Some(t), false) => self
                .call_as(
                    Method::POST,
                    path,
                    Some(json_body(&RevokeRequest::default())),
                    Auth::Token,
                    Some(t),
                    None,
                )
                .await
                .map(drop),
            (t, _) => {
                let body = json_body(&RevokeRequest { token: t });
                self.no_content(Method::POST, path, Some(body), Auth::Token)
                    .await
            }
        }
    }

    /// `POST /v1/auth/kubernetes/login`: trade a Kubernetes ServiceAccount
    /// token for an access token of `namespace`, through its `role`. Like
    /// the access-key login it carries no idempotency key, so it moves to
    /// the next address only when it surely did nothing.
    pub async fn kubernetes_login(
        &self,
        namespace: &str,
        role: &str,
        jwt: &SecretString,
    ) -> Result<LoginResponse, ClientError> {
        let path = "/v1/auth/kubernetes/login";
        let body = json_body(&KubernetesLoginRequest {
            namespace,
            role,
            jwt,
        });
        self.json(Method::POST, path, Some(body), Auth::None).await
    }

    // ---- policies -----------------------------------------------------------

    /// `/v1/namespaces/{ns}/{collection}` and, with `name`, `/{name}`;
    /// `ns` and `name` encoded (`collection` is a fixed path).
    fn namespace_url(
        ns: &str,
        collection: &str,
        name: Option<&str>,
    ) -> Result<String, ClientError> {
        let mut url = format!("/v1/namespaces/{}/{collection}", encode_segment(ns)?);
        if let Some(name) = name {
            url.push('/');
            url.push_str(&encode_segment(name)?);
        }
        Ok(url)
    }

    fn policy_url(ns: &str, name: Option<&str>) -> Result<String, ClientError> {
        Self::namespace_url(ns, "policies", name)
    }

    /// `PUT /v1/namespaces/{ns}/policies/{name}`, with an idempotency key
    /// (`key`, or a fresh one) so a failover may resend it.
    pub async fn policy_put(
        &self,
        ns: &str,
        name: &str,
        policy: &crate::acl::Policy,
        key: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = Self::policy_url(ns, Some(name))?;
        let key = idempotency_key(key);
        self.call_as(
            Method::PUT,
            &url,
            Some(json_body(policy)),
            Auth::Token,
            None,
            Some(&key),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/namespaces/{ns}/policies/{name}`.
    pub async fn policy_get(&self, ns: &str, name: &str) -> Result<PolicyResponse, ClientError> {
        let url = Self::policy_url(ns, Some(name))?;
        self.json(Method::GET, &url, None, Auth::Token).await
    }

    /// `GET /v1/namespaces/{ns}/policies`: one page, after `cursor`, of at
    /// most `limit` names (the server's maximum when `None`).
    pub async fn policy_list(
        &self,
        ns: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<PolicyList, ClientError> {
        let url = Self::policy_url(ns, None)? + &first_page_query(cursor, limit);
        self.json(Method::GET, &url, None, Auth::Token).await
    }

    /// `DELETE /v1/namespaces/{ns}/policies/{name}` (idempotency key as
    /// for [`Self::policy_put`]).
    pub async fn policy_delete(
        &self,
        ns: &str,
        name: &str,
        key: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = Self::policy_url(ns, Some(name))?;
        let key = idempotency_key(key);
        self.call_as(Method::DELETE, &url, None, Auth::Token, None, Some(&key))
            .await
            .map(drop)
    }

    // ---- Kubernetes login roles ----------------------------------------------

    fn role_url(ns: &str, name: Option<&str>) -> Result<String, ClientError> {
        Self::namespace_url(ns, "auth/kubernetes/roles", name)
    }

    /// `PUT /v1/namespaces/{ns}/auth/kubernetes/roles/{name}`, with an
    /// idempotency key (`key`, or a fresh one) so a failover may resend it.
    pub async fn put_kubernetes_role(
        &self,
        ns: &str,
        name: &str,
        role: &KubernetesRoleRequest<'_>,
        key: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = Self::role_url(ns, Some(name))?;
        let key = idempotency_key(key);
        self.call_as(
            Method::PUT,
            &url,
            Some(json_body(role)),
            Auth::Token,
            None,
            Some(&key),
        )
        .await
        .map(drop)
    }

    /// `GET /v1/namespaces/{ns}/auth/kubernetes/roles/{name}`.
    pub async fn get_kubernetes_role(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<KubernetesRole, ClientError> {
        let url = Self::role_url(ns, Some(name))?;
        self.json(Method::GET, &url, None, Auth::Token).await
    }

    /// `GET /v1/namespaces/{ns}/auth/kubernetes/roles`: one page, after
    /// `cursor`, of at most `limit` names (the server's maximum when `None`).
    pub async fn list_kubernetes_roles(
        &self,
        ns: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<KubernetesRoleList, ClientError> {
        let url = Self::role_url(ns, None)? + &first_page_query(cursor, limit);
        self.json(Method::GET, &url, None, Auth::Token).await
    }

    /// `DELETE /v1/namespaces/{ns}/auth/kubernetes/roles/{name}`
    /// (idempotency key as for [`Self::put_kubernetes_role`]).
    pub async fn delete_kubernetes_role(
        &self,
        ns: &str,
        name: &str,
        key: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = Self::role_url(ns, Some(name))?;
        let key = idempotency_key(key);
        self.call_as(Method::DELETE, &url, None, Auth::Token, None, Some(&key))
            .await
            .map(drop)
    }

    // ---- named encryption keys -------------------------------------------------

    fn key_url(name: &str, action: Option<&str>) -> Result<String, ClientError> {
        let mut url = format!("/v1/keys/{}", encode_segment(name)?);
        if let Some(action) = action {
            url.push('/');
            url.push_str(action);
        }
        Ok(url)
    }

    /// `POST /v1/keys/{name}`: create a key in the token's namespace, with
    /// an idempotency key (`key`, or a fresh one) so a failover may resend it.
    pub async fn create_key(
        &self,
        name: &str,
        key: Option<&str>,
    ) -> Result<NamedKeyInfo, ClientError> {
        self.key_write(
            &Self::key_url(name, None)?,
            json_body(&serde_json::json!({})),
            key,
        )
        .await
    }

    /// `GET /v1/keys/{name}`: the key's metadata.
    pub async fn get_key(&self, name: &str) -> Result<NamedKeyInfo, ClientError> {
        let url = Self::key_url(name, None)?;
        self.json(Method::GET, &url, None, Auth::Token).await
    }

    /// `GET /v1/keys`: one page, after `cursor`, of at most `limit` key
    /// names (the server's maximum when `None`).
    pub async fn list_keys(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<NamedKeyList, ClientError> {
        let url = format!("/v1/keys{}", first_page_query(cursor, limit));
        self.json(Method::GET, &url, None, Auth::Token).await
    }

    /// `POST /v1/keys/{name}/rotate` (idempotency key as for
    /// [`Self::create_key`]: a resend does not rotate twice).
    pub async fn rotate_key(
        &self,
        name: &str,
        key: Option<&str>,
    ) -> Result<NamedKeyInfo, ClientError> {
        let url = Self::key_url(name, Some("rotate"))?;
        self.key_write(&url, json_body(&serde_json::json!({})), key)
            .await
    }

    /// `POST /v1/keys/{name}/config` (idempotency key as for
    /// [`Self::create_key`]).
    pub async fn configure_key(
        &self,
        name: &str,
        config: &NamedKeyConfig,
        key: Option<&str>,
    ) -> Result<NamedKeyInfo, ClientError> {
        let url = Self::key_url(name, Some("config"))?;
        self.key_write(&url, json_body(config), key).await
    }

    /// A key write with an idempotency key.
    async fn key_write(
        &self,
        url: &str,
        body: Zeroizing<Vec<u8>>,
        key: Option<&str>,
    ) -> Result<NamedKeyInfo, ClientError> {
        let key = idempotency_key(key);
        let bytes = self
            .call_as(Method::POST, url, Some(body), Auth::Token, None, Some(&key))
            .await?;
        decode(bytes, url)
    }

    /// `POST /v1/keys/{name}/encrypt`: `plaintext` under the key's latest
    /// version. Encrypting twice is harmless, so a failover resends it.
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
    ) -> Result<EncryptResponse, ClientError> {
        use base64::Engine;
        let url = Self::key_url(name, Some("encrypt"))?;
        let body = EncryptRequest {
            plaintext: SecretString::new(
                base64::engine::general_purpose::STANDARD.encode(plaintext),
            ),
        };
        self.json(Method::POST, &url, Some(json_body(&body)), Auth::Token)
            .await
    }

    /// `POST /v1/keys/{name}/decrypt`: the plaintext of a ciphertext the
    /// key made.
    pub async fn decrypt(&self, name: &str, ciphertext: &str) -> Result<Decrypted, ClientError> {
        use base64::Engine;
        let url = Self::key_url(name, Some("decrypt"))?;
        let body = DecryptRequest {
            ciphertext: ciphertext.to_string(),
        };
        let answer: DecryptResponse = self
            .json(Method::POST, &url, Some(json_body(&body)), Auth::Token)
            .await?;
        let plaintext = base64::engine::general_purpose::STANDARD
            .decode(answer.plaintext.expose())
            .map(Zeroizing::new)
            .map_err(|_| ClientError::Invalid(format!("{url}: the plaintext is not base64")))?;
        Ok(Decrypted {
            plaintext,
            key_version: answer.key_version,
            key_id: answer.key_id,
        })
    }

    // ---- kv -----------------------------------------------------------------

    /// `PUT /v1/kv/{path}`, with an idempotency key (`key`, or a fresh
    /// one) so a failover may resend it and it still applies once.
    pub async fn kv_put(
        &self,
        path: &str,
        req: &PutSecretRequest,
        key: Option<&str>,
    ) -> Result<PutSecretResponse, ClientError> {
        let url = format!("/v1/kv/{}", encode_path(path)?);
        let key = idempotency_key(key);
        let bytes = self
            .call_as(
                Method::PUT,
                &url,
                Some(json_body(req)),
                Auth::Token,
                None,
                Some(&key),
            )
            .await?;
        decode(bytes, &url)
    }

    /// `GET /v1/kv/{path}`; `stale` reads the answering node's own state.
    pub async fn kv_get(&self, path: &str, stale: bool) -> Result<SecretResponse, ClientError> {
        let url = format!("/v1/kv/{}{}", encode_path(path)?, stale_query(stale, '?'));
        self.json(Method::GET, &url, None, Auth::Token).await
    }

    /// `GET /v1/kv/{path}` (linearizable) with `bearer` instead of the
    /// client's own token: for a caller acting for many principals, like
    /// the CSI provider reading a pod's secrets with the pod's token.
    pub async fn kv_get_as(
        &self,
        path: &str,
        bearer: &SecretString,
    ) -> Result<SecretResponse, ClientError> {
        let url = format!("/v1/kv/{}", encode_path(path)?);
        let bytes = self
            .call_as(Method::GET, &url, None, Auth::Token, Some(bearer), None)
            .await?;
        decode(bytes, &url)
    }

    /// `DELETE /v1/kv/{path}` (idempotency key as for [`Self::kv_put`]).
    pub async fn kv_delete(&self, path: &str, key: Option<&str>) -> Result<(), ClientError> {
        let url = format!("/v1/kv/{}", encode_path(path)?);
        let key = idempotency_key(key);
        self.call_as(Method::DELETE, &url, None, Auth::Token, None, Some(&key))
            .await
            .map(drop)
    }

    /// `GET /v1/kv/{prefix}?list=true`; the empty prefix lists the root.
    /// One page, after `cursor`, of at most `limit` names (the server's
    /// maximum when `None`).
    pub async fn kv_list(
        &self,
        prefix: &str,
        stale: bool,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<KeyList, ClientError> {
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            encode_path(prefix)?
        };
        let url = format!(
            "/v1/kv/{prefix}?list=true{}{}",
            stale_query(stale, '&'),
            page_query(cursor, limit)
        );
        self.json(Method::GET, &url, None, Auth::Token).await
    }
}

/// `key`, or a fresh random key for this one call.
/// Whether a request may be resent after a failure whose effect is
/// unknown: a read changes nothing; a keyed write is answered with its
/// first outcome when it arrives twice; an encryption or decryption with a
/// named key changes nothing either (a second encryption only spends one
/// more of the key's reserved encryptions).
fn replayable(method: &Method, path_and_query: &str, idempotency_key: Option<&str>) -> bool {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    let key_use = *method == Method::POST
        && path.starts_with("/v1/keys/")
        && (path.ends_with("/encrypt") || path.ends_with("/decrypt"));
    *method == Method::GET || idempotency_key.is_some() || key_use
}

fn idempotency_key(key: Option<&str>) -> String {
    match key {
        Some(k) => k.to_string(),
        None => format!("kst-{}", hex::encode(crate::secret::random_bytes::<16>())),
    }
}

/// The query parameter of a stale read, after `sep`; empty otherwise.
fn stale_query(stale: bool, sep: char) -> String {
    if stale {
        format!("{sep}consistency=stale")
    } else {
        String::new()
    }
}

fn decode<T: DeserializeOwned>(
    bytes: Option<Zeroizing<Vec<u8>>>,
    path: &str,
) -> Result<T, ClientError> {
    let bad = |reason: String| ClientError::Decode {
        url: path.to_string(),
        reason,
    };
    let bytes = bytes.ok_or_else(|| bad("empty body".into()))?;
    // The serde error names a position and the expected type, never the input.
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}

/// The error of a non-2xx answer: the JSON error body when there is one,
/// otherwise the status and the start of a plain-text body.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(200).collect();
    let reason = status.canonical_reason().unwrap_or("error").to_string();
    ClientError::Api {
        status: status.as_u16(),
        code: "http".into(),
        message: if text.is_empty() || text.starts_with('<') {
            reason
        } else {
            text
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_and_dots_refused() {
        assert_eq!(encode_segment("team-a").unwrap(), "team-a");
        assert_eq!(encode_segment("a b/c%").unwrap(), "a%20b%2Fc%25");
        assert_eq!(encode_segment("x.y").unwrap(), "x.y");
        assert!(encode_segment("..").is_err());
        assert!(encode_segment(".").is_err());
        assert_eq!(encode_path("app/db").unwrap(), "app/db");
        assert!(encode_path("app/a\\b").is_err());
        assert_eq!(encode_segment("a\\b").unwrap(), "a%5Cb");
        assert_eq!(encode_path("app/").unwrap(), "app/");
        let err = encode_path("app/../x").unwrap_err().to_string();
        assert!(err.contains("'..'") && err.contains("app/../x"), "{err}");
    }

    #[test]
    fn key_uses_and_reads_are_replayable_other_posts_are_not() {
        assert!(replayable(&Method::GET, "/v1/keys/k", None));
        assert!(replayable(&Method::POST, "/v1/keys/k/encrypt", None));
        assert!(replayable(&Method::POST, "/v1/keys/k/decrypt", None));
        assert!(!replayable(&Method::POST, "/v1/keys/k/rotate", None));
        assert!(replayable(&Method::POST, "/v1/keys/k/rotate", Some("x")));
        assert!(!replayable(&Method::POST, "/v1/sys/seal", None));
        assert!(!replayable(&Method::POST, "/v1/kv/x/encrypt", None));
        assert_eq!(
            Client::key_url("a b", Some("encrypt")).unwrap(),
            "/v1/keys/a%20b/encrypt"
        );
        assert!(Client::key_url("..", None).is_err());
    }

    #[test]
    fn role_urls_encode_their_segments() {
        assert_eq!(
            Client::role_url("team a", Some("r/x")).unwrap(),
            "/v1/namespaces/team%20a/auth/kubernetes/roles/r%2Fx"
        );
        assert_eq!(
            Client::role_url("team-a", None).unwrap(),
            "/v1/namespaces/team-a/auth/kubernetes/roles"
        );
        assert!(Client::role_url("team-a", Some("..")).is_err());
        assert!(Client::role_url("..", None).is_err());
        assert_eq!(
            Client::policy_url("team-a", Some("p")).unwrap(),
            "/v1/namespaces/team-a/policies/p"
        );
        assert_eq!(first_page_query(None, None), "");
        assert_eq!(
            first_page_query(Some("a b"), Some(5)),
            "?cursor=a%20b&limit=5"
        );
        assert_eq!(first_page_query(None, Some(5)), "?limit=5");
    }

    /// A fake node on loopback: reads each request whole, counts it, then
    /// answers 503 `unavailable` (`answer`) or drops the connection.
    async fn fake_node(answer: bool) -> (String, std::sync::Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then the body its Content-Length announces.
                loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                if answer {
                    let body = r#"{"error":{"code":"unavailable","message":"no leader"}}"#;
                    let reply = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                }
                drop(conn);
            }
        });
        (base, seen)
    }

    fn client_for(bases: &[String]) -> Client {
        Client::new(&ClientOptions {
            addresses: bases.to_vec(),
            token: Some(SecretString::new("kst_fake".into())),
            ca_cert: None,
            // One budget for every call of the test: each fake answers at
            // once, only the pauses between rounds take time.
            timeout: Duration::from_secs(10),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_write_of_unknown_fate_is_resent_only_with_a_key() {
        for answer in [true, false] {
            let (a, seen_a) = fake_node(answer).await;
            let (b, seen_b) = fake_node(answer).await;
            let c = client_for(&[a, b]);
            let seen = || seen_a.load(Ordering::SeqCst) + seen_b.load(Ordering::SeqCst);

            // Unkeyed (a token renewal): sent once, whatever happened.
            let renew = c.token_renew(&RenewRequest { increment: None }).await;
            assert!(renew.is_err());
            assert_eq!(seen(), 1, "answer={answer}: an unkeyed write is sent once");

            // Unkeyed too: a ServiceAccount login, sent once like the
            // access-key login.
            let jwt = SecretString::new("eyJ.fake.jwt".into());
            let before = seen();
            assert!(c.kubernetes_login("team-a", "web", &jwt).await.is_err());
            assert_eq!(seen() - before, 1, "answer={answer}: a login is sent once");

            // Keyed (every role write): resent to every address, rounds over.
            let before = seen();
            let role = KubernetesRoleRequest {
                service_accounts: &["shop/web".to_string()],
                policies: &[],
                ttl: None,
                audience: None,
            };
            assert!(c
                .put_kubernetes_role("team-a", "web", &role, None)
                .await
                .is_err());
            assert_eq!(seen() - before, 2 * FAILOVER_ROUNDS, "answer={answer}");
            let before = seen();
            assert!(c
                .delete_kubernetes_role("team-a", "web", Some("k-1"))
                .await
                .is_err());
            assert_eq!(seen() - before, 2 * FAILOVER_ROUNDS, "answer={answer}");
            let before = seen();

            // Keyed (every secret write): resent to every address, rounds over.
            let put = PutSecretRequest {
                value: Some(SecretString::new("v".into())),
                value_base64: None,
                cas: None,
            };
            let err = c.kv_put("x", &put, None).await.unwrap_err();
            let resent = seen() - before;
            assert_eq!(resent, 2 * FAILOVER_ROUNDS, "answer={answer}: {err}");
            if answer {
                assert!(
                    matches!(&err, ClientError::Api { status: 503, code, .. } if code == "unavailable"),
                    "{err:?}"
                );
            }

            // A read is resent like a keyed write.
            let before = seen();
            assert!(c.kv_get("x", false).await.is_err());
            assert_eq!(seen() - before, 2 * FAILOVER_ROUNDS, "answer={answer}");
        }
    }

    /// Every answer a node gives, as (HTTP status, error code): each
    /// service error through the one mapping, each refusal of the HTTP
    /// edge, axum's 405, and a body that is not ours (a proxy's 502 or 504
    /// reads as code `http`).
    fn every_answer() -> Vec<(u16, String)> {
        use crate::api::error::{status_of, EdgeError};
        use crate::service::ServiceError as S;
        // The match names every variant: a new one does not compile here
        // until it is named, and then it belongs in `service` below too.
        let named = |e: &S| match e {
            S::BadRequest(_)
            | S::Unauthorized(_)
            | S::LoginRefused(_)
            | S::Forbidden(_)
            | S::NotFound(_)
            | S::Conflict(_)
            | S::TooLarge(_)
            | S::Sealed
            | S::Removed(_)
            | S::AuditFailed
            | S::NotInitialized
            | S::Unavailable(_)
            | S::OutcomeUnknown(_)
            | S::Integrity
            | S::Internal => (),
        };
        let service = [
            S::BadRequest(String::new()),
            S::Unauthorized(String::new()),
            S::LoginRefused(crate::service::LoginRefusal::unverified(
                crate::auth::kubernetes::Check::Signature,
            )),
            S::Forbidden(crate::acl::Denial::new("read", "ns", "p", "ns", &[])),
            S::NotFound(String::new()),
            S::Conflict(String::new()),
            S::TooLarge(String::new()),
            S::Sealed,
            S::Removed(String::new()),
            S::AuditFailed,
            S::NotInitialized,
            S::Unavailable(String::new()),
            S::OutcomeUnknown(crate::service::OutcomeUnknown::new("")),
            S::Integrity,
            S::Internal,
        ];
        let mut answers: Vec<(u16, String)> = service
            .iter()
            .inspect(|e| named(e))
            .map(|e| (status_of(e).0.as_u16(), e.code().to_string()))
            .collect();
        for e in [
            EdgeError::UnsupportedMediaType(String::new()),
            EdgeError::HostNotAllowed(String::new()),
        ] {
            match &e {
                EdgeError::UnsupportedMediaType(_) | EdgeError::HostNotAllowed(_) => (),
            }
            answers.push((e.status().0.as_u16(), e.code().to_string()));
        }
        answers.push((405, "method_not_allowed".into()));
        answers.push((502, "http".into()));
        answers.push((504, "http".into()));
        answers
    }

    /// README.md's failover table: the (status, code) pairs it names, what
    /// it says of "any other 503" and "any other answer", of no connection
    /// and of a timeout.
    struct FailoverTable {
        named: Vec<((u16, String), Fate)>,
        other_503: Fate,
        other_answer: Fate,
        no_connection: Fate,
        timeout: Fate,
    }

    fn readme_failover_table() -> FailoverTable {
        let readme = include_str!("../../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|l| !l.starts_with("| the attempt got |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .peekable();
        assert!(lines.peek().is_some(), "README.md has no failover table");
        let (mut named, mut other_503, mut other_answer) = (Vec::new(), None, None);
        let (mut no_connection, mut timeout) = (None, None);
        for row in lines {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let [got, _, next] = cells[..] else {
                panic!("a failover row has three cells: {row}")
            };
            let fate = match next {
                "always" => Fate::NotApplied,
                "only a read or a write with an idempotency key" => Fate::Unknown,
                "never: it is the outcome" => Fate::Final,
                other => panic!("unknown last cell {other:?} in: {row}"),
            };
            let mut understood = false;
            // Each "NNN `code`" in the first cell.
            for (i, _) in got.match_indices(" `") {
                let status = got[..i].rsplit(' ').next().unwrap_or_default();
                let code = got[i + 2..].split('`').next().unwrap_or_default();
                if let Ok(status) = status.parse::<u16>() {
                    named.push(((status, code.to_string()), fate));
                    understood = true;
                }
            }
            let mut set = |slot: &mut Option<Fate>, phrase: &str| {
                if got.contains(phrase) {
                    assert!(slot.replace(fate).is_none(), "{phrase:?} twice");
                    understood = true;
                }
            };
            set(&mut other_503, "any other 503");
            set(&mut other_answer, "any other answer");
            set(&mut no_connection, "no connection");
            set(&mut timeout, "a timeout");
            assert!(understood, "a failover row names no case: {row}");
        }
        FailoverTable {
            named,
            other_503: other_503.expect("a row for any other 503"),
            other_answer: other_answer.expect("a row for any other answer"),
            no_connection: no_connection.expect("a row for no connection"),
            timeout: timeout.expect("a row for a timeout"),
        }
    }

    #[test]
    fn the_readme_failover_table_is_what_the_client_does() {
        let table = readme_failover_table();
        let mut answers = every_answer();
        answers.extend(table.named.iter().map(|(answer, _)| answer.clone()));
        for (status, code) in answers {
            let documented = table
                .named
                .iter()
                .find(|((s, c), _)| *s == status && *c == code)
                .map(|(_, fate)| *fate)
                .unwrap_or(if status == 503 {
                    table.other_503
                } else {
                    table.other_answer
                });
            assert_eq!(
                fate_of_answer(status, &code),
                documented,
                "README.md's failover table and fate_of_answer disagree on {status} `{code}`"
            );
        }
        assert_eq!(
            fate_of_answer(503, "some-new-code"),
            table.other_503,
            "any other 503"
        );
        assert_eq!(
            ClientError::Connect(String::new()).fate(),
            table.no_connection
        );
        let transport = ClientError::Transport {
            url: String::new(),
            reason: String::new(),
        };
        assert_eq!(transport.fate(), table.timeout);
        // What each fate means for a request.
        assert!(Fate::NotApplied.moves_on(false));
        assert!(!Fate::Unknown.moves_on(false) && Fate::Unknown.moves_on(true));
        assert!(!Fate::Final.moves_on(true));
    }

    #[test]
    fn error_bodies() {
        let e = api_error(
            StatusCode::FORBIDDEN,
            br#"{"error":{"code":"forbidden","message":"no read on app/db"}}"#,
        );
        assert_eq!(e.to_string(), "no read on app/db (forbidden, HTTP 403)");
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert_eq!(e.to_string(), "Bad Gateway (http, HTTP 502)");
    }

    #[test]
    fn addresses_are_checked() {
        let opts = |a: &[&str]| ClientOptions {
            addresses: a.iter().map(|s| s.to_string()).collect(),
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(1),
        };
        let c = Client::new(&opts(&["http://a:1/", " https://b:2/prefix "])).unwrap();
        assert_eq!(c.bases, ["http://a:1", "https://b:2/prefix"]);
        assert!(Client::new(&opts(&["ftp://a"])).is_err());
        for bare in ["127.0.0.1:8200", "localhost:8200", "kstash.example"] {
            let e = Client::new(&opts(&[bare])).unwrap_err().to_string();
            assert!(
                e.contains(&format!("add the scheme: http://{bare} or https://{bare}")),
                "{e}"
            );
        }
        assert!(Client::new(&opts(&[""])).is_err());
    }

    /// A one-answer HTTP server on loopback: every request gets `status`
    /// with the JSON `body`. Returns its port.
    async fn fixed_answer(status: &'static str, body: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn a_removed_node_passes_even_a_write_on_to_the_next_address() {
        let removed = fixed_answer(
            "503 Service Unavailable",
            r#"{"error":{"code":"removed","message":"node 3 was removed from the cluster"}}"#,
        )
        .await;
        let unavailable = fixed_answer(
            "503 Service Unavailable",
            r#"{"error":{"code":"unavailable","message":"no leader is known; retry"}}"#,
        )
        .await;
        let unknown = fixed_answer(
            "503 Service Unavailable",
            r#"{"error":{"code":"outcome_unknown","message":"the write may or may not have been applied"}}"#,
        )
        .await;
        let next = fixed_answer(
            "401 Unauthorized",
            r#"{"error":{"code":"unauthorized","message":"invalid access key"}}"#,
        )
        .await;
        let client = |first: u16| {
            Client::new(&ClientOptions {
                addresses: vec![
                    format!("http://127.0.0.1:{first}"),
                    format!("http://127.0.0.1:{next}"),
                ],
                token: None,
                ca_cert: None,
                timeout: Duration::from_secs(5),
            })
            .unwrap()
        };
        let key = SecretString::new("ksa_x".into());
        let login = LoginRequest {
            access_key: &key,
            namespace: "app",
            policies: &[],
            ttl: None,
        };
        // Login is a write without an idempotency key: it moves on only
        // from an answer that surely did nothing.
        let e = client(removed).login(&login).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Api { code, .. } if code == "unauthorized"),
            "{e}"
        );
        for (first, stays) in [(unavailable, "unavailable"), (unknown, "outcome_unknown")] {
            let e = client(first).login(&login).await.unwrap_err();
            assert!(
                matches!(&e, ClientError::Api { code, .. } if code == stays),
                "{e}"
            );
        }
        // A ServiceAccount login is retried the same way.
        let jwt = SecretString::new("eyJ.fake.jwt".into());
        let e = client(removed)
            .kubernetes_login("app", "web", &jwt)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Api { code, .. } if code == "unauthorized"),
            "{e}"
        );
        for (first, stays) in [(unavailable, "unavailable"), (unknown, "outcome_unknown")] {
            let e = client(first)
                .kubernetes_login("app", "web", &jwt)
                .await
                .unwrap_err();
            assert!(
                matches!(&e, ClientError::Api { code, .. } if code == stays),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn a_dead_then_a_sealed_address_gives_the_sealed_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"error":{"code":"sealed","message":"sealed"}}"#;
                let resp = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        let c = Client::new(&ClientOptions {
            addresses: vec![
                format!("http://127.0.0.1:{dead}"),
                format!("http://127.0.0.1:{port}"),
            ],
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let e = c.status().await.unwrap_err();
        assert_eq!(e.to_string(), "sealed (sealed, HTTP 503)");

        let c = Client::new(&ClientOptions {
            addresses: vec![format!("http://127.0.0.1:{dead}")],
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let e = c.status().await.unwrap_err();
        assert!(matches!(e, ClientError::Connect(_)), "{e}");
        assert!(matches!(
            c.kv_get("a", false).await,
            Err(ClientError::NoToken)
        ));
    }

    #[tokio::test]
    async fn a_client_with_a_budget_per_call_gives_every_call_its_whole_budget() {
        // Steps: a node that accepts and never answers; a client with one
        // budget for all calls times out once, and its next call finds no
        // time left; a client with a budget per call tries again on its
        // second call, with the whole budget.
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                held.push(s);
            }
        });
        let budget = Duration::from_millis(300);
        let client = || {
            Client::new(&ClientOptions {
                addresses: vec![format!("http://127.0.0.1:{port}")],
                token: None,
                ca_cert: None,
                timeout: budget,
            })
            .unwrap()
        };
        let tried = |e: ClientError| match e {
            ClientError::Timeout { tried, .. } => tried,
            other => panic!("not a timeout: {other}"),
        };
        let total = client();
        assert!(tried(total.status().await.unwrap_err()).contains(&port.to_string()));
        let started = Instant::now();
        assert_eq!(
            tried(total.status().await.unwrap_err()),
            "no request could be sent"
        );
        assert!(started.elapsed() < budget);

        let each = client().with_budget_per_call();
        for _ in 0..2 {
            let started = Instant::now();
            let tried = tried(each.status().await.unwrap_err());
            assert!(tried.contains(&port.to_string()), "{tried}");
            assert!(started.elapsed() >= budget - Duration::from_millis(50));
        }
    }
}
