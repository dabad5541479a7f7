//! Who is calling: the [`Principal`] of every operation.
//!
//! Invariant: a principal holds no secret. An access token is known by its
//! id (the SHA-256 the store keeps) and its record; a credential presented
//! in a body (the access key, a gatekeeper token, unseal keys) is named by
//! its kind only, and the operation that consumes it proves it. The audit
//! log names a principal by [`Principal::kind`] and an HMAC of the secret
//! it presented, never the secret.
//!
//! The access token's part, [`TokenHolder`], is declared by the service
//! layer (which authenticates it and takes it in every operation), so the
//! service never imports the front door that calls it.

pub use crate::service::TokenHolder;

/// Whoever calls an operation. A new kind of caller (a Kubernetes service
/// account's login, a plugin socket's peer) is a new variant here, and each
/// `match` on it (the audit record, the [`crate::state::command::Actor`] a command carries, which
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
    /// Whoever presents a Kubernetes ServiceAccount token (login); the
    /// operation verifies it and names the service account it proves.
    ServiceAccountToken,
    /// The peer of this node's KMS v2 socket (the host's kube-apiserver):
    /// it presents nothing, the socket's file permissions are the boundary,
    /// and it may use exactly one named key, the one the node serves there.
    KmsSocket {
        /// The key's namespace.
        namespace: String,
        /// The key's name.
        key: String,
    },
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
            Principal::ServiceAccountToken => "service_account_token",
            Principal::KmsSocket { .. } => "kms_socket",
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
        match self {
            Principal::KmsSocket { namespace, .. } => Some(namespace),
            _ => self.token_holder().map(|h| h.record.namespace.as_str()),
        }
    }
}
