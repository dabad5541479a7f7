//! Access tokens: login with the access key, the guard that checks a bearer
//! token, renew, revoke and lookup.

use std::time::Duration;

use super::types::*;
use super::TokenHolder;
use super::{ms, Node, ServiceError, MAX_TOKEN_POLICIES};
use crate::acl::path;
use crate::clock::{format_duration, rfc3339};
use crate::keyspace::AccessTokenRecord;
use crate::secret::{self, SecretKind, SecretString};
use crate::state::command::Command;

impl Node {
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
        let warnings = self.missing_policy_warnings(&req.namespace, &policies);
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

    pub(super) fn check_ttl(&self, ttl: Duration) -> Result<(), ServiceError> {
        if ttl < Duration::from_secs(1) {
            return Err(ServiceError::bad("ttl must be at least 1s"));
        }
        if ttl > self.settings.max_token_ttl {
            return Err(ServiceError::bad(format!(
                "ttl {} exceeds the maximum of {}",
                format_duration(ttl),
                format_duration(self.settings.max_token_ttl)
            )));
        }
        Ok(())
    }

    /// The token check as of this node's state: the barrier must be open
    /// and the token live.
    fn holder(&self, token: Option<&SecretString>) -> Result<TokenHolder, ServiceError> {
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
        Ok(TokenHolder { id, record, acl })
    }

    /// The token check for calls that may wait: like [`Node::holder`], but a
    /// well-formed access token that is unknown or expired here gets one
    /// linearizable read (this node catches up with the leader, bounded by
    /// the leader wait) and one more look before the answer is 401. So a
    /// token minted or renewed through another node works here at once.
    /// Costs a quorum round only for tokens that fail locally.
    async fn holder_caught_up(
        &self,
        token: Option<&SecretString>,
    ) -> Result<TokenHolder, ServiceError> {
        match self.holder(token) {
            Err(ServiceError::Unauthorized(reason))
                if token
                    .is_some_and(|t| secret::looks_like(SecretKind::AccessToken, t.expose())) =>
            {
                if let Err(e) = self.linearize().await {
                    tracing::debug!(error = %e, "token not found here and the leader not reached");
                    return Err(ServiceError::Unauthorized(reason));
                }
                self.holder(token)
            }
            other => other,
        }
    }

    /// Authenticate a bearer access token for the front door
    /// (`guard::Door`). `Stale`: as of this node's state, catching
    /// up once when the token is unknown here (writes: apply checks the
    /// token again). `Linearizable`: as of a state that reflects every write
    /// acknowledged before the call, so a token revoked or a policy changed
    /// through another node counts here too (reads).
    pub async fn authenticate(
        &self,
        token: Option<&SecretString>,
        consistency: Consistency,
    ) -> Result<TokenHolder, ServiceError> {
        let holder = self.holder_caught_up(token).await?;
        match consistency {
            Consistency::Stale => Ok(holder),
            Consistency::Linearizable => {
                self.linearize().await?;
                self.holder(token)
            }
        }
    }

    /// Extend the caller's token.
    pub async fn renew_token(
        &self,
        caller: &TokenHolder,
        req: RenewRequest,
    ) -> Result<TokenInfo, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
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
        // This node applied the renewal before the proposal returned.
        let record = self.sm().access_token(&caller.id)?.ok_or_else(|| {
            ServiceError::Unauthorized("access token is invalid or expired".into())
        })?;
        Ok(self.token_info(caller.id, &record))
    }

    /// Revoke the caller's token (`caller`, authenticated by the front
    /// door), or another one given in the request.
    ///
    /// A token given in the body proves nothing about its caller, so it is
    /// looked up first: only a token that exists is revoked through the log,
    /// and the answer is the same whether it existed or not.
    pub async fn revoke_token(
        &self,
        caller: Option<&TokenHolder>,
        req: RevokeRequest,
    ) -> Result<(), ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        let id = match req.token {
            Some(other) => {
                self.require_unsealed()?;
                if !secret::looks_like(SecretKind::AccessToken, other.expose()) {
                    return Err(ServiceError::bad("token is not an access token"));
                }
                let id = secret::hash_secret(&other);
                let exists = self
                    .exists_caught_up(|| Ok(self.sm().access_token(&id)?.is_some()))
                    .await?;
                if !exists {
                    return Ok(());
                }
                id
            }
            None => {
                caller
                    .ok_or_else(|| ServiceError::Unauthorized("missing access token".into()))?
                    .id
            }
        };
        self.raft.propose(Command::RevokeAccessToken { id }).await?;
        Ok(())
    }

    /// Whether a record exists: looked up here and, when it is absent here,
    /// once more after this node caught up with the leader (so a record made
    /// through another node a moment ago is found). A call that presents
    /// something unknown thus ends here, before anything is proposed.
    pub(super) async fn exists_caught_up(
        &self,
        look: impl Fn() -> Result<bool, ServiceError>,
    ) -> Result<bool, ServiceError> {
        if look()? {
            return Ok(true);
        }
        self.linearize().await?;
        look()
    }

    /// What the caller's token is.
    /// What the caller's token is (`caller`: authenticated linearizably).
    pub fn lookup_token(&self, caller: &TokenHolder) -> Result<TokenInfo, ServiceError> {
        self.require_unsealed()?;
        Ok(self.token_info(caller.id, &caller.record))
    }

    fn token_info(&self, id: [u8; 32], r: &AccessTokenRecord) -> TokenInfo {
        TokenInfo {
            accessor: hex::encode(&id[..8]),
            namespace: r.namespace.clone(),
            policies: r.policies.clone(),
            created_at: rfc3339(r.created_at_ms),
            expires_at: rfc3339(r.expires_at_ms),
            ttl: r.expires_at_ms.saturating_sub(self.now()) / 1000,
            max_expires_at: rfc3339(r.max_expires_at_ms),
        }
    }
}
