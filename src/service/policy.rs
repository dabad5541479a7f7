//! A namespace's policies, managed by its admin tokens.

use super::types::*;
use super::TokenHolder;
use super::{idempotency, Node, ServiceError};
use crate::acl::{self, path, Capability, Policy};
use crate::state::command::Command;

impl Node {
    // ----- policies ---------------------------------------------------------

    /// Check that `caller` may manage `namespace`'s policies (`target`:
    /// `policies/<name>`, or `policies/` for the list): a token of that
    /// namespace with the admin policy.
    fn policy_admin(
        caller: &TokenHolder,
        namespace: &str,
        target: &str,
    ) -> Result<(), ServiceError> {
        Self::namespace_admin(caller, namespace, "manage policies", target)
    }

    /// Create or replace a policy (idempotency key as for
    /// [`Node::put_secret`]).
    pub async fn put_policy(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        name: &str,
        policy: Policy,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        path::validate_policy_name(name)?;
        let target = format!("policies/{name}");
        Self::policy_admin(caller, namespace, &target)?;
        if acl::is_builtin(name) {
            return Err(ServiceError::bad(format!(
                "policy {name} is built in and cannot be changed"
            )));
        }
        policy.validate()?;
        let policy = policy.normalized();
        let rules = serde_json::to_vec(&policy).map_err(|_| ServiceError::Internal)?;
        let idempotency = idempotency(
            caller,
            &self.barrier,
            key,
            "put-policy",
            &[name.as_bytes(), &rules],
        )?;
        self.raft
            .propose_with(
                Command::PutPolicy {
                    by: caller.actor(),
                    namespace: namespace.into(),
                    name: name.into(),
                    policy,
                },
                idempotency,
            )
            .await?;
        Ok(())
    }

    /// Read a policy (linearizable).
    pub async fn get_policy(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        name: &str,
    ) -> Result<PolicyResponse, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        path::validate_namespace(namespace)?;
        path::validate_policy_name(name)?;
        Self::policy_admin(caller, namespace, &format!("policies/{name}"))?;
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

    /// A namespace's policy names, `admin` included, in name order, one page
    /// of them (linearizable). Reads keys only and stops at the page's limit.
    pub async fn list_policies(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        page: &ListPage,
    ) -> Result<PolicyList, ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        path::validate_namespace(namespace)?;
        let cursor = page.cursor();
        if let Some(c) = cursor {
            path::validate_policy_name(c)?;
        }
        Self::policy_admin(caller, namespace, "policies/")?;
        let limit = page.limit();
        let stored = self.sm().policy_names(namespace, cursor, limit)?;
        // The built-in `admin` takes its place in name order, so a cursor
        // works the same whichever name it is.
        let mut policies = stored.names;
        if cursor.is_none_or(|c| c < acl::ADMIN_POLICY) {
            let at = policies.partition_point(|p| p.as_str() < acl::ADMIN_POLICY);
            policies.insert(at, acl::ADMIN_POLICY.to_string());
        }
        let truncated = stored.truncated || policies.len() > limit;
        policies.truncate(limit);
        Ok(PolicyList {
            cursor: truncated.then(|| policies.last().cloned()).flatten(),
            truncated,
            policies,
        })
    }

    /// Delete a policy (idempotency key as for [`Node::put_secret`]).
    pub async fn delete_policy(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        name: &str,
        key: Option<&IdempotencyKey>,
    ) -> Result<(), ServiceError> {
        // The holder was authenticated a moment ago; the barrier may
        // have been sealed since.
        self.require_unsealed()?;
        path::validate_policy_name(name)?;
        let target = format!("policies/{name}");
        Self::policy_admin(caller, namespace, &target)?;
        if acl::is_builtin(name) {
            return Err(ServiceError::bad(format!(
                "policy {name} is built in and cannot be deleted"
            )));
        }
        let idempotency = idempotency(
            caller,
            &self.barrier,
            key,
            "delete-policy",
            &[name.as_bytes()],
        )?;
        let command = Command::DeletePolicy {
            by: caller.actor(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.propose_delete(command, idempotency, || {
            ServiceError::NotFound(format!("no policy {name} in namespace {namespace}"))
        })
        .await
    }
}
