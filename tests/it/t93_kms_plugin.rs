//! The KMS v2 plugin end to end, through a client that behaves like
//! kube-apiserver ([`crate::kms::ApiserverKms`]), in both serving modes:
//!
//! - server mode (`kstash server --kms-socket … --kms-key …`): the node
//!   serves its own socket; key and rotation made through the service
//!   layer in process;
//! - plugin mode (`kstash kms-plugin`, run in process through
//!   [`RemotePlugin`], and once as the real binary): key, policy and token
//!   made through the client library over REST, so these tests need the
//!   REST key routes (`/v1/keys/…`).
//!
//! Every wait is bounded; the status interval is 200 ms.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kstash::client::wire::LoginRequest;
use kstash::client::{Client, ClientOptions};
use kstash::plugins::kms::remote::{RemotePlugin, RemotePluginOptions};
use kstash::plugins::kms::{KmsKey, KmsOptions, SocketOptions};
use kstash::secret::SecretString;
use kstash::service::types::Consistency;
use serde_json::{json, Value};
use tonic::Code;

use crate::common::{
    captured_logs, three_node_cluster, wait_until, ClusterCerts, LinkCuts, TestNode,
};
use crate::kms::{validate_encrypt_response, ApiserverKms, Envelope};
use crate::t87_audit::records;

/// The key every test serves.
const NS: &str = "kube-system";
const NAME: &str = "kube-kek";
const KEY: &str = "kube-system/kube-kek";

/// The status interval of every socket here.
const INTERVAL: Duration = Duration::from_millis(200);

/// Longest wait for a status change (a few intervals, an election).
const SETTLE: Duration = Duration::from_secs(20);

/// The plugin's policy: encrypt and decrypt with the key, nothing else.
fn kms_policy() -> Value {
    json!({"rules": [{"path": format!("keys/{NAME}"), "capabilities": ["encrypt", "decrypt"]}]})
}

fn step(what: &str) {
    eprintln!("--- {what}");
}

/// A private directory for sockets and token files (short enough for a
/// Unix socket path).
fn private_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kms-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn mode_of(path: &Path) -> u32 {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(
        meta.file_type().is_socket(),
        "{} is a socket",
        path.display()
    );
    meta.permissions().mode() & 0o777
}

/// Change one character in the middle of a ciphertext's base64 body.
fn tampered(ciphertext: &[u8]) -> Vec<u8> {
    let mut t = ciphertext.to_vec();
    let at = t.len() / 2;
    t[at] = if t[at] == b'A' { b'B' } else { b'A' };
    t
}

/// Each of these must be refused with INVALID_ARGUMENT: what the
/// apiserver's limits forbid, a tampered ciphertext, and a key id from
/// another envelope.
async fn refuses_what_it_must(kms: &mut ApiserverKms, old: &Envelope, new: &Envelope) {
    let none = HashMap::new;
    let e = kms.encrypt_raw(vec![7; 513]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "a 513-byte seed: {e:?}");
    let e = kms.encrypt_raw(vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "an empty seed: {e:?}");
    let e = kms
        .decrypt_raw(&old.key_id, vec![b'k'; 1025], none())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "1 KiB + 1 of ciphertext: {e:?}"
    );
    let long_id = format!("{}{}", old.key_id, "0".repeat(1025 - old.key_id.len()));
    let e = kms
        .decrypt_raw(&long_id, old.ciphertext.clone(), none())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "1 KiB + 1 of key id: {e:?}"
    );
    let e = kms
        .decrypt_raw(&old.key_id, tampered(&old.ciphertext), none())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "a tampered ciphertext: {e:?}"
    );
    let e = kms
        .decrypt_raw(&new.key_id, old.ciphertext.clone(), none())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "another envelope's key id: {e:?}"
    );
    assert!(e.message().contains("different envelopes"), "{e:?}");
    let annotations = |bytes: usize| HashMap::from([("kms.kstash.io".to_string(), vec![0; bytes])]);
    let e = kms
        .decrypt_raw(&old.key_id, old.ciphertext.clone(), annotations(32 * 1024))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "32 KiB of annotations: {e:?}"
    );
    let e = kms
        .decrypt_raw(&old.key_id, old.ciphertext.clone(), annotations(70 * 1024))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "a 70 KiB message: {e:?}");
    // Still answering after all that.
    assert_eq!(kms.decrypt(old).await.unwrap(), old.seed);
}

/// Seal a 1-of-1 node with its unseal key.
async fn seal(node: &TestNode, unseal_key: &Value) {
    let (code, body) = node
        .http
        .post("/v1/sys/seal", None, json!({"keys": [unseal_key]}))
        .await;
    assert_eq!(code, 200, "{body}");
}

async fn unseal(node: &TestNode, unseal_key: &Value) {
    let (code, body) = node
        .http
        .post("/v1/sys/unseal", None, json!({"key": unseal_key}))
        .await;
    assert_eq!(code, 200, "{body}");
}

/// While kstash cannot serve the key, all three RPCs fail with
/// UNAVAILABLE (never a success, never healthz other than ok).
async fn all_unavailable(kms: &mut ApiserverKms, envelope: &Envelope, why: &str) {
    kms.wait_failing_because(Code::Unavailable, why, SETTLE)
        .await;
    let e = kms.encrypt_raw(vec![1; 32]).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "Encrypt: {e:?}");
    let e = kms.decrypt(envelope).await.unwrap_err().to_string();
    assert!(e.contains("Unavailable"), "Decrypt: {e}");
}

// ----- server mode -----------------------------------------------------------

/// A node serving the KMS socket `dir/kms.sock` (audit to `dir/audit.log`),
/// initialised 1-of-1 and unsealed; its init answer.
async fn kms_node(dir: &Path) -> (TestNode, Value) {
    let socket = format!("unix://{}", dir.join("kms.sock").display());
    let audit = dir.join("audit.log").to_string_lossy().to_string();
    let node = TestNode::start_with(|a| {
        a.kms_socket = Some(socket);
        a.kms_key = Some(KEY.into());
        a.kms_status_interval = Some(INTERVAL);
        a.audit_file = Some(audit);
    })
    .await;
    let init = node.init_unsealed(1, 1).await;
    (node, init)
}

/// The token holder of a new admin token of [`NS`], for the service layer.
async fn admin_holder(node: &TestNode, init: &Value) -> kstash::service::TokenHolder {
    let token = node.login(&init["access_key"], NS, &["admin"], None).await;
    node.server
        .node
        .authenticate(Some(&SecretString::new(token)), Consistency::Stale)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_serves_rotates_refuses_and_removes_its_socket() {
    // Steps: a node with --kms-socket: the socket is there at once, mode
    // 0600; Status is UNAVAILABLE while the key does not exist, then ok;
    // an envelope round trip; a rotation seen through Status, the new
    // envelope under the new key id, both envelopes decrypt; the
    // apiserver's limits, a tampered ciphertext and a key id of another
    // envelope are INVALID_ARGUMENT; every key use is audited as the KMS
    // socket, Status is not; on shutdown the socket file is gone.
    let dir = private_dir();
    let socket = dir.path().join("kms.sock");
    let (node, init) = kms_node(dir.path()).await;

    step("the socket exists at once, 0600; no key yet: UNAVAILABLE");
    assert_eq!(mode_of(&socket), 0o600);
    let mut kms = ApiserverKms::connect(&socket).await.unwrap();
    kms.wait_failing_because(Code::Unavailable, "no key kube-kek", SETTLE)
        .await;

    step("create the key: Status ok");
    let holder = admin_holder(&node, &init).await;
    node.server
        .node
        .create_key(&holder, NAME, None)
        .await
        .unwrap();
    let first = kms.wait_healthy(SETTLE).await;
    assert!(first.starts_with("kstash:kube-system/kube-kek:") && first.ends_with(":v1"));

    step("an envelope round trip");
    let e1 = kms.encrypt_seed().await.unwrap();
    assert!(e1.ciphertext.starts_with(b"kstash:v1:"));
    assert!(e1.annotations.is_empty());
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);

    step("rotate: Status reports the new key id; both envelopes decrypt");
    node.server
        .node
        .rotate_key(&holder, NAME, None)
        .await
        .unwrap();
    let second = kms.wait_rotation(&first, SETTLE).await;
    assert!(second.ends_with(":v2") && kms.rotation_seen());
    let e2 = kms.encrypt_seed().await.unwrap();
    assert_eq!(e2.key_id, second);
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);
    assert_eq!(kms.decrypt(&e2).await.unwrap(), e2.seed);

    step("limits, tampering and mixed envelopes are refused");
    refuses_what_it_must(&mut kms, &e1, &e2).await;

    step("the audit log names the KMS socket for every key use, and no Status");
    let audit = records(&dir.path().join("audit.log"));
    let kms_records: Vec<&Value> = audit
        .iter()
        .filter(|r| r["transport"] == "kms_socket")
        .collect();
    assert!(kms_records
        .iter()
        .all(|r| r["principal"]["kind"] == "kms_socket"
            && r["namespace"] == NS
            && r["path"] == "keys/kube-kek"));
    for op in ["kms.encrypt", "kms.decrypt"] {
        assert!(
            kms_records
                .iter()
                .any(|r| r["operation"] == op && r["type"] == "response" && r["outcome"] == "ok"),
            "{op} is audited"
        );
    }
    assert!(!audit.iter().any(|r| r["operation"] == "kms.status"));
    let text = serde_json::to_string(&audit).unwrap();
    let ciphertext = String::from_utf8(e1.ciphertext.clone()).unwrap();
    assert!(
        !text.contains(&ciphertext),
        "no ciphertext in the audit log"
    );

    step("shutdown removes the socket");
    let TestNode { server, .. } = node;
    server.shutdown().await.unwrap();
    assert!(!socket.exists(), "the socket file is gone");
    assert!(ApiserverKms::connect(&socket).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_sealed_is_unavailable_on_all_three_rpcs_until_unsealed() {
    // Steps: a node serving its key; an envelope; seal → Status, Encrypt
    // and Decrypt all UNAVAILABLE; unseal → Status ok again and the
    // envelope decrypts.
    let dir = private_dir();
    let socket = dir.path().join("kms.sock");
    let (node, init) = kms_node(dir.path()).await;
    let holder = admin_holder(&node, &init).await;
    node.server
        .node
        .create_key(&holder, NAME, None)
        .await
        .unwrap();
    let mut kms = ApiserverKms::connect(&socket).await.unwrap();
    let key_id = kms.wait_healthy(SETTLE).await;
    let e1 = kms.encrypt_seed().await.unwrap();

    step("seal: all three RPCs UNAVAILABLE");
    let unseal_key = &init["unseal_keys"][0];
    seal(&node, unseal_key).await;
    all_unavailable(&mut kms, &e1, "sealed").await;

    step("unseal: ok again, the same key id, the envelope decrypts");
    unseal(&node, unseal_key).await;
    assert_eq!(kms.wait_healthy(SETTLE).await, key_id);
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);
    kms.encrypt_seed().await.unwrap();
    let TestNode { server, .. } = node;
    server.shutdown().await.unwrap();
}

/// Encrypt fresh seeds from `clients` apiserver clients of `socket` at
/// once, until `stop` is set: the envelopes that succeeded (each checked as
/// the apiserver checks it) with when they came, and the codes of the calls
/// that failed.
async fn encrypt_burst(
    socket: &Path,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<(Instant, Envelope)>, Vec<Code>) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket = socket.to_path_buf();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut kms = ApiserverKms::connect(&socket).await.unwrap();
            let (mut done, mut failed) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let seed = rand::random::<[u8; 32]>().to_vec();
                match kms.encrypt_raw(seed.clone()).await {
                    Ok(r) => {
                        validate_encrypt_response(&r).unwrap();
                        let envelope = Envelope {
                            key_id: r.key_id,
                            ciphertext: r.ciphertext,
                            annotations: r.annotations,
                            seed,
                        };
                        done.push((Instant::now(), envelope));
                    }
                    Err(e) => {
                        failed.push(e.code());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (done, failed)
        }));
    }
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for t in tasks {
        let (d, f) = t.await.unwrap();
        done.extend(d);
        failed.extend(f);
    }
    (done, failed)
}

/// Run a burst of Encrypts on `socket` while `disrupt` runs, until Status
/// is ok again and half a second more; then every envelope that succeeded
/// must decrypt to its seed, and no call may have failed as the caller's
/// fault or the plugin's bug.
async fn burst_loses_nothing(socket: &Path, disrupt: impl std::future::Future<Output = ()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let burst = tokio::spawn({
        let (socket, stop) = (socket.to_path_buf(), stop.clone());
        async move { encrypt_burst(&socket, 4, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    disrupt.await;
    let disrupted = Instant::now();
    let mut kms = ApiserverKms::connect(socket).await.unwrap();
    kms.wait_healthy(SETTLE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (done, failed) = burst.await.unwrap();
    let after = done.iter().filter(|(at, _)| *at > disrupted).count();
    eprintln!(
        "burst: {} envelopes ({after} after the disruption), {} failed calls {failed:?}",
        done.len(),
        failed.len()
    );
    assert!(after > 0, "Encrypts go on after the disruption");
    for code in &failed {
        assert!(
            !matches!(code, Code::InvalidArgument | Code::Internal | Code::Unknown),
            "a call failed as if the request or the plugin were wrong: {failed:?}"
        );
    }
    for (_, envelope) in &done {
        assert_eq!(kms.decrypt(envelope).await.unwrap(), envelope.seed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_a_leader_change_during_a_burst_of_encrypts_loses_nothing() {
    // Steps: three nodes, node 2 serving the KMS socket; the key made
    // through node 2; a burst of Encrypts from four apiserver clients
    // while the leader (node 1) stops; Status ok again; every envelope the
    // burst got decrypts to its seed, and every failed call was
    // UNAVAILABLE (or a timeout), never a refusal of the request.
    let root = private_dir();
    let socket = root.path().join("kms.sock");
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let tweak = {
        let socket = socket.clone();
        move |c: &mut kstash::config::Config| {
            if c.node_id == 2 {
                c.kms_socket = Some(socket.to_string_lossy().to_string());
                c.kms_key = Some(KEY.into());
                c.kms_status_interval = INTERVAL;
            }
        }
    };
    let mut nodes = three_node_cluster(root.path(), &certs, &cuts, tweak, SETTLE).await;
    let init = crate::common::init_and_unseal(&nodes, SETTLE).await;
    let token = nodes[1]
        .http
        .login(&init["access_key"], NS, &["admin"], None)
        .await;
    let n2 = nodes[1].server.node.clone();
    let holder = n2
        .authenticate(Some(&SecretString::new(token)), Consistency::Stale)
        .await
        .unwrap();
    n2.create_key(&holder, NAME, None).await.unwrap();
    let mut kms = ApiserverKms::connect(&socket).await.unwrap();
    let key_id = kms.wait_healthy(SETTLE).await;
    assert_eq!(nodes[0].leader(), Some(1), "node 1 leads");

    step("a burst of Encrypts while the leader stops");
    let first = nodes.remove(0);
    burst_loses_nothing(&socket, async {
        first.stop().await;
    })
    .await;
    assert_eq!(kms.poll_status().await.unwrap(), key_id);
    for n in nodes {
        n.stop().await;
    }
    assert!(!socket.exists());
}

// ----- plugin mode -----------------------------------------------------------

/// A plugin token and its admin, made through the client library.
struct Provisioned {
    /// A client with an admin token of [`NS`].
    admin: Client,
    /// The plugin's token: policy `kms-plugin` only.
    token: SecretString,
}

fn client(addresses: &[String], token: Option<SecretString>) -> Client {
    Client::new(&ClientOptions {
        addresses: addresses.to_vec(),
        token,
        ca_cert: None,
        timeout: Duration::from_secs(20),
    })
    .unwrap()
}

/// A token of [`NS`] with `policies`, minted with the access key.
async fn mint(
    addresses: &[String],
    access_key: &str,
    policies: &[&str],
    ttl: Option<u64>,
) -> SecretString {
    let key = SecretString::new(access_key.into());
    let policies: Vec<String> = policies.iter().map(|p| p.to_string()).collect();
    client(addresses, None)
        .login(&LoginRequest {
            access_key: &key,
            namespace: NS,
            policies: &policies,
            ttl,
        })
        .await
        .unwrap()
        .token
}

/// The key, the plugin's policy and its token (lifetime `ttl`), through
/// the client library.
async fn provision(addresses: &[String], access_key: &str, ttl: Option<u64>) -> Provisioned {
    let admin_token = mint(addresses, access_key, &["admin"], None).await;
    let admin = client(addresses, Some(admin_token));
    admin.create_key(NAME, None).await.unwrap();
    let policy: kstash::acl::Policy = serde_json::from_value(kms_policy()).unwrap();
    admin
        .policy_put(NS, "kms-plugin", &policy, None)
        .await
        .unwrap();
    let token = mint(addresses, access_key, &["kms-plugin"], ttl).await;
    Provisioned { admin, token }
}

/// Write `token` to `path`, mode 0600, replacing the file at once.
fn write_token(path: &Path, token: &SecretString) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token.expose()).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Start a plugin in process for `addresses`, its socket and token file
/// in `dir`, its probes on a free loopback port.
async fn start_plugin(dir: &Path, addresses: &[String], token: &SecretString) -> RemotePlugin {
    let token_file = dir.join("token");
    write_token(&token_file, token);
    let mut socket = SocketOptions::new(dir.join("kms.sock").to_str().unwrap()).unwrap();
    socket.mode = 0o600;
    RemotePlugin::start(RemotePluginOptions {
        client: ClientOptions {
            addresses: addresses.to_vec(),
            token: None,
            ca_cert: None,
            timeout: Duration::from_secs(5),
        },
        token_file,
        kms: KmsOptions {
            socket,
            key: KmsKey::parse(KEY).unwrap(),
            status_interval: INTERVAL,
        },
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
    })
    .await
    .unwrap()
}

/// GET `path` of the plugin's probes: status and body.
async fn probe(plugin: &RemotePlugin, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", plugin.health_addr().unwrap());
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn base(node: &TestNode) -> String {
    format!("http://{}", node.server.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_mode_serves_rotates_refuses_seals_and_removes_its_socket() {
    // Steps: one node; key, policy and token through the client library;
    // the plugin in process: socket 0600, Status ok, /readyz 200; an
    // envelope round trip; a rotation (admin, client library) seen through
    // Status, both envelopes decrypt; limits, tampering and mixed
    // envelopes refused; /metrics counts the calls; seal → all three RPCs
    // UNAVAILABLE, /readyz 503, /healthz 200; unseal → ok, the envelope
    // decrypts; shutdown removes the socket.
    let dir = private_dir();
    let node = TestNode::start().await;
    let init = node.init_unsealed(1, 1).await;
    let addresses = vec![base(&node)];
    let p = provision(&addresses, init["access_key"].as_str().unwrap(), None).await;
    let plugin = start_plugin(dir.path(), &addresses, &p.token).await;
    let socket = plugin.socket_path().to_path_buf();

    step("socket 0600, Status ok, ready");
    assert_eq!(mode_of(&socket), 0o600);
    let mut kms = ApiserverKms::connect(&socket).await.unwrap();
    let first = kms.wait_healthy(SETTLE).await;
    assert!(first.ends_with(":v1"), "{first}");
    assert_eq!(probe(&plugin, "/readyz").await.0, 200);

    step("round trip, rotation, both envelopes decrypt");
    let e1 = kms.encrypt_seed().await.unwrap();
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);
    p.admin.rotate_key(NAME, None).await.unwrap();
    let second = kms.wait_rotation(&first, SETTLE).await;
    let e2 = kms.encrypt_seed().await.unwrap();
    assert_eq!(e2.key_id, second);
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);
    assert_eq!(kms.decrypt(&e2).await.unwrap(), e2.seed);

    step("limits, tampering and mixed envelopes are refused");
    refuses_what_it_must(&mut kms, &e1, &e2).await;

    step("/metrics counts the calls");
    let (code, metrics) = probe(&plugin, "/metrics").await;
    assert_eq!(code, 200);
    for want in [
        "kstash_kms_requests_total{rpc=\"encrypt\",outcome=\"ok\"}",
        "kstash_kms_requests_total{rpc=\"decrypt\",outcome=\"invalid_argument\"}",
        "kstash_kms_status_healthy 1",
    ] {
        assert!(metrics.contains(want), "{want} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("kstash_kms_token_expires_at_seconds 0\n"),
        "{metrics}"
    );

    step("seal: all three RPCs UNAVAILABLE; not ready, still alive");
    let unseal_key = &init["unseal_keys"][0];
    seal(&node, unseal_key).await;
    all_unavailable(&mut kms, &e1, "sealed").await;
    let (code, body) = probe(&plugin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(probe(&plugin, "/healthz").await, (200, "ok".into()));

    step("unseal: ok again");
    unseal(&node, unseal_key).await;
    assert_eq!(kms.wait_healthy(SETTLE).await, second);
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);

    step("shutdown removes the socket");
    plugin.shutdown().await;
    assert!(!socket.exists());
    let TestNode { server, .. } = node;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_mode_fails_over_when_its_node_dies() {
    // Steps: three nodes, unsealed; the plugin knows all three addresses,
    // node 1 (the leader) first; an envelope; a burst of Encrypts while
    // node 1 stops → Status comes back ok through the other nodes, every
    // envelope of the burst decrypts, no call failed as a bad request, and
    // the first envelope still decrypts.
    let root = private_dir();
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let mut nodes = three_node_cluster(root.path(), &certs, &cuts, |_| {}, SETTLE).await;
    let init = crate::common::init_and_unseal(&nodes, SETTLE).await;
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("http://{}", n.server.addr))
        .collect();
    let p = provision(&addresses, init["access_key"].as_str().unwrap(), None).await;
    let dir = private_dir();
    let plugin = start_plugin(dir.path(), &addresses, &p.token).await;
    let mut kms = ApiserverKms::connect(plugin.socket_path()).await.unwrap();
    let key_id = kms.wait_healthy(SETTLE).await;
    let e1 = kms.encrypt_seed().await.unwrap();

    step("a burst of Encrypts while the plugin's first node stops");
    let first = nodes.remove(0);
    burst_loses_nothing(plugin.socket_path(), async {
        first.stop().await;
    })
    .await;
    assert_eq!(kms.poll_status().await.unwrap(), key_id);
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);
    plugin.shutdown().await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_mode_renews_its_token_warns_at_its_limit_and_follows_the_file() {
    // Steps: a node whose tokens live at most 6 s; the plugin's token
    // lives 2 s. The plugin keeps working past 2 s (renewed); it warns,
    // naming the expiry and never the token, once renewal is capped; at
    // 6 s the token is dead and Status is UNAVAILABLE; a new token written
    // to the file brings it back.
    let dir = private_dir();
    let node = TestNode::start_with(|a| {
        a.default_token_ttl = Some(Duration::from_secs(2));
        a.max_token_ttl = Some(Duration::from_secs(6));
    })
    .await;
    let init = node.init_unsealed(1, 1).await;
    let access_key = init["access_key"].as_str().unwrap();
    let addresses = vec![base(&node)];
    let admin_token = mint(&addresses, access_key, &["admin"], Some(6)).await;
    let admin = client(&addresses, Some(admin_token));
    admin.create_key(NAME, None).await.unwrap();
    let policy: kstash::acl::Policy = serde_json::from_value(kms_policy()).unwrap();
    admin
        .policy_put(NS, "kms-plugin", &policy, None)
        .await
        .unwrap();
    let minted = Instant::now();
    let token = mint(&addresses, access_key, &["kms-plugin"], Some(2)).await;
    let plugin = start_plugin(dir.path(), &addresses, &token).await;
    let mut kms = ApiserverKms::connect(plugin.socket_path()).await.unwrap();
    kms.wait_healthy(SETTLE).await;
    let e1 = kms.encrypt_seed().await.unwrap();

    step("past the token's first expiry, the plugin still works");
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(minted.elapsed())).await;
    kms.poll_status().await.unwrap();
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);
    kms.encrypt_seed().await.unwrap();

    step("renewal capped at the maximum lifetime: a warning with the expiry");
    let warned = || {
        let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
        logs.lines()
            .find(|l| l.contains("reached its maximum lifetime"))
            .map(str::to_string)
    };
    wait_until(SETTLE, "the plugin warns of its token's end", || async {
        warned().is_some()
    })
    .await;
    let line = warned().unwrap();
    assert!(line.contains("expires_at="), "{line}");
    assert!(
        !line.contains(token.expose()),
        "the token is never logged: {line}"
    );
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    assert!(!logs.contains(token.expose()), "the token is never logged");

    step("the token dies at its maximum lifetime: UNAVAILABLE");
    let message = kms
        .wait_failing_because(Code::Unavailable, "HTTP 401", SETTLE)
        .await;
    assert!(message.contains("--token-file"), "{message}");

    step("a new token in the file: ok again");
    let fresh = mint(&addresses, access_key, &["kms-plugin"], Some(6)).await;
    write_token(&dir.path().join("token"), &fresh);
    kms.wait_healthy(SETTLE).await;
    assert_eq!(kms.decrypt(&e1).await.unwrap(), e1.seed);
    plugin.shutdown().await;
    let TestNode { server, .. } = node;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kms_plugin_process_serves_without_kstash_and_exits_cleanly_on_sigterm() {
    // Steps: `kstash kms-plugin` with no reachable kstash: its socket
    // appears, mode 0600, and Status is UNAVAILABLE (never ok); SIGTERM →
    // exit status 0 and the socket file is gone.
    let dir = private_dir();
    let socket = dir.path().join("kms.sock");
    let token_file = dir.path().join("token");
    write_token(
        &token_file,
        &SecretString::new("kst_not-a-real-token".into()),
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new(crate::procs::BIN)
        .args(["kms-plugin", "--socket"])
        .arg(format!("unix://{}", socket.display()))
        .args(["--key", KEY, "--token-file"])
        .arg(&token_file)
        .args([
            "--address",
            &format!("http://{dead}"),
            "--status-interval",
            "200ms",
        ])
        .args(["--timeout", "1s"])
        .env_remove("KSTASH_TOKEN")
        .env_remove("KSTASH_ADDR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_for_path(&socket, Duration::from_secs(20)).await;
    if !up {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "no socket; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(mode_of(&socket), 0o600);
    let mut kms = ApiserverKms::connect(&socket).await.unwrap();
    kms.wait_failing(Code::Unavailable, SETTLE).await;

    step("SIGTERM: exit 0, socket removed");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("kms-plugin did not exit within 20 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!socket.exists(), "socket removed; stderr:\n{stderr}");
    assert!(!stderr.contains("kst_not-a-real-token"), "{stderr}");
}

/// Wait until `path` exists (every 50 ms, at most `timeout`).
async fn wait_for_path(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
