//! The audit log: every REST and gRPC operation recorded once (a request
//! line and a response line), no secret in plaintext, fail closed when the
//! device cannot write, and `kstash audit hash` matching the log on every
//! node of a cluster.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kstash::api::grpc::pb;
use kstash::api::grpc::pb::kv_client::KvClient;
use kstash::api::grpc::pb::sys_client::SysClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::common::{three_node_cluster, ClusterCerts, LinkCuts, TestNode};

/// Every line of an audit file, parsed.
pub(crate) fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A private directory for an audit file (the node refuses one that others
/// can read).
fn audit_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("audit-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

async fn node_with_audit(file: &Path) -> TestNode {
    let file = file.to_string_lossy().to_string();
    TestNode::start_with(move |a| a.audit_file = Some(file)).await
}

/// `msg` with the access token in its metadata.
fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// The records of each request id, and the operations in the order their
/// requests were recorded; checks each request has exactly one request
/// record and one response record, in that order.
fn pair_up(all: &[Value]) -> (BTreeMap<String, (Value, Value)>, Vec<String>) {
    let mut open: BTreeMap<String, Value> = BTreeMap::new();
    let mut done = BTreeMap::new();
    let mut order = Vec::new();
    for r in all {
        let id = r["request_id"].as_str().expect("a request id").to_string();
        match r["type"].as_str() {
            Some("request") => {
                assert!(
                    !open.contains_key(&id) && !done.contains_key(&id),
                    "request {id} recorded twice"
                );
                order.push(r["operation"].as_str().unwrap().to_string());
                open.insert(id, r.clone());
            }
            Some("response") => {
                let req = open
                    .remove(&id)
                    .unwrap_or_else(|| panic!("a response without its request: {r}"));
                assert_eq!(req["operation"], r["operation"]);
                done.insert(id, (req, r.clone()));
            }
            other => panic!("unknown record type {other:?}: {r}"),
        }
    }
    assert!(open.is_empty(), "requests without a response: {open:?}");
    (done, order)
}

/// Steps: a node auditing to a file → a walk-through over REST (init,
/// unseal, login, policies, secrets, tokens, gatekeeper tokens, rotate,
/// audit hash, refusals) and gRPC (login, put, get, a refused read) →
/// every operation appears once as a request and once as a response, in
/// order, with the outcome it had → status and health are not recorded →
/// no secret used (keys, tokens, values) appears in the file → the token's
/// accessor is the HMAC `audit hash` gives for it.
#[tokio::test]
async fn every_operation_is_recorded_once_and_no_secret_in_plaintext() {
    let dir = audit_dir();
    let file = dir.path().join("audit.log");
    let n = node_with_audit(&file).await;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the audit file is private");
    let mut secrets: Vec<String> = Vec::new();
    let mut expected: Vec<(&str, u16)> = Vec::new();

    tracing::info!("--- step: init and unseal over REST");
    let (code, _) = n.http.get("/v1/sys/status", None).await;
    assert_eq!(code, 200);
    let init = n.init_unsealed(3, 2).await;
    expected.extend([("sys.init", 200), ("sys.unseal", 200), ("sys.unseal", 200)]);
    for k in init["unseal_keys"].as_array().unwrap() {
        secrets.push(k.as_str().unwrap().into());
    }
    secrets.push(init["access_key"].as_str().unwrap().into());
    let gk = init["gatekeeper_tokens"][0].as_str().unwrap().to_string();
    secrets.push(gk.clone());

    tracing::info!("--- step: login, a policy, secrets");
    let admin = n
        .login(&init["access_key"], "team-a", &["admin"], None)
        .await;
    expected.push(("auth.access_key.login", 200));
    secrets.push(admin.clone());
    let t = Some(admin.as_str());
    let value = "correct horse battery staple 7f3a";
    secrets.push(value.into());
    let calls: Vec<(&str, &str, &str, Value, &str, u16)> = vec![
        (
            "PUT",
            "/v1/namespaces/team-a/policies/app-ro",
            "policy.put",
            json!({"rules": [{"path": "app/*", "capabilities": ["read"]}]}),
            "",
            204,
        ),
        (
            "GET",
            "/v1/namespaces/team-a/policies/app-ro",
            "policy.get",
            Value::Null,
            "",
            200,
        ),
        (
            "GET",
            "/v1/namespaces/team-a/policies",
            "policy.list",
            Value::Null,
            "",
            200,
        ),
        (
            "PUT",
            "/v1/kv/app/db",
            "kv.put",
            json!({ "value": value }),
            "",
            200,
        ),
        ("GET", "/v1/kv/app/db", "kv.get", Value::Null, "", 200),
        (
            "GET",
            "/v1/kv/app/?list=true",
            "kv.list",
            Value::Null,
            "",
            200,
        ),
        ("GET", "/v1/kv/app/none", "kv.get", Value::Null, "", 404),
        (
            "GET",
            "/v1/auth/token/self",
            "auth.token.lookup",
            Value::Null,
            "",
            200,
        ),
        (
            "POST",
            "/v1/auth/token/renew",
            "auth.token.renew",
            json!({}),
            "",
            200,
        ),
        (
            "GET",
            "/v1/kv/app/db",
            "kv.get",
            Value::Null,
            "kst_not-a-real-token-at-all-0000000000000000",
            401,
        ),
        (
            "PUT",
            "/v1/kv/app/bad",
            "kv.put",
            json!({"value": 7}),
            "",
            400,
        ),
        (
            "DELETE",
            "/v1/namespaces/team-a/policies/app-ro",
            "policy.delete",
            Value::Null,
            "",
            204,
        ),
    ];
    for (method, path, op, body, other_token, status) in &calls {
        let token = if other_token.is_empty() {
            t
        } else {
            Some(*other_token)
        };
        let (code, answer) = match *method {
            "GET" => n.http.get(path, token).await,
            "PUT" => n.http.put(path, token, body.clone()).await,
            "POST" => n.http.post(path, token, body.clone()).await,
            "DELETE" => n.http.delete(path, token).await,
            _ => unreachable!(),
        };
        assert_eq!(code, *status, "{method} {path}: {answer}");
        expected.push((op, *status));
    }

    tracing::info!("--- step: gatekeeper operations and a rotation");
    let (code, body) = n
        .http
        .post("/v1/sys/rotate", None, json!({"gatekeeper_token": gk}))
        .await;
    assert_eq!(code, 200, "{body}");
    expected.push(("sys.rotate", 200));
    let replacement = body["gatekeeper_token"].as_str().unwrap().to_string();
    secrets.push(replacement.clone());
    let keys: Vec<Value> = init["unseal_keys"].as_array().unwrap()[..2].to_vec();
    let (code, body) = n
        .http
        .post(
            "/v1/sys/gatekeeper-tokens",
            None,
            json!({"keys": keys, "count": 1}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    expected.push(("sys.gatekeeper_tokens.mint", 200));
    secrets.push(body["gatekeeper_tokens"][0].as_str().unwrap().into());
    let (code, _) = n
        .http
        .post(
            "/v1/sys/gatekeeper-tokens/list",
            None,
            json!({"keys": ["ksu_wrong"]}),
        )
        .await;
    assert!(code >= 400);
    expected.push(("sys.gatekeeper_tokens.list", code));

    tracing::info!("--- step: the token's HMAC, by audit hash");
    let (code, hashed) = n
        .http
        .post("/v1/sys/audit/hash", t, json!({ "input": admin }))
        .await;
    assert_eq!(code, 200, "{hashed}");
    expected.push(("sys.audit.hash", 200));
    let accessor = hashed["hash"].as_str().unwrap().to_string();
    assert!(accessor.starts_with("hmac-sha256:") && accessor.len() == 12 + 64);

    tracing::info!("--- step: gRPC");
    let channel = Channel::from_shared(format!("http://{}", n.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut sys = SysClient::new(channel.clone());
    let mut kv = KvClient::new(channel);
    sys.status(pb::StatusRequest {}).await.unwrap();
    let grpc_value = b"grpc secret value 91ab".to_vec();
    secrets.push(String::from_utf8(grpc_value.clone()).unwrap());
    kv.put(authed(
        pb::PutSecretRequest {
            path: "app/grpc".into(),
            value: grpc_value.clone(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    expected.push(("kv.put", 200));
    let got = kv
        .get(authed(
            pb::GetSecretRequest {
                path: "app/grpc".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, grpc_value);
    expected.push(("kv.get", 200));
    let refused = kv
        .get(pb::GetSecretRequest {
            path: "app/grpc".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    expected.push(("kv.get", 401));
    let (code, _) = n.http.get("/v1/sys/health", None).await;
    assert_eq!(code, 200);

    tracing::info!("--- step: revoke");
    let (code, _) = n.http.post("/v1/auth/token/revoke", t, json!({})).await;
    assert_eq!(code, 204);
    expected.push(("auth.token.revoke", 200));

    tracing::info!("--- step: read the log");
    let all = records(&file);
    let (pairs, order) = pair_up(&all);
    let ops: Vec<&str> = expected.iter().map(|(op, _)| *op).collect();
    assert_eq!(order, ops, "every operation, once, in order");
    let mut by_order: Vec<&(Value, Value)> = pairs.values().collect();
    by_order.sort_by_key(|(req, _)| {
        all.iter()
            .position(|r| r["request_id"] == req["request_id"] && r["type"] == "request")
    });
    for ((req, resp), (op, status)) in by_order.iter().zip(&expected) {
        assert_eq!(resp["operation"], *op);
        let recorded = resp["status"].as_u64().unwrap() as u16;
        if *status == 204 {
            assert_eq!(recorded, 200, "{op}: a 204 is an ok outcome");
        } else {
            assert_eq!(recorded, *status, "{op}: {resp}");
        }
        assert_eq!(req["node_id"], 1);
        assert!(req["time"].as_str().unwrap().ends_with('Z'));
        assert!(req["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        assert!(resp["duration_ms"].as_f64().unwrap() >= 0.0);
        let outcome = resp["outcome"].as_str().unwrap();
        assert_eq!(outcome == "ok", recorded == 200, "{resp}");
        if outcome != "ok" {
            assert_eq!(resp["error_code"], outcome);
        }
    }
    // The walk-through's token is named by its HMAC, never itself.
    let as_admin: Vec<&Value> = all
        .iter()
        .filter(|r| r["principal"]["accessor"] == accessor.as_str())
        .collect();
    assert!(
        as_admin.len() >= 20,
        "{} records name the token",
        as_admin.len()
    );
    assert!(as_admin
        .iter()
        .all(|r| r["principal"]["kind"] == "access_token" && r["namespace"] == "team-a"));
    // No value is logged, not even as an HMAC (audit_hmac_values is off).
    assert!(all.iter().all(|r| r.get("value").is_none()));

    tracing::info!("--- step: no secret in plaintext");
    let text = std::fs::read_to_string(&file).unwrap();
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret reached the audit log");
    }
}

/// Steps: a node auditing to a file, a secret written → the file made
/// read-only → every audited request (write, read, login) gets 503
/// `audit_failed`, the Raft log and the stored state unchanged; status still
/// answers → the file writable again → the same write succeeds without a
/// restart and is recorded; `kstash_audit_failures_total` counted the
/// refusals → the same with the file replaced by a directory.
#[tokio::test]
async fn an_unwritable_audit_file_refuses_requests_and_nothing_is_proposed() {
    let dir = audit_dir();
    let file = dir.path().join("audit.log");
    let n = node_with_audit(&file).await;
    let init = n.init_unsealed(1, 1).await;
    let token = n
        .login(&init["access_key"], "default", &["admin"], None)
        .await;
    let t = Some(token.as_str());
    let (code, _) = n.http.put("/v1/kv/a", t, json!({"value": "1"})).await;
    assert_eq!(code, 200);
    let log_index = || n.server.replica().raft().metrics().borrow().last_log_index;

    for how in ["read-only", "a directory"] {
        tracing::info!("--- step: the audit file becomes {how}");
        let moved: Option<PathBuf> = match how {
            "read-only" => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
                None
            }
            _ => {
                let aside = dir.path().join("audit.log.1");
                std::fs::rename(&file, &aside).unwrap();
                std::fs::create_dir(&file).unwrap();
                Some(aside)
            }
        };
        let before = (log_index(), n.backend.dump());
        let lines_before = records(&if let Some(a) = &moved {
            a.clone()
        } else {
            file.clone()
        })
        .len();
        for (code, body) in [
            n.http.put("/v1/kv/a", t, json!({"value": "2"})).await,
            n.http.put("/v1/kv/b", t, json!({"value": "3"})).await,
            n.http.get("/v1/kv/a", t).await,
            n.http.delete("/v1/kv/a", t).await,
            n.http
                .post(
                    "/v1/auth/access-key/login",
                    None,
                    json!({"access_key": init["access_key"], "namespace": "x", "policies": []}),
                )
                .await,
        ] {
            assert_eq!(code, 503, "{body}");
            assert_eq!(body["error"]["code"], "audit_failed", "{body}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(log_index(), before.0, "nothing was proposed");
        assert!(n.backend.dump() == before.1, "nothing was stored");
        let (code, _) = n.http.get("/v1/sys/status", None).await;
        assert_eq!(code, 200, "status needs no record");
        let (_, metrics) = n.http.get("/metrics", None).await;
        let failures = metrics
            .as_str()
            .expect("the exposition is text")
            .lines()
            .find(|l| l.starts_with("kstash_audit_failures_total "))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("kstash_audit_failures_total is exported");
        assert!(failures >= 5.0, "{failures}");

        tracing::info!("--- step: writable again, no restart");
        match &moved {
            None => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap()
            }
            Some(_) => std::fs::remove_dir(&file).unwrap(),
        }
        let (code, body) = n.http.put("/v1/kv/a", t, json!({"value": "2"})).await;
        assert_eq!(code, 200, "{body}");
        let after = records(&file);
        let last = after.last().expect("the write was recorded");
        assert_eq!(last["operation"], "kv.put");
        assert_eq!(last["outcome"], "ok");
        if let Some(aside) = &moved {
            assert_eq!(
                records(aside).len(),
                lines_before,
                "the old file kept its lines"
            );
        }
        let (code, _) = n.http.put("/v1/kv/a", t, json!({"value": "1"})).await;
        assert_eq!(code, 200);
    }
}

/// Steps: three nodes, each auditing to its own file → a token logged in
/// through node 1 writes through each node → `kstash audit hash` (the
/// real binary) against each node prints the same HMAC, which is the
/// accessor each node's log gives the token's records.
#[tokio::test]
async fn audit_hash_matches_the_log_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let nodes = three_node_cluster(
        root.path(),
        &certs,
        &cuts,
        |c| {
            c.audit_file = Some(
                c.data_dir
                    .parent()
                    .unwrap()
                    .join(format!(
                        "audit-{}.log",
                        c.data_dir.file_name().unwrap().to_string_lossy()
                    ))
                    .to_string_lossy()
                    .to_string(),
            )
        },
        Duration::from_secs(20),
    )
    .await;
    let files: Vec<PathBuf> = nodes
        .iter()
        .map(|n| {
            let d = &n.spec.data_dir;
            d.parent().unwrap().join(format!(
                "audit-{}.log",
                d.file_name().unwrap().to_string_lossy()
            ))
        })
        .collect();
    let (code, init) = nodes[0]
        .http
        .post("/v1/sys/init", None, json!({"shares": 1, "threshold": 1}))
        .await;
    assert_eq!(code, 200, "{init}");
    let (code, body) = nodes[0]
        .http
        .post(
            "/v1/sys/unseal",
            None,
            json!({"key": init["unseal_keys"][0]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    crate::common::wait_until(Duration::from_secs(20), "every node unsealed", || async {
        nodes.iter().all(|n| !n.server.node.is_sealed())
    })
    .await;
    let token = nodes[0]
        .http
        .login(&init["access_key"], "default", &["admin"], None)
        .await;
    for (i, n) in nodes.iter().enumerate() {
        let (code, body) = n
            .http
            .put(
                &format!("/v1/kv/from/{i}"),
                Some(&token),
                json!({"value": "v"}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    for (n, file) in nodes.iter().zip(&files) {
        // The node runs on this test's runtime: wait for the CLI off it.
        let (address, t) = (format!("http://{}", n.server.addr), token.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::procs::BIN)
                .env_clear()
                .env("KSTASH_TOKEN", &t)
                .args(["--address", &address])
                .args(["audit", "hash", &t])
                .output()
                .expect("kstash runs")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(hash.starts_with("hmac-sha256:"), "{hash}");
        let logged = records(file);
        let put = logged
            .iter()
            .find(|r| r["operation"] == "kv.put" && r["type"] == "request")
            .unwrap_or_else(|| panic!("node {} recorded its write", n.id()));
        assert_eq!(
            put["principal"]["accessor"],
            hash,
            "node {}: the log names the token by the HMAC audit hash prints",
            n.id()
        );
        assert_eq!(put["node_id"], n.id());
        assert!(!std::fs::read_to_string(file).unwrap().contains(&token));
    }
}
