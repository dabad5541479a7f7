//! The CSI provider's Prometheus metrics (served by `kstash csi-provider
//! --health-listen` at `/metrics`).
//!
//! Invariant: every label value comes from a fixed set known at build time:
//! a Mount's outcome is `ok` or one of [`MountError::CODES`], a login's one
//! of [`LOGIN_OUTCOMES`], a cache lookup's one of [`LOOKUPS`]. Nothing a
//! pod or class names (namespace, path, role) becomes a label.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::login::Lookup;
use super::mount_error::MountError;
use crate::guard::metrics::StaticLabel;

/// Outcomes of a login: minted, refused by kstash, or failed otherwise.
pub const LOGIN_OUTCOMES: &[&str] = &["ok", "refused", "failed"];

/// Results of a login-cache lookup.
pub const LOOKUPS: &[&str] = &["hit", "miss", "stale"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: StaticLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    result: StaticLabel,
}

/// The provider's series; clones share them.
#[derive(Clone, Debug)]
pub struct CsiMetrics {
    mounts: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    files: Counter,
    logins: Family<OutcomeLabels, Counter>,
    lookups: Family<LookupLabels, Counter>,
    evictions: Counter,
    cached: Gauge,
}

impl Default for CsiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CsiMetrics {
    /// Fresh series, registered nowhere yet.
    pub fn new() -> Self {
        CsiMetrics {
            mounts: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            files: Counter::default(),
            logins: Family::default(),
            lookups: Family::default(),
            evictions: Counter::default(),
            cached: Gauge::default(),
        }
    }

    /// A registry (prefix `kstash`) holding these series.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("kstash");
        r.register(
            "csi_mounts",
            "Mount calls of the Secrets Store CSI Driver, by outcome (ok or the error code)",
            self.mounts.clone(),
        );
        r.register_with_unit(
            "csi_mount_duration",
            "Time to answer one Mount",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "csi_files",
            "Files answered by successful Mounts",
            self.files.clone(),
        );
        r.register(
            "csi_logins",
            "Logins to kstash as a pod, by outcome (ok, refused by kstash, failed)",
            self.logins.clone(),
        );
        r.register(
            "csi_login_cache_lookups",
            "Lookups of a pod's access token in the login cache (hit, miss, stale)",
            self.lookups.clone(),
        );
        r.register(
            "csi_login_cache_evictions",
            "Access tokens dropped from the full login cache",
            self.evictions.clone(),
        );
        r.register(
            "csi_login_cache_entries",
            "Access tokens held in the login cache",
            self.cached.clone(),
        );
        r
    }

    /// Count one Mount: its files, or its error; it took `took`.
    pub fn observe_mount(&self, outcome: Result<usize, &MountError>, took: Duration) {
        let label = match outcome {
            Ok(files) => {
                self.files.inc_by(files as u64);
                "ok"
            }
            Err(e) => e.code(),
        };
        self.mounts
            .get_or_create(&OutcomeLabels {
                outcome: StaticLabel(label),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Count one login; `outcome` is one of [`LOGIN_OUTCOMES`].
    pub fn observe_login(&self, outcome: &'static str) {
        debug_assert!(LOGIN_OUTCOMES.contains(&outcome));
        self.logins
            .get_or_create(&OutcomeLabels {
                outcome: StaticLabel(outcome),
            })
            .inc();
    }

    /// Count one cache lookup.
    pub fn observe_lookup(&self, lookup: Lookup) {
        let result = match lookup {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Stale => "stale",
        };
        self.lookups
            .get_or_create(&LookupLabels {
                result: StaticLabel(result),
            })
            .inc();
    }

    /// The cache now holds `entries`, after evicting `evicted`.
    pub fn set_cache(&self, entries: usize, evicted: usize) {
        self.evictions.inc_by(evicted as u64);
        self.cached.set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_have_the_documented_names_and_fixed_labels() {
        let m = CsiMetrics::new();
        m.observe_mount(Ok(3), Duration::from_millis(4));
        m.observe_mount(
            Err(&MountError::NotFound {
                path: "shop/db-password".into(),
                namespace: "shop".into(),
            }),
            Duration::from_millis(2),
        );
        m.observe_login("ok");
        m.observe_lookup(Lookup::Hit);
        m.set_cache(7, 2);
        let text = crate::plugins::health::render(&m.registry());
        for want in [
            "kstash_csi_mounts_total{outcome=\"ok\"} 1",
            "kstash_csi_mounts_total{outcome=\"SecretNotFound\"} 1",
            "kstash_csi_mount_duration_seconds_count 2",
            "kstash_csi_files_total 3",
            "kstash_csi_logins_total{outcome=\"ok\"} 1",
            "kstash_csi_login_cache_lookups_total{result=\"hit\"} 1",
            "kstash_csi_login_cache_evictions_total 2",
            "kstash_csi_login_cache_entries 7",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert!(!text.contains("db-password"), "{text}");
    }
}
