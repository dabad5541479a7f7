//! The kstash domain state machine: applies log entries to a storage
//! backend. `src/raft/` replicates the entries; this module decides what
//! they mean.
//!
//! Invariant: `apply` is a deterministic function of (stored state, entry):
//! time comes from the entry, never the clock; nothing random; a rejected
//! command changes nothing; each command is one atomic backend batch.
//! Authorization is checked again here against the token state at the entry's
//! time, so a write never applies under a token revoked or expired before it.
//! Architecture invariant: this file never imports the barrier; it moves
//! ciphertext it cannot read.

pub mod command;
pub mod listing;

use std::sync::Arc;

use thiserror::Error;

use crate::acl::{self, Acl, Capability, Denial, Policy};
use crate::auth::kubernetes::role;
use crate::keyspace::{self, *};
use crate::storage::{Backend, BatchOp, StorageError};
use command::{
    Actor, Applied, Command, FirstUse, GatekeeperOperation, NewGatekeeperToken, Rejection, Request,
    Response, IDEMPOTENCY_WINDOW_MS,
};
use listing::{list_level, resume_after, NamePage};

/// Most gatekeeper-token records that may exist at once, unused or used and
/// inside their grace window (a used token still unseals during its window,
/// so it counts). Keeps a rekey's batch small. Minting counts unused tokens
/// only: used ones give way, oldest first.
pub const MAX_GATEKEEPER_TOKENS: usize = 64;

/// How a refusal names managing a named encryption key (admin only).
pub const NAMED_KEY_ACTION: &str = "manage keys";
/// The principal a command acts for, as apply checked it: its ACL, its
/// namespace and its policy names (for the wording of a refusal).
struct Acting {
    acl: Acl,
    namespace: String,
    policies: Vec<String>,
}

impl Acting {
    /// The refusal of `action` on `path` in this token's namespace.
    fn denial(&self, action: &str, path: &str) -> ApplyError {
        ApplyError::Forbidden(Denial::new(
            action,
            &self.namespace,
            path,
            &self.namespace,
            &self.policies,
        ))
    }
}

/// Allow `action` on `path` if the ACL of the token the command acts for
/// passes `check`. No token (a command that acts for none) is refused: fail
/// closed.
fn permit(
    acting: &Option<Acting>,
    action: &str,
    path: &str,
    check: impl FnOnce(&Acl) -> bool,
) -> Result<(), ApplyError> {
    match acting {
        Some(a) if check(&a.acl) => Ok(()),
        Some(a) => Err(a.denial(action, path)),
        None => Err(ApplyError::Forbidden(Denial::new(
            action,
            "-",
            path,
            "-",
            &[],
        ))),
    }
}

/// What a command acting for an access token does, and on what, as a
/// refusal names it. A write is `create or update`: naming one would tell
/// whether the secret exists.
fn acting_action(command: &Command) -> (&'static str, String) {
    match command {
        Command::PutPolicy { name, .. } | Command::DeletePolicy { name, .. } => {
            ("manage policies", format!("policies/{name}"))
        }
        Command::PutKubernetesRole { name, .. } | Command::DeleteKubernetesRole { name, .. } => {
            (role::MANAGE_ACTION, role::denial_target(name))
        }
        Command::CreateNamedKey { name, .. }
        | Command::RotateNamedKey { name, .. }
        | Command::ConfigureNamedKey { name, .. } => {
            (NAMED_KEY_ACTION, crate::keys::acl_path(name))
        }
        Command::PutSecret { path, .. } => ("create or update", path.clone()),
        Command::DeleteSecret { path, .. } => ("delete", path.clone()),
        _ => ("act", String::new()),
    }
}

/// Up to `count` used gatekeeper tokens to give way, oldest use first (ties
/// by id, so every replica picks the same), never the token `keep`.
fn evict_used(
    records: &[GatekeeperTokenRecord],
    count: usize,
    keep: Option<&[u8; 32]>,
) -> Vec<[u8; 32]> {
    let mut used: Vec<(u64, &[u8; 32])> = records
        .iter()
        .filter(|r| Some(&r.id) != keep)
        .filter_map(|r| r.used.as_ref().map(|u| (u.at_ms, &r.id)))
        .collect();
    used.sort();
    used.into_iter().take(count).map(|(_, id)| *id).collect()
}

/// Deletes of a gatekeeper token's record and of the operations recorded
/// with its use.
fn forget_gatekeeper_token(id: &[u8; 32]) -> [BatchOp; 2] {
    [
        BatchOp::Delete {
            key: gatekeeper_token_key(id),
        },
        BatchOp::Delete {
            key: gatekeeper_operations_key(id),
        },
    ]
}

/// Most records one sweep removes (keeps every batch under etcd's txn limit).
pub const SWEEP_BATCH: usize = 100;
/// Most encryptions ever reserved under one key term, whatever limit a
/// reservation carries: the bound for random 96-bit nonces (invariant 9).
pub const MAX_ENCRYPTION_LIMIT: u64 = 1 << 32;

/// Why a command was rejected. Every replica rejects the same commands.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// `Init` on an initialised store.
    #[error("kstash is already initialized")]
    AlreadyInitialized,
    /// Anything but `Init` on an uninitialised store.
    #[error("kstash is not initialized")]
    NotInitialized,
    /// The access token behind the command is unknown or expired.
    #[error("access token is invalid or expired")]
    TokenInvalid,
    /// The token's policies do not allow this (worded by [`Denial`]).
    #[error("{0}")]
    Forbidden(Denial),
    /// Check-and-set found another version.
    #[error("check-and-set failed: expected version {expected}, found {actual}")]
    CasMismatch {
        /// What the caller expected.
        expected: u64,
        /// What is stored (0 = absent).
        actual: u64,
    },
    /// The target does not exist.
    #[error("not found")]
    NotFound,
    /// The gatekeeper token was already used or revoked.
    #[error("gatekeeper token is invalid or already used")]
    GatekeeperTokenInvalid,
    /// Too many gatekeeper tokens would exist.
    #[error("at most {MAX_GATEKEEPER_TOKENS} gatekeeper tokens may exist at once")]
    TooManyGatekeeperTokens,
    /// The idempotency key was used within its window for another request.
    #[error("the idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// The key term has no encryptions left to reserve under the limit.
    #[error("key term {term} reached its encryption limit; rotate the keychain")]
    TermExhausted {
        /// The exhausted term.
        term: u32,
    },
    /// The command names a key term that is not (reservation) or does not
    /// follow (rotation) the active one: another node rotated first.
    #[error("key term {term} is out of date: the active term is {active}")]
    StaleTerm {
        /// The term the command named.
        term: u32,
        /// The active term.
        active: u32,
    },
    /// A ServiceAccount login's role does not exist (any more).
    #[error("the role does not exist")]
    KubernetesRoleNotFound,
    /// A ServiceAccount login's role does not bind its service account
    /// (any more).
    #[error("the role does not bind the service account")]
    KubernetesRoleNotBound,
    /// A ServiceAccount login's token would expire at once.
    #[error("the service account token has expired")]
    KubernetesTokenExpired,
    /// A named key of that name exists already.
    #[error("the key exists already")]
    NamedKeyExists,
    /// The key changed since the command was made (another node rotated).
    #[error("the key changed meanwhile: its latest version is {latest}")]
    StaleKeyVersion {
        /// The key's latest version.
        latest: u32,
    },
    /// The key version reached its encryption limit.
    #[error("key version {version} reached its encryption limit; rotate the key")]
    NamedKeyExhausted {
        /// The exhausted version.
        version: u32,
    },
    /// A key change the key's state does not allow.
    #[error("{0}")]
    NamedKeyRefused(String),
    /// The backend failed; not a deterministic rejection.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Rejection {
    /// The client-visible form of a deterministic rejection (`Storage` is
    /// never a rejection; callers handle it first).
    pub fn from_apply(e: ApplyError) -> Rejection {
        match e {
            ApplyError::AlreadyInitialized => Rejection::AlreadyInitialized,
            ApplyError::NotInitialized => Rejection::NotInitialized,
            ApplyError::TokenInvalid => Rejection::TokenInvalid,
            ApplyError::Forbidden(denial) => Rejection::Forbidden(denial.to_string()),
            ApplyError::CasMismatch { expected, actual } => {
                Rejection::CasMismatch { expected, actual }
            }
            ApplyError::NotFound => Rejection::NotFound,
            ApplyError::GatekeeperTokenInvalid => Rejection::GatekeeperTokenInvalid,
            ApplyError::TooManyGatekeeperTokens => Rejection::TooManyGatekeeperTokens,
            ApplyError::IdempotencyKeyReused => Rejection::IdempotencyKeyReused,
            ApplyError::TermExhausted { term } => Rejection::TermExhausted { term },
            ApplyError::StaleTerm { term, active } => Rejection::StaleTerm { term, active },
            ApplyError::KubernetesRoleNotFound => Rejection::KubernetesRoleNotFound,
            ApplyError::KubernetesRoleNotBound => Rejection::KubernetesRoleNotBound,
            ApplyError::KubernetesTokenExpired => Rejection::KubernetesTokenExpired,
            ApplyError::NamedKeyExists => Rejection::NamedKeyExists,
            ApplyError::StaleKeyVersion { latest } => Rejection::StaleKeyVersion { latest },
            ApplyError::NamedKeyExhausted { version } => Rejection::NamedKeyExhausted { version },
            ApplyError::NamedKeyRefused(m) => Rejection::NamedKeyRefused(m),
            ApplyError::Storage(e) => Rejection::Forbidden(format!("storage failure: {e}")),
        }
    }
}

impl From<Rejection> for ApplyError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::AlreadyInitialized => ApplyError::AlreadyInitialized,
            Rejection::NotInitialized => ApplyError::NotInitialized,
            Rejection::TokenInvalid => ApplyError::TokenInvalid,
            Rejection::Forbidden(m) => ApplyError::Forbidden(Denial::from_log(m)),
            Rejection::CasMismatch { expected, actual } => {
                ApplyError::CasMismatch { expected, actual }
            }
            Rejection::NotFound => ApplyError::NotFound,
            Rejection::GatekeeperTokenInvalid => ApplyError::GatekeeperTokenInvalid,
            Rejection::TooManyGatekeeperTokens => ApplyError::TooManyGatekeeperTokens,
            Rejection::IdempotencyKeyReused => ApplyError::IdempotencyKeyReused,
            Rejection::TermExhausted { term } => ApplyError::TermExhausted { term },
            Rejection::StaleTerm { term, active } => ApplyError::StaleTerm { term, active },
            Rejection::KubernetesRoleNotFound => ApplyError::KubernetesRoleNotFound,
            Rejection::KubernetesRoleNotBound => ApplyError::KubernetesRoleNotBound,
            Rejection::KubernetesTokenExpired => ApplyError::KubernetesTokenExpired,
            Rejection::NamedKeyExists => ApplyError::NamedKeyExists,
            Rejection::StaleKeyVersion { latest } => ApplyError::StaleKeyVersion { latest },
            Rejection::NamedKeyExhausted { version } => ApplyError::NamedKeyExhausted { version },
            Rejection::NamedKeyRefused(m) => ApplyError::NamedKeyRefused(m),
        }
    }
}

/// The kept outcome of a request with an idempotency key (stored at
/// [`idempotency_key`]; removed by `Sweep` once expired).
#[derive(serde::Serialize, serde::Deserialize)]
struct IdempotencyRecord {
    /// What the request did (kind and target).
    fingerprint: [u8; 32],
    /// What apply answered.
    response: Response,
    /// End of the window (entry time + [`IDEMPOTENCY_WINDOW_MS`]).
    expires_at_ms: u64,
}

/// The state machine over one backend.
#[derive(Clone)]
pub struct State {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "State({})", self.backend.name())
    }
}

fn put<T: serde::Serialize>(key: Vec<u8>, record: &T) -> BatchOp {
    BatchOp::Put {
        key,
        value: keyspace::encode(record),
    }
}

fn put_gatekeeper_token(t: &NewGatekeeperToken, now: u64) -> BatchOp {
    put(
        gatekeeper_token_key(&t.id),
        &GatekeeperTokenRecord {
            id: t.id,
            wrapped_key: t.wrapped_key.clone(),
            created_at_ms: now,
            used: None,
        },
    )
}

impl State {
    /// A state machine writing to `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        State { backend }
    }

    /// The backend (reads go straight to it).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        self.backend
            .get(key)?
            .map(|b| keyspace::decode(&b))
            .transpose()
    }

    /// The init record, once initialised.
    pub fn init_record(&self) -> Result<Option<InitRecord>, StorageError> {
        self.get(INIT)
    }

    /// The root key wrapped under the gatekeeper key.
    pub fn wrapped_root(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend.get(ROOT_KEY)
    }

    /// The keychain wrapped under the root key.
    pub fn keychain(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.backend.get(KEYCHAIN)
    }

    /// How many secret writes under term `term` were applied (statistics;
    /// see [`State::term_reserved`] for the count the limit applies to).
    pub fn term_usage(&self, term: u32) -> Result<u64, StorageError> {
        Ok(self.get::<u64>(&term_usage_key(term))?.unwrap_or(0))
    }

    /// How many encryptions under term `term` the cluster has reserved: at
    /// least every encryption made under it (invariant 9). A term used
    /// before reservations existed counts from its applied writes.
    pub fn term_reserved(&self, term: u32) -> Result<u64, StorageError> {
        let reserved = self.get::<u64>(&term_reserved_key(term))?.unwrap_or(0);
        Ok(reserved.max(self.term_usage(term)?))
    }

    /// The keychain's active term as the log set it; `None` in a store
    /// initialised before it was recorded, until its first rotation.
    pub fn active_term(&self) -> Result<Option<u32>, StorageError> {
        self.get(ACTIVE_TERM)
    }

    /// The access key's record.
    pub fn access_key(&self) -> Result<Option<AccessKeyRecord>, StorageError> {
        self.get(ACCESS_KEY)
    }

    /// A gatekeeper token by id.
    pub fn gatekeeper_token(
        &self,
        id: &[u8; 32],
    ) -> Result<Option<GatekeeperTokenRecord>, StorageError> {
        self.get(&gatekeeper_token_key(id))
    }

    /// What a used gatekeeper token was used for inside its grace window
    /// (operations whose retry must not run again; at most one of each kind).
    pub fn gatekeeper_operations(
        &self,
        id: &[u8; 32],
    ) -> Result<Vec<GatekeeperOperation>, StorageError> {
        Ok(self
            .get(&gatekeeper_operations_key(id))?
            .unwrap_or_default())
    }

    /// Every gatekeeper token.
    pub fn gatekeeper_tokens(&self) -> Result<Vec<GatekeeperTokenRecord>, StorageError> {
        self.backend
            .scan_prefix(GATEKEEPER_TOKEN_PREFIX.as_bytes(), None)?
            .iter()
            .map(|(_, v)| keyspace::decode(v))
            .collect()
    }

    /// Whether a `Sweep` at `now` would remove anything: an expired access
    /// token, a used gatekeeper token past its grace window, or an expired
    /// idempotency record. The sweeper asks first, so an idle cluster writes
    /// no log entries.
    pub fn sweep_due(&self, now: u64) -> Result<bool, StorageError> {
        for (_, value) in self
            .backend
            .scan_prefix(ACCESS_TOKEN_PREFIX.as_bytes(), None)?
        {
            let record: AccessTokenRecord = keyspace::decode(&value)?;
            if record.expires_at_ms <= now {
                return Ok(true);
            }
        }
        for record in self.gatekeeper_tokens()? {
            if record.used.is_some_and(|u| u.grace_until_ms <= now) {
                return Ok(true);
            }
        }
        for (_, value) in self
            .backend
            .scan_prefix(IDEMPOTENCY_PREFIX.as_bytes(), None)?
        {
            let record: IdempotencyRecord = keyspace::decode(&value)?;
            if record.expires_at_ms <= now {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// An access token by id.
    pub fn access_token(&self, id: &[u8; 32]) -> Result<Option<AccessTokenRecord>, StorageError> {
        self.get(&access_token_key(id))
    }

    /// A stored policy (never the built-in `admin`).
    pub fn policy(&self, namespace: &str, name: &str) -> Result<Option<Policy>, StorageError> {
        self.get(&policy_key(namespace, name))
    }

    /// Names of a namespace's stored policies that sort after `after` (when
    /// given), in order, at most `limit`, and whether more follow. Reads
    /// keys only ([`list_level`]; a policy name has no '/').
    pub fn policy_names(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<NamePage, StorageError> {
        self.names_below(&policy_prefix(namespace), after, limit)
    }

    /// A Kubernetes login role of a namespace.
    pub fn kubernetes_role(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<KubernetesRole>, StorageError> {
        self.get(&kubernetes_role_key(namespace, name))
    }

    /// Names of a namespace's Kubernetes login roles, as
    /// [`State::policy_names`] lists policies.
    pub fn kubernetes_role_names(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<NamePage, StorageError> {
        self.names_below(&kubernetes_role_prefix(namespace), after, limit)
    }

    /// A named encryption key's record.
    pub fn named_key(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<NamedKeyRecord>, StorageError> {
        self.get(&named_key_key(namespace, name))
    }

    /// Names of a namespace's named encryption keys, as
    /// [`State::policy_names`] lists policies.
    pub fn named_key_names(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<NamePage, StorageError> {
        self.names_below(&named_key_prefix(namespace), after, limit)
    }

    /// Names one level below the key prefix `base`, after the name `after`
    /// (a name of an earlier page) when given: [`list_level`], keys only.
    fn names_below(
        &self,
        base: &[u8],
        after: Option<&str>,
        limit: usize,
    ) -> Result<NamePage, StorageError> {
        let from = match after {
            None => None,
            Some(name) => match resume_after(base, name) {
                Some(from) => Some(from),
                None => return Ok(NamePage::default()),
            },
        };
        list_level(self.backend.as_ref(), base, from, limit)
    }

    /// The ACL of a token: its policies as stored now.
    pub fn acl_for(&self, record: &AccessTokenRecord) -> Result<Acl, StorageError> {
        let admin = record.policies.iter().any(|p| p == acl::ADMIN_POLICY);
        let mut policies = Vec::new();
        for name in &record.policies {
            if !acl::is_builtin(name) {
                if let Some(p) = self.policy(&record.namespace, name)? {
                    policies.push(p);
                }
            }
        }
        Ok(Acl::new(admin, policies.iter()))
    }

    /// A secret's record.
    pub fn secret(&self, namespace: &str, path: &str) -> Result<Option<KvRecord>, StorageError> {
        self.get(&kv_key(namespace, path))
    }

    /// Names one level below `prefix` (empty or ending in '/') among a
    /// namespace's secrets, in key order: a secret's own name, or a folder's
    /// name with its trailing '/'. Starts after the name `after` (a name of an
    /// earlier page) when given; at most `limit` names, and whether more
    /// follow. See [`list_level`] for the cost.
    pub fn secret_names(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<NamePage, StorageError> {
        self.names_below(&kv_prefix(namespace, prefix), after, limit)
    }

    /// The principal `command` acts for (`by`) as of `now`, if it is live
    /// and locked to `namespace`. One arm per kind of [`Actor`]: an access
    /// token by its stored record.
    fn acting_at(
        &self,
        command: &Command,
        by: &Actor,
        namespace: &str,
        now: u64,
    ) -> Result<Acting, ApplyError> {
        let record = match by {
            Actor::AccessToken { id } => self.access_token(id)?.ok_or(ApplyError::TokenInvalid)?,
        };
        if record.expires_at_ms <= now {
            return Err(ApplyError::TokenInvalid);
        }
        if record.namespace != namespace {
            let (action, path) = acting_action(command);
            return Err(ApplyError::Forbidden(Denial::new(
                action,
                namespace,
                &path,
                &record.namespace,
                &record.policies,
            )));
        }
        Ok(Acting {
            acl: self.acl_for(&record)?,
            namespace: record.namespace,
            policies: record.policies,
        })
    }

    /// Record the first use of gatekeeper token `id` into `batch` and store
    /// its replacement. Refused when the token is unknown or already used.
    /// Returns whether the used token keeps its grace window: the
    /// replacement is one record more, so at the cap the oldest used tokens
    /// lose the rest of theirs, and with none to give way this use keeps
    /// none itself (its record is deleted).
    fn first_use(
        &self,
        id: &[u8; 32],
        first: &FirstUse,
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<bool, ApplyError> {
        let mut record = self
            .gatekeeper_token(id)?
            .ok_or(ApplyError::GatekeeperTokenInvalid)?;
        if record.used.is_some() {
            return Err(ApplyError::GatekeeperTokenInvalid);
        }
        let existing = self.gatekeeper_tokens()?;
        let over = (existing.len() + 1).saturating_sub(MAX_GATEKEEPER_TOKENS);
        let evicted = evict_used(&existing, over, Some(id));
        let kept = evicted.len() >= over;
        if kept {
            record.used = Some(GatekeeperTokenUse {
                at_ms: now,
                grace_until_ms: now.saturating_add(first.grace_ms),
                replacement_wrapped: first.replacement_wrapped.clone(),
            });
            batch.push(put(gatekeeper_token_key(id), &record));
        } else {
            batch.extend(forget_gatekeeper_token(id));
        }
        batch.extend(evicted.iter().flat_map(forget_gatekeeper_token));
        batch.push(put_gatekeeper_token(&first.replacement, now));
        Ok(kept)
    }

    /// Apply one entry: validate it against the stored state, then write one
    /// atomic batch. A rejection writes nothing (but the outcome of a request
    /// with an idempotency key, which is kept either way).
    pub fn apply(&self, entry: &Request) -> Result<Applied, ApplyError> {
        Ok(self.apply_with_meta(entry, Vec::new())??)
    }

    /// Apply one entry together with `meta` (the Raft bookkeeping that must
    /// land atomically with the data). A rejected command still writes
    /// `meta`: the entry was applied, it just changed nothing else. Only a
    /// storage failure is an `Err`.
    ///
    /// A request with an idempotency key seen within its window is not
    /// applied again: it gets the kept outcome (or `IdempotencyKeyReused`
    /// when the key came with another request). Otherwise its outcome,
    /// success or rejection, is kept in the same batch.
    pub fn apply_with_meta(
        &self,
        entry: &Request,
        meta: Vec<BatchOp>,
    ) -> Result<Response, StorageError> {
        if let Some(kept) = self.kept_outcome(entry)? {
            if !meta.is_empty() {
                self.backend.apply(meta)?;
            }
            return Ok(kept);
        }
        let (mut batch, response) = match self.plan(entry) {
            Ok((batch, applied)) => (batch, Ok(applied)),
            Err(ApplyError::Storage(e)) => return Err(e),
            Err(rejected) => (Vec::new(), Err(Rejection::from_apply(rejected))),
        };
        if let Some(idem) = &entry.idempotency {
            let record = IdempotencyRecord {
                fingerprint: idem.fingerprint,
                response: response.clone(),
                expires_at_ms: entry.time_ms.saturating_add(IDEMPOTENCY_WINDOW_MS),
            };
            batch.push(put(idempotency_key(&idem.id), &record));
        }
        batch.extend(meta);
        if !batch.is_empty() {
            self.backend.apply(batch)?;
        }
        Ok(response)
    }

    /// The outcome kept for `entry`'s idempotency key, if it is still in its
    /// window at the entry's time.
    fn kept_outcome(&self, entry: &Request) -> Result<Option<Response>, StorageError> {
        let Some(idem) = &entry.idempotency else {
            return Ok(None);
        };
        let Some(record) = self.get::<IdempotencyRecord>(&idempotency_key(&idem.id))? else {
            return Ok(None);
        };
        if record.expires_at_ms <= entry.time_ms {
            return Ok(None);
        }
        Ok(Some(if record.fingerprint == idem.fingerprint {
            record.response
        } else {
            Err(Rejection::IdempotencyKeyReused)
        }))
    }

    /// Validate `entry` against the stored state and compute its batch: the
    /// checks every command shares (initialised; invariant 5 for a command
    /// that acts for a principal), then the command's own `plan_*` (a
    /// method when it reads the stored state, a plain function when it
    /// does not). A rejection discards whatever the batch held.
    fn plan(&self, entry: &Request) -> Result<(Vec<BatchOp>, Applied), ApplyError> {
        let now = entry.time_ms;
        let initialized = self.backend.get(INIT)?.is_some();
        match (&entry.command, initialized) {
            (Command::Init { .. }, true) => return Err(ApplyError::AlreadyInitialized),
            (Command::Init { .. }, false) => {}
            (_, false) => return Err(ApplyError::NotInitialized),
            _ => {}
        }
        // Invariant 5: a command that acts for a principal applies only
        // while that principal is live and in its namespace; each command
        // then checks its own capability against `acl` (`permit`).
        let acting = match entry.command.acting_for() {
            Some((by, namespace)) => Some(self.acting_at(&entry.command, by, namespace, now)?),
            None => None,
        };
        let mut batch = Vec::new();
        let b = &mut batch;
        let applied = match &entry.command {
            Command::Init {
                shares,
                threshold,
                wrapped_root,
                keychain,
                access_key_hash,
                gatekeeper_tokens,
            } => plan_init(
                *shares,
                *threshold,
                wrapped_root,
                keychain,
                access_key_hash,
                gatekeeper_tokens,
                now,
                b,
            ),
            Command::RotateKeychain { term, keychain } => {
                self.plan_rotate_keychain(*term, keychain, b)
            }
            Command::Rekey {
                shares,
                threshold,
                wrapped_root,
                keychain,
                gatekeeper_tokens,
            } => self.plan_rekey(
                *shares,
                *threshold,
                wrapped_root,
                keychain,
                gatekeeper_tokens,
                now,
                b,
            ),
            Command::MintGatekeeperTokens { tokens } => {
                self.plan_mint_gatekeeper_tokens(tokens, now, b)
            }
            Command::UseGatekeeperToken {
                id,
                grace_ms,
                replacement_wrapped,
                replacement,
            } => {
                let first = FirstUse {
                    grace_ms: *grace_ms,
                    replacement_wrapped: replacement_wrapped.clone(),
                    replacement: replacement.clone(),
                };
                self.plan_use_gatekeeper_token(id, &first, now, b)
            }
            Command::UseGatekeeperTokenFor {
                id,
                first,
                operation,
            } => self.plan_use_gatekeeper_token_for(id, first.as_ref(), operation, now, b),
            Command::RevokeGatekeeperToken { id } => self.plan_revoke_gatekeeper_token(id, b),
            Command::RotateAccessKey { hash } => plan_rotate_access_key(hash, now, b),
            Command::CreateAccessToken {
                id,
                namespace,
                policies,
                ttl_ms,
                max_ttl_ms,
            } => plan_create_access_token(id, namespace, policies, *ttl_ms, *max_ttl_ms, now, b),
            Command::RenewAccessToken { id, ttl_ms } => {
                self.plan_renew_access_token(id, *ttl_ms, now, b)
            }
            Command::RevokeAccessToken { id } => self.plan_revoke_access_token(id, b),
            Command::PutPolicy {
                by: _,
                namespace,
                name,
                policy,
            } => plan_put_policy(&acting, namespace, name, policy, b),
            Command::DeletePolicy {
                by: _,
                namespace,
                name,
            } => self.plan_delete_policy(&acting, namespace, name, b),
            Command::PutSecret {
                by: _,
                namespace,
                path,
                cas,
                term,
                ciphertext,
            } => self.plan_put_secret(&acting, namespace, path, *cas, *term, ciphertext, now, b),
            Command::DeleteSecret {
                by: _,
                namespace,
                path,
            } => self.plan_delete_secret(&acting, namespace, path, b),
            Command::ReserveEncryptions { term, count, limit } => {
                self.plan_reserve_encryptions(*term, *count, *limit, b)
            }
            Command::Sweep => self.plan_sweep(now, b),
            Command::PutKubernetesRole {
                by: _,
                namespace,
                name,
                role,
            } => plan_put_kubernetes_role(&acting, namespace, name, role, b),
            Command::DeleteKubernetesRole {
                by: _,
                namespace,
                name,
            } => self.plan_delete_kubernetes_role(&acting, namespace, name, b),
            Command::CreateKubernetesToken {
                id,
                namespace,
                role,
                service_account,
                not_after_ms,
                max_ttl_ms,
            } => self.plan_create_kubernetes_token(
                id,
                namespace,
                role,
                service_account,
                *not_after_ms,
                *max_ttl_ms,
                now,
                b,
            ),
            Command::CreateNamedKey {
                by: _,
                namespace,
                name,
                uid,
                wrapped,
            } => self.plan_create_named_key(&acting, namespace, name, uid, wrapped, now, b),
            Command::RotateNamedKey {
                by: _,
                namespace,
                name,
                version,
                wrapped,
            } => self.plan_rotate_named_key(&acting, namespace, name, *version, wrapped, now, b),
            Command::ConfigureNamedKey {
                by: _,
                namespace,
                name,
                min_decryption_version,
            } => {
                self.plan_configure_named_key(&acting, namespace, name, *min_decryption_version, b)
            }
            Command::ReserveKeyEncryptions {
                namespace,
                name,
                uid,
                version,
                count,
                limit,
            } => {
                self.plan_reserve_key_encryptions(namespace, name, uid, *version, *count, *limit, b)
            }
        }?;
        Ok((batch, applied))
    }

    /// `RotateKeychain`: install the next term's keychain. Refused unless
    /// `term` follows the active one: two nodes that rotate at once both
    /// propose the next term with a different key; the first wins, the
    /// second would overwrite it (and every value written under it).
    fn plan_rotate_keychain(
        &self,
        term: u32,
        keychain: &[u8],
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        if let Some(active) = self.active_term()? {
            if term != active.saturating_add(1) {
                return Err(ApplyError::StaleTerm { term, active });
            }
        }
        batch.push(BatchOp::Put {
            key: KEYCHAIN.to_vec(),
            value: keychain.to_vec(),
        });
        batch.push(put(ACTIVE_TERM.to_vec(), &term));
        Ok(Applied::Done)
    }

    /// `Rekey`: new Shamir parameters, root key and keychain wrapping; every
    /// gatekeeper token and its recorded operations go, `gatekeeper_tokens`
    /// replace them.
    // One argument per field of the command, as every `plan_*` takes them.
    #[allow(clippy::too_many_arguments)]
    fn plan_rekey(
        &self,
        shares: u8,
        threshold: u8,
        wrapped_root: &[u8],
        keychain: &[u8],
        gatekeeper_tokens: &[NewGatekeeperToken],
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let old: InitRecord = self.get(INIT)?.ok_or(ApplyError::NotInitialized)?;
        if gatekeeper_tokens.len() > MAX_GATEKEEPER_TOKENS {
            return Err(ApplyError::TooManyGatekeeperTokens);
        }
        batch.push(put(
            INIT.to_vec(),
            &InitRecord {
                shares,
                threshold,
                rekeyed_at_ms: now,
                ..old
            },
        ));
        batch.push(BatchOp::Put {
            key: ROOT_KEY.to_vec(),
            value: wrapped_root.to_vec(),
        });
        batch.push(BatchOp::Put {
            key: KEYCHAIN.to_vec(),
            value: keychain.to_vec(),
        });
        for prefix in [GATEKEEPER_TOKEN_PREFIX, GATEKEEPER_OPERATIONS_PREFIX] {
            for (key, _) in self.backend.scan_prefix(prefix.as_bytes(), None)? {
                batch.push(BatchOp::Delete { key });
            }
        }
        batch.extend(
            gatekeeper_tokens
                .iter()
                .map(|t| put_gatekeeper_token(t, now)),
        );
        Ok(Applied::Done)
    }

    /// `MintGatekeeperTokens`: store `tokens`, refused past
    /// [`MAX_GATEKEEPER_TOKENS`] unused ones. Used tokens waiting out their
    /// grace window make room, oldest first: a renew loop never blocks
    /// minting.
    fn plan_mint_gatekeeper_tokens(
        &self,
        tokens: &[NewGatekeeperToken],
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let existing = self.gatekeeper_tokens()?;
        let unused = existing.iter().filter(|r| r.used.is_none()).count();
        if unused + tokens.len() > MAX_GATEKEEPER_TOKENS {
            return Err(ApplyError::TooManyGatekeeperTokens);
        }
        let over = (existing.len() + tokens.len()).saturating_sub(MAX_GATEKEEPER_TOKENS);
        batch.extend(
            evict_used(&existing, over, None)
                .iter()
                .flat_map(forget_gatekeeper_token),
        );
        batch.extend(tokens.iter().map(|t| put_gatekeeper_token(t, now)));
        Ok(Applied::Done)
    }

    /// `UseGatekeeperToken`: the token's first use (see [`State::first_use`]).
    fn plan_use_gatekeeper_token(
        &self,
        id: &[u8; 32],
        first: &FirstUse,
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        self.first_use(id, first, now, batch)?;
        Ok(Applied::Done)
    }

    /// `UseGatekeeperTokenFor`: use the token for `operation` (its first use,
    /// or another operation inside its grace window) and record the
    /// operation with it; an access-key rotation is installed here.
    fn plan_use_gatekeeper_token_for(
        &self,
        id: &[u8; 32],
        first: Option<&FirstUse>,
        operation: &GatekeeperOperation,
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let mut operations = self.gatekeeper_operations(id)?;
        let kept = match first {
            Some(first) => self.first_use(id, first, now, batch)?,
            None => {
                let record = self
                    .gatekeeper_token(id)?
                    .ok_or(ApplyError::GatekeeperTokenInvalid)?;
                let in_grace = record.used.is_some_and(|u| now < u.grace_until_ms);
                // One record per kind: a second one is a retry the
                // proposer did not see recorded yet; it reads again.
                if !in_grace || operations.iter().any(|o| o.same_as(operation)) {
                    return Err(ApplyError::GatekeeperTokenInvalid);
                }
                true
            }
        };
        if kept {
            operations.push(operation.clone());
            batch.push(put(gatekeeper_operations_key(id), &operations));
        }
        if let GatekeeperOperation::RotateAccessKey { hash, .. } = operation {
            batch.push(put(
                ACCESS_KEY.to_vec(),
                &AccessKeyRecord {
                    hash: *hash,
                    created_at_ms: now,
                },
            ));
        }
        Ok(Applied::Done)
    }

    /// `RevokeGatekeeperToken`: forget the token and its operations; answers
    /// whether it existed.
    fn plan_revoke_gatekeeper_token(
        &self,
        id: &[u8; 32],
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let key = gatekeeper_token_key(id);
        let found = self.backend.get(&key)?.is_some();
        batch.extend(forget_gatekeeper_token(id));
        Ok(Applied::Deleted(found))
    }

    /// `RenewAccessToken`: extend a live token by `ttl_ms` from the entry
    /// time, capped at its maximum lifetime and never shortened.
    fn plan_renew_access_token(
        &self,
        id: &[u8; 32],
        ttl_ms: u64,
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let mut record = self.access_token(id)?.ok_or(ApplyError::TokenInvalid)?;
        if record.expires_at_ms <= now {
            return Err(ApplyError::TokenInvalid);
        }
        record.expires_at_ms = now
            .saturating_add(ttl_ms)
            .min(record.max_expires_at_ms)
            .max(record.expires_at_ms);
        let expires = record.expires_at_ms;
        batch.push(put(access_token_key(id), &record));
        Ok(Applied::ExpiresAt(expires))
    }

    /// `RevokeAccessToken`: delete the token; answers whether it existed.
    fn plan_revoke_access_token(
        &self,
        id: &[u8; 32],
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let key = access_token_key(id);
        let found = self.backend.get(&key)?.is_some();
        batch.push(BatchOp::Delete { key });
        Ok(Applied::Deleted(found))
    }

    /// `DeletePolicy`, for an admin of the namespace: refused when the
    /// policy does not exist.
    fn plan_delete_policy(
        &self,
        acting: &Option<Acting>,
        namespace: &str,
        name: &str,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let target = format!("policies/{name}");
        permit(acting, "manage policies", &target, Acl::is_admin)?;
        self.delete_existing(policy_key(namespace, name), batch)
    }

    /// `DeleteKubernetesRole`, for an admin of the namespace (as
    /// `DeletePolicy`): refused when the role does not exist.
    fn plan_delete_kubernetes_role(
        &self,
        acting: &Option<Acting>,
        namespace: &str,
        name: &str,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        permit(
            acting,
            role::MANAGE_ACTION,
            &role::denial_target(name),
            Acl::is_admin,
        )?;
        self.delete_existing(kubernetes_role_key(namespace, name), batch)
    }

    /// Delete `key`, refused (`NotFound`) when nothing is stored there.
    fn delete_existing(
        &self,
        key: Vec<u8>,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        if self.backend.get(&key)?.is_none() {
            return Err(ApplyError::NotFound);
        }
        batch.push(BatchOp::Delete { key });
        Ok(Applied::Deleted(true))
    }

    /// `CreateKubernetesToken`: the login's role checked again as of the
    /// entry (it exists in `namespace` and binds `service_account`), then
    /// an access token of `namespace` with the role's policies, expiring at
    /// the earliest of the role's ttl, `not_after_ms` and `max_ttl_ms` from
    /// the entry time, and not renewable past that. Refused when that is
    /// not after the entry time.
    // One argument per field of the command, as every `plan_*` takes them.
    #[allow(clippy::too_many_arguments)]
    fn plan_create_kubernetes_token(
        &self,
        id: &[u8; 32],
        namespace: &str,
        role: &str,
        service_account: &str,
        not_after_ms: u64,
        max_ttl_ms: u64,
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let role = self
            .kubernetes_role(namespace, role)?
            .ok_or(ApplyError::KubernetesRoleNotFound)?;
        let bound = service_account
            .split_once('/')
            .is_some_and(|(k8s_namespace, name)| role.binds(k8s_namespace, name));
        if !bound {
            return Err(ApplyError::KubernetesRoleNotBound);
        }
        let expires_at_ms = now
            .saturating_add(role.ttl_ms)
            .min(not_after_ms)
            .min(now.saturating_add(max_ttl_ms));
        if expires_at_ms <= now {
            return Err(ApplyError::KubernetesTokenExpired);
        }
        batch.push(put(
            access_token_key(id),
            &AccessTokenRecord {
                namespace: namespace.to_owned(),
                policies: role.policies,
                created_at_ms: now,
                expires_at_ms,
                ttl_ms: expires_at_ms - now,
                max_expires_at_ms: expires_at_ms,
            },
        ));
        Ok(Applied::Done)
    }

    /// `PutSecret`: the acting token needs `create` for a new secret and
    /// `update` for an existing one; `cas`, when given, must name the
    /// stored version (0: absent). Counts the write toward its key term.
    // One argument per field of the command, as every `plan_*` takes them.
    #[allow(clippy::too_many_arguments)]
    fn plan_put_secret(
        &self,
        acting: &Option<Acting>,
        namespace: &str,
        path: &str,
        cas: Option<u64>,
        term: u32,
        ciphertext: &[u8],
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let current = self.secret(namespace, path)?;
        let cap = match current {
            Some(_) => Capability::Update,
            None => Capability::Create,
        };
        let action = acting
            .as_ref()
            .map_or(cap.to_string(), |a| a.acl.write_action(path, cap));
        permit(acting, &action, path, |acl| acl.allows(path, cap))?;
        let actual = current.as_ref().map_or(0, |r| r.version);
        if let Some(expected) = cas {
            if expected != actual {
                return Err(ApplyError::CasMismatch { expected, actual });
            }
        }
        let record = KvRecord {
            version: actual + 1,
            ciphertext: ciphertext.to_vec(),
            created_at_ms: current.as_ref().map_or(now, |r| r.created_at_ms),
            updated_at_ms: now,
        };
        let usage = self.term_usage(term)?;
        batch.push(put(kv_key(namespace, path), &record));
        batch.push(put(term_usage_key(term), &(usage + 1)));
        Ok(Applied::Version(record.version))
    }

    /// `DeleteSecret`: the acting token needs `delete`; refused when the
    /// secret does not exist.
    fn plan_delete_secret(
        &self,
        acting: &Option<Acting>,
        namespace: &str,
        path: &str,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        permit(acting, "delete", path, |acl| {
            acl.allows(path, Capability::Delete)
        })?;
        let key = kv_key(namespace, path);
        if self.backend.get(&key)?.is_none() {
            return Err(ApplyError::NotFound);
        }
        batch.push(BatchOp::Delete { key });
        Ok(Applied::Deleted(true))
    }

    /// `ReserveEncryptions`: grant up to `count` encryptions under the
    /// active term, never past `limit` (itself capped at
    /// [`MAX_ENCRYPTION_LIMIT`]) in total (invariant 9).
    fn plan_reserve_encryptions(
        &self,
        term: u32,
        count: u64,
        limit: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        if let Some(active) = self.active_term()? {
            if term != active {
                return Err(ApplyError::StaleTerm { term, active });
            }
        }
        let limit = limit.min(MAX_ENCRYPTION_LIMIT);
        let start = self.term_reserved(term)?;
        let granted = count.min(limit.saturating_sub(start));
        if granted == 0 {
            return Err(ApplyError::TermExhausted { term });
        }
        batch.push(put(term_reserved_key(term), &(start + granted)));
        Ok(Applied::Reserved {
            start,
            count: granted,
        })
    }

    /// `CreateNamedKey`, for an admin of the namespace: version 1, made
    /// at the entry's time. Refused when the key exists.
    #[allow(clippy::too_many_arguments)]
    fn plan_create_named_key(
        &self,
        acting: &Option<Acting>,
        namespace: &str,
        name: &str,
        uid: &[u8; crate::keys::UID_BYTES],
        wrapped: &[u8],
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        permit(
            acting,
            NAMED_KEY_ACTION,
            &crate::keys::acl_path(name),
            Acl::is_admin,
        )?;
        if self.named_key(namespace, name)?.is_some() {
            return Err(ApplyError::NamedKeyExists);
        }
        let record = NamedKeyRecord {
            uid: *uid,
            created_at_ms: now,
            min_decryption_version: 1,
            versions: vec![NamedKeyVersion {
                version: 1,
                created_at_ms: now,
                wrapped: wrapped.to_vec(),
                reserved: 0,
            }],
        };
        batch.push(put(named_key_key(namespace, name), &record));
        Ok(Applied::Version(1))
    }

    /// `RotateNamedKey`, for an admin of the namespace: `version` must be
    /// the one after the latest, and the key below
    /// [`crate::keys::MAX_VERSIONS`].
    #[allow(clippy::too_many_arguments)]
    fn plan_rotate_named_key(
        &self,
        acting: &Option<Acting>,
        namespace: &str,
        name: &str,
        version: u32,
        wrapped: &[u8],
        now: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        permit(
            acting,
            NAMED_KEY_ACTION,
            &crate::keys::acl_path(name),
            Acl::is_admin,
        )?;
        let mut record = self
            .named_key(namespace, name)?
            .ok_or(ApplyError::NotFound)?;
        let latest = record.latest().version;
        if version != latest.saturating_add(1) {
            return Err(ApplyError::StaleKeyVersion { latest });
        }
        record.next_version().map_err(ApplyError::NamedKeyRefused)?;
        record.versions.push(NamedKeyVersion {
            version,
            created_at_ms: now,
            wrapped: wrapped.to_vec(),
            reserved: 0,
        });
        batch.push(put(named_key_key(namespace, name), &record));
        Ok(Applied::Version(u64::from(version)))
    }

    /// `ConfigureNamedKey`, for an admin of the namespace: the minimum
    /// decryption version moves up only, and never past the latest.
    fn plan_configure_named_key(
        &self,
        acting: &Option<Acting>,
        namespace: &str,
        name: &str,
        min: u32,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        permit(
            acting,
            NAMED_KEY_ACTION,
            &crate::keys::acl_path(name),
            Acl::is_admin,
        )?;
        let mut record = self
            .named_key(namespace, name)?
            .ok_or(ApplyError::NotFound)?;
        record
            .check_min_decryption_version(min)
            .map_err(ApplyError::NamedKeyRefused)?;
        record.min_decryption_version = min;
        batch.push(put(named_key_key(namespace, name), &record));
        Ok(Applied::Done)
    }

    /// `ReserveKeyEncryptions`: as [`Self::plan_reserve_encryptions`], for
    /// the latest version of a named key (same uid) only.
    #[allow(clippy::too_many_arguments)]
    fn plan_reserve_key_encryptions(
        &self,
        namespace: &str,
        name: &str,
        uid: &[u8; crate::keys::UID_BYTES],
        version: u32,
        count: u64,
        limit: u64,
        batch: &mut Vec<BatchOp>,
    ) -> Result<Applied, ApplyError> {
        let mut record = self
            .named_key(namespace, name)?
            .ok_or(ApplyError::NotFound)?;
        let latest = record.latest().version;
        if record.uid != *uid || version != latest {
            return Err(ApplyError::StaleKeyVersion { latest });
        }
        let limit = limit.min(MAX_ENCRYPTION_LIMIT);
        let last = record
            .versions
            .last_mut()
            .expect("a named key has at least one version");
        let start = last.reserved;
        let granted = count.min(limit.saturating_sub(start));
        if granted == 0 {
            return Err(ApplyError::NamedKeyExhausted { version });
        }
        last.reserved = start + granted;
        batch.push(put(named_key_key(namespace, name), &record));
        Ok(Applied::Reserved {
            start,
            count: granted,
        })
    }

    /// `Sweep`: delete, as of `now`, expired access tokens, used gatekeeper
    /// tokens past their grace window (with their operations) and expired
    /// idempotency records, at most [`SWEEP_BATCH`] operations at a time.
    /// `batch` comes in empty: its length is what the sweep removed.
    fn plan_sweep(&self, now: u64, batch: &mut Vec<BatchOp>) -> Result<Applied, ApplyError> {
        let mut more = false;
        for (key, value) in self
            .backend
            .scan_prefix(ACCESS_TOKEN_PREFIX.as_bytes(), None)?
        {
            let record: AccessTokenRecord = keyspace::decode(&value)?;
            if record.expires_at_ms <= now {
                if batch.len() >= SWEEP_BATCH {
                    more = true;
                    break;
                }
                batch.push(BatchOp::Delete { key });
            }
        }
        for (key, value) in self
            .backend
            .scan_prefix(GATEKEEPER_TOKEN_PREFIX.as_bytes(), None)?
        {
            let record: GatekeeperTokenRecord = keyspace::decode(&value)?;
            if record
                .used
                .as_ref()
                .is_some_and(|u| u.grace_until_ms <= now)
            {
                if batch.len() >= SWEEP_BATCH {
                    more = true;
                    break;
                }
                batch.push(BatchOp::Delete { key });
                let operations = gatekeeper_operations_key(&record.id);
                if self.backend.get(&operations)?.is_some() {
                    batch.push(BatchOp::Delete { key: operations });
                }
            }
        }
        for (key, value) in self
            .backend
            .scan_prefix(IDEMPOTENCY_PREFIX.as_bytes(), None)?
        {
            let record: IdempotencyRecord = keyspace::decode(&value)?;
            if record.expires_at_ms <= now {
                if batch.len() >= SWEEP_BATCH {
                    more = true;
                    break;
                }
                batch.push(BatchOp::Delete { key });
            }
        }
        Ok(Applied::Swept {
            removed: batch.len(),
            more,
        })
    }
}

/// `Init`: the init record, root key, keychain (term 1), access key and
/// first gatekeeper tokens (at most [`MAX_GATEKEEPER_TOKENS`]).
// One argument per field of the command, as every `plan_*` takes them.
#[allow(clippy::too_many_arguments)]
fn plan_init(
    shares: u8,
    threshold: u8,
    wrapped_root: &[u8],
    keychain: &[u8],
    access_key_hash: &[u8; 32],
    gatekeeper_tokens: &[NewGatekeeperToken],
    now: u64,
    batch: &mut Vec<BatchOp>,
) -> Result<Applied, ApplyError> {
    batch.push(put(
        INIT.to_vec(),
        &InitRecord {
            shares,
            threshold,
            initialized_at_ms: now,
            rekeyed_at_ms: now,
        },
    ));
    batch.push(BatchOp::Put {
        key: ROOT_KEY.to_vec(),
        value: wrapped_root.to_vec(),
    });
    batch.push(BatchOp::Put {
        key: KEYCHAIN.to_vec(),
        value: keychain.to_vec(),
    });
    batch.push(put(ACTIVE_TERM.to_vec(), &1u32));
    batch.push(put(
        ACCESS_KEY.to_vec(),
        &AccessKeyRecord {
            hash: *access_key_hash,
            created_at_ms: now,
        },
    ));
    if gatekeeper_tokens.len() > MAX_GATEKEEPER_TOKENS {
        return Err(ApplyError::TooManyGatekeeperTokens);
    }
    batch.extend(
        gatekeeper_tokens
            .iter()
            .map(|t| put_gatekeeper_token(t, now)),
    );
    Ok(Applied::Done)
}

/// `RotateAccessKey`: replace the access key's hash.
fn plan_rotate_access_key(
    hash: &[u8; 32],
    now: u64,
    batch: &mut Vec<BatchOp>,
) -> Result<Applied, ApplyError> {
    batch.push(put(
        ACCESS_KEY.to_vec(),
        &AccessKeyRecord {
            hash: *hash,
            created_at_ms: now,
        },
    ));
    Ok(Applied::Done)
}

/// `CreateAccessToken`: store the token's record, expiring `ttl_ms` from
/// the entry time and at most `max_ttl_ms` from it.
fn plan_create_access_token(
    id: &[u8; 32],
    namespace: &str,
    policies: &[String],
    ttl_ms: u64,
    max_ttl_ms: u64,
    now: u64,
    batch: &mut Vec<BatchOp>,
) -> Result<Applied, ApplyError> {
    batch.push(put(
        access_token_key(id),
        &AccessTokenRecord {
            namespace: namespace.to_owned(),
            policies: policies.to_vec(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            ttl_ms,
            max_expires_at_ms: now.saturating_add(max_ttl_ms),
        },
    ));
    Ok(Applied::Done)
}

/// `PutKubernetesRole`, for an admin of the namespace (as `PutPolicy`):
/// create or replace it.
fn plan_put_kubernetes_role(
    acting: &Option<Acting>,
    namespace: &str,
    name: &str,
    role: &KubernetesRole,
    batch: &mut Vec<BatchOp>,
) -> Result<Applied, ApplyError> {
    permit(
        acting,
        role::MANAGE_ACTION,
        &role::denial_target(name),
        Acl::is_admin,
    )?;
    batch.push(put(kubernetes_role_key(namespace, name), role));
    Ok(Applied::Done)
}

/// `PutPolicy`, for an admin of the namespace: create or replace it.
fn plan_put_policy(
    acting: &Option<Acting>,
    namespace: &str,
    name: &str,
    policy: &Policy,
    batch: &mut Vec<BatchOp>,
) -> Result<Applied, ApplyError> {
    let target = format!("policies/{name}");
    permit(acting, "manage policies", &target, Acl::is_admin)?;
    batch.push(put(policy_key(namespace, name), policy));
    Ok(Applied::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Rule;
    use crate::state::command::tests::one_of_each;
    use crate::storage::memory::MemoryBackend;

    fn entry(time_ms: u64, command: Command) -> Request {
        Request {
            time_ms,
            command,
            idempotency: None,
        }
    }

    fn sm() -> (State, Arc<MemoryBackend>) {
        let backend = Arc::new(MemoryBackend::new());
        let sm = State::new(backend.clone());
        sm.apply(&entry(
            1,
            Command::Init {
                shares: 1,
                threshold: 1,
                wrapped_root: vec![1; 60],
                keychain: vec![2; 80],
                access_key_hash: [3; 32],
                gatekeeper_tokens: vec![],
            },
        ))
        .unwrap();
        (sm, backend)
    }

    fn token(sm: &State, id: u8, ns: &str, policies: &[&str], at: u64, ttl_ms: u64) -> [u8; 32] {
        let id = [id; 32];
        sm.apply(&entry(
            at,
            Command::CreateAccessToken {
                id,
                namespace: ns.into(),
                policies: policies.iter().map(|p| p.to_string()).collect(),
                ttl_ms,
                max_ttl_ms: 10 * ttl_ms,
            },
        ))
        .unwrap();
        id
    }

    fn put_secret(token: [u8; 32], path: &str, cas: Option<u64>) -> Command {
        Command::PutSecret {
            by: Actor::AccessToken { id: token },
            namespace: "ns".into(),
            path: path.into(),
            cas,
            term: 1,
            ciphertext: vec![9; 40],
        }
    }

    #[test]
    fn init_happens_once_and_gates_everything_else() {
        let backend = Arc::new(MemoryBackend::new());
        let fresh = State::new(backend);
        assert!(matches!(
            fresh.apply(&entry(1, Command::Sweep)),
            Err(ApplyError::NotInitialized)
        ));
        let (sm, _) = sm();
        let again = Command::Init {
            shares: 1,
            threshold: 1,
            wrapped_root: vec![],
            keychain: vec![],
            access_key_hash: [0; 32],
            gatekeeper_tokens: vec![],
        };
        assert!(matches!(
            sm.apply(&entry(2, again)),
            Err(ApplyError::AlreadyInitialized)
        ));
    }

    #[test]
    fn apply_is_deterministic() {
        let (a, ba) = sm();
        let (b, bb) = sm();
        for s in [&a, &b] {
            let t = token(s, 1, "ns", &["admin"], 10, 1000);
            s.apply(&entry(11, put_secret(t, "x", None))).unwrap();
            s.apply(&entry(12, put_secret(t, "x", Some(1)))).unwrap();
            s.apply(&entry(2000, Command::Sweep)).unwrap();
        }
        assert_eq!(ba.dump(), bb.dump());
    }

    #[test]
    fn writes_never_apply_under_an_expired_or_revoked_token() {
        let (sm, backend) = sm();
        let t = token(&sm, 1, "ns", &["admin"], 10, 100);
        let before = backend.dump();
        assert!(matches!(
            sm.apply(&entry(110, put_secret(t, "x", None))),
            Err(ApplyError::TokenInvalid)
        ));
        assert_eq!(backend.dump(), before, "a rejected command writes nothing");
        let t2 = token(&sm, 2, "ns", &["admin"], 10, 1000);
        sm.apply(&entry(20, Command::RevokeAccessToken { id: t2 }))
            .unwrap();
        assert!(matches!(
            sm.apply(&entry(21, put_secret(t2, "x", None))),
            Err(ApplyError::TokenInvalid)
        ));
    }

    #[test]
    fn every_command_acting_for_a_token_is_authorized_again_at_apply() {
        // Steps: a sample of every command (`command::tests::one_of_each`);
        // a secret and a policy exist; every command that acts for a token
        // is refused, writing nothing, under an expired token, a revoked
        // one, one of another namespace and one without a capability; each
        // applies under a live admin token (so the refusals were about the
        // token, not the sample).
        // `one_of_each` is checked to hold every variant, in order.

        let (sm, backend) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1_000_000);
        let expired = token(&sm, 2, "ns", &["admin"], 10, 50);
        let revoked = token(&sm, 3, "ns", &["admin"], 10, 1_000_000);
        sm.apply(&entry(20, Command::RevokeAccessToken { id: revoked }))
            .unwrap();
        let elsewhere = token(&sm, 4, "other", &["admin"], 10, 1_000_000);
        let powerless = token(&sm, 5, "ns", &[], 10, 1_000_000);
        for c in one_of_each(admin, "ns") {
            if matches!(c, Command::PutPolicy { .. } | Command::PutSecret { .. }) {
                sm.apply(&entry(30, c)).unwrap();
            }
        }
        let mut acting = 0;
        for bad in [expired, revoked, elsewhere, powerless] {
            for c in one_of_each(bad, "ns") {
                if c.acting_for().is_none() {
                    continue;
                }
                acting += 1;
                let before = backend.dump();
                let what = c.to_string();
                let refused = sm.apply(&entry(100, c));
                assert!(
                    matches!(
                        refused,
                        Err(ApplyError::TokenInvalid | ApplyError::Forbidden(_))
                    ),
                    "{what} applied under a bad token: {refused:?}"
                );
                assert_eq!(backend.dump(), before, "{what} wrote under a bad token");
            }
        }
        assert!(acting >= 36, "nine commands act for a token today");
        for c in one_of_each(admin, "ns") {
            if c.acting_for().is_some() {
                let what = c.to_string();
                sm.apply(&entry(100, c))
                    .unwrap_or_else(|e| panic!("{what} under admin: {e:?}"));
            }
        }
    }

    #[test]
    fn apply_checks_namespace_and_acl_again() {
        let (sm, _) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1000);
        let reader = token(&sm, 2, "ns", &["ro"], 10, 1000);
        let other = token(&sm, 3, "other", &["admin"], 10, 1000);
        let ro = Policy {
            rules: vec![Rule {
                path: "app/*".into(),
                capabilities: vec![Capability::Read],
            }],
        };
        sm.apply(&entry(
            11,
            Command::PutPolicy {
                by: Actor::AccessToken { id: admin },
                namespace: "ns".into(),
                name: "ro".into(),
                policy: ro.clone(),
            },
        ))
        .unwrap();
        // Refusals use the one wording, and a write names no capability
        // that would tell whether the secret exists.
        let denied = |r: Result<Applied, ApplyError>| match r {
            Err(ApplyError::Forbidden(d)) => d.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            denied(sm.apply(&entry(12, put_secret(reader, "app/x", None)))),
            "permission denied: create or update on ns/app/x is not granted by the token's \
             policies [ro] in namespace ns"
        );
        assert_eq!(
            denied(sm.apply(&entry(12, put_secret(other, "app/x", None)))),
            "permission denied: create or update on ns/app/x is not granted by the token's \
             policies [admin] in namespace other"
        );
        assert!(matches!(
            sm.apply(&entry(
                13,
                Command::PutPolicy {
                    by: Actor::AccessToken { id: reader },
                    namespace: "ns".into(),
                    name: "x".into(),
                    policy: ro
                }
            )),
            Err(ApplyError::Forbidden(_))
        ));
    }

    #[test]
    fn versions_and_check_and_set() {
        let (sm, _) = sm();
        let t = token(&sm, 1, "ns", &["admin"], 10, 1000);
        assert_eq!(
            sm.apply(&entry(11, put_secret(t, "k", Some(0)))).unwrap(),
            Applied::Version(1)
        );
        assert!(matches!(
            sm.apply(&entry(12, put_secret(t, "k", Some(0)))),
            Err(ApplyError::CasMismatch {
                expected: 0,
                actual: 1
            })
        ));
        assert_eq!(
            sm.apply(&entry(13, put_secret(t, "k", Some(1)))).unwrap(),
            Applied::Version(2)
        );
        assert_eq!(
            sm.apply(&entry(14, put_secret(t, "k", None))).unwrap(),
            Applied::Version(3)
        );
        assert_eq!(
            sm.term_usage(1).unwrap(),
            3,
            "every write counts toward its term"
        );
        let d = Command::DeleteSecret {
            by: Actor::AccessToken { id: t },
            namespace: "ns".into(),
            path: "k".into(),
        };
        assert_eq!(
            sm.apply(&entry(15, d.clone())).unwrap(),
            Applied::Deleted(true)
        );
        assert!(matches!(sm.apply(&entry(16, d)), Err(ApplyError::NotFound)));
    }

    fn reserve(term: u32, count: u64, limit: u64) -> Command {
        Command::ReserveEncryptions { term, count, limit }
    }

    fn rotate(term: u32) -> Command {
        Command::RotateKeychain {
            term,
            keychain: vec![term as u8; 80],
        }
    }

    #[test]
    fn reservations_are_granted_up_to_the_limit_and_no_further() {
        let (sm, backend) = sm();
        assert_eq!(sm.active_term().unwrap(), Some(1), "init records term 1");
        assert_eq!(
            sm.apply(&entry(2, reserve(1, 4, 10))).unwrap(),
            Applied::Reserved { start: 0, count: 4 }
        );
        assert_eq!(
            sm.apply(&entry(3, reserve(1, 4, 10))).unwrap(),
            Applied::Reserved { start: 4, count: 4 }
        );
        // Only the last two are left: a partial grant.
        assert_eq!(
            sm.apply(&entry(4, reserve(1, 4, 10))).unwrap(),
            Applied::Reserved { start: 8, count: 2 }
        );
        assert_eq!(sm.term_reserved(1).unwrap(), 10);
        let before = backend.dump();
        assert!(matches!(
            sm.apply(&entry(5, reserve(1, 1, 10))),
            Err(ApplyError::TermExhausted { term: 1 })
        ));
        // A proposer with a lower limit is refused earlier; one with a
        // limit past 2^32 is held to 2^32.
        assert!(matches!(
            sm.apply(&entry(6, reserve(1, 1, 5))),
            Err(ApplyError::TermExhausted { term: 1 })
        ));
        assert_eq!(backend.dump(), before, "a refusal writes nothing");
        sm.apply(&entry(7, rotate(2))).unwrap();
        sm.backend()
            .apply(vec![put(term_reserved_key(2), &(MAX_ENCRYPTION_LIMIT - 1))])
            .unwrap();
        assert_eq!(
            sm.apply(&entry(8, reserve(2, 100, u64::MAX))).unwrap(),
            Applied::Reserved {
                start: MAX_ENCRYPTION_LIMIT - 1,
                count: 1
            }
        );
        assert!(matches!(
            sm.apply(&entry(9, reserve(2, 100, u64::MAX))),
            Err(ApplyError::TermExhausted { term: 2 })
        ));
    }

    #[test]
    fn only_the_active_term_is_reserved_and_rotated_past() {
        let (sm, backend) = sm();
        sm.apply(&entry(2, reserve(1, 3, 10))).unwrap();
        sm.apply(&entry(3, rotate(2))).unwrap();
        assert_eq!(sm.active_term().unwrap(), Some(2));
        let before = backend.dump();
        // A node that has not seen the rotation asks for the old term...
        assert!(matches!(
            sm.apply(&entry(4, reserve(1, 3, 10))),
            Err(ApplyError::StaleTerm { term: 1, active: 2 })
        ));
        // ...or rotates from it: the second "term 2" would replace the key
        // every value written under the first one needs.
        assert!(matches!(
            sm.apply(&entry(5, rotate(2))),
            Err(ApplyError::StaleTerm { term: 2, active: 2 })
        ));
        assert!(matches!(
            sm.apply(&entry(5, rotate(4))),
            Err(ApplyError::StaleTerm { term: 4, active: 2 })
        ));
        assert!(matches!(
            sm.apply(&entry(6, reserve(3, 3, 10))),
            Err(ApplyError::StaleTerm { term: 3, active: 2 })
        ));
        assert_eq!(backend.dump(), before, "a refusal writes nothing");
        assert_eq!(sm.keychain().unwrap(), Some(vec![2; 80]));
        assert_eq!(
            sm.apply(&entry(7, reserve(2, 3, 10))).unwrap(),
            Applied::Reserved { start: 0, count: 3 },
            "a new term counts from zero"
        );
        assert_eq!(
            sm.term_reserved(1).unwrap(),
            3,
            "the old term keeps its count"
        );
    }

    #[test]
    fn a_store_from_before_reservations_counts_its_applied_writes() {
        let (sm, backend) = sm();
        // As an earlier release left it: no active term recorded, and
        // term 1's applied writes counted under term-usage.
        backend
            .apply(vec![BatchOp::Delete {
                key: ACTIVE_TERM.to_vec(),
            }])
            .unwrap();
        let t = token(&sm, 1, "ns", &["admin"], 10, 1000);
        for i in 0..6 {
            sm.apply(&entry(11, put_secret(t, &format!("k{i}"), None)))
                .unwrap();
        }
        assert_eq!(sm.term_usage(1).unwrap(), 6);
        assert_eq!(
            sm.apply(&entry(12, reserve(1, 10, 10))).unwrap(),
            Applied::Reserved { start: 6, count: 4 },
            "reservations start after the writes already made"
        );
        // Any rotation is accepted once, and from then on checked.
        sm.apply(&entry(13, rotate(2))).unwrap();
        assert_eq!(sm.active_term().unwrap(), Some(2));
        assert!(matches!(
            sm.apply(&entry(14, rotate(2))),
            Err(ApplyError::StaleTerm { .. })
        ));
    }

    #[test]
    fn reservations_apply_deterministically() {
        let (a, ba) = sm();
        let (b, bb) = sm();
        let mut outcomes = Vec::new();
        for s in [&a, &b] {
            let mut seen = Vec::new();
            for (time, command) in [
                (2, reserve(1, 7, 10)),
                (3, reserve(1, 7, 10)),
                (4, reserve(1, 7, 10)),
                (5, rotate(2)),
                (6, reserve(1, 7, 10)),
                (7, reserve(2, 7, 10)),
            ] {
                seen.push(format!("{:?}", s.apply(&entry(time, command))));
            }
            outcomes.push(seen);
        }
        assert_eq!(outcomes[0], outcomes[1]);
        assert_eq!(ba.dump(), bb.dump());
    }

    fn keyed(time_ms: u64, command: Command, id: u8, fingerprint: u8) -> Request {
        Request {
            time_ms,
            command,
            idempotency: Some(crate::state::command::Idempotency {
                id: [id; 32],
                fingerprint: [fingerprint; 32],
            }),
        }
    }

    #[test]
    fn a_repeated_idempotency_key_gets_the_first_outcome() {
        use crate::state::command::IDEMPOTENCY_WINDOW_MS as WINDOW;
        let (sm, backend) = sm();
        let t = token(&sm, 1, "ns", &["admin"], 10, 10 * WINDOW);
        let first = sm.apply(&keyed(11, put_secret(t, "k", None), 1, 1));
        assert_eq!(first.unwrap(), Applied::Version(1));
        let dump = backend.dump();
        // The retry may even carry a new ciphertext (a new nonce): it is
        // answered, not applied.
        let again = sm.apply(&keyed(12, put_secret(t, "k", None), 1, 1));
        assert_eq!(again.unwrap(), Applied::Version(1));
        assert_eq!(backend.dump(), dump, "a repeat writes nothing");
        assert_eq!(sm.secret("ns", "k").unwrap().unwrap().version, 1);
        // The same key with another request is refused, and changes nothing.
        let reused = sm.apply(&keyed(13, put_secret(t, "other", None), 1, 2));
        assert!(matches!(reused, Err(ApplyError::IdempotencyKeyReused)));
        assert!(sm.secret("ns", "other").unwrap().is_none());
        // A rejection is kept too: the retry of a failed CAS fails the same
        // way even though the state would now let it through.
        let cas = sm.apply(&keyed(14, put_secret(t, "k", Some(5)), 2, 2));
        assert!(matches!(cas, Err(ApplyError::CasMismatch { .. })));
        sm.apply(&entry(15, put_secret(t, "k", None))).unwrap();
        sm.apply(&entry(16, put_secret(t, "k", None))).unwrap();
        sm.apply(&entry(17, put_secret(t, "k", None))).unwrap();
        let cas_again = sm.apply(&keyed(18, put_secret(t, "k", Some(5)), 2, 2));
        assert!(matches!(cas_again, Err(ApplyError::CasMismatch { .. })));
        // Another key is another request.
        let other = sm.apply(&keyed(19, put_secret(t, "k", None), 3, 1));
        assert_eq!(other.unwrap(), Applied::Version(5));
        // Past the window the key is forgotten: swept, then new.
        let later = 11 + WINDOW;
        match sm.apply(&entry(later, Command::Sweep)).unwrap() {
            Applied::Swept { removed, more } => assert_eq!((removed, more), (1, false)),
            other => panic!("{other:?}"),
        }
        let key_one = keyspace::idempotency_key(&[1; 32]);
        assert!(backend.get(&key_one).unwrap().is_none(), "key 1 swept");
        let fresh = sm.apply(&keyed(later + 1, put_secret(t, "k", None), 1, 1));
        assert_eq!(fresh.unwrap(), Applied::Version(6));
    }

    #[test]
    fn gatekeeper_tokens_are_used_once() {
        let (sm, _) = sm();
        let first = NewGatekeeperToken {
            id: [7; 32],
            wrapped_key: vec![1],
        };
        sm.apply(&entry(
            5,
            Command::MintGatekeeperTokens {
                tokens: vec![first],
            },
        ))
        .unwrap();
        let use_it = |rep: u8| Command::UseGatekeeperToken {
            id: [7; 32],
            grace_ms: 100,
            replacement_wrapped: vec![rep],
            replacement: NewGatekeeperToken {
                id: [rep; 32],
                wrapped_key: vec![2],
            },
        };
        sm.apply(&entry(10, use_it(8))).unwrap();
        assert!(matches!(
            sm.apply(&entry(11, use_it(9))),
            Err(ApplyError::GatekeeperTokenInvalid)
        ));
        assert!(
            sm.gatekeeper_token(&[9; 32]).unwrap().is_none(),
            "a refused use stores no replacement"
        );
        let used = sm
            .gatekeeper_token(&[7; 32])
            .unwrap()
            .unwrap()
            .used
            .unwrap();
        assert_eq!(used.grace_until_ms, 110);
        sm.apply(&entry(110, Command::Sweep)).unwrap();
        assert!(
            sm.gatekeeper_token(&[7; 32]).unwrap().is_none(),
            "swept after its grace window"
        );
        assert!(sm.gatekeeper_token(&[8; 32]).unwrap().is_some());
    }

    #[test]
    fn a_token_records_each_operation_once_inside_its_grace_window() {
        // Steps: mint a token; use it for a rotation to term 2 (first use):
        // recorded with the use; the same operation again is refused and
        // changes nothing; an access-key rotation (another operation) runs
        // inside the window: recorded, access key installed; again: refused;
        // a further operation after the window, or for an unknown token, is
        // refused; the sweep removes the token and its operations.
        use crate::state::command::{FirstUse, GatekeeperOperation};
        let (sm, backend) = sm();
        sm.apply(&entry(5, mint([[7; 32]]))).unwrap();
        let rotate = GatekeeperOperation::Rotate { term: 2 };
        let access = GatekeeperOperation::RotateAccessKey {
            hash: [9; 32],
            wrapped: vec![1, 2],
        };
        let first = FirstUse {
            grace_ms: 100,
            replacement_wrapped: vec![1],
            replacement: NewGatekeeperToken {
                id: [8; 32],
                wrapped_key: vec![2],
            },
        };
        let use_for = |first: Option<FirstUse>, operation: &GatekeeperOperation| {
            Command::UseGatekeeperTokenFor {
                id: [7; 32],
                first,
                operation: operation.clone(),
            }
        };
        sm.apply(&entry(10, use_for(Some(first.clone()), &rotate)))
            .unwrap();
        let used = sm.gatekeeper_token(&[7; 32]).unwrap().unwrap().used;
        assert_eq!(used.unwrap().grace_until_ms, 110);
        assert!(sm.gatekeeper_token(&[8; 32]).unwrap().is_some());
        assert_eq!(
            sm.gatekeeper_operations(&[7; 32]).unwrap(),
            std::slice::from_ref(&rotate)
        );

        let before = backend.dump();
        let again = GatekeeperOperation::Rotate { term: 3 };
        for refused in [
            use_for(None, &again),
            use_for(Some(first.clone()), &again),
            use_for(Some(first.clone()), &access),
        ] {
            assert!(
                matches!(
                    sm.apply(&entry(20, refused.clone())),
                    Err(ApplyError::GatekeeperTokenInvalid)
                ),
                "{refused}"
            );
            assert!(backend.dump() == before, "{refused} changed nothing");
        }

        sm.apply(&entry(30, use_for(None, &access))).unwrap();
        assert_eq!(sm.access_key().unwrap().unwrap().hash, [9; 32]);
        assert_eq!(
            sm.gatekeeper_operations(&[7; 32]).unwrap(),
            [rotate.clone(), access.clone()]
        );
        let before = backend.dump();
        assert!(matches!(
            sm.apply(&entry(40, use_for(None, &access))),
            Err(ApplyError::GatekeeperTokenInvalid)
        ));
        assert!(backend.dump() == before);

        assert!(matches!(
            sm.apply(&entry(110, use_for(None, &access))),
            Err(ApplyError::GatekeeperTokenInvalid)
        ));
        let unknown = Command::UseGatekeeperTokenFor {
            id: [6; 32],
            first: None,
            operation: rotate.clone(),
        };
        assert!(matches!(
            sm.apply(&entry(50, unknown)),
            Err(ApplyError::GatekeeperTokenInvalid)
        ));

        sm.apply(&entry(110, Command::Sweep)).unwrap();
        assert!(sm.gatekeeper_token(&[7; 32]).unwrap().is_none());
        assert!(sm.gatekeeper_operations(&[7; 32]).unwrap().is_empty());
        assert!(
            backend
                .dump()
                .iter()
                .all(|(k, _)| !k.starts_with(GATEKEEPER_OPERATIONS_PREFIX.as_bytes())),
            "the sweep removed the operations with the token"
        );
    }

    #[test]
    fn revoke_and_rekey_forget_a_tokens_operations() {
        use crate::state::command::{FirstUse, GatekeeperOperation};
        let (sm, backend) = sm();
        sm.apply(&entry(5, mint([[7; 32], [6; 32]]))).unwrap();
        for id in [[7; 32], [6; 32]] {
            sm.apply(&entry(
                10,
                Command::UseGatekeeperTokenFor {
                    id,
                    first: Some(FirstUse {
                        grace_ms: 100,
                        replacement_wrapped: vec![1],
                        replacement: NewGatekeeperToken {
                            id: [id[0] + 10; 32],
                            wrapped_key: vec![2],
                        },
                    }),
                    operation: GatekeeperOperation::Rotate { term: 2 },
                },
            ))
            .unwrap();
        }
        sm.apply(&entry(11, Command::RevokeGatekeeperToken { id: [7; 32] }))
            .unwrap();
        assert!(sm.gatekeeper_operations(&[7; 32]).unwrap().is_empty());
        assert_eq!(sm.gatekeeper_operations(&[6; 32]).unwrap().len(), 1);
        sm.apply(&entry(
            12,
            Command::Rekey {
                shares: 1,
                threshold: 1,
                wrapped_root: vec![1],
                keychain: vec![2],
                gatekeeper_tokens: vec![],
            },
        ))
        .unwrap();
        assert!(
            backend
                .dump()
                .iter()
                .all(|(k, _)| !k.starts_with(b"gatekeeper/")),
            "a rekey leaves no token and no operation"
        );
    }

    /// A gatekeeper token with id `[a, b, 0, …]`.
    fn gk_id(a: u8, b: u8) -> [u8; 32] {
        let mut id = [0; 32];
        id[0] = a;
        id[1] = b;
        id
    }

    fn use_token(id: [u8; 32], replacement: [u8; 32]) -> Command {
        Command::UseGatekeeperToken {
            id,
            grace_ms: 60_000,
            replacement_wrapped: vec![1],
            replacement: NewGatekeeperToken {
                id: replacement,
                wrapped_key: vec![2],
            },
        }
    }

    fn mint(ids: impl IntoIterator<Item = [u8; 32]>) -> Command {
        Command::MintGatekeeperTokens {
            tokens: ids
                .into_iter()
                .map(|id| NewGatekeeperToken {
                    id,
                    wrapped_key: vec![1],
                })
                .collect(),
        }
    }

    #[test]
    fn using_tokens_inside_the_grace_window_never_passes_the_cap() {
        // Steps: mint the cap; use every token inside the grace window; the
        // records stay at the cap, every replacement exists, and the oldest
        // uses gave way.
        let (sm, _) = sm();
        let cap = MAX_GATEKEEPER_TOKENS;
        sm.apply(&entry(5, mint((0..cap as u8).map(|i| gk_id(1, i)))))
            .unwrap();
        for i in 0..cap as u8 {
            sm.apply(&entry(
                10 + u64::from(i),
                use_token(gk_id(1, i), gk_id(2, i)),
            ))
            .unwrap();
            assert!(sm.gatekeeper_tokens().unwrap().len() <= cap, "use {i}");
        }
        let records = sm.gatekeeper_tokens().unwrap();
        assert_eq!(records.len(), cap);
        assert!(
            records.iter().all(|r| r.used.is_none()),
            "only replacements"
        );
        assert!(
            sm.gatekeeper_token(&gk_id(1, 0)).unwrap().is_none(),
            "at the cap a use keeps no grace window"
        );
        assert!(matches!(
            sm.apply(&entry(100, mint([gk_id(3, 0)]))),
            Err(ApplyError::TooManyGatekeeperTokens)
        ));
    }

    #[test]
    fn a_renew_loop_never_blocks_minting() {
        // Steps: one token renewed 200 times inside one grace window; the
        // records stay bounded; then service owners mint up to the cap of
        // unused tokens, and used tokens give way, oldest first.
        let (sm, _) = sm();
        let cap = MAX_GATEKEEPER_TOKENS;
        sm.apply(&entry(5, mint([gk_id(1, 0)]))).unwrap();
        let mut current = gk_id(1, 0);
        for i in 0..200u16 {
            let next = gk_id(20 + (i >> 8) as u8, i as u8);
            sm.apply(&entry(10 + u64::from(i), use_token(current, next)))
                .unwrap();
            current = next;
            assert!(sm.gatekeeper_tokens().unwrap().len() <= cap, "renew {i}");
        }
        let records = sm.gatekeeper_tokens().unwrap();
        assert_eq!(records.iter().filter(|r| r.used.is_none()).count(), 1);
        for (batch, n) in [16u8, 16, 16, 15].into_iter().enumerate() {
            sm.apply(&entry(300, mint((0..n).map(|i| gk_id(5 + batch as u8, i)))))
                .unwrap();
        }
        let records = sm.gatekeeper_tokens().unwrap();
        assert_eq!(records.len(), cap);
        assert!(
            records.iter().all(|r| r.used.is_none()),
            "used ones gave way"
        );
        assert!(matches!(
            sm.apply(&entry(300, mint([gk_id(9, 0)]))),
            Err(ApplyError::TooManyGatekeeperTokens)
        ));
        assert!(
            sm.gatekeeper_token(&current).unwrap().is_some(),
            "the live replacement is never evicted"
        );
    }

    #[test]
    fn rekey_revokes_every_gatekeeper_token() {
        let (sm, _) = sm();
        let t = |b: u8| NewGatekeeperToken {
            id: [b; 32],
            wrapped_key: vec![b],
        };
        sm.apply(&entry(
            5,
            Command::MintGatekeeperTokens {
                tokens: vec![t(1), t(2)],
            },
        ))
        .unwrap();
        sm.apply(&entry(
            6,
            Command::Rekey {
                shares: 3,
                threshold: 2,
                wrapped_root: vec![4],
                keychain: vec![5],
                gatekeeper_tokens: vec![t(3)],
            },
        ))
        .unwrap();
        let ids: Vec<_> = sm
            .gatekeeper_tokens()
            .unwrap()
            .into_iter()
            .map(|r| r.id[0])
            .collect();
        assert_eq!(ids, vec![3]);
        let init = sm.init_record().unwrap().unwrap();
        assert_eq!(
            (
                init.shares,
                init.threshold,
                init.initialized_at_ms,
                init.rekeyed_at_ms
            ),
            (3, 2, 1, 6)
        );
    }

    fn k8s_role(accounts: &[&str], policies: &[&str], ttl_ms: u64) -> KubernetesRole {
        KubernetesRole {
            service_accounts: accounts.iter().map(|a| a.to_string()).collect(),
            policies: policies.iter().map(|p| p.to_string()).collect(),
            ttl_ms,
            audience: "kstash".into(),
        }
    }

    fn put_role(by: [u8; 32], ns: &str, name: &str, role: KubernetesRole) -> Command {
        Command::PutKubernetesRole {
            by: Actor::AccessToken { id: by },
            namespace: ns.into(),
            name: name.into(),
            role,
        }
    }

    fn delete_role(by: [u8; 32], ns: &str, name: &str) -> Command {
        Command::DeleteKubernetesRole {
            by: Actor::AccessToken { id: by },
            namespace: ns.into(),
            name: name.into(),
        }
    }

    /// The login of `account` to `ns` through `role`, as token `[id; 32]`.
    fn k8s_login(id: u8, ns: &str, role: &str, account: &str, not_after: u64) -> Command {
        Command::CreateKubernetesToken {
            id: [id; 32],
            namespace: ns.into(),
            role: role.into(),
            service_account: account.into(),
            not_after_ms: not_after,
            max_ttl_ms: 1_000_000,
        }
    }

    #[test]
    fn kubernetes_roles_are_managed_by_the_admins_of_their_namespace() {
        // Steps: an admin of `ns` puts a role and reads it back; a token of
        // `ns` without admin, and an admin of another namespace, are
        // refused at apply and write nothing; deleting a missing role is
        // NotFound; the admin deletes the role; it is gone.
        let (sm, backend) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1_000_000);
        let powerless = token(&sm, 2, "ns", &["app"], 10, 1_000_000);
        let elsewhere = token(&sm, 3, "other", &["admin"], 10, 1_000_000);
        let role = k8s_role(&["k8s/app"], &["app"], 60_000);
        sm.apply(&entry(20, put_role(admin, "ns", "ci", role.clone())))
            .unwrap();
        assert_eq!(sm.kubernetes_role("ns", "ci").unwrap(), Some(role.clone()));
        assert_eq!(sm.kubernetes_role("other", "ci").unwrap(), None);

        let before = backend.dump();
        for bad in [powerless, elsewhere] {
            for c in [
                put_role(bad, "ns", "ci", k8s_role(&["k8s/*"], &["admin"], 1000)),
                put_role(bad, "ns", "new", role.clone()),
                delete_role(bad, "ns", "ci"),
            ] {
                let what = c.to_string();
                match sm.apply(&entry(30, c)) {
                    Err(ApplyError::Forbidden(d)) => {
                        assert!(d.to_string().contains("manage kubernetes roles"), "{d}")
                    }
                    other => panic!("{what}: {other:?}"),
                }
                assert_eq!(backend.dump(), before, "{what} wrote under a bad token");
            }
        }
        assert!(matches!(
            sm.apply(&entry(40, delete_role(admin, "ns", "missing"))),
            Err(ApplyError::NotFound)
        ));
        assert_eq!(backend.dump(), before, "a refused delete writes nothing");
        assert_eq!(
            sm.apply(&entry(41, delete_role(admin, "ns", "ci")))
                .unwrap(),
            Applied::Deleted(true)
        );
        assert_eq!(sm.kubernetes_role("ns", "ci").unwrap(), None);
    }

    #[test]
    fn a_kubernetes_login_checks_its_role_again_at_apply() {
        // Steps: a login through a role that does not exist is refused;
        // through a role that binds another service account, refused; both
        // write nothing. Bound by name and by `ns/*`, it stores a token of
        // the namespace with the role's policies. A role changed before
        // the login applies gives its new policies; one changed to no
        // longer bind, or deleted, refuses it.
        let (sm, backend) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1_000_000);
        let before = backend.dump();
        assert!(matches!(
            sm.apply(&entry(20, k8s_login(50, "ns", "ci", "k8s/app", 10_000))),
            Err(ApplyError::KubernetesRoleNotFound)
        ));
        sm.apply(&entry(
            21,
            put_role(
                admin,
                "ns",
                "ci",
                k8s_role(&["k8s/app", "k8s-b/*"], &["app"], 5000),
            ),
        ))
        .unwrap();
        let before_logins = backend.dump();
        assert_ne!(before, before_logins);
        for account in ["k8s/other", "k8s-c/app", "k8s", "app", "k8s/app/x", ""] {
            assert!(
                matches!(
                    sm.apply(&entry(22, k8s_login(50, "ns", "ci", account, 10_000))),
                    Err(ApplyError::KubernetesRoleNotBound)
                ),
                "{account:?}"
            );
        }
        assert!(matches!(
            sm.apply(&entry(22, k8s_login(50, "other", "ci", "k8s/app", 10_000))),
            Err(ApplyError::KubernetesRoleNotFound)
        ));
        assert_eq!(
            backend.dump(),
            before_logins,
            "refused logins write nothing"
        );

        for (id, account) in [(51, "k8s/app"), (52, "k8s-b/anyone")] {
            sm.apply(&entry(30, k8s_login(id, "ns", "ci", account, 10_000)))
                .unwrap();
            let record = sm.access_token(&[id; 32]).unwrap().unwrap();
            assert_eq!(record.namespace, "ns");
            assert_eq!(record.policies, ["app"]);
        }

        // The role changes after the login looked at it: apply's view wins.
        sm.apply(&entry(
            40,
            put_role(
                admin,
                "ns",
                "ci",
                k8s_role(&["k8s/app"], &["app", "db"], 5000),
            ),
        ))
        .unwrap();
        sm.apply(&entry(41, k8s_login(53, "ns", "ci", "k8s/app", 10_000)))
            .unwrap();
        assert_eq!(
            sm.access_token(&[53; 32]).unwrap().unwrap().policies,
            ["app", "db"]
        );
        assert!(matches!(
            sm.apply(&entry(
                42,
                k8s_login(54, "ns", "ci", "k8s-b/anyone", 10_000)
            )),
            Err(ApplyError::KubernetesRoleNotBound)
        ));
        sm.apply(&entry(43, delete_role(admin, "ns", "ci")))
            .unwrap();
        assert!(matches!(
            sm.apply(&entry(44, k8s_login(55, "ns", "ci", "k8s/app", 10_000))),
            Err(ApplyError::KubernetesRoleNotFound)
        ));
        for id in [54, 55] {
            assert!(sm.access_token(&[id; 32]).unwrap().is_none());
        }
    }

    #[test]
    fn a_kubernetes_login_token_expires_at_the_earliest_of_three_and_is_not_renewable() {
        // Steps: the role's ttl, the ServiceAccount token's expiry and the
        // node's max ttl each in turn is the earliest: the token expires
        // then, and its maximum is the same instant (a renewal cannot pass
        // it). A ServiceAccount token that expired before the entry is
        // refused and writes nothing.
        let (sm, backend) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1_000_000);
        sm.apply(&entry(
            20,
            put_role(admin, "ns", "ci", k8s_role(&["k8s/app"], &[], 5_000)),
        ))
        .unwrap();
        let login = |id: u8, not_after: u64, max_ttl: u64| Command::CreateKubernetesToken {
            id: [id; 32],
            namespace: "ns".into(),
            role: "ci".into(),
            service_account: "k8s/app".into(),
            not_after_ms: not_after,
            max_ttl_ms: max_ttl,
        };
        let now = 1_000;
        for (id, not_after, max_ttl, expected) in [
            (60, 100_000, 100_000, now + 5_000),     // the role's ttl
            (61, now + 3_000, 100_000, now + 3_000), // the SA token's exp
            (62, 100_000, 2_000, now + 2_000),       // the node's max ttl
            (63, now + 1, 100_000, now + 1),         // one ms left
        ] {
            sm.apply(&entry(now, login(id, not_after, max_ttl)))
                .unwrap();
            let r = sm.access_token(&[id; 32]).unwrap().unwrap();
            assert_eq!(
                (r.created_at_ms, r.expires_at_ms, r.max_expires_at_ms),
                (now, expected, expected),
                "token {id}"
            );
            assert_eq!(r.ttl_ms, expected - now);
            let renewed = sm.apply(&entry(
                now + 1,
                Command::RenewAccessToken {
                    id: [id; 32],
                    ttl_ms: 1_000_000,
                },
            ));
            if expected > now + 1 {
                assert_eq!(renewed.unwrap(), Applied::ExpiresAt(expected), "token {id}");
            }
        }
        let before = backend.dump();
        for not_after in [now, now - 1, 0] {
            assert!(matches!(
                sm.apply(&entry(now, login(64, not_after, 100_000))),
                Err(ApplyError::KubernetesTokenExpired)
            ));
        }
        assert!(matches!(
            sm.apply(&entry(now, login(64, 100_000, 0))),
            Err(ApplyError::KubernetesTokenExpired)
        ));
        assert_eq!(backend.dump(), before, "an expired login writes nothing");
    }

    #[test]
    fn kubernetes_role_names_are_listed_in_pages_per_namespace() {
        let (sm, _) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1_000_000);
        let other = token(&sm, 2, "ns-b", &["admin"], 10, 1_000_000);
        let role = k8s_role(&["k8s/app"], &[], 1000);
        for name in ["c", "a", "e", "b", "d"] {
            sm.apply(&entry(20, put_role(admin, "ns", name, role.clone())))
                .unwrap();
        }
        sm.apply(&entry(20, put_role(other, "ns-b", "a0", role.clone())))
            .unwrap();
        sm.apply(&entry(
            20,
            Command::PutPolicy {
                by: Actor::AccessToken { id: admin },
                namespace: "ns".into(),
                name: "pol".into(),
                policy: Policy { rules: vec![] },
            },
        ))
        .unwrap();
        let page = sm.kubernetes_role_names("ns", None, 2).unwrap();
        assert_eq!(page.names, ["a", "b"]);
        assert!(page.truncated);
        let page = sm.kubernetes_role_names("ns", Some("b"), 2).unwrap();
        assert_eq!(page.names, ["c", "d"]);
        assert!(page.truncated);
        let page = sm.kubernetes_role_names("ns", Some("d"), 2).unwrap();
        assert_eq!(page.names, ["e"]);
        assert!(!page.truncated);
        let page = sm.kubernetes_role_names("ns", None, 10).unwrap();
        assert_eq!(page.names, ["a", "b", "c", "d", "e"]);
        assert_eq!(
            sm.kubernetes_role_names("ns-b", None, 10).unwrap().names,
            ["a0"]
        );
        assert_eq!(
            sm.kubernetes_role_names("n", None, 10).unwrap().names,
            Vec::<String>::new()
        );
        assert_eq!(sm.policy_names("ns", None, 10).unwrap().names, ["pol"]);
    }

    #[test]
    fn sweep_removes_only_expired_tokens_in_bounded_batches() {
        let (sm, _) = sm();
        for i in 0..(SWEEP_BATCH + 5) {
            let id = [
                (i % 250) as u8 + 1,
                (i / 250) as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                9,
            ];
            sm.apply(&entry(
                10,
                Command::CreateAccessToken {
                    id,
                    namespace: "ns".into(),
                    policies: vec![],
                    ttl_ms: 5,
                    max_ttl_ms: 5,
                },
            ))
            .unwrap();
        }
        let live = token(&sm, 200, "ns", &[], 10, 1000);
        assert_eq!(
            sm.apply(&entry(100, Command::Sweep)).unwrap(),
            Applied::Swept {
                removed: SWEEP_BATCH,
                more: true
            }
        );
        assert_eq!(
            sm.apply(&entry(100, Command::Sweep)).unwrap(),
            Applied::Swept {
                removed: 5,
                more: false
            }
        );
        assert!(sm.access_token(&live).unwrap().is_some());
    }

    fn create_key(by: [u8; 32], name: &str, uid: u8) -> Command {
        Command::CreateNamedKey {
            by: Actor::AccessToken { id: by },
            namespace: "ns".into(),
            name: name.into(),
            uid: [uid; 16],
            wrapped: vec![uid; 8],
        }
    }

    fn rotate_key(by: [u8; 32], version: u32) -> Command {
        Command::RotateNamedKey {
            by: Actor::AccessToken { id: by },
            namespace: "ns".into(),
            name: "k".into(),
            version,
            wrapped: vec![version as u8; 8],
        }
    }

    fn reserve_key(uid: u8, version: u32, count: u64, limit: u64) -> Command {
        Command::ReserveKeyEncryptions {
            namespace: "ns".into(),
            name: "k".into(),
            uid: [uid; 16],
            version,
            count,
            limit,
        }
    }

    #[test]
    fn named_keys_are_created_once_rotated_in_order_and_reserved_up_to_the_limit() {
        // Steps: create k (admin); again → exists; rotate to 2, then a
        // second "2" → stale; configure min 0 / 3 / 2 / 1 (only 2 holds);
        // reserve under v1 or another uid → stale; under v2 up to the limit,
        // then exhausted; rotate to 3 → a fresh count; nothing a refusal
        // touched changed.
        let (sm, backend) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1_000_000);
        assert_eq!(
            sm.apply(&entry(20, create_key(admin, "k", 7))).unwrap(),
            Applied::Version(1)
        );
        let before = backend.dump();
        assert!(matches!(
            sm.apply(&entry(21, create_key(admin, "k", 8))),
            Err(ApplyError::NamedKeyExists)
        ));
        assert_eq!(backend.dump(), before, "a refused create wrote");
        assert_eq!(
            sm.apply(&entry(22, rotate_key(admin, 2))).unwrap(),
            Applied::Version(2)
        );
        assert!(matches!(
            sm.apply(&entry(23, rotate_key(admin, 2))),
            Err(ApplyError::StaleKeyVersion { latest: 2 })
        ));
        let record = sm.named_key("ns", "k").unwrap().unwrap();
        assert_eq!(record.uid, [7; 16]);
        assert_eq!(
            record
                .versions
                .iter()
                .map(|v| (v.version, v.created_at_ms))
                .collect::<Vec<_>>(),
            [(1, 20), (2, 22)]
        );
        assert_eq!(record.version(2).unwrap().wrapped, vec![2; 8]);
        assert_eq!(record.version(3), None);
        assert_eq!(record.version(0), None);
        let configure = |min| Command::ConfigureNamedKey {
            by: Actor::AccessToken { id: admin },
            namespace: "ns".into(),
            name: "k".into(),
            min_decryption_version: min,
        };
        for bad in [0, 3] {
            assert!(matches!(
                sm.apply(&entry(24, configure(bad))),
                Err(ApplyError::NamedKeyRefused(_))
            ));
        }
        sm.apply(&entry(25, configure(2))).unwrap();
        assert!(
            matches!(sm.apply(&entry(26, configure(1))), Err(ApplyError::NamedKeyRefused(m)) if m.contains("never goes down"))
        );
        // Reservations: the latest version of the same key only.
        for stale in [reserve_key(7, 1, 5, 10), reserve_key(8, 2, 5, 10)] {
            assert!(matches!(
                sm.apply(&entry(27, stale)),
                Err(ApplyError::StaleKeyVersion { latest: 2 })
            ));
        }
        assert_eq!(
            sm.apply(&entry(28, reserve_key(7, 2, 6, 10))).unwrap(),
            Applied::Reserved { start: 0, count: 6 }
        );
        assert_eq!(
            sm.apply(&entry(29, reserve_key(7, 2, 6, 10))).unwrap(),
            Applied::Reserved { start: 6, count: 4 }
        );
        assert!(matches!(
            sm.apply(&entry(30, reserve_key(7, 2, 6, 10))),
            Err(ApplyError::NamedKeyExhausted { version: 2 })
        ));
        // A limit past 2^32 is cut to it.
        sm.apply(&entry(31, rotate_key(admin, 3))).unwrap();
        assert_eq!(
            sm.apply(&entry(32, reserve_key(7, 3, 5, u64::MAX)))
                .unwrap(),
            Applied::Reserved { start: 0, count: 5 }
        );
        assert!(matches!(
            sm.apply(&entry(33, reserve_key(7, 9, 1, 10))),
            Err(ApplyError::StaleKeyVersion { latest: 3 })
        ));
        let missing = Command::ReserveKeyEncryptions {
            namespace: "other".into(),
            name: "k".into(),
            uid: [7; 16],
            version: 3,
            count: 1,
            limit: 10,
        };
        assert!(matches!(
            sm.apply(&entry(34, missing)),
            Err(ApplyError::NotFound)
        ));
    }

    #[test]
    fn named_keys_are_listed_per_namespace() {
        let (sm, _) = sm();
        let admin = token(&sm, 1, "ns", &["admin"], 10, 1_000_000);
        for (i, name) in ["b", "a", "c"].iter().enumerate() {
            sm.apply(&entry(20 + i as u64, create_key(admin, name, i as u8)))
                .unwrap();
        }
        let page = sm.named_key_names("ns", None, 2).unwrap();
        assert_eq!(page.names, ["a", "b"]);
        assert!(page.truncated);
        let rest = sm.named_key_names("ns", Some("b"), 2).unwrap();
        assert_eq!(rest.names, ["c"]);
        assert!(sm
            .named_key_names("other", None, 10)
            .unwrap()
            .names
            .is_empty());
    }
}
