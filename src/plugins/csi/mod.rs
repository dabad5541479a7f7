//! The Secrets Store CSI provider (`kstash csi-provider`): pods mount
//! kstash secrets as files, authenticated by their own ServiceAccount.
//!
//! The wire is the driver's provider API
//! (`proto/k8s/csi/v1alpha1/service.proto`, package `v1alpha1`, in [`pb`]),
//! served on a Unix socket ([`crate::plugins::socket`]) by [`CsiEndpoint`].
//! A Mount ([`provider`]) reads the driver's attributes ([`attributes`])
//! and the class's parameters ([`params`]), logs in as the pod
//! ([`login`]), and answers files ([`files`]) or a [`mount_error`].
//!
//! Invariant: the wire is exactly the driver's (service path
//! `/v1alpha1.CSIDriverProvider/…`, field numbers pinned by this module's
//! tests, `MountResponse.files` included), and nothing a Mount carries
//! reaches a log line: the pod's ServiceAccount tokens (`attributes`), the
//! `nodePublishSecretRef` data (`secrets`) and the files' contents print
//! only their lengths.

pub mod attributes;
pub mod files;
pub mod login;
pub mod metrics;
pub mod mount_error;
pub mod params;
pub mod provider;

use std::sync::Arc;

pub use metrics::CsiMetrics;
pub use mount_error::MountError;
pub use provider::{CsiProvider, ProviderOptions};

use crate::plugins::socket::{ServedSocket, SocketError, SocketOptions, SocketWatch};

/// The provider's socket file name in the driver's provider directory.
pub const SOCKET_FILE: &str = "kstash.sock";

/// The provider being served on its socket.
#[derive(Debug)]
pub struct CsiEndpoint {
    socket: ServedSocket,
    provider: Arc<CsiProvider>,
}

impl CsiEndpoint {
    /// Serve a provider made of `options` on `socket`, counting in
    /// `metrics`.
    pub async fn start(
        socket: &SocketOptions,
        options: ProviderOptions,
        metrics: CsiMetrics,
    ) -> Result<CsiEndpoint, SocketError> {
        let provider = Arc::new(CsiProvider::new(options, metrics));
        let routes = tonic::service::Routes::new(CsiProvider::into_server(provider.clone()));
        let socket =
            ServedSocket::serve("CSI provider", socket, routes, provider::MAX_IN_FLIGHT).await?;
        Ok(CsiEndpoint { socket, provider })
    }

    /// The socket file.
    pub fn path(&self) -> &std::path::Path {
        self.socket.path()
    }

    /// Whether the socket file is still ours (`/readyz`).
    pub fn watch(&self) -> SocketWatch {
        self.socket.watch()
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<CsiProvider> {
        &self.provider
    }

    /// Stop serving (Mounts in flight get up to 5 s) and remove the socket
    /// file.
    pub async fn shutdown(self) {
        self.socket.shutdown().await;
    }
}

/// Generated from `proto/k8s/csi/v1alpha1/service.proto`.
pub mod pb {
    tonic::include_proto!("v1alpha1");
}

/// `<redacted N bytes>`: what a log shows of a secret-bearing field.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {} bytes>", self.0)
    }
}

impl std::fmt::Debug for pb::MountRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountRequest")
            .field("attributes", &Redacted(self.attributes.len()))
            .field("secrets", &Redacted(self.secrets.len()))
            .field("target_path", &self.target_path)
            .field("permission", &self.permission)
            .field("current_object_version", &self.current_object_version)
            .finish()
    }
}

impl std::fmt::Debug for pb::MountResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountResponse")
            .field("object_version", &self.object_version)
            .field("error", &self.error)
            .field("files", &self.files)
            .finish()
    }
}

impl std::fmt::Debug for pb::File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("contents", &Redacted(self.contents.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::pb;
    use prost::Message;

    /// Field numbers and wire types as the driver publishes them, pinned
    /// byte for byte: a renumbered field fails here, not on a node. (Tag
    /// byte = field number << 3 | wire type: 2 length-delimited, 0 varint.)
    #[test]
    fn the_wire_is_the_secrets_store_csi_drivers() {
        let version = pb::VersionResponse {
            version: "d".into(),
            runtime_name: "k".into(),
            runtime_version: "1".into(),
        };
        assert_eq!(
            version.encode_to_vec(),
            [0x0a, 1, b'd', 0x12, 1, b'k', 0x1a, 1, b'1']
        );
        assert_eq!(
            pb::VersionRequest {
                version: "v".into()
            }
            .encode_to_vec(),
            [0x0a, 1, b'v']
        );
        let mount = pb::MountRequest {
            attributes: "a".into(),
            secrets: "s".into(),
            target_path: "t".into(),
            permission: "p".into(),
            current_object_version: vec![pb::ObjectVersion {
                id: "i".into(),
                version: "v".into(),
            }],
        };
        assert_eq!(
            mount.encode_to_vec(),
            [
                0x0a, 1, b'a', // attributes = 1
                0x12, 1, b's', // secrets = 2
                0x1a, 1, b't', // target_path = 3
                0x22, 1, b'p', // permission = 4
                0x2a, 6, 0x0a, 1, b'i', 0x12, 1, b'v', // current_object_version = 5
            ]
        );
        let mounted = pb::MountResponse {
            object_version: vec![pb::ObjectVersion {
                id: "i".into(),
                version: "2".into(),
            }],
            error: Some(pb::Error { code: "c".into() }),
            files: vec![pb::File {
                path: "f".into(),
                mode: 0o400,
                contents: vec![7],
            }],
        };
        assert_eq!(
            mounted.encode_to_vec(),
            [
                0x0a, 6, 0x0a, 1, b'i', 0x12, 1, b'2', // object_version = 1
                0x12, 3, 0x0a, 1, b'c', // error = 2 (code = 1)
                // files = 3: path = 1, mode = 2 (varint 256 = 0x80 0x02),
                // contents = 3
                0x1a, 9, 0x0a, 1, b'f', 0x10, 0x80, 0x02, 0x1a, 1, 7,
            ]
        );
    }

    #[test]
    fn the_service_path_is_the_drivers() {
        use pb::csi_driver_provider_server::CsiDriverProviderServer;
        assert_eq!(
            <CsiDriverProviderServer<()> as tonic::server::NamedService>::NAME,
            "v1alpha1.CSIDriverProvider"
        );
    }

    #[test]
    fn tokens_secrets_and_contents_never_print() {
        let mount = pb::MountRequest {
            attributes: r#"{"csi.storage.k8s.io/serviceAccount.tokens":"{\"kstash\":{\"token\":"eyJhbGciOi"}}"}"#
                .into(),
            secrets: r#"{"password":"hunter2"}"#.into(),
            target_path: "/var/lib/kubelet/pods/x/volumes/y".into(),
            permission: "420".into(),
            current_object_version: vec![],
        };
        let printed = format!("{mount:?}");
        assert!(!printed.contains("eyJhbGciOi"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted"), "{printed}");
        let mounted = pb::MountResponse {
            object_version: vec![],
            error: None,
            files: vec![pb::File {
                path: "db/password".into(),
                mode: 0o400,
                contents: b"hunter2".to_vec(),
            }],
        };
        let printed = format!("{mounted:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("db/password"), "{printed}");
        assert!(printed.contains("0o400"), "{printed}");
    }
}
