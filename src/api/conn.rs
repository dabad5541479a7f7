//! Connection limits of the client port: slow and idle clients are shed,
//! and the number of open connections is capped below the process's
//! file-descriptor limit.
//!
//! Invariants:
//! - At most [`Limits::max_connections`] client connections are open at
//!   once. One more is closed as soon as it is accepted, so its descriptor
//!   is freed at once; the cap is kept below `RLIMIT_NOFILE` with room for
//!   the data dir and the cluster port ([`plan_fds`]).
//! - A connection with no request in flight is closed
//!   [`Limits::header_read_timeout`] after it was accepted if it sent no
//!   request yet (TLS handshake, protocol detection and trickled headers
//!   included), and [`Limits::idle_timeout`] after its last request ended
//!   (HTTP/1 keep-alive and HTTP/2 alike). A request is in flight from its
//!   dispatch until its response body was sent or dropped.
//! - A request body must arrive whole within [`Limits::body_read_timeout`]
//!   of its dispatch; past that, reading it fails (REST answers 400, gRPC an
//!   error status) and HTTP/1 closes the connection.
//! - Every connection shed is counted by reason (a fixed set of label
//!   values); accept errors (`EMFILE`, …) never stop the accept loop,
//!   axum-server backs off 50 ms and keeps accepting.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::raft::cluster::CLUSTER_MAX_CONNECTIONS;

/// File descriptors kept free for everything but client connections: the
/// data dir (sled's files, snapshots), the runtime, logs and stray peers.
pub const RESERVED_FDS: u64 = 32;

/// Fewest client connections a node starts with; a lower descriptor limit
/// is refused at start.
pub const MIN_CLIENT_CONNECTIONS: usize = 4;

/// The client port's limits (from the config, the cap after [`plan_fds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to the first request of a connection, and on HTTP/1 from one
    /// response to the next request's headers.
    pub header_read_timeout: Duration,
    /// Time a request body has to arrive whole, from its dispatch.
    pub body_read_timeout: Duration,
    /// Time a connection with no request in flight stays open after its
    /// last request.
    pub idle_timeout: Duration,
    /// Client connections open at once.
    pub max_connections: usize,
}

/// Why a connection (or a request body) was cut: the label values of
/// `kstash_connections_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// Over the connection cap: closed as soon as it was accepted.
    Limit,
    /// The TLS handshake did not finish in time.
    Handshake,
    /// No first request within `header_read_timeout`.
    FirstRequest,
    /// No new request within `idle_timeout` after the last one.
    Idle,
    /// A request body did not arrive whole within `body_read_timeout`.
    Body,
}

impl ShedReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::Limit => "limit",
            ShedReason::Handshake => "handshake",
            ShedReason::FirstRequest => "first_request",
            ShedReason::Idle => "idle",
            ShedReason::Body => "body",
        }
    }
}

/// Labels of `kstash_connections_shed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    reason: &'static str,
}

/// Metrics of the client port's connections (registered with the API's
/// other metrics by [`ConnMetrics::register`]).
#[derive(Clone, Debug, Default)]
pub struct ConnMetrics {
    open: Gauge,
    shed: Family<ShedLabels, Counter>,
}

impl ConnMetrics {
    /// Add `connections_open` and `connections_shed` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Client connections open now",
            self.open.clone(),
        );
        registry.register(
            "connections_shed",
            "Client connections (or request bodies) cut for being slow, idle or over the cap",
            self.shed.clone(),
        );
    }

    fn shed(&self, reason: ShedReason) {
        self.shed
            .get_or_create(&ShedLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Connections shed so far for `reason`.
    pub fn shed_count(&self, reason: ShedReason) -> u64 {
        self.shed
            .get_or_create(&ShedLabels {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Client connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// For axum-server's accept-error handler: count a TLS handshake that
    /// timed out; everything this module refused itself is counted already.
    pub fn on_accept_error(&self, error: &io::Error) {
        if error
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<Shed>().is_some())
        {
            return;
        }
        if error.kind() == io::ErrorKind::TimedOut {
            self.shed(ShedReason::Handshake);
        } else {
            tracing::debug!(%error, "client connection failed before its first request");
        }
    }
}

/// The error a shed connection's reads and writes fail with.
#[derive(Debug, thiserror::Error)]
#[error("connection shed: {}", .0.as_str())]
pub struct Shed(pub ShedReason);

fn shed_error(reason: ShedReason) -> io::Error {
    let kind = match reason {
        ShedReason::Limit => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::TimedOut,
    };
    io::Error::new(kind, Shed(reason))
}

/// A request body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", crate::clock::format_duration(*.0))]
pub struct BodyTimeout(pub Duration);

/// What a connection's requests tell its watchdog.
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Bumped when a request starts and when one ends; 0 = no request yet.
    epoch: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// A request in flight on its connection, until dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// axum-server acceptor of the client port: takes a slot under the cap
/// (or closes the connection), sets `TCP_NODELAY`, and wraps the stream in
/// its watchdog and the service in request tracking.
#[derive(Clone, Debug)]
pub struct ConnAcceptor {
    limits: Limits,
    slots: Arc<Semaphore>,
    metrics: ConnMetrics,
}

impl ConnAcceptor {
    /// An acceptor enforcing `limits`, counting into `metrics`.
    pub fn new(limits: Limits, metrics: ConnMetrics) -> Self {
        ConnAcceptor {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            metrics,
        }
    }

    fn admit<S>(
        &self,
        stream: TcpStream,
        service: S,
    ) -> io::Result<(Watched<TcpStream>, Tracked<S>)> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            // `stream` is dropped here: the descriptor is freed at once.
            self.metrics.shed(ShedReason::Limit);
            return Err(shed_error(ShedReason::Limit));
        };
        // TCP_NODELAY, as on the cluster port: a response written in two
        // parts must not wait for the client's delayed ACK of the first.
        stream.set_nodelay(true)?;
        let activity = Arc::new(Activity::default());
        self.metrics.open.inc();
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
            sleep: Box::pin(tokio::time::sleep(self.limits.header_read_timeout)),
            seen: 0,
            idle_timeout: self.limits.idle_timeout,
            shed: None,
            metrics: self.metrics.clone(),
            _slot: slot,
        };
        let service = Tracked {
            inner: service,
            activity,
            body_read_timeout: self.limits.body_read_timeout,
            metrics: self.metrics.clone(),
        };
        Ok((stream, service))
    }
}

impl<S> axum_server::accept::Accept<TcpStream, S> for ConnAcceptor {
    type Stream = Watched<TcpStream>;
    type Service = Tracked<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.admit(stream, service))
    }
}

/// A client connection's stream with its watchdog: reads and writes fail
/// once the connection has been without a request in flight for too long.
/// Holds the connection's slot under the cap until dropped.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    sleep: Pin<Box<Sleep>>,
    /// The activity epoch the deadline was last set for.
    seen: u64,
    idle_timeout: Duration,
    shed: Option<ShedReason>,
    metrics: ConnMetrics,
    _slot: OwnedSemaphorePermit,
}

impl<S> Watched<S> {
    /// Whether the connection may go on; registers the deadline's timer
    /// with the task polling the stream.
    fn watch(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(reason) = self.shed {
            return Err(shed_error(reason));
        }
        loop {
            let epoch = self.activity.epoch.load(Ordering::SeqCst);
            if epoch != self.seen {
                // A request started or ended: the idle clock restarts.
                self.seen = epoch;
                let deadline = Instant::now() + self.idle_timeout;
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            if self.activity.in_flight.load(Ordering::SeqCst) > 0 {
                let deadline = Instant::now() + self.idle_timeout;
                self.sleep.as_mut().reset(deadline);
                continue;
            }
            let reason = if self.seen == 0 {
                ShedReason::FirstRequest
            } else {
                ShedReason::Idle
            };
            self.shed = Some(reason);
            self.metrics.shed(reason);
            return Err(shed_error(reason));
        }
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.watch(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.watch(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.watch(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The per-connection service: marks each request in flight until its
/// response body is done, and puts a deadline on reading its body.
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
    metrics: ConnMetrics,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<DeadlineBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: HttpBody + Unpin,
{
    type Response = Response<Guarded<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let deadline = Instant::now() + self.body_read_timeout;
        let req = req.map(|body| DeadlineBody {
            inner: body,
            deadline,
            timeout: self.body_read_timeout,
            sleep: None,
            expired: false,
            metrics: self.metrics.clone(),
        });
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Guarded {
                inner: body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A request body that fails once its deadline passed before it ended.
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Made on the first wait only: a body that is there at once costs no
    /// timer.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: bool,
    metrics: ConnMetrics,
}

impl HttpBody for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.expired = true;
        this.metrics.shed(ShedReason::Body);
        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        !self.expired && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight until it is dropped.
pub struct Guarded<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How the process's file descriptors are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// The soft `RLIMIT_NOFILE` (after raising it towards the hard limit).
    pub soft_limit: u64,
    /// Client connections at once (at most the configured cap).
    pub client: usize,
    /// Cluster-port connections at once (0 without a cluster port).
    pub cluster: usize,
    /// Whether `client` is below the configured cap.
    pub clamped: bool,
}

/// The descriptor limit is too low to serve.
#[derive(Debug, thiserror::Error)]
#[error(
    "the file-descriptor limit (RLIMIT_NOFILE) is {soft_limit} and {open} are open already: \
     too few for {MIN_CLIENT_CONNECTIONS} client connections besides the data dir and the \
     cluster port; raise it to at least {needed} (ulimit -n, or LimitNOFILE= in a systemd unit)"
)]
pub struct FdShortage {
    /// The soft limit.
    pub soft_limit: u64,
    /// Descriptors open at start.
    pub open: u64,
    /// The least limit that works.
    pub needed: u64,
}

/// Share `soft_limit` descriptors, `open` of which are in use, between
/// client connections (at most `max_connections`), the cluster port (when
/// `cluster`) and [`RESERVED_FDS`].
pub fn split_fds(
    soft_limit: u64,
    open: u64,
    max_connections: usize,
    cluster: bool,
) -> Result<FdPlan, FdShortage> {
    let spare = soft_limit.saturating_sub(open + RESERVED_FDS);
    let spare = usize::try_from(spare).unwrap_or(usize::MAX);
    let cluster_cap = if cluster {
        (spare / 4).clamp(16, CLUSTER_MAX_CONNECTIONS)
    } else {
        0
    };
    let client = spare.saturating_sub(cluster_cap).min(max_connections);
    if client < MIN_CLIENT_CONNECTIONS.min(max_connections) {
        return Err(FdShortage {
            soft_limit,
            open,
            needed: open + RESERVED_FDS + (cluster_cap + MIN_CLIENT_CONNECTIONS) as u64,
        });
    }
    Ok(FdPlan {
        soft_limit,
        client,
        cluster: cluster_cap,
        clamped: client < max_connections,
    })
}

/// Read `RLIMIT_NOFILE`, raise the soft limit towards the hard one as far
/// as `max_connections` needs, count the descriptors open now, and
/// [`split_fds`].
pub fn plan_fds(max_connections: usize, cluster: bool) -> Result<FdPlan, FdShortage> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let open = open_fds();
    let wanted = open
        + RESERVED_FDS
        + (max_connections + if cluster { CLUSTER_MAX_CONNECTIONS } else { 0 }) as u64;
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current.unwrap_or(u64::MAX);
    if soft < wanted {
        let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
        if raised > soft {
            let new = Rlimit {
                current: Some(raised),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, new) {
                Ok(()) => soft = raised,
                Err(e) => tracing::debug!(error = %e, "could not raise RLIMIT_NOFILE"),
            }
        }
    }
    split_fds(soft, open, max_connections, cluster)
}

/// Descriptors open in this process now (Linux: `/proc/self/fd`); a guess
/// elsewhere.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count() as u64)
        .unwrap_or(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_shared_out_and_a_tight_limit_is_refused() {
        // Plenty: the configured cap, and the full cluster share.
        let plan = split_fds(20_000, 20, 1024, true).unwrap();
        assert_eq!(
            (plan.client, plan.cluster, plan.clamped),
            (1024, CLUSTER_MAX_CONNECTIONS, false)
        );
        // The common soft limit of 1024 clamps the cap below it.
        let plan = split_fds(1024, 20, 1024, false).unwrap();
        assert_eq!((plan.client, plan.cluster), (1024 - 20 - 32, 0));
        assert!(plan.clamped);
        // A low limit: room for the reserve and a few connections.
        let plan = split_fds(128, 20, 1024, true).unwrap();
        assert_eq!((plan.client, plan.cluster), (76 - 19, 19));
        assert!(plan.client as u64 + plan.cluster as u64 + 20 + RESERVED_FDS <= 128);
        // Too low to serve: refused, naming a limit that works.
        let err = split_fds(50, 20, 1024, false).unwrap_err();
        assert_eq!(
            err.needed,
            20 + RESERVED_FDS + MIN_CLIENT_CONNECTIONS as u64
        );
        assert!(err.to_string().contains("ulimit -n"), "{err}");
        // A small configured cap is kept even under a low limit.
        let plan = split_fds(60, 20, 2, false).unwrap();
        assert_eq!((plan.client, plan.clamped), (2, false));
    }

    #[test]
    fn shed_reasons_are_a_fixed_set_of_label_values() {
        let all = [
            ShedReason::Limit,
            ShedReason::Handshake,
            ShedReason::FirstRequest,
            ShedReason::Idle,
            ShedReason::Body,
        ];
        let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            ["limit", "handshake", "first_request", "idle", "body"]
        );
        let metrics = ConnMetrics::default();
        metrics.shed(ShedReason::Idle);
        metrics.on_accept_error(&shed_error(ShedReason::Limit));
        metrics.on_accept_error(&io::Error::new(io::ErrorKind::TimedOut, "handshake"));
        assert_eq!(metrics.shed_count(ShedReason::Idle), 1);
        assert_eq!(
            metrics.shed_count(ShedReason::Limit),
            0,
            "counted where refused"
        );
        assert_eq!(metrics.shed_count(ShedReason::Handshake), 1);
    }
}
