//! Why a Mount failed, and how the driver is told: one gRPC error whose
//! message says what to fix, carrying a `MountResponse` whose `error.code`
//! names the kind of failure (and which holds no files).
//!
//! The driver shows a gRPC error's message in the pod's events, and a
//! `MountResponse.error.code` as the event's reason; a gRPC call cannot
//! answer both a response and an error, so the response rides in the
//! error's details the standard way (`grpc-status-details-bin`, a
//! `google.rpc.Status` whose one detail is an `Any` of type
//! `type.googleapis.com/v1alpha1.MountResponse`), and the message starts
//! with the code.
//!
//! Invariant: the codes form a fixed set ([`MountError::code`]); a message
//! names objects by path and parameters by name, never a token or a
//! secret's value; only [`MountError::Unavailable`] is UNAVAILABLE, the
//! one code the driver retries by itself.

use prost::Message;
use thiserror::Error;

use super::attributes::AttributesError;
use super::params::ParamsError;
use super::pb;

/// The type URL of the `MountResponse` in an error's details.
pub const MOUNT_RESPONSE_TYPE_URL: &str = "type.googleapis.com/v1alpha1.MountResponse";

/// Why a Mount failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MountError {
    /// The request itself is not what the driver sends.
    #[error("{0}")]
    Request(String),
    /// The SecretProviderClass's parameters are wrong.
    #[error("{0}")]
    Class(#[from] ParamsError),
    /// The driver sent no token for the class's audience.
    #[error("{0}")]
    NoToken(AttributesError),
    /// kstash refused to log the pod in.
    #[error("{0}")]
    Login(String),
    /// A secret the class names does not exist.
    #[error("the secret {path:?} does not exist in kstash namespace {namespace:?}: write it, or fix the object's path")]
    NotFound {
        /// Its path.
        path: String,
        /// The kstash namespace.
        namespace: String,
    },
    /// The pod's policies do not let it read a secret the class names.
    #[error("the pod may not read the secret {path:?} in kstash namespace {namespace:?}: grant read on it in a policy of the role {role:?}, or remove the object ({detail})")]
    Forbidden {
        /// Its path.
        path: String,
        /// The kstash namespace.
        namespace: String,
        /// The login role.
        role: String,
        /// kstash's own words.
        detail: String,
    },
    /// A secret's value does not fit its object (no such field, binary).
    #[error("{0}")]
    Value(String),
    /// The files are larger than the driver accepts.
    #[error("the volume's files are {bytes} bytes; at most {limit} fit in one answer to the driver: split the objects over several SecretProviderClasses")]
    TooLarge {
        /// Their size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// kstash could not be reached or cannot answer now (sealed, no
    /// leader, overloaded); the driver retries.
    #[error("kstash cannot answer now: {0}")]
    Unavailable(String),
    /// kstash answered something unexpected.
    #[error("kstash answered unexpectedly: {0}")]
    Kstash(String),
}

impl MountError {
    /// The `MountResponse.error.code`: one of a fixed set.
    pub fn code(&self) -> &'static str {
        match self {
            MountError::Request(_) => "InvalidMountRequest",
            MountError::Class(_) => "InvalidSecretProviderClass",
            MountError::NoToken(_) => "MissingServiceAccountToken",
            MountError::Login(_) => "LoginRefused",
            MountError::NotFound { .. } => "SecretNotFound",
            MountError::Forbidden { .. } => "SecretForbidden",
            MountError::Value(_) => "InvalidSecretValue",
            MountError::TooLarge { .. } => "MountTooLarge",
            MountError::Unavailable(_) => "KstashUnavailable",
            MountError::Kstash(_) => "KstashError",
        }
    }

    /// Every code, for metrics and docs.
    pub const CODES: [&'static str; 10] = [
        "InvalidMountRequest",
        "InvalidSecretProviderClass",
        "MissingServiceAccountToken",
        "LoginRefused",
        "SecretNotFound",
        "SecretForbidden",
        "InvalidSecretValue",
        "MountTooLarge",
        "KstashUnavailable",
        "KstashError",
    ];

    /// The gRPC code.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            MountError::Request(_) | MountError::Class(_) => tonic::Code::InvalidArgument,
            MountError::NoToken(_) | MountError::Value(_) => tonic::Code::FailedPrecondition,
            MountError::Login(_) => tonic::Code::Unauthenticated,
            MountError::NotFound { .. } => tonic::Code::NotFound,
            MountError::Forbidden { .. } => tonic::Code::PermissionDenied,
            MountError::TooLarge { .. } => tonic::Code::ResourceExhausted,
            MountError::Unavailable(_) => tonic::Code::Unavailable,
            MountError::Kstash(_) => tonic::Code::Internal,
        }
    }

    /// The gRPC error the driver gets: `"<code>: <message>"`, with a
    /// `MountResponse` naming the code (and no files) in its details.
    pub fn to_status(&self) -> tonic::Status {
        let message = format!("{}: {self}", self.code());
        let response = pb::MountResponse {
            object_version: vec![],
            error: Some(pb::Error {
                code: self.code().into(),
            }),
            files: vec![],
        };
        let details = RpcStatus {
            code: self.grpc_code() as i32,
            message: message.clone(),
            details: vec![ProtoAny {
                type_url: MOUNT_RESPONSE_TYPE_URL.into(),
                value: response.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(self.grpc_code(), message, details.encode_to_vec().into())
    }
}

/// `google.rpc.Status` (`google/rpc/status.proto`), as gRPC's rich error
/// model puts it in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    /// The gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Typed details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    /// `type.googleapis.com/<full message name>`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The `MountResponse` a failed Mount's status carries, if any: what a
/// client of the rich error model reads.
pub fn response_in(status: &tonic::Status) -> Option<pb::MountResponse> {
    let rpc = RpcStatus::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .find(|any| any.type_url == MOUNT_RESPONSE_TYPE_URL)
        .and_then(|any| pb::MountResponse::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<MountError> {
        vec![
            MountError::Request("r".into()),
            MountError::Class(ParamsError::Missing("role")),
            MountError::NoToken(AttributesError::NoToken {
                audience: "kstash".into(),
            }),
            MountError::Login("l".into()),
            MountError::NotFound {
                path: "p".into(),
                namespace: "n".into(),
            },
            MountError::Forbidden {
                path: "p".into(),
                namespace: "n".into(),
                role: "r".into(),
                detail: "d".into(),
            },
            MountError::Value("v".into()),
            MountError::TooLarge { bytes: 2, limit: 1 },
            MountError::Unavailable("u".into()),
            MountError::Kstash("k".into()),
        ]
    }

    #[test]
    fn every_error_has_its_own_code_from_the_fixed_set() {
        let codes: Vec<_> = all().iter().map(MountError::code).collect();
        assert_eq!(codes, MountError::CODES);
        let retried: Vec<_> = all()
            .into_iter()
            .filter(|e| e.grpc_code() == tonic::Code::Unavailable)
            .collect();
        assert_eq!(retried, [MountError::Unavailable("u".into())]);
    }

    #[test]
    fn the_status_carries_the_message_and_a_response_with_the_code() {
        for e in all() {
            let status = e.to_status();
            assert_eq!(status.code(), e.grpc_code());
            assert!(
                status.message().starts_with(e.code()),
                "{}",
                status.message()
            );
            assert!(status.message().contains(&e.to_string()));
            let response = response_in(&status).expect("a MountResponse in the details");
            assert_eq!(response.error.unwrap().code, e.code());
            assert!(response.files.is_empty());
            let rpc = RpcStatus::decode(status.details()).unwrap();
            assert_eq!(rpc.code, e.grpc_code() as i32);
            assert_eq!(rpc.message, status.message());
        }
        assert!(response_in(&tonic::Status::internal("plain")).is_none());
    }
}
