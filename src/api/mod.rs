//! The client API: gRPC and REST/JSON on one port, over the same service
//! layer. Handlers are thin: decode → call `service::Node` → map the error
//! with the one mapping in [`error`].

pub mod error;
pub mod grpc;
pub mod metrics;
pub mod rest;

use std::sync::Arc;

use crate::service::Node;

/// Every route of the client port: REST, OpenAPI, metrics and gRPC.
pub fn router(node: Arc<Node>) -> axum::Router {
    let metrics = Arc::new(metrics::Metrics::new());
    rest::router(node.clone(), metrics.clone())
        .merge(grpc::router(node))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}
