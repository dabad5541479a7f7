//! The gatekeeper: unseal keys, gatekeeper tokens and the gatekeeper key.
//!
//! Invariant: the gatekeeper key exists only inside one call (as a `Key32`,
//! zeroized on drop) and is never stored or sent anywhere; only wrapped forms
//! of it (under a gatekeeper token's derived key) are stored.

pub mod shamir;

use thiserror::Error;

use crate::keyspace;
use crate::secret::{self, Key32, SecretKind, SecretString};
use crate::state::command::NewGatekeeperToken;

/// Errors from unseal-key handling.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GatekeeperError {
    /// Bad Shamir parameters.
    #[error("{0}")]
    BadParameters(String),
    /// An unseal key that cannot be used.
    #[error("invalid unseal key: {0}")]
    BadUnsealKey(String),
    /// The same unseal key was given twice.
    #[error("duplicate unseal key: each key may be given once")]
    DuplicateUnsealKey,
    /// Fewer keys than the threshold.
    #[error("{have} unseal keys given; {need} are needed")]
    NotEnoughKeys {
        /// Keys given.
        have: usize,
        /// Threshold.
        need: usize,
    },
}

const TOKEN_KEY_INFO: &[u8] = b"kstash gatekeeper token v1";
const REPLACEMENT_AAD_PREFIX: &[u8] = b"replacement:";
const ACCESS_KEY_AAD_PREFIX: &[u8] = b"access-key:";

/// A freshly minted gatekeeper token: the secret for the caller and the
/// record to replicate.
pub struct MintedToken {
    /// The token itself; shown to the caller once.
    pub token: SecretString,
    /// What gets stored.
    pub record: NewGatekeeperToken,
}

/// Mint a gatekeeper token that can rebuild `gatekeeper_key`.
pub fn mint_token(gatekeeper_key: &Key32) -> MintedToken {
    let token = secret::new_bearer(SecretKind::GatekeeperToken);
    let id = secret::hash_secret(&token);
    let derived = secret::derive_key(&token, TOKEN_KEY_INFO);
    let wrapped_key = secret::seal(
        &derived,
        &keyspace::gatekeeper_token_key(&id),
        gatekeeper_key.as_bytes(),
    );
    MintedToken {
        token,
        record: NewGatekeeperToken { id, wrapped_key },
    }
}

/// Rebuild the gatekeeper key from a token and its record's wrapped key.
pub fn unwrap_with_token(token: &SecretString, id: &[u8; 32], wrapped_key: &[u8]) -> Option<Key32> {
    let derived = secret::derive_key(token, TOKEN_KEY_INFO);
    let plain = secret::open(&derived, &keyspace::gatekeeper_token_key(id), wrapped_key)?;
    Key32::from_slice(&plain)
}

/// Associated data of a secret sealed under a used token: what the secret
/// is, and the token it was sealed under.
fn sealed_aad(prefix: &[u8], id: &[u8; 32]) -> Vec<u8> {
    let mut aad = prefix.to_vec();
    aad.extend_from_slice(&keyspace::gatekeeper_token_key(id));
    aad
}

/// Seal `secret` under the used token (its derived key), bound to `prefix`.
fn seal_under_token(
    used: &SecretString,
    used_id: &[u8; 32],
    prefix: &[u8],
    secret: &SecretString,
) -> Vec<u8> {
    let derived = secret::derive_key(used, TOKEN_KEY_INFO);
    secret::seal(
        &derived,
        &sealed_aad(prefix, used_id),
        secret.expose().as_bytes(),
    )
}

/// Inverse of [`seal_under_token`].
fn open_under_token(
    used: &SecretString,
    used_id: &[u8; 32],
    prefix: &[u8],
    wrapped: &[u8],
) -> Option<SecretString> {
    let derived = secret::derive_key(used, TOKEN_KEY_INFO);
    let plain = secret::open(&derived, &sealed_aad(prefix, used_id), wrapped)?;
    String::from_utf8(plain.to_vec())
        .ok()
        .map(SecretString::new)
}

/// Seal a used token's replacement under the used token, so a repeated use
/// inside the grace window can hand out the same replacement.
pub fn wrap_replacement(
    used: &SecretString,
    used_id: &[u8; 32],
    replacement: &SecretString,
) -> Vec<u8> {
    seal_under_token(used, used_id, REPLACEMENT_AAD_PREFIX, replacement)
}

/// Inverse of [`wrap_replacement`].
pub fn unwrap_replacement(
    used: &SecretString,
    used_id: &[u8; 32],
    wrapped: &[u8],
) -> Option<SecretString> {
    open_under_token(used, used_id, REPLACEMENT_AAD_PREFIX, wrapped)
}

/// Seal the access key an access-key rotation made with a gatekeeper token
/// under that token, as [`wrap_replacement`] seals its replacement, so a
/// retry inside the grace window hands out the same access key. Only the
/// token's holder can open it; the log and the store see ciphertext.
pub fn wrap_access_key(
    used: &SecretString,
    used_id: &[u8; 32],
    access_key: &SecretString,
) -> Vec<u8> {
    seal_under_token(used, used_id, ACCESS_KEY_AAD_PREFIX, access_key)
}

/// Inverse of [`wrap_access_key`].
pub fn unwrap_access_key(
    used: &SecretString,
    used_id: &[u8; 32],
    wrapped: &[u8],
) -> Option<SecretString> {
    open_under_token(used, used_id, ACCESS_KEY_AAD_PREFIX, wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_and_its_record_rebuild_the_key_and_nothing_else_does() {
        let gk = Key32::random();
        let minted = mint_token(&gk);
        let id = minted.record.id;
        assert_eq!(
            unwrap_with_token(&minted.token, &id, &minted.record.wrapped_key)
                .unwrap()
                .as_bytes(),
            gk.as_bytes()
        );
        let other = secret::new_bearer(SecretKind::GatekeeperToken);
        assert!(unwrap_with_token(&other, &id, &minted.record.wrapped_key).is_none());
        let other_id = secret::hash_secret(&other);
        assert!(unwrap_with_token(&minted.token, &other_id, &minted.record.wrapped_key).is_none());
    }

    #[test]
    fn replacements_are_sealed_under_the_used_token() {
        let used = secret::new_bearer(SecretKind::GatekeeperToken);
        let id = secret::hash_secret(&used);
        let rep = secret::new_bearer(SecretKind::GatekeeperToken);
        let wrapped = wrap_replacement(&used, &id, &rep);
        assert_eq!(unwrap_replacement(&used, &id, &wrapped).unwrap(), rep);
        assert!(unwrap_replacement(&rep, &id, &wrapped).is_none());
    }

    #[test]
    fn an_access_key_sealed_under_a_token_opens_as_nothing_else() {
        let used = secret::new_bearer(SecretKind::GatekeeperToken);
        let id = secret::hash_secret(&used);
        let key = secret::new_bearer(SecretKind::AccessKey);
        let wrapped = wrap_access_key(&used, &id, &key);
        assert_eq!(unwrap_access_key(&used, &id, &wrapped).unwrap(), key);
        assert!(
            unwrap_replacement(&used, &id, &wrapped).is_none(),
            "an access key never passes for a replacement"
        );
        let rep = wrap_replacement(&used, &id, &key);
        assert!(unwrap_access_key(&used, &id, &rep).is_none());
        let other = secret::new_bearer(SecretKind::GatekeeperToken);
        assert!(unwrap_access_key(&other, &id, &wrapped).is_none());
    }
}
