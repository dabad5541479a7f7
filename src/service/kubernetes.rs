//! Kubernetes ServiceAccount login and its roles.
//!
//! Roles are managed like policies: by the admin tokens of their namespace,
//! through `PutKubernetesRole`/`DeleteKubernetesRole`, which apply checks
//! again. A login verifies the ServiceAccount token
//! (`auth::kubernetes::KubernetesAuth`), finds the role, and proposes
//! `CreateKubernetesToken`, which checks the role once more at apply.
//!
//! Invariant: every refused token gets the one answer
//! ([`ServiceError::LoginRefused`]), whichever check failed, before or at
//! apply, a missing role and an unbound service account included: a caller
//! learns neither which roles exist nor whom they bind. Only input errors
//! that reveal nothing (syntax, size, configuration) are told apart.

use super::types::*;
use super::TokenHolder;
use super::{idempotency, ms, LoginRefusal, Node, ServiceError, MAX_TOKEN_POLICIES};
use crate::acl::path;
use crate::auth::kubernetes::role::{self, KubernetesRole, RoleLimits, DEFAULT_AUDIENCE};
use crate::auth::kubernetes::Check;
use crate::clock::{format_duration, rfc3339};
use crate::keyspace;
use crate::secret::{self, SecretKind};
use crate::state::command::Command;

/// Largest ServiceAccount token a login accepts. A projected token is
/// about 1 KiB; the bound keeps a caller from making the node parse more.
pub const MAX_JWT_BYTES: usize = 16 * 1024;

/// What a login answers on a node that cannot check tokens.
const NOT_CONFIGURED: &str = "ServiceAccount login is not configured on this node: set \
     kubernetes_issuer and kubernetes_jwks_file, or kubernetes_api (with kubernetes_ca_cert and \
     kubernetes_token_file, which default to the pod's own inside Kubernetes) for OIDC \
     discovery or kubernetes_token_review = true";

impl Node {
    /// The limits a role is checked against on this node.
    fn role_limits(&self) -> RoleLimits {
        RoleLimits {
            max_policies: MAX_TOKEN_POLICIES,
            max_ttl: self.settings.max_token_ttl,
        }
    }

    /// Check that `caller` may manage `namespace`'s roles (`name`: the
    /// role, empty for the list).
    fn role_admin(caller: &TokenHolder, namespace: &str, name: &str) -> Result<(), ServiceError> {
        Self::namespace_admin(
            caller,
            namespace,
            role::MANAGE_ACTION,
            &role::denial_target(name),
        )
    }

    /// Create or replace a Kubernetes login role of `namespace` (its admin
    /// tokens only; idempotency key as for [`Node::put_secret`]).
    pub async fn put_kubernetes_role(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        name: &str,
        role: KubernetesRoleBody,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        role::validate_role_name(name)?;
        Self::role_admin(caller, namespace, name)?;
        let role = KubernetesRole::new(
            role.service_accounts,
            role.policies,
            role.ttl.map(|t| t.0),
            role.audience,
            self.role_limits(),
        )?;
        // The normalized role, as the log will carry it: the same body
        // sent again is the same request.
        let fields = keyspace::encode(&role);
        let idempotency = idempotency(
            caller,
            &self.barrier,
            key,
            "put-kubernetes-role",
            &[name.as_bytes(), &fields],
        )?;
        self.raft
            .propose_with(
                Command::PutKubernetesRole {
                    by: caller.actor(),
                    namespace: namespace.into(),
                    name: name.into(),
                    role,
                },
                idempotency,
            )
            .await?;
        Ok(())
    }

    /// Read a Kubernetes login role (linearizable; admin tokens only).
    pub async fn get_kubernetes_role(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        name: &str,
    ) -> Result<KubernetesRoleResponse, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        role::validate_role_name(name)?;
        Self::role_admin(caller, namespace, name)?;
        let role = self
            .sm()
            .kubernetes_role(namespace, name)?
            .ok_or_else(|| no_role(namespace, name))?;
        Ok(KubernetesRoleResponse {
            name: name.into(),
            ttl: format_duration(role.ttl()),
            service_accounts: role.service_accounts,
            policies: role.policies,
            audience: role.audience,
        })
    }

    /// A namespace's role names, one page (linearizable; admin tokens only).
    /// Reads keys only and stops at the page's limit.
    pub async fn list_kubernetes_roles(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        page: &ListPage,
    ) -> Result<KubernetesRoleList, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        let cursor = page.cursor();
        if let Some(c) = cursor {
            role::validate_role_name(c)?;
        }
        Self::role_admin(caller, namespace, "")?;
        let stored = self
            .sm()
            .kubernetes_role_names(namespace, cursor, page.limit())?;
        Ok(KubernetesRoleList {
            cursor: stored
                .truncated
                .then(|| stored.names.last().cloned())
                .flatten(),
            truncated: stored.truncated,
            roles: stored.names,
        })
    }

    /// Delete a Kubernetes login role (admin tokens only; idempotency key
    /// as for [`Node::put_secret`]).
    pub async fn delete_kubernetes_role(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        role::validate_role_name(name)?;
        Self::role_admin(caller, namespace, name)?;
        let idempotency = idempotency(
            caller,
            &self.barrier,
            key,
            "delete-kubernetes-role",
            &[name.as_bytes()],
        )?;
        let command = Command::DeleteKubernetesRole {
            by: caller.actor(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.propose_delete(command, idempotency, || no_role(namespace, name))
            .await
    }

    /// Log in with a ServiceAccount token: verify it, find the role, check
    /// that the role binds the service account, and mint an access token
    /// locked to the namespace with the role's policies.
    ///
    /// The token is verified for the role's audience, or for the default
    /// one when the role does not exist, so a missing role costs the same
    /// work and gets the same answer as a bad token. The role is looked up
    /// here, and once more after catching up with the leader when it is
    /// absent here (a role made through another node a moment ago works),
    /// and checked again at apply (`CreateKubernetesToken`), whose view
    /// wins: a role changed in between gives its new policies, or refuses.
    pub async fn login_kubernetes(
        &self,
        req: KubernetesLoginRequest,
    ) -> Result<KubernetesLogin, ServiceError> {
        self.require_unsealed()?;
        path::validate_namespace(&req.namespace)?;
        role::validate_role_name(&req.role)?;
        let jwt_len = req.jwt.expose().len();
        if jwt_len > MAX_JWT_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "jwt is {jwt_len} bytes; the limit is {MAX_JWT_BYTES} (a ServiceAccount token is \
                 about 1 KiB: send the token itself)"
            )));
        }
        if !self.kubernetes.is_enabled() {
            return Err(ServiceError::bad(NOT_CONFIGURED));
        }
        // Always as of a linearizable read, found or not: a role made or
        // changed through another node counts at once, and a missing role
        // costs the same round as an existing one (no timing oracle).
        self.linearize().await?;
        let found = self.sm().kubernetes_role(&req.namespace, &req.role)?;
        let audience = found.as_ref().map_or(DEFAULT_AUDIENCE, |r| &r.audience);
        let account = self
            .kubernetes
            .verify(&req.jwt, audience, self.now())
            .await?;
        let subject = account.subject();
        let refused = |check: Check| {
            ServiceError::LoginRefused(LoginRefusal {
                check,
                subject: Some(subject.clone()),
            })
        };
        let Some(role) = found else {
            return Err(refused(Check::RoleNotFound));
        };
        if !role.binds(&account.namespace, &account.name) {
            return Err(refused(Check::NotBound));
        }
        let token = secret::new_bearer(SecretKind::AccessToken);
        let id = secret::hash_secret(&token);
        self.raft
            .propose(Command::CreateKubernetesToken {
                id,
                namespace: req.namespace.clone(),
                role: req.role.clone(),
                service_account: format!("{}/{}", account.namespace, account.name),
                not_after_ms: account.expires_at_ms,
                max_ttl_ms: ms(self.settings.max_token_ttl),
            })
            .await
            .map_err(|e| match ServiceError::from(e) {
                ServiceError::LoginRefused(r) => refused(r.check),
                other => other,
            })?;
        // This node applied the entry before the proposal returned.
        let record = self.sm().access_token(&id)?.ok_or(ServiceError::Internal)?;
        let warnings = self.missing_policy_warnings(&req.namespace, &record.policies);
        Ok(KubernetesLogin {
            response: LoginResponse {
                token,
                expires_at: rfc3339(record.expires_at_ms),
                namespace: req.namespace,
                policies: record.policies,
                warnings,
            },
            subject,
        })
    }
}

/// The 404 of a role that does not exist (for its admins only: a login
/// never says it).
fn no_role(namespace: &str, name: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "no kubernetes role {name} in namespace {namespace}"
    ))
}
