//! REST/JSON handlers. Paths and bodies follow DESIGN.md; the OpenAPI
//! document at `/v1/openapi.json` is generated from these handlers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::error::{ApiError, ErrorBody};
use super::metrics::Metrics;
use crate::acl::{path, Policy};
use crate::guard::{audit, Call, CallContext, Door, Operation, Presented, Transport};
use crate::keys;
use crate::secret::SecretString;
use crate::service::admin::{PeersResponse, RemoveRequest};
use crate::service::types::*;
use crate::service::{KeyUser, Node, ServiceError, MAX_LIST};

#[derive(Clone)]
struct AppState {
    door: Arc<Door>,
    metrics: Arc<Metrics>,
}

impl AppState {
    fn node(&self) -> &Arc<Node> {
        self.door.node()
    }
}

/// Every REST call's transport.
const REST: Transport = Transport::Rest;

/// The request's context (id, peer), set for every request by
/// [`super::call_context`]; a fresh one if the layer is missing.
struct Ctx(CallContext);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Ctx(parts
            .extensions
            .get::<CallContext>()
            .cloned()
            .unwrap_or_else(|| CallContext::new(None))))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, decoded or the error that says why not. It must be
/// declared `Content-Type: application/json` (415 otherwise, before it is
/// read: a browser's cross-site request cannot say so without a CORS
/// preflight, which kstash never answers). A body that does not read or
/// decode is handed to the handler as its error, so the call still passes
/// the front door and is recorded. An empty body is read as `{}` so
/// optional bodies can be left out.
struct Body<T>(Result<T, ServiceError>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        super::edges::require_json(req.headers()).map_err(IntoResponse::into_response)?;
        Ok(Body(read_json(req, state).await))
    }
}

async fn read_json<S: Send + Sync, T: DeserializeOwned>(
    req: Request,
    state: &S,
) -> Result<T, ServiceError> {
    {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ServiceError::TooLarge("request body is too large".into())
            } else {
                ServiceError::bad(format!("could not read the request body: {e}"))
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|e| {
            ServiceError::bad(format!(
                "invalid JSON body: {}",
                redact_quoted(&e.to_string())
            ))
        })
    }
}

/// serde_json quotes offending *values* in double quotes (`invalid type:
/// string "…"`), and a value may be a secret; field names use backticks and
/// are kept.
fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// The request header carrying a client's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The `Idempotency-Key` header, checked; one value at most.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ServiceError> {
    let mut values = headers.get_all(IDEMPOTENCY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ServiceError::bad("give at most one Idempotency-Key header"));
    }
    let text = value.to_str().map_err(|_| {
        ServiceError::bad("idempotency key may only hold A-Z, a-z, 0-9, '-', '_', '.' and ':'")
    })?;
    Ok(Some(IdempotencyKey::parse(text)?))
}

/// Whether a route honours `Idempotency-Key`: the writes of secrets,
/// policies and Kubernetes login roles, and the management writes of named
/// keys (create, rotate, config). Elsewhere the header is refused rather
/// than ignored, so a client never believes a call is deduplicated when it
/// is not (an encryption or decryption is not a write: a resend is
/// harmless).
fn takes_idempotency_key(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    let kv = path.starts_with("/v1/kv/")
        && matches!(*method, Method::PUT | Method::POST | Method::DELETE);
    // `/v1/namespaces/{ns}/<segments…>/{name}`: the segments between the
    // namespace and the name.
    let named_in_namespace = |segments: &[&str]| {
        let parts: Vec<&str> = path.split('/').collect();
        path.starts_with("/v1/namespaces/")
            && parts.len() == segments.len() + 5
            && parts[4..4 + segments.len()] == *segments
    };
    let policy =
        named_in_namespace(&["policies"]) && matches!(*method, Method::PUT | Method::DELETE);
    let role = named_in_namespace(&["auth", "kubernetes", "roles"])
        && matches!(*method, Method::PUT | Method::DELETE);
    // `/v1/keys/{name}` and `/v1/keys/{name}/{rotate,config}`.
    let key = *method == Method::POST
        && path.strip_prefix("/v1/keys/").is_some_and(|rest| {
            matches!(
                rest.split('/').collect::<Vec<_>>()[..],
                [name] | [name, "rotate" | "config"] if !name.is_empty()
            )
        });
    kv || policy || role || key
}

async fn refuse_misplaced_idempotency_key(req: Request, next: axum::middleware::Next) -> Response {
    if req.headers().contains_key(IDEMPOTENCY_HEADER)
        && !takes_idempotency_key(req.method(), req.uri().path())
    {
        return ApiError(ServiceError::bad(
            "Idempotency-Key is only accepted on writes of secrets, policies and Kubernetes \
             login roles, and on creating, rotating and configuring named keys",
        ))
        .into_response();
    }
    next.run(req).await
}

/// The query parameters a route takes, by route template and method; every
/// other route takes none.
fn query_parameters(method: &axum::http::Method, route: &str) -> &'static [&'static str] {
    use axum::http::Method;
    match (method, route) {
        (&Method::GET, "/v1/sys/health") => &["standbyok"],
        (&Method::GET, "/v1/kv" | "/v1/kv/" | "/v1/kv/{*path}") => {
            &["list", "consistency", "cursor", "limit"]
        }
        (
            &Method::GET,
            "/v1/namespaces/{ns}/policies"
            | "/v1/namespaces/{ns}/auth/kubernetes/roles"
            | "/v1/keys",
        ) => &["cursor", "limit"],
        _ => &[],
    }
}

/// Check a request's query against the parameters its route takes: an
/// unknown parameter, or one given twice, is refused (400) like an unknown
/// body field, naming it and the ones the route takes, so a misspelt
/// `?limt=5` is never silently ignored. Names are decoded as the handlers'
/// `Query` decodes them.
fn check_query(
    method: &axum::http::Method,
    route: &str,
    uri: &axum::http::Uri,
) -> Result<(), ServiceError> {
    if uri.query().is_none_or(str::is_empty) {
        return Ok(());
    }
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| ServiceError::bad("the query string is not valid URL encoding"))?;
    let allowed = query_parameters(method, route);
    let takes = if allowed.is_empty() {
        format!("{method} on this route takes no query parameters")
    } else {
        format!("{method} on this route takes {}", allowed.join(", "))
    };
    let shown = |name: &str| -> String { name.chars().take(64).collect() };
    let mut seen: Vec<&str> = Vec::with_capacity(pairs.len());
    for (name, _) in &pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ServiceError::bad(format!(
                "unknown query parameter {:?}; {takes}",
                shown(name)
            )));
        }
        if seen.contains(&name.as_str()) {
            return Err(ServiceError::bad(format!(
                "query parameter {:?} is given more than once; give it once",
                shown(name)
            )));
        }
        seen.push(name);
    }
    Ok(())
}

async fn refuse_unknown_query(
    route: Option<axum::extract::MatchedPath>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(route) = route {
        if let Err(e) = check_query(req.method(), route.as_str(), req.uri()) {
            return ApiError(e).into_response();
        }
    }
    next.run(req).await
}

/// The access token from `Authorization: Bearer …` or `X-KStash-Token`.
fn token(headers: &HeaderMap) -> Option<SecretString> {
    if let Some(v) = headers.get("x-kstash-token").and_then(|v| v.to_str().ok()) {
        return Some(SecretString::new(v.trim().to_string()));
    }
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, t) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(SecretString::new(t.trim().to_string()))
}

/// The kv path of a request, taken from the raw URI so percent-encoded
/// separators and dots are seen (and refused) before decoding.
fn kv_path(uri: &axum::http::Uri) -> Result<String, ServiceError> {
    let raw = uri.path();
    let rest = raw.strip_prefix("/v1/kv").unwrap_or("");
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    Ok(path::decode_url_path(rest)?)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Every route template of [`router`], as axum's `MatchedPath` reports it:
/// the only route label values of the request metrics. A test keeps it in
/// step with the router.
pub const ROUTES: &[&str] = &[
    "/v1/sys/health",
    "/livez",
    "/readyz",
    "/v1/sys/status",
    "/v1/sys/init",
    "/v1/sys/unseal",
    "/v1/sys/seal",
    "/v1/sys/rotate",
    "/v1/sys/rekey",
    "/v1/sys/access-key/rotate",
    "/v1/sys/raft/peers",
    "/v1/sys/raft/remove",
    "/v1/sys/snapshot",
    "/v1/sys/gatekeeper-tokens",
    "/v1/sys/gatekeeper-tokens/list",
    "/v1/sys/gatekeeper-tokens/renew",
    "/v1/sys/gatekeeper-tokens/revoke",
    "/v1/sys/audit/hash",
    "/v1/auth/access-key/login",
    "/v1/auth/kubernetes/login",
    "/v1/auth/token/renew",
    "/v1/auth/token/revoke",
    "/v1/auth/token/self",
    "/v1/namespaces/{ns}/policies",
    "/v1/namespaces/{ns}/policies/{name}",
    "/v1/namespaces/{ns}/auth/kubernetes/roles",
    "/v1/namespaces/{ns}/auth/kubernetes/roles/{name}",
    "/v1/keys",
    "/v1/keys/{name}",
    "/v1/keys/{name}/rotate",
    "/v1/keys/{name}/config",
    "/v1/keys/{name}/encrypt",
    "/v1/keys/{name}/decrypt",
    "/v1/kv",
    "/v1/kv/",
    "/v1/kv/{*path}",
    "/v1/openapi.json",
    "/metrics",
];

/// The REST router: every operation through `door`.
pub fn router(door: Arc<Door>, metrics: Arc<Metrics>) -> Router {
    // A value's JSON form can be up to six times its size (`\u0000` escapes).
    let limit = door.node().settings().max_value_bytes * 6 + (64 << 10);
    let state = AppState { door, metrics };
    Router::new()
        .route("/v1/sys/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/v1/sys/status", get(status))
        .route("/v1/sys/init", post(init))
        .route("/v1/sys/unseal", post(unseal))
        .route("/v1/sys/seal", post(seal))
        .route("/v1/sys/rotate", post(rotate))
        .route("/v1/sys/rekey", post(rekey))
        .route("/v1/sys/access-key/rotate", post(rotate_access_key))
        .route("/v1/sys/raft/peers", get(raft_peers))
        .route("/v1/sys/raft/remove", post(raft_remove))
        .route("/v1/sys/snapshot", post(save_snapshot))
        .route("/v1/sys/gatekeeper-tokens", post(mint_gatekeeper_tokens))
        .route(
            "/v1/sys/gatekeeper-tokens/list",
            post(list_gatekeeper_tokens),
        )
        .route(
            "/v1/sys/gatekeeper-tokens/renew",
            post(renew_gatekeeper_token),
        )
        .route(
            "/v1/sys/gatekeeper-tokens/revoke",
            post(revoke_gatekeeper_token),
        )
        .route("/v1/sys/audit/hash", post(audit_hash))
        .route("/v1/auth/access-key/login", post(login))
        .route("/v1/auth/kubernetes/login", post(kubernetes_login))
        .route("/v1/auth/token/renew", post(renew_token))
        .route("/v1/auth/token/revoke", post(revoke_token))
        .route("/v1/auth/token/self", get(lookup_self))
        .route("/v1/namespaces/{ns}/policies", get(list_policies))
        .route(
            "/v1/namespaces/{ns}/policies/{name}",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .route(
            "/v1/namespaces/{ns}/auth/kubernetes/roles",
            get(list_kubernetes_roles),
        )
        .route(
            "/v1/namespaces/{ns}/auth/kubernetes/roles/{name}",
            get(get_kubernetes_role)
                .put(put_kubernetes_role)
                .delete(delete_kubernetes_role),
        )
        .route("/v1/keys", get(list_keys))
        .route(
            "/v1/keys/{name}",
            get(get_key)
                .post(create_key)
                .layer(DefaultBodyLimit::max(KEY_BODY_LIMIT)),
        )
        .route(
            "/v1/keys/{name}/rotate",
            post(rotate_key).layer(DefaultBodyLimit::max(KEY_BODY_LIMIT)),
        )
        .route(
            "/v1/keys/{name}/config",
            post(configure_key).layer(DefaultBodyLimit::max(KEY_BODY_LIMIT)),
        )
        .route(
            "/v1/keys/{name}/encrypt",
            post(encrypt).layer(DefaultBodyLimit::max(KEY_BODY_LIMIT)),
        )
        .route(
            "/v1/keys/{name}/decrypt",
            post(decrypt).layer(DefaultBodyLimit::max(KEY_BODY_LIMIT)),
        )
        .route("/v1/kv", get(kv_get))
        .route("/v1/kv/", get(kv_get))
        .route(
            "/v1/kv/{*path}",
            get(kv_get).put(kv_put).post(kv_put).delete(kv_delete),
        )
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(refuse_misplaced_idempotency_key))
        .layer(axum::middleware::from_fn(refuse_unknown_query))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError(ServiceError::NotFound("no such route".into()))
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        error: super::error::ErrorDetail {
            code: "method_not_allowed".into(),
            message: "method not allowed on this route".into(),
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct HealthQuery {
    standbyok: Option<String>,
}

/// Health, for load balancers; the body is always the status. 200: the
/// unsealed leader; 429: an unsealed follower that knows a leader (200
/// with `?standbyok=true`: followers serve every request too); 503:
/// removed from the cluster, sealed, or no leader known; 501: not
/// initialised.
#[utoipa::path(get, path = "/v1/sys/health", tag = "sys",
    params(("standbyok" = Option<bool>, Query, description = "answer 200 instead of 429 on a follower")),
    responses((status = 200, body = Status), (status = 429, body = Status), (status = 501, body = Status), (status = 503, body = Status)))]
async fn health(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Query(q): Query<HealthQuery>,
) -> ApiResult<Response> {
    let call = Call::new(Operation::Health, REST, &ctx);
    let node = s.node();
    let (st, standby_ok) = s
        .door
        .run(call, async {
            let standby_ok = match q.standbyok.as_deref() {
                None | Some("false") | Some("0") => false,
                Some("true") | Some("1") | Some("") => true,
                Some(_) => return Err(ServiceError::bad("standbyok must be true or false")),
            };
            Ok((node.status()?, standby_ok))
        })
        .await?;
    let code = match readiness(&st) {
        Err(Unready::NotInitialized) => StatusCode::NOT_IMPLEMENTED,
        Err(Unready::Removed | Unready::Sealed | Unready::NoLeader) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Ok(()) if st.leader || standby_ok => StatusCode::OK,
        Ok(()) => StatusCode::TOO_MANY_REQUESTS,
    };
    Ok((code, Json(st)).into_response())
}

/// Why a node cannot serve clients.
enum Unready {
    Removed,
    NotInitialized,
    Sealed,
    NoLeader,
}

/// Whether a node with status `st` serves clients: still a member,
/// initialised, unsealed, and a leader known (itself or another node).
fn readiness(st: &Status) -> Result<(), Unready> {
    if st.removed {
        Err(Unready::Removed)
    } else if !st.initialized {
        Err(Unready::NotInitialized)
    } else if st.sealed {
        Err(Unready::Sealed)
    } else if st.leader_id.is_none() {
        Err(Unready::NoLeader)
    } else {
        Ok(())
    }
}

/// Liveness: the process answers. Sealed and uninitialised nodes are alive
/// (restarting them would not unseal them).
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn livez() -> &'static str {
    "ok\n"
}

/// Readiness: 200 when the node serves clients (a member, initialised,
/// unsealed, a leader known), else 503 with the reason.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "`not ready: <reason>`", content_type = "text/plain", body = String)))]
async fn readyz(State(s): State<AppState>) -> Response {
    let why = match s.node().status() {
        Ok(st) => match readiness(&st) {
            Ok(()) => return (StatusCode::OK, "ready\n").into_response(),
            Err(Unready::Removed) => match s.node().removed() {
                Some(e) => format!("removed: {e}"),
                None => "removed".into(),
            },
            Err(Unready::NotInitialized) => "not initialized".into(),
            Err(Unready::Sealed) => "sealed".into(),
            Err(Unready::NoLeader) => "no leader known".into(),
        },
        Err(_) => "status unavailable".into(),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not ready: {why}\n"),
    )
        .into_response()
}

/// Status: initialised, sealed, progress, peers. No authentication.
#[utoipa::path(get, path = "/v1/sys/status", tag = "sys", responses((status = 200, body = Status)))]
async fn status(State(s): State<AppState>, Ctx(ctx): Ctx) -> ApiResult<Json<Status>> {
    let call = Call::new(Operation::Status, REST, &ctx);
    let node = s.node();
    Ok(Json(s.door.run(call, node.cluster_status()).await?))
}

/// Initialise: returns the unseal keys, access key and gatekeeper tokens once.
#[utoipa::path(post, path = "/v1/sys/init", tag = "sys", request_body = InitRequest,
    responses((status = 200, body = InitResponse), (status = 409, body = ErrorBody)))]
async fn init(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<InitRequest>,
) -> ApiResult<Json<InitResponse>> {
    let admitted = s.door.admit(Call::new(Operation::Init, REST, &ctx)).await?;
    let result = async { s.node().init(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Unseal with one unseal key (progress kept) or one gatekeeper token.
#[utoipa::path(post, path = "/v1/sys/unseal", tag = "sys", request_body = UnsealRequest,
    responses((status = 200, body = UnsealResponse), (status = 400, body = ErrorBody)))]
async fn unseal(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<UnsealRequest>,
) -> ApiResult<Json<UnsealResponse>> {
    let presented = req.as_ref().ok().map(|r| {
        r.gatekeeper_token
            .iter()
            .map(Presented::GatekeeperToken)
            .chain(r.key.iter().map(Presented::UnsealKey))
            .collect::<Vec<_>>()
    });
    let call = Call::new(Operation::Unseal, REST, &ctx).presenting(presented.unwrap_or_default());
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().unseal(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// The secrets a gatekeeper-authorised body presents (none when it did not
/// decode).
fn presented_auth(auth: &Result<GatekeeperAuth, ServiceError>) -> Vec<Presented<'_>> {
    auth.as_ref()
        .map(Presented::gatekeeper_auth)
        .unwrap_or_default()
}

/// The unseal keys a body presents (none when it did not decode).
fn presented_keys<T>(
    body: &Result<T, ServiceError>,
    keys: impl Fn(&T) -> &[SecretString],
) -> Vec<Presented<'_>> {
    body.as_ref()
        .map(|b| Presented::unseal_keys(keys(b)).collect())
        .unwrap_or_default()
}

/// Seal (gatekeeper token or unseal keys).
#[utoipa::path(post, path = "/v1/sys/seal", tag = "sys", request_body = GatekeeperAuth,
    responses((status = 200, body = SysResponse)))]
async fn seal(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<GatekeeperAuth>,
) -> ApiResult<Json<SysResponse>> {
    let call = Call::new(Operation::Seal, REST, &ctx).presenting(presented_auth(&req));
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().seal(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Rotate the encryption key: a new term for new writes.
#[utoipa::path(post, path = "/v1/sys/rotate", tag = "sys", request_body = GatekeeperAuth,
    responses((status = 200, body = SysResponse)))]
async fn rotate(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<GatekeeperAuth>,
) -> ApiResult<Json<SysResponse>> {
    let call = Call::new(Operation::Rotate, REST, &ctx).presenting(presented_auth(&req));
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().rotate(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Rekey: new unseal keys from a threshold of current ones.
#[utoipa::path(post, path = "/v1/sys/rekey", tag = "sys", request_body = RekeyRequest,
    responses((status = 200, body = RekeyResponse)))]
async fn rekey(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<RekeyRequest>,
) -> ApiResult<Json<RekeyResponse>> {
    let call = Call::new(Operation::Rekey, REST, &ctx)
        .presenting(presented_keys(&req, |r: &RekeyRequest| &r.keys));
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().rekey(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Rotate the access key.
#[utoipa::path(post, path = "/v1/sys/access-key/rotate", tag = "sys", request_body = GatekeeperAuth,
    responses((status = 200, body = SysResponse)))]
async fn rotate_access_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<GatekeeperAuth>,
) -> ApiResult<Json<SysResponse>> {
    let call = Call::new(Operation::RotateAccessKey, REST, &ctx).presenting(presented_auth(&req));
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().rotate_access_key(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// The cluster's members as this node sees them: id, addresses, voter or
/// learner, leader, matched log index (on the leader). No credential, like
/// status; answers while sealed and writes nothing.
#[utoipa::path(get, path = "/v1/sys/raft/peers", tag = "sys",
    responses((status = 200, body = PeersResponse)))]
async fn raft_peers(State(s): State<AppState>, Ctx(ctx): Ctx) -> ApiResult<Json<PeersResponse>> {
    let call = Call::new(Operation::RaftPeers, REST, &ctx);
    let node = s.node();
    Ok(Json(
        s.door.run(call, async { Ok(node.raft_peers()) }).await?,
    ))
}

/// Remove a member (on the leader; a follower answers 503 naming it).
#[utoipa::path(post, path = "/v1/sys/raft/remove", tag = "sys", request_body = RemoveRequest,
    responses((status = 200, body = SysResponse)))]
async fn raft_remove(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<RemoveRequest>,
) -> ApiResult<Json<SysResponse>> {
    let req = req.map(RemoveRequest::into_auth);
    let presented = req
        .as_ref()
        .map(|(_, auth)| Presented::gatekeeper_auth(auth))
        .unwrap_or_default();
    let call = Call::new(Operation::RaftRemove, REST, &ctx).presenting(presented);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let (id, auth) = req?;
        s.node().raft_remove(id, auth).await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Header carrying the replacement gatekeeper token of a snapshot save.
pub const GATEKEEPER_TOKEN_HEADER: &str = "x-kstash-gatekeeper-token";

/// Build a fresh snapshot on this node and stream its file (ciphertext
/// only). A used gatekeeper token's replacement comes back in the
/// `X-KStash-Gatekeeper-Token` header.
#[utoipa::path(post, path = "/v1/sys/snapshot", tag = "sys", request_body = GatekeeperAuth,
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)))]
async fn save_snapshot(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<GatekeeperAuth>,
) -> ApiResult<Response> {
    let call = Call::new(Operation::SaveSnapshot, REST, &ctx).presenting(presented_auth(&req));
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().save_snapshot(req?).await }.await;
    let saved = admitted.finish(result)?;
    let mut resp = saved.bytes.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(t) = saved.gatekeeper_token {
        let mut v = axum::http::HeaderValue::from_str(t.expose())
            .map_err(|_| ApiError(ServiceError::Internal))?;
        v.set_sensitive(true);
        headers.insert(GATEKEEPER_TOKEN_HEADER, v);
    }
    Ok(resp)
}

/// Mint gatekeeper tokens with unseal keys.
#[utoipa::path(post, path = "/v1/sys/gatekeeper-tokens", tag = "sys", request_body = MintGatekeeperTokensRequest,
    responses((status = 200, body = MintGatekeeperTokensResponse)))]
async fn mint_gatekeeper_tokens(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<MintGatekeeperTokensRequest>,
) -> ApiResult<Json<MintGatekeeperTokensResponse>> {
    let call = Call::new(Operation::MintGatekeeperTokens, REST, &ctx)
        .presenting(presented_keys(&req, |r: &MintGatekeeperTokensRequest| {
            &r.keys
        }));
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().mint_gatekeeper_tokens(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Gatekeeper token ids and times.
#[derive(Serialize, utoipa::ToSchema)]
struct GatekeeperTokenList {
    tokens: Vec<GatekeeperTokenInfo>,
}

/// List gatekeeper tokens (ids only) with unseal keys.
#[utoipa::path(post, path = "/v1/sys/gatekeeper-tokens/list", tag = "sys", request_body = KeysRequest,
    responses((status = 200, body = GatekeeperTokenList)))]
async fn list_gatekeeper_tokens(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<KeysRequest>,
) -> ApiResult<Json<GatekeeperTokenList>> {
    let call = Call::new(Operation::ListGatekeeperTokens, REST, &ctx)
        .presenting(presented_keys(&req, |r: &KeysRequest| &r.keys));
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().list_gatekeeper_tokens(req?).await }.await;
    Ok(Json(GatekeeperTokenList {
        tokens: admitted.finish(result)?,
    }))
}

/// `{"gatekeeper_token"}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GatekeeperTokenBody {
    #[schema(value_type = String)]
    gatekeeper_token: SecretString,
}

/// Trade a gatekeeper token for its replacement.
#[utoipa::path(post, path = "/v1/sys/gatekeeper-tokens/renew", tag = "sys", request_body = GatekeeperTokenBody,
    responses((status = 200, body = SysResponse)))]
async fn renew_gatekeeper_token(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<GatekeeperTokenBody>,
) -> ApiResult<Json<SysResponse>> {
    let presented = req
        .as_ref()
        .map(|r| vec![Presented::GatekeeperToken(&r.gatekeeper_token)])
        .unwrap_or_default();
    let call = Call::new(Operation::RenewGatekeeperToken, REST, &ctx).presenting(presented);
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().renew_gatekeeper_token(req?.gatekeeper_token).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Revoke a gatekeeper token (the token itself, or its id with unseal keys).
#[utoipa::path(post, path = "/v1/sys/gatekeeper-tokens/revoke", tag = "sys", request_body = RevokeGatekeeperTokenRequest,
    responses((status = 204)))]
async fn revoke_gatekeeper_token(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<RevokeGatekeeperTokenRequest>,
) -> ApiResult<Response> {
    let presented = req
        .as_ref()
        .map(|r| {
            r.gatekeeper_token
                .iter()
                .map(Presented::GatekeeperToken)
                .chain(Presented::unseal_keys(&r.keys))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let call = Call::new(Operation::RevokeGatekeeperToken, REST, &ctx).presenting(presented);
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().revoke_gatekeeper_token(req?).await }.await;
    admitted.finish(result)?;
    Ok(no_content())
}

/// HMAC a string under the cluster's audit key, as the audit log shows a
/// secret: find a known token or key in the log (admin tokens only).
#[utoipa::path(post, path = "/v1/sys/audit/hash", tag = "sys", request_body = AuditHashRequest,
    responses((status = 200, body = AuditHashResponse), (status = 403, body = ErrorBody)))]
async fn audit_hash(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Body(req): Body<AuditHashRequest>,
) -> ApiResult<Json<AuditHashResponse>> {
    let token = token(&headers);
    let call =
        Call::new(Operation::AuditHash, REST, &ctx).bearer(token.as_ref(), Consistency::Stale);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let tag = s.node().audit_hash(admitted.holder()?, &req?.input)?;
        Ok(AuditHashResponse {
            hash: audit::hmac_text(tag),
        })
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Mint an access token with the access key.
#[utoipa::path(post, path = "/v1/auth/access-key/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody)))]
async fn login(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let presented = req
        .as_ref()
        .map(|r| vec![Presented::AccessKey(&r.access_key)])
        .unwrap_or_default();
    let mut call = Call::new(Operation::Login, REST, &ctx).presenting(presented);
    if let Ok(r) = &req {
        call = call.namespace(&r.namespace);
    }
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().login(req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Mint an access token with a Kubernetes ServiceAccount token (a JWT):
/// the namespace's role must bind the service account. The token is locked
/// to the namespace with the role's policies, expires with the role's TTL
/// or the ServiceAccount token, whichever comes first, and cannot be renewed
/// past that. Every refused token gets the same 401, whichever check failed
/// (the audit log of the answering node names it).
#[utoipa::path(post, path = "/v1/auth/kubernetes/login", tag = "auth", request_body = KubernetesLoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 503, description = "the cluster's keys or TokenReview cannot be reached", body = ErrorBody)))]
async fn kubernetes_login(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Body(req): Body<KubernetesLoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let presented = req
        .as_ref()
        .map(|r| vec![Presented::ServiceAccountToken(&r.jwt)])
        .unwrap_or_default();
    let mut call = Call::new(Operation::KubernetesLogin, REST, &ctx).presenting(presented);
    if let Ok(r) = &req {
        call = call.namespace(&r.namespace);
    }
    let mut admitted = s.door.admit(call).await?;
    let result = async {
        let login = s.node().login_kubernetes(req?).await?;
        admitted.identify(login.subject);
        Ok(login.response)
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Renew the caller's token.
#[utoipa::path(post, path = "/v1/auth/token/renew", tag = "auth", request_body = RenewRequest,
    responses((status = 200, body = TokenInfo)))]
async fn renew_token(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Body(req): Body<RenewRequest>,
) -> ApiResult<Json<TokenInfo>> {
    let token = token(&headers);
    let call =
        Call::new(Operation::RenewToken, REST, &ctx).bearer(token.as_ref(), Consistency::Stale);
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().renew_token(admitted.holder()?, req?).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Revoke the caller's token (or the one in the body).
#[utoipa::path(post, path = "/v1/auth/token/revoke", tag = "auth", request_body = RevokeRequest,
    responses((status = 204)))]
async fn revoke_token(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Body(req): Body<RevokeRequest>,
) -> ApiResult<Response> {
    let token = token(&headers);
    let call = Call::new(Operation::RevokeToken, REST, &ctx);
    // A token in the body proves itself; without one, the bearer's own
    // token is revoked and must be live.
    let call = match &req {
        Ok(RevokeRequest { token: Some(other) }) => {
            call.presenting([Presented::AccessToken(other)])
        }
        _ => call.bearer(token.as_ref(), Consistency::Stale),
    };
    let admitted = s.door.admit(call).await?;
    let result = async {
        s.node()
            .revoke_token(admitted.principal().token_holder(), req?)
            .await
    }
    .await;
    admitted.finish(result)?;
    Ok(no_content())
}

/// What the caller's token is.
#[utoipa::path(get, path = "/v1/auth/token/self", tag = "auth", responses((status = 200, body = TokenInfo)))]
async fn lookup_self(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
) -> ApiResult<Json<TokenInfo>> {
    let token = token(&headers);
    let call = Call::new(Operation::LookupToken, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Linearizable);
    let admitted = s.door.admit(call).await?;
    let result = admitted.holder().and_then(|h| s.node().lookup_token(h));
    Ok(Json(admitted.finish(result)?))
}

/// A namespace's policies (admin only), one page in name order: at most
/// `limit` names; `truncated` and `cursor` as for a secret listing.
#[utoipa::path(get, path = "/v1/namespaces/{ns}/policies", tag = "policies",
    params(("cursor" = Option<String>, Query, description = "continue after this name, the `cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "most names to return, 1 to 10000 (default 10000; larger values count as 10000)")),
    responses((status = 200, body = PolicyList)))]
async fn list_policies(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<PolicyList>> {
    let token = token(&headers);
    let call = Call::new(Operation::ListPolicies, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Linearizable)
        .namespace(&ns);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let page = list_page(q.cursor, q.limit.as_deref())?;
        s.node().list_policies(admitted.holder()?, &ns, &page).await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Read a policy (admin only).
#[utoipa::path(get, path = "/v1/namespaces/{ns}/policies/{name}", tag = "policies", responses((status = 200, body = PolicyResponse)))]
async fn get_policy(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<PolicyResponse>> {
    let token = token(&headers);
    let target = format!("policies/{name}");
    let call = Call::new(Operation::GetPolicy, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Linearizable)
        .namespace(&ns)
        .path(&target);
    let admitted = s.door.admit(call).await?;
    let result = async { s.node().get_policy(admitted.holder()?, &ns, &name).await }.await;
    Ok(Json(admitted.finish(result)?))
}

/// Create or replace a policy (admin only).
#[utoipa::path(put, path = "/v1/namespaces/{ns}/policies/{name}", tag = "policies", request_body = Object,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome; the same key with another request (another value included) gets 409 conflict")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn put_policy(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Body(policy): Body<Policy>,
) -> ApiResult<Response> {
    let token = token(&headers);
    let target = format!("policies/{name}");
    let call = Call::new(Operation::PutPolicy, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Stale)
        .namespace(&ns)
        .path(&target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let key = idempotency_key(&headers)?;
        s.node()
            .put_policy(admitted.holder()?, &ns, &name, policy?, key.as_ref())
            .await
    }
    .await;
    admitted.finish(result)?;
    Ok(no_content())
}

/// Delete a policy (admin only).
#[utoipa::path(delete, path = "/v1/namespaces/{ns}/policies/{name}", tag = "policies", params(("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome; the same key with another request (another value included) gets 409 conflict")), responses((status = 204)))]
async fn delete_policy(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let token = token(&headers);
    let target = format!("policies/{name}");
    let call = Call::new(Operation::DeletePolicy, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Stale)
        .namespace(&ns)
        .path(&target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let key = idempotency_key(&headers)?;
        s.node()
            .delete_policy(admitted.holder()?, &ns, &name, key.as_ref())
            .await
    }
    .await;
    admitted.finish(result)?;
    Ok(no_content())
}

/// The path a role call names in its audit record.
fn role_target(name: &str) -> String {
    format!("auth/kubernetes/roles/{name}")
}

/// A namespace's Kubernetes login roles (admin only), one page in name
/// order: at most `limit` names; `truncated` and `cursor` as for a secret
/// listing.
#[utoipa::path(get, path = "/v1/namespaces/{ns}/auth/kubernetes/roles", tag = "auth",
    params(("cursor" = Option<String>, Query, description = "continue after this name, the `cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "most names to return, 1 to 10000 (default 10000; larger values count as 10000)")),
    responses((status = 200, body = KubernetesRoleList), (status = 403, body = ErrorBody)))]
async fn list_kubernetes_roles(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<KubernetesRoleList>> {
    let token = token(&headers);
    let call = Call::new(Operation::ListKubernetesRoles, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Linearizable)
        .namespace(&ns);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let page = list_page(q.cursor, q.limit.as_deref())?;
        s.node()
            .list_kubernetes_roles(admitted.holder()?, &ns, &page)
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Read a Kubernetes login role (admin only).
#[utoipa::path(get, path = "/v1/namespaces/{ns}/auth/kubernetes/roles/{name}", tag = "auth",
    responses((status = 200, body = KubernetesRoleResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_kubernetes_role(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<KubernetesRoleResponse>> {
    let token = token(&headers);
    let target = role_target(&name);
    let call = Call::new(Operation::GetKubernetesRole, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Linearizable)
        .namespace(&ns)
        .path(&target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        s.node()
            .get_kubernetes_role(admitted.holder()?, &ns, &name)
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Create or replace a Kubernetes login role (admin only): which
/// ServiceAccounts may log in to the namespace, and what their tokens get.
#[utoipa::path(put, path = "/v1/namespaces/{ns}/auth/kubernetes/roles/{name}", tag = "auth", request_body = KubernetesRoleBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome; the same key with another request (another value included) gets 409 conflict")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn put_kubernetes_role(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Body(role): Body<KubernetesRoleBody>,
) -> ApiResult<Response> {
    let token = token(&headers);
    let target = role_target(&name);
    let call = Call::new(Operation::PutKubernetesRole, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Stale)
        .namespace(&ns)
        .path(&target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let key = idempotency_key(&headers)?;
        s.node()
            .put_kubernetes_role(admitted.holder()?, &ns, &name, role?, key.as_ref())
            .await
    }
    .await;
    admitted.finish(result)?;
    Ok(no_content())
}

/// Delete a Kubernetes login role (admin only).
#[utoipa::path(delete, path = "/v1/namespaces/{ns}/auth/kubernetes/roles/{name}", tag = "auth",
    params(("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome; the same key with another request (another value included) gets 409 conflict")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_kubernetes_role(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let token = token(&headers);
    let target = role_target(&name);
    let call = Call::new(Operation::DeleteKubernetesRole, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Stale)
        .namespace(&ns)
        .path(&target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let key = idempotency_key(&headers)?;
        s.node()
            .delete_kubernetes_role(admitted.holder()?, &ns, &name, key.as_ref())
            .await
    }
    .await;
    admitted.finish(result)?;
    Ok(no_content())
}

// ----- named encryption keys ----------------------------------------------------

/// The body limit of every named-key route: the longest ciphertext a
/// decryption takes (a 64 KiB plaintext's, in base64, about the size of an
/// encryption's base64 plaintext too) plus room for the JSON around it.
/// Fixed, unlike the secret routes' limit: a key's bounds do not follow
/// `max_value_bytes`.
const KEY_BODY_LIMIT: usize = keys::MAX_CIPHERTEXT_BYTES + (16 << 10);

/// The key a `/v1/keys/{name}…` request names, and the path its audit
/// record names (`keys/<name>`).
///
/// The name is the raw path segment, never percent-decoded: a key name
/// holds only `a-z`, `0-9`, `-` and `_`, so an encoded character (`%2F`,
/// `%2e`, even `%61`) is refused by [`keys::validate_name`] like any other
/// character outside that set, and never rewritten into a name.
fn key_target(uri: &axum::http::Uri) -> (Result<String, ServiceError>, String) {
    let raw = uri.path().strip_prefix("/v1/keys/").unwrap_or_default();
    let segment = raw.split('/').next().unwrap_or_default();
    let name = keys::validate_name(segment)
        .map(|()| segment.to_string())
        .map_err(ServiceError::from);
    (name, keys::acl_path(segment))
}

/// The body of a key create or rotate: `{}` (or none at all); a field is
/// refused rather than ignored.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// The bytes of an encryption's `plaintext` (standard base64 with
/// padding). The error never quotes the input.
fn plaintext_bytes(text: &SecretString) -> Result<zeroize::Zeroizing<Vec<u8>>, ServiceError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.expose().as_bytes())
        .map(zeroize::Zeroizing::new)
        .map_err(|_| {
            ServiceError::bad(
                "plaintext is not valid base64: encode the bytes to encrypt in standard \
                 base64 (A-Z, a-z, 0-9, '+', '/', padded with '=')",
            )
        })
}

/// The call of a named-key route at the front door: always with an access
/// token checked against a linearizable state (the service reads the key's
/// record right after and relies on it), the key's path in the record, the
/// namespace the token's. The plaintext of an encryption is never handed to
/// the door, not even for `audit_hmac_values` (which is for secret values:
/// an HMAC of a DEK seed would let anyone holding the audit key confirm a
/// guessed seed).
fn key_call<'a>(
    operation: Operation,
    ctx: &'a CallContext,
    token: Option<&'a SecretString>,
    target: &'a str,
) -> Call<'a> {
    Call::new(operation, REST, ctx)
        .bearer(token, Consistency::Linearizable)
        .path(target)
}

/// The key names of the token's namespace (admin only), one page in name
/// order: at most `limit` names; `truncated` and `cursor` as for a secret
/// listing.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    params(("cursor" = Option<String>, Query, description = "continue after this name, the `cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "most names to return, 1 to 10000 (default 10000; larger values count as 10000)")),
    responses((status = 200, body = NamedKeyList), (status = 403, body = ErrorBody)))]
async fn list_keys(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<NamedKeyList>> {
    let token = token(&headers);
    let call = Call::new(Operation::ListKeys, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Linearizable);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let page = list_page(q.cursor, q.limit.as_deref())?;
        s.node().list_keys(admitted.holder()?, &page).await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// A named key's metadata (never its material): for an admin token of the
/// namespace, or a token that may encrypt or decrypt with it.
#[utoipa::path(get, path = "/v1/keys/{name}", tag = "keys",
    params(("name" = String, Path, description = "the key's name: 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit")),
    responses((status = 200, body = NamedKeyInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Json<NamedKeyInfo>> {
    let (name, target) = key_target(&uri);
    let token = token(&headers);
    let call = key_call(Operation::GetKey, &ctx, token.as_ref(), &target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let name = name?;
        s.node()
            .get_key(KeyUser::Token(admitted.holder()?), &name)
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Create a named encryption key in the token's namespace, with version 1
/// (admin only). The body is `{}` or empty.
#[utoipa::path(post, path = "/v1/keys/{name}", tag = "keys", request_body = NoFields,
    params(("name" = String, Path, description = "the key's name: 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit"),
        ("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome")),
    responses((status = 200, body = NamedKeyInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "the key exists", body = ErrorBody)))]
async fn create_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(req): Body<NoFields>,
) -> ApiResult<Json<NamedKeyInfo>> {
    let (name, target) = key_target(&uri);
    let token = token(&headers);
    let call = key_call(Operation::CreateKey, &ctx, token.as_ref(), &target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let name = name?;
        req?;
        let key = idempotency_key(&headers)?;
        s.node()
            .create_key(admitted.holder()?, &name, key.as_ref())
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Add a version to a key, which encrypts from now on; older versions keep
/// decrypting (admin only). The body is `{}` or empty.
#[utoipa::path(post, path = "/v1/keys/{name}/rotate", tag = "keys", request_body = NoFields,
    params(("name" = String, Path, description = "the key's name"),
        ("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome and does not rotate twice")),
    responses((status = 200, body = NamedKeyInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rotate_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(req): Body<NoFields>,
) -> ApiResult<Json<NamedKeyInfo>> {
    let (name, target) = key_target(&uri);
    let token = token(&headers);
    let call = key_call(Operation::RotateKey, &ctx, token.as_ref(), &target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let name = name?;
        req?;
        let key = idempotency_key(&headers)?;
        s.node()
            .rotate_key(admitted.holder()?, &name, key.as_ref())
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Set the oldest version of a key that still decrypts (admin only): 1 to
/// the latest version, never lower than it is.
#[utoipa::path(post, path = "/v1/keys/{name}/config", tag = "keys", request_body = NamedKeyConfig,
    params(("name" = String, Path, description = "the key's name"),
        ("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome; the same key with another body gets 409 conflict")),
    responses((status = 200, body = NamedKeyInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn configure_key(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(req): Body<NamedKeyConfig>,
) -> ApiResult<Json<NamedKeyInfo>> {
    let (name, target) = key_target(&uri);
    let token = token(&headers);
    let call = key_call(Operation::ConfigureKey, &ctx, token.as_ref(), &target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let name = name?;
        let config = req?;
        let key = idempotency_key(&headers)?;
        s.node()
            .configure_key(admitted.holder()?, &name, config, key.as_ref())
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Encrypt a payload (base64, at most 64 KiB decoded) under the key's
/// latest version: a token whose policies grant `encrypt` on `keys/<name>`
/// (admin tokens may). 503 when the latest version reached its encryption
/// limit: rotate the key.
#[utoipa::path(post, path = "/v1/keys/{name}/encrypt", tag = "keys", request_body = EncryptRequest,
    params(("name" = String, Path, description = "the key's name")),
    responses((status = 200, body = EncryptResponse), (status = 400, description = "plaintext is not base64", body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, description = "plaintext over 64 KiB", body = ErrorBody),
        (status = 503, description = "sealed, or the key's latest version reached its encryption limit (rotate it)", body = ErrorBody)))]
async fn encrypt(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(req): Body<EncryptRequest>,
) -> ApiResult<Json<EncryptResponse>> {
    let (name, target) = key_target(&uri);
    let token = token(&headers);
    let call = key_call(Operation::Encrypt, &ctx, token.as_ref(), &target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let name = name?;
        let plaintext = plaintext_bytes(&req?.plaintext)?;
        s.node()
            .encrypt_with_key(KeyUser::Token(admitted.holder()?), &name, &plaintext)
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Decrypt a ciphertext the key made (`kstash:v<version>:<base64>`), under
/// any version from its `min_decryption_version` on: a token whose policies
/// grant `decrypt` on `keys/<name>` (admin tokens may). A ciphertext that
/// was changed, made by another key, or names a retired or unknown version
/// gets 400 and nothing else.
#[utoipa::path(post, path = "/v1/keys/{name}/decrypt", tag = "keys", request_body = DecryptRequest,
    params(("name" = String, Path, description = "the key's name")),
    responses((status = 200, body = DecryptResponse), (status = 400, description = "the ciphertext does not decrypt under this key", body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn decrypt(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(req): Body<DecryptRequest>,
) -> ApiResult<Json<DecryptResponse>> {
    let (name, target) = key_target(&uri);
    let token = token(&headers);
    let call = key_call(Operation::Decrypt, &ctx, token.as_ref(), &target);
    let admitted = s.door.admit(call).await?;
    let result = async {
        let name = name?;
        let req = req?;
        s.node()
            .decrypt_with_key(KeyUser::Token(admitted.holder()?), &name, &req.ciphertext)
            .await
            .map(|d| d.into_response())
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// What `GET /v1/kv/{path}` answers, for the OpenAPI document only: a
/// secret, or with `list=true` one page of names.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum KvGetResponse {
    /// A secret read back.
    Secret(SecretResponse),
    /// One page of a listing.
    List(KeyList),
}

#[derive(Deserialize)]
struct ListQuery {
    list: Option<String>,
    consistency: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// The paging parameters of a list call, `limit` checked here so a bad
/// number gets this API's own error body.
fn list_page(cursor: Option<String>, limit: Option<&str>) -> Result<ListPage, ServiceError> {
    let limit = match limit {
        None | Some("") => None,
        Some(l) => Some(l.parse::<u32>().map_err(|_| {
            ServiceError::bad(format!(
                "limit must be a whole number from 1 to {MAX_LIST} (0 or none: {MAX_LIST})"
            ))
        })?),
    };
    Ok(ListPage { cursor, limit })
}

/// `?cursor=&limit=` of a policy list.
#[derive(Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// The path a kv call names, for its audit record: decoded when it
/// decodes, else as sent.
fn recorded_path<'a>(
    decoded: &'a Result<String, ServiceError>,
    uri: &'a axum::http::Uri,
) -> &'a str {
    match decoded {
        Ok(p) => p,
        Err(_) => uri.path(),
    }
}

/// Read a secret, or list one level under a prefix with `?list=true`.
///
/// A listing returns at most `limit` names (default and most: 10 000); when
/// more follow it says `truncated: true` and gives a `cursor` to continue.
#[utoipa::path(get, path = "/v1/kv/{path}", tag = "kv",
    params(("path" = String, Path, description = "secret path or list prefix"), ("list" = Option<bool>, Query, description = "list instead of read"),
        ("consistency" = Option<String>, Query, description = "`linearizable` (default) or `stale`: this node's own state, without asking the leader"),
        ("cursor" = Option<String>, Query, description = "with `list`: continue after this name, the `cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "with `list`: most names to return, 1 to 10000 (default 10000; larger values count as 10000)")),
    responses((status = 200, description = "the secret, or with `list=true` one page of names (`truncated` and `cursor` say whether and where it goes on)", body = KvGetResponse), (status = 404, body = ErrorBody)))]
async fn kv_get(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let path = kv_path(&uri);
    let token = token(&headers);
    let list = match q.list.as_deref() {
        Some("true") | Some("1") | Some("") => Ok(true),
        None | Some("false") | Some("0") => Ok(false),
        Some(_) => Err(ServiceError::bad("list must be true or false")),
    };
    let consistency = Consistency::parse(q.consistency.as_deref().unwrap_or(""));
    let operation = if list == Ok(true) {
        Operation::ListSecrets
    } else {
        Operation::GetSecret
    };
    let call = Call::new(operation, REST, &ctx)
        .bearer(
            token.as_ref(),
            *consistency.as_ref().unwrap_or(&Consistency::Linearizable),
        )
        .path(recorded_path(&path, &uri));
    let admitted = s.door.admit(call).await?;
    let result = async {
        let path = path?;
        consistency?;
        let holder = admitted.holder()?;
        Ok(if list? {
            let page = list_page(q.cursor, q.limit.as_deref())?;
            Json(s.node().list_secrets(holder, &path, &page).await?).into_response()
        } else {
            Json(s.node().get_secret(holder, &path).await?).into_response()
        })
    }
    .await;
    Ok(admitted.finish(result)?)
}

/// Write a secret (`PUT`, or `POST` for clients that cannot send `PUT`).
#[utoipa::path(method(put, post), path = "/v1/kv/{path}", tag = "kv", request_body = PutSecretRequest,
    params(("path" = String, Path, description = "secret path"), ("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome; the same key with another request (another value included) gets 409 conflict")),
    responses((status = 200, body = PutSecretResponse), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn kv_put(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Body(req): Body<PutSecretRequest>,
) -> ApiResult<Json<PutSecretResponse>> {
    let path = kv_path(&uri);
    let token = token(&headers);
    let mut call = Call::new(Operation::PutSecret, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Stale)
        .path(recorded_path(&path, &uri));
    if let Ok(PutSecretRequest { value: Some(v), .. }) = &req {
        call = call.value(v.expose().as_bytes());
    } else if let Ok(PutSecretRequest {
        value_base64: Some(v),
        ..
    }) = &req
    {
        call = call.value(v.expose().as_bytes());
    }
    let admitted = s.door.admit(call).await?;
    let result = async {
        let key = idempotency_key(&headers)?;
        s.node()
            .put_secret(admitted.holder()?, &path?, req?, key.as_ref())
            .await
    }
    .await;
    Ok(Json(admitted.finish(result)?))
}

/// Delete a secret.
#[utoipa::path(delete, path = "/v1/kv/{path}", tag = "kv",
    params(("path" = String, Path, description = "secret path"), ("Idempotency-Key" = Option<String>, Header, description = "retry this write safely: a repeat with the same key within 10 minutes gets the first outcome; the same key with another request (another value included) gets 409 conflict")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn kv_delete(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> ApiResult<Response> {
    let path = kv_path(&uri);
    let token = token(&headers);
    let call = Call::new(Operation::DeleteSecret, REST, &ctx)
        .bearer(token.as_ref(), Consistency::Stale)
        .path(recorded_path(&path, &uri));
    let admitted = s.door.admit(call).await?;
    let result = async {
        let key = idempotency_key(&headers)?;
        s.node()
            .delete_secret(admitted.holder()?, &path?, key.as_ref())
            .await
    }
    .await;
    admitted.finish(result)?;
    Ok(no_content())
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn metrics_text(State(s): State<AppState>) -> Response {
    if let Ok(st) = s.node().status() {
        s.metrics.sealed.set(st.sealed as i64);
        s.metrics.initialized.set(st.initialized as i64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kstash",
        description = "Raft-replicated secrets store for Kubernetes. Every POST and PUT \
            needs `Content-Type: application/json`, even with an empty body (415 \
            `unsupported_media_type` otherwise). Without TLS, only requests whose `Host` is a \
            loopback address, `localhost`, the node's own API host or a name in `allowed_hosts` \
            are answered (421 `host_not_allowed` otherwise). A query parameter the route \
            does not list, or one given twice, gets 400 `bad_request` naming it (routes \
            without listed parameters take none). Every response carries \
            `Cache-Control: no-store`."
    ),
    paths(
        health,
        status,
        init,
        unseal,
        seal,
        rotate,
        rekey,
        rotate_access_key,
        raft_peers,
        raft_remove,
        save_snapshot,
        mint_gatekeeper_tokens,
        list_gatekeeper_tokens,
        renew_gatekeeper_token,
        revoke_gatekeeper_token,
        audit_hash,
        login,
        kubernetes_login,
        renew_token,
        revoke_token,
        lookup_self,
        list_policies,
        get_policy,
        put_policy,
        delete_policy,
        list_kubernetes_roles,
        get_kubernetes_role,
        put_kubernetes_role,
        delete_kubernetes_role,
        list_keys,
        get_key,
        create_key,
        rotate_key,
        configure_key,
        encrypt,
        decrypt,
        kv_get,
        kv_put,
        kv_delete,
        livez,
        readyz,
        metrics_text,
        openapi
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The OpenAPI document of the REST API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "the OpenAPI document of the REST API", content_type = "application/json")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The first argument of every `.route(` call in this file, above its
    /// tests.
    fn routed_templates() -> Vec<String> {
        let file = include_str!("rest.rs");
        let source = file.split("#[cfg(test)]").next().unwrap_or(file);
        let mut out = Vec::new();
        for (i, _) in source.match_indices(".route(") {
            let rest = source[i + ".route(".len()..].trim_start();
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let end = rest.find('"').expect("a closed string literal");
            out.push(rest[..end].to_string());
        }
        out
    }

    /// (method, path) of every operation in `/v1/openapi.json`, path
    /// parameters written `{}`.
    fn openapi_routes() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(openapi_document()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    out.insert((method.to_uppercase(), template(path)));
                }
            }
        }
        out
    }

    /// `path` without its query, each `{param}` written `{}`.
    fn template(path: &str) -> String {
        let path = path.split('?').next().unwrap_or(path);
        let mut out = String::new();
        let mut inside = false;
        for c in path.chars() {
            match c {
                '{' => {
                    inside = true;
                    out.push_str("{}");
                }
                '}' => inside = false,
                _ if inside => {}
                _ => out.push(c),
            }
        }
        out
    }

    /// (method, path) of every row of README.md's REST table. A row's first
    /// cell holds `METHOD /path` code spans (`GET\|PUT /path` for several
    /// methods); a span with a method alone (`(or `POST`)`) adds it to the
    /// row's last path.
    fn readme_routes() -> BTreeSet<(String, String)> {
        let readme = include_str!("../../README.md");
        let mut rows = readme
            .lines()
            .skip_while(|l| !l.starts_with("| method and path |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .peekable();
        assert!(rows.peek().is_some(), "README.md has no REST table");
        let mut out = BTreeSet::new();
        for row in rows {
            let cell = row
                .trim_start_matches('|')
                .split(" | ")
                .next()
                .unwrap_or_default();
            let mut last_path = None;
            for (i, span) in cell.split('`').enumerate() {
                if i % 2 == 0 {
                    continue;
                }
                let (methods, path) = match span.split_once(' ') {
                    Some((m, p)) => (m, template(p)),
                    None => (
                        span,
                        last_path.clone().expect("a path before a lone method"),
                    ),
                };
                for m in methods.split('|').map(|m| m.trim_end_matches('\\')) {
                    assert!(
                        m.chars().all(|c| c.is_ascii_uppercase()),
                        "not a method: {m:?} in {row}"
                    );
                    out.insert((m.to_string(), path.clone()));
                }
                last_path = Some(path);
            }
        }
        out
    }

    #[test]
    fn the_readme_rest_table_lists_every_openapi_route() {
        let readme = readme_routes();
        let openapi = openapi_routes();
        assert!(openapi.len() > 25, "{openapi:?}");
        let only_readme: Vec<_> = readme.difference(&openapi).collect();
        let only_openapi: Vec<_> = openapi.difference(&readme).collect();
        assert!(
            only_readme.is_empty() && only_openapi.is_empty(),
            "README.md's REST table and /v1/openapi.json disagree.\n\
             only in README.md: {only_readme:?}\nonly in OpenAPI: {only_openapi:?}"
        );
    }

    #[test]
    fn idempotency_keys_are_taken_by_writes_of_secrets_policies_roles_and_keys() {
        use axum::http::Method;
        let takes = [
            (Method::PUT, "/v1/kv/app/db"),
            (Method::POST, "/v1/kv/app/db"),
            (Method::DELETE, "/v1/kv/app/db"),
            (Method::PUT, "/v1/namespaces/team-a/policies/p"),
            (Method::DELETE, "/v1/namespaces/team-a/policies/p"),
            (Method::PUT, "/v1/namespaces/team-a/auth/kubernetes/roles/r"),
            (
                Method::DELETE,
                "/v1/namespaces/team-a/auth/kubernetes/roles/r",
            ),
            (Method::POST, "/v1/keys/kek"),
            (Method::POST, "/v1/keys/kek/rotate"),
            (Method::POST, "/v1/keys/kek/config"),
        ];
        for (method, path) in &takes {
            assert!(takes_idempotency_key(method, path), "{method} {path}");
        }
        let refuses = [
            (Method::GET, "/v1/kv/app/db"),
            (Method::GET, "/v1/namespaces/team-a/policies/p"),
            (Method::PUT, "/v1/namespaces/team-a/policies"),
            (Method::GET, "/v1/namespaces/team-a/auth/kubernetes/roles/r"),
            (Method::PUT, "/v1/namespaces/team-a/auth/kubernetes/roles"),
            (
                Method::PUT,
                "/v1/namespaces/team-a/auth/kubernetes/roles/r/x",
            ),
            (Method::PUT, "/v1/namespaces/team-a/auth/other/roles/r"),
            (Method::POST, "/v1/auth/kubernetes/login"),
            (Method::POST, "/v1/auth/access-key/login"),
            (Method::GET, "/v1/keys"),
            (Method::POST, "/v1/keys"),
            (Method::POST, "/v1/keys/"),
            (Method::GET, "/v1/keys/kek"),
            (Method::DELETE, "/v1/keys/kek"),
            (Method::POST, "/v1/keys/kek/encrypt"),
            (Method::POST, "/v1/keys/kek/decrypt"),
            (Method::POST, "/v1/keys/kek/rotate/x"),
            (Method::POST, "/v1/keys//rotate"),
        ];
        for (method, path) in &refuses {
            assert!(!takes_idempotency_key(method, path), "{method} {path}");
        }
    }

    #[test]
    fn route_labels_list_every_route() {
        let routed = routed_templates();
        assert!(routed.len() > 20, "the scan found the routes: {routed:?}");
        let listed: Vec<String> = ROUTES.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            routed, listed,
            "ROUTES must list router()'s routes in order"
        );
    }
}

#[cfg(test)]
mod openapi_tests {
    use super::*;

    #[test]
    fn listings_document_truncated_cursor_and_limit() {
        // A client reading only the OpenAPI document learns that a listing
        // is paged: every list route takes `cursor` and `limit`, and every
        // answer has `truncated` and `cursor`.
        let doc = serde_json::to_value(openapi_document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (schema, names) in [
            ("KeyList", "keys"),
            ("PolicyList", "policies"),
            ("KubernetesRoleList", "roles"),
            ("NamedKeyList", "keys"),
        ] {
            let props = &schemas[schema]["properties"];
            for field in [names, "truncated", "cursor"] {
                assert!(
                    props.get(field).is_some(),
                    "{schema}.{field} documented: {props}"
                );
            }
        }
        let kv_get = &doc["paths"]["/v1/kv/{path}"]["get"];
        let policies = &doc["paths"]["/v1/namespaces/{ns}/policies"]["get"];
        let roles = &doc["paths"]["/v1/namespaces/{ns}/auth/kubernetes/roles"]["get"];
        let keys = &doc["paths"]["/v1/keys"]["get"];
        for op in [kv_get, policies, roles, keys] {
            let params: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert!(
                params.contains(&"cursor") && params.contains(&"limit"),
                "{params:?}"
            );
        }
        let answer = kv_get["responses"]["200"].to_string();
        assert!(answer.contains("KvGetResponse"), "{answer}");
        let one_of = schemas["KvGetResponse"].to_string();
        assert!(
            one_of.contains("SecretResponse") && one_of.contains("KeyList"),
            "a kv GET answers a secret or a page of names: {one_of}"
        );
    }
}
