//! Who is calling: the [`Principal`] of every operation.
//!
//! Invariant: a principal holds no secret. An access token is known by its
//! id (the SHA-256 the store keeps) and its record; a credential presented
//! in a body (the access key, a gatekeeper token, unseal keys) is named by
//! its kind only, and the operation that consumes it proves it. The audit
//! log names a principal by [`Principal::kind`] and an HMAC of the secret
//! it presented, never the secret.
//!
//! This module is a leaf (it imports `acl`, `keyspace` and the command's `Actor`
//! only), so the service layer can take a principal without importing the
//! front door that makes it.

use crate::acl::{Acl, Denial};
use crate::keyspace::AccessTokenRecord;
use crate::state::command::Actor;

/// Whoever calls an operation. A new kind of caller (a Kubernetes service
/// account's login, a plugin socket's peer) is a new variant here, and each
/// `match` on it (the audit record, the [`Actor`] a command carries, which
/// apply checks) must decide
/// what it may do.
#[derive(Debug)]
pub enum Principal {
    /// No credential: status, health, init and unseal progress.
    Anonymous,
    /// A live access token, authenticated by the front door.
    AccessToken(TokenHolder),
    /// Whoever presents the access key (login); the operation checks it.
    AccessKey,
    /// Whoever presents a gatekeeper token (seal, unseal, rotate, snapshot,
    /// access-key rotation, gatekeeper-token renew and revoke); the
    /// operation checks it.
    GatekeeperToken,
    /// Holders of unseal keys (unseal, rekey, gatekeeper-token management);
    /// the operation checks them.
    UnsealKeys,
}

impl Principal {
    /// The kind, as the audit log and metrics name it (a fixed set).
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::AccessToken(_) => "access_token",
            Principal::AccessKey => "access_key",
            Principal::GatekeeperToken => "gatekeeper_token",
            Principal::UnsealKeys => "unseal_keys",
        }
    }

    /// The authenticated access token, if that is who calls.
    pub fn token_holder(&self) -> Option<&TokenHolder> {
        match self {
            Principal::AccessToken(holder) => Some(holder),
            _ => None,
        }
    }

    /// The namespace the principal is locked to, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.token_holder().map(|h| h.record.namespace.as_str())
    }
}

/// An access token the front door authenticated: live at the time of the
/// check, with its record and the ACL of its policies.
pub struct TokenHolder {
    /// The token's id: the SHA-256 of the token, as the store keys it.
    pub id: [u8; 32],
    /// The token's record (namespace, policies, lifetimes).
    pub record: AccessTokenRecord,
    /// The union of the token's policies, in its namespace.
    pub acl: Acl,
}

impl std::fmt::Debug for TokenHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenHolder({}…, {})",
            hex::encode(&self.id[..4]),
            self.record.namespace
        )
    }
}

impl TokenHolder {
    /// The reference a replicated command carries, so apply authorizes it
    /// again against the token state in the log (DESIGN invariant 5).
    pub fn actor(&self) -> Actor {
        Actor::AccessToken { id: self.id }
    }

    /// The refusal of `action` on `path` in `namespace` to this token: the
    /// one wording of permission errors ([`Denial`]).
    pub fn denial(&self, action: &str, namespace: &str, path: &str) -> Denial {
        Denial::new(
            action,
            namespace,
            path,
            &self.record.namespace,
            &self.record.policies,
        )
    }
}
