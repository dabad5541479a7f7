//! Kubernetes ServiceAccount login: a pod proves who it is with its
//! projected ServiceAccount token (a JWT the API server signed).
//!
//! [`KubernetesAuth::verify`] checks a token locally (signature against the
//! cluster's keys, from a JWKS file or OIDC discovery, `keys.rs`; claims,
//! `jwt.rs`) and/or with TokenReview on the API server (`review.rs`), over
//! one client of the API server (`http.rs`). Roles, which service accounts
//! may log in to a kstash namespace, are in [`role`].
//!
//! Invariants: every failure of the token is a [`Check`]; a token is
//! checked locally before TokenReview sees it (a forged token costs no API
//! call); the token and kstash's own bearer token never reach a log line or
//! an error message; settings that could never check a token are refused
//! by [`KubernetesAuth::open`].

mod check;
mod http;
mod jwt;
mod keys;
mod review;
pub mod role;

pub use check::{Check, LoginError, ServiceAccount};
pub use jwt::{is_dns_subdomain, LEEWAY_MS, MAX_JWT_BYTES};
pub use keys::{MAX_DOCUMENT_BYTES, MAX_KEYS, MIN_FETCH_INTERVAL};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::secret::SecretString;

use http::ApiClient;
use jwt::Token;
use keys::KeyCache;

/// Where a pod's mounted ServiceAccount lives.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Shortest and longest `jwks_refresh` accepted.
pub const JWKS_REFRESH_RANGE: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(24 * 3600));

/// What verify answers on a node with no ServiceAccount login.
const NOT_CONFIGURED: &str = "kubernetes login is not configured on this node: give kubernetes_issuer \
     and kubernetes_jwks_file, or kubernetes_api (the API server, for OIDC discovery and TokenReview)";

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

/// The API server of the pod kstash runs in, from the environment the
/// kubelet gives every pod with a mounted ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InCluster {
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub api: String,
    /// The mounted `ca.crt`.
    pub ca_cert: PathBuf,
    /// The mounted `token`.
    pub token_file: PathBuf,
}

impl InCluster {
    /// The in-cluster API server from the service host and port variables,
    /// when both are set and the ServiceAccount token is mounted
    /// (`token_exists`); an IPv6 host is bracketed.
    pub fn from_env(host: Option<&str>, port: Option<&str>, token_exists: bool) -> Option<Self> {
        let host = host.map(str::trim).filter(|h| !h.is_empty())?;
        let port: u16 = port?.trim().parse().ok()?;
        if !token_exists {
            return None;
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let dir = Path::new(SERVICE_ACCOUNT_DIR);
        Some(InCluster {
            api: format!("https://{host}:{port}"),
            ca_cert: dir.join("ca.crt"),
            token_file: dir.join("token"),
        })
    }

    /// [`InCluster::from_env`] with this process's environment and file
    /// system.
    pub fn detect() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok();
        InCluster::from_env(
            var("KUBERNETES_SERVICE_HOST").as_deref(),
            var("KUBERNETES_SERVICE_PORT").as_deref(),
            Path::new(SERVICE_ACCOUNT_DIR).join("token").is_file(),
        )
    }
}

impl KubernetesSettings {
    /// These settings, each of `api`, `ca_cert` and `token_file` not given
    /// taken from `pod` (explicit settings win).
    pub fn with_in_cluster(mut self, pod: Option<&InCluster>) -> Self {
        if let Some(pod) = pod {
            self.api.get_or_insert_with(|| pod.api.clone());
            self.ca_cert.get_or_insert_with(|| pod.ca_cert.clone());
            self.token_file
                .get_or_insert_with(|| pod.token_file.clone());
        }
        self
    }

    /// Whether any setting asks for ServiceAccount login.
    fn any(&self) -> bool {
        self.issuer.is_some()
            || self.jwks_file.is_some()
            || self.api.is_some()
            || self.ca_cert.is_some()
            || self.token_file.is_some()
            || self.token_review
    }

    /// Refuse settings that could never check a token (no file is read);
    /// the message says what to set.
    pub fn check(&self) -> Result<(), String> {
        let (min, max) = JWKS_REFRESH_RANGE;
        if self.jwks_refresh < min || self.jwks_refresh > max {
            return Err(format!(
                "kubernetes_jwks_refresh must be between {}s and {}h",
                min.as_secs(),
                max.as_secs() / 3600
            ));
        }
        if !self.any() {
            return Ok(());
        }
        if !self.local_check && !self.token_review {
            return Err("kubernetes_local_check = false and kubernetes_token_review = false: nothing would \
                 check ServiceAccount tokens; set kubernetes_token_review = true (with kubernetes_api), \
                 or leave kubernetes_local_check on"
                .into());
        }
        if self.issuer.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err(
                "kubernetes_issuer is empty: give the `iss` of the cluster's tokens \
                 (`kubectl get --raw /.well-known/openid-configuration` shows it)"
                    .into(),
            );
        }
        if self.jwks_file.is_some() && self.issuer.is_none() {
            return Err(
                "kubernetes_jwks_file needs kubernetes_issuer, the `iss` every token must carry \
                 (`kubectl get --raw /.well-known/openid-configuration` shows it)"
                    .into(),
            );
        }
        if self.token_review && self.api.is_none() {
            return Err(
                "kubernetes_token_review needs kubernetes_api, the API server's URL \
                 (e.g. https://kubernetes.default.svc)"
                    .into(),
            );
        }
        if self.local_check && self.jwks_file.is_none() && self.api.is_none() {
            return Err(
                "kubernetes login needs the cluster's signing keys: give kubernetes_jwks_file \
                 (with kubernetes_issuer) or kubernetes_api (OIDC discovery), or turn \
                 kubernetes_local_check off and kubernetes_token_review on"
                    .into(),
            );
        }
        match &self.api {
            Some(api) => {
                http::check_api_url(api)?;
            }
            None => {
                for (name, set) in [
                    ("kubernetes_ca_cert", self.ca_cert.is_some()),
                    ("kubernetes_token_file", self.token_file.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "{name} is only used with kubernetes_api: give kubernetes_api too, or leave {name} out"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks ServiceAccount tokens for this node.
#[derive(Debug, Default)]
pub struct KubernetesAuth {
    /// `None`: login is not configured.
    inner: Option<Inner>,
    meters: KubernetesMeters,
}

/// What ServiceAccount login counts for `/metrics` (clones share the
/// series): failures of kstash's own calls, which a client sees only as a
/// 503 once no cached key set is left.
#[derive(Clone, Debug, Default)]
pub struct KubernetesMeters {
    /// Fetches of the cluster's signing keys (JWKS file or discovery) that
    /// failed or gave nothing usable; the last good key set stays in use.
    pub key_fetch_failures: Counter,
    /// TokenReview calls that gave no verdict (unreachable, refused
    /// kstash's credentials, an unusable answer).
    pub token_review_failures: Counter,
}

#[derive(Debug)]
struct Inner {
    /// The configured issuer; `None`: the one discovery reports.
    issuer: Option<String>,
    /// The cluster's keys, for local checks (`None`: TokenReview only).
    keys: Option<KeyCache>,
    /// The API server, when TokenReview is on.
    review: Option<Arc<ApiClient>>,
}

impl KubernetesAuth {
    /// A node with no ServiceAccount login.
    pub fn disabled() -> Self {
        KubernetesAuth {
            inner: None,
            meters: KubernetesMeters::default(),
        }
    }

    /// Checks tokens as `settings` say (reads the CA file, the token file
    /// and a JWKS file; fetches nothing yet). Refuses settings that could
    /// never check a token ([`KubernetesSettings::check`]) and files that
    /// cannot be read or used, saying what to set.
    pub fn open(settings: KubernetesSettings) -> Result<Self, LoginError> {
        let not_configured = LoginError::NotConfigured;
        settings.check().map_err(not_configured)?;
        if !settings.any() {
            return Ok(KubernetesAuth::disabled());
        }
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            return Err(not_configured(
                "this kstash was built without a JWT crypto backend".into(),
            ));
        }
        let meters = KubernetesMeters::default();
        let client = match &settings.api {
            Some(api) => Some(Arc::new(
                ApiClient::new(
                    api,
                    settings.ca_cert.as_deref(),
                    settings.token_file.as_deref(),
                )
                .map_err(not_configured)?,
            )),
            None => None,
        };
        let keys = match (settings.local_check, &settings.jwks_file, &client) {
            (false, _, _) => None,
            (true, Some(file), _) => Some(
                KeyCache::file(
                    file.clone(),
                    settings.jwks_refresh,
                    meters.key_fetch_failures.clone(),
                )
                .map_err(not_configured)?,
            ),
            (true, None, Some(client)) => Some(KeyCache::discovery(
                client.clone(),
                settings.jwks_refresh,
                meters.key_fetch_failures.clone(),
            )),
            // `KubernetesSettings::check` refuses this already; refuse it
            // here too rather than trust that.
            (true, None, None) => return Err(not_configured(NOT_CONFIGURED.into())),
        };
        Ok(KubernetesAuth {
            meters,
            inner: Some(Inner {
                issuer: settings.issuer,
                keys,
                review: client.filter(|_| settings.token_review),
            }),
        })
    }

    /// The counters this checker keeps (for `/metrics`).
    pub fn meters(&self) -> &KubernetesMeters {
        &self.meters
    }

    /// Whether this node can check tokens at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Verify `jwt` for a role whose audience is `audience`, as of `now_ms`:
    /// locally (signature, issuer, times, audience, subject and claims)
    /// when local checks are on, else every claim check that needs no key;
    /// then TokenReview when it is on.
    pub async fn verify(
        &self,
        jwt: &SecretString,
        audience: &str,
        now_ms: u64,
    ) -> Result<ServiceAccount, LoginError> {
        let Some(inner) = &self.inner else {
            return Err(LoginError::NotConfigured(NOT_CONFIGURED.into()));
        };
        let token = Token::parse(jwt.expose()).map_err(LoginError::Refused)?;
        let issuer = match &inner.keys {
            Some(cache) => {
                let mut keys = cache.keys().await?;
                if token.kid.as_ref().is_some_and(|kid| !keys.has_kid(kid)) {
                    // Perhaps the keys were rotated since they were read.
                    keys = cache.refetch().await?;
                }
                keys.verify(&token).map_err(LoginError::Refused)?;
                inner.issuer.clone().or_else(|| keys.issuer.clone())
            }
            None => inner.issuer.clone(),
        };
        let account = token
            .check_claims(issuer.as_deref(), audience, now_ms)
            .map_err(LoginError::Refused)?;
        if let Some(client) = &inner.review {
            review::review(client, jwt, audience, &account.subject())
                .await
                .inspect_err(|e| {
                    if matches!(e, LoginError::Unavailable(_)) {
                        self.meters.token_review_failures.inc();
                    }
                })?;
        }
        Ok(account)
    }
}

#[cfg(test)]
mod tests;
