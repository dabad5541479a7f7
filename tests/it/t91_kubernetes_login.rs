//! Kubernetes ServiceAccount login, end to end: a node configured against
//! the fake API server of [`crate::kube`] (OIDC discovery, JWKS, TokenReview
//! over HTTPS), roles managed by a namespace's admin, and every way a
//! presented token can be refused, each with the same answer for the client
//! and the failed check in the audit log.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{assert_error, wait_until, Http, TestNode};
use crate::kube::{unix_now, FakeKubeApi, Jwks, Route, SaToken, SigningKey};
use crate::t87_audit::records;

/// The kstash namespace the tests log in to, and its neighbour.
const NS: &str = "team-a";
const OTHER_NS: &str = "team-b";

/// The response records of the login operation, in order.
fn login_responses(path: &Path) -> Vec<Value> {
    records(path)
        .into_iter()
        .filter(|r| r["operation"] == "auth.kubernetes.login" && r["type"] == "response")
        .collect()
}

/// The value of the sample `name` (labels included, as exported) on
/// `/metrics`, 0 when absent.
async fn sample(http: &Http, name: &str) -> f64 {
    let (code, body) = http.get("/metrics", None).await;
    assert_eq!(code, 200, "{body}");
    let text = body.as_str().expect("metrics text").to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn private_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// How the node checks tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Signatures against the keys from OIDC discovery.
    Discovery,
    /// Discovery, and TokenReview for every token.
    DiscoveryAndReview,
}

/// A node that checks ServiceAccount tokens against `api`, unsealed, with
/// an admin token for [`NS`] and one for [`OTHER_NS`], a policy `reader`
/// (read `app/*`) in each, and a secret `app/db` in each.
struct Setup {
    node: TestNode,
    audit: PathBuf,
    admin: String,
    other_admin: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(api: &FakeKubeApi, mode: Mode) -> Setup {
        let dir = private_dir("k8s-login-");
        let audit = dir.path().join("audit.log");
        let reviewer = api.write_reviewer_token(dir.path());
        let (base, ca) = (api.base_url(), api.ca_file().to_path_buf());
        let audit_file = audit.to_string_lossy().to_string();
        let node = TestNode::start_with(move |a| {
            a.audit_file = Some(audit_file);
            a.kubernetes_api = Some(base);
            a.kubernetes_ca_cert = Some(ca);
            a.kubernetes_token_file = Some(reviewer);
            if mode == Mode::DiscoveryAndReview {
                a.kubernetes_token_review = Some(true);
            }
        })
        .await;
        let init = node.init_unsealed(1, 1).await;
        let admin = node.login(&init["access_key"], NS, &["admin"], None).await;
        let other_admin = node
            .login(&init["access_key"], OTHER_NS, &["admin"], None)
            .await;
        for (token, value) in [(&admin, "a-secret"), (&other_admin, "b-secret")] {
            let (code, body) = node
                .http
                .put("/v1/kv/app/db", Some(token), json!({ "value": value }))
                .await;
            assert_eq!(code, 200, "{body}");
        }
        for (ns, token) in [(NS, &admin), (OTHER_NS, &other_admin)] {
            let (code, body) = node
                .http
                .put(
                    &format!("/v1/namespaces/{ns}/policies/reader"),
                    Some(token),
                    json!({"rules": [{"path": "app/*", "capabilities": ["read"]}]}),
                )
                .await;
            assert_eq!(code, 204, "{body}");
        }
        Setup {
            node,
            audit,
            admin,
            other_admin,
            _dir: dir,
        }
    }

    fn http(&self) -> &Http {
        &self.node.http
    }

    /// Create or replace role `name` of `ns` (with that namespace's admin).
    async fn put_role(&self, ns: &str, name: &str, body: Value) {
        let token = if ns == NS {
            &self.admin
        } else {
            &self.other_admin
        };
        let (code, resp) = self
            .http()
            .put(
                &format!("/v1/namespaces/{ns}/auth/kubernetes/roles/{name}"),
                Some(token),
                body,
            )
            .await;
        assert!(
            code == 204 || code == 200,
            "put role {ns}/{name}: {code} {resp}"
        );
    }

    async fn login(&self, ns: &str, role: &str, jwt: &str) -> (u16, Value) {
        self.http()
            .post(
                "/v1/auth/kubernetes/login",
                None,
                json!({ "namespace": ns, "role": role, "jwt": jwt }),
            )
            .await
    }
}

/// The role of most tests: ServiceAccount `apps/web` may read `app/*` of
/// [`NS`] for 10 minutes.
fn web_role() -> Value {
    json!({
        "service_accounts": ["apps/web"],
        "policies": ["reader"],
        "ttl": "10m",
        "audience": "kstash",
    })
}

/// Steps:
/// 1. a node against the fake API server (discovery, JWKS); role `web`
///    binds `apps/web` to `reader` in team-a;
/// 2. a projected token of `apps/web` (RSA), then one signed with an EC key
///    of the same JWKS, log in: each answer is an access token locked to
///    team-a with `reader`, expiring no later than the role's TTL;
/// 3. the token reads team-a's `app/db` and nothing else: a write is
///    refused, and its namespace is team-a whatever it asks;
/// 4. the audit log's login response names the service account;
/// 5. the token cannot be renewed past its first expiry.
#[tokio::test(flavor = "multi_thread")]
async fn a_projected_token_logs_in_and_reads_only_its_namespace() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let api = FakeKubeApi::start(&[&rsa, &ec]).await;

    eprintln!("--- step 1: node, role web in team-a");
    let s = Setup::start(&api, Mode::Discovery).await;
    s.put_role(NS, "web", web_role()).await;

    eprintln!("--- step 2: RSA and EC tokens log in");
    let now = unix_now();
    let mut token = String::new();
    for key in [&rsa, &ec] {
        let jwt = SaToken::new("apps", "web", now).sign(key);
        let (code, body) = s.login(NS, "web", &jwt).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["namespace"], NS, "{body}");
        assert_eq!(body["policies"], json!(["reader"]), "{body}");
        token = body["token"].as_str().unwrap().to_string();
        assert!(token.starts_with("kst_"), "{body}");
        let (code, info) = s.http().get("/v1/auth/token/self", Some(&token)).await;
        assert_eq!(code, 200, "{info}");
        let ttl = info["ttl"].as_u64().unwrap();
        assert!((590..=600).contains(&ttl), "ttl {ttl}: {info}");
    }

    eprintln!("--- step 3: team-a's secret only");
    let (code, body) = s.http().get("/v1/kv/app/db", Some(&token)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value"], "a-secret", "{body}");
    let (code, body) = s
        .http()
        .put("/v1/kv/app/db", Some(&token), json!({"value": "x"}))
        .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = s
        .http()
        .get(
            &format!("/v1/namespaces/{OTHER_NS}/policies/reader"),
            Some(&token),
        )
        .await;
    assert_eq!(code, 403, "{body}");

    eprintln!("--- step 4: the audit log names the service account");
    let responses = login_responses(&s.audit);
    assert_eq!(responses.len(), 2, "{responses:?}");
    for r in &responses {
        assert_eq!(r["outcome"], "ok", "{r}");
        assert_eq!(r["principal"]["kind"], "service_account_token", "{r}");
        assert_eq!(
            r["principal"]["subject"], "system:serviceaccount:apps:web",
            "{r}"
        );
        assert!(
            r["principal"]["accessor"]
                .as_str()
                .is_some_and(|a| a.starts_with("hmac-sha256:")),
            "{r}"
        );
        assert!(r.get("failed_check").is_none(), "{r}");
    }

    eprintln!("--- step 5: not renewable past its first expiry");
    let (_, before) = s.http().get("/v1/auth/token/self", Some(&token)).await;
    let (code, body) = s
        .http()
        .post(
            "/v1/auth/token/renew",
            Some(&token),
            json!({"increment": "1h"}),
        )
        .await;
    assert!(code == 200 || code == 400, "{code} {body}");
    let (_, after) = s.http().get("/v1/auth/token/self", Some(&token)).await;
    assert_eq!(after["max_expires_at"], before["max_expires_at"]);
    assert!(after["expires_at"].as_str() <= before["max_expires_at"].as_str());
}

/// Steps:
/// 1. a node against the fake API server; role `web` as usual;
/// 2. one token for each way a token can fail (issuer, audience,
///    signature, key id, alg none, HS256 keyed with the public key,
///    expired, not yet valid, issued in the future, a malformed subject,
///    claims that disagree with it, a legacy token (its own issuer, and
///    with the cluster's issuer: no `exp`), garbage, an unbound
///    service account, a missing role): each gets 401 with the very same
///    body;
/// 3. the audit log names each failed check, in order, and holds none of
///    the tokens; `kstash_login_refusals_total` counts them by check;
/// 4. a good token still logs in afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn every_refused_token_gets_one_answer_and_the_audit_log_names_the_check() {
    let key = SigningKey::rsa("rsa-1");
    let stranger = SigningKey::rsa("rsa-1").with_kid("rsa-1"); // same kid, other key
    let unknown = SigningKey::ec("not-published");
    let api = FakeKubeApi::start(&[&key]).await;

    eprintln!("--- step 1: node, role web");
    let s = Setup::start(&api, Mode::Discovery).await;
    s.put_role(NS, "web", web_role()).await;

    eprintln!("--- step 2: each bad token");
    let now = unix_now();
    let good = || SaToken::new("apps", "web", now);
    let public_pem = key.public_pem().as_bytes().to_vec();
    let cases: Vec<(&str, &str, String)> = vec![
        (
            "issuer",
            "web",
            good().issuer("https://evil.example").sign(&key),
        ),
        ("audience", "web", good().audiences(&["vault"]).sign(&key)),
        ("signature", "web", good().sign(&stranger)),
        ("key_id", "web", good().sign(&unknown)),
        ("algorithm", "web", good().unsigned_alg_none()),
        ("algorithm", "web", good().sign_hs256(&public_pem)),
        ("expired", "web", good().expires_in(-600).sign(&key)),
        ("not_yet_valid", "web", good().not_before_in(600).sign(&key)),
        ("issued_in_future", "web", good().issued_in(600).sign(&key)),
        (
            "subject",
            "web",
            good().set("/sub", json!("system:admin")).sign(&key),
        ),
        (
            "claims_mismatch",
            "web",
            good()
                .set("/kubernetes.io/namespace", json!("kube-system"))
                .sign(&key),
        ),
        ("issuer", "web", SaToken::legacy("apps", "web").sign(&key)),
        (
            "expired",
            "web",
            SaToken::legacy("apps", "web")
                .issuer(crate::kube::KUBE_ISSUER)
                .set("/aud", json!(["kstash"]))
                .sign(&key),
        ),
        ("malformed", "web", "not.a.jwt".to_string()),
        (
            "not_bound",
            "web",
            SaToken::new("apps", "billing", now).sign(&key),
        ),
        ("role_not_found", "nope", good().sign(&key)),
    ];
    let mut answers = Vec::new();
    for (check, role, jwt) in &cases {
        let (code, body) = s.login(NS, role, jwt).await;
        assert_eq!(code, 401, "{check}: {body}");
        assert_error(&body, "unauthorized");
        answers.push(body);
    }
    for (i, body) in answers.iter().enumerate() {
        assert_eq!(body, &answers[0], "case {} answers differently", cases[i].0);
    }

    eprintln!("--- step 3: the audit log says which check failed");
    let responses = login_responses(&s.audit);
    let checks: Vec<&str> = responses
        .iter()
        .map(|r| r["failed_check"].as_str().unwrap_or("-"))
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(checks, expected);
    assert_eq!(
        responses[cases.len() - 2]["principal"]["subject"],
        "system:serviceaccount:apps:billing",
        "a verified but unbound token names its service account"
    );
    let text = std::fs::read_to_string(&s.audit).unwrap();
    for (check, _, jwt) in &cases {
        if jwt.len() > 20 {
            let signature = jwt.rsplit('.').next().unwrap_or_default();
            assert!(
                !text.contains(jwt.as_str()) && (signature.len() < 16 || !text.contains(signature)),
                "the {check} token is in the audit log"
            );
        }
    }

    for (check, count) in [("audience", 1.0), ("algorithm", 2.0), ("not_bound", 1.0)] {
        let name = format!("kstash_login_refusals_total{{check=\"{check}\"}}");
        assert_eq!(sample(s.http(), &name).await, count, "{name}");
    }

    eprintln!("--- step 4: a good token still logs in");
    let (code, body) = s.login(NS, "web", &good().sign(&key)).await;
    assert_eq!(code, 200, "{body}");
}

/// Steps:
/// 1. role `team` binds `apps/*`; role `web` of team-b binds `apps/web`
///    too, to team-b's reader;
/// 2. any service account of Kubernetes namespace `apps` logs in through
///    `team`; one of `other` does not;
/// 3. a token minted by team-a's role reads team-a's value, never team-b's;
///    team-a's role names do not log in to team-b, and a team-b token of
///    the same service account reads only team-b;
/// 4. team-a's admin can neither read nor write team-b's roles.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_wildcard_binds_every_account_of_it_and_namespaces_stay_apart() {
    let key = SigningKey::ec("ec-1");
    let api = FakeKubeApi::start(&[&key]).await;
    let s = Setup::start(&api, Mode::Discovery).await;

    eprintln!("--- step 1: roles");
    s.put_role(
        NS,
        "team",
        json!({"service_accounts": ["apps/*"], "policies": ["reader"]}),
    )
    .await;
    s.put_role(OTHER_NS, "web", web_role()).await;
    let now = unix_now();

    eprintln!("--- step 2: apps/* binds every account of apps, only those");
    for name in ["web", "billing", "batch-7"] {
        let (code, body) = s
            .login(NS, "team", &SaToken::new("apps", name, now).sign(&key))
            .await;
        assert_eq!(code, 200, "{name}: {body}");
    }
    let (code, body) = s
        .login(NS, "team", &SaToken::new("other", "web", now).sign(&key))
        .await;
    assert_eq!(code, 401, "{body}");

    eprintln!("--- step 3: namespaces stay apart");
    let jwt = SaToken::new("apps", "web", now).sign(&key);
    let (_, a) = s.login(NS, "team", &jwt).await;
    let a = a["token"].as_str().unwrap().to_string();
    let (code, body) = s.http().get("/v1/kv/app/db", Some(&a)).await;
    assert_eq!((code, body["value"].as_str()), (200, Some("a-secret")));
    let (code, body) = s.login(OTHER_NS, "team", &jwt).await;
    assert_eq!(code, 401, "team-a's role name in team-b: {body}");
    let (code, b) = s.login(OTHER_NS, "web", &jwt).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["namespace"], OTHER_NS);
    let b = b["token"].as_str().unwrap().to_string();
    let (code, body) = s.http().get("/v1/kv/app/db", Some(&b)).await;
    assert_eq!((code, body["value"].as_str()), (200, Some("b-secret")));

    eprintln!("--- step 4: team-a's admin cannot touch team-b's roles");
    let path = format!("/v1/namespaces/{OTHER_NS}/auth/kubernetes/roles/web");
    let (code, body) = s.http().get(&path, Some(&s.admin)).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = s.http().put(&path, Some(&s.admin), web_role()).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = s.http().delete(&path, Some(&s.admin)).await;
    assert_eq!(code, 403, "{body}");
}

/// Steps:
/// 1. a node that also asks TokenReview; a token logs in, and TokenReview
///    was asked with the role's audience and kstash's own bearer token;
/// 2. the pod is deleted: the same (still unexpired) token is refused at
///    once, and the audit log says `token_review`;
/// 3. the API server refuses kstash's credentials (no
///    system:auth-delegator): 503 naming the fix, not a 401, and counted
///    in `kstash_kubernetes_token_review_failures_total`.
#[tokio::test(flavor = "multi_thread")]
async fn token_review_refuses_a_token_whose_pod_is_gone() {
    let key = SigningKey::rsa("rsa-1");
    let api = FakeKubeApi::start(&[&key]).await;
    let s = Setup::start(&api, Mode::DiscoveryAndReview).await;
    s.put_role(NS, "web", web_role()).await;

    eprintln!("--- step 1: a login asks TokenReview");
    let token = SaToken::new("apps", "web", unix_now());
    let pod = token.pod_name().unwrap().to_string();
    let jwt = token.sign(&key);
    let (code, body) = s.login(NS, "web", &jwt).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(api.hits(Route::TokenReview), 1);
    let review = api.reviews().pop().unwrap();
    assert_eq!(review["spec"]["audiences"], json!(["kstash"]), "{review}");

    eprintln!("--- step 2: the pod is deleted");
    api.delete_pod(&pod);
    let (code, body) = s.login(NS, "web", &jwt).await;
    assert_eq!(code, 401, "{body}");
    let last = login_responses(&s.audit).pop().unwrap();
    assert_eq!(last["failed_check"], "token_review", "{last}");

    eprintln!("--- step 3: kstash's own credentials refused");
    api.forbid_token_review(true);
    let jwt = SaToken::new("apps", "web", unix_now()).sign(&key);
    let (code, body) = s.login(NS, "web", &jwt).await;
    assert_eq!(code, 503, "{body}");
    assert_error(&body, "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("system:auth-delegator"), "{message}");
    assert_eq!(
        sample(s.http(), "kstash_kubernetes_token_review_failures_total").await,
        1.0
    );
}

/// Steps:
/// 1. the API server is down before any key was fetched: a login gets 503
///    naming the signing keys and the URL (not a 401), counted in
///    `kstash_kubernetes_key_fetch_failures_total`, and nothing is cached;
/// 2. it comes back: the next login works;
/// 3. it goes down again: logins go on with the keys fetched before.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_issuer_is_a_clear_503_and_nothing_wrong_is_cached() {
    let key = SigningKey::rsa("rsa-1");
    let api = FakeKubeApi::start(&[&key]).await;
    let s = Setup::start(&api, Mode::Discovery).await;
    s.put_role(NS, "web", web_role()).await;

    eprintln!("--- step 1: down from the start");
    api.set_down(true);
    let jwt = SaToken::new("apps", "web", unix_now()).sign(&key);
    let (code, body) = s.login(NS, "web", &jwt).await;
    assert_eq!(code, 503, "{body}");
    assert_error(&body, "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&api.base_url()), "{message}");
    assert!(!message.contains(&jwt), "{message}");
    assert!(sample(s.http(), "kstash_kubernetes_key_fetch_failures_total").await >= 1.0);

    eprintln!("--- step 2: back");
    api.set_down(false);
    // Fetches are at least `MIN_FETCH_INTERVAL` apart, so the next login
    // within that second still gets the 503; none after it does.
    let started = std::time::Instant::now();
    wait_until(Duration::from_secs(10), "a login works again", || async {
        s.login(NS, "web", &jwt).await.0 == 200
    })
    .await;
    assert!(
        started.elapsed() <= kstash::auth::kubernetes::MIN_FETCH_INTERVAL + Duration::from_secs(2),
        "the outage was remembered for {:?}",
        started.elapsed()
    );

    eprintln!("--- step 3: down again; the fetched keys still serve");
    api.set_down(true);
    let jwt = SaToken::new("apps", "web", unix_now()).sign(&key);
    let (code, body) = s.login(NS, "web", &jwt).await;
    assert_eq!(code, 200, "{body}");
}

/// Steps:
/// 1. tokens of key 1 log in;
/// 2. the cluster rotates to key 2 (JWKS now lists only key 2): a token of
///    key 2 logs in without a restart (after at most a short refetch
///    wait), and a token of key 1 is refused once the keys are fetched
///    again.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_signing_key_is_picked_up_without_a_restart() {
    let one = SigningKey::rsa("key-1");
    let two = SigningKey::ec("key-2");
    let api = FakeKubeApi::start(&[&one]).await;
    let s = Setup::start(&api, Mode::Discovery).await;
    s.put_role(NS, "web", web_role()).await;

    eprintln!("--- step 1: key 1");
    let (code, body) = s
        .login(
            NS,
            "web",
            &SaToken::new("apps", "web", unix_now()).sign(&one),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    eprintln!("--- step 2: rotated to key 2");
    api.set_keys(&[&two]);
    wait_until(Duration::from_secs(10), "a key-2 token logs in", || async {
        let jwt = SaToken::new("apps", "web", unix_now()).sign(&two);
        s.login(NS, "web", &jwt).await.0 == 200
    })
    .await;
    let (code, body) = s
        .login(
            NS,
            "web",
            &SaToken::new("apps", "web", unix_now()).sign(&one),
        )
        .await;
    assert_eq!(code, 401, "{body}");
}

/// Steps:
/// 1. a node with a JWKS file and an issuer, no API server at all;
/// 2. a token logs in; one of another issuer does not;
/// 3. the file is rewritten with a new key: its tokens log in, no restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_file_serves_without_an_api_server() {
    let one = SigningKey::rsa("file-1");
    let two = SigningKey::ec("file-2");
    let dir = private_dir("jwks-");
    let file = Jwks::write(dir.path(), &[&one]);
    let issuer = "https://kubernetes.default.svc.cluster.local".to_string();
    let (f, i) = (file.clone(), issuer.clone());
    let node = TestNode::start_with(move |a| {
        a.kubernetes_jwks_file = Some(f);
        a.kubernetes_issuer = Some(i);
    })
    .await;
    let init = node.init_unsealed(1, 1).await;
    let admin = node.login(&init["access_key"], NS, &["admin"], None).await;
    let (code, body) = node
        .http
        .put(
            &format!("/v1/namespaces/{NS}/auth/kubernetes/roles/web"),
            Some(&admin),
            web_role(),
        )
        .await;
    assert!(code == 204 || code == 200, "{body}");
    let login = |jwt: String| {
        let http = &node.http;
        async move {
            http.post(
                "/v1/auth/kubernetes/login",
                None,
                json!({"namespace": NS, "role": "web", "jwt": jwt}),
            )
            .await
        }
    };

    eprintln!("--- step 2: the file's key");
    let now = unix_now();
    let (code, body) = login(SaToken::new("apps", "web", now).issuer(&issuer).sign(&one)).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = login(
        SaToken::new("apps", "web", now)
            .issuer("https://other.example")
            .sign(&one),
    )
    .await;
    assert_eq!(code, 401, "{body}");

    eprintln!("--- step 3: the file rotates");
    std::fs::remove_file(&file).unwrap();
    let again = Jwks::write(dir.path(), &[&one, &two]);
    assert_eq!(again, file);
    wait_until(
        Duration::from_secs(10),
        "a token of the new key logs in",
        || {
            let jwt = SaToken::new("apps", "web", unix_now())
                .issuer(&issuer)
                .sign(&two);
            let l = login(jwt);
            async move { l.await.0 == 200 }
        },
    )
    .await;
}

/// Steps:
/// 1. roles: put, get (defaults filled in), list, delete, get → 404;
/// 2. bad roles are refused with what to fix, and nothing is stored;
/// 3. a token without admin cannot manage roles;
/// 4. a node without any Kubernetes setting says login is not configured.
#[tokio::test(flavor = "multi_thread")]
async fn roles_are_managed_by_the_namespace_admin_and_validated() {
    let key = SigningKey::rsa("rsa-1");
    let api = FakeKubeApi::start(&[&key]).await;
    let s = Setup::start(&api, Mode::Discovery).await;
    let roles = format!("/v1/namespaces/{NS}/auth/kubernetes/roles");

    eprintln!("--- step 1: put, get, list, delete");
    s.put_role(
        NS,
        "web",
        json!({"service_accounts": ["apps/web"], "policies": ["reader"]}),
    )
    .await;
    let (code, body) = s.http().get(&format!("{roles}/web"), Some(&s.admin)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["audience"], "kstash", "{body}");
    assert_eq!(body["ttl"], "15m", "{body}");
    assert_eq!(body["service_accounts"], json!(["apps/web"]), "{body}");
    s.put_role(NS, "batch", web_role()).await;
    let (code, body) = s.http().get(&roles, Some(&s.admin)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["roles"], json!(["batch", "web"]), "{body}");
    let (code, body) = s
        .http()
        .delete(&format!("{roles}/batch"), Some(&s.admin))
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = s
        .http()
        .get(&format!("{roles}/batch"), Some(&s.admin))
        .await;
    assert_eq!(code, 404, "{body}");

    eprintln!("--- step 2: bad roles");
    for bad in [
        json!({"service_accounts": ["*/web"]}),
        json!({"service_accounts": ["apps"]}),
        json!({"service_accounts": []}),
        json!({"service_accounts": ["Apps/web"]}),
        json!({"service_accounts": ["apps/web"], "ttl": "0s"}),
        json!({"service_accounts": ["apps/web"], "audience": ""}),
        json!({"service_accounts": ["apps/web"], "policies": ["Bad Name"]}),
        json!({"service_accounts": ["apps/web"], "extra": 1}),
    ] {
        let (code, body) = s
            .http()
            .put(&format!("{roles}/bad"), Some(&s.admin), bad.clone())
            .await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, _) = s.http().get(&format!("{roles}/bad"), Some(&s.admin)).await;
    assert_eq!(code, 404);

    eprintln!("--- step 3: no admin, no roles");
    let (code, login) = s
        .login(
            NS,
            "web",
            &SaToken::new("apps", "web", unix_now()).sign(&key),
        )
        .await;
    assert_eq!(code, 200, "{login}");
    let reader = login["token"].as_str().unwrap();
    let (code, body) = s.http().get(&roles, Some(reader)).await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = s
        .http()
        .put(&format!("{roles}/mine"), Some(reader), web_role())
        .await;
    assert_eq!(code, 403, "{body}");

    eprintln!("--- step 4: not configured");
    let plain = TestNode::start().await;
    plain.init_unsealed(1, 1).await;
    let (code, body) = plain
        .http
        .post(
            "/v1/auth/kubernetes/login",
            None,
            json!({"namespace": NS, "role": "web", "jwt": SaToken::new("apps", "web", unix_now()).sign(&key)}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not configured"),
        "{body}"
    );
}

/// Run the real `kstash` binary with `args`; (exit success, stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(crate::procs::BIN)
            .args(&args)
            .env_remove("KSTASH_TOKEN")
            .env_remove("KSTASH_ADDR")
            .output()
            .expect("running kstash");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// The process-level walk-through, as README's "Kubernetes ServiceAccount
/// login" tells it, on three `kstash server` processes configured with
/// flags only. Steps:
/// 1. the fake API server (discovery, JWKS, TokenReview); three nodes with
///    `--kubernetes-api`, `--kubernetes-ca-cert`, `--kubernetes-token-file`,
///    `--kubernetes-token-review`; init and unseal through node 1;
/// 2. with the CLI through a follower: team-a's admin writes a policy, a
///    role (`kstash role put`) and a secret;
/// 3. `kstash login kubernetes --jwt-file` through the OTHER follower
///    prints a token that reads the secret through every node;
/// 4. the pod is deleted: the same login through the follower is refused
///    (exit code non-zero, the one answer, no token on stderr).
#[tokio::test(flavor = "multi_thread")]
async fn walkthrough_on_three_processes_logging_in_through_a_follower() {
    use crate::procs::{self, ProcCluster};

    eprintln!("--- step 1: fake API server, three nodes");
    let key = SigningKey::rsa("rsa-1");
    let api = FakeKubeApi::start(&[&key]).await;
    let dir = private_dir("k8s-walk-");
    let reviewer = api.write_reviewer_token(dir.path());
    let (base, ca) = (api.base_url(), api.ca_file().to_string_lossy().to_string());
    let reviewer = reviewer.to_string_lossy().to_string();
    let flags = [
        "--kubernetes-api",
        base.as_str(),
        "--kubernetes-ca-cert",
        ca.as_str(),
        "--kubernetes-token-file",
        reviewer.as_str(),
        "--kubernetes-token-review",
        "true",
    ];
    let c = ProcCluster::start_with("k8s-walk", &flags).await;
    let init = procs::init(&c.api(1), 1, 1, 1).await;
    let (code, body) = c
        .api(1)
        .post(
            "/v1/sys/unseal",
            None,
            json!({ "key": init["unseal_keys"][0] }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    c.wait_voters(Duration::from_secs(20)).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let url = |id: u64| c.api(id).base().to_string();
    let admin = procs::login(&c.api(followers[0]), &init["access_key"], NS).await;

    eprintln!(
        "--- step 2: policy, role and secret through follower {}",
        followers[0]
    );
    let policy = dir.path().join("reader.json");
    std::fs::write(
        &policy,
        r#"{"rules": [{"path": "app/*", "capabilities": ["read"]}]}"#,
    )
    .unwrap();
    let admin_cli = |args: &[&str]| {
        let mut v: Vec<String> = vec![
            "--address".into(),
            url(followers[0]),
            "--token".into(),
            admin.clone(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let policy_arg = policy.to_string_lossy().to_string();
    for args in [
        admin_cli(&["policy", "put", NS, "reader", &policy_arg]),
        admin_cli(&[
            "role",
            "put",
            NS,
            "web",
            "--service-account",
            "apps/web",
            "--policy",
            "reader",
            "--ttl",
            "10m",
        ]),
        admin_cli(&["kv", "put", "app/db", "walk-secret"]),
    ] {
        let (ok, out, err) = cli(args.clone()).await;
        assert!(ok, "{args:?}: {out} {err}");
    }

    eprintln!(
        "--- step 3: login kubernetes through follower {}",
        followers[1]
    );
    let token = SaToken::new("apps", "web", unix_now());
    let pod = token.pod_name().unwrap().to_string();
    let jwt_file = dir.path().join("web-token");
    std::fs::write(&jwt_file, token.sign(&key)).unwrap();
    let jwt_arg = jwt_file.to_string_lossy().to_string();
    let login_args = vec![
        "--address".to_string(),
        url(followers[1]),
        "login".into(),
        "kubernetes".into(),
        "--namespace".into(),
        NS.into(),
        "--role".into(),
        "web".into(),
        "--jwt-file".into(),
        jwt_arg.clone(),
        "--token-only".into(),
    ];
    let (ok, out, err) = cli(login_args.clone()).await;
    assert!(ok, "{out} {err}");
    let minted = out.trim().to_string();
    assert!(minted.starts_with("kst_"), "{out}");
    for id in [1, 2, 3] {
        let (code, body) = c.api(id).get("/v1/kv/app/db", Some(&minted)).await;
        assert_eq!(code, 200, "node {id}: {body}");
        assert_eq!(body["value"], "walk-secret", "node {id}: {body}");
    }

    eprintln!("--- step 4: the pod is deleted");
    api.delete_pod(&pod);
    let (ok, out, err) = cli(login_args).await;
    assert!(!ok, "{out} {err}");
    assert!(err.contains("login refused"), "{err}");
    assert!(!err.contains(&std::fs::read_to_string(&jwt_file).unwrap()));
    drop(c);
}

/// gRPC mirrors REST. Steps:
/// 1. a node against the fake API server, role `web`;
/// 2. `Auth/KubernetesLogin` with a good token: a token for team-a with
///    `reader`, recorded with transport `grpc` and the service account;
/// 3. a token of another audience and one of an unbound account: the same
///    `UNAUTHENTICATED` status, message and all, and neither token in it.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_login_mirrors_rest() {
    use kstash::api::grpc::pb;
    use pb::auth_client::AuthClient;

    let key = SigningKey::ec("ec-1");
    let api = FakeKubeApi::start(&[&key]).await;
    let s = Setup::start(&api, Mode::Discovery).await;
    s.put_role(NS, "web", web_role()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.node.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut auth = AuthClient::new(channel);
    let login = |jwt: String| pb::KubernetesLoginRequest {
        namespace: NS.into(),
        role: "web".into(),
        jwt,
    };

    eprintln!("--- step 2: a good token");
    let now = unix_now();
    let ok = auth
        .kubernetes_login(login(SaToken::new("apps", "web", now).sign(&key)))
        .await
        .expect("login over gRPC")
        .into_inner();
    assert!(ok.token.starts_with("kst_"));
    assert_eq!(
        (ok.namespace.as_str(), ok.policies),
        (NS, vec!["reader".to_string()])
    );
    let last = login_responses(&s.audit).pop().unwrap();
    assert_eq!(last["transport"], "grpc", "{last}");
    assert_eq!(
        last["principal"]["subject"], "system:serviceaccount:apps:web",
        "{last}"
    );

    eprintln!("--- step 3: two refusals, one answer");
    let mut answers = Vec::new();
    for jwt in [
        SaToken::new("apps", "web", now)
            .audiences(&["vault"])
            .sign(&key),
        SaToken::new("apps", "billing", now).sign(&key),
    ] {
        let e = auth.kubernetes_login(login(jwt.clone())).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(!e.message().contains(signature), "{e:?}");
        answers.push(e.message().to_string());
    }
    assert_eq!(answers[0], answers[1]);
    let checks: Vec<Value> = login_responses(&s.audit)
        .iter()
        .rev()
        .take(2)
        .map(|r| r["failed_check"].clone())
        .collect();
    assert_eq!(checks, [json!("not_bound"), json!("audience")]);
}
