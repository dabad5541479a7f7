//! Listing costs what the names cost (issue 13, point 4): a listing reads
//! keys only, skips folders' subtrees, stops at its limit, and says so —
//! `truncated` and a `cursor` — in REST, gRPC and the CLI.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use kstash::api::grpc::pb;
use kstash::clock::SystemClock;
use kstash::keyspace::{kv_key, KV_PREFIX};
use kstash::service::MAX_LIST;
use kstash::storage::memory::MemoryBackend;
use kstash::storage::{Backend, BatchOp, KvPairs, StorageError};
use pb::kv_client::KvClient;
use pb::policies_client::PoliciesClient;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::common::{assert_error, TestNode};

const BIN: &str = env!("CARGO_BIN_EXE_kstash");

/// The memory backend, counting what reads hand out below `kv/`: value
/// bytes (`get`, `scan_prefix`) and keys (`scan_keys`), while `on`.
struct Counting {
    inner: Arc<MemoryBackend>,
    on: AtomicBool,
    kv_value_bytes: AtomicUsize,
    kv_keys: AtomicUsize,
}

impl Counting {
    fn start(&self) {
        self.kv_value_bytes.store(0, Ordering::SeqCst);
        self.kv_keys.store(0, Ordering::SeqCst);
        self.on.store(true, Ordering::SeqCst);
    }

    /// (value bytes, keys) read below `kv/` since `start`.
    fn stop(&self) -> (usize, usize) {
        self.on.store(false, Ordering::SeqCst);
        (
            self.kv_value_bytes.load(Ordering::SeqCst),
            self.kv_keys.load(Ordering::SeqCst),
        )
    }

    fn values(&self, n: usize) {
        if self.on.load(Ordering::SeqCst) {
            self.kv_value_bytes.fetch_add(n, Ordering::SeqCst);
        }
    }
}

impl Backend for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn may_block(&self) -> bool {
        false
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let v = self.inner.get(key)?;
        if key.starts_with(KV_PREFIX.as_bytes()) {
            self.values(v.as_ref().map_or(0, Vec::len));
        }
        Ok(v)
    }
    fn scan_prefix(&self, prefix: &[u8], limit: Option<usize>) -> Result<KvPairs, StorageError> {
        let pairs = self.inner.scan_prefix(prefix, limit)?;
        self.values(
            pairs
                .iter()
                .filter(|(k, _)| k.starts_with(KV_PREFIX.as_bytes()))
                .map(|(_, v)| v.len())
                .sum(),
        );
        Ok(pairs)
    }
    fn scan_keys(
        &self,
        prefix: &[u8],
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let keys = self.inner.scan_keys(prefix, from, limit)?;
        if self.on.load(Ordering::SeqCst) && prefix.starts_with(KV_PREFIX.as_bytes()) {
            self.kv_keys.fetch_add(keys.len(), Ordering::SeqCst);
        }
        Ok(keys)
    }
    fn apply(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
        self.inner.apply(batch)
    }
    fn replace_all(&self, pairs: KvPairs) -> Result<(), StorageError> {
        self.inner.replace_all(pairs)
    }
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Every REST page of `prefix`'s listing with `limit` (none: the server's).
async fn rest_pages(n: &TestNode, token: &str, prefix: &str, limit: Option<u32>) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/v1/kv/{prefix}?list=true");
        if let Some(l) = limit {
            url.push_str(&format!("&limit={l}"));
        }
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", c.replace('/', "%2F")));
        }
        let (code, body) = n.http.get(&url, Some(token)).await;
        assert_eq!(code, 200, "{url}: {body}");
        let truncated = body["truncated"].as_bool().expect("truncated is a bool");
        cursor = body["cursor"].as_str().map(String::from);
        assert_eq!(
            truncated,
            cursor.is_some(),
            "a cursor exactly when truncated"
        );
        pages.push(body);
        if !truncated {
            return pages;
        }
        assert!(pages.len() < 100, "the listing must end");
    }
}

fn names(pages: &[Value]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p["keys"].as_array().unwrap().iter())
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// Run the CLI against the node; (exit code, stdout, stderr).
fn cli(n: &TestNode, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .env_clear()
        .env("KSTASH_ADDR", format!("http://{}", n.server.addr))
        .env("KSTASH_TOKEN", token)
        .env("KSTASH_TIMEOUT", "30s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_bounded_say_truncated_and_page_with_a_cursor() {
    // Steps:
    // 1. a node over a counting memory backend; init, unseal, admin token;
    // 2. three 1 MiB secrets through the API, then 3 x MAX_LIST + 3 more
    //    names and a folder of 20 000 secrets written straight to the store;
    // 3. REST: the first page has MAX_LIST names, truncated and a cursor;
    //    following cursors gives every name exactly once; no value byte of a
    //    secret is read and the keys read stay near the names (the folder's
    //    20 000 keys are skipped);
    // 4. REST: limit, bad cursors and limits are refused; an empty first
    //    page is still 404;
    // 5. gRPC: truncated and cursor, and the next page;
    // 6. policies: pages of one over REST and gRPC cover every name once;
    // 7. CLI: a truncated page notes it on stderr with the cursor; --all
    //    lists everything; JSON carries truncated and cursor.
    tracing::info!("--- step 1: node, init, admin token");
    let memory = Arc::new(MemoryBackend::new());
    let counting = Arc::new(Counting {
        inner: memory.clone(),
        on: AtomicBool::new(false),
        kv_value_bytes: AtomicUsize::new(0),
        kv_keys: AtomicUsize::new(0),
    });
    let n = TestNode::start_on(
        counting.clone(),
        memory.clone(),
        |_| {},
        Arc::new(SystemClock),
    )
    .await;
    let init = n.init_unsealed(1, 1).await;
    let admin = n.login(&init["access_key"], "team", &["admin"], None).await;

    tracing::info!("--- step 2: large secrets, many names, a big folder");
    let big = "x".repeat(1 << 20);
    for name in ["many/a-big-0", "many/a-big-1", "many/a-big-2"] {
        let (code, body) = n
            .http
            .put(
                &format!("/v1/kv/{name}"),
                Some(&admin),
                json!({"value": big}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let count = 3 * MAX_LIST + 3;
    let mut want: Vec<String> = vec!["a-big-0".into(), "a-big-1".into(), "a-big-2".into()];
    let mut batch = Vec::new();
    for i in 0..count - 3 {
        let name = format!("n{i:06}");
        batch.push(BatchOp::Put {
            key: kv_key("team", &format!("many/{name}")),
            value: vec![7u8; 100],
        });
        want.push(name);
    }
    for i in 0..20_000 {
        batch.push(BatchOp::Put {
            key: kv_key("team", &format!("many/m-folder/{i:05}")),
            value: vec![7u8; 100],
        });
    }
    want.push("m-folder/".into());
    want.sort();
    memory.apply(batch).unwrap();
    let total = want.len();

    tracing::info!("--- step 3: REST pages of the default limit");
    counting.start();
    let pages = rest_pages(&n, &admin, "many/", None).await;
    let (value_bytes, keys) = counting.stop();
    assert_eq!(pages[0]["keys"].as_array().unwrap().len(), MAX_LIST);
    assert_eq!(pages[0]["truncated"], true, "more than MAX_LIST names");
    assert_eq!(pages.len(), 4);
    assert_eq!(names(&pages), want, "every name exactly once, in order");
    assert_eq!(value_bytes, 0, "a listing reads no secret's value");
    assert!(
        keys <= total + 4 * 20,
        "keys read ({keys}) must stay near the names ({total}), the folder's 20 000 skipped"
    );

    tracing::info!("--- step 4: limit, bad input, empty listing");
    let pages = rest_pages(&n, &admin, "many/", Some(7000)).await;
    assert_eq!(pages.len(), 5);
    assert_eq!(names(&pages), want);
    let (code, body) = n
        .http
        .get("/v1/kv/many/?list=true&limit=50000", Some(&admin))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        body["keys"].as_array().unwrap().len(),
        MAX_LIST,
        "limit is cut to MAX_LIST"
    );
    assert_eq!(body["truncated"], true);
    for bad in [
        "limit=abc",
        "limit=-1",
        "cursor=a%2Fb",
        "cursor=..",
        "cursor=%2F",
        "cursor=a%00",
        "cursor=a%2F%2F",
    ] {
        let (code, body) = n
            .http
            .get(&format!("/v1/kv/many/?list=true&{bad}"), Some(&admin))
            .await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_error(&body, "bad_request");
    }
    let (code, _) = n.http.get("/v1/kv/nothing/?list=true", Some(&admin)).await;
    assert_eq!(code, 404, "an empty listing is still not found");
    let (code, body) = n
        .http
        .get("/v1/kv/many/?list=true&cursor=zzz", Some(&admin))
        .await;
    assert_eq!(code, 200, "a later page may be empty: {body}");
    assert_eq!(body, json!({"keys": [], "truncated": false}));

    tracing::info!("--- step 5: gRPC");
    let channel = Channel::from_shared(format!("http://{}", n.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = KvClient::new(channel.clone());
    let first = kv
        .list(authed(
            pb::ListSecretsRequest {
                prefix: "many/".into(),
                limit: 2,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.keys, want[..2]);
    assert!(first.truncated);
    assert_eq!(first.cursor, want[1]);
    let all = kv
        .list(authed(
            pb::ListSecretsRequest {
                prefix: "many/".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.keys.len(), MAX_LIST);
    assert!(
        all.truncated,
        "gRPC says truncated at the default limit too"
    );
    let next = kv
        .list(authed(
            pb::ListSecretsRequest {
                prefix: "many/".into(),
                cursor: "m-folder/".into(),
                limit: 2,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let at = want.iter().position(|w| w == "m-folder/").unwrap();
    assert_eq!(
        next.keys,
        want[at + 1..at + 3],
        "a folder cursor skips the folder"
    );
    let bad = kv
        .list(authed(
            pb::ListSecretsRequest {
                prefix: "many/".into(),
                cursor: "a/../b".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .expect_err("a cursor is checked like a path");
    assert_eq!(bad.code(), Code::InvalidArgument);

    tracing::info!("--- step 6: policies page too");
    let mut want_policies = vec!["admin".to_string()];
    for p in ["aa", "bb", "cc"] {
        let (code, body) = n
            .http
            .put(
                &format!("/v1/namespaces/team/policies/{p}"),
                Some(&admin),
                json!({"rules": [{"path": "x", "capabilities": ["read"]}]}),
            )
            .await;
        assert_eq!(code, 204, "{body}");
        want_policies.push(p.into());
    }
    want_policies.sort();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/namespaces/team/policies?limit=1&cursor={c}"),
            None => "/v1/namespaces/team/policies?limit=1".to_string(),
        };
        let (code, body) = n.http.get(&url, Some(&admin)).await;
        assert_eq!(code, 200, "{body}");
        seen.extend(
            body["policies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string()),
        );
        if body["truncated"] == false {
            break;
        }
        cursor = Some(body["cursor"].as_str().unwrap().to_string());
        assert!(seen.len() <= want_policies.len());
    }
    assert_eq!(seen, want_policies, "every policy once, admin in its place");
    let mut policies = PoliciesClient::new(channel);
    let page = policies
        .list_policies(authed(
            pb::ListPoliciesRequest {
                namespace: "team".into(),
                limit: 2,
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.policies, want_policies[..2]);
    assert!(page.truncated);
    assert_eq!(page.cursor, want_policies[1]);
    let rest = policies
        .list_policies(authed(
            pb::ListPoliciesRequest {
                namespace: "team".into(),
                cursor: page.cursor.clone(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.policies, want_policies[2..]);
    assert!(!rest.truncated && rest.cursor.is_empty());

    tracing::info!("--- step 7: CLI");
    let (code, out, err) = cli(&n, &admin, &["kv", "list", "many/"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), MAX_LIST);
    assert!(
        err.contains("truncated") && err.contains(&format!("--cursor '{}'", want[MAX_LIST - 1])),
        "the CLI says the listing is truncated and how to go on: {err}"
    );
    let (code, out, err) = cli(
        &n,
        &admin,
        &[
            "kv",
            "list",
            "many/",
            "--cursor",
            &want[MAX_LIST - 1],
            "--limit",
            "3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        want[MAX_LIST..MAX_LIST + 3]
    );
    let (code, out, err) = cli(&n, &admin, &["kv", "list", "many/", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        want,
        "--all lists every name"
    );
    assert!(!err.contains("truncated"), "{err}");
    let (code, out, err) = cli(
        &n,
        &admin,
        &["--format", "json", "kv", "list", "many/", "--limit", "2"],
    );
    assert_eq!(code, 0, "{err}");
    let body: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["truncated"], true);
    assert_eq!(body["cursor"], want[1].as_str());
    let (code, out, err) = cli(&n, &admin, &["policy", "list", "team", "--limit", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "aa");
    assert!(
        err.contains("truncated") && err.contains("--cursor 'aa'"),
        "{err}"
    );
    let (code, out, err) = cli(
        &n,
        &admin,
        &["policy", "list", "team", "--all", "--limit", "1"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), want_policies);
}
