//! Kubernetes ServiceAccount login: a pod proves who it is with its
//! projected ServiceAccount token (a JWT the API server signed).
//!
//! SKELETON (session 16): the validator is being written; until then every
//! node reports login as not configured.

mod check;
pub mod role;

pub use check::{Check, LoginError, ServiceAccount};

use crate::secret::SecretString;

/// Checks ServiceAccount tokens for this node.
#[derive(Debug, Default)]
pub struct KubernetesAuth {}

impl KubernetesAuth {
    /// A node with no ServiceAccount login.
    pub fn disabled() -> Self {
        KubernetesAuth {}
    }

    /// Whether this node can check tokens at all.
    pub fn is_enabled(&self) -> bool {
        false
    }

    /// Verify `jwt` for a role whose audience is `audience`, as of `now_ms`.
    pub async fn verify(
        &self,
        jwt: &SecretString,
        audience: &str,
        now_ms: u64,
    ) -> Result<ServiceAccount, LoginError> {
        let _ = (jwt, audience, now_ms);
        Err(LoginError::NotConfigured(
            "kubernetes login is not configured on this node".into(),
        ))
    }
}
