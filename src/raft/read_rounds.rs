//! Rounds shared by concurrent callers: the leader confirms its leadership
//! for linearizable reads once per round (one heartbeat to a quorum), not
//! once per read.
//!
//! Invariants:
//! - A caller is answered only by a round that started after it joined, so
//!   a read index it gets covers every write acknowledged before its call.
//! - At most one round runs at a time. Callers that join while one runs
//!   wait for the next, which serves all of them.
//! - A round is run by one of its callers, not by a task of its own. If
//!   that caller goes away mid-round (its request was cancelled), the
//!   callers it was serving wait for the next round, and the turn to run it
//!   passes to one of them: nobody is left waiting on a round nobody runs.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// What a waiting caller is told.
enum Turn<T> {
    /// A round that started after it joined ended with this.
    Done(T),
    /// It runs the next round (for itself and whoever is waiting).
    Run,
}

struct Queue<T> {
    /// A caller is running a round.
    running: bool,
    /// Callers waiting for the next round, oldest first.
    waiting: VecDeque<oneshot::Sender<Turn<T>>>,
}

/// Shared rounds of an operation whose result answers every caller that
/// joined before the round started; see the module docs.
pub struct Rounds<T> {
    queue: Mutex<Queue<T>>,
}

impl<T> Default for Rounds<T> {
    fn default() -> Self {
        Rounds {
            queue: Mutex::new(Queue {
                running: false,
                waiting: VecDeque::new(),
            }),
        }
    }
}

impl<T> std::fmt::Debug for Rounds<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rounds")
    }
}

impl<T: Clone> Rounds<T> {
    /// The result of a round that started after this call: runs `round`
    /// when no round is running (or when handed the turn), otherwise waits
    /// for the next round.
    pub async fn join<F, Fut>(&self, round: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            let mut waiting = {
                let mut queue = self.lock();
                if !queue.running {
                    queue.running = true;
                    break;
                }
                let (tx, rx) = oneshot::channel();
                queue.waiting.push_back(tx);
                Waiting {
                    rounds: self,
                    turn: Some(rx),
                }
            };
            let turn = match waiting.turn.as_mut() {
                Some(rx) => rx.await,
                None => continue,
            };
            waiting.turn = None;
            match turn {
                Ok(Turn::Done(result)) => return result,
                Ok(Turn::Run) => break,
                // Never sent while this caller waits (a dropped runner
                // hands its callers on); join again to be safe.
                Err(_) => continue,
            }
        }
        // This caller runs the round; `running` is set for it.
        let mut runner = Runner {
            rounds: self,
            served: std::mem::take(&mut self.lock().waiting),
        };
        let result = round().await;
        for caller in runner.served.drain(..) {
            let _ = caller.send(Turn::Done(result.clone()));
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The caller running a round. Dropping it, at the end of the round or
/// when the caller is cancelled, passes the turn on.
struct Runner<'a, T> {
    rounds: &'a Rounds<T>,
    /// Callers this round answers; still here if it did not finish.
    served: VecDeque<oneshot::Sender<Turn<T>>>,
}

impl<T> Drop for Runner<'_, T> {
    fn drop(&mut self) {
        let mut queue = self.rounds.queue.lock().unwrap_or_else(|e| e.into_inner());
        // Unanswered callers wait for the next round, ahead of later ones.
        while let Some(caller) = self.served.pop_back() {
            queue.waiting.push_front(caller);
        }
        hand_off(&mut queue);
    }
}

/// A caller waiting for its turn or a result. Dropping it after it was
/// handed the turn but before it took it (it was cancelled) passes the
/// turn on.
struct Waiting<'a, T> {
    rounds: &'a Rounds<T>,
    /// Unset once the caller took what it was sent.
    turn: Option<oneshot::Receiver<Turn<T>>>,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        let Some(mut rx) = self.turn.take() else {
            return;
        };
        rx.close();
        if let Ok(Turn::Run) = rx.try_recv() {
            let mut queue = self.rounds.queue.lock().unwrap_or_else(|e| e.into_inner());
            hand_off(&mut queue);
        }
    }
}

/// Give the turn to the oldest waiting caller still there, or mark the
/// rounds idle.
fn hand_off<T>(queue: &mut Queue<T>) {
    while let Some(next) = queue.waiting.pop_front() {
        if next.send(Turn::Run).is_ok() {
            return;
        }
    }
    queue.running = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Counts rounds; each takes 20 ms and returns its own number.
    async fn counted(rounds: &Rounds<u64>, started: &AtomicU64) -> u64 {
        rounds
            .join(|| async {
                let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                n
            })
            .await
    }

    #[tokio::test]
    async fn callers_that_arrive_during_a_round_share_the_next_one() {
        let rounds = Arc::new(Rounds::default());
        let started = Arc::new(AtomicU64::new(0));
        let first = {
            let (r, s) = (rounds.clone(), started.clone());
            tokio::spawn(async move { counted(&r, &s).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let later: Vec<_> = (0..50)
            .map(|_| {
                let (r, s) = (rounds.clone(), started.clone());
                tokio::spawn(async move { counted(&r, &s).await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), 1);
        for caller in later {
            assert_eq!(
                caller.await.unwrap(),
                2,
                "answered by the round after the one running when it came"
            );
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "two rounds for 51 callers"
        );
        // Idle again: the next caller runs a round at once.
        assert_eq!(counted(&rounds, &started).await, 3);
    }

    #[tokio::test]
    async fn a_cancelled_runner_hands_its_callers_to_the_next_round() {
        let rounds = Arc::new(Rounds::default());
        let started = Arc::new(AtomicU64::new(0));
        let runner = {
            let (r, s) = (rounds.clone(), started.clone());
            tokio::spawn(async move { counted(&r, &s).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (r, s) = (rounds.clone(), started.clone());
                tokio::spawn(async move { counted(&r, &s).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        runner.abort();
        for w in waiters {
            let got = tokio::time::timeout(Duration::from_secs(2), w)
                .await
                .expect("a waiter was stranded")
                .unwrap();
            assert_eq!(got, 2, "served by a round started after the cancelled one");
        }
    }
}
