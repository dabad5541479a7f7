//! Prometheus metrics of the client API, served at `/metrics`.
//!
//! Invariant: every label value comes from a fixed set known at build time
//! ([`Label`] holds only a `&'static str`): a REST route template of
//! [`super::rest::ROUTES`], a gRPC method of [`super::grpc::METHODS`], one of
//! [`METHODS`], one of [`STATUSES`], or [`UNMATCHED`] / [`OTHER`] for
//! anything else. No caller, with or without a credential, sealed or not, can
//! add a series; label values are escaped anyway, so the exposition stays
//! valid text whatever the set holds.
//!
//! Besides the API's own series it exports the guard's operation metrics
//! ([`crate::guard::metrics`]) and, for a node ([`Metrics::for_node`]), what
//! replication counts as it works and the node's figures read at scrape time
//! ([`crate::service::figures`]): Raft (leader, term, commit and applied
//! index), the barrier (sealed, key term, encryptions against the limit),
//! stored access tokens, removal. Names follow Prometheus' rules: base units
//! in the name (`_seconds`), counters end in `_total`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::guard::metrics::OperationMetrics;
use crate::service::figures::TokenCountCache;
use crate::service::Node;

/// The route label of a request that matched none of kstash's routes (or
/// named a gRPC method kstash does not serve).
pub const UNMATCHED: &str = "unmatched";

/// The method or status label of anything outside [`METHODS`] / [`STATUSES`].
pub const OTHER: &str = "other";

/// HTTP methods counted under their own name; any other is [`OTHER`].
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Status codes counted under their own number: those kstash answers with.
/// Any other is [`OTHER`].
pub const STATUSES: &[&str] = &[
    "200", "204", "400", "401", "403", "404", "405", "409", "413", "415", "421", "429", "500",
    "501", "503",
];

/// A label value from a fixed set known at build time (the one type of
/// every kstash label value, escaped when encoded).
pub use crate::guard::metrics::StaticLabel as Label;

/// The value of `list` equal to `value`, as a [`Label`]; else `fallback`.
fn pick(list: &[&'static str], value: &str, fallback: &'static str) -> Label {
    Label(
        list.iter()
            .find(|v| **v == value)
            .copied()
            .unwrap_or(fallback),
    )
}

/// The route label: the REST route template that matched, or the gRPC
/// method called, if it is one kstash serves; else [`UNMATCHED`].
pub fn route_label(matched: Option<&str>, path: &str) -> Label {
    if super::grpc::is_grpc_path(path) {
        return pick(super::grpc::METHODS, path, UNMATCHED);
    }
    match matched {
        Some(template) => pick(super::rest::ROUTES, template, UNMATCHED),
        None => Label(UNMATCHED),
    }
}

/// The method label: one of [`METHODS`], else [`OTHER`].
pub fn method_label(method: &axum::http::Method) -> Label {
    pick(METHODS, method.as_str(), OTHER)
}

/// The status label: one of [`STATUSES`], else [`OTHER`].
pub fn status_label(status: axum::http::StatusCode) -> Label {
    pick(STATUSES, status.as_str(), OTHER)
}

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/v1/kv/{*path}`), gRPC method path, or [`UNMATCHED`].
    pub route: Label,
    /// HTTP method, or [`OTHER`].
    pub method: Label,
    /// HTTP status code, or [`OTHER`].
    pub status: Label,
}

/// The API's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    /// 1 while the barrier is sealed.
    pub sealed: Gauge,
    /// 1 once initialised.
    pub initialized: Gauge,
    /// Client connections: open now, and shed by reason.
    pub connections: super::conn::ConnMetrics,
    /// What the guard counts per operation.
    operations: OperationMetrics,
}

/// How long a count of the stored access tokens is reused by scrapes.
pub const TOKEN_COUNT_TTL: Duration = Duration::from_secs(3);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every kstash metric, and fresh operation
    /// metrics.
    pub fn new() -> Self {
        Self::with_operations(OperationMetrics::new())
    }

    /// [`Metrics::new`] exporting `operations`, which the guard may already
    /// hold (clones share their series).
    pub fn with_operations(operations: OperationMetrics) -> Self {
        let mut registry = Registry::with_prefix("kstash");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let sealed = Gauge::default();
        let initialized = Gauge::default();
        registry.register("api_requests", "Client API requests", requests.clone());
        registry.register(
            "api_request_seconds",
            "Client API request latency",
            latency.clone(),
        );
        registry.register("sealed", "1 while the barrier is sealed", sealed.clone());
        registry.register("initialized", "1 once initialized", initialized.clone());
        let connections = super::conn::ConnMetrics::default();
        connections.register(&mut registry);
        operations.register(&mut registry);
        Metrics {
            registry,
            requests,
            latency,
            sealed,
            initialized,
            connections,
            operations,
        }
    }

    /// [`Metrics::new`] plus `node`'s series: what its replication counts
    /// and its figures, read at each scrape.
    pub fn for_node(node: Arc<Node>) -> Self {
        Self::for_node_with(node, OperationMetrics::new())
    }

    /// [`Metrics::for_node`] exporting `operations`, which the guard may
    /// already hold (clones share their series).
    pub fn for_node_with(node: Arc<Node>, operations: OperationMetrics) -> Self {
        let mut metrics = Self::with_operations(operations);
        let registry = &mut metrics.registry;
        let meters = node.replication_meters().clone();
        registry.register(
            "raft_leader_changes",
            "Times this node saw a new leader",
            meters.leader_changes,
        );
        registry.register(
            "raft_proposals_committed",
            "Proposals of this node that were committed (applied or refused by apply)",
            meters.proposals_committed,
        );
        registry.register(
            "raft_proposals_failed",
            "Proposals of this node that were not committed or whose outcome is unknown",
            meters.proposals_failed,
        );
        registry.register(
            "raft_proposals_pending",
            "Proposals of this node waiting for their outcome",
            meters.proposals_pending,
        );
        registry.register_with_unit(
            "raft_apply_duration",
            "Time to apply one Raft log entry",
            Unit::Seconds,
            meters.apply_seconds,
        );
        registry.register_with_unit(
            "raft_log_flush_duration",
            "Time of one durability barrier of the Raft log (flush, then fdatasync)",
            Unit::Seconds,
            meters.log_flush_seconds,
        );
        registry.register(
            "raft_snapshots",
            "Snapshots built or installed on this node, by kind",
            meters.snapshots,
        );
        let kubernetes = node.kubernetes_meters().clone();
        registry.register(
            "kubernetes_key_fetch_failures",
            "Fetches of the Kubernetes cluster's signing keys (JWKS file or OIDC discovery) that failed; \
             the last good key set stays in use",
            kubernetes.key_fetch_failures,
        );
        registry.register(
            "kubernetes_token_review_failures",
            "TokenReview calls to the Kubernetes API server that gave no verdict (unreachable, \
             kstash's credentials refused, an unusable answer)",
            kubernetes.token_review_failures,
        );
        registry.register_collector(Box::new(NodeFigures {
            node,
            tokens: TokenCountCache::new(TOKEN_COUNT_TTL),
        }));
        metrics
    }

    /// The guard's operation metrics (the one front door feeds them).
    pub fn operations(&self) -> &OperationMetrics {
        &self.operations
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The gauges of a node, read from [`Node::figures`] at each scrape.
struct NodeFigures {
    node: Arc<Node>,
    tokens: TokenCountCache,
}

impl std::fmt::Debug for NodeFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeFigures({:?})", self.node)
    }
}

/// Write one gauge `name` with `value`.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for NodeFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = self.node.figures();
        let r = f.replication;
        let e = &mut encoder;
        gauge(
            e,
            "raft_has_leader",
            "1 while this node knows a leader",
            r.has_leader as u64,
        )?;
        gauge(
            e,
            "raft_is_leader",
            "1 while this node is the leader",
            r.is_leader as u64,
        )?;
        gauge(e, "raft_term", "Current Raft term", r.term)?;
        gauge(
            e,
            "raft_commit_index",
            "Highest Raft log index known committed",
            r.commit_index,
        )?;
        gauge(
            e,
            "raft_applied_index",
            "Index of the last Raft log entry applied here",
            r.applied_index,
        )?;
        gauge(
            e,
            "barrier_sealed",
            "1 while the barrier is sealed",
            f.sealed as u64,
        )?;
        if let Some(term) = f.key_term {
            gauge(
                e,
                "barrier_key_term",
                "The keychain's active term",
                term.into(),
            )?;
        }
        if let Some(used) = f.key_encryptions {
            gauge(
                e,
                "barrier_key_encryptions",
                "Encryptions the cluster reserved under the active key term",
                used,
            )?;
        }
        gauge(
            e,
            "barrier_key_encryption_limit",
            "Encryptions under one key term before a forced rotation",
            f.encryption_limit,
        )?;
        if let Some(tokens) = self.tokens.get(&self.node) {
            gauge(
                e,
                "access_tokens",
                "Access tokens stored (expired ones until the next sweep)",
                tokens,
            )?;
        }
        gauge(
            e,
            "removed",
            "1 once this node was removed from its cluster",
            f.removed as u64,
        )?;
        Ok(())
    }
}

/// Middleware counting every request by route, method and status, each
/// from its fixed set. It runs after routing (`Router::layer`), so a request
/// to a real route carries its `MatchedPath` even when a later layer (the
/// sealed gate, the Host or Content-Type check) refuses it.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = route_label(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
        req.uri().path(),
    );
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = RequestLabels {
        route,
        method,
        status: status_label(resp.status()),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, StatusCode};

    #[test]
    fn request_labels_come_from_fixed_sets() {
        let route = |m: Option<&str>, p: &str| route_label(m, p).as_str();
        assert_eq!(
            route(Some("/v1/kv/{*path}"), "/v1/kv/a/b"),
            "/v1/kv/{*path}"
        );
        assert_eq!(route(Some("/made/up"), "/made/up"), UNMATCHED);
        assert_eq!(route(None, "/v1/nope"), UNMATCHED);
        let grpc = Some("/kstash.v1.Sys/{*rest}");
        assert_eq!(
            route(grpc, "/kstash.v1.Sys/Status"),
            "/kstash.v1.Sys/Status"
        );
        assert_eq!(route(grpc, "/kstash.v1.Sys/Nope"), UNMATCHED);
        assert_eq!(route(None, "/kstash.Foo/Bar"), UNMATCHED);
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        let matched = Some("/grpc.reflection.v1.ServerReflection/{*rest}");
        assert_eq!(route(matched, reflection), reflection);
        assert_eq!(
            route(matched, "/grpc.reflection.v1.ServerReflection/X"),
            UNMATCHED
        );
        assert_eq!(method_label(&Method::PUT).as_str(), "PUT");
        let odd = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(&odd).as_str(), OTHER);
        assert_eq!(status_label(StatusCode::NOT_FOUND).as_str(), "404");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT).as_str(), OTHER);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut registry = Registry::default();
        let family = Family::<RequestLabels, Counter>::default();
        registry.register("t", "t", family.clone());
        family
            .get_or_create(&RequestLabels {
                route: Label("a\"b\\c\nd"),
                method: Label("GET"),
                status: Label("200"),
            })
            .inc();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains(r#"route="a\"b\\c\nd""#), "{out}");
    }
}
