//! The client port sheds slow and idle clients and caps its connections:
//! silent clients (plaintext and TLS), trickled headers and bodies (REST and
//! gRPC), idle HTTP/1 and HTTP/2 connections next to busy ones, the
//! connection cap, and a real `kstash server` under a low RLIMIT_NOFILE
//! flooded with idle connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kstash::api::conn::ShedReason;
use kstash::clock::SystemClock;
use kstash::config::ServerArgs;
use kstash::server::Server;
use kstash::storage::memory::MemoryBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{test_config, ClusterCerts, ClusterNode, ClusterNodeSpec, TestNode};
use crate::procs::{wait_for, Api, BIN};

/// Slack on every bound: the test machine may be busy.
const SLACK: Duration = Duration::from_secs(2);

/// Timeouts of a test node (durations), and optionally its cap.
fn limits(
    header: Duration,
    idle: Duration,
    body: Duration,
    max_connections: Option<usize>,
) -> impl FnOnce(&mut ServerArgs) {
    move |a: &mut ServerArgs| {
        a.header_read_timeout = Some(header);
        a.idle_timeout = Some(idle);
        a.body_read_timeout = Some(body);
        a.max_connections = max_connections;
    }
}

/// Read until the server closes `stream` (EOF or an error); returns what
/// it sent. Panics if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Send `head`, then `byte` every `every` until the server closes the
/// connection; returns what it answered and how long after `head` it
/// closed. Panics if it is still open after `within`.
async fn trickle(
    stream: &mut TcpStream,
    head: &[u8],
    byte: u8,
    every: Duration,
    within: Duration,
) -> (Vec<u8>, Duration) {
    stream.write_all(head).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            start.elapsed() < within,
            "the server kept a trickling connection open for {within:?}; it answered {:?}",
            String::from_utf8_lossy(&got)
        );
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {
                if stream.write_all(&[byte]).await.is_err() {
                    return (got, start.elapsed());
                }
            }
        }
    }
}

/// One HTTP/1.1 `GET path` on `stream` (kept alive); returns the status.
async fn h1_get(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.expect("reading a response");
            assert!(n > 0, "the server closed a busy connection");
            got.extend_from_slice(&buf[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a content-length");
            if got.len() >= end + 4 + length {
                return head[9..12].parse().unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

/// An HTTP/2 (prior knowledge) connection to `addr`: its sender and the
/// task driving it.
async fn h2_connect(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<
        http_body_util::combinators::BoxBody<Bytes, Infallible>,
    >,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    (send, tokio::spawn(conn))
}

fn empty() -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Empty::new().boxed()
}

/// Steps: plaintext node → 5 silent connections are all closed after
/// header_read_timeout (not before) → the shed is counted under
/// `first_request` on /metrics → TLS node → 5 connections that never send
/// a ClientHello are closed after header_read_timeout → both nodes shut
/// down gracefully.
#[tokio::test]
async fn silent_clients_are_shed_plaintext_and_tls() {
    let header = Duration::from_millis(800);
    let node = TestNode::start_with(limits(header, header, header, None)).await;
    tracing::info!("--- step: silent plaintext connections");
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(node.server.addr).await.unwrap());
    }
    let start = Instant::now();
    for stream in &mut silent {
        let sent = closed_within(stream, header + SLACK).await;
        assert!(sent.is_empty(), "a silent client gets no answer");
    }
    assert!(
        start.elapsed() >= header.mul_f32(0.8),
        "not before the timeout"
    );
    drop(silent);
    assert!(
        node.server
            .connections()
            .shed_count(ShedReason::FirstRequest)
            >= 5
    );
    let text = reqwest::get(format!("http://{}/metrics", node.server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("kstash_connections_shed_total{reason=\"first_request\"} "),
        "{text}"
    );
    assert!(text.contains("kstash_connections_open "), "{text}");
    node.server.shutdown().await.unwrap();

    tracing::info!("--- step: silent TLS connections (no ClientHello)");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = test_config(|a| {
        a.data_dir = Some(dir.path().join("data"));
        a.tls_disable = None;
        a.tls_cert = Some(cert.clone());
        a.tls_key = Some(key.clone());
        limits(header, header, header, None)(a);
    });
    let server = Server::start(
        &config,
        Arc::new(MemoryBackend::new()),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let start = Instant::now();
    for stream in &mut silent {
        closed_within(stream, header + SLACK).await;
    }
    assert!(
        start.elapsed() >= header.mul_f32(0.8),
        "not before the timeout"
    );
    drop(silent);
    server.shutdown().await.unwrap();
}

/// Steps: node with a 1 s header timeout → an HTTP/1 request line, then
/// one header byte every 200 ms: closed within the bound, unanswered → the
/// HTTP/2 preface sent one byte every 200 ms: closed within the bound.
#[tokio::test]
async fn trickled_headers_are_shed() {
    let header = Duration::from_secs(1);
    let node = TestNode::start_with(limits(header, header, header, None)).await;
    let every = Duration::from_millis(200);

    tracing::info!("--- step: HTTP/1 headers, one byte at a time");
    let mut stream = TcpStream::connect(node.server.addr).await.unwrap();
    let head = b"GET /v1/sys/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    let (answer, took) = trickle(&mut stream, head, b'a', every, header + SLACK).await;
    assert!(took >= header.mul_f32(0.8), "closed after {took:?}");
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "{answer:?}"
    );

    tracing::info!("--- step: the HTTP/2 preface, one byte at a time");
    let mut stream = TcpStream::connect(node.server.addr).await.unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let (_, took) = trickle(
        &mut stream,
        &preface[..1],
        preface[1],
        every,
        header + SLACK,
    )
    .await;
    assert!(took >= header.mul_f32(0.8), "closed after {took:?}");
    node.server.shutdown().await.unwrap();
}

/// Steps: node with a 1 s body deadline (and a longer idle timeout) →
/// REST: headers of a 1000-byte JSON body, then one byte every 100 ms: a
/// 400 arrives after the deadline and the connection closes → gRPC over
/// HTTP/2: a unary call whose message trickles: the call ends with an
/// error after the deadline → both counted under `body`.
#[tokio::test]
async fn trickled_bodies_are_cut_at_the_deadline() {
    let body = Duration::from_secs(1);
    let node = TestNode::start_with(limits(
        Duration::from_secs(5),
        Duration::from_secs(5),
        body,
        None,
    ))
    .await;

    tracing::info!("--- step: REST body, one byte at a time");
    let mut stream = TcpStream::connect(node.server.addr).await.unwrap();
    let head = b"POST /v1/sys/unseal HTTP/1.1\r\nHost: localhost\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
    let every = Duration::from_millis(100);
    let (answer, took) = trickle(&mut stream, head, b' ', every, body + SLACK).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(took >= body.mul_f32(0.8), "cut after {took:?}");

    tracing::info!("--- step: gRPC message, one byte at a time");
    let (mut send, conn) = h2_connect(node.server.addr).await;
    let frames = futures_util::stream::unfold(0u32, move |i| async move {
        let data = if i == 0 {
            // gRPC framing: not compressed, a 1000-byte message follows.
            Bytes::from_static(&[0, 0, 0, 0x03, 0xe8])
        } else {
            tokio::time::sleep(every).await;
            Bytes::from_static(&[0])
        };
        Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
    });
    let request = http::Request::post(format!("http://{}/kstash.v1.Sys/Unseal", node.server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(Box::pin(frames)).boxed())
        .unwrap();
    let start = Instant::now();
    let call = async {
        let response = send.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let status = match parts.headers.get("grpc-status") {
            Some(s) => Some(s.to_str().unwrap().to_string()),
            None => body
                .collect()
                .await?
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|s| s.to_str().unwrap().to_string()),
        };
        Ok::<_, hyper::Error>(status)
    };
    let outcome = tokio::time::timeout(body + SLACK, call)
        .await
        .expect("the trickled gRPC call ends within the bound");
    let took = start.elapsed();
    assert!(took >= body.mul_f32(0.8), "cut after {took:?}");
    if let Ok(status) = outcome {
        let status = status.expect("a grpc-status");
        assert_ne!(status, "0", "the call failed");
    }
    conn.abort();
    assert!(node.server.connections().shed_count(ShedReason::Body) >= 2);
    node.server.shutdown().await.unwrap();
}

/// Steps: node with a 1 s idle timeout (headers 5 s) → an HTTP/1
/// keep-alive connection that made one request is closed after the idle
/// timeout → so is an HTTP/2 connection → an HTTP/1 and an HTTP/2 client
/// each making a request every 300 ms on one connection for 3 s are
/// never cut → node with headers 1 s, idle 30 s: an idle HTTP/1 keep-alive
/// connection is closed after 1 s (hyper's header clock).
#[tokio::test]
async fn idle_connections_are_closed_busy_ones_are_not() {
    let idle = Duration::from_secs(1);
    let node = TestNode::start_with(limits(
        Duration::from_secs(5),
        idle,
        Duration::from_secs(5),
        None,
    ))
    .await;
    let addr = node.server.addr;

    tracing::info!("--- step: idle HTTP/1 keep-alive");
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    assert_eq!(h1_get(&mut h1, "/v1/sys/status").await, 200);
    let start = Instant::now();
    closed_within(&mut h1, idle + SLACK).await;
    assert!(
        start.elapsed() >= idle.mul_f32(0.8),
        "closed after {:?}",
        start.elapsed()
    );

    tracing::info!("--- step: idle HTTP/2");
    let (mut send, conn) = h2_connect(addr).await;
    let req = http::Request::get(format!("http://{addr}/v1/sys/status"))
        .body(empty())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    let start = Instant::now();
    let _ = tokio::time::timeout(idle + SLACK, conn)
        .await
        .expect("the idle HTTP/2 connection is closed within the bound");
    assert!(
        start.elapsed() >= idle.mul_f32(0.8),
        "closed after {:?}",
        start.elapsed()
    );
    drop(send);

    tracing::info!("--- step: busy HTTP/1 and HTTP/2 clients are not cut");
    let (mut send, conn) = h2_connect(addr).await;
    let mut h1 = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < 3 * idle {
        assert_eq!(h1_get(&mut h1, "/v1/sys/status").await, 200);
        let req = http::Request::get(format!("http://{addr}/v1/sys/status"))
            .body(empty())
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .expect("an HTTP/2 answer within 10 s")
            .expect("the busy HTTP/2 connection is still open");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!conn.is_finished(), "the busy HTTP/2 connection was cut");
    conn.abort();
    drop(h1);
    node.server.shutdown().await.unwrap();

    tracing::info!("--- step: HTTP/1 keep-alive ends at header_read_timeout when shorter");
    let header = Duration::from_secs(1);
    let node = TestNode::start_with(limits(
        header,
        Duration::from_secs(30),
        Duration::from_secs(5),
        None,
    ))
    .await;
    let mut h1 = TcpStream::connect(node.server.addr).await.unwrap();
    assert_eq!(h1_get(&mut h1, "/v1/sys/status").await, 200);
    let start = Instant::now();
    closed_within(&mut h1, header + SLACK).await;
    assert!(
        start.elapsed() >= header.mul_f32(0.8),
        "closed after {:?}",
        start.elapsed()
    );
    node.server.shutdown().await.unwrap();
}

/// Steps: node capped at 8 connections (header timeout 3 s) → open 8 silent
/// connections → the 9th is closed at once (well before the timeout) and
/// counted under `limit` → a normal request succeeds within seconds, once
/// the silent ones were shed.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let header = Duration::from_secs(3);
    let node = TestNode::start_with(limits(header, header, header, Some(8))).await;
    let addr = node.server.addr;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let connections = node.server.connections().clone();
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(20),
        "8 connections are open",
        || {
            let open = connections.open();
            async move { (open == 8).then_some(()) }
        },
    )
    .await;

    tracing::info!("--- step: the 9th connection is closed at once");
    let mut ninth = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    closed_within(&mut ninth, Duration::from_millis(1500)).await;
    assert!(
        start.elapsed() < header / 2,
        "closed at once, not by the timeout"
    );
    assert!(node.server.connections().shed_count(ShedReason::Limit) >= 1);

    tracing::info!("--- step: a normal client is served again within seconds");
    let api = Api::new(addr, Duration::from_secs(2));
    let start = Instant::now();
    wait_for(
        header + SLACK + SLACK,
        Duration::from_millis(100),
        "a normal request succeeds",
        || {
            let api = api.clone();
            async move { api.status().await.ok() }
        },
    )
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "the cap held"
    );
    drop(held);
    node.server.shutdown().await.unwrap();
}

/// Kills and reaps the child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Steps: `prlimit --nofile=128 kstash server` (1 s header and idle
/// timeouts) → it starts, warning that the limit lowers max_connections →
/// 300 silent connections flood it → a normal client is served again
/// within seconds → the server is still running → the flood is closed.
#[tokio::test]
async fn a_process_under_a_low_fd_limit_survives_a_flood() {
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prlimit (util-linux) is installed");
    let dir = tempfile::Builder::new()
        .prefix("nofile-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    tracing::info!("--- step: start under RLIMIT_NOFILE = 128");
    let mut cmd = Command::new(prlimit);
    cmd.arg("--nofile=128")
        .arg("--")
        .arg(BIN)
        .args(["server", "--tls-disable", "--api-addr", &addr.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--header-read-timeout", "1s", "--idle-timeout", "1s"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KSTASH_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let mut child = Reaped(cmd.env("NO_COLOR", "1").spawn().unwrap());
    let api = Api::new(addr, Duration::from_secs(2));
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "the server answers",
        || {
            let api = api.clone();
            async move { api.status().await.ok() }
        },
    )
    .await;
    assert!(
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("RLIMIT_NOFILE"),
        "a warning names the limit:\n{}",
        log_tail(&log_path)
    );

    tracing::info!("--- step: flood with 300 silent connections");
    let connects =
        (0..300).map(|_| tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)));
    let flood: Vec<TcpStream> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .filter_map(|c| c.ok()?.ok())
        .collect();
    assert!(flood.len() > 128, "the flood outnumbers the fd limit");

    tracing::info!("--- step: a normal client is served again within seconds");
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "a normal request succeeds despite the flood",
        || {
            let api = api.clone();
            async move { api.status().await.ok() }
        },
    )
    .await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the server exited:\n{}",
        log_tail(&log_path)
    );
    drop(flood);
    // The server still answers after the flood is gone.
    api.status().await.unwrap();
}

/// Steps: a bootstrapped cluster node → 200 silent TCP connections to its
/// cluster port (none finishes a TLS handshake) → those over the cluster
/// port's cap (128) are closed at once, long before the 10 s handshake
/// timeout → the node still leads and serves its client port.
#[tokio::test]
async fn the_cluster_port_caps_its_connections() {
    let certs = ClusterCerts::make();
    let root = tempfile::Builder::new()
        .prefix("cluster-cap-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let mut spec = ClusterNodeSpec::new(1, root.path(), "127.0.0.1");
    spec.bootstrap = true;
    let node = ClusterNode::start(spec, &certs, Default::default())
        .await
        .unwrap();
    let cluster_addr = node.server.cluster_addr().unwrap();

    tracing::info!("--- step: 200 silent connections to the cluster port");
    let connects = (0..200)
        .map(|_| tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(cluster_addr)));
    let mut flood: Vec<TcpStream> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .filter_map(|c| c.ok()?.ok())
        .collect();
    assert_eq!(flood.len(), 200);
    let start = Instant::now();
    let probes = flood.iter_mut().map(|s| async move {
        let mut buf = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    });
    let closed = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        closed >= 200 - 128,
        "only {closed} of 200 connections were closed at once"
    );
    drop(flood);

    tracing::info!("--- step: the node still serves");
    let (code, _) = node.http.get("/v1/sys/status", None).await;
    assert_eq!(code, 200);
    node.server.shutdown().await.unwrap();
}

/// Steps: node with a 1 s idle timeout → a client pipelines enough
/// `GET /v1/openapi.json` requests for 32 MiB of responses and reads none
/// of them → once the socket buffers are full, the connection is closed
/// within the idle timeout (counted under `idle`: a response body is one
/// buffer, so its request stops being in flight as soon as hyper took it,
/// and the next pipelined request is never dispatched).
#[tokio::test]
async fn a_client_that_stops_reading_is_shed() {
    let idle = Duration::from_secs(1);
    let node = TestNode::start_with(limits(idle, idle, idle, None)).await;
    let addr = node.server.addr;
    let size = reqwest::get(format!("http://{addr}/v1/openapi.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let count = (32 << 20) / size + 1;
    let blob = "GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(count);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server stops reading once it cannot write: the send is bounded.
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(blob.as_bytes())).await;
    let connections = node.server.connections().clone();
    wait_for(
        idle + SLACK + SLACK,
        Duration::from_millis(50),
        "the stalled connection is shed",
        || {
            let done = connections.shed_count(ShedReason::Idle) >= 1 && connections.open() == 0;
            async move { done.then_some(()) }
        },
    )
    .await;
    drop(stream);
    node.server.shutdown().await.unwrap();
}
