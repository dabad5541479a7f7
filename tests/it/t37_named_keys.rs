//! Named encryption keys over REST, on an in-process node: managed by the
//! namespace's admins, used under `encrypt` / `decrypt` policies on
//! `keys/<name>` and nothing else, versions and their retirement, failures
//! that say what happened and leak nothing, every use in the audit log, the
//! sealed node, and the encryption limit of a key version.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{assert_error, captured_logs, TestNode};
use crate::t87_audit::records;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("valid base64")
}

fn last_log_index(n: &TestNode) -> u64 {
    n.server
        .replica()
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0)
}

/// The key calls a test made, as the audit log must show them: (operation,
/// path, status).
#[derive(Default)]
struct Calls(Vec<(String, String, u16)>);

impl Calls {
    /// Send a key call and remember it: `POST` with `body`, else `GET`.
    async fn send(
        &mut self,
        n: &TestNode,
        op: &str,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (code, resp) = match body {
            Some(b) => n.http.post(url, Some(token), b).await,
            None => n.http.get(url, Some(token)).await,
        };
        let path = url
            .strip_prefix("/v1/")
            .map(|p| p.split('?').next().unwrap_or(p))
            .map(|p| {
                // `keys/<name>[/action]` → `keys/<name>`; the list has none.
                let mut parts = p.split('/');
                match (parts.next(), parts.next()) {
                    (Some("keys"), Some(name)) => format!("keys/{name}"),
                    _ => String::new(),
                }
            })
            .unwrap_or_default();
        self.0.push((op.to_string(), path, code));
        (code, resp)
    }

    async fn encrypt(
        &mut self,
        n: &TestNode,
        token: &str,
        name: &str,
        plaintext: &[u8],
    ) -> (u16, Value) {
        let url = format!("/v1/keys/{name}/encrypt");
        let body = json!({ "plaintext": b64(plaintext) });
        self.send(n, "key.encrypt", &url, token, Some(body)).await
    }

    async fn decrypt(
        &mut self,
        n: &TestNode,
        token: &str,
        name: &str,
        ciphertext: &str,
    ) -> (u16, Value) {
        let url = format!("/v1/keys/{name}/decrypt");
        let body = json!({ "ciphertext": ciphertext });
        self.send(n, "key.decrypt", &url, token, Some(body)).await
    }
}

/// A key's answer holds its metadata fields and nothing else, and no
/// string in it could be key material (a run of 40 or more base64 or hex
/// characters: a 32-byte key is 44 in base64, 64 in hex; the uid inside a
/// key id is 32).
fn assert_metadata_only(info: &Value) {
    let fields = |v: &Value| -> BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("an object: {v}"))
            .keys()
            .cloned()
            .collect()
    };
    let expected: BTreeSet<String> = [
        "namespace",
        "name",
        "latest_version",
        "min_decryption_version",
        "key_id",
        "created_at",
        "exhausted",
        "versions",
    ]
    .map(String::from)
    .into();
    assert_eq!(fields(info), expected, "{info}");
    for v in info["versions"].as_array().unwrap() {
        let expected: BTreeSet<String> =
            ["version", "created_at", "key_id"].map(String::from).into();
        assert_eq!(fields(v), expected, "{v}");
    }
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(info, &mut all);
    for s in all {
        let longest = s
            .split(|c: char| !(c.is_ascii_alphanumeric() || "+=_-".contains(c)))
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest < 40, "{s:?} could hold key material");
    }
}

/// `ciphertext` with one character of its payload changed.
fn tampered(ciphertext: &str) -> String {
    let (head, body) = ciphertext.rsplit_once(':').unwrap();
    let mut body: Vec<char> = body.chars().collect();
    let i = body.len() / 2;
    body[i] = if body[i] == 'A' { 'B' } else { 'A' };
    format!("{head}:{}", body.into_iter().collect::<String>())
}

/// `ciphertext` labelled with another version.
fn relabelled(ciphertext: &str, version: u32) -> String {
    let (_, body) = ciphertext.rsplit_once(':').unwrap();
    format!("kstash:v{version}:{body}")
}

/// Steps: a node with an audit file that HMACs secret values; an admin of
/// team-a →
/// 1. create `k1` twice with one Idempotency-Key (one key, the same
///    answer), again without a key or with another → 409; create `k2`;
///    get and list (paged);
///    every answer is metadata only;
/// 2. encrypt under v1, rotate twice with one Idempotency-Key (one new
///    version);
/// 3. a token with `encrypt`/`decrypt` on `keys/k1` and one with every
///    secret capability on `*` manage nothing (403, nothing proposed);
/// 4. the first encrypts and decrypts with k1 (v2, and the v1 ciphertext)
///    and reads its metadata, but not k2, not secrets, not the list; the
///    second uses no key;
/// 5. tampered, another key's, relabelled and unknown-version ciphertexts →
///    400 saying so, no plaintext;
/// 6. min_decryption_version 2 retires v1 (400), never goes down, not past
///    the latest;
/// 7. team-b's admin cannot use team-a's k1 (404), and its own k1 does not
///    decrypt team-a's ciphertexts;
/// 8. 64 KiB round trips, 64 KiB + 1 → 413;
/// 9. the audit log holds every key call, in order, with its path and
///    status, and no plaintext, not even as an HMAC (a secret write's value
///    is HMAC'd); neither do the node's logs;
/// 10. sealed: every key route → 503 `sealed`.
#[tokio::test]
async fn named_keys_over_rest() {
    let dir = tempfile::Builder::new()
        .prefix("audit-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let file = dir.path().join("audit.log");
    let audit = file.to_string_lossy().to_string();
    let n = TestNode::start_with(move |a| {
        a.audit_file = Some(audit);
        a.audit_hmac_values = Some(true);
    })
    .await;
    let init = n.init_unsealed(1, 1).await;
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    let mut calls = Calls::default();
    let marker = hex::encode(kstash::secret::random_bytes::<8>());
    let p1 = format!("plaintext one {marker}").into_bytes();
    let p2 = format!("plaintext two {marker}\0\u{ff}").into_bytes();

    tracing::info!("--- step 1: create, get, list");
    let bearer = format!("Bearer {admin}");
    let mut created = Vec::new();
    for _ in 0..2 {
        let (code, info) = n
            .http
            .send_with_headers(
                Method::POST,
                "/v1/keys/k1",
                &[("Authorization", &bearer), ("Idempotency-Key", "create-k1")],
                Some("{}".into()),
            )
            .await;
        calls.0.push(("key.create".into(), "keys/k1".into(), code));
        assert_eq!(code, 200, "{info}");
        created.push(info);
    }
    let k1 = created[0].clone();
    assert_eq!(created[1], k1, "a repeat gets the first answer");
    assert_metadata_only(&k1);
    assert_eq!(
        (k1["namespace"].as_str(), k1["name"].as_str()),
        (Some("team-a"), Some("k1"))
    );
    assert_eq!(
        (
            k1["latest_version"].as_u64(),
            k1["min_decryption_version"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(k1["exhausted"], false);
    let k1_v1 = k1["key_id"].as_str().unwrap().to_string();
    assert!(
        k1_v1.starts_with("kstash:team-a/k1:") && k1_v1.ends_with(":v1"),
        "{k1_v1}"
    );
    assert_eq!(k1["versions"][0]["key_id"], k1_v1.as_str());
    let (code, e) = calls
        .send(&n, "key.create", "/v1/keys/k1", &admin, Some(json!({})))
        .await;
    assert_eq!(code, 409, "{e}");
    assert_error(&e, "conflict");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kstash key rotate k1"),
        "{e}"
    );
    let (code, e) = n
        .http
        .send_with_headers(
            Method::POST,
            "/v1/keys/k1",
            &[
                ("Authorization", &bearer),
                ("Idempotency-Key", "create-k1-b"),
            ],
            Some("{}".into()),
        )
        .await;
    calls.0.push(("key.create".into(), "keys/k1".into(), code));
    assert_eq!(code, 409, "another key is another create: {e}");
    assert_error(&e, "conflict");
    let (code, k2) = calls
        .send(&n, "key.create", "/v1/keys/k2", &admin, Some(json!({})))
        .await;
    assert_eq!(code, 200, "{k2}");
    assert_metadata_only(&k2);
    let (code, got) = calls.send(&n, "key.get", "/v1/keys/k1", &admin, None).await;
    assert_eq!((code, &got), (200, &k1));
    let (code, list) = calls.send(&n, "key.list", "/v1/keys", &admin, None).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list, json!({"keys": ["k1", "k2"], "truncated": false}));
    let (code, page) = calls
        .send(&n, "key.list", "/v1/keys?limit=1", &admin, None)
        .await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(
        page,
        json!({"keys": ["k1"], "truncated": true, "cursor": "k1"})
    );
    let (code, page) = calls
        .send(&n, "key.list", "/v1/keys?cursor=k1&limit=1", &admin, None)
        .await;
    assert_eq!((code, &page["keys"]), (200, &json!(["k2"])), "{page}");

    tracing::info!("--- step 2: encrypt under v1, rotate once with one key");
    let (code, c1) = calls.encrypt(&n, &admin, "k1", &p1).await;
    assert_eq!(code, 200, "{c1}");
    assert_eq!(c1["key_version"], 1);
    assert_eq!(c1["key_id"], k1_v1.as_str());
    let c1 = c1["ciphertext"].as_str().unwrap().to_string();
    assert!(c1.starts_with("kstash:v1:"), "{c1}");
    let mut rotated = Vec::new();
    for _ in 0..2 {
        let (code, info) = n
            .http
            .send_with_headers(
                Method::POST,
                "/v1/keys/k1/rotate",
                &[
                    ("Authorization", &bearer),
                    ("Idempotency-Key", "rotate-k1-a"),
                ],
                Some("{}".into()),
            )
            .await;
        calls.0.push(("key.rotate".into(), "keys/k1".into(), code));
        assert_eq!(code, 200, "{info}");
        rotated.push(info);
    }
    assert_eq!(rotated[0], rotated[1], "a repeat does not rotate twice");
    let k1 = rotated[0].clone();
    assert_metadata_only(&k1);
    assert_eq!(k1["latest_version"], 2);
    let k1_v2 = k1["key_id"].as_str().unwrap().to_string();
    assert!(k1_v2.ends_with(":v2") && k1_v2 != k1_v1, "{k1_v2}");
    let versions: Vec<&Value> = k1["versions"].as_array().unwrap().iter().collect();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["key_id"], k1_v1.as_str());
    assert_eq!(versions[1]["key_id"], k1_v2.as_str());

    tracing::info!("--- step 3: non-admins manage nothing");
    let put_policy = |name: &'static str, rules: Value| {
        let h = &n.http;
        let admin = admin.clone();
        async move {
            let (code, body) = h
                .put(
                    &format!("/v1/namespaces/team-a/policies/{name}"),
                    Some(&admin),
                    json!({ "rules": rules }),
                )
                .await;
            assert_eq!(code, 204, "{body}");
        }
    };
    put_policy(
        "kek-user",
        json!([{"path": "keys/k1", "capabilities": ["encrypt", "decrypt"]}]),
    )
    .await;
    put_policy(
        "kv-all",
        json!([{"path": "*", "capabilities": ["read", "create", "update", "delete", "list"]}]),
    )
    .await;
    let (code, body) = n
        .http
        .put(
            "/v1/kv/app/db",
            Some(&admin),
            json!({"value": "db-password"}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let user = n
        .login(&init["access_key"], "team-a", &["kek-user"], None)
        .await;
    let kv_all = n
        .login(&init["access_key"], "team-a", &["kv-all"], None)
        .await;
    let before = last_log_index(&n);
    for token in [&user, &kv_all] {
        for (op, url, body) in [
            ("key.create", "/v1/keys/k3", Some(json!({}))),
            ("key.rotate", "/v1/keys/k1/rotate", Some(json!({}))),
            (
                "key.config",
                "/v1/keys/k1/config",
                Some(json!({"min_decryption_version": 2})),
            ),
            ("key.list", "/v1/keys", None),
        ] {
            let (code, e) = calls.send(&n, op, url, token, body).await;
            assert_eq!(code, 403, "{op}: {e}");
            assert_error(&e, "forbidden");
        }
    }
    assert_eq!(last_log_index(&n), before, "nothing was proposed");
    let (code, e) = calls.send(&n, "key.get", "/v1/keys/k3", &admin, None).await;
    assert_eq!(code, 404, "{e}");
    let (code, got) = calls.send(&n, "key.get", "/v1/keys/k1", &admin, None).await;
    assert_eq!((code, &got), (200, &k1), "k1 unchanged");

    tracing::info!("--- step 4: encrypt and decrypt on keys/k1 and nothing else");
    let (code, c2) = calls.encrypt(&n, &user, "k1", &p2).await;
    assert_eq!(code, 200, "{c2}");
    assert_eq!(
        (c2["key_version"].as_u64(), c2["key_id"].as_str()),
        (Some(2), Some(k1_v2.as_str()))
    );
    let c2 = c2["ciphertext"].as_str().unwrap().to_string();
    assert!(c2.starts_with("kstash:v2:"), "{c2}");
    for (ciphertext, plaintext, version, key_id) in [(&c2, &p2, 2, &k1_v2), (&c1, &p1, 1, &k1_v1)] {
        let (code, d) = calls.decrypt(&n, &user, "k1", ciphertext).await;
        assert_eq!(code, 200, "{d}");
        assert_eq!(&unb64(&d["plaintext"]), plaintext);
        assert_eq!(
            (d["key_version"].as_u64(), d["key_id"].as_str()),
            (Some(version), Some(key_id.as_str()))
        );
    }
    let (code, got) = calls.send(&n, "key.get", "/v1/keys/k1", &user, None).await;
    assert_eq!((code, &got), (200, &k1), "its metadata");
    let (code, e) = calls.encrypt(&n, &user, "k2", &p1).await;
    assert_eq!(code, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("encrypt on team-a/keys/k2"),
        "{e}"
    );
    let (code, e) = calls.decrypt(&n, &user, "k2", &c1).await;
    assert_eq!(code, 403, "{e}");
    let (code, e) = calls.send(&n, "key.get", "/v1/keys/k2", &user, None).await;
    assert_eq!(code, 403, "{e}");
    let (code, e) = n.http.get("/v1/kv/app/db", Some(&user)).await;
    assert_eq!(code, 403, "no secret reads: {e}");
    let (code, e) = calls.encrypt(&n, &kv_all, "k1", &p1).await;
    assert_eq!(code, 403, "read/create/… on * grant no encrypt: {e}");
    let (code, e) = calls.decrypt(&n, &kv_all, "k1", &c1).await;
    assert_eq!(code, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("decrypt on team-a/keys/k1"),
        "{e}"
    );
    let (code, e) = calls
        .send(&n, "key.get", "/v1/keys/k1", &kv_all, None)
        .await;
    assert_eq!(code, 403, "{e}");
    let (code, _) = n.http.get("/v1/kv/app/db", Some(&kv_all)).await;
    assert_eq!(code, 200, "the secret policy still works");

    tracing::info!("--- step 5: ciphertexts that do not decrypt say why");
    let (code, other) = calls.encrypt(&n, &admin, "k2", &p1).await;
    assert_eq!(code, 200, "{other}");
    let other = other["ciphertext"].as_str().unwrap().to_string();
    for (what, ciphertext, says) in [
        (
            "tampered",
            tampered(&c2),
            "does not decrypt under key team-a/k1 version 2",
        ),
        (
            "another key's",
            other.clone(),
            "does not decrypt under key team-a/k1 version 1",
        ),
        (
            "relabelled v2 as v1",
            relabelled(&c2, 1),
            "does not decrypt under key team-a/k1 version 1",
        ),
        (
            "relabelled v1 as v2",
            relabelled(&c1, 2),
            "does not decrypt under key team-a/k1 version 2",
        ),
        ("an unknown version", relabelled(&c2, 9), "versions 1 to 2"),
        (
            "malformed",
            "kstash:v2:%%%".to_string(),
            "malformed ciphertext",
        ),
        (
            "not a ciphertext",
            "vault:v1:AAAA".to_string(),
            "malformed ciphertext",
        ),
    ] {
        let (code, e) = calls.decrypt(&n, &user, "k1", &ciphertext).await;
        assert_eq!(code, 400, "{what}: {e}");
        assert_error(&e, "bad_request");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.contains(says), "{what}: {m}");
        assert!(e.get("plaintext").is_none(), "{what}: {e}");
        for p in [&p1, &p2] {
            assert!(!m.contains(&b64(p)) && !m.contains(&marker), "{what}: {m}");
        }
    }

    tracing::info!("--- step 6: min_decryption_version retires versions");
    let (code, info) = calls
        .send(
            &n,
            "key.config",
            "/v1/keys/k1/config",
            &admin,
            Some(json!({"min_decryption_version": 2})),
        )
        .await;
    assert_eq!(code, 200, "{info}");
    assert_metadata_only(&info);
    assert_eq!(info["min_decryption_version"], 2);
    let (code, e) = calls.decrypt(&n, &user, "k1", &c1).await;
    assert_eq!(code, 400, "{e}");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("version 1") && m.contains("retired"), "{m}");
    let (code, d) = calls.decrypt(&n, &user, "k1", &c2).await;
    assert_eq!((code, unb64(&d["plaintext"])), (200, p2.clone()), "{d}");
    for (min, says) in [(1, "never goes down"), (3, "1 to the latest version (2)")] {
        let (code, e) = calls
            .send(
                &n,
                "key.config",
                "/v1/keys/k1/config",
                &admin,
                Some(json!({ "min_decryption_version": min })),
            )
            .await;
        assert_eq!(code, 400, "{min}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{e}"
        );
    }
    let (code, got) = calls.send(&n, "key.get", "/v1/keys/k1", &admin, None).await;
    assert_eq!((code, &got["min_decryption_version"]), (200, &json!(2)));

    tracing::info!("--- step 7: another namespace's token");
    let b_admin = n
        .login(&init["access_key"], "team-b", &["admin"], None)
        .await;
    let (code, e) = calls.encrypt(&n, &b_admin, "k1", &p1).await;
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no key k1 in namespace team-b"),
        "{e}"
    );
    let (code, e) = calls.decrypt(&n, &b_admin, "k1", &c2).await;
    assert_eq!(code, 404, "{e}");
    let (code, b_k1) = calls
        .send(&n, "key.create", "/v1/keys/k1", &b_admin, Some(json!({})))
        .await;
    assert_eq!(code, 200, "{b_k1}");
    assert_ne!(b_k1["key_id"], k1_v1.as_str(), "another key, another id");
    let (code, e) = calls.decrypt(&n, &b_admin, "k1", &c1).await;
    assert_eq!(
        code, 400,
        "team-b's k1 does not open team-a's ciphertext: {e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team-b/k1 version 1"),
        "{e}"
    );

    tracing::info!("--- step 8: the 64 KiB bound");
    let max = kstash::keys::MAX_PLAINTEXT_BYTES;
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let (code, c) = calls.encrypt(&n, &user, "k1", &big).await;
    assert_eq!(code, 200, "{c}");
    let (code, d) = calls
        .decrypt(&n, &user, "k1", c["ciphertext"].as_str().unwrap())
        .await;
    assert_eq!(code, 200);
    assert!(unb64(&d["plaintext"]) == big, "64 KiB round trip");
    let (code, e) = calls.encrypt(&n, &user, "k1", &vec![0u8; max + 1]).await;
    assert_eq!(code, 413, "{e}");
    assert_error(&e, "too_large");

    tracing::info!("--- step 9: the audit log has every key call and no plaintext");
    let all = records(&file);
    let responses: Vec<(String, String, u16)> = all
        .iter()
        .filter(|r| r["type"] == "response")
        .filter(|r| {
            r["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("key."))
        })
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap_or_default().to_string(),
                r["status"].as_u64().unwrap() as u16,
            )
        })
        .collect();
    assert_eq!(responses, calls.0, "every key call, in order");
    let uses = all
        .iter()
        .filter(|r| r["type"] == "response" && r["operation"] == "key.encrypt")
        .find(|r| r["status"] == 200 && r["path"] == "keys/k1")
        .expect("a successful encryption is recorded");
    assert_eq!(uses["namespace"], "team-a", "{uses}");
    for r in all.iter().filter(|r| {
        r["operation"]
            .as_str()
            .is_some_and(|o| o.starts_with("key."))
    }) {
        assert!(
            r.get("value").is_none_or(Value::is_null),
            "not even an HMAC of a payload, with audit_hmac_values on: {r}"
        );
    }
    let put = all
        .iter()
        .find(|r| r["type"] == "request" && r["operation"] == "kv.put")
        .expect("the secret write is recorded");
    assert!(
        put["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("hmac-sha256:")),
        "audit_hmac_values is on for secret values: {put}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    for p in [&p1, &p2] {
        for needle in [b64(p), String::from_utf8_lossy(p).to_string()] {
            assert!(!text.contains(&needle), "the audit log holds a plaintext");
            assert!(!logs.contains(&needle), "the node's log holds a plaintext");
        }
    }
    assert!(!text.contains(&marker) && !logs.contains(&marker));

    tracing::info!("--- step 10: sealed");
    let keys = init["unseal_keys"].as_array().unwrap();
    let (code, body) = n
        .http
        .post("/v1/sys/seal", None, json!({ "keys": keys }))
        .await;
    assert_eq!(code, 200, "{body}");
    for (method, url, body) in [
        (Method::GET, "/v1/keys", None),
        (Method::GET, "/v1/keys/k1", None),
        (Method::POST, "/v1/keys/k9", Some(json!({}))),
        (Method::POST, "/v1/keys/k1/rotate", Some(json!({}))),
        (
            Method::POST,
            "/v1/keys/k1/encrypt",
            Some(json!({"plaintext": b64(&p1)})),
        ),
        (
            Method::POST,
            "/v1/keys/k1/decrypt",
            Some(json!({ "ciphertext": c2 })),
        ),
    ] {
        let (code, e) = n
            .http
            .send(method, url, Some(&user), body.map(|b| b.to_string()))
            .await;
        assert_eq!(code, 503, "{url}: {e}");
        assert_error(&e, "sealed");
    }

    n.server.shutdown().await.unwrap();
}

/// Steps: a node with an encryption limit of 3 → create `k` → three
/// encryptions → the fourth → 503 naming the limit and `kstash key rotate
/// k`; get says `exhausted` → ciphertexts still decrypt → rotate → three
/// more encryptions under v2 → the next → 503 again (each version has its
/// own count) → every ciphertext of both versions decrypts.
#[tokio::test]
async fn a_key_version_stops_at_its_encryption_limit_until_rotated() {
    let n = TestNode::start_with(|a| a.encryption_limit = Some(3)).await;
    let init = n.init_unsealed(1, 1).await;
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    let mut calls = Calls::default();
    let (code, info) = calls
        .send(&n, "key.create", "/v1/keys/k", &admin, Some(json!({})))
        .await;
    assert_eq!(code, 200, "{info}");

    let mut made = Vec::new();
    for version in [1u64, 2] {
        tracing::info!("--- step: three encryptions under v{version}, then the limit");
        for i in 0..3 {
            let plaintext = format!("seed {version}.{i}").into_bytes();
            let (code, c) = calls.encrypt(&n, &admin, "k", &plaintext).await;
            assert_eq!(code, 200, "v{version} #{i}: {c}");
            assert_eq!(c["key_version"], version);
            made.push((c["ciphertext"].as_str().unwrap().to_string(), plaintext));
        }
        let (code, e) = calls.encrypt(&n, &admin, "k", b"one too many").await;
        assert_eq!(code, 503, "{e}");
        assert_error(&e, "unavailable");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(
            m.contains(&format!(
                "version {version} reached its encryption limit (3)"
            )) && m.contains("kstash key rotate k"),
            "{m}"
        );
        let (code, info) = calls.send(&n, "key.get", "/v1/keys/k", &admin, None).await;
        assert_eq!(code, 200, "{info}");
        assert_eq!(
            (info["latest_version"].as_u64(), &info["exhausted"]),
            (Some(version), &json!(true))
        );
        tracing::info!("--- step: what was encrypted still decrypts");
        for (ciphertext, plaintext) in &made {
            let (code, d) = calls.decrypt(&n, &admin, "k", ciphertext).await;
            assert_eq!(
                (code, unb64(&d["plaintext"])),
                (200, plaintext.clone()),
                "{d}"
            );
        }
        let (code, info) = calls
            .send(
                &n,
                "key.rotate",
                "/v1/keys/k/rotate",
                &admin,
                Some(json!({})),
            )
            .await;
        assert_eq!(code, 200, "{info}");
        assert_eq!(
            (info["latest_version"].as_u64(), &info["exhausted"]),
            (Some(version + 1), &json!(false))
        );
    }

    n.server.shutdown().await.unwrap();
}

/// Named keys on a three-node cluster, every change through a follower:
/// 1. init, unseal, an admin token of `app`;
/// 2. create `k` through one follower: the answer shows version 1 (the
///    node caught up before answering); rotate it at once through the other
///    follower: version 2;
/// 3. every node reports the same key (uid, both versions) in its metadata;
/// 4. a ciphertext made on one node decrypts on every other, for both
///    versions; a second create through the leader is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn named_keys_replicate_and_answer_through_any_node() {
    use crate::common::{three_node_cluster, ClusterCerts, LinkCuts};
    use crate::t76_faults::{cluster_root, init_and_unseal, login, SETTLE};

    let root = cluster_root();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    tracing::info!("--- step 1: init, unseal, admin token");
    let init = init_and_unseal(&nodes).await;
    let token = login(&nodes[0], &init).await;
    let leader = nodes[0].leader().expect("a leader");
    let followers: Vec<_> = nodes.iter().filter(|n| n.id() != leader).collect();
    let leader_node = nodes.iter().find(|n| n.id() == leader).unwrap();

    tracing::info!("--- step 2: create and rotate through the followers");
    let (code, created) = followers[0]
        .http
        .post("/v1/keys/k", Some(&token), json!({}))
        .await;
    assert_eq!(code, 200, "{created}");
    assert_eq!(created["latest_version"], 1, "{created}");
    let (code, rotated) = followers[1]
        .http
        .post("/v1/keys/k/rotate", Some(&token), json!({}))
        .await;
    assert_eq!(code, 200, "{rotated}");
    assert_eq!(rotated["latest_version"], 2, "{rotated}");
    assert_ne!(rotated["key_id"], created["key_id"]);

    tracing::info!("--- step 3: the same key on every node");
    for n in &nodes {
        let (code, info) = n.http.get("/v1/keys/k", Some(&token)).await;
        assert_eq!(code, 200, "node {}: {info}", n.id());
        assert_eq!(info["key_id"], rotated["key_id"], "node {}", n.id());
        assert_eq!(info["versions"], rotated["versions"], "node {}", n.id());
    }

    tracing::info!("--- step 4: encrypt on one node, decrypt on the others");
    let (code, v2) = followers[0]
        .http
        .post(
            "/v1/keys/k/encrypt",
            Some(&token),
            json!({"plaintext": b64(b"seed-2")}),
        )
        .await;
    assert_eq!(code, 200, "{v2}");
    assert_eq!(v2["key_version"], 2, "{v2}");
    for n in &nodes {
        let (code, out) = n
            .http
            .post(
                "/v1/keys/k/decrypt",
                Some(&token),
                json!({"ciphertext": v2["ciphertext"]}),
            )
            .await;
        assert_eq!(code, 200, "node {}: {out}", n.id());
        assert_eq!(unb64(&out["plaintext"]), b"seed-2");
    }
    let (code, again) = leader_node
        .http
        .post("/v1/keys/k", Some(&token), json!({}))
        .await;
    assert_eq!(code, 409, "{again}");
    assert_error(&again, "conflict");
}
