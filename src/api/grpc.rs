//! The gRPC API: the `kstash.v1` services of `proto/kstash/v1/kstash.proto`,
//! one to one with the REST routes, served on the same port, and gRPC server
//! reflection (v1 and v1alpha) describing exactly those services, so tools
//! such as `grpcurl` work without the proto file.
//!
//! Invariants: handlers are thin — decode, call one [`Node`] method, map
//! the error with [`to_grpc`] (the one shared mapping). Access tokens come
//! only from request metadata and are wrapped in [`SecretString`] at once;
//! messages that carry secrets print `<redacted>` in `Debug`; spans record
//! the RPC name and nothing from the request. The spans are at debug level:
//! at info an info span is made, its fields formatted and entered on every
//! poll for each request, a few percent of a node's CPU under load.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::acl::{self, Capability, Policy};
use crate::api::error::to_grpc;
use crate::guard::{audit, Call, CallContext, Door, Operation, Presented, Transport};
use crate::keys;
use crate::secret::SecretString;
use crate::service::types::{self as t, ListPage, Ttl};
use crate::service::{KeyUser, Node, ServiceError, Settings};

/// The generated messages, clients and servers of package `kstash.v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls
)]
pub mod pb {
    tonic::include_proto!("kstash.v1");
}

/// The encoded file descriptor set of `proto/kstash/v1/` (written by
/// `build.rs`), with its comments: what reflection describes. It holds no
/// other package: the cluster port's proto is never described.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kstash_v1_descriptor.bin"));

/// The gRPC server reflection methods this port serves, after
/// [`KSTASH_METHODS`] in [`METHODS`]. `grpcurl` and similar tools call one
/// or the other.
pub const REFLECTION_METHODS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Whether `path` names a gRPC call on this port (a `kstash.v1` method or
/// reflection): such a call gets the gRPC edges (Content-Type, errors as a
/// gRPC status) and a gRPC method label.
pub fn is_grpc_path(path: &str) -> bool {
    path.starts_with("/kstash.") || path.starts_with("/grpc.reflection.")
}

/// Room for the fields around a value: the gRPC decoding limit is the
/// largest value plus this much.
pub const MESSAGE_OVERHEAD: usize = 64 * 1024;

/// Metadata key for the access token, as in REST's `X-KStash-Token`.
pub const TOKEN_METADATA: &str = "x-kstash-token";

/// The largest message a server decodes. Bigger ones are refused by tonic
/// with `OutOfRange` before decoding; a value over `max_value_bytes` that
/// still fits is refused by the service (`InvalidArgument`, `too_large`).
pub fn decoding_limit(settings: &Settings) -> usize {
    settings.max_value_bytes.saturating_add(MESSAGE_OVERHEAD)
}

/// The path of every gRPC method kstash serves (`/<package>.<Service>/<Method>`):
/// [`KSTASH_METHODS`], then [`REFLECTION_METHODS`]. The only gRPC route
/// label values of the request metrics.
pub const METHODS: &[&str] = &concat_methods();

/// [`KSTASH_METHODS`] followed by [`REFLECTION_METHODS`], at compile time.
const fn concat_methods() -> [&'static str; KSTASH_METHODS.len() + REFLECTION_METHODS.len()] {
    let mut out = [""; KSTASH_METHODS.len() + REFLECTION_METHODS.len()];
    let mut i = 0;
    while i < KSTASH_METHODS.len() {
        out[i] = KSTASH_METHODS[i];
        i += 1;
    }
    let mut j = 0;
    while j < REFLECTION_METHODS.len() {
        out[i + j] = REFLECTION_METHODS[j];
        j += 1;
    }
    out
}

/// Every `kstash.v1` method, in the order of `proto/kstash/v1/kstash.proto`.
/// A test keeps it in step with the proto.
pub const KSTASH_METHODS: &[&str] = &[
    "/kstash.v1.Sys/Status",
    "/kstash.v1.Sys/Init",
    "/kstash.v1.Sys/Unseal",
    "/kstash.v1.Sys/Seal",
    "/kstash.v1.Sys/Rotate",
    "/kstash.v1.Sys/Rekey",
    "/kstash.v1.Sys/RotateAccessKey",
    "/kstash.v1.Sys/MintGatekeeperTokens",
    "/kstash.v1.Sys/ListGatekeeperTokens",
    "/kstash.v1.Sys/RenewGatekeeperToken",
    "/kstash.v1.Sys/RevokeGatekeeperToken",
    "/kstash.v1.Sys/RaftPeers",
    "/kstash.v1.Sys/RaftRemove",
    "/kstash.v1.Sys/SaveSnapshot",
    "/kstash.v1.Sys/Health",
    "/kstash.v1.Sys/AuditHash",
    "/kstash.v1.Auth/Login",
    "/kstash.v1.Auth/RenewToken",
    "/kstash.v1.Auth/RevokeToken",
    "/kstash.v1.Auth/LookupSelf",
    "/kstash.v1.Auth/KubernetesLogin",
    "/kstash.v1.Policies/PutPolicy",
    "/kstash.v1.Policies/GetPolicy",
    "/kstash.v1.Policies/ListPolicies",
    "/kstash.v1.Policies/DeletePolicy",
    "/kstash.v1.KubernetesRoles/Put",
    "/kstash.v1.KubernetesRoles/Get",
    "/kstash.v1.KubernetesRoles/List",
    "/kstash.v1.KubernetesRoles/Delete",
    "/kstash.v1.Keys/Create",
    "/kstash.v1.Keys/Get",
    "/kstash.v1.Keys/List",
    "/kstash.v1.Keys/Rotate",
    "/kstash.v1.Keys/Configure",
    "/kstash.v1.Keys/Encrypt",
    "/kstash.v1.Keys/Decrypt",
    "/kstash.v1.Kv/Put",
    "/kstash.v1.Kv/Get",
    "/kstash.v1.Kv/Delete",
    "/kstash.v1.Kv/List",
];

/// Every gRPC service, and reflection over them, as an axum router without
/// a fallback, so it merges with the REST router (gRPC paths are
/// `/kstash.v1.<Service>/<Method>` and `/grpc.reflection.<v>.ServerReflection/…`).
pub fn router(door: Arc<Door>) -> axum::Router {
    let limit = decoding_limit(door.node().settings());
    // `Routes::default()` installs a fallback, and axum refuses to merge two
    // routers that both have one; start from a bare router instead.
    tonic::service::Routes::from(axum::Router::new())
        .add_service(
            pb::sys_server::SysServer::new(SysService::new(door.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            pb::auth_server::AuthServer::new(AuthService::new(door.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            pb::policies_server::PoliciesServer::new(PoliciesService::new(door.clone()))
                .max_decoding_message_size(limit),
        )
        .add_service(
            pb::kubernetes_roles_server::KubernetesRolesServer::new(KubernetesRolesService::new(
                door.clone(),
            ))
            .max_decoding_message_size(limit),
        )
        .add_service(
            pb::keys_server::KeysServer::new(KeysService::new(door.clone()))
                .max_decoding_message_size(KEYS_DECODING_LIMIT),
        )
        .add_service(
            pb::kv_server::KvServer::new(KvService::new(door)).max_decoding_message_size(limit),
        )
        .add_service(reflection().build_v1().expect(REFLECTION_BUILDS))
        .add_service(reflection().build_v1alpha().expect(REFLECTION_BUILDS))
        .into_axum_router()
}

/// Why building reflection cannot fail: its only input is
/// [`FILE_DESCRIPTOR_SET`], made by `build.rs` from protos that compiled
/// (a unit test builds both versions).
const REFLECTION_BUILDS: &str = "the descriptor set written by build.rs decodes";

/// Server reflection over [`FILE_DESCRIPTOR_SET`]: the `kstash.v1`
/// services and the reflection service itself, nothing else.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
}

// ----- decoding helpers ---------------------------------------------------------

/// The caller's access token from `x-kstash-token`, or else from
/// `authorization: Bearer <token>` (the same precedence as REST). Anything
/// else is no token; the service then answers `Unauthenticated`.
pub fn access_token(metadata: &MetadataMap) -> Option<SecretString> {
    if let Some(v) = metadata.get(TOKEN_METADATA).and_then(|v| v.to_str().ok()) {
        return Some(SecretString::new(v.trim().to_string()));
    }
    let v = metadata.get("authorization")?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(SecretString::new(t.trim().to_string()))
}

fn bad(msg: String) -> ServiceError {
    ServiceError::BadRequest(msg)
}

/// A duration field: whole seconds (`"3600"`) or a duration (`"1h"`),
/// parsed exactly as REST parses it.
fn ttl(field: &str, value: Option<String>) -> Result<Option<Ttl>, ServiceError> {
    value
        .map(|s| {
            serde_json::from_value::<Ttl>(serde_json::Value::String(s))
                .map_err(|e| bad(format!("{field}: {e}")))
        })
        .transpose()
}

/// An optional idempotency key field (empty = none), checked.
fn idempotency_key(field: &str) -> Result<Option<t::IdempotencyKey>, ServiceError> {
    if field.is_empty() {
        return Ok(None);
    }
    t::IdempotencyKey::parse(field).map(Some)
}

/// The `consistency` enum of a read.
fn consistency(value: i32) -> Result<t::Consistency, ServiceError> {
    match pb::Consistency::try_from(value) {
        Ok(pb::Consistency::Linearizable) => Ok(t::Consistency::Linearizable),
        Ok(pb::Consistency::Stale) => Ok(t::Consistency::Stale),
        Err(_) => Err(bad(format!("unknown consistency {value}"))),
    }
}

fn secrets(v: Vec<String>) -> Vec<SecretString> {
    v.into_iter().map(SecretString::new).collect()
}

fn reveal(v: Vec<SecretString>) -> Vec<String> {
    v.iter().map(|s| s.expose().to_string()).collect()
}

fn reveal_opt(v: Option<SecretString>) -> Option<String> {
    v.map(|s| s.expose().to_string())
}

fn status_pb(s: t::Status) -> pb::Status {
    pb::Status {
        initialized: s.initialized,
        sealed: s.sealed,
        threshold: s.threshold,
        shares: s.shares,
        progress: s.progress,
        storage: s.storage,
        version: s.version,
        node_id: s.node_id,
        leader: s.leader,
        leader_id: s.leader_id,
        key_term: s.key_term,
        removed: s.removed,
        peers: s
            .peers
            .into_iter()
            .map(|p| pb::PeerStatus {
                id: p.id,
                address: p.address,
                sealed: p.sealed,
                leader: p.leader,
                reachable: p.reachable,
                last_applied: p.last_applied,
            })
            .collect(),
    }
}

fn gatekeeper_auth(a: pb::GatekeeperAuth) -> t::GatekeeperAuth {
    t::GatekeeperAuth {
        gatekeeper_token: a.gatekeeper_token.map(SecretString::new),
        keys: secrets(a.keys),
    }
}

fn sys_pb(r: t::SysResponse) -> pb::SysResponse {
    pb::SysResponse {
        gatekeeper_token: reveal_opt(r.gatekeeper_token),
        key_term: r.key_term,
        access_key: reveal_opt(r.access_key),
    }
}

/// A policy from its message; capability names are those of REST's JSON.
fn policy(rules: Vec<pb::Rule>) -> Result<Policy, ServiceError> {
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let capabilities = r
                .capabilities
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    Capability::ALL.into_iter().find(|k| k.as_str() == c).ok_or_else(|| {
                        bad(format!(
                            "rules[{i}].capabilities[{j}] is not one of read, create, update, delete, list, encrypt, decrypt"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(acl::Rule { path: r.path, capabilities })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(Policy { rules })
}

fn rules_pb(p: Policy) -> Vec<pb::Rule> {
    p.rules
        .into_iter()
        .map(|r| pb::Rule {
            path: r.path,
            capabilities: r
                .capabilities
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
        })
        .collect()
}

fn login_pb(out: t::LoginResponse) -> pb::LoginResponse {
    pb::LoginResponse {
        token: out.token.expose().to_string(),
        expires_at: out.expires_at,
        namespace: out.namespace,
        policies: out.policies,
        warnings: out.warnings,
    }
}

fn token_info_pb(i: t::TokenInfo) -> pb::TokenInfo {
    pb::TokenInfo {
        accessor: i.accessor,
        namespace: i.namespace,
        policies: i.policies,
        created_at: i.created_at,
        expires_at: i.expires_at,
        ttl: i.ttl,
        max_expires_at: i.max_expires_at,
    }
}

/// `Debug` for messages that carry secrets (built without one, see
/// `build.rs`): the type name only. Also lists them in `REDACTED`, which a
/// test checks against every message of the proto that has a secret field
/// (the compiler already keeps this list and `build.rs`'s in step: a message
/// in only one of them has no `Debug`, or two).
macro_rules! redacted_debug {
    ($($ty:ident),* $(,)?) => {
        $(
            impl fmt::Debug for pb::$ty {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(concat!(stringify!($ty), " { <redacted> }"))
                }
            }
        )*
        /// The `kstash.v1` messages whose `Debug` prints nothing but their name.
        #[cfg(test)]
        const REDACTED: &[&str] = &[$(stringify!($ty)),*];
    };
}

redacted_debug!(
    InitResponse,
    UnsealRequest,
    UnsealResponse,
    GatekeeperAuth,
    SysResponse,
    RekeyRequest,
    RekeyResponse,
    MintGatekeeperTokensRequest,
    MintGatekeeperTokensResponse,
    KeysRequest,
    RenewGatekeeperTokenRequest,
    RevokeGatekeeperTokenRequest,
    LoginRequest,
    LoginResponse,
    RevokeTokenRequest,
    KubernetesLoginRequest,
    PutSecretRequest,
    SecretResponse,
    SnapshotFile,
    AuditHashRequest,
    EncryptRequest,
    DecryptResponse,
);

// ----- the front door -----------------------------------------------------------

/// Every gRPC call's transport.
const GRPC: Transport = Transport::Grpc;

/// The call context of a request (set for every request by the API's
/// layer; a fresh one if it is missing).
fn context<T>(request: &Request<T>) -> CallContext {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .unwrap_or_else(|| CallContext::new(request.remote_addr()))
}

/// A call's outcome as gRPC answers it.
fn answer<T>(result: Result<T, ServiceError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_grpc)
}

/// One `kstash.v1` service's handle on the front door.
#[derive(Debug, Clone)]
struct Front {
    door: Arc<Door>,
}

impl Front {
    fn node(&self) -> &Arc<Node> {
        self.door.node()
    }
}

// ----- Sys ------------------------------------------------------------------------

/// `kstash.v1.Sys`: operator operations.
#[derive(Debug, Clone)]
pub struct SysService(Front);

impl SysService {
    /// The service behind `door`.
    pub fn new(door: Arc<Door>) -> Self {
        SysService(Front { door })
    }
}

#[tonic::async_trait]
impl pb::sys_server::Sys for SysService {
    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Sys/Status"))]
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        let ctx = context(&request);
        let call = Call::new(Operation::Status, GRPC, &ctx);
        let node = self.0.node();
        answer(
            self.0
                .door
                .run(call, async { Ok(status_pb(node.cluster_status().await?)) })
                .await,
        )
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Sys/Init"))]
    async fn init(
        &self,
        request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let req = t::InitRequest {
            shares: r.shares,
            threshold: r.threshold,
            gatekeeper_tokens: r.gatekeeper_tokens.unwrap_or(1),
        };
        let call = Call::new(Operation::Init, GRPC, &ctx);
        let node = self.0.node();
        answer(
            self.0
                .door
                .run(call, async {
                    let out = node.init(req).await?;
                    Ok(pb::InitResponse {
                        unseal_keys: reveal(out.unseal_keys),
                        access_key: out.access_key.expose().to_string(),
                        gatekeeper_tokens: reveal(out.gatekeeper_tokens),
                    })
                })
                .await,
        )
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Sys/Unseal"))]
    async fn unseal(
        &self,
        request: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::UnsealResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let req = t::UnsealRequest {
            key: r.key.map(SecretString::new),
            gatekeeper_token: r.gatekeeper_token.map(SecretString::new),
            reset: r.reset,
        };
        let presented: Vec<Presented<'_>> = req
            .gatekeeper_token
            .iter()
            .map(Presented::GatekeeperToken)
            .chain(req.key.iter().map(Presented::UnsealKey))
            .collect();
        let call = Call::new(Operation::Unseal, GRPC, &ctx).presenting(presented);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let out = self.0.node().unseal(req).await?;
            Ok(pb::UnsealResponse {
                status: Some(status_pb(out.status)),
                gatekeeper_token: reveal_opt(out.gatekeeper_token),
            })
        }
        .await;
        answer(admitted.finish(result))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Sys/Seal"))]
    async fn seal(
        &self,
        request: Request<pb::GatekeeperAuth>,
    ) -> Result<Response<pb::SysResponse>, Status> {
        self.0
            .gatekeeper_call(Operation::Seal, request, |node, auth| async move {
                node.seal(auth).await
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Sys/Rotate"))]
    async fn rotate(
        &self,
        request: Request<pb::GatekeeperAuth>,
    ) -> Result<Response<pb::SysResponse>, Status> {
        self.0
            .gatekeeper_call(Operation::Rotate, request, |node, auth| async move {
                node.rotate(auth).await
            })
            .await
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/RaftPeers")
    )]
    async fn raft_peers(
        &self,
        request: Request<pb::RaftPeersRequest>,
    ) -> Result<Response<pb::RaftPeersResponse>, Status> {
        let ctx = context(&request);
        let call = Call::new(Operation::RaftPeers, GRPC, &ctx);
        let node = self.0.node();
        answer(
            self.0
                .door
                .run(call, async {
                    let out = node.raft_peers();
                    Ok(pb::RaftPeersResponse {
                        node_id: out.node_id,
                        peers: out
                            .peers
                            .into_iter()
                            .map(|p| pb::RaftPeer {
                                id: p.id,
                                api_addr: p.api_addr,
                                cluster_addr: p.cluster_addr,
                                role: p.role,
                                leader: p.leader,
                                matched_index: p.matched_index,
                            })
                            .collect(),
                    })
                })
                .await,
        )
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/RaftRemove")
    )]
    async fn raft_remove(
        &self,
        request: Request<pb::RaftRemoveRequest>,
    ) -> Result<Response<pb::SysResponse>, Status> {
        let ctx = context(&request);
        let req = request.into_inner();
        let auth = gatekeeper_auth(req.auth.unwrap_or_default());
        let call = Call::new(Operation::RaftRemove, GRPC, &ctx)
            .presenting(Presented::gatekeeper_auth(&auth));
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().raft_remove(req.node_id, auth).await;
        answer(admitted.finish(result.map(sys_pb)))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/SaveSnapshot")
    )]
    async fn save_snapshot(
        &self,
        request: Request<pb::GatekeeperAuth>,
    ) -> Result<Response<pb::SnapshotFile>, Status> {
        let ctx = context(&request);
        let auth = gatekeeper_auth(request.into_inner());
        let call = Call::new(Operation::SaveSnapshot, GRPC, &ctx)
            .presenting(Presented::gatekeeper_auth(&auth));
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().save_snapshot(auth).await;
        answer(admitted.finish(result.map(|out| pb::SnapshotFile {
            data: out.bytes,
            gatekeeper_token: reveal_opt(out.gatekeeper_token),
        })))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Sys/Rekey"))]
    async fn rekey(
        &self,
        request: Request<pb::RekeyRequest>,
    ) -> Result<Response<pb::RekeyResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let req = t::RekeyRequest {
            keys: secrets(r.keys),
            shares: r.shares,
            threshold: r.threshold,
            gatekeeper_tokens: r.gatekeeper_tokens.unwrap_or(1),
        };
        let call =
            Call::new(Operation::Rekey, GRPC, &ctx).presenting(Presented::unseal_keys(&req.keys));
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().rekey(req).await;
        answer(admitted.finish(result.map(|out| pb::RekeyResponse {
            unseal_keys: reveal(out.unseal_keys),
            gatekeeper_tokens: reveal(out.gatekeeper_tokens),
        })))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/RotateAccessKey")
    )]
    async fn rotate_access_key(
        &self,
        request: Request<pb::GatekeeperAuth>,
    ) -> Result<Response<pb::SysResponse>, Status> {
        self.0
            .gatekeeper_call(
                Operation::RotateAccessKey,
                request,
                |node, auth| async move { node.rotate_access_key(auth).await },
            )
            .await
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/MintGatekeeperTokens")
    )]
    async fn mint_gatekeeper_tokens(
        &self,
        request: Request<pb::MintGatekeeperTokensRequest>,
    ) -> Result<Response<pb::MintGatekeeperTokensResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let req = t::MintGatekeeperTokensRequest {
            keys: secrets(r.keys),
            count: r.count.unwrap_or(1),
        };
        let call = Call::new(Operation::MintGatekeeperTokens, GRPC, &ctx)
            .presenting(Presented::unseal_keys(&req.keys));
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().mint_gatekeeper_tokens(req).await;
        answer(
            admitted.finish(result.map(|out| pb::MintGatekeeperTokensResponse {
                gatekeeper_tokens: reveal(out.gatekeeper_tokens),
                ids: out.ids,
            })),
        )
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/ListGatekeeperTokens")
    )]
    async fn list_gatekeeper_tokens(
        &self,
        request: Request<pb::KeysRequest>,
    ) -> Result<Response<pb::GatekeeperTokenList>, Status> {
        let ctx = context(&request);
        let req = t::KeysRequest {
            keys: secrets(request.into_inner().keys),
        };
        let call = Call::new(Operation::ListGatekeeperTokens, GRPC, &ctx)
            .presenting(Presented::unseal_keys(&req.keys));
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().list_gatekeeper_tokens(req).await;
        answer(admitted.finish(result.map(|out| {
            pb::GatekeeperTokenList {
                tokens: out
                    .into_iter()
                    .map(|i| pb::GatekeeperTokenInfo {
                        id: i.id,
                        created_at: i.created_at,
                        used_at: i.used_at,
                        grace_until: i.grace_until,
                    })
                    .collect(),
            }
        })))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/RenewGatekeeperToken")
    )]
    async fn renew_gatekeeper_token(
        &self,
        request: Request<pb::RenewGatekeeperTokenRequest>,
    ) -> Result<Response<pb::SysResponse>, Status> {
        let ctx = context(&request);
        let token = SecretString::new(request.into_inner().gatekeeper_token);
        let call = Call::new(Operation::RenewGatekeeperToken, GRPC, &ctx)
            .presenting([Presented::GatekeeperToken(&token)]);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().renew_gatekeeper_token(token).await;
        answer(admitted.finish(result.map(sys_pb)))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/RevokeGatekeeperToken")
    )]
    async fn revoke_gatekeeper_token(
        &self,
        request: Request<pb::RevokeGatekeeperTokenRequest>,
    ) -> Result<Response<pb::RevokeGatekeeperTokenResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let req = t::RevokeGatekeeperTokenRequest {
            gatekeeper_token: r.gatekeeper_token.map(SecretString::new),
            id: r.id,
            keys: secrets(r.keys),
        };
        let presented: Vec<Presented<'_>> = req
            .gatekeeper_token
            .iter()
            .map(Presented::GatekeeperToken)
            .chain(Presented::unseal_keys(&req.keys))
            .collect();
        let call = Call::new(Operation::RevokeGatekeeperToken, GRPC, &ctx).presenting(presented);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().revoke_gatekeeper_token(req).await;
        answer(admitted.finish(result.map(|()| pb::RevokeGatekeeperTokenResponse {})))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Sys/Health"))]
    async fn health(
        &self,
        request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        let ctx = context(&request);
        let call = Call::new(Operation::Health, GRPC, &ctx);
        let node = self.0.node();
        answer(
            self.0
                .door
                .run(call, async { Ok(status_pb(node.status()?)) })
                .await,
        )
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Sys/AuditHash")
    )]
    async fn audit_hash(
        &self,
        request: Request<pb::AuditHashRequest>,
    ) -> Result<Response<pb::AuditHashResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let input = SecretString::new(request.into_inner().input);
        let call = Call::new(Operation::AuditHash, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = admitted
            .holder()
            .and_then(|h| self.0.node().audit_hash(h, &input));
        answer(admitted.finish(result.map(|tag| pb::AuditHashResponse {
            hash: audit::hmac_text(tag),
        })))
    }
}

impl Front {
    /// A call authorised by a gatekeeper token or unseal keys
    /// ([`pb::GatekeeperAuth`]) whose answer is a [`pb::SysResponse`].
    async fn gatekeeper_call<F, Fut>(
        &self,
        operation: Operation,
        request: Request<pb::GatekeeperAuth>,
        op: F,
    ) -> Result<Response<pb::SysResponse>, Status>
    where
        F: FnOnce(Arc<Node>, t::GatekeeperAuth) -> Fut,
        Fut: std::future::Future<Output = Result<t::SysResponse, ServiceError>>,
    {
        let ctx = context(&request);
        let auth = gatekeeper_auth(request.into_inner());
        let call = Call::new(operation, GRPC, &ctx).presenting(Presented::gatekeeper_auth(&auth));
        let admitted = self.door.admit(call).await.map_err(to_grpc)?;
        let result = op(self.node().clone(), auth).await;
        answer(admitted.finish(result.map(sys_pb)))
    }
}

// ----- Auth -----------------------------------------------------------------------

/// `kstash.v1.Auth`: access tokens.
#[derive(Debug, Clone)]
pub struct AuthService(Front);

impl AuthService {
    /// The service behind `door`.
    pub fn new(door: Arc<Door>) -> Self {
        AuthService(Front { door })
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Auth/Login"))]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let access_key = SecretString::new(r.access_key);
        let namespace = r.namespace;
        let call = Call::new(Operation::Login, GRPC, &ctx)
            .presenting([Presented::AccessKey(&access_key)])
            .namespace(&namespace);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let req = t::LoginRequest {
                access_key,
                namespace,
                policies: r.policies,
                ttl: ttl("ttl", r.ttl)?,
            };
            Ok(login_pb(self.0.node().login(req).await?))
        }
        .await;
        answer(admitted.finish(result))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Auth/KubernetesLogin")
    )]
    async fn kubernetes_login(
        &self,
        request: Request<pb::KubernetesLoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = context(&request);
        let r = request.into_inner();
        let req = t::KubernetesLoginRequest {
            namespace: r.namespace,
            role: r.role,
            jwt: SecretString::new(r.jwt),
        };
        let call = Call::new(Operation::KubernetesLogin, GRPC, &ctx)
            .presenting([Presented::ServiceAccountToken(&req.jwt)])
            .namespace(&req.namespace);
        let mut admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self.0.node().login_kubernetes(req).await.map(|login| {
            admitted.identify(login.subject);
            login_pb(login.response)
        });
        answer(admitted.finish(result))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Auth/RenewToken")
    )]
    async fn renew_token(
        &self,
        request: Request<pb::RenewTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let increment = request.into_inner().increment;
        let call = Call::new(Operation::RenewToken, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let req = t::RenewRequest {
                increment: ttl("increment", increment)?,
            };
            let out = self.0.node().renew_token(admitted.holder()?, req).await?;
            Ok(token_info_pb(out))
        }
        .await;
        answer(admitted.finish(result))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Auth/RevokeToken")
    )]
    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let req = t::RevokeRequest {
            token: request.into_inner().token.map(SecretString::new),
        };
        let call = Call::new(Operation::RevokeToken, GRPC, &ctx);
        // A token in the body proves itself; without one, the bearer's own
        // token is revoked and must be live.
        let call = match &req.token {
            Some(other) => call.presenting([Presented::AccessToken(other)]),
            None => call.bearer(token.as_ref(), t::Consistency::Stale),
        };
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = self
            .0
            .node()
            .revoke_token(admitted.principal().token_holder(), req)
            .await;
        answer(admitted.finish(result.map(|()| pb::RevokeTokenResponse {})))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Auth/LookupSelf")
    )]
    async fn lookup_self(
        &self,
        request: Request<pb::LookupSelfRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let call = Call::new(Operation::LookupToken, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Linearizable);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = admitted
            .holder()
            .and_then(|h| self.0.node().lookup_token(h))
            .map(token_info_pb);
        answer(admitted.finish(result))
    }
}

// ----- Policies ---------------------------------------------------------------------

/// `kstash.v1.Policies`: a namespace's policies.
#[derive(Debug, Clone)]
pub struct PoliciesService(Front);

impl PoliciesService {
    /// The service behind `door`.
    pub fn new(door: Arc<Door>) -> Self {
        PoliciesService(Front { door })
    }
}

#[tonic::async_trait]
impl pb::policies_server::Policies for PoliciesService {
    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Policies/PutPolicy")
    )]
    async fn put_policy(
        &self,
        request: Request<pb::PutPolicyRequest>,
    ) -> Result<Response<pb::PutPolicyResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = format!("policies/{}", r.name);
        let call = Call::new(Operation::PutPolicy, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale)
            .namespace(&r.namespace)
            .path(&target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let p = policy(r.rules)?;
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .put_policy(admitted.holder()?, &r.namespace, &r.name, p, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(|()| pb::PutPolicyResponse {})))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Policies/GetPolicy")
    )]
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = format!("policies/{}", r.name);
        let call = Call::new(Operation::GetPolicy, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Linearizable)
            .namespace(&r.namespace)
            .path(&target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .get_policy(admitted.holder()?, &r.namespace, &r.name)
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::PolicyResponse {
            name: out.name,
            builtin: out.builtin,
            rules: rules_pb(out.policy),
        })))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Policies/ListPolicies")
    )]
    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::PolicyList>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let call = Call::new(Operation::ListPolicies, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Linearizable)
            .namespace(&r.namespace);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .list_policies(admitted.holder()?, &r.namespace, &page(r.cursor, r.limit))
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::PolicyList {
            policies: out.policies,
            truncated: out.truncated,
            cursor: out.cursor.unwrap_or_default(),
        })))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Policies/DeletePolicy")
    )]
    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = format!("policies/{}", r.name);
        let call = Call::new(Operation::DeletePolicy, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale)
            .namespace(&r.namespace)
            .path(&target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .delete_policy(admitted.holder()?, &r.namespace, &r.name, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(|()| pb::DeletePolicyResponse {})))
    }
}

// ----- KubernetesRoles ---------------------------------------------------------------

/// `kstash.v1.KubernetesRoles`: a namespace's Kubernetes login roles.
#[derive(Debug, Clone)]
pub struct KubernetesRolesService(Front);

impl KubernetesRolesService {
    /// The service behind `door`.
    pub fn new(door: Arc<Door>) -> Self {
        KubernetesRolesService(Front { door })
    }
}

/// The path a role call names in its audit record, as REST names it.
fn role_target(name: &str) -> String {
    format!("auth/kubernetes/roles/{name}")
}

/// A role's body from its put request (the ttl parsed as REST parses it).
fn role_body(r: &mut pb::PutKubernetesRoleRequest) -> Result<t::KubernetesRoleBody, ServiceError> {
    Ok(t::KubernetesRoleBody {
        service_accounts: std::mem::take(&mut r.service_accounts),
        policies: std::mem::take(&mut r.policies),
        ttl: ttl("ttl", r.ttl.take())?,
        audience: r.audience.take(),
    })
}

#[tonic::async_trait]
impl pb::kubernetes_roles_server::KubernetesRoles for KubernetesRolesService {
    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "KubernetesRoles/Put")
    )]
    async fn put(
        &self,
        request: Request<pb::PutKubernetesRoleRequest>,
    ) -> Result<Response<pb::PutKubernetesRoleResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let mut r = request.into_inner();
        let target = role_target(&r.name);
        let call = Call::new(Operation::PutKubernetesRole, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale)
            .namespace(&r.namespace)
            .path(&target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let role = role_body(&mut r)?;
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .put_kubernetes_role(
                    admitted.holder()?,
                    &r.namespace,
                    &r.name,
                    role,
                    key.as_ref(),
                )
                .await
        }
        .await;
        answer(admitted.finish(result.map(|()| pb::PutKubernetesRoleResponse {})))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "KubernetesRoles/Get")
    )]
    async fn get(
        &self,
        request: Request<pb::GetKubernetesRoleRequest>,
    ) -> Result<Response<pb::KubernetesRole>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = role_target(&r.name);
        let call = Call::new(Operation::GetKubernetesRole, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Linearizable)
            .namespace(&r.namespace)
            .path(&target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .get_kubernetes_role(admitted.holder()?, &r.namespace, &r.name)
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::KubernetesRole {
            name: out.name,
            service_accounts: out.service_accounts,
            policies: out.policies,
            ttl: out.ttl,
            audience: out.audience,
        })))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "KubernetesRoles/List")
    )]
    async fn list(
        &self,
        request: Request<pb::ListKubernetesRolesRequest>,
    ) -> Result<Response<pb::KubernetesRoleList>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let call = Call::new(Operation::ListKubernetesRoles, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Linearizable)
            .namespace(&r.namespace);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .list_kubernetes_roles(admitted.holder()?, &r.namespace, &page(r.cursor, r.limit))
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::KubernetesRoleList {
            roles: out.roles,
            truncated: out.truncated,
            cursor: out.cursor.unwrap_or_default(),
        })))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "KubernetesRoles/Delete")
    )]
    async fn delete(
        &self,
        request: Request<pb::DeleteKubernetesRoleRequest>,
    ) -> Result<Response<pb::DeleteKubernetesRoleResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = role_target(&r.name);
        let call = Call::new(Operation::DeleteKubernetesRole, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale)
            .namespace(&r.namespace)
            .path(&target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .delete_kubernetes_role(admitted.holder()?, &r.namespace, &r.name, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(|()| pb::DeleteKubernetesRoleResponse {})))
    }
}

// ----- Keys ----------------------------------------------------------------------------

/// `kstash.v1.Keys`: named encryption keys of the caller's namespace.
#[derive(Debug, Clone)]
pub struct KeysService(Front);

impl KeysService {
    /// The service behind `door`.
    pub fn new(door: Arc<Door>) -> Self {
        KeysService(Front { door })
    }
}

/// The largest message the `Keys` service decodes: a ciphertext of the
/// largest plaintext, with room around it. Fixed, like REST's key body
/// limit: a key's bounds do not follow `max_value_bytes`.
pub const KEYS_DECODING_LIMIT: usize = keys::MAX_CIPHERTEXT_BYTES + MESSAGE_OVERHEAD;

/// A key's metadata as its message.
fn named_key_pb(k: t::NamedKeyInfo) -> pb::NamedKey {
    pb::NamedKey {
        namespace: k.namespace,
        name: k.name,
        latest_version: k.latest_version,
        min_decryption_version: k.min_decryption_version,
        key_id: k.key_id,
        created_at: k.created_at,
        exhausted: k.exhausted,
        versions: k
            .versions
            .into_iter()
            .map(|v| pb::NamedKeyVersion {
                version: v.version,
                created_at: v.created_at,
                key_id: v.key_id,
            })
            .collect(),
    }
}

impl Front {
    /// The call of a `Keys` method at the front door, as REST makes it
    /// (`rest::key_call`): an access token checked against a linearizable
    /// state, the key's path `keys/<name>` in the record, the token's
    /// namespace. No plaintext is handed to the door.
    fn key_call<'a>(
        operation: Operation,
        ctx: &'a CallContext,
        token: Option<&'a SecretString>,
        target: &'a str,
    ) -> Call<'a> {
        Call::new(operation, GRPC, ctx)
            .bearer(token, t::Consistency::Linearizable)
            .path(target)
    }
}

#[tonic::async_trait]
impl pb::keys_server::Keys for KeysService {
    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Keys/Create"))]
    async fn create(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::NamedKey>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = keys::acl_path(&r.name);
        let call = Front::key_call(Operation::CreateKey, &ctx, token.as_ref(), &target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .create_key(admitted.holder()?, &r.name, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(named_key_pb)))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Keys/Get"))]
    async fn get(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::NamedKey>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = keys::acl_path(&r.name);
        let call = Front::key_call(Operation::GetKey, &ctx, token.as_ref(), &target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .get_key(KeyUser::Token(admitted.holder()?), &r.name)
                .await
        }
        .await;
        answer(admitted.finish(result.map(named_key_pb)))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Keys/List"))]
    async fn list(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::NamedKeyList>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let call = Call::new(Operation::ListKeys, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Linearizable);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .list_keys(admitted.holder()?, &page(r.cursor, r.limit))
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::NamedKeyList {
            keys: out.keys,
            truncated: out.truncated,
            cursor: out.cursor.unwrap_or_default(),
        })))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Keys/Rotate"))]
    async fn rotate(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::NamedKey>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = keys::acl_path(&r.name);
        let call = Front::key_call(Operation::RotateKey, &ctx, token.as_ref(), &target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .rotate_key(admitted.holder()?, &r.name, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(named_key_pb)))
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        name = "grpc",
        fields(rpc = "Keys/Configure")
    )]
    async fn configure(
        &self,
        request: Request<pb::ConfigureKeyRequest>,
    ) -> Result<Response<pb::NamedKey>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = keys::acl_path(&r.name);
        let call = Front::key_call(Operation::ConfigureKey, &ctx, token.as_ref(), &target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let key = idempotency_key(&r.idempotency_key)?;
            let config = t::NamedKeyConfig {
                min_decryption_version: r.min_decryption_version,
            };
            self.0
                .node()
                .configure_key(admitted.holder()?, &r.name, config, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(named_key_pb)))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Keys/Encrypt"))]
    async fn encrypt(
        &self,
        request: Request<pb::EncryptRequest>,
    ) -> Result<Response<pb::EncryptResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let mut r = request.into_inner();
        let plaintext = Zeroizing::new(std::mem::take(&mut r.plaintext));
        let target = keys::acl_path(&r.name);
        let call = Front::key_call(Operation::Encrypt, &ctx, token.as_ref(), &target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .encrypt_with_key(KeyUser::Token(admitted.holder()?), &r.name, &plaintext)
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::EncryptResponse {
            ciphertext: out.ciphertext,
            key_version: out.key_version,
            key_id: out.key_id,
        })))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Keys/Decrypt"))]
    async fn decrypt(
        &self,
        request: Request<pb::DecryptRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let target = keys::acl_path(&r.name);
        let call = Front::key_call(Operation::Decrypt, &ctx, token.as_ref(), &target);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            self.0
                .node()
                .decrypt_with_key(KeyUser::Token(admitted.holder()?), &r.name, &r.ciphertext)
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::DecryptResponse {
            plaintext: out.plaintext.to_vec(),
            key_version: out.key_version,
            key_id: out.key_id,
        })))
    }
}

// ----- Kv ----------------------------------------------------------------------------

/// `kstash.v1.Kv`: secrets in the caller's namespace.
#[derive(Debug, Clone)]
pub struct KvService(Front);

impl KvService {
    /// The service behind `door`.
    pub fn new(door: Arc<Door>) -> Self {
        KvService(Front { door })
    }
}

/// A value's bytes as the service takes them: UTF-8 as `value`, anything
/// else base64-encoded as `value_base64`. Every copy is wiped on drop.
fn put_value(bytes: Vec<u8>) -> (Option<SecretString>, Option<SecretString>) {
    match String::from_utf8(bytes) {
        Ok(text) => (Some(SecretString::new(text)), None),
        Err(e) => {
            let raw = Zeroizing::new(e.into_bytes());
            (
                None,
                Some(SecretString::new(
                    base64::engine::general_purpose::STANDARD.encode(raw.as_slice()),
                )),
            )
        }
    }
}

/// The bytes of a value the service returned.
fn get_value(r: &t::SecretResponse) -> Result<Vec<u8>, ServiceError> {
    match (&r.value, &r.value_base64) {
        (Some(v), _) => Ok(v.expose().as_bytes().to_vec()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.expose())
            .map_err(|_| {
                tracing::error!("the service returned a value_base64 that is not base64");
                ServiceError::Internal
            }),
        (None, None) => Ok(Vec::new()),
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Kv/Put"))]
    async fn put(
        &self,
        request: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let raw = Zeroizing::new(r.value);
        let call = Call::new(Operation::PutSecret, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale)
            .path(&r.path)
            .value(&raw);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let (value, value_base64) = put_value(raw.to_vec());
            let req = t::PutSecretRequest {
                value,
                value_base64,
                cas: r.cas,
            };
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .put_secret(admitted.holder()?, &r.path, req, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::PutSecretResponse {
            version: out.version,
        })))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Kv/Get"))]
    async fn get(
        &self,
        request: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::SecretResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let level = consistency(r.consistency);
        let call = Call::new(Operation::GetSecret, GRPC, &ctx)
            .bearer(
                token.as_ref(),
                *level.as_ref().unwrap_or(&t::Consistency::Linearizable),
            )
            .path(&r.path);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            level?;
            let out = self
                .0
                .node()
                .get_secret(admitted.holder()?, &r.path)
                .await?;
            Ok(pb::SecretResponse {
                value: get_value(&out)?,
                version: out.version,
                created_at: out.created_at,
                updated_at: out.updated_at,
            })
        }
        .await;
        answer(admitted.finish(result))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Kv/Delete"))]
    async fn delete(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let call = Call::new(Operation::DeleteSecret, GRPC, &ctx)
            .bearer(token.as_ref(), t::Consistency::Stale)
            .path(&r.path);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            let key = idempotency_key(&r.idempotency_key)?;
            self.0
                .node()
                .delete_secret(admitted.holder()?, &r.path, key.as_ref())
                .await
        }
        .await;
        answer(admitted.finish(result.map(|()| pb::DeleteSecretResponse {})))
    }

    #[tracing::instrument(level = "debug", skip_all, name = "grpc", fields(rpc = "Kv/List"))]
    async fn list(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::KeyList>, Status> {
        let ctx = context(&request);
        let token = access_token(request.metadata());
        let r = request.into_inner();
        let level = consistency(r.consistency);
        let call = Call::new(Operation::ListSecrets, GRPC, &ctx)
            .bearer(
                token.as_ref(),
                *level.as_ref().unwrap_or(&t::Consistency::Linearizable),
            )
            .path(&r.prefix);
        let admitted = self.0.door.admit(call).await.map_err(to_grpc)?;
        let result = async {
            level?;
            self.0
                .node()
                .list_secrets(admitted.holder()?, &r.prefix, &page(r.cursor, r.limit))
                .await
        }
        .await;
        answer(admitted.finish(result.map(|out| pb::KeyList {
            keys: out.keys,
            truncated: out.truncated,
            cursor: out.cursor.unwrap_or_default(),
        })))
    }
}

/// The paging fields of a list request (proto3: empty cursor and 0 limit
/// mean unset).
fn page(cursor: String, limit: u32) -> ListPage {
    ListPage {
        cursor: (!cursor.is_empty()).then_some(cursor),
        limit: (limit != 0).then_some(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn token_from_metadata() {
        let t = |m: &MetadataMap| access_token(m).map(|s| s.expose().to_string());
        assert_eq!(
            t(&md(&[("authorization", "Bearer kst_abc")])).as_deref(),
            Some("kst_abc")
        );
        assert_eq!(
            t(&md(&[("x-kstash-token", "kst_xyz")])).as_deref(),
            Some("kst_xyz")
        );
        assert_eq!(
            t(&md(&[
                ("authorization", "Bearer kst_abc"),
                ("x-kstash-token", "kst_xyz")
            ]))
            .as_deref(),
            Some("kst_xyz")
        );
        assert_eq!(t(&md(&[("authorization", "Basic abc")])), None);
        assert_eq!(t(&md(&[])), None);
    }

    #[test]
    fn values_round_trip() {
        for bytes in [b"hello".to_vec(), vec![0xff, 0x00, 0xfe], Vec::new()] {
            let (value, value_base64) = put_value(bytes.clone());
            assert_eq!(value.is_some(), std::str::from_utf8(&bytes).is_ok());
            let r = t::SecretResponse {
                value,
                value_base64,
                version: 1,
                created_at: String::new(),
                updated_at: String::new(),
            };
            assert_eq!(get_value(&r).unwrap(), bytes);
        }
    }

    #[test]
    fn durations_and_capabilities() {
        assert_eq!(
            ttl("ttl", Some("1h".into())).unwrap(),
            Some(Ttl(std::time::Duration::from_secs(3600)))
        );
        assert_eq!(
            ttl("ttl", Some("90".into())).unwrap(),
            Some(Ttl(std::time::Duration::from_secs(90)))
        );
        assert_eq!(
            to_grpc(ttl("ttl", Some("soon".into())).unwrap_err()).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(ttl("ttl", None).unwrap(), None);
        let p = policy(vec![pb::Rule {
            path: "app/*".into(),
            capabilities: vec!["read".into(), "list".into()],
        }])
        .unwrap();
        assert_eq!(
            p.rules[0].capabilities,
            vec![Capability::Read, Capability::List]
        );
        assert_eq!(rules_pb(p)[0].capabilities, vec!["read", "list"]);
        let e = policy(vec![pb::Rule {
            path: "x".into(),
            capabilities: vec!["sudo".into()],
        }])
        .unwrap_err();
        assert_eq!(to_grpc(e).code(), tonic::Code::InvalidArgument);
    }

    /// `/<package>.<Service>/<Method>` of every `rpc` in the client proto.
    fn proto_methods() -> Vec<String> {
        let proto = include_str!("../../proto/kstash/v1/kstash.proto");
        let mut package = "";
        let mut service = "";
        let mut out = Vec::new();
        for line in proto.lines().map(str::trim) {
            let word = |prefix: &str| {
                line.strip_prefix(prefix).map(|rest| {
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                        .next()
                        .unwrap_or("")
                })
            };
            if let Some(p) = word("package ") {
                package = p;
            } else if let Some(s) = word("service ") {
                service = s;
            } else if let Some(m) = word("rpc ") {
                out.push(format!("/{package}.{service}/{m}"));
            }
        }
        out
    }

    #[test]
    fn method_labels_list_every_rpc_served() {
        use tonic::server::NamedService;
        let served = [
            <pb::sys_server::SysServer<SysService> as NamedService>::NAME,
            <pb::auth_server::AuthServer<AuthService> as NamedService>::NAME,
            <pb::policies_server::PoliciesServer<PoliciesService> as NamedService>::NAME,
            <pb::kubernetes_roles_server::KubernetesRolesServer<KubernetesRolesService> as NamedService>::NAME,
            <pb::keys_server::KeysServer<KeysService> as NamedService>::NAME,
            <pb::kv_server::KvServer<KvService> as NamedService>::NAME,
        ];
        let from_proto = proto_methods();
        assert!(
            from_proto.len() > 20,
            "the scan found the rpcs: {from_proto:?}"
        );
        for m in &from_proto {
            assert!(
                served.iter().any(|s| m.starts_with(&format!("/{s}/"))),
                "{m} belongs to a service router() does not serve"
            );
        }
        let listed: Vec<String> = KSTASH_METHODS.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            listed, from_proto,
            "KSTASH_METHODS must list the proto's rpcs in order"
        );
        assert_eq!(METHODS, [KSTASH_METHODS, REFLECTION_METHODS].concat());
        assert!(METHODS.iter().all(|m| is_grpc_path(m)));
        assert!(!is_grpc_path("/v1/sys/status") && !is_grpc_path("/kstashx"));
    }

    /// The services a built server answers for (`NamedService::NAME`).
    fn service_name<S: tonic::server::NamedService>(_: &S) -> &'static str {
        S::NAME
    }

    #[test]
    fn reflection_builds_and_its_methods_are_listed() {
        let v1 = reflection().build_v1().expect(REFLECTION_BUILDS);
        let v1alpha = reflection().build_v1alpha().expect(REFLECTION_BUILDS);
        let served: Vec<String> = [service_name(&v1), service_name(&v1alpha)]
            .iter()
            .map(|s| format!("/{s}/ServerReflectionInfo"))
            .collect();
        assert_eq!(served, REFLECTION_METHODS);
    }

    #[test]
    fn the_reflected_descriptor_set_is_the_public_proto_only() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let files: Vec<(&str, &str)> = set.file.iter().map(|f| (f.name(), f.package())).collect();
        assert_eq!(files, [("kstash/v1/kstash.proto", "kstash.v1")]);
        let services: Vec<&str> = set.file[0].service.iter().map(|s| s.name()).collect();
        assert_eq!(
            services,
            ["Sys", "Auth", "Policies", "KubernetesRoles", "Keys", "Kv"]
        );
    }

    /// Field names that carry a secret in `kstash.v1` when they are strings
    /// or bytes: unseal keys, gatekeeper tokens, the access key, access
    /// tokens, ServiceAccount tokens (`jwt`), secret values, payloads of
    /// named keys (`plaintext`).
    const SECRET_FIELDS: &[&str] = &[
        "jwt",
        "key",
        "keys",
        "unseal_keys",
        "gatekeeper_token",
        "gatekeeper_tokens",
        "access_key",
        "token",
        "value",
        "input",
        "plaintext",
    ];

    /// (message, field) pairs named like a secret that hold none, and why.
    const NOT_SECRET: &[(&str, &str, &str)] = &[
        (
            "KeyList",
            "keys",
            "the names of secrets under a prefix, not unseal keys",
        ),
        (
            "NamedKeyList",
            "keys",
            "the names of named keys, never their material",
        ),
    ];

    #[test]
    fn every_message_with_a_secret_field_is_redacted() {
        use prost::Message;
        use prost_types::field_descriptor_proto::Type;
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut secret_bearing = Vec::new();
        for message in set.file.iter().flat_map(|f| &f.message_type) {
            let secret = message.field.iter().any(|f| {
                matches!(f.r#type(), Type::String | Type::Bytes)
                    && SECRET_FIELDS.contains(&f.name())
                    && !NOT_SECRET
                        .iter()
                        .any(|(m, n, _)| *m == message.name() && *n == f.name())
            });
            if secret {
                secret_bearing.push(message.name());
            }
        }
        secret_bearing.sort_unstable();
        let mut redacted = REDACTED.to_vec();
        redacted.sort_unstable();
        assert_eq!(
            secret_bearing, redacted,
            "a message with a secret field must be in build.rs SECRET_BEARING and in \
             redacted_debug! (and only those)"
        );
        // The exceptions still name real fields of real messages.
        for (m, n, _) in NOT_SECRET {
            let message = set
                .file
                .iter()
                .flat_map(|f| &f.message_type)
                .find(|x| x.name() == *m)
                .unwrap_or_else(|| panic!("NOT_SECRET names {m}, which the proto lacks"));
            assert!(message.field.iter().any(|f| f.name() == *n), "{m}.{n}");
        }
    }

    #[test]
    fn secret_messages_are_redacted() {
        let m = pb::LoginRequest {
            access_key: "ksa_secret".into(),
            namespace: "ns".into(),
            policies: vec![],
            ttl: None,
        };
        assert_eq!(format!("{m:?}"), "LoginRequest { <redacted> }");
        let m = pb::KubernetesLoginRequest {
            namespace: "ns".into(),
            role: "web".into(),
            jwt: "eyJhbGciOiJSUzI1NiJ9.e30.c2ln".into(),
        };
        assert_eq!(format!("{m:?}"), "KubernetesLoginRequest { <redacted> }");
        let m = pb::EncryptRequest {
            name: "kek".into(),
            plaintext: b"dek seed 0123456789abcdef".to_vec(),
        };
        assert_eq!(format!("{m:?}"), "EncryptRequest { <redacted> }");
        let m = pb::DecryptResponse {
            plaintext: b"dek seed 0123456789abcdef".to_vec(),
            key_version: 1,
            key_id: "kstash:a/kek:00:v1".into(),
        };
        assert_eq!(format!("{m:?}"), "DecryptResponse { <redacted> }");
    }

    #[test]
    fn role_bodies_take_their_fields_and_parse_the_ttl_as_rest_does() {
        let mut r = pb::PutKubernetesRoleRequest {
            namespace: "team-a".into(),
            name: "web".into(),
            service_accounts: vec!["shop/web".into(), "batch/*".into()],
            policies: vec!["app-ro".into()],
            ttl: Some("10m".into()),
            audience: Some("vault".into()),
            idempotency_key: String::new(),
        };
        let body = role_body(&mut r).unwrap();
        assert_eq!(body.service_accounts, ["shop/web", "batch/*"]);
        assert_eq!(body.policies, ["app-ro"]);
        assert_eq!(body.ttl, Some(Ttl(std::time::Duration::from_secs(600))));
        assert_eq!(body.audience.as_deref(), Some("vault"));
        assert_eq!(role_target(&r.name), "auth/kubernetes/roles/web");

        let mut r = pb::PutKubernetesRoleRequest {
            ttl: None,
            audience: None,
            ..r
        };
        let body = role_body(&mut r).unwrap();
        assert!(body.ttl.is_none() && body.audience.is_none());
        let mut r = pb::PutKubernetesRoleRequest {
            ttl: Some("soon".into()),
            ..r
        };
        let e = to_grpc(role_body(&mut r).unwrap_err());
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("ttl"), "{}", e.message());
    }
}
