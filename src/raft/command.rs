//! Replicated commands: every mutation of kstash is one of these, applied by
//! the state machine in log order, also on a single node.
//!
//! Invariant: a command carries everything apply needs that is random or
//! secret-derived (ids, nonces, ciphertext, wrapped keys), so apply is a
//! deterministic function of the log. `Display` never prints secret bytes.
//!
//! Byte fields are `serde_bytes`: bincode writes them exactly as a plain
//! `Vec<u8>` (the length, then the bytes), so logs and peers of earlier
//! releases read them unchanged, but copies them in one go instead of one
//! call per byte.

use serde::{Deserialize, Serialize};

use crate::acl::Policy;

/// A log entry's payload: one or more requests the leader gathered while
/// earlier entries were in flight. Apply runs them in order, each as its
/// own atomic change, and answers each one.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Batch {
    /// The requests, in the order they are applied.
    pub requests: Vec<Request>,
}

/// One client request: the leader's clock reading and one command.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Request {
    /// Milliseconds since the Unix epoch, stamped by the leader; apply uses
    /// this and never reads the clock.
    pub time_ms: u64,
    /// What to do.
    pub command: Command,
    /// The client's idempotency key, if it gave one: a request carrying a
    /// key seen within [`IDEMPOTENCY_WINDOW_MS`] is not applied again; it
    /// gets the first outcome back.
    pub idempotency: Option<Idempotency>,
}

/// How long the outcome of a request with an idempotency key is kept (from
/// its entry time): a retry within this window is answered, not applied.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1000;

/// A client's idempotency key as the log carries it: hashes only, never the
/// key's text or anything of the value.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// SHA-256 of (the caller's token id, the client's key): where the
    /// outcome is kept, so one caller cannot see or block another's keys.
    pub id: [u8; 32],
    /// SHA-256 of what the request does (its kind and target, not the
    /// value): the same key sent with another request is refused.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Idempotency({})", short(&self.id))
    }
}

/// A gatekeeper token to store: its id (hash) and the gatekeeper key wrapped
/// under a key derived from the token.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct NewGatekeeperToken {
    /// SHA-256 of the token.
    pub id: [u8; 32],
    /// The gatekeeper key sealed under HKDF(token).
    #[serde(with = "serde_bytes")]
    pub wrapped_key: Vec<u8>,
}

impl std::fmt::Debug for NewGatekeeperToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GatekeeperToken({})", short(&self.id))
    }
}

/// The first hex digits of an id, for logs.
pub fn short(id: &[u8; 32]) -> String {
    hex::encode(&id[..6])
}

/// Every replicated mutation.
#[derive(Serialize, Deserialize, Clone)]
pub enum Command {
    /// First initialisation: Shamir parameters, the wrapped root key, the
    /// wrapped keychain, the access key's hash and the first gatekeeper tokens.
    Init {
        shares: u8,
        threshold: u8,
        #[serde(with = "serde_bytes")]
        wrapped_root: Vec<u8>,
        #[serde(with = "serde_bytes")]
        keychain: Vec<u8>,
        access_key_hash: [u8; 32],
        gatekeeper_tokens: Vec<NewGatekeeperToken>,
    },
    /// A new keychain (one more term) wrapped under the same root key.
    RotateKeychain {
        term: u32,
        #[serde(with = "serde_bytes")]
        keychain: Vec<u8>,
    },
    /// New unseal keys: a new gatekeeper key wraps a new root key, which
    /// re-wraps the keychain; every gatekeeper token is revoked and replaced
    /// by `gatekeeper_tokens`.
    Rekey {
        shares: u8,
        threshold: u8,
        #[serde(with = "serde_bytes")]
        wrapped_root: Vec<u8>,
        #[serde(with = "serde_bytes")]
        keychain: Vec<u8>,
        gatekeeper_tokens: Vec<NewGatekeeperToken>,
    },
    /// Store new gatekeeper tokens.
    MintGatekeeperTokens { tokens: Vec<NewGatekeeperToken> },
    /// Record the use of a gatekeeper token and store its replacement.
    UseGatekeeperToken {
        id: [u8; 32],
        grace_ms: u64,
        #[serde(with = "serde_bytes")]
        replacement_wrapped: Vec<u8>,
        replacement: NewGatekeeperToken,
    },
    /// Delete a gatekeeper token.
    RevokeGatekeeperToken { id: [u8; 32] },
    /// Replace the access key's hash.
    RotateAccessKey { hash: [u8; 32] },
    /// Store a new access token.
    CreateAccessToken {
        id: [u8; 32],
        namespace: String,
        policies: Vec<String>,
        ttl_ms: u64,
        max_ttl_ms: u64,
    },
    /// Extend an access token by `ttl_ms` from the entry time (capped at its
    /// maximum lifetime).
    RenewAccessToken { id: [u8; 32], ttl_ms: u64 },
    /// Delete an access token.
    RevokeAccessToken { id: [u8; 32] },
    /// Create or replace a policy, on behalf of `token`.
    PutPolicy {
        token: [u8; 32],
        namespace: String,
        name: String,
        policy: Policy,
    },
    /// Delete a policy, on behalf of `token`.
    DeletePolicy {
        token: [u8; 32],
        namespace: String,
        name: String,
    },
    /// Write a secret's ciphertext, on behalf of `token`. `cas`: the version
    /// the caller expects (0 = must not exist).
    PutSecret {
        token: [u8; 32],
        namespace: String,
        path: String,
        cas: Option<u64>,
        term: u32,
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
    },
    /// Delete a secret, on behalf of `token`.
    DeleteSecret {
        token: [u8; 32],
        namespace: String,
        path: String,
    },
    /// Remove expired access tokens and gatekeeper tokens past their grace
    /// window, as of the entry time.
    Sweep,
}

impl Command {
    /// The access token a command acts for, and the namespace it acts in.
    /// Apply checks, at the entry's time and before anything else, that such
    /// a token is live and locked to that namespace, and hands its ACL to
    /// the command (invariant 5: authorization is decided twice).
    ///
    /// `None` for commands whose proof never enters the log (the gatekeeper
    /// key: `RotateKeychain`, `Rekey`, `MintGatekeeperTokens`,
    /// `RevokeGatekeeperToken`, `RotateAccessKey`; the access key:
    /// `CreateAccessToken`), for `Init` and the leader's `Sweep`, and for
    /// commands about a token's own record, which check it themselves
    /// (`UseGatekeeperToken`, `RenewAccessToken`, `RevokeAccessToken`).
    /// The match names every variant: a new command must choose.
    pub fn acting_for(&self) -> Option<(&[u8; 32], &str)> {
        match self {
            Command::PutPolicy {
                token, namespace, ..
            }
            | Command::DeletePolicy {
                token, namespace, ..
            }
            | Command::PutSecret {
                token, namespace, ..
            }
            | Command::DeleteSecret {
                token, namespace, ..
            } => Some((token, namespace)),
            Command::Init { .. }
            | Command::RotateKeychain { .. }
            | Command::Rekey { .. }
            | Command::MintGatekeeperTokens { .. }
            | Command::UseGatekeeperToken { .. }
            | Command::RevokeGatekeeperToken { .. }
            | Command::RotateAccessKey { .. }
            | Command::CreateAccessToken { .. }
            | Command::RenewAccessToken { .. }
            | Command::RevokeAccessToken { .. }
            | Command::Sweep => None,
        }
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Init {
                shares, threshold, ..
            } => write!(f, "Init({threshold} of {shares})"),
            Command::RotateKeychain { term, .. } => write!(f, "RotateKeychain(term {term})"),
            Command::Rekey {
                shares, threshold, ..
            } => write!(f, "Rekey({threshold} of {shares})"),
            Command::MintGatekeeperTokens { tokens } => {
                write!(f, "MintGatekeeperTokens({})", tokens.len())
            }
            Command::UseGatekeeperToken { id, .. } => {
                write!(f, "UseGatekeeperToken({})", short(id))
            }
            Command::RevokeGatekeeperToken { id } => {
                write!(f, "RevokeGatekeeperToken({})", short(id))
            }
            Command::RotateAccessKey { .. } => write!(f, "RotateAccessKey"),
            Command::CreateAccessToken { id, namespace, .. } => {
                write!(f, "CreateAccessToken({}, ns {namespace})", short(id))
            }
            Command::RenewAccessToken { id, .. } => write!(f, "RenewAccessToken({})", short(id)),
            Command::RevokeAccessToken { id } => write!(f, "RevokeAccessToken({})", short(id)),
            Command::PutPolicy {
                namespace, name, ..
            } => write!(f, "PutPolicy({namespace}/{name})"),
            Command::DeletePolicy {
                namespace, name, ..
            } => write!(f, "DeletePolicy({namespace}/{name})"),
            Command::PutSecret {
                namespace,
                path,
                term,
                ..
            } => {
                write!(f, "PutSecret({namespace}/{path}, term {term})")
            }
            Command::DeleteSecret {
                namespace, path, ..
            } => write!(f, "DeleteSecret({namespace}/{path})"),
            Command::Sweep => write!(f, "Sweep"),
        }
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What a successfully applied command produced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to report.
    Done,
    /// The new version of a written secret.
    Version(u64),
    /// The new expiry of a renewed token (ms since the epoch).
    ExpiresAt(u64),
    /// Whether a delete found something to delete.
    Deleted(bool),
    /// How many records a sweep removed, and whether more remain.
    Swept { removed: usize, more: bool },
}

/// Why apply refused a command; every replica refuses the same commands.
/// Travels back to the proposer inside the Raft response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `Init` on an initialised store.
    AlreadyInitialized,
    /// Anything but `Init` on an uninitialised store.
    NotInitialized,
    /// The access token is unknown or expired at the entry's time.
    TokenInvalid,
    /// The token's policies do not allow it.
    Forbidden(String),
    /// Check-and-set found another version.
    CasMismatch {
        /// Expected.
        expected: u64,
        /// Found (0 = absent).
        actual: u64,
    },
    /// The target does not exist.
    NotFound,
    /// The gatekeeper token was already used or revoked.
    GatekeeperTokenInvalid,
    /// Too many gatekeeper tokens would exist.
    TooManyGatekeeperTokens,
    /// The idempotency key was used within its window for another request.
    IdempotencyKeyReused,
}

/// The outcome of applying one request, as returned through the log.
pub type Response = Result<Applied, Rejection>;

/// The outcomes of one log entry: one per request of its [`Batch`], in
/// order (none for a blank or membership entry).
pub type Responses = Vec<Response>;

#[cfg(test)]
mod tests {
    use super::*;
    use bincode::Options;

    /// `Command` as releases before `serde_bytes` encoded it: the same
    /// variant index for `PutSecret`, its ciphertext a plain `Vec<u8>`.
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum PlainCommand {
        V0,
        V1,
        V2,
        V3,
        V4,
        V5,
        V6,
        V7,
        V8,
        V9,
        V10,
        V11,
        PutSecret {
            token: [u8; 32],
            namespace: String,
            path: String,
            cas: Option<u64>,
            term: u32,
            ciphertext: Vec<u8>,
        },
    }

    #[test]
    fn a_put_encodes_byte_for_byte_as_before_serde_bytes() {
        let opts = bincode::DefaultOptions::new();
        // Lengths either side of bincode's one-byte varint limit (250).
        for len in [0, 1, 250, 251, 300, 65_536] {
            let ciphertext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let new = Command::PutSecret {
                token: [7; 32],
                namespace: "team-a".into(),
                path: "db/password".into(),
                cas: Some(4),
                term: 2,
                ciphertext: ciphertext.clone(),
            };
            let old = PlainCommand::PutSecret {
                token: [7; 32],
                namespace: "team-a".into(),
                path: "db/password".into(),
                cas: Some(4),
                term: 2,
                ciphertext: ciphertext.clone(),
            };
            let bytes = opts.serialize(&old).unwrap();
            assert_eq!(opts.serialize(&new).unwrap(), bytes, "length {len}");
            match opts.deserialize::<Command>(&bytes).unwrap() {
                Command::PutSecret {
                    ciphertext: read, ..
                } => assert_eq!(read, ciphertext),
                other => panic!("decoded {other}"),
            }
        }
    }
}
