//! Invariants 1 and 2: ciphertext only below the barrier, bound to its place.

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{assert_error, captured_logs, TestNode};

/// Every secret string in a JSON response: unseal keys, access key, tokens.
fn collect_secrets(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s)
            if s.starts_with("kst_") || s.starts_with("ksg_") || s.starts_with("ksa_") =>
        {
            out.push(s.clone())
        }
        Value::Array(a) => a.iter().for_each(|x| collect_secrets(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_secrets(x, out)),
        _ => {}
    }
}

/// The byte forms a secret may leak in: its text, and its raw decoded bytes.
fn needles(secret: &str) -> Vec<Vec<u8>> {
    let mut n = vec![secret.as_bytes().to_vec()];
    let body = secret.get(4..).unwrap_or("");
    if let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body) {
        n.push(raw);
    }
    if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(secret) {
        // An unseal key: x | y | checksum. The y part alone is key material.
        n.push(raw[1..33].to_vec());
        n.push(raw);
    }
    n
}

/// Every file under `dir`, with its contents.
fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p.display().to_string(), bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() >= 8 && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Steps: run every secret-bearing operation (init, unseal by keys and by
/// gatekeeper token, seal, rotate, rekey, mint tokens, login, renew, revoke,
/// policy, put/get) → scan every stored key and value and every log line
/// written at debug level for the value, every token, the access keys, the
/// unseal keys and the gatekeeper key.
#[tokio::test]
async fn no_secret_reaches_storage_or_logs() {
    let n = TestNode::start().await;
    let backend = n.backend.clone();
    leak_scenario(&n, move || backend.dump()).await;
    n.server.shutdown().await.unwrap();
}

/// The same scan with the etcd backend, reading etcd's whole keyspace raw.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_etcd() {
    use kstash::storage::etcd::testing::EtcdServer;
    let Some(etcd) = EtcdServer::start() else {
        return;
    };
    let backend = std::sync::Arc::new(etcd.backend("leaks"));
    let n = TestNode::start_on(
        backend.clone(),
        std::sync::Arc::new(kstash::storage::memory::MemoryBackend::new()),
        |_| {},
        std::sync::Arc::new(kstash::clock::SystemClock),
    )
    .await;
    leak_scenario(&n, move || backend.raw_dump().unwrap()).await;
    n.server.shutdown().await.unwrap();
}

async fn leak_scenario(n: &TestNode, dump: impl Fn() -> Vec<(Vec<u8>, Vec<u8>)>) {
    let h = &n.http;
    let known_value = "correct-horse-battery-staple-7d1f0a";
    let mut secrets: Vec<String> = vec![known_value.into()];

    tracing::info!("--- step: init and unseal both ways");
    let (_, init) = h
        .post(
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
    secrets.extend(keys.iter().cloned());
    collect_secrets(&init, &mut secrets);
    // The gatekeeper key itself, rebuilt here from two unseal keys.
    let parsed: Vec<_> = keys
        .iter()
        .take(2)
        .map(|k| kstash::gatekeeper::shamir::parse(k).unwrap())
        .collect();
    let gatekeeper_key = kstash::gatekeeper::shamir::combine(&parsed, 2)
        .unwrap()
        .as_bytes()
        .to_vec();
    for k in keys.iter().take(2) {
        h.post("/v1/sys/unseal", None, json!({"key": k})).await;
    }
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap().to_string();
    let (code, sealed) = h
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": gk}))
        .await;
    assert_eq!(code, 200, "{sealed}");
    collect_secrets(&sealed, &mut secrets);
    let (code, unsealed) = h
        .post(
            "/v1/sys/unseal",
            None,
            json!({"gatekeeper_token": sealed["gatekeeper_token"]}),
        )
        .await;
    assert_eq!(code, 200, "{unsealed}");
    collect_secrets(&unsealed, &mut secrets);

    tracing::info!("--- step: tokens, policy, secrets");
    let admin = n
        .login(&init["access_key"], "leaky", &["admin"], None)
        .await;
    secrets.push(admin.clone());
    let policy = json!({"rules": [{"path": "db/*", "capabilities": ["read", "create", "update"]}]});
    h.put("/v1/namespaces/leaky/policies/db", Some(&admin), policy)
        .await;
    let app = n
        .login(&init["access_key"], "leaky", &["db"], Some("10m"))
        .await;
    secrets.push(app.clone());
    let (code, _) = h
        .put(
            "/v1/kv/db/password",
            Some(&app),
            json!({"value": known_value}),
        )
        .await;
    assert_eq!(code, 200);
    let (_, got) = h.get("/v1/kv/db/password", Some(&app)).await;
    assert_eq!(got["value"], known_value);
    h.post("/v1/auth/token/renew", Some(&app), json!({})).await;
    let (_, minted) = h
        .post(
            "/v1/sys/gatekeeper-tokens",
            None,
            json!({"keys": [keys[0], keys[1]], "count": 2}),
        )
        .await;
    collect_secrets(&minted, &mut secrets);
    let (_, rotated) = h
        .post(
            "/v1/sys/rotate",
            None,
            json!({"gatekeeper_token": unsealed["gatekeeper_token"]}),
        )
        .await;
    collect_secrets(&rotated, &mut secrets);
    let (_, ak) = h
        .post(
            "/v1/sys/access-key/rotate",
            None,
            json!({"gatekeeper_token": minted["gatekeeper_tokens"][0]}),
        )
        .await;
    collect_secrets(&ak, &mut secrets);
    let (code, rekey) = h
        .post(
            "/v1/sys/rekey",
            None,
            json!({"keys": [keys[1], keys[2]], "shares": 2, "threshold": 2}),
        )
        .await;
    assert_eq!(code, 200, "{rekey}");
    collect_secrets(&rekey, &mut secrets);
    secrets.extend(
        rekey["unseal_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string()),
    );
    let (code, _) = h
        .put(
            "/v1/kv/db/password",
            Some(&app),
            json!({"value": known_value}),
        )
        .await;
    assert_eq!(code, 200);
    let doomed = n.login(&ak["access_key"], "leaky", &["db"], None).await;
    secrets.push(doomed.clone());
    h.post("/v1/auth/token/revoke", Some(&doomed), json!({}))
        .await;
    assert!(secrets.len() >= 14, "collected {} secrets", secrets.len());

    tracing::info!("--- step: scan the backend and the logs");
    let dump = dump();
    assert!(
        dump.iter()
            .any(|(k, _)| k.ends_with(b"kv/leaky/db/password")),
        "the secret is stored"
    );
    let logs = captured_logs().lock().unwrap().clone();
    assert!(!logs.is_empty(), "logs were captured at debug level");
    let mut all_needles: Vec<(String, Vec<u8>)> = vec![("gatekeeper key".into(), gatekeeper_key)];
    for s in &secrets {
        for n in needles(s) {
            all_needles.push((format!("{}…", &s[..6.min(s.len())]), n));
        }
    }
    // Every byte under the data dir: the sled Raft log and snapshot files.
    n.server.node.sweep().await.unwrap();
    let files = files_under(n.data_dir.path());
    assert!(
        files.iter().any(|(p, _)| p.contains("raft-log")),
        "the Raft log is on disk"
    );
    for (what, needle) in &all_needles {
        for (path, bytes) in &files {
            assert!(!contains(bytes, needle), "{what} appears in {path}");
        }
        for (k, v) in &dump {
            assert!(
                !contains(k, needle),
                "{what} appears in stored key {}",
                String::from_utf8_lossy(k)
            );
            assert!(
                !contains(v, needle),
                "{what} appears in the value of {}",
                String::from_utf8_lossy(k)
            );
        }
        assert!(!contains(&logs, needle), "{what} appears in the logs");
    }
}

/// Steps: write two secrets in two namespaces → copy one stored ciphertext
/// over another path, and over the same path in another namespace → both
/// reads fail with an integrity error and never return the other plaintext.
#[tokio::test]
async fn moved_ciphertext_fails_integrity() {
    let n = TestNode::start().await;
    let h = &n.http;
    let init = n.init_unsealed(1, 1).await;
    let a = n.login(&init["access_key"], "ns-a", &["admin"], None).await;
    let b = n.login(&init["access_key"], "ns-b", &["admin"], None).await;
    h.put(
        "/v1/kv/app/one",
        Some(&a),
        json!({"value": "plaintext-one"}),
    )
    .await;
    h.put(
        "/v1/kv/app/two",
        Some(&a),
        json!({"value": "plaintext-two"}),
    )
    .await;
    h.put("/v1/kv/app/one", Some(&b), json!({"value": "plaintext-b"}))
        .await;

    tracing::info!("--- step: move a ciphertext to another path");
    let dump = n.backend.dump();
    let one = dump
        .iter()
        .find(|(k, _)| k == b"kv/ns-a/app/one")
        .unwrap()
        .1
        .clone();
    n.backend.put_raw(b"kv/ns-a/app/two", &one);
    let (code, body) = h.get("/v1/kv/app/two", Some(&a)).await;
    assert_eq!(code, 500, "{body}");
    assert_error(&body, "integrity");
    assert!(!body.to_string().contains("plaintext"), "{body}");

    tracing::info!("--- step: move it to another namespace");
    n.backend.put_raw(b"kv/ns-b/app/one", &one);
    let (code, body) = h.get("/v1/kv/app/one", Some(&b)).await;
    assert_eq!(code, 500, "{body}");
    assert_error(&body, "integrity");

    tracing::info!("--- step: the original still reads");
    let (code, body) = h.get("/v1/kv/app/one", Some(&a)).await;
    assert_eq!((code, body["value"].as_str()), (200, Some("plaintext-one")));
    n.server.shutdown().await.unwrap();
}
