//! Operator calls (`/v1/sys/*`): status, init, unseal, seal, rotate, rekey,
//! gatekeeper tokens and the access key. The gatekeeper key lives only inside
//! one of these calls.

use super::types::*;
use super::{ms, Node, Progress, ServiceError, MAX_MINT};
use crate::barrier::{self, BarrierError, Keychain};
use crate::clock::rfc3339;
use crate::gatekeeper::{self, shamir, GatekeeperError};
use crate::keyspace;
use crate::secret::{self, Key32, SecretKind, SecretString};
use crate::state::command::{Applied, Command, FirstUse, GatekeeperOperation};
use crate::state::MAX_GATEKEEPER_TOKENS;

/// How long a peer may take to apply a passed-on unseal secret (a token
/// first needs a linearizable read there).
pub const PEER_UNSEAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most rotations one call proposes when other nodes keep rotating first.
const MAX_ROTATION_ROUNDS: usize = 4;

impl Node {
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
            leader: self.raft.raft_status().leader == Some(self.settings.node_id),
            leader_id: self.raft.raft_status().leader,
            key_term: self.barrier.active_term(),
            peers: self.members_status(sealed),
            removed: self.raft.removal().is_some(),
        })
    }

    pub(super) fn live_progress_len(&self) -> u32 {
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
        // Init is anonymous: an initialized cluster is told so without a
        // proposal, also through a node that has not caught up yet.
        if self
            .exists_caught_up(|| Ok(self.sm().init_record()?.is_some()))
            .await?
        {
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

    pub(super) fn require_initialized(&self) -> Result<keyspace::InitRecord, ServiceError> {
        self.sm().init_record()?.ok_or(ServiceError::NotInitialized)
    }

    /// Status with every other member asked for its own state (bounded:
    /// 500 ms per peer, concurrently).
    /// [`Node::status`] asks nobody.
    pub async fn cluster_status(&self) -> Result<Status, ServiceError> {
        let mut status = self.status()?;
        status.peers = self.peers_status(status.sealed).await;
        Ok(status)
    }

    /// Unseal through this node, for the whole cluster: one unseal key
    /// (progress kept), one gatekeeper token, or reset this node's progress.
    ///
    /// - An unseal key this node accepts (parsed, not a duplicate, and at
    ///   the threshold reconstructing this store's gatekeeper key) is passed
    ///   on to every other member, one key per call: each peer keeps its own
    ///   progress and opens its own barrier at the threshold, so progress on
    ///   the peers follows this node's. A key given to an unsealed node is
    ///   passed on as well (a restarted peer can be unsealed through any
    ///   node).
    /// - A gatekeeper token is used here (its use recorded through the log;
    ///   the replacement goes back to the client), then passed on; each peer
    ///   first catches up with the leader and then uses the same token
    ///   inside its grace window. Given to an unsealed node, the token is
    ///   still used (checked, replaced) and passed on.
    /// - Reset clears this node's progress only.
    ///
    /// The gatekeeper key never leaves this node. Peers that cannot be
    /// reached or refuse are logged and shown in the returned status (each
    /// peer's sealed state, asked after the forwarding); they never fail
    /// the call.
    pub async fn unseal(&self, req: UnsealRequest) -> Result<UnsealResponse, ServiceError> {
        use crate::raft::cluster::UnsealRequest as PeerUnseal;
        let forward = match (&req.key, &req.gatekeeper_token, req.reset) {
            (Some(key), None, false) => Some(PeerUnseal::Key(key.clone())),
            (None, Some(token), false) => Some(PeerUnseal::GatekeeperToken(token.clone())),
            _ => None,
        };
        let token = req.gatekeeper_token.clone();
        if self.sm().init_record()?.is_none() {
            // Init may have gone through another node a moment ago: catch up
            // with the leader (bounded) before answering "not initialized".
            if let Err(e) = self.linearize().await {
                tracing::debug!(error = %e, "unseal: could not catch up with the leader");
            }
        }
        let mut response = self.unseal_here(req).await?;
        if let (Some(token), None) = (&token, &response.gatekeeper_token) {
            // This node was already open: use the token anyway, so it is
            // checked here and its use is on the log before peers see it.
            let (gk, rep) = self.use_gatekeeper_token(token).await?;
            drop(gk);
            response.gatekeeper_token = Some(rep);
        }
        if let Some(forward) = forward {
            self.unseal_peers(&forward).await;
            response.status.peers = self.peers_status(response.status.sealed).await;
        }
        Ok(response)
    }

    /// Pass one accepted unseal secret to every other member, concurrently,
    /// each call bounded; failures are logged, never returned.
    async fn unseal_peers(&self, request: &crate::raft::cluster::UnsealRequest) {
        let mut calls = tokio::task::JoinSet::new();
        for (member, client) in self.raft.peer_clients() {
            let request = request.clone();
            calls.spawn(async move {
                let outcome =
                    tokio::time::timeout(PEER_UNSEAL_TIMEOUT, client.unseal(&request)).await;
                (member.id, outcome)
            });
        }
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((peer, Ok(Ok(reply)))) => {
                    tracing::info!(
                        peer,
                        sealed = reply.sealed,
                        progress = reply.progress,
                        "peer unseal"
                    )
                }
                Ok((peer, Ok(Err(e)))) => {
                    tracing::warn!(peer, error = %e, "peer did not take the unseal")
                }
                Ok((peer, Err(_))) => {
                    tracing::warn!(
                        peer,
                        "peer did not answer the unseal within {PEER_UNSEAL_TIMEOUT:?}"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "peer unseal task failed"),
            }
        }
    }

    /// Unseal this node only (a client's call before it is passed on, or a
    /// peer's): one unseal key, one gatekeeper token, or a reset.
    pub(super) async fn unseal_here(
        &self,
        req: UnsealRequest,
    ) -> Result<UnsealResponse, ServiceError> {
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
    pub(super) fn add_progress(
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
    pub(super) fn open_barrier(&self, gatekeeper_key: &Key32) -> Result<(), ServiceError> {
        let root = self.root_from(gatekeeper_key)?;
        let chain = self.sm().keychain()?.ok_or(ServiceError::Internal)?;
        self.barrier
            .open(root, &chain)
            .map_err(|_| ServiceError::Internal)
    }

    /// Unwrap the root key: proves the gatekeeper key is this store's.
    pub(super) fn root_from(&self, gatekeeper_key: &Key32) -> Result<Key32, ServiceError> {
        let wrapped = self
            .sm()
            .wrapped_root()?
            .ok_or(ServiceError::NotInitialized)?;
        barrier::unwrap_root(gatekeeper_key, &wrapped).map_err(|_| {
            ServiceError::bad("the unseal keys do not reconstruct this store's gatekeeper key")
        })
    }

    /// Rebuild the gatekeeper key from a threshold of unseal keys in one call.
    pub(super) fn gatekeeper_key_from_keys(
        &self,
        keys: &[SecretString],
    ) -> Result<Key32, ServiceError> {
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
    /// inside the grace window returns the same replacement (and the
    /// operation it serves runs again: seal, unseal, `raft peers`, `raft
    /// remove` of one id, snapshot save and renew give the same result when
    /// run twice).
    pub(super) async fn use_gatekeeper_token(
        &self,
        token: &SecretString,
    ) -> Result<(Key32, SecretString), ServiceError> {
        let (gk, rep, _) = self.use_token(token, None).await?;
        Ok((gk, rep))
    }

    /// Use a gatekeeper token for `operation`, whose retry must not run it
    /// again: the operation is recorded with the use (one log entry), and
    /// returned. A retry of the same operation inside the token's grace
    /// window proposes nothing and gets the first call's recorded operation
    /// back (and the same replacement); its caller answers that result. A
    /// different operation inside the window is recorded and runs.
    async fn use_gatekeeper_token_for(
        &self,
        token: &SecretString,
        operation: GatekeeperOperation,
    ) -> Result<(Key32, SecretString, GatekeeperOperation), ServiceError> {
        let (gk, rep, recorded) = self.use_token(token, Some(&operation)).await?;
        Ok((gk, rep, recorded.ok_or(ServiceError::Internal)?))
    }

    /// [`Node::use_gatekeeper_token`], recording `operation` with the use
    /// when given (see [`Node::use_gatekeeper_token_for`]).
    async fn use_token(
        &self,
        token: &SecretString,
        operation: Option<&GatekeeperOperation>,
    ) -> Result<(Key32, SecretString, Option<GatekeeperOperation>), ServiceError> {
        use crate::raft::ProposeError;
        use crate::state::ApplyError;
        let invalid =
            || ServiceError::Unauthorized("gatekeeper token is invalid, used or expired".into());
        if !secret::looks_like(SecretKind::GatekeeperToken, token.expose()) {
            return Err(invalid());
        }
        let id = secret::hash_secret(token);
        // A round ends early only when a concurrent call with the same token
        // got its entry in first; the next round reads what it recorded.
        for _ in 0..3 {
            let record = self.sm().gatekeeper_token(&id)?.ok_or_else(invalid)?;
            let gk = gatekeeper::unwrap_with_token(token, &id, &record.wrapped_key)
                .ok_or_else(invalid)?;
            let command = if let Some(used) = &record.used {
                if self.now() >= used.grace_until_ms {
                    return Err(invalid());
                }
                let rep = gatekeeper::unwrap_replacement(token, &id, &used.replacement_wrapped)
                    .ok_or_else(invalid)?;
                let Some(operation) = operation else {
                    return Ok((gk, rep, None));
                };
                let first = self
                    .sm()
                    .gatekeeper_operations(&id)?
                    .into_iter()
                    .find(|o| o.same_as(operation));
                if let Some(first) = first {
                    tracing::info!(
                        operation = %first,
                        "gatekeeper token reused inside its grace window: answering the first result"
                    );
                    return Ok((gk, rep, Some(first)));
                }
                match self
                    .raft
                    .propose(Command::UseGatekeeperTokenFor {
                        id,
                        first: None,
                        operation: operation.clone(),
                    })
                    .await
                {
                    Ok(_) => return Ok((gk, rep, Some(operation.clone()))),
                    Err(ProposeError::Rejected(ApplyError::GatekeeperTokenInvalid)) => continue,
                    Err(e) => return Err(e.into()),
                }
            } else {
                let minted = gatekeeper::mint_token(&gk);
                let first = FirstUse {
                    grace_ms: ms(self.settings.gatekeeper_grace),
                    replacement_wrapped: gatekeeper::wrap_replacement(token, &id, &minted.token),
                    replacement: minted.record,
                };
                let command = match operation {
                    None => Command::UseGatekeeperToken {
                        id,
                        grace_ms: first.grace_ms,
                        replacement_wrapped: first.replacement_wrapped,
                        replacement: first.replacement,
                    },
                    Some(operation) => Command::UseGatekeeperTokenFor {
                        id,
                        first: Some(first),
                        operation: operation.clone(),
                    },
                };
                (command, minted.token)
            };
            let (command, replacement) = command;
            match self.raft.propose(command).await {
                Ok(_) => return Ok((gk, replacement, operation.cloned())),
                // Used concurrently: read again and take the grace path.
                Err(ProposeError::Rejected(ApplyError::GatekeeperTokenInvalid)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(invalid())
    }

    /// The gatekeeper key from whichever proof `auth` carries, plus the
    /// replacement when a gatekeeper token was used.
    pub(super) async fn authorize_gatekeeper(
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

    /// [`Node::authorize_gatekeeper`] for an operation whose retry must not
    /// run again. With a gatekeeper token, `operation` (given the token and
    /// its id) is recorded with the token's use and comes back, or on a
    /// retry inside the grace window the first call's recorded operation
    /// does (see [`Node::use_gatekeeper_token_for`]). With unseal keys
    /// nothing is recorded: `None`.
    async fn authorize_gatekeeper_for(
        &self,
        auth: &GatekeeperAuth,
        operation: impl FnOnce(&SecretString, &[u8; 32]) -> GatekeeperOperation,
    ) -> Result<(Key32, Option<SecretString>, Option<GatekeeperOperation>), ServiceError> {
        match (&auth.gatekeeper_token, auth.keys.is_empty()) {
            (Some(token), true) => {
                let id = secret::hash_secret(token);
                let (gk, rep, recorded) = self
                    .use_gatekeeper_token_for(token, operation(token, &id))
                    .await?;
                self.root_from(&gk).map_err(|_| ServiceError::Internal)?;
                Ok((gk, Some(rep), Some(recorded)))
            }
            _ => {
                let (gk, rep) = self.authorize_gatekeeper(auth).await?;
                Ok((gk, rep, None))
            }
        }
    }

    pub(super) fn require_unsealed(&self) -> Result<(), ServiceError> {
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
    ///
    /// With a gatekeeper token, the term this rotation makes (the active
    /// term plus one, after catching up) is recorded with the token's use,
    /// and the keychain is rotated only while it is below that term: a
    /// retry with the same token inside its grace window (the first answer
    /// was lost) answers the same term and adds none, unless the first call
    /// failed before rotating, in which case the retry rotates.
    pub async fn rotate(&self, auth: GatekeeperAuth) -> Result<SysResponse, ServiceError> {
        self.require_unsealed()?;
        self.catch_up_keychain().await?;
        let next = self
            .barrier
            .active_term()
            .ok_or(ServiceError::Sealed)?
            .saturating_add(1);
        let (gk, rep, recorded) = self
            .authorize_gatekeeper_for(&auth, |_, _| GatekeeperOperation::Rotate { term: next })
            .await?;
        drop(gk);
        let term = match recorded {
            None => self.rotate_keychain(None).await?,
            Some(GatekeeperOperation::Rotate { term }) => {
                self.rotate_keychain(Some(term.saturating_sub(1))).await?;
                term
            }
            Some(_) => return Err(ServiceError::Internal),
        };
        Ok(SysResponse {
            gatekeeper_token: rep,
            key_term: Some(term),
            ..Default::default()
        })
    }

    /// Rotate the keychain with the in-memory root key; also what a write
    /// does when the active term reaches its encryption limit.
    /// With `exhausted = Some(term)`, rotates only while the active term is
    /// not past `term`, so writers that hit the limit together rotate once
    /// (and a gatekeeper-token rotate retried inside its grace window
    /// reaches its recorded term once).
    /// Apply accepts only the rotation to the term after the active one, so
    /// when another node rotated first this node takes that keychain; an
    /// automatic rotation then is done, an operator's rotates once more.
    pub(super) async fn rotate_keychain(
        &self,
        exhausted: Option<u32>,
    ) -> Result<u32, ServiceError> {
        let _guard = self.keychain_lock.lock().await;
        for _ in 0..MAX_ROTATION_ROUNDS {
            if let (Some(old), Some(now)) = (exhausted, self.barrier.active_term()) {
                if now > old {
                    return Ok(now);
                }
            }
            let (term, blob) = self.barrier.prepare_rotation(self.now())?;
            match self
                .raft
                .propose(Command::RotateKeychain {
                    term,
                    keychain: blob.clone(),
                })
                .await
            {
                Ok(_) => {
                    self.barrier.install(&blob)?;
                    tracing::info!(term, "encryption key rotated");
                    return Ok(term);
                }
                Err(crate::raft::ProposeError::Rejected(crate::state::ApplyError::StaleTerm {
                    active,
                    ..
                })) => {
                    tracing::debug!(term, active, "another node rotated first");
                    self.catch_up_keychain().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Unavailable(
            "the keychain kept changing during the rotation; retry".into(),
        ))
    }

    /// Reload the keychain after another node rotated it.
    ///
    /// A keychain this node's root key does not open was re-wrapped by a
    /// rekey whose hand-off missed this node (it was unreachable): the node
    /// seals itself rather than serve half-open, and one gatekeeper-token
    /// unseal (through any node) opens it under the new root.
    pub(super) fn reload_keychain(&self) -> Result<(), ServiceError> {
        let chain = self.sm().keychain()?.ok_or(ServiceError::Internal)?;
        match self.barrier.install(&chain) {
            Err(BarrierError::WrongKey) => {
                tracing::warn!(
                    "the keychain is wrapped under a root key this node does not hold \
                     (it missed a rekey); sealing: unseal it again with a gatekeeper token"
                );
                self.barrier.seal();
                Err(ServiceError::Sealed)
            }
            other => Ok(other?),
        }
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
        // The rekey re-wraps this node's keychain: it must not miss a
        // rotation another node made.
        self.catch_up_keychain().await?;
        let new_gk = Key32::random();
        let (root, keychain) = self.barrier.prepare_rekey()?;
        let wrapped_root = barrier::wrap_root(&new_gk, &root);
        let unseal_keys = shamir::split(&new_gk, shares, threshold);
        let minted: Vec<_> = (0..req.gatekeeper_tokens)
            .map(|_| gatekeeper::mint_token(&new_gk))
            .collect();
        // One more, never shown to the caller: peers use it to re-open their
        // barriers under the new root key (see `handoff_rekey`).
        let handoff = gatekeeper::mint_token(&new_gk);
        drop(new_gk);
        let mut records: Vec<_> = minted.iter().map(|m| m.record.clone()).collect();
        records.push(handoff.record.clone());
        self.raft
            .propose(Command::Rekey {
                shares,
                threshold,
                wrapped_root,
                keychain,
                gatekeeper_tokens: records,
            })
            .await?;
        self.barrier.replace_root(root)?;
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.handoff_rekey(handoff.token).await;
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

    /// After a rekey: let every unsealed peer re-open its barrier under the
    /// new root key. This node uses the hand-off token first (recording its
    /// use), the peers use it inside its grace window, then its replacement
    /// is revoked; the used record is swept after the window.
    async fn handoff_rekey(&self, token: SecretString) {
        if self.raft.peer_clients().is_empty() {
            let id = secret::hash_secret(&token);
            if let Err(e) = self
                .raft
                .propose(Command::RevokeGatekeeperToken { id })
                .await
            {
                tracing::warn!(error = %e, "could not revoke the unused rekey hand-off token");
            }
            return;
        }
        let replacement = match self.use_gatekeeper_token(&token).await {
            Ok((gatekeeper_key, replacement)) => {
                drop(gatekeeper_key);
                replacement
            }
            Err(e) => {
                tracing::warn!(error = %e, "rekey hand-off token could not be used; peers must be unsealed again");
                return;
            }
        };
        self.unseal_peers(&crate::raft::cluster::UnsealRequest::Rekeyed(token))
            .await;
        let id = secret::hash_secret(&replacement);
        if let Err(e) = self
            .raft
            .propose(Command::RevokeGatekeeperToken { id })
            .await
        {
            tracing::warn!(error = %e, "could not revoke the rekey hand-off replacement");
        }
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
        let unused = self
            .sm()
            .gatekeeper_tokens()?
            .iter()
            .filter(|r| r.used.is_none())
            .count();
        if unused + minted.len() > MAX_GATEKEEPER_TOKENS {
            return Err(ServiceError::bad(format!(
                "at most {MAX_GATEKEEPER_TOKENS} unused gatekeeper tokens may exist \
                 ({unused} now); revoke some first"
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
                // Presenting a token proves nothing until it is found: an
                // unknown one is answered like a revoked one, and nothing
                // is proposed.
                let id = secret::hash_secret(token);
                let exists = self
                    .exists_caught_up(|| Ok(self.sm().gatekeeper_token(&id)?.is_some()))
                    .await?;
                if !exists {
                    return Ok(());
                }
                id
            }
            (None, Some(id)) => {
                drop(self.gatekeeper_key_from_keys(&req.keys)?);
                let bytes = hex::decode(id)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                let id = bytes.ok_or_else(|| ServiceError::bad("id must be 64 hex digits"))?;
                let exists = self
                    .exists_caught_up(|| Ok(self.sm().gatekeeper_token(&id)?.is_some()))
                    .await?;
                if !exists {
                    return Err(ServiceError::NotFound("no such gatekeeper token".into()));
                }
                id
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
        let minted = secret::new_bearer(SecretKind::AccessKey);
        let hash = secret::hash_secret(&minted);
        let (gk, rep, recorded) = self
            .authorize_gatekeeper_for(&auth, |token, id| GatekeeperOperation::RotateAccessKey {
                hash,
                wrapped: gatekeeper::wrap_access_key(token, id, &minted),
            })
            .await?;
        drop(gk);
        let access_key = match (recorded, &auth.gatekeeper_token) {
            // Unseal keys: nothing recorded; install it now.
            (None, _) => {
                self.raft.propose(Command::RotateAccessKey { hash }).await?;
                tracing::info!("access key rotated");
                minted
            }
            // Recorded (and installed) by the token's use: this call's key.
            (Some(GatekeeperOperation::RotateAccessKey { hash: first, .. }), _)
                if first == hash =>
            {
                tracing::info!("access key rotated");
                minted
            }
            // A retry: the first call's key, opened with the token.
            (Some(GatekeeperOperation::RotateAccessKey { wrapped, .. }), Some(token)) => {
                let id = secret::hash_secret(token);
                gatekeeper::unwrap_access_key(token, &id, &wrapped).ok_or(ServiceError::Internal)?
            }
            _ => return Err(ServiceError::Internal),
        };
        Ok(SysResponse {
            gatekeeper_token: rep,
            access_key: Some(access_key),
            ..Default::default()
        })
    }
}
