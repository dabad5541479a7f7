//! A small blocking REST client for one kstash node, made for recording
//! histories: every call says whether the request may have had an effect.
//!
//! Invariant: [`Reply::Unreachable`] is returned only when the connection
//! could not be made, so nothing was sent; any failure after that is
//! [`Reply::Lost`]. Connections are never pooled: a pooled connection would
//! let the HTTP library resend a PUT on its own after a broken connection,
//! and a write applied twice would be a history the client never made.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};

/// What one request came to.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 2xx, with the JSON body (`null` for an empty body).
    Ok(Value),
    /// The server answered with an error status.
    Refused {
        /// HTTP status.
        status: u16,
        /// kstash's error code (`sealed`, `conflict`, …), if the body had one.
        code: String,
        /// kstash's error message.
        message: String,
    },
    /// No connection: nothing was sent.
    Unreachable(String),
    /// Sent, but no answer came (timeout, reset): the effect is unknown.
    Lost(String),
}

impl Reply {
    /// True when the server answered with this status.
    pub fn is_status(&self, want: u16) -> bool {
        matches!(self, Reply::Refused { status, .. } if *status == want)
    }

    /// A short account for logs (never a body: bodies may hold secrets).
    pub fn describe(&self) -> String {
        match self {
            Reply::Ok(_) => "ok".into(),
            Reply::Refused {
                status,
                code,
                message,
            } => format!("{status} {code}: {message}"),
            Reply::Unreachable(e) => format!("unreachable: {e}"),
            Reply::Lost(e) => format!("lost: {e}"),
        }
    }
}

/// One node's REST API, reached from the host over TLS.
#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    base: String,
}

/// TLS settings shared by every client of a run: trust only the cluster CA.
pub fn tls_config(ca_pem: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca_pem).map_err(|e| format!("{}: {e}", ca_pem.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_pem.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_pem.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Api {
    /// A client for the node at `base` (`https://127.0.0.1:18200`); each
    /// request gives up after `timeout`.
    pub fn new(base: &str, tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(Duration::from_secs(1).min(timeout))
            .timeout(timeout)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .redirects(0)
            .build();
        Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => match resp.into_string() {
                Ok(text) if text.trim().is_empty() => Reply::Ok(Value::Null),
                Ok(text) => match serde_json::from_str(&text) {
                    Ok(v) => Reply::Ok(v),
                    Err(e) => Reply::Lost(format!("unreadable answer: {e}")),
                },
                Err(e) => Reply::Lost(format!("answer cut off: {e}")),
            },
            Err(ureq::Error::Status(status, resp)) => {
                let body: Value = resp.into_json().unwrap_or(Value::Null);
                let field = |f: &str| {
                    body.pointer(&format!("/error/{f}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                Reply::Refused {
                    status,
                    code: field("code"),
                    message: field("message"),
                }
            }
            Err(ureq::Error::Transport(t)) => match t.kind() {
                ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
                    Reply::Unreachable(t.to_string())
                }
                _ => Reply::Lost(t.to_string()),
            },
        }
    }

    /// `GET /v1/sys/status`.
    pub fn status(&self) -> Reply {
        self.call("GET", "/v1/sys/status", None, None)
    }

    /// `POST /v1/sys/init`.
    pub fn init(&self, shares: u32, threshold: u32, gatekeeper_tokens: u32) -> Reply {
        self.call(
            "POST",
            "/v1/sys/init",
            None,
            Some(json!({"shares": shares, "threshold": threshold,
                        "gatekeeper_tokens": gatekeeper_tokens})),
        )
    }

    /// `POST /v1/sys/unseal` with one unseal key.
    pub fn unseal_key(&self, key: &str) -> Reply {
        self.call("POST", "/v1/sys/unseal", None, Some(json!({ "key": key })))
    }

    /// `POST /v1/sys/unseal` with a gatekeeper token.
    pub fn unseal_token(&self, token: &str) -> Reply {
        self.call(
            "POST",
            "/v1/sys/unseal",
            None,
            Some(json!({ "gatekeeper_token": token })),
        )
    }

    /// `POST /v1/sys/seal` with a gatekeeper token.
    pub fn seal(&self, gatekeeper_token: &str) -> Reply {
        self.call(
            "POST",
            "/v1/sys/seal",
            None,
            Some(json!({ "gatekeeper_token": gatekeeper_token })),
        )
    }

    /// `POST /v1/sys/gatekeeper-tokens`: mint tokens with unseal keys.
    pub fn mint_gatekeeper_tokens(&self, keys: &[String], count: u32) -> Reply {
        self.call(
            "POST",
            "/v1/sys/gatekeeper-tokens",
            None,
            Some(json!({ "keys": keys, "count": count })),
        )
    }

    /// `POST /v1/sys/raft/remove` with unseal keys.
    pub fn raft_remove(&self, id: u64, keys: &[String]) -> Reply {
        self.call(
            "POST",
            "/v1/sys/raft/remove",
            None,
            Some(json!({ "node_id": id, "keys": keys })),
        )
    }

    /// `POST /v1/auth/access-key/login`.
    pub fn login(&self, access_key: &str, namespace: &str, policies: &[&str], ttl: &str) -> Reply {
        self.call(
            "POST",
            "/v1/auth/access-key/login",
            None,
            Some(json!({"access_key": access_key, "namespace": namespace,
                        "policies": policies, "ttl": ttl})),
        )
    }

    /// `POST /v1/auth/token/revoke`: revoke the calling token.
    pub fn revoke_self(&self, token: &str) -> Reply {
        self.call(
            "POST",
            "/v1/auth/token/revoke",
            Some(token),
            Some(json!({})),
        )
    }

    /// `GET /v1/kv/{path}`, linearizable or this node's own state.
    pub fn get(&self, token: &str, path: &str, stale: bool) -> Reply {
        let q = if stale { "?consistency=stale" } else { "" };
        self.call("GET", &format!("/v1/kv/{path}{q}"), Some(token), None)
    }

    /// `GET /v1/kv/{prefix}?list=true`.
    pub fn list(&self, token: &str, prefix: &str) -> Reply {
        self.call(
            "GET",
            &format!("/v1/kv/{prefix}?list=true"),
            Some(token),
            None,
        )
    }

    /// `PUT /v1/kv/{path}`, with an optional check-and-set version.
    pub fn put(&self, token: &str, path: &str, value: &str, cas: Option<u64>) -> Reply {
        let body = match cas {
            Some(c) => json!({ "value": value, "cas": c }),
            None => json!({ "value": value }),
        };
        self.call("PUT", &format!("/v1/kv/{path}"), Some(token), Some(body))
    }
}

/// A string field of a JSON answer.
pub fn str_field(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_string)
}

/// The strings of an array field of a JSON answer (empty if absent).
pub fn str_list<C: FromIterator<String>>(v: &Value, field: &str) -> C {
    v.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::{str_field, str_list};

    #[test]
    fn fields_of_answers() {
        let v = json!({"token": "t", "keys": ["b", "a", 3, "a"], "n": 1});
        assert_eq!(str_field(&v, "token").as_deref(), Some("t"));
        assert_eq!(str_field(&v, "n"), None);
        let keys: Vec<String> = str_list(&v, "keys");
        assert_eq!(keys, ["b", "a", "a"]);
        let set: BTreeSet<String> = str_list(&v, "keys");
        assert_eq!(set.len(), 2);
        let none: Vec<String> = str_list(&v, "missing");
        assert!(none.is_empty());
    }
}
