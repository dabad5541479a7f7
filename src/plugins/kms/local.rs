//! The KMS backend of a node serving its own host's kube-apiserver
//! (`kstash server --kms-socket … --kms-key NS/NAME`): each call goes
//! through the node's front door as [`Principal::KmsSocket`], which may use
//! the one key the node serves there and nothing else.
//!
//! Invariant: every use of the key passes [`Door::run`] (`kms.encrypt` and
//! `kms.decrypt` audited, `kms.status` counted), and every refusal of the
//! service layer is an error of the plugin, never a success: only a bad
//! request is the caller's fault (`INVALID_ARGUMENT`); everything else means
//! kstash cannot serve now (`UNAVAILABLE`).
//!
//! [`Principal::KmsSocket`]: crate::guard::Principal::KmsSocket

use std::sync::Arc;

use zeroize::Zeroizing;

use super::service::{Encrypted, KmsBackend, KmsError, KmsKey};
use crate::guard::{Call, CallContext, Door, Operation, Transport};
use crate::keys;
use crate::service::{KeyUser, ServiceError};

/// A KMS backend over the node behind `door`.
#[derive(Debug)]
pub struct LocalBackend {
    door: Arc<Door>,
    key: KmsKey,
    /// `keys/<name>`, the path audit records name.
    path: String,
}

impl LocalBackend {
    /// The backend of `key` through `door`.
    pub fn new(door: Arc<Door>, key: KmsKey) -> Self {
        LocalBackend {
            path: keys::acl_path(&key.name),
            door,
            key,
        }
    }

    fn user(&self) -> KeyUser<'_> {
        KeyUser::Socket {
            namespace: &self.key.namespace,
            name: &self.key.name,
        }
    }

    /// Run `op` as `operation` of the socket's principal.
    async fn run<T>(
        &self,
        operation: Operation,
        op: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, KmsError> {
        let context = CallContext::new(None);
        let call = Call::new(operation, Transport::KmsSocket, &context)
            .kms_socket(&self.key.namespace, &self.key.name)
            .path(&self.path);
        self.door.run(call, op).await.map_err(kms_error)
    }
}

/// What a refusal of the service layer means to kube-apiserver.
pub fn kms_error(e: ServiceError) -> KmsError {
    match e {
        ServiceError::BadRequest(m) | ServiceError::TooLarge(m) => KmsError::Invalid(m),
        ServiceError::NotFound(m) => KmsError::Unavailable(format!(
            "{m}: create it (kstash key create) or fix --kms-key"
        )),
        // Sealed, not initialised, no leader, unknown outcome, audit
        // failed, removed, and whatever else: kstash cannot serve now.
        other => KmsError::Unavailable(other.to_string()),
    }
}

impl KmsBackend for LocalBackend {
    async fn status(&self) -> Result<String, KmsError> {
        let node = self.door.node();
        self.run(Operation::KmsStatus, async {
            node.key_status(&self.key.namespace, &self.key.name)
        })
        .await
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Encrypted, KmsError> {
        let node = self.door.node();
        let done = self
            .run(
                Operation::KmsEncrypt,
                node.encrypt_with_key(self.user(), &self.key.name, plaintext),
            )
            .await?;
        Ok(Encrypted {
            key_id: done.key_id,
            ciphertext: done.ciphertext.into_bytes(),
        })
    }

    async fn decrypt(
        &self,
        _key_id: &str,
        ciphertext: &str,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let node = self.door.node();
        let done = self
            .run(
                Operation::KmsDecrypt,
                node.decrypt_with_key(self.user(), &self.key.name, ciphertext),
            )
            .await?;
        Ok(done.plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_unavailable_unless_the_request_is_bad() {
        use crate::raft::OutcomeUnknown;
        let invalid = [
            ServiceError::BadRequest("malformed ciphertext".into()),
            ServiceError::TooLarge("too large".into()),
        ];
        for e in invalid {
            assert!(
                matches!(kms_error(e.clone()), KmsError::Invalid(_)),
                "{e:?}"
            );
        }
        let unavailable = [
            ServiceError::Sealed,
            ServiceError::NotInitialized,
            ServiceError::Unavailable("no leader".into()),
            ServiceError::AuditFailed,
            ServiceError::NotFound("no key kek in namespace kube-system".into()),
            ServiceError::Removed("removed".into()),
            ServiceError::Conflict("x".into()),
            ServiceError::Integrity,
            ServiceError::Internal,
            ServiceError::Unauthorized("x".into()),
            ServiceError::OutcomeUnknown(OutcomeUnknown::new("commit timed out")),
        ];
        for e in unavailable {
            let mapped = kms_error(e.clone());
            assert!(matches!(mapped, KmsError::Unavailable(_)), "{e:?}");
            assert!(
                mapped.to_string().contains(&e.to_string()),
                "{e:?}: {mapped}"
            );
        }
    }
}
