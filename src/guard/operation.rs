//! The operations of kstash: one name per thing a caller can do, the same
//! over REST and gRPC.
//!
//! Invariant: the set is fixed at build time; every audit record and every
//! operation metric names one of [`Operation::ALL`], so no caller can grow
//! a label set or write a name of its own into the audit log.

/// One operation of the client API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `GET /v1/sys/status`, `Sys/Status`.
    Status,
    /// `GET /v1/sys/health`, `Sys/Health`.
    Health,
    /// `GET /v1/sys/raft/peers`, `Sys/RaftPeers`.
    RaftPeers,
    /// `POST /v1/sys/init`.
    Init,
    /// `POST /v1/sys/unseal`.
    Unseal,
    /// `POST /v1/sys/seal`.
    Seal,
    /// `POST /v1/sys/rotate`.
    Rotate,
    /// `POST /v1/sys/rekey`.
    Rekey,
    /// `POST /v1/sys/access-key/rotate`.
    RotateAccessKey,
    /// `POST /v1/sys/raft/remove`.
    RaftRemove,
    /// `POST /v1/sys/snapshot`.
    SaveSnapshot,
    /// `POST /v1/sys/gatekeeper-tokens`.
    MintGatekeeperTokens,
    /// `POST /v1/sys/gatekeeper-tokens/list`.
    ListGatekeeperTokens,
    /// `POST /v1/sys/gatekeeper-tokens/renew`.
    RenewGatekeeperToken,
    /// `POST /v1/sys/gatekeeper-tokens/revoke`.
    RevokeGatekeeperToken,
    /// `POST /v1/sys/audit/hash`.
    AuditHash,
    /// `POST /v1/auth/access-key/login`.
    Login,
    /// `POST /v1/auth/token/renew`.
    RenewToken,
    /// `POST /v1/auth/token/revoke`.
    RevokeToken,
    /// `GET /v1/auth/token/self`.
    LookupToken,
    /// `GET /v1/namespaces/{ns}/policies`.
    ListPolicies,
    /// `GET /v1/namespaces/{ns}/policies/{name}`.
    GetPolicy,
    /// `PUT /v1/namespaces/{ns}/policies/{name}`.
    PutPolicy,
    /// `DELETE /v1/namespaces/{ns}/policies/{name}`.
    DeletePolicy,
    /// `GET /v1/kv/{path}`.
    GetSecret,
    /// `GET /v1/kv/{prefix}?list=true`.
    ListSecrets,
    /// `PUT /v1/kv/{path}`.
    PutSecret,
    /// `DELETE /v1/kv/{path}`.
    DeleteSecret,
    /// `POST /v1/auth/kubernetes/login`: a ServiceAccount token for an
    /// access token.
    KubernetesLogin,
    /// A namespace's Kubernetes login roles, one page of names.
    ListKubernetesRoles,
    /// Read a Kubernetes login role.
    GetKubernetesRole,
    /// Create or replace a Kubernetes login role.
    PutKubernetesRole,
    /// Delete a Kubernetes login role.
    DeleteKubernetesRole,
    /// `POST /v1/keys/{name}`: create a named encryption key.
    CreateKey,
    /// `GET /v1/keys/{name}`: a named key's metadata.
    GetKey,
    /// `GET /v1/keys`: the namespace's key names, one page.
    ListKeys,
    /// `POST /v1/keys/{name}/rotate`.
    RotateKey,
    /// `POST /v1/keys/{name}/config`.
    ConfigureKey,
    /// `POST /v1/keys/{name}/encrypt`.
    Encrypt,
    /// `POST /v1/keys/{name}/decrypt`.
    Decrypt,
    /// KMS v2 `Status` on the node's KMS socket (a cache refresh).
    KmsStatus,
    /// KMS v2 `Encrypt` on the node's KMS socket.
    KmsEncrypt,
    /// KMS v2 `Decrypt` on the node's KMS socket.
    KmsDecrypt,
}

impl Operation {
    /// Every operation, in the order above.
    pub const ALL: &'static [Operation] = &[
        Operation::Status,
        Operation::Health,
        Operation::RaftPeers,
        Operation::Init,
        Operation::Unseal,
        Operation::Seal,
        Operation::Rotate,
        Operation::Rekey,
        Operation::RotateAccessKey,
        Operation::RaftRemove,
        Operation::SaveSnapshot,
        Operation::MintGatekeeperTokens,
        Operation::ListGatekeeperTokens,
        Operation::RenewGatekeeperToken,
        Operation::RevokeGatekeeperToken,
        Operation::AuditHash,
        Operation::Login,
        Operation::RenewToken,
        Operation::RevokeToken,
        Operation::LookupToken,
        Operation::ListPolicies,
        Operation::GetPolicy,
        Operation::PutPolicy,
        Operation::DeletePolicy,
        Operation::GetSecret,
        Operation::ListSecrets,
        Operation::PutSecret,
        Operation::DeleteSecret,
        Operation::KubernetesLogin,
        Operation::ListKubernetesRoles,
        Operation::GetKubernetesRole,
        Operation::PutKubernetesRole,
        Operation::DeleteKubernetesRole,
        Operation::CreateKey,
        Operation::GetKey,
        Operation::ListKeys,
        Operation::RotateKey,
        Operation::ConfigureKey,
        Operation::Encrypt,
        Operation::Decrypt,
        Operation::KmsStatus,
        Operation::KmsEncrypt,
        Operation::KmsDecrypt,
    ];

    /// The name in audit records and the `operation` label of metrics.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Status => "sys.status",
            Operation::Health => "sys.health",
            Operation::RaftPeers => "sys.raft.peers",
            Operation::Init => "sys.init",
            Operation::Unseal => "sys.unseal",
            Operation::Seal => "sys.seal",
            Operation::Rotate => "sys.rotate",
            Operation::Rekey => "sys.rekey",
            Operation::RotateAccessKey => "sys.access_key.rotate",
            Operation::RaftRemove => "sys.raft.remove",
            Operation::SaveSnapshot => "sys.snapshot",
            Operation::MintGatekeeperTokens => "sys.gatekeeper_tokens.mint",
            Operation::ListGatekeeperTokens => "sys.gatekeeper_tokens.list",
            Operation::RenewGatekeeperToken => "sys.gatekeeper_tokens.renew",
            Operation::RevokeGatekeeperToken => "sys.gatekeeper_tokens.revoke",
            Operation::AuditHash => "sys.audit.hash",
            Operation::Login => "auth.access_key.login",
            Operation::RenewToken => "auth.token.renew",
            Operation::RevokeToken => "auth.token.revoke",
            Operation::LookupToken => "auth.token.lookup",
            Operation::ListPolicies => "policy.list",
            Operation::GetPolicy => "policy.get",
            Operation::PutPolicy => "policy.put",
            Operation::DeletePolicy => "policy.delete",
            Operation::GetSecret => "kv.get",
            Operation::ListSecrets => "kv.list",
            Operation::PutSecret => "kv.put",
            Operation::DeleteSecret => "kv.delete",
            Operation::KubernetesLogin => "auth.kubernetes.login",
            Operation::ListKubernetesRoles => "auth.kubernetes.role.list",
            Operation::GetKubernetesRole => "auth.kubernetes.role.get",
            Operation::PutKubernetesRole => "auth.kubernetes.role.put",
            Operation::DeleteKubernetesRole => "auth.kubernetes.role.delete",
            Operation::CreateKey => "key.create",
            Operation::GetKey => "key.get",
            Operation::ListKeys => "key.list",
            Operation::RotateKey => "key.rotate",
            Operation::ConfigureKey => "key.config",
            Operation::Encrypt => "key.encrypt",
            Operation::Decrypt => "key.decrypt",
            Operation::KmsStatus => "kms.status",
            Operation::KmsEncrypt => "kms.encrypt",
            Operation::KmsDecrypt => "kms.decrypt",
        }
    }

    /// Whether the audit log records it. Status, health and the membership
    /// view carry no credential and reveal nothing the node does not show
    /// anyone (they also answer while sealed, when no audit key exists);
    /// the KMS socket's status refresh uses no key and runs every few
    /// seconds. They are counted in the metrics only. Everything else is
    /// recorded: every use of a key above all.
    pub fn audited(self) -> bool {
        !matches!(
            self,
            Operation::Status | Operation::Health | Operation::RaftPeers | Operation::KmsStatus
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_all_is_complete() {
        let mut names: Vec<&str> = Operation::ALL.iter().map(|o| o.name()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "two operations share a name");
        // ALL holds every variant once, in declaration order.
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
        }
        assert_eq!(count, Operation::KmsDecrypt as usize + 1);
        for name in names {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{name}"
            );
        }
    }
}
