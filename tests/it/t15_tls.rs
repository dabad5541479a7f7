//! The client port over TLS (rustls), and the refusals around it.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use kstash::clock::SystemClock;
use kstash::server::Server;
use kstash::storage::memory::MemoryBackend;

use crate::common::test_config;

/// Steps: make a self-signed certificate → serve with it → REST status over
/// HTTPS with the certificate as root (HTTP/2 and HTTP/1.1) → plaintext to the
/// TLS port fails → a world-readable key is refused at start.
#[tokio::test]
async fn serves_over_tls_and_refuses_loose_keys() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    tracing::info!("--- step: serve with TLS");
    let config = test_config(|a| {
        a.data_dir = Some(dir.path().join("data"));
        a.tls_disable = None;
        a.tls_cert = Some(cert.clone());
        a.tls_key = Some(key.clone());
    });
    let server = Server::start(
        &config,
        Arc::new(MemoryBackend::new()),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let port = server.addr.port();
    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    for http2 in [true, false] {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(root.clone())
            .use_rustls_tls();
        if !http2 {
            builder = builder.http1_only();
        }
        let client = builder.build().unwrap();
        let resp = client
            .get(format!("https://localhost:{port}/v1/sys/status"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), expected);
    }

    tracing::info!("--- step: plaintext to the TLS port fails");
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{port}/v1/sys/status"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    tracing::info!("--- step: an untrusted client refuses the certificate");
    let strict = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(strict
        .get(format!("https://localhost:{port}/v1/sys/status"))
        .send()
        .await
        .is_err());
    server.shutdown().await.unwrap();

    tracing::info!("--- step: a world-readable key is refused");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Server::start(
        &config,
        Arc::new(MemoryBackend::new()),
        Arc::new(SystemClock),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("readable by others"), "{err}");
}
