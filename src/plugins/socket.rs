//! Serving a gRPC service on a Unix domain socket, as a local Kubernetes
//! component expects it: kube-apiserver's KMS `endpoint: unix:///…`, the
//! Secrets Store CSI Driver's `<provider dir>/kstash.sock`.
//!
//! Invariants:
//! - The socket file gets its mode (default 0600) and group before the
//!   first connection is accepted. kstash (`server`, `kms-plugin`,
//!   `csi-provider`) runs with umask 077, so the file is never born wider
//!   than 0700.
//! - A socket file somebody listens on is never taken over, and a file that
//!   is not a socket is never removed; a socket file nobody listens on (a
//!   crash's leftover) is replaced.
//! - On shutdown the file is removed only if it is still the one this
//!   process bound (same device and inode).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a shutdown waits for calls in flight before it drops them.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The default mode of the socket file: its owner only.
pub const DEFAULT_MODE: u32 = 0o600;

/// Why a socket could not be served.
#[derive(Debug, Error)]
pub enum SocketError {
    /// The socket setting is not usable; the message says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// Another process listens on the socket.
    #[error("another process serves {0}: stop it, or give this one another socket path")]
    Busy(PathBuf),
    /// The path holds something else than a socket.
    #[error("{0} exists and is not a socket: remove it yourself if it is not needed, or choose another path")]
    NotSocket(PathBuf),
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where and how to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Absolute path of the socket file.
    pub path: PathBuf,
    /// Mode of the socket file (permission bits only).
    pub mode: u32,
    /// Group of the socket file (numeric gid); the process's own when `None`.
    pub group: Option<u32>,
}

impl SocketOptions {
    /// The socket at `endpoint` (`unix:///abs/path` or `/abs/path`), mode
    /// 0600, no group.
    pub fn new(endpoint: &str) -> Result<SocketOptions, SocketError> {
        Ok(SocketOptions {
            path: parse_endpoint(endpoint)?,
            mode: DEFAULT_MODE,
            group: None,
        })
    }
}

/// The path of `unix:///abs/path` or `/abs/path`; anything else (another
/// scheme, a relative path) is refused.
pub fn parse_endpoint(endpoint: &str) -> Result<PathBuf, SocketError> {
    let path = match endpoint.strip_prefix("unix://") {
        Some(rest) => rest,
        None if endpoint.contains("://") => {
            return Err(SocketError::Invalid(format!(
                "socket {endpoint:?}: only unix:// sockets are served (e.g. unix:///var/run/kstash/kstash.sock)"
            )))
        }
        None => endpoint,
    };
    let path = Path::new(path);
    if !path.is_absolute() || path.file_name().is_none() {
        return Err(SocketError::Invalid(format!(
            "socket {endpoint:?}: give an absolute path to the socket file, e.g. \
             unix:///var/run/kstash/kstash.sock"
        )));
    }
    Ok(path.to_path_buf())
}

/// A socket file mode written in octal (`0600`, `660`): permission bits
/// only, and nothing for others (a socket anyone can open lets anyone on
/// the host use whatever the socket serves).
pub fn parse_mode(text: &str) -> Result<u32, SocketError> {
    let invalid = |why: &str| {
        Err(SocketError::Invalid(format!(
            "socket mode {text:?}: {why} (e.g. 0600, or 0660 with a socket group)"
        )))
    };
    let digits = text.trim();
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return invalid("write the permission bits in octal");
    }
    let mode = u32::from_str_radix(digits, 8).unwrap_or(u32::MAX);
    if mode > 0o777 {
        return invalid("only permission bits are allowed");
    }
    if mode & 0o007 != 0 {
        return invalid("others may not have access");
    }
    if mode & 0o600 != 0o600 {
        return invalid("the owner needs read and write");
    }
    Ok(mode)
}

/// A service being served on a socket file.
#[derive(Debug)]
pub struct ServedSocket {
    /// What is served, for log lines (`KMS`, `CSI provider`).
    what: &'static str,
    path: PathBuf,
    /// Device and inode of the file this process bound.
    identity: (u64, u64),
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ServedSocket {
    /// Bind `options.path`, give it its mode and group, and serve `routes`
    /// on it (at most `per_connection` calls at once per connection);
    /// `what` names the service in log lines.
    pub async fn serve(
        what: &'static str,
        options: &SocketOptions,
        routes: tonic::service::Routes,
        per_connection: usize,
    ) -> Result<ServedSocket, SocketError> {
        let path = &options.path;
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| SocketError::Io { what, path, source }
        };
        let parent = path.parent().unwrap_or(Path::new("/"));
        match std::fs::metadata(parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SocketError::Invalid(format!(
                    "{} is not a directory; the socket {} needs one",
                    parent.display(),
                    path.display()
                )))
            }
            Err(e) => {
                return Err(SocketError::Invalid(format!(
                    "the socket's directory {} is not usable ({e}); create it first, owned by \
                     the user kstash runs as (e.g. with a tmpfiles.d entry)",
                    parent.display()
                )))
            }
        }
        remove_stale(what, path).await?;
        let listener = tokio::net::UnixListener::bind(path).map_err(io("cannot bind"))?;
        let identity = match restrict(path, options) {
            Ok(identity) => identity,
            Err(e) => {
                drop(listener);
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(per_connection)
            .add_routes(routes);
        let serving = tokio::spawn(server.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        tracing::info!(socket = %path.display(), mode = format!("{:04o}", options.mode), group = ?options.group, "{what} socket listening");
        Ok(ServedSocket {
            what,
            path: path.clone(),
            identity,
            stop: Some(stop),
            serving,
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that tells whether the socket file is still the one this
    /// process serves (for a readiness probe).
    pub fn watch(&self) -> SocketWatch {
        SocketWatch {
            path: self.path.clone(),
            identity: self.identity,
        }
    }

    /// Stop accepting, let calls in flight end (up to 5 s), and remove the
    /// socket file if it is still ours.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.serving.abort_handle();
        match tokio::time::timeout(STOP_WAIT, &mut self.serving).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the {} socket failed", self.what),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    "{} calls still running after {STOP_WAIT:?}; dropped",
                    self.what
                );
                abort.abort();
            }
        }
        self.remove_if_ours();
    }

    fn remove_if_ours(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove the {} socket", self.what);
                } else {
                    tracing::info!(socket = %self.path.display(), "{} socket removed", self.what);
                }
            }
            Ok(_) => tracing::warn!(
                socket = %self.path.display(),
                "the {} socket path now holds another file; left in place",
                self.what
            ),
            Err(_) => {}
        }
    }
}

impl Drop for ServedSocket {
    /// A socket dropped without [`ServedSocket::shutdown`] (a failed start)
    /// stops serving and leaves no file behind.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            self.serving.abort();
            self.remove_if_ours();
        }
    }
}

/// Whether a served socket file is still in place: a socket directory
/// emptied or replaced under a running plugin leaves its callers without a
/// way in, and the probe says so.
#[derive(Debug, Clone)]
pub struct SocketWatch {
    path: PathBuf,
    identity: (u64, u64),
}

impl crate::plugins::health::Readiness for SocketWatch {
    fn ready(&self) -> Result<(), String> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => Ok(()),
            Ok(_) => Err(format!(
                "{} is no longer the socket this process serves; restart it",
                self.path.display()
            )),
            Err(e) => Err(format!(
                "the socket {} is gone ({e}); restart the process",
                self.path.display()
            )),
        }
    }
}

/// Remove a socket file nobody listens on; refuse a live socket and
/// anything that is not a socket.
async fn remove_stale(what: &str, path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Io {
                what: "cannot inspect",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotSocket(path.to_path_buf()));
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(SocketError::Busy(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing a stale {what} socket nobody listens on");
            std::fs::remove_file(path).map_err(|source| SocketError::Io {
                what: "cannot remove the stale socket",
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(SocketError::Io {
            what: "cannot tell whether another process serves",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Give the bound socket its mode and group; its device and inode.
fn restrict(path: &Path, options: &SocketOptions) -> Result<(u64, u64), SocketError> {
    if let Some(gid) = options.group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| SocketError::Io {
            what: if source.kind() == std::io::ErrorKind::PermissionDenied {
                "cannot give the socket to the group (the process's user must be a member of \
                 the socket group)"
            } else {
                "cannot give the socket to the group"
            },
            path: path.to_path_buf(),
            source,
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(options.mode)).map_err(
        |source| SocketError::Io {
            what: "cannot set the mode of",
            path: path.to_path_buf(),
            source,
        },
    )?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| SocketError::Io {
        what: "cannot inspect",
        path: path.to_path_buf(),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::kms::pb;

    /// A tiny service to serve: answers Status only.
    #[derive(Clone)]
    struct Echo;

    #[tonic::async_trait]
    impl pb::key_management_service_server::KeyManagementService for Echo {
        async fn status(
            &self,
            _: tonic::Request<pb::StatusRequest>,
        ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
            Ok(tonic::Response::new(pb::StatusResponse {
                version: "v2".into(),
                healthz: "ok".into(),
                key_id: "k".into(),
            }))
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

    fn routes() -> tonic::service::Routes {
        tonic::service::Routes::new(
            pb::key_management_service_server::KeyManagementServiceServer::new(Echo),
        )
    }

    fn dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("kms-sock-")
            .tempdir()
            .unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn endpoints_and_modes_are_checked() {
        assert_eq!(
            parse_endpoint("unix:///run/kstash/kms.sock").unwrap(),
            Path::new("/run/kstash/kms.sock")
        );
        assert_eq!(
            parse_endpoint("/run/kstash/kms.sock").unwrap(),
            Path::new("/run/kstash/kms.sock")
        );
        for bad in [
            "kms.sock",
            "unix://kms.sock",
            "unix://./kms.sock",
            "tcp://1.2.3.4:5",
            "/",
            "",
        ] {
            let err = parse_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains("socket"), "{bad}: {err}");
        }
        assert_eq!(parse_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert_eq!(parse_mode("0640").unwrap(), 0o640);
        for bad in ["0666", "0601", "0400", "8", "0x1ff", "", "01777", "rw"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_socket_gets_its_mode_serves_and_is_removed_on_shutdown() {
        // Steps: serve with mode 0600 → the file is a socket with mode
        // 0600 and answers a connection; shut down → the file is gone.
        // Again with 0660 and the process's own group.
        for mode in [0o600, 0o660] {
            let d = dir();
            let path = d.path().join("kms.sock");
            let options = SocketOptions {
                path: path.clone(),
                mode,
                group: (mode == 0o660).then(|| rustix::process::getgid().as_raw()),
            };
            let served = ServedSocket::serve("KMS", &options, routes(), 4)
                .await
                .unwrap();
            assert!(std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket());
            assert_eq!(mode_of(&path), mode);
            tokio::net::UnixStream::connect(&path).await.unwrap();
            served.shutdown().await;
            assert!(!path.exists(), "removed on shutdown");
        }
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_never_taken() {
        // Steps: a socket file nobody listens on (a listener bound and
        // dropped) is replaced; a socket another listener serves is
        // refused as busy and still answers; a regular file is refused and
        // left as it is; a missing directory is a clear error.
        let d = dir();
        let path = d.path().join("kms.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "the stale file is there");
        let options = SocketOptions::new(path.to_str().unwrap()).unwrap();
        let served = ServedSocket::serve("KMS", &options, routes(), 4)
            .await
            .unwrap();

        let err = ServedSocket::serve("KMS", &options, routes(), 4)
            .await
            .unwrap_err();
        assert!(matches!(err, SocketError::Busy(_)), "{err}");
        assert!(err.to_string().contains("another process serves"), "{err}");
        tokio::net::UnixStream::connect(&path).await.unwrap();
        served.shutdown().await;

        std::fs::write(&path, b"not a socket").unwrap();
        let err = ServedSocket::serve("KMS", &options, routes(), 4)
            .await
            .unwrap_err();
        assert!(matches!(err, SocketError::NotSocket(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");

        let missing = SocketOptions::new(d.path().join("nope/kms.sock").to_str().unwrap()).unwrap();
        let err = ServedSocket::serve("KMS", &missing, routes(), 4)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("create it first"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_leaves_a_file_that_replaced_ours() {
        // Steps: serve (the watch says ready); the file goes (not ready);
        // something else takes its place (not ready); shut down → that
        // file stays.
        let d = dir();
        let path = d.path().join("kms.sock");
        let options = SocketOptions::new(path.to_str().unwrap()).unwrap();
        let served = ServedSocket::serve("KMS", &options, routes(), 4)
            .await
            .unwrap();
        let watch = served.watch();
        use crate::plugins::health::Readiness;
        assert_eq!(watch.ready(), Ok(()));
        std::fs::remove_file(&path).unwrap();
        let gone = watch.ready().unwrap_err();
        assert!(gone.contains("is gone"), "{gone}");
        std::fs::write(&path, b"someone else's").unwrap();
        let replaced = watch.ready().unwrap_err();
        assert!(replaced.contains("no longer the socket"), "{replaced}");
        served.shutdown().await;
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }
}
