//! The one mapping from service errors to HTTP statuses and gRPC codes.
//! REST bodies are `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::ServiceError;

/// HTTP status and gRPC code of every service error, side by side.
pub fn status_of(e: &ServiceError) -> (StatusCode, tonic::Code) {
    match e {
        ServiceError::BadRequest(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        ServiceError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
        ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
        ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, tonic::Code::NotFound),
        ServiceError::Conflict(_) => (StatusCode::CONFLICT, tonic::Code::FailedPrecondition),
        ServiceError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::InvalidArgument),
        ServiceError::Sealed | ServiceError::NotInitialized | ServiceError::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        }
        ServiceError::Integrity => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::DataLoss),
        ServiceError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
    }
}

/// The JSON error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`bad_request`, `sealed`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// A service error on its way out through REST.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = status_of(&self.0);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.0.code().to_string(),
                message: self.0.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// A service error on its way out through gRPC (code in the message prefix
/// as well, so clients see the same code strings as REST).
pub fn to_grpc(e: ServiceError) -> tonic::Status {
    let (_, code) = status_of(&e);
    tonic::Status::new(code, format!("{}: {}", e.code(), e))
}
