//! TEMPORARY stand-in for operation metrics (helper H4 writes the real one).
use std::time::Duration;

/// Operation metrics.
#[derive(Default)]
pub struct OperationMetrics;

impl OperationMetrics {
    /// New.
    pub fn new() -> Self {
        OperationMetrics
    }
    /// Observe.
    pub fn observe(&self, _operation: &'static str, _outcome: &str, _elapsed: Duration) {}
}
