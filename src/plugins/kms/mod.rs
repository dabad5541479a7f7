//! The Kubernetes KMS v2 plugin: the wire contract kube-apiserver speaks
//! (`proto/k8s/kms/v2/api.proto`, package `v2`, in [`pb`]) and the one
//! service that answers it ([`service`]), served on a Unix socket
//! ([`crate::plugins::socket`]) two ways: by a node over its own front door
//! ([`local`], `kstash server --kms-socket`), or by a separate process over
//! the client library ([`remote`], `kstash kms-plugin`).
//!
//! Invariant: the wire is exactly Kubernetes' (service path
//! `/v2.KeyManagementService/…`, field numbers pinned by this module's
//! tests), and a DEK seed never reaches a log line: the two messages that
//! carry one (`EncryptRequest`, `DecryptResponse`) print only its length.

pub mod local;
pub mod metrics;
pub mod remote;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use crate::plugins::socket::ServedSocket;
use crate::plugins::TaskGuard;

pub use crate::plugins::socket::{SocketError, SocketOptions};
pub use service::{KmsBackend, KmsError, KmsKey, KmsService, StatusCache};

use metrics::KmsMetrics;

/// What a KMS endpoint serves, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsOptions {
    /// The socket file, its mode and group.
    pub socket: SocketOptions,
    /// The key it serves.
    pub key: KmsKey,
    /// How often the status cache is refreshed.
    pub status_interval: Duration,
}

/// Check a status interval against [`service::STATUS_INTERVAL_RANGE`].
pub fn check_status_interval(interval: Duration) -> Result<Duration, String> {
    let (min, max) = service::STATUS_INTERVAL_RANGE;
    if interval < min || interval > max {
        return Err(format!(
            "the KMS status interval must be {} to {}, not {}",
            crate::clock::format_duration(min),
            crate::clock::format_duration(max),
            crate::clock::format_duration(interval)
        ));
    }
    Ok(interval)
}

/// A KMS v2 service being served: the socket and the status refresher.
/// Dropped without [`KmsEndpoint::shutdown`], it stops both and removes the
/// socket file all the same (without waiting for calls in flight).
#[derive(Debug)]
pub struct KmsEndpoint {
    socket: ServedSocket,
    cache: Arc<StatusCache>,
    _refresher: TaskGuard,
}

impl KmsEndpoint {
    /// Start refreshing the status from `backend` and serve the KMS v2
    /// service of `options.key` on `options.socket`, counting in `metrics`.
    pub async fn start<B: KmsBackend>(
        backend: Arc<B>,
        options: &KmsOptions,
        metrics: KmsMetrics,
    ) -> Result<KmsEndpoint, SocketError> {
        let cache = Arc::new(StatusCache::new(options.status_interval));
        let service = KmsService::new(
            backend.clone(),
            options.key.clone(),
            cache.clone(),
            metrics.clone(),
        );
        let routes = tonic::service::Routes::new(service.into_server());
        let socket =
            ServedSocket::serve("KMS", &options.socket, routes, service::MAX_IN_FLIGHT).await?;
        let refresher = TaskGuard::new(tokio::spawn(cache.clone().run_refresher(
            backend,
            options.key.clone(),
            metrics,
        )));
        Ok(KmsEndpoint {
            socket,
            cache,
            _refresher: refresher,
        })
    }

    /// The socket file.
    pub fn path(&self) -> &std::path::Path {
        self.socket.path()
    }

    /// The status cache (`/readyz` reads it).
    pub fn cache(&self) -> &Arc<StatusCache> {
        &self.cache
    }

    /// Stop serving, remove the socket file and stop refreshing.
    pub async fn shutdown(self) {
        self.socket.shutdown().await;
    }
}

/// Generated from `proto/k8s/kms/v2/api.proto`.
pub mod pb {
    tonic::include_proto!("v2");
}

impl std::fmt::Debug for pb::EncryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptRequest")
            .field(
                "plaintext",
                &format_args!("<redacted {} bytes>", self.plaintext.len()),
            )
            .field("uid", &self.uid)
            .finish()
    }
}

impl std::fmt::Debug for pb::DecryptResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptResponse")
            .field(
                "plaintext",
                &format_args!("<redacted {} bytes>", self.plaintext.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::pb;
    use prost::Message;

    /// Field numbers and wire types as Kubernetes publishes them, pinned
    /// byte for byte: a renumbered field fails here, not in a cluster.
    /// (Tag byte = field number << 3 | wire type 2, length-delimited.)
    #[test]
    fn the_wire_is_kubernetes_kms_v2() {
        let status = pb::StatusResponse {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: "k".into(),
        };
        assert_eq!(
            status.encode_to_vec(),
            [0x0a, 2, b'v', b'2', 0x12, 2, b'o', b'k', 0x1a, 1, b'k']
        );
        let encrypt = pb::EncryptRequest {
            plaintext: vec![7],
            uid: "u".into(),
        };
        assert_eq!(encrypt.encode_to_vec(), [0x0a, 1, 7, 0x12, 1, b'u']);
        let encrypted = pb::EncryptResponse {
            ciphertext: vec![9],
            key_id: "k".into(),
            annotations: [("a.io".to_string(), vec![1])].into(),
        };
        assert_eq!(
            encrypted.encode_to_vec(),
            [
                0x0a, 1, 9, 0x12, 1, b'k', // ciphertext = 1, key_id = 2
                0x1a, 9, 0x0a, 4, b'a', b'.', b'i', b'o', 0x12, 1, 1, // annotations = 3
            ]
        );
        let decrypt = pb::DecryptRequest {
            ciphertext: vec![9],
            uid: "u".into(),
            key_id: "k".into(),
            annotations: [("a.io".to_string(), vec![1])].into(),
        };
        assert_eq!(
            decrypt.encode_to_vec(),
            [
                0x0a, 1, 9, 0x12, 1, b'u', 0x1a, 1, b'k', // ciphertext, uid, key_id
                0x22, 9, 0x0a, 4, b'a', b'.', b'i', b'o', 0x12, 1, 1, // annotations = 4
            ]
        );
        let decrypted = pb::DecryptResponse { plaintext: vec![7] };
        assert_eq!(decrypted.encode_to_vec(), [0x0a, 1, 7]);
    }

    #[test]
    fn the_service_path_is_kubernetes() {
        use pb::key_management_service_server::KeyManagementServiceServer as Server;
        use tonic::server::NamedService;
        assert_eq!(
            <Server<Unimplemented> as NamedService>::NAME,
            "v2.KeyManagementService"
        );
    }

    #[test]
    fn a_dek_seed_never_prints() {
        let seed = vec![0x5a; 32];
        let shown = format!(
            "{:?} {:?}",
            pb::EncryptRequest {
                plaintext: seed.clone(),
                uid: "u".into()
            },
            pb::DecryptResponse { plaintext: seed }
        );
        assert!(shown.contains("<redacted 32 bytes>"), "{shown}");
        assert!(!shown.contains("90"), "{shown}"); // 0x5a
    }

    /// A server type to name the service by; never run.
    struct Unimplemented;

    #[tonic::async_trait]
    impl pb::key_management_service_server::KeyManagementService for Unimplemented {
        async fn status(
            &self,
            _: tonic::Request<pb::StatusRequest>,
        ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn decrypt(
            &self,
            _: tonic::Request<pb::DecryptRequest>,
        ) -> Result<tonic::Response<pb::DecryptResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
        async fn encrypt(
            &self,
            _: tonic::Request<pb::EncryptRequest>,
        ) -> Result<tonic::Response<pb::EncryptResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }
}
