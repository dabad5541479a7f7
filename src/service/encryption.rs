//! Encrypting a value under the cluster-wide encryption limit (invariant 9).
//!
//! Invariant: the barrier encrypts only inside a block of encryptions this
//! node reserved through the log for the active term
//! (`Command::ReserveEncryptions`). Apply grants blocks so that the
//! reserved total of a term never passes the limit, so no term encrypts
//! more than the limit however many nodes write. A node reserves one block
//! at a time (writers that run out together wait for one reservation), and
//! a term that cannot grant one is rotated, once.

use super::{Node, ServiceError};
use crate::barrier::BarrierError;
use crate::raft::ProposeError;
use crate::state::command::{Applied, Command};
use crate::state::ApplyError;

/// Most encryptions one reservation asks for: one extra log entry per this
/// many writes on a busy node, and at most this many lost when a node
/// seals, restarts or sees its term rotated with a block in hand.
pub const MAX_RESERVATION: u64 = 1024;

/// Most reservations or rotations one encryption waits for before the
/// write gives up (503, retryable): other nodes used up every term first.
const MAX_ROUNDS: usize = 8;

impl Node {
    /// Encryptions asked for per reservation: a sixteenth of the limit (so
    /// a low limit is not taken by one node at once), at least 1, at most
    /// [`MAX_RESERVATION`].
    fn reservation_size(&self) -> u64 {
        (self.settings.encryption_limit / 16).clamp(1, MAX_RESERVATION)
    }

    /// Encrypt `value` for `storage_key`, reserving encryptions and
    /// rotating the keychain as needed; returns the term and ciphertext.
    pub(super) async fn encrypt_value(
        &self,
        storage_key: &[u8],
        value: &[u8],
    ) -> Result<(u32, Vec<u8>), ServiceError> {
        for _ in 0..MAX_ROUNDS {
            let active = self.barrier.active_term();
            match self.barrier.encrypt(storage_key, value) {
                Err(BarrierError::ReservationNeeded(term)) => {
                    self.reserve_encryptions(term).await?
                }
                Err(BarrierError::RotationRequired(_)) => {
                    self.rotate_keychain(active).await?;
                }
                other => return Ok(other?),
            }
        }
        Err(ServiceError::Unavailable(
            "no encryption could be reserved under the active key term; retry".into(),
        ))
    }

    /// Reserve a block of encryptions under `term` through the log and give
    /// it to the barrier. One reservation at a time: a writer that waited
    /// finds the block another one reserved. A term the log cannot grant
    /// more of is rotated; a term that is no longer active (another node
    /// rotated) makes this node take the current keychain.
    async fn reserve_encryptions(&self, term: u32) -> Result<(), ServiceError> {
        let _one_at_a_time = self.reserve_lock.lock().await;
        if !self.barrier.needs_reservation(term) {
            return Ok(());
        }
        let reserve = Command::ReserveEncryptions {
            term,
            count: self.reservation_size(),
            limit: self.settings.encryption_limit,
        };
        match self.raft.propose(reserve).await {
            Ok(Applied::Reserved { start, count }) => {
                if !self.barrier.grant(term, start, count) {
                    tracing::debug!(term, "a reserved block was dropped: the term changed");
                }
                Ok(())
            }
            Ok(_) => Err(ServiceError::Internal),
            Err(ProposeError::Rejected(ApplyError::TermExhausted { .. })) => {
                self.rotate_keychain(Some(term)).await.map(drop)
            }
            Err(ProposeError::Rejected(ApplyError::StaleTerm { .. })) => {
                self.catch_up_keychain().await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Take the keychain the log holds now, after another node rotated it:
    /// catch up with the leader first, so this node's state has it.
    pub(super) async fn catch_up_keychain(&self) -> Result<(), ServiceError> {
        self.linearize().await?;
        self.reload_keychain()
    }
}
