//! Operation metrics, fed by the guard once per operation it runs.
//!
//! Invariant: every label value comes from a fixed set known at build
//! time. The operation is a `&'static str` from the guard's own list; the
//! outcome is `ok` or one of [`OUTCOMES`], and anything else a caller might
//! bring about is counted as [`OTHER_OUTCOME`]. No caller can add a series.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The outcome of an operation that succeeded.
pub const OK: &str = "ok";

/// The outcome of an operation refused because no audit device could
/// record it (fail closed).
pub const AUDIT_FAILED: &str = "audit_failed";

/// The outcome label of anything outside [`OUTCOMES`].
pub const OTHER_OUTCOME: &str = "other";

/// Every outcome counted under its own name: [`OK`], each
/// `ServiceError::code()` (a unit test keeps this in step with the enum),
/// and [`CANCELLED`].
pub const OUTCOMES: &[&str] = &[
    OK,
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "too_large",
    "sealed",
    "not_initialized",
    "unavailable",
    "removed",
    "integrity",
    "internal",
    "outcome_unknown",
    AUDIT_FAILED,
    CANCELLED,
];

/// The outcome of a call whose caller went away before its answer (the
/// operation may or may not have completed).
pub const CANCELLED: &str = "cancelled";

/// A label value known at build time: a `&'static str`, so no caller can
/// make one up at run time. The API's request metrics use it too
/// (`api::metrics::Label`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct StaticLabel(pub &'static str);

impl StaticLabel {
    /// The value.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl EncodeLabelValue for StaticLabel {
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

/// The outcome label: `outcome` if it is one of [`OUTCOMES`], else
/// [`OTHER_OUTCOME`].
pub fn outcome_label(outcome: &str) -> StaticLabel {
    StaticLabel(
        OUTCOMES
            .iter()
            .find(|o| **o == outcome)
            .copied()
            .unwrap_or(OTHER_OUTCOME),
    )
}

/// Labels of `kstash_operations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation, from the guard's fixed set.
    pub operation: StaticLabel,
    /// `ok`, an error code of [`OUTCOMES`], or [`OTHER_OUTCOME`].
    pub outcome: StaticLabel,
}

/// Labels of `kstash_operation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// The operation, from the guard's fixed set.
    pub operation: StaticLabel,
}

/// What the guard counts: operations by outcome, their duration, and
/// requests refused because no audit device could record them. Cloning
/// shares the series.
#[derive(Clone, Debug)]
pub struct OperationMetrics {
    operations: Family<OperationLabels, Counter>,
    durations: Family<OperationLabel, Histogram>,
    audit_failures: Counter,
    login_refusals: Family<CheckLabel, Counter>,
}

/// Labels of `kstash_login_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    /// The check that refused a login (`auth::kubernetes::Check::name`, a
    /// fixed set).
    pub check: StaticLabel,
}

impl Default for OperationMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OperationMetrics {
    /// Empty series; nothing is exported until [`Self::register`].
    pub fn new() -> Self {
        OperationMetrics {
            operations: Family::default(),
            // 100 µs .. ~3.3 s: a stale read to a write that waits for a
            // leader.
            durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            audit_failures: Counter::default(),
            login_refusals: Family::default(),
        }
    }

    /// Export the series in `registry` (prefix `kstash`):
    /// `kstash_operations_total{operation,outcome}`,
    /// `kstash_operation_duration_seconds{operation}`,
    /// `kstash_audit_failures_total` and `kstash_login_refusals_total{check}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "operations",
            "Operations run through the guard, by operation and outcome",
            self.operations.clone(),
        );
        registry.register_with_unit(
            "operation_duration",
            "Time from authentication to the recorded outcome, by operation",
            Unit::Seconds,
            self.durations.clone(),
        );
        registry.register(
            "audit_failures",
            "Requests refused because no audit device could record them",
            self.audit_failures.clone(),
        );
        registry.register(
            "login_refusals",
            "Logins with a presented identity (Kubernetes ServiceAccount) refused, by the check that failed",
            self.login_refusals.clone(),
        );
    }

    /// Count one run of `operation` (a name from the guard's fixed set)
    /// that ended in `outcome` (`ok` or a `ServiceError::code()`; anything
    /// not in [`OUTCOMES`] is counted as [`OTHER_OUTCOME`]) after `elapsed`.
    pub fn observe(&self, operation: &'static str, outcome: &str, elapsed: Duration) {
        let operation = StaticLabel(operation);
        self.operations
            .get_or_create(&OperationLabels {
                operation,
                outcome: outcome_label(outcome),
            })
            .inc();
        self.durations
            .get_or_create(&OperationLabel { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Count one request refused because no audit device could record it.
    /// (The guard also [`observe`](Self::observe)s it with outcome
    /// [`AUDIT_FAILED`].)
    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    /// Count a login refused by `check` (a name from the fixed set of
    /// `auth::kubernetes::Check`, which the caller never chooses).
    pub fn login_refused(&self, check: &'static str) {
        self.login_refusals
            .get_or_create(&CheckLabel {
                check: StaticLabel(check),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Denial;
    use crate::service::ServiceError;

    /// One value of every `ServiceError` variant. The match below has no
    /// wildcard: a new variant fails to compile here until it is listed,
    /// and then must be given a sample too.
    fn every_service_error() -> Vec<ServiceError> {
        let samples = vec![
            ServiceError::BadRequest(String::new()),
            ServiceError::Unauthorized(String::new()),
            ServiceError::Forbidden(Denial::new("read", "ns", "p", "ns", &[])),
            ServiceError::NotFound(String::new()),
            ServiceError::Conflict(String::new()),
            ServiceError::TooLarge(String::new()),
            ServiceError::Sealed,
            ServiceError::NotInitialized,
            ServiceError::Unavailable(String::new()),
            ServiceError::Removed(String::new()),
            ServiceError::Integrity,
            ServiceError::Internal,
            ServiceError::OutcomeUnknown(crate::service::OutcomeUnknown::new("")),
            ServiceError::AuditFailed,
            ServiceError::LoginRefused(crate::service::LoginRefusal::unverified(
                crate::auth::kubernetes::Check::Signature,
            )),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for e in &samples {
            seen.insert(match e {
                ServiceError::BadRequest(_) => 0,
                ServiceError::Unauthorized(_) => 1,
                ServiceError::Forbidden(_) => 2,
                ServiceError::NotFound(_) => 3,
                ServiceError::Conflict(_) => 4,
                ServiceError::TooLarge(_) => 5,
                ServiceError::Sealed => 6,
                ServiceError::NotInitialized => 7,
                ServiceError::Unavailable(_) => 8,
                ServiceError::Removed(_) => 9,
                ServiceError::Integrity => 10,
                ServiceError::Internal => 11,
                ServiceError::OutcomeUnknown(_) => 12,
                ServiceError::AuditFailed => 13,
                ServiceError::LoginRefused(_) => 14,
            });
        }
        assert_eq!(seen.len(), 15, "one sample of every variant");
        samples
    }

    #[test]
    fn every_service_error_code_is_an_outcome() {
        for e in every_service_error() {
            assert!(
                OUTCOMES.contains(&e.code()),
                "ServiceError code {:?} is missing from guard::metrics::OUTCOMES",
                e.code()
            );
        }
        assert!(OUTCOMES.contains(&OK) && OUTCOMES.contains(&AUDIT_FAILED));
        let unique: std::collections::BTreeSet<_> = OUTCOMES.iter().collect();
        assert_eq!(unique.len(), OUTCOMES.len(), "no outcome twice");
    }

    #[test]
    fn outcomes_come_from_a_fixed_set() {
        let metrics = OperationMetrics::new();
        let mut registry = Registry::with_prefix("kstash");
        metrics.register(&mut registry);
        metrics.observe("kv.put", "ok", Duration::from_millis(3));
        metrics.observe("kv.put", "forbidden", Duration::from_millis(1));
        metrics.observe("kv.put", "made_up\"\n", Duration::from_millis(1));
        metrics.audit_failed();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains(r#"kstash_operations_total{operation="kv.put",outcome="ok"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"kstash_operations_total{operation="kv.put",outcome="forbidden"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"kstash_operations_total{operation="kv.put",outcome="other"} 1"#),
            "{out}"
        );
        assert!(!out.contains("made_up"), "{out}");
        assert!(
            out.contains(r#"kstash_operation_duration_seconds_count{operation="kv.put"} 3"#),
            "{out}"
        );
        assert!(out.contains("kstash_audit_failures_total 1"), "{out}");
    }
}
