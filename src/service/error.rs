//! The service layer's error: one kind per client-visible outcome. The API
//! maps each kind to one HTTP status and one gRPC code (`api::error`).

use thiserror::Error;

use crate::acl::{AclError, PathError};
use crate::barrier::BarrierError;
use crate::gatekeeper::GatekeeperError;
use crate::raft::state::ApplyError;
use crate::raft::ProposeError;
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
    /// Valid credentials that do not allow this.
    #[error("{0}")]
    Forbidden(String),
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
    /// A stored value failed authentication: tampered with, or moved to
    /// another path or namespace.
    #[error("stored value failed its integrity check (tampered with or moved)")]
    Integrity,
    /// A bug or corrupt state; details are logged, not returned.
    #[error("internal error")]
    Internal,
}

impl ServiceError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::Unauthorized(_) => "unauthorized",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::TooLarge(_) => "too_large",
            ServiceError::Sealed => "sealed",
            ServiceError::NotInitialized => "not_initialized",
            ServiceError::Unavailable(_) => "unavailable",
            ServiceError::Integrity => "integrity",
            ServiceError::Internal => "internal",
        }
    }

    /// Whether the same request may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServiceError::Unavailable(_))
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

impl From<ProposeError> for ServiceError {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Unavailable(m) => ServiceError::Unavailable(m),
            ProposeError::Rejected(a) => match a {
                ApplyError::AlreadyInitialized => ServiceError::Conflict(a.to_string()),
                ApplyError::NotInitialized => ServiceError::NotInitialized,
                ApplyError::TokenInvalid => ServiceError::Unauthorized(a.to_string()),
                ApplyError::Forbidden(m) => {
                    ServiceError::Forbidden(format!("permission denied: {m}"))
                }
                ApplyError::CasMismatch { .. } => ServiceError::Conflict(a.to_string()),
                ApplyError::NotFound => ServiceError::NotFound(a.to_string()),
                ApplyError::GatekeeperTokenInvalid => ServiceError::Unauthorized(a.to_string()),
                ApplyError::TooManyGatekeeperTokens => ServiceError::bad(a.to_string()),
                ApplyError::IdempotencyKeyReused => ServiceError::Conflict(a.to_string()),
                ApplyError::TermExhausted { .. } | ApplyError::StaleTerm { .. } => {
                    ServiceError::Unavailable(a.to_string())
                }
                ApplyError::Storage(s) => s.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
