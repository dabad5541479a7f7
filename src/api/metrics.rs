//! Prometheus metrics of the client API, served at `/metrics`.
//!
//! Invariant: every label value comes from a fixed set known at build time
//! ([`Label`] holds only a `&'static str`): a REST route template of
//! [`super::rest::ROUTES`], a gRPC method of [`super::grpc::METHODS`], one of
//! [`METHODS`], one of [`STATUSES`], or [`UNMATCHED`] / [`OTHER`] for
//! anything else. No caller, with or without a credential, sealed or not, can
//! add a series; label values are escaped anyway, so the exposition stays
//! valid text whatever the set holds.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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

/// A label value from a fixed set known at build time.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Label(&'static str);

impl Label {
    /// The value.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl EncodeLabelValue for Label {
    /// Escaped as the text format asks (`\\`, `\"`, `\n`); the encoder of
    /// `prometheus-client` writes values as given.
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

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
    operations: Arc<crate::guard::metrics::OperationMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every kstash metric.
    /// The operation metrics the front door feeds (TEMPORARY until merge).
    pub fn operations(&self) -> Arc<crate::guard::metrics::OperationMetrics> {
        self.operations.clone()
    }

    pub fn new() -> Self {
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
        Metrics {
            registry,
            requests,
            latency,
            sealed,
            initialized,
            connections,
            operations: Arc::new(crate::guard::metrics::OperationMetrics::new()),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
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
