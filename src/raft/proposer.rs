//! Proposals on this node's openraft, batched: requests that arrive while
//! earlier log entries are being written wait, and go together into the
//! next entry ([`Batch`]). Every per-entry cost (the log append and its
//! fsync, replication, the commit round, the apply hand-off) is then paid
//! once per batch instead of once per request.
//!
//! Invariants:
//! - Each caller gets exactly its own request's outcome. Inside an entry,
//!   requests are applied in the order they reached the queue; entries in
//!   flight at the same time may commit in either order (their requests
//!   were concurrent: none was acknowledged before another was sent).
//! - At most [`MAX_IN_FLIGHT`] entries are being written at once. With
//!   fewer requests in flight nothing waits, so a lone request costs what
//!   it did unbatched; when nothing is queued and an entry may start, the
//!   caller's own task writes it (no hand-off to the queue's task).
//! - An entry holds at most [`MAX_BATCH_REQUESTS`] requests, and stops
//!   taking more once it holds [`MAX_BATCH_BYTES`] of payload (one request
//!   larger than that still travels alone).
//! - The leader stamps its clock into every request of an entry just before
//!   `client_write`, so apply never reads a clock.
//! - A request whose caller stopped waiting before it was taken from the
//!   queue is dropped, not proposed: its caller was told the outcome is
//!   unknown, and nothing was written.
//! - Every wait is bounded by the leader wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::replica::hint_of;
use super::types::{typ, NodeInfo};
use super::OutcomeUnknown;
use crate::clock::Clock;
use crate::state::command::{Batch, Command, Idempotency, Request, Response};

/// Log entries being written at once by one node.
pub const MAX_IN_FLIGHT: usize = 2;

/// Requests in one log entry at most.
pub const MAX_BATCH_REQUESTS: usize = 256;

/// Payload bytes after which an entry takes no more requests.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Outcome of a write on this node's openraft.
#[derive(Clone, Debug)]
pub enum LocalWrite {
    /// Committed and applied.
    Done(typ::LogId, Response),
    /// Not the leader (or no longer, and the entry was not appended or was
    /// truncated): nothing was applied.
    NotLeader(Option<(typ::NodeId, NodeInfo)>),
    /// Never written: the node is shutting down and the request was not
    /// queued. Nothing was applied.
    NotSent(String),
    /// The request was handed to openraft (or may have been) and its answer
    /// was lost: not committed within the leader wait, openraft failed, or
    /// the caller's wait ended first. It may or may not be applied.
    Unknown(OutcomeUnknown),
}

/// A request waiting for an entry.
struct Pending {
    command: Command,
    idempotency: Option<Idempotency>,
    reply: oneshot::Sender<LocalWrite>,
}

/// The queue in front of this node's `client_write`; see the module docs.
pub struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
    /// Requests sent to the queue and not yet taken from it.
    queued: Arc<AtomicUsize>,
    /// One permit per entry that may be written at once.
    slots: Arc<Semaphore>,
    raft: typ::Raft,
    clock: Arc<dyn Clock>,
    leader_wait: Duration,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposer")
            .field("queued", &self.queued)
            .field("free_slots", &self.slots.available_permits())
            .finish()
    }
}

impl Proposer {
    /// Start the task that drains the queue into `raft`. It ends when the
    /// proposer is dropped.
    pub fn start(raft: typ::Raft, clock: Arc<dyn Clock>, leader_wait: Duration) -> Self {
        let (queue, requests) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(drain(
            raft.clone(),
            clock.clone(),
            leader_wait,
            requests,
            queued.clone(),
            slots.clone(),
        ));
        Proposer {
            queue,
            queued,
            slots,
            raft,
            clock,
            leader_wait,
        }
    }

    /// Propose one command and wait (at most the leader wait) until it is
    /// committed and applied on this node.
    pub async fn write(&self, command: Command, idempotency: Option<Idempotency>) -> LocalWrite {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            command,
            idempotency,
            reply,
        };
        // Nothing waits and an entry may start: write it from this task.
        // (Requests queued meanwhile are concurrent with this one.)
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                let time_ms = self.clock.now_ms();
                write_entry(&self.raft, time_ms, vec![pending], self.leader_wait).await;
                drop(slot);
                return outcome.await.unwrap_or_else(|_| dropped());
            }
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(pending).is_err() {
            // Not queued: the drain task is gone, nothing was proposed.
            return LocalWrite::NotSent("the node is shutting down".into());
        }
        match tokio::time::timeout(self.leader_wait, outcome).await {
            Ok(Ok(written)) => written,
            Ok(Err(_)) => dropped(),
            // The request may already be in an entry being written.
            Err(_) => not_committed_within(self.leader_wait),
        }
    }
}

/// A request whose answer never came back from the entry it was in (the
/// task writing it ended): it may have been appended.
fn dropped() -> LocalWrite {
    LocalWrite::Unknown(OutcomeUnknown::new("the proposal was dropped"))
}

/// A request that was not committed within the leader wait: it may still
/// commit.
fn not_committed_within(leader_wait: Duration) -> LocalWrite {
    LocalWrite::Unknown(OutcomeUnknown::new(format!(
        "the write was not committed within {leader_wait:?}"
    )))
}

/// What every request of an entry is told when `client_write` gave no
/// answer per request: `None` when it did not finish within the leader
/// wait. Only "not the leader" says the entry was not appended (or was
/// truncated); every other failure may follow an append.
fn entry_failed(
    written: Option<Result<(typ::LogId, usize), typ::RaftError<typ::ClientWriteError>>>,
    requests: usize,
    leader_wait: Duration,
) -> LocalWrite {
    match written {
        None => not_committed_within(leader_wait),
        Some(Ok((log_id, answers))) => LocalWrite::Unknown(OutcomeUnknown::new(format!(
            "log entry {log_id} answered {answers} of {requests} requests"
        ))),
        Some(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            LocalWrite::NotLeader(hint_of(f))
        }
        Some(Err(e)) => {
            LocalWrite::Unknown(OutcomeUnknown::new(format!("the log entry failed: {e}")))
        }
    }
}

/// Bytes a command adds to an entry, roughly: its ciphertext or key
/// material, or a small constant.
pub(super) fn weight(command: &Command) -> usize {
    match command {
        Command::PutSecret {
            ciphertext, path, ..
        } => ciphertext.len() + path.len(),
        Command::Init { keychain, .. }
        | Command::RotateKeychain { keychain, .. }
        | Command::Rekey { keychain, .. } => keychain.len(),
        _ => 256,
    }
}

/// Take requests off the queue in entries of as many as are waiting, with
/// at most [`MAX_IN_FLIGHT`] entries being written at once.
async fn drain(
    raft: typ::Raft,
    clock: Arc<dyn Clock>,
    leader_wait: Duration,
    mut requests: mpsc::UnboundedReceiver<Pending>,
    queued: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = requests.recv().await else {
            return;
        };
        let mut bytes = weight(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
            let Ok(next) = requests.try_recv() else {
                break;
            };
            bytes += weight(&next.command);
            batch.push(next);
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let raft = raft.clone();
        let time_ms = clock.now_ms();
        tokio::spawn(async move {
            write_entry(&raft, time_ms, batch, leader_wait).await;
            drop(slot);
        });
    }
}

/// Write one entry holding `batch` and answer every request in it.
async fn write_entry(raft: &typ::Raft, time_ms: u64, batch: Vec<Pending>, leader_wait: Duration) {
    let mut replies = Vec::with_capacity(batch.len());
    let requests = batch
        .into_iter()
        .map(|p| {
            replies.push(p.reply);
            Request {
                time_ms,
                command: p.command,
                idempotency: p.idempotency,
            }
        })
        .collect();
    // Bounded: a leader cut off from its quorum would otherwise wait until
    // it loses the leadership. The entry may still commit later.
    let written = tokio::time::timeout(leader_wait, raft.client_write(Batch { requests })).await;
    let failed = match written {
        Ok(Ok(written)) if written.data.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(written.data) {
                let _ = reply.send(LocalWrite::Done(written.log_id, response));
            }
            return;
        }
        Ok(written) => entry_failed(
            Some(written.map(|w| (w.log_id, w.data.len()))),
            replies.len(),
            leader_wait,
        ),
        Err(_) => entry_failed(None, replies.len(), leader_wait),
    };
    for reply in replies {
        let _ = reply.send(failed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::error::{Fatal, ForwardToLeader};

    const WAIT: Duration = Duration::from_secs(5);

    fn log_id(index: u64) -> typ::LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    #[test]
    fn only_not_the_leader_says_an_entry_was_not_written() {
        let not_leader = ForwardToLeader {
            leader_id: Some(2),
            leader_node: Some(NodeInfo::default()),
        };
        let refused = entry_failed(
            Some(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                not_leader,
            )))),
            3,
            WAIT,
        );
        assert!(
            matches!(&refused, LocalWrite::NotLeader(Some((2, _)))),
            "{refused:?}"
        );

        // Every other way an entry can fail may follow its append.
        let timed_out = entry_failed(None, 3, WAIT);
        let stopped = entry_failed(Some(Err(RaftError::Fatal(Fatal::Stopped))), 3, WAIT);
        let short = entry_failed(Some(Ok((log_id(7), 2))), 3, WAIT);
        for (failed, reason) in [
            (timed_out, "not committed within 5s"),
            (stopped, "the log entry failed"),
            (short, "answered 2 of 3 requests"),
        ] {
            match failed {
                LocalWrite::Unknown(unknown) => {
                    assert!(unknown.reason().contains(reason), "{unknown}");
                    assert!(
                        unknown
                            .to_string()
                            .contains("may or may not have been applied"),
                        "{unknown}"
                    );
                }
                other => panic!("{reason}: {other:?} is not an unknown outcome"),
            }
        }
        assert!(matches!(dropped(), LocalWrite::Unknown(_)));
    }
}
