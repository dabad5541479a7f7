//! The service layer: every operation of kstash, shared by REST and gRPC.
//!
//! Each operation runs the guard first (sealed? credentials? ACL?), then
//! builds a command (encrypting through the barrier where a secret is
//! involved) and proposes it. Reads check the guard and decrypt.
//! Invariants: while sealed, only status and unseal answer; every error
//! message is free of secrets; a failed call changes nothing.

mod error;
pub mod types;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use zeroize::Zeroizing;

pub use error::ServiceError;
use types::*;

use crate::acl::{self, path, Acl, Capability, Policy};
use crate::barrier::{self, Barrier, BarrierError, Keychain};
use crate::clock::{rfc3339, Clock};
use crate::gatekeeper::{self, shamir, GatekeeperError};
use crate::keyspace::{self, AccessTokenRecord};
use crate::raft::command::{Applied, Command};
use crate::raft::state_machine::{StateMachine, MAX_GATEKEEPER_TOKENS};
use crate::raft::SingleNode;
use crate::secret::{self, Key32, SecretKind, SecretString};

/// Most gatekeeper tokens one call may mint.
pub const MAX_MINT: u32 = 16;
/// Most policies one access token may carry.
pub const MAX_TOKEN_POLICIES: usize = 32;
/// Most entries one list call returns.
pub const MAX_LIST: usize = 10_000;

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

/// A caller authenticated by an access token.
struct Caller {
    id: [u8; 32],
    record: AccessTokenRecord,
    acl: Acl,
}

/// One kstash node's services.
pub struct Node {
    raft: Arc<SingleNode>,
    barrier: Barrier,
    clock: Arc<dyn Clock>,
    settings: Settings,
    progress: Mutex<Option<Progress>>,
    /// Serialises keychain changes (rotation, rekey).
    keychain_lock: tokio::sync::Mutex<()>,
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
    /// A sealed node over `raft`.
    pub fn new(raft: Arc<SingleNode>, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        Node {
            barrier: Barrier::new(settings.encryption_limit),
            raft,
            clock,
            settings,
            progress: Mutex::new(None),
            keychain_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn sm(&self) -> &StateMachine {
        self.raft.state_machine()
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether the barrier is sealed.
    pub fn is_sealed(&self) -> bool {
        self.barrier.is_sealed()
    }

    // ----- sys: status, init, unseal, seal -------------------------------

    /// Status: safe to show to anyone, sealed or not.
    pub fn status(&self) -> Result<Status, ServiceError> {
        let init = self.sm().init_record()?;
        let sealed = self.barrier.is_sealed();
        let progress = if sealed { self.live_progress_len() } else { 0 };
        Ok(Status {
            initialized: init.is_some(),
            sealed,
            threshold: init.as_ref().map_or(0, |i| i.threshold as u32),
            shares: init.as_ref().map_or(0, |i| i.shares as u32),
            progress,
            storage: self.sm().backend().name().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: self.settings.node_id,
            leader: true,
            key_term: self.barrier.active_term(),
            peers: vec![PeerStatus {
                id: self.settings.node_id,
                address: self.settings.api_address.clone(),
                sealed,
                leader: true,
            }],
        })
    }

    fn live_progress_len(&self) -> u32 {
        let now = self.now();
        let mut guard = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if guard
            .as_ref()
            .is_some_and(|p| now.saturating_sub(p.last_key_ms) > ms(self.settings.unseal_timeout))
        {
            *guard = None;
        }
        guard.as_ref().map_or(0, |p| p.keys.len() as u32)
    }

    /// Initialise: make the gatekeeper key, root key, keychain, access key
    /// and gatekeeper tokens; return the secrets once. Leaves the node sealed.
    pub async fn init(&self, req: InitRequest) -> Result<InitResponse, ServiceError> {
        let (shares, threshold) = shamir::check_parameters(req.shares, req.threshold)?;
        if req.gatekeeper_tokens > MAX_MINT {
            return Err(ServiceError::bad(format!(
                "at most {MAX_MINT} gatekeeper tokens at init"
            )));
        }
        if self.sm().init_record()?.is_some() {
            return Err(ServiceError::Conflict(
                "kstash is already initialized".into(),
            ));
        }
        let gatekeeper_key = Key32::random();
        let root = Key32::random();
        let keychain = Keychain::first(self.now()).wrap(&root);
        let wrapped_root = barrier::wrap_root(&gatekeeper_key, &root);
        let unseal_keys = shamir::split(&gatekeeper_key, shares, threshold);
        let access_key = secret::new_bearer(SecretKind::AccessKey);
        let minted: Vec<_> = (0..req.gatekeeper_tokens)
            .map(|_| gatekeeper::mint_token(&gatekeeper_key))
            .collect();
        drop(gatekeeper_key);
        drop(root);
        self.raft
            .propose(Command::Init {
                shares,
                threshold,
                wrapped_root,
                keychain,
                access_key_hash: secret::hash_secret(&access_key),
                gatekeeper_tokens: minted.iter().map(|m| m.record.clone()).collect(),
            })
            .await?;
        tracing::info!(shares, threshold, "initialized");
        Ok(InitResponse {
            unseal_keys,
            access_key,
            gatekeeper_tokens: minted.into_iter().map(|m| m.token).collect(),
        })
    }

    fn require_initialized(&self) -> Result<keyspace::InitRecord, ServiceError> {
        self.sm().init_record()?.ok_or(ServiceError::NotInitialized)
    }

    /// Unseal with one unseal key (progress kept), one gatekeeper token, or
    /// reset the progress.
    pub async fn unseal(&self, req: UnsealRequest) -> Result<UnsealResponse, ServiceError> {
        let given =
            req.key.is_some() as u8 + req.gatekeeper_token.is_some() as u8 + req.reset as u8;
        if given != 1 {
            return Err(ServiceError::bad(
                "give exactly one of key, gatekeeper_token or reset",
            ));
        }
        let init = self.require_initialized()?;
        if req.reset {
            *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Ok(UnsealResponse {
                status: self.status()?,
                gatekeeper_token: None,
            });
        }
        if !self.barrier.is_sealed() {
            return Ok(UnsealResponse {
                status: self.status()?,
                gatekeeper_token: None,
            });
        }
        let mut replacement = None;
        if let Some(token) = req.gatekeeper_token {
            let (gk, rep) = self.use_gatekeeper_token(&token).await?;
            self.open_barrier(&gk)?;
            replacement = Some(rep);
        } else if let Some(key) = req.key {
            let key = shamir::parse(key.expose())?;
            if let Some(gk) = self.add_progress(key, init.threshold)? {
                let opened = self.open_barrier(&gk);
                if opened.is_err() {
                    return Err(ServiceError::bad(
                        "the unseal keys do not reconstruct this store's gatekeeper key; progress was reset",
                    ));
                }
            }
        }
        if !self.barrier.is_sealed() {
            *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!("unsealed");
        }
        Ok(UnsealResponse {
            status: self.status()?,
            gatekeeper_token: replacement,
        })
    }

    /// Add one key to the progress; at the threshold, combine (and clear).
    fn add_progress(
        &self,
        key: shamir::UnsealKey,
        threshold: u8,
    ) -> Result<Option<Key32>, ServiceError> {
        let now = self.now();
        let mut guard = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let expired = guard
            .as_ref()
            .is_some_and(|p| now.saturating_sub(p.last_key_ms) > ms(self.settings.unseal_timeout));
        if expired {
            *guard = None;
        }
        let progress = guard.get_or_insert_with(|| Progress {
            keys: Vec::new(),
            last_key_ms: now,
        });
        if progress.keys.iter().any(|k| k.index() == key.index()) {
            return Err(GatekeeperError::DuplicateUnsealKey.into());
        }
        progress.keys.push(key);
        progress.last_key_ms = now;
        if progress.keys.len() < threshold as usize {
            return Ok(None);
        }
        let keys = guard.take().map(|p| p.keys).unwrap_or_default();
        Ok(Some(shamir::combine(&keys, threshold)?))
    }

    /// Open the barrier with the gatekeeper key.
    fn open_barrier(&self, gatekeeper_key: &Key32) -> Result<(), ServiceError> {
        let root = self.root_from(gatekeeper_key)?;
        let chain = self.sm().keychain()?.ok_or(ServiceError::Internal)?;
        let sm = self.sm().clone();
        self.barrier
            .open(root, &chain, |term| sm.term_usage(term).unwrap_or(u64::MAX))
            .map_err(|_| ServiceError::Internal)
    }

    /// Unwrap the root key: proves the gatekeeper key is this store's.
    fn root_from(&self, gatekeeper_key: &Key32) -> Result<Key32, ServiceError> {
        let wrapped = self
            .sm()
            .wrapped_root()?
            .ok_or(ServiceError::NotInitialized)?;
        barrier::unwrap_root(gatekeeper_key, &wrapped).map_err(|_| {
            ServiceError::bad("the unseal keys do not reconstruct this store's gatekeeper key")
        })
    }

    /// Rebuild the gatekeeper key from a threshold of unseal keys in one call.
    fn gatekeeper_key_from_keys(&self, keys: &[SecretString]) -> Result<Key32, ServiceError> {
        let init = self.require_initialized()?;
        let parsed = keys
            .iter()
            .map(|k| shamir::parse(k.expose()))
            .collect::<Result<Vec<_>, _>>()?;
        let gk = shamir::combine(&parsed, init.threshold)?;
        self.root_from(&gk)?;
        Ok(gk)
    }

    /// Use a gatekeeper token: returns the gatekeeper key and the token's
    /// replacement. The first use records the use through the log; a repeat
    /// inside the grace window returns the same replacement.
    async fn use_gatekeeper_token(
        &self,
        token: &SecretString,
    ) -> Result<(Key32, SecretString), ServiceError> {
        let invalid =
            || ServiceError::Unauthorized("gatekeeper token is invalid, used or expired".into());
        if !secret::looks_like(SecretKind::GatekeeperToken, token.expose()) {
            return Err(invalid());
        }
        let id = secret::hash_secret(token);
        for _ in 0..2 {
            let record = self.sm().gatekeeper_token(&id)?.ok_or_else(invalid)?;
            let gk = gatekeeper::unwrap_with_token(token, &id, &record.wrapped_key)
                .ok_or_else(invalid)?;
            if let Some(used) = &record.used {
                if self.now() >= used.grace_until_ms {
                    return Err(invalid());
                }
                let rep = gatekeeper::unwrap_replacement(token, &id, &used.replacement_wrapped)
                    .ok_or_else(invalid)?;
                return Ok((gk, rep));
            }
            let minted = gatekeeper::mint_token(&gk);
            let replacement_wrapped = gatekeeper::wrap_replacement(token, &id, &minted.token);
            match self
                .raft
                .propose(Command::UseGatekeeperToken {
                    id,
                    grace_ms: ms(self.settings.gatekeeper_grace),
                    replacement_wrapped,
                    replacement: minted.record,
                })
                .await
            {
                Ok(_) => return Ok((gk, minted.token)),
                // Used concurrently: read again and take the grace path.
                Err(crate::raft::ProposeError::Rejected(
                    crate::raft::state_machine::ApplyError::GatekeeperTokenInvalid,
                )) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(invalid())
    }

    /// The gatekeeper key from whichever proof `auth` carries, plus the
    /// replacement when a gatekeeper token was used.
    async fn authorize_gatekeeper(
        &self,
        auth: &GatekeeperAuth,
    ) -> Result<(Key32, Option<SecretString>), ServiceError> {
        match (&auth.gatekeeper_token, auth.keys.is_empty()) {
            (Some(token), true) => {
                let (gk, rep) = self.use_gatekeeper_token(token).await?;
                self.root_from(&gk).map_err(|_| ServiceError::Internal)?;
                Ok((gk, Some(rep)))
            }
            (None, false) => Ok((self.gatekeeper_key_from_keys(&auth.keys)?, None)),
            _ => Err(ServiceError::bad("give either gatekeeper_token or keys")),
        }
    }

    fn require_unsealed(&self) -> Result<(), ServiceError> {
        if self.barrier.is_sealed() {
            Err(ServiceError::Sealed)
        } else {
            Ok(())
        }
    }

    /// Seal the barrier (gatekeeper token or unseal keys).
    pub async fn seal(&self, auth: GatekeeperAuth) -> Result<SysResponse, ServiceError> {
        self.require_unsealed()?;
        let (gk, rep) = self.authorize_gatekeeper(&auth).await?;
        drop(gk);
        self.barrier.seal();
        tracing::info!("sealed");
        Ok(SysResponse {
            gatekeeper_token: rep,
            ..Default::default()
        })
    }

    /// Add a new encryption key term (gatekeeper token or unseal keys).
    pub async fn rotate(&self, auth: GatekeeperAuth) -> Result<SysResponse, ServiceError> {
        self.require_unsealed()?;
        let (gk, rep) = self.authorize_gatekeeper(&auth).await?;
        drop(gk);
        let term = self.rotate_keychain(None).await?;
        Ok(SysResponse {
            gatekeeper_token: rep,
            key_term: Some(term),
            ..Default::default()
        })
    }

    /// Rotate the keychain with the in-memory root key; also what a write
    /// does when the active term reaches its encryption limit.
    /// With `exhausted = Some(term)`, rotates only if `term` is still the
    /// active one, so writers that hit the limit together rotate once.
    async fn rotate_keychain(&self, exhausted: Option<u32>) -> Result<u32, ServiceError> {
        let _guard = self.keychain_lock.lock().await;
        if let (Some(old), Some(now)) = (exhausted, self.barrier.active_term()) {
            if old != now {
                return Ok(now);
            }
        }
        let (term, blob) = self.barrier.prepare_rotation(self.now())?;
        self.raft
            .propose(Command::RotateKeychain {
                term,
                keychain: blob.clone(),
            })
            .await?;
        let sm = self.sm().clone();
        self.barrier
            .install(&blob, |t| sm.term_usage(t).unwrap_or(u64::MAX))?;
        tracing::info!(term, "encryption key rotated");
        Ok(term)
    }

    /// Reload the keychain after another node rotated it.
    fn reload_keychain(&self) -> Result<(), ServiceError> {
        let chain = self.sm().keychain()?.ok_or(ServiceError::Internal)?;
        let sm = self.sm().clone();
        self.barrier
            .install(&chain, |t| sm.term_usage(t).unwrap_or(u64::MAX))?;
        Ok(())
    }

    /// New unseal keys from a threshold of current ones: new gatekeeper key,
    /// new root key, keychain re-wrapped, every gatekeeper token revoked.
    pub async fn rekey(&self, req: RekeyRequest) -> Result<RekeyResponse, ServiceError> {
        self.require_unsealed()?;
        let (shares, threshold) = shamir::check_parameters(req.shares, req.threshold)?;
        if req.gatekeeper_tokens > MAX_MINT {
            return Err(ServiceError::bad(format!(
                "at most {MAX_MINT} gatekeeper tokens per call"
            )));
        }
        let old = self.gatekeeper_key_from_keys(&req.keys)?;
        drop(old);
        let _guard = self.keychain_lock.lock().await;
        let new_gk = Key32::random();
        let (root, keychain) = self.barrier.prepare_rekey()?;
        let wrapped_root = barrier::wrap_root(&new_gk, &root);
        let unseal_keys = shamir::split(&new_gk, shares, threshold);
        let minted: Vec<_> = (0..req.gatekeeper_tokens)
            .map(|_| gatekeeper::mint_token(&new_gk))
            .collect();
        drop(new_gk);
        self.raft
            .propose(Command::Rekey {
                shares,
                threshold,
                wrapped_root,
                keychain,
                gatekeeper_tokens: minted.iter().map(|m| m.record.clone()).collect(),
            })
            .await?;
        self.barrier.replace_root(root)?;
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
        tracing::info!(
            shares,
            threshold,
            "rekeyed; every earlier gatekeeper token is revoked"
        );
        Ok(RekeyResponse {
            unseal_keys,
            gatekeeper_tokens: minted.into_iter().map(|m| m.token).collect(),
        })
    }

    /// Mint gatekeeper tokens with unseal keys.
    pub async fn mint_gatekeeper_tokens(
        &self,
        req: MintGatekeeperTokensRequest,
    ) -> Result<MintGatekeeperTokensResponse, ServiceError> {
        self.require_unsealed()?;
        if req.count == 0 || req.count > MAX_MINT {
            return Err(ServiceError::bad(format!(
                "count must be between 1 and {MAX_MINT}"
            )));
        }
        // Serialised with rekey, so no token can wrap a replaced gatekeeper key.
        let _guard = self.keychain_lock.lock().await;
        let gk = self.gatekeeper_key_from_keys(&req.keys)?;
        let minted: Vec<_> = (0..req.count)
            .map(|_| gatekeeper::mint_token(&gk))
            .collect();
        drop(gk);
        if self.sm().gatekeeper_tokens()?.len() + minted.len() > MAX_GATEKEEPER_TOKENS {
            return Err(ServiceError::bad(format!(
                "at most {MAX_GATEKEEPER_TOKENS} gatekeeper tokens may exist; revoke some first"
            )));
        }
        self.raft
            .propose(Command::MintGatekeeperTokens {
                tokens: minted.iter().map(|m| m.record.clone()).collect(),
            })
            .await?;
        Ok(MintGatekeeperTokensResponse {
            ids: minted.iter().map(|m| hex::encode(m.record.id)).collect(),
            gatekeeper_tokens: minted.into_iter().map(|m| m.token).collect(),
        })
    }

    /// List gatekeeper tokens (ids and times only) with unseal keys.
    pub async fn list_gatekeeper_tokens(
        &self,
        req: KeysRequest,
    ) -> Result<Vec<GatekeeperTokenInfo>, ServiceError> {
        self.require_unsealed()?;
        drop(self.gatekeeper_key_from_keys(&req.keys)?);
        Ok(self
            .sm()
            .gatekeeper_tokens()?
            .into_iter()
            .map(|r| GatekeeperTokenInfo {
                id: hex::encode(r.id),
                created_at: rfc3339(r.created_at_ms),
                used_at: r.used.as_ref().map(|u| rfc3339(u.at_ms)),
                grace_until: r.used.as_ref().map(|u| rfc3339(u.grace_until_ms)),
            })
            .collect())
    }

    /// Use a gatekeeper token for nothing but its replacement.
    pub async fn renew_gatekeeper_token(
        &self,
        token: SecretString,
    ) -> Result<SysResponse, ServiceError> {
        self.require_unsealed()?;
        let (gk, rep) = self.use_gatekeeper_token(&token).await?;
        drop(gk);
        Ok(SysResponse {
            gatekeeper_token: Some(rep),
            ..Default::default()
        })
    }

    /// Revoke a gatekeeper token: by presenting it, or by id with unseal keys.
    pub async fn revoke_gatekeeper_token(
        &self,
        req: RevokeGatekeeperTokenRequest,
    ) -> Result<(), ServiceError> {
        self.require_unsealed()?;
        let id = match (&req.gatekeeper_token, &req.id) {
            (Some(token), None) if req.keys.is_empty() => {
                if !secret::looks_like(SecretKind::GatekeeperToken, token.expose()) {
                    return Err(ServiceError::Unauthorized(
                        "gatekeeper token is invalid".into(),
                    ));
                }
                secret::hash_secret(token)
            }
            (None, Some(id)) => {
                drop(self.gatekeeper_key_from_keys(&req.keys)?);
                let bytes = hex::decode(id)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                bytes.ok_or_else(|| ServiceError::bad("id must be 64 hex digits"))?
            }
            _ => {
                return Err(ServiceError::bad(
                    "give either gatekeeper_token, or id with keys",
                ))
            }
        };
        match self
            .raft
            .propose(Command::RevokeGatekeeperToken { id })
            .await?
        {
            Applied::Deleted(false) => {
                Err(ServiceError::NotFound("no such gatekeeper token".into()))
            }
            _ => Ok(()),
        }
    }

    /// Replace the access key (gatekeeper token or unseal keys).
    pub async fn rotate_access_key(
        &self,
        auth: GatekeeperAuth,
    ) -> Result<SysResponse, ServiceError> {
        self.require_unsealed()?;
        let (gk, rep) = self.authorize_gatekeeper(&auth).await?;
        drop(gk);
        let access_key = secret::new_bearer(SecretKind::AccessKey);
        self.raft
            .propose(Command::RotateAccessKey {
                hash: secret::hash_secret(&access_key),
            })
            .await?;
        tracing::info!("access key rotated");
        Ok(SysResponse {
            gatekeeper_token: rep,
            access_key: Some(access_key),
            ..Default::default()
        })
    }

    // ----- auth -----------------------------------------------------------

    /// Mint an access token with the access key.
    pub async fn login(&self, req: LoginRequest) -> Result<LoginResponse, ServiceError> {
        self.require_unsealed()?;
        let stored = self
            .sm()
            .access_key()?
            .ok_or(ServiceError::NotInitialized)?;
        let valid = secret::looks_like(SecretKind::AccessKey, req.access_key.expose())
            && secret::ct_eq(&secret::hash_secret(&req.access_key), &stored.hash);
        if !valid {
            return Err(ServiceError::Unauthorized("invalid access key".into()));
        }
        path::validate_namespace(&req.namespace)?;
        let mut policies: Vec<String> = Vec::new();
        for p in req.policies {
            path::validate_policy_name(&p)?;
            if !policies.contains(&p) {
                policies.push(p);
            }
        }
        if policies.len() > MAX_TOKEN_POLICIES {
            return Err(ServiceError::bad(format!(
                "at most {MAX_TOKEN_POLICIES} policies per token"
            )));
        }
        let ttl = req.ttl.map_or(self.settings.default_token_ttl, |t| t.0);
        self.check_ttl(ttl)?;
        let warnings = policies
            .iter()
            .filter(|p| !acl::is_builtin(p))
            .filter(|p| matches!(self.sm().policy(&req.namespace, p), Ok(None)))
            .map(|p| {
                format!(
                    "policy {p} does not exist in namespace {} yet",
                    req.namespace
                )
            })
            .collect();
        let token = secret::new_bearer(SecretKind::AccessToken);
        let id = secret::hash_secret(&token);
        self.raft
            .propose(Command::CreateAccessToken {
                id,
                namespace: req.namespace.clone(),
                policies: policies.clone(),
                ttl_ms: ms(ttl),
                max_ttl_ms: ms(self.settings.max_token_ttl),
            })
            .await?;
        let record = self.sm().access_token(&id)?.ok_or(ServiceError::Internal)?;
        Ok(LoginResponse {
            token,
            expires_at: rfc3339(record.expires_at_ms),
            namespace: req.namespace,
            policies,
            warnings,
        })
    }

    fn check_ttl(&self, ttl: Duration) -> Result<(), ServiceError> {
        if ttl < Duration::from_secs(1) {
            return Err(ServiceError::bad("ttl must be at least 1s"));
        }
        if ttl > self.settings.max_token_ttl {
            return Err(ServiceError::bad(format!(
                "ttl {} exceeds the maximum of {}",
                humantime::format_duration(ttl),
                humantime::format_duration(self.settings.max_token_ttl)
            )));
        }
        Ok(())
    }

    /// The guard: the barrier must be open and the token live.
    fn caller(&self, token: Option<&SecretString>) -> Result<Caller, ServiceError> {
        self.require_unsealed()?;
        let token =
            token.ok_or_else(|| ServiceError::Unauthorized("missing access token".into()))?;
        let invalid = || ServiceError::Unauthorized("access token is invalid or expired".into());
        if !secret::looks_like(SecretKind::AccessToken, token.expose()) {
            return Err(invalid());
        }
        let id = secret::hash_secret(token);
        let record = self.sm().access_token(&id)?.ok_or_else(invalid)?;
        if record.expires_at_ms <= self.now() {
            return Err(invalid());
        }
        let acl = self.sm().acl_for(&record)?;
        Ok(Caller { id, record, acl })
    }

    /// Extend the caller's token.
    pub async fn renew_token(
        &self,
        token: Option<&SecretString>,
        req: RenewRequest,
    ) -> Result<TokenInfo, ServiceError> {
        let caller = self.caller(token)?;
        let inc = req
            .increment
            .map_or(Duration::from_millis(caller.record.ttl_ms), |t| t.0);
        self.check_ttl(inc)?;
        self.raft
            .propose(Command::RenewAccessToken {
                id: caller.id,
                ttl_ms: ms(inc),
            })
            .await?;
        self.lookup_token(token)
    }

    /// Revoke the caller's token, or another one given in the request.
    pub async fn revoke_token(
        &self,
        token: Option<&SecretString>,
        req: RevokeRequest,
    ) -> Result<(), ServiceError> {
        let id = match req.token {
            Some(other) => {
                self.require_unsealed()?;
                if !secret::looks_like(SecretKind::AccessToken, other.expose()) {
                    return Err(ServiceError::bad("token is not an access token"));
                }
                secret::hash_secret(&other)
            }
            None => self.caller(token)?.id,
        };
        self.raft.propose(Command::RevokeAccessToken { id }).await?;
        Ok(())
    }

    /// What the caller's token is.
    pub fn lookup_token(&self, token: Option<&SecretString>) -> Result<TokenInfo, ServiceError> {
        let caller = self.caller(token)?;
        let r = &caller.record;
        Ok(TokenInfo {
            accessor: hex::encode(&caller.id[..8]),
            namespace: r.namespace.clone(),
            policies: r.policies.clone(),
            created_at: rfc3339(r.created_at_ms),
            expires_at: rfc3339(r.expires_at_ms),
            ttl: r.expires_at_ms.saturating_sub(self.now()) / 1000,
            max_expires_at: rfc3339(r.max_expires_at_ms),
        })
    }

    // ----- policies ---------------------------------------------------------

    fn policy_admin(
        &self,
        token: Option<&SecretString>,
        namespace: &str,
    ) -> Result<Caller, ServiceError> {
        let caller = self.caller(token)?;
        path::validate_namespace(namespace)?;
        if caller.record.namespace != namespace {
            return Err(ServiceError::Forbidden(format!(
                "token is not valid for namespace {namespace}"
            )));
        }
        if !caller.acl.is_admin() {
            return Err(ServiceError::Forbidden(
                "managing policies needs the admin policy".into(),
            ));
        }
        Ok(caller)
    }

    /// Create or replace a policy.
    pub async fn put_policy(
        &self,
        token: Option<&SecretString>,
        namespace: &str,
        name: &str,
        policy: Policy,
    ) -> Result<(), ServiceError> {
        let caller = self.policy_admin(token, namespace)?;
        path::validate_policy_name(name)?;
        if acl::is_builtin(name) {
            return Err(ServiceError::bad(format!(
                "policy {name} is built in and cannot be changed"
            )));
        }
        policy.validate()?;
        let policy = policy.normalized();
        self.raft
            .propose(Command::PutPolicy {
                token: caller.id,
                namespace: namespace.into(),
                name: name.into(),
                policy,
            })
            .await?;
        Ok(())
    }

    /// Read a policy.
    pub fn get_policy(
        &self,
        token: Option<&SecretString>,
        namespace: &str,
        name: &str,
    ) -> Result<PolicyResponse, ServiceError> {
        self.policy_admin(token, namespace)?;
        path::validate_policy_name(name)?;
        if acl::is_builtin(name) {
            return Ok(PolicyResponse {
                name: name.into(),
                builtin: true,
                policy: Policy {
                    rules: vec![acl::Rule {
                        path: "*".into(),
                        capabilities: Capability::ALL.to_vec(),
                    }],
                },
            });
        }
        let policy = self.sm().policy(namespace, name)?.ok_or_else(|| {
            ServiceError::NotFound(format!("no policy {name} in namespace {namespace}"))
        })?;
        Ok(PolicyResponse {
            name: name.into(),
            builtin: false,
            policy,
        })
    }

    /// A namespace's policy names, `admin` included.
    pub fn list_policies(
        &self,
        token: Option<&SecretString>,
        namespace: &str,
    ) -> Result<PolicyList, ServiceError> {
        self.policy_admin(token, namespace)?;
        let mut policies = vec![acl::ADMIN_POLICY.to_string()];
        policies.extend(self.sm().policy_names(namespace)?);
        Ok(PolicyList { policies })
    }

    /// Delete a policy.
    pub async fn delete_policy(
        &self,
        token: Option<&SecretString>,
        namespace: &str,
        name: &str,
    ) -> Result<(), ServiceError> {
        let caller = self.policy_admin(token, namespace)?;
        path::validate_policy_name(name)?;
        if acl::is_builtin(name) {
            return Err(ServiceError::bad(format!(
                "policy {name} is built in and cannot be deleted"
            )));
        }
        self.raft
            .propose(Command::DeletePolicy {
                token: caller.id,
                namespace: namespace.into(),
                name: name.into(),
            })
            .await
            .map_err(|e| match ServiceError::from(e) {
                ServiceError::NotFound(_) => {
                    ServiceError::NotFound(format!("no policy {name} in namespace {namespace}"))
                }
                other => other,
            })?;
        Ok(())
    }

    // ----- kv ---------------------------------------------------------------

    fn allow(caller: &Caller, path: &str, cap: Capability) -> Result<(), ServiceError> {
        if caller.acl.allows(path, cap) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "permission denied: {cap} on {path:?}"
            )))
        }
    }

    /// Write a secret in the caller's namespace.
    pub async fn put_secret(
        &self,
        token: Option<&SecretString>,
        raw_path: &str,
        req: PutSecretRequest,
    ) -> Result<PutSecretResponse, ServiceError> {
        let caller = self.caller(token)?;
        let path = path::canonical_path(raw_path)?;
        let value: Zeroizing<Vec<u8>> = match (req.value, req.value_base64) {
            (Some(v), None) => Zeroizing::new(v.expose().as_bytes().to_vec()),
            (None, Some(b)) => Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b.expose())
                    .map_err(|_| ServiceError::bad("value_base64 is not valid base64"))?,
            ),
            _ => {
                return Err(ServiceError::bad(
                    "give exactly one of value or value_base64",
                ))
            }
        };
        if value.len() > self.settings.max_value_bytes {
            return Err(ServiceError::TooLarge(format!(
                "value is {} bytes; the limit is {}",
                value.len(),
                self.settings.max_value_bytes
            )));
        }
        let namespace = caller.record.namespace.clone();
        let current = self
            .sm()
            .secret(&namespace, &path)?
            .map_or(0, |r| r.version);
        let exists = current > 0;
        Self::allow(
            &caller,
            &path,
            if exists {
                Capability::Update
            } else {
                Capability::Create
            },
        )?;
        if let Some(expected) = req.cas {
            // Checked here so a doomed write does not spend an encryption
            // (or force a rotation); apply checks again for races.
            if expected != current {
                return Err(ServiceError::Conflict(format!(
                    "check-and-set failed: expected version {expected}, found {current}"
                )));
            }
        }
        let storage_key = keyspace::kv_key(&namespace, &path);
        let (term, ciphertext) = loop {
            let active = self.barrier.active_term();
            match self.barrier.encrypt(&storage_key, &value) {
                Err(BarrierError::RotationRequired(_)) => {
                    self.rotate_keychain(active).await?;
                }
                other => break other?,
            }
        };
        let applied = self
            .raft
            .propose(Command::PutSecret {
                token: caller.id,
                namespace,
                path,
                cas: req.cas,
                term,
                ciphertext,
            })
            .await?;
        match applied {
            Applied::Version(version) => Ok(PutSecretResponse { version }),
            _ => Err(ServiceError::Internal),
        }
    }

    /// Read a secret from the caller's namespace.
    pub fn get_secret(
        &self,
        token: Option<&SecretString>,
        raw_path: &str,
    ) -> Result<SecretResponse, ServiceError> {
        let caller = self.caller(token)?;
        let path = path::canonical_path(raw_path)?;
        Self::allow(&caller, &path, Capability::Read)?;
        let namespace = &caller.record.namespace;
        let record = self
            .sm()
            .secret(namespace, &path)?
            .ok_or_else(|| ServiceError::NotFound(format!("no secret at {path}")))?;
        let storage_key = keyspace::kv_key(namespace, &path);
        let plain = match self.barrier.decrypt(&storage_key, &record.ciphertext) {
            Err(BarrierError::UnknownTerm(_)) => {
                self.reload_keychain()?;
                self.barrier.decrypt(&storage_key, &record.ciphertext)
            }
            other => other,
        }
        .map_err(|e| {
            if matches!(e, BarrierError::Integrity | BarrierError::UnknownTerm(_)) {
                tracing::warn!(namespace = %namespace, path = %path, "stored secret failed its integrity check");
            }
            ServiceError::from(e)
        })?;
        let (value, value_base64) = match std::str::from_utf8(&plain) {
            Ok(s) => (Some(SecretString::new(s.to_string())), None),
            Err(_) => (
                None,
                Some(SecretString::new(
                    base64::engine::general_purpose::STANDARD.encode(plain.as_slice()),
                )),
            ),
        };
        Ok(SecretResponse {
            value,
            value_base64,
            version: record.version,
            created_at: rfc3339(record.created_at_ms),
            updated_at: rfc3339(record.updated_at_ms),
        })
    }

    /// Delete a secret from the caller's namespace.
    pub async fn delete_secret(
        &self,
        token: Option<&SecretString>,
        raw_path: &str,
    ) -> Result<(), ServiceError> {
        let caller = self.caller(token)?;
        let path = path::canonical_path(raw_path)?;
        Self::allow(&caller, &path, Capability::Delete)?;
        self.raft
            .propose(Command::DeleteSecret {
                token: caller.id,
                namespace: caller.record.namespace.clone(),
                path: path.clone(),
            })
            .await
            .map_err(|e| match ServiceError::from(e) {
                ServiceError::NotFound(_) => ServiceError::NotFound(format!("no secret at {path}")),
                other => other,
            })?;
        Ok(())
    }

    /// Names one level below `prefix` in the caller's namespace.
    pub fn list_secrets(
        &self,
        token: Option<&SecretString>,
        raw_prefix: &str,
    ) -> Result<KeyList, ServiceError> {
        let caller = self.caller(token)?;
        let prefix = path::list_prefix(raw_prefix)?;
        Self::allow(&caller, &prefix, Capability::List)?;
        let paths = self
            .sm()
            .secret_paths(&caller.record.namespace, &prefix, None)?;
        let mut keys: Vec<String> = Vec::new();
        for p in paths {
            let rest = &p[prefix.len()..];
            let name = match rest.find('/') {
                Some(i) => &rest[..=i],
                None => rest,
            };
            if keys.last().map(String::as_str) != Some(name) {
                keys.push(name.to_string());
            }
            if keys.len() >= MAX_LIST {
                break;
            }
        }
        if keys.is_empty() {
            return Err(ServiceError::NotFound(format!("nothing under {prefix:?}")));
        }
        Ok(KeyList { keys })
    }

    // ----- housekeeping -------------------------------------------------------

    /// Remove expired access tokens and spent gatekeeper tokens through the log.
    pub async fn sweep(&self) -> Result<usize, ServiceError> {
        if self.sm().init_record()?.is_none() {
            return Ok(0);
        }
        let mut total = 0;
        for _ in 0..100 {
            match self.raft.propose(Command::Sweep).await? {
                Applied::Swept { removed, more } => {
                    total += removed;
                    if !more {
                        break;
                    }
                }
                _ => break,
            }
        }
        if total > 0 {
            tracing::debug!(removed = total, "swept expired tokens");
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests;
