//! The client API: gRPC and REST/JSON on one port, over the same service
//! layer. Handlers are thin: decode → call `service::Node` → map the error
//! with the one mapping in [`error`].
//!
//! Invariants: while the barrier is sealed, only the routes in
//! [`answers_while_sealed`] run; everything else gets 503 `sealed` before its
//! path, body or token is looked at. On a node removed from the cluster,
//! only the routes in [`answers_when_removed`] run; everything else gets 503
//! `removed` the same way. Every request first passes the HTTP
//! edges ([`edges`]: Host with plaintext, Content-Type, no caching) and is
//! counted under labels from fixed sets ([`metrics`]).

pub mod conn;
pub mod edges;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod rest;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::guard::audit::AuditLog;
use crate::guard::{CallContext, Door};
use crate::service::{Node, ServiceError};

/// Which `Host` values the client port answers.
#[derive(Clone, Debug)]
pub enum HostCheck {
    /// Any (over TLS: a browser that rebinds a name to this node fails the
    /// certificate check before it sends anything).
    Any,
    /// Only loopback, `localhost` and these (plaintext).
    Only(Arc<edges::AllowedHosts>),
}

/// Every route of the client port: REST, OpenAPI, metrics and gRPC, with
/// no audit device.
///
/// Layers are applied after routing (`Router::layer`), so each sees the
/// matched route template. From the outside in: metrics, the call context
/// (request id, peer), `no-store`, the Host check (plaintext only), gRPC's
/// Content-Type check, the sealed gate (JSON routes check theirs in
/// `rest::Body`). Every operation then passes the front door
/// ([`crate::guard::Door`]).
pub fn router(node: Arc<Node>, hosts: HostCheck) -> axum::Router {
    let metrics = Arc::new(metrics::Metrics::new());
    let door = door(node, Arc::new(AuditLog::disabled()), &metrics, false);
    router_with(door, hosts, metrics)
}

/// The front door of `node` for this API: records to `audit`, counts in
/// `metrics`' operation metrics, statuses by [`error::status_of`].
pub fn door(
    node: Arc<Node>,
    audit: Arc<AuditLog>,
    metrics: &metrics::Metrics,
    hmac_values: bool,
) -> Arc<Door> {
    Arc::new(Door::new(
        node,
        audit,
        metrics.operations().clone(),
        hmac_values,
        |e| error::status_of(e).0.as_u16(),
    ))
}

/// [`router`] through `door`, serving `metrics` (whose connection metrics
/// the client port's acceptor feeds).
pub fn router_with(
    door: Arc<Door>,
    hosts: HostCheck,
    metrics: Arc<metrics::Metrics>,
) -> axum::Router {
    let node = door.node().clone();
    let mut app = rest::router(door.clone(), metrics.clone())
        .merge(grpc::router(door))
        .layer(axum::middleware::from_fn_with_state(node, sealed_gate))
        .layer(axum::middleware::from_fn(edges::require_grpc_content_type));
    if let HostCheck::Only(allowed) = hosts {
        app = app.layer(axum::middleware::from_fn_with_state(
            allowed,
            edges::check_host,
        ));
    }
    app.layer(axum::middleware::from_fn(edges::no_store))
        .layer(axum::middleware::from_fn(call_context))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// The response header (and gRPC metadata) carrying a request's id, as
/// its audit records name it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Give every request its [`CallContext`] (a fresh request id, the peer's
/// address) and send the id back in `x-request-id`, so a client can find
/// its call in the audit log. A client's own `x-request-id` is not taken:
/// the id is the node's, unique and unforgeable.
async fn call_context(mut req: Request, next: Next) -> Response {
    let remote = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let context = CallContext::new(remote);
    let id = axum::http::HeaderValue::from_str(&context.request_id).ok();
    req.extensions_mut().insert(context);
    let mut resp = next.run(req).await;
    if let Some(id) = id {
        resp.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    resp
}

/// Routes that answer while sealed: what answers on a removed node
/// ([`answers_when_removed`]: status, health, the membership view, which is
/// Raft's own state and needs no barrier, and the content-free documents),
/// plus init and unseal.
pub fn answers_while_sealed(path: &str) -> bool {
    answers_when_removed(path)
        || matches!(
            path,
            "/v1/sys/init" | "/v1/sys/unseal" | "/kstash.v1.Sys/Init" | "/kstash.v1.Sys/Unseal"
        )
}

/// Routes that answer on a node removed from the cluster: what tells an
/// operator what happened (status, health, probes, the membership view) and
/// the content-free documents (OpenAPI, metrics, gRPC reflection, which
/// describes only the public proto).
pub fn answers_when_removed(path: &str) -> bool {
    grpc::REFLECTION_METHODS.contains(&path)
        || matches!(
            path,
            "/v1/sys/status"
                | "/v1/sys/health"
                | "/v1/sys/raft/peers"
                | "/v1/openapi.json"
                | "/metrics"
                | "/livez"
                | "/readyz"
                | "/kstash.v1.Sys/Status"
                | "/kstash.v1.Sys/Health"
                | "/kstash.v1.Sys/RaftPeers"
        )
}

/// The gate in front of every route: a removed node, sealed or not,
/// refuses what it does not answer ([`answers_when_removed`]); a sealed
/// member likewise ([`answers_while_sealed`]).
async fn sealed_gate(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let refusal = match node.removed() {
        // Sealed or not: what it answers shows how it left the cluster.
        Some(_) if answers_when_removed(path) => return next.run(req).await,
        Some(e) => e,
        None if node.is_sealed() && !answers_while_sealed(path) => ServiceError::Sealed,
        None => return next.run(req).await,
    };
    if grpc::is_grpc_path(path) {
        return error::to_grpc(refusal).into_http();
    }
    error::ApiError(refusal).into_response()
}
