//! The service layer's error: one kind per client-visible outcome. The API
//! maps each kind to one HTTP status and one gRPC code (`api::error`).

use thiserror::Error;

use crate::acl::{AclError, Denial, PathError};
use crate::auth::kubernetes::role::RoleError;
use crate::auth::kubernetes::{Check, LoginError};
use crate::barrier::BarrierError;
use crate::gatekeeper::GatekeeperError;
use crate::keys::KeyError;
use crate::raft::replica::RaftAdminError;
use crate::raft::{OutcomeUnknown, ProposeError};
use crate::state::ApplyError;
use crate::storage::StorageError;

/// What went wrong, as a client should see it. Messages never contain
/// secrets.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// Malformed or invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// Missing, unknown or expired credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// A login with a presented identity (a Kubernetes ServiceAccount
    /// token) was refused. The client sees one answer whatever check
    /// failed (no oracle); the audit record names the check.
    #[error(
        "login refused: the token is not accepted for this role (the audit log of the node \
         that answered says which check failed)"
    )]
    LoginRefused(LoginRefusal),
    /// Valid credentials that do not allow this; always worded by
    /// [`Denial`].
    #[error("{0}")]
    Forbidden(Denial),
    /// The target does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state (CAS, already initialised).
    #[error("{0}")]
    Conflict(String),
    /// Input over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The barrier is sealed: only status, health and unseal answer. The
    /// message says how to unseal.
    #[error(
        "kstash is sealed: unseal it with a threshold of unseal keys or a gatekeeper token \
         (`kstash operator unseal`, POST /v1/sys/unseal)"
    )]
    Sealed,
    /// Not initialised yet. The message says how to initialise.
    #[error(
        "kstash is not initialized: initialize it once with `kstash operator init` \
         (POST /v1/sys/init), then unseal it"
    )]
    NotInitialized,
    /// Temporarily unable to serve; retry.
    #[error("{0}")]
    Unavailable(String),
    /// A write entered, or may have entered, the Raft log and its answer
    /// was lost ([`OutcomeUnknown`]): it may or may not have been applied.
    /// The message says how to find out and how to resend safely.
    #[error(
        "{0}: read it back to check before sending it again; a kv or policy write sent with an \
         idempotency key (the `Idempotency-Key` header, gRPC `idempotency_key`) may be sent again \
         with the same key and is applied at most once"
    )]
    OutcomeUnknown(OutcomeUnknown),
    /// This node was removed from the cluster and serves no requests; the
    /// message names the removal and the fix. Nothing was done: another
    /// node of the cluster can take the same request.
    #[error("{0}")]
    Removed(String),
    /// Audit is on and no audit device could record the request, so it was
    /// refused before anything ran (fail closed). Nothing was done; the
    /// same request succeeds once the device is writable again.
    #[error(
        "the audit log cannot record this request, so it was refused and nothing was done; \
         make the audit file writable again (see this node's log)"
    )]
    AuditFailed,
    /// A stored value failed authentication: tampered with, or moved to
    /// another path or namespace.
    #[error("stored value failed its integrity check (tampered with or moved)")]
    Integrity,
    /// A bug or corrupt state; details are logged, not returned.
    #[error("internal error")]
    Internal,
}

/// Why a login was refused: the check that failed and, once the token was
/// verified, whose it was. Never shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRefusal {
    /// The check that failed.
    pub check: Check,
    /// `system:serviceaccount:<ns>:<name>` of a verified token.
    pub subject: Option<String>,
}

impl LoginRefusal {
    /// Refused by `check`, before the token proved anything.
    pub fn unverified(check: Check) -> Self {
        LoginRefusal {
            check,
            subject: None,
        }
    }
}

impl ServiceError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::Unauthorized(_) | ServiceError::LoginRefused(_) => "unauthorized",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::TooLarge(_) => "too_large",
            ServiceError::Sealed => "sealed",
            ServiceError::NotInitialized => "not_initialized",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::OutcomeUnknown(_) => "outcome_unknown",
            ServiceError::Removed(_) => "removed",
            ServiceError::AuditFailed => "audit_failed",
            ServiceError::Integrity => "integrity",
            ServiceError::Internal => "internal",
        }
    }

    /// Whether the same request may succeed later unchanged. Not after an
    /// unknown outcome: sending the write again may apply it twice (only an
    /// idempotency key makes that safe, which the caller knows, not this).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServiceError::Unavailable(_))
    }

    /// The check that refused a login, for the audit record only.
    pub fn failed_check(&self) -> Option<&'static str> {
        match self {
            ServiceError::LoginRefused(r) => Some(r.check.name()),
            _ => None,
        }
    }

    /// Who a refused login proved to be, when it got that far (a verified
    /// token that no role binds), for the audit record only.
    pub fn refused_subject(&self) -> Option<&str> {
        match self {
            ServiceError::LoginRefused(r) => r.subject.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        ServiceError::BadRequest(msg.into())
    }
}

impl From<StorageError> for ServiceError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Unavailable(m) => ServiceError::Unavailable(m),
            StorageError::Corrupt(m) => {
                tracing::error!(error = %m, "corrupt stored data");
                ServiceError::Internal
            }
        }
    }
}

impl From<PathError> for ServiceError {
    fn from(e: PathError) -> Self {
        ServiceError::BadRequest(e.to_string())
    }
}

impl From<AclError> for ServiceError {
    fn from(e: AclError) -> Self {
        ServiceError::BadRequest(e.to_string())
    }
}

impl From<RoleError> for ServiceError {
    fn from(e: RoleError) -> Self {
        ServiceError::BadRequest(e.to_string())
    }
}

/// A ServiceAccount token that was checked: refused by a check (the one
/// answer, the check for the audit record), not checkable now (503, the
/// message names what failed), or not checkable on this node (400, the
/// message names the settings).
impl From<LoginError> for ServiceError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Refused(check) => {
                ServiceError::LoginRefused(LoginRefusal::unverified(check))
            }
            LoginError::Unavailable(m) => ServiceError::Unavailable(m),
            LoginError::NotConfigured(m) => ServiceError::BadRequest(m),
        }
    }
}

impl From<GatekeeperError> for ServiceError {
    fn from(e: GatekeeperError) -> Self {
        ServiceError::BadRequest(e.to_string())
    }
}

impl From<BarrierError> for ServiceError {
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::Sealed => ServiceError::Sealed,
            BarrierError::Integrity | BarrierError::UnknownTerm(_) => ServiceError::Integrity,
            BarrierError::RotationRequired(_) | BarrierError::ReservationNeeded(_) => {
                ServiceError::Unavailable(e.to_string())
            }
            BarrierError::WrongKey => ServiceError::bad("the key does not open the keychain"),
        }
    }
}

impl From<RaftAdminError> for ServiceError {
    fn from(e: RaftAdminError) -> Self {
        match e {
            RaftAdminError::NotMember(_) => ServiceError::NotFound(e.to_string()),
            RaftAdminError::LastVoter(_) => ServiceError::Conflict(e.to_string()),
            RaftAdminError::Unavailable(m) => ServiceError::Unavailable(m),
        }
    }
}

impl From<KeyError> for ServiceError {
    fn from(e: KeyError) -> Self {
        ServiceError::BadRequest(e.to_string())
    }
}

impl From<ProposeError> for ServiceError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::NotSent(m) => ServiceError::Unavailable(m),
            ProposeError::OutcomeUnknown(unknown) => ServiceError::OutcomeUnknown(unknown),
            ProposeError::Rejected(a) => match a {
                ApplyError::AlreadyInitialized => ServiceError::Conflict(a.to_string()),
                ApplyError::NotInitialized => ServiceError::NotInitialized,
                ApplyError::TokenInvalid => ServiceError::Unauthorized(a.to_string()),
                ApplyError::Forbidden(denial) => ServiceError::Forbidden(denial),
                ApplyError::CasMismatch { .. } => ServiceError::Conflict(a.to_string()),
                ApplyError::NotFound => ServiceError::NotFound(a.to_string()),
                ApplyError::GatekeeperTokenInvalid => ServiceError::Unauthorized(a.to_string()),
                ApplyError::TooManyGatekeeperTokens => ServiceError::bad(a.to_string()),
                ApplyError::IdempotencyKeyReused => ServiceError::Conflict(a.to_string()),
                ApplyError::TermExhausted { .. } | ApplyError::StaleTerm { .. } => {
                    ServiceError::Unavailable(a.to_string())
                }
                // A ServiceAccount login whose role changed, or whose
                // token expired, between the check and apply: the same
                // one answer as any failed check (the login adds who).
                ApplyError::KubernetesRoleNotFound => {
                    ServiceError::LoginRefused(LoginRefusal::unverified(Check::RoleNotFound))
                }
                ApplyError::KubernetesRoleNotBound => {
                    ServiceError::LoginRefused(LoginRefusal::unverified(Check::NotBound))
                }
                ApplyError::KubernetesTokenExpired => {
                    ServiceError::LoginRefused(LoginRefusal::unverified(Check::Expired))
                }
                ApplyError::NamedKeyExists | ApplyError::StaleKeyVersion { .. } => {
                    ServiceError::Conflict(a.to_string())
                }
                ApplyError::NamedKeyExhausted { .. } => ServiceError::Unavailable(a.to_string()),
                ApplyError::NamedKeyRefused(m) => ServiceError::BadRequest(m),
                ApplyError::Storage(s) => s.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Denial;

    /// Every source file of the crate, with its path.
    fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn every_permission_error_is_worded_by_denial_new() {
        // A 403 holds a `Denial` (the type says so), whose field is private:
        // `Denial::new` words it, and `Denial::from_log` only carries one
        // rendered by `new` on another replica back from the log. So the
        // wording lives in one place, and nothing else writes it.
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 30, "the scan found the sources");
        for (path, text) in &files {
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            let wordings = code.matches("\"permission denied").count();
            let from_log = code.matches("Denial::from_log(").count();
            if path.ends_with("src/acl/mod.rs") {
                assert_eq!(wordings, 1, "the one wording, in Denial::new");
            } else {
                assert_eq!(wordings, 0, "{path} words a permission error itself");
            }
            if path.ends_with("src/state/mod.rs") {
                assert_eq!(from_log, 1, "{path}: only a Rejection comes back as text");
            } else {
                assert_eq!(from_log, 0, "{path} makes a Denial from text");
            }
        }
        let denial = Denial::new("read", "team-a", "app/db", "team-a", &["app-ro".into()]);
        let forbidden = ServiceError::Forbidden(denial).to_string();
        assert_eq!(
            forbidden,
            "permission denied: read on team-a/app/db is not granted by the token's policies \
             [app-ro] in namespace team-a"
        );
    }

    #[test]
    fn the_three_fates_of_a_proposal_stay_apart() {
        let not_sent = ServiceError::from(ProposeError::NotSent("no leader is known".into()));
        assert_eq!(
            not_sent,
            ServiceError::Unavailable("no leader is known".into())
        );
        assert!(not_sent.is_retryable());

        let rejected = ServiceError::from(ProposeError::Rejected(ApplyError::TokenInvalid));
        assert_eq!(rejected.code(), "unauthorized");
        assert!(!rejected.is_retryable());

        let unknown = ServiceError::from(ProposeError::OutcomeUnknown(OutcomeUnknown::new(
            "no answer within 5s",
        )));
        assert_eq!(
            unknown,
            ServiceError::OutcomeUnknown(OutcomeUnknown::new("no answer within 5s"))
        );
        assert_eq!(unknown.code(), "outcome_unknown");
        assert_ne!(unknown.code(), not_sent.code());
        assert!(!unknown.is_retryable());
        let message = unknown.to_string();
        for says in [
            "no answer within 5s",
            "may or may not have been applied",
            "read it back",
            "Idempotency-Key",
            "idempotency_key",
        ] {
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn a_login_refused_at_apply_or_by_a_check_gets_the_one_answer() {
        // Steps: the login's apply-time refusals and a validator's refusal
        // become `LoginRefused` with the check for the audit record, the
        // same code and message as every other refused login; a validator
        // that cannot check is 503 with its message, one that is not set
        // up is 400 with its message.
        let one_answer = ServiceError::LoginRefused(LoginRefusal::unverified(Check::Signature));
        for (rejected, check) in [
            (ApplyError::KubernetesRoleNotFound, Check::RoleNotFound),
            (ApplyError::KubernetesRoleNotBound, Check::NotBound),
            (ApplyError::KubernetesTokenExpired, Check::Expired),
        ] {
            let e = ServiceError::from(ProposeError::Rejected(rejected));
            assert_eq!(
                e,
                ServiceError::LoginRefused(LoginRefusal::unverified(check))
            );
            assert_eq!(e.failed_check(), Some(check.name()));
            assert_eq!(
                (e.code(), e.to_string()),
                (one_answer.code(), one_answer.to_string())
            );
        }
        for check in Check::ALL {
            let e = ServiceError::from(LoginError::Refused(check));
            assert_eq!(
                e,
                ServiceError::LoginRefused(LoginRefusal::unverified(check))
            );
            assert_eq!(e.to_string(), one_answer.to_string());
        }
        let e = ServiceError::from(LoginError::Unavailable("jwks_uri unreachable".into()));
        assert_eq!(e, ServiceError::Unavailable("jwks_uri unreachable".into()));
        let e = ServiceError::from(LoginError::NotConfigured("set kubernetes_issuer".into()));
        assert_eq!(e, ServiceError::BadRequest("set kubernetes_issuer".into()));
    }

    #[test]
    fn raft_admin_errors_keep_their_statuses() {
        let e = ServiceError::from(RaftAdminError::NotMember(9));
        assert_eq!(e, ServiceError::NotFound("node 9 is not a member".into()));
        let e = ServiceError::from(RaftAdminError::LastVoter(1));
        assert_eq!(
            e,
            ServiceError::Conflict(
                "node 1 is the last voter; a cluster cannot remove its last voter".into()
            )
        );
        let e = ServiceError::from(RaftAdminError::Unavailable("no snapshot yet".into()));
        assert_eq!(e, ServiceError::Unavailable("no snapshot yet".into()));
    }

    #[test]
    fn sealed_and_uninitialised_errors_name_the_fix() {
        let sealed = ServiceError::Sealed.to_string();
        for fix in [
            "unseal keys",
            "gatekeeper token",
            "kstash operator unseal",
            "/v1/sys/unseal",
        ] {
            assert!(sealed.contains(fix), "{sealed}");
        }
        let fresh = ServiceError::NotInitialized.to_string();
        for fix in ["kstash operator init", "/v1/sys/init"] {
            assert!(fresh.contains(fix), "{fresh}");
        }
    }
}
