//! The Secrets Store CSI provider end to end, through a driver that builds
//! its requests as the Secrets Store CSI Driver does
//! ([`crate::csi::FakeDriver`]), with pods whose ServiceAccount tokens come
//! from the test JWKS infrastructure ([`crate::kube`]).
//!
//! Every node checks tokens against a JWKS file (no API server); kstash
//! namespace `shop` holds the pods' secrets, a policy `web-reader` and a
//! role `web` binding ServiceAccount `shop/web`; namespace `bank` holds a
//! role that binds only `bank/teller`. The provider is served in process on
//! a temporary socket, and once as the real `kstash csi-provider` process.
//! Every wait is bounded.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kstash::clock::{Clock, ManualClock, SystemClock};
use kstash::plugins::csi::params::ParamsPolicy;
use kstash::plugins::csi::{CsiEndpoint, CsiMetrics, ProviderOptions};
use kstash::plugins::socket::SocketOptions;
use serde_json::{json, Value};
use tonic::Code;

use crate::common::{captured_logs, three_node_cluster, ClusterCerts, Http, LinkCuts, TestNode};
use crate::csi::{Class, FakeDriver, Pod, Volume};
use crate::kube::{Jwks, SigningKey, KUBE_ISSUER};

/// The Kubernetes namespace of the pods, and the kstash namespace their
/// classes read by default.
const NS: &str = "shop";
/// A kstash namespace whose role binds only its own accounts.
const BANK: &str = "bank";

/// Longest wait for a cluster to settle or a process to start.
const SETTLE: Duration = Duration::from_secs(20);

/// The secrets' values: none may ever reach a log line.
const DB_V1: &str = "db-pass-one-Kq8vW2";
const DB_V2: &str = "db-pass-two-Xw3nR7";
const DB_V3: &str = "db-pass-three-Jd5tQ1";
const JSON_PASSWORD: &str = "json-pw-Zt5rB9";
const CA_BODY: &str = "ca-body-Lm2pH4";
const PLAIN: &str = "plain-text-Hy6dC3";
const ROOT: &str = "root-secret-Pp9cF8";
const BANK_VAULT: &str = "bank-vault-Rr4eN6";
/// A binary secret (not UTF-8), stored as base64.
const BLOB: &[u8] = b"\x00\xffbin-secret-Vb7kM5\x80\x01";
/// Size of the secret `big/value`: three fit in one answer to the driver,
/// five do not.
const BIG: usize = 1_000_000;

fn blob_base64() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(BLOB)
}

/// The JSON secret `app/config`.
fn app_config() -> String {
    json!({"user": "web", "password": JSON_PASSWORD, "port": 5432}).to_string()
}

fn ca_pem() -> String {
    format!("-----BEGIN CERTIFICATE-----\n{CA_BODY}\n-----END CERTIFICATE-----\n")
}

fn secret_values() -> Vec<String> {
    [
        DB_V1,
        DB_V2,
        DB_V3,
        JSON_PASSWORD,
        CA_BODY,
        PLAIN,
        ROOT,
        BANK_VAULT,
        "bin-secret-Vb7kM5",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([blob_base64()])
    .collect()
}

/// `n` objects naming `big/value`, as files `big-0`, `big-1`, ….
fn big_objects(n: usize) -> String {
    (0..n)
        .map(|i| format!("- path: big/value\n  fileName: big-{i}\n"))
        .collect()
}

/// The class's objects: a nested fileName with its own mode, a JSON secret
/// whole and two of its fields (a string and a number), and a file with
/// the default mode.
const OBJECTS: &str = "\
- path: db/password
  fileName: db/password
  mode: 0440
- path: app/config
  fileName: config.json
  mode: 0644
- path: app/config
  fileName: app-user
  field: user
- path: app/config
  fileName: db-port
  field: port
- path: tls/ca
  fileName: ca.pem
";

/// The `SecretProviderClass` of most tests: role `web`, the pod's
/// namespace, the default audience, [`OBJECTS`], on `addresses`.
fn web_class(addresses: &str) -> Class {
    Class::new("kstash-web")
        .with("address", addresses)
        .with("role", "web")
        .with("objects", OBJECTS)
}

fn step(what: &str) {
    eprintln!("--- {what}");
}

fn private_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Write `value` at `path` with `token`; its new version.
async fn put(http: &Http, token: &str, path: &str, value: &str) -> u64 {
    let (code, body) = http
        .put(
            &format!("/v1/kv/{path}"),
            Some(token),
            json!({ "value": value }),
        )
        .await;
    assert_eq!(code, 200, "put {path}: {body}");
    body["version"].as_u64().expect("a version")
}

/// What [`provision`] made.
struct Provisioned {
    /// An admin token of [`NS`].
    admin: String,
}

/// Through `http` (with the cluster's access key): in [`NS`], the policy
/// `web-reader` (read `db/*`, `app/*`, `tls/*`), the role `web` binding
/// `shop/web` to it for 10 minutes, and the secrets (`db/password` at
/// version 2); in [`BANK`], a role `teller` binding only `bank/teller`.
async fn provision(http: &Http, access_key: &Value) -> Provisioned {
    let admin = http.login(access_key, NS, &["admin"], None).await;
    let bank_admin = http.login(access_key, BANK, &["admin"], None).await;
    for (ns, token, policy, rules, role, account) in [
        (
            NS,
            &admin,
            "web-reader",
            json!([{"path": "db/*", "capabilities": ["read"]},
                   {"path": "app/*", "capabilities": ["read"]},
                   {"path": "tls/*", "capabilities": ["read"]},
                   {"path": "bin/*", "capabilities": ["read"]},
                   {"path": "big/*", "capabilities": ["read"]}]),
            "web",
            "shop/web",
        ),
        (
            BANK,
            &bank_admin,
            "teller",
            json!([{"path": "money/*", "capabilities": ["read"]}]),
            "teller",
            "bank/teller",
        ),
    ] {
        let (code, body) = http
            .put(
                &format!("/v1/namespaces/{ns}/policies/{policy}"),
                Some(token),
                json!({ "rules": rules }),
            )
            .await;
        assert_eq!(code, 204, "policy {ns}/{policy}: {body}");
        let (code, body) = http
            .put(
                &format!("/v1/namespaces/{ns}/auth/kubernetes/roles/{role}"),
                Some(token),
                json!({"service_accounts": [account], "policies": [policy],
                       "ttl": "10m", "audience": "kstash"}),
            )
            .await;
        assert!(
            code == 200 || code == 204,
            "role {ns}/{role}: {code} {body}"
        );
    }
    assert_eq!(put(http, &admin, "db/password", DB_V1).await, 1);
    assert_eq!(put(http, &admin, "db/password", DB_V2).await, 2);
    put(http, &admin, "app/config", &app_config()).await;
    put(http, &admin, "tls/ca", &ca_pem()).await;
    put(http, &admin, "app/plain", PLAIN).await;
    put(http, &admin, "vault/root", ROOT).await;
    let (code, body) = http
        .put(
            "/v1/kv/bin/blob",
            Some(&admin),
            json!({ "value_base64": blob_base64() }),
        )
        .await;
    assert_eq!(code, 200, "put bin/blob: {body}");
    put(http, &admin, "big/value", &"b".repeat(BIG)).await;
    put(http, &bank_admin, "money/vault", BANK_VAULT).await;
    Provisioned { admin }
}

/// One node checking ServiceAccount tokens against a JWKS file of `key`,
/// on `clock`, initialised, unsealed and provisioned.
struct Stash {
    node: TestNode,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Stash {
    async fn start(key: &SigningKey, clock: Arc<dyn Clock>) -> Stash {
        let dir = private_dir("csi-jwks-");
        let jwks = Jwks::write(dir.path(), &[key]);
        let node = TestNode::start_with_clock(
            move |a| {
                a.kubernetes_jwks_file = Some(jwks);
                a.kubernetes_issuer = Some(KUBE_ISSUER.into());
            },
            clock,
        )
        .await;
        let init = node.init_unsealed(1, 1).await;
        let p = provision(&node.http, &init["access_key"]).await;
        Stash {
            node,
            admin: p.admin,
            _dir: dir,
        }
    }

    fn address(&self) -> String {
        format!("http://{}", self.node.server.addr)
    }

    async fn stop(self) {
        let TestNode { server, .. } = self.node;
        server.shutdown().await.unwrap();
    }
}

/// The provider in process on `dir/kstash.sock`.
async fn start_provider(dir: &Path) -> CsiEndpoint {
    let socket = SocketOptions::new(dir.join("kstash.sock").to_str().unwrap()).unwrap();
    CsiEndpoint::start(
        &socket,
        ProviderOptions {
            call_timeout: Duration::from_secs(10),
            login_cache_size: 64,
            policy: ParamsPolicy::default(),
            default_ca: None,
        },
        CsiMetrics::new(),
    )
    .await
    .unwrap()
}

/// The value of sample `name` (labels included) in `text`, 0 when absent.
fn sample_in(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The value of sample `name` of the provider's metrics.
fn sample(endpoint: &CsiEndpoint, name: &str) -> f64 {
    let text = kstash::plugins::health::render(&endpoint.provider().metrics().registry());
    sample_in(&text, name)
}

fn logins(endpoint: &CsiEndpoint) -> f64 {
    sample(endpoint, "kstash_csi_logins_total{outcome=\"ok\"}")
}

/// The files and versions [`OBJECTS`] answer with `db/password` at
/// `db_version` holding `db`.
fn assert_web_volume(v: &Volume, db: &str, db_version: u64) {
    assert_eq!(
        v.names(),
        [
            "app-user",
            "ca.pem",
            "config.json",
            "db-port",
            "db/password"
        ]
    );
    assert_eq!(v.text("db/password"), db);
    assert_eq!(v.text("config.json"), app_config());
    assert_eq!(v.text("app-user"), "web");
    assert_eq!(v.text("db-port"), "5432");
    assert_eq!(v.text("ca.pem"), ca_pem());
    for (file, mode) in [
        ("db/password", 0o440),
        ("config.json", 0o644),
        ("app-user", 0o400),
        ("db-port", 0o400),
        ("ca.pem", 0o400),
    ] {
        assert_eq!(v.mode(file), mode, "{file}");
        assert_eq!(v.mode_on_disk(file), mode, "{file} on disk");
    }
    let versions: Vec<(&str, String)> = v
        .versions
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(
        versions,
        [
            ("app/config", "1".to_string()),
            ("db/password", db_version.to_string()),
            ("tls/ca", "1".to_string()),
        ]
    );
}

/// No secret value and none of `pods`' ServiceAccount tokens (whole, or
/// their signature) in any log line captured so far; and the provider's
/// own lines for `pods` are there, so the scan is not of nothing.
fn assert_logs_clean(pods: &[&Pod]) {
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    for value in secret_values() {
        assert!(!logs.contains(&value), "a secret value is in the logs");
    }
    for pod in pods {
        for token in pod.tokens() {
            let signature = token.rsplit('.').next().unwrap();
            assert!(
                !logs.contains(&token) && !logs.contains(signature),
                "a ServiceAccount token of pod {} is in the logs",
                pod.name
            );
        }
        assert!(
            logs.lines()
                .any(|l| l.contains("CSI Mount") && l.contains(&pod.uid)),
            "no provider log line names pod {}",
            pod.uid
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_mounts_its_secrets_as_files_and_sees_rotation() {
    // Steps:
    // 1. a node with the JWKS login and the provisioned namespaces; the
    //    provider on its socket; Version answers runtime kstash;
    // 2. pod web-0 mounts the class: every file with its contents and mode
    //    (a nested fileName, a JSON secret whole and by field, the default
    //    0400), object versions = paths with KV versions;
    // 3. rotation: db/password written again; the next Mount (with the
    //    current versions) answers version 3 and the new value;
    // 4. a Mount with no current versions answers the full set;
    // 5. a binary value arrives byte for byte; a volume of 3 MB arrives
    //    whole (within the driver's default 4 MiB receive limit);
    // 6. no secret value and no ServiceAccount token in the logs.
    let key = SigningKey::ec("ec-1");
    let stash = Stash::start(&key, Arc::new(SystemClock)).await;
    let dir = private_dir("csi-");
    let endpoint = start_provider(dir.path()).await;
    let mut driver = FakeDriver::connect(endpoint.path()).await.unwrap();

    step("step 1: Version");
    let version = driver.version().await.unwrap();
    assert_eq!(version.runtime_name, "kstash");
    assert_eq!(version.version, "v1alpha1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    step("step 2: a good mount");
    let class = web_class(&stash.address());
    let pod = Pod::projected(&key, NS, "web", "web-0");
    let v = driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_web_volume(&v, DB_V2, 2);
    assert!(v.dir.ends_with(format!(
        "var/lib/kubelet/pods/{}/volumes/kubernetes.io~csi/secrets/mount",
        pod.uid
    )));

    step("step 3: rotation in kstash, seen by the next Mount");
    assert_eq!(
        put(&stash.node.http, &stash.admin, "db/password", DB_V3).await,
        3
    );
    let sent = driver.current_versions(&pod, "secrets");
    assert_eq!(sent.len(), 3, "the driver sends the current versions");
    let v = driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_web_volume(&v, DB_V3, 3);

    step("step 4: no current versions: the full set");
    driver.forget_versions(&pod, "secrets");
    let v = driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_web_volume(&v, DB_V3, 3);
    assert_eq!(
        sample(&endpoint, "kstash_csi_mounts_total{outcome=\"ok\"}"),
        3.0
    );
    assert_eq!(sample(&endpoint, "kstash_csi_files_total"), 15.0);

    step("step 5: a binary value, and a 3 MB volume");
    let binary = class
        .clone()
        .with("objects", "- path: bin/blob\n  fileName: blob.bin\n");
    let v = driver.mount(&binary, &pod, "binary").await.unwrap();
    assert_eq!(v.files["blob.bin"], (0o400, BLOB.to_vec()));
    assert_eq!(std::fs::read(v.dir.join("blob.bin")).unwrap(), BLOB);
    let big = class.clone().with("objects", &big_objects(3));
    let v = driver.mount(&big, &pod, "big").await.unwrap();
    assert_eq!(v.names(), ["big-0", "big-1", "big-2"]);
    for (_, contents) in v.files.values() {
        assert_eq!(contents.len(), BIG);
    }
    assert_eq!(
        v.versions.len(),
        1,
        "one version per secret: {:?}",
        v.versions
    );

    step("step 6: the logs hold no secret and no token");
    assert_logs_clean(&[&pod]);
    endpoint.shutdown().await;
    stash.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_login_is_reused_until_its_token_changes_or_kstash_refuses_it() {
    // Steps:
    // 1. a node on a clock the test moves; the provider; pod web-0 mounts:
    //    one login;
    // 2. the same pod mounts again: no new login (a cache hit);
    // 3. the kubelet renews the pod's ServiceAccount token: one login;
    // 4. another pod of the same ServiceAccount: one login;
    // 5. kstash's clock passes the cached token's expiry (the provider
    //    still holds it as fresh): the Mount logs in once more and
    //    answers every file; the next Mount reuses the new token.
    let key = SigningKey::ec("ec-1");
    let clock = ManualClock::new(SystemClock.now_ms());
    let stash = Stash::start(&key, Arc::new(clock.clone())).await;
    let dir = private_dir("csi-");
    let endpoint = start_provider(dir.path()).await;
    let mut driver = FakeDriver::connect(endpoint.path()).await.unwrap();
    let class = web_class(&stash.address());

    step("step 1: first Mount, one login");
    let pod = Pod::projected(&key, NS, "web", "web-0");
    assert_web_volume(
        &driver.mount(&class, &pod, "secrets").await.unwrap(),
        DB_V2,
        2,
    );
    assert_eq!(logins(&endpoint), 1.0);

    step("step 2: the same pod again: no login");
    driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_eq!(logins(&endpoint), 1.0);
    assert_eq!(
        sample(
            &endpoint,
            "kstash_csi_login_cache_lookups_total{result=\"hit\"}"
        ),
        1.0
    );

    step("step 3: a renewed ServiceAccount token logs in");
    let pod = pod.renew_token("kstash", &key);
    driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_eq!(logins(&endpoint), 2.0);
    assert_eq!(
        sample(
            &endpoint,
            "kstash_csi_login_cache_lookups_total{result=\"stale\"}"
        ),
        1.0
    );

    step("step 4: another pod logs in");
    let other = Pod::projected(&key, NS, "web", "web-1");
    driver.mount(&class, &other, "secrets").await.unwrap();
    assert_eq!(logins(&endpoint), 3.0);
    driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_eq!(logins(&endpoint), 3.0);

    step("step 5: kstash no longer takes the cached token: one fresh login");
    clock.advance(11 * 60 * 1000);
    let v = driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_web_volume(&v, DB_V2, 2);
    assert_eq!(logins(&endpoint), 4.0);
    driver.mount(&class, &pod, "secrets").await.unwrap();
    assert_eq!(logins(&endpoint), 4.0);
    assert_eq!(
        sample(&endpoint, "kstash_csi_mounts_total{outcome=\"ok\"}"),
        7.0
    );
    endpoint.shutdown().await;
    stash.stop().await;
}

/// One refusal to provoke: what to send, and what must come back.
struct Case {
    what: &'static str,
    /// The request; `None`: the driver's for `class` and `pod`.
    raw: Option<&'static str>,
    class: Class,
    pod: Pod,
    code: Code,
    error_code: &'static str,
    /// Each must be in the message.
    says: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_their_code_say_what_to_fix_and_write_nothing() {
    // Steps:
    // 1. a node, the provider; a good Mount first (the provider works);
    // 2. each refusal in turn, on a volume of its own: the gRPC code, the
    //    MountResponse.error.code in the details, a message that names the
    //    problem and the fix, no file in the details, nothing written;
    //    cases: another namespace's role, an expired token, no token map,
    //    a token of another audience only, fileName ../x, fileName /etc/x,
    //    a duplicate fileName, a missing secret next to a good one, a
    //    forbidden secret next to a good one, a bad objects YAML, no role,
    //    plain http to a remote host, a field of a non-JSON value, of a
    //    JSON value that lacks it and of a binary value, a volume larger
    //    than one answer to the driver holds, garbage attributes,
    //    attributes without the pod uid;
    // 3. the metrics count each refusal under its code;
    // 4. no secret value and no token in the logs.
    let key = SigningKey::ec("ec-1");
    let stash = Stash::start(&key, Arc::new(SystemClock)).await;
    let dir = private_dir("csi-");
    let endpoint = start_provider(dir.path()).await;
    let mut driver = FakeDriver::connect(endpoint.path()).await.unwrap();
    let address = stash.address();
    let class = web_class(&address);
    let pod = Pod::projected(&key, NS, "web", "web-0");

    step("step 1: the provider works");
    driver.mount(&class, &pod, "good").await.unwrap();

    step("step 2: each refusal");
    let objects = |yaml: &str| class.clone().with("objects", yaml);
    let expired = {
        let p = Pod::new(NS, "web", "web-expired");
        let t = p.sa_token().expires_in(-600);
        p.with_token("kstash", &t, &key)
    };
    let other_audience = {
        let p = Pod::new(NS, "web", "web-vault");
        let t = p.sa_token().audiences(&["vault"]);
        p.with_token("vault", &t, &key)
    };
    let cases = vec![
        Case {
            what: "a token for another namespace's role",
            raw: None,
            class: class
                .clone()
                .with("namespace", BANK)
                .with("role", "teller")
                .with("objects", "- path: money/vault\n  fileName: vault\n"),
            pod: pod.clone(),
            code: Code::Unauthenticated,
            error_code: "LoginRefused",
            says: &["shop/web", "\"teller\"", "\"bank\"", "binds this ServiceAccount"],
        },
        Case {
            what: "an expired token",
            raw: None,
            class: class.clone(),
            pod: expired.clone(),
            code: Code::Unauthenticated,
            error_code: "LoginRefused",
            says: &["shop/web", "\"web\"", "audit log"],
        },
        Case {
            what: "no token map",
            raw: None,
            class: class.clone(),
            pod: pod.clone().without_tokens(),
            code: Code::FailedPrecondition,
            error_code: "MissingServiceAccountToken",
            says: &["\"kstash\"", "tokenRequests"],
        },
        Case {
            what: "a token of another audience only",
            raw: None,
            class: class.clone(),
            pod: other_audience.clone(),
            code: Code::FailedPrecondition,
            error_code: "MissingServiceAccountToken",
            says: &["\"kstash\"", "tokenRequests"],
        },
        Case {
            what: "fileName ../x",
            raw: None,
            class: objects("- path: db/password\n  fileName: ../x\n"),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidSecretProviderClass",
            says: &["objects[0]", "../x", ".."],
        },
        Case {
            what: "fileName /etc/x",
            raw: None,
            class: objects("- path: db/password\n  fileName: /etc/x\n"),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidSecretProviderClass",
            says: &["objects[0]", "/etc/x", "relative"],
        },
        Case {
            what: "a duplicate fileName",
            raw: None,
            class: objects(
                "- path: db/password\n  fileName: pw\n- path: app/plain\n  fileName: pw\n",
            ),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidSecretProviderClass",
            says: &["objects[1]", "\"pw\"", "twice"],
        },
        Case {
            what: "a missing secret next to a good one",
            raw: None,
            class: objects(
                "- path: db/password\n  fileName: pw\n- path: db/missing\n  fileName: gone\n",
            ),
            pod: pod.clone(),
            code: Code::NotFound,
            error_code: "SecretNotFound",
            says: &["\"db/missing\"", "\"shop\"", "write it"],
        },
        Case {
            what: "a forbidden secret next to a good one",
            raw: None,
            class: objects(
                "- path: db/password\n  fileName: pw\n- path: vault/root\n  fileName: root\n",
            ),
            pod: pod.clone(),
            code: Code::PermissionDenied,
            error_code: "SecretForbidden",
            says: &["\"vault/root\"", "\"web\"", "grant read"],
        },
        Case {
            what: "a bad objects YAML",
            raw: None,
            class: objects("- path: [db/password\n  fileName: pw\n"),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidSecretProviderClass",
            says: &["objects"],
        },
        Case {
            what: "objects that are not a list",
            raw: None,
            class: objects("path: db/password\nfileName: pw\n"),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidSecretProviderClass",
            says: &["objects", "list"],
        },
        Case {
            what: "no role",
            raw: None,
            class: class.clone().without("role"),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidSecretProviderClass",
            says: &["\"role\"", "spec.parameters"],
        },
        Case {
            what: "plain http to a remote host",
            raw: None,
            class: class
                .clone()
                .with("address", "http://kstash.example.com:8200"),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidSecretProviderClass",
            says: &["address", "https://"],
        },
        Case {
            what: "a field of a value that is not JSON",
            raw: None,
            class: objects("- path: app/plain\n  fileName: plain\n  field: user\n"),
            pod: pod.clone(),
            code: Code::FailedPrecondition,
            error_code: "InvalidSecretValue",
            says: &["\"app/plain\"", "\"user\"", "JSON object"],
        },
        Case {
            what: "a field the JSON value lacks",
            raw: None,
            class: objects("- path: app/config\n  fileName: x\n  field: nope\n"),
            pod: pod.clone(),
            code: Code::FailedPrecondition,
            error_code: "InvalidSecretValue",
            says: &["\"nope\"", "password, port, user"],
        },
        Case {
            what: "a field of a binary value",
            raw: None,
            class: objects("- path: bin/blob\n  fileName: blob\n  field: user\n"),
            pod: pod.clone(),
            code: Code::FailedPrecondition,
            error_code: "InvalidSecretValue",
            says: &["\"bin/blob\"", "JSON object"],
        },
        Case {
            what: "more than one answer to the driver holds",
            raw: None,
            class: objects(&big_objects(5)),
            pod: pod.clone(),
            code: Code::ResourceExhausted,
            error_code: "MountTooLarge",
            says: &["bytes", "split the objects"],
        },
        Case {
            what: "garbage attributes",
            raw: Some("{not json"),
            class: class.clone(),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidMountRequest",
            says: &["attributes", "line 1"],
        },
        Case {
            what: "attributes without the pod uid",
            raw: Some("{\"csi.storage.k8s.io/pod.name\": \"web-0\", \"csi.storage.k8s.io/pod.namespace\": \"shop\"}"),
            class: class.clone(),
            pod: pod.clone(),
            code: Code::InvalidArgument,
            error_code: "InvalidMountRequest",
            says: &["csi.storage.k8s.io/pod.uid"],
        },
    ];
    for (n, case) in cases.iter().enumerate() {
        let volume = format!("vol-{n}");
        let mut request = driver.request(&case.class, &case.pod, &volume);
        if let Some(raw) = case.raw {
            request.attributes = raw.to_string();
        }
        let refusal = match driver.send(request).await {
            Ok(v) => panic!("{}: mounted {:?}", case.what, v.names()),
            Err(r) => r,
        };
        eprintln!("{}: {:?} {}", case.what, refusal.code, refusal.message);
        assert_eq!(refusal.code, case.code, "{}: {refusal:?}", case.what);
        assert_eq!(
            refusal.error_code.as_deref(),
            Some(case.error_code),
            "{}: {refusal:?}",
            case.what
        );
        assert!(
            refusal
                .message
                .starts_with(&format!("{}: ", case.error_code)),
            "{}: {}",
            case.what,
            refusal.message
        );
        for fragment in case.says {
            assert!(
                refusal.message.contains(fragment),
                "{}: {fragment:?} not in {:?}",
                case.what,
                refusal.message
            );
        }
        assert_eq!(refusal.files_in_details, 0, "{}", case.what);
        assert!(
            !driver.wrote_anything(&case.pod, &volume),
            "{}: files written",
            case.what
        );
        assert!(driver.current_versions(&case.pod, &volume).is_empty());
    }

    step("step 3: the metrics count each refusal by its code");
    for code in kstash::plugins::csi::MountError::CODES {
        let expected = cases.iter().filter(|c| c.error_code == code).count();
        let name = format!("kstash_csi_mounts_total{{outcome=\"{code}\"}}");
        assert_eq!(sample(&endpoint, &name), expected as f64, "{name}");
    }

    step("step 4: the logs hold no secret and no token");
    assert_logs_clean(&[&pod]);
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    for token in expired.tokens().into_iter().chain(other_audience.tokens()) {
        assert!(!logs.contains(&token), "a refused token is in the logs");
    }
    endpoint.shutdown().await;
    stash.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_fail_over_when_the_providers_first_node_stops() {
    // Steps:
    // 1. three nodes with the JWKS login, unsealed and provisioned; the
    //    class lists all three, node 1 (the leader) first;
    // 2. pod web-0 mounts through node 1;
    // 3. node 1 stops; at once, a new pod mounts (a fresh login through
    //    the others) and web-0 mounts again with its cached token;
    // 4. a rotation written through a survivor is seen by the next Mount;
    // 5. no secret value and no token in the logs.
    let key = SigningKey::ec("ec-1");
    let jwks_dir = private_dir("csi-jwks-");
    let jwks = Jwks::write(jwks_dir.path(), &[&key]);
    let root = private_dir("csi-cluster-");
    let certs = ClusterCerts::make();
    let cuts = LinkCuts::default();
    let mut nodes = three_node_cluster(
        root.path(),
        &certs,
        &cuts,
        |c| {
            c.kubernetes_jwks_file = Some(jwks.clone());
            c.kubernetes_issuer = Some(KUBE_ISSUER.into());
        },
        SETTLE,
    )
    .await;
    let init = crate::common::init_and_unseal(&nodes, SETTLE).await;
    let p = provision(&nodes[0].http, &init["access_key"]).await;
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("http://{}", n.server.addr))
        .collect();
    let class = web_class(&addresses.join(","));
    let dir = private_dir("csi-");
    let endpoint = start_provider(dir.path()).await;
    let mut driver = FakeDriver::connect(endpoint.path()).await.unwrap();

    step("step 2: a Mount through node 1");
    let first = Pod::projected(&key, NS, "web", "web-0");
    assert_web_volume(
        &driver.mount(&class, &first, "secrets").await.unwrap(),
        DB_V2,
        2,
    );
    assert_eq!(logins(&endpoint), 1.0);

    step("step 3: node 1 stops; new and cached pods still mount");
    let stopped = nodes.remove(0);
    stopped.stop().await;
    let started = Instant::now();
    let second = Pod::projected(&key, NS, "web", "web-1");
    assert_web_volume(
        &driver.mount(&class, &second, "secrets").await.unwrap(),
        DB_V2,
        2,
    );
    eprintln!("first Mount after the stop took {:?}", started.elapsed());
    assert_eq!(logins(&endpoint), 2.0);
    assert_web_volume(
        &driver.mount(&class, &first, "secrets").await.unwrap(),
        DB_V2,
        2,
    );
    assert_eq!(logins(&endpoint), 2.0, "web-0's cached token still serves");

    step("step 4: a rotation through a survivor");
    assert_eq!(put(&nodes[0].http, &p.admin, "db/password", DB_V3).await, 3);
    for pod in [&first, &second] {
        assert_web_volume(
            &driver.mount(&class, pod, "secrets").await.unwrap(),
            DB_V3,
            3,
        );
    }

    step("step 5: the logs hold no secret and no token");
    assert_logs_clean(&[&first, &second]);
    endpoint.shutdown().await;
    for n in nodes {
        n.stop().await;
    }
}

/// GET `http://addr/path`: status and body.
async fn probe(addr: &str, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
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

/// The child's stderr so far (it has exited or been killed).
fn stderr_of(child: &mut std::process::Child) -> String {
    let mut text = String::new();
    if let Some(err) = child.stderr.as_mut() {
        let _ = std::io::Read::read_to_string(err, &mut text);
    }
    text
}

/// Kills the provider process if the test ends before it exits.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csi_provider_process_serves_mounts_and_probes_and_exits_cleanly_on_sigterm() {
    // Steps:
    // 1. a node with the JWKS login; `kstash csi-provider --socket
    //    <dir>/kstash.sock --health-listen 127.0.0.1:<free port>`: the
    //    socket appears (0600), /healthz and /readyz answer 200;
    // 2. a Mount through the process answers the files; /metrics counts it;
    // 3. SIGTERM: exit 0, socket removed, no secret or token on stderr.
    let key = SigningKey::ec("ec-1");
    let stash = Stash::start(&key, Arc::new(SystemClock)).await;
    let dir = private_dir("csi-proc-");
    let socket: PathBuf = dir.path().join("kstash.sock");
    let port = crate::procs::free_ports(1)[0];
    let health = format!("127.0.0.1:{port}");

    step("step 1: the process serves its socket and probes");
    let child = std::process::Command::new(crate::procs::BIN)
        .arg("csi-provider")
        .arg("--socket")
        .arg(&socket)
        .args(["--health-listen", &health, "--timeout", "10s"])
        .env_remove("KSTASH_TOKEN")
        .env_remove("KSTASH_ADDR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    if !wait_for_path(&socket, SETTLE).await {
        let _ = child.0.kill();
        let _ = child.0.wait();
        panic!("no socket; stderr:\n{}", stderr_of(&mut child.0));
    }
    let mode = std::fs::symlink_metadata(&socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    crate::procs::wait_for(SETTLE, Duration::from_millis(50), "/readyz is 200", || {
        let health = health.clone();
        async move {
            let r = reqwest::get(format!("http://{health}/readyz")).await.ok()?;
            (r.status().as_u16() == 200).then_some(())
        }
    })
    .await;
    assert_eq!(probe(&health, "/healthz").await.0, 200);

    step("step 2: a Mount through the process");
    let mut driver = FakeDriver::connect(&socket).await.unwrap();
    assert_eq!(driver.version().await.unwrap().runtime_name, "kstash");
    let pod = Pod::projected(&key, NS, "web", "web-0");
    let v = driver
        .mount(&web_class(&stash.address()), &pod, "secrets")
        .await
        .unwrap();
    assert_web_volume(&v, DB_V2, 2);
    let (code, metrics) = probe(&health, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        sample_in(&metrics, "kstash_csi_mounts_total{outcome=\"ok\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample_in(&metrics, "kstash_csi_logins_total{outcome=\"ok\"}"),
        1.0,
        "{metrics}"
    );
    drop(driver);

    step("step 3: SIGTERM");
    let pid = rustix::process::Pid::from_child(&child.0);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + SETTLE;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            panic!("csi-provider did not exit within {SETTLE:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = stderr_of(&mut child.0);
    assert!(status.success(), "{status}: {stderr}");
    assert!(!socket.exists(), "socket removed; stderr:\n{stderr}");
    assert!(stderr.contains("CSI Mount"), "{stderr}");
    for value in secret_values().into_iter().chain(pod.tokens()) {
        assert!(!stderr.contains(&value), "a secret or token on stderr");
    }
    stash.stop().await;
}
