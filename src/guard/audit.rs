//! The audit device: where the guard writes one JSON line for each request
//! and one for each response.
//!
//! **Invariant: a record is written in full, as one line, to the device the
//! operator named — or [`AuditLog::record`] returns an error and the caller
//! refuses the request before it runs (fail closed).** Lines never interleave
//! (one lock, one write sequence per line). The device heals itself: every
//! record first checks the file at the configured path (one `stat`), reopens
//! it when it was rotated away, and refuses it while it is not a private,
//! owner-writable regular file; the next record after a failure tries again,
//! so service returns without a restart once the operator fixes the file.
//!
//! This module never sees a secret. Every secret the caller wants to mention
//! (a token, an access key, a value) reaches the record only as
//! `hmac-sha256:<hex>` ([`hmac_text`]), computed by the caller under the
//! cluster's audit key. Error messages name the path and the OS error, never
//! record contents.
//!
//! Plain synchronous code; the one async helper is [`reopen_on_sighup`].

use std::fmt;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

/// The prefix of every HMAC in an audit record: `hmac-sha256:<64 lowercase hex>`.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// The mode a new audit file is created with: owner read and write only.
const FILE_MODE: u32 = 0o600;
/// Permission bits that let group or others at the file; an audit file with
/// any of them is refused.
const NOT_PRIVATE: u32 = 0o077;
/// The owner write bit. Without it the file is read-only on purpose (an
/// operator's `chmod a-w`), which root would otherwise write through.
const OWNER_WRITE: u32 = 0o200;

/// Format an HMAC-SHA256 tag as it appears in an audit record:
/// `hmac-sha256:` and 64 lowercase hex digits.
pub fn hmac_text(tag: [u8; 32]) -> String {
    format!("{HMAC_PREFIX}{}", hex::encode(tag))
}

/// Format ms since the epoch for an audit record's `time`: RFC 3339, UTC,
/// millisecond precision (`2026-12-04T22:33:23.123Z`).
pub fn audit_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// A file, appended to; created `0600` if missing.
    File(PathBuf),
    /// The process's standard output (`-`), e.g. for a container log collector.
    Stdout,
}

impl AuditTarget {
    /// Read a target as operators write it: `-` is stdout, anything else a
    /// file path.
    pub fn parse(text: &str) -> AuditTarget {
        if text == "-" {
            AuditTarget::Stdout
        } else {
            AuditTarget::File(PathBuf::from(text))
        }
    }
}

impl fmt::Display for AuditTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditTarget::File(path) => write!(f, "{}", path.display()),
            AuditTarget::Stdout => f.write_str("-"),
        }
    }
}

/// Why the audit device could not be opened or could not write a record.
///
/// Every variant is a reason to refuse the request being recorded (503);
/// none carries record contents.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The configured file path is empty.
    #[error("the audit file path is empty; give a file path, or `-` for stdout")]
    EmptyPath,
    /// The directory that should hold the audit file does not exist.
    #[error(
        "the directory of the audit file {} does not exist; create it or choose another audit file",
        .path.display()
    )]
    NoDirectory {
        /// The audit file path.
        path: PathBuf,
    },
    /// The audit file could not be opened or created.
    #[error("cannot open the audit file {}: {source}", .path.display())]
    Open {
        /// The audit file path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The audit file's metadata could not be read.
    #[error("cannot stat the audit file {}: {source}", .path.display())]
    Stat {
        /// The audit file path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Something other than a regular file (a directory, a FIFO…) sits at the path.
    #[error(
        "the audit file {} is not a regular file; remove what is there or choose another audit file",
        .path.display()
    )]
    NotRegularFile {
        /// The audit file path.
        path: PathBuf,
    },
    /// Group or others have permissions on the audit file.
    #[error(
        "the audit file {} has mode {mode:04o}, which lets group or others at it; run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    NotPrivate {
        /// The audit file path.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The owner write bit is off: the file was made read-only on purpose.
    #[error(
        "the audit file {} has mode {mode:04o}, without owner write permission, so kstash does not \
         write to it (not even as root); run `chmod 600 {}` to resume",
        .path.display(), .path.display()
    )]
    ReadOnly {
        /// The audit file path.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// Standard output could not be duplicated for the audit device.
    #[error("cannot use stdout as the audit device: {0}")]
    Stdout(#[source] io::Error),
    /// The record line could not be written in full.
    #[error("cannot write an audit record to {target}: {source}")]
    Write {
        /// The device: a path, or `-` for stdout.
        target: String,
        /// The OS error.
        source: io::Error,
    },
    /// The record could not be encoded as JSON.
    #[error("cannot encode an audit record as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// The SIGHUP listener could not be installed.
    #[error("cannot listen for SIGHUP to reopen the audit device: {0}")]
    Signal(#[source] io::Error),
}

/// Whether a record describes a request (before it runs) or its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// Written before the operation runs; failing to write it refuses the request.
    Request,
    /// Written after the operation ran, with its outcome.
    Response,
}

/// Who called, as the audit log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditPrincipal {
    /// The principal kind, from a fixed set (e.g. `access_token`, `anonymous`).
    pub kind: &'static str,
    /// The principal's identity as `hmac-sha256:<hex>`; absent for anonymous callers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accessor: Option<String>,
    /// Who the principal proved to be (responses only), e.g. a
    /// ServiceAccount login's `system:serviceaccount:<ns>:<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// A secret the caller presented in the request body (e.g. an unseal key),
/// as the audit log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCredential {
    /// What kind of secret, from a fixed set (e.g. `unseal_key`, `access_key`).
    pub kind: &'static str,
    /// `hmac-sha256:<hex>` of the secret; absent when it could not be computed
    /// (e.g. on a sealed node, where the audit key is not available).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac: Option<String>,
}

/// One audit line. `None` and empty fields are left out of the JSON.
///
/// Holds no secret: every secret-derived field is `hmac-sha256:<hex>`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord<'a> {
    /// When, as [`audit_time`] formats it (RFC 3339 UTC, milliseconds).
    pub time: String,
    /// `request` or `response`.
    #[serde(rename = "type")]
    pub kind: RecordKind,
    /// The request id; a request and its response share it.
    pub request_id: &'a str,
    /// The node that served the request.
    pub node_id: u64,
    /// The caller's socket address, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// `rest` or `grpc` (later `kms`, `csi`).
    pub transport: &'static str,
    /// The operation, from a fixed set (e.g. `kv.put`).
    pub operation: &'static str,
    /// Who called.
    pub principal: AuditPrincipal,
    /// The namespace the operation addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The secret path the operation addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Secrets presented in the request body, HMAC'd.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<AuditCredential>,
    /// The value's `hmac-sha256:<hex>`, only when the operator enabled
    /// value HMACs; values themselves are never recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The HTTP status (responses only; gRPC maps to its HTTP equivalent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `ok` or the error code (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// The error code, when the operation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    /// Which check refused a login (responses only; from a fixed set). The
    /// client's answer is the same for every check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_check: Option<&'static str>,
    /// How long the operation took (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
}

/// The audit device, shared as `Arc<AuditLog>`.
///
/// A disabled log records nothing and never fails. An enabled one writes
/// each record as one JSON line, or returns an error that the caller must
/// turn into a refusal.
pub struct AuditLog {
    device: Option<Device>,
}

struct Device {
    target: AuditTarget,
    sink: Mutex<Sink>,
    failures: AtomicU64,
}

enum Sink {
    File(FileSink),
    Stream(StreamSink),
}

/// Identity of an open file: it was rotated away when the path names another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

struct OpenFile {
    file: File,
    id: FileId,
}

struct FileSink {
    path: PathBuf,
    open: Option<OpenFile>,
    /// The file a failed write left a partial line in: the next line written
    /// there starts with `\n`, so the fragment cannot spoil it.
    torn: Option<FileId>,
}

struct StreamSink {
    fd: OwnedFd,
    /// A failed write left a partial line on the stream.
    torn: bool,
}

impl AuditLog {
    /// A log that records nothing and never fails (audit not configured).
    pub fn disabled() -> Self {
        AuditLog { device: None }
    }

    /// Open the audit device.
    ///
    /// A file is opened for append and created `0600` if missing; its
    /// directory must exist. An existing file that group or others may use,
    /// that lacks the owner write bit, or that is not a regular file is
    /// refused, and the error names the fix.
    pub fn open(target: AuditTarget) -> Result<Self, AuditError> {
        let sink = match &target {
            AuditTarget::File(path) => {
                if path.as_os_str().is_empty() {
                    return Err(AuditError::EmptyPath);
                }
                Sink::File(FileSink {
                    path: path.clone(),
                    open: Some(open_file(path)?),
                    torn: None,
                })
            }
            AuditTarget::Stdout => {
                let fd = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(AuditError::Stdout)?;
                Sink::Stream(StreamSink { fd, torn: false })
            }
        };
        Ok(AuditLog::with_sink(target, sink))
    }

    fn with_sink(target: AuditTarget, sink: Sink) -> Self {
        AuditLog {
            device: Some(Device {
                target,
                sink: Mutex::new(sink),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// Whether records are written (`false` for [`AuditLog::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.device.is_some()
    }

    /// Where records go; `None` when disabled.
    pub fn target(&self) -> Option<&AuditTarget> {
        self.device.as_ref().map(|d| &d.target)
    }

    /// Write `record` as one JSON line.
    ///
    /// `Ok` means the whole line reached the OS (no user-space buffer is
    /// involved; there is no fsync). `Err` means it did not, and the caller
    /// must refuse the request. For a file, the path is checked first: a file
    /// rotated away (gone, or another inode at the path) is reopened (created
    /// `0600`); a path that is not a private regular file with the owner
    /// write bit fails. After a failure the next call tries again from the
    /// start, so no restart is needed once the file is fixed.
    pub fn record(&self, record: &AuditRecord<'_>) -> Result<(), AuditError> {
        let Some(device) = &self.device else {
            return Ok(());
        };
        let result = encode(record).and_then(|line| {
            let mut sink = device.sink.lock().unwrap_or_else(PoisonError::into_inner);
            match &mut *sink {
                Sink::File(file) => file.write_line(&line),
                Sink::Stream(stream) => stream.write_line(&line),
            }
        });
        if result.is_err() {
            device.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Close and reopen the audit file at its path (creating it `0600`), as
    /// logrotate expects on SIGHUP. A no-op for stdout and when disabled.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let Some(device) = &self.device else {
            return Ok(());
        };
        let mut sink = device.sink.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *sink {
            Sink::File(file) => file.reopen(),
            Sink::Stream(_) => Ok(()),
        }
    }

    /// How many records could not be written since the device was opened
    /// (exported as `kstash_audit_failures_total`). Always 0 when disabled.
    pub fn failures(&self) -> u64 {
        self.device
            .as_ref()
            .map_or(0, |d| d.failures.load(Ordering::Relaxed))
    }
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("target", &self.target())
            .field("failures", &self.failures())
            .finish()
    }
}

/// Reopen `log` whenever the process receives SIGHUP (logrotate's
/// `postrotate` signal). The listener is installed before this returns, so
/// a SIGHUP sent afterwards cannot kill the process. Call it from within a
/// tokio runtime. For a disabled log no listener is installed (SIGHUP keeps
/// its default action) and the returned task ends at once. A failed reopen
/// is logged; the next record retries it anyway.
pub fn reopen_on_sighup(log: Arc<AuditLog>) -> Result<tokio::task::JoinHandle<()>, AuditError> {
    use tokio::signal::unix::{signal, SignalKind};
    if !log.is_enabled() {
        return Ok(tokio::spawn(async {}));
    }
    let mut hangups = signal(SignalKind::hangup()).map_err(AuditError::Signal)?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reopening = Arc::clone(&log);
            let result = tokio::task::spawn_blocking(move || reopening.reopen()).await;
            let target = log.target().map(ToString::to_string).unwrap_or_default();
            match result {
                Ok(Ok(())) => tracing::info!(%target, "audit device reopened on SIGHUP"),
                Ok(Err(error)) => tracing::error!(
                    %error,
                    "cannot reopen the audit device on SIGHUP; the next record retries"
                ),
                Err(error) => tracing::error!(%target, %error, "the audit reopen task failed"),
            }
        }
    }))
}

fn encode(record: &AuditRecord<'_>) -> Result<Vec<u8>, AuditError> {
    let mut line = serde_json::to_vec(record).map_err(AuditError::Encode)?;
    line.push(b'\n');
    Ok(line)
}

/// Refuse metadata that is not a private, owner-writable regular file.
fn check(path: &Path, meta: &Metadata) -> Result<(), AuditError> {
    if !meta.file_type().is_file() {
        return Err(AuditError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & NOT_PRIVATE != 0 {
        return Err(AuditError::NotPrivate {
            path: path.to_path_buf(),
            mode,
        });
    }
    if mode & OWNER_WRITE == 0 {
        return Err(AuditError::ReadOnly {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Open (or create `0600`) the audit file for append, and check it.
fn open_file(path: &Path) -> Result<OpenFile, AuditError> {
    // Look before opening: opening a FIFO for writing would block, and a
    // directory gives a less helpful error.
    match fs::metadata(path) {
        Ok(meta) => check(path, &meta)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(AuditError::Stat {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        // Never block on a FIFO put there between the look and the open.
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|source| {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if source.kind() == io::ErrorKind::NotFound && parent.is_some_and(|p| !p.exists()) {
                AuditError::NoDirectory {
                    path: path.to_path_buf(),
                }
            } else {
                AuditError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| AuditError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    // A umask may have taken the owner write bit off a new file.
    check(path, &meta)?;
    Ok(OpenFile {
        id: FileId::of(&meta),
        file,
    })
}

impl FileSink {
    fn reopen(&mut self) -> Result<(), AuditError> {
        self.open = None;
        self.open = Some(open_file(&self.path)?);
        Ok(())
    }

    /// Make sure the open file is the one at the path, and that it may be
    /// written; reopen it when the path names another file or none.
    fn ready(&mut self) -> Result<&OpenFile, AuditError> {
        let at_path = match fs::metadata(&self.path) {
            Ok(meta) => {
                check(&self.path, &meta)?;
                Some(FileId::of(&meta))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(AuditError::Stat {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let open = match self.open.take() {
            Some(open) if Some(open.id) == at_path => open,
            _ => open_file(&self.path)?,
        };
        Ok(self.open.insert(open))
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        let torn = self.torn;
        let open = self.ready()?;
        let id = open.id;
        let mend = torn == Some(id);
        match write_fully(open.file.as_fd(), line, mend) {
            Ok(()) => {
                if mend {
                    self.torn = None;
                }
                Ok(())
            }
            Err((wrote_some, source)) => {
                if wrote_some {
                    self.torn = Some(id);
                }
                // Start again from the path next time.
                self.open = None;
                Err(AuditError::Write {
                    target: self.path.display().to_string(),
                    source,
                })
            }
        }
    }
}

impl StreamSink {
    fn write_line(&mut self, line: &[u8]) -> Result<(), AuditError> {
        // Hold std's stdout lock and empty its buffer so that nothing printed
        // through `std::io::stdout` lands inside an audit line.
        let mut stdout = io::stdout().lock();
        let _ = stdout.flush();
        match write_fully(self.fd.as_fd(), line, self.torn) {
            Ok(()) => {
                self.torn = false;
                Ok(())
            }
            Err((wrote_some, source)) => {
                self.torn |= wrote_some;
                Err(AuditError::Write {
                    target: "-".to_string(),
                    source,
                })
            }
        }
    }
}

/// Write all of `line` (after a `\n` when `mend` is set) with `write(2)`,
/// retrying on EINTR. On failure, also says whether some bytes went out,
/// leaving a partial line behind.
///
/// Written with rustix rather than `std::io::Stdout` because std treats a
/// closed stdout (EBADF) as a successful write, which would lose records.
fn write_fully(fd: impl AsFd, line: &[u8], mend: bool) -> Result<(), (bool, io::Error)> {
    let mended;
    let mut rest = if mend {
        mended = [b"\n".as_slice(), line].concat();
        &mended[..]
    } else {
        line
    };
    let mut wrote_some = false;
    while !rest.is_empty() {
        match rustix::io::write(fd.as_fd(), rest) {
            Ok(0) => {
                return Err((
                    wrote_some,
                    io::Error::new(io::ErrorKind::WriteZero, "the device accepted no bytes"),
                ))
            }
            Ok(n) => {
                wrote_some = true;
                rest = &rest[n..];
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err((wrote_some, errno.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn record<'a>(request_id: &'a str, path: Option<String>) -> AuditRecord<'a> {
        AuditRecord {
            time: audit_time(1_796_423_603_123),
            kind: RecordKind::Request,
            request_id,
            node_id: 1,
            remote_addr: None,
            transport: "rest",
            operation: "kv.get",
            principal: AuditPrincipal {
                kind: "anonymous",
                accessor: None,
                subject: None,
            },
            namespace: None,
            path,
            credentials: Vec::new(),
            value: None,
            status: None,
            outcome: None,
            error_code: None,
            failed_check: None,
            duration_ms: None,
        }
    }

    fn full_record(request_id: &str) -> AuditRecord<'_> {
        AuditRecord {
            time: audit_time(1_796_423_603_123),
            kind: RecordKind::Response,
            request_id,
            node_id: 3,
            remote_addr: Some("10.0.0.7:51234".to_string()),
            transport: "grpc",
            operation: "kv.put",
            principal: AuditPrincipal {
                kind: "access_token",
                accessor: Some(hmac_text([0xab; 32])),
                subject: None,
            },
            namespace: Some("team-a".to_string()),
            path: Some("db/password".to_string()),
            credentials: vec![AuditCredential {
                kind: "unseal_key",
                hmac: Some(hmac_text([1; 32])),
            }],
            value: Some(hmac_text([2; 32])),
            status: Some(403),
            outcome: Some("forbidden"),
            error_code: Some("forbidden"),
            failed_check: None,
            duration_ms: Some(1.25),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    fn ids(path: &Path) -> Vec<String> {
        lines(path)
            .iter()
            .map(|v| v["request_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn keys(value: &serde_json::Value) -> BTreeSet<&str> {
        value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn file_log(path: &Path) -> AuditLog {
        AuditLog::open(AuditTarget::File(path.to_path_buf())).unwrap()
    }

    #[test]
    fn parse_reads_dash_as_stdout() {
        assert_eq!(AuditTarget::parse("-"), AuditTarget::Stdout);
        assert_eq!(
            AuditTarget::parse("/var/log/kstash/audit.log"),
            AuditTarget::File(PathBuf::from("/var/log/kstash/audit.log"))
        );
        assert_eq!(AuditTarget::Stdout.to_string(), "-");
    }

    #[test]
    fn hmac_text_is_prefixed_lowercase_hex() {
        let mut tag = [0u8; 32];
        tag[0] = 0xAB;
        tag[31] = 0x0F;
        let text = hmac_text(tag);
        assert_eq!(text.len(), HMAC_PREFIX.len() + 64);
        assert!(text.starts_with("hmac-sha256:ab00"), "{text}");
        assert!(text.ends_with("000f"), "{text}");
    }

    #[test]
    fn audit_time_has_milliseconds() {
        assert_eq!(audit_time(1_796_423_603_123), "2026-12-04T22:33:23.123Z");
    }

    #[test]
    fn a_record_is_one_json_line_with_the_documented_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = file_log(&path);
        log.record(&full_record("r1")).unwrap();
        log.record(&record("r2", None)).unwrap();

        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches('\n').count(), 2, "{text}");
        let lines = lines(&path);
        let full = BTreeSet::from([
            "time",
            "type",
            "request_id",
            "node_id",
            "remote_addr",
            "transport",
            "operation",
            "principal",
            "namespace",
            "path",
            "credentials",
            "value",
            "status",
            "outcome",
            "error_code",
            "duration_ms",
        ]);
        assert_eq!(keys(&lines[0]), full);
        assert_eq!(lines[0]["type"], "response");
        assert_eq!(lines[0]["time"], "2026-12-04T22:33:23.123Z");
        assert_eq!(
            keys(&lines[0]["principal"]),
            BTreeSet::from(["kind", "accessor"])
        );
        assert_eq!(
            keys(&lines[0]["credentials"][0]),
            BTreeSet::from(["kind", "hmac"])
        );
        assert_eq!(lines[0]["duration_ms"], 1.25);

        // None and empty fields are left out.
        let minimal = BTreeSet::from([
            "time",
            "type",
            "request_id",
            "node_id",
            "transport",
            "operation",
            "principal",
        ]);
        assert_eq!(keys(&lines[1]), minimal);
        assert_eq!(lines[1]["type"], "request");
        assert_eq!(keys(&lines[1]["principal"]), BTreeSet::from(["kind"]));
    }

    #[test]
    fn a_new_file_is_created_0600_and_an_existing_one_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        file_log(&path).record(&record("r1", None)).unwrap();
        assert_eq!(mode(&path), 0o600);
        file_log(&path).record(&record("r2", None)).unwrap();
        assert_eq!(ids(&path), ["r1", "r2"]);
    }

    #[test]
    fn an_existing_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for bad in [0o644, 0o640, 0o602] {
            fs::write(&path, "").unwrap();
            chmod(&path, bad);
            let err = AuditLog::open(AuditTarget::File(path.clone())).unwrap_err();
            assert!(matches!(err, AuditError::NotPrivate { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
            assert_eq!(mode(&path), bad, "the file is left as it was");
        }
    }

    #[test]
    fn open_names_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/audit.log");
        let err = AuditLog::open(AuditTarget::File(path.clone())).unwrap_err();
        assert!(matches!(err, AuditError::NoDirectory { .. }), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = AuditLog::open(AuditTarget::parse("")).unwrap_err();
        assert!(matches!(err, AuditError::EmptyPath), "{err}");
    }

    #[test]
    fn lines_from_eight_threads_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Arc::new(file_log(&path));
        // Lines longer than a pipe's atomic write size, with a payload that
        // differs per thread, so any interleaving breaks the JSON.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let body = char::from(b'a' + t).to_string().repeat(6000);
                    for i in 0..100 {
                        let id = format!("{t}-{i}");
                        log.record(&record(&id, Some(body.clone()))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let lines = lines(&path);
        assert_eq!(lines.len(), 800);
        let mut seen = BTreeSet::new();
        for line in &lines {
            let id = line["request_id"].as_str().unwrap();
            let t = id.split('-').next().unwrap().parse::<u8>().unwrap();
            let body = line["path"].as_str().unwrap();
            assert!(body.len() == 6000 && body.bytes().all(|b| b == b'a' + t));
            assert!(seen.insert(id.to_string()), "{id} twice");
        }
        assert_eq!(log.failures(), 0);
    }

    #[test]
    fn a_read_only_file_fails_until_it_is_writable_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = file_log(&path);
        log.record(&record("r1", None)).unwrap();

        chmod(&path, 0o400);
        let err = log.record(&record("lost", None)).unwrap_err();
        assert!(
            matches!(err, AuditError::ReadOnly { mode: 0o400, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert_eq!(log.failures(), 1);

        chmod(&path, 0o600);
        log.record(&record("r2", None)).unwrap();
        assert_eq!(ids(&path), ["r1", "r2"]);
        assert_eq!(log.failures(), 1);
    }

    #[test]
    fn a_directory_at_the_path_fails_until_a_file_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let moved = dir.path().join("audit.log.moved");
        let log = file_log(&path);
        log.record(&record("r1", None)).unwrap();

        fs::rename(&path, &moved).unwrap();
        fs::create_dir(&path).unwrap();
        let err = log.record(&record("lost", None)).unwrap_err();
        assert!(matches!(err, AuditError::NotRegularFile { .. }), "{err}");
        assert_eq!(log.failures(), 1);

        fs::remove_dir(&path).unwrap();
        fs::rename(&moved, &path).unwrap();
        log.record(&record("r2", None)).unwrap();
        assert_eq!(ids(&path), ["r1", "r2"]);
    }

    #[test]
    fn reopen_after_rotation_starts_a_new_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let log = file_log(&path);
        log.record(&record("old", None)).unwrap();

        fs::rename(&path, &rotated).unwrap();
        log.reopen().unwrap();
        assert_eq!(mode(&path), 0o600, "reopen creates the new file at once");
        log.record(&record("new", None)).unwrap();

        assert_eq!(ids(&rotated), ["old"]);
        assert_eq!(ids(&path), ["new"]);
    }

    #[test]
    fn rotation_without_reopen_is_noticed_by_the_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = file_log(&path);
        log.record(&record("first", None)).unwrap();

        // Moved away and nothing at the path: a new file is created.
        fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        log.record(&record("second", None)).unwrap();
        assert_eq!(mode(&path), 0o600);

        // Moved away and another file put in its place (logrotate `create`).
        fs::rename(&path, dir.path().join("audit.log.2")).unwrap();
        fs::write(&path, "").unwrap();
        chmod(&path, 0o600);
        log.record(&record("third", None)).unwrap();

        assert_eq!(ids(&dir.path().join("audit.log.1")), ["first"]);
        assert_eq!(ids(&dir.path().join("audit.log.2")), ["second"]);
        assert_eq!(ids(&path), ["third"]);
        assert_eq!(log.failures(), 0);
    }

    #[test]
    fn disabled_never_fails_and_writes_nothing() {
        let log = AuditLog::disabled();
        assert!(!log.is_enabled());
        assert_eq!(log.target(), None);
        log.record(&full_record("r1")).unwrap();
        log.reopen().unwrap();
        assert_eq!(log.failures(), 0);
    }

    fn stream_log(fd: OwnedFd) -> AuditLog {
        AuditLog::with_sink(
            AuditTarget::Stdout,
            Sink::Stream(StreamSink { fd, torn: false }),
        )
    }

    #[test]
    fn a_stream_write_error_is_a_failure() {
        let (mut reader, writer) = io::pipe().unwrap();
        let log = stream_log(writer.into());
        log.record(&record("r1", None)).unwrap();
        let mut line = vec![0u8; 4096];
        let n = reader.read(&mut line).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&line[..n]).unwrap();
        assert_eq!(value["request_id"], "r1");

        // The reader is gone: EPIPE (the test harness, like kstash, ignores SIGPIPE).
        drop(reader);
        let err = log.record(&record("lost", None)).unwrap_err();
        assert!(matches!(err, AuditError::Write { .. }), "{err}");
        assert_eq!(log.failures(), 1);
    }

    #[test]
    fn a_partial_line_does_not_spoil_the_next_one() {
        let (mut reader, writer) = io::pipe().unwrap();
        let flags = rustix::fs::fcntl_getfl(&writer).unwrap();
        rustix::fs::fcntl_setfl(&writer, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        let log = stream_log(writer.into());

        // Larger than the pipe buffer: part goes out, then EAGAIN.
        let big = "x".repeat(1 << 20);
        let err = log.record(&record("torn", Some(big))).unwrap_err();
        assert!(matches!(err, AuditError::Write { .. }), "{err}");

        // Drain what went out: one read takes all a pipe holds (at most 64 KiB).
        let mut buf = vec![0u8; 1 << 20];
        let n = reader.read(&mut buf).unwrap();
        let mut out = buf[..n].to_vec();
        assert!(0 < n && n < 1 << 20 && !out.ends_with(b"\n"), "{n}");

        log.record(&record("r2", None)).unwrap();
        let n = reader.read(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8(out).unwrap();
        let last = text.lines().last().unwrap();
        let value: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!(value["request_id"], "r2");
    }

    #[tokio::test]
    async fn sighup_reopens_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Arc::new(file_log(&path));
        log.record(&record("old", None)).unwrap();
        fs::rename(&path, dir.path().join("audit.log.1")).unwrap();

        // The listener is installed before reopen_on_sighup returns, so
        // raising SIGHUP at this process is safe from here on.
        let task = reopen_on_sighup(Arc::clone(&log)).unwrap();
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP)
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGHUP did not reopen the audit file"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(mode(&path), 0o600);
        task.abort();
    }
}
