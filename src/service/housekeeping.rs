//! Periodic commands: the sweep of expired tokens.

use super::{Node, ServiceError};
use crate::state::command::{Applied, Command};

impl Node {
    // ----- housekeeping -------------------------------------------------------

    /// Remove expired access tokens and spent gatekeeper tokens through the
    /// log. Proposes nothing when nothing has expired.
    pub async fn sweep(&self) -> Result<usize, ServiceError> {
        if self.sm().init_record()?.is_none() || !self.sm().sweep_due(self.now())? {
            return Ok(0);
        }
        let mut total = 0;
        for _ in 0..100 {
            match self.raft.propose(Command::Sweep).await? {
                Applied::Swept { removed, more } => {
                    total += removed;
                    if !more {
                        break;
                    }
                }
                _ => break,
            }
        }
        if total > 0 {
            tracing::debug!(removed = total, "swept expired tokens");
        }
        Ok(total)
    }
}
