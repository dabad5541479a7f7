//! The one front door: every operation from REST and gRPC (and later the
//! plugin sockets) passes [`Door::run`], which
//!
//! 1. **authenticates**: who is the [`Principal`]? A bearer access token is
//!    looked up (live, in its namespace, with its ACL); a credential in the
//!    body (access key, gatekeeper token, unseal keys) names the principal's
//!    kind and is proven by the operation that consumes it; no credential is
//!    [`Principal::Anonymous`];
//! 2. **records the request** in the audit log, before anything runs: when
//!    audit is on and no record can be written, the call is refused with 503
//!    `audit_failed` and nothing is proposed (fail closed);
//! 3. **runs** the operation, which **authorizes** first (the ACL of the
//!    token's policies in its namespace, `admin` for policies, the proof of
//!    a presented credential) and then does its work; a replicated command
//!    carries the principal's reference, and apply authorizes it again
//!    (DESIGN invariant 5);
//! 4. **records the response** (outcome, error code, duration) and counts it
//!    in the operation metrics.
//!
//! Invariants: no secret reaches a record. A secret the caller presented
//! appears only as `hmac-sha256:<hex>` under the cluster's audit key, which
//! lives in the barrier (so every node writes the same HMAC for the same
//! secret, and nothing is HMAC'd while the node is sealed); values are
//! HMAC'd only with `audit_hmac_values`, otherwise left out. Every operation
//! name and outcome comes from a fixed set.

pub mod audit;
pub mod metrics;
mod operation;
pub mod principal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use operation::Operation;
pub use principal::{Principal, TokenHolder};

use audit::{AuditCredential, AuditLog, AuditPrincipal, AuditRecord, RecordKind};
use metrics::OperationMetrics;

use crate::secret::SecretString;
use crate::service::types::{Consistency, GatekeeperAuth};
use crate::service::{Node, ServiceError};

/// The front end a call came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// REST/JSON.
    Rest,
    /// gRPC.
    Grpc,
    /// The node's KMS v2 socket (gRPC over a Unix socket).
    KmsSocket,
}

impl Transport {
    /// The name in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Rest => "rest",
            Transport::Grpc => "grpc",
            Transport::KmsSocket => "kms_socket",
        }
    }
}

/// What a front end knows of a call before it is decoded: its request id
/// (also sent back as `x-request-id`) and the peer's address.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// 128 random bits in hex, made by the node for each request.
    pub request_id: String,
    /// The TCP peer, when the listener knows it.
    pub remote: Option<SocketAddr>,
}

impl CallContext {
    /// A context with a fresh request id.
    pub fn new(remote: Option<SocketAddr>) -> Self {
        CallContext {
            request_id: hex::encode(crate::secret::random_bytes::<16>()),
            remote,
        }
    }
}

/// A secret a caller presents in the body of a call, which the operation
/// proves (or refuses).
#[derive(Clone, Copy)]
pub enum Presented<'a> {
    /// The access key (login).
    AccessKey(&'a SecretString),
    /// A gatekeeper token.
    GatekeeperToken(&'a SecretString),
    /// One unseal key.
    UnsealKey(&'a SecretString),
    /// An access token given in a body (revoke another token).
    AccessToken(&'a SecretString),
    /// A Kubernetes ServiceAccount token (a JWT) presented to log in.
    ServiceAccountToken(&'a SecretString),
}

impl Presented<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Presented::AccessKey(_) => "access_key",
            Presented::GatekeeperToken(_) => "gatekeeper_token",
            Presented::UnsealKey(_) => "unseal_key",
            Presented::AccessToken(_) => "access_token",
            Presented::ServiceAccountToken(_) => "service_account_token",
        }
    }

    fn secret(&self) -> &SecretString {
        match self {
            Presented::AccessKey(s)
            | Presented::GatekeeperToken(s)
            | Presented::UnsealKey(s)
            | Presented::AccessToken(s)
            | Presented::ServiceAccountToken(s) => s,
        }
    }
}

impl<'a> Presented<'a> {
    /// The secrets of a [`GatekeeperAuth`]: the gatekeeper token, then each
    /// unseal key.
    pub fn gatekeeper_auth(auth: &'a GatekeeperAuth) -> Vec<Presented<'a>> {
        auth.gatekeeper_token
            .iter()
            .map(Presented::GatekeeperToken)
            .chain(Presented::unseal_keys(&auth.keys))
            .collect()
    }

    /// Each of `keys`, as unseal keys.
    pub fn unseal_keys(keys: &'a [SecretString]) -> impl Iterator<Item = Presented<'a>> {
        keys.iter().map(Presented::UnsealKey)
    }
}

/// What a call must prove before it runs.
enum Authentication<'a> {
    /// Nothing: the operation needs no credential, or checks what it is
    /// given itself.
    Nothing,
    /// A live access token. `consistency`: `Linearizable` checks it
    /// against a state that reflects every acknowledged write (a read);
    /// `Stale` against this node's state, catching up once when the token
    /// is unknown here (a write, which apply checks again).
    Bearer {
        token: Option<&'a SecretString>,
        consistency: Consistency,
    },
    /// The peer of the node's KMS socket, which may use one named key.
    KmsSocket { namespace: &'a str, key: &'a str },
}

/// One call at the door: the operation, where it came from, what it
/// presents and what it touches.
pub struct Call<'a> {
    operation: Operation,
    transport: Transport,
    context: &'a CallContext,
    authentication: Authentication<'a>,
    presented: Vec<Presented<'a>>,
    namespace: Option<&'a str>,
    path: Option<&'a str>,
    value: Option<&'a [u8]>,
}

impl<'a> Call<'a> {
    /// A call of `operation` that presents nothing (yet).
    pub fn new(operation: Operation, transport: Transport, context: &'a CallContext) -> Self {
        Call {
            operation,
            transport,
            context,
            authentication: Authentication::Nothing,
            presented: Vec::new(),
            namespace: None,
            path: None,
            value: None,
        }
    }

    /// The call needs a live access token (`token`: from the header or
    /// metadata, if any), checked as of `consistency`.
    pub fn bearer(mut self, token: Option<&'a SecretString>, consistency: Consistency) -> Self {
        self.authentication = Authentication::Bearer { token, consistency };
        self
    }

    /// The call comes from the node's KMS socket, served for the named key
    /// `namespace/key`: its principal is [`Principal::KmsSocket`].
    pub fn kms_socket(mut self, namespace: &'a str, key: &'a str) -> Self {
        self.authentication = Authentication::KmsSocket { namespace, key };
        self.namespace = Some(namespace);
        self
    }

    /// The call presents `secrets` in its body.
    pub fn presenting(mut self, secrets: impl IntoIterator<Item = Presented<'a>>) -> Self {
        self.presented.extend(secrets);
        self
    }

    /// The namespace the call names (a policy's, a login's).
    pub fn namespace(mut self, namespace: &'a str) -> Self {
        self.namespace = Some(namespace);
        self
    }

    /// The path the call touches, as the caller gave it.
    pub fn path(mut self, path: &'a str) -> Self {
        self.path = Some(path);
        self
    }

    /// The secret value the call writes (HMAC'd in the record only with
    /// `audit_hmac_values`).
    pub fn value(mut self, value: &'a [u8]) -> Self {
        self.value = Some(value);
        self
    }
}

/// The principal's kind for a call that authenticates nothing itself: the
/// first credential it presents, else anonymous.
fn presented_principal(presented: &[Presented<'_>]) -> Principal {
    match presented.first() {
        Some(Presented::AccessKey(_)) => Principal::AccessKey,
        Some(Presented::GatekeeperToken(_)) => Principal::GatekeeperToken,
        Some(Presented::UnsealKey(_)) => Principal::UnsealKeys,
        Some(Presented::ServiceAccountToken(_)) => Principal::ServiceAccountToken,
        Some(Presented::AccessToken(_)) | None => Principal::Anonymous,
    }
}

/// The longest path a record keeps, in characters (a caller's path is
/// bounded by the request line, but a record need not carry all of it).
const MAX_RECORDED_PATH: usize = 1024;

/// What the door keeps of an admitted call until its response is recorded.
struct Ticket {
    operation: Operation,
    transport: Transport,
    request_id: String,
    remote: Option<String>,
    principal: &'static str,
    accessor: Option<String>,
    /// Who the principal proved to be, once the operation knows (a
    /// ServiceAccount login's `system:serviceaccount:<ns>:<name>`).
    subject: Option<String>,
    namespace: Option<String>,
    path: Option<String>,
    started: Instant,
}

/// A call the door let in: its principal, until [`Admitted::finish`]
/// records the outcome. Dropped unfinished (the client went away and the
/// call was cancelled), it records the outcome `cancelled`.
#[must_use = "finish the call so its response is recorded"]
pub struct Admitted {
    door: Arc<Door>,
    principal: Principal,
    ticket: Option<Ticket>,
}

impl Admitted {
    /// Who calls.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The authenticated access token; a call admitted with
    /// [`Call::bearer`] always has one.
    pub fn holder(&self) -> Result<&TokenHolder, ServiceError> {
        self.principal
            .token_holder()
            .ok_or_else(|| ServiceError::Unauthorized("missing access token".into()))
    }

    /// Name who the principal proved to be (`subject`, e.g. a verified
    /// ServiceAccount), for the response record. Only an operation that
    /// verified it calls this; a refused login's subject comes with its
    /// error ([`ServiceError::refused_subject`]).
    pub fn identify(&mut self, subject: String) {
        if let Some(ticket) = self.ticket.as_mut() {
            ticket.subject = Some(subject.chars().take(MAX_RECORDED_PATH).collect());
        }
    }

    /// Record the outcome of the call (step 4) and hand it back.
    pub fn finish<T>(mut self, result: Result<T, ServiceError>) -> Result<T, ServiceError> {
        if let Some(ticket) = self.ticket.take() {
            self.door.leave(ticket, Outcome::of(result.as_ref().err()));
        }
        result
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.door.leave(ticket, Outcome::Cancelled);
        }
    }
}

/// How a call ended, as records and metrics name it.
enum Outcome<'e> {
    Ok,
    Failed(&'e ServiceError),
    /// The caller went away before the answer; the operation may or may
    /// not have completed.
    Cancelled,
}

impl<'e> Outcome<'e> {
    fn of(error: Option<&'e ServiceError>) -> Self {
        error.map_or(Outcome::Ok, Outcome::Failed)
    }

    fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => metrics::OK,
            Outcome::Failed(e) => e.code(),
            Outcome::Cancelled => metrics::CANCELLED,
        }
    }
}

/// The front door of one node: authentication, the audit log and the
/// operation metrics around every operation of [`Node`].
pub struct Door {
    node: Arc<Node>,
    audit: Arc<AuditLog>,
    metrics: OperationMetrics,
    hmac_values: bool,
    status_of: fn(&ServiceError) -> u16,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Door({:?}, audit: {})",
            self.node,
            self.audit.is_enabled()
        )
    }
}

impl Door {
    /// The door of `node`: records go to `audit`, counts to `metrics`;
    /// `hmac_values`: records carry the HMAC of a written value (else no
    /// trace of it); `status_of` is the API's one mapping of an error to its
    /// HTTP status (recorded as `status`; a gRPC call records the HTTP
    /// status of the same outcome).
    pub fn new(
        node: Arc<Node>,
        audit: Arc<AuditLog>,
        metrics: OperationMetrics,
        hmac_values: bool,
        status_of: fn(&ServiceError) -> u16,
    ) -> Self {
        Door {
            node,
            audit,
            metrics,
            hmac_values,
            status_of,
        }
    }

    /// The node behind the door.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The audit device.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The operation metrics.
    pub fn metrics(&self) -> &OperationMetrics {
        &self.metrics
    }

    /// Run `op` for `call`: [`Door::admit`], then `op`, then
    /// [`Admitted::finish`]; for operations that do not need to know who
    /// calls (`op` is lazy: it starts only once the call is admitted). An
    /// operation that needs the principal, or consumes a request that
    /// `call` borrows, admits and finishes by hand.
    pub async fn run<T>(
        self: &Arc<Self>,
        call: Call<'_>,
        op: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let admitted = self.admit(call).await?;
        let result = op.await;
        admitted.finish(result)
    }

    /// Steps 1 and 2: authenticate, and record the request. Refused (and
    /// recorded, when audit can) when authentication fails; refused with
    /// `audit_failed` when audit is on and the request cannot be recorded.
    pub async fn admit(self: &Arc<Self>, call: Call<'_>) -> Result<Admitted, ServiceError> {
        let started = Instant::now();
        let audited = call.operation.audited() && self.audit.is_enabled();
        let hmac = |s: &[u8]| -> Option<String> {
            if audited {
                self.node.audit_hmac(s).map(audit::hmac_text)
            } else {
                None
            }
        };
        let (authenticated, accessor) = match &call.authentication {
            Authentication::Nothing => (
                Ok(presented_principal(&call.presented)),
                call.presented
                    .first()
                    .and_then(|p| hmac(p.secret().expose().as_bytes())),
            ),
            Authentication::Bearer { token, consistency } => (
                self.node
                    .authenticate(*token, *consistency)
                    .await
                    .map(Principal::AccessToken),
                token.and_then(|t| hmac(t.expose().as_bytes())),
            ),
            Authentication::KmsSocket { namespace, key } => (
                Ok(Principal::KmsSocket {
                    namespace: (*namespace).to_string(),
                    key: (*key).to_string(),
                }),
                None,
            ),
        };
        let kind = match &authenticated {
            Ok(p) => p.kind(),
            Err(_) => "access_token",
        };
        let namespace = call
            .namespace
            .map(str::to_string)
            .or_else(|| authenticated.as_ref().ok()?.namespace().map(str::to_string));
        let ticket = Ticket {
            operation: call.operation,
            transport: call.transport,
            request_id: call.context.request_id.clone(),
            remote: call.context.remote.map(|a| a.to_string()),
            principal: kind,
            accessor,
            subject: None,
            namespace,
            path: call
                .path
                .map(|p| p.chars().take(MAX_RECORDED_PATH).collect()),
            started,
        };
        if audited {
            let credentials = call
                .presented
                .iter()
                .skip(1)
                .map(|p| AuditCredential {
                    kind: p.kind(),
                    hmac: hmac(p.secret().expose().as_bytes()),
                })
                .collect();
            let value = if self.hmac_values {
                call.value.and_then(hmac)
            } else {
                None
            };
            let mut record = self.record(&ticket, RecordKind::Request);
            record.credentials = credentials;
            record.value = value;
            if let Err(e) = self.audit.record(&record) {
                tracing::error!(
                    request_id = %ticket.request_id,
                    operation = ticket.operation.name(),
                    error = %e,
                    "the audit log cannot record a request: refused"
                );
                self.metrics.audit_failed();
                let refusal = ServiceError::AuditFailed;
                self.count(&ticket, &Outcome::Failed(&refusal));
                return Err(refusal);
            }
        }
        match authenticated {
            Ok(principal) => Ok(Admitted {
                door: self.clone(),
                principal,
                ticket: Some(ticket),
            }),
            Err(e) => {
                self.leave(ticket, Outcome::Failed(&e));
                Err(e)
            }
        }
    }

    /// Step 4: the response's record and the metrics.
    fn leave(&self, ticket: Ticket, outcome: Outcome<'_>) {
        if ticket.operation.audited() && self.audit.is_enabled() {
            let mut record = self.record(&ticket, RecordKind::Response);
            record.status = match &outcome {
                Outcome::Ok => Some(200),
                Outcome::Failed(e) => Some((self.status_of)(e)),
                Outcome::Cancelled => None,
            };
            record.outcome = Some(outcome.name());
            if let Outcome::Failed(e) = &outcome {
                record.error_code = Some(e.code());
                record.failed_check = e.failed_check();
                if let Some(subject) = e.refused_subject() {
                    record.principal.subject =
                        Some(subject.chars().take(MAX_RECORDED_PATH).collect());
                }
            }
            record.duration_ms = Some(ticket.started.elapsed().as_secs_f64() * 1000.0);
            if let Err(e) = self.audit.record(&record) {
                self.metrics.audit_failed();
                // The operation has run: its answer stands (a client told
                // "failed" might repeat a write that happened). The failure
                // is counted by the device, and the next request is refused
                // while it cannot write.
                tracing::error!(
                    request_id = %ticket.request_id,
                    operation = ticket.operation.name(),
                    error = %e,
                    "the audit log cannot record a response"
                );
            }
        }
        self.count(&ticket, &outcome);
    }

    fn count(&self, ticket: &Ticket, outcome: &Outcome<'_>) {
        if let Some(check) = match outcome {
            Outcome::Failed(e) => e.failed_check(),
            _ => None,
        } {
            self.metrics.login_refused(check);
        }
        self.metrics.observe(
            ticket.operation.name(),
            outcome.name(),
            ticket.started.elapsed(),
        );
    }

    /// The fields every record of `ticket` shares.
    fn record<'t>(&self, ticket: &'t Ticket, kind: RecordKind) -> AuditRecord<'t> {
        AuditRecord {
            time: audit::audit_time(self.node.now_ms()),
            kind,
            request_id: &ticket.request_id,
            node_id: self.node.settings().node_id,
            remote_addr: ticket.remote.clone(),
            transport: ticket.transport.name(),
            operation: ticket.operation.name(),
            principal: AuditPrincipal {
                kind: ticket.principal,
                accessor: ticket.accessor.clone(),
                subject: ticket.subject.clone(),
            },
            namespace: ticket.namespace.clone(),
            path: ticket.path.clone(),
            credentials: Vec::new(),
            value: None,
            status: None,
            outcome: None,
            error_code: None,
            failed_check: None,
            duration_ms: None,
        }
    }
}
