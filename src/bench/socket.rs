//! The caller's side of a plugin's Unix socket, as the plugin benches
//! (`kstash bench kms`, `kstash bench csi`) use it.
//!
//! Invariant: every call over a socket is bounded ([`CONNECT_TIMEOUT`],
//! [`CALL_TIMEOUT`]), and a socket path too long for `sun_path` is refused
//! before anything starts.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Longest wait for one call on a plugin's socket.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait to connect to a plugin's socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest Unix socket path (`sun_path` holds 108 bytes with the NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// One HTTP/2 connection to the socket at `path` (`what` names it in
/// errors), each call bounded by [`CALL_TIMEOUT`].
pub async fn unix_channel(path: &Path, what: &str) -> anyhow::Result<Channel> {
    let target = path.to_path_buf();
    // The URI is required by the API and ignored by the connector.
    Endpoint::from_static("http://[::]:50051")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(target).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to the {what} socket {}", path.display()))
}

/// Refuse a socket path longer than [`SOCKET_PATH_MAX`].
pub fn check_socket_path(path: &Path) -> anyhow::Result<()> {
    let len = path.as_os_str().len();
    if len > SOCKET_PATH_MAX {
        bail!(
            "the socket path {} has {len} bytes, over the {SOCKET_PATH_MAX} a Unix socket \
             allows: pass a shorter --scratch-dir",
            path.display()
        );
    }
    Ok(())
}

/// A tonic error as one line: its code and message.
pub fn describe(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}
