//! Replication. Every mutation becomes a [`command::Command`] in a Raft log
//! entry, proposed through [`replica::Replica::propose`] (also on a single
//! node) and applied by [`state::State`] on every replica.

pub mod cluster;
pub mod command;
#[cfg(test)]
mod conformance;
pub mod forwarder;
pub mod listing;
pub mod log_store;
pub mod network;
pub mod proposer;
mod read_rounds;
pub mod removal;
pub mod replica;
pub mod state;
pub mod state_machine;
pub mod tls;
pub mod types;

use thiserror::Error;

use state::ApplyError;

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
