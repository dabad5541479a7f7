//! The state machine: applies log entries to a storage backend.
//!
//! Invariant: `apply` is a deterministic function of (stored state, entry):
//! time comes from the entry, never the clock; nothing random; a rejected
//! command changes nothing; each command is one atomic backend batch.
//! Authorization is checked again here against the token state at the entry's
//! time, so a write never applies under a token revoked or expired before it.
//! Architecture invariant: this file never imports the barrier; it moves
//! ciphertext it cannot read.

use std::sync::Arc;

use thiserror::Error;

use super::command::{
    Applied, Command, NewGatekeeperToken, Rejection, Request, Response, IDEMPOTENCY_WINDOW_MS,
};
use super::listing::{list_level, resume_after, NamePage};
use crate::acl::{self, Acl, Capability, Policy};
use crate::keyspace::{self, *};
use crate::storage::{Backend, BatchOp, StorageError};

/// Most gatekeeper tokens that may exist at once (keeps a rekey's batch small).
pub const MAX_GATEKEEPER_TOKENS: usize = 64;
/// Most records one sweep removes (keeps every batch under etcd's txn limit).
pub const SWEEP_BATCH: usize = 100;
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
    /// The token's policies do not allow this.
    #[error("permission denied: {0}")]
    Forbidden(String),
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
            ApplyError::Forbidden(m) => Rejection::Forbidden(m),
            ApplyError::CasMismatch { expected, actual } => {
                Rejection::CasMismatch { expected, actual }
            }
            ApplyError::NotFound => Rejection::NotFound,
            ApplyError::GatekeeperTokenInvalid => Rejection::GatekeeperTokenInvalid,
            ApplyError::TooManyGatekeeperTokens => Rejection::TooManyGatekeeperTokens,
            ApplyError::IdempotencyKeyReused => Rejection::IdempotencyKeyReused,
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
            Rejection::Forbidden(m) => ApplyError::Forbidden(m),
            Rejection::CasMismatch { expected, actual } => {
                ApplyError::CasMismatch { expected, actual }
            }
            Rejection::NotFound => ApplyError::NotFound,
            Rejection::GatekeeperTokenInvalid => ApplyError::GatekeeperTokenInvalid,
            Rejection::TooManyGatekeeperTokens => ApplyError::TooManyGatekeeperTokens,
            Rejection::IdempotencyKeyReused => ApplyError::IdempotencyKeyReused,
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

    /// How many encryptions term `term` has been used for.
    pub fn term_usage(&self, term: u32) -> Result<u64, StorageError> {
        Ok(self.get::<u64>(&term_usage_key(term))?.unwrap_or(0))
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

    /// Every gatekeeper token.
    pub fn gatekeeper_tokens(&self) -> Result<Vec<GatekeeperTokenRecord>, StorageError> {
        self.backend
            .scan_prefix(GATEKEEPER_TOKEN_PREFIX.as_bytes(), None)?
            .iter()
            .map(|(_, v)| keyspace::decode(v))
            .collect()
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
    /// keys only, at most `limit + 1` of them.
    pub fn policy_names(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<NamePage, StorageError> {
        let prefix = policy_prefix(namespace);
        let from = after.map(|name| {
            let mut k = policy_key(namespace, name);
            k.push(0);
            k
        });
        let mut keys = self
            .backend
            .scan_keys(&prefix, from.as_deref(), limit.saturating_add(1))?;
        let truncated = keys.len() > limit;
        keys.truncate(limit);
        Ok(NamePage {
            names: keys
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
                .collect(),
            truncated,
        })
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
        let base = kv_prefix(namespace, prefix);
        let from = match after {
            None => None,
            Some(name) => match resume_after(&base, name) {
                Some(from) => Some(from),
                None => return Ok(NamePage::default()),
            },
        };
        list_level(self.backend.as_ref(), &base, from, limit)
    }

    /// Check, as of `now`, that `token` is live, locked to `namespace`, and
    /// that its ACL passes `check`.
    fn authorize(
        &self,
        token: &[u8; 32],
        namespace: &str,
        now: u64,
        what: &str,
        check: impl FnOnce(&Acl) -> bool,
    ) -> Result<(), ApplyError> {
        let record = self.access_token(token)?.ok_or(ApplyError::TokenInvalid)?;
        if record.expires_at_ms <= now {
            return Err(ApplyError::TokenInvalid);
        }
        if record.namespace != namespace {
            return Err(ApplyError::Forbidden(format!(
                "token is not valid for namespace {namespace}"
            )));
        }
        let acl = self.acl_for(&record)?;
        if check(&acl) {
            Ok(())
        } else {
            Err(ApplyError::Forbidden(what.to_string()))
        }
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

    /// Validate `entry` against the stored state and compute its batch.
    fn plan(&self, entry: &Request) -> Result<(Vec<BatchOp>, Applied), ApplyError> {
        let now = entry.time_ms;
        let initialized = self.backend.get(INIT)?.is_some();
        match (&entry.command, initialized) {
            (Command::Init { .. }, true) => return Err(ApplyError::AlreadyInitialized),
            (Command::Init { .. }, false) => {}
            (_, false) => return Err(ApplyError::NotInitialized),
            _ => {}
        }
        let mut batch = Vec::new();
        let applied = match &entry.command {
            Command::Init {
                shares,
                threshold,
                wrapped_root,
                keychain,
                access_key_hash,
                gatekeeper_tokens,
            } => {
                batch.push(put(
                    INIT.to_vec(),
                    &InitRecord {
                        shares: *shares,
                        threshold: *threshold,
                        initialized_at_ms: now,
                        rekeyed_at_ms: now,
                    },
                ));
                batch.push(BatchOp::Put {
                    key: ROOT_KEY.to_vec(),
                    value: wrapped_root.clone(),
                });
                batch.push(BatchOp::Put {
                    key: KEYCHAIN.to_vec(),
                    value: keychain.clone(),
                });
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
                Applied::Done
            }
            Command::RotateKeychain { keychain, .. } => {
                batch.push(BatchOp::Put {
                    key: KEYCHAIN.to_vec(),
                    value: keychain.clone(),
                });
                Applied::Done
            }
            Command::Rekey {
                shares,
                threshold,
                wrapped_root,
                keychain,
                gatekeeper_tokens,
            } => {
                let old: InitRecord = self.get(INIT)?.ok_or(ApplyError::NotInitialized)?;
                if gatekeeper_tokens.len() > MAX_GATEKEEPER_TOKENS {
                    return Err(ApplyError::TooManyGatekeeperTokens);
                }
                batch.push(put(
                    INIT.to_vec(),
                    &InitRecord {
                        shares: *shares,
                        threshold: *threshold,
                        rekeyed_at_ms: now,
                        ..old
                    },
                ));
                batch.push(BatchOp::Put {
                    key: ROOT_KEY.to_vec(),
                    value: wrapped_root.clone(),
                });
                batch.push(BatchOp::Put {
                    key: KEYCHAIN.to_vec(),
                    value: keychain.clone(),
                });
                for (key, _) in self
                    .backend
                    .scan_prefix(GATEKEEPER_TOKEN_PREFIX.as_bytes(), None)?
                {
                    batch.push(BatchOp::Delete { key });
                }
                batch.extend(
                    gatekeeper_tokens
                        .iter()
                        .map(|t| put_gatekeeper_token(t, now)),
                );
                Applied::Done
            }
            Command::MintGatekeeperTokens { tokens } => {
                let existing = self
                    .backend
                    .scan_prefix(GATEKEEPER_TOKEN_PREFIX.as_bytes(), None)?
                    .len();
                if existing + tokens.len() > MAX_GATEKEEPER_TOKENS {
                    return Err(ApplyError::TooManyGatekeeperTokens);
                }
                batch.extend(tokens.iter().map(|t| put_gatekeeper_token(t, now)));
                Applied::Done
            }
            Command::UseGatekeeperToken {
                id,
                grace_ms,
                replacement_wrapped,
                replacement,
            } => {
                let mut record = self
                    .gatekeeper_token(id)?
                    .ok_or(ApplyError::GatekeeperTokenInvalid)?;
                if record.used.is_some() {
                    return Err(ApplyError::GatekeeperTokenInvalid);
                }
                record.used = Some(GatekeeperTokenUse {
                    at_ms: now,
                    grace_until_ms: now.saturating_add(*grace_ms),
                    replacement_wrapped: replacement_wrapped.clone(),
                });
                batch.push(put(gatekeeper_token_key(id), &record));
                batch.push(put_gatekeeper_token(replacement, now));
                Applied::Done
            }
            Command::RevokeGatekeeperToken { id } => {
                let key = gatekeeper_token_key(id);
                let found = self.backend.get(&key)?.is_some();
                batch.push(BatchOp::Delete { key });
                Applied::Deleted(found)
            }
            Command::RotateAccessKey { hash } => {
                batch.push(put(
                    ACCESS_KEY.to_vec(),
                    &AccessKeyRecord {
                        hash: *hash,
                        created_at_ms: now,
                    },
                ));
                Applied::Done
            }
            Command::CreateAccessToken {
                id,
                namespace,
                policies,
                ttl_ms,
                max_ttl_ms,
            } => {
                batch.push(put(
                    access_token_key(id),
                    &AccessTokenRecord {
                        namespace: namespace.clone(),
                        policies: policies.clone(),
                        created_at_ms: now,
                        expires_at_ms: now.saturating_add(*ttl_ms),
                        ttl_ms: *ttl_ms,
                        max_expires_at_ms: now.saturating_add(*max_ttl_ms),
                    },
                ));
                Applied::Done
            }
            Command::RenewAccessToken { id, ttl_ms } => {
                let mut record = self.access_token(id)?.ok_or(ApplyError::TokenInvalid)?;
                if record.expires_at_ms <= now {
                    return Err(ApplyError::TokenInvalid);
                }
                record.expires_at_ms = now
                    .saturating_add(*ttl_ms)
                    .min(record.max_expires_at_ms)
                    .max(record.expires_at_ms);
                let expires = record.expires_at_ms;
                batch.push(put(access_token_key(id), &record));
                Applied::ExpiresAt(expires)
            }
            Command::RevokeAccessToken { id } => {
                let key = access_token_key(id);
                let found = self.backend.get(&key)?.is_some();
                batch.push(BatchOp::Delete { key });
                Applied::Deleted(found)
            }
            Command::PutPolicy {
                token,
                namespace,
                name,
                policy,
            } => {
                self.authorize(
                    token,
                    namespace,
                    now,
                    "managing policies needs the admin policy",
                    |acl| acl.is_admin(),
                )?;
                batch.push(put(policy_key(namespace, name), policy));
                Applied::Done
            }
            Command::DeletePolicy {
                token,
                namespace,
                name,
            } => {
                self.authorize(
                    token,
                    namespace,
                    now,
                    "managing policies needs the admin policy",
                    |acl| acl.is_admin(),
                )?;
                let key = policy_key(namespace, name);
                if self.backend.get(&key)?.is_none() {
                    return Err(ApplyError::NotFound);
                }
                batch.push(BatchOp::Delete { key });
                Applied::Deleted(true)
            }
            Command::PutSecret {
                token,
                namespace,
                path,
                cas,
                term,
                ciphertext,
            } => {
                let current = self.secret(namespace, path)?;
                let (cap, what) = match current {
                    Some(_) => (
                        Capability::Update,
                        format!("update of {path} is not allowed"),
                    ),
                    None => (
                        Capability::Create,
                        format!("create of {path} is not allowed"),
                    ),
                };
                self.authorize(token, namespace, now, &what, |acl| acl.allows(path, cap))?;
                let actual = current.as_ref().map_or(0, |r| r.version);
                if let Some(expected) = cas {
                    if *expected != actual {
                        return Err(ApplyError::CasMismatch {
                            expected: *expected,
                            actual,
                        });
                    }
                }
                let record = KvRecord {
                    version: actual + 1,
                    ciphertext: ciphertext.clone(),
                    created_at_ms: current.as_ref().map_or(now, |r| r.created_at_ms),
                    updated_at_ms: now,
                };
                let usage = self.term_usage(*term)?;
                batch.push(put(kv_key(namespace, path), &record));
                batch.push(put(term_usage_key(*term), &(usage + 1)));
                Applied::Version(record.version)
            }
            Command::DeleteSecret {
                token,
                namespace,
                path,
            } => {
                self.authorize(
                    token,
                    namespace,
                    now,
                    &format!("delete of {path} is not allowed"),
                    |acl| acl.allows(path, Capability::Delete),
                )?;
                let key = kv_key(namespace, path);
                if self.backend.get(&key)?.is_none() {
                    return Err(ApplyError::NotFound);
                }
                batch.push(BatchOp::Delete { key });
                Applied::Deleted(true)
            }
            Command::Sweep => {
                let mut more = false;
                for (key, value) in self
                    .backend
                    .scan_prefix(ACCESS_TOKEN_PREFIX.as_bytes(), None)?
                {
                    let record: AccessTokenRecord = keyspace::decode(&value)?;
                    if record.expires_at_ms <= now {
                        if batch.len() == SWEEP_BATCH {
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
                        if batch.len() == SWEEP_BATCH {
                            more = true;
                            break;
                        }
                        batch.push(BatchOp::Delete { key });
                    }
                }
                for (key, value) in self
                    .backend
                    .scan_prefix(IDEMPOTENCY_PREFIX.as_bytes(), None)?
                {
                    let record: IdempotencyRecord = keyspace::decode(&value)?;
                    if record.expires_at_ms <= now {
                        if batch.len() == SWEEP_BATCH {
                            more = true;
                            break;
                        }
                        batch.push(BatchOp::Delete { key });
                    }
                }
                Applied::Swept {
                    removed: batch.len(),
                    more,
                }
            }
        };
        Ok((batch, applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Rule;
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
            token,
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
                token: admin,
                namespace: "ns".into(),
                name: "ro".into(),
                policy: ro.clone(),
            },
        ))
        .unwrap();
        assert!(matches!(
            sm.apply(&entry(12, put_secret(reader, "app/x", None))),
            Err(ApplyError::Forbidden(_))
        ));
        assert!(matches!(
            sm.apply(&entry(12, put_secret(other, "app/x", None))),
            Err(ApplyError::Forbidden(_))
        ));
        assert!(matches!(
            sm.apply(&entry(
                13,
                Command::PutPolicy {
                    token: reader,
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
            token: t,
            namespace: "ns".into(),
            path: "k".into(),
        };
        assert_eq!(
            sm.apply(&entry(15, d.clone())).unwrap(),
            Applied::Deleted(true)
        );
        assert!(matches!(sm.apply(&entry(16, d)), Err(ApplyError::NotFound)));
    }

    fn keyed(time_ms: u64, command: Command, id: u8, fingerprint: u8) -> Request {
        Request {
            time_ms,
            command,
            idempotency: Some(crate::raft::command::Idempotency {
                id: [id; 32],
                fingerprint: [fingerprint; 32],
            }),
        }
    }

    #[test]
    fn a_repeated_idempotency_key_gets_the_first_outcome() {
        use crate::raft::command::IDEMPOTENCY_WINDOW_MS as WINDOW;
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
}
