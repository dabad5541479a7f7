//! The gRPC walk-through of the single-node acceptance, with the generated
//! clients against an in-process node that serves REST and gRPC on one port.

use std::time::Duration;

use kstash::api::grpc::pb;
use pb::auth_client::AuthClient;
use pb::kubernetes_roles_client::KubernetesRolesClient;
use pb::kv_client::KvClient;
use pb::policies_client::PoliciesClient;
use pb::sys_client::SysClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::common::{captured_logs, test_config, TestNode};

/// Clients of every service over one connection.
struct Grpc {
    sys: SysClient<Channel>,
    auth: AuthClient<Channel>,
    policies: PoliciesClient<Channel>,
    kv: KvClient<Channel>,
}

impl Grpc {
    async fn connect(n: &TestNode) -> Grpc {
        let channel = Channel::from_shared(format!("http://{}", n.server.addr))
            .unwrap()
            .connect()
            .await
            .expect("gRPC reaches the test node");
        Grpc {
            sys: SysClient::new(channel.clone()),
            auth: AuthClient::new(channel.clone()),
            policies: PoliciesClient::new(channel.clone()),
            kv: KvClient::new(channel),
        }
    }

    async fn login(
        &mut self,
        access_key: &str,
        ns: &str,
        policies: &[&str],
        ttl: Option<&str>,
    ) -> String {
        let r = self
            .auth
            .login(pb::LoginRequest {
                access_key: access_key.to_string(),
                namespace: ns.to_string(),
                policies: policies.iter().map(|p| p.to_string()).collect(),
                ttl: ttl.map(str::to_string),
            })
            .await
            .expect("login")
            .into_inner();
        assert_eq!(r.namespace, ns);
        r.token
    }

    async fn get(&mut self, token: &str, path: &str) -> Result<pb::SecretResponse, Status> {
        let r = self
            .kv
            .get(authed(
                pb::GetSecretRequest {
                    path: path.into(),
                    ..Default::default()
                },
                token,
            ))
            .await?;
        Ok(r.into_inner())
    }

    async fn put(
        &mut self,
        token: &str,
        path: &str,
        value: &[u8],
        cas: Option<u64>,
    ) -> Result<u64, Status> {
        let msg = pb::PutSecretRequest {
            path: path.into(),
            value: value.to_vec(),
            cas,
            ..Default::default()
        };
        Ok(self.kv.put(authed(msg, token)).await?.into_inner().version)
    }

    /// Init `shares`/`threshold` and unseal with the first keys.
    async fn init_unsealed(&mut self, shares: u32, threshold: u32) -> pb::InitResponse {
        let init = self
            .sys
            .init(pb::InitRequest {
                shares,
                threshold,
                gatekeeper_tokens: None,
            })
            .await
            .expect("init")
            .into_inner();
        for k in init.unseal_keys.iter().take(threshold as usize) {
            let req = pb::UnsealRequest {
                key: Some(k.clone()),
                ..Default::default()
            };
            self.sys.unseal(req).await.expect("unseal");
        }
        init
    }
}

/// `msg` with `authorization: Bearer <token>` metadata.
fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    let e = r.expect_err("the call must fail");
    assert_eq!(e.code(), code, "{e:?}");
    e
}

fn rule(path: &str, caps: &[&str]) -> pb::Rule {
    pb::Rule {
        path: path.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
    }
}

/// Steps: init 5/3 → status sealed → 2 keys (progress 2/3; Kv.Get
/// Unavailable) → 3rd key unseals → admin login for team-a → policy app-rw
/// (app/* read, create, update) → app-rw login → put/get app/db → team-b
/// admin sees NotFound for app/db and PermissionDenied on team-a's policies →
/// team-a token without read on a path gets PermissionDenied → app/../x
/// InvalidArgument → ttl 1s token after 1.5 s Unauthenticated → revoked
/// token Unauthenticated.
#[tokio::test]
async fn grpc_walk_through() {
    let n = TestNode::start().await;
    let mut g = Grpc::connect(&n).await;

    tracing::info!("--- step: init 5/3");
    let st = g
        .sys
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!st.initialized);
    let init = g
        .sys
        .init(pb::InitRequest {
            shares: 5,
            threshold: 3,
            gatekeeper_tokens: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(init.unseal_keys.len(), 5);
    assert_eq!(
        init.gatekeeper_tokens.len(),
        1,
        "one gatekeeper token by default"
    );
    assert!(init.access_key.starts_with("ksa_"));
    let again = g
        .sys
        .init(pb::InitRequest {
            shares: 5,
            threshold: 3,
            gatekeeper_tokens: None,
        })
        .await;
    assert_code(again, Code::FailedPrecondition);

    tracing::info!("--- step: sealed, progress 2/3");
    let st = g
        .sys
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(st.initialized && st.sealed);
    assert_eq!((st.threshold, st.shares, st.progress), (3, 5, 0));
    for (i, k) in init.unseal_keys.iter().take(2).enumerate() {
        let r = g
            .sys
            .unseal(pb::UnsealRequest {
                key: Some(k.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let st = r.status.unwrap();
        assert!(st.sealed);
        assert_eq!(st.progress, i as u32 + 1);
    }
    assert_code(g.get("kst_whatever", "app/db").await, Code::Unavailable);

    tracing::info!("--- step: third key unseals");
    let r = g
        .sys
        .unseal(pb::UnsealRequest {
            key: Some(init.unseal_keys[2].clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let st = r.status.unwrap();
    assert!(!st.sealed);
    assert_eq!(st.progress, 0);
    assert!(st.key_term.is_some());
    assert!(
        r.gatekeeper_token.is_none(),
        "only a gatekeeper-token unseal has a replacement"
    );

    tracing::info!("--- step: policy app-rw for team-a");
    let admin = g.login(&init.access_key, "team-a", &["admin"], None).await;
    let put = pb::PutPolicyRequest {
        namespace: "team-a".into(),
        name: "app-rw".into(),
        rules: vec![rule("app/*", &["read", "create", "update"])],
        ..Default::default()
    };
    g.policies.put_policy(authed(put, &admin)).await.unwrap();
    let got = g
        .policies
        .get_policy(authed(
            pb::GetPolicyRequest {
                namespace: "team-a".into(),
                name: "app-rw".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!got.builtin);
    assert_eq!(
        got.rules,
        vec![rule("app/*", &["read", "create", "update"])]
    );
    let list = g
        .policies
        .list_policies(authed(
            pb::ListPoliciesRequest {
                namespace: "team-a".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.policies.contains(&"admin".to_string())
            && list.policies.contains(&"app-rw".to_string())
    );
    let bad_cap = pb::PutPolicyRequest {
        namespace: "team-a".into(),
        name: "bad".into(),
        rules: vec![rule("app/*", &["sudo"])],
        ..Default::default()
    };
    assert_code(
        g.policies.put_policy(authed(bad_cap, &admin)).await,
        Code::InvalidArgument,
    );

    tracing::info!("--- step: app-rw token writes and reads app/db");
    let app = g.login(&init.access_key, "team-a", &["app-rw"], None).await;
    let me = g
        .auth
        .lookup_self(authed(pb::LookupSelfRequest {}, &app))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (me.namespace.as_str(), me.policies.clone()),
        ("team-a", vec!["app-rw".to_string()])
    );
    assert_eq!(g.put(&app, "app/db", b"s3cret-pw", None).await.unwrap(), 1);
    let s = g.get(&app, "app/db").await.unwrap();
    assert_eq!((s.value.as_slice(), s.version), (&b"s3cret-pw"[..], 1));

    tracing::info!("--- step: team-b is isolated from team-a");
    let team_b = g.login(&init.access_key, "team-b", &["admin"], None).await;
    assert_code(g.get(&team_b, "app/db").await, Code::NotFound);
    let intrude = pb::PutPolicyRequest {
        namespace: "team-a".into(),
        name: "app-rw".into(),
        rules: vec![rule("*", &["read"])],
        ..Default::default()
    };
    assert_code(
        g.policies.put_policy(authed(intrude, &team_b)).await,
        Code::PermissionDenied,
    );

    tracing::info!("--- step: a team-a token without read on a path is denied");
    assert_code(g.get(&app, "other/db").await, Code::PermissionDenied);
    let del =
        g.kv.delete(authed(
            pb::DeleteSecretRequest {
                path: "app/db".into(),
                ..Default::default()
            },
            &app,
        ))
        .await;
    assert_code(del, Code::PermissionDenied);
    let lst =
        g.kv.list(authed(
            pb::ListSecretsRequest {
                prefix: "app/".into(),
                ..Default::default()
            },
            &app,
        ))
        .await;
    assert_code(lst, Code::PermissionDenied);
    let no_policy = g.login(&init.access_key, "team-a", &[], None).await;
    assert_code(g.get(&no_policy, "app/db").await, Code::PermissionDenied);
    let list_policies = g.policies.list_policies(authed(
        pb::ListPoliciesRequest {
            namespace: "team-a".into(),
            ..Default::default()
        },
        &app,
    ));
    assert_code(list_policies.await, Code::PermissionDenied);

    tracing::info!("--- step: app/../x is refused");
    assert_code(g.get(&app, "app/../x").await, Code::InvalidArgument);
    assert_code(
        g.put(&app, "app/../x", b"v", None).await,
        Code::InvalidArgument,
    );

    tracing::info!("--- step: an expired token is refused");
    let short = g
        .login(&init.access_key, "team-a", &["app-rw"], Some("1s"))
        .await;
    assert_eq!(g.get(&short, "app/db").await.unwrap().version, 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_code(g.get(&short, "app/db").await, Code::Unauthenticated);

    tracing::info!("--- step: a revoked token is refused");
    let doomed = g
        .login(&init.access_key, "team-a", &["app-rw"], Some("1h"))
        .await;
    assert_eq!(g.get(&doomed, "app/db").await.unwrap().version, 1);
    g.auth
        .revoke_token(authed(pb::RevokeTokenRequest { token: None }, &doomed))
        .await
        .unwrap();
    assert_code(g.get(&doomed, "app/db").await, Code::Unauthenticated);
    // Revoking another token by possession.
    g.auth
        .revoke_token(authed(
            pb::RevokeTokenRequest {
                token: Some(app.clone()),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert_code(g.get(&app, "app/db").await, Code::Unauthenticated);
    // No token at all.
    let anon =
        g.kv.get(pb::GetSecretRequest {
            path: "app/db".into(),
            ..Default::default()
        })
        .await;
    let e = assert_code(anon, Code::Unauthenticated);
    assert!(
        e.message().starts_with("unauthorized: "),
        "REST's code string prefixes the message: {e:?}"
    );
}

/// Steps: node with max value 4096 B, init 1/1 → binary value round trip
/// (and REST on the same port sees it as base64) → `x-kstash-token` metadata
/// → CAS 0 / mismatch FailedPrecondition / match → value of 4096 B accepted,
/// 4097 B InvalidArgument (service limit), over max + 64 KiB OutOfRange
/// (tonic's decoding limit) → list, delete, NotFound → renew → seal with the
/// gatekeeper token → Kv.Get Unavailable, Health says sealed → unseal with
/// the replacement token → no secret reached the logs.
#[tokio::test]
async fn grpc_values_limits_and_seal() {
    let n = TestNode::start_with(|a| a.max_value_bytes = Some(4096)).await;
    let mut g = Grpc::connect(&n).await;

    tracing::info!("--- step: init 1/1 and unseal");
    let init = g.init_unsealed(1, 1).await;
    let admin = g
        .login(&init.access_key, "team-a", &["admin"], Some("1h"))
        .await;

    tracing::info!("--- step: binary value round trip, REST on the same port");
    let binary = [0u8, 159, 146, 150, 255];
    assert_eq!(g.put(&admin, "bin/key", &binary, None).await.unwrap(), 1);
    assert_eq!(g.get(&admin, "bin/key").await.unwrap().value, binary);
    let (code, body) = n.http.get("/v1/kv/bin/key", Some(&admin)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["value_base64"], "AJ+Slv8=");
    let (code, _) = n
        .http
        .put(
            "/v1/kv/text/key",
            Some(&admin),
            serde_json::json!({"value": "héllo"}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        g.get(&admin, "text/key").await.unwrap().value,
        "héllo".as_bytes()
    );

    tracing::info!("--- step: x-kstash-token metadata");
    let mut r = Request::new(pb::GetSecretRequest {
        path: "text/key".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("x-kstash-token", admin.parse().unwrap());
    assert_eq!(g.kv.get(r).await.unwrap().into_inner().version, 1);

    tracing::info!("--- step: check-and-set");
    assert_eq!(g.put(&admin, "app/cas", b"one", Some(0)).await.unwrap(), 1);
    let e = assert_code(
        g.put(&admin, "app/cas", b"two", Some(0)).await,
        Code::FailedPrecondition,
    );
    assert!(e.message().starts_with("conflict: "), "{e:?}");
    assert_code(
        g.put(&admin, "app/cas", b"two", Some(7)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(g.put(&admin, "app/cas", b"two", Some(1)).await.unwrap(), 2);
    assert_eq!(g.get(&admin, "app/cas").await.unwrap().value, b"two");

    tracing::info!("--- step: size limits");
    assert_eq!(
        g.put(&admin, "big/ok", &vec![b'a'; 4096], None)
            .await
            .unwrap(),
        1
    );
    let e = assert_code(
        g.put(&admin, "big/over", &vec![b'a'; 4097], None).await,
        Code::InvalidArgument,
    );
    assert!(e.message().starts_with("too_large: "), "{e:?}");
    let huge = vec![b'a'; 4096 + 64 * 1024 + 1];
    assert_code(
        g.put(&admin, "big/huge", &huge, None).await,
        Code::OutOfRange,
    );
    assert_code(g.get(&admin, "big/over").await, Code::NotFound);

    tracing::info!("--- step: list, delete, renew");
    let keys =
        g.kv.list(authed(
            pb::ListSecretsRequest {
                prefix: String::new(),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys, vec!["app/", "big/", "bin/", "text/"]);
    g.kv.delete(authed(
        pb::DeleteSecretRequest {
            path: "big/ok".into(),
            ..Default::default()
        },
        &admin,
    ))
    .await
    .unwrap();
    assert_code(g.get(&admin, "big/ok").await, Code::NotFound);
    let del =
        g.kv.delete(authed(
            pb::DeleteSecretRequest {
                path: "big/ok".into(),
                ..Default::default()
            },
            &admin,
        ))
        .await;
    assert_code(del, Code::NotFound);
    let renew = pb::RenewTokenRequest {
        increment: Some("2h".into()),
    };
    assert!(
        g.auth
            .renew_token(authed(renew, &admin))
            .await
            .unwrap()
            .into_inner()
            .ttl
            > 3600
    );
    let renew = pb::RenewTokenRequest {
        increment: Some("soon".into()),
    };
    assert_code(
        g.auth.renew_token(authed(renew, &admin)).await,
        Code::InvalidArgument,
    );

    tracing::info!("--- step: seal with the gatekeeper token");
    let gk = init.gatekeeper_tokens[0].clone();
    let sealed = g
        .sys
        .seal(pb::GatekeeperAuth {
            gatekeeper_token: Some(gk),
            keys: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let replacement = sealed
        .gatekeeper_token
        .expect("a used gatekeeper token is replaced");
    let e = assert_code(g.get(&admin, "app/cas").await, Code::Unavailable);
    assert!(e.message().starts_with("sealed: "), "{e:?}");
    let health = g
        .sys
        .health(pb::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(health.initialized && health.sealed);

    tracing::info!("--- step: unseal with the replacement token");
    let r = g
        .sys
        .unseal(pb::UnsealRequest {
            gatekeeper_token: Some(replacement),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.status.unwrap().sealed);
    assert!(r.gatekeeper_token.is_some());
    assert_eq!(g.get(&admin, "app/cas").await.unwrap().value, b"two");

    tracing::info!("--- step: no secret reached the logs");
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    for secret in [
        &init.access_key,
        &init.unseal_keys[0],
        &init.gatekeeper_tokens[0],
        &admin,
    ] {
        assert!(!logs.contains(secret.as_str()), "a secret was logged");
    }
    assert!(!logs.contains("héllo"), "a secret value was logged");
}

/// Steps: self-signed certificate → node serving TLS → Sys.Status and an
/// unauthenticated Kv.Get over gRPC with TLS (ALPN h2) → plaintext gRPC to
/// the TLS port fails.
#[tokio::test]
async fn grpc_over_tls() {
    use std::os::unix::fs::PermissionsExt;
    use tonic::transport::{Certificate, ClientTlsConfig};

    tracing::info!("--- step: serve with a self-signed certificate");
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = test_config(|a| {
        a.data_dir = Some(dir.path().join("data"));
        a.tls_disable = None;
        a.tls_cert = Some(cert.clone());
        a.tls_key = Some(key.clone());
    });
    let server = kstash::server::Server::start(
        &config,
        std::sync::Arc::new(kstash::storage::memory::MemoryBackend::new()),
        std::sync::Arc::new(kstash::clock::SystemClock),
    )
    .await
    .unwrap();
    let port = server.addr.port();

    tracing::info!("--- step: gRPC over TLS");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(certified.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS connects");
    let st = SysClient::new(channel.clone())
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!st.initialized);
    let get = KvClient::new(channel)
        .get(pb::GetSecretRequest {
            path: "app/db".into(),
            ..Default::default()
        })
        .await;
    assert_code(get, Code::Unavailable);

    tracing::info!("--- step: plaintext gRPC to the TLS port fails");
    let plain = async {
        let ch = Channel::from_shared(format!("http://localhost:{port}"))
            .unwrap()
            .connect()
            .await?;
        SysClient::new(ch)
            .status(pb::StatusRequest {})
            .await
            .map_err(|e| e.into())
    };
    let plain: Result<_, Box<dyn std::error::Error>> =
        tokio::time::timeout(Duration::from_secs(10), plain)
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
    assert!(plain.is_err());
    server.shutdown().await.unwrap();
}

/// A role `name` of `ns` binding `accounts`, as KubernetesRoles.Put takes it.
fn role(
    ns: &str,
    name: &str,
    accounts: &[&str],
    ttl: Option<&str>,
) -> pb::PutKubernetesRoleRequest {
    pb::PutKubernetesRoleRequest {
        namespace: ns.into(),
        name: name.into(),
        service_accounts: accounts.iter().map(|a| a.to_string()).collect(),
        policies: vec!["app-ro".into()],
        ttl: ttl.map(str::to_string),
        audience: None,
        idempotency_key: String::new(),
    }
}

/// Steps: init, team-a and team-b admin tokens → Put role `web` (shop/web,
/// batch/*; app-ro; 10m) → Get over gRPC equals GET over REST (audience
/// defaults to `kstash`) → a second role, List with limit 1 → truncated
/// with a cursor, the next page ends → a ttl that is no duration →
/// InvalidArgument → no token → Unauthenticated → team-b's admin →
/// PermissionDenied → Delete (with an idempotency key, twice) → Get
/// NotFound → KubernetesLogin on a node without Kubernetes settings →
/// InvalidArgument, the JWT never in the message.
#[tokio::test]
async fn grpc_kubernetes_roles_mirror_rest() {
    let n = TestNode::start().await;
    let mut g = Grpc::connect(&n).await;
    let channel = Channel::from_shared(format!("http://{}", n.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut roles = KubernetesRolesClient::new(channel);
    let init = g.init_unsealed(1, 1).await;
    let admin = g.login(&init.access_key, "team-a", &["admin"], None).await;
    let team_b = g.login(&init.access_key, "team-b", &["admin"], None).await;

    tracing::info!("--- step: put and get a role, the same as REST");
    let web = role("team-a", "web", &["shop/web", "batch/*"], Some("10m"));
    roles.put(authed(web, &admin)).await.expect("put web");
    let get = |name: &str| pb::GetKubernetesRoleRequest {
        namespace: "team-a".into(),
        name: name.into(),
    };
    let got = roles
        .get(authed(get("web"), &admin))
        .await
        .expect("get web")
        .into_inner();
    assert_eq!(got.name, "web");
    assert_eq!(got.service_accounts, ["shop/web", "batch/*"]);
    assert_eq!(got.policies, ["app-ro"]);
    assert_eq!((got.ttl.as_str(), got.audience.as_str()), ("10m", "kstash"));
    let (code, rest) = n
        .http
        .get(
            "/v1/namespaces/team-a/auth/kubernetes/roles/web",
            Some(&admin),
        )
        .await;
    assert_eq!(code, 200, "{rest}");
    assert_eq!(rest["ttl"], got.ttl);
    assert_eq!(rest["audience"], got.audience);
    assert_eq!(
        rest["service_accounts"],
        serde_json::json!(got.service_accounts)
    );

    tracing::info!("--- step: list in pages");
    let api = role("team-a", "api", &["shop/api"], None);
    roles.put(authed(api, &admin)).await.expect("put api");
    let list = |cursor: &str| pb::ListKubernetesRolesRequest {
        namespace: "team-a".into(),
        cursor: cursor.into(),
        limit: 1,
    };
    let first = roles
        .list(authed(list(""), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.roles, ["api"]);
    assert!(first.truncated && first.cursor == "api", "{first:?}");
    let next = roles
        .list(authed(list(&first.cursor), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.roles, ["web"]);

    tracing::info!("--- step: refusals");
    let bad = role("team-a", "bad", &["shop/web"], Some("soon"));
    assert_code(roles.put(authed(bad, &admin)).await, Code::InvalidArgument);
    assert_code(
        roles.get(Request::new(get("web"))).await,
        Code::Unauthenticated,
    );
    assert_code(
        roles.get(authed(get("web"), &team_b)).await,
        Code::PermissionDenied,
    );
    let intrude = role("team-a", "web", &["evil/*"], None);
    assert_code(
        roles.put(authed(intrude, &team_b)).await,
        Code::PermissionDenied,
    );

    tracing::info!("--- step: delete, twice with one key");
    for _ in 0..2 {
        let del = pb::DeleteKubernetesRoleRequest {
            namespace: "team-a".into(),
            name: "web".into(),
            idempotency_key: "del-web-1".into(),
        };
        roles.delete(authed(del, &admin)).await.expect("delete web");
    }
    assert_code(roles.get(authed(get("web"), &admin)).await, Code::NotFound);

    tracing::info!("--- step: login on a node without Kubernetes settings");
    let jwt = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LWNsYWltcw.c2VjcmV0LXNpZw";
    let e = assert_code(
        g.auth
            .kubernetes_login(pb::KubernetesLoginRequest {
                namespace: "team-a".into(),
                role: "api".into(),
                jwt: jwt.into(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(!e.message().contains("c2VjcmV0"), "{e:?}");

    n.server.shutdown().await.unwrap();
}

/// Steps: a node with a 1 KiB value limit; init, a team-a admin →
/// Keys.Create `k1` twice with one idempotency key (the same key) → Get
/// over gRPC equals GET over REST → Create `k2`; List with limit 1 →
/// truncated with a cursor, the next page ends → Rotate → Encrypt binary
/// bytes; REST decrypts them, and gRPC decrypts what REST encrypted → a
/// policy with encrypt/decrypt on `keys/k1` only: its token encrypts k1,
/// not k2 (PermissionDenied), cannot List → a tampered ciphertext →
/// InvalidArgument, no plaintext in the message → Configure retires v1, not
/// back (InvalidArgument) → 64 KiB round trips although values are limited
/// to 1 KiB (the Keys service's own decoding limit); 64 KiB + 1 →
/// InvalidArgument `too_large` → no token → Unauthenticated → sealed →
/// Unavailable.
#[tokio::test]
async fn grpc_keys_mirror_rest() {
    use base64::Engine;
    use pb::keys_client::KeysClient;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    let n = TestNode::start_with(|a| a.max_value_bytes = Some(1024)).await;
    let mut g = Grpc::connect(&n).await;
    let channel = Channel::from_shared(format!("http://{}", n.server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut keys = KeysClient::new(channel);
    let init = g.init_unsealed(1, 1).await;
    let admin = g.login(&init.access_key, "team-a", &["admin"], None).await;

    tracing::info!("--- step: create twice with one key, get as REST does");
    let create = |name: &str, key: &str| pb::CreateKeyRequest {
        name: name.into(),
        idempotency_key: key.into(),
    };
    let first = keys
        .create(authed(create("k1", "create-k1"), &admin))
        .await
        .expect("create k1")
        .into_inner();
    let again = keys
        .create(authed(create("k1", "create-k1"), &admin))
        .await
        .expect("a repeat gets the first answer")
        .into_inner();
    assert_eq!(first, again);
    assert_eq!((first.latest_version, first.versions.len()), (1, 1));
    assert_code(
        keys.create(authed(create("k1", ""), &admin)).await,
        Code::FailedPrecondition,
    );
    let got = keys
        .get(authed(pb::GetKeyRequest { name: "k1".into() }, &admin))
        .await
        .unwrap()
        .into_inner();
    let (code, rest) = n.http.get("/v1/keys/k1", Some(&admin)).await;
    assert_eq!(code, 200, "{rest}");
    assert_eq!(rest["key_id"], got.key_id);
    assert_eq!(rest["created_at"], got.created_at);
    assert_eq!(rest["versions"][0]["key_id"], got.versions[0].key_id);
    assert_eq!(got, first);

    tracing::info!("--- step: list in pages, rotate");
    keys.create(authed(create("k2", ""), &admin))
        .await
        .expect("create k2");
    let list = |cursor: &str| pb::ListKeysRequest {
        cursor: cursor.into(),
        limit: 1,
    };
    let page = keys
        .list(authed(list(""), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.keys, ["k1"]);
    assert!(page.truncated && page.cursor == "k1", "{page:?}");
    let page = keys
        .list(authed(list(&page.cursor), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((page.keys, page.truncated), (vec!["k2".to_string()], false));
    let rotated = keys
        .rotate(authed(
            pb::RotateKeyRequest {
                name: "k1".into(),
                idempotency_key: String::new(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.latest_version, 2);
    assert!(rotated.key_id.ends_with(":v2"), "{}", rotated.key_id);

    tracing::info!("--- step: encrypt over gRPC, decrypt over REST, and back");
    let encrypt = |name: &str, plaintext: &[u8]| pb::EncryptRequest {
        name: name.into(),
        plaintext: plaintext.to_vec(),
    };
    let decrypt = |name: &str, ciphertext: &str| pb::DecryptRequest {
        name: name.into(),
        ciphertext: ciphertext.into(),
    };
    let seed = b"\x00dek seed\xff\x01 grpc";
    let c = keys
        .encrypt(authed(encrypt("k1", seed), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (c.key_version, c.key_id.as_str()),
        (2, rotated.key_id.as_str())
    );
    let (code, d) = n
        .http
        .post(
            "/v1/keys/k1/decrypt",
            Some(&admin),
            serde_json::json!({ "ciphertext": c.ciphertext }),
        )
        .await;
    assert_eq!(
        (code, d["plaintext"].as_str()),
        (200, Some(b64(seed).as_str()))
    );
    let (code, rest_c) = n
        .http
        .post(
            "/v1/keys/k1/encrypt",
            Some(&admin),
            serde_json::json!({ "plaintext": b64(b"from rest") }),
        )
        .await;
    assert_eq!(code, 200, "{rest_c}");
    let d = keys
        .decrypt(authed(
            decrypt("k1", rest_c["ciphertext"].as_str().unwrap()),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (d.plaintext.as_slice(), d.key_version),
        (&b"from rest"[..], 2)
    );

    tracing::info!("--- step: a policy on keys/k1 only");
    g.policies
        .put_policy(authed(
            pb::PutPolicyRequest {
                namespace: "team-a".into(),
                name: "kek-user".into(),
                rules: vec![rule("keys/k1", &["encrypt", "decrypt"])],
                idempotency_key: String::new(),
            },
            &admin,
        ))
        .await
        .expect("put kek-user");
    let user = g
        .login(&init.access_key, "team-a", &["kek-user"], None)
        .await;
    let mine = keys
        .encrypt(authed(encrypt("k1", seed), &user))
        .await
        .expect("encrypt on keys/k1")
        .into_inner();
    let e = assert_code(
        keys.encrypt(authed(encrypt("k2", seed), &user)).await,
        Code::PermissionDenied,
    );
    assert!(e.message().contains("encrypt on team-a/keys/k2"), "{e:?}");
    assert_code(
        keys.list(authed(list(""), &user)).await,
        Code::PermissionDenied,
    );

    tracing::info!("--- step: a tampered ciphertext");
    let mut bad = mine.ciphertext.clone().into_bytes();
    let i = bad.len() - 10;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    let e = assert_code(
        keys.decrypt(authed(decrypt("k1", &bad), &user)).await,
        Code::InvalidArgument,
    );
    assert!(
        e.message()
            .contains("does not decrypt under key team-a/k1 version 2"),
        "{e:?}"
    );
    assert!(!e.message().contains("dek seed") && !e.message().contains(&b64(seed)));

    tracing::info!("--- step: configure retires v1, never back");
    let configure = |min: u32| pb::ConfigureKeyRequest {
        name: "k1".into(),
        min_decryption_version: min,
        idempotency_key: String::new(),
    };
    let info = keys
        .configure(authed(configure(2), &admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.min_decryption_version, 2);
    let e = assert_code(
        keys.configure(authed(configure(1), &admin)).await,
        Code::InvalidArgument,
    );
    assert!(e.message().contains("never goes down"), "{e:?}");

    tracing::info!("--- step: 64 KiB round trips on a node with 1 KiB values");
    let max = kstash::keys::MAX_PLAINTEXT_BYTES;
    let big: Vec<u8> = (0..max).map(|i| (i % 253) as u8).collect();
    let c = keys
        .encrypt(authed(encrypt("k1", &big), &user))
        .await
        .expect("64 KiB encrypts")
        .into_inner();
    let d = keys
        .decrypt(authed(decrypt("k1", &c.ciphertext), &user))
        .await
        .expect("its ciphertext decodes and decrypts")
        .into_inner();
    assert!(d.plaintext == big);
    let e = assert_code(
        keys.encrypt(authed(encrypt("k1", &vec![0u8; max + 1]), &user))
            .await,
        Code::InvalidArgument,
    );
    assert!(e.message().starts_with("too_large: "), "{e:?}");

    tracing::info!("--- step: no token, then sealed");
    assert_code(
        keys.encrypt(Request::new(encrypt("k1", seed))).await,
        Code::Unauthenticated,
    );
    let (code, body) = n
        .http
        .post(
            "/v1/sys/seal",
            None,
            serde_json::json!({ "keys": init.unseal_keys }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_code(
        keys.encrypt(authed(encrypt("k1", seed), &user)).await,
        Code::Unavailable,
    );
    assert_code(
        keys.decrypt(authed(decrypt("k1", &mine.ciphertext), &user))
            .await,
        Code::Unavailable,
    );
    assert_code(
        keys.get(authed(pb::GetKeyRequest { name: "k1".into() }, &user))
            .await,
        Code::Unavailable,
    );

    n.server.shutdown().await.unwrap();
}
