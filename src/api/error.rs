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
        ServiceError::Unauthorized(_) | ServiceError::LoginRefused(_) => {
            (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated)
        }
        ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
        ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, tonic::Code::NotFound),
        ServiceError::Conflict(_) => (StatusCode::CONFLICT, tonic::Code::FailedPrecondition),
        ServiceError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::InvalidArgument),
        ServiceError::Sealed | ServiceError::NotInitialized | ServiceError::Unavailable(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        }
        // A 503 as before the outcome had its own kind; clients tell it
        // apart by its code (`outcome_unknown`), and resend it only when
        // a repeat cannot apply twice.
        ServiceError::OutcomeUnknown(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        }
        // Unavailable here for good, and nothing was done: load balancers
        // and clients move on to another node.
        ServiceError::Removed(_) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
        // Nothing was done; this node serves again once its audit device
        // can write.
        ServiceError::AuditFailed => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
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

/// A request refused at the HTTP edge of the client port (`super::edges`),
/// before routing state, a handler or the service sees it: its framing is
/// wrong, not its content.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The body is not declared with the media type the route reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// With plaintext, the request named a host this node does not answer
    /// for (a browser's cross-site or DNS-rebinding request looks like this).
    #[error("{0}")]
    HostNotAllowed(String),
}

impl EdgeError {
    /// Stable machine-readable code, as [`ServiceError::code`].
    pub fn code(&self) -> &'static str {
        match self {
            EdgeError::UnsupportedMediaType(_) => "unsupported_media_type",
            EdgeError::HostNotAllowed(_) => "host_not_allowed",
        }
    }

    /// HTTP status and gRPC code, as [`status_of`] gives them for service
    /// errors.
    pub fn status(&self) -> (StatusCode, tonic::Code) {
        match self {
            EdgeError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
            ),
            EdgeError::HostNotAllowed(_) => (
                StatusCode::MISDIRECTED_REQUEST,
                tonic::Code::PermissionDenied,
            ),
        }
    }

    /// The refusal as a gRPC status (code string in the message prefix, as
    /// [`to_grpc`] does).
    pub fn to_grpc(&self) -> tonic::Status {
        tonic::Status::new(self.status().1, format!("{}: {}", self.code(), self))
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        };
        (self.status().0, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_error_names_the_fix_in_rest_and_grpc() {
        let status = to_grpc(ServiceError::Sealed);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status
                .message()
                .starts_with("sealed: kstash is sealed: unseal it")
                && status.message().contains("kstash operator unseal"),
            "{}",
            status.message()
        );
        let resp = ApiError(ServiceError::Sealed).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn an_unknown_outcome_keeps_its_own_code_in_rest_and_grpc() {
        use crate::raft::OutcomeUnknown;
        let not_sent = ServiceError::Unavailable("no leader is known; retry".into());
        let unknown = ServiceError::OutcomeUnknown(OutcomeUnknown::new("no answer within 5s"));
        // The same statuses as before: 503 and UNAVAILABLE for both.
        for e in [&not_sent, &unknown] {
            assert_eq!(
                status_of(e),
                (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
            );
        }
        // Told apart by their codes, in gRPC's message prefix ...
        let grpc = to_grpc(unknown.clone());
        assert!(
            grpc.message().starts_with(
                "outcome_unknown: no answer within 5s; the write may or may not have been applied"
            ),
            "{}",
            grpc.message()
        );
        assert!(to_grpc(not_sent.clone())
            .message()
            .starts_with("unavailable: "));
        // ... and in REST's body.
        for (e, code) in [(unknown, "outcome_unknown"), (not_sent, "unavailable")] {
            let resp = ApiError(e).into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    }
}
