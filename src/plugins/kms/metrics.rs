//! The KMS plugin's Prometheus metrics (served by `kstash kms-plugin
//! --health-listen` at `/metrics`).
//!
//! Invariant: every label value comes from a fixed set known at build time:
//! the RPC is one of [`Rpc`], the outcome one of [`OUTCOMES`]. Nothing the
//! apiserver sends becomes a label.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::guard::metrics::StaticLabel;

/// The three RPCs of KMS v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// `Status`.
    Status,
    /// `Encrypt`.
    Encrypt,
    /// `Decrypt`.
    Decrypt,
}

impl Rpc {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Status => "status",
            Rpc::Encrypt => "encrypt",
            Rpc::Decrypt => "decrypt",
        }
    }
}

/// Outcome labels: the gRPC codes the service answers with, and `other`.
pub const OUTCOMES: &[&str] = &["ok", "invalid_argument", "unavailable", "internal", "other"];

/// The outcome label of an answer.
fn outcome<T>(answer: &Result<T, tonic::Status>) -> &'static str {
    match answer {
        Ok(_) => "ok",
        Err(s) => match s.code() {
            tonic::Code::InvalidArgument => "invalid_argument",
            tonic::Code::Unavailable => "unavailable",
            tonic::Code::Internal => "internal",
            _ => "other",
        },
    }
}

/// Labels of `kstash_kms_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rpc: StaticLabel,
    outcome: StaticLabel,
}

/// Labels of `kstash_kms_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: StaticLabel,
}

/// The plugin's series; clones share them.
#[derive(Clone, Debug)]
pub struct KmsMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RpcLabels, Histogram>,
    healthy: Gauge,
    token_expires_at: Gauge,
}

impl Default for KmsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl KmsMetrics {
    /// Fresh series, registered nowhere yet.
    pub fn new() -> Self {
        KmsMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            healthy: Gauge::default(),
            token_expires_at: Gauge::default(),
        }
    }

    /// A registry (prefix `kstash`) holding these series.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("kstash");
        r.register(
            "kms_requests",
            "KMS v2 calls of kube-apiserver, by RPC and outcome",
            self.requests.clone(),
        );
        r.register_with_unit(
            "kms_request_duration",
            "Time to answer one KMS v2 call",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "kms_status_healthy",
            "1 while Status answers ok (the cached status is fresh and kstash can serve the key)",
            self.healthy.clone(),
        );
        r.register_with_unit(
            "kms_token_expires_at",
            "When the plugin's access token expires (Unix time); 0 until it is known",
            Unit::Seconds,
            self.token_expires_at.clone(),
        );
        r
    }

    /// Count one answer of `rpc`, which took `took`.
    pub fn observe<T>(&self, rpc: Rpc, answer: &Result<T, tonic::Status>, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                rpc: StaticLabel(rpc.name()),
                outcome: StaticLabel(outcome(answer)),
            })
            .inc();
        self.duration
            .get_or_create(&RpcLabels {
                rpc: StaticLabel(rpc.name()),
            })
            .observe(took.as_secs_f64());
    }

    /// Whether Status answers ok.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(healthy as i64);
    }

    /// When the access token expires, in seconds since the Unix epoch.
    pub fn set_token_expires_at(&self, unix_seconds: u64) {
        self.token_expires_at
            .set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_have_the_documented_names_and_fixed_labels() {
        let m = KmsMetrics::new();
        m.observe::<()>(Rpc::Status, &Ok(()), Duration::from_millis(1));
        m.observe::<()>(
            Rpc::Decrypt,
            &Err(tonic::Status::invalid_argument("x")),
            Duration::from_millis(2),
        );
        m.observe::<()>(
            Rpc::Encrypt,
            &Err(tonic::Status::permission_denied("a caller's text")),
            Duration::from_millis(2),
        );
        m.set_healthy(true);
        m.set_token_expires_at(1_900_000_000);
        let text = crate::plugins::health::render(&m.registry());
        for want in [
            "kstash_kms_requests_total{rpc=\"status\",outcome=\"ok\"} 1",
            "kstash_kms_requests_total{rpc=\"decrypt\",outcome=\"invalid_argument\"} 1",
            "kstash_kms_requests_total{rpc=\"encrypt\",outcome=\"other\"} 1",
            "kstash_kms_request_duration_seconds_count{rpc=\"decrypt\"} 1",
            "kstash_kms_status_healthy 1",
            "kstash_kms_token_expires_at_seconds 1900000000",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(!text.contains("a caller's text"), "{text}");
    }
}
