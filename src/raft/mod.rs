//! Replication. Every mutation becomes a [`crate::state::command::Command`]
//! in a Raft log entry, proposed through [`replica::Replica::propose`] (also
//! on a single node) and applied by [`crate::state::State`] on every replica.
//! This module replicates; it does not decide what a command means.

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

/// Why a proposal failed.
#[derive(Debug, Error)]
pub enum ProposeError {
    /// The state machine rejected the command (deterministically).
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// The proposal could not be run.
    #[error("proposal failed: {0}")]
    Unavailable(String),
}
