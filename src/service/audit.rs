//! The audit log's HMAC, on demand: an operator who holds a leaked token
//! or key finds it in the audit log by its HMAC.

use super::{Node, ServiceError, TokenHolder};
use crate::secret::SecretString;

/// The longest string `audit_hash` takes, in bytes (a value is at most
/// `max_value_bytes`, but an operator looks up tokens and keys).
pub const MAX_AUDIT_HASH_INPUT: usize = 64 * 1024;

impl Node {
    /// The HMAC-SHA256 tag the audit log shows for `input` (as
    /// `hmac-sha256:<hex>`), the same on every node of the cluster. Admin tokens only: the
    /// answer checks a guess at a secret, so it is not for every consumer.
    pub fn audit_hash(
        &self,
        caller: &TokenHolder,
        input: &SecretString,
    ) -> Result<[u8; 32], ServiceError> {
        if !caller.acl.is_admin() {
            return Err(ServiceError::Forbidden(caller.denial(
                "audit hash",
                &caller.record.namespace,
                "sys/audit/hash",
            )));
        }
        if input.expose().len() > MAX_AUDIT_HASH_INPUT {
            return Err(ServiceError::TooLarge(format!(
                "input is {} bytes; the limit is {MAX_AUDIT_HASH_INPUT}",
                input.expose().len()
            )));
        }
        self.barrier
            .audit_hmac(input.expose().as_bytes())
            .map_err(|_| ServiceError::Sealed)
    }
}
