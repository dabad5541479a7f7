//! The client kstash talks to the Kubernetes API server with (OIDC
//! discovery, the issuer's keys, TokenReview).
//!
//! Invariant: it trusts only the configured CA (no system roots), follows
//! no redirect, uses no proxy, times out every request after
//! [`REQUEST_TIMEOUT`], reads at most a caller-given number of body bytes,
//! and sends kstash's bearer token (re-read from its file at each request)
//! only to the configured API server. No token reaches a log line or an
//! error message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

/// How long one request to the API server may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest bearer-token file kstash reads (a projected token is ~1 KiB).
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// An answer of the API server: its status and its (bounded) body, which is
/// wiped when dropped (a TokenReview answer echoes the reviewed token).
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Zeroizing<Vec<u8>>,
}

/// A client of one API server.
#[derive(Debug)]
pub(super) struct ApiClient {
    /// `scheme://host:port`, no trailing slash.
    base: String,
    /// Scheme, host and port of `base`.
    origin: Origin,
    http: reqwest::Client,
    token_file: Option<PathBuf>,
}

/// Scheme, host and port of a URL.
type Origin = (String, String, Option<u16>);

fn origin(url: &Url) -> Origin {
    (
        url.scheme().to_string(),
        url.host_str().unwrap_or_default().to_string(),
        url.port_or_known_default(),
    )
}

/// The message of an error and its sources, `: `-separated (a source
/// whose message the text already holds is left out).
fn chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(e.source(), |inner| inner.source()).fold(e.to_string(), |text, inner| {
        let more = inner.to_string();
        if text.contains(&more) {
            text
        } else {
            format!("{text}: {more}")
        }
    })
}

/// Check `api` (an `http(s)://host[:port]` URL; plain `http` only to a
/// loopback host) and return it without a trailing slash.
pub(super) fn check_api_url(api: &str) -> Result<Url, String> {
    let bad = |why: &str| {
        Err(format!(
            "kubernetes_api {api:?} {why} (give the API server's base URL, e.g. https://kubernetes.default.svc)"
        ))
    };
    let Ok(url) = Url::parse(api) else {
        return bad("is not a URL");
    };
    let Some(host) = url.host_str() else {
        return bad("has no host");
    };
    if !url.username().is_empty() || url.password().is_some() {
        return bad("must not carry credentials");
    }
    if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
        return bad("must have no path, query or fragment");
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" => {
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost"
                || ip
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(url)
            } else {
                bad("is plain http to a host that is not loopback; use https")
            }
        }
        _ => bad("is neither https nor http"),
    }
}

/// The certificates of a PEM file, at least one.
fn read_ca(path: &Path) -> Result<rustls::RootCertStore, String> {
    let what = || format!("kubernetes_ca_cert {}", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", what()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: {e}", what()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", what()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file (give the CA that signed the API server's certificate)",
            what()
        ));
    }
    Ok(roots)
}

impl ApiClient {
    /// A client of `api` trusting the CA certificates in `ca_cert` (read
    /// now; needed for `https`), presenting the token in `token_file` when
    /// one is given.
    pub fn new(
        api: &str,
        ca_cert: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<ApiClient, String> {
        let url = check_api_url(api)?;
        let https = url.scheme() == "https";
        let roots = match ca_cert {
            Some(path) => read_ca(path)?,
            None if https => {
                return Err(format!(
                    "kubernetes_api {api} is https: give kubernetes_ca_cert, the CA that signed the API server's certificate \
                     (in a pod: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt)"
                ))
            }
            None => rustls::RootCertStore::empty(),
        };
        if let Some(path) = token_file {
            read_token(path)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(https)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("kstash/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the Kubernetes API client: {}", chain(&e)))?;
        Ok(ApiClient {
            base: url.as_str().trim_end_matches('/').to_string(),
            origin: origin(&url),
            http,
            token_file: token_file.map(Path::to_path_buf),
        })
    }

    /// The URL of `path` (starting with `/`) on the API server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether `url` is on the API server's origin (scheme, host and port),
    /// so it may be fetched with kstash's token and the cluster CA.
    pub fn same_origin(&self, url: &str) -> bool {
        Url::parse(url).is_ok_and(|u| origin(&u) == self.origin)
    }

    /// `GET url` (on the API server), reading at most `limit` body bytes.
    pub async fn get(&self, url: &str, limit: usize) -> Result<Answer, String> {
        self.send(self.http.get(url), limit).await
    }

    /// `POST url` with a JSON `body` (wiped by the caller; the copy the
    /// HTTP stack sends is not wiped), reading at most `limit` body bytes.
    pub async fn post_json(&self, url: &str, body: &[u8], limit: usize) -> Result<Answer, String> {
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        self.send(request, limit).await
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Answer, String> {
        if let Some(path) = &self.token_file {
            let token = read_token(path)?;
            let bearer = Zeroizing::new(format!("Bearer {}", token.as_str()));
            let mut value = HeaderValue::from_str(&bearer).map_err(|_| {
                format!(
                    "kubernetes_token_file {}: not a bearer token",
                    path.display()
                )
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(|e| chain(&e))?;
        let status = response.status();
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = response.chunk().await.map_err(|e| chain(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("the answer is larger than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    }
}

/// kstash's own bearer token, from `path` (read at each use: a projected
/// token is rotated by the kubelet).
fn read_token(path: &Path) -> Result<Zeroizing<String>, String> {
    let what = || format!("kubernetes_token_file {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", what()))?;
    let mut text = Zeroizing::new(String::new());
    use std::io::Read as _;
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", what()))?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_TOKEN_FILE_BYTES} bytes",
            what()
        ));
    }
    let token = Zeroizing::new(text.trim().to_string());
    if token.is_empty() {
        return Err(format!("{}: the file is empty", what()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_url_is_https_or_loopback_http_with_nothing_after_the_port() {
        for good in [
            "https://kubernetes.default.svc",
            "https://10.96.0.1:443/",
            "https://[fd00::1]:6443",
            "http://127.0.0.1:8080",
            "http://[::1]:1",
            "http://localhost:9",
        ] {
            assert!(check_api_url(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("kubernetes.default.svc", "is not a URL"),
            ("http://10.0.0.1:8080", "not loopback"),
            ("ftp://127.0.0.1", "neither https nor http"),
            ("https://u:p@k8s", "credentials"),
            ("https://k8s/api", "no path"),
            ("https://k8s/?x=1", "no path"),
        ] {
            let err = check_api_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn https_needs_a_readable_ca_with_a_certificate_and_the_token_file_must_be_readable() {
        let dir = tempfile::tempdir().unwrap();
        let err = ApiClient::new("https://k8s", None, None).unwrap_err();
        assert!(err.contains("give kubernetes_ca_cert"), "{err}");
        let missing = dir.path().join("missing.crt");
        let err = ApiClient::new("https://k8s", Some(&missing), None).unwrap_err();
        assert!(
            err.contains("kubernetes_ca_cert") && err.contains("missing.crt"),
            "{err}"
        );
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let err = ApiClient::new("https://k8s", Some(&empty), None).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let cert = rcgen::generate_simple_self_signed(vec!["k8s".into()]).unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        assert!(ApiClient::new("https://k8s", Some(&ca), None).is_ok());
        let token = dir.path().join("token");
        let err = ApiClient::new("https://k8s", Some(&ca), Some(&token)).unwrap_err();
        assert!(err.contains("kubernetes_token_file"), "{err}");
        std::fs::write(&token, "\n").unwrap();
        let err = ApiClient::new("https://k8s", Some(&ca), Some(&token)).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        std::fs::write(&token, "abc.def.ghi\n").unwrap();
        let client = ApiClient::new("https://k8s:6443/", Some(&ca), Some(&token)).unwrap();
        assert_eq!(
            client.url("/openid/v1/jwks"),
            "https://k8s:6443/openid/v1/jwks"
        );
        assert!(client.same_origin("https://k8s:6443/x"));
        assert!(!client.same_origin("https://k8s/x"), "another port");
        assert!(!client.same_origin("http://k8s:6443/x"), "another scheme");
        assert!(!client.same_origin("https://issuer.example:6443/x"));
    }
}
