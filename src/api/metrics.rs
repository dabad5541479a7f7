//! Prometheus metrics of the client API, served at `/metrics`.
//! Labels are route templates and status codes only: never paths, tokens or
//! namespaces.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/v1/kv/{*path}`) or gRPC method path.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub status: u16,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every kstash metric.
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

/// Middleware counting every request by route template and status.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| {
            let p = req.uri().path();
            if p.starts_with("/kstash.") {
                p.to_string()
            } else {
                "unmatched".into()
            }
        });
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = RequestLabels {
        route,
        method,
        status: resp.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}
