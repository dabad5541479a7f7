//! Kubernetes ServiceAccount login: a pod proves who it is with its
//! projected ServiceAccount token (a JWT the API server signed).
//!
//! SKELETON (session 16): the validator is being written; until then every
//! node reports login as not configured.

mod check;
pub mod role;

pub use check::{Check, LoginError, ServiceAccount};

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::SecretString;

/// How a node checks ServiceAccount tokens (from the `kubernetes_*`
/// settings, with the in-cluster defaults already applied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The `iss` every token must carry; `None`: the issuer OIDC discovery
    /// reports.
    pub issuer: Option<String>,
    /// A JWKS file with the cluster's public keys (instead of discovery).
    pub jwks_file: Option<PathBuf>,
    /// The API server's base URL (`https://host:port`), for discovery and
    /// TokenReview.
    pub api: Option<String>,
    /// PEM CA certificate(s) the API server's certificate must chain to.
    pub ca_cert: Option<PathBuf>,
    /// A file with the bearer token kstash presents to the API server
    /// (re-read at each use: projected tokens rotate).
    pub token_file: Option<PathBuf>,
    /// Also ask the API server (TokenReview) about every token.
    pub token_review: bool,
    /// Verify signatures locally against the issuer's keys (JWKS file or
    /// discovery). `false`: rely on TokenReview alone.
    pub local_check: bool,
    /// How often the issuer's keys are fetched again.
    pub jwks_refresh: Duration,
}

/// Checks ServiceAccount tokens for this node.
#[derive(Debug, Default)]
pub struct KubernetesAuth {}

impl KubernetesAuth {
    /// A node with no ServiceAccount login.
    pub fn disabled() -> Self {
        KubernetesAuth {}
    }

    /// Checks tokens as `settings` say (reads the CA file; fetches
    /// nothing yet). Refuses settings that could never check a token.
    pub fn open(settings: KubernetesSettings) -> Result<Self, LoginError> {
        let _ = settings;
        Ok(KubernetesAuth {})
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
