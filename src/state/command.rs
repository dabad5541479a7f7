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
use crate::keyspace::KubernetesRole;

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

/// A client's idempotency key as the log carries it: a hash and a keyed
/// digest, never the key's text, the value or a plain hash of the value.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// SHA-256 of (the caller's token id, the client's key): where the
    /// outcome is kept, so one caller cannot see or block another's keys.
    pub id: [u8; 32],
    /// Keyed digest (HMAC-SHA256 under a key derived from the keychain,
    /// `Barrier::keyed_digest`) of `id` and what the request does: kind,
    /// namespace, target, CAS, policy rules, the secret's value. The same
    /// key sent with another request, another value included, is refused;
    /// without the keychain the digest says nothing about the value.
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

/// The first use of a gatekeeper token: how long the used token still
/// works, and its replacement (stored, and sealed under the used token).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct FirstUse {
    /// The grace window, from the entry time.
    pub grace_ms: u64,
    /// The replacement sealed under HKDF(used token).
    #[serde(with = "serde_bytes")]
    pub replacement_wrapped: Vec<u8>,
    /// The replacement's record.
    pub replacement: NewGatekeeperToken,
}

impl std::fmt::Debug for FirstUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirstUse(replacement {:?})", self.replacement)
    }
}

/// An operation run with a gatekeeper token whose retry inside the token's
/// grace window must not run it again, with what it fixed before it ran:
/// the retry answers that. (Seal, unseal, `raft remove` of one id, snapshot
/// save and renew give the same result when run again, so they are not
/// recorded.)
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub enum GatekeeperOperation {
    /// Rotate the keychain to `term`: the active term plus one when the
    /// use was recorded. The rotation itself is a `RotateKeychain` that the
    /// service proposes afterwards, and again on a retry only while the
    /// keychain is still below `term`.
    Rotate {
        /// The term the rotation brings the keychain to.
        term: u32,
    },
    /// Rotate the access key: the new key's hash, installed by the same
    /// command, and the new key sealed under HKDF(used token)
    /// (`gatekeeper::wrap_access_key`) so a retry can hand it out again.
    RotateAccessKey {
        /// SHA-256 of the new access key.
        hash: [u8; 32],
        /// The new access key, sealed under the used token.
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
}

impl GatekeeperOperation {
    /// Whether `other` is the same operation (kind and parameters; the
    /// recorded outcome aside). Neither kind takes parameters.
    pub fn same_as(&self, other: &GatekeeperOperation) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl std::fmt::Display for GatekeeperOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatekeeperOperation::Rotate { term } => write!(f, "rotate to term {term}"),
            GatekeeperOperation::RotateAccessKey { .. } => write!(f, "access-key rotate"),
        }
    }
}

impl std::fmt::Debug for GatekeeperOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The first hex digits of an id, for logs.
pub fn short(id: &[u8; 32]) -> String {
    hex::encode(&id[..6])
}

/// Who a replicated command acts for: a reference to the principal the
/// guard authenticated, which apply authorizes again (DESIGN invariant 5).
/// `State::acting_at` has one arm per kind.
///
/// Log format: an `AccessToken` is written exactly as the `token: [u8; 32]`
/// field it replaced (its 32 bytes, no variant tag), so the logs, snapshots
/// and peers of earlier releases read unchanged (the pinned encodings in
/// this file's tests are the proof). bincode is not self-describing: a
/// reader cannot tell from the bytes which kind of principal follows, so a
/// new kind of acting principal needs a new log format version (a tagged
/// encoding under a new format byte, or new `Command` variants appended at
/// the end), not just a new variant here.
#[derive(Clone, PartialEq, Eq)]
pub enum Actor {
    /// An access token, by its id.
    AccessToken {
        /// SHA-256 of the access token.
        id: [u8; 32],
    },
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Actor::AccessToken { id } => id.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Actor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <[u8; 32]>::deserialize(deserializer).map(|id| Actor::AccessToken { id })
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::AccessToken { id } => write!(f, "access token {}", short(id)),
        }
    }
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::AccessToken { id } => write!(f, "AccessToken({})", short(id)),
        }
    }
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
    /// Create or replace a policy, on behalf of `by`.
    PutPolicy {
        by: Actor,
        namespace: String,
        name: String,
        policy: Policy,
    },
    /// Delete a policy, on behalf of `by`.
    DeletePolicy {
        by: Actor,
        namespace: String,
        name: String,
    },
    /// Write a secret's ciphertext, on behalf of `by`. `cas`: the version
    /// the caller expects (0 = must not exist).
    PutSecret {
        by: Actor,
        namespace: String,
        path: String,
        cas: Option<u64>,
        term: u32,
        #[serde(with = "serde_bytes")]
        ciphertext: Vec<u8>,
    },
    /// Delete a secret, on behalf of `by`.
    DeleteSecret {
        by: Actor,
        namespace: String,
        path: String,
    },
    /// Remove expired access tokens and gatekeeper tokens past their grace
    /// window, as of the entry time.
    Sweep,
    /// Reserve a block of up to `count` encryptions under key term `term`
    /// for the proposing node's barrier (invariant 9, cluster-wide). Apply
    /// grants only for the active term and never past `limit` (the
    /// proposer's configured limit, capped at 2^32) reserved in total;
    /// it may grant fewer than asked (the term's last ones).
    ///
    /// Appended last: the variant index is the log format.
    ReserveEncryptions { term: u32, count: u64, limit: u64 },
    /// Use a gatekeeper token for `operation` and record it with the
    /// token, so a retry of the same operation inside the grace window gets
    /// the first result instead of running again. `first`: the token's
    /// first use (refused when it is already used, as `UseGatekeeperToken`);
    /// `None`: another operation inside its grace window (refused when the
    /// token is unused, past its window, or already used for this
    /// operation). An access-key rotation is installed by this command.
    ///
    /// Appended last: the variant index is the log format.
    UseGatekeeperTokenFor {
        id: [u8; 32],
        first: Option<FirstUse>,
        operation: GatekeeperOperation,
    },
    /// Create or replace a Kubernetes login role, on behalf of `by` (an
    /// admin token of `namespace`, as for `PutPolicy`).
    ///
    /// Appended last: the variant index is the log format.
    PutKubernetesRole {
        by: Actor,
        namespace: String,
        name: String,
        role: KubernetesRole,
    },
    /// Delete a Kubernetes login role, on behalf of `by` (as
    /// `DeletePolicy`).
    ///
    /// Appended last: the variant index is the log format.
    DeleteKubernetesRole {
        by: Actor,
        namespace: String,
        name: String,
    },
    /// Store the access token of a ServiceAccount login: `service_account`
    /// (`<k8s-namespace>/<name>`, as its verified token proved it) logs in
    /// to `namespace` through `role`. Apply checks the role again as of the
    /// entry: it must exist and bind the service account; the token gets
    /// the role's policies as stored then, and expires at the earliest of
    /// the role's ttl, `not_after_ms` (the ServiceAccount token's expiry)
    /// and `max_ttl_ms`, all from the entry time; it is never renewable
    /// past that.
    ///
    /// Appended last: the variant index is the log format.
    CreateKubernetesToken {
        id: [u8; 32],
        namespace: String,
        role: String,
        service_account: String,
        not_after_ms: u64,
        max_ttl_ms: u64,
    },
    /// Create the named encryption key `namespace/name` with its version
    /// 1, on behalf of `by` (an admin token of `namespace`). `uid` and the
    /// key material were made before proposing (invariant 4); the material
    /// is barrier ciphertext under `keyspace::named_key_material_aad`.
    /// Refused when the key exists.
    ///
    /// Appended last: the variant index is the log format.
    CreateNamedKey {
        by: Actor,
        namespace: String,
        name: String,
        uid: [u8; crate::keys::UID_BYTES],
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
    /// Add `version` to the named key `namespace/name`, on behalf of `by`
    /// (an admin token of `namespace`). Refused unless `version` follows
    /// the key's latest one: two rotations at once give one new version,
    /// not two with the second replacing the first's material.
    ///
    /// Appended last: the variant index is the log format.
    RotateNamedKey {
        by: Actor,
        namespace: String,
        name: String,
        version: u32,
        #[serde(with = "serde_bytes")]
        wrapped: Vec<u8>,
    },
    /// Set the oldest version of `namespace/name` that still decrypts, on
    /// behalf of `by` (an admin token of `namespace`): 1 to the latest
    /// version, and never lower than it is (versions retired stay
    /// retired: their ciphertexts may have been thrown away as unusable).
    ///
    /// Appended last: the variant index is the log format.
    ConfigureNamedKey {
        by: Actor,
        namespace: String,
        name: String,
        min_decryption_version: u32,
    },
    /// Reserve a block of up to `count` encryptions under `version` of the
    /// named key `namespace/name` (whose uid must be `uid`) for the
    /// proposing node, as `ReserveEncryptions` does for barrier terms:
    /// only for the key's latest version, never past `limit` (capped at
    /// 2^32) in total.
    ///
    /// Appended last: the variant index is the log format.
    ReserveKeyEncryptions {
        namespace: String,
        name: String,
        uid: [u8; crate::keys::UID_BYTES],
        version: u32,
        count: u64,
        limit: u64,
    },
}

impl Command {
    /// The principal a command acts for, and the namespace it acts in.
    /// Apply checks, at the entry's time and before anything else, that
    /// such a principal is live and locked to that namespace (for an access
    /// token: its record), and hands its ACL to the command (invariant 5:
    /// authorization is decided twice).
    ///
    /// `None` for commands whose proof never enters the log (the gatekeeper
    /// key: `RotateKeychain`, `Rekey`, `MintGatekeeperTokens`,
    /// `RevokeGatekeeperToken`, `RotateAccessKey`; the access key:
    /// `CreateAccessToken`; an unsealed barrier: `ReserveEncryptions`; a
    /// verified ServiceAccount token: `CreateKubernetesToken`, which acts
    /// for no kstash principal (it makes one) and instead checks its role
    /// again at apply: the role must still exist and bind the service
    /// account, and its policies as of the entry are the token's), for
    /// `Init` and the leader's `Sweep`, and for
    /// commands about a token's own record, which check it themselves
    /// (`UseGatekeeperToken`, `UseGatekeeperTokenFor`, `RenewAccessToken`,
    /// `RevokeAccessToken`).
    /// The match names every variant: a new command must choose.
    pub fn acting_for(&self) -> Option<(&Actor, &str)> {
        match self {
            Command::PutPolicy { by, namespace, .. }
            | Command::DeletePolicy { by, namespace, .. }
            | Command::PutSecret { by, namespace, .. }
            | Command::DeleteSecret { by, namespace, .. }
            | Command::PutKubernetesRole { by, namespace, .. }
            | Command::DeleteKubernetesRole { by, namespace, .. }
            | Command::CreateNamedKey { by, namespace, .. }
            | Command::RotateNamedKey { by, namespace, .. }
            | Command::ConfigureNamedKey { by, namespace, .. } => Some((by, namespace)),
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
            | Command::Sweep
            | Command::ReserveEncryptions { .. }
            | Command::UseGatekeeperTokenFor { .. }
            | Command::CreateKubernetesToken { .. }
            | Command::ReserveKeyEncryptions { .. } => None,
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
            Command::ReserveEncryptions { term, count, limit } => {
                write!(
                    f,
                    "ReserveEncryptions(term {term}, {count} of limit {limit})"
                )
            }
            Command::UseGatekeeperTokenFor { id, operation, .. } => {
                write!(f, "UseGatekeeperTokenFor({}, {operation})", short(id))
            }
            Command::PutKubernetesRole {
                namespace, name, ..
            } => write!(f, "PutKubernetesRole({namespace}/{name})"),
            Command::DeleteKubernetesRole {
                namespace, name, ..
            } => write!(f, "DeleteKubernetesRole({namespace}/{name})"),
            Command::CreateKubernetesToken {
                id,
                namespace,
                role,
                service_account,
                ..
            } => write!(
                f,
                "CreateKubernetesToken({}, ns {namespace}, role {role}, {service_account})",
                short(id)
            ),
            Command::CreateNamedKey {
                namespace, name, ..
            } => write!(f, "CreateNamedKey({namespace}/{name})"),
            Command::RotateNamedKey {
                namespace,
                name,
                version,
                ..
            } => write!(f, "RotateNamedKey({namespace}/{name}, v{version})"),
            Command::ConfigureNamedKey {
                namespace,
                name,
                min_decryption_version,
                ..
            } => write!(
                f,
                "ConfigureNamedKey({namespace}/{name}, min v{min_decryption_version})"
            ),
            Command::ReserveKeyEncryptions {
                namespace,
                name,
                version,
                count,
                limit,
                ..
            } => write!(
                f,
                "ReserveKeyEncryptions({namespace}/{name} v{version}, {count} of limit {limit})"
            ),
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
    /// Encryptions reserved under a term: positions `start .. start +
    /// count` of the term's cluster-wide count (`count` ≥ 1).
    Reserved { start: u64, count: u64 },
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
    /// The key term has no encryptions left to reserve under the limit.
    TermExhausted {
        /// The exhausted term.
        term: u32,
    },
    /// The command names a key term that is not (reservation) or does not
    /// follow (rotation) the active term: another node rotated first.
    StaleTerm {
        /// The term the command named.
        term: u32,
        /// The active term.
        active: u32,
    },
    /// A ServiceAccount login names a role its namespace does not have
    /// (deleted since the login looked).
    KubernetesRoleNotFound,
    /// A ServiceAccount login's role does not bind its service account
    /// (changed since the login looked).
    KubernetesRoleNotBound,
    /// A ServiceAccount login's token would expire at once: the
    /// ServiceAccount token expired before the entry.
    KubernetesTokenExpired,
    /// A named key of that name exists already.
    NamedKeyExists,
    /// A rotation or reservation names a version that is not the key's
    /// next (rotation) or latest (reservation) one, or a uid that is not
    /// the key's: another node changed it first.
    StaleKeyVersion {
        /// The key's latest version.
        latest: u32,
    },
    /// The key version has no encryptions left to reserve under the limit.
    NamedKeyExhausted {
        /// The exhausted version.
        version: u32,
    },
    /// A key change the key's state does not allow (what, in words).
    NamedKeyRefused(String),
}

/// The outcome of applying one request, as returned through the log.
pub type Response = Result<Applied, Rejection>;

/// The outcomes of one log entry: one per request of its [`Batch`], in
/// order (none for a blank or membership entry).
pub type Responses = Vec<Response>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::acl::{Capability, Rule};
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
                by: Actor::AccessToken { id: [7; 32] },
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

    /// One command of every variant with the index bincode writes for it.
    /// The index is the log format: a new variant goes at the end, and
    /// this list (kept complete by the `match`) gains it there.
    /// How many `Command` variants there are; [`variant_index`] names each.
    pub(crate) const VARIANTS: usize = 24;

    /// A number per variant. The match names every variant, so a new
    /// command does not compile here until it gets a number, and then
    /// `one_of_each` must carry a sample of it.
    pub(crate) fn variant_index(c: &Command) -> usize {
        match c {
            Command::Init { .. } => 0,
            Command::RotateKeychain { .. } => 1,
            Command::Rekey { .. } => 2,
            Command::MintGatekeeperTokens { .. } => 3,
            Command::UseGatekeeperToken { .. } => 4,
            Command::RevokeGatekeeperToken { .. } => 5,
            Command::RotateAccessKey { .. } => 6,
            Command::CreateAccessToken { .. } => 7,
            Command::RenewAccessToken { .. } => 8,
            Command::RevokeAccessToken { .. } => 9,
            Command::PutPolicy { .. } => 10,
            Command::DeletePolicy { .. } => 11,
            Command::PutSecret { .. } => 12,
            Command::DeleteSecret { .. } => 13,
            Command::Sweep => 14,
            Command::ReserveEncryptions { .. } => 15,
            Command::UseGatekeeperTokenFor { .. } => 16,
            Command::PutKubernetesRole { .. } => 17,
            Command::DeleteKubernetesRole { .. } => 18,
            Command::CreateKubernetesToken { .. } => 19,
            Command::CreateNamedKey { .. } => 20,
            Command::RotateNamedKey { .. } => 21,
            Command::ConfigureNamedKey { .. } => 22,
            Command::ReserveKeyEncryptions { .. } => 23,
        }
    }

    /// One sample of every command, in variant order (checked below); those
    /// that act for an access token act for `token` in `ns`, on the secret
    /// `app/x`, the policy `p` and the Kubernetes role `r` (the state tests
    /// apply them). Fields of
    /// one type hold different values, so the pinned encodings
    /// ([`GOLDEN`]) also catch two fields swapped.
    pub(crate) fn one_of_each(token: [u8; 32], ns: &str) -> Vec<Command> {
        let gk = |b: u8| NewGatekeeperToken {
            id: [b; 32],
            wrapped_key: vec![b],
        };
        vec![
            Command::Init {
                shares: 3,
                threshold: 2,
                wrapped_root: vec![1],
                keychain: vec![2],
                access_key_hash: [3; 32],
                gatekeeper_tokens: vec![gk(39)],
            },
            Command::RotateKeychain {
                term: 2,
                keychain: vec![2],
            },
            Command::Rekey {
                shares: 5,
                threshold: 4,
                wrapped_root: vec![1],
                keychain: vec![2],
                gatekeeper_tokens: vec![gk(40)],
            },
            Command::MintGatekeeperTokens {
                tokens: vec![gk(41)],
            },
            Command::UseGatekeeperToken {
                id: [41; 32],
                grace_ms: 10,
                replacement_wrapped: vec![1],
                replacement: gk(42),
            },
            Command::RevokeGatekeeperToken { id: [42; 32] },
            Command::RotateAccessKey { hash: [4; 32] },
            Command::CreateAccessToken {
                id: [43; 32],
                namespace: ns.into(),
                policies: vec!["p".into()],
                ttl_ms: 10,
                max_ttl_ms: 20,
            },
            Command::RenewAccessToken {
                id: [43; 32],
                ttl_ms: 10,
            },
            Command::RevokeAccessToken { id: [43; 32] },
            Command::PutPolicy {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                name: "p".into(),
                policy: Policy {
                    rules: vec![Rule {
                        path: "app/*".into(),
                        capabilities: vec![Capability::Read, Capability::List],
                    }],
                },
            },
            Command::DeletePolicy {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                name: "p".into(),
            },
            Command::PutSecret {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                path: "app/x".into(),
                cas: None,
                term: 1,
                ciphertext: vec![9; 40],
            },
            Command::DeleteSecret {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                path: "app/x".into(),
            },
            Command::Sweep,
            Command::ReserveEncryptions {
                term: 1,
                count: 2,
                limit: 10,
            },
            Command::UseGatekeeperTokenFor {
                id: [44; 32],
                first: None,
                operation: GatekeeperOperation::Rotate { term: 2 },
            },
            Command::PutKubernetesRole {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                name: "r".into(),
                role: sample_role(),
            },
            Command::DeleteKubernetesRole {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                name: "r".into(),
            },
            Command::CreateKubernetesToken {
                id: [45; 32],
                namespace: ns.into(),
                role: "r".into(),
                service_account: "k8s/app".into(),
                not_after_ms: 300,
                max_ttl_ms: 400,
            },
            Command::CreateNamedKey {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                name: "k".into(),
                uid: [46; 16],
                wrapped: vec![10; 3],
            },
            Command::RotateNamedKey {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                name: "k".into(),
                version: 2,
                wrapped: vec![11; 2],
            },
            Command::ConfigureNamedKey {
                by: Actor::AccessToken { id: token },
                namespace: ns.into(),
                name: "k".into(),
                min_decryption_version: 2,
            },
            Command::ReserveKeyEncryptions {
                namespace: ns.into(),
                name: "k".into(),
                uid: [46; 16],
                version: 2,
                count: 3,
                limit: 50,
            },
        ]
    }

    /// The Kubernetes role of the samples: binds `k8s/app` and every
    /// service account of `k8s-b`, gives the policy `p` for 200 ms.
    pub(crate) fn sample_role() -> KubernetesRole {
        KubernetesRole {
            service_accounts: vec!["k8s/app".into(), "k8s-b/*".into()],
            policies: vec!["p".into()],
            ttl_ms: 200,
            audience: "aud".into(),
        }
    }

    /// The envelope sample: a [`Batch`] of two requests, the first with an
    /// idempotency key and a gatekeeper token's first use (every optional
    /// part present), the second a bare `Sweep`.
    pub(crate) fn pinned_batch() -> Batch {
        Batch {
            requests: vec![
                Request {
                    time_ms: 1_700_000_000_000,
                    command: Command::UseGatekeeperTokenFor {
                        id: [0x44; 32],
                        first: Some(FirstUse {
                            grace_ms: 300_000,
                            replacement_wrapped: vec![5, 6],
                            replacement: NewGatekeeperToken {
                                id: [0x45; 32],
                                wrapped_key: vec![7],
                            },
                        }),
                        operation: GatekeeperOperation::RotateAccessKey {
                            hash: [0x46; 32],
                            wrapped: vec![8],
                        },
                    },
                    idempotency: Some(Idempotency {
                        id: [0x11; 32],
                        fingerprint: [0x22; 32],
                    }),
                },
                Request {
                    time_ms: 1_700_000_000_001,
                    command: Command::Sweep,
                    idempotency: None,
                },
            ],
        }
    }

    /// The access token the pinned samples act for: every byte different,
    /// so its place and order show in the golden bytes.
    fn pinned_token() -> [u8; 32] {
        std::array::from_fn(|i| 0xa0 + i as u8)
    }

    /// The log format: the exact bincode bytes (`DefaultOptions`, as
    /// `keyspace::encode` writes them after its format byte) of
    /// `one_of_each(pinned_token(), "team-a")`, one per variant in variant
    /// order. Written once from the code and never regenerated: a failure
    /// here means yesterday's log would no longer read, or would read as
    /// something else. A new variant appends its sample and its bytes.
    const GOLDEN: [&str; VARIANTS] = [
        // Init(2 of 3)
        "0003020101010203030303030303030303030303030303030303030303030303030303030303030127272727272727272727272727272727272727272727272727272727272727270127",
        // RotateKeychain(term 2)
        "01020102",
        // Rekey(4 of 5)
        "020504010101020128282828282828282828282828282828282828282828282828282828282828280128",
        // MintGatekeeperTokens(1)
        "030129292929292929292929292929292929292929292929292929292929292929290129",
        // UseGatekeeperToken
        "0429292929292929292929292929292929292929292929292929292929292929290a01012a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a012a",
        // RevokeGatekeeperToken
        "052a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a",
        // RotateAccessKey
        "060404040404040404040404040404040404040404040404040404040404040404",
        // CreateAccessToken
        "072b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b067465616d2d610101700a14",
        // RenewAccessToken
        "082b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b0a",
        // RevokeAccessToken
        "092b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b",
        // PutPolicy: the acting token, then namespace, name, policy
        // (one rule: path, capabilities read and list)
        "0aa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d61017001056170702f2a020004",
        // DeletePolicy
        "0ba0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d610170",
        // PutSecret: the acting token, namespace, path, no CAS, term 1,
        // 40 bytes of ciphertext
        "0ca0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d61056170702f7800012809090909090909090909090909090909090909090909090909090909090909090909090909090909",
        // DeleteSecret
        "0da0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d61056170702f78",
        // Sweep
        "0e",
        // ReserveEncryptions(term 1, 2 of limit 10)
        "0f01020a",
        // UseGatekeeperTokenFor(rotate to term 2)
        "102c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c000002",
        // PutKubernetesRole: the acting token, namespace, name, role (two
        // service accounts, one policy, ttl 200 ms, audience)
        "11a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d61017202076b38732f617070076b38732d622f2a010170c803617564",
        // DeleteKubernetesRole
        "12a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d610172",
        // CreateKubernetesToken: id, namespace, role, service account,
        // not after 300, max ttl 400 (varints: 251, u16 LE)
        "132d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d067465616d2d610172076b38732f617070fb2c01fb9001",
        // CreateNamedKey: the acting token, namespace, name, uid, wrapped
        "14a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d61016b2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e030a0a0a",
        // RotateNamedKey: the acting token, namespace, name, version 2,
        // wrapped
        "15a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d61016b02020b0b",
        // ConfigureNamedKey: the acting token, namespace, name, min 2
        "16a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf067465616d2d61016b02",
        // ReserveKeyEncryptions: namespace, name, uid, version 2, 3 of
        // limit 50
        "17067465616d2d61016b2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e020332",
    ];

    /// The log entry's payload, [`pinned_batch`], pinned the same way: the
    /// request count; per request its time, command and idempotency key.
    const GOLDEN_BATCH: &str = "02fd0068e5cf8b01000010444444444444444444444444444444444444444444444444444444444444444401fce09304000205064545454545454545454545454545454545454545454545454545454545454545010701464646464646464646464646464646464646464646464646464646464646464601080111111111111111111111111111111111111111111111111111111111111111112222222222222222222222222222222222222222222222222222222222222222fd0168e5cf8b0100000e00";

    /// `golden` behind the log store's format byte, as a stored record.
    fn stored(golden: &str) -> Vec<u8> {
        let mut record = vec![crate::keyspace::FORMAT_V1];
        record.extend(hex::decode(golden).expect("golden is hex"));
        record
    }

    #[test]
    fn every_command_encodes_byte_for_byte_as_pinned() {
        // Steps: encode each sample as the log store does and compare with
        // its golden bytes; decode each golden record (no byte left over)
        // and check it is the same command (its encoding and its Display).
        let all = one_of_each(pinned_token(), "team-a");
        assert_eq!(all.len(), GOLDEN.len(), "one golden per variant");
        for (command, golden) in all.iter().zip(GOLDEN) {
            let record = crate::keyspace::encode(command);
            assert_eq!(
                hex::encode(&record[1..]),
                golden,
                "{command}: the log format changed"
            );
            let read: Command = crate::keyspace::decode(&stored(golden))
                .unwrap_or_else(|e| panic!("{command}: golden bytes do not decode: {e}"));
            assert_eq!(crate::keyspace::encode(&read), record, "{command}");
            assert_eq!(read.to_string(), command.to_string());
        }
    }

    #[test]
    fn the_batch_envelope_encodes_byte_for_byte_as_pinned() {
        let batch = pinned_batch();
        let record = crate::keyspace::encode(&batch);
        assert_eq!(hex::encode(&record[1..]), GOLDEN_BATCH);
        let read: Batch = crate::keyspace::decode(&stored(GOLDEN_BATCH)).unwrap();
        assert_eq!(crate::keyspace::encode(&read), record);
        assert_eq!(format!("{read:?}"), format!("{batch:?}"));
    }

    #[test]
    fn every_command_keeps_its_variant_index() {
        let opts = bincode::DefaultOptions::new();
        let all = one_of_each([0; 32], "ns");
        assert_eq!(all.len(), VARIANTS, "one sample per variant");
        for (index, command) in all.iter().enumerate() {
            assert_eq!(variant_index(command), index, "{command} out of order");
            let bytes = opts.serialize(command).unwrap();
            assert_eq!(usize::from(bytes[0]), index, "{command}");
        }
    }

    #[test]
    fn a_reservation_encodes_as_pinned() {
        let opts = bincode::DefaultOptions::new();
        let command = Command::ReserveEncryptions {
            term: 3,
            count: 1024,
            limit: (1 << 32) - (1 << 20),
        };
        // Variant 15; term 3; count 1024 (varint: 251, u16 LE); limit
        // 0xFFF0_0000 (varint: 252, u32 LE).
        let pinned = [15, 3, 251, 0x00, 0x04, 252, 0x00, 0x00, 0xf0, 0xff];
        assert_eq!(opts.serialize(&command).unwrap(), pinned);
        match opts.deserialize::<Command>(&pinned).unwrap() {
            Command::ReserveEncryptions { term, count, limit } => {
                assert_eq!((term, count, limit), (3, 1024, (1 << 32) - (1 << 20)))
            }
            other => panic!("decoded {other}"),
        }
        assert_eq!(
            command.to_string(),
            "ReserveEncryptions(term 3, 1024 of limit 4293918720)"
        );
    }

    #[test]
    fn a_use_for_an_operation_encodes_as_pinned_and_old_uses_still_decode() {
        let opts = bincode::DefaultOptions::new();
        let command = Command::UseGatekeeperTokenFor {
            id: [1; 32],
            first: Some(FirstUse {
                grace_ms: 300,
                replacement_wrapped: vec![5, 6],
                replacement: NewGatekeeperToken {
                    id: [2; 32],
                    wrapped_key: vec![7],
                },
            }),
            operation: GatekeeperOperation::RotateAccessKey {
                hash: [3; 32],
                wrapped: vec![8],
            },
        };
        // Variant 16; id; Some; grace 300 (varint: 251, u16 LE); the
        // replacement (2 bytes), its id and wrapped key (1 byte); operation
        // 1 (access-key rotate); hash; wrapped (1 byte).
        let mut pinned = vec![16];
        pinned.extend([1; 32]);
        pinned.extend([1, 251, 0x2c, 0x01, 2, 5, 6]);
        pinned.extend([2; 32]);
        pinned.extend([1, 7, 1]);
        pinned.extend([3; 32]);
        pinned.extend([1, 8]);
        assert_eq!(opts.serialize(&command).unwrap(), pinned);
        assert_eq!(
            command.to_string(),
            "UseGatekeeperTokenFor(010101010101, access-key rotate)"
        );
        let rotate = Command::UseGatekeeperTokenFor {
            id: [1; 32],
            first: None,
            operation: GatekeeperOperation::Rotate { term: 3 },
        };
        let mut pinned = vec![16];
        pinned.extend([1; 32]);
        pinned.extend([0, 0, 3]);
        assert_eq!(opts.serialize(&rotate).unwrap(), pinned);
        // The plain use keeps variant 4 and its fields.
        let old = Command::UseGatekeeperToken {
            id: [1; 32],
            grace_ms: 300,
            replacement_wrapped: vec![5, 6],
            replacement: NewGatekeeperToken {
                id: [2; 32],
                wrapped_key: vec![7],
            },
        };
        let mut pinned = vec![4];
        pinned.extend([1; 32]);
        pinned.extend([251, 0x2c, 0x01, 2, 5, 6]);
        pinned.extend([2; 32]);
        pinned.extend([1, 7]);
        assert_eq!(opts.serialize(&old).unwrap(), pinned);
        assert!(matches!(
            opts.deserialize::<Command>(&pinned).unwrap(),
            Command::UseGatekeeperToken { grace_ms: 300, .. }
        ));
    }

    #[test]
    fn an_actor_is_written_as_the_token_field_it_replaced_and_printed_short() {
        // Steps: an access-token actor encodes as its 32 bytes alone (the
        // old `token: [u8; 32]` field, no tag) and decodes back; its Debug
        // and Display, and those of a command acting for it, show only the
        // short prefix.
        let id = pinned_token();
        let by = Actor::AccessToken { id };
        let opts = bincode::DefaultOptions::new();
        assert_eq!(opts.serialize(&by).unwrap(), id);
        assert_eq!(opts.deserialize::<Actor>(&id).unwrap(), by);
        assert_eq!(format!("{by:?}"), "AccessToken(a0a1a2a3a4a5)");
        assert_eq!(by.to_string(), "access token a0a1a2a3a4a5");
        let full = hex::encode(&id[..7]);
        for command in one_of_each(id, "team-a") {
            for shown in [command.to_string(), format!("{command:?}")] {
                assert!(!shown.contains(&full), "{shown} shows the token id");
            }
        }
    }

    #[test]
    fn new_outcomes_are_appended() {
        let opts = bincode::DefaultOptions::new();
        let reserved = Applied::Reserved { start: 0, count: 1 };
        assert_eq!(opts.serialize(&reserved).unwrap()[0], 5);
        let exhausted = Rejection::TermExhausted { term: 1 };
        assert_eq!(opts.serialize(&exhausted).unwrap()[0], 9);
        let stale = Rejection::StaleTerm { term: 1, active: 2 };
        assert_eq!(opts.serialize(&stale).unwrap()[0], 10);
        // Kept in idempotency records and sent back over the cluster port:
        // the old indexes stay, the login's refusals follow them.
        for (rejection, index) in [
            (Rejection::KubernetesRoleNotFound, 11),
            (Rejection::KubernetesRoleNotBound, 12),
            (Rejection::KubernetesTokenExpired, 13),
        ] {
            assert_eq!(
                opts.serialize(&rejection).unwrap(),
                [index],
                "{rejection:?}"
            );
        }
    }
}
