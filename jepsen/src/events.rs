//! Operations of the `token` and `seal` workloads, and their checkers.
//!
//! These are not register or set operations, so the linearizability checker
//! does not see them. Their properties are real-time rules:
//!
//! - token: a token is never accepted by a request sent after its revoke was
//!   acknowledged, nor by one sent after its expiry (plus a margin for the
//!   clock reading);
//! - seal: a node never serves a read sent after its seal was acknowledged
//!   and before the next unseal (or heal) was started.
//!
//! Invariant: like [`crate::history::Op`], an [`Event`] records only what
//! the client observed; `Info` events constrain nothing.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::history::Outcome;

/// What a token or seal operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Log in: a new access token (`token` names it).
    Login,
    /// A KV read or write with the token `token`; `Ok` means the server
    /// accepted the token.
    Use,
    /// Revoke the token `token`.
    Revoke,
    /// Seal node `node` with a gatekeeper token.
    Seal,
    /// Unseal through node `node` with a gatekeeper token.
    Unseal,
    /// Read a secret on node `node`; `Ok` means it was served.
    Read,
}

impl EventKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Login => "login",
            EventKind::Use => "use",
            EventKind::Revoke => "revoke",
            EventKind::Seal => "seal",
            EventKind::Unseal => "unseal",
            EventKind::Read => "sealed_read",
        }
    }
}

/// One token or seal operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client that ran it.
    pub process: u64,
    /// The node (container index) it was sent to.
    pub node: usize,
    /// What it was.
    pub kind: EventKind,
    /// The harness's number for the access token involved.
    pub token: Option<u64>,
    /// When it was sent (ns on the run's clock).
    pub invoke_ns: u64,
    /// When it was answered.
    pub complete_ns: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// For an acknowledged login: the token's expiry on the run's clock.
    pub expires_ns: Option<u64>,
    /// What the server said (status and code), for the report.
    pub detail: String,
}

/// A broken rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which rule.
    pub rule: &'static str,
    /// The offending event's index.
    pub event: usize,
    /// In words.
    pub explanation: String,
}

/// How late an expired token may still be accepted: the server compares
/// expiry in milliseconds on the same host clock, so this covers only the
/// gap between reading the clock here and there.
pub const EXPIRY_MARGIN_NS: u64 = 1_000_000_000;

/// Token rules: nothing sent after an acknowledged revoke, or after the
/// expiry, is accepted.
pub fn check_tokens(events: &[Event]) -> Vec<Violation> {
    let mut revoked: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut expires: HashMap<u64, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        let (Some(token), Outcome::Ok, Some(done)) = (e.token, e.outcome, e.complete_ns) else {
            continue;
        };
        match e.kind {
            EventKind::Revoke => {
                let entry = revoked.entry(token).or_insert((done, i));
                if done < entry.0 {
                    *entry = (done, i);
                }
            }
            EventKind::Login => {
                if let Some(x) = e.expires_ns {
                    expires.insert(token, x);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let (EventKind::Use, Outcome::Ok, Some(token)) = (e.kind, e.outcome, e.token) else {
            continue;
        };
        if let Some(&(at, by)) = revoked.get(&token) {
            if e.invoke_ns > at {
                out.push(Violation {
                    rule: "revoked token accepted",
                    event: i,
                    explanation: format!(
                        "token {token} was accepted by node {} at {} ns, sent {} ms after its \
                         revoke (event {by}) was acknowledged",
                        e.node,
                        e.invoke_ns,
                        (e.invoke_ns - at) / 1_000_000
                    ),
                });
            }
        }
        if let Some(&x) = expires.get(&token) {
            if e.invoke_ns > x + EXPIRY_MARGIN_NS {
                out.push(Violation {
                    rule: "expired token accepted",
                    event: i,
                    explanation: format!(
                        "token {token} was accepted by node {}, sent {} ms after it expired",
                        e.node,
                        (e.invoke_ns - x) / 1_000_000
                    ),
                });
            }
        }
    }
    out
}

/// Seal rule: a node that acknowledged its seal serves no read sent before
/// the next unseal (by any node) or heal (`reopen_ns`: times the harness
/// itself started unsealing, e.g. after a fault) began.
pub fn check_seals(events: &[Event], reopen_ns: &[u64]) -> Vec<Violation> {
    let mut reopen: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == EventKind::Unseal)
        .map(|e| e.invoke_ns)
        .chain(reopen_ns.iter().copied())
        .collect();
    reopen.sort_unstable();
    let mut out = Vec::new();
    for (s, seal) in events.iter().enumerate() {
        let (EventKind::Seal, Outcome::Ok, Some(sealed_at)) =
            (seal.kind, seal.outcome, seal.complete_ns)
        else {
            continue;
        };
        let until = reopen
            .iter()
            .copied()
            .find(|&t| t > sealed_at)
            .unwrap_or(u64::MAX);
        for (i, e) in events.iter().enumerate() {
            if e.kind == EventKind::Read
                && e.outcome == Outcome::Ok
                && e.node == seal.node
                && e.invoke_ns > sealed_at
                && e.invoke_ns < until
            {
                out.push(Violation {
                    rule: "read served while sealed",
                    event: i,
                    explanation: format!(
                        "node {} served a read sent {} ms after its seal (event {s}) was \
                         acknowledged, before any unseal",
                        e.node,
                        (e.invoke_ns - sealed_at) / 1_000_000
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, node: usize, token: Option<u64>, at: u64, done: u64, ok: bool) -> Event {
        Event {
            process: 0,
            node,
            kind,
            token,
            invoke_ns: at,
            complete_ns: Some(done),
            outcome: if ok { Outcome::Ok } else { Outcome::Fail },
            expires_ns: None,
            detail: String::new(),
        }
    }

    #[test]
    fn a_use_after_an_acknowledged_revoke_is_caught() {
        let events = vec![
            ev(EventKind::Login, 0, Some(1), 0, 10, true),
            ev(EventKind::Revoke, 1, Some(1), 20, 30, true),
            // Concurrent with the revoke: may be accepted.
            ev(EventKind::Use, 2, Some(1), 25, 40, true),
            // Sent after the revoke was acknowledged: must not be.
            ev(EventKind::Use, 2, Some(1), 35, 50, true),
        ];
        let v = check_tokens(&events);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].event, 3);
        assert_eq!(v[0].rule, "revoked token accepted");
    }

    #[test]
    fn refused_or_indeterminate_uses_and_unacknowledged_revokes_are_fine() {
        let mut lost_revoke = ev(EventKind::Revoke, 1, Some(2), 20, 30, true);
        lost_revoke.outcome = Outcome::Info;
        let events = vec![
            ev(EventKind::Revoke, 1, Some(1), 20, 30, true),
            ev(EventKind::Use, 2, Some(1), 35, 50, false),
            lost_revoke,
            ev(EventKind::Use, 2, Some(2), 35, 50, true),
        ];
        assert!(check_tokens(&events).is_empty());
    }

    #[test]
    fn a_use_after_expiry_is_caught_beyond_the_margin() {
        let mut login = ev(EventKind::Login, 0, Some(7), 0, 10, true);
        login.expires_ns = Some(1_000);
        let events = vec![
            login,
            ev(
                EventKind::Use,
                0,
                Some(7),
                1_000 + EXPIRY_MARGIN_NS / 2,
                0,
                true,
            ),
            ev(
                EventKind::Use,
                1,
                Some(7),
                1_001 + EXPIRY_MARGIN_NS,
                0,
                true,
            ),
        ];
        let events: Vec<Event> = events
            .into_iter()
            .map(|mut e| {
                e.complete_ns = Some(e.invoke_ns + 5);
                e
            })
            .collect();
        let v = check_tokens(&events);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].event, 2);
        assert_eq!(v[0].rule, "expired token accepted");
    }

    #[test]
    fn a_read_served_while_sealed_is_caught_until_the_next_unseal() {
        let events = vec![
            ev(EventKind::Seal, 1, None, 0, 10, true),
            ev(EventKind::Read, 1, None, 5, 12, true), // concurrent with the seal
            ev(EventKind::Read, 0, None, 15, 20, true), // another node
            ev(EventKind::Read, 1, None, 15, 20, true), // violation
            ev(EventKind::Read, 1, None, 16, 20, false), // refused: right
            ev(EventKind::Unseal, 0, None, 30, 40, true),
            ev(EventKind::Read, 1, None, 35, 45, true), // after the unseal began
        ];
        let v = check_seals(&events, &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].event, 3);
        // A heal that began before the read also ends the sealed interval.
        assert!(check_seals(&events[..5], &[14]).is_empty());
        // A seal that failed seals nothing.
        let mut failed = events.clone();
        failed[0].outcome = Outcome::Fail;
        assert!(check_seals(&failed, &[]).is_empty());
    }
}
