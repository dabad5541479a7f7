//! kstash-jepsen: black-box fault tests for kstash.
//!
//! A run ([`run`]) starts a fresh three-node `cluster/`, drives one
//! [`workload`] through clients on every node while the [`nemesis`] breaks
//! the cluster ([`cluster`] wraps the `cluster/` scripts and the nodes'
//! [`api`]), records what every client saw ([`history`], [`events`]), heals,
//! reads everything back, then checks: linearizability ([`checker`]) for
//! registers and sets, real-time rules ([`events`]) for tokens and seals.
//! [`report`] draws the run.

pub mod api;
pub mod checker;
pub mod cluster;
pub mod events;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod workload;

pub use checker::{check, set_summaries, Anomaly, Budget, Report, SetSummary, Verdict};
pub use history::{History, HistoryError, Input, Op, OpId, Outcome, Output, Versioned};
