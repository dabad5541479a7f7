//! A plugin process's probes and metrics over HTTP (`kstash kms-plugin
//! --health-listen ADDR`, `kstash csi-provider --health-listen ADDR`):
//! `/healthz`, `/readyz`, `/metrics`.
//!
//! Invariants: `/healthz` answers 200 while the process runs and never asks
//! kstash (a sealed or unreachable kstash must not restart a plugin);
//! `/readyz` is 200 exactly when the plugin's [`Readiness`] says so;
//! `/metrics` carries only the plugin's own registry. At most
//! [`MAX_IN_FLIGHT`] requests are answered at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Requests answered at once; more wait.
pub const MAX_IN_FLIGHT: usize = 16;

/// How long a shutdown waits for requests in flight.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Whether a plugin is ready to serve its socket's callers.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready; otherwise why not, for the probe's body (never a
    /// secret).
    fn ready(&self) -> Result<(), String>;
}

/// What the handlers read.
#[derive(Clone)]
struct Probe {
    readiness: Arc<dyn Readiness>,
    registry: Arc<Registry>,
}

/// The health server, running.
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(p): State<Probe>) -> (StatusCode, String) {
    match p.readiness.ready() {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

async fn metrics_text(State(p): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(&p.registry),
    )
}

/// The OpenMetrics text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

impl HealthServer {
    /// Serve the probes of the plugin `what` on `listener`: readiness from
    /// `readiness`, the series of `registry`.
    pub fn start(
        what: &'static str,
        listener: tokio::net::TcpListener,
        readiness: Arc<dyn Readiness>,
        registry: Registry,
    ) -> HealthServer {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the {what}'s probes and metrics listen beyond loopback");
        }
        let probe = Probe {
            readiness,
            registry: Arc::new(registry),
        };
        let app = axum::Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(probe)
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                MAX_IN_FLIGHT,
            ));
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        HealthServer {
            addr,
            stop,
            serving,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving (requests in flight get up to 2 s).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let abort = self.serving.abort_handle();
        if tokio::time::timeout(STOP_WAIT, self.serving).await.is_err() {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/monitoring/plugin-metrics.txt` names exactly the families
    /// the KMS plugin and the CSI provider export (the alert rules are
    /// checked against it offline).
    #[test]
    fn the_plugin_metrics_list_is_what_the_plugins_export() {
        use crate::plugins::csi::{CsiMetrics, MountError};
        use crate::plugins::kms::metrics::{KmsMetrics, Rpc};
        let kms = KmsMetrics::new();
        kms.observe::<()>(Rpc::Status, &Ok(()), Duration::from_millis(1));
        let csi = CsiMetrics::new();
        csi.observe_mount(Err(&MountError::Unavailable("x".into())), Duration::ZERO);
        csi.observe_login("ok");
        csi.observe_lookup(crate::plugins::csi::login::Lookup::Hit);
        let mut exported: Vec<String> = [render(&kms.registry()), render(&csi.registry())]
            .iter()
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("# TYPE "))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        exported.sort();
        let listed: Vec<String> = include_str!("../../deploy/monitoring/plugin-metrics.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        assert_eq!(
            listed, exported,
            "deploy/monitoring/plugin-metrics.txt is out of step with the plugins' /metrics"
        );
    }
    use crate::plugins::kms::metrics::KmsMetrics;
    use crate::plugins::kms::{KmsError, StatusCache};
    use std::time::Instant;

    #[tokio::test]
    async fn healthz_always_readyz_with_the_cache_metrics_always() {
        // Steps: an empty cache → /healthz 200, /readyz 503 with its
        // reason; a fresh status → /readyz 200; /metrics has the series;
        // a failed refresh → /readyz 503 again, /healthz still 200.
        let cache = Arc::new(StatusCache::new(Duration::from_secs(5)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = HealthServer::start(
            "KMS plugin",
            listener,
            cache.clone(),
            KmsMetrics::new().registry(),
        );
        let base = format!("http://{}", server.addr());
        crate::client::install_crypto_provider();
        let http = reqwest::Client::new();
        let get = |path: &'static str| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http.get(format!("{base}{path}")).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await, (200, "ok".into()));
        let (code, body) = get("/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("not reached kstash"), "{body}");
        cache.record(Ok("kstash:kube-system/kek:00:v1".into()), Instant::now());
        assert_eq!(get("/readyz").await, (200, "ready".into()));
        let (code, body) = get("/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("kstash_kms_status_healthy"), "{body}");
        cache.record(Err(KmsError::Unavailable("sealed".into())), Instant::now());
        let (code, body) = get("/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("sealed"), "{body}");
        assert_eq!(get("/healthz").await.0, 200);
        server.shutdown().await;
        assert!(http.get(format!("{base}/healthz")).send().await.is_err());
    }
}
