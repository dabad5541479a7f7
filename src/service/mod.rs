//! The service layer: every operation of kstash, shared by REST and gRPC.
//!
//! Each operation runs the guard first (sealed? credentials? ACL?), then
//! builds a command (encrypting through the barrier where a secret is
//! involved) and proposes it. Reads check the guard and decrypt.
//! Invariants: while sealed, only status and unseal answer; once removed
//! from the cluster, only status and the membership view; every error
//! message is free of secrets; a failed call changes nothing.

pub mod admin;
mod audit;
mod auth;
mod cluster;
mod encryption;
mod error;
pub mod figures;
mod housekeeping;
mod kubernetes;
mod kv;
mod named_keys;
mod policy;
mod sys;
pub mod types;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use crate::raft::OutcomeUnknown;
pub use error::{LoginRefusal, ServiceError};
pub use named_keys::{Decrypted, KeyUser};

pub use crate::state::listing::MAX_LIST;

use crate::acl::{Acl, Denial};
use crate::auth::kubernetes::KubernetesAuth;
use crate::barrier::{self, Barrier};
use crate::clock::Clock;
use crate::gatekeeper::shamir;
use crate::keyspace::AccessTokenRecord;
use crate::raft::replica::Replica;
use crate::state::command::{Actor, Command};

use crate::state::command::Idempotency;
use crate::state::State;

/// Most gatekeeper tokens one call may mint.
pub const MAX_MINT: u32 = 16;
/// Most policies one access token may carry.
pub const MAX_TOKEN_POLICIES: usize = 32;

/// Limits and lifetimes of the service layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest secret value in bytes.
    pub max_value_bytes: usize,
    /// Lifetime of an access token when login gives none.
    pub default_token_ttl: Duration,
    /// Longest lifetime of an access token, renewals included.
    pub max_token_ttl: Duration,
    /// How long a used gatekeeper token keeps working.
    pub gatekeeper_grace: Duration,
    /// How long unseal progress is kept without a new key.
    pub unseal_timeout: Duration,
    /// Encryptions per key term before a forced rotation.
    pub encryption_limit: u64,
    /// This node's id.
    pub node_id: u64,
    /// This node's client address, for status.
    pub api_address: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_value_bytes: 1 << 20,
            default_token_ttl: Duration::from_secs(3600),
            max_token_ttl: Duration::from_secs(32 * 24 * 3600),
            gatekeeper_grace: Duration::from_secs(60),
            unseal_timeout: Duration::from_secs(600),
            encryption_limit: barrier::DEFAULT_ENCRYPTION_LIMIT,
            node_id: 1,
            api_address: String::new(),
        }
    }
}

/// Unseal keys given so far, kept on this node only.
struct Progress {
    keys: Vec<shamir::UnsealKey>,
    /// When the last key was accepted; progress expires this long after it.
    last_key_ms: u64,
}

/// An access token the front door (`guard::Door`) authenticated: live at the time of the
/// check, with its record and the ACL of its policies.
pub struct TokenHolder {
    /// The token's id: the SHA-256 of the token, as the store keys it.
    pub id: [u8; 32],
    /// The token's record (namespace, policies, lifetimes).
    pub record: AccessTokenRecord,
    /// The union of the token's policies, in its namespace.
    pub acl: Acl,
}

impl std::fmt::Debug for TokenHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenHolder({}…, {})",
            hex::encode(&self.id[..4]),
            self.record.namespace
        )
    }
}

impl TokenHolder {
    /// The reference a replicated command carries, so apply authorizes it
    /// again against the token state in the log (DESIGN invariant 5).
    pub fn actor(&self) -> Actor {
        Actor::AccessToken { id: self.id }
    }

    /// The refusal of `action` on `path` in `namespace` to this token: the
    /// one wording of permission errors ([`Denial`]).
    pub fn denial(&self, action: &str, namespace: &str, path: &str) -> Denial {
        Denial::new(
            action,
            namespace,
            path,
            &self.record.namespace,
            &self.record.policies,
        )
    }
}

/// The log's form of `holder`'s idempotency key for a request of `kind` on
/// `target` (every part of what the request does: path, CAS, the value
/// itself, policy rules). The id is a hash scoped to the holder's token;
/// the fingerprint is a keyed digest of the id and the request
/// ([`Barrier::keyed_digest`]), so the log never holds a plain hash of a
/// secret value that a guess could be checked against.
fn idempotency(
    holder: &TokenHolder,
    barrier: &Barrier,
    key: Option<&types::IdempotencyKey>,
    kind: &str,
    target: &[&[u8]],
) -> Result<Option<Idempotency>, ServiceError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let mut id = Sha256::new();
    id.update(b"kstash idempotency id v1\0");
    id.update(holder.id);
    id.update(key.as_str().as_bytes());
    let id: [u8; 32] = id.finalize().into();
    let parts: Vec<&[u8]> = [&id[..], kind.as_bytes(), holder.record.namespace.as_bytes()]
        .into_iter()
        .chain(target.iter().copied())
        .collect();
    let fingerprint = barrier.keyed_digest(b"kstash idempotency request v2", &parts)?;
    Ok(Some(Idempotency { id, fingerprint }))
}

/// One kstash node's services.
pub struct Node {
    raft: Arc<Replica>,
    barrier: Barrier,
    clock: Arc<dyn Clock>,
    settings: Settings,
    progress: Mutex<Option<Progress>>,
    /// Serialises keychain changes (rotation, rekey).
    keychain_lock: tokio::sync::Mutex<()>,
    /// Serialises reservations of encryptions (one block at a time).
    reserve_lock: tokio::sync::Mutex<()>,
    /// Checks Kubernetes ServiceAccount tokens (login); disabled unless
    /// configured.
    kubernetes: Arc<KubernetesAuth>,
    /// Encryptions this node reserved under named key versions.
    key_blocks: crate::keys::KeyBlocks,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({:?}, {:?})", self.raft, self.barrier)
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Node {
    /// This node checks Kubernetes ServiceAccount tokens with `auth`
    /// (before the node is shared).
    pub fn with_kubernetes(mut self, auth: Arc<KubernetesAuth>) -> Self {
        self.kubernetes = auth;
        self
    }

    /// A sealed node over `raft`.
    pub fn new(raft: Arc<Replica>, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        Node {
            barrier: Barrier::new(settings.encryption_limit),
            raft,
            clock,
            settings,
            progress: Mutex::new(None),
            kubernetes: Arc::new(KubernetesAuth::disabled()),
            keychain_lock: tokio::sync::Mutex::new(()),
            reserve_lock: tokio::sync::Mutex::new(()),
            key_blocks: crate::keys::KeyBlocks::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn sm(&self) -> &State {
        self.raft.state()
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether the barrier is sealed.
    pub fn is_sealed(&self) -> bool {
        self.barrier.is_sealed()
    }

    /// The error every client request gets once this node was removed from
    /// the cluster (it names the removal and the fix).
    pub fn removed(&self) -> Option<ServiceError> {
        self.raft
            .removal()
            .map(|r| ServiceError::Removed(r.to_string()))
    }

    /// Wait until this node's state reflects every acknowledged write.
    async fn linearize(&self) -> Result<(), ServiceError> {
        self.raft.linearize().await.map_err(ServiceError::from)
    }

    /// The clock's reading, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.now()
    }

    /// HMAC-SHA256 of `value` under the cluster's audit key, or `None`
    /// while sealed (the key lives in the barrier).
    pub fn audit_hmac(&self, value: &[u8]) -> Option<[u8; 32]> {
        self.barrier.audit_hmac(value).ok()
    }

    /// Check that `caller` administers `namespace`: a token of that
    /// namespace with the admin policy, which is what managing its policies
    /// and its Kubernetes roles takes. `action` and `target` word the
    /// refusal ([`Denial`]).
    fn namespace_admin(
        caller: &TokenHolder,
        namespace: &str,
        action: &str,
        target: &str,
    ) -> Result<(), ServiceError> {
        crate::acl::path::validate_namespace(namespace)?;
        if caller.record.namespace != namespace || !caller.acl.is_admin() {
            return Err(ServiceError::Forbidden(
                caller.denial(action, namespace, target),
            ));
        }
        Ok(())
    }

    /// Propose the delete `command`; when apply refuses it because its
    /// target does not exist, the answer is `missing` (a 404 naming it).
    async fn propose_delete(
        &self,
        command: Command,
        idempotency: Option<Idempotency>,
        missing: impl FnOnce() -> ServiceError,
    ) -> Result<(), ServiceError> {
        match self.raft.propose_with(command, idempotency).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match ServiceError::from(e) {
                ServiceError::NotFound(_) => missing(),
                other => other,
            }),
        }
    }

    /// What a login tells about the policies of the token it minted: one
    /// warning per policy that does not exist in `namespace` yet (the
    /// token gets it once an admin writes it).
    fn missing_policy_warnings(&self, namespace: &str, policies: &[String]) -> Vec<String> {
        policies
            .iter()
            .filter(|p| !crate::acl::is_builtin(p))
            .filter(|p| matches!(self.sm().policy(namespace, p), Ok(None)))
            .map(|p| format!("policy {p} does not exist in namespace {namespace} yet"))
            .collect()
    }
}
