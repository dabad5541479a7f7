//! Kubernetes ServiceAccount login and its roles.
//!
//! SKELETON (session 16): signatures fixed, bodies being written.

use super::types::*;
use super::TokenHolder;
use super::{Node, ServiceError};

impl Node {
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
        let _ = (caller, namespace, name, role, key);
        Err(ServiceError::Unavailable("not built yet".into()))
    }

    /// Read a Kubernetes login role (linearizable; admin tokens only).
    pub async fn get_kubernetes_role(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        name: &str,
    ) -> Result<KubernetesRoleResponse, ServiceError> {
        let _ = (caller, namespace, name);
        Err(ServiceError::Unavailable("not built yet".into()))
    }

    /// A namespace's role names, one page (linearizable; admin tokens only).
    pub async fn list_kubernetes_roles(
        &self,
        caller: &TokenHolder,
        namespace: &str,
        page: &ListPage,
    ) -> Result<KubernetesRoleList, ServiceError> {
        let _ = (caller, namespace, page);
        Err(ServiceError::Unavailable("not built yet".into()))
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
        let _ = (caller, namespace, name, key);
        Err(ServiceError::Unavailable("not built yet".into()))
    }

    /// Log in with a ServiceAccount token: verify it, find the role, check
    /// that the role binds the service account, and mint an access token
    /// locked to the namespace with the role's policies.
    pub async fn login_kubernetes(
        &self,
        req: KubernetesLoginRequest,
    ) -> Result<KubernetesLogin, ServiceError> {
        let _ = (&req, &self.kubernetes);
        Err(ServiceError::Unavailable("not built yet".into()))
    }
}
