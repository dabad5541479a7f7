//! The HTTP edges of the client port (issue 13, points 1, 6 and 8):
//! `/metrics` cannot be grown by a caller and always parses; JSON routes
//! and gRPC refuse other content types (a browser's cross-site request);
//! a plaintext node answers only its own host names (DNS rebinding); and no
//! response may be cached.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use kstash::api::grpc::pb;
use prost::Message;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestNode;

/// A reqwest client that sends exactly the headers and body it is given.
struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(n: &TestNode) -> Client {
        Client {
            base: format!("http://{}", n.server.addr),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> (u16, HeaderMap, Value) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("the node answers");
        let code = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, headers, value)
    }

    async fn json(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> Value {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let (code, _, v) = self
            .send(method, path, &headers, Some(body.to_string().into_bytes()))
            .await;
        assert!(code < 300, "{method} {path}: {code} {v}");
        v
    }

    async fn metrics(&self) -> String {
        let (code, _, v) = self.send("GET", "/metrics", &[], None).await;
        assert_eq!(code, 200);
        v.as_str().unwrap().to_string()
    }
}

/// One request over a fresh TCP connection, written exactly as given;
/// returns the status code and the whole answer.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the node answers and closes")
        .unwrap();
    let out = String::from_utf8_lossy(&out).to_string();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

// ----- a strict reader of the text exposition ----------------------------------

/// Every sample of a Prometheus / OpenMetrics text exposition as
/// `name{label="value",…}` with labels sorted, or why the text is invalid.
/// Strict where a caller-made value would break it: metric and label names,
/// quoting and escapes (`\\`, `\"`, `\n` only), the value, `# EOF` last.
fn parse_exposition(text: &str) -> Result<BTreeSet<String>, String> {
    fn name_ok(s: &str, colon: bool) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    let mut series = BTreeSet::new();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| Err(format!("line {}: {why}: {line:?}", i + 1));
        if eof {
            return bad("text after # EOF");
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap_or("");
            match kind {
                "EOF" => eof = true,
                "HELP" | "TYPE" | "UNIT" => {
                    let name = comment.split(' ').nth(1).unwrap_or("");
                    if !name_ok(name, true) {
                        return bad("bad metric name in a comment");
                    }
                }
                _ => return bad("unknown comment"),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !name_ok(name, true) {
            return bad("bad metric name");
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r.find('=').ok_or(format!("line {}: no '='", i + 1))?;
                let label = &r[..eq];
                if !name_ok(label, false) {
                    return bad("bad label name");
                }
                let Some(mut v) = r[eq + 1..].strip_prefix('"') else {
                    return bad("label value not quoted");
                };
                let mut value = String::new();
                loop {
                    let mut chars = v.chars();
                    match chars.next() {
                        None => return bad("unterminated label value"),
                        Some('"') => {
                            v = chars.as_str();
                            break;
                        }
                        Some('\\') => {
                            match chars.next() {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                _ => return bad("bad escape in a label value"),
                            }
                            v = chars.as_str();
                        }
                        Some(c) => {
                            value.push(c);
                            v = chars.as_str();
                        }
                    }
                }
                labels.push(format!("{label}={value:?}"));
                r = match v.strip_prefix(',') {
                    Some(after) => after,
                    None if v.starts_with('}') => v,
                    None => return bad("expected ',' or '}' after a label"),
                };
            }
            rest = r;
        }
        let Some(rest) = rest.strip_prefix(' ') else {
            return bad("no space before the value");
        };
        let mut parts = rest.split(' ');
        let value = parts.next().unwrap_or("");
        if value.parse::<f64>().is_err() {
            return bad("the value is not a number");
        }
        if let Some(ts) = parts.next() {
            if ts.parse::<f64>().is_err() || parts.next().is_some() {
                return bad("trailing text after the value");
            }
        }
        labels.sort();
        let key = format!("{name}{{{}}}", labels.join(","));
        if !series.insert(key) {
            return bad("a sample repeated");
        }
    }
    if !eof {
        return Err("no # EOF line".into());
    }
    Ok(series)
}

#[test]
fn the_exposition_reader_refuses_what_it_must() {
    let ok = "# TYPE a counter\na_total{x=\"1\",y=\"a\\\"b\\\\c\\nd\"} 3\n# EOF\n";
    assert_eq!(parse_exposition(ok).unwrap().len(), 1);
    for bad in [
        "a_total{x=\"1\"} 3\n",                            // no EOF
        "a_total{x=\"a\"b\"} 3\n# EOF\n",                  // unescaped quote
        "a_total{x=\"a\\qb\"} 3\n# EOF\n",                 // bad escape
        "a_total{x=\"/kstash.a\nb\"} 3\n# EOF\n",          // raw new line
        "a_total{x=\"1\"} three\n# EOF\n",                 // value
        "a_total{x=\"1\"} 1\na_total{x=\"1\"} 2\n# EOF\n", // repeated
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?}");
    }
}

// ----- 1. metrics cannot be grown by a caller ------------------------------------

/// Requests a caller without a credential can make up without end: `round`
/// keeps every path and method new.
async fn made_up_requests(c: &Client, addr: SocketAddr, round: usize, count: usize) {
    let methods = ["FOO", "PROPFIND", "MKCOL", "BREW", "GET", "POST"];
    let grpc = [("content-type", "application/grpc")];
    let calls = (0..count).map(|i| {
        let n = round * 100_000 + i;
        async move {
            match i % 6 {
                0 => c.send("GET", &format!("/nope/{n}"), &[], None).await.0,
                1 => {
                    let path = format!("/kstash.Foo{n}/Bar{n}");
                    c.send("POST", &path, &grpc, Some(vec![0, 0, 0, 0, 0])).await.0
                }
                2 => {
                    let path = format!("/kstash.v1.Sys/Nope{n}");
                    c.send("POST", &path, &grpc, Some(vec![0, 0, 0, 0, 0])).await.0
                }
                3 => c.send(&format!("X{n}"), "/v1/sys/status", &[], None).await.0,
                4 => {
                    let m = methods[(i / 6) % methods.len()];
                    c.send(m, &format!("/v1/kv/x{n}"), &[], None).await.0
                }
                _ => {
                    // Characters a label would have to escape.
                    let req = format!(
                        "GET /kstash.a\"b\\{n}/c HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                    );
                    raw(addr, &req).await.0
                }
            }
        }
    });
    // gRPC answers an unknown method with HTTP 200 (`UNIMPLEMENTED` in
    // the trailers); everything else is a 4xx or 503.
    let codes: Vec<u16> = futures_util::stream::iter(calls)
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(codes.len(), count);
}

/// The series of `/metrics`, which must parse.
async fn series(c: &Client) -> BTreeSet<String> {
    let text = c.metrics().await;
    parse_exposition(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cannot_be_grown_by_a_caller() {
    // Steps, in each state (before init, sealed, unsealed), all without a
    // credential:
    // 1. send one request of every made-up kind (unmatched paths, made-up
    //    gRPC services and methods, odd HTTP methods, a path with `"` and
    //    `\`), scrape /metrics twice: the series it then has;
    // 2. send 1200 more, every path and method new;
    // 3. /metrics parses and has exactly the same series;
    // 4. real routes keep their template, also while sealed.
    let n = TestNode::start().await;
    let c = Client::new(&n);
    let addr = n.server.addr;
    let mut round = 0;
    let mut unseal_key = Value::Null;
    for state in ["before init", "sealed", "unsealed"] {
        tracing::info!("--- {state}");
        match state {
            "sealed" => {
                let init = c
                    .json(
                        "POST",
                        "/v1/sys/init",
                        None,
                        json!({"shares": 1, "threshold": 1}),
                    )
                    .await;
                unseal_key = init["unseal_keys"][0].clone();
            }
            "unsealed" => {
                let st = c
                    .json("POST", "/v1/sys/unseal", None, json!({ "key": unseal_key }))
                    .await;
                assert_eq!(st["sealed"], false, "{st}");
            }
            _ => {}
        }
        round += 1;
        made_up_requests(&c, addr, round, 60).await;
        let _ = series(&c).await;
        let before = series(&c).await;
        round += 1;
        made_up_requests(&c, addr, round, 1200).await;
        let after = series(&c).await;
        let grown: Vec<_> = after.difference(&before).take(5).collect();
        assert!(
            after == before,
            "{state}: made-up requests added series ({} before, {} after), e.g. {grown:?}",
            before.len(),
            after.len()
        );
        let requests = after
            .iter()
            .filter(|s| s.starts_with("kstash_api_requests_total{"))
            .count();
        assert!(requests < 40, "{state}: {requests} request series");
        if state == "sealed" {
            let (code, _, _) = c.send("GET", "/v1/kv/app/db", &[], None).await;
            assert_eq!(code, 503);
            let s = series(&c).await;
            assert!(
                s.iter().any(|s| s.starts_with("kstash_api_requests_total{")
                    && s.contains("route=\"/v1/kv/{*path}\"")
                    && s.contains("status=\"503\"")),
                "a sealed request to a real route keeps its template: {s:?}"
            );
        }
    }
}

// ----- 6. a browser cannot drive a node ---------------------------------------

/// The media types a cross-site page may send without a preflight, and none.
const NOT_JSON: &[Option<&str>] = &[
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    None,
];

/// Send `body` to `path` with each of [`NOT_JSON`]; every one must be 415
/// `unsupported_media_type` and leave the backend as it was.
async fn refused_unless_json(n: &TestNode, c: &Client, method: &str, path: &str, body: Value) {
    let before = n.backend.dump();
    for ct in NOT_JSON {
        let headers: Vec<(&str, &str)> = ct.iter().map(|ct| ("content-type", *ct)).collect();
        let (code, _, v) = c
            .send(method, path, &headers, Some(body.to_string().into_bytes()))
            .await;
        assert_eq!(code, 415, "{method} {path} as {ct:?}: {v}");
        assert_eq!(v["error"]["code"], "unsupported_media_type", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{v}"
        );
    }
    // No body and no Content-Type at all.
    let (code, _, v) = c.send(method, path, &[], None).await;
    assert_eq!(code, 415, "{method} {path} without a body: {v}");
    assert!(
        n.backend.dump() == before,
        "{method} {path}: a refusal changed the backend"
    );
}

/// A gRPC message in its length-prefixed frame.
fn grpc_frame(msg: &impl Message) -> Vec<u8> {
    let bytes = msg.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_routes_and_grpc_refuse_other_content_types() {
    // Steps:
    // 1. before init: init as text/plain, form, multipart and with no type
    //    → 415, nothing stored; a gRPC Init framed correctly but sent as
    //    text/plain (a browser can) → 415, still not initialised;
    // 2. init; unseal with the real key as text/plain → 415, still sealed;
    //    then unseal as JSON (with a charset parameter) works;
    // 3. with real credentials in the bodies, every key ceremony and write
    //    (seal, rotate, rekey, mint gatekeeper tokens, rotate the access key,
    //    login, kv put, policy put) refused the same way, backend unchanged;
    // 4. every operation of the OpenAPI document that takes a body, sent as
    //    text/plain → 415;
    // 5. the same requests as application/json succeed (kv put); a DELETE
    //    reads no body and needs no Content-Type.
    let n = TestNode::start().await;
    let c = Client::new(&n);
    tracing::info!("--- before init");
    refused_unless_json(
        &n,
        &c,
        "POST",
        "/v1/sys/init",
        json!({"shares": 1, "threshold": 1}),
    )
    .await;
    let init = pb::InitRequest {
        shares: 1,
        threshold: 1,
        ..Default::default()
    };
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let (code, _, v) = c
            .send(
                "POST",
                "/kstash.v1.Sys/Init",
                &[("content-type", ct)],
                Some(grpc_frame(&init)),
            )
            .await;
        assert_eq!(code, 415, "gRPC Init as {ct}: {v}");
    }
    let st = c.json("GET", "/v1/sys/status", None, json!({})).await;
    assert_eq!(st["initialized"], false, "{st}");

    tracing::info!("--- init, unseal");
    let init = c
        .json(
            "POST",
            "/v1/sys/init",
            None,
            json!({"shares": 3, "threshold": 2, "gatekeeper_tokens": 2}),
        )
        .await;
    let keys: Vec<String> = init["unseal_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap().to_string();
    let access_key = init["access_key"].as_str().unwrap().to_string();
    refused_unless_json(&n, &c, "POST", "/v1/sys/unseal", json!({"key": keys[0]})).await;
    let st = c.json("GET", "/v1/sys/status", None, json!({})).await;
    assert_eq!(
        (st["sealed"].clone(), st["progress"].clone()),
        (json!(true), json!(0)),
        "{st}"
    );
    for k in &keys[..2] {
        let body = json!({ "key": k }).to_string().into_bytes();
        let ct = [("content-type", "application/json; charset=utf-8")];
        let (code, _, v) = c.send("POST", "/v1/sys/unseal", &ct, Some(body)).await;
        assert_eq!(code, 200, "{v}");
    }

    tracing::info!("--- key ceremonies and writes");
    let admin = c
        .json(
            "POST",
            "/v1/auth/access-key/login",
            None,
            json!({"access_key": access_key, "namespace": "team", "policies": ["admin"]}),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let gk_auth = json!({ "gatekeeper_token": gk });
    let keys_auth = json!({ "keys": keys[..2] });
    for (path, body) in [
        ("/v1/sys/seal", gk_auth.clone()),
        ("/v1/sys/seal", keys_auth.clone()),
        ("/v1/sys/rotate", gk_auth.clone()),
        (
            "/v1/sys/rekey",
            json!({"keys": keys[..2], "shares": 1, "threshold": 1}),
        ),
        (
            "/v1/sys/gatekeeper-tokens",
            json!({"keys": keys[..2], "count": 1}),
        ),
        ("/v1/sys/gatekeeper-tokens/revoke", gk_auth.clone()),
        ("/v1/sys/access-key/rotate", gk_auth.clone()),
        (
            "/v1/auth/access-key/login",
            json!({"access_key": access_key, "namespace": "team", "policies": ["admin"]}),
        ),
    ] {
        refused_unless_json(&n, &c, "POST", path, body).await;
    }
    // Writes that need an access token: the token alone proves nothing
    // about where the request came from.
    let auth = format!("Bearer {admin}");
    let before = n.backend.dump();
    for (method, path, body) in [
        ("PUT", "/v1/kv/app/db", json!({"value": "s3cret"})),
        ("POST", "/v1/kv/app/db", json!({"value": "s3cret"})),
        (
            "PUT",
            "/v1/namespaces/team/policies/p",
            json!({"rules": [{"path": "*", "capabilities": ["read"]}]}),
        ),
        ("POST", "/v1/auth/token/revoke", json!({})),
        ("POST", "/v1/auth/token/renew", json!({})),
    ] {
        for ct in NOT_JSON.iter().flatten() {
            let headers = [("content-type", *ct), ("authorization", auth.as_str())];
            let (code, _, v) = c
                .send(method, path, &headers, Some(body.to_string().into_bytes()))
                .await;
            assert_eq!(code, 415, "{method} {path} as {ct}: {v}");
        }
    }
    assert!(
        n.backend.dump() == before,
        "a refused write changed the backend"
    );
    let st = c.json("GET", "/v1/sys/status", None, json!({})).await;
    assert_eq!(st["sealed"], false, "{st}");

    tracing::info!("--- the same as JSON is served");
    let put = c
        .json(
            "PUT",
            "/v1/kv/app/db",
            Some(&admin),
            json!({"value": "s3cret"}),
        )
        .await;
    assert_eq!(put["version"], 1);
    let (code, _, _) = c
        .send("DELETE", "/v1/kv/app/db", &[("authorization", &auth)], None)
        .await;
    assert_eq!(code, 204, "a DELETE without a body needs no Content-Type");
}

/// `GET /v1/sys/status` with `Host: host` over HTTP/1.1.
async fn status_with_host(addr: SocketAddr, host: &str) -> (u16, String) {
    raw(
        addr,
        &format!("GET /v1/sys/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A gRPC `Sys/Status` call whose `:authority` is `authority`.
async fn grpc_status_as(addr: SocketAddr, authority: &str) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
        .connect()
        .await
        .expect("gRPC reaches the node");
    pb::sys_client::SysClient::new(channel)
        .status(pb::StatusRequest {})
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_answers_only_its_own_host_names() {
    // Steps (a plaintext node with advertise_api_addr kstash-adv.test:8200
    // and allowed_hosts kstash.test):
    // 1. Host evil.example (what a page that rebound its name to 127.0.0.1
    //    sends) → 421 host_not_allowed naming the setting; so is a POST init
    //    (JSON), and the node stays uninitialised;
    // 2. loopback addresses, localhost, the advertised and allowed names,
    //    with or without a port → served;
    // 3. no Host, a second evil Host, an absolute URI naming evil.example →
    //    refused;
    // 4. gRPC with :authority evil.example → PERMISSION_DENIED; localhost →
    //    served.
    let n = TestNode::start_with(|a| {
        a.advertise_api_addr = Some("kstash-adv.test:8200".into());
        a.allowed_hosts = Some(vec!["kstash.test".into()]);
    })
    .await;
    let addr = n.server.addr;
    let port = addr.port();

    tracing::info!("--- a foreign host");
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "evil.localhost",
        "0.0.0.0",
    ] {
        let (code, out) = status_with_host(addr, host).await;
        assert_eq!(code, 421, "Host {host}: {out}");
        assert!(
            out.contains("host_not_allowed") && out.contains("allowed_hosts"),
            "{out}"
        );
        assert!(
            out.to_ascii_lowercase().contains("cache-control: no-store"),
            "{out}"
        );
    }
    let body = r#"{"shares":1,"threshold":1}"#;
    let (code, out) = raw(
        addr,
        &format!(
            "POST /v1/sys/init HTTP/1.1\r\nHost: evil.example:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(code, 421, "{out}");
    let (_, out) = status_with_host(addr, &format!("127.0.0.1:{port}")).await;
    assert!(out.contains("\"initialized\":false"), "{out}");

    tracing::info!("--- our own names");
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.2".to_string(),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST.".to_string(),
        "kstash-adv.test:8200".to_string(),
        format!("kstash.test:{port}"),
        "kstash.test".to_string(),
    ] {
        let (code, out) = status_with_host(addr, &host).await;
        assert_eq!(code, 200, "Host {host}: {out}");
    }

    tracing::info!("--- no host, two hosts, an absolute URI");
    let (code, out) = raw(addr, "GET /v1/sys/status HTTP/1.0\r\n\r\n").await;
    assert_eq!(code, 421, "{out}");
    let (code, out) = raw(
        addr,
        &format!("GET /v1/sys/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(code == 421 || code == 400, "{out}");
    let (code, out) = raw(
        addr,
        &format!("GET http://evil.example/v1/sys/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 421, "{out}");

    tracing::info!("--- gRPC");
    let e = grpc_status_as(addr, "evil.example:8200").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("allowed_hosts"), "{e:?}");
    grpc_status_as(addr, &format!("localhost:{port}"))
        .await
        .unwrap();
    grpc_status_as(addr, "kstash.test:1").await.unwrap();
}

// ----- 8. secret-bearing responses are not cached ------------------------------

fn assert_no_store(what: &str, headers: &HeaderMap) {
    assert_eq!(
        headers.get("cache-control").map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "{what}: {headers:?}"
    );
    assert_eq!(
        headers.get("pragma").map(|v| v.to_str().unwrap()),
        Some("no-cache"),
        "{what}: {headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_never_cached() {
    // Steps: init, unseal, login, kv put, kv get, list, token self, a
    // gRPC call, and errors (404, 401, 415, 405, sealed 503) all carry
    // Cache-Control: no-store and Pragma: no-cache.
    let n = TestNode::start().await;
    let c = Client::new(&n);
    let json_ct = ("content-type", "application/json");
    let send_json =
        |method: &'static str, path: &'static str, auth: Option<String>, body: Value| {
            let c = &c;
            async move {
                let mut headers = vec![json_ct];
                let auth = auth.map(|t| format!("Bearer {t}"));
                if let Some(a) = &auth {
                    headers.push(("authorization", a.as_str()));
                }
                let (code, h, v) = c
                    .send(method, path, &headers, Some(body.to_string().into_bytes()))
                    .await;
                assert_no_store(&format!("{method} {path} ({code})"), &h);
                (code, v)
            }
        };
    let (code, init) = send_json(
        "POST",
        "/v1/sys/init",
        None,
        json!({"shares": 1, "threshold": 1}),
    )
    .await;
    assert_eq!(code, 200, "{init}");
    let (code, _, _) = c.send("GET", "/v1/kv/app/db", &[], None).await;
    assert_eq!(code, 503, "sealed");
    let (code, _) = send_json(
        "POST",
        "/v1/sys/unseal",
        None,
        json!({"key": init["unseal_keys"][0]}),
    )
    .await;
    assert_eq!(code, 200);
    let (code, login) = send_json(
        "POST",
        "/v1/auth/access-key/login",
        None,
        json!({"access_key": init["access_key"], "namespace": "team", "policies": ["admin"]}),
    )
    .await;
    assert_eq!(code, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_string();
    let (code, _) = send_json(
        "PUT",
        "/v1/kv/app/db",
        Some(token.clone()),
        json!({"value": "s3cret"}),
    )
    .await;
    assert_eq!(code, 200);
    let auth = format!("Bearer {token}");
    for (path, want) in [
        ("/v1/kv/app/db", 200),
        ("/v1/kv/app?list=true", 200),
        ("/v1/auth/token/self", 200),
        ("/v1/kv/app/none", 404),
        ("/v1/sys/status", 200),
        ("/metrics", 200),
        ("/no/such/route", 404),
    ] {
        let (code, h, v) = c.send("GET", path, &[("authorization", &auth)], None).await;
        assert_eq!(code, want, "{path}: {v}");
        assert_no_store(path, &h);
    }
    let (code, h, _) = c.send("GET", "/v1/kv/app/db", &[], None).await;
    assert_eq!(code, 401);
    assert_no_store("no token", &h);
    let (code, h, _) = c
        .send(
            "POST",
            "/v1/kv/app/db",
            &[("content-type", "text/plain")],
            Some(b"x".to_vec()),
        )
        .await;
    assert_eq!(code, 415);
    assert_no_store("415", &h);
    let (code, h, _) = c
        .send("PATCH", "/v1/sys/status", &[json_ct], Some(b"{}".to_vec()))
        .await;
    assert_eq!(code, 405);
    assert_no_store("405", &h);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", n.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = pb::kv_client::KvClient::new(channel);
    let mut req = tonic::Request::new(pb::GetSecretRequest {
        path: "app/db".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-kstash-token", token.parse().unwrap());
    let resp = kv.get(req).await.unwrap();
    assert_eq!(
        resp.metadata()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "gRPC Kv/Get: {:?}",
        resp.metadata()
    );
}
