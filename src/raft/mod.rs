//! Replication. Every mutation becomes a [`crate::state::command::Command`]
//! in a Raft log entry, proposed through [`replica::Replica::propose`] (also
//! on a single node) and applied by [`crate::state::State`] on every replica.
//! This module replicates; it does not decide what a command means.
//!
//! Invariant: a failed proposal says in its type what happened to the
//! command ([`ProposeError`]): it never entered the log (safe to send
//! again anywhere), apply rejected it, or its outcome is unknown
//! ([`OutcomeUnknown`]: it may or may not have been applied). No caller
//! reads that from a message.

pub mod cluster;
#[cfg(test)]
mod conformance;
pub mod forwarder;
pub mod log_store;
pub mod network;
pub mod proposer;
mod read_rounds;
pub mod removal;
pub mod replica;
pub mod state_machine;
pub mod tls;
pub mod types;

use thiserror::Error;

use crate::state::ApplyError;

/// Why a proposal (or a linearizable read, [`replica::Replica::linearize`])
/// failed. What the failure means for the command lives in the variant,
/// never in its message: whether it surely did nothing, was refused by
/// apply, or may or may not have been applied.
#[derive(Debug, Error)]
pub enum ProposeError {
    /// The command never entered the log: no leader was known or reachable
    /// within the leader wait, the leader answered "not the leader" (which
    /// openraft does only before appending, or after truncating the entry),
    /// the forward was never delivered, or the node is shutting down or has
    /// no cluster network. Nothing was applied, so the same command may be
    /// sent again, to any node. A read that could not be confirmed fails
    /// this way too (a read changes nothing).
    #[error("{0}")]
    NotSent(String),
    /// The state machine rejected the command (deterministically, the same
    /// on every replica): sending it again unchanged gets the same answer.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// The command entered, or may have entered, the log, and its answer
    /// was lost; see [`OutcomeUnknown`].
    #[error(transparent)]
    OutcomeUnknown(#[from] OutcomeUnknown),
}

impl ProposeError {
    /// Whether the same command may be proposed again without being
    /// applied twice: only when it surely never entered the log. A rejected
    /// command would be rejected again, and a command of unknown outcome
    /// may already be applied (a caller with an idempotency key may resend
    /// it anyway: apply answers a repeated key with the first outcome).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProposeError::NotSent(_))
    }
}

/// A write whose answer was lost after it entered, or may have entered, the
/// Raft log: it was not committed within the leader wait, the leadership
/// moved while it waited, the connection of its forward broke after
/// sending, or its caller stopped waiting. It may still commit later, or
/// never. Only a read tells, or a resend with the same idempotency key
/// (answered with the first outcome, applied at most once).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{reason}; the write may or may not have been applied")]
pub struct OutcomeUnknown {
    reason: String,
}

impl OutcomeUnknown {
    /// An unknown outcome; `reason` says where the answer was lost (no
    /// secret in it).
    pub fn new(reason: impl Into<String>) -> Self {
        OutcomeUnknown {
            reason: reason.into(),
        }
    }

    /// Where the answer was lost.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_command_that_never_entered_the_log_is_retryable() {
        assert!(ProposeError::NotSent("no leader is known".into()).is_retryable());
        assert!(!ProposeError::Rejected(ApplyError::NotFound).is_retryable());
        let unknown = ProposeError::from(OutcomeUnknown::new("no answer within 5s"));
        assert!(!unknown.is_retryable());
        assert_eq!(
            unknown.to_string(),
            "no answer within 5s; the write may or may not have been applied"
        );
    }
}
