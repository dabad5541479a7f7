//! What a ServiceAccount login proves, and how it fails.
//!
//! Invariant: every way a presented token can fail is a [`Check`] from a
//! fixed set, and the client sees the same answer whichever one failed
//! (no oracle); only the audit record names the check.

/// One check a ServiceAccount login runs. The client is told only that the
/// login failed; the audit record names the check ([`Check::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// Not a JWT: not three base64url parts, bad JSON, missing claims, too
    /// long.
    Malformed,
    /// The header's `alg` is not an asymmetric algorithm kstash accepts
    /// (`none`, HS256 and kin are refused), or does not fit the key.
    Algorithm,
    /// No key of the cluster's key set has the header's `kid`.
    KeyId,
    /// The signature does not verify under the cluster's key.
    Signature,
    /// `iss` is not the configured (or discovered) issuer.
    Issuer,
    /// `aud` does not contain the role's audience.
    Audience,
    /// `exp` has passed (beyond the leeway), or the token has no `exp` (a
    /// legacy, never-expiring ServiceAccount token).
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// `sub` is not `system:serviceaccount:<namespace>:<name>`.
    Subject,
    /// The `kubernetes.io` claims name another namespace or service account
    /// than `sub`.
    ClaimsMismatch,
    /// TokenReview answered `authenticated: false` (the pod or the service
    /// account is gone, or the token was revoked).
    TokenReview,
    /// TokenReview authenticated another user than the token's `sub`, or
    /// not for the role's audience.
    TokenReviewMismatch,
    /// The role does not exist in the namespace.
    RoleNotFound,
    /// The role does not bind this service account.
    NotBound,
}

impl Check {
    /// Every check, in declaration order.
    pub const ALL: [Check; 15] = [
        Check::Malformed,
        Check::Algorithm,
        Check::KeyId,
        Check::Signature,
        Check::Issuer,
        Check::Audience,
        Check::Expired,
        Check::NotYetValid,
        Check::IssuedInFuture,
        Check::Subject,
        Check::ClaimsMismatch,
        Check::TokenReview,
        Check::TokenReviewMismatch,
        Check::RoleNotFound,
        Check::NotBound,
    ];

    /// The name the audit record gives (a fixed set).
    pub fn name(self) -> &'static str {
        match self {
            Check::Malformed => "malformed",
            Check::Algorithm => "algorithm",
            Check::KeyId => "key_id",
            Check::Signature => "signature",
            Check::Issuer => "issuer",
            Check::Audience => "audience",
            Check::Expired => "expired",
            Check::NotYetValid => "not_yet_valid",
            Check::IssuedInFuture => "issued_in_future",
            Check::Subject => "subject",
            Check::ClaimsMismatch => "claims_mismatch",
            Check::TokenReview => "token_review",
            Check::TokenReviewMismatch => "token_review_mismatch",
            Check::RoleNotFound => "role_not_found",
            Check::NotBound => "not_bound",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a ServiceAccount token could not be turned into an identity.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The token is not accepted: `0` says which check failed (for the
    /// audit record only; the client gets one answer for all).
    #[error("the service account token was refused ({0})")]
    Refused(Check),
    /// kstash cannot check tokens right now: the cluster's keys or
    /// TokenReview cannot be reached, or answered something unusable. The
    /// message is for the operator (what failed, where); it holds nothing of
    /// the token. Nothing wrong was cached.
    #[error("{0}")]
    Unavailable(String),
    /// This node has no way to check tokens: no issuer keys and no
    /// TokenReview configured. The message says what to set.
    #[error("{0}")]
    NotConfigured(String),
}

/// A Kubernetes ServiceAccount, as a verified token proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The Kubernetes namespace of the service account.
    pub namespace: String,
    /// The service account's name.
    pub name: String,
    /// The service account's uid, when the token names it.
    pub uid: Option<String>,
    /// The pod the token is bound to, when it is bound to one.
    pub pod: Option<String>,
    /// When the token expires (ms since the epoch): a kstash token minted
    /// from it never outlives it.
    pub expires_at_ms: u64,
}

impl ServiceAccount {
    /// `system:serviceaccount:<namespace>:<name>`, as Kubernetes names it.
    pub fn subject(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}
