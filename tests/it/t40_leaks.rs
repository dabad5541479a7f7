//! Invariants 1 and 2: ciphertext only below the barrier, bound to its place.

use base64::Engine;
use serde_json::{json, Value};

use crate::common::{assert_error, captured_logs, Http, TestNode};

/// Every secret string in a JSON response: unseal keys, access key, tokens.
pub(crate) fn collect_secrets(v: &Value, out: &mut Vec<String>) {
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

/// `bytes` as they may be written out: as is, in hex (both cases), in
/// base64 (standard and URL-safe; no padding, so padded forms match too),
/// and as Rust's `Debug` of a byte slice (`[1, 2, 3]`).
pub(crate) fn encodings(bytes: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    vec![
        bytes.to_vec(),
        hex::encode(bytes).into_bytes(),
        hex::encode_upper(bytes).into_bytes(),
        STANDARD_NO_PAD.encode(bytes).into_bytes(),
        URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
        format!("{bytes:?}").into_bytes(),
    ]
}

/// The byte forms a secret may leak in: [`encodings`] of its text and of its
/// raw decoded bytes.
pub(crate) fn needles(secret: &str) -> Vec<Vec<u8>> {
    let mut raw = vec![secret.as_bytes().to_vec()];
    let body = secret.get(4..).unwrap_or("");
    if let Ok(r) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body) {
        raw.push(r);
    }
    if let Ok(r) = base64::engine::general_purpose::STANDARD.decode(secret) {
        // An unseal key: x | y | checksum. The y part alone is key material.
        raw.push(r[1..33].to_vec());
        raw.push(r);
    }
    raw.iter().flat_map(|r| encodings(r)).collect()
}

/// Every file under `dir`, with its contents.
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
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

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
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
    let needles = exercise_secrets(&[&n.http]).await;

    tracing::info!("--- step: scan the backend and the logs");
    let dump = dump();
    assert!(
        dump.iter().any(|(k, _)| k.ends_with(STORED_SECRET)),
        "the secret is stored"
    );
    // Every byte under the data dir: the sled Raft log and snapshot files.
    n.server.node.sweep().await.unwrap();
    let files = files_under(n.data_dir.path());
    assert!(
        files.iter().any(|(p, _)| p.contains("raft-log")),
        "the Raft log is on disk"
    );
    let logs = captured_logs().lock().unwrap().clone();
    assert_no_leak(&needles, &files, &dump, &logs);
}

/// The known value written by [`exercise_secrets`].
pub(crate) const KNOWN_VALUE: &str = "correct-horse-battery-staple-7d1f0a";

/// The storage key under which [`exercise_secrets`] stores [`KNOWN_VALUE`].
pub(crate) const STORED_SECRET: &[u8] = b"kv/leaky/db/password";

/// Run every secret-bearing operation (init with gatekeeper tokens, unseal by
/// keys and by gatekeeper token, seal, mint tokens and gatekeeper tokens,
/// login, policy, put/get [`KNOWN_VALUE`], renew, rotate, access-key rotate,
/// rekey, revoke), each call through the next node of `hs` in turn (one
/// node: all through it); returns what a leak scan looks for: every secret
/// seen and the gatekeeper key, each in every form of [`needles`], labelled.
pub(crate) async fn exercise_secrets(hs: &[&Http]) -> Vec<(String, Vec<u8>)> {
    let at = |i: usize| hs[i % hs.len()];
    let mut secrets: Vec<String> = vec![KNOWN_VALUE.into()];

    tracing::info!("--- step: init and unseal both ways");
    let (code, init) = at(0)
        .post(
            "/v1/sys/init",
            None,
            json!({"shares": 3, "threshold": 2, "gatekeeper_tokens": 2}),
        )
        .await;
    assert_eq!(code, 200, "{init}");
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
        let (code, body) = at(1).post("/v1/sys/unseal", None, json!({"key": k})).await;
        assert_eq!(code, 200, "{body}");
    }
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap().to_string();
    let (code, sealed) = at(2)
        .post("/v1/sys/seal", None, json!({"gatekeeper_token": gk}))
        .await;
    assert_eq!(code, 200, "{sealed}");
    collect_secrets(&sealed, &mut secrets);
    let (code, unsealed) = at(2)
        .post(
            "/v1/sys/unseal",
            None,
            json!({"gatekeeper_token": sealed["gatekeeper_token"]}),
        )
        .await;
    assert_eq!(code, 200, "{unsealed}");
    collect_secrets(&unsealed, &mut secrets);

    tracing::info!("--- step: tokens, policy, secrets");
    let admin = at(1)
        .login(&init["access_key"], "leaky", &["admin"], None)
        .await;
    secrets.push(admin.clone());
    let policy = json!({"rules": [{"path": "db/*", "capabilities": ["read", "create", "update"]}]});
    let (code, body) = at(2)
        .put("/v1/namespaces/leaky/policies/db", Some(&admin), policy)
        .await;
    assert!((200..300).contains(&code), "{code}: {body}");
    let app = at(0)
        .login(&init["access_key"], "leaky", &["db"], Some("10m"))
        .await;
    secrets.push(app.clone());
    let (code, body) = at(1)
        .put(
            "/v1/kv/db/password",
            Some(&app),
            json!({"value": KNOWN_VALUE}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, got) = at(2).get("/v1/kv/db/password", Some(&app)).await;
    assert_eq!(got["value"], KNOWN_VALUE);
    let (code, body) = at(0)
        .post("/v1/auth/token/renew", Some(&app), json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, minted) = at(1)
        .post(
            "/v1/sys/gatekeeper-tokens",
            None,
            json!({"keys": [keys[0], keys[1]], "count": 2}),
        )
        .await;
    assert_eq!(code, 200, "{minted}");
    collect_secrets(&minted, &mut secrets);
    let (code, rotated) = at(2)
        .post(
            "/v1/sys/rotate",
            None,
            json!({"gatekeeper_token": unsealed["gatekeeper_token"]}),
        )
        .await;
    assert_eq!(code, 200, "{rotated}");
    collect_secrets(&rotated, &mut secrets);
    let (code, ak) = at(0)
        .post(
            "/v1/sys/access-key/rotate",
            None,
            json!({"gatekeeper_token": minted["gatekeeper_tokens"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{ak}");
    collect_secrets(&ak, &mut secrets);
    let (code, rekey) = at(1)
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
    let (code, body) = at(2)
        .put(
            "/v1/kv/db/password",
            Some(&app),
            json!({"value": KNOWN_VALUE}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let doomed = at(0).login(&ak["access_key"], "leaky", &["db"], None).await;
    secrets.push(doomed.clone());
    let (code, body) = at(1)
        .post("/v1/auth/token/revoke", Some(&doomed), json!({}))
        .await;
    assert!((200..300).contains(&code), "{code}: {body}");
    assert!(secrets.len() >= 14, "collected {} secrets", secrets.len());

    let mut all: Vec<(String, Vec<u8>)> = encodings(&gatekeeper_key)
        .into_iter()
        .map(|n| ("gatekeeper key".to_string(), n))
        .collect();
    for s in &secrets {
        for n in needles(s) {
            all.push((format!("{}…", &s[..6.min(s.len())]), n));
        }
    }
    all
}

/// Needles indexed by their first two bytes, so one pass over a haystack
/// finds any of them (hundreds of needles over megabytes of logs and sled
/// files, in an unoptimised test build). Needles shorter than 8 bytes are
/// left out: too short to mean anything.
pub(crate) struct NeedleSet<'a> {
    needles: &'a [(String, Vec<u8>)],
    by_start: Vec<Vec<usize>>,
}

impl<'a> NeedleSet<'a> {
    pub(crate) fn new(needles: &'a [(String, Vec<u8>)]) -> NeedleSet<'a> {
        let mut by_start = vec![Vec::new(); 1 << 16];
        for (i, (_, n)) in needles.iter().enumerate() {
            if n.len() >= 8 {
                by_start[usize::from(n[0]) << 8 | usize::from(n[1])].push(i);
            }
        }
        NeedleSet { needles, by_start }
    }

    /// The label of the first needle found in `haystack`, if any.
    pub(crate) fn find(&self, haystack: &[u8]) -> Option<&'a str> {
        for i in 0..haystack.len().saturating_sub(1) {
            let candidates =
                &self.by_start[usize::from(haystack[i]) << 8 | usize::from(haystack[i + 1])];
            for &c in candidates {
                let (what, n) = &self.needles[c];
                if haystack[i..].starts_with(n) {
                    return Some(what);
                }
            }
        }
        None
    }
}

/// Assert that no needle appears in any file, stored key or value, or in
/// the logs.
pub(crate) fn assert_no_leak(
    needles: &[(String, Vec<u8>)],
    files: &[(String, Vec<u8>)],
    dump: &[(Vec<u8>, Vec<u8>)],
    logs: &[u8],
) {
    assert!(!logs.is_empty(), "logs were captured at debug level");
    let set = NeedleSet::new(needles);
    for (what, n) in needles {
        let planted = [b"..".as_slice(), n, b".."].concat();
        assert!(set.find(&planted).is_some(), "the scan finds {what}");
    }
    for (path, bytes) in files {
        if let Some(what) = set.find(bytes) {
            panic!("{what} appears in {path}");
        }
    }
    for (k, v) in dump {
        if let Some(what) = set.find(k) {
            panic!(
                "{what} appears in stored key {}",
                String::from_utf8_lossy(k)
            );
        }
        if let Some(what) = set.find(v) {
            panic!(
                "{what} appears in the value of {}",
                String::from_utf8_lossy(k)
            );
        }
    }
    if let Some(what) = set.find(logs) {
        panic!("{what} appears in the logs");
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
