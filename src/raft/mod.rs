//! Replication. Every mutation becomes a [`command::Command`] in a log entry
//! and is applied by the [`state::State`].
//!
//! Today one node is its own leader: [`SingleNode`] stamps the time, appends
//! and applies in order under one lock. The Raft cluster replaces
//! `SingleNode` behind the same `propose` call; nothing above this module
//! knows which one runs.

pub mod command;
#[cfg(test)]
mod conformance;
pub mod log_store;
pub mod state;
pub mod state_machine;
pub mod types;

use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::clock::Clock;
use command::{Applied, Command, Request};
use state::{ApplyError, State};

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

/// The log of a single node: it is always the leader.
pub struct SingleNode {
    state: State,
    clock: Arc<dyn Clock>,
    /// Serialises apply; holds the last stamped time so entry times never go
    /// backwards even if the wall clock does.
    last: Mutex<u64>,
}

impl std::fmt::Debug for SingleNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SingleNode({:?})", self.state)
    }
}

impl SingleNode {
    /// A single-node log applying to `state`.
    pub fn new(state: State, clock: Arc<dyn Clock>) -> Self {
        SingleNode {
            state,
            clock,
            last: Mutex::new(0),
        }
    }

    /// The state machine, for reads.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Stamp, append and apply one command; returns what apply produced.
    /// Runs the (synchronous) backend work off the async executor.
    pub async fn propose(self: &Arc<Self>, command: Command) -> Result<Applied, ProposeError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || this.propose_blocking(command))
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))?
    }

    fn propose_blocking(&self, command: Command) -> Result<Applied, ProposeError> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let time_ms = self.clock.now_ms().max(*last);
        *last = time_ms;
        let entry = Request { time_ms, command };
        tracing::debug!(command = %entry.command, time_ms, "apply");
        Ok(self.state.apply(&entry)?)
    }
}
