//! The HTTP edges of the client port: what a request must look like before
//! a handler or the service sees it, and what every response says about
//! caching. These keep a web browser from driving a node on the
//! user's behalf (see THREAT_MODEL.md, "Browsers").
//!
//! Invariants:
//! - **Host.** With plaintext (`tls_disable`), a request is answered only
//!   when every host it names (the `Host` header, and the authority of an
//!   HTTP/2 or absolute-form request) is a loopback address, `localhost`,
//!   the host of this node's configured or advertised API address, or a
//!   name in `allowed_hosts`; any other gets 421 `host_not_allowed` (gRPC:
//!   `PERMISSION_DENIED`), and so does a request that names no host. A page
//!   that rebinds its own DNS name to 127.0.0.1 sends its own name and is
//!   refused. Over TLS the check is off: a rebound name fails the
//!   certificate check in the browser before any request is sent.
//! - **Content type.** Every route that reads a JSON body (every `POST` and
//!   `PUT` under `/v1`, through `rest::Body` and [`require_json`]) needs
//!   `Content-Type: application/json` (parameters such as `charset`
//!   allowed), with a body or without; every gRPC call needs
//!   `application/grpc` (or `application/grpc+…`). Anything else gets 415
//!   `unsupported_media_type` before the body is read. A browser
//!   can send a cross-site request without asking first (a CORS preflight)
//!   only with `text/plain`, form or multipart bodies, and kstash answers no
//!   preflight, so a cross-site page can no longer init, unseal or run any
//!   key ceremony.
//! - **Caching.** Every response, REST or gRPC, success or error, carries
//!   `Cache-Control: no-store` and `Pragma: no-cache`: values, tokens and
//!   keys are never kept by a browser or a proxy.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, PRAGMA};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::EdgeError;

/// A host named by a request or a setting: an IP address or a DNS name
/// (lower case, without a trailing dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

impl Host {
    /// A host without a port: an IP address (IPv6 with or without brackets)
    /// or a DNS name of letters, digits, `-` and `_` labels.
    pub fn parse(s: &str) -> Option<Host> {
        let bare = s
            .strip_prefix('[')
            .and_then(|v6| v6.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (name.len() <= 253 && name.split('.').all(label_ok)).then_some(Host::Name(name))
    }

    /// The host of a `Host` header value or an authority: `host` or
    /// `host:port`, an IPv6 address in brackets. User info is refused.
    pub fn from_authority(s: &str) -> Option<Host> {
        let (host, port) = if s.starts_with('[') {
            let end = s.find(']')?;
            let (host, rest) = s.split_at(end + 1);
            match rest {
                "" => (host, None),
                _ => (host, Some(rest.strip_prefix(':')?)),
            }
        } else {
            match s.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if let Some(port) = port {
            if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
                return None;
            }
        }
        let parsed = Host::parse(host)?;
        // `[…]` holds an IPv6 address, never a name.
        if host.starts_with('[') && !matches!(parsed, Host::Ip(IpAddr::V6(_))) {
            return None;
        }
        Some(parsed)
    }
}

/// The hosts a plaintext node answers for, besides loopback addresses and
/// `localhost`.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    hosts: Vec<Host>,
}

impl AllowedHosts {
    /// Loopback, `localhost`, and `extra` (the node's configured and
    /// advertised API hosts and `allowed_hosts`). Entries that are not a
    /// host are skipped; `Config::check` refuses them in `allowed_hosts`.
    pub fn new<'a>(extra: impl IntoIterator<Item = &'a str>) -> AllowedHosts {
        AllowedHosts {
            hosts: extra.into_iter().filter_map(Host::parse).collect(),
        }
    }

    /// Whether a request naming `host` is answered.
    pub fn allows(&self, host: &Host) -> bool {
        match host {
            Host::Ip(ip) => ip.is_loopback() || self.hosts.contains(host),
            Host::Name(name) => name == "localhost" || self.hosts.contains(host),
        }
    }

    /// Whether every host a request names (its URI authority and each
    /// `Host` header) is allowed, and it names at least one.
    fn admits(&self, req: &Request) -> Result<(), String> {
        let named = req
            .uri()
            .authority()
            .map(|a| Ok(a.as_str()))
            .into_iter()
            .chain(req.headers().get_all(HOST).iter().map(|v| v.to_str()));
        let mut any = false;
        for value in named {
            any = true;
            let Ok(value) = value else {
                return Err("a Host header that is not text".into());
            };
            if !Host::from_authority(value).is_some_and(|h| self.allows(&h)) {
                let shown: String = value.chars().take(100).collect();
                return Err(format!("Host {shown:?}"));
            }
        }
        if any {
            Ok(())
        } else {
            Err("a request without a Host header".into())
        }
    }
}

/// Middleware: refuse a plaintext request that names a host this node does
/// not answer for (421, gRPC `PERMISSION_DENIED`).
pub async fn check_host(
    State(allowed): State<Arc<AllowedHosts>>,
    req: Request,
    next: Next,
) -> Response {
    match allowed.admits(&req) {
        Ok(()) => next.run(req).await,
        Err(what) => {
            let e = EdgeError::HostNotAllowed(format!(
                "{what} is not answered: without TLS this node answers only loopback addresses, \
                 localhost, its own API address (api_addr, advertise_api_addr) and the names in \
                 allowed_hosts (--allowed-hosts, KSTASH_ALLOWED_HOSTS); add the name there, or serve TLS"
            ));
            refuse(&req, e)
        }
    }
}

/// The one media type of `headers`' `Content-Type`, lower case, without
/// parameters; `None` when absent, repeated or not text.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = value.to_str().ok()?;
    let media = text.split(';').next().unwrap_or("").trim();
    Some(media.to_ascii_lowercase())
}

/// A JSON body must be declared `Content-Type: application/json`
/// (parameters allowed), present or not: the check of every route that
/// reads a JSON body (`rest::Body`), before the body is read.
pub fn require_json(headers: &HeaderMap) -> Result<(), EdgeError> {
    if media_type(headers).as_deref() == Some("application/json") {
        return Ok(());
    }
    Err(EdgeError::UnsupportedMediaType(
        "this route reads a JSON body: send Content-Type: application/json \
         (every POST and PUT under /v1, with a body or without)"
            .into(),
    ))
}

/// Middleware: a gRPC call (`/kstash.…`, or reflection) must be
/// `application/grpc` or `application/grpc+…` (HTTP 415 otherwise, as the
/// gRPC spec asks).
pub async fn require_grpc_content_type(req: Request, next: Next) -> Response {
    if !super::grpc::is_grpc_path(req.uri().path()) {
        return next.run(req).await;
    }
    let grpc = media_type(req.headers())
        .is_some_and(|m| m == "application/grpc" || m.starts_with("application/grpc+"));
    if grpc {
        return next.run(req).await;
    }
    refuse(
        &req,
        EdgeError::UnsupportedMediaType("a gRPC call needs Content-Type: application/grpc".into()),
    )
}

/// Middleware: `Cache-Control: no-store` and `Pragma: no-cache` on every
/// response.
pub async fn no_store(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An edge refusal in the protocol of the request: a gRPC status for
/// gRPC calls (`/kstash.…`, reflection) that speak gRPC, else the JSON
/// error body.
fn refuse(req: &Request, e: EdgeError) -> Response {
    let grpc = super::grpc::is_grpc_path(req.uri().path())
        && !matches!(e, EdgeError::UnsupportedMediaType(_));
    if grpc {
        e.to_grpc().into_http()
    } else {
        e.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_header_values() {
        let ip = |s: &str| Some(Host::Ip(s.parse().unwrap()));
        let name = |s: &str| Some(Host::Name(s.into()));
        assert_eq!(Host::from_authority("127.0.0.1:8200"), ip("127.0.0.1"));
        assert_eq!(Host::from_authority("[::1]:8200"), ip("::1"));
        assert_eq!(Host::from_authority("[::1]"), ip("::1"));
        assert_eq!(Host::from_authority("LocalHost."), name("localhost"));
        assert_eq!(
            Host::from_authority("kstash-0.kstash:8200"),
            name("kstash-0.kstash")
        );
        for bad in [
            "",
            ":8200",
            "a:",
            "a:80x",
            "a:123456",
            "::1",
            "[::1",
            "[::1]x",
            "[name]",
            "user@127.0.0.1",
            "a b",
            "a..b",
            "évil",
        ] {
            assert_eq!(Host::from_authority(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn loopback_localhost_and_configured_names_only() {
        let allowed = AllowedHosts::new(["kstash-0.kstash", "10.1.2.3", "not a host"]);
        let ok = |s: &str| Host::from_authority(s).is_some_and(|h| allowed.allows(&h));
        for yes in [
            "127.0.0.1:1",
            "127.9.8.7",
            "[::1]:8200",
            "localhost:8200",
            "LOCALHOST",
            "kstash-0.kstash:8200",
            "10.1.2.3:8200",
        ] {
            assert!(ok(yes), "{yes}");
        }
        for no in [
            "evil.example",
            "evil.localhost",
            "localhost.evil.example",
            "0.0.0.0:8200",
            "10.1.2.4",
            "[::ffff:127.0.0.1]",
            "kstash-1.kstash",
        ] {
            assert!(!ok(no), "{no}");
        }
    }

    #[test]
    fn media_types() {
        let h = |values: &[&str]| {
            let mut m = HeaderMap::new();
            for v in values {
                m.append(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            }
            media_type(&m)
        };
        assert_eq!(
            h(&["application/json"]).as_deref(),
            Some("application/json")
        );
        assert_eq!(
            h(&["Application/JSON; charset=utf-8"]).as_deref(),
            Some("application/json")
        );
        assert_eq!(h(&[]), None);
        assert_eq!(h(&["application/json", "text/plain"]), None);
        assert_eq!(h(&["text/plain"]).as_deref(), Some("text/plain"));
    }
}
