//! kstash-jepsen: black-box fault tests for kstash.
//!
//! What exists so far: [`history`] (operation records as clients observe
//! them) and [`checker`] (linearizability of versioned-register and set
//! histories). The harness, workloads, nemeses and report are still to come;
//! see `README.md`.

pub mod checker;
pub mod history;

pub use checker::{check, set_summaries, Anomaly, Budget, Report, SetSummary, Verdict};
pub use history::{History, HistoryError, Input, Op, OpId, Outcome, Output, Versioned};
