//! Forwarding, batched: a follower's writes that wait for the leader at the
//! same time travel together in one `ForwardBatch` call, so a burst costs
//! one round trip, one envelope and one gRPC stream instead of one each.
//! The leader hands every request of a batch to its proposer at once, where
//! they usually share a log entry too.
//!
//! Invariants:
//! - Each caller gets exactly its own request's outcome, or the call's
//!   failure when the batch got no answer. The retry rules stay the
//!   caller's ([`super::replica::Replica::propose_with`]): a batch that was
//!   never delivered fails every request with the same "unreachable" error.
//! - What a failed forward means for its request is decided in one place,
//!   [`surely_not_logged`]: only a call that was never delivered, or that
//!   the peer refused before its log, surely did nothing; every other
//!   failure leaves the outcome unknown.
//! - At most [`MAX_IN_FLIGHT`] calls are under way at once; with fewer
//!   requests waiting nothing is held back, so a lone request is sent at
//!   once, alone, as a plain `Forward` (from the caller's own task when
//!   nothing is queued and a call may start).
//! - A batch goes to one peer and holds at most [`MAX_BATCH_REQUESTS`]
//!   requests, taking no more once it holds [`MAX_BATCH_BYTES`] of payload.
//! - A request whose caller stopped waiting before its batch was made is
//!   not sent: its caller was told the outcome is unknown, and nothing was
//!   proposed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::cluster::{ClusterError, ForwardReply, ForwardRequest};
use super::network::{PeerClient, PeerError};
use super::proposer::{weight, MAX_BATCH_BYTES, MAX_BATCH_REQUESTS};

/// `Forward` calls under way at once from one node.
pub const MAX_IN_FLIGHT: usize = 2;

/// One request waiting to be forwarded.
struct Job {
    peer: PeerClient,
    request: ForwardRequest,
    reply: oneshot::Sender<Result<ForwardReply, PeerError>>,
}

/// The queue in front of this node's forwarding calls; see the module docs.
#[derive(Debug)]
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Job>,
    /// Jobs sent to the queue and not yet taken from it.
    queued: Arc<AtomicUsize>,
    /// One permit per call that may be under way.
    slots: Arc<Semaphore>,
}

impl Forwarder {
    /// Start the task that drains the queue. It ends when the forwarder is
    /// dropped.
    pub fn start() -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        tokio::spawn(drain(jobs, queued.clone(), slots.clone()));
        Forwarder {
            queue,
            queued,
            slots,
        }
    }

    /// Forward `request` to the leader through `peer` (with others waiting
    /// for the same peer) and wait for its outcome. The wait is bounded by
    /// the cluster port's RPC timeout.
    pub async fn forward(
        &self,
        peer: PeerClient,
        request: ForwardRequest,
    ) -> Result<ForwardReply, PeerError> {
        if self.queued.load(Ordering::Acquire) == 0 {
            if let Ok(_slot) = self.slots.clone().try_acquire_owned() {
                return peer.forward(&request).await;
            }
        }
        let addr = peer.addr().to_string();
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            peer,
            request,
            reply,
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(job).is_err() {
            return Err(PeerError::Unreachable {
                peer: addr,
                reason: "the node is shutting down".into(),
            });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(PeerError::Network {
                peer: addr,
                reason: "the forwarding call was dropped; its outcome is unknown".into(),
            })
        })
    }
}

/// Whether a failed forward surely never entered the leader's log, so it
/// may be sent again to any node: the call was never delivered
/// ([`PeerError::Unreachable`]: no connection, refused, or this node is
/// shutting down and never sent it), or the peer answered that it does not
/// lead or that the hop budget is spent (it proposes nothing then; openraft
/// says "not the leader" only before appending or after truncating).
/// Anything else (a timeout, a broken or dropped call, an unreadable reply,
/// or the leader's own failure, which travels as `Unavailable` whether or
/// not the entry was appended) may follow an append: its outcome is unknown.
pub fn surely_not_logged(e: &PeerError) -> bool {
    match e {
        PeerError::Unreachable { .. } => true,
        PeerError::Remote { source, .. } => matches!(
            source,
            ClusterError::NotLeader { .. } | ClusterError::HopsExhausted
        ),
        PeerError::Timeout { .. } | PeerError::Network { .. } | PeerError::Wire { .. } => false,
    }
}

/// Whether two jobs go to the same peer.
fn same_peer(a: &PeerClient, b: &PeerClient) -> bool {
    a.id() == b.id() && a.addr() == b.addr()
}

/// Take jobs off the queue in batches of as many as wait for the same peer,
/// with at most [`MAX_IN_FLIGHT`] calls under way.
async fn drain(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    queued: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
) {
    // A job for another peer that ended the last batch.
    let mut held: Option<Job> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    job
                }
                None => return,
            },
        };
        let mut bytes = weight(&first.request.request.command);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
            let Ok(next) = jobs.try_recv() else {
                break;
            };
            queued.fetch_sub(1, Ordering::AcqRel);
            if !same_peer(&next.peer, &batch[0].peer) {
                held = Some(next);
                break;
            }
            bytes += weight(&next.request.request.command);
            batch.push(next);
        }
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        tokio::spawn(async move {
            send(batch).await;
            drop(slot);
        });
    }
}

/// Send one batch (a lone request as a plain `Forward`) and answer each
/// job.
async fn send(mut batch: Vec<Job>) {
    if batch.len() == 1 {
        let job = batch.remove(0);
        let outcome = job.peer.forward(&job.request).await;
        let _ = job.reply.send(outcome);
        return;
    }
    let peer = batch[0].peer.clone();
    let (requests, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|job| (job.request, job.reply))
        .unzip();
    match peer.forward_batch(&requests).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::raft::cluster::WireError;

    fn remote(source: ClusterError) -> PeerError {
        PeerError::Remote {
            peer: "n2".into(),
            source,
        }
    }

    #[test]
    fn only_an_undelivered_or_refused_forward_is_surely_not_logged() {
        let peer = || "n2".to_string();
        let not_logged = [
            PeerError::Unreachable {
                peer: peer(),
                reason: "connection refused".into(),
            },
            remote(ClusterError::NotLeader {
                leader_id: Some(3),
                leader: None,
            }),
            remote(ClusterError::HopsExhausted),
        ];
        for e in &not_logged {
            assert!(surely_not_logged(e), "{e}");
        }
        let unknown = [
            PeerError::Timeout {
                peer: peer(),
                timeout: Duration::from_secs(5),
            },
            // What `Forwarder::forward` answers when its call was dropped.
            PeerError::Network {
                peer: peer(),
                reason: "the forwarding call was dropped".into(),
            },
            PeerError::Wire {
                peer: peer(),
                source: WireError::Malformed("1 outcomes for 2 forwarded requests".into()),
            },
            // The leader's own failure: the entry may have been appended.
            remote(ClusterError::Unavailable(
                "the write was not committed within 5s".into(),
            )),
            remote(ClusterError::Internal("panic".into())),
            remote(ClusterError::Sealed),
        ];
        for e in &unknown {
            assert!(!surely_not_logged(e), "{e}");
        }
    }
}
